// The caching layer's own promises, beyond the conformance suite: what it writes behind reaches the
// store on flushAttrs and on close, a failed flush keeps the changes, changes made behind its back
// show after the TTL, and block maps follow putBlock / dropBlocks.
import assert from 'node:assert/strict';
import { describe, it, mock } from 'node:test';
import { FileType, type AttrChanges, type Inode, type NewInode, type Timespec } from '../vfs/types.js';
import { VfsError } from '../vfs/errors.js';
import { CachedMetadataStore } from './cached.js';
import { MemoryMetadataStore } from './memory.js';
import { BlockConflictError, InodeMetaKind } from './store.js';

const SHARE = 7;
const T = (sec: number): Timespec => ({ sec, nsec: 0 });

function file(): NewInode {
  return { type: FileType.REG, mode: 0o644, uid: 1, gid: 1, rdevMajor: 0, rdevMinor: 0, target: null, createVerifier: null, size: 0 };
}

function directory(): NewInode {
  return { ...file(), type: FileType.DIR, mode: 0o755 };
}

async function setup(opts: ConstructorParameters<typeof CachedMetadataStore>[1] = {}): Promise<{
  inner: MemoryMetadataStore;
  cached: CachedMetadataStore;
  f: Inode;
}> {
  const inner = new MemoryMetadataStore();
  // A TTL no stall of a loaded machine overruns: the counts of store reads below hold (the TTL tests
  // pass their own).
  const cached = new CachedMetadataStore(inner, { flushDelayMs: 60_000, ttlMs: 60_000, ...opts });
  await cached.open();
  const root = await cached.ensureRoot(SHARE, directory());
  const f = await cached.create(root.id, Buffer.from('f'), file(), T(1));
  await cached.getInode(f.id);
  return { inner, cached, f };
}

describe('CachedMetadataStore', () => {
  it('answers writes from memory and writes size and times behind on flushAttrs', async () => {
    const { inner, cached, f } = await setup();
    const a = await cached.setAttr(f.id, { growTo: 4096, mtime: T(10), ctime: T(10) });
    const b = await cached.setAttr(f.id, { growTo: 1024, mtime: T(11), ctime: T(11) });
    assert.equal(a.size, 4096);
    assert.equal(b.size, 4096, 'growTo never shrinks');
    assert.deepEqual(b.mtime, T(11));
    assert.equal((await inner.getInode(f.id))!.size, 0, 'not yet written');
    assert.equal((await cached.getInode(f.id))!.size, 4096);
    await cached.flushAttrs(f.id);
    const stored = (await inner.getInode(f.id))!;
    assert.equal(stored.size, 4096);
    assert.deepEqual(stored.mtime, T(11));
    assert.deepEqual(stored.ctime, T(11));
    await cached.close();
  });

  it('shows pending sizes in lookup and readdir, and writes them on close', async () => {
    const { inner, cached, f } = await setup();
    await cached.setAttr(f.id, { growTo: 777, mtime: T(20), ctime: T(20) });
    const root = await cached.ensureRoot(SHARE, file());
    assert.equal((await cached.lookup(root.id, Buffer.from('f')))!.size, 777);
    const page = await cached.readdir(root.id, 0, 10);
    assert.equal(page.entries.find((e) => e.inode.id === f.id)!.inode.size, 777);
    await cached.close();
    assert.equal((await inner.getInode(f.id))!.size, 777, 'close wrote the pending change');
  });

  it('other attribute changes go through at once, after the pending ones, in order', async () => {
    const { inner, cached, f } = await setup();
    await cached.setAttr(f.id, { growTo: 5000, mtime: T(30), ctime: T(30) });
    const cut = await cached.setAttr(f.id, { size: 100, mtime: T(31), ctime: T(31) });
    assert.equal(cut.size, 100, 'the truncate applies over the pending growth, not under it');
    assert.equal((await inner.getInode(f.id))!.size, 100);
    assert.equal((await cached.getInode(f.id))!.size, 100);
    await cached.close();
  });

  it('alone on the store: a SETATTR of what the file has (a chown or chmod after tar extracts) moves the ctime behind', async () => {
    const { inner, cached, f } = await setup({ ttlMs: Number.POSITIVE_INFINITY });
    const calls: unknown[] = [];
    const real = inner.setAttr.bind(inner);
    inner.setAttr = (id, changes, guard) => {
      calls.push(changes);
      return real(id, changes, guard);
    };
    const same: AttrChanges[] = [
      { uid: 1, gid: 1, ctime: T(40), clearCreateVerifier: true },
      { mode: 0o644, ctime: T(41), clearCreateVerifier: true },
      { mode: 0o644, clearMode: 0o6000, ctime: T(42) },
      { dosAttrs: f.dosAttrs, ctime: T(43) },
    ];
    for (const c of same) assert.deepEqual((await cached.setAttr(f.id, c)).ctime, c.ctime);
    assert.equal(calls.length, 0, 'nothing written yet');
    assert.deepEqual((await cached.getInode(f.id))!.ctime, T(43));
    const root = await cached.ensureRoot(SHARE, file());
    assert.deepEqual((await cached.readdir(root.id, 0, 10)).entries.find((e) => e.inode.id === f.id)!.inode.ctime, T(43));
    await cached.flushAttrs(f.id);
    assert.equal(calls.length, 1, 'one write for the four');
    const stored = (await inner.getInode(f.id))!;
    assert.deepEqual(stored.ctime, T(43));
    assert.equal(stored.mode, 0o644);

    // Anything else is written at once: a new mode, owner or time, a bit cleared, an older ctime.
    const changing: AttrChanges[] = [
      { mode: 0o600, ctime: T(44) },
      { uid: 2, ctime: T(45) },
      { mode: 0o4755, ctime: T(46) },
      { clearMode: 0o4000, ctime: T(47) },
      { mtime: T(1), ctime: T(48) },
      { atime: T(1), ctime: T(49) },
      { size: 0, ctime: T(50) },
      { uid: 2, ctime: T(3) },
    ];
    for (const c of changing) {
      const n: number = calls.length;
      await cached.setAttr(f.id, c);
      assert.equal(calls.length, n + 1, `written through: ${JSON.stringify(c)}`);
    }
    assert.equal((await inner.getInode(f.id))!.mode, 0o755);
    await cached.close();
  });

  it('a SETATTR of what the file has is written through where others may change the store, or a create verifier is held', async () => {
    const shared = await setup();
    const calls: unknown[] = [];
    const real = shared.inner.setAttr.bind(shared.inner);
    shared.inner.setAttr = (id, changes, guard) => {
      calls.push(changes);
      return real(id, changes, guard);
    };
    await shared.cached.setAttr(shared.f.id, { mode: 0o644, ctime: T(40) });
    assert.equal(calls.length, 1, 'a ttl: the entry may be stale, the mode may differ in the store');
    await shared.cached.close();

    const alone = await setup({ ttlMs: Number.POSITIVE_INFINITY });
    const root = await alone.cached.ensureRoot(SHARE, file());
    const x = await alone.cached.create(root.id, Buffer.from('x'), { ...file(), createVerifier: Buffer.alloc(8, 1) }, T(1));
    await alone.cached.setAttr(x.id, { mode: 0o644, ctime: T(40), clearCreateVerifier: true });
    assert.equal((await alone.inner.getInode(x.id))!.createVerifier, null, 'the verifier is cleared in the store at once');
    await alone.cached.close();
  });

  it('a change after writes carries their pending size and times in the same store call; its own times win', async () => {
    const { inner, cached, f } = await setup();
    const calls: unknown[] = [];
    const real = inner.setAttr.bind(inner);
    let fail: Error | null = null;
    inner.setAttr = (id, changes, guard) => {
      calls.push(changes);
      return fail ? Promise.reject(fail) : real(id, changes, guard);
    };
    await cached.setAttr(f.id, { growTo: 3000, mtime: T(60), ctime: T(60) });
    const chmod = await cached.setAttr(f.id, { mode: 0o600, ctime: T(61) });
    assert.equal(calls.length, 1, 'one store call, not a flush of the pending changes and then the chmod');
    for (const i of [chmod, (await inner.getInode(f.id))!]) {
      assert.equal(i.size, 3000);
      assert.equal(i.mode & 0o7777, 0o600);
      assert.deepEqual(i.mtime, T(60), "the writes' mtime");
      assert.deepEqual(i.ctime, T(61), "the chmod's ctime");
    }
    // An explicit mtime (utimes after the writes) wins over the pending one.
    await cached.setAttr(f.id, { growTo: 3500, mtime: T(62), ctime: T(62) });
    await cached.setAttr(f.id, { mtime: T(5), ctime: T(63) });
    assert.deepEqual({ size: (await inner.getInode(f.id))!.size, mtime: (await inner.getInode(f.id))!.mtime }, { size: 3500, mtime: T(5) });
    // A change that fails leaves the pending ones for the next flush.
    await cached.setAttr(f.id, { growTo: 4000, mtime: T(64), ctime: T(64) });
    fail = new VfsError('JUKEBOX', 'database unreachable');
    await assert.rejects(cached.setAttr(f.id, { uid: 9, ctime: T(65) }), /database unreachable/);
    assert.equal((await cached.getInode(f.id))!.size, 4000, 'still served from memory');
    fail = null;
    await cached.flushAttrs(f.id);
    const stored = (await inner.getInode(f.id))!;
    assert.deepEqual({ size: stored.size, mtime: stored.mtime, uid: stored.uid }, { size: 4000, mtime: T(64), uid: 1 });
    // A change guarded by the ctime the client saw (which includes the pending one) writes the
    // pending changes first: the guard is checked against the stored ctime.
    await cached.setAttr(f.id, { growTo: 4500, mtime: T(66), ctime: T(66) });
    calls.length = 0;
    await cached.setAttr(f.id, { mode: 0o640, ctime: T(67) }, T(66));
    assert.equal(calls.length, 2);
    assert.equal((await inner.getInode(f.id))!.mode & 0o7777, 0o640);
    await cached.close();
  });

  // What the SQL engines throw while the database is unreachable (a VfsError, JUKEBOX), and other
  // failures: none of them may drop the size a write made.
  for (const failure of [
    () => new VfsError('JUKEBOX', 'metadata store unavailable: database unreachable'),
    () => new VfsError('IO', 'database unreachable'),
    () => new Error('database unreachable'),
  ]) {
    it(`a failed flush keeps the changes and a later flush writes them (${failure().constructor.name} ${(failure() as { errno?: string }).errno ?? ''})`, async () => {
      const { inner, cached, f } = await setup();
      const errors: unknown[] = [];
      const real = inner.setAttr.bind(inner);
      let down = true;
      inner.setAttr = (...args) => (down ? Promise.reject(failure()) : real(...args));
      (cached as unknown as { opts: { onFlushError: (e: unknown) => void } }).opts.onFlushError = (e) => errors.push(e);
      await cached.setAttr(f.id, { growTo: 9000, mtime: T(40), ctime: T(40) });
      await assert.rejects(cached.flushAttrs(f.id), /database unreachable/);
      assert.equal(errors.length, 1);
      assert.equal((await cached.getInode(f.id))!.size, 9000, 'still served from memory');
      await cached.setAttr(f.id, { growTo: 9500, mtime: T(41), ctime: T(41) });
      down = false;
      await cached.flushAttrs(f.id);
      const stored = (await inner.getInode(f.id))!;
      assert.equal(stored.size, 9500);
      assert.deepEqual(stored.mtime, T(41));
      await cached.close();
    });
  }

  it('a flush for a file removed behind its back drops the changes (nothing left to update)', async () => {
    const { inner, cached, f } = await setup();
    await cached.setAttr(f.id, { growTo: 100, mtime: T(50), ctime: T(50) });
    inner.setAttr = () => Promise.reject(new VfsError('STALE', `inode ${f.id} does not exist`));
    await cached.flushAttrs(f.id);
    await cached.flushAttrs(f.id); // nothing pending any more: no second attempt, no error
    await cached.close();
  });

  it('a change made behind its back shows once the TTL has passed', async () => {
    // A TTL a loaded machine cannot overrun between the entry being read and the check.
    const { inner, cached, f } = await setup({ ttlMs: 1000 });
    await inner.setAttr(f.id, { mode: 0o600 });
    assert.equal((await cached.getInode(f.id))!.mode, 0o644, 'cached within the TTL');
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal((await cached.getInode(f.id))!.mode, 0o600);
    await cached.close();
  });

  it('a remove that returns the directory keeps it: the next read of it is not a store call', async () => {
    const { inner, cached } = await setup();
    const dirId = (await cached.ensureRoot(SHARE, directory())).id;
    const innerRemove = inner.remove.bind(inner);
    // The memory engine does not return the directory; here it does, as the SQL engines do.
    inner.remove = async (...a) => ({ ...(await innerRemove(...a)), dir: (await inner.getInode(dirId))! });
    let reads = 0;
    const innerGet = inner.getInode.bind(inner);
    inner.getInode = (id) => {
      reads++;
      return innerGet(id);
    };
    await cached.remove(dirId, Buffer.from('f'), false, T(5));
    reads = 0;
    const dir = await cached.getInode(dirId);
    assert.deepEqual(dir!.mtime, T(5));
    assert.equal(reads, 0, 'answered from the entry the remove left');
    // Without it (another store, or an overlapping change), the directory is read again.
    inner.remove = innerRemove;
    await cached.create(dirId, Buffer.from('g'), file(), T(6));
    await cached.remove(dirId, Buffer.from('g'), false, T(7));
    reads = 0;
    assert.deepEqual((await cached.getInode(dirId))!.mtime, T(7));
    assert.equal(reads, 1);
    await cached.close();
  });

  it('an inode the store keeps answering for stays cached while many others pass through (least recently used goes first)', async () => {
    // A small cache: 16 entries. The hot inode is changed (and so put in the cache again) at every
    // step, between reads of inodes not seen before: a cache that kept the order of first use
    // would have evicted it after 16 steps; updated in place or moved, it must be there at the end.
    const { inner, cached, f: hot } = await setup({ maxInodes: 16, ttlMs: 60_000 });
    const root = await cached.ensureRoot(SHARE, directory());
    const others: number[] = [];
    for (let i = 0; i < 100; i++) others.push((await inner.create(root.id, Buffer.from(`o${i}`), file(), T(2))).id);
    let reads = 0;
    const innerGet = inner.getInode.bind(inner);
    inner.getInode = (id) => {
      if (id === hot.id) reads++;
      return innerGet(id);
    };
    for (let i = 0; i < others.length; i++) {
      assert.ok(await cached.getInode(others[i]!));
      assert.equal((await cached.getInode(hot.id))!.mode, i === 0 ? 0o644 : 0o600 + ((i - 1) % 2));
      await cached.setAttr(hot.id, { mode: 0o600 + (i % 2) });
    }
    assert.equal(reads, 0, 'the hot inode was never evicted');
    // And the cache stayed within its bound.
    let cachedOthers = 0;
    reads = 0;
    inner.getInode = (id) => {
      reads++;
      return innerGet(id);
    };
    for (const id of others) {
      const before = reads;
      await cached.getInode(id);
      if (reads === before) cachedOthers++;
    }
    assert.ok(cachedOthers < 16, `${cachedOthers} of the others still cached`);
    await cached.close();
  });

  it('a create that returns the directory keeps it, unless another namespace change overlapped it', async () => {
    const { inner, cached } = await setup();
    const dirId = (await cached.ensureRoot(SHARE, directory())).id;
    // The memory engine has no createIn; here it has one, as the postgres engine does. `hold`
    // keeps a create from finishing until the test lets it.
    let hold: Promise<void> | undefined = undefined;
    const storeCreate = async (...a: Parameters<MemoryMetadataStore['create']>) => {
      const inode = await inner.create(...a);
      const dir = (await inner.getInode(dirId))!;
      await hold;
      return { inode, dir };
    };
    Object.assign(inner, { createIn: storeCreate });
    let reads = 0;
    const innerGet = inner.getInode.bind(inner);
    inner.getInode = (id) => {
      reads++;
      return innerGet(id);
    };
    await cached.create(dirId, Buffer.from('a'), file(), T(5));
    reads = 0;
    assert.deepEqual((await cached.getInode(dirId))!.mtime, T(5));
    assert.equal(reads, 0, 'answered from the directory the create returned');

    // Two creates at once: the first to finish may hold a directory older than the store's.
    let release!: () => void;
    hold = new Promise((r) => (release = r));
    const b = cached.create(dirId, Buffer.from('b'), file(), T(6));
    const c = cached.create(dirId, Buffer.from('c'), file(), T(7));
    await new Promise((r) => setImmediate(r));
    release();
    await Promise.all([b, c]);
    reads = 0;
    assert.deepEqual((await cached.getInode(dirId))!.mtime, T(7));
    assert.equal(reads, 1, 'read again after overlapping creates');
    await cached.close();
  });

  it('a remove that began while another namespace change was in flight does not keep the directory it returns', async () => {
    const { inner, cached } = await setup();
    const dirId = (await cached.ensureRoot(SHARE, directory())).id;
    await cached.create(dirId, Buffer.from('g'), file(), T(2));
    // A create in flight; the remove begins, changes the store and reads its directory (mtime 5);
    // then the create changes it (mtime 9) and finishes; the remove's answer arrives last.
    let releaseCreate!: () => void;
    const createHeld = new Promise<void>((r) => (releaseCreate = r));
    let releaseRemove!: () => void;
    const removeHeld = new Promise<void>((r) => (releaseRemove = r));
    const innerCreate = inner.create.bind(inner);
    inner.create = async (...a) => {
      await createHeld;
      return innerCreate(...a);
    };
    const innerRemove = inner.remove.bind(inner);
    let removed!: () => void;
    const storeRemoved = new Promise<void>((r) => (removed = r));
    inner.remove = async (...a) => {
      const r = { ...(await innerRemove(...a)), dir: (await inner.getInode(dirId))! };
      removed();
      await removeHeld;
      return r;
    };
    const making = cached.create(dirId, Buffer.from('h'), file(), T(9));
    const removing = cached.remove(dirId, Buffer.from('g'), false, T(5));
    await storeRemoved;
    releaseCreate();
    await making;
    releaseRemove();
    await removing;
    let reads = 0;
    const innerGet = inner.getInode.bind(inner);
    inner.getInode = (id) => {
      reads++;
      return innerGet(id);
    };
    assert.deepEqual((await cached.getInode(dirId))!.mtime, T(9), 'not the directory the remove saw');
    assert.equal(reads, 1);
    await cached.close();
  });

  it('block maps follow putBlock and dropBlocks, and a removed file is forgotten', async () => {
    const { cached, f } = await setup();
    assert.deepEqual(await cached.getBlocks(f.id, 0, 4), []);
    await cached.putBlock(f.id, { index: 1, key: 'k1', length: 10, version: 1 });
    assert.deepEqual(
      (await cached.getBlocks(f.id, 0, 4)).map((r) => r.key),
      ['k1'],
    );
    await cached.putBlock(f.id, { index: 1, key: 'k1b', length: 10, version: 2 });
    await cached.putBlock(f.id, { index: 3, key: 'k3', length: 10, version: 1 });
    assert.deepEqual(
      (await cached.getBlocks(f.id, 0, 4)).map((r) => r.key),
      ['k1b', 'k3'],
    );
    await cached.dropBlocks(f.id, 2);
    assert.deepEqual(
      (await cached.getBlocks(f.id, 0, 4)).map((r) => r.key),
      ['k1b'],
    );
    const root = await cached.ensureRoot(SHARE, file());
    const r = await cached.remove(root.id, Buffer.from('f'), false, T(50));
    assert.equal(r.freed, true);
    assert.equal(await cached.getInode(f.id), null);
    await cached.close();
  });

  // An upload asks for its one block before switching it: a file written in order cost one store
  // query per block (256 per GiB of 4 MiB blocks) before lookups read ahead.
  it('a file uploaded in order reads its block rows ahead, and rows read ahead are what the store has', async () => {
    const { inner, cached, f } = await setup();
    // Rows another writer stored before this server looked: blocks 5 and 70.
    await inner.putBlock(f.id, { index: 5, key: 'old5', length: 10, version: 3 });
    await inner.putBlock(f.id, { index: 70, key: 'old70', length: 10, version: 2 });
    let queries = 0;
    const innerGet = inner.getBlocks.bind(inner);
    inner.getBlocks = (id, from, to) => {
      queries++;
      return innerGet(id, from, to);
    };
    for (let index = 0; index < 256; index++) {
      const [prev] = await cached.getBlocks(f.id, index, index + 1);
      const expected = index === 5 ? 3 : index === 70 ? 2 : 0;
      assert.equal(prev?.version ?? 0, expected, `block ${index}`);
      await cached.putBlock(f.id, { index, key: `k${index}`, length: 10, version: expected + 1 }, { prevVersion: expected, token: 0 });
    }
    assert.ok(queries <= 12, `${queries} store lookups for 256 blocks`);
    assert.deepEqual(
      (await cached.getBlocks(f.id, 0, 256)).map((r) => r.key),
      Array.from({ length: 256 }, (_, i) => `k${i}`),
    );
    // A small file's one block leaves no entries for blocks it never has.
    const root = await cached.ensureRoot(SHARE, directory());
    const g = await cached.create(root.id, Buffer.from('g'), file(), T(2));
    const before = queries;
    assert.deepEqual(await cached.getBlocks(g.id, 0, 1), []);
    await inner.putBlock(g.id, { index: 1, key: 'g1', length: 10, version: 1 });
    assert.equal((await cached.getBlocks(g.id, 1, 2))[0]?.key, 'g1', 'block 1 was not cached as absent');
    assert.equal(queries, before + 2);
    await cached.close();
  });

  // Each block switch wrote the file's pending size first (about 256 UPDATEs per GiB written on
  // PostgreSQL); one is needed only where the store's size does not yet cover the block's data.
  it('a block switch writes the pending size only when the stored one does not cover its data', async () => {
    const { inner, cached, f } = await setup();
    const sizes: number[] = [];
    const innerSet = inner.setAttr.bind(inner);
    inner.setAttr = (id, c, g) => {
      if (c.growTo !== undefined || c.size !== undefined) sizes.push(c.size ?? c.growTo!);
      return innerSet(id, c, g);
    };
    const put = (index: number, end: number, version = 1) =>
      cached.putBlock(f.id, { index, key: `k${index}-${version}`, length: 4096, version }, { prevVersion: version - 1, token: 0, end });
    await cached.setAttr(f.id, { growTo: 8192, mtime: T(10), ctime: T(10) });
    await put(0, 4096);
    assert.deepEqual(sizes, [8192], 'nothing stored yet: the size goes first');
    await cached.setAttr(f.id, { growTo: 12288, mtime: T(11), ctime: T(11) });
    await put(1, 8192);
    assert.deepEqual(sizes, [8192], 'the stored 8192 covers block 1');
    assert.equal((await inner.getInode(f.id))!.size, 8192);
    await put(2, 12288);
    assert.deepEqual(sizes, [8192, 12288]);
    // A truncate lowers the stored size: the next switch writes the size again.
    await cached.setAttr(f.id, { size: 100, mtime: T(12), ctime: T(12) });
    await cached.setAttr(f.id, { growTo: 4096, mtime: T(13), ctime: T(13) });
    await put(0, 4096, 2);
    assert.deepEqual(sizes, [8192, 12288, 100, 4096]);
    assert.equal((await inner.getInode(f.id))!.size, 4096);
    await cached.close();
  });

  // Several files written at once: their sizes go behind together (setAttrMany), and what that
  // stored spares their block switches a write of their own.
  it("a block switch writes no size where a flush of several files' sizes stored one that covers its data", async () => {
    const { inner, cached, f } = await setup();
    const root = await cached.ensureRoot(SHARE, directory());
    const g = await cached.create(root.id, Buffer.from('g'), file(), T(2));
    await cached.setAttr(f.id, { growTo: 8192, mtime: T(10), ctime: T(10) });
    await cached.setAttr(g.id, { growTo: 8192, mtime: T(10), ctime: T(10) });
    let many = 0;
    const innerMany = inner.setAttrMany.bind(inner);
    inner.setAttrMany = (c) => {
      many++;
      return innerMany(c);
    };
    await cached.flushAttrs();
    assert.equal(many, 1, 'both sizes in one write');
    const sizes: number[] = [];
    const innerSet = inner.setAttr.bind(inner);
    inner.setAttr = (id, c, gc) => {
      if (c.growTo !== undefined || c.size !== undefined) sizes.push(c.size ?? c.growTo!);
      return innerSet(id, c, gc);
    };
    await cached.setAttr(f.id, { growTo: 12288, mtime: T(11), ctime: T(11) });
    await cached.putBlock(f.id, { index: 1, key: 'f1', length: 4096, version: 1 }, { prevVersion: 0, token: 0, end: 8192 });
    assert.deepEqual(sizes, [], 'the stored 8192 covers block 1');
    await cached.putBlock(f.id, { index: 2, key: 'f2', length: 4096, version: 1 }, { prevVersion: 0, token: 0, end: 12288 });
    assert.deepEqual(sizes, [12288]);
    await cached.close();
  });

  // A PostgreSQL restart once left a file's cached mode behind its stored one (the pg-restart fault
  // test: "mode 644, model 600"): a SETATTR whose answer came back after another client's create
  // was not cached, and the entry from before the change went on answering.
  it('a SETATTR that overlaps another change is never answered from the entry before it', async () => {
    const { inner, cached, f } = await setup();
    const root = await cached.ensureRoot(SHARE, file());
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const setAttr = inner.setAttr.bind(inner);
    inner.setAttr = async (...args) => {
      const r = await setAttr(...args);
      await gate;
      return r;
    };
    const chmod = cached.setAttr(f.id, { mode: 0o600, ctime: T(60) });
    await cached.create(root.id, Buffer.from('other'), file(), T(61));
    release();
    assert.equal((await chmod).mode, 0o600);
    assert.equal((await cached.getInode(f.id))!.mode, 0o600, 'the cache answered the mode from before the SETATTR');
    await cached.close();
  });

  it('a read that started before a SETATTR does not put the old attributes back in the cache', async () => {
    const { inner, cached, f } = await setup();
    cached.invalidateRemote([f.id], false);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const getInode = inner.getInode.bind(inner);
    let reads = 0;
    inner.getInode = async (id) => {
      const r = await getInode(id);
      if (reads++ === 0) await gate;
      return r;
    };
    const read = cached.getInode(f.id);
    await cached.setAttr(f.id, { mode: 0o600, ctime: T(70) });
    release();
    assert.equal((await read)!.mode, 0o644, 'the read saw the file before the change');
    assert.equal((await cached.getInode(f.id))!.mode, 0o600, 'the late read put the old mode back in the cache');
    await cached.close();
  });

  it('several servers: an inode another server announced is read from the store, not cached, until that change is done', async () => {
    const { cached, inner, f } = await setup();
    cached.attachCoherence({ sync: async () => true, announce: async () => 1, done: () => undefined }, () => undefined);
    assert.equal((await cached.getInode(f.id))!.mode, 0o644);
    cached.invalidateRemote([f.id], false);
    cached.uncertainRemote([f.id], true);
    let reads = 0;
    const getInode = inner.getInode.bind(inner);
    inner.getInode = async (id) => {
      reads++;
      return getInode(id);
    };
    await cached.getInode(f.id);
    // The other server commits (and its end is not heard yet): this server sees it at once.
    await inner.setAttr(f.id, { mode: 0o600 });
    assert.equal((await cached.getInode(f.id))!.mode, 0o600, 'read from the store, not from what was cached while uncertain');
    assert.equal(reads, 2);
    cached.uncertainRemote([f.id], false);
    await cached.getInode(f.id);
    await cached.getInode(f.id);
    assert.equal(reads, 3, 'cached again once the change is done');
    await cached.close();
  });

  it('several servers: a rename publishes what it touched (both directories, the moved and the replaced inode), not everything', async () => {
    const { cached, f } = await setup();
    const published: string[] = [];
    cached.attachCoherence(
      {
        sync: async () => true,
        announce: async () => 1,
        done: (_t, ids, blocks) => void published.push(ids === null ? '*' : `${blocks ? 'b' : 'i'}:${ids.join(',')}`),
      },
      () => undefined,
    );
    const root = await cached.ensureRoot(SHARE, file());
    const sub = await cached.create(root.id, Buffer.from('d'), directory(), T(2));
    const g = await cached.create(root.id, Buffer.from('g'), file(), T(3));
    published.length = 0;
    await cached.rename(root.id, Buffer.from('f'), sub.id, Buffer.from('f2'), T(4));
    assert.deepEqual(published, [`i:${root.id},${sub.id},${f.id}`]);
    published.length = 0;
    await cached.rename(root.id, Buffer.from('g'), sub.id, Buffer.from('f2'), T(5));
    assert.deepEqual(published, [`b:${root.id},${sub.id},${g.id},${f.id}`], 'the replaced inode with its block map');
    await cached.close();
  });

  it('a name looked up is answered from memory until a remove or rename in its directory takes it away', async () => {
    const { inner, cached } = await setup();
    const root = await cached.ensureRoot(SHARE, file());
    // Made behind the cache, so that the first lookup reads it (a name created here is cached at once).
    const d = await inner.create(root.id, Buffer.from('d'), directory(), T(2));
    const lookups = mock.method(inner, 'lookup');
    assert.equal((await cached.lookup(root.id, Buffer.from('d')))!.id, d.id);
    assert.equal((await cached.lookup(root.id, Buffer.from('d')))!.id, d.id);
    assert.equal(lookups.mock.callCount(), 1, 'the second lookup is answered from memory');
    // A create in the directory adds a name: the cached ones still hold.
    await cached.create(root.id, Buffer.from('g'), file(), T(3));
    assert.equal((await cached.lookup(root.id, Buffer.from('d')))!.id, d.id);
    assert.equal(lookups.mock.callCount(), 1);
    await cached.rename(root.id, Buffer.from('d'), root.id, Buffer.from('e'), T(4));
    // The directory itself is read again (cached anew) before the next lookup of its old name.
    await cached.getInode(d.id);
    assert.equal(await cached.lookup(root.id, Buffer.from('d')), null, 'the renamed name is gone at once');
    assert.equal((await cached.lookup(root.id, Buffer.from('e')))!.id, d.id);
    await cached.lookup(root.id, Buffer.from('e'));
    lookups.mock.resetCalls();
    await cached.remove(root.id, Buffer.from('e'), true, T(5));
    assert.equal(await cached.lookup(root.id, Buffer.from('e')), null, 'the removed name is gone at once');
    assert.equal(lookups.mock.callCount(), 1);
    // A file renamed over a cached name: the name holds the moved file.
    const f = (await cached.lookup(root.id, Buffer.from('f')))!;
    await cached.rename(root.id, Buffer.from('g'), root.id, Buffer.from('f'), T(6));
    await cached.getInode(f.id).catch(() => null);
    assert.notEqual((await cached.lookup(root.id, Buffer.from('f')))!.id, f.id);
    await cached.close();
  });

  it('alone on the store: a SETATTR of what a stale entry shows is written through (a lost answer, an old read, a directory)', async () => {
    const { inner, cached, f } = await setup({ ttlMs: Number.POSITIVE_INFINITY });
    const real = inner.setAttr.bind(inner);
    // The store made a chmod but its answer was lost: the entry is not trusted, the chmod back is written.
    inner.setAttr = async (id, changes, guard) => {
      await real(id, changes, guard);
      throw new VfsError('JUKEBOX', 'the answer was lost');
    };
    await assert.rejects(cached.setAttr(f.id, { mode: 0o600, ctime: T(2) }), /lost/);
    inner.setAttr = real;
    assert.equal((await cached.setAttr(f.id, { mode: 0o644, ctime: T(3) })).mode, 0o644);
    assert.equal((await inner.getInode(f.id))!.mode, 0o644, 'the store has the mode answered, before any flush');

    // A lookup that read the row before a chmod and answers after it does not fill the cache.
    const root = await cached.ensureRoot(SHARE, file());
    await cached.link(f.id, root.id, Buffer.from('g'), T(4)); // a name the cache does not hold: looked up in the store
    const lookup = inner.lookup.bind(inner);
    let release!: () => void;
    const chmodDone = new Promise<void>((r) => (release = r));
    inner.lookup = async (dirId, name) => {
      const before = await lookup(dirId, name);
      await chmodDone;
      return before;
    };
    let late: Promise<unknown> | undefined;
    inner.setAttr = async (id, changes, guard) => {
      late = cached.lookup(root.id, Buffer.from('g'));
      await new Promise((r) => setImmediate(r));
      return real(id, changes, guard);
    };
    await cached.setAttr(f.id, { mode: 0o600, ctime: T(5) });
    inner.setAttr = real;
    release();
    await late;
    inner.lookup = lookup;
    assert.equal((await cached.getInode(f.id))!.mode, 0o600, 'the old row read meanwhile is not cached');
    await cached.setAttr(f.id, { mode: 0o644, ctime: T(6) });
    assert.equal((await inner.getInode(f.id))!.mode, 0o644);

    // A directory's same-value chmod is written at once: its entry must follow a rename meanwhile.
    const d = await cached.create(root.id, Buffer.from('d'), directory(), T(7));
    const calls = mock.method(inner, 'setAttr');
    await cached.setAttr(d.id, { mode: 0o755, ctime: T(8) });
    assert.equal(calls.mock.callCount(), 1);
    await cached.close();
  });

  it('alone on the store: a name missing from a directory made here is answered without a query, until something else may add one', async () => {
    const { inner, cached, f } = await setup({ ttlMs: Number.POSITIVE_INFINITY });
    const root = await cached.ensureRoot(SHARE, file());
    const d = await cached.create(root.id, Buffer.from('d'), directory(), T(2));
    const lookups = mock.method(inner, 'lookup');
    assert.equal(await cached.lookup(d.id, Buffer.from('x')), null);
    const a = await cached.create(d.id, Buffer.from('a'), file(), T(3));
    assert.equal((await cached.lookup(d.id, Buffer.from('a')))!.id, a.id);
    assert.equal(await cached.lookup(d.id, Buffer.from('b')), null);
    assert.equal(lookups.mock.callCount(), 0, 'every name of the new directory is known');
    // The root was not made here: a name it lacks is asked.
    assert.equal(await cached.lookup(root.id, Buffer.from('nothing')), null);
    assert.equal(lookups.mock.callCount(), 1);

    // A link adds a name the map does not hold: from then on a missing name is asked.
    await cached.link(f.id, d.id, Buffer.from('l'), T(4));
    assert.equal((await cached.lookup(d.id, Buffer.from('l')))!.id, f.id);
    assert.equal(lookups.mock.callCount(), 2);

    // A create that failed after the store made it (a lost answer): the name is asked for, and found.
    const e = await cached.create(root.id, Buffer.from('e'), directory(), T(5));
    const create = inner.create.bind(inner);
    inner.create = async (dirId, name, init, now) => {
      await create(dirId, name, init, now);
      throw new VfsError('JUKEBOX', 'the answer was lost');
    };
    await assert.rejects(cached.create(e.id, Buffer.from('made'), file(), T(6)), /lost/);
    inner.create = create;
    assert.ok(await cached.lookup(e.id, Buffer.from('made')), 'the name the store made is found');

    // A remove in the directory takes its name away and leaves the map complete: the removed
    // name, and any other missing one, answer without a query (a failed remove: see below).
    const g = await cached.create(root.id, Buffer.from('g'), directory(), T(7));
    await cached.create(g.id, Buffer.from('1'), file(), T(8));
    await cached.remove(g.id, Buffer.from('1'), false, T(9));
    lookups.mock.resetCalls();
    assert.equal(await cached.lookup(g.id, Buffer.from('1')), null);
    assert.equal(await cached.lookup(g.id, Buffer.from('2')), null);
    assert.equal(lookups.mock.callCount(), 0);

    // A rename into a directory made here (mv into an untarred tree): the moved name is found there.
    const h = await cached.create(root.id, Buffer.from('h'), directory(), T(10));
    const moved = await cached.create(root.id, Buffer.from('m'), file(), T(11));
    assert.equal(await cached.lookup(h.id, Buffer.from('m2')), null);
    await cached.rename(root.id, Buffer.from('m'), h.id, Buffer.from('m2'), T(12));
    assert.equal((await cached.lookup(h.id, Buffer.from('m2')))?.id, moved.id, 'the moved file is found under its new name');
    await cached.close();
  });

  it('a name missing from a directory made here is asked where others may change the store', async () => {
    const { inner, cached } = await setup();
    const root = await cached.ensureRoot(SHARE, file());
    const d = await cached.create(root.id, Buffer.from('d'), directory(), T(2));
    const lookups = mock.method(inner, 'lookup');
    // Another process adds a name behind this cache's back.
    const other = await inner.create(d.id, Buffer.from('x'), file(), T(3));
    assert.equal((await cached.lookup(d.id, Buffer.from('x')))!.id, other.id);
    assert.equal(lookups.mock.callCount(), 1);
    await cached.close();
  });

  it('alone on the store: a remove forgets its name only; the other names, and that there are no more, answer from memory', async () => {
    const { inner, cached } = await setup({ ttlMs: Number.POSITIVE_INFINITY });
    const root = await cached.ensureRoot(SHARE, directory());
    // Made here while alone: every name of the directory is known (a complete map).
    const d = await cached.create(root.id, Buffer.from('d'), directory(), T(2));
    await cached.create(d.id, Buffer.from('a'), file(), T(3));
    const b = await cached.create(d.id, Buffer.from('b'), file(), T(3));
    const lookups = mock.method(inner, 'lookup');
    await cached.remove(d.id, Buffer.from('a'), false, T(4));
    assert.equal(await cached.lookup(d.id, Buffer.from('a')), null, 'the removed name is gone at once');
    assert.equal((await cached.lookup(d.id, Buffer.from('b')))!.id, b.id);
    assert.equal(await cached.lookup(d.id, Buffer.from('c')), null);
    assert.equal(lookups.mock.callCount(), 0, 'no store read for the names left, or for a name that is not there');
    // Made again (a build replacing its output): the LOOKUP before the CREATE, and the one after it.
    assert.equal(await cached.lookup(d.id, Buffer.from('a')), null);
    const a2 = await cached.create(d.id, Buffer.from('a'), file(), T(5));
    assert.equal((await cached.lookup(d.id, Buffer.from('a')))!.id, a2.id);
    assert.equal(lookups.mock.callCount(), 0);
    // A remove that failed: what the directory holds is read again.
    await assert.rejects(cached.remove(d.id, Buffer.from('missing'), false, T(6)));
    assert.equal((await cached.lookup(d.id, Buffer.from('b')))!.id, b.id);
    assert.equal(lookups.mock.callCount(), 1);
    await cached.close();
  });

  it('a name just created is answered from memory, unless a remove overlapped the create', async () => {
    const { inner, cached } = await setup();
    const root = await cached.ensureRoot(SHARE, file());
    const lookups = mock.method(inner, 'lookup');
    const a = await cached.create(root.id, Buffer.from('a'), file(), T(2));
    assert.equal((await cached.lookup(root.id, Buffer.from('a')))!.id, a.id);
    assert.equal(lookups.mock.callCount(), 0, 'the stat after a create costs no query');
    // A create made in the store, whose answer comes back only after a remove of the same name ran
    // from start to end (a pooled store answers in any order): the name is gone.
    let release!: () => void;
    const hold = new Promise<void>((r) => (release = r));
    let made!: () => void;
    const inStore = new Promise<void>((r) => (made = r));
    Object.assign(inner, {
      createIn: async (...args: Parameters<MemoryMetadataStore['create']>) => {
        const inode = await inner.create(...args);
        made();
        await hold;
        return { inode };
      },
    });
    const creating = cached.create(root.id, Buffer.from('b'), file(), T(5));
    await inStore;
    await cached.remove(root.id, Buffer.from('b'), false, T(6));
    release();
    await creating;
    lookups.mock.resetCalls();
    assert.equal(await cached.lookup(root.id, Buffer.from('b')), null, 'the removed name is not answered from memory');
    assert.equal(lookups.mock.callCount(), 1);
    await cached.close();
  });

  it('a lookup that overlapped a remove does not cache the name it read before the remove', async () => {
    const { inner, cached } = await setup();
    const root = await cached.ensureRoot(SHARE, file());
    // A pooled store: a lookup that starts while the remove is in flight reads the name before the
    // remove commits, and answers after it.
    const innerLookup = inner.lookup.bind(inner);
    const innerRemove = inner.remove.bind(inner);
    let removing!: () => void;
    const removeGate = new Promise<void>((r) => (removing = r));
    let answer!: () => void;
    const lookupGate = new Promise<void>((r) => (answer = r));
    let inRemove = false;
    inner.remove = async (...a) => {
      inRemove = true;
      await removeGate;
      return innerRemove(...a);
    };
    inner.lookup = async (dirId, name) => {
      const i = await innerLookup(dirId, name);
      await lookupGate;
      return i;
    };
    const removed = cached.remove(root.id, Buffer.from('f'), false, T(5));
    for (let i = 0; i < 100 && !inRemove; i++) await new Promise((r) => setImmediate(r));
    assert.ok(inRemove);
    const late = cached.lookup(root.id, Buffer.from('f'));
    await new Promise((r) => setImmediate(r));
    removing();
    await removed;
    answer();
    assert.ok(await late, 'the late lookup saw the file before the remove');
    inner.lookup = innerLookup;
    assert.equal(await cached.lookup(root.id, Buffer.from('f')), null, 'the late lookup cached the removed name');
    await cached.close();
  });

  it('a rename made behind its back shows once the TTL has passed', async () => {
    const { inner, cached, f } = await setup({ ttlMs: 30 });
    const root = await cached.ensureRoot(SHARE, file());
    assert.equal((await cached.lookup(root.id, Buffer.from('f')))!.id, f.id);
    await inner.rename(root.id, Buffer.from('f'), root.id, Buffer.from('f2'), T(2));
    await new Promise((r) => setTimeout(r, 40));
    assert.equal(await cached.lookup(root.id, Buffer.from('f')), null);
    await cached.close();
  });

  it('several servers: a name in a directory another server changed, or is changing, is read from the store', async () => {
    const { cached, inner, f } = await setup();
    cached.attachCoherence({ sync: async () => true, announce: async () => 1, done: () => undefined }, () => undefined);
    const root = await cached.ensureRoot(SHARE, file());
    const lookups = mock.method(inner, 'lookup');
    await cached.lookup(root.id, Buffer.from('f'));
    await cached.lookup(root.id, Buffer.from('f'));
    assert.equal(lookups.mock.callCount(), 1);
    // The other server announces a change of the directory: until it is done, the store answers.
    cached.uncertainRemote([root.id], true);
    await inner.rename(root.id, Buffer.from('f'), root.id, Buffer.from('f2'), T(2));
    assert.equal(await cached.lookup(root.id, Buffer.from('f')), null);
    cached.uncertainRemote([root.id], false);
    cached.invalidateRemote([root.id, f.id], false);
    assert.equal((await cached.lookup(root.id, Buffer.from('f2')))!.id, f.id);
    // Its rename back, heard when done: the cached name goes.
    await inner.rename(root.id, Buffer.from('f2'), root.id, Buffer.from('f'), T(3));
    cached.invalidateRemote([root.id, f.id], false);
    assert.equal(await cached.lookup(root.id, Buffer.from('f2')), null);
    await cached.close();
  });

  it('one server: that an inode has no records is remembered until a putMeta changes it', async () => {
    const { cached, inner } = await setup();
    // Made behind the cache's back: it does not know yet that the file has no records.
    const root = await cached.ensureRoot(SHARE, directory());
    const f = await inner.create(root.id, Buffer.from('made elsewhere'), file(), T(2));
    const counter = mock.method(inner, 'getMeta');
    const sd = { name: Buffer.alloc(0), value: Buffer.from('sd') };
    assert.deepEqual(await cached.getMeta(f.id, InodeMetaKind.SECURITY), []);
    assert.deepEqual(await cached.getMeta(f.id, InodeMetaKind.SECURITY), []);
    assert.equal(counter.mock.callCount(), 1, 'the absence is answered from memory');
    await cached.putMeta(f.id, InodeMetaKind.SECURITY, [sd], { count: 4, bytes: 1024 });
    assert.equal((await cached.getMeta(f.id, InodeMetaKind.SECURITY)).length, 1);
    await cached.close();
  });

  it('one server: a file made here has no streams, answered without a store read until createStream makes one', async () => {
    const { cached, inner } = await setup();
    const root = await cached.ensureRoot(SHARE, directory());
    const g = await cached.create(root.id, Buffer.from('g'), file(), T(2));
    const listStreams = mock.method(inner, 'listStreams');
    assert.deepEqual(await cached.listStreams(g.id), []);
    assert.equal(listStreams.mock.callCount(), 0, 'no store read for a file made here');
    await cached.createStream(g.id, Buffer.from('ads'), file(), T(3));
    assert.deepEqual(
      (await cached.listStreams(g.id)).map((e) => e.name.toString()),
      ['ads'],
    );
    // Made behind the cache's back: asked of the store.
    const f = await inner.create(root.id, Buffer.from('made elsewhere'), file(), T(4));
    assert.deepEqual(await cached.listStreams(f.id), []);
    assert.equal(listStreams.mock.callCount(), 2);
    await cached.close();
  });

  it('one server: a file made here has no records, answered without a store read until a putMeta adds one', async () => {
    const { cached, inner } = await setup();
    const root = await cached.ensureRoot(SHARE, directory());
    const g = await cached.create(root.id, Buffer.from('g'), file(), T(2));
    const getMeta = mock.method(inner, 'getMeta');
    const metaSizes = mock.method(inner, 'metaSizes');
    assert.deepEqual(await cached.getMeta(g.id, InodeMetaKind.SECURITY), []);
    assert.deepEqual(await cached.getMeta(g.id, InodeMetaKind.EA), []);
    assert.equal((await cached.metaSizes([g.id], InodeMetaKind.SECURITY)).size, 0);
    assert.equal(getMeta.mock.callCount() + metaSizes.mock.callCount(), 0, 'no store read for a file made here');
    const limits = { count: 4, bytes: 1024 };
    await cached.putMeta(g.id, InodeMetaKind.SECURITY, [{ name: Buffer.alloc(0), value: Buffer.from('sd') }], limits);
    assert.deepEqual([...(await cached.metaSizes([g.id], InodeMetaKind.SECURITY))], [[g.id, 12]]);
    assert.equal((await cached.getMeta(g.id, InodeMetaKind.SECURITY)).length, 1);
    // Other kinds are asked again too (the putMeta forgot what was known of the inode).
    assert.deepEqual(await cached.getMeta(g.id, InodeMetaKind.EA), []);
    assert.equal(getMeta.mock.callCount(), 2);
    await cached.close();
  });

  it('one server: metaSizes asks only about inodes not known to have no records, and remembers the ones without', async () => {
    const { cached, inner } = await setup();
    const root = await cached.ensureRoot(SHARE, directory());
    const limits = { count: 4, bytes: 1024 };
    const a = await inner.create(root.id, Buffer.from('a'), file(), T(2));
    const b = await inner.create(root.id, Buffer.from('b'), file(), T(2));
    const c = await cached.create(root.id, Buffer.from('c'), file(), T(2));
    await inner.putMeta(b.id, InodeMetaKind.EA, [{ name: Buffer.from('X'), value: Buffer.from('1') }], limits);
    const metaSizes = mock.method(inner, 'metaSizes');
    const ids = [a.id, b.id, c.id];
    assert.deepEqual([...(await cached.metaSizes(ids, InodeMetaKind.EA))], [[b.id, 12]]);
    assert.deepEqual(metaSizes.mock.calls[0]!.arguments[0], [a.id, b.id], 'the file made here is not asked about');
    assert.deepEqual([...(await cached.metaSizes(ids, InodeMetaKind.EA))], [[b.id, 12]]);
    assert.deepEqual(metaSizes.mock.calls[1]!.arguments[0], [b.id], 'nor one the store said has none');
    assert.deepEqual(await cached.getMeta(a.id, InodeMetaKind.EA), []);
    await cached.close();
  });

  it('several servers: the absence of records is never answered from memory; a putMeta here is announced', async () => {
    const { cached, inner, f } = await setup();
    const published: string[] = [];
    cached.attachCoherence(
      { sync: async () => true, announce: async () => 1, done: (_t, ids) => void published.push(ids === null ? '*' : ids.join(',')) },
      () => undefined,
    );
    const counter = mock.method(inner, 'getMeta');
    const sd = { name: Buffer.alloc(0), value: Buffer.from('sd') };
    const limits = { count: 4, bytes: 1024 };
    assert.deepEqual(await cached.getMeta(f.id, InodeMetaKind.SECURITY), []);
    assert.deepEqual(await cached.getMeta(f.id, InodeMetaKind.SECURITY), []);
    assert.equal(counter.mock.callCount(), 2, 'each asks the store (a server of an earlier release does not announce a stored DACL)');
    // A putMeta without a ctime change (a stored DACL) is published too.
    await cached.putMeta(f.id, InodeMetaKind.SECURITY, [sd], limits);
    assert.deepEqual(published, [String(f.id)]);
    assert.equal((await cached.getMeta(f.id, InodeMetaKind.SECURITY)).length, 1);
    // Another server stores an EA, unheard: seen at once.
    await inner.putMeta(f.id, InodeMetaKind.EA, [{ name: Buffer.from('X'), value: Buffer.from('1') }], limits);
    assert.equal((await cached.getMeta(f.id, InodeMetaKind.EA)).length, 1);
    await cached.close();
  });

  it('sizes written behind reach the store together in one setAttrMany; a create does not write them first', async () => {
    const { inner, cached, f } = await setup();
    const root = await cached.ensureRoot(SHARE, file());
    const calls: number[] = [];
    let single = 0;
    let inMany = false;
    const innerMany = inner.setAttrMany.bind(inner);
    inner.setAttrMany = async (list) => {
      calls.push(list.length);
      inMany = true;
      try {
        return await innerMany(list);
      } finally {
        inMany = false;
      }
    };
    const innerSet = inner.setAttr.bind(inner);
    inner.setAttr = (...a) => {
      if (!inMany) single++;
      return innerSet(...a);
    };
    const files = [f];
    for (let k = 0; k < 4; k++) {
      const g = await cached.create(root.id, Buffer.from(`g${k}`), file(), T(2));
      await cached.getInode(g.id);
      files.push(g);
    }
    for (const [k, x] of files.entries()) {
      await cached.setAttr(x.id, { growTo: 100 + k, mtime: T(3), ctime: T(3) });
      // The next file's create leaves this one's size pending.
      await cached.create(root.id, Buffer.from(`h${k}`), file(), T(4));
    }
    assert.equal(single, 0);
    assert.deepEqual(calls, []);
    assert.equal((await inner.getInode(f.id))!.size, 0, 'not yet written');
    await cached.flushAttrs();
    assert.deepEqual(calls, [5], 'one call for all of them');
    assert.equal(single, 0);
    for (const [k, x] of files.entries()) assert.equal((await inner.getInode(x.id))!.size, 100 + k);
    // A failed batch: each of its files is tried on its own; failing too, every change is kept for
    // the next flush.
    await cached.setAttr(files[1]!.id, { growTo: 500, mtime: T(5), ctime: T(5) });
    await cached.setAttr(files[2]!.id, { growTo: 600, mtime: T(5), ctime: T(5) });
    inner.setAttrMany = () => Promise.reject(new VfsError('JUKEBOX', 'database unreachable'));
    inner.setAttr = () => Promise.reject(new VfsError('JUKEBOX', 'database unreachable'));
    await assert.rejects(cached.flushAttrs());
    assert.equal((await cached.getInode(files[2]!.id))!.size, 600);
    inner.setAttr = (...a) => {
      if (!inMany) single++;
      return innerSet(...a);
    };
    await cached.flushAttrs();
    assert.equal(single, 2, 'after the failed batch, one by one');
    assert.equal((await inner.getInode(files[1]!.id))!.size, 500);
    assert.equal((await inner.getInode(files[2]!.id))!.size, 600);
    inner.setAttrMany = innerMany;
    // A file removed behind its back: the others are written, its change is dropped.
    await cached.setAttr(files[3]!.id, { growTo: 700, mtime: T(6), ctime: T(6) });
    await cached.setAttr(files[4]!.id, { growTo: 800, mtime: T(6), ctime: T(6) });
    await inner.remove(root.id, Buffer.from('g2'), false, T(6));
    await cached.flushAttrs();
    assert.equal((await inner.getInode(files[4]!.id))!.size, 800);
    await cached.close();
  });

  it("several servers: the lease token of sizes written behind reaches the store with them (the newest merged), and refuses an older truncate's size", async () => {
    const { inner, cached, f } = await setup();
    const stale = (p: Promise<unknown>): Promise<void> =>
      assert.rejects(p, (e: unknown) => e instanceof BlockConflictError && e.stale, 'refused as stale');
    await cached.setAttr(f.id, { growTo: 100, mtime: T(40), ctime: T(40), sizeToken: 8 });
    await cached.setAttr(f.id, { growTo: 200, mtime: T(41), ctime: T(41), sizeToken: 7 });
    assert.equal((await inner.getInode(f.id))!.size, 0, 'not yet written');
    await cached.flushAttrs(f.id);
    // Another server's truncate under lease 7 (older than the newest size written behind): refused.
    await stale(inner.setAttr(f.id, { size: 0, leaseToken: 7 }));
    assert.equal((await inner.getInode(f.id))!.size, 200);
    // Carried too when the pending size goes with another change, written through.
    await cached.setAttr(f.id, { growTo: 300, mtime: T(42), ctime: T(42), sizeToken: 9 });
    await cached.setAttr(f.id, { mode: 0o600 });
    await stale(inner.setAttr(f.id, { size: 0, leaseToken: 8 }));
    // And kept for the next flush when a flush fails.
    await cached.setAttr(f.id, { growTo: 400, mtime: T(43), ctime: T(43), sizeToken: 10 });
    const failing = mock.method(inner, 'setAttr', () => Promise.reject(new VfsError('JUKEBOX', 'unreachable')));
    await assert.rejects(cached.flushAttrs(f.id));
    failing.mock.restore();
    await cached.flushAttrs(f.id);
    assert.equal((await inner.getInode(f.id))!.size, 400);
    await stale(inner.setAttr(f.id, { size: 0, leaseToken: 9 }));
    assert.equal((await inner.setAttr(f.id, { size: 0, leaseToken: 10 })).size, 0);
    await cached.close();
  });

  it('at most 4096 inodes wait with changes: past that a flush starts without waiting for the timer', async () => {
    const { inner, cached } = await setup();
    const root = await cached.ensureRoot(SHARE, file());
    const ids: number[] = [];
    for (let k = 0; k < 4100; k++) {
      const g = await cached.create(root.id, Buffer.from(`p${k}`), file(), T(2));
      await cached.getInode(g.id);
      ids.push(g.id);
    }
    let batches = 0;
    const innerMany = inner.setAttrMany.bind(inner);
    inner.setAttrMany = (list) => {
      batches++;
      return innerMany(list);
    };
    for (const id of ids) await cached.setAttr(id, { growTo: 10, mtime: T(3), ctime: T(3) });
    const last = ids[4095]!;
    for (let k = 0; k < 1000 && (await inner.getInode(last))!.size === 0; k++) await new Promise((r) => setImmediate(r));
    assert.equal((await inner.getInode(last))!.size, 10, 'written long before the 60 s timer');
    assert.equal(batches, 16, 'in batches of 256');
    await cached.close();
  });
});
