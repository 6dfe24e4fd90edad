// RFC 5531 §11 Record Marking: each fragment is preceded by a 4-byte header whose top bit marks the
// last fragment of a record and whose low 31 bits give the fragment length. A record is the
// concatenation of its fragments. The declared size is checked against a cap before buffering.
import { ByteQueue } from '../wire/byte-queue.js';
import { FrameError } from '../wire/errors.js';

const LAST_FRAGMENT = 0x80000000;

export class RecordReader {
  private readonly queue = new ByteQueue();
  private fragments: Buffer[] = [];
  private recordSize = 0;

  constructor(private readonly maxRecordSize: number) {}

  /**
   * Appends a socket chunk and returns every record now complete. Throws FrameError when a record
   * would exceed the cap or a fragment is empty and not last; the connection must then be closed.
   */
  push(chunk: Buffer): Buffer[] {
    this.queue.push(chunk);
    const out: Buffer[] = [];
    for (;;) {
      if (this.queue.length < 4) break;
      const header = this.queue.peekUInt32BE(0);
      const last = (header & LAST_FRAGMENT) !== 0;
      const len = header & 0x7fffffff;
      if (this.recordSize + len > this.maxRecordSize) {
        throw new FrameError(`RPC record of at least ${this.recordSize + len} bytes exceeds the limit of ${this.maxRecordSize}`);
      }
      if (len === 0 && !last) throw new FrameError('empty non-final RPC fragment');
      if (this.queue.length < 4 + len) break;
      this.queue.skip(4);
      const frag = this.queue.take(len);
      if (last && this.fragments.length === 0) {
        out.push(frag);
        continue;
      }
      this.fragments.push(frag);
      this.recordSize += len;
      if (last) {
        out.push(Buffer.concat(this.fragments, this.recordSize));
        this.fragments = [];
        this.recordSize = 0;
      }
    }
    return out;
  }

  /** Bytes buffered that do not yet form a record. */
  get pending(): number {
    return this.queue.length + this.recordSize;
  }
}

/** The 4-byte record mark for a single-fragment record of `len` bytes. */
export function recordMark(len: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE((LAST_FRAGMENT | len) >>> 0, 0);
  return b;
}
