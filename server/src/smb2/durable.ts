// Durable handles v1: an open that outlives its connection (MS-SMB2 3.3.5.9.6 DHnQ, 3.3.5.9.7
// DHnC, 3.3.5.6 and 3.3.7.1 what LOGOFF and a lost connection do to a durable open, 3.3.2.2 the
// Durable Open Scavenger Timer). An open granted with a batch oplock or a lease with handle caching
// may be made durable. When its session or connection goes away (not a TREE_DISCONNECT), it is
// preserved: it stays in the lock manager with its share modes, byte-range locks and oplock or
// lease, but without a connection. The same user reconnecting (DHnC naming its FileId) gets the
// very same open back, position and locks included. Anything that needs it to break its caching
// (another open, an NFS write, remove or rename) closes it instead, since no break can reach it;
// so does its timer. A close of a preserved open is a CLOSE: locks go, delete-on-close runs.
// The table is bounded: in all and per user; an open past a cap is closed at disconnect.
import type { Logger } from 'pino';
import type { FileService } from '../vfs/service.js';
import { Caching } from '../vfs/locks/opens.js';
import { fromUtf16 } from './codec.js';
import { CreateAction } from './constants.js';
import type { FileContext } from './files.js';
import { fileInfoOf } from './fscc.js';
import { allocationOf } from './allocation.js';
import { releaseLocks } from './lock.js';
import { type CreateContext, type CreateRequest, encodeCreateContexts, writeCreateResponse } from './messages.js';
import { leaseRequestOf, leaseResponse, OplockLevel, releaseOpen } from './oplock.js';
import type { Open } from './state.js';
import { NtStatus, SmbStatusError } from './status.js';
import type { SmbWriter } from './codec.js';

/** MS-SMB2 3.3.2.2 (<217>: Windows keeps a v1 durable handle 16 minutes). */
export const DEFAULT_DURABLE_TIMEOUT_MS = 16 * 60_000;
/** Preserved opens in the whole server at most. */
export const DEFAULT_MAX_PRESERVED = 4096;

/** Create context names (MS-SMB2 2.2.13.2). */
const DHNQ = 'DHnQ';
const DHNC = 'DHnC';
/**
 * SMB 3.x only; at 2.1 a reconnect named this way is taken as DHnC (its FileId comes first), as
 * smbd does. At 3.x it names a version 2 durable open, which this server does not grant (DH2Q is
 * ignored): refused.
 */
const DH2C = 'DH2C';
const DH2Q = 'DH2Q';

export interface DurableOptions {
  /** How long a preserved open waits for its client (adapters.smb.durable_handle_timeout). */
  timeoutMs?: number;
  /** Preserved opens at most, in all (default 4096) and per user (default a quarter of that). */
  maxPreserved?: number;
  maxPerUser?: number;
  log?: Logger;
}

interface Preserved {
  readonly open: Open;
  /** The user who may reconnect it (lower case). */
  readonly user: string;
  readonly timer: NodeJS.Timeout;
}

/** Does the CREATE ask to reconnect a durable open? */
export const isReconnect = (req: CreateRequest): boolean => req.contexts.some((c) => c.name === DHNC || c.name === DH2C);

/**
 * MS-SMB2 3.3.5.9.6: after a successful open, is it made durable? Only with a batch oplock or a
 * lease holding handle caching, never for a directory or a stream. Returns the response context.
 */
export function grantDurable(req: CreateRequest, open: Open, oplockLevel: number): CreateContext | null {
  if (!req.contexts.some((c) => c.name === DHNQ)) return null;
  if (open.isDir || open.stream) return null;
  const handle =
    oplockLevel === OplockLevel.BATCH ||
    (oplockLevel === OplockLevel.LEASE && open.lease !== null && (open.lease.state & Caching.HANDLE) !== 0);
  if (!handle) return null;
  open.durable = true;
  // 2.2.14.2.3: 8 reserved bytes.
  return { name: DHNQ, data: Buffer.alloc(8) };
}

/** Can the open be preserved now (still durable: batch oplock or a handle-caching lease)? */
function preservable(open: Open): boolean {
  if (!open.durable || open.record === null || open.stream) return false;
  // A break sent just before the connection went can never be acknowledged: the open closes now
  // (MS-SMB2 3.3.4.6), ending the wait of whoever asked for the break.
  if (open.oplock?.breaking || open.lease?.breaking) return false;
  if (open.oplock) return open.oplock.level === OplockLevel.BATCH;
  return open.lease !== null && (open.lease.state & Caching.HANDLE) !== 0;
}

/** MS-SMB2 3.3.1.10 GlobalOpenTable, for the durable opens that have no connection now. */
export class DurableTable {
  private readonly byId = new Map<number, Preserved>();
  private readonly perUser = new Map<string, number>();
  readonly timeoutMs: number;
  readonly maxPreserved: number;
  readonly maxPerUser: number;
  private readonly log: Logger | undefined;

  constructor(
    private readonly fs: FileService,
    opts: DurableOptions = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_DURABLE_TIMEOUT_MS;
    this.maxPreserved = opts.maxPreserved ?? DEFAULT_MAX_PRESERVED;
    this.maxPerUser = opts.maxPerUser ?? Math.ceil(this.maxPreserved / 4);
    this.log = opts.log;
  }

  /** Opens preserved now. */
  get size(): number {
    return this.byId.size;
  }

  /**
   * Keeps an open whose session or connection ended (the caller has drained it and dropped it from
   * its connection). False when it is not durable (any more) or a cap is reached: the caller closes it.
   */
  preserve(open: Open): boolean {
    if (!preservable(open)) return false;
    const owner = open.tree.session.owner;
    if (owner === null) return false;
    const user = owner.name.toLowerCase();
    const mine = this.perUser.get(user) ?? 0;
    if (this.byId.size >= this.maxPreserved || mine >= this.maxPerUser) {
      this.log?.info({ user, preserved: this.byId.size }, 'durable open not preserved: too many preserved opens');
      return false;
    }
    open.notify = null;
    const timer = setTimeout(() => void this.expire(open), this.timeoutMs);
    // A preserved open is not work in flight: it must not keep the process alive.
    timer.unref();
    this.byId.set(open.id, { open, user, timer });
    this.perUser.set(user, mine + 1);
    open.expire = () => this.expire(open);
    this.log?.info({ user, path: open.path, timeoutMs: this.timeoutMs }, 'durable open preserved');
    return true;
  }

  /** Takes an open out of the table (reconnected or closing); undefined when it is not there. */
  private take(id: number): Preserved | undefined {
    const p = this.byId.get(id);
    if (!p) return undefined;
    this.byId.delete(id);
    clearTimeout(p.timer);
    const n = (this.perUser.get(p.user) ?? 1) - 1;
    if (n <= 0) this.perUser.delete(p.user);
    else this.perUser.set(p.user, n);
    p.open.expire = null;
    return p;
  }

  /**
   * Closes a preserved open exactly as CLOSE would: byte-range locks released, delete-on-close run.
   * Never rejects (a break waits on it): a storage error is logged, the open is gone all the same.
   */
  async expire(open: Open): Promise<void> {
    if (!this.take(open.id)) return;
    releaseLocks(this.fs.byteRanges, open);
    try {
      await releaseOpen(this.fs, open, open.tree.session.identity);
    } catch (err) {
      this.log?.warn({ err, path: open.path }, 'closing a preserved durable open failed');
    }
  }

  /** Closes every preserved open (server shutdown). */
  async closeAll(): Promise<void> {
    for (const p of [...this.byId.values()]) await this.expire(p.open);
  }

  /**
   * MS-SMB2 3.3.5.9.7: a CREATE with DHnC. No path validation and no open execution: the other
   * fields of the request are ignored. Answers the open's current oplock level or lease.
   */
  async reconnect(c: FileContext, req: CreateRequest, w: SmbWriter, register: (o: Open) => void): Promise<Open> {
    if (req.contexts.some((x) => x.name === DH2Q)) throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'DHnC with DH2Q');
    // At 3.x a DH2C names a version 2 durable open (DH2Q), which is never granted here.
    const ctx = req.contexts.find((x) => x.name === DHNC) ?? (c.smb3 ? undefined : req.contexts.find((x) => x.name === DH2C));
    if (ctx === undefined)
      throw new SmbStatusError(NtStatus.OBJECT_NAME_NOT_FOUND, 'no version 2 durable open (only version 1 is granted)');
    if (ctx.data.length < 16) throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'durable reconnect context shorter than a FileId');
    const hi = ctx.data.readUInt32LE(4);
    const id = hi * 2 ** 32 + ctx.data.readUInt32LE(0);
    const p = this.byId.get(id);
    if (!p) throw new SmbStatusError(NtStatus.OBJECT_NAME_NOT_FOUND, 'no preserved durable open with that FileId');
    const open = p.open;
    // The lease context names the lease, whatever RequestedOplockLevel says (smbtorture sends 0).
    const want = c.caching?.leasing ? leaseRequestOf({ ...req, requestedOplockLevel: OplockLevel.LEASE }) : null;
    if (open.lease) {
      // A lease belongs to one client (its ClientGuid) and is named by its key.
      const guid = c.caching?.clientGuid.toString('hex') ?? '';
      if (!open.lease.id.startsWith(guid) || !want || !want.key.equals(open.lease.key))
        throw new SmbStatusError(NtStatus.OBJECT_NAME_NOT_FOUND, 'durable reconnect without the open lease');
      const name = fromUtf16(req.name, 'CREATE name').replace(/^\\+/, '');
      if (name.toLowerCase() !== open.path.toLowerCase())
        throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'durable reconnect names another file');
    } else if (want) {
      throw new SmbStatusError(NtStatus.OBJECT_NAME_NOT_FOUND, 'durable reconnect of an oplock open asks a lease');
    }
    if (open.share !== c.share) throw new SmbStatusError(NtStatus.OBJECT_NAME_NOT_FOUND, 'durable open of another share');
    if (c.session.owner?.name.toLowerCase() !== p.user) throw new SmbStatusError(NtStatus.ACCESS_DENIED, 'durable open of another user');
    let inode;
    try {
      inode = (await c.fs.resolve(open.handle)).inode;
    } catch {
      await this.expire(open);
      throw new SmbStatusError(NtStatus.OBJECT_NAME_NOT_FOUND, 'the file of the durable open is gone');
    }
    // Closed meanwhile (a break, the timer) while the file was looked up.
    if (this.byId.get(id) !== p) throw new SmbStatusError(NtStatus.OBJECT_NAME_NOT_FOUND, 'the durable open was closed');
    this.take(id);
    open.tree = c.tree;
    open.notify = c.caching?.notify ?? null;
    register(open);
    const contexts: CreateContext[] = [];
    if (open.lease) contexts.push({ name: 'RqLs', data: leaseResponse(open.lease) });
    const parts = open.path.split('\\');
    writeCreateResponse(w, {
      oplockLevel: open.lease ? OplockLevel.LEASE : (open.oplock?.level ?? OplockLevel.NONE),
      createAction: CreateAction.OPENED,
      info: fileInfoOf(inode, parts[parts.length - 1], await allocationOf(c.share.meta, inode.id)),
      fileId: open.fileId,
      contexts: encodeCreateContexts(contexts),
    });
    return open;
  }
}

const tables = new WeakMap<FileService, DurableTable>();
/** The table of a lone connection (tests); SmbServer passes its own, configured one. */
export function durableTableOf(fs: FileService): DurableTable {
  let t = tables.get(fs);
  if (!t) tables.set(fs, (t = new DurableTable(fs)));
  return t;
}
