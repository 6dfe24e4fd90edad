import assert from 'node:assert/strict';
import { pbkdf2 } from 'node:crypto';
import { promisify } from 'node:util';
import { crc32c } from '@node-rs/crc32';
import { mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { MemoryMetadataStore } from '../meta/memory.js';
import { dirInit, fileInit } from '../testing/inodes.js';
import { BlockCache } from './cache.js';
import { volumeTakesDirect } from '../testing/direct-io.js';
import { fdsAfterClose, openFds } from '../testing/fds.js';
import { BufferPool } from '../wire/buffer-pool.js';
import { DiskBlockCache } from './disk-cache.js';
import { MemoryBlockStore } from './memory.js';
import type { PutHints } from './store.js';
import { BlockService } from './service.js';
import { FileWal } from './wal.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const tmp = (): string => {
  const d = mkdtempSync(path.join(os.tmpdir(), 'dittofs-dcache-'));
  dirs.push(d);
  return d;
};
const bytes = (n: number, seed: number): Buffer => {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (seed * 31 + i * 7) & 0xff;
  return b;
};
const entryFiles = (dir: string): string[] => readdirSync(dir).filter((n) => n !== '.tmp');
/** A whole 64 KiB block in a page-aligned buffer of the block buffer pool (O_DIRECT takes it). */
const poolBlock = (seed: number): Buffer => {
  const b = new BufferPool(64 * 1024, 2, true).take(64 * 1024);
  bytes(b.length, seed).copy(b);
  return b;
};

describe('disk read cache', () => {
  it('keeps objects across a restart of the server (the index is rebuilt from the directory)', async () => {
    const dir = tmp();
    const c = await DiskBlockCache.open(dir, 1 << 20);
    const a = bytes(5000, 1);
    await c.put('s3', 'share/1/0-1-aa', a);
    a.fill(0); // the caller reuses its buffer once put resolves
    assert.deepEqual(await c.get('s3', 'share/1/0-1-aa'), bytes(5000, 1));
    assert.equal(await c.get('other-store', 'share/1/0-1-aa'), null, 'a key is cached per store');
    const again = await DiskBlockCache.open(dir, 1 << 20);
    assert.deepEqual(await again.get('s3', 'share/1/0-1-aa'), bytes(5000, 1));
    assert.equal(again.size, c.size);
  });

  it('never serves a torn or corrupt entry: it is a miss, and the file goes', async () => {
    const dir = tmp();
    const c = await DiskBlockCache.open(dir, 1 << 20);
    await c.put('s3', 'k1', bytes(4096, 2));
    await c.put('s3', 'k2', bytes(4096, 3));
    const [f1, f2] = entryFiles(dir).sort();
    const flipped = readFileSync(path.join(dir, f1!));
    flipped[100] = flipped[100]! ^ 0xff;
    writeFileSync(path.join(dir, f1!), flipped);
    truncateSync(path.join(dir, f2!), 1000);
    const reopened = await DiskBlockCache.open(dir, 1 << 20);
    assert.equal(await reopened.get('s3', 'k1'), null);
    assert.equal(await reopened.get('s3', 'k2'), null);
    // The bad files are unlinked in the background: waited for (30 s at most).
    for (let i = 0; i < 600 && entryFiles(dir).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(entryFiles(dir), []);
    assert.equal(reopened.size, 0);
  });

  it('reads ranges in place; an entry a previous run left is checked whole first, and a corrupt one is a miss', async () => {
    const dir = tmp();
    const c = await DiskBlockCache.open(dir, 1 << 20);
    const data = bytes(10_000, 5);
    await c.put('s', 'good', data);
    await c.put('s', 'bad', data);
    const target = Buffer.alloc(3000, 0xee);
    assert.equal(await c.readInto('s', 'good', 2000, target, 500, 2000), 2000);
    assert.deepEqual(target.subarray(500, 2500), data.subarray(2000, 4000));
    assert.equal(target[2500], 0xee);
    assert.equal(await c.readInto('s', 'good', 9500, target, 0, 2000), 500, 'fewer bytes at the end');
    assert.equal(await c.readInto('s', 'missing', 0, target, 0, 10), null);
    const bad = entryFiles(dir).find((f) => f.endsWith('bad'))!;
    const b = readFileSync(path.join(dir, bad));
    b[5000] = b[5000]! ^ 1;
    writeFileSync(path.join(dir, bad), b);
    const again = await DiskBlockCache.open(dir, 1 << 20);
    assert.equal(await again.readInto('s', 'bad', 0, target, 0, 100), null, 'a corrupt entry is never served');
    assert.equal(again.has('s', 'bad'), false);
    assert.equal(await again.readInto('s', 'good', 100, target, 0, 1000), 1000);
    assert.deepEqual(target.subarray(0, 1000), data.subarray(100, 1100));
  });

  it("never serves a later entry's bytes from the earlier entry's offset (dropped and put again with the other header during a read)", async (t) => {
    const dir = tmp();
    const c = await DiskBlockCache.open(dir, 4 << 20);
    await c.put('s3', 'share/3/0-1-aa', poolBlock(21));
    if (!(await volumeTakesDirect(dir)) || c.directPuts !== 1) return t.skip(`${os.tmpdir()} does not take O_DIRECT: one header only`);
    const want = bytes(64 * 1024, 21);
    const file = path.join(dir, entryFiles(dir)[0]!);
    // The thread pool's threads all busy: the read's open() waits behind them.
    const threads = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
    const busy = Array.from({ length: threads }, () => promisify(pbkdf2)('x', 'y', 300_000, 32, 'sha256'));
    const target = Buffer.alloc(8192);
    const reading = c.readInto('s3', 'share/3/0-1-aa', 0, target, 0, 8192);
    // Meanwhile the file becomes another copy of the same object with the 16-byte header (the
    // entry evicted and the object fetched and put again: a buffer O_DIRECT cannot take).
    const header = Buffer.alloc(16);
    header.writeUInt32LE(0x43524644, 0); // "DFRC"
    header.writeUInt32LE(want.length, 4);
    header.writeUInt32LE(crc32c(want), 8);
    writeFileSync(file, Buffer.concat([header, want]));
    const got = await reading;
    await Promise.all(busy);
    assert.ok(got === null || target.subarray(0, got).equals(want.subarray(0, got)), 'bytes of the object at another offset were served');
  });

  it('writes whole pool blocks with O_DIRECT (a 4 KiB header), anything else with a 16-byte one; both read back, also after a restart', async (t) => {
    const dir = tmp();
    const c = await DiskBlockCache.open(dir, 4 << 20);
    const whole = poolBlock(9);
    const tail = bytes(5000, 10); // a file's last, partial block
    await c.put('s3', 'share/1/0-1-aa', whole);
    await c.put('s3', 'share/1/1-1-bb', tail);
    whole.fill(0); // the caller reuses its buffer once put resolves
    const direct = await volumeTakesDirect(dir);
    if (direct) assert.deepEqual([c.directPuts, c.bufferedPuts], [1, 1]);
    const sizes = Object.fromEntries(entryFiles(dir).map((f) => [f.slice(-2), readFileSync(path.join(dir, f)).length]));
    assert.deepEqual(sizes, { aa: (direct ? 4096 : 16) + 64 * 1024, bb: 16 + 5000 });
    assert.equal(c.size, (sizes.aa ?? 0) + (sizes.bb ?? 0));
    const target = Buffer.alloc(4000);
    for (const cache of [c, await DiskBlockCache.open(dir, 4 << 20)]) {
      assert.deepEqual(await cache.get('s3', 'share/1/0-1-aa'), bytes(64 * 1024, 9));
      assert.deepEqual(await cache.get('s3', 'share/1/1-1-bb'), tail);
      assert.equal(await cache.readInto('s3', 'share/1/0-1-aa', 64 * 1024 - 1000, target, 0, 4000), 1000);
      assert.deepEqual(target.subarray(0, 1000), bytes(64 * 1024, 9).subarray(64 * 1024 - 1000));
      assert.equal(await cache.readInto('s3', 'share/1/1-1-bb', 10, target, 0, 100), 100);
      assert.deepEqual(target.subarray(0, 100), tail.subarray(10, 110));
    }
    assert.deepEqual(readdirSync(path.join(dir, '.tmp')), [], 'no temporary file left behind');
    if (!direct) t.skip(`${dir} does not take O_DIRECT: only the buffered path ran`);
  });

  it('writes one entry when the same object is put twice at once (an upload and a read), whatever its header', async () => {
    const dir = tmp();
    const c = await DiskBlockCache.open(dir, 4 << 20);
    const whole = poolBlock(12);
    const fetched = Buffer.from(whole); // the same object from the store: not aligned
    await Promise.all([c.put('s3', 'k', whole), c.put('s3', 'k', fetched, false)]);
    assert.equal(c.directPuts + c.bufferedPuts, 1, 'the second put while the first is written is skipped');
    assert.equal(entryFiles(dir).length, 1);
    assert.equal(c.size, readFileSync(path.join(dir, entryFiles(dir)[0]!)).length);
    const target = Buffer.alloc(1000);
    assert.equal(await c.readInto('s3', 'k', 5000, target, 0, 1000), 1000);
    assert.deepEqual(target, bytes(64 * 1024, 12).subarray(5000, 6000));
  });

  it('drops an O_DIRECT entry whose data does not match its header', async () => {
    const dir = tmp();
    const c = await DiskBlockCache.open(dir, 4 << 20);
    const whole = poolBlock(11);
    await c.put('s3', 'k', whole);
    const [f] = entryFiles(dir);
    const b = readFileSync(path.join(dir, f!));
    b[b.length - 1] = b[b.length - 1]! ^ 0xff;
    writeFileSync(path.join(dir, f!), b);
    const again = await DiskBlockCache.open(dir, 4 << 20);
    assert.equal(await again.get('s3', 'k'), null);
    assert.equal(again.has('s3', 'k'), false);
  });

  it('reads an entry in ranges through one kept handle; a dropped or evicted entry has none left open (its space is freed)', async () => {
    const dir = tmp();
    const c = await DiskBlockCache.open(dir, 2 * (10_000 + 16));
    const data = bytes(10_000, 6);
    await c.put('s', 'a', data);
    const fileA = path.join(dir, entryFiles(dir)[0]!);
    const target = Buffer.alloc(1000);
    try {
      for (let off = 0; off < 10_000; off += 1000) {
        assert.equal(await c.readInto('s', 'a', off, target, 0, 1000), 1000);
        assert.deepEqual(target, data.subarray(off, off + 1000));
      }
      assert.equal(await openFds(fileA), 1, 'ten reads, one open handle');
      assert.equal(c.handleOpens, 1);
      c.warm('s', 'a');
      c.warm('s', 'a');
      await c.readAheadDone();
      assert.equal(c.warms, 1, 'read ahead once');
      assert.equal(c.handleOpens, 1, 'through the same handle');
      c.warm('s', 'unknown');
      c.delete('s', 'a');
      await c.put('s', 'a', data);
      c.warm('s', 'a');
      await c.readAheadDone();
      assert.equal(c.warms, 2, 'an entry put again is read ahead again');
      await c.put('s', 'b', bytes(10_000, 7));
      await c.put('s', 'c', bytes(10_000, 8)); // evicts a
      assert.equal(c.has('s', 'a'), false);
      assert.equal(await fdsAfterClose(fileA), 0, "the evicted entry's handle was closed");
      const fileB = path.join(
        dir,
        entryFiles(dir).find((f) => f.endsWith('~b'))!,
      );
      assert.equal(await c.readInto('s', 'b', 0, target, 0, 1000), 1000);
      assert.equal(await openFds(fileB), 1);
      c.delete('s', 'b');
      assert.equal(await fdsAfterClose(fileB), 0, "a deleted entry's handle was closed");
      assert.equal(await c.readInto('s', 'c', 0, target, 0, 1000), 1000);
      assert.deepEqual(target, bytes(10_000, 8).subarray(0, 1000));
    } finally {
      c.close();
    }
    assert.equal(await fdsAfterClose(...entryFiles(dir).map((f) => path.join(dir, f))), 0, 'close() closes every handle');
    c.warm('s', 'c');
    assert.equal(await c.readInto('s', 'c', 0, target, 0, 1000), 1000, 'reads still work after close()');
    assert.equal(await fdsAfterClose(...entryFiles(dir).map((f) => path.join(dir, f))), 0, 'but keep no handle, and read nothing ahead');
    assert.equal(c.warms, 2);
  });

  it('evicts the least recently used entries beyond its size', async () => {
    const dir = tmp();
    const c = await DiskBlockCache.open(dir, 3 * (1000 + 16));
    await c.put('s', 'a', bytes(1000, 1));
    await c.put('s', 'b', bytes(1000, 2));
    await c.put('s', 'c', bytes(1000, 3));
    assert.ok(await c.get('s', 'a')); // a is now the most recently used
    await c.put('s', 'd', bytes(1000, 4));
    assert.equal(c.has('s', 'b'), false);
    for (const k of ['a', 'c', 'd']) assert.ok(c.has('s', k), k);
    assert.equal(entryFiles(dir).length, 3);
  });

  it('a block fetched for a read is kept only if it fits: a sequential read through a full cache still hits', async () => {
    const dir = tmp();
    const c = await DiskBlockCache.open(dir, 3 * (1000 + 16));
    for (const k of ['a', 'b', 'c']) await c.put('s', k, bytes(1000, 1));
    await c.put('s', 'x', bytes(1000, 2), false);
    assert.equal(c.has('s', 'x'), false, 'not kept: it would have evicted a');
    for (const k of ['a', 'b', 'c']) assert.ok(await c.get('s', k), k);
    assert.equal(c.hits, 3);
  });

  it("keeps the CRC32C its caller hands over as the entry's check: an entry put with a wrong one is never served", async () => {
    const dir = tmp();
    const c = await DiskBlockCache.open(dir, 1 << 20);
    const good = bytes(5000, 4);
    await c.put('s3', 'right', good, true, crc32c(good));
    await c.put('s3', 'wrong', bytes(5000, 5), true, crc32c(good));
    assert.deepEqual(await c.get('s3', 'right'), good);
    assert.equal(await c.get('s3', 'wrong'), null);
  });

  /**
   * A block service over a FileWal and a disk cache whose block store records the CRC32C handed over
   * with each PUT (and the block's own), and counts its GETs; one empty file.
   */
  async function uploadsRecorded(BS: number) {
    const meta = new MemoryMetadataStore();
    const store = new MemoryBlockStore();
    const hinted: { key: string; crc: number | undefined; actual: number }[] = [];
    let getCount = 0;
    const recording = Object.assign(Object.create(store) as MemoryBlockStore, {
      put: (key: string, data: Buffer, hints?: PutHints) => {
        hinted.push({ key, crc: hints?.crc32c, actual: crc32c(data) });
        return store.put(key, data);
      },
      get: (key: string, offset?: number, length?: number) => {
        getCount++;
        return store.get(key, offset, length);
      },
    });
    const walDir = tmp();
    const { wal } = await FileWal.open(walDir, { maxBytes: 1 << 20 });
    wal.tidy();
    const disk = await DiskBlockCache.open(tmp(), 1 << 20);
    const svc = new BlockService(recording, meta, {
      shareId: 1,
      keyPrefix: 't',
      blockSize: BS,
      wal,
      cache: new BlockCache(0),
      diskCache: { cache: disk, namespace: 'remote' },
    });
    const root = await meta.ensureRoot(1, dirInit({ mode: 0o777 }));
    const ino = (await meta.create(root.id, Buffer.from('f'), fileInit(), { sec: 1, nsec: 0 })).id;
    return { hinted, gets: () => getCount, svc, wal, walDir, ino };
  }

  it("an upload computes the block's CRC32C once: the block store gets it with the block, the cache's entry carries it", async () => {
    const BS = 4096;
    const { hinted, gets, svc, wal, ino } = await uploadsRecorded(BS);
    // One whole block and a short last one (its object is shorter than a block).
    const data = bytes(BS + 1000, 11);
    await svc.write(ino, 0, data);
    await svc.flush(ino);
    assert.equal(hinted.length, 2);
    for (const h of hinted) assert.equal(h.crc, h.actual, `the CRC32C handed over with ${h.key} is the block's`);
    assert.deepEqual(await svc.read(ino, 0, data.length, data.length), data);
    assert.equal(gets(), 0, 'both blocks came from the disk cache, whose entries checked out');
    await svc.close();
    await wal.close();
  });

  // The upload's CRC32C (the S3 checksum header, the read cache's entry) is folded from the WAL
  // records' CRCs where the records make up the block: the CRCs of what the client wrote (the
  // bytes read back are checked against them first: wal-crc.test.ts).
  it('hands over the CRC32C of the bytes written, folded from the WAL records or computed', async () => {
    const BS = 4096;
    const { hinted, svc, wal, ino } = await uploadsRecorded(BS);
    // Block 0 in four records, in order; block 1 in overlapping records and a gap filled last.
    const data = bytes(2 * BS, 5);
    const q = BS / 4;
    for (let i = 0; i < 4; i++) await svc.write(ino, i * q, data.subarray(i * q, (i + 1) * q));
    await svc.write(ino, BS, data.subarray(BS, BS + 2 * q));
    await svc.write(ino, BS + q, data.subarray(BS + q, BS + 3 * q));
    await svc.write(ino, BS + 3 * q, data.subarray(BS + 3 * q));
    await svc.flush(ino);
    assert.equal(hinted.length, 2);
    const [b0, b1] = [...hinted].sort((a, b) => a.key.localeCompare(b.key));
    assert.ok(b0 !== undefined && b1 !== undefined);
    assert.equal(b0.crc, crc32c(data.subarray(0, BS)), 'block 0: the CRC of the bytes the client wrote');
    assert.equal(b0.crc, b0.actual);
    assert.equal(b1.crc, b1.actual, 'block 1 (overlapping records): the CRC of its bytes');
    assert.equal(b1.crc, crc32c(data.subarray(BS)));
    await svc.close();
    await wal.close();
  });

  it('serves blocks a share uploaded without asking the block store, and falls back to it when an entry is gone', async () => {
    const BS = 4096;
    const meta = new MemoryMetadataStore();
    const store = new MemoryBlockStore();
    let gets = 0;
    const counting = Object.assign(Object.create(store) as MemoryBlockStore, {
      get: (key: string, offset?: number, length?: number) => {
        gets++;
        return store.get(key, offset, length);
      },
    });
    const walDir = tmp();
    const { wal } = await FileWal.open(walDir, { maxBytes: 1 << 20 });
    wal.tidy();
    const cacheDir = tmp();
    const disk = await DiskBlockCache.open(cacheDir, 1 << 20);
    const svc = new BlockService(counting, meta, {
      shareId: 1,
      keyPrefix: 't',
      blockSize: BS,
      wal,
      cache: new BlockCache(0), // nothing in memory: every read goes to the disk cache or the store
      diskCache: { cache: disk, namespace: 'remote' },
    });
    const root = await meta.ensureRoot(1, dirInit({ mode: 0o777 }));
    const ino = (await meta.create(root.id, Buffer.from('f'), fileInit(), { sec: 1, nsec: 0 })).id;
    const data = bytes(4 * BS, 9);
    await svc.write(ino, 0, data);
    await svc.flush(ino);
    // Reads in no order read nothing ahead (a random reader would have the device read 16 MiB per READ).
    for (const i of [3, 0, 2]) assert.deepEqual(await svc.read(ino, i * BS, BS, data.length), data.subarray(i * BS, (i + 1) * BS));
    // A sequential read, one block per call: from the second block on, the next blocks are read
    // ahead from the disk cache's files (into the kernel's page cache), once each.
    for (let i = 0; i < 4; i++) assert.deepEqual(await svc.read(ino, i * BS, BS, data.length), data.subarray(i * BS, (i + 1) * BS));
    await disk.readAheadDone();
    assert.equal(disk.warms, 2, 'blocks 2 and 3 were read ahead, each once, and nothing before the read was sequential');
    assert.deepEqual(await svc.read(ino, 0, data.length, data.length), data);
    assert.equal(gets, 0, 'every block came from the disk cache');
    // The files deleted behind the cache's back (its kept handles closed first: they would still
    // read the deleted files, whose bytes are right).
    disk.close();
    for (const f of entryFiles(cacheDir)) rmSync(path.join(cacheDir, f));
    assert.deepEqual(await svc.read(ino, 0, data.length, data.length), data);
    assert.equal(gets, 4, 'with the entries gone, each block came from the store once');
    await svc.close();
    await wal.close();
  });
});
