// `dittofs backup controlplane` and `dittofs restore controlplane`: the control database (from the
// config's `database` settings) to one JSON file and back. With a server running on the data
// directory, the backup is asked of it through its local control socket (an embedded database can
// be opened by one process only); otherwise the database is opened here. A restore wants every
// server stopped: a running server would keep serving the state it read, and tokens it issued are
// revoked by the restore.
import { existsSync } from 'node:fs';
import { open, readFile, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { DittoConfig } from '../config/types.js';
import {
  BackupError,
  countBackup,
  describeCounts,
  dumpControl,
  loadControl,
  validateBackup,
  type ControlBackup,
} from '../control/backup.js';
import { openControlStore, type ControlStore } from '../control/store.js';
import { controlLayout } from '../control/embedded.js';
import { localControlSocket, requestBackup } from '../local-control.js';
import { CliFailure } from './daemon.js';
import { readPidFile } from './pidfile.js';

/** The embedded control database's directory, as the server computes it. */
export function controlDbPath(config: DittoConfig): string {
  return path.resolve(config.database.path ?? path.join(config.data_dir, 'control'));
}

function describeDatabase(config: DittoConfig): string {
  const db = config.database;
  if (db.type === 'embedded') return `the embedded control database ${controlDbPath(config)}`;
  if (db.type === 'postgres') return `the PostgreSQL control database${db.schema === undefined ? '' : ` (schema ${db.schema})`}`;
  return 'the in-memory control database';
}

type ToolPurpose = 'backup' | 'restore' | 'reset-password';

const DOING: Record<ToolPurpose, string> = { backup: 'back up', restore: 'restore', 'reset-password': 'reset a password' };

/** Opens the control database for a backup, a restore or a password reset, or says why it cannot. */
export async function openForTool(config: DittoConfig, pidFile: string, purpose: ToolPurpose): Promise<ControlStore> {
  const db = config.database;
  if (db.type === 'memory') {
    throw new CliFailure(
      `database.type is memory: the control plane lives in a temporary directory of the running server and is gone when it stops; nothing to ${purpose === 'restore' ? 'restore into' : DOING[purpose]}`,
    );
  }
  const running = await readPidFile(pidFile);
  if (running.state === 'running') {
    if (purpose === 'reset-password') {
      throw new CliFailure(
        `a server is running on this data directory (pid ${running.pid}; pid file ${pidFile}): stop it first (dittofs stop), ` +
          'then reset the password, then start it again; while it runs, an admin can set any password with: dittofsctl user update USER --password',
      );
    }
    if (db.type === 'embedded') {
      throw new CliFailure(
        `a server is running on this data directory (pid ${running.pid}; pid file ${pidFile}), and ${describeDatabase(config)} can be opened by one process only: ` +
          `stop the server first (dittofs stop), or ${DOING[purpose]} through a server using PostgreSQL (database.type: postgres)`,
      );
    }
    if (purpose === 'restore') {
      throw new CliFailure(
        `a server is running on this control database (pid ${running.pid}; pid file ${pidFile}): stop it, and every other server using the database, ` +
          'before restoring (a running server keeps serving the state it has read)',
      );
    }
  }
  const dbPath = controlDbPath(config);
  if (db.type === 'embedded' && purpose !== 'restore' && controlLayout(dbPath) === 'empty') {
    throw new CliFailure(
      `there is no control database at ${dbPath} (a server creates it at its first start with this data_dir; check --config and database.path)`,
    );
  }
  try {
    return await openControlStore({
      type: db.type,
      ...(db.type === 'embedded' ? { path: dbPath } : {}),
      ...(db.url !== undefined ? { url: db.url } : {}),
      ...(db.schema !== undefined ? { schema: db.schema } : {}),
      ...(db.pool_size !== undefined ? { poolSize: db.pool_size } : {}),
    });
  } catch (err) {
    const msg = (err as Error).message;
    const inUse = /in use by process (\d+)/.exec(msg);
    if (inUse !== null) {
      throw new CliFailure(
        `${describeDatabase(config)} is in use by process ${inUse[1]} (a server running on it?): ` +
          `stop the server first, or ${DOING[purpose]} through a server using PostgreSQL (database.type: postgres)`,
      );
    }
    throw new CliFailure(`cannot open ${describeDatabase(config)}: ${msg}`);
  }
}

/**
 * Writes `text` to `file` with mode 0600, atomically (a temporary file renamed over it) and durably
 * (the file, then its directory, fsynced). The directory must exist: a missing one is an error, not
 * made, so that a mistyped path (`/var/backup/` for `/var/backups/`) does not put the backup where
 * nobody will look for it.
 *
 * A directory the caller may write in but not read (mode 0300, a drop box) cannot be opened to be
 * fsynced: the file is written, synced and in place all the same, so that is no failure. The
 * returned warning says so (undefined when the directory was synced).
 */
async function writePrivateFile(file: string, text: string): Promise<string | undefined> {
  const dir = path.dirname(file);
  const dirStat = await stat(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') throw new CliFailure(`cannot write ${file}: the directory ${dir} does not exist (create it first)`);
    if (err.code === 'ENOTDIR') throw new CliFailure(`cannot write ${file}: ${dir} is not a directory`);
    throw err;
  });
  if (!dirStat.isDirectory()) throw new CliFailure(`cannot write ${file}: ${dir} is not a directory`);
  const tmp = `${file}.${process.pid}.tmp`;
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  // The rename is on disk only once the directory is: without this a crash right after "backed up"
  // could leave no file at all.
  let d: FileHandle;
  try {
    d = await open(dir, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM') throw err;
    return (
      `dittofs: warning: cannot sync the directory ${dir} (no read permission: ${code}): the backup is complete and in place, ` +
      'but a power loss in the next moments could lose its name from the directory (run `sync` to be sure)\n'
    );
  }
  try {
    await d.sync().catch((err: NodeJS.ErrnoException) => {
      // Some file systems cannot fsync a directory; the data itself was synced above.
      if (err.code !== 'EINVAL' && err.code !== 'ENOTSUP' && err.code !== 'EOPNOTSUPP') throw err;
    });
  } finally {
    await d.close();
  }
  return undefined;
}

export interface BackupOptions {
  config: DittoConfig;
  pidFile: string;
  /** A file, or `-` for standard output. */
  output: string;
  version: string;
  /** The summary when the backup goes to standard output, and warnings (stderr). */
  note: (text: string) => void;
  /** The backup itself ("-"), or the summary. */
  stdout: (text: string) => void;
}

/** The backup from the running server's local socket, or undefined when no server runs here. */
async function backupFromRunningServer(o: BackupOptions): Promise<ControlBackup | undefined> {
  const running = await readPidFile(o.pidFile);
  if (running.state !== 'running') return undefined;
  const socket = localControlSocket(o.config.data_dir);
  if (!existsSync(socket)) {
    throw new CliFailure(
      `a server is running on this data directory (pid ${running.pid}; pid file ${o.pidFile}) without its local control socket ${socket} ` +
        '(an older version, or a data directory path too long for a socket): stop it (dittofs stop) and back up again',
    );
  }
  let text: string;
  try {
    text = await requestBackup(socket);
  } catch (err) {
    throw new CliFailure(`the running server (pid ${running.pid}) did not give a backup through ${socket}: ${(err as Error).message}`);
  }
  try {
    return validateBackup(JSON.parse(text));
  } catch (err) {
    throw asFailure(err, `the backup from the running server (pid ${running.pid})`);
  }
}

export async function backupControlPlane(o: BackupOptions): Promise<void> {
  // A running server (its pid file names it) is asked for the backup: it holds the database open.
  let b = await backupFromRunningServer(o);
  if (b === undefined) {
    const store = await openForTool(o.config, o.pidFile, 'backup');
    try {
      b = await dumpControl(store, { dittofsVersion: o.version });
    } finally {
      await store.close();
    }
  }
  const text = `${JSON.stringify(b, null, 2)}\n`;
  const summary = `${describeCounts(countBackup(b))}; generation ${b.generation}`;
  if (o.output === '-') {
    o.stdout(text);
    o.note(`backed up the control plane (${summary})\n`);
    return;
  }
  const file = path.resolve(o.output);
  let warning: string | undefined;
  try {
    warning = await writePrivateFile(file, text);
  } catch (err) {
    if (err instanceof CliFailure) throw err;
    throw new CliFailure(`cannot write ${file}: ${(err as Error).message}`);
  }
  o.stdout(
    `backed up the control plane (${summary}) to ${file}\n` +
      'it holds password hashes, store credentials and the token key: keep it private (written with mode 0600)\n',
  );
  if (warning !== undefined) o.note(warning);
}

export interface RestoreOptions {
  config: DittoConfig;
  pidFile: string;
  /** A file, or `-` for standard input. */
  input: string;
  force: boolean;
  note: (text: string) => void;
}

async function readInput(input: string): Promise<string> {
  if (input !== '-') return readFile(path.resolve(input), 'utf8');
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function restoreControlPlane(o: RestoreOptions): Promise<void> {
  const where = o.input === '-' ? 'standard input' : path.resolve(o.input);
  // Everything about the document is checked before the database is touched.
  let text: string;
  try {
    text = await readInput(o.input);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new CliFailure(`cannot read ${where}: ${e.code === 'ENOENT' ? 'file not found' : e.message}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new CliFailure(`${where} is not a DittoFS control-plane backup: not JSON (${(err as Error).message})`);
  }
  let b: ControlBackup;
  try {
    b = validateBackup(doc);
  } catch (err) {
    throw asFailure(err, where);
  }
  const store = await openForTool(o.config, o.pidFile, 'restore');
  try {
    const r = await loadControl(store, b, { force: o.force });
    const replaced = describeCounts(r.replaced);
    o.note(
      `restored the control plane from ${where} (${describeCounts(r.counts)}; backed up ${b.created_at} by DittoFS ${b.dittofs_version}); ` +
        `generation ${r.generation}\n` +
        (replaced === 'nothing' ? '' : `it replaced what the database held (${replaced})\n`) +
        'tokens issued before are no longer accepted: log in again\n',
    );
  } catch (err) {
    throw asFailure(err, where);
  } finally {
    await store.close();
  }
}

function asFailure(err: unknown, where: string): unknown {
  if (!(err instanceof BackupError)) return err;
  const problems = err.problems.map((p) => `\n  ${p}`).join('');
  return new CliFailure(err.code === 'DITTOFS_BACKUP_INVALID' ? `${where}: ${err.message}${problems}` : err.message);
}
