// The move of the embedded control database from PGlite (DittoFS before SQLite) to SQLite: a
// database written on PGlite opens on SQLite with every row intact (a backup of it is the same
// document), token versions go on above every one handed out, and the PGlite files are kept; a
// move that cannot be done leaves the PGlite database as it was and says why.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MIGRATING_DIR, PGLITE_BACKUP_DIR, PGLITE_DIR } from '../meta/sql/embedded.js';
import { PgliteDriver } from '../meta/sql/pglite.js';
import { SqliteDriver } from '../meta/sql/sqlite.js';
import { dumpControl } from './backup.js';
import { CONTROL_SQLITE_FILE, controlLayout } from './embedded.js';
import { CONTROL_MIGRATIONS } from './migrations.js';
import { ControlStore, openControlStore } from './store.js';
import { SHARE_SETTINGS_DEFAULTS } from './types.js';

const NOW = new Date('2026-01-02T03:04:05.000Z');

/** The files under `dir` this process holds open (Linux: /proc/self/fd), deleted ones included. */
function openFilesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(dir + path.sep)) out.push(target);
    } catch {
      // Closed meanwhile (the descriptor readdir itself used).
    }
  }
  return out;
}

/** A control database on PGlite, as DittoFS wrote it before the SQLite engine. */
async function pgliteControl(dir: string): Promise<ControlStore> {
  return ControlStore.open(await PgliteDriver.open({ dir }));
}

describe('embedded control database: the move from PGlite to SQLite', () => {
  let tmp: string;
  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'dittofs-control-move-'));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('keeps every row, the generation and the token versions; the PGlite database stays as a backup', async () => {
    const dir = path.join(tmp, 'control');
    const pg = await pgliteControl(dir);
    await pg.createStore('metadata', { name: 'meta', type: 'embedded', config: { path: '/srv/meta', sync: 'change' } });
    await pg.createStore('block', { name: 'blocks', type: 's3', config: { bucket: 'b', secret_access_key: 's3cr3t' } });
    await pg.createGroup({ name: 'staff', gid: 3000 });
    await pg.createUser({ username: 'alice', uid: 2000, gid: 3000, groups: ['staff'], password_hash: 'h1', nt_hash: 'aa' });
    await pg.createUser({ username: 'bob', email: 'bob@example.com', role: 'operator', must_change_password: true });
    await pg.updateUser('alice', { revoke_tokens: true });
    // The newest token version belongs to a user that is gone: it is not handed out again.
    await pg.createUser({ username: 'gone' });
    const goneToken = (await pg.getCredentials('gone'))!.token_version;
    await pg.deleteUser('gone');
    await pg.createShare({ ...SHARE_SETTINGS_DEFAULTS, name: 'data', metadata_store: 'meta', block_store: 'blocks', read_only: true });
    await pg.setPermission('data', { user: 'bob' }, 'read-write');
    await pg.setPermission('data', { group: 'staff' }, 'read');
    await pg.updateAdapter('smb', { enabled: false, port: 1445 });
    await pg.putSetting('motd', 'hello');
    await pg.putSetting('limits', { n: 3, on: true });
    await pg.mutate((q) => q.secret('jwt', 'k'.repeat(40)));
    const before = await dumpControl(pg, { dittofsVersion: 't', now: NOW });
    await pg.close();
    assert.equal(controlLayout(dir), 'pglite');

    const lite = await openControlStore({ type: 'embedded', path: dir });
    try {
      assert.equal(lite.dialect.name, 'sqlite');
      assert.equal(controlLayout(dir), 'sqlite');
      assert.ok(existsSync(path.join(dir, PGLITE_BACKUP_DIR, 'PG_VERSION')), 'the PGlite database is kept');
      assert.ok(!existsSync(path.join(dir, PGLITE_DIR)));
      assert.deepEqual(await dumpControl(lite, { dittofsVersion: 't', now: NOW }), before);
      assert.equal((await lite.getCredentials('alice'))?.password_hash, 'h1');
      // A user created again under a deleted one's name gets a token version never handed out.
      const again = await lite.createUser({ username: 'gone' });
      assert.ok((await lite.getCredentials(again.username))!.token_version > goneToken);
      assert.equal(await lite.generation(), before.generation + 1);
    } finally {
      await lite.close();
    }
    // Opened again: SQLite as it was left, no second move.
    const reopened = await openControlStore({ type: 'embedded', path: dir });
    try {
      assert.deepEqual(
        (await reopened.listUsers()).map((u) => u.username),
        ['alice', 'bob', 'gone'],
      );
      assert.deepEqual(await reopened.getSetting('limits'), { value: { n: 3, on: true } });
    } finally {
      await reopened.close();
    }
  });

  it('a move that cannot be done changes nothing and says why', async () => {
    const dir = path.join(tmp, 'newer');
    const pg = await pgliteControl(dir);
    await pg.createUser({ username: 'kept' });
    await pg.close();
    // A database written by a newer DittoFS (a schema version this one does not know).
    const d = await PgliteDriver.open({ dir });
    await d.query('INSERT INTO control_schema_migrations (version, name) VALUES ($1, $2)', [CONTROL_MIGRATIONS.length + 1, 'future']);
    await d.close();

    await assert.rejects(openControlStore({ type: 'embedded', path: dir }), (e: Error) => {
      assert.match(e.message, /control database .*: the move from PGlite to SQLite failed; the PGlite database is unchanged/);
      assert.match(e.message, /newer than this DittoFS supports/);
      return true;
    });
    assert.equal(controlLayout(dir), 'pglite');
    assert.ok(!existsSync(path.join(dir, CONTROL_SQLITE_FILE)));
    assert.ok(!existsSync(path.join(dir, PGLITE_BACKUP_DIR)));
    const d2 = await PgliteDriver.open({ dir });
    const { rows } = await d2.query('SELECT username FROM users');
    assert.deepEqual(rows, [{ username: 'kept' }]);
    await d2.close();
  });

  it('a new database that cannot be built is closed again, and the PGlite one stays', async (t) => {
    if (!existsSync('/proc/self/fd')) return t.skip('needs /proc/self/fd');
    const dir = path.join(tmp, 'unbuilt');
    const pg = await pgliteControl(dir);
    await pg.createUser({ username: 'kept' });
    await pg.close();
    // The new database's first transaction (its migrations) fails, as on a full disk.
    t.mock.method(SqliteDriver.prototype, 'transaction', () => Promise.reject(new Error('disk I/O error')), { times: 1 });
    await assert.rejects(openControlStore({ type: 'embedded', path: dir }), /the PGlite database is unchanged: disk I\/O error/);
    t.mock.restoreAll();
    assert.deepEqual(openFilesUnder(path.join(dir, MIGRATING_DIR)), [], 'the half-built database is still open');
    assert.equal(controlLayout(dir), 'pglite');
    const lite = await openControlStore({ type: 'embedded', path: dir });
    try {
      assert.deepEqual(
        (await lite.listUsers()).map((u) => u.username),
        ['kept'],
      );
    } finally {
      await lite.close();
    }
  });

  it('a database another process holds is neither moved nor opened', async () => {
    const dir = path.join(tmp, 'held');
    const pg = await pgliteControl(dir);
    await pg.close();
    const lock = path.join(dir, 'LOCK');
    writeFileSync(lock, `${process.ppid}\n`);
    await assert.rejects(openControlStore({ type: 'embedded', path: dir }), /in use by process/);
    assert.equal(controlLayout(dir), 'pglite');
    unlinkSync(lock);
    const lite = await openControlStore({ type: 'embedded', path: dir });
    await lite.close();
    assert.equal(controlLayout(dir), 'sqlite');
  });
});
