// Durable handles: an open that outlives its connection (MS-SMB2 3.3.5.9.6 DHnQ and 3.3.5.9.7
// DHnC, version 1; 3.3.5.9.10 DH2Q and 3.3.5.9.12 DH2C, version 2, SMB 3.x only; 3.3.5.6 and
// 3.3.7.1 what LOGOFF and a lost connection do to a durable open, 3.3.2.2 the Durable Open
// Scavenger Timer). An open granted with a batch oplock or a lease with handle caching
// may be made durable. When its session or connection goes away (not a TREE_DISCONNECT), it is
// preserved: it stays in the lock manager with its share modes, byte-range locks and oplock or
// lease, but without a connection. The same user reconnecting (DHnC naming its FileId; DH2C naming
// its FileId and the CreateGuid its DH2Q gave) gets the very same open back, position and locks
// included. Anything that needs it to break its caching (another open, an NFS write, remove or
// rename) closes it instead, since no break can reach it; so does its timer. A close of a
// preserved open is a CLOSE: locks go, delete-on-close runs.
// The table is bounded: in all and per user; an open past a cap is closed at disconnect.
// Persistent handles (SMB2_DHANDLE_FLAG_PERSISTENT) are never granted: no share is continuously
// available, so a v2 open asking for one gets a durable one.
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
import { Tally } from '../tally.js';

/** MS-SMB2 3.3.2.2 (<217>: Windows keeps a v1 durable handle 16 minutes). */
export const DEFAULT_DURABLE_TIMEOUT_MS = 16 * 60_000;
/** Preserved opens in the whole server at most. */
export const DEFAULT_MAX_PRESERVED = 4096;

/**
 * The longest a v2 open is kept: 300 s, where Windows Server caps the Timeout a DH2Q asks for
 * (smbtorture durable-v2-open checks it; smbd does the same). Asked for more, or for 0 (the
 * server's choice: durable_handle_timeout) with a longer durable_handle_timeout, the open is kept
 * 300 s, and the response says so.
 */
export const MAX_DURABLE_V2_TIMEOUT_MS = 300_000;

/** Create context names (MS-SMB2 2.2.13.2). */
const DHNQ = 'DHnQ';
const DHNC = 'DHnC';
/**
 * Version 2 (SMB 3.x only). At 2.x a DH2Q is ignored, and a reconnect named DH2C is taken as DHnC
 * (its FileId comes first), as smbd does.
 */
const DH2Q = 'DH2Q';
const DH2C = 'DH2C';
/** MS-SMB2 2.2.13.2.11: Timeout, Flags, Reserved (8), CreateGuid (16). */
const DH2Q_BYTES = 32;
/** MS-SMB2 2.2.13.2.12: FileId (16), CreateGuid (16), Flags. */
const DH2C_BYTES = 36;
const NO_CREATE_GUID = Buffer.alloc(16);

/** What a DH2Q asks: MS-SMB2 Open.DurableOpenTimeout (ms, 0: the server's choice) and Open.CreateGuid. */
export interface DurableV2Request {
  readonly timeoutMs: number;
  readonly createGuid: Buffer;
}

/**
 * MS-SMB2 3.3.5.9.10: the DH2Q of a CREATE at 3.x, checked before the open is executed (null
 * without one, or at 2.x, where it is ignored). Beside a DHnQ it is refused.
 */
export function durableV2Request(req: CreateRequest, smb3: boolean): DurableV2Request | null {
  if (!smb3) return null;
  const ctx = req.contexts.find((c) => c.name === DH2Q);
  if (!ctx) return null;
  if (req.contexts.some((c) => c.name === DHNQ)) throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'DH2Q with DHnQ');
  if (ctx.data.length < DH2Q_BYTES) throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'DH2Q context shorter than 32 bytes');
  return { timeoutMs: ctx.data.readUInt32LE(0), createGuid: Buffer.from(ctx.data.subarray(16, 32)) };
}

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
 * MS-SMB2 3.3.5.9.6 and 3.3.5.9.10: after a successful open, is it made durable (v1: the CREATE
 * had a DHnQ; v2: `v2`, from durableV2Request)? Only with a batch oplock or a lease holding
 * handle caching, never for a directory or a stream. Returns the response context. A v2 open
 * keeps the Timeout asked (0: `defaultTimeoutMs`, the server's durable_handle_timeout), at most
 * MAX_DURABLE_V2_TIMEOUT_MS, and answers what it keeps.
 */
export function grantDurable(
  req: CreateRequest,
  open: Open,
  oplockLevel: number,
  v2: DurableV2Request | null = null,
  defaultTimeoutMs = DEFAULT_DURABLE_TIMEOUT_MS,
): CreateContext | null {
  if (v2 === null && !req.contexts.some((c) => c.name === DHNQ)) return null;
  if (open.isDir || open.stream) return null;
  const handle =
    oplockLevel === OplockLevel.BATCH ||
    (oplockLevel === OplockLevel.LEASE && open.lease !== null && (open.lease.state & Caching.HANDLE) !== 0);
  if (!handle) return null;
  open.durable = true;
  // 2.2.14.2.3: 8 reserved bytes.
  if (v2 === null) return { name: DHNQ, data: Buffer.alloc(8) };
  const timeoutMs = Math.min(v2.timeoutMs === 0 ? defaultTimeoutMs : v2.timeoutMs, MAX_DURABLE_V2_TIMEOUT_MS);
  open.createGuid = v2.createGuid;
  open.durableTimeoutMs = timeoutMs;
  // 2.2.14.2.12: Timeout, Flags (never SMB2_DHANDLE_FLAG_PERSISTENT).
  const data = Buffer.alloc(8);
  data.writeUInt32LE(timeoutMs, 0);
  return { name: DH2Q, data };
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
  private readonly perUser = new Tally<string>();
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
    const mine = this.perUser.get(user);
    if (this.byId.size >= this.maxPreserved || mine >= this.maxPerUser) {
      this.log?.info({ user, preserved: this.byId.size }, 'durable open not preserved: too many preserved opens');
      return false;
    }
    open.notify = null;
    const timer = setTimeout(() => void this.expire(open), open.durableTimeoutMs ?? this.timeoutMs);
    // A preserved open is not work in flight: it must not keep the process alive.
    timer.unref();
    this.byId.set(open.id, { open, user, timer });
    this.perUser.add(user);
    open.expire = () => this.expire(open);
    this.log?.info(
      { user, path: open.path, timeoutMs: open.durableTimeoutMs ?? this.timeoutMs, v2: open.createGuid !== null },
      'durable open preserved',
    );
    return true;
  }

  /** Takes an open out of the table (reconnected or closing); undefined when it is not there. */
  private take(id: number): Preserved | undefined {
    const p = this.byId.get(id);
    if (!p) return undefined;
    this.byId.delete(id);
    clearTimeout(p.timer);
    this.perUser.add(p.user, -1);
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
   * MS-SMB2 3.3.5.9.7 and 3.3.5.9.12: a CREATE with DHnC, or at 3.x DH2C. No path validation and
   * no open execution: the other fields of the request are ignored. Answers the open's current
   * oplock level or lease. A DH2C must name the open's CreateGuid (a v1 open has none); a DHnC
   * may reconnect a v2 open too (as Windows: smbtorture durable-v2-open.reopen2b).
   */
  async reconnect(c: FileContext, req: CreateRequest, w: SmbWriter, register: (o: Open) => void): Promise<Open> {
    const has = (name: string) => req.contexts.some((x) => x.name === name);
    if (has(DH2Q)) throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'durable reconnect with DH2Q');
    const v2 = c.smb3 === true && has(DH2C);
    if (v2 && (has(DHNC) || has(DHNQ))) throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'DH2C with a version 1 durable context');
    // isReconnect found a DHnC or a DH2C; at 2.x a DH2C alone is read as a DHnC (a FileId first).
    const name = v2 || !has(DHNC) ? DH2C : DHNC;
    const ctx = req.contexts.find((x) => x.name === name)!;
    const need = v2 ? DH2C_BYTES : 16;
    if (ctx.data.length < need) throw new SmbStatusError(NtStatus.INVALID_PARAMETER, `${name} context shorter than ${need} bytes`);
    const hi = ctx.data.readUInt32LE(4);
    const id = hi * 2 ** 32 + ctx.data.readUInt32LE(0);
    const p = this.byId.get(id);
    if (!p) throw new SmbStatusError(NtStatus.OBJECT_NAME_NOT_FOUND, 'no preserved durable open with that FileId');
    const open = p.open;
    // A v1 open's CreateGuid is all zeros: a DH2C naming none reconnects it, as Windows and smbd
    // (smbtorture durable-open.reopen2-lease at 3.x); one naming a GUID does not (durable-v2-open.reopen2c).
    if (v2 && !(open.createGuid ?? NO_CREATE_GUID).equals(ctx.data.subarray(16, 32)))
      throw new SmbStatusError(NtStatus.OBJECT_NAME_NOT_FOUND, 'DH2C names another CreateGuid');
    // The lease context names the lease, whatever RequestedOplockLevel says (smbtorture sends 0).
    const want = c.caching?.leasing ? leaseRequestOf({ ...req, requestedOplockLevel: OplockLevel.LEASE }) : null;
    if (open.lease) {
      // A lease belongs to one client (its ClientGuid) and is named by its key. It is also the
      // open's user's (leaseIdOf: only a named user's open is preserved, and it joined only a lease
      // of its user), so the user check below covers it: the reconnected session, of that user,
      // finds the very lease under its key again, for its further opens and acknowledgments.
      if (open.lease.clientGuid !== c.caching?.clientGuid.toString('hex') || !want || !want.key.equals(open.lease.key))
        throw new SmbStatusError(NtStatus.OBJECT_NAME_NOT_FOUND, 'durable reconnect without the open lease');
      const name = fromUtf16(req.name, 'CREATE name').replace(/^\\+/, '');
      // The name the file has now, or the one its client knows (a rename made through NFS, say,
      // while it was away: the client still names the file it has cached writes for as it opened it).
      const known = name.toLowerCase();
      if (known !== open.path.toLowerCase() && known !== open.clientPath.toLowerCase())
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
