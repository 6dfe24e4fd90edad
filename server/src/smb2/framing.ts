// MS-SMB2 2.1 Direct TCP transport: each message is preceded by a 4-byte header, a zero byte and a
// 24-bit big-endian length. The length is checked against the cap before anything is buffered, and
// each frame is copied once, into a buffer of its size from `alloc` (it outlives the socket chunk).
//
// Memory: with a RequestBudget (wire/limits.ts, shared by every connection of the server), a
// frame's `length` bytes are reserved from it before its buffer is made, and stay reserved until
// the caller releases them (once the frame's requests are answered). When the budget has no room,
// the framer stops: what is left of the chunk is kept (held in the budget, not reserved), `blocked`
// is true and the caller must not read the socket; `onReady` runs once the bytes are granted, and
// the caller calls `push` again (an empty chunk will do).
import { FrameError } from '../wire/errors.js';
import type { RequestBudget } from '../wire/limits.js';

export const DIRECT_TCP_HEADER = 4;

export interface DirectTcpFramerOptions {
  alloc?: (size: number) => Buffer;
  budget?: RequestBudget;
}

export class DirectTcpFramer {
  private header = Buffer.alloc(DIRECT_TCP_HEADER);
  private headerHave = 0;
  private frame: Buffer | null = null;
  private frameHave = 0;
  /** Budget: the length waited for, and the rest of the chunk that waited with it. */
  private waitingFor = 0;
  private backlog: Buffer | null = null;
  private readonly alloc: (size: number) => Buffer;
  private readonly budget: RequestBudget | null;
  private disposed = false;
  /** Frames begun so far (a frame is begun by its first header byte). */
  private begun = 0;

  /** Called once a reservation the framer waited for is granted: call `push` again. */
  onReady: (() => void) | null = null;

  constructor(
    private readonly maxFrame: number,
    private readonly onFrame: (frame: Buffer) => void,
    opts: DirectTcpFramerOptions = {},
  ) {
    this.alloc = opts.alloc ?? ((n) => Buffer.allocUnsafe(n));
    this.budget = opts.budget ?? null;
  }

  /** Feeds bytes from the socket; throws FrameError for a frame the connection must be closed for. */
  push(chunk: Buffer): void {
    if (this.disposed) return;
    if (this.waitingFor > 0) {
      if (chunk.length > 0) this.keep(chunk, 0);
      return;
    }
    const backlog = this.backlog;
    if (backlog !== null) {
      this.backlog = null;
      this.budget?.unhold(backlog.length);
      if (!this.consume(backlog)) {
        if (chunk.length > 0) this.keep(chunk, 0);
        return;
      }
    }
    this.consume(chunk);
  }

  /** False when it stopped for the budget (the rest of the chunk kept). */
  private consume(chunk: Buffer): boolean {
    let at = 0;
    while (at < chunk.length) {
      if (this.frame === null) {
        if (this.headerHave === 0) this.begun++;
        const n = Math.min(DIRECT_TCP_HEADER - this.headerHave, chunk.length - at);
        chunk.copy(this.header, this.headerHave, at, at + n);
        this.headerHave += n;
        at += n;
        if (this.headerHave < DIRECT_TCP_HEADER) return true;
        this.headerHave = 0;
        if (this.header[0] !== 0) throw new FrameError(`not a Direct TCP frame (first byte 0x${this.header[0]!.toString(16)})`);
        const length = this.header.readUIntBE(1, 3);
        if (length < 4) throw new FrameError(`frame of ${length} bytes is too short for any SMB message`);
        if (length > this.maxFrame) throw new FrameError(`frame of ${length} bytes exceeds the ${this.maxFrame}-byte cap`);
        if (this.budget !== null && !this.budget.reserve(length, this.granted)) {
          this.waitingFor = length;
          this.keep(chunk, at);
          return false;
        }
        this.startFrame(length);
      }
      const frame = this.frame!;
      const n = Math.min(frame.length - this.frameHave, chunk.length - at);
      chunk.copy(frame, this.frameHave, at, at + n);
      this.frameHave += n;
      at += n;
      if (this.frameHave === frame.length) {
        this.frame = null;
        this.onFrame(frame);
        if (this.disposed) return true;
      }
    }
    return true;
  }

  private startFrame(length: number): void {
    this.frame = this.alloc(length);
    this.frameHave = 0;
  }

  private readonly granted = (): void => {
    const length = this.waitingFor;
    this.waitingFor = 0;
    if (this.disposed) {
      this.budget?.release(length);
      return;
    }
    this.startFrame(length);
    this.onReady?.();
  };

  /** Keeps chunk[at..] (copied: the caller may reuse the chunk) for when the budget grants. */
  private keep(chunk: Buffer, at: number): false {
    const rest = chunk.subarray(at);
    const kept = this.backlog === null ? Buffer.from(rest) : Buffer.concat([this.backlog, rest]);
    if (this.budget !== null) {
      if (this.backlog !== null) this.budget.unhold(this.backlog.length);
      this.budget.hold(kept.length);
    }
    this.backlog = kept.length > 0 ? kept : null;
    return false;
  }

  /** True while waiting for the budget: do not read the socket. */
  get blocked(): boolean {
    return this.waitingFor > 0;
  }

  /** Bytes of a partial frame held now. */
  get buffered(): number {
    return this.frame === null ? this.headerHave : this.frameHave;
  }

  /** The number of the frame being received (1, 2, ...), or -1 between frames. */
  get partialFrame(): number {
    return this.frame !== null || this.headerHave > 0 || this.waitingFor > 0 ? this.begun : -1;
  }

  /** The connection is gone: the partial frame's reservation and everything held go back. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    const b = this.budget;
    if (b !== null) {
      if (this.frame !== null) b.release(this.frame.length);
      if (this.waitingFor > 0) b.cancel(this.granted);
      if (this.backlog !== null) b.unhold(this.backlog.length);
    }
    this.frame = null;
    this.backlog = null;
    this.waitingFor = 0;
  }
}

/** The 4-byte Direct TCP header of a message of `length` bytes. */
export function directTcpHeader(length: number): Buffer {
  const b = Buffer.alloc(DIRECT_TCP_HEADER);
  b.writeUIntBE(length, 1, 3);
  return b;
}

/** SMB2 header offsets read by replyEstimate (MS-SMB2 2.2.1.2). */
const HDR_COMMAND = 12;
const HDR_NEXT = 20;
const HDR_SIZE = 64;
/** What a reply without data takes at most (an error body, a CREATE response with contexts). */
const SMALL_REPLY = 1024;

/**
 * The most reply bytes one frame can cause, from its elements' declared output sizes (READ
 * Length, QUERY_DIRECTORY / QUERY_INFO OutputBufferLength, IOCTL MaxOutputResponse), each at most
 * `maxIo`: what the listener counts against a connection's unsent-reply bound before it starts the
 * frame. Never throws; a frame too short to tell counts as small (it gets an error reply).
 */
export function replyEstimate(frame: Buffer, maxIo: number): number {
  let total = 0;
  let at = 0;
  for (let i = 0; i < 128 && at + HDR_SIZE <= frame.length; i++) {
    const body = at + HDR_SIZE;
    let out = 0;
    switch (frame.readUInt16LE(at + HDR_COMMAND)) {
      case 0x0008: // READ: Length at body+4
      case 0x0010: // QUERY_INFO: OutputBufferLength at body+4
        if (body + 8 <= frame.length) out = frame.readUInt32LE(body + 4);
        break;
      case 0x000e: // QUERY_DIRECTORY: OutputBufferLength at body+28
        if (body + 32 <= frame.length) out = frame.readUInt32LE(body + 28);
        break;
      case 0x000b: // IOCTL: MaxOutputResponse at body+44
        if (body + 48 <= frame.length) out = frame.readUInt32LE(body + 44);
        break;
      default:
        break;
    }
    total += SMALL_REPLY + Math.min(out, maxIo);
    const next = frame.readUInt32LE(at + HDR_NEXT);
    if (next === 0) break;
    at += next;
  }
  return total;
}
