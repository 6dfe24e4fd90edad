import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { confirmApplied, podsBehind, targetGeneration } from './converge.js';
import type { PodOutcome } from './status.js';

const pod = (i: number) => ({ name: `main-${i}`, url: `http://p${i}` });
const okPod = (i: number, generation: number): PodOutcome => ({ pod: pod(i), ok: true, generation, carried: new Set() });
const badPod = (i: number): PodOutcome => ({ pod: pod(i), ok: false, error: 'connect ECONNREFUSED' });
const gens = (os: PodOutcome[]) => os.map((o) => (o.ok ? o.generation : 'failed'));

describe('converge: every ready pod on the newest generation', () => {
  it('the target is the newest generation any pod answered; failed pods are not behind, they failed', () => {
    const os = [okPod(0, 5), badPod(1), okPod(2, 7)];
    assert.equal(targetGeneration(os), 7);
    assert.deepEqual(
      podsBehind(os).map((o) => o.pod.name),
      ['main-0'],
    );
    assert.equal(targetGeneration([badPod(0)]), undefined);
    assert.deepEqual(podsBehind([badPod(0)]), []);
  });

  it('asks only the pods behind, once each, and takes a newer answer', async () => {
    const asked: string[] = [];
    const os = await confirmApplied([okPod(0, 7), okPod(1, 5), okPod(2, 6), badPod(3)], async (p) => {
      asked.push(p.name);
      return p.name === 'main-1' ? 7 : 6;
    });
    assert.deepEqual(asked.sort(), ['main-1', 'main-2']);
    assert.deepEqual(gens(os), [7, 7, 6, 'failed']);
    assert.deepEqual(
      podsBehind(os).map((o) => o.pod.name),
      ['main-2'],
    );
  });

  it('no answer, an older one or a failure leaves the pod behind; nobody behind: nobody asked', async () => {
    const os = await confirmApplied([okPod(0, 7), okPod(1, 5), okPod(2, 5), okPod(3, 5)], async (p) => {
      if (p.name === 'main-1') return undefined;
      if (p.name === 'main-2') return 4;
      throw new Error('ECONNRESET');
    });
    assert.deepEqual(gens(os), [7, 5, 5, 5]);
    let calls = 0;
    await confirmApplied([okPod(0, 7), okPod(1, 7)], async () => {
      calls++;
      return 8;
    });
    assert.equal(calls, 0);
  });
});
