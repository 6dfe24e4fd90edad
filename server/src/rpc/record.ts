// RFC 5531 §11 Record Marking: each fragment is preceded by a 4-byte header whose top bit marks the
// last fragment of a record and whose low 31 bits give the fragment length. A record is the
// concatenation of its fragments. The declared size is checked against a cap before buffering.
//
// The reader copies what it needs out of every chunk it is given, so the caller may reuse the chunk
// (a socket reading into one buffer over and over). A single-fragment record (what every client
// sends) is copied straight into a buffer of its final size, taken from `alloc`: one copy per byte
// from the socket buffer to the record that the program decodes. That buffer is made only once
// some of the record's bytes have arrived (EAGER_BYTES), never from a header alone.
//
// A record of several fragments is assembled into one growing buffer (never a buffer per
// fragment), and its fragment headers count against the cap, as does their number: a client
// sending a record as a million 1-byte fragments is disconnected after MAX_FRAGMENTS of them.
//
// With a RequestBudget, every record buffer is reserved from it before it is made, and a record
// keeps its reservation (record.length bytes) until the caller releases it. When the budget has no
// room, the reader stops: what is left of the chunk is kept (held, not reserved) and `blocked` is
// true until the reservation is granted; then `onReady` runs and the caller calls `push` again (an
// empty chunk will do) to go on, and should not read more from the socket meanwhile.
import { FrameError } from '../wire/errors.js';
import type { RequestBudget } from '../wire/limits.js';

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

/** Fragments one record may have. Clients send one; libtirpc-style writers a few hundred at most. */
export const MAX_FRAGMENTS = 1024;

/** First capacity of a multi-fragment record's buffer; it doubles as bytes arrive. */
const MULTI_MIN_CAPACITY = 4096;

const EMPTY = Buffer.alloc(0);

export interface RecordReaderOptions {
  /** Reservations for record buffers; absent, none are made. */
  budget?: RequestBudget;
  /** Fragments per record (default MAX_FRAGMENTS). */
  maxFragments?: number;
}

export class RecordReader {
  /** The 4-byte fragment header being read, and how much of it has arrived. */
  private readonly header = Buffer.alloc(4);
  private headerFill = 0;
  /** Inside a fragment: its length, whether it ends the record, and how much has arrived. */
  private inFragment = false;
  private fragLen = 0;
  private fragLast = false;
  private fragFill = 0;
  /** Single-fragment record: its buffer once EAGER_BYTES of it arrived; before that, `staging` holds them. */
  private frag: Buffer | null = null;
  private staging: Buffer | null = null;
  /** Multi-fragment record: its growing buffer, the bytes in it, and the fragments begun. */
  private rec: Buffer | null = null;
  private recFill = 0;
  private fragments = 0;
  /** Budget: bytes asked for and not yet granted, bytes granted and not yet used, and the bytes of the chunk that waited. */
  private waitingFor = 0;
  private granted = 0;
  private backlog: Buffer | null = null;
  private readonly budget: RequestBudget | null;
  private readonly maxFragments: number;
  private disposed = false;
  /** Records begun so far (a record is begun by its first header byte). */
  private begun = 0;

  /** Called when a reservation the reader waited for is granted: call `push` again. */
  onReady: (() => void) | null = null;

  constructor(
    private readonly maxRecordSize: number,
    private readonly alloc: RecordAlloc = allocUnsafe,
    opts: RecordReaderOptions = {},
  ) {
    this.budget = opts.budget ?? null;
    this.maxFragments = opts.maxFragments ?? MAX_FRAGMENTS;
  }

  /**
   * Consumes a socket chunk and returns every record now complete. The chunk is not kept. Throws
   * FrameError when a record would exceed the cap, has too many fragments, or a fragment is empty
   * and not last; the connection must then be closed.
   */
  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    if (this.disposed) return out;
    if (this.waitingFor > 0) {
      if (chunk.length > 0) this.keep(chunk, 0);
      return out;
    }
    const backlog = this.backlog;
    if (backlog !== null) {
      this.backlog = null;
      this.budget?.unhold(backlog.length);
      if (!this.consume(backlog, out)) {
        if (chunk.length > 0) this.keep(chunk, 0);
        return out;
      }
    }
    this.consume(chunk, out);
    return out;
  }

  /** Returns false when it stopped for the budget (the rest of the chunk kept). */
  private consume(chunk: Buffer, out: Buffer[]): boolean {
    let at = 0;
    while (at < chunk.length) {
      if (!this.inFragment) {
        if (this.headerFill === 0 && this.fragments === 0) this.begun++;
        const n = Math.min(4 - this.headerFill, chunk.length - at);
        chunk.copy(this.header, this.headerFill, at, at + n);
        this.headerFill += n;
        at += n;
        if (this.headerFill < 4) break;
        this.headerFill = 0;
        this.startFragment(this.header.readUInt32BE(0));
      }
      const avail = chunk.length - at;
      let n: number;
      if (this.fragments > 0) {
        // Multi-fragment: into the record's growing buffer.
        n = Math.min(this.fragLen - this.fragFill, avail);
        if (n > 0) {
          if (!this.ensureCapacity(this.recFill + n)) return this.keep(chunk, at);
          chunk.copy(this.rec!, this.recFill, at, at + n);
          this.recFill += n;
        }
      } else {
        if (this.frag === null) {
          if (this.fragFill + avail < Math.min(this.fragLen, EAGER_BYTES)) {
            if (avail === 0) break;
            if (this.staging === null) {
              this.staging = Buffer.allocUnsafe(Math.min(this.fragLen, EAGER_BYTES));
              this.budget?.hold(this.staging.length);
            }
            chunk.copy(this.staging, this.fragFill, at);
            this.fragFill += avail;
            break;
          }
          if (!this.take(this.fragLen)) return this.keep(chunk, at);
          // The only fragment of a record is the record itself: it goes where the record will live.
          this.frag = this.alloc(this.fragLen);
          if (this.staging !== null) {
            this.staging.copy(this.frag, 0, 0, this.fragFill);
            this.budget?.unhold(this.staging.length);
            this.staging = null;
          }
        }
        n = Math.min(this.fragLen - this.fragFill, avail);
        if (n > 0) chunk.copy(this.frag, this.fragFill, at, at + n);
      }
      this.fragFill += n;
      at += n;
      if (this.fragFill < this.fragLen) break;
      this.inFragment = false;
      this.fragFill = 0;
      if (!this.fragLast) continue;
      if (this.fragments === 0) {
        out.push(this.frag!);
        this.frag = null;
      } else {
        out.push(this.finishMulti());
      }
    }
    return true;
  }

  private startFragment(header: number): void {
    const last = (header & LAST_FRAGMENT) !== 0;
    const len = header & 0x7fffffff;
    if (len === 0 && !last) throw new FrameError('empty non-final RPC fragment');
    if (this.fragments > 0 || !last) {
      // Every header after the first counts: 1-byte fragments cost 5 bytes each against the cap.
      const total = this.recFill + len + 4 * this.fragments;
      if (total > this.maxRecordSize) {
        throw new FrameError(`RPC record of at least ${total} bytes (with fragment headers) exceeds the limit of ${this.maxRecordSize}`);
      }
      if (this.fragments >= this.maxFragments) {
        throw new FrameError(`RPC record of more than ${this.maxFragments} fragments`);
      }
      this.fragments++;
    } else if (len > this.maxRecordSize) {
      throw new FrameError(`RPC record of at least ${len} bytes exceeds the limit of ${this.maxRecordSize}`);
    }
    this.inFragment = true;
    this.fragLen = len;
    this.fragLast = last;
    this.fragFill = 0;
  }

  /** Grows the multi-fragment buffer to hold `need` bytes; false when the budget says wait. */
  private ensureCapacity(need: number): boolean {
    const cap = this.rec?.length ?? 0;
    if (need <= cap) return true;
    let next = Math.min(Math.max(need, cap * 2, MULTI_MIN_CAPACITY), this.maxRecordSize);
    // The last fragment's end is the record's end: no need to grow past it.
    if (this.fragLast) next = Math.min(next, this.recFill + (this.fragLen - this.fragFill));
    next = Math.max(next, need);
    if (!this.take(next - cap)) return false;
    const grown = Buffer.allocUnsafe(next);
    if (this.rec !== null) this.rec.copy(grown, 0, 0, this.recFill);
    this.rec = grown;
    return true;
  }

  private finishMulti(): Buffer {
    const rec = this.rec ?? EMPTY;
    const record = rec.length === this.recFill ? rec : rec.subarray(0, this.recFill);
    // The record keeps a reservation of its length; the spare capacity goes back.
    if (this.budget !== null && rec.length > this.recFill) this.budget.release(rec.length - this.recFill);
    this.rec = null;
    this.recFill = 0;
    this.fragments = 0;
    return record;
  }

  /** Reserves `n` bytes from the budget (or uses a grant for them); false when it must wait. */
  private take(n: number): boolean {
    const budget = this.budget;
    if (budget === null) return true;
    if (this.granted > 0) {
      const g = this.granted;
      this.granted = 0;
      if (g === n) return true;
      budget.release(g);
    }
    if (budget.reserve(n, this.onGranted)) return true;
    this.waitingFor = n;
    return false;
  }

  private readonly onGranted = (): void => {
    this.granted = this.waitingFor;
    this.waitingFor = 0;
    if (this.disposed) {
      this.budget?.release(this.granted);
      this.granted = 0;
      return;
    }
    this.onReady?.();
  };

  /** Keeps chunk[at..] for later (held in the budget); returns false for `consume`. */
  private keep(chunk: Buffer, at: number): false {
    const rest = chunk.subarray(at);
    const kept = this.backlog === null ? Buffer.from(rest) : Buffer.concat([this.backlog, rest]);
    if (this.budget !== null) {
      if (this.backlog !== null) this.budget.unhold(this.backlog.length);
      this.budget.hold(kept.length);
    }
    this.backlog = kept;
    return false;
  }

  /** True while waiting for the budget. */
  get blocked(): boolean {
    return this.waitingFor > 0;
  }

  /** True while a record's buffer is made and being filled (more bytes of it need nothing new). */
  get midRecord(): boolean {
    return this.frag !== null || this.rec !== null;
  }

  /** The number of the record being received (1, 2, ...), or -1 between records. */
  get partialRecord(): number {
    return this.inFragment || this.headerFill > 0 || this.fragments > 0 ? this.begun : -1;
  }

  /** Bytes buffered that do not yet form a record. */
  get pending(): number {
    return this.headerFill + (this.fragments > 0 ? this.recFill : this.fragFill) + (this.backlog?.length ?? 0);
  }

  /** Bytes set aside for the record being read (its buffer, or the staging one). */
  get reserved(): number {
    return this.frag?.length ?? this.rec?.length ?? this.staging?.length ?? 0;
  }

  /** Gives back to the budget everything held for records not yet returned. Nothing is read after. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    const b = this.budget;
    if (b !== null) {
      if (this.waitingFor > 0) b.cancel(this.onGranted);
      if (this.granted > 0) b.release(this.granted);
      if (this.frag !== null) b.release(this.frag.length);
      if (this.rec !== null) b.release(this.rec.length);
      if (this.staging !== null) b.unhold(this.staging.length);
      if (this.backlog !== null) b.unhold(this.backlog.length);
    }
    this.waitingFor = 0;
    this.granted = 0;
    this.frag = this.rec = this.staging = this.backlog = null;
  }
}

/** Writes the mark of a single-fragment record of `len` bytes at the start of `b`. */
function writeMark(b: Buffer, len: number): void {
  b.writeUInt32BE((LAST_FRAGMENT | len) >>> 0, 0);
}

/** A one-buffer record behind its record mark, copied into one buffer (one write for a small reply). */
export function markedRecord(body: Buffer): Buffer {
  const b = Buffer.allocUnsafe(4 + body.length);
  writeMark(b, body.length);
  body.copy(b, 4);
  return b;
}

/** The 4-byte record mark for a single-fragment record of `len` bytes. */
export function recordMark(len: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  writeMark(b, len);
  return b;
}
