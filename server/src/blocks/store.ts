// The BlockStore contract: immutable objects addressed by key. A key is written once (an overwrite
// of file data produces a new key), so caches never need invalidation.

export interface BlockStoreCapacity {
  totalBytes: number;
  freeBytes: number;
}

/** What the caller of put() already knows about the data, so that the engine need not work it out again. */
export interface PutHints {
  /** The CRC32C (Castagnoli) of the data: an engine that sends one with the object uses this. */
  crc32c?: number;
}

export interface BlockStore {
  readonly kind: string;
  open(): Promise<void>;
  close(): Promise<void>;
  /**
   * Stores `data` under `key`, durably once the promise resolves. Nothing refers to `data` once it
   * has resolved: the caller reuses the buffer. `hints`, when given, are true of `data`.
   */
  put(key: string, data: Buffer, hints?: PutHints): Promise<void>;
  /** Reads `length` bytes at `offset` (fewer at the object's end); NOENT-style null if absent. */
  get(key: string, offset?: number, length?: number): Promise<Buffer | null>;
  /**
   * Local engines only (reading a range costs about what a cache would): reads up to `length`
   * bytes at `offset` into `target` at `targetStart`; the count read (fewer at the object's end),
   * or null if the object is absent. Block reads of such stores skip the memory cache.
   */
  readInto?(key: string, offset: number, target: Buffer, targetStart: number, length: number): Promise<number | null>;
  /** Deletes an object; deleting a missing key is not an error. */
  delete(key: string): Promise<void>;
  capacity(): Promise<BlockStoreCapacity>;
  /**
   * Every object whose key starts with `prefix`, in no particular order, with the time it was
   * written (ms since the epoch) where the engine knows it. For garbage collection.
   */
  list(prefix: string): AsyncIterable<StoredObject>;
}

export interface StoredObject {
  key: string;
  /** When the object was written (ms since the epoch); undefined if the engine cannot tell. */
  modifiedMs?: number;
}
