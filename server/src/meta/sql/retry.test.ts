// withRetry (driver.ts), the one retry loop of the SQL drivers: how many attempts, which failures,
// and how long, as the PostgreSQL and embedded drivers rely on it.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { withRetry, type RetryEvent } from './driver.js';

class Transient extends Error {
  readonly code = '40001';
}

const fast = { maxAttempts: 5, maxElapsedMs: 10_000, baseDelayMs: 2, maxDelayMs: 20 };
const transient = (e: unknown): boolean => e instanceof Transient;

describe('withRetry', () => {
  it('retries a transient failure until it succeeds, telling of each retry', async () => {
    const events: RetryEvent[] = [];
    let runs = 0;
    const got = await withRetry(
      fast,
      transient,
      async (attempt) => {
        runs++;
        assert.equal(attempt, runs, 'attempts are numbered from 1');
        if (runs < 3) throw new Transient(`run ${runs}`);
        return 'done';
      },
      (ev) => events.push(ev),
    );
    assert.equal(got, 'done');
    assert.equal(runs, 3);
    assert.deepEqual(
      events.map((e) => [e.attempt, (e.error as Error).message]),
      [
        [1, 'run 1'],
        [2, 'run 2'],
      ],
    );
  });

  it('gives up after maxAttempts with the last error; shouldRetry sees every failure, the last too', async () => {
    let runs = 0;
    let asked = 0;
    const counting = (e: unknown): boolean => {
      asked++;
      return transient(e);
    };
    await assert.rejects(
      withRetry(fast, counting, async () => {
        runs++;
        throw new Transient(`run ${runs}`);
      }),
      (e: unknown) => e instanceof Transient && e.message === `run ${fast.maxAttempts}`,
    );
    assert.equal(runs, fast.maxAttempts);
    assert.equal(asked, fast.maxAttempts, 'every failure was classified (the drivers count them)');
  });

  it('does not retry a failure shouldRetry refuses: it is thrown as it was', async () => {
    const bad = Object.assign(new Error('syntax error'), { code: '42601' });
    let runs = 0;
    await assert.rejects(
      withRetry(fast, transient, async () => {
        runs++;
        throw bad;
      }),
      (e: unknown) => e === bad,
    );
    assert.equal(runs, 1);
  });

  it('starts no attempt past maxElapsedMs, however many attempts are left', async () => {
    const policy = { maxAttempts: 10_000, maxElapsedMs: 300, baseDelayMs: 20, maxDelayMs: 50 };
    let runs = 0;
    await assert.rejects(
      withRetry(policy, transient, async () => {
        runs++;
        throw new Transient('still down');
      }),
      Transient,
    );
    // Waits of 10 to 50 ms: a dozen attempts fit in 300 ms, not ten thousand (fewer on a busy machine).
    assert.ok(runs >= 2 && runs <= 40, `attempts until the time ran out: ${runs}`);
  });
});
