// The file commands of a disk tree: CREATE, CLOSE, READ, WRITE, FLUSH, QUERY_DIRECTORY,
// QUERY_INFO, SET_INFO (MS-SMB2 3.3.5.9 - 3.3.5.21). They call only the file service; a failure
// is thrown (SmbStatusError, VfsError) and becomes an NTSTATUS in the dispatcher.
import { randomInt } from 'node:crypto';
import type { Logger } from 'pino';
import { errorMessage } from '../error-message.js';
import { KeyedSerial } from '../keyed-serial.js';
import type { MetadataStore } from '../meta/store.js';
import type { DataObserver } from '../obs/metrics.js';
import { VfsError } from '../vfs/errors.js';
import { decodeHandle } from '../vfs/handle.js';
import { Caching, type RenameEvent } from '../vfs/locks/opens.js';
import { mayDeleteFromSticky, newOwner } from '../vfs/permissions.js';
import { CreateMode, type FileService, type Share } from '../vfs/service.js';
import type { Identity, Inode } from '../vfs/types.js';
import { DosAttributes, FileType, nowTimespec } from '../vfs/types.js';
import {
  basicInfoChanges,
  checkNewAttributes,
  checkOpenExisting,
  decodeBasicInfoSet,
  newFileAttributes,
  restoreHeldTimes,
} from './attrs.js';
import { fromUtf16, SmbWriter, utf16 } from './codec.js';
import { lookupCaseless } from './names.js';
import { createStreamOpen, splitStreamPath, streamInformation, streamView } from './streams.js';
import { FILE_NORMALIZED_NAME_INFORMATION } from './fscc.js';
import {
  Access,
  CLOSE_FLAG_POSTQUERY_ATTRIB,
  CreateAction,
  CreateDisposition,
  CreateOptions,
  FileAttributes,
  FileInfoClass,
  FILE_ALL_ACCESS,
  InfoType,
  QueryDirectoryFlags,
  WRITE_RIGHTS,
  WRITEFLAG_WRITE_THROUGH,
} from './constants.js';
import {
  DIRECTORY_CLASSES,
  dirEntrySize,
  encodeFileInfo,
  encodeFsInfo,
  FILE_CLASS_MIN,
  fileInfoOf,
  FS_CLASS_MIN,
  matchPattern,
  MAX_PATTERN_LENGTH,
  VARIABLE_FILE_CLASSES,
  VARIABLE_FS_CLASSES,
  writeDirEntry,
} from './fscc.js';
import {
  type CreateContext,
  type CreateRequest,
  encodeCreateContexts,
  mxacResponse,
  qfidResponse,
  type QueryDirectoryRequest,
  type QueryInfoRequest,
  type ReadRequest,
  type SetInfoRequest,
  type WriteRequest,
  writeCloseResponse,
  writeCreateResponse,
} from './messages.js';
import { fileIdOf, Open, OPEN_MODE_BITS, type Session, type Tree } from './state.js';
import * as oplock from './oplock.js';
import * as writeTime from './writetime.js';
import {
  checkOwnerChange,
  decodeSecurityDescriptor,
  newFileOwner,
  posixChangeOf,
  type SecurityDescriptor,
  SecurityInformation,
  unixGroupSid,
  unixUserSid,
} from './security.js';
import { daclMask, describe, grantsOf, inheritDacl, logonOf, newInodeDacl, storedDacl, storeDacl, storedForm } from './acl.js';
import { type DurableTable, durableV2Request, grantDurable, isReconnect } from './durable.js';
import { aaplReply } from './aapl.js';
import { checkEaKnowledge, decodeFullEaList, EA_KIND, type EaChange, eaChanges, eaRecords, eaSizeOf, queryEas, storeEas } from './ea.js';
import { allocationOf, resetAllocation, setAllocation } from './allocation.js';
import { createFirst } from './create-first.js';
import { NtStatus, SmbStatusError } from './status.js';

const fail = (status: NtStatus, message?: string): SmbStatusError => new SmbStatusError(status, message);

/** MS-SMB2 3.3.5.9 / MS-DTYP 2.4.3: generic rights mapped to file rights. */
export function mapGenericRights(mask: number): number {
  let m = mask & 0x0fffffff;
  if (mask & Access.GENERIC_READ) m |= 0x00120089;
  if (mask & Access.GENERIC_WRITE) m |= 0x00120116;
  if (mask & Access.GENERIC_EXECUTE) m |= 0x001200a0;
  if (mask & Access.GENERIC_ALL) m |= FILE_ALL_ACCESS;
  return m >>> 0;
}

/** Characters a path component may not hold (MS-FSCC 2.1.5.2, plus '/' which POSIX names cannot). */
const INVALID_CHARS = new Set(['"', '*', '/', ':', '<', '>', '?', '|']);
const invalidName = (p: string): boolean => {
  for (const ch of p) if (ch.charCodeAt(0) < 0x20 || INVALID_CHARS.has(ch)) return true;
  return false;
};

/**
 * A CREATE or rename name: components, with the unnamed data stream suffix removed. '/' separates
 * components like '\\' (as smbd takes it; smbtorture's timestamps tests open "dir/file"): no
 * name here can hold a '/', so it cannot mean anything else.
 */
export function parsePath(raw: string): string[] {
  // "file::$DATA" names the file itself; CREATE handles named streams before it gets here.
  const split = splitStreamPath(raw);
  if (split.stream !== null) throw fail(NtStatus.OBJECT_NAME_NOT_FOUND, 'a named stream is not a file path');
  let s = split.path.replaceAll('/', '\\');
  while (s.startsWith('\\')) s = s.slice(1);
  while (s.endsWith('\\')) s = s.slice(0, -1);
  if (s === '') return [];
  const parts = s.split('\\');
  for (const p of parts) {
    if (p === '..') throw fail(NtStatus.OBJECT_PATH_SYNTAX_BAD, `".." in "${raw}"`);
    if (p === '' || p === '.' || invalidName(p)) throw fail(NtStatus.OBJECT_NAME_INVALID, `invalid name "${raw}"`);
    if (Buffer.byteLength(p) > 255) throw fail(NtStatus.OBJECT_NAME_INVALID, 'name component longer than 255 bytes');
  }
  return parts;
}

export interface FileContext {
  fs: FileService;
  session: Session;
  tree: Tree;
  share: Share;
  /** The caller, after the share's root squash (FileService.squash): as the vfs sees it. */
  id: Identity;
  /** Bytes a READ / WRITE / QUERY_* may move (the negotiated maxima). */
  maxRead: number;
  maxWrite: number;
  maxTransact: number;
  data?: DataObserver;
  /** The connection's client GUID and notification path, for oplocks and leases. */
  caching?: oplock.CachingContext;
  /** Durable opens without a connection (DHnC reconnects), durable.ts. */
  durable?: DurableTable;
  /** CREATE: called when it must wait for a client to acknowledge a break (it goes async then). */
  onBreakWait?: () => void;
  /** The connection speaks a 3.x dialect (3.0, 3.0.2, 3.1.1). */
  smb3?: boolean;
  /** The connection's logger: what a client's answer cannot tell (a failed undo). */
  log?: Logger | undefined;
}

/** Walks to the parent directory of `parts` (all but the last component). */
export async function walkParent(c: FileContext, parts: string[]): Promise<Buffer> {
  let dir = c.fs.handleOf(c.share, await c.fs.root(c.share));
  for (let i = 0; i < parts.length - 1; i++) {
    try {
      const name = Buffer.from(parts[i]!);
      const inode = (await lookupOrNull(c, dir, name)) ?? (await lookupCaseless(c, dir, name))?.inode;
      if (!inode || inode.type !== FileType.DIR) throw fail(NtStatus.OBJECT_PATH_NOT_FOUND);
      dir = c.fs.handleOf(c.share, inode);
    } catch (e) {
      // NOENT: the directory went between the lookup and the scan of it (lookupCaseless).
      if (e instanceof VfsError && (e.errno === 'NOENT' || e.errno === 'NOTDIR')) throw fail(NtStatus.OBJECT_PATH_NOT_FOUND);
      throw e;
    }
  }
  return dir;
}

export async function lookupOrNull(c: FileContext, dir: Buffer, name: Buffer): Promise<Inode | null> {
  try {
    return (await c.fs.lookup(dir, name, c.id)).inode;
  } catch (e) {
    if (e instanceof VfsError && e.errno === 'NOENT') return null;
    throw e;
  }
}

/**
 * Whether the caller may change nothing on the tree now: it was so at TREE_CONNECT, or the share
 * was made read-only or the caller's grant lowered since (the vfs's own check, FileService.writer).
 */
export function readOnlyNow(c: FileContext): boolean {
  if (c.tree.readOnly) return true;
  try {
    c.fs.writer(c.share, c.id);
    return false;
  } catch (e) {
    if (e instanceof VfsError) return true;
    throw e;
  }
}

/** What the caller may do to `inode`: the tree's maximum cut down by the POSIX mode bits. */
export function maximalAccessOf(c: FileContext, inode: Inode): number {
  const bits = c.fs.accessBits(c.share, inode, c.id);
  const readOnly = readOnlyNow(c);
  let m = Access.FILE_READ_ATTRIBUTES | Access.READ_CONTROL | Access.SYNCHRONIZE;
  // EAs are read with the data's permission (Linux's getxattr of user.* needs read permission),
  // as the DACL security.ts describes for the mode says (FILE_GENERIC_READ holds both); writing
  // them comes with the write permission below (FILE_GENERIC_WRITE holds FILE_WRITE_EA).
  if (bits.read) m |= Access.FILE_READ_DATA | Access.FILE_READ_EA;
  if (bits.exec || inode.type === FileType.DIR) m |= Access.FILE_EXECUTE;
  if (bits.write && !readOnly) m |= FILE_ALL_ACCESS;
  // The owner may always change attributes, permissions (chmod, chgrp) and delete (subject to the
  // directory) on a writable tree.
  if (!readOnly && (inode.uid === c.id.uid || c.id.uid === 0))
    m |= Access.FILE_WRITE_ATTRIBUTES | Access.DELETE | Access.WRITE_DAC | Access.WRITE_OWNER;
  return (m & c.tree.maximalAccess) >>> 0;
}

/**
 * What the stored DACL of `inode` (acl.ts) lets the caller have, DELETE also by the directory
 * `dir` holds it in (null: the share root); ACCESS_DENIED when `desired` asks for more. For an
 * open of a file and of one of its streams alike (streams.ts): the file's DACL guards both.
 */
export async function storedDaclAccess(c: FileContext, inode: Inode, dir: Buffer | null, desired: number): Promise<number> {
  const acl = await daclMask(
    c.share.meta,
    inode,
    c.id,
    logonOf(c.session),
    dir === null ? null : async () => (await c.fs.resolve(dir)).inode,
    (d) => c.fs.accessBits(c.share, d, c.id).write,
  );
  if ((desired & ~acl & ~Access.MAXIMUM_ALLOWED) !== 0) throw fail(NtStatus.ACCESS_DENIED, 'refused by the stored DACL');
  return acl;
}

/** What an overwrite or supersede of an existing file needs, asked for or not (create()). */
const OVERWRITE_RIGHTS = Access.FILE_WRITE_DATA | Access.FILE_WRITE_ATTRIBUTES | Access.FILE_WRITE_EA;

/** FILE_ADD_FILE and FILE_ADD_SUBDIRECTORY, a directory's FILE_WRITE_DATA and FILE_APPEND_DATA. */
const DIRECTORY_ADD = Access.FILE_WRITE_DATA | Access.FILE_APPEND_DATA;

/**
 * MS-FSA 2.1.5.1.1: a new file needs FILE_ADD_FILE on its directory, a new directory
 * FILE_ADD_SUBDIRECTORY; so does a name a rename or link brings in (the target directory is
 * opened for them). The vfs checks the POSIX write permission of `dir`; a stored DACL of it,
 * which only takes away, is this check's: ACCESS_DENIED before anything changes. Returns the
 * directory's stored descriptor (null: none), which is what a new file inherits from.
 */
export async function checkAddTo(c: FileContext, dir: Buffer, isDir: boolean): Promise<SecurityDescriptor | null> {
  const sd = await storedDacl(c.share.meta, decodeHandle(dir).inodeId);
  if (sd === null || sd.dacl === null) return sd;
  const right = isDir ? Access.FILE_APPEND_DATA : Access.FILE_WRITE_DATA;
  if ((grantsOf(sd.dacl, (await c.fs.resolve(dir)).inode, c.id, logonOf(c.session)) & right) === 0)
    throw fail(NtStatus.ACCESS_DENIED, `the directory's DACL grants no ${isDir ? 'FILE_ADD_SUBDIRECTORY' : 'FILE_ADD_FILE'}`);
  return sd;
}

/**
 * The mode a new file or directory is made with over SMB: the POSIX bits the DACL it will carry
 * maps to (posixChangeOf, as a SET_INFO of that DACL sets them), the DACL of the CREATE's SecD
 * context (`given`) or else the one its directory `dir` passes on (`dirSd`, the directory's stored
 * descriptor; acl.ts newInodeDacl stores the same DACL once the inode exists). Made 0644 (a
 * directory 0755) and given the DACL only after, a file under "owner Full, Users Modify (OI)(CI)"
 * refused other users the write its DACL grants them. Without a DACL to carry (a directory with no
 * inheritable ACE, no SecD), 0644 or 0755 as before, what NFS users of the share expect. The
 * DACL's ACEs for the owner and group are read for the ones the vfs gives the inode (`asked`: a
 * SecD's owner and group, newFileOwner). READONLY is not applied: as for a file made without a
 * DACL, the attribute alone keeps the write bits.
 */
export async function newInodeMode(
  c: FileContext,
  dir: Buffer,
  dirSd: SecurityDescriptor | null,
  given: SecurityDescriptor | null,
  isDir: boolean,
  asked: { uid?: number; gid?: number } | null,
): Promise<number> {
  const plain = isDir ? 0o755 : 0o644;
  if (given?.dacl == null && dirSd?.dacl == null) return plain;
  const { uid, gid } = newOwner((await c.fs.resolve(dir)).inode, c.fs.identity(c.share, c.id), asked ?? undefined);
  const dacl = given?.dacl ?? inheritDacl(dirSd, isDir, unixUserSid(uid), unixGroupSid(gid));
  if (dacl === null) return plain;
  const made = { type: isDir ? FileType.DIR : FileType.REG, uid, gid, mode: plain, dosAttrs: 0 };
  return posixChangeOf({ control: 0, owner: null, group: null, dacl }, SecurityInformation.DACL, made).mode ?? plain;
}

/**
 * May the caller remove `inode` from the directory `dir`? The vfs rule for REMOVE and RENAME: write
 * and search permission on the directory, and in a sticky one ownership of the file or directory.
 */
async function mayUnlink(c: FileContext, dir: Buffer, inode: Inode): Promise<boolean> {
  const d = (await c.fs.resolve(dir)).inode;
  const bits = c.fs.accessBits(c.share, d, c.id);
  return bits.write && bits.exec && mayDeleteFromSticky(d, inode, c.id);
}

/**
 * Open ids (the FileId, smb2/state.ts fileIdOf) start at a random point of [1, 2^39) in each
 * process, not at 1. Durable opens live in memory only (durable.ts): a client whose server was
 * restarted (a crash, an upgrade) sends its DHnC naming the FileId it had, and with ids counted from
 * 1 again that FileId named whatever open the new process gave it: another file's open, preserved
 * for another client of the same user, was handed over, and the client's WRITEs went to that file.
 * Now a FileId of the process before names nothing (OBJECT_NAME_NOT_FOUND), but for a chance of
 * n in 2^39 once this process made n opens. Below 2^40, where the named pipes' ids start
 * (connection.ts). No cost per open: the counter goes on as before.
 */
let nextOpenId = randomInt(1, 2 ** 39);
/** A new open id (CREATE of a file or of a stream). */
export const allocOpenId = (): number => nextOpenId++;

// MS-SMB2 3.3.5.9 CREATE
export async function create(
  c: FileContext,
  req: CreateRequest,
  w: SmbWriter,
  register: (o: Open) => void,
  retried = false,
): Promise<Open> {
  // The caller's share permission now: `none` since the tree was connected opens nothing (the
  // share root is opened without a lookup, which would check it).
  c.fs.identity(c.share, c.id);
  refuseAnonymous(c, 'opens nothing');
  followRenames(c.fs);
  // MS-SMB2 3.3.5.9.7: a durable reconnect skips name validation and open execution.
  if (isReconnect(req)) {
    if (!c.durable) throw fail(NtStatus.OBJECT_NAME_NOT_FOUND);
    return c.durable.reconnect(c, req, w, register);
  }
  // macOS's server query and a DH2Q (3.x), checked before anything is opened.
  const aapl = aaplReply(req);
  const durableV2 = durableV2Request(req, c.smb3 === true);
  // MS-SMB2 3.3.5.9: ImpersonationLevel past Delegate (3), and a name starting with a backslash, are refused.
  if (req.impersonationLevel > 3) throw fail(NtStatus.BAD_IMPERSONATION_LEVEL);
  const raw = fromUtf16(req.name, 'CREATE name');
  if (raw.startsWith('\\')) throw fail(NtStatus.INVALID_PARAMETER, 'CREATE name starts with a backslash');
  const split = splitStreamPath(raw);
  const parts = parsePath(split.path);
  const opts = req.createOptions;
  const wantDir = (opts & CreateOptions.DIRECTORY_FILE) !== 0;
  const wantFile = (opts & CreateOptions.NON_DIRECTORY_FILE) !== 0;
  if (wantDir && wantFile) throw fail(NtStatus.INVALID_PARAMETER, 'both DIRECTORY_FILE and NON_DIRECTORY_FILE');
  const desired = mapGenericRights(req.desiredAccess);
  const deleteOnClose = (opts & CreateOptions.DELETE_ON_CLOSE) !== 0;
  if (deleteOnClose && (desired & Access.DELETE) === 0 && (req.desiredAccess & Access.MAXIMUM_ALLOWED) === 0)
    throw fail(NtStatus.ACCESS_DENIED, 'DELETE_ON_CLOSE without DELETE access');
  const disp = req.createDisposition;
  const changes = disp !== CreateDisposition.OPEN && disp !== CreateDisposition.OPEN_IF;
  const readOnly = readOnlyNow(c);
  if (readOnly && ((desired & WRITE_RIGHTS) !== 0 || deleteOnClose || changes)) throw fail(NtStatus.ACCESS_DENIED, 'read-only tree');
  if (split.stream !== null) return createStreamOpen(c, req, w, register, parts, split.stream);
  // MS-SMB2 2.2.13.2.1 ExtA: EAs for a file this CREATE makes or overwrites, checked before anything changes.
  const extA = req.contexts.find((x) => x.name === 'ExtA');
  const eas = extA ? eaChanges(decodeFullEaList(extA.data)) : null;
  // MS-SMB2 2.2.13.2 SecD: a security descriptor for a file this CREATE makes.
  const secDCtx = req.contexts.find((x) => x.name === 'SecD');
  const secD = secDCtx ? decodeSecurityDescriptor(secDCtx.data) : null;
  if (secD?.dacl) storedForm({ control: secD.control, dacl: secD.dacl });
  // MS-SMB2 2.2.13.2.6 AlSi: the allocation size of a file this CREATE makes or overwrites.
  const alSi = req.contexts.find((x) => x.name === 'AlSi');
  if (alSi && alSi.data.length < 8) throw fail(NtStatus.INVALID_PARAMETER, 'AlSi context shorter than 8 bytes');
  const initialAllocation = alSi ? readSize(alSi.data, 0) : 0;
  let allocation = 0;

  let parent: Buffer | null = null;
  let name: Buffer | null = null;
  let inode: Inode | null;
  /** The file made at once when the name was free (create-first.ts), and its directory's stored descriptor. */
  let made: Inode | null = null;
  let parentSd: SecurityDescriptor | null = null;
  if (parts.length === 0) {
    inode = await c.fs.root(c.share);
  } else {
    parent = await walkParent(c, parts);
    name = Buffer.from(parts[parts.length - 1]!);
    const first = await createFirst(c, req, parent, name, wantDir, deleteOnClose, !extA && !secDCtx && initialAllocation === 0);
    if (first) ({ inode: made, parentSd } = first);
    inode = made ?? (await lookupOrNull(c, parent, name));
    if (!inode && (disp === CreateDisposition.OPEN || disp === CreateDisposition.OVERWRITE)) {
      const found = await lookupCaseless(c, parent, name);
      if (found) ({ name, inode } = found);
    }
  }

  let action: number = CreateAction.OPENED;
  let granted: number;
  /** What the MxAc context reports: for an existing file, the rights its open was judged by. */
  let maximal: number | undefined;
  const wantsMaximalAccess = req.contexts.some((x) => x.name === 'MxAc');
  /** The open, registered in the lock manager before an existing file is overwritten. */
  let pre: Open | null = null;
  /** Other opens cached the file when this CREATE came: what their breaks wrote back is read again below. */
  let cachedByOthers = false;
  if (made) {
    // What the new-file branch below does after it creates, for a request without contexts to apply.
    inode = made;
    action = CreateAction.CREATED;
    await newInodeDacl(c.share.meta, decodeHandle(parent!).inodeId, made, null, parentSd);
    granted = (req.desiredAccess & Access.MAXIMUM_ALLOWED) !== 0 ? c.tree.maximalAccess : desired & c.tree.maximalAccess;
  } else if (inode) {
    if (disp === CreateDisposition.CREATE) throw fail(NtStatus.OBJECT_NAME_COLLISION);
    const isDir = inode.type === FileType.DIR;
    // A directory has no data stream: "dir::$DATA" names nothing to open (MS-FSA 2.1.5.1).
    if (isDir && split.dataStream)
      throw fail(wantDir ? NtStatus.NOT_A_DIRECTORY : NtStatus.FILE_IS_A_DIRECTORY, 'the data stream of a directory');
    if (wantDir && !isDir) throw fail(NtStatus.NOT_A_DIRECTORY);
    if (wantFile && isDir) throw fail(NtStatus.FILE_IS_A_DIRECTORY);
    // A stored DACL takes away what it does not grant (acl.ts); the POSIX check below stays.
    const acl = await storedDaclAccess(c, inode, parent, desired);
    await checkEaKnowledge(c.share.meta, inode.id, opts);
    const maxAllowed = (req.desiredAccess & Access.MAXIMUM_ALLOWED) !== 0;
    let max = (maximalAccessOf(c, inode) & acl) >>> 0;
    // DELETE: the owner's (as the file's own full control gives it on Windows; the remove itself is
    // still the directory's to allow), else the directory's to give, as for NFS REMOVE. Write
    // permission on the file alone does not give it: another user's delete-pending would later be
    // carried out by the owner's CLOSE, as the owner.
    if (parent !== null) {
      const owner = !readOnly && (inode.uid === c.id.uid || c.id.uid === 0);
      const asked = (desired & Access.DELETE) !== 0 || maxAllowed || wantsMaximalAccess;
      const mayDelete = owner || (asked && (await mayUnlink(c, parent, inode)));
      max = ((max & ~Access.DELETE) | (mayDelete ? Access.DELETE & acl & c.tree.maximalAccess : 0)) >>> 0;
    }
    maximal = max;
    // MS-FSA 2.1.5.1.2.1: a right asked and not granted refuses the open (with MAXIMUM_ALLOWED
    // too), as Windows does: what an open holds is what later commands check (CHANGE_NOTIFY and
    // QUERY_DIRECTORY need FILE_LIST_DIRECTORY, the directory's read permission). Adding to a
    // directory is left to the vfs, which checks its write permission on each create.
    const judged = isDir ? FILE_ALL_ACCESS & ~DIRECTORY_ADD : FILE_ALL_ACCESS;
    const refused = (desired & judged & ~max) >>> 0;
    if (refused !== 0) throw fail(NtStatus.ACCESS_DENIED, `rights asked and not granted: 0x${refused.toString(16)}`);
    granted = maxAllowed ? max | (desired & ~Access.MAXIMUM_ALLOWED & max) : desired;
    if (deleteOnClose && (granted & Access.DELETE) === 0) throw fail(NtStatus.ACCESS_DENIED, 'DELETE_ON_CLOSE without DELETE granted');
    const overwriteAttrs = checkOpenExisting(inode, desired, disp, req.fileAttributes, deleteOnClose);
    const overwrite =
      disp === CreateDisposition.SUPERSEDE || disp === CreateDisposition.OVERWRITE || disp === CreateDisposition.OVERWRITE_IF;
    if (overwrite && isDir) throw fail(NtStatus.INVALID_PARAMETER, 'cannot overwrite a directory');
    // Emptying the file is a write of its data, asked for or not (as a Windows file system adds
    // FILE_WRITE_DATA to an overwrite's access check): an open for reading, or with a DACL that
    // grants appending alone, does not empty it. It also replaces the attributes and (ExtA) the
    // EAs: FILE_WRITE_ATTRIBUTES and FILE_WRITE_EA, which Windows adds too. The POSIX check is the
    // vfs truncate's own.
    if (overwrite && (max & OVERWRITE_RIGHTS) !== OVERWRITE_RIGHTS)
      throw fail(NtStatus.ACCESS_DENIED, 'an overwrite needs FILE_WRITE_DATA, FILE_WRITE_ATTRIBUTES and FILE_WRITE_EA');
    cachedByOthers = (c.fs.opens.get(c.share.meta, inode.id)?.holders ?? 0) > 0;
    // A preserved durable open closed by the break may have taken the file with it: look again (once).
    if ((await oplock.breakForOpen(c.fs, c.share.meta, inode, granted, req, c.caching, c.session, c.onBreakWait)) && !retried)
      return create(c, req, w, register, true);
    pre = newOpen(c, inode, parent, name, parts, granted, deleteOnClose, opts);
    pre.record = await oplock.registerOpen(c.fs, pre, granted >>> 0, req.shareAccess);
    if (overwrite) {
      // A failure past here must not leave the registered open behind: nothing would ever release
      // it, and its share modes (and its user's share of the open table) would stay until restart.
      try {
        inode = (await c.fs.setattr(pre.handle, c.id, { size: 0, ...(overwriteAttrs === null ? {} : { dosAttrs: overwriteAttrs }) })).after;
        // MS-FSA 2.1.5.1.2.1: an overwrite replaces the file's EAs with the ExtA ones.
        if (eas) await replaceEas(c, inode.id, eas);
        // MS-FSA 2.1.5.1.2.1: an overwrite sets the allocation size to the AlSi one, or none.
        if (!isDir) await resetAllocation(c.share.meta, inode.id, (allocation = initialAllocation));
      } catch (e) {
        await oplock.releaseOpen(c.fs, pre, c.id);
        throw e;
      }
      action = disp === CreateDisposition.SUPERSEDE ? CreateAction.SUPERSEDED : CreateAction.OVERWRITTEN;
    }
  } else {
    if (disp === CreateDisposition.OPEN || disp === CreateDisposition.OVERWRITE) throw fail(NtStatus.OBJECT_NAME_NOT_FOUND);
    if (parent === null || name === null) throw fail(NtStatus.ACCESS_DENIED);
    checkNewAttributes(req.fileAttributes, wantDir, deleteOnClose);
    if (oplock.leaseKeyInUse(c.fs, c.caching, c.session, req)) throw fail(NtStatus.INVALID_PARAMETER, 'lease key in use for another file');
    const dosAttrs = newFileAttributes(req.fileAttributes, wantDir);
    // The owner and group a SecD context gives (INVALID_OWNER / INVALID_PRIMARY_GROUP first).
    const owner = secD ? newFileOwner(secD, c.fs.identity(c.share, c.id)) : null;
    parentSd = await checkAddTo(c, parent, wantDir);
    const mode = await newInodeMode(c, parent, parentSd, secD, wantDir, owner);
    if (wantDir) {
      inode = (await c.fs.mkdir(parent, name, c.id, { mode, dosAttrs, ...owner })).inode;
    } else {
      inode = (await c.fs.create(parent, name, c.id, CreateMode.GUARDED, { mode, dosAttrs, ...owner }, null)).inode;
    }
    action = CreateAction.CREATED;
    try {
      if (eas) await putEas(c, inode.id, eas);
      if (initialAllocation > 0 && !wantDir) await setAllocation(c.share.meta, inode.id, (allocation = initialAllocation));
      // The DACL of the SecD context, else what the directory's stored DACL passes on.
      await newInodeDacl(c.share.meta, decodeHandle(parent).inodeId, inode, secD, parentSd);
    } catch (e) {
      // Made, but not as asked (its EAs, allocation or DACL failed: a full volume, say): it goes
      // again, so that a refused CREATE leaves nothing behind, least of all a file without its DACL.
      await c.fs.remove(parent, name, c.id, wantDir).catch((undo: unknown) =>
        // The client hears the first failure; the file stays, as the mode bits alone protect it.
        c.log?.error(
          { err: undo, cause: errorMessage(e), share: c.share.name, name: name.toString() },
          `SMB CREATE: could not remove the ${wantDir ? 'directory' : 'file'} it made after its EAs, allocation or DACL failed: it stays, without them`,
        ),
      );
      throw e;
    }
    granted = (req.desiredAccess & Access.MAXIMUM_ALLOWED) !== 0 ? c.tree.maximalAccess : desired & c.tree.maximalAccess;
  }

  // Several servers: the size and times another one acknowledged (stored first, as for a READ),
  // once the caching of other opens broke above. A file another server grew under its write lease
  // has its new size written behind there: the entry cached here is older, and a client that
  // writes at the end of file it is told would write over what was acknowledged. Kept as it was
  // if that cannot be learned now (Redis away: writes are refused meanwhile anyway).
  // One server (or this one holds the lease) and no other open cached the file: nothing to ask, no
  // read and no await more. Before this open's caching is granted: no await between that and the
  // response, where a break of it could reach the client before the CREATE response.
  if (action !== CreateAction.CREATED && inode.type === FileType.REG) {
    if (cachedByOthers)
      inode = await c.fs.resolve(pre?.handle ?? c.fs.handleOf(c.share, inode)).then(
        (r) => r.inode,
        () => inode!,
      );
    const fresh = c.fs.freshAttrs(c.share, inode);
    if (fresh !== undefined) inode = await fresh.catch(() => inode!);
  }
  const open = pre ?? newOpen(c, inode, parent, name, parts, granted, deleteOnClose, opts);
  open.openerIsOwner = c.id.uid === 0 || c.id.uid === inode.uid;
  // The creator of a new file holds what it asked for, whatever the DACL the file carries grants
  // (granted above: Windows checks no access on the object it makes), and so its mode: one made
  // under "Everyone: Read (OI)" is 0555, and its creator still sets its EAs and allocation.
  open.openerMayWrite = action === CreateAction.CREATED || c.fs.accessBits(c.share, inode, c.id).write;
  // Not merely not asked for: an open asking FILE_WRITE_DATA alone extends the file on Windows
  // (smbtorture smb2.deny, smb2.tcon), whatever MS-SMB2 3.3.5.13 suggests.
  open.cannotExtend = maximal !== undefined && (maximal & Access.FILE_APPEND_DATA) === 0;
  open.record ??= await oplock.registerOpen(c.fs, open, open.grantedAccess, req.shareAccess);
  let granting;
  try {
    // Several servers: the others learn that this file may be cached here before caching is
    // granted. When they cannot (Redis went away since the open was registered), the open is granted
    // without an oplock or lease (MS-SMB2 3.3.5.9: a lower level than asked may be granted).
    const wants = c.caching !== undefined && !open.isDir && req.requestedOplockLevel !== oplock.OplockLevel.NONE;
    const caching = wants && !(await c.fs.opens.mayCache(open.record)) ? undefined : c.caching;
    const remote = wants && caching !== undefined ? oplock.openElsewhere(c.fs, open.record, req) : false;
    const elsewhere = remote !== false && (await remote);
    granting = oplock.grantCaching(c.fs, open, open.record, req, caching, elsewhere);
  } catch (e) {
    await oplock.releaseOpen(c.fs, open, c.id);
    throw e;
  }
  register(open);

  const contexts: CreateContext[] = [];
  for (const ctx of req.contexts) {
    if (ctx.name === 'QFid') contexts.push({ name: 'QFid', data: qfidResponse(inode.id, c.share.id) });
    else if (ctx.name === 'MxAc') contexts.push({ name: 'MxAc', data: mxacResponse(maximal ?? maximalAccessOf(c, inode)) });
  }
  if (granting.lease) contexts.push({ name: 'RqLs', data: granting.lease });
  const durable = grantDurable(req, open, granting.level, durableV2, c.durable?.timeoutMs);
  if (durable) contexts.push(durable);
  if (aapl) contexts.push(aapl);
  writeCreateResponse(w, {
    oplockLevel: granting.level,
    createAction: action,
    info: fileInfoOf(inode, parts[parts.length - 1], allocation),
    fileId: open.fileId,
    contexts: encodeCreateContexts(contexts),
  });
  return open;
}

/** A new Open (not yet in the connection's table nor the lock manager's). */
function newOpen(
  c: FileContext,
  inode: Inode,
  parent: Buffer | null,
  name: Buffer | null,
  parts: string[],
  granted: number,
  deleteOnClose: boolean,
  createOptions: number,
): Open {
  const id = nextOpenId++;
  const open = new Open(
    id,
    fileIdOf(id),
    c.tree,
    c.share,
    c.fs.handleOf(c.share, inode),
    inode.id,
    inode.type === FileType.DIR,
    parent,
    name,
    parts.join('\\'),
    granted >>> 0,
  );
  open.deleteOnClose = deleteOnClose;
  open.mode = createOptions & OPEN_MODE_BITS;
  return open;
}

/**
 * A session re-authenticated as anonymous (the only way one exists: a new anonymous logon is
 * refused) keeps its trees and opens, whose rights were decided at CREATE (smbtorture reauth2-4),
 * and can only lose rights: it opens, renames and links nothing more, and changes no file
 * information (SET_INFO, FSCTL_SET_SPARSE; its DACL aside, which goes by the opener: reauth4).
 * Data it still writes through those opens, as WRITE (copychunk, SET_ZERO_DATA). Acting as the anonymous
 * user (nobody), it would own what nobody owns (files of NFS AUTH_NONE clients or a squashed
 * root), which its own user may not touch. smbd refuses the rename too (smbtorture reauth5).
 */
export function refuseAnonymous(c: FileContext, what: string): void {
  if (c.session.anonymous) throw fail(NtStatus.ACCESS_DENIED, `a session re-authenticated as anonymous ${what}`);
}

// MS-SMB2 3.3.5.10 CLOSE
export async function close(c: FileContext, open: Open, flags: number, w: SmbWriter): Promise<void> {
  const pending = oplock.deletePendingOf(open) || open.deleteOnClose;
  await oplock.releaseOpen(c.fs, open, c.id);
  if (pending) {
    writeCloseResponse(w, 0, null);
    return;
  }
  if ((flags & CLOSE_FLAG_POSTQUERY_ATTRIB) !== 0) {
    try {
      const r = await c.fs.resolve(open.handle);
      c.fs.identity(r.share, c.id);
      // Several servers: as another one acknowledged it (nothing more with one server).
      const fresh = c.fs.freshAttrs(r.share, r.inode);
      const inode = fresh === undefined ? r.inode : await fresh;
      writeCloseResponse(w, CLOSE_FLAG_POSTQUERY_ATTRIB, fileInfoOf(inode));
      return;
    } catch {
      // Deleted meanwhile, or the caller may no longer see the share: answer without attributes.
    }
  }
  writeCloseResponse(w, 0, null);
}

/**
 * Whether another owner's byte-range lock, on this server or (several servers) another, refuses
 * this READ or WRITE range of `open`: READ, WRITE and copychunk. Synchronous unless a remote check
 * is needed, so the common path awaits nothing.
 */
export function ioLocked(c: FileContext, open: Open, offset: number, length: number, write: boolean): boolean | Promise<boolean> {
  if (c.fs.byteRanges.ioConflict(open.share.meta, open.inodeId, open, offset, length, write)) return true;
  return c.fs.byteRanges.remoteIoConflict(open.share.meta, open.inodeId, offset, length, write) ?? false;
}

// MS-SMB2 3.3.5.12 READ: the data is returned as its own buffer (sent after the header).
export async function read(c: FileContext, open: Open, req: ReadRequest): Promise<Buffer> {
  if (open.isDir) throw fail(NtStatus.INVALID_DEVICE_REQUEST, 'READ of a directory');
  if ((open.grantedAccess & (Access.FILE_READ_DATA | Access.FILE_EXECUTE)) === 0) throw fail(NtStatus.ACCESS_DENIED);
  if (req.length > c.maxRead) throw fail(NtStatus.INVALID_PARAMETER, `READ of ${req.length} bytes above MaxReadSize`);
  const locked = ioLocked(c, open, req.offset, req.length, false);
  if (locked === true || (locked !== false && (await locked))) throw fail(NtStatus.FILE_LOCK_CONFLICT);
  const r = await c.fs.read(open.handle, c.id, req.offset, req.length);
  if ((r.data.length === 0 && req.length > 0) || r.data.length < req.minimumCount) throw fail(NtStatus.END_OF_FILE);
  c.data?.bytesRead(c.share.id, r.data.length);
  open.position = req.offset + r.data.length;
  return r.data;
}

/**
 * Appends (a WRITE at offset 0xFFFFFFFFFFFFFFFF: the end of the file) of one file run one at a
 * time on this server, per metadata store and inode: each reads the end of the file once the one
 * before it is written. Pipelined appends then all land, one after another in the order they
 * arrived; read and written as two steps side by side, they read the same end and wrote over one
 * another (2 of 20 pipelined appends were left). Across servers the file's write lease orders
 * them (vfs append()). WRITEs at an offset whose range rangeAllowed checks run under the same key.
 */
const appends = new WeakMap<MetadataStore, KeyedSerial<number>>();

// MS-SMB2 3.3.5.13 WRITE
export async function write(c: FileContext, open: Open, req: WriteRequest): Promise<number> {
  if (open.isDir) throw fail(NtStatus.INVALID_DEVICE_REQUEST, 'WRITE to a directory');
  const rights = open.grantedAccess & (Access.FILE_WRITE_DATA | Access.FILE_APPEND_DATA);
  if (rights === 0) throw fail(NtStatus.ACCESS_DENIED);
  if (req.data.length > c.maxWrite) throw fail(NtStatus.INVALID_PARAMETER, `WRITE of ${req.data.length} bytes above MaxWriteSize`);
  // An open granted FILE_WRITE_DATA that may extend the file (every one without a stored DACL)
  // writes anywhere: no size to look at.
  if (req.offset >= 0 && (rights & Access.FILE_WRITE_DATA) !== 0 && !open.cannotExtend) return writeAt(c, open, req, req.offset);
  // An append always extends the file (a write of no bytes changes nothing: vfs write()).
  if (req.offset < 0 && open.cannotExtend && req.data.length > 0)
    throw fail(NtStatus.ACCESS_DENIED, 'an append extends the file: it needs FILE_APPEND_DATA');
  let serial = appends.get(open.share.meta);
  if (serial === undefined) appends.set(open.share.meta, (serial = new KeyedSerial<number>()));
  if (req.offset < 0) return serial.run(open.inodeId, () => writeAt(c, open, req, null));
  return serial.run(open.inodeId, async () => {
    await rangeAllowed(c, open, req.offset, req.data.length);
    return writeAt(c, open, req, req.offset);
  });
}

/**
 * FILE_LOCK_CONFLICT if another open's byte-range lock covers the range to write; a promise only
 * when another server must be asked.
 */
function unlocked(c: FileContext, open: Open, at: number, length: number): Promise<void> | undefined {
  const locked = ioLocked(c, open, at, length, true);
  if (locked === true) throw fail(NtStatus.FILE_LOCK_CONFLICT);
  if (locked === false) return undefined;
  return locked.then((yes) => {
    if (yes) throw fail(NtStatus.FILE_LOCK_CONFLICT);
  });
}

/**
 * MS-SMB2 3.3.5.13 where the open's rights say where it may write: a range within the file's size
 * needs FILE_WRITE_DATA (an open granted FILE_APPEND_DATA alone adds to a log, never rewrites it);
 * a range extending the file needs FILE_APPEND_DATA when the opener could not have been granted it
 * (cannotExtend: a stored DACL granting FILE_WRITE_DATA alone, bytes that may change and a size
 * that may not). Not for an open that merely did not ask for it: Windows lets an open granted
 * FILE_WRITE_DATA alone extend the file (smbtorture smb2.deny, smb2.tcon, streams.rename: the
 * spec's SHOULD is not what Windows does). ACCESS_DENIED, nothing written. The size is the one
 * acknowledged anywhere (getattr asks the holder with several servers).
 *
 * Runs under the file's append key with the write after it: another append, or another WRITE of
 * such an open, cannot extend the file between this check and the write (two append-only clients
 * writing at the end they last saw: the second is refused, not written over the first's bytes).
 * Other opens take no key (the common WRITE path pays nothing), so one of their WRITEs extending
 * the file meanwhile is not excluded, nor a truncate, nor, with several servers, a write of
 * another server.
 */
async function rangeAllowed(c: FileContext, open: Open, offset: number, length: number): Promise<void> {
  const { inode } = await c.fs.getattr(open.handle, c.id);
  if (offset < inode.size && (open.grantedAccess & Access.FILE_WRITE_DATA) === 0)
    throw fail(NtStatus.ACCESS_DENIED, 'an open without FILE_WRITE_DATA writes only at or past the end');
  if (length > 0 && offset + length > inode.size && open.cannotExtend)
    throw fail(NtStatus.ACCESS_DENIED, 'an open without FILE_APPEND_DATA does not extend the file');
}

/**
 * MS-FSA 2.1.5.3: a WRITE's byte-range lock check comes before the oplock breaks the write causes,
 * so that a write a lock refuses breaks nobody's caching. An append's offset is the end of the
 * file, which an open holding write caching may still move with what it writes back when broken;
 * with no such open but this one's, the end is known now (as acknowledged anywhere: getattr), and
 * an append a lock refuses there is refused (FILE_LOCK_CONFLICT) before the vfs append breaks the
 * other clients' Level II oplocks and read leases. The vfs append checks again at the end it
 * finds. A write of no bytes is refused by no lock.
 */
async function appendLockedNow(c: FileContext, open: Open, length: number): Promise<void> {
  if (length === 0) return;
  // No lock of the file refuses this open a write anywhere (the common case, one server): no end to read.
  if (ioLocked(c, open, 0, Number.MAX_SAFE_INTEGER, true) === false) return;
  const file = c.fs.opens.get(open.share.meta, open.inodeId);
  if (file !== undefined && c.fs.opens.holdersAbove(file, Caching.READ | Caching.HANDLE, oplock.holderOf(open)).length > 0) return;
  const { inode } = await c.fs.getattr(open.handle, c.id);
  const asked = unlocked(c, open, inode.size, length);
  if (asked) await asked;
}

/**
 * Writes `data` at `offset` as a WRITE through `open` does (a WRITE, or a server-side copy into
 * the open): the write time SMB shows is delayed (writetime.ts), other opens' oplocks and leases
 * break, not its own. The caller puts the open's held times back after (`restoreHeldTimes`).
 */
export async function writeThroughOpen(c: FileContext, open: Open, offset: number, data: Buffer, sync: boolean): Promise<void> {
  if (data.length > 0) await writeTime.beforeWrite(open, async () => (await c.fs.resolve(open.handle)).inode.mtime);
  await c.fs.write(open.handle, c.id, offset, data, sync, oplock.holderOf(open));
}

/** A WRITE at `offset`, or (null) at the end of the file as the vfs finds it. */
async function writeAt(c: FileContext, open: Open, req: WriteRequest, offset: number | null): Promise<number> {
  const asked = offset === null ? undefined : unlocked(c, open, offset, req.data.length);
  if (asked) await asked;
  const sync = (req.flags & WRITEFLAG_WRITE_THROUGH) !== 0 || open.writeThrough;
  // A write of no bytes changes nothing (MS-FSA 2.1.5.3; vfs write()): no write time to delay or restore.
  const changes = req.data.length > 0;
  let end = offset ?? 0;
  if (offset !== null) {
    await writeThroughOpen(c, open, offset, req.data, sync);
  } else {
    await appendLockedNow(c, open, req.data.length);
    await c.fs.append(open.handle, c.id, req.data, sync, oplock.holderOf(open), (at, inode) => {
      end = at;
      // The lock check first, as for any other WRITE: an append refused by a byte-range lock
      // delays no write time (else the open's next real WRITE counts as a later one, whose time
      // shows only at its close, and a refused append after an update sets the time at the close).
      // The write time the file has now (read already: no await more between its end and the write).
      const time = (): Promise<void> | undefined => (changes ? writeTime.beforeWrite(open, () => Promise.resolve(inode.mtime)) : undefined);
      // Not an async function: no promise more when the range is known free here.
      const asked = unlocked(c, open, at, req.data.length);
      return asked ? asked.then(time) : time();
    });
  }
  if (changes && open.heldTimes) await restoreHeldTimes(c.fs, open.handle, c.id, open.heldTimes);
  c.data?.bytesWritten(c.share.id, req.data.length);
  open.position = end + req.data.length;
  return req.data.length;
}

// MS-SMB2 3.3.5.11 FLUSH: the durability of NFS COMMIT (WAL fsync of the data, metadata flushed),
// for an open granted write access (FILE_ADD_FILE and FILE_ADD_SUBDIRECTORY, on a directory, are
// the same bits).
export async function flush(c: FileContext, open: Open): Promise<void> {
  if ((open.grantedAccess & (Access.FILE_WRITE_DATA | Access.FILE_APPEND_DATA)) === 0)
    throw fail(NtStatus.ACCESS_DENIED, 'FLUSH needs write access');
  await c.fs.flush(open.handle, c.id);
  writeTime.updateNow(open.share.id, open.inodeId);
}

// MS-SMB2 3.3.5.18 QUERY_DIRECTORY
const DIR_PAGE = 256;

export async function queryDirectory(c: FileContext, open: Open, req: QueryDirectoryRequest): Promise<Buffer> {
  if (!open.isDir) throw fail(NtStatus.INVALID_PARAMETER, 'QUERY_DIRECTORY on a file');
  // The share permission now ("." and ".." are answered before the vfs readdir would check it).
  c.fs.identity(c.share, c.id);
  // MS-SMB2 3.3.5.18: without it, "." (the directory's own entry) would still be answered.
  if ((open.grantedAccess & Access.FILE_READ_DATA) === 0) throw fail(NtStatus.ACCESS_DENIED, 'no FILE_LIST_DIRECTORY access');
  if (!DIRECTORY_CLASSES.has(req.infoClass)) throw fail(NtStatus.INVALID_INFO_CLASS);
  const limit = Math.min(req.outputBufferLength, c.maxTransact);
  const restart = (req.flags & (QueryDirectoryFlags.RESTART_SCANS | QueryDirectoryFlags.REOPEN)) !== 0;
  const patternGiven = req.pattern.length > 0 ? fromUtf16(req.pattern, 'QUERY_DIRECTORY pattern') : null;
  if (patternGiven !== null && patternGiven.length > MAX_PATTERN_LENGTH) throw fail(NtStatus.OBJECT_NAME_INVALID, 'pattern too long');
  let e = open.enumeration;
  if (e === null || restart) {
    e = open.enumeration = {
      pattern: patternGiven ?? e?.pattern ?? '*',
      phase: 0,
      cookie: 0,
      page: [],
      pageAt: 0,
      eof: false,
      fresh: true,
    };
  }
  const single = (req.flags & QueryDirectoryFlags.RETURN_SINGLE_ENTRY) !== 0;
  const withEaSize = req.infoClass !== FileInfoClass.FileDirectoryInformation && req.infoClass !== FileInfoClass.FileNamesInformation;
  const dir = await c.fs.resolve(open.handle);
  const out = Buffer.alloc(limit);
  let used = 0;
  let last = -1;
  let count = 0;
  let tooSmall = false;
  for (;;) {
    // The next candidate, without moving past it until it is written.
    let name: string;
    let inode: Inode | null;
    let fileId: number;
    let eaSize = 0;
    if (e.phase === 0) {
      name = '.';
      inode = dir.inode;
      fileId = inode.id;
    } else if (e.phase === 1) {
      name = '..';
      inode = await c.fs.parentOf(dir.share, dir.inode);
      fileId = inode.id;
    } else {
      if (e.pageAt >= e.page.length) {
        if (e.eof) break;
        const r = await c.fs.readdir(open.handle, c.id, e.cookie, DIR_PAGE);
        // Without search permission (x) on the directory, its entries are names (and file ids)
        // only, as NFS READDIRPLUS gives them: their attributes and EaSize are what a lookup, which
        // needs x, would refuse (POSIX `ls -l` fails there too; `ls` works). Decided once a page,
        // by the vfs rule NFS uses (root passes). "." and ".." keep theirs: the caller reached this
        // directory by a path, searching every directory above it, so it could look both up.
        const searchable = r.searchable;
        // EaSize of the page's entries, in one query (the classes that carry it).
        const eaSizes =
          withEaSize && searchable
            ? await dir.share.meta.metaSizes(
                r.entries.map((x) => x.inode.id),
                EA_KIND,
              )
            : null;
        e.page = r.entries.map((x) => ({
          name: x.name,
          cookie: x.cookie,
          fileId: x.inode.id,
          inode: searchable ? x.inode : null,
          eaSize: eaSizes?.get(x.inode.id) ?? 0,
        }));
        e.pageAt = 0;
        e.eof = r.eof || r.entries.length === 0;
        if (e.page.length === 0) break;
      }
      const next = e.page[e.pageAt]!;
      name = next.name.toString('utf8');
      inode = next.inode;
      fileId = next.fileId;
      eaSize = next.eaSize;
    }
    if (matchPattern(e.pattern, name)) {
      const nameBuf = utf16(name);
      const start = last === -1 ? 0 : Math.ceil(used / 8) * 8;
      const size = dirEntrySize(req.infoClass, nameBuf);
      if (start + size > limit) {
        tooSmall = count === 0;
        break;
      }
      if (last !== -1) out.writeUInt32LE(start - last, last);
      writeDirEntry(out, start, req.infoClass, fileId, inode, nameBuf, name, eaSize);
      last = start;
      used = start + size;
      count++;
    }
    // Move past the candidate.
    if (e.phase < 2) e.phase++;
    else {
      e.cookie = e.page[e.pageAt]!.cookie;
      e.pageAt++;
    }
    if (single && count > 0) break;
  }
  // Entries read ahead are dropped between calls (the next call reads on from `cookie`): an idle
  // enumeration holds no directory page, however many opens a client keeps.
  e.page = [];
  e.pageAt = 0;
  e.eof = false;
  if (count === 0) {
    if (tooSmall) throw fail(NtStatus.INFO_LENGTH_MISMATCH, 'output buffer too small for one entry');
    const status = e.fresh ? NtStatus.NO_SUCH_FILE : NtStatus.NO_MORE_FILES;
    e.fresh = false;
    throw fail(status);
  }
  e.fresh = false;
  return out.subarray(0, used);
}

/** The parts of a security descriptor READ_CONTROL guards. */
const DESCRIPTOR_PARTS = SecurityInformation.OWNER | SecurityInformation.GROUP | SecurityInformation.DACL;

// MS-SMB2 3.3.5.20 QUERY_INFO
const READ_ATTRIBUTES_CLASSES: ReadonlySet<number> = new Set([
  FileInfoClass.FileBasicInformation,
  FileInfoClass.FileAllInformation,
  FileInfoClass.FileNetworkOpenInformation,
  FileInfoClass.FileAttributeTagInformation,
]);

/** The classes that carry DeletePending (MS-FSCC 2.4.41, 2.4.2). */
const DELETE_PENDING_CLASSES: ReadonlySet<number> = new Set([FileInfoClass.FileStandardInformation, FileInfoClass.FileAllInformation]);
/** File classes that carry EaSize / AllocationSize: only they read the store's records. */
const EA_SIZE_CLASSES: ReadonlySet<number> = new Set([FileInfoClass.FileEaInformation, FileInfoClass.FileAllInformation]);
const ALLOCATION_CLASSES: ReadonlySet<number> = new Set([
  FileInfoClass.FileStandardInformation,
  FileInfoClass.FileAllInformation,
  FileInfoClass.FileNetworkOpenInformation,
]);

/** The inode whose EAs and security descriptor an open reaches: a stream's are its file's. */
async function fileInodeId(c: FileContext, open: Open, inode: Inode): Promise<number> {
  return open.stream ? (await c.fs.resolve(open.stream.fileHandle)).inode.id : inode.id;
}

export async function queryInfo(c: FileContext, open: Open, req: QueryInfoRequest): Promise<{ status: NtStatus; output: Buffer }> {
  // The share permission now, as every vfs read of a handle checks it: a caller whose grant became
  // `none` since the open learns nothing more of the file (attributes, EAs, descriptor).
  c.fs.identity(c.share, c.id);
  // Several servers: the size and times another one acknowledged (see create()), as NFS GETATTR.
  // One server: the inode as resolved, no promise more (freshAttrs is undefined then).
  let inode: Inode;
  if (open.stream) inode = await streamView(c, open.handle, open.stream);
  else {
    inode = (await c.fs.resolve(open.handle)).inode;
    const fresh = c.fs.freshAttrs(c.share, inode);
    if (fresh !== undefined) inode = await fresh;
  }
  let out: Buffer | null;
  let min: number | undefined;
  let variable: boolean;
  switch (req.infoType) {
    case InfoType.FILE:
      // No 8.3 short names are generated (NOT_SUPPORTED is what clients skip quietly; smbclient's
      // allinfo stops at any other error).
      // FileNormalizedNameInformation is an SMB 3.1.1 class.
      if (req.infoClass === FILE_NORMALIZED_NAME_INFORMATION) throw fail(NtStatus.NOT_SUPPORTED, 'not below SMB 3.1.1');
      if (req.infoClass === FileInfoClass.FileFullEaInformation) {
        if ((open.grantedAccess & Access.FILE_READ_EA) === 0) throw fail(NtStatus.ACCESS_DENIED, 'no FILE_READ_EA');
        const r = queryEas(await eaRecords(c.share.meta, await fileInodeId(c, open, inode)), req, open.eaIndex);
        open.eaIndex = r.nextIndex;
        return { status: r.status, output: r.output };
      }
      // MS-FSA 2.1.5.11: the classes that carry attributes and times need FILE_READ_ATTRIBUTES.
      if (READ_ATTRIBUTES_CLASSES.has(req.infoClass) && (open.grantedAccess & Access.FILE_READ_ATTRIBUTES) === 0)
        throw fail(NtStatus.ACCESS_DENIED, 'no FILE_READ_ATTRIBUTES');
      out =
        req.infoClass === FileInfoClass.FileStreamInformation
          ? await streamInformation(c, open)
          : encodeFileInfo(req.infoClass, {
              inode,
              path: '\\' + open.path,
              grantedAccess: open.grantedAccess,
              position: open.position,
              deletePending:
                oplock.deletePendingOf(open) ||
                // Several servers: another one may have made the file delete-pending.
                (DELETE_PENDING_CLASSES.has(req.infoClass) && open.record !== null && (await c.fs.opens.deletePendingShared(open.record))),
              mode: open.mode,
              eaSize: EA_SIZE_CLASSES.has(req.infoClass)
                ? eaSizeOf(await c.share.meta.getMeta(await fileInodeId(c, open, inode), EA_KIND))
                : 0,
              allocation: ALLOCATION_CLASSES.has(req.infoClass) ? await allocationOf(c.share.meta, inode.id) : 0,
            });
      min = FILE_CLASS_MIN[req.infoClass];
      variable = VARIABLE_FILE_CLASSES.has(req.infoClass);
      break;
    case InfoType.FILESYSTEM: {
      const st = await c.fs.fsstat(open.handle, c.id, false);
      const root = await c.fs.root(c.share);
      out = encodeFsInfo(req.infoClass, {
        totalBytes: st.totalBytes,
        freeBytes: st.freeBytes,
        serial: c.share.id,
        label: c.share.name.replace(/^\//, ''),
        created: root.ctime,
      });
      min = FS_CLASS_MIN[req.infoClass];
      variable = VARIABLE_FS_CLASSES.has(req.infoClass);
      break;
    }
    case InfoType.SECURITY:
      // Owner, group and DACL need READ_CONTROL; asking for none of them (as Windows answers) gets
      // an empty descriptor whatever the access.
      if ((req.additionalInformation & DESCRIPTOR_PARTS) !== 0 && (open.grantedAccess & Access.READ_CONTROL) === 0)
        throw fail(NtStatus.ACCESS_DENIED, 'no READ_CONTROL');
      out = describe(
        inode,
        (req.additionalInformation & SecurityInformation.DACL) !== 0
          ? await storedDacl(c.share.meta, await fileInodeId(c, open, inode))
          : null,
        req.additionalInformation,
      );
      min = 20;
      variable = false;
      if (out.length > req.outputBufferLength) {
        // MS-SMB2 3.3.5.20.3: tell the client the size it needs.
        const need = Buffer.alloc(4);
        need.writeUInt32LE(out.length, 0);
        return { status: NtStatus.BUFFER_TOO_SMALL, output: need };
      }
      break;
    default:
      throw fail(NtStatus.NOT_SUPPORTED);
  }
  if (out === null || min === undefined) throw fail(NtStatus.INVALID_INFO_CLASS);
  if (out.length <= req.outputBufferLength) return { status: NtStatus.SUCCESS, output: out };
  if (variable && req.outputBufferLength >= min)
    return { status: NtStatus.BUFFER_OVERFLOW, output: out.subarray(0, req.outputBufferLength) };
  throw fail(NtStatus.INFO_LENGTH_MISMATCH);
}

/**
 * MS-SMB2 3.3.5.21.3 SET_INFO of a security descriptor, as POSIX owner, group and mode
 * (security.ts). The open needs WRITE_OWNER for the owner and group, WRITE_DAC for the DACL; no
 * SACL is kept (asking to set one needs ACCESS_SYSTEM_SECURITY, then it is ignored). The vfs
 * applies its POSIX rules on top (only the owner changes the mode, only root the owner).
 */
async function setSecurity(c: FileContext, open: Open, req: SetInfoRequest): Promise<void> {
  const info = req.additionalInformation;
  const ownerOrGroup = SecurityInformation.OWNER | SecurityInformation.GROUP;
  if ((info & ownerOrGroup) !== 0 && (open.grantedAccess & Access.WRITE_OWNER) === 0) throw fail(NtStatus.ACCESS_DENIED, 'no WRITE_OWNER');
  if ((info & SecurityInformation.DACL) !== 0 && (open.grantedAccess & Access.WRITE_DAC) === 0)
    throw fail(NtStatus.ACCESS_DENIED, 'no WRITE_DAC');
  if ((info & SecurityInformation.SACL) !== 0 && (open.grantedAccess & Access.ACCESS_SYSTEM_SECURITY) === 0)
    throw fail(NtStatus.ACCESS_DENIED, 'no ACCESS_SYSTEM_SECURITY');
  const sd = decodeSecurityDescriptor(req.buffer);
  const target = open.stream?.fileHandle ?? open.handle;
  const { inode } = await c.fs.resolve(target);
  // Only the owner (or root) replaces a DACL, as only they change the mode (decided at CREATE).
  if ((info & SecurityInformation.DACL) !== 0 && !open.openerIsOwner) throw fail(NtStatus.ACCESS_DENIED, 'only the owner sets the DACL');
  if ((info & SecurityInformation.DACL) !== 0) storedForm({ control: sd.control, dacl: sd.dacl });
  const change = posixChangeOf(sd, info, inode);
  checkOwnerChange(change, c.fs.identity(c.share, c.id), inode.uid);
  if (change.uid !== undefined || change.gid !== undefined || change.mode !== undefined) await c.fs.setattr(target, c.id, change);
  // The DACL as given is kept (a NULL DACL too: a client reads back what it set, and nobody is
  // refused beyond the mode, 0777 by the mapping); the mode change above dropped the one stored before.
  if ((info & SecurityInformation.DACL) !== 0) await storeDacl(c.share.meta, inode.id, { control: sd.control, dacl: sd.dacl });
}

/** SET_INFO classes that change the open, not the file. */
const OPEN_STATE_CLASSES: ReadonlySet<number> = new Set([FileInfoClass.FilePositionInformation, FileInfoClass.FileModeInformation]);

// MS-SMB2 3.3.5.21 SET_INFO
export async function setInfo(c: FileContext, open: Open, req: SetInfoRequest): Promise<void> {
  if (req.infoType !== InfoType.FILE && req.infoType !== InfoType.SECURITY) throw fail(NtStatus.NOT_SUPPORTED);
  if (c.tree.readOnly && (req.infoType === InfoType.SECURITY || req.infoClass !== FileInfoClass.FilePositionInformation))
    throw fail(NtStatus.ACCESS_DENIED, 'read-only tree');
  // The share permission now, not as at TREE_CONNECT or CREATE: a share made read-only or a grant
  // lowered since refuses what it refuses a WRITE. The vfs checks the changes it makes itself; EAs,
  // the allocation size, a stored DACL and delete-pending are this file's to check. The position
  // and mode are the open's own, not the file's.
  if (req.infoType === InfoType.FILE && OPEN_STATE_CLASSES.has(req.infoClass)) c.fs.identity(c.share, c.id);
  else c.fs.writer(c.share, c.id);
  // The file's own information is checked against the caller as it is now, which for an
  // anonymous session is nobody (refuseAnonymous). Its DACL goes by the opener (openerIsOwner).
  if (req.infoType === InfoType.FILE && !OPEN_STATE_CLASSES.has(req.infoClass)) refuseAnonymous(c, 'changes no file information');
  if (req.infoType === InfoType.SECURITY) return setSecurity(c, open, req);
  const b = req.buffer;
  const need = (n: number): void => {
    if (b.length < n) throw fail(NtStatus.INFO_LENGTH_MISMATCH);
  };
  switch (req.infoClass) {
    case FileInfoClass.FileBasicInformation: {
      if ((open.grantedAccess & Access.FILE_WRITE_ATTRIBUTES) === 0) throw fail(NtStatus.ACCESS_DENIED);
      const set = decodeBasicInfoSet(b);
      // Times and attributes are the file's, also through one of its streams.
      const target = open.stream?.fileHandle ?? open.handle;
      // Even one that sets no time makes a pending write time show (what Windows 2016 does).
      writeTime.updateNow(open.share.id, open.inodeId);
      const { inode } = await c.fs.resolve(target);
      const r = basicInfoChanges(set, inode, open.heldTimes);
      // READONLY also moves the write bits, so that NFS clients and the Linux cifs client (whose
      // chmod a-w / u+w is this call) see the same file: set, every write bit goes; cleared, the
      // owner may write again. Only the owner (or root) changes modes; others set the attribute alone.
      const ownerOrRoot = c.id.uid === 0 || c.id.uid === inode.uid;
      if (set.attributes !== 0 && inode.type !== FileType.DIR && ownerOrRoot) {
        const readOnly = (set.attributes & FileAttributes.READONLY) !== 0;
        const writable = (inode.mode & 0o222) !== 0;
        if (readOnly && writable) r.attrs.mode = inode.mode & ~0o222;
        else if (!readOnly && !writable) r.attrs.mode = inode.mode | 0o200;
        if (r.attrs.mode !== undefined) r.changes = true;
      }
      if (r.changes) await c.fs.setattr(target, c.id, r.attrs);
      open.heldTimes = r.held;
      return;
    }
    case FileInfoClass.FileEndOfFileInformation: {
      need(8);
      // MS-SMB2 3.3.5.21.1: FILE_WRITE_DATA, not FILE_APPEND_DATA (an append-only open never cuts).
      if ((open.grantedAccess & Access.FILE_WRITE_DATA) === 0) throw fail(NtStatus.ACCESS_DENIED, 'EndOfFile needs FILE_WRITE_DATA');
      if (open.isDir) throw fail(NtStatus.INVALID_PARAMETER);
      const size = readSize(b, 0);
      await c.fs.setattr(open.handle, c.id, { size }, undefined, oplock.holderOf(open));
      if (open.heldTimes) await restoreHeldTimes(c.fs, open.handle, c.id, open.heldTimes);
      writeTime.updateNow(open.share.id, open.inodeId);
      return;
    }
    case FileInfoClass.FileAllocationInformation: {
      need(8);
      if ((open.grantedAccess & Access.FILE_WRITE_DATA) === 0) throw fail(NtStatus.ACCESS_DENIED, 'allocation needs FILE_WRITE_DATA');
      if (open.isDir) throw fail(NtStatus.INVALID_PARAMETER);
      const alloc = readSize(b, 0);
      // MS-FSA 2.1.5.14.3: a smaller allocation cuts the file; the size set is kept and reported
      // (no space is reserved ahead: the block store allocates on write). Several servers: compared
      // with the size another one acknowledged (getattr), not with an older one cached here.
      const { inode } = await c.fs.getattr(open.handle, c.id);
      if (!open.openerMayWrite) throw fail(NtStatus.ACCESS_DENIED, 'no write permission');
      if (alloc < inode.size) await c.fs.setattr(open.handle, c.id, { size: alloc }, undefined, oplock.holderOf(open));
      else await oplock.breakForChange(c.fs, open);
      await setAllocation(c.share.meta, inode.id, alloc);
      return;
    }
    case FileInfoClass.FileFullEaInformation: {
      // MS-SMB2 3.3.5.21.1, MS-FSA 2.1.5.14.2: set or (an empty value) remove each EA listed.
      if ((open.grantedAccess & Access.FILE_WRITE_EA) === 0) throw fail(NtStatus.ACCESS_DENIED, 'no FILE_WRITE_EA');
      const target = open.stream?.fileHandle ?? open.handle;
      const { inode } = await c.fs.resolve(target);
      // As user xattrs on Linux: writing them needs write permission on the file (decided at CREATE).
      if (!open.openerMayWrite) throw fail(NtStatus.ACCESS_DENIED, 'no write permission for EAs');
      await putEas(c, inode.id, eaChanges(decodeFullEaList(b)));
      return;
    }
    case FileInfoClass.FileDispositionInformation: {
      need(1);
      if ((open.grantedAccess & Access.DELETE) === 0) throw fail(NtStatus.ACCESS_DENIED);
      const pending = b[0] !== 0;
      if (pending && open.parent === null) throw fail(NtStatus.ACCESS_DENIED, 'cannot delete the share root');
      if (pending && !open.isDir && ((await c.fs.resolve(open.handle)).inode.dosAttrs & DosAttributes.READONLY) !== 0)
        throw fail(NtStatus.CANNOT_DELETE, 'the file is read-only');
      if (pending && open.isDir) {
        const r = await c.fs.readdir(open.handle, c.id, 0, 1);
        if (r.entries.length > 0) throw fail(NtStatus.DIRECTORY_NOT_EMPTY);
      }
      await oplock.setDeletePending(c.fs, open, pending);
      return;
    }
    case FileInfoClass.FilePositionInformation:
      need(8);
      open.position = readSize(b, 0);
      return;
    case FileInfoClass.FileModeInformation: {
      need(4);
      if (!open.setMode(b.readUInt32LE(0))) throw fail(NtStatus.INVALID_PARAMETER, 'FileModeInformation bits that cannot be set');
      return;
    }
    case FileInfoClass.FileRenameInformation:
    case FileInfoClass.FileLinkInformation:
      await renameOrLink(c, open, b, req.infoClass === FileInfoClass.FileLinkInformation);
      return;
    default:
      throw fail(NtStatus.INVALID_INFO_CLASS);
  }
}

/** Replaces every EA of a file by `eas`. */
async function replaceEas(c: FileContext, inodeId: number, eas: EaChange[]): Promise<void> {
  const keep = new Set(eas.map((e) => e.name.toString('latin1')));
  const drop = (await c.share.meta.getMeta(inodeId, EA_KIND)).filter((r) => !keep.has(r.name.toString('latin1')));
  await putEas(c, inodeId, [...drop.map((r) => ({ name: r.name, value: null, flags: 0 })), ...eas]);
}

/** Applies EA changes to a file (EA_TOO_LARGE past the caps, nothing changed). */
async function putEas(c: FileContext, inodeId: number, changes: EaChange[]): Promise<void> {
  try {
    await storeEas(c.share.meta, inodeId, changes, nowTimespec());
  } catch (e) {
    if (e instanceof VfsError && e.errno === 'NOSPC') throw fail(NtStatus.EA_TOO_LARGE, 'the EAs of a file past 64 KiB');
    throw e;
  }
}

/**
 * The mode a FileBasicInformation FileAttributes value asks for, or undefined for no change. The
 * READONLY attribute is what fileInfoOf reports for a file nobody may write, so setting it clears
 * every write bit and clearing it gives the owner write again (what the Linux client sends for
 * chmod a-w / u+w without unix extensions). 0 means "leave the attributes"; directories keep their
 * mode (READONLY on a directory does not stop changes inside it).
 */
function readSize(b: Buffer, at: number): number {
  const hi = b.readUInt32LE(at + 4);
  if (hi > 0x1fffff) throw fail(NtStatus.INVALID_PARAMETER, 'size above 2^53');
  return hi * 2 ** 32 + b.readUInt32LE(at);
}

/** MS-FSCC 2.4.37.2 FILE_RENAME_INFORMATION_TYPE_2 (and 2.4.21.2 the link form, same layout). */
async function renameOrLink(c: FileContext, open: Open, b: Buffer, link: boolean): Promise<void> {
  if (b.length < 20) throw fail(NtStatus.INFO_LENGTH_MISMATCH);
  refuseAnonymous(c, link ? 'links nothing' : 'renames nothing');
  // MS-FSA 2.1.5.14.6: a named stream cannot be linked (its handle is the stream's own inode,
  // which a link would give a name in a directory).
  if (link && open.stream) throw fail(NtStatus.INVALID_PARAMETER, 'link of a named stream');
  // A directory cannot be hard-linked: refused before a replaced file is removed for it.
  if (link && open.isDir) throw fail(NtStatus.FILE_IS_A_DIRECTORY, 'link of a directory');
  const replace = b[0] !== 0;
  const nameLen = b.readUInt32LE(16);
  if (nameLen === 0 || 20 + nameLen > b.length) throw fail(NtStatus.INVALID_PARAMETER, 'rename: bad FileNameLength');
  const target = fromUtf16(b.subarray(20, 20 + nameLen), 'rename target');
  // Nor is one renamed to a file name (MS-FSA 2.1.5.15.11: only to another stream name of its file,
  // ":new", which DittoFS does not do): its open's parent and name are its file's, whose rename it
  // would be, past the file's share modes (a stream open is not checked against them).
  if (open.stream)
    throw target.startsWith(':')
      ? fail(NtStatus.NOT_SUPPORTED, 'rename of a named stream to another stream name')
      : fail(NtStatus.INVALID_PARAMETER, 'rename of a named stream to a file name');
  // A rename needs DELETE of the open (MS-SMB2 3.3.5.21.1); a link needs no right of it (the
  // section lists none for FileLinkInformation, nor does MS-FSA 2.1.5.15.6): it adds a name, which
  // is the target directory's to allow (FILE_ADD_FILE, checkAddTo; the vfs its write permission),
  // and gives no access the file's mode and DACL do not.
  if (!link && (open.grantedAccess & Access.DELETE) === 0) throw fail(NtStatus.ACCESS_DENIED);
  if (open.parent === null || open.name === null) throw fail(NtStatus.ACCESS_DENIED, 'cannot rename the share root');
  const parts = parsePath(target);
  if (parts.length === 0) throw fail(NtStatus.OBJECT_NAME_INVALID);
  // The handle leases of the file's other opens (of the opens beneath a directory) break before
  // anything else the rename does.
  if (!link && open.isDir) await oplock.breakTreeForRename(c.fs, open);
  else if (!link) oplock.breakForRename(c.fs, open);
  const toDir = await walkParent(c, parts);
  const toName = Buffer.from(parts[parts.length - 1]!);
  await checkAddTo(c, toDir, open.isDir);
  const existing = await lookupOrNull(c, toDir, toName);
  // Another hard link of this very file holds the target name (the lookup is exact: a case-only
  // rename of the open's own name finds nothing): a name of an open file, which a rename does not
  // replace (MS-FSA 2.1.5.14.11); the store's rename of two links of one file would change nothing
  // and answer success.
  if (!link && existing && existing.id === open.inodeId && !(toDir.equals(open.parent) && toName.equals(open.name)))
    throw replace ? fail(NtStatus.ACCESS_DENIED, 'the target name is another link of the open file') : fail(NtStatus.OBJECT_NAME_COLLISION);
  if (existing && existing.id !== open.inodeId) {
    if (!replace) throw fail(NtStatus.OBJECT_NAME_COLLISION);
    if (existing.type === FileType.DIR) throw fail(NtStatus.ACCESS_DENIED, 'cannot replace a directory');
  }
  const replaced = existing && existing.id !== open.inodeId ? existing.id : null;
  // MS-FSA 2.1.5.14.11: the file replaced is deleted, which its DELETE (or the directory's
  // FILE_DELETE_CHILD) must allow, as for an open of it asking DELETE; the vfs checks the POSIX
  // rule (the directory's write permission, sticky).
  if (replaced !== null) await storedDaclAccess(c, existing!, toDir, Access.DELETE);
  if (!link) {
    const parentId = (await c.fs.resolve(open.parent)).inode.id;
    oplock.checkRename(c.fs, open, parentId, replaced);
    if (await c.fs.opens.dirRefusesRenameElsewhere(c.share.meta, parentId))
      throw fail(NtStatus.SHARING_VIOLATION, 'the directory is open on another server without delete sharing');
  } else if (replaced !== null) {
    // A link replaces the file under the name as a rename does: not while that file is open.
    oplock.checkReplace(c.fs, open, replaced);
  }
  if (replaced !== null && (await c.fs.opens.openElsewhere(c.share.meta, replaced)))
    throw fail(NtStatus.ACCESS_DENIED, 'the file replaced is open on another server');
  if (link) {
    if (existing && existing.id === open.inodeId) return;
    if (existing) await c.fs.remove(toDir, toName, c.id, false);
    await c.fs.link(open.handle, toDir, toName, c.id);
    return;
  }
  // The open's file, not another that took its name since (another client renamed it away).
  // The file service has the file's opens follow it (followRenamed); this one names it as the client did.
  // The target directory's path as the client named it: the other opens' paths need no look-up.
  renamingInto.set(open, parts.slice(0, -1).join('\\'));
  try {
    await c.fs.rename(open.parent, open.name, toDir, toName, c.id, oplock.holderOf(open), false, open.inodeId);
  } finally {
    renamingInto.delete(open);
  }
  open.path = open.clientPath = parts.join('\\');
}

/** Opens renaming their file through SMB now, and the path of the directory they move it into. */
const renamingInto = new WeakMap<Open, string>();

/** The path of a stream open's file: its path without the ":stream" (streams.ts). */
const filePathOf = (o: Open): string => (o.stream === null ? o.path : o.path.slice(0, o.path.lastIndexOf(':')));
/** Where the name of a path begins. */
const dirPartOf = (path: string): string => path.slice(0, Math.max(0, path.lastIndexOf('\\')));
const joinPath = (dir: string, name: string): string => (dir === '' ? name : `${dir}\\${name}`);

/** Directory levels a path is looked for through at most, and entries read in each. */
const MAX_PATH_DEPTH = 256;
const MAX_SCAN_ENTRIES = 65536;

/**
 * The path from the share root of directory `dir`: from an open that knows it (of the directory,
 * or of a file in it), else by going up its parents and finding each one's name in its parent.
 * Null when that is not found within the bounds (a directory of more than MAX_SCAN_ENTRIES
 * entries on the way, or a rename racing with the walk).
 */
async function dirPath(fs: FileService, share: Share, dir: Buffer, moving: ReadonlySet<Open> = new Set()): Promise<string | null> {
  let id = decodeHandle(dir).inodeId;
  if (id === share.rootId) return '';
  for (const rec of fs.opens.opensOf(share.meta)) {
    const o = rec.owner;
    // The opens being moved have their new parent and still their old path.
    if (!(o instanceof Open) || o.share !== share || o.stream !== null || moving.has(o)) continue;
    if (o.handle.equals(dir)) return o.path;
    if (o.parent?.equals(dir)) return dirPartOf(o.path);
  }
  const names: string[] = [];
  for (let depth = 0; depth < MAX_PATH_DEPTH; depth++) {
    if (id === share.rootId) return names.reverse().join('\\');
    const inode = await share.meta.getInode(id);
    if (!inode || inode.type !== FileType.DIR) return null;
    const name = await nameIn(share.meta, inode.parent, id);
    if (name === null) return null;
    names.push(name);
    id = inode.parent;
  }
  return null;
}

/** The name of `id` in directory `dirId`, read from its entries (at most MAX_SCAN_ENTRIES). */
async function nameIn(meta: MetadataStore, dirId: number, id: number): Promise<string | null> {
  let cookie = 0;
  for (let seen = 0; seen < MAX_SCAN_ENTRIES;) {
    const page = await meta.readdir(dirId, cookie, DIR_PAGE);
    for (const e of page.entries) if (e.inode.id === id) return e.name.toString();
    if (page.eof || page.entries.length === 0) return null;
    seen += page.entries.length;
    cookie = page.entries[page.entries.length - 1]!.cookie;
  }
  return null;
}

/**
 * The opens of a renamed file follow it, as Windows handles do, whether an SMB client on this
 * server renamed it or an NFS client did (the open table's RenameFollower): the opens made through
 * the name it had (its other opens, the opens of its named streams) now name it where it is, so
 * their delete on close, rename and name queries act on the new name. An open made through another
 * hard link of the file keeps that link. Under a renamed directory (only NFS renames one with opens
 * beneath: SMB refuses, oplock.checkRename) the opens' paths change with it. A rename made through
 * another server is not followed: such an open answers OBJECT_NAME_NOT_FOUND, never acts on
 * another file (its actions are guarded by the inode id).
 */
export async function followRenamed(fs: FileService, meta: MetadataStore, e: RenameEvent): Promise<void> {
  const shares = new Map<Share, Open[]>();
  for (const rec of fs.opens.opensOf(meta)) {
    const o = rec.owner;
    if (!(o instanceof Open) || o.parent === null || o.name === null) continue;
    const ofFile = o.inodeId === e.inodeId || (o.stream !== null && decodeHandle(o.stream.fileHandle).inodeId === e.inodeId);
    if (!ofFile || !o.parent.equals(e.fromDir) || !o.name.equals(e.fromName)) continue;
    let list = shares.get(o.share);
    if (!list) shares.set(o.share, (list = []));
    list.push(o);
  }
  // Their name first, before anything is read from the store: their actions go by it, and it must
  // hold even when their path cannot be found (a store error, the bounds of dirPath).
  for (const list of shares.values()) {
    for (const o of list) {
      o.parent = e.toDir;
      o.name = e.toName;
    }
  }
  const newName = e.toName.toString();
  // Each share's paths separately (shares of one store have different roots).
  for (const share of new Set([...shares.keys(), ...(e.isDir ? shareWithOpens(fs, meta, decodeHandle(e.fromDir).shareId) : [])])) {
    const moved = shares.get(share) ?? [];
    const from = moved.length > 0 ? dirPartOf(filePathOf(moved[0]!)) : null;
    const oldPath = from !== null ? joinPath(from, e.fromName.toString()) : e.isDir ? await oldDirPath(fs, share, e) : null;
    const sameDir = e.fromDir.equals(e.toDir);
    const named = moved.map((o) => renamingInto.get(o)).find((p) => p !== undefined);
    const toDir = sameDir && from !== null ? from : (named ?? (await dirPath(fs, share, e.toDir, new Set(moved))));
    const path = toDir === null ? null : joinPath(toDir, newName);
    // Without a path found, the open keeps its old one for name queries; its actions go by parent and name.
    if (path !== null) for (const o of moved) o.path = o.stream === null ? path : `${path}${o.path.slice(o.path.lastIndexOf(':'))}`;
    if (!e.isDir || oldPath === null || path === null) continue;
    // Paths compare without case (a client names a directory in any case), and the store's names
    // with it (NFS may have made 'docs' and 'Docs'): an open is moved only if the renamed directory
    // is among its parents.
    const prefix = (oldPath + '\\').toLowerCase();
    const beneath: Open[] = [];
    for (const rec of fs.opens.opensOf(meta)) {
      const o = rec.owner;
      if (o instanceof Open && o.share === share && o.parent !== null && o.path.toLowerCase().startsWith(prefix)) beneath.push(o);
    }
    for (const o of beneath) if (await isBeneath(meta, share, o.parent!, e.inodeId)) o.path = path + o.path.slice(oldPath.length);
  }
}

/** Whether directory `dirId` is `parent` or one of its parents (at most MAX_PATH_DEPTH levels up). */
async function isBeneath(meta: MetadataStore, share: Share, parent: Buffer, dirId: number): Promise<boolean> {
  let id = decodeHandle(parent).inodeId;
  for (let depth = 0; depth < MAX_PATH_DEPTH; depth++) {
    if (id === dirId) return true;
    if (id === share.rootId) return false;
    const inode = await meta.getInode(id);
    if (!inode || inode.parent === id) return false;
    id = inode.parent;
  }
  return false;
}

const following = new WeakSet<FileService>();

/** Has the SMB opens of `fs`'s files follow their renames (followRenamed); once per file service. */
export function followRenames(fs: FileService): void {
  if (following.has(fs)) return;
  following.add(fs);
  fs.opens.followRenames((meta, e) => followRenamed(fs, meta, e));
}

/**
 * The share `shareId` when it has SMB opens of the store: a renamed directory may have opens beneath
 * only in its own share (an inode belongs to one share; another share's root never lies beneath it).
 */
function shareWithOpens(fs: FileService, meta: MetadataStore, shareId: number): Share[] {
  for (const rec of fs.opens.opensOf(meta)) if (rec.owner instanceof Open && rec.owner.share.id === shareId) return [rec.owner.share];
  return [];
}

/** A renamed directory's path before the rename, in `share`: its old parent's path (unchanged by it) and old name. */
async function oldDirPath(fs: FileService, share: Share, e: RenameEvent): Promise<string | null> {
  const from = await dirPath(fs, share, e.fromDir);
  return from === null ? null : joinPath(from, e.fromName.toString());
}
