// Three servers on one store (issue 14): A, B and C serve one share from one PostgreSQL metadata
// store, one S3 bucket (s3rver) and one Redis, and a raw NFSv3 client writes, commits and reads
// through all three. The loss scenarios of the issue, each bounded in rounds and time:
// - concurrent writes to different ranges of one 4 MiB block through the three, all committed:
//   every byte is where its write put it, read through each server;
// - crossing directory moves through the three at once (p into q, q into r, r into p): at most
//   two succeed, nothing is cut off from the tree;
// - kill -9 of two servers after a write, an overwrite and a truncate through the three, then their
//   restart and replay: nothing goes back in time.
// After every test the PostgreSQL tables are checked: one tree, nlink right, no orphan block rows.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { writeConfig } from '../fault/support.js';
import { SUITE_TIMEOUT_MS } from '../helpers/limits.js';
import { NfsOps, retryJukebox, statusName } from '../helpers/nfs-ops.js';
import { postgresForTests, type PostgresInstance } from '../helpers/postgres.js';
import { Prng, seedFrom } from '../helpers/prng.js';
import { startRedis, type RedisInstance } from '../helpers/redis.js';
import { firstDiff, replicaConfig, settlesTo, storeInconsistencies, writeCommit } from '../helpers/replicas.js';
import { NfsStat } from '../helpers/rpc-client.js';
import { startS3, type S3TestServer } from '../helpers/s3.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';

const MiB = 1024 * 1024;
const FILE_SIZE = 4 * MiB;
const SEED = seedFrom('REPLICA_SEED');
const TRIALS = Number(process.env.REPLICA_TRIALS ?? 5);
const NAMES = ['A', 'B', 'C'] as const;

describe('three replicas on one store (coordination.redis)', { timeout: SUITE_TIMEOUT_MS }, () => {
  let pg: PostgresInstance;
  let s3: S3TestServer;
  let redis: RedisInstance;
  let work: string;
  let configFile: string;
  const started: DittofsProcess[] = [];
  const clients: NfsOps[] = [];
  /** The current process of A, B and C (a restart replaces one). */
  const servers: DittofsProcess[] = [];

  const start = async (dataDir: string, nfsPort?: number): Promise<DittofsProcess> => {
    const s = await startDittofs({
      configFile,
      dataDir,
      api: false,
      ...(nfsPort !== undefined ? { nfsPort } : {}),
      env: { DITTOFS_BLOCKS__STORES__S3__SECRET_ACCESS_KEY: s3.secretAccessKey, DITTOFS_SMB_ENABLED: 'false' },
    });
    started.push(s);
    return s;
  };
  const open = async (s: DittofsProcess): Promise<NfsOps> => {
    const c = await NfsOps.open(s.nfsPort);
    clients.push(c);
    return c;
  };
  const openAll = async (): Promise<NfsOps[]> => Promise.all(servers.map((s) => open(s)));

  before(async () => {
    [pg, s3, redis] = await Promise.all([postgresForTests(), startS3(), startRedis()]);
    work = await mkdtemp(path.join(os.tmpdir(), 'dittofs-replicas3-'));
    configFile = await writeConfig(work, replicaConfig(pg, s3, redis));
    // One after the other: the first creates the schema.
    for (const n of NAMES) servers.push(await start(path.join(work, n)));
  });

  afterEach(async () => {
    assert.deepEqual(await storeInconsistencies(pg.url), []);
  });

  after(async () => {
    for (const c of clients) c.close();
    for (const s of started) await s.stop().catch(() => undefined);
    await Promise.all([redis?.stop(), s3?.close(), pg?.stop()]);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it(`concurrent writes to different ranges of one 4 MiB block through three servers, all committed, all survive (${TRIALS} trials, seed ${SEED})`, async () => {
    const rng = new Prng(SEED);
    const c = await openAll();
    const created = await c[0]!.create(await c[0]!.mount('/export'), 'three.bin');
    assert.equal(created.status, NfsStat.OK);
    const fh = created.fh!;
    const want = rng.bytes(FILE_SIZE);
    await writeCommit(c[0]!, fh, 0, want);
    for (let trial = 1; trial <= TRIALS; trial++) {
      // Three disjoint ranges in one block, in an order that changes per trial.
      const ranges = [
        [0, MiB],
        [Math.floor(1.5 * MiB), MiB],
        [3 * MiB, MiB],
      ] as const;
      const order = rng.int(0, 2);
      const writes = ranges.map(([at, len], i) => ({ who: (i + order) % 3, at, data: rng.bytes(len) }));
      await Promise.all(writes.map((w) => writeCommit(c[w.who]!, fh, w.at, w.data)));
      for (const w of writes) w.data.copy(want, w.at);
      for (let r = 0; r < 3; r++) {
        const got = await settlesTo(c[r]!, fh, want);
        assert.equal(got, 'equal', `trial ${trial} (seed ${SEED}), read through ${NAMES[r]}: ${got}`);
      }
    }
  });

  it('crossing directory moves through three servers at once (p into q, q into r, r into p): at most two succeed, all reachable (10 rounds)', async () => {
    const c = await openAll();
    const roots = await Promise.all(c.map((x) => x.mount('/export')));
    for (let round = 1; round <= 10; round++) {
      const names = [`p${round}`, `q${round}`, `r${round}`];
      const fhs: Buffer[] = [];
      for (const n of names) {
        const d = await c[0]!.mkdir(roots[0]!, n);
        assert.equal(d.status, NfsStat.OK);
        fhs.push(d.fh!);
      }
      // Server i moves names[i] into names[i+1].
      const results = await Promise.all(
        [0, 1, 2].map((i) => retryJukebox(() => c[i]!.rename(roots[i]!, names[i]!, fhs[(i + 1) % 3]!, names[i]!), { maxWaitMs: 30_000 })),
      );
      const ok = results.filter((r) => r.status === NfsStat.OK).length;
      assert.ok(ok >= 1 && ok <= 2, `round ${round}: ${results.map((r, i) => `${NAMES[i]} ${statusName(r.status)}`).join(', ')}`);
      // Exactly the moves that failed leave their directory in the root; each is still reachable.
      const top = new Set((await c[1]!.readdirplusAll(roots[1]!)).map((e) => e.name));
      results.forEach((r, i) => {
        assert.equal(top.has(names[i]!), r.status !== NfsStat.OK, `round ${round}: ${names[i]} in the root`);
      });
      let found = 0;
      const walk = async (dir: Buffer, depth: number): Promise<void> => {
        assert.ok(depth <= 4, `round ${round}: deeper than the three directories`);
        for (const e of await c[2]!.readdirplusAll(dir)) {
          if (!names.includes(e.name)) continue;
          found++;
          const fh = (await c[2]!.lookup(dir, e.name)).fh!;
          await walk(fh, depth + 1);
        }
      };
      await walk(roots[2]!, 0);
      assert.equal(found, 3, `round ${round}: every directory reachable from the root`);
    }
  });

  it('two servers killed (SIGKILL) after a write, an overwrite and a truncate through the three: their replay brings nothing back', async () => {
    const rng = new Prng(SEED + 1);
    let c = await openAll();
    const created = await c[0]!.create(await c[0]!.mount('/export'), 'replay3.bin');
    assert.equal(created.status, NfsStat.OK);
    const fh = created.fh!;
    // A: the whole file. B: newer bytes at 1 MiB. C: a cut to 3 MiB. Each committed, in order.
    const old = rng.bytes(FILE_SIZE);
    await writeCommit(c[0]!, fh, 0, old);
    const newer = rng.bytes(MiB);
    await writeCommit(c[1]!, fh, MiB, newer);
    const cut = await retryJukebox(() => c[2]!.setattr(fh, { size: 3 * MiB }), { maxWaitMs: 60_000 });
    assert.equal(cut.status, NfsStat.OK, `SETATTR size: ${statusName(cut.status)}`);
    assert.equal((await retryJukebox(() => c[2]!.commit(fh), { maxWaitMs: 60_000 })).status, NfsStat.OK);
    const want = Buffer.concat([old.subarray(0, MiB), newer, old.subarray(2 * MiB, 3 * MiB)]);
    assert.equal(await settlesTo(c[2]!, fh, want), 'equal', 'through C before the crash');
    // A and B die at once and come back on their WALs.
    const [a, b] = [servers[0]!, servers[1]!];
    await Promise.all([a.kill(), b.kill()]);
    [servers[0], servers[1]] = await Promise.all([start(a.dataDir, a.nfsPort), start(b.dataDir, b.nfsPort)]);
    c = await openAll();
    for (let r = 0; r < 3; r++) {
      const got = await settlesTo(c[r]!, fh, want);
      assert.equal(got, 'equal', `through ${NAMES[r]} after the replay of A and B: ${got}`);
    }
    // And reading it at once gives the same bytes (nothing a replay uploads late goes back in time).
    const again = await c[0]!.readAll(fh, want.length);
    assert.equal(firstDiff(again, want), 'equal');
  });
});
