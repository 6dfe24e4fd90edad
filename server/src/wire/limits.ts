// What one client may make a TCP protocol engine hold: memory for requests, replies and connections.
// Protocol-neutral: the ONC RPC engine (rpc/server.ts) uses these, and so can the SMB2 engine.
//
//   RequestBudget (one per server): bytes of request buffers across all connections.
//     reserve(n, granted) -> true when the n bytes are reserved now; otherwise the request waits
//       in FIFO order and `granted` runs once they are reserved for it. cancel(granted) withdraws
//       a waiting request. release(n) returns reserved bytes.
//     hold(n) / unhold(n): bytes already received that must be kept (a partial frame header or the
//       first bytes of a frame): counted in `used`, never refused, never waited for.
//     Under pressure (someone waits) new frames should not be read: `onPressure(fn)` tells a
//       connection when pressure begins; `queueResume(fn)` resumes paused connections one per
//       event-loop turn once it has ended, so a crowd of them cannot all read at once.
//   ConnectionLimits (one per listener): the connection caps, the idle and handshake timeouts and
//     the budget.
//     admit(socket) -> a ConnectionGuard, or null when the connection is refused (the socket is
//       destroyed). At a cap, a connection that has not proven itself (below) and is older than
//       evictGraceMs is closed to make room: at the per-address cap, the oldest such of that
//       address; at the listener's cap, the oldest such of the group holding the most unproven
//       connections (a group: an IPv4 address, or an IPv6 /64, which one host can hold whole), and
//       only of a group holding more than the newcomer's own, or of that one. So a crowd of silent
//       sockets cannot keep a real client out, and a crowd that keeps connecting closes its own
//       sockets, not a client in the middle of its handshake. When there is none, the new
//       connection is refused.
//     close() stops the idle sweep.
//   ConnectionGuard (one per connection): when the socket reads.
//     hold(reason) / release(reason): reading is paused while any reason holds (PauseReason).
//     busy: a predicate set by the engine, true while the server (not the client) owes work
//       (calls in flight, a frame waiting for the budget); the idle timeout skips busy connections.
//     An idle connection (no byte read and none written out for idleTimeoutMs while not busy) is
//       destroyed: this also ends one that never reads its replies.
//     prove(): the engine says the client got past the protocol's first step (RPC: a call its
//       program counts as proof, RpcProgram.proves: for NFS a mount granted or a call on a
//       handle the server gave out, not NULL; SMB: an established session). One that has not is
//       destroyed once handshakeTimeoutMs pass without renewHandshake() and with no request that
//       may prove it running (handshakeHeld: a first call may be slow) (the engine calls it at
//       each step of the handshake that goes forward: a logon may wait for its user to type a
//       password), and at 10 x handshakeTimeoutMs in any case.
//   (Their log lines go through LogLimiter, obs/log-limiter.ts.)
//   ReplyBudget (one per server): bytes of replies handed to sockets and not yet written out,
//     across all connections. add(n) when a reply is queued, sent(n) once it is written out (or
//     dropped); while `over`, connections start no new requests, and whenBelow(fn) tells them
//     when to go on. Each connection also keeps its own, smaller bound.
import type net from 'node:net';
import ipaddr from 'ipaddr.js';
import type { Logger } from 'pino';
import { Tally } from '../tally.js';
import { LogLimiter } from '../obs/log-limiter.js';

/** Why a connection is not read. Bits, so that several can hold at once. */
export const PauseReason = Object.freeze({
  /** Enough calls of this connection are running. */
  InFlight: 1,
  /** The client does not read its replies fast enough. */
  Output: 2,
  /** The request budget is exhausted: this connection waits for its turn. */
  Budget: 4,
} as const);
export type PauseReason = (typeof PauseReason)[keyof typeof PauseReason];

interface Waiter {
  n: number;
  granted: () => void;
}

/**
 * A budget's books that do not balance are a bug of ours, met in socket callbacks where throwing
 * would take the whole server down: the count is put back to zero and a process warning says so,
 * once per process (DITTOFS_BUDGET_ACCOUNTING).
 */
let accountingWarned = false;
function accountingBug(message: string): void {
  if (accountingWarned) return;
  accountingWarned = true;
  process.emitWarning(message, { code: 'DITTOFS_BUDGET_ACCOUNTING' });
}

export class RequestBudget {
  private reserved = 0;
  private held = 0;
  private readonly waiters: Waiter[] = [];
  private readonly pressureListeners = new Set<() => void>();
  private readonly resumeQueue: (() => void)[] = [];
  private resumeScheduled = false;

  constructor(
    /** Bytes that reservations may take in total. */
    readonly limit: number,
  ) {
    if (!(limit > 0)) throw new RangeError(`request budget must be positive, got ${limit}`);
  }

  /** Bytes reserved plus bytes held. */
  get used(): number {
    return this.reserved + this.held;
  }

  /** Requests waiting for bytes. */
  get waiting(): number {
    return this.waiters.length;
  }

  /** True while someone waits: connections should not start new frames. */
  get pressure(): boolean {
    return this.waiters.length > 0;
  }

  reserve(n: number, granted: () => void): boolean {
    if (this.waiters.length === 0 && this.reserved + n <= this.limit) {
      this.reserved += n;
      return true;
    }
    this.waiters.push({ n, granted });
    if (this.waiters.length === 1) for (const f of [...this.pressureListeners]) f();
    return false;
  }

  /** Withdraws a waiting request (the connection closed); nothing was reserved for it. */
  cancel(granted: () => void): void {
    const i = this.waiters.findIndex((w) => w.granted === granted);
    if (i < 0) return;
    this.waiters.splice(i, 1);
    // The head may have been the one blocking the others.
    if (i === 0) this.grant();
  }

  release(n: number): void {
    this.reserved -= n;
    if (this.reserved < 0) {
      accountingBug(`request budget released ${-this.reserved} bytes more than reserved`);
      this.reserved = 0;
    }
    this.grant();
  }

  hold(n: number): void {
    this.held += n;
  }

  unhold(n: number): void {
    this.held -= n;
  }

  /** Calls `fn` each time pressure begins; returns the unsubscribe function. */
  onPressure(fn: () => void): () => void {
    this.pressureListeners.add(fn);
    return () => this.pressureListeners.delete(fn);
  }

  /**
   * Runs `resume` once there is no pressure, one queued connection per event-loop turn: between
   * two, the one resumed reads what its client sent, and if that makes it wait the others stay
   * paused. `resume` may find its connection closed.
   */
  queueResume(resume: () => void): void {
    this.resumeQueue.push(resume);
    this.scheduleResume();
  }

  private grant(): void {
    while (this.waiters.length > 0) {
      const w = this.waiters[0]!;
      if (this.reserved + w.n > this.limit) return;
      this.waiters.shift();
      this.reserved += w.n;
      w.granted();
    }
    this.scheduleResume();
  }

  private scheduleResume(): void {
    if (this.resumeScheduled || this.resumeQueue.length === 0 || this.pressure) return;
    this.resumeScheduled = true;
    setImmediate(() => {
      this.resumeScheduled = false;
      if (this.pressure) return;
      this.resumeQueue.shift()?.();
      this.scheduleResume();
    });
  }
}

export interface ConnectionLimitsOptions {
  /** Connections served at once; past it, one that has not proven itself is closed, or the new one (see the header). */
  maxConnections: number;
  /** Connections from one client address at once; more are closed as they arrive. 0: no cap. */
  maxConnectionsPerAddress?: number;
  /**
   * Peer addresses (socket.remoteAddress) not capped per address: proxies that carry many clients
   * (the REST API's trusted proxies). They still count toward maxConnections.
   */
  uncappedAddress?: (address: string) => boolean;
  /**
   * A connection not proven (ConnectionGuard.prove) this long after it was accepted, or after its
   * last renewHandshake(), is closed; at 10 times this after it was accepted in any case. 0: never.
   */
  handshakeTimeoutMs?: number;
  /** An unproven connection younger than this is not closed to make room (default 1 s). */
  evictGraceMs?: number;
  /** The config section of these limits (`adapters.nfs`), named in refusals; absent for fixed limits. */
  settings?: string;
  /** A connection with no traffic for this long while not busy is closed. 0: never. */
  idleTimeoutMs: number;
  /** Bytes of request buffers across all connections (RequestBudget). */
  maxBufferedRequestBytes: number;
  /**
   * A record (frame) must arrive whole within this long of its first byte, or the connection is
   * closed: a client trickling a byte now and then keeps no budget reservation for ever. 0: never.
   */
  recordTimeoutMs?: number;
  /** Protocol name for log lines (`NFS`). */
  name: string;
  log?: Logger;
}

export class ConnectionGuard {
  private reasons = 0;
  /** True while the server owes this connection work; set by the engine. */
  busy: () => boolean = () => false;
  /**
   * True while a request that may prove the client runs (set by the engine; RPC: a call other than
   * NULL): the handshake deadline waits for its answer, the hard limit (HANDSHAKE_LIMIT) does not.
   */
  handshakeHeld: () => boolean = () => false;
  /** Traffic seen at the last sweep, and when it last changed. */
  lastTraffic = -1;
  lastChange = Date.now();
  /**
   * The number of the record being received (any number that changes from one record to the
   * next), or -1 between records; set by the engine. The sweep times each record from when it
   * first saw it.
   */
  partialRecord: () => number = () => -1;
  seenRecord = -1;
  seenRecordAt = 0;
  /** Whether the client got past the protocol's first step (see prove()). */
  proven = false;
  readonly acceptedAt = Date.now();
  /** When the handshake deadline counts from (renewHandshake). */
  handshakeFrom = this.acceptedAt;

  constructor(
    readonly socket: net.Socket,
    /** The address the per-address cap counts it under (addressKey). */
    readonly address: string,
    /** Its group when a full listener takes room (addressGroup). */
    readonly group: string,
    private readonly proved: (g: ConnectionGuard) => void = () => undefined,
  ) {}

  /** The client got past the protocol's first step: no handshake deadline, never closed to make room. */
  prove(): void {
    if (this.proven) return;
    this.proven = true;
    this.proved(this);
  }

  /** A request of the handshake arrived: its deadline counts from now (within the hard limit). */
  renewHandshake(): void {
    if (!this.proven) this.handshakeFrom = Date.now();
  }

  hold(reason: PauseReason): void {
    if (this.reasons === 0) this.socket.pause();
    this.reasons |= reason;
  }

  release(reason: PauseReason): void {
    if ((this.reasons & reason) === 0) return;
    this.reasons &= ~reason;
    if (this.reasons === 0 && !this.socket.destroyed) this.socket.resume();
  }

  holds(reason: PauseReason): boolean {
    return (this.reasons & reason) !== 0;
  }

  /** Whether anything holds reading. */
  get paused(): boolean {
    return this.reasons !== 0;
  }

  /** Bytes read plus bytes handed to the kernel: unchanged means no traffic. */
  traffic(): number {
    const s = this.socket;
    return s.bytesRead + s.bytesWritten - s.writableLength;
  }
}

/**
 * The key the per-address cap counts a client under: its address, in one spelling (an IPv4-mapped
 * IPv6 address as the IPv4 one). An IPv6 address counts alone, not by its /64, as failed SMB
 * logons do: an office LAN is one /64, and its hosts must not share one cap. A crowd from many
 * addresses meets the listener's cap instead, where unproven connections make room.
 */
export function addressKey(address: string | undefined): string {
  if (address === undefined || address === '') return 'unknown';
  try {
    return ipaddr.process(address).toString();
  } catch {
    return address;
  }
}

/** Default of ConnectionLimitsOptions.evictGraceMs. */
const EVICT_GRACE_MS = 1000;
/** An unproven connection goes at this many handshake timeouts after it was accepted, renewed or not. */
const HANDSHAKE_LIMIT = 10;

/**
 * The group a full listener ranks a connection's address in: an IPv4 address alone; an IPv6
 * address by its /64, which one host can hold whole (so counting IPv6 addresses one by one would let
 * one host look like a crowd of lone clients).
 */
export function addressGroup(key: string): string {
  if (!ipaddr.IPv6.isValid(key)) return key;
  const parts = ipaddr.IPv6.parse(key).parts.slice(0, 4);
  return `${parts.map((p) => p.toString(16)).join(':')}::/64`;
}

export class ConnectionLimits {
  readonly budget: RequestBudget;
  /** In the order accepted (a Set keeps it): the oldest unproven one is the first found. */
  private readonly guards = new Set<ConnectionGuard>();
  private readonly perAddress = new Tally<string>();
  /** Unproven connections per group (addressGroup: which group a full listener takes room from). */
  private readonly unprovenFrom = new Tally<string>();
  /** Connections admit() has decided on, admitted or refused. */
  decided = 0;
  private readonly sweep: NodeJS.Timeout | null;
  private readonly refused: LogLimiter;
  private readonly idleClosed: LogLimiter;

  constructor(private readonly opts: ConnectionLimitsOptions) {
    this.budget = new RequestBudget(opts.maxBufferedRequestBytes);
    this.refused = new LogLimiter(opts.log, 'warn', 5, 60_000);
    this.idleClosed = new LogLimiter(opts.log, 'info', 5, 60_000);
    const recordMs = opts.recordTimeoutMs ?? 0;
    const timeouts = [opts.idleTimeoutMs, recordMs, opts.handshakeTimeoutMs ?? 0].filter((t) => t > 0);
    if (timeouts.length > 0) {
      const shortest = Math.min(...timeouts);
      const every = Math.min(Math.max(Math.floor(shortest / 4), 50), 10_000);
      this.sweep = setInterval(() => this.closeIdle(), every);
      this.sweep.unref();
    } else {
      this.sweep = null;
    }
  }

  get connections(): number {
    return this.guards.size;
  }

  /** A guard for a new connection, or null (the socket destroyed) when it is refused (see the header). */
  admit(socket: net.Socket): ConnectionGuard | null {
    this.decided++;
    const peer = `${socket.remoteAddress ?? 'unknown'}:${socket.remotePort ?? 0}`;
    const address = addressKey(socket.remoteAddress);
    const group = addressGroup(address);
    const uncapped = this.opts.uncappedAddress?.(socket.remoteAddress ?? '') === true;
    const perAddress = uncapped ? 0 : (this.opts.maxConnectionsPerAddress ?? 0);
    if (perAddress > 0 && this.perAddress.get(address) >= perAddress) {
      const room = this.victim(address, group);
      if (room === null) {
        this.refused.log(
          { peer, address, max: perAddress, setting: this.setting('max_connections_per_address') },
          `${this.opts.name} connection refused: too many connections from this address`,
        );
        socket.destroy();
        return null;
      }
      this.closeGuard(room, this.refused, { newPeer: peer, max: perAddress }, 'address at its cap: making room for a new connection');
    }
    if (this.guards.size >= this.opts.maxConnections) {
      const room = this.victim(null, group);
      if (room === null) {
        this.refused.log(
          { peer, max: this.opts.maxConnections, setting: this.setting('max_connections') },
          `${this.opts.name} connection refused: too many connections`,
        );
        socket.destroy();
        return null;
      }
      this.closeGuard(
        room,
        this.refused,
        { newPeer: peer, max: this.opts.maxConnections },
        'listener full: making room for a new connection',
      );
    }
    // A connection closed (and forgotten) before its proof arrives was counted out then.
    const g = new ConnectionGuard(socket, address, group, (p) => this.guards.has(p) && this.unprovenFrom.add(p.group, -1));
    this.guards.add(g);
    this.perAddress.add(address);
    this.unprovenFrom.add(group);
    socket.once('close', () => this.forget(g));
    return g;
  }

  /**
   * The connection to close for a new one: unproven and past the grace period; of `address` the
   * oldest, else the oldest of the group holding the most unproven connections, if that is the
   * newcomer's group or holds more than it. Null when there is none.
   */
  private victim(address: string | null, newcomerGroup: string): ConnectionGuard | null {
    const before = Date.now() - (this.opts.evictGraceMs ?? EVICT_GRACE_MS);
    const own = this.unprovenFrom.get(newcomerGroup);
    let best: ConnectionGuard | null = null;
    let bestCount = 0;
    // In the order accepted: the first found of a group is its oldest.
    for (const g of this.guards) {
      if (g.proven || g.acceptedAt > before) continue;
      if (address !== null) {
        if (g.address === address) return g;
        continue;
      }
      const n = this.unprovenFrom.get(g.group);
      // Never from a group holding no more unproven connections than the newcomer's, but its own.
      if (n > bestCount && (n > own || g.group === newcomerGroup)) {
        best = g;
        bestCount = n;
      }
    }
    return best;
  }

  /** Connections counted under an address key (tests, metrics). */
  connectionsFrom(address: string): number {
    return this.perAddress.get(address);
  }

  /** The config key of a limit, for the log lines that refuse a client (none for fixed limits). */
  private setting(key: string): string | undefined {
    return this.opts.settings === undefined ? undefined : `${this.opts.settings}.${key}`;
  }

  private forget(g: ConnectionGuard): void {
    if (!this.guards.delete(g)) return;
    if (!g.proven) this.unprovenFrom.add(g.group, -1);
    this.perAddress.add(g.address, -1);
  }

  /** Destroys a connection the limits end, with one (rate-limited) log line. */
  private closeGuard(g: ConnectionGuard, log: LogLimiter, fields: object, why: string): void {
    const s = g.socket;
    log.log({ peer: `${s.remoteAddress ?? 'unknown'}:${s.remotePort ?? 0}`, ...fields }, `closing ${this.opts.name} connection: ${why}`);
    s.destroy();
    this.forget(g);
  }

  close(): void {
    if (this.sweep) clearInterval(this.sweep);
  }

  /** Closes (and returns true for) a connection whose current record has taken longer than `limitMs`. */
  private recordTooSlow(g: ConnectionGuard, now: number, limitMs: number): boolean {
    // Waiting for the budget is the server's doing, not the client's.
    const rec = g.holds(PauseReason.Budget) ? -1 : g.partialRecord();
    if (rec < 0) {
      g.seenRecord = -1;
      return false;
    }
    if (rec !== g.seenRecord) {
      g.seenRecord = rec;
      g.seenRecordAt = now;
      return false;
    }
    if (now - g.seenRecordAt < limitMs) return false;
    this.closeGuard(g, this.idleClosed, { recordMs: now - g.seenRecordAt }, 'a request took too long to arrive');
    return true;
  }

  private closeIdle(): void {
    const now = Date.now();
    const recordMs = this.opts.recordTimeoutMs ?? 0;
    const handshakeMs = this.opts.handshakeTimeoutMs ?? 0;
    for (const g of this.guards) {
      if (recordMs > 0 && this.recordTooSlow(g, now, recordMs)) continue;
      // Unproven this long since the last step the engine counted as progress (renewHandshake) and
      // no request that may prove it running (handshakeHeld), or ten times that since it was
      // accepted: closed whatever else it sends.
      if (
        handshakeMs > 0 &&
        !g.proven &&
        ((now - g.handshakeFrom >= handshakeMs && !g.handshakeHeld()) || now - g.acceptedAt >= HANDSHAKE_LIMIT * handshakeMs)
      ) {
        this.closeGuard(g, this.idleClosed, { afterMs: now - g.acceptedAt }, 'the client did not get past the first step in time');
        continue;
      }
      if (this.opts.idleTimeoutMs <= 0) continue;
      const t = g.traffic();
      if (t !== g.lastTraffic || g.busy()) {
        g.lastTraffic = t;
        g.lastChange = now;
      } else if (now - g.lastChange >= this.opts.idleTimeoutMs) {
        this.closeGuard(g, this.idleClosed, { unsentBytes: g.socket.writableLength, idleMs: now - g.lastChange }, 'idle');
      }
    }
  }
}

/** Unsent reply bytes across all connections of a server (see the header). */
export class ReplyBudget {
  private unsent = 0;
  private readonly waiters = new Set<() => void>();
  private notifying = false;

  constructor(
    /** Unsent bytes past which connections start nothing new. */
    readonly limit: number,
  ) {
    if (!(limit > 0)) throw new RangeError(`reply budget must be positive, got ${limit}`);
  }

  get used(): number {
    return this.unsent;
  }

  get over(): boolean {
    return this.unsent >= this.limit;
  }

  add(n: number): void {
    this.unsent += n;
  }

  sent(n: number): void {
    this.unsent -= n;
    if (this.unsent < 0) {
      accountingBug(`reply budget: ${-this.unsent} bytes more sent than added`);
      this.unsent = 0;
    }
    if (this.unsent < this.limit && this.waiters.size > 0 && !this.notifying) {
      // Once per drop below the limit, each waiter once: a waiter that goes over again re-registers.
      this.notifying = true;
      setImmediate(() => {
        this.notifying = false;
        for (const fn of [...this.waiters]) {
          if (this.over) return;
          this.waiters.delete(fn);
          fn();
        }
      });
    }
  }

  /** Calls `fn` once the budget is below its limit again; returns the cancel function. */
  whenBelow(fn: () => void): () => void {
    this.waiters.add(fn);
    return () => this.waiters.delete(fn);
  }

  /** Connections waiting for room. */
  get waiting(): number {
    return this.waiters.size;
  }
}
