// StoreHealth: what GET /health/ready and GET /health (liveness) learn about the open stores.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';
import { StoreHealth } from './controlplane.js';
import { MemoryMetadataStore } from './meta/memory.js';
import type { ShareRuntime } from './shares.js';

/** A metadata store that answers, but no longer vouches for what it answered (an fsync failed). */
class FailedStore extends MemoryMetadataStore {
  failure(): Error | null {
    return new Error('fsync of the WAL failed (EIO); restart the server (postgres://dittofs:hunter2@db/dittofs)');
  }
}

describe('store health', () => {
  it('reports a metadata store that failed for good, to readiness and liveness, its secrets masked', async () => {
    const failed = new FailedStore();
    const fine = new MemoryMetadataStore();
    const shares = {
      openStores: () => ({
        metadata: [
          ['failed', failed],
          ['fine', fine],
        ],
        blocks: [],
      }),
    } as unknown as ShareRuntime;
    const health = new StoreHealth(shares, pino({ level: 'silent' }), 60_000);
    try {
      // The first probe runs at once; both stores answer it.
      for (let i = 0; i < 200 && Object.keys(health.checks()).length < 2; i++) await new Promise((r) => setImmediate(r));
      const failures = health.failures();
      assert.deepEqual(Object.keys(failures), ['metadata:failed']);
      assert.match(failures['metadata:failed']!, /fsync of the WAL failed/);
      assert.doesNotMatch(failures['metadata:failed']!, /hunter2/);
      const checks = health.checks();
      assert.equal(checks['metadata:failed']?.ok, false, 'not ready either, though it answers its probe');
      assert.equal(checks['metadata:failed']?.detail, failures['metadata:failed']);
      assert.deepEqual(checks['metadata:fine'], { ok: true });
    } finally {
      health.stop();
    }
  });
});
