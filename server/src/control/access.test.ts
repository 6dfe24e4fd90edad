// Share access resolution: own grant, else best group grant, else the share default; unknown uids
// get the default; unknown shares nothing.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildAccessIndex, gidOverlapsOf, resolveShareAccess, type AccessSource } from './access.js';
import { SHARE_SETTINGS_DEFAULTS, bestLevel, type PermissionGrant, type PermissionLevel, type ShareWithPermissions } from './types.js';

function share(name: string, default_permission: PermissionLevel, permissions: PermissionGrant[]): ShareWithPermissions {
  return { ...SHARE_SETTINGS_DEFAULTS, name, metadata_store: 'm', block_store: 'b', default_permission, permissions };
}

const source: AccessSource = {
  generation: 7,
  users: [
    { username: 'alice', uid: 1000, gid: 1000, groups: ['devs'], role: 'user' },
    { username: 'bob', uid: 1001, gid: 1001, groups: ['devs', 'ops'], role: 'user' },
    { username: 'carol', uid: 1002, gid: 1002, groups: [], role: 'user' },
    { username: 'dave', uid: 1003, gid: 1003, groups: ['ops'], role: 'user' },
    { username: 'root', uid: 0, gid: 0, groups: [], role: 'user' },
  ],
  groups: [
    { name: 'devs', gid: 2000, members: ['alice', 'bob'] },
    { name: 'ops', gid: 2001, members: ['bob', 'dave'] },
    { name: 'auditors', gid: 2002, members: [] },
  ],
  shares: [
    share('/export', 'read', [
      { group: 'devs', level: 'read-write' },
      { group: 'ops', level: 'admin' },
      { user: 'dave', level: 'none' },
      { group: 'auditors', level: 'read' },
    ]),
    share('/public', 'read-write', []),
    share('/closed', 'none', [{ user: 'carol', level: 'read' }]),
  ],
};

describe('resolveShareAccess', () => {
  const index = buildAccessIndex(source);
  const at = (shareName: string, uid: number, gids?: number[]): PermissionLevel =>
    resolveShareAccess(index, shareName, gids === undefined ? { uid } : { uid, gids });

  it('keeps the snapshot generation', () => {
    assert.equal(index.generation, 7);
  });

  it("a user's own grant wins, even when a group grant is higher", () => {
    assert.equal(at('/export', 1003), 'none'); // dave: own none beats ops' admin
    assert.equal(at('/closed', 1002), 'read'); // carol: own grant above the default none
  });

  it('else the best grant among the user groups', () => {
    assert.equal(at('/export', 1000), 'read-write'); // alice: devs
    assert.equal(at('/export', 1001), 'admin'); // bob: devs read-write, ops admin -> admin
  });

  it('else the share default', () => {
    assert.equal(at('/export', 1002), 'read'); // carol: no grant, no groups
    assert.equal(at('/public', 1000), 'read-write');
    assert.equal(at('/closed', 1000), 'none');
  });

  it('an unknown uid gets the share default, whatever gids it sends', () => {
    assert.equal(at('/export', 4242), 'read');
    assert.equal(at('/export', 4242, [2001]), 'read');
    assert.equal(at('/closed', 4242), 'none');
  });

  it('uid 0 is whoever has uid 0 (here a plain user), not an administrator', () => {
    assert.equal(at('/export', 0), 'read');
  });

  it("a known user's credential gids add the groups with those gids", () => {
    assert.equal(at('/export', 1002, [2002]), 'read'); // carol with the auditors gid
    assert.equal(at('/export', 1000, [2001]), 'admin'); // alice also sending the ops gid
    assert.equal(resolveShareAccess(index, '/export', { uid: 1002, gid: 2000 }), 'read-write'); // primary gid
    assert.equal(at('/export', 1002, [9999]), 'read'); // a gid no group has
  });

  it('an unknown share gets none', () => {
    assert.equal(at('/nope', 1000), 'none');
    assert.equal(at('', 1000), 'none');
  });

  it('an index from an empty snapshot answers none everywhere', () => {
    const empty = buildAccessIndex({ users: [], groups: [], shares: [] });
    assert.equal(resolveShareAccess(empty, '/export', { uid: 1000 }), 'none');
  });

  it('bestLevel orders none < read < read-write < admin', () => {
    assert.equal(bestLevel('none', 'read'), 'read');
    assert.equal(bestLevel('read-write', 'read'), 'read-write');
    assert.equal(bestLevel('admin', 'read-write'), 'admin');
    assert.equal(bestLevel('none', 'none'), 'none');
  });

  it('agrees with a naive reference on every user, share and gid combination', () => {
    const levels = ['none', 'read', 'read-write', 'admin'] as const;
    const reference = (shareName: string, uid: number, gids: number[]): PermissionLevel => {
      const s = source.shares.find((x) => x.name === shareName);
      if (!s) return 'none';
      const u = source.users.find((x) => x.uid === uid);
      if (!u) return s.default_permission;
      const own = s.permissions.find((g) => g.user === u.username);
      if (own) return own.level;
      const groups = new Set([...u.groups, ...source.groups.filter((g) => gids.includes(g.gid)).map((g) => g.name)]);
      const grants = s.permissions.filter((g) => g.group !== undefined && groups.has(g.group)).map((g) => g.level);
      if (grants.length === 0) return s.default_permission;
      return grants.reduce((a, b) => (levels.indexOf(a) >= levels.indexOf(b) ? a : b));
    };
    const gidSets = [[], [2000], [2001], [2002], [2000, 2001, 2002], [9999]];
    for (const s of [...source.shares.map((x) => x.name), '/nope']) {
      for (const uid of [0, 1000, 1001, 1002, 1003, 5555]) {
        for (const gids of gidSets) assert.equal(at(s, uid, gids), reference(s, uid, gids), `${s} uid ${uid} gids ${gids.join(',')}`);
      }
    }
  });
});

describe('gidOverlapsOf', () => {
  it("finds users whose own gid is a group's gid without membership (what an older DittoFS left)", () => {
    const users = [
      { username: 'admin', uid: 10000, gid: 10000, groups: [], role: 'admin' as const },
      { username: 'alice', uid: 1000, gid: 2000, groups: ['devs'], role: 'user' as const },
    ];
    const groups = [
      { name: 'first', gid: 10000, members: [] },
      { name: 'devs', gid: 2000, members: ['alice'] },
    ];
    assert.deepEqual(gidOverlapsOf({ users, groups }), [{ user: 'admin', group: 'first', gid: 10000 }]);
    // The leak itself: the admin's own ids get the group's grant.
    const index = buildAccessIndex({ users, groups, shares: [share('/s', 'none', [{ group: 'first', level: 'read' }])] });
    assert.equal(resolveShareAccess(index, '/s', { uid: 10000, gid: 10000 }), 'read');
    assert.deepEqual(gidOverlapsOf({ users, groups: [{ name: 'first', gid: 10001, members: [] }] }), []);
  });
});
