// Tests: which files this process holds open (Linux, /proc/self/fd).
import { readdir, readlink } from 'node:fs/promises';

/** File descriptors this process has open on `file` (by /proc/self/fd), as a deleted file too. */
export async function openFds(file: string): Promise<number> {
  let n = 0;
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (target === file || target === `${file} (deleted)`) n++;
  }
  return n;
}

/**
 * Waits until no descriptor of this process is open on `files` (the close runs on the thread pool:
 * up to 10 s on a loaded machine); how many still are.
 */
export async function fdsAfterClose(...files: string[]): Promise<number> {
  const count = async () => (await Promise.all(files.map(openFds))).reduce((a, b) => a + b, 0);
  for (let i = 0; i < 1000 && (await count()) > 0; i++) await new Promise((r) => setTimeout(r, 10));
  return count();
}
