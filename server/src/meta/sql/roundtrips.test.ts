// The embedded driver's prepared-statement path and the one-statement CREATE (PGlite and SQLite) and REMOVE: answers identical to
// the plain paths, in the number of calls that makes small files fast (issue 16).
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isVfsError } from '../../vfs/errors.js';
import { CachedMetadataStore } from '../cached.js';
import { FileType, type NewInode } from '../../vfs/types.js';
import { sqlState, type SqlDriver } from './driver.js';
import { PgliteDriver } from './pglite.js';
import { SqliteDriver } from './sqlite.js';
import { sqliteStatementsByName } from './sqlite-dialect.js';
import { S, SqlMetadataStore } from './store.js';

const now = { sec: 1_700_000_000, nsec: 5 };

function init(type: FileType): NewInode {
  return { type, mode: 0o644, uid: 1, gid: 1, size: 0, rdevMajor: 0, rdevMinor: 0, target: null, createVerifier: null };
}

/** A driver that counts the calls the store makes on it. */
function counting(inner: SqlDriver): SqlDriver & { queries: number; transactions: number } {
  const d = {
    kind: inner.kind,
    dialect: inner.dialect,
    queries: 0,
    transactions: 0,
    query: ((sql, params, opts) => {
      d.queries++;
      return inner.query(sql, params, opts);
    }) as SqlDriver['query'],
    transaction: ((fn, opts) => {
      d.transactions++;
      return inner.transaction(fn, opts);
    }) as SqlDriver['transaction'],
    close: () => inner.close(),
  };
  return d;
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => isVfsError(e) && e.errno === code);
}

/** CREATE in one call to the driver, answering the new inode and the directory as that create left it. */
async function createReturnsDir(store: SqlMetadataStore, driver: ReturnType<typeof counting>, root: number): Promise<void> {
  const d = await store.create(root, Buffer.from('d4'), init(FileType.DIR), now);
  const later = { sec: now.sec + 20, nsec: 9 };
  driver.queries = driver.transactions = 0;
  const sub = await store.createIn(d.id, Buffer.from('sub'), init(FileType.DIR), later);
  const f = await store.createIn(d.id, Buffer.from('f'), init(FileType.REG), { ...later, nsec: 10 });
  assert.deepEqual([driver.queries, driver.transactions], [2, 0]);
  assert.deepEqual(f.inode, await store.getInode(f.inode.id));
  assert.equal((await store.lookup(d.id, Buffer.from('sub')))?.id, sub.inode.id);
  // Each answer is the directory right after that create: a subdirectory adds a link.
  assert.deepEqual([sub.dir!.nlink, sub.dir!.mtime, sub.dir!.ctime], [3, later, later]);
  assert.deepEqual(f.dir, await store.getInode(d.id));
  assert.deepEqual(f.dir?.mtime, { ...later, nsec: 10 });
  // A taken name changes nothing and answers EXIST.
  await rejectsWith(store.createIn(d.id, Buffer.from('f'), init(FileType.REG), { sec: now.sec + 99, nsec: 0 }), 'EXIST');
  assert.deepEqual(await store.getInode(d.id), f.dir);
}

describe('embedded engine: prepared statements and one-statement REMOVE', () => {
  let dir: string;
  let driver: ReturnType<typeof counting>;
  let store: SqlMetadataStore;
  let root: number;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-roundtrips-'));
    store = new SqlMetadataStore({
      kind: 'embedded',
      connect: async () => (driver = counting(await PgliteDriver.open({ dir: path.join(dir, 'meta') }))),
    });
    await store.open();
    root = (await store.ensureRoot(1, init(FileType.DIR))).id;
  });

  after(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('a named statement returns what the same text returns unnamed, for every column type the engine reads', async () => {
    const text = `SELECT $1::bytea AS b, $2::bigint AS n, $3::text AS t, $4::integer AS z, ARRAY[$2::bigint, 5] AS a, $5::boolean AS yes`;
    const params = [Buffer.from([0, 1, 255]), 2 ** 40 + 3, 'é x', null, true];
    const plain = await driver.query(text, params);
    const named = await driver.query({ name: 'dfs_test_types', text }, params);
    const again = await driver.query({ name: 'dfs_test_types', text }, params);
    assert.deepEqual(named.rows, plain.rows);
    assert.deepEqual(again.rows, plain.rows);
    assert.equal(Buffer.from(named.rows[0]!.b as Uint8Array).toString('hex'), '0001ff');
    assert.equal(named.rows[0]!.n, 2 ** 40 + 3);
    assert.equal(named.rows[0]!.z, null);
  });

  it('a name is bound to one text; errors keep their SQLSTATE and leave the driver usable', async () => {
    await assert.rejects(driver.query({ name: 'dfs_test_types', text: 'SELECT 1' }), /another text/);
    const dup = { name: 'dfs_test_dup', text: `INSERT INTO share_roots (share_id, root) VALUES ($1, $2)` };
    await assert.rejects(driver.query(dup, [1, root]), (e: unknown) => sqlState(e) === '23505');
    await assert.rejects(
      driver.transaction(async (tx) => tx.query(dup, [1, root])),
      (e: unknown) => sqlState(e) === '23505',
    );
    const ok = await driver.query({ name: 'dfs_test_one', text: 'SELECT $1::integer + 1 AS v' }, [41]);
    assert.equal(ok.rows[0]!.v, 42);
  });

  it('REMOVE of a file is one statement, and frees it at its last link', async () => {
    const d = await store.create(root, Buffer.from('d1'), init(FileType.DIR), now);
    const f = await store.create(d.id, Buffer.from('f'), init(FileType.REG), now);
    driver.queries = driver.transactions = 0;
    const later = { sec: now.sec + 10, nsec: 7 };
    const r = await store.remove(d.id, Buffer.from('f'), false, later);
    assert.deepEqual([driver.queries, driver.transactions], [1, 0]);
    assert.equal(r.freed, true);
    assert.equal(r.inode.id, f.id);
    assert.equal(r.inode.nlink, 0);
    assert.deepEqual(r.inode.ctime, later);
    assert.deepEqual(r.streams, []);
    assert.equal(await store.getInode(f.id), null);
    assert.equal(await store.lookup(d.id, Buffer.from('f')), null);
    const parent = await store.getInode(d.id);
    assert.deepEqual([parent!.mtime, parent!.ctime, parent!.nlink], [later, later, 2]);
    assert.deepEqual((await store.readdir(d.id, 0, 10)).entries, []);
  });

  it('REMOVE of one of two hard links keeps the file; its streams go with its last link', async () => {
    const d = await store.create(root, Buffer.from('d2'), init(FileType.DIR), now);
    const f = await store.create(d.id, Buffer.from('a'), init(FileType.REG), now);
    await store.link(f.id, d.id, Buffer.from('b'), now);
    const s = await store.createStream(f.id, Buffer.from('ads'), init(FileType.REG), now);
    driver.queries = driver.transactions = 0;
    const first = await store.remove(d.id, Buffer.from('a'), false, now);
    assert.deepEqual([first.freed, first.inode.nlink, first.streams], [false, 1, []]);
    assert.equal((await store.lookup(d.id, Buffer.from('b')))?.nlink, 1);
    assert.equal((await store.lookupStream(f.id, Buffer.from('ads')))?.id, s.id);
    const last = await store.remove(d.id, Buffer.from('b'), false, now);
    assert.deepEqual([last.freed, last.streams], [true, [s.id]]);
    assert.equal(driver.transactions, 0);
    assert.equal(await store.getInode(s.id), null);
    assert.equal(await store.getInode(f.id), null);
  });

  it('CREATE is one statement that also returns the directory as it changed it', () => createReturnsDir(store, driver, root));

  it('REMOVE answers NOENT, ISDIR, NOTDIR and STALE exactly and changes nothing', async () => {
    const d = await store.create(root, Buffer.from('d3'), init(FileType.DIR), now);
    const sub = await store.create(d.id, Buffer.from('sub'), init(FileType.DIR), now);
    const f = await store.create(d.id, Buffer.from('f'), init(FileType.REG), now);
    const before = await store.getInode(d.id);
    await rejectsWith(store.remove(d.id, Buffer.from('missing'), false, { sec: now.sec + 99, nsec: 0 }), 'NOENT');
    await rejectsWith(store.remove(d.id, Buffer.from('sub'), false, { sec: now.sec + 99, nsec: 0 }), 'ISDIR');
    await rejectsWith(store.remove(f.id, Buffer.from('x'), false, now), 'NOTDIR');
    await rejectsWith(store.remove(987_654_321, Buffer.from('x'), false, now), 'STALE');
    assert.deepEqual(await store.getInode(d.id), before);
    assert.equal((await store.lookup(d.id, Buffer.from('sub')))?.id, sub.id);
    assert.equal((await store.lookup(d.id, Buffer.from('f')))?.id, f.id);
  });
});

describe('SQLite engine: one-statement CREATE', () => {
  let dir: string;
  let driver: ReturnType<typeof counting>;
  let store: SqlMetadataStore;
  let root: number;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-roundtrips-sqlite-'));
    store = new SqlMetadataStore({
      kind: 'embedded',
      connect: () => Promise.resolve((driver = counting(SqliteDriver.open({ dir, statements: sqliteStatementsByName(S) })))),
    });
    await store.open();
    root = (await store.ensureRoot(1, init(FileType.DIR))).id;
  });

  after(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('CREATE is one statement that also returns the directory as it changed it', () => createReturnsDir(store, driver, root));

  it('behind the cache, a create leaves the directory known: reading it again is no call into SQLite', async () => {
    const cached = new CachedMetadataStore(store, { ttlMs: Number.POSITIVE_INFINITY });
    await cached.open();
    const d = await cached.create(root, Buffer.from('d5'), init(FileType.DIR), now);
    await cached.getInode(d.id);
    const later = { sec: now.sec + 30, nsec: 1 };
    driver.queries = driver.transactions = 0;
    const f = await cached.create(d.id, Buffer.from('f'), init(FileType.REG), later);
    const dirNow = await cached.getInode(d.id);
    assert.deepEqual([driver.queries, driver.transactions], [1, 0]);
    assert.deepEqual([dirNow?.mtime, dirNow?.ctime], [later, later]);
    assert.equal((await cached.lookup(d.id, Buffer.from('f')))?.id, f.id);
    await cached.close();
  });
});
