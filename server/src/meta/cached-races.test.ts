// The caching layer under races and failures: reads that overlap a change, another server's
// changes, a server of an earlier release, a store that fails while sizes wait to be written.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { FileType, type Inode, type NewInode, type Timespec } from '../vfs/types.js';
import { VfsError } from '../vfs/errors.js';
import { CachedMetadataStore } from './cached.js';
import { MemoryMetadataStore } from './memory.js';
import { createEmbeddedMetadataStore } from './sql/index.js';
import { InodeMetaKind } from './store.js';

const SHARE = 7;
const T = (sec: number): Timespec => ({ sec, nsec: 0 });
const file = (): NewInode => ({
  type: FileType.REG,
  mode: 0o644,
  uid: 1,
  gid: 1,
  rdevMajor: 0,
  rdevMinor: 0,
  target: null,
  createVerifier: null,
  size: 0,
});
const dirInit = (): NewInode => ({ ...file(), type: FileType.DIR, mode: 0o755 });
const link = { sync: async () => true, announce: async () => 1, done: () => undefined };

async function setup(coherent: boolean): Promise<{ inner: MemoryMetadataStore; cached: CachedMetadataStore; root: Inode; f: Inode }> {
  const inner = new MemoryMetadataStore();
  const cached = new CachedMetadataStore(inner, { flushDelayMs: 60_000 });
  await cached.open();
  if (coherent) cached.attachCoherence(link, () => undefined);
  const root = await cached.ensureRoot(SHARE, dirInit());
  const f = await cached.create(root.id, Buffer.from('f'), file(), T(1));
  await cached.getInode(f.id);
  return { inner, cached, root, f };
}

/**
 * The cache over an embedded SQLite store in a temporary directory, as the embedded default builds
 * it (there a read of the store overlaps a change), with a root and a file `f`.
 */
async function sqliteSetup(): Promise<{ cached: CachedMetadataStore; root: Inode; f: Inode; done: () => Promise<void> }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dittofs-cached-races-'));
  const cached = new CachedMetadataStore(createEmbeddedMetadataStore({ path: dir, engine: 'sqlite' }), { ttlMs: Infinity });
  await cached.open();
  const root = await cached.ensureRoot(SHARE, dirInit());
  const f = await cached.create(root.id, Buffer.from('f'), file(), T(1));
  const done = async (): Promise<void> => {
    await cached.close();
    rmSync(dir, { recursive: true, force: true });
  };
  return { cached, root, f, done };
}

/** A memory store whose setAttr waits while `held` is set: a write of sizes in flight. */
class HeldSetAttr extends MemoryMetadataStore {
  private held: Promise<void> | null = null;
  override async setAttr(...args: Parameters<MemoryMetadataStore['setAttr']>): Promise<Inode> {
    await this.held;
    return super.setAttr(...args);
  }
  /** Holds the setAttrs that start from now; the function returned lets them (and later ones) go. */
  hold(): () => void {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    this.held = held;
    return () => {
      if (this.held === held) this.held = null;
      release();
    };
  }
}

/** The cache over a HeldSetAttr store, with a root and a file `f`. */
async function heldSetup(): Promise<{ inner: HeldSetAttr; cached: CachedMetadataStore; root: Inode; f: Inode }> {
  const inner = new HeldSetAttr();
  const cached = new CachedMetadataStore(inner, { flushDelayMs: 60_000 });
  await cached.open();
  const root = await cached.ensureRoot(SHARE, dirInit());
  const f = await cached.create(root.id, Buffer.from('f'), file(), T(1));
  return { inner, cached, root, f };
}

describe('CachedMetadataStore: races and failures', () => {
  it('several servers: a DACL stored by a server of an earlier release (not announced) is seen, never hidden by a cached absence', async () => {
    const { inner, cached, f } = await setup(true);
    assert.deepEqual(await cached.getMeta(f.id, InodeMetaKind.SECURITY), []);
    // The old pod: SMB SET_INFO security -> storeDacl -> putMeta(..., no now) -> no announce on main.
    await inner.putMeta(f.id, InodeMetaKind.SECURITY, [{ name: Buffer.alloc(0), value: Buffer.from('deny-everyone') }], {
      count: 1,
      bytes: 1024,
    });
    await new Promise((r) => setTimeout(r, 1200));
    assert.equal((await cached.getMeta(f.id, InodeMetaKind.SECURITY)).length, 1, 'stored DACL not seen: access checked without it');
    await cached.close();
  });

  it('several servers: a lookup that read before a remove committed does not cache the removed file (GETATTR says STALE)', async () => {
    const { inner, cached, root, f } = await setup(true);
    const innerLookup = inner.lookup.bind(inner);
    const innerRemove = inner.remove.bind(inner);
    let letRemove!: () => void;
    const removeGate = new Promise<void>((r) => (letRemove = r));
    let letLookup!: () => void;
    const lookupGate = new Promise<void>((r) => (letLookup = r));
    let inRemove = false;
    inner.remove = async (...a) => {
      inRemove = true;
      await removeGate;
      return innerRemove(...a);
    };
    const removed = cached.remove(root.id, Buffer.from('f'), false, T(5));
    for (let i = 0; i < 100 && !inRemove; i++) await new Promise((r) => setImmediate(r));
    assert.ok(inRemove);
    inner.lookup = async (d, n) => {
      const i = await innerLookup(d, n); // a pooled connection: read before the remove commits
      await lookupGate;
      return i;
    };
    const late = cached.lookup(root.id, Buffer.from('f'));
    await new Promise((r) => setImmediate(r));
    letRemove();
    await removed;
    letLookup();
    await late;
    assert.equal(await inner.getInode(f.id), null, 'removed in the store');
    assert.equal(await cached.getInode(f.id), null, 'GETATTR/WRITE on the removed file must be STALE, not answered from memory');
    await cached.close();
  });

  it('another server moved a name away: the moved inode read again by its handle does not revive the old name', async () => {
    const { inner, cached, root, f } = await setup(true);
    const e = await cached.create(root.id, Buffer.from('e'), dirInit(), T(1));
    assert.equal((await cached.lookup(root.id, Buffer.from('f')))!.id, f.id);
    await inner.rename(root.id, Buffer.from('f'), e.id, Buffer.from('g'), T(2));
    cached.invalidateRemote([root.id, e.id, f.id], false);
    await cached.getInode(f.id); // GETATTR by handle
    assert.equal(await cached.lookup(root.id, Buffer.from('f')), null);
    await cached.close();
  });

  it('creates and removes in one directory keep it and its names cached while changes run in another (several clients at once)', async () => {
    const { cached, root, done } = await sqliteSetup();
    try {
      const a = await cached.create(root.id, Buffer.from('a'), dirInit(), T(2));
      const b = await cached.create(root.id, Buffer.from('b'), dirInit(), T(2));
      const inner = cached.inner as unknown as {
        createIn: NonNullable<CachedMetadataStore['createIn']>;
        getInode: CachedMetadataStore['getInode'];
        lookup: CachedMetadataStore['lookup'];
      };
      const createIn = inner.createIn.bind(inner);
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      let entered!: () => void;
      const inB = new Promise<void>((r) => (entered = r));
      inner.createIn = async (d, name, init, now) => {
        if (d === b.id) {
          entered();
          await held;
        }
        return createIn(d, name, init, now);
      };
      const other = cached.create(b.id, Buffer.from('y'), file(), T(3));
      await inB;
      const x = await cached.create(a.id, Buffer.from('x'), file(), T(4));
      let reads = 0;
      const getInode = inner.getInode.bind(inner);
      const lookup = inner.lookup.bind(inner);
      inner.getInode = (id) => (reads++, getInode(id));
      inner.lookup = (d, n) => (reads++, lookup(d, n));
      assert.deepEqual((await cached.getInode(a.id))?.mtime, T(4), 'the directory as the create left it');
      assert.equal((await cached.lookup(a.id, Buffer.from('x')))?.id, x.id);
      await cached.remove(a.id, Buffer.from('x'), false, T(5));
      assert.deepEqual((await cached.getInode(a.id))?.mtime, T(5), 'the directory as the remove left it');
      assert.equal(await cached.lookup(a.id, Buffer.from('x')), null);
      assert.equal(reads, 0, 'answered from memory');
      release();
      await other;
      reads = 0;
      // The directory the held create changed is read again (that create was not alone there).
      assert.deepEqual((await cached.getInode(b.id))?.mtime, T(3));
      assert.equal((await cached.lookup(b.id, Buffer.from('y')))?.id !== undefined, true);
      inner.getInode = getInode;
      inner.lookup = lookup;
      inner.createIn = createIn;
    } finally {
      await done();
    }
  });

  it('a read of a directory that saw it before a create committed, answered after the create, does not stay cached', async () => {
    const { inner, cached, root } = await setup(false);
    const innerCreate = inner.create.bind(inner);
    const innerGet = inner.getInode.bind(inner);
    let letCreate!: () => void;
    const createGate = new Promise<void>((r) => (letCreate = r));
    let inCreate!: () => void;
    const creating = new Promise<void>((r) => (inCreate = r));
    inner.create = async (...a) => {
      inCreate();
      await createGate;
      return innerCreate(...a);
    };
    const made = cached.create(root.id, Buffer.from('g'), file(), T(9));
    await creating;
    cached.invalidateInode(root.id); // not in memory: the read below asks the store
    let letRead!: () => void;
    const readGate = new Promise<void>((r) => (letRead = r));
    inner.getInode = async (id) => {
      const i = await innerGet(id); // a pooled connection: read before the create commits
      await readGate;
      return i;
    };
    const late = cached.getInode(root.id);
    await new Promise((r) => setImmediate(r));
    letCreate();
    await made;
    letRead();
    assert.notDeepEqual((await late)?.mtime, T(9), 'the read saw the directory before the create');
    inner.getInode = innerGet;
    assert.deepEqual((await cached.getInode(root.id))?.mtime, T(9), 'the next GETATTR shows the create');
    await cached.close();
  });

  it("a rename to another directory drops the source directory's cached name", async () => {
    const { cached, root, f } = await setup(false);
    const e = await cached.create(root.id, Buffer.from('e'), dirInit(), T(1));
    await cached.lookup(root.id, Buffer.from('f'));
    await cached.rename(root.id, Buffer.from('f'), e.id, Buffer.from('g'), T(2));
    await cached.getInode(f.id);
    assert.equal(await cached.lookup(root.id, Buffer.from('f')), null);
    await cached.close();
  });

  it('a getMeta that read before a putMeta committed does not cache the absence: the stored DACL is enforced', async () => {
    const { inner, cached, f } = await setup(false);
    const innerGet = inner.getMeta.bind(inner);
    const innerPut = inner.putMeta.bind(inner);
    let letPut!: () => void;
    const putGate = new Promise<void>((r) => (letPut = r));
    let letGet!: () => void;
    const getGate = new Promise<void>((r) => (letGet = r));
    let inPut = false;
    inner.putMeta = async (...a) => {
      inPut = true;
      await putGate;
      return innerPut(...a);
    };
    inner.getMeta = async (id, k) => {
      const r = await innerGet(id, k);
      await getGate;
      return r;
    };
    const put = cached.putMeta(f.id, InodeMetaKind.SECURITY, [{ name: Buffer.alloc(0), value: Buffer.from('sd') }], {
      count: 1,
      bytes: 1024,
    });
    for (let i = 0; i < 100 && !inPut; i++) await new Promise((r) => setImmediate(r));
    const late = cached.getMeta(f.id, InodeMetaKind.SECURITY);
    await new Promise((r) => setImmediate(r));
    letPut();
    await put;
    letGet();
    assert.deepEqual(await late, []);
    inner.getMeta = innerGet;
    assert.equal((await cached.getMeta(f.id, InodeMetaKind.SECURITY)).length, 1, 'stored DACL must be enforced');
    await cached.close();
  });

  it('a lookup that overlaps a change drops a file with sizes written behind from the cache: READDIRPLUS and GETATTR still show the written size', async () => {
    const { cached, root, f, done } = await sqliteSetup();
    // A remove in the directory (its names are read from the store again), then a WRITE of 100 bytes
    // acknowledged with size 100 (written behind).
    await cached.create(root.id, Buffer.from('g'), file(), T(1));
    await cached.remove(root.id, Buffer.from('g'), false, T(2));
    assert.equal((await cached.setAttr(f.id, { growTo: 100, mtime: T(3), ctime: T(3) })).size, 100);
    // A LOOKUP of the file while a CREATE in the directory runs.
    const [looked] = await Promise.all([cached.lookup(root.id, Buffer.from('f')), cached.create(root.id, Buffer.from('h'), file(), T(4))]);
    assert.equal(looked?.size, 100, 'LOOKUP');
    const entry = (await cached.readdir(root.id, 0, 100)).entries.find((e) => e.name.toString() === 'f');
    assert.equal(entry?.inode.size, 100, 'READDIRPLUS');
    assert.deepEqual(entry?.inode.mtime, T(3));
    assert.equal((await cached.getInode(f.id))?.size, 100);
    await done();
  });

  it('a GETATTR, READDIRPLUS or stream listing while a COMMIT writes the sizes behind shows the acknowledged size, not the stored one', async () => {
    const { inner, cached, root, f } = await heldSetup();
    const s = await cached.createStream(f.id, Buffer.from(':s'), file(), T(1));
    // Opened (cached): their WRITEs' sizes are written behind.
    await cached.getInode(f.id);
    await cached.getInode(s.id);
    // WRITEs acknowledged with sizes 100 (the file) and 7 (its stream), written behind.
    assert.equal((await cached.setAttr(f.id, { growTo: 100, mtime: T(3), ctime: T(3) })).size, 100);
    assert.equal((await cached.setAttr(s.id, { growTo: 7, mtime: T(3), ctime: T(3) })).size, 7);
    // The entries go (another server's change, a read overlapped by a change): reads go to the store.
    cached.invalidateRemote(null, false);
    const release = inner.hold();
    const commit = Promise.all([cached.flushAttrs(f.id), cached.flushAttrs(s.id)]);
    await new Promise((r) => setImmediate(r));
    assert.equal((await inner.getInode(f.id))?.size, 0, 'the store does not have the size yet');
    assert.equal((await cached.getInode(f.id))?.size, 100, 'GETATTR');
    cached.invalidateRemote(null, false);
    const entry = (await cached.readdir(root.id, 0, 100)).entries.find((e) => e.name.toString() === 'f');
    assert.equal(entry?.inode.size, 100, 'READDIRPLUS');
    assert.deepEqual(entry?.inode.mtime, T(3));
    cached.invalidateRemote(null, false);
    assert.equal((await cached.listStreams(f.id)).find((e) => e.inode.id === s.id)?.inode.size, 7, 'stream listing');
    release();
    await commit;
    // Once stored, nothing is laid over: a truncate after the COMMIT is what reads see.
    assert.equal((await cached.setAttr(f.id, { size: 10, ctime: T(5) })).size, 10);
    cached.invalidateRemote(null, false);
    assert.equal((await cached.getInode(f.id))?.size, 10);
    assert.equal((await cached.readdir(root.id, 0, 100)).entries.find((e) => e.name.toString() === 'f')?.inode.size, 10);
    await cached.close();
  });

  it("a flush (COMMIT, a write lease handed over) waits for the WRITEs' sizes made before it, also those queued behind one being written", async () => {
    const { inner, cached, f } = await heldSetup();
    // No entry for the file (dropped when the write lease was taken): the sizes go through.
    cached.invalidateRemote(null, false);
    const release = inner.hold();
    // A WRITE's size, held in the store; a second one (by a user who is not root: its setuid drop
    // goes through too) made meanwhile; then the flush of a handover.
    const w0 = cached.setAttr(f.id, { growTo: 100, mtime: T(3), ctime: T(3) });
    await new Promise((r) => setImmediate(r));
    const w1 = cached.setAttr(f.id, { growTo: 200, clearMode: 0o4000, mtime: T(4), ctime: T(4) });
    let flushed = false;
    const flush = cached.flushAttrs(f.id).then(() => (flushed = true));
    // The first size is stored, the second held in its turn.
    const release2 = inner.hold();
    release();
    await w0;
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    assert.equal(flushed, false, 'the flush waits for the second size');
    release2();
    await Promise.all([w1, flush]);
    // What the other server reads once the lease is handed over.
    assert.equal((await inner.getInode(f.id))?.size, 200);
    await cached.close();
  });

  it('close waits for the WRITE sizes made before it: they reach the store before it closes', async () => {
    const { inner, cached, f } = await heldSetup();
    cached.invalidateRemote(null, false);
    const release = inner.hold();
    const closes: number[] = [];
    const innerClose = inner.close.bind(inner);
    inner.close = async () => {
      closes.push((await inner.getInode(f.id))?.size ?? -1);
      return innerClose();
    };
    const writes = [
      cached.setAttr(f.id, { growTo: 100, mtime: T(3), ctime: T(3) }),
      cached.setAttr(f.id, { growTo: 200, mtime: T(4), ctime: T(4) }),
    ];
    const closed = cached.close();
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    assert.deepEqual(closes, [], 'the store is not closed under the sizes held');
    release();
    await Promise.all([...writes, closed]);
    assert.deepEqual(closes, [200], 'closed once both sizes were stored');
  });

  it('a change of a file with sizes written behind, overlapped by another change, is what the next read sees', async () => {
    const { cached, root, f, done } = await sqliteSetup();
    assert.equal((await cached.getInode(f.id))?.mode, 0o644);
    for (let round = 0; round < 20; round++) {
      await cached.setAttr(f.id, { growTo: 100 + round, mtime: T(3), ctime: T(3) });
      const mode = round % 2 === 0 ? 0o600 : 0o640;
      // An SMB overwrite's attributes, say, while another file is created.
      await Promise.all([cached.setAttr(f.id, { mode, ctime: T(4) }), cached.create(root.id, Buffer.from(`x${round}`), file(), T(4))]);
      assert.equal((await cached.getInode(f.id))?.mode, mode, `round ${round}`);
    }
    await done();
  });

  it('with the store failing, at most MAX_PENDING inodes wait with written-behind changes (memory stays bounded)', async () => {
    const { inner, cached, root } = await setup(false);
    const ids: number[] = [];
    for (let k = 0; k < 6000; k++) {
      const g = await cached.create(root.id, Buffer.from(`p${k}`), file(), T(2));
      await cached.getInode(g.id);
      ids.push(g.id);
    }
    inner.setAttrMany = () => Promise.reject(new VfsError('JUKEBOX', 'database unreachable'));
    inner.setAttr = () => Promise.reject(new VfsError('JUKEBOX', 'database unreachable'));
    let refused = 0;
    for (const id of ids) await cached.setAttr(id, { growTo: 10, mtime: T(3), ctime: T(3) }).catch(() => refused++);
    const pending = (cached as unknown as { pending: Map<number, unknown> }).pending.size;
    assert.ok(pending <= 4096, `pending ${pending} > 4096`);
    assert.ok(refused >= 6000 - 4096, `${refused} changes past the cap refused (written through to a failing store)`);
  });
  it('a batch that fails at close does not skip the others: every size is written', async () => {
    const { inner, cached, root } = await setup(false);
    const ids: number[] = [];
    for (let k = 0; k < 600; k++) {
      const g = await cached.create(root.id, Buffer.from(`q${k}`), file(), T(2));
      await cached.getInode(g.id);
      ids.push(g.id);
    }
    for (const id of ids) await cached.setAttr(id, { growTo: 10, mtime: T(3), ctime: T(3) });
    const many = inner.setAttrMany.bind(inner);
    let calls = 0;
    inner.setAttrMany = (l) => (++calls === 1 ? Promise.reject(new VfsError('JUKEBOX', 'failover blip')) : many(l));
    await cached.close();
    let written = 0;
    for (const id of ids) if ((await inner.getInode(id))!.size === 10) written++;
    assert.equal(calls, 3, 'every batch tried');
    assert.equal(written, 600, `sizes written at close: ${written} of 600`);
  });
});
