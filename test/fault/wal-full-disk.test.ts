// Fault: the WAL's volume fills up. Real small volumes (tmpfs mounts; the tests run as root), a
// real server process and a real client (libnfs `nfs-cp`):
//   - the WAL (`cache.wal_dir`) on a 48 MiB tmpfs, metadata on ordinary disk;
//   - the whole data directory (WAL, embedded metadata, control database) on a 160 MiB tmpfs.
// In both, the block store lives on a tmpfs of its own that is first filled to the last byte, so
// that uploads fail and the WAL's volume surely runs full while a 200 MiB copy is in progress; then
// the filler is deleted and uploads free WAL space. The copy must complete byte for byte (writers
// waited: backpressure) or fail with "no space" (NFS3ERR_NOSPC), never with an I/O error;
// /health/ready and dittofs_wal_writable must say the WAL is full while it is, and ready after;
// writes must work again without anyone touching the volume; no empty segment file may be left;
// and every byte acknowledged as committed must read back, before and after a clean restart.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import { fillVolume, sha256File, writeRandomFile } from '../helpers/files.js';
import { readBack, writeCommitted } from '../helpers/nfs-ops.js';
import { runTool, type ToolResult } from '../helpers/run.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';
import { MiB, mountTmpfs, sha256, sleep, waitReady, writeConfig } from './support.js';

const COPY_BYTES = 200 * MiB;
/** Bounds of each wait below: generous, a busy machine is slow; each loop stops by itself. */
const WAIT_MS = 3 * 60_000;
/** The test's own NFS calls (writes before and after the volume fills, reads after restarts). */
const NFS_OPTS = { timeoutMs: 60_000 };

/** A client tool (mount, nfs-cp) bounded by WAIT_MS unless told otherwise. */
const run = (cmd: string, argv: string[], timeoutMs = WAIT_MS): Promise<ToolResult> => runTool(cmd, argv, { timeoutMs });

interface Ready {
  status: number;
  checks: Record<string, { ok: boolean; detail?: string }>;
}

async function ready(srv: DittofsProcess): Promise<Ready> {
  const res = await fetch(`http://127.0.0.1:${srv.apiPort}/health/ready`, { signal: AbortSignal.timeout(10_000) });
  const body = (await res.json()) as { checks?: Ready['checks'] };
  return { status: res.status, checks: body.checks ?? {} };
}

async function metric(srv: DittofsProcess, name: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${srv.metricsPort}/metrics`, { signal: AbortSignal.timeout(10_000) });
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(await res.text());
  assert.ok(m, `metric ${name} is exported`);
  return Number(m[1]);
}

/** The server's own account of its WAL, dirty data and uploads (metrics), for a failure message. */
async function walState(srv: DittofsProcess): Promise<string> {
  try {
    const res = await fetch(`http://127.0.0.1:${srv.metricsPort}/metrics`, { signal: AbortSignal.timeout(10_000) });
    const lines = (await res.text()).split('\n').filter((l) => /^dittofs_(wal|dirty|upload|block_store_errors|db_errors)/.test(l));
    return lines.join('\n');
  } catch (err) {
    return `metrics unavailable: ${(err as Error).message}`;
  }
}

/** Polls `probe` until it returns true; fails with `what` (the server's metrics and output) after WAIT_MS. */
async function until(srv: DittofsProcess, what: string, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (Date.now() < deadline) {
    if (srv.child.exitCode !== null || srv.child.signalCode !== null)
      throw new Error(`server exited while waiting: ${what}\n${srv.output()}`);
    if (await probe().catch(() => false)) return;
    await sleep(100);
  }
  throw new Error(
    `timed out waiting: ${what}\n--- metrics ---\n${await walState(srv)}\n--- server output ---\n${srv.output().slice(-4000)}`,
  );
}

/** Segment files of a WAL directory with their sizes. */
async function walFiles(dir: string): Promise<{ name: string; size: number }[]> {
  const names = (await readdir(dir)).filter((n) => n.startsWith('wal-'));
  return Promise.all(names.map(async (name) => ({ name, size: (await stat(path.join(dir, name))).size })));
}

describe('fault: the WAL volume runs full', { timeout: 15 * 60_000 }, () => {
  let work = '';
  const mounts: string[] = [];
  const servers: DittofsProcess[] = [];
  after(async () => {
    for (const s of servers) await s.stop().catch(() => undefined);
    for (const m of mounts.reverse()) await run('umount', ['-l', m]); // lazy: an open file never leaves a mount behind
    if (work) await rm(work, { recursive: true, force: true });
  });

  /**
   * One scenario: `layout` says where the data directory and the WAL go, given the work dir and the
   * two volumes. Everything else is the same.
   */
  async function scenario(
    t: TestContext,
    name: string,
    walVolumeSize: string,
    layout: (walVol: string) => { dataDir: string; walDir: string; env: Record<string, string> },
  ): Promise<void> {
    work ||= await mkdtemp(path.join(os.tmpdir(), 'dittofs-wal-full-'));
    const base = path.join(work, name);
    const walVol = path.join(base, 'wal-volume');
    const blockVol = path.join(base, 'block-volume');
    await mountTmpfs(walVol, walVolumeSize);
    mounts.push(walVol);
    await mountTmpfs(blockVol, '512m');
    mounts.push(blockVol);
    const { dataDir, walDir, env } = layout(walVol);
    const config = await writeConfig(
      base,
      [
        'metadata:\n  stores:\n    default:\n      type: embedded',
        `blocks:\n  stores:\n    default:\n      type: filesystem\n      path: ${path.join(blockVol, 'store')}`,
        'shares:\n  - name: /export\n',
      ].join('\n'),
    );
    const src = path.join(base, 'big.src');
    const srcHash = await writeRandomFile(src, COPY_BYTES);

    let srv = await startDittofs({ dataDir, keepDataDir: true, configFile: config, env });
    servers.push(srv);
    await waitReady(srv, WAIT_MS);
    assert.equal(await metric(srv, 'dittofs_wal_writable'), 1);

    // Committed before the volume fills: must survive everything below.
    const before = randomBytes(6 * MiB + 4321);
    await writeCommitted(srv.nfsPort, 'before.bin', before, NFS_OPTS);

    // Uploads now fail (the block store's volume is full): the WAL keeps every write and fills up.
    const filler = await fillVolume(blockVol);
    const url = (p: string) => `nfs://127.0.0.1/export/${p}?nfsport=${srv.nfsPort}&mountport=${srv.nfsPort}`;
    const copy = run('nfs-cp', [src, url('big.bin')], 10 * 60_000);

    // The WAL volume is full: not ready, and the metrics say so.
    await until(srv, '/health/ready to report the full WAL', async () => {
      const r = await ready(srv);
      return r.status === 503 && r.checks.wal?.ok === false && /full/.test(r.checks.wal.detail ?? '');
    });
    assert.equal(await metric(srv, 'dittofs_wal_writable'), 0);
    assert.ok((await metric(srv, 'dittofs_wal_enospc_total')) >= 1, 'the full volume is counted');
    const fullAt = Date.now();

    // Space for uploads again: the server recovers by itself (nobody touches the WAL volume).
    await rm(filler);
    const copied = await copy;
    assert.equal(copied.signal, null, `nfs-cp was killed (timeout?): ${copied.stderr}`);
    if (copied.code === 0) {
      assert.match(copied.stdout, new RegExp(`copied ${COPY_BYTES} bytes`));
    } else {
      // Refused, then: as "no space", never as an I/O error.
      assert.match(copied.stderr, /NOSPC|No space/i, `nfs-cp failed for another reason: ${copied.stderr}`);
      assert.doesNotMatch(copied.stderr, /NFS3ERR_IO\b/);
    }
    await until(srv, '/health/ready to be ready again', async () => (await ready(srv)).status === 200);
    t.diagnostic(
      `nfs-cp ${copied.code === 0 ? 'completed' : `failed: ${copied.stderr.trim()}`}; ready again ${Date.now() - fullAt} ms after the WAL was found full`,
    );
    assert.equal(await metric(srv, 'dittofs_wal_writable'), 1);

    // Writes work again.
    const afterData = randomBytes(5 * MiB + 999);
    await writeCommitted(srv.nfsPort, 'after.bin', afterData, NFS_OPTS);

    // Once everything is uploaded (the idle flush), the WAL holds just its active segment and the
    // preallocated next one: no empty segment piles up, whatever happened above.
    await until(srv, 'the WAL to let go of its uploaded segments', async () => {
      const files = await walFiles(walDir);
      return files.filter((f) => f.name.endsWith('.log')).length <= 1 && files.length <= 2;
    });
    for (const f of await walFiles(walDir))
      assert.ok(/^wal-\d{16}\.(log|spare)$/.test(f.name) && f.size > 24, `WAL file ${f.name} (${f.size} bytes)`);

    const check = async (s: DittofsProcess): Promise<void> => {
      assert.equal(
        sha256(await readBack(s.nfsPort, 'before.bin', before.length, NFS_OPTS)),
        sha256(before),
        'committed before the volume filled',
      );
      assert.equal(
        sha256(await readBack(s.nfsPort, 'after.bin', afterData.length, NFS_OPTS)),
        sha256(afterData),
        'committed after recovery',
      );
      if (copied.code === 0) {
        const out = path.join(base, 'big.out');
        const get = await run('nfs-cp', [`nfs://127.0.0.1/export/big.bin?nfsport=${s.nfsPort}&mountport=${s.nfsPort}`, out]);
        assert.equal(get.code, 0, `nfs-cp out: ${get.stderr}`);
        assert.equal(await sha256File(out), srcHash, 'the 200 MiB copy is identical');
        await rm(out);
      }
    };
    await check(srv);

    // A clean restart: nothing to replay, and the data is all there.
    await srv.stop();
    assert.equal(srv.child.exitCode, 0, srv.output().slice(-4000));
    assert.deepEqual(
      (await walFiles(walDir)).map((f) => f.name),
      [],
      'a clean stop leaves no segment',
    );
    srv = await startDittofs({ dataDir, keepDataDir: true, configFile: config, env });
    servers.push(srv);
    await waitReady(srv, WAIT_MS);
    await check(srv);
    await srv.stop();
    await rm(src);
  }

  it('WAL directory on a 48 MiB tmpfs: writers wait, then resume by themselves; nothing is lost', { timeout: 8 * 60_000 }, async (t) => {
    await scenario(t, 'wal-dir', '48m', (walVol) => {
      const walDir = path.join(walVol, 'wal');
      return { dataDir: path.join(work, 'wal-dir', 'data'), walDir, env: { DITTOFS_WAL_DIR: walDir } };
    });
  });

  it('data directory (WAL, embedded metadata, control database) on a small tmpfs: the same', { timeout: 8 * 60_000 }, async (t) => {
    // 160 MiB: two fresh embedded databases (control plane, metadata) take more than 64 MiB.
    await scenario(t, 'data-dir', '160m', (walVol) => {
      const dataDir = path.join(walVol, 'data');
      return { dataDir, walDir: path.join(dataDir, 'wal'), env: {} };
    });
  });
});
