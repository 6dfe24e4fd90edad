import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LABELS, MANAGED_BY, type DittoFS } from '../../api/types.js';
import { FakeKubeClient } from '../../kube/fake-client.testing.js';
import { SecretValues } from '../../kube/redact.js';
import { paths } from '../../kube/resources.js';
import { createLogger } from '../../log.js';
import { dittofsReconciler } from './reconcile.js';

const dfs: DittoFS = { metadata: { name: 'web', namespace: 'ns', uid: 'dfs-uid', generation: 1 }, spec: {} };
const ours = { [LABELS.managedBy]: MANAGED_BY, [LABELS.instance]: 'web' };

function setup(...objects: [string, object][]) {
  const kube = new FakeKubeClient();
  kube.put(paths.custom('DittoFS', 'ns', 'web'), dfs);
  for (const [p, o] of objects) kube.put(p, o);
  const reconcile = dittofsReconciler({
    client: kube.client,
    log: createLogger({ level: 'silent' }),
    defaultImage: 'dittofs:test',
    clusterDomain: 'cluster.local',
    secrets: new SecretValues(),
  });
  const synced = () =>
    (kube.objects.get(paths.custom('DittoFS', 'ns', 'web')) as unknown as DittoFS).status?.conditions?.find((c) => c.type === 'Synced');
  const writes = () =>
    kube.calls.filter((c) => c.verb === 'apply' || c.verb === 'create' || (c.verb === 'mergePatch' && !c.path.includes('/dittofses/')));
  return { kube, reconcile, synced, writes };
}

describe('DittoFS reconcile: a child name taken by someone else', () => {
  it("a Helm release's Service of the DittoFS's name is not touched; Synced=False NameConflict names it", async () => {
    const helmService = {
      metadata: { name: 'web', namespace: 'ns', uid: 'svc-uid', labels: { 'app.kubernetes.io/managed-by': 'Helm' } },
      spec: { selector: { app: 'web' }, ports: [{ port: 80 }] },
    };
    const { kube, reconcile, synced, writes } = setup([paths.services('ns', 'web'), helmService]);
    await reconcile('ns/web');
    assert.deepEqual(writes(), [], 'nothing created, applied or patched');
    assert.deepEqual(kube.objects.get(paths.services('ns', 'web')), helmService);
    assert.equal(synced()?.status, 'False');
    assert.equal(synced()?.reason, 'NameConflict');
    assert.match(synced()?.message ?? '', /Service web already exists, not made by dittofs-operator/);
    const st = kube.objects.get(paths.custom('DittoFS', 'ns', 'web')) as unknown as DittoFS;
    assert.equal(st.status?.phase, 'Failed');
  });

  it('a Secret NAME-jwt another object controls is not used nor changed (the pods would get its keys)', async () => {
    const other = [{ apiVersion: 'v1', kind: 'ConfigMap', name: 'app', uid: 'cm-uid', controller: true }];
    const userSecret = {
      metadata: { name: 'web-jwt', namespace: 'ns', uid: 's-uid', ownerReferences: other },
      data: { token: 'dXNlcg==' },
    };
    const { kube, reconcile, synced, writes } = setup([paths.secrets('ns', 'web-jwt'), userSecret]);
    await reconcile('ns/web');
    assert.deepEqual(writes(), []);
    assert.deepEqual(kube.objects.get(paths.secrets('ns', 'web-jwt')), userSecret, 'no key added');
    assert.equal(synced()?.reason, 'NameConflict');
    assert.match(synced()?.message ?? '', /Secret web-jwt/);
  });

  it("a user's own NAME-jwt (no owner, no labels) provides the key: used as it is, missing keys added, not adopted", async () => {
    const userSecret = {
      metadata: { name: 'web-jwt', namespace: 'ns', uid: 's-uid', resourceVersion: '3' },
      data: { unrelated: 'dXNlcg==' },
    };
    const { kube, reconcile, synced } = setup([paths.secrets('ns', 'web-jwt'), userSecret]);
    await reconcile('ns/web');
    assert.notEqual(synced()?.reason, 'NameConflict');
    const jwt = kube.objects.get(paths.secrets('ns', 'web-jwt')) as {
      data: Record<string, string>;
      metadata: { ownerReferences?: unknown[] };
    };
    assert.equal(jwt.data.unrelated, 'dXNlcg==', 'its keys are kept');
    assert.ok(Object.keys(jwt.data).length > 1, 'the key it lacked was added');
    assert.equal(jwt.metadata.ownerReferences, undefined, 'not adopted: deleting the DittoFS leaves it');
  });

  it("another DittoFS's child is not taken over: DittoFS web-headless's client Service has DittoFS web's headless name", async () => {
    const other = {
      metadata: {
        name: 'web-headless',
        namespace: 'ns',
        labels: { [LABELS.managedBy]: MANAGED_BY, [LABELS.instance]: 'web-headless' },
        ownerReferences: [{ apiVersion: 'dittofs.io/v1alpha1', kind: 'DittoFS', name: 'web-headless', uid: 'other-uid', controller: true }],
      },
    };
    const { reconcile, synced, writes } = setup([paths.services('ns', 'web-headless'), other]);
    await reconcile('ns/web');
    assert.deepEqual(writes(), []);
    assert.match(synced()?.message ?? '', /Service web-headless already exists, controlled by DittoFS web-headless/);
  });

  it('its own children, and ones the operator made for this name that lost their owner, are applied (the latter adopted)', async () => {
    const orphanAdmin = {
      metadata: { name: 'web-admin', namespace: 'ns', uid: 'a-uid', resourceVersion: '7', labels: ours },
      data: { username: 'YWRtaW4=', password: 'cHc=', 'initial-password': 'aXA=' },
    };
    const { kube, reconcile, synced } = setup([paths.secrets('ns', 'web-admin'), orphanAdmin]);
    await reconcile('ns/web');
    assert.equal(synced()?.status, 'True', synced()?.message);
    const applied = kube.calls.filter((c) => c.verb === 'apply').map((c) => c.path);
    assert.deepEqual(applied, [
      paths.secrets('ns', 'web-config'),
      paths.services('ns', 'web-headless'),
      paths.services('ns', 'web'),
      paths.statefulSets('ns', 'web'),
    ]);
    const admin = kube.objects.get(paths.secrets('ns', 'web-admin')) as {
      data: Record<string, string>;
      metadata: { ownerReferences?: { uid: string }[] };
    };
    assert.deepEqual(admin.data, orphanAdmin.data, 'its passwords are kept');
    assert.deepEqual(
      admin.metadata.ownerReferences?.map((o) => o.uid),
      ['dfs-uid'],
    );
    // A second run: everything is its own now.
    await reconcile('ns/web');
    assert.equal(synced()?.status, 'True');
  });
});
