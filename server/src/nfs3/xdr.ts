// RFC 1813 §2.5-2.6 NFSv3 data types: fattr3, wcc_data, sattr3, post_op_fh3 and friends.
import type { XdrReader, XdrWriter } from '../rpc/xdr.js';
import { DecodeError, DecodeErrorCode } from '../wire/errors.js';
import type { SetAttrs } from '../vfs/service.js';
import type { Inode, Timespec } from '../vfs/types.js';
import { FileType } from '../vfs/types.js';
import { FHSIZE3, MAX_NAME_DECODE, TimeHow } from './constants.js';

export const FATTR3_SIZE = 84;

// RFC 1813 §2.5 nfs_fh3: opaque<NFS3_FHSIZE>. Copied: handles outlive the record in caches.
export function readFh(r: XdrReader): Buffer {
  return r.opaque(FHSIZE3);
}

// filename3: string; decoded as bytes, validated by vfs.
export function readName(r: XdrReader): Buffer {
  return r.opaque(MAX_NAME_DECODE);
}

function writeTime(w: XdrWriter, t: Timespec): void {
  w.u32(t.sec >>> 0).u32(t.nsec);
}

function readTime(r: XdrReader): Timespec {
  const sec = r.u32();
  const nsec = r.u32();
  if (nsec >= 1_000_000_000) throw new DecodeError(DecodeErrorCode.Invalid, `nfstime3 nseconds ${nsec} out of range`);
  return { sec, nsec };
}

// RFC 1813 §2.6 fattr3
export function writeFattr(w: XdrWriter, fsid: number, i: Inode): void {
  const used = i.type === FileType.REG ? Math.ceil(i.size / 4096) * 4096 : i.type === FileType.DIR ? 4096 : 0;
  w.u32(i.type)
    .u32(i.mode & 0o7777)
    .u32(i.nlink)
    .u32(i.uid)
    .u32(i.gid);
  w.u64(i.size).u64(used);
  w.u32(i.rdevMajor).u32(i.rdevMinor);
  w.u64(fsid).u64(i.id);
  writeTime(w, i.atime);
  writeTime(w, i.mtime);
  writeTime(w, i.ctime);
}

export function writePostOpAttr(w: XdrWriter, fsid: number, i: Inode | null | undefined): void {
  if (!i) {
    w.u32(0);
    return;
  }
  w.u32(1);
  writeFattr(w, fsid, i);
}

// RFC 1813 §2.6 wcc_data: pre_op_attr (size, mtime, ctime) and post_op_attr.
export function writeWcc(w: XdrWriter, fsid: number, before: Inode | null | undefined, after: Inode | null | undefined): void {
  if (before) {
    w.u32(1).u64(before.size);
    writeTime(w, before.mtime);
    writeTime(w, before.ctime);
  } else {
    w.u32(0);
  }
  writePostOpAttr(w, fsid, after);
}

export function writePostOpFh(w: XdrWriter, fh: Buffer | null): void {
  if (!fh) {
    w.u32(0);
    return;
  }
  w.u32(1).opaque(fh);
}

/**
 * An offset3 / size3 (uint64) of a file: a Number, or Infinity for a value at or past 2^53, which no
 * file here can reach. The file service answers FBIG for it: a value the protocol allows is a
 * request we refuse, not malformed arguments (GARBAGE_ARGS).
 */
export function readFileOffset(r: XdrReader): number {
  const hi = r.u32();
  const lo = r.u32();
  // Exact below 2^53; from hi >= 2^21 on, at least 2^53 (rounding never goes below it).
  const v = hi * 2 ** 32 + lo;
  return v > Number.MAX_SAFE_INTEGER ? Infinity : v;
}

// RFC 1813 §2.6 sattr3
export function readSattr(r: XdrReader): SetAttrs {
  const a: SetAttrs = {};
  if (r.bool()) a.mode = r.u32();
  if (r.bool()) a.uid = r.u32();
  if (r.bool()) a.gid = r.u32();
  if (r.bool()) a.size = readFileOffset(r);
  for (const which of ['atime', 'mtime'] as const) {
    const how = r.u32();
    if (how === TimeHow.SET_TO_SERVER_TIME) a[which] = 'server';
    else if (how === TimeHow.SET_TO_CLIENT_TIME) a[which] = readTime(r);
    else if (how !== TimeHow.DONT_CHANGE) throw new DecodeError(DecodeErrorCode.Invalid, `bad time_how ${how}`);
  }
  return a;
}

export function writeSattr(w: XdrWriter, a: SetAttrs): void {
  for (const v of [a.mode, a.uid, a.gid]) {
    if (v === undefined) w.u32(0);
    else w.u32(1).u32(v);
  }
  if (a.size === undefined) w.u32(0);
  else w.u32(1).u64(a.size);
  for (const t of [a.atime, a.mtime]) {
    if (t === undefined) w.u32(TimeHow.DONT_CHANGE);
    else if (t === 'server') w.u32(TimeHow.SET_TO_SERVER_TIME);
    else {
      w.u32(TimeHow.SET_TO_CLIENT_TIME);
      writeTime(w, t);
    }
  }
}

// sattrguard3
export function readGuard(r: XdrReader): Timespec | undefined {
  return r.bool() ? readTime(r) : undefined;
}

export function decodeFattr(r: XdrReader): Inode & { fsid: number; used: number } {
  const type = r.u32() as FileType;
  const mode = r.u32();
  const nlink = r.u32();
  const uid = r.u32();
  const gid = r.u32();
  const size = r.u64();
  const used = r.u64();
  const rdevMajor = r.u32();
  const rdevMinor = r.u32();
  const fsid = r.u64();
  const id = r.u64();
  const atime = readTime(r);
  const mtime = readTime(r);
  const ctime = readTime(r);
  return {
    id,
    shareId: fsid,
    type,
    mode,
    uid,
    gid,
    size,
    nlink,
    rdevMajor,
    rdevMinor,
    atime,
    mtime,
    ctime,
    // NFSv3 carries neither: the birth time is unknown, no DOS attributes.
    btime: ctime,
    dosAttrs: 0,
    generation: 0,
    parent: 0,
    target: null,
    createVerifier: null,
    fsid,
    used,
  };
}
