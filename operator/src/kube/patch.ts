// JSON merge patches (RFC 7386) computed from an old and a new document: what the operator sends to
// status subresources, so it writes only what changed and removes what it no longer reports.

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The merge patch that turns `from` into `to`: changed keys with their new value, removed keys as
 * null, arrays replaced whole. Undefined when nothing changed.
 */
export function mergePatchDiff(from: unknown, to: unknown): Json | undefined {
  if (isObject(from) && isObject(to)) {
    const patch: Record<string, Json> = {};
    for (const k of Object.keys(from)) if (to[k] === undefined && from[k] !== undefined) patch[k] = null;
    for (const [k, v] of Object.entries(to)) {
      if (v === undefined) continue;
      const d = mergePatchDiff(from[k], v);
      if (d !== undefined) patch[k] = d;
    }
    return Object.keys(patch).length === 0 ? undefined : patch;
  }
  if (JSON.stringify(from) === JSON.stringify(to)) return undefined;
  // Objects replacing non-objects must not carry nulls (they would mean "remove" inside a new value).
  return JSON.parse(JSON.stringify(to ?? null)) as Json;
}
