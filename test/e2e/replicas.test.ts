// Several servers on one store (issue 14): two DittoFS processes serve the same share from one
// PostgreSQL metadata store and one S3 bucket (s3rver), coordinated by write leases in a private
// Redis (coordination.redis). A raw NFSv3 client writes, commits and reads through both.
//
// - Disjoint writes to one 4 MiB block through two servers, both COMMITted: both survive, in every
//   trial (before leases and compare-and-swap block switches, A's bytes reverted in 9 of 10).
// - A server killed (SIGKILL) and restarted replays its WAL without undoing a newer write and a
//   truncate made through the other server since.
// - Overlapping writes through either server in seeded rounds: the last committed write wins.
// - Crossing directory moves through the two servers: exactly one succeeds.
// - Two servers reaching PostgreSQL by different addresses (one through a TCP proxy) coordinate:
//   the store is named in Redis by an identity kept in the store, not by the URL (before, their
//   disjoint writes to one block lost one of them).
// - Data committed through one server reads back through the other at once (the holder of the
//   file's lease stores what it acknowledged first).
// - A truncate through one server to the size it last saw cuts what the other acknowledged past
//   it (the size is compared with the other's, stored first).
// - A change (setattr, write, rename, remove) through one server is seen by the other's next call
//   (caches invalidated through Redis, not trusted for a while); Redis stopped and started under
//   load serves nothing stale and loses nothing.
// - Data a killed server committed but had not uploaded: after its restart (uploads held up), reads
//   through the other wait for it instead of returning what the store had; while it is down, the
//   other answers JUKEBOX for that file (reads and writes) instead of serving older bytes or writing
//   a block version that would have A's committed data refused when A comes back.
// - A server that loses Redis answers JUKEBOX to writes until Redis is back.
// - A server that loses Redis in the middle of a change: a change it acknowledged is what the other
//   server's very next call sees (the change was announced before it was made); one it could not
//   announce is refused and not made.
// - A share created and a default permission of none set through one server's API are applied by
//   the other before the API answers; each server reports the generation it applied.
// After every test the PostgreSQL tables are checked: one tree, nlink right, no orphan block rows.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { SUITE_TIMEOUT_MS } from '../helpers/limits.js';
import { NfsOps, NfsStatMore, retryJukebox, statusName } from '../helpers/nfs-ops.js';
import { postgresForTests, type PostgresInstance } from '../helpers/postgres.js';
import { Prng, seedFrom } from '../helpers/prng.js';
import { startRedis, type RedisInstance } from '../helpers/redis.js';
import { authSys, NfsClient, NfsStat, StableHow, type Fattr } from '../helpers/rpc-client.js';
import { startS3, type S3TestServer } from '../helpers/s3.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';
import { apiRequest, takeOverAdmin } from '../helpers/api.js';
import { writeConfig } from '../fault/support.js';
import { tcpForward } from '../helpers/proxy.js';
import pgClient from 'pg';
import { firstDiff, holdingProxy, replicaConfig, settlesTo, storeInconsistencies, writeCommit } from '../helpers/replicas.js';

const MiB = 1024 * 1024;
const FILE_SIZE = 4 * MiB;
const TRIALS = Number(process.env.REPLICA_TRIALS ?? 10);
const SEED = seedFrom('REPLICA_SEED');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/**
 * A change sent again while it answers JUKEBOX, as a real client does: a server that cannot prove
 * the others will hear of a change (Redis slow to answer on a loaded machine) refuses it, unmade.
 */
const jukeboxRetried = <T extends { status: number }>(f: () => Promise<T>): Promise<T> =>
  retryJukebox(f, { maxWaitMs: 30_000, onJukebox: () => jukeboxAnswers++ });
/** JUKEBOX answers sent again by jukeboxRetried: reported at the end (none on a quiet machine). */
let jukeboxAnswers = 0;

/** Crossing directory moves through two servers (10 rounds): exactly one of each pair succeeds. */
async function crossingMoves(ca: NfsOps, cb: NfsOps, prefix: string): Promise<void> {
  const rootA = await ca.mount('/export');
  const rootB = await cb.mount('/export');
  for (let round = 1; round <= 10; round++) {
    const p = `${prefix}p${round}`;
    const q = `${prefix}q${round}`;
    const dp = await jukeboxRetried(() => ca.mkdir(rootA, p));
    const dq = await jukeboxRetried(() => ca.mkdir(rootA, q));
    assert.equal(dp.status, NfsStat.OK);
    assert.equal(dq.status, NfsStat.OK);
    const qThroughB = await cb.lookup(rootB, q);
    const pThroughB = await cb.lookup(rootB, p);
    assert.equal(qThroughB.status, NfsStat.OK);
    // A: mv p q/   B: mv q p/   at the same time.
    const [ra, rb] = await Promise.all([
      jukeboxRetried(() => ca.rename(rootA, p, dq.fh!, p)),
      jukeboxRetried(() => cb.rename(rootB, q, pThroughB.fh!, q)),
    ]);
    const ok = [ra.status, rb.status].filter((st) => st === NfsStat.OK).length;
    assert.equal(ok, 1, `round ${round}: A ${statusName(ra.status)}, B ${statusName(rb.status)}: exactly one move may succeed`);
    // The survivor is in the root, the other inside it: both reachable from the root.
    const top = (await ca.readdirplusAll(rootA)).map((e) => e.name);
    const [outer, inner, outerFh] = ra.status === NfsStat.OK ? [q, p, dq.fh!] : [p, q, dp.fh!];
    assert.ok(top.includes(outer) && !top.includes(inner), `round ${round}: root holds ${outer} only, got ${top.join(' ')}`);
    assert.deepEqual(
      (await cb.readdirplusAll(outerFh)).map((e) => e.name),
      [inner],
      `round ${round}: ${inner} inside ${outer}`,
    );
  }
}

describe('several replicas on one store (coordination.redis)', { timeout: SUITE_TIMEOUT_MS }, () => {
  let pg: PostgresInstance;
  let s3: S3TestServer;
  let redis: RedisInstance;
  let work: string;
  let configFile: string;
  const servers: DittofsProcess[] = [];
  const clients: NfsOps[] = [];
  const proxies: { close(): Promise<void> }[] = [];
  let a: DittofsProcess;
  let b: DittofsProcess;

  const start = async (dataDir: string, nfsPort?: number, env: Record<string, string> = {}): Promise<DittofsProcess> => {
    const s = await startDittofs({
      configFile,
      dataDir,
      api: false,
      ...(nfsPort !== undefined ? { nfsPort } : {}),
      env: { DITTOFS_BLOCKS__STORES__S3__SECRET_ACCESS_KEY: s3.secretAccessKey, DITTOFS_SMB_ENABLED: 'false', ...env },
    });
    servers.push(s);
    return s;
  };
  const open = async (s: DittofsProcess): Promise<NfsOps> => {
    const c = await NfsOps.open(s.nfsPort);
    clients.push(c);
    return c;
  };

  before(async () => {
    [pg, s3, redis] = await Promise.all([postgresForTests(), startS3(), startRedis()]);
    work = await mkdtemp(path.join(os.tmpdir(), 'dittofs-replicas-'));
    configFile = await writeConfig(work, replicaConfig(pg, s3, redis));
    // The first creates the schema; then the second (a fenced store would refuse it).
    a = await start(path.join(work, 'a'));
    b = await start(path.join(work, 'b'));
  });

  // Whatever happened, the tables hold one tree: every entry reaches the root, nlink is right.
  afterEach(async () => {
    assert.deepEqual(await storeInconsistencies(pg.url), []);
  });

  after(async () => {
    if (jukeboxAnswers > 0) console.log(`# replicas: ${jukeboxAnswers} JUKEBOX answers to plain changes, sent again`);
    for (const c of clients) c.close();
    for (const s of servers) await s.stop().catch(() => undefined);
    for (const p of proxies) await p.close();
    await Promise.all([redis?.stop(), s3?.close(), pg?.stop()]);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it(`disjoint writes to one 4 MiB block through two servers, both committed, all survive (${TRIALS} trials, seed ${SEED})`, async () => {
    const rng = new Prng(SEED);
    const ca = await open(a);
    const cb = await open(b);
    const created = await jukeboxRetried(async () => ca.create(await ca.mount('/export'), 'shared.bin'));
    assert.equal(created.status, NfsStat.OK);
    const fh = created.fh!;
    const want = rng.bytes(FILE_SIZE);
    await writeCommit(ca, fh, 0, want);
    for (let trial = 1; trial <= TRIALS; trial++) {
      const x = rng.bytes(MiB);
      const y = rng.bytes(MiB);
      // Both at once: the second server's first WRITE needs the lease the first one holds.
      await Promise.all([writeCommit(ca, fh, 0, x), writeCommit(cb, fh, 2 * MiB, y)]);
      x.copy(want, 0);
      y.copy(want, 2 * MiB);
      const viaA = await settlesTo(ca, fh, want);
      const viaB = await settlesTo(cb, fh, want);
      assert.equal(viaA, 'equal', `trial ${trial} (seed ${SEED}), read through A: ${viaA}`);
      assert.equal(viaB, 'equal', `trial ${trial} (seed ${SEED}), read through B: ${viaB}`);
    }
  });

  it('data committed through one server reads back through the other at once, before any upload (10 rounds, alternating)', async () => {
    const rng = new Prng(SEED + 3);
    const ca = await open(a);
    const cb = await open(b);
    const created = await jukeboxRetried(async () => ca.create(await ca.mount('/export'), 'fresh.bin'));
    assert.equal(created.status, NfsStat.OK);
    const fh = created.fh!;
    let want = Buffer.alloc(0);
    for (let round = 1; round <= 10; round++) {
      const [writer, reader] = round % 2 === 1 ? [ca, cb] : [cb, ca];
      // Half over what is there, half past its end: both the bytes and the size must show.
      const at = Math.floor(want.length / 2);
      const data = rng.bytes(512 * 1024);
      await writeCommit(writer, fh, at, data);
      const next = Buffer.alloc(Math.max(want.length, at + data.length));
      want.copy(next, 0);
      data.copy(next, at);
      want = next;
      const got = await reader.readAll(fh, want.length);
      assert.equal(firstDiff(got, want), 'equal', `round ${round}: read at once through the other server`);
      const attrs = await reader.getattr(fh);
      assert.equal(attrs.attrs?.size, want.length, `round ${round}: size through the other server`);
    }
  });

  it("a truncate through one server to the size it last saw cuts the other's acknowledged writes past it (4 rounds)", async () => {
    const ca = await open(a);
    const cb = await open(b);
    const rootA = await ca.mount('/export');
    for (let round = 1; round <= 4; round++) {
      const created = await jukeboxRetried(() => ca.create(rootA, `cut${round}.bin`));
      assert.equal(created.status, NfsStat.OK);
      const fh = created.fh!;
      // A acknowledges 8 writes of 1,000 bytes (its first one's size reaches the store at once,
      // the later ones' are written behind), then B's client cuts the file to 1,000 bytes: the
      // size B last saw.
      for (let i = 0; i < 8; i++)
        assert.equal(
          (await jukeboxRetried(() => ca.writeV(fh, i * 1000, Buffer.alloc(1000, 0x41 + i), StableHow.UNSTABLE))).status,
          NfsStat.OK,
        );
      const cut = await jukeboxRetried(() => cb.setattr(fh, { size: 1000 }));
      assert.equal(cut.status, NfsStat.OK);
      assert.equal(cut.attrs?.size, 1000);
      // A writes the sizes it wrote behind (within a second: its flush delay), then a COMMIT
      // through A: neither brings the cut bytes back. (On a machine too slow for the flush to have
      // run by then this round checks less, never fails for it.)
      await sleep(2500);
      assert.equal((await jukeboxRetried(() => ca.commit(fh))).status, NfsStat.OK);
      for (const [c, via] of [
        [ca, 'A'],
        [cb, 'B'],
      ] as const) {
        assert.equal((await c.getattr(fh)).attrs?.size, 1000, `round ${round}: size through ${via}`);
        const got = await c.readAll(fh, 8000);
        assert.equal(firstDiff(got, Buffer.alloc(1000, 0x41)), 'equal', `round ${round}: bytes through ${via}`);
      }
    }
  });

  it('overlapping writes to one 4 MiB block through either server, in seeded rounds: every byte is where the last committed write put it', async () => {
    const rng = new Prng(SEED + 4);
    const c = [await open(a), await open(b)];
    const created = await c[0]!.create(await c[0]!.mount('/export'), 'overlap.bin');
    assert.equal(created.status, NfsStat.OK);
    const fh = created.fh!;
    const want = Buffer.alloc(FILE_SIZE);
    await writeCommit(c[0]!, fh, 0, want);
    const ROUNDS = 24;
    for (let round = 1; round <= ROUNDS; round++) {
      const w = rng.int(0, 1);
      const at = rng.int(0, FILE_SIZE - 1);
      const data = rng.bytes(rng.int(1, Math.min(MiB, FILE_SIZE - at)));
      await writeCommit(c[w]!, fh, at, data);
      data.copy(want, at);
      // Read through either one, right away.
      const r = rng.int(0, 1);
      const got = await c[r]!.readAll(fh, FILE_SIZE);
      assert.equal(firstDiff(got, want), 'equal', `round ${round} (seed ${SEED}): written through ${'AB'[w]}, read through ${'AB'[r]}`);
    }
  });

  it('crossing directory moves through two servers never both succeed: nothing is cut off from the tree (10 rounds)', async () => {
    await crossingMoves(await open(a), await open(b), '');
  });

  it('two servers reaching PostgreSQL by different addresses coordinate: a change through one is seen at once through the other; crossing moves are refused', async () => {
    // C names the database by a proxy's port, A by PostgreSQL's own: the store's identity is kept
    // in the store, not derived from the URL (before, C and A used different Redis keys).
    const pgPort = Number(new URL(pg.url).port);
    const pgProxy = await tcpForward(pgPort);
    proxies.push(pgProxy);
    const dir = path.join(work, 'c-conf');
    await mkdir(dir, { recursive: true });
    const saved = configFile;
    configFile = await writeConfig(dir, replicaConfig(pg, s3, redis).replace(`127.0.0.1:${pgPort}`, `127.0.0.1:${pgProxy.port}`));
    let c: DittofsProcess;
    try {
      c = await start(path.join(work, 'c'));
    } finally {
      configFile = saved;
    }
    const ca = await open(a);
    const cc = await open(c);
    const rootA = await ca.mount('/export');
    const rootC = await cc.mount('/export');
    // A directory's attributes: A answers from its cache unless C's change reached it.
    const made = await jukeboxRetried(() => ca.mkdir(rootA, 'by-two-addresses'));
    assert.equal(made.status, NfsStat.OK);
    const dh = made.fh!;
    assert.equal((await cc.lookup(rootC, 'by-two-addresses')).status, NfsStat.OK);
    const stale: string[] = [];
    for (let round = 1; round <= 10; round++) {
      const want = 0o700 | round;
      assert.equal((await ca.getattr(dh)).status, NfsStat.OK);
      const r = await retryJukebox(() => cc.setattr(dh, { mode: want }), { maxWaitMs: 30_000 });
      assert.equal(r.status, NfsStat.OK);
      const got = ((await ca.getattr(dh)).attrs?.mode ?? 0) & 0o7777;
      if (got !== want) stale.push(`round ${round}: C set ${want.toString(8)}, A answers ${got.toString(8)}`);
      // A name C made is found through A (A looked it up, and missed, just before).
      assert.equal((await ca.lookup(dh, `n${round}`)).status, NfsStat.NOENT);
      assert.equal((await jukeboxRetried(() => cc.create(dh, `n${round}`))).status, NfsStat.OK);
      const found = await ca.lookup(dh, `n${round}`);
      if (found.status !== NfsStat.OK) stale.push(`round ${round}: A does not find n${round}: ${statusName(found.status)}`);
    }
    assert.deepEqual(stale, [], 'A serves what C changed');
    // Disjoint writes to one block through both, at once: both survive (one write lease).
    const rng = new Prng(SEED + 11);
    const file = await jukeboxRetried(() => ca.create(rootA, 'by-two-addresses.bin'));
    assert.equal(file.status, NfsStat.OK);
    const want = rng.bytes(FILE_SIZE);
    await writeCommit(ca, file.fh!, 0, want);
    for (let trial = 1; trial <= 3; trial++) {
      const x = rng.bytes(MiB);
      const y = rng.bytes(MiB);
      await Promise.all([writeCommit(ca, file.fh!, 0, x), writeCommit(cc, file.fh!, 2 * MiB, y)]);
      x.copy(want, 0);
      y.copy(want, 2 * MiB);
      assert.equal(await settlesTo(ca, file.fh!, want), 'equal', `trial ${trial} (seed ${SEED}), read through A`);
      assert.equal(await settlesTo(cc, file.fh!, want), 'equal', `trial ${trial} (seed ${SEED}), read through C`);
    }
    await crossingMoves(ca, cc, 'addr-');
    await c.stop();
  });

  it('a change through one server is seen by the next call through the other: setattr, write, rename, remove (100 rounds, never stale)', async () => {
    const ca = await open(a);
    const cb = await open(b);
    const rootA = await ca.mount('/export');
    await cb.mount('/export');
    const dir = await jukeboxRetried(() => ca.mkdir(rootA, 'fresh-attrs'));
    assert.equal(dir.status, NfsStat.OK);
    const f = await jukeboxRetried(() => ca.create(dir.fh!, 'f0'));
    assert.equal(f.status, NfsStat.OK);
    const fh = f.fh!;
    let name = 'f0';
    let size = 0;
    const stale: string[] = [];
    /** B's attributes of `h` against A's (A made the change: its answer is the truth). */
    const same = async (what: string, h: Buffer): Promise<void> => {
      const viaB = await cb.getattr(h);
      const viaA = await ca.getattr(h);
      const pick = (x: Fattr | null): unknown => x && { mode: x.mode, size: x.size, nlink: x.nlink, mtime: x.mtime, uid: x.uid };
      if (viaB.status !== viaA.status || JSON.stringify(pick(viaB.attrs)) !== JSON.stringify(pick(viaA.attrs)))
        stale.push(
          `${what}: B ${statusName(viaB.status)} ${JSON.stringify(pick(viaB.attrs))}, A ${statusName(viaA.status)} ${JSON.stringify(pick(viaA.attrs))}`,
        );
    };
    for (let round = 1; round <= 100; round++) {
      // B has the file and the directory cached before each change.
      await cb.getattr(fh);
      await cb.getattr(dir.fh!);
      switch (round % 4) {
        case 0: {
          const r = await retryJukebox(() => ca.setattr(fh, { mode: 0o600 | (round % 64) }), { maxWaitMs: 30_000 });
          assert.equal(r.status, NfsStat.OK);
          await same(`round ${round} setattr mode`, fh);
          break;
        }
        case 1: {
          // Every other one UNSTABLE, never committed: acknowledged is enough for the size to show.
          const how = round % 8 === 1 ? StableHow.UNSTABLE : StableHow.FILE_SYNC;
          const w = await retryJukebox(() => ca.writeV(fh, size, Buffer.alloc(100, round), how), { maxWaitMs: 30_000 });
          assert.equal(w.status, NfsStat.OK, `round ${round} WRITE: ${statusName(w.status)}`);
          size += 100;
          await same(`round ${round} write to ${size}`, fh);
          break;
        }
        case 2: {
          const to = `f${round}`;
          const r = await jukeboxRetried(() => ca.rename(dir.fh!, name, dir.fh!, to));
          assert.equal(r.status, NfsStat.OK);
          name = to;
          await same(`round ${round} rename (the directory)`, dir.fh!);
          await same(`round ${round} rename (the file)`, fh);
          const found = await cb.lookup(dir.fh!, to);
          if (found.status !== NfsStat.OK) stale.push(`round ${round}: B does not find the new name: ${statusName(found.status)}`);
          break;
        }
        default: {
          const g = await jukeboxRetried(() => ca.create(dir.fh!, `gone${round}`));
          assert.equal(g.status, NfsStat.OK);
          const before = await cb.getattr(g.fh!);
          assert.equal(before.status, NfsStat.OK);
          assert.equal((await jukeboxRetried(() => ca.remove(dir.fh!, `gone${round}`))).status, NfsStat.OK);
          const after = await cb.getattr(g.fh!);
          if (after.status === NfsStat.OK) stale.push(`round ${round}: a removed file still answers through B`);
          await same(`round ${round} remove (the directory)`, dir.fh!);
        }
      }
    }
    assert.deepEqual(stale, [], `stale answers through B:\n${stale.slice(0, 10).join('\n')}`);
  });

  it('Redis stopped and started under load: nothing stale is served, nothing committed is lost', async () => {
    const ca = await open(a);
    const cb = await open(b);
    const created = await jukeboxRetried(async () => ca.create(await ca.mount('/export'), 'redis-restart.bin'));
    assert.equal(created.status, NfsStat.OK);
    const fh = created.fh!;
    const want: Buffer[] = [];
    let size = 0;
    let jukeboxes = 0;
    const onJukebox = (): void => void jukeboxes++;
    const stale: string[] = [];
    let redisDown: Promise<void> | null = null;
    const ROUNDS = 60;
    for (let round = 1; round <= ROUNDS; round++) {
      // Redis goes away for two seconds (and comes back empty) a third of the way in.
      if (round === ROUNDS / 3)
        redisDown = redis
          .pause()
          .then(() => sleep(2_000))
          .then(() => redis.resume());
      const mode = 0o600 | (round % 64);
      const m = await retryJukebox(() => ca.setattr(fh, { mode }), { maxWaitMs: 60_000, delayMs: 100, onJukebox });
      assert.equal(m.status, NfsStat.OK, `round ${round} SETATTR: ${statusName(m.status)}`);
      const data = Buffer.alloc(4096, round);
      const w = await retryJukebox(() => ca.writeV(fh, size, data, StableHow.FILE_SYNC), { maxWaitMs: 60_000, delayMs: 100, onJukebox });
      assert.equal(w.status, NfsStat.OK, `round ${round} WRITE: ${statusName(w.status)}`);
      want.push(data);
      size += data.length;
      // Through B: JUKEBOX (it cannot tell) is allowed, an old answer never.
      const got = await retryJukebox(() => cb.getattr(fh), { maxWaitMs: 60_000, delayMs: 100, onJukebox });
      assert.equal(got.status, NfsStat.OK);
      if (got.attrs?.mode !== undefined && (got.attrs.mode & 0o7777) !== mode)
        stale.push(`round ${round}: mode ${got.attrs.mode.toString(8)}, expected ${mode.toString(8)}`);
      if (got.attrs?.size !== size) stale.push(`round ${round}: size ${got.attrs?.size}, expected ${size}`);
    }
    await redisDown;
    assert.ok(jukeboxes > 0, 'the outage fell inside the workload (some calls answered JUKEBOX)');
    assert.deepEqual(stale, [], `stale answers through B (${jukeboxes} JUKEBOX answers):\n${stale.slice(0, 10).join('\n')}`);
    const all = Buffer.concat(want);
    assert.equal(await settlesTo(cb, fh, all), 'equal', 'every committed write, read through B');
    assert.equal(await settlesTo(ca, fh, all), 'equal', 'every committed write, read through A');
  });

  it('a server killed and restarted does not replay old writes over a newer write and truncate of the other', async () => {
    const rng = new Prng(SEED + 1);
    let ca = await open(a);
    const cb = await open(b);
    const created = await jukeboxRetried(async () => ca.create(await ca.mount('/export'), 'replay.bin'));
    assert.equal(created.status, NfsStat.OK);
    const fh = created.fh!;
    // Through A: the whole file, committed. A's WAL keeps these records (its active segment).
    const old = rng.bytes(FILE_SIZE);
    await writeCommit(ca, fh, 0, old);
    // Through B (A hands the file over first): newer bytes at the start, then a cut to 3 MiB.
    const newer = rng.bytes(MiB);
    await writeCommit(cb, fh, 0, newer);
    const cut = await retryJukebox(() => cb.setattr(fh, { size: 3 * MiB }), { maxWaitMs: 60_000 });
    assert.equal(cut.status, NfsStat.OK, `SETATTR size: ${statusName(cut.status)}`);
    assert.equal((await retryJukebox(() => cb.commit(fh), { maxWaitMs: 60_000 })).status, NfsStat.OK);
    const want = Buffer.concat([newer, old.subarray(MiB, 3 * MiB)]);
    assert.equal(await settlesTo(cb, fh, want), 'equal', 'through B before the crash');
    // A crashes and comes back on the same WAL: its replay must not bring back `old`.
    const port = a.nfsPort;
    await a.kill();
    a = await start(a.dataDir, port);
    ca = await open(a);
    const replayed = a.output();
    assert.equal(await settlesTo(ca, fh, want), 'equal', `through A after its replay\n${replayed.slice(-3000)}`);
    // And B still agrees (a stale re-upload would show here once B's cache expires).
    await sleep(2_000);
    assert.equal(await settlesTo(cb, fh, want), 'equal', 'through B after A replayed');
  });

  it('data committed through a server killed before it uploaded it: after the restart, reads through the other wait for its upload, never old bytes', async () => {
    const rng = new Prng(SEED + 5);
    let ca = await open(a);
    const cb = await open(b);
    const rootA = await ca.mount('/export');
    // Partial blocks (uploaded only after 5 s idle): when A dies they are in its WAL alone.
    const files: { fh: Buffer; data: Buffer }[] = [];
    for (let i = 0; i < 2; i++) {
      const created = await jukeboxRetried(() => ca.create(rootA, `unuploaded${i}.bin`));
      assert.equal(created.status, NfsStat.OK);
      files.push({ fh: created.fh!, data: rng.bytes(3 * MiB) });
    }
    // B has seen the files (empty) before: nothing it remembers may stand in for what A replays.
    for (const f of files) assert.equal((await cb.getattr(f.fh)).attrs?.size, 0);
    await Promise.all(files.map((f) => writeCommit(ca, f.fh, 0, f.data)));
    const port = a.nfsPort;
    await a.kill();
    // A comes back with its uploads held up (a proxy to the block store that holds every PUT).
    const proxy = await holdingProxy(s3.endpoint);
    try {
      a = await start(a.dataDir, port, { DITTOFS_BLOCKS__STORES__S3__ENDPOINT: proxy.endpoint });
      ca = await open(a);
      const release = sleep(2_000).then(() => proxy.release());
      for (const f of files) {
        const got = await cb.readAll(f.fh, f.data.length);
        assert.equal(firstDiff(got, f.data), 'equal', `through B right after A's restart\n${a.output().slice(-2000)}`);
      }
      await release;
      assert.ok(proxy.held > 0, 'the replayed uploads went through the proxy');
    } finally {
      // A keeps using it (released: everything goes through) until the suite ends.
      proxy.release();
      proxies.push(proxy);
    }
  });

  it('data committed through a server killed before it uploaded it: while it is down the other answers JUKEBOX for the file; after its restart nothing is lost', async () => {
    const rng = new Prng(SEED + 6);
    let ca = await open(a);
    const cb = await open(b);
    const created = await jukeboxRetried(async () => ca.create(await ca.mount('/export'), 'orphaned.bin'));
    assert.equal(created.status, NfsStat.OK);
    const fh = created.fh!;
    // A partial block (uploaded only after 5 s idle): when A dies it is in A's WAL alone.
    const data = rng.bytes(3 * MiB);
    await writeCommit(ca, fh, 0, data);
    const port = a.nfsPort;
    await a.kill();
    // Through B: neither the store's older bytes nor a write of its own into that block (which
    // would make the block's newer version, and A's replayed one be refused for good).
    assert.equal((await cb.read(fh, 0, 65536)).status, NfsStatMore.JUKEBOX, 'READ through B while A is down');
    const tail = rng.bytes(16);
    assert.equal((await cb.writeV(fh, 3 * MiB, tail, StableHow.FILE_SYNC)).status, NfsStatMore.JUKEBOX, 'WRITE through B while A is down');
    // A comes back on its WAL: it stores what it acknowledged; then B serves the file and writes it.
    a = await start(a.dataDir, port);
    ca = await open(a);
    const got = await jukeboxRetried(async () => {
      const r = await cb.read(fh, 0, 65536);
      return { status: r.status, data: r.data };
    });
    assert.equal(firstDiff(got.data, data.subarray(0, 65536)), 'equal', "through B after A's restart");
    assert.equal((await jukeboxRetried(() => cb.writeV(fh, 3 * MiB, tail, StableHow.FILE_SYNC))).status, NfsStat.OK);
    const want = Buffer.concat([data, tail]);
    assert.equal(firstDiff(await cb.readAll(fh, want.length), want), 'equal', 'through B');
    assert.equal(firstDiff(await ca.readAll(fh, want.length), want), 'equal', 'through A');
    // Stopped cleanly (as Kubernetes deletes a pod), A stores what it acknowledged and leaves no
    // mark: B serves the file at once, no JUKEBOX.
    const more = rng.bytes(MiB);
    await writeCommit(ca, fh, 0, more);
    await a.stop();
    more.copy(want, 0);
    const r = await cb.read(fh, 0, 65536);
    assert.equal(r.status, NfsStat.OK, 'READ through B right after A stopped cleanly');
    assert.equal(firstDiff(r.data, want.subarray(0, 65536)), 'equal');
    a = await start(a.dataDir, port);
  });

  it('a server that loses Redis during a change: what it acknowledged is what the next call through the other sees; what it could not announce is not made', async () => {
    // E reaches Redis and PostgreSQL through proxies: one phase cuts E's Redis connections the moment
    // E sends its SETATTR's UPDATE to PostgreSQL (E committed, then could not publish), the other
    // the moment E publishes a cache invalidation. F reaches PostgreSQL through the same proxy and
    // Redis directly.
    const redisProxy = await tcpForward(redis.port);
    const pgPort = Number(new URL(pg.url).port);
    const pgProxy = await tcpForward(pgPort);
    proxies.push(redisProxy, pgProxy);
    const saved = configFile;
    const startVia = async (name: string, redisPort: number): Promise<DittofsProcess> => {
      const dir = path.join(work, `${name}-conf`);
      await mkdir(dir, { recursive: true });
      configFile = await writeConfig(
        dir,
        replicaConfig(pg, s3, redis)
          .replace(redis.url, `redis://127.0.0.1:${redisPort}`)
          .replace(`127.0.0.1:${pgPort}`, `127.0.0.1:${pgProxy.port}`),
      );
      try {
        return await start(path.join(work, name));
      } finally {
        configFile = saved;
      }
    };
    const e = await startVia('e', redisProxy.port);
    const f = await startVia('f', redis.port);
    const ce = await open(e);
    // A server that never answers fails the test here, not after two minutes.
    ce.timeoutMs = 30_000;
    const cb = await open(f);
    const made = await jukeboxRetried(async () => cb.create(await cb.mount('/export'), 'acked-then-cut.txt'));
    assert.equal(made.status, NfsStat.OK);
    const fh = made.fh!;
    await ce.mount('/export');
    const stored = async (): Promise<number> => {
      const db = new pgClient.Client({ connectionString: pg.url });
      await db.connect();
      try {
        const r = await db.query<{ mode: number }>('SELECT i.mode FROM inodes i JOIN dirents d ON d.child = i.id WHERE d.name = $1', [
          Buffer.from('acked-then-cut.txt'),
        ]);
        return r.rows[0]!.mode & 0o7777;
      } finally {
        await db.end();
      }
    };
    const mode = async (c: NfsOps): Promise<string> => {
      const r = await c.getattr(fh);
      assert.equal(r.status, NfsStat.OK);
      return (r.attrs!.mode & 0o7777).toString(8);
    };
    const phases = [
      { what: 'Redis cut while the UPDATE commits', to: 0o600, arm: () => pgProxy.whenSent('dfs_set_attr', 1, () => redisProxy.cut()) },
      { what: 'Redis cut at the first publication', to: 0o640, arm: () => void redisProxy.cutAt('inval:', 1) },
    ];
    const outcomes: string[] = [];
    for (const phase of phases) {
      // E is coherent again (after the previous cut) and B has the file's attributes cached.
      const ok = await retryJukebox(() => ce.setattr(fh, { mode: 0o644 }), { maxWaitMs: 30_000 });
      assert.equal(ok.status, NfsStat.OK);
      assert.equal(await mode(cb), '644');
      assert.equal(await mode(cb), '644');
      phase.arm();
      const r = await ce.setattr(fh, { mode: phase.to });
      const viaB = await mode(cb);
      const inStore = (await stored()).toString(8);
      const outcome = `${phase.what}: E ${statusName(r.status)}, then B ${viaB}, the store ${inStore}`;
      outcomes.push(outcome);
      if (r.status === NfsStat.OK) {
        assert.equal(viaB, phase.to.toString(8), `E acknowledged; B's next GETATTR is stale (${outcome})`);
      } else {
        assert.equal(statusName(r.status), statusName(NfsStatMore.JUKEBOX), outcome);
        assert.equal(inStore, '644', `a refused change is not made (${outcome})`);
        assert.equal(viaB, '644', outcome);
      }
      redisProxy.heal();
    }
    // The change committed before Redis went is acknowledged; the one that could not be announced is not.
    assert.match(outcomes[0]!, /E NFS3ERR_OK/, outcomes.join('; '));
    assert.match(outcomes[1]!, /E NFS3ERR_JUKEBOX/, outcomes.join('; '));
    await e.stop();
    await f.stop();
  });

  it('a server that loses Redis answers JUKEBOX to writes, never OK, and writes again once Redis is back', async () => {
    const rng = new Prng(SEED + 2);
    const ca = await open(a);
    const cb = await open(b);
    const created = await jukeboxRetried(async () => cb.create(await cb.mount('/export'), 'redis-loss.bin'));
    assert.equal(created.status, NfsStat.OK);
    const fh = created.fh!;
    const first = rng.bytes(MiB);
    await writeCommit(cb, fh, 0, first);
    // Redis goes away (and comes back empty: no persistence), while B holds the file's lease.
    await redis.pause();
    await sleep(500);
    const during = await cb.writeV(fh, 0, rng.bytes(4096), StableHow.UNSTABLE);
    assert.equal(statusName(during.status), statusName(NfsStatMore.JUKEBOX), 'a WRITE while Redis is down');
    await redis.resume();
    const second = rng.bytes(MiB);
    await writeCommit(cb, fh, 0, second);
    assert.equal(await settlesTo(ca, fh, second), 'equal', 'through A after Redis came back');
  });
});

describe('several replicas on one control database (coordination.redis)', { timeout: SUITE_TIMEOUT_MS }, () => {
  let pg: PostgresInstance;
  let s3: S3TestServer;
  let redis: RedisInstance;
  let work: string;
  const servers: DittofsProcess[] = [];
  const clients: NfsClient[] = [];

  before(async () => {
    [pg, s3, redis] = await Promise.all([postgresForTests(), startS3(), startRedis()]);
    work = await mkdtemp(path.join(os.tmpdir(), 'dittofs-replicas-control-'));
    // The API on, its database in the same PostgreSQL (a schema of its own): both servers share it.
    const configFile = await writeConfig(work, replicaConfig(pg, s3, redis, { controlDatabase: true }));
    for (const name of ['c', 'd']) {
      servers.push(
        await startDittofs({
          configFile,
          dataDir: path.join(work, name),
          env: { DITTOFS_BLOCKS__STORES__S3__SECRET_ACCESS_KEY: s3.secretAccessKey, DITTOFS_SMB_ENABLED: 'false' },
        }),
      );
    }
  });

  afterEach(async () => {
    assert.deepEqual(await storeInconsistencies(pg.url), []);
  });

  after(async () => {
    for (const c of clients) c.close();
    for (const s of servers) await s.stop().catch(() => undefined);
    await Promise.all([redis?.stop(), s3?.close(), pg?.stop()]);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('a share created and a default permission of none set through one server are applied by the other before the API answers', async () => {
    const [c, d] = servers as [DittofsProcess, DittofsProcess];
    const apiC = `http://127.0.0.1:${c.apiPort}`;
    const apiD = `http://127.0.0.1:${d.apiPort}`;
    const token = await takeOverAdmin(apiC, 'replicas-admin-2');
    // Through D, as an unknown user, /export is writable (default read-write).
    const nfsD = await NfsClient.connect(d.nfsPort, authSys(4242, 4242));
    clients.push(nfsD);
    const root = await nfsD.mount('/export');
    const file = await nfsD.create(root, 'perm.bin');
    assert.equal(file.status, NfsStat.OK);
    assert.equal((await nfsD.write(file.fh!, 0, Buffer.from('before'))).status, NfsStat.OK);

    // No waiting after the answers: D applied each change before C answered.
    for (let round = 1; round <= 5; round++) {
      const created = await fetch(`${apiC}/api/v1/shares`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ name: `/second${round}`, metadata_store: 'meta', block_store: 's3' }),
      });
      assert.equal(created.status, 201, await created.text());
      assert.equal(created.headers.get('dittofs-pending-replicas'), null, `round ${round}: every server applied it`);
      assert.equal(
        (await nfsD.mnt(`/second${round}`)).status,
        0,
        `round ${round}: the share created through C is mountable through D at once`,
      );
    }
    const patched = await fetch(`${apiC}/api/v1/shares/export`, {
      method: 'PATCH',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ default_permission: 'none' }),
    });
    assert.equal(patched.status, 200, await patched.text());
    const generation = Number(patched.headers.get('dittofs-generation'));
    assert.ok(generation > 0, `the generation of the change: ${patched.headers.get('dittofs-generation')}`);
    assert.equal(patched.headers.get('dittofs-pending-replicas'), null);
    assert.notEqual((await nfsD.mnt('/export')).status, 0, 'default_permission none set through C refuses a mount through D at once');
    const wrote = (await nfsD.write(file.fh!, 0, Buffer.from('after!'))).status;
    assert.equal(statusName(wrote), statusName(NfsStat.ACCES), 'and a write through D on a handle it had');

    // Each server reports the generation it applied: GET /api/v1/state (headers) and /health/ready.
    for (const base of [apiC, apiD]) {
      const state = await fetch(`${base}/api/v1/state`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(state.status, 200);
      assert.equal(Number(state.headers.get('dittofs-generation')), generation, base);
      assert.equal(Number(state.headers.get('dittofs-applied-generation')), generation, base);
      const ready = await apiRequest<{ applied_generation?: number }>(base, 'GET', '/health/ready');
      assert.equal(ready.body.applied_generation, generation, `${base} /health/ready: ${JSON.stringify(ready.body)}`);
    }

    // PUT through D of the state as it is: nothing to change, every server at the current generation.
    const current = await apiRequest<{ shares: unknown[] }>(apiC, 'GET', '/api/v1/state', undefined, token);
    const put = await apiRequest<{
      generation: number;
      created: unknown[];
      updated: unknown[];
      removed: unknown[];
      pending_replicas?: unknown[];
    }>(apiD, 'PUT', '/api/v1/state', { shares: current.body.shares }, token);
    assert.equal(put.status, 200, JSON.stringify(put.body));
    assert.deepEqual([put.body.created, put.body.updated, put.body.removed], [[], [], []], JSON.stringify(put.body));
    assert.equal(put.body.generation, generation);
    assert.deepEqual(put.body.pending_replicas, []);
  });
});
