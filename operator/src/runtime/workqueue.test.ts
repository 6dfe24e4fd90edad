import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { backoffDelay } from './backoff.js';
import { WorkQueue } from './workqueue.js';

/** A reconcile whose runs can be held open and released one at a time. */
function gated() {
  const runs: string[] = [];
  const open: (() => void)[] = [];
  let active = 0;
  let maxActive = 0;
  const perKeyActive = new Map<string, number>();
  let overlapped = false;
  const reconcile = async (key: string): Promise<void> => {
    runs.push(key);
    active++;
    maxActive = Math.max(maxActive, active);
    const n = (perKeyActive.get(key) ?? 0) + 1;
    perKeyActive.set(key, n);
    if (n > 1) overlapped = true;
    await new Promise<void>((resolve) => open.push(resolve));
    perKeyActive.set(key, (perKeyActive.get(key) ?? 1) - 1);
    active--;
  };
  const releaseAll = async (): Promise<void> => {
    while (open.length > 0) open.shift()!();
    await sleep(5);
  };
  return { runs, reconcile, releaseAll, stats: () => ({ maxActive, overlapped, waiting: open.length }) };
}

describe('backoffDelay', () => {
  it('grows exponentially from the base and stops at the bound', () => {
    const opts = { baseMs: 100, maxMs: 1000, jitter: 0 };
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, opts)),
      [100, 200, 400, 800, 1000, 1000],
    );
    assert.equal(backoffDelay(10_000, opts), 1000, 'no overflow for huge attempt counts');
  });

  it('jitter takes away at most its fraction', () => {
    assert.equal(backoffDelay(1, { baseMs: 1000, jitter: 0.2, random: () => 0.999999 }), 800);
    assert.equal(backoffDelay(1, { baseMs: 1000, jitter: 0.2, random: () => 0 }), 1000);
  });
});

describe('WorkQueue', () => {
  it('never runs one key twice at once; events during a run collapse into one rerun', async () => {
    const g = gated();
    const q = new WorkQueue({ name: 't', reconcile: g.reconcile });
    q.add('ns/a');
    await sleep(5);
    assert.deepEqual(g.runs, ['ns/a']);
    for (let i = 0; i < 10; i++) q.add('ns/a'); // ten events while the first run is open
    await sleep(5);
    assert.deepEqual(g.runs, ['ns/a'], 'no second run while the first is in flight');
    await g.releaseAll();
    assert.deepEqual(g.runs, ['ns/a', 'ns/a'], 'exactly one rerun for the ten events');
    await g.releaseAll();
    await q.idle();
    assert.equal(g.runs.length, 2);
    assert.equal(g.stats().overlapped, false);
  });

  it('collapses keys waiting in the queue and runs different keys in parallel up to the limit', async () => {
    const g = gated();
    const q = new WorkQueue({ name: 't', reconcile: g.reconcile, concurrency: 2 });
    for (const k of ['a', 'b', 'c', 'c', 'd', 'c']) q.add(k);
    await sleep(5);
    assert.deepEqual(g.runs, ['a', 'b']);
    assert.equal(q.size, 4);
    await g.releaseAll();
    assert.deepEqual(g.runs, ['a', 'b', 'c', 'd'], 'c queued three times runs once');
    await g.releaseAll();
    await q.idle();
    assert.equal(g.stats().maxActive, 2);
  });

  it('retries a failing key with growing delays and resets after a success', async () => {
    const times: number[] = [];
    let failuresLeft = 3;
    const errors: number[] = [];
    const q = new WorkQueue({
      name: 't',
      backoff: { baseMs: 20, maxMs: 1000, jitter: 0 },
      reconcile: async () => {
        times.push(Date.now());
        if (failuresLeft-- > 0) throw new Error('apiserver said no');
      },
      onError: (_k, _e, n, delay) => errors.push(n * 1000 + delay),
    });
    q.add('k');
    for (let i = 0; i < 200 && times.length < 4; i++) await sleep(10);
    assert.equal(times.length, 4, 'three failures, then the success');
    assert.deepEqual(errors, [1020, 2040, 3080]);
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    assert.ok(gaps[0]! >= 18 && gaps[1]! >= 38 && gaps[2]! >= 78, `gaps ${gaps.join(',')}`);
    assert.equal(q.failuresOf('k'), 0);
    await sleep(100);
    assert.equal(times.length, 4, 'nothing more after the success');
  });

  it('an event during a failing run reruns at once instead of waiting for the backoff', async () => {
    let runs = 0;
    let release!: () => void;
    const q = new WorkQueue({
      name: 't',
      backoff: { baseMs: 60_000, jitter: 0 },
      reconcile: async () => {
        runs++;
        if (runs === 1) {
          await new Promise<void>((r) => (release = r));
          throw new Error('first run fails');
        }
      },
    });
    q.add('k');
    await sleep(5);
    q.add('k');
    release();
    await sleep(20);
    assert.equal(runs, 2);
    await q.shutdown();
  });

  it('requeueAfterMs runs the key again; delayed adds collapse into the earliest', async () => {
    const times: number[] = [];
    const q = new WorkQueue({
      name: 't',
      reconcile: async () => {
        times.push(Date.now());
        return times.length === 1 ? { requeueAfterMs: 30 } : {};
      },
    });
    q.add('k');
    q.add('k', 500);
    q.add('k', 40);
    await sleep(120);
    // the first run, then the requeue after 30 ms, which also satisfies the delayed add of 40 ms;
    // the 500 ms add was replaced by the earlier one.
    assert.ok(times.length >= 2 && times.length <= 3, `runs: ${times.length}`);
    await sleep(500);
    assert.ok(times.length <= 3, `runs: ${times.length}`);
    await q.shutdown();
  });

  it('paused: keys wait; resume runs them; shutdown waits for the running reconcile', async () => {
    const g = gated();
    const q = new WorkQueue({ name: 't', reconcile: g.reconcile, paused: true, concurrency: 1 });
    q.add('a');
    await sleep(5);
    assert.deepEqual(g.runs, []);
    q.resume();
    await sleep(5);
    assert.deepEqual(g.runs, ['a']);
    q.add('a');
    q.add('b');
    let done = false;
    const stopping = q.shutdown().then(() => (done = true));
    await sleep(5);
    assert.equal(done, false, 'waits for the run in flight');
    await g.releaseAll();
    await stopping;
    assert.deepEqual(g.runs, ['a'], 'queued work is dropped at shutdown');
    q.add('c');
    await sleep(5);
    assert.deepEqual(g.runs, ['a']);
  });
});
