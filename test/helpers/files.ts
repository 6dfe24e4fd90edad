// Large local files for the round-trip tests: random content written with its digest, and the
// digest of a file read back, both streamed (a few MiB of memory for files of hundreds of MiB);
// and a file that takes every free byte of a volume (the full-volume tests).
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';

const MiB = 1024 * 1024;

/** The sha256 (hex) of a file's content. */
export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 * MiB })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Writes `size` random bytes to `file` one MiB at a time, returning their sha256 (hex). */
export async function writeRandomFile(file: string, size: number): Promise<string> {
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(MiB);
  const fh = await open(file, 'w');
  try {
    for (let done = 0; done < size;) {
      const n = Math.min(buf.length, size - done);
      const chunk = buf.subarray(0, n);
      randomFillSync(chunk);
      h.update(chunk);
      let off = 0;
      while (off < n) off += (await fh.write(chunk, off, n - off)).bytesWritten;
      done += n;
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

/**
 * Fills a volume to the last byte with one new file, `name` (1 MiB writes, then 4 KiB ones), and
 * returns its path. Again with another name, it takes what was freed since.
 */
export async function fillVolume(dir: string, name = 'filler'): Promise<string> {
  const file = path.join(dir, name);
  const fh = await open(file, 'w');
  try {
    for (const size of [MiB, 4096]) {
      const buf = Buffer.alloc(size, 0x55);
      for (let i = 0; i < 1_000_000; i++) {
        try {
          await fh.write(buf, 0, size);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
          break;
        }
      }
    }
  } finally {
    await fh.close();
  }
  return file;
}
