// The pid file of a DittoFS server: written when it starts (`--pid-file`, or `<data_dir>/dittofs.pid`
// in background mode), removed when it exits, read by `dittofs stop` and `dittofs status`.
//
// Claiming is atomic and exclusive: the pid is written to a temporary file that is then hard-linked
// to the final name, which fails if that name exists; so a reader never sees a half-written file and
// two servers starting at once cannot both win. An existing file is replaced only when it is stale:
// its process is gone, or is not a DittoFS server (the pid was reused after a crash).
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { link, mkdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';

/** What a pid file says about the server it names. */
export type PidFileState =
  | { state: 'missing' }
  /** The file does not hold a pid. */
  | { state: 'invalid'; content: string }
  /** No process has that pid any more (or only a zombie). */
  | { state: 'stale'; pid: number }
  /** A process has that pid, but it is not a DittoFS server: the pid was reused. */
  | { state: 'foreign'; pid: number; command: string }
  /** A DittoFS server (or, where /proc is missing, some live process) has that pid. */
  | { state: 'running'; pid: number; startedAt: Date; command?: string };

export const PIDFILE_ERROR = Object.freeze({
  /** The pid file names a live DittoFS server. */
  ALREADY_RUNNING: 'DITTOFS_ALREADY_RUNNING',
} as const);

export class AlreadyRunningError extends Error {
  override readonly name = 'AlreadyRunningError';
  readonly code = PIDFILE_ERROR.ALREADY_RUNNING;
  constructor(
    readonly pid: number,
    readonly file: string,
  ) {
    super(`already running (pid ${pid}; pid file ${file})`);
  }
}

/** The pid file used when none is given: `<data_dir>/dittofs.pid`. */
export function defaultPidFile(dataDir: string): string {
  return path.join(dataDir, 'dittofs.pid');
}

/** True while a process (not a zombie) has this pid; EPERM means it exists under another user. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  // A zombie (exited, not yet reaped by its parent) still answers kill(0): look at its state.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return true; // no /proc (macOS) or it just exited: kill(0) said alive
  }
}

/** The command line of a process (`/proc/PID/cmdline`), or undefined where /proc is unavailable. */
export function processCommand(pid: number): string[] | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw.split('\0').filter((a) => a !== '');
  } catch {
    return undefined;
  }
}

/**
 * Whether a command line runs the `dittofs` CLI: `node .../dittofs.js start`, `dittofs start`,
 * `node --import tsx .../dittofs.ts start`. Not `dittofsctl`.
 */
export function isDittofsCommand(argv: readonly string[]): boolean {
  return argv.some((a) => /^dittofs(?:\.[cm]?[jt]s)?$/.test(path.basename(a)));
}

/** Reads and interprets a pid file. `self` (default this process) never counts as running. */
export async function readPidFile(file: string, self = process.pid): Promise<PidFileState> {
  let content: string;
  try {
    content = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'missing' };
    throw e;
  }
  const text = content.trim();
  if (!/^\d{1,10}$/.test(text) || Number(text) < 1) return { state: 'invalid', content: text.slice(0, 80) };
  const pid = Number(text);
  // After a restart in a container the server often gets the pid its previous run had (1).
  if (pid === self || !processAlive(pid)) return { state: 'stale', pid };
  const argv = processCommand(pid);
  if (argv !== undefined && !isDittofsCommand(argv)) return { state: 'foreign', pid, command: argv.join(' ').slice(0, 200) };
  let startedAt: Date;
  try {
    startedAt = (await stat(file)).mtime;
  } catch {
    startedAt = new Date();
  }
  return { state: 'running', pid, startedAt, ...(argv === undefined ? {} : { command: argv.join(' ') }) };
}

/**
 * Writes `pid` to `file` unless the file names a live DittoFS server (AlreadyRunningError). A stale,
 * invalid or foreign file is replaced; what it held is returned (undefined: there was none).
 */
export async function claimPidFile(file: string, pid = process.pid): Promise<PidFileState | undefined> {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${pid}.tmp`;
  await writeFile(tmp, `${pid}\n`, { mode: 0o644 });
  let replaced: PidFileState | undefined;
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await linkExclusive(tmp, file, pid);
        return replaced;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const existing = await readPidFile(file, pid);
      if (existing.state === 'running') throw new AlreadyRunningError(existing.pid, file);
      replaced = existing;
      try {
        await unlink(file);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
    throw new Error(`cannot claim the pid file ${file}: it keeps coming back (another server starting?)`);
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

/** link(tmp, file); where hard links are not supported, an exclusive create (EEXIST alike). */
async function linkExclusive(tmp: string, file: string, pid: number): Promise<void> {
  try {
    await link(tmp, file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw e;
    const fd = openSync(file, 'wx', 0o644);
    try {
      writeSync(fd, `${pid}\n`);
    } finally {
      closeSync(fd);
    }
  }
}

/** Removes the pid file if it still names `pid` (synchronous: runs in the process's 'exit' handler). */
export function releasePidFileSync(file: string, pid = process.pid): boolean {
  try {
    if (readFileSync(file, 'utf8').trim() !== String(pid)) return false;
    unlinkSync(file);
    return true;
  } catch {
    return false;
  }
}

/** Removes a pid file known to be stale (the process gone); false if it changed meanwhile. */
export async function removeStalePidFile(file: string, pid: number): Promise<boolean> {
  try {
    if ((await readFile(file, 'utf8')).trim() !== String(pid)) return false;
    await unlink(file);
    return true;
  } catch {
    return false;
  }
}
