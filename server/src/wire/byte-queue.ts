// A queue of socket chunks from which whole frames are taken. Taking a frame that lies inside one
// chunk is a zero-copy subarray; a frame that spans chunks costs exactly one copy.

export class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0; // read offset into chunks[0]
  private total = 0;

  get length(): number {
    return this.total;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.total += chunk.length;
  }

  /** Big-endian uint32 at `offset` from the read position, without consuming. Caller checks length. */
  peekUInt32BE(offset = 0): number {
    const first = this.chunks[0];
    if (first !== undefined && this.head + offset + 4 <= first.length) return first.readUInt32BE(this.head + offset);
    const b = this.peek(offset, 4);
    return b.readUInt32BE(0);
  }

  private peek(offset: number, n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let skip = this.head + offset;
    let written = 0;
    for (const c of this.chunks) {
      if (skip >= c.length) {
        skip -= c.length;
        continue;
      }
      const take = Math.min(c.length - skip, n - written);
      c.copy(out, written, skip, skip + take);
      written += take;
      skip = 0;
      if (written === n) break;
    }
    return out;
  }

  /** Removes and returns the next n bytes. Caller guarantees n <= length. */
  take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    if (this.head + n <= first.length) {
      const out = first.subarray(this.head, this.head + n);
      this.head += n;
      this.total -= n;
      if (this.head === first.length) {
        this.chunks.shift();
        this.head = 0;
      }
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let written = 0;
    while (written < n) {
      const c = this.chunks[0]!;
      const take = Math.min(c.length - this.head, n - written);
      c.copy(out, written, this.head, this.head + take);
      written += take;
      this.head += take;
      if (this.head === c.length) {
        this.chunks.shift();
        this.head = 0;
      }
    }
    this.total -= n;
    return out;
  }

  /** Drops the next n bytes. */
  skip(n: number): void {
    let left = n;
    while (left > 0) {
      const c = this.chunks[0]!;
      const avail = c.length - this.head;
      if (avail > left) {
        this.head += left;
        break;
      }
      left -= avail;
      this.chunks.shift();
      this.head = 0;
    }
    this.total -= n;
  }

  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.total = 0;
  }
}
