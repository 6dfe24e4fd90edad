// MS-FSCC 2.4 file information, 2.5 file system information and the directory entry classes, as
// this server reports them from a vfs Inode. Encoders only: SET_INFO's few inputs are read in
// the handlers.
import type { Inode, Timespec } from '../vfs/types.js';
import { reportedAttributes } from './attrs.js';
import { FileType } from '../vfs/types.js';
import { SmbWriter, utf16, writeFiletime } from './codec.js';
import { FileAttributes, FileInfoClass } from './constants.js';
import type { FileTimesAndSizes } from './messages.js';
import { shownWriteTime } from './writetime.js';

export const ALLOCATION_UNIT = 4096;

/** The file's times, sizes and attributes (creation time and DOS attributes as stored; see attrs.ts). */
export function fileInfoOf(inode: Inode, name?: string, allocation = 0): FileTimesAndSizes {
  const isDir = inode.type === FileType.DIR;
  const size = isDir ? 0 : inode.size;
  // A client-set allocation size (SET_INFO FileAllocationInformation, kept in the store) shows
  // while the data takes less.
  return {
    creationTime: inode.btime,
    lastAccessTime: inode.atime,
    lastWriteTime: shownWriteTime(inode),
    changeTime: inode.ctime,
    allocationSize: Math.max(Math.ceil(size / ALLOCATION_UNIT) * ALLOCATION_UNIT, isDir ? 0 : allocation),
    endOfFile: size,
    fileAttributes: reportedAttributes(inode, name),
  };
}

function writeTimes(w: SmbWriter, i: FileTimesAndSizes): void {
  w.filetime(i.creationTime).filetime(i.lastAccessTime).filetime(i.lastWriteTime).filetime(i.changeTime);
}

/** What the file-class encoders need besides the inode. */
export interface OpenView {
  inode: Inode;
  /** The path from the share root with backslashes, as FileNameInformation reports it ("\\a\\b"). */
  path: string;
  grantedAccess: number;
  position: number;
  deletePending: boolean;
  /** EaSize (ea.ts eaSizeOf); 0 when not given. */
  eaSize?: number;
  /** FileModeInformation of the open (0 when not given). */
  mode?: number;
  /** The allocation size a client set (0: none). */
  allocation?: number;
}

/** Fixed sizes of the file classes (the minimum OutputBufferLength; variable ones say so). */
export const FILE_CLASS_MIN: Readonly<Record<number, number>> = Object.freeze({
  [FileInfoClass.FileBasicInformation]: 40,
  [FileInfoClass.FileStandardInformation]: 24,
  [FileInfoClass.FileInternalInformation]: 8,
  [FileInfoClass.FileEaInformation]: 4,
  [FileInfoClass.FileAccessInformation]: 4,
  [FileInfoClass.FileNameInformation]: 4,
  [FileInfoClass.FilePositionInformation]: 8,
  [FileInfoClass.FileModeInformation]: 4,
  [FileInfoClass.FileAlignmentInformation]: 4,
  // The sizes below which Windows answers INFO_LENGTH_MISMATCH (and between which and the full
  // size BUFFER_OVERFLOW), as smbtorture's getinfo.qfile_buffercheck measures them.
  [FileInfoClass.FileAllInformation]: 104,
  [FileInfoClass.FileAlternateNameInformation]: 8,
  [FileInfoClass.FileStreamInformation]: 32,
  [FileInfoClass.FileNetworkOpenInformation]: 56,
  [FileInfoClass.FileAttributeTagInformation]: 8,
  [FileInfoClass.FileCompressionInformation]: 16,
});

/** MS-FSCC 2.4.30 FileNormalizedNameInformation: SMB 3.1.1 only. */
export const FILE_NORMALIZED_NAME_INFORMATION = 48;

/** Classes whose output may be cut short with STATUS_BUFFER_OVERFLOW (the others need their full size). */
export const VARIABLE_FILE_CLASSES: ReadonlySet<number> = new Set([
  FileInfoClass.FileAllInformation,
  FileInfoClass.FileNameInformation,
  FileInfoClass.FileAlternateNameInformation,
  FileInfoClass.FileStreamInformation,
]);

/** Encodes one QUERY_INFO file class; null for a class this server does not answer. */
export function encodeFileInfo(cls: number, o: OpenView): Buffer | null {
  const w = new SmbWriter(128);
  const i = fileInfoOf(o.inode, undefined, o.allocation);
  const isDir = o.inode.type === FileType.DIR;
  switch (cls) {
    case FileInfoClass.FileBasicInformation: // 2.4.7
      writeTimes(w, i);
      w.u32(i.fileAttributes).u32(0);
      break;
    case FileInfoClass.FileStandardInformation: // 2.4.41
      writeStandard(w, i, o, isDir);
      break;
    case FileInfoClass.FileInternalInformation: // 2.4.22
      w.u64(o.inode.id);
      break;
    case FileInfoClass.FileEaInformation: // 2.4.13
      w.u32(o.eaSize ?? 0);
      break;
    case FileInfoClass.FileAccessInformation: // 2.4.1
      w.u32(o.grantedAccess);
      break;
    case FileInfoClass.FileNameInformation: {
      // 2.4.27
      const n = utf16(o.path);
      w.u32(n.length).bytes(n);
      break;
    }
    case FileInfoClass.FileAlternateNameInformation: {
      // 2.4.5 (FILE_NAME_INFORMATION layout): the last component's 8.3 name; the root has none.
      const last = o.path.slice(o.path.lastIndexOf('\\') + 1).replace(/:.*$/, '');
      const n = utf16(last === '' ? '' : shortNameOf(last));
      w.u32(n.length).bytes(n);
      break;
    }
    case FileInfoClass.FilePositionInformation: // 2.4.35
      w.u64(o.position);
      break;
    case FileInfoClass.FileModeInformation: // 2.4.26
      w.u32(o.mode ?? 0);
      break;
    case FileInfoClass.FileAlignmentInformation: // 2.4.3 FILE_BYTE_ALIGNMENT
      w.u32(0);
      break;
    case FileInfoClass.FileAllInformation: {
      // 2.4.2: Basic, Standard, Internal, Ea, Access, Position, Mode, Alignment, Name
      writeTimes(w, i);
      w.u32(i.fileAttributes).u32(0);
      writeStandard(w, i, o, isDir);
      w.u64(o.inode.id)
        .u32(o.eaSize ?? 0)
        .u32(o.grantedAccess)
        .u64(o.position)
        .u32(o.mode ?? 0)
        .u32(0);
      const n = utf16(o.path);
      w.u32(n.length).bytes(n);
      break;
    }
    case FileInfoClass.FileStreamInformation: // 2.4.43: the unnamed data stream of a file
      if (!isDir) {
        const n = utf16('::$DATA');
        w.u32(0).u32(n.length).u64(i.endOfFile).u64(i.allocationSize).bytes(n);
      }
      break;
    case FileInfoClass.FileNetworkOpenInformation: // 2.4.29
      writeTimes(w, i);
      w.u64(i.allocationSize).u64(i.endOfFile).u32(i.fileAttributes).u32(0);
      break;
    case FileInfoClass.FileAttributeTagInformation: // 2.4.6
      w.u32(i.fileAttributes).u32(0);
      break;
    case FileInfoClass.FileCompressionInformation: // 2.4.9: not compressed
      w.u64(i.endOfFile).u16(0).u8(0).u8(0).u8(0).zeros(3);
      break;
    default:
      return null;
  }
  return w.finish();
}

function writeStandard(w: SmbWriter, i: FileTimesAndSizes, o: OpenView, isDir: boolean): void {
  w.u64(i.allocationSize)
    .u64(i.endOfFile)
    // A link whose deletion is pending no longer counts (what Windows reports).
    .u32(o.deletePending ? Math.max(0, o.inode.nlink - 1) : Math.max(1, o.inode.nlink))
    .u8(o.deletePending ? 1 : 0)
    .u8(isDir ? 1 : 0)
    .u16(0);
}

// ---- 2.5 file system information ------------------------------------------------------------------

export interface FsView {
  totalBytes: number;
  freeBytes: number;
  /** A stable 32-bit serial (the share id). */
  serial: number;
  label: string;
  created: Timespec;
}

/** As FILE_CLASS_MIN, for the file system classes (getinfo.qfs_buffercheck). */
export const FS_CLASS_MIN: Readonly<Record<number, number>> = Object.freeze({ 1: 24, 3: 24, 4: 8, 5: 16, 6: 48, 7: 32, 8: 64, 11: 28 });
export const VARIABLE_FS_CLASSES: ReadonlySet<number> = new Set([1, 5]);

/** The file system name clients see: Samba answers "NTFS" too, since clients key features off it. */
const FS_NAME = 'NTFS';
/** MS-FSCC 2.5.1 FileSystemAttributes: what clients may count on here. */
export const FsAttributes = Object.freeze({
  CASE_SENSITIVE_SEARCH: 0x00000001,
  CASE_PRESERVED_NAMES: 0x00000002,
  UNICODE_ON_DISK: 0x00000004,
  /** Security descriptors are kept (stored DACLs: acl.ts); Explorer shows its Security tab. */
  PERSISTENT_ACLS: 0x00000008,
  /** Holes are unwritten blocks: ioctl.ts, vfs/sparse.ts. */
  SUPPORTS_SPARSE_FILES: 0x00000040,
  /** Named streams (streams.ts): macOS keeps AFP_AfpInfo and resource forks there, not in ._ files. */
  NAMED_STREAMS: 0x00040000,
  /** FileLinkInformation makes hard links. */
  SUPPORTS_HARD_LINKS: 0x00400000,
  /** Extended attributes (ea.ts). */
  SUPPORTS_EXTENDED_ATTRIBUTES: 0x00800000,
});
const FS_ATTRIBUTES = Object.values(FsAttributes).reduce((a, b) => a | b, 0);

export function encodeFsInfo(cls: number, fs: FsView): Buffer | null {
  const w = new SmbWriter(64);
  const sectorsPerUnit = 8;
  const bytesPerSector = ALLOCATION_UNIT / sectorsPerUnit;
  const total = Math.floor(fs.totalBytes / ALLOCATION_UNIT);
  const free = Math.floor(fs.freeBytes / ALLOCATION_UNIT);
  switch (cls) {
    case 1: {
      // 2.5.9 FileFsVolumeInformation
      const label = utf16(fs.label);
      w.filetime(fs.created).u32(fs.serial).u32(label.length).u8(0).u8(0).bytes(label);
      break;
    }
    case 3: // 2.5.8 FileFsSizeInformation
      w.u64(total).u64(free).u32(sectorsPerUnit).u32(bytesPerSector);
      break;
    case 4: // 2.5.10 FileFsDeviceInformation: FILE_DEVICE_DISK, no characteristics
      w.u32(0x00000007).u32(0);
      break;
    case 5: {
      // 2.5.1 FileFsAttributeInformation
      const name = utf16(FS_NAME);
      w.u32(FS_ATTRIBUTES).u32(255).u32(name.length).bytes(name);
      break;
    }
    case 6: // 2.5.2 FileFsControlInformation: no quotas (thresholds and limits "none": all ones)
      w.u64(0).u64(0).u64(0).bytes(Buffer.alloc(16, 0xff)).u32(0).u32(0);
      break;
    case 8: // 2.5.6 FileFsObjectIdInformation: the share's serial as its object id, no extended info
      w.u32(fs.serial).zeros(60);
      break;
    case 7: // 2.5.4 FileFsFullSizeInformation
      w.u64(total).u64(free).u64(free).u32(sectorsPerUnit).u32(bytesPerSector);
      break;
    case 11: // 2.5.7 FileFsSectorSizeInformation: 512-byte sectors, aligned
      w.u32(bytesPerSector).u32(bytesPerSector).u32(bytesPerSector).u32(bytesPerSector).u32(0x3).u32(0).u32(0);
      break;
    default:
      return null;
  }
  return w.finish();
}

// ---- 2.4 directory entry classes (QUERY_DIRECTORY) -------------------------------------------------

export const DIRECTORY_CLASSES: ReadonlySet<number> = new Set([
  FileInfoClass.FileDirectoryInformation,
  FileInfoClass.FileFullDirectoryInformation,
  FileInfoClass.FileBothDirectoryInformation,
  FileInfoClass.FileNamesInformation,
  FileInfoClass.FileIdBothDirectoryInformation,
  FileInfoClass.FileIdFullDirectoryInformation,
]);

/** Fixed part of each directory class (the name follows). */
function dirFixedSize(cls: number): number {
  switch (cls) {
    case FileInfoClass.FileDirectoryInformation: // 2.4.10
      return 64;
    case FileInfoClass.FileFullDirectoryInformation: // 2.4.14
      return 68;
    case FileInfoClass.FileBothDirectoryInformation: // 2.4.8
      return 94;
    case FileInfoClass.FileNamesInformation: // 2.4.28
      return 12;
    case FileInfoClass.FileIdBothDirectoryInformation: // 2.4.17
      return 104;
    case FileInfoClass.FileIdFullDirectoryInformation: // 2.4.18
      return 80;
    default:
      throw new RangeError(`not a directory class: ${cls}`);
  }
}

/** Bytes one entry takes (unpadded). */
export function dirEntrySize(cls: number, name: Buffer): number {
  return dirFixedSize(cls) + name.length;
}

/**
 * Writes one directory entry at `at` of `buf` (zeroed beforehand by the caller), with
 * NextEntryOffset 0 (the caller links entries). `name` is UTF-16LE.
 *
 * `inode` null writes the name and `fileId` only, as NFS READDIR gives a name and its fileid3: what
 * a caller who may read the directory but not search it learns of an entry. Times, sizes and EaSize
 * stay zero and FileAttributes is FILE_ATTRIBUTE_NORMAL (not even DIRECTORY: the type is an
 * attribute too, which NFS withholds with the others).
 */
export function writeDirEntry(
  buf: Buffer,
  at: number,
  cls: number,
  fileId: number,
  inode: Inode | null,
  name: Buffer,
  displayName: string,
  eaSize = 0,
): void {
  if (cls === FileInfoClass.FileNamesInformation) {
    buf.writeUInt32LE(0, at + 4);
    buf.writeUInt32LE(name.length, at + 8);
    name.copy(buf, at + 12);
    return;
  }
  if (inode === null) buf.writeUInt32LE(FileAttributes.NORMAL, at + 56);
  else {
    const i = fileInfoOf(inode, displayName);
    writeFiletime(buf, at + 8, i.creationTime);
    writeFiletime(buf, at + 16, i.lastAccessTime);
    writeFiletime(buf, at + 24, i.lastWriteTime);
    writeFiletime(buf, at + 32, i.changeTime);
    writeU64(buf, at + 40, i.endOfFile);
    writeU64(buf, at + 48, i.allocationSize);
    buf.writeUInt32LE(i.fileAttributes, at + 56);
  }
  buf.writeUInt32LE(name.length, at + 60);
  // EaSize at 64 for all but FileDirectoryInformation.
  if (cls !== FileInfoClass.FileDirectoryInformation) buf.writeUInt32LE(eaSize, at + 64);
  switch (cls) {
    case FileInfoClass.FileDirectoryInformation:
      name.copy(buf, at + 64);
      break;
    case FileInfoClass.FileFullDirectoryInformation:
      name.copy(buf, at + 68);
      break;
    case FileInfoClass.FileBothDirectoryInformation:
      writeShortName(buf, at, displayName);
      name.copy(buf, at + 94);
      break;
    case FileInfoClass.FileIdBothDirectoryInformation:
      writeShortName(buf, at, displayName);
      writeU64(buf, at + 96, fileId);
      name.copy(buf, at + 104);
      break;
    case FileInfoClass.FileIdFullDirectoryInformation:
      writeU64(buf, at + 72, fileId);
      name.copy(buf, at + 80);
      break;
    default:
      throw new RangeError(`not a directory class: ${cls}`);
  }
}

/** ShortNameLength (at 68) and ShortName (at 70, 24 bytes) of the Both classes: empty when the name is 8.3 already. */
function writeShortName(buf: Buffer, at: number, displayName: string): void {
  if (displayName === '.' || displayName === '..') return;
  const short = shortNameOf(displayName);
  if (short === displayName) return;
  const n = utf16(short).subarray(0, 24);
  buf[at + 68] = n.length;
  n.copy(buf, at + 70);
}

function writeU64(buf: Buffer, at: number, v: number): void {
  buf.writeUInt32LE((v % 2 ** 32) >>> 0, at);
  buf.writeUInt32LE(Math.floor(v / 2 ** 32) >>> 0, at + 4);
}

// ---- wildcard matching (MS-FSA 2.1.4.4 FsRtlIsNameInExpression, case-insensitive) ------------------

/**
 * The longest QUERY_DIRECTORY pattern: MS-FSA 2.1.5.6.3 requires a valid filename component
 * (wildcards allowed), and MS-FSCC 2.1.5.2 caps those at 255 characters.
 */
export const MAX_PATTERN_LENGTH = 255;

const STAR = 0x2a; // '*'
const DOS_STAR = 0x3c; // '<'
const QUESTION = 0x3f; // '?'
const DOS_QM = 0x3e; // '>'
const DOS_DOT = 0x22; // '"'
const DOT = 0x2e; // '.'

/**
 * Whether `name` matches `pattern`: `*` any run, `?` one character, and the DOS forms `<` (like `*`
 * up to the last dot), `>` (like `?`, or nothing at a dot/end), `"` (a dot, or nothing at the end).
 * A dynamic program over the pattern from its end: at most (pattern length + 1) * (name length + 1)
 * steps and two rows of memory, whatever the pattern (`meter.steps` counts them, for tests).
 */
export function matchPattern(pattern: string, name: string, meter?: { steps: number }): boolean {
  if (pattern === '*' || pattern === '' || pattern === '*.*' || pattern === '<.*') return true;
  const p = collapseStars(pattern.toUpperCase());
  const n = name.toUpperCase();
  const len = n.length;
  // '<' may not consume the name's last dot (it matches up to it).
  const lastDot = n.lastIndexOf('.');
  // next[j]: whether p[i + 1..] matches n[j..]; cur[j]: whether p[i..] does.
  let next = new Uint8Array(len + 1);
  let cur = new Uint8Array(len + 1);
  next[len] = 1;
  let steps = 0;
  for (let i = p.length - 1; i >= 0; i--) {
    const c = p.charCodeAt(i);
    // The cell past the name's end, then one tight loop per kind of pattern character.
    const empty = c === STAR || c === DOS_STAR || c === DOS_QM || c === DOS_DOT ? next[len]! : 0;
    cur[len] = empty;
    let any = empty;
    switch (c) {
      case STAR:
        for (let j = len - 1; j >= 0; j--) any |= cur[j] = next[j]! | cur[j + 1]!;
        break;
      case DOS_STAR:
        for (let j = len - 1; j >= 0; j--) any |= cur[j] = next[j]! | (j !== lastDot ? cur[j + 1]! : 0);
        break;
      case QUESTION:
        for (let j = len - 1; j >= 0; j--) any |= cur[j] = next[j + 1]!;
        break;
      case DOS_QM:
        for (let j = len - 1; j >= 0; j--) any |= cur[j] = (n.charCodeAt(j) !== DOT ? next[j + 1]! : 0) | next[j]!;
        break;
      case DOS_DOT:
        for (let j = len - 1; j >= 0; j--) any |= cur[j] = n.charCodeAt(j) === DOT ? next[j + 1]! : 0;
        break;
      default:
        for (let j = len - 1; j >= 0; j--) any |= cur[j] = n.charCodeAt(j) === c ? next[j + 1]! : 0;
    }
    steps += len + 1;
    // Nothing of the name matches this suffix of the pattern: no longer one can either.
    if (any === 0) {
      if (meter) meter.steps += steps;
      return false;
    }
    const t = next;
    next = cur;
    cur = t;
  }
  if (meter) meter.steps += steps;
  return next[0] === 1;
}

/**
 * A run of `*` and `<` matches what one `*` does if it holds a `*`, else what one `<` does: each
 * matches any run (`<` one without the last dot) including the empty one, and such runs join.
 */
function collapseStars(p: string): string {
  let out = '';
  for (let i = 0; i < p.length; i++) {
    const c = p[i]!;
    if (c !== '*' && c !== '<') {
      out += c;
      continue;
    }
    let star = c === '*';
    while (i + 1 < p.length && (p[i + 1] === '*' || p[i + 1] === '<')) if (p[++i] === '*') star = true;
    out += star ? '*' : '<';
  }
  return out;
}

// ---- 8.3 short names (MS-FSCC 2.1.5.2.1) for FileAlternateNameInformation ------------------------

const SHORT_CHARS = /^[A-Z0-9!#$%&'()\-@^_`{}~]+$/;

/**
 * The 8.3 name clients see for `name`: the name itself, upper-cased, when it already is a valid
 * 8.3 name; else the first letters of the base, "~", two characters of a hash of the whole name
 * (stable: the same name always gets the same short name) and the first three of the extension.
 * Names are not stored, so two long names may share a short name (unlike NTFS).
 */
export function shortNameOf(name: string): string {
  const up = name.toUpperCase();
  const dot = up.lastIndexOf('.');
  const base = dot > 0 ? up.slice(0, dot) : up;
  const ext = dot > 0 ? up.slice(dot + 1) : '';
  if (base.length >= 1 && base.length <= 8 && ext.length <= 3 && SHORT_CHARS.test(base) && (ext === '' || SHORT_CHARS.test(ext)))
    return ext === '' ? base : `${base}.${ext}`;
  const clean = (s: string): string => [...s].filter((ch) => SHORT_CHARS.test(ch)).join('');
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (Math.imul(h, 31) + name.charCodeAt(i)) >>> 0;
  const tag = (h % 1296).toString(36).toUpperCase().padStart(2, '0');
  const b = clean(base.replace(/\./g, '')).slice(0, 5) || 'FILE';
  const e = clean(ext).slice(0, 3);
  return e === '' ? `${b}~${tag}` : `${b}~${tag}.${e}`;
}
