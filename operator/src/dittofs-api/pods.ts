// The seam through which the operator finds the control-plane API of each ready server pod.
//
// - `dns` (default, in a cluster): every Ready pod of the StatefulSet, at its stable name through
//   the headless Service: http://<sts>-N.<name>-headless.<ns>.svc.<cluster-domain>:8080.
// - `ip`: every Ready pod at its pod IP (for operators running where cluster DNS does not resolve,
//   e.g. out of cluster on a routed pod network).
// - `annotation` (tests: no kubelet runs, so no pod ever becomes Ready): the DittoFS annotation
//   dittofs.io/test-endpoint lists base URLs (comma-separated); each is one "pod", named
//   <sts>-0, <sts>-1, ..., and counted as ready. Such a "pod" is a real server process started by
//   whoever sets the annotation, with DITTOFS_ADMIN_INITIAL_PASSWORD taken from the DittoFS's
//   admin Secret (key initial-password).
import type { V1Pod } from '@kubernetes/client-node';
import { LABELS, TEST_ENDPOINT_ANNOTATION, type DittoFS } from '../api/types.js';
import { API_PORT, childNames, podHost } from '../controllers/dittofs/names.js';

export const POD_ADDRESS_MODES = Object.freeze(['dns', 'ip', 'annotation'] as const);
export type PodAddressMode = (typeof POD_ADDRESS_MODES)[number];

export interface PodEndpoint {
  /** The pod's name (what status.pods reports). */
  name: string;
  /** Base URL of its control-plane API, e.g. http://10.1.2.3:8080. */
  url: string;
}

export interface PodAddressResolver {
  readonly mode: PodAddressMode;
  /** The pods of a DittoFS that are ready to take the desired state, in ordinal order. */
  readyPods(dfs: DittoFS): PodEndpoint[];
}

export interface ResolverOptions {
  /** The pods the operator watches (label app.kubernetes.io/managed-by); unused in annotation mode. */
  pods: () => readonly V1Pod[];
  clusterDomain: string;
}

function isReady(pod: V1Pod): boolean {
  if (pod.metadata?.deletionTimestamp !== undefined) return false;
  return pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}

const ordinalOf = (podName: string): number => Number(/-(\d+)$/.exec(podName)?.[1] ?? Number.MAX_SAFE_INTEGER);

/** The pods of this DittoFS (its StatefulSet's), ready ones only, by ordinal. */
function readyPodsOf(dfs: DittoFS, all: readonly V1Pod[]): V1Pod[] {
  const ns = dfs.metadata.namespace ?? '';
  const sts = childNames(dfs.metadata.name).statefulSet;
  return all
    .filter(
      (p) =>
        (p.metadata?.namespace ?? '') === ns &&
        p.metadata?.labels?.[LABELS.instance] === dfs.metadata.name &&
        p.metadata?.ownerReferences?.some((o) => o.kind === 'StatefulSet' && o.name === sts) === true &&
        isReady(p),
    )
    .sort((a, b) => ordinalOf(a.metadata?.name ?? '') - ordinalOf(b.metadata?.name ?? ''));
}

export function podAddressResolver(mode: PodAddressMode, opts: ResolverOptions): PodAddressResolver {
  switch (mode) {
    case 'dns':
      return {
        mode,
        readyPods: (dfs) =>
          readyPodsOf(dfs, opts.pods()).map((p) => {
            const name = p.metadata!.name!;
            return { name, url: `http://${podHost(dfs, name, opts.clusterDomain)}:${API_PORT}` };
          }),
      };
    case 'ip':
      return {
        mode,
        readyPods: (dfs) =>
          readyPodsOf(dfs, opts.pods())
            .filter((p) => (p.status?.podIP ?? '') !== '')
            .map((p) => {
              const ip = p.status!.podIP!;
              return { name: p.metadata!.name!, url: `http://${ip.includes(':') ? `[${ip}]` : ip}:${API_PORT}` };
            }),
      };
    case 'annotation':
      return {
        mode,
        readyPods: (dfs) => {
          const raw = dfs.metadata.annotations?.[TEST_ENDPOINT_ANNOTATION] ?? '';
          const sts = childNames(dfs.metadata.name).statefulSet;
          return raw
            .split(',')
            .map((u) => u.trim())
            .filter((u) => u !== '')
            .map((url, i) => ({ name: `${sts}-${i}`, url: url.replace(/\/+$/, '') }));
        },
      };
  }
}
