// The metadata stores as the server opens them: an embedded store, written by this process alone,
// answers an unchanged inode from memory however long ago it was read (no TTL as for postgres).
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import pino from 'pino';
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
});
