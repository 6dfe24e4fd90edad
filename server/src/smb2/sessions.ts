// MS-SMB2 3.3.1.1 GlobalSessionTable: every session of the server, whichever connection made it, so
// that a SESSION_SETUP naming a PreviousSessionId (3.3.5.5.3: a client reconnecting after a lost
// connection) can find and tear down the old session of the same user, with its opens and trees.
//
// Session ids are unique in the process (one counter for every table) and never reused. The table
// holds no more than its connections hold: each connection registers its sessions here and removes
// them when they end (LOGOFF, a failed re-authentication, a reconnect, the connection closing).
import type { Session } from './state.js';

/** The connection a session lives on: what the table asks of it. */
export interface SessionOwner {
  /** Ends `session` as LOGOFF would (its opens closed, trees dropped); `why` goes to the log. */
  endSession(session: Session, why: string): Promise<void>;
}

let nextSessionId = 1;

export class SessionTable {
  private readonly byId = new Map<number, { session: Session; owner: SessionOwner }>();

  /** A session id never handed out before in this process. */
  static allocateId(): number {
    return nextSessionId++;
  }

  get size(): number {
    return this.byId.size;
  }

  add(session: Session, owner: SessionOwner): void {
    this.byId.set(session.id, { session, owner });
  }

  remove(session: Session): void {
    const e = this.byId.get(session.id);
    if (e?.session === session) this.byId.delete(session.id);
  }

  /**
   * 3.3.5.5.3 PreviousSessionId: ends the session `previousId` when it is another valid session
   * established by the same (named) user; anything else is left alone. Resolves true when one ended.
   */
  async endPrevious(previousId: number, current: Session, userName: string): Promise<boolean> {
    if (previousId === 0 || previousId === current.id) return false;
    const e = this.byId.get(previousId);
    if (!e || e.session.state !== 'valid' || e.session.anonymous || e.session.guest) return false;
    const owner = e.session.owner;
    if (owner === null || owner.name.toLowerCase() !== userName.toLowerCase()) return false;
    this.byId.delete(previousId);
    await e.owner.endSession(e.session, 'reconnected as a new session (PreviousSessionId)');
    return true;
  }
}

/** The table of a server's connections (SmbServer passes one; a lone SmbConnection gets this one). */
export const defaultSessionTable = new SessionTable();
