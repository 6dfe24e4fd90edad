// The lock manager's table of opens per file (DESIGN.md "The SMB engine": one lock manager in vfs/).
// Every open of either protocol that asks for share modes or caching is registered here, across
// connections and sessions of the whole server: share access is checked at open (MS-FSA 2.1.5.1.2),
// delete-pending is a property of the file, and caching holders (SMB oplocks and leases) are asked
// to break before another open, a write, a truncate, a remove or a rename changes what they cache.
// The table knows no wire format: a holder is anything that can be told to drop caching bits.
import type { MetadataStore } from '../../meta/store.js';
import type { ClusterLocks } from './cluster.js';
import { isVfsError } from '../errors.js';
import type { Logger } from 'pino';
import { Tally } from '../../tally.js';
import { KeyedLogLimiter, LogLimiter } from '../../obs/log-limiter.js';

/** MS-SMB2 2.2.13.1 / MS-DTYP 2.4.3 access bits that take part in share-mode checks. */
export const AccessBits = Object.freeze({
  READ_DATA: 0x00000001,
  WRITE_DATA: 0x00000002,
  APPEND_DATA: 0x00000004,
  EXECUTE: 0x00000020,
  DELETE: 0x00010000,
} as const);

/** MS-SMB2 2.2.13 ShareAccess. */
export const ShareAccess = Object.freeze({ READ: 1, WRITE: 2, DELETE: 4 } as const);

/** MS-SMB2 2.2.13.2.8 lease state bits, also the caching an oplock level stands for. */
export const Caching = Object.freeze({ NONE: 0, READ: 1, HANDLE: 2, WRITE: 4 } as const);

const READISH = AccessBits.READ_DATA | AccessBits.EXECUTE;
const WRITEISH = AccessBits.WRITE_DATA | AccessBits.APPEND_DATA;
/** An open with none of these bits takes part in no sharing check. */
export const SHARING_ACCESS = READISH | WRITEISH | AccessBits.DELETE;
/** FILE_READ_ATTRIBUTES, FILE_WRITE_ATTRIBUTES, READ_CONTROL, SYNCHRONIZE: an open with nothing else is a "stat open". */
const STAT_ACCESS = 0x00000080 | 0x00000100 | 0x00020000 | 0x00100000;
/** A stat open breaks no caching and does not keep others from being granted it. */
export const isStatOpen = (access: number): boolean => (access & ~STAT_ACCESS) === 0;

/**
 * Something holding caching on a file (an oplock on one open, or a lease shared by opens).
 * `breakTo` must not throw; it resolves once the holder acknowledged, was released, or timed out.
 */
export interface CacheHolder {
  /** The caching bits held now (Caching.*). */
  readonly caching: number;
  /**
   * Asks the holder to keep at most `keep` bits; the promise settles when the break is over, or
   * as soon as none of the bits in `wait` (default: all) that it gives up is still held.
   */
  breakTo(keep: number, wait?: number): Promise<void>;
}

export interface OpenRecord {
  readonly file: FileOpens;
  /** Granted access (MS-FSA Open.GrantedAccess) and share access (Open.SharingMode). */
  readonly access: number;
  readonly shareAccess: number;
  /** MS-FSA Open.DeleteOnClose: the file becomes delete-pending when this open closes. */
  deleteOnClose: boolean;
  /** The caching this open holds through, or null. Several opens may share one holder (a lease). */
  holder: CacheHolder | null;
  /** Whatever the protocol engine needs to find its open (the SMB Open). */
  readonly owner: unknown;
  /** Whose share of the table it takes (OpenTableOptions.maxOpensPerUser), or null: counted in the total only. */
  readonly user: string | null;
}

export class FileOpens {
  readonly opens = new Set<OpenRecord>();
  /** MS-FSA File.PendingDelete: new opens fail with DELETE_PENDING; the last close removes the file. */
  deletePending = false;
  /** Opens with a caching holder (the no-holder path of a write is one Map lookup and this test). */
  holders = 0;
  constructor(
    readonly table: OpenTable,
    readonly meta: MetadataStore,
    readonly inodeId: number,
  ) {}
}

/**
 * Why an open or a change was refused (the engine maps it to its status). too-many-opens: the
 * whole table is full; user-opens-full: the user's share of it (OpenTableOptions.maxOpensPerUser).
 */
export type OpenRefusal = 'sharing-violation' | 'delete-pending' | 'too-many-opens' | 'user-opens-full';

/**
 * A rename this server made, through either protocol, of a file or directory that may have opens:
 * an engine whose opens name their file by parent and name (SMB: delete on close, rename, name
 * queries) makes them follow it, as Windows handles follow their file.
 */
export interface RenameEvent {
  readonly fromDir: Buffer;
  readonly fromName: Buffer;
  readonly toDir: Buffer;
  readonly toName: Buffer;
  readonly inodeId: number;
  readonly isDir: boolean;
}

/** Told of every rename of a store with opens on this server (OpenTable.followRenames). */
export type RenameFollower = (meta: MetadataStore, e: RenameEvent) => Promise<void>;

export class OpenTableError extends Error {
  readonly code: string;
  constructor(readonly reason: OpenRefusal) {
    super(reason);
    this.code = `DITTOFS_OPEN_${reason.toUpperCase().replace(/-/g, '_')}`;
  }
}

export interface OpenTableOptions {
  /** Opens in the whole table at most (default 65536). */
  maxOpens?: number;
  /** Opens of one user at most (default a quarter of maxOpens): one user cannot take the table from the others. */
  maxOpensPerUser?: number;
  /** Where a refusal for a full table or a full share is logged (rate-limited), for the admin. */
  log?: Logger;
}

/** The config key of maxOpensPerUser, named in the refusal's log line. */
const PER_USER_SETTING = 'adapters.smb.max_opens_per_user';

/**
 * Users whose refusals (user-opens-full) are rate-limited apart, at most: past that the one
 * refused least recently is forgotten (a few hundred bytes each, whatever stream of users comes).
 */
export const USER_FULL_LOG_USERS = 256;

/** MS-FSA 2.1.5.1.2.1: does a new open with `access`/`share` conflict with an existing one? */
export function sharingConflict(access: number, share: number, existing: { access: number; shareAccess: number }): boolean {
  if ((access & SHARING_ACCESS) === 0 || (existing.access & SHARING_ACCESS) === 0) return false;
  if ((access & READISH) !== 0 && (existing.shareAccess & ShareAccess.READ) === 0) return true;
  if ((access & WRITEISH) !== 0 && (existing.shareAccess & ShareAccess.WRITE) === 0) return true;
  if ((access & AccessBits.DELETE) !== 0 && (existing.shareAccess & ShareAccess.DELETE) === 0) return true;
  if ((existing.access & READISH) !== 0 && (share & ShareAccess.READ) === 0) return true;
  if ((existing.access & WRITEISH) !== 0 && (share & ShareAccess.WRITE) === 0) return true;
  if ((existing.access & AccessBits.DELETE) !== 0 && (share & ShareAccess.DELETE) === 0) return true;
  return false;
}

export class OpenTable {
  /** Per metadata store (shares may share one), per inode id. */
  private readonly files = new Map<MetadataStore, Map<number, FileOpens>>();
  private count = 0;
  private readonly maxOpens: number;
  /** Opens of one user at most (OpenTableOptions.maxOpensPerUser); a change applies to the next open. */
  maxOpensPerUser: number;
  private readonly perUser = new Tally<string>();
  /**
   * One limiter per kind: a user at its share, again and again, does not hide a full table; and
   * one per user for the shares: nor another user's refusals.
   */
  private readonly tableFullLog: LogLimiter;
  private readonly userFullLog: KeyedLogLimiter;
  /** The other servers' opens of shared stores (coord/locks.ts), or null: this server alone. */
  private cluster: ClusterLocks | null = null;
  private readonly followers = new Set<RenameFollower>();
  /** Per store: the last rename its opens are following (renamed). */
  private readonly following = new Map<MetadataStore, Promise<void>>();
  private readonly log: Logger | undefined;

  constructor(opts: OpenTableOptions = {}) {
    this.maxOpens = opts.maxOpens ?? 65536;
    this.maxOpensPerUser = opts.maxOpensPerUser ?? Math.ceil(this.maxOpens / 4);
    this.tableFullLog = new LogLimiter(opts.log, 'warn', 5, 60_000);
    this.userFullLog = new KeyedLogLimiter(opts.log, 'warn', 5, 60_000, USER_FULL_LOG_USERS, 'user');
    this.log = opts.log;
  }

  /** Registers an engine's rename follower; the function returned unregisters it. */
  followRenames(f: RenameFollower): () => void {
    this.followers.add(f);
    return () => this.followers.delete(f);
  }

  /**
   * After a rename in `meta` (the vfs calls it once the store moved the name): each follower makes
   * its opens follow. Nothing to do (no call) while the store has no open here. A follower's
   * failure is logged, not thrown: the rename is made and answered as made.
   */
  async renamed(meta: MetadataStore, e: RenameEvent): Promise<void> {
    if (!this.files.get(meta)?.size) return;
    // One rename at a time per store, in the order they were made: a follower finds the opens by
    // the name they had, so a rename of the name the previous one gave (made while that one still
    // looked paths up in the store) must wait until the opens carry that name.
    const mine = (this.following.get(meta) ?? Promise.resolve()).then(() => this.follow(meta, e));
    this.following.set(meta, mine);
    try {
      await mine;
    } finally {
      if (this.following.get(meta) === mine) this.following.delete(meta);
    }
  }

  private async follow(meta: MetadataStore, e: RenameEvent): Promise<void> {
    for (const f of this.followers) {
      try {
        await f(meta, e);
      } catch (err) {
        this.log?.warn({ err, inode: e.inodeId }, 'the opens of a renamed file could not follow it');
      }
    }
  }

  get size(): number {
    return this.count;
  }

  /** The opens of a file, or undefined when it has none (no allocation). */
  get(meta: MetadataStore, inodeId: number): FileOpens | undefined {
    return this.files.get(meta)?.get(inodeId);
  }

  /** Every open of files of one metadata store (directory renames look for opens beneath). */
  *opensOf(meta: MetadataStore): Generator<OpenRecord> {
    const byInode = this.files.get(meta);
    if (!byInode) return;
    for (const f of byInode.values()) yield* f.opens;
  }

  /** The first open of `file` (other than `except`) whose share modes refuse `access`/`share`. */
  conflicting(file: FileOpens | undefined, access: number, share: number, except?: OpenRecord): OpenRecord | null {
    if (!file) return null;
    for (const o of file.opens) if (o !== except && sharingConflict(access, share, o)) return o;
    return null;
  }

  /** Opens counted under a user (OpenRecord.user). */
  opensOfUser(user: string): number {
    return this.perUser.get(user);
  }

  /**
   * Registers an open after the share check (MS-FSA 2.1.5.1.2), counted under `user` when given.
   * Throws OpenTableError (delete-pending, sharing-violation, too-many-opens: the table is full,
   * user-opens-full: the user's share of it is) and registers nothing then.
   */
  add(meta: MetadataStore, inodeId: number, access: number, shareAccess: number, owner: unknown, user: string | null = null): OpenRecord {
    let byInode = this.files.get(meta);
    let file = byInode?.get(inodeId);
    if (file?.deletePending) throw new OpenTableError('delete-pending');
    if (this.conflicting(file, access, shareAccess)) throw new OpenTableError('sharing-violation');
    if (this.count >= this.maxOpens) {
      this.tableFullLog.log({ opens: this.count, limit: this.maxOpens }, "open refused: the server's open table is full");
      throw new OpenTableError('too-many-opens');
    }
    if (user !== null && this.perUser.get(user) >= this.maxOpensPerUser) {
      this.userFullLog.log(
        user,
        { user, opens: this.perUser.get(user), limit: this.maxOpensPerUser, setting: PER_USER_SETTING },
        'open refused: the user holds as many opens as one user may',
      );
      throw new OpenTableError('user-opens-full');
    }
    if (!byInode) this.files.set(meta, (byInode = new Map<number, FileOpens>()));
    if (!file) byInode.set(inodeId, (file = new FileOpens(this, meta, inodeId)));
    const rec: OpenRecord = { file, access, shareAccess, deleteOnClose: false, holder: null, owner, user };
    file.opens.add(rec);
    this.count++;
    if (user !== null) this.perUser.add(user);
    return rec;
  }

  /** Shares the opens of the stores `cluster` shares; the other servers' break requests reach the holders here. */
  attachCluster(cluster: ClusterLocks): void {
    this.cluster = cluster;
    cluster.onBreakRequest(async (store, inodeId, keep) => {
      const meta = store as MetadataStore;
      await this.breakLocal(meta, inodeId, keep, null);
      const file = this.get(meta, inodeId);
      return file !== undefined && file.holders > 0 && this.holdersAbove(file, Caching.NONE).length > 0;
    });
  }

  /**
   * Whether the open's file is delete-pending, set through this server or another (what
   * FileStandardInformation reports). One Redis round trip when the store is shared.
   */
  async deletePendingShared(rec: OpenRecord): Promise<boolean> {
    if (rec.file.deletePending) return true;
    const cluster = this.shared(rec.file.meta);
    return cluster !== null && cluster.isDeletePending(rec.file.meta, rec.file.inodeId);
  }

  /**
   * Before an open that asks for caching is granted any: the other servers learn that this server's
   * clients may cache the file. False when they cannot (the cluster state is unreachable): the open
   * is then granted without caching, which is always allowed, instead of failing.
   */
  async mayCache(rec: OpenRecord): Promise<boolean> {
    const cluster = this.shared(rec.file.meta);
    if (cluster === null) return true;
    try {
      await cluster.announceCaching(rec.file.meta, rec.file.inodeId);
      return true;
    } catch (e) {
      if (isVfsError(e) && e.errno === 'JUKEBOX') return false;
      throw e;
    }
  }

  /**
   * Before caching is granted: has another server the file open (MS-FSA: an oplock beside another
   * open is Level II at most)? False at once (no await) when the store is not shared; JUKEBOX
   * when Redis cannot tell.
   */
  cachingSharedElsewhere(rec: OpenRecord): false | Promise<boolean> {
    const cluster = this.shared(rec.file.meta);
    return cluster === null ? false : cluster.anyOpenElsewhere(rec.file.meta, rec.file.inodeId);
  }

  /** Breaks the other servers' caching of the file down to `keep`; null (no cost) when none is known. */
  breakRemote(meta: MetadataStore, inodeId: number, keep: number, onWait?: () => void): Promise<void> | null {
    return this.cluster === null ? null : this.cluster.breakRemote(meta, inodeId, keep, onWait);
  }

  /** Is the store's state shared with other servers? */
  private shared(meta: MetadataStore): ClusterLocks | null {
    const c = this.cluster;
    return c !== null && c.shares(meta) ? c : null;
  }

  /**
   * add(), then checked against the other servers' opens when the store is shared (a refusal
   * throws OpenTableError, an unreachable cluster state VfsError JUKEBOX; nothing stays registered).
   */
  async addShared(
    meta: MetadataStore,
    inodeId: number,
    access: number,
    shareAccess: number,
    owner: unknown,
    user: string | null = null,
  ): Promise<OpenRecord> {
    const rec = this.add(meta, inodeId, access, shareAccess, owner, user);
    const cluster = this.shared(meta);
    if (cluster === null) return rec;
    let outcome;
    try {
      outcome = await cluster.addOpen(meta, inodeId, rec, access, shareAccess);
    } catch (e) {
      this.release(rec);
      throw e;
    }
    if (outcome === 'ok') return rec;
    this.release(rec);
    throw new OpenTableError(outcome);
  }

  /** release(), and for a shared store: true only when the file's last open on any server closed delete-pending. */
  async releaseShared(rec: OpenRecord): Promise<boolean> {
    const file = rec.file;
    if (!file.opens.has(rec)) return false;
    const pending = rec.deleteOnClose || file.deletePending;
    const last = this.release(rec);
    const cluster = this.shared(file.meta);
    if (cluster === null) return last;
    if (file.opens.size === 0) cluster.cachingGone(file.meta, file.inodeId);
    return cluster.releaseOpen(file.meta, file.inodeId, rec, pending);
  }

  /** MS-FSA File.PendingDelete, for every server when the store is shared (set there first). */
  async setDeletePending(file: FileOpens, pending: boolean): Promise<void> {
    const cluster = this.shared(file.meta);
    if (cluster !== null) await cluster.setDeletePending(file.meta, file.inodeId, pending);
    file.deletePending = pending;
  }

  /** refusesDelete() over the opens of every server that shares the store. */
  async refusesDeleteShared(meta: MetadataStore, inodeId: number): Promise<boolean> {
    if (this.refusesDelete(meta, inodeId)) return true;
    const cluster = this.shared(meta);
    return (
      cluster !== null &&
      cluster.remoteConflict(meta, inodeId, AccessBits.DELETE, ShareAccess.READ | ShareAccess.WRITE | ShareAccess.DELETE)
    );
  }

  /** Has another server an open with data or delete access of the file (a rename must not replace it)? */
  async openElsewhere(meta: MetadataStore, inodeId: number): Promise<boolean> {
    const cluster = this.shared(meta);
    return cluster !== null && cluster.remoteConflict(meta, inodeId, AccessBits.DELETE, 0);
  }

  /**
   * Has another server an open of the directory that refuses a rename of a file in it: one with
   * DELETE access, or one that does not share delete (oplock.ts checkRename, on this server)?
   */
  async dirRefusesRenameElsewhere(meta: MetadataStore, dirId: number): Promise<boolean> {
    const cluster = this.shared(meta);
    return cluster !== null && cluster.remoteConflict(meta, dirId, AccessBits.DELETE, ShareAccess.READ | ShareAccess.WRITE);
  }

  /** Gives an open a caching holder (or takes it away). */
  setHolder(rec: OpenRecord, holder: CacheHolder | null): void {
    if (!rec.file.opens.has(rec)) return;
    if (rec.holder === null && holder !== null) rec.file.holders++;
    else if (rec.holder !== null && holder === null) rec.file.holders--;
    rec.holder = holder;
  }

  /**
   * Removes an open. Returns true when the file must now be removed: it was (or became, by this
   * open's delete-on-close) delete-pending and this was its last open.
   */
  release(rec: OpenRecord): boolean {
    const file = rec.file;
    if (!file.opens.delete(rec)) return false;
    this.count--;
    if (rec.user !== null) this.perUser.add(rec.user, -1);
    if (rec.holder !== null) file.holders--;
    if (rec.deleteOnClose) file.deletePending = true;
    if (file.opens.size > 0) return false;
    const byInode = this.files.get(file.meta);
    byInode?.delete(file.inodeId);
    if (byInode?.size === 0) this.files.delete(file.meta);
    return file.deletePending;
  }

  /**
   * Could any file of this store be open (here, or, with several servers, on another one)? False
   * lets a removal skip the checks of the file's opens, and the lookup that finds the file for them.
   */
  mayHaveOpens(meta: MetadataStore): boolean {
    return this.cluster !== null || this.files.has(meta);
  }

  /**
   * Does an open of the file refuse its deletion or rename by a client that has no open of its own
   * (an NFS REMOVE or RENAME)? As a Windows server with NFS does: an open with data or delete
   * access that does not share delete (MS-FSA 2.1.5.1.2, the check an open for DELETE would meet).
   */
  refusesDelete(meta: MetadataStore, inodeId: number): boolean {
    const file = this.files.get(meta)?.get(inodeId);
    return (
      file !== undefined && this.conflicting(file, AccessBits.DELETE, ShareAccess.READ | ShareAccess.WRITE | ShareAccess.DELETE) !== null
    );
  }

  /** The distinct holders of a file other than `except`, that hold more than `keep` allows. */
  holdersAbove(file: FileOpens, keep: number, except: CacheHolder | null = null): CacheHolder[] {
    const out: CacheHolder[] = [];
    for (const o of file.opens) {
      const h = o.holder;
      if (h === null || h === except || (h.caching & ~keep) === 0 || out.includes(h)) continue;
      out.push(h);
    }
    return out;
  }

  /**
   * Breaks every holder of a file (but `except`) down to `keep` and waits for the breaks. Returns
   * null without allocating when nothing needs breaking: the path every NFS WRITE takes.
   */
  breakHolders(
    meta: MetadataStore,
    inodeId: number,
    keep: number,
    except: CacheHolder | null = null,
    /** The bits given up that the caller waits for (a data change needs only write caching gone). */
    wait?: number,
  ): Promise<void> | null {
    const local = this.breakLocal(meta, inodeId, keep, except, wait);
    // Several servers: the other servers' clients too (null unless one is known to cache the file).
    const remote = this.cluster === null ? null : this.cluster.breakRemote(meta, inodeId, keep);
    if (remote === null) return local;
    return local === null ? remote : Promise.all([local, remote]).then(() => undefined);
  }

  /** breakHolders() of this server's holders alone. */
  private breakLocal(meta: MetadataStore, inodeId: number, keep: number, except: CacheHolder | null, wait?: number): Promise<void> | null {
    const file = this.files.get(meta)?.get(inodeId);
    if (file === undefined || file.holders === 0) return null;
    const victims = this.holdersAbove(file, keep, except);
    if (victims.length === 0) return null;
    return Promise.all(victims.map((h) => h.breakTo(h.caching & keep, wait))).then(() => undefined);
  }
}
