// The operator against a real Kubernetes control plane (test/helpers/k8s.ts: etcd, kube-apiserver,
// kube-controller-manager; no kubelet) and a real DittoFS server process. The operator runs
// in-process (and once through its launcher) with a service-account token bound to exactly the
// RBAC rules of operator/src/rbac.ts.
//
// - A DittoFS becomes a StatefulSet, two Services and three Secrets with the expected specs, owned
//   by it; the rendered config passes the server's own `config validate`; status says Pending (no
//   kubelet runs, so no pod ever starts); a spec change or a new PostgreSQL URL rolls the config
//   hash; the generated passwords survive reconciles.
// - No pod runs, so the "pod" is a real server process on loopback, reached through the
//   annotation seam (pod address mode `annotation`, DittoFS annotation dittofs.io/test-endpoint;
//   see operator/README.md), started with the admin Secret's initial-password as a pod would be.
//   Stores, a Share and Users become Synced, and a real NFS client (libnfs nfs-cp) writes and reads
//   the share as a user's uid.
// - replicas > 1 with PostgreSQL and Redis is a StatefulSet of that many pods with coordination.redis
//   rendered (without them, one pod and Ready=False); two real servers on one PostgreSQL and one
//   Redis play two pods, and a Share is Synced once both report the same generation.
// - Watches survive dropped connections and a forgotten resource version (410 Gone: relist)
//   without missing the changes made meanwhile; a second operator waits on the Lease and takes over
//   when the first stops, logging in with the password the first one set; a leader whose Lease is
//   taken stops leading within its renew deadline.
// - Nothing is removed from the server by mistake (a vanished password Secret keeps the user); a
//   refused item marks only its resource; a server that lost its database is set up again.
// - A Store in use is kept (InUse); a deleted Share stops being served and its object goes away;
//   deleting the DittoFS garbage-collects its children.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { K8S_WAIT, pollUntil, startKubeControlPlane, type KubeControlPlane } from '../helpers/k8s.js';
import { COMMAND_TIMEOUT_MS, READY_TIMEOUT_MS, SUITE_TIMEOUT_MS } from '../helpers/limits.js';
import { freePort, REPO_ROOT, startDittofs, type DittofsProcess } from '../helpers/server.js';
import { DittofsOperator } from '../../operator/src/operator.js';
import { createLogger } from '../../operator/src/log.js';
import { DittofsApiClient } from '../../operator/src/dittofs-api/client.js';
import type { OperatorConfig } from '../../operator/src/config.js';
import { OPERATOR_RBAC_RULES } from '../../operator/src/rbac.js';
import { KubeClient } from '../../operator/src/kube/client.js';
import { LeaderElector } from '../../operator/src/runtime/leader.js';
import { dumpYaml, KubeConfig, loadYaml } from '@kubernetes/client-node';
import { runProcess, type Run } from '../helpers/run.js';
import { postgresForTests } from '../helpers/postgres.js';
import { startRedis } from '../helpers/redis.js';

interface Obj {
  metadata: {
    name: string;
    uid: string;
    generation?: number;
    finalizers?: string[];
    annotations?: Record<string, string>;
    labels?: Record<string, string>;
    ownerReferences?: { kind: string; name: string; uid: string; controller?: boolean }[];
  };
  spec?: Record<string, unknown>;
  status?: {
    observedGeneration?: number;
    phase?: string;
    conditions?: { type: string; status: string; reason?: string; message?: string; observedGeneration?: number }[];
    pods?: { name: string; generation?: number }[];
    usedBy?: string[];
    configHash?: string;
  };
  data?: Record<string, string>;
}

let cp: KubeControlPlane;
let tmp: string;
/** A kubeconfig with the operator's service-account token: only OPERATOR_RBAC_RULES are allowed. */
let operatorKubeconfig: string;
const ns = `dittofs-op-${randomBytes(3).toString('hex')}`;
const logLines: string[] = [];

const run = (file: string, args: string[], input = '', timeoutMs = COMMAND_TIMEOUT_MS): Promise<Run> =>
  runProcess(file, args, { env: cp.env, input, timeoutMs });
const kubectl = (args: string[], input = ''): Promise<Run> => run(cp.kubectl, ['--kubeconfig', cp.kubeconfig, ...args], input);

async function ok(args: string[], input = ''): Promise<string> {
  const r = await kubectl(args, input);
  assert.equal(r.code, 0, `kubectl ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

const apply = (yaml: string): Promise<string> => ok(['apply', '-n', ns, '-f', '-'], yaml);

async function get(kind: string, name: string): Promise<Obj | undefined> {
  const r = await kubectl(['get', kind, name, '-n', ns, '-o', 'json']);
  if (r.code !== 0) {
    if (/NotFound/.test(r.stderr)) return undefined;
    assert.fail(`kubectl get ${kind} ${name}: ${r.stderr}`);
  }
  return JSON.parse(r.stdout) as Obj;
}

async function mustGet(kind: string, name: string): Promise<Obj> {
  const o = await get(kind, name);
  assert.ok(o, `${kind} ${name} does not exist`);
  return o;
}

/** Polls `probe` until it returns something other than undefined; fails with the last state and the operator log. */
function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = READY_TIMEOUT_MS): Promise<T> {
  return pollUntil(what, probe, {
    timeoutMs,
    intervalMs: 250,
    context: () => `--- operator log (tail) ---\n${logLines.slice(-40).join('')}`,
  });
}

const condition = (o: Obj | undefined, type: string) => o?.status?.conditions?.find((c) => c.type === type);

/** Waits until the resource's condition has this status (and reason, if given) for its current generation. */
function waitCondition(kind: string, name: string, type: string, status: string, reason?: string, timeoutMs?: number): Promise<Obj> {
  return waitFor(
    `${kind} ${name} ${type}=${status}${reason === undefined ? '' : ` (${reason})`}`,
    async () => {
      const o = await get(kind, name);
      const c = condition(o, type);
      const current = o?.status?.observedGeneration === o?.metadata.generation;
      return c?.status === status && (reason === undefined || c.reason === reason) && current ? o : undefined;
    },
    timeoutMs,
  );
}

const decode = (o: Obj, key: string): string => Buffer.from(o.data?.[key] ?? '', 'base64').toString('utf8');

function operatorConfig(identity: string): OperatorConfig {
  return {
    kubeconfig: operatorKubeconfig,
    namespaces: [ns],
    logLevel: 'debug',
    leaderElection: { enabled: true, leaseName: 'dittofs-operator-test', leaseNamespace: ns, identity },
    podAddressMode: 'annotation',
    resyncMs: 20_000,
    defaultImage: 'dittofs/server:test',
    clusterDomain: 'cluster.local',
    concurrency: 2,
    healthPort: 0,
  };
}

async function startOperator(identity: string): Promise<DittofsOperator> {
  const log = createLogger({ level: 'debug', write: (l) => logLines.push(l), fields: { op: identity } });
  const op = new DittofsOperator(operatorConfig(identity), { log });
  await op.start();
  return op;
}

function tool(cmd: string, args: string[], timeoutMs = COMMAND_TIMEOUT_MS): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string }) | null;
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : -1) : 0, stdout, stderr });
    });
  });
}

/**
 * The operator's identity: a service account bound to a Role with exactly OPERATOR_RBAC_RULES in
 * the test namespace, and a kubeconfig with its token. Any call the rules miss fails the tests.
 */
async function restrictedKubeconfig(): Promise<string> {
  const rules = OPERATOR_RBAC_RULES.map(
    (r) => `- apiGroups: ${JSON.stringify(r.apiGroups)}\n  resources: ${JSON.stringify(r.resources)}\n  verbs: ${JSON.stringify(r.verbs)}`,
  ).join('\n');
  await apply(`apiVersion: v1
kind: ServiceAccount
metadata: { name: dittofs-operator }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: dittofs-operator }
rules:
${rules}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: dittofs-operator }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: dittofs-operator }
subjects: [{ kind: ServiceAccount, name: dittofs-operator, namespace: ${ns} }]
`);
  const token = (await ok(['create', 'token', 'dittofs-operator', '-n', ns, '--duration=1h'])).trim();
  const admin = new KubeConfig();
  admin.loadFromFile(cp.kubeconfig);
  const cluster = admin.getCurrentCluster()!;
  const file = path.join(tmp, 'operator.kubeconfig');
  await writeFile(
    file,
    `apiVersion: v1
kind: Config
clusters: [{ name: c, cluster: { server: '${cluster.server}', ${cluster.caData === undefined ? 'insecure-skip-tls-verify: true' : `certificate-authority-data: ${cluster.caData}`} } }]
users: [{ name: dittofs-operator, user: { token: ${token} } }]
contexts: [{ name: op, context: { cluster: c, user: dittofs-operator, namespace: ${ns} } }]
current-context: op
`,
    { mode: 0o600 },
  );
  return file;
}

/** The rendered config passes the real server's own check (`dittofs config validate`). */
async function serverAccepts(yaml: string): Promise<void> {
  const file = path.join(tmp, `config-${randomBytes(4).toString('hex')}.yaml`);
  await writeFile(file, yaml);
  const r = await tool(process.execPath, [
    path.join(REPO_ROOT, 'server', 'dist', 'cli', 'dittofs.js'),
    'config',
    'validate',
    '--config',
    file,
  ]);
  assert.equal(r.code, 0, `dittofs config validate refused the rendered config:\n${r.stderr}${r.stdout}\n${yaml}`);
}

describe('the operator on a real kube-apiserver', { timeout: SUITE_TIMEOUT_MS }, () => {
  let op: DittofsOperator | undefined;
  let op2: DittofsOperator | undefined;
  let srv: DittofsProcess | undefined;

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'dittofs-operator-test-'));
    cp = await startKubeControlPlane();
    await ok(['apply', '-f', path.join(REPO_ROOT, 'crds')]);
    for (const crd of ['dittofses', 'stores', 'shares', 'users'])
      await ok(['wait', '--for=condition=Established', `--timeout=${K8S_WAIT}`, `crd/${crd}.dittofs.io`]);
    await ok(['create', 'namespace', ns]);
    operatorKubeconfig = await restrictedKubeconfig();
    op = await startOperator('op-a');
  });

  after(async () => {
    await op2?.shutdown();
    await op?.shutdown();
    await srv?.stop();
    if (cp?.external) await kubectl(['delete', 'namespace', ns, '--wait=false']);
    await cp?.stop();
    await rm(tmp, { recursive: true, force: true });
    if (process.env.DITTOFS_TEST_OPERATOR_LOG === '1') process.stderr.write(logLines.join(''));
  });

  it('leads (the only candidate for the Lease)', async () => {
    await waitFor('leadership', async () => (op!.isLeader ? true : undefined));
    const lease = await mustGet('lease', 'dittofs-operator-test');
    assert.equal((lease.spec as { holderIdentity?: string }).holderIdentity, 'op-a');
  });

  it('the schema refuses a DittoFS name that cannot name its StatefulSet and Services', async () => {
    for (const name of ['x'.repeat(53), '1st']) {
      const r = await kubectl(
        ['apply', '-n', ns, '-f', '-'],
        `apiVersion: dittofs.io/v1alpha1\nkind: DittoFS\nmetadata: { name: '${name}' }\nspec: {}\n`,
      );
      assert.notEqual(r.code, 0, name);
      assert.match(r.stderr, /metadata.name must be a DNS label of at most 52 characters/);
    }
  });

  it('a DittoFS becomes a StatefulSet, Services and Secrets, all owned by it', async () => {
    await apply(`apiVersion: dittofs.io/v1alpha1
kind: DittoFS
metadata: { name: main }
spec:
  replicas: 1
  logLevel: info
  cache: { size: 1Gi }
  service: { type: NodePort, annotations: { example.com/team: storage } }
  resources: { requests: { cpu: 100m, memory: 128Mi } }
`);
    const dfs = await mustGet('dittofs', 'main');
    const sts = await waitFor('the StatefulSet', () => get('statefulset', 'main'));
    const spec = sts.spec as {
      replicas: number;
      serviceName: string;
      template: {
        metadata: { annotations: Record<string, string> };
        spec: {
          containers: {
            image: string;
            env: { name: string }[];
            ports: { name: string; containerPort: number }[];
            livenessProbe: { httpGet: { path: string } };
            readinessProbe: { httpGet: { path: string } };
            securityContext: {
              runAsNonRoot: boolean;
              runAsUser: number;
              readOnlyRootFilesystem: boolean;
              capabilities: { drop: string[] };
            };
            resources: { requests: Record<string, string> };
          }[];
        };
      };
      volumeClaimTemplates: { metadata: { name: string }; spec: { resources: { requests: { storage: string } } } }[];
    };
    assert.equal(spec.replicas, 1);
    assert.equal(spec.serviceName, 'main-headless');
    const c = spec.template.spec.containers[0]!;
    assert.equal(c.image, 'dittofs/server:test');
    assert.deepEqual(
      c.env.map((e) => e.name),
      ['DITTOFS_CONFIG', 'DITTOFS_DATA_DIR', 'DITTOFS_JWT_SECRET', 'DITTOFS_ADMIN_INITIAL_PASSWORD'],
    );
    assert.deepEqual(
      c.ports.map((p) => `${p.name}:${p.containerPort}`),
      ['nfs:12049', 'api:8080', 'metrics:9090'],
    );
    assert.equal(c.livenessProbe.httpGet.path, '/health');
    assert.equal(c.readinessProbe.httpGet.path, '/health/ready');
    assert.equal(c.securityContext.runAsNonRoot, true);
    assert.equal(c.securityContext.runAsUser, 10001);
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
    assert.deepEqual(c.resources.requests, { cpu: '100m', memory: '128Mi' });
    assert.equal(spec.volumeClaimTemplates[0]!.metadata.name, 'data');
    assert.equal(spec.volumeClaimTemplates[0]!.spec.resources.requests.storage, '1Gi');
    assert.match(spec.template.metadata.annotations['dittofs.io/config-hash'] ?? '', /^[0-9a-f]{64}$/);

    const headless = await mustGet('service', 'main-headless');
    assert.equal((headless.spec as { clusterIP: string }).clusterIP, 'None');
    const client = await mustGet('service', 'main');
    assert.equal((client.spec as { type: string }).type, 'NodePort');
    assert.deepEqual(
      (client.spec as { ports: { name: string; port: number }[] }).ports.map((p) => `${p.name}:${p.port}`),
      ['nfs:12049', 'api:8080'],
    );
    assert.equal(client.metadata.annotations?.['example.com/team'], 'storage');

    const config = await mustGet('secret', 'main-config');
    assert.match(decode(config, 'config.yaml'), /level: info/);
    await serverAccepts(decode(config, 'config.yaml'));
    const admin = await mustGet('secret', 'main-admin');
    assert.equal(decode(admin, 'username'), 'admin');
    assert.ok(decode(admin, 'password').length >= 32 && decode(admin, 'initial-password').length >= 32);
    assert.ok(decode(await mustGet('secret', 'main-jwt'), 'jwt-secret').length >= 32);

    for (const child of [sts, headless, client, config]) {
      assert.deepEqual(
        child.metadata.ownerReferences?.map((o) => [o.kind, o.name, o.uid, o.controller]),
        [['DittoFS', 'main', dfs.metadata.uid, true]],
        `${child.metadata.name} is owned by the DittoFS`,
      );
    }
    // The credentials the data knows outlive the DittoFS, as its PVCs do.
    for (const kept of [admin, await mustGet('secret', 'main-jwt')]) {
      assert.equal(kept.metadata.ownerReferences, undefined, `${kept.metadata.name} has no owner`);
      assert.equal(kept.metadata.labels?.['app.kubernetes.io/instance'], 'main');
    }
  });

  it('status: Pending with Ready=False (no kubelet runs: pods never start), Synced=True', async () => {
    const dfs = await waitCondition('dittofs', 'main', 'Synced', 'True', 'ChildrenApplied');
    assert.equal(dfs.status?.phase, 'Pending');
    const ready = condition(dfs, 'Ready');
    assert.equal(ready?.status, 'False');
    assert.equal(ready?.reason, 'PodsPending');
    assert.match(ready?.message ?? '', /0\/1 pods ready/);
    assert.equal(condition(dfs, 'Degraded')?.status, 'False');
    assert.match(dfs.status?.configHash ?? '', /^[0-9a-f]{64}$/);
    const out = await ok(['get', 'dfs', 'main', '-n', ns]);
    assert.match(out, /^main\s+False\s+0\s+Pending\s/m);
    // The StatefulSet controller made the pod and its WAL claim; nothing runs them here.
    const pod = await waitFor('pod main-0', () => get('pod', 'main-0'));
    assert.equal(pod.status?.phase, 'Pending');
    assert.equal(pod.metadata.annotations?.['dittofs.io/config-hash'], dfs.status?.configHash);
    const pvc = await waitFor('claim data-main-0', () => get('pvc', 'data-main-0'));
    assert.equal((pvc.spec as { resources: { requests: { storage: string } } }).resources.requests.storage, '1Gi');
  });

  it('a spec change rolls the config hash; generated passwords stay as they are', async () => {
    const before = await mustGet('statefulset', 'main');
    const hashOf = (o: Obj) =>
      (o.spec as { template: { metadata: { annotations: Record<string, string> } } }).template.metadata.annotations[
        'dittofs.io/config-hash'
      ];
    const admin = await mustGet('secret', 'main-admin');
    await ok(['patch', 'dittofs', 'main', '-n', ns, '--type=merge', '-p', '{"spec":{"logLevel":"debug"}}']);
    const after = await waitFor('a new config hash', async () => {
      const s = await get('statefulset', 'main');
      return s !== undefined && hashOf(s) !== hashOf(before) ? s : undefined;
    });
    assert.match(decode(await mustGet('secret', 'main-config'), 'config.yaml'), /level: debug/);
    const dfs = await waitCondition('dittofs', 'main', 'Synced', 'True');
    assert.equal(dfs.status?.configHash, hashOf(after));
    const adminAfter = await mustGet('secret', 'main-admin');
    assert.deepEqual(adminAfter.data, admin.data, 'the admin credential is never regenerated');
  });

  it('a PostgreSQL DittoFS waits for its URL Secret; the URL goes into the config Secret, and a new URL rolls the pods', async () => {
    await apply(`apiVersion: dittofs.io/v1alpha1
kind: DittoFS
metadata: { name: pg }
spec:
  database: { type: postgres, postgres: { urlSecretRef: { name: pg-url, key: url }, schema: dittofs } }
`);
    const waiting = await waitCondition('dittofs', 'pg', 'Synced', 'False', 'SecretNotFound');
    assert.equal(waiting.status?.phase, 'Failed');
    assert.equal(await get('statefulset', 'pg'), undefined, 'nothing to run without its database');
    const setUrl = (url: string) => apply(`apiVersion: v1\nkind: Secret\nmetadata: { name: pg-url }\nstringData: { url: '${url}' }\n`);
    await setUrl('postgres://dittofs:one@db:5432/dittofs');
    const first = await waitCondition('dittofs', 'pg', 'Synced', 'True', 'ChildrenApplied');
    const pgConfig = decode(await mustGet('secret', 'pg-config'), 'config.yaml');
    assert.match(pgConfig, /url: postgres:\/\/dittofs:one@db:5432\/dittofs/);
    await serverAccepts(pgConfig);
    await setUrl('postgres://dittofs:two@db:5432/dittofs');
    await waitFor('a new config hash after the URL changed', async () => {
      const d = await get('dittofs', 'pg');
      return d?.status?.configHash !== undefined && d.status.configHash !== first.status?.configHash ? d : undefined;
    });
    await ok(['delete', 'dittofs', 'pg', '-n', ns]);
  });

  it('replicas > 1 with PostgreSQL and Redis: a StatefulSet of that many pods whose config carries coordination.redis; without them one pod, Ready=False says why (even with the CRD rule bypassed)', async () => {
    const replicasOf = async (name: string): Promise<number | undefined> =>
      ((await get('statefulset', name))?.spec as { replicas?: number } | undefined)?.replicas;
    await apply(`apiVersion: v1
kind: Secret
metadata: { name: many-urls }
stringData: { pg: 'postgres://dittofs:pw@db:5432/dittofs', redis: 'redis://redis:6379/0' }
---
apiVersion: dittofs.io/v1alpha1
kind: DittoFS
metadata: { name: many }
spec:
  replicas: 3
  database: { type: postgres, postgres: { urlSecretRef: { name: many-urls, key: pg } } }
  coordination: { redis: { urlSecretRef: { name: many-urls, key: redis } } }
`);
    const many = await waitCondition('dittofs', 'many', 'Synced', 'True', 'ChildrenApplied');
    await waitFor('a StatefulSet of three', async () => ((await replicasOf('many')) === 3 ? true : undefined));
    // No kubelet: no pod starts, and Ready counts against the three asked for.
    const pending = await waitCondition('dittofs', 'many', 'Ready', 'False', 'PodsPending');
    assert.match(condition(pending, 'Ready')?.message ?? '', /^0\/3 pods ready$/);
    assert.equal(condition(many, 'Degraded')?.status, 'False');
    const rendered = decode(await mustGet('secret', 'many-config'), 'config.yaml');
    assert.match(rendered, new RegExp(`^coordination:\\n  redis:\\n    key_prefix: ${ns}/many/\\n    tls: false$`, 'm'));
    assert.doesNotMatch(rendered, /redis:\/\//, 'the Redis URL reaches the pods from its Secret, never in the file');
    await serverAccepts(rendered);
    const env = (
      (await mustGet('statefulset', 'many')).spec as {
        template: { spec: { containers: { env: { name: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[] }[] } };
      }
    ).template.spec.containers[0]!.env;
    assert.deepEqual(env.find((e) => e.name === 'DITTOFS_COORDINATION__REDIS__URL')?.valueFrom, {
      secretKeyRef: { name: 'many-urls', key: 'redis' },
    });

    // Without them the CRD refuses it; with its rule removed (an older CRD, a hand edit), the
    // operator still runs one pod.
    const rulePath = '/spec/versions/0/schema/openAPIV3Schema/properties/spec/x-kubernetes-validations';
    await ok(['patch', 'crd', 'dittofses.dittofs.io', '--type=json', '-p', JSON.stringify([{ op: 'remove', path: rulePath }])]);
    try {
      const embedded = `apiVersion: dittofs.io/v1alpha1\nkind: DittoFS\nmetadata: { name: bypass }\nspec: { replicas: 3 }\n`;
      await waitFor('the DittoFS accepted without the CRD rule', async () =>
        (await kubectl(['apply', '-n', ns, '-f', '-'], embedded)).code === 0 ? true : undefined,
      );
      const bypass = await waitCondition('dittofs', 'bypass', 'Ready', 'False', 'CoordinationRequired');
      assert.match(condition(bypass, 'Ready')?.message ?? '', /replicas 3 > 1 requires database\.type postgres and coordination\.redis/);
      assert.equal(await replicasOf('bypass'), 1);
      // And a StatefulSet scaled past one by hand is brought back to one.
      await ok(['scale', 'statefulset', 'bypass', '-n', ns, '--replicas=3']);
      await ok(['annotate', 'dittofs', 'bypass', '-n', ns, '--overwrite', 'test/poke=1']);
      await waitFor('the StatefulSet back at one pod', async () => ((await replicasOf('bypass')) === 1 ? true : undefined));
    } finally {
      await ok(['apply', '-f', path.join(REPO_ROOT, 'crds', 'dittofs.io_dittofses.yaml')]);
    }
    await ok(['delete', 'dittofs', 'many', 'bypass', '-n', ns]);
  });

  it('two coordinated pods (two real servers on one PostgreSQL and one Redis): a Share is Synced once both applied the same generation', async () => {
    const [pg, redis] = await Promise.all([postgresForTests(), startRedis()]);
    const pods: DittofsProcess[] = [];
    try {
      await apply(`apiVersion: v1
kind: Secret
metadata: { name: duo-urls }
stringData: { pg: '${pg.url}', redis: '${redis.url}' }
---
apiVersion: dittofs.io/v1alpha1
kind: DittoFS
metadata: { name: duo }
spec:
  replicas: 2
  database: { type: postgres, postgres: { urlSecretRef: { name: duo-urls, key: pg } } }
  coordination: { redis: { urlSecretRef: { name: duo-urls, key: redis } } }
`);
      await waitFor('a StatefulSet of two', async () =>
        ((await get('statefulset', 'duo'))?.spec as { replicas?: number } | undefined)?.replicas === 2 ? true : undefined,
      );
      // The "pods": what the StatefulSet's pods run, on loopback: the rendered config, with the URLs
      // the pods would get from the Secret as environment variables.
      const rendered = decode(await mustGet('secret', 'duo-config'), 'config.yaml');
      const local = loadYaml<{
        data_dir?: string;
        cache?: unknown;
        adapters: Record<string, { bind: string }>;
        server: { api: { bind: string } };
        metrics: { bind: string };
      }>(rendered);
      // Paths of the pod's volume and its wildcard binds: a temp dir and loopback here (ports from
      // startDittofs's environment, which beats the file).
      delete local.data_dir;
      delete local.cache;
      for (const a of Object.values(local.adapters)) a.bind = '127.0.0.1';
      local.server.api.bind = '127.0.0.1';
      local.metrics.bind = '127.0.0.1';
      const configFile = path.join(tmp, 'duo.yaml');
      await writeFile(configFile, dumpYaml(local));
      const admin = await mustGet('secret', 'duo-admin');
      const env = {
        DITTOFS_ADMIN_INITIAL_PASSWORD: decode(admin, 'initial-password'),
        DITTOFS_COORDINATION__REDIS__URL: redis.url,
      };
      // One after the other: the first creates the control database's schema.
      for (let i = 0; i < 2; i++) pods.push(await startDittofs({ configFile, env }));
      await apply(`apiVersion: dittofs.io/v1alpha1
kind: Store
metadata: { name: duo-meta }
spec: { dittofs: duo, kind: metadata, type: memory }
---
apiVersion: dittofs.io/v1alpha1
kind: Store
metadata: { name: duo-blocks }
spec: { dittofs: duo, kind: block, type: memory, config: { block_size: 1048576 } }
---
apiVersion: dittofs.io/v1alpha1
kind: Share
metadata: { name: duo-data }
spec: { dittofs: duo, path: /duo, metadataStore: duo-meta, blockStore: duo-blocks, defaultPermission: read-write }
`);
      await ok([
        'annotate',
        'dittofs',
        'duo',
        '-n',
        ns,
        `dittofs.io/test-endpoint=${pods.map((p) => `http://127.0.0.1:${p.apiPort}`).join(',')}`,
      ]);
      const share = await waitCondition('shares.dittofs.io', 'duo-data', 'Synced', 'True', 'Applied');
      const reported = share.status?.pods ?? [];
      assert.deepEqual(
        reported.map((p) => p.name),
        ['duo-0', 'duo-1'],
      );
      const g = reported[0]!.generation ?? 0;
      assert.ok(g > 0 && reported[1]!.generation === g, `both pods on one generation: ${JSON.stringify(reported)}`);
      assert.match(condition(share, 'Synced')?.message ?? '', new RegExp(`^applied by 2 ready pods: duo-0@${g}, duo-1@${g}$`));
      // And each server says so itself: the share is in its state, at (at least) that generation.
      for (const p of pods) {
        const base = `http://127.0.0.1:${p.apiPort}`;
        const login = await fetch(`${base}/api/v1/auth/login`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ username: 'admin', password: decode(admin, 'password') }),
        });
        assert.equal(login.status, 200, 'the operator set the admin password once, for both servers');
        const token = ((await login.json()) as { access_token: string }).access_token;
        const st = await fetch(`${base}/api/v1/state`, { headers: { authorization: `Bearer ${token}` } });
        assert.equal(st.status, 200);
        const applied = Number(st.headers.get('dittofs-applied-generation'));
        assert.ok(applied >= g, `${base} applied ${applied}`);
        // What the operator asks a pod that answered behind the others (converge.ts).
        const creds = { username: 'admin', password: decode(admin, 'password') };
        assert.equal(await new DittofsApiClient({ log: createLogger({ level: 'silent' }) }).appliedGeneration(base, creds), applied);
        const body = (await st.json()) as { shares: { name: string }[] };
        assert.deepEqual(
          body.shares.map((x) => x.name),
          ['/duo'],
        );
      }
    } finally {
      await kubectl(['delete', 'shares.dittofs.io', 'duo-data', '-n', ns, '--wait=false']);
      await kubectl(['delete', 'stores.dittofs.io', 'duo-meta', 'duo-blocks', '-n', ns, '--wait=false']);
      for (const p of pods) await p.stop();
      await kubectl(['delete', 'dittofs', 'duo', '-n', ns, '--wait=false']);
      await Promise.all([redis.stop(), pg.stop()]);
    }
  });

  // ---- the seam: a real server process plays pod main-0

  const nfsUrl = (file: string, uid: number, share = '/data'): string =>
    `nfs://127.0.0.1${share}/${file}?nfsport=${srv!.nfsPort}&mountport=${srv!.nfsPort}&uid=${uid}&gid=${uid}`;

  async function nfsPut(file: string, uid: number, content: string, share?: string): Promise<Run> {
    const src = path.join(tmp, `src-${randomBytes(4).toString('hex')}`);
    await writeFile(src, content);
    return tool('nfs-cp', [src, nfsUrl(file, uid, share)]);
  }

  async function nfsGet(file: string, uid: number): Promise<string | undefined> {
    const out = path.join(tmp, `out-${randomBytes(4).toString('hex')}`);
    const r = await tool('nfs-cp', [nfsUrl(file, uid), out]);
    return r.code === 0 ? readFile(out, 'utf8') : undefined;
  }

  it('Store, Share and User reach the server: Synced once it applied them; nfs-cp works as the user', async () => {
    const admin = await mustGet('secret', 'main-admin');
    // The "pod": started with the Secret's initial password, as the StatefulSet's pods are.
    srv = await startDittofs({ env: { DITTOFS_ADMIN_INITIAL_PASSWORD: decode(admin, 'initial-password') } });
    // Out of order on purpose: the Share before its Stores, the User before its password Secret.
    await apply(`apiVersion: dittofs.io/v1alpha1
kind: Share
metadata: { name: data }
spec:
  dittofs: main
  path: /data
  metadataStore: meta
  blockStore: blocks
  defaultPermission: none
  permissions: [{ group: writers, level: read-write }]
---
apiVersion: dittofs.io/v1alpha1
kind: User
metadata: { name: alice }
spec: { dittofs: main, username: alice, uid: 4001, gid: 4001, groups: [writers], passwordSecretRef: { name: alice-password, key: password } }
`);
    const share = await waitCondition('shares.dittofs.io', 'data', 'Synced', 'False', 'StoreNotFound');
    assert.ok(share.metadata.finalizers?.includes('dittofs.io/server-cleanup'), 'the finalizer is added');
    await waitCondition('users.dittofs.io', 'alice', 'Synced', 'False', 'SecretNotFound');
    await apply(`apiVersion: dittofs.io/v1alpha1
kind: Store
metadata: { name: meta }
spec: { dittofs: main, kind: metadata, type: memory }
---
apiVersion: dittofs.io/v1alpha1
kind: Store
metadata: { name: blocks }
spec: { dittofs: main, kind: block, type: memory, config: { block_size: 1048576 } }
---
apiVersion: v1
kind: Secret
metadata: { name: alice-password }
stringData: { password: alice-secret-pw }
`);
    // No pod address yet: everything valid waits for a ready pod.
    await waitCondition('stores.dittofs.io', 'meta', 'Synced', 'False', 'NoReadyPods');
    await ok(['annotate', 'dittofs', 'main', '-n', ns, `dittofs.io/test-endpoint=http://127.0.0.1:${srv.apiPort}`]);
    for (const [kind, name] of [
      ['stores.dittofs.io', 'meta'],
      ['stores.dittofs.io', 'blocks'],
      ['users.dittofs.io', 'alice'],
      ['shares.dittofs.io', 'data'],
    ] as const) {
      const o = await waitCondition(kind, name, 'Synced', 'True', 'Applied');
      assert.equal(o.status?.pods?.[0]?.name, 'main-0');
      assert.ok((o.status?.pods?.[0]?.generation ?? 0) > 0);
    }
    assert.deepEqual((await mustGet('stores.dittofs.io', 'blocks')).status?.usedBy, ['data']);
    assert.match(await ok(['get', 'shares.dittofs.io', '-n', ns]), /^data\s+main\s+\/data\s+True\s/m);

    const w = await nfsPut('hello.txt', 4001, 'written through the operator\n');
    assert.equal(w.code, 0, `nfs-cp as alice: ${w.stderr}`);
    assert.equal(await nfsGet('hello.txt', 4001), 'written through the operator\n');
    const stranger = await nfsPut('nope.txt', 4999, 'x');
    assert.notEqual(stranger.code, 0, 'an unknown uid gets the default permission none');

    // The operator's admin now logs in with the Secret's password (the initial one was changed).
    const login = async (password: string) =>
      (
        await fetch(`http://127.0.0.1:${srv!.apiPort}/api/v1/auth/login`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ username: 'admin', password }),
        })
      ).status;
    assert.equal(await login(decode(admin, 'password')), 200);
    assert.equal(await login(decode(admin, 'initial-password')), 401);
  });

  it('dropped watches are re-established without losing the events in between (and a forgotten resource version relists)', async () => {
    // Changes made while the watches are down, through the same API, before they come back.
    const patchShare = (readOnly: boolean) =>
      op!.client.mergePatch(`/apis/dittofs.io/v1alpha1/namespaces/${ns}/shares/data`, { spec: { readOnly } });
    const watches = () => op!.informerStats().shares!.watches;
    const before = watches();
    assert.equal(op!.dropWatchConnections(), Object.keys(op!.informerStats()).length, 'every informer had a connection');
    await patchShare(true);
    assert.equal(watches(), before, 'the change was made while the Share watch was down');
    const ro = await waitCondition('shares.dittofs.io', 'data', 'Synced', 'True', 'Applied');
    assert.equal((ro.spec as { readOnly: boolean }).readOnly, true);
    const refused = await nfsPut('ro.txt', 4001, 'x');
    assert.notEqual(refused.code, 0, 'the share is read-only now');
    assert.equal(await nfsGet('hello.txt', 4001), 'written through the operator\n');

    const goneBefore = Object.values(op!.informerStats()).reduce((n, s) => n + s.gone, 0);
    const before2 = watches();
    op!.dropWatchConnections('1');
    await patchShare(false);
    assert.equal(watches(), before2, 'the change was made while the Share watch was down');
    await waitFor('a relist after 410 Gone', async () =>
      Object.values(op!.informerStats()).reduce((n, s) => n + s.gone, 0) > goneBefore ? true : undefined,
    );
    await waitFor('the share writable again', async () => {
      const o = await waitCondition('shares.dittofs.io', 'data', 'Synced', 'True', 'Applied');
      return (o.spec as { readOnly: boolean }).readOnly === false ? o : undefined;
    });
    const w = await nfsPut('rw.txt', 4001, 'writable again\n');
    assert.equal(w.code, 0, w.stderr);
    assert.ok(op!.isLeader, 'still running, still leading');
  });

  it('a second operator waits on the Lease, takes over when the first stops, and logs in with the password the first set', async () => {
    op2 = await startOperator('op-b');
    await sleep(3000);
    assert.equal(op2.isLeader, false, 'the Lease is held by op-a');
    await op!.shutdown();
    op = undefined;
    await waitFor('op-b to lead', async () => (op2!.isLeader ? true : undefined));
    await apply(`apiVersion: dittofs.io/v1alpha1
kind: User
metadata: { name: bob }
spec: { dittofs: main, username: bob, uid: 4002, groups: [writers] }
`);
    await waitCondition('users.dittofs.io', 'bob', 'Synced', 'True', 'Applied');
    const w = await nfsPut('bob.txt', 4002, 'bob was here\n');
    assert.equal(w.code, 0, `nfs-cp as bob: ${w.stderr}`);
    assert.ok(!logLines.some((l) => l.includes('"op":"op-b"') && l.includes('first login')), 'op-b did not need the initial password');
  });

  it('a User whose password Secret vanishes is not synced, but the server keeps it as it was (nothing is removed by mistake)', async () => {
    await ok(['delete', 'secret', 'alice-password', '-n', ns]);
    const u = await waitCondition('users.dittofs.io', 'alice', 'Synced', 'False', 'SecretNotFound');
    assert.match(condition(u, 'Synced')?.message ?? '', /servers keep their current copy/);
    const w = await nfsPut('still.txt', 4001, 'alice is still there\n');
    assert.equal(w.code, 0, `alice (kept on the server) can still write: ${w.stderr}`);
    await apply(`apiVersion: v1
kind: Secret
metadata: { name: alice-password }
stringData: { password: alice-secret-pw }
`);
    await waitCondition('users.dittofs.io', 'alice', 'Synced', 'True', 'Applied');
  });

  it('an item the server refuses marks only its resource (Refused); the rest stays applied', async () => {
    // The server cannot open a filesystem block store below a regular file: it refuses that store (422).
    const file = path.join(tmp, 'a-file');
    await writeFile(file, 'not a directory');
    await apply(`apiVersion: dittofs.io/v1alpha1
kind: Store
metadata: { name: bad }
spec: { dittofs: main, kind: block, type: filesystem, config: { path: ${file}/blocks } }
`);
    const bad = await waitCondition('stores.dittofs.io', 'bad', 'Synced', 'False', 'Refused');
    assert.match(condition(bad, 'Synced')?.message ?? '', /refused by main-0/);
    await waitCondition('users.dittofs.io', 'alice', 'Synced', 'True', 'Applied');
    await ok(['delete', 'stores.dittofs.io', 'bad', '-n', ns]);
  });

  it('a pod that lost its database (a new volume) is bootstrapped again with the initial password and gets the state back', async () => {
    const { nfsPort, apiPort } = srv!;
    await srv!.stop();
    const admin = await mustGet('secret', 'main-admin');
    srv = await startDittofs({
      nfsPort,
      env: { DITTOFS_API_PORT: String(apiPort), DITTOFS_ADMIN_INITIAL_PASSWORD: decode(admin, 'initial-password') },
    });
    // In a cluster the restarted pod's readiness brings the sync; here a touch of the DittoFS does.
    await ok(['annotate', '--overwrite', 'dittofs', 'main', '-n', ns, `example.com/restarted=${Date.now()}`]);
    await waitFor('alice back on the new server', async () => {
      const r = await nfsPut('again.txt', 4001, 'after the restart\n');
      return r.code === 0 ? true : undefined;
    });
    assert.equal(await nfsGet('again.txt', 4001), 'after the restart\n');
    await waitCondition('shares.dittofs.io', 'data', 'Synced', 'True', 'Applied');
    assert.ok(
      logLines.some((l) => l.includes('"op":"op-b"') && l.includes('first login')),
      'the fresh server took the initial password, which the operator changed again',
    );
  });

  it('a Store in use is kept with reason InUse; a deleted Share stops being served and goes away, then the Store too', async () => {
    await ok(['delete', 'stores.dittofs.io', 'blocks', '-n', ns, '--wait=false']);
    const store = await waitFor('InUse on the Store', async () => {
      const o = await get('stores.dittofs.io', 'blocks');
      return condition(o, 'Synced')?.reason === 'InUse' ? o : undefined;
    });
    assert.equal(condition(store, 'Synced')?.status, 'False');
    assert.match(condition(store, 'Synced')?.message ?? '', /used by Share data/);
    assert.ok(store.metadata.finalizers?.includes('dittofs.io/server-cleanup'));
    assert.equal(await nfsGet('again.txt', 4001), 'after the restart\n', 'still served');

    await ok(['delete', 'shares.dittofs.io', 'data', '-n', ns, '--wait=false']);
    await waitFor('the Share to be gone', async () => ((await get('shares.dittofs.io', 'data')) === undefined ? true : undefined));
    const gone = await nfsPut('after.txt', 4001, 'x');
    assert.notEqual(gone.code, 0, 'the server no longer exports /data');
    await waitFor('the Store to be gone', async () => ((await get('stores.dittofs.io', 'blocks')) === undefined ? true : undefined));
  });

  it('deleting the DittoFS garbage-collects its children but the credentials its data knows; its remaining resources then wait, and can be deleted', async () => {
    const adminBefore = await mustGet('secret', 'main-admin');
    await ok(['delete', 'dittofs', 'main', '-n', ns, '--wait=false']);
    for (const [kind, name] of [
      ['statefulset', 'main'],
      ['service', 'main'],
      ['service', 'main-headless'],
      ['secret', 'main-config'],
    ] as const) {
      await waitFor(`${kind} ${name} to be collected`, async () => ((await get(kind, name)) === undefined ? true : undefined));
    }
    // Kept with the PVCs: a DittoFS made again on that data logs in with the same password.
    assert.deepEqual((await mustGet('secret', 'main-admin')).data, adminBefore.data);
    assert.ok(await get('secret', 'main-jwt'), 'main-jwt is kept');
    await waitCondition('users.dittofs.io', 'alice', 'Synced', 'False', 'DittoFSNotFound');
    await ok(['delete', 'users.dittofs.io', 'alice', 'bob', '-n', ns, '--wait=false']);
    await ok(['delete', 'stores.dittofs.io', 'meta', '-n', ns, '--wait=false']);
    for (const [kind, name] of [
      ['users.dittofs.io', 'alice'],
      ['users.dittofs.io', 'bob'],
      ['stores.dittofs.io', 'meta'],
    ] as const) {
      await waitFor(`${kind} ${name} to be gone`, async () => ((await get(kind, name)) === undefined ? true : undefined));
    }
  });
  it('leader election: a leader whose Lease was taken stops leading within the renew deadline, and takes it back once it expires', async () => {
    const events: string[] = [];
    const kc = new KubeConfig();
    kc.loadFromFile(operatorKubeconfig);
    const client = new KubeClient(kc);
    const elector = new LeaderElector({
      client,
      namespace: ns,
      name: 'elector-test',
      identity: 'a',
      // Long enough that a renewal slowed by a loaded machine (the apiserver, etcd's fsync) stays
      // within the deadline: only the intruder's write may end a's leadership.
      leaseDurationMs: 10_000,
      renewDeadlineMs: 7_000,
      retryPeriodMs: 500,
      log: createLogger({ level: 'silent' }),
      onStartedLeading: () => events.push('started'),
      onStoppedLeading: () => events.push('stopped'),
    });
    try {
      elector.start();
      await waitFor('a to lead', async () => (elector.isLeader ? true : undefined));
      // Another holder writes the Lease (a partition healed the other way): a's renewals fail.
      // A merge patch without resourceVersion: unconditional, whatever a renewed in between.
      const renewTime = new Date().toISOString().replace('Z', '000Z');
      await ok([
        'patch',
        'lease',
        'elector-test',
        '-n',
        ns,
        '--type=merge',
        '-p',
        JSON.stringify({ spec: { holderIdentity: 'intruder', renewTime } }),
      ]);
      await waitFor('a to stop leading', async () => (events.includes('stopped') ? true : undefined));
      assert.equal(elector.isLeader, false);
      // Nobody renews for the intruder: after the lease duration a takes it back.
      await waitFor('a to lead again', async () => (events.filter((e) => e === 'started').length === 2 ? true : undefined));
      const after = await mustGet('lease', 'elector-test');
      assert.equal((after.spec as { holderIdentity: string }).holderIdentity, 'a');
      assert.equal((after.spec as { leaseTransitions: number }).leaseTransitions, 1, 'one change of holder: intruder -> a');
    } finally {
      await elector.stop();
      client.close();
    }
    assert.deepEqual(events, ['started', 'stopped', 'started', 'stopped']);
  });

  it('the launcher (operator/bin/dittofs-operator.js) runs it as a process: ready, then stops cleanly on SIGTERM', async () => {
    const launcher = path.join(REPO_ROOT, 'operator', 'bin', 'dittofs-operator.js');
    const help = await tool(process.execPath, [launcher, '--help']);
    assert.equal(help.code, 0, `${help.stderr} (is the operator built? npm run build)`);
    assert.match(help.stdout, /--pod-address MODE/);
    const port = await freePort();
    const child = spawn(
      process.execPath,
      [
        launcher,
        '--kubeconfig',
        operatorKubeconfig,
        '--namespaces',
        ns,
        '--lease-namespace',
        ns,
        '--lease-name',
        'dittofs-operator-test',
        '--health-port',
        String(port),
      ],
      {
        env: { ...process.env, DITTOFS_OPERATOR_POD_ADDRESS: 'annotation', DITTOFS_OPERATOR_LOG_LEVEL: 'info' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (out += c));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await waitFor('/readyz', async () => {
        const r = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
        return r?.status === 200 ? true : undefined;
      });
      assert.match(out, /"msg":"caches synced"/);
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exited, 0, out);
    assert.match(out, /"msg":"stopped"/);
  });
});
