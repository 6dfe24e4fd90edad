// Random hex strings for names that must not collide (temporary files, the random part of block
// keys), drawn from a pool of random bytes refilled 4 KiB at a time: crypto.randomBytes() for every
// 4 or 8 bytes cost ~5 µs per small-file upload (two calls), a slice of the pool ~0.25 µs.
import { randomBytes } from 'node:crypto';

const POOL_BYTES = 4096;
let pool = Buffer.alloc(0);
let at = 0;

/** `bytes` random bytes (at most 4096) as 2 * `bytes` lower-case hex digits; each byte is used once. */
export function randomHex(bytes: number): string {
  if (!Number.isInteger(bytes) || bytes < 1 || bytes > POOL_BYTES) throw new RangeError(`randomHex: ${bytes} bytes`);
  if (at + bytes > pool.length) {
    pool = randomBytes(POOL_BYTES);
    at = 0;
  }
  const s = pool.toString('hex', at, at + bytes);
  at += bytes;
  return s;
}
