// Holes in a file's blocks (BlockService.dataRanges, cutKeepingSize): what SMB's
// FSCTL_QUERY_ALLOCATED_RANGES and FSCTL_SET_ZERO_DATA rest on. A byte outside the data ranges
// must read as zero, whatever was written, cut, uploaded or replayed; a cut keeps the size.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { MemoryMetadataStore } from '../meta/memory.js';
import { boot, mkfile } from '../testing/blocks.js';
import { BlockCache } from './cache.js';
import { MemoryBlockStore } from './memory.js';
import { BlockService } from './service.js';
import { MemoryWal } from './wal.js';

const BS = 1024;
const dirs: string[] = [];
process.on('exit', () => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A block service over a WAL in memory (no crash to come). */
const memoryService = (meta: MemoryMetadataStore, store = new MemoryBlockStore(), wal = new MemoryWal(64 * BS)): BlockService =>
  new BlockService(store, meta, { shareId: 1, keyPrefix: 't', blockSize: BS, wal, cache: new BlockCache(8 * BS) });

/**
 * A "process" on a new WAL directory and new stores (a crash: boot another on `dir`), with `count`
 * files each holding `data` (4 blocks), stored and with that size.
 */
async function storedFiles(count: number) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dittofs-sparse-'));
  dirs.push(dir);
  const meta = new MemoryMetadataStore();
  const store = new MemoryBlockStore();
  const a = await boot(dir, meta, store, { blockSize: BS });
  const data = randomBytes(4 * BS);
  const files: number[] = [];
  for (let i = 0; i < count; i++) {
    const ino = await mkfile(meta);
    await a.svc.write(ino, 0, data);
    await meta.setAttr(ino, { size: 4 * BS });
    await a.svc.flush(ino);
    files.push(ino);
  }
  return { dir, meta, store, a, data, files };
}

/** Bytes of `model` outside `ranges` that are not zero (there must be none). */
function dataOutside(model: Buffer, ranges: Array<[number, number]>): number {
  let n = 0;
  let at = 0;
  for (const [s, e] of [...ranges, [model.length, model.length] as [number, number]]) {
    for (let i = at; i < s; i++) if (model[i] !== 0) n++;
    at = e;
  }
  return n;
}

type Op =
  | { kind: 'write'; offset: number; data: Uint8Array }
  | { kind: 'zeroTail'; from: number }
  | { kind: 'flush' }
  | { kind: 'ranges'; offset: number; length: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('write' as const),
      offset: fc.nat(6 * BS),
      data: fc.uint8Array({ minLength: 1, maxLength: 2 * BS }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('zeroTail' as const), from: fc.nat(7 * BS) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('flush' as const) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('ranges' as const), offset: fc.nat(8 * BS), length: fc.nat(8 * BS) }) },
);

describe('block holes (data ranges, cuts that keep the size)', () => {
  it('property: every byte outside the data ranges reads as zero; a cut reads as zeros and keeps the size', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 30 }), async (ops) => {
        const meta = new MemoryMetadataStore();
        const svc = memoryService(meta);
        const ino = await mkfile(meta);
        let model = Buffer.alloc(0);
        const check = async (offset: number, length: number): Promise<void> => {
          const end = Math.min(model.length, offset + length);
          const ranges = await svc.dataRanges(ino, offset, end, 1000);
          for (const [s, e] of ranges) assert.ok(s >= offset && e <= end && s < e, `range [${s}, ${e}) inside [${offset}, ${end})`);
          for (let i = 1; i < ranges.length; i++) assert.ok(ranges[i]![0] > ranges[i - 1]![1], 'ascending, merged');
          const part = Buffer.alloc(model.length);
          if (end > offset) model.copy(part, offset, offset, end);
          assert.equal(dataOutside(part, ranges), 0, `data outside ${JSON.stringify(ranges)}`);
        };
        for (const op of ops) {
          if (op.kind === 'write') {
            const end = op.offset + op.data.length;
            if (end > model.length) model = Buffer.concat([model, Buffer.alloc(end - model.length)]);
            model.set(op.data, op.offset);
            await svc.write(ino, op.offset, Buffer.from(op.data));
          } else if (op.kind === 'zeroTail') {
            if (op.from < model.length) {
              assert.equal(await svc.cutKeepingSize(ino, op.from, model.length), true);
              model.fill(0, op.from);
            }
          } else if (op.kind === 'flush') {
            await svc.flush(ino);
          } else {
            await check(op.offset, op.length);
          }
        }
        assert.deepEqual(await svc.read(ino, 0, model.length, model.length), model);
        await check(0, model.length);
        await svc.flush(ino);
        assert.deepEqual(await svc.read(ino, 0, model.length, model.length), model, 'after the uploads');
        await check(0, model.length);
        await svc.close();
      }),
      { numRuns: 200 },
    );
  });

  it('a cut of a written tail frees its blocks: no data ranges there, stored or not, and none in the store', async () => {
    const meta = new MemoryMetadataStore();
    const store = new MemoryBlockStore();
    const svc = memoryService(meta, store);
    const ino = await mkfile(meta);
    const data = randomBytes(5 * BS);
    await svc.write(ino, 0, data);
    await svc.flush(ino);
    assert.equal(store.size, 5);
    assert.deepEqual(await svc.dataRanges(ino, 0, 5 * BS, 10), [[0, 5 * BS]]);
    assert.equal(await svc.cutKeepingSize(ino, BS + 100, 5 * BS), true);
    assert.deepEqual(await svc.dataRanges(ino, 0, 5 * BS, 10), [[0, BS + 100]], 'before the cut block is stored again');
    await svc.flush(ino);
    assert.deepEqual(await svc.dataRanges(ino, 0, 5 * BS, 10), [[0, BS + 100]], 'after: the zeros ending the block are not stored');
    assert.equal(store.size, 2, 'blocks 2-4 freed');
    const want = Buffer.concat([data.subarray(0, BS + 100), Buffer.alloc(4 * BS - 100)]);
    assert.deepEqual(await svc.read(ino, 0, 5 * BS, 5 * BS), want);
    // A write past the size the caller gave: the cut is refused (it would cut that write too).
    await svc.write(ino, 6 * BS, Buffer.from('late'));
    assert.equal(await svc.cutKeepingSize(ino, 0, 5 * BS), false);
    assert.deepEqual(await svc.read(ino, 6 * BS, 4, 6 * BS + 4), Buffer.from('late'));
    // Once that write is stored (only in the block map, no longer in memory), just as much.
    await svc.flush(ino);
    assert.equal(await svc.cutKeepingSize(ino, 0, 5 * BS), false, 'stored past the size');
    assert.deepEqual(await svc.read(ino, 6 * BS, 4, 6 * BS + 4), Buffer.from('late'), 'the stored write stays');
    // Ranges past `max`: one more than asked says there are more.
    const many = await mkfile(meta);
    for (let i = 0; i < 6; i++) await svc.write(many, i * 2 * BS, Buffer.from('x'));
    assert.equal((await svc.dataRanges(many, 0, 12 * BS, 3)).length, 4);
    await svc.close();
  });

  it('a cut comes back after a crash: the bytes past it read as zeros, the size is what it was', async () => {
    const { dir, meta, store, a, data, files } = await storedFiles(1);
    const ino = files[0]!;
    await a.svc.write(ino, 2 * BS, randomBytes(BS)); // in the WAL only: replay must not bring it back
    await a.svc.commit(ino);
    assert.equal(await a.svc.cutKeepingSize(ino, BS / 2, 4 * BS), true);
    // crash: `a` is abandoned
    const b = await boot(dir, meta, store, { blockSize: BS });
    assert.equal((await meta.getInode(ino))!.size, 4 * BS, 'the size stays');
    const want = Buffer.concat([data.subarray(0, BS / 2), Buffer.alloc(4 * BS - BS / 2)]);
    assert.deepEqual(await b.svc.read(ino, 0, 4 * BS, 4 * BS), want);
    await b.svc.flush(ino);
    assert.deepEqual(await b.svc.dataRanges(ino, 0, 4 * BS, 10), [[0, BS / 2]]);
    await b.svc.close();
    await b.wal.close();
  });
  it('a write racing a cut or a truncate reads the same before and after a crash (memory follows the log)', async () => {
    const { dir, meta, store, a, files } = await storedFiles(2);
    const [cutFile, truncFile] = files as [number, number];
    // The cut is logged first, the write while the cut waits for its sync: the write comes after it.
    const w = randomBytes(BS);
    const cut = a.svc.cutKeepingSize(cutFile, BS / 2, 4 * BS);
    await a.svc.write(cutFile, 2 * BS + 10, w);
    assert.equal(await cut, true);
    const trunc = a.svc.truncate(truncFile, BS / 2);
    await a.svc.write(truncFile, 2 * BS + 10, w);
    await trunc;
    await a.svc.commit(cutFile);
    const before = await a.svc.read(cutFile, 0, 4 * BS, 4 * BS);
    assert.deepEqual(before.subarray(2 * BS + 10, 3 * BS + 10), w, 'the write, after the cut, stays');
    const truncBefore = await a.svc.read(truncFile, 0, 4 * BS, 4 * BS);
    assert.deepEqual(truncBefore.subarray(2 * BS + 10, 3 * BS + 10), w, 'the write, after the truncate, stays');
    // crash: `a` is abandoned
    const b = await boot(dir, meta, store, { blockSize: BS });
    assert.deepEqual(await b.svc.read(cutFile, 0, 4 * BS, 4 * BS), before, 'the same bytes after replay');
    assert.deepEqual(await b.svc.read(truncFile, 0, 4 * BS, 4 * BS), truncBefore, 'the same bytes after replay');
    await b.svc.flush(cutFile);
    assert.deepEqual(await b.svc.read(cutFile, 0, 4 * BS, 4 * BS), before, 'and once stored');
    await b.svc.close();
    await b.wal.close();
  });

  it('a write waiting for WAL room when a cut begins: memory keeps or cuts it as the log ordered them', async () => {
    // A memory WAL held full by the test, which also picks the order waiters wake in (the cut's
    // first): what the log says (records in append order) is what replay would rebuild.
    class HeldWal extends MemoryWal {
      held = false;
      readonly order: string[] = [];
      readonly waiters: Array<() => void> = [];
      override get full(): boolean {
        return this.held;
      }
      override waitRoom(): Promise<void> {
        return this.held ? new Promise((resolve) => this.waiters.push(resolve)) : Promise.resolve();
      }
      override appendWrite(share: number, inode: number, offset: number, data: Buffer) {
        this.order.push(`write ${offset}`);
        return super.appendWrite(share, inode, offset, data);
      }
      override appendCut() {
        this.order.push('cut');
        return super.appendCut();
      }
    }
    const meta = new MemoryMetadataStore();
    const wal = new HeldWal(64 * BS);
    const svc = memoryService(meta, new MemoryBlockStore(), wal);
    const ino = await mkfile(meta);
    const data = randomBytes(4 * BS);
    await svc.write(ino, 0, data);
    await svc.flush(ino);
    wal.held = true;
    const w = randomBytes(BS);
    const write = svc.write(ino, 2 * BS + 10, w);
    await new Promise((r) => setImmediate(r));
    const cut = svc.cutKeepingSize(ino, BS / 2, 4 * BS);
    await new Promise((r) => setImmediate(r));
    wal.held = false;
    for (const wake of wal.waiters.reverse()) wake();
    await write;
    assert.equal(await cut, true);
    const logged = wal.order.slice(-2);
    const kept = logged[0] === 'cut';
    const got = await svc.read(ino, 0, 4 * BS, 4 * BS);
    assert.deepEqual(got.subarray(2 * BS + 10, 3 * BS + 10), kept ? w : Buffer.alloc(BS), `logged: ${logged.join(', ')}`);
    await svc.close();
  });

  it('a crash that keeps only part of what a cut logged never changes the size', async () => {
    // The WAL writer may be busy with the cut's first bytes when the rest is queued: a crash may
    // keep the start of what the cut logged and lose its end. Lose the last record it wrote.
    const { dir, meta, store, a, data, files } = await storedFiles(1);
    const ino = files[0]!;
    await a.svc.commit(ino);
    assert.equal(await a.svc.cutKeepingSize(ino, BS / 2, 4 * BS), true);
    // crash, the last record header never reached the disk (the segment is preallocated zeros)
    const seg = readdirSync(dir).find((n) => n.endsWith('.log'))!;
    const buf = readFileSync(path.join(dir, seg));
    const last = buf.lastIndexOf(Buffer.from('RLWD', 'latin1'));
    assert.ok(last > 0);
    buf.fill(0, last, last + 48);
    writeFileSync(path.join(dir, seg), buf);
    const b = await boot(dir, meta, store, { blockSize: BS });
    assert.equal((await meta.getInode(ino))!.size, 4 * BS, 'the size stays');
    const got = await b.svc.read(ino, 0, 4 * BS, 4 * BS);
    assert.deepEqual(got.subarray(0, BS / 2), data.subarray(0, BS / 2), 'the bytes before the cut stay');
    const tail = got.subarray(BS / 2);
    assert.ok(tail.equals(data.subarray(BS / 2)) || tail.equals(Buffer.alloc(tail.length)), 'past it: all old bytes or all zeros');
    await b.svc.close();
    await b.wal.close();
  });
});

describe('data ranges of a vast sparse file', () => {
  it('finds data past long holes, in few block-map reads', async () => {
    const meta = new MemoryMetadataStore();
    let reads = 0;
    const getBlocks = meta.getBlocks.bind(meta);
    meta.getBlocks = (...a: Parameters<typeof meta.getBlocks>) => {
      reads++;
      return getBlocks(...a);
    };
    const svc = memoryService(meta);
    const ino = await mkfile(meta);
    const far = 2 ** 40; // a terabyte of 1 KiB blocks: 2^30 blocks
    for (const at of [5 * BS, 4096 * BS + 1, 70_000 * BS, far]) await svc.write(ino, at, Buffer.from('x'));
    await svc.flush(ino);
    await svc.write(ino, 300_000 * BS, Buffer.from('y')); // not stored yet
    assert.deepEqual(await svc.dataRanges(ino, 0, far + 1, 100), [
      [5 * BS, 5 * BS + 1],
      [4096 * BS, 4096 * BS + 2],
      [70_000 * BS, 70_000 * BS + 1],
      [300_000 * BS, 300_000 * BS + 1],
      [far, far + 1],
    ]);
    assert.ok(reads < 1200, `${reads} block-map reads`);
    await svc.close();
  });
});
