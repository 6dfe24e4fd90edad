// Exponential backoff with jitter, for retries of failed reconciles and broken watches.
// Bounded: the delay never exceeds maxMs, whatever the attempt count.

export interface BackoffOptions {
  /** Delay after the first failure (default 500 ms). */
  baseMs?: number;
  /** Largest delay (default 5 minutes). */
  maxMs?: number;
  /** Growth per failure (default 2). */
  factor?: number;
  /** Fraction of the delay randomized away, 0..1 (default 0.2: between 80% and 100% of the delay). */
  jitter?: number;
  /** Source of randomness in [0, 1) (tests pass a constant). */
  random?: () => number;
}

export const DEFAULT_BACKOFF: Readonly<Required<Omit<BackoffOptions, 'random'>>> = Object.freeze({
  baseMs: 500,
  maxMs: 5 * 60_000,
  factor: 2,
  jitter: 0.2,
});

/** The delay before retry number `failures` (1 = after the first failure). */
export function backoffDelay(failures: number, opts: BackoffOptions = {}): number {
  const baseMs = opts.baseMs ?? DEFAULT_BACKOFF.baseMs;
  const maxMs = opts.maxMs ?? DEFAULT_BACKOFF.maxMs;
  const factor = opts.factor ?? DEFAULT_BACKOFF.factor;
  const jitter = Math.min(1, Math.max(0, opts.jitter ?? DEFAULT_BACKOFF.jitter));
  const random = opts.random ?? Math.random;
  const n = Math.max(1, Math.floor(failures));
  // factor ** (n - 1) overflows to Infinity for large n; Math.min keeps the bound.
  const raw = Math.min(maxMs, baseMs * factor ** (n - 1));
  return Math.max(0, Math.round(raw * (1 - jitter * random())));
}

/** Resolves after ms, or at once (without rejecting) when the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const onAbort = (): void => {
      clearTimeout(t);
      resolve();
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
