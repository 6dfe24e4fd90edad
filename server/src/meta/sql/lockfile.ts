// DIR/LOCK of an embedded store: the pid of the process that has it open, so that two processes
// never share one directory (PGlite has no lock of its own; SQLite's locks serialize writers but
// would let a second server open the same store).
import { chmodSync, closeSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import { METADATA_STORE_DIR, storeDirProblem } from '../../config/store-dirs.js';
import type { DriverLogger } from './driver.js';

const heldLocks = new Set<string>();

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes DIR/LOCK for this process, replacing a stale one (its process is gone). */
export function acquireLock(file: string): void {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx', 0o644);
      try {
        writeSync(fd, `${process.pid}\n`);
      } finally {
        closeSync(fd);
      }
      heldLocks.add(file);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    let owner = NaN;
    try {
      owner = parseInt(readFileSync(file, 'utf8').trim(), 10);
    } catch {
      // Vanished or unreadable: treat as stale.
    }
    // The same pid can come back after a restart (pid 1 in a container): ours only if we hold it.
    const held = owner === process.pid ? heldLocks.has(file) : Number.isInteger(owner) && pidAlive(owner);
    if (held) throw new Error(`embedded metadata store ${path.dirname(file)} is in use by process ${owner}`);
    try {
      unlinkSync(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
  throw new Error(`cannot lock embedded metadata store: ${file}`);
}

export function releaseLock(file: string): void {
  if (!heldLocks.delete(file)) return;
  try {
    unlinkSync(file);
  } catch {
    // Already gone.
  }
}

/**
 * Creates (if needed), makes private (0700) and locks an embedded store's directory. Private, as
 * PostgreSQL requires of its data directories: the control database in it holds the users'
 * password hashes, and an NT hash is as good as the password to an NTLM client. Release the lock
 * with releaseLock(lockFile).
 */
export function takeStoreDir(where: string, logger?: DriverLogger): { dir: string; lockFile: string } {
  const dir = path.resolve(where);
  // Never a system directory: the store would be made private (0700) below.
  const problem = storeDirProblem(dir, METADATA_STORE_DIR);
  if (problem !== undefined) throw new Error(`embedded database: ${problem}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  try {
    chmodSync(dir, 0o700);
  } catch (e) {
    // A directory this process does not own (a volume's root): it stays as its owner made it.
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') throw e;
    logger?.warn({ dir }, 'embedded store directory is not ours to make private (0700): check who else can read it');
  }
  const lockFile = path.join(dir, 'LOCK');
  acquireLock(lockFile);
  return { dir, lockFile };
}
