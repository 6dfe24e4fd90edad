// Fault: a corrupt WAL record. A real server process on the default stores (embedded metadata,
// filesystem blocks) acknowledges writes durably (COMMIT, FILE_SYNC) and is killed with SIGKILL
// while the data is still only in the WAL. Bytes inside one record are flipped on disk; at the
// next start the server must report that record, never serve its bytes as file data, and serve
// every other acknowledged byte intact.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { SUITE_TIMEOUT_MS } from '../helpers/limits.js';
import { NfsOps } from '../helpers/nfs-ops.js';
import { startBothProtocols, type BothProtocols } from '../helpers/smb-nfs.js';
import { SmbCommand, bodies } from '../helpers/smb-client.js';
import { NfsStat, StableHow } from '../helpers/rpc-client.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';
import { KiB, logLinesAtLeast, sha256, startReady, waitReady, writeConfig } from './support.js';

/** Flips one byte of the WAL segment that holds `needle`, in place (the server appends meanwhile). */
async function flipInWal(walDir: string, needle: Buffer): Promise<string> {
  for (const s of (await readdir(walDir)).filter((f) => f.endsWith('.log'))) {
    const file = path.join(walDir, s);
    const at = (await readFile(file)).indexOf(needle);
    if (at < 0) continue;
    const fd = await open(file, 'r+');
    try {
      const b = Buffer.alloc(1);
      await fd.read(b, 0, 1, at + 7);
      b[0] = b[0]! ^ 0x20;
      await fd.write(b, 0, 1, at + 7);
    } finally {
      await fd.close();
    }
    return s;
  }
  throw new Error('the data is in no WAL segment');
}

/**
 * The first log line of `srv` whose message matches `msg`, parsed, once it arrives (the server's
 * output reaches this process on its own pipe, after or before its replies); 30 s at most.
 */
async function logLine(srv: DittofsProcess, msg: RegExp): Promise<Record<string, unknown>> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const l = logLinesAtLeast(srv.output()).find((x) => msg.test(x.msg));
    if (l) return JSON.parse(l.raw) as Record<string, unknown>;
    if (Date.now() > deadline) throw new Error(`no log line ${String(msg)}:\n${srv.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The value of a counter's sample with these labels in a Prometheus text exposition, 0 if absent. */
function sample(text: string, name: string, labels: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

const CHUNK = 64 * KiB;

describe('fault: corrupt WAL record', { timeout: SUITE_TIMEOUT_MS }, () => {
  let work = '';
  const servers: DittofsProcess[] = [];
  after(async () => {
    for (const s of servers) await s.stop().catch(() => undefined);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('is reported at start-up, never served, and the rest of the data is intact', async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'dittofs-wal-corrupt-'));
    const dataDir = path.join(work, 'data');
    const first = await startReady({ dataDir, keepDataDir: true });
    servers.push(first);
    const a = randomBytes(4 * CHUNK);
    const b = randomBytes(5 * CHUNK);
    const c = await NfsOps.open(first.nfsPort);
    let aFh: Buffer;
    let bFh: Buffer;
    try {
      const root = await c.mount('/export');
      aFh = (await c.create(root, 'a')).fh!;
      bFh = (await c.create(root, 'b')).fh!;
      // Partial 4 MiB blocks, killed well within the 5 s idle flush: the data is only in the WAL.
      for (let off = 0; off < a.length; off += CHUNK) {
        assert.equal((await c.writeV(aFh, off, a.subarray(off, off + CHUNK), StableHow.UNSTABLE)).status, NfsStat.OK);
      }
      assert.equal((await c.commit(aFh)).status, NfsStat.OK);
      for (let off = 0; off < b.length; off += CHUNK) {
        assert.equal((await c.writeV(bFh, off, b.subarray(off, off + CHUNK), StableHow.FILE_SYNC)).status, NfsStat.OK);
      }
    } finally {
      c.close();
    }
    await first.kill();

    // Flip bytes in the middle of a's second record (file offset CHUNK .. 2*CHUNK).
    const walDir = path.join(dataDir, 'wal');
    const segs = (await readdir(walDir)).filter((f) => f.endsWith('.log')).sort();
    const needle = a.subarray(CHUNK + 1000, CHUNK + 1064);
    let flipped = false;
    for (const s of segs) {
      const file = path.join(walDir, s);
      const bytes = await readFile(file);
      const at = bytes.indexOf(needle);
      if (at < 0) continue;
      for (let i = 0; i < 8; i++) bytes.writeUInt8(bytes.readUInt8(at + i) ^ 0x5a, at + i);
      await writeFile(file, bytes);
      flipped = true;
    }
    assert.ok(flipped, 'the acknowledged data is in a WAL segment');

    const second = await startDittofs({ dataDir, keepDataDir: true });
    servers.push(second);
    await waitReady(second);
    const reported = logLinesAtLeast(second.output()).filter((l) => /WAL record failed its CRC/.test(l.msg));
    assert.equal(reported.length, 1, `one corrupt record reported:\n${second.output()}`);
    const rec = JSON.parse(reported[0]!.raw) as { offset: number; length: number; inode: number };
    assert.deepEqual({ offset: rec.offset, length: rec.length }, { offset: CHUNK, length: CHUNK });
    assert.ok(
      logLinesAtLeast(second.output()).some((l) => /WAL has corrupt records/.test(l.msg)),
      'a start-up summary names it',
    );

    const c2 = await NfsOps.open(second.nfsPort);
    try {
      const root = await c2.mount('/export');
      const gotA = await c2.readAll((await c2.lookup(root, 'a')).fh!, a.length);
      const gotB = await c2.readAll((await c2.lookup(root, 'b')).fh!, b.length);
      assert.equal(sha256(gotB), sha256(b), 'the other file is intact');
      assert.deepEqual(gotA.subarray(0, CHUNK), a.subarray(0, CHUNK), 'bytes before the bad record are intact');
      assert.deepEqual(gotA.subarray(2 * CHUNK), a.subarray(2 * CHUNK), 'bytes after the bad record are intact');
      const bad = gotA.subarray(CHUNK, 2 * CHUNK);
      assert.ok(!bad.equals(a.subarray(CHUNK, 2 * CHUNK)), 'the corrupt record is not served as if it were intact');
      assert.deepEqual(bad, Buffer.alloc(CHUNK), 'the range keeps its older content: nothing had been stored there (zeros)');
    } finally {
      c2.close();
    }
  });

  // The same change while the server runs, the data not yet uploaded (a partial 4 MiB block, within
  // the 5 s idle flush): no READ returns any of that record's bytes, the upload stops and says why.
  it('in a running server: READs of it fail (NFS3ERR_IO, STATUS_DATA_CHECKSUM_ERROR), its upload stops and says why', async () => {
    const REC = 256 * KiB;
    const alice = { username: 'alice', password: 'Corrupt-Wal-1', uid: 1000 };
    let both: BothProtocols | undefined;
    try {
      both = await startBothProtocols([alice]);
      const { srv, nfs, root } = both;
      const data = randomBytes(3 * REC);
      const fh = (await nfs.create(root, 'f')).fh!;
      for (let off = 0; off < data.length; off += REC)
        assert.equal((await nfs.writeV(fh, off, data.subarray(off, off + REC), StableHow.UNSTABLE)).status, NfsStat.OK);
      const seg = await flipInWal(path.join(srv.dataDir, 'wal'), data.subarray(REC, REC + 64));

      // NFS: the bad record's range, whole, in part and across it: IO; the others read.
      for (const [off, count] of [
        [REC, REC],
        [REC + 1000, 4096],
        [0, 3 * REC],
      ] as const) {
        const r = await nfs.read(fh, off, count);
        assert.equal(r.status, NfsStat.IO, `READ ${off}+${count}`);
        assert.equal(r.data.length, 0);
      }
      assert.deepEqual((await nfs.read(fh, 0, REC)).data, data.subarray(0, REC));
      assert.deepEqual((await nfs.read(fh, 2 * REC, REC)).data, data.subarray(2 * REC));

      // SMB: the same file, the same range.
      const smb = await both.smb();
      const { fileId } = await smb.create('f');
      const bad = await smb.request(SmbCommand.READ, bodies.read(fileId, REC + 4096, 65536));
      assert.equal(bad.status, 0xc0000470, `READ over SMB: STATUS_DATA_CHECKSUM_ERROR, not 0x${bad.status.toString(16)}`);
      assert.deepEqual(await smb.read(fileId, 0, 65536), data.subarray(0, 65536));

      // The READ's log line names the share, the file, the offset and the segment.
      const line = await logLine(srv, /READ refused: WAL data failed its CRC/);
      assert.equal(line.share, '/export');
      assert.equal(line.offset, REC);
      assert.equal(typeof line.inode, 'number');
      assert.match(String(line.segment), new RegExp(`${seg.replace('.', '\\.')}$`));

      // The idle flush tries the block: it stops at the record and says so, once.
      const stopped = await logLine(srv, /block upload stopped/);
      assert.deepEqual([stopped.share, stopped.block, stopped.recordOffset, stopped.recordLength], ['/export', 0, REC, REC]);
      assert.match(String(stopped.segment), new RegExp(`${seg.replace('.', '\\.')}$`));
      assert.ok((await readdir(path.join(srv.dataDir, 'wal'))).includes(seg), 'the segment is kept');
      // The bytes are still not served.
      assert.equal((await nfs.read(fh, REC, REC)).status, NfsStat.IO);

      // Readiness stays ready (the rest is served) and names the block; the metric counts.
      const ready = await fetch(`http://127.0.0.1:${srv.apiPort}/health/ready`);
      assert.equal(ready.status, 200);
      const checks = ((await ready.json()) as { checks: Record<string, { ok: boolean; detail?: string }> }).checks;
      assert.equal(checks['wal:data']?.ok, true);
      assert.match(
        checks['wal:data']?.detail ?? '',
        /1 block\(s\) not uploaded: WAL data failed its CRC32C.*share \/export inode \d+ block 0/,
      );
      const metrics = await (await fetch(`http://127.0.0.1:${srv.metricsPort}/metrics`)).text();
      assert.ok(sample(metrics, 'dittofs_wal_data_errors_total', 'operation="read"') >= 5, metrics);
      assert.equal(sample(metrics, 'dittofs_wal_data_errors_total', 'operation="upload"'), 1);
      assert.equal(logLinesAtLeast(srv.output()).filter((x) => /block upload stopped/.test(x.msg)).length, 1, 'said once');
    } finally {
      // A clean stop would wait for the upload that cannot succeed.
      await both?.srv.kill();
      if (both) await rm(both.srv.dataDir, { recursive: true, force: true });
    }
  });

  it('holding data of a share that is no longer configured, it refuses to start and says how to recover', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-wal-share-'));
    try {
      const dataDir = path.join(dir, 'data');
      // Shares from the config file alone (API off): with the control plane on, a share once
      // seeded stays in its database whatever the file says next.
      const config = (share: string) => `server:\n  api:\n    enabled: false\nshares:\n  - name: ${share}\n`;
      // No API, so no /health/ready: startDittofs waits for NFS, which listens once replay is done.
      const first = await startDittofs({
        dataDir,
        keepDataDir: true,
        api: false,
        configFile: await writeConfig(dir, config('/old'), 'old.yaml'),
      });
      servers.push(first);
      const data = randomBytes(CHUNK);
      const c = await NfsOps.open(first.nfsPort);
      try {
        const fh = (await c.create(await c.mount('/old'), 'f')).fh!;
        assert.equal((await c.writeV(fh, 0, data, StableHow.FILE_SYNC)).status, NfsStat.OK);
      } finally {
        c.close();
      }
      await first.kill(); // well within the idle flush: the data is only in the WAL
      await assert.rejects(
        startDittofs({ dataDir, keepDataDir: true, api: false, configFile: await writeConfig(dir, config('/new'), 'new.yaml') }),
        (err: Error) => {
          // The WRITE's record and the times its FILE_SYNC logged (RECORD_TIMES).
          assert.match(err.message, /WAL holds 2 unflushed records of a share with id [0-9a-f]{8} that is not in the config/);
          assert.match(err.message, /configured: \/new \([0-9a-f]{8}\)/);
          assert.match(err.message, /add the share back under its old name/);
          return true;
        },
      );
      // With the share back, the data is served.
      const again = await startDittofs({
        dataDir,
        keepDataDir: true,
        api: false,
        configFile: await writeConfig(dir, config('/old'), 'old.yaml'),
      });
      servers.push(again);
      const c2 = await NfsOps.open(again.nfsPort);
      try {
        const fh = (await c2.lookup(await c2.mount('/old'), 'f')).fh!;
        assert.equal(sha256(await c2.readAll(fh, CHUNK)), sha256(data), 'the acknowledged data is served');
      } finally {
        c2.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
