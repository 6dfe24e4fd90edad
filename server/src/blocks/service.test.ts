import assert from 'node:assert/strict';
import { describe, it, mock } from 'node:test';
import fc from 'fast-check';
import pLimit from 'p-limit';
import { MemoryMetadataStore } from '../meta/memory.js';
import { BlockCache } from './cache.js';
import { MemoryBlockStore } from './memory.js';
import { BlockService, LOCAL_BUSY_DEFER, MAX_BACKGROUND_FREES, type BlockServiceOptions } from './service.js';
import type { BlockStore } from './store.js';
import type { MetadataStore } from '../meta/store.js';
import { FileWal, MemoryWal, RECORD_TRUNCATE, RECORD_WRITE, REC_HEADER, SEG_HEADER, type Wal, type WalAppend } from './wal.js';
import { BufferPools } from '../wire/buffer-pool.js';
import { mkfile } from '../testing/blocks.js';
import { until } from '../../../test/helpers/hostile.js';
import { dirInit, fileInit } from '../testing/inodes.js';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const BS = 1024;
/** The longest a test waits for a condition (a bound for a stuck test, not a timing). */
const WAIT_MS = 30_000;

type WalKind = 'memory' | 'file';
const tmpDirs: string[] = [];
process.on('exit', () => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

/** A WAL of `maxBytes`: in memory, or segment files in a fresh temporary directory. */
async function makeWal(kind: WalKind, maxBytes: number): Promise<Wal> {
  if (kind === 'memory') return new MemoryWal(maxBytes);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dittofs-svc-wal-'));
  tmpDirs.push(dir);
  const { wal } = await FileWal.open(dir, { maxBytes, segmentBytes: Math.max(4 * BS, Math.floor(maxBytes / 4)) });
  wal.tidy(); // a fresh directory: nothing to replay
  return wal;
}

/** A block service of share 1 (key prefix `t`, BS-byte blocks) over `wal`; `extra` overrides. */
function service(store: BlockStore, meta: MetadataStore, wal: Wal, extra: Partial<BlockServiceOptions> = {}): BlockService {
  return new BlockService(store, meta, { shareId: 1, keyPrefix: 't', blockSize: BS, wal, cache: new BlockCache(8 * BS), ...extra });
}

async function setup(maxDirty = 64 * BS, kind: WalKind = 'memory') {
  const meta = new MemoryMetadataStore();
  const store = new MemoryBlockStore();
  const wal = await makeWal(kind, maxDirty);
  const svc = service(store, meta, wal);
  return { meta, store, svc, wal };
}

type Op =
  | { kind: 'write'; offset: number; data: Uint8Array }
  | { kind: 'truncate'; size: number }
  | { kind: 'flush' }
  | { kind: 'read'; offset: number; count: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('write' as const),
      offset: fc.nat(6 * BS),
      data: fc.uint8Array({ minLength: 1, maxLength: 2 * BS }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), size: fc.nat(7 * BS) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('flush' as const) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('read' as const), offset: fc.nat(8 * BS), count: fc.nat(3 * BS) }) },
);

describe('block service data path', () => {
  for (const kind of ['memory', 'file'] as const) {
    it(`property (${kind} WAL): reads always equal a byte-array model under writes, truncates and flushes`, async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40 }), fc.boolean(), async (ops, tightBudget) => {
          const { meta, store, svc, wal } = await setup(tightBudget ? 8 * BS : 64 * BS, kind);
          const ino = await mkfile(meta);
          let model = Buffer.alloc(0);
          const pending: Promise<unknown>[] = [];
          for (const op of ops) {
            if (op.kind === 'write') {
              const end = op.offset + op.data.length;
              if (end > model.length) model = Buffer.concat([model, Buffer.alloc(end - model.length)]);
              model.set(op.data, op.offset);
              const buf = Buffer.from(op.data);
              await svc.write(ino, op.offset, buf);
              // The RPC layer reuses a WRITE's buffer once the write settles.
              buf.fill(0xa5);
            } else if (op.kind === 'truncate') {
              await svc.truncate(ino, op.size);
              model = op.size <= model.length ? model.subarray(0, op.size) : Buffer.concat([model, Buffer.alloc(op.size - model.length)]);
            } else if (op.kind === 'flush') {
              pending.push(svc.flush(ino));
            } else {
              const got = await svc.read(ino, op.offset, op.count, model.length);
              const want = model.subarray(Math.min(op.offset, model.length), Math.min(op.offset + op.count, model.length));
              assert.deepEqual(got, Buffer.from(want));
            }
          }
          await Promise.all(pending);
          await svc.flush(ino);
          assert.equal(svc.hasDirty(ino), false);
          // Everything reads back from the store alone, and no object is left behind.
          assert.deepEqual(await svc.read(ino, 0, model.length + BS, model.length), Buffer.from(model));
          const refs = await meta.getBlocks(ino, 0, 1000);
          assert.equal(store.size, refs.length, 'every stored object is referenced by exactly one block row');
          await svc.free(ino);
          assert.equal(store.size, 0);
          await svc.close();
          await wal.close();
        }),
        { numRuns: kind === 'memory' ? 300 : 100 },
      );
    });
  }

  it('keeps no reference to written data once a write settles, even when the WAL write failed', async () => {
    for (const kind of ['memory', 'file'] as const) {
      const meta = new MemoryMetadataStore();
      const inner = await makeWal(kind, 64 * BS);
      let fail = false;
      // The same log, except that appends fail on request (a disk error).
      const appendWrite = (share: number, inode: number, offset: number, data: Buffer): WalAppend => {
        const a = inner.appendWrite(share, inode, offset, data);
        return fail ? { ...a, done: a.done.then(() => Promise.reject(new Error('disk gone'))) } : a;
      };
      const wal = new Proxy(inner, {
        get(target, prop) {
          if (prop === 'appendWrite') return appendWrite;
          const v: unknown = Reflect.get(target, prop, target);
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      });
      const svc = service(new MemoryBlockStore(), meta, wal, { cache: new BlockCache(0) });
      const ino = await mkfile(meta);
      const a = Buffer.alloc(BS / 2, 1);
      await svc.write(ino, 0, a);
      a.fill(0xee);
      fail = true;
      const b = Buffer.alloc(BS / 2, 2);
      await assert.rejects(svc.write(ino, BS / 2, b), /could not write the WAL/);
      b.fill(0xee);
      const want = Buffer.concat([Buffer.alloc(BS / 2, 1), Buffer.alloc(BS / 2, 2)]);
      assert.deepEqual(await svc.read(ino, 0, BS, BS), want, `${kind} WAL`);
      await svc.close();
      await inner.close();
    }
  });

  /** A service on a file WAL that takes its block buffers from `buffers`. */
  async function withBuffers(meta: MemoryMetadataStore, buffers: BufferPools, uploads?: number): Promise<BlockService> {
    return service(new MemoryBlockStore(), meta, await makeWal('file', 64 * BS), {
      cache: new BlockCache(0),
      buffers,
      ...(uploads === undefined ? {} : { uploads: pLimit(uploads) }),
    });
  }

  it("keeps a small write's WAL segment until the write holds it, when another write rolls past it at once", async () => {
    // 16 KiB segments (setup's file WAL of 64 KiB). A first record fills the segment to within
    // 200 bytes of its end, is stored and lets go of it: the segment is held by nothing.
    const { meta, svc } = await setup(64 * BS, 'file');
    const x = await mkfile(meta);
    const y = await mkfile(meta);
    const segmentBytes = 16 * BS;
    const fill = segmentBytes - SEG_HEADER - REC_HEADER - 200;
    await svc.write(x, 1000 * BS, Buffer.alloc(fill, 1));
    await svc.flush(x);
    // A small write that fits, and at once (no await between) one that rolls to a new segment:
    // small records are written before append() returns, so the first write has not held the
    // old segment yet when the second one's roll makes it retirable.
    const a = Buffer.alloc(100, 0x41);
    const b = Buffer.alloc(100, 0x42);
    await Promise.all([svc.write(x, 0, a), svc.write(y, 0, b)]);
    assert.deepEqual(await svc.read(x, 0, 100, 100), a);
    assert.deepEqual(await svc.read(y, 0, 100, 100), b);
    await svc.flush(x);
    assert.deepEqual(await svc.read(x, 0, 100, 100), a);
  });

  it('assembles uploads in reused block buffers', async () => {
    const meta = new MemoryMetadataStore();
    const buffers = new BufferPools(4 * BS);
    const svc = await withBuffers(meta, buffers);
    const ino = await mkfile(meta);
    const data = Buffer.alloc(20 * BS);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
    for (let i = 0; i < 20; i++) {
      await svc.write(ino, i * BS, data.subarray(i * BS, (i + 1) * BS));
      await svc.flush(ino);
    }
    assert.deepEqual(await svc.read(ino, 0, data.length, data.length), data);
    assert.equal(buffers.forSize(BS).created, 1, 'one block buffer served 20 uploads made one after another');
    await svc.close();
  });

  it('makes no more block buffers than uploads run at once, burst after burst', async () => {
    const meta = new MemoryMetadataStore();
    const buffers = new BufferPools(BS, true, 4);
    const svc = await withBuffers(meta, buffers, 4);
    const files = await Promise.all(Array.from({ length: 8 }, () => mkfile(meta)));
    // Half blocks: nothing is stored before the flushes, which then run 4 at a time.
    for (let round = 0; round < 3; round++) {
      for (const [i, ino] of files.entries()) await svc.write(ino, 0, Buffer.alloc(BS / 2, round * 16 + i));
      await Promise.all(files.map((ino) => svc.flush(ino)));
    }
    for (const [i, ino] of files.entries()) assert.deepEqual(await svc.read(ino, 0, BS / 2, BS / 2), Buffer.alloc(BS / 2, 32 + i));
    const created = buffers.forSize(BS).created;
    assert.ok(created <= 4, `${created} block buffers made for 24 uploads, 4 at a time`);
    await svc.close();
  });

  it('uploads a block as soon as it is completely written', async () => {
    const { meta, store, svc } = await setup();
    const ino = await mkfile(meta);
    await svc.write(ino, 0, Buffer.alloc(BS, 7));
    await svc.flush(ino);
    const refs = await meta.getBlocks(ino, 0, 10);
    assert.equal(refs.length, 1);
    assert.equal(refs[0]!.length, BS);
    assert.equal(store.size, 1);
    await svc.close();
  });

  it("free trusts a store's 'no blocks' only when no block was stored since the removal began", async () => {
    const { meta, store, svc } = await setup();
    const empty = await mkfile(meta);
    const ino = await mkfile(meta);
    // The removal of `ino` began here; a block landed before free() was called.
    const mark = svc.putMark();
    await svc.write(ino, 0, Buffer.alloc(BS, 7));
    await svc.flush(ino);
    assert.equal(store.size, 1);
    await svc.free(ino, mark);
    assert.deepEqual(await meta.getBlocks(ino, 0, 10), [], 'the late block is dropped');
    assert.equal(store.size, 0, 'and its object deleted');
    // Nothing stored since the mark: the store's word stands, and no store call is made.
    let drops = 0;
    const drop = meta.dropBlocks.bind(meta);
    meta.dropBlocks = (...a) => {
      drops++;
      return drop(...a);
    };
    await svc.free(empty, svc.putMark());
    assert.equal(drops, 0);
    await svc.free(empty);
    assert.equal(drops, 1);
    await svc.close();
  });

  it('replaces a block with a new immutable version and deletes the old object', async () => {
    const { meta, store, svc } = await setup();
    const ino = await mkfile(meta);
    await svc.write(ino, 0, Buffer.alloc(BS, 1));
    await svc.flush(ino);
    const [v1] = await meta.getBlocks(ino, 0, 1);
    await svc.write(ino, 10, Buffer.from('new'));
    await svc.flush(ino);
    const [v2] = await meta.getBlocks(ino, 0, 1);
    assert.notEqual(v1!.key, v2!.key);
    assert.equal(v2!.version, v1!.version + 1);
    assert.equal(store.size, 1);
    assert.equal(await store.get(v1!.key), null);
    const got = await svc.read(ino, 0, BS, BS);
    assert.equal(got.subarray(10, 13).toString(), 'new');
    assert.equal(got[0], 1);
    await svc.close();
  });

  it('makes writers wait instead of failing when the dirty budget is exhausted', async () => {
    const { meta, svc } = await setup(2 * BS);
    const ino = await mkfile(meta);
    const data = Buffer.alloc(BS / 2, 3);
    for (let i = 0; i < 64; i++) await svc.write(ino, i * BS, data); // half blocks never fill up
    await svc.flush(ino);
    const got = await svc.read(ino, 63 * BS, BS / 2, 64 * BS);
    assert.deepEqual(got, data);
    await svc.close();
  });
});

/** The memory block store with fault injection: puts can be held at a gate and made to fail. */
class GatedStore extends MemoryBlockStore {
  gate: Promise<void> | null = null;
  failPuts = 0;
  private deleteGate: ReturnType<typeof makeGate> | null = null;
  /** The next delete waits at a gate. */
  gateDeletes(): Gate {
    const g = makeGate();
    this.deleteGate = g;
    return g;
  }
  override async delete(key: string): Promise<void> {
    const g = this.deleteGate;
    this.deleteGate = null;
    if (g) await g.wait();
    return super.delete(key);
  }
  override async put(key: string, data: Buffer): Promise<void> {
    if (this.gate) await this.gate;
    if (this.failPuts > 0) {
      this.failPuts--;
      throw new Error('injected put failure');
    }
    return super.put(key, data);
  }
}

/** A gate a call waits at: `reached` once one arrived, `open()` lets it (and later ones) through. */
interface Gate {
  reached: Promise<void>;
  open(): void;
}

function makeGate(): Gate & { wait(): Promise<void> } {
  let arrived!: () => void;
  let opened!: () => void;
  const reached = new Promise<void>((r) => (arrived = r));
  const passed = new Promise<void>((r) => (opened = r));
  return {
    reached,
    open: () => opened(),
    wait: () => {
      arrived();
      return passed;
    },
  };
}

/** The memory metadata store with block map switches and reads that can wait at a gate (after reading). */
class GatedMeta extends MemoryMetadataStore {
  private readonly gates = new Map<string, ReturnType<typeof makeGate>>();
  gate(call: 'putBlock' | 'getBlocks'): Gate {
    const g = makeGate();
    this.gates.set(call, g);
    return g;
  }
  private async pass(call: string): Promise<void> {
    const g = this.gates.get(call);
    if (!g) return;
    this.gates.delete(call);
    await g.wait();
  }
  override async putBlock(...a: Parameters<MemoryMetadataStore['putBlock']>): ReturnType<MemoryMetadataStore['putBlock']> {
    await this.pass('putBlock');
    return super.putBlock(...a);
  }
  /** The next this many getInode calls fail (a connection blip). */
  failGetInode = 0;
  override async getInode(...a: Parameters<MemoryMetadataStore['getInode']>): ReturnType<MemoryMetadataStore['getInode']> {
    if (this.failGetInode > 0) {
      this.failGetInode--;
      throw new Error('injected metadata failure');
    }
    return super.getInode(...a);
  }
  override async getBlocks(...a: Parameters<MemoryMetadataStore['getBlocks']>): ReturnType<MemoryMetadataStore['getBlocks']> {
    const r = await super.getBlocks(...a);
    await this.pass('getBlocks');
    return r;
  }
}

function gated(maxDirty = 64 * BS, uploads?: number) {
  const meta = new GatedMeta();
  const store = new GatedStore();
  const wal = new MemoryWal(maxDirty);
  const svc = service(store, meta, wal, uploads === undefined ? {} : { uploads: pLimit(uploads) });
  let open!: () => void;
  const hold = (): void => {
    store.gate = new Promise<void>((r) => (open = r));
  };
  const release = (): void => {
    store.gate = null;
    open();
  };
  return { meta, store, svc, wal, hold, release };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('block service under upload delays and failures', () => {
  it('never lets an older version whose upload failed win over a newer one', async () => {
    const { meta, store, svc, hold, release } = gated();
    const ino = await mkfile(meta);
    await svc.write(ino, 0, Buffer.from('xxxx'));
    await svc.flush(ino);
    hold();
    store.failPuts = 1;
    await svc.write(ino, 0, Buffer.from('AAAA'));
    const first = svc.flush(ino);
    await tick();
    await svc.write(ino, 0, Buffer.from('BBBB'));
    const second = svc.flush(ino);
    release();
    await assert.rejects(first);
    await second.catch(() => undefined);
    await svc.flush(ino);
    assert.equal((await svc.read(ino, 0, 4, 4)).toString(), 'BBBB');
    await svc.close();
  });

  it('a write that lands while a removed file is being freed holds no WAL space afterwards', async () => {
    const { meta, svc, wal, hold, release } = gated();
    const ino = await mkfile(meta);
    hold();
    await svc.write(ino, 0, Buffer.alloc(BS, 1)); // a whole block: its upload starts, held at the gate
    await tick();
    const freeing = svc.free(ino); // waits for that upload
    await tick();
    // Another client's WRITE, resolved before the REMOVE, lands now.
    await svc.write(ino, BS, Buffer.from('late'));
    release();
    await freeing;
    await svc.flushAll();
    assert.equal(wal.usedBytes, 0, 'every record of the freed file is released');
    await svc.close();
  });

  it('a late write whose block map was made again while the last upload deleted the object it replaced holds no WAL space', async () => {
    const { meta, store, svc, wal } = gated();
    const ino = await mkfile(meta);
    await svc.write(ino, 0, Buffer.alloc(BS, 1));
    await svc.flush(ino); // block 0 has an object: the next upload replaces it
    const putBlock = meta.gate('putBlock');
    await svc.write(ino, 0, Buffer.alloc(BS, 2)); // a whole block: uploading, held in its block map switch
    await putBlock.reached;
    const del = store.gateDeletes();
    const freeing = svc.free(ino);
    await tick();
    putBlock.open(); // the upload ends: its block map goes, then it deletes the replaced object
    await del.reached;
    await svc.write(ino, BS, Buffer.from('late')); // another client's WRITE lands now
    del.open();
    await freeing;
    await svc.flushAll();
    assert.equal(wal.usedBytes, 0, 'every record of the freed file is released');
    await svc.close();
  });

  it('an upload of a freed file that fails after the free is over releases its data instead of keeping it where nothing reaches it', async () => {
    const { meta, svc, wal } = gated(64 * BS, 1);
    const [a, b, c] = [await mkfile(meta), await mkfile(meta), await mkfile(meta)];
    const first = meta.gate('putBlock');
    await svc.write(a, 0, Buffer.alloc(BS, 1)); // holds the one upload slot
    await first.reached;
    await svc.write(b, 0, Buffer.alloc(BS, 2)); // queued
    const freeing = svc.free(b); // waits for that upload
    await tick();
    await svc.write(c, 0, Buffer.alloc(BS, 3)); // queued
    await svc.write(b, BS, Buffer.alloc(BS, 4)); // another client's late WRITE: queued last
    const second = meta.gate('putBlock');
    first.open();
    await freeing; // over before the late write's upload runs
    await second.reached; // c's upload holds the slot
    meta.failGetInode = 1; // the metadata store has a blip when the late write's upload starts
    second.open();
    await svc.flushAll();
    assert.equal(meta.failGetInode, 0, 'the late upload ran after the free');
    assert.equal(wal.usedBytes, 0, 'nothing of the freed file stays held');
    await svc.close();
  });

  it('a truncate that overlaps the end of an upload of its last block still zeroes what that upload stored past the cut', async () => {
    const { meta, svc } = gated();
    const ino = await mkfile(meta);
    const putBlock = meta.gate('putBlock');
    await svc.write(ino, 0, Buffer.alloc(BS, 0x41)); // a whole block: uploading, held in its block map switch
    await putBlock.reached;
    const getBlocks = meta.gate('getBlocks'); // the truncate reads the block map, then waits
    const truncating = svc.truncate(ino, BS / 2);
    await getBlocks.reached;
    putBlock.open(); // the upload's row lands after that read
    await tick();
    await tick();
    getBlocks.open();
    await truncating;
    await svc.flush(ino);
    const got = await svc.read(ino, 0, BS, BS); // the file grown back to BS
    assert.deepEqual(got, Buffer.concat([Buffer.alloc(BS / 2, 0x41), Buffer.alloc(BS / 2)]), 'the cut half reads as zeros');
    await svc.close();
  });

  it('shows every version in flight to reads', async () => {
    const { meta, svc, hold, release } = gated();
    const ino = await mkfile(meta);
    await svc.write(ino, 0, Buffer.from('xxxxxxxx'));
    await svc.flush(ino);
    hold();
    await svc.write(ino, 0, Buffer.from('AA'));
    const a = svc.flush(ino);
    await tick();
    await svc.write(ino, 4, Buffer.from('BB'));
    const b = svc.flush(ino);
    await tick();
    assert.equal((await svc.read(ino, 0, 8, 8)).toString(), 'AAxxBBxx');
    release();
    await Promise.all([a, b]);
    assert.equal((await svc.read(ino, 0, 8, 8)).toString(), 'AAxxBBxx');
    await svc.close();
  });

  it('keeps dirty data visible to a read that races its upload', async () => {
    const { meta, svc } = gated();
    const ino = await mkfile(meta);
    await svc.write(ino, 0, Buffer.alloc(BS, 0x61));
    await svc.flush(ino);
    await svc.write(ino, BS, Buffer.from('DIRTY'));
    const reading = svc.read(ino, 0, BS + 5, BS + 5);
    const flushing = svc.flush(ino);
    const got = await reading;
    await flushing;
    assert.equal(got.subarray(BS).toString(), 'DIRTY');
    await svc.close();
  });

  it('returns the dirty budget when a file is deleted during its upload', async () => {
    const { meta, svc, wal, hold, release } = gated();
    const ino = await mkfile(meta);
    hold();
    await svc.write(ino, 0, Buffer.alloc(BS, 1)); // full block: upload starts and waits at the gate
    const freeing = svc.free(ino);
    release();
    await freeing;
    assert.equal(wal.usedBytes, 0);
    assert.equal(svc.hasDirty(ino), false);
    await svc.close();
  });

  it('does not resurrect data past a truncation when an upload fails', async () => {
    const { meta, store, svc, hold, release } = gated();
    const ino = await mkfile(meta);
    hold();
    store.failPuts = 2;
    await svc.write(ino, 0, Buffer.alloc(2 * BS, 7));
    const cut = svc.truncate(ino, 0);
    release();
    await cut;
    await svc.flush(ino).catch(() => undefined);
    await svc.flush(ino);
    assert.deepEqual(await svc.read(ino, 0, 2 * BS, 2 * BS), Buffer.alloc(2 * BS));
    await svc.close();
  });

  it('reports a failed upload to every COMMIT that waited for it, and succeeds on retry', async () => {
    const { meta, store, svc, hold, release } = gated();
    const ino = await mkfile(meta);
    await svc.write(ino, 0, Buffer.from('data'));
    hold();
    store.failPuts = 1;
    const a = svc.flush(ino);
    await tick();
    const b = svc.flush(ino);
    release();
    const results = await Promise.allSettled([a, b]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['rejected', 'rejected'],
    );
    await svc.flush(ino);
    assert.equal((await svc.read(ino, 0, 4, 4)).toString(), 'data');
    assert.equal((await meta.getBlocks(ino, 0, 1)).length, 1);
    await svc.close();
  });
});

describe('replay with several servers', () => {
  /**
   * A replay under lease token 5 whose store reports the file's token as it was when the replay read
   * it (0): before another server stored or cut the file under a newer lease (the test does that).
   */
  async function overtaken() {
    class Overtaken extends MemoryMetadataStore {
      fileToken(): Promise<number> {
        return Promise.resolve(0);
      }
    }
    const meta = new Overtaken();
    const wal = new MemoryWal(1 << 20);
    const leases = { token: () => 5, holds: () => true, adopt: () => Promise.resolve() };
    const svc = service(new MemoryBlockStore(), meta, wal, { leases });
    return { meta, wal, svc, ino: await mkfile(meta) };
  }

  it('drops a truncate that another server overtook after the replay read the file, instead of failing the start', async () => {
    const { meta, wal, svc, ino } = await overtaken();
    await meta.setAttr(ino, { size: 100 });
    await meta.dropBlocks(ino, 1, 9); // the other server's fence (its cut past the first block)
    const { seg } = (wal as Wal).appendTruncate(1, ino, 0, 5);
    const report = await svc.replay([{ type: RECORD_TRUNCATE, share: 1, inode: ino, offset: 0, length: 0, seg, pos: 0, token: 5 }]);
    assert.equal(report.dropped, 1);
    assert.equal((await meta.getInode(ino))!.size, 100, "the other server's size stays");
    await svc.close();
  });
  it('leaves the size another server stored after the replay read the file to that server', async () => {
    const { meta, wal, svc, ino } = await overtaken();
    // The other server truncated the file to 100 under its lease (token 9) after this one wrote
    // 200 bytes under token 5 and crashed.
    await meta.setAttr(ino, { size: 100, leaseToken: 9 });
    const data = Buffer.alloc(200, 3);
    const { seg, pos } = (wal as Wal).appendWrite(1, ino, 0, data, 5);
    await svc.replay([{ type: RECORD_WRITE, share: 1, inode: ino, offset: 0, length: data.length, seg, pos, token: 5 }]);
    assert.equal((await meta.getInode(ino))!.size, 100, "the other server's size stays");
    await svc.close();
  });
});

describe('block garbage collection', () => {
  it('deletes unreferenced versions and blocks of files deleted before their blocks were freed, nothing else', async () => {
    const { meta, store, svc } = await setup();
    const live = await mkfile(meta);
    await svc.write(live, 0, Buffer.alloc(BS, 1));
    await svc.flush(live);
    const [ref] = await meta.getBlocks(live, 0, 1);
    // A version uploaded but never switched in (a crash between the two), and a foreign object.
    await store.put(`t/${live}/0-9-deadbeef`, Buffer.alloc(10));
    await store.put('t/not-a-block-key', Buffer.alloc(10));
    // A file whose entry was removed but whose blocks were never freed (a crash in between).
    const root = await meta.ensureRoot(1, dirInit({ mode: 0o777 }));
    const dead = (await meta.create(root.id, Buffer.from('dead'), fileInit(), { sec: 1, nsec: 0 })).id;
    await svc.write(dead, 0, Buffer.alloc(2 * BS, 2));
    await svc.flush(dead);
    await meta.remove(root.id, Buffer.from('dead'), false, { sec: 2, nsec: 0 });
    assert.equal((await meta.getBlocks(dead, 0, 10)).length, 2);

    assert.equal((await svc.collectGarbage(60_000)).deleted, 0, 'young objects are left alone');
    const r = await svc.collectGarbage(0);
    assert.equal(r.deadFiles, 1);
    assert.equal(r.deleted, 3, 'the stray version and the two blocks of the dead file');
    assert.equal((await meta.getBlocks(dead, 0, 10)).length, 0, 'the dead file rows are gone');
    assert.notEqual(await store.get(ref!.key), null, 'the live block stays');
    assert.notEqual(await store.get('t/not-a-block-key'), null, 'keys that are not ours stay');
    assert.equal(store.size, 2);
    await svc.close();
  });

  it('frees a removed file in the background: bounded, finished by close(), left to garbage collection by a crash', async () => {
    const { meta, store, svc } = await setup();
    // Deletes of objects wait until released: the frees stay running.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const storeDelete = store.delete.bind(store);
    store.delete = async (key: string) => {
      await gate;
      return storeDelete(key);
    };
    const root = await meta.ensureRoot(1, dirInit({ mode: 0o777 }));
    const files: number[] = [];
    for (let i = 0; i <= MAX_BACKGROUND_FREES; i++) {
      const id = (await meta.create(root.id, Buffer.from(`bg${i}`), fileInit(), { sec: 1, nsec: 0 })).id;
      await svc.write(id, 0, Buffer.alloc(BS, i + 1));
      await svc.flush(id);
      await meta.remove(root.id, Buffer.from(`bg${i}`), false, { sec: 2, nsec: 0 });
      files.push(id);
    }
    assert.equal(store.size, MAX_BACKGROUND_FREES + 1);
    // Up to the bound, each call returns while its free still runs.
    for (const id of files.slice(0, MAX_BACKGROUND_FREES)) await svc.freeInBackground(id);
    assert.equal(store.size, MAX_BACKGROUND_FREES + 1, 'nothing deleted yet');
    // One more waits for room.
    let started = false;
    const last = svc.freeInBackground(files[MAX_BACKGROUND_FREES]!).then(() => (started = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(started, false, 'beyond the bound, the caller waits');
    release();
    await last;
    await svc.close();
    assert.equal(store.size, 0, 'close() waited for every background free');
    for (const id of files) assert.equal((await meta.getBlocks(id, 0, 10)).length, 0);

    // A crash before the free: a restarted service's garbage collection frees the blocks.
    const again = await setup();
    const id = (
      await again.meta.create((await again.meta.ensureRoot(1, dirInit({ mode: 0o777 }))).id, Buffer.from('x'), fileInit(), {
        sec: 1,
        nsec: 0,
      })
    ).id;
    await again.svc.write(id, 0, Buffer.alloc(BS, 9));
    await again.svc.flush(id);
    await again.meta.remove((await again.meta.ensureRoot(1, dirInit({ mode: 0o777 }))).id, Buffer.from('x'), false, { sec: 2, nsec: 0 });
    await again.svc.close(); // the process ends without freeing
    const restarted = service(again.store, again.meta, new MemoryWal(BS * 4), { cache: new BlockCache(BS) });
    const r = await restarted.collectGarbage(0);
    assert.equal(r.deadFiles, 1);
    assert.equal(again.store.size, 0, 'the leaked block is found and deleted');
    await restarted.close();
  });

  it('never deletes an upload whose object is stored but whose row is not switched yet', async () => {
    /** Stores the object, then holds put() open: the window between the upload and the row switch. */
    class SlowSwitch extends MemoryBlockStore {
      stored!: () => void;
      readonly storedP = new Promise<void>((r) => (this.stored = r));
      go!: () => void;
      readonly gate = new Promise<void>((r) => (this.go = r));
      override async put(key: string, data: Buffer): Promise<void> {
        await super.put(key, data);
        this.stored();
        await this.gate;
      }
    }
    const meta = new MemoryMetadataStore();
    const store = new SlowSwitch();
    const svc = service(store, meta, new MemoryWal(64 * BS));
    const ino = await mkfile(meta);
    await svc.write(ino, 0, Buffer.alloc(BS, 5)); // a full block: its upload starts at once
    await store.storedP;
    const r = await svc.collectGarbage(0);
    assert.deepEqual({ scanned: r.scanned, deleted: r.deleted }, { scanned: 1, deleted: 0 });
    store.go();
    await svc.flush(ino);
    assert.deepEqual(await store.get((await meta.getBlocks(ino, 0, 1))[0]!.key), Buffer.alloc(BS, 5));
    await svc.close();
  });
});

describe('transfer bounds', () => {
  it('keeps at most the configured number of uploads in flight', async () => {
    class Counting extends MemoryBlockStore {
      now = 0;
      max = 0;
      override async put(key: string, data: Buffer): Promise<void> {
        this.now++;
        this.max = Math.max(this.max, this.now);
        await new Promise((r) => setTimeout(r, 2));
        await super.put(key, data);
        this.now--;
      }
    }
    const meta = new MemoryMetadataStore();
    const store = new Counting();
    const svc = service(store, meta, new MemoryWal(1024 * BS), { uploads: pLimit(3) });
    const files = await Promise.all([mkfile(meta), mkfile(meta), mkfile(meta)]);
    for (let i = 0; i < 20; i++) for (const f of files) await svc.write(f, i * BS, Buffer.alloc(BS, i)); // full blocks: uploads start at once
    for (const f of files) await svc.flush(f);
    assert.equal(store.size, 60);
    assert.ok(store.max <= 3 && store.max >= 2, `at most 3 uploads at once (saw ${store.max})`);
    await svc.close();
  });
});

describe('uploads giving way to bursts of writes (busyDefer)', () => {
  /** Records which files' blocks were stored, in order, and when; `failFirst` puts fail first. */
  class Recording extends MemoryBlockStore {
    readonly stored: number[] = [];
    readonly at: number[] = [];
    failFirst = 0;
    override async put(key: string, data: Buffer): Promise<void> {
      if (this.failFirst > 0) {
        this.failFirst--;
        throw new Error('store unreachable');
      }
      await super.put(key, data);
      this.stored.push(Number(key.split('/')[1]));
      this.at.push(Date.now());
    }
  }

  /** A service over a recording store, its idle flush at 100 ms; `busyDefer` undefined: none. */
  function deferring(busyDefer: { maxMs: number; quietMs: number; maxBlocks: number } | undefined, walBytes = 1024 * BS) {
    const meta = new MemoryMetadataStore();
    const store = new Recording();
    const wal = new MemoryWal(walBytes);
    const svc = service(store, meta, wal, { idleFlushMs: 100, ...(busyDefer ? { busyDefer } : {}) });
    return { meta, store, svc, wal };
  }
  const LONG = 600_000;

  it('keeps partial blocks due for upload back while writes come, the newest maxBlocks of them, syncing the WAL; complete blocks go at once', async () => {
    const { meta, store, svc, wal } = deferring({ maxMs: LONG, quietMs: LONG, maxBlocks: 2 });
    let syncs = 0;
    const sync = wal.sync.bind(wal);
    wal.sync = () => {
      syncs++;
      return sync();
    };
    try {
      const files = [];
      for (let i = 0; i < 5; i++) {
        const f = await mkfile(meta);
        files.push(f);
        await svc.write(f, 0, Buffer.alloc(30, i + 1));
      }
      const full = await mkfile(meta);
      await svc.write(full, 0, Buffer.alloc(BS, 9));
      // Due after 100 ms; the ticks find the share busy (a write within quietMs).
      await until(
        () => store.stored.length >= 4 && svc.deferredBlocks === 2,
        WAIT_MS,
        'the oldest three small files and the full block stored',
      );
      assert.deepEqual([...store.stored].sort(), [...files.slice(0, 3), full].sort(), 'the oldest small files go, the newest two wait');
      assert.equal(store.stored[0], full, 'the complete block was stored at once, before any small file was due');
      assert.ok(syncs > 0, 'the WAL is synced while blocks wait');
      for (const f of files.slice(3))
        assert.deepEqual(await svc.read(f, 0, 30, 30), Buffer.alloc(30, files.indexOf(f) + 1), 'kept data reads back');
      // An explicit flush does not wait.
      await svc.flush(files[4]!);
      assert.ok(store.stored.includes(files[4]!));
      assert.ok(!store.stored.includes(files[3]!), 'the other one still waits');
    } finally {
      await svc.close();
    }
    assert.equal(store.stored.length, 6, 'close stores what waited');
  });

  it('beyond maxBlocks the blocks first written longest ago go, whatever file they are in', async () => {
    const { meta, store, svc } = deferring({ maxMs: LONG, quietMs: LONG, maxBlocks: 1 });
    /** Until the clock moves on, so that the next write's block is younger. */
    const tick = async () => {
      const t = Date.now();
      while (Date.now() === t) await new Promise((r) => setTimeout(r, 1));
    };
    try {
      const x = await mkfile(meta);
      const y = await mkfile(meta);
      await svc.write(x, 0, Buffer.alloc(30, 1));
      await tick();
      await svc.write(y, 0, Buffer.alloc(30, 2));
      await tick();
      // A second block of x, younger than y's though x's file came first.
      await svc.write(x, BS, Buffer.alloc(30, 3));
      await until(() => store.stored.length === 2 && svc.deferredBlocks === 1, WAIT_MS, 'two of the three stored');
      assert.deepEqual([...store.stored].sort(), [x, y].sort(), "x's first block and y's go; x's second, the youngest, waits");
    } finally {
      await svc.close();
    }
  });

  it('a block waits no longer than maxMs after its first write, nor past quietMs without writes', async () => {
    const aged = deferring({ maxMs: 1_500, quietMs: LONG, maxBlocks: 100 });
    const quiet = deferring({ maxMs: LONG, quietMs: 1_000, maxBlocks: 100 });
    try {
      const a = await mkfile(aged.meta);
      const q = await mkfile(quiet.meta);
      const t0 = Date.now();
      await aged.svc.write(a, 0, Buffer.alloc(30, 1));
      await quiet.svc.write(q, 0, Buffer.alloc(30, 2));
      await until(() => aged.store.stored.length === 1 && quiet.store.stored.length === 1, WAIT_MS, 'both stored');
      // Lower bounds only: a slow machine makes them later, never earlier.
      assert.ok(aged.store.at[0]! - t0 >= 1_500, `stored ${aged.store.at[0]! - t0} ms after its write`);
      assert.ok(quiet.store.at[0]! - t0 >= 1_000, `stored ${quiet.store.at[0]! - t0} ms after the last write`);
      assert.ok(aged.svc.deferredBlocks === 0 && quiet.svc.deferredBlocks === 0);
    } finally {
      await aged.svc.close();
      await quiet.svc.close();
    }
  });

  it('nothing waits once the WAL holds a quarter of its limit, nor a block whose upload failed', async () => {
    // 4 KiB of WAL: three partial blocks of 400 bytes are past a quarter of it.
    const filling = deferring({ maxMs: LONG, quietMs: LONG, maxBlocks: 100 }, 4 * BS);
    const failing = deferring({ maxMs: LONG, quietMs: LONG, maxBlocks: 100 });
    try {
      const fs = [];
      for (let i = 0; i < 3; i++) {
        const f = await mkfile(filling.meta);
        fs.push(f);
        await filling.svc.write(f, 0, Buffer.alloc(400, i + 1));
      }
      failing.store.failFirst = 1;
      const g = await mkfile(failing.meta);
      await failing.svc.write(g, 0, Buffer.alloc(30, 7));
      await assert.rejects(failing.svc.flush(g), /store unreachable/);
      // Retried after its backoff (1 s) by the idle flush, busy or not.
      await until(() => filling.store.stored.length === 3 && failing.store.stored.length === 1, WAIT_MS, 'all stored');
      assert.equal(filling.svc.deferredBlocks, 0);
      assert.equal(failing.svc.deferredBlocks, 0);
    } finally {
      await filling.svc.close();
      await failing.svc.close();
    }
  });

  it("with the local store's policy, an untar's first files wait out a burst of a few minutes", async () => {
    // A 10,000-file untar through the kernel client took 96 s (VM, 2 cores): with a limit of
    // 60 s, the uploads of its first files ran in its last third, each costing more CPU and
    // fsyncs than the file's own calls. The clock and the idle-flush ticks are mocked: a file
    // written every half second for 150 s, the default idle flush (5 s).
    mock.timers.enable({ apis: ['Date', 'setInterval'], now: 1_000_000 });
    const meta = new MemoryMetadataStore();
    const store = new Recording();
    const svc = service(store, meta, new MemoryWal(1024 * BS), { busyDefer: LOCAL_BUSY_DEFER });
    /** Lets the uploads that a tick started run (their store is in memory). */
    const settle = async () => {
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    };
    try {
      const first = await mkfile(meta);
      await svc.write(first, 0, Buffer.alloc(30, 1));
      for (let t = 1; t <= 300; t++) {
        mock.timers.tick(500);
        await settle();
        await svc.write(await mkfile(meta), 0, Buffer.alloc(30, 2));
      }
      assert.deepEqual(store.stored, [], 'nothing uploaded while the writes kept coming');
      assert.ok(svc.deferredBlocks > 250, `${svc.deferredBlocks} blocks waiting`);
      // The burst is over: a tick past quietMs without writes starts the uploads.
      mock.timers.tick(LOCAL_BUSY_DEFER.quietMs + 5_000);
      await until(() => store.stored.length === 301, WAIT_MS, 'every file stored once the writes stopped');
      assert.equal(store.stored[0], first);
    } finally {
      await svc.close();
      mock.timers.reset();
    }
  });

  it('a file removed while its upload waits is never uploaded', async () => {
    const { meta, store, svc } = deferring({ maxMs: LONG, quietMs: LONG, maxBlocks: 100 });
    try {
      const f = await mkfile(meta);
      await svc.write(f, 0, Buffer.alloc(30, 1));
      await until(() => svc.deferredBlocks === 1, WAIT_MS, 'the block kept back');
      await svc.free(f);
      await until(() => svc.deferredBlocks === 0, WAIT_MS, 'a tick that finds nothing to keep back');
      assert.equal(store.stored.length, 0);
    } finally {
      await svc.close();
    }
    assert.equal(store.stored.length, 0, 'close stores no data of the removed file');
  });

  it('without busyDefer a partial block is stored once due, writes or not', async () => {
    const { meta, store, svc } = deferring(undefined);
    try {
      const f = await mkfile(meta);
      const g = await mkfile(meta);
      await svc.write(f, 0, Buffer.alloc(30, 1));
      // Writes keep coming (to another file, every 5 ms) until f is stored.
      const deadline = Date.now() + 30_000;
      for (let i = 1; !store.stored.includes(f) && Date.now() < deadline; i++) {
        await svc.write(g, 0, Buffer.alloc(30, (i % 200) + 1));
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.ok(store.stored.includes(f));
      assert.equal(svc.deferredBlocks, 0);
    } finally {
      await svc.close();
    }
  });
});
