import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { V1StatefulSet } from '@kubernetes/client-node';
import type { DittoFS } from '../../api/types.js';
import { dittofsStatus } from './status.js';

const dfs = (spec: DittoFS['spec'] = {}): DittoFS => ({ metadata: { name: 'main', namespace: 'ns', uid: 'u', generation: 4 }, spec });
const sts = (ready: number, replicas = 1, revs: [string, string] = ['r1', 'r1']): V1StatefulSet => ({
  metadata: { generation: 2 },
  spec: { replicas, selector: {}, serviceName: 'x', template: {} },
  status: {
    observedGeneration: 2,
    replicas,
    readyReplicas: ready,
    updatedReplicas: replicas,
    currentRevision: revs[0],
    updateRevision: revs[1],
  },
});
const cond = (s: ReturnType<typeof dittofsStatus>, type: string) => s.conditions?.find((c) => c.type === type);

describe('dittofsStatus', () => {
  it('no pod ready yet: Pending, Ready=False PodsPending, Synced=True, not degraded', () => {
    const s = dittofsStatus({ dfs: dfs(), statefulSet: sts(0), configHash: 'h'.repeat(64), clusterDomain: 'cluster.local' });
    assert.equal(s.phase, 'Pending');
    assert.equal(s.observedGeneration, 4);
    assert.deepEqual([cond(s, 'Ready')?.status, cond(s, 'Ready')?.reason], ['False', 'PodsPending']);
    assert.equal(cond(s, 'Synced')?.status, 'True');
    assert.equal(cond(s, 'Degraded')?.status, 'False');
    assert.deepEqual(s.endpoints, { nfs: 'main.ns.svc.cluster.local:12049', api: 'http://main.ns.svc.cluster.local:8080' });
  });

  it('all ready on the current revision: Running and Ready; some ready: Degraded', () => {
    const up = dittofsStatus({ dfs: dfs({ replicas: 2 }), statefulSet: sts(2, 2), clusterDomain: 'c' });
    assert.equal(up.phase, 'Running');
    assert.equal(cond(up, 'Ready')?.status, 'True');
    const rolling = dittofsStatus({ dfs: dfs({ replicas: 2 }), statefulSet: sts(2, 2, ['r1', 'r2']), clusterDomain: 'c' });
    assert.equal(cond(rolling, 'Ready')?.reason, 'RollingUpdate');
    const half = dittofsStatus({ dfs: dfs({ replicas: 2 }), statefulSet: sts(1, 2), clusterDomain: 'c' });
    assert.equal(half.phase, 'Degraded');
    assert.deepEqual([cond(half, 'Degraded')?.status, cond(half, 'Degraded')?.reason], ['True', 'PodsNotReady']);
  });

  it('scaled to zero: Stopped and not Ready (nothing serves), not degraded', () => {
    const stopping = dittofsStatus({ dfs: dfs({ replicas: 0 }), statefulSet: sts(1, 1), clusterDomain: 'c' });
    assert.equal(stopping.phase, 'Stopped');
    assert.deepEqual([cond(stopping, 'Ready')?.status, cond(stopping, 'Ready')?.reason], ['False', 'ScaledToZero']);
    assert.match(cond(stopping, 'Ready')!.message!, /1 still stopping/);
    const stopped = dittofsStatus({ dfs: dfs({ replicas: 0 }), statefulSet: sts(0, 0), clusterDomain: 'c' });
    assert.equal(stopped.phase, 'Stopped');
    assert.equal(cond(stopped, 'Ready')?.status, 'False');
    assert.doesNotMatch(cond(stopped, 'Ready')!.message!, /stopping/);
    assert.equal(cond(stopped, 'Degraded')?.status, 'False');
  });

  it('a problem: Failed before anything exists, Degraded after; warnings degrade', () => {
    const problem = { reason: 'SecretNotFound', message: 'database.postgres.urlSecretRef: Secret "pg" not found' };
    const none = dittofsStatus({ dfs: dfs(), statefulSet: undefined, problem, clusterDomain: 'c' });
    assert.equal(none.phase, 'Failed');
    assert.deepEqual([cond(none, 'Synced')?.status, cond(none, 'Synced')?.reason], ['False', 'SecretNotFound']);
    assert.equal(dittofsStatus({ dfs: dfs(), statefulSet: sts(1), problem, clusterDomain: 'c' }).phase, 'Degraded');
    const warned = dittofsStatus({
      dfs: dfs(),
      statefulSet: sts(1),
      warnings: [{ reason: 'CacheSizeImmutable', message: 'kept 10Gi' }],
      clusterDomain: 'c',
    });
    assert.equal(warned.phase, 'Running');
    assert.deepEqual([cond(warned, 'Degraded')?.status, cond(warned, 'Degraded')?.reason], ['True', 'CacheSizeImmutable']);
  });

  it('fewer pods than asked (replicas > 1 without PostgreSQL and Redis): Ready=False with the reason, Degraded, Synced', () => {
    const replicasLimited = {
      replicas: 1,
      reason: 'CoordinationRequired',
      message: 'replicas 3 > 1 requires coordination.redis (several servers on one store lose data without coordination); running 1 pod',
    };
    const s = dittofsStatus({ dfs: dfs({ replicas: 3 }), statefulSet: sts(1), replicasLimited, clusterDomain: 'c' });
    assert.equal(s.phase, 'Degraded');
    assert.deepEqual([cond(s, 'Ready')?.status, cond(s, 'Ready')?.reason], ['False', 'CoordinationRequired']);
    assert.match(cond(s, 'Ready')?.message ?? '', /requires coordination\.redis .*; running 1 pod \(1\/1 pods ready\)/);
    assert.deepEqual([cond(s, 'Degraded')?.status, cond(s, 'Degraded')?.reason], ['True', 'CoordinationRequired']);
    assert.equal(cond(s, 'Synced')?.status, 'True');
    assert.equal(dittofsStatus({ dfs: dfs({ replicas: 3 }), statefulSet: sts(0), replicasLimited, clusterDomain: 'c' }).phase, 'Pending');
  });

  it('three coordinated pods: Running only when all three are ready, counted against the three asked for', () => {
    const three = dfs({ replicas: 3 });
    const all = dittofsStatus({ dfs: three, statefulSet: sts(3, 3), clusterDomain: 'c' });
    assert.deepEqual([all.phase, all.replicas, all.readyReplicas], ['Running', 3, 3]);
    assert.deepEqual([cond(all, 'Ready')?.status, cond(all, 'Ready')?.message], ['True', '3/3 pods ready']);
    const two = dittofsStatus({ dfs: three, statefulSet: sts(2, 3), clusterDomain: 'c' });
    assert.equal(two.phase, 'Degraded');
    assert.deepEqual([cond(two, 'Ready')?.status, cond(two, 'Ready')?.message], ['False', '2/3 pods ready']);
  });
});
