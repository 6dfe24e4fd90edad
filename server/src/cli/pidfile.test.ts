// Pid files against real processes: a live stand-in for a DittoFS server (a node process whose
// command line names `dittofs`), a live process that is something else, and a pid that is gone.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  AlreadyRunningError,
  claimPidFile,
  isDittofsCommand,
  processAlive,
  readPidFile,
  releasePidFileSync,
  removeStalePidFile,
} from './pidfile.js';

/** A process that lives until killed, with `name` in its command line. */
function idle(name: string): ChildProcess {
  return spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', name], { stdio: 'ignore' });
}

/** A pid no process has: one that just exited. */
async function deadPid(): Promise<number> {
  const p = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  await new Promise((r) => p.once('exit', r));
  return p.pid!;
}

describe('pid files', () => {
  let dir: string;
  let server: ChildProcess;
  let other: ChildProcess;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-pidfile-'));
    server = idle('/opt/dittofs/bin/dittofs.js');
    other = idle('not-the-server');
  });
  after(async () => {
    server.kill('SIGKILL');
    other.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('recognizes DittoFS command lines, and not dittofsctl', () => {
    assert.ok(isDittofsCommand(['node', '/srv/server/dist/cli/dittofs.js', 'start']));
    assert.ok(isDittofsCommand(['node', '--import', 'tsx', 'server/src/cli/dittofs.ts', 'start', '--foreground']));
    assert.ok(isDittofsCommand(['/usr/local/bin/dittofs', 'start']));
    assert.ok(!isDittofsCommand(['node', '/usr/local/bin/dittofsctl', 'status']));
    assert.ok(!isDittofsCommand(['sleep', '100']));
    assert.ok(!isDittofsCommand([]));
  });

  it('reads every state: missing, invalid, stale, foreign, running', async () => {
    const f = path.join(dir, 'states.pid');
    assert.deepEqual(await readPidFile(f), { state: 'missing' });
    await writeFile(f, 'hello\n');
    assert.deepEqual(await readPidFile(f), { state: 'invalid', content: 'hello' });
    const gone = await deadPid();
    await writeFile(f, `${gone}\n`);
    assert.deepEqual(await readPidFile(f), { state: 'stale', pid: gone });
    await writeFile(f, `${other.pid}\n`);
    const foreign = await readPidFile(f);
    assert.equal(foreign.state, 'foreign');
    assert.match((foreign as { command: string }).command, /not-the-server/);
    await writeFile(f, `${server.pid}`);
    const running = await readPidFile(f);
    assert.equal(running.state, 'running');
    assert.equal((running as { pid: number }).pid, server.pid);
    assert.ok(Math.abs((running as { startedAt: Date }).startedAt.getTime() - Date.now()) < 60_000);
    // This process never counts as running: after a restart in a container, the new server often
    // has the pid its previous run wrote.
    await writeFile(f, `${process.pid}`);
    assert.deepEqual(await readPidFile(f), { state: 'stale', pid: process.pid });
  });

  it('claims a missing file, creating its directory; releases it only if it still names us', async () => {
    const f = path.join(dir, 'nested', 'run', 'a.pid');
    assert.equal(await claimPidFile(f, 4242), undefined);
    assert.equal(await readFile(f, 'utf8'), '4242\n');
    assert.deepEqual(await readdir(path.dirname(f)), ['a.pid'], 'no temporary file left behind');
    assert.equal(releasePidFileSync(f, 4243), false);
    assert.equal(await readFile(f, 'utf8'), '4242\n');
    assert.equal(releasePidFileSync(f, 4242), true);
    assert.deepEqual(await readPidFile(f), { state: 'missing' });
    assert.equal(releasePidFileSync(f, 4242), false);
  });

  it('refuses a file naming a running DittoFS server, and leaves it alone', async () => {
    const f = path.join(dir, 'running.pid');
    await writeFile(f, `${server.pid}\n`);
    await assert.rejects(claimPidFile(f, 4242), (e: unknown) => {
      assert.ok(e instanceof AlreadyRunningError);
      assert.equal(e.code, 'DITTOFS_ALREADY_RUNNING');
      assert.equal(e.pid, server.pid);
      assert.equal(e.message, `already running (pid ${server.pid}; pid file ${f})`);
      return true;
    });
    assert.equal(await readFile(f, 'utf8'), `${server.pid}\n`);
  });

  it('replaces a stale, a foreign and an invalid file, saying what it held', async () => {
    const f = path.join(dir, 'stale.pid');
    const gone = await deadPid();
    await writeFile(f, `${gone}\n`);
    assert.deepEqual(await claimPidFile(f, 4242), { state: 'stale', pid: gone });
    assert.equal(await readFile(f, 'utf8'), '4242\n');
    await writeFile(f, `${other.pid}\n`);
    assert.equal((await claimPidFile(f, 4243))?.state, 'foreign');
    assert.equal(await readFile(f, 'utf8'), '4243\n');
    await writeFile(f, '');
    assert.deepEqual(await claimPidFile(f, 4244), { state: 'invalid', content: '' });
    assert.equal(await readFile(f, 'utf8'), '4244\n');
  });

  it('of two servers claiming at once, exactly one wins', async () => {
    const f = path.join(dir, 'race.pid');
    // Both pids are live DittoFS stand-ins, so the loser must see the winner as running.
    const second = idle('dittofs');
    try {
      const results = await Promise.allSettled([claimPidFile(f, server.pid), claimPidFile(f, second.pid)]);
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
      const lost = results.find((r) => r.status === 'rejected');
      assert.ok(lost?.reason instanceof AlreadyRunningError);
      const winner = Number((await readFile(f, 'utf8')).trim());
      assert.ok(winner === server.pid || winner === second.pid);
    } finally {
      second.kill('SIGKILL');
    }
  });

  it('removes a stale file only if it still names that pid', async () => {
    const f = path.join(dir, 'remove.pid');
    await writeFile(f, '123\n');
    assert.equal(await removeStalePidFile(f, 124), false);
    assert.equal(await removeStalePidFile(f, 123), true);
    assert.equal(await removeStalePidFile(f, 123), false);
  });

  it('processAlive: this process yes, an exited one no', async () => {
    assert.ok(processAlive(process.pid));
    assert.ok(!processAlive(await deadPid()));
  });
});
