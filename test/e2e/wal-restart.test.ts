// A clean stop leaves nothing to replay; a crash still replays. A real server process (embedded
// metadata, filesystem blocks, as `make run`) takes UNSTABLE writes that are still only in the WAL
// (partial blocks, well within the idle flush), COMMITs them, and is stopped with SIGTERM: the data
// is uploaded during shutdown, the WAL directory is left without segment files, and the next start
// logs "WAL clean, nothing to replay" and serves every byte. The same after SIGKILL: the next start
// replays the records (and says how many), and serves every byte.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { readBack, writeCommitted } from '../helpers/nfs-ops.js';
import { type DittofsProcess } from '../helpers/server.js';
import { KiB, MiB, sha256, startReady } from '../fault/support.js';

const CHUNK = 256 * KiB;

/** The pino line whose message matches `msg`, parsed; null when there is none. */
function logLine(output: string, msg: RegExp): Record<string, unknown> | null {
  for (const raw of output.split('\n')) {
    if (!raw.startsWith('{')) continue;
    const rec = JSON.parse(raw) as Record<string, unknown>;
    if (typeof rec.msg === 'string' && msg.test(rec.msg)) return rec;
  }
  return null;
}

const walFiles = async (dataDir: string): Promise<string[]> =>
  (await readdir(path.join(dataDir, 'wal'))).filter((f) => f.startsWith('wal-'));

describe('WAL after a clean stop and after a crash', { timeout: 5 * 60_000 }, () => {
  let work = '';
  const servers: DittofsProcess[] = [];
  after(async () => {
    for (const s of servers) await s.stop().catch(() => undefined);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('SIGTERM leaves nothing to replay; SIGKILL replays; every byte is served either way', async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'dittofs-wal-restart-'));
    const dataDir = path.join(work, 'data');
    const start = async (): Promise<DittofsProcess> => {
      const s = await startReady({ dataDir, keepDataDir: true, env: { DITTOFS_LOG_LEVEL: 'info' } });
      servers.push(s);
      return s;
    };
    /** Writes `data` UNSTABLE (partial 4 MiB blocks: nothing is uploaded before the idle flush), then COMMITs. */
    const writeFile = (s: DittofsProcess, name: string, data: Buffer): Promise<void> =>
      writeCommitted(s.nfsPort, name, data, { chunk: CHUNK });
    const readFile = (s: DittofsProcess, name: string, size: number): Promise<Buffer> => readBack(s.nfsPort, name, size);

    const first = await start();
    const a = randomBytes(3 * MiB + 12345);
    await writeFile(first, 'a', a);
    await first.stop();
    assert.equal(first.child.exitCode, 0, `a clean exit after SIGTERM:\n${first.output()}`);
    assert.deepEqual(await walFiles(dataDir), [], 'no WAL segment is left after a clean stop');

    const second = await start();
    const clean = logLine(second.output(), /^WAL clean, nothing to replay$/);
    assert.ok(clean, `the start-up line says there was nothing to replay:\n${second.output()}`);
    assert.equal(logLine(second.output(), /^WAL replayed/), null);
    assert.equal(sha256(await readFile(second, 'a', a.length)), sha256(a), 'a is intact after the clean stop');

    const b = randomBytes(2 * MiB + 777);
    await writeFile(second, 'b', b);
    await second.kill();

    const third = await start();
    const replayed = logLine(third.output(), /^WAL replayed: \d+ records \(\d+ bytes\) in \d+ ms$/);
    assert.ok(replayed, `after SIGKILL the start-up line says what was replayed:\n${third.output()}`);
    assert.ok((replayed.records as number) >= Math.ceil(b.length / CHUNK), `records replayed: ${String(replayed.records)}`);
    assert.ok((replayed.bytes as number) >= b.length, `bytes replayed: ${String(replayed.bytes)}`);
    assert.equal(logLine(third.output(), /^WAL clean/), null);
    assert.equal(sha256(await readFile(third, 'b', b.length)), sha256(b), 'b is intact after the crash');
    assert.equal(sha256(await readFile(third, 'a', a.length)), sha256(a), 'a is intact too');
    await third.stop();
    assert.equal(third.child.exitCode, 0);
    assert.deepEqual(await walFiles(dataDir), [], 'the replayed data was stored: nothing left after the next clean stop');
  });
});
