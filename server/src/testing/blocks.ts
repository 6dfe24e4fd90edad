// Set-up shared by the block service's tests (blocks/*.test.ts): files in a memory metadata store,
// and one "process" (a WAL directory and a block service over it) that a test crashes by
// abandoning it and booting another on the same directory.
import type { Logger } from 'pino';
import { BlockCache } from '../blocks/cache.js';
import type { MemoryBlockStore } from '../blocks/memory.js';
import { BlockService } from '../blocks/service.js';
import { FileWal, type ReplayRecord } from '../blocks/wal.js';
import type { MemoryMetadataStore } from '../meta/memory.js';
import { dirInit, fileInit } from './inodes.js';

let names = 0;

/** A regular file in the metadata store (uploads for inodes that do not exist are dropped). */
export async function mkfile(meta: MemoryMetadataStore): Promise<number> {
  const root = await meta.ensureRoot(1, dirInit({ mode: 0o777 }));
  return (await meta.create(root.id, Buffer.from(`f${names++}`), fileInit(), { sec: 1, nsec: 0 })).id;
}

export interface BootOptions {
  blockSize: number;
  /** The WAL's size: 64 blocks unless given. */
  maxBytes?: number;
  /** The WAL's segments: 16 blocks unless given. */
  segmentBytes?: number;
  maxWriteWaitMs?: number;
  /** The WAL's logger. */
  log?: Logger;
}

/**
 * One "process": a WAL in `dir` and a block service (share 7) over shared metadata and block
 * stores, with what the WAL held replayed. A crash is simulated by abandoning an instance without
 * closing it and booting a new one on the same directory.
 */
export async function boot(dir: string, meta: MemoryMetadataStore, store: MemoryBlockStore, opts: BootOptions) {
  const bs = opts.blockSize;
  const { wal, records, report } = await FileWal.open(dir, {
    maxBytes: opts.maxBytes ?? 64 * bs,
    segmentBytes: opts.segmentBytes ?? 16 * bs,
    ...(opts.log === undefined ? {} : { log: opts.log }),
  });
  const svc = new BlockService(store, meta, {
    shareId: 7,
    keyPrefix: 't',
    blockSize: bs,
    wal,
    cache: new BlockCache(16 * bs),
    idleFlushMs: 3_600_000,
    maxWriteWaitMs: opts.maxWriteWaitMs ?? 10_000,
  });
  const replayed = await svc.replay(records.filter((r: ReplayRecord) => r.share === 7));
  wal.tidy();
  return { wal, svc, records, report, replayed };
}
