// The metadata stores as the server opens them: an embedded store and a fenced postgres one are
// written by this process alone, so they answer an unchanged inode (and a name) from memory however
// long ago it was read (no TTL); a postgres fence taken again after a lost connection starts the
// cache again from the database.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import pino from 'pino';
import { postgresForTests } from '../../test/helpers/postgres.js';
import { createPostgresMetadataStore } from './meta/sql/index.js';
import { PgDriver } from './meta/sql/pg.js';
import type { MetadataStore } from './meta/store.js';
import { createMetadataStore } from './stores.js';
import { dirInit, fileInit } from './testing/inodes.js';

/** Longer than the cache's default TTL (meta/cached.ts, 1000 ms). */
const PAST_DEFAULT_TTL_MS = 1100;

describe('metadata stores as opened by the server', () => {
  it('embedded: an inode read more than a TTL ago is answered from memory, a change made here is seen at once', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-stores-'));
    const store = createMetadataStore('meta', { type: 'embedded' }, dir, pino({ level: 'silent' }));
    await store.open();
    try {
      const root = await store.ensureRoot(1, dirInit());
      const f = await store.create(root.id, Buffer.from('f'), fileInit(), { sec: 1_700_000_000, nsec: 0 });
      assert.equal((await store.getInode(f.id))?.mode, f.mode);
      // The engine under the cache, to count what reaches it.
      const inner = (store as unknown as { inner: MetadataStore }).inner;
      let reads = 0;
      const getInode = inner.getInode.bind(inner);
      inner.getInode = (id) => (reads++, getInode(id));
      await new Promise((r) => setTimeout(r, PAST_DEFAULT_TTL_MS));
      assert.equal((await store.getInode(f.id))?.id, f.id);
      assert.equal(reads, 0, 'answered from memory after the TTL');
      await store.setAttr(f.id, { mode: 0o600, ctime: { sec: 1_700_000_001, nsec: 0 } });
      assert.equal((await store.getInode(f.id))?.mode, 0o600, 'a change made through the store shows at once');
    } finally {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('postgres, fenced: an inode and a name are answered from memory past the TTL; a fence taken again reads the database again', async () => {
    const pg = await postgresForTests();
    const schema = `dfs_stores_${process.pid}`;
    const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-stores-'));
    const store = createMetadataStore('meta', { type: 'postgres', url: pg.url, schema }, dir, pino({ level: 'silent' }), undefined, true);
    try {
      await store.open();
      const root = await store.ensureRoot(1, dirInit());
      const f = await store.create(root.id, Buffer.from('f'), fileInit(), { sec: 1_700_000_000, nsec: 0 });
      const inner = (store as unknown as { inner: MetadataStore }).inner;
      let reads = 0;
      const getInode = inner.getInode.bind(inner);
      const lookup = inner.lookup.bind(inner);
      inner.getInode = (id) => (reads++, getInode(id));
      inner.lookup = (d, n) => (reads++, lookup(d, n));
      await new Promise((r) => setTimeout(r, PAST_DEFAULT_TTL_MS));
      assert.equal((await store.lookup(root.id, Buffer.from('f')))?.id, f.id);
      assert.equal((await store.getInode(f.id))?.mode, f.mode);
      assert.equal(reads, 0, 'answered from memory after the TTL');

      // The database changes while the fence's connection is lost (as after a restart of a
      // PostgreSQL that had not flushed what it answered): once the fence is taken again, the
      // cache answers nothing it held before.
      const behind = createPostgresMetadataStore({ url: pg.url, schema });
      await behind.open();
      await behind.setAttr(f.id, { mode: 0o600, ctime: { sec: 1_700_000_001, nsec: 0 } });
      await behind.close();
      const admin = await PgDriver.open({ url: pg.url });
      try {
        await admin.query(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'dittofs-fence %' AND pid <> pg_backend_pid()`,
        );
      } finally {
        await admin.close();
      }
      const deadline = Date.now() + 60_000;
      let mode = f.mode;
      while (mode !== 0o600 && Date.now() < deadline) {
        mode = (await store.getInode(f.id))?.mode ?? -1;
        if (mode !== 0o600) await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(mode, 0o600, 'read from the database once the fence is held again');
    } finally {
      await store.close();
      if (pg.external) {
        const d = await PgDriver.open({ url: pg.url });
        await d.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).finally(() => d.close());
      }
      await pg.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
