// Benchmark: DittoFS vs nfs-ganesha (FSAL VFS), both NFSv3 over TCP on 127.0.0.1, and DittoFS vs
// Samba's smbd, both SMB 2.1 on 127.0.0.1 (smb.ts), in one run.
//
//   npx tsx test/bench/run.ts [--size-mib N] [--files N] [--clients N] [--smb-files N] [--configs LIST] [--rounds N] [--json FILE]
//                             [--dir-sizes L] [--restart-files N] [--vm-untar N]
//
// Configurations (--configs, comma-separated; default all):
//   ganesha      nfs-ganesha with FSAL VFS on a temporary directory (the reference);
//   embedded-fs  DittoFS, embedded metadata + filesystem block store (the default configuration);
//   pglite-fs    the same on the former embedded engine, PGlite (metadata engine: pglite);
//   postgres-s3  DittoFS, postgres metadata on a private PostgreSQL cluster + s3 block store on
//                versitygw (posix backend, versitygw.ts; s3rver where it is not built, or with
//                --s3-server s3rver), path-style, both started once per run (backends.ts). Once started,
//                PostgreSQL's own ceiling is measured: durable one-statement commits per second,
//                one at a time (pgCommitCeiling), printed beside the postgres create target.
//   smb          the SMB rows: smbclient put/get of the same file and --smb-files small-file puts,
//                against smbd (hack/smb/smbd.sh) and DittoFS embedded-fs; see smb.ts.
// DittoFS keeps its WAL in the data dir in both. --only both|dittofs|ganesha is the old spelling
// (dittofs = embedded-fs,postgres-s3).
//
// For each configuration, in turn (fresh server, fresh data dir, fresh schema and key prefix):
//   (a) sequential write: nfs-cp of an N MiB random file (generated once) to the export; then, for
//       DittoFS, the WAL drain time: from the end of the write until <data dir>/wal holds at most
//       one segment file (at most 120 s), i.e. how long the block store upload lags behind;
//   (b) sequential read: nfs-cp of that file back to local disk; sha256 must match, else we fail;
//   (c) small files: create / stat / remove of --files empty files through test/bench/nfsclient.ts
//       (one request outstanding; identical workload for every server, see smallfiles.ts);
//   (d) with --clients N (default 8; 0 leaves it out) N clients at once: N nfs-cp writes of a
//       --size-mib/N MiB file each, then N nfs-cp reads of them back (sha256 checked), then N
//       small-file generators of --files/N files each, in a directory of their own.
// Beside every figure: the server's CPU seconds (utime + stime of the whole process, all its
// threads, from /proc/PID/stat) per GiB moved or per 1,000 operations. Unlike wall time it holds
// on a machine that other work keeps busy. For DittoFS a write's CPU includes the WAL drain (the
// block store upload is part of the write's cost); PostgreSQL and S3 run in processes of their own
// and are not counted.
//   (e) with --dir-sizes L (opt-in): one directory filled to each size in turn, a sample of REMOVEs
//       timed at each (dirscale.ts): does REMOVE slow down as a directory grows?
//   (f) DittoFS, with --restart-files N (default --files; 0 leaves it out): N empty files left on
//       the share, a clean stop, and the start to ready on that data dir timed (restart.ts).
// With --rounds N the whole sequence is repeated N times (order reversed every other round) and
// the table shows the median of each figure (peak RSS: the highest). Targets are printed, not asserted.
// MiB/s = bytes / 2^20 / seconds, seconds being the wall time of the nfs-cp process (which
// includes its MOUNT and connection setup, the same for every server).
// Needs libnfs-utils and, for ganesha, root, nfs-ganesha, nfs-ganesha-vfs, rpcbind
// (hack/install-deps.sh bench); for DittoFS a built server (server/dist/cli/dittofs.js); for
// postgres-s3 PostgreSQL (hack/install-deps.sh test; hack/postgres/start.sh installs it if missing).
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, open, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { DITTOFS_CLI, REPO_ROOT, freePort, startDittofs } from '../helpers/server.js';
import { checkVmPrerequisites } from '../helpers/vm.js';
import {
  EXPORT_PATH,
  cleanRound,
  pgCommitCeiling,
  needsBackends,
  newRunId,
  roundKeys,
  roundPlace,
  startBackends,
  S3_SERVERS,
  type S3ServerChoice,
  writeDittoConfig,
  type Backends,
  type DittoConfigName,
  type RoundPlace,
} from './backends.js';
import { formatCacheCounts, formatCallTimes, formatGcTimes, readCacheCounts, readCallTimes, readGcTimes } from './call-times.js';
import { cpuProfEnv, prepareCpuProf } from './cpu-prof.js';
import { cpuSeconds, mainThreadCpuSeconds, setClockTicks, TreeCpuWatch, vmHwmKiB, writtenBytes } from './proc.js';
import { runSmallFiles, type SmallFilesResult } from './smallfiles.js';
import { DEFAULT_DIR_SIZES, parseDirSizes, runDirScale, type DirScaleStep } from './dirscale.js';
import { checkFilled, fillDirectory, RESTART_TARGET_SECONDS, type RestartResult } from './restart.js';
import { runVmUntar, type VmUntarResult } from './vmuntar.js';
import {
  SMB_MIN_RATIO,
  SMB_MODES,
  SMB_TARGETS,
  addDittoSmbUser,
  benchSmb,
  makeSmallFiles,
  startSmbd,
  type SmbResult,
  type SmbMode,
  type SmbServer,
  type SmbSummary,
  type SmbTarget,
} from './smb.js';

const MiB = 1024 * 1024;
const GANESHA_START = path.join(REPO_ROOT, 'hack', 'ganesha', 'start.sh');
const GANESHA_STOP = path.join(REPO_ROOT, 'hack', 'ganesha', 'stop.sh');
/** Longest wait for the WAL to drain after a write. */
const DRAIN_LIMIT_MS = 120_000;
/** WAL segment file names (server/src/blocks/wal.ts). */
const WAL_SEGMENT_RE = /^wal-\d{16}\.log$/;

/** Table order; runs go in this order too (reversed every other round). */
const CONFIGS = ['ganesha', 'embedded-fs', 'pglite-fs', 'postgres-s3'] as const;
type ConfigName = (typeof CONFIGS)[number];
const isDitto = (c: ConfigName): c is DittoConfigName => c !== 'ganesha';
const LABEL: Record<ConfigName, string> = {
  ganesha: 'ganesha',
  'embedded-fs': 'DittoFS embedded-fs',
  'pglite-fs': 'DittoFS pglite-fs',
  'postgres-s3': 'DittoFS postgres-s3',
};

/** Printed next to the table, never asserted. */
const TARGETS = { minWriteRatio: 1.0, minReadRatio: 1.0, minParallelRatio: 1.0, minPostgresCreates: 5000, maxPeakRssMiB: 300 };

/** An expected failure (bad setup, data mismatch): reported without a stack trace. */
class BenchError extends Error {}

interface Args {
  sizeMib: number;
  files: number;
  /** NFS configurations to run. */
  configs: ConfigName[];
  /** Whether the SMB rows run (--configs includes smb). */
  smb: boolean;
  smbFiles: number;
  /** --smb-mode: SMB 2.1 unsigned, or 3.1.1 signed, for both servers. */
  smbMode: SmbMode;
  /** Clients of the parallel rows (0: none). */
  clients: number;
  rounds: number;
  json: string | undefined;
  /** Directory for V8 CPU profiles of the DittoFS servers (node --cpu-prof), or undefined. */
  cpuProf: string | undefined;
  /** --dir-sizes: REMOVE and CREATE timed as one directory grows to each size (dirscale.ts); undefined: not run. */
  dirSizes: number[] | undefined;
  /** Files left on DittoFS servers before the timed restart (0: no restart row). */
  restartFiles: number;
  /** --vm-untar: files of the tree untarred by the kernel client in the VM (0: no untar row). */
  vmUntar: number;
  /** --s3-server: the S3 server of postgres-s3 (auto: versitygw where built, else s3rver). */
  s3Server: S3ServerChoice;
}

const USAGE = `usage: npx tsx test/bench/run.ts [--size-mib N] [--files N] [--clients N] [--smb-files N] [--configs LIST] [--rounds N] [--json FILE]
  --size-mib N    size of the sequential write/read file, NFS and SMB (default 1024)
  --files N       files to create / stat / remove over NFS (default 10000)
  --clients N     clients of the parallel rows, each with size-mib/N MiB and files/N files (default 8; 0: no parallel rows)
  --smb-files N   small files put over SMB in one smbclient session (default 2000)
  --smb-mode M    the SMB rows' dialect and signing, for DittoFS and smbd alike: 2.1 (unsigned, the
                  default), 3.1.1-signed or 3.1.1-encrypted
  --configs LIST  comma-separated, from ${CONFIGS.join(', ')}, smb (default: all)
  --only WHICH    old spelling: both (= all), dittofs (= embedded-fs,postgres-s3) or ganesha
  --rounds N      repeat everything N times; the table shows medians (default 1)
  --json FILE     also write every figure to FILE
  --cpu-prof DIR  DittoFS servers write a V8 CPU profile of their main thread to DIR
  --dir-sizes L   also time REMOVE and CREATE while one directory grows to each size (e.g. ${DEFAULT_DIR_SIZES.join(',')})
  --restart-files N  DittoFS: N files stay on the share, then the server is stopped and its restart to ready
                  is timed (default: --files; 0: no restart row)
  --vm-untar N    also untar an N-file tree through the Linux kernel client in the QEMU VM (hack/vm) onto
                  ganesha and DittoFS embedded-fs, one VM boot each (slow under emulation: minutes)
  --s3-server S   the S3 server of postgres-s3: auto (versitygw where hack/install-deps.sh bench built it,
                  else s3rver; the default), versitygw or s3rver (DITTOFS_TEST_S3_ENDPOINT overrides both)`;

function usage(msg?: string): never {
  if (msg) console.error(`bench: ${msg}`);
  console.error(USAGE);
  process.exit(2);
}

function parseConfigs(list: string): { configs: ConfigName[]; smb: boolean } {
  const names = list
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (names.length === 0) usage('--configs needs at least one configuration');
  for (const n of names) {
    if (!(CONFIGS as readonly string[]).includes(n) && n !== 'smb')
      usage(`unknown configuration ${JSON.stringify(n)} in --configs (known: ${CONFIGS.join(', ')}, smb)`);
  }
  return { configs: CONFIGS.filter((c) => names.includes(c)), smb: names.includes('smb') };
}

function parseCli(): Args {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        'size-mib': { type: 'string', default: '1024' },
        files: { type: 'string', default: '10000' },
        'smb-files': { type: 'string', default: '2000' },
        'smb-mode': { type: 'string', default: '2.1' },
        clients: { type: 'string', default: '8' },
        configs: { type: 'string' },
        only: { type: 'string' },
        rounds: { type: 'string', default: '1' },
        json: { type: 'string' },
        'cpu-prof': { type: 'string' },
        'dir-sizes': { type: 'string' },
        'restart-files': { type: 'string' },
        'vm-untar': { type: 'string', default: '0' },
        's3-server': { type: 'string', default: 'auto' },
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
  const smbMode = SMB_MODES[values['smb-mode']];
  if (smbMode === undefined) usage(`--smb-mode must be one of ${Object.keys(SMB_MODES).join(', ')}`);
  const smbFiles = Number(values['smb-files']);
  if (!Number.isInteger(smbFiles) || smbFiles < 1 || smbFiles > 100_000) usage(`--smb-files must be an integer in 1..100000`);
  const clients = Number(values.clients);
  if (!Number.isInteger(clients) || clients < 0 || clients > 64) usage(`--clients must be an integer in 0..64`);
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20) usage(`--rounds must be an integer in 1..20`);
  if (values.only !== undefined && values.configs !== undefined) usage('give --configs or --only (its old spelling), not both');
  let configs: ConfigName[] = [...CONFIGS];
  let smb = true;
  if (values.configs !== undefined) ({ configs, smb } = parseConfigs(values.configs));
  if (values.only !== undefined) {
    const only = values.only;
    smb = false;
    if (only === 'dittofs') configs = ['embedded-fs', 'postgres-s3'];
    else if (only === 'ganesha') configs = ['ganesha'];
    else if (only !== 'both') usage(`--only must be both, dittofs or ganesha`);
  }
  const cpuProf = values['cpu-prof'] === undefined ? undefined : path.resolve(values['cpu-prof']);
  let dirSizes: number[] | undefined;
  if (values['dir-sizes'] !== undefined) {
    const parsed = parseDirSizes(values['dir-sizes']);
    if (typeof parsed === 'string') usage(`--dir-sizes: ${parsed}`);
    dirSizes = parsed;
  }
  const restartFiles = values['restart-files'] === undefined ? files : Number(values['restart-files']);
  if (!Number.isInteger(restartFiles) || restartFiles < 0 || restartFiles > 1_000_000)
    usage(`--restart-files must be an integer in 0..1000000`);
  const vmUntar = Number(values['vm-untar']);
  if (!Number.isInteger(vmUntar) || vmUntar < 0 || vmUntar > 100_000) usage(`--vm-untar must be an integer in 0..100000`);
  const s3Server = S3_SERVERS.find((n) => n === values['s3-server']);
  if (s3Server === undefined) usage(`--s3-server must be one of ${S3_SERVERS.join(', ')}`);
  return {
    sizeMib,
    files,
    configs,
    smb,
    smbFiles,
    smbMode,
    clients,
    rounds,
    json: values.json,
    cpuProf,
    dirSizes,
    restartFiles,
    vmUntar,
    s3Server,
  };
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

/** CPU seconds the process used since `from` (a cpuSeconds reading), or undefined. */
function cpuSince(pid: number | undefined, from: number | undefined): number | undefined {
  const now = cpuSeconds(pid);
  return now === undefined || from === undefined ? undefined : now - from;
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
  config: ConfigName;
  nfsPort: number;
  mountPort: number;
  pid: number | undefined;
  /** DittoFS only: its data directory (the WAL is in wal/ under it). */
  dataDir?: string;
  /** DittoFS only: its API and SMB ports. */
  apiPort?: number;
  smbPort?: number;
  /** DittoFS only: its Prometheus metrics port (request latency by procedure). */
  metricsPort?: number;
  /** DittoFS only: where this round's data lives in PostgreSQL and S3. */
  place?: RoundPlace;
  /** DittoFS only: everything the server logged so far. */
  output?: () => string;
  /** Why the server is no longer usable (it exited), or undefined while it runs. */
  gone: () => string | undefined;
  /** The last lines the server logged, for failure reports. */
  logTail: () => Promise<string>;
  stop: () => Promise<void>;
  /** DittoFS only: a clean stop, then a start on the same data, timed (the server keeps running). */
  restart?: () => Promise<{ stopSeconds: number; startSeconds: number; phases: string[] }>;
}

/**
 * Mean time in the server per NFS call, by procedure, from DittoFS's request latency histogram
 * (`dittofs_request_duration_seconds`: decoding to reply ready), e.g. "SETATTR=91 LOOKUP=40".
 */
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
/** --cpu-prof: where DittoFS servers write their CPU profiles. */
let cpuProfDir: string | undefined;

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
    await run(GANESHA_START, [dir, String(nfsPort), String(mountPort)], 480_000); // up to three tries of 120 s
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
  return { config: 'ganesha', nfsPort, mountPort, pid, gone, logTail, stop };
}

/**
 * Starts DittoFS on `config` with a YAML file in the work dir and a fresh data dir (and, for
 * postgres-s3, a fresh schema and key prefix); stop() stops it and removes all of that.
 */
async function startDittoServer(config: DittoConfigName, round: number, workDir: string, backends: Backends | undefined): Promise<Server> {
  const name = `${config}-r${round}`;
  const dataDir = path.join(workDir, name);
  await mkdir(dataDir);
  const removeData = defer(`remove ${dataDir}`, () => rm(dataDir, { recursive: true, force: true }));
  const place = backends ? roundPlace(config, backends, round) : {};
  const cleanPlace = defer(`drop the data of ${name} in PostgreSQL / S3`, async () => {
    if (!backends) return;
    for (const p of await cleanRound(backends, place)) console.warn(`bench: warning: ${p}`);
  });
  const cleanAll = async () => {
    await cleanPlace();
    await removeData();
  };
  let proc;
  // A profile is written when the server exits (stop() sends SIGTERM: a clean exit).
  const env = cpuProfDir === undefined ? {} : cpuProfEnv(cpuProfDir);
  try {
    const configFile = await writeDittoConfig(workDir, name, config, dataDir, place, backends);
    proc = await startDittofs({ configFile, dataDir, env });
  } catch (e) {
    await cleanAll().catch(() => {});
    throw e;
  }
  let p = proc;
  const stopProc = defer('stop DittoFS', () => p.stop());
  const logTail = async () => lastLines(p.output(), 20);
  const gone = () => {
    const { exitCode, signalCode } = p.child;
    return exitCode !== null || signalCode !== null ? `the DittoFS server exited (${exitCode ?? signalCode})` : undefined;
  };
  const stop = async () => {
    await stopProc();
    await cleanAll();
  };
  // What the servers before a restart logged (summarizeLog reads it all).
  let earlierOutput = '';
  // The same ports again (clients keep their URLs); "ready" is what tests wait for: NFS and API listening.
  const restart = async () => {
    const t0 = performance.now();
    await p.stop();
    earlierOutput += p.output();
    const t1 = performance.now();
    p = await startDittofs({
      configFile: path.join(workDir, `${name}.yaml`),
      dataDir,
      nfsPort: p.nfsPort,
      // info: the server's own "start-up: ... in N s" lines say where the time went.
      env: { ...env, DITTOFS_API_PORT: String(p.apiPort), DITTOFS_SMB_PORT: String(p.smbPort), DITTOFS_LOG_LEVEL: 'info' },
    });
    const t2 = performance.now();
    const phases: string[] = [];
    for (const line of p.output().split('\n')) {
      try {
        const msg = (JSON.parse(line) as { msg?: unknown }).msg;
        if (typeof msg === 'string' && /^start-up: .* in [\d.]+ m?s/.test(msg)) phases.push(msg.slice('start-up: '.length));
      } catch {
        // not a log record
      }
    }
    return { stopSeconds: (t1 - t0) / 1000, startSeconds: (t2 - t1) / 1000, phases };
  };
  return {
    config,
    nfsPort: p.nfsPort,
    mountPort: p.nfsPort,
    // A getter: a restart changes it.
    get pid() {
      return p.child.pid;
    },
    dataDir,
    apiPort: p.apiPort,
    smbPort: p.smbPort,
    get metricsPort() {
      return p.metricsPort;
    },
    place,
    output: () => earlierOutput + p.output(),
    gone,
    logTail,
    stop,
    restart,
  };
}

// ---------------------------------------------------------------------------------------------
// Benchmark

interface Drain {
  /** Seconds from the end of the write until the WAL held at most one segment; undefined if it did not within the limit. */
  seconds: number | undefined;
  segmentsAfterWrite: number;
  segmentsLeft: number;
}

async function walSegments(walDir: string): Promise<number> {
  try {
    return (await readdir(walDir)).filter((n) => WAL_SEGMENT_RE.test(n)).length;
  } catch {
    return 0;
  }
}

/** Polls walDir until it holds at most one segment file, for at most DRAIN_LIMIT_MS from writeEnd. */
async function waitWalDrain(walDir: string, writeEnd: number, gone: () => string | undefined): Promise<Drain> {
  const segmentsAfterWrite = await walSegments(walDir);
  let left = segmentsAfterWrite;
  for (;;) {
    const elapsed = performance.now() - writeEnd;
    if (left <= 1) return { seconds: elapsed / 1000, segmentsAfterWrite, segmentsLeft: left };
    if (elapsed > DRAIN_LIMIT_MS) return { seconds: undefined, segmentsAfterWrite, segmentsLeft: left };
    const why = gone();
    if (why) throw new Error(`while waiting for the WAL to drain: ${why}`);
    await new Promise((r) => setTimeout(r, 100));
    left = await walSegments(walDir);
  }
}

interface LogSummary {
  warnings: number;
  errors: number;
  /** Distinct messages at warn level or above (and lines that are not JSON), with counts. */
  messages: { level: string; msg: string; count: number; first: string }[];
}

/** Warnings and errors in a DittoFS log (pino JSON lines; anything else counts as an error). */
function summarizeLog(output: string): LogSummary {
  const byKey = new Map<string, { level: string; msg: string; count: number; first: string }>();
  let warnings = 0;
  let errors = 0;
  for (const raw of output.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    let level: number;
    let msg: string;
    try {
      const rec = JSON.parse(line) as { level?: unknown; msg?: unknown };
      level = typeof rec.level === 'number' ? rec.level : 0;
      msg = typeof rec.msg === 'string' ? rec.msg : '';
    } catch {
      level = 50;
      msg = line;
    }
    if (level < 40) continue;
    if (level >= 50) errors++;
    else warnings++;
    const name = level >= 60 ? 'fatal' : level >= 50 ? 'error' : 'warn';
    const key = `${name}\0${msg}`;
    const m = byKey.get(key);
    if (m) m.count++;
    else byKey.set(key, { level: name, msg, count: 1, first: line.length > 600 ? `${line.slice(0, 600)}...` : line });
  }
  return { warnings, errors, messages: [...byKey.values()] };
}

interface Result {
  config: ConfigName;
  round: number;
  bytes: number;
  writeSeconds: number;
  readSeconds: number;
  writeMiBps: number;
  readMiBps: number;
  /** VmHWM of the server process once it is up, before any load, KiB. */
  peakRssAtStartKiB: number | undefined;
  /** VmHWM of the server process right after the write, KiB. */
  peakRssAfterWriteKiB: number | undefined;
  /** VmHWM once the WAL drained (DittoFS), KiB. */
  peakRssAfterDrainKiB?: number;
  /** VmHWM at the end (after the small-file phases), KiB. */
  peakRssEndKiB: number | undefined;
  /** DittoFS only. */
  walDrain?: Drain;
  /** postgres-s3 only: objects under the round's prefix once the WAL drained. */
  s3ObjectsAfterDrain?: number;
  smallFiles: SmallFilesResult;
  /**
   * postgres-s3: CPU seconds of the peers on this machine (the S3 server; PostgreSQL's postmaster and
   * backends) over the same phases as the server's: the write (until the WAL drained), the read and
   * the small files.
   */
  peers?: { write: PeerCpu; read: PeerCpu; small: PeerCpu };
  /** Server CPU seconds of the write (DittoFS: until the WAL drained), the read and the small files. */
  writeCpuSeconds: number | undefined;
  readCpuSeconds: number | undefined;
  smallCpuSeconds: number | undefined;
  /** The parallel rows (--clients > 0). */
  parallel?: ParallelResult;
  /** DittoFS only. */
  serverLog?: LogSummary;
  /** --dir-sizes: REMOVE and CREATE as one directory grows. */
  dirScale?: DirScaleStep[];
  /** DittoFS only (--restart-files > 0): a clean stop and a start on the round's data, timed. */
  restart?: RestartResult;
}

/** CPU seconds of the S3 server and of PostgreSQL over one phase (undefined: not running, or external). */
interface PeerCpu {
  s3?: number;
  pg?: number;
}

/** Starts counting the CPU of the round's peers (postgres-s3); the returned function stops and reads it. */
function watchPeers(backends: Backends | undefined): () => PeerCpu {
  const s3Pid = backends?.s3?.pid();
  const pgPid = backends?.pg?.pid();
  const s3 = s3Pid === undefined ? undefined : new TreeCpuWatch(s3Pid);
  const pg = pgPid === undefined ? undefined : new TreeCpuWatch(pgPid);
  return () => ({ s3: s3?.stop()?.cpuSeconds, pg: pg?.stop()?.cpuSeconds });
}

const fmtPeers = (s3Name: string, p: PeerCpu): string => `${s3Name} ${fmt(p.s3, 2)} s, PostgreSQL ${fmt(p.pg, 2)} s`;

/** What the parallel rows move: one file per client, sent by every client. */
interface ParallelInput {
  clients: number;
  file: string;
  sha: string;
  bytes: number;
  /** Small files per client. */
  files: number;
}

interface ParallelResult {
  clients: number;
  /** Bytes of all clients together. */
  bytes: number;
  writeSeconds: number;
  readSeconds: number;
  writeMiBps: number;
  readMiBps: number;
  writeCpuSeconds: number | undefined;
  readCpuSeconds: number | undefined;
  /** create + stat + remove operations of all clients. */
  smallOps: number;
  /** Sum over the clients of each one's operations per second over its timed phases. */
  smallOpsPerSec: number;
  smallSeconds: number;
  smallCpuSeconds: number | undefined;
}

async function benchServer(
  config: ConfigName,
  round: number,
  workDir: string,
  backends: Backends | undefined,
  srcFile: string,
  srcSha: string,
  bytes: number,
  files: number,
  par: ParallelInput | undefined,
  extra: { dirSizes: number[] | undefined; restartFiles: number },
): Promise<Result> {
  const label = LABEL[config];
  console.log(`\n== ${label} ==`);
  const server = isDitto(config) ? await startDittoServer(config, round, workDir, backends) : await startGanesha(workDir);
  try {
    const peakRssAtStartKiB = await vmHwmKiB(server.pid);
    console.log(
      `${label}: NFS on 127.0.0.1:${server.nfsPort}, MOUNT on :${server.mountPort}, pid ${server.pid ?? '?'}, ` +
        `peak RSS after start-up ${fmtMiB(peakRssAtStartKiB)} MiB`,
    );
    const url = `nfs://127.0.0.1${EXPORT_PATH}/bench.bin?nfsport=${server.nfsPort}&mountport=${server.mountPort}`;
    // At least 2 MiB/s, else something is wrong.
    const cpTimeout = 60_000 + (bytes / MiB) * 500;

    const peersOnDitto = isDitto(config) && config === 'postgres-s3' ? backends : undefined;
    const writePeers = watchPeers(peersOnDitto);
    const cpuAtStart = cpuSeconds(server.pid);
    const mainCpuAtStart = mainThreadCpuSeconds(server.pid);
    const gcAtStart = server.metricsPort === undefined ? undefined : await readGcTimes(server.metricsPort);
    const writtenAtStart = writtenBytes(server.pid);
    const w = await run('nfs-cp', [srcFile, url], cpTimeout, server.gone);
    const writeEnd = performance.now();
    const peakRssAfterWriteKiB = await vmHwmKiB(server.pid);
    const writeMiBps = bytes / MiB / w.seconds;
    console.log(
      `${label}: seq write ${bytes / MiB} MiB in ${w.seconds.toFixed(3)} s = ${writeMiBps.toFixed(1)} MiB/s` +
        `, peak RSS ${fmtMiB(peakRssAfterWriteKiB)} MiB`,
    );

    let walDrain: Drain | undefined;
    let peakRssAfterDrainKiB: number | undefined;
    let s3ObjectsAfterDrain: number | undefined;
    let peersOfWrite: PeerCpu | undefined;
    if (server.dataDir !== undefined) {
      walDrain = await waitWalDrain(path.join(server.dataDir, 'wal'), writeEnd, server.gone);
      // Before the bench's own listing of the round's objects below, which the S3 server serves too.
      peersOfWrite = writePeers();
      peakRssAfterDrainKiB = await vmHwmKiB(server.pid);
      const where =
        walDrain.seconds === undefined
          ? `NOT drained after ${DRAIN_LIMIT_MS / 1000} s: ${walDrain.segmentsLeft} segment files left`
          : `drained (<= 1 segment file) ${walDrain.seconds.toFixed(1)} s after the write`;
      console.log(`${label}: WAL had ${walDrain.segmentsAfterWrite} segment files at the end of the write; ${where}`);
      if (backends && server.place?.prefix !== undefined) {
        s3ObjectsAfterDrain = (await roundKeys(backends, server.place))?.length;
        console.log(
          `${label}: ${s3ObjectsAfterDrain ?? '?'} objects under the round's S3 prefix; peak RSS ${fmtMiB(peakRssAfterDrainKiB)} MiB`,
        );
      }
    }

    const writeCpuSeconds = cpuSince(server.pid, cpuAtStart);
    peersOfWrite ??= writePeers();
    const mainCpu = mainThreadCpuSeconds(server.pid);
    // DittoFS only (its metrics port): ganesha's work is on threads of its own, not its main thread.
    if (writeCpuSeconds !== undefined && mainCpu !== undefined && mainCpuAtStart !== undefined && server.metricsPort !== undefined) {
      const perGiB = (sec: number) => ((sec / bytes) * 1024 * MiB).toFixed(2);
      const gcs = gcAtStart === undefined ? '' : formatGcTimes(await readGcTimes(server.metricsPort), gcAtStart);
      const gc = gcAtStart === undefined ? '' : `; garbage collections (pauses of the main thread): ${gcs || 'none'}`;
      console.log(
        `${label}: server CPU of the write (WAL drain included), s/GiB: main thread ${perGiB(mainCpu - mainCpuAtStart)}, ` +
          `other threads (thread pool, workers, V8's GC and compilers) ${perGiB(writeCpuSeconds - (mainCpu - mainCpuAtStart))}${gc}`,
      );
    }
    const writtenNow = writtenBytes(server.pid);
    if (writtenNow !== undefined && writtenAtStart !== undefined)
      console.log(
        `${label}: the server wrote ${((writtenNow - writtenAtStart) / bytes).toFixed(2)} bytes per byte written (write calls: files and sockets; WAL drain included)`,
      );
    const back = path.join(workDir, `readback-${config}.bin`);
    const removeBack = defer(`remove ${back}`, () => rm(back, { force: true }));
    let r: CmdResult;
    let readCpuSeconds: number | undefined;
    let peersOfRead: PeerCpu = {};
    try {
      // The scrape first: its CPU is not the read's.
      const cachesAtRead = server.metricsPort === undefined ? undefined : await readCacheCounts(server.metricsPort);
      const readPeers = watchPeers(peersOnDitto);
      const cpuAtRead = cpuSeconds(server.pid);
      r = await run('nfs-cp', [url, back], cpTimeout, server.gone);
      readCpuSeconds = cpuSince(server.pid, cpuAtRead);
      peersOfRead = readPeers();
      if (cachesAtRead !== undefined && server.metricsPort !== undefined)
        console.log(
          `${label}: the read's block lookups (about one per READ): ${formatCacheCounts(await readCacheCounts(server.metricsPort), cachesAtRead)}`,
        );
      const got = (await stat(back)).size;
      if (got !== bytes) throw new BenchError(`${label}: READ BACK ${got} bytes, wrote ${bytes}: DATA MISMATCH`);
      const sha = await sha256File(back);
      if (sha !== srcSha) throw new BenchError(`${label}: SHA-256 MISMATCH after write+read: wrote ${srcSha}, read ${sha}`);
    } finally {
      await removeBack();
    }
    const readMiBps = bytes / MiB / r.seconds;
    console.log(
      `${label}: seq read  ${bytes / MiB} MiB in ${r.seconds.toFixed(3)} s = ${readMiBps.toFixed(1)} MiB/s (sha256 ok); ` +
        `server CPU ${fmt(writeCpuSeconds, 2)} s for the write, ${fmt(readCpuSeconds, 2)} s for the read`,
    );

    const smallPeers = watchPeers(peersOnDitto);
    const cpuAtSmall = cpuSeconds(server.pid);
    const smallFiles = await runSmallFiles({
      nfsPort: server.nfsPort,
      mountPort: server.mountPort,
      exportPath: EXPORT_PATH,
      files,
      timeoutMs: 60_000 + files * 40, // at least 75 files/s per phase overall
      callTimeoutMs: 30_000,
      log: (m) => console.log(`${label}: ${m}`),
    });
    const smallCpuSeconds = cpuSince(server.pid, cpuAtSmall);
    const peersOfSmall = smallPeers();
    console.log(`${label}: server CPU ${fmt(smallCpuSeconds, 2)} s for the small files`);
    const peers = peersOnDitto ? { write: peersOfWrite, read: peersOfRead, small: peersOfSmall } : undefined;
    if (peers) {
      const s3n = peersOnDitto?.s3Short ?? 'S3';
      console.log(
        `${label}: CPU of the peers on this machine: write ${fmtPeers(s3n, peers.write)}; read ${fmtPeers(s3n, peers.read)}; ` +
          `small files ${fmtPeers(s3n, peers.small)}`,
      );
    }
    if (server.metricsPort !== undefined)
      console.log(
        `${label}: mean time in the server per call so far (µs, write and read included): ${formatCallTimes(await readCallTimes(server.metricsPort))}`,
      );
    const parallel = par ? await benchParallel(server, label, workDir, par) : undefined;
    const dirScale =
      extra.dirSizes === undefined
        ? undefined
        : await runDirScale({
            nfsPort: server.nfsPort,
            mountPort: server.mountPort,
            exportPath: EXPORT_PATH,
            sizes: extra.dirSizes,
            ...(server.pid === undefined ? {} : { pid: server.pid }),
            log: (m) => console.log(`${label}: ${m}`),
          });
    const peakRssEndKiB = await vmHwmKiB(server.pid);
    let restart: RestartResult | undefined;
    if (server.restart && extra.restartFiles > 0) {
      const target = { nfsPort: server.nfsPort, mountPort: server.mountPort, exportPath: EXPORT_PATH };
      const fillSeconds = await fillDirectory(target, extra.restartFiles, 60_000 + extra.restartFiles * 40);
      const { stopSeconds, startSeconds, phases } = await server.restart();
      await checkFilled(target, extra.restartFiles);
      restart = { files: extra.restartFiles, fillSeconds, stopSeconds, startSeconds };
      console.log(
        `${label}: restart: ${extra.restartFiles} more files left on the share (${fillSeconds.toFixed(1)} s), clean stop in ` +
          `${stopSeconds.toFixed(2)} s, start to ready (NFS and API listening) in ${startSeconds.toFixed(2)} s; files there after it`,
      );
      console.log(`${label}: restart: the server's start-up phases: ${phases.join('; ') || '?'}`);
    }
    let serverLog: LogSummary | undefined;
    if (server.output) {
      serverLog = summarizeLog(server.output());
      if (serverLog.warnings + serverLog.errors > 0) {
        console.log(`${label}: the server logged ${serverLog.errors} errors and ${serverLog.warnings} warnings:`);
        for (const m of serverLog.messages.slice(0, 10)) console.log(`  ${m.count} x ${m.level}: ${m.first}`);
      }
    }
    return {
      config,
      round,
      bytes,
      writeSeconds: w.seconds,
      readSeconds: r.seconds,
      writeMiBps,
      readMiBps,
      peakRssAtStartKiB,
      peakRssAfterWriteKiB,
      peakRssAfterDrainKiB,
      peakRssEndKiB,
      walDrain,
      s3ObjectsAfterDrain,
      smallFiles,
      ...(peers ? { peers } : {}),
      writeCpuSeconds,
      readCpuSeconds,
      smallCpuSeconds,
      parallel,
      serverLog,
      dirScale,
      restart,
    };
  } catch (e) {
    const tail = await server.logTail().catch(() => '');
    if (tail && e instanceof Error) e.message += `\n--- last lines of the ${label} server log ---\n${tail}`;
    throw e;
  } finally {
    await server.stop();
  }
}

/** Awaits every promise; rejects with the first failure once all have settled (nothing left running). */
async function settleAll<T>(ps: Promise<T>[]): Promise<T[]> {
  const rs = await Promise.allSettled(ps);
  const failed = rs.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return rs.map((r) => (r as PromiseFulfilledResult<T>).value);
}

/** The parallel rows: par.clients nfs-cp writes at once, then reads, then small-file generators. */
async function benchParallel(server: Server, label: string, workDir: string, par: ParallelInput): Promise<ParallelResult> {
  const n = par.clients;
  const total = par.bytes * n;
  const url = (i: number) => `nfs://127.0.0.1${EXPORT_PATH}/par-${i}.bin?nfsport=${server.nfsPort}&mountport=${server.mountPort}`;
  const ids = Array.from({ length: n }, (_, i) => i);
  // Every client at least 2 MiB/s of its share, else something is wrong.
  const cpTimeout = 60_000 + (total / MiB) * 500;

  const cpuAtWrite = cpuSeconds(server.pid);
  const t0 = performance.now();
  await settleAll(ids.map((i) => run('nfs-cp', [par.file, url(i)], cpTimeout, server.gone)));
  const writeEnd = performance.now();
  const writeSeconds = (writeEnd - t0) / 1000;
  if (server.dataDir !== undefined) await waitWalDrain(path.join(server.dataDir, 'wal'), writeEnd, server.gone);
  const writeCpuSeconds = cpuSince(server.pid, cpuAtWrite);

  const backs = ids.map((i) => path.join(workDir, `par-back-${server.config}-${i}.bin`));
  const removeBacks = defer(`remove ${n} parallel read-back files`, async () => {
    await Promise.all(backs.map((b) => rm(b, { force: true })));
  });
  let readSeconds: number;
  let readCpuSeconds: number | undefined;
  try {
    const cachesAtRead = server.metricsPort === undefined ? undefined : await readCacheCounts(server.metricsPort);
    const cpuAtRead = cpuSeconds(server.pid);
    const t1 = performance.now();
    await settleAll(ids.map((i) => run('nfs-cp', [url(i), backs[i]!], cpTimeout, server.gone)));
    readSeconds = (performance.now() - t1) / 1000;
    readCpuSeconds = cpuSince(server.pid, cpuAtRead);
    if (cachesAtRead !== undefined && server.metricsPort !== undefined)
      console.log(
        `${label}: ${n} clients: the read's block lookups: ${formatCacheCounts(await readCacheCounts(server.metricsPort), cachesAtRead)}`,
      );
    for (const b of backs) {
      const got = (await stat(b)).size;
      if (got !== par.bytes) throw new BenchError(`${label}: parallel read of ${b}: ${got} bytes, wrote ${par.bytes}: DATA MISMATCH`);
      if ((await sha256File(b)) !== par.sha) throw new BenchError(`${label}: parallel read of ${b}: SHA-256 MISMATCH`);
    }
  } finally {
    await removeBacks();
  }
  const writeMiBps = total / MiB / writeSeconds;
  const readMiBps = total / MiB / readSeconds;
  console.log(
    `${label}: ${n} clients: write ${n} x ${par.bytes / MiB} MiB in ${writeSeconds.toFixed(3)} s = ${writeMiBps.toFixed(1)} MiB/s, ` +
      `read in ${readSeconds.toFixed(3)} s = ${readMiBps.toFixed(1)} MiB/s (sha256 ok); ` +
      `server CPU ${fmt(writeCpuSeconds, 2)} s write (drain included), ${fmt(readCpuSeconds, 2)} s read`,
  );

  const cpuAtSmall = cpuSeconds(server.pid);
  const t2 = performance.now();
  const smalls = await settleAll(
    ids.map((i) =>
      runSmallFiles({
        nfsPort: server.nfsPort,
        mountPort: server.mountPort,
        exportPath: EXPORT_PATH,
        files: par.files,
        dirName: `bench-par-${i}`,
        timeoutMs: 60_000 + par.files * n * 40,
        callTimeoutMs: 30_000,
      }),
    ),
  );
  const smallSeconds = (performance.now() - t2) / 1000;
  const smallCpuSeconds = cpuSince(server.pid, cpuAtSmall);
  const smallOpsPerSec = smalls.reduce(
    (sum, r) => sum + (r.create.ops + r.stat.ops + r.remove.ops) / (r.create.seconds + r.stat.seconds + r.remove.seconds),
    0,
  );
  const smallOps = 3 * par.files * n;
  console.log(
    `${label}: ${n} clients: ${par.files} files each, create + stat + remove ${smallOpsPerSec.toFixed(0)} ops/s together ` +
      `(${smallSeconds.toFixed(1)} s wall); server CPU ${fmt(smallCpuSeconds, 2)} s`,
  );
  return {
    clients: n,
    bytes: total,
    writeSeconds,
    readSeconds,
    writeMiBps,
    readMiBps,
    writeCpuSeconds,
    readCpuSeconds,
    smallOps,
    smallOpsPerSec,
    smallSeconds,
    smallCpuSeconds,
  };
}

/** The SMB rows against one server (smbd, or a fresh DittoFS embedded-fs): smb.ts does the work. */
async function benchSmbServer(
  target: SmbTarget,
  round: number,
  workDir: string,
  srcFile: string,
  srcSha: string,
  bytes: number,
  smallDir: string,
  files: number,
  mode: SmbMode,
): Promise<SmbResult> {
  const label = SMB_LABEL[target];
  console.log(`\n== ${label} ==`);
  let server: SmbServer;
  if (target === 'smbd') {
    server = await startSmbd(path.join(workDir, `smbd-r${round}`), run, defer, mode);
  } else {
    const d = await startDittoServer('embedded-fs', round, workDir, undefined);
    server = { target, port: d.smbPort!, pid: d.pid, gone: d.gone, logTail: d.logTail, stop: d.stop };
    try {
      await addDittoSmbUser(d.apiPort!);
    } catch (e) {
      await d.stop();
      throw e;
    }
  }
  try {
    console.log(`${label}: SMB on 127.0.0.1:${server.port}, pid ${server.pid ?? '?'}`);
    return await benchSmb({
      server,
      mode,
      round,
      workDir,
      srcFile,
      srcSha,
      bytes,
      smallDir,
      files,
      run,
      sha256File,
      log: (m) => console.log(`${label}: ${m}`),
    });
  } catch (e) {
    const tail = await server.logTail().catch(() => '');
    if (tail && e instanceof Error) e.message += `\n--- last lines of the ${label} server log ---\n${tail}`;
    throw e;
  } finally {
    await server.stop();
  }
}

const SMB_LABEL: Record<SmbTarget, string> = { smbd: 'smbd', dittofs: 'DittoFS embedded-fs SMB' };

// ---------------------------------------------------------------------------------------------
// Report

function fmt(n: number | undefined, digits: number): string {
  return n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(digits);
}

function fmtMiB(kib: number | undefined): string {
  return kib === undefined ? '?' : (kib / 1024).toFixed(1);
}

function median(xs: number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const a = [...xs].sort((x, y) => x - y);
  const mid = a.length >> 1;
  return a.length % 2 ? a[mid] : (a[mid - 1]! + a[mid]!) / 2;
}

const defined = <T>(xs: (T | undefined)[]): T[] => xs.filter((x): x is T => x !== undefined);

interface Summary {
  writeMiBps?: number;
  readMiBps?: number;
  create?: number;
  stat?: number;
  remove?: number;
  nullPerSec?: number;
  /** The highest VmHWM after the write over the rounds, MiB. */
  peakRssMiB?: number;
  drainSeconds?: number;
  /** Rounds whose WAL did not drain within the limit. */
  drainTimeouts: number;
  /** Highest VmHWM once started, before any load, MiB. */
  peakRssStartMiB?: number;
  /** Highest VmHWM at the end of any round (after the small files), MiB. */
  peakRssEndMiB?: number;
  logWarnings: number;
  logErrors: number;
  /** Server CPU seconds per GiB written (drain included) / read, per 1,000 small-file operations. */
  writeCpuPerGiB?: number;
  readCpuPerGiB?: number;
  smallCpuPerKop?: number;
  /** postgres-s3: the peers' CPU over the same phases, per GiB / per 1,000 operations. */
  peerS3WriteCpuPerGiB?: number;
  peerPgWriteCpuPerGiB?: number;
  peerS3ReadCpuPerGiB?: number;
  peerPgSmallCpuPerKop?: number;
  /** The parallel rows. */
  parWriteMiBps?: number;
  parReadMiBps?: number;
  parSmallOps?: number;
  parWriteCpuPerGiB?: number;
  parReadCpuPerGiB?: number;
  parSmallCpuPerKop?: number;
  /** Start to ready on the round's data (DittoFS), s. */
  restartSeconds?: number;
  stopSeconds?: number;
  /** --dir-sizes, per size: REMOVE ms/op and server CPU ms/op, creates/s while growing to it. */
  dirScale: { size: number; removeMs?: number; removeCpuMs?: number; createPerSec?: number }[];
}

const GiB = 1024 * MiB;
/** a / b, or undefined when either is missing. */
const per = (a: number | undefined, b: number): number | undefined => (a === undefined ? undefined : a / b);

function summarize(rs: Result[]): Summary {
  const max = (xs: number[]) => (xs.length > 0 ? Math.max(...xs) : undefined);
  const med = (f: (r: Result) => number | undefined) => median(defined(rs.map(f)));
  const smallOps = (r: Result) => r.smallFiles.create.ops + r.smallFiles.stat.ops + r.smallFiles.remove.ops;
  return {
    writeCpuPerGiB: med((r) => per(r.writeCpuSeconds, r.bytes / GiB)),
    readCpuPerGiB: med((r) => per(r.readCpuSeconds, r.bytes / GiB)),
    smallCpuPerKop: med((r) => per(r.smallCpuSeconds, smallOps(r) / 1000)),
    peerS3WriteCpuPerGiB: med((r) => per(r.peers?.write.s3, r.bytes / GiB)),
    peerPgWriteCpuPerGiB: med((r) => per(r.peers?.write.pg, r.bytes / GiB)),
    peerS3ReadCpuPerGiB: med((r) => per(r.peers?.read.s3, r.bytes / GiB)),
    peerPgSmallCpuPerKop: med((r) => per(r.peers?.small.pg, smallOps(r) / 1000)),
    parWriteMiBps: med((r) => r.parallel?.writeMiBps),
    parReadMiBps: med((r) => r.parallel?.readMiBps),
    parSmallOps: med((r) => r.parallel?.smallOpsPerSec),
    parWriteCpuPerGiB: med((r) => r.parallel && per(r.parallel.writeCpuSeconds, r.parallel.bytes / GiB)),
    parReadCpuPerGiB: med((r) => r.parallel && per(r.parallel.readCpuSeconds, r.parallel.bytes / GiB)),
    parSmallCpuPerKop: med((r) => r.parallel && per(r.parallel.smallCpuSeconds, r.parallel.smallOps / 1000)),
    writeMiBps: median(rs.map((r) => r.writeMiBps)),
    readMiBps: median(rs.map((r) => r.readMiBps)),
    create: median(rs.map((r) => r.smallFiles.create.opsPerSec)),
    stat: median(rs.map((r) => r.smallFiles.stat.opsPerSec)),
    remove: median(rs.map((r) => r.smallFiles.remove.opsPerSec)),
    nullPerSec: median(rs.map((r) => r.smallFiles.nullPerSec)),
    peakRssMiB: max(defined(rs.map((r) => r.peakRssAfterWriteKiB)).map((k) => k / 1024)),
    drainSeconds: median(defined(rs.map((r) => r.walDrain?.seconds))),
    drainTimeouts: rs.filter((r) => r.walDrain !== undefined && r.walDrain.seconds === undefined).length,
    peakRssStartMiB: max(defined(rs.map((r) => r.peakRssAtStartKiB)).map((k) => k / 1024)),
    peakRssEndMiB: max(defined(rs.map((r) => r.peakRssEndKiB)).map((k) => k / 1024)),
    logWarnings: rs.reduce((n, r) => n + (r.serverLog?.warnings ?? 0), 0),
    logErrors: rs.reduce((n, r) => n + (r.serverLog?.errors ?? 0), 0),
    restartSeconds: med((r) => r.restart?.startSeconds),
    stopSeconds: med((r) => r.restart?.stopSeconds),
    dirScale: (rs[0]?.dirScale ?? []).map((step, k) => ({
      size: step.size,
      removeMs: med((r) => r.dirScale?.[k]?.removeMsPerOp),
      removeCpuMs: med((r) => r.dirScale?.[k]?.removeCpuMsPerOp),
      createPerSec: med((r) => r.dirScale?.[k]?.createPerSec),
    })),
  };
}

function printRows(header: string[], body: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('   ');
  console.log(line(header));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const row of body) console.log(line(row));
}

function printTable(
  summaries: Map<ConfigName, Summary>,
  args: Args,
  meta: string[],
  pgCommits: number | undefined,
  /** Short name of postgres-s3's S3 server ("versitygw", "s3rver"), for the peers' table. */
  s3Short: string,
): void {
  console.log('\n' + meta.join('\n'));
  console.log(
    `Workload: ${args.sizeMib} MiB file via nfs-cp (write, then read back + sha256 check); ` +
      `${args.files} files create / stat / remove, one request outstanding.`,
  );
  console.log('MiB/s = bytes / 2^20 / seconds (nfs-cp wall time). stat = LOOKUP + GETATTR. Higher is better, except RSS and drain.');
  console.log('peak RSS = VmHWM of the server process right after the write. drain s = seconds from the end of the write until');
  console.log(
    `the WAL (<data dir>/wal) held at most one segment file (the block store upload lag; ">${DRAIN_LIMIT_MS / 1000}" = not within the limit).`,
  );
  console.log('null/s = NULL round trips/s, the ceiling of the one-request-at-a-time client (stat needs 2 RPCs).');
  if (args.rounds > 1) console.log(`Each figure is the median of ${args.rounds} rounds (peak RSS: the highest).`);
  console.log('');

  type Col = [string, (s: Summary) => number | undefined, number];
  const cols: Col[] = [
    ['write MiB/s', (s) => s.writeMiBps, 1],
    ['read MiB/s', (s) => s.readMiBps, 1],
    ['create/s', (s) => s.create, 0],
    ['stat/s', (s) => s.stat, 0],
    ['remove/s', (s) => s.remove, 0],
    ['peak RSS MiB', (s) => s.peakRssMiB, 1],
  ];
  const configs = args.configs.filter((c) => summaries.has(c));
  const body = configs.map((c) => {
    const s = summaries.get(c)!;
    const drain = !isDitto(c)
      ? '-'
      : s.drainTimeouts > 0 && s.drainSeconds === undefined
        ? `>${DRAIN_LIMIT_MS / 1000}`
        : fmt(s.drainSeconds, 1);
    return [c, ...cols.map(([, get, digits]) => fmt(get(s), digits)), drain, fmt(s.nullPerSec, 0)];
  });
  printRows(['config', ...cols.map(([name]) => name), 'drain s', 'null/s'], body);

  const g = summaries.get('ganesha');
  const dittos = configs.filter(isDitto);
  if (g && dittos.length > 0) {
    console.log('\nratio to ganesha');
    printRows(
      ['config', ...cols.map(([name]) => name)],
      dittos.map((c) => {
        const s = summaries.get(c)!;
        return [
          c,
          ...cols.map(([, get]) => {
            const v = get(s);
            const gv = get(g);
            return v !== undefined && gv !== undefined && gv > 0 ? `${v / gv >= 10 ? (v / gv).toFixed(1) : (v / gv).toFixed(2)}x` : '-';
          }),
        ];
      }),
    );
  }

  const ratioCell = (v: number | undefined, gv: number | undefined) =>
    v !== undefined && gv !== undefined && gv > 0 ? `${v / gv >= 10 ? (v / gv).toFixed(1) : (v / gv).toFixed(2)}x` : '-';
  /** A table of `cols` for every configuration, then (with ganesha in the run) their ratios to it. */
  const section = (title: string, sectionCols: Col[], ratioTitle: string) => {
    if (!configs.some((c) => sectionCols.some(([, get]) => get(summaries.get(c)!) !== undefined))) return;
    console.log(`\n${title}`);
    printRows(
      ['config', ...sectionCols.map(([name]) => name)],
      configs.map((c) => [c, ...sectionCols.map(([, get, digits]) => fmt(get(summaries.get(c)!), digits))]),
    );
    if (!g || dittos.length === 0) return;
    console.log(`\n${ratioTitle}`);
    printRows(
      ['config', ...sectionCols.map(([name]) => name)],
      dittos.map((c) => [c, ...sectionCols.map(([, get]) => ratioCell(get(summaries.get(c)!), get(g)))]),
    );
  };
  section(
    `${args.clients} clients at once (aggregate; each client ${Math.max(1, Math.floor(args.sizeMib / Math.max(1, args.clients)))} MiB and ` +
      `${Math.max(1, Math.floor(args.files / Math.max(1, args.clients)))} files; ops/s = create + stat + remove, summed over the clients)`,
    [
      ['write MiB/s', (s) => s.parWriteMiBps, 1],
      ['read MiB/s', (s) => s.parReadMiBps, 1],
      ['small ops/s', (s) => s.parSmallOps, 0],
    ],
    'ratio to ganesha (higher is better)',
  );
  section(
    'server CPU seconds (utime + stime of the server process, all threads; DittoFS writes include the WAL drain)',
    [
      ['write s/GiB', (s) => s.writeCpuPerGiB, 2],
      ['read s/GiB', (s) => s.readCpuPerGiB, 2],
      ['small s/1k ops', (s) => s.smallCpuPerKop, 3],
      // The parallel rows' columns only when there were parallel rows (--clients 0: none).
      ...(args.clients > 0
        ? ([
            [`${args.clients}x write s/GiB`, (s) => s.parWriteCpuPerGiB, 2],
            [`${args.clients}x read s/GiB`, (s) => s.parReadCpuPerGiB, 2],
            [`${args.clients}x small s/1k ops`, (s) => s.parSmallCpuPerKop, 3],
          ] satisfies Col[])
        : []),
    ],
    'CPU ratio to ganesha (lower is better)',
  );

  const withPeers = configs.filter(
    (c) => summaries.get(c)!.peerS3WriteCpuPerGiB !== undefined || summaries.get(c)!.peerPgSmallCpuPerKop !== undefined,
  );
  if (withPeers.length > 0) {
    // Beside the server's own CPU: the machine's cores the server shared with them (a real S3
    // runs elsewhere; here it runs on the same cores).
    console.log(`\nCPU seconds of the peers on this machine over the same phases (${s3Short}; PostgreSQL: postmaster and backends)`);
    printRows(
      ['config', `${s3Short} write s/GiB`, 'PostgreSQL write s/GiB', `${s3Short} read s/GiB`, 'PostgreSQL small s/1k ops'],
      withPeers.map((c) => {
        const s = summaries.get(c)!;
        return [
          c,
          fmt(s.peerS3WriteCpuPerGiB, 2),
          fmt(s.peerPgWriteCpuPerGiB, 2),
          fmt(s.peerS3ReadCpuPerGiB, 2),
          fmt(s.peerPgSmallCpuPerKop, 3),
        ];
      }),
    );
  }

  if (args.dirSizes !== undefined) {
    const sizes = args.dirSizes;
    const at = (s: Summary, size: number) => s.dirScale.find((d) => d.size === size);
    console.log(
      `\none directory growing (dirscale.ts): REMOVE ms/op (server CPU ms/op) of a sample spread over the directory at each size; ` +
        `creates/s while it grew to that size`,
    );
    printRows(
      ['config', ...sizes.map((n) => `rm ms @${n}`), ...sizes.map((n) => `create/s to ${n}`)],
      configs.map((c) => {
        const s = summaries.get(c)!;
        return [
          c,
          ...sizes.map((n) => `${fmt(at(s, n)?.removeMs, 3)} (${fmt(at(s, n)?.removeCpuMs, 3)})`),
          ...sizes.map((n) => fmt(at(s, n)?.createPerSec, 0)),
        ];
      }),
    );
  }
  const restarted = dittos.filter((c) => summaries.get(c)!.restartSeconds !== undefined);
  if (restarted.length > 0) {
    console.log(
      `\nrestart on the round's data (${args.sizeMib} MiB file${args.clients > 0 ? ', the parallel files' : ''}, ${args.restartFiles} more files): ` +
        `clean stop (SIGTERM to exit), then start to ready (NFS and API listening), s`,
    );
    printRows(
      ['config', 'stop s', 'start to ready s'],
      restarted.map((c) => [c, fmt(summaries.get(c)!.stopSeconds, 2), fmt(summaries.get(c)!.restartSeconds, 2)]),
    );
  }

  if (dittos.length > 0) {
    console.log('\nTargets (printed, not asserted):');
    const mark = (ok: boolean | undefined) => (ok === undefined ? '?' : ok ? 'ok' : 'MISSED');
    const ratioLine = (what: string, get: (s: Summary) => number | undefined, min: number) => {
      const parts = dittos.map((c) => {
        const v = get(summaries.get(c)!);
        const gv = g ? get(g) : undefined;
        const ratio = v !== undefined && gv !== undefined && gv > 0 ? v / gv : undefined;
        return `${c} ${ratio === undefined ? '- (no ganesha figure)' : `${ratio.toFixed(2)}x`} ${mark(ratio === undefined ? undefined : ratio >= min)}`;
      });
      console.log(`  ${what} >= ${min}x ganesha: ${parts.join('; ')}`);
    };
    ratioLine('write', (s) => s.writeMiBps, TARGETS.minWriteRatio);
    ratioLine('read ', (s) => s.readMiBps, TARGETS.minReadRatio);
    if (args.clients > 0) {
      ratioLine(`${args.clients}-client write`, (s) => s.parWriteMiBps, TARGETS.minParallelRatio);
      ratioLine(`${args.clients}-client read `, (s) => s.parReadMiBps, TARGETS.minParallelRatio);
      ratioLine(`${args.clients}-client small`, (s) => s.parSmallOps, TARGETS.minParallelRatio);
    }
    const pgs = summaries.get('postgres-s3');
    if (pgs) {
      console.log(
        `  creates >= ${TARGETS.minPostgresCreates}/s on postgres: postgres-s3 ${fmt(pgs.create, 0)}/s ${mark(pgs.create === undefined ? undefined : pgs.create >= TARGETS.minPostgresCreates)}` +
          (pgCommits === undefined ? '' : ` (PostgreSQL alone: ${fmt(pgCommits, 0)} durable commits/s, one at a time)`),
      );
    }
    if (restarted.length > 0)
      console.log(
        `  start-up to ready < ${RESTART_TARGET_SECONDS} s on existing data: ` +
          restarted
            .map((c) => {
              const v = summaries.get(c)!.restartSeconds;
              return `${c} ${fmt(v, 2)} s ${mark(v === undefined ? undefined : v < RESTART_TARGET_SECONDS)}`;
            })
            .join('; '),
      );
    console.log(
      `  peak RSS < ${TARGETS.maxPeakRssMiB} MiB: ` +
        dittos
          .map((c) => {
            const s = summaries.get(c)!;
            return `${c} ${fmt(s.peakRssMiB, 1)} MiB ${mark(s.peakRssMiB === undefined ? undefined : s.peakRssMiB < TARGETS.maxPeakRssMiB)}`;
          })
          .join('; '),
    );
    const notes = dittos
      .map((c) => [c, summaries.get(c)!] as const)
      .map(([c, s]) => `${c} ${fmt(s.peakRssStartMiB, 1)} / ${fmt(s.peakRssEndMiB, 1)} MiB`)
      .join('; ');
    console.log(`  (peak RSS right after start-up / at the end of the round, small files included: ${notes})`);
    for (const c of dittos) {
      const s = summaries.get(c)!;
      if (s.logErrors + s.logWarnings > 0)
        console.log(`  NOTE: ${c}: the server logged ${s.logErrors} errors and ${s.logWarnings} warnings (see above)`);
      if (s.drainTimeouts > 0)
        console.log(`  NOTE: ${c}: the WAL did not drain within ${DRAIN_LIMIT_MS / 1000} s in ${s.drainTimeouts} round(s)`);
    }
  }
}

/** The untar row: seconds of tar -x in the VM per server (medians), and DittoFS's ratio to ganesha. */
function printUntar(results: Map<ConfigName, VmUntarResult[]>, args: Args): void {
  console.log(
    `\nuntar through the Linux kernel NFSv3 client in the QEMU VM (hack/vm, ${accelOfVm()}): busybox tar -x of a ` +
      `${args.vmUntar}-file tree (100 files a directory, ~30 bytes each), timed in the guest. Lower is better.`,
  );
  if (args.rounds > 1) console.log(`Each figure is the median of ${args.rounds} rounds.`);
  const secs = (c: ConfigName) => median(results.get(c)?.map((r) => r.seconds) ?? []);
  const cpuPerFile = (c: ConfigName) => median(defined(results.get(c)?.map((r) => per(r.serverCpuSeconds, r.files / 1000)) ?? []));
  const rows = [...results.keys()].map((c) => {
    const s = secs(c);
    return [c, fmt(s, 2), s === undefined ? '-' : `${(args.vmUntar / s).toFixed(0)}`, fmt(cpuPerFile(c), 3)];
  });
  printRows(['config', 'tar -x s', 'files/s', 'server CPU s/1k files'], rows);
  const g = secs('ganesha');
  const d = secs('embedded-fs');
  const ratio = g !== undefined && d !== undefined && d > 0 ? g / d : undefined;
  console.log('\nTargets (printed, not asserted):');
  console.log(
    `  untar in the VM no slower than on ganesha: embedded-fs ${ratio === undefined ? '-' : `${ratio.toFixed(2)}x ganesha's speed`} ` +
      `${ratio === undefined ? '?' : ratio >= 1 ? 'ok' : 'MISSED'}`,
  );
}

/** How hack/vm/run-vm-test.sh will run QEMU (the same test it makes). */
function accelOfVm(): string {
  const env = process.env.E2E_VM_KVM;
  if (env === '1') return 'KVM';
  if (env === '0') return 'software emulation (TCG)';
  let cpuinfo = '';
  try {
    cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    // treated as no virtualization
  }
  return existsSync('/dev/kvm') && /\b(vmx|svm)\b/.test(cpuinfo) ? 'KVM' : 'software emulation (TCG)';
}

function summarizeSmb(rs: SmbResult[]): SmbSummary {
  return {
    putMiBps: median(rs.map((r) => r.putMiBps)),
    getMiBps: median(rs.map((r) => r.getMiBps)),
    smallPerSec: median(rs.map((r) => r.smallPerSec)),
    putCpuPerGiB: median(defined(rs.map((r) => r.putCpuPerGiB))),
    putWrittenPerByte: median(defined(rs.map((r) => r.putWrittenPerByte))),
    getCpuPerGiB: median(defined(rs.map((r) => r.getCpuPerGiB))),
    smallCpuPer1k: median(defined(rs.map((r) => r.smallCpuPer1k))),
  };
}

function printSmbTable(summaries: Map<SmbTarget, SmbSummary>, args: Args, meta: string): void {
  console.log(`\n${meta}`);
  console.log(
    `Workload: smbclient put of a ${args.sizeMib} MiB file, get of it back (size and sha256 checked), ` +
      `${args.smbFiles} 4 KiB files put with mput in one session.`,
  );
  console.log("MiB/s = bytes / 2^20 / seconds and files/s = files / seconds (smbclient's wall time). Higher is better.");
  if (args.rounds > 1) console.log(`Each figure is the median of ${args.rounds} rounds.`);
  console.log('');
  type Col = [string, (s: SmbSummary) => number | undefined, number];
  const cols: Col[] = [
    ['put MiB/s', (s) => s.putMiBps, 1],
    ['get MiB/s', (s) => s.getMiBps, 1],
    ['small puts/s', (s) => s.smallPerSec, 0],
  ];
  const targets = SMB_TARGETS.filter((t) => summaries.has(t));
  printRows(
    ['server', ...cols.map(([name]) => name)],
    targets.map((t) => [t, ...cols.map(([, get, digits]) => fmt(get(summaries.get(t)!), digits))]),
  );
  const ref = summaries.get('smbd');
  const d = summaries.get('dittofs');
  if (!ref || !d) return;
  const ratio = (get: (s: SmbSummary) => number | undefined) => {
    const v = get(d);
    const r = get(ref);
    return v !== undefined && r !== undefined && r > 0 ? v / r : undefined;
  };
  console.log('\nratio to smbd');
  printRows(
    ['server', ...cols.map(([name]) => name)],
    [['dittofs', ...cols.map(([, get]) => (ratio(get) === undefined ? '-' : `${ratio(get)!.toFixed(2)}x`))]],
  );
  console.log('\nserver CPU seconds (utime + stime of the server and its child processes, all threads)');
  const cpuCols: Col[] = [
    ['put s/GiB', (s) => s.putCpuPerGiB, 2],
    ['put bytes written/byte', (s) => s.putWrittenPerByte, 2],
    ['get s/GiB', (s) => s.getCpuPerGiB, 2],
    ['small s/1k puts', (s) => s.smallCpuPer1k, 3],
  ];
  printRows(
    ['server', ...cpuCols.map(([name]) => name)],
    targets.map((t) => [t, ...cpuCols.map(([, get, digits]) => fmt(get(summaries.get(t)!), digits))]),
  );
  console.log('\nTargets (printed, not asserted):');
  console.log(
    `  every SMB row >= ${SMB_MIN_RATIO}x smbd: ` +
      cols
        .map(([name, get]) => {
          const r = ratio(get);
          return `${name} ${r === undefined ? '-' : `${r.toFixed(2)}x`} ${r === undefined ? '?' : r >= SMB_MIN_RATIO ? 'ok' : 'MISSED'}`;
        })
        .join('; '),
  );
}

async function versionOfPostgres(): Promise<string> {
  const bins = await readdir('/usr/lib/postgresql').catch(() => [] as string[]);
  const newest = bins.sort((a, b) => Number(a) - Number(b)).pop();
  return newest ? versionOf(path.join('/usr/lib/postgresql', newest, 'bin', 'postgres'), ['--version'], /\(PostgreSQL\)\s*([\w.]+)/) : '?';
}

function loadAverage(): string {
  return os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
}

async function main(): Promise<void> {
  const args = parseCli();
  cpuProfDir = args.cpuProf;
  if (cpuProfDir !== undefined) {
    await prepareCpuProf(cpuProfDir);
  }
  const configs = args.configs;
  const withGanesha = configs.includes('ganesha');
  const withDitto = configs.some(isDitto) || args.smb;

  // Preflight, with actionable errors.
  if (withGanesha && process.getuid?.() !== 0)
    throw new BenchError('must run as root (ganesha FSAL VFS needs it); or leave ganesha out of --configs');
  if (configs.length > 0)
    for (const cmd of ['nfs-cp', 'nfs-ls']) if (!which(cmd)) throw new BenchError(`${cmd} not found: run hack/install-deps.sh bench`);
  if (args.smb && process.getuid?.() !== 0)
    throw new BenchError('must run as root for the smb rows (smbd switches to its user); or leave smb out of --configs');
  if (args.smb)
    for (const cmd of ['smbclient', 'smbd'])
      if (!which(cmd) && !existsSync(`/usr/sbin/${cmd}`)) throw new BenchError(`${cmd} not found: run hack/install-deps.sh bench`);
  if (withGanesha && !which('ganesha.nfsd')) throw new BenchError('ganesha.nfsd not found: run hack/install-deps.sh bench');
  if (args.vmUntar > 0) {
    try {
      checkVmPrerequisites('the untar row (--vm-untar)', { nfsCat: false, server: true });
    } catch (e) {
      throw new BenchError((e as Error).message);
    }
    if (process.getuid?.() === 0 && !which('ganesha.nfsd')) throw new BenchError('ganesha.nfsd not found: run hack/install-deps.sh bench');
  }
  if (withDitto && !existsSync(DITTOFS_CLI)) {
    throw new BenchError(
      `${path.relative(REPO_ROOT, DITTOFS_CLI)} not found: build the server first (npm run build), or pass --configs ganesha`,
    );
  }

  const bytes = args.sizeMib * MiB;
  setClockTicks(Number((await versionOf('getconf', ['CLK_TCK'], /^(\d+)/)).trim()));
  const parallelMs = args.clients > 0 ? 2 * (60_000 + args.sizeMib * 500) + DRAIN_LIMIT_MS + (60_000 + args.files * 40) : 0;
  const perServerMs = 2 * (60_000 + args.sizeMib * 500) + DRAIN_LIMIT_MS + (60_000 + args.files * 40) + 180_000 + parallelMs;
  const perSmbServerMs = 2 * (60_000 + args.sizeMib * 500) + (60_000 + args.smbFiles * 100) + 600_000;
  const budgetMs =
    120_000 +
    args.sizeMib * 50 +
    (needsBackends(configs) ? 400_000 : 0) +
    args.rounds * (configs.length * perServerMs + (args.smb ? SMB_TARGETS.length * perSmbServerMs : 0)) +
    (args.vmUntar > 0 ? args.rounds * 2 * (360_000 + args.vmUntar * 100) : 0);
  const watchdog = setTimeout(
    () => finish(124, `bench: the whole run exceeded its ${Math.round(budgetMs / 1000)} s budget; cleaning up`),
    budgetMs,
  );
  watchdog.unref();

  const loadAtStart = loadAverage();
  const [load1] = os.loadavg();
  if (load1 !== undefined && load1 > os.cpus().length * 0.5) {
    console.warn(
      `bench: warning: load average ${load1.toFixed(1)} on ${os.cpus().length} CPUs; other work on this machine will make the figures noisy`,
    );
  }

  const workDir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-bench-'));
  const removeWork = defer(`remove ${workDir}`, () => rm(workDir, { recursive: true, force: true }));
  // smbd's share lives below it: its non-root user must be able to reach it.
  if (args.smb) await chmod(workDir, 0o755);
  try {
    const srcFile = path.join(workDir, 'source.bin');
    const t0 = performance.now();
    const srcSha = await makeRandomFile(srcFile, bytes);
    console.log(
      `generated ${args.sizeMib} MiB of random data in ${((performance.now() - t0) / 1000).toFixed(1)} s (sha256 ${srcSha.slice(0, 16)}...)`,
    );

    let par: ParallelInput | undefined;
    if (args.clients > 0 && configs.length > 0) {
      const parMiB = Math.max(1, Math.floor(args.sizeMib / args.clients));
      const file = path.join(workDir, 'parallel.bin');
      const sha = await makeRandomFile(file, parMiB * MiB);
      par = { clients: args.clients, file, sha, bytes: parMiB * MiB, files: Math.max(1, Math.floor(args.files / args.clients)) };
    }

    // PostgreSQL and S3: once per run, stopped by the cleanup registry (after every server).
    let backends: Backends | undefined;
    if (needsBackends(configs)) {
      backends = await startBackends(
        newRunId(),
        (what, stop) => void defer(what, stop),
        (m) => console.log(m),
        args.s3Server,
      );
    }
    const pgCommits = backends ? await pgCommitCeiling(backends) : undefined;
    if (pgCommits !== undefined)
      console.log(
        `PostgreSQL alone: ${pgCommits.toFixed(0)} durable one-statement commits/s, one at a time (the ceiling of a create there)`,
      );

    const results = new Map<ConfigName, Result[]>(configs.map((c) => [c, []]));
    for (let round = 1; round <= args.rounds; round++) {
      if (args.rounds > 1) console.log(`\n=== round ${round} of ${args.rounds} ===`);
      for (const config of round % 2 === 1 ? configs : [...configs].reverse()) {
        results.get(config)!.push(
          await benchServer(config, round, workDir, backends, srcFile, srcSha, bytes, args.files, par, {
            dirSizes: args.dirSizes,
            restartFiles: args.restartFiles,
          }),
        );
      }
    }

    const smbResults = new Map<SmbTarget, SmbResult[]>(args.smb ? SMB_TARGETS.map((t) => [t, []]) : []);
    if (args.smb) {
      const smallDir = path.join(workDir, 'smb-small');
      await makeSmallFiles(smallDir, args.smbFiles);
      for (let round = 1; round <= args.rounds; round++) {
        if (args.rounds > 1) console.log(`\n=== SMB round ${round} of ${args.rounds} ===`);
        for (const t of round % 2 === 1 ? SMB_TARGETS : [...SMB_TARGETS].reverse()) {
          smbResults.get(t)!.push(await benchSmbServer(t, round, workDir, srcFile, srcSha, bytes, smallDir, args.smbFiles, args.smbMode));
        }
      }
    }

    const untarTargets = (['ganesha', 'embedded-fs'] as const).filter((c) => c !== 'ganesha' || process.getuid?.() === 0);
    const untarResults = new Map<ConfigName, VmUntarResult[]>(args.vmUntar > 0 ? untarTargets.map((c) => [c, []]) : []);
    if (args.vmUntar > 0) {
      if (!untarTargets.includes('ganesha')) console.warn('bench: warning: not root: the untar row runs without ganesha');
      for (let round = 1; round <= args.rounds; round++) {
        for (const c of round % 2 === 1 ? untarTargets : [...untarTargets].reverse()) {
          console.log(`\n== untar through the kernel client in the VM: ${LABEL[c]} (round ${round}) ==`);
          const server = isDitto(c) ? await startDittoServer(c, 100 + round, workDir, undefined) : await startGanesha(workDir);
          try {
            const cpuAtStart = cpuSeconds(server.pid);
            const r = await runVmUntar(
              { nfsPort: server.nfsPort, mountPort: server.mountPort, exportPath: EXPORT_PATH, files: args.vmUntar, gone: server.gone },
              run,
            );
            // The server's CPU over the whole VM run: it serves nothing but the mount and the untar.
            r.serverCpuSeconds = cpuSince(server.pid, cpuAtStart);
            if (server.metricsPort !== undefined) r.serverLatency = formatCallTimes(await readCallTimes(server.metricsPort));
            console.log(
              `${LABEL[c]}: tar -x of ${r.files} files in ${r.seconds.toFixed(2)} s in the VM (${r.found} found; VM run ${r.vmSeconds.toFixed(0)} s); ` +
                `server CPU ${fmt(r.serverCpuSeconds, 2)} s; NFS calls of the whole run: ${r.nfsOps}` +
                (r.serverLatency ? `; mean time in the server per call (µs): ${r.serverLatency}` : ''),
            );
            untarResults.get(c)!.push(r);
          } catch (e) {
            const tail = await server.logTail().catch(() => '');
            if (tail && e instanceof Error) e.message += `\n--- last lines of the ${LABEL[c]} server log ---\n${tail}`;
            throw e;
          } finally {
            await server.stop();
          }
        }
      }
    }

    const summaries = new Map<ConfigName, Summary>([...results].map(([c, rs]) => [c, summarize(rs)]));
    const smbSummaries = new Map<SmbTarget, SmbSummary>([...smbResults].map(([t, rs]) => [t, summarizeSmb(rs)]));
    const cpu = `${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM`;
    const meta = [
      `== DittoFS vs nfs-ganesha: NFSv3 over TCP on 127.0.0.1 (${new Date().toISOString()}) ==`,
      `host: ${cpu}, node ${process.version}; load average (1/5/15 min) at start ${loadAtStart}, at end ${loadAverage()}`,
      ...(withGanesha
        ? [`ganesha: nfs-ganesha ${await versionOf('ganesha.nfsd', ['-v'], /Release\s*=\s*V?([\w.-]+)/)} (FSAL VFS on ${os.tmpdir()})`]
        : []),
      ...(configs.includes('embedded-fs')
        ? [`embedded-fs: DittoFS, embedded metadata + filesystem blocks (4 MiB), WAL in the data dir on ${os.tmpdir()}`]
        : []),
      ...(configs.includes('pglite-fs')
        ? [`pglite-fs: DittoFS, embedded PGlite metadata + filesystem blocks (4 MiB), WAL in the data dir on ${os.tmpdir()}`]
        : []),
      ...(configs.includes('postgres-s3')
        ? [
            `postgres-s3: DittoFS, postgres metadata (PostgreSQL ${backends?.pg?.external ? 'external' : await versionOfPostgres()}, fsync on) + ` +
              `s3 blocks (4 MiB, ${backends?.s3?.external ? backends.s3Name : `${backends?.s3Name ?? '?'} on loopback`}), WAL in the data dir on ${os.tmpdir()}`,
          ]
        : []),
      'client: libnfs-utils nfs-cp (sequential), test/bench/nfsclient.ts (small files)',
    ];
    if (configs.length > 0) printTable(summaries, args, meta, pgCommits, backends?.s3Short ?? 'S3');
    if (untarResults.size > 0) printUntar(untarResults, args);
    if (args.smb) {
      const smbd = await versionOf('smbd', ['--version'], /Version\s+([\w.+~-]+)/);
      const smbclient = await versionOf('smbclient', ['--version'], /Version\s+([\w.+~-]+)/);
      printSmbTable(
        smbSummaries,
        args,
        [
          `== DittoFS vs Samba smbd: ${args.smbMode.label}, over TCP on 127.0.0.1 (${new Date().toISOString()}) ==`,
          ...(configs.length > 0 ? [] : meta.slice(1, 2)),
          `smbd: Samba ${smbd} (hack/smb/smbd.sh: private smb.conf, non-root user, share on ${os.tmpdir()}); ` +
            `dittofs: DittoFS embedded metadata + filesystem blocks; client: smbclient ${smbclient} -m ${args.smbMode.protocol}` +
            (args.smbMode.sign ? ' --client-protection=sign' : ''),
        ].join('\n'),
      );
    }
    if (args.json) {
      await writeFile(
        args.json,
        JSON.stringify(
          {
            args,
            meta,
            targets: TARGETS,
            summary: Object.fromEntries(summaries),
            results: Object.fromEntries(results),
            smb: { summary: Object.fromEntries(smbSummaries), results: Object.fromEntries(smbResults) },
            untar: Object.fromEntries(untarResults),
            pgCommitsPerSec: pgCommits,
            s3Server: backends?.s3Name,
          },
          (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v),
          2,
        ),
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
