// The config file as a desired state: every store and share, only the keys each type has.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { defaultConfig } from '../config/defaults.js';
import { desiredFromConfig } from './seed.js';

describe('desiredFromConfig', () => {
  it('maps the default config: one embedded store, one filesystem store, /export', () => {
    const d = desiredFromConfig(defaultConfig());
    assert.deepEqual(d.metadata_stores, [{ name: 'default', type: 'embedded', config: { path: 'data/metadata/default' } }]);
    assert.deepEqual(d.block_stores, [
      { name: 'default', type: 'filesystem', config: { block_size: 4 * 1024 * 1024, path: 'data/blocks/default' } },
    ]);
    assert.deepEqual(d.shares, [
      {
        name: '/export',
        metadata_store: 'default',
        block_store: 'default',
        read_only: false,
        root_squash: false,
        anonymous_uid: 65534,
        anonymous_gid: 65534,
        root_mode: 0o777,
        root_uid: 0,
        root_gid: 0,
      },
    ]);
  });

  it('keeps the keys of each type and drops the others', () => {
    const c = defaultConfig();
    c.metadata.stores = {
      pg: { type: 'postgres', url: 'postgres://u:p@h/db', pool_size: 4, schema: 'x', sync: 'commit', path: '/ignored' },
      mem: { type: 'memory', url: 'postgres://ignored' },
    };
    c.blocks.stores = {
      s3: { type: 's3', block_size: 1048576, bucket: 'b-1', secret_access_key: 's', access_key_id: 'a', path: '/ignored' },
    };
    const d = desiredFromConfig(c);
    assert.deepEqual(d.metadata_stores, [
      // sync too: a postgres store's `sync: commit` must reach the server (it was dropped here).
      { name: 'pg', type: 'postgres', config: { url: 'postgres://u:p@h/db', pool_size: 4, schema: 'x', sync: 'commit' } },
      { name: 'mem', type: 'memory', config: {} },
    ]);
    assert.deepEqual(d.block_stores, [
      { name: 's3', type: 's3', config: { block_size: 1048576, bucket: 'b-1', secret_access_key: 's', access_key_id: 'a' } },
    ]);
  });
});
