// MS-SMB2 3.3.4.2 asynchronous operations and 3.3.5.16 CANCEL: a request that may wait (a
// blocking LOCK, a CHANGE_NOTIFY) is answered at once with an interim STATUS_PENDING response
// carrying an AsyncId, and later with its final response. This table is each connection's
// Connection.AsyncCommandList: it hands out AsyncIds, finds a pending request for CANCEL (by
// AsyncId, or by MessageId when the client has not seen the interim yet), and ends pending
// requests when their open, tree, session or connection goes away. It is bounded: past `cap`
// pending requests a new one fails with INSUFFICIENT_RESOURCES (3.3.4.2 allows it).
import type { Open, Session, Tree } from './state.js';
import { NtStatus } from './status.js';

/** Pending requests per connection at most. */
export const MAX_PENDING_PER_CONNECTION = 512;
/** MessageIds of CANCELs that found nothing, kept in case their request goes async a moment later. */
const EARLY_CANCELS_KEPT = 64;

/**
 * Why a pending request is ended before its work completes: a CANCEL, the end of its open, tree
 * or session (its final response still goes out), or the connection's end (nothing can be sent).
 */
export type AbortReason = 'cancel' | 'closed' | 'disconnected';

/** The final response of a pending request. `body` null: an SMB2 ERROR body. */
export interface FinalResponse {
  status: number;
  body: Buffer | null;
  data: Buffer | null;
}

/** What the connection records about a request that goes async. */
export interface PendingRequest {
  command: number;
  messageId: number;
  creditCharge: number;
  session: Session;
  tree: Tree | null;
  open: Open | null;
  /** The final response is signed with the session's key (the request was, or the session requires it). */
  sign: boolean;
  /** The final response is encrypted for the session (the request came encrypted). */
  encrypt: boolean;
}

export class PendingOp {
  /** Set by the operation: drops its wait and calls complete() with the status `reason` calls for. */
  onAbort: ((reason: AbortReason) => void) | null = null;
  private interimSent = false;
  private result: FinalResponse | null = null;
  readonly started = process.hrtime.bigint();

  constructor(
    private readonly table: AsyncTable,
    readonly asyncId: number,
    readonly request: PendingRequest,
  ) {}

  get finished(): boolean {
    return this.result !== null;
  }

  /** Sends the final response (once; later calls are ignored). */
  complete(status: number, body: Buffer | null = null, data: Buffer | null = null): void {
    if (this.result !== null) return;
    this.result = { status, body, data };
    this.table.forget(this);
    // A completion that overtakes the interim response waits for it (the client must see the
    // interim first, or it would not know the AsyncId of the final one).
    if (this.interimSent) this.table.deliver(this, this.result);
  }

  /** Ends the request early; an operation that does not answer itself is answered CANCELLED. */
  abort(reason: AbortReason): void {
    if (this.result !== null) return;
    try {
      this.onAbort?.(reason);
    } finally {
      this.complete(NtStatus.CANCELLED);
    }
  }

  /**
   * The connection calls this once the interim response is on its way. A final response that came
   * earlier is sent now.
   */
  interimDone(): void {
    if (this.interimSent) return;
    this.interimSent = true;
    if (this.result !== null) this.table.deliver(this, this.result);
  }

  /**
   * The final response, if the request completed before its interim response was sent: then the
   * connection answers it synchronously instead and no interim goes out.
   */
  takeEarlyResult(): FinalResponse | null {
    if (this.interimSent || this.result === null) return null;
    this.interimSent = true;
    return this.result;
  }
}

export class AsyncTable {
  private readonly byAsyncId = new Map<number, PendingOp>();
  private readonly byMessageId = new Map<number, PendingOp>();
  private readonly earlyCancels = new Map<number, number>();
  private nextAsyncId = 1;

  constructor(
    /** Sends the final response of `op` (the connection builds, signs and writes it). */
    private readonly send: (op: PendingOp, final: FinalResponse) => void,
    private readonly cap = MAX_PENDING_PER_CONNECTION,
  ) {}

  get size(): number {
    return this.byAsyncId.size;
  }

  /** A new pending request, or null when the connection holds `cap` of them already. */
  begin(request: PendingRequest): PendingOp | null {
    if (this.byAsyncId.size >= this.cap) return null;
    const op = new PendingOp(this, this.nextAsyncId++, request);
    this.byAsyncId.set(op.asyncId, op);
    this.byMessageId.set(request.messageId, op);
    return op;
  }

  /** True (once) when a CANCEL of this session for this MessageId arrived before the request went async. */
  cancelledEarly(messageId: number, sessionId: number): boolean {
    const by = this.earlyCancels.get(messageId);
    if (by === undefined) return false;
    this.earlyCancels.delete(messageId);
    // Another session's CANCEL (or one of no session) is not this request's to end, as below.
    return by === sessionId;
  }

  /**
   * MS-SMB2 3.3.5.16: a CANCEL with the async flag names its request by AsyncId, otherwise by
   * MessageId. It has no response of its own; the cancelled request answers STATUS_CANCELLED.
   */
  cancel(async: boolean, asyncId: number, messageId: number, sessionId: number): boolean {
    const op = async ? this.byAsyncId.get(asyncId) : this.byMessageId.get(messageId);
    // Another session's request is not this CANCEL's to end.
    if (op && op.request.session.id !== sessionId) return false;
    if (op) {
      op.abort('cancel');
      return true;
    }
    if (!async) {
      // The request may still be on its way to going async (frames are handled concurrently).
      if (this.earlyCancels.size >= EARLY_CANCELS_KEPT) {
        const oldest = this.earlyCancels.keys().next().value;
        if (oldest !== undefined) this.earlyCancels.delete(oldest);
      }
      this.earlyCancels.set(messageId, sessionId);
    }
    return false;
  }

  /** Ends every pending request `which` selects (close of an open, tree disconnect, logoff, connection end). */
  abortWhere(which: (op: PendingOp) => boolean, reason: AbortReason): void {
    const victims = [...this.byAsyncId.values()].filter(which);
    for (const op of victims) op.abort(reason);
  }

  forget(op: PendingOp): void {
    this.byAsyncId.delete(op.asyncId);
    if (this.byMessageId.get(op.request.messageId) === op) this.byMessageId.delete(op.request.messageId);
  }

  deliver(op: PendingOp, final: FinalResponse): void {
    this.send(op, final);
  }
}
