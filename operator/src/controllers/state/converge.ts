// Several pods on one control database: the PUTs to them run at once, and each answers once that
// pod (and, as far as the server could tell within its bound, every other) applied the database's
// generation at that moment. A pod whose PUT answered before another pod's PUT changed the database
// reports an older generation: it is asked again, once, which generation it applied since
// (GET /api/v1/state, header dittofs-applied-generation). A pod still behind after that keeps its
// older generation, and its resources are not Synced (status.ts: Converging).
import type { PodOutcome } from './status.js';

/** The newest generation any pod reported: what every ready pod must have applied. */
export function targetGeneration(outcomes: readonly PodOutcome[]): number | undefined {
  let target: number | undefined;
  for (const o of outcomes) if (o.ok && (target === undefined || o.generation > target)) target = o.generation;
  return target;
}

/** The pods that answered but report an older generation than another pod did. */
export function podsBehind<T extends PodOutcome>(outcomes: readonly T[]): Extract<T, { ok: true }>[] {
  const target = targetGeneration(outcomes);
  return outcomes.filter((o): o is Extract<T, { ok: true }> => o.ok && target !== undefined && o.generation < target);
}

/**
 * Asks each pod that is behind which generation it applied now (`applied`: undefined when the pod
 * cannot tell, e.g. a server without coordination; a failure counts as no answer) and returns the
 * outcomes with the newer answers. One request per pod behind, all at once.
 */
export async function confirmApplied<T extends PodOutcome>(
  outcomes: readonly T[],
  applied: (pod: T['pod']) => Promise<number | undefined>,
): Promise<T[]> {
  const behind = new Set<PodOutcome>(podsBehind(outcomes));
  if (behind.size === 0) return [...outcomes];
  return Promise.all(
    outcomes.map(async (o) => {
      if (!o.ok || !behind.has(o)) return o;
      const now = await applied(o.pod).catch(() => undefined);
      return now !== undefined && now > o.generation ? { ...o, generation: now } : o;
    }),
  );
}
