// Control-plane backups: the document's validation (every problem named, no secret quoted), and a
// dump -> change -> load round trip on a real control database of each engine (SQLite embedded, a
// private PostgreSQL) that brings back every row, refuses a non-empty database without force, and
// revokes the tokens issued before.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ensureJwtSecret } from './auth.js';
import {
  BACKUP_ERROR,
  BACKUP_FORMAT,
  BACKUP_VERSION,
  BackupError,
  describeCounts,
  dumpControl,
  loadControl,
  validateBackup,
  type ControlBackup,
} from './backup.js';
import { postgresControlStore } from '../../../test/helpers/control-store.js';
import type { ControlStore } from './store.js';
import { openTestControlStore } from './testing.js';
import { SHARE_SETTINGS_DEFAULTS } from './types.js';

const SECRET_HASH = '$2b$10$abcdefghijklmnopqrstuuSECRETSECRETSECRETSECRETSECRE';
const NT = '0123456789abcdef0123456789abcdef';

function goodBackup(): ControlBackup {
  return {
    format: BACKUP_FORMAT,
    version: BACKUP_VERSION,
    created_at: '2025-06-01T12:00:00.000Z',
    dittofs_version: '0.1.0',
    schema_version: 1,
    generation: 7,
    token_version: 12,
    users: [
      {
        username: 'admin',
        uid: 10000,
        gid: 10000,
        email: null,
        role: 'admin',
        must_change_password: false,
        password_hash: SECRET_HASH,
        nt_hash: NT,
      },
      {
        username: 'alice',
        uid: 1000,
        gid: 1000,
        email: 'a@example.com',
        role: 'user',
        must_change_password: true,
        password_hash: null,
        nt_hash: null,
      },
    ],
    groups: [{ name: 'editors', gid: 2000, members: ['alice'] }],
    metadata_stores: [{ name: 'meta', type: 'memory', config: {} }],
    block_stores: [{ name: 'blocks', type: 's3', config: { bucket: 'b', access_key_id: 'AK', secret_access_key: 'TOPSECRET' } }],
    shares: [
      {
        ...SHARE_SETTINGS_DEFAULTS,
        name: '/export',
        metadata_store: 'meta',
        block_store: 'blocks',
        permissions: [
          { user: 'alice', level: 'read' },
          { group: 'editors', level: 'read-write' },
        ],
      },
    ],
    adapters: [{ type: 'nfs', enabled: true, port: 12049 }],
    settings: { 'logging.level': 'debug' },
    secrets: [{ name: 'jwt_secret', value: 'x1y2z3-abcdefgh-'.repeat(3) }],
  };
}

function problemsOf(doc: unknown): { message: string; problems: readonly string[] } {
  try {
    validateBackup(doc);
  } catch (e) {
    assert.ok(e instanceof BackupError, String(e));
    assert.equal(e.code, BACKUP_ERROR.INVALID);
    return { message: e.message, problems: e.problems };
  }
  return assert.fail('expected the document to be refused');
}

describe('validateBackup', () => {
  it('accepts a complete document; timestamps are optional', () => {
    const b = goodBackup();
    assert.equal(validateBackup(b), b);
    assert.equal(validateBackup(JSON.parse(JSON.stringify(b))).users.length, 2);
  });

  it('refuses what is not a backup, or a newer format, before anything else', () => {
    assert.match(problemsOf([]).message, /not a DittoFS control-plane backup: expected a JSON object, got a list/);
    assert.match(problemsOf({ users: [] }).message, /"format" is missing, expected "dittofs-controlplane-backup"/);
    assert.match(
      problemsOf({ ...goodBackup(), version: 2 }).message,
      /format version 2, written by a newer DittoFS; this one reads version 1: upgrade DittoFS/,
    );
    assert.match(problemsOf({ ...goodBackup(), version: '1' }).message, /"version" must be a positive integer/);
  });

  it('names every problem with its path, and checks references within the document', () => {
    const b = goodBackup() as unknown as Record<string, unknown> & ControlBackup;
    b.users.push({ ...b.users[1]!, username: 'Bob', uid: 1000 });
    b.groups[0]!.members.push('carol');
    b.shares[0]!.block_store = 'nope';
    b.shares[0]!.permissions.push({ user: 'alice', level: 'admin' }, { group: 'nobody', level: 'read' });
    (b.adapters[0] as unknown as Record<string, unknown>).port = 0;
    b.extra = true;
    const { message, problems } = problemsOf(b);
    assert.equal(message, 'the backup is not valid (8 problems); nothing was changed');
    assert.deepEqual(problems, [
      'extra: unknown key',
      'users[2].username: invalid user name "Bob"',
      'users[2].uid: duplicate uid 1000 (also users[1])',
      'groups[0].members[1]: no user "carol" in the backup',
      'shares[0].block_store: no block store "nope" in the backup',
      'shares[0].permissions[2]: a second grant for user "alice"',
      'shares[0].permissions[3].group: no group "nobody" in the backup',
      'adapters[0].port: expected an integer from 1 to 65535, got number 0',
    ]);
  });

  it('never quotes a password hash, an NT hash, a secret or a store config', () => {
    const b = goodBackup();
    (b.users[0] as unknown as Record<string, unknown>).password_hash = 12345;
    b.users[0]!.nt_hash = 'not-hex-TOPSECRET';
    (b.secrets[0] as unknown as Record<string, unknown>).value = { v: 'TOPSECRET' };
    (b.block_stores[0] as unknown as Record<string, unknown>).config = ['TOPSECRET'];
    const { problems } = problemsOf(b);
    assert.deepEqual(problems, [
      'users[0].password_hash: expected a string or null, got number',
      'users[0].nt_hash: expected 32 hexadecimal digits (value not shown)',
      'block_stores[0].config: expected an object of settings, got a list',
      'secrets[0].value: expected a string, got object',
    ]);
    assert.ok(!problems.join('\n').includes('TOPSECRET') && !problems.join('\n').includes('12345'));
  });
});

/** The round trip on one engine: the SQL of dumpControl and loadControl differs between them. */
function roundTripSuite(name: string, setup: () => Promise<{ store: ControlStore; teardown: () => Promise<void> }>): void {
  describe(`dumpControl and loadControl: ${name}`, () => {
    let store: ControlStore;
    let teardown: () => Promise<void>;

    before(async () => {
      ({ store, teardown } = await setup());
    });
    after(async () => {
      await teardown();
    });

    /** The backup minus what differs between two dumps of the same state. */
    const content = (b: ControlBackup): Partial<ControlBackup> => {
      const { created_at: _c, generation: _g, token_version: _t, ...rest } = b;
      return rest;
    };

    it('round trip: every row comes back as it was, in one transaction; tokens issued before are revoked', async () => {
      await store.mutate(async (q) => {
        await q.createStore('metadata', { name: 'meta', type: 'memory', config: {} });
        await q.createStore('block', { name: 'blocks', type: 's3', config: { bucket: 'b', access_key_id: 'AK', secret_access_key: 'SK' } });
        await q.createUser({ username: 'admin', role: 'admin', password_hash: SECRET_HASH, nt_hash: NT });
        await q.createUser({ username: 'alice', uid: 1000, email: 'alice@example.com', must_change_password: true });
        await q.createGroup({ name: 'editors', gid: 2000, members: ['alice'] });
        await q.createShare({
          ...SHARE_SETTINGS_DEFAULTS,
          name: '/export',
          metadata_store: 'meta',
          block_store: 'blocks',
          root_mode: 0o750,
        });
        await q.setPermission('/export', { user: 'alice' }, 'read');
        await q.setPermission('/export', { group: 'editors' }, 'read-write');
        await q.updateAdapter('nfs', { enabled: true, port: 2049 });
        await q.putSetting('logging.level', 'debug');
      });
      const jwt = await ensureJwtSecret(store);
      const tokenBefore = (await store.getCredentials('alice'))!.token_version;

      const saved = await dumpControl(store, { dittofsVersion: '9.9.9', now: new Date('2025-06-01T12:00:00Z') });
      assert.equal(saved.created_at, '2025-06-01T12:00:00.000Z');
      assert.equal(saved.dittofs_version, '9.9.9');
      assert.deepEqual(
        saved.users.map((u) => [u.username, u.uid, u.password_hash, u.nt_hash, u.email, u.must_change_password]),
        [
          ['admin', 10000, SECRET_HASH, NT, null, false],
          ['alice', 1000, null, null, 'alice@example.com', true],
        ],
      );
      assert.deepEqual(saved.block_stores[0]?.config, { bucket: 'b', access_key_id: 'AK', secret_access_key: 'SK' }, 'secrets in clear');
      assert.deepEqual(saved.shares[0]?.permissions, [
        { user: 'alice', level: 'read' },
        { group: 'editors', level: 'read-write' },
      ]);
      assert.deepEqual(saved.settings, { 'logging.level': 'debug' });
      assert.deepEqual(
        saved.secrets.map((s) => s.value),
        [jwt],
      );
      assert.equal(describeCounts({ users: 2, shares: 1, groups: 0 }), '2 users, 1 share');
      validateBackup(JSON.parse(JSON.stringify(saved)));

      // Change everything, then restore.
      await store.mutate(async (q) => {
        await q.deleteShare('/export');
        await q.deleteUser('alice');
        await q.createUser({ username: 'mallory', uid: 666 });
        await q.putSetting('logging.level', 'error');
      });
      const genBefore = await store.generation();
      await assert.rejects(loadControl(store, saved), (e: unknown) => {
        assert.ok(e instanceof BackupError);
        assert.equal(e.code, BACKUP_ERROR.NOT_EMPTY);
        assert.equal(
          e.message,
          'the control database is not empty (2 users, 1 group, 1 metadata store, 1 block store, 1 adapter, 1 setting, 1 generated secret); ' +
            'restoring replaces all of it: use --force to do so',
        );
        return true;
      });
      assert.equal(await store.generation(), genBefore, 'a refused restore changes nothing');
      assert.ok(await store.getUser('mallory'));

      const r = await loadControl(store, JSON.parse(JSON.stringify(saved)), { force: true });
      assert.ok(r.generation > genBefore && r.generation > saved.generation);
      assert.equal(r.counts.users, 2);
      assert.equal(r.replaced.users, 2);
      const again = await dumpControl(store, { dittofsVersion: '9.9.9', now: new Date('2025-06-01T12:00:00Z') });
      assert.deepEqual(content(again), content(saved));
      assert.equal(await store.getUser('mallory'), undefined);
      const tokenAfter = (await store.getCredentials('alice'))!.token_version;
      assert.ok(tokenAfter > tokenBefore && tokenAfter > saved.token_version, 'tokens issued before the restore no longer match');
      assert.equal(await ensureJwtSecret(store), jwt, 'the generated token key is restored');
    });

    it('refuses a backup from a newer control schema, changing nothing', async () => {
      const gen = await store.generation();
      await assert.rejects(
        loadControl(store, { ...goodBackup(), schema_version: 99 }, { force: true }),
        /schema version 99, newer than this DittoFS supports \(1\): upgrade DittoFS/,
      );
      assert.equal(await store.generation(), gen);
    });

    it('restores into an empty database without force', async () => {
      await loadControl(
        store,
        {
          ...goodBackup(),
          users: [],
          groups: [],
          shares: [],
          metadata_stores: [],
          block_stores: [],
          adapters: [],
          settings: {},
          secrets: [],
        },
        { force: true },
      );
      const r = await loadControl(store, goodBackup());
      assert.equal(r.counts.permissions, 2);
      assert.deepEqual(r.replaced, {
        users: 0,
        groups: 0,
        metadata_stores: 0,
        block_stores: 0,
        shares: 0,
        permissions: 0,
        adapters: 0,
        settings: 0,
        secrets: 0,
      });
      assert.deepEqual((await store.getGroup('editors'))?.members, ['alice']);
      assert.equal((await store.getShare('/export'))?.block_store, 'blocks');
    });
  });
}

roundTripSuite('embedded (SQLite)', async () => {
  const store = await openTestControlStore();
  return { store, teardown: () => store.close() };
});

roundTripSuite('postgres', () => postgresControlStore(`dfs_backup_test_${process.pid}`));
