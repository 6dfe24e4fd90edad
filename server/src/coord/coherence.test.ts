// Cache invalidation and control-plane generations between two coordinators on a real redis-server
// (Debian's, on loopback, started by the test).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { markRedisSeen, startRedis, TEST_LEASE_TTL_MS, type RedisInstance } from '../../../test/helpers/redis.js';
import { isVfsError } from '../vfs/errors.js';
import { ControlReplicas } from './control.js';
import { PENDING_MAX_AGE_MS, type CoherentCache } from './coherence.js';
import { Coordinator } from './leases.js';

const log = pino({ level: 'silent' });
const GRACE_MS = 1_000;

/** A cache that records what it was told to drop. */
class Recorder implements CoherentCache {
  readonly heard: string[] = [];
  /** Every call about everything, in order: 'drop *', 'uncertain *', 'certain *' (and the test's marks). */
  readonly everything: string[] = [];
  invalidateRemote(ids: readonly number[] | null, blocks: boolean): void {
    this.heard.push(ids === null ? '*' : `${blocks ? 'b' : 'i'}:${ids.join(',')}`);
    if (ids === null) this.everything.push('drop *');
  }
  /** Inodes another server announced and did not finish changing (counted; '*': anything). */
  readonly uncertain = new Map<string, number>();
  uncertainRemote(ids: readonly number[] | null, on: boolean): void {
    if (ids === null) this.everything.push(on ? 'uncertain *' : 'certain *');
    for (const k of ids === null ? ['*'] : ids.map(String)) {
      const n = (this.uncertain.get(k) ?? 0) + (on ? 1 : -1);
      if (n === 0) this.uncertain.delete(k);
      else this.uncertain.set(k, n);
    }
  }
}

const until = async (cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> => {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('cache coherence and control generations over Redis', () => {
  let redis: RedisInstance;
  const open: Coordinator[] = [];

  before(async () => {
    redis = await startRedis();
    await markRedisSeen(redis.url, 'coh:');
  });

  after(async () => {
    for (const c of open) await c.close();
    await redis?.stop();
  });

  const connect = async (graceMs = GRACE_MS): Promise<Coordinator> => {
    const c = await Coordinator.open({
      url: redis.url,
      keyPrefix: 'coh:',
      tls: false,
      leaseTtlMs: TEST_LEASE_TTL_MS,
      log,
      recoveryGraceMs: graceMs,
    });
    open.push(c);
    // After the grace that follows a subscription (nothing cached), so tests see only their own messages.
    await until(() => !c.cachesSettling, graceMs + 20_000);
    return c;
  };

  it("a change published by one server is applied by the other before its next sync() resolves (200 rounds), never by the publisher's own cache", async () => {
    const [a, b] = [await connect(), await connect()];
    const ra = new Recorder();
    const rb = new Recorder();
    const la = a.coherenceFor('store1', ra);
    const lb = b.coherenceFor('store1', rb);
    // Subscriptions confirmed: the first sync of each comes after them.
    assert.equal(await la.sync(), true);
    assert.equal(await lb.sync(), true);
    ra.heard.length = 0;
    rb.heard.length = 0;
    for (let i = 1; i <= 200; i++) {
      la.done(await la.announce([i, i + 1], i % 2 === 0), [i, i + 1], i % 2 === 0);
      // No waiting on anything else: the sync point alone proves it is in.
      assert.equal(await lb.sync(), true);
      assert.equal(rb.heard.at(-1), `${i % 2 === 0 ? 'b' : 'i'}:${i},${i + 1}`, `round ${i}`);
    }
    la.done(await la.announce(null, false), null, false);
    await lb.sync();
    assert.equal(rb.heard.at(-1), '*');
    assert.deepEqual(ra.heard, [], 'the publisher does not hear itself');
    // Another store's channel is not heard.
    const other = new Recorder();
    const lo = b.coherenceFor('store2', other);
    await lo.sync();
    other.heard.length = 0;
    la.done(await la.announce([7], false), [7], false);
    await lb.sync();
    assert.deepEqual(other.heard, []);
    b.dropCoherence(lo);
  });

  it('an announced change: the other server caches none of its inodes from the announcement until it is done, even when the end is lost', async () => {
    const [a, b] = [await connect(), await connect()];
    const ra = new Recorder();
    const rb = new Recorder();
    const la = a.coherenceFor('store4', ra);
    const lb = b.coherenceFor('store4', rb);
    assert.equal(await la.sync(), true);
    assert.equal(await lb.sync(), true);
    rb.heard.length = 0;
    const t1 = await la.announce([11, 12], false);
    // Heard by B before the announcement resolved: B's next sync proves it applied.
    assert.equal(await lb.sync(), true);
    assert.deepEqual(
      [...rb.uncertain],
      [
        ['11', 1],
        ['12', 1],
      ],
    );
    assert.deepEqual(rb.heard, ['i:11,12']);
    const t2 = await la.announce([12], true);
    await lb.sync();
    assert.equal(rb.uncertain.get('12'), 2, 'announcements nest');
    la.done(t1, [11, 12, 13], false);
    await until(async () => (await lb.sync()) && !rb.uncertain.has('11'));
    assert.equal(rb.heard.at(-1), 'i:11,12,13', 'the end drops everything the change touched');
    assert.equal(rb.uncertain.get('12'), 1, 'the other change of 12 is not done yet');
    // The end of t2 never comes: 12 stays uncertain until the announcement is old.
    assert.equal(lb.pendingRemote, 1);
    lb.sweep(Date.now() + PENDING_MAX_AGE_MS + 1);
    assert.equal(lb.pendingRemote, 0);
    assert.deepEqual([...rb.uncertain], []);
    assert.equal(rb.heard.at(-1), '*', 'an announcement given up on drops everything');
    void t2;
  });

  it('after a resubscription nothing is cached for the grace (announcements made meanwhile were not heard), then everything is dropped once more', async () => {
    // A grace no stall of a loaded machine outlasts between the recovery and the poll that sees it.
    const c = await connect(8_000);
    const r = new Recorder();
    const link = c.coherenceFor('store5', r);
    assert.equal(await link.sync(), true);
    assert.deepEqual([...r.uncertain], []);
    await redis.pause();
    try {
      await until(async () => {
        const coherent = await link.sync();
        if (!coherent) r.everything.push('sync false');
        return !coherent;
      });
    } finally {
      await redis.resume();
    }
    let uncertainAtRecovery: number | undefined;
    await until(async () => {
      const coherent = await link.sync();
      if (coherent) {
        r.everything.push('sync true');
        uncertainAtRecovery = r.uncertain.get('*');
      }
      return coherent;
    }, 15_000);
    assert.equal(uncertainAtRecovery, 1, 'nothing cached right after the resubscription');
    await until(() => !c.cachesSettling, 30_000);
    assert.deepEqual([...r.uncertain], [], 'cached again after the grace');
    // In order: the loss dropped everything before sync() said so; the resubscription made
    // everything uncertain, once, before sync() was true again; the grace's end made it certain
    // and then dropped what was read meanwhile.
    const ev = r.everything;
    const at = (e: string): number => ev.indexOf(e);
    assert.ok(at('drop *') >= 0 && at('drop *') < at('sync false'), `dropped when coherence was lost (${ev.join(', ')})`);
    assert.ok(at('sync false') < at('uncertain *') && at('uncertain *') < at('sync true'), ev.join(', '));
    assert.equal(ev.filter((e) => e === 'uncertain *').length, 1, ev.join(', '));
    assert.ok(at('sync true') < at('certain *'), ev.join(', '));
    assert.equal(ev[at('certain *') + 1], 'drop *', `what was read meanwhile is dropped at its end (${ev.join(', ')})`);
  });

  it('without Redis: sync() is false (caches dropped), changes are refused with JUKEBOX; once back, true again', async () => {
    const c = await connect();
    const r = new Recorder();
    const link = c.coherenceFor('store3', r);
    assert.equal(await link.sync(), true);
    r.heard.length = 0;
    await redis.pause();
    try {
      await until(async () => !(await link.sync()));
      assert.ok(r.heard.includes('*'), 'everything was dropped when coherence was lost');
      assert.throws(
        () => link.checkCanPublish(),
        (e: unknown) => isVfsError(e) && e.errno === 'JUKEBOX',
      );
      await assert.rejects(link.announce([1], false), (e: unknown) => isVfsError(e) && e.errno === 'JUKEBOX');
    } finally {
      // Counted from before the restart: the link may recover (and drop) while resume() still waits
      // for the new redis-server to answer, which at load 12 came before a count taken after it.
      r.heard.length = 0;
      await redis.resume();
    }
    // Both connections back (the subscriber one may come back first: changes wait for the other).
    await until(async () => (await link.sync()) && c.ready, 15_000);
    // (Dropped at the resubscription, and at the end of the grace that follows it.)
    await until(() => !c.cachesSettling);
    assert.ok(r.heard.includes('*'), 'everything was dropped again when coherence came back');
    link.checkCanPublish();
  });

  it('control generations: a change waits for every live server, names the one that lags, forgets the one that left', async () => {
    const [a, b] = [await connect(), await connect()];
    const ca = new ControlReplicas(a, 'scope1');
    const cb = new ControlReplicas(b, 'scope1');
    try {
      await ca.record(5);
      await cb.record(4);
      const lagging = await ca.waitApplied(5, 200);
      assert.deepEqual(lagging.pending, [{ server: b.serverId, applied: 4 }]);
      // B catches up while A waits.
      setTimeout(() => void cb.record(5), 100);
      const t = Date.now();
      assert.deepEqual((await ca.waitApplied(5, 5_000)).pending, []);
      assert.ok(Date.now() - t < 4_000);
      // B leaves: not waited for.
      await cb.close();
      assert.deepEqual(
        (await ca.waitApplied(9, 200)).pending.map((p) => p.server),
        [a.serverId],
      );
      assert.deepEqual(
        (await ca.replicas()).map((r) => r.server),
        [a.serverId],
      );
    } finally {
      await ca.close();
      await cb.close();
    }
  });
});
