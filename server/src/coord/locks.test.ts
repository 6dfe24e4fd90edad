// The cluster lock state (coord/locks.ts) of two coordinators on one real redis-server, through the
// lock manager's tables (vfs/locks) as the protocol engines use them: share modes and delete-pending
// across servers, byte-range conflicts at the edges of the 64-bit range and for zero-length ranges,
// I/O checks only for files another server announced, a closed server's entries gone at once.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { markRedisSeen, startRedis, TEST_LEASE_TTL_MS, type RedisInstance } from '../../../test/helpers/redis.js';
import type { MetadataStore } from '../meta/store.js';
import { ByteRangeLocks, U64_MAX } from '../vfs/locks/byte-range.js';
import { AccessBits, OpenTable, OpenTableError, ShareAccess } from '../vfs/locks/opens.js';
import { isVfsError } from '../vfs/errors.js';
import { Coordinator } from './leases.js';
import { RedisClusterLocks } from './locks.js';

const log = pino({ level: 'silent' });
const RW = AccessBits.READ_DATA | AccessBits.WRITE_DATA;
const ALL = ShareAccess.READ | ShareAccess.WRITE | ShareAccess.DELETE;

interface Server {
  c: Coordinator;
  locks: RedisClusterLocks;
  opens: OpenTable;
  ranges: ByteRangeLocks;
  store: MetadataStore;
}

/** Counts the byte-range checks `s` sends to Redis from now on. */
function countEvals(s: Server): () => number {
  const redis = s.c.redis as unknown as { dittoRangeCheck: (...a: unknown[]) => Promise<number> };
  const check = redis.dittoRangeCheck.bind(redis);
  let n = 0;
  redis.dittoRangeCheck = (...a: unknown[]) => {
    n++;
    return check(...a);
  };
  return () => n;
}

describe('cluster lock state in Redis', () => {
  let redis: RedisInstance;
  const servers: Server[] = [];

  before(async () => {
    redis = await startRedis();
    await markRedisSeen(redis.url, 'unit-locks:');
  });

  after(async () => {
    for (const s of servers) {
      await s.locks.close();
      await s.c.close();
    }
    await redis?.stop();
  });

  /** A server: its own tables and its own object for the store, bound to one store key. */
  const server = async (): Promise<Server> => {
    const c = await Coordinator.open({ url: redis.url, keyPrefix: 'unit-locks:', tls: false, leaseTtlMs: TEST_LEASE_TTL_MS, log });
    const locks = await RedisClusterLocks.open(c, log, 1_000);
    const opens = new OpenTable();
    const ranges = new ByteRangeLocks();
    opens.attachCluster(locks);
    ranges.attachCluster(locks);
    const store = {} as MetadataStore;
    locks.bindStore(store, 'store1');
    const s = { c, locks, opens, ranges, store };
    servers.push(s);
    // Redis started empty: nothing is granted for the grace (the others register their state again).
    const wait = c.graceUntil - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait + 50));
    return s;
  };

  const refusal = async (p: Promise<unknown>): Promise<string> => {
    try {
      await p;
      return 'granted';
    } catch (e) {
      if (e instanceof OpenTableError) return e.reason;
      throw e;
    }
  };

  it('share modes and delete-pending count across servers; a release lets the other in', async () => {
    const a = await server();
    const b = await server();
    const ra = await a.opens.addShared(a.store, 10, RW, ShareAccess.READ, 'a1');
    assert.equal(await refusal(b.opens.addShared(b.store, 10, RW, ALL, 'b1')), 'sharing-violation');
    // A reader that shares everything passes A's share modes (A's open reads and writes, shares read only).
    await b.opens.releaseShared(await b.opens.addShared(b.store, 10, AccessBits.READ_DATA, ALL, 'b2'));
    assert.equal(await b.opens.refusesDeleteShared(b.store, 10), true, 'NFS REMOVE through B is refused');
    assert.equal(b.opens.size, 0, 'a refused open leaves nothing behind');
    assert.equal(await a.opens.releaseShared(ra), false);
    const rb = await b.opens.addShared(b.store, 10, RW, ALL, 'b3');
    assert.equal(await b.opens.refusesDeleteShared(b.store, 10), false);
    // Delete-pending set through B: A's new opens are refused; B's last close says "remove it".
    await b.opens.setDeletePending(rb.file, true);
    assert.equal(await refusal(a.opens.addShared(a.store, 10, AccessBits.READ_DATA, ALL, 'a2')), 'delete-pending');
    assert.equal(await b.opens.releaseShared(rb), true, 'the last open of a delete-pending file');
    await a.opens.releaseShared(await a.opens.addShared(a.store, 10, RW, ALL, 'a3'));
  });

  it('a delete-on-close closed on one server while the other has the file open: the other’s last close removes it', async () => {
    const [a, b] = servers as [Server, Server];
    const rb = await b.opens.addShared(b.store, 11, RW, ALL, 'b');
    const ra = await a.opens.addShared(a.store, 11, RW | AccessBits.DELETE, ALL, 'a');
    ra.deleteOnClose = true;
    assert.equal(await a.opens.releaseShared(ra), false, 'B still has it open');
    assert.equal(await refusal(a.opens.addShared(a.store, 11, RW, ALL, 'a2')), 'delete-pending');
    assert.equal(await b.opens.releaseShared(rb), true);
  });

  it('byte-range locks: conflicts across servers at the edges of the range, zero-length ranges, I/O only where announced', async () => {
    const [a, b] = servers as [Server, Server];
    const oa = {};
    const ob = {};
    const take = async (s: Server, owner: object, offset: bigint, length: bigint, exclusive: boolean): Promise<boolean> => {
      const r = s.ranges.tryLock(s.store, 20, owner, s, offset, length, exclusive);
      assert.equal(r.kind, 'granted', 'granted locally');
      return s.ranges.confirmShared(s.store, 20, r.kind === 'granted' ? [r.lock] : []);
    };
    const evals = countEvals(b);
    assert.equal(await b.ranges.remoteIoConflict(b.store, 20, 0, 10, true), false, 'nothing announced: no conflict');
    assert.equal(evals(), 0, 'nothing announced: no round trip to Redis');
    assert.equal(await take(a, oa, U64_MAX - 9n, 10n, true), true, 'the last 10 bytes of the 64-bit range');
    assert.equal(await take(b, ob, U64_MAX, 1n, false), false, 'the very last byte conflicts');
    assert.equal(b.ranges.locksOf(b.store, 20).length, 0, 'a refused lock is taken back here too');
    assert.equal(await take(b, ob, U64_MAX - 19n, 11n, true), false, 'an overlap of one byte');
    assert.equal(await take(b, ob, U64_MAX - 20n, 11n, true), true, 'adjacent below');
    // A shared lock of A: B may read and take shared locks there, not write.
    assert.equal(await take(a, oa, 100n, 10n, false), true);
    assert.equal(await take(b, ob, 105n, 10n, false), true, 'shared with shared');
    // The announcement arrives through pub/sub: B asks Redis for file 20 from then on.
    const deadline = Date.now() + 30_000;
    while (!(await b.ranges.remoteIoConflict(b.store, 20, 109, 1, true)) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    assert.equal(await b.ranges.remoteIoConflict(b.store, 20, 100, 1, false), false, 'a read under a shared lock');
    assert.equal(await b.ranges.remoteIoConflict(b.store, 20, 109, 1, true), true, 'a write under a shared lock');
    assert.equal(await b.ranges.remoteIoConflict(b.store, 20, 110, 100, true), false, 'a write next to it');
    // A zero-length lock at 200 is the point between 199 and 200: it conflicts with [199, 201).
    assert.equal(await take(a, oa, 199n, 2n, true), true);
    assert.equal(await take(b, ob, 200n, 0n, true), false, 'zero-length inside an exclusive lock');
    assert.equal(await take(b, ob, 201n, 0n, true), true, 'zero-length at its end');
    assert.equal(await take(b, ob, 0n, 0n, true), true, '{0, 0} conflicts with nothing');
    // A's locks go when A's open closes: B's I/O no longer conflicts once the removal settled.
    a.ranges.releaseOwner(a.store, 20, oa);
    await a.ranges.settled();
    assert.equal(await b.ranges.remoteIoConflict(b.store, 20, 109, 1, true), false);
    const key = 'unit-locks:brl:store1:20';
    // Left: B's locks but {0, 0}, which conflicts with nothing and is not registered.
    assert.equal(await a.c.redis.hlen(key), 3, "every lock of A's open went");
    b.ranges.releaseOwner(b.store, 20, ob);
    await b.ranges.settled();
    assert.equal(await a.c.redis.exists(key), 0, 'no locks left: nothing stays in Redis');
  });

  it('an I/O reads the announcements that arrived in the same turn of the event loop before it decides', async () => {
    // Through A a lock is granted (and announced) just before a WRITE reaches B; B's subscriber may
    // get its turn only after the WRITE's handler asked. Played here by hand: B has not heard of
    // the lock when it is asked, and hears of it before its next turn.
    const [a, b] = servers as [Server, Server];
    const owner = {};
    const r = a.ranges.tryLock(a.store, 21, owner, a, 0n, 10n, true);
    assert.equal(r.kind, 'granted');
    assert.equal(await a.ranges.confirmShared(a.store, 21, r.kind === 'granted' ? [r.lock] : []), true);
    const bl = b.locks as unknown as { announced: Map<string, number>; onMessage(m: string): void };
    const inc = (a.locks as unknown as { inc: string }).inc;
    for (let i = 0; i < 600 && !bl.announced.has('store1 21'); i++) await new Promise((res) => setTimeout(res, 50));
    bl.announced.delete('store1 21');
    const asked = b.ranges.remoteIoConflict(b.store, 21, 5, 1, true);
    bl.onMessage(`l ${inc} store1 21`);
    assert.equal(await asked, true, 'the WRITE under the lock is refused');
    a.ranges.releaseOwner(a.store, 21, owner);
    await a.ranges.settled();
  });

  it('an open refused while a resync registered it again leaves nothing in Redis', async () => {
    const [a, b] = servers as [Server, Server];
    const ra = await a.opens.addShared(a.store, 40, RW, 0, 'a');
    // B's script reaches Redis after a resync wrote B's entries under a new incarnation, unchecked.
    const inner = b.locks as unknown as {
      redis: { dittoOpenAdd: (...argv: string[]) => Promise<string> };
      resync(): Promise<void>;
    };
    const add = inner.redis.dittoOpenAdd;
    inner.redis.dittoOpenAdd = async (...argv) => {
      await inner.resync();
      return add.apply(inner.redis, argv);
    };
    try {
      assert.equal(await refusal(b.opens.addShared(b.store, 40, RW, ALL, 'b')), 'sharing-violation');
    } finally {
      inner.redis.dittoOpenAdd = add;
    }
    await a.opens.releaseShared(ra);
    // B's refused open would refuse an open that shares nothing.
    await a.opens.releaseShared(await a.opens.addShared(a.store, 40, RW, 0, 'a2'));
  });

  it('a server registered again after its liveness key was gone announces its byte-range locks again', async () => {
    const b = servers[1]!;
    const d = await server();
    const od = {};
    const r = d.ranges.tryLock(d.store, 50, od, d, 0n, 10n, true);
    assert.equal(r.kind, 'granted');
    assert.equal(await d.ranges.confirmShared(d.store, 50, r.kind === 'granted' ? [r.lock] : []), true);
    const announced = (b.locks as unknown as { announced: Map<string, number> }).announced;
    const heard = async (): Promise<void> => {
      const deadline = Date.now() + 30_000;
      while (!announced.has('store1 50') && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    };
    await heard();
    const inner = d.locks as unknown as { inc: string; timer: NodeJS.Timeout; renew(): Promise<void> };
    clearInterval(inner.timer);
    await b.c.redis.del(`unit-locks:live:${inner.inc}`);
    assert.equal(await b.ranges.remoteIoConflict(b.store, 50, 0, 1, true), false, 'D counts as gone');
    assert.equal(announced.has('store1 50'), false, 'B forgot the file');
    await inner.renew();
    await heard();
    assert.equal(await b.ranges.remoteIoConflict(b.store, 50, 0, 1, true), true, 'D’s lock binds B’s I/O again');
    d.ranges.releaseOwner(d.store, 50, od);
    await d.ranges.settled();
    await d.locks.close();
  });

  it('the entries a gone server left on files nobody touches again are swept from Redis', async () => {
    const [a] = servers as [Server, Server];
    const e = await server();
    await e.opens.addShared(e.store, 60, RW, ALL, 'e');
    const r = e.ranges.tryLock(e.store, 60, {}, e, 0n, 10n, true);
    assert.equal(r.kind, 'granted');
    assert.equal(await e.ranges.confirmShared(e.store, 60, r.kind === 'granted' ? [r.lock] : []), true);
    await e.locks.announceCaching(e.store, 60);
    const keys = ['opens', 'brl', 'cache'].map((k) => `unit-locks:${k}:store1:60`);
    assert.equal(await a.c.redis.exists(...keys), 3);
    const ra = await a.opens.addShared(a.store, 60, RW, ALL, 'a');
    // E is killed: its liveness key goes, nothing of it is deleted.
    const inner = e.locks as unknown as { inc: string; timer: NodeJS.Timeout };
    clearInterval(inner.timer);
    await a.c.redis.del(`unit-locks:live:${inner.inc}`);
    await (a.locks as unknown as { sweep(): Promise<void> }).sweep();
    assert.equal(await a.c.redis.hlen(keys[0]!), 1, 'of the opens, A’s (alive) is left');
    assert.equal(await a.c.redis.exists(...keys.slice(1)), 0, 'nothing of E is left');
    await a.opens.releaseShared(ra);
    assert.equal(await a.c.redis.exists(keys[0]!), 0);
  });

  it('a killed server: its delete-pending counts only while a live open is left, its opens no longer limit caching', async () => {
    const [a] = servers as [Server, Server];
    const e = await server();
    const key = 'unit-locks:opens:store1:70';
    const re = await e.opens.addShared(e.store, 70, RW | AccessBits.DELETE, ALL, 'e');
    await e.opens.setDeletePending(re.file, true);
    assert.equal(await a.locks.isDeletePending(a.store, 70), true, 'E is alive and has the file open');
    assert.equal(await a.locks.anyOpenElsewhere(a.store, 70), true, 'an open elsewhere (caching here is limited)');
    assert.equal(await e.locks.anyOpenElsewhere(e.store, 70), false, 'E’s own open is not elsewhere for E');
    // A opens file 71 before E marks it: that delete-pending is the file's, A's last close acts on it.
    const ra = await a.opens.addShared(a.store, 71, AccessBits.READ_DATA, ALL, 'a');
    const re2 = await e.opens.addShared(e.store, 71, RW | AccessBits.DELETE, ALL, 'e2');
    await e.opens.setDeletePending(re2.file, true);
    // E is killed: its liveness key goes, nothing of it is deleted.
    const inner = e.locks as unknown as { inc: string; timer: NodeJS.Timeout };
    clearInterval(inner.timer);
    await a.c.redis.del(`unit-locks:live:${inner.inc}`);
    assert.equal(await a.locks.anyOpenElsewhere(a.store, 72), false, 'nothing open');
    assert.equal(await a.locks.isDeletePending(a.store, 70), false, 'no live open is left to act on it');
    assert.equal(await a.c.redis.exists(key), 0, 'and the flag and E’s entry are gone');
    assert.equal(await a.locks.isDeletePending(a.store, 71), true, 'A’s open is left: still delete-pending');
    assert.equal(await a.locks.anyOpenElsewhere(a.store, 71), false, 'a killed server’s open is not elsewhere');
    assert.equal(await a.opens.releaseShared(ra), true, 'A’s close is the last: it removes the file');
  });

  it('a server that closes (or whose liveness key is gone) stops counting at once; one that cannot reach Redis grants nothing', async () => {
    const [a] = servers as [Server, Server];
    const c = await server();
    await c.opens.addShared(c.store, 30, RW, 0, 'c');
    assert.equal(await refusal(a.opens.addShared(a.store, 30, RW, ALL, 'a')), 'sharing-violation');
    // C's liveness key gone (Redis lost it, C was away): C's open stops counting; C's next renewal
    // finds its key gone and registers the open again, which counts again. (C's timer stopped: the renewal is the test's.)
    const inner = c.locks as unknown as { inc: string; timer: NodeJS.Timeout; renew(): Promise<void> };
    clearInterval(inner.timer);
    await a.c.redis.del(`unit-locks:live:${inner.inc}`);
    await a.opens.releaseShared(await a.opens.addShared(a.store, 30, RW, ALL, 'a0'));
    await inner.renew();
    assert.equal(await refusal(a.opens.addShared(a.store, 30, RW, ALL, 'a1')), 'sharing-violation', 'registered again');
    await c.locks.close();
    const ra = await a.opens.addShared(a.store, 30, RW, ALL, 'a');
    await a.opens.releaseShared(ra);
    // Closed: JUKEBOX, and nothing is registered.
    await assert.rejects(c.opens.addShared(c.store, 31, RW, ALL, 'c2'), (e) => isVfsError(e) && e.errno === 'JUKEBOX');
    assert.equal(c.opens.get(c.store, 31), undefined);
  });

  // Last: Redis loses its keys, so every coordinator here starts a grace period.
  it('a server registers its opens again as soon as it is connected to a Redis that lost its keys, not at its next renewal', async () => {
    const [a] = servers as [Server, Server];
    const d = await server();
    await d.opens.addShared(d.store, 40, RW, 0, 'd');
    // D's timer stopped: only the reconnection can register it again (under a new incarnation).
    const inner = d.locks as unknown as { inc: string; timer: NodeJS.Timeout };
    clearInterval(inner.timer);
    const before = inner.inc;
    assert.equal(await a.c.redis.exists(`unit-locks:live:${before}`), 1);
    await redis.pause();
    await redis.resume();
    const registered = async (): Promise<boolean> =>
      inner.inc !== before && (await a.c.redis.exists(`unit-locks:live:${inner.inc}`).catch(() => 0)) === 1;
    const deadline = Date.now() + 30_000;
    while (!(await registered()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(await registered(), 'D is alive again');
    const opens = await a.c.redis.keys('unit-locks:opens:*:40');
    assert.equal(opens.length, 1, 'the file has its open entry again');
    const fields = await a.c.redis.hkeys(opens[0]!);
    assert.ok(
      fields.some((f) => f.startsWith(`${inner.inc}|`)),
      `D's open is registered again (${fields.join(', ')})`,
    );
  });
});
