// The caching layer's own promises, beyond the conformance suite: what it writes behind reaches the
// store on flushAttrs and on close, a failed flush keeps the changes, changes made behind its back
// show after the TTL, and block maps follow putBlock / dropBlocks.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FileType, type Inode, type NewInode, type Timespec } from '../vfs/types.js';
import { VfsError } from '../vfs/errors.js';
import { CachedMetadataStore } from './cached.js';
import { MemoryMetadataStore } from './memory.js';

const SHARE = 7;
const T = (sec: number): Timespec => ({ sec, nsec: 0 });

function file(): NewInode {
  return { type: FileType.REG, mode: 0o644, uid: 1, gid: 1, rdevMajor: 0, rdevMinor: 0, target: null, createVerifier: null, size: 0 };
}

async function setup(opts: ConstructorParameters<typeof CachedMetadataStore>[1] = {}): Promise<{
  inner: MemoryMetadataStore;
  cached: CachedMetadataStore;
  f: Inode;
}> {
  const inner = new MemoryMetadataStore();
  const cached = new CachedMetadataStore(inner, { flushDelayMs: 60_000, ...opts });
  await cached.open();
  const root = await cached.ensureRoot(SHARE, { ...file(), type: FileType.DIR, mode: 0o755 });
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
    const { inner, cached, f } = await setup({ ttlMs: 30 });
    await inner.setAttr(f.id, { mode: 0o600 });
    assert.equal((await cached.getInode(f.id))!.mode, 0o644, 'cached within the TTL');
    await new Promise((r) => setTimeout(r, 40));
    assert.equal((await cached.getInode(f.id))!.mode, 0o600);
    await cached.close();
  });

  it('a remove that returns the directory keeps it: the next read of it is not a store call', async () => {
    const { inner, cached } = await setup();
    const dirId = (await cached.ensureRoot(SHARE, { ...file(), type: FileType.DIR, mode: 0o755 })).id;
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
    const root = await cached.ensureRoot(SHARE, { ...file(), type: FileType.DIR, mode: 0o755 });
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
    const dirId = (await cached.ensureRoot(SHARE, { ...file(), type: FileType.DIR, mode: 0o755 })).id;
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
    const dirId = (await cached.ensureRoot(SHARE, { ...file(), type: FileType.DIR, mode: 0o755 })).id;
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
    const sub = await cached.create(root.id, Buffer.from('d'), { ...file(), type: FileType.DIR, mode: 0o755 }, T(2));
    const g = await cached.create(root.id, Buffer.from('g'), file(), T(3));
    published.length = 0;
    await cached.rename(root.id, Buffer.from('f'), sub.id, Buffer.from('f2'), T(4));
    assert.deepEqual(published, [`i:${root.id},${sub.id},${f.id}`]);
    published.length = 0;
    await cached.rename(root.id, Buffer.from('g'), sub.id, Buffer.from('f2'), T(5));
    assert.deepEqual(published, [`b:${root.id},${sub.id},${g.id},${f.id}`], 'the replaced inode with its block map');
    await cached.close();
  });
});
