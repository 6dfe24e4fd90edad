// Counts per key (connections per address, opens per user, ...), where a key with no count left is
// dropped: a map that only grows with the keys in use, never with every key ever seen.

export class Tally<K> {
  private readonly counts = new Map<K, number>();

  /** The count of `key` (0 when it has none). */
  get(key: K): number {
    return this.counts.get(key) ?? 0;
  }

  /** Adds `by` (negative to take away) to `key`'s count; at 0 or below the key is dropped. */
  add(key: K, by = 1): void {
    const n = (this.counts.get(key) ?? 0) + by;
    if (n > 0) this.counts.set(key, n);
    else this.counts.delete(key);
  }

  /** Keys with a count. */
  get size(): number {
    return this.counts.size;
  }
}
