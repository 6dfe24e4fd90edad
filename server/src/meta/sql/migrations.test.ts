// Schema migrations on both SQL engines: a fresh store applies all of them, a reopened one none, a
// store made by an older version gets only the new ones (keeping its data), and a store newer than
// the code is refused. Also the embedded store's directory lock.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { postgresForTests, type PostgresInstance } from '../../../../test/helpers/postgres.js';
import { FileType, type Inode, type NewInode } from '../../vfs/types.js';
import type { SqlDriver } from './driver.js';
import { assertSizeTokensAfterMigration } from '../../testing/size-tokens.js';
import { MIGRATIONS, type Migration } from './migrations.js';
import { PgDriver } from './pg.js';
import { PgliteDriver, SerialQueue } from './pglite.js';
import { SqlMetadataStore } from './store.js';
import { dirInit } from '../../testing/inodes.js';

// A test migration after the real ones.
const NEXT: Migration = {
  version: MIGRATIONS.length + 1,
  name: 'test: an extra column',
  statements: [
    'ALTER TABLE inodes ADD COLUMN test_extra integer NOT NULL DEFAULT 7',
    'CREATE INDEX inodes_test_extra ON inodes (test_extra)',
  ],
  sqlite: ['ALTER TABLE inodes ADD COLUMN test_extra integer NOT NULL DEFAULT 7', 'CREATE INDEX inodes_test_extra ON inodes (test_extra)'],
};
const CUR = MIGRATIONS;
/** What a store's open() did to its schema (its identity aside). */
const versionsRun = (s: SqlMetadataStore) => s.migration && { applied: s.migration.applied, version: s.migration.version };
const WITH_NEXT = [...CUR, NEXT];
/** The schema before random generations (migration 2). */
const V1 = MIGRATIONS.slice(0, 1);
/** The schema before creation times, DOS attributes and streams (migration 3). */
const V2 = MIGRATIONS.slice(0, 2);
/** The schema before size tokens (migration 6). */
const V5 = MIGRATIONS.slice(0, 5);

/**
 * A share as DittoFS wrote it at schema version 1 (every generation 1): a root, a directory, a file
 * with a block and a symlink. Written in SQL, because today's code writes random generations.
 */
async function legacyTree(d: SqlDriver, shareId: number): Promise<{ root: number; dir: number; file: number; link: number }> {
  const ins = async (type: number, parent: number, size: number, target: Buffer | null): Promise<number> => {
    const { rows } = await d.query<{ id: string | number }>(
      `INSERT INTO inodes (share_id, type, mode, uid, gid, size, nlink, atime_sec, atime_nsec, mtime_sec, mtime_nsec,
                           ctime_sec, ctime_nsec, parent, target)
       VALUES ($1, $2, 420, 1000, 1000, $3, $4, 10, 0, 11, 0, 12, 0, $5, $6) RETURNING id`,
      [shareId, type, size, type === FileType.DIR ? 2 : 1, parent, target],
    );
    return Number(rows[0]!.id);
  };
  const root = await ins(FileType.DIR, 0, 4096, null);
  await d.query('UPDATE inodes SET parent = id WHERE id = $1', [root]);
  await d.query('INSERT INTO share_roots (share_id, root) VALUES ($1, $2)', [shareId, root]);
  const dir = await ins(FileType.DIR, root, 4096, null);
  const file = await ins(FileType.REG, 0, 5, null);
  const link = await ins(FileType.LNK, 0, 11, Buffer.from('/etc/secret'));
  let cookie = 3;
  for (const [parent, name, child] of [
    [root, 'dir', dir],
    [dir, 'file', file],
    [root, 'link', link],
  ] as const) {
    await d.query('INSERT INTO dirents (parent, name, cookie, child) VALUES ($1, $2, $3, $4)', [
      parent,
      Buffer.from(name),
      cookie++,
      child,
    ]);
  }
  await d.query('UPDATE inodes SET next_cookie = $1 WHERE id = ANY($2::bigint[])', [cookie, [root, dir]]);
  await d.query(`INSERT INTO blocks (inode, idx, key, length, version) VALUES ($1, 0, 'k/0', 5, 1)`, [file]);
  return { root, dir, file, link };
}

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
      assert.deepEqual(versionsRun(s), { applied: MIGRATIONS.map((m) => m.version), version: MIGRATIONS.length });
      const first = await versions(s.driver);
      assert.deepEqual(
        first.map((r) => [r.version, r.name]),
        MIGRATIONS.map((m) => [m.version, m.name]),
      );
      const id = s.migration?.storeId;
      assert.match(id ?? '', /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'a store gets its identity when created');
      const root = await s.ensureRoot(1, rootInit);
      await s.close();
      s = p.store();
      await s.open();
      try {
        assert.deepEqual(versionsRun(s), { applied: [], version: MIGRATIONS.length });
        assert.equal(s.migration?.storeId, id, 'and keeps it');
        assert.deepEqual(await versions(s.driver), first, 'applied_at unchanged: nothing ran again');
        assert.deepEqual(await s.getInode(root.id), root);
      } finally {
        await s.close();
      }
    });

    it('a store from before random generations gets one per inode, keeping everything else', async () => {
      const p = await place();
      let s = p.store(V1);
      await s.open();
      assert.deepEqual(s.migration?.applied, [1]);
      const ids = await legacyTree(s.driver, 77);
      const gens = await s.driver.query<{ g: number }>('SELECT generation AS g FROM inodes');
      assert.ok(gens.rows.length === 4 && gens.rows.every((r) => Number(r.g) === 1), 'version 1 wrote generation 1');
      await s.close();

      s = p.store();
      await s.open();
      let after: Inode[];
      try {
        assert.deepEqual(versionsRun(s), { applied: CUR.slice(1).map((m) => m.version), version: CUR.length });
        const root = await s.ensureRoot(77, rootInit);
        assert.equal(root.id, ids.root, 'the share keeps its root');
        const dir = await s.lookup(root.id, Buffer.from('dir'));
        const file = dir && (await s.lookup(dir.id, Buffer.from('file')));
        const link = await s.lookup(root.id, Buffer.from('link'));
        assert.ok(dir && file && link);
        assert.deepEqual([dir.id, file.id, link.id], [ids.dir, ids.file, ids.link]);
        assert.deepEqual([file.size, file.mode, file.uid, file.mtime], [5, 0o644, 1000, { sec: 11, nsec: 0 }]);
        assert.deepEqual(link.target, Buffer.from('/etc/secret'));
        assert.deepEqual(await s.getBlocks(file.id, 0, 10), [{ index: 0, key: 'k/0', length: 5, version: 1 }]);
        after = [root, dir, file, link];
        for (const i of after)
          assert.ok(Number.isSafeInteger(i.generation) && i.generation > 1 && i.generation < 2 ** 53, `generation ${i.generation}`);
        assert.equal(new Set(after.map((i) => i.generation)).size, 4, 'each inode its own');
        // New inodes get theirs from the code, not the column default; both are random.
        const n = await s.create(root.id, Buffer.from('new'), { ...rootInit, type: FileType.REG }, { sec: 20, nsec: 0 });
        assert.ok(n.generation > 1 && !after.some((i) => i.generation === n.generation));
        after.push(n);
        // The column default (for any insert that names no generation) is random too.
        const { rows } = await s.driver.query<{ g: string | number }>(
          `INSERT INTO inodes (share_id, type, mode, uid, gid, nlink, atime_sec, atime_nsec, mtime_sec, mtime_nsec, ctime_sec, ctime_nsec,
                              btime_sec, btime_nsec)
           SELECT 78, 1, 420, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0 FROM generate_series(1, 3) RETURNING generation AS g`,
        );
        const defaults = rows.map((r) => Number(r.g));
        assert.ok(defaults.every((g) => g > 1 && g < 2 ** 53) && new Set(defaults).size === 3, `defaults ${defaults.join(', ')}`);
        await assert.rejects(s.driver.query('UPDATE inodes SET generation = 0 WHERE id = $1', [n.id]), /inodes_generation_range/);
      } finally {
        await s.close();
      }
      // Persisted: a reopen runs nothing and reads the same generations.
      s = p.store();
      await s.open();
      try {
        assert.deepEqual(s.migration?.applied, []);
        for (const i of after) assert.equal((await s.getInode(i.id))?.generation, i.generation);
      } finally {
        await s.close();
      }
    });

    it('a store from before creation times gets what SMB reported before, keeping everything else', async () => {
      const p = await place();
      let s = p.store(V2);
      await s.open();
      assert.deepEqual(s.migration?.applied, [1, 2]);
      const ids = await legacyTree(s.driver, 79);
      // One file whose earliest time is its ctime, one whose times tie on seconds.
      await s.driver.query('UPDATE inodes SET atime_sec = 50, mtime_sec = 40, ctime_sec = 30, ctime_nsec = 9 WHERE id = $1', [ids.link]);
      await s.driver.query('UPDATE inodes SET atime_sec = 11, atime_nsec = 5, mtime_sec = 11, mtime_nsec = 4 WHERE id = $1', [ids.file]);
      const before = await s.driver.query<{ id: string | number; g: string | number }>('SELECT id, generation AS g FROM inodes');
      await s.close();

      s = p.store();
      await s.open();
      try {
        assert.deepEqual(versionsRun(s), { applied: CUR.slice(2).map((m) => m.version), version: CUR.length });
        const root = await s.ensureRoot(79, rootInit);
        const dir = await s.lookup(root.id, Buffer.from('dir'));
        const file = dir && (await s.lookup(dir.id, Buffer.from('file')));
        const link = await s.getInode(ids.link);
        assert.ok(dir && file && link);
        assert.deepEqual(
          [root.btime, dir.btime, file.btime, link.btime],
          [
            { sec: 10, nsec: 0 },
            { sec: 10, nsec: 0 },
            { sec: 11, nsec: 4 },
            { sec: 30, nsec: 9 },
          ],
        );
        assert.deepEqual([root.dosAttrs, dir.dosAttrs, file.dosAttrs, link.dosAttrs], [0, 0, 0x20, 0x20], 'ARCHIVE on all but directories');
        assert.deepEqual([file.size, file.mode, file.mtime], [5, 0o644, { sec: 11, nsec: 4 }]);
        assert.deepEqual(await s.getBlocks(file.id, 0, 10), [{ index: 0, key: 'k/0', length: 5, version: 1 }]);
        for (const r of before.rows) assert.equal((await s.getInode(Number(r.id)))?.generation, Number(r.g), 'generations kept');
        // New inodes get theirs; changes stick.
        const n = await s.create(root.id, Buffer.from('new'), { ...rootInit, type: FileType.REG, dosAttrs: 0x2 }, { sec: 20, nsec: 1 });
        assert.deepEqual([n.btime, n.dosAttrs], [{ sec: 20, nsec: 1 }, 0x2]);
        await s.setAttr(file.id, { btime: { sec: 3, nsec: 0 }, dosAttrs: 0x1 });
        // The columns are required: an insert that names no creation time is refused.
        await assert.rejects(
          s.driver.query(
            `INSERT INTO inodes (share_id, type, mode, uid, gid, nlink, atime_sec, atime_nsec, mtime_sec, mtime_nsec, ctime_sec, ctime_nsec)
             VALUES (80, 1, 420, 0, 0, 1, 0, 0, 0, 0, 0, 0)`,
          ),
          /btime_sec/,
        );
      } finally {
        await s.close();
      }
      s = p.store();
      await s.open();
      try {
        assert.deepEqual(s.migration?.applied, []);
        const f = await s.getInode(ids.file);
        assert.deepEqual([f?.btime, f?.dosAttrs], [{ sec: 3, nsec: 0 }, 0x1]);
      } finally {
        await s.close();
      }
    });

    it('a store from before size tokens keeps its files; a truncate under a lease is fenced by sizes stored from then on', async () => {
      const p = await place();
      let s = p.store(V5);
      await s.open();
      const root = await s.ensureRoot(81, rootInit);
      const f = await s.create(root.id, Buffer.from('f'), { ...rootInit, type: FileType.REG, mode: 0o644 }, { sec: 20, nsec: 0 });
      await s.putBlock(f.id, { index: 0, key: 'k/0', length: 5, version: 1 }, { prevVersion: 0, token: 4 });
      await s.driver.query('UPDATE inodes SET size = 5 WHERE id = $1', [f.id]);
      await s.close();

      s = p.store();
      await s.open();
      try {
        assert.deepEqual(versionsRun(s), { applied: [6], version: CUR.length });
        assert.equal((await s.getInode(f.id))?.size, 5);
        await assertSizeTokensAfterMigration(s, f.id);
      } finally {
        await s.close();
      }
    });

    it('an older store gets only the newer migrations and keeps its data', async () => {
      const p = await place();
      let s = p.store(CUR);
      await s.open();
      assert.deepEqual(
        s.migration?.applied,
        CUR.map((m) => m.version),
      );
      const root = await s.ensureRoot(1, rootInit);
      const f = await s.create(root.id, Buffer.from('f'), { ...rootInit, type: FileType.REG }, { sec: 5, nsec: 6 });
      await s.close();

      s = p.store(WITH_NEXT);
      await s.open();
      try {
        assert.deepEqual(versionsRun(s), { applied: [NEXT.version], version: NEXT.version });
        assert.deepEqual(await s.lookup(root.id, Buffer.from('f')), f);
        const { rows } = await s.driver.query<{ x: number }>('SELECT test_extra AS x FROM inodes WHERE id = $1', [f.id]);
        assert.equal(rows[0]?.x, 7);
        assert.deepEqual(
          (await versions(s.driver)).map((r) => r.version),
          WITH_NEXT.map((m) => m.version),
        );
      } finally {
        await s.close();
      }

      // Code that knows fewer migrations than the store has refuses it.
      s = p.store(CUR);
      await assert.rejects(
        s.open(),
        new RegExp(`schema is at version ${NEXT.version}, newer than this DittoFS supports \\(${CUR.length}\\)`),
      );
      await s.close();
    });

    it('a fresh store applies every migration, in one go', async () => {
      const p = await place();
      const s = p.store(WITH_NEXT);
      await s.open();
      try {
        assert.deepEqual(versionsRun(s), { applied: WITH_NEXT.map((m) => m.version), version: NEXT.version });
      } finally {
        await s.close();
      }
    });

    it('a failing migration leaves the schema as it was', async () => {
      const p = await place();
      const bad: Migration = {
        version: NEXT.version,
        name: 'broken',
        statements: ['ALTER TABLE inodes ADD COLUMN ok integer', 'SELECT * FROM no_such_table'],
        sqlite: ['ALTER TABLE inodes ADD COLUMN ok integer', 'SELECT * FROM no_such_table'],
      };
      let s = p.store(CUR);
      await s.open();
      await s.close();
      s = p.store([...CUR, bad]);
      await assert.rejects(s.open(), /no_such_table/);
      s = p.store(WITH_NEXT);
      await s.open();
      try {
        assert.deepEqual(s.migration?.applied, [NEXT.version]);
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
  it('is private (0700), locked while open, and a stale lock is taken over', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-lock-'));
    try {
      // A directory others could read (the control database in it holds password hashes) is made private.
      await chmod(dir, 0o755);
      const a = await PgliteDriver.open({ dir });
      assert.equal((await stat(dir)).mode & 0o777, 0o700);
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

  it('is never a system directory (it would be made 0700)', async () => {
    for (const dir of ['/', '/etc', '/usr', '/proc/x'])
      await assert.rejects(PgliteDriver.open({ dir }), /system directory|is under \/proc/);
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
