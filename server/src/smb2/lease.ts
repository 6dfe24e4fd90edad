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
// Leases v1 (SMB 2.1) carry no epoch on the wire: nothing here counts one.
import { SmbWriter } from './codec.js';
import { Command } from './constants.js';
import type { Open } from './state.js';
import { NtStatus, SmbStatusError } from './status.js';
import { Caching, type CacheHolder, type FileOpens } from '../vfs/locks/opens.js';

/** MS-SMB2 2.2.23.2 Flags. */
const LEASE_BREAK_ACK_REQUIRED = 0x1;
const ACK_BITS = Caching.WRITE | Caching.HANDLE;

/** MS-SMB2 2.2.23.2 Lease Break Notification. */
export function leaseBreakBody(key: Buffer, current: number, next: number, ackRequired: boolean): Buffer {
  const w = new SmbWriter(44);
  w.u16(44)
    .u16(0)
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

/** MS-SMB2 3.3.1.13 a lease: one per ClientGuid and LeaseKey, shared by that client's opens of a file. */
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

  constructor(
    readonly table: LeaseTable,
    readonly id: string,
    readonly key: Buffer,
    readonly file: FileOpens,
    /** Lease.LeaseState. */
    public state: number,
    private readonly timeoutMs: number,
  ) {}

  get caching(): number {
    return this.state;
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

  /** A notification through the connection of the newest open of the lease that is still there. */
  private send(from: number, to: number, ack: boolean): boolean {
    const body = leaseBreakBody(this.key, from, to, ack);
    const opens = [...this.opens];
    for (let i = opens.length - 1; i >= 0; i--) if (opens[i]!.notify?.(Command.OPLOCK_BREAK, body)) return true;
    return false;
  }
}

/** The leases of the server, by ClientGuid and LeaseKey (MS-SMB2 3.3.1.12 LeaseTableList). */
export class LeaseTable {
  readonly leases = new Map<string, Lease>();
}
