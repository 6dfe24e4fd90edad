// The status of a Store, Share or User after a sync of its DittoFS. Pure.
import { CONDITION, type Condition, type MemberStatus, type StoreStatus } from '../../api/types.js';
import { setConditions, type ConditionInput } from '../../kube/conditions.js';
import type { PodEndpoint } from '../../dittofs-api/pods.js';
import { podsBehind, targetGeneration } from './converge.js';
import type { Verdict } from './desired.js';

export type PodOutcome =
  { pod: PodEndpoint; ok: true; generation: number; carried: Set<string> } | { pod: PodEndpoint; ok: false; error: string };

export interface MemberStatusInputs {
  generation: number | undefined;
  conditions: readonly Condition[] | undefined;
  /** undefined: the DittoFS is missing (see `missing`). */
  verdict: Verdict | undefined;
  /** One per ready pod. */
  pods: readonly PodOutcome[];
  dittofs: string;
  /** Set when the DittoFS does not exist or is being deleted, or its admin Secret is missing. */
  blocked?: { reason: string; message: string };
  /** Stores: the Share resources that use it. */
  usedBy?: string[];
  now?: Date;
}

const cond = (type: string, status: boolean, reason: string, message: string): ConditionInput => ({ type, status, reason, message });

export function memberStatus(inp: MemberStatusInputs): MemberStatus & StoreStatus {
  const ok = inp.pods.filter((p): p is Extract<PodOutcome, { ok: true }> => p.ok);
  const failed = inp.pods.filter((p): p is Extract<PodOutcome, { ok: false }> => !p.ok);
  const failures = failed.map((p) => `${p.pod.name}: ${p.error}`).join('; ');
  let conds: ConditionInput[];
  let pods = ok.map((p) => ({ name: p.pod.name, generation: p.generation }));
  const v = inp.verdict;
  if (inp.blocked !== undefined || v === undefined) {
    const b = inp.blocked ?? { reason: 'Unknown', message: 'not computed' };
    pods = [];
    conds = [
      cond(CONDITION.Ready, false, b.reason, b.message),
      cond(CONDITION.Synced, false, b.reason, b.message),
      cond(CONDITION.Degraded, true, b.reason, b.message),
    ];
  } else if (v.state === 'invalid') {
    pods = [];
    const message = `${v.message}; the servers keep their current copy, if any, until this is fixed`;
    conds = [
      cond(CONDITION.Ready, false, v.reason, message),
      cond(CONDITION.Synced, false, v.reason, message),
      cond(CONDITION.Degraded, true, v.reason, message),
    ];
  } else if (v.state === 'in-use') {
    conds = [
      cond(CONDITION.Ready, true, 'InUse', v.message),
      cond(CONDITION.Synced, false, 'InUse', v.message),
      cond(CONDITION.Degraded, false, 'InUse', v.message),
    ];
  } else if (inp.pods.length === 0) {
    const message = `DittoFS ${inp.dittofs} has no ready pod to push to; pushed when one is ready`;
    conds = [
      cond(CONDITION.Ready, false, 'NoReadyPods', message),
      cond(CONDITION.Synced, false, 'NoReadyPods', message),
      cond(CONDITION.Degraded, false, 'NoReadyPods', message),
    ];
  } else if (failed.length > 0) {
    const message = `applied by ${ok.length}/${inp.pods.length} ready pods; ${failures}`;
    conds = [
      cond(CONDITION.Ready, false, 'PushFailed', message),
      cond(CONDITION.Synced, false, 'PushFailed', message),
      cond(CONDITION.Degraded, true, 'PushFailed', message),
    ];
  } else if (podsBehind(inp.pods).length > 0) {
    // One control database: every ready pod must run its newest generation, or a client of the
    // pod behind sees the old share, user or permission.
    const behind = podsBehind(inp.pods);
    const message = `generation ${targetGeneration(inp.pods)} applied by ${ok.length - behind.length}/${inp.pods.length} ready pods; not yet by ${behind.map((p) => `${p.pod.name} (at ${p.generation})`).join(', ')}`;
    conds = [
      cond(CONDITION.Ready, false, 'Converging', message),
      cond(CONDITION.Synced, false, 'Converging', message),
      cond(CONDITION.Degraded, false, 'Converging', message),
    ];
  } else if (v.state === 'removed') {
    conds = [
      cond(CONDITION.Ready, false, 'Removing', 'removed from the servers; the finalizer goes next'),
      cond(CONDITION.Synced, true, 'Removed', `removed from ${ok.length} pod${ok.length === 1 ? '' : 's'}`),
      cond(CONDITION.Degraded, false, 'Removing', 'being deleted'),
    ];
  } else {
    const message = `applied by ${ok.length} ready pod${ok.length === 1 ? '' : 's'}: ${ok.map((p) => `${p.pod.name}@${p.generation}`).join(', ')}`;
    conds = [
      cond(CONDITION.Ready, true, 'Applied', message),
      cond(CONDITION.Synced, true, 'Applied', message),
      cond(CONDITION.Degraded, false, 'AsExpected', 'nothing to report'),
    ];
  }
  return {
    ...(inp.generation === undefined ? {} : { observedGeneration: inp.generation }),
    ...(inp.usedBy === undefined ? {} : { usedBy: [...inp.usedBy].sort() }),
    pods,
    conditions: setConditions(inp.conditions, conds, inp.generation, inp.now),
  };
}
