import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EventRecorder, statusEvents } from './events.js';
import type { KubeClient } from './client.js';
import { createLogger } from '../log.js';

describe('statusEvents', () => {
  it('one event per condition that appears or changes status or reason, and per new phase', () => {
    const from = { phase: 'Pending', conditions: [{ type: 'Ready', status: 'False', reason: 'PodsNotReady', message: '0/1 ready' }] };
    const to = {
      phase: 'Running',
      conditions: [
        { type: 'Ready', status: 'True', reason: 'PodsReady', message: '1/1 ready' },
        { type: 'Synced', status: 'False', reason: 'ApplyFailed', message: 'boom' },
        { type: 'Degraded', status: 'False', reason: 'AsExpected' },
      ],
    };
    assert.deepEqual(statusEvents(from, to), [
      { type: 'Normal', reason: 'PhaseRunning', note: 'phase Pending -> Running' },
      { type: 'Normal', reason: 'PodsReady', note: 'Ready=True: 1/1 ready' },
      { type: 'Warning', reason: 'ApplyFailed', note: 'Synced=False: boom' },
      { type: 'Normal', reason: 'AsExpected', note: 'Degraded=False' },
    ]);
  });

  it('scaling to zero is Normal: Ready=False ScaledToZero is what was asked', () => {
    const up = { phase: 'Running', conditions: [{ type: 'Ready', status: 'True', reason: 'PodsReady' }] };
    const down = {
      phase: 'Stopped',
      conditions: [{ type: 'Ready', status: 'False', reason: 'ScaledToZero', message: 'spec.replicas is 0' }],
    };
    assert.deepEqual(
      statusEvents(up, down).map((e) => [e.type, e.reason]),
      [
        ['Normal', 'PhaseStopped'],
        ['Normal', 'ScaledToZero'],
      ],
    );
    // Any other Ready=False stays a Warning.
    const pending = { phase: 'Pending', conditions: [{ type: 'Ready', status: 'False', reason: 'PodsPending' }] };
    assert.equal(statusEvents(up, pending).find((e) => e.reason === 'PodsPending')?.type, 'Warning');
  });

  it('nothing for a status whose conditions only changed their message or time', () => {
    const c = { type: 'Ready', status: 'True', reason: 'PodsReady', message: 'a', lastTransitionTime: 't1' };
    assert.deepEqual(
      statusEvents(
        { phase: 'Running', conditions: [c] },
        { phase: 'Running', conditions: [{ ...c, message: 'b', lastTransitionTime: 't2' }] },
      ),
      [],
    );
    assert.deepEqual(statusEvents(undefined, undefined), []);
  });
});

describe('EventRecorder', () => {
  const regarding = { kind: 'Share', metadata: { name: 'data', namespace: 'ns', uid: 'u1' } };
  const ev = { type: 'Warning' as const, reason: 'Refused', note: 'x'.repeat(5000) };

  it('posts an events.k8s.io/v1 Event on the object, truncated to the API limits; the same one once per 10 minutes', async () => {
    const posted: { path: string; body: Record<string, unknown> }[] = [];
    const client = {
      request: async (_m: string, path: string, o: { body: Record<string, unknown> }) => void posted.push({ path, body: o.body }),
    };
    const rec = new EventRecorder(client as unknown as KubeClient, createLogger({ level: 'error' }), 'op-1');
    await rec.record(regarding, ev, 1_000_000);
    await rec.record(regarding, ev, 1_000_000 + 60_000);
    await rec.record(regarding, ev, 1_000_000 + 11 * 60_000);
    assert.equal(posted.length, 2);
    assert.equal(posted[0]!.path, '/apis/events.k8s.io/v1/namespaces/ns/events');
    const b = posted[0]!.body;
    assert.equal((b.note as string).length, 1024);
    assert.deepEqual(b.regarding, { apiVersion: 'dittofs.io/v1alpha1', kind: 'Share', namespace: 'ns', name: 'data', uid: 'u1' });
    assert.equal(b.reportingController, 'dittofs.io/dittofs-operator');
    assert.equal(b.type, 'Warning');
    assert.match((b.metadata as { name: string }).name, /^data\.[0-9a-f]+$/, 'a valid object name');
  });

  it('a refused Event is only logged; the memory of recent events stays bounded', async () => {
    const client = { request: async () => Promise.reject(new Error('forbidden')) };
    const rec = new EventRecorder(client as unknown as KubeClient, createLogger({ level: 'error' }), 'op-1');
    for (let i = 0; i < 3000; i++) await rec.record({ ...regarding, metadata: { ...regarding.metadata, uid: `u${i}` } }, ev, i);
    assert.ok((rec as unknown as { recent: Map<string, number> }).recent.size <= 1024);
  });
});
