// RFC 5531 §11 Record Marking: each fragment is preceded by a 4-byte header whose top bit marks the
// last fragment of a record and whose low 31 bits give the fragment length. A record is the
// concatenation of its fragments. The declared size is checked against a cap before buffering.
//
// The reader copies what it needs out of every chunk it is given, so the caller may reuse the chunk
// (a socket reading into one buffer over and over). A single-fragment record (what every client
// sends) is copied straight into a buffer of its final size, taken from `alloc`: one copy per byte
// from the socket buffer to the record that the program decodes. That buffer is made only once
// some of the record's bytes have arrived (EAGER_BYTES), never from a header alone.
import { FrameError } from '../wire/errors.js';

const LAST_FRAGMENT = 0x80000000;

/** Where records' buffers come from: a pool for large records, say. Contents may be garbage. */
export type RecordAlloc = (size: number) => Buffer;

const allocUnsafe: RecordAlloc = (size) => Buffer.allocUnsafe(size);

/**
 * A fragment's buffer is made once this much of it has arrived (or all of it, if smaller): a
 * header alone must not make the server set aside up to the record cap. Before that, the bytes
 * wait in a staging buffer of this size. Every real client sends a WRITE's header and at least
 * this much of its data in one go, so the normal path allocates once and copies once.
 */
const EAGER_BYTES = 64 * 1024;

export class RecordReader {
  /** The 4-byte fragment header being read, and how much of it has arrived. */
  private readonly header = Buffer.alloc(4);
  private headerFill = 0;
  /** Inside a fragment: its length, whether it ends the record, and how much has arrived. */
  private inFragment = false;
  private fragLen = 0;
  private fragLast = false;
  private fragFill = 0;
  /** The fragment's buffer once EAGER_BYTES of it arrived; before that, `staging` holds them. */
  private frag: Buffer | null = null;
  private staging: Buffer | null = null;
  /** Earlier fragments of a multi-fragment record, and their total size. */
  private parts: Buffer[] = [];
  private partsSize = 0;

  constructor(
    private readonly maxRecordSize: number,
    private readonly alloc: RecordAlloc = allocUnsafe,
  ) {}

  /**
   * Consumes a socket chunk and returns every record now complete. The chunk is not kept. Throws
   * FrameError when a record would exceed the cap or a fragment is empty and not last; the
   * connection must then be closed.
   */
  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (!this.inFragment) {
        const n = Math.min(4 - this.headerFill, chunk.length - at);
        chunk.copy(this.header, this.headerFill, at, at + n);
        this.headerFill += n;
        at += n;
        if (this.headerFill < 4) break;
        this.headerFill = 0;
        this.startFragment(this.header.readUInt32BE(0));
      }
      const avail = chunk.length - at;
      if (this.frag === null) {
        if (this.fragFill + avail < Math.min(this.fragLen, EAGER_BYTES)) {
          this.staging ??= Buffer.allocUnsafe(Math.min(this.fragLen, EAGER_BYTES));
          chunk.copy(this.staging, this.fragFill, at);
          this.fragFill += avail;
          break;
        }
        // The only fragment of a record is the record itself: it goes where the record will live.
        this.frag = this.fragLast && this.parts.length === 0 ? this.alloc(this.fragLen) : Buffer.allocUnsafe(this.fragLen);
        if (this.staging !== null) this.staging.copy(this.frag, 0, 0, this.fragFill);
        this.staging = null;
      }
      const frag = this.frag;
      const n = Math.min(frag.length - this.fragFill, avail);
      if (n > 0) {
        chunk.copy(frag, this.fragFill, at, at + n);
        this.fragFill += n;
        at += n;
      }
      if (this.fragFill < frag.length) break;
      this.inFragment = false;
      this.frag = null;
      this.fragFill = 0;
      if (!this.fragLast) {
        this.parts.push(frag);
        this.partsSize += frag.length;
      } else if (this.parts.length === 0) {
        out.push(frag);
      } else {
        this.parts.push(frag);
        out.push(Buffer.concat(this.parts, this.partsSize + frag.length));
        this.parts = [];
        this.partsSize = 0;
      }
    }
    return out;
  }

  private startFragment(header: number): void {
    const last = (header & LAST_FRAGMENT) !== 0;
    const len = header & 0x7fffffff;
    if (this.partsSize + len > this.maxRecordSize) {
      throw new FrameError(`RPC record of at least ${this.partsSize + len} bytes exceeds the limit of ${this.maxRecordSize}`);
    }
    if (len === 0 && !last) throw new FrameError('empty non-final RPC fragment');
    this.inFragment = true;
    this.fragLen = len;
    this.fragLast = last;
    this.fragFill = 0;
  }

  /** Bytes buffered that do not yet form a record. */
  get pending(): number {
    return this.headerFill + this.partsSize + this.fragFill;
  }

  /** Bytes set aside for the fragment being read (its buffer, or the staging one). */
  get reserved(): number {
    return this.frag?.length ?? this.staging?.length ?? 0;
  }
}

/** The 4-byte record mark for a single-fragment record of `len` bytes. */
export function recordMark(len: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE((LAST_FRAGMENT | len) >>> 0, 0);
  return b;
}
