// MS-SMB2 3.3.5.15 IOCTL: the FSCTLs of a disk tree (server-side copy with resume keys, sparse
// files, allocated ranges, snapshots, compression, reparse points) and the connection-level ones
// (VALIDATE_NEGOTIATE_INFO, QUERY_NETWORK_INTERFACE_INFO, DFS referrals) through the IoctlHost the connection provides.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { dataRanges, zeroRange } from '../vfs/sparse.js';
import { DosAttributes } from '../vfs/types.js';
import { SmbWriter } from './codec.js';
import { Access, Fsctl, IOCTL_IS_FSCTL } from './constants.js';
import { restoreHeldTimes } from './attrs.js';
import { type FileContext, ioLocked, refuseAnonymous, writeThroughOpen } from './files.js';
import { type IoctlRequest, writeIoctlResponse } from './messages.js';
import * as oplock from './oplock.js';
import type { Open } from './state.js';
import { NtStatus, SmbStatusError } from './status.js';

const fail = (status: NtStatus, message?: string): SmbStatusError => new SmbStatusError(status, message);

/** FSCTL codes of MS-FSCC 2.3 and MS-SMB2 2.2.31 handled here, besides the connection's own (constants.ts). */
export const FsctlCode = Object.freeze({
  SRV_REQUEST_RESUME_KEY: 0x00140078,
  SRV_COPYCHUNK: 0x001440f2,
  SRV_COPYCHUNK_WRITE: 0x001480f2,
  SRV_ENUMERATE_SNAPSHOTS: 0x00144064,
  SET_SPARSE: 0x000900c4,
  QUERY_ALLOCATED_RANGES: 0x000940cf,
  SET_ZERO_DATA: 0x000980c8,
  GET_COMPRESSION: 0x0009003c,
  SET_COMPRESSION: 0x0009c040,
  GET_REPARSE_POINT: 0x000900a8,
  SET_REPARSE_POINT: 0x000900a4,
  DELETE_REPARSE_POINT: 0x000900ac,
  CREATE_OR_GET_OBJECT_ID: 0x000900c0,
} as const);

/**
 * Server-side copy limits (MS-SMB2 3.3.3: ServerSideCopyMaxNumberofChunks, MaxChunkSize,
 * MaxDataSize; these are Windows' defaults). A request past them gets STATUS_INVALID_PARAMETER
 * with the limits in the response (3.3.5.15.6).
 */
export const COPYCHUNK_LIMITS = Object.freeze({ maxChunks: 256, maxChunkSize: 1024 * 1024, maxTotal: 16 * 1024 * 1024 });

/** What the IOCTL handler needs from its connection. */
export interface IoctlHost {
  /** 3.3.5.15.12: the connection checks its negotiation and answers (or drops itself and throws). */
  validateNegotiate(input: Buffer, maxOutputResponse: number): Buffer;
  /** The open the request's FileId names (compound-aware); throws when there is none. */
  findOpen(fileId: Buffer): Open;
  /** Any open of this connection by open id (a copy's source may be on another tree). */
  openById(id: number): Open | undefined;
  /** The file context of the request's tree, null on IPC$. */
  fileContext(): FileContext | null;
}

// ---- 2.2.31.1 SRV_COPYCHUNK_COPY / 2.2.32.1 SRV_COPYCHUNK_RESPONSE / 2.2.32.3 SRV_REQUEST_RESUME_KEY ----

export interface CopyChunk {
  sourceOffset: number;
  targetOffset: number;
  length: number;
}

export interface CopyChunkCopy {
  sourceKey: Buffer;
  /** The ChunkCount field (may exceed chunks.length only when decoding was stopped at the cap). */
  chunkCount: number;
  chunks: CopyChunk[];
}

export interface CopyChunkResponse {
  chunksWritten: number;
  chunkBytesWritten: number;
  totalBytesWritten: number;
}

const u64 = (b: Buffer, at: number): number => {
  const hi = b.readUInt32LE(at + 4);
  if (hi > 0x1fffff) throw fail(NtStatus.INVALID_PARAMETER, 'offset above 2^53');
  return hi * 2 ** 32 + b.readUInt32LE(at);
};

/**
 * Decodes SRV_COPYCHUNK_COPY. Chunks past COPYCHUNK_LIMITS.maxChunks are not read (the request is
 * refused with the limits anyway), so a hostile ChunkCount costs nothing.
 */
export function decodeCopyChunkCopy(b: Buffer): CopyChunkCopy {
  if (b.length < 32) throw fail(NtStatus.INVALID_PARAMETER, 'SRV_COPYCHUNK_COPY shorter than 32 bytes');
  const chunkCount = b.readUInt32LE(24);
  const chunks: CopyChunk[] = [];
  if (chunkCount <= COPYCHUNK_LIMITS.maxChunks) {
    if (b.length < 32 + chunkCount * 24) throw fail(NtStatus.INVALID_PARAMETER, 'SRV_COPYCHUNK_COPY chunks truncated');
    for (let i = 0; i < chunkCount; i++) {
      const at = 32 + i * 24;
      chunks.push({ sourceOffset: u64(b, at), targetOffset: u64(b, at + 8), length: b.readUInt32LE(at + 16) });
    }
  }
  return { sourceKey: Buffer.from(b.subarray(0, 24)), chunkCount, chunks };
}

export function encodeCopyChunkCopy(x: CopyChunkCopy): Buffer {
  const w = new SmbWriter(32 + 24 * x.chunks.length);
  w.bytes(x.sourceKey).u32(x.chunkCount).u32(0);
  for (const c of x.chunks) w.u64(c.sourceOffset).u64(c.targetOffset).u32(c.length).u32(0);
  return w.finish();
}

export function encodeCopyChunkResponse(r: CopyChunkResponse): Buffer {
  return new SmbWriter(12).u32(r.chunksWritten).u32(r.chunkBytesWritten).u32(r.totalBytesWritten).finish();
}

// ---- resume keys -------------------------------------------------------------------------------------

/** Resume keys live as long as their open (a WeakMap: nothing to clean up, no table to cap). */
const resumeKeys = new WeakMap<Open, Buffer>();

/** 24 bytes: the open id (8, so the key finds its open) and 16 random bytes (so keys cannot be guessed). */
export function resumeKeyOf(open: Open): Buffer {
  let key = resumeKeys.get(open);
  if (!key) {
    key = Buffer.alloc(24);
    key.writeUInt32LE(open.id % 2 ** 32, 0);
    key.writeUInt32LE(Math.floor(open.id / 2 ** 32), 4);
    randomBytes(16).copy(key, 8);
    resumeKeys.set(open, key);
  }
  return key;
}

function openByResumeKey(host: IoctlHost, key: Buffer): Open | null {
  const id = key.readUInt32LE(4) * 2 ** 32 + key.readUInt32LE(0);
  const open = host.openById(id);
  const want = open && resumeKeys.get(open);
  return open && want && timingSafeEqual(want, key) ? open : null;
}

// ---- the FSCTLs ------------------------------------------------------------------------------------

function requireFile(host: IoctlHost, req: IoctlRequest): { c: FileContext; open: Open } {
  const c = host.fileContext();
  if (!c) throw fail(NtStatus.INVALID_DEVICE_REQUEST, 'not a disk tree');
  const open = host.findOpen(req.fileId);
  // The share permission now: `none` since the open refuses every FSCTL on it (as the vfs refuses
  // its reads and writes); the changes an FSCTL makes go through the vfs, which checks writing.
  c.fs.identity(c.share, c.id);
  return { c, open };
}

function reply(w: SmbWriter, req: IoctlRequest, out: Buffer, status: number = NtStatus.SUCCESS): { status: number; data: null } {
  writeIoctlResponse(w, req.ctlCode, req.fileId, out);
  return { status, data: null };
}

/** MS-SMB2 3.3.5.15.6 server-side copy: chunks read from the source open and written through the target. */
async function copyChunk(host: IoctlHost, req: IoctlRequest, w: SmbWriter): Promise<{ status: number; data: null }> {
  const { c, open: target } = requireFile(host, req);
  // In MS-SMB2 3.3.5.15.6's order: the source by its key, the output room, then the limits.
  const source = req.input.length >= 24 ? openByResumeKey(host, req.input.subarray(0, 24)) : null;
  if (!source || source.tree.session !== target.tree.session) throw fail(NtStatus.OBJECT_NAME_NOT_FOUND, 'no open with that resume key');
  if (req.maxOutputResponse < 12) throw fail(NtStatus.INVALID_PARAMETER, 'MaxOutputResponse below SRV_COPYCHUNK_RESPONSE');
  const limits = (): { status: number; data: null } =>
    reply(
      w,
      req,
      encodeCopyChunkResponse({
        chunksWritten: COPYCHUNK_LIMITS.maxChunks,
        chunkBytesWritten: COPYCHUNK_LIMITS.maxChunkSize,
        totalBytesWritten: COPYCHUNK_LIMITS.maxTotal,
      }),
      NtStatus.INVALID_PARAMETER,
    );
  let copy: CopyChunkCopy;
  try {
    copy = decodeCopyChunkCopy(req.input);
  } catch {
    return limits(); // an input shorter than its ChunkCount says
  }
  if (copy.chunkCount > COPYCHUNK_LIMITS.maxChunks) return limits();
  let total = 0;
  for (const ch of copy.chunks) {
    if (ch.length === 0 || ch.length > COPYCHUNK_LIMITS.maxChunkSize) return limits();
    total += ch.length;
  }
  if (total > COPYCHUNK_LIMITS.maxTotal) return limits();
  if (source.isDir || target.isDir) throw fail(NtStatus.INVALID_DEVICE_REQUEST, 'copy of a directory');
  // The source is read as a READ would read it: read or execute access (smbtorture ioctl.copy_chunk_bad_access).
  if ((source.grantedAccess & (Access.FILE_READ_DATA | Access.FILE_EXECUTE)) === 0)
    throw fail(NtStatus.ACCESS_DENIED, 'source not open for reading');
  // FSCTL_SRV_COPYCHUNK also needs the target readable (3.3.5.15.6); the _WRITE form does not.
  const needs = Access.FILE_WRITE_DATA | (req.ctlCode === FsctlCode.SRV_COPYCHUNK ? Access.FILE_READ_DATA : 0);
  if ((target.grantedAccess & needs) !== needs) throw fail(NtStatus.ACCESS_DENIED, 'target not open for writing');
  // An open the DACL lets rewrite the file's bytes and not add any (files.ts rangeAllowed) copies
  // within its size only, as its WRITEs do: refused before any chunk is written.
  if (target.cannotExtend) {
    const { size } = (await c.fs.getattr(target.handle, c.id)).inode;
    if (copy.chunks.some((ch) => ch.targetOffset + ch.length > size))
      throw fail(NtStatus.ACCESS_DENIED, 'an open without FILE_APPEND_DATA does not extend the file');
  }
  const sourceCtx = source.tree === target.tree ? c : { ...c, tree: source.tree, share: source.share };
  let chunksWritten = 0;
  let written = 0;
  try {
    for (const ch of copy.chunks) {
      // Byte-range locks of other opens refuse the chunk as they refuse a READ of the source and a
      // WRITE of the target (Windows 2012 on: smbtorture ioctl.copy_chunk_src_lock / dest_lock).
      if (
        (await ioLocked(sourceCtx, source, ch.sourceOffset, ch.length, false)) ||
        (await ioLocked(c, target, ch.targetOffset, ch.length, true))
      )
        return reply(
          w,
          req,
          encodeCopyChunkResponse({ chunksWritten, chunkBytesWritten: 0, totalBytesWritten: written }),
          NtStatus.FILE_LOCK_CONFLICT,
        );
      // Each chunk is read whole before it is written: an overlapping copy within one file reads
      // the data as it was (what Windows 2012 does, with its 1 MiB buffer).
      const r = await sourceCtx.fs.read(source.handle, sourceCtx.id, ch.sourceOffset, ch.length);
      if (r.data.length < ch.length) {
        return reply(
          w,
          req,
          encodeCopyChunkResponse({ chunksWritten, chunkBytesWritten: 0, totalBytesWritten: written }),
          NtStatus.INVALID_VIEW_SIZE,
        );
      }
      // Written as a WRITE of the target open is: through when it was opened so, breaking the
      // oplocks and leases of other opens, not its own, with its delayed write time and the times
      // it holds (put back once the copy ends, as after each WRITE).
      await writeThroughOpen(c, target, ch.targetOffset, r.data, target.writeThrough);
      chunksWritten++;
      written += ch.length;
    }
    return reply(w, req, encodeCopyChunkResponse({ chunksWritten, chunkBytesWritten: 0, totalBytesWritten: written }));
  } finally {
    // The times the target open holds stay as it set them, whatever part of the copy was done.
    if (written > 0 && target.heldTimes) await restoreHeldTimes(c.fs, target.handle, c.id, target.heldTimes);
  }
}

/**
 * MS-FSCC 2.3.64 FSCTL_SET_SPARSE: FILE_SET_SPARSE_BUFFER (optional: no buffer means set). The
 * sparse flag is a file attribute: a session re-authenticated as anonymous sets it no more than
 * SET_INFO sets the others (files.ts refuseAnonymous).
 */
async function setSparse(host: IoctlHost, req: IoctlRequest, w: SmbWriter): Promise<{ status: number; data: null }> {
  const { c, open } = requireFile(host, req);
  refuseAnonymous(c, 'changes no file attributes');
  if (open.isDir) throw fail(NtStatus.INVALID_PARAMETER, 'a directory cannot be sparse');
  if ((open.grantedAccess & (Access.FILE_WRITE_DATA | Access.FILE_WRITE_ATTRIBUTES | Access.FILE_APPEND_DATA)) === 0)
    throw fail(NtStatus.ACCESS_DENIED, 'SET_SPARSE needs write access');
  const sparse = req.input.length === 0 || req.input[0] !== 0;
  const { inode } = await c.fs.resolve(open.handle);
  const dosAttrs = sparse ? inode.dosAttrs | DosAttributes.SPARSE_FILE : inode.dosAttrs & ~DosAttributes.SPARSE_FILE;
  if (dosAttrs !== inode.dosAttrs) await c.fs.setattr(open.handle, c.id, { dosAttrs });
  return reply(w, req, Buffer.alloc(0));
}

/** MS-FSCC 2.3.52 FILE_ALLOCATED_RANGE_BUFFER: FileOffset and Length (signed, so at most 2^63 - 1). */
function decodeRange(b: Buffer, what: string): { offset: number; length: number } {
  if (b.length < 16) throw fail(NtStatus.INVALID_PARAMETER, `${what} shorter than 16 bytes`);
  const offset = Number(b.readBigInt64LE(0));
  const length = Number(b.readBigInt64LE(8));
  if (offset < 0 || length < 0) throw fail(NtStatus.INVALID_PARAMETER, `${what}: a negative offset or length`);
  return { offset, length };
}

/**
 * MS-FSCC 2.3.51 FSCTL_QUERY_ALLOCATED_RANGES: the ranges of the requested one, cut to the file's
 * size, that hold data. A file not marked sparse is reported allocated throughout (as NTFS does);
 * a sparse one as its blocks hold data (vfs/sparse.ts; holes are blocks never written or cut).
 * Ranges past MaxOutputResponse: BUFFER_OVERFLOW with those that fit (2.3.52), none fitting
 * BUFFER_TOO_SMALL.
 */
async function queryAllocatedRanges(host: IoctlHost, req: IoctlRequest, w: SmbWriter): Promise<{ status: number; data: null }> {
  const { c, open } = requireFile(host, req);
  const { offset, length } = decodeRange(req.input, 'FILE_ALLOCATED_RANGE_BUFFER');
  if (open.isDir) throw fail(NtStatus.INVALID_PARAMETER, 'a directory has no ranges');
  if ((open.grantedAccess & Access.FILE_READ_DATA) === 0) throw fail(NtStatus.ACCESS_DENIED);
  // Several servers: cut to the size another one acknowledged (getattr), not an older one cached
  // here: a sparse copy reads only the ranges listed, and would take the rest for a hole.
  const { inode } = await c.fs.getattr(open.handle, c.id);
  const end = Math.min(offset + length, inode.size);
  if (end <= offset) return reply(w, req, Buffer.alloc(0));
  const room = Math.floor(Math.min(req.maxOutputResponse, c.maxTransact) / 16);
  const ranges =
    (inode.dosAttrs & DosAttributes.SPARSE_FILE) === 0
      ? [[offset, end] as [number, number]]
      : await dataRanges(c.fs, open.handle, c.id, offset, end - offset, Math.max(room, 1));
  if (ranges.length === 0) return reply(w, req, Buffer.alloc(0));
  if (room === 0) throw fail(NtStatus.BUFFER_TOO_SMALL, 'no room for one range');
  const n = Math.min(room, ranges.length);
  const out = new SmbWriter(16 * n);
  for (let i = 0; i < n; i++) out.u64(ranges[i]![0]).u64(ranges[i]![1] - ranges[i]![0]);
  return reply(w, req, out.finish(), n < ranges.length ? NtStatus.BUFFER_OVERFLOW : NtStatus.SUCCESS);
}

/**
 * MS-FSCC 2.3.67 FSCTL_SET_ZERO_DATA: FILE_ZERO_DATA_INFORMATION (FileOffset, BeyondFinalZero).
 * The part inside the file reads as zeros afterwards (vfs/sparse.ts frees what it can); the size
 * never changes. Needs FILE_WRITE_DATA; another open's byte-range lock on the range refuses it.
 */
async function setZeroData(host: IoctlHost, req: IoctlRequest, w: SmbWriter): Promise<{ status: number; data: null }> {
  const { c, open } = requireFile(host, req);
  const { offset, length: beyond } = decodeRange(req.input, 'FILE_ZERO_DATA_INFORMATION');
  if (offset > beyond) throw fail(NtStatus.INVALID_PARAMETER, 'FileOffset past BeyondFinalZero');
  if (open.isDir) throw fail(NtStatus.INVALID_PARAMETER, 'a directory has no data');
  if ((open.grantedAccess & Access.FILE_WRITE_DATA) === 0) throw fail(NtStatus.ACCESS_DENIED, 'SET_ZERO_DATA needs FILE_WRITE_DATA');
  if (beyond > offset && (await ioLocked(c, open, offset, beyond - offset, true))) throw fail(NtStatus.FILE_LOCK_CONFLICT);
  // On a write-through open, durable before the reply, as a WRITE there is (files.ts writeAt).
  if (beyond > offset)
    await zeroRange(c.fs, open.handle, c.id, offset, Math.min(beyond, Number.MAX_SAFE_INTEGER), oplock.holderOf(open), open.writeThrough);
  return reply(w, req, Buffer.alloc(0));
}

/**
 * MS-FSCC 2.1.3.1 FILE_OBJECTID_BUFFER (type 1) for FSCTL_CREATE_OR_GET_OBJECT_ID (2.3.2): no
 * object ids are stored, so each file's is derived from what already names it uniquely and for
 * good: its inode number and the share's id (the volume serial FileFsVolumeInformation reports).
 * BirthVolumeId is the share's, BirthObjectId the ObjectId, DomainId empty (MS-FSA 2.1.5.10.1).
 */
export function objectIdBuffer(inodeId: number, shareId: number): Buffer {
  const w = new SmbWriter(64);
  w.u64(inodeId).u32(shareId).u32(0); // ObjectId
  w.u32(shareId).zeros(12); // BirthVolumeId
  w.u64(inodeId).u32(shareId).u32(0); // BirthObjectId
  w.zeros(16); // DomainId
  return w.finish();
}

export async function ioctl(host: IoctlHost, req: IoctlRequest, w: SmbWriter): Promise<{ status: number; data: Buffer | null }> {
  if ((req.flags & IOCTL_IS_FSCTL) === 0) throw fail(NtStatus.INVALID_DEVICE_REQUEST, 'not an FSCTL');
  switch (req.ctlCode) {
    case Fsctl.DFS_GET_REFERRALS:
    case Fsctl.DFS_GET_REFERRALS_EX:
      // No DFS namespace here (what smbd answers; clients go on without DFS).
      throw fail(NtStatus.NOT_FOUND);
    case Fsctl.VALIDATE_NEGOTIATE_INFO:
      return reply(w, req, host.validateNegotiate(req.input, req.maxOutputResponse));
    case Fsctl.QUERY_NETWORK_INTERFACE_INFO:
      // 3.3.5.15.11: a server that is not multichannel-capable (nothing advertises it) fails it.
      throw fail(NtStatus.NOT_SUPPORTED, 'multichannel is not offered');
    case Fsctl.PIPE_TRANSCEIVE:
      throw fail(NtStatus.INVALID_DEVICE_REQUEST);
    case FsctlCode.SRV_REQUEST_RESUME_KEY: {
      const { open } = requireFile(host, req);
      if (req.maxOutputResponse < 32) throw fail(NtStatus.INVALID_PARAMETER, 'MaxOutputResponse below SRV_REQUEST_RESUME_KEY');
      // ResumeKey, ContextLength 0, and 4 bytes of (empty) Context, as Windows answers.
      return reply(w, req, new SmbWriter(32).bytes(resumeKeyOf(open)).u32(0).u32(0).finish());
    }
    case FsctlCode.SRV_COPYCHUNK:
    case FsctlCode.SRV_COPYCHUNK_WRITE:
      return copyChunk(host, req, w);
    case FsctlCode.SRV_ENUMERATE_SNAPSHOTS: {
      // 2.2.32.2 SRV_SNAPSHOT_ARRAY: no snapshots (NumberOfSnapShots, Returned, ArraySize all 0).
      requireFile(host, req);
      if (req.maxOutputResponse < 16) throw fail(NtStatus.INVALID_PARAMETER, 'MaxOutputResponse below 16');
      return reply(w, req, Buffer.alloc(16));
    }
    case FsctlCode.SET_SPARSE:
      return setSparse(host, req, w);
    case FsctlCode.QUERY_ALLOCATED_RANGES:
      return queryAllocatedRanges(host, req, w);
    case FsctlCode.SET_ZERO_DATA:
      return setZeroData(host, req, w);
    case FsctlCode.GET_COMPRESSION:
      // 2.3.22: COMPRESSION_FORMAT_NONE; nothing here is compressed.
      requireFile(host, req);
      if (req.maxOutputResponse < 2) throw fail(NtStatus.INVALID_PARAMETER, 'MaxOutputResponse below 2');
      return reply(w, req, Buffer.alloc(2));
    case FsctlCode.SET_COMPRESSION: {
      // 2.3.67: turning compression off is a no-op; turning it on is not supported.
      const { open } = requireFile(host, req);
      if (req.input.length < 2) throw fail(NtStatus.INVALID_PARAMETER, 'COMPRESSION_STATE shorter than 2 bytes');
      if ((open.grantedAccess & (Access.FILE_WRITE_DATA | Access.FILE_WRITE_ATTRIBUTES)) === 0) throw fail(NtStatus.ACCESS_DENIED);
      if (req.input.readUInt16LE(0) !== 0) throw fail(NtStatus.NOT_SUPPORTED, 'compression is not supported');
      return reply(w, req, Buffer.alloc(0));
    }
    case FsctlCode.CREATE_OR_GET_OBJECT_ID: {
      // FILE_ANY_ACCESS: any open of a file or directory may ask.
      const { open } = requireFile(host, req);
      if (req.maxOutputResponse < 64) throw fail(NtStatus.INVALID_PARAMETER, 'MaxOutputResponse below FILE_OBJECTID_BUFFER');
      return reply(w, req, objectIdBuffer(open.inodeId, open.share.id));
    }
    case FsctlCode.GET_REPARSE_POINT:
      // Symbolic links are served as links (NFS), not as reparse points.
      requireFile(host, req);
      throw fail(NtStatus.NOT_A_REPARSE_POINT);
    case FsctlCode.SET_REPARSE_POINT:
    case FsctlCode.DELETE_REPARSE_POINT:
      requireFile(host, req);
      throw fail(NtStatus.NOT_SUPPORTED, 'reparse points are not supported');
    default:
      // An unknown FSCTL on a handle that is not open (also the closed one a compound passes on) is FILE_CLOSED first.
      if (host.fileContext()) host.findOpen(req.fileId);
      throw fail(NtStatus.NOT_SUPPORTED, `FSCTL 0x${req.ctlCode.toString(16)} is not supported`);
  }
}
