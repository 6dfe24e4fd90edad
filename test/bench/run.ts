// Benchmark: DittoFS vs nfs-ganesha (FSAL VFS), both NFSv3 over TCP on 127.0.0.1, in one run.
//
//   npx tsx test/bench/run.ts [--size-mib N] [--files N] [--only both|dittofs|ganesha] [--rounds N] [--json FILE]
//
// For each server, in turn (fresh server, fresh export):
//   (a) sequential write: nfs-cp of an N MiB random file (generated once) to the export;
//   (b) sequential read: nfs-cp of that file back to local disk; sha256 must match, else we fail;
//   (c) small files: create / stat / remove of --files empty files through test/bench/nfsclient.ts
//       (one request outstanding; identical workload for both servers, see smallfiles.ts).
// With --rounds N the whole sequence is repeated N times (server order alternating between rounds)
// and the table shows the median of each figure.
// MiB/s = bytes / 2^20 / seconds, seconds being the wall time of the nfs-cp process (which
// includes its MOUNT and connection setup, the same for both servers).
// Needs root, libnfs-utils, nfs-ganesha, nfs-ganesha-vfs, rpcbind (hack/install-deps.sh bench) and,
// unless --only ganesha, a built server (server/dist/cli/dittofs.js).
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { DITTOFS_CLI, REPO_ROOT, freePort, startDittofs } from '../helpers/server.js';
import { runSmallFiles, type SmallFilesResult } from './smallfiles.js';

const MiB = 1024 * 1024;
const GANESHA_START = path.join(REPO_ROOT, 'hack', 'ganesha', 'start.sh');
const GANESHA_STOP = path.join(REPO_ROOT, 'hack', 'ganesha', 'stop.sh');
const EXPORT_PATH = '/export';

type ServerKind = 'dittofs' | 'ganesha';

/** An expected failure (bad setup, data mismatch): reported without a stack trace. */
class BenchError extends Error {}
const LABEL: Record<ServerKind, string> = { dittofs: 'DittoFS', ganesha: 'ganesha' };

interface Args {
  sizeMib: number;
  files: number;
  only: 'both' | ServerKind;
  rounds: number;
  json: string | undefined;
}

function usage(msg?: string): never {
  if (msg) console.error(`bench: ${msg}`);
  console.error('usage: npx tsx test/bench/run.ts [--size-mib N] [--files N] [--only both|dittofs|ganesha] [--rounds N] [--json FILE]');
  process.exit(2);
}

function parseCli(): Args {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        'size-mib': { type: 'string', default: '1024' },
        files: { type: 'string', default: '10000' },
        only: { type: 'string', default: 'both' },
        rounds: { type: 'string', default: '1' },
        json: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }));
  } catch (e) {
    usage((e as Error).message);
  }
  if (values.help) usage();
  const sizeMib = Number(values['size-mib']);
  const files = Number(values.files);
  if (!Number.isInteger(sizeMib) || sizeMib < 1 || sizeMib > 64 * 1024) usage(`--size-mib must be an integer in 1..65536`);
  if (!Number.isInteger(files) || files < 1 || files > 10_000_000) usage(`--files must be an integer in 1..10000000`);
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20) usage(`--rounds must be an integer in 1..20`);
  const only = values.only;
  if (only !== 'both' && only !== 'dittofs' && only !== 'ganesha') usage(`--only must be both, dittofs or ganesha`);
  return { sizeMib, files, only, rounds, json: values.json };
}

// ---------------------------------------------------------------------------------------------
// Cleanup: every resource registers an idempotent cleanup; finally blocks and signals run them.

interface Cleanup {
  what: string;
  fn: () => Promise<void>;
  /** Set once started, so that every caller (finally block, signal handler) awaits the same run. */
  running?: Promise<void>;
}
const cleanups = new Map<number, Cleanup>();
let nextCleanupId = 0;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

function runCleanup(id: number, c: Cleanup): Promise<void> {
  c.running ??= withTimeout(Promise.resolve().then(c.fn), 60_000, `cleanup: ${c.what}`).finally(() => cleanups.delete(id));
  return c.running;
}

/** Registers fn; returns a function that runs it at most once. */
function defer(what: string, fn: () => Promise<void>): () => Promise<void> {
  const id = nextCleanupId++;
  const c: Cleanup = { what, fn };
  cleanups.set(id, c);
  return () => runCleanup(id, c);
}

/** Runs (or waits for) every registered cleanup, newest first; never throws. */
async function runAllCleanups(): Promise<void> {
  for (const id of [...cleanups.keys()].sort((a, b) => b - a)) {
    const c = cleanups.get(id);
    if (!c) continue;
    try {
      await runCleanup(id, c);
    } catch (e) {
      console.error(`bench: cleanup failed (${c.what}): ${(e as Error).message}`);
    }
  }
}

/** Commands in flight (nfs-cp, start.sh, ...), killed if we exit early. */
const liveChildren = new Set<ChildProcess>();

let exiting = false;
/** Cleans up and exits; the first caller wins (signal, watchdog, or the end of main). */
function finish(code: number, message?: string): void {
  if (exiting) return;
  exiting = true;
  if (message) console.error(message);
  for (const child of liveChildren) child.kill('SIGKILL');
  void runAllCleanups().finally(() => process.exit(code));
}

// ---------------------------------------------------------------------------------------------
// Helpers

interface CmdResult {
  stdout: string;
  stderr: string;
  seconds: number;
}

/**
 * Runs a command (no shell) with a hard timeout (SIGKILL); rejects on non-zero exit.
 * `giveUpIf` is polled every 250 ms: a returned reason kills the command (e.g. the server died,
 * and nfs-cp would otherwise keep reconnecting until the timeout).
 */
function run(cmd: string, args: string[], timeoutMs: number, giveUpIf?: () => string | undefined): Promise<CmdResult> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    liveChildren.add(child);
    let stdout = '';
    let stderr = '';
    const cap = (s: string, d: Buffer) => (s.length < 64 * 1024 ? s + d.toString() : s);
    child.stdout.on('data', (d: Buffer) => (stdout = cap(stdout, d)));
    child.stderr.on('data', (d: Buffer) => (stderr = cap(stderr, d)));
    let timedOut = false;
    let gaveUp: string | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    const poll = giveUpIf
      ? setInterval(() => {
          gaveUp ??= giveUpIf();
          if (gaveUp) child.kill('SIGKILL');
        }, 250)
      : undefined;
    child.once('error', (e) => {
      clearTimeout(timer);
      clearInterval(poll);
      liveChildren.delete(child);
      reject(new Error(`${cmd}: ${e.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      clearInterval(poll);
      liveChildren.delete(child);
      const seconds = (performance.now() - t0) / 1000;
      const shown = `${path.basename(cmd)} ${args.join(' ')}`;
      if (gaveUp) return reject(new Error(`${shown}: killed: ${gaveUp}\n${stderr}${stdout}`));
      if (timedOut) return reject(new Error(`${shown}: timed out after ${timeoutMs} ms\n${stderr}${stdout}`));
      if (code !== 0) return reject(new Error(`${shown}: exit ${code ?? signal}\n${stderr}${stdout}`));
      resolve({ stdout, stderr, seconds });
    });
  });
}

function which(cmd: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => d && existsSync(path.join(d, cmd)));
}

/** Writes `bytes` random bytes to file and returns their sha256. */
async function makeRandomFile(file: string, bytes: number): Promise<string> {
  const hash = createHash('sha256');
  const fh = await open(file, 'w');
  try {
    const buf = Buffer.allocUnsafe(4 * MiB);
    for (let done = 0; done < bytes;) {
      const n = Math.min(buf.length, bytes - done);
      const chunk = buf.subarray(0, n);
      randomFillSync(chunk);
      hash.update(chunk);
      await fh.write(chunk, 0, n);
      done += n;
    }
  } finally {
    await fh.close();
  }
  return hash.digest('hex');
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 * MiB })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** VmHWM (peak resident set) of a process, in KiB, or undefined if unreadable. */
async function vmHwmKiB(pid: number | undefined): Promise<number | undefined> {
  if (!pid) return undefined;
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB$/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

async function versionOf(cmd: string, args: string[], re: RegExp): Promise<string> {
  try {
    const r = await run(cmd, args, 10_000);
    return re.exec(r.stdout + r.stderr)?.[1] ?? '?';
  } catch {
    return '?';
  }
}

// ---------------------------------------------------------------------------------------------
// Servers

interface Server {
  kind: ServerKind;
  nfsPort: number;
  mountPort: number;
  pid: number | undefined;
  /** Why the server is no longer usable (it exited), or undefined while it runs. */
  gone: () => string | undefined;
  /** The last lines the server logged, for failure reports. */
  logTail: () => Promise<string>;
  stop: () => Promise<void>;
}

/** True if pid exists and is not a zombie (our pid 1 may be slow to reap orphans). */
function processRunning(pid: number): boolean {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

function lastLines(text: string, n: number): string {
  return text.trimEnd().split('\n').slice(-n).join('\n');
}

let ganeshaInstances = 0;

async function startGanesha(workDir: string): Promise<Server> {
  // A fresh directory (config, logs, export) per instance, removed when it stops.
  const dir = path.join(workDir, `ganesha-${ganeshaInstances++}`);
  const nfsPort = await freePort();
  let mountPort = await freePort();
  for (let i = 0; mountPort === nfsPort && i < 10; i++) mountPort = await freePort();
  // Registered before starting, so a half-started ganesha is stopped too (stop.sh is idempotent).
  const stop = defer('stop ganesha', async () => {
    await run(GANESHA_STOP, [dir], 45_000);
    await rm(dir, { recursive: true, force: true });
  });
  try {
    await run(GANESHA_START, [dir, String(nfsPort), String(mountPort)], 120_000);
  } catch (e) {
    await stop().catch(() => {});
    throw e;
  }
  const pidText = await readFile(path.join(dir, 'ganesha.pid'), 'utf8').catch(() => '');
  const pid = Number(pidText.trim()) || undefined;
  const logTail = async () => {
    const text = await readFile(path.join(dir, 'ganesha.log'), 'utf8').catch(() => '');
    return lastLines(
      text
        .split('\n')
        .filter((l) => !l.includes(':DBUS :'))
        .join('\n'),
      20,
    );
  };
  const gone = () => (pid !== undefined && !processRunning(pid) ? `ganesha.nfsd (pid ${pid}) exited` : undefined);
  return { kind: 'ganesha', nfsPort, mountPort, pid, gone, logTail, stop };
}

async function startDittoServer(): Promise<Server> {
  const proc = await startDittofs();
  const stop = defer('stop DittoFS', () => proc.stop());
  const logTail = async () => lastLines(proc.output(), 20);
  const gone = () => {
    const { exitCode, signalCode } = proc.child;
    return exitCode !== null || signalCode !== null ? `the DittoFS server exited (${exitCode ?? signalCode})` : undefined;
  };
  return { kind: 'dittofs', nfsPort: proc.nfsPort, mountPort: proc.nfsPort, pid: proc.child.pid, gone, logTail, stop };
}

// ---------------------------------------------------------------------------------------------
// Benchmark

interface Result {
  kind: ServerKind;
  bytes: number;
  writeSeconds: number;
  readSeconds: number;
  writeMiBps: number;
  readMiBps: number;
  /** VmHWM of the server process right after the write, KiB. */
  peakRssAfterWriteKiB: number | undefined;
  smallFiles: SmallFilesResult;
}

async function benchServer(
  kind: ServerKind,
  workDir: string,
  srcFile: string,
  srcSha: string,
  bytes: number,
  files: number,
): Promise<Result> {
  const label = LABEL[kind];
  console.log(`\n== ${label} ==`);
  const server = kind === 'ganesha' ? await startGanesha(workDir) : await startDittoServer();
  try {
    console.log(`${label}: NFS on 127.0.0.1:${server.nfsPort}, MOUNT on :${server.mountPort}, pid ${server.pid ?? '?'}`);
    const url = `nfs://127.0.0.1${EXPORT_PATH}/bench.bin?nfsport=${server.nfsPort}&mountport=${server.mountPort}`;
    // At least 2 MiB/s, else something is wrong.
    const cpTimeout = 60_000 + (bytes / MiB) * 500;

    const w = await run('nfs-cp', [srcFile, url], cpTimeout, server.gone);
    const peakRssAfterWriteKiB = await vmHwmKiB(server.pid);
    const writeMiBps = bytes / MiB / w.seconds;
    console.log(`${label}: seq write ${bytes / MiB} MiB in ${w.seconds.toFixed(3)} s = ${writeMiBps.toFixed(1)} MiB/s`);

    const back = path.join(workDir, `readback-${kind}.bin`);
    const removeBack = defer(`remove ${back}`, () => rm(back, { force: true }));
    let r: CmdResult;
    try {
      r = await run('nfs-cp', [url, back], cpTimeout, server.gone);
      const got = (await stat(back)).size;
      if (got !== bytes) throw new BenchError(`${label}: READ BACK ${got} bytes, wrote ${bytes}: DATA MISMATCH`);
      const sha = await sha256File(back);
      if (sha !== srcSha) throw new BenchError(`${label}: SHA-256 MISMATCH after write+read: wrote ${srcSha}, read ${sha}`);
    } finally {
      await removeBack();
    }
    const readMiBps = bytes / MiB / r.seconds;
    console.log(`${label}: seq read  ${bytes / MiB} MiB in ${r.seconds.toFixed(3)} s = ${readMiBps.toFixed(1)} MiB/s (sha256 ok)`);

    const smallFiles = await runSmallFiles({
      nfsPort: server.nfsPort,
      mountPort: server.mountPort,
      exportPath: EXPORT_PATH,
      files,
      timeoutMs: 60_000 + files * 20, // at least 150 files/s per phase overall
      callTimeoutMs: 30_000,
      log: (m) => console.log(`${label}: ${m}`),
    });
    return {
      kind,
      bytes,
      writeSeconds: w.seconds,
      readSeconds: r.seconds,
      writeMiBps,
      readMiBps,
      peakRssAfterWriteKiB,
      smallFiles,
    };
  } catch (e) {
    const tail = await server.logTail().catch(() => '');
    if (tail && e instanceof Error) e.message += `\n--- last lines of the ${label} server log ---\n${tail}`;
    throw e;
  } finally {
    await server.stop();
  }
}

function fmt(n: number | undefined, digits: number): string {
  return n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(digits);
}

function median(xs: number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const a = [...xs].sort((x, y) => x - y);
  const mid = a.length >> 1;
  return a.length % 2 ? a[mid] : (a[mid - 1]! + a[mid]!) / 2;
}

function printTable(results: Record<ServerKind, Result[]>, args: Args, meta: string[]): void {
  const d = results.dittofs.length > 0 ? results.dittofs : undefined;
  const g = results.ganesha.length > 0 ? results.ganesha : undefined;
  const rows: Array<[string, (r: Result) => number, number]> = [
    ['seq write (MiB/s)', (r) => r.writeMiBps, 1],
    ['seq read (MiB/s)', (r) => r.readMiBps, 1],
    ['create (ops/s)', (r) => r.smallFiles.create.opsPerSec, 0],
    ['stat (ops/s)', (r) => r.smallFiles.stat.opsPerSec, 0],
    ['remove (ops/s)', (r) => r.smallFiles.remove.opsPerSec, 0],
    ['(null RPC, calls/s)', (r) => r.smallFiles.nullPerSec, 0],
  ];
  const header = ['', 'DittoFS', 'ganesha', 'DittoFS/ganesha'];
  const body = rows.map(([name, get, digits]) => {
    const dv = d ? median(d.map(get)) : undefined;
    const gv = g ? median(g.map(get)) : undefined;
    return [name, fmt(dv, digits), fmt(gv, digits), dv !== undefined && gv !== undefined ? fmt(dv / gv, 2) : '-'];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('   ');
  console.log('\n' + meta.join('\n'));
  console.log(
    `Workload: ${args.sizeMib} MiB file via nfs-cp (write, then read back + sha256 check); ` +
      `${args.files} files create / stat / remove, one request outstanding.`,
  );
  console.log('MiB/s = bytes / 2^20 / seconds (nfs-cp wall time). stat = LOOKUP + GETATTR. Higher is better.');
  console.log('(null RPC: NULL round trips/s, the ceiling of the one-request-at-a-time client; stat needs 2 RPCs.)');
  if (args.rounds > 1) console.log(`Each figure is the median of ${args.rounds} rounds.`);
  console.log('');
  console.log(line(header));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const row of body) console.log(line(row));
  const maxHwm = (rs: Result[] | undefined) => {
    const v = (rs ?? []).map((r) => r.peakRssAfterWriteKiB).filter((x): x is number => x !== undefined);
    return v.length > 0 ? Math.max(...v) : undefined;
  };
  const hwm = maxHwm(d);
  const ghwm = maxHwm(g);
  console.log(
    `\nDittoFS server peak RSS during the write (VmHWM right after it): ${hwm === undefined ? '-' : `${(hwm / 1024).toFixed(1)} MiB`}`,
  );
  if (ghwm !== undefined) {
    console.log(`ganesha.nfsd peak RSS during the write, for reference: ${(ghwm / 1024).toFixed(1)} MiB`);
  }
}

async function main(): Promise<void> {
  const args = parseCli();
  const kinds: ServerKind[] = args.only === 'both' ? ['dittofs', 'ganesha'] : [args.only];

  // Preflight, with actionable errors.
  if (process.getuid?.() !== 0) throw new BenchError('must run as root (ganesha FSAL VFS needs it)');
  for (const cmd of ['nfs-cp', 'nfs-ls']) if (!which(cmd)) throw new BenchError(`${cmd} not found: run hack/install-deps.sh bench`);
  if (kinds.includes('ganesha') && !which('ganesha.nfsd')) throw new BenchError('ganesha.nfsd not found: run hack/install-deps.sh bench');
  if (kinds.includes('dittofs') && !existsSync(DITTOFS_CLI)) {
    throw new BenchError(
      `${path.relative(REPO_ROOT, DITTOFS_CLI)} not found: build the server first (npm run build), or pass --only ganesha`,
    );
  }

  const bytes = args.sizeMib * MiB;
  const perServerMs = 2 * (60_000 + args.sizeMib * 500) + (60_000 + args.files * 20) + 180_000;
  const budgetMs = 120_000 + args.sizeMib * 50 + args.rounds * kinds.length * perServerMs;
  const watchdog = setTimeout(
    () => finish(124, `bench: the whole run exceeded its ${Math.round(budgetMs / 1000)} s budget; cleaning up`),
    budgetMs,
  );
  watchdog.unref();

  const [load1] = os.loadavg();
  if (load1 !== undefined && load1 > os.cpus().length * 0.5) {
    console.warn(
      `bench: warning: load average ${load1.toFixed(1)} on ${os.cpus().length} CPUs; other work on this machine will make the figures noisy`,
    );
  }

  const workDir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-bench-'));
  const removeWork = defer(`remove ${workDir}`, () => rm(workDir, { recursive: true, force: true }));
  try {
    const srcFile = path.join(workDir, 'source.bin');
    const t0 = performance.now();
    const srcSha = await makeRandomFile(srcFile, bytes);
    console.log(
      `generated ${args.sizeMib} MiB of random data in ${((performance.now() - t0) / 1000).toFixed(1)} s (sha256 ${srcSha.slice(0, 16)}...)`,
    );

    const results: Record<ServerKind, Result[]> = { dittofs: [], ganesha: [] };
    for (let round = 0; round < args.rounds; round++) {
      if (args.rounds > 1) console.log(`\n=== round ${round + 1} of ${args.rounds} ===`);
      for (const kind of round % 2 === 0 ? kinds : [...kinds].reverse()) {
        results[kind].push(await benchServer(kind, workDir, srcFile, srcSha, bytes, args.files));
      }
    }

    const meta = [
      `== DittoFS vs nfs-ganesha: NFSv3 over TCP on 127.0.0.1 (${new Date().toISOString()}) ==`,
      `host: ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, ` +
        `node ${process.version}, nfs-ganesha ${await versionOf('ganesha.nfsd', ['-v'], /Release\s*=\s*V?([\w.-]+)/)} ` +
        `(FSAL VFS on ${os.tmpdir()}), libnfs-utils nfs-cp; 1-min load average at start ${load1?.toFixed(1) ?? '?'}`,
    ];
    printTable(results, args, meta);
    if (args.json) {
      await writeFile(
        args.json,
        JSON.stringify({ args, meta, results }, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v), 2),
      );
      console.log(`results written to ${args.json}`);
    }
  } finally {
    await removeWork();
  }
}

// `on`, not `once`: with Ctrl-C the signal can arrive twice (from the terminal to the process group,
// and relayed by the tsx parent), and a second, unhandled SIGINT would kill us mid-cleanup.
process.on('SIGINT', () => finish(130, 'bench: interrupted (SIGINT); cleaning up'));
process.on('SIGTERM', () => finish(143, 'bench: terminated (SIGTERM); cleaning up'));

main().then(
  () => finish(0),
  (e: unknown) => {
    // The message, then (for unexpected errors) the stack frames; the message may have been
    // extended after the stack was captured (server log tail), so it is not taken from e.stack.
    const frames = (err: Error) => (err.stack ?? '').split('\n').filter((l) => /^\s+at /.test(l));
    const text = e instanceof BenchError ? e.message : e instanceof Error ? [e.message, ...frames(e)].join('\n') : String(e);
    finish(1, `\nBENCH FAILED: ${text}`);
  },
);
