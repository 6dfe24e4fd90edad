import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { microTime, rfc3339, setConditions } from './conditions.js';
import { mergePatchDiff } from './patch.js';
import { parseQuantityBytes } from './quantity.js';
import { resourcePath } from './client.js';

describe('setConditions', () => {
  const t0 = new Date('2026-01-01T00:00:00.123Z');
  const t1 = new Date('2026-01-01T01:00:00Z');

  it('moves lastTransitionTime only when the status changes', () => {
    const a = setConditions(undefined, [{ type: 'Ready', status: false, reason: 'PodsPending', message: '0/1' }], 1, t0);
    assert.deepEqual(a, [
      {
        type: 'Ready',
        status: 'False',
        observedGeneration: 1,
        lastTransitionTime: '2026-01-01T00:00:00Z',
        reason: 'PodsPending',
        message: '0/1',
      },
    ]);
    const b = setConditions(a, [{ type: 'Ready', status: false, reason: 'PodsNotReady', message: '1/2' }], 2, t1);
    assert.equal(b[0]!.lastTransitionTime, '2026-01-01T00:00:00Z');
    assert.equal(b[0]!.reason, 'PodsNotReady');
    assert.equal(b[0]!.observedGeneration, 2);
    const c = setConditions(b, [{ type: 'Ready', status: true, reason: 'PodsReady', message: '2/2' }], 2, t1);
    assert.equal(c[0]!.lastTransitionTime, '2026-01-01T01:00:00Z');
  });

  it('keeps one entry per type, in first-seen order, and bounds messages', () => {
    const a = setConditions(
      undefined,
      [
        { type: 'Ready', status: true, reason: 'r', message: 'm' },
        { type: 'Synced', status: 'Unknown', reason: 'r', message: 'x'.repeat(10_000) },
      ],
      undefined,
    );
    const b = setConditions(a, [{ type: 'Ready', status: false, reason: 'r', message: 'm' }], undefined);
    assert.deepEqual(
      b.map((c) => c.type),
      ['Ready', 'Synced'],
    );
    assert.ok(b[1]!.message!.length <= 4096);
    assert.equal(b[0]!.observedGeneration, undefined);
  });

  it('time formats: metav1.Time and the six-digit MicroTime Leases need', () => {
    assert.equal(rfc3339(t0), '2026-01-01T00:00:00Z');
    assert.equal(microTime(t0), '2026-01-01T00:00:00.123000Z');
  });
});

describe('mergePatchDiff', () => {
  it('sends what changed, null for what went, arrays whole; nothing when equal', () => {
    assert.equal(mergePatchDiff({ a: 1, b: { c: [1] } }, { b: { c: [1] }, a: 1 }), undefined);
    assert.deepEqual(mergePatchDiff({ a: 1, b: { c: 2, d: 3 }, e: [1, 2] }, { a: 2, b: { c: 2 }, e: [1, 2, 3], f: 'new' }), {
      a: 2,
      b: { d: null },
      e: [1, 2, 3],
      f: 'new',
    });
    assert.deepEqual(mergePatchDiff(undefined, { x: { y: 1 } }), { x: { y: 1 } });
    assert.deepEqual(mergePatchDiff({ endpoints: { nfs: 'a', smb: 'b' } }, { endpoints: { nfs: 'a' } }), { endpoints: { smb: null } });
  });
});

describe('parseQuantityBytes', () => {
  it('reads the units the CRD admits', () => {
    assert.equal(parseQuantityBytes('10Gi'), 10 * 2 ** 30);
    assert.equal(parseQuantityBytes('1.5Mi'), 1.5 * 2 ** 20);
    assert.equal(parseQuantityBytes('2G'), 2e9);
    assert.equal(parseQuantityBytes('512'), 512);
    assert.equal(parseQuantityBytes(4096), 4096);
    assert.throws(() => parseQuantityBytes('10 GB'), /invalid quantity/);
    assert.throws(() => parseQuantityBytes('-1'), /invalid quantity/);
  });
});

describe('resourcePath', () => {
  it('core and group resources, namespaced or not, with subresources', () => {
    assert.equal(
      resourcePath({ group: '', version: 'v1', plural: 'secrets', namespace: 'ns', name: 'a' }),
      '/api/v1/namespaces/ns/secrets/a',
    );
    assert.equal(resourcePath({ group: 'apps', version: 'v1', plural: 'statefulsets' }), '/apis/apps/v1/statefulsets');
    assert.equal(
      resourcePath({ group: 'dittofs.io', version: 'v1alpha1', plural: 'shares', namespace: 'ns', name: 'x', subresource: 'status' }),
      '/apis/dittofs.io/v1alpha1/namespaces/ns/shares/x/status',
    );
  });
});
