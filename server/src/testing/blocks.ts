// Set-up shared by the block service's tests (blocks/*.test.ts): files in a memory metadata store,
// and one "process" (a WAL directory and a block service over it) that a test crashes by
// abandoning it and booting another on the same directory.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import type { Logger } from 'pino';
import { BlockCache } from '../blocks/cache.js';
import type { MemoryBlockStore } from '../blocks/memory.js';
import { BlockService } from '../blocks/service.js';
import { FileWal, type ReplayRecord } from '../blocks/wal.js';
import type { MemoryMetadataStore } from '../meta/memory.js';
import { dirInit, fileInit } from './inodes.js';

let names = 0;

/** `n` bytes of a pattern that differs with `seed`. */
export function patterned(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (seed * 31 + i * 7) & 0xff;
  return b;
}

/** A maker of fresh temporary directories (`prefix` + random), all removed after the file's tests. */
export function tempDirs(prefix: string): () => string {
  const dirs: string[] = [];
  after(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  return () => {
    const d = mkdtempSync(path.join(os.tmpdir(), prefix));
    dirs.push(d);
    return d;
  };
}

/** A regular file in the metadata store (uploads for inodes that do not exist are dropped). */
export async function mkfile(meta: MemoryMetadataStore): Promise<number> {
  const root = await meta.ensureRoot(1, dirInit({ mode: 0o777 }));
  return (await meta.create(root.id, Buffer.from(`f${names++}`), fileInit(), { sec: 1, nsec: 0 })).id;
}

/** A file of `blocks` blocks of patterned bytes, written through `svc` and uploaded: its inode and bytes. */
export async function uploadedFile(
  svc: BlockService,
  meta: MemoryMetadataStore,
  blocks: number,
  blockSize: number,
): Promise<{ ino: number; data: Buffer }> {
  const ino = await mkfile(meta);
  const data = patterned(blocks * blockSize, 9);
  await svc.write(ino, 0, data);
  await svc.flush(ino);
  return { ino, data };
}

/** Reads the blocks of a file in `order`, one per call, each checked against the file's `data`. */
export async function readBlocks(svc: BlockService, ino: number, data: Buffer, blockSize: number, order: number[]): Promise<void> {
  for (const i of order) {
    const got = await svc.read(ino, i * blockSize, blockSize, data.length);
    assert.deepEqual(got, data.subarray(i * blockSize, (i + 1) * blockSize), `block ${i}`);
  }
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
