// The SQLite driver on its own: the group commit, the schema migrations in SQLite's dialect, and
// the store directory's lock.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import Database from 'better-sqlite3';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { failNextFdatasync, heldFdatasyncs, holdFdatasyncs, releaseFdatasync, stopHoldingFdatasyncs } from '../../testing/failing-fsync.js';
import { dirInit, fileInit } from '../../testing/inodes.js';
import { assertSizeTokensAfterMigration } from '../../testing/size-tokens.js';
import { MIGRATIONS, type Migration } from './migrations.js';
import { CHECKPOINT_EVERY_COMMITS, WAL_SIZE_LIMIT_BYTES } from './sqlite-checkpoint.js';
import { SQLITE_FILE, SYNC_DELAY_MS, SqliteDriver, type SqliteRunner, type SqliteSync } from './sqlite.js';
import { sqliteStatementsByName } from './sqlite-dialect.js';
import { S, SqlMetadataStore } from './store.js';
import type { Inode } from '../../vfs/types.js';

const T = (sec: number) => ({ sec, nsec: 0 });

function sqliteStore(dir: string, migrations?: readonly Migration[], sync?: SqliteSync): SqlMetadataStore {
  return new SqlMetadataStore({
    kind: 'embedded',
    connect: () => Promise.resolve(SqliteDriver.open({ dir, statements: sqliteStatementsByName(S), ...(sync ? { sync } : {}) })),
    ...(migrations ? { migrations } : {}),
  });
}

describe('SQLite metadata engine', () => {
  let tmp: string;
  let n = 0;
  const place = () => path.join(tmp, `s${n++}`);
  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'dittofs-sqlite-'));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('sync change: answers a change only after an fsync, and concurrent changes share fsyncs', async () => {
    const s = sqliteStore(place(), undefined, 'change');
    await s.open();
    try {
      const d = s.driver as SqliteDriver;
      const root = await s.ensureRoot(1, dirInit());
      const before = d.stats;
      assert.ok(before.fsyncs >= 1 && before.commits >= 1);
      // One at a time: every change has its own fsync before its answer.
      for (let i = 0; i < 5; i++) await s.create(root.id, Buffer.from(`serial-${i}`), fileInit(), T(1_700_000_000 + i));
      const serial = d.stats;
      assert.equal(serial.commits - before.commits, 5);
      assert.equal(serial.fsyncs - before.fsyncs, 5);
      assert.equal(serial.synced, serial.commits);
      // Side by side: all are answered, every one after an fsync that covers it, with fewer fsyncs.
      await Promise.all(Array.from({ length: 200 }, (_, i) => s.create(root.id, Buffer.from(`par-${i}`), fileInit(), T(1_700_000_100))));
      const par = d.stats;
      assert.equal(par.commits - serial.commits, 200);
      assert.ok(par.fsyncs - serial.fsyncs < 200, `200 concurrent creates took ${par.fsyncs - serial.fsyncs} fsyncs`);
      assert.ok(par.fsyncs > serial.fsyncs);
      // Reads change nothing and need no fsync; nor do writes that change no row.
      await s.lookup(root.id, Buffer.from('par-7'));
      assert.deepEqual(d.stats, par);
      await assert.rejects(s.remove(root.id, Buffer.from('absent'), false, T(1_700_000_200)), /no such entry/);
      await assert.rejects(s.setAttr(999_999, { mode: 0o600 }), /does not exist/);
      await s.dropBlocks(root.id, 0);
      assert.deepEqual(d.stats, par);
    } finally {
      await s.close();
    }
  });

  it('sync commit: answers changes before their fsync; flushAttrs (COMMIT) and the timer make them durable', async () => {
    const s = sqliteStore(place());
    await s.open();
    try {
      const d = s.driver as SqliteDriver;
      const root = await s.ensureRoot(1, dirInit());
      await s.flushAttrs();
      const before = d.stats;
      assert.equal(before.synced, before.commits);
      for (let i = 0; i < 20; i++) await s.create(root.id, Buffer.from(`c-${i}`), fileInit(), T(1_700_000_000 + i));
      const answered = d.stats;
      assert.equal(answered.commits - before.commits, 20);
      assert.ok(answered.fsyncs - before.fsyncs < 20, `20 creates waited for ${answered.fsyncs - before.fsyncs} fsyncs`);
      await s.flushAttrs();
      const flushed = d.stats;
      assert.equal(flushed.synced, flushed.commits, 'COMMIT: every change answered before it is on disk');
      // Block map changes are on disk when answered: the data's WAL segment may go once they are.
      const f = await s.create(root.id, Buffer.from('blocks'), fileInit(), T(1_700_000_050));
      await s.putBlock(f.id, { index: 0, key: 'k/0', length: 4096, version: 1 });
      assert.equal(d.stats.synced, d.stats.commits, 'putBlock answered before its fsync');
      await s.create(root.id, Buffer.from('blocks2'), fileInit(), T(1_700_000_051));
      await s.dropBlocks(f.id, 0);
      assert.equal(d.stats.synced, d.stats.commits, 'dropBlocks answered before its fsync');
      // A file that never had data (every empty file removed): no object to delete, so no wait.
      // (The timer may sync in between on a slow machine: a few tries, one without an fsync is enough.)
      let waited = 0;
      for (let i = 0; i < 5; i++) {
        const empty = await s.create(root.id, Buffer.from(`empty-${i}`), fileInit(), T(1_700_000_060 + i));
        const unsynced = d.stats.fsyncs;
        assert.deepEqual(await s.dropBlocks(empty.id, 0), []);
        if (d.stats.fsyncs === unsynced) break;
        waited++;
      }
      assert.ok(waited < 5, 'dropBlocks of nothing waited for an fsync');
      // Without a COMMIT: the timer syncs within SYNC_DELAY_MS (waited for with a generous bound).
      await s.create(root.id, Buffer.from('late'), fileInit(), T(1_700_000_100));
      const deadline = Date.now() + 30_000;
      while (d.stats.synced < d.stats.commits && Date.now() < deadline) await new Promise((r) => setTimeout(r, SYNC_DELAY_MS / 4));
      assert.equal(d.stats.synced, d.stats.commits);
    } finally {
      await s.close();
    }
  });

  it('sync commit: changes that arrive together share one COMMIT, and each is answered only once committed', async () => {
    const dir = place();
    const s = sqliteStore(dir);
    await s.open();
    // Another connection sees only what is committed.
    const other = new Database(path.join(dir, SQLITE_FILE), { readonly: true });
    try {
      const d = s.driver as SqliteDriver;
      const root = await s.ensureRoot(1, dirInit());
      const count = other.prepare<[Buffer], { n: number }>('SELECT count(*) AS n FROM dirents WHERE name = ?');
      const before = d.stats;
      const seen: number[] = [];
      await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          s.create(root.id, Buffer.from(`b-${i}`), fileInit(), T(1_700_000_000)).then(() => seen.push(count.get(Buffer.from(`b-${i}`))!.n)),
        ),
      );
      assert.deepEqual(seen, new Array<number>(50).fill(1), 'a create was answered before its COMMIT');
      const after = d.stats;
      assert.equal(after.commits - before.commits, 50);
      assert.ok(after.batchedCalls - before.batchedCalls >= 50);
      assert.ok(after.batches - before.batches < 10, `50 creates at once took ${after.batches - before.batches} COMMITs`);
      // One at a time, each has its own.
      for (let i = 0; i < 3; i++) await s.create(root.id, Buffer.from(`one-${i}`), fileInit(), T(1_700_000_001));
      assert.equal(d.stats.batches - after.batches, 3);
      assert.equal(count.get(Buffer.from('one-2'))!.n, 1);
    } finally {
      other.close();
      await s.close();
    }
  });

  /** A store with a root directory and a file `f` in it, closed after `fn`. */
  const withRootAndFile = async (fn: (t: { s: SqlMetadataStore; d: SqliteDriver; root: Inode; f: Inode }) => Promise<void>) => {
    const s = sqliteStore(place());
    await s.open();
    try {
      const root = await s.ensureRoot(1, dirInit());
      const f = await s.create(root.id, Buffer.from('f'), fileInit(), T(1_700_000_000));
      await fn({ s, d: s.driver as SqliteDriver, root, f });
    } finally {
      await s.close();
    }
  };

  it('sync commit: a statement that fails in a batch fails alone; one that ends its transaction fails every call in it', () =>
    withRootAndFile(async ({ s, d, root, f }) => {
      const ctime = async (id: number) => (await s.getInode(id))!.ctime.sec;
      const before = d.stats;
      // Issued together: one batch (the first is a named write, which begins it).
      const settled: string[] = [];
      const noted = <R>(what: string, p: Promise<R>): Promise<R> => p.finally(() => settled.push(what));
      const [a, bad, c] = await Promise.allSettled([
        noted('a', d.query(S.touchCtime, [root.id, 1_800_000_001, 0])),
        noted('bad', d.query('INSERT INTO share_roots (share_id, root) VALUES (99, 987654321)')),
        noted('c', d.query(S.touchCtime, [f.id, 1_800_000_002, 0])),
      ]);
      // The failed call settles after the COMMIT too (with the calls before it): what it failed on
      // may be a change of the batch's.
      assert.deepEqual(settled, ['a', 'bad', 'c']);
      assert.equal(a.status, 'fulfilled');
      assert.equal(c.status, 'fulfilled');
      assert.equal(bad.status, 'rejected');
      assert.equal((bad.reason as { code?: string }).code, '23503');
      assert.equal(d.stats.batches - before.batches, 1);
      assert.equal(d.stats.batchedCalls - before.batchedCalls, 2);
      assert.equal(await ctime(root.id), 1_800_000_001);
      assert.equal(await ctime(f.id), 1_800_000_002);
      assert.equal((await d.query('SELECT count(*) AS n FROM share_roots WHERE share_id = 99')).rows[0]!.n, 0);
      // The transaction ends under the batch: its change is gone, so neither call is answered as done.
      // A read in that batch saw its change, which is gone: it is answered again, from what is committed.
      const [x, read, end] = await Promise.allSettled([
        d.query(S.touchCtime, [root.id, 1_800_000_003, 0]),
        d.query(S.getInode, [root.id]),
        d.query('ROLLBACK'),
      ]);
      assert.equal(x.status, 'rejected');
      assert.match(String(x.reason), /ended before its COMMIT/);
      assert.equal(end.status, 'rejected');
      assert.equal(read.status, 'fulfilled', `the read in the lost batch: ${read.status === 'rejected' ? String(read.reason) : ''}`);
      assert.equal(Number(read.value.rows[0]!.ctime_sec), 1_800_000_001, 'the read answers what is committed');
      assert.equal(await ctime(root.id), 1_800_000_001);
      // The next change begins a new batch.
      await d.query(S.touchCtime, [root.id, 1_800_000_004, 0]);
      assert.equal(await ctime(root.id), 1_800_000_004);
    }));

  it('sync commit: a read of a lost batch runs again once, in no batch, however many later batches are lost', () =>
    withRootAndFile(async ({ d, root, f }) => {
      const committedCtime = Number((await d.query(S.getInode, [root.id])).rows[0]!.ctime_sec);
      const events: string[] = [];
      // Each round: a change begins a batch, and a ROLLBACK ends its transaction before the COMMIT
      // (a setImmediate queued before the batch's own). Were the read to join each new batch, it
      // would settle only after the last round.
      const ROUNDS = 5;
      const losses: Promise<unknown>[] = [];
      let roundsDone!: () => void;
      const allRounds = new Promise<void>((resolve) => (roundsDone = resolve));
      const round = (i: number): void => {
        if (i > ROUNDS) {
          roundsDone();
          return;
        }
        setImmediate(() => {
          losses.push(d.query('ROLLBACK').catch(() => events.push(`rollback ${i}`)));
          round(i + 1);
        });
        losses.push(
          d.query(S.touchCtime, [f.id, 1_800_000_100 + i, 0]).then(
            () => events.push(`change ${i} committed`),
            () => events.push(`change ${i} lost`),
          ),
        );
      };
      const first = d.query(S.touchCtime, [root.id, 1_800_000_001, 0]).catch((e: unknown) => e);
      const read = d.query(S.getInode, [root.id]).then((r) => {
        events.push('read');
        return r;
      });
      // The first batch (the change and the read) is lost now, and the next one begins at once,
      // before the read runs again.
      losses.push(d.query('ROLLBACK').catch(() => undefined));
      round(1);
      const r = await read;
      assert.match(String(await first), /ended before its COMMIT/);
      assert.equal(Number(r.rows[0]!.ctime_sec), committedCtime, 'the read answers what is committed');
      await allRounds;
      await Promise.allSettled(losses);
      // The read ran again at once, alone (the batch open then committed first), before the next
      // batch was lost.
      assert.ok(events.indexOf('read') < events.indexOf('rollback 1'), events.join(', '));
      assert.ok(events.includes('change 1 committed'), events.join(', '));
      assert.ok(events.length > ROUNDS, events.join(', '));
    }));

  it('sync commit: a program that fails as the first statement of its batch leaves nothing, fails alone with its own error, and the batch goes on', async () => {
    // The first statement of a batch runs without a savepoint of its own (SqliteDriver.runBare):
    // its failure must look the same as one inside a savepoint.
    const prog = (db: SqliteRunner, p: readonly unknown[]) => {
      db.run('INSERT INTO t (x) VALUES (?1)', [p[0]]);
      db.run('INSERT INTO t (x) VALUES (?1)', [Number(p[0]) + 1]);
      if (p[1] === 'fail') throw new Error('the program failed');
      if (p[1] === 'constraint') db.run('INSERT INTO t (x) VALUES (NULL)');
      return [];
    };
    const d = SqliteDriver.open({ dir: place(), statements: { prog, ins: 'INSERT INTO t (x) VALUES (?1)' }, checkpointWorker: false });
    const P = { name: 'prog', text: '' };
    const ins = { name: 'ins', text: 'INSERT INTO t (x) VALUES ($1)' };
    const rows = async () => (await d.query('SELECT x FROM t ORDER BY x')).rows.map((r) => Number(r.x));
    try {
      await d.query('CREATE TABLE t (x integer NOT NULL)');
      for (const how of ['fail', 'constraint']) {
        await d.query('DELETE FROM t');
        const before = d.stats;
        // Issued together: one batch, which the failing program begins.
        const [bad, after, good] = await Promise.allSettled([d.query(P, [10, how]), d.query(ins, [20]), d.query(P, [30, 'ok'])]);
        assert.equal(bad.status, 'rejected');
        if (how === 'fail') assert.match(String(bad.reason), /the program failed/);
        else assert.equal((bad.reason as { sqliteCode?: string }).sqliteCode, 'SQLITE_CONSTRAINT_NOTNULL');
        assert.equal(after.status, 'fulfilled');
        assert.equal(good.status, 'fulfilled');
        assert.equal(d.stats.batches - before.batches, 1, 'the calls shared one batch');
        assert.deepEqual(await rows(), [20, 30, 31], `${how}: none of the failed program's rows, every row of the others`);
      }
      // Alone, as one client stream's calls are: a failed program leaves nothing; the next commits.
      await d.query('DELETE FROM t');
      await assert.rejects(d.query(P, [40, 'fail']), /the program failed/);
      await d.query(P, [50, 'ok']);
      // A program that is not its batch's first statement fails alone too (its savepoint).
      const [first, second] = await Promise.allSettled([d.query(ins, [60]), d.query(P, [70, 'fail'])]);
      assert.equal(first.status, 'fulfilled');
      assert.equal(second.status, 'rejected');
      assert.deepEqual(await rows(), [50, 51, 60]);
    } finally {
      await d.close();
    }
  });

  it('sync commit: an fsync covers what was committed when it began, also one that a finished fsync begins while a batch is open', async () => {
    const dir = place();
    const d = SqliteDriver.open({ dir, statements: { ins: 'INSERT INTO t (x) VALUES (?1)' }, checkpointWorker: false });
    const ins = { name: 'ins', text: 'INSERT INTO t (x) VALUES ($1)' };
    let other: Database.Database | null = null;
    try {
      await d.query('CREATE TABLE t (x integer)');
      await d.sync();
      other = new Database(path.join(dir, SQLITE_FILE), { readonly: true });
      const rowsCommitted = other.prepare<[], { n: number }>('SELECT count(*) AS n FROM t');
      const base = d.stats.commits;
      holdFdatasyncs((file) => file.endsWith(`${SQLITE_FILE}-wal`));
      await d.query(ins, [1]);
      const first = d.sync(); // an fsync in flight
      const two = d.query(ins, [2]);
      const second = d.sync(); // commits row 2's batch; waits for the next fsync
      const three = d.query(ins, [3]); // a new batch: row 3 has run, not committed
      assert.equal(heldFdatasyncs(), 1);
      // The fsync ends in this turn of the event loop (as in its poll phase, before the batch's
      // COMMIT): it begins the next for `second` at once.
      releaseFdatasync();
      assert.equal(heldFdatasyncs(), 1);
      assert.equal(rowsCommitted.get()!.n, 2);
      assert.equal(d.stats.commits - base, 2, 'an fsync began counting a change its batch had not committed yet');
      releaseFdatasync();
      await Promise.all([first, two, second, three]);
      // Row 3 is answered: a COMMIT now waits for an fsync that covers it, which has yet to begin.
      let synced = false;
      const after = d.sync().then(() => (synced = true));
      await new Promise((r) => setImmediate(r));
      assert.equal(synced, false, 'a sync after row 3 was answered needed no fsync');
      assert.ok(heldFdatasyncs() >= 1);
      stopHoldingFdatasyncs();
      await after;
      assert.equal(d.stats.commits - base, 3);
      assert.equal(d.stats.synced, d.stats.commits);
    } finally {
      stopHoldingFdatasyncs();
      other?.close();
      await d.close();
    }
  });

  it('sync change: answers no change after a failed fsync, not even one of a transaction open across it', async () => {
    const d = SqliteDriver.open({ dir: place(), sync: 'change', statements: {}, checkpointWorker: false });
    try {
      await d.query('CREATE TABLE t (x INTEGER)');
      failNextFdatasync((file) => file.endsWith(`${SQLITE_FILE}-wal`));
      const failed = /fsync of the WAL failed/;
      const x = d.query('INSERT INTO t VALUES (1)');
      const t = d.transaction(async (tx) => {
        await tx.query('INSERT INTO t VALUES (2)');
        // The caller's work between statements: the fsync answering X fails meanwhile.
        await x.catch(() => undefined);
      });
      await assert.rejects(x, failed);
      // T commits after the failure. The next fsync would succeed, the kernel holding the pages it
      // could not write as clean: it would vouch for X's change, which may not be on disk, and T's.
      await assert.rejects(t, failed);
      await assert.rejects(d.sync(), failed);
      await assert.rejects(d.query('SELECT 1'), failed);
      // Liveness reads it (GET /health), so that Kubernetes restarts DittoFS.
      assert.match(d.failure()?.message ?? '', failed);
    } finally {
      await d.close();
    }
  });

  it('checkpoints the WAL on a worker thread; a WAL grown by a burst is cut back; close removes it', async () => {
    const dir = place();
    let s = sqliteStore(dir);
    await s.open();
    const wal = path.join(dir, `${SQLITE_FILE}-wal`);
    const names = 20 * CHECKPOINT_EVERY_COMMITS;
    try {
      const d = s.driver as SqliteDriver;
      const root = await s.ensureRoot(1, dirInit());
      for (let i = 0; i < names; i++) await s.create(root.id, Buffer.from(`w-${i}`), fileInit(), T(1_700_000_000 + i));
      // The worker answers asynchronously: wait (bounded) for one it completed.
      const deadline = Date.now() + 30_000;
      while (d.workerCheckpoints === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.ok(d.workerCheckpoints > 0, 'no checkpoint ran on the worker');
      // A burst the checkpoints cannot follow (here: a reader holds an old snapshot, as a slow
      // checkpoint would) grows the WAL past the limit; once they caught up, SQLite starts the
      // WAL over and cuts the file back.
      const reader = new Database(path.join(dir, SQLITE_FILE), { readonly: true });
      try {
        reader.exec('BEGIN');
        reader.prepare('SELECT count(*) FROM inodes').get();
        for (let i = 0; i < 2_000; i++) await s.create(root.id, Buffer.from(`burst-${i}`), fileInit(), T(1_700_100_000 + i));
        reader.exec('COMMIT');
      } finally {
        reader.close();
      }
      const peak = (await stat(wal)).size;
      assert.ok(peak > WAL_SIZE_LIMIT_BYTES, `the burst grew the WAL to ${peak} bytes only`);
      // The worker's own checkpoint may hold the lock a while on a loaded machine: 30 s at most.
      for (const until = Date.now() + 30_000; Date.now() < until;) {
        const r = d.checkpointNow();
        if (r.busy === 0 && r.log === r.checkpointed) break;
        await new Promise((res) => setTimeout(res, 50));
      }
      await s.create(root.id, Buffer.from('after-the-burst'), fileInit(), T(1_800_000_000));
      const after = (await stat(wal)).size;
      assert.ok(after <= WAL_SIZE_LIMIT_BYTES, `the WAL is ${after} bytes after the checkpoints caught up (peak ${peak})`);
    } finally {
      await s.close();
    }
    assert.equal(existsSync(wal), false, 'the WAL is still there after close');
    s = sqliteStore(dir);
    await s.open();
    try {
      const root = await s.ensureRoot(1, dirInit());
      assert.ok(await s.lookup(root.id, Buffer.from(`w-${names - 1}`)), 'the last create is lost');
    } finally {
      await s.close();
    }
  });

  it("a share's usage (FSSTAT's count, a pass over its inodes) runs on the worker's connection, off the event loop, and sees every answered change", async () => {
    for (const worker of [true, false]) {
      const dir = place();
      const s = new SqlMetadataStore({
        kind: 'embedded',
        connect: () => Promise.resolve(SqliteDriver.open({ dir, statements: sqliteStatementsByName(S), checkpointWorker: worker })),
      });
      await s.open();
      try {
        const d = s.driver as SqliteDriver;
        const root = await s.ensureRoot(1, dirInit());
        const other = await s.ensureRoot(2, dirInit());
        await Promise.all(Array.from({ length: 500 }, (_, i) => s.create(root.id, Buffer.from(`f${i}`), fileInit({ size: 10 }), T(i))));
        await s.create(other.id, Buffer.from('g'), fileInit({ size: 7 }), T(1));
        // Answered changes (their batch committed) are counted, in each share.
        assert.deepEqual(await s.usage(1), { files: 501, bytes: 4096 + 500 * 10 });
        await s.remove(root.id, Buffer.from('f0'), false, T(2));
        assert.deepEqual(await s.usage(1), { files: 500, bytes: 4096 + 499 * 10 });
        assert.deepEqual(await s.usage(2), { files: 2, bytes: 4096 + 7 });
        assert.equal(d.workerReads, worker ? 3 : 0, worker ? 'counted on the worker' : 'no worker: counted on the main connection');
      } finally {
        await s.close();
      }
    }
  });

  it('a store from before size tokens (version 5) opens, keeps its files, and records them from then on', async () => {
    const dir = place();
    let s = sqliteStore(dir, MIGRATIONS.slice(0, 5));
    await s.open();
    const root = await s.ensureRoot(1, dirInit());
    const f = await s.create(root.id, Buffer.from('f'), fileInit(), { sec: 20, nsec: 0 });
    await s.putBlock(f.id, { index: 0, key: 'k/0', length: 5, version: 1 }, { prevVersion: 0, token: 4 });
    await s.close();
    s = sqliteStore(dir);
    await s.open();
    try {
      assert.deepEqual(s.migration?.applied, [6]);
      await assertSizeTokensAfterMigration(s, f.id);
    } finally {
      await s.close();
    }
  });

  it('applies every migration once, in SQLite DDL; a failing migration leaves the schema as it was', async () => {
    const dir = place();
    let s = sqliteStore(dir);
    await s.open();
    const id = s.migration?.storeId;
    assert.ok(id, 'the store gets an identity');
    assert.deepEqual(s.migration, { applied: MIGRATIONS.map((m) => m.version), version: MIGRATIONS.length, storeId: id });
    const root = await s.ensureRoot(1, dirInit());
    await s.close();
    const bad: Migration = {
      version: MIGRATIONS.length + 1,
      name: 'broken',
      statements: [],
      sqlite: ['ALTER TABLE inodes ADD COLUMN ok integer', 'SELECT * FROM no_such_table'],
    };
    await assert.rejects(sqliteStore(dir, [...MIGRATIONS, bad]).open(), /no such table/);
    s = sqliteStore(dir);
    await s.open();
    try {
      assert.deepEqual(s.migration, { applied: [], version: MIGRATIONS.length, storeId: id }, 'and keeps it');
      const cols = await s.driver.query<{ name: string }>(`SELECT name FROM pragma_table_info('inodes')`);
      assert.ok(!cols.rows.some((c) => c.name === 'ok'), 'the failed migration added no column');
      assert.deepEqual(await s.getInode(root.id), root);
    } finally {
      await s.close();
    }
  });

  it('rows carry every column under its own name, whatever the name (a later one of the same name wins); parameters bind by number', async () => {
    const d = SqliteDriver.open({ dir: place(), statements: {}, checkpointWorker: false });
    try {
      await d.query('CREATE TABLE t (a integer, b blob)');
      await d.query('INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)', [1, Buffer.from('x'), 2, null]);
      const odd = ['a"b', '}; throw 1; //', 'back\\slash', 'line\nbreak', '\u2028', '__proto__', 'constructor'];
      const cols = odd.map((n, i) => `a + ${i} AS "${n.replaceAll('"', '""')}"`).join(', ');
      const { rows } = await d.query(`SELECT ${cols}, b, a AS k, b AS k FROM t ORDER BY a`);
      assert.equal(rows.length, 2);
      odd.forEach((n, i) => {
        assert.ok(Object.hasOwn(rows[0]!, n), `column ${JSON.stringify(n)}`);
        assert.equal(rows[0]![n], 1 + i);
        assert.equal(rows[1]![n], 2 + i);
      });
      assert.deepEqual(rows[0]!.b, Buffer.from('x'));
      assert.equal(rows[1]!.b, null);
      assert.deepEqual(rows[0]!.k, Buffer.from('x'), 'the second k');
      assert.deepEqual(Object.keys(rows[0]!), [...odd, 'b', 'k']);
      // RETURNING rows come the same way; a write without RETURNING gives none.
      const ret = await d.query('UPDATE t SET a = a + 10 WHERE a = $1 RETURNING a, b', [2]);
      assert.deepEqual(ret.rows, [{ a: 12, b: null }]);
      assert.deepEqual((await d.query('DELETE FROM t WHERE a = $1', [12])).rows, []);
      // Parameters: one used twice, one only after another, none taken from a literal or a comment.
      const p = await d.query(`SELECT $2 AS x, 'a?1' AS "?1", $1 AS y /* ?3 it's */, $2 AS z -- ?4 it's`, [1, 'two']);
      assert.deepEqual(p.rows, [{ x: 'two', '?1': 'a?1', y: 1, z: 'two' }]);
      await assert.rejects(d.query('SELECT $1 AS a, $2 AS b', [1]), /\?2 not given/);
    } finally {
      await d.close();
    }
  });

  it('one process per directory', async () => {
    const dir = place();
    const a = sqliteStore(dir);
    await a.open();
    try {
      await assert.rejects(sqliteStore(dir).open(), /in use by process/);
    } finally {
      await a.close();
    }
    const b = sqliteStore(dir);
    await b.open();
    await b.close();
  });
});
