// DOS attributes and times as SMB sets them: MS-FSCC 2.4.7 FileBasicInformation as SET_INFO input
// (with MS-FSA 2.1.5.14.2's 0 / -1 / -2 meanings), and the attribute rules of CREATE (MS-FSA
// 2.1.5.1.2 and 2.1.5.1.2.1). The attributes and creation time live in the metadata store
// (Inode.dosAttrs, Inode.btime), shared with NFS, which neither shows nor changes them.
import { VfsError } from '../vfs/errors.js';
import type { FileService, SetAttrs } from '../vfs/service.js';
import type { Identity, Inode, Timespec } from '../vfs/types.js';
import { DOS_ATTRS_STORED, DosAttributes, FileType } from '../vfs/types.js';
import { readFiletime, writeFiletime } from './codec.js';
import { Access, CreateDisposition } from './constants.js';
import { NtStatus, SmbStatusError } from './status.js';

/** One time field of a FileBasicInformation SET_INFO. */
export type TimeField =
  /** 0: leave it alone. */
  | { op: 'keep' }
  /** -1: leave it alone, and stop this open's own I/O from updating it. */
  | { op: 'freeze' }
  /** -2: let this open's I/O update it again. */
  | { op: 'thaw' }
  | { op: 'set'; time: Timespec };

export interface BasicInfoSet {
  creation: TimeField;
  access: TimeField;
  write: TimeField;
  change: TimeField;
  /** 0: leave them alone. */
  attributes: number;
}

export const BASIC_INFO_SIZE = 40;
const FREEZE = 0xffffffffffffffffn;
const THAW = 0xfffffffffffffffen;

function decodeTime(b: Buffer, at: number): TimeField {
  const v = b.readBigUInt64LE(at);
  if (v === 0n) return { op: 'keep' };
  if (v === FREEZE) return { op: 'freeze' };
  if (v === THAW) return { op: 'thaw' };
  // A LARGE_INTEGER below -2 (MS-FSA 2.1.5.14.2).
  if (v >= 0x8000000000000000n) throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'negative time in FileBasicInformation');
  return { op: 'set', time: readFiletime(b, at)! };
}

/** MS-FSCC 2.4.7: decodes a SET_INFO FileBasicInformation buffer (at least 40 bytes; the last 4 are reserved). */
export function decodeBasicInfoSet(b: Buffer): BasicInfoSet {
  if (b.length < BASIC_INFO_SIZE) throw new SmbStatusError(NtStatus.INFO_LENGTH_MISMATCH, 'FileBasicInformation shorter than 40 bytes');
  return {
    creation: decodeTime(b, 0),
    access: decodeTime(b, 8),
    write: decodeTime(b, 16),
    change: decodeTime(b, 24),
    attributes: b.readUInt32LE(32),
  };
}

/** The client side of decodeBasicInfoSet (tests and the round trip). */
export function encodeBasicInfoSet(x: BasicInfoSet): Buffer {
  const b = Buffer.alloc(BASIC_INFO_SIZE);
  const put = (at: number, t: TimeField): void => {
    if (t.op === 'freeze') b.writeBigUInt64LE(FREEZE, at);
    else if (t.op === 'thaw') b.writeBigUInt64LE(THAW, at);
    else if (t.op === 'set') writeFiletime(b, at, t.time);
  };
  put(0, x.creation);
  put(8, x.access);
  put(16, x.write);
  put(24, x.change);
  b.writeUInt32LE(x.attributes >>> 0, 32);
  return b;
}

/**
 * Times an open holds against its own writes (MS-FSA Open.UserSetModificationTime and
 * UserSetChangeTime): set explicitly or frozen with -1, they stay as set after this open's WRITEs.
 */
export interface HeldTimes {
  mtime?: Timespec;
  ctime?: Timespec;
}

/**
 * Puts an open's held times back after one of its WRITEs (the data is written by then: a caller
 * who may no longer set times only loses the hold, the WRITE still succeeds).
 */
export async function restoreHeldTimes(fs: FileService, handle: Buffer, id: Identity, h: HeldTimes): Promise<void> {
  try {
    await fs.setattr(handle, id, { ...(h.mtime ? { mtime: h.mtime } : {}), ...(h.ctime ? { ctime: h.ctime } : {}) });
  } catch (e) {
    if (!(e instanceof VfsError && (e.errno === 'PERM' || e.errno === 'ACCES'))) throw e;
  }
}

/**
 * What a FileBasicInformation SET_INFO changes: the vfs attribute set, and the times the open holds
 * from now on (null: none). `inode` is the file as it is now.
 */
export function basicInfoChanges(
  set: BasicInfoSet,
  inode: Inode,
  held: HeldTimes | null,
): { attrs: SetAttrs; held: HeldTimes | null; changes: boolean } {
  const isDir = inode.type === FileType.DIR;
  const attrs: SetAttrs = {};
  if (set.attributes !== 0) {
    // MS-FSA 2.1.5.14.2: DIRECTORY on a file, TEMPORARY on a directory are invalid.
    if ((set.attributes & DosAttributes.DIRECTORY) !== 0 && !isDir)
      throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'FILE_ATTRIBUTE_DIRECTORY on a file');
    if ((set.attributes & DosAttributes.TEMPORARY) !== 0 && isDir)
      throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'FILE_ATTRIBUTE_TEMPORARY on a directory');
    // SPARSE_FILE changes only through FSCTL_SET_SPARSE.
    attrs.dosAttrs = (set.attributes & DOS_ATTRS_STORED & ~DosAttributes.SPARSE_FILE) | (inode.dosAttrs & DosAttributes.SPARSE_FILE);
  }
  if (set.creation.op === 'set') attrs.btime = set.creation.time;
  if (set.access.op === 'set') attrs.atime = set.access.time;
  if (set.write.op === 'set') attrs.mtime = set.write.time;
  if (set.change.op === 'set') attrs.ctime = set.change.time;
  let next: HeldTimes = { ...held };
  const hold = (f: TimeField, which: 'mtime' | 'ctime'): void => {
    if (f.op === 'set') next[which] = f.time;
    else if (f.op === 'freeze') next[which] = inode[which];
    else if (f.op === 'thaw') delete next[which];
  };
  hold(set.write, 'mtime');
  hold(set.change, 'ctime');
  // An explicit time moves ctime to now unless the client set that too; a held ctime stays held.
  if (next.ctime && attrs.ctime === undefined && Object.keys(attrs).length > 0) attrs.ctime = next.ctime;
  if (next.mtime === undefined && next.ctime === undefined) next = {};
  const changes = Object.keys(attrs).length > 0;
  return { attrs, held: Object.keys(next).length > 0 ? next : null, changes };
}

/** The DOS attributes SMB reports for an inode: stored bits, DIRECTORY from the type, NORMAL for none. */
export function reportedAttributes(inode: Inode, name?: string): number {
  const isDir = inode.type === FileType.DIR;
  let a = inode.dosAttrs & DOS_ATTRS_STORED;
  if (isDir) a |= DosAttributes.DIRECTORY;
  // A file nobody may write is read-only to SMB clients too (the bit set by NFS chmod a-w).
  else if ((inode.mode & 0o222) === 0) a |= DosAttributes.READONLY;
  // Dot files are hidden, as Samba's default "hide dot files" shows them.
  if (name !== undefined && name.length > 1 && name.startsWith('.') && name !== '..') a |= DosAttributes.HIDDEN;
  return a === 0 ? DosAttributes.NORMAL : a;
}

/** MS-FSA 2.1.5.1.2: the attributes a new file or directory gets from CREATE's FileAttributes. */
export function newFileAttributes(requested: number, dir: boolean): number {
  const a = requested & DOS_ATTRS_STORED & ~DosAttributes.SPARSE_FILE;
  return dir ? a & ~DosAttributes.TEMPORARY : a | DosAttributes.ARCHIVE;
}

/**
 * MS-FSA 2.1.5.1: CREATE of a directory with FILE_ATTRIBUTE_TEMPORARY is INVALID_PARAMETER; a new
 * file made READONLY and delete-on-close at once is CANNOT_DELETE (as opening an existing
 * read-only file for delete on close is, checkOpenExisting).
 */
export function checkNewAttributes(requested: number, dir: boolean, deleteOnClose = false): void {
  if (dir && (requested & DosAttributes.TEMPORARY) !== 0)
    throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'a directory cannot be FILE_ATTRIBUTE_TEMPORARY');
  if (!dir && deleteOnClose && (requested & DosAttributes.READONLY) !== 0)
    throw new SmbStatusError(NtStatus.CANNOT_DELETE, 'a new read-only file cannot be delete-on-close');
}

const WRITE_ACCESS = Access.FILE_WRITE_DATA | Access.FILE_APPEND_DATA;

/**
 * MS-FSA 2.1.5.1.2.1: opening an existing file. A read-only file refuses write access and delete
 * on close; an overwrite must name the HIDDEN and SYSTEM attributes the file has. Returns the
 * attributes an overwrite leaves (null when the disposition does not overwrite).
 */
export function checkOpenExisting(
  inode: Inode,
  desired: number,
  disposition: number,
  requested: number,
  deleteOnClose: boolean,
): number | null {
  const isDir = inode.type === FileType.DIR;
  const readOnly = (inode.dosAttrs & DosAttributes.READONLY) !== 0;
  if (readOnly && !isDir) {
    if (deleteOnClose) throw new SmbStatusError(NtStatus.CANNOT_DELETE, 'the file is read-only');
    if ((desired & WRITE_ACCESS) !== 0) throw new SmbStatusError(NtStatus.ACCESS_DENIED, 'the file is read-only');
  }
  const overwrite =
    disposition === CreateDisposition.SUPERSEDE ||
    disposition === CreateDisposition.OVERWRITE ||
    disposition === CreateDisposition.OVERWRITE_IF;
  if (!overwrite || isDir) return null;
  if (readOnly) throw new SmbStatusError(NtStatus.ACCESS_DENIED, 'the file is read-only');
  const hs = DosAttributes.HIDDEN | DosAttributes.SYSTEM;
  if ((inode.dosAttrs & hs & ~requested) !== 0) throw new SmbStatusError(NtStatus.ACCESS_DENIED, 'overwrite must keep HIDDEN and SYSTEM');
  return newFileAttributes(requested, false);
}
