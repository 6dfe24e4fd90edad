// RFC 1813 §3.3 the 22 NFSv3 procedures. Each decodes its arguments (DecodeError -> GARBAGE_ARGS
// at the dispatcher), calls the file service, and encodes either the resok or the resfail body;
// VfsErrors become nfsstat3 codes here and nowhere else.
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { DataObserver } from '../obs/metrics.js';
import { setActiveSpanAttribute, tracingEnabled } from '../obs/tracing.js';
import type { RpcCall } from '../rpc/message.js';
import type { XdrReader, XdrWriter } from '../rpc/xdr.js';
import { xdrOpaqueSize } from '../rpc/xdr.js';
import { DecodeError, DecodeErrorCode } from '../wire/errors.js';
import { isNoSpace, isVfsError, VfsError } from '../vfs/errors.js';
import { HANDLE_SIZE } from '../vfs/handle.js';
import type { FileService, Share } from '../vfs/service.js';
import { CreateMode } from '../vfs/service.js';
import type { Identity, Inode } from '../vfs/types.js';
import { FileType, LINK_MAX, NAME_MAX } from '../vfs/types.js';
import { Access3, MAX_IO, MAX_PATH_DECODE, Nfs3Status, NfsProc, nfsStatusOf, StableHow } from './constants.js';
import {
  FATTR3_SIZE,
  readFh,
  readFileOffset,
  readGuard,
  readName,
  readSattr,
  writeFattr,
  writePostOpAttr,
  writePostOpFh,
  writeWcc,
} from './xdr.js';
import { BufferPool } from '../wire/buffer-pool.js';

/** Free READ buffers kept for reuse (1 MiB each), and the smallest READ that uses one. */
const READ_BUFFERS_KEPT = 8;
const POOLED_READ_MIN = 64 * 1024;

/** What a procedure returns besides what it wrote: extra buffers sent after the writer's bytes (READ data). */
export type ProcResult = Buffer[] | undefined;

/** An AUTH_NONE caller: each share makes it its anonymous_uid/anonymous_gid (FileService.squash). */
const ANONYMOUS: Identity = Object.freeze({ uid: 65534, gid: 65534, gids: Object.freeze([]), anonymous: true });

export function identityOf(call: RpcCall): Identity {
  const a = call.authSys;
  return a ? { uid: a.uid, gid: a.gid, gids: a.gids } : ANONYMOUS;
}

const ZERO_VERF = Buffer.alloc(8);
const PAD = Buffer.alloc(4);
const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');

/** The owner NFS WRITEs have for byte-range checks: any SMB client's lock conflicts with it. */
const NFS_LOCK_OWNER = Object.freeze({ nfs: true });

export class Nfs3Program {
  /** Changes on every start so clients resend uncommitted writes after a restart (RFC 1813 §3.3.7). */
  readonly writeVerifier: Buffer = randomBytes(8);

  /** Largest READ/WRITE payload: 1 MiB, or less when the RPC record cap leaves less room. */
  readonly maxIo: number;
  /** Where READ data is put: reused once each reply is written out. */
  private readonly readBuffers: BufferPool;

  constructor(
    private readonly fs: FileService,
    private readonly log?: Logger,
    maxRecordSize = MAX_IO + 64 * 1024,
    /** Told how many data bytes READ and WRITE move, by share (metrics). */
    private readonly data?: DataObserver,
  ) {
    // Leave 1 KiB for the RPC and WRITE headers; transfer sizes stay multiples of 4 KiB.
    this.maxIo = Math.max(4096, Math.min(MAX_IO, Math.floor((maxRecordSize - 1024) / 4096) * 4096));
    this.readBuffers = new BufferPool(this.maxIo, READ_BUFFERS_KEPT);
  }

  async handle(call: RpcCall, w: XdrWriter): Promise<ProcResult> {
    const r = call.args;
    const id = identityOf(call);
    if (call.proc !== NfsProc.NULL && tracingEnabled()) this.traceShare(r);
    switch (call.proc as NfsProc) {
      case NfsProc.NULL:
        return undefined;
      case NfsProc.GETATTR:
        return this.getattr(r, w, id);
      case NfsProc.SETATTR:
        return this.setattr(r, w, id);
      case NfsProc.LOOKUP:
        return this.lookup(r, w, id);
      case NfsProc.ACCESS:
        return this.access(r, w, id);
      case NfsProc.READLINK:
        return this.readlink(r, w, id);
      case NfsProc.READ:
        return this.read(call, w, id);
      case NfsProc.WRITE:
        return this.write(r, w, id);
      case NfsProc.CREATE:
        return this.create(r, w, id);
      case NfsProc.MKDIR:
        return this.mkdir(r, w, id);
      case NfsProc.SYMLINK:
        return this.symlink(r, w, id);
      case NfsProc.MKNOD:
        return this.mknod(r, w, id);
      case NfsProc.REMOVE:
        return this.remove(r, w, id, false);
      case NfsProc.RMDIR:
        return this.remove(r, w, id, true);
      case NfsProc.RENAME:
        return this.rename(r, w, id);
      case NfsProc.LINK:
        return this.link(r, w, id);
      case NfsProc.READDIR:
        return this.readdir(r, w, id, false);
      case NfsProc.READDIRPLUS:
        return this.readdir(r, w, id, true);
      case NfsProc.FSSTAT:
        return this.fsstat(r, w, id);
      case NfsProc.FSINFO:
        return this.fsinfo(r, w, id);
      case NfsProc.PATHCONF:
        return this.pathconf(r, w, id);
      case NfsProc.COMMIT:
        return this.commit(r, w, id);
      default:
        throw new RangeError('unknown procedure');
    }
  }

  /** Names the share on the call's span, from the file handle every procedure but NULL starts with. */
  private traceShare(r: XdrReader): void {
    if (r.remaining < 4 + HANDLE_SIZE || r.buf.readUInt32BE(r.pos) !== HANDLE_SIZE) return;
    const id = r.buf.readUInt32BE(r.pos + 4 + 4);
    const share = this.fs.shares().find((s) => s.id === id);
    if (share) setActiveSpanAttribute('dittofs.share', share.name);
  }

  /** Maps a failure to its status; unexpected errors become SERVERFAULT and are logged. */
  private statusOf(err: unknown): Nfs3Status {
    if (isVfsError(err)) return nfsStatusOf(err.errno);
    if (err instanceof DecodeError) throw err;
    // Storage failures (a block store or database that errs) are I/O errors to the client.
    const code = (err as { code?: unknown }).code;
    if (code === 'EDQUOT') return Nfs3Status.DQUOT;
    if (isNoSpace(err)) return Nfs3Status.NOSPC;
    if (typeof code === 'string' && (/^E[A-Z]+$/.test(code) || code === 'DITTOFS_BLOCK_MISSING')) {
      this.log?.error({ err }, 'storage error during an NFS operation');
      return Nfs3Status.IO;
    }
    this.log?.error({ err }, 'NFS operation failed unexpectedly');
    return Nfs3Status.SERVERFAULT;
  }

  /**
   * Attributes for a resfail body: best effort, never throws, and none for a caller without
   * permission on the share (a refusal must not hand out what the call was refused).
   */
  private async attrsOf(fh: Buffer, id: Identity): Promise<{ share: Share; inode: Inode } | null> {
    try {
      const r = await this.fs.resolve(fh);
      return this.fs.permitted(r.share, id) ? r : null;
    } catch {
      return null;
    }
  }

  /** A failed call's status, then the object's attributes as they are now (or none) as its wcc_data. */
  private async failWcc(w: XdrWriter, err: unknown, fh: Buffer, id: Identity): Promise<void> {
    const status = this.statusOf(err);
    const cur = await this.attrsOf(fh, id);
    w.u32(status);
    writeWcc(w, cur?.share.id ?? 0, cur?.inode, cur?.inode);
  }

  /** A failed call's status, then the object's attributes as they are now (or none). */
  private async failPostOp(w: XdrWriter, err: unknown, fh: Buffer, id: Identity): Promise<void> {
    const status = this.statusOf(err);
    const cur = await this.attrsOf(fh, id);
    w.u32(status);
    writePostOpAttr(w, cur?.share.id ?? 0, cur?.inode);
  }

  // §3.3.1 GETATTR
  private async getattr(r: XdrReader, w: XdrWriter, id: Identity): Promise<ProcResult> {
    const fh = readFh(r);
    try {
      const { share, inode } = await this.fs.getattr(fh, id, true);
      w.u32(Nfs3Status.OK);
      writeFattr(w, share.id, inode);
    } catch (e) {
      w.u32(this.statusOf(e));
    }
    return undefined;
  }

  // §3.3.2 SETATTR
  private async setattr(r: XdrReader, w: XdrWriter, id: Identity): Promise<ProcResult> {
    const fh = readFh(r);
    const attrs = readSattr(r);
    const guard = readGuard(r);
    try {
      const { share, before, after } = await this.fs.setattr(fh, id, attrs, guard);
      w.u32(Nfs3Status.OK);
      writeWcc(w, share.id, before, after);
    } catch (e) {
      await this.failWcc(w, e, fh, id);
    }
    return undefined;
  }

  // §3.3.3 LOOKUP
  private async lookup(r: XdrReader, w: XdrWriter, id: Identity): Promise<ProcResult> {
    const dirFh = readFh(r);
    const name = readName(r);
    try {
      const { share, dir, inode } = await this.fs.lookup(dirFh, name, id);
      w.u32(Nfs3Status.OK).opaque(this.fs.handleOf(share, inode));
      writePostOpAttr(w, share.id, inode);
      writePostOpAttr(w, share.id, dir);
    } catch (e) {
      await this.failPostOp(w, e, dirFh, id);
    }
    return undefined;
  }

  // §3.3.4 ACCESS
  private async access(r: XdrReader, w: XdrWriter, cred: Identity): Promise<ProcResult> {
    const fh = readFh(r);
    const want = r.u32();
    try {
      const { share, inode } = await this.fs.resolve(fh);
      const bits = this.fs.accessBits(share, inode, this.fs.identity(share, cred));
      let granted = 0;
      if (bits.read) granted |= Access3.READ;
      if (inode.type === FileType.DIR) {
        if (bits.exec) granted |= Access3.LOOKUP;
        if (bits.write && bits.exec) granted |= Access3.MODIFY | Access3.EXTEND | Access3.DELETE;
      } else {
        if (bits.write) granted |= Access3.MODIFY | Access3.EXTEND | Access3.DELETE;
        if (bits.exec) granted |= Access3.EXECUTE;
      }
      w.u32(Nfs3Status.OK);
      writePostOpAttr(w, share.id, inode);
      w.u32(granted & want);
    } catch (e) {
      w.u32(this.statusOf(e)).u32(0);
    }
    return undefined;
  }

  // §3.3.5 READLINK
  private async readlink(r: XdrReader, w: XdrWriter, id: Identity): Promise<ProcResult> {
    const fh = readFh(r);
    try {
      const { inode, target } = await this.fs.readlink(fh, id);
      w.u32(Nfs3Status.OK);
      writePostOpAttr(w, inode.shareId, inode);
      w.opaque(target);
    } catch (e) {
      await this.failPostOp(w, e, fh, id);
    }
    return undefined;
  }

  // §3.3.6 READ
  private async read(call: RpcCall, w: XdrWriter, id: Identity): Promise<ProcResult> {
    const r = call.args;
    const fh = readFh(r);
    const offset = r.u64Clamped();
    const count = Math.min(r.u32(), this.maxIo);
    // Large reads go into a pooled buffer, lent to the reply until it is written out.
    const target = count >= POOLED_READ_MIN ? this.readBuffers.take(count) : undefined;
    try {
      const { inode, data, eof } = await this.fs.read(fh, id, offset, count, target, true);
      if (target !== undefined) {
        if (data.buffer === target.buffer) call.afterReply = () => this.readBuffers.give(target);
        else this.readBuffers.give(target);
      }
      this.data?.bytesRead(inode.shareId, data.length);
      w.u32(Nfs3Status.OK);
      writePostOpAttr(w, inode.shareId, inode);
      w.u32(data.length).bool(eof).u32(data.length);
      const pad = (4 - (data.length & 3)) & 3;
      return pad === 0 ? [data] : [data, PAD.subarray(0, pad)];
    } catch (e) {
      if (target !== undefined && call.afterReply === undefined) this.readBuffers.give(target);
      await this.failPostOp(w, e, fh, id);
    }
    return undefined;
  }

  // §3.3.7 WRITE
  private async write(r: XdrReader, w: XdrWriter, id: Identity): Promise<ProcResult> {
    const fh = readFh(r);
    const offset = readFileOffset(r);
    const count = r.u32();
    const stable = r.u32();
    if (stable > StableHow.FILE_SYNC) throw new DecodeError(DecodeErrorCode.Invalid, `bad stable_how ${stable}`);
    let data = r.opaque(MAX_IO);
    try {
      if (count > data.length) throw new VfsError('INVAL', `WRITE count ${count} exceeds the ${data.length} data bytes sent`);
      if (count < data.length) data = data.subarray(0, count);
      const sync = stable !== StableHow.UNSTABLE;
      const { before, after } = await this.fs.write(fh, id, offset, data, sync, null, NFS_LOCK_OWNER);
      this.data?.bytesWritten(after.shareId, data.length);
      w.u32(Nfs3Status.OK);
      writeWcc(w, after.shareId, before, after);
      w.u32(data.length)
        .u32(sync ? StableHow.FILE_SYNC : StableHow.UNSTABLE)
        .fixed(this.writeVerifier);
    } catch (e) {
      await this.failWcc(w, e, fh, id);
    }
    return undefined;
  }

  /** Shared reply for CREATE, MKDIR, SYMLINK, MKNOD: diropres3. */
  private async diropres(
    w: XdrWriter,
    id: Identity,
    dirFh: Buffer,
    op: () => Promise<{ share: Share; inode: Inode; dirBefore: Inode; dirAfter: Inode | null }>,
  ): Promise<ProcResult> {
    try {
      const { share, inode, dirBefore, dirAfter } = await op();
      w.u32(Nfs3Status.OK);
      writePostOpFh(w, this.fs.handleOf(share, inode));
      writePostOpAttr(w, share.id, inode);
      writeWcc(w, share.id, dirBefore, dirAfter);
    } catch (e) {
      await this.failWcc(w, e, dirFh, id);
    }
    return undefined;
  }

  // §3.3.8 CREATE
  private async create(r: XdrReader, w: XdrWriter, id: Identity): Promise<ProcResult> {
    const dirFh = readFh(r);
    const name = readName(r);
    const how = r.u32();
    if (how > CreateMode.EXCLUSIVE) throw new DecodeError(DecodeErrorCode.Invalid, `bad createmode3 ${how}`);
    const attrs = how === CreateMode.EXCLUSIVE ? {} : readSattr(r);
    const verf = how === CreateMode.EXCLUSIVE ? Buffer.from(r.fixed(8)) : null;
    return this.diropres(w, id, dirFh, () => this.fs.create(dirFh, name, id, how as CreateMode, attrs, verf));
  }

  // §3.3.9 MKDIR
  private async mkdir(r: XdrReader, w: XdrWriter, id: Identity): Promise<ProcResult> {
    const dirFh = readFh(r);
    const name = readName(r);
    const attrs = readSattr(r);
    return this.diropres(w, id, dirFh, () => this.fs.mkdir(dirFh, name, id, attrs));
  }

  // §3.3.10 SYMLINK
  private async symlink(r: XdrReader, w: XdrWriter, id: Identity): Promise<ProcResult> {
    const dirFh = readFh(r);
    const name = readName(r);
    const attrs = readSattr(r);
    const target = r.opaque(MAX_PATH_DECODE);
    return this.diropres(w, id, dirFh, () => this.fs.symlink(dirFh, name, id, target, attrs));
  }

  // §3.3.11 MKNOD
  private async mknod(r: XdrReader, w: XdrWriter, id: Identity): Promise<ProcResult> {
    const dirFh = readFh(r);
    const name = readName(r);
    const type = r.u32();
    let attrs = {};
    let rdev = { major: 0, minor: 0 };
    if (type === FileType.CHR || type === FileType.BLK) {
      attrs = readSattr(r);
      rdev = { major: r.u32(), minor: r.u32() };
    } else if (type === FileType.SOCK || type === FileType.FIFO) {
      attrs = readSattr(r);
    } else {
      return this.diropres(w, id, dirFh, () => Promise.reject(new VfsError('BADTYPE', 'MKNOD creates only devices, sockets and FIFOs')));
    }
    return this.diropres(w, id, dirFh, () => this.fs.mknod(dirFh, name, id, type, attrs, rdev));
  }

  // §3.3.12 REMOVE, §3.3.13 RMDIR
  private async remove(r: XdrReader, w: XdrWriter, id: Identity, dir: boolean): Promise<ProcResult> {
    const dirFh = readFh(r);
    const name = readName(r);
    try {
      const { dirBefore, dirAfter } = await this.fs.remove(dirFh, name, id, dir, null, true);
      w.u32(Nfs3Status.OK);
      writeWcc(w, dirBefore.shareId, dirBefore, dirAfter);
    } catch (e) {
      await this.failWcc(w, e, dirFh, id);
    }
    return undefined;
  }

  // §3.3.14 RENAME
  private async rename(r: XdrReader, w: XdrWriter, id: Identity): Promise<ProcResult> {
    const fromFh = readFh(r);
    const fromName = readName(r);
    const toFh = readFh(r);
    const toName = readName(r);
    try {
      const { from, to } = await this.fs.rename(fromFh, fromName, toFh, toName, id, null, true);
      w.u32(Nfs3Status.OK);
      writeWcc(w, from.dirBefore.shareId, from.dirBefore, from.dirAfter);
      writeWcc(w, to.dirBefore.shareId, to.dirBefore, to.dirAfter);
    } catch (e) {
      const status = this.statusOf(e);
      const a = await this.attrsOf(fromFh, id);
      const b = await this.attrsOf(toFh, id);
      w.u32(status);
      writeWcc(w, a?.share.id ?? 0, a?.inode, a?.inode);
      writeWcc(w, b?.share.id ?? 0, b?.inode, b?.inode);
    }
    return undefined;
  }

  // §3.3.15 LINK
  private async link(r: XdrReader, w: XdrWriter, id: Identity): Promise<ProcResult> {
    const fh = readFh(r);
    const dirFh = readFh(r);
    const name = readName(r);
    try {
      const { inode, dirBefore, dirAfter } = await this.fs.link(fh, dirFh, name, id);
      w.u32(Nfs3Status.OK);
      writePostOpAttr(w, inode.shareId, inode);
      writeWcc(w, dirBefore.shareId, dirBefore, dirAfter);
    } catch (e) {
      const status = this.statusOf(e);
      const f = await this.attrsOf(fh, id);
      const d = await this.attrsOf(dirFh, id);
      w.u32(status);
      writePostOpAttr(w, f?.share.id ?? 0, f?.inode);
      writeWcc(w, d?.share.id ?? 0, d?.inode, d?.inode);
    }
    return undefined;
  }

  // §3.3.16 READDIR, §3.3.17 READDIRPLUS
  private async readdir(r: XdrReader, w: XdrWriter, id: Identity, plus: boolean): Promise<ProcResult> {
    const dirFh = readFh(r);
    const cookie = r.u64Clamped();
    const verf = r.fixed(8);
    const dircount = r.u32();
    const maxcount = plus ? r.u32() : dircount;
    const start = w.pos;
    try {
      // Fixed overhead: status, post_op_attr, cookieverf, list terminator, eof.
      const overhead = 4 + 4 + FATTR3_SIZE + 8 + 4 + 4;
      const perEntryGuess = plus ? 24 + 16 + 4 + FATTR3_SIZE + 4 + xdrOpaqueSize(HANDLE_SIZE) : 24 + 16;
      const limit = Math.max(2, Math.min(4096, Math.ceil((maxcount - overhead) / perEntryGuess) + 2));
      const storeAfter = cookie <= 2 ? 0 : cookie;
      const page = await this.fs.readdir(dirFh, id, storeAfter, limit);
      const { share, dir } = page;
      const myVerf = cookieVerifier(dir);
      if (cookie !== 0 && !verf.equals(ZERO_VERF) && !verf.equals(myVerf))
        throw new VfsError('BAD_COOKIE', 'cookie verifier does not match');
      w.u32(Nfs3Status.OK);
      writePostOpAttr(w, share.id, dir);
      w.fixed(myVerf);
      let used = overhead;
      let dirUsed = 0;
      let emitted = 0;
      let truncated = false;
      const emit = (fileid: number, name: Buffer, ck: number, inode: Inode | null): boolean => {
        // entry3: value_follows, fileid3, filename3, cookie3. entryplus3 adds post_op_attr (flag,
        // fattr3) and post_op_fh3 (flag, the handle as opaque<>): counted as they are encoded.
        const dirBytes = 4 + 8 + xdrOpaqueSize(name.length) + 8;
        const fh = plus && inode ? this.fs.handleOf(share, inode) : null;
        const size = dirBytes + (plus ? 4 + (inode ? FATTR3_SIZE : 0) + 4 + (fh ? xdrOpaqueSize(fh.length) : 0) : 0);
        if (used + size > maxcount || (plus && dirUsed + dirBytes > dircount && emitted > 0)) return false;
        used += size;
        dirUsed += dirBytes;
        emitted++;
        w.u32(1).u64(fileid).opaque(name).u64(ck);
        if (plus) {
          writePostOpAttr(w, share.id, inode);
          writePostOpFh(w, fh);
        }
        return true;
      };
      if (cookie === 0 && !emit(dir.id, DOT, 1, dir)) truncated = true;
      if (!truncated && cookie <= 1) {
        const parent = await this.fs.parentOf(share, dir);
        if (!emit(parent.id, DOTDOT, 2, parent)) truncated = true;
      }
      if (!truncated) {
        // Without search permission on the directory an entry comes without its handle and
        // attributes (as from Linux's nfsd): a handle is what LOOKUP would have refused.
        for (const e of page.entries) {
          if (!emit(e.inode.id, e.name, e.cookie, page.searchable ? e.inode : null)) {
            truncated = true;
            break;
          }
        }
      }
      if (emitted === 0 && (truncated || !page.eof)) throw new VfsError('TOOSMALL', 'reply size too small for one entry');
      w.u32(0).bool(!truncated && page.eof);
    } catch (e) {
      w.pos = start;
      await this.failPostOp(w, e, dirFh, id);
    }
    return undefined;
  }

  // §3.3.18 FSSTAT
  private async fsstat(r: XdrReader, w: XdrWriter, id: Identity): Promise<ProcResult> {
    const fh = readFh(r);
    try {
      const { inode, totalBytes, freeBytes, files } = await this.fs.fsstat(fh, id);
      const totalFiles = 2 ** 32;
      const freeFiles = Math.max(0, totalFiles - files);
      w.u32(Nfs3Status.OK);
      writePostOpAttr(w, inode.shareId, inode);
      w.u64(totalBytes).u64(freeBytes).u64(freeBytes).u64(totalFiles).u64(freeFiles).u64(freeFiles).u32(0);
    } catch (e) {
      const status = this.statusOf(e);
      w.u32(status).u32(0);
    }
    return undefined;
  }

  // §3.3.19 FSINFO
  private async fsinfo(r: XdrReader, w: XdrWriter, id: Identity): Promise<ProcResult> {
    const fh = readFh(r);
    try {
      const { share, inode } = await this.fs.getattr(fh, id);
      w.u32(Nfs3Status.OK);
      writePostOpAttr(w, share.id, inode);
      // rtmax, rtpref, rtmult, wtmax, wtpref, wtmult, dtpref
      const io = this.maxIo;
      w.u32(io)
        .u32(io)
        .u32(4096)
        .u32(io)
        .u32(io)
        .u32(4096)
        .u32(64 * 1024);
      w.u64(Number.MAX_SAFE_INTEGER);
      w.u32(0).u32(1); // time_delta: 1 ns
      // FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME
      w.u32(0x0001 | 0x0002 | 0x0008 | 0x0010);
    } catch (e) {
      w.u32(this.statusOf(e)).u32(0);
    }
    return undefined;
  }

  // §3.3.20 PATHCONF
  private async pathconf(r: XdrReader, w: XdrWriter, id: Identity): Promise<ProcResult> {
    const fh = readFh(r);
    try {
      const { share, inode } = await this.fs.getattr(fh, id);
      w.u32(Nfs3Status.OK);
      writePostOpAttr(w, share.id, inode);
      // linkmax, name_max, no_trunc, chown_restricted, case_insensitive, case_preserving
      w.u32(LINK_MAX).u32(NAME_MAX).bool(true).bool(true).bool(false).bool(true);
    } catch (e) {
      w.u32(this.statusOf(e)).u32(0);
    }
    return undefined;
  }

  // §3.3.21 COMMIT
  private async commit(r: XdrReader, w: XdrWriter, id: Identity): Promise<ProcResult> {
    const fh = readFh(r);
    r.u64Clamped();
    r.u32();
    try {
      const inode = await this.fs.commit(fh, id);
      w.u32(Nfs3Status.OK);
      writeWcc(w, inode.shareId, inode, inode);
      w.fixed(this.writeVerifier);
    } catch (e) {
      await this.failWcc(w, e, fh, id);
    }
    return undefined;
  }
}

/** A directory's cookie verifier: constant for the directory's life, since cookies are never reused. */
export function cookieVerifier(dir: Inode): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(dir.generation >>> 0, 0);
  b.writeUInt32BE(dir.id >>> 0, 4);
  return b;
}
