import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memberStatus, type PodOutcome } from './status.js';

const pod = (i: number) => ({ name: `main-${i}`, url: `http://p${i}` });
const okPod = (i: number, generation: number): PodOutcome => ({ pod: pod(i), ok: true, generation, carried: new Set() });
const badPod = (i: number): PodOutcome => ({ pod: pod(i), ok: false, error: 'connect ECONNREFUSED' });
const synced = (s: ReturnType<typeof memberStatus>) => s.conditions?.find((c) => c.type === 'Synced');

describe('memberStatus', () => {
  const base = { generation: 3, conditions: undefined, dittofs: 'main' };

  it('Synced=True once every ready pod applied the newest generation, with the generation each pod reported', () => {
    const s = memberStatus({ ...base, verdict: { state: 'applied' }, pods: [okPod(0, 9), okPod(1, 9)] });
    assert.deepEqual(s.pods, [
      { name: 'main-0', generation: 9 },
      { name: 'main-1', generation: 9 },
    ]);
    assert.deepEqual([synced(s)?.status, synced(s)?.reason], ['True', 'Applied']);
    assert.equal(s.observedGeneration, 3);
  });

  it('a ready pod behind the newest generation: Synced=False Converging naming it, Ready=False, not Degraded', () => {
    const s = memberStatus({ ...base, verdict: { state: 'applied' }, pods: [okPod(0, 9), okPod(1, 7), okPod(2, 9)] });
    assert.deepEqual([synced(s)?.status, synced(s)?.reason], ['False', 'Converging']);
    assert.equal(synced(s)?.message, 'generation 9 applied by 2/3 ready pods; not yet by main-1 (at 7)');
    const ready = s.conditions?.find((c) => c.type === 'Ready');
    assert.deepEqual([ready?.status, ready?.reason], ['False', 'Converging']);
    assert.equal(s.conditions?.find((c) => c.type === 'Degraded')?.status, 'False');
    assert.deepEqual(
      s.pods?.map((p) => p.generation),
      [9, 7, 9],
    );
    // A removal is not done either until every pod applied it.
    const gone = memberStatus({ ...base, verdict: { state: 'removed' }, pods: [okPod(0, 9), okPod(1, 7)] });
    assert.deepEqual([synced(gone)?.status, synced(gone)?.reason], ['False', 'Converging']);
  });

  it('a pod that failed: Synced=False PushFailed naming it, Degraded; no ready pod: NoReadyPods', () => {
    const s = memberStatus({ ...base, verdict: { state: 'applied' }, pods: [okPod(0, 7), badPod(1)] });
    assert.deepEqual([synced(s)?.status, synced(s)?.reason], ['False', 'PushFailed']);
    assert.match(synced(s)?.message ?? '', /main-1: connect ECONNREFUSED/);
    assert.equal(s.conditions?.find((c) => c.type === 'Degraded')?.status, 'True');
    const none = memberStatus({ ...base, verdict: { state: 'applied' }, pods: [] });
    assert.equal(synced(none)?.reason, 'NoReadyPods');
  });

  it('invalid: the reason, and that the servers keep their copy; in use: InUse', () => {
    const s = memberStatus({
      ...base,
      verdict: { state: 'invalid', reason: 'SecretNotFound', message: 'no Secret x' },
      pods: [okPod(0, 1)],
    });
    assert.deepEqual([synced(s)?.status, synced(s)?.reason], ['False', 'SecretNotFound']);
    assert.match(synced(s)?.message ?? '', /keep their current copy/);
    assert.deepEqual(s.pods, []);
    const u = memberStatus({
      ...base,
      verdict: { state: 'in-use', message: 'deletion waits: still used by Share data' },
      pods: [okPod(0, 1)],
      usedBy: ['data'],
    });
    assert.deepEqual([synced(u)?.status, synced(u)?.reason], ['False', 'InUse']);
    assert.deepEqual(u.usedBy, ['data']);
  });

  it('blocked (no DittoFS): says so on every condition', () => {
    const s = memberStatus({
      ...base,
      verdict: undefined,
      pods: [],
      blocked: { reason: 'DittoFSNotFound', message: 'DittoFS main does not exist' },
    });
    assert.deepEqual(
      s.conditions?.map((c) => [c.type, c.status, c.reason]),
      [
        ['Ready', 'False', 'DittoFSNotFound'],
        ['Synced', 'False', 'DittoFSNotFound'],
        ['Degraded', 'True', 'DittoFSNotFound'],
      ],
    );
  });
});
