// MS-SMB2 2.2.35 CHANGE_NOTIFY Request / 2.2.36 Response and 3.3.5.19 their processing; MS-FSCC
// 2.7.1 FILE_NOTIFY_INFORMATION. The first request on a directory open starts a watch (its filter,
// WATCH_TREE and buffer size stay for the open's life, as on Windows); from then on changes are
// collected for the open, also between requests. A request with changes waiting is answered at
// once; otherwise it goes async and is answered with the changes of the next event (those of one
// operation together). Changes past the watch's buffer, or past the request's OutputBufferLength,
// are answered STATUS_NOTIFY_ENUM_DIR (the client enumerates the directory again). Close, tree
// disconnect and logoff answer a pending request NOTIFY_CLEANUP; a deleted directory,
// DELETE_PENDING. Memory is bounded: each watch by its buffer (at most MAX_WATCH_BUFFER), each
// connection by MAX_CONNECTION_BUFFER over all its watches, pending requests by the async table.
import type { FileService } from '../vfs/service.js';
import { ChangeAction, ChangeFilter, type ChangeWatcher, type DirChangeEvent } from '../vfs/changes.js';
import { decodeHandle } from '../vfs/handle.js';
import { SmbWriter, type SmbReader } from './codec.js';
import { Access, FileInfoClass, InfoType } from './constants.js';
import type { PendingOp } from './async.js';
import { writeOutputResponse, type SetInfoRequest } from './messages.js';
import type { Open } from './state.js';
import { NtStatus, SmbStatusError } from './status.js';
import { DecodeError, DecodeErrorCode } from '../wire/errors.js';

/** 2.2.35 Flags: SMB2_WATCH_TREE. */
export const WATCH_TREE = 0x0001;
/** Bytes of changes one watch collects at most between requests. */
export const MAX_WATCH_BUFFER = 64 * 1024;
/** Bytes of changes all the watches of a connection collect at most. */
export const MAX_CONNECTION_BUFFER = 1024 * 1024;
/** Requests pending on one open at most. */
const MAX_PENDING_PER_WATCH = 8;

export interface ChangeNotifyRequest {
  flags: number;
  outputBufferLength: number;
  fileId: Buffer;
  completionFilter: number;
}

export function decodeChangeNotify(r: SmbReader): ChangeNotifyRequest {
  r.need(32, 'CHANGE_NOTIFY');
  const size = r.u16();
  if (size !== 32) throw new DecodeError(DecodeErrorCode.Invalid, `CHANGE_NOTIFY: StructureSize ${size}, expected 32`);
  const flags = r.u16();
  const outputBufferLength = r.u32();
  const fileId = r.bytes(16);
  const completionFilter = r.u32();
  r.skip(4);
  return { flags, outputBufferLength, fileId, completionFilter };
}

interface Entry {
  action: number;
  name: Buffer;
}

/** MS-FSCC 2.7.1: size of an entry with its padding to 4 bytes. */
const entrySize = (e: Entry): number => (12 + e.name.length + 3) & ~3;

/** FILE_NOTIFY_INFORMATION entries, each aligned to 4 bytes, NextEntryOffset 0 on the last. */
export function encodeNotifyEntries(entries: readonly Entry[]): Buffer {
  let total = 0;
  for (let i = 0; i < entries.length; i++) total += i === entries.length - 1 ? 12 + entries[i]!.name.length : entrySize(entries[i]!);
  const out = Buffer.alloc(total);
  let at = 0;
  entries.forEach((e, i) => {
    const last = i === entries.length - 1;
    out.writeUInt32LE(last ? 0 : entrySize(e), at);
    out.writeUInt32LE(e.action, at + 4);
    out.writeUInt32LE(e.name.length, at + 8);
    e.name.copy(out, at + 12);
    at += entrySize(e);
  });
  return out;
}

function notifyBody(output: Buffer): Buffer {
  const w = new SmbWriter(8 + output.length);
  writeOutputResponse(w, output);
  return w.finish();
}

const EMPTY = Buffer.alloc(0);

class Watch implements ChangeWatcher {
  entries: Entry[] = [];
  bytes = 0;
  overflow = false;
  deleted = false;
  readonly pending: { op: PendingOp; size: number }[] = [];
  private flushing: NodeJS.Immediate | null = null;
  unsubscribe: () => void = () => undefined;

  constructor(
    private readonly hub: NotifyHub,
    readonly filter: number,
    readonly tree: boolean,
    /** The first request's OutputBufferLength, capped: what the watch collects at most. */
    readonly limit: number,
  ) {}

  changed(e: DirChangeEvent): void {
    if ((e.filter & this.filter) === 0) return;
    this.add({ action: e.action, name: Buffer.from(e.name.toString('utf8'), 'utf16le') });
  }

  changedBelow(e: DirChangeEvent): void {
    if ((e.filter & this.filter) === 0) return;
    // Where below is not known here (directories do not know their names): "enumerate again".
    this.setOverflow();
    this.schedule();
  }

  gone(): void {
    this.deleted = true;
    for (const p of this.pending.splice(0)) p.op.complete(NtStatus.DELETE_PENDING);
  }

  private setOverflow(): void {
    this.hub.release(this.bytes);
    this.entries = [];
    this.bytes = 0;
    this.overflow = true;
  }

  private add(entry: Entry): void {
    if (this.overflow) return;
    const last = this.entries[this.entries.length - 1];
    // A run of writes to one file is one change to report.
    if (last && last.action === entry.action && last.name.equals(entry.name)) return;
    const size = entrySize(entry);
    const limit = this.pending.length > 0 ? Math.min(this.limit, this.pending[0]!.size) : this.limit;
    if (this.bytes + size > limit || !this.hub.reserve(size)) {
      this.setOverflow();
    } else {
      this.entries.push(entry);
      this.bytes += size;
    }
    this.schedule();
  }

  /** Answers the oldest pending request once the current operation's changes are all in. */
  private schedule(): void {
    if (this.pending.length === 0 || this.flushing) return;
    this.flushing = setImmediate(() => {
      this.flushing = null;
      const p = this.pending.shift();
      if (!p) return;
      const r = this.take(p.size);
      p.op.complete(r.status, notifyBody(r.output));
    });
  }

  /** The collected changes as a response of at most `size` bytes, and a fresh buffer. */
  take(size: number): { status: number; output: Buffer } {
    const fits = !this.overflow && this.bytes <= size;
    const output = fits ? encodeNotifyEntries(this.entries) : EMPTY;
    this.hub.release(this.bytes);
    this.entries = [];
    this.bytes = 0;
    this.overflow = false;
    return { status: fits ? NtStatus.SUCCESS : NtStatus.NOTIFY_ENUM_DIR, output };
  }

  get hasNews(): boolean {
    return this.overflow || this.entries.length > 0;
  }

  close(): void {
    if (this.flushing) clearImmediate(this.flushing);
    this.flushing = null;
    this.unsubscribe();
    this.hub.release(this.bytes);
    this.entries = [];
    this.bytes = 0;
  }
}

/** The watches of one connection's opens. */
export class NotifyHub {
  private readonly watches = new Map<Open, Watch>();
  private buffered = 0;

  constructor(
    private readonly fs: FileService,
    private readonly maxBuffered = MAX_CONNECTION_BUFFER,
  ) {}

  reserve(n: number): boolean {
    if (this.buffered + n > this.maxBuffered) return false;
    this.buffered += n;
    return true;
  }

  release(n: number): void {
    this.buffered = Math.max(0, this.buffered - n);
  }

  /** Bytes of changes held for this connection's watches now. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /**
   * 3.3.5.19: answers at once (the status, the response written to `w`) or goes async and
   * answers STATUS_PENDING.
   */
  request(open: Open, req: ChangeNotifyRequest, maxTransact: number, w: SmbWriter, goAsync: () => PendingOp): number {
    if (!open.isDir) throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'CHANGE_NOTIFY on a file');
    // The share permission now: a caller whose grant became `none` since the open hears of no change.
    this.fs.identity(open.share, open.tree.session.identity);
    if ((open.grantedAccess & Access.FILE_READ_DATA) === 0)
      throw new SmbStatusError(NtStatus.ACCESS_DENIED, 'no FILE_LIST_DIRECTORY access');
    if (req.outputBufferLength > maxTransact)
      throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'OutputBufferLength above MaxTransactSize');
    let watch = this.watches.get(open);
    if (!watch) {
      watch = new Watch(this, req.completionFilter, (req.flags & WATCH_TREE) !== 0, Math.min(req.outputBufferLength, MAX_WATCH_BUFFER));
      const meta = open.share.meta;
      watch.unsubscribe = this.fs.changes.watch(meta, open.inodeId, watch, watch.tree, (id) => meta.getInode(id));
      this.watches.set(open, watch);
    }
    if (watch.deleted) throw new SmbStatusError(NtStatus.DELETE_PENDING);
    if (watch.hasNews) {
      const r = watch.take(req.outputBufferLength);
      writeOutputResponse(w, r.output);
      return r.status;
    }
    if (watch.pending.length >= MAX_PENDING_PER_WATCH)
      throw new SmbStatusError(NtStatus.INSUFFICIENT_RESOURCES, 'too many CHANGE_NOTIFY requests pending on the open');
    const op = goAsync();
    const entry = { op, size: req.outputBufferLength };
    watch.pending.push(entry);
    const w2 = watch;
    op.onAbort = (reason) => {
      const i = w2.pending.indexOf(entry);
      if (i !== -1) w2.pending.splice(i, 1);
      op.complete(reason === 'cancel' ? NtStatus.CANCELLED : NtStatus.NOTIFY_CLEANUP, reason === 'cancel' ? null : notifyBody(EMPTY));
    };
    return NtStatus.PENDING;
  }

  /** The open is closing (its pending requests were answered already): the watch ends. */
  closeOpen(open: Open): void {
    const watch = this.watches.get(open);
    if (!watch) return;
    watch.close();
    this.watches.delete(open);
  }

  closeAll(): void {
    for (const open of [...this.watches.keys()]) this.closeOpen(open);
  }
}

/** MS-FSCC 2.4.7 FILE_BASIC_INFORMATION: which of its fields a SET_INFO changes, as ChangeFilter bits. */
function basicInfoFilter(b: Buffer): number {
  if (b.length < 36) return 0;
  const set = (at: number): boolean => b.readBigUInt64LE(at) !== 0n;
  let f = 0;
  if (set(0)) f |= ChangeFilter.CREATION;
  if (set(8)) f |= ChangeFilter.LAST_ACCESS;
  if (set(16)) f |= ChangeFilter.LAST_WRITE;
  if (b.readUInt32LE(32) !== 0) f |= ChangeFilter.ATTRIBUTES;
  return f;
}

/**
 * A file changed through an SMB open (WRITE, SET_INFO): its directory's watchers hear MODIFIED
 * (the file service publishes names, but a write does not know the name it came through).
 */
export function publishModified(fs: FileService, open: Open, filter: number): void {
  if (filter === 0 || open.parent === null || open.name === null || !fs.changes.watching(open.share.meta)) return;
  let dirId: number;
  try {
    dirId = decodeHandle(open.parent).inodeId;
  } catch {
    return;
  }
  fs.changes.publish({
    store: open.share.meta,
    dirId,
    name: open.name,
    action: ChangeAction.MODIFIED,
    filter,
    inodeId: open.inodeId,
    isDir: open.isDir,
    deleted: false,
  });
}

/**
 * After a CLOSE or SET_INFO of a directory: when that left it delete-pending (still open
 * elsewhere), its watchers, on any connection, answer their waiting requests DELETE_PENDING
 * (smbtorture smb2.notify.rmdir1-4 wait for that).
 */
export function announceDeletePending(fs: FileService, open: Open): void {
  if (!open.isDir || !fs.changes.watching(open.share.meta)) return;
  if (fs.opens.get(open.share.meta, open.inodeId)?.deletePending) fs.changes.deletePending(open.share.meta, open.inodeId);
}

/** The ChangeFilter bits of a successful SET_INFO (names are published by the file service). */
export function setInfoFilter(req: SetInfoRequest): number {
  if (req.infoType !== InfoType.FILE) return req.infoType === InfoType.SECURITY ? ChangeFilter.SECURITY : 0;
  switch (req.infoClass) {
    case FileInfoClass.FileBasicInformation:
      return basicInfoFilter(req.buffer);
    case FileInfoClass.FileEndOfFileInformation:
    case FileInfoClass.FileAllocationInformation:
      return ChangeFilter.SIZE | ChangeFilter.LAST_WRITE;
    default:
      return 0;
  }
}

/** WRITE: the size and the last write time change. */
export const WRITE_FILTER = ChangeFilter.SIZE | ChangeFilter.LAST_WRITE;
