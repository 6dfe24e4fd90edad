import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { V1Pod } from '@kubernetes/client-node';
import type { DittoFS } from '../api/types.js';
import { podAddressResolver } from './pods.js';

const dfs = (annotations: Record<string, string> = {}): DittoFS => ({ metadata: { name: 'main', namespace: 'ns', annotations }, spec: {} });
const pod = (name: string, ready: boolean, extra: { ns?: string; instance?: string; ip?: string; deleting?: boolean } = {}): V1Pod => ({
  metadata: {
    name,
    namespace: extra.ns ?? 'ns',
    labels: { 'app.kubernetes.io/instance': extra.instance ?? 'main' },
    ownerReferences: [{ apiVersion: 'apps/v1', kind: 'StatefulSet', name: extra.instance ?? 'main', uid: 'x' }],
    ...(extra.deleting === true ? { deletionTimestamp: new Date() } : {}),
  },
  status: { conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }], podIP: extra.ip ?? '10.0.0.1' },
});

describe('PodAddressResolver', () => {
  const pods = [
    pod('main-10', true, { ip: '10.0.0.10' }),
    pod('main-2', true, { ip: 'fd00::2' }),
    pod('main-1', false),
    pod('main-3', true, { deleting: true }),
    pod('main-0', true, { ns: 'other' }),
    pod('other-0', true, { instance: 'other' }),
  ];

  it('dns: the ready pods of this DittoFS, by ordinal, at their headless-Service names', () => {
    const r = podAddressResolver('dns', { pods: () => pods, clusterDomain: 'cluster.local' });
    assert.deepEqual(r.readyPods(dfs()), [
      { name: 'main-2', url: 'http://main-2.main-headless.ns.svc.cluster.local:8080' },
      { name: 'main-10', url: 'http://main-10.main-headless.ns.svc.cluster.local:8080' },
    ]);
  });

  it('ip: the same pods at their IPs (IPv6 bracketed)', () => {
    const r = podAddressResolver('ip', { pods: () => pods, clusterDomain: 'cluster.local' });
    assert.deepEqual(
      r.readyPods(dfs()).map((p) => p.url),
      ['http://[fd00::2]:8080', 'http://10.0.0.10:8080'],
    );
  });

  it('annotation: one ready "pod" per URL of dittofs.io/test-endpoint; none without it', () => {
    const r = podAddressResolver('annotation', { pods: () => [], clusterDomain: 'cluster.local' });
    assert.deepEqual(r.readyPods(dfs({ 'dittofs.io/test-endpoint': 'http://127.0.0.1:8080/, http://127.0.0.1:8081' })), [
      { name: 'main-0', url: 'http://127.0.0.1:8080' },
      { name: 'main-1', url: 'http://127.0.0.1:8081' },
    ]);
    assert.deepEqual(r.readyPods(dfs()), []);
  });
});
