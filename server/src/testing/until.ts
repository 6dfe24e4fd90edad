// Waiting on a condition in tests: on readiness, not on a clock.

/** Waits until `check` holds, polling; fails after `ms` (a bound for a stuck test, not a timing). */
export async function until(check: () => boolean, what: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  if (!check()) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}
