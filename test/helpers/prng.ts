// A seeded pseudorandom generator for tests that must reproduce from a printed seed, and fast
// deterministic pseudorandom bytes (AES-128-CTR keyed from the generator).
import { createCipheriv } from 'node:crypto';

/** sfc32 (Chris Doty-Humphrey's Small Fast Chaotic PRNG): 128 bits of state, period >= 2^32. */
export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d = 1;

  constructor(readonly seed: number) {
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = seed >>> 0;
    for (let i = 0; i < 16; i++) this.u32();
  }

  /** A uniformly distributed unsigned 32-bit integer. */
  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    return this.u32() / 2 ** 32;
  }

  /** An integer in [lo, hi] (inclusive). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[Math.floor(this.next() * items.length)] as T;
  }

  /** `n` pseudorandom bytes, determined by the generator's state. */
  bytes(n: number): Buffer {
    const key = Buffer.alloc(16);
    const iv = Buffer.alloc(16);
    for (let i = 0; i < 16; i += 4) {
      key.writeUInt32BE(this.u32(), i);
      iv.writeUInt32BE(this.u32(), i);
    }
    const c = createCipheriv('aes-128-ctr', key, iv);
    return Buffer.concat([c.update(Buffer.alloc(n)), c.final()]);
  }
}

/** The seed a test uses: `envName` if set (to reproduce a failure), else a random one. */
export function seedFrom(envName: string): number {
  const v = process.env[envName];
  if (v !== undefined && v !== '') {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`${envName}=${v}: expected an integer 0..4294967295`);
    return n;
  }
  return Math.floor(Math.random() * 2 ** 32) >>> 0;
}
