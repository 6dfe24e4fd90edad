// The dittofs.io/v1alpha1 kinds as the operator reads them (crds/*.yaml is the source of truth;
// these types follow it field by field), and the Kubernetes object shapes it needs. Objects come
// from the API as plain JSON, so timestamps are strings and every optional field may be absent
// (defaults are applied by the apiserver from the CRD schema, but an object written before a
// default was added may still lack it: code reads with `??`).

export const GROUP = 'dittofs.io';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}` as const;

export const KINDS = Object.freeze({
  DittoFS: { kind: 'DittoFS', plural: 'dittofses' },
  Store: { kind: 'Store', plural: 'stores' },
  Share: { kind: 'Share', plural: 'shares' },
  User: { kind: 'User', plural: 'users' },
} as const);
export type KindName = keyof typeof KINDS;

/** On Store, Share and User: removed once the server no longer has the object. */
export const FINALIZER = 'dittofs.io/server-cleanup';
/** On the pod template: sha256 of the rendered server config, so a change rolls the pods. */
export const CONFIG_HASH_ANNOTATION = 'dittofs.io/config-hash';
/**
 * On a DittoFS, read only in the `annotation` pod-address mode (tests, no kubelet): comma-separated
 * base URLs of the control-plane API of the "pods", e.g. `http://127.0.0.1:8080`.
 */
export const TEST_ENDPOINT_ANNOTATION = 'dittofs.io/test-endpoint';

export const LABELS = Object.freeze({
  name: 'app.kubernetes.io/name',
  instance: 'app.kubernetes.io/instance',
  component: 'app.kubernetes.io/component',
  managedBy: 'app.kubernetes.io/managed-by',
  partOf: 'app.kubernetes.io/part-of',
});
export const MANAGED_BY = 'dittofs-operator';
/** The field manager of every server-side apply and patch. */
export const FIELD_MANAGER = 'dittofs-operator';

// ---------------------------------------------------------------------------------------------
// Kubernetes basics

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  generation?: number;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  finalizers?: string[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: OwnerReference[];
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
}

export interface SecretKeyRef {
  name: string;
  key: string;
}

export type ConditionStatus = 'True' | 'False' | 'Unknown';

export interface Condition {
  type: string;
  status: ConditionStatus;
  observedGeneration?: number;
  lastTransitionTime?: string;
  reason?: string;
  message?: string;
}

export const CONDITION = Object.freeze({ Ready: 'Ready', Synced: 'Synced', Degraded: 'Degraded' } as const);

// ---------------------------------------------------------------------------------------------
// DittoFS

export const DITTOFS_PHASES = Object.freeze(['Pending', 'Running', 'Degraded', 'Failed', 'Stopped'] as const);
export type DittoFSPhase = (typeof DITTOFS_PHASES)[number];

export const LOG_LEVELS = Object.freeze(['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const);
export type LogLevel = (typeof LOG_LEVELS)[number];

export type Quantity = string | number;

export interface DittoFSSpec {
  image?: string;
  imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never';
  replicas?: number;
  database?: {
    type?: 'embedded' | 'postgres';
    postgres?: { urlSecretRef: SecretKeyRef; schema?: string; poolSize?: number };
  };
  /** Rendered into the server config (URL and password as environment variables); with PostgreSQL, lets the operator run replicas > 1. */
  coordination?: {
    redis?: {
      urlSecretRef: SecretKeyRef;
      passwordSecretRef?: SecretKeyRef;
      keyPrefix?: string;
      tls?: { enabled?: boolean; caSecretRef?: SecretKeyRef; serverName?: string };
    };
  };
  cache?: { size?: Quantity; storageClassName?: string };
  adapters?: {
    nfs?: { enabled?: boolean; port?: number };
    smb?: { enabled?: boolean; port?: number };
  };
  service?: { type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer'; annotations?: Record<string, string> };
  resources?: { limits?: Record<string, Quantity>; requests?: Record<string, Quantity> };
  metrics?: { enabled?: boolean; port?: number };
  logLevel?: LogLevel;
}

export interface PodGeneration {
  name: string;
  generation?: number;
}

export interface DittoFSStatus {
  observedGeneration?: number;
  phase?: DittoFSPhase;
  replicas?: number;
  readyReplicas?: number;
  configHash?: string;
  endpoints?: { nfs?: string; smb?: string; api?: string };
  conditions?: Condition[];
}

export interface DittoFS extends KubeObject {
  spec: DittoFSSpec;
  status?: DittoFSStatus;
}

// ---------------------------------------------------------------------------------------------
// Store, Share, User

export interface MemberStatus {
  observedGeneration?: number;
  pods?: PodGeneration[];
  conditions?: Condition[];
}

export type StoreKind = 'metadata' | 'block';
export type StoreType = 'memory' | 'embedded' | 'postgres' | 'filesystem' | 's3';

export interface StoreSpec {
  dittofs: string;
  kind: StoreKind;
  type: StoreType;
  storeName?: string;
  config?: Record<string, unknown>;
  secretRefs?: Record<string, SecretKeyRef>;
}

export interface StoreStatus extends MemberStatus {
  usedBy?: string[];
}

export interface Store extends KubeObject {
  spec: StoreSpec;
  status?: StoreStatus;
}

export type PermissionLevel = 'none' | 'read' | 'read-write' | 'admin';

export interface SharePermission {
  user?: string;
  group?: string;
  level: PermissionLevel;
}

export interface ShareSpec {
  dittofs: string;
  path: string;
  metadataStore: string;
  blockStore: string;
  readOnly?: boolean;
  rootSquash?: boolean;
  defaultPermission?: PermissionLevel;
  permissions?: SharePermission[];
  rootMode?: string;
}

export interface Share extends KubeObject {
  spec: ShareSpec;
  status?: MemberStatus;
}

export type Role = 'admin' | 'operator' | 'user';

export interface UserSpec {
  dittofs: string;
  username: string;
  uid?: number;
  gid?: number;
  groups?: string[];
  email?: string;
  role?: Role;
  passwordSecretRef?: SecretKeyRef;
}

export interface User extends KubeObject {
  spec: UserSpec;
  status?: MemberStatus;
}

/** `namespace/name`: the key of work queues and caches. */
export function keyOf(o: { metadata: { namespace?: string; name: string } }): string {
  return `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
}

export function splitKey(key: string): { namespace: string; name: string } {
  const i = key.indexOf('/');
  return i < 0 ? { namespace: '', name: key } : { namespace: key.slice(0, i), name: key.slice(i + 1) };
}
