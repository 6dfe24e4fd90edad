// Status conditions as Kubernetes API conventions want them: one entry per type, and
// lastTransitionTime moves only when the status changes (not when the reason or message does).
import type { Condition, ConditionStatus } from '../api/types.js';

export interface ConditionInput {
  type: string;
  status: ConditionStatus | boolean;
  reason: string;
  message: string;
}

/** Messages are bounded by the CRD (32 KiB); keep them short enough to read in `kubectl describe`. */
const MAX_MESSAGE = 4096;

/** The conditions after setting each of `updates`, in a stable order (the types as first seen). */
export function setConditions(
  current: readonly Condition[] | undefined,
  updates: readonly ConditionInput[],
  generation: number | undefined,
  now: Date = new Date(),
): Condition[] {
  const out = (current ?? []).map((c) => ({ ...c }));
  for (const u of updates) {
    const status: ConditionStatus = typeof u.status === 'boolean' ? (u.status ? 'True' : 'False') : u.status;
    const message = u.message.length > MAX_MESSAGE ? `${u.message.slice(0, MAX_MESSAGE - 1)}…` : u.message;
    const i = out.findIndex((c) => c.type === u.type);
    const prev = i >= 0 ? out[i] : undefined;
    const next: Condition = {
      type: u.type,
      status,
      ...(generation === undefined ? {} : { observedGeneration: generation }),
      lastTransitionTime: prev !== undefined && prev.status === status && prev.lastTransitionTime ? prev.lastTransitionTime : rfc3339(now),
      reason: u.reason,
      message,
    };
    if (i >= 0) out[i] = next;
    else out.push(next);
  }
  return out;
}

/** RFC 3339 with seconds, as metav1.Time serializes (no fraction). */
export function rfc3339(d: Date): string {
  return `${d.toISOString().slice(0, 19)}Z`;
}

/** metav1.MicroTime: RFC 3339 with exactly six fractional digits (Leases need this form). */
export function microTime(d: Date): string {
  return `${d.toISOString().slice(0, 23)}000Z`;
}
