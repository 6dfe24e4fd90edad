// A caching layer over a MetadataStore whose queries cost a round trip (embedded PGlite on the
// event loop, PostgreSQL over a socket). Sequential I/O asks the same two questions on every
// request: "what is this inode?" (to resolve the handle) and "which block objects back this
// range?" (READ), and every WRITE changes size and times. Answering those from memory and writing
// size/mtime/ctime behind (coalesced, at most `flushDelayMs` later, and at once on `flushAttrs`,
// which COMMIT and stable writes call) removes the database from the data path. Where this cache
// alone changes the store, the ctime of a SETATTR that sets what the file already has (ctimeOnly:
// tar's chown and chmod after each file) is written behind the same way.
//
// Coherence: every change this process makes goes through here and keeps the cache exact.
// Namespace changes (link, remove, rename) first write every pending attribute change through
// (a create only its directory's), then drop the entries they touch. Pending changes are written
// in batches (setAttrMany: one commit for many files) where the store can. Changes made by other
// processes on the same store:
// - none (the embedded engine's lock file, a postgres store's fence, meta/sql/fence.ts): every
//   change goes through here, so entries are trusted until this process changes them (stores.ts
//   passes an infinite `ttlMs`; a fence taken again after a lost connection drops everything);
// - unknown (the default `ttlMs`): entries not changed locally are trusted for `ttlMs` only, as
//   with an NFS client's attribute cache;
// - several servers (coordination.redis, coord/coherence.ts): every change is announced before it
//   is made (the others cache none of the inodes it touches until it is done), and an answer from
//   memory waits until every announcement published before the call is applied here
//   (`CacheCoherenceLink.sync`). Without that proof nothing is answered from memory or cached: the
//   store is read; a change that could not be announced is refused (JUKEBOX) and not made.
//
// Durability: a pending size change is also in the WAL record of the write that caused it (replay
// restores sizes), so losing pending changes in a crash loses at most mtime/ctime of writes that
// were never committed, which NFS allows, and the ctime of SETATTRs that changed nothing else.
import { VfsError } from '../vfs/errors.js';
import { compareTimespec, FileType, type AttrChanges, type Inode, type NewInode, type Timespec } from '../vfs/types.js';
import {
  InodeMetaKind,
  type BlockRef,
  type BlockSwitch,
  type CreateResult,
  type InodeMetaChange,
  type InodeMetaLimits,
  type InodeMetaRecord,
  type MetadataStore,
  type ReaddirPage,
  type RemoveResult,
  type RenameExpect,
  type RenameResult,
  type ShareUsage,
  type StreamEntry,
} from './store.js';

/** How the cache hears other servers' changes and tells them its own (coord/coherence.ts StoreCoherence). */
export interface CacheCoherenceLink {
  /** True once every change published before this call is applied here; false: read the store. */
  sync(): Promise<boolean>;
  /**
   * Tells the other servers that a change of these inodes (null: anything) is about to be made
   * here; throws VfsError JUKEBOX when they could not hear it (then it is not made).
   */
  announce(ids: readonly number[] | null, blocks: boolean): Promise<number>;
  /** The change announced as `ticket` is made or failed; `ids`: all it touched (not awaited). */
  done(ticket: number, ids: readonly number[] | null, blocks: boolean): void;
}

export interface CachedMetadataOptions {
  /** How long an entry not changed by this process is trusted (default 1000 ms). */
  ttlMs?: number;
  /** Longest a size/time change waits before it is written to the store (default 1000 ms). */
  flushDelayMs?: number;
  /** Inodes kept (default 65536); block maps are bounded by `maxBlockRefs` (default 262144). */
  maxInodes?: number;
  maxBlockRefs?: number;
  /** Reports a background flush that failed (it is retried at the next flush). */
  onFlushError?: (err: unknown, inodeId: number) => void;
}

/** Size and time changes of writes, not yet in the store. Monotone: merging keeps the largest. */
interface PendingAttrs {
  growTo: number;
  mtime: Timespec | undefined;
  ctime: Timespec | undefined;
  /** The newest lease token of the writes whose sizes these are (AttrChanges.sizeToken; 0: none). */
  sizeToken: number;
}

interface InodeEntry {
  inode: Inode;
  /** Date.now() when read from the store (dirty entries never expire). */
  at: number;
  /** `inodeSeq` when the entry was last put at the map's end (its place in the LRU order). */
  seq: number;
}

interface BlockMap {
  /** index -> ref, or null when the store has no ref at that index. */
  refs: Map<number, BlockRef | null>;
  at: number;
}

/** Every kind of per-inode record (bits 1 << kind): what a new inode is known to have none of. */
const ALL_META_KINDS = Object.values(InodeMetaKind).reduce((bits, kind) => bits | (1 << kind), 0);
/** In noMeta beside the kinds (bit 0, which no kind uses): the file has no named streams. */
const NO_STREAMS = 1;

/** Written-behind changes per setAttrMany call (one transaction each; others' statements run between). */
const FLUSH_BATCH = 256;
/** Blocks a short getBlocks reads at most (itself and ahead), see getBlocks. */
const BLOCK_LOOKAHEAD = 64;
/** Inodes with changes waiting at most: past this, a flush starts at once (memory stays bounded). */
const MAX_PENDING = 4096;

const later = (a: Timespec | undefined, b: Timespec | undefined): Timespec | undefined => {
  if (!a) return b;
  if (!b) return a;
  return compareTimespec(a, b) >= 0 ? a : b;
};

/** Changes that may be written behind: exactly what a WRITE does to a file's attributes. */
function isWriteBehind(c: AttrChanges): boolean {
  return (
    c.growTo !== undefined &&
    c.mode === undefined &&
    c.clearMode === undefined &&
    c.uid === undefined &&
    c.gid === undefined &&
    c.size === undefined &&
    c.atime === undefined &&
    c.btime === undefined &&
    c.dosAttrs === undefined &&
    c.clearCreateVerifier !== true &&
    c.leaseToken === undefined
  );
}

/**
 * The change time `c` sets when that is all it changes on regular file `i`: a SETATTR of what the
 * file already has (tar's chown and chmod after it extracts a file), which still moves the ctime
 * (Linux's notify_change does). Undefined when it changes anything else, or sets an older ctime (an
 * SMB client's explicit ChangeTime).
 */
function ctimeOnly(i: Inode, c: AttrChanges): Timespec | undefined {
  const { ctime } = c;
  // Regular files only: a dirty entry is not forgotten (forget()), and a directory's entry must
  // follow a rename (its parent) that may run meanwhile.
  if (i.type !== FileType.REG || ctime === undefined || compareTimespec(ctime, i.ctime) < 0) return undefined;
  const mode = i.mode & 0o7777;
  if (((c.mode ?? mode) & 0o7777 & ~(c.clearMode ?? 0)) !== mode) return undefined;
  if ((c.uid ?? i.uid) !== i.uid || (c.gid ?? i.gid) !== i.gid || (c.dosAttrs ?? i.dosAttrs) !== i.dosAttrs) return undefined;
  if (c.clearCreateVerifier === true && i.createVerifier !== null) return undefined;
  const moves =
    c.size !== undefined ||
    c.growTo !== undefined ||
    c.atime !== undefined ||
    c.mtime !== undefined ||
    c.btime !== undefined ||
    c.leaseToken !== undefined;
  return moves ? undefined : ctime;
}

function changesOf(p: PendingAttrs): AttrChanges {
  const changes: AttrChanges = { growTo: p.growTo };
  if (p.mtime) changes.mtime = p.mtime;
  if (p.ctime) changes.ctime = p.ctime;
  if (p.sizeToken > 0) changes.sizeToken = p.sizeToken;
  return changes;
}

/**
 * One change that does what the pending ones and then `changes` do, in that order: the pending
 * growth unless `changes` sets the size (a truncate after the writes), the pending times unless it
 * sets its own.
 */
function afterPending(p: PendingAttrs, changes: AttrChanges): AttrChanges {
  const merged: AttrChanges = { ...changes };
  if (changes.size === undefined) merged.growTo = Math.max(p.growTo, changes.growTo ?? 0);
  if (changes.mtime === undefined && p.mtime !== undefined) merged.mtime = p.mtime;
  if (changes.ctime === undefined && p.ctime !== undefined) merged.ctime = p.ctime;
  const sizeToken = Math.max(p.sizeToken, changes.sizeToken ?? 0);
  if (sizeToken > 0) merged.sizeToken = sizeToken;
  return merged;
}

const noop = (): void => undefined;

function withPending(i: Inode, p: PendingAttrs): Inode {
  const size = Math.max(i.size, p.growTo);
  const mtime = later(i.mtime, p.mtime) ?? i.mtime;
  const ctime = later(i.ctime, p.ctime) ?? i.ctime;
  if (size === i.size && mtime === i.mtime && ctime === i.ctime) return i;
  return { ...i, size, mtime, ctime };
}

/** Stamps kept (see CachedMetadataStore.stamps); past it they all go and the epochs move. */
const MAX_STAMPS = 4096;

export class CachedMetadataStore implements MetadataStore {
  readonly kind: string;
  private ttlMs: number;
  private readonly flushDelayMs: number;
  private readonly maxInodes: number;
  private readonly maxBlockRefs: number;
  private readonly inodes = new Map<number, InodeEntry>();
  /** Entries put at the end of `inodes` so far (see remember()). */
  private inodeSeq = 0;
  private readonly pending = new Map<number, PendingAttrs>();
  /** Inodes whose pending changes are being written: their entries stay authoritative meanwhile. */
  private readonly flushing = new Map<number, Promise<unknown>>();
  /**
   * The pending changes a write-behind flush took and the store may not have yet (writePending,
   * writeMany): a read of the store meanwhile (the entry dropped) lays them over what it found,
   * else it would show a size from before WRITEs that were answered long ago. Gone when the flush
   * settles: no other change of the inode runs meanwhile (setAttr waits for its flush).
   */
  private readonly inFlight = new Map<number, PendingAttrs>();
  /**
   * Per inode, a size the store holds at least, as the last write-behind flush of its size found
   * it (the row it returned); forgotten when anything may lower it (sizeMayShrink). putBlock skips
   * its flush of the pending size when this already covers the block's data.
   */
  private readonly sizeStored = new Map<number, number>();
  /** Per inode, bumped when a change that may lower its stored size begins and ends. */
  private readonly sizeCuts = new Map<number, number>();
  private sizeCutCounter = 0;
  /** Bumped when sizeCuts is cleared (bounded): a flush that began before records nothing. */
  private sizeCutsCleared = 0;
  /** Per inode, the last setAttr made, settled or not (never rejects): the next one waits for it. */
  private readonly attrQueue = new Map<number, Promise<void>>();
  private readonly blocks = new Map<number, BlockMap>();
  /** Bumped per inode by putBlock/dropBlocks: a getBlocks that raced one must not fill the cache. */
  private readonly blockGen = new Map<number, number>();
  private blockCounter = 0;
  private blockRefs = 0;
  private timer: NodeJS.Timeout | null = null;
  /** A flush started because MAX_PENDING inodes wait is running. */
  private forcedFlush = false;
  private closed = false;
  /**
   * Bumped by every change but scoped ones (see `stamps`): a read that started before one must not
   * fill the cache.
   */
  private epoch = 0;
  /** Namespace changes in flight (create, link, remove, rename). */
  private namespaceChanges = 0;
  /**
   * Of those, the ones that move `epoch` (all but a create and the remove of a non-directory: see
   * `stamps`). A scoped change is alone only when none of these runs.
   */
  private globalChanges = 0;
  /** Scoped changes (create, remove of a non-directory) in flight, per directory. */
  private readonly busyDirs = new Map<number, number>();
  /**
   * Scoped changes: a create changes its directory and a new inode; the remove of a non-directory
   * its directory, the file and the file's streams. Rather than `epoch` and `endEpoch`, which stop
   * every read in flight from filling the cache (with several clients at once, nothing was ever
   * kept: each CREATE then read its directory, each LOOKUP its name, from the store), they stamp
   * what they touch, when they start and when they end: a read that started before a stamp of what
   * it read (`stampSeq` then) does not fill the cache. Bounded: past maxInodes stamps, all go and
   * `epoch` and `endEpoch` move instead.
   */
  private readonly stamps = new Map<number, number>();
  private stampSeq = 0;
  private coherence: CacheCoherenceLink | null = null;
  private detach: (() => void) | null = null;
  /** False while the coherence link cannot prove the cache current: nothing is cached. */
  private coherent = true;
  /** Inodes another server is changing (announced, not yet done), counted; and changes of anything. */
  private readonly uncertain = new Map<number, number>();
  private uncertainAll = 0;
  /**
   * Names looked up or created: directory id -> (name as latin1 -> the inode id it holds), with
   * when the directory's map was started. The path walk of every SMB CREATE ("d0\\file") and NFS LOOKUPs
   * ask the same names again. Only removes and renames take a name away (a create or link adds one):
   * a rename drops both directories' maps here, as does another server's change of the directory
   * or a remove that failed or overlapped another namespace change; any other remove forgets just
   * its name. `complete`: the map holds every name of the directory, so a name it lacks is not
   * there (the LOOKUP before each CREATE of an untar costs no query). Only a directory this cache
   * made, while it alone changes the store, starts so (empty), and each create in it that is
   * remembered, and each remove, keeps it so; a link into it, or a create not remembered, ends that.
   */
  private readonly names = new Map<number, { at: number; ids: Map<string, number>; complete: boolean }>();
  /** Names in `names`, and one per directory map (empty complete maps take room too). */
  private nameCount = 0;
  /**
   * Bumped when a remove (but a scoped one), rename, putMeta or setAttr ends (`epoch` moves when it
   * starts): a lookup or getMeta that overlapped it (a pooled store may have read the state before
   * it) must not fill the cache.
   */
  private endEpoch = 0;
  /** Inodes known to hold no records of some kinds (bit 1 << kind): most files have no DACL or EA. */
  private readonly noMeta = new Map<number, { kinds: number; at: number }>();

  get storeId(): string | undefined {
    return this.inner.storeId;
  }

  constructor(
    readonly inner: MetadataStore,
    private readonly opts: CachedMetadataOptions = {},
  ) {
    this.kind = inner.kind;
    this.ttlMs = opts.ttlMs ?? 1000;
    this.flushDelayMs = opts.flushDelayMs ?? 1000;
    this.maxInodes = opts.maxInodes ?? 65536;
    this.maxBlockRefs = opts.maxBlockRefs ?? 262144;
  }

  open(): Promise<void> {
    return this.inner.open();
  }

  /**
   * Several servers: from now on entries are trusted until another server's change invalidates
   * them (not for a ttl), and this cache's changes are published. `detach` runs on close.
   */
  attachCoherence(link: CacheCoherenceLink, detach: () => void): void {
    this.coherence = link;
    this.detach = detach;
    this.ttlMs = Number.POSITIVE_INFINITY;
    this.invalidateRemote(null, true);
  }

  get hasCoherence(): boolean {
    return this.coherence !== null;
  }

  /** Another server changed these inodes (with `blocks`, their block maps too); null: anything. */
  invalidateRemote(ids: readonly number[] | null, blocks: boolean): void {
    // Reads in flight (started before the change) must not fill the cache.
    this.epoch++;
    if (ids === null) {
      // A flush of a size in flight records nothing either (sizeCutsCleared).
      this.sizeStored.clear();
      this.sizeCuts.clear();
      this.sizeCutsCleared++;
      // Dirty entries go too: getInode reads the store again and lays this server's pending changes over it.
      this.inodes.clear();
      this.blocks.clear();
      this.blockRefs = 0;
      this.blockGen.clear();
      this.clearNames();
      this.noMeta.clear();
      return;
    }
    for (const id of ids) {
      this.sizeMayShrink(id);
      this.inodes.delete(id);
      this.dropNames(id);
      this.noMeta.delete(id);
      if (blocks) this.dropBlockMap(id);
    }
  }

  /** Another server is about to change these inodes (null: anything): none is cached until it is done. */
  uncertainRemote(ids: readonly number[] | null, on: boolean): void {
    this.epoch++;
    if (ids === null) {
      this.uncertainAll = Math.max(0, this.uncertainAll + (on ? 1 : -1));
      return;
    }
    for (const id of ids) {
      const n = (this.uncertain.get(id) ?? 0) + (on ? 1 : -1);
      if (n > 0) this.uncertain.set(id, n);
      else this.uncertain.delete(id);
    }
  }

  /** Whether another server may be changing the inode right now (then it is read, not cached). */
  private isUncertain(id: number): boolean {
    return this.uncertainAll > 0 || (this.uncertain.size > 0 && this.uncertain.has(id));
  }

  /** A scoped change starts or ends on these inodes: reads of them in flight do not fill the cache. */
  private stamp(...ids: number[]): number {
    if (this.stamps.size + ids.length > MAX_STAMPS) {
      this.stamps.clear();
      this.epoch++;
      this.endEpoch++;
    }
    const seq = ++this.stampSeq;
    for (const id of ids) this.stamps.set(id, seq);
    return seq;
  }

  /** Whether a scoped change started or ended on `id` since `seq` (stampSeq when a read started). */
  private stampedSince(id: number, seq: number): boolean {
    return this.stamps.size > 0 && (this.stamps.get(id) ?? 0) > seq;
  }

  /** Several servers: whether the cache may answer now (waits for the sync point). */
  private async trusted(): Promise<boolean> {
    if (!this.coherence) return true;
    this.coherent = await this.coherence.sync();
    return this.coherent;
  }

  /** The epoch for a read that may fill the cache (-1 while nothing may be cached). */
  private fillEpoch(): number {
    return this.coherence && !this.coherent ? -1 : this.epoch;
  }

  /** Before a change: the other servers hear of it (or it is refused, JUKEBOX). -1: one server. */
  private async announce(ids: readonly number[] | null, blocks = false): Promise<number> {
    return this.coherence ? this.coherence.announce(ids, blocks) : -1;
  }

  /** After a change (made or failed): what it touched, for the others. */
  private done(ticket: number, ids: readonly number[] | null, blocks = false): void {
    if (ticket >= 0) this.coherence?.done(ticket, ids, blocks);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.detach?.();
    this.detach = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    try {
      // Changes made before the close (a WRITE's size written through, others queued behind it)
      // reach the store before it closes.
      await this.queuedAttrs();
      await this.flushAll();
    } finally {
      await this.inner.close();
    }
  }

  // ---- inodes ------------------------------------------------------------------------------------

  private isDirty(id: number): boolean {
    return this.pending.has(id) || this.flushing.has(id);
  }

  /**
   * A row the store listed (READDIR, streams), with the size and times this process answered for a
   * file being written: its entry's, or, without one, those the store may lack.
   */
  private asKnown(i: Inode): Inode {
    if (!this.isDirty(i.id)) return i;
    const cached = this.inodes.get(i.id);
    const p = cached
      ? { growTo: cached.inode.size, mtime: cached.inode.mtime, ctime: cached.inode.ctime, sizeToken: 0 }
      : this.unstored(i.id);
    return p ? withPending(i, p) : i;
  }

  /** The size and times this process answered that the store may lack: in flight and pending. */
  private unstored(id: number): PendingAttrs | undefined {
    const p = this.pending.get(id);
    const f = this.inFlight.get(id);
    if (f === undefined || p === undefined) return p ?? f;
    return {
      growTo: Math.max(p.growTo, f.growTo),
      mtime: later(p.mtime, f.mtime),
      ctime: later(p.ctime, f.ctime),
      sizeToken: Math.max(p.sizeToken, f.sizeToken),
    };
  }

  /**
   * Caches what a read returned, unless a change overlapped the read: `epoch` (fillEpoch() when it
   * started) moves when a change starts, `ended` (endEpoch then) when a remove, rename or putMeta
   * ends; a pooled store may have read the row before such a change committed and answer after it.
   */
  private remember(i: Inode, epoch: number, ended = this.endEpoch, seq = this.stampSeq): Inode {
    const p = this.unstored(i.id);
    const inode = p ? withPending(i, p) : i;
    if (epoch !== this.epoch || ended !== this.endEpoch || this.isUncertain(i.id) || this.stampedSince(i.id, seq)) {
      // A change overlapped this read: neither what it read nor what was cached before may answer.
      // (A dirty entry is read again from the store, with this server's pending changes laid over;
      // READDIR lays them over itself while it has none. It is dropped even so: this may be a
      // change's own result, newer than the entry, overlapped by another change.)
      this.inodes.delete(i.id);
      return inode;
    }
    // An entry put at the end within the last maxInodes / 2 entries is updated where it is: none
    // of those is evicted (evictInodes stops at 90%). Moving it on every call would cost more than
    // the cache saves: V8's Map keeps a deleted key in its hash chain until the table is rebuilt,
    // so a key deleted and set again per call (a directory, at every CREATE and REMOVE in it)
    // makes its own chain, and each lookup of it, thousands of entries long.
    const e = this.inodes.get(i.id);
    if (e !== undefined && this.inodeSeq - e.seq < this.maxInodes / 2) {
      e.inode = inode;
      e.at = Date.now();
      return inode;
    }
    this.inodes.delete(i.id);
    this.inodes.set(i.id, { inode, at: Date.now(), seq: ++this.inodeSeq });
    if (this.inodes.size > this.maxInodes) this.evictInodes();
    return inode;
  }

  private evictInodes(): void {
    const target = Math.floor(this.maxInodes * 0.9);
    for (const id of this.inodes.keys()) {
      if (this.inodes.size <= target) break;
      if (!this.isDirty(id)) this.inodes.delete(id);
    }
  }

  /** A store that lost its fence answers nothing, not even from memory (another process may be writing it). */
  whenServing(): Promise<void> | undefined {
    return this.inner.whenServing?.();
  }

  async getInode(id: number): Promise<Inode | null> {
    const serving = this.inner.whenServing?.();
    if (serving !== undefined) await serving;
    const trusted = await this.trusted();
    const e = this.inodes.get(id);
    if (e && trusted && (this.isDirty(id) || Date.now() - e.at < this.ttlMs)) return e.inode;
    const epoch = this.fillEpoch();
    const ended = this.endEpoch;
    const seq = this.stampSeq;
    const i = await this.inner.getInode(id);
    if (!i) {
      this.forget(id);
      return null;
    }
    return this.remember(i, epoch, ended, seq);
  }

  async ensureRoot(shareId: number, init: NewInode): Promise<Inode> {
    const epoch = this.fillEpoch();
    const seq = this.stampSeq;
    return this.remember(await this.inner.ensureRoot(shareId, init), epoch, this.endEpoch, seq);
  }

  async lookup(dirId: number, name: Buffer): Promise<Inode | null> {
    const key = name.toString('latin1');
    const d = this.names.get(dirId);
    if (d?.ids.has(key)) {
      const hit = await this.cachedName(dirId, key);
      if (hit) return hit;
    } else if (d?.complete && (await this.knownMissing(dirId, key))) return null;
    const epoch = this.fillEpoch();
    const ended = this.endEpoch;
    const seq = this.stampSeq;
    const i = await this.inner.lookup(dirId, name);
    if (!i) return null;
    const inode = this.remember(i, epoch, ended, seq);
    if (
      epoch === this.epoch &&
      ended === this.endEpoch &&
      !this.isUncertain(dirId) &&
      !this.stampedSince(dirId, seq) &&
      !this.stampedSince(i.id, seq)
    )
      this.rememberName(dirId, key, i.id);
    return inode;
  }

  /** The inode a cached name holds, when both the name and the inode may answer from memory. */
  private async cachedName(dirId: number, key: string): Promise<Inode | null> {
    const serving = this.inner.whenServing?.();
    if (serving !== undefined) await serving;
    if (!(await this.trusted()) || this.isUncertain(dirId)) return null;
    const d = this.names.get(dirId);
    const id = d !== undefined && Date.now() - d.at < this.ttlMs ? d.ids.get(key) : undefined;
    if (id === undefined) return null;
    const e = this.inodes.get(id);
    if (!e || this.isUncertain(id) || (!this.isDirty(id) && Date.now() - e.at >= this.ttlMs)) return null;
    return e.inode;
  }

  /**
   * Whether `key` is known not to be in `dirId`: its map is complete and lacks it (checked again
   * after the wait). Complete maps exist only while this cache is the sole writer: attachCoherence,
   * the one way out of that, drops every map.
   */
  private async knownMissing(dirId: number, key: string): Promise<boolean> {
    const serving = this.inner.whenServing?.();
    if (serving !== undefined) await serving;
    const d = this.names.get(dirId);
    return d !== undefined && d.complete && !d.ids.has(key);
  }

  private rememberName(dirId: number, key: string, id: number): void {
    let d = this.names.get(dirId);
    if (d && Date.now() - d.at >= this.ttlMs) {
      this.dropNames(dirId);
      d = undefined;
    }
    if (!d) d = this.namesOf(dirId, false);
    if (!d.ids.has(key)) this.nameCount++;
    d.ids.set(key, id);
    if (this.nameCount > this.maxInodes) this.clearNames();
  }

  /** A new (empty) map of the names of `dirId`. */
  private namesOf(dirId: number, complete: boolean): { at: number; ids: Map<string, number>; complete: boolean } {
    this.dropNames(dirId);
    const d = { at: Date.now(), ids: new Map<string, number>(), complete };
    this.names.set(dirId, d);
    this.nameCount++;
    return d;
  }

  /** Forgets the names cached in a directory (a remove or rename there, or another server's change). */
  private dropNames(dirId: number): void {
    const d = this.names.get(dirId);
    if (!d) return;
    this.nameCount -= d.ids.size + 1;
    this.names.delete(dirId);
  }

  /** Forgets one name cached in a directory (removed from it here). */
  private forgetName(dirId: number, name: Buffer): void {
    const d = this.names.get(dirId);
    if (d !== undefined && d.ids.delete(name.toString('latin1'))) this.nameCount--;
  }

  private clearNames(): void {
    this.names.clear();
    this.nameCount = 0;
  }

  async readdir(dirId: number, afterCookie: number, limit: number): Promise<ReaddirPage> {
    const page = await this.inner.readdir(dirId, afterCookie, limit);
    if (this.pending.size === 0 && this.flushing.size === 0) return page;
    // Files being written: their entries show the sizes and times this process knows.
    for (const e of page.entries) e.inode = this.asKnown(e.inode);
    return page;
  }

  /**
   * Changes of one inode run one after another, in the order they were made (each starts once the
   * one before settled): the store applies a WRITE's size before a truncate made after it, and two
   * WRITEs' sizes in turn, even when they are written through (the entry gone, setuid bits to drop)
   * and a pooled store would commit them in any order. flushAttrs waits for the changes made before
   * it: a COMMIT, or a write lease handed to another server, never leaves one behind.
   */
  setAttr(id: number, changes: AttrChanges, guardCtime?: Timespec): Promise<Inode> {
    const before = this.attrQueue.get(id);
    const run =
      before === undefined ? this.setAttrNow(id, changes, guardCtime) : before.then(() => this.setAttrNow(id, changes, guardCtime));
    const settled = run.then(noop, noop);
    this.attrQueue.set(id, settled);
    void settled.then(() => {
      if (this.attrQueue.get(id) === settled) this.attrQueue.delete(id);
    });
    return run;
  }

  private async setAttrNow(id: number, changes: AttrChanges, guardCtime?: Timespec): Promise<Inode> {
    if (changes.size === undefined) return this.applyAttrs(id, changes, guardCtime);
    this.sizeMayShrink(id);
    try {
      return await this.applyAttrs(id, changes, guardCtime);
    } finally {
      this.sizeMayShrink(id);
    }
  }

  /** Where the inode's size changes stand, taken before a flush of its pending size (sizeFound). */
  private sizeMark(id: number): { cuts: number; cleared: number } {
    return { cuts: this.sizeCuts.get(id) ?? 0, cleared: this.sizeCutsCleared };
  }

  /** A flush of the inode's pending size found `size` stored: kept unless a change that may lower it came since `mark`. */
  private sizeFound(id: number, mark: { cuts: number; cleared: number }, size: number): void {
    if (mark.cuts !== (this.sizeCuts.get(id) ?? 0) || mark.cleared !== this.sizeCutsCleared) return;
    if (this.sizeStored.size >= this.maxInodes) this.sizeStored.clear();
    this.sizeStored.set(id, size);
  }

  /** Forgets what is known of the inode's stored size: a change that may lower it begins or ends. */
  private sizeMayShrink(id: number): void {
    this.sizeStored.delete(id);
    if (this.sizeCuts.size >= this.maxInodes) {
      this.sizeCuts.clear();
      this.sizeStored.clear();
      this.sizeCutsCleared++;
    }
    this.sizeCuts.set(id, ++this.sizeCutCounter);
  }

  private async applyAttrs(id: number, changes: AttrChanges, guardCtime?: Timespec): Promise<Inode> {
    const serving = this.inner.whenServing?.();
    if (serving !== undefined) await serving;
    const e = this.inodes.get(id);
    const behind = this.behindPart(id, e, changes, guardCtime);
    if (behind !== undefined && e !== undefined) {
      const p = this.pending.get(id);
      const merged: PendingAttrs = {
        growTo: Math.max(p?.growTo ?? 0, behind.growTo ?? 0),
        mtime: later(p?.mtime, behind.mtime),
        ctime: later(p?.ctime, behind.ctime),
        sizeToken: Math.max(p?.sizeToken ?? 0, behind.sizeToken ?? 0),
      };
      this.pending.set(id, merged);
      const inode = withPending(e.inode, merged);
      e.inode = inode;
      if (this.pending.size >= MAX_PENDING && !this.forcedFlush) {
        // Full: written now, in batches, rather than when the timer fires.
        this.forcedFlush = true;
        this.flushAll()
          .catch(() => undefined)
          .finally(() => (this.forcedFlush = false));
      } else this.schedule();
      return inode;
    }
    // The inode's pending size and times go with this change, in one statement, rather than in a
    // write of their own before it (a chmod after a write: one UPDATE, not two). Not with a ctime
    // guard: it is checked against the stored ctime, which the pending one must be first.
    if (guardCtime === undefined && !this.flushing.has(id) && this.pending.has(id)) return this.setAttrWithPending(id, changes);
    await this.flushPending(id);
    return this.writeThrough(id, changes, guardCtime);
  }

  /**
   * What of `changes` is written behind (merged into the pending size and times), or undefined:
   * written through. A WRITE's changes; and, where this cache alone changes the store (its entry
   * is then what the store has), the ctime of a change that moves nothing else.
   */
  private behindPart(
    id: number,
    e: InodeEntry | undefined,
    changes: AttrChanges,
    guardCtime: Timespec | undefined,
  ): AttrChanges | undefined {
    if (guardCtime !== undefined || e === undefined || this.closed) return undefined;
    // Past MAX_PENDING inodes waiting (unless this one already does), written through: the flush
    // started at the cap may be failing (the database down).
    if (this.pending.size + this.flushing.size >= MAX_PENDING && !this.pending.has(id)) return undefined;
    if (isWriteBehind(changes)) return changes;
    const ctime = this.soleWriter() ? ctimeOnly(e.inode, changes) : undefined;
    return ctime === undefined ? undefined : { ctime };
  }

  /** A change written to the store now, the other servers told, the cache kept right around it. */
  private async writeThrough(id: number, changes: AttrChanges, guardCtime?: Timespec): Promise<Inode> {
    const blocks = changes.size !== undefined;
    const ticket = await this.announce([id], blocks);
    // Reads in flight (started before the change) must not fill the cache with what it replaces.
    this.epoch++;
    const epoch = this.fillEpoch();
    const seq = this.stampSeq;
    try {
      return this.remember(await this.inner.setAttr(id, changes, guardCtime), epoch, this.endEpoch, seq);
    } catch (err) {
      // The store may have made the change and lost the answer: the entry is read again, not
      // trusted (a SETATTR of the value it would still show would be taken for ctime only).
      this.inodes.delete(id);
      throw err;
    } finally {
      // A read on another of a pool's connections may have seen the row before the change and
      // answer after it: as after a remove or rename, it must not fill the cache.
      this.endEpoch++;
      this.done(ticket, [id], blocks);
    }
  }

  /**
   * A change written through together with the inode's pending size and times (afterPending).
   * While it runs it is the inode's flush (a COMMIT waits for it); if it fails, the pending changes
   * are kept for the next flush.
   */
  private async setAttrWithPending(id: number, changes: AttrChanges): Promise<Inode> {
    const p = this.pending.get(id)!;
    this.pending.delete(id);
    const write = this.writeThrough(id, afterPending(p, changes)).catch((err: unknown) => {
      this.notWritten(id, p, err);
      throw err;
    });
    return this.asFlush([id], write);
  }

  /** `work` is the flush of `ids` while it runs (a flush or COMMIT of one of them waits for it). */
  private async asFlush<T>(ids: readonly number[], work: Promise<T>): Promise<T> {
    for (const id of ids) this.flushing.set(id, work);
    try {
      return await work;
    } finally {
      for (const id of ids) if (this.flushing.get(id) === work) this.flushing.delete(id);
    }
  }

  // ---- write-behind ------------------------------------------------------------------------------

  private schedule(): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flushAll().catch(() => undefined);
    }, this.flushDelayMs);
    this.timer.unref();
  }

  /** The store's own (this cache fails nothing for good). */
  failure(): Error | null {
    return this.inner.failure?.() ?? null;
  }

  /**
   * Writes the pending size/time changes of one inode (all, without an id) to the store, then has
   * the store make what it answered durable (engines that answer before their fsync: SQLite).
   * `logged` (see MetadataStore.flushAttrs): those of `id` stay pending, written behind as usual.
   */
  async flushAttrs(id?: number, logged = false): Promise<void> {
    // The changes made before this flush first (setAttr): it covers them.
    await this.queuedAttrs(id);
    if (!logged || id === undefined) await this.flushPending(id);
    await this.inner.flushAttrs?.(id);
  }

  /** Settles once the setAttrs made so far (of inode `id`; without it, of every inode) have. */
  private async queuedAttrs(id?: number): Promise<void> {
    const queued = id === undefined ? [...this.attrQueue.values()] : [this.attrQueue.get(id)];
    for (const q of queued) if (q !== undefined) await q;
  }

  /** No other server and no unknown writer change the store: what is cached is what it holds. */
  private soleWriter(): boolean {
    return this.coherence === null && this.ttlMs === Number.POSITIVE_INFINITY;
  }

  pendingTimes(id: number): { growTo: number; mtime: Timespec; ctime: Timespec } | undefined {
    // Another server (or an unknown writer) may read the store: it must see what a COMMIT covered.
    if (!this.soleWriter() || this.closed) return undefined;
    const p = this.pending.get(id);
    if (p?.mtime === undefined || p.ctime === undefined) return undefined;
    return { growTo: p.growTo, mtime: p.mtime, ctime: p.ctime };
  }

  private async flushPending(id?: number): Promise<void> {
    if (id === undefined) return this.flushAll();
    for (let rounds = 0; rounds < 1000; rounds++) {
      const running = this.flushing.get(id);
      if (running) {
        // Changes taken by a flush still in flight: they are durable only when it lands.
        await running.catch(() => undefined);
        continue;
      }
      if (!this.pending.has(id)) return;
      await this.asFlush([id], this.writePending(id));
    }
  }

  private async writePending(id: number): Promise<void> {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    this.inFlight.set(id, p);
    try {
      const changes = changesOf(p);
      const mark = this.sizeMark(id);
      const ticket = await this.announce([id]);
      let stored: Inode;
      try {
        stored = await this.inner.setAttr(id, changes);
      } finally {
        this.done(ticket, [id]);
      }
      this.inFlight.delete(id);
      this.sizeFound(id, mark, stored.size);
      this.written(id, stored);
    } catch (err) {
      this.inFlight.delete(id);
      if (this.notWritten(id, p, err)) return;
      this.opts.onFlushError?.(err, id);
      throw err;
    }
  }

  /**
   * A write of pending changes `p` (taken from `pending`) failed with `err`. The inode gone (removed
   * by another process): nothing left to write, true. Any other failure (JUKEBOX: the database is
   * unreachable) keeps the changes for the next flush.
   */
  private notWritten(id: number, p: PendingAttrs, err: unknown): boolean {
    if (err instanceof VfsError && (err.errno === 'STALE' || err.errno === 'NOENT')) {
      this.pending.delete(id);
      this.inodes.delete(id);
      return true;
    }
    this.keepPending(id, p);
    if (!this.closed) this.schedule();
    return false;
  }

  /** The entry of an inode whose pending changes were written: as stored, with any changes that came meanwhile. */
  private written(id: number, stored: Inode): void {
    const e = this.inodes.get(id);
    if (!e) return;
    const now = this.pending.get(id);
    e.inode = now ? withPending(stored, now) : stored;
    e.at = Date.now();
  }

  /** Keeps changes that could not be written for the next flush, merged with any that came meanwhile. */
  private keepPending(id: number, p: PendingAttrs): void {
    const now = this.pending.get(id);
    this.pending.set(id, {
      growTo: Math.max(p.growTo, now?.growTo ?? 0),
      mtime: later(p.mtime, now?.mtime),
      ctime: later(p.ctime, now?.ctime),
      sizeToken: Math.max(p.sizeToken, now?.sizeToken ?? 0),
    });
  }

  /**
   * Writes the pending changes of these inodes (none being flushed) with one setAttrMany: a put of
   * many small files commits their sizes together, not once per file.
   */
  private async writeMany(ids: readonly number[]): Promise<void> {
    const setAttrMany = this.inner.setAttrMany!.bind(this.inner);
    const taken: [number, PendingAttrs][] = [];
    for (const id of ids) {
      const p = this.pending.get(id);
      if (p) {
        taken.push([id, p]);
        this.inFlight.set(id, p);
      }
      this.pending.delete(id);
    }
    try {
      const marks = taken.map(([id]) => this.sizeMark(id));
      const ticket = await this.announce(ids);
      let stored: (Inode | null)[];
      try {
        stored = await setAttrMany(taken.map(([id, p]) => ({ id, changes: changesOf(p) })));
      } finally {
        this.done(ticket, ids);
      }
      for (const [id] of taken) this.inFlight.delete(id);
      for (let k = 0; k < taken.length; k++) {
        const id = taken[k]![0];
        const inode = stored[k] ?? null;
        if (inode === null) {
          // Removed by another process: nothing left to update.
          this.pending.delete(id);
          this.inodes.delete(id);
          continue;
        }
        this.sizeFound(id, marks[k]!, inode.size);
        this.written(id, inode);
      }
    } catch (err) {
      for (const [id, p] of taken) {
        this.inFlight.delete(id);
        this.keepPending(id, p);
      }
      if (!this.closed) this.schedule();
      this.opts.onFlushError?.(err, taken[0]?.[0] ?? -1);
      throw err;
    }
  }

  private async flushAll(): Promise<void> {
    if (this.inner.setAttrMany && this.pending.size > 1) {
      // In batches of inodes no flush is writing now (those are waited for below), in id order.
      const free = [...this.pending.keys()].filter((id) => !this.flushing.has(id)).sort((a, b) => a - b);
      for (let at = 0; at < free.length; at += FLUSH_BATCH) {
        const batch = free.slice(at, at + FLUSH_BATCH).filter((id) => this.pending.has(id) && !this.flushing.has(id));
        if (batch.length === 0) continue;
        try {
          await this.asFlush(batch, this.writeMany(batch));
        } catch {
          // Kept pending (writeMany): the pass below tries each of them on its own, as it does
          // everything else (one failed batch, e.g. a database failover, must not skip the rest).
        }
      }
    }
    const ids = [...new Set([...this.pending.keys(), ...this.flushing.keys()])];
    const results = await Promise.allSettled(ids.map((id) => this.flushPending(id)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  // ---- namespace changes -------------------------------------------------------------------------

  /** Before a namespace change: pending changes go first, so the store applies them in order. */
  private async before(): Promise<void> {
    if (this.pending.size > 0 || this.flushing.size > 0) {
      await this.flushAll();
    }
  }

  private forget(...ids: number[]): void {
    for (const id of ids) if (!this.isDirty(id)) this.inodes.delete(id);
  }

  async create(dirId: number, name: Buffer, init: NewInode, now: Timespec): Promise<Inode> {
    return (await this.createIn(dirId, name, init, now)).inode;
  }

  /**
   * create(), with the directory as the store's change left it when the store tells (the reply's
   * post-op attributes need no read then, even while other changes keep the cache from holding it).
   */
  async createIn(dirId: number, name: Buffer, init: NewInode, now: Timespec): Promise<CreateResult> {
    // Only the directory's own pending changes go first (it is the one existing inode a create
    // touches): a put of many small files does not write each file's size with the next create.
    if (this.isDirty(dirId)) await this.flushPending(dirId);
    const ticket = await this.announce([dirId]);
    // A scoped change (see `stamps`): reads of other inodes in flight may still fill the cache.
    const epoch = this.epoch;
    // Alone: no change of the directory's in flight now, and none starts before this one ends
    // (the epoch for the changes that move it, the directory's stamp for scoped ones).
    const alone = this.globalChanges === 0 && !this.busyDirs.has(dirId);
    const mine = this.beginScoped(dirId);
    let made: Inode | undefined;
    let dirAfter: Inode | undefined;
    try {
      if (this.inner.createIn) ({ inode: made, dir: dirAfter } = await this.inner.createIn(dirId, name, init, now));
      else made = await this.inner.create(dirId, name, init, now);
      const inode = this.remember(made, this.fillEpoch());
      return dirAfter === undefined ? { inode } : { inode, dir: this.asKnown(dirAfter) };
    } finally {
      this.endScoped(dirId);
      this.done(ticket, made ? [dirId, made.id] : [dirId]);
      // The directory as the store changed it (the reply's post-op attributes and the next call's
      // handle then need no read): kept only when no other change of it ran meanwhile (its change could
      // have committed after this one's), and only while coherent. remember() replaces the entry
      // in place, or drops it: forgotten first, its key would be deleted and set again per call.
      const proven = alone && this.fillEpoch() !== -1 && !this.stampedSince(dirId, mine);
      if (dirAfter !== undefined && proven) this.remember(dirAfter, epoch, this.endEpoch, mine);
      else this.forget(dirId);
      // A read of the directory in flight may have seen it before this change committed.
      this.stamp(dirId);
      // A new inode has no records of any kind (ids are never used again, and a record needs the
      // id this call just learnt): a chmod of it, or an SMB open's DACL check, need not ask the
      // store (one server only, as getMeta's cached absence).
      if (made !== undefined && this.coherence === null) this.knownEmpty(made.id, ALL_META_KINDS | NO_STREAMS);
      // The new name, under the same proof (and no change begun since: remember() checks that of
      // the directory): a file just made is looked up next (the stat after a create, an untar's
      // SETATTR by name, SMB's path walk), and need not cost a query.
      if (made !== undefined && proven && epoch === this.epoch && !this.isUncertain(dirId) && !this.isUncertain(made.id)) {
        // A directory made here, while nobody else changes the store: every name it gets comes through here.
        if (made.type === FileType.DIR && this.soleWriter()) this.namesOf(made.id, true);
        this.rememberName(dirId, name.toString('latin1'), made.id);
      } else this.incomplete(dirId);
    }
  }

  /** A scoped change of `dirId` starts: counted, and the directory stamped; its stamp. */
  private beginScoped(dirId: number): number {
    this.namespaceChanges++;
    this.busyDirs.set(dirId, (this.busyDirs.get(dirId) ?? 0) + 1);
    return this.stamp(dirId);
  }

  private endScoped(dirId: number): void {
    this.namespaceChanges--;
    const n = (this.busyDirs.get(dirId) ?? 1) - 1;
    if (n > 0) this.busyDirs.set(dirId, n);
    else this.busyDirs.delete(dirId);
  }

  /** A name may have come into `dirId` that its map does not hold: the map no longer says what is missing. */
  private incomplete(dirId: number): void {
    const d = this.names.get(dirId);
    if (d !== undefined) d.complete = false;
  }

  async link(id: number, dirId: number, name: Buffer, now: Timespec): Promise<Inode> {
    await this.before();
    const ticket = await this.announce([id, dirId]);
    this.epoch++;
    this.namespaceChanges++;
    this.globalChanges++;
    try {
      return await this.inner.link(id, dirId, name, now);
    } finally {
      this.namespaceChanges--;
      this.globalChanges--;
      this.done(ticket, [id, dirId]);
      this.forget(id, dirId);
      this.incomplete(dirId);
    }
  }

  async remove(dirId: number, name: Buffer, dir: boolean, now: Timespec, expect?: number): Promise<RemoveResult> {
    await this.before();
    // Several servers: the inode the name holds is announced with the directory.
    const victim = this.coherence ? await this.inner.lookup(dirId, name) : null;
    const announced = victim ? [dirId, victim.id] : [dirId];
    const ticket = await this.announce(announced, true);
    // The remove of a non-directory is scoped (see `stamps`): it changes the directory, the file
    // and the file's streams, and no other directory. Removing a directory moves the epoch.
    const scoped = !dir;
    const epoch = scoped ? this.epoch : ++this.epoch;
    // Alone: as in create(); a change that began before this one could commit after it.
    const alone = scoped ? this.globalChanges === 0 && !this.busyDirs.has(dirId) : this.namespaceChanges === 0;
    let mine: number;
    if (scoped) mine = this.beginScoped(dirId);
    else {
      mine = this.stampSeq;
      this.namespaceChanges++;
      this.globalChanges++;
    }
    let touched = announced;
    let dirAfter: Inode | undefined;
    let removed = false;
    try {
      const r = await this.inner.remove(dirId, name, dir, now, expect);
      removed = true;
      touched = [dirId, r.inode.id, ...r.streams];
      this.forget(r.inode.id, ...r.streams);
      this.dropNames(r.inode.id);
      this.noMeta.delete(r.inode.id);
      if (r.freed) this.dropBlockMap(r.inode.id);
      for (const s of r.streams) this.dropBlockMap(s);
      dirAfter = r.dir;
      return r;
    } finally {
      if (scoped) this.endScoped(dirId);
      else {
        this.namespaceChanges--;
        this.globalChanges--;
      }
      this.done(ticket, touched, true);
      // No change of the directory began since this one did (a scoped one stamps it).
      const unmoved = alone && this.fillEpoch() !== -1 && !this.stampedSince(dirId, mine);
      // Removed, alone (and, with several servers, while coherent): the name is gone and the
      // directory's other names are as they were, so only that name is forgotten (a build or an
      // untar that removes a file and makes it again, or looks up its neighbours, needs no query;
      // a complete map stays complete). Failed, or overlapping another namespace change: the name
      // may be gone or back, and every name of the directory is read again.
      if (removed && unmoved && !this.isUncertain(dirId)) this.forgetName(dirId, name);
      else this.dropNames(dirId);
      // A read in flight may have seen what this change touched before it committed: a scoped
      // change stamps that, any other moves endEpoch.
      if (scoped) this.stamp(...touched);
      else this.endEpoch++;
      // The directory as the store changed it, kept only if no other change overlapped this one
      // (and, with several servers, only while coherent): the REMOVE's reply and the next call's
      // handle need not read it again. (remember() replaces or drops the entry, as in create().)
      if (dirAfter !== undefined && unmoved) this.remember(dirAfter, epoch, this.endEpoch, this.stampSeq);
      else this.forget(dirId);
    }
  }

  async rename(
    fromDir: number,
    fromName: Buffer,
    toDir: number,
    toName: Buffer,
    now: Timespec,
    expect?: RenameExpect,
  ): Promise<RenameResult> {
    await this.before();
    // What the rename touches: both directories, the moved inode (its ctime, a directory's parent),
    // the replaced one and its streams (with their block maps). Several servers: announced as the
    // names hold them now; a store that does not say what it moved makes the others drop everything.
    const announced: number[] = [fromDir, toDir];
    let blocks = false;
    if (this.coherence) {
      const [moved, replaced] = await Promise.all([this.inner.lookup(fromDir, fromName), this.inner.lookup(toDir, toName)]);
      if (moved) announced.push(moved.id);
      if (replaced) announced.push(replaced.id);
      blocks = replaced !== null;
    }
    const ticket = await this.announce(announced, blocks);
    this.epoch++;
    this.namespaceChanges++;
    this.globalChanges++;
    let touched: number[] | null = null;
    try {
      const r = await this.inner.rename(fromDir, fromName, toDir, toName, now, expect);
      touched = r.moved === undefined ? null : [fromDir, toDir, r.moved];
      if (touched && r.replaced) touched.push(r.replaced.inode.id, ...r.replaced.streams);
      blocks = r.replaced !== null;
      if (r.replaced?.freed) this.dropBlockMap(r.replaced.inode.id);
      for (const s of r.replaced?.streams ?? []) this.dropBlockMap(s);
      if (r.replaced) {
        this.dropNames(r.replaced.inode.id);
        this.noMeta.delete(r.replaced.inode.id);
      }
      return r;
    } finally {
      this.namespaceChanges--;
      this.globalChanges--;
      // Failed or not: both names may hold something else now.
      this.dropNames(fromDir);
      this.dropNames(toDir);
      this.endEpoch++;
      this.done(ticket, touched ?? announced, blocks);
      // Failed or not, what the rename may have changed is read again (every clean entry when
      // the moved inode is not known: renames are rare next to reads and writes).
      if (touched) this.forget(...touched);
      else for (const id of [...this.inodes.keys()]) this.forget(id);
    }
  }

  // ---- named streams -----------------------------------------------------------------------------

  async listStreams(fileId: number): Promise<StreamEntry[]> {
    // A file made here has none until createStream (a chmod carries its mode to its streams: an
    // untar's every file would cost a query).
    if (this.noMeta.size > 0 && this.isKnownEmpty(fileId, NO_STREAMS, Date.now())) {
      const serving = this.inner.whenServing?.();
      if (serving !== undefined) await serving;
      if ((await this.trusted()) && this.isKnownEmpty(fileId, NO_STREAMS, Date.now())) return [];
    }
    const list = await this.inner.listStreams(fileId);
    // Streams being written: their sizes and times as this process knows them.
    for (const e of list) e.inode = this.asKnown(e.inode);
    return list;
  }

  async lookupStream(fileId: number, name: Buffer): Promise<Inode | null> {
    const epoch = this.fillEpoch();
    const ended = this.endEpoch;
    const seq = this.stampSeq;
    const i = await this.inner.lookupStream(fileId, name);
    return i ? this.remember(i, epoch, ended, seq) : null;
  }

  async createStream(fileId: number, name: Buffer, init: NewInode, now: Timespec): Promise<Inode> {
    await this.before();
    const ticket = await this.announce([fileId]);
    this.epoch++;
    const n = this.noMeta.get(fileId);
    if (n !== undefined) n.kinds &= ~NO_STREAMS;
    let made: Inode | undefined;
    try {
      made = await this.inner.createStream(fileId, name, init, now);
      return this.remember(made, this.fillEpoch());
    } finally {
      this.done(ticket, made ? [fileId, made.id] : [fileId]);
      this.forget(fileId);
    }
  }

  async removeStream(fileId: number, name: Buffer, now: Timespec): Promise<Inode> {
    await this.before();
    const stream = this.coherence ? await this.inner.lookupStream(fileId, name) : null;
    const announced = stream ? [fileId, stream.id] : [fileId];
    const ticket = await this.announce(announced, true);
    this.epoch++;
    let touched = announced;
    try {
      const i = await this.inner.removeStream(fileId, name, now);
      touched = [fileId, i.id];
      this.forget(i.id);
      this.dropBlockMap(i.id);
      return i;
    } finally {
      this.done(ticket, touched, true);
      this.forget(fileId);
    }
  }

  // ---- per-inode records (EAs, security descriptors): only their absence is cached -----------------

  async getMeta(inodeId: number, kind: InodeMetaKind): Promise<InodeMetaRecord[]> {
    const bit = 1 << kind;
    if (((this.noMeta.get(inodeId)?.kinds ?? 0) & bit) !== 0) {
      const serving = this.inner.whenServing?.();
      if (serving !== undefined) await serving;
      const n = (await this.trusted()) && !this.isUncertain(inodeId) ? this.noMeta.get(inodeId) : undefined;
      if (n !== undefined && (n.kinds & bit) !== 0 && Date.now() - n.at < this.ttlMs) return [];
    }
    const epoch = this.fillEpoch();
    const ended = this.endEpoch;
    const seq = this.stampSeq;
    const records = await this.inner.getMeta(inodeId, kind);
    // One server only: with several, a server of an earlier release stores a DACL without
    // announcing it (putMeta without a ctime change was not announced before), and an absence
    // trusted for good would leave that DACL unenforced here.
    if (
      records.length === 0 &&
      !this.coherence &&
      epoch === this.epoch &&
      ended === this.endEpoch &&
      !this.isUncertain(inodeId) &&
      !this.stampedSince(inodeId, seq)
    )
      this.knownEmpty(inodeId, bit);
    return records;
  }

  /** Remembers that the inode has no records of the kinds in `bits` (1 << kind each). */
  private knownEmpty(inodeId: number, bits: number): void {
    const n = this.noMeta.get(inodeId);
    if (n && Date.now() - n.at < this.ttlMs) n.kinds |= bits;
    else {
      if (this.noMeta.size >= this.maxInodes) this.noMeta.clear();
      this.noMeta.set(inodeId, { kinds: bits, at: Date.now() });
    }
  }

  /** Whether the inode is remembered to have no records of the kind (`bit`: 1 << kind), still trusted. */
  private isKnownEmpty(inodeId: number, bit: number, now: number): boolean {
    const n = this.noMeta.get(inodeId);
    return n !== undefined && (n.kinds & bit) !== 0 && now - n.at < this.ttlMs && !this.isUncertain(inodeId);
  }

  async putMeta(
    inodeId: number,
    kind: InodeMetaKind,
    changes: readonly InodeMetaChange[],
    limits: InodeMetaLimits,
    now?: Timespec,
  ): Promise<InodeMetaRecord[]> {
    // With `now` the change moves the ctime: pending attribute changes go first, the cached inode
    // after. Either way the other servers hear of it: they may cache that the inode has no records.
    if (now) await this.before();
    const ticket = await this.announce([inodeId]);
    // A getMeta in flight (started before the change) must not cache what it read.
    this.epoch++;
    this.noMeta.delete(inodeId);
    try {
      return await this.inner.putMeta(inodeId, kind, changes, limits, now);
    } finally {
      if (now) this.forget(inodeId);
      this.noMeta.delete(inodeId);
      this.endEpoch++;
      this.done(ticket, [inodeId]);
    }
  }

  /**
   * The store is asked only about inodes not known to have no records of the kind (a SETATTR of
   * the mode asks whether a DACL must go: for a file made here, no query); the ones it reports
   * without records are remembered so, as getMeta does.
   */
  async metaSizes(inodeIds: readonly number[], kind: InodeMetaKind): Promise<Map<number, number>> {
    const bit = 1 << kind;
    let ask = inodeIds;
    if (this.noMeta.size > 0) {
      const serving = this.inner.whenServing?.();
      if (serving !== undefined) await serving;
      if (await this.trusted()) {
        const now = Date.now();
        ask = inodeIds.filter((id) => !this.isKnownEmpty(id, bit, now));
        if (ask.length === 0) return new Map();
      }
    }
    const epoch = this.fillEpoch();
    const ended = this.endEpoch;
    const seq = this.stampSeq;
    const sizes = await this.inner.metaSizes(ask, kind);
    if (!this.coherence && epoch === this.epoch && ended === this.endEpoch)
      for (const id of ask) if (!sizes.has(id) && !this.isUncertain(id) && !this.stampedSince(id, seq)) this.knownEmpty(id, bit);
    return sizes;
  }

  // ---- block maps --------------------------------------------------------------------------------

  private dropBlockMap(inodeId: number): void {
    const m = this.blocks.get(inodeId);
    if (!m) return;
    this.blockRefs -= m.refs.size;
    this.blocks.delete(inodeId);
    this.touchBlocks(inodeId);
  }

  async getBlocks(inodeId: number, from: number, to: number): Promise<BlockRef[]> {
    const serving = this.inner.whenServing?.();
    if (serving !== undefined) await serving;
    const trusted = await this.trusted();
    const m = this.blocks.get(inodeId);
    if (m && trusted && Date.now() - m.at < this.ttlMs && to - from <= 4096) {
      const out: BlockRef[] = [];
      let complete = true;
      for (let idx = from; idx < to; idx++) {
        const r = m.refs.get(idx);
        if (r === undefined) {
          complete = false;
          break;
        }
        if (r) out.push(r);
      }
      if (complete) return out.map((r) => ({ ...r }));
    }
    const epoch = this.fillEpoch();
    const seq = this.stampSeq;
    const gen = this.blockGen.get(inodeId);
    // A short lookup past the first blocks (an upload asks for its one block) reads ahead as many
    // blocks as precede it, up to BLOCK_LOOKAHEAD, in the same statement: a file written in order
    // then costs one SELECT per 64 blocks uploaded, not one per block. The rows read ahead are
    // cached under the same rules as those asked for (a change of the file's blocks while the
    // query runs, or another server's announced change, keeps or drops them all), and a stale one
    // costs an upload no more than a retry: its block switch is a compare-and-swap on the version
    // read here. Not past `from`: a small file's one block adds no null entries for blocks it never has.
    const ahead = trusted && to - from < BLOCK_LOOKAHEAD ? Math.min(from, BLOCK_LOOKAHEAD - (to - from)) : 0;
    const end = to + ahead;
    const all = await this.inner.getBlocks(inodeId, from, end);
    const refs = ahead === 0 ? all : all.filter((r) => r.index < to);
    if (
      epoch === this.epoch &&
      gen === this.blockGen.get(inodeId) &&
      end - from <= 4096 &&
      !this.isUncertain(inodeId) &&
      !this.stampedSince(inodeId, seq)
    ) {
      let map = this.blocks.get(inodeId);
      if (!map || Date.now() - map.at >= this.ttlMs) {
        if (map) this.dropBlockMap(inodeId);
        map = { refs: new Map(), at: Date.now() };
        this.blocks.set(inodeId, map);
      }
      const before = map.refs.size;
      for (let idx = from; idx < end; idx++) map.refs.set(idx, null);
      for (const r of all) map.refs.set(r.index, { ...r });
      this.blockRefs += map.refs.size - before;
      if (this.blockRefs > this.maxBlockRefs) {
        this.blocks.clear();
        this.blockRefs = 0;
      }
    }
    return refs;
  }

  private touchBlocks(inodeId: number): void {
    if (this.blockGen.size >= this.maxInodes) {
      this.blockGen.clear();
      this.epoch++;
    }
    this.blockGen.set(inodeId, ++this.blockCounter);
  }

  async putBlock(inodeId: number, ref: BlockRef, cas?: BlockSwitch): Promise<BlockRef | null> {
    // The file's written-behind size goes to the store before its block: the WAL segment that held
    // the data retires once the block row is in, and replay could then no longer restore the size.
    // Not needed where an earlier flush already stored a size past the block's data (`cas.end`),
    // and nothing that may lower it came since: a file written in order skips about half of them
    // (the writer is ahead of the uploads). The pending size and times are written behind as
    // usual, and by any COMMIT. What another server may do meanwhile changes nothing here: a
    // truncate of the file under its newer lease fences this switch (the file fence or the
    // block's token: BlockConflictError, stale), and its size token would have refused this
    // server's older size anyway.
    const end = cas?.end;
    if (this.isDirty(inodeId) && !(end !== undefined && (this.sizeStored.get(inodeId) ?? -1) >= end)) await this.flushPending(inodeId);
    const ticket = await this.announce([inodeId], true);
    this.touchBlocks(inodeId);
    try {
      const prev = await this.inner.putBlock(inodeId, ref, cas);
      this.done(ticket, [inodeId], true);
      this.touchBlocks(inodeId);
      const m = this.blocks.get(inodeId);
      if (m) {
        if (!m.refs.has(ref.index)) this.blockRefs++;
        m.refs.set(ref.index, { ...ref });
      }
      return prev;
    } catch (err) {
      this.done(ticket, [inodeId], true);
      // The outcome is unknown (a lost connection): ask the store next time.
      this.dropBlockMap(inodeId);
      throw err;
    }
  }

  async dropBlocks(inodeId: number, from: number, token?: number): Promise<BlockRef[]> {
    this.sizeMayShrink(inodeId);
    const ticket = await this.announce([inodeId], true);
    this.touchBlocks(inodeId);
    try {
      const dropped = await this.inner.dropBlocks(inodeId, from, token);
      this.done(ticket, [inodeId], true);
      this.touchBlocks(inodeId);
      const m = this.blocks.get(inodeId);
      if (m) for (const idx of m.refs.keys()) if (idx >= from) m.refs.set(idx, null);
      return dropped;
    } catch (err) {
      this.done(ticket, [inodeId], true);
      this.dropBlockMap(inodeId);
      throw err;
    }
  }

  /** Forgets what is cached of an inode's blocks (a read found an object missing). */
  invalidateBlocks(inodeId: number): void {
    this.dropBlockMap(inodeId);
  }

  /** Forgets what is cached of an inode not changed here (another server took its write lease). */
  invalidateInode(inodeId: number): void {
    this.sizeMayShrink(inodeId);
    if (!this.isDirty(inodeId)) this.inodes.delete(inodeId);
    this.dropBlockMap(inodeId);
  }

  reserveInodeIds(id: number): Promise<void> {
    return this.inner.reserveInodeIds(id);
  }

  nextLeaseToken(): Promise<number> {
    if (!this.inner.nextLeaseToken) return Promise.reject(new Error(`${this.kind} metadata stores hand out no lease tokens`));
    return this.inner.nextLeaseToken();
  }

  leaseTokensIssued(): Promise<boolean> {
    if (!this.inner.leaseTokensIssued) return Promise.reject(new Error(`${this.kind} metadata stores hand out no lease tokens`));
    return this.inner.leaseTokensIssued();
  }

  fileToken(inodeId: number): Promise<number> {
    return this.inner.fileToken ? this.inner.fileToken(inodeId) : Promise.resolve(0);
  }

  async usage(shareId: number): Promise<ShareUsage> {
    await this.flushAll();
    return this.inner.usage(shareId);
  }
}
