// A DittoFS's status from what the reconcile did and what its StatefulSet reports. Pure.
import type { V1StatefulSet } from '@kubernetes/client-node';
import { CONDITION, type DittoFS, type DittoFSPhase, type DittoFSStatus } from '../../api/types.js';
import { setConditions, type ConditionInput } from '../../kube/conditions.js';
import { adaptersOf, SPEC_DEFAULTS } from './desired.js';
import { API_PORT, childNames } from './names.js';

export interface Problem {
  reason: string;
  message: string;
}

export interface DittoFSStatusInputs {
  dfs: DittoFS;
  /** The StatefulSet as the apiserver last returned it (undefined: not created). */
  statefulSet: V1StatefulSet | undefined;
  configHash?: string;
  /** Why the children could not be applied (Synced=False). */
  problem?: Problem;
  /** Applied, but something is not as asked (Degraded=True). */
  warnings?: Problem[];
  /** Fewer pods run than spec.replicas asks for (desired.ts replicaPlan): Ready=False, Degraded=True. */
  replicasLimited?: Problem & { replicas: number };
  clusterDomain: string;
  now?: Date;
}

export function dittofsStatus(inp: DittoFSStatusInputs): DittoFSStatus {
  const { dfs, statefulSet: sts, problem } = inp;
  const warnings = inp.warnings ?? [];
  const generation = dfs.metadata.generation;
  const limited = inp.replicasLimited;
  const desired = limited?.replicas ?? dfs.spec.replicas ?? SPEC_DEFAULTS.replicas;
  const replicas = sts?.status?.replicas ?? 0;
  const ready = sts?.status?.readyReplicas ?? 0;
  const updated = sts?.status?.updatedReplicas ?? 0;
  const stsCurrent = sts !== undefined && (sts.status?.observedGeneration ?? 0) >= (sts.metadata?.generation ?? 0);
  const rolledOut = stsCurrent && updated >= desired && (sts?.status?.currentRevision ?? '') === (sts?.status?.updateRevision ?? '');

  let phase: DittoFSPhase;
  if (problem !== undefined && sts === undefined) phase = 'Failed';
  else if (problem !== undefined) phase = 'Degraded';
  else if (limited !== undefined) phase = ready === 0 ? 'Pending' : 'Degraded';
  // Scaled to zero as asked: nothing serves, and nothing is wrong.
  else if (desired === 0) phase = 'Stopped';
  else if (ready >= desired) phase = 'Running';
  else if (ready === 0) phase = 'Pending';
  else phase = 'Degraded';

  const podsMsg = `${ready}/${desired} pods ready`;
  const readyCond: ConditionInput =
    problem !== undefined
      ? { type: CONDITION.Ready, status: false, reason: problem.reason, message: problem.message }
      : limited !== undefined
        ? { type: CONDITION.Ready, status: false, reason: limited.reason, message: `${limited.message} (${podsMsg})` }
        : desired === 0
          ? {
              type: CONDITION.Ready,
              status: false,
              reason: 'ScaledToZero',
              message: `spec.replicas is 0: no pod serves${replicas > 0 ? ` (${replicas} still stopping)` : ''}`,
            }
          : ready >= desired && rolledOut
            ? { type: CONDITION.Ready, status: true, reason: 'PodsReady', message: podsMsg }
            : ready >= desired
              ? {
                  type: CONDITION.Ready,
                  status: false,
                  reason: 'RollingUpdate',
                  message: `${podsMsg}; ${updated}/${desired} on the current revision`,
                }
              : { type: CONDITION.Ready, status: false, reason: ready === 0 ? 'PodsPending' : 'PodsNotReady', message: podsMsg };

  const syncedCond: ConditionInput =
    problem !== undefined
      ? { type: CONDITION.Synced, status: false, reason: problem.reason, message: problem.message }
      : {
          type: CONDITION.Synced,
          status: true,
          reason: 'ChildrenApplied',
          message: `StatefulSet, Services and Secrets applied${inp.configHash === undefined ? '' : ` (config ${inp.configHash.slice(0, 12)})`}`,
        };

  const degradedBy: Problem | undefined =
    problem ?? limited ?? warnings[0] ?? (ready > 0 && ready < desired ? { reason: 'PodsNotReady', message: podsMsg } : undefined);
  const degradedCond: ConditionInput =
    degradedBy !== undefined
      ? {
          type: CONDITION.Degraded,
          status: true,
          reason: degradedBy.reason,
          message: [degradedBy, ...warnings.filter((w) => w !== degradedBy)].map((p) => p.message).join('; '),
        }
      : { type: CONDITION.Degraded, status: false, reason: 'AsExpected', message: 'nothing to report' };

  const names = childNames(dfs.metadata.name);
  const host = `${names.clientService}.${dfs.metadata.namespace ?? 'default'}.svc.${inp.clusterDomain}`;
  const a = adaptersOf(dfs);
  return {
    ...(generation === undefined ? {} : { observedGeneration: generation }),
    phase,
    replicas,
    readyReplicas: ready,
    ...(inp.configHash === undefined
      ? dfs.status?.configHash === undefined
        ? {}
        : { configHash: dfs.status.configHash }
      : { configHash: inp.configHash }),
    endpoints: {
      ...(a.nfs.enabled ? { nfs: `${host}:${a.nfs.port}` } : {}),
      ...(a.smb.enabled ? { smb: `${host}:${a.smb.port}` } : {}),
      api: `http://${host}:${API_PORT}`,
    },
    conditions: setConditions(dfs.status?.conditions, [readyCond, syncedCond, degradedCond], generation, inp.now),
  };
}
