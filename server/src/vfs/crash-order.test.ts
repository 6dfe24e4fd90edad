// The order in which the data path and the metadata store change, where a crash in between would
// otherwise leave a file that neither the old nor the new state explains: a WRITE racing a
// truncate (sizes and data must change in the same order), and the WAL records of a removed or
// truncated file, which must outlive a metadata change that is not durable yet (a store under
// `sync: commit` answers before its fsync, and a crash may undo the change).
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it, mock } from 'node:test';
import pino, { type Logger } from 'pino';
import { BlockCache } from '../blocks/cache.js';
import { MemoryBlockStore } from '../blocks/memory.js';
import { BlockService } from '../blocks/service.js';
import { FileWal, type WalHolder, type WalSegment } from '../blocks/wal.js';
import { CachedMetadataStore } from '../meta/cached.js';
import { MemoryMetadataStore } from '../meta/memory.js';
import { createEmbeddedMetadataStore, SQLITE_FILE } from '../meta/sql/index.js';
import type { MetadataStore } from '../meta/store.js';
import { TEST_SHARE } from '../testing/memory-server.js';
import { errorMessage } from '../error-message.js';
import { until } from '../../../test/helpers/hostile.js';
import { VfsError } from './errors.js';
import { CreateMode, FileService } from './service.js';
import { compareTimespec } from './types.js';

const root = { uid: 0, gid: 0, gids: [] };
const BS = 64 * 1024;
/** The longest a test waits for a condition (a bound for a stuck test, not a timing). */
const WAIT_MS = 30_000;
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A memory store whose flushAttrs (what makes metadata durable) waits while `held` is set. */
class GatedStore extends MemoryMetadataStore {
  held: Promise<void> | null = null;
  flushes = 0;
  /** Flushes that fail (the store cannot sync) before they work again. */
  failing = 0;
  async flushAttrs(): Promise<void> {
    this.flushes++;
    await this.held;
    if (this.failing > 0) {
      this.failing--;
      throw new Error('database unreachable');
    }
  }
}

/** A memory store whose dropBlocks, and setAttr calls that change a size, fail while counted down (an outage). */
class FailingCuts extends MemoryMetadataStore {
  failDrops = 0;
  failSizes = 0;
  drops = 0;
  /** What a failing dropBlocks throws. */
  dropError: Error = new Error('database unreachable');
  /** Set: the store failed for good (MetadataStore.failure). */
  broken: Error | null = null;
  failure(): Error | null {
    return this.broken;
  }
  /** While set, dropBlocks waits for it first (a store slow to answer). */
  dropGate: Promise<void> | null = null;
  override async dropBlocks(inodeId: number, from: number, token?: number) {
    this.drops++;
    if (this.dropGate) await this.dropGate;
    if (this.failDrops > 0) {
      this.failDrops--;
      throw this.dropError;
    }
    return super.dropBlocks(inodeId, from, token);
  }
  override async setAttr(...args: Parameters<MemoryMetadataStore['setAttr']>) {
    if (args[1].size !== undefined && this.failSizes > 0) {
      this.failSizes--;
      throw new VfsError('JUKEBOX', 'metadata store unavailable: database unreachable');
    }
    return super.setAttr(...args);
  }
}

/**
 * A file of 2 blocks of stored 'A's, then 'B's written over all but its last byte: acknowledged
 * (stable) and, in the second block, not stored yet (a partial block waits). On a server over a
 * FailingCuts store. A truncate must leave 'B's up to the cut and nothing
 * past it (zeros if the file grows again), never the older 'A's there.
 */
async function overwrittenFile(opts: { closeFlushMs?: number } = {}) {
  const dir = walDir();
  const inner = new FailingCuts();
  const blocks = new MemoryBlockStore();
  const a = await boot(dir, inner, blocks, opts);
  const f = (await a.fs.create(a.rootH, Buffer.from('f'), root, CreateMode.UNCHECKED, {}, null)).inode;
  const h = a.fs.handleOf(a.share, f);
  await a.fs.write(h, root, 0, Buffer.alloc(2 * BS, 0x41), false);
  await a.fs.commit(h, root);
  await a.data.flush(f.id);
  await a.fs.write(h, root, 0, Buffer.alloc(2 * BS - 1, 0x42), true);
  return { dir, inner, blocks, a, f, h };
}

/** Where the tests of overwrittenFile cut it: in its first block (the second, not stored yet, goes whole). */
const CUT = 10;

/** The file of overwrittenFile as a truncate to CUT leaves it: 'B's to the cut, then zeros if it grows. */
async function assertCut(srv: Awaited<ReturnType<typeof boot>>, h: Buffer): Promise<void> {
  assert.equal((await srv.fs.getattr(h, root)).inode.size, CUT);
  assert.equal((await srv.fs.read(h, root, 0, 2 * BS)).data.toString(), 'B'.repeat(CUT));
  await srv.fs.setattr(h, root, { size: 2 * BS });
  assert.deepEqual(
    (await srv.fs.read(h, root, CUT, 2 * BS)).data,
    Buffer.alloc(2 * BS - CUT),
    'zeros past the cut, not the older stored bytes',
  );
}

/** A block store whose puts wait while `gate` is set. */
class SlowPuts extends MemoryBlockStore {
  gate: Promise<void> | null = null;
  deletes = 0;
  override async put(key: string, data: Buffer): Promise<void> {
    await this.gate;
    return super.put(key, data);
  }
  override async delete(key: string): Promise<void> {
    this.deletes++;
    return super.delete(key);
  }
}

/** A server on `walDir` over `inner` (which outlives a crash, as a database file would). */
async function boot(
  walDir: string,
  inner: MetadataStore,
  blocks: MemoryBlockStore,
  opts: { closeFlushMs?: number; log?: Logger; maxWriteWaitMs?: number } = {},
  /** How long writes' sizes and times wait in the cache (CachedMetadataStore's default: 1 s). */
  flushDelayMs?: number,
  /** The WAL's size and its segments' (64 and 4 MiB unless given). */
  walSize: { maxBytes: number; segmentBytes: number } = { maxBytes: 64 << 20, segmentBytes: 4 << 20 },
) {
  const meta = new CachedMetadataStore(inner, { ttlMs: Infinity, ...(flushDelayMs === undefined ? {} : { flushDelayMs }) });
  const { wal, records } = await FileWal.open(walDir, walSize);
  const data = new BlockService(blocks, meta, {
    shareId: 0,
    keyPrefix: 't',
    blockSize: BS,
    wal,
    cache: new BlockCache(1 << 20),
    idleFlushMs: 3_600_000,
    ...opts,
  });
  const fs = new FileService();
  const share = await fs.addShare({ ...TEST_SHARE }, meta, data);
  await data.replay(records.filter((r) => r.share === 0));
  wal.tidy();
  const rootH = fs.handleOf(share, await fs.root(share));
  return { fs, share, data, wal, rootH };
}

function walDir(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'dittofs-crash-order-'));
  dirs.push(d);
  return d;
}

/**
 * A file `f` of 100 bytes, written and COMMITted, on a server over a GatedStore whose cache never
 * writes sizes and times behind by itself (the COMMIT's WAL record alone has them).
 */
async function committedFile(opts: { closeFlushMs?: number } = {}) {
  const dir = walDir();
  const inner = new GatedStore();
  const blocks = new MemoryBlockStore();
  const a = await boot(dir, inner, blocks, opts, 3_600_000);
  const f = (await a.fs.create(a.rootH, Buffer.from('f'), root, CreateMode.UNCHECKED, {}, null)).inode;
  const h = a.fs.handleOf(a.share, f);
  await a.fs.write(h, root, 0, Buffer.alloc(100, 0x41), false);
  await a.fs.commit(h, root);
  return { dir, inner, blocks, a, f, h };
}

/** The holders `wal` lets go of from now on. */
function releasesOf(wal: FileWal): WalHolder[] {
  const released: WalHolder[] = [];
  mock.method(wal, 'release', function (this: FileWal, seg: WalSegment, holder: WalHolder) {
    released.push(holder);
    return FileWal.prototype.release.call(this, seg, holder);
  });
  return released;
}

/**
 * The records (not versions of data, which carry ranges) `wal` is asked to hold from now on: a
 * truncate's, or a COMMIT's times. A test that starts one truncate finds its record here alone,
 * whatever happens meanwhile to records held before (a COMMIT's times, let go once the store has
 * them durably).
 */
function recordsHeldBy(wal: FileWal): WalHolder[] {
  const held: WalHolder[] = [];
  mock.method(wal, 'hold', function (this: FileWal, seg: WalSegment, holder: WalHolder) {
    if (!('ranges' in holder)) held.push(holder);
    return FileWal.prototype.hold.call(this, seg, holder);
  });
  return held;
}

/** Whether a COMMIT's times record was let go: versions of data are BlockVersions (with ranges), its holder is not. */
const timesReleasedIn = (released: readonly WalHolder[]): boolean => released.some((x) => !('ranges' in x));

/** Holds `store`'s flushes until `open` is called; `flushes`: how many it had seen before. */
function hold(store: GatedStore): { open: () => void; flushes: number } {
  let open!: () => void;
  store.held = new Promise((r) => (open = r));
  return { open, flushes: store.flushes };
}

/** Checks that nothing of `released` is let go until `open` makes the removal durable, then that it is. */
async function heldUntilDurable(released: WalHolder[], open: () => void): Promise<void> {
  for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
  assert.equal(released.length, 0, 'nothing let go while the removal may still be undone');
  open();
  await until(() => released.length > 0, WAIT_MS, 'let go once the removal is durable');
}

/** Settles once `check` holds, polled every few milliseconds (bounded: fails after 30 s). */
/** A block store whose puts fail while `down` is set (an S3 outage). */
class Outage extends MemoryBlockStore {
  down = false;
  override async put(key: string, data: Buffer): Promise<void> {
    if (this.down) throw new Error('block store unreachable');
    return super.put(key, data);
  }
}

describe('crash order of data and metadata', () => {
  it("a file created after a power loss is not given a lost file's id, whose WAL records a later start would replay into it", async () => {
    // SQLite under `sync: commit`: a CREATE is answered before its fsync, and a power loss takes its
    // step of AUTOINCREMENT's count with it. That file's WAL records (made durable by another file's
    // fsync) are dropped at the next start but stay in their segment, held by data the block store
    // cannot take yet; the start after that reads them again.
    const dir = walDir();
    const dbA = walDir();
    const dbB = walDir();
    const blocks = new Outage();
    const innerA = createEmbeddedMetadataStore({ path: dbA, engine: 'sqlite' });
    await innerA.open();
    const a = await boot(dir, innerA, blocks);
    const k = a.fs.handleOf(a.share, (await a.fs.create(a.rootH, Buffer.from('k'), root, CreateMode.UNCHECKED, {}, null)).inode);
    await a.fs.write(k, root, 0, Buffer.from('kept'), false);
    await a.fs.commit(k, root);
    // What a power loss from now on leaves of the database: its files as this COMMIT synced them
    // (copied without yielding: nothing writes to them meanwhile).
    for (const f of readdirSync(dbA)) if (f.startsWith(SQLITE_FILE)) copyFileSync(path.join(dbA, f), path.join(dbB, f));
    const x = (await a.fs.create(a.rootH, Buffer.from('x'), root, CreateMode.UNCHECKED, {}, null)).inode;
    await a.fs.write(a.fs.handleOf(a.share, x), root, 100, Buffer.from('STALE-DATA'), false);
    // Another file's truncate syncs the WAL (x's record with it), not the database.
    await a.fs.setattr(k, root, { size: 4 });
    // The power loss, then a start while the block store is down (k's data keeps the segment).
    blocks.down = true;
    const innerB = createEmbeddedMetadataStore({ path: dbB, engine: 'sqlite' });
    await innerB.open();
    try {
      assert.equal(await innerB.getInode(x.id), null, "x's create was lost");
      const b = await boot(dir, innerB, blocks);
      const y = (await b.fs.create(b.rootH, Buffer.from('y'), root, CreateMode.UNCHECKED, {}, null)).inode;
      assert.ok(y.id > x.id, `y (${y.id}) is not given x's id (${x.id}) or one before it`);
      const yh = b.fs.handleOf(b.share, y);
      await b.fs.write(yh, root, 0, Buffer.from('GOOD'), false);
      await b.fs.commit(yh, root);
      // A crash, and a start with the block store back: y is what was committed, nothing of x's.
      blocks.down = false;
      const c = await boot(dir, innerB, blocks);
      const after = (await c.fs.getattr(yh, root)).inode;
      assert.equal(after.size, 4);
      assert.equal((await c.fs.read(yh, root, 0, 200)).data.toString(), 'GOOD');
    } finally {
      await innerB.close();
      await innerA.close();
    }
  });

  it('a WRITE racing a truncate changes the size in the order its data lands, before and after a crash', async () => {
    const dir = walDir();
    const inner = new MemoryMetadataStore();
    const blocks = new MemoryBlockStore();
    const a = await boot(dir, inner, blocks);
    const f = (await a.fs.create(a.rootH, Buffer.from('f'), root, CreateMode.UNCHECKED, {}, null)).inode;
    const h = a.fs.handleOf(a.share, f);
    await a.fs.write(h, root, 0, Buffer.alloc(5000, 0x41), true);
    // The truncate is logged first (its record waits for its fsync); the WRITE comes meanwhile.
    const cut = a.fs.setattr(h, root, { size: 0 });
    await new Promise((r) => setImmediate(r));
    const write = a.fs.write(h, root, 0, Buffer.alloc(100, 0x42), false);
    await Promise.all([cut, write]);
    await a.fs.commit(h, root);
    // The data says "cut, then write": so must the size.
    const now = (await a.fs.getattr(h, root)).inode;
    const read = (await a.fs.read(h, root, 0, 200)).data;
    assert.equal(now.size, 100, 'the write landed after the truncate: its size stands');
    assert.deepEqual(read, Buffer.alloc(100, 0x42));
    // A later write past the end leaves zeros between, not the cut bytes.
    await a.fs.write(h, root, 150, Buffer.alloc(10, 0x43), true);
    const grown = (await a.fs.read(h, root, 0, 200)).data;
    assert.deepEqual(grown, Buffer.concat([Buffer.alloc(100, 0x42), Buffer.alloc(50), Buffer.alloc(10, 0x43)]));
    // A crash now (nothing closed): the file comes back as it was.
    const b = await boot(dir, inner, blocks);
    assert.equal((await b.fs.getattr(h, root)).inode.size, 160);
    assert.deepEqual((await b.fs.read(h, root, 0, 200)).data, grown);
  });

  it('a WRITE refused for want of WAL room (the block store not keeping up) leaves the size as the acknowledged writes left it', async () => {
    const inner = new MemoryMetadataStore();
    const blocks = new SlowPuts();
    let unstall!: () => void;
    blocks.gate = new Promise((r) => (unstall = r));
    // A WAL of 8 blocks whose uploads never finish: writes wait for room 200 ms, then JUKEBOX.
    const a = await boot(walDir(), inner, blocks, { maxWriteWaitMs: 200 }, undefined, { maxBytes: 8 * BS, segmentBytes: 2 * BS });
    const f = (await a.fs.create(a.rootH, Buffer.from('f'), root, CreateMode.UNCHECKED, {}, null)).inode;
    const h = a.fs.handleOf(a.share, f);
    let acked = 0;
    let refused: unknown = null;
    for (let i = 0; i < 64 && refused === null; i++) {
      try {
        await a.fs.write(h, root, acked, Buffer.alloc(BS, 0x41), false);
        acked += BS;
      } catch (e) {
        refused = e;
      }
    }
    assert.ok(refused !== null, `a write was refused once the WAL was full (${acked / BS} blocks taken)`);
    assert.equal((refused as { errno?: unknown }).errno, 'JUKEBOX', errorMessage(refused));
    // The client is told to send it again: until it does, the file ends where its data ends (not
    // over a block of zeros the refused write never logged), here and in the store.
    assert.equal((await a.fs.getattr(h, root)).inode.size, acked);
    await a.share.meta.flushAttrs?.(f.id);
    assert.equal((await inner.getInode(f.id))?.size, acked);
    // The block store catches up: the write sent again is taken.
    unstall();
    await a.fs.write(h, root, acked, Buffer.alloc(BS, 0x42), true);
    assert.equal((await a.fs.getattr(h, root)).inode.size, acked + BS);
    await a.data.close();
  });

  it('a COMMIT changes nothing in the metadata store: the size and times it covers come back from the log after a crash', async () => {
    const dir = walDir();
    const inner = new GatedStore();
    const blocks = new MemoryBlockStore();
    // Sizes and times of writes wait in the cache for the whole test: only the log has them.
    const a = await boot(dir, inner, blocks, {}, 3_600_000);
    const f = (await a.fs.create(a.rootH, Buffer.from('f'), root, CreateMode.UNCHECKED, {}, null)).inode;
    const h = a.fs.handleOf(a.share, f);
    await a.fs.write(h, root, 0, Buffer.alloc(3000, 0x41), false);
    await a.fs.write(h, root, 3000, Buffer.alloc(500, 0x42), false);
    const flushes = inner.flushes;
    await a.fs.commit(h, root);
    const committed = (await a.fs.getattr(h, root)).inode;
    assert.equal(committed.size, 3500);
    const stored = (await inner.getInode(f.id))!;
    assert.equal(stored.size, 0, 'the COMMIT wrote no size to the store');
    assert.deepEqual(stored.mtime, f.mtime, 'nor times');
    assert.equal(inner.flushes, flushes + 1, 'it made durable only what the store had answered (one flush, no change)');
    // A write after the COMMIT is not covered by it: its size may or may not survive.
    await a.fs.write(h, root, 3500, Buffer.alloc(100, 0x43), false);
    // A crash (nothing closed, nothing flushed): the committed size and times come back exactly.
    const b = await boot(dir, inner, blocks);
    const back = (await b.fs.getattr(h, root)).inode;
    assert.ok(back.size === 3500 || back.size === 3600, `size ${back.size}`);
    assert.ok(compareTimespec(back.mtime, committed.mtime) >= 0, 'mtime');
    assert.deepEqual((await b.fs.read(h, root, 0, 3500)).data, Buffer.concat([Buffer.alloc(3000, 0x41), Buffer.alloc(500, 0x42)]));
    // With only committed writes in the log, the times are exactly the committed ones.
    const dir2 = walDir();
    const inner2 = new GatedStore();
    const c = await boot(dir2, inner2, blocks, {}, 3_600_000);
    const g = (await c.fs.create(c.rootH, Buffer.from('g'), root, CreateMode.UNCHECKED, {}, null)).inode;
    const gh = c.fs.handleOf(c.share, g);
    await c.fs.write(gh, root, 0, Buffer.alloc(700, 0x44), true); // FILE_SYNC: the same path
    const synced = (await c.fs.getattr(gh, root)).inode;
    assert.equal((await inner2.getInode(g.id))!.size, 0, 'the stable write wrote no size to the store');
    const d = await boot(dir2, inner2, blocks);
    const again = (await d.fs.getattr(gh, root)).inode;
    assert.deepEqual([again.size, again.mtime, again.ctime], [700, synced.mtime, synced.ctime]);
  });

  it('a change the store has after a COMMIT is not undone by the times the COMMIT logged', async () => {
    const { dir, inner, blocks, a, f, h } = await committedFile();
    // touch -d: an explicit mtime, older than the write's; it reaches the store (with a new ctime).
    const set = (await a.fs.setattr(h, root, { mtime: { sec: 1_000_000, nsec: 0 } })).after;
    assert.deepEqual((await inner.getInode(f.id))!.mtime, { sec: 1_000_000, nsec: 0 });
    const b = await boot(dir, inner, blocks);
    const back = (await b.fs.getattr(h, root)).inode;
    assert.deepEqual([back.size, back.mtime, back.ctime], [100, set.mtime, set.ctime]);
  });

  it('an older ChangeTime an SMB client sets (and FLUSHes) after a COMMIT is not undone by the times the COMMIT logged', async () => {
    const { dir, inner, blocks, a, h } = await committedFile();
    // FileBasicInformation with LastWriteTime and ChangeTime from before the write (a copy tool
    // restoring times, or a ChangeTime held by an open), then FLUSH: acknowledged as stable.
    const old = { sec: 1_000_000, nsec: 0 };
    const set = (await a.fs.setattr(h, root, { mtime: old, ctime: old })).after;
    await a.fs.commit(h, root);
    const b = await boot(dir, inner, blocks);
    const back = (await b.fs.getattr(h, root)).inode;
    assert.deepEqual([back.size, back.mtime, back.ctime], [100, set.mtime, set.ctime]);
    assert.deepEqual(back.ctime, old);
  });

  it("a removed share's records held for its metadata go once its data is marked stored, even if the store never synced", async () => {
    const { inner, a } = await committedFile({ closeFlushMs: 50 });
    await a.data.flushAll();
    const released = releasesOf(a.wal);
    hold(inner); // the metadata store stops answering syncs
    await a.data.close(); // waits 50 ms for them, then gives up
    assert.ok(!timesReleasedIn(released), 'held: the store never made the size and times durable');
    // What shares.ts does once the share's stored-marker is in the log: replay skips its records.
    a.data.releaseForgotten();
    assert.ok(timesReleasedIn(released), 'let go');
  });

  it('the size and times a COMMIT logged hold the log until the metadata store has them durably', async () => {
    const inner = new GatedStore();
    // Nothing on a timer: the cache never writes the size behind, and the record asks for it to be
    // made durable only when the log needs room (as when it is full).
    const a = await boot(walDir(), inner, new MemoryBlockStore(), {}, 3_600_000);
    const f = (await a.fs.create(a.rootH, Buffer.from('f'), root, CreateMode.UNCHECKED, {}, null)).inode;
    const h = a.fs.handleOf(a.share, f);
    await a.fs.write(h, root, 0, Buffer.alloc(1000, 0x46), false);
    await a.fs.commit(h, root);
    assert.equal(a.data.timesHeld, 1, 'the COMMIT logged the size and times');
    assert.equal((await inner.getInode(f.id))!.size, 0, 'and left the store alone');
    const released = releasesOf(a.wal);
    const { open, flushes } = hold(inner);
    for (const x of a.wal.oldestHolders()) x.kick();
    await until(() => inner.flushes > flushes, WAIT_MS, 'the record asks for them to be made durable');
    assert.equal((await inner.getInode(f.id))!.size, 1000, 'written to the store first');
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
    assert.ok(!timesReleasedIn(released), 'held while the store may still lose them');
    open();
    await until(() => timesReleasedIn(released), WAIT_MS, 'let go once they are durable');
    await a.data.close();
  });

  it("keeps a removed file's WAL records until the removal is durable", async () => {
    const inner = new GatedStore();
    const a = await boot(walDir(), inner, new MemoryBlockStore());
    const f = (await a.fs.create(a.rootH, Buffer.from('f'), root, CreateMode.UNCHECKED, {}, null)).inode;
    const h = a.fs.handleOf(a.share, f);
    await a.fs.write(h, root, 0, Buffer.alloc(1000, 0x46), false);
    await a.fs.commit(h, root);
    const released = releasesOf(a.wal);
    const { open, flushes } = hold(inner);
    // The REMOVE is answered (it does not wait for the fsync of a `sync: commit` store) ...
    await a.fs.remove(a.rootH, Buffer.from('f'), root, false);
    await until(() => inner.flushes > flushes, WAIT_MS, 'the free asks for the removal to be made durable');
    // ... but the file's data stays in the log until the removal is on disk: a crash before
    // that brings the file back, and its data must replay.
    await heldUntilDurable(released, open);
    await a.data.close();
  });

  it("keeps the WAL records of a removed file's upload in flight until the removal is durable", async () => {
    const inner = new GatedStore();
    const blocks = new SlowPuts();
    const a = await boot(walDir(), inner, blocks);
    let openPuts!: () => void;
    blocks.gate = new Promise((r) => (openPuts = r));
    const f = (await a.fs.create(a.rootH, Buffer.from('f'), root, CreateMode.UNCHECKED, {}, null)).inode;
    const h = a.fs.handleOf(a.share, f);
    // A whole block: its upload starts at once, and waits in the store's put.
    await a.fs.write(h, root, 0, Buffer.alloc(BS, 0x46), false);
    await a.fs.commit(h, root);
    const released = releasesOf(a.wal);
    const { open } = hold(inner);
    await a.fs.remove(a.rootH, Buffer.from('f'), root, false);
    // The upload ends after the REMOVE (its object deleted again): not stored, dropped with the file.
    openPuts();
    await until(() => blocks.deletes > 0, WAIT_MS, 'the upload found its file removed');
    await heldUntilDurable(released, open);
    await a.data.close();
  });

  it('a WRITE whose size update fails while its data is still being logged fails, and the process goes on', async () => {
    const a = await boot(walDir(), new MemoryMetadataStore(), new MemoryBlockStore());
    const f = (await a.fs.create(a.rootH, Buffer.from('f'), root, CreateMode.UNCHECKED, {}, null)).inode;
    const h = a.fs.handleOf(a.share, f);
    const unhandled: unknown[] = [];
    const note = (err: unknown): void => void unhandled.push(err);
    process.on('unhandledRejection', note);
    try {
      mock.method(a.share.meta, 'setAttr', () => Promise.reject(new Error('database unreachable')));
      // The data is admitted (the size update starts), then takes a while to be logged.
      const write = a.data.write.bind(a.data);
      mock.method(a.data, 'write', async (id: number, offset: number, data: Buffer, admitted?: () => void) => {
        await write(id, offset, data, admitted);
        await new Promise((r) => setTimeout(r, 50));
      });
      await assert.rejects(a.fs.write(h, root, 0, Buffer.from('x'), false), /database unreachable/);
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(unhandled, [], 'no unhandled rejection (the server would exit on one)');
    } finally {
      process.off('unhandledRejection', note);
    }
    await a.data.close();
  });

  it('while the store cannot sync, the records of every removed file wait, with one warning, and all go once it can', async () => {
    const inner = new GatedStore();
    const warnings: string[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => void warnings.push((JSON.parse(line) as { msg: string }).msg) });
    const a = await boot(walDir(), inner, new MemoryBlockStore(), { log });
    for (const name of ['f', 'g', 'h']) {
      const f = (await a.fs.create(a.rootH, Buffer.from(name), root, CreateMode.UNCHECKED, {}, null)).inode;
      await a.fs.write(a.fs.handleOf(a.share, f), root, 0, Buffer.alloc(1000, 0x46), false);
    }
    const released = releasesOf(a.wal);
    inner.failing = 4; // the first round fails for the three files, and the retry's first flush
    for (const name of ['f', 'g', 'h']) await a.fs.remove(a.rootH, Buffer.from(name), root, false);
    await until(() => released.length === 3, WAIT_MS, 'every removed file let go once the store syncs again');
    assert.equal(inner.failing, 0);
    assert.deepEqual(warnings, ['the metadata store could not sync; WAL records stay held until it can']);
    await a.data.close();
  });

  it('a stop does not wait for long on a metadata store that never syncs: the records stay for the next start', async () => {
    const inner = new GatedStore();
    const a = await boot(walDir(), inner, new MemoryBlockStore(), { closeFlushMs: 200 });
    const f = (await a.fs.create(a.rootH, Buffer.from('f'), root, CreateMode.UNCHECKED, {}, null)).inode;
    await a.fs.write(a.fs.handleOf(a.share, f), root, 0, Buffer.alloc(1000, 0x46), false);
    const released = releasesOf(a.wal);
    hold(inner); // never opened
    await a.fs.remove(a.rootH, Buffer.from('f'), root, false);
    await until(() => released.length === 0 && inner.flushes > 0, WAIT_MS, 'the free waits for the removal to be made durable');
    // Bounded by closeFlushMs (200 ms); 30 s only tells a stop that waits for good from a slow one.
    let timer: NodeJS.Timeout | undefined;
    const stopped = await Promise.race([
      a.data.close().then(() => true),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 30_000))),
    ]);
    clearTimeout(timer);
    assert.ok(stopped, 'the stop waited for the metadata store for good');
    assert.equal(released.length, 0, 'kept: replayed at the next start, where the file is gone or whole');
  });

  it('a truncate whose block-map change fails once logged waits for the store and finishes: the cut data never comes back', async () => {
    const { inner, a, h } = await overwrittenFile();
    inner.failDrops = 2;
    const after = (await a.fs.setattr(h, root, { size: CUT })).after;
    assert.equal(inner.failDrops, 0, 'tried again until the store took it');
    assert.equal(after.size, CUT);
    await assertCut(a, h);
    await a.data.close();
  });

  it('while a logged truncate waits for its block-map change, reads past the cut see zeros, never the older stored bytes', async () => {
    const { inner, a, f, h } = await overwrittenFile();
    inner.failDrops = Number.MAX_SAFE_INTEGER;
    const setattr = a.fs.setattr(h, root, { size: CUT });
    await until(() => inner.drops > 1, WAIT_MS, 'the truncate tried its block-map change again');
    // The size is not stored yet: the whole old length reads, 'B's to the cut and zeros after.
    const expected = Buffer.concat([Buffer.alloc(CUT, 0x42), Buffer.alloc(2 * BS - CUT)]);
    assert.deepEqual((await a.fs.read(h, root, 0, 2 * BS)).data, expected);
    assert.deepEqual((await a.fs.read(h, root, BS, BS)).data, Buffer.alloc(BS), 'a read wholly past the cut');
    assert.deepEqual(await a.data.dataRanges(f.id, 0, 2 * BS, 10), [[0, CUT]], 'no data reported past the cut');
    inner.failDrops = 0;
    assert.equal((await setattr).after.size, CUT);
    await assertCut(a, h);
    await a.data.close();
  });

  it("while a logged truncate waits for the store, the file's writes answer JUKEBOX at once rather than pile up; other files' writes go on", async () => {
    const { inner, a, h } = await overwrittenFile();
    const g = (await a.fs.create(a.rootH, Buffer.from('g'), root, CreateMode.UNCHECKED, {}, null)).inode;
    const gh = a.fs.handleOf(a.share, g);
    inner.failDrops = Number.MAX_SAFE_INTEGER;
    let answer!: () => void;
    inner.dropGate = new Promise<void>((resolve) => (answer = resolve));
    const setattr = a.fs.setattr(h, root, { size: CUT });
    await until(() => inner.drops > 0, WAIT_MS, 'the truncate reached the block map');
    // Sent while the truncate runs, before it is known to wait for the store: it waits at the gate, then is told to come back.
    const early = a.fs.write(h, root, 0, Buffer.from('early'), true);
    inner.dropGate = null;
    answer();
    await assert.rejects(early, (e: unknown) => e instanceof VfsError && e.errno === 'JUKEBOX');
    await until(() => inner.drops > 1, WAIT_MS, 'the truncate tried its block-map change again');
    await assert.rejects(a.fs.write(h, root, 0, Buffer.from('late'), true), (e: unknown) => e instanceof VfsError && e.errno === 'JUKEBOX');
    await assert.rejects(a.fs.setattr(h, root, { size: 1 }), (e: unknown) => e instanceof VfsError && e.errno === 'JUKEBOX');
    await a.fs.write(gh, root, 0, Buffer.from('other file'), true);
    assert.equal((await a.fs.read(gh, root, 0, 100)).data.toString(), 'other file');
    inner.failDrops = 0;
    assert.equal((await setattr).after.size, CUT);
    await assertCut(a, h);
    // The store back and the truncate done, the file takes writes again.
    await a.fs.write(h, root, 0, Buffer.from('after'), true);
    assert.equal((await a.fs.read(h, root, 0, 5)).data.toString(), 'after');
    await a.data.close();
  });

  it('a truncate or append of the file sent before its truncate was known to wait for the store is told to come back too', async () => {
    const { inner, a, h } = await overwrittenFile();
    inner.failDrops = Number.MAX_SAFE_INTEGER;
    let answer!: () => void;
    inner.dropGate = new Promise<void>((resolve) => (answer = resolve));
    const setattr = a.fs.setattr(h, root, { size: CUT });
    await until(() => inner.drops > 0, WAIT_MS, 'the truncate reached the block map');
    // Both queue behind the first truncate's hold of the file's end, before it is known to wait.
    const truncate = a.fs.setattr(h, root, { size: 1 });
    const append = a.fs.append(h, root, Buffer.from('tail'), true, null, () => undefined);
    const settled = (p: Promise<unknown>) =>
      p.then(
        () => 'done',
        (e: unknown) => (e instanceof VfsError ? e.errno : String(e)),
      );
    const outcomes = Promise.all([settled(truncate), settled(append)]);
    inner.dropGate = null;
    answer();
    await until(() => inner.drops > 1, WAIT_MS, 'the truncate tried its block-map change again');
    const early = await Promise.race([outcomes, new Promise<null>((r) => setTimeout(() => r(null), WAIT_MS))]);
    inner.failDrops = 0;
    assert.equal((await setattr).after.size, CUT);
    assert.deepEqual(early, ['JUKEBOX', 'JUKEBOX'], 'answered while the store was away, not held for the whole outage');
    await a.data.close();
  });

  it('a truncate whose new size the store refuses for a while once its data is cut waits and stores it; the acknowledged bytes before the cut stay', async () => {
    const { inner, a, h } = await overwrittenFile();
    inner.failSizes = 2;
    const after = (await a.fs.setattr(h, root, { size: CUT })).after;
    assert.equal(inner.failSizes, 0, 'tried again until the store took it');
    assert.equal(after.size, CUT);
    await assertCut(a, h);
    await a.data.close();
  });

  it('a stop while a logged truncate still cannot be applied keeps its record: the next start finishes it', async () => {
    const { dir, inner, blocks, a, f, h } = await overwrittenFile({ closeFlushMs: 200 });
    inner.failDrops = Number.MAX_SAFE_INTEGER;
    const setattr = a.fs.setattr(h, root, { size: CUT });
    await until(() => inner.drops > 0, WAIT_MS, 'the truncate reached the block map');
    await a.data.close();
    await assert.rejects(setattr, /next start finishes it/);
    // A start with the store back (the same database): the file as the truncate leaves it.
    inner.failDrops = 0;
    const b = await boot(dir, inner, blocks);
    await assertCut(b, b.fs.handleOf(b.share, f));
    await b.data.close();
  });

  it("a logged truncate whose store failed for good is not tried again for ever: the SETATTR and the file's writes get an error, the record waits for the restart", async () => {
    const { dir, inner, blocks, a, f, h } = await overwrittenFile({ closeFlushMs: 200 });
    // The store can no longer vouch for what it answers (an fsync failed, PostgreSQL lost answered
    // changes): every call fails until DittoFS restarts, as SqliteDriver and PgDriver do.
    const broken = new Error('fsync of the WAL failed; it serves nothing more until the server is restarted');
    inner.failDrops = Number.MAX_SAFE_INTEGER;
    inner.dropError = new VfsError('IO', broken.message);
    inner.broken = broken;
    const records = recordsHeldBy(a.wal);
    const released = releasesOf(a.wal);
    const bounded = <T>(p: Promise<T>, what: string): Promise<T> =>
      Promise.race([
        p,
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what}: still waiting after 5 s`)), 5_000).unref()),
      ]);
    await assert.rejects(
      bounded(a.fs.setattr(h, root, { size: CUT }), 'the SETATTR'),
      (e: unknown) => e instanceof VfsError && e.errno === 'IO',
    );
    // The file's writes do not wait at its cut gate for good either.
    await bounded(a.fs.write(h, root, 0, Buffer.from('C'), false), 'a write of the file');
    assert.equal(records.length, 1, "the truncate's record");
    assert.ok(!released.includes(records[0]!), "the truncate's record is kept: only a restart, which replays it, helps now");
    await a.data.close();
    // The restart: the store works again, and the replay finishes the truncate (the 'C' written after it stays).
    inner.failDrops = 0;
    inner.broken = null;
    const b = await boot(dir, inner, blocks);
    const hb = b.fs.handleOf(b.share, f);
    assert.equal((await b.fs.getattr(hb, root)).inode.size, CUT);
    assert.equal((await b.fs.read(hb, root, 0, 2 * BS)).data.toString(), 'C' + 'B'.repeat(CUT - 1));
    await b.data.close();
  });

  it('a truncate left unfinished by the stop of a removed share lets its record go once the share is stored (releaseForgotten): the log other shares write to is not held', async () => {
    const { inner, a, h } = await overwrittenFile({ closeFlushMs: 200 });
    inner.failDrops = Number.MAX_SAFE_INTEGER;
    const records = recordsHeldBy(a.wal);
    const released = releasesOf(a.wal);
    const setattr = a.fs.setattr(h, root, { size: CUT });
    await until(() => inner.drops > 0, WAIT_MS, 'the truncate reached the block map');
    await a.data.close();
    await assert.rejects(setattr, /next start finishes it/);
    // Only the truncate's own record: the stable write's times (if it logged them) go at the stop
    // once the store has its size durably, as they should.
    assert.equal(records.length, 1, "the truncate's record");
    const record = records[0]!;
    assert.ok(!released.includes(record), 'kept at the stop');
    // What shares.ts drain() does once the removed share's data is stored and logged as such.
    a.data.releaseForgotten();
    assert.ok(released.includes(record), "the truncate's record is let go: replay skips the stored share's records");
  });

  it("keeps a truncate's WAL record until the new size is durable, without making the SETATTR wait for it", async () => {
    const inner = new GatedStore();
    const a = await boot(walDir(), inner, new MemoryBlockStore());
    const f = (await a.fs.create(a.rootH, Buffer.from('f'), root, CreateMode.UNCHECKED, {}, null)).inode;
    const h = a.fs.handleOf(a.share, f);
    await a.fs.write(h, root, 0, Buffer.alloc(3 * BS, 0x46), false);
    await a.fs.commit(h, root);
    await a.data.flush(f.id);
    const released = releasesOf(a.wal);
    const { open, flushes } = hold(inner);
    // The block map past the cut is dropped (durably: the store waits for that itself) while the
    // new size is answered before its fsync: the truncate's record replays it after a crash.
    const after = (await a.fs.setattr(h, root, { size: 10 })).after;
    assert.equal(after.size, 10);
    await until(() => inner.flushes > flushes, WAIT_MS, 'the truncate asks for its size to be made durable');
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
    assert.equal(released.length, 0, "the truncate's record is held while its size may still be undone");
    open();
    await until(() => released.length === 1, WAIT_MS, 'let go once the size is durable');
    await a.data.close();
  });
});
