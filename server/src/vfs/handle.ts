// File handles: opaque to clients, stable across restarts. Layout (big-endian, 24 bytes):
//   0  u8  version (2)
//   1  u8  kind (1 = inode)
//   2  u16 reserved, zero
//   4  u32 share id (the fsid)
//   8  u64 inode id
//  16  u64 generation: a random number (GENERATION_BITS bits) the inode got when it was created
// Nothing depends on boot time or an in-memory table; a handle for an unknown share or a deleted
// inode resolves to STALE, a malformed one to BADHANDLE.
//
// The share id (public: FNV of the share name) and the inode id (sequential) are guessable; the
// generation is not, so a handle is a capability: a client has one only if the server gave it one
// (LOOKUP, READDIRPLUS, CREATE, MNT). A forged handle (right share and inode, guessed generation)
// answers STALE like a deleted file's.
//
// Version 1 handles (20 bytes, a 32-bit generation that was always 1) were given out before
// generations were random; the metadata migration that made them random retired them all, so they
// answer STALE (the client looks the name up again or remounts), not BADHANDLE.
import { randomFillSync } from 'node:crypto';
import { VfsError } from './errors.js';

export const HANDLE_VERSION = 2;
export const HANDLE_SIZE = 24;
/** NFSv3 allows at most 64 bytes. */
export const MAX_HANDLE_SIZE = 64;

const V1_HANDLE_SIZE = 20;

/**
 * Random bits in a generation: all a JavaScript number holds exactly. A sweep at 100,000 guesses a
 * second needs about 1.4 million years per inode on average.
 */
export const GENERATION_BITS = 53;

export interface HandleParts {
  shareId: number;
  inodeId: number;
  generation: number;
}

/**
 * Crypto-random bytes for generations, drawn 4 KiB at a time: one call into the CSPRNG per 512 new
 * inodes instead of one per create (about 10 us of each CREATE on a loaded machine).
 */
const generationPool = Buffer.alloc(4096);
let generationAt = generationPool.length;

/** A new inode's generation: crypto-random, 1 to 2^53 - 1. */
export function randomGeneration(): number {
  for (;;) {
    if (generationAt + 8 > generationPool.length) {
      randomFillSync(generationPool);
      generationAt = 0;
    }
    const b = generationPool;
    const g = (b.readUInt32BE(generationAt) & 0x1fffff) * 2 ** 32 + b.readUInt32BE(generationAt + 4);
    generationAt += 8;
    if (g !== 0) return g;
  }
}

function writeU53(b: Buffer, n: number, at: number): void {
  b.writeUInt32BE(Math.floor(n / 2 ** 32), at);
  b.writeUInt32BE(n >>> 0, at + 4);
}

/** A u64 that must fit in 53 bits, else BADHANDLE. */
function readU53(b: Buffer, at: number, what: string): number {
  const hi = b.readUInt32BE(at);
  if (hi > 0x1fffff) throw new VfsError('BADHANDLE', `file handle ${what} out of range`);
  return hi * 2 ** 32 + b.readUInt32BE(at + 4);
}

export function encodeHandle(p: HandleParts): Buffer {
  const b = Buffer.alloc(HANDLE_SIZE);
  b[0] = HANDLE_VERSION;
  b[1] = 1;
  b.writeUInt32BE(p.shareId >>> 0, 4);
  writeU53(b, p.inodeId, 8);
  writeU53(b, p.generation, 16);
  return b;
}

export function decodeHandle(b: Buffer): HandleParts {
  if (b.length === V1_HANDLE_SIZE && b[0] === 1 && b[1] === 1 && b[2] === 0 && b[3] === 0) {
    throw new VfsError('STALE', 'file handle from before random generations: look the file up again');
  }
  if (b.length !== HANDLE_SIZE || b[0] !== HANDLE_VERSION || b[1] !== 1 || b[2] !== 0 || b[3] !== 0) {
    throw new VfsError('BADHANDLE', 'malformed file handle');
  }
  return { shareId: b.readUInt32BE(4), inodeId: readU53(b, 8, 'inode id'), generation: readU53(b, 16, 'generation') };
}

/** FNV-1a 32-bit of the share name: a stable fsid that needs no table. Never 0. */
export function shareIdOf(name: string): number {
  let h = 0x811c9dc5;
  const bytes = Buffer.from(name, 'utf8');
  for (const byte of bytes) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h === 0 ? 1 : h;
}
