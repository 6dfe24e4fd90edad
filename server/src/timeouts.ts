// Bounded waits: a promise raced against a timer that is always cleared (no timer outlives the wait).

/** `p`, or a rejection "no answer within MS ms" once `ms` passed first. */
export function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      t = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

/** Resolves once `p` settles or `ms` passed, whichever is first; never rejects. */
export async function settledWithin(p: Promise<unknown>, ms: number): Promise<void> {
  await withTimeout(p, ms).catch(() => undefined);
}
