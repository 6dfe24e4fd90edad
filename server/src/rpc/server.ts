// ONC RPC server over TCP (record marking) and UDP: decodes calls, checks RPC version and
// credentials, dispatches to programs, answers PROG_UNAVAIL / PROG_MISMATCH / PROC_UNAVAIL /
// GARBAGE_ARGS per RFC 5531 §9, and keeps a duplicate request cache for non-idempotent calls.
import dgram from 'node:dgram';
import net from 'node:net';
import type { Logger } from 'pino';
import type { RequestObserver } from '../obs/metrics.js';
import { endSpan, runInSpan, SpanKind, startSpan, tracingEnabled, type Span } from '../obs/tracing.js';
import { DecodeError } from '../wire/errors.js';
import type { AcceptStat, RpcCall } from './message.js';
import {
  AcceptStat as AS,
  AuthFlavor,
  AuthStat,
  decodeAuthSys,
  decodeCall,
  encodeAcceptError,
  encodeAuthError,
  encodeProgMismatch,
  encodeRpcMismatch,
  RPC_VERSION,
  writeAcceptedHeader,
} from './message.js';
import { BufferPool } from '../wire/buffer-pool.js';
import { readSocket } from '../wire/socket-read.js';
import { ConnectionLimits, PauseReason, ReplyBudget } from '../wire/limits.js';
import { LogLimiter } from '../obs/log-limiter.js';
import { markedRecord, recordMark, RecordReader, type RecordAlloc } from './record.js';
import { XdrWriter } from './xdr.js';
import { listenOn } from '../wire/listen.js';

export interface RpcConnectionInfo {
  /** Client IP address (no port): clients reconnect from new ports and retransmit. */
  host: string;
  transport: 'tcp' | 'udp';
  /**
   * Told when a call to a program and version served here, past the credential check, has been
   * answered and its program says the call proves the client (RpcProgram.proves): the connection
   * is past its handshake (wire/limits.ts). Once: it removes itself, so a proven connection's calls
   * are not asked RpcProgram.proves.
   */
  onCall?: () => void;
  /**
   * TCP: calls other than NULL running now, past the credential check. A client's first real call
   * may take long (a COMMIT of much data, a WRITE waiting for an SMB client to give up its oplock):
   * while one runs, the handshake deadline waits for its answer (wire/limits.ts handshakeHeld).
   */
  running?: number;
}

export interface RpcProgram {
  readonly prog: number;
  readonly name: string;
  readonly lowVersion: number;
  readonly highVersion: number;
  readonly maxProc: number;
  /** Writes the result after the accepted-reply header; may return extra buffers to send after it. */
  handle(call: RpcCall, w: XdrWriter, conn: RpcConnectionInfo): Promise<Buffer[] | undefined>;
  /** Procedures whose retransmissions must get the cached original reply. */
  isNonIdempotent(proc: number): boolean;
  /**
   * True when `handle` keeps no reference into the call's record once it has settled (resolved or
   * rejected): the record's buffer is then reused for later calls. Absent: never.
   */
  releasesRecord?(proc: number): boolean;
  procName(proc: number): string;
  /**
   * The outcome of a call `handle` completed, as a metrics label from a fixed table (`ok`,
   * `noent`, ...), read from the result it wrote at `reply[at..end)`. Absent: always `ok`.
   */
  resultStatus?(proc: number, reply: Buffer, at: number, end: number): string;
  /**
   * Whether a call `handle` completed proves the connection a real client's (wire/limits.ts:
   * proven connections have no handshake deadline and are never closed to make room), from the
   * result it wrote at `reply[at..end)`. A program with an access check says yes only past it: a
   * NULL call, which needs no credential, must not let a crowd of sockets pass for clients.
   * Absent: every call does.
   */
  proves?(proc: number, reply: Buffer, at: number, end: number): boolean;
}

export interface RpcServerOptions {
  maxRecordSize: number;
  drcSize: number;
  /** Calls of one connection running at once; past this, the connection is not read (default 8). */
  maxInFlightPerConnection?: number;
  /** Reply bytes of one connection not yet written out past which it is not read (default 2 MiB). */
  maxUnsentReplyBytes?: number;
  /** TCP connections served at once; past it, one not past its handshake (RpcProgram.proves) is closed (wire/limits.ts), or the new one (default 1024). */
  maxConnections?: number;
  /** TCP connections from one client address at once; past it, as above within the address; 0: no cap (default 256). */
  maxConnectionsPerAddress?: number;
  /** A TCP connection not past its handshake (RpcProgram.proves) this long after it was accepted is closed; 0: never (default 30 s). */
  handshakeTimeoutMs?: number;
  /** A connection with no traffic for this long, while none of its calls runs, is closed; 0: never (default 6 min). */
  idleTimeoutMs?: number;
  /**
   * Bytes of request records buffered across all TCP connections: records being read and calls
   * running (default 256 MiB, at least maxRecordSize). Past it, connections wait before reading more.
   */
  maxBufferedRequestBytes?: number;
  /** Reply bytes unsent across all TCP connections past which no connection starts a call (default 256 MiB). */
  maxUnsentReplyBytesTotal?: number;
  /** A record must arrive whole within this long of its first byte, or the connection is closed; 0: no limit (default 2 min). */
  recordTimeoutMs?: number;
  /** The config section of the connection limits (`adapters.nfs`), named when a client is refused. */
  settings?: string;
  /** Name of the protocol in log lines (default `RPC`). */
  name?: string;
  log?: Logger;
  /** Told about every call answered (metrics); absent, nothing is measured. */
  observer?: RequestObserver;
}

export const RPC_SERVER_DEFAULTS = Object.freeze({
  maxInFlightPerConnection: 8,
  maxUnsentReplyBytes: 2 * 1024 * 1024,
  maxConnections: 1024,
  maxConnectionsPerAddress: 256,
  handshakeTimeoutMs: 30_000,
  idleTimeoutMs: 6 * 60_000,
  maxBufferedRequestBytes: 256 * 1024 * 1024,
  maxUnsentReplyBytesTotal: 256 * 1024 * 1024,
  recordTimeoutMs: 2 * 60_000,
} as const);

/** Whether a record's buffer may be reused once its call is answered, and what to do once its reply is out. */
interface RecordLease {
  reusable: boolean;
  afterReply?: () => void;
}

/** Sends a reply's buffers; calls `sent` (if any) once they have been written out or dropped. */
type SendReply = (parts: Buffer[], sent?: () => void) => void;

interface DrcEntry {
  done: boolean;
  /** First bytes of the call's arguments, to tell a retransmission from a reused xid. */
  argsPrefix: Buffer;
  reply: Buffer[];
  /**
   * Where to send the reply again once the original is done: one per connection that retransmitted
   * the call while it ran (maybe a new one: the client may have reconnected). One, not one per
   * retransmission: a client resending a call in a loop while it waits (a REMOVE waiting for a
   * lease break) must not pile up copies of its reply. Null until a retransmission comes (most
   * calls never see one).
   */
  waiters: Map<RpcConnectionInfo, (reply: Buffer[]) => void> | null;
}

/** LRU duplicate request cache (RFC 5531 leaves it to the server; every real NFS server has one). */
class DuplicateRequestCache {
  private entries = new Map<string, DrcEntry>();
  constructor(private readonly max: number) {}

  get(key: string): DrcEntry | undefined {
    return this.entries.get(key);
  }

  begin(key: string, argsPrefix: Buffer): DrcEntry {
    const e: DrcEntry = { done: false, argsPrefix, reply: [], waiters: null };
    this.entries.set(key, e);
    if (this.entries.size > this.max) {
      // Evict the oldest completed replies; entries still in progress stay (they are few: bounded
      // by the requests in flight).
      for (const [k, v] of this.entries) {
        if (this.entries.size <= this.max) break;
        if (v.done) this.entries.delete(k);
      }
    }
    return e;
  }

  forget(key: string): void {
    this.entries.delete(key);
  }
}

const MAX_GARBAGE_PER_CONNECTION = 64;
/** Replies up to this size are copied behind their record mark and written as one buffer. */
const SMALL_REPLY_BYTES = 4096;
/** Lines of one kind of client-caused log message per interval; the rest are counted in one summary line. */
const LOG_BURST = 10;
const LOG_INTERVAL_MS = 60_000;

/** Records this large or larger come from a pool of buffers (a 1 MiB WRITE and its headers fit one). */
const POOLED_RECORD_MIN = 64 * 1024;
const POOLED_RECORD_BYTES = 1024 * 1024 + 4096;
/** Free record buffers kept for reuse. */
const POOLED_RECORDS_KEPT = 16;

/** Status labels of calls that failed at the RPC level (RFC 5531 accept_stat). */
const ACCEPT_STAT_LABELS: Readonly<Record<number, string>> = Object.freeze({
  [AS.PROG_UNAVAIL]: 'prog_unavail',
  [AS.PROG_MISMATCH]: 'prog_mismatch',
  [AS.PROC_UNAVAIL]: 'proc_unavail',
  [AS.GARBAGE_ARGS]: 'garbage_args',
  [AS.SYSTEM_ERR]: 'system_err',
});

/** Outcomes that are the server's failure (an ERROR span), as opposed to an answer such as NOENT. */
const SERVER_FAILURES: ReadonlySet<string> = new Set(['system_err', 'serverfault', 'io', 'jukebox']);

/** After the drain, how long a closing connection waits for the client to close its side. */
const CLOSE_LINGER_MS = 2_000;

export class RpcServer {
  private readonly programs = new Map<number, RpcProgram>();
  private readonly drc: DuplicateRequestCache;
  private readonly tcpServers: net.Server[] = [];
  private readonly udpSockets: dgram.Socket[] = [];
  private readonly sockets = new Set<net.Socket>();
  private inFlight = 0;
  private idleWaiters: (() => void)[] = [];
  private closing = false;
  private closed: Promise<void> | null = null;
  /** Span names (`nfs.WRITE`) by program and procedure, made once. */
  private readonly spanNames = new Map<number, string[]>();
  /** Buffers of large records, reused once their call is answered (see RpcProgram.releasesRecord). */
  readonly recordPool: BufferPool;
  private readonly allocRecord: RecordAlloc;
  /** Connection cap, idle timeout and the request budget of the TCP listeners. */
  readonly limits: ConnectionLimits;
  /** Reply bytes unsent across all TCP connections (issue 11: 1,024 slow readers must not hold 10 GiB). */
  readonly replies: ReplyBudget;
  /** Log lines a hostile client can cause, each at most a few per minute. */
  private readonly framingLog: LogLimiter;
  private readonly garbageLog: LogLimiter;
  private readonly badCallLog: LogLimiter;

  constructor(
    programs: RpcProgram[],
    private readonly opts: RpcServerOptions,
  ) {
    for (const p of programs) this.programs.set(p.prog, p);
    this.drc = new DuplicateRequestCache(opts.drcSize);
    const pool = (this.recordPool = new BufferPool(Math.min(opts.maxRecordSize, POOLED_RECORD_BYTES), POOLED_RECORDS_KEPT));
    this.allocRecord = (size) => (size >= POOLED_RECORD_MIN ? pool.take(size) : Buffer.allocUnsafe(size));
    const budget = opts.maxBufferedRequestBytes ?? Math.max(RPC_SERVER_DEFAULTS.maxBufferedRequestBytes, opts.maxRecordSize);
    if (budget < opts.maxRecordSize) {
      throw new RangeError(`the request budget (${budget} bytes) must be at least the record cap (${opts.maxRecordSize} bytes)`);
    }
    const name = opts.name ?? 'RPC';
    this.limits = new ConnectionLimits({
      maxConnections: opts.maxConnections ?? RPC_SERVER_DEFAULTS.maxConnections,
      maxConnectionsPerAddress: opts.maxConnectionsPerAddress ?? RPC_SERVER_DEFAULTS.maxConnectionsPerAddress,
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? RPC_SERVER_DEFAULTS.handshakeTimeoutMs,
      idleTimeoutMs: opts.idleTimeoutMs ?? RPC_SERVER_DEFAULTS.idleTimeoutMs,
      maxBufferedRequestBytes: budget,
      recordTimeoutMs: opts.recordTimeoutMs ?? RPC_SERVER_DEFAULTS.recordTimeoutMs,
      name,
      ...(opts.settings !== undefined ? { settings: opts.settings } : {}),
      ...(opts.log ? { log: opts.log } : {}),
    });
    this.replies = new ReplyBudget(opts.maxUnsentReplyBytesTotal ?? RPC_SERVER_DEFAULTS.maxUnsentReplyBytesTotal);
    this.framingLog = new LogLimiter(opts.log, 'warn', LOG_BURST, LOG_INTERVAL_MS);
    this.garbageLog = new LogLimiter(opts.log, 'warn', LOG_BURST, LOG_INTERVAL_MS);
    this.badCallLog = new LogLimiter(opts.log, 'info', LOG_BURST, LOG_INTERVAL_MS);
  }

  get connections(): number {
    return this.sockets.size;
  }

  listenTcp(port: number, host: string): Promise<number> {
    // Paused until onConnection has chosen how the socket reads.
    // allowHalfOpen: a client that sends its calls and then shuts down its side still gets the replies.
    const server = net.createServer({ noDelay: true, pauseOnConnect: true, allowHalfOpen: true }, (socket) => this.onConnection(socket));
    this.tcpServers.push(server);
    return listenOn(server, port, host);
  }

  listenUdp(port: number, host: string): Promise<number> {
    const sock = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
    this.udpSockets.push(sock);
    sock.on('message', (msg, rinfo) => {
      void this.process(msg, { host: rinfo.address, transport: 'udp' }, (parts, sent) => {
        const datagram = Buffer.concat(parts);
        sent?.();
        // A spoofed source (port 0, a broadcast address) must not take the process down.
        try {
          sock.send(datagram, rinfo.port, rinfo.address, (err) => {
            if (err) this.opts.log?.debug({ err: err.message }, 'UDP reply not sent');
          });
        } catch (err) {
          this.opts.log?.debug({ err: (err as Error).message, peer: `${rinfo.address}:${rinfo.port}` }, 'UDP reply not sent');
        }
      });
    });
    sock.on('error', (err) => this.opts.log?.warn({ err: err.message }, 'UDP socket error'));
    return new Promise((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(port, host, () => {
        sock.off('error', reject);
        resolve(sock.address().port);
      });
    });
  }

  private onConnection(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const guard = this.limits.admit(socket);
    if (guard === null) return;
    const log = this.opts.log;
    const host = socket.remoteAddress ?? 'unknown';
    const peer = `${host}:${socket.remotePort ?? 0}`;
    this.sockets.add(socket);
    const opened = Date.now();
    let requests = 0;
    log?.info({ peer }, 'RPC connection opened');
    const budget = this.limits.budget;
    const reader = new RecordReader(this.opts.maxRecordSize, this.allocRecord, { budget });
    // Proven once: the calls after it need not be looked at (onCall gone, see dispatch).
    const conn: RpcConnectionInfo = {
      host,
      transport: 'tcp',
      onCall: () => {
        guard.prove();
        conn.onCall = undefined;
      },
      running: 0,
    };
    const maxInFlight = this.opts.maxInFlightPerConnection ?? RPC_SERVER_DEFAULTS.maxInFlightPerConnection;
    const maxUnsent = this.opts.maxUnsentReplyBytes ?? RPC_SERVER_DEFAULTS.maxUnsentReplyBytes;
    /** Records read and not yet started (each holds its budget reservation), and calls running. */
    const queue: Buffer[] = [];
    let active = 0;
    let garbage = 0;
    /** The client shut down its side: end ours once every reply is written. */
    let readEnded = false;
    /** Inside onChunk (the pressure listener must not pause the connection that caused it). */
    let reading = false;
    guard.busy = () => active > 0 || reader.blocked || guard.holds(PauseReason.Budget);
    guard.handshakeHeld = () => conn.running! > 0;
    guard.partialRecord = () => reader.partialRecord;
    const replies = this.replies;
    let stopWaitingForReplies: (() => void) | null = null;

    const send: SendReply = (parts, sent) => {
      if (socket.destroyed || socket.writableEnded) {
        sent?.();
        return;
      }
      let len = 0;
      for (const p of parts) len += p.length;
      // The callback of the last write runs once everything before it is written out, or with
      // an error once the socket is destroyed: either way the buffers are free again.
      // Past half the unsent bound, each reply written out lets the next calls start (waiting for
      // 'drain', which comes only once everything is out, would leave the socket idle meanwhile).
      const watch = socket.writableLength + len >= maxUnsent / 2 || replies.waiting > 0;
      const done = (): void => {
        replies.sent(len);
        sent?.();
        if (watch) pump();
      };
      replies.add(len);
      // A small reply (all but READ's) goes out as one buffer behind its record mark: one write,
      // without cork/uncork and a writev of two buffers.
      if (parts.length === 1 && len <= SMALL_REPLY_BYTES) {
        socket.write(markedRecord(parts[0]!), done);
        return;
      }
      socket.cork();
      socket.write(recordMark(len));
      const last = parts.length - 1;
      for (let i = 0; i < last; i++) socket.write(parts[i]!);
      socket.write(parts[last]!, done);
      socket.uncork();
    };
    const onGarbage = (): void => {
      garbage++;
      if (garbage === MAX_GARBAGE_PER_CONNECTION) {
        this.framingLog.log({ peer }, 'closing RPC connection: too many undecodable messages');
        socket.destroy();
      }
    };
    const dispatch = (record: Buffer): void => {
      active++;
      void this.process(record, conn, send, onGarbage).finally(() => {
        active--;
        budget.release(record.length);
        pump();
      });
    };
    /**
     * Starts the calls read while fewer than maxInFlight run and the client reads its replies, and
     * reads the socket only while nothing waits: what one client holds stays bounded.
     */
    const pump = (): void => {
      if (socket.destroyed) return;
      const outputFull = socket.writableLength >= maxUnsent || replies.over;
      // Over the server-wide bound: this connection starts nothing until the replies drain.
      if (replies.over && stopWaitingForReplies === null)
        stopWaitingForReplies = replies.whenBelow(() => {
          stopWaitingForReplies = null;
          pump();
        });
      while (queue.length > 0 && active < maxInFlight && !outputFull && !this.closing) dispatch(queue.shift()!);
      if (queue.length > 0 || active >= maxInFlight) guard.hold(PauseReason.InFlight);
      else guard.release(PauseReason.InFlight);
      if (outputFull) guard.hold(PauseReason.Output);
      else guard.release(PauseReason.Output);
      // A record cut off by the client's shutdown can never complete: it is not waited for.
      if (readEnded && active === 0 && queue.length === 0 && !reader.blocked) socket.end();
    };
    const resumeAfterPressure = (): void => {
      if (socket.destroyed || reader.blocked) return;
      guard.release(PauseReason.Budget);
    };
    const pauseForPressure = (): void => {
      if (reading || reader.midRecord || reader.blocked || guard.holds(PauseReason.Budget) || socket.destroyed) return;
      guard.hold(PauseReason.Budget);
      budget.queueResume(resumeAfterPressure);
    };
    const stopPressure = budget.onPressure(pauseForPressure);
    const take = (chunk: Buffer): void => {
      let records: Buffer[];
      try {
        records = reader.push(chunk);
      } catch (err) {
        this.framingLog.log({ peer, err: (err as Error).message }, 'closing RPC connection: bad record framing');
        socket.destroy();
        return;
      }
      requests += records.length;
      for (const r of records) queue.push(r);
      if (reader.blocked) guard.hold(PauseReason.Budget);
      pump();
    };
    reader.onReady = () => {
      guard.release(PauseReason.Budget);
      if (!socket.destroyed) take(Buffer.alloc(0));
    };
    const onChunk = (chunk: Buffer): void => {
      // Calls arriving after close() began are not served; the client resends them elsewhere.
      if (this.closing) return;
      reading = true;
      take(chunk);
      reading = false;
      // While others wait for the budget, this connection starts no new record either.
      if (budget.pressure) pauseForPressure();
    };
    readSocket(socket, onChunk);
    socket.on('drain', pump);
    socket.on('end', () => {
      readEnded = true;
      pump();
    });
    if (budget.pressure) pauseForPressure();
    if (!guard.paused) socket.resume();
    socket.on('error', (err) => log?.debug({ peer, err: err.message }, 'RPC socket error'));
    socket.on('close', () => {
      this.sockets.delete(socket);
      stopPressure();
      stopWaitingForReplies?.();
      reader.dispose();
      // Calls read but never started: nobody will get their replies.
      for (const r of queue) {
        budget.release(r.length);
        this.recordPool.give(r);
      }
      queue.length = 0;
      log?.info({ peer, requests, ms: Date.now() - opened }, 'RPC connection closed');
    });
  }

  /** Decodes and answers one record. Never rejects. */
  private async process(record: Buffer, conn: RpcConnectionInfo, send: SendReply, onGarbage?: () => void): Promise<void> {
    this.inFlight++;
    const lease: RecordLease = { reusable: true };
    let sending = false;
    try {
      const reply = await this.answer(record, conn, send, lease);
      if (reply === undefined) onGarbage?.();
      else if (reply !== null) {
        sending = true;
        send(reply, lease.afterReply);
      }
    } finally {
      if (!sending) lease.afterReply?.();
      if (lease.reusable) this.recordPool.give(record);
      this.inFlight--;
      if (this.inFlight === 0 && this.idleWaiters.length > 0) {
        const w = this.idleWaiters;
        this.idleWaiters = [];
        for (const f of w) f();
      }
    }
  }

  /**
   * The reply to one RPC record, as buffers to send in order: null when no reply is due (a
   * retransmission whose original is still in progress), undefined when the record is not an RPC
   * call at all (no reply is possible without a valid header). Never rejects.
   */
  async answer(
    record: Buffer,
    conn: RpcConnectionInfo,
    lateReply?: (reply: Buffer[]) => void,
    lease?: RecordLease,
  ): Promise<Buffer[] | null | undefined> {
    let call: RpcCall;
    try {
      call = decodeCall(record);
    } catch (err) {
      this.garbageLog.log({ client: conn.host, err: (err as Error).message, bytes: record.length }, 'dropping undecodable RPC message');
      return undefined;
    }
    try {
      return await this.dispatch(call, record, conn, lateReply, lease);
    } catch (err) {
      this.opts.log?.error({ err, xid: call.xid }, 'RPC dispatch failed');
      return [encodeAcceptError(call.xid, AS.SYSTEM_ERR)];
    }
  }

  private async dispatch(
    call: RpcCall,
    record: Buffer,
    conn: RpcConnectionInfo,
    lateReply?: (reply: Buffer[]) => void,
    lease?: RecordLease,
  ): Promise<Buffer[] | null> {
    const log = this.opts.log;
    const { xid } = call;
    if (call.rpcVersion !== RPC_VERSION) return [encodeRpcMismatch(xid)];
    const program = this.programs.get(call.prog);
    if (!program) {
      this.badCallLog.log({ client: conn.host, prog: call.prog }, 'call for an unknown RPC program');
      return [encodeAcceptError(xid, AS.PROG_UNAVAIL)];
    }
    if (call.vers < program.lowVersion || call.vers > program.highVersion) {
      this.badCallLog.log({ client: conn.host, prog: call.prog, vers: call.vers }, 'call for an unsupported program version');
      return [encodeProgMismatch(xid, program.lowVersion, program.highVersion)];
    }
    if (call.proc > program.maxProc) {
      this.badCallLog.log({ client: conn.host, prog: call.prog, proc: call.proc }, 'call for an unknown procedure');
      return [encodeAcceptError(xid, AS.PROC_UNAVAIL)];
    }
    if (call.credFlavor === AuthFlavor.AUTH_SYS) {
      try {
        call.authSys = decodeAuthSys(call.credBody);
      } catch (err) {
        this.badCallLog.log({ client: conn.host, err: (err as Error).message }, 'rejecting malformed AUTH_SYS credential');
        return [encodeAuthError(xid, AuthStat.AUTH_BADCRED)];
      }
    } else if (call.credFlavor !== AuthFlavor.AUTH_NONE && call.proc !== 0) {
      return [encodeAuthError(xid, AuthStat.AUTH_TOOWEAK)];
    }

    let drcKey: string | null = null;
    let drcEntry: DrcEntry | null = null;
    if (program.isNonIdempotent(call.proc)) {
      // The credential is part of the key: two clients behind one address may reuse an xid.
      drcKey = `${conn.host}|${xid}|${call.prog}|${call.vers}|${call.proc}|${record.length}|${call.credBody.toString('latin1')}`;
      const prefix = record.subarray(call.args.pos, Math.min(record.length, call.args.pos + 128));
      const hit = this.drc.get(drcKey);
      if (hit && hit.argsPrefix.equals(prefix)) {
        if (!hit.done) {
          // The original is still running: answer this retransmission too when it finishes (the
          // client may have reconnected, so the original's socket may be gone).
          if (lateReply && !hit.waiters?.has(conn)) (hit.waiters ??= new Map()).set(conn, lateReply);
          return null;
        }
        log?.debug({ client: conn.host, xid }, 'duplicate request answered from cache');
        return hit.reply;
      }
      drcEntry = this.drc.begin(drcKey, Buffer.from(prefix));
    }

    const started = performance.now();
    const w = new XdrWriter(256);
    writeAcceptedHeader(w, xid, AS.SUCCESS);
    const resultAt = w.pos;
    const span = tracingEnabled() ? this.startCallSpan(program, call.proc, conn) : null;
    let stat: AcceptStat = AS.SUCCESS;
    let extra: Buffer[] | undefined;
    if (lease && program.releasesRecord?.(call.proc) !== true) lease.reusable = false;
    const counted = conn.running !== undefined && call.proc !== 0;
    if (counted) conn.running!++;
    try {
      extra = span === null ? await program.handle(call, w, conn) : await runInSpan(span, () => program.handle(call, w, conn));
    } catch (err) {
      if (err instanceof DecodeError) {
        this.badCallLog.log({ client: conn.host, proc: program.procName(call.proc), err: err.message }, 'GARBAGE_ARGS');
        stat = AS.GARBAGE_ARGS;
      } else if (err instanceof RangeError && err.message === 'unknown procedure') {
        stat = AS.PROC_UNAVAIL;
      } else {
        log?.error({ err, proc: program.procName(call.proc) }, 'RPC procedure failed');
        stat = AS.SYSTEM_ERR;
      }
    } finally {
      if (counted) conn.running!--;
    }
    const observer = this.opts.observer;
    if (observer !== undefined || span !== null) {
      const status =
        stat === AS.SUCCESS ? (program.resultStatus?.(call.proc, w.buf, resultAt, w.pos) ?? 'ok') : (ACCEPT_STAT_LABELS[stat] ?? 'error');
      observer?.requestDone(program.name, program.procName(call.proc), status, (performance.now() - started) / 1000);
      if (span !== null) {
        span.setAttribute('dittofs.status', status);
        endSpan(span, SERVER_FAILURES.has(status) ? status : undefined);
      }
    }
    // A call to a program and version served here, past the credential check, that its program
    // counts as proof (RpcProgram.proves): the connection is past its handshake (wire/limits.ts). A
    // well-formed record alone is not: a call to a program not served proves nothing.
    if (stat === AS.SUCCESS && conn.onCall !== undefined && (program.proves?.(call.proc, w.buf, resultAt, w.pos) ?? true)) conn.onCall();
    let reply: Buffer[];
    if (stat !== AS.SUCCESS) {
      // The handler's result (and any buffer it lent it) is not sent.
      call.afterReply?.();
      reply = [encodeAcceptError(xid, stat)];
      if (drcKey) this.drc.forget(drcKey);
      if (drcEntry?.waiters) for (const w of drcEntry.waiters.values()) w(reply);
      return reply;
    }
    reply = extra ? [w.finish(), ...extra] : [w.finish()];
    // A reply the cache keeps is sent again later: what it holds is never handed back.
    if (lease && !drcEntry && call.afterReply) lease.afterReply = call.afterReply;
    if (drcEntry) {
      drcEntry.reply = reply;
      drcEntry.done = true;
      if (drcEntry.waiters) for (const w of drcEntry.waiters.values()) w(reply);
      drcEntry.waiters = null;
    }
    return reply;
  }

  /** A SERVER span for one call (`nfs.WRITE`); the caller ends it. */
  private startCallSpan(program: RpcProgram, proc: number, conn: RpcConnectionInfo): Span | null {
    let names = this.spanNames.get(program.prog);
    if (names === undefined) this.spanNames.set(program.prog, (names = []));
    const name = (names[proc] ??= `${program.name}.${program.procName(proc)}`);
    return startSpan(name, SpanKind.SERVER, {
      'rpc.system': 'onc_rpc',
      'rpc.service': program.name,
      'rpc.method': program.procName(proc),
      'client.address': conn.host,
      'network.transport': conn.transport,
    });
  }

  /**
   * Graceful stop: stops accepting connections and reading calls, waits (at most `drainMs`) for
   * the calls already read to be answered, then closes every connection from this side once its
   * replies are written. What clients send meanwhile is read and dropped, so that closing does not
   * reset a connection (which could discard replies not yet delivered); a client that does not
   * close its side within a short linger is cut off.
   */
  close(drainMs = 10_000): Promise<void> {
    this.closed ??= this.shutdown(drainMs);
    return this.closed;
  }

  private async shutdown(drainMs: number): Promise<void> {
    this.closing = true;
    this.limits.close();
    const closed = this.tcpServers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    for (const u of this.udpSockets) u.close();
    for (const s of this.sockets) s.pause();
    if (this.inFlight > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, drainMs);
        this.idleWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    await Promise.all([...this.sockets].map((s) => endConnection(s, CLOSE_LINGER_MS)));
    await Promise.all(closed);
  }
}

/** Half-closes a connection after its pending writes, drops what the peer still sends, and destroys it after `lingerMs`. */
function endConnection(socket: net.Socket, lingerMs: number): Promise<void> {
  if (socket.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => socket.destroy(), lingerMs);
    socket.once('close', () => {
      clearTimeout(t);
      resolve();
    });
    socket.end();
    socket.resume();
  });
}
