// The declarative state: convergence, idempotence (same generation, nothing reported), removal,
// all-or-nothing failures that name the item, the lock-out rules, and passwords rehashed only
// when they change.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { verifyPassword } from './auth.js';
import { CONTROL_ERROR, ControlError, type ControlErrorCode } from './errors.js';
import { applyState, getState, type ApplyStateResult, type DesiredState } from './state.js';
import type { ControlStore } from './store.js';
import { openTestControlStore, resetControlStore } from './testing.js';
import { SHARE_SETTINGS_DEFAULTS, type ControlSnapshot } from './types.js';

let store: ControlStore;
before(async () => {
  store = await openTestControlStore();
});
after(async () => {
  await store.close();
});
beforeEach(async () => {
  await resetControlStore(store);
  // The caller of most tests, as after first start.
  await store.createUser({ username: 'admin', role: 'admin' });
});

const ADMIN = { caller: { username: 'admin', role: 'admin' as const } };

const desired = (): DesiredState => ({
  metadata_stores: [{ name: 'meta', type: 'embedded', config: { path: '/data/meta' } }],
  block_stores: [
    { name: 'blocks', type: 'filesystem', config: { path: '/data/blocks' } },
    { name: 's3', type: 's3', config: { bucket: 'dittofs-blocks', access_key_id: 'AKIA1', secret_access_key: 'very-secret-key' } },
  ],
  users: [
    { username: 'alice', password: 'alice-password-1', email: 'alice@example.com' },
    { username: 'bob', uid: 20000, gid: 100 },
  ],
  groups: [{ name: 'devs', members: ['alice', 'bob'] }],
  shares: [
    {
      name: '/export',
      metadata_store: 'meta',
      block_store: 'blocks',
      default_permission: 'read',
      permissions: [
        { group: 'devs', level: 'read-write' },
        { user: 'bob', level: 'admin' },
      ],
    },
    { name: '/archive', metadata_store: 'meta', block_store: 's3', read_only: true },
  ],
});

const names = (items: { kind: string; name: string }[]): string[] => items.map((i) => `${i.kind}:${i.name}`).sort();

async function rejectsWith(p: Promise<unknown>, code: ControlErrorCode, item: string | undefined, message?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ControlError, `expected ControlError ${code}, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.equal(e.item, item, e.message);
    if (message) assert.match(e.message, message);
    return true;
  });
}

/** Everything that can change, secrets included, to prove a failed request left it as it was. */
async function everything(): Promise<{ snap: ControlSnapshot; creds: unknown[] }> {
  const snap = await store.snapshot();
  const creds = await Promise.all(snap.users.map((u) => store.getCredentials(u.username)));
  return { snap, creds };
}

describe('applyState', () => {
  it('creates everything from an empty start, in one generation', async () => {
    const g0 = await store.generation();
    const r = await applyState(store, desired(), ADMIN);
    assert.equal(r.generation, g0 + 1);
    assert.deepEqual(names(r.created), [
      'block_store:blocks',
      'block_store:s3',
      'group:devs',
      'metadata_store:meta',
      'share:/archive',
      'share:/export',
      'user:alice',
      'user:bob',
    ]);
    assert.deepEqual([r.updated, r.removed, r.unchanged], [[], [], 0]);

    const snap = await store.snapshot();
    assert.deepEqual(snap.block_stores.find((s) => s.name === 'blocks')?.config, { path: '/data/blocks', block_size: 4 * 1024 * 1024 });
    assert.deepEqual(
      snap.users.map((u) => [u.username, u.uid, u.gid, u.groups]),
      [
        ['admin', 10000, 10000, []],
        ['alice', 20001, 20001, ['devs']],
        ['bob', 20000, 100, ['devs']],
      ],
    );
    // One counter for uids and gids: above bob's explicit 20000 and alice's 20001.
    assert.equal(snap.groups[0]?.gid, 20002);
    const exp = snap.shares.find((s) => s.name === '/export')!;
    assert.equal(exp.default_permission, 'read');
    assert.deepEqual(exp.permissions, [
      { user: 'bob', level: 'admin' },
      { group: 'devs', level: 'read-write' },
    ]);
    const arch = snap.shares.find((s) => s.name === '/archive')!;
    assert.deepEqual(
      { ...arch, permissions: undefined },
      { ...SHARE_SETTINGS_DEFAULTS, name: '/archive', metadata_store: 'meta', block_store: 's3', read_only: true, permissions: undefined },
    );
    const alice = (await store.getCredentials('alice'))!;
    assert.ok(await verifyPassword('alice-password-1', alice.password_hash!));
    assert.equal(alice.must_change_password, false);
    assert.equal((await store.getCredentials('bob'))!.password_hash, null);
  });

  it('is idempotent: the same state again changes nothing and keeps the generation', async () => {
    const first = await applyState(store, desired(), ADMIN);
    const before = await everything();
    const again = await applyState(store, desired(), ADMIN);
    assert.deepEqual(again, { generation: first.generation, created: [], updated: [], removed: [], unchanged: 8 });
    assert.deepEqual(await everything(), before);
  });

  it('getState round-trips: what it returns, applied, changes nothing (secrets shown as ****)', async () => {
    const first = await applyState(store, desired(), ADMIN);
    const current = await getState(store);
    const text = JSON.stringify(current);
    assert.ok(!text.includes('very-secret-key') && !text.includes('alice-password-1'), 'no secrets in getState');
    assert.equal(current.block_stores.find((s) => s.name === 's3')?.config?.secret_access_key, '****');
    assert.ok(current.users.every((u) => u.password === undefined));
    const r = await applyState(store, current, ADMIN);
    assert.equal(r.generation, first.generation);
    assert.deepEqual([r.created, r.updated, r.removed], [[], [], []]);
    const s3 = (await store.getStore('block', 's3'))!;
    assert.equal(s3.config.secret_access_key, 'very-secret-key', 'the mask kept the stored secret');
  });

  it('updates what changed and reports exactly that', async () => {
    await applyState(store, desired(), ADMIN);
    const d = desired();
    d.metadata_stores![0]!.config = { path: '/data/meta2' };
    d.users![1]!.email = 'bob@example.com';
    d.groups![0]!.members = ['alice'];
    d.shares![0]!.permissions = [{ group: 'devs', level: 'read' }];
    d.shares![1]!.root_mode = 0o755;
    const r = await applyState(store, d, ADMIN);
    assert.deepEqual(names(r.updated), ['group:devs', 'metadata_store:meta', 'share:/archive', 'share:/export', 'user:bob']);
    assert.deepEqual([r.created, r.removed, r.unchanged], [[], [], 3]);
    const snap = await store.snapshot();
    assert.deepEqual(snap.metadata_stores[0]?.config, { path: '/data/meta2' });
    assert.deepEqual(snap.groups[0]?.members, ['alice']);
    assert.deepEqual(snap.shares.find((s) => s.name === '/export')?.permissions, [{ group: 'devs', level: 'read' }]);
    assert.equal(snap.shares.find((s) => s.name === '/archive')?.root_mode, 0o755);
  });

  it('removes what is no longer listed, in an order the references allow', async () => {
    await applyState(store, desired(), ADMIN);
    const r = await applyState(
      store,
      {
        metadata_stores: [{ name: 'meta', type: 'embedded', config: { path: '/data/meta' } }],
        block_stores: [{ name: 'blocks', type: 'filesystem', config: { path: '/data/blocks' } }],
        users: [{ username: 'alice', email: 'alice@example.com' }],
        groups: [],
        shares: [{ name: '/export', metadata_store: 'meta', block_store: 'blocks', default_permission: 'read' }],
      },
      ADMIN,
    );
    assert.deepEqual(names(r.removed), ['block_store:s3', 'group:devs', 'share:/archive', 'user:bob']);
    assert.deepEqual(names(r.updated), ['share:/export']); // its grants went
    const snap = await store.snapshot();
    assert.deepEqual(
      snap.users.map((u) => u.username),
      ['admin', 'alice'],
      'the caller (admin) stays though it is not listed',
    );
    assert.deepEqual(snap.shares.find((s) => s.name === '/export')?.permissions, []);
    assert.ok(await verifyPassword('alice-password-1', (await store.getCredentials('alice'))!.password_hash!), 'no password: kept');
  });

  it("a user's primary gid may be a group's gid only if the user is a member; one id counter", async () => {
    const r = await applyState(store, { users: [{ username: 'carol' }], groups: [{ name: 'team' }] }, ADMIN);
    assert.equal(r.created.length, 2);
    const snap = await store.snapshot();
    const ids = [...snap.users.flatMap((u) => [u.uid, u.gid]), ...snap.groups.map((g) => g.gid)];
    assert.deepEqual(ids, [10000, 10000, 10001, 10001, 10002], 'admin, carol, then the group: no overlap');
    const before = await everything();
    // The group takes carol's gid, carol not a member.
    await rejectsWith(
      applyState(store, { groups: [{ name: 'team', gid: 10001 }] }, ADMIN),
      CONTROL_ERROR.ALREADY_EXISTS,
      'groups["team"]',
      /gid 10001 is the primary gid of user "carol", who is not a member of group "team"/,
    );
    // A new user with the group's gid, not a member.
    await rejectsWith(
      applyState(store, { users: [{ username: 'carol' }, { username: 'eve', gid: 10002 }] }, ADMIN),
      CONTROL_ERROR.ALREADY_EXISTS,
      'users["eve"]',
      /gid 10002 is the gid of group "team", which user "eve" is not a member of/,
    );
    assert.deepEqual(await everything(), before, 'nothing applied');
    // As members, both are fine.
    const ok = await applyState(
      store,
      { users: [{ username: 'carol' }, { username: 'eve', gid: 10002 }], groups: [{ name: 'team', members: ['eve'] }] },
      ADMIN,
    );
    assert.deepEqual(names(ok.created), ['user:eve']);
    // Dropping eve from the group while her gid is its gid: refused.
    await rejectsWith(
      applyState(store, { groups: [{ name: 'team', members: [] }] }, ADMIN),
      CONTROL_ERROR.ALREADY_EXISTS,
      'groups["team"]',
      /primary gid of user "eve"/,
    );
  });

  it('leaves kinds whose key is absent as they are', async () => {
    await applyState(store, desired(), ADMIN);
    const r = await applyState(store, { groups: [{ name: 'ops' }] }, ADMIN);
    assert.deepEqual(names(r.created), ['group:ops']);
    assert.deepEqual(names(r.removed), ['group:devs']);
    const snap = await store.snapshot();
    assert.equal(snap.shares.length, 2);
    assert.equal(snap.users.length, 3);
  });

  it('a failing item fails the whole request, names the item, and nothing is applied', async () => {
    await applyState(store, desired(), ADMIN);
    const before = await everything();
    const cases: [string, (d: DesiredState) => void, ControlErrorCode, string, RegExp][] = [
      [
        'share naming a missing store',
        (d) => d.shares!.push({ name: '/new', metadata_store: 'fast', block_store: 'blocks' }),
        CONTROL_ERROR.UNPROCESSABLE,
        'shares["/new"]',
        /metadata store "fast" does not exist/,
      ],
      [
        'grant to a missing user',
        (d) => d.shares![0]!.permissions!.push({ user: 'ghost', level: 'read' }),
        CONTROL_ERROR.UNPROCESSABLE,
        'shares["/export"].permissions',
        /user "ghost"/,
      ],
      [
        'member that is being removed',
        (d) => (d.users = d.users!.filter((u) => u.username !== 'bob')),
        CONTROL_ERROR.UNPROCESSABLE,
        'groups["devs"]',
        /member "bob" is not a user \(it is being removed\)/,
      ],
      [
        'duplicate uid',
        (d) => (d.users![0]!.uid = 20000),
        CONTROL_ERROR.ALREADY_EXISTS,
        'users["bob"]',
        /uid 20000 is also the uid of user "alice"/,
      ],
      ['duplicate name', (d) => d.users!.push({ username: 'alice' }), CONTROL_ERROR.INVALID, 'users["alice"]', /listed more than once/],
      ['bad share name', (d) => (d.shares![1]!.name = '/a/../b'), CONTROL_ERROR.INVALID, 'shares["/a/../b"]', /must not contain "\.\."/],
      [
        'bad store config',
        (d) => (d.metadata_stores![0]!.config = { path: '' }),
        CONTROL_ERROR.INVALID,
        'metadata_stores["meta"]',
        /config.path: must not be empty/,
      ],
      [
        'store still used by a share that stays',
        (d) => {
          d.block_stores = d.block_stores!.filter((s) => s.name !== 's3');
          delete d.shares;
        },
        CONTROL_ERROR.IN_USE,
        'block_stores["s3"]',
        /share "\/archive" uses it/,
      ],
      ['short password', (d) => (d.users![0]!.password = 'short'), CONTROL_ERROR.INVALID, 'users["alice"]', /password must be at least 8/],
      [
        'duplicate grant',
        (d) => d.shares![0]!.permissions!.push({ user: 'bob', level: 'read' }),
        CONTROL_ERROR.INVALID,
        'shares["/export"].permissions',
        /user "bob" is listed more than once/,
      ],
      [
        'mask with nothing behind it',
        (d) => (d.block_stores![0]!.config = { secret_access_key: '****' }),
        CONTROL_ERROR.INVALID,
        'block_stores["blocks"]',
        /mask/,
      ],
    ];
    for (const [what, change, code, item, message] of cases) {
      const d = desired();
      // Something that would succeed alongside, to prove it is not applied either.
      d.groups!.push({ name: 'ops' });
      d.users![0]!.password = d.users![0]!.password === 'alice-password-1' ? 'a-new-password-2' : d.users![0]!.password;
      change(d);
      await rejectsWith(applyState(store, d, ADMIN), code, item, message);
      assert.deepEqual(await everything(), before, `${what}: nothing changed`);
    }
  });

  it('a store whose settings cannot work fails with 422 naming it, before anything is written; secrets masked', async () => {
    const d = desired();
    d.metadata_stores!.push({ name: 'pg', type: 'postgres', config: { url: 'postgres://dfs:hunter22@db.example:5432/x' } });
    const checked: string[] = [];
    const before = await everything();
    await rejectsWith(
      applyState(store, d, {
        ...ADMIN,
        checkStore: async (kind, type, config) => {
          checked.push(`${kind}:${type}`);
          if (type === 'postgres') throw new Error(`cannot connect to ${String(config.url)}`);
        },
      }),
      CONTROL_ERROR.UNPROCESSABLE,
      'metadata_stores["pg"]',
      /cannot connect to postgres:\/\/dfs:\*\*\*\*@db\.example:5432\/x/,
    );
    assert.deepEqual(await everything(), before);
    // Unchanged stores are not checked again.
    checked.length = 0;
    await applyState(store, desired(), { ...ADMIN, checkStore: async (kind, type) => void checked.push(`${kind}:${type}`) });
    assert.equal(checked.length, 3);
    checked.length = 0;
    await applyState(store, desired(), { ...ADMIN, checkStore: async (kind, type) => void checked.push(`${kind}:${type}`) });
    assert.deepEqual(checked, []);
  });

  it('rehashes a password only when it changed, and a change revokes tokens', async () => {
    await applyState(store, desired(), ADMIN);
    const c1 = (await store.getCredentials('alice'))!;
    await applyState(store, desired(), ADMIN);
    assert.deepEqual(await store.getCredentials('alice'), c1, 'same password: same hash, same token version');
    const d = desired();
    d.users![0]!.password = 'alice-password-2';
    const r = await applyState(store, d, ADMIN);
    assert.deepEqual(names(r.updated), ['user:alice']);
    const c2 = (await store.getCredentials('alice'))!;
    assert.notEqual(c2.password_hash, c1.password_hash);
    assert.notEqual(c2.nt_hash, c1.nt_hash);
    assert.ok(c2.token_version > c1.token_version);
    assert.ok(await verifyPassword('alice-password-2', c2.password_hash!));
  });

  it('swaps two uids in one request', async () => {
    await applyState(
      store,
      {
        users: [
          { username: 'alice', uid: 30001 },
          { username: 'bob', uid: 30002 },
        ],
      },
      ADMIN,
    );
    await applyState(
      store,
      {
        users: [
          { username: 'alice', uid: 30002 },
          { username: 'bob', uid: 30001 },
        ],
      },
      ADMIN,
    );
    const snap = await store.snapshot();
    assert.deepEqual(
      snap.users.filter((u) => u.username !== 'admin').map((u) => [u.username, u.uid]),
      [
        ['alice', 30002],
        ['bob', 30001],
      ],
    );
  });

  it('never locks anyone out: bootstrap admin and caller stay, own role fixed, one admin remains', async () => {
    await store.createUser({ username: 'root2', role: 'admin' });
    // The caller root2 removes everyone else; the bootstrap admin stays anyway.
    let r = await applyState(store, { users: [] }, { caller: { username: 'root2', role: 'admin' } });
    assert.deepEqual(r.removed, []);
    await store.createUser({ username: 'eve', role: 'admin' });
    r = await applyState(store, { users: [] }, { caller: { username: 'root2', role: 'admin' } });
    assert.deepEqual(names(r.removed), ['user:eve']);
    await rejectsWith(
      applyState(store, { users: [{ username: 'root2', role: 'user' }] }, { caller: { username: 'root2', role: 'admin' } }),
      CONTROL_ERROR.CONFLICT,
      'users["root2"]',
      /your own role/,
    );
    // Demoting every admin (without a caller rule in the way) is refused.
    await rejectsWith(
      applyState(store, {
        users: [
          { username: 'admin', role: 'user' },
          { username: 'root2', role: 'user' },
        ],
      }),
      CONTROL_ERROR.CONFLICT,
      'users',
      /at least one user must keep role admin/,
    );
  });

  it('a caller with role operator manages users with role user only and leaves the others alone', async () => {
    await store.createUser({ username: 'op', role: 'operator' });
    await store.createUser({ username: 'boss', role: 'admin' });
    await store.createUser({ username: 'carol' });
    const OP = { caller: { username: 'op', role: 'operator' as const } };
    const r = await applyState(store, { users: [{ username: 'dan' }] }, OP);
    assert.deepEqual(names(r.created), ['user:dan']);
    assert.deepEqual(names(r.removed), ['user:carol']);
    assert.ok(await store.getUser('boss'));
    await rejectsWith(
      applyState(store, { users: [{ username: 'x', role: 'admin' }] }, OP),
      CONTROL_ERROR.FORBIDDEN,
      'users["x"]',
      /role operator/,
    );
    await rejectsWith(
      applyState(store, { users: [{ username: 'boss', role: 'admin' }, { username: 'dan' }] }, OP),
      CONTROL_ERROR.FORBIDDEN,
      'users["boss"]',
    );
  });

  it('reports removals of users, groups and shares as removals when the lists are emptied', async () => {
    await applyState(store, desired(), ADMIN);
    const r: ApplyStateResult = await applyState(
      store,
      { shares: [], groups: [], users: [], metadata_stores: [], block_stores: [] },
      ADMIN,
    );
    assert.deepEqual(names(r.removed), [
      'block_store:blocks',
      'block_store:s3',
      'group:devs',
      'metadata_store:meta',
      'share:/archive',
      'share:/export',
      'user:alice',
      'user:bob',
    ]);
    const snap = await store.snapshot();
    assert.deepEqual([snap.shares, snap.groups, snap.metadata_stores, snap.block_stores], [[], [], [], []]);
    assert.deepEqual(
      snap.users.map((u) => u.username),
      ['admin'],
    );
  });
});
