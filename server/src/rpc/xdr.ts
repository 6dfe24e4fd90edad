// RFC 4506 XDR: big-endian 4-byte units, opaque data padded to a multiple of four.
import { DecodeError, DecodeErrorCode } from '../wire/errors.js';

const MAX_SAFE_HI = Math.floor(Number.MAX_SAFE_INTEGER / 2 ** 32);

export class XdrReader {
  pos: number;
  constructor(
    readonly buf: Buffer,
    pos = 0,
    readonly end = buf.length,
  ) {
    this.pos = pos;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  need(n: number): void {
    if (this.pos + n > this.end) {
      throw new DecodeError(DecodeErrorCode.Truncated, `need ${n} bytes at offset ${this.pos}, have ${this.end - this.pos}`);
    }
  }

  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  i32(): number {
    this.need(4);
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  bool(): boolean {
    const v = this.u32();
    if (v > 1) throw new DecodeError(DecodeErrorCode.Invalid, `bad XDR boolean ${v}`);
    return v === 1;
  }

  /** unsigned hyper as a Number; values above 2^53-1 are rejected. */
  u64(): number {
    this.need(8);
    const hi = this.buf.readUInt32BE(this.pos);
    const lo = this.buf.readUInt32BE(this.pos + 4);
    this.pos += 8;
    if (hi > MAX_SAFE_HI) throw new DecodeError(DecodeErrorCode.TooLarge, '64-bit value above 2^53-1');
    return hi * 2 ** 32 + lo;
  }

  /** unsigned hyper clamped to 2^53-1 (for values where "very large" means "everything"). */
  u64Clamped(): number {
    this.need(8);
    const hi = this.buf.readUInt32BE(this.pos);
    const lo = this.buf.readUInt32BE(this.pos + 4);
    this.pos += 8;
    if (hi > MAX_SAFE_HI) return Number.MAX_SAFE_INTEGER;
    return hi * 2 ** 32 + lo;
  }

  /** Fixed-length opaque[n] as a view into the buffer (copy it if it must outlive the request). */
  fixed(n: number): Buffer {
    const padded = padded4(n);
    this.need(padded);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += padded;
    return out;
  }

  /** Variable-length opaque<max> as a view into the buffer. */
  opaque(max: number): Buffer {
    const n = this.u32();
    if (n > max) throw new DecodeError(DecodeErrorCode.TooLarge, `opaque of ${n} bytes exceeds limit ${max}`);
    return this.fixed(n);
  }

  string(max: number): string {
    return this.opaque(max).toString('utf8');
  }
}

export class XdrWriter {
  buf: Buffer;
  pos = 0;

  constructor(initial = 512) {
    this.buf = Buffer.allocUnsafe(initial);
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  u32(v: number): this {
    this.ensure(4);
    this.buf.writeUInt32BE(v >>> 0, this.pos);
    this.pos += 4;
    return this;
  }

  i32(v: number): this {
    this.ensure(4);
    this.buf.writeInt32BE(v | 0, this.pos);
    this.pos += 4;
    return this;
  }

  bool(v: boolean): this {
    return this.u32(v ? 1 : 0);
  }

  u64(v: number): this {
    this.ensure(8);
    const hi = Math.floor(v / 2 ** 32);
    this.buf.writeUInt32BE(hi >>> 0, this.pos);
    this.buf.writeUInt32BE(v >>> 0, this.pos + 4);
    this.pos += 8;
    return this;
  }

  /** Fixed-length opaque: bytes plus zeroed padding. */
  fixed(data: Uint8Array): this {
    const n = data.length;
    const padded = padded4(n);
    this.ensure(padded);
    this.buf.set(data, this.pos);
    this.buf.fill(0, this.pos + n, this.pos + padded);
    this.pos += padded;
    return this;
  }

  opaque(data: Uint8Array): this {
    this.u32(data.length);
    return this.fixed(data);
  }

  string(s: string): this {
    return this.opaque(Buffer.from(s, 'utf8'));
  }

  /** Reserves a 4-byte slot to patch later (e.g. a length known only after encoding). */
  reserve(): number {
    this.ensure(4);
    const at = this.pos;
    this.pos += 4;
    return at;
  }

  patchU32(at: number, v: number): void {
    this.buf.writeUInt32BE(v >>> 0, at);
  }

  finish(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

/** Bytes an opaque<> of n bytes takes on the wire, length word included. */
export const xdrOpaqueSize = (n: number): number => 4 + padded4(n);

/** `n` rounded up to a multiple of four, in arithmetic (bitwise operators would wrap lengths of 2^31 and up to negative). */
export function padded4(n: number): number {
  const r = n % 4;
  return r === 0 ? n : n + 4 - r;
}
