import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Share } from '../../api/types.js';
import { parseMode, resolveShare, type ShareContext } from './resolve.js';

const share = (spec: Partial<Share['spec']> = {}): Share => ({
  metadata: { name: 'data' },
  spec: { dittofs: 'main', path: '/data', metadataStore: 'meta', blockStore: 'blocks', ...spec },
});
const ctx: ShareContext = {
  store: (kind, ref) =>
    ref === 'missing' ? { ok: false, reason: 'StoreNotFound', message: `no ${kind} Store ${ref}` } : { ok: true, value: `${ref}-inside` },
  userExists: (u) => u === 'alice',
};

describe('resolveShare', () => {
  it('path, stores by their names inside DittoFS, settings, grants', () => {
    const r = resolveShare(
      share({
        readOnly: true,
        rootSquash: true,
        defaultPermission: 'none',
        rootMode: '0750',
        permissions: [
          { user: 'alice', level: 'admin' },
          { group: 'staff', level: 'read' },
        ],
      }),
      ctx,
    );
    assert.ok(r.ok);
    assert.deepEqual(r.value, {
      name: '/data',
      metadata_store: 'meta-inside',
      block_store: 'blocks-inside',
      read_only: true,
      root_squash: true,
      default_permission: 'none',
      root_mode: 0o750,
      permissions: [
        { user: 'alice', level: 'admin' },
        { group: 'staff', level: 'read' },
      ],
    });
  });

  it('refuses what the server would refuse: missing store, unknown user, a principal twice', () => {
    assert.deepEqual(resolveShare(share({ blockStore: 'missing' }), ctx), {
      ok: false,
      reason: 'StoreNotFound',
      message: 'no block Store missing',
    });
    const u = resolveShare(share({ permissions: [{ user: 'bob', level: 'read' }] }), ctx);
    assert.ok(!u.ok && u.reason === 'UserNotFound');
    const twice = resolveShare(
      share({
        permissions: [
          { group: 'g', level: 'read' },
          { group: 'g', level: 'admin' },
        ],
      }),
      ctx,
    );
    assert.ok(!twice.ok && twice.reason === 'InvalidSpec');
    assert.equal(parseMode('755'), 0o755);
    assert.equal(parseMode('0888'), undefined);
  });
});
