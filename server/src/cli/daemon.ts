// The server's lifecycle from the outside, in the systemd / init-script tradition:
// `dittofs start --background` (a detached child, its output appended to the log file, the pid file,
// a bounded wait until it is ready, the first admin's password over a pipe), `dittofs stop` (SIGTERM, a bounded wait, SIGKILL with --force)
// and `dittofs status` (pid file, process, readiness; LSB-style exit codes).
import { spawn } from 'node:child_process';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { DittoConfig } from '../config/types.js';
import { openLogFile } from '../obs/logger.js';
import { defaultPidFile, processAlive, readPidFile, removeStalePidFile, type PidFileState } from './pidfile.js';
import { apiBaseUrl, probeHost, probeReadiness, type Readiness } from './probe.js';

/**
 * The option of `dittofs start --foreground` that names a pipe for the first admin's generated
 * password, and the descriptor `start --background` gives its child for it (the one after stdio):
 * the child's standard error is the log file, where the password must never be.
 */
export const ADMIN_PASSWORD_FD_OPTION = '--admin-password-fd';
const ADMIN_PASSWORD_FD = 3;

/** `logging.file` value that means: standard output only, no log file. */
export const LOG_TO_STDOUT_ONLY = '-';

/**
 * Where every start appends its log (besides stdout) and `dittofs logs` looks: `logging.file`,
 * else `<data_dir>/dittofs.log`; undefined when `logging.file` is `-` (stdout only).
 */
export function logFileOf(config: DittoConfig): string | undefined {
  if (config.logging.file === LOG_TO_STDOUT_ONLY) return undefined;
  return path.resolve(config.logging.file ?? path.join(config.data_dir, 'dittofs.log'));
}

export function pidFileOf(config: DittoConfig, given: string | undefined): string {
  return given !== undefined && given !== '' ? path.resolve(given) : defaultPidFile(config.data_dir);
}

/** Exit codes of `dittofs status`, after the LSB init-script conventions. */
export const STATUS_EXIT = Object.freeze({
  /** Running and ready. */
  READY: 0,
  /** Running, but not ready (or its readiness could not be read). */
  NOT_READY: 1,
  /** Not running: no pid file, or the process it names is gone (or is not DittoFS). */
  NOT_RUNNING: 3,
} as const);

export class CliFailure extends Error {
  override readonly name = 'CliFailure';
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function formatDuration(ms: number): string {
  let s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86_400);
  s -= d * 86_400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d > 0) return `${d}d ${h}h ${m}m`;
  if (h > 0) return `${h}h ${m}m ${s}s`;
  if (m > 0) return `${m}m ${s}s`;
  return `${s}s`;
}

// ---------------------------------------------------------------------------------------------
// start --background

/** The last `max` lines of `file` from byte `from` on (at most the last 64 KiB of them). */
function linesSince(file: string, from: number, max: number): string[] {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return [];
  }
  try {
    const size = fstatSync(fd).size;
    const start = Math.max(from, size - 64 * 1024);
    if (size <= start) return [];
    const buf = Buffer.alloc(size - start);
    readSync(fd, buf, 0, buf.length, start);
    return buf
      .toString('utf8')
      .split('\n')
      .filter((l) => l.trim() !== '')
      .slice(-max);
  } finally {
    closeSync(fd);
  }
}

export interface BackgroundOptions {
  config: DittoConfig;
  /** The --config given to this process, passed on to the child. */
  configFile: string | undefined;
  pidFile: string;
  /** Longest wait for the server to be ready, in ms. */
  timeoutMs: number;
  out: (text: string) => void;
}

/**
 * What the child writes on its password pipe (at most a few lines) and when it closes it: the
 * child closes it at the end of start-up, with or without a password. Bounded in size.
 */
function readPipe(stream: Readable): { text: () => string; closed: Promise<void> } {
  let text = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    if (text.length < 64 * 1024) text += chunk;
  });
  const closed = new Promise<void>((resolve) => {
    stream.once('close', resolve);
    stream.once('error', () => resolve());
  });
  return { text: () => text, closed };
}

/** Resolves when `p` settles or after `ms`, whichever comes first, without keeping the process up. */
async function within(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

/** The `dittofs: ` lines of a text. */
const notesOf = (text: string): string[] => text.split('\n').filter((l) => l.startsWith('dittofs: '));

/**
 * Starts `dittofs start --foreground --pid-file FILE` detached (its own session, standard output
 * and error appended to the log file, a pipe for the first admin's password) and waits until it is
 * ready. Throws a CliFailure saying why when it is already running, dies while starting (with its
 * last log lines) or is not ready in time.
 */
export async function startBackground(o: BackgroundOptions): Promise<void> {
  const { config, pidFile } = o;
  const existing = await readPidFile(pidFile);
  if (existing.state === 'running') {
    throw new CliFailure(`already running (pid ${existing.pid}; pid file ${pidFile}); stop it with: dittofs stop`);
  }
  const logFile = logFileOf(config);
  if (logFile === undefined) {
    throw new CliFailure(
      `logging.file is "${LOG_TO_STDOUT_ONLY}" (standard output only), but a background server has no standard output: set logging.file (DITTOFS_LOG_FILE) to a file, or run in the foreground`,
    );
  }
  let fd: number;
  try {
    fd = openLogFile(logFile);
  } catch (err) {
    throw new CliFailure(`cannot open the log file ${logFile}: ${(err as Error).message}; change logging.file / DITTOFS_LOG_FILE`);
  }
  const logStart = fstatSync(fd).size;
  // The same program, loader flags included (tsx when run from source), in the foreground.
  const script = process.argv[1];
  if (script === undefined) throw new CliFailure('cannot tell which program to run in the background');
  const args = [...process.execArgv, script, ...(o.configFile === undefined ? [] : ['--config', path.resolve(o.configFile)])];
  args.push('start', '--foreground', '--pid-file', pidFile, ADMIN_PASSWORD_FD_OPTION, String(ADMIN_PASSWORD_FD));
  // stdio[3] (ADMIN_PASSWORD_FD): the child's one-time password comes to this process only, and
  // is shown on its standard output (the user's terminal), never written to a file.
  const child = spawn(process.execPath, args, {
    detached: true,
    stdio: ['ignore', fd, fd, 'pipe'],
    cwd: process.cwd(),
    env: process.env,
  });
  closeSync(fd);
  const passwordPipe = child.stdio[ADMIN_PASSWORD_FD] as Readable | null;
  if (passwordPipe === null) throw new CliFailure('could not open a pipe to the background server');
  const told = readPipe(passwordPipe);
  try {
    await waitUntilReady(o, child, logFile, logStart, told);
  } finally {
    // Past this point a password the server writes finds no reader: the server logs that (not it).
    passwordPipe.destroy();
  }
}

async function waitUntilReady(
  o: BackgroundOptions,
  child: ReturnType<typeof spawn>,
  logFile: string,
  logStart: number,
  told: { text: () => string; closed: Promise<void> },
): Promise<void> {
  const { config, pidFile } = o;
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  child.once('exit', (code, signal) => (exited = { code, signal }));
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  child.unref();
  const pid = child.pid;
  if (pid === undefined) throw new CliFailure(`could not start ${process.execPath}: ${(await spawnError).message}`);

  const deadline = Date.now() + o.timeoutMs;
  const lastLines = (): string => {
    const lines = linesSince(logFile, logStart, 20);
    return lines.length === 0 ? ' (it wrote nothing)' : `; its last log lines:\n${lines.map((l) => `  ${l}`).join('\n')}`;
  };
  let readiness: Readiness | undefined;
  for (;;) {
    await sleep(200);
    if (exited !== undefined || !processAlive(pid)) {
      const how = exited?.signal != null ? `was killed by ${exited.signal}` : `exited with code ${exited?.code ?? '?'}`;
      throw new CliFailure(`dittofs ${how} while starting (log file ${logFile})${lastLines()}`);
    }
    const state = await readPidFile(pidFile);
    if (state.state === 'running' && state.pid === pid) {
      readiness = await probeReadiness(config, 2000);
      if (readiness.ready) break;
    }
    if (Date.now() >= deadline) {
      const why = readiness?.detail ?? (state.state === 'running' && state.pid === pid ? 'not ready' : 'it has not written its pid file');
      // A password already sent is the admin's of a server that keeps running: show it.
      const password = notesOf(told.text());
      throw new CliFailure(
        `dittofs (pid ${pid}) is not ready after ${Math.round(o.timeoutMs / 1000)} s (${why}); it keeps running: ` +
          `see "dittofs status" and "dittofs logs", or stop it with "dittofs stop"${lastLines()}` +
          (password.length === 0 ? '' : `\n${password.join('\n')}`),
      );
    }
  }

  // The child closes the pipe once started (just after it answers ready): then all it had to say is here.
  await within(told.closed, 5000);
  // Lines the server wrote to stderr (not JSON: warnings), then the first admin's generated password.
  const notes = [...linesSince(logFile, logStart, 200).filter((l) => l.startsWith('dittofs: ')), ...notesOf(told.text())];
  const nfs = config.adapters.nfs;
  const api = config.server.api;
  const lines = [
    `dittofs started in the background (pid ${pid}), ready`,
    ...(nfs.enabled
      ? [
          `  NFS       ${nfs.bind}:${nfs.port}   mount -t nfs -o vers=3,proto=tcp,port=${nfs.port},mountport=${nfs.port},mountproto=tcp,nolock HOST:/SHARE /mnt/dittofs`,
        ]
      : []),
    ...(api.enabled ? [`  API       http://${api.bind}:${api.port}/api/v1   (ready: GET /health/ready)`] : []),
    `  log file  ${logFile}   (dittofs logs -f)`,
    `  pid file  ${pidFile}   (dittofs status, dittofs stop)`,
    ...notes,
  ];
  o.out(`${lines.join('\n')}\n`);
}

// ---------------------------------------------------------------------------------------------
// stop

export interface StopOptions {
  pidFile: string;
  /** SIGKILL: at once (timeoutMs undefined), or after the SIGTERM wait. */
  force: boolean;
  /** How long to wait for the exit after SIGTERM, in ms; undefined with force: SIGKILL at once. */
  timeoutMs: number | undefined;
  out: (text: string) => void;
  err: (text: string) => void;
}

async function waitForExit(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (let i = 0; ; i++) {
    if (!processAlive(pid)) return true;
    if (Date.now() >= deadline) return false;
    await sleep(Math.min(50 * (i + 1), 250));
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ESRCH') return; // gone meanwhile
    if (code === 'EPERM')
      throw new CliFailure(`not allowed to signal pid ${pid} (it runs as another user): run dittofs stop as that user or root`);
    throw err;
  }
}

/**
 * Stops the server named by the pid file. Returns the exit code: 0 stopped (or was not running),
 * 1 it did not stop in time, or the pid file names something else.
 */
export async function stopServer(o: StopOptions): Promise<number> {
  const { pidFile } = o;
  const st = await readPidFile(pidFile);
  switch (st.state) {
    case 'missing':
      o.out(`dittofs is not running (no pid file at ${pidFile})\n`);
      return 0;
    case 'invalid':
      o.err(`dittofs: ${pidFile} does not hold a pid (it holds ${JSON.stringify(st.content)}); remove it if no server runs\n`);
      return 1;
    case 'stale':
      await removeStalePidFile(pidFile, st.pid);
      o.out(`dittofs is not running (process ${st.pid} is gone; removed the stale pid file ${pidFile})\n`);
      return 0;
    case 'foreign':
      o.err(
        `dittofs: pid ${st.pid} in ${pidFile} is not a DittoFS server (it runs: ${st.command}); not signalling it. ` +
          `The pid file is stale if no server runs: remove it\n`,
      );
      return 1;
    case 'running':
      break;
  }
  const { pid } = st;
  const started = Date.now();
  if (o.force && o.timeoutMs === undefined) {
    signal(pid, 'SIGKILL');
    if (!(await waitForExit(pid, 10_000))) {
      o.err(`dittofs: pid ${pid} is still there 10 s after SIGKILL\n`);
      return 1;
    }
    await removeStalePidFile(pidFile, pid);
    o.out(`dittofs killed (pid ${pid}, SIGKILL); data written but not yet uploaded is replayed from the WAL at the next start\n`);
    return 0;
  }
  const timeoutMs = o.timeoutMs ?? 30_000;
  signal(pid, 'SIGTERM');
  if (await waitForExit(pid, timeoutMs)) {
    await removeStalePidFile(pidFile, pid); // normally the server removed it already
    o.out(`dittofs stopped (pid ${pid}, ${formatDuration(Date.now() - started)})\n`);
    return 0;
  }
  if (!o.force) {
    o.err(
      `dittofs: pid ${pid} is still running ${Math.round(timeoutMs / 1000)} s after SIGTERM (still flushing data?); ` +
        'wait longer (--timeout SECONDS) or kill it (--force)\n',
    );
    return 1;
  }
  o.err(`dittofs: pid ${pid} did not stop within ${Math.round(timeoutMs / 1000)} s of SIGTERM: sending SIGKILL\n`);
  signal(pid, 'SIGKILL');
  if (!(await waitForExit(pid, 10_000))) {
    o.err(`dittofs: pid ${pid} is still there 10 s after SIGKILL\n`);
    return 1;
  }
  await removeStalePidFile(pidFile, pid);
  o.out(`dittofs killed (pid ${pid}, SIGKILL after the timeout)\n`);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// status

export interface ServerStatus {
  running: boolean;
  pid: number | null;
  pid_file: string;
  /** Why it is not running, or what is odd about the pid file. */
  note?: string;
  started_at: string | null;
  uptime_seconds: number | null;
  ready: boolean;
  /** The readiness checks (GET /health/ready), or `nfs` when the API is off. */
  checks: Record<string, { ok: boolean; detail?: string }>;
  readiness_detail?: string;
  api: { enabled: boolean; url: string | null };
  nfs: { enabled: boolean; port: number; bind: string; address: string | null };
  /** null: logging.file is `-` (standard output only). */
  log_file: string | null;
}

function describePidFile(st: PidFileState, pidFile: string): string {
  switch (st.state) {
    case 'missing':
      return `no pid file at ${pidFile}`;
    case 'invalid':
      return `${pidFile} does not hold a pid`;
    case 'stale':
      return `stale pid file ${pidFile}: process ${st.pid} is gone`;
    case 'foreign':
      return `stale pid file ${pidFile}: pid ${st.pid} is another program (${st.command.slice(0, 80)})`;
    case 'running':
      return `pid ${st.pid}`;
  }
}

export async function serverStatus(config: DittoConfig, pidFile: string, now = new Date()): Promise<ServerStatus> {
  const st = await readPidFile(pidFile);
  const nfs = config.adapters.nfs;
  const api = config.server.api;
  const base: ServerStatus = {
    running: false,
    pid: null,
    pid_file: pidFile,
    started_at: null,
    uptime_seconds: null,
    ready: false,
    checks: {},
    api: { enabled: api.enabled, url: apiBaseUrl(config) ?? null },
    nfs: { enabled: nfs.enabled, port: nfs.port, bind: nfs.bind, address: nfs.enabled ? `${probeHost(nfs.bind)}:${nfs.port}` : null },
    log_file: logFileOf(config) ?? null,
  };
  if (st.state !== 'running') {
    const s: ServerStatus = { ...base, note: describePidFile(st, pidFile) };
    if (st.state === 'missing' && api.enabled) {
      // A server whose pid file is elsewhere (--pid-file): say so rather than only "not running".
      const r = await probeReadiness(config, 1000);
      if (r.reachable) s.note += `; but a server answers at ${r.target} (started without this pid file?)`;
    }
    return s;
  }
  const r = await probeReadiness(config);
  return {
    ...base,
    running: true,
    pid: st.pid,
    started_at: st.startedAt.toISOString(),
    uptime_seconds: Math.max(0, Math.floor((now.getTime() - st.startedAt.getTime()) / 1000)),
    ready: r.ready,
    checks: r.checks,
    ...(r.detail === undefined ? {} : { readiness_detail: r.detail }),
  };
}

export function statusExitCode(s: ServerStatus): number {
  if (!s.running) return STATUS_EXIT.NOT_RUNNING;
  return s.ready ? STATUS_EXIT.READY : STATUS_EXIT.NOT_READY;
}

export function formatStatus(s: ServerStatus): string {
  if (!s.running) return `dittofs is not running (${s.note ?? 'no pid file'})\n`;
  const uptime = s.uptime_seconds === null ? '' : `, up ${formatDuration(s.uptime_seconds * 1000)}`;
  const lines = [`dittofs is running (pid ${s.pid}${uptime}), ${s.ready ? 'ready' : 'NOT ready'}`];
  if (!s.ready && s.readiness_detail !== undefined) lines.push(`  problem   ${s.readiness_detail}`);
  // An ok check may carry a warning (wal:data: blocks not uploaded, the server still serving).
  const checks = Object.entries(s.checks).map(([k, c]) =>
    c.ok ? (c.detail === undefined ? `${k} ok` : `${k} WARNING (${c.detail})`) : `${k} FAILING (${c.detail ?? 'no detail'})`,
  );
  if (checks.length > 0) lines.push(`  checks    ${checks.join(', ')}`);
  lines.push(`  NFS       ${s.nfs.enabled ? `port ${s.nfs.port} on ${s.nfs.bind}` : 'off'}`);
  lines.push(`  API       ${s.api.url ?? 'off'}`);
  if (s.started_at !== null) lines.push(`  started   ${s.started_at}`);
  lines.push(`  pid file  ${s.pid_file}`);
  lines.push(`  log file  ${s.log_file ?? 'none (logging.file is -: standard output only)'}`);
  return `${lines.join('\n')}\n`;
}
