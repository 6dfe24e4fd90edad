// The operator's settings: command-line flags, else environment variables, else defaults.
// Flags win over the environment so a one-off run can override a Deployment's env.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { LOG_LEVEL_NAMES, type LogLevelName } from './log.js';
import { POD_ADDRESS_MODES, type PodAddressMode } from './dittofs-api/pods.js';
import { OPERATOR_VERSION } from './version.js';
import { errorMessage } from './error-message.js';

export interface OperatorConfig {
  /** A kubeconfig file; undefined: KUBECONFIG, ~/.kube/config, or the in-cluster service account. */
  kubeconfig?: string;
  /** Namespaces to watch; empty: all. */
  namespaces: string[];
  logLevel: LogLevelName;
  leaderElection: { enabled: boolean; leaseName: string; leaseNamespace: string; identity?: string };
  podAddressMode: PodAddressMode;
  /** Every DittoFS and its resources are reconciled again this often, events or not. */
  resyncMs: number;
  defaultImage: string;
  clusterDomain: string;
  /** Reconciles in flight per controller. */
  concurrency: number;
  /** Port of /healthz and /readyz (0: none). */
  healthPort: number;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly code = 'OPERATOR_CONFIG_INVALID';
}

export const ENV = Object.freeze({
  namespaces: 'WATCH_NAMESPACES',
  logLevel: 'DITTOFS_OPERATOR_LOG_LEVEL',
  leaderElect: 'DITTOFS_OPERATOR_LEADER_ELECT',
  leaseName: 'DITTOFS_OPERATOR_LEASE_NAME',
  leaseNamespace: 'DITTOFS_OPERATOR_LEASE_NAMESPACE',
  identity: 'DITTOFS_OPERATOR_IDENTITY',
  podAddress: 'DITTOFS_OPERATOR_POD_ADDRESS',
  resync: 'DITTOFS_OPERATOR_RESYNC',
  defaultImage: 'DITTOFS_OPERATOR_DEFAULT_IMAGE',
  clusterDomain: 'DITTOFS_OPERATOR_CLUSTER_DOMAIN',
  concurrency: 'DITTOFS_OPERATOR_CONCURRENCY',
  healthPort: 'DITTOFS_OPERATOR_HEALTH_PORT',
  /** Set by the Downward API in the chart: the namespace the operator runs in. */
  podNamespace: 'POD_NAMESPACE',
} as const);

export const USAGE = `dittofs-operator ${OPERATOR_VERSION}: reconciles DittoFS, Store, Share and User resources (dittofs.io/v1alpha1).

Usage: dittofs-operator [flags]

Flags (environment variable in brackets; flags win):
  --kubeconfig FILE         kubeconfig to use [KUBECONFIG]; default ~/.kube/config, else in-cluster
  --namespaces A,B          namespaces to watch [${ENV.namespaces}]; empty: all namespaces
  --log-level LEVEL         ${LOG_LEVEL_NAMES.join('|')} [${ENV.logLevel}] (default info)
  --leader-elect BOOL       elect a leader through a Lease so replicas do not fight [${ENV.leaderElect}] (default true)
  --lease-name NAME         [${ENV.leaseName}] (default dittofs-operator-leader)
  --lease-namespace NS      [${ENV.leaseNamespace}] (default: $${ENV.podNamespace}, the in-cluster namespace, else default)
  --identity ID             leader identity [${ENV.identity}] (default: hostname and a random suffix)
  --pod-address MODE        how server pods are reached [${ENV.podAddress}] (default dns):
                              dns         <pod>.<name>-headless.<ns>.svc.<cluster-domain>:8080
                              ip          the pod IP, port 8080
                              annotation  URLs in the DittoFS annotation dittofs.io/test-endpoint
                                          (tests without a kubelet; see operator/README.md)
  --resync DURATION         reconcile everything again this often [${ENV.resync}] (default 5m; 30s, 10m, 1h)
  --default-image IMAGE     server image when a DittoFS names none [${ENV.defaultImage}] (default ghcr.io/dittofs/dittofs:${OPERATOR_VERSION})
  --cluster-domain DOMAIN   [${ENV.clusterDomain}] (default cluster.local)
  --concurrency N           reconciles in flight per kind [${ENV.concurrency}] (default 4)
  --health-port PORT        /healthz and /readyz [${ENV.healthPort}] (default 8081; 0: off)
  -h, --help                this text
  -v, --version             the version
`;

/** "90s", "5m", "1h", "1500ms" or plain seconds -> milliseconds. */
export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(s.trim());
  if (m === null) throw new ConfigError(`invalid duration ${JSON.stringify(s)}: use e.g. 30s, 5m, 1h`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 's'] ?? 1000;
  return Math.round(Number(m[1]) * unit);
}

function parseBool(s: string, what: string): boolean {
  if (/^(true|1|yes|on)$/i.test(s)) return true;
  if (/^(false|0|no|off)$/i.test(s)) return false;
  throw new ConfigError(`${what}: expected true or false, got ${JSON.stringify(s)}`);
}

function parseInteger(s: string, what: string, min: number, max: number): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new ConfigError(`${what}: expected an integer from ${min} to ${max}, got ${JSON.stringify(s)}`);
  return n;
}

function inClusterNamespace(): string | undefined {
  try {
    return readFileSync('/var/run/secrets/kubernetes.io/serviceaccount/namespace', 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

export type ParsedArgs = { help: true } | { version: true } | { config: OperatorConfig };

export function parseConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): ParsedArgs {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        kubeconfig: { type: 'string' },
        namespaces: { type: 'string' },
        'log-level': { type: 'string' },
        'leader-elect': { type: 'string' },
        'lease-name': { type: 'string' },
        'lease-namespace': { type: 'string' },
        identity: { type: 'string' },
        'pod-address': { type: 'string' },
        resync: { type: 'string' },
        'default-image': { type: 'string' },
        'cluster-domain': { type: 'string' },
        concurrency: { type: 'string' },
        'health-port': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    }).values;
  } catch (e) {
    throw new ConfigError(`${errorMessage(e)} (see --help)`);
  }
  if (values.help === true) return { help: true };
  if (values.version === true) return { version: true };
  const pick = (flag: string, envName: string): string | undefined => {
    const f = values[flag];
    if (typeof f === 'string') return f;
    const e = env[envName];
    return e === undefined || e === '' ? undefined : e;
  };

  const logLevel = pick('log-level', ENV.logLevel) ?? 'info';
  if (!(LOG_LEVEL_NAMES as readonly string[]).includes(logLevel)) {
    throw new ConfigError(`log level ${JSON.stringify(logLevel)}: use one of ${LOG_LEVEL_NAMES.join(', ')}`);
  }
  const mode = pick('pod-address', ENV.podAddress) ?? 'dns';
  if (!(POD_ADDRESS_MODES as readonly string[]).includes(mode)) {
    throw new ConfigError(`pod address mode ${JSON.stringify(mode)}: use one of ${POD_ADDRESS_MODES.join(', ')}`);
  }
  const namespaces = (pick('namespaces', ENV.namespaces) ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const ns of namespaces) {
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(ns) || ns.length > 63)
      throw new ConfigError(`namespace ${JSON.stringify(ns)} is not a valid name`);
  }
  const resyncMs = parseDuration(pick('resync', ENV.resync) ?? '5m');
  if (resyncMs < 1000) throw new ConfigError('resync must be at least 1s');
  const identity = pick('identity', ENV.identity);
  const kubeconfig = typeof values.kubeconfig === 'string' ? values.kubeconfig : undefined;
  return {
    config: {
      ...(kubeconfig === undefined ? {} : { kubeconfig }),
      namespaces: [...new Set(namespaces)],
      logLevel: logLevel as LogLevelName,
      leaderElection: {
        enabled: parseBool(pick('leader-elect', ENV.leaderElect) ?? 'true', 'leader election'),
        leaseName: pick('lease-name', ENV.leaseName) ?? 'dittofs-operator-leader',
        leaseNamespace: pick('lease-namespace', ENV.leaseNamespace) ?? env[ENV.podNamespace] ?? inClusterNamespace() ?? 'default',
        ...(identity === undefined ? {} : { identity }),
      },
      podAddressMode: mode as PodAddressMode,
      resyncMs,
      defaultImage: pick('default-image', ENV.defaultImage) ?? `ghcr.io/dittofs/dittofs:${OPERATOR_VERSION}`,
      clusterDomain: pick('cluster-domain', ENV.clusterDomain) ?? 'cluster.local',
      concurrency: parseInteger(pick('concurrency', ENV.concurrency) ?? '4', 'concurrency', 1, 64),
      healthPort: parseInteger(pick('health-port', ENV.healthPort) ?? '8081', 'health port', 0, 65535),
    },
  };
}
