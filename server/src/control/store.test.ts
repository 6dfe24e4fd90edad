// The control store on both engines: embedded (SQLite, the `memory` type) and a private
// PostgreSQL. CRUD of every table, the rules the database keeps (unique names and ids, a used store
// cannot go), one generation bump and one notification per change, snapshots, tokens revoked for
// good, and the first-start admin.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { postgresControlStore } from '../../../test/helpers/control-store.js';
import { migrate } from '../meta/sql/migrations.js';
import { MIN_JWT_SECRET_LENGTH, ensureAdmin, ensureJwtSecret, verifyPassword } from './auth.js';
import { CONTROL_ERROR, ControlError, type ControlErrorCode } from './errors.js';
import { migrateControl } from './migrations.js';
import { openControlStore, type ControlStore } from './store.js';
import { openTestControlStore, resetControlStore } from './testing.js';
import { SHARE_SETTINGS_DEFAULTS, type ControlChange, type Share } from './types.js';

async function rejectsWith(p: Promise<unknown>, code: ControlErrorCode, message?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ControlError, `expected ControlError ${code}, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (message) assert.match(e.message, message);
    return true;
  });
}

const share = (name: string, over: Partial<Share> = {}): Share => ({
  ...SHARE_SETTINGS_DEFAULTS,
  name,
  metadata_store: 'meta',
  block_store: 'blocks',
  ...over,
});

function storeSuite(name: string, setup: () => Promise<{ store: ControlStore; teardown(): Promise<void> }>): void {
  describe(`control store: ${name}`, () => {
    let env: { store: ControlStore; teardown(): Promise<void> } | undefined;
    const store = (): ControlStore => {
      if (!env) throw new Error(`${name}: setup failed (see the before hook)`);
      return env.store;
    };
    before(async () => {
      env = await setup();
    });
    after(async () => {
      await env?.teardown();
    });
    beforeEach(async () => {
      await resetControlStore(store());
    });

    const withStores = async (): Promise<void> => {
      await store().createStore('metadata', { name: 'meta', type: 'memory', config: {} });
      await store().createStore('block', { name: 'blocks', type: 'memory', config: { block_size: 65536 } });
    };

    it('control and metadata migrations apply side by side, each with its own version table', async (t) => {
      // Only PostgreSQL shares one database between both; the embedded control database is its own file.
      if (store().dialect.name === 'sqlite') return t.skip('the embedded control database holds no metadata store');
      const d = store().driver;
      await migrate(d);
      assert.deepEqual(await migrateControl(d), { applied: [], version: 1 });
      const { rows } = await d.query<{ t: string }>(
        `SELECT table_name AS t FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_name LIKE '%schema_migrations' ORDER BY 1`,
      );
      assert.deepEqual(
        rows.map((r) => r.t),
        ['control_schema_migrations', 'schema_migrations'],
      );
    });

    it('creates users with automatic uids from 10000, gid = uid, and lists them sorted', async () => {
      const s = store();
      const bob = await s.createUser({ username: 'bob' });
      const alice = await s.createUser({ username: 'alice', uid: 20000, gid: 100, email: 'a@example.com', role: 'operator' });
      const carol = await s.createUser({ username: 'carol' });
      assert.equal(bob.uid, 10000);
      assert.equal(bob.gid, 10000);
      assert.equal(carol.uid, 20001);
      assert.deepEqual(
        { uid: alice.uid, gid: alice.gid, email: alice.email, role: alice.role, groups: alice.groups, must: alice.must_change_password },
        { uid: 20000, gid: 100, email: 'a@example.com', role: 'operator', groups: [], must: false },
      );
      assert.match(alice.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.deepEqual(
        (await s.listUsers()).map((u) => u.username),
        ['alice', 'bob', 'carol'],
      );
      assert.equal(await s.getUser('nobody'), undefined);
    });

    it('refuses a duplicate username or uid, and groups that do not exist', async () => {
      const s = store();
      await s.createUser({ username: 'alice', uid: 5000 });
      await rejectsWith(s.createUser({ username: 'alice' }), CONTROL_ERROR.ALREADY_EXISTS, /user "alice" already exists/);
      await rejectsWith(
        s.createUser({ username: 'bob', uid: 5000 }),
        CONTROL_ERROR.ALREADY_EXISTS,
        /uid 5000 is already used by user "alice"/,
      );
      await rejectsWith(
        s.createUser({ username: 'bob', groups: ['ghosts'] }),
        CONTROL_ERROR.UNPROCESSABLE,
        /group "ghosts" does not exist/,
      );
      assert.equal(await s.getUser('bob'), undefined);
      await s.createUser({ username: 'bob' });
      await rejectsWith(s.updateUser('bob', { uid: 5000 }), CONTROL_ERROR.ALREADY_EXISTS, /uid 5000/);
      await rejectsWith(s.updateUser('nobody', { email: null }), CONTROL_ERROR.NOT_FOUND);
    });

    it('updates users; new credentials revoke tokens; a recreated user never gets an old token version', async () => {
      const s = store();
      await s.createGroup({ name: 'devs' });
      await s.createUser({ username: 'alice', password_hash: 'h1', nt_hash: 'n1' });
      const v1 = (await s.getCredentials('alice'))!.token_version;
      const u = await s.updateUser('alice', { email: 'x@example.com', groups: ['devs'], must_change_password: true });
      assert.deepEqual([u.email, u.groups, u.must_change_password], ['x@example.com', ['devs'], true]);
      assert.equal((await s.getCredentials('alice'))!.token_version, v1, 'no credential change, no revocation');
      await s.updateUser('alice', { credentials: { password_hash: 'h2', nt_hash: 'n2' } });
      const c = (await s.getCredentials('alice'))!;
      assert.ok(c.token_version > v1);
      assert.deepEqual([c.password_hash, c.nt_hash], ['h2', 'n2']);
      assert.equal(await s.getNtHash('alice'), 'n2');
      await s.updateUser('alice', { revoke_tokens: true });
      const v3 = (await s.getCredentials('alice'))!.token_version;
      assert.ok(v3 > c.token_version);
      await s.deleteUser('alice');
      await s.createUser({ username: 'alice' });
      assert.ok((await s.getCredentials('alice'))!.token_version > v3);
      await rejectsWith(s.deleteUser('nobody'), CONTROL_ERROR.NOT_FOUND);
    });

    it('groups: automatic gids, members, and deleting a user or group drops memberships', async () => {
      const s = store();
      await s.createUser({ username: 'alice' });
      await s.createUser({ username: 'bob' });
      const devs = await s.createGroup({ name: 'devs' });
      const ops = await s.createGroup({ name: 'ops', gid: 30000 });
      assert.equal(devs.gid, 10002, "above alice's and bob's uid and gid (10000, 10001): a user's own gid is never a group's");
      assert.equal(ops.gid, 30000);
      assert.equal((await s.createGroup({ name: 'qa' })).gid, 30001);
      await rejectsWith(s.createGroup({ name: 'devs' }), CONTROL_ERROR.ALREADY_EXISTS);
      await rejectsWith(s.createGroup({ name: 'x', gid: 30000 }), CONTROL_ERROR.ALREADY_EXISTS, /gid 30000 is already used by group "ops"/);
      await s.addMember('devs', 'bob');
      assert.deepEqual((await s.addMember('devs', 'alice')).members, ['alice', 'bob']);
      assert.deepEqual((await s.addMember('devs', 'alice')).members, ['alice', 'bob'], 'adding twice is harmless');
      await rejectsWith(s.addMember('devs', 'nobody'), CONTROL_ERROR.NOT_FOUND, /user "nobody"/);
      await rejectsWith(s.addMember('nogroup', 'alice'), CONTROL_ERROR.NOT_FOUND, /group "nogroup"/);
      assert.deepEqual((await s.getUser('alice'))!.groups, ['devs']);
      await s.deleteUser('alice');
      assert.deepEqual((await s.getGroup('devs'))!.members, ['bob']);
      assert.deepEqual((await s.removeMember('devs', 'bob')).members, []);
      await s.addMember('ops', 'bob');
      await s.deleteGroup('ops');
      assert.deepEqual((await s.getUser('bob'))!.groups, []);
      await rejectsWith(s.deleteGroup('ops'), CONTROL_ERROR.NOT_FOUND);
    });

    it('ids the caller checked are still unique when the change ends: a duplicate is refused, a swap is not', async () => {
      const s = store();
      const gen = await s.generation();
      await rejectsWith(
        s.mutate(async (q) => {
          await q.createUser({ username: 'a', uid: 5000 }, { idsChecked: true });
          await q.createUser({ username: 'b', uid: 5000 }, { idsChecked: true });
        }),
        CONTROL_ERROR.ALREADY_EXISTS,
        /uid or gid in use/,
      );
      await rejectsWith(
        s.mutate(async (q) => {
          await q.createGroup({ name: 'g1', gid: 6000 }, { idsChecked: true });
          await q.createGroup({ name: 'g2', gid: 6000 }, { idsChecked: true });
        }),
        CONTROL_ERROR.ALREADY_EXISTS,
        /uid or gid in use/,
      );
      assert.deepEqual(await s.listUsers(), []);
      assert.deepEqual(await s.listGroups(), []);
      assert.equal(await s.generation(), gen, 'a refused change bumps nothing');
      await s.createUser({ username: 'a', uid: 5000 });
      await s.createUser({ username: 'b', uid: 5001 });
      await s.mutate(async (q) => {
        await q.updateUser('a', { uid: 5001 }, { idsChecked: true });
        await q.updateUser('b', { uid: 5000 }, { idsChecked: true });
      });
      assert.deepEqual(
        (await s.listUsers()).map((u) => [u.username, u.uid]),
        [
          ['a', 5001],
          ['b', 5000],
        ],
      );
    });

    it('automatic ids never overlap; a primary gid may be a group gid only for its members', async () => {
      const s = store();
      // The bootstrap admin first, then a group: they once both got 10000.
      const admin = await s.createUser({ username: 'admin', role: 'admin' });
      const team = await s.createGroup({ name: 'team' });
      const bob = await s.createUser({ username: 'bob', groups: ['team'] });
      const carol = await s.createUser({ username: 'carol', uid: 50000 });
      const later = await s.createGroup({ name: 'later' });
      const ids = [admin.uid, admin.gid, team.gid, bob.uid, bob.gid, later.gid];
      assert.deepEqual(ids, [10000, 10000, 10001, 10002, 10002, 50001], 'one counter, above every uid and gid');
      assert.equal(carol.gid, 50000);

      const before = await s.generation();
      // A group with a user's primary gid, the user not a member: refused, nothing written.
      await rejectsWith(
        s.createGroup({ name: 'clash', gid: 10000 }),
        CONTROL_ERROR.ALREADY_EXISTS,
        /gid 10000 is the primary gid of user "admin", who is not a member of group "clash"/,
      );
      await rejectsWith(
        s.mutate((q) => q.updateGroup('team', { gid: 50000 })),
        CONTROL_ERROR.ALREADY_EXISTS,
        /primary gid of user "carol"/,
      );
      // A user whose primary gid is a group's gid without being a member: refused.
      await rejectsWith(
        s.createUser({ username: 'eve', gid: team.gid }),
        CONTROL_ERROR.ALREADY_EXISTS,
        /gid 10001 is the gid of group "team", which user "eve" is not a member of/,
      );
      await rejectsWith(s.createUser({ username: 'eve', uid: team.gid }), CONTROL_ERROR.ALREADY_EXISTS, /group "team"/);
      await rejectsWith(s.updateUser('carol', { gid: team.gid }), CONTROL_ERROR.ALREADY_EXISTS, /group "team"/);
      assert.equal(await s.generation(), before, 'refused changes leave nothing');
      assert.equal(await s.getUser('eve'), undefined);
      assert.equal((await s.getGroup('team'))!.gid, 10001);
      assert.equal((await s.getUser('carol'))!.gid, 50000);

      // As a member it is the ordinary POSIX primary group, and allowed.
      const dave = await s.createUser({ username: 'dave', gid: team.gid, groups: ['team'] });
      assert.equal(dave.gid, team.gid);
      assert.equal((await s.updateUser('carol', { gid: team.gid, groups: ['team'] })).gid, team.gid);
      const own = await s.createGroup({ name: 'admins', gid: 10000, members: ['admin'] });
      assert.equal(own.gid, 10000);
      // ... and then the membership cannot go while the gid stays.
      await rejectsWith(s.removeMember('team', 'dave'), CONTROL_ERROR.ALREADY_EXISTS, /primary gid of user "dave"/);
      await rejectsWith(
        s.mutate((q) => q.setMembers('admins', [])),
        CONTROL_ERROR.ALREADY_EXISTS,
        /primary gid of user "admin"/,
      );
      await rejectsWith(s.updateUser('carol', { groups: [] }), CONTROL_ERROR.ALREADY_EXISTS, /group "team"/);
      assert.deepEqual((await s.getGroup('team'))!.members, ['bob', 'carol', 'dave']);
      // Changing the gid first frees it.
      await s.updateUser('dave', { gid: 70000 });
      assert.deepEqual((await s.removeMember('team', 'dave')).members, ['bob', 'carol']);

      // An overlap left by an older DittoFS (written directly here) does not block other changes.
      await s.driver.query(`INSERT INTO groups (name, gid) VALUES ('legacy', 10002)`);
      assert.deepEqual((await s.addMember('legacy', 'carol')).members, ['carol']);
      assert.deepEqual((await s.mutate((q) => q.setMembers('legacy', ['admin'])), (await s.getGroup('legacy'))!.members), ['admin']);
      assert.equal((await s.updateUser('bob', { email: 'bob@example.com' })).email, 'bob@example.com');
    });

    it('stores: create, read, refuse duplicates, and a store a share uses cannot be deleted', async () => {
      const s = store();
      await withStores();
      await s.createStore('metadata', { name: 'pg', type: 'postgres', config: { url: 'postgres://u:pw@db/x', pool_size: 4 } });
      assert.deepEqual(await s.getStore('metadata', 'pg'), {
        name: 'pg',
        type: 'postgres',
        config: { url: 'postgres://u:pw@db/x', pool_size: 4 },
      });
      assert.deepEqual(
        (await s.listStores('metadata')).map((x) => x.name),
        ['meta', 'pg'],
      );
      await rejectsWith(s.createStore('metadata', { name: 'meta', type: 'memory', config: {} }), CONTROL_ERROR.ALREADY_EXISTS);
      await s.createShare(share('/a'));
      await s.createShare(share('/b'));
      await rejectsWith(s.deleteStore('metadata', 'meta'), CONTROL_ERROR.IN_USE, /metadata store "meta" is used by shares "\/a", "\/b"/);
      await rejectsWith(s.deleteStore('block', 'blocks'), CONTROL_ERROR.IN_USE, /block store "blocks"/);
      await s.deleteStore('metadata', 'pg');
      await rejectsWith(s.deleteStore('metadata', 'pg'), CONTROL_ERROR.NOT_FOUND);
      await s.deleteShare('/a');
      await s.deleteShare('/b');
      await s.deleteStore('metadata', 'meta');
      const updated = await s.updateStore('block', { name: 'blocks', type: 'filesystem', config: { block_size: 131072, path: '/x' } });
      assert.deepEqual(updated.config, { block_size: 131072, path: '/x' });
    });

    it('shares: create with existing stores only, patch, delete with grants', async () => {
      const s = store();
      await withStores();
      await rejectsWith(
        s.createShare(share('/x', { metadata_store: 'nope' })),
        CONTROL_ERROR.UNPROCESSABLE,
        /metadata store "nope" does not exist/,
      );
      await rejectsWith(s.createShare(share('/x', { block_store: 'nope' })), CONTROL_ERROR.UNPROCESSABLE, /block store "nope"/);
      const created = await s.createShare(share('/export', { root_mode: 0o755, default_permission: 'read' }));
      assert.deepEqual(created, share('/export', { root_mode: 0o755, default_permission: 'read' }));
      await rejectsWith(s.createShare(share('/export')), CONTROL_ERROR.ALREADY_EXISTS);
      // A name SMB clients would take for it (no leading "/", any case): refused too.
      for (const name of ['/Export', '/EXPORT', 'export', '//export'])
        await rejectsWith(s.createShare(share(name)), CONTROL_ERROR.ALREADY_EXISTS, /SMB clients would take it for share "\/export"/);
      const patched = await s.updateShare('/export', { read_only: true, anonymous_uid: 99 });
      assert.equal(patched.read_only, true);
      assert.equal(patched.anonymous_uid, 99);
      assert.equal(patched.root_mode, 0o755);
      await rejectsWith(s.updateShare('/export', { block_store: 'nope' }), CONTROL_ERROR.UNPROCESSABLE);
      await rejectsWith(s.updateShare('/nope', { read_only: true }), CONTROL_ERROR.NOT_FOUND);
      await s.createUser({ username: 'alice' });
      await s.setPermission('/export', { user: 'alice' }, 'read');
      await s.deleteShare('/export');
      await s.createShare(share('/export'));
      assert.deepEqual(await s.listPermissions('/export'), [], 'grants went with the share');
    });

    it('permissions: set (upsert), list users then groups, remove; principals must exist', async () => {
      const s = store();
      await withStores();
      await s.createShare(share('/export'));
      await s.createUser({ username: 'bob' });
      await s.createUser({ username: 'alice' });
      await s.createGroup({ name: 'devs' });
      await s.setPermission('/export', { group: 'devs' }, 'read-write');
      await s.setPermission('/export', { user: 'bob' }, 'read');
      await s.setPermission('/export', { user: 'alice' }, 'none');
      assert.deepEqual(await s.setPermission('/export', { user: 'bob' }, 'admin'), { user: 'bob', level: 'admin' });
      assert.deepEqual(await s.listPermissions('/export'), [
        { user: 'alice', level: 'none' },
        { user: 'bob', level: 'admin' },
        { group: 'devs', level: 'read-write' },
      ]);
      await rejectsWith(s.setPermission('/export', { user: 'ghost' }, 'read'), CONTROL_ERROR.NOT_FOUND, /user "ghost"/);
      await rejectsWith(s.setPermission('/nope', { user: 'bob' }, 'read'), CONTROL_ERROR.NOT_FOUND, /share "\/nope"/);
      await s.removePermission('/export', { user: 'alice' });
      await rejectsWith(s.removePermission('/export', { user: 'alice' }), CONTROL_ERROR.NOT_FOUND, /grant to user "alice"/);
      await s.deleteGroup('devs');
      await s.deleteUser('bob');
      assert.deepEqual(await s.listPermissions('/export'), [], 'grants went with their user and group');
    });

    it('adapters: defaults until set, port clashes refused, ensureAdapters seeds only missing types', async () => {
      const s = store();
      assert.deepEqual(await s.listAdapters(), [
        { type: 'nfs', enabled: true, port: 12049 },
        { type: 'smb', enabled: true, port: 12445 },
      ]);
      assert.equal(await s.ensureAdapters([{ type: 'nfs', enabled: true, port: 2049 }]), 1);
      assert.equal(await s.ensureAdapters([{ type: 'nfs', enabled: false, port: 3049 }]), 0);
      assert.deepEqual(await s.getAdapter('nfs'), { type: 'nfs', enabled: true, port: 2049 });
      assert.deepEqual(await s.updateAdapter('smb', { enabled: false }), { type: 'smb', enabled: false, port: 12445 });
      await rejectsWith(s.updateAdapter('smb', { port: 2049 }), CONTROL_ERROR.ALREADY_EXISTS, /port 2049 is used by the nfs adapter/);
    });

    it('settings: any JSON value round-trips', async () => {
      const s = store();
      assert.deepEqual(await s.listSettings(), {});
      await s.putSetting('logging.level', 'debug');
      await s.putSetting('x.y', { a: [1, 'two', null] });
      await s.putSetting('logging.level', 'warn');
      assert.deepEqual(await s.listSettings(), { 'logging.level': 'warn', 'x.y': { a: [1, 'two', null] } });
      assert.deepEqual(await s.getSetting('logging.level'), { value: 'warn' });
      assert.equal(await s.getSetting('nope'), undefined);
    });

    it('each committed change bumps the generation once and notifies after COMMIT; failures do neither', async () => {
      const s = store();
      const seen: ControlChange[] = [];
      const off = s.onChange((c) => seen.push(c));
      const g0 = await s.generation();
      await s.createUser({ username: 'alice' });
      assert.deepEqual(seen, [{ generation: g0 + 1 }]);
      await rejectsWith(s.createUser({ username: 'alice' }), CONTROL_ERROR.ALREADY_EXISTS);
      assert.equal(await s.generation(), g0 + 1);
      assert.equal(seen.length, 1);
      // A listener that throws does not break the change or the other listeners.
      const off2 = s.onChange(() => {
        throw new Error('listener bug');
      });
      await s.createGroup({ name: 'devs' });
      assert.deepEqual(seen, [{ generation: g0 + 1 }, { generation: g0 + 2 }]);
      off2();
      // A change that reports no change keeps the generation and stays quiet.
      await s.mutate(async () => 0, { changed: (n) => n > 0 });
      assert.equal(await s.generation(), g0 + 2);
      off();
      await s.createGroup({ name: 'ops' });
      assert.equal(seen.length, 2);
    });

    it('a failing multi-row change leaves nothing behind', async () => {
      const s = store();
      await assert.rejects(
        s.mutate(async (q) => {
          await q.createUser({ username: 'alice' });
          await q.createGroup({ name: 'devs' });
          throw new Error('boom');
        }),
        /boom/,
      );
      assert.deepEqual(await s.listUsers(), []);
      assert.deepEqual(await s.listGroups(), []);
    });

    it('snapshot: stores with their config, shares with grants, users without secrets', async () => {
      const s = store();
      await withStores();
      await s.createUser({ username: 'alice', password_hash: '$2b$10$hash', nt_hash: 'abcd', groups: [] });
      await s.createGroup({ name: 'devs', gid: 3000 });
      await s.addMember('devs', 'alice');
      await s.createShare(share('/export'));
      await s.setPermission('/export', { group: 'devs' }, 'read-write');
      await s.putSetting('logging.level', 'debug');
      const snap = await s.snapshot();
      assert.equal(snap.generation, await s.generation());
      assert.deepEqual(snap.metadata_stores, [{ name: 'meta', type: 'memory', config: {} }]);
      assert.deepEqual(snap.block_stores, [{ name: 'blocks', type: 'memory', config: { block_size: 65536 } }]);
      assert.deepEqual(snap.shares, [{ ...share('/export'), permissions: [{ group: 'devs', level: 'read-write' }] }]);
      assert.deepEqual(snap.users, [{ username: 'alice', uid: 10000, gid: 10000, groups: ['devs'], role: 'user' }]);
      assert.deepEqual(snap.groups, [{ name: 'devs', gid: 3000, members: ['alice'] }]);
      assert.equal(snap.adapters.length, 2);
      assert.deepEqual(snap.settings, { 'logging.level': 'debug' });
      const text = JSON.stringify(snap);
      assert.ok(!text.includes('$2b$') && !text.includes('abcd'), 'no password hashes in a snapshot');
    });

    it('ensureJwtSecret generates a key once and returns the same one after', async () => {
      const s = store();
      const a = await ensureJwtSecret(s);
      assert.ok(a.length >= MIN_JWT_SECRET_LENGTH);
      assert.equal(await ensureJwtSecret(s), a);
      assert.ok(!JSON.stringify(await s.snapshot()).includes(a), 'not in a snapshot');
    });

    it('ensureAdmin creates admin once, with must_change_password, a generated or given password', async () => {
      const s = store();
      const first = await ensureAdmin(s);
      assert.equal(first.created, true);
      assert.match(first.generatedPassword ?? '', /^[A-Za-z0-9_-]{24}$/);
      const admin = (await s.getUser('admin'))!;
      assert.deepEqual([admin.role, admin.must_change_password, admin.uid], ['admin', true, 10000]);
      const creds = (await s.getCredentials('admin'))!;
      assert.ok(await verifyPassword(first.generatedPassword!, creds.password_hash!));
      assert.match(creds.nt_hash ?? '', /^[0-9a-f]{32}$/);
      assert.deepEqual(await ensureAdmin(s), { created: false, username: 'admin' });

      await resetControlStore(s);
      const given = await ensureAdmin(s, { initialPassword: 'given-password-1', uid: 4242 });
      assert.deepEqual(given, { created: true, username: 'admin' }, 'a given password is not echoed');
      assert.equal((await s.getUser('admin'))!.uid, 4242);
      assert.ok(await verifyPassword('given-password-1', (await s.getCredentials('admin'))!.password_hash!));

      await resetControlStore(s);
      await assert.rejects(ensureAdmin(s, { initialPassword: 'short' }), /initial admin password must be at least 8/);
      assert.equal(await s.getUser('admin'), undefined);
      await s.createUser({ username: 'someone' });
      assert.equal((await ensureAdmin(s)).created, false, 'no admin is created once any user exists');
    });
  });
}

storeSuite('embedded (memory)', async () => {
  const store = await openTestControlStore();
  return { store, teardown: () => store.close() };
});

storeSuite('postgres', () => postgresControlStore(`dfs_control_test_${process.pid}`));

describe('openControlStore', () => {
  it('refuses a missing path or url', async () => {
    await assert.rejects(openControlStore({ type: 'embedded' }), /needs a path/);
    await assert.rejects(openControlStore({ type: 'postgres' }), /needs a url/);
  });
});
