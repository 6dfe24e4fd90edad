// Named streams over SMB: CREATE of "file:name[:$DATA]" (MS-FSCC 2.1.5.3 stream names), READ/WRITE/
// EndOfFile through the stream's own inode (vfs/streams.ts), delete on close, and MS-FSCC 2.4.43
// FileStreamInformation ("::$DATA" for a file's own data, then ":name:$DATA" per named stream).
import { VfsError } from '../vfs/errors.js';
import { CreateMode } from '../vfs/service.js';
import { listStreams, openStream } from '../vfs/streams.js';
import type { Inode } from '../vfs/types.js';
import { DosAttributes, FileType } from '../vfs/types.js';
import { fromUtf16, SmbWriter, utf16 } from './codec.js';
import { Access, CreateAction, CreateDisposition, CreateOptions, FILE_ALL_ACCESS } from './constants.js';
import { checkOpenExisting, newFileAttributes } from './attrs.js';
import { newInodeDacl } from './acl.js';
import { decodeHandle } from '../vfs/handle.js';
import { ALLOCATION_UNIT, fileInfoOf } from './fscc.js';
import {
  type CreateContext,
  type CreateRequest,
  encodeCreateContexts,
  mxacResponse,
  qfidResponse,
  writeCreateResponse,
} from './messages.js';
import {
  allocOpenId,
  checkAddTo,
  type FileContext,
  lookupOrNull,
  mapGenericRights,
  maximalAccessOf,
  newInodeMode,
  storedDaclAccess,
  walkParent,
} from './files.js';
import { lookupCaseless } from './names.js';
import * as oplock from './oplock.js';
import { fileIdOf, Open, OPEN_MODE_BITS } from './state.js';
import { NtStatus, SmbStatusError } from './status.js';

const fail = (status: NtStatus, message?: string): SmbStatusError => new SmbStatusError(status, message);

/** The stream an Open is on: its file's handle and the stream's stored name. */
export interface OpenStreamRef {
  fileHandle: Buffer;
  name: Buffer;
}

/**
 * Splits a CREATE name into the path and the stream: "a\\f:s:$DATA" and "a\\f:s" name stream "s";
 * "a\\f::$DATA" and "a\\f" the file itself (stream null). Other stream types, a third colon, an
 * empty name without a type or a name with a path separator are OBJECT_NAME_INVALID.
 */
export function splitStreamPath(raw: string): { path: string; stream: string | null; dataStream: boolean } {
  const colon = raw.indexOf(':');
  if (colon === -1) return { path: raw, stream: null, dataStream: false };
  const path = raw.slice(0, colon);
  const rest = raw.slice(colon + 1).split(':');
  if (rest.length > 2) throw fail(NtStatus.OBJECT_NAME_INVALID, 'too many colons in a stream name');
  const name = rest[0]!;
  const type = rest[1];
  if (type !== undefined && type.toUpperCase() !== '$DATA') throw fail(NtStatus.OBJECT_NAME_INVALID, `stream type ${type}`);
  if (name === '') {
    if (type === undefined) throw fail(NtStatus.OBJECT_NAME_INVALID, 'empty stream name');
    return { path, stream: null, dataStream: true };
  }
  for (const ch of name) {
    const code = ch.charCodeAt(0);
    if (ch === '\\' || ch === '/' || code === 0) throw fail(NtStatus.OBJECT_NAME_INVALID, 'invalid character in a stream name');
  }
  if (Buffer.byteLength(name) > 255) throw fail(NtStatus.OBJECT_NAME_INVALID, 'stream name longer than 255 bytes');
  return { path, stream: name, dataStream: false };
}

/** The stored name of `name` on a file (stream names compare without case, as on Windows), or the name as given. */
async function storedName(c: FileContext, fileHandle: Buffer, name: string): Promise<Buffer> {
  const { streams } = await listStreams(c.fs, fileHandle, c.id);
  const want = name.toUpperCase();
  const hit = streams.find((s) => s.name.toString('utf8').toUpperCase() === want);
  return hit ? hit.name : Buffer.from(name);
}

/** What CREATE, CLOSE and QUERY_INFO report for a stream: its file's times and attributes, its own sizes. */
export function streamInfoOf(file: Inode, stream: Inode): ReturnType<typeof fileInfoOf> {
  const base = fileInfoOf(file);
  return {
    ...base,
    endOfFile: stream.size,
    allocationSize: Math.ceil(stream.size / ALLOCATION_UNIT) * ALLOCATION_UNIT,
    fileAttributes: base.fileAttributes & ~DosAttributes.DIRECTORY || DosAttributes.NORMAL,
  };
}

/**
 * The inode QUERY_INFO reports for a stream open: its file (id, times, attributes, links) with the
 * stream's size, as Windows reports a stream.
 */
export async function streamView(c: FileContext, handle: Buffer, ref: OpenStreamRef): Promise<Inode> {
  // The stream's size as another server acknowledged it (getattr: refreshed with several servers).
  const [{ inode: stream }, { inode: file }] = await Promise.all([c.fs.getattr(handle, c.id), c.fs.resolve(ref.fileHandle)]);
  return { ...file, type: FileType.REG, size: stream.size };
}

// MS-SMB2 3.3.5.9 CREATE of a named stream (the file is made too when the disposition allows).
export async function createStreamOpen(
  c: FileContext,
  req: CreateRequest,
  w: SmbWriter,
  register: (o: Open) => void,
  parts: string[],
  streamName: string,
): Promise<Open> {
  const opts = req.createOptions;
  if ((opts & CreateOptions.DIRECTORY_FILE) !== 0) throw fail(NtStatus.NOT_A_DIRECTORY, 'a stream is not a directory');
  const desired = mapGenericRights(req.desiredAccess);
  const deleteOnClose = (opts & CreateOptions.DELETE_ON_CLOSE) !== 0;
  const disp = req.createDisposition;
  const mayCreate = disp !== CreateDisposition.OPEN && disp !== CreateDisposition.OVERWRITE;

  let parent: Buffer | null = null;
  let name: Buffer | null = null;
  let file: Inode | null;
  if (parts.length === 0) file = await c.fs.root(c.share);
  else {
    parent = await walkParent(c, parts);
    name = Buffer.from(parts[parts.length - 1]!);
    file = await lookupOrNull(c, parent, name);
    if (!file && !mayCreate) {
      const found = await lookupCaseless(c, parent, name);
      if (found) ({ name, inode: file } = found);
    }
  }
  let created = false;
  if (!file) {
    if (!mayCreate || parent === null || name === null) throw fail(NtStatus.OBJECT_NAME_NOT_FOUND);
    const parentSd = await checkAddTo(c, parent, false);
    // The mode of the DACL the file inherits (files.ts newInodeMode); its streams take the file's.
    const mode = await newInodeMode(c, parent, parentSd, null, false, null);
    try {
      file = (
        await c.fs.create(parent, name, c.id, CreateMode.GUARDED, { mode, dosAttrs: newFileAttributes(req.fileAttributes, false) }, null)
      ).inode;
      created = true;
      // What the directory's stored DACL passes on, as for a file CREATE makes (files.ts).
      await newInodeDacl(c.share.meta, decodeHandle(parent).inodeId, file, null, parentSd);
    } catch (e) {
      if (!(e instanceof VfsError && e.errno === 'EXIST')) throw e;
      file = await lookupOrNull(c, parent, name);
      if (!file) throw fail(NtStatus.OBJECT_NAME_NOT_FOUND);
    }
  }
  const fileHandle = c.fs.handleOf(c.share, file);
  // A stream is guarded by its file's stored DACL, as an open of the file itself is.
  const acl = created ? 0xffffffff : await storedDaclAccess(c, file, parent, desired);
  // A file made here by this CREATE: its creator holds what it asks, as for a file made without a
  // stream (files.ts create), whatever the mode its inherited DACL gives (newInodeMode).
  const max = created ? c.tree.maximalAccess >>> 0 : (maximalAccessOf(c, file) & acl) >>> 0;
  // Every right asked must be granted (files.ts), FILE_EXECUTE aside: a stream is not run. Yet a
  // READ takes it for FILE_READ_DATA (MS-SMB2 3.3.5.12, as Windows): it is granted only to who may
  // read or run the file now (its FILE_EXECUTE does not make a reader of whom the mode refuses).
  // A directory's FILE_EXECUTE is traverse (every directory's, maximalAccessOf), which reads
  // nothing: a stream of a directory needs reading it.
  const reads = file.type === FileType.DIR ? Access.FILE_READ_DATA : Access.FILE_READ_DATA | Access.FILE_EXECUTE;
  const refused = (desired & FILE_ALL_ACCESS & ~Access.FILE_EXECUTE & ~max) >>> 0;
  if (refused !== 0) throw fail(NtStatus.ACCESS_DENIED, `rights asked and not granted: 0x${refused.toString(16)}`);
  checkOpenExisting(file, desired, CreateDisposition.OPEN, req.fileAttributes, false);
  const asked = (req.desiredAccess & Access.MAXIMUM_ALLOWED) !== 0 ? max | (desired & ~Access.MAXIMUM_ALLOWED & max) : desired;
  const granted = (max & reads) === 0 ? asked & ~Access.FILE_EXECUTE : asked;

  // A delete-pending file (its delete waiting for opens of it or its streams) gets no new stream opens.
  if (c.fs.opens.get(c.share.meta, file.id)?.deletePending) throw fail(NtStatus.DELETE_PENDING);
  const stored = await storedName(c, fileHandle, streamName);
  let s = await openStream(c.fs, fileHandle, stored, c.id, false);
  let action: number = CreateAction.OPENED;
  if (s) {
    if (disp === CreateDisposition.CREATE) throw fail(NtStatus.OBJECT_NAME_COLLISION);
    // Overwriting empties the stream: its data is the file's, so the caller must be able to write
    // the file (whose owner and mode its streams follow: vfs/streams.ts), a stored DACL of the file
    // must grant FILE_WRITE_DATA, and the file must not be read-only, as for an overwrite of the
    // file itself.
    const overwrite =
      disp === CreateDisposition.SUPERSEDE || disp === CreateDisposition.OVERWRITE || disp === CreateDisposition.OVERWRITE_IF;
    if (
      overwrite &&
      ((file.dosAttrs & DosAttributes.READONLY) !== 0 ||
        !c.fs.accessBits(c.share, file, c.id).write ||
        (acl & Access.FILE_WRITE_DATA) === 0)
    )
      throw fail(NtStatus.ACCESS_DENIED, 'overwriting a stream needs write access to its file');
  } else {
    if (!mayCreate) throw fail(NtStatus.OBJECT_NAME_NOT_FOUND);
    // A new stream is new data of the file, whatever access its open asks: the file's stored DACL
    // must grant FILE_WRITE_DATA, as the vfs asks the file's write permission (openStream).
    if ((acl & Access.FILE_WRITE_DATA) === 0) throw fail(NtStatus.ACCESS_DENIED, 'a new stream needs FILE_WRITE_DATA on its file');
    s = await openStream(c.fs, fileHandle, stored, c.id, true, created);
    if (!s) throw fail(NtStatus.OBJECT_NAME_NOT_FOUND);
    action = CreateAction.CREATED;
  }

  const id = allocOpenId();
  const fileId = fileIdOf(id);
  const open = new Open(
    id,
    fileId,
    c.tree,
    c.share,
    s.handle,
    s.stream.id,
    false,
    parent,
    name,
    `${parts.join('\\')}:${streamName}`,
    granted >>> 0,
  );
  open.stream = { fileHandle, name: stored };
  open.deleteOnClose = deleteOnClose;
  open.mode = req.createOptions & OPEN_MODE_BITS;
  // The file's EAs and DACL are reached through its streams too (files.ts).
  open.openerIsOwner = c.id.uid === 0 || c.id.uid === file.uid;
  open.openerMayWrite = created || c.fs.accessBits(c.share, file, c.id).write;
  // The file's DACL granting FILE_WRITE_DATA without FILE_APPEND_DATA: the stream's WRITEs do not
  // extend it, as the file's do not (files.ts create).
  open.cannotExtend = (max & Access.FILE_APPEND_DATA) === 0;
  // A stream has share modes and oplocks of its own, apart from its file's (MS-FSA keeps them per
  // Stream): its opens are registered under the stream's inode, and among its file's opens too.
  await oplock.breakForOpen(c.fs, c.share.meta, s.stream, open.grantedAccess, req, c.caching, c.session, c.onBreakWait);
  await oplock.registerStreamOfFile(c.fs, open, file.id, req.shareAccess);
  let record;
  try {
    record = await oplock.registerOpen(c.fs, open, open.grantedAccess, req.shareAccess);
  } catch (e) {
    await oplock.releaseOpen(c.fs, open, c.id);
    throw e;
  }
  open.record = record;
  let granting;
  try {
    if (
      action === CreateAction.OPENED &&
      (disp === CreateDisposition.SUPERSEDE || disp === CreateDisposition.OVERWRITE || disp === CreateDisposition.OVERWRITE_IF)
    ) {
      s = { ...s, stream: (await c.fs.setattr(s.handle, c.id, { size: 0 })).after };
      action = disp === CreateDisposition.SUPERSEDE ? CreateAction.SUPERSEDED : CreateAction.OVERWRITTEN;
    }
    granting = oplock.grantCaching(c.fs, open, record, req, c.caching);
  } catch (e) {
    await oplock.releaseOpen(c.fs, open, c.id);
    throw e;
  }
  register(open);
  const contexts: CreateContext[] = [];
  for (const ctx of req.contexts) {
    if (ctx.name === 'QFid') contexts.push({ name: 'QFid', data: qfidResponse(file.id, c.share.id) });
    else if (ctx.name === 'MxAc') contexts.push({ name: 'MxAc', data: mxacResponse(max) });
  }
  if (granting.lease) contexts.push({ name: 'RqLs', data: granting.lease });
  writeCreateResponse(w, {
    oplockLevel: granting.level,
    createAction: action,
    info: streamInfoOf(file, s.stream),
    fileId,
    contexts: encodeCreateContexts(contexts),
  });
  return open;
}

export interface StreamInfoEntry {
  /** ":name:$DATA", or "::$DATA" for the file's own data. */
  name: string;
  size: number;
  allocationSize: number;
}

/** MS-FSCC 2.4.43 FILE_STREAM_INFORMATION entries, each 8-byte aligned, chained by NextEntryOffset. */
export function encodeStreamInformation(entries: readonly StreamInfoEntry[]): Buffer {
  const w = new SmbWriter(128);
  let last = -1;
  for (const e of entries) {
    const name = utf16(e.name);
    w.align(8);
    const at = w.pos;
    if (last !== -1) w.patchU32(last, at - last);
    w.u32(0).u32(name.length).u64(e.size).u64(e.allocationSize).bytes(name);
    last = at;
  }
  return w.finish();
}

/** Decodes FILE_STREAM_INFORMATION (tests; a client's view). Throws RangeError on malformed input. */
export function decodeStreamInformation(b: Buffer): StreamInfoEntry[] {
  const out: StreamInfoEntry[] = [];
  let at = 0;
  if (b.length === 0) return out;
  for (let n = 0; n < 65536; n++) {
    if (at + 24 > b.length) throw new RangeError('FILE_STREAM_INFORMATION entry truncated');
    const next = b.readUInt32LE(at);
    const len = b.readUInt32LE(at + 4);
    if (len % 2 !== 0 || at + 24 + len > b.length) throw new RangeError('FILE_STREAM_INFORMATION name out of bounds');
    const size = Number(b.readBigUInt64LE(at + 8));
    const allocationSize = Number(b.readBigUInt64LE(at + 16));
    out.push({ name: fromUtf16(b.subarray(at + 24, at + 24 + len), 'stream name'), size, allocationSize });
    if (next === 0) return out;
    if (next < 24 + len) throw new RangeError('FILE_STREAM_INFORMATION NextEntryOffset overlaps');
    at += next;
  }
  throw new RangeError('FILE_STREAM_INFORMATION: too many entries');
}

/** FileStreamInformation of an open (of the file, or of one of its streams: the file's list either way). */
export async function streamInformation(c: FileContext, open: Open): Promise<Buffer> {
  const { file, streams } = await listStreams(c.fs, open.stream?.fileHandle ?? open.handle, c.id);
  const entries: StreamInfoEntry[] = [];
  const alloc = (n: number): number => Math.ceil(n / ALLOCATION_UNIT) * ALLOCATION_UNIT;
  if (file.type !== FileType.DIR) entries.push({ name: '::$DATA', size: file.size, allocationSize: alloc(file.size) });
  for (const s of streams)
    entries.push({ name: `:${s.name.toString('utf8')}:$DATA`, size: s.inode.size, allocationSize: alloc(s.inode.size) });
  return encodeStreamInformation(entries);
}
