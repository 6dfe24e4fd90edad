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

  it('an admin Secret kept from a deleted DittoFS of this name is used as it is: its passwords, and no owner (it outlives this one too)', async () => {
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
    assert.equal(admin.metadata.ownerReferences, undefined, 'not owned: deleting the DittoFS leaves it');
    // A second run: everything is its own now.
    await reconcile('ns/web');
    assert.equal(synced()?.status, 'True');
  });

  it('an admin Secret an earlier version made with the DittoFS as its owner loses that owner reference, keeping its passwords and other owners', async () => {
    const mine = {
      apiVersion: 'dittofs.io/v1alpha1',
      kind: 'DittoFS',
      name: 'web',
      uid: 'dfs-uid',
      controller: true,
      blockOwnerDeletion: true,
    };
    const backup = { apiVersion: 'example.com/v1', kind: 'Backup', name: 'b', uid: 'b-uid' };
    const legacy = {
      metadata: { name: 'web-admin', namespace: 'ns', uid: 'a-uid', resourceVersion: '7', labels: ours, ownerReferences: [mine, backup] },
      data: { username: 'YWRtaW4=', password: 'cHc=', 'initial-password': 'aXA=' },
    };
    const { kube, reconcile, synced } = setup([paths.secrets('ns', 'web-admin'), legacy]);
    await reconcile('ns/web');
    assert.equal(synced()?.status, 'True', synced()?.message);
    const admin = kube.objects.get(paths.secrets('ns', 'web-admin')) as {
      data: Record<string, string>;
      metadata: { ownerReferences?: { uid: string }[] };
    };
    assert.deepEqual(admin.data, legacy.data);
    assert.deepEqual(
      admin.metadata.ownerReferences?.map((o) => o.uid),
      ['b-uid'],
    );
  });
});

describe('DittoFS reconcile: what a StatefulSet cannot change', () => {
  it('a storage class set after the DittoFS was made without one is not applied (the API server would refuse it for good): kept, Degraded says so', async () => {
    const { kube, reconcile } = setup();
    await reconcile('ns/web');
    const stsPath = paths.statefulSets('ns', 'web');
    type Sts = { spec: { volumeClaimTemplates: { spec: { storageClassName?: string } }[] } };
    assert.equal((kube.objects.get(stsPath) as unknown as Sts).spec.volumeClaimTemplates[0]!.spec.storageClassName, undefined);
    // The CRD's rule refuses changing a class that is set, not setting one on a DittoFS made without `cache`.
    kube.put(paths.custom('DittoFS', 'ns', 'web'), {
      ...dfs,
      metadata: { ...dfs.metadata, generation: 2 },
      spec: { cache: { storageClassName: 'fast' } },
    });
    kube.calls.length = 0;
    await reconcile('ns/web');
    const applied = kube.calls.find((c) => c.verb === 'apply' && c.path === stsPath)?.body as Sts | undefined;
    assert.ok(applied, 'the StatefulSet is applied (its other changes go through)');
    assert.equal(applied.spec.volumeClaimTemplates[0]!.spec.storageClassName, undefined, 'the class of the existing claims is kept');
    const now = kube.objects.get(paths.custom('DittoFS', 'ns', 'web')) as unknown as DittoFS;
    const degraded = now.status?.conditions?.find((c) => c.type === 'Degraded');
    assert.equal(degraded?.status, 'True');
    assert.equal(degraded?.reason, 'StorageClassImmutable');
    assert.match(
      degraded?.message ?? '',
      /cache\.storageClassName fast differs from the existing volume claims' the cluster's default class/,
    );
  });
});
