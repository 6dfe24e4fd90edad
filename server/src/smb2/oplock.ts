// Share modes, delete-pending, oplocks and leases (v1, and v2 at 3.x) of SMB opens, over the lock manager's table of
// opens (vfs/locks/opens.ts), which NFS changes consult too.
// MS-SMB2 3.3.5.9 (CREATE: share access, RqLs), 3.3.4.6 / 3.3.4.7 (oplock and lease break
// notifications), 3.3.5.22 (OPLOCK_BREAK acknowledgments); MS-FSA 2.1.5.1.2 (share access),
// 2.1.4.12 (what breaks an oplock) in the subset described at each function.
import { VfsError } from '../vfs/errors.js';
import type { FileService } from '../vfs/service.js';
import {
  AccessBits,
  Caching,
  ShareAccess,
  type CacheHolder,
  type FileOpens,
  type OpenRecord,
  OpenTableError,
  isStatOpen,
  SHARING_ACCESS,
} from '../vfs/locks/opens.js';
import { decodeHandle } from '../vfs/handle.js';
import { removeStream } from '../vfs/streams.js';
import type { Identity, Inode } from '../vfs/types.js';
import { HEADER_SIZE, type SmbReader, SmbWriter, writeHeader } from './codec.js';
import { Command, CreateDisposition, CreateOptions, HeaderFlags } from './constants.js';
import type { CreateRequest } from './messages.js';
import type { Open, Session } from './state.js';
import { NtStatus, SmbStatusError } from './status.js';
import * as writeTime from './writetime.js';
import { Lease, leaseAckBody, type LeaseChannel, leaseIdOf, LeaseTable } from './lease.js';

export { Lease, leaseBreakBody, LeaseTable } from './lease.js';

/** MS-SMB2 2.2.13 RequestedOplockLevel. */
export const OplockLevel = Object.freeze({ NONE: 0, II: 1, EXCLUSIVE: 8, BATCH: 9, LEASE: 0xff } as const);

/** MS-SMB2 2.2.14.2.10 and 2.2.14.2.11 lease Flags. */
const LEASE_FLAG_BREAK_IN_PROGRESS = 0x2;
const LEASE_FLAG_PARENT_LEASE_KEY_SET = 0x4;
/** MS-SMB2 2.2.13.2.8 / 2.2.13.2.10: a v1 lease context is 32 bytes, a v2 one 52. */
const LEASE_V1_BYTES = 32;
const LEASE_V2_BYTES = 52;
/** Leases per server at most (each has at least one open; the open table caps those too). */
const MAX_LEASES = 65536;
/** FILE_READ_ATTRIBUTES, FILE_WRITE_ATTRIBUTES, SYNCHRONIZE: what an open may ask without breaking an oplock. */
const OPLOCK_STAT_ACCESS = 0x00000080 | 0x00000100 | 0x00100000;
/** MS-SMB2 3.3.2.1 Oplock Break Acknowledgment Timer: 35 s by default. */
export const DEFAULT_BREAK_TIMEOUT_MS = 35_000;

/**
 * Sends an unsolicited notification through a holder's connection; false once it is gone. An
 * oplock break names the session of the open it breaks (MS-SMB2 3.3.4.6); a lease break names
 * none (3.3.4.7: it is the client's, SessionId 0). Both go in the clear (see SmbConnection.notification).
 */
export type NotifySender = (command: number, body: Buffer, session?: Session) => boolean;

/** What CREATE needs from its connection to grant caching. */
export interface CachingContext {
  clientGuid: Buffer;
  /** Leases exist from SMB 2.1 on. */
  leasing: boolean;
  /** Version 2 lease contexts (epochs, parent keys) are read at SMB 3.x only. */
  leaseV2?: boolean;
  notify: NotifySender;
  /** How long a break waits for the acknowledgment (adapters.smb.oplock_break_timeout). */
  breakTimeoutMs: number;
}

/** The oplock levels as caching bits. */
const cachingOfLevel = (level: number): number =>
  level === OplockLevel.BATCH
    ? Caching.READ | Caching.WRITE | Caching.HANDLE
    : level === OplockLevel.EXCLUSIVE
      ? Caching.READ | Caching.WRITE
      : level === OplockLevel.II
        ? Caching.READ
        : Caching.NONE;

/** One pending break: resolved by the acknowledgment, the holder's release, or the timer. */
class PendingBreak {
  readonly done: Promise<void>;
  private resolve!: () => void;
  private readonly timer: NodeJS.Timeout;
  constructor(timeoutMs: number, onTimeout: () => void) {
    this.done = new Promise((r) => (this.resolve = r));
    // Not unref'd: a request waiting on the break is work in flight.
    this.timer = setTimeout(onTimeout, timeoutMs);
  }
  settle(): void {
    clearTimeout(this.timer);
    this.resolve();
  }
}

/** MS-SMB2 3.3.1.10 an oplock on one open (Open.OplockLevel / OplockState). */
export class OplockHolder implements CacheHolder {
  private pending: PendingBreak | null = null;
  /** The level the current break goes to. */
  breakingTo: number = OplockLevel.NONE;

  constructor(
    public level: number,
    private readonly open: Open,
    private readonly timeoutMs: number,
  ) {}

  /**
   * Through the open's connection and for its session of the moment: a durable reconnect moves the
   * open to another connection's tree, hence another session.
   */
  private notify(command: number, body: Buffer): boolean {
    return this.open.notify?.(command, body, this.open.tree.session) ?? false;
  }

  get caching(): number {
    return cachingOfLevel(this.level);
  }

  get breaking(): boolean {
    return this.pending !== null;
  }

  breakTo(keep: number): Promise<void> {
    // A preserved durable open cannot hear the break: it is closed instead (MS-SMB2 3.3.4.6).
    if (this.open.expire) return this.open.expire();
    // A break in progress ends first; what it left may then need a further break (II to none).
    if (this.pending) return this.pending.done.then(() => ((this.caching & ~keep) !== 0 ? this.breakTo(keep) : undefined));
    // An oplock goes to Level II when read caching may stay, else to none (MS-FSA 2.1.4.12).
    const to = (keep & Caching.READ) !== 0 && this.level !== OplockLevel.II ? OplockLevel.II : OplockLevel.NONE;
    if (to === this.level) return Promise.resolve();
    const body = oplockBreakBody(to, this.open.fileId);
    if (this.level === OplockLevel.II) {
      // A break from Level II needs no acknowledgment (MS-SMB2 2.2.24.1).
      this.level = OplockLevel.NONE;
      this.notify(Command.OPLOCK_BREAK, body);
      return Promise.resolve();
    }
    this.breakingTo = to;
    const p = (this.pending = new PendingBreak(this.timeoutMs, () => this.finish(OplockLevel.NONE)));
    if (!this.notify(Command.OPLOCK_BREAK, body)) this.finish(OplockLevel.NONE);
    return p.done;
  }

  /** The break is over at `level` (acknowledged, timed out, or the open is gone). */
  finish(level: number): void {
    this.level = level;
    const p = this.pending;
    this.pending = null;
    p?.settle();
  }
}

const leaseTables = new WeakMap<FileService, LeaseTable>();
function leaseTableOf(fs: FileService): LeaseTable {
  let t = leaseTables.get(fs);
  if (!t) leaseTables.set(fs, (t = new LeaseTable()));
  return t;
}

/** A 3.x connection of a client, where its version 2 leases' breaks may go (LeaseTable.addChannel). */
export function addLeaseChannel(fs: FileService, clientGuid: Buffer, channel: LeaseChannel): () => void {
  return leaseTableOf(fs).addChannel(clientGuid.toString('hex'), channel);
}

// ---- wire ---------------------------------------------------------------------------------------

/** MS-SMB2 2.2.23.1 Oplock Break Notification (and 2.2.25.1 the response: same layout). */
export function oplockBreakBody(level: number, fileId: Buffer): Buffer {
  const w = new SmbWriter(24);
  w.u16(24).u8(level).u8(0).u32(0).bytes(fileId);
  return w.finish();
}

/**
 * MS-SMB2 3.3.4.6 / 3.3.4.7: an unsolicited OPLOCK_BREAK notification, MessageId all ones, no
 * tree, unsigned, no credits. SessionId is the broken open's session for an oplock break (3.3.4.6
 * says SHOULD; smbd sends it too) and 0 for a lease break.
 */
export function notificationFrame(command: number, body: Buffer, sessionId = 0): Buffer {
  const w = new SmbWriter(HEADER_SIZE + body.length);
  writeHeader(w, {
    creditCharge: 0,
    status: 0,
    command,
    creditRequest: 0,
    flags: HeaderFlags.SERVER_TO_REDIR,
    nextCommand: 0,
    messageId: 0,
    treeId: 0,
    sessionId,
  });
  w.bytes(body);
  const frame = w.finish();
  frame.fill(0xff, 24, 32);
  return frame;
}

/** What an RqLs asks: the key and state, and for a version 2 context its parent key (if set) and epoch. */
export interface LeaseRequest {
  key: Buffer;
  state: number;
  v2: { parentKey: Buffer | null; epoch: number } | null;
}

/**
 * MS-SMB2 2.2.13.2.8 SMB2_CREATE_REQUEST_LEASE (LeaseKey, LeaseState: 32 bytes) and, read at 3.x
 * only (`v2`), 2.2.13.2.10 SMB2_CREATE_REQUEST_LEASE_V2 (then Flags, LeaseDuration,
 * ParentLeaseKey, Epoch: 52 bytes). At 2.1 a v2 context is read as v1, as smbd does.
 */
export function leaseRequestOf(req: CreateRequest, v2 = false): LeaseRequest | null {
  if (req.requestedOplockLevel !== OplockLevel.LEASE) return null;
  const ctx = req.contexts.find((c) => c.name === 'RqLs');
  if (!ctx || ctx.data.length < LEASE_V1_BYTES) return null;
  const key = Buffer.from(ctx.data.subarray(0, 16));
  const state = ctx.data.readUInt32LE(16) & (Caching.READ | Caching.HANDLE | Caching.WRITE);
  if (!v2 || ctx.data.length < LEASE_V2_BYTES) return { key, state, v2: null };
  const parentKey = (ctx.data.readUInt32LE(20) & LEASE_FLAG_PARENT_LEASE_KEY_SET) !== 0 ? Buffer.from(ctx.data.subarray(32, 48)) : null;
  return { key, state, v2: { parentKey, epoch: ctx.data.readUInt16LE(48) } };
}

/**
 * Several servers on one store (issue 14): whether another server has the file open, for
 * grantCaching, which sees this server's opens only (MS-FSA 2.1.5.17: beside another open an
 * oplock is Level II at most and a lease caches no writes). Before, B granted a batch oplock while
 * A's client held the file open, and A's client read what B's client had cached. Asked only for a
 * batch or exclusive oplock or a lease (one Redis round trip); when Redis cannot tell, assumed.
 */
export function openElsewhere(fs: FileService, rec: OpenRecord, req: CreateRequest): false | Promise<boolean> {
  const level = req.requestedOplockLevel;
  if (level !== OplockLevel.BATCH && level !== OplockLevel.EXCLUSIVE && level !== OplockLevel.LEASE) return false;
  const shared = fs.opens.cachingSharedElsewhere(rec);
  return shared === false ? false : shared.catch(() => true);
}

/**
 * MS-SMB2 2.2.14.2.10 SMB2_CREATE_RESPONSE_LEASE, or 2.2.14.2.11 SMB2_CREATE_RESPONSE_LEASE_V2
 * for a lease made by a v2 context: in the version the lease was made with, whatever the request's
 * (as Windows: smbtorture lease.v2_epoch2 and v2_epoch3).
 */
export function leaseResponse(lease: Lease): Buffer {
  const b = Buffer.alloc(lease.version === 2 ? LEASE_V2_BYTES : LEASE_V1_BYTES);
  lease.key.copy(b, 0);
  b.writeUInt32LE(lease.state, 16);
  let flags = lease.breaking ? LEASE_FLAG_BREAK_IN_PROGRESS : 0;
  if (lease.version === 2) {
    if (lease.parentKey !== null) {
      flags |= LEASE_FLAG_PARENT_LEASE_KEY_SET;
      lease.parentKey.copy(b, 32);
    }
    b.writeUInt16LE(lease.epoch, 48);
  }
  b.writeUInt32LE(flags, 20);
  return b;
}

// ---- CREATE -------------------------------------------------------------------------------------

const statusOfRefusal = (e: OpenTableError): NtStatus =>
  e.reason === 'sharing-violation'
    ? NtStatus.SHARING_VIOLATION
    : e.reason === 'delete-pending'
      ? NtStatus.DELETE_PENDING
      : NtStatus.INSUFFICIENT_RESOURCES;

/** The lease this client already holds under the request's key for the session's user (leaseIdOf), on whichever file. */
function ownLease(fs: FileService, caching: CachingContext | undefined, session: Session, req: CreateRequest): Lease | null {
  if (!caching?.leasing) return null;
  const want = leaseRequestOf(req, caching.leaseV2);
  if (!want) return null;
  return leaseTableOf(fs).leases.get(leaseIdOf(caching.clientGuid, want.key, session)) ?? null;
}

/**
 * Does CREATE ask for a lease key this client already holds for the session's user? Checked
 * before a new file is made: the key is then on another file, and the CREATE fails
 * (INVALID_PARAMETER) without leaving the file behind (smbtorture smb2.lease.request, run twice).
 * Another user's lease under the same ClientGuid and key refuses nothing (leaseIdOf).
 */
export function leaseKeyInUse(fs: FileService, caching: CachingContext | undefined, session: Session, req: CreateRequest): boolean {
  return ownLease(fs, caching, session, req) !== null;
}

/**
 * Caching before an open of an existing file (MS-FSA 2.1.5.1.2, 2.1.4.12). When share modes refuse
 * the open, holders of handle caching (batch oplocks, H leases) are asked to let go first (they may
 * close their cached handles) and nothing else breaks; an open that share modes admit takes write
 * caching from the others (all caching for an overwrite). Stat opens break nothing.
 */
export async function breakForOpen(
  fs: FileService,
  meta: FileOpens['meta'],
  inode: Inode,
  access: number,
  req: CreateRequest,
  caching: CachingContext | undefined,
  /** The CREATE's session: whose lease the request's key names (its own lease breaks nothing). */
  session: Session,
  /** Called once a break that waits for an acknowledgment is under way (CREATE goes async then). */
  onBreakWait?: () => void,
): Promise<boolean> {
  const remote = breakRemoteForOpen(fs, meta, inode, access, req, onBreakWait);
  if (remote !== null) await remote;
  const first = fs.opens.get(meta, inode.id);
  if (!first || first.holders === 0) return false;
  // A preserved durable open closed by a break may have deleted the file (delete-on-close): the
  // caller looks again when this returns true.
  const preserved = [...first.opens].filter((o) => (o.owner as Open | null)?.expire);
  const closed = (): boolean => preserved.some((o) => !first.opens.has(o));
  const own = ownLease(fs, caching, session, req);
  const d = req.createDisposition;
  const overwrite = d === CreateDisposition.SUPERSEDE || d === CreateDisposition.OVERWRITE || d === CreateDisposition.OVERWRITE_IF;
  // A stat open breaks nothing; READ_CONTROL alone counts as one for leases, not for oplocks (as smbd).
  const leaseStat = !overwrite && isStatOpen(access);
  const oplockStat = !overwrite && (access & ~OPLOCK_STAT_ACCESS) === 0;
  if (leaseStat && oplockStat) return false;
  // An open that will delete the file on close takes handle caching too (the others must let go of
  // their cached handles for the delete to happen).
  const deleting = (req.createOptions & CreateOptions.DELETE_ON_CLOSE) !== 0;
  // Each round breaks what the open needs broken and waits where it must; what it waited for may
  // have changed the picture (a holder closed, a break went on in steps), so it looks again.
  for (let round = 0; round < MAX_BREAK_ROUNDS; round++) {
    const file = fs.opens.get(meta, inode.id);
    if (!file || file.holders === 0) return closed();
    if (file.deletePending) throw new SmbStatusError(NtStatus.DELETE_PENDING);
    // Refused by share modes: only handle caching is asked for (the holders may close their cached
    // handles); if the open is still refused after that, CREATE fails with SHARING_VIOLATION and
    // the others keep their read and write caching.
    const conflict = fs.opens.conflicting(file, access, req.shareAccess) !== null;
    const keep = conflict
      ? Caching.READ | Caching.WRITE
      : overwrite
        ? Caching.NONE
        : deleting
          ? Caching.READ
          : Caching.READ | Caching.HANDLE;
    const { waits, acking } = breakRound(fs.opens.holdersAbove(file, Caching.NONE, own), keep, conflict, round, leaseStat, oplockStat);
    if (waits.length === 0) return closed();
    // Waiting for a client's acknowledgment: the CREATE goes async.
    if (acking) onBreakWait?.();
    await Promise.all(waits);
  }
  return closed();
}

/** Rounds of breaks one CREATE goes through at most (each bounded by the break timeout). */
const MAX_BREAK_ROUNDS = 8;

/**
 * One round of breaks for an open (MS-FSA 2.1.4.12 as Windows and smbd behave, smbtorture
 * lease.breaking1-5): each holder is asked to keep at most `keep`. The open waits for a holder
 * that gives up write caching (its dirty data), or handle caching when share modes refuse the open;
 * a lease that loses only read or handle caching is not waited for, unless it was already in the
 * middle of a break (the open then waits until that break is over, as on a second look).
 */
function breakRound(
  holders: CacheHolder[],
  keep: number,
  conflict: boolean,
  round: number,
  leaseStat: boolean,
  oplockStat: boolean,
): { waits: Promise<void>[]; acking: boolean } {
  const waitMask = conflict ? Caching.HANDLE : Caching.WRITE;
  const waits: Promise<void>[] = [];
  let acking = false;
  for (const h of holders) {
    if (h instanceof Lease) {
      if (leaseStat) continue;
      const from = h.state;
      const wasBreaking = h.breaking;
      if ((from & ~keep) === 0) {
        if (wasBreaking) waits.push(h.idle());
        acking ||= wasBreaking;
        continue;
      }
      // Held by preserved durable opens alone, the lease is not broken: they are closed, and
      // that is waited for (the file may go with them).
      const unreachable = h.unreachable;
      const done = h.breakTo(keep);
      if (unreachable) waits.push(done);
      else if ((from & waitMask) !== 0 || (wasBreaking && round > 0)) waits.push(h.idle());
      acking ||= h.breaking;
    } else {
      if (oplockStat || (h.caching & ~keep) === 0) continue;
      waits.push(h.breakTo(h.caching & keep));
      acking ||= h instanceof OplockHolder && h.breaking;
    }
  }
  return { waits, acking };
}

/**
 * Several servers: the caching other servers' clients hold on the file breaks before an open here
 * (nothing is asked when no other server is known to cache it). Which holders are leases and which
 * oplocks, and whether share modes refuse the open, is not known here: every open but a stat open
 * takes write and handle caching from them (a cached handle may be closed, so the open may pass
 * their share modes), an overwrite all of it. null (no promise, no await) when nothing is asked.
 */
function breakRemoteForOpen(
  fs: FileService,
  meta: FileOpens['meta'],
  inode: Inode,
  access: number,
  req: CreateRequest,
  onBreakWait: (() => void) | undefined,
): Promise<void> | null {
  const d = req.createDisposition;
  const overwrite = d === CreateDisposition.SUPERSEDE || d === CreateDisposition.OVERWRITE || d === CreateDisposition.OVERWRITE_IF;
  if (!overwrite && isStatOpen(access) && (access & ~OPLOCK_STAT_ACCESS) === 0) return null;
  return fs.opens.breakRemote(meta, inode.id, overwrite ? Caching.NONE : Caching.READ, onBreakWait);
}

/** Registers an SMB open in the lock manager (share check, delete-pending); a refusal is its NTSTATUS. */
export async function registerOpen(fs: FileService, open: Open, access: number, shareAccess: number): Promise<OpenRecord> {
  // An open refused by opens whose connection or session went (closed one by one, asynchronously)
  // is tried again once they are closed: a client that reconnects sees them gone (MS-SMB2 3.3.7.1).
  for (let round = 0; ; round++) {
    try {
      return await tryRegisterOpen(fs, open, access, shareAccess);
    } catch (e) {
      if (round >= MAX_CLOSING_ROUNDS || !(e instanceof SmbStatusError) || e.status !== NtStatus.SHARING_VIOLATION) throw e;
      const file = fs.opens.get(open.share.meta, open.inodeId);
      const closing: Promise<void>[] = [];
      for (const o of file?.opens ?? []) {
        const owner = o.owner instanceof StreamOfFile ? o.owner.open : (o.owner as Open | null);
        // One going with delete-on-close may take the file: the refusal stands then.
        if (owner?.closing && (o.deleteOnClose || owner.deleteOnClose || file!.deletePending)) throw e;
        if (owner?.closing) closing.push(owner.closing);
      }
      if (closing.length === 0) throw e;
      await Promise.all(closing);
    }
  }
}

/** Waits for closing opens at most this often per CREATE (each wait is bounded by their close). */
const MAX_CLOSING_ROUNDS = 2;

/**
 * Whose share of the open table an open takes: the logged-on user (names compared as Windows
 * compares them, without case), or one key for every anonymous and guest session together.
 */
function openTableUser(open: Open): string {
  return open.tree.session.owner?.name.toLowerCase() ?? '';
}

async function tryRegisterOpen(fs: FileService, open: Open, access: number, shareAccess: number): Promise<OpenRecord> {
  // MS-FSA 2.1.5.1.2: an open of a file's own data asking for DELETE also meets the opens of its
  // named streams: one that does not share delete refuses it (smbtorture streams.delete).
  if (!open.stream && (access & AccessBits.DELETE) !== 0) {
    const file = fs.opens.get(open.share.meta, open.inodeId);
    if (file)
      for (const o of file.opens)
        if (o.owner instanceof StreamOfFile && (o.shareAccess & ShareAccess.DELETE) === 0)
          throw new SmbStatusError(NtStatus.SHARING_VIOLATION, 'a stream of the file is open without delete sharing');
  }
  try {
    const rec = await fs.opens.addShared(open.share.meta, open.inodeId, access, shareAccess, open, openTableUser(open));
    rec.deleteOnClose = open.deleteOnClose;
    return rec;
  } catch (e) {
    if (e instanceof OpenTableError) throw new SmbStatusError(statusOfRefusal(e));
    throw e;
  }
}

/**
 * The record a stream open keeps among its file's opens (owner of an OpenRecord with no access:
 * it takes part in no share check and breaks nothing). While one is there the file is open: it
 * stays delete-pending, refuses new opens with DELETE_PENDING, and is removed only when the last
 * open of the file or of any of its streams goes (MS-FSA: a file's delete waits for its streams'
 * opens). Its share access is the stream open's, for the DELETE check of registerOpen.
 */
class StreamOfFile {
  constructor(readonly open: Open) {}
}

const streamRecords = new WeakMap<Open, OpenRecord>();

/**
 * Registers a stream open among the opens of its file (`fileId`), before the stream's own record:
 * DELETE_PENDING when the file is delete-pending. This record takes no slot of its user's share of
 * the open table: the stream's own record does (one handle, one slot).
 */
export async function registerStreamOfFile(fs: FileService, open: Open, fileId: number, shareAccess: number): Promise<void> {
  try {
    streamRecords.set(open, await fs.opens.addShared(open.share.meta, fileId, 0, shareAccess, new StreamOfFile(open)));
  } catch (e) {
    if (e instanceof OpenTableError) throw new SmbStatusError(statusOfRefusal(e));
    throw e;
  }
}

/**
 * Grants the oplock or lease CREATE asked for, as far as the other opens allow (MS-SMB2 3.3.5.9
 * steps for RequestedOplockLevel and 3.3.5.9.8 for RqLs). Returns the response's OplockLevel and
 * lease context (or null).
 */
export function grantCaching(
  fs: FileService,
  open: Open,
  rec: OpenRecord,
  req: CreateRequest,
  caching: CachingContext | undefined,
  openElsewhere = false,
): { level: number; lease: Buffer | null } {
  const none = { level: OplockLevel.NONE, lease: null };
  if (!caching) return none;
  const file = rec.file;
  const want = caching.leasing ? leaseRequestOf(req, caching.leaseV2) : null;
  // Another server has the file open (openElsewhere, below): counted like an open here, it leaves
  // a lease no write caching (also in what counts as asked for) and an oplock Level II at most.
  if (want && openElsewhere) want.state &= ~Caching.WRITE;
  const table = leaseTableOf(fs);
  const id = want ? leaseIdOf(caching.clientGuid, want.key, open.tree.session) : '';
  let lease = want ? table.leases.get(id) : undefined;
  // A lease key names one file (MS-SMB2 3.3.5.9.8), directories included: for its owner (leaseIdOf).
  if (lease && lease.file !== file) throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'lease key in use for another file');
  if (open.isDir) return none;
  open.notify = caching.notify;
  if (want) {
    // Opens of the file other than this lease's own (stat opens count only when they hold caching).
    let others = false;
    for (const o of file.opens) {
      const so = o.owner as Open | null;
      if (o !== rec && (!isStatOpen(o.access) || o.holder) && (!lease || !so || so.lease !== lease)) others = true;
    }
    let state = want.state;
    // v1 lease states are R, RH, RW, RWH: nothing without read caching (MS-SMB2 3.3.5.9.8).
    if ((state & Caching.READ) === 0) state = Caching.NONE;
    if (others) state &= ~Caching.WRITE;
    for (const o of file.opens) {
      const h = o.holder;
      if (h === null || h === lease) continue;
      // Beside an oplock a lease caches reads only; another's write caching leaves it nothing.
      if (h instanceof OplockHolder && h.level !== OplockLevel.NONE) state &= Caching.READ;
      if ((h.caching & Caching.WRITE) !== 0) state = Caching.NONE;
    }
    if (lease) {
      // A lease broken to none is granted afresh; a held one is upgraded only to the whole state
      // asked for, when the other opens allow all of it and it keeps what the lease holds (a lease
      // never shrinks by a request: smbtorture lease.upgrade2/3, as Windows and smbd).
      const asked = (want.state & Caching.READ) === 0 ? Caching.NONE : want.state;
      if (!lease.breaking && (lease.state === Caching.NONE || (state === asked && (state & lease.state) === lease.state))) {
        // More caching than it held is a new lease state: a new epoch (v2; the same state, none).
        if ((state & ~lease.state) !== 0) lease.nextEpoch();
        lease.state = state;
      }
    } else {
      if (table.leases.size >= MAX_LEASES) return none;
      lease = new Lease(table, id, want.key, file, state, caching.breakTimeoutMs, want.v2);
      table.leases.set(id, lease);
    }
    lease.opens.add(open);
    open.lease = lease;
    fs.opens.setHolder(rec, lease);
    return { level: OplockLevel.LEASE, lease: leaseResponse(lease) };
  }
  let level = req.requestedOplockLevel;
  if (level !== OplockLevel.II && level !== OplockLevel.EXCLUSIVE && level !== OplockLevel.BATCH) return none;
  let alone = !openElsewhere;
  let blocked = false;
  for (const o of file.opens) {
    // Any other open, a stat open included, leaves an oplock at Level II at most (an open of one
    // of the file's streams does not: streams have oplocks of their own).
    if (o === rec || o.owner instanceof StreamOfFile) continue;
    alone = false;
    const h = o.holder;
    if (h && (h.caching & (Caching.WRITE | Caching.HANDLE)) !== 0) blocked = true;
  }
  if (blocked) return none;
  if (!alone) level = OplockLevel.II;
  const holder = new OplockHolder(level, open, caching.breakTimeoutMs);
  open.oplock = holder;
  fs.opens.setHolder(rec, holder);
  return { level, lease: null };
}

/** Another open's caching breaks to none before a change that does not go through a vfs write (MS-FSA 2.1.5.14.2). */
export async function breakForChange(fs: FileService, open: Open): Promise<void> {
  await fs.opens.breakHolders(open.share.meta, open.inodeId, Caching.NONE, holderOf(open));
}

/**
 * MS-FSA 2.1.5.7 (as Windows and smbd behave, smbtorture oplock.brl1, lease.lock1): a byte-range
 * lock breaks every other holder of the file to none, its own Level II oplock included; the LOCK
 * does not wait for the acknowledgments.
 */
export function breakForLock(fs: FileService, open: Open): void {
  if (open.isDir || open.stream) return;
  // Not waited for; a remote break that cannot be asked (Redis away) is the holder's timer's to end.
  void fs.opens.breakHolders(open.share.meta, open.inodeId, Caching.NONE, holderOf(open))?.catch(() => undefined);
}

// ---- rename ---------------------------------------------------------------------------------------

/**
 * MS-FSA 2.1.5.14.11 (as Windows behaves, smbtorture lease.rename_wait): a rename takes handle
 * caching from the renamed file's other holders. Started at once, before the rename's first
 * await, so that the notification goes out before the replies to requests that follow the rename
 * on the connection; the rename itself (FileService.rename) then waits for those breaks.
 */
export function breakForRename(fs: FileService, open: Open): void {
  const file = fs.opens.get(open.share.meta, open.inodeId);
  if (!file || file.holders === 0) return;
  const keep = Caching.READ | Caching.WRITE;
  for (const h of fs.opens.holdersAbove(file, keep, holderOf(open))) void h.breakTo(h.caching & keep);
}

/** Handle breaks one directory rename goes through at most (one at a time, each bounded by the break timeout). */
const MAX_TREE_BREAKS = 64;

/**
 * A rename of a directory with opens beneath it (MS-FSA 2.1.5.14.11 as Windows behaves; Samba's
 * later smbtorture lease.rename_dir_openfile): while every such open holds a handle lease, their
 * leases are broken to give up handle caching, one at a time, and the rename waits, so that a
 * client caching handles may close them. An open left (acknowledged but kept, or holding no
 * handle lease) makes checkRename refuse the rename with ACCESS_DENIED. The first break goes out
 * before the first await (see breakForRename).
 */
export async function breakTreeForRename(fs: FileService, open: Open): Promise<void> {
  const prefix = open.path + '\\';
  for (let i = 0; i < MAX_TREE_BREAKS; i++) {
    let next: Lease | null = null;
    for (const o of fs.opens.opensOf(open.share.meta)) {
      const other = o.owner as Open;
      if (other === open || other.share !== open.share || !other.path.startsWith(prefix)) continue;
      const h = o.holder;
      // Nothing to wait for: the rename fails.
      if (!(h instanceof Lease) || (h.state & Caching.HANDLE) === 0) return;
      next ??= h;
    }
    if (next === null) return;
    await next.breakTo(next.state & ~Caching.HANDLE);
  }
}

/**
 * What other opens refuse a rename of `open` (MS-FSA 2.1.5.14.11 as Windows behaves): an open of
 * the source directory holding DELETE access or not sharing delete (SHARING_VIOLATION), an open
 * of anything beneath a renamed directory, or of the file a rename would replace (ACCESS_DENIED).
 */
export function checkRename(fs: FileService, open: Open, parentId: number, replacedId: number | null): void {
  const meta = open.share.meta;
  const dir = fs.opens.get(meta, parentId);
  if (dir) {
    for (const o of dir.opens) {
      if ((o.access & SHARING_ACCESS) === 0) continue;
      if ((o.access & AccessBits.DELETE) !== 0 || (o.shareAccess & ShareAccess.DELETE) === 0)
        throw new SmbStatusError(NtStatus.SHARING_VIOLATION, 'the directory is open without delete sharing');
    }
  }
  if (replacedId !== null) checkReplace(fs, open, replacedId);
  if (!open.isDir) return;
  const prefix = open.path + '\\';
  for (const o of fs.opens.opensOf(meta)) {
    const other = o.owner as Open;
    if (other !== open && other.share === open.share && other.path.startsWith(prefix))
      throw new SmbStatusError(NtStatus.ACCESS_DENIED, 'a file beneath the directory is open');
  }
}

/**
 * MS-FSA 2.1.5.14.6 / 2.1.5.14.11: a rename or link with ReplaceIfExists refuses (ACCESS_DENIED)
 * to replace a file that has opens, whatever they share: the name would go from under them.
 */
export function checkReplace(fs: FileService, open: Open, replacedId: number): void {
  if (fs.opens.get(open.share.meta, replacedId)) throw new SmbStatusError(NtStatus.ACCESS_DENIED, 'the file replaced is open');
}

// ---- CLOSE and teardown -------------------------------------------------------------------------

/**
 * Ends an open, whichever way it ends (CLOSE, disconnect, a durable open's expiry, a cancelled
 * CREATE): its delayed write time is settled (writetime.ts), then it is taken out of the lock
 * manager: its oplock or its share of a lease goes (a break waiting on it ends), and when it was the
 * file's last open and the file is delete-pending, the file is removed.
 */
export async function releaseOpen(fs: FileService, open: Open, id: Identity): Promise<void> {
  await writeTime.closed(open, fs, id);
  const rec = open.record;
  if (!rec) {
    // A stream open refused after it was counted among its file's opens (registerStreamOfFile).
    const ofFile = streamRecords.get(open);
    streamRecords.delete(open);
    if (ofFile) await fs.opens.releaseShared(ofFile);
    return;
  }
  open.record = null;
  if (open.oplock) {
    open.oplock.finish(OplockLevel.NONE);
    open.oplock = null;
  }
  const lease = open.lease;
  if (lease) {
    open.lease = null;
    lease.opens.delete(open);
    if (lease.opens.size === 0) {
      lease.finish(Caching.NONE);
      if (lease.table.leases.get(lease.id) === lease) lease.table.leases.delete(lease.id);
    }
  }
  rec.deleteOnClose = open.deleteOnClose;
  const last = await fs.opens.releaseShared(rec);
  if (open.stream) {
    // Delete on close of a stream takes the stream, not its file (at CLOSE and logoff/disconnect alike).
    if (last) await removeStreamOnClose(fs, open.stream.fileHandle, open.stream.name, id);
    const ofFile = streamRecords.get(open);
    streamRecords.delete(open);
    // The file's last open was this stream's, and the file is delete-pending: it goes now.
    if (!ofFile || !(await fs.opens.releaseShared(ofFile))) return;
  } else if (!last) return;
  if (!open.parent || !open.name) return;
  // The file under its name as this open knows it: if another client renamed it (and another file
  // took the name), that other file is not deleted.
  const fileId = open.stream ? decodeHandle(open.stream.fileHandle).inodeId : open.inodeId;
  try {
    await fs.remove(open.parent, open.name, id, open.isDir, null, false, fileId);
  } catch (e) {
    // A directory that filled up meanwhile, or a file already gone, is simply not deleted.
    if (!(e instanceof VfsError && (e.errno === 'NOTEMPTY' || e.errno === 'NOENT' || e.errno === 'STALE'))) throw e;
  }
}

async function removeStreamOnClose(fs: FileService, fileHandle: Buffer, name: Buffer, id: Identity): Promise<void> {
  try {
    await removeStream(fs, fileHandle, name, id);
  } catch (e) {
    // The stream or its file already gone.
    if (!(e instanceof VfsError && (e.errno === 'NOENT' || e.errno === 'STALE'))) throw e;
  }
}

/** MS-FSA File.PendingDelete as SET_INFO FileDispositionInformation sets it. */
export async function setDeletePending(fs: FileService, open: Open, pending: boolean): Promise<void> {
  if (open.record) await fs.opens.setDeletePending(open.record.file, pending);
  else open.deleteOnClose = pending;
}

/** Is the file delete-pending (FileStandardInformation.DeletePending)? */
export function deletePendingOf(open: Open): boolean {
  return open.record ? open.record.file.deletePending : open.deleteOnClose;
}

/**
 * The caching holder an open's own changes do not break: its lease, or its exclusive or batch
 * oplock. A Level II oplock breaks to none on its own open's writes too.
 */
export const holderOf = (open: Open): CacheHolder | null =>
  open.lease ?? (open.oplock && open.oplock.level !== OplockLevel.II ? open.oplock : null);

// ---- OPLOCK_BREAK acknowledgments -----------------------------------------------------------------

/**
 * MS-SMB2 3.3.5.22.1 / 3.3.5.22.2: an acknowledgment of an oplock break (StructureSize 24) or a
 * lease break (36). `findOpen` resolves a FileId on the request's tree. A lease is looked up for
 * the request's session's user (leaseIdOf): another user's lease under the same ClientGuid and key
 * is not found, exactly as an unknown key, and is left as it was.
 */
export function acknowledge(
  fs: FileService,
  clientGuid: Buffer,
  session: Session,
  r: SmbReader,
  w: SmbWriter,
  findOpen: (fileId: Buffer) => Open,
): void {
  r.need(2, 'OPLOCK_BREAK');
  const size = r.u16();
  if (size === 24) {
    r.need(22, 'OPLOCK_BREAK');
    const level = r.u8();
    r.skip(5);
    const open = findOpen(r.bytes(16));
    const h = open.oplock;
    // An acknowledgment with no break to acknowledge (a break from Level II needs none).
    if (!h || !h.breaking) throw new SmbStatusError(NtStatus.INVALID_OPLOCK_PROTOCOL, 'no oplock break in progress');
    if (level !== OplockLevel.NONE && level !== OplockLevel.II) {
      h.finish(OplockLevel.NONE);
      throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'bad oplock level in acknowledgment');
    }
    if (level === OplockLevel.II && h.breakingTo === OplockLevel.NONE) {
      h.finish(OplockLevel.NONE);
      throw new SmbStatusError(NtStatus.INVALID_OPLOCK_PROTOCOL);
    }
    h.finish(level);
    w.bytes(oplockBreakBody(level, open.fileId));
    return;
  }
  if (size === 36) {
    r.need(34, 'LEASE_BREAK');
    r.skip(6);
    const key = Buffer.from(r.bytes(16));
    const state = r.u32();
    const lease = leaseTableOf(fs).leases.get(leaseIdOf(clientGuid, key, session));
    if (!lease) throw new SmbStatusError(NtStatus.OBJECT_NAME_NOT_FOUND, 'no such lease');
    // A further step of the break goes out after this response (setImmediate: the response is
    // written when this returns).
    lease.acknowledge(state, (send) => void setImmediate(send));
    w.bytes(leaseAckBody(key, state));
    return;
  }
  throw new SmbStatusError(NtStatus.INVALID_PARAMETER, `OPLOCK_BREAK StructureSize ${size}`);
}
