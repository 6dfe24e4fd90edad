// The Helm chart charts/dittofs-operator: `helm lint --strict`, `helm template` parsed and checked
// (well-formed objects, RBAC exactly the operator's rules, cluster-wide or per watched namespace, a
// non-root Deployment of the operator image, the optional DittoFS), its crds/ identical to the
// repository's crds/, then `helm install` on a real kube-apiserver: the objects exist, the operator
// pod is admitted in a namespace that enforces the `restricted` Pod Security Standard, `kubectl auth
// can-i` as the operator's ServiceAccount answers yes for what the operator does and no for the
// rest, and `helm uninstall` removes what it installed. No kubelet runs, so the operator pod stays
// Pending; running the operator itself is the operator tests' business.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { ENV as OPERATOR_ENV, parseConfig, type OperatorConfig } from '../../operator/src/config.js';
import { OPERATOR_RBAC_RULES, type PolicyRule } from '../../operator/src/rbac.js';
import { REPO_ROOT } from '../helpers/server.js';
import { K8S_WAIT, k8sBinDir, startKubeControlPlane, type KubeControlPlane } from '../helpers/k8s.js';
import { COMMAND_TIMEOUT_MS, SUITE_TIMEOUT_MS } from '../helpers/limits.js';
import { runProcess, type Run } from '../helpers/run.js';

const CHART = path.join(REPO_ROOT, 'charts', 'dittofs-operator');
const IMAGE_REPOSITORY = 'ghcr.io/dittofs/dittofs-operator';
const NON_ROOT_UID = 10001;

/**
 * What the operator does with the Kubernetes API: operator/src/rbac.ts, the rules the operator test
 * runs it under (so a call missing there fails there). Each rendered Role/ClusterRole must grant
 * exactly these (group, resource, verb) triples: leases in the lease namespace, the rest in every
 * watched namespace.
 */
const asTuples = (rules: readonly PolicyRule[]): [string, string[], string[]][] =>
  rules.flatMap((r) => r.apiGroups.map((g): [string, string[], string[]] => [g, r.resources, r.verbs]));
const WATCHED_RULES = asTuples(OPERATOR_RBAC_RULES.filter((r) => !r.apiGroups.includes('coordination.k8s.io')));
const LEASE_RULES = asTuples(OPERATOR_RBAC_RULES.filter((r) => r.apiGroups.includes('coordination.k8s.io')));

interface Rule {
  apiGroups?: string[];
  resources?: string[];
  verbs?: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
}

/** A rule list as sorted `group|resource|verb` triples (resourceNames and URLs are not expected). */
function triples(rules: Rule[]): string[] {
  const out = new Set<string>();
  for (const r of rules) {
    assert.equal(r.nonResourceURLs, undefined, 'nonResourceURLs in a rule');
    assert.equal(r.resourceNames, undefined, 'resourceNames in a rule');
    for (const g of r.apiGroups ?? []) for (const res of r.resources ?? []) for (const v of r.verbs ?? []) out.add(`${g}|${res}|${v}`);
  }
  return [...out].sort();
}
const expectedTriples = (spec: [string, string[], string[]][]): string[] =>
  triples(spec.map(([g, resources, verbs]) => ({ apiGroups: [g], resources, verbs })));

// --- running helm and kubectl -----------------------------------------------------------------------

const run = (file: string, args: string[], env: NodeJS.ProcessEnv, input = '', timeoutMs = COMMAND_TIMEOUT_MS): Promise<Run> =>
  runProcess(file, args, { env, input, timeoutMs });

let tmp: string;
let helmBin: string;
/** Helm's cache, config and data in the temp dir, not the user's home. */
let helmEnv: NodeJS.ProcessEnv;

const helm = (args: string[], env: NodeJS.ProcessEnv = helmEnv, timeoutMs = COMMAND_TIMEOUT_MS): Promise<Run> =>
  run(helmBin, args, env, '', timeoutMs);

async function helmOk(args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  const r = await helm(args, env);
  assert.equal(r.code, 0, `helm ${args.join(' ')} failed (exit ${r.code}):\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [k: string]: unknown;
}

/** `helm template` output as objects; every document well-formed (YAML errors, duplicate keys fail). */
async function render(namespace: string, sets: string[] = []): Promise<K8sObject[]> {
  const out = await helmOk(['template', 'rel', CHART, '--namespace', namespace, ...sets.flatMap((s) => ['--set', s])]);
  const objects: K8sObject[] = [];
  for (const doc of parseAllDocuments(out)) {
    assert.deepEqual(doc.errors, [], `invalid YAML from helm template:\n${String(doc)}`);
    const o = doc.toJS() as K8sObject | null;
    if (o === null) continue;
    assert.equal(typeof o.apiVersion, 'string', `no apiVersion:\n${String(doc)}`);
    assert.equal(typeof o.kind, 'string', `no kind:\n${String(doc)}`);
    assert.match(o.metadata?.name ?? '', /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, `bad metadata.name:\n${String(doc)}`);
    objects.push(o);
  }
  const keys = objects.map((o) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`);
  assert.equal(new Set(keys).size, keys.length, `duplicate objects: ${keys.join(', ')}`);
  return objects;
}

const CLUSTER_SCOPED = new Set(['ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition']);
const ofKind = (objs: K8sObject[], kind: string): K8sObject[] => objs.filter((o) => o.kind === kind);

interface Container {
  name: string;
  image: string;
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  ports?: { name: string; containerPort: number }[];
  livenessProbe?: { httpGet: { path: string; port: string | number } };
  readinessProbe?: { httpGet: { path: string; port: string | number } };
  securityContext?: Record<string, unknown>;
}
interface DeploymentSpec {
  replicas: number;
  template: {
    spec: { serviceAccountName: string; securityContext: Record<string, unknown>; containers: Container[] };
  };
}

/**
 * The Deployment's operator container, its environment, and the configuration the operator's own
 * parser (operator/src/config.ts) makes of that environment, with the Downward API fields filled
 * in as the kubelet would (pod name `operator-pod-0`, namespace of the Deployment).
 */
function operatorContainer(objs: K8sObject[]): {
  spec: DeploymentSpec;
  c: Container;
  env: Map<string, string | undefined>;
  config: OperatorConfig;
} {
  const deployments = ofKind(objs, 'Deployment');
  assert.equal(deployments.length, 1);
  const deployment = deployments[0]!;
  const spec = deployment.spec as DeploymentSpec;
  assert.equal(spec.template.spec.containers.length, 1);
  const c = spec.template.spec.containers[0]!;
  const fields: Record<string, string> = { 'metadata.name': 'operator-pod-0', 'metadata.namespace': deployment.metadata.namespace ?? '' };
  const env = new Map<string, string | undefined>();
  for (const e of c.env ?? []) {
    const field = e.valueFrom?.fieldRef?.fieldPath;
    env.set(e.name, field !== undefined ? fields[field] : e.value);
  }
  // Every variable the chart sets is one the operator reads: a renamed setting is not silently dropped.
  const known = new Set<string>(Object.values(OPERATOR_ENV));
  assert.deepEqual(
    [...env.keys()].filter((k) => !known.has(k)),
    [],
    'the Deployment sets variables the operator does not read',
  );
  const parsed = parseConfig([], Object.fromEntries(env));
  assert.ok('config' in parsed, 'the operator would print its help instead of running');
  return { spec, c, env, config: parsed.config };
}

function assertNonRoot(spec: DeploymentSpec, c: Container): void {
  const pod = spec.template.spec.securityContext;
  assert.equal(pod.runAsNonRoot, true);
  assert.equal(pod.runAsUser, NON_ROOT_UID);
  assert.deepEqual(pod.seccompProfile, { type: 'RuntimeDefault' });
  const sc = c.securityContext ?? {};
  assert.equal(sc.runAsNonRoot, true);
  assert.equal(sc.allowPrivilegeEscalation, false);
  assert.equal(sc.readOnlyRootFilesystem, true);
  assert.deepEqual(sc.capabilities, { drop: ['ALL'] });
  assert.notEqual(sc.privileged, true);
}

before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'dittofs-chart-test-'));
  const binDir = await k8sBinDir();
  helmBin = path.join(binDir, 'helm');
  assert.ok(existsSync(helmBin), `helm is not built in ${binDir}: run hack/k8s/build.sh`);
  helmEnv = {
    ...process.env,
    HELM_CACHE_HOME: path.join(tmp, 'helm-cache'),
    HELM_CONFIG_HOME: path.join(tmp, 'helm-config'),
    HELM_DATA_HOME: path.join(tmp, 'helm-data'),
  };
});

after(async () => {
  if (tmp !== undefined) await rm(tmp, { recursive: true, force: true });
});

describe('charts/dittofs-operator: lint and rendered objects (helm template, no cluster)', () => {
  it('helm lint --strict is clean, with the default values and with watched namespaces and a DittoFS', async () => {
    for (const sets of [[], ['watchNamespaces={a,b}', 'dittofs.create=true', 'dittofs.namespace=a', 'replicaCount=2']]) {
      const out = await helmOk(['lint', '--strict', CHART, ...sets.flatMap((s) => ['--set', s])]);
      assert.match(out, /1 chart\(s\) linted, 0 chart\(s\) failed/);
      assert.doesNotMatch(out, /\[(WARNING|ERROR)\]/);
    }
  });

  it('ships crds/ byte for byte (hack/sync-chart-crds.sh keeps the copies)', async () => {
    const repo = readdirSync(path.join(REPO_ROOT, 'crds'))
      .filter((f) => f.endsWith('.yaml'))
      .sort();
    const chart = readdirSync(path.join(CHART, 'crds')).sort();
    assert.equal(repo.length, 4);
    assert.deepEqual(chart, repo, 'charts/dittofs-operator/crds/ differs from crds/: run hack/sync-chart-crds.sh');
    for (const f of repo) {
      assert.ok(
        readFileSync(path.join(REPO_ROOT, 'crds', f)).equals(readFileSync(path.join(CHART, 'crds', f))),
        `charts/dittofs-operator/crds/${f} differs from crds/${f}: run hack/sync-chart-crds.sh`,
      );
    }
    const check = await run(path.join(REPO_ROOT, 'hack', 'sync-chart-crds.sh'), ['--check'], process.env);
    assert.equal(check.code, 0, check.stderr);
    // And helm takes them as the chart's CRDs. (`helm show crds` would do, but it concatenates the
    // files without `---` between them: the files do not start with one.)
    const rendered = await helmOk(['template', 'rel', CHART, '--include-crds']);
    const names = parseAllDocuments(rendered)
      .map((d) => d.toJS() as K8sObject | null)
      .filter((o) => o?.kind === 'CustomResourceDefinition')
      .map((o) => o!.metadata.name)
      .sort();
    assert.deepEqual(names, ['dittofses.dittofs.io', 'shares.dittofs.io', 'stores.dittofs.io', 'users.dittofs.io']);
  });

  it("Chart.yaml's appVersion is the version of the server and operator packages", () => {
    const chart = parseYaml(readFileSync(path.join(CHART, 'Chart.yaml'), 'utf8')) as { apiVersion: string; appVersion: string };
    assert.equal(chart.apiVersion, 'v2');
    for (const pkg of ['server', 'operator']) {
      const { version } = JSON.parse(readFileSync(path.join(REPO_ROOT, pkg, 'package.json'), 'utf8')) as { version: string };
      assert.equal(chart.appVersion, version, `${pkg}/package.json`);
    }
  });

  it('default values: cluster-wide RBAC of exactly the operator rules, a Lease Role, a non-root Deployment of the operator image', async () => {
    const objs = await render('ops');
    for (const o of objs) {
      if (CLUSTER_SCOPED.has(o.kind)) assert.equal(o.metadata.namespace, undefined, `${o.kind} ${o.metadata.name}`);
      else assert.equal(o.metadata.namespace, 'ops', `${o.kind} ${o.metadata.name}`);
    }
    assert.deepEqual(objs.map((o) => o.kind).sort(), [
      'ClusterRole',
      'ClusterRoleBinding',
      'Deployment',
      'Role',
      'RoleBinding',
      'ServiceAccount',
    ]);
    const sa = ofKind(objs, 'ServiceAccount')[0]!.metadata.name;
    const clusterRole = ofKind(objs, 'ClusterRole')[0]!;
    assert.deepEqual(triples(clusterRole.rules as Rule[]), expectedTriples(WATCHED_RULES));
    const binding = ofKind(objs, 'ClusterRoleBinding')[0]!;
    assert.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: clusterRole.metadata.name });
    assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: sa, namespace: 'ops' }]);
    const lease = ofKind(objs, 'Role')[0]!;
    assert.deepEqual(triples(lease.rules as Rule[]), expectedTriples(LEASE_RULES));
    assert.deepEqual(ofKind(objs, 'RoleBinding')[0]!.roleRef, {
      apiGroup: 'rbac.authorization.k8s.io',
      kind: 'Role',
      name: lease.metadata.name,
    });

    const { spec, c, config } = operatorContainer(objs);
    assert.equal(spec.replicas, 1);
    assert.equal(spec.template.spec.serviceAccountName, sa);
    assert.equal(c.image, `${IMAGE_REPOSITORY}:0.1.0`);
    assertNonRoot(spec, c);
    // What the operator makes of the Deployment's environment.
    assert.deepEqual(config.namespaces, []);
    assert.deepEqual(config.leaderElection, {
      enabled: true,
      leaseNamespace: 'ops',
      leaseName: 'rel-dittofs-operator-leader',
      identity: 'operator-pod-0',
    });
    assert.equal(config.healthPort, 8081);
    assert.equal(config.logLevel, 'info');
    assert.equal(config.defaultImage, 'ghcr.io/dittofs/dittofs:0.1.0');
    assert.equal(config.podAddressMode, 'dns');
    assert.equal(config.kubeconfig, undefined, 'in-cluster configuration');
    assert.deepEqual(c.ports, [{ name: 'health', containerPort: 8081, protocol: 'TCP' }]);
    assert.deepEqual(
      [c.livenessProbe?.httpGet, c.readinessProbe?.httpGet],
      [
        { path: '/healthz', port: 'health' },
        { path: '/readyz', port: 'health' },
      ],
    );
  });

  it('watchNamespaces=[a,b] and dittofs.create: a Role and RoleBinding per watched namespace, nothing cluster-wide, the DittoFS', async () => {
    const objs = await render('a', ['watchNamespaces={a,b}', 'dittofs.create=true', 'image.tag=1.2.3', 'healthPort=9443']);
    assert.deepEqual(ofKind(objs, 'ClusterRole'), []);
    assert.deepEqual(ofKind(objs, 'ClusterRoleBinding'), []);
    const roles = ofKind(objs, 'Role');
    const watched = roles.filter((r) => !r.metadata.name.endsWith('-leader-election'));
    assert.deepEqual(watched.map((r) => r.metadata.namespace).sort(), ['a', 'b']);
    for (const r of watched) assert.deepEqual(triples(r.rules as Rule[]), expectedTriples(WATCHED_RULES));
    const lease = roles.filter((r) => r.metadata.name.endsWith('-leader-election'));
    assert.deepEqual(
      lease.map((r) => [r.metadata.namespace, triples(r.rules as Rule[])]),
      [['a', expectedTriples(LEASE_RULES)]],
    );
    const sa = ofKind(objs, 'ServiceAccount')[0]!.metadata.name;
    for (const b of ofKind(objs, 'RoleBinding')) {
      assert.deepEqual(b.subjects, [{ kind: 'ServiceAccount', name: sa, namespace: 'a' }]);
      const role = roles.find(
        (r) => r.metadata.name === (b.roleRef as { name: string }).name && r.metadata.namespace === b.metadata.namespace,
      );
      assert.ok(role, `RoleBinding ${b.metadata.namespace}/${b.metadata.name} names no Role of its namespace`);
    }
    const { spec, c, env, config } = operatorContainer(objs);
    assert.equal(c.image, `${IMAGE_REPOSITORY}:1.2.3`);
    assertNonRoot(spec, c);
    assert.equal(env.get('WATCH_NAMESPACES'), 'a,b');
    assert.deepEqual(config.namespaces, ['a', 'b']);
    assert.equal(config.leaderElection.leaseNamespace, 'a');
    assert.equal(config.healthPort, 9443);
    assert.deepEqual(c.ports, [{ name: 'health', containerPort: 9443, protocol: 'TCP' }]);
    const dfs = ofKind(objs, 'DittoFS');
    assert.equal(dfs.length, 1);
    assert.equal(dfs[0]!.apiVersion, 'dittofs.io/v1alpha1');
    assert.equal(dfs[0]!.metadata.namespace, 'a');
    assert.deepEqual((dfs[0]!.spec as { database: unknown }).database, { type: 'embedded' });

    // Without leader election there is no Lease Role; without dittofs.create, no DittoFS.
    const plain = await render('ops', ['leaderElection.enabled=false']);
    assert.deepEqual(ofKind(plain, 'Role'), []);
    assert.deepEqual(ofKind(plain, 'DittoFS'), []);
    assert.equal(operatorContainer(plain).config.leaderElection.enabled, false);
  });

  it('refuses inconsistent values with a message: replicas without leader election, an unwatched DittoFS, a misspelt key', async () => {
    const cases: [string[], RegExp][] = [
      [['replicaCount=2', 'leaderElection.enabled=false'], /replicaCount > 1 needs leaderElection\.enabled=true/],
      [['watchNamespaces={a,b}', 'dittofs.create=true'], /DittoFS would be in namespace "ops", which the operator does not watch/],
      [['logLevel=loud'], /logLevel/],
      [['imagee.tag=x'], /additional properties 'imagee' not allowed/],
    ];
    for (const [sets, message] of cases) {
      const r = await helm(['template', 'rel', CHART, '--namespace', 'ops', ...sets.flatMap((s) => ['--set', s])]);
      assert.notEqual(r.code, 0, `accepted: ${sets.join(' ')}`);
      assert.match(r.stderr, message);
    }
  });
});

describe(
  'charts/dittofs-operator on a real kube-apiserver (helm install, kubectl auth can-i, helm uninstall)',
  { timeout: SUITE_TIMEOUT_MS },
  () => {
    let cp: KubeControlPlane;
    let env: NodeJS.ProcessEnv;
    const id = randomBytes(3).toString('hex');
    const all = `dittofs-chart-all-${id}`; // release 1: watches every namespace
    const ops = `dittofs-chart-ops-${id}`; // release 2: runs here, watches a and b
    const [a, b, c] = ['a', 'b', 'c'].map((x) => `dittofs-chart-${x}-${id}`) as [string, string, string];
    const saOf = (ns: string, release: string): string => `system:serviceaccount:${ns}:${release}-dittofs-operator`;

    const kubectl = (args: string[], input = ''): Promise<Run> => run(cp.kubectl, ['--kubeconfig', cp.kubeconfig, ...args], env, input);
    async function ok(args: string[], input = ''): Promise<string> {
      const r = await kubectl(args, input);
      assert.equal(r.code, 0, `kubectl ${args.join(' ')}: ${r.stderr}${r.stdout}`);
      return r.stdout;
    }
    async function canI(as: string, ...args: string[]): Promise<'yes' | 'no'> {
      const r = await kubectl(['auth', 'can-i', ...args, `--as=${as}`]);
      // can-i exits 0 for yes and 1 for no; anything else is an error.
      assert.ok(r.code === 0 || r.code === 1, `kubectl auth can-i ${args.join(' ')}: ${r.stderr}`);
      return r.stdout.trim() as 'yes' | 'no';
    }
    async function expectCan(as: string, expected: 'yes' | 'no', checks: string[][]): Promise<void> {
      const wrong: string[] = [];
      for (const args of checks) if ((await canI(as, ...args)) !== expected) wrong.push(args.join(' '));
      assert.deepEqual(wrong, [], `${as} answers ${expected === 'yes' ? 'no' : 'yes'} to these`);
    }
    const names = async (kind: string, ns: string | undefined, release: string): Promise<string[]> =>
      (await ok(['get', kind, ...(ns ? ['-n', ns] : []), '-l', `app.kubernetes.io/instance=${release}`, '-o', 'name']))
        .split('\n')
        .filter((l) => l !== '')
        .sort();

    before(async () => {
      cp = await startKubeControlPlane();
      env = {
        ...cp.env,
        HELM_CACHE_HOME: helmEnv.HELM_CACHE_HOME,
        HELM_CONFIG_HOME: helmEnv.HELM_CONFIG_HOME,
        HELM_DATA_HOME: helmEnv.HELM_DATA_HOME,
      };
      for (const ns of [all, ops, a, b, c]) {
        await ok(['create', 'namespace', ns]);
        // The strictest Pod Security Standard: a pod that is not non-root, read-only... is refused.
        await ok(['label', 'namespace', ns, 'pod-security.kubernetes.io/enforce=restricted']);
      }
    });

    after(async () => {
      if (cp?.external) {
        for (const [rel, ns] of [
          ['all', all],
          ['scoped', ops],
        ])
          await helm(['uninstall', rel!, '-n', ns!, '--kubeconfig', cp.kubeconfig], env);
        await kubectl(['delete', 'namespace', all, ops, a, b, c, '--wait=false', '--ignore-not-found']);
      }
      await cp?.stop();
    });

    it('helm install (every namespace): the CRDs, ServiceAccount, RBAC, Deployment and DittoFS exist; the pod passes Pod Security "restricted"', async () => {
      await helmOk(
        ['install', 'all', CHART, '-n', all, '--kubeconfig', cp.kubeconfig, '--set', 'dittofs.create=true', '--timeout', K8S_WAIT],
        env,
      );
      for (const crd of ['dittofses', 'stores', 'shares', 'users']) {
        await ok(['wait', '--for=condition=Established', `--timeout=${K8S_WAIT}`, `crd/${crd}.dittofs.io`]);
      }
      assert.deepEqual(await names('serviceaccount', all, 'all'), ['serviceaccount/all-dittofs-operator']);
      assert.deepEqual(await names('clusterrole', undefined, 'all'), ['clusterrole.rbac.authorization.k8s.io/all-dittofs-operator']);
      assert.deepEqual(await names('clusterrolebinding', undefined, 'all'), [
        'clusterrolebinding.rbac.authorization.k8s.io/all-dittofs-operator',
      ]);
      assert.deepEqual(await names('role', all, 'all'), ['role.rbac.authorization.k8s.io/all-dittofs-operator-leader-election']);
      assert.deepEqual(await names('deployment', all, 'all'), ['deployment.apps/all-dittofs-operator']);
      assert.deepEqual(await names('dittofs', all, 'all'), ['dittofs.dittofs.io/dittofs']);
      // The API server kept the rules as rendered.
      const rules = JSON.parse(await ok(['get', 'clusterrole', 'all-dittofs-operator', '-o', 'jsonpath={.rules}'])) as Rule[];
      assert.deepEqual(triples(rules), expectedTriples(WATCHED_RULES));

      // No kubelet: the ReplicaSet controller still creates the pod, and admission (Pod Security
      // "restricted") accepts it, or the ReplicaSet says why not.
      let last = '';
      for (let i = 0; i < 240; i++) {
        const pods = await ok([
          'get',
          'pods',
          '-n',
          all,
          '-l',
          'app.kubernetes.io/instance=all',
          '-o',
          'jsonpath={.items[*].spec.securityContext.runAsUser}',
        ]);
        if (pods.trim() === String(NON_ROOT_UID)) return;
        last = await ok(['get', 'replicasets', '-n', all, '-o', 'jsonpath={.items[*].status.conditions}']);
        // Admission refused the pod: no point waiting for a retry to be refused again.
        if (last.includes('FailedCreate')) break;
        await sleep(250);
      }
      assert.fail(`the operator pod was not created; ReplicaSet conditions: ${last}`);
    });

    it('its ServiceAccount may do what the operator does, in any namespace, and nothing else', async () => {
      const sa = saOf(all, 'all');
      await expectCan(sa, 'yes', [
        ['list', 'dittofses.dittofs.io', '--all-namespaces'],
        ['watch', 'shares.dittofs.io', '-n', c],
        ['patch', 'stores.dittofs.io', '-n', a],
        ['patch', 'dittofses.dittofs.io', '--subresource=status', '-n', b],
        ['patch', 'users.dittofs.io', '--subresource=status', '-n', c],
        ['update', 'dittofses.dittofs.io', '--subresource=finalizers', '-n', c],
        ['create', 'statefulsets.apps', '-n', c],
        ['patch', 'statefulsets.apps', '-n', a],
        ['create', 'secrets', '-n', b],
        ['get', 'secrets', '-n', c],
        ['patch', 'services', '-n', c],
        ['watch', 'pods', '--all-namespaces'],
        ['create', 'leases.coordination.k8s.io', '-n', all],
        ['update', 'leases.coordination.k8s.io', '-n', all],
      ]);
      await expectCan(sa, 'no', [
        ['create', 'dittofses.dittofs.io', '-n', a],
        ['delete', 'shares.dittofs.io', '-n', a],
        ['delete', 'dittofses.dittofs.io', '--subresource=status', '-n', a],
        ['create', 'pods', '-n', a],
        ['delete', 'pods', '-n', a],
        ['create', 'pods', '--subresource=exec', '-n', a],
        ['get', 'nodes'],
        ['delete', 'nodes'],
        ['create', 'persistentvolumeclaims', '-n', a],
        ['create', 'deployments.apps', '-n', a],
        ['delete', 'events', '-n', a],
        // Least privilege: children go with their owner (garbage collector), never deleted here.
        ['delete', 'statefulsets.apps', '-n', a],
        ['delete', 'secrets', '-n', a],
        ['get', 'configmaps', '-n', a],
        ['update', 'dittofses.dittofs.io', '-n', a],
        ['create', 'clusterroles.rbac.authorization.k8s.io'],
        ['create', 'rolebindings.rbac.authorization.k8s.io', '-n', a],
        ['delete', 'customresourcedefinitions.apiextensions.k8s.io'],
        ['create', 'leases.coordination.k8s.io', '-n', a],
        ['impersonate', 'serviceaccounts', '-n', a],
      ]);
    });

    it('helm install with watchNamespaces: Roles in the watched namespaces only, nothing cluster-wide', async () => {
      await helmOk(
        [
          'install',
          'scoped',
          CHART,
          '-n',
          ops,
          '--kubeconfig',
          cp.kubeconfig,
          '--set',
          `watchNamespaces={${a},${b}}`,
          '--set',
          'dittofs.create=true',
          '--set',
          `dittofs.namespace=${b}`,
          '--timeout',
          K8S_WAIT,
        ],
        env,
      );
      assert.deepEqual(await names('clusterrole,clusterrolebinding', undefined, 'scoped'), []);
      for (const ns of [a, b]) {
        assert.deepEqual(await names('role,rolebinding', ns, 'scoped'), [
          'role.rbac.authorization.k8s.io/scoped-dittofs-operator',
          'rolebinding.rbac.authorization.k8s.io/scoped-dittofs-operator',
        ]);
      }
      assert.deepEqual(await names('role,rolebinding', c, 'scoped'), []);
      assert.deepEqual(await names('dittofs', b, 'scoped'), ['dittofs.dittofs.io/dittofs']);

      const sa = saOf(ops, 'scoped');
      await expectCan(sa, 'yes', [
        ['list', 'dittofses.dittofs.io', '-n', a],
        ['patch', 'dittofses.dittofs.io', '--subresource=status', '-n', b],
        ['create', 'statefulsets.apps', '-n', a],
        ['get', 'secrets', '-n', b],
        ['create', 'leases.coordination.k8s.io', '-n', ops],
      ]);
      await expectCan(sa, 'no', [
        // Not watched: c, and the operator's own namespace.
        ['get', 'secrets', '-n', c],
        ['list', 'dittofses.dittofs.io', '-n', c],
        ['create', 'statefulsets.apps', '-n', c],
        ['get', 'secrets', '-n', ops],
        ['list', 'dittofses.dittofs.io', '--all-namespaces'],
        ['watch', 'pods', '--all-namespaces'],
        ['create', 'leases.coordination.k8s.io', '-n', a],
        ['delete', 'nodes'],
      ]);
    });

    it('helm uninstall removes what the chart installed (the CRDs stay: Helm never deletes crds/)', async () => {
      await helmOk(['uninstall', 'all', '-n', all, '--kubeconfig', cp.kubeconfig, '--wait', '--timeout', K8S_WAIT], env);
      await helmOk(['uninstall', 'scoped', '-n', ops, '--kubeconfig', cp.kubeconfig, '--wait', '--timeout', K8S_WAIT], env);
      assert.deepEqual(await names('clusterrole,clusterrolebinding', undefined, 'all'), []);
      for (const [release, ns] of [
        ['all', all],
        ['scoped', ops],
        ['scoped', a],
        ['scoped', b],
      ] as const) {
        assert.deepEqual(await names('serviceaccount,role,rolebinding,deployment,dittofs', ns, release), [], `${release} in ${ns}`);
      }
      // The garbage collector removes the operator pod after its ReplicaSet.
      let pods = '';
      for (let i = 0; i < 120; i++) {
        pods = (await ok(['get', 'pods', '-n', all, '-o', 'name'])).trim();
        if (pods === '') break;
        await sleep(250);
      }
      assert.equal(pods, '', 'the operator pod is still there 30 s after helm uninstall');
      assert.equal(await canI(saOf(all, 'all'), 'create', 'statefulsets.apps', '-n', c), 'no');
      assert.equal(await canI(saOf(ops, 'scoped'), 'get', 'secrets', '-n', a), 'no');
      assert.deepEqual(JSON.parse(await helmOk(['list', '--all-namespaces', '--kubeconfig', cp.kubeconfig, '-o', 'json'], env)), []);
      const crds = await ok(['get', 'crd', '-o', 'name']);
      assert.match(crds, /dittofses\.dittofs\.io/);
    });
  },
);
