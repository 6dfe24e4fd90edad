// Large local files for the round-trip tests: random content written with its digest, and the
// digest of a file read back, both streamed (a few MiB of memory for files of hundreds of MiB).
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';

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
