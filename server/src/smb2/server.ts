// The SMB2 listener: Direct TCP connections (MS-SMB2 2.1), each framed and handed to an
// SmbConnection. The same hostile-client limits as the ONC RPC listener (wire/limits.ts): a frame
// cap checked before buffering; one request budget for the bytes of frames buffered or being
// served across all connections; frames in flight per connection; the replies a connection has not
// read (each frame counted by the most its replies can take before it starts) and, across all
// connections, a reply budget; a connection cap; an idle timeout; a deadline for each frame to
// arrive whole. A connection past any of these is not read until it is back under them. Garbage
// (framing errors) is logged a few times a minute at most. Graceful close: stop accepting, stop
// reading, let the requests read finish, then close the sockets.
import net from 'node:net';
import { BufferPool } from '../wire/buffer-pool.js';
import { FrameError } from '../wire/errors.js';
import { readSocket } from '../wire/socket-read.js';
import { ConnectionLimits, PauseReason, ReplyBudget } from '../wire/limits.js';
import { LogLimiter } from '../obs/log-limiter.js';
import { SmbConnection, type SmbEngineOptions } from './connection.js';
import { isTransformFrame } from './auth/encryption.js';
import type { Session } from './state.js';
import { DirectTcpFramer, directTcpHeader, replyEstimate } from './framing.js';
import { SessionTable } from './sessions.js';
import { LogonLimiter } from './auth/logon-limiter.js';
import { DurableTable } from './durable.js';
import { listenOn } from '../wire/listen.js';

export interface SmbServerOptions extends SmbEngineOptions {
  /** Largest Direct TCP frame accepted (default: a 1 MiB WRITE and its headers, plus room for a compound). */
  maxFrameSize?: number;
  /** How long a durable open waits for its client after a disconnect (default 16 min; adapters.smb.durable_handle_timeout). */
  durableHandleTimeoutMs?: number;
  /** Connections served at once; past it, one without a session yet is closed (wire/limits.ts), or the new one (default 1024). */
  maxConnections?: number;
  /** Connections from one client address at once; past it, as above within the address; 0: no cap (default 256). */
  maxConnectionsPerAddress?: number;
  /** A connection with no established session this long after its last request (10 x after it was accepted in any case) is closed; 0: never (default 60 s). */
  handshakeTimeoutMs?: number;
  /** A connection with no traffic for this long while none of its requests runs is closed; 0: never (default 15 min). */
  idleTimeoutMs?: number;
  /** Frames processed at once per connection before the socket is paused (default 64). */
  maxInFlightPerConnection?: number;
  /** Bytes of frames buffered or being served across all connections (default 256 MiB, at least maxFrameSize). */
  maxBufferedRequestBytes?: number;
  /** Reply bytes one connection may have unsent (counting those its running frames may still add; default 8 MiB). */
  maxUnsentReplyBytes?: number;
  /** Reply bytes unsent across all connections past which no connection starts a frame (default 128 MiB). */
  maxUnsentReplyBytesTotal?: number;
  /** A frame must arrive whole within this long of its first byte; 0: no limit (default 2 min). */
  frameTimeoutMs?: number;
}

export const DEFAULT_MAX_FRAME = 1024 * 1024 + 64 * 1024;

/** A frame read and not yet started: what it holds of the request budget and of the frame pool. */
interface Queued {
  /** The message(s) to serve: the frame, or what an encrypted frame held. */
  frame: Buffer;
  /** Bytes of the request budget the frame reserved. */
  reserved: number;
  /** The pooled buffer to give back once done (null: none). */
  pooled: Buffer | null;
  /** The session whose key the frame was encrypted under (null: in the clear). */
  sealedBy: Session | null;
}
export const SMB_SERVER_DEFAULTS = Object.freeze({
  maxConnections: 1024,
  maxConnectionsPerAddress: 256,
  handshakeTimeoutMs: 60_000,
  idleTimeoutMs: 15 * 60 * 1000,
  maxInFlightPerConnection: 64,
  maxBufferedRequestBytes: 256 * 1024 * 1024,
  maxUnsentReplyBytes: 8 * 1024 * 1024,
  maxUnsentReplyBytesTotal: 128 * 1024 * 1024,
  frameTimeoutMs: 2 * 60 * 1000,
} as const);
/** Frames this large or larger (1 MiB WRITEs) come from a pool and go back once answered. */
const POOLED_FRAME_MIN = 64 * 1024;
const POOLED_FRAMES_KEPT = 16;
/** The largest single READ/QUERY output a reply can carry (what NEGOTIATE offers at 2.1). */
const MAX_IO = 1024 * 1024;
/** Lines of one kind of client-caused log message per minute; the rest are counted in one summary line. */
const LOG_BURST = 10;
const LOG_INTERVAL_MS = 60_000;

export class SmbServer {
  private server: net.Server | null = null;
  private readonly sockets = new Map<net.Socket, { conn: SmbConnection }>();
  private closing = false;
  private inFlight = 0;
  private idleWaiters: (() => void)[] = [];
  /** Connection cap, idle timeout, frame deadline and the request budget. */
  readonly limits: ConnectionLimits;
  /** Unsent reply bytes across all connections. */
  readonly replies: ReplyBudget;
  private readonly framingLog: LogLimiter;
  private readonly engine: SmbEngineOptions;
  /** Connection teardowns under way (close() waits for them before closing preserved durable opens). */
  private readonly teardowns = new Set<Promise<void>>();

  /**
   * Buffers of large frames, reused: streaming 1 MiB WRITEs through fresh buffers costs V8 a full
   * collection every few dozen of them. A frame goes back once its requests are answered (the file
   * service has copied WRITE data into the WAL by then; nothing else keeps a view of a large frame).
   */
  private readonly framePool: BufferPool;

  constructor(private readonly opts: SmbServerOptions) {
    const maxFrame = opts.maxFrameSize ?? DEFAULT_MAX_FRAME;
    this.framePool = new BufferPool(maxFrame, POOLED_FRAMES_KEPT);
    const budget = opts.maxBufferedRequestBytes ?? Math.max(SMB_SERVER_DEFAULTS.maxBufferedRequestBytes, maxFrame);
    if (budget < maxFrame) throw new RangeError(`the request budget (${budget} bytes) must be at least the frame cap (${maxFrame} bytes)`);
    this.limits = new ConnectionLimits({
      maxConnections: opts.maxConnections ?? SMB_SERVER_DEFAULTS.maxConnections,
      maxConnectionsPerAddress: opts.maxConnectionsPerAddress ?? SMB_SERVER_DEFAULTS.maxConnectionsPerAddress,
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? SMB_SERVER_DEFAULTS.handshakeTimeoutMs,
      idleTimeoutMs: opts.idleTimeoutMs ?? SMB_SERVER_DEFAULTS.idleTimeoutMs,
      maxBufferedRequestBytes: budget,
      recordTimeoutMs: opts.frameTimeoutMs ?? SMB_SERVER_DEFAULTS.frameTimeoutMs,
      name: 'SMB',
      settings: 'adapters.smb',
      ...(opts.log ? { log: opts.log } : {}),
    });
    this.replies = new ReplyBudget(opts.maxUnsentReplyBytesTotal ?? SMB_SERVER_DEFAULTS.maxUnsentReplyBytesTotal);
    this.framingLog = new LogLimiter(opts.log, 'warn', LOG_BURST, LOG_INTERVAL_MS);
    this.engine = {
      ...opts,
      sessions: opts.sessions ?? new SessionTable(),
      logons: opts.logons ?? new LogonLimiter(),
      durable:
        opts.durable ??
        new DurableTable(opts.fs, {
          ...(opts.durableHandleTimeoutMs !== undefined ? { timeoutMs: opts.durableHandleTimeoutMs } : {}),
          ...(opts.log ? { log: opts.log } : {}),
        }),
    };
  }

  get connections(): number {
    return this.sockets.size;
  }

  listen(port: number, host: string): Promise<number> {
    const server = net.createServer({ noDelay: true, pauseOnConnect: true }, (s) => this.onConnection(s));
    this.server = server;
    return listenOn(server, port, host);
  }

  private onConnection(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const guard = this.limits.admit(socket);
    if (guard === null) return;
    const log = this.opts.log;
    const peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    const clog = log?.child({ peer, protocol: 'smb' });
    clog?.info('SMB connection opened');
    const maxInFlight = this.opts.maxInFlightPerConnection ?? SMB_SERVER_DEFAULTS.maxInFlightPerConnection;
    const maxUnsent = this.opts.maxUnsentReplyBytes ?? SMB_SERVER_DEFAULTS.maxUnsentReplyBytes;
    const budget = this.limits.budget;
    const replies = this.replies;
    /** Frames read and not started (each holds its budget reservation), and what runs. */
    const queue: Queued[] = [];
    let active = 0;
    /** The most reply bytes the running frames may still produce. */
    let expected = 0;
    /** Reply bytes handed to the socket and not yet written out (by our count). */
    let unsent = 0;
    let stopWaitingForReplies: (() => void) | null = null;
    let reading = false;

    const send = (parts: Buffer[]): void => {
      if (socket.destroyed || socket.writableEnded) return;
      let len = 0;
      for (const p of parts) len += p.length;
      unsent += len;
      replies.add(len);
      socket.cork();
      socket.write(directTcpHeader(len));
      const last = parts.length - 1;
      for (let i = 0; i < last; i++) socket.write(parts[i]!);
      // Runs once written out, or with an error once the socket is destroyed: either way not unsent.
      socket.write(parts[last]!, () => {
        unsent -= len;
        replies.sent(len);
        pump();
      });
      socket.uncork();
    };
    const abort = (why: string): void => {
      this.framingLog.log({ peer, why }, 'SMB connection closed: protocol error');
      socket.destroy();
    };
    const conn = new SmbConnection(this.engine, send, abort, clog, socket.remoteAddress ?? '', {
      progressed: () => guard.renewHandshake(),
      established: () => guard.prove(),
    });
    this.sockets.set(socket, { conn });
    const pool = this.framePool;
    const alloc = (n: number): Buffer => (n >= POOLED_FRAME_MIN ? pool.take(n) : Buffer.allocUnsafe(n));

    const start = (q: Queued): void => {
      const estimate = replyEstimate(q.frame, MAX_IO);
      active++;
      expected += estimate;
      // Counted server-wide too while it runs: the replies it may still produce.
      replies.add(estimate);
      this.inFlight++;
      conn
        .handleFrame(q.frame, q.sealedBy)
        .catch((err: unknown) => clog?.error({ err }, 'SMB frame failed unexpectedly'))
        .finally(() => {
          release(q);
          active--;
          expected -= estimate;
          replies.sent(estimate);
          if (--this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
          pump();
        });
    };
    /**
     * Starts the frames read while fewer than maxInFlight run and the client reads its replies
     * (this connection's and everyone's), and reads the socket only while nothing waits.
     */
    const pump = (): void => {
      if (socket.destroyed) return;
      while (queue.length > 0 && active < maxInFlight && !this.closing && !replies.over) {
        // One frame always may run when nothing else does and nothing is unsent (a lone large compound).
        if (active > 0 || unsent > 0) {
          if (unsent + expected + replyEstimate(queue[0]!.frame, MAX_IO) > maxUnsent) break;
        }
        start(queue.shift()!);
      }
      if (queue.length > 0 || active >= maxInFlight) guard.hold(PauseReason.InFlight);
      else guard.release(PauseReason.InFlight);
      const outputFull = unsent >= maxUnsent || replies.over;
      if (outputFull) {
        guard.hold(PauseReason.Output);
        if (replies.over && stopWaitingForReplies === null)
          stopWaitingForReplies = replies.whenBelow(() => {
            stopWaitingForReplies = null;
            pump();
          });
      } else guard.release(PauseReason.Output);
    };
    /** A frame's budget reservation and pooled buffer go back (it ran, or never will). */
    const release = (q: Queued): void => {
      budget.release(q.reserved);
      if (q.pooled !== null) pool.give(q.pooled);
    };
    /**
     * A frame as read. An encrypted one is opened at once (its session's key is set: the client
     * sends one only after the SESSION_SETUP response), so that what it asks is what the reply
     * bounds count, and its ciphertext goes back to the pool; the plaintext keeps the reservation.
     */
    const queueFrame = (frame: Buffer): void => {
      const pooled = frame.length >= POOLED_FRAME_MIN ? frame : null;
      if (!isTransformFrame(frame)) {
        queue.push({ frame, reserved: frame.length, pooled, sealedBy: null });
        return;
      }
      const opened = conn.unseal(frame);
      if (pooled !== null) pool.give(pooled);
      if (opened === null)
        budget.release(frame.length); // the connection is being dropped
      else queue.push({ frame: opened.message, reserved: frame.length, pooled: null, sealedBy: opened.session });
    };
    const framer = new DirectTcpFramer(this.opts.maxFrameSize ?? DEFAULT_MAX_FRAME, queueFrame, { alloc, budget });
    // Requests answered STATUS_PENDING (a blocking LOCK, a CHANGE_NOTIFY) are the server's to
    // finish: a client waiting on them is not idle.
    guard.busy = () => active > 0 || queue.length > 0 || framer.blocked || conn.pendingCount > 0;
    guard.partialRecord = () => framer.partialFrame;
    const take = (chunk: Buffer): void => {
      try {
        framer.push(chunk);
      } catch (err) {
        if (err instanceof FrameError) abort(err.message);
        else {
          clog?.error({ err }, 'SMB framing failed unexpectedly');
          socket.destroy();
        }
        return;
      }
      if (framer.blocked) guard.hold(PauseReason.Budget);
      pump();
    };
    framer.onReady = () => {
      guard.release(PauseReason.Budget);
      if (!socket.destroyed) take(Buffer.alloc(0));
    };
    const resumeAfterPressure = (): void => {
      if (socket.destroyed || framer.blocked) return;
      guard.release(PauseReason.Budget);
    };
    // While others wait for the budget, a connection between frames starts no new frame either.
    const pauseForPressure = (): void => {
      if (reading || framer.partialFrame >= 0 || guard.holds(PauseReason.Budget) || socket.destroyed) return;
      guard.hold(PauseReason.Budget);
      budget.queueResume(resumeAfterPressure);
    };
    const stopPressure = budget.onPressure(pauseForPressure);
    // The framer copies what it keeps out of every chunk, so one read buffer serves every socket.
    const onChunk = (chunk: Buffer): void => {
      if (this.closing) return;
      reading = true;
      take(chunk);
      reading = false;
      if (budget.pressure) pauseForPressure();
    };
    readSocket(socket, onChunk);
    if (budget.pressure) pauseForPressure();
    if (!guard.paused) socket.resume();
    socket.on('error', (err) => clog?.debug({ err: err.message }, 'SMB socket error'));
    socket.on('close', () => {
      this.sockets.delete(socket);
      stopPressure();
      stopWaitingForReplies?.();
      framer.dispose();
      // Frames read but never started: nobody will get their replies.
      for (const q of queue) release(q);
      queue.length = 0;
      const down = conn.teardown().catch((err: unknown) => clog?.warn({ err }, 'SMB connection teardown failed'));
      this.teardowns.add(down);
      void down.finally(() => this.teardowns.delete(down));
      clog?.info('SMB connection closed');
    });
  }

  /** Stops accepting and reading; waits (at most 10 s) for requests in flight; closes every socket. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.limits.close();
    const closed = new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    for (const s of this.sockets.keys()) s.pause();
    if (this.inFlight > 0) {
      await Promise.race([new Promise<void>((r) => this.idleWaiters.push(r)), new Promise<void>((r) => setTimeout(r, 10_000).unref())]);
    }
    for (const s of this.sockets.keys()) s.destroy();
    await closed;
    // Durable opens the connections left (and those preserved earlier) close as CLOSE would:
    // nobody can reconnect them once the server is gone, and their delete-on-close must run.
    await Promise.all(this.teardowns);
    await this.engine.durable?.closeAll();
  }
}
