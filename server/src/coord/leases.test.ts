// The coordinator against a real redis-server (Debian's, on loopback, started by the test): how it
// connects (password from a file or the environment, clear errors), and the write lease of one file
// between two coordinators: one holder at a time, strictly increasing tokens, handover on request.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Redis } from 'ioredis';
import pino from 'pino';
import { markRedisSeen, startRedis, TEST_LEASE_TTL_MS, type RedisInstance } from '../../../test/helpers/redis.js';
import { freePort } from '../../../test/helpers/server.js';
import { defaultConfig } from '../config/defaults.js';
import { isVfsError } from '../vfs/errors.js';
import { Coordinator, RECONNECT_LAG_MS, redisPassword, type LeaseStore } from './leases.js';

const log = pino({ level: 'silent' });
const PASSWORD = 'lease-test-password';

describe('coordination over Redis', () => {
  let redis: RedisInstance;
  let dir: string;
  const open: Coordinator[] = [];

  before(async () => {
    redis = await startRedis({ password: PASSWORD });
    await markRedisSeen(redis.url, 'unit:', PASSWORD);
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-coord-'));
  });

  after(async () => {
    for (const c of open) await c.close();
    await redis?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const connect = async (password: string | undefined = PASSWORD, url = redis.url): Promise<Coordinator> => {
    const c = await Coordinator.open({
      url,
      keyPrefix: 'unit:',
      tls: false,
      leaseTtlMs: TEST_LEASE_TTL_MS,
      log,
      ...(password ? { password } : {}),
    });
    open.push(c);
    return c;
  };

  it('reads the password from a file (trailing newline dropped) or an environment variable, and says what is missing', async () => {
    const file = path.join(dir, 'pw');
    await writeFile(file, `${PASSWORD}\n`);
    const cfg = defaultConfig().coordination.redis;
    assert.equal(await redisPassword({ ...cfg, password_file: file }), PASSWORD);
    assert.equal(await redisPassword({ ...cfg, password_env: 'P' }, { P: PASSWORD }), PASSWORD);
    assert.equal(await redisPassword(cfg), undefined);
    await assert.rejects(redisPassword({ ...cfg, password_env: 'P' }, {}), /the environment variable P is not set/);
    await assert.rejects(redisPassword({ ...cfg, password_file: path.join(dir, 'none') }), /password_file: cannot read/);
  });

  it('refuses to start on a Redis it cannot reach or that refuses its password, naming it', async () => {
    const port = await freePort();
    await assert.rejects(connect(PASSWORD, `redis://127.0.0.1:${port}`), new RegExp(`cannot reach redis://127\\.0\\.0\\.1:${port}`));
    await assert.rejects(connect('wrong'), /coordination\.redis: cannot reach .*(WRONGPASS|invalid)/i);
  });

  it('one holder per file; tokens increase; the holder stores the data and hands over when asked', async () => {
    let next = 0;
    const flushed: string[] = [];
    const store = (name: string): LeaseStore => ({
      nextLeaseToken: () => Promise.resolve(++next),
      flushAttrs: () => {
        flushed.push(name);
        return Promise.resolve();
      },
    });
    const a = (await connect()).leasesFor('s', store('a'));
    const b = (await connect()).leasesFor('s', store('b'));
    let dirtyInA = true;
    a.join({ flush: () => ((dirtyInA = false), Promise.resolve()), hasDirty: () => dirtyInA });
    b.join({ flush: () => Promise.resolve(), hasDirty: () => false });
    // The grace period of a Redis seen for the first time may delay the first take.
    const t1 = await a.token(7);
    assert.equal(a.token(7), t1, 'held: answered at once, same token');
    const t2 = await b.token(7);
    assert.ok(t2 > t1, `a later holder gets a newer token (${t1}, then ${t2})`);
    assert.equal(dirtyInA, false, 'A stored its data before letting the lease go');
    assert.deepEqual(flushed, ['a'], 'and its size and times');
    // Another file is independent.
    assert.ok((await a.token(8)) > t2);
  });

  it('a read elsewhere asks the holder to store only what it acknowledged since it last stored: one flush per batch of writes, not per read', async () => {
    let next = 100;
    const store: LeaseStore = { nextLeaseToken: () => Promise.resolve(++next) };
    const a = (await connect()).leasesFor('s3', store);
    const b = (await connect()).leasesFor('s3', store);
    let flushes = 0;
    a.join({ flush: () => (flushes++, Promise.resolve()), hasDirty: () => false });
    b.join({ flush: () => Promise.resolve(), hasDirty: () => false });
    const t = await a.token(9);
    // A acknowledged a write: the first read through B has it stored first.
    await b.fresh(9);
    assert.equal(flushes, 1);
    // Nothing written since: reads through B ask nothing of A (ten reads, no flush).
    for (let i = 0; i < 10; i++) await b.fresh(9);
    assert.equal(flushes, 1, 'no flush round trip for reads of a file not written since');
    // A writes again (still its lease, same token, marked dirty again): the next read flushes once.
    assert.equal(await a.token(9), t);
    assert.equal(a.token(9), t, 'marked: answered at once');
    await b.fresh(9);
    await b.fresh(9);
    assert.equal(flushes, 2);
  });

  it('a hand-over that could not store the file leaves it as it was: unmarked after a read had it stored, so the next write marks it', async () => {
    let next = 200;
    const store: LeaseStore = { nextLeaseToken: () => Promise.resolve(++next) };
    const ca = await connect();
    const a = ca.leasesFor('s4', store);
    const b = (await connect()).leasesFor('s4', store);
    let flushes = 0;
    let failing = false;
    let failed!: () => void;
    const handOverFailed = new Promise<void>((r) => (failed = r));
    a.join({
      flush: () => {
        flushes++;
        if (!failing) return Promise.resolve();
        failed();
        return Promise.reject(new Error('the block store is down'));
      },
      hasDirty: () => true,
    });
    b.join({ flush: () => Promise.resolve(), hasDirty: () => false });
    const t = await a.token(11);
    // A read through B has the file stored: A's mark goes.
    await b.fresh(11);
    assert.equal(await ca.redis.get('unit:dirty:s4:11'), null);
    // Asked for the lease, A cannot store the file: it keeps the lease.
    failing = true;
    a.handOver(11);
    await handOverFailed;
    await new Promise((r) => setImmediate(r));
    failing = false;
    assert.equal(a.heldUnder(11, t), true, 'kept');
    // A acknowledges a write: readers elsewhere must find the file marked, and ask for it.
    assert.equal(await a.token(11), t);
    assert.notEqual(await ca.redis.get('unit:dirty:s4:11'), null, 'marked before the write is acknowledged');
    await b.fresh(11);
    assert.equal(flushes, 3, 'a read through B has the write stored first');
  });

  it('after Redis lost its keys, no lease is taken for the grace (one ttl and RECONNECT_LAG_MS) unless the store never handed out a token', async () => {
    const ttl = 4_000;
    // A key prefix seen for the first time is a Redis without keys: a grace period starts.
    const open1 = async (prefix: string, leaseTtlMs: number) => {
      const c = await Coordinator.open({ url: redis.url, keyPrefix: prefix, tls: false, leaseTtlMs, log, password: PASSWORD });
      open.push(c);
      return c;
    };
    // The one that must not wait gets a long ttl: on a loaded machine it must still be in its
    // grace period when it takes its lease; the one that waits gets a short one.
    const fresh = await open1('grace-new:', 60_000);
    const openedAt = Date.now();
    const used = await open1('grace-used:', ttl);
    // The grace covers a ttl and the lag with which another server may find Redis back.
    assert.ok(used.graceUntil - openedAt >= ttl + RECONNECT_LAG_MS, `grace ${used.graceUntil - openedAt} ms`);
    assert.ok(fresh.graceUntil > Date.now() && used.graceUntil > Date.now(), 'both in a grace period');
    let next = 0;
    const never = fresh.leasesFor('g', {
      nextLeaseToken: () => Promise.resolve(++next),
      leaseTokensIssued: () => Promise.resolve(next > 0),
    });
    const issued = used.leasesFor('g', { nextLeaseToken: () => Promise.resolve(1000), leaseTokensIssued: () => Promise.resolve(true) });
    await never.token(1);
    assert.ok(Date.now() < fresh.graceUntil, 'a store that never had a lease takes one at once');
    // A write waits a while, then answers JUKEBOX (the grace is longer): a client sends it again.
    let jukeboxes = 0;
    for (;;) {
      try {
        await issued.token(1);
        break;
      } catch (e) {
        if (!(isVfsError(e) && e.errno === 'JUKEBOX' && /Redis lost its keys/.test(e.message)) || jukeboxes++ > 10) throw e;
      }
    }
    assert.ok(Date.now() >= used.graceUntil, 'a store that had leases waits the grace period out');
  });

  it('a subscriber connection that drops again while it subscribes anew does not end the server', async () => {
    const c = await connect();
    const sub = (c as unknown as { sub: Redis }).sub;
    // The server exits on an unhandled rejection (cli/start.ts): a Redis that comes back and goes
    // again must not make one.
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      // Back: ioredis sends SUBSCRIBE for the channels again, then says 'ready'; the server closes
      // the connection and it drops before Redis answers (what a loaded machine made of the
      // close after a Redis restart, in CI).
      const dropped = new Promise<void>((resolve) =>
        sub.once('ready', () => {
          sub.disconnect();
          (sub as unknown as { stream: Socket }).stream.destroy();
          resolve();
        }),
      );
      sub.disconnect(true);
      await dropped;
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(unhandled.map(String), []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('without Redis a write cannot get a lease: JUKEBOX, not a hang', async () => {
    const c = (await connect()).leasesFor('s2', { nextLeaseToken: () => Promise.resolve(1) });
    await redis.pause();
    try {
      await assert.rejects(Promise.resolve(c.token(1)), (e: unknown) => isVfsError(e) && e.errno === 'JUKEBOX');
    } finally {
      await redis.resume();
    }
  });
});
