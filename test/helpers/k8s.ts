// A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager as
// child processes on 127.0.0.1 (free ports, a temp directory), built from source by
// hack/k8s/build.sh into a cache outside the repository. No kubelet runs, so pods are created but
// never scheduled or started; everything else (CRDs and their schemas, RBAC, admission, the
// controllers: garbage collection, StatefulSet/Deployment status, service-account tokens) is the
// real thing. stop() kills the processes and removes the directory; an exit hook does the same for
// a control plane still running when the process exits, also on SIGTERM, SIGINT or SIGHUP.
//
// With DITTOFS_TEST_KUBECONFIG set, nothing is started: the tests run against that cluster (any
// conformant one: kind, k3s, a cloud cluster...) and stop() does nothing. KUBECONFIG alone is
// deliberately not enough, so that a developer's current cluster is never used by accident.
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { constants as fsConstants, rmSync } from 'node:fs';
import { access, mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { COMMAND_TIMEOUT_MS, READY_TIMEOUT_MS, STOP_TIMEOUT_MS } from './limits.js';
import { freePort } from './server.js';
import { onProcessExit } from './exit.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BUILD_SH = path.join(REPO_ROOT, 'hack', 'k8s', 'build.sh');

/**
 * The --timeout for `kubectl wait` and `helm --wait` in tests: minutes, a bound against a hang (the
 * command returns as soon as the condition holds). Under the COMMAND_TIMEOUT_MS of the process.
 */
export const K8S_WAIT = `${Math.floor((COMMAND_TIMEOUT_MS - 30_000) / 1000)}s`;

/** Environment variable naming the kubeconfig of an existing cluster to use instead. */
export const EXTERNAL_KUBECONFIG_ENV = 'DITTOFS_TEST_KUBECONFIG';
/** Overrides the directory with the binaries (default: what `hack/k8s/build.sh --print-bin-dir` says). */
export const K8S_BIN_DIR_ENV = 'DITTOFS_K8S_BIN_DIR';

const SERVICE_CIDR = '10.0.0.0/24';
const FIRST_SERVICE_IP = '10.0.0.1';

export interface KubeControlPlane {
  /** Path of an admin kubeconfig (client certificate in group system:masters, or the external one). */
  kubeconfig: string;
  /** `https://127.0.0.1:PORT`, or the external cluster's server URL. */
  server: string;
  /** Environment for kubectl/helm subprocesses: process.env with KUBECONFIG set and binDir first on PATH. */
  env: NodeJS.ProcessEnv;
  /** The directory with kubectl, helm, etcd, kube-apiserver, kube-controller-manager ('' if none is built and the cluster is external). */
  binDir: string;
  /** kubectl to run: the one built with the control plane (or, external and not built, `kubectl` on PATH). */
  kubectl: string;
  /** helm to run, likewise. */
  helm: string;
  /** True for DITTOFS_TEST_KUBECONFIG: nothing was started and stop() does nothing. */
  external: boolean;
  /** The temp directory with certificates, data and logs (`logs/<component>.log`); '' if external. */
  dir: string;
  /** With `node`: its directory (hack/k8s/node.sh DIR) and the veth addresses; else undefined. */
  node?: { dir: string; hostIp: string; nodeIp: string; hostIf: string; name: string };
  /** Kills the processes and removes the directory (idempotent). */
  stop(): Promise<void>;
}

export interface StartKubeOptions {
  /** Start kube-controller-manager too (default true): garbage collection, workload status, SA tokens. */
  controllerManager?: boolean;
  /** Bound for each component to become ready (default READY_TIMEOUT_MS, minutes: kube-apiserver alone can take ~30 s on a loaded machine); an exit fails at once. */
  startTimeoutMs?: number;
  /** Keep the temp directory (logs, certificates) after stop(), for debugging. */
  keepDir?: boolean;
  /**
   * Run a node too (hack/k8s/node.sh: containerd, kubelet, kube-proxy in a namespace of their own,
   * reached through a veth pair) and kube-scheduler, so pods really run. The apiserver then listens
   * on the host end of the veth instead of 127.0.0.1. Needs root and the node binaries.
   */
  node?: boolean;
}

// --- binaries ---------------------------------------------------------------------------------

const SERVER_BINARIES = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kubectl', 'helm'] as const;
/** What a node needs besides (hack/k8s/build.sh builds them after the control plane). */
const NODE_BINARIES = ['kube-scheduler', 'kubelet', 'kube-proxy', 'pause'] as const;
export const NODE_SH = path.join(REPO_ROOT, 'hack', 'k8s', 'node.sh');
export const NODE_NAME = 'dittofs-node';

function execText(file: string, args: string[], timeoutMs: number, env?: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8', env, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        if (err) {
          const why = err.killed ? `timed out after ${timeoutMs} ms` : `failed (${err.message.split('\n')[0]})`;
          reject(new Error(`${path.basename(file)} ${args.join(' ')} ${why}\n${stderr.trim()}`));
        } else {
          resolve(stdout);
        }
      },
    );
  });
}

async function isExecutable(file: string): Promise<boolean> {
  return access(file, fsConstants.X_OK).then(
    () => true,
    () => false,
  );
}

/** The directory hack/k8s/build.sh builds into (it computes it from its pinned version and DITTOFS_K8S_CACHE). */
export async function k8sBinDir(): Promise<string> {
  const given = process.env[K8S_BIN_DIR_ENV];
  if (given !== undefined && given !== '') return given;
  return (await execText(BUILD_SH, ['--print-bin-dir'], COMMAND_TIMEOUT_MS)).trim();
}

/** Throws, naming hack/k8s/build.sh, unless every binary is built and current. */
async function requireBinaries(binDir: string, node = false): Promise<void> {
  const missing: string[] = [];
  const names: readonly string[] = node ? [...SERVER_BINARIES, ...NODE_BINARIES] : SERVER_BINARIES;
  for (const b of names) if (!(await isExecutable(path.join(binDir, b)))) missing.push(b);
  if (missing.length > 0) {
    throw new Error(
      `the Kubernetes control plane is not built: ${missing.join(', ')} missing in ${binDir}. ` +
        `Run hack/k8s/build.sh (it compiles them from the pinned Go modules; the first build takes tens of minutes), ` +
        `or set ${EXTERNAL_KUBECONFIG_ENV} to the kubeconfig of an existing cluster.`,
    );
  }
  if (process.env[K8S_BIN_DIR_ENV] === undefined || process.env[K8S_BIN_DIR_ENV] === '') {
    // Built, but from other pins than the checked-out hack/k8s (a stale cache): say so, do not guess.
    await execText(BUILD_SH, ['--check', ...names], COMMAND_TIMEOUT_MS).catch((e: Error) => {
      throw new Error(`the Kubernetes binaries in ${binDir} are out of date: run hack/k8s/build.sh\n${e.message}`);
    });
  }
}

// --- certificates (openssl CLI) ------------------------------------------------------------------

async function openssl(dir: string, args: string[]): Promise<void> {
  try {
    await new Promise<void>((resolve, reject) => {
      execFile('openssl', args, { cwd: dir, timeout: COMMAND_TIMEOUT_MS, killSignal: 'SIGKILL', encoding: 'utf8' }, (err, _out, stderr) =>
        err ? reject(new Error(`${err.message.split('\n')[0]}\n${stderr.trim()}`)) : resolve(),
      );
    });
  } catch (e) {
    const msg =
      (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'openssl is not installed (apt-get install openssl)' : (e as Error).message;
    throw new Error(`openssl ${args.join(' ')}: ${msg}`);
  }
}

const ecKey = (dir: string, name: string): Promise<void> =>
  openssl(dir, ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', `${name}.key`]);

/** A certificate for `name`.key signed by the CA, with the given subject and v3 extensions. */
async function signedCert(dir: string, name: string, subject: string, ext: string[]): Promise<void> {
  await ecKey(dir, name);
  await openssl(dir, ['req', '-new', '-key', `${name}.key`, '-subj', subject, '-out', `${name}.csr`]);
  await writeFile(path.join(dir, `${name}.ext`), ext.join('\n') + '\n');
  const serial = `0x${Date.now().toString(16)}${Math.floor(Math.random() * 0xffff).toString(16)}`;
  await openssl(dir, [
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-set_serial',
    serial,
    '-days',
    '30',
    '-sha256',
    '-extfile',
    `${name}.ext`,
    '-out',
    `${name}.crt`,
  ]);
}

async function makePki(dir: string, extraIp?: string): Promise<void> {
  await ecKey(dir, 'ca');
  await openssl(dir, [
    'req',
    '-x509',
    '-new',
    '-key',
    'ca.key',
    '-subj',
    '/CN=dittofs-test-kubernetes-ca',
    '-days',
    '30',
    '-sha256',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign,digitalSignature',
    '-out',
    'ca.crt',
  ]);
  const client = ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature', 'extendedKeyUsage=clientAuth'];
  const sans = [
    'IP:127.0.0.1',
    `IP:${FIRST_SERVICE_IP}`,
    ...(extraIp === undefined ? [] : [`IP:${extraIp}`]),
    'DNS:localhost',
    'DNS:kubernetes',
    'DNS:kubernetes.default',
    'DNS:kubernetes.default.svc',
    'DNS:kubernetes.default.svc.cluster.local',
  ];
  await signedCert(dir, 'apiserver', '/CN=kube-apiserver', [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=serverAuth',
    `subjectAltName=${sans.join(',')}`,
  ]);
  await signedCert(dir, 'admin', '/O=system:masters/CN=dittofs-test-admin', client);
  await signedCert(dir, 'controller-manager', '/CN=system:kube-controller-manager', client);
  await signedCert(dir, 'scheduler', '/CN=system:kube-scheduler', client);
  // Service-account tokens: the apiserver signs (TokenRequest) and verifies with this key pair;
  // the controller-manager's token controller signs legacy tokens with it.
  await ecKey(dir, 'sa');
  await openssl(dir, ['pkey', '-in', 'sa.key', '-pubout', '-out', 'sa.pub']);
}

async function writeKubeconfig(file: string, dir: string, server: string, user: string, certName: string): Promise<void> {
  const b64 = async (f: string): Promise<string> => (await readFile(path.join(dir, f))).toString('base64');
  const text = `apiVersion: v1
kind: Config
clusters:
- name: dittofs-test
  cluster:
    server: ${server}
    certificate-authority-data: ${await b64('ca.crt')}
users:
- name: ${user}
  user:
    client-certificate-data: ${await b64(`${certName}.crt`)}
    client-key-data: ${await b64(`${certName}.key`)}
contexts:
- name: ${user}@dittofs-test
  context:
    cluster: dittofs-test
    user: ${user}
current-context: ${user}@dittofs-test
`;
  await writeFile(file, text, { mode: 0o600 });
}

// --- processes -------------------------------------------------------------------------------------

interface Proc {
  name: string;
  child: ChildProcess;
  logFile: string;
}

const live = new Set<Proc>();
const liveDirs = new Set<string>();
/** Node directories (hack/k8s/node.sh) to take down if the process exits with them up. */
const liveNodes = new Set<string>();

/** Kills what is left of every control plane and node (synchronous: it runs on 'exit'). */
function cleanUpNow(): void {
  for (const p of live) p.child.kill('SIGKILL');
  live.clear();
  // Bounded like a stop (`node.sh down` took over a minute on a loaded machine).
  for (const n of liveNodes) spawnSync(NODE_SH, ['down', n], { stdio: 'ignore', timeout: STOP_TIMEOUT_MS });
  liveNodes.clear();
  for (const d of liveDirs) rmSync(d, { recursive: true, force: true });
  liveDirs.clear();
}

let exitHook = false;
/** A killed test must not leave its control plane (and its node: root's network namespace and mounts) running: exit.ts. */
function installExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  onProcessExit(cleanUpNow);
}

async function launch(name: string, bin: string, args: string[], logDir: string): Promise<Proc> {
  const logFile = path.join(logDir, `${name}.log`);
  const log = await open(logFile, 'a');
  const env = { ...process.env };
  delete env.KUBECONFIG;
  const child = spawn(bin, args, { stdio: ['ignore', log.fd, log.fd], env });
  await log.close(); // the child has its own copy of the descriptor
  const proc = { name, child, logFile };
  live.add(proc);
  child.once('exit', () => live.delete(proc));
  child.once('error', () => live.delete(proc));
  return proc;
}

async function logTail(p: Proc, lines = 30): Promise<string> {
  const text = await readFile(p.logFile, 'utf8').catch(() => '');
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

async function kill(p: Proc, graceMs = 10_000): Promise<void> {
  const { child } = p;
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

interface Probe {
  status: number;
  body: string;
}

function get(url: string, tls: https.RequestOptions | undefined): Promise<Probe> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith('https:') ? https : http;
    const req = mod.get(url, { ...tls, timeout: 3000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body = (body + c).slice(0, 8000)));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
  });
}

/** Polls `url` until `ok` (every 250 ms, at most timeoutMs); fails early if the process exits. */
async function waitReady(
  p: Proc,
  url: string,
  tls: https.RequestOptions | undefined,
  ok: (r: Probe) => boolean,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const maxAttempts = Math.ceil(timeoutMs / 250) + 1;
  let last = 'no answer yet';
  for (let attempt = 0; attempt < maxAttempts && Date.now() < deadline; attempt++) {
    if (p.child.exitCode !== null || p.child.signalCode !== null) {
      throw new Error(
        `${p.name} exited (${p.child.signalCode ?? `code ${p.child.exitCode}`}) before it was ready; log ${p.logFile}:\n${await logTail(p)}`,
      );
    }
    try {
      const r = await get(url, tls);
      if (ok(r)) return;
      last = `HTTP ${r.status}: ${
        r.body
          .trim()
          .split('\n')
          .filter((l) => l.includes('failed'))
          .join('; ') || r.body.slice(0, 300)
      }`;
    } catch (e) {
      last = (e as Error).message;
    }
    await sleep(250);
  }
  throw new Error(`${p.name} was not ready at ${url} within ${timeoutMs} ms (last: ${last}); log ${p.logFile}:\n${await logTail(p)}`);
}

// --- the control plane ---------------------------------------------------------------------------

/**
 * The cluster for tests: the one named by DITTOFS_TEST_KUBECONFIG if set (nothing is started),
 * else a private etcd, kube-apiserver and (by default) kube-controller-manager on loopback. Throws,
 * naming hack/k8s/build.sh, if the binaries are not built.
 */
export async function startKubeControlPlane(opts: StartKubeOptions = {}): Promise<KubeControlPlane> {
  const external = process.env[EXTERNAL_KUBECONFIG_ENV];
  if (external !== undefined && external !== '') return useExternal(external);
  return startPrivate(opts);
}

async function startPrivate(opts: StartKubeOptions): Promise<KubeControlPlane> {
  const timeoutMs = opts.startTimeoutMs ?? READY_TIMEOUT_MS;
  const binDir = await k8sBinDir();
  const withNode = opts.node === true;
  await requireBinaries(binDir, withNode);
  installExitHook();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-k8s-'));
  liveDirs.add(dir);
  const procs: Proc[] = [];
  let stopped = false;
  const nodeDir = path.join(dir, 'node');
  let nodeUp = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    try {
      // The node first (its kubelet would otherwise retry the apiserver), then the controllers,
      // then the apiserver, then its storage. `node.sh down` checks that nothing is left.
      let nodeError: Error | undefined;
      if (nodeUp) {
        await execText(NODE_SH, ['down', nodeDir], COMMAND_TIMEOUT_MS).catch((e: Error) => (nodeError = e));
        liveNodes.delete(nodeDir);
      }
      for (const p of [...procs].reverse()) await kill(p);
      if (nodeError !== undefined) throw nodeError;
    } finally {
      liveDirs.delete(dir);
      if (opts.keepDir !== true) await rm(dir, { recursive: true, force: true });
    }
  };
  try {
    const pki = path.join(dir, 'pki');
    const logs = path.join(dir, 'logs');
    await mkdir(pki);
    await mkdir(logs);
    // With a node, the apiserver listens on the host end of the node's veth pair: the node's
    // kubelet and its pods reach it there (127.0.0.1 is the namespace's own loopback).
    let host = '127.0.0.1';
    let node: KubeControlPlane['node'];
    if (withNode) {
      liveNodes.add(nodeDir);
      nodeUp = true;
      const out = await execText(NODE_SH, ['netns', nodeDir], COMMAND_TIMEOUT_MS);
      const hostIp = /^HOST_IP=(\S+)$/m.exec(out)?.[1];
      const nodeIp = /^NODE_IP=(\S+)$/m.exec(out)?.[1];
      const hostIf = /^HOST_IF=(\S+)$/m.exec(out)?.[1];
      if (hostIp === undefined || nodeIp === undefined || hostIf === undefined) throw new Error(`node.sh netns said no addresses:\n${out}`);
      host = hostIp;
      node = { dir: nodeDir, hostIp, nodeIp, hostIf, name: NODE_NAME };
    }
    await makePki(pki, withNode ? host : undefined);
    const f = (name: string): string => path.join(pki, name);
    const tls: https.RequestOptions = {
      ca: await readFile(f('ca.crt')),
      cert: await readFile(f('admin.crt')),
      key: await readFile(f('admin.key')),
    };

    // etcd: plain HTTP on loopback, no fsync (test data only).
    const [etcdClient, etcdPeer] = [await freePort(), await freePort()];
    const etcd = await launch(
      'etcd',
      path.join(binDir, 'etcd'),
      [
        '--name=dittofs-test',
        `--data-dir=${path.join(dir, 'etcd')}`,
        `--listen-client-urls=http://127.0.0.1:${etcdClient}`,
        `--advertise-client-urls=http://127.0.0.1:${etcdClient}`,
        `--listen-peer-urls=http://127.0.0.1:${etcdPeer}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeer}`,
        `--initial-cluster=dittofs-test=http://127.0.0.1:${etcdPeer}`,
        '--initial-cluster-state=new',
        '--unsafe-no-fsync',
        '--log-level=warn',
        '--quota-backend-bytes=1073741824',
      ],
      logs,
    );
    procs.push(etcd);
    await waitReady(
      etcd,
      `http://127.0.0.1:${etcdClient}/health`,
      undefined,
      (r) => r.status === 200 && r.body.includes('"true"'),
      timeoutMs,
    );

    const apiPort = await freePort();
    const server = `https://${host}:${apiPort}`;
    const apiserver = await launch(
      'kube-apiserver',
      path.join(binDir, 'kube-apiserver'),
      [
        `--bind-address=${host}`,
        `--advertise-address=${host}`,
        `--secure-port=${apiPort}`,
        `--cert-dir=${pki}`,
        `--etcd-servers=http://127.0.0.1:${etcdClient}`,
        `--client-ca-file=${f('ca.crt')}`,
        `--tls-cert-file=${f('apiserver.crt')}`,
        `--tls-private-key-file=${f('apiserver.key')}`,
        '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
        `--service-account-key-file=${f('sa.pub')}`,
        `--service-account-signing-key-file=${f('sa.key')}`,
        `--service-cluster-ip-range=${SERVICE_CIDR}`,
        '--authorization-mode=Node,RBAC',
        '--allow-privileged=true',
        // Without a node, nothing answers at the advertise address: nothing to reconcile into the
        // `kubernetes` Service's endpoints (a loopback endpoint would be rejected anyway). With
        // one, pods reach the apiserver through that Service; the apiserver reaches kubelets
        // (logs, exec) at their InternalIP with the admin certificate.
        ...(withNode
          ? [
              '--kubelet-preferred-address-types=InternalIP',
              `--kubelet-client-certificate=${f('admin.crt')}`,
              `--kubelet-client-key=${f('admin.key')}`,
            ]
          : ['--endpoint-reconciler-type=none']),
        '--profiling=false',
        '--v=1',
      ],
      logs,
    );
    procs.push(apiserver);
    await waitReady(apiserver, `${server}/readyz`, tls, (r) => r.status === 200, timeoutMs);

    const kubeconfig = path.join(dir, 'admin.kubeconfig');
    await writeKubeconfig(kubeconfig, pki, server, 'dittofs-test-admin', 'admin');

    if (opts.controllerManager !== false) {
      const cmKubeconfig = path.join(dir, 'controller-manager.kubeconfig');
      await writeKubeconfig(cmKubeconfig, pki, server, 'system:kube-controller-manager', 'controller-manager');
      const cmPort = await freePort();
      const cm = await launch(
        'kube-controller-manager',
        path.join(binDir, 'kube-controller-manager'),
        [
          `--kubeconfig=${cmKubeconfig}`,
          `--authentication-kubeconfig=${cmKubeconfig}`,
          `--authorization-kubeconfig=${cmKubeconfig}`,
          // Its own HTTPS endpoint (healthz) trusts our CA; no front proxy is configured, so it need not
          // look up the request-header CA in the cluster (it would log errors about it forever).
          `--client-ca-file=${f('ca.crt')}`,
          '--authentication-skip-lookup=true',
          '--bind-address=127.0.0.1',
          `--secure-port=${cmPort}`,
          `--cert-dir=${path.join(dir, 'controller-manager-certs')}`,
          '--leader-elect=false',
          '--use-service-account-credentials=true',
          `--service-account-private-key-file=${f('sa.key')}`,
          `--root-ca-file=${f('ca.crt')}`,
          `--cluster-signing-cert-file=${f('ca.crt')}`,
          `--cluster-signing-key-file=${f('ca.key')}`,
          `--service-cluster-ip-range=${SERVICE_CIDR}`,
          '--cluster-name=dittofs-test',
          // Every default controller except those that need a cloud provider or node networking.
          '--controllers=*,-cloud-node-lifecycle-controller,-service-lb-controller,-node-route-controller,-node-ipam-controller',
          '--profiling=false',
          '--v=1',
        ],
        logs,
      );
      procs.push(cm);
      await waitReady(cm, `https://127.0.0.1:${cmPort}/healthz`, { rejectUnauthorized: false }, (r) => r.status === 200, timeoutMs);
    }

    if (withNode) {
      const schedKubeconfig = path.join(dir, 'scheduler.kubeconfig');
      await writeKubeconfig(schedKubeconfig, pki, server, 'system:kube-scheduler', 'scheduler');
      const schedPort = await freePort();
      const sched = await launch(
        'kube-scheduler',
        path.join(binDir, 'kube-scheduler'),
        [
          `--kubeconfig=${schedKubeconfig}`,
          `--authentication-kubeconfig=${schedKubeconfig}`,
          `--authorization-kubeconfig=${schedKubeconfig}`,
          `--client-ca-file=${f('ca.crt')}`,
          '--authentication-skip-lookup=true',
          '--bind-address=127.0.0.1',
          `--secure-port=${schedPort}`,
          `--cert-dir=${path.join(dir, 'scheduler-certs')}`,
          '--leader-elect=false',
          '--profiling=false',
          '--v=1',
        ],
        logs,
      );
      procs.push(sched);
      await waitReady(sched, `https://127.0.0.1:${schedPort}/healthz`, { rejectUnauthorized: false }, (r) => r.status === 200, timeoutMs);
      await execText(NODE_SH, ['start', nodeDir, server, f('ca.crt'), f('ca.key')], timeoutMs);
      // Registered and Ready: polled (a `kubectl wait` fails at once on a node not registered yet).
      const deadline = Date.now() + timeoutMs;
      let last = '';
      for (let attempt = 0; attempt < timeoutMs / 500 + 1 && Date.now() < deadline; attempt++) {
        last = await execText(
          path.join(binDir, 'kubectl'),
          ['--kubeconfig', kubeconfig, 'get', 'node', NODE_NAME, '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'],
          COMMAND_TIMEOUT_MS,
        ).catch((e: Error) => e.message.split('\n').slice(-1)[0] ?? '');
        if (last.trim() === 'True') break;
        await sleep(500);
      }
      if (last.trim() !== 'True')
        throw new Error(`node ${NODE_NAME} not Ready within ${timeoutMs} ms (last: ${last.trim()}); logs in ${nodeDir}/logs`);
    }

    return {
      kubeconfig,
      server,
      env: { ...process.env, KUBECONFIG: kubeconfig, PATH: `${binDir}${path.delimiter}${process.env.PATH ?? ''}` },
      binDir,
      kubectl: path.join(binDir, 'kubectl'),
      helm: path.join(binDir, 'helm'),
      external: false,
      dir,
      node,
      stop,
    };
  } catch (e) {
    await stop().catch(() => undefined);
    throw e;
  }
}

/** An existing cluster named by DITTOFS_TEST_KUBECONFIG: nothing is started or stopped. */
async function useExternal(kubeconfig: string): Promise<KubeControlPlane> {
  let binDir = '';
  try {
    const d = await k8sBinDir();
    if (await isExecutable(path.join(d, 'kubectl'))) binDir = d;
  } catch {
    // No build: kubectl and helm from PATH.
  }
  const tool = (name: string): string => (binDir === '' ? name : path.join(binDir, name));
  const env: NodeJS.ProcessEnv = { ...process.env, KUBECONFIG: kubeconfig };
  if (binDir !== '') env.PATH = `${binDir}${path.delimiter}${process.env.PATH ?? ''}`;
  const server = (
    await execText(
      tool('kubectl'),
      ['--kubeconfig', kubeconfig, 'config', 'view', '--minify', '-o', 'jsonpath={.clusters[0].cluster.server}'],
      COMMAND_TIMEOUT_MS,
      env,
    )
  ).trim();
  return {
    kubeconfig,
    server,
    env,
    binDir,
    kubectl: tool('kubectl'),
    helm: tool('helm'),
    external: true,
    dir: '',
    stop: async () => undefined,
  };
}

/**
 * Polls `probe` every `intervalMs` until it returns something other than undefined (a throw counts
 * as "not yet" and is remembered); past `timeoutMs` the test fails naming `what`, the last error and
 * what `context` says (the cluster's objects, the operator's log).
 */
export async function pollUntil<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  opts: { timeoutMs: number; intervalMs: number; context: () => string | Promise<string> },
): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    await sleep(opts.intervalMs);
  }
  const lastError = last === undefined ? '' : ` (last error: ${last instanceof Error ? last.message : JSON.stringify(last)})`;
  throw new assert.AssertionError({ message: `timed out waiting for ${what}${lastError}\n${await opts.context()}` });
}
