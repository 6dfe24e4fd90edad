// The operator and DittoFS on a real Kubernetes node: the control plane of test/helpers/k8s.ts
// plus kube-scheduler and a node (hack/k8s/node.sh: containerd, runc, the CNI bridge, kubelet and
// kube-proxy in a network + mount namespace of their own), and the images built from
// Dockerfile.server and Dockerfile.operator (hack/k8s/images.sh: buildah, no registry). Nothing here
// is simulated: the operator runs from its image, installed by helm; the DittoFS pod runs the
// server image with the operator's pod spec (probes, volumes, securityContext, rendered config) on
// a PersistentVolume of a local StorageClass; clients run in a pod of their own and reach the
// server through its client Service (ClusterIP, kube-proxy).
//
// - helm install: the operator's Deployment becomes available from its image.
// - A DittoFS with its cache volume from the local StorageClass: its pod is Running and Ready
//   through its real probes, as uid 10001; `kubectl get dittofs` shows the phase.
// - Store, Share and User objects reach the pod; from the client pod, nfs-cp writes and reads the
//   share as the User's uid, smbclient as the User, and a stranger is refused.
// - A config change rolls the pod (a new config hash) and the data is still there.
// - A crash (SIGKILL of the server in its container) is followed by a WAL replay; deleting the pod
//   brings a new one on the same PVC, with the data.
// - A DittoFS on PostgreSQL, S3 and Redis (Debian's servers on the host: PostgreSQL and S3 through
//   a forwarder on the veth's host end, Redis listening there itself); then `replicas: 2` on it:
//   both pods Ready, Store/Share/User Synced on both, a write through one pod read back through the
//   other (NFS and SMB), the writer's pod deleted without loss, a permission change held by both.
// - The operator emits Kubernetes Events for what it does.
//
// Needs root, the node binaries (hack/k8s/build.sh builds them after the control plane) and the
// Debian packages of `hack/install-deps.sh k8s-node` and `test` (postgresql, redis-server). The
// first image build needs the network (the Debian mirror once, the npm registry); later runs reuse
// ~/.cache/dittofs/k8s-node.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { K8S_WAIT, NODE_NAME, NODE_SH, pollUntil, startKubeControlPlane, type KubeControlPlane } from '../helpers/k8s.js';
import { COMMAND_TIMEOUT_MS, READY_TIMEOUT_MS } from '../helpers/limits.js';
import { REPO_ROOT } from '../helpers/server.js';
import { runProcess, type Run } from '../helpers/run.js';
import { startPostgres } from '../helpers/postgres.js';
import { startRedis } from '../helpers/redis.js';
import { startS3 } from '../helpers/s3.js';
import { tcpForward } from '../helpers/proxy.js';

const IMAGES_SH = path.join(REPO_ROOT, 'hack', 'k8s', 'images.sh');
/** The first image build (debootstrap, npm ci and tsc in buildah) takes minutes on a loaded machine. */
const IMAGE_BUILD_TIMEOUT_MS = 40 * 60_000;
const SUITE_TIMEOUT_MS = IMAGE_BUILD_TIMEOUT_MS + 30 * 60_000;
const CLIENT_IMAGE = 'localhost/dittofs-test-client:1';
const SERVER_UID = 10001;
const ns = `dittofs-node-${randomBytes(3).toString('hex')}`;
const USER = { name: 'bob', uid: 4002, password: 'bob-Secret-pw-1' };
const REDIS_PASSWORD = 'redis-Secret-pw-1';
/** The Redis of the PostgreSQL + S3 DittoFS (teardown checks it is gone). */
let redisPort: number | undefined;
/** The sha256 of big.txt, written to the PostgreSQL + S3 DittoFS. */
let bigSha: string | undefined;
const PGS_MEMBERS = [
  ['stores.dittofs.io', 'pgs-meta'],
  ['stores.dittofs.io', 'pgs-blocks'],
  ['users.dittofs.io', 'pgs-bob'],
  ['shares.dittofs.io', 'pgs-data'],
] as const;

let cp: KubeControlPlane;

const run = (file: string, args: string[], input = '', timeoutMs = COMMAND_TIMEOUT_MS): Promise<Run> =>
  runProcess(file, args, { env: cp.env, input, timeoutMs });
const kubectl = (args: string[], input = ''): Promise<Run> => run(cp.kubectl, ['--kubeconfig', cp.kubeconfig, ...args], input);

async function ok(args: string[], input = ''): Promise<string> {
  const r = await kubectl(args, input);
  assert.equal(r.code, 0, `kubectl ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}
const apply = (yaml: string): Promise<string> => ok(['apply', '-n', ns, '-f', '-'], yaml);

interface Pod {
  metadata: { name: string; uid: string; annotations?: Record<string, string> };
  spec: { volumes?: { name: string; persistentVolumeClaim?: { claimName: string } }[] };
  status?: {
    phase?: string;
    podIP?: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: { restartCount: number; ready: boolean }[];
  };
}

async function getJson<T>(args: string[]): Promise<T | undefined> {
  const r = await kubectl([...args, '-o', 'json']);
  if (r.code !== 0) {
    if (/NotFound/.test(r.stderr)) return undefined;
    assert.fail(`kubectl ${args.join(' ')}: ${r.stderr}`);
  }
  return JSON.parse(r.stdout) as T;
}

/** Polls until `probe` returns something; fails with the last value seen and what the cluster says. */
function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = READY_TIMEOUT_MS): Promise<T> {
  return pollUntil(what, probe, {
    timeoutMs,
    intervalMs: 1000,
    context: async () => {
      const pods = await kubectl(['get', 'pods,pvc,dittofs,events', '-n', ns, '-o', 'wide']);
      return pods.stdout + pods.stderr;
    },
  });
}

interface Member {
  metadata: { generation?: number };
  status?: {
    observedGeneration?: number;
    pods?: { name: string; generation?: number }[];
    conditions?: { type: string; status: string; reason?: string; message?: string }[];
  };
}

/**
 * Waits until a Store, Share or User of the current spec is Synced, and then checks what that
 * means: the operator says it was applied (reason Applied) by exactly `pods`, all at one
 * control-plane generation. Returns that generation.
 */
async function syncedOn(kind: string, name: string, pods: string[]): Promise<number> {
  const o = await waitFor(`${kind} ${name} Synced on ${pods.join(', ')}`, async () => {
    const m = await getJson<Member>(['get', kind, name, '-n', ns]);
    const synced = m?.status?.conditions?.find((c) => c.type === 'Synced');
    if (synced?.status !== 'True' || m!.status!.observedGeneration !== m!.metadata.generation) return undefined;
    // Synced before the last pod was ready (it then named fewer pods): wait for the next sync.
    return (m!.status!.pods ?? []).length === pods.length ? m : undefined;
  });
  const synced = o.status!.conditions!.find((c) => c.type === 'Synced')!;
  assert.equal(synced.reason, 'Applied', `${kind} ${name}: ${synced.message}`);
  const applied = o.status!.pods ?? [];
  assert.deepEqual(applied.map((p) => p.name).sort(), [...pods].sort(), `${kind} ${name} names the pods that applied it`);
  const gens = new Set(applied.map((p) => p.generation));
  assert.equal(gens.size, 1, `${kind} ${name}: every pod at one generation (${JSON.stringify(applied)})`);
  return [...gens][0]!;
}

const ready = (p: Pod | undefined): boolean => p?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;

/** The server pod main-0 once Ready, optionally other than `notUid` (a replaced pod). */
function serverPodReady(notUid?: string, timeoutMs?: number): Promise<Pod> {
  return waitFor(
    `pod main-0 Ready${notUid === undefined ? '' : ' (a new one)'}`,
    async () => {
      const p = await getJson<Pod>(['get', 'pod', 'main-0', '-n', ns]);
      return ready(p) && p!.metadata.uid !== notUid ? p : undefined;
    },
    timeoutMs,
  );
}

async function clusterIp(service = 'main'): Promise<string> {
  return (await ok(['get', 'service', service, '-n', ns, '-o', 'jsonpath={.spec.clusterIP}'])).trim();
}

/** A command in the client pod (libnfs-utils, smbclient). */
const inClient = (script: string, input = ''): Promise<Run> => kubectl(['exec', '-i', '-n', ns, 'client', '--', 'sh', '-c', script], input);

/** Where a client connects: the client Service of a DittoFS (by name), or one pod (by its IP). */
type Target = string | { ip: string };

const hostOf = async (to: Target): Promise<string> => (typeof to === 'string' ? clusterIp(to) : to.ip);

/** An nfs:// URL of a file in a share, through the client Service of a DittoFS or at one pod. */
async function nfsUrl(file: string, uid: number, to: Target = 'main', share = '/data'): Promise<string> {
  return `nfs://${await hostOf(to)}${share}/${file}?nfsport=12049&mountport=12049&uid=${uid}&gid=${uid}`;
}

async function nfsPut(file: string, uid: number, content: string, to?: Target, share?: string): Promise<Run> {
  return inClient(`cat > /tmp/put && nfs-cp /tmp/put '${await nfsUrl(file, uid, to, share)}'`, content);
}

async function nfsGet(file: string, uid: number, to?: Target, share?: string): Promise<string | undefined> {
  const r = await inClient(`rm -f /tmp/get && nfs-cp '${await nfsUrl(file, uid, to, share)}' /tmp/get >/dev/null && cat /tmp/get`);
  return r.code === 0 ? r.stdout : undefined;
}

const sha256 = (data: string): string => createHash('sha256').update(data).digest('hex');

/** The sha256 of a file read by NFS in the client pod (the bytes stay there); undefined if the read fails. */
async function nfsSha(file: string, uid: number, to: Target): Promise<string | undefined> {
  const r = await inClient(`rm -f /tmp/sha && nfs-cp '${await nfsUrl(file, uid, to)}' /tmp/sha >/dev/null && sha256sum < /tmp/sha`);
  return r.code === 0 ? r.stdout.split(' ')[0] : undefined;
}

/** A PersistentVolume of the local StorageClass, in a directory of the node's. */
async function localPv(name: string): Promise<void> {
  const dir = path.join(cp.node!.dir, 'volumes', name);
  await mkdir(dir, { recursive: true });
  await ok(
    ['apply', '-f', '-'],
    `apiVersion: v1
kind: PersistentVolume
metadata: { name: ${name} }
spec:
  capacity: { storage: 2Gi }
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  local: { path: ${dir} }
  nodeAffinity:
    required:
      nodeSelectorTerms: [{ matchExpressions: [{ key: kubernetes.io/hostname, operator: In, values: [${NODE_NAME}] }] }]
`,
  );
}

async function smb(commands: string, user = `${USER.name}%${USER.password}`, to: Target = 'main'): Promise<Run> {
  const ip = await hostOf(to);
  return inClient(
    `cd /tmp && smbclient //${ip}/data -p 12445 -U '${user}' -m SMB3 --option='client min protocol=SMB2_02' -c '${commands}'`,
  );
}

/** The host's /run/netns (where `ip netns` and containerd pin network namespaces); [] if absent. */
async function hostNetns(): Promise<string[]> {
  return readdir('/run/netns').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
}

describe('DittoFS on a real Kubernetes node (kubelet, containerd, images built here)', { timeout: SUITE_TIMEOUT_MS }, () => {
  const closers: (() => Promise<void>)[] = [];
  let netnsBefore: string[] = [];

  before(async () => {
    // The images first: nothing runs meanwhile.
    const images = await runProcess(IMAGES_SH, [], { timeoutMs: IMAGE_BUILD_TIMEOUT_MS });
    assert.equal(images.code, 0, `hack/k8s/images.sh:\n${images.stderr}`);
    const tars = images.stdout.trim().split('\n');
    netnsBefore = await hostNetns();
    cp = await startKubeControlPlane({ node: true });
    const imp = await runProcess(NODE_SH, ['import', cp.node!.dir, ...tars], { timeoutMs: COMMAND_TIMEOUT_MS });
    assert.equal(imp.code, 0, `node.sh import:\n${imp.stderr}`);
    await ok(['create', 'namespace', ns]);
    await waitFor('the default ServiceAccount', () => getJson(['get', 'serviceaccount', 'default', '-n', ns]));
    // A local StorageClass and one PersistentVolume on the node, for the DittoFS cache volume.
    await ok(
      ['apply', '-f', '-'],
      `apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: { name: local }
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
`,
    );
    await localPv('dittofs-main-0');
  });

  after(async () => {
    // The node first, then the servers its pods used, as the teardown test does: pods stopping
    // meanwhile still reach PostgreSQL, S3 and Redis.
    try {
      await cp?.stop();
    } finally {
      for (const c of closers.reverse()) await c().catch(() => undefined);
    }
  });

  it('helm install: the operator runs from its image and becomes available', async () => {
    const r = await run(cp.helm, [
      '--kubeconfig',
      cp.kubeconfig,
      'install',
      'dittofs-operator',
      path.join(REPO_ROOT, 'charts', 'dittofs-operator'),
      '--namespace',
      ns,
      '--set',
      'podAddressMode=ip',
      '--set',
      'image.pullPolicy=Never',
      '--wait',
      `--timeout=${K8S_WAIT}`,
    ]);
    assert.equal(r.code, 0, `helm install: ${r.stderr}${r.stdout}\n${(await kubectl(['get', 'pods,events', '-n', ns])).stdout}`);
    const dep = await ok([
      'get',
      'deployment',
      '-n',
      ns,
      '-l',
      'app.kubernetes.io/name=dittofs-operator',
      '-o',
      'jsonpath={.items[0].status.availableReplicas}',
    ]);
    assert.equal(dep.trim(), '1');
  });

  it('a DittoFS with its cache on a local StorageClass: the pod is Running and Ready through its probes, as uid 10001', async () => {
    await apply(`apiVersion: dittofs.io/v1alpha1
kind: DittoFS
metadata: { name: main }
spec:
  replicas: 1
  imagePullPolicy: Never
  cache: { size: 1Gi, storageClassName: local }
  adapters: { smb: { enabled: true } }
`);
    const pod = await serverPodReady();
    assert.equal(pod.status?.phase, 'Running');
    assert.equal((await ok(['exec', '-n', ns, 'main-0', '--', 'id', '-u'])).trim(), String(SERVER_UID));
    const claim = pod.spec.volumes?.find((v) => v.persistentVolumeClaim)?.persistentVolumeClaim?.claimName;
    assert.ok(claim, 'the pod mounts a PVC');
    assert.equal((await ok(['get', 'pvc', claim, '-n', ns, '-o', 'jsonpath={.spec.volumeName}'])).trim(), 'dittofs-main-0');
    const table = await waitFor('kubectl get dittofs to say Running', async () => {
      const out = await ok(['get', 'dittofs', '-n', ns]);
      return /^main\s+\S+\s+1\s+Running\s/m.test(out) ? out : undefined;
    });
    assert.match(table.split('\n')[0]!, /^NAME\s+READY\s+REPLICAS\s+PHASE\s+AGE$/);
  });

  it('Store, Share and User reach the pod; the client pod writes and reads the share by NFS as the uid and by SMB as the user', async () => {
    await apply(`apiVersion: dittofs.io/v1alpha1
kind: Store
metadata: { name: meta }
spec: { dittofs: main, kind: metadata, type: embedded }
---
apiVersion: dittofs.io/v1alpha1
kind: Store
metadata: { name: blocks }
spec: { dittofs: main, kind: block, type: filesystem }
---
apiVersion: dittofs.io/v1alpha1
kind: Share
metadata: { name: data }
spec: { dittofs: main, path: /data, metadataStore: meta, blockStore: blocks, defaultPermission: none, permissions: [{ group: writers, level: read-write }] }
---
apiVersion: v1
kind: Secret
metadata: { name: bob-password }
stringData: { password: ${USER.password} }
---
apiVersion: dittofs.io/v1alpha1
kind: User
metadata: { name: bob }
spec: { dittofs: main, username: ${USER.name}, uid: ${USER.uid}, gid: ${USER.uid}, groups: [writers], passwordSecretRef: { name: bob-password, key: password } }
---
apiVersion: v1
kind: Pod
metadata: { name: client }
spec:
  containers: [{ name: client, image: ${CLIENT_IMAGE}, imagePullPolicy: Never }]
  terminationGracePeriodSeconds: 1
`);
    for (const [kind, name] of [
      ['stores.dittofs.io', 'meta'],
      ['stores.dittofs.io', 'blocks'],
      ['users.dittofs.io', 'bob'],
      ['shares.dittofs.io', 'data'],
    ] as const) {
      await waitFor(`${kind} ${name} Synced`, async () => {
        const o = await getJson<{ status?: { conditions?: { type: string; status: string }[] } }>(['get', kind, name, '-n', ns]);
        return o?.status?.conditions?.some((c) => c.type === 'Synced' && c.status === 'True') ? true : undefined;
      });
    }
    await waitFor('the client pod', async () => (ready(await getJson<Pod>(['get', 'pod', 'client', '-n', ns])) ? true : undefined));

    const w = await nfsPut('hello.txt', USER.uid, 'written from a pod\n');
    assert.equal(w.code, 0, `nfs-cp as uid ${USER.uid}: ${w.stderr}${w.stdout}`);
    assert.equal(await nfsGet('hello.txt', USER.uid), 'written from a pod\n');
    const stranger = await nfsPut('nope.txt', 4999, 'x');
    assert.notEqual(stranger.code, 0, 'a uid that is no user gets the default permission none');

    const put = await smb('put /etc/hostname smb.txt; get hello.txt smb-got.txt');
    assert.equal(put.code, 0, `smbclient as ${USER.name}: ${put.stderr}${put.stdout}`);
    assert.equal((await inClient('cat /tmp/smb-got.txt')).stdout, 'written from a pod\n');
    assert.equal((await inClient('cat /etc/hostname')).stdout, await nfsGet('smb.txt', USER.uid));
    const bad = await smb('ls', `${USER.name}%wrong-password`);
    assert.notEqual(bad.code, 0, 'a wrong password is refused');
  });

  it('a config change rolls the pod (a new config hash) and the data is still there', async () => {
    const before = await serverPodReady();
    const hash = before.metadata.annotations?.['dittofs.io/config-hash'];
    assert.ok(hash);
    await ok(['patch', 'dittofs', 'main', '-n', ns, '--type=merge', '-p', '{"spec":{"logLevel":"debug"}}']);
    const after = await serverPodReady(before.metadata.uid);
    assert.notEqual(after.metadata.annotations?.['dittofs.io/config-hash'], hash);
    assert.equal(await nfsGet('hello.txt', USER.uid), 'written from a pod\n');
  });

  it('a crashed server replays its WAL; a deleted pod comes back on the same PVC with the data', async () => {
    const data = randomBytes(256 * 1024).toString('base64');
    const w = await nfsPut('crash.txt', USER.uid, data);
    assert.equal(w.code, 0, `nfs-cp: ${w.stderr}`);
    // SIGKILL of the server (every process of its container, from the node): no clean stop.
    const pod = await serverPodReady();
    const kill = await runProcess(NODE_SH, ['kill-container', cp.node!.dir, ns, 'main-0', 'dittofs'], { timeoutMs: COMMAND_TIMEOUT_MS });
    assert.equal(kill.code, 0, `node.sh kill-container: ${kill.stderr}`);
    await waitFor('the container to restart', async () => {
      const p = await getJson<Pod>(['get', 'pod', 'main-0', '-n', ns]);
      return (p?.status?.containerStatuses?.[0]?.restartCount ?? 0) > 0 && ready(p) ? p : undefined;
    });
    const log = await ok(['logs', '-n', ns, 'main-0']);
    assert.match(log, /WAL replayed|WAL records of shares already stored skipped/, 'the restarted server read its WAL');
    assert.doesNotMatch(log, /WAL clean, nothing to replay/);
    assert.equal(await nfsGet('crash.txt', USER.uid), data);

    await ok(['delete', 'pod', 'main-0', '-n', ns, `--timeout=${K8S_WAIT}`]);
    const back = await serverPodReady(pod.metadata.uid);
    assert.equal(back.spec.volumes?.find((v) => v.persistentVolumeClaim)?.persistentVolumeClaim?.claimName, 'data-main-0');
    assert.equal(await nfsGet('crash.txt', USER.uid), data);
    assert.equal(await nfsGet('hello.txt', USER.uid), 'written from a pod\n');
  });

  it('a DittoFS on PostgreSQL, S3 and Redis (servers on the host, reached through the veth): the share works from the client pod, its blocks land in the bucket', async () => {
    // Redis listens on the host end of the veth itself (no forwarder in the path of every lease).
    const redis = await startRedis({ host: cp.node!.hostIp, password: REDIS_PASSWORD });
    redisPort = redis.port;
    closers.push(() => redis.stop());
    const pg = await startPostgres();
    closers.push(() => pg.stop());
    const s3 = await startS3();
    closers.push(() => s3.close());
    // Pods reach these loopback-only test servers through ports on the host end of the node's veth.
    const pgFwd = await tcpForward(Number(new URL(pg.url).port), cp.node!.hostIp);
    closers.push(() => pgFwd.close());
    const s3Fwd = await tcpForward(Number(new URL(s3.endpoint).port), cp.node!.hostIp);
    closers.push(() => s3Fwd.close());
    const u = new URL(pg.url);
    u.hostname = cp.node!.hostIp;
    u.port = String(pgFwd.port);
    await localPv('dittofs-pgs-0');
    await apply(`apiVersion: v1
kind: Secret
metadata: { name: pgs-db }
stringData: { url: '${u.toString()}' }
---
apiVersion: v1
kind: Secret
metadata: { name: pgs-s3 }
stringData: { secret: ${s3.secretAccessKey} }
---
apiVersion: v1
kind: Secret
metadata: { name: pgs-redis }
stringData: { url: 'redis://${cp.node!.hostIp}:${redis.port}', password: ${REDIS_PASSWORD} }
---
apiVersion: dittofs.io/v1alpha1
kind: DittoFS
metadata: { name: pgs }
spec:
  replicas: 1
  imagePullPolicy: Never
  cache: { size: 1Gi, storageClassName: local }
  database: { type: postgres, postgres: { urlSecretRef: { name: pgs-db, key: url } } }
  coordination: { redis: { urlSecretRef: { name: pgs-redis, key: url }, passwordSecretRef: { name: pgs-redis, key: password } } }
  adapters: { smb: { enabled: true } }
---
apiVersion: dittofs.io/v1alpha1
kind: Store
metadata: { name: pgs-meta }
spec: { dittofs: pgs, kind: metadata, type: postgres, config: { schema: share_meta }, secretRefs: { url: { name: pgs-db, key: url } } }
---
apiVersion: dittofs.io/v1alpha1
kind: Store
metadata: { name: pgs-blocks }
spec:
  dittofs: pgs
  kind: block
  type: s3
  config:
    endpoint: 'http://${cp.node!.hostIp}:${s3Fwd.port}'
    region: ${s3.region}
    bucket: ${s3.bucket}
    prefix: '${s3.prefix}k8s/'
    force_path_style: true
    access_key_id: ${s3.accessKeyId}
  secretRefs: { secret_access_key: { name: pgs-s3, key: secret } }
---
apiVersion: dittofs.io/v1alpha1
kind: Share
metadata: { name: pgs-data }
spec: { dittofs: pgs, path: /data, metadataStore: pgs-meta, blockStore: pgs-blocks, defaultPermission: none, permissions: [{ group: writers, level: read-write }] }
---
apiVersion: dittofs.io/v1alpha1
kind: User
metadata: { name: pgs-bob }
spec: { dittofs: pgs, username: ${USER.name}, uid: ${USER.uid}, gid: ${USER.uid}, groups: [writers], passwordSecretRef: { name: bob-password, key: password } }
`);
    await waitFor('pod pgs-0 Ready', async () => (ready(await getJson<Pod>(['get', 'pod', 'pgs-0', '-n', ns])) ? true : undefined));
    for (const [kind, name] of PGS_MEMBERS) await syncedOn(kind, name, ['pgs-0']);
    const data = randomBytes(3 * 1024 * 1024).toString('base64');
    const w = await nfsPut('big.txt', USER.uid, data, 'pgs');
    assert.equal(w.code, 0, `nfs-cp to the postgres+s3 DittoFS: ${w.stderr}${w.stdout}`);
    assert.equal(await nfsGet('big.txt', USER.uid, 'pgs'), data);
    bigSha = sha256(data);
    const keys = await waitFor('blocks in the bucket', async () => {
      const k = await s3.listKeys('k8s/');
      return k.length > 0 ? k : undefined;
    });
    assert.ok(keys.length > 0);
    // The metadata is in PostgreSQL: the file is there after the pod is replaced (a new, empty volume would do).
    const old = await getJson<Pod>(['get', 'pod', 'pgs-0', '-n', ns]);
    await ok(['delete', 'pod', 'pgs-0', '-n', ns, `--timeout=${K8S_WAIT}`]);
    await waitFor('a new pod pgs-0 Ready', async () => {
      const p = await getJson<Pod>(['get', 'pod', 'pgs-0', '-n', ns]);
      return ready(p) && p!.metadata.uid !== old!.metadata.uid ? true : undefined;
    });
    assert.equal(await nfsGet('big.txt', USER.uid, 'pgs'), data);
  });

  it('replicas: 2 (PostgreSQL, S3, Redis): both pods Ready and Synced; a write through one pod reads back through the other; a deleted pod loses nothing; a permission change holds on both', async () => {
    assert.ok(bigSha !== undefined && redisPort !== undefined, 'the PostgreSQL + S3 DittoFS of the previous test');
    await localPv('dittofs-pgs-1');
    const pod0 = await getJson<Pod>(['get', 'pod', 'pgs-0', '-n', ns]);
    await ok(['patch', 'dittofs', 'pgs', '-n', ns, '--type=merge', '-p', '{"spec":{"replicas":2}}']);
    const podReady = (name: string, notUid?: string): Promise<Pod> =>
      waitFor(`pod ${name} Ready${notUid === undefined ? '' : ' (a new one)'}`, async () => {
        const p = await getJson<Pod>(['get', 'pod', name, '-n', ns]);
        return ready(p) && p!.metadata.uid !== notUid ? p : undefined;
      });
    const [p0, p1] = [await podReady('pgs-0'), await podReady('pgs-1')];
    assert.equal(p0.metadata.uid, pod0?.metadata.uid, 'scaling up does not roll pgs-0');
    assert.equal(p1.status?.phase, 'Running');
    for (const [kind, name] of PGS_MEMBERS) await syncedOn(kind, name, ['pgs-0', 'pgs-1']);
    await waitFor('kubectl get dittofs pgs to say 2 ready replicas, Running', async () => {
      const out = await ok(['get', 'dittofs', 'pgs', '-n', ns]);
      return /^pgs\s+True\s+2\s+Running\s/m.test(out) ? out : undefined;
    });

    // Through pod 0 by its IP, then at once through pod 1: nfs-cp closes (COMMIT) before the read.
    const at0 = { ip: p0.status!.podIP! };
    const at1 = { ip: p1.status.podIP! };
    const data = randomBytes(2 * 1024 * 1024).toString('base64');
    const r = await inClient(
      `cat > /tmp/rep && nfs-cp /tmp/rep '${await nfsUrl('rep.txt', USER.uid, at0)}' >/dev/null && ` +
        `rm -f /tmp/rep1 && nfs-cp '${await nfsUrl('rep.txt', USER.uid, at1)}' /tmp/rep1 >/dev/null && sha256sum < /tmp/rep1`,
      data,
    );
    assert.equal(r.code, 0, `write through pgs-0, read through pgs-1: ${r.stderr}${r.stdout}`);
    assert.equal(r.stdout.split(' ')[0], sha256(data), 'pgs-1 reads the bytes pgs-0 acknowledged');
    // The other way by SMB: smbclient writes through pod 1, NFS reads through pod 0.
    const put = await smb('put rep smb-rep.txt', `${USER.name}%${USER.password}`, at1);
    assert.equal(put.code, 0, `smbclient put through pgs-1: ${put.stderr}${put.stdout}`);
    assert.equal(await nfsSha('smb-rep.txt', USER.uid, at0), sha256(data), 'pgs-0 reads the bytes written by SMB through pgs-1');

    // One more write through pod 0, read by no other pod: acknowledged (nfs-cp closed it), maybe
    // only in pod 0's WAL. Then that pod goes away: its peer and the client Service serve every
    // committed byte.
    const last = randomBytes(1024 * 1024).toString('base64');
    const lw = await nfsPut('last.txt', USER.uid, last, at0);
    assert.equal(lw.code, 0, `nfs-cp through pgs-0: ${lw.stderr}`);
    await ok(['delete', 'pod', 'pgs-0', '-n', ns, `--timeout=${K8S_WAIT}`]);
    assert.equal(await nfsSha('rep.txt', USER.uid, at1), sha256(data), 'pgs-1 alone serves what pgs-0 acknowledged');
    assert.equal(await nfsSha('last.txt', USER.uid, at1), sha256(last), 'pgs-1 alone serves the last write pgs-0 acknowledged');
    for (const [file, sha] of [
      ['last.txt', sha256(last)],
      ['rep.txt', sha256(data)],
      ['smb-rep.txt', sha256(data)],
      ['big.txt', bigSha],
    ] as const) {
      // A client whose pod went away reconnects (the Service's endpoints follow the pods): retried until it reads.
      const got = await waitFor(`${file} through the client Service`, () => nfsSha(file, USER.uid, 'pgs'));
      assert.equal(got, sha, `${file} read through the client Service after pgs-0 was deleted`);
    }
    const back = await podReady('pgs-0', p0.metadata.uid);
    assert.equal(back.spec.volumes?.find((v) => v.persistentVolumeClaim)?.persistentVolumeClaim?.claimName, 'data-pgs-0');
    await waitFor('kubectl get dittofs pgs to say 2 ready replicas again', async () => {
      const out = await ok(['get', 'dittofs', 'pgs', '-n', ns]);
      return /^pgs\s+True\s+2\s+Running\s/m.test(out) ? out : undefined;
    });
    const before = await syncedOn('shares.dittofs.io', 'pgs-data', ['pgs-0', 'pgs-1']);
    const atNew0 = { ip: back.status!.podIP! };
    assert.equal(await nfsSha('rep.txt', USER.uid, atNew0), sha256(data), 'the new pgs-0 serves the data');

    // A permission change through the operator: writers become read-only; once Synced, both pods refuse bob's writes.
    for (const to of [atNew0, at1]) {
      const w = await nfsPut(`perm-${to.ip}.txt`, USER.uid, 'allowed\n', to);
      assert.equal(w.code, 0, `bob writes through ${to.ip} before the change: ${w.stderr}`);
    }
    await ok([
      'patch',
      'shares.dittofs.io',
      'pgs-data',
      '-n',
      ns,
      '--type=merge',
      '-p',
      '{"spec":{"permissions":[{"group":"writers","level":"read"}]}}',
    ]);
    const after = await syncedOn('shares.dittofs.io', 'pgs-data', ['pgs-0', 'pgs-1']);
    assert.ok(after > before, `a new control-plane generation (${before} -> ${after})`);
    for (const to of [atNew0, at1]) {
      const w = await nfsPut(`perm-${to.ip}.txt`, USER.uid, 'refused\n', to);
      assert.notEqual(w.code, 0, `bob is read-only through ${to.ip} once the change is Synced`);
      assert.equal(
        await nfsGet(`perm-${to.ip}.txt`, USER.uid, to),
        'allowed\n',
        `the file written before is unchanged and readable through ${to.ip}`,
      );
      assert.equal(await nfsSha('rep.txt', USER.uid, to), sha256(data));
    }
  });

  it('the operator emits Events for what it does', async () => {
    const out = await waitFor('events from the operator', async () => {
      const r = await ok([
        'get',
        'events',
        '-n',
        ns,
        '--field-selector',
        'involvedObject.kind=DittoFS',
        '-o',
        'jsonpath={range .items[*]}{.reason} {.source.component}{.reportingComponent}{"\\n"}{end}',
      ]);
      return /dittofs-operator/.test(r) ? r : undefined;
    });
    assert.match(out, /dittofs-operator/);
  });

  it('teardown leaves no process, mount, link, route, iptables rule, cgroup or netns file of the node, and no Redis', async () => {
    const node = cp.node!;
    await cp.stop(); // runs `node.sh down`, which fails if its own check finds anything left
    // Then the servers its pods used: the forwarders, S3, PostgreSQL, Redis.
    for (const c of closers.splice(0).reverse()) await c();
    const link = await runProcess('ip', ['link', 'show', node.hostIf]);
    assert.notEqual(link.code, 0, `the veth ${node.hostIf} is still there`);
    const routes = await runProcess('ip', ['route', 'show']);
    assert.doesNotMatch(routes.stdout, new RegExp(node.hostIp.replace(/\.\d+$/, '').replace(/\./g, '\\.')));
    const ps = await runProcess('ps', ['-eo', 'pid,args']);
    assert.doesNotMatch(ps.stdout, new RegExp(node.dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), 'a process of the node is left');
    // redis-server names itself by its address in the process list.
    if (redisPort !== undefined)
      assert.doesNotMatch(ps.stdout, new RegExp(`redis-server \\S*:${redisPort}\\b`), 'the Redis of the replicas is left');
    assert.doesNotMatch(await readFile('/proc/self/mountinfo', 'utf8'), new RegExp(node.dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
    const ipt = await runProcess('iptables-save', []);
    assert.doesNotMatch(ipt.stdout, new RegExp(node.nodeIp.replace(/\./g, '\\.')));
    // Pods' network namespaces were pinned in the node's own /run/netns, not the host's.
    const left = (await hostNetns()).filter((n) => !netnsBefore.includes(n));
    assert.deepEqual(left, [], 'network namespace files of the pods are left in the host /run/netns');
  });
});
