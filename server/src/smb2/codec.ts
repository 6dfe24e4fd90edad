// Little-endian reader and writer for SMB2 messages, the MS-SMB2 2.2.1.2 sync header, FILETIME
// and UTF-16LE names. Decoders raise DecodeError (wire/errors.ts) and nothing else.
import { DecodeError, DecodeErrorCode } from '../wire/errors.js';
import type { Timespec } from '../vfs/types.js';

const truncated = (what: string): DecodeError => new DecodeError(DecodeErrorCode.Truncated, `${what}: message too short`);

/** A cursor over one SMB2 message (a compound element): offsets in bodies count from its header. */
export class SmbReader {
  constructor(
    readonly buf: Buffer,
    public pos = 0,
    readonly end = buf.length,
  ) {}

  get remaining(): number {
    return this.end - this.pos;
  }

  /** Checks once that `n` bytes follow (then read the fixed fields of a struct freely). */
  need(n: number, what: string): void {
    if (this.end - this.pos < n) throw truncated(what);
  }

  u8(): number {
    if (this.pos + 1 > this.end) throw truncated('u8');
    return this.buf[this.pos++]!;
  }

  u16(): number {
    if (this.pos + 2 > this.end) throw truncated('u16');
    const v = this.buf.readUInt16LE(this.pos);
    this.pos += 2;
    return v;
  }

  u32(): number {
    if (this.pos + 4 > this.end) throw truncated('u32');
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  /** A 64-bit size or offset as a Number; above 2^53-1 is a DecodeError (TooLarge). */
  u64(): number {
    if (this.pos + 8 > this.end) throw truncated('u64');
    const lo = this.buf.readUInt32LE(this.pos);
    const hi = this.buf.readUInt32LE(this.pos + 4);
    this.pos += 8;
    if (hi > 0x1fffff) throw new DecodeError(DecodeErrorCode.TooLarge, '64-bit value above 2^53');
    return hi * 2 ** 32 + lo;
  }

  /** A 64-bit field read as two halves, for values that are flags or may be all ones. */
  u64Parts(): { lo: number; hi: number } {
    if (this.pos + 8 > this.end) throw truncated('u64');
    const lo = this.buf.readUInt32LE(this.pos);
    const hi = this.buf.readUInt32LE(this.pos + 4);
    this.pos += 8;
    return { lo, hi };
  }

  /** A view of the next `n` bytes (copy it if it must outlive the request). */
  bytes(n: number): Buffer {
    if (n < 0 || this.pos + n > this.end) throw truncated('bytes');
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  skip(n: number): void {
    if (this.pos + n > this.end) throw truncated('skip');
    this.pos += n;
  }

  /**
   * A variable-length buffer named by an (offset from the header, length) pair, checked to lie
   * inside the message. Length 0 gives an empty buffer whatever the offset.
   */
  field(offset: number, length: number, what: string): Buffer {
    if (length === 0) return EMPTY;
    if (offset < 0 || offset + length > this.end) throw new DecodeError(DecodeErrorCode.Invalid, `${what}: buffer outside the message`);
    return this.buf.subarray(offset, offset + length);
  }
}

const EMPTY = Buffer.alloc(0);

/** A growable writer; the buffer starts zeroed so reserved fields and padding never leak memory. */
export class SmbWriter {
  buf: Buffer;
  pos = 0;

  constructor(initial = 256) {
    this.buf = Buffer.alloc(initial);
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const b = Buffer.alloc(size);
    this.buf.copy(b, 0, 0, this.pos);
    this.buf = b;
  }

  u8(v: number): this {
    this.ensure(1);
    this.buf[this.pos++] = v & 0xff;
    return this;
  }

  u16(v: number): this {
    this.ensure(2);
    this.buf.writeUInt16LE(v & 0xffff, this.pos);
    this.pos += 2;
    return this;
  }

  u32(v: number): this {
    this.ensure(4);
    this.buf.writeUInt32LE(v >>> 0, this.pos);
    this.pos += 4;
    return this;
  }

  /** A non-negative safe integer as 64 bits. */
  u64(v: number): this {
    this.ensure(8);
    this.buf.writeUInt32LE((v % 2 ** 32) >>> 0, this.pos);
    this.buf.writeUInt32LE(Math.floor(v / 2 ** 32) >>> 0, this.pos + 4);
    this.pos += 8;
    return this;
  }

  filetime(t: Timespec | null): this {
    this.ensure(8);
    writeFiletime(this.buf, this.pos, t);
    this.pos += 8;
    return this;
  }

  bytes(b: Buffer): this {
    this.ensure(b.length);
    b.copy(this.buf, this.pos);
    this.pos += b.length;
    return this;
  }

  zeros(n: number): this {
    this.ensure(n);
    this.buf.fill(0, this.pos, this.pos + n);
    this.pos += n;
    return this;
  }

  /** Zero bytes up to the next multiple of `n` (counted from the writer's start). */
  align(n: number): this {
    const pad = (n - (this.pos % n)) % n;
    return this.zeros(pad);
  }

  /** Overwrites a u32 written earlier (a length or an offset known only later). */
  patchU32(at: number, v: number): void {
    this.buf.writeUInt32LE(v >>> 0, at);
  }

  patchU16(at: number, v: number): void {
    this.buf.writeUInt16LE(v & 0xffff, at);
  }

  finish(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

// ---- MS-DTYP 2.3.3 FILETIME: 100 ns intervals since 1601-01-01 UTC --------------------------------
// The values pass 2^53, so they are converted with BigInt (only here, once per timestamp).

const EPOCH_DIFF_SECONDS = 11644473600n;

export function writeFiletime(buf: Buffer, at: number, t: Timespec | null): void {
  if (t === null) {
    buf.writeBigUInt64LE(0n, at);
    return;
  }
  const v = (BigInt(t.sec) + EPOCH_DIFF_SECONDS) * 10_000_000n + BigInt(Math.floor(t.nsec / 100));
  buf.writeBigUInt64LE(v < 0n ? 0n : v, at);
}

/** A FILETIME field of SET_INFO: null for 0 or all-ones / all-ones-minus-one ("leave it alone"). */
export function readFiletime(buf: Buffer, at: number): Timespec | null {
  const v = buf.readBigUInt64LE(at);
  if (v === 0n || v >= 0xfffffffffffffffen) return null;
  const sec = v / 10_000_000n - EPOCH_DIFF_SECONDS;
  return { sec: Number(sec), nsec: Number(v % 10_000_000n) * 100 };
}

// ---- UTF-16LE names ------------------------------------------------------------------------------

export function utf16(s: string): Buffer {
  return Buffer.from(s, 'utf16le');
}

/** Decodes a UTF-16LE name; an odd length is a DecodeError. */
export function fromUtf16(b: Buffer, what: string): string {
  if (b.length % 2 !== 0) throw new DecodeError(DecodeErrorCode.Invalid, `${what}: odd UTF-16 length`);
  return b.toString('utf16le');
}

// ---- MS-SMB2 2.2.1.2 SMB2 Packet Header - SYNC (and 2.2.1.1 ASYNC) ---------------------------------

export const SMB2_MAGIC = 0x424d53fe; // 0xFE 'S' 'M' 'B' read as little-endian u32
export const SMB1_MAGIC = 0x424d53ff;
export const HEADER_SIZE = 64;

export interface Smb2Header {
  creditCharge: number;
  /** In a request: ChannelSequence/Reserved; in a response: the NTSTATUS. */
  status: number;
  command: number;
  creditRequest: number;
  flags: number;
  nextCommand: number;
  messageId: number;
  /** Only in async headers (ASYNC_COMMAND flag); 0 otherwise. */
  asyncId: number;
  treeId: number;
  sessionId: number;
  /** A view of the 16 signature bytes. */
  signature: Buffer;
}

/** MessageId and SessionId are 64-bit on the wire; a value above 2^53 cannot be one of ours. */
const u64OrMax = (buf: Buffer, at: number): number => {
  const lo = buf.readUInt32LE(at);
  const hi = buf.readUInt32LE(at + 4);
  return hi > 0x1fffff ? Number.MAX_SAFE_INTEGER : hi * 2 ** 32 + lo;
};

export function decodeHeader(buf: Buffer, at = 0): Smb2Header {
  if (buf.length - at < HEADER_SIZE) throw truncated('SMB2 header');
  if (buf.readUInt32LE(at) !== SMB2_MAGIC) throw new DecodeError(DecodeErrorCode.Invalid, 'not an SMB2 header');
  if (buf.readUInt16LE(at + 4) !== HEADER_SIZE) throw new DecodeError(DecodeErrorCode.Invalid, 'SMB2 header StructureSize is not 64');
  const flags = buf.readUInt32LE(at + 16);
  const async = (flags & 0x2) !== 0;
  return {
    creditCharge: buf.readUInt16LE(at + 6),
    status: buf.readUInt32LE(at + 8),
    command: buf.readUInt16LE(at + 12),
    creditRequest: buf.readUInt16LE(at + 14),
    flags,
    nextCommand: buf.readUInt32LE(at + 20),
    messageId: u64OrMax(buf, at + 24),
    asyncId: async ? u64OrMax(buf, at + 32) : 0,
    treeId: async ? 0 : buf.readUInt32LE(at + 36),
    sessionId: u64OrMax(buf, at + 40),
    signature: buf.subarray(at + 48, at + 64),
  };
}

/**
 * Writes a response header (signature zero; signing fills it later): the sync form, or with a
 * nonzero `asyncId` the async form (2.2.1.1: AsyncId where Reserved and TreeId were).
 */
export function writeHeader(w: SmbWriter, h: Omit<Smb2Header, 'signature' | 'asyncId'>, asyncId = 0): void {
  w.u32(SMB2_MAGIC).u16(HEADER_SIZE).u16(h.creditCharge).u32(h.status).u16(h.command).u16(h.creditRequest).u32(h.flags);
  w.u32(h.nextCommand).u64(h.messageId);
  if (asyncId !== 0) w.u64(asyncId);
  else w.u32(0).u32(h.treeId);
  w.u64(h.sessionId).zeros(16);
}
