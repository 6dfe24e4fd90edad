// The postgres store's `sync: commit` against a real PostgreSQL crash (pg_ctl stop -m immediate):
// changes are answered before PostgreSQL flushes them, but one that a COMMIT (flushAttrs) covered
// survives the crash, and every COMMIT after a crash that may have lost answered changes fails.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import { postgresForTests, type PostgresInstance } from '../../../../test/helpers/postgres.js';
import { isVfsError } from '../../vfs/errors.js';
import { dirInit, fileInit } from '../../testing/inodes.js';
import { createPostgresMetadataStore, type PgSync } from './index.js';
import type { SqlMetadataStore } from './store.js';
import { PgDriver } from './pg.js';

const SCHEMA = `dfs_pg_sync_${process.pid}`;
const now = () => ({ sec: Math.floor(Date.now() / 1000), nsec: 0 });

describe('postgres store, sync: commit', () => {
  let pg: PostgresInstance | undefined;
  const stores: SqlMetadataStore[] = [];
  const open = async (sync: PgSync, schema = SCHEMA): Promise<SqlMetadataStore> => {
    const s = createPostgresMetadataStore({ url: pg!.url, poolSize: 2, schema, sync });
    await s.open();
    stores.push(s);
    return s;
  };

  /** Asynchronous commits stay unflushed until a sync() flushes them (see the crash tests). */
  const slowWalWriter = async (): Promise<void> => {
    // The WAL writer would flush asynchronous commits within 3 x wal_writer_delay (200 ms by
    // default): slow it down so that only this store's own flush puts them on disk in time.
    const admin = await PgDriver.open({ url: pg!.url });
    await admin.query(`ALTER SYSTEM SET wal_writer_delay = '10s'`);
    await admin.query('SELECT pg_reload_conf()');
    await admin.close();
  };
  const io = (e: unknown) => isVfsError(e) && e.errno === 'IO';

  before(async () => {
    pg = await postgresForTests();
  });
  after(async () => {
    for (const s of stores) await s.close().catch(() => undefined);
    await pg?.stop();
  });

  it('commits changes asynchronously with commit, synchronously with change', async () => {
    const show = async (s: SqlMetadataStore) =>
      (await s.driver.query<{ synchronous_commit: string }>('SHOW synchronous_commit')).rows[0]?.synchronous_commit;
    assert.equal(await show(await open('commit')), 'off');
    assert.equal(await show(await open('change', `${SCHEMA}_change`)), 'on');
  });

  it('a clean PostgreSQL restart loses nothing and fails no COMMIT', async (t) => {
    if (pg!.external) {
      t.skip('DITTOFS_TEST_PG_URL names an external database, which this test cannot restart');
      return;
    }
    const s = await open('commit', `${SCHEMA}_clean`);
    const root = await s.ensureRoot(1, dirInit());
    const f = await s.create(root.id, Buffer.from('answered'), fileInit(), now());
    await pg!.pause(); // pg_ctl stop -m fast: the WAL is flushed
    // pg_control keeps the shutdown checkpoint's time in whole seconds: a start within the same
    // second cannot be told from crash recovery, and is taken for one (a documented limit: one
    // COMMIT fails with IO). This test is about a restart that can be told apart.
    await new Promise((r) => setTimeout(r, 1_100));
    await pg!.resume();
    await s.flushAttrs();
    assert.equal((await s.lookup(root.id, Buffer.from('answered')))?.id, f.id);
  });

  it('a change answered and then COMMITted survives an immediate PostgreSQL crash', async (t) => {
    if (pg!.external) {
      t.skip('DITTOFS_TEST_PG_URL names an external database, which this test cannot crash');
      return;
    }
    await slowWalWriter();
    const s = await open('commit', `${SCHEMA}_crash`);
    const root = await s.ensureRoot(1, dirInit());
    const dir = await s.create(root.id, Buffer.from('d'), dirInit(), now());
    const kept = await s.create(dir.id, Buffer.from('committed'), fileInit(), now());
    await s.flushAttrs(); // NFS COMMIT, SMB FLUSH
    const flushes = (s.driver as PgDriver).stats.flushes;
    await s.flushAttrs(); // nothing answered since: no second round trip
    assert.equal((s.driver as PgDriver).stats.flushes, flushes);
    await s.create(dir.id, Buffer.from('uncommitted'), fileInit(), now());

    await pg!.crash();
    await pg!.resume();

    // The store that answered "uncommitted" cannot vouch for it any more: its next COMMIT fails
    // (an I/O error, not "try again", which would pass the second time).
    await assert.rejects(s.flushAttrs(), io);
    // So does every later one, changes made since or not: each covers "uncommitted" too, and the
    // client that made it may be the one asking.
    await s.create(dir.id, Buffer.from('later'), fileInit(), now());
    await assert.rejects(s.flushAttrs(), io);
    await assert.rejects(s.flushAttrs(), io);

    // A store opened again (DittoFS restarted) vouches for what it answers.
    const after = await open('commit', `${SCHEMA}_crash`);
    const found = await after.lookup(dir.id, Buffer.from('committed'));
    assert.ok(found, 'the COMMITted file is there after the crash');
    assert.equal(found.id, kept.id);
    const lost = (await after.lookup(dir.id, Buffer.from('uncommitted'))) === null;
    t.diagnostic(`the file created after the COMMIT ${lost ? 'was lost' : 'survived'} (no COMMIT covered it)`);
    await after.create(dir.id, Buffer.from('after the restart'), fileInit(), now());
    await after.flushAttrs();
  });

  it('every block-map change answered before a crash fails its wait for the flush, and so does every later COMMIT', async (t) => {
    if (pg!.external) {
      t.skip('DITTOFS_TEST_PG_URL names an external database, which this test cannot crash');
      return;
    }
    await slowWalWriter();
    const s = await open('commit', `${SCHEMA}_race`);
    const root = await s.ensureRoot(1, dirInit());
    const f = await s.create(root.id, Buffer.from('f'), fileInit(), now());
    await s.flushAttrs();

    // Both rows are answered (committed asynchronously) before the crash; both putBlocks then wait
    // in sync(), held here until PostgreSQL is back, so that their flushes run side by side after
    // it. Whichever comes back first learns of the restart; the other must not take the new run's
    // flush for one that covers its row: the block service would delete the WAL segment holding
    // the block's data, its row gone.
    const drv = s.driver as PgDriver;
    const sync = drv.sync.bind(drv);
    let waiting = 0;
    let bothWaiting!: () => void;
    const reached = new Promise<void>((r) => (bothWaiting = r));
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    drv.sync = async () => {
      if (++waiting === 2) bothWaiting();
      await held;
      return sync();
    };
    const puts = [0, 1].map((index) => s.putBlock(f.id, { index, key: `k${index}`, length: 10, version: 1 }));
    await reached;
    await pg!.crash();
    await pg!.resume();
    release();
    const outcomes = await Promise.allSettled(puts);
    drv.sync = sync;
    for (const [i, o] of outcomes.entries()) {
      assert.equal(o.status, 'rejected', `putBlock ${i} was answered as durable across the crash`);
      assert.ok(io(o.reason), `putBlock ${i}: ${String(o.reason)}`);
    }
    // A COMMIT that comes after them covers the lost rows too: it does not count them as flushed.
    await assert.rejects(s.flushAttrs(), io);
    const rows = await s.getBlocks(f.id, 0, 2);
    t.diagnostic(`block rows after the crash: ${rows.length} of 2`);
  });

  it('a crash that lost nothing fails no COMMIT: changes answered after it are covered by its own flushes', async (t) => {
    if (pg!.external) {
      t.skip('DITTOFS_TEST_PG_URL names an external database, which this test cannot crash');
      return;
    }
    await slowWalWriter();
    const s = await open('commit', `${SCHEMA}_idle`);
    const root = await s.ensureRoot(1, dirInit());
    const before = await s.create(root.id, Buffer.from('before'), fileInit(), now());
    await s.flushAttrs(); // nothing left unflushed

    await pg!.crash();
    await pg!.resume();

    // Answered by the new run of the server, flushed by it: nothing was lost.
    const made = await s.create(root.id, Buffer.from('after'), fileInit(), now());
    await s.putBlock(made.id, { index: 0, key: 'k', length: 10, version: 1 });
    await s.flushAttrs();
    assert.equal((await s.lookup(root.id, Buffer.from('before')))?.id, before.id);
  });

  it('a start-time question that fails on a connection that lives on is asked again: no loss is reported', async () => {
    // One connection, closed when idle, so that the next call opens a new one under the fault below.
    const d = await PgDriver.open({ url: pg!.url, poolSize: 1, idleTimeoutMs: 50, schema: `${SCHEMA}_ask`, sync: 'commit' });
    try {
      const pool = (d as unknown as { pool: pg.Pool }).pool;
      // The question each new connection is asked first fails once (as a cancel or a statement
      // timeout would fail it), and the connection goes on serving.
      let refused = 0;
      pool.prependListener('connect', (client: pg.PoolClient) => {
        const query = client.query.bind(client) as (...a: unknown[]) => unknown;
        let first = true;
        (client as unknown as { query: (...a: unknown[]) => unknown }).query = (...a: unknown[]) => {
          if (first && typeof a[0] === 'string' && a[0].includes('pg_postmaster_start_time') && !a[0].includes('BEGIN')) {
            first = false;
            refused++;
            return Promise.reject(Object.assign(new Error('canceling statement due to user request'), { code: '57014' }));
          }
          return query(...a);
        };
      });
      for (let i = 0; i < 200 && pool.totalCount > 0; i++) await new Promise((r) => setTimeout(r, 25));
      assert.equal(pool.totalCount, 0, 'the idle connection was closed');
      await d.query('CREATE TABLE answered (x integer)');
      await d.query('INSERT INTO answered VALUES (1)');
      assert.equal(refused, 1, 'the new connection was refused its start time once');
      // A checkpoint since PostgreSQL started (checkpoint_timeout) makes a change of no known run
      // read as lost in a crash.
      await d.query('CHECKPOINT');
      await d.sync();
      assert.equal(d.failure(), null);
    } finally {
      await d.close();
    }
  });
});
