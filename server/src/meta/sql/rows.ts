// Column values -> JS values, in one place. pg returns bigint (int8) and numeric as strings and bytea
// as Buffer; PGlite returns int8 as a number (a bigint past 2^53), numeric as a string and bytea as
// Uint8Array; SQLite returns integers as numbers, blobs as Buffer and booleans as 1 or 0.
// Everything numeric the engine stores fits a JS safe integer; anything else is a bug
// or a corrupt row and fails loudly.
import type { FileType, Inode } from '../../vfs/types.js';
import { copyInode } from '../../vfs/types.js';

export function toNumber(v: unknown, column = 'value'): number {
  let n: number;
  if (typeof v === 'number') n = v;
  else if (typeof v === 'bigint') n = Number(v);
  else if (typeof v === 'string' && /^-?\d+$/.test(v)) n = Number(v);
  else throw new TypeError(`${column}: expected an integer from the database, got ${typeof v} ${String(v)}`);
  if (!Number.isSafeInteger(n)) throw new RangeError(`${column}: ${String(v)} is not a safe integer`);
  return n;
}

/** PostgreSQL's boolean; SQLite has none and answers 1 or 0. */
export function toBool(v: unknown, column = 'value'): boolean {
  if (v === true || v === 1) return true;
  if (v === false || v === 0 || v === null || v === undefined) return false;
  throw new TypeError(`${column}: expected a boolean from the database, got ${typeof v}`);
}

export function toBuffer(v: unknown, column = 'value'): Buffer {
  if (Buffer.isBuffer(v)) return v;
  if (v instanceof Uint8Array) return Buffer.from(v); // a copy, detached from the driver's memory
  throw new TypeError(`${column}: expected bytea from the database, got ${typeof v}`);
}

export function toBufferOrNull(v: unknown, column = 'value'): Buffer | null {
  return v === null || v === undefined ? null : toBuffer(v, column);
}

/** The inode columns every query that returns inodes selects, in this order. */
export const INODE_COLUMNS = [
  'id',
  'share_id',
  'type',
  'mode',
  'uid',
  'gid',
  'size',
  'nlink',
  'rdev_major',
  'rdev_minor',
  'atime_sec',
  'atime_nsec',
  'mtime_sec',
  'mtime_nsec',
  'ctime_sec',
  'ctime_nsec',
  'btime_sec',
  'btime_nsec',
  'dos_attrs',
  'generation',
  'parent',
  'target',
  'create_verifier',
  'next_cookie',
] as const;

/** `a.id, a.share_id, ...` (or unqualified without an alias). */
export function inodeColumns(alias?: string): string {
  return INODE_COLUMNS.map((c) => (alias ? `${alias}.${c}` : c)).join(', ');
}

/** An inode as the engine holds it inside a transaction: the public fields plus the cookie counter. */
export interface InodeRow extends Inode {
  nextCookie: number;
}

export function inodeRow(r: Record<string, unknown>): InodeRow {
  const n = (c: string) => toNumber(r[c], c);
  return {
    id: n('id'),
    shareId: n('share_id'),
    type: n('type') as FileType,
    mode: n('mode'),
    uid: n('uid'),
    gid: n('gid'),
    size: n('size'),
    nlink: n('nlink'),
    rdevMajor: n('rdev_major'),
    rdevMinor: n('rdev_minor'),
    atime: { sec: n('atime_sec'), nsec: n('atime_nsec') },
    mtime: { sec: n('mtime_sec'), nsec: n('mtime_nsec') },
    ctime: { sec: n('ctime_sec'), nsec: n('ctime_nsec') },
    btime: { sec: n('btime_sec'), nsec: n('btime_nsec') },
    dosAttrs: n('dos_attrs'),
    generation: n('generation'),
    parent: n('parent'),
    target: toBufferOrNull(r.target, 'target'),
    createVerifier: toBufferOrNull(r.create_verifier, 'create_verifier'),
    nextCookie: n('next_cookie'),
  };
}

/** The public Inode: a copy without engine-private fields. */
export function publicInode(i: InodeRow): Inode {
  return copyInode(i);
}
