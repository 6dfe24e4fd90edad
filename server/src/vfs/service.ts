// The file service: one protocol-neutral API over shares. It owns handles, identity squashing,
// permission checks and the operations; the NFS and SMB engines call only this.
import type { Logger } from 'pino';
import type { BlockService } from '../blocks/service.js';
import { InodeMetaKind, NamesChangedError, type MetadataStore } from '../meta/store.js';
import { KeyedSerial } from '../keyed-serial.js';
import { AppendEndMoved, VfsError, expectedError } from './errors.js';
import { ChangeAction, ChangeFeed, ChangeFilter } from './changes.js';
import { ByteRangeLocks } from './locks/byte-range.js';
import { decodeHandle, encodeHandle, shareIdOf } from './handle.js';
import { Caching, type CacheHolder, OpenTable } from './locks/opens.js';
import { streamsFollow } from './streams.js';
import {
  Access,
  mayAccess,
  mayDeleteFromSticky,
  mayRead,
  mayWrite,
  inGroup,
  newOwner,
  S_ISGID,
  S_ISUID,
  S_ISVTX,
  S_IXGRP,
  privsDropped,
} from './permissions.js';
import type { AttrChanges, DirEntry, Identity, Inode, NewInode, Timespec } from './types.js';
import { compareTimespec, DOS_ATTRS_STORED, DosAttributes, FileType, LINK_MAX, NAME_MAX, nowTimespec, timespecEqual } from './types.js';

const NO_NAME = Buffer.alloc(0);

export interface ShareOptions {
  name: string;
  readOnly: boolean;
  rootSquash: boolean;
  anonymousUid: number;
  anonymousGid: number;
  rootMode: number;
  rootUid: number;
  rootGid: number;
}

export interface Share extends ShareOptions {
  id: number;
  meta: MetadataStore;
  data: BlockService;
  rootId: number;
}

export interface Resolved {
  share: Share;
  inode: Inode;
}

/** Attributes a client asks to set (NFS sattr3, SMB SET_INFO). "server" means set to now. */
export interface SetAttrs {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  atime?: Timespec | 'server';
  mtime?: Timespec | 'server';
  /** SMB: an explicit change time (NFS cannot set it: it is always "now"). */
  ctime?: Timespec;
  /** SMB: the creation time, and the DOS attributes (DOS_ATTRS_STORED bits; at creation too). */
  btime?: Timespec;
  dosAttrs?: number;
}

/** True when `attrs` asks to change nothing (every field absent or undefined). No array per call: SETATTR is hot. */
function setsNothing(attrs: SetAttrs): boolean {
  for (const k in attrs) if (attrs[k as keyof SetAttrs] !== undefined) return false;
  return true;
}

/** Reads of an append's end at most, when it moved before the data was logged (then JUKEBOX). */
const APPEND_ATTEMPTS = 8;

export const CreateMode = Object.freeze({ UNCHECKED: 0, GUARDED: 1, EXCLUSIVE: 2 } as const);
export type CreateMode = (typeof CreateMode)[keyof typeof CreateMode];

/** Result of an operation that changed a directory: its attributes before and after. */
export interface DirChange {
  dirBefore: Inode;
  dirAfter: Inode | null;
}

export interface ReaddirResult {
  dir: Inode;
  entries: DirEntry[];
  eof: boolean;
  /**
   * The caller may search the directory (x): only then may it be given the entries' handles and
   * attributes (READDIRPLUS), which LOOKUP would refuse it. Listing the names needs only r.
   */
  searchable: boolean;
}

/** A create whose name is taken, then free again by the time it is looked at, is tried this many times. */
const MAX_CREATE_ATTEMPTS = 4;
/** A rename or remove whose names change between the checks and the change is checked again this many times at most. */
const MAX_NAME_ATTEMPTS = 4;

/**
 * Runs `attempt` (look the names up, check the rights on what they hold, change them in the store
 * only if they still hold that) again while the store answers NamesChangedError, MAX_NAME_ATTEMPTS
 * times in all; then JUKEBOX, saying `why`.
 */
async function againWhileNamesChange<T>(why: string, attempt: () => Promise<T>): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (e) {
      if (!(e instanceof NamesChangedError)) throw e;
      if (n >= MAX_NAME_ATTEMPTS) throw new VfsError('JUKEBOX', why);
    }
  }
}
const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');

/**
 * How old a share's file count (FSSTAT) may be when it is answered: the count reads every inode
 * of the share (tens of milliseconds per 100,000 files, on the event loop for the embedded
 * engine), and `df`, kubelet's volume statistics and Explorer ask often. A count is answered for
 * at least USAGE_MIN_AGE_MS, and for USAGE_AGE_PER_COST times as long as it took (so counting
 * takes at most a fiftieth of the time however many files or clients); an older one is answered
 * at once while one count runs behind it. Tests may shorten it (FileServiceOptions).
 */
export const USAGE_MIN_AGE_MS = 2000;
const USAGE_AGE_PER_COST = 50;

/** A share's last file count, and the count under way. */
interface UsageCount {
  files: number;
  /** When it was counted (performance.now()), and how long counting took (ms). */
  at: number;
  tookMs: number;
  counting: Promise<number> | null;
}

export interface FileServiceOptions {
  /** USAGE_MIN_AGE_MS and USAGE_AGE_PER_COST by default. */
  usageMinAgeMs?: number;
  usageAgePerCost?: number;
  /** The clock of the counts' ages, in ms (tests); performance.now by default. */
  usageClock?: () => number;
}

export function checkName(name: Buffer, purpose: 'lookup' | 'create' | 'remove'): void {
  if (name.length === 0) throw new VfsError('INVAL', 'empty name');
  if (name.length > NAME_MAX) throw new VfsError('NAMETOOLONG', `name longer than ${NAME_MAX} bytes`);
  if (name.includes(0x2f) || name.includes(0)) throw new VfsError('INVAL', 'name contains "/" or NUL');
  if (purpose !== 'lookup' && (name.equals(DOT) || name.equals(DOTDOT))) {
    throw new VfsError(
      purpose === 'create' ? 'EXIST' : 'INVAL',
      `"${name.toString()}" cannot be ${purpose === 'create' ? 'created' : 'removed or renamed'}`,
    );
  }
}

/** A caller's permission on a share, as the control plane grants it. */
export type ShareLevel = 'none' | 'read' | 'read-write' | 'admin';
export type AccessPolicy = (shareName: string, id: Identity) => ShareLevel;
const canWrite = (l: ShareLevel): boolean => l === 'read-write' || l === 'admin';

export class FileService {
  private readonly byName = new Map<string, Share>();
  private readonly byId = new Map<number, Share>();
  private policy: AccessPolicy | null = null;
  /** Byte-range locks of every protocol (SMB LOCK now; NLM later), by file. */
  readonly byteRanges = new ByteRangeLocks();
  /** Directory change events (SMB CHANGE_NOTIFY), from the namespace operations of every protocol. */
  readonly changes: ChangeFeed;
  /** The lock manager's opens, share modes and caching holders (vfs/locks/opens.ts). */
  readonly opens: OpenTable;
  /**
   * Per metadata store and file: an append from reading the end of the file until its data is
   * logged and its size stored, and a truncate's cut and size. A truncate can then never happen
   * between the two, where it would leave the append writing at the end the file had before it.
   */
  private readonly ends = new WeakMap<MetadataStore, KeyedSerial<number>>();
  /** Per share: its last file count (fsstat). */
  private readonly usageCounts = new WeakMap<Share, UsageCount>();
  private readonly usageMinAgeMs: number;
  private readonly usageAgePerCost: number;
  private readonly usageClock: () => number;

  constructor(
    private readonly log?: Logger,
    opts: FileServiceOptions = {},
  ) {
    this.changes = new ChangeFeed(log);
    this.opens = new OpenTable({ log });
    this.usageMinAgeMs = opts.usageMinAgeMs ?? USAGE_MIN_AGE_MS;
    this.usageAgePerCost = opts.usageAgePerCost ?? USAGE_AGE_PER_COST;
    this.usageClock = opts.usageClock ?? (() => performance.now());
  }

  /** Publishes a namespace change when somebody watches the store (one Map lookup otherwise). */
  private changed(share: Share, dirId: number, name: Buffer, action: ChangeAction, inode: Inode, deleted = false): void {
    if (!this.changes.watching(share.meta)) return;
    const isDir = inode.type === FileType.DIR;
    this.changes.publish({
      store: share.meta,
      dirId,
      name: Buffer.from(name),
      action,
      filter: isDir ? ChangeFilter.DIR_NAME : ChangeFilter.FILE_NAME,
      inodeId: inode.id,
      isDir,
      deleted: deleted && isDir,
    });
  }

  async addShare(opts: ShareOptions, meta: MetadataStore, data: BlockService): Promise<Share> {
    const id = shareIdOf(opts.name);
    if (this.byId.has(id)) throw new Error(`share ${opts.name} already exists or collides with another share's id`);
    const now = nowTimespec();
    const root = await meta.ensureRoot(id, {
      type: FileType.DIR,
      mode: opts.rootMode,
      uid: opts.rootUid,
      gid: opts.rootGid,
      rdevMajor: 0,
      rdevMinor: 0,
      target: null,
      createVerifier: null,
      size: 4096,
      atime: now,
      mtime: now,
    });
    const share: Share = { ...opts, id, meta, data, rootId: root.id };
    this.byName.set(opts.name, share);
    this.byId.set(id, share);
    return share;
  }

  removeShare(name: string): Share | undefined {
    const s = this.byName.get(name);
    if (s) {
      this.byName.delete(name);
      this.byId.delete(s.id);
    }
    return s;
  }

  /** Changes a served share's settings in place; the next request sees them. */
  updateShare(name: string, opts: Pick<ShareOptions, 'readOnly' | 'rootSquash' | 'anonymousUid' | 'anonymousGid'>): void {
    const s = this.byName.get(name);
    if (!s) throw new Error(`share ${name} is not served`);
    s.readOnly = opts.readOnly;
    s.rootSquash = opts.rootSquash;
    s.anonymousUid = opts.anonymousUid;
    s.anonymousGid = opts.anonymousGid;
  }

  shares(): Share[] {
    return [...this.byName.values()];
  }

  share(name: string): Share | undefined {
    return this.byName.get(name);
  }

  handleOf(share: Share, inode: Inode): Buffer {
    return encodeHandle({ shareId: share.id, inodeId: inode.id, generation: inode.generation });
  }

  async root(share: Share): Promise<Inode> {
    const r = await share.meta.getInode(share.rootId);
    if (!r) throw new VfsError('STALE', 'share root is gone');
    return r;
  }

  /** Resolves a handle to its share and inode: BADHANDLE if malformed, STALE if gone. */
  async resolve(handle: Buffer): Promise<Resolved> {
    const p = decodeHandle(handle);
    const share = this.byId.get(p.shareId);
    if (!share) throw new VfsError('STALE', 'handle names an unknown share');
    const inode = await share.meta.getInode(p.inodeId);
    if (!inode || inode.generation !== p.generation || inode.shareId !== share.id)
      throw new VfsError('STALE', 'handle names a deleted file');
    return { share, inode };
  }

  /**
   * Who sets each caller's share permission (the control plane: user grant, else best group grant,
   * else the share's default). Without one, everyone may read and write (the config-only server).
   */
  setAccessPolicy(policy: AccessPolicy | null): void {
    this.policy = policy;
  }

  /** The caller's permission on the share, after root squash. */
  level(share: Share, id: Identity): ShareLevel {
    return this.policy ? this.policy(share.name, id) : 'read-write';
  }

  /**
   * Root squash, as Linux's nfsd does it: a client's root is not trusted with uid 0, nor with group
   * 0, which it can put in any AUTH_SYS credential (uid 1000, gid 0) to reach root's group's files.
   * A squashed identity squashes to itself: callers may squash once and pass the result on.
   * An anonymous caller (NFS AUTH_NONE) is the share's anonymous user, root squash or not, as
   * Linux's nfsd maps AUTH_NULL to the export's anonuid/anongid.
   */
  squash(share: Share, cred: Identity): Identity {
    if (cred.anonymous === true) return { uid: share.anonymousUid, gid: share.anonymousGid, gids: [] };
    if (!share.rootSquash) return cred;
    if (cred.uid === 0) return { uid: share.anonymousUid, gid: share.anonymousGid, gids: [] };
    if (cred.gid !== 0 && !cred.gids.includes(0)) return cred;
    const anon = share.anonymousGid;
    return { uid: cred.uid, gid: cred.gid === 0 ? anon : cred.gid, gids: cred.gids.map((g) => (g === 0 ? anon : g)) };
  }

  /** May this caller see anything of the share at all (a permission other than `none`)? */
  permitted(share: Share, cred: Identity): boolean {
    return !this.policy || this.level(share, this.squash(share, cred)) !== 'none';
  }

  /**
   * Applies root squash and refuses callers without any permission on the share. Every operation
   * on a handle calls it (or writer()) right after resolving the handle, before it looks at or
   * reports anything about the file: a `none` caller learns nothing, not even a file's type.
   */
  identity(share: Share, cred: Identity): Identity {
    const id = this.squash(share, cred);
    if (this.policy && this.level(share, id) === 'none') throw new VfsError('ACCES', `no permission on share ${share.name}`);
    return id;
  }

  /**
   * identity() for a change: the share must be writable and the caller must hold read-write, as
   * the share and the grants are now (SMB asks it too, for what it changes without the vfs: EAs,
   * the allocation size, stored DACLs, delete-pending). Throws ROFS or ACCES.
   */
  writer(share: Share, cred: Identity): Identity {
    const id = this.identity(share, cred);
    if (share.readOnly) throw new VfsError('ROFS', 'share is read-only');
    if (this.policy && !canWrite(this.level(share, id))) throw new VfsError('ACCES', `read-only permission on share ${share.name}`);
    return id;
  }

  private mustDir(inode: Inode): void {
    if (inode.type !== FileType.DIR) throw new VfsError('NOTDIR', 'not a directory');
  }

  private mustAccess(inode: Inode, id: Identity, want: number): void {
    if (!mayAccess(inode, id, want)) throw new VfsError('ACCES', 'permission denied');
  }

  /**
   * Several servers: `inode` as another server acknowledged it (what it acknowledged is stored
   * first, and the inode read afresh if it may have changed). Undefined when there is nothing to
   * do (one server, or this one holds the file's lease): no await on the READ path then.
   */
  private refreshed(share: Share, inode: Inode): Promise<Inode> | undefined {
    return share.data.ensureFresh(inode.id)?.then(async (stale) => (stale ? ((await share.meta.getInode(inode.id)) ?? inode) : inode));
  }

  /**
   * refreshed() for a caller that resolved the handle itself (SMB CREATE, QUERY_INFO, CLOSE): a
   * regular file as another server acknowledged it; undefined, and no promise, with one server or
   * while this one holds the file's lease (its hot paths pay nothing for several servers).
   */
  freshAttrs(share: Share, inode: Inode): Promise<Inode> | undefined {
    return inode.type === FileType.REG ? this.refreshed(share, inode) : undefined;
  }

  // ---- attributes --------------------------------------------------------------------------------

  /** A file's attributes (GETATTR, FSINFO, PATHCONF): any permission on the share but `none`. */
  async getattr(handle: Buffer, cred: Identity, breakWriteCaching = false): Promise<Resolved> {
    const r = await this.resolve(handle);
    this.identity(r.share, cred);
    // Several servers: the size and times another one acknowledged.
    const fresh = r.inode.type === FileType.REG ? this.refreshed(r.share, r.inode) : undefined;
    const got = fresh === undefined ? r : { share: r.share, inode: await fresh };
    // The size an NFS client reads up to: with SMB clients' written-back data (see read()).
    const back = breakWriteCaching && got.inode.type === FileType.REG ? this.writtenBack(handle, got.share, got.inode) : null;
    return back === null ? got : { share: got.share, inode: await back };
  }

  /**
   * For a reader without an open of its own (NFS): SMB clients' write caching of the file breaks
   * first (to read and handle caching), so that what they wrote and hold is written back; the
   * inode as it is then. Null, synchronously, when nobody holds any (one Map lookup and no
   * promise: GETATTR and READ are hot paths).
   */
  private writtenBack(handle: Buffer, share: Share, inode: Inode): Promise<Inode> | null {
    const breaking = this.opens.breakHolders(share.meta, inode.id, Caching.READ | Caching.HANDLE, null, Caching.WRITE);
    return breaking === null ? null : this.afterBreak(handle, share, breaking);
  }

  /**
   * The file once `breaking` is over: with what the holders wrote back on the break, here or
   * (several servers) through another server, which stores it first.
   */
  private async afterBreak(handle: Buffer, share: Share, breaking: Promise<unknown>): Promise<Inode> {
    await breaking;
    const inode = (await this.resolve(handle)).inode;
    const again = this.refreshed(share, inode);
    return again === undefined ? inode : await again;
  }

  /** NFS ACCESS: which of the requested bits (ACCESS3_*) the identity holds. */
  accessBits(share: Share, inode: Inode, cred: Identity): { read: boolean; write: boolean; exec: boolean } {
    const id = this.squash(share, cred);
    const ro = share.readOnly || !canWrite(this.level(share, id));
    return {
      read: mayAccess(inode, id, Access.R),
      write: !ro && mayAccess(inode, id, Access.W),
      exec: mayAccess(inode, id, Access.X),
    };
  }

  async setattr(
    handle: Buffer,
    cred: Identity,
    attrs: SetAttrs,
    guardCtime?: Timespec,
    /** The caller's own caching holder, not broken by its own change (SMB). */
    except: CacheHolder | null = null,
  ): Promise<{ before: Inode; after: Inode; share: Share }> {
    const resolved = await this.resolve(handle);
    const share = resolved.share;
    let inode = resolved.inode;
    const id = this.writer(share, cred);
    // Several servers: a size is compared with the one another server acknowledged (stored first,
    // as for a READ), not with what this server last saw: else a truncate to that older size would
    // be taken for no change, and the other server's writes past it would stay.
    const fresh = attrs.size !== undefined && inode.type === FileType.REG ? this.refreshed(share, inode) : undefined;
    if (fresh !== undefined) inode = await fresh;
    if (setsNothing(attrs)) {
      // Nothing to set: nothing changes, not even ctime or a pending EXCLUSIVE create's verifier
      // (as Linux's nfsd answers). Else anyone who may write the share could move the ctime of any
      // file, failing its owner's guarded SETATTRs.
      if (guardCtime && !timespecEqual(guardCtime, inode.ctime)) throw new VfsError('NOT_SYNC', 'ctime guard mismatch');
      return { before: inode, after: inode, share };
    }
    if (attrs.size !== undefined && inode.type === FileType.REG && mayWrite(inode, id)) {
      // Oplocks and leases caching this file's data break before its size is looked at (either
      // protocol); only dirty data (write caching) is waited for, as Windows (smbtorture
      // lease.breaking4). What the holders wrote back is the file this SETATTR changes: its pre-op
      // attributes (which an NFS client compares with what it cached) and the size it is compared
      // with (a truncate to the size the server saw before still cuts the written-back data).
      // Null, and no promise, when nobody caches the file.
      const breaking = this.opens.breakHolders(share.meta, inode.id, Caching.NONE, except, Caching.WRITE);
      if (breaking !== null) inode = await this.afterBreak(handle, share, breaking);
    }
    const isOwner = id.uid === inode.uid;
    const isRoot = id.uid === 0;
    const changes: AttrChanges = {};
    const now = nowTimespec();
    // An owner or group set to what it already is still asks for the right to set it (Linux's
    // chown_ok and chgrp_ok): else anyone who may write the share could move any file's ctime.
    if (attrs.uid !== undefined) {
      if (!isRoot && !(isOwner && attrs.uid === inode.uid)) throw new VfsError('PERM', 'only root may change a file owner');
      if (attrs.uid !== inode.uid) changes.uid = attrs.uid;
    }
    if (attrs.gid !== undefined) {
      if (!isRoot && !(isOwner && (attrs.gid === inode.gid || inGroup(id, attrs.gid))))
        throw new VfsError('PERM', 'only the owner may change the group, to one of their groups');
      if (attrs.gid !== inode.gid) changes.gid = attrs.gid;
    }
    const owned = changes.uid !== undefined || changes.gid !== undefined;
    if (attrs.mode !== undefined) {
      if (!isRoot && !isOwner) throw new VfsError('PERM', 'only the owner may change the mode');
      let mode = attrs.mode & 0o7777;
      // A non-root owner who is not in the file's group cannot set setgid (POSIX chmod).
      if (!isRoot && (mode & S_ISGID) !== 0 && !inGroup(id, changes.gid ?? inode.gid)) mode &= ~S_ISGID;
      // A mode set with a new owner or group loses the setuid bit, and the setgid bit of a setgid
      // program, as Linux's nfsd does it (nfsd_sanitize_attrs), root or not.
      if (owned && inode.type !== FileType.DIR) {
        mode &= ~S_ISUID;
        if ((mode & S_IXGRP) !== 0) mode &= ~S_ISGID;
      }
      changes.mode = mode;
    } else if (owned && inode.type !== FileType.DIR) {
      // A new owner or group of a non-directory drops setuid, and setgid as dropsSgid says: by
      // root too, as Linux does since 2.2.13 (chown(2)). A directory keeps both. Only those bits
      // are cleared, from the mode as it is when the change applies (see privsDropped).
      const drop = privsDropped(inode, id);
      if (drop !== 0) changes.clearMode = drop;
    }
    if (attrs.size !== undefined) {
      if (inode.type === FileType.DIR) throw new VfsError('ISDIR', 'cannot set the size of a directory');
      if (inode.type !== FileType.REG) throw new VfsError('INVAL', 'size applies to regular files only');
      if (!mayWrite(inode, id)) throw new VfsError('ACCES', 'permission denied');
      if (!Number.isSafeInteger(attrs.size) || attrs.size < 0) throw new VfsError('FBIG', 'size at or past 2^53 bytes');
      if (attrs.size !== inode.size) {
        changes.size = attrs.size;
        changes.mtime = now;
      }
    }
    for (const which of ['atime', 'mtime'] as const) {
      const t = attrs[which];
      if (t === undefined) continue;
      if (t === 'server') {
        if (!isOwner && !isRoot && !mayAccess(inode, id, Access.W)) throw new VfsError('ACCES', 'permission denied');
        changes[which] = now;
      } else {
        if (!isOwner && !isRoot) throw new VfsError('PERM', 'only the owner may set explicit times');
        changes[which] = t;
      }
    }
    if (attrs.btime !== undefined || attrs.dosAttrs !== undefined || attrs.ctime !== undefined) {
      // Windows lets whoever may write the file's attributes set these (FILE_WRITE_ATTRIBUTES);
      // here that is its owner, root or anyone who may write it.
      if (!isOwner && !isRoot && !mayWrite(inode, id)) throw new VfsError('PERM', 'only the owner or a writer may set attributes');
      if (attrs.btime !== undefined) changes.btime = attrs.btime;
      if (attrs.dosAttrs !== undefined) changes.dosAttrs = attrs.dosAttrs & DOS_ATTRS_STORED;
    }
    changes.ctime = attrs.ctime ?? now;
    changes.clearCreateVerifier = true;
    // Check the guard before any data is cut: a failed guarded SETATTR changes nothing.
    if (guardCtime && !timespecEqual(guardCtime, inode.ctime)) throw new VfsError('NOT_SYNC', 'ctime guard mismatch');
    const store = (): Promise<Inode> => share.meta.setAttr(inode.id, changes, guardCtime);
    let after: Inode;
    if (changes.size !== undefined) {
      // Broken above; again for a holder that got its caching while this SETATTR read the file.
      const breaking = this.opens.breakHolders(share.meta, inode.id, Caching.NONE, except, Caching.WRITE);
      if (breaking !== null) await breaking;
      // The size is stored while the truncate's WAL record is held (see BlockService.truncate);
      // never inside an append's window (ends).
      // Not behind a truncate of the file that waits for its metadata store: the client tries again
      // later (here when queued behind its hold of the end, else at the data's gate).
      const release = await this.endUnlessCutStalls(share, inode.id, this.endsOf(share.meta).acquire(inode.id));
      try {
        // Several servers: stored only while no newer lease has stored or cut the file's data.
        after = await share.data.truncate(inode.id, changes.size, (token) =>
          token === 0 ? store() : share.meta.setAttr(inode.id, { ...changes, leaseToken: token }, guardCtime),
        );
      } finally {
        release();
      }
    } else {
      after = await store();
    }
    // A ctime no newer than the file's (SMB's explicit or held ChangeTime): logged, so that replay
    // does not put back the newer times an earlier COMMIT logged (see BlockService.logTimes).
    if (attrs.ctime !== undefined && compareTimespec(attrs.ctime, inode.ctime) <= 0)
      share.data.logTimes(inode.id, 0, after.mtime, after.ctime, true);
    // A new owner, group or mode is its named streams' too (streams.ts). Also when asked for and
    // already the file's: the same chmod or chown sent again after the streams could not follow
    // (the store failed, or the server stopped, after the file's change) brings them along then.
    // (A setattr changes the owner, group or mode only when asked for one of them.)
    if (attrs.uid !== undefined || attrs.gid !== undefined || attrs.mode !== undefined) await streamsFollow(share, after);
    // New permission bits replace an NT DACL an SMB client stored (smb2/acl.ts): the mode is the truth again.
    // Looked for first (one read): putMeta is a transaction that waits for an fsync, and most files
    // (every one an NFS client chmods after CREATE, an untar's bulk) have no stored descriptor.
    if ((after.mode & 0o7777) !== (inode.mode & 0o7777) && (await share.meta.metaSizes([inode.id], InodeMetaKind.SECURITY)).size > 0)
      await share.meta.putMeta(inode.id, InodeMetaKind.SECURITY, [{ name: NO_NAME, value: null }], { count: 1, bytes: 0 });
    return { before: inode, after, share };
  }

  // ---- names -------------------------------------------------------------------------------------

  async lookup(dirHandle: Buffer, name: Buffer, cred: Identity): Promise<{ share: Share; dir: Inode; inode: Inode }> {
    const { share, inode: dir } = await this.resolve(dirHandle);
    const id = this.identity(share, cred);
    this.mustDir(dir);
    checkName(name, 'lookup');
    this.mustAccess(dir, id, Access.X);
    if (name.equals(DOT)) return { share, dir, inode: dir };
    if (name.equals(DOTDOT)) {
      const parentId = dir.id === share.rootId ? dir.id : dir.parent;
      const parent = await share.meta.getInode(parentId);
      if (!parent) throw new VfsError('STALE', 'parent directory is gone');
      return { share, dir, inode: parent };
    }
    const child = await share.meta.lookup(dir.id, name);
    if (!child) throw expectedError('NOENT', 'no such file or directory');
    return { share, dir, inode: child };
  }

  async readlink(handle: Buffer, cred: Identity): Promise<{ inode: Inode; target: Buffer }> {
    const { share, inode } = await this.resolve(handle);
    this.identity(share, cred);
    if (inode.type !== FileType.LNK || !inode.target) throw new VfsError('INVAL', 'not a symbolic link');
    return { inode, target: inode.target };
  }

  // ---- data --------------------------------------------------------------------------------------

  /** `target` (optional, at least `count` bytes) is where the data may be put (see BlockService.read). */
  async read(
    handle: Buffer,
    cred: Identity,
    offset: number,
    count: number,
    target?: Buffer,
    /**
     * A reader without an open of its own (NFS): write caching of SMB clients breaks first, so that
     * what they wrote and hold is written back and read (SMB readers met the holders at CREATE).
     */
    breakWriteCaching = false,
  ): Promise<{ inode: Inode; data: Buffer; eof: boolean }> {
    const resolved = await this.resolve(handle);
    const { share } = resolved;
    let { inode } = resolved;
    // Several servers: what another one acknowledged is stored first, and read afresh.
    const fresh = this.refreshed(share, inode);
    if (fresh !== undefined) inode = await fresh;
    const id = this.identity(share, cred);
    if (inode.type === FileType.DIR) throw new VfsError('ISDIR', 'is a directory');
    if (inode.type !== FileType.REG) throw new VfsError('INVAL', 'not a regular file');
    if (!mayRead(inode, id)) throw new VfsError('ACCES', 'permission denied');
    // Read and handle caching stay; the read waits for write caching to go, with what it held
    // written back, and sees the size that left it.
    const back = breakWriteCaching ? this.writtenBack(handle, share, inode) : null;
    if (back !== null) inode = await back;
    const data = await share.data.read(inode.id, offset, count, inode.size, target);
    return { inode, data, eof: offset + data.length >= inode.size };
  }

  // Not async: the hot path of every NFS and SMB WRITE gets writeData's promise itself, not one
  // more wrapped around it (an async function returning a promise adds two and two ticks).
  write(
    handle: Buffer,
    cred: Identity,
    offset: number,
    data: Buffer,
    stable: boolean,
    except: CacheHolder | null = null,
    /** Byte-range locks of others refuse the write (ACCES): an NFS WRITE passes its owner token. */
    lockOwner: object | null = null,
  ): Promise<{ before: Inode; after: Inode }> {
    return this.writeData(handle, cred, offset, data, stable, except, lockOwner);
  }

  /**
   * An append (SMB WRITE at offset 0xFFFFFFFFFFFFFFFF): `data` written at the end of the file as
   * it is once other opens' write caching is broken and, with several servers, once this server
   * holds the file's write lease (the last writer's size is then stored and read afresh; the data
   * is refused with JUKEBOX if the lease moves before it is logged). `at(offset, inode)` runs with
   * the end found and the file as it is then, before anything is written: the caller's byte-range
   * lock check (and what goes after it, with no read of the file more). Appends of one file, and its
   * truncates, run one at a time on this server from the end's read to the size stored (ends); a
   * caller that wants its appends in arrival order queues them itself (SMB does).
   */
  async append(
    handle: Buffer,
    cred: Identity,
    data: Buffer,
    stable: boolean,
    except: CacheHolder | null,
    at: (offset: number, inode: Inode) => void | Promise<void>,
  ): Promise<{ before: Inode; after: Inode }> {
    return this.writeData(handle, cred, at, data, stable, except, null);
  }

  /**
   * The hold of a file's end (`took`, queued behind another), or JUKEBOX once a truncate of the
   * file in progress waits for its metadata store: a truncate or append queued behind it before
   * that was known would otherwise wait for the whole outage. The hold, when it comes, is let go.
   */
  private async endUnlessCutStalls(share: Share, inodeId: number, took: Promise<() => void>): Promise<() => void> {
    const stalled = share.data.cutStalled(inodeId);
    if (stalled === undefined) return took;
    const release = await Promise.race([took, stalled.then(() => null)]);
    if (release !== null) return release;
    void took.then((r) => r());
    throw new VfsError('JUKEBOX', "the file's truncate waits for the metadata store; try again later");
  }

  private endsOf(meta: MetadataStore): KeyedSerial<number> {
    let serial = this.ends.get(meta);
    if (serial === undefined) this.ends.set(meta, (serial = new KeyedSerial<number>()));
    return serial;
  }

  private async writeData(
    handle: Buffer,
    cred: Identity,
    where: number | ((offset: number, inode: Inode) => void | Promise<void>),
    data: Buffer,
    stable: boolean,
    except: CacheHolder | null,
    lockOwner: object | null,
  ): Promise<{ before: Inode; after: Inode }> {
    const resolved = await this.resolve(handle);
    const { share } = resolved;
    let { inode } = resolved;
    const id = this.writer(share, cred);
    if (inode.type === FileType.DIR) throw new VfsError('ISDIR', 'is a directory');
    if (inode.type !== FileType.REG) throw new VfsError('INVAL', 'not a regular file');
    if (!mayWrite(inode, id)) throw new VfsError('ACCES', 'permission denied');
    // A write of no bytes succeeds and changes nothing: not the size (even at an offset past the
    // end), not the times, not the setuid bits (POSIX write(): "no other results"; Linux returns 0
    // before it looks at the offset; MS-FSA 2.1.5.3 for SMB). Nothing to make durable either.
    if (data.length === 0) {
      if (typeof where !== 'number') await where(inode.size, inode);
      return { before: inode, after: inode };
    }
    let offset = typeof where === 'number' ? where : inode.size;
    // An offset at or past 2^53 arrives as Infinity (see the NFS decoder): FBIG too.
    if (offset + data.length > Number.MAX_SAFE_INTEGER) throw new VfsError('FBIG', 'file too large');
    if (lockOwner !== null && this.byteRanges.ioConflict(share.meta, inode.id, lockOwner, offset, data.length, true))
      throw new VfsError('ACCES', 'the range is locked by an SMB client');
    const remote = lockOwner === null ? null : this.byteRanges.remoteIoConflict(share.meta, inode.id, offset, data.length, true);
    if (remote !== null && (await remote)) throw new VfsError('ACCES', 'the range is locked by an SMB client of another server');
    // Oplocks and leases of other opens break before the data changes (null: nobody holds any).
    const breaking = this.opens.breakHolders(share.meta, inode.id, Caching.NONE, except);
    // What the holders wrote back on the break is the file before this write (the reply's pre-op
    // attributes, which an NFS client compares with what it cached).
    if (breaking) inode = await this.afterBreak(handle, share, breaking);
    let underToken: number | undefined;
    // An append holds the file's end from reading it until its size is stored (no truncate here
    // in between; appends run one at a time).
    const took = typeof where === 'number' ? null : this.endsOf(share.meta).acquireNow(inode.id);
    const release = took === null || typeof took === 'function' ? took : await this.endUnlessCutStalls(share, inode.id, took);
    try {
      // One pass for a write at an offset; an append whose end moved before its data was logged
      // (AppendEndMoved: nothing logged) reads the end again, a few times at most.
      for (let attempt = 0; ; attempt++) {
        if (typeof where !== 'number') {
          // The end as the last writer left it: with several servers, once the lease is this server's.
          const t = share.data.writeToken(inode.id);
          underToken = t === 0 ? 0 : await t;
          inode = (await this.resolve(handle)).inode;
          offset = inode.size;
          if (offset + data.length > Number.MAX_SAFE_INTEGER) throw new VfsError('FBIG', 'file too large');
          await where(offset, inode);
        }
        const now = nowTimespec();
        const changes: AttrChanges = { growTo: offset + data.length, mtime: now, ctime: now };
        // A write by anyone but root drops setuid, and setgid of a setgid program (a locking mark
        // stays, for a writer in the group): Linux's file_remove_privs.
        if (id.uid !== 0) {
          const drop = privsDropped(inode, id);
          if (drop !== 0) changes.clearMode = drop;
        }
        // The WAL append and the attribute update run side by side (the reply needs both); the WAL
        // carries the size too, so replay restores it whichever finished first before a crash. The
        // update starts when the data is appended, past a truncate in progress (a size stored before
        // the truncate's would be cut by it while the data lands after it); a write refused before
        // that (no WAL room in time: JUKEBOX or NOSPC) leaves the size alone. The data write is waited
        // for first, failed or not: until it settles it may still read `data`, whose buffer the caller
        // reuses once this returns.
        const update: { attrs?: Promise<Inode> } = {};
        const ino = inode;
        try {
          await share.data.write(
            ino.id,
            offset,
            data,
            (token) => {
              // Under a lease, its token goes with the size: a truncate of an older lease that lands
              // later is refused even before this write's blocks are stored.
              update.attrs = share.meta.setAttr(ino.id, token > 0 ? { ...changes, sizeToken: token } : changes);
              // Its failure is read below, once the data write settled: not an unhandled rejection
              // (which ends the process) if it comes first.
              update.attrs.catch(() => undefined);
            },
            underToken,
          );
        } catch (e) {
          // Nothing logged, no size taken: an append reads its end again.
          if (e instanceof AppendEndMoved && attempt < APPEND_ATTEMPTS - 1) continue;
          throw e;
        }
        // A write that settled was admitted (BlockService.write).
        const after = await update.attrs!;
        release?.();
        if (stable) await this.sync(share, inode.id);
        return { before: inode, after };
      }
    } finally {
      release?.();
    }
  }

  /**
   * Makes a file's written data and its size and times durable (COMMIT, FILE_SYNC, DATA_SYNC).
   * The size and times the writes left pending in the cache go to the WAL when they can
   * (RECORD_TIMES): then one fsync of the log makes them durable, and the metadata store only needs
   * what it answered before (often nothing) rather than a change and a sync of its own.
   */
  private async sync(share: Share, inodeId: number): Promise<void> {
    const p = share.meta.pendingTimes?.(inodeId);
    const logged = p !== undefined && share.data.logTimes(inodeId, p.growTo, p.mtime, p.ctime);
    await Promise.all([share.data.commit(inodeId), share.meta.flushAttrs?.(inodeId, logged)]);
  }

  /**
   * NFS COMMIT: allowed where a WRITE of the file is (Linux's nfsd opens the file for writing), so
   * that a reader, or a caller of a read-only share, cannot make the server fsync at will.
   */
  async commit(handle: Buffer, cred: Identity): Promise<Inode> {
    const { share, inode } = await this.resolve(handle);
    const id = this.writer(share, cred);
    if (inode.type === FileType.REG) {
      if (!mayWrite(inode, id)) throw new VfsError('ACCES', 'permission denied');
      await this.sync(share, inode.id);
    }
    return inode;
  }

  /**
   * SMB FLUSH: the durability of COMMIT for an open that was granted write access when it was
   * made (the caller checks that, MS-SMB2 3.3.5.11), whatever the file's mode is now.
   */
  async flush(handle: Buffer, cred: Identity): Promise<Inode> {
    const { share, inode } = await this.resolve(handle);
    const id = this.identity(share, cred);
    if (inode.type === FileType.REG) await this.sync(share, inode.id);
    // A directory's FLUSH (an open that may add to it) makes its entries durable: the names made,
    // removed and renamed in it. The embedded engine answers those before its fsync (meta/sql/
    // sqlite.ts, sync: commit); its sync covers every change answered before it. Nothing was
    // synced for a directory before, so a client's FlushFileBuffers of one vouched for nothing.
    // Only for a caller who may write the directory now: SMB grants FILE_ADD_FILE on a directory
    // open without judging it (each add is checked here), so a reader's FLUSH would otherwise make
    // the server fsync at will, which COMMIT refuses to readers; he has made nothing in it to vouch for.
    else if (mayWrite(inode, id)) await share.meta.flushAttrs?.(inode.id);
    return inode;
  }

  // ---- creation ----------------------------------------------------------------------------------

  /**
   * Checks a directory for adding `name`. In a directory the caller may search but not write, a
   * name that exists is EXIST, not ACCES: Linux's may_create looks at the name before the
   * directory's write permission, and so answers knfsd. With `takenOk` (CREATE UNCHECKED and
   * EXCLUSIVE, which knfsd answers from the existing file) the file is returned as `taken` instead.
   */
  private async prepareCreate(
    dirHandle: Buffer,
    name: Buffer,
    cred: Identity,
    takenOk = false,
  ): Promise<{ share: Share; dir: Inode; id: Identity; taken: Inode | null }> {
    const { share, inode: dir } = await this.resolve(dirHandle);
    const id = this.writer(share, cred);
    this.mustDir(dir);
    checkName(name, 'create');
    if (!mayAccess(dir, id, Access.W | Access.X)) {
      // Only a caller who could LOOKUP the name (search permission) learns that it exists.
      this.mustAccess(dir, id, Access.X);
      const taken = await share.meta.lookup(dir.id, name);
      if (!taken) throw new VfsError('ACCES', 'permission denied');
      if (!takenOk) throw expectedError('EXIST', 'file exists');
      return { share, dir, id, taken };
    }
    return { share, dir, id, taken: null };
  }

  /**
   * New inode attributes: owner from the caller, group from a setgid directory or the caller.
   * `attrs` (CREATE, MKDIR) may name the owner (root only) and the group (root, or one of the
   * caller's groups), and the DOS attributes.
   */
  private newInode(dir: Inode, id: Identity, type: FileType, mode: number, extra: Partial<NewInode> = {}, attrs?: SetAttrs): NewInode {
    const sgidDir = (dir.mode & S_ISGID) !== 0;
    let m = mode & 0o7777;
    if (type === FileType.DIR && sgidDir) m |= S_ISGID;
    const init: NewInode = {
      type,
      mode: m,
      ...newOwner(dir, id, attrs),
      rdevMajor: 0,
      rdevMinor: 0,
      target: null,
      createVerifier: null,
      size: type === FileType.DIR ? 4096 : 0,
      // What Windows gives a new file: ARCHIVE ("changed since the last backup").
      dosAttrs: type === FileType.DIR ? 0 : DosAttributes.ARCHIVE,
      ...extra,
    };
    if (attrs?.dosAttrs !== undefined) init.dosAttrs = attrs.dosAttrs & DOS_ATTRS_STORED;
    // Linux's mode_strip_sgid (CVE-2018-13405): a setgid program may be made only for a group the
    // caller is in (or by root). A file in a setgid directory takes the directory's group, which
    // need not be one of the caller's: the bit asked for is dropped then. A directory keeps it (it
    // is what passes the group on), and so does a file without group execute (a locking mark).
    if (type !== FileType.DIR && (init.mode & (S_ISGID | S_IXGRP)) === (S_ISGID | S_IXGRP) && id.uid !== 0 && !inGroup(id, init.gid))
      init.mode &= ~S_ISGID;
    return init;
  }

  /**
   * The store's create, and the directory after it: as the store's change left it where the store
   * tells (no read for the reply's post-op attributes: while other clients' changes run at once the
   * cache may not hold the directory, and each reply would cost a query), else read.
   */
  private static async makeIn(
    share: Share,
    dirId: number,
    name: Buffer,
    init: NewInode,
  ): Promise<{ inode: Inode; dirAfter: Inode | null }> {
    if (!share.meta.createIn) {
      const inode = await share.meta.create(dirId, name, init, nowTimespec());
      return { inode, dirAfter: await share.meta.getInode(dirId) };
    }
    const r = await share.meta.createIn(dirId, name, init, nowTimespec());
    return { inode: r.inode, dirAfter: r.dir ?? (await share.meta.getInode(dirId)) };
  }

  async create(
    dirHandle: Buffer,
    name: Buffer,
    cred: Identity,
    how: CreateMode,
    attrs: SetAttrs,
    verifier: Buffer | null,
    attempt = 0,
  ): Promise<DirChange & { share: Share; inode: Inode }> {
    const { share, dir, id, taken } = await this.prepareCreate(dirHandle, name, cred, how !== CreateMode.GUARDED);
    // The name is usually free (an untar, a build): create first, and look at what holds the name
    // only when it is taken, rather than a lookup before every create.
    if (taken === null) {
      const init = this.newInode(
        dir,
        id,
        FileType.REG,
        attrs.mode ?? 0o644,
        { createVerifier: how === CreateMode.EXCLUSIVE && verifier ? Buffer.from(verifier) : null },
        attrs,
      );
      try {
        const { inode, dirAfter } = await FileService.makeIn(share, dir.id, name, init);
        this.changed(share, dir.id, name, ChangeAction.ADDED, inode);
        return { share, inode, dirBefore: dir, dirAfter };
      } catch (e) {
        if (!(e instanceof VfsError && e.errno === 'EXIST') || how === CreateMode.GUARDED) throw e;
      }
    }
    const existing = taken ?? (await share.meta.lookup(dir.id, name));
    if (!existing) {
      // Removed again since the create failed: try once more, a bounded number of times.
      if (attempt + 1 >= MAX_CREATE_ATTEMPTS) throw new VfsError('JUKEBOX', 'the name keeps appearing and disappearing; try again');
      return this.create(dirHandle, name, cred, how, attrs, verifier, attempt + 1);
    }
    if (how === CreateMode.EXCLUSIVE) {
      // A retransmitted exclusive create with the same verifier succeeds (RFC 1813 §3.3.8).
      if (existing.createVerifier && verifier && existing.createVerifier.equals(verifier)) {
        return { share, inode: existing, dirBefore: dir, dirAfter: dir };
      }
      throw new VfsError('EXIST', 'file exists');
    }
    if (existing.type !== FileType.REG) throw new VfsError(existing.type === FileType.DIR ? 'ISDIR' : 'EXIST', 'not a regular file');
    // UNCHECKED on an existing file: apply the size (truncate) like open(O_CREAT|O_TRUNC).
    let inode = existing;
    if (attrs.size !== undefined) {
      const r = await this.setattr(this.handleOf(share, existing), cred, { size: attrs.size });
      inode = r.after;
    }
    return { share, inode, dirBefore: dir, dirAfter: await share.meta.getInode(dir.id) };
  }

  async mkdir(dirHandle: Buffer, name: Buffer, cred: Identity, attrs: SetAttrs): Promise<DirChange & { share: Share; inode: Inode }> {
    const { share, dir, id } = await this.prepareCreate(dirHandle, name, cred);
    const init = this.newInode(dir, id, FileType.DIR, attrs.mode ?? 0o755, {}, attrs);
    const { inode, dirAfter } = await FileService.makeIn(share, dir.id, name, init);
    this.changed(share, dir.id, name, ChangeAction.ADDED, inode);
    return { share, inode, dirBefore: dir, dirAfter };
  }

  async symlink(
    dirHandle: Buffer,
    name: Buffer,
    cred: Identity,
    target: Buffer,
    attrs: SetAttrs,
  ): Promise<DirChange & { share: Share; inode: Inode }> {
    const { share, dir, id } = await this.prepareCreate(dirHandle, name, cred);
    if (target.length === 0) throw new VfsError('INVAL', 'empty symlink target');
    // A NUL would end the path early for whoever reads it (Linux's nfsd refuses it too).
    if (target.includes(0)) throw new VfsError('INVAL', 'symlink target contains a NUL byte');
    if (target.length > 4096) throw new VfsError('NAMETOOLONG', 'symlink target longer than 4096 bytes');
    const init = this.newInode(dir, id, FileType.LNK, attrs.mode ?? 0o777, { target: Buffer.from(target), size: target.length });
    const { inode, dirAfter } = await FileService.makeIn(share, dir.id, name, init);
    this.changed(share, dir.id, name, ChangeAction.ADDED, inode);
    return { share, inode, dirBefore: dir, dirAfter };
  }

  async mknod(
    dirHandle: Buffer,
    name: Buffer,
    cred: Identity,
    type: FileType,
    attrs: SetAttrs,
    rdev: { major: number; minor: number },
  ): Promise<DirChange & { share: Share; inode: Inode }> {
    const { share, dir, id } = await this.prepareCreate(dirHandle, name, cred);
    if ((type === FileType.BLK || type === FileType.CHR) && id.uid !== 0) throw new VfsError('PERM', 'only root may create device files');
    const init = this.newInode(dir, id, type, attrs.mode ?? 0o644, { rdevMajor: rdev.major, rdevMinor: rdev.minor });
    const { inode, dirAfter } = await FileService.makeIn(share, dir.id, name, init);
    this.changed(share, dir.id, name, ChangeAction.ADDED, inode);
    return { share, inode, dirBefore: dir, dirAfter };
  }

  async link(handle: Buffer, dirHandle: Buffer, name: Buffer, cred: Identity): Promise<DirChange & { inode: Inode }> {
    const target = await this.resolve(handle);
    this.identity(target.share, cred);
    const { share, dir } = await this.prepareCreate(dirHandle, name, cred);
    if (target.share.id !== share.id) throw new VfsError('XDEV', 'cannot link across shares');
    if (target.inode.type === FileType.DIR) throw new VfsError('ISDIR', 'cannot hard-link a directory');
    // The limit PATHCONF advertises, enforced as Linux's vfs_link does (EMLINK, NFS3ERR_MLINK).
    if (target.inode.nlink >= LINK_MAX) throw new VfsError('MLINK', `a file has at most ${LINK_MAX} links`);
    const inode = await share.meta.link(target.inode.id, dir.id, name, nowTimespec());
    this.changed(share, dir.id, name, ChangeAction.ADDED, inode);
    return { inode, dirBefore: dir, dirAfter: await share.meta.getInode(dir.id) };
  }

  // ---- removal and rename ------------------------------------------------------------------------

  /** `shareModes`: refused (ACCES) while an SMB open does not share delete access (NFS REMOVE). */
  async remove(
    dirHandle: Buffer,
    name: Buffer,
    cred: Identity,
    isDir: boolean,
    except: CacheHolder | null = null,
    shareModes = false,
    /** Only this file (an SMB open's, whose name may have gone to another file since): else NOENT. */
    fileId?: number,
  ): Promise<DirChange> {
    const { share, inode: dir } = await this.resolve(dirHandle);
    const id = this.writer(share, cred);
    this.mustDir(dir);
    checkName(name, 'remove');
    this.mustAccess(dir, id, Access.W | Access.X);
    // Outside a sticky directory, with no file of the store open, nothing here needs the file:
    // the store finds it (or answers NOENT) in its own transaction, one lookup fewer per REMOVE.
    // Else the store removes it only if the name still holds the file checked here.
    const lookFirst = (dir.mode & S_ISVTX) !== 0 || this.opens.mayHaveOpens(share.meta) || fileId !== undefined;
    const { r, mark } = await againWhileNamesChange('the name keeps changing; try again', async () => {
      let expect: number | undefined;
      if (lookFirst) {
        const child = await share.meta.lookup(dir.id, name);
        if (!child || (fileId !== undefined && child.id !== fileId)) throw expectedError('NOENT', 'no such file or directory');
        // EPERM, not EACCES, as Linux's may_delete answers it (NFS3ERR_PERM; SMB: ACCESS_DENIED either way).
        if (!mayDeleteFromSticky(dir, child, id)) throw new VfsError('PERM', 'sticky directory: not the owner');
        await this.opens.breakHolders(share.meta, child.id, Caching.NONE, except);
        if (shareModes && (await this.opens.refusesDeleteShared(share.meta, child.id)))
          throw new VfsError('ACCES', 'open by an SMB client that does not share delete');
        expect = child.id;
      }
      const putsBefore = share.data.putMark();
      return { r: await share.meta.remove(dir.id, name, isDir, nowTimespec(), expect), mark: putsBefore };
    });
    this.changed(share, dir.id, name, ChangeAction.REMOVED, r.inode, true);
    // The file's data is freed in the background: the removal is made, and a crash before the
    // blocks are gone leaves them to garbage collection (BlockService.freeInBackground).
    if (r.freed && r.inode.type === FileType.REG) await share.data.freeInBackground(r.inode.id, r.noBlocks === true ? mark : undefined);
    for (const s of r.streams) await share.data.freeInBackground(s);
    return { dirBefore: dir, dirAfter: r.dir ?? (await share.meta.getInode(dir.id)) };
  }

  async rename(
    fromHandle: Buffer,
    fromName: Buffer,
    toHandle: Buffer,
    toName: Buffer,
    cred: Identity,
    except: CacheHolder | null = null,
    /** Refused (ACCES) while an SMB open of either file does not share delete access (NFS RENAME). */
    shareModes = false,
    /** Only this file (an SMB open's, whose name may have gone to another file since): else NOENT. */
    movingId?: number,
  ): Promise<{ from: DirChange; to: DirChange }> {
    const a = await this.resolve(fromHandle);
    const share = a.share;
    const id = this.writer(share, cred);
    const b = await this.resolve(toHandle);
    if (b.share.id !== share.id) throw new VfsError('XDEV', 'cannot rename across shares');
    this.mustDir(a.inode);
    this.mustDir(b.inode);
    checkName(fromName, 'remove');
    checkName(toName, 'remove');
    this.mustAccess(a.inode, id, Access.W | Access.X);
    this.mustAccess(b.inode, id, Access.W | Access.X);
    // The rights are checked on the files the names hold now; the store moves them only if the names
    // still hold those (a concurrent rename may have put another user's directory under a name since,
    // which this caller may not move), else they are looked up and checked again.
    const { moving, linksOfOne, r } = await againWhileNamesChange('the names keep changing; try again', async () => {
      const moving = await share.meta.lookup(a.inode.id, fromName);
      if (!moving || (movingId !== undefined && moving.id !== movingId)) throw new VfsError('NOENT', 'no such file or directory');
      if (!mayDeleteFromSticky(a.inode, moving, id)) throw new VfsError('PERM', 'sticky directory: not the owner');
      const victim = await share.meta.lookup(b.inode.id, toName);
      if (victim && victim.id !== moving.id && !mayDeleteFromSticky(b.inode, victim, id))
        throw new VfsError('PERM', 'sticky directory: not the owner');
      // Moving a directory to another parent rewrites its ".." entry, which needs write permission
      // on it. Whether the target lies inside the directory (INVAL) is the store's to decide, in the
      // transaction that moves it: a check made here could be overtaken by a concurrent move.
      if (moving.type === FileType.DIR && a.inode.id !== b.inode.id && id.uid !== 0) this.mustAccess(moving, id, Access.W);
      // Handle caching of the renamed file breaks; a replaced file loses all its caching.
      await this.opens.breakHolders(share.meta, moving.id, Caching.READ | Caching.WRITE, except);
      if (victim && victim.id !== moving.id) await this.opens.breakHolders(share.meta, victim.id, Caching.NONE, except);
      if (
        shareModes &&
        ((await this.opens.refusesDeleteShared(share.meta, moving.id)) ||
          (victim && victim.id !== moving.id && (await this.opens.refusesDeleteShared(share.meta, victim.id))))
      )
        throw new VfsError('ACCES', 'open by an SMB client that does not share delete');
      const expect = { moving: moving.id, victim: victim?.id ?? null };
      // Two links of one file: the store changes nothing (POSIX), and no open moves.
      const linksOfOne = victim?.id === moving.id;
      return { moving, linksOfOne, r: await share.meta.rename(a.inode.id, fromName, b.inode.id, toName, nowTimespec(), expect) };
    });
    if (a.inode.id === b.inode.id) {
      this.changed(share, a.inode.id, fromName, ChangeAction.RENAMED_OLD_NAME, moving);
      this.changed(share, b.inode.id, toName, ChangeAction.RENAMED_NEW_NAME, moving);
    } else {
      this.changed(share, a.inode.id, fromName, ChangeAction.REMOVED, moving);
      this.changed(share, b.inode.id, toName, ChangeAction.ADDED, moving);
    }
    // The opens of the file (of files beneath a directory) follow it, whichever protocol renamed it.
    if (!linksOfOne)
      await this.opens.renamed(share.meta, {
        fromDir: this.handleOf(share, a.inode),
        fromName,
        toDir: this.handleOf(share, b.inode),
        toName,
        inodeId: moving.id,
        isDir: moving.type === FileType.DIR,
      });
    if (r.replaced?.freed && r.replaced.inode.type === FileType.REG) await share.data.free(r.replaced.inode.id);
    for (const s of r.replaced?.streams ?? []) await share.data.free(s);
    const fromAfter = await share.meta.getInode(a.inode.id);
    const toAfter = a.inode.id === b.inode.id ? fromAfter : await share.meta.getInode(b.inode.id);
    return { from: { dirBefore: a.inode, dirAfter: fromAfter }, to: { dirBefore: b.inode, dirAfter: toAfter } };
  }

  // ---- directories -------------------------------------------------------------------------------

  async readdir(dirHandle: Buffer, cred: Identity, afterCookie: number, limit: number): Promise<ReaddirResult & { share: Share }> {
    const { share, inode: dir } = await this.resolve(dirHandle);
    const id = this.identity(share, cred);
    this.mustDir(dir);
    this.mustAccess(dir, id, Access.R);
    const page = await share.meta.readdir(dir.id, afterCookie, limit);
    const searchable = mayAccess(dir, id, Access.X);
    let entries = page.entries;
    // Several servers: a file another one grew or changed under its write lease has its size and
    // times written behind there; stored first and read again, as for a GETATTR (one Redis MGET a
    // page, and a flush only for files written elsewhere). Names alone need none of it.
    if (searchable && share.data.coordinated) {
      const regs = entries.filter((e) => e.inode.type === FileType.REG).map((e) => e.inode.id);
      const stale = regs.length === 0 ? [] : await share.data.ensureFreshMany(regs);
      if (stale && stale.length > 0) {
        const again = new Map<number, Inode>();
        for (const inode of await Promise.all(stale.map((i) => share.meta.getInode(i)))) if (inode) again.set(inode.id, inode);
        entries = entries.map((e) => {
          const inode = again.get(e.inode.id);
          return inode ? { ...e, inode } : e;
        });
      }
    }
    return { share, dir, entries, eof: page.eof, searchable };
  }

  async parentOf(share: Share, dir: Inode): Promise<Inode> {
    if (dir.id === share.rootId) return dir;
    return (await share.meta.getInode(dir.parent)) ?? dir;
  }

  /**
   * The share's space and (with `withFiles`, NFS FSSTAT) its file count, which may be a few seconds
   * old (USAGE_MIN_AGE_MS). SMB's volume queries need no count.
   */
  async fsstat(
    handle: Buffer,
    cred: Identity,
    withFiles = true,
  ): Promise<{ inode: Inode; totalBytes: number; freeBytes: number; files: number }> {
    const { share, inode } = await this.resolve(handle);
    this.identity(share, cred);
    const [cap, files] = await Promise.all([share.data.capacity(), withFiles ? this.filesIn(share) : 0]);
    return { inode, totalBytes: cap.totalBytes, freeBytes: cap.freeBytes, files };
  }

  /** The share's file count: the last one while fresh enough, else counted again (one count at a time). */
  private filesIn(share: Share): number | Promise<number> {
    let u = this.usageCounts.get(share);
    if (!u) this.usageCounts.set(share, (u = { files: -1, at: -Infinity, tookMs: 0, counting: null }));
    if (this.usageClock() - u.at < Math.max(this.usageMinAgeMs, u.tookMs * this.usageAgePerCost)) return u.files;
    if (u.counting === null) {
      const counting = this.count(share, u);
      u.counting = counting;
      // A count nobody waits for (an older one was answered) must not fail unhandled: count() logs it.
      counting.catch(() => {});
    }
    return u.files >= 0 ? u.files : u.counting;
  }

  private async count(share: Share, u: UsageCount): Promise<number> {
    const t0 = this.usageClock();
    try {
      const { files } = await share.meta.usage(share.id);
      u.files = files;
      u.at = this.usageClock();
      u.tookMs = u.at - t0;
      return files;
    } catch (err) {
      this.log?.warn({ err, share: share.name }, 'counting the files of a share failed');
      // With an old count to answer, the next try waits as a fresh count would: a store that keeps
      // failing is not asked (nor its failure logged) once per FSSTAT.
      if (u.files >= 0) u.at = this.usageClock();
      throw err;
    } finally {
      u.counting = null;
    }
  }

  async close(): Promise<void> {
    for (const s of this.byName.values()) await s.data.close();
    this.log?.debug('file service closed');
  }
}
