// The MetadataStore contract. Every engine (memory, embedded, postgres) implements it and passes the
// shared conformance suite. Each mutating call is atomic: it either applies completely or not at
// all, and it reports constraint violations as VfsError (EXIST, NOENT, NOTEMPTY, NOTDIR, ISDIR).
// Permission checks are the caller's (vfs) business; structural invariants are the store's.
import type { AttrChanges, DirEntry, Inode, NewInode, Timespec } from '../vfs/types.js';

/** One immutable block object of a file. */
export interface BlockRef {
  index: number;
  key: string;
  /** Valid bytes in the object (<= block size). */
  length: number;
  version: number;
}

/**
 * The condition of a block switch (compare-and-swap): the row must still be at `prevVersion` (0: no
 * row), and neither the row nor a truncate of the file may have been written under a fencing token
 * newer than `token` (the write lease the new version was written under; 0 without coordination).
 */
export interface BlockSwitch {
  prevVersion: number;
  token: number;
  /** Where the file's data held by the new block ends (its byte offset in the file), if known. */
  end?: number;
}

/** A block switch refused: the row moved on (`stale` false: build on the new row and try again) or a newer lease wrote it (`stale` true: never). */
export class BlockConflictError extends Error {
  override readonly name = 'BlockConflictError';
  readonly code = 'DITTOFS_BLOCK_CONFLICT';
  constructor(
    message: string,
    readonly stale: boolean,
  ) {
    super(message);
  }
}

/**
 * What the caller of a rename checked its rights against: the inodes the source and destination
 * names held then (victim null: the destination name was free).
 */
export interface RenameExpect {
  moving: number;
  victim: number | null;
}

/**
 * A rename or remove refused because a name no longer holds the inode its caller checked
 * (RenameExpect, remove's `expect`): the rights checked on it may not hold for what the name holds
 * now (look again, check again).
 */
export class NamesChangedError extends Error {
  override readonly name = 'NamesChangedError';
  constructor() {
    super('a name holds another file than the one checked');
  }
}

/** A create's result: the new inode, and the directory as changed where the store has it at no extra cost. */
export interface CreateResult {
  inode: Inode;
  dir?: Inode;
}

export interface RemoveResult {
  /** The unlinked inode after its link count was decremented. */
  inode: Inode;
  /** True when the last link went away: the caller frees its data. */
  freed: boolean;
  /** Named streams removed with the freed inode (their inode ids, ascending): the caller frees their data too. */
  streams: number[];
  /** The directory's attributes after the change, where the store has them at no extra cost. */
  dir?: Inode;
  /** True when the freed inode had no blocks at its removal: nothing to free but what is in flight. */
  noBlocks?: boolean;
}

/** A named stream of a file (MS-FSCC 2.4.43): its name and the inode holding its data. */
export interface StreamEntry {
  name: Buffer;
  inode: Inode;
}

/** Most named streams one file may hold (a bound on what one client can make the store keep per file). */
export const MAX_STREAMS_PER_FILE = 256;

/**
 * Per-inode records that one protocol edge interprets and the store only keeps (migration 5):
 * SMB extended attributes (one record per EA name), a stored security descriptor and a client-set
 * allocation size (one record each, empty name), the flags of the EAs that have any (one record
 * per such EA name). Freed with their inode.
 */
export const InodeMetaKind = Object.freeze({ EA: 1, SECURITY: 2, ALLOCATION: 3, EA_FLAGS: 4 } as const);
export type InodeMetaKind = (typeof InodeMetaKind)[keyof typeof InodeMetaKind];

export interface InodeMetaRecord {
  name: Buffer;
  value: Buffer;
}

/** A record's size in a packed list: an 8-byte header, the name, a NUL, the value, padded to 4. */
export const metaRecordSize = (nameLength: number, valueLength: number): number => (9 + nameLength + valueLength + 3) & ~3;

/** A change to one record: a null value removes it. */
export interface InodeMetaChange {
  name: Buffer;
  value: Buffer | null;
}

/** What one inode may hold of one kind after a change (else NOSPC and nothing changed). */
export interface InodeMetaLimits {
  /** Records. */
  count: number;
  /** Sum of name and value bytes. */
  bytes: number;
}

export interface RenameResult {
  /** An entry that was replaced at the destination, if any. */
  replaced: RemoveResult | null;
  /** The inode the rename moved (caches drop what a rename touched; unknown: they drop everything). */
  moved?: number;
}

export interface ReaddirPage {
  entries: DirEntry[];
  eof: boolean;
}

export interface ShareUsage {
  files: number;
  bytes: number;
}

export interface MetadataStore {
  readonly kind: string;
  /** SQL stores, once open: the identity kept in the store (migrations.ts), the same through any address. */
  readonly storeId?: string;
  /** Opens or creates storage, running migrations. */
  open(): Promise<void>;
  close(): Promise<void>;

  /** Returns the root directory of a share, creating it from `init` on first use. */
  ensureRoot(shareId: number, init: NewInode): Promise<Inode>;
  getInode(id: number): Promise<Inode | null>;
  lookup(dirId: number, name: Buffer): Promise<Inode | null>;
  /** Entries with cookie > afterCookie, in cookie order, at most `limit`. */
  readdir(dirId: number, afterCookie: number, limit: number): Promise<ReaddirPage>;

  /** Creates an inode and its entry; EXIST if the name is taken. Updates the directory's times (and nlink for a subdirectory). */
  create(dirId: number, name: Buffer, init: NewInode, now: Timespec): Promise<Inode>;
  /** create() that also returns the directory as it changed it, where that costs nothing more (postgres: one statement). */
  createIn?(dirId: number, name: Buffer, init: NewInode, now: Timespec): Promise<CreateResult>;
  /** Adds a hard link; EXIST if taken. Returns the inode with its new link count. */
  link(id: number, dirId: number, name: Buffer, now: Timespec): Promise<Inode>;
  /**
   * Removes an entry. `dir` selects rmdir semantics (NOTDIR / NOTEMPTY) versus unlink (ISDIR). With
   * `expect`, NamesChangedError (nothing removed) unless the name holds that inode, checked in the
   * same atomic step.
   */
  remove(dirId: number, name: Buffer, dir: boolean, now: Timespec, expect?: number): Promise<RemoveResult>;
  /**
   * Moves an entry, replacing a compatible destination (file over file, empty directory over
   * directory). Renaming an entry onto another link of the same inode changes nothing. Moving a
   * directory into itself or any of its descendants, at any depth, is INVAL: the check runs in the
   * same atomic step as the move, so concurrent moves (from other processes too) never close a cycle.
   * With `expect`, NamesChangedError (and nothing changed) unless the names still hold what it says,
   * checked in that same step: a concurrent rename may have put another file under a name since.
   */
  rename(fromDir: number, fromName: Buffer, toDir: number, toName: Buffer, now: Timespec, expect?: RenameExpect): Promise<RenameResult>;
  /** Applies attribute changes; with `guardCtime`, NOT_SYNC unless the inode's ctime matches. */
  setAttr(id: number, changes: AttrChanges, guardCtime?: Timespec): Promise<Inode>;
  /**
   * setAttr of several inodes (no guard), atomically and in one commit: the caching layer's
   * written-behind sizes and times. Each inode as it is after, or null when it does not exist.
   */
  setAttrMany?(changes: readonly { id: number; changes: AttrChanges }[]): Promise<(Inode | null)[]>;

  /**
   * Named streams: sub-objects of a file, each an inode of its own (type REG, its data stored like
   * any file's under its own id) with no directory entry. Names are bytes, compared exactly.
   * Streams of `fileId`, by name.
   */
  listStreams(fileId: number): Promise<StreamEntry[]>;
  lookupStream(fileId: number, name: Buffer): Promise<Inode | null>;
  /** EXIST if the name is taken, STALE if the file is gone, NOSPC past MAX_STREAMS_PER_FILE. Changes the file's ctime. */
  createStream(fileId: number, name: Buffer, init: NewInode, now: Timespec): Promise<Inode>;
  /** Removes a stream and its inode (NOENT if there is none); the caller frees its data. Changes the file's ctime. */
  removeStream(fileId: number, name: Buffer, now: Timespec): Promise<Inode>;

  /** The records of one kind of an inode, by name (bytes, ascending). STALE if the inode is gone. */
  getMeta(inodeId: number, kind: InodeMetaKind): Promise<InodeMetaRecord[]>;
  /**
   * Applies `changes` atomically (later changes of a name win), checked against `limits` (NOSPC,
   * nothing changed); with `now`, the inode's ctime moves. Returns the records after the change.
   */
  putMeta(
    inodeId: number,
    kind: InodeMetaKind,
    changes: readonly InodeMetaChange[],
    limits: InodeMetaLimits,
    now?: Timespec,
  ): Promise<InodeMetaRecord[]>;
  /**
   * For several inodes at once (a directory page), those that have records: inode id -> the size of
   * their records as a packed list, each record taking metaRecordSize() bytes (MS-FSCC 2.4.15's
   * FILE_FULL_EA_INFORMATION entries: SMB's EaSize).
   */
  metaSizes(inodeIds: readonly number[], kind: InodeMetaKind): Promise<Map<number, number>>;

  /** Block refs with index in [from, to), in index order. */
  getBlocks(inodeId: number, from: number, to: number): Promise<BlockRef[]>;
  /**
   * Records a new block version; returns the ref it replaced, if any. With `cas`, only if the row
   * is as expected (else BlockConflictError, nothing changed), and the row keeps `cas.token`.
   */
  putBlock(inodeId: number, ref: BlockRef, cas?: BlockSwitch): Promise<BlockRef | null>;
  /**
   * Removes refs with index >= from and returns them (truncate, delete). With a `token` (a truncate
   * under a write lease), block switches under older tokens are refused from then on; refused itself
   * (BlockConflictError, stale; nothing changed) when the file's data was stored or cut, or its
   * size stored (AttrChanges.sizeToken, leaseToken), under a newer token already (the lease expired
   * and another server wrote the file).
   */
  dropBlocks(inodeId: number, from: number, token?: number): Promise<BlockRef[]>;
  /** Engines shared by several servers: the next fencing token of a write lease (strictly increasing, durable). */
  nextLeaseToken?(): Promise<number>;
  /** Engines shared by several servers: has any fencing token ever been handed out (any lease ever taken)? */
  leaseTokensIssued?(): Promise<boolean>;
  /**
   * Engines shared by several servers: the newest fencing token the file's data was stored or cut
   * under, or its size stored under (0: none).
   */
  fileToken?(inodeId: number): Promise<number>;

  usage(shareId: number): Promise<ShareUsage>;

  /**
   * No later create is given an id up to `id` (ids are never handed out twice; a create a crash lost
   * took its step of the count with it). Replay calls it with the largest inode id in the WAL, whose
   * records must never meet a new file under a lost one's id.
   */
  reserveInodeIds(id: number): Promise<void>;

  /**
   * Engines that write attribute changes behind (the caching layer): make the pending size and
   * time changes of `id` (of every inode without one) durable. COMMIT and stable writes call it.
   * `logged`: those of `id` are in the data's WAL (its writes' sizes, and its times as
   * pendingTimes gave them, see RECORD_TIMES): only every change answered so far is made durable.
   */
  flushAttrs?(id?: number, logged?: boolean): Promise<void>;
  /**
   * The caching layer, when it alone changes the store (no other server, no unknown writer): where
   * the writes of `id` not written to the store yet end, and the times they set; undefined when
   * there are none.
   */
  pendingTimes?(id: number): { growTo: number; mtime: Timespec; ctime: Timespec } | undefined;
  /**
   * Engines that can fail for good (see SqlDriver.failure): why they no longer vouch for what they
   * answer, or null. Liveness (GET /health) reports it, so that Kubernetes restarts DittoFS.
   */
  failure?(): Error | null;
  /** Engines that cache block maps: forget `inodeId`'s (a read found one of its objects missing). */
  invalidateBlocks?(inodeId: number): void;
  /** Engines that cache: forget what is cached of `inodeId` (another server took its write lease). */
  invalidateInode?(inodeId: number): void;
  /**
   * Engines that may lose the right to serve (a postgres store whose single-server fence is lost):
   * undefined while they may serve; else a promise that resolves once they may again (waited for
   * briefly) or rejects with VfsError JUKEBOX. Layers that answer from memory ask it first.
   */
  whenServing?(): Promise<void> | undefined;
}
