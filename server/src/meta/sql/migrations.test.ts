// Schema migrations on both SQL engines: a fresh store applies all of them, a reopened one none, a
// store made by an older version gets only the new ones (keeping its data), and a store newer than
// the code is refused. Also the embedded store's directory lock.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { postgresForTests, type PostgresInstance } from '../../../../test/helpers/postgres.js';
import { FileType, type NewInode } from '../../vfs/types.js';
import type { SqlDriver } from './driver.js';
import { MIGRATIONS, type Migration } from './migrations.js';
import { PgDriver } from './pg.js';
import { PgliteDriver, SerialQueue } from './pglite.js';
import { SqlMetadataStore } from './store.js';
import { dirInit } from '../../testing/inodes.js';

const M2: Migration = {
  version: 2,
  name: 'test: an extra column',
  statements: [
    'ALTER TABLE inodes ADD COLUMN test_extra integer NOT NULL DEFAULT 7',
    'CREATE INDEX inodes_test_extra ON inodes (test_extra)',
  ],
};
const V1 = MIGRATIONS.slice(0, 1);
const V2 = [...V1, M2];

const rootInit: NewInode = dirInit({ uid: 0, gid: 0, size: 0 });

interface Place {
  store(migrations?: readonly Migration[]): SqlMetadataStore;
}

function migrationSuite(name: string, setup: () => Promise<{ place(): Promise<Place>; teardown(): Promise<void> }>): void {
  describe(`schema migrations: ${name}`, () => {
    let env: { place(): Promise<Place>; teardown(): Promise<void> } | undefined;
    before(async () => {
      env = await setup();
    });
    after(async () => {
      await env?.teardown();
    });
    const place = async (): Promise<Place> => {
      if (!env) throw new Error(`${name}: setup failed (see the before hook)`);
      return env.place();
    };
    const versions = async (d: SqlDriver) =>
      (
        await d.query<{ version: number; name: string; at: string }>(
          'SELECT version, name, applied_at::text AS at FROM schema_migrations ORDER BY version',
        )
      ).rows;

    it('a fresh store applies every migration; reopening applies none', async () => {
      const p = await place();
      let s = p.store();
      await s.open();
      assert.deepEqual(s.migration, { applied: MIGRATIONS.map((m) => m.version), version: MIGRATIONS.length });
      const first = await versions(s.driver);
      assert.deepEqual(
        first.map((r) => [r.version, r.name]),
        MIGRATIONS.map((m) => [m.version, m.name]),
      );
      const root = await s.ensureRoot(1, rootInit);
      await s.close();
      s = p.store();
      await s.open();
      try {
        assert.deepEqual(s.migration, { applied: [], version: MIGRATIONS.length });
        assert.deepEqual(await versions(s.driver), first, 'applied_at unchanged: nothing ran again');
        assert.deepEqual(await s.getInode(root.id), root);
      } finally {
        await s.close();
      }
    });

    it('an older store gets only the newer migrations and keeps its data', async () => {
      const p = await place();
      let s = p.store(V1);
      await s.open();
      assert.deepEqual(s.migration?.applied, [1]);
      const root = await s.ensureRoot(1, rootInit);
      const f = await s.create(root.id, Buffer.from('f'), { ...rootInit, type: FileType.REG }, { sec: 5, nsec: 6 });
      await s.close();

      s = p.store(V2);
      await s.open();
      try {
        assert.deepEqual(s.migration, { applied: [2], version: 2 });
        assert.deepEqual(await s.lookup(root.id, Buffer.from('f')), f);
        const { rows } = await s.driver.query<{ x: number }>('SELECT test_extra AS x FROM inodes WHERE id = $1', [f.id]);
        assert.equal(rows[0]?.x, 7);
        assert.deepEqual(
          (await versions(s.driver)).map((r) => r.version),
          [1, 2],
        );
      } finally {
        await s.close();
      }

      // Code that knows fewer migrations than the store has refuses it.
      s = p.store(V1);
      await assert.rejects(s.open(), /schema is at version 2, newer than this DittoFS supports \(1\)/);
      await s.close();
    });

    it('a fresh store with two migrations applies both, in one go', async () => {
      const p = await place();
      const s = p.store(V2);
      await s.open();
      try {
        assert.deepEqual(s.migration, { applied: [1, 2], version: 2 });
      } finally {
        await s.close();
      }
    });

    it('a failing migration leaves the schema as it was', async () => {
      const p = await place();
      const bad: Migration = {
        version: 2,
        name: 'broken',
        statements: ['ALTER TABLE inodes ADD COLUMN ok integer', 'SELECT * FROM no_such_table'],
      };
      let s = p.store(V1);
      await s.open();
      await s.close();
      s = p.store([...V1, bad]);
      await assert.rejects(s.open(), /no_such_table/);
      s = p.store(V2);
      await s.open();
      try {
        assert.deepEqual(s.migration?.applied, [2]);
        const cols = await s.driver.query("SELECT 1 FROM information_schema.columns WHERE table_name = 'inodes' AND column_name = 'ok'");
        assert.equal(cols.rows.length, 0, 'the failed migration was rolled back whole');
      } finally {
        await s.close();
      }
    });
  });
}

let tmp: string | undefined;
migrationSuite('embedded', async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'dittofs-migrate-'));
  let n = 0;
  return {
    async place() {
      const dir = path.join(tmp!, `s${n++}`);
      return {
        store: (migrations) =>
          new SqlMetadataStore({ kind: 'embedded', connect: () => PgliteDriver.open({ dir }), ...(migrations ? { migrations } : {}) }),
      };
    },
    async teardown() {
      await rm(tmp!, { recursive: true, force: true });
    },
  };
});

migrationSuite('postgres', async () => {
  const pg: PostgresInstance = await postgresForTests();
  const prefix = `dfs_mig_${randomBytes(4).toString('hex')}`;
  const schemas: string[] = [];
  return {
    async place() {
      const schema = `${prefix}_${schemas.length}`;
      schemas.push(schema);
      return {
        store: (migrations) =>
          new SqlMetadataStore({
            kind: 'postgres',
            connect: () => PgDriver.open({ url: pg.url, schema, poolSize: 2 }),
            ...(migrations ? { migrations } : {}),
          }),
      };
    },
    async teardown() {
      if (pg.external) {
        const d = await PgDriver.open({ url: pg.url });
        for (const s of schemas) await d.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
        await d.close();
      }
      await pg.stop();
    },
  };
});

describe('embedded store directory', () => {
  it('is locked while open, and a stale lock is taken over', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-lock-'));
    try {
      const a = await PgliteDriver.open({ dir });
      await assert.rejects(PgliteDriver.open({ dir }), /in use by process/);
      await a.close();
      // A lock left by a process that is gone (here: a pid that cannot exist).
      await writeFile(path.join(dir, 'LOCK'), '2147483646\n');
      const b = await PgliteDriver.open({ dir });
      assert.deepEqual((await b.query<{ n: number }>('SELECT 1 AS n')).rows, [{ n: 1 }]);
      await b.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('runs queued work one at a time, in order', async () => {
    const q = new SerialQueue();
    const log: string[] = [];
    const job = (name: string, ms: number, fail = false) =>
      q.run(async () => {
        log.push(`start ${name}`);
        await new Promise((r) => setTimeout(r, ms));
        log.push(`end ${name}`);
        if (fail) throw new Error(name);
        return name;
      });
    const results = await Promise.allSettled([job('a', 20), job('b', 1, true), job('c', 5)]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
    assert.deepEqual(log, ['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
  });
});
