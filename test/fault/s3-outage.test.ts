// Fault: the S3 block store goes away while clients write (DESIGN.md, Data). A real server process
// on embedded metadata + an s3 block store on s3rver (a child process we stop and start again).
//   1. S3 down for 60 s (DITTOFS_TEST_S3_OUTAGE_S): writes continue into the WAL without a single
//      error to the client, written data reads back during the outage; after S3 returns every
//      block is uploaded (the bucket is checked object by object) and the WAL drains.
//   2. WAL full: a small WAL (cache.wal_max_bytes) and S3 down: writers slow down (the WRITE
//      replies wait), they do not fail; once S3 is back everything is stored and reads back.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { READY_TIMEOUT_MS, SUITE_TIMEOUT_MS } from '../helpers/limits.js';
import { NfsOps } from '../helpers/nfs-ops.js';
import { NfsStat, StableHow } from '../helpers/rpc-client.js';
import { startS3, type S3TestServer } from '../helpers/s3.js';
import type { DittofsProcess } from '../helpers/server.js';
import { intFromEnv, logLinesAtLeast, MiB, sha256, sleep, startReady, writeConfig } from './support.js';

const OUTAGE_S = intFromEnv('DITTOFS_TEST_S3_OUTAGE_S', 60);

async function walSegments(dataDir: string): Promise<number> {
  return (await readdir(path.join(dataDir, 'wal'))).filter((f) => f.endsWith('.log')).length;
}

/** Polls until the WAL holds only its active segment (every sealed one retired), or throws after `ms`. */
async function waitWalDrained(dataDir: string, ms: number): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if ((await walSegments(dataDir)) <= 1) return Date.now() - t0;
    await sleep(200);
  }
  throw new Error(`the WAL did not drain within ${ms} ms (${await walSegments(dataDir)} segments)`);
}

function config(s3: S3TestServer, name: string, walMax: string): string {
  return `metadata:
  stores:
    meta:
      type: embedded
blocks:
  stores:
    s3:
      type: s3
      block_size: 1MiB
      endpoint: ${s3.endpoint}
      bucket: ${s3.bucket}
      prefix: ${s3.prefix}${name}
      region: ${s3.region}
      force_path_style: true
      access_key_id: ${s3.accessKeyId}
      request_timeout: 5000
      max_attempts: 2
cache:
  wal_max_bytes: ${walMax}
shares:
  - name: /export
    metadata: meta
    blocks: s3
`;
}

describe('fault: S3 outage', { timeout: OUTAGE_S * 1000 + SUITE_TIMEOUT_MS }, () => {
  let s3: S3TestServer;
  let work: string;
  const servers: DittofsProcess[] = [];

  before(async () => {
    s3 = await startS3();
    work = await mkdtemp(path.join(os.tmpdir(), 'dittofs-s3-outage-'));
  });

  after(async () => {
    for (const s of servers) await s.stop().catch(() => undefined);
    await s3?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function start(name: string, walMax: string): Promise<DittofsProcess> {
    if (s3.external) throw new Error('this test stops the S3 server: it needs s3rver, not DITTOFS_TEST_S3_ENDPOINT');
    const dir = path.join(work, name);
    const cfg = await writeConfig(work, config(s3, name, walMax), `${name}.yaml`);
    const server = await startReady({
      configFile: cfg,
      dataDir: dir,
      keepDataDir: true,
      env: { DITTOFS_BLOCKS__STORES__S3__SECRET_ACCESS_KEY: s3.secretAccessKey },
    });
    servers.push(server);
    return server;
  }

  it(`writes ride out a ${OUTAGE_S} s outage in the WAL; afterwards every block is in the bucket and the WAL drains`, async (t) => {
    if (s3.external) return t.skip('needs s3rver (stops the S3 server)');
    // 128 MiB: 16 MiB segments, so the 60 MiB written fill several and draining is visible.
    const server = await start('outage', '128MiB');
    const c = await NfsOps.open(server.nfsPort);
    try {
      const root = await c.mount('/export');
      await s3.stop();
      const t0 = Date.now();
      const files: { fh: Buffer; data: Buffer }[] = [];
      // 24 files of 2.5 MiB (60 MiB) written with UNSTABLE + COMMIT, spread over the outage.
      const perRound = 4;
      for (let i = 0; i < 24; i++) {
        const data = randomBytes(2.5 * MiB);
        const r = await c.create(root, `f${i}`);
        assert.equal(r.status, NfsStat.OK, `CREATE f${i} during the outage`);
        for (let off = 0; off < data.length; off += 256 * 1024) {
          const w = await c.write(r.fh!, off, data.subarray(off, off + 256 * 1024), StableHow.UNSTABLE);
          assert.equal(w.status, NfsStat.OK, `WRITE f${i} @${off} during the outage: status ${w.status}`);
        }
        const cm = await c.commit(r.fh!);
        assert.equal(cm.status, NfsStat.OK, `COMMIT f${i} during the outage`);
        files.push({ fh: r.fh!, data });
        if (i % perRound === perRound - 1) await sleep(Math.max(0, (OUTAGE_S * 1000) / (24 / perRound) - 500));
      }
      // Read back while S3 is still down: the data comes from the WAL.
      for (const [i, f] of files.entries()) {
        const got = await c.readAll(f.fh, f.data.length);
        assert.equal(sha256(got), sha256(f.data), `f${i} reads back during the outage`);
      }
      const left = OUTAGE_S * 1000 - (Date.now() - t0);
      if (left > 0) await sleep(left);
      assert.ok((await walSegments(server.dataDir)) > 1, 'the WAL holds the data while S3 is down');
      await s3.start();
      const drainMs = await waitWalDrained(server.dataDir, READY_TIMEOUT_MS);
      t.diagnostic(`outage ${((Date.now() - t0) / 1000).toFixed(0)} s; WAL drained ${drainMs} ms after S3 returned`);
      // Every block of every file is an object in the bucket: 3 blocks of 1 MiB per 2.5 MiB file.
      const keys = await s3.listKeys('outage/');
      assert.equal(keys.length, files.length * 3, `objects in the bucket: ${keys.length}`);
      // And the data is intact from S3 alone: restart (the WAL is empty) and read everything.
      await server.stop();
      const again = await start('outage', '128MiB');
      const c2 = await NfsOps.open(again.nfsPort);
      try {
        const root2 = await c2.mount('/export');
        for (const [i, f] of files.entries()) {
          const fh = (await c2.lookup(root2, `f${i}`)).fh!;
          assert.equal(sha256(await c2.readAll(fh, f.data.length)), sha256(f.data), `f${i} after restart`);
        }
      } finally {
        c2.close();
      }
      const errors = logLinesAtLeast(server.output()).filter((l) => !/block upload failed/.test(l.msg));
      assert.deepEqual(
        errors.map((l) => l.raw),
        [],
        'only upload failures are logged as errors',
      );
    } finally {
      c.close();
      if (!s3.external) await s3.start().catch(() => undefined);
    }
  });

  it('WAL full: writers wait (no error) while S3 is down, and finish once it returns', async (t) => {
    if (s3.external) return t.skip('needs s3rver (stops the S3 server)');
    const server = await start('walfull', '8MiB');
    const c = await NfsOps.open(server.nfsPort);
    try {
      const root = await c.mount('/export');
      const r = await c.create(root, 'big');
      const data = randomBytes(24 * MiB);
      await s3.stop();
      let written = 0;
      const writer = (async () => {
        for (let off = 0; off < data.length; off += 512 * 1024) {
          const w = await c.write(r.fh!, off, data.subarray(off, off + 512 * 1024), StableHow.UNSTABLE);
          assert.equal(w.status, NfsStat.OK, `WRITE @${off}: status ${w.status}`);
          written = off + 512 * 1024;
        }
      })();
      // The writes proceed until the WAL is full (however slow the machine), then stall: 8 s later
      // the writer has not got further than the WAL holds.
      let settled = false;
      writer.then(
        () => (settled = true),
        () => (settled = true),
      );
      for (const deadline = Date.now() + READY_TIMEOUT_MS; !settled && written < 4 * MiB && Date.now() < deadline;) await sleep(100);
      await sleep(8_000);
      const stalledAt = written;
      assert.ok(stalledAt < data.length, 'the writer is held back while the WAL is full');
      assert.ok(stalledAt >= 4 * MiB, `writes proceeded until the WAL filled (${stalledAt} bytes)`);
      await s3.start();
      await writer;
      assert.equal((await c.commit(r.fh!)).status, NfsStat.OK);
      assert.equal(sha256(await c.readAll(r.fh!, data.length)), sha256(data));
      await waitWalDrained(server.dataDir, READY_TIMEOUT_MS);
      assert.equal((await s3.listKeys('walfull/')).length, 24, 'every 1 MiB block of the file is an object in the bucket');
      t.diagnostic(`writer held at ${(stalledAt / MiB).toFixed(1)} MiB of 24 MiB with an 8 MiB WAL while S3 was down`);
    } finally {
      c.close();
      if (!s3.external) await s3.start().catch(() => undefined);
    }
  });
});
