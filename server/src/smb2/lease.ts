// The lease break state machine of MS-SMB2 3.3.4.7 (Lease Break Notification) and 3.3.5.22.2
// (Lease Break Acknowledgment), with the behaviour Windows shows (smbtorture smb2.lease breaking1-5,
// rename_wait) where the spec leaves it open:
// - A lease holds Lease.LeaseState; while a break waits for its acknowledgment it is Breaking, the
//   notification named BreakToLeaseState ("requested": what the client may acknowledge), and
//   every further break asked meanwhile only narrows what the lease must end at ("required"); no
//   second notification is sent while one is outstanding.
// - An acknowledgment that keeps more than "required" is accepted, and the break goes on in steps
//   from what was acknowledged: to "required" plus read caching while write or handle caching is
//   still held (RWH -> RH, then RH -> R, then R -> none), each step a new notification.
// - A break from read caching alone needs no acknowledgment: the lease holds its new state at once.
// - Each step waits at most the break timeout (MS-SMB2 3.3.2.1); an unacknowledged break leaves
//   the lease nothing. Waiters are bounded by the requests that wait (each resolves when the lease
//   is no longer breaking, the latest by the timer) and released with the lease's last open.
// - Version 2 leases (made by a v2 context at SMB 3.x) count an epoch (MS-SMB2 3.3.5.9.11, 3.3.4.7,
//   as Windows behaves in smbtorture lease.v2_epoch1-3, v2_breaking3, v2_complex1-2): a new lease
//   answers the request's epoch + 1; each new state after that (an upgrade, a break notification,
//   a break from read caching alone) adds one; the further steps of one break, an acknowledgment
//   and a request that changes nothing add none. Version 1 leases carry epoch 0.
import { SmbWriter } from './codec.js';
import { Command } from './constants.js';
import type { NotifySender } from './oplock.js';
import type { Open, Session } from './state.js';
import { NtStatus, SmbStatusError } from './status.js';
import { Caching, type CacheHolder, type FileOpens } from '../vfs/locks/opens.js';

/** MS-SMB2 2.2.23.2 Flags. */
const LEASE_BREAK_ACK_REQUIRED = 0x1;
const ACK_BITS = Caching.WRITE | Caching.HANDLE;
/** What follows ClientGuid and LeaseKey in a lease's id (leaseIdOf): a user's name, or a session id. */
const USER_MARK = '/';
const SESSION_MARK = '#';

/** MS-SMB2 2.2.23.2 Lease Break Notification (NewEpoch: 0 for a version 1 lease). */
export function leaseBreakBody(key: Buffer, current: number, next: number, ackRequired: boolean, epoch = 0): Buffer {
  const w = new SmbWriter(44);
  w.u16(44)
    .u16(epoch)
    .u32(ackRequired ? LEASE_BREAK_ACK_REQUIRED : 0)
    .bytes(key);
  w.u32(current).u32(next).u32(0).u32(0).u32(0);
  return w.finish();
}

/** MS-SMB2 2.2.25.2 Lease Break Response (2.2.24.2 the acknowledgment: same layout). */
export function leaseAckBody(key: Buffer, state: number): Buffer {
  const w = new SmbWriter(36);
  w.u16(36).u16(0).u32(0).bytes(key).u32(state).u64(0);
  return w.finish();
}

interface Waiter {
  /** Caching bits the waiter needs gone. */
  readonly gone: number;
  readonly resolve: () => void;
}

/**
 * MS-SMB2 3.3.1.13 a lease: one per ClientGuid, LeaseKey and owner (leaseIdOf), shared by that
 * client's opens of a file.
 */
export class Lease implements CacheHolder {
  readonly opens = new Set<Open>();
  /** MS-SMB2 Lease.Breaking. */
  breaking = false;
  /** Lease.BreakToLeaseState: what the outstanding notification asked for (an ack may keep at most this). */
  requested: number = Caching.NONE;
  /** What the whole break must end at: every break asked while breaking narrows it. */
  required: number = Caching.NONE;
  private timer: NodeJS.Timeout | null = null;
  private waiters: Waiter[] = [];
  /** MS-SMB2 Lease.Version: 2 when a v2 context (SMB 3.x) made it; its responses are v2 then. */
  readonly version: 1 | 2;
  /** MS-SMB2 Lease.Epoch (16 bits; always 0 for version 1). */
  epoch = 0;
  /** MS-SMB2 Lease.ParentLeaseKey, when the v2 context that made it set one. */
  readonly parentKey: Buffer | null = null;

  constructor(
    readonly table: LeaseTable,
    readonly id: string,
    readonly key: Buffer,
    readonly file: FileOpens,
    /** Lease.LeaseState. */
    public state: number,
    private readonly timeoutMs: number,
    /** The v2 context that asks for it (null: version 1). */
    v2: { parentKey: Buffer | null; epoch: number } | null = null,
  ) {
    this.version = v2 ? 2 : 1;
    if (v2) {
      this.epoch = (v2.epoch + 1) & 0xffff;
      this.parentKey = v2.parentKey;
    }
  }

  /** A new lease state: a version 2 lease counts it in its epoch. */
  nextEpoch(): void {
    if (this.version === 2) this.epoch = (this.epoch + 1) & 0xffff;
  }

  get caching(): number {
    return this.state;
  }

  /** The ClientGuid (hex) of the client whose lease it is: the start of its id (leaseIdOf). */
  get clientGuid(): string {
    return this.id.slice(0, 32);
  }

  /** The user whose lease it is (lower case), null for a guest's or anonymous session's: the end of its id (leaseIdOf). */
  get user(): string | null {
    return this.id.charAt(64) === USER_MARK ? this.id.slice(65) : null;
  }

  /** Held only by preserved durable opens: nobody can hear a break (MS-SMB2 3.3.4.7). */
  get unreachable(): boolean {
    if (this.opens.size === 0) return false;
    for (const o of this.opens) if (o.expire === null) return false;
    return true;
  }

  /**
   * Asks the lease to keep at most `keep`; resolves once none of the bits in `wait` that it must
   * give up is held (by default: once it holds nothing beyond `keep`). Never rejects.
   */
  breakTo(keep: number, wait: number = Caching.READ | Caching.WRITE | Caching.HANDLE): Promise<void> {
    // Held only by preserved durable opens, nobody can hear the break: they are closed (MS-SMB2 3.3.4.7).
    if (this.unreachable) return Promise.all([...this.opens].map((o) => o.expire!())).then(() => undefined);
    if (this.breaking) {
      // No second notification: the break in progress will end at the narrower state (3.3.4.7).
      this.required &= keep;
    } else {
      const to = this.state & keep;
      if (to === this.state) return Promise.resolve();
      // The break's notification carries the new epoch; its further steps do not add to it.
      this.nextEpoch();
      if ((this.state & ACK_BITS) === 0 || !this.send(this.state, to, true)) {
        // From read caching alone no acknowledgment is asked (nor can one come without a connection).
        if ((this.state & ACK_BITS) === 0) this.send(this.state, to, false);
        this.state = to;
        return Promise.resolve();
      }
      this.breaking = true;
      this.requested = this.required = to;
      this.arm();
    }
    return this.until(~keep & wait);
  }

  /** Resolves when the lease is not breaking any more (at once when it is not). */
  idle(): Promise<void> {
    return this.breaking ? this.until(Caching.READ | Caching.WRITE | Caching.HANDLE, true) : Promise.resolve();
  }

  /**
   * MS-SMB2 3.3.5.22.2: the client acknowledges the break with `state`. Throws the status of a
   * refused acknowledgment (the break then goes on). A further step of the break, if any, is sent
   * through `later` (after the acknowledgment's response).
   */
  acknowledge(state: number, later: (send: () => void) => void): void {
    if (!this.breaking) throw new SmbStatusError(NtStatus.UNSUCCESSFUL, 'no lease break in progress');
    // Refused, and the break goes on: the client may acknowledge again with a state the break allows.
    if ((state & ~this.requested) !== 0) throw new SmbStatusError(NtStatus.REQUEST_NOT_ACCEPTED, 'acknowledged more than the break left');
    this.state = state;
    this.disarm();
    if ((state & ~this.required) === 0) {
      this.breaking = false;
      this.settle();
      return;
    }
    // Something asked meanwhile needs more: the next step, as Windows breaks (RH -> R -> none).
    if ((state & ACK_BITS) === 0) {
      // Read caching alone: the last step needs no acknowledgment.
      const to = this.required;
      this.state = to;
      this.breaking = false;
      this.settle();
      later(() => this.send(state, to, false));
      return;
    }
    const next = (this.required | Caching.READ) & state;
    this.requested = next;
    this.arm();
    this.settle();
    later(() => {
      // Still the same step (not released, timed out or acknowledged meanwhile)?
      if (!this.breaking || this.state !== state || this.requested !== next) return;
      // Nobody can hear it any more: the lease ends where the break had to.
      if (!this.send(state, next, true)) this.finish(this.required);
    });
  }

  /** The break is over at `state` (the lease's last open is gone, or the timer ran out). */
  finish(state: number): void {
    this.disarm();
    this.state = state;
    this.breaking = false;
    this.settle();
  }

  private arm(): void {
    this.disarm();
    // Not unref'd: a request waiting on the break is work in flight. An unacknowledged break
    // leaves the lease nothing (as Windows and smbd: smbtorture lease.timeout).
    this.timer = setTimeout(() => {
      this.timer = null;
      this.finish(Caching.NONE);
    }, this.timeoutMs);
  }

  private disarm(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private until(gone: number, idle = false): Promise<void> {
    if (!idle && (this.state & gone) === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ gone: idle ? -1 : gone, resolve }));
  }

  /** Wakes the waiters whose bits are gone (all of them once the lease is not breaking). */
  private settle(): void {
    if (this.waiters.length === 0) return;
    const keep: Waiter[] = [];
    for (const w of this.waiters) {
      if (!this.breaking || (w.gone !== -1 && (this.state & w.gone) === 0)) w.resolve();
      else keep.push(w);
    }
    this.waiters = keep;
  }

  /**
   * A notification through the connection of the newest open of the lease that is still there; for
   * a version 2 lease first through the client's oldest 3.x connection that has a valid session of
   * the lease's user, as Windows sends it (smbtorture lease.v2_complex1: a lease is its
   * client's, named by ClientGuid and key, not one connection's). A connection whose session ended
   * (a reconnect with PreviousSessionId, a LOGOFF) is passed over.
   */
  private send(from: number, to: number, ack: boolean): boolean {
    const body = leaseBreakBody(this.key, from, to, ack, this.epoch);
    const user = this.user;
    if (this.version === 2 && user !== null) {
      for (const ch of this.table.channelsOf(this.clientGuid)) if (ch.serves(user) && ch.notify(Command.OPLOCK_BREAK, body)) return true;
    }
    const opens = [...this.opens];
    for (let i = opens.length - 1; i >= 0; i--) if (opens[i]!.notify?.(Command.OPLOCK_BREAK, body)) return true;
    return false;
  }
}

/**
 * A client's 3.x connection, where its version 2 leases' breaks may go: only while it has a valid
 * session of a user who holds the lease (a ClientGuid is the client's to choose, and is sent in
 * the clear: an unauthenticated connection, or another user's, naming it hears nothing).
 */
export interface LeaseChannel {
  notify: NotifySender;
  /** Has the connection a valid session of this user (lower case)? */
  serves: (user: string) => boolean;
}

/**
 * A lease's id in its table: ClientGuid and LeaseKey in hex (Lease.clientGuid reads it back), then
 * its owner (Lease.user reads it back): the user who established the session asking, or for a
 * guest or anonymous session that session alone.
 *
 * MS-SMB2 3.3.5.9.8 names a lease by ClientGuid and LeaseKey only. Both are the client's to
 * choose and are sent in the clear, so with those alone another user who learnt them could join
 * the lease (and its caching, without a break), acknowledge its breaks, or take the key on another
 * file so that the owner's next open with it fails (INVALID_PARAMETER). With the owner in the id,
 * another user's same ClientGuid and key is simply another lease: it meets the owner's as any
 * other lease does (the owner's is broken only as a conflicting open breaks it), its
 * acknowledgments find only its own lease (an ack naming the owner's is answered as an unknown
 * key), and it is on a file of its own choosing without refusing the owner anything. The owner is
 * Session.owner, as durable reconnects and PreviousSessionId check it: a reconnected client's new
 * session finds its lease again, and a client sharing one ClientGuid among users (Windows does)
 * keeps them apart.
 *
 * A guest or anonymous session proves no identity: two of them are no more the same party than
 * two strangers. Their leases are each session's own (Session ids are never reused); they are not
 * preserved by durable handles either, and their breaks go to their open's connection only.
 */
export const leaseIdOf = (clientGuid: Buffer, key: Buffer, session: Session): string =>
  clientGuid.toString('hex') +
  key.toString('hex') +
  (session.owner ? USER_MARK + session.owner.name.toLowerCase() : SESSION_MARK + String(session.id));

/** The leases of the server, by ClientGuid, LeaseKey and owner (MS-SMB2 3.3.1.12 LeaseTableList; leaseIdOf). */
export class LeaseTable {
  readonly leases = new Map<string, Lease>();
  /** Each client's connections at SMB 3.x (by ClientGuid, hex), oldest first (see Lease.send). */
  private readonly channels = new Map<string, LeaseChannel[]>();

  /** A client's connection negotiated 3.x; returns what forgets it when it closes. */
  addChannel(clientGuid: string, channel: LeaseChannel): () => void {
    const list = this.channels.get(clientGuid) ?? [];
    list.push(channel);
    this.channels.set(clientGuid, list);
    return () => {
      const at = list.indexOf(channel);
      if (at >= 0) list.splice(at, 1);
      if (list.length === 0 && this.channels.get(clientGuid) === list) this.channels.delete(clientGuid);
    };
  }

  channelsOf(clientGuid: string): readonly LeaseChannel[] {
    return this.channels.get(clientGuid) ?? [];
  }
}
