// A random identity kept in a file: made at its first use, read back at every start after.
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import path from 'node:path';

/** Makes the entries of directory `dir` (files created or renamed in it) survive a power loss. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * The `bytes` random bytes kept in `file` as hex (one line). A file that is missing or does not hold
 * that many hex digits gets a new identity, written to a temporary file, synced, renamed over it,
 * and its directory synced: a power loss leaves the old file or the new, never a torn one.
 */
export async function persistedRandomId(file: string, bytes: number, mode = 0o644): Promise<Buffer> {
  try {
    const hex = (await readFile(file, 'utf8')).trim();
    if (hex.length === bytes * 2 && /^[0-9a-f]+$/i.test(hex)) return Buffer.from(hex, 'hex');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const dir = path.dirname(file);
  await mkdir(dir, { recursive: true });
  const id = randomBytes(bytes);
  const tmp = `${file}.${process.pid}.tmp`;
  const fh = await open(tmp, 'w', mode);
  try {
    await fh.writeFile(`${id.toString('hex')}\n`);
    await fh.datasync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  await syncDir(dir);
  return id;
}
