import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SecretKeyRef, Share, Store, User } from '../../api/types.js';
import type { CurrentState } from '../../dittofs-api/types.js';
import type { SecretResolver } from '../member.js';
import { computeDesiredState, memberOfItem, needsCurrentState, parseServerItem, withCarryOver } from './desired.js';

let t = 0;
const meta = (name: string, extra: { deleting?: boolean } = {}) => ({
  name,
  namespace: 'ns',
  generation: 1,
  creationTimestamp: `2026-01-01T00:00:${String(t++ % 60).padStart(2, '0')}Z`,
  ...(extra.deleting === true ? { deletionTimestamp: '2026-01-02T00:00:00Z' } : {}),
});

const store = (name: string, spec: Partial<Store['spec']> = {}, extra?: { deleting?: boolean }): Store => ({
  metadata: meta(name, extra),
  spec: { dittofs: 'main', kind: 'block', type: 'memory', ...spec },
});
const share = (name: string, spec: Partial<Share['spec']> = {}, extra?: { deleting?: boolean }): Share => ({
  metadata: meta(name, extra),
  spec: { dittofs: 'main', path: `/${name}`, metadataStore: 'meta', blockStore: 'blocks', ...spec },
});
const user = (name: string, spec: Partial<User['spec']> = {}, extra?: { deleting?: boolean }): User => ({
  metadata: meta(name, extra),
  spec: { dittofs: 'main', username: name, ...spec },
});

const secrets: Record<string, Record<string, string>> = {
  'alice-pw': { password: 'alice-password' },
  s3: { key: 'AKIA123', secret: 'very-secret' },
};
const secret: SecretResolver = (ref: SecretKeyRef, what: string) => {
  const s = secrets[ref.name];
  if (s === undefined) return { ok: false, reason: 'SecretNotFound', message: `${what}: Secret ${ref.name} not found` };
  const v = s[ref.key];
  return v === undefined ? { ok: false, reason: 'SecretKeyNotFound', message: `${what}: no key ${ref.key}` } : { ok: true, value: v };
};

const base = () => ({
  stores: [store('meta', { kind: 'metadata', type: 'memory' }), store('blocks')],
  shares: [
    share('data', {
      permissions: [
        { group: 'writers', level: 'read-write' },
        { user: 'alice', level: 'admin' },
      ],
    }),
  ],
  users: [
    user('alice', { uid: 4001, groups: ['writers', 'staff'], passwordSecretRef: { name: 'alice-pw', key: 'password' } }),
    user('bob', { uid: 4002, groups: ['writers'] }),
  ],
});

describe('computeDesiredState', () => {
  it('turns the resources into the complete desired state, groups derived from the users and grants', () => {
    const plan = computeDesiredState({ ...base(), secret });
    assert.deepEqual(plan.state, {
      metadata_stores: [{ name: 'meta', type: 'memory', config: {} }],
      block_stores: [{ name: 'blocks', type: 'memory', config: {} }],
      shares: [
        {
          name: '/data',
          metadata_store: 'meta',
          block_store: 'blocks',
          read_only: false,
          root_squash: false,
          default_permission: 'read-write',
          permissions: [
            { group: 'writers', level: 'read-write' },
            { user: 'alice', level: 'admin' },
          ],
        },
      ],
      users: [
        { username: 'alice', password: 'alice-password', uid: 4001, role: 'user' },
        { username: 'bob', uid: 4002, role: 'user' },
      ],
      groups: [
        { name: 'staff', members: ['alice'] },
        { name: 'writers', members: ['alice', 'bob'] },
      ],
    });
    assert.ok([...plan.verdicts.values()].every((v) => v.state === 'applied'));
    assert.deepEqual(plan.usedBy.get('blocks'), ['data']);
    assert.equal(needsCurrentState(plan), false);
  });

  it('a resource that cannot be applied is kept as the server has it, never dropped', () => {
    const inp = base();
    inp.users[0] = user('alice', { uid: 4001, passwordSecretRef: { name: 'gone', key: 'password' } });
    const plan = computeDesiredState({ ...inp, secret });
    assert.deepEqual(plan.verdicts.get('User/alice'), {
      state: 'invalid',
      reason: 'SecretNotFound',
      message: 'passwordSecretRef: Secret gone not found',
    });
    assert.ok(!plan.state.users.some((u) => u.username === 'alice'));
    assert.deepEqual([...plan.keep.users], ['alice']);
    // The share grants alice: without her in the desired state it cannot be applied either, so it is kept too.
    assert.equal(plan.verdicts.get('Share/data')?.state, 'invalid');
    assert.deepEqual([...plan.keep.shares], ['/data']);
    assert.equal(needsCurrentState(plan), true);
  });

  it('shares wait for their stores: not found, or not synced', () => {
    const inp = base();
    inp.stores = [store('meta', { kind: 'metadata', type: 'memory' })];
    let plan = computeDesiredState({ ...inp, secret });
    assert.deepEqual(plan.verdicts.get('Share/data'), {
      state: 'invalid',
      reason: 'StoreNotFound',
      message: 'no block Store "blocks" of this DittoFS',
    });
    inp.stores.push(
      store('blocks', { type: 's3', config: { bucket: 'b' }, secretRefs: { secret_access_key: { name: 's3', key: 'secret' } } }),
    );
    plan = computeDesiredState({ ...inp, secret });
    assert.equal(plan.verdicts.get('Store/blocks')?.state, 'invalid', 'a secret key without its access key id');
    const v = plan.verdicts.get('Share/data');
    assert.ok(v?.state === 'invalid' && v.reason === 'StoreNotReady', JSON.stringify(v));
  });

  it('a share names its stores by resource name or by their name inside DittoFS', () => {
    const inp = base();
    inp.stores = [store('meta-res', { kind: 'metadata', type: 'memory', storeName: 'meta' }), store('blocks')];
    const plan = computeDesiredState({ ...inp, secret });
    assert.equal(plan.state.shares[0]?.metadata_store, 'meta');
    inp.shares = [share('data', { metadataStore: 'meta-res' })];
    assert.equal(computeDesiredState({ ...inp, secret }).state.shares[0]?.metadata_store, 'meta');
  });

  it('secretRefs fill store settings; unknown settings for the type are refused', () => {
    const inp = base();
    inp.stores[1] = store('blocks', {
      type: 's3',
      config: { bucket: 'bkt', endpoint: 'http://minio:9000' },
      secretRefs: { access_key_id: { name: 's3', key: 'key' }, secret_access_key: { name: 's3', key: 'secret' } },
    });
    let plan = computeDesiredState({ ...inp, secret });
    assert.deepEqual(plan.state.block_stores[0], {
      name: 'blocks',
      type: 's3',
      config: { bucket: 'bkt', endpoint: 'http://minio:9000', access_key_id: 'AKIA123', secret_access_key: 'very-secret' },
    });
    inp.stores[1] = store('blocks', { type: 'filesystem', config: { path: '' } });
    const empty = computeDesiredState({ ...inp, secret }).verdicts.get('Store/blocks');
    assert.ok(empty?.state === 'invalid' && /config.path must not be empty/.test(empty.message), JSON.stringify(empty));
    inp.stores[1] = store('blocks', { type: 'memory', config: { path: '/x' } });
    plan = computeDesiredState({ ...inp, secret });
    const v = plan.verdicts.get('Store/blocks');
    assert.ok(v?.state === 'invalid' && /config.path is not a setting of a memory block store/.test(v.message), JSON.stringify(v));
  });

  it('deleting: a Store still used by a Share stays in the state (InUse); unused resources are left out', () => {
    const inp = base();
    inp.stores[1] = store('blocks', {}, { deleting: true });
    let plan = computeDesiredState({ ...inp, secret });
    const v = plan.verdicts.get('Store/blocks');
    assert.ok(v?.state === 'in-use' && /used by Share data/.test(v.message), JSON.stringify(v));
    assert.deepEqual(
      plan.state.block_stores.map((s) => s.name),
      ['blocks'],
    );
    assert.equal(plan.verdicts.get('Share/data')?.state, 'applied');

    inp.shares = [share('data', {}, { deleting: true })];
    plan = computeDesiredState({ ...inp, secret });
    assert.deepEqual(plan.verdicts.get('Share/data'), { state: 'removed' });
    assert.deepEqual(plan.verdicts.get('Store/blocks'), { state: 'removed' });
    assert.deepEqual(plan.state.shares, []);
    assert.deepEqual(plan.state.block_stores, []);
  });

  it('two resources claiming one name or uid: the older keeps it, the newer is a Conflict', () => {
    const inp = base();
    inp.users.push(user('alice2', { username: 'alice' }), user('carol', { uid: 4002 }));
    const plan = computeDesiredState({ ...inp, secret });
    const a2 = plan.verdicts.get('User/alice2');
    assert.ok(a2?.state === 'invalid' && a2.reason === 'Conflict');
    const c = plan.verdicts.get('User/carol');
    assert.ok(c?.state === 'invalid' && c.reason === 'Conflict' && /uid 4002/.test(c.message));
    assert.ok(!plan.keep.users.has('alice'), "the conflicting resource does not keep the other one's item");
    assert.ok(plan.keep.users.has('carol'));
  });

  it('a server refusal marks that resource and keeps its server copy', () => {
    const plan0 = computeDesiredState({ ...base(), secret });
    const item = parseServerItem('block_stores["blocks"]');
    assert.deepEqual(item, { list: 'block_stores', name: 'blocks' });
    const key = memberOfItem(plan0, item);
    assert.equal(key, 'Store/blocks');
    const plan = computeDesiredState({ ...base(), secret, refused: new Map([[key, 'bucket missing']]) });
    assert.deepEqual(plan.verdicts.get('Store/blocks'), { state: 'invalid', reason: 'Refused', message: 'bucket missing' });
    assert.ok(plan.keep.block_stores.has('blocks'));
    assert.deepEqual(parseServerItem('shares["/a \\"b\\""].permissions'), { list: 'shares', name: '/a "b"' });
    assert.equal(parseServerItem('groups["x"]'), undefined);
    assert.equal(parseServerItem(undefined), undefined);
  });
});

describe('withCarryOver', () => {
  const current: CurrentState = {
    metadata_stores: [{ name: 'meta', type: 'memory', config: {} }],
    block_stores: [
      { name: 'blocks', type: 'memory', config: { block_size: 4194304 } },
      { name: 'old-s3', type: 's3', config: { bucket: 'b', access_key_id: 'A', secret_access_key: '****' } },
    ],
    shares: [
      {
        name: '/data',
        metadata_store: 'meta',
        block_store: 'old-s3',
        read_only: true,
        default_permission: 'none',
        permissions: [
          { user: 'alice', level: 'read-write' },
          { user: 'mallory', level: 'admin' },
          { group: 'writers', level: 'read' },
        ],
      },
    ],
    users: [
      { username: 'admin', uid: 10000, gid: 10000, role: 'admin' },
      { username: 'alice', uid: 4001, gid: 4001, role: 'user' },
      { username: 'mallory', uid: 6666, gid: 6666, role: 'user' },
    ],
    groups: [
      { name: 'writers', gid: 10001, members: ['alice', 'bob'] },
      { name: 'legacy', gid: 10002, members: ['alice'] },
    ],
  };

  it('adds the kept items as the server has them, with the stores they need and only grants that still resolve', () => {
    const inp = base();
    inp.users[0] = user('alice', { uid: 4001, passwordSecretRef: { name: 'gone', key: 'password' } });
    const plan = computeDesiredState({ ...inp, secret });
    const { state, carried } = withCarryOver(plan, current);
    assert.deepEqual([...carried].sort(), ['block_stores:old-s3', 'shares:/data', 'users:alice']);
    assert.deepEqual(
      state.users.map((u) => u.username),
      ['bob', 'alice'],
    );
    assert.equal(state.users.find((u) => u.username === 'alice')?.password, undefined, 'no password: the server keeps hers');
    const data = state.shares.find((s) => s.name === '/data')!;
    assert.equal(data.block_store, 'old-s3', 'as the server has it');
    assert.deepEqual(data.permissions, [
      { user: 'alice', level: 'read-write' },
      { group: 'writers', level: 'read' },
    ]);
    assert.deepEqual(state.block_stores.find((s) => s.name === 'old-s3')?.config, {
      bucket: 'b',
      access_key_id: 'A',
      secret_access_key: '****',
    });
    assert.deepEqual(
      state.groups.map((g) => [g.name, g.members]),
      [
        ['writers', ['alice', 'bob']],
        ['legacy', ['alice']],
      ],
    );
    assert.ok(!state.users.some((u) => u.username === 'admin' || u.username === 'mallory'));
  });

  it('a kept item the server does not have stays out', () => {
    const inp = base();
    inp.users[1] = user('bob', { uid: 4002, passwordSecretRef: { name: 'gone', key: 'x' } });
    const plan = computeDesiredState({ ...inp, secret });
    const { state, carried } = withCarryOver(plan, current);
    assert.equal(carried.size, 0);
    assert.ok(!state.users.some((u) => u.username === 'bob'));
  });
});
