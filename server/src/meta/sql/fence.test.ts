// The single-server fence against a real PostgreSQL: a second holder is refused with a message that
// names the holder; the fence survives a restart of PostgreSQL (taken again on reconnect); and when
// another process takes the store while the connection is lost, the first one stops serving it
// (JUKEBOX) instead of going on unfenced.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { postgresForTests, type PostgresInstance } from '../../../../test/helpers/postgres.js';
import { dirInit } from '../../testing/inodes.js';
import { isVfsError } from '../../vfs/errors.js';
import { FenceHeldError, FenceLostError, PgFence, describePgUrl, fenceKey, type PgFenceOptions } from './fence.js';
import { createPostgresMetadataStore } from './index.js';
import { PgDriver } from './pg.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 50 ms until it holds or `ms` passes. */
async function until(what: string, cond: () => boolean, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${ms} ms`);
    await sleep(50);
  }
}

describe('single-server fence (PostgreSQL advisory lock)', { timeout: 300_000 }, () => {
  let pg: PostgresInstance | undefined;
  const fences: PgFence[] = [];
  const schema = `dfs_fence_${process.pid}`;

  before(async () => {
    pg = await postgresForTests();
    const d = await PgDriver.open({ url: pg.url, schema });
    await d.close();
  });
  after(async () => {
    for (const f of fences) await f.close();
    if (pg?.external) {
      const d = await PgDriver.open({ url: pg.url });
      await d.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await d.close();
    }
    await pg?.stop();
  });

  const opts = (over: Partial<PgFenceOptions> = {}): PgFenceOptions => ({
    url: pg!.url,
    schema,
    purpose: 'metadata',
    label: 'metadata store meta',
    heartbeatMs: 500,
    retakeDelayMs: 100,
    ...over,
  });
  const take = async (over: Partial<PgFenceOptions> = {}): Promise<PgFence> => {
    const f = await PgFence.take(opts(over));
    fences.push(f);
    return f;
  };

  it('a second holder is refused, with the key, the holder and what to configure; free again after close', async () => {
    const a = await take();
    const database = decodeURIComponent(new URL(pg!.url).pathname.slice(1));
    assert.equal(a.key, fenceKey('metadata', database, schema), 'the key is derived from the database and schema');
    await assert.rejects(take(), (e: unknown) => {
      assert.ok(e instanceof FenceHeldError, String(e));
      assert.match(
        e.message,
        new RegExp(`metadata store meta \\(postgres .*, schema ${schema}\\) is already served by another DittoFS process`),
      );
      assert.match(e.message, new RegExp(`advisory lock ${a.key} held by \\S+:${process.pid}:`));
      assert.match(e.message, /coordination\.redis/);
      return true;
    });
    // The control plane's fence on the same schema is another key.
    const c = await take({ purpose: 'control', label: 'the control database' });
    assert.notEqual(c.key, a.key);
    await c.close();
    await a.close();
    const b = await take();
    assert.ok(b.held);
    await b.close();
  });

  it('the password of the URL is never in a message', () => {
    assert.equal(describePgUrl('postgres://dfs:s3cret@db.example:5433/meta?sslmode=require'), 'postgres dfs@db.example:5433/meta');
  });

  it('survives a restart of PostgreSQL: lost at once, taken again on reconnect, still exclusive', async (t) => {
    if (pg?.external) return t.skip('DITTOFS_TEST_PG_URL names an external database, which this test cannot restart');
    const warnings: string[] = [];
    let heldAgain = 0;
    const a = await take({ logger: { warn: (_o, msg) => warnings.push(msg), debug() {} }, onHeldAgain: () => heldAgain++ });
    await pg!.restart();
    await until('the fence is taken again', () => a.held);
    assert.equal(heldAgain, 1, 'told once, so that a cache starts again from the database');
    assert.deepEqual(warnings, [
      'lost the connection holding the store fence; not serving it until the fence is taken again',
      'store fence taken again; serving the store',
    ]);
    assert.equal(a.status, 'held');
    await assert.rejects(take(), FenceHeldError);
    await a.close();
  });

  /** Cuts the fence's connection (as a network failure or a killed backend would), not the pool's. */
  async function cutFenceConnections(): Promise<void> {
    const d = await PgDriver.open({ url: pg!.url });
    try {
      await d.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'dittofs-fence %' AND pid <> pg_backend_pid()`,
      );
    } finally {
      await d.close();
    }
  }

  /** Another server taking the store: it retries while the lock is being released. */
  async function takeOther(): Promise<PgFence> {
    for (let i = 0; i < 100; i++) {
      try {
        return await take();
      } catch (e) {
        if (!(e instanceof FenceHeldError)) throw e;
        await sleep(20);
      }
    }
    return assert.fail('the other process could not take the fence');
  }

  it('another process that takes the store while the connection is lost: the first stops serving it (JUKEBOX)', async () => {
    const taken: FenceLostError[] = [];
    const store = createPostgresMetadataStore({
      url: pg!.url,
      schema,
      poolSize: 2,
      // Slow to take it again, so that the other one gets there first (after the 5 s JUKEBOX wait
      // below, with room for a loaded machine).
      fence: { purpose: 'metadata', label: 'metadata store meta', retakeDelayMs: 30_000, onTaken: (e) => taken.push(e) },
    });
    await store.open();
    try {
      const root = await store.ensureRoot(1, dirInit({ uid: 0, gid: 0 }));
      const fence = (store.driver as PgDriver).fence!;
      assert.ok(fence.held);
      assert.equal(store.failure(), null);
      await cutFenceConnections();
      await until('the fence is lost with its connection', () => !fence.held);
      // The pool's connections are fine, yet nothing goes through them: a call waits a while
      // (5 s) for the fence to be taken again, then answers JUKEBOX.
      await assert.rejects(
        store.getInode(root.id),
        (e: unknown) => isVfsError(e) && e.errno === 'JUKEBOX' && /taking it again/.test(e.message),
      );
      const other = await takeOther();
      await until('the first one sees it taken', () => fence.status === 'taken');
      assert.equal(taken.length, 1);
      assert.match(taken[0]!.message, /is served by another DittoFS process now/);
      // Failed for good (readiness says so; a logged truncate stops retrying and stays for the next start).
      assert.match(store.failure()?.message ?? '', /is served by another DittoFS process now/);
      // Nothing is served from this process any more: neither through the database nor from memory.
      await assert.rejects(
        store.getInode(root.id),
        (e: unknown) => isVfsError(e) && e.errno === 'JUKEBOX' && /another DittoFS process/.test(e.message),
      );
      await assert.rejects(store.setAttr(root.id, { mode: 0o700 }), (e: unknown) => isVfsError(e) && e.errno === 'JUKEBOX');
      await assert.rejects(store.whenServing() ?? Promise.resolve(), (e: unknown) => isVfsError(e) && e.errno === 'JUKEBOX');
      // Even once the other one has stopped: its changes may be newer than anything this one knows.
      await other.close();
      await sleep(500);
      assert.equal(fence.status, 'taken');
      await assert.rejects(store.getInode(root.id), (e: unknown) => isVfsError(e) && e.errno === 'JUKEBOX');
    } finally {
      await store.close();
    }
  });

  it('another process that served the store and stopped while the connection was lost: not taken back', async () => {
    const a = await take({ retakeDelayMs: 8_000 });
    await cutFenceConnections();
    await until('the fence is lost with its connection', () => !a.held);
    // Another server comes and goes before the first one reconnects (it waits 8 s).
    const other = await takeOther();
    await other.close();
    await until('the first one notices that the epoch moved', () => a.status === 'taken');
    assert.throws(() => a.check(), /served it while the connection was lost/);
    // And it released the lock again: a new server may start.
    const b = await take();
    assert.ok(b.held);
    await b.close();
    await a.close();
  });
});
