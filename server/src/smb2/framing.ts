// MS-SMB2 2.1 Direct TCP transport: each message is preceded by a 4-byte header, a zero byte and a
// 24-bit big-endian length. The length is checked against the cap before anything is buffered, and
// each frame is copied once, into a buffer of its size from `alloc` (it outlives the socket chunk).
//
// Memory per connection: one frame being assembled (at most `maxFrame`). The shared server-wide
// memory budget (wire/ on the `rpc-hardening` branch) plugs in where push() checks the length:
// reserve `length` there (or wait for it), release when the frame's requests are answered.
import { FrameError } from '../wire/errors.js';

export const DIRECT_TCP_HEADER = 4;

export class DirectTcpFramer {
  private header = Buffer.alloc(DIRECT_TCP_HEADER);
  private headerHave = 0;
  private frame: Buffer | null = null;
  private frameHave = 0;

  constructor(
    private readonly maxFrame: number,
    private readonly onFrame: (frame: Buffer) => void,
    private readonly alloc: (size: number) => Buffer = (n) => Buffer.allocUnsafe(n),
  ) {}

  /** Feeds bytes from the socket; throws FrameError for a frame the connection must be closed for. */
  push(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.frame === null) {
        const n = Math.min(DIRECT_TCP_HEADER - this.headerHave, chunk.length - at);
        chunk.copy(this.header, this.headerHave, at, at + n);
        this.headerHave += n;
        at += n;
        if (this.headerHave < DIRECT_TCP_HEADER) return;
        this.headerHave = 0;
        if (this.header[0] !== 0) throw new FrameError(`not a Direct TCP frame (first byte 0x${this.header[0]!.toString(16)})`);
        const length = this.header.readUIntBE(1, 3);
        if (length < 4) throw new FrameError(`frame of ${length} bytes is too short for any SMB message`);
        if (length > this.maxFrame) throw new FrameError(`frame of ${length} bytes exceeds the ${this.maxFrame}-byte cap`);
        this.frame = this.alloc(length);
        this.frameHave = 0;
      }
      const n = Math.min(this.frame.length - this.frameHave, chunk.length - at);
      chunk.copy(this.frame, this.frameHave, at, at + n);
      this.frameHave += n;
      at += n;
      if (this.frameHave === this.frame.length) {
        const f = this.frame;
        this.frame = null;
        this.onFrame(f);
      }
    }
  }

  /** Bytes of a partial frame held now. */
  get buffered(): number {
    return this.frame === null ? this.headerHave : this.frameHave;
  }
}

/** The 4-byte Direct TCP header of a message of `length` bytes. */
export function directTcpHeader(length: number): Buffer {
  const b = Buffer.alloc(DIRECT_TCP_HEADER);
  b.writeUIntBE(length, 1, 3);
  return b;
}
