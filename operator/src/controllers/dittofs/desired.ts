// What a DittoFS should own, as pure functions of its spec: the server config (rendered into a
// Secret, since it may hold a PostgreSQL URL with a password), the StatefulSet, the headless and
// client Services, and the two Secrets generated once (JWT key, the operator's admin credential).
// The reconciler (reconcile.ts) applies these; nothing here talks to the cluster.
import { createHash, randomBytes } from 'node:crypto';
import {
  dumpYaml,
  type V1Container,
  type V1ContainerPort,
  type V1EnvVar,
  type V1Secret,
  type V1Service,
  type V1StatefulSet,
} from '@kubernetes/client-node';
import { CONFIG_HASH_ANNOTATION, type DittoFS, type Quantity } from '../../api/types.js';
import { parseQuantityBytes } from '../../kube/quantity.js';
import {
  ADMIN_SECRET_KEYS,
  ADMIN_USERNAME,
  API_PORT,
  CONFIG_DIR,
  CONFIG_KEY,
  CONFIG_PATH,
  CONTAINER_NAME,
  DATA_DIR,
  DATA_VOLUME,
  JWT_SECRET_KEY,
  SERVER_UID,
  childNames,
  commonLabels,
  ownerReference,
  selectorLabels,
} from './names.js';

/** Defaults of the CRD schema, for objects stored before a default existed. */
export const SPEC_DEFAULTS = Object.freeze({
  replicas: 1,
  cacheSize: '10Gi',
  nfsPort: 12049,
  smbPort: 12445,
  metricsPort: 9090,
  logLevel: 'info',
  serviceType: 'ClusterIP',
} as const);

/**
 * Pods that may run on one set of stores without coordination: several servers on one store lose
 * data unless they coordinate (Redis leases and fencing tokens; each server also fences its
 * PostgreSQL stores, so a second uncoordinated pod would not start anyway).
 */
export const MAX_UNCOORDINATED_REPLICAS = 1;

export interface ReplicaPlan {
  /** Pods the StatefulSet runs. */
  replicas: number;
  /** Why fewer than spec.replicas (Ready=False with this reason). */
  limited?: { reason: 'CoordinationRequired'; message: string };
}

/**
 * How many pods to run for spec.replicas. More than one needs a PostgreSQL database and a Redis
 * (the CRD's rule says so too; this holds when that rule is bypassed or predates the object): with
 * both, the servers coordinate (write leases, cache invalidation, control-plane generations) and
 * every pod asked for runs; without, one pod and a condition that says why.
 */
export function replicaPlan(dfs: DittoFS): ReplicaPlan {
  const asked = dfs.spec.replicas ?? SPEC_DEFAULTS.replicas;
  if (asked <= MAX_UNCOORDINATED_REPLICAS) return { replicas: asked };
  const missing = [
    ...((dfs.spec.database?.type ?? 'embedded') === 'postgres' ? [] : ['database.type postgres']),
    ...(dfs.spec.coordination?.redis === undefined ? ['coordination.redis'] : []),
  ];
  if (missing.length === 0) return { replicas: asked };
  const replicas = MAX_UNCOORDINATED_REPLICAS;
  return {
    replicas,
    limited: {
      reason: 'CoordinationRequired',
      message: `replicas ${asked} > 1 requires ${missing.join(' and ')} (several servers on one store lose data without coordination); running ${replicas} pod`,
    },
  };
}

/** The server refuses a smaller WAL (server/src/config/schema.ts). */
export const MIN_WAL_BYTES = 4 * 1024 * 1024;
/** Shares of the cache volume the WAL and the disk read cache may fill (the CRD's cache.size says so). */
export const WAL_SHARE_OF_VOLUME = 0.6;
export const DISK_CACHE_SHARE_OF_VOLUME = 0.3;

export interface DesiredInputs {
  dfs: DittoFS;
  /** The server image when spec.image is absent: the operator's own version of it. */
  defaultImage: string;
  /** The PostgreSQL URL read from spec.database.postgres.urlSecretRef (database type postgres). */
  databaseUrl?: string;
  /**
   * The WAL volume size in force: spec.cache.size, except when the StatefulSet already exists with
   * another size (its volume claims cannot change): then that size, so the WAL limit fits the disk.
   */
  cacheSize?: Quantity;
  /**
   * The storage class in force, when the StatefulSet already exists: the one of its volume claim
   * template (`name` undefined: none set there, the cluster's default), whatever the spec says now.
   */
  storageClass?: { name: string | undefined };
}

export interface Adapters {
  nfs: { enabled: boolean; port: number };
  smb: { enabled: boolean; port: number };
  metrics: { enabled: boolean; port: number };
}

export function adaptersOf(dfs: DittoFS): Adapters {
  const s = dfs.spec;
  return {
    nfs: { enabled: s.adapters?.nfs?.enabled ?? true, port: s.adapters?.nfs?.port ?? SPEC_DEFAULTS.nfsPort },
    smb: { enabled: s.adapters?.smb?.enabled ?? false, port: s.adapters?.smb?.port ?? SPEC_DEFAULTS.smbPort },
    metrics: { enabled: s.metrics?.enabled ?? true, port: s.metrics?.port ?? SPEC_DEFAULTS.metricsPort },
  };
}

export function cacheSizeOf(inputs: DesiredInputs): Quantity {
  return inputs.cacheSize ?? inputs.dfs.spec.cache?.size ?? SPEC_DEFAULTS.cacheSize;
}

// ---------------------------------------------------------------------------------------------
// The server config

/**
 * The server's YAML config (keys as in server/src/config/types.ts). Only infrastructure: stores,
 * shares and users come through the control plane (PUT /api/v1/state). `shares: []` keeps the
 * server from seeding its /export share; it still seeds its two `default` stores on an empty
 * control database, which the first desired-state push removes again.
 */
export function serverConfig(inputs: DesiredInputs): Record<string, unknown> {
  const { dfs } = inputs;
  const a = adaptersOf(dfs);
  const db = dfs.spec.database;
  const pg = db?.postgres;
  let database: Record<string, unknown> = { type: 'embedded' };
  if ((db?.type ?? 'embedded') === 'postgres') {
    if (inputs.databaseUrl === undefined) throw new Error('database type postgres needs the URL from its Secret');
    database = {
      type: 'postgres',
      url: inputs.databaseUrl,
      ...(pg?.schema === undefined ? {} : { schema: pg.schema }),
      ...(pg?.poolSize === undefined ? {} : { pool_size: pg.poolSize }),
    };
  }
  const volumeBytes = parseQuantityBytes(cacheSizeOf(inputs));
  const walBytes = Math.max(MIN_WAL_BYTES, Math.floor(volumeBytes * WAL_SHARE_OF_VOLUME));
  // The URL and the password reach the pod from their Secrets as environment variables (see
  // desiredStatefulSet): never in this rendered file.
  const redis = dfs.spec.coordination?.redis;
  const coordination =
    redis === undefined
      ? {}
      : {
          coordination: {
            redis: {
              key_prefix: redis.keyPrefix ?? `${dfs.metadata.namespace ?? ''}/${dfs.metadata.name}/`,
              tls: redis.tls?.enabled ?? false,
              ...(redis.passwordSecretRef === undefined ? {} : { password_env: REDIS_PASSWORD_ENV }),
            },
          },
        };
  return {
    data_dir: DATA_DIR,
    // Standard output only (kubectl logs): no log file growing on the WAL's volume.
    logging: { level: dfs.spec.logLevel ?? SPEC_DEFAULTS.logLevel, format: 'json', file: '-' },
    adapters: {
      nfs: { enabled: a.nfs.enabled, port: a.nfs.port, bind: '0.0.0.0' },
      smb: { enabled: a.smb.enabled, port: a.smb.port, bind: '0.0.0.0' },
    },
    server: { api: { enabled: true, port: API_PORT, bind: '0.0.0.0' } },
    database,
    ...coordination,
    metrics: { enabled: a.metrics.enabled, port: a.metrics.port, bind: '0.0.0.0' },
    cache: {
      wal_dir: `${DATA_DIR}/wal`,
      wal_max_bytes: walBytes,
      disk_cache_dir: `${DATA_DIR}/cache`,
      disk_cache_bytes: Math.floor(volumeBytes * DISK_CACHE_SHARE_OF_VOLUME),
    },
    shares: [],
  };
}

/** The variable the server reads the Redis password from (coordination.redis.password_env). */
export const REDIS_PASSWORD_ENV = 'REDIS_PASSWORD';

/** spec.coordination.redis: its URL and password from their Secrets, as the server reads them. */
function redisEnv(dfs: DittoFS): V1EnvVar[] {
  const redis = dfs.spec.coordination?.redis;
  if (redis === undefined) return [];
  const ref = (r: { name: string; key: string }) => ({ secretKeyRef: { name: r.name, key: r.key } });
  return [
    { name: 'DITTOFS_COORDINATION__REDIS__URL', valueFrom: ref(redis.urlSecretRef) },
    ...(redis.passwordSecretRef === undefined ? [] : [{ name: REDIS_PASSWORD_ENV, valueFrom: ref(redis.passwordSecretRef) }]),
  ];
}

export function renderServerConfig(inputs: DesiredInputs): string {
  const { name, namespace } = inputs.dfs.metadata;
  return (
    `# DittoFS server config rendered by dittofs-operator for DittoFS ${namespace ?? ''}/${name}.\n` +
    `# Edits are overwritten: change the DittoFS resource instead. Stores, shares and users come\n` +
    `# from Store, Share and User resources through the control-plane API.\n` +
    dumpYaml(serverConfig(inputs), { lineWidth: -1, noRefs: true, sortKeys: false })
  );
}

/** sha256 (hex) of the rendered config: the pod template annotation that rolls the pods. */
export function configHash(rendered: string): string {
  return createHash('sha256').update(rendered, 'utf8').digest('hex');
}

// ---------------------------------------------------------------------------------------------
// Objects

function meta(dfs: DittoFS, name: string, extra: { annotations?: Record<string, string> } = {}) {
  return { ...keptMeta(dfs, name, extra), ownerReferences: [ownerReference(dfs)] };
}

/**
 * The metadata of a child the DittoFS does not own (NAME-admin, NAME-jwt): labelled as the
 * operator's for this DittoFS, no owner reference, so deleting the DittoFS leaves it with the PVCs.
 * The embedded control database on the PVC knows the admin password and signed tokens with the
 * key: a DittoFS made again on that data needs the same Secrets, not new random ones.
 */
function keptMeta(dfs: DittoFS, name: string, extra: { annotations?: Record<string, string> } = {}) {
  return {
    name,
    namespace: dfs.metadata.namespace,
    labels: commonLabels(dfs.metadata.name),
    ...(extra.annotations !== undefined && Object.keys(extra.annotations).length > 0 ? { annotations: extra.annotations } : {}),
  };
}

export function desiredConfigSecret(dfs: DittoFS, rendered: string): V1Secret {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: meta(dfs, childNames(dfs.metadata.name).configSecret),
    type: 'Opaque',
    data: { [CONFIG_KEY]: Buffer.from(rendered, 'utf8').toString('base64') },
  };
}

/** A random secret of `bytes` bytes as base64url (no padding): 24 bytes -> 32 characters. */
export function randomSecret(bytes: number, random: (n: number) => Buffer = randomBytes): string {
  return random(bytes).toString('base64url');
}

/** The JWT key Secret, generated once (the reconciler never replaces an existing one), kept (keptMeta). */
export function newJwtSecret(dfs: DittoFS, random?: (n: number) => Buffer): V1Secret {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: keptMeta(dfs, childNames(dfs.metadata.name).jwtSecret),
    type: 'Opaque',
    data: { [JWT_SECRET_KEY]: b64(randomSecret(48, random)) },
  };
}

/**
 * The operator's admin credential, generated once: `initial-password` is given to the pods as
 * DITTOFS_ADMIN_INITIAL_PASSWORD (the bootstrap admin's first password, which the server makes the
 * first login change); `password` is what the operator changes it to and logs in with from then on.
 * Both exist before the first login, so no crash between "changed on the server" and "stored in
 * the Secret" can lose the password (see dittofs-api/client.ts). Kept when the DittoFS is deleted
 * (keptMeta): the servers' data keeps knowing `password`.
 */
export function newAdminSecret(dfs: DittoFS, random?: (n: number) => Buffer): V1Secret {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: keptMeta(dfs, childNames(dfs.metadata.name).adminSecret),
    type: 'Opaque',
    data: {
      [ADMIN_SECRET_KEYS.username]: b64(ADMIN_USERNAME),
      [ADMIN_SECRET_KEYS.initialPassword]: b64(randomSecret(24, random)),
      [ADMIN_SECRET_KEYS.password]: b64(randomSecret(24, random)),
    },
  };
}

/**
 * The three Secrets of a DittoFS. `config` is applied on every reconcile; `jwt` and `admin` are
 * created only when missing (fresh random values here: the reconciler never replaces existing ones).
 */
export function desiredSecrets(
  dfs: DittoFS,
  rendered: string,
  random?: (n: number) => Buffer,
): { config: V1Secret; jwt: V1Secret; admin: V1Secret } {
  return { config: desiredConfigSecret(dfs, rendered), jwt: newJwtSecret(dfs, random), admin: newAdminSecret(dfs, random) };
}

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

function containerPorts(a: Adapters): V1ContainerPort[] {
  const ports: V1ContainerPort[] = [];
  if (a.nfs.enabled) ports.push({ name: 'nfs', containerPort: a.nfs.port, protocol: 'TCP' });
  if (a.smb.enabled) ports.push({ name: 'smb', containerPort: a.smb.port, protocol: 'TCP' });
  ports.push({ name: 'api', containerPort: API_PORT, protocol: 'TCP' });
  if (a.metrics.enabled) ports.push({ name: 'metrics', containerPort: a.metrics.port, protocol: 'TCP' });
  return ports;
}

function resourcesOf(dfs: DittoFS): V1Container['resources'] {
  const r = dfs.spec.resources;
  if (r === undefined) return undefined;
  const str = (m: Record<string, Quantity> | undefined) =>
    m === undefined ? undefined : Object.fromEntries(Object.entries(m).map(([k, v]) => [k, String(v)]));
  const limits = str(r.limits);
  const requests = str(r.requests);
  return { ...(limits === undefined ? {} : { limits }), ...(requests === undefined ? {} : { requests }) };
}

export function desiredStatefulSet(inputs: DesiredInputs, hash: string): V1StatefulSet {
  const { dfs } = inputs;
  const names = childNames(dfs.metadata.name);
  const a = adaptersOf(dfs);
  const image = dfs.spec.image ?? inputs.defaultImage;
  const resources = resourcesOf(dfs);
  const storageClassName = inputs.storageClass !== undefined ? inputs.storageClass.name : dfs.spec.cache?.storageClassName;
  const podAnnotations: Record<string, string> = { [CONFIG_HASH_ANNOTATION]: hash };
  if (a.metrics.enabled) {
    podAnnotations['prometheus.io/scrape'] = 'true';
    podAnnotations['prometheus.io/port'] = String(a.metrics.port);
    podAnnotations['prometheus.io/path'] = '/metrics';
  }
  const container: V1Container = {
    name: CONTAINER_NAME,
    image,
    ...(dfs.spec.imagePullPolicy === undefined ? {} : { imagePullPolicy: dfs.spec.imagePullPolicy }),
    // The image's entrypoint is the `dittofs` CLI.
    args: ['start'],
    env: [
      { name: 'DITTOFS_CONFIG', value: CONFIG_PATH },
      // An environment override beats the file: set it to the file's value, whatever the image says.
      { name: 'DITTOFS_DATA_DIR', value: DATA_DIR },
      { name: 'DITTOFS_JWT_SECRET', valueFrom: { secretKeyRef: { name: names.jwtSecret, key: JWT_SECRET_KEY } } },
      {
        name: 'DITTOFS_ADMIN_INITIAL_PASSWORD',
        valueFrom: { secretKeyRef: { name: names.adminSecret, key: ADMIN_SECRET_KEYS.initialPassword } },
      },
      ...redisEnv(dfs),
    ],
    ports: containerPorts(a),
    // WAL replay after a crash can take a while: the startup probe gives it up to 10 minutes
    // before liveness counts.
    startupProbe: { httpGet: { path: '/health', port: 'api' }, periodSeconds: 5, timeoutSeconds: 3, failureThreshold: 120 },
    livenessProbe: { httpGet: { path: '/health', port: 'api' }, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 6 },
    readinessProbe: { httpGet: { path: '/health/ready', port: 'api' }, periodSeconds: 5, timeoutSeconds: 3, failureThreshold: 3 },
    ...(resources === undefined ? {} : { resources }),
    securityContext: {
      runAsNonRoot: true,
      runAsUser: SERVER_UID,
      runAsGroup: SERVER_UID,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    volumeMounts: [
      { name: DATA_VOLUME, mountPath: DATA_DIR },
      { name: 'config', mountPath: CONFIG_DIR, readOnly: true },
      { name: 'tmp', mountPath: '/tmp' },
    ],
  };
  return {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: meta(dfs, names.statefulSet),
    spec: {
      replicas: replicaPlan(dfs).replicas,
      serviceName: names.headlessService,
      // Pods are independent servers: start and replace them all at once.
      podManagementPolicy: 'Parallel',
      updateStrategy: { type: 'RollingUpdate' },
      selector: { matchLabels: selectorLabels(dfs.metadata.name) },
      template: {
        metadata: { labels: { ...commonLabels(dfs.metadata.name), 'app.kubernetes.io/component': 'server' }, annotations: podAnnotations },
        spec: {
          // The pod needs no Kubernetes API access, and service-link variables named DITTOFS_*
          // would only clutter its environment.
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          terminationGracePeriodSeconds: 60,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: SERVER_UID,
            runAsGroup: SERVER_UID,
            fsGroup: SERVER_UID,
            fsGroupChangePolicy: 'OnRootMismatch',
            seccompProfile: { type: 'RuntimeDefault' },
          },
          containers: [container],
          volumes: [
            {
              name: 'config',
              secret: { secretName: names.configSecret, defaultMode: 0o440, items: [{ key: CONFIG_KEY, path: CONFIG_KEY }] },
            },
            { name: 'tmp', emptyDir: { sizeLimit: '256Mi' } },
          ],
        },
      },
      volumeClaimTemplates: [
        {
          apiVersion: 'v1',
          kind: 'PersistentVolumeClaim',
          metadata: { name: DATA_VOLUME, labels: selectorLabels(dfs.metadata.name) },
          spec: {
            accessModes: ['ReadWriteOnce'],
            ...(storageClassName === undefined ? {} : { storageClassName }),
            resources: { requests: { storage: String(cacheSizeOf(inputs)) } },
          },
        },
      ],
    },
  };
}

export function desiredServices(dfs: DittoFS): [headless: V1Service, client: V1Service] {
  const names = childNames(dfs.metadata.name);
  const a = adaptersOf(dfs);
  const ports = (withApi: boolean) => [
    ...(a.nfs.enabled ? [{ name: 'nfs', port: a.nfs.port, targetPort: 'nfs', protocol: 'TCP' }] : []),
    ...(a.smb.enabled ? [{ name: 'smb', port: a.smb.port, targetPort: 'smb', protocol: 'TCP' }] : []),
    ...(withApi ? [{ name: 'api', port: API_PORT, targetPort: 'api', protocol: 'TCP' }] : []),
  ];
  const headless: V1Service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(dfs, names.headlessService),
    spec: {
      clusterIP: 'None',
      // Stable pod DNS names from the start, ready or not.
      publishNotReadyAddresses: true,
      selector: selectorLabels(dfs.metadata.name),
      ports: ports(true),
    },
  };
  const client: V1Service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(dfs, names.clientService, { annotations: dfs.spec.service?.annotations ?? {} }),
    spec: {
      type: dfs.spec.service?.type ?? SPEC_DEFAULTS.serviceType,
      selector: selectorLabels(dfs.metadata.name),
      ports: ports(true),
    },
  };
  return [headless, client];
}
