// Bounded waits: a promise raced against a timer that is always cleared (no timer outlives the wait).

/**
 * `p`, or a rejection "no answer within MS ms" once `ms` passed first. An answer that arrived while
 * this process was busy (a long GC pause, a loaded machine) counts: the timer fires in the event
 * loop's timers phase, before the poll phase reads what came in meanwhile, so the rejection waits
 * for that poll (setImmediate runs after it). A stall here is not taken for a slow peer: a Redis
 * PING answered in time but read 1 s late had cost every change a JUKEBOX.
 */
export function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  let late: NodeJS.Immediate | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      t = setTimeout(() => {
        late = setImmediate(() => reject(new Error(`no answer within ${ms} ms`)));
      }, ms);
    }),
  ]).finally(() => {
    clearTimeout(t);
    if (late !== undefined) clearImmediate(late);
  });
}

/** Resolves once `p` settles or `ms` passed, whichever is first; never rejects. */
export async function settledWithin(p: Promise<unknown>, ms: number): Promise<void> {
  await withTimeout(p, ms).catch(() => undefined);
}
