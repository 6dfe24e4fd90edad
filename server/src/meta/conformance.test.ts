// The MetadataStore conformance suite: one set of tests, run against every engine (memory, embedded
// PGlite in a temp dir, postgres on a private cluster or DITTOFS_TEST_PG_URL). The memory engine is
// the reference; a differential test also replays random operation sequences on memory and on each
// SQL engine and requires identical results.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { postgresForTests, type PostgresInstance } from '../../../test/helpers/postgres.js';
import { isVfsError } from '../vfs/errors.js';
import type { Inode, Timespec } from '../vfs/types.js';
import { FileType } from '../vfs/types.js';
import { CachedMetadataStore } from './cached.js';
import { MemoryMetadataStore } from './memory.js';
import { createEmbeddedMetadataStore, createPostgresMetadataStore, PgDriver, SqlMetadataStore } from './sql/index.js';
import {
  BlockConflictError,
  type BlockRef,
  InodeMetaKind,
  type MetadataStore,
  MAX_STREAMS_PER_FILE,
  metaRecordSize,
  NamesChangedError,
} from './store.js';
import { dirInit, fileInit } from '../testing/inodes.js';

// ---------------------------------------------------------------------------------------------
// Engines

interface Fixture {
  /** The store the tests share (each test works in its own share). */
  store: MetadataStore;
  /** For persistent engines: a new, empty place, and a way to open a store on it (again). */
  place?: () => Promise<() => MetadataStore>;
  teardown(): Promise<void>;
}

interface Engine {
  name: 'memory' | 'cached' | 'embedded' | 'embedded-sqlite' | 'postgres';
  setup(): Promise<Fixture>;
}

const engines: Engine[] = [
  {
    name: 'memory',
    async setup() {
      const store = new MemoryMetadataStore();
      await store.open();
      return { store, teardown: () => store.close() };
    },
  },
  {
    // The caching layer the server puts over the SQL engines, here over memory so that the
    // differential test below compares it with the bare reference.
    name: 'cached',
    async setup() {
      const store = new CachedMetadataStore(new MemoryMetadataStore(), { flushDelayMs: 5 });
      await store.open();
      return { store, teardown: () => store.close() };
    },
  },
  {
    name: 'embedded',
    async setup() {
      const root = await mkdtemp(path.join(os.tmpdir(), 'dittofs-meta-'));
      let n = 0;
      const store = createEmbeddedMetadataStore({ path: path.join(root, 'main'), engine: 'pglite' });
      await store.open();
      return {
        store,
        place: async () => {
          const dir = path.join(root, `place-${n++}`);
          return () => createEmbeddedMetadataStore({ path: dir, engine: 'pglite' });
        },
        async teardown() {
          await store.close();
          await rm(root, { recursive: true, force: true });
        },
      };
    },
  },
  {
    name: 'embedded-sqlite',
    async setup() {
      const root = await mkdtemp(path.join(os.tmpdir(), 'dittofs-meta-sqlite-'));
      let n = 0;
      const store = createEmbeddedMetadataStore({ path: path.join(root, 'main'), engine: 'sqlite' });
      await store.open();
      return {
        store,
        place: async () => {
          const dir = path.join(root, `place-${n++}`);
          return () => createEmbeddedMetadataStore({ path: dir, engine: 'sqlite' });
        },
        async teardown() {
          await store.close();
          await rm(root, { recursive: true, force: true });
        },
      };
    },
  },
  {
    name: 'postgres',
    async setup() {
      let pg: PostgresInstance;
      try {
        pg = await postgresForTests();
      } catch (e) {
        throw new Error(
          `postgres engine: no database to test against. Install Debian's postgresql or set DITTOFS_TEST_PG_URL. ${(e as Error).message}`,
        );
      }
      // Each store gets its own schema, so an external database is left as it was found.
      const prefix = `dfs_test_${randomBytes(4).toString('hex')}`;
      const schemas: string[] = [];
      const schema = () => {
        const s = `${prefix}_${schemas.length}`;
        schemas.push(s);
        return s;
      };
      const store = createPostgresMetadataStore({ url: pg.url, schema: schema(), poolSize: 8 });
      try {
        await store.open();
      } catch (e) {
        await pg.stop();
        throw new Error(`postgres engine: cannot open a store on ${pg.url}: ${(e as Error).message}`);
      }
      return {
        store,
        place: async () => {
          const s = schema();
          return () => createPostgresMetadataStore({ url: pg.url, schema: s, poolSize: 4 });
        },
        async teardown() {
          await store.close();
          if (pg.external) {
            const d = await PgDriver.open({ url: pg.url });
            for (const s of schemas) await d.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
            await d.close();
          }
          await pg.stop();
        },
      };
    },
  },
];

// ---------------------------------------------------------------------------------------------
// Helpers

const b = (s: string): Buffer => Buffer.from(s);
const T = (sec: number, nsec = 0): Timespec => ({ sec, nsec });

async function rejectsWith(p: Promise<unknown>, errno: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isVfsError(e), `expected VfsError ${errno}, got ${String(e)}`);
    assert.equal(e.errno, errno);
    return true;
  });
}

/** Reads a whole directory in pages of `pageSize`, checking cookie order and that no entry repeats. */
async function readAll(s: MetadataStore, dir: number, pageSize: number): Promise<{ name: string; cookie: number; id: number }[]> {
  const out: { name: string; cookie: number; id: number }[] = [];
  const seen = new Set<number>();
  let cookie = 0;
  for (let pages = 0; ; pages++) {
    assert.ok(pages < 100_000, 'readdir does not terminate');
    const page = await s.readdir(dir, cookie, pageSize);
    assert.ok(page.entries.length <= pageSize, 'page larger than the limit');
    for (const e of page.entries) {
      assert.ok(e.cookie > cookie, `cookie ${e.cookie} not after ${cookie}`);
      assert.ok(!seen.has(e.cookie), `cookie ${e.cookie} returned twice`);
      seen.add(e.cookie);
      cookie = e.cookie;
      out.push({ name: e.name.toString('latin1'), cookie: e.cookie, id: e.inode.id });
    }
    if (page.eof) return out;
    assert.ok(page.entries.length > 0, 'an empty page that is not eof');
  }
}

const names = (l: { name: string }[]): string[] => l.map((e) => e.name);

function blk(index: number, version = 1, length = 4096): BlockRef {
  return { index, key: `k/${index}/${version}`, length, version };
}

// ---------------------------------------------------------------------------------------------
// The suite

for (const engine of engines) {
  describe(`MetadataStore conformance: ${engine.name}`, () => {
    let fx: Fixture | undefined;
    let shareSeq = 1000;
    let clock = 1_700_000_000;
    const now = (): Timespec => T(++clock, 123_456_789);

    before(async () => {
      fx = await engine.setup();
    });
    after(async () => {
      await fx?.teardown();
    });

    const S = (): MetadataStore => {
      if (!fx) throw new Error(`${engine.name} engine did not start (see the before hook's error)`);
      return fx.store;
    };
    /** A fresh share's root directory. */
    const freshRoot = async (): Promise<Inode> => S().ensureRoot(shareSeq++, dirInit({ mtime: T(1000, 5) }));

    it('ensureRoot creates the root once per share', async () => {
      const s = S();
      const share = shareSeq++;
      const root = await s.ensureRoot(share, dirInit({ mode: 0o40755, uid: 7, gid: 8, mtime: T(1000, 5) }));
      assert.equal(root.type, FileType.DIR);
      assert.equal(root.mode, 0o755);
      assert.equal(root.nlink, 2);
      assert.equal(root.parent, root.id, "the root's parent is itself");
      assert.equal(root.shareId, share);
      assert.deepEqual([root.uid, root.gid], [7, 8]);
      assert.deepEqual(root.mtime, T(1000, 5));
      assert.deepEqual(root.ctime, T(1000, 5));
      const again = await s.ensureRoot(share, dirInit({ mode: 0o700, mtime: T(2000) }));
      assert.deepEqual(again, root);
      const other = await s.ensureRoot(shareSeq++, dirInit());
      assert.notEqual(other.id, root.id);
      assert.deepEqual(await s.getInode(root.id), root);
      // Concurrent first uses of a share (several pods starting at once) agree on one root.
      const share2 = shareSeq++;
      const roots = await Promise.all(Array.from({ length: 10 }, () => s.ensureRoot(share2, dirInit({ mtime: T(1000, 5) }))));
      for (const r of roots) assert.deepEqual(r, roots[0]);
      assert.deepEqual(await s.usage(share2), { files: 1, bytes: 4096 });
    });

    it('create and lookup round-trip every field', async () => {
      const s = S();
      const root = await freshRoot();
      const t = now();
      const f = await s.create(
        root.id,
        b('file'),
        fileInit({
          mode: 0o104755,
          uid: 4_294_967_294,
          gid: 12,
          size: 2 ** 40 + 3,
          atime: T(5, 1),
          mtime: T(6, 999_999_999),
          createVerifier: Buffer.from('12345678'),
        }),
        t,
      );
      assert.equal(f.type, FileType.REG);
      assert.equal(f.mode, 0o4755, 'mode keeps only the permission bits');
      assert.deepEqual([f.uid, f.gid, f.size, f.nlink, f.parent], [4_294_967_294, 12, 2 ** 40 + 3, 1, 0]);
      assert.ok(Number.isSafeInteger(f.generation) && f.generation >= 1, `generation ${f.generation}`);
      assert.deepEqual([f.atime, f.mtime, f.ctime], [T(5, 1), T(6, 999_999_999), t]);
      assert.deepEqual(f.createVerifier, Buffer.from('12345678'));
      assert.equal(f.target, null);
      assert.equal(f.shareId, root.shareId);
      assert.deepEqual(await s.lookup(root.id, b('file')), f);
      assert.deepEqual(await s.getInode(f.id), f);

      const l = await s.create(
        root.id,
        b('link'),
        fileInit({ type: FileType.LNK, mode: 0o777, target: Buffer.from([0x2f, 0xff, 0x00, 0x41]) }),
        now(),
      );
      assert.deepEqual((await s.getInode(l.id))?.target, Buffer.from([0x2f, 0xff, 0x00, 0x41]));
      assert.deepEqual((await s.getInode(l.id))?.atime, l.ctime, 'times default to now');
      const dev = await s.create(root.id, b('dev'), fileInit({ type: FileType.CHR, rdevMajor: 4, rdevMinor: 64 }), now());
      assert.deepEqual([dev.rdevMajor, dev.rdevMinor], [4, 64]);

      const dirAfter = await s.getInode(root.id);
      assert.deepEqual(dirAfter?.mtime, dev.ctime, 'create touches the directory mtime');
      assert.deepEqual(dirAfter?.ctime, dev.ctime, 'create touches the directory ctime');
      assert.equal(dirAfter?.nlink, 2, 'files do not change a directory link count');
      assert.equal(await s.lookup(root.id, b('nope')), null);
      assert.equal(await s.getInode(987_654_321), null);
    });

    it('names are bytes: not UTF-8, case-sensitive, distinct', async () => {
      const s = S();
      const root = await freshRoot();
      const raw = [
        Buffer.from([0xff]),
        Buffer.from([0xfe]),
        Buffer.from([0xc3, 0xa9]),
        Buffer.from('e\u0301'),
        b('A'),
        b('a'),
        Buffer.alloc(255, 0x61),
      ];
      const ids = [];
      for (const n of raw) ids.push((await s.create(root.id, n, fileInit(), now())).id);
      for (let i = 0; i < raw.length; i++) assert.equal((await s.lookup(root.id, raw[i]!))?.id, ids[i]);
      const listed = (await s.readdir(root.id, 0, 100)).entries.map((e) => e.name);
      assert.deepEqual(listed, raw);
    });

    it('EXIST, STALE and NOTDIR on create, lookup and readdir', async () => {
      const s = S();
      const root = await freshRoot();
      const f = await s.create(root.id, b('x'), fileInit(), now());
      await s.create(root.id, b('d'), dirInit(), now());
      await rejectsWith(s.create(root.id, b('x'), fileInit(), now()), 'EXIST');
      await rejectsWith(s.create(root.id, b('x'), dirInit(), now()), 'EXIST');
      await rejectsWith(s.create(root.id, b('d'), fileInit(), now()), 'EXIST');
      await rejectsWith(s.create(f.id, b('y'), fileInit(), now()), 'NOTDIR');
      await rejectsWith(s.create(999_999_999, b('y'), fileInit(), now()), 'STALE');
      await rejectsWith(s.lookup(f.id, b('y')), 'NOTDIR');
      await rejectsWith(s.lookup(999_999_999, b('y')), 'STALE');
      await rejectsWith(s.readdir(f.id, 0, 10), 'NOTDIR');
      await rejectsWith(s.readdir(999_999_999, 0, 10), 'STALE');
      const before = await s.getInode(root.id);
      await rejectsWith(s.create(root.id, b('x'), fileInit(), now()), 'EXIST');
      assert.deepEqual(await s.getInode(root.id), before, 'a failed create changes nothing');
      // ... and uses no cookie: the next entry gets the next one.
      const cookies = (await s.readdir(root.id, 0, 10)).entries.map((e) => e.cookie);
      await s.create(root.id, b('z'), fileInit(), now());
      const after = (await s.readdir(root.id, 0, 10)).entries.map((e) => e.cookie);
      assert.deepEqual(after, [...cookies, cookies.at(-1)! + 1]);
    });

    it('directories: nlink, parent, rmdir', async () => {
      const s = S();
      const root = await freshRoot();
      const t = now();
      const d = await s.create(root.id, b('d'), dirInit({ mode: 0o2775 }), t);
      assert.deepEqual([d.type, d.mode, d.nlink, d.parent, d.size], [FileType.DIR, 0o2775, 2, root.id, 4096]);
      assert.equal((await s.getInode(root.id))?.nlink, 3);
      const sub = await s.create(d.id, b('sub'), dirInit(), now());
      assert.equal(sub.parent, d.id);
      assert.equal((await s.getInode(d.id))?.nlink, 3);
      await s.create(d.id, b('f'), fileInit(), now());
      assert.equal((await s.getInode(d.id))?.nlink, 3);
      await rejectsWith(s.remove(root.id, b('d'), true, now()), 'NOTEMPTY');
      await rejectsWith(s.remove(root.id, b('d'), false, now()), 'ISDIR');
      await rejectsWith(s.remove(d.id, b('f'), true, now()), 'NOTDIR');
      await rejectsWith(s.remove(d.id, b('missing'), false, now()), 'NOENT');
      await rejectsWith(s.remove(d.id, b('missing'), true, now()), 'NOENT');
      const rf = await s.remove(d.id, b('f'), false, now());
      assert.equal(rf.freed, true);
      // The SQL stores hand back the directory as changed (one read less per REMOVE): exactly the stored one.
      if (engine.name === 'embedded-sqlite' || engine.name === 'postgres') assert.ok(rf.dir, 'remove returns the directory');
      if (rf.dir) assert.deepEqual(rf.dir, await s.getInode(d.id));
      assert.equal(rf.noBlocks ?? true, true, 'an empty file has no blocks');
      const withData = await s.create(d.id, b('data'), fileInit(), now());
      await s.putBlock(withData.id, blk(0));
      const rd = await s.remove(d.id, b('data'), false, now());
      assert.equal(rd.freed, true);
      assert.notEqual(rd.noBlocks, true, 'a file with a block must have it freed');
      assert.deepEqual(await s.dropBlocks(withData.id, 0), [blk(0)]);
      const t2 = now();
      const rs = await s.remove(d.id, b('sub'), true, t2);
      assert.equal(rs.freed, true);
      assert.equal(rs.inode.nlink, 0);
      assert.deepEqual(rs.inode.ctime, t2);
      assert.equal(await s.getInode(sub.id), null);
      const dAfter = await s.getInode(d.id);
      assert.equal(dAfter?.nlink, 2);
      assert.deepEqual([dAfter?.mtime, dAfter?.ctime], [t2, t2]);
      await s.remove(root.id, b('d'), true, now());
      assert.equal((await s.getInode(root.id))?.nlink, 2);
      assert.equal(await s.lookup(root.id, b('d')), null);
    });

    it('readdir: cookies start at 3, pages of 1, 7 and 1000 over 250 entries', async () => {
      const s = S();
      const root = await freshRoot();
      const empty = await s.readdir(root.id, 0, 10);
      assert.deepEqual(empty, { entries: [], eof: true });
      const want: string[] = [];
      for (let i = 0; i < 250; i++) {
        const n = `f${String(i).padStart(3, '0')}`;
        want.push(n);
        await s.create(root.id, b(n), i % 25 === 0 ? dirInit() : fileInit(), now());
      }
      for (const size of [1, 7, 1000]) {
        const all = await readAll(s, root.id, size);
        assert.deepEqual(names(all), want, `page size ${size}`);
        assert.equal(all[0]?.cookie, 3);
        assert.deepEqual(
          all.map((e) => e.cookie),
          want.map((_, i) => 3 + i),
        );
      }
      // Stable: the same cookies every time; any cookie resumes where it left off.
      const all = await readAll(s, root.id, 1000);
      const mid = all[99]!;
      const rest = await s.readdir(root.id, mid.cookie, 3);
      assert.deepEqual(
        rest.entries.map((e) => e.name.toString()),
        want.slice(100, 103),
      );
      assert.equal(rest.eof, false);
      const last = await s.readdir(root.id, all[248]!.cookie, 1);
      assert.equal(last.entries.length, 1);
      assert.equal(last.eof, true, 'eof on the page holding the last entry');
      assert.deepEqual(await s.readdir(root.id, all[249]!.cookie, 10), { entries: [], eof: true });
      const zero = await s.readdir(root.id, 0, 0);
      assert.deepEqual(zero, { entries: [], eof: false });
      const entry = (await s.readdir(root.id, 0, 1)).entries[0]!;
      assert.deepEqual(entry.inode, await s.lookup(root.id, b('f000')), 'entries carry their inode');
    });

    it('readdir: deletions and additions between pages', async () => {
      const s = S();
      const root = await freshRoot();
      const alive: string[] = [];
      for (let i = 0; i < 250; i++) {
        await s.create(root.id, b(`e${i}`), fileInit(), now());
        alive.push(`e${i}`);
      }
      const seen: string[] = [];
      const seenSet = new Set<string>();
      const deleted = new Set<string>();
      let cookie = 0;
      let round = 0;
      for (;;) {
        const page = await s.readdir(root.id, cookie, 7);
        for (const e of page.entries) {
          const n = e.name.toString();
          assert.ok(!seenSet.has(n), `${n} returned twice`);
          assert.ok(!deleted.has(n), `${n} returned after its deletion`);
          seenSet.add(n);
          seen.push(n);
          cookie = e.cookie;
        }
        if (page.eof) break;
        round++;
        // Delete an entry behind the cursor, the next one ahead and one far ahead.
        const unseen = alive.filter((n) => !seenSet.has(n) && n.startsWith('e'));
        const victims = [seen.filter((n) => !deleted.has(n)).at(-2), unseen[0], unseen[40]];
        for (const n of victims) {
          if (n === undefined || deleted.has(n)) continue;
          await s.remove(root.id, b(n), false, now());
          deleted.add(n);
          alive.splice(alive.indexOf(n), 1);
        }
        // Add one: it sorts after every existing cookie, so this listing must reach it.
        if (round <= 20) {
          await s.create(root.id, b(`new${round}`), fileInit(), now());
          alive.push(`new${round}`);
        }
      }
      assert.ok(deleted.size > 40);
      const remaining = names(await readAll(s, root.id, 1000));
      for (const n of remaining) assert.ok(seenSet.has(n), `${n} was never returned`);
      for (let r = 1; r <= 20; r++) assert.ok(seenSet.has(`new${r}`), `new${r} (created after the last cookie) was not returned`);
      // Cookies are never reused: a new entry after deleting the last one gets a larger cookie.
      const before = await readAll(s, root.id, 1000);
      const lastEntry = before.at(-1)!;
      await s.remove(root.id, b(lastEntry.name), false, now());
      const again = await s.create(root.id, b(lastEntry.name), fileInit(), now());
      const afterList = await readAll(s, root.id, 1000);
      const re = afterList.find((e) => e.id === again.id)!;
      assert.ok(re.cookie > lastEntry.cookie, 'a cookie was reused');
    });

    it('rename within a directory and across directories', async () => {
      const s = S();
      const root = await freshRoot();
      const a = await s.create(root.id, b('a'), dirInit(), now());
      const c = await s.create(root.id, b('c'), dirInit(), now());
      const f = await s.create(a.id, b('f'), fileInit(), now());
      const oldCookie = (await s.readdir(a.id, 0, 10)).entries[0]!.cookie;

      const t1 = now();
      assert.deepEqual(await s.rename(a.id, b('f'), a.id, b('g'), t1), { replaced: null, moved: f.id });
      assert.equal(await s.lookup(a.id, b('f')), null);
      const g = await s.lookup(a.id, b('g'));
      assert.equal(g?.id, f.id);
      assert.deepEqual(g?.ctime, t1, 'rename changes the ctime of what moved');
      const aAfter = await s.getInode(a.id);
      assert.deepEqual([aAfter?.mtime, aAfter?.ctime, aAfter?.nlink], [t1, t1, 2]);
      const page = await s.readdir(a.id, 0, 10);
      assert.equal(page.entries.length, 1);
      assert.ok(page.entries[0]!.cookie > oldCookie, 'the new name gets a new cookie');

      const t2 = now();
      await s.rename(a.id, b('g'), c.id, b('h'), t2);
      assert.equal(await s.lookup(a.id, b('g')), null);
      assert.equal((await s.lookup(c.id, b('h')))?.id, f.id);
      for (const d of [a.id, c.id]) {
        const x = await s.getInode(d);
        assert.deepEqual([x?.mtime, x?.ctime], [t2, t2]);
      }

      // A directory moving between directories moves its ".." link.
      const sub = await s.create(a.id, b('sub'), dirInit(), now());
      assert.equal((await s.getInode(a.id))?.nlink, 3);
      await s.rename(a.id, b('sub'), c.id, b('sub2'), now());
      assert.equal((await s.getInode(a.id))?.nlink, 2);
      assert.equal((await s.getInode(c.id))?.nlink, 3);
      assert.equal((await s.getInode(sub.id))?.parent, c.id);
      // ... and within one directory changes neither.
      await s.rename(c.id, b('sub2'), c.id, b('sub3'), now());
      assert.equal((await s.getInode(c.id))?.nlink, 3);
      assert.equal((await s.getInode(sub.id))?.parent, c.id);
      assert.deepEqual(names(await readAll(s, c.id, 10)), ['h', 'sub3']);
    });

    it('rename over an existing file, over an empty directory', async () => {
      const s = S();
      const root = await freshRoot();
      const x = await s.create(root.id, b('x'), fileInit({ size: 10 }), now());
      const y = await s.create(root.id, b('y'), fileInit({ size: 20 }), now());
      const t = now();
      const r = await s.rename(root.id, b('x'), root.id, b('y'), t);
      assert.ok(r.replaced);
      assert.equal(r.replaced.freed, true);
      assert.equal(r.replaced.inode.id, y.id);
      assert.equal(r.replaced.inode.nlink, 0);
      assert.deepEqual(r.replaced.inode.ctime, t);
      assert.equal(await s.getInode(y.id), null);
      assert.equal((await s.lookup(root.id, b('y')))?.id, x.id);
      assert.deepEqual(names(await readAll(s, root.id, 10)), ['y']);

      // The victim has another link: it survives with one link fewer.
      const v = await s.create(root.id, b('v'), fileInit(), now());
      await s.link(v.id, root.id, b('v2'), now());
      const r2 = await s.rename(root.id, b('y'), root.id, b('v'), now());
      assert.deepEqual([r2.replaced?.freed, r2.replaced?.inode.id, r2.replaced?.inode.nlink], [false, v.id, 1]);
      assert.equal((await s.getInode(v.id))?.nlink, 1);

      // Directory over an empty directory, within and across directories.
      const p = await s.create(root.id, b('p'), dirInit(), now());
      const q = await s.create(root.id, b('q'), dirInit(), now());
      const d1 = await s.create(p.id, b('d1'), dirInit(), now());
      const d2 = await s.create(p.id, b('d2'), dirInit(), now());
      assert.equal((await s.getInode(p.id))?.nlink, 4);
      const r3 = await s.rename(p.id, b('d1'), p.id, b('d2'), now());
      assert.deepEqual([r3.replaced?.freed, r3.replaced?.inode.id, r3.replaced?.inode.nlink], [true, d2.id, 0]);
      assert.equal((await s.getInode(p.id))?.nlink, 3);
      const e = await s.create(q.id, b('e'), dirInit(), now());
      assert.equal((await s.getInode(q.id))?.nlink, 3);
      const r4 = await s.rename(p.id, b('d2'), q.id, b('e'), now());
      assert.deepEqual([r4.replaced?.freed, r4.replaced?.inode.id], [true, e.id]);
      assert.equal((await s.getInode(p.id))?.nlink, 2);
      assert.equal((await s.getInode(q.id))?.nlink, 3);
      assert.equal((await s.getInode(d1.id))?.parent, q.id);
      assert.equal(await s.getInode(e.id), null);
    });

    it('rename with an expectation moves nothing when a name holds another inode', async () => {
      const s = S();
      const root = await freshRoot();
      const x = await s.create(root.id, b('x'), fileInit(), now());
      const y = await s.create(root.id, b('y'), fileInit(), now());
      const z = await s.create(root.id, b('z'), fileInit(), now());
      const changed = (e: unknown) => e instanceof NamesChangedError;
      // The source holds another inode than the one expected.
      await assert.rejects(s.rename(root.id, b('x'), root.id, b('w'), now(), { moving: z.id, victim: null }), changed);
      // The destination is taken where it was expected free, and holds another inode than the one expected.
      await assert.rejects(s.rename(root.id, b('x'), root.id, b('y'), now(), { moving: x.id, victim: null }), changed);
      await assert.rejects(s.rename(root.id, b('x'), root.id, b('y'), now(), { moving: x.id, victim: z.id }), changed);
      // The destination is free where a file was expected.
      await assert.rejects(s.rename(root.id, b('x'), root.id, b('w'), now(), { moving: x.id, victim: y.id }), changed);
      assert.equal((await s.lookup(root.id, b('x')))?.id, x.id);
      assert.equal((await s.lookup(root.id, b('y')))?.id, y.id);
      assert.equal((await s.getInode(y.id))?.nlink, 1);
      assert.deepEqual(names(await readAll(s, root.id, 10)).sort(), ['x', 'y', 'z']);
      // As expected: moved.
      const r = await s.rename(root.id, b('x'), root.id, b('y'), now(), { moving: x.id, victim: y.id });
      assert.equal(r.replaced?.inode.id, y.id);
      await s.rename(root.id, b('y'), root.id, b('w'), now(), { moving: x.id, victim: null });
      assert.deepEqual(names(await readAll(s, root.id, 10)).sort(), ['w', 'z']);
    });

    it('reserveInodeIds: no later create gets an id up to the one reserved; a lower one moves nothing back', async () => {
      const s = S();
      const root = await freshRoot();
      const a = await s.create(root.id, b('a'), fileInit(), now());
      await s.reserveInodeIds(a.id + 50);
      const c = await s.create(root.id, b('c'), fileInit(), now());
      assert.ok(c.id > a.id + 50, `${c.id} after reserving up to ${a.id + 50}`);
      await s.reserveInodeIds(a.id);
      const d = await s.create(root.id, b('d'), fileInit(), now());
      assert.ok(d.id > c.id, `${d.id} after ${c.id}`);
    });

    it('remove with an expectation removes nothing when the name holds another inode', async () => {
      const s = S();
      const root = await freshRoot();
      const x = await s.create(root.id, b('x'), fileInit(), now());
      const d = await s.create(root.id, b('d'), dirInit(), now());
      const changed = (e: unknown) => e instanceof NamesChangedError;
      await assert.rejects(s.remove(root.id, b('x'), false, now(), d.id), changed);
      await assert.rejects(s.remove(root.id, b('d'), true, now(), x.id), changed);
      assert.deepEqual(names(await readAll(s, root.id, 10)).sort(), ['d', 'x']);
      assert.equal((await s.remove(root.id, b('x'), false, now(), x.id)).inode.id, x.id);
      assert.equal((await s.remove(root.id, b('d'), true, now(), d.id)).inode.id, d.id);
      assert.deepEqual(names(await readAll(s, root.id, 10)), []);
    });

    it('rename errors leave everything as it was', async () => {
      const s = S();
      const root = await freshRoot();
      const d = await s.create(root.id, b('d'), dirInit(), now());
      const full = await s.create(root.id, b('full'), dirInit(), now());
      await s.create(full.id, b('child'), fileInit(), now());
      const f = await s.create(root.id, b('f'), fileInit(), now());
      const snapshot = async () => [
        await readAll(s, root.id, 100),
        await s.getInode(root.id),
        await s.getInode(d.id),
        await s.getInode(f.id),
      ];
      const before = await snapshot();
      await rejectsWith(s.rename(root.id, b('d'), root.id, b('full'), now()), 'NOTEMPTY');
      await rejectsWith(s.rename(root.id, b('d'), root.id, b('f'), now()), 'NOTDIR');
      await rejectsWith(s.rename(root.id, b('f'), root.id, b('d'), now()), 'ISDIR');
      await rejectsWith(s.rename(root.id, b('missing'), root.id, b('x'), now()), 'NOENT');
      await rejectsWith(s.rename(f.id, b('x'), root.id, b('x'), now()), 'NOTDIR');
      await rejectsWith(s.rename(root.id, b('f'), f.id, b('x'), now()), 'NOTDIR');
      await rejectsWith(s.rename(999_999_999, b('f'), root.id, b('x'), now()), 'STALE');
      await rejectsWith(s.rename(root.id, b('f'), 999_999_999, b('x'), now()), 'STALE');
      assert.deepEqual(await snapshot(), before);
    });

    it('rename never moves a directory into itself or its subtree, at any depth (4,100 levels)', async () => {
      const s = S();
      const root = await freshRoot();
      const top = await s.create(root.id, b('top'), dirInit(), now());
      const sibling = await s.create(root.id, b('sibling'), dirInit(), now());
      await rejectsWith(s.rename(root.id, b('top'), top.id, b('self'), now()), 'INVAL');
      // Deeper than any fixed bound a walk might give up at (the vfs used to stop at 4,096).
      const depth = 4100;
      const chain: Inode[] = [top];
      for (let i = 0; i < depth; i++) chain.push(await s.create(chain.at(-1)!.id, b(`d${i}`), dirInit(), now()));
      const bottom = chain.at(-1)!;
      const topBefore = await s.getInode(top.id);
      await rejectsWith(s.rename(root.id, b('top'), bottom.id, b('top'), now()), 'INVAL');
      await rejectsWith(s.rename(top.id, b('d0'), bottom.id, b('d0'), now()), 'INVAL');
      // A replace does not get around it: the refused move removes nothing at the target.
      await s.create(bottom.id, b('victim'), dirInit(), now());
      await rejectsWith(s.rename(root.id, b('top'), bottom.id, b('victim'), now()), 'INVAL');
      assert.ok(await s.lookup(bottom.id, b('victim')));
      await s.remove(bottom.id, b('victim'), true, now());
      // Nothing changed.
      assert.equal((await s.lookup(root.id, b('top')))?.id, top.id);
      assert.deepEqual(await s.getInode(top.id), topBefore);
      assert.deepEqual((await s.readdir(bottom.id, 0, 10)).entries, []);
      // Legal moves in the same deep tree still work: a sibling to the bottom, the bottom up to the
      // root, and then the top below the former bottom (no longer inside it).
      await s.rename(root.id, b('sibling'), bottom.id, b('sibling'), now());
      assert.equal((await s.getInode(sibling.id))?.parent, bottom.id);
      await s.rename(chain.at(-2)!.id, b(`d${depth - 1}`), root.id, b('up'), now());
      await s.rename(root.id, b('top'), bottom.id, b('top'), now());
      assert.equal((await s.getInode(top.id))?.parent, bottom.id);
      await rejectsWith(s.rename(root.id, b('up'), chain[depth - 1]!.id, b('up'), now()), 'INVAL');
      // The deepest directory still reaches the root: up through the whole chain, the top, and the
      // former bottom, which the root names.
      let cur = (await s.getInode(chain[depth - 1]!.id))!;
      for (let steps = 0; cur.parent !== root.id; steps++) {
        assert.ok(steps <= depth + 2, `no way up from inode ${chain[depth - 1]!.id}: a cycle`);
        cur = (await s.getInode(cur.parent))!;
      }
      assert.equal(cur.id, bottom.id);
      assert.equal((await s.lookup(root.id, b('up')))?.id, bottom.id);
    });

    it('rename onto another link of the same inode, or onto itself, is a no-op', async () => {
      const s = S();
      const root = await freshRoot();
      const d = await s.create(root.id, b('d'), dirInit(), now());
      const f = await s.create(root.id, b('f'), fileInit(), now());
      await s.link(f.id, d.id, b('g'), now());
      const snapshot = async () => [
        await readAll(s, root.id, 100),
        await readAll(s, d.id, 100),
        await s.getInode(root.id),
        await s.getInode(d.id),
        await s.getInode(f.id),
      ];
      const before = await snapshot();
      // A no-op replaces nothing, and names the entry's own inode as what it moved.
      assert.deepEqual(await s.rename(root.id, b('f'), d.id, b('g'), now()), { replaced: null, moved: f.id });
      assert.deepEqual(await s.rename(root.id, b('f'), root.id, b('f'), now()), { replaced: null, moved: f.id });
      assert.deepEqual(await s.rename(root.id, b('d'), root.id, b('d'), now()), { replaced: null, moved: d.id });
      assert.deepEqual(await snapshot(), before);
      assert.equal((await s.getInode(f.id))?.nlink, 2);
    });

    it('hard links and unlink', async () => {
      const s = S();
      const root = await freshRoot();
      const d = await s.create(root.id, b('d'), dirInit(), now());
      const f = await s.create(root.id, b('f'), fileInit(), now());
      const t = now();
      const l = await s.link(f.id, d.id, b('l'), t);
      assert.equal(l.id, f.id);
      assert.equal(l.nlink, 2);
      assert.deepEqual(l.ctime, t);
      const dAfter = await s.getInode(d.id);
      assert.deepEqual([dAfter?.mtime, dAfter?.ctime, dAfter?.nlink], [t, t, 2]);
      assert.equal((await s.lookup(d.id, b('l')))?.id, f.id);
      assert.deepEqual(await s.getInode(f.id), l);
      await rejectsWith(s.link(f.id, d.id, b('l'), now()), 'EXIST');
      await rejectsWith(s.link(f.id, root.id, b('d'), now()), 'EXIST');
      await rejectsWith(s.link(d.id, root.id, b('dl'), now()), 'ISDIR');
      await rejectsWith(s.link(f.id, f.id, b('x'), now()), 'NOTDIR');
      await rejectsWith(s.link(999_999_999, d.id, b('x'), now()), 'STALE');
      await rejectsWith(s.link(f.id, 999_999_999, b('x'), now()), 'STALE');
      assert.equal((await s.getInode(f.id))?.nlink, 2);

      const t2 = now();
      const r1 = await s.remove(root.id, b('f'), false, t2);
      assert.equal(r1.freed, false, 'another link remains');
      assert.equal(r1.inode.nlink, 1);
      assert.deepEqual(r1.inode.ctime, t2);
      assert.deepEqual(await s.getInode(f.id), r1.inode);
      const r2 = await s.remove(d.id, b('l'), false, now());
      assert.equal(r2.freed, true);
      assert.equal(r2.inode.nlink, 0);
      assert.equal(await s.getInode(f.id), null);
    });

    it('setAttrMany: the changes of several inodes, each as after; null for one that does not exist', async () => {
      const s = S();
      if (!s.setAttrMany) return;
      const root = await freshRoot();
      const f = await s.create(root.id, b('f'), fileInit({ size: 100 }), now());
      const g = await s.create(root.id, b('g'), fileInit(), now());
      const mt = T(1_600_000_001, 999_999_999);
      const out = await s.setAttrMany([
        { id: f.id, changes: { growTo: 50, mtime: mt, ctime: mt } },
        { id: 987_654_321, changes: { growTo: 1 } },
        { id: g.id, changes: { growTo: 4096, mtime: mt, ctime: mt } },
      ]);
      assert.equal(out.length, 3);
      assert.equal(out[0]!.size, 100, 'growTo never shrinks');
      assert.deepEqual(out[0]!.mtime, mt);
      assert.equal(out[1], null);
      assert.equal(out[2]!.size, 4096);
      assert.deepEqual(await s.getInode(g.id), out[2]);
      assert.deepEqual(await s.setAttrMany([]), []);
    });

    it('setAttr: modes, owners, sizes, growTo, times with nanoseconds, create verifier, ctime guard', async () => {
      const s = S();
      const root = await freshRoot();
      const f = await s.create(root.id, b('f'), fileInit({ size: 100, createVerifier: Buffer.from('abcdefgh') }), now());
      let i = await s.setAttr(f.id, { mode: 0o106750, uid: 0, gid: 4_294_967_295 });
      assert.deepEqual([i.mode, i.uid, i.gid, i.size], [0o6750, 0, 4_294_967_295, 100]);
      i = await s.setAttr(f.id, { size: 10 });
      assert.equal(i.size, 10);
      i = await s.setAttr(f.id, { growTo: 5 });
      assert.equal(i.size, 10, 'growTo never shrinks');
      i = await s.setAttr(f.id, { growTo: 2 ** 53 - 1 });
      assert.equal(i.size, 2 ** 53 - 1);
      i = await s.setAttr(f.id, { size: 0 });
      assert.equal(i.size, 0);
      i = await s.setAttr(f.id, { size: 50, growTo: 70 });
      assert.equal(i.size, 70, 'size first, then growTo');
      i = await s.setAttr(f.id, { size: 50, growTo: 30 });
      assert.equal(i.size, 50);
      const at = T(1_600_000_000, 1);
      const mt = T(1_600_000_001, 999_999_999);
      const ct = T(1_600_000_002, 500);
      i = await s.setAttr(f.id, { atime: at, mtime: mt, ctime: ct });
      assert.deepEqual([i.atime, i.mtime, i.ctime], [at, mt, ct]);
      assert.deepEqual(i.createVerifier, Buffer.from('abcdefgh'));
      i = await s.setAttr(f.id, { clearCreateVerifier: true });
      assert.equal(i.createVerifier, null);
      assert.deepEqual(await s.getInode(f.id), i);

      // The guard: applies only when the ctime matches, else NOT_SYNC and nothing changes.
      i = await s.setAttr(f.id, { mode: 0o600, ctime: T(1_600_000_003) }, ct);
      assert.equal(i.mode, 0o600);
      const before = await s.getInode(f.id);
      await rejectsWith(s.setAttr(f.id, { mode: 0o644, size: 1 }, ct), 'NOT_SYNC');
      await rejectsWith(s.setAttr(f.id, { mode: 0o644 }, T(1_600_000_003, 1)), 'NOT_SYNC');
      assert.deepEqual(await s.getInode(f.id), before);
      assert.deepEqual(await s.setAttr(f.id, {}), before, 'no changes, no change');
      await rejectsWith(s.setAttr(999_999_999, { mode: 0o644 }), 'STALE');
      await rejectsWith(s.setAttr(999_999_999, { mode: 0o644 }, T(1)), 'STALE');
    });

    it('setAttr clearMode: clears those bits from the mode as it is then (after a mode given with it)', async () => {
      const s = S();
      const root = await freshRoot();
      const f = await s.create(root.id, b('f'), fileInit({ mode: 0o6755 }), now());
      // The mode moved on since whoever asked read it: only the named bits go.
      await s.setAttr(f.id, { mode: 0o4700 });
      let i = await s.setAttr(f.id, { clearMode: 0o6000, growTo: 3 });
      assert.deepEqual([i.mode, i.size], [0o700, 3]);
      i = await s.setAttr(f.id, { mode: 0o6711, clearMode: 0o4000 });
      assert.equal(i.mode, 0o2711);
      i = await s.setAttr(f.id, { clearMode: 0o4000 });
      assert.equal(i.mode, 0o2711, 'a bit already clear stays clear; nothing else moves');
      assert.deepEqual(await s.getInode(f.id), i);
    });

    it('creation time and DOS attributes: set at create, changed only explicitly', async () => {
      const s = S();
      const root = await freshRoot();
      const t = now();
      const f = await s.create(root.id, b('f'), fileInit({ btime: T(42, 7), dosAttrs: 0x1 | 0x2 | 0x4 | 0x20 }), t);
      assert.deepEqual([f.btime, f.dosAttrs], [T(42, 7), 0x27]);
      const g = await s.create(root.id, b('g'), fileInit(), t);
      assert.deepEqual([g.btime, g.dosAttrs], [t, 0], 'defaults: the creation time is now, no attributes');
      assert.deepEqual(root.dosAttrs, 0);
      // Times of writes and namespace changes leave them alone.
      let i = await s.setAttr(f.id, { growTo: 10, mtime: now(), ctime: now() });
      await s.link(f.id, root.id, b('f2'), now());
      await s.rename(root.id, b('f2'), root.id, b('f3'), now());
      assert.deepEqual([(await s.getInode(f.id))?.btime, (await s.getInode(f.id))?.dosAttrs], [T(42, 7), 0x27]);
      i = await s.setAttr(f.id, { btime: T(1_600_000_000, 999_999_900), dosAttrs: 0x2000 | 0x100 | 0x200 | 0x1000 });
      assert.deepEqual([i.btime, i.dosAttrs], [T(1_600_000_000, 999_999_900), 0x3300]);
      // DIRECTORY and NORMAL are never stored, nor bits outside MS-FSCC 2.6's settable set.
      i = await s.setAttr(f.id, { dosAttrs: 0x10 | 0x80 | 0x400 | 0x20 });
      assert.equal(i.dosAttrs, 0x20);
      i = await s.setAttr(f.id, { dosAttrs: 0 });
      assert.equal(i.dosAttrs, 0);
      assert.deepEqual(await s.getInode(f.id), i);
      const listed = (await s.readdir(root.id, 0, 10)).entries.find((e) => e.inode.id === f.id);
      assert.deepEqual(listed?.inode, i, 'readdir carries them too');
      const d = await s.create(root.id, b('d'), dirInit({ dosAttrs: 0x2 }), now());
      assert.equal((await s.lookup(root.id, b('d')))?.dosAttrs, 0x2);
      void d;
    });

    it('named streams: own inodes, listed by name, removed alone or with their file', async () => {
      const s = S();
      const root = await freshRoot();
      const f = await s.create(root.id, b('f'), fileInit({ mode: 0o640 }), now());
      assert.deepEqual(await s.listStreams(f.id), []);
      assert.equal(await s.lookupStream(f.id, b('x')), null);
      const t = now();
      const a = await s.createStream(f.id, b('AFP_AfpInfo'), fileInit({ mode: 0o640 }), t);
      assert.equal(a.type, FileType.REG);
      assert.deepEqual([a.size, a.nlink, a.mode, a.parent, a.shareId], [0, 1, 0o640, 0, root.shareId]);
      assert.notEqual(a.id, f.id);
      assert.deepEqual((await s.getInode(f.id))?.ctime, t, "making a stream changes its file's ctime");
      const r = await s.createStream(f.id, b('com.apple.ResourceFork'), fileInit(), now());
      await rejectsWith(s.createStream(f.id, b('AFP_AfpInfo'), fileInit(), now()), 'EXIST');
      await rejectsWith(s.createStream(987_654_321, b('x'), fileInit(), now()), 'STALE');
      await rejectsWith(s.listStreams(987_654_321), 'STALE');
      // A stream's data and size are its own.
      await s.setAttr(a.id, { growTo: 32 });
      await s.putBlock(a.id, blk(0, 1, 32));
      assert.deepEqual(await s.lookupStream(f.id, b('AFP_AfpInfo')), await s.getInode(a.id));
      assert.equal((await s.getInode(f.id))?.size, 0);
      const list = await s.listStreams(f.id);
      assert.deepEqual(
        list.map((e) => [e.name.toString(), e.inode.id, e.inode.size]),
        [
          ['AFP_AfpInfo', a.id, 32],
          ['com.apple.ResourceFork', r.id, 0],
        ],
      );
      // Streams are not directory entries.
      assert.deepEqual(names(await readAll(s, root.id, 10)), ['f']);
      const gone = await s.removeStream(f.id, b('com.apple.ResourceFork'), now());
      assert.equal(gone.id, r.id);
      assert.equal(await s.getInode(r.id), null);
      await rejectsWith(s.removeStream(f.id, b('com.apple.ResourceFork'), now()), 'NOENT');
      // A hard link keeps them; the last unlink frees them and reports their ids.
      await s.link(f.id, root.id, b('f2'), now());
      const first = await s.remove(root.id, b('f'), false, now());
      assert.deepEqual([first.freed, first.streams], [false, []]);
      assert.ok(await s.getInode(a.id));
      const last = await s.remove(root.id, b('f2'), false, now());
      assert.deepEqual([last.freed, last.streams], [true, [a.id]]);
      assert.equal(await s.getInode(a.id), null);
      assert.deepEqual(await s.getBlocks(a.id, 0, 10), [blk(0, 1, 32)], 'block refs stay for the caller to free');
      // Rename over a file with streams frees them too.
      const v = await s.create(root.id, b('victim'), fileInit(), now());
      const vs = await s.createStream(v.id, b('s'), fileInit(), now());
      await s.create(root.id, b('src'), fileInit(), now());
      const mv = await s.rename(root.id, b('src'), root.id, b('victim'), now());
      assert.deepEqual([mv.replaced?.freed, mv.replaced?.streams], [true, [vs.id]]);
      assert.equal(await s.getInode(vs.id), null);
    });

    it('named streams: never hard-linked into a directory', async () => {
      const s = S();
      const root = await freshRoot();
      const f = await s.create(root.id, b('f'), fileInit(), now());
      const a = await s.createStream(f.id, b('ads'), fileInit(), now());
      await rejectsWith(s.link(a.id, root.id, b('alias'), now()), 'INVAL');
      assert.equal(await s.lookup(root.id, b('alias')), null);
      assert.equal((await s.getInode(a.id))?.nlink, 1);
    });

    it('named streams: at most MAX_STREAMS_PER_FILE per file', async () => {
      const s = S();
      const root = await freshRoot();
      const f = await s.create(root.id, b('many'), fileInit(), now());
      for (let i = 0; i < MAX_STREAMS_PER_FILE; i++) await s.createStream(f.id, b(`s${i}`), fileInit(), now());
      await rejectsWith(s.createStream(f.id, b('one-more'), fileInit(), now()), 'NOSPC');
      assert.equal((await s.listStreams(f.id)).length, MAX_STREAMS_PER_FILE);
      const r = await s.remove(root.id, b('many'), false, now());
      assert.equal(r.streams.length, MAX_STREAMS_PER_FILE);
    });

    it('inode records (EAs, security descriptors): per kind, replaced and removed atomically, capped, freed with the inode', async () => {
      const s = S();
      const root = await freshRoot();
      const f = await s.create(root.id, b('f'), fileInit(), now());
      const g = await s.create(root.id, b('g'), fileInit(), now());
      const { EA, SECURITY } = InodeMetaKind;
      const lim = { count: 3, bytes: 40 };
      const rec = (list: { name: Buffer; value: Buffer }[]): string[][] =>
        list.map((r) => [r.name.toString('latin1'), r.value.toString('latin1')]);
      assert.deepEqual(await s.getMeta(f.id, EA), []);
      await rejectsWith(s.getMeta(987_654_321, EA), 'STALE');
      await rejectsWith(s.putMeta(987_654_321, EA, [{ name: b('A'), value: b('1') }], lim), 'STALE');
      const t = now();
      const after1 = await s.putMeta(
        f.id,
        EA,
        [
          { name: b('B'), value: b('two') },
          { name: b('A'), value: Buffer.from([0, 255, 1]) },
        ],
        lim,
        t,
      );
      assert.deepEqual(rec(after1), [
        ['A', '\x00\xff\x01'],
        ['B', 'two'],
      ]);
      assert.deepEqual((await s.getInode(f.id))?.ctime, t, 'a change with `now` moves the ctime');
      await s.putMeta(f.id, SECURITY, [{ name: b(''), value: b('sd-bytes') }], lim);
      assert.deepEqual(rec(await s.getMeta(f.id, SECURITY)), [['', 'sd-bytes']], 'kinds are apart');
      assert.deepEqual(rec(await s.getMeta(f.id, EA)), rec(after1));
      assert.deepEqual(await s.getMeta(g.id, EA), [], 'inodes are apart');
      // Replace one, remove another, in one call; a removal of a name that is not there is no error.
      const after2 = await s.putMeta(
        f.id,
        EA,
        [
          { name: b('B'), value: b('2') },
          { name: b('A'), value: null },
          { name: b('Z'), value: null },
        ],
        lim,
      );
      assert.deepEqual(rec(after2), [['B', '2']]);
      // Over a cap: refused, nothing changed.
      await rejectsWith(s.putMeta(f.id, EA, [{ name: b('C'), value: Buffer.alloc(38) }], lim), 'NOSPC');
      await rejectsWith(
        s.putMeta(
          f.id,
          EA,
          ['C', 'D', 'E'].map((n) => ({ name: b(n), value: b('x') })),
          lim,
        ),
        'NOSPC',
      );
      assert.deepEqual(rec(await s.getMeta(f.id, EA)), [['B', '2']]);
      await s.putMeta(g.id, EA, [{ name: b('LONGER'), value: b('0123456') }], lim);
      const sizes = await s.metaSizes([f.id, g.id, root.id], EA);
      assert.deepEqual(
        [...sizes].sort((x, y) => x[0] - y[0]),
        [
          [f.id, metaRecordSize(1, 1)],
          [g.id, metaRecordSize(6, 7)],
        ],
      );
      assert.deepEqual(await s.metaSizes([], EA), new Map());
      // Records survive a rename and go with the last link.
      await s.rename(root.id, b('f'), root.id, b('f-moved'), now());
      assert.deepEqual(rec(await s.getMeta(f.id, EA)), [['B', '2']]);
      await s.remove(root.id, b('f-moved'), false, now());
      await rejectsWith(s.getMeta(f.id, SECURITY), 'STALE');
      await s.create(root.id, b('src'), fileInit(), now());
      await s.rename(root.id, b('src'), root.id, b('g'), now());
      assert.deepEqual(await s.metaSizes([g.id], EA), new Map(), 'a file replaced by a rename takes its records along');
    });

    it('block refs: put returns the replaced ref, ranges, drop from an index', async () => {
      const s = S();
      const root = await freshRoot();
      const f = await s.create(root.id, b('f'), fileInit(), now());
      const g = await s.create(root.id, b('g'), fileInit(), now());
      assert.deepEqual(await s.getBlocks(f.id, 0, 100), []);
      assert.equal(await s.putBlock(f.id, blk(0)), null);
      assert.deepEqual(await s.putBlock(f.id, blk(0, 2, 100)), blk(0));
      assert.deepEqual(await s.putBlock(f.id, blk(0, 3)), blk(0, 2, 100));
      for (const idx of [5, 1, 2, 1_000_000, 2 ** 40]) assert.equal(await s.putBlock(f.id, blk(idx)), null);
      await s.putBlock(g.id, blk(1, 9));
      assert.deepEqual(await s.getBlocks(f.id, 0, 3), [blk(0, 3), blk(1), blk(2)]);
      assert.deepEqual(await s.getBlocks(f.id, 1, 2), [blk(1)]);
      assert.deepEqual(await s.getBlocks(f.id, 3, 5), []);
      assert.deepEqual(await s.getBlocks(f.id, 2, 2), []);
      assert.deepEqual(await s.getBlocks(f.id, 0, 2 ** 41), [blk(0, 3), blk(1), blk(2), blk(5), blk(1_000_000), blk(2 ** 40)]);
      const dropped = await s.dropBlocks(f.id, 2);
      assert.deepEqual(
        dropped.sort((x, y) => x.index - y.index),
        [blk(2), blk(5), blk(1_000_000), blk(2 ** 40)],
      );
      assert.deepEqual(await s.getBlocks(f.id, 0, 2 ** 41), [blk(0, 3), blk(1)]);
      assert.deepEqual(await s.dropBlocks(f.id, 2), []);
      assert.deepEqual(await s.getBlocks(g.id, 0, 10), [blk(1, 9)], 'other inodes are untouched');
      // Refs outlive their inode until dropped: the caller frees the objects first.
      await s.remove(root.id, b('f'), false, now());
      assert.deepEqual(await s.getBlocks(f.id, 0, 10), [blk(0, 3), blk(1)]);
      assert.deepEqual(
        (await s.dropBlocks(f.id, 0)).sort((x, y) => x.index - y.index),
        [blk(0, 3), blk(1)],
      );
      assert.deepEqual(await s.getBlocks(f.id, 0, 10), []);
      assert.deepEqual(await s.dropBlocks(987_654_321, 0), []);
    });

    it('a conditional block switch: applied at the expected version, refused (unchanged) after another switch or under an older token', async () => {
      const s = S();
      const root = await freshRoot();
      const f = await s.create(root.id, b('cas'), fileInit(), now());
      const conflict = async (p: Promise<unknown>, stale: boolean): Promise<void> => {
        await assert.rejects(p, (e: unknown) => e instanceof BlockConflictError && e.stale === stale);
      };
      assert.equal(await s.putBlock(f.id, blk(0), { prevVersion: 0, token: 5 }), null);
      // A second writer that read the block before that switch: refused, nothing changed.
      await conflict(s.putBlock(f.id, { ...blk(0), key: 'other' }, { prevVersion: 0, token: 5 }), false);
      assert.deepEqual(await s.getBlocks(f.id, 0, 1), [blk(0)]);
      // Built on the new row, under the same or a newer lease: applied.
      assert.deepEqual(await s.putBlock(f.id, blk(0, 2), { prevVersion: 1, token: 7 }), blk(0));
      // A writer whose lease is older than the one the row was written under: refused for good.
      await conflict(s.putBlock(f.id, blk(0, 3), { prevVersion: 2, token: 6 }), true);
      // Tokens are per row: another block of the file is not held back by this one's.
      assert.equal(await s.putBlock(f.id, blk(1), { prevVersion: 0, token: 6 }), null);
      // A truncate under lease 9 refuses any later switch under an older token, even of a new row.
      await s.dropBlocks(f.id, 0, 9);
      assert.deepEqual(await s.getBlocks(f.id, 0, 10), []);
      await conflict(s.putBlock(f.id, blk(0), { prevVersion: 0, token: 8 }), true);
      assert.equal(await s.putBlock(f.id, blk(0), { prevVersion: 0, token: 9 }), null);
      assert.deepEqual(await s.getBlocks(f.id, 0, 10), [blk(0)]);
    });

    it('a truncate under a write lease: refused, deleting nothing, once the file was stored or cut under a newer one', async () => {
      const s = S();
      const root = await freshRoot();
      const f = await s.create(root.id, b('late-cut'), fileInit(), now());
      const stale = (p: Promise<unknown>): Promise<void> =>
        assert.rejects(p, (e: unknown) => e instanceof BlockConflictError && e.stale, 'refused as stale');
      const blocks = async (): Promise<BlockRef[]> => s.getBlocks(f.id, 0, 100);
      // Lease 5 stored blocks 0 and 1; lease 7 (a newer server) then stored block 2.
      await s.putBlock(f.id, blk(0), { prevVersion: 0, token: 5 });
      await s.putBlock(f.id, blk(1), { prevVersion: 0, token: 5 });
      await s.putBlock(f.id, blk(2), { prevVersion: 0, token: 7 });
      // A late truncate under lease 6 (expired meanwhile) would delete lease 7's row: refused.
      await stale(s.dropBlocks(f.id, 1, 6));
      assert.deepEqual(await blocks(), [blk(0), blk(1), blk(2)], 'nothing deleted');
      // Nor when the newer row is below its cut: its size would still be stored over lease 7's.
      await stale(s.dropBlocks(f.id, 3, 6));
      // Nothing changed: the fence was not raised to 6 (a switch under lease 5 still passes it).
      assert.equal(await s.putBlock(f.id, blk(3), { prevVersion: 0, token: 5 }), null);
      // Under the lease that stored the newest row, or a newer one: applied.
      assert.deepEqual(await s.dropBlocks(f.id, 3, 7), [blk(3)]);
      assert.deepEqual(await s.dropBlocks(f.id, 2, 9), [blk(2)]);
      assert.deepEqual(await blocks(), [blk(0), blk(1)]);
      // The fence alone (no row newer) refuses an older truncate too, and an older size.
      await stale(s.dropBlocks(f.id, 0, 8));
      assert.deepEqual(await blocks(), [blk(0), blk(1)]);
      await s.setAttr(f.id, { size: 8192 });
      await stale(s.setAttr(f.id, { size: 100, leaseToken: 8 }));
      assert.equal((await s.getInode(f.id))!.size, 8192, 'the size stored under lease 9 stays');
      assert.equal((await s.setAttr(f.id, { size: 4096, leaseToken: 9 })).size, 4096);
      assert.equal((await s.setAttr(f.id, { size: 4000, leaseToken: 12 })).size, 4000);
      // One server (token 0): tokens are not looked at.
      assert.deepEqual(await s.dropBlocks(f.id, 0), [blk(0), blk(1)]);
      assert.equal((await s.setAttr(f.id, { size: 0 })).size, 0);
    });

    it("a size stored under a write lease: a truncate's cut and size under an older lease are refused, block switches are not", async () => {
      const s = S();
      const root = await freshRoot();
      const f = await s.create(root.id, b('late-size'), fileInit(), now());
      const stale = (p: Promise<unknown>): Promise<void> =>
        assert.rejects(p, (e: unknown) => e instanceof BlockConflictError && e.stale, 'refused as stale');
      const size = async (): Promise<number> => (await s.getInode(f.id))!.size;
      // Lease 5 stored block 0; lease 7 (a newer server) stored only a size so far (its data in its WAL).
      await s.putBlock(f.id, blk(0), { prevVersion: 0, token: 5 });
      assert.equal((await s.setAttr(f.id, { growTo: 200, mtime: now(), ctime: now(), sizeToken: 7 })).size, 200);
      await s.flushAttrs?.(f.id); // a COMMIT: stored (a cache writes WRITEs' sizes behind)
      // A late truncate under lease 6 (expired meanwhile): its cut and its size are refused.
      await stale(s.dropBlocks(f.id, 0, 6));
      assert.deepEqual(await s.getBlocks(f.id, 0, 10), [blk(0)], 'nothing deleted');
      await stale(s.setAttr(f.id, { size: 0, leaseToken: 6 }));
      assert.equal(await size(), 200, "lease 7's size stays");
      // The size token is no fence for data: a version of lease 5 (replayed after a restart) still stores.
      assert.equal(await s.putBlock(f.id, blk(1), { prevVersion: 0, token: 5 }), null);
      // A size under an older token does not lower it; nor does one without a token.
      await s.setAttr(f.id, { growTo: 300, sizeToken: 3 });
      await s.setAttr(f.id, { growTo: 310 });
      await s.flushAttrs?.(f.id);
      await stale(s.setAttr(f.id, { size: 0, leaseToken: 6 }));
      assert.equal(await size(), 310);
      // Under lease 7 itself, or a newer one: applied; a truncate's size records its token too.
      assert.equal((await s.setAttr(f.id, { size: 100, leaseToken: 7 })).size, 100);
      assert.equal((await s.setAttr(f.id, { size: 50, leaseToken: 9 })).size, 50);
      await stale(s.setAttr(f.id, { size: 10, leaseToken: 8 }));
      // Several sizes in one call (the cache's write-behind) record their tokens as well.
      if (s.setAttrMany) {
        const [after] = await s.setAttrMany([{ id: f.id, changes: { growTo: 400, mtime: now(), ctime: now(), sizeToken: 11 } }]);
        assert.equal(after!.size, 400);
        await stale(s.setAttr(f.id, { size: 0, leaseToken: 10 }));
        await stale(s.dropBlocks(f.id, 0, 10));
        assert.equal(await size(), 400);
      }
      // One server (no tokens): nothing looked at.
      assert.equal((await s.setAttr(f.id, { size: 0 })).size, 0);
      assert.deepEqual(await s.dropBlocks(f.id, 0), [blk(0), blk(1)]);
    });

    it('fencing tokens: none handed out by a new store, then strictly increasing', async (t) => {
      if (!S().nextLeaseToken || !fx?.place) return t.skip(`${engine.name} stores hand out no fencing tokens`);
      const s = (await fx.place())();
      await s.open();
      try {
        assert.equal(await s.leaseTokensIssued!(), false, 'no lease was ever taken on a new store');
        const t1 = await s.nextLeaseToken!();
        assert.equal(await s.leaseTokensIssued!(), true);
        assert.ok((await s.nextLeaseToken!()) > t1);
      } finally {
        await s.close();
      }
    });

    it('usage counts the inodes and bytes of one share', async () => {
      const s = S();
      const root = await freshRoot();
      const other = await freshRoot();
      assert.deepEqual(await s.usage(root.shareId), { files: 1, bytes: 4096 });
      const f = await s.create(root.id, b('f'), fileInit({ size: 1000 }), now());
      const d = await s.create(root.id, b('d'), dirInit(), now());
      await s.create(d.id, b('g'), fileInit({ size: 2 ** 40 }), now());
      await s.link(f.id, d.id, b('f2'), now());
      await s.create(other.id, b('x'), fileInit({ size: 5 }), now());
      assert.deepEqual(await s.usage(root.shareId), { files: 4, bytes: 4096 * 2 + 1000 + 2 ** 40 });
      await s.setAttr(f.id, { size: 3000 });
      await s.remove(d.id, b('g'), false, now());
      assert.deepEqual(await s.usage(root.shareId), { files: 3, bytes: 4096 * 2 + 3000 });
      assert.deepEqual(await s.usage(other.shareId), { files: 2, bytes: 4096 + 5 });
      assert.deepEqual(await s.usage(999_999), { files: 0, bytes: 0 });
    });

    it('concurrent creates of one name: exactly one succeeds, the others get EXIST', async () => {
      const s = S();
      const root = await freshRoot();
      for (const init of [fileInit(), dirInit()]) {
        const name = b(init.type === FileType.DIR ? 'dir' : 'file');
        const results = await Promise.allSettled(Array.from({ length: 20 }, () => s.create(root.id, name, init, now())));
        const ok = results.filter((r) => r.status === 'fulfilled');
        assert.equal(ok.length, 1, `${ok.length} creates succeeded`);
        for (const r of results) {
          if (r.status === 'rejected') assert.equal(isVfsError(r.reason) ? r.reason.errno : String(r.reason), 'EXIST');
        }
        assert.equal((await s.lookup(root.id, name))?.id, (ok[0] as PromiseFulfilledResult<Inode>).value.id);
      }
      const list = await readAll(s, root.id, 100);
      assert.deepEqual(names(list), ['file', 'dir']);
      assert.deepEqual(
        list.map((e) => e.cookie),
        [3, 4],
        'failed creates used no cookie',
      );
      assert.equal((await s.getInode(root.id))?.nlink, 3);
      assert.deepEqual(await s.usage(root.shareId), { files: 3, bytes: 4096 * 2 });
    });

    it('concurrent creates, renames and links keep directories consistent', async (ctx) => {
      const s = S();
      const root = await freshRoot();
      const a = await s.create(root.id, b('a'), dirInit(), now());
      const c = await s.create(root.id, b('c'), dirInit(), now());
      // 30 different names at once: all succeed with distinct cookies.
      const made = await Promise.all(
        Array.from({ length: 30 }, (_, i) => s.create(a.id, b(`n${i}`), i % 3 === 0 ? dirInit() : fileInit(), now())),
      );
      const list = await readAll(s, a.id, 7);
      assert.equal(list.length, 30);
      assert.deepEqual(
        list.map((e) => e.cookie).sort((x, y) => x - y),
        Array.from({ length: 30 }, (_, i) => 3 + i),
      );
      assert.equal((await s.getInode(a.id))?.nlink, 2 + 10);

      // Opposing cross-directory moves at once (a -> c and c -> a): no deadlock, nothing lost.
      for (let i = 0; i < 10; i++) await s.create(c.id, b(`m${i}`), i % 2 ? dirInit() : fileInit(), now());
      await Promise.all([
        ...Array.from({ length: 15 }, (_, i) => s.rename(a.id, b(`n${i}`), c.id, b(`n${i}`), now())),
        ...Array.from({ length: 10 }, (_, i) => s.rename(c.id, b(`m${i}`), a.id, b(`m${i}`), now())),
      ]);
      const la = names(await readAll(s, a.id, 1000)).sort();
      const lc = names(await readAll(s, c.id, 1000)).sort();
      assert.deepEqual(
        la,
        [...Array.from({ length: 15 }, (_, i) => `n${i + 15}`), ...Array.from({ length: 10 }, (_, i) => `m${i}`)].sort(),
      );
      assert.deepEqual(lc, Array.from({ length: 15 }, (_, i) => `n${i}`).sort());
      const dirsIn = async (d: number) =>
        (await readAll(s, d, 1000)).filter((e) => made.some((m) => m.id === e.id && m.type === FileType.DIR)).length;
      const mDirs = 5;
      assert.equal((await s.getInode(a.id))?.nlink, 2 + (await dirsIn(a.id)) + mDirs);
      assert.equal((await s.getInode(c.id))?.nlink, 2 + (await dirsIn(c.id)));
      for (const m of made.filter((x) => x.type === FileType.DIR)) {
        const now2 = await s.getInode(m.id);
        const where = la.includes(`n${made.indexOf(m)}`) ? a.id : c.id;
        assert.equal(now2?.parent, where);
      }

      // Many renames onto one name: each replaces the previous; exactly one file is left.
      const t = await s.create(root.id, b('t'), dirInit(), now());
      for (let i = 0; i < 12; i++) await s.create(t.id, b(`s${i}`), fileInit(), now());
      const usageBefore = await s.usage(root.shareId);
      const rs = await Promise.all(Array.from({ length: 12 }, (_, i) => s.rename(t.id, b(`s${i}`), t.id, b('target'), now())));
      assert.equal(rs.filter((r) => r.replaced?.freed === true).length, 11);
      assert.deepEqual(names(await readAll(s, t.id, 100)), ['target']);
      assert.equal((await s.usage(root.shareId)).files, usageBefore.files - 11);

      // Links and unlinks of one inode at once: the link count follows.
      const f = await s.create(root.id, b('f'), fileInit(), now());
      await Promise.all(Array.from({ length: 10 }, (_, i) => s.link(f.id, t.id, b(`l${i}`), now())));
      assert.equal((await s.getInode(f.id))?.nlink, 11);
      const un = await Promise.all(Array.from({ length: 10 }, (_, i) => s.remove(t.id, b(`l${i}`), false, now())));
      assert.ok(un.every((r) => !r.freed));
      assert.equal((await s.getInode(f.id))?.nlink, 1);
      // Concurrent removes of one name: one wins, the rest get NOENT.
      const rm1 = await Promise.allSettled(Array.from({ length: 8 }, () => s.remove(root.id, b('f'), false, now())));
      assert.equal(rm1.filter((r) => r.status === 'fulfilled').length, 1);
      for (const r of rm1) if (r.status === 'rejected') assert.equal(isVfsError(r.reason) ? r.reason.errno : String(r.reason), 'NOENT');
      assert.equal(await s.getInode(f.id), null);
      if (s instanceof SqlMetadataStore && s.driver instanceof PgDriver) ctx.diagnostic(`pg driver: ${JSON.stringify(s.driver.stats)}`);
    });

    it('behaves exactly like the memory engine on random operation sequences', async (t) => {
      if (engine.name === 'memory') {
        t.diagnostic('memory is the reference');
        return;
      }
      await fc.assert(
        fc.asyncProperty(fc.array(opArb, { minLength: 10, maxLength: 60, size: 'max' }), async (ops) => differential(S(), shareSeq++, ops)),
        {
          numRuns: 40,
          seed: 20250101,
        },
      );
    });

    it('gives every inode its own random generation', async () => {
      const s = S();
      const root = await freshRoot();
      const other = await freshRoot();
      const made: Inode[] = [root, other];
      for (let i = 0; i < 100; i++) made.push(await s.create(root.id, b(`g${i}`), i % 10 === 0 ? dirInit() : fileInit(), now()));
      const gens = made.map((i) => i.generation);
      for (const g of gens) assert.ok(Number.isSafeInteger(g) && g >= 1 && g < 2 ** 53, `generation ${g}`);
      assert.equal(new Set(gens).size, gens.length, 'no two inodes share a generation');
      // Spread over the whole range, not a counter: with 102 random 53-bit values, at least one
      // is above 2^48 unless the source is broken (chance of a false alarm: about 2^-510).
      assert.ok(
        gens.some((g) => g > 2 ** 48),
        `generations look small: ${gens.slice(0, 5).join(', ')}`,
      );
      // Stable: every read gives the same generation.
      for (const i of made) assert.equal((await s.getInode(i.id))?.generation, i.generation);
      // A name removed and created again is a new inode with a new generation.
      await s.remove(root.id, b('g1'), false, now());
      const fresh = await s.create(root.id, b('g1'), fileInit(), now());
      assert.notEqual(fresh.generation, made[3]!.generation);
    });

    it('persists across close and reopen', async (t) => {
      if (!fx?.place) {
        t.diagnostic(`${engine.name} is not persistent`);
        return;
      }
      const make = await fx.place();
      let s = make();
      await s.open();
      const share = 7;
      const root = await s.ensureRoot(share, dirInit({ mtime: T(1000, 5) }));
      const d = await s.create(root.id, b('d'), dirInit(), T(2000, 1));
      const f = await s.create(
        d.id,
        Buffer.from([0xff, 0x00, 0x41]),
        fileInit({ size: 12345, createVerifier: Buffer.from('verifier') }),
        T(2001, 2),
      );
      await s.create(root.id, b('ln'), fileInit({ type: FileType.LNK, target: b('/some/where') }), T(2002, 3));
      await s.link(f.id, root.id, b('hard'), T(2003, 4));
      await s.setAttr(f.id, { mode: 0o640, atime: T(3000, 999_999_999), mtime: T(3001, 1), btime: T(1, 2), dosAttrs: 0x23 });
      await s.putBlock(f.id, blk(0, 2));
      await s.putBlock(f.id, blk(3, 1, 77));
      await s.create(root.id, b('gone'), fileInit(), T(2004, 0));
      await s.remove(root.id, b('gone'), false, T(2005, 0));
      const dump = async (st: MetadataStore) => ({
        root: await st.ensureRoot(share, dirInit({ mode: 0o700 })),
        rootList: await st.readdir(root.id, 0, 100),
        dList: await st.readdir(d.id, 0, 100),
        f: await st.getInode(f.id),
        blocks: await st.getBlocks(f.id, 0, 10),
        usage: await st.usage(share),
      });
      const before = await dump(s);
      await s.close();

      s = make();
      await s.open();
      try {
        assert.deepEqual(await dump(s), before);
        assert.equal((await s.getInode(d.id))?.generation, d.generation, 'the generation survives a reopen');
        const fr = await s.getInode(f.id);
        assert.deepEqual([fr?.btime, fr?.dosAttrs], [T(1, 2), 0x23], 'creation time and DOS attributes survive a reopen');
        assert.equal((await s.getInode(f.id))?.generation, f.generation);
        assert.equal((await s.ensureRoot(share, dirInit())).generation, root.generation);
        // Counters continue: cookies and ids are not reused after a reopen.
        const lastCookie = before.rootList.entries.at(-1)!.cookie;
        const n = await s.create(root.id, b('new'), fileInit(), T(4000, 0));
        const list = await s.readdir(root.id, lastCookie, 10);
        assert.deepEqual(
          list.entries.map((e) => [e.name.toString(), e.cookie]),
          [['new', lastCookie + 2]],
          'the cookie of the removed entry stays used',
        );
        assert.ok(n.id > f.id, 'inode ids keep growing');
      } finally {
        await s.close();
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Differential testing against the memory engine

type Op =
  | { op: 'create'; dir: number; name: number; kind: 'file' | 'dir' }
  | { op: 'link'; src: number; srcName: number; dir: number; name: number }
  | { op: 'remove'; dir: number; name: number; isDir: boolean }
  | { op: 'rename'; from: number; fromName: number; to: number; toName: number }
  | { op: 'setattr'; dir: number; name: number; size: number | undefined; growTo: number | undefined; guard: boolean }
  | { op: 'readdir'; dir: number; after: number; limit: number };

// Directories are addressed by index into the list of directories created so far (0 = root), names
// by a small index, so that collisions (EXIST, NOTEMPTY, replace) happen often.
const dirIdx = fc.nat({ max: 5 });
const nameIdx = fc.nat({ max: 5 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant('create' as const),
      dir: dirIdx,
      name: nameIdx,
      kind: fc.constantFrom('file' as const, 'dir' as const),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('link' as const), src: dirIdx, srcName: nameIdx, dir: dirIdx, name: nameIdx }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('remove' as const), dir: dirIdx, name: nameIdx, isDir: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('rename' as const), from: dirIdx, fromName: nameIdx, to: dirIdx, toName: nameIdx }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('setattr' as const),
      dir: dirIdx,
      name: nameIdx,
      size: fc.option(fc.nat({ max: 1000 }), { nil: undefined }),
      growTo: fc.option(fc.nat({ max: 1000 }), { nil: undefined }),
      guard: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant('readdir' as const), dir: dirIdx, after: fc.nat({ max: 12 }), limit: fc.nat({ max: 4 }) }),
  },
);

/** Replays `ops` on a fresh memory store and on `sut` (share `shareId`); results must match. */
async function differential(sut: MetadataStore, shareId: number, ops: Op[]): Promise<void> {
  const ref = new MemoryMetadataStore();
  const sides = [
    {
      s: ref as MetadataStore,
      root: await ref.ensureRoot(1, dirInit({ mtime: T(10) })),
      dirs: [] as number[],
      ids: new Map<number, number>(),
    },
    { s: sut, root: await sut.ensureRoot(shareId, dirInit({ mtime: T(10) })), dirs: [] as number[], ids: new Map<number, number>() },
  ];
  for (const side of sides) {
    side.dirs.push(side.root.id);
    side.ids.set(side.root.id, 0);
  }
  let clock = 100;
  // Inode ids differ between engines: number them in order of first appearance on each side.
  const canonId = (side: (typeof sides)[number], id: number): number => {
    let c = side.ids.get(id);
    if (c === undefined) side.ids.set(id, (c = side.ids.size));
    return c;
  };
  const canonInode = (side: (typeof sides)[number], i: Inode | null) =>
    i === null ? null : { ...i, id: canonId(side, i.id), parent: i.parent === 0 ? 0 : canonId(side, i.parent), shareId: 0, generation: 0 };
  const dirOf = (side: (typeof sides)[number], i: number) => side.dirs[i % side.dirs.length]!;
  // A name in directory `d`: mostly an existing entry (picked on the reference side, the same name
  // on both), sometimes a fresh one, so that operations hit entries rather than NOENT.
  const pick = async (d: number, k: number): Promise<Buffer> => {
    const list = (await ref.readdir(dirOf(sides[0]!, d), 0, 1000)).entries;
    return list.length > 0 && k < 4 ? list[(k * 7) % list.length]!.name : b(`n${k}`);
  };

  for (const [step, o] of ops.entries()) {
    const now = T(++clock, clock % 1000);
    const results = [];
    const nameA =
      o.op === 'create'
        ? b(`n${o.name}`)
        : o.op === 'link'
          ? await pick(o.src, o.srcName)
          : o.op === 'rename'
            ? await pick(o.from, o.fromName)
            : o.op === 'readdir'
              ? b('')
              : await pick(o.dir, o.name);
    const nameB = o.op === 'link' ? await pick(o.dir, o.name) : o.op === 'rename' ? await pick(o.to, o.toName) : b('');
    for (const side of sides) {
      const s = side.s;
      try {
        switch (o.op) {
          case 'create': {
            const i = await s.create(dirOf(side, o.dir), nameA, o.kind === 'dir' ? dirInit() : fileInit(), now);
            if (i.type === FileType.DIR) side.dirs.push(i.id);
            results.push(canonInode(side, i));
            break;
          }
          case 'link': {
            const src = await s.lookup(dirOf(side, o.src), nameA);
            if (!src) {
              results.push('no source');
              break;
            }
            results.push(canonInode(side, await s.link(src.id, dirOf(side, o.dir), nameB, now)));
            break;
          }
          case 'remove': {
            const r = await s.remove(dirOf(side, o.dir), nameA, o.isDir, now);
            if (r.freed) side.dirs = side.dirs.filter((d) => d !== r.inode.id);
            results.push({ freed: r.freed, inode: canonInode(side, r.inode) });
            break;
          }
          case 'rename': {
            // Moves of a directory under itself are refused by the stores (INVAL) and compared too.
            const r = await s.rename(dirOf(side, o.from), nameA, dirOf(side, o.to), nameB, now);
            if (r.replaced?.freed) side.dirs = side.dirs.filter((d) => d !== r.replaced!.inode.id);
            results.push({ replaced: r.replaced ? { freed: r.replaced.freed, inode: canonInode(side, r.replaced.inode) } : null });
            break;
          }
          case 'setattr': {
            const i = await s.lookup(dirOf(side, o.dir), nameA);
            if (!i) {
              results.push('no inode');
              break;
            }
            const guard = o.guard ? (step % 2 ? i.ctime : T(1)) : undefined;
            const ch = {
              ...(o.size === undefined ? {} : { size: o.size }),
              ...(o.growTo === undefined ? {} : { growTo: o.growTo }),
              ctime: now,
            };
            results.push(canonInode(side, await s.setAttr(i.id, ch, guard)));
            break;
          }
          case 'readdir': {
            const p = await s.readdir(dirOf(side, o.dir), o.after, o.limit);
            results.push({
              eof: p.eof,
              entries: p.entries.map((e) => ({ name: e.name.toString(), cookie: e.cookie, inode: canonInode(side, e.inode) })),
            });
            break;
          }
        }
      } catch (e) {
        if (!isVfsError(e)) throw e;
        results.push(`error ${e.errno}`);
      }
    }
    assert.deepEqual(results[1], results[0], `step ${step}: ${JSON.stringify(o)}`);
  }
  // Final state: the whole tree, with cookies, link counts and times.
  const dumpTree = async (side: (typeof sides)[number]) => {
    const out: unknown[] = [];
    const walk = async (dir: number, depth: number): Promise<void> => {
      const p = await side.s.readdir(dir, 0, 1000);
      for (const e of p.entries) {
        out.push([depth, e.name.toString(), e.cookie, canonInode(side, e.inode)]);
        if (e.inode.type === FileType.DIR && depth < 20) await walk(e.inode.id, depth + 1);
      }
    };
    out.push(canonInode(side, await side.s.getInode(side.root.id)));
    await walk(side.root.id, 0);
    out.push(await side.s.usage(side === sides[0] ? 1 : shareId).then((u) => u.files));
    return out;
  };
  assert.deepEqual(await dumpTree(sides[1]!), await dumpTree(sides[0]!), 'final trees differ');
}
