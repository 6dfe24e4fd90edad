// Fault injection with a real client: the Linux kernel NFSv3 client in the QEMU test VM
// (hack/vm/run-nfs-test.sh, HARD mount, timeo=10,retrans=3) copies a 48 MiB file of pseudorandom
// data onto DittoFS with `dd conv=fsync` (test/fault/kernel-crash-writer.sh) while the host kills
// the server with SIGKILL, twice if the copy lasts long enough, and restarts it after ~1.5 s on the
// same port and data dir (embedded metadata + filesystem blocks). The restarted server has a new
// write verifier, so the kernel must resend what was not committed. Asserts: dd and fsync succeed,
// the file's sha256 on the mount (right after the copy, and after drop_caches) equals the source's,
// and a fresh read from the host (raw NFSv3 client) gives the same sha256.
//
// Needs what test/e2e/kernel-client.test.ts needs (hack/install-deps.sh vm) and a built server.
// FAULT_KERNEL_SIZE_MIB=N changes the file size; E2E_VERBOSE=1 streams the VM console.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, describe, it } from 'node:test';
import { NfsOps, statusName } from '../helpers/nfs-ops.js';
import { READY_TIMEOUT_MS } from '../helpers/limits.js';
import { freePort, REPO_ROOT, type DittofsProcess } from '../helpers/server.js';
import { checkVmPrerequisites } from '../helpers/vm.js';
import { intFromEnv, logLinesAtLeast, MiB, sha256, sleep, startReady, tail, writeConfig } from './support.js';

const RUN_VM = path.join(REPO_ROOT, 'hack', 'vm', 'run-nfs-test.sh');
const GUEST_SCRIPT = path.join(REPO_ROOT, 'test', 'fault', 'kernel-crash-writer.sh');
const SIZE_MIB = intFromEnv('FAULT_KERNEL_SIZE_MIB', 48);
const FILE_NAME = 'crash.bin';
const MOUNT_OPTS = 'hard,timeo=10,retrans=3';
/** The first kill comes once the server has seen this much of the file. */
const FIRST_KILL_AT = Math.floor((SIZE_MIB * MiB) / 4);
/** How long the server stays down. */
const DOWN_MS = 1_500;
/** Bounds against a hang (an emulated VM on a loaded machine is slow): the VM first, then the test. */
const VM_TIMEOUT_S = 20 * 60;
const TEST_TIMEOUT_MS = (VM_TIMEOUT_S + 3 * 60) * 1000;

interface Vm {
  child: ChildProcess;
  lines: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves when a console line matches, or with null once the VM has exited. */
  waitFor(re: RegExp): Promise<RegExpMatchArray | null>;
  kill(): Promise<void>;
}

function bootVm(nfsPort: number, script: string): Vm {
  // Own process group, so that qemu and the console tail go with it whatever happens.
  const child = spawn(
    'bash',
    [RUN_VM, '--port', String(nfsPort), '--script', script, '--timeout', String(VM_TIMEOUT_S), '--mount-opts', MOUNT_OPTS],
    { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
  const lines: string[] = [];
  let waiters: (() => void)[] = [];
  const wake = () => {
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  };
  const onLine = (l: string) => {
    lines.push(l);
    if (process.env.E2E_VERBOSE === '1') process.stderr.write(`vm| ${l}\n`);
    wake();
  };
  createInterface({ input: child.stdout }).on('line', onLine);
  createInterface({ input: child.stderr }).on('line', onLine);
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => {
      done = true;
      wake();
      resolve({ code, signal });
    });
  });
  return {
    child,
    lines,
    exited,
    async waitFor(re) {
      for (let seen = 0; ;) {
        for (; seen < lines.length; seen++) {
          const m = re.exec(lines[seen]!);
          if (m) return m;
        }
        if (done) return null;
        await new Promise<void>((r) => waiters.push(r));
      }
    },
    async kill() {
      if (done || child.pid === undefined) return;
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        return;
      }
      const t = setTimeout(() => {
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          // already gone
        }
      }, 5_000);
      await exited;
      clearTimeout(t);
    },
  };
}

void describe('kernel-crash: SIGKILL of the server while the Linux kernel client copies a file', { timeout: TEST_TIMEOUT_MS }, () => {
  let dir: string | undefined;
  let server: DittofsProcess | undefined;
  let vm: Vm | undefined;

  after(async () => {
    await vm?.kill();
    await server?.kill();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  void it(`a ${SIZE_MIB} MiB dd conv=fsync survives server crashes with identical content`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
    checkVmPrerequisites('kernel-crash test', { nfsCat: false, server: true });
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-fault-kernel-'));
    const dataDir = path.join(dir, 'data');
    const configFile = await writeConfig(
      dir,
      [
        `data_dir: ${dataDir}`,
        'metadata:',
        '  stores:',
        '    default:',
        '      type: embedded',
        'blocks:',
        '  stores:',
        '    default:',
        '      type: filesystem',
        'shares:',
        '  - name: /export',
        '',
      ].join('\n'),
    );
    const script = path.join(dir, 'guest.sh');
    await writeFile(script, `#!/bin/sh\nSIZE_MIB=${SIZE_MIB}\n${await readFile(GUEST_SCRIPT, 'utf8')}`, { mode: 0o755 });
    const nfsPort = await freePort();
    const outputs: string[] = [];
    const start = async (): Promise<DittofsProcess> => {
      server = await startReady({ dataDir, configFile, nfsPort });
      return server;
    };
    const context = () =>
      `\n--- VM console (tail) ---\n${tail(vm?.lines.join('\n') ?? '', 60)}` +
      `\n--- DittoFS output (tail) ---\n${tail([...outputs, server?.output() ?? ''].join('\n'), 30)}`;
    const killServer = async (): Promise<void> => {
      const s = server!;
      const bad = logLinesAtLeast(s.output());
      assert.deepEqual(bad, [], `server logged errors before the kill${context()}`);
      await s.kill();
      outputs.push(s.output());
      server = undefined;
    };

    await start();
    const started = Date.now();
    vm = bootVm(nfsPort, script);

    const copyStart = await vm.waitFor(/CRASH-WRITER: copy-start/);
    assert.ok(copyStart, `the VM did not start the copy${context()}`);
    const copyDone = vm.waitFor(/CRASH-WRITER: copy-done/).then(() => Date.now());
    let doneAt: number | null = null;
    void copyDone.then((at) => (doneAt = at));

    // Kill 1: once the server has seen a quarter of the file (LOOKUP of its size, every 50 ms).
    const poller = await NfsOps.open(nfsPort);
    let killsDuringCopy = 0;
    try {
      const root = await poller.mount('/export');
      const deadline = Date.now() + VM_TIMEOUT_S * 1000;
      let size = 0;
      while (doneAt === null && Date.now() < deadline) {
        const lk = await poller.lookup(root, FILE_NAME);
        size = lk.attrs?.size ?? 0;
        if (size >= FIRST_KILL_AT) break;
        await sleep(50);
      }
      assert.ok(
        size >= FIRST_KILL_AT,
        `the file on the server never reached ${FIRST_KILL_AT} bytes before the copy ended (size ${size})${context()}`,
      );
    } finally {
      poller.close();
    }
    await killServer();
    if (doneAt === null) killsDuringCopy++;
    t.diagnostic(`kill 1 at ${((Date.now() - started) / 1000).toFixed(1)} s, ${FIRST_KILL_AT} bytes seen`);
    await sleep(DOWN_MS);
    await start();

    // Kill 2: once the kernel is writing to the restarted server again (the file's mtime moves),
    // after a short random delay, if the copy is still running.
    const writing = await NfsOps.open(nfsPort);
    try {
      const root = await writing.mount('/export');
      const mtimeOf = async (): Promise<string> => {
        const lk = await writing.lookup(root, FILE_NAME);
        return lk.attrs ? `${lk.attrs.mtime.sec}.${lk.attrs.mtime.nsec}/${lk.attrs.size}` : 'none';
      };
      const m0 = await mtimeOf();
      const deadline = Date.now() + READY_TIMEOUT_MS;
      while (doneAt === null && Date.now() < deadline && (await mtimeOf()) === m0) await sleep(50);
    } finally {
      writing.close();
    }
    await Promise.race([copyDone, sleep(100 + Math.floor(Math.random() * 500))]);
    if (doneAt === null) {
      await killServer();
      killsDuringCopy++;
      t.diagnostic(`kill 2 at ${((Date.now() - started) / 1000).toFixed(1)} s`);
      await sleep(DOWN_MS);
      await start();
    }

    const exit = await vm.exited;
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    const lines = vm.lines;
    const value = (key: string): string | undefined => {
      for (const l of lines) {
        const m = new RegExp(`CRASH-WRITER: ${key} (\\S+)`).exec(l);
        if (m) return m[1];
      }
      return undefined;
    };
    const done = lines.find((l) => l.includes('CRASH-WRITER: copy-done'));
    assert.ok(done, `the copy did not finish (VM exit ${exit.code ?? exit.signal} after ${seconds} s)${context()}`);
    assert.match(done, /rc=0\b/, `dd conv=fsync failed in the VM${context()}`);
    assert.ok(killsDuringCopy >= 1, `no kill landed during the copy${context()}`);
    const source = value('source-sha256');
    assert.ok(source && /^[0-9a-f]{64}$/.test(source), `no source sha256 from the VM${context()}`);
    assert.equal(value('mount-sha256'), source, `file on the mount differs from the source right after the copy${context()}`);
    assert.equal(value('reread-sha256'), source, `file re-read after drop_caches differs from the source${context()}`);
    assert.equal(exit.code, 0, `hack/vm/run-nfs-test.sh exited with ${exit.code ?? exit.signal}${context()}`);
    vm = undefined;

    // A fresh read from the host.
    const nfs = await NfsOps.open(nfsPort);
    try {
      const root = await nfs.mount('/export');
      const lk = await nfs.lookup(root, FILE_NAME);
      assert.equal(lk.status, 0, `LOOKUP ${FILE_NAME} from the host: ${statusName(lk.status)}`);
      assert.equal(lk.attrs?.size, SIZE_MIB * MiB, `size of ${FILE_NAME} seen from the host`);
      const data = await nfs.readAll(lk.fh!, SIZE_MIB * MiB);
      assert.equal(sha256(data), source, `${FILE_NAME} read from the host differs from the source${context()}`);
    } finally {
      nfs.close();
    }
    const bad = logLinesAtLeast(server!.output());
    assert.deepEqual(bad, [], `server logged errors${context()}`);
    const last = server!;
    await last.stop();
    server = undefined;
    assert.equal(last.child.exitCode, 0, 'graceful stop at the end');
    t.diagnostic(`${killsDuringCopy} kill(s) during the copy; ${done.replace(/.*CRASH-WRITER: /, '')}; VM run ${seconds} s`);
  });
});
