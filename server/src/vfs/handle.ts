// File handles: opaque to clients, stable across restarts. Layout (big-endian, 20 bytes):
//   0  u8  version (1)
//   1  u8  kind (1 = inode)
//   2  u16 reserved, zero
//   4  u32 share id (the fsid)
//   8  u64 inode id
//  16  u32 generation
// Nothing depends on boot time or an in-memory table; a handle for an unknown share or a deleted
// inode resolves to STALE, a malformed one to BADHANDLE.
import { VfsError } from './errors.js';

export const HANDLE_VERSION = 1;
export const HANDLE_SIZE = 20;
/** NFSv3 allows at most 64 bytes. */
export const MAX_HANDLE_SIZE = 64;

export interface HandleParts {
  shareId: number;
  inodeId: number;
  generation: number;
}

export function encodeHandle(p: HandleParts): Buffer {
  const b = Buffer.alloc(HANDLE_SIZE);
  b[0] = HANDLE_VERSION;
  b[1] = 1;
  b.writeUInt32BE(p.shareId >>> 0, 4);
  b.writeUInt32BE(Math.floor(p.inodeId / 2 ** 32), 8);
  b.writeUInt32BE(p.inodeId >>> 0, 12);
  b.writeUInt32BE(p.generation >>> 0, 16);
  return b;
}

export function decodeHandle(b: Buffer): HandleParts {
  if (b.length !== HANDLE_SIZE || b[0] !== HANDLE_VERSION || b[1] !== 1 || b[2] !== 0 || b[3] !== 0) {
    throw new VfsError('BADHANDLE', 'malformed file handle');
  }
  const hi = b.readUInt32BE(8);
  if (hi > 0x1fffff) throw new VfsError('BADHANDLE', 'file handle inode id out of range');
  return { shareId: b.readUInt32BE(4), inodeId: hi * 2 ** 32 + b.readUInt32BE(12), generation: b.readUInt32BE(16) };
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
