// The `memory` block engine: objects in process memory, for tests and throwaway shares.
import type { BlockStore, BlockStoreCapacity, StoredObject } from './store.js';

export class MemoryBlockStore implements BlockStore {
  readonly kind = 'memory';
  private objects = new Map<string, Buffer>();
  private written = new Map<string, number>();
  private bytes = 0;

  async open(): Promise<void> {}
  async close(): Promise<void> {
    this.objects.clear();
    this.bytes = 0;
  }

  async put(key: string, data: Buffer): Promise<void> {
    const prev = this.objects.get(key);
    if (prev) this.bytes -= prev.length;
    this.objects.set(key, Buffer.from(data));
    this.written.set(key, Date.now());
    this.bytes += data.length;
  }

  async get(key: string, offset = 0, length?: number): Promise<Buffer | null> {
    const o = this.objects.get(key);
    if (!o) return null;
    const end = length === undefined ? o.length : Math.min(o.length, offset + length);
    return o.subarray(Math.min(offset, o.length), end);
  }

  async delete(key: string): Promise<void> {
    const prev = this.objects.get(key);
    if (prev) {
      this.bytes -= prev.length;
      this.objects.delete(key);
      this.written.delete(key);
    }
  }

  async *list(prefix: string): AsyncIterable<StoredObject> {
    for (const key of [...this.objects.keys()]) if (key.startsWith(prefix)) yield { key, modifiedMs: this.written.get(key) };
  }

  async capacity(): Promise<BlockStoreCapacity> {
    const total = 1024 ** 4;
    return { totalBytes: total, freeBytes: Math.max(0, total - this.bytes) };
  }

  /** Number of stored objects (tests check garbage collection with it). */
  get size(): number {
    return this.objects.size;
  }
}
