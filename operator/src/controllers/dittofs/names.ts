// Names, labels and fixed paths of the objects a DittoFS owns. One place, so the reconciler, the
// pod address resolver and the tests agree.
import { API_VERSION, KINDS, LABELS, MANAGED_BY, type DittoFS, type OwnerReference } from '../../api/types.js';

/** The server's control-plane API port inside the pod (the server's default; not in the CRD). */
export const API_PORT = 8080;
/**
 * The pod's data directory, on the WAL cache volume (WAL, embedded databases, filesystem blocks):
 * the server image's own (Dockerfile.server sets DITTOFS_DATA_DIR=/data, and the pod sets it too, so
 * image and config cannot disagree).
 */
export const DATA_DIR = '/data';
export const CONFIG_DIR = '/etc/dittofs';
export const CONFIG_KEY = 'config.yaml';
export const CONFIG_PATH = `${CONFIG_DIR}/${CONFIG_KEY}`;
/** Non-root uid/gid the server runs as (the server image's user). */
export const SERVER_UID = 10001;
export const CONTAINER_NAME = 'dittofs';
export const DATA_VOLUME = 'data';

/** Keys of the operator's admin Secret. */
export const ADMIN_SECRET_KEYS = Object.freeze({
  username: 'username',
  /** The password the operator logs in with (set by the operator at first login). */
  password: 'password',
  /** The pod's DITTOFS_ADMIN_INITIAL_PASSWORD: the bootstrap admin's first password. */
  initialPassword: 'initial-password',
} as const);
export const JWT_SECRET_KEY = 'jwt-secret';
/** The control plane's bootstrap admin (server/src/control/types.ts BOOTSTRAP_ADMIN). */
export const ADMIN_USERNAME = 'admin';

export interface ChildNames {
  statefulSet: string;
  headlessService: string;
  clientService: string;
  configSecret: string;
  jwtSecret: string;
  adminSecret: string;
}

export function childNames(dfsName: string): ChildNames {
  return {
    statefulSet: dfsName,
    headlessService: `${dfsName}-headless`,
    clientService: dfsName,
    configSecret: `${dfsName}-config`,
    jwtSecret: `${dfsName}-jwt`,
    adminSecret: `${dfsName}-admin`,
  };
}

/** Labels that select a DittoFS's pods (immutable once the StatefulSet exists). */
export function selectorLabels(dfsName: string): Record<string, string> {
  return { [LABELS.name]: 'dittofs', [LABELS.instance]: dfsName };
}

export function commonLabels(dfsName: string): Record<string, string> {
  return { ...selectorLabels(dfsName), [LABELS.managedBy]: MANAGED_BY, [LABELS.partOf]: 'dittofs' };
}

/** The owner reference every child carries: deleting the DittoFS garbage-collects it. */
export function ownerReference(dfs: DittoFS): OwnerReference {
  if (dfs.metadata.uid === undefined) throw new Error(`DittoFS ${dfs.metadata.name} has no uid (not read from the API?)`);
  return {
    apiVersion: API_VERSION,
    kind: KINDS.DittoFS.kind,
    name: dfs.metadata.name,
    uid: dfs.metadata.uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

/** The pod's stable DNS name through the headless Service. */
export function podHost(dfs: DittoFS, ordinal: number | string, clusterDomain: string): string {
  const n = childNames(dfs.metadata.name);
  const pod = typeof ordinal === 'number' ? `${n.statefulSet}-${ordinal}` : ordinal;
  return `${pod}.${n.headlessService}.${dfs.metadata.namespace ?? 'default'}.svc.${clusterDomain}`;
}
