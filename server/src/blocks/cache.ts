// A byte-bounded LRU of clean block objects. Block keys are immutable, so entries never go stale;
// they only age out.

export class BlockCache {
  private entries = new Map<string, Buffer>();
  private bytes = 0;
  hits = 0;
  misses = 0;

  constructor(private readonly maxBytes: number) {}

  get(key: string): Buffer | undefined {
    const b = this.entries.get(key);
    if (b === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.entries.delete(key);
    this.entries.set(key, b);
    return b;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  set(key: string, data: Buffer): void {
    if (data.length > this.maxBytes) return;
    const prev = this.entries.get(key);
    if (prev) {
      this.bytes -= prev.length;
      this.entries.delete(key);
    }
    this.entries.set(key, data);
    this.bytes += data.length;
    while (this.bytes > this.maxBytes) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.delete(oldest.value);
    }
  }

  delete(key: string): void {
    const b = this.entries.get(key);
    if (b) {
      this.bytes -= b.length;
      this.entries.delete(key);
    }
  }

  get size(): number {
    return this.bytes;
  }
}
