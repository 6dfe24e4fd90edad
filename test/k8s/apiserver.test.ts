// The real Kubernetes control plane the operator tests run against (test/helpers/k8s.ts): etcd,
// kube-apiserver and kube-controller-manager built by hack/k8s/build.sh, driven here only through
// kubectl and helm as subprocesses, as users drive a cluster. It checks what the operator relies
// on: CRD schemas (enums, ranges, required fields) and printer columns, RBAC with service
// accounts, and the controllers (StatefulSet status, garbage collection of owner-referenced
// children). With DITTOFS_TEST_KUBECONFIG set, the same checks run against that cluster.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { K8S_WAIT, startKubeControlPlane, type KubeControlPlane } from '../helpers/k8s.js';
import { COMMAND_TIMEOUT_MS, READY_TIMEOUT_MS } from '../helpers/limits.js';
import { runProcess, type Run } from '../helpers/run.js';
import { REPO_ROOT } from '../helpers/server.js';

const GROUP = 'example.dittofs.io';
const CRD_NAME = `widgets.${GROUP}`;

let cp: KubeControlPlane;
let tmp: string;
const ns = `dittofs-k8s-${randomBytes(3).toString('hex')}`;

/** kubectl against the test cluster; `input` goes to stdin (for `-f -`). */
const kubectl = (args: string[], input?: string, timeoutMs?: number): Promise<Run> =>
  run(cp.kubectl, ['--kubeconfig', cp.kubeconfig, ...args], input, timeoutMs);

function run(file: string, args: string[], input?: string, timeoutMs?: number, env: NodeJS.ProcessEnv = cp.env): Promise<Run> {
  return runProcess(file, args, { env, ...(input === undefined ? {} : { input }), ...(timeoutMs === undefined ? {} : { timeoutMs }) });
}

/** kubectl that must succeed: its stdout. */
async function kubectlOk(args: string[], input?: string, timeoutMs?: number): Promise<string> {
  const r = await kubectl(args, input, timeoutMs);
  assert.equal(r.code, 0, `kubectl ${args.join(' ')} failed (exit ${r.code}):\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Polls `check` every 250 ms until it returns a value other than undefined, for at most timeoutMs. */
async function eventually<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (let attempt = 0; attempt < Math.ceil(timeoutMs / 250) + 1 && Date.now() < deadline; attempt++) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    await sleep(250);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms${last === undefined ? '' : ` (last error: ${(last as Error).message})`}`);
}

const CRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: ${CRD_NAME}
spec:
  group: ${GROUP}
  scope: Namespaced
  names: { plural: widgets, singular: widget, kind: Widget, shortNames: [wdg] }
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources: { status: {} }
    additionalPrinterColumns:
    - { name: Size, type: string, jsonPath: .spec.size }
    - { name: Replicas, type: integer, jsonPath: .spec.replicas }
    - { name: Age, type: date, jsonPath: .metadata.creationTimestamp }
    schema:
      openAPIV3Schema:
        type: object
        required: [spec]
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: { type: string, enum: [small, medium, large] }
              replicas: { type: integer, minimum: 0, maximum: 10, default: 1 }
          status:
            type: object
            properties:
              phase: { type: string }
`;

const widget = (name: string, spec: string): string => `apiVersion: ${GROUP}/v1alpha1
kind: Widget
metadata: { name: ${name}, namespace: ${ns} }
spec: ${spec}
`;

before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'dittofs-k8s-test-'));
  cp = await startKubeControlPlane();
  await kubectlOk(['create', 'namespace', ns]);
});

after(async () => {
  try {
    if (cp?.external) {
      // Someone else's cluster: remove what this test made (the private one just goes away).
      await kubectl(['delete', 'namespace', ns, '--wait=false', '--ignore-not-found']);
      await kubectl(['delete', 'crd', CRD_NAME, '--wait=false', '--ignore-not-found']);
    }
  } finally {
    await cp?.stop();
    if (tmp !== undefined) await rm(tmp, { recursive: true, force: true });
  }
});

describe('a real kube-apiserver with etcd and kube-controller-manager', () => {
  it('is ready and, when private, is the pinned release built from source', async () => {
    assert.equal((await kubectlOk(['get', '--raw', '/readyz'])).trim(), 'ok');
    const version = JSON.parse(await kubectlOk(['version', '-o', 'json'])) as {
      clientVersion: { gitVersion: string };
      serverVersion: { gitVersion: string };
    };
    assert.match(version.serverVersion.gitVersion, /^v1\.\d+\.\d+/);
    if (!cp.external) {
      assert.equal(version.serverVersion.gitVersion, version.clientVersion.gitVersion);
      assert.match(cp.server, /^https:\/\/127\.0\.0\.1:\d+$/);
    }
  });

  it('serves a CRD: Established, printer columns in kubectl get, schema validation', async () => {
    await kubectlOk(['apply', '-f', '-'], CRD);
    await kubectlOk(['wait', '--for=condition=Established', `crd/${CRD_NAME}`, `--timeout=${K8S_WAIT}`], undefined, COMMAND_TIMEOUT_MS);

    await kubectlOk(['apply', '-f', '-'], widget('alpha', '{ size: medium, replicas: 3 }'));
    await kubectlOk(['apply', '-f', '-'], widget('beta', '{ size: small }'));
    const table = await kubectlOk(['get', 'widgets', '-n', ns]);
    const [header, ...rows] = table.trim().split('\n');
    assert.match(header ?? '', /^NAME\s+SIZE\s+REPLICAS\s+AGE$/);
    assert.match(rows.find((r) => r.startsWith('alpha')) ?? '', /^alpha\s+medium\s+3\s+\S+$/);
    // The schema's default filled in replicas; the short name works.
    assert.match((await kubectlOk(['get', 'wdg', 'beta', '-n', ns])).trim().split('\n')[1] ?? '', /^beta\s+small\s+1\s+\S+$/);

    const badEnum = await kubectl(['apply', '-f', '-'], widget('gamma', '{ size: huge }'));
    assert.notEqual(badEnum.code, 0);
    assert.match(badEnum.stderr, /spec\.size: Unsupported value: "huge": supported values: "small", "medium", "large"/);

    const badRange = await kubectl(['apply', '-f', '-'], widget('delta', '{ size: large, replicas: 11 }'));
    assert.notEqual(badRange.code, 0);
    assert.match(badRange.stderr, /spec\.replicas: Invalid value: 11: spec\.replicas in body should be less than or equal to 10/);

    const missing = await kubectl(['apply', '-f', '-'], widget('epsilon', '{ replicas: 2 }'));
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /spec\.size: Required value/);

    const names = await kubectlOk(['get', 'widgets', '-n', ns, '-o', 'jsonpath={.items[*].metadata.name}']);
    assert.deepEqual(names.trim().split(/\s+/).sort(), ['alpha', 'beta']);
  });

  it('enforces RBAC for a service account bound to a Role', async () => {
    await kubectlOk(
      ['apply', '-f', '-'],
      `apiVersion: v1
kind: ServiceAccount
metadata: { name: reader, namespace: ${ns} }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: widget-reader, namespace: ${ns} }
rules:
- { apiGroups: ["${GROUP}"], resources: [widgets], verbs: [get, list, watch] }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: widget-reader, namespace: ${ns} }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: widget-reader }
subjects:
- { kind: ServiceAccount, name: reader, namespace: ${ns} }
`,
    );
    const as = `--as=system:serviceaccount:${ns}:reader`;
    const canI = async (...args: string[]): Promise<string> => {
      const r = await kubectl(['auth', 'can-i', ...args, as]);
      // can-i exits 0 for yes and 1 for no; anything else is an error.
      assert.ok(r.code === 0 || r.code === 1, `kubectl auth can-i ${args.join(' ')} failed: ${r.stderr}`);
      return r.stdout.trim();
    };
    assert.equal(await canI('list', `widgets.${GROUP}`, '-n', ns), 'yes');
    assert.equal(await canI('get', `widgets.${GROUP}`, '-n', ns), 'yes');
    assert.equal(await canI('delete', `widgets.${GROUP}`, '-n', ns), 'no');
    assert.equal(await canI('list', `widgets.${GROUP}`, '-n', 'default'), 'no');
    assert.equal(await canI('list', 'secrets', '-n', ns), 'no');

    // And real requests under that identity.
    assert.match(await kubectlOk(['get', 'widgets', '-n', ns, as]), /alpha/);
    const denied = await kubectl(['delete', 'widget', 'alpha', '-n', ns, as]);
    assert.notEqual(denied.code, 0);
    assert.match(
      denied.stderr,
      new RegExp(
        `forbidden: User "system:serviceaccount:${ns}:reader" cannot delete resource "widgets" in API group "${GROUP.replace(/\./g, '\\.')}"`,
      ),
    );
  });

  it('runs the controllers: StatefulSet status, and garbage collection of owner-referenced children', async () => {
    await kubectlOk(['create', 'configmap', 'owner', '-n', ns, '--from-literal=k=v']);
    const ownerUid = (await kubectlOk(['get', 'configmap', 'owner', '-n', ns, '-o', 'jsonpath={.metadata.uid}'])).trim();
    assert.match(ownerUid, /^[0-9a-f-]{36}$/);
    await kubectlOk(
      ['apply', '-f', '-'],
      `apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: child
  namespace: ${ns}
  ownerReferences:
  - { apiVersion: v1, kind: ConfigMap, name: owner, uid: ${ownerUid}, blockOwnerDeletion: true }
spec:
  replicas: 1
  serviceName: child
  selector: { matchLabels: { app: child } }
  template:
    metadata: { labels: { app: child } }
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - { name: main, image: registry.invalid/never-pulled:1 }
`,
    );
    // No kubelet runs: the StatefulSet controller still creates the pod (it stays Pending) and
    // reports it in the status.
    await eventually('StatefulSet status.replicas=1 from the controller', READY_TIMEOUT_MS, async () => {
      const s = await kubectlOk([
        'get',
        'statefulset',
        'child',
        '-n',
        ns,
        '-o',
        'jsonpath={.status.observedGeneration}/{.status.replicas}',
      ]);
      return s.trim() === '1/1' ? s : undefined;
    });
    const podOwner = await kubectlOk([
      'get',
      'pod',
      'child-0',
      '-n',
      ns,
      '-o',
      'jsonpath={.metadata.ownerReferences[0].kind}/{.status.phase}',
    ]);
    assert.equal(podOwner.trim(), 'StatefulSet/Pending');

    await kubectlOk(['delete', 'configmap', 'owner', '-n', ns]);
    await eventually('the garbage collector deletes the StatefulSet and its pod', READY_TIMEOUT_MS, async () => {
      const left = await kubectlOk(['get', 'statefulset,pods', '-n', ns, '-o', 'name']);
      return left.trim() === '' ? true : undefined;
    });
  });

  it('has helm, which installs a chart into the cluster', async () => {
    const version = await run(cp.helm, ['version', '--short']);
    assert.equal(version.code, 0, version.stderr);
    assert.match(version.stdout.trim(), /^v3\.\d+\.\d+/);

    const chart = path.join(tmp, 'chart');
    await mkdir(path.join(chart, 'templates'), { recursive: true });
    await writeFile(path.join(chart, 'Chart.yaml'), 'apiVersion: v2\nname: probe\nversion: 0.1.0\n');
    await writeFile(path.join(chart, 'values.yaml'), 'greeting: hello\n');
    await writeFile(
      path.join(chart, 'templates', 'cm.yaml'),
      'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-probe\ndata:\n  greeting: {{ .Values.greeting | quote }}\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n',
    );
    // Helm's own state in the temp dir, not the user's home.
    const env = {
      ...cp.env,
      HELM_CACHE_HOME: path.join(tmp, 'helm-cache'),
      HELM_CONFIG_HOME: path.join(tmp, 'helm-config'),
      HELM_DATA_HOME: path.join(tmp, 'helm-data'),
    };
    const install = await run(
      cp.helm,
      ['install', 'demo', chart, '-n', ns, '--kubeconfig', cp.kubeconfig, '--set', 'greeting=hi', '--wait', '--timeout', K8S_WAIT],
      undefined,
      COMMAND_TIMEOUT_MS,
      env,
    );
    assert.equal(install.code, 0, install.stderr);
    const data = JSON.parse(await kubectlOk(['get', 'configmap', 'demo-probe', '-n', ns, '-o', 'jsonpath={.data}'])) as Record<
      string,
      string
    >;
    assert.equal(data.greeting, 'hi');
    assert.match(data.kube ?? '', /^v1\.\d+\.\d+/);
    const list = await run(cp.helm, ['list', '-n', ns, '--kubeconfig', cp.kubeconfig, '-o', 'json'], undefined, COMMAND_TIMEOUT_MS, env);
    assert.equal((JSON.parse(list.stdout) as { name: string; status: string }[]).find((r) => r.name === 'demo')?.status, 'deployed');
  });
});

describe('a test process stopped by a signal', () => {
  // A CI timeout or Ctrl-C sends SIGTERM/SIGINT, on which Node runs no 'exit' hook by default: the
  // control plane (and a node's namespace, mounts and veth) would outlive the test.
  // SIGTERM stands for the others (test/helpers/exit.ts handles SIGTERM, SIGINT and SIGHUP alike).
  const signal = 'SIGTERM';
  it(`${signal}: the helper stops its control plane, removes its directory and exits with 128 + the signal's number`, async (t) => {
    if (process.env.DITTOFS_TEST_KUBECONFIG) return t.skip('an external cluster: nothing is started');
    const helper = path.join(REPO_ROOT, 'test', 'helpers', 'k8s.ts');
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        `const { startKubeControlPlane } = await import(${JSON.stringify(helper)});
           const cp = await startKubeControlPlane({ controllerManager: false });
           console.log('DIR=' + cp.dir);
           setInterval(() => undefined, 60_000);`,
      ],
      { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (out = (out + c).slice(-8000)));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once('exit', (code, sig) => resolve({ code, signal: sig })),
    );
    let dir: string | undefined;
    const running = async (): Promise<string[]> =>
      dir === undefined
        ? []
        : (await runProcess('ps', ['-eo', 'pid,args'])).stdout.split('\n').filter((l) => l.includes(dir!) && !l.includes('ps -eo'));
    try {
      dir = await eventually('the child to start its control plane', READY_TIMEOUT_MS, async () => {
        if (child.exitCode !== null) throw new Error(`the child exited (${child.exitCode}): ${out}`);
        return /^DIR=(\S+)$/m.exec(out)?.[1];
      });
      assert.ok(
        (await running()).some((l) => /kube-apiserver/.test(l)),
        'the child runs kube-apiserver',
      );
      assert.ok(
        (await running()).some((l) => /etcd/.test(l)),
        'the child runs etcd',
      );
      child.kill(signal);
      const end = await Promise.race([exited, sleep(COMMAND_TIMEOUT_MS, undefined, { ref: false })]);
      assert.ok(end !== undefined, `the child did not exit on ${signal}`);
      assert.deepEqual(end, { code: 128 + os.constants.signals[signal], signal: null }, out);
      assert.deepEqual(await running(), [], 'no process of the control plane is left');
      assert.equal(existsSync(dir), false, `${dir} is removed`);
    } finally {
      // Without the fix, what the child started outlives it: end those processes (by pid) here.
      child.kill('SIGKILL');
      for (const l of await running()) process.kill(Number(l.trim().split(/\s+/)[0]), 'SIGKILL');
      if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    }
  });
});
