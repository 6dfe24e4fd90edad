// The SMB2 listener: Direct TCP connections (MS-SMB2 2.1), each framed and handed to an
// SmbConnection. Bounds: a frame cap checked before buffering, frames (and their bytes) in flight
// per connection (the socket pauses beyond them), a connection cap, and an idle timeout. Graceful
// close: stop accepting, stop reading, let the requests read finish, then close the sockets.
import net from 'node:net';
import { BufferPool } from '../wire/buffer-pool.js';
import { FrameError } from '../wire/errors.js';
import { SmbConnection, type SmbEngineOptions } from './connection.js';
import { DirectTcpFramer, directTcpHeader } from './framing.js';
import { listenOn } from '../wire/listen.js';

export interface SmbServerOptions extends SmbEngineOptions {
  /** Largest Direct TCP frame accepted (default: a 1 MiB WRITE and its headers, plus room for a compound). */
  maxFrameSize?: number;
  /** Connections served at once; more are closed at accept (default 1024). */
  maxConnections?: number;
  /** A connection with nothing in flight and nothing received for this long is closed (default 15 min). */
  idleTimeoutMs?: number;
  /** Frames processed at once per connection before the socket is paused (default 64). */
  maxInFlightPerConnection?: number;
}

export const DEFAULT_MAX_FRAME = 1024 * 1024 + 64 * 1024;
const DEFAULT_MAX_CONNECTIONS = 1024;
const DEFAULT_IDLE_MS = 15 * 60 * 1000;
const DEFAULT_IN_FLIGHT = 64;
/** Frames this large or larger (1 MiB WRITEs) come from a pool and go back once answered. */
const POOLED_FRAME_MIN = 64 * 1024;
const POOLED_FRAMES_KEPT = 16;
/** Bytes of frames in flight per connection past which it stops reading (a 1 MiB WRITE is one frame). */
const MAX_FRAME_BYTES_IN_FLIGHT = 16 * 1024 * 1024;
/** Pending output past which a connection stops reading (a client that does not read its replies). */
const MAX_PENDING_OUTPUT = 16 * 1024 * 1024;

export class SmbServer {
  private server: net.Server | null = null;
  private readonly sockets = new Map<net.Socket, { conn: SmbConnection; active: number }>();
  private closing = false;
  private inFlight = 0;
  private idleWaiters: (() => void)[] = [];

  /**
   * Buffers of large frames, reused: streaming 1 MiB WRITEs through fresh buffers costs V8 a full
   * collection every few dozen of them. A frame goes back once its requests are answered (the file
   * service has copied WRITE data into the WAL by then; nothing else keeps a view of a large frame).
   */
  private readonly framePool: BufferPool;

  constructor(private readonly opts: SmbServerOptions) {
    this.framePool = new BufferPool(opts.maxFrameSize ?? DEFAULT_MAX_FRAME, POOLED_FRAMES_KEPT);
  }

  get connections(): number {
    return this.sockets.size;
  }

  listen(port: number, host: string): Promise<number> {
    const server = net.createServer({ noDelay: true }, (s) => this.onConnection(s));
    this.server = server;
    return listenOn(server, port, host);
  }

  private onConnection(socket: net.Socket): void {
    const log = this.opts.log;
    const peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    if (this.closing || this.sockets.size >= (this.opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS)) {
      log?.warn({ peer, connections: this.sockets.size }, 'SMB connection refused: connection cap reached or shutting down');
      socket.destroy();
      return;
    }
    const clog = log?.child({ peer, protocol: 'smb' });
    clog?.info('SMB connection opened');
    const maxInFlight = this.opts.maxInFlightPerConnection ?? DEFAULT_IN_FLIGHT;
    let paused = false;
    const state = {
      conn: null as unknown as SmbConnection,
      active: 0,
      /** Bytes of the frames being processed. */
      bytes: 0,
    };
    const resumeIfPossible = (): void => {
      if (this.closing || !paused) return;
      if (state.active < maxInFlight && state.bytes < MAX_FRAME_BYTES_IN_FLIGHT && socket.writableLength < MAX_PENDING_OUTPUT) {
        paused = false;
        socket.resume();
      }
    };
    const send = (parts: Buffer[]): void => {
      if (socket.destroyed || socket.writableEnded) return;
      let len = 0;
      for (const p of parts) len += p.length;
      socket.cork();
      socket.write(directTcpHeader(len));
      for (const p of parts) socket.write(p);
      socket.uncork();
    };
    const abort = (why: string): void => {
      clog?.warn({ why }, 'SMB connection closed: protocol error');
      socket.destroy();
    };
    state.conn = new SmbConnection(this.opts, send, abort, clog);
    this.sockets.set(socket, state);
    const pool = this.framePool;
    const alloc = (n: number): Buffer => (n >= POOLED_FRAME_MIN ? pool.take(n) : Buffer.allocUnsafe(n));
    const framer = new DirectTcpFramer(
      this.opts.maxFrameSize ?? DEFAULT_MAX_FRAME,
      (frame) => {
        state.active++;
        state.bytes += frame.length;
        this.inFlight++;
        if ((state.active >= maxInFlight || state.bytes >= MAX_FRAME_BYTES_IN_FLIGHT) && !paused) {
          paused = true;
          socket.pause();
        }
        state.conn
          .handleFrame(frame)
          .catch((err: unknown) => clog?.error({ err }, 'SMB frame failed unexpectedly'))
          .finally(() => {
            state.bytes -= frame.length;
            if (frame.length >= POOLED_FRAME_MIN) pool.give(frame);
            state.active--;
            if (--this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
            resumeIfPossible();
          });
      },
      alloc,
    );
    socket.on('data', (chunk: Buffer) => {
      try {
        framer.push(chunk);
      } catch (err) {
        if (err instanceof FrameError) abort(err.message);
        else {
          clog?.error({ err }, 'SMB framing failed unexpectedly');
          socket.destroy();
        }
      }
    });
    socket.on('drain', resumeIfPossible);
    socket.setTimeout(this.opts.idleTimeoutMs ?? DEFAULT_IDLE_MS, () => {
      if (state.active === 0) {
        clog?.info('SMB connection idle: closed');
        socket.destroy();
      }
    });
    socket.on('error', (err) => clog?.debug({ err: err.message }, 'SMB socket error'));
    socket.on('close', () => {
      this.sockets.delete(socket);
      void state.conn.teardown().catch((err: unknown) => clog?.warn({ err }, 'SMB connection teardown failed'));
      clog?.info('SMB connection closed');
    });
  }

  /** Stops accepting and reading; waits (at most 10 s) for requests in flight; closes every socket. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const closed = new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    for (const s of this.sockets.keys()) s.pause();
    if (this.inFlight > 0) {
      await Promise.race([new Promise<void>((r) => this.idleWaiters.push(r)), new Promise<void>((r) => setTimeout(r, 10_000).unref())]);
    }
    for (const s of this.sockets.keys()) s.destroy();
    await closed;
  }
}
