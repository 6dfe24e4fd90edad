// The block service: the data path between the file service and a block store. Every write is
// appended to the WAL (acknowledged as UNSTABLE once appended; COMMIT and FILE_SYNC wait for a
// group-commit fsync) and indexed in memory as a dirty extent of a block version, so reads see it
// at once. A block is uploaded as a new immutable object as soon as it is completely written, when
// it has been idle, or when the WAL runs short of room; the `blocks` row is switched afterwards, the
// previous object deleted, and only then does the version let go of its WAL segments. Reads merge,
// newest last: stored object (or zeros), in-flight versions oldest first, then the dirty version.
import { performance } from 'node:perf_hooks';
import pLimit, { type LimitFunction } from 'p-limit';
import { crc32c } from '@node-rs/crc32';
import { crc32cCombine } from './crc-combine.js';
import type { Logger } from 'pino';
import { BlockConflictError, type BlockRef, type MetadataStore } from '../meta/store.js';
import { errorMessage } from '../error-message.js';
import { randomHex } from '../random-hex.js';
import { settledWithin } from '../timeouts.js';
import { AppendEndMoved, DataCorrupt, storageError, VfsError } from '../vfs/errors.js';
import { compareTimespec, type Timespec } from '../vfs/types.js';
import { BufferPools, type BufferPool } from '../wire/buffer-pool.js';
import { BlockCache } from './cache.js';
import type { DiskBlockCache } from './disk-cache.js';
import type { BlockStore, BlockStoreCapacity } from './store.js';
import {
  RECORD_CUT,
  nonZeroEnd,
  RECORD_TIMES,
  RECORD_TRUNCATE,
  WAL_GONE,
  WAL_NO_ROOM,
  type ReplayRecord,
  type Wal,
  type WalAppend,
  type WalHolder,
  type WalSegment,
} from './wal.js';

/** A half-open byte range [start, end) inside a block. */
type Range = [number, number];

/** Bytes of a WAL record's data each of its chunk CRCs covers: a read of part of a record checks whole chunks. */
const WAL_CHUNK = 64 * 1024;

/**
 * A WAL record's data as logged: `length` bytes in `seg` at `pos`, of the file `inode` from
 * `offset`, with the CRC32C `crc` computed when it was appended. Shared by the extents it was split
 * into: every byte read back from the log is checked against it before it is served or uploaded.
 */
interface LoggedRecord {
  seg: WalSegment;
  pos: number;
  length: number;
  crc: number;
  inode: number;
  offset: number;
  /** The CRC32C of each WAL_CHUNK of its data, from a read of the whole record that matched `crc`. */
  chunks?: Uint32Array;
  /** When a read refused for it was last logged (Date.now()). */
  loggedAt?: number;
}

/** A refused read is logged once per this long per bad record (a client may retry it in a loop). */
const CORRUPT_LOG_EVERY_MS = 60_000;

/** The CRC32C of a record's data (`length` bytes), folded from the CRCs of its WAL_CHUNKs. */
function foldChunks(chunks: Uint32Array, length: number): number {
  let crc = 0;
  for (let i = 0; i < chunks.length; i++) crc = crc32cCombine(crc, chunks[i]!, Math.min(WAL_CHUNK, length - i * WAL_CHUNK));
  return crc;
}

/**
 * Bytes [start, end) of a block written by one WAL record: they live in `seg` at `pos`, and in
 * `mem` until the record is on disk (always, for the memory WAL). A zero extent is a truncate's cut.
 */
interface Extent {
  start: number;
  end: number;
  seg: WalSegment | null;
  pos: number;
  mem: Buffer | null;
  zero: boolean;
  /**
   * The CRC32C of the record's data where this extent holds all of it, from the WAL (undefined
   * otherwise): true of the extent's bytes while `start` and `end` are still `crcOf`'s (clip()
   * cuts extents in place).
   */
  crc?: number;
  crcOf?: Range;
  /** The WAL record the extent's bytes belong to (absent for zeros, and for bytes kept only in memory). */
  rec?: LoggedRecord;
}

/** One version of a block's written bytes. Immutable once it is handed to an upload. */
interface BlockVersion extends WalHolder {
  /** Oldest first: later extents win where they overlap. */
  extents: Extent[];
  /** Written ranges, sorted and merged. */
  ranges: Range[];
  /** When it first became dirty (ms). */
  since: number;
  /** WAL segments this version holds data in (released once it is stored or dropped). */
  segs: Set<WalSegment>;
  /** Once handed to an upload: its outcome (the error, or null once stored). */
  result?: Promise<Error | null>;
  /**
   * The fencing token of the write lease its bytes were written under (0 without coordination):
   * one per version, so that bytes written under an older lease are never stored under a newer one.
   */
  token: number;
}

/** Everything in memory about one block of one file. */
interface BlockState {
  dirty: BlockVersion | null;
  /** Versions handed to uploads, oldest first; the head is the one uploading. */
  inflight: BlockVersion[];
  /** Tail of the upload chain: uploads of one block run one after another. */
  chain: Promise<void>;
  /** Consecutive failed uploads, and when background retries may start again (backoff). */
  failures: number;
  retryAt: number;
  /**
   * A record of the block's data failed its CRC when an upload read it: background uploads (idle
   * flush, WAL pressure) leave the block alone until it is written again; an explicit flush (the
   * server's stop, the share's removal) still tries.
   */
  corrupt?: LoggedRecord;
  /** The bad record last logged for the block (one line per record, however often a flush tries). */
  corruptLogged?: LoggedRecord;
}

/** Replay's view of one file: its size (from the log, and as stored) and the fencing tokens. */
interface ReplaySize {
  size: number;
  metaSize: number;
  /** The file's ctime in the metadata store when replay began. */
  metaCtime: Timespec;
  /** The times of its last RECORD_TIMES record in log order, if any. */
  times?: { mtime: Timespec; ctime: Timespec };
  /** The newest token the file's data was stored or cut under (0 without coordination). */
  stored: number;
  /** The newest token among the file's records. */
  token: number;
}

/** Blocks of the block map dataRanges() reads at a time: at first, and at most (past empty windows). */
const DATA_RANGES_WINDOW = 4096;
const DATA_RANGES_WINDOW_MAX = 1 << 20;

/** A record refused because the file's write lease moved or lost its mark while it waited (checkLease): JUKEBOX. */
class LeaseMoved extends VfsError {
  constructor(why: string) {
    super('JUKEBOX', why);
  }
}

/**
 * A truncate or cut logged and synced, not finished when close() came or once its metadata store
 * failed for good (MetadataStore.failure: only a restart helps then), the store still failing: its
 * WAL record stays, and the next start's replay finishes it.
 */
class Unfinished extends VfsError {
  constructor(what: string, cause: unknown, failedForGood: Error | null) {
    super(
      failedForGood === null ? 'JUKEBOX' : 'IO',
      failedForGood === null
        ? `the server stopped before the ${what} was finished (the next start finishes it): ${errorMessage(cause)}`
        : `the metadata store failed for good before the ${what} was finished (the next start finishes it): ${errorMessage(failedForGood)}`,
    );
  }
}

/**
 * Whether a step of a logged truncate that failed with `e` may work if tried again: the metadata
 * store was unreachable or could not sync, or failed some other way that is not an answer. Not
 * so: the lease moved or the file is gone (replay skips such records too), the store refused the
 * change (a VfsError: a SETATTR guard, say), or this program is at fault.
 */
function retriable(e: unknown): boolean {
  if (leaseRefusal(e)) return false;
  if (e instanceof VfsError) return e.errno === 'JUKEBOX' || e.errno === 'IO' || e.errno === 'NOSPC';
  // A fault of this program comes back the same every time.
  return !(e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError);
}

/**
 * A truncate's cut or size refused by the metadata store as written under an older lease than the
 * file's data was stored or cut under since (this server's lease expired, another one wrote the
 * file): LeaseMoved, as a record checkLease refuses. Nothing of it was stored.
 */
function leaseMovedIfStale(err: unknown): never {
  if (err instanceof BlockConflictError && err.stale)
    throw new LeaseMoved(`the write lease of the file expired and another server wrote it during the truncate: ${err.message}`);
  throw err;
}

/** A refusal because the file's lease moved or a newer lease stored it: replay would skip the record too. */
function leaseRefusal(e: unknown): boolean {
  return e instanceof LeaseMoved || (e instanceof BlockConflictError && e.stale);
}

/** A truncate or cut of a file in progress (BlockService's `cuts`). */
interface CutInProgress {
  /** Settles once it is over. */
  done: Promise<void>;
  /** A step of it waits for the metadata store (untilApplied): `wake` has resolved. */
  stalled: boolean;
  wake: Promise<void>;
  stall: () => void;
}

/** Background retries of a failed upload wait 1 s, 2 s, 4 s ... up to this long. */
const MAX_RETRY_DELAY_MS = 10_000;
/** How often WAL records wait again for a metadata store that could not sync (afterMetaDurable). */
const RELEASE_RETRY_MS = 1_000;
/** Inodes (and deleted keys) a garbage collection run remembers at most (see gcOnce). */
const GC_MEMO_MAX = 65_536;

function addRange(ranges: Range[], start: number, end: number): Range[] {
  const out: Range[] = [];
  let s = start;
  let e = end;
  let placed = false;
  for (const r of ranges) {
    if (r[1] < s) out.push(r);
    else if (r[0] > e) {
      if (!placed) {
        out.push([s, e]);
        placed = true;
      }
      out.push(r);
    } else {
      s = Math.min(s, r[0]);
      e = Math.max(e, r[1]);
    }
  }
  if (!placed) out.push([s, e]);
  return out;
}

/** Drops everything at or past `limit` bytes from a version (extents are cut in place). */
function clip(v: BlockVersion, limit: number): void {
  v.ranges = v.ranges.filter((r) => r[0] < limit).map((r): Range => [r[0], Math.min(r[1], limit)]);
  v.extents = v.extents.filter((e) => e.start < limit);
  for (const e of v.extents) e.end = Math.min(e.end, limit);
}

/**
 * The CRC32C of bytes [0, length) of a version built from its extents alone, when they tile that
 * range exactly (no gap, no overlap, no zeros) and each still holds a whole WAL record's data whose
 * CRC it carries; else undefined. Bytes a disk changed in the WAL after they were logged then fail
 * the S3 checksum and the read cache's check, where a CRC of the bytes read back would store them.
 */
function crcOfRecords(v: { extents: readonly Extent[] }, length: number): number | undefined {
  if (length === 0 || v.extents.length === 0) return undefined;
  const parts = v.extents.length === 1 ? v.extents : [...v.extents].sort((a, b) => a.start - b.start);
  let at = 0;
  let crc = 0;
  for (const e of parts) {
    if (e.zero || e.crc === undefined || e.crcOf === undefined || e.start !== at || e.crcOf[0] !== e.start || e.crcOf[1] !== e.end)
      return undefined;
    crc = crc32cCombine(crc, e.crc, e.end - e.start);
    at = e.end;
  }
  return at === length ? crc : undefined;
}

/**
 * Whether extents after `exts[i]` cover [a, b) of the block entirely (a version's later extents
 * win where they overlap: bytes of `exts[i]` there are never part of what it holds).
 */
function hiddenBy(exts: readonly Extent[], i: number, a: number, b: number): boolean {
  const later: Range[] = [];
  for (let j = i + 1; j < exts.length; j++) {
    const e = exts[j]!;
    if (e.start < b && e.end > a) later.push([e.start, e.end]);
  }
  return coveredTogether(later, a, b);
}

/** Whether `parts` (sorted here, in place) together cover [a, b) (`covers`: one of them alone). */
function coveredTogether(parts: Range[], a: number, b: number): boolean {
  parts.sort((x, y) => x[0] - y[0]);
  let at = a;
  for (const [s, e] of parts) {
    if (s > at) return false;
    at = Math.max(at, e);
    if (at >= b) return true;
  }
  return at >= b;
}

const NO_VERSIONS: readonly BlockVersion[] = [];

/** Whether the written ranges of `versions` together cover [a, b) of the block. */
function writtenOver(versions: readonly BlockVersion[], a: number, b: number): boolean {
  if (versions.length === 0) return false;
  const parts: Range[] = [];
  for (const v of versions) for (const r of v.ranges) if (r[0] < b && r[1] > a) parts.push(r);
  return coveredTogether(parts, a, b);
}

/** Bytes read back from a WAL record that do not match the CRC32C it was logged with. */
export class WalRecordCorrupt extends DataCorrupt {
  constructor(readonly rec: LoggedRecord) {
    super(
      `the WAL record of ${rec.length} bytes at ${rec.pos} in segment ${rec.seg.file ?? rec.seg.id} ` +
        `(inode ${rec.inode}, file offset ${rec.offset}) does not match its CRC32C: its bytes changed on disk after they were logged`,
    );
  }
}

const covers = (ranges: Range[], start: number, end: number): boolean => ranges.some((r) => r[0] <= start && r[1] >= end);

/** `ranges` without [start, end). */
function cutRange(ranges: Range[], start: number, end: number): Range[] {
  const out: Range[] = [];
  for (const r of ranges) {
    if (r[1] <= start || r[0] >= end) out.push(r);
    else {
      if (r[0] < start) out.push([r[0], start]);
      if (r[1] > end) out.push([end, r[1]]);
    }
  }
  return out;
}

const rangesEnd = (ranges: Range[]): number => (ranges.length === 0 ? 0 : ranges[ranges.length - 1]![1]);

const isRetry = (err: unknown): boolean => {
  const code = (err as { code?: string }).code;
  return code === MISSING || code === WAL_GONE;
};

export interface BlockServiceOptions {
  /** The share's id: WAL records carry it, so one log serves every share. */
  shareId: number;
  /** Distinguishes this share's objects inside a block store other shares may use too. */
  keyPrefix: string;
  blockSize: number;
  wal: Wal;
  cache: BlockCache;
  /** Upload blocks that have been dirty this long (ms). */
  idleFlushMs?: number;
  /**
   * Blocks not completely written wait past `idleFlushMs` while the service keeps taking writes
   * (see BusyDefer); absent: none waits.
   */
  busyDefer?: BusyDefer;
  /**
   * How long a writer waits for WAL room before the write is refused (ms): JUKEBOX when the log is
   * at its size limit, NOSPC when its volume is full.
   */
  maxWriteWaitMs?: number;
  /** At close, how long dirty data may take to upload so that the WAL is left empty (ms). */
  closeFlushMs?: number;
  /** Garbage collection of unreferenced objects runs this often (ms; 0 = only when called). */
  gcIntervalMs?: number;
  /** Bounds the uploads in flight (share one between the services of a server); default: 16. */
  uploads?: LimitFunction;
  /** Where uploads get their block buffers (share one between the services of a server). */
  buffers?: BufferPools;
  /**
   * The read cache on local disk, for a remote block store: objects uploaded or fetched are kept
   * there, under `namespace` (the block store's name), and read from there before the store.
   */
  diskCache?: { cache: DiskBlockCache; namespace: string };
  log?: Logger;
  /** Called when an upload fails (metrics); the data stays dirty and is retried. */
  onUploadFailed?: (err: Error) => void;
  /** Called when WAL data fails its CRC: a READ refused, or an upload stopped (metrics). */
  onDataCorrupt?: (operation: 'read' | 'upload') => void;
  /** Several servers on one store: the files' write leases (absent: this server is the only writer). */
  leases?: WriteLeases;
}

/**
 * Write leases of several servers on one store (coord/leases.ts). `token` resolves to the fencing
 * token under which a write or truncate of the file may be logged now; it answers synchronously
 * (a number) while this server holds the lease, and rejects with JUKEBOX when it cannot get it.
 */
export interface WriteLeases {
  token(inodeId: number): number | Promise<number>;
  /**
   * Before a read: undefined when this server holds the file's lease; else resolves true once what
   * another server acknowledged is stored and this server's cache of the file may be dropped.
   */
  fresh?(inodeId: number): Promise<boolean> | undefined;
  /** Before a listing: of `inodeIds`, those another server wrote, stored first; resolves those to read again. */
  freshMany?(inodeIds: readonly number[]): Promise<number[]>;
  /**
   * True while this server still holds the file's lease under `token` and the file is marked as
   * written here (checked when a write that may have waited is appended).
   */
  holds(inodeId: number, token: number): boolean;
  /** As holds(), marked or not: a write refused only for want of the mark takes its token again. */
  heldUnder?(inodeId: number, token: number): boolean;
  /** After a replay: hold the leases of the files with replayed data, so readers elsewhere wait for it. */
  adopt?(inodeIds: readonly number[]): Promise<void>;
}

/**
 * How uploads of blocks not completely written (small files, the tails of others) give way to a
 * burst of writes. Such a block is due for upload `idleFlushMs` after the first write of its
 * current version; while the share took a write in the last `quietMs`, a due block waits, until
 * `maxMs` after that first write, and `maxBlocks` of them at most (the oldest beyond go). An untar
 * or `npm ci` is then not slowed by the uploads of its first files (each small file's upload costs
 * more CPU and fsyncs than its CREATE, WRITE and SETATTRs: test/bench/untar-replay.ts), they run
 * once the burst is over, and the files it removes meanwhile are never uploaded.
 * Nothing waits once the WAL holds a quarter of its limit (a waiting block keeps its segment, and
 * every newer one, from being let go), nor a block whose upload failed; complete blocks, flushes,
 * WAL pressure and close never wait. While blocks wait, each idle-flush tick also fsyncs the WAL,
 * so that data no COMMIT covered is on disk as soon as an upload would have put it there.
 * Only for a block store on the WAL's own volume and one server (see shares.ts): there an upload
 * adds no durability to a synced WAL, only a copy on the same disk.
 */
export interface BusyDefer {
  maxMs: number;
  quietMs: number;
  maxBlocks: number;
}

/**
 * BusyDefer for a filesystem block store on the WAL's volume. maxMs is not what bounds the WAL,
 * the memory or a restart's replay (maxBlocks and the WAL's quarter are, and a fast burst reaches
 * them in less than a minute): it only lets a block of a share that never pauses go some time.
 * At 60 s the uploads of a 10,000-file untar through the kernel client (96 s in the VM) ran in
 * its last third, beside its own calls.
 */
export const LOCAL_BUSY_DEFER: Readonly<BusyDefer> = Object.freeze({ maxMs: 300_000, quietMs: 1_000, maxBlocks: 16_384 });

/** A block switch that lost a race with another server is built again on the new row this often at most. */
const MAX_SWITCH_ATTEMPTS = 8;

const MISSING = 'DITTOFS_BLOCK_MISSING';
/** Blocks fetched ahead of a sequential read (4 x 4 MiB by default: enough to hide S3 latency). */
const READ_AHEAD_BLOCKS = 4;
/** Files whose last read block is remembered (see lastReadBlock). */
const SEQUENTIAL_FILES = 256;

/** At close, dirty data gets this long to reach the block store (the rest is replayed at the next start). */
const CLOSE_FLUSH_MS = 15_000;
/**
 * A COMMIT's RECORD_TIMES record holds its segment this long before it asks for the file's
 * metadata to be durable (by then the cache has written it behind and the store synced it, so
 * that asking costs nothing); checked at each idle-flush tick.
 */
const TIMES_HOLD_MS = 2_000;

/** Uploads in flight at once per server unless configured: each holds one block in memory. */
export const DEFAULT_PARALLEL_UPLOADS = 16;

/** Free block buffers kept for the next uploads, per block size (16 MiB: four 4 MiB blocks). */
export const KEPT_BLOCK_BUFFER_BYTES = 16 * 1024 * 1024;
/** Block buffers of the server are trimmed to KEPT_BLOCK_BUFFER_BYTES after this long unused. */
export const BLOCK_BUFFERS_IDLE_MS = 30_000;

/** The part of an object key after the share prefix: `INODE/INDEX-VERSION-RANDOM`. */
const KEY_RE = /^(\d+)\/(\d+)-\d+-[0-9a-f]+$/;
/** Frees of removed files running in the background at most (freeInBackground); more wait for room. */
export const MAX_BACKGROUND_FREES = 64;

export interface GcResult {
  scanned: number;
  deleted: number;
  /** Files deleted before their blocks were freed (a crash in between): their rows are dropped too. */
  deadFiles: number;
}

export class BlockService {
  readonly blockSize: number;
  private readonly wal: Wal;
  /** inode -> block index -> state. */
  private readonly files = new Map<number, Map<number, BlockState>>();
  /** Inodes being freed or already freed: their data must never be stored again. */
  private readonly freed = new Set<number>();
  /** Block-map switches (putBlock) begun plus finished: see putMark() and free(). */
  private putEvents = 0;
  /** inode -> byte size below which data may live (set by truncate while uploads finish). */
  private readonly limits = new Map<number, number>();
  /**
   * inode -> a truncate or cut in progress (`done` settles once it is over): writes of the file wait
   * for it, so that memory is cut where the log is (replay keeps a write logged after the cut; the
   * cut must not drop it from memory meanwhile). Once a step of it failed for want of the metadata
   * store and waits to be tried again (untilApplied), it is `stalled` and `wake` resolves: the
   * file's writes and truncates answer JUKEBOX ("try again later") instead of waiting for the whole
   * outage (a client's writes to that file would fill its connection's calls in flight and stall
   * every other file on its mount).
   */
  private readonly cuts = new Map<number, CutInProgress>();
  /**
   * Several servers: files whose truncate or cut (in `cuts`) is logged, under the lease held then,
   * and not over yet (its data cut, its size stored). A hand-over or a read elsewhere has the file
   * stored only after it (flush): else the other server could write the file under its new lease
   * before this truncate's size is stored over what it wrote, or read the size from before it
   * while it is acknowledged unmarked here.
   */
  private readonly loggedCuts = new Set<number>();
  /**
   * inode -> where its truncate or cut (truncateData) cuts the data, from its first step until its
   * data is cut: once the dirty bytes past the cut are dropped, the block map still holds the older
   * stored bytes there until its change is made (tried again while the metadata store fails, see
   * untilApplied). Reads and dataRanges see zeros past the cut meanwhile, as they will after it,
   * never bytes that acknowledged writes had replaced.
   */
  private readonly cutting = new Map<number, number>();
  /** RECORD_TIMES records holding their segments (see logTimes); `at`: performance.now(). */
  private readonly timesHolds = new Map<WalHolder, { inodeId: number; seg: WalSegment; at: number }>();
  /**
   * inode -> writes of the file waiting for WAL room (past the gate above, not appended yet), and
   * who waits for them: a truncate or cut is logged after them, as memory has them first.
   */
  private readonly roomWaits = new Map<number, { n: number; idle: (() => void)[] }>();
  private readonly timer: NodeJS.Timeout;
  /** Date.now() of the last write taken (see BusyDefer). */
  private lastWriteAt = 0;
  /** Blocks due for upload that the last idle-flush tick kept back (see BusyDefer). */
  private deferred = 0;
  private closed = false;
  /** While replaying the WAL no upload starts: each block is uploaded once, with its final content. */
  private replaying = false;
  /** Keys being uploaded whose `blocks` row is not committed yet: garbage collection skips them. */
  private readonly uploading = new Set<string>();
  /** Block objects being fetched: a read of one that a prefetch is already loading waits for it. */
  private readonly loading = new Map<string, Promise<Buffer>>();
  /**
   * The last block each recently read file was read in (with a disk read cache; at most
   * SEQUENTIAL_FILES, the first read first out): a read starting in that block or the next is
   * sequential, and only those read the disk read cache ahead (a random reader would make the
   * device read 16 MiB per READ).
   */
  private readonly lastReadBlock = new Map<number, number>();
  private readonly gcTimer: NodeJS.Timeout | null;
  private readonly uploads: LimitFunction;
  /** Buffers blocks are assembled in for upload, reused once the store has them. */
  private readonly blockBuffers: BufferPool;
  private gcRunning: Promise<GcResult> | null = null;
  /** free() calls running in the background (freeInBackground), at most MAX_BACKGROUND_FREES. */
  private readonly freeing = new Set<Promise<void>>();
  /** WAL records let go once their file's metadata changes are durable (afterMetaDurable), by inode. */
  private readonly toRelease = new Map<number, (() => void)[]>();
  /** Set by releaseForgotten: records are let go without waiting for the metadata (a flush in flight too). */
  private forgotten = false;
  /** The releases of drainReleases' round in flight (its flush may never settle: the store is gone). */
  private releasing: [number, (() => void)[]][] | null = null;
  /** The loop that makes those changes durable and lets go of the records (drainReleases). */
  private draining: Promise<void> | null = null;
  /**
   * The records of truncates and cuts left Unfinished, held for the next start's replay; let go by
   * releaseForgotten (a removed share's data is stored: replay skips its records).
   */
  private readonly unfinished = new Map<WalHolder, WalSegment>();

  constructor(
    private readonly store: BlockStore,
    private readonly meta: MetadataStore,
    private readonly opts: BlockServiceOptions,
  ) {
    this.blockSize = opts.blockSize;
    this.wal = opts.wal;
    this.uploads = opts.uploads ?? pLimit(DEFAULT_PARALLEL_UPLOADS);
    this.blockBuffers = (opts.buffers ?? new BufferPools(KEPT_BLOCK_BUFFER_BYTES, true, DEFAULT_PARALLEL_UPLOADS)).forSize(opts.blockSize);
    const idle = opts.idleFlushMs ?? 5000;
    this.timer = setInterval(() => this.flushIdle(idle), Math.max(250, Math.floor(idle / 2)));
    this.timer.unref();
    const gcEvery = opts.gcIntervalMs ?? 3_600_000;
    this.gcTimer = gcEvery > 0 ? setInterval(() => void this.collectGarbage().catch(() => undefined), gcEvery) : null;
    this.gcTimer?.unref();
  }

  /** Whether uploads of partial blocks give way to bursts of writes (BusyDefer). */
  get defersWhileBusy(): boolean {
    return this.opts.busyDefer !== undefined;
  }

  /** Blocks due for upload that the last idle-flush tick kept back (BusyDefer; tests, diagnostics). */
  get deferredBlocks(): number {
    return this.deferred;
  }

  private state(inodeId: number, index: number): BlockState {
    let m = this.files.get(inodeId);
    if (!m) this.files.set(inodeId, (m = new Map<number, BlockState>()));
    let s = m.get(index);
    if (!s) m.set(index, (s = { dirty: null, inflight: [], chain: Promise.resolve(), failures: 0, retryAt: 0 }));
    return s;
  }

  private dropStateIfIdle(inodeId: number, index: number, s: BlockState): void {
    if (s.dirty || s.inflight.length > 0) return;
    const m = this.files.get(inodeId);
    if (m?.get(index) !== s) return;
    m.delete(index);
    if (m.size === 0) this.files.delete(inodeId);
  }

  private hold(v: BlockVersion, seg: WalSegment | null): void {
    if (!seg || v.segs.has(seg)) return;
    v.segs.add(seg);
    this.wal.hold(seg, v);
  }

  /** Where the bytes a block's versions in memory hold end (0 for none). */
  private writtenEnd(s: BlockState | undefined): number {
    let end = 0;
    if (s) for (const v of s.dirty ? [...s.inflight, s.dirty] : s.inflight) end = Math.max(end, rangesEnd(v.ranges));
    return end;
  }

  /** The version is stored or dropped: its WAL segments may go. */
  private releaseVersion(v: BlockVersion): void {
    for (const seg of v.segs) this.wal.release(seg, v);
    v.segs.clear();
  }

  /** Puts `older` underneath `newer`: `newer` keeps its bytes and gains the older ones it lacks. */
  private mergeUnder(newer: BlockVersion, older: BlockVersion): void {
    newer.extents = older.extents.concat(newer.extents);
    for (const r of older.ranges) newer.ranges = addRange(newer.ranges, r[0], r[1]);
    newer.since = Math.min(newer.since, older.since);
    for (const seg of older.segs) this.hold(newer, seg);
    this.releaseVersion(older);
  }

  // ---- writes ----------------------------------------------------------------------------------

  /**
   * Appends `data` to the WAL and indexes it. Once this settles nothing here refers to `data` any
   * more: the caller may reuse its buffer (the RPC layer does, for the next WRITE's record).
   * `admitted` runs (synchronously) once the write has passed a truncate or cut of the file in
   * progress and its record is appended, in the same turn: the file service stores the new size
   * then, so that the sizes and the data change in the same order (a size change made earlier would
   * land before a truncate that the data lands after), with the lease token the write is logged
   * under (0 with one server) to store it under (AttrChanges.sizeToken). A write refused before its
   * append (no WAL room in time, the lease gone meanwhile) never runs it: its size is not taken.
   * With `underToken` (from writeToken: an append's offset, the end of the file read under that
   * lease; 0 with one server) it is refused (AppendEndMoved) unless written under that very lease
   * and past no truncate or cut of the file in progress (which the end was read before).
   */
  async write(inodeId: number, offset: number, data: Buffer, admitted?: (token: number) => void, underToken?: number): Promise<void> {
    let token = 0;
    if (this.opts.leases) {
      // Held: a number at once, so that appends stay in call order as below.
      const t = this.opts.leases.token(inodeId);
      token = typeof t === 'number' ? t : await t;
      // An offset computed under a lease (an append's end of file) is only right under that lease.
      if (underToken !== undefined && token !== underToken)
        throw new AppendEndMoved('the write lease of the file moved to another server while the append looked for its end');
    }
    let cutWaited = false;
    let a!: WalAppend;
    for (let attempt = 0; ; attempt++) {
      for (let cut = this.cuts.get(inodeId); cut !== undefined; cut = this.cuts.get(inodeId)) {
        cutWaited = true;
        await this.cutPassed(inodeId, cut);
      }
      // An append's end was read before the truncate it waited for: past it, that end is wrong.
      if (cutWaited && underToken !== undefined) throw new AppendEndMoved('the file was truncated while the append looked for its end');
      this.lastWriteAt = Date.now();
      try {
        // Appended before any await when there is room: appends (and the index) stay in call order.
        // A truncate that comes while this waits for room waits for it (roomWaits).
        a = await this.appendWithRoom(() => {
          // A write that waited (for a cut, for room) may come after the lease was handed over: never
          // logged or acknowledged then (its bytes may be refused as older than the next holder's);
          // the client sends it again.
          this.checkLease(inodeId, token, 'write');
          const appended = this.wal.appendWrite(this.opts.shareId, inodeId, offset, data, token);
          admitted?.(token);
          return appended;
        }, inodeId);
        break;
      } catch (e) {
        // Logged past any cut begun while the token was taken again (the loop waits for it).
        if (!(await this.retaken(e, inodeId, token, attempt))) throw e;
      }
    }
    // Without a persistent log the extents keep the bytes for good: they get their own copy.
    const exts = this.addWrite(inodeId, offset, data.length, a.seg, a.pos, this.wal.persistent ? data : Buffer.from(data), token, a.crc);
    try {
      await a.done;
    } catch (err) {
      // The bytes stay indexed (from a copy in memory) so they are not lost from view, but the
      // client is told.
      for (const e of exts) if (e.mem) e.mem = Buffer.from(e.mem);
      throw storageError('could not write the WAL', err);
    }
    if (this.wal.persistent) for (const e of exts) e.mem = null;
  }

  /**
   * Several servers: takes (or keeps) this server's write lease of the file, so that its size as
   * read now is the last writer's until `write(…, underToken)` with the token returned; 0 with one
   * server (nothing to take).
   */
  writeToken(inodeId: number): number | Promise<number> {
    return this.opts.leases?.token(inodeId) ?? 0;
  }

  /** Indexes `length` bytes written at `offset`, found in `seg` at `pos` (and in `mem`, if given). */
  private addWrite(
    inodeId: number,
    offset: number,
    length: number,
    seg: WalSegment,
    pos: number,
    mem: Buffer | null,
    token: number,
    crc?: number,
  ): Extent[] {
    const bs = this.blockSize;
    const exts: Extent[] = [];
    const rec: LoggedRecord | undefined = crc === undefined ? undefined : { seg, pos, length, crc, inode: inodeId, offset };
    let done = 0;
    while (done < length) {
      const abs = offset + done;
      const index = Math.floor(abs / bs);
      const inBlock = abs - index * bs;
      const n = Math.min(bs - inBlock, length - done);
      const v = this.dirtyVersion(inodeId, index, token);
      const e: Extent = {
        start: inBlock,
        end: inBlock + n,
        seg,
        pos: pos + done,
        mem: mem ? mem.subarray(done, done + n) : null,
        zero: false,
      };
      if (rec !== undefined) e.rec = rec;
      if (crc !== undefined && n === length) {
        e.crc = crc;
        e.crcOf = [e.start, e.end];
      }
      v.extents.push(e);
      exts.push(e);
      v.ranges = addRange(v.ranges, inBlock, inBlock + n);
      this.hold(v, seg);
      if (!this.replaying && covers(v.ranges, 0, bs)) void this.startUpload(inodeId, index);
      done += n;
    }
    return exts;
  }

  private dirtyVersion(inodeId: number, index: number, token: number): BlockVersion {
    const s = this.state(inodeId, index);
    // Written again: background uploads may try the block again (new bytes may hide a bad record's).
    if (s.corrupt !== undefined) s.corrupt = undefined;
    // Written under another lease than the dirty bytes: those are stored (or refused) on their own
    // first. While replaying, they wait in line (sealed) until the replay is over.
    if (s.dirty && s.dirty.token !== token) {
      if (this.replaying) {
        s.inflight.push(s.dirty);
        s.dirty = null;
      } else {
        void this.startUpload(inodeId, index);
      }
    }
    s.dirty ??= {
      token,
      extents: [],
      ranges: [],
      since: Date.now(),
      segs: new Set(),
      kick: () => void this.startUpload(inodeId, index, true),
    };
    return s.dirty;
  }

  /**
   * Appends a record, waiting first while the WAL is at its size limit or has no room for its next
   * segment (backpressure: the oldest data is uploaded meanwhile, which frees room). Refused with
   * JUKEBOX when the block store does not keep up in time, and with NOSPC when the WAL's volume is
   * full and waiting cannot help: nothing left to upload, or the wait ran out.
   */
  private async appendWithRoom(append: () => WalAppend, writeOf?: number): Promise<WalAppend> {
    let deadline = 0;
    let waits: { n: number; idle: (() => void)[] } | undefined;
    try {
      for (;;) {
        if (this.wal.full) {
          deadline ||= Date.now() + (this.opts.maxWriteWaitMs ?? 60_000);
          waits ??= this.waitingForRoom(writeOf);
          await this.relievePressure(deadline);
        }
        try {
          return append();
        } catch (err) {
          if ((err as { code?: unknown }).code !== WAL_NO_ROOM) throw storageError('could not append to the WAL', err);
          deadline ||= Date.now() + (this.opts.maxWriteWaitMs ?? 60_000);
          waits ??= this.waitingForRoom(writeOf);
          await this.waitForSegment(deadline, err as Error);
        }
      }
    } finally {
      if (waits && --waits.n === 0) {
        this.roomWaits.delete(writeOf!);
        for (const f of waits.idle) f();
      }
    }
  }

  /** Counts a write of `inodeId` (if any) as waiting for WAL room (see `roomWaits`). */
  private waitingForRoom(inodeId: number | undefined): { n: number; idle: (() => void)[] } | undefined {
    if (inodeId === undefined) return undefined;
    let w = this.roomWaits.get(inodeId);
    if (!w) this.roomWaits.set(inodeId, (w = { n: 0, idle: [] }));
    w.n++;
    return w;
  }

  /** One round of waiting for the WAL's next segment (its volume may be full). */
  private async waitForSegment(deadline: number, why: Error): Promise<void> {
    if (!this.wal.writable) {
      const holders = this.wal.oldestHolders();
      if (holders.length === 0) {
        // Nothing in the log to upload: only space freed elsewhere on the volume can help.
        if (!(await this.wal.makeRoom())) throw new VfsError('NOSPC', `the WAL cannot take more data: ${why.message}`);
        return;
      }
      for (const h of holders) h.kick();
    }
    if (Date.now() >= deadline) {
      throw this.wal.writable
        ? new VfsError('JUKEBOX', `the WAL is not ready for more data: ${why.message}`)
        : new VfsError('NOSPC', 'the WAL volume is full and uploads did not free space in time');
    }
    await this.wal.waitRoom(50);
  }

  /** Writers wait while the WAL is full (backpressure) and the oldest data is stored; then JUKEBOX. */
  private async relievePressure(deadline: number): Promise<void> {
    while (this.wal.full) {
      if (Date.now() >= deadline) throw new VfsError('JUKEBOX', 'the WAL is full and the block store is not keeping up');
      const holders = this.wal.oldestHolders();
      for (const h of holders) h.kick();
      if (holders.length === 0) {
        const oldest = this.oldestDirty();
        if (oldest) void this.startUpload(oldest[0], oldest[1], true);
      }
      await this.wal.waitRoom(50);
    }
  }

  private oldestDirty(): [number, number] | null {
    let best: [number, number] | null = null;
    let since = Infinity;
    for (const [ino, m] of this.files) {
      for (const [index, s] of m) {
        if (s.dirty && s.dirty.since < since) {
          since = s.dirty.since;
          best = [ino, index];
        }
      }
    }
    return best;
  }

  private flushIdle(idleMs: number): void {
    this.releaseTimesFrom(performance.now() - TIMES_HOLD_MS);
    // While replaying, versions set aside under older leases go first once it is over.
    if (this.replaying) return;
    const now = Date.now();
    const cutoff = now - idleMs;
    const defer = this.opts.busyDefer;
    const busy = defer !== undefined && now - this.lastWriteAt < defer.quietMs && this.wal.usedBytes * 4 < this.wal.maxBytes;
    // Due blocks that may wait (see BusyDefer): first written since `oldest`, never failed. A
    // complete block is not among them: its upload started when it became complete.
    const oldest = busy ? now - defer.maxMs : Infinity;
    const waiting: { since: number; ino: number; index: number }[] = [];
    for (const [ino, m] of this.files) {
      for (const [index, s] of m) {
        const v = s.dirty;
        if (v === null || v.since > cutoff) continue;
        if (v.since > oldest && s.failures === 0) waiting.push({ since: v.since, ino, index });
        else void this.startUpload(ino, index, true);
      }
    }
    // Beyond maxBlocks, the oldest go.
    const over = waiting.length - (defer?.maxBlocks ?? 0);
    if (over > 0) {
      waiting.sort((a, b) => a.since - b.since);
      for (const w of waiting.splice(0, over)) void this.startUpload(w.ino, w.index, true);
    }
    this.deferred = waiting.length;
    // Data no COMMIT covered reaches the disk as an upload would have put it there.
    if (waiting.length > 0) void this.wal.sync().catch(() => undefined);
  }

  /**
   * Hands the dirty version of a block to the upload chain. Resolves with the upload's error, or
   * null once that version (and every earlier one) is stored. Never rejects. A background start
   * (idle flush, WAL pressure) waits out the backoff after failures; an explicit flush does not.
   */
  private startUpload(inodeId: number, index: number, background = false): Promise<Error | null> {
    const s = this.files.get(inodeId)?.get(index);
    if (!s) return Promise.resolve(null);
    if (background && s.dirty && (s.corrupt !== undefined || Date.now() < s.retryAt)) return Promise.resolve(null);
    const v = s.dirty;
    if (!v) return this.waitInflight(s);
    s.dirty = null;
    s.inflight.push(v);
    return this.chainUpload(inodeId, index, s, v);
  }

  /** Queues the upload of `v` (already in `s.inflight`) after the block's earlier ones. */
  private chainUpload(inodeId: number, index: number, s: BlockState, v: BlockVersion): Promise<Error | null> {
    const result = s.chain.then(() => this.uploads(() => this.upload(inodeId, index, s, v)));
    v.result = result;
    s.chain = result.then(() => undefined);
    return result;
  }

  /** Resolves when the versions of a block in flight now are settled: their first error, or null. */
  private async waitInflight(s: BlockState): Promise<Error | null> {
    const results = await Promise.all(s.inflight.map((v) => v.result ?? Promise.resolve(null)));
    return results.find((e) => e !== null) ?? null;
  }

  /**
   * Copies the bytes `v` holds in [from, to) of its block into `target` at `targetStart`. Bytes
   * read back from the WAL are checked against their record's CRC32C first: WalRecordCorrupt when
   * they do not match, unless later extents of `v` hide every one of them (they are not wanted).
   */
  private async materialize(
    v: BlockVersion,
    from: number,
    to: number,
    target: Buffer,
    targetStart: number,
    /** Newer versions a READ lays over this one's bytes after it (their written ranges win). */
    above: readonly BlockVersion[] = NO_VERSIONS,
  ): Promise<void> {
    const exts = v.extents;
    for (let i = 0; i < exts.length; i++) {
      const e = exts[i]!;
      const a = Math.max(e.start, from);
      const b = Math.min(e.end, to);
      if (a >= b) continue;
      const t = targetStart + (a - from);
      if (e.zero) target.fill(0, t, t + (b - a));
      else if (e.mem) e.mem.copy(target, t, a - e.start, b - e.start);
      else if (e.seg) {
        try {
          await this.readLogged(e, e.pos + (a - e.start), b - a, target, t);
        } catch (err) {
          if (!(err instanceof WalRecordCorrupt) || !(hiddenBy(exts, i, a, b) || writtenOver(above, a, b))) throw err;
        }
      }
    }
  }

  /**
   * Reads `length` bytes of extent `e`'s segment at `pos` into `target` at `targetStart`, checked
   * against the CRC32C of the record they belong to. A read of a whole record checks the bytes
   * read (no copy). A read of part of one checks the WAL_CHUNKs it touches against their CRCs,
   * learnt by reading the whole record once and matching it against the record's CRC.
   */
  private async readLogged(e: Extent, pos: number, length: number, target: Buffer, targetStart: number): Promise<void> {
    const rec = e.rec;
    const seg = e.seg!;
    if (rec === undefined) {
      await this.wal.read(seg, pos, length, target, targetStart);
      return;
    }
    const at = pos - rec.pos;
    if (at === 0 && length === rec.length) {
      await this.wal.read(seg, pos, length, target, targetStart);
      if (crc32c(target.subarray(targetStart, targetStart + length)) !== rec.crc) throw new WalRecordCorrupt(rec);
      return;
    }
    const chunks = rec.chunks;
    if (chunks === undefined) {
      const all = Buffer.allocUnsafe(rec.length);
      await this.wal.read(seg, rec.pos, rec.length, all, 0);
      const cs = new Uint32Array(Math.ceil(rec.length / WAL_CHUNK));
      for (let c = 0; c < cs.length; c++) cs[c] = crc32c(all.subarray(c * WAL_CHUNK, Math.min(rec.length, (c + 1) * WAL_CHUNK)));
      if (foldChunks(cs, rec.length) !== rec.crc) throw new WalRecordCorrupt(rec);
      rec.chunks = cs;
      all.copy(target, targetStart, at, at + length);
      return;
    }
    const first = Math.floor(at / WAL_CHUNK);
    const last = Math.floor((at + length - 1) / WAL_CHUNK);
    const from = first * WAL_CHUNK;
    const to = Math.min(rec.length, (last + 1) * WAL_CHUNK);
    // Whole chunks wanted: read straight into the answer.
    const direct = from === at && to === at + length;
    const buf = direct ? target.subarray(targetStart, targetStart + length) : Buffer.allocUnsafe(to - from);
    await this.wal.read(seg, rec.pos + from, to - from, buf, 0);
    for (let c = first; c <= last; c++) {
      const o = (c - first) * WAL_CHUNK;
      if (crc32c(buf.subarray(o, Math.min(buf.length, o + WAL_CHUNK))) !== chunks[c]) throw new WalRecordCorrupt(rec);
    }
    if (!direct) buf.copy(target, targetStart, at - from, at - from + length);
  }

  private async upload(inodeId: number, index: number, s: BlockState, v: BlockVersion): Promise<Error | null> {
    let replaced: BlockRef | null = null;
    let error: Error | null = null;
    let uploadingKey: string | null = null;
    let content: Buffer | null = null;
    let storedLength = 0;
    /** The CRC32C of what was stored, where the read cache keeps a copy (undefined otherwise). */
    let storedCrc: number | undefined;
    let stored = false;
    /** The file was removed: the version's records go once the removal is durable (see free()). */
    let gone = false;
    try {
      const limit = this.limits.get(inodeId);
      if (limit !== undefined) clip(v, Math.max(0, limit - index * this.blockSize));
      if (v.ranges.length === 0) return null;
      if (this.freed.has(inodeId) || !(await this.meta.getInode(inodeId))) {
        gone = true;
        return null;
      }
      // The switch is a compare-and-swap on the version read here: another server (or a stale
      // write of this one) that switched the block meanwhile makes it fail, and the block is built
      // again on the new row, or dropped if that row was written under a newer lease.
      for (let attempt = 1; ; attempt++) {
        const [prev] = await this.meta.getBlocks(inodeId, index, index + 1);
        let length = rangesEnd(v.ranges);
        if (prev && prev.length > length) length = prev.length;
        if (content !== null && content.length !== length) {
          this.blockBuffers.give(content);
          content = null;
        }
        content ??= this.blockBuffers.take(length);
        stored = false;
        if (!covers(v.ranges, 0, length)) {
          content.fill(0);
          if (prev) {
            const base = await this.readObject(prev);
            base.copy(content, 0, 0, Math.min(base.length, length));
          }
        }
        await this.materialize(v, 0, length, content, 0);
        // A cut (truncate, or a zeroed range up to the end of the file) leaves zeros at the end of
        // the block: they are not stored (past its object a block reads as zeros), so that a zeroed
        // range stays a hole (FSCTL_QUERY_ALLOCATED_RANGES).
        if (v.extents.some((e) => e.zero)) length = nonZeroEnd(content.subarray(0, length), 0);
        const version = (prev?.version ?? 0) + 1;
        const key = `${this.opts.keyPrefix}/${inodeId}/${index}-${version}-${randomHex(4)}`;
        this.uploading.add(key);
        uploadingKey = key;
        storedLength = length;
        const body = length === content.length ? content : content.subarray(0, length);
        // The read cache's entry carries the block's CRC32C, and an s3 store sends one with it:
        // once here for both, from the WAL records' CRCs where their data makes up the whole block
        // (a file written in order), else computed (about 0.2 CPU s per GiB).
        storedCrc = this.opts.diskCache ? (crcOfRecords(v, length) ?? crc32c(body)) : undefined;
        await this.store.put(key, body, storedCrc === undefined ? undefined : { crc32c: storedCrc });
        // Only a completed put is known to be done with the buffer (a failed one may still be sending).
        stored = true;
        if (this.freed.has(inodeId)) {
          gone = true;
          await this.store.delete(key);
          return null;
        }
        this.putEvents++;
        try {
          replaced = await this.meta.putBlock(
            inodeId,
            { index, key, length, version },
            { prevVersion: prev?.version ?? 0, token: v.token, end: index * this.blockSize + rangesEnd(v.ranges) },
          );
        } catch (err) {
          if (!(err instanceof BlockConflictError)) throw err;
          this.uploading.delete(key);
          uploadingKey = null;
          await this.store.delete(key).catch(() => undefined);
          this.meta.invalidateBlocks?.(inodeId);
          if (err.stale) {
            // Written under a lease another server has had since, and stored over: these bytes
            // are older than what is stored, and must never replace it.
            this.opts.log?.error(
              { inode: inodeId, block: index, token: v.token, err: err.message },
              'dropped data written under an expired write lease: a newer write of another server is stored there',
            );
            return null;
          }
          if (attempt >= MAX_SWITCH_ATTEMPTS) throw err;
          continue;
        } finally {
          this.putEvents++;
        }
        break;
      }
      if (replaced?.key === uploadingKey) replaced = null;
      // Reading it back soon is likely: keep a local copy (before the buffer goes back to the pool).
      const disk = this.opts.diskCache;
      if (disk && uploadingKey !== null)
        await disk.cache.put(
          disk.namespace,
          uploadingKey,
          storedLength === content.length ? content : content.subarray(0, storedLength),
          true,
          storedCrc,
        );
      if (s.failures > 0)
        this.opts.log?.info({ inode: inodeId, block: index, failures: s.failures }, 'block upload succeeded after retries');
      s.failures = 0;
      s.retryAt = 0;
      s.corrupt = undefined;
      s.corruptLogged = undefined;
      return null;
    } catch (err) {
      error = err as Error;
      s.failures++;
      this.opts.onUploadFailed?.(error);
      const delay = Math.min(MAX_RETRY_DELAY_MS, 1000 * 2 ** Math.min(s.failures - 1, 10));
      s.retryAt = Date.now() + delay;
      if (err instanceof WalRecordCorrupt) {
        // The same bytes would fail the same way: no background retry until the block is written
        // again (see dirtyVersion), and the data stays where it is, its segment with it.
        const again = s.corruptLogged === err.rec;
        s.corrupt = err.rec;
        s.corruptLogged = err.rec;
        if (!again) {
          this.opts.onDataCorrupt?.('upload');
          const rec = err.rec;
          this.opts.log?.error(
            {
              shareId: this.opts.shareId,
              inode: inodeId,
              block: index,
              segment: rec.seg.file ?? rec.seg.id,
              record: rec.pos,
              recordOffset: rec.offset,
              recordLength: rec.length,
            },
            'block upload stopped: a WAL record of the block failed its CRC (changed on disk after it was logged). ' +
              'The block is not uploaded and its WAL segment is kept; reads of those bytes fail. ' +
              'Writing the range again (or removing the file) lets the block go; see README "Data checksums"',
          );
        }
      } else if (s.failures === 1 || s.failures % 10 === 0) {
        // One line per block while it keeps failing, then every tenth attempt.
        this.opts.log?.error(
          { err, inode: inodeId, block: index, failures: s.failures, retryInMs: delay },
          'block upload failed; data kept in the WAL for retry',
        );
      }
      return error;
    } finally {
      if (content !== null && (stored || uploadingKey === null)) this.blockBuffers.give(content);
      if (uploadingKey !== null) this.uploading.delete(uploadingKey);
      const at = s.inflight.indexOf(v);
      if (at >= 0) s.inflight.splice(at, 1);
      const limit = this.limits.get(inodeId);
      if (error && limit !== undefined) clip(v, Math.max(0, limit - index * this.blockSize));
      // A state no longer in the map belongs to a freed file (free() forgets it with versions in
      // flight): nothing could ever upload or release a version kept there.
      const orphaned = this.files.get(inodeId)?.get(index) !== s;
      if (error && !this.freed.has(inodeId) && !orphaned && v.ranges.length > 0) {
        // Keep the data: under the next queued version if there is one, else under (or as) the
        // dirty version, so that newer bytes always win and a later flush retries.
        const next = (at >= 0 ? s.inflight[at] : undefined) ?? s.dirty;
        if (next) this.mergeUnder(next, v);
        else {
          v.since = Date.now();
          s.dirty = v;
        }
      } else if (gone || orphaned || this.freed.has(inodeId)) {
        // Not stored but dropped with its file: as free() lets go of dirty versions.
        this.afterMetaDurable(inodeId, () => this.releaseVersion(v));
      } else {
        this.releaseVersion(v);
      }
      this.dropStateIfIdle(inodeId, index, s);
      if (replaced) await this.deleteObjects([replaced]);
    }
  }

  /**
   * Blocks whose upload stopped at a WAL record that failed its CRC, and are not written since
   * (readiness shows them: `dittofs status`).
   */
  corruptBlocks(): { inode: number; block: number; segment: string; record: number }[] {
    const out: { inode: number; block: number; segment: string; record: number }[] = [];
    for (const [inode, m] of this.files)
      for (const [block, s] of m)
        if (s.corrupt) out.push({ inode, block, segment: s.corrupt.seg.file ?? String(s.corrupt.seg.id), record: s.corrupt.pos });
    return out;
  }

  /** Uploads every dirty block of a file and waits until all its blocks are stored. */
  async flush(inodeId: number): Promise<void> {
    // Several servers: a truncate or cut logged before this flush began is stored with the file.
    // One logged after it did was marked again (FileLeases.holds wants the mark a store clears).
    const cut = this.cuts.get(inodeId);
    if (cut !== undefined && this.loggedCuts.has(inodeId)) await this.cutPassed(inodeId, cut);
    const m = this.files.get(inodeId);
    if (!m) return;
    const results = await Promise.all([...m.keys()].map((index) => this.startUpload(inodeId, index)));
    const err = results.find((e) => e !== null);
    // A metadata store that is down for now stays a "try again later" for the client; data that
    // failed its checksum says so (SMB: STATUS_DATA_CHECKSUM_ERROR).
    if (err instanceof VfsError && (err.errno === 'JUKEBOX' || err instanceof DataCorrupt)) throw err;
    if (err) throw new VfsError('IO', `could not store file data: ${err.message}`);
  }

  async flushAll(): Promise<void> {
    await Promise.all([...this.files.keys()].map((i) => this.flush(i).catch(() => undefined)));
  }

  /**
   * Logs the size and times that a COMMIT is to make durable with the file's data (RECORD_TIMES:
   * `end`, where its writes end), so that the metadata store need not change for it; commit()
   * syncs the record. False when it cannot be logged at once: no persistent log, the log full or
   * failed, several servers (they read the size from the store), or a truncate or cut of the file
   * in progress (its record would come after the truncate's, with an end from before it). The
   * caller stores them instead.
   *
   * The record holds its segment until the metadata store has the file's attributes durably:
   * released TIMES_HOLD_MS later (the cache writes them behind within a second), at once when the
   * log needs room, and at close.
   *
   * Replay applies the last such record of a file unless the store's ctime is as new, so a change
   * that sets a ctime no newer than the file's (SMB's explicit or held ChangeTime) logs one too
   * (`always`: even with the log full), or an earlier COMMIT's record would undo it.
   */
  logTimes(inodeId: number, end: number, mtime: Timespec, ctime: Timespec, always = false): boolean {
    if (!this.wal.persistent || (this.wal.full && !always) || this.opts.leases || this.cuts.has(inodeId) || this.closed) return false;
    let a: WalAppend;
    try {
      a = this.wal.appendTimes(this.opts.shareId, inodeId, end, mtime, ctime);
    } catch {
      return false;
    }
    // Its failure fails the sync() that covers it (the log is broken then).
    a.done.catch(() => undefined);
    const holder: WalHolder = { kick: () => this.releaseTimes(holder) };
    this.wal.hold(a.seg, holder);
    this.timesHolds.set(holder, { inodeId, seg: a.seg, at: performance.now() });
    return true;
  }

  /** releaseTimes for every RECORD_TIMES record held since `before` (performance.now()) or earlier. */
  private releaseTimesFrom(before: number): void {
    for (const [holder, h] of this.timesHolds) if (h.at <= before) this.releaseTimes(holder);
  }

  /** Lets go of a RECORD_TIMES record once its file's attributes are durable in the metadata store. */
  private releaseTimes(holder: WalHolder): void {
    const h = this.timesHolds.get(holder);
    if (h === undefined) return;
    this.timesHolds.delete(holder);
    this.afterMetaDurable(h.inodeId, () => this.wal.release(h.seg, holder));
  }

  /**
   * The share is gone and its records are marked stored in the log (replay skips them): lets go of
   * every record still held for its metadata (a close that could not make it durable in time left
   * them), else they would hold the log, shared with the other shares, until a restart.
   */
  releaseForgotten(): void {
    this.forgotten = true; // from now on afterMetaDurable lets go at once
    this.releaseTimesFrom(Infinity);
    const waiting = [...this.toRelease.values(), ...(this.releasing ?? []).map(([, r]) => r)];
    this.toRelease.clear();
    // Emptied in place: the round in flight finds nothing left to run when (if) its flush settles.
    for (const releases of waiting) for (const release of releases.splice(0)) release();
    // A truncate or cut the stop left unfinished: its record would hold the log the other shares
    // write to (no segment after it retires) until a restart.
    for (const [record, seg] of this.unfinished) this.wal.release(seg, record);
    this.unfinished.clear();
  }

  /**
   * Once no truncate or cut runs (after close(), one still retrying ends within a pause): how many
   * close() left unfinished, their records held for the next start's replay. A removed share with
   * any is not stored: the data past their cuts is gone from memory, not from the block store.
   */
  async cutsSettled(): Promise<number> {
    while (this.cuts.size > 0) await Promise.all([...this.cuts.values()].map((c) => c.done));
    return this.unfinished.size;
  }

  /** RECORD_TIMES records that hold their segments now (tests, diagnostics). */
  get timesHeld(): number {
    return this.timesHolds.size;
  }

  /**
   * Makes a file's written data durable (NFS COMMIT and FILE_SYNC, SMB FLUSH): a group-commit fsync
   * of the WAL. Without a persistent WAL the data is uploaded instead.
   */
  async commit(inodeId: number): Promise<void> {
    if (!this.wal.persistent) return this.flush(inodeId);
    try {
      await this.wal.sync();
    } catch (err) {
      throw storageError('could not make the data durable', err);
    }
  }

  /** Bytes written and not stored yet: dirty and uploading versions (for metrics; walks the index). */
  pendingBytes(): number {
    let n = 0;
    for (const m of this.files.values()) {
      for (const s of m.values()) {
        if (s.dirty) for (const r of s.dirty.ranges) n += r[1] - r[0];
        for (const v of s.inflight) for (const r of v.ranges) n += r[1] - r[0];
      }
    }
    return n;
  }

  /** Several servers: see WriteLeases.fresh (undefined without coordination: nothing to wait for). */
  ensureFresh(inodeId: number): Promise<boolean> | undefined {
    return this.opts.leases?.fresh?.(inodeId);
  }

  /**
   * Several servers: before a listing, the files of `inodeIds` another server acknowledged writes
   * to are stored first; resolves those whose inode may be old. Undefined without coordination.
   */
  ensureFreshMany(inodeIds: readonly number[]): Promise<number[]> | undefined {
    return this.opts.leases?.freshMany?.(inodeIds);
  }

  /** Several servers on one store (write leases): what another server acknowledged may not be stored yet. */
  get coordinated(): boolean {
    return this.opts.leases !== undefined;
  }

  hasDirty(inodeId: number): boolean {
    // A truncate being applied keeps its lease too (the lease of a file with no dirty block is let
    // go when idle), though it may leave no dirty block behind (a cut to 0).
    return this.files.has(inodeId) || this.loggedCuts.has(inodeId);
  }

  // ---- replay ----------------------------------------------------------------------------------

  /**
   * Rebuilds the dirty index from WAL records of this share, in log order, before any client is
   * served: writes become dirty extents again (their data stays in the segments), truncates are
   * applied in their place, and file sizes are brought in line with what the log says.
   */
  async replay(records: ReplayRecord[]): Promise<{ files: number; writes: number; dropped: number }> {
    const sizes = new Map<number, ReplaySize>();
    let writes = 0;
    let dropped = 0;
    // A record of a file whose create a crash lost is dropped below but may stay in its segment (held
    // by other data) and be read again at the next start: no new file may be given its id by then.
    let maxInode = 0;
    for (const r of records) if (r.inode > maxInode) maxInode = r.inode;
    if (maxInode > 0) await this.meta.reserveInodeIds(maxInode);
    this.replaying = true;
    try {
      await this.replayRecords(records, sizes, (w, d) => {
        writes += w;
        dropped += d;
      });
    } finally {
      this.replaying = false;
    }
    // A size the log says, unless another server changed the file under a newer lease since; and
    // times a COMMIT made durable, unless the store has a change as new (see RECORD_TIMES).
    let restored = false;
    for (const [id, sz] of sizes) {
      if (sz.token < sz.stored) continue;
      const times = sz.times !== undefined && compareTimespec(sz.times.ctime, sz.metaCtime) > 0 ? sz.times : undefined;
      if (sz.size === sz.metaSize && !times) continue;
      // Several servers: stored under the records' newest token, so that the store refuses it when
      // another server stored or cut the file, or stored its size, under a newer lease after its
      // token was read above (that server's size stays, as when the token was seen newer above).
      const fence = this.opts.leases && sz.token > 0 ? { leaseToken: sz.token } : {};
      try {
        await this.meta.setAttr(id, { ...(sz.size !== sz.metaSize ? { size: sz.size } : {}), ...times, ...fence });
      } catch (e) {
        if (e instanceof BlockConflictError) continue;
        throw e;
      }
      restored = true;
    }
    // Durable before any segment may go: one that holds only a COMMIT's times is held by nothing now.
    if (restored) await this.meta.flushAttrs?.();
    // Several servers: this server holds what it has to store (else the others read what was there before).
    await this.opts.leases?.adopt?.([...this.files.keys()]);
    // Everything replayed goes to the block store now, each block once (once per lease it was written under).
    for (const [ino, m] of this.files) {
      for (const [index, s] of m) {
        for (const v of s.inflight) if (v.result === undefined) void this.chainUpload(ino, index, s, v);
        void this.startUpload(ino, index, true);
      }
    }
    return { files: sizes.size, writes, dropped };
  }

  private async replayRecords(
    records: ReplayRecord[],
    sizes: Map<number, ReplaySize>,
    count: (writes: number, dropped: number) => void,
  ): Promise<void> {
    for (const r of records) {
      let sz = sizes.get(r.inode);
      if (!sz) {
        const ino = await this.meta.getInode(r.inode);
        if (!ino) {
          count(0, 1);
          continue; // the file was deleted after these writes
        }
        // Several servers: what the file's data was last stored or cut under. Records of an older
        // lease never cut it or set its size (block switches refuse them block by block).
        const stored = this.opts.leases && this.meta.fileToken ? await this.meta.fileToken(r.inode) : 0;
        sz = { size: ino.size, metaSize: ino.size, metaCtime: ino.ctime, stored, token: 0 };
        sizes.set(r.inode, sz);
      }
      sz.token = Math.max(sz.token, r.token);
      if (r.type === RECORD_TIMES) {
        // The last in log order: a later one may set an older ctime (SMB), see logTimes.
        if (r.times) sz.times = r.times;
        sz.size = Math.max(sz.size, r.offset);
        continue;
      }
      if (r.type === RECORD_TRUNCATE || r.type === RECORD_CUT) {
        if (r.token < sz.stored) {
          count(0, 1);
          continue;
        }
        try {
          await this.truncateData(r.inode, r.offset, r.seg, r.token);
        } catch (e) {
          // Several servers: another one stored or cut the file under a newer lease since its token
          // was read above. As records of an older lease: dropped, and the size left to that one.
          if (!(e instanceof LeaseMoved)) throw e;
          sz.stored = Math.max(r.token + 1, (await this.meta.fileToken?.(r.inode)) ?? 0);
          count(0, 1);
          continue;
        }
        // A cut zeroes the data from there on and leaves the size alone.
        if (r.type === RECORD_TRUNCATE) sz.size = r.offset;
      } else {
        this.addWrite(r.inode, r.offset, r.length, r.seg, r.pos, null, r.token, r.crc);
        sz.size = Math.max(sz.size, r.offset + r.length);
        count(1, 0);
      }
    }
  }

  // ---- reads -----------------------------------------------------------------------------------

  private readObject(ref: BlockRef): Promise<Buffer> {
    const hit = this.opts.cache.get(ref.key);
    if (hit) return Promise.resolve(hit);
    let p = this.loading.get(ref.key);
    if (!p) {
      p = this.fetchObject(ref.key).finally(() => this.loading.delete(ref.key));
      this.loading.set(ref.key, p);
    }
    return p;
  }

  /** An object from the disk read cache, else from the store (then kept in the disk cache too). */
  private async fetchObject(key: string): Promise<Buffer> {
    const disk = this.opts.diskCache;
    const cached = disk ? await disk.cache.get(disk.namespace, key) : null;
    if (cached) {
      this.opts.cache.set(key, cached);
      return cached;
    }
    const data = await this.store.get(key);
    if (data === null) throw Object.assign(new Error(`block object ${key} is missing`), { code: MISSING });
    this.opts.cache.set(key, data);
    if (disk) void disk.cache.put(disk.namespace, key, data, false);
    return data;
  }

  /**
   * Reads up to `count` bytes at `offset` of a file whose size is `fileSize`. With a `target` of at
   * least `count` bytes, the answer is either a view of `target` or a view of an immutable block
   * object (whichever costs no allocation); without one, a buffer of its own or such a view.
   */
  async read(inodeId: number, offset: number, count: number, fileSize: number, target?: Buffer): Promise<Buffer> {
    const end = Math.min(fileSize, offset + count);
    if (end <= offset) return Buffer.alloc(0);
    if (this.cutting.size > 0) {
      const cut = this.cutting.get(inodeId);
      if (cut !== undefined && end > cut) return this.readAcrossCut(inodeId, offset, end, cut, target);
    }
    // Asked once per READ (a retry below is the same read, not a sequential one).
    const seq =
      this.opts.diskCache !== undefined &&
      this.sequential(inodeId, Math.floor(offset / this.blockSize), Math.floor((end - 1) / this.blockSize));
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.readOnce(inodeId, offset, end, seq, target);
      } catch (err) {
        if (err instanceof WalRecordCorrupt) this.readCorrupt(err, inodeId, offset, end);
        // A block switched to a new version (and its WAL segment retired) between looking it up
        // and reading it: read again.
        // Versions can follow each other quickly (replay, a busy file): pause a little each time.
        if (!isRetry(err) || attempt >= 8) throw err;
        this.meta.invalidateBlocks?.(inodeId);
        await new Promise((r) => setTimeout(r, 2 ** attempt));
      }
    }
  }

  /** Logs (once a minute per record) and counts a read refused because a WAL record failed its CRC. */
  private readCorrupt(err: WalRecordCorrupt, inodeId: number, offset: number, end: number): void {
    this.opts.onDataCorrupt?.('read');
    const rec = err.rec;
    const now = Date.now();
    if (rec.loggedAt !== undefined && now - rec.loggedAt < CORRUPT_LOG_EVERY_MS) return;
    rec.loggedAt = now;
    this.opts.log?.error(
      {
        shareId: this.opts.shareId,
        inode: inodeId,
        offset,
        count: end - offset,
        segment: rec.seg.file ?? rec.seg.id,
        record: rec.pos,
        recordOffset: rec.offset,
        recordLength: rec.length,
      },
      'READ refused: WAL data failed its CRC (changed on disk after it was logged); nothing of it is returned',
    );
  }

  /** A read reaching past a cut being made (see `cutting`): the bytes before it, zeros after. */
  private async readAcrossCut(inodeId: number, offset: number, end: number, cut: number, target?: Buffer): Promise<Buffer> {
    const length = end - offset;
    const out = target !== undefined && target.length >= length ? target.subarray(0, length) : Buffer.allocUnsafe(length);
    const keep = Math.max(0, cut - offset);
    if (keep > 0) {
      const head = await this.read(inodeId, offset, keep, cut, out);
      // An answer may be a view of a stored object rather than `out`.
      if (head.buffer !== out.buffer || head.byteOffset !== out.byteOffset) head.copy(out, 0);
    }
    out.fill(0, keep);
    return out;
  }

  private async readOnce(inodeId: number, offset: number, end: number, seq: boolean, target?: Buffer): Promise<Buffer> {
    const bs = this.blockSize;
    const first = Math.floor(offset / bs);
    const last = Math.floor((end - 1) / bs);
    // Capture the in-memory versions before any await: an upload finishing meanwhile must not
    // make its bytes vanish from this read.
    const layers = new Map<number, BlockVersion[]>();
    const m = this.files.get(inodeId);
    if (m) {
      for (let index = first; index <= last; index++) {
        const s = m.get(index);
        if (!s) continue;
        const vs = s.dirty ? [...s.inflight, s.dirty] : [...s.inflight];
        if (vs.length > 0) layers.set(index, vs);
      }
    }
    const refs = await this.meta.getBlocks(inodeId, first, last + 1 + READ_AHEAD_BLOCKS);
    const refAt = new Map<number, BlockRef>();
    for (const r of refs) refAt.set(r.index, r);
    if (first === last && !layers.has(first) && this.store.readInto === undefined && !this.onDiskOnly(refAt.get(first))) {
      // The common case, a read inside one stored block: the answer is a view of the object (which
      // is immutable), with no copy and no new buffer.
      const ref = refAt.get(first);
      const from = offset - first * bs;
      const to = end - first * bs;
      if (ref) {
        const obj = await this.readObject(ref);
        if (obj.length >= to) {
          if (from === 0 || to === bs) this.readAhead(first, refAt, seq);
          return obj.subarray(from, to);
        }
      }
    }
    return this.assemble(offset, end, first, last, layers, refAt, seq, target);
  }

  /** Whether a read of blocks first..last follows the file's previous read (see lastReadBlock); remembers last. */
  private sequential(inodeId: number, first: number, last: number): boolean {
    const prev = this.lastReadBlock.get(inodeId);
    if (prev !== last) this.lastReadBlock.set(inodeId, last);
    // The oldest file first out (by its first read: cheaper than moving each file on every read).
    if (prev === undefined && this.lastReadBlock.size > SEQUENTIAL_FILES)
      this.lastReadBlock.delete(this.lastReadBlock.keys().next().value!);
    return prev !== undefined && (first === prev || first === prev + 1);
  }

  /** A read's bytes, merged block by block from stored objects (or zeros) and in-memory versions. */
  private async assemble(
    offset: number,
    end: number,
    first: number,
    last: number,
    layers: Map<number, BlockVersion[]>,
    refAt: Map<number, BlockRef>,
    seq: boolean,
    target?: Buffer,
  ): Promise<Buffer> {
    const bs = this.blockSize;
    const out = target !== undefined && target.length >= end - offset ? target.subarray(0, end - offset) : Buffer.allocUnsafe(end - offset);
    for (let index = first; index <= last; index++) {
      const blockStart = index * bs;
      const from = Math.max(offset, blockStart) - blockStart;
      const to = Math.min(end, blockStart + bs) - blockStart;
      const at = blockStart + from - offset;
      const vs = layers.get(index);
      const top = vs?.[vs.length - 1];
      if (top && covers(top.ranges, from, to)) {
        await this.materialize(top, from, to, out, at);
        continue;
      }
      const ref = refAt.get(index);
      if (ref && this.store.readInto !== undefined) {
        // A local store: read just the range, straight into the answer (the OS caches the file).
        const got = await this.store.readInto(ref.key, from, out, at, to - from);
        if (got === null) throw Object.assign(new Error(`block object ${ref.key} is missing`), { code: MISSING });
        if (got < to - from) out.fill(0, at + got, at + (to - from));
      } else if (ref) {
        let n: number | null = null;
        const disk = this.opts.diskCache;
        // In the disk read cache (and not in memory): the range straight from there.
        if (disk && this.onDiskOnly(ref)) n = await disk.cache.readInto(disk.namespace, ref.key, from, out, at, to - from);
        n ??= await this.copyObject(ref, from, to, out, at);
        if (n < to - from) out.fill(0, at + n, at + (to - from));
        if (from === 0 || to === bs) this.readAhead(index, refAt, seq);
      } else {
        out.fill(0, at, at + (to - from));
      }
      if (vs)
        for (let k = 0; k < vs.length; k++)
          await this.materialize(vs[k]!, from, to, out, at, k + 1 < vs.length ? vs.slice(k + 1) : NO_VERSIONS);
    }
    return out;
  }

  /** True when a block is in the disk read cache and neither in memory nor being fetched. */
  private onDiskOnly(ref: BlockRef | undefined): boolean {
    const disk = this.opts.diskCache;
    return (
      ref !== undefined &&
      disk !== undefined &&
      !this.opts.cache.has(ref.key) &&
      !this.loading.has(ref.key) &&
      disk.cache.has(disk.namespace, ref.key)
    );
  }

  /** Copies bytes [from, to) of a stored object into `out` at `at`; how many there were. */
  private async copyObject(ref: BlockRef, from: number, to: number, out: Buffer, at: number): Promise<number> {
    const obj = await this.readObject(ref);
    const n = Math.max(0, Math.min(to, obj.length) - from);
    if (n > 0) obj.copy(out, at, from, from + n);
    return n;
  }

  /**
   * A read that starts or ends a block is likely sequential: fetch the next blocks too. Those in
   * the disk read cache are read ahead only by a read that follows the previous one (`seq`).
   */
  private readAhead(index: number, refAt: Map<number, BlockRef>, seq: boolean): void {
    for (let k = 1; k <= READ_AHEAD_BLOCKS; k++) this.prefetch(refAt.get(index + k), seq);
  }

  private prefetch(ref: BlockRef | undefined, seq: boolean): void {
    if (!ref || this.opts.cache.has(ref.key) || this.loading.has(ref.key)) return;
    const disk = this.opts.diskCache;
    // A block in the disk read cache is local already: it is read in ranges when asked for, and
    // only brought into the kernel's page cache ahead of those reads (no buffer of ours holds it).
    // (Neither in memory nor being fetched, as onDiskOnly asks: checked above.)
    if (disk && disk.cache.has(disk.namespace, ref.key)) {
      if (seq) disk.cache.warm(disk.namespace, ref.key);
    } else {
      this.readObject(ref).catch(() => undefined);
    }
  }

  // ---- size changes and deletion -----------------------------------------------------------------

  /**
   * Cuts or extends a file's data to `newSize`; bytes past it read as zeros if the file grows
   * again. The cut is logged and synced first, so replay never brings cut bytes back. `commit`
   * (storing the new size) runs once the data is cut, with the truncate's WAL record still held:
   * until then a crash replays the record (the data past the cut is gone from the block map
   * already; without the record the file would come back with its old size over those zeros).
   * Resolves with what `commit` resolved with. With several servers `commit` gets the lease token
   * the truncate is made under, to store the size under (AttrChanges.leaseToken); 0 otherwise.
   */
  truncate(inodeId: number, newSize: number): Promise<void>;
  truncate<T>(inodeId: number, newSize: number, commit: (token: number) => Promise<T>): Promise<T>;
  truncate<T>(inodeId: number, newSize: number, commit?: (token: number) => Promise<T>): Promise<T | undefined> {
    return this.withWritesHeld(inodeId, () => this.truncateLogged(inodeId, newSize, commit));
  }

  /** Runs a truncate or cut of a file while its writes wait (see `cuts`); one at a time per file. */
  private async withWritesHeld<T>(inodeId: number, run: () => Promise<T>): Promise<T> {
    for (let cut = this.cuts.get(inodeId); cut !== undefined; cut = this.cuts.get(inodeId)) await this.cutPassed(inodeId, cut);
    let settle!: () => void;
    let stall!: () => void;
    const done = new Promise<void>((resolve) => (settle = resolve));
    const wake = new Promise<void>((resolve) => (stall = resolve));
    this.cuts.set(inodeId, { done, stalled: false, wake, stall });
    try {
      // Writes that passed the gate before it closed and wait for WAL room are logged first.
      const waits = this.roomWaits.get(inodeId);
      if (waits) await new Promise<void>((resolve) => waits.idle.push(resolve));
      return await run();
    } finally {
      this.loggedCuts.delete(inodeId);
      this.cuts.delete(inodeId);
      settle();
    }
  }

  /**
   * Resolves once the file's truncate or cut in progress waits for the metadata store (see
   * `cuts`), at once if it does already; undefined with none in progress. For a caller queued
   * behind it elsewhere (the file service's hold of the file's end) to answer JUKEBOX then.
   */
  cutStalled(inodeId: number): Promise<void> | undefined {
    return this.cuts.size > 0 ? this.cuts.get(inodeId)?.wake : undefined;
  }

  /** Waits for the file's truncate or cut `cut` to end; JUKEBOX once it waits for the metadata store (see `cuts`). */
  private async cutPassed(inodeId: number, cut: CutInProgress): Promise<void> {
    if (!cut.stalled) await Promise.race([cut.done, cut.wake]);
    if (cut.stalled && this.cuts.get(inodeId) === cut)
      throw new VfsError('JUKEBOX', "the file's truncate waits for the metadata store; try again later");
  }

  private async truncateLogged<T>(inodeId: number, newSize: number, commit?: (token: number) => Promise<T>): Promise<T | undefined> {
    const token = this.opts.leases ? await this.opts.leases.token(inodeId) : 0;
    return this.withSyncedRecord(
      () => this.wal.appendTruncate(this.opts.shareId, inodeId, newSize, token),
      'could not log the truncate in the WAL',
      async (seg) => {
        await this.untilApplied('truncate', inodeId, () => this.truncateData(inodeId, newSize, seg, token));
        return commit === undefined
          ? undefined
          : await this.commitTruncate(inodeId, newSize, token, () => commit(token).catch(leaseMovedIfStale));
      },
      commit === undefined ? undefined : inodeId,
      this.opts.leases ? { inodeId, token } : undefined,
    );
  }

  /**
   * Runs a step of a truncate or cut whose record is logged and synced. From then on it is decided:
   * a crash replays it, and its first step drops the dirty data past the cut from memory. Failing
   * it would leave the file with its old size over the older stored bytes there (acknowledged
   * writes undone for a call reported failed), until a crash finished it. So a step that fails for
   * want of its metadata store is tried again every RELEASE_RETRY_MS (one warning), the caller
   * waiting, until it works; at close(), or once the store failed for good (MetadataStore.failure:
   * every call fails until a restart), Unfinished (the record stays for the next start). Not
   * tried again: the lease moved or the file is gone, or the store refused it (see retriable).
   */
  private async untilApplied<T>(what: 'truncate' | 'cut', inodeId: number, step: () => Promise<T>): Promise<T> {
    for (let warned = false; ; warned = true) {
      try {
        return await step();
      } catch (e) {
        if (!retriable(e)) throw e;
        // A store failed for good fails every call until a restart, which replays the record.
        const failure = this.meta.failure?.() ?? null;
        if (this.closed || failure !== null) throw new Unfinished(what, e, failure);
        const cut = this.cuts.get(inodeId);
        if (cut !== undefined && !cut.stalled) {
          cut.stalled = true;
          cut.stall();
        }
        if (!warned)
          this.opts.log?.warn({ err: e }, `a logged ${what} could not be applied; trying again until the metadata store takes it`);
        // Not unref'd: a caller waits for it (and close() ends it within one pause).
        await new Promise((r) => setTimeout(r, RELEASE_RETRY_MS));
      }
    }
  }

  /**
   * The caller's `commit` of a truncate whose data is cut (untilApplied). Refused by the store (a
   * SETATTR guard that no longer holds, say): the new size is stored on its own, as replay would
   * store it, and the refusal goes to the caller (its other changes are not made).
   */
  private async commitTruncate<T>(inodeId: number, newSize: number, token: number, commit: () => Promise<T>): Promise<T> {
    try {
      return await this.untilApplied('truncate', inodeId, commit);
    } catch (e) {
      if (e instanceof Unfinished || leaseRefusal(e) || (e instanceof VfsError && (e.errno === 'STALE' || e.errno === 'NOENT'))) throw e;
      await this.untilApplied('truncate', inodeId, () =>
        this.meta.setAttr(inodeId, { size: newSize, ...(token > 0 ? { leaseToken: token } : {}) }).catch(leaseMovedIfStale),
      );
      throw e;
    }
  }

  /**
   * appendWithRoom for the record of a truncate or cut of `lease.inodeId` under `lease.token`
   * (several servers). As a write's (see write), a record that waited for room may come after the
   * lease was handed over: never logged then (the other server may have written the file since;
   * this truncate's cut would miss what it has not stored, and its size hide or bring back what it
   * wrote). JUKEBOX: the client sends it again, and this server takes the lease back, the other
   * one's data stored first. Stored meanwhile for a read elsewhere (the mark gone) under a lease
   * still ours: marked again, then logged. Once logged, a hand-over waits for it (`loggedCuts`).
   */
  private async appendLeased(lease: { inodeId: number; token: number }, append: () => WalAppend): Promise<WalAppend> {
    const { inodeId, token } = lease;
    for (let attempt = 0; ; attempt++) {
      try {
        // The lease checked and the record logged in one turn: a hand-over that starts later finds
        // it in `loggedCuts`; one that started earlier cleared the mark or the lease checked here.
        return await this.appendWithRoom(() => {
          this.checkLease(inodeId, token, 'truncate');
          const appended = append();
          this.loggedCuts.add(inodeId);
          return appended;
        });
      } catch (e) {
        if (!(await this.retaken(e, inodeId, token, attempt))) throw e;
      }
    }
  }

  /**
   * Several servers: LeaseMoved unless this server holds the lease of `inodeId` under `token`,
   * marked (FileLeases.holds), when the record of a write or truncate that may have waited (for a
   * cut, for WAL room) is about to be appended. Nothing with one server.
   */
  private checkLease(inodeId: number, token: number, what: 'write' | 'truncate'): void {
    if (this.opts.leases && !this.opts.leases.holds(inodeId, token))
      throw new LeaseMoved(`the write lease of the file moved to another server, or the file was stored, while the ${what} waited`);
  }

  /**
   * After a record refused by checkLease (`e`): true when only the mark went (the file was stored
   * meanwhile for a read elsewhere) under a lease still ours, and token() took it again under the
   * same token, which marks the file: append again (twice at most). Not refused: nothing moved.
   */
  private async retaken(e: unknown, inodeId: number, token: number, attempt: number): Promise<boolean> {
    const leases = this.opts.leases;
    if (!(e instanceof LeaseMoved) || attempt >= 2 || leases?.heldUnder?.(inodeId, token) !== true) return false;
    const again = leases.token(inodeId);
    return (typeof again === 'number' ? again : await again) === token;
  }

  /**
   * Appends a record and syncs it, then runs `apply` with its segment, which the record holds
   * from the moment it is appended until `apply` is over: a segment no version holds yet may
   * otherwise retire (once rolled past) while the sync or `apply` runs.
   */
  private async withSyncedRecord<T>(
    append: () => WalAppend,
    failure: string,
    apply: (seg: WalSegment) => Promise<T>,
    /** `apply` changed this file's metadata: the record is held until that change is durable too. */
    metaOf?: number,
    /** Several servers: logged only while this server holds the file's lease under `token` (appendLeased). */
    lease?: { inodeId: number; token: number },
  ): Promise<T> {
    let seg: WalSegment | null = null;
    const record: WalHolder = { kick: () => undefined };
    let applied = false;
    let unfinished = false;
    try {
      try {
        const logged = (): WalAppend => {
          const appended = append();
          this.wal.hold(appended.seg, record);
          seg = appended.seg;
          return appended;
        };
        const a = await (lease === undefined ? this.appendWithRoom(logged) : this.appendLeased(lease, logged));
        await a.done;
        await this.wal.sync();
      } catch (err) {
        throw storageError(failure, err);
      }
      let result: T;
      try {
        result = await apply(seg!);
      } catch (e) {
        unfinished = e instanceof Unfinished;
        throw e;
      }
      applied = true;
      return result;
    } finally {
      const held: WalSegment | null = seg;
      // Unfinished: held (this process stops, or must be restarted), replayed at the next start.
      if (held !== null && unfinished) this.unfinished.set(record, held);
      else if (held !== null) {
        const release = (): void => this.wal.release(held, record);
        if (applied && metaOf !== undefined) this.afterMetaDurable(metaOf, release);
        else release();
      }
    }
  }

  /**
   * Runs `release` (letting go of WAL records) once the metadata changes of `inodeId` made so far
   * are durable (flushAttrs). A store that answers before its fsync (SQLite or PostgreSQL under
   * `sync: commit`) may lose them in a crash; the records that make their effect on the data
   * replayable (a truncate's, a removed file's writes) must outlive that window, or a crash brings
   * back the old size over data that is gone.
   */
  private afterMetaDurable(inodeId: number, release: () => void): void {
    if (!this.meta.flushAttrs || this.forgotten) {
      release();
      return;
    }
    const waiting = this.toRelease.get(inodeId);
    if (waiting) waiting.push(release);
    else this.toRelease.set(inodeId, [release]);
    this.draining ??= this.drainReleases().finally(() => (this.draining = null));
  }

  /**
   * Flushes the metadata of the files whose records wait (afterMetaDurable), all at once, and lets
   * go of the records of each file flushed; those that came meanwhile go with the next round. While
   * the store cannot sync, tried again every RELEASE_RETRY_MS (one warning for the whole outage);
   * after close(), a failure ends it: the records stay, replayed harmlessly at the next start.
   */
  private async drainReleases(): Promise<void> {
    let warned = false;
    while (this.toRelease.size > 0) {
      const round = [...this.toRelease];
      this.toRelease.clear();
      this.releasing = round;
      const flushed = await Promise.allSettled(round.map(([id]) => this.meta.flushAttrs!(id)));
      this.releasing = null;
      let failure: unknown = null;
      round.forEach(([id, releases], k) => {
        const r = flushed[k]!;
        if (r.status === 'fulfilled' || this.forgotten) {
          for (const release of releases) release();
          return;
        }
        failure = r.reason;
        this.toRelease.set(id, releases.concat(this.toRelease.get(id) ?? []));
      });
      if (failure === null) continue;
      if (this.closed) return;
      if (!warned) this.opts.log?.warn({ err: failure }, 'the metadata store could not sync; WAL records stay held until it can');
      warned = true;
      await new Promise((r) => setTimeout(r, RELEASE_RETRY_MS).unref());
    }
  }

  private async truncateData(inodeId: number, newSize: number, seg: WalSegment, token: number): Promise<void> {
    const bs = this.blockSize;
    const keepBlocks = Math.ceil(newSize / bs);
    this.limits.set(inodeId, Math.min(this.limits.get(inodeId) ?? Infinity, newSize));
    this.cutting.set(inodeId, newSize);
    let cut = false;
    try {
      const m = this.files.get(inodeId);
      const waits: Promise<unknown>[] = [];
      if (m) {
        for (const [index, s] of m) {
          if (index < keepBlocks) continue;
          if (s.dirty) {
            this.releaseVersion(s.dirty);
            s.dirty = null;
          }
          // Replay: versions sealed by a change of lease are not uploading yet; they go too.
          const sealed = s.inflight.filter((v) => v.result === undefined);
          for (const v of sealed) this.releaseVersion(v);
          if (sealed.length > 0) s.inflight = s.inflight.filter((v) => v.result !== undefined);
          waits.push(s.chain);
          this.dropStateIfIdle(inodeId, index, s);
        }
      }
      // Uploads in flight past the cut finish (clipped by the limit) before their rows go.
      await Promise.all(waits);
      await this.deleteObjects(await this.meta.dropBlocks(inodeId, keepBlocks, token).catch(leaseMovedIfStale));
      const tail = newSize % bs;
      if (tail !== 0) {
        const index = keepBlocks - 1;
        // Memory first, as an upload finishing meanwhile has its row in the block map by the time
        // that is read (and is gone from memory after): the longest of both is what may hold bytes.
        const before = this.writtenEnd(this.files.get(inodeId)?.get(index));
        const [ref] = await this.meta.getBlocks(inodeId, index, index + 1);
        const s = this.files.get(inodeId)?.get(index);
        const len = Math.max(ref?.length ?? 0, before, this.writtenEnd(s));
        if (s?.dirty) clip(s.dirty, tail);
        if (s) for (const v of s.inflight) if (v.result === undefined) clip(v, tail);
        if (len > tail) {
          const v = this.dirtyVersion(inodeId, index, token);
          v.extents.push({ start: tail, end: len, seg: null, pos: 0, mem: null, zero: true });
          v.ranges = addRange(v.ranges, tail, len);
          this.hold(v, seg);
        }
      }
      cut = true;
    } catch (e) {
      // Tried again (untilApplied), or left for the next start's replay (Unfinished): reads keep
      // seeing the cut. Else nothing more is done here (the lease moved, the file is gone).
      if (!retriable(e)) cut = true;
      throw e;
    } finally {
      // The zeroed tail (a dirty version) now carries the cut; later writes may grow the file again.
      this.limits.delete(inodeId);
      if (cut) this.cutting.delete(inodeId);
    }
  }

  /**
   * Zeroes a file's data from byte `from` to its end, its size staying `size` (FSCTL_SET_ZERO_DATA
   * up to the end of a file): stored blocks past the cut are freed, the cut block keeps its bytes
   * before `from`, and the range reads as zeros. Logged as one record (RECORD_CUT: replay zeroes
   * the data and leaves the size alone), so a crash keeps all of it or none.
   * False (nothing done) when the file holds data past `size`.
   */
  cutKeepingSize(inodeId: number, from: number, size: number): Promise<boolean> {
    if (from >= size) return Promise.resolve(true);
    return this.withWritesHeld(inodeId, () => this.cutLogged(inodeId, from, size));
  }

  private async cutLogged(inodeId: number, from: number, size: number): Promise<boolean> {
    const token = this.opts.leases ? await this.opts.leases.token(inodeId) : 0;
    // A write past `size` (the file grew since the caller looked) would be cut too: the caller
    // zeroes the range another way. Checked just before the cut is logged (later writes wait at
    // the gate), in memory and then in the block map: memory first, as an upload finishing
    // meanwhile has its row in the block map by the time that is read.
    const bs = this.blockSize;
    const m = this.files.get(inodeId);
    if (m)
      for (const [index, s] of m) if ((s.dirty !== null || s.inflight.length > 0) && index * bs + this.writtenEnd(s) > size) return false;
    for (const r of await this.meta.getBlocks(inodeId, Math.floor(size / bs), Number.MAX_SAFE_INTEGER))
      if (r.index * bs + r.length > size) return false;
    await this.withSyncedRecord(
      () => this.wal.appendCut(this.opts.shareId, inodeId, from, token),
      'could not log the zeroed range in the WAL',
      (seg) => this.untilApplied('cut', inodeId, () => this.truncateData(inodeId, from, seg, token)),
      undefined,
      this.opts.leases ? { inodeId, token } : undefined,
    );
    return true;
  }

  /**
   * The byte ranges of [offset, end) that hold data (FSCTL_QUERY_ALLOCATED_RANGES): stored blocks
   * up to their object's length, with the bytes written since and not stored yet, less the ranges
   * cut since (they read as zeros). The rest of the file is holes, which read as zeros. Ascending
   * and merged; at most `max` + 1 ranges (one more than `max` says there are more).
   */
  async dataRanges(inodeId: number, offset: number, end: number, max: number): Promise<Range[]> {
    const out: Range[] = [];
    // Past a cut being made there is no data, whatever the block map holds still (see `cutting`).
    const cut = this.cutting.get(inodeId);
    if (cut !== undefined) end = Math.min(end, Math.max(offset, cut));
    if (end <= offset) return out;
    const bs = this.blockSize;
    const first = Math.floor(offset / bs);
    const last = Math.floor((end - 1) / bs);
    // The in-memory versions, captured before any await (as a read does): an upload finishing
    // meanwhile has its row in the block map by the time that is read.
    const pending = new Map<number, BlockVersion[]>();
    const m = this.files.get(inodeId);
    if (m)
      for (const [index, s] of m) {
        if (index < first || index > last) continue;
        const vs = s.dirty ? [...s.inflight, s.dirty] : [...s.inflight];
        if (vs.length > 0) pending.set(index, vs);
      }
    const push = (start: number, stop: number): void => {
      const s = Math.max(start, offset);
      const e = Math.min(stop, end);
      if (e <= s) return;
      const top = out[out.length - 1];
      if (top && top[1] >= s) top[1] = Math.max(top[1], e);
      else out.push([s, e]);
    };
    // The block map is read in windows, so that a huge file costs memory by the window; a window
    // with nothing in it doubles the next one, so that a vast hole costs few lookups.
    let window = DATA_RANGES_WINDOW;
    for (let from = first, to = first; from <= last && out.length <= max; from = to) {
      to = Math.min(last + 1, from + window);
      const stored = new Map<number, number>();
      for (const r of await this.meta.getBlocks(inodeId, from, to)) stored.set(r.index, r.length);
      const indexes = new Set(stored.keys());
      for (const index of pending.keys()) if (index >= from && index < to) indexes.add(index);
      window = indexes.size === 0 ? Math.min(window * 2, DATA_RANGES_WINDOW_MAX) : DATA_RANGES_WINDOW;
      for (const index of [...indexes].sort((a, b) => a - b)) {
        const length = stored.get(index) ?? 0;
        let ranges: Range[] = length > 0 ? [[0, length]] : [];
        for (const v of pending.get(index) ?? [])
          for (const x of v.extents) ranges = x.zero ? cutRange(ranges, x.start, x.end) : addRange(ranges, x.start, x.end);
        for (const r of ranges) push(index * bs + r[0], index * bs + r[1]);
        if (out.length > max) break;
      }
    }
    return out;
  }

  /** A mark taken before a removal, for free(): block-map switches begun or finished so far. */
  putMark(): number {
    return this.putEvents;
  }

  /**
   * Frees every block of a deleted file. `noBlocksSince`: the store found no block at the removal,
   * which began at that putMark(). With no switch begun or finished since (none could have landed
   * after the store looked) and nothing held here for the file, there is nothing to drop: an empty
   * file's REMOVE saves a store call.
   */
  async free(inodeId: number, noBlocksSince?: number): Promise<void> {
    if (noBlocksSince === this.putEvents && !this.files.has(inodeId)) return;
    this.freed.add(inodeId);
    try {
      const m = this.files.get(inodeId);
      if (m) {
        // The dropped versions' WAL records go only once the removal is durable: under a store
        // that answers before its fsync (sync: commit), a crash before it brings the file back,
        // and its data must then still be in the log to replay (not zeros under its old size).
        const dropped: BlockVersion[] = [];
        const dropDirty = (map: Map<number, BlockState> | undefined): void => {
          for (const s of map?.values() ?? []) {
            if (s.dirty) {
              dropped.push(s.dirty);
              s.dirty = null;
            }
          }
        };
        dropDirty(m);
        await Promise.all([...m.values()].map((s) => s.chain));
        // A write that resolved the file before its removal may have landed meanwhile (another
        // client's): its bytes are dropped with the file, and its WAL records released (forgotten
        // with the map, they would hold their segment, and the log's room, for good). It may have
        // made a new map: the last upload's end drops an idle one before deleting the object it
        // replaced.
        dropDirty(m);
        const now = this.files.get(inodeId);
        if (now !== m) dropDirty(now);
        this.files.delete(inodeId);
        this.afterMetaDurable(inodeId, () => {
          for (const v of dropped) this.releaseVersion(v);
        });
      }
      await this.deleteObjects(await this.meta.dropBlocks(inodeId, 0));
    } finally {
      this.freed.delete(inodeId);
    }
  }

  /**
   * free() without the caller waiting for it (a REMOVE is answered once the metadata change is
   * made): settles as soon as the free has started, or at once when there is nothing to free. At
   * most MAX_BACKGROUND_FREES run at a time; beyond that this waits for room, so a mass delete
   * cannot pile up work. A failure is logged. If the process dies first, the file's `blocks` rows
   * and objects stay behind an inode that is gone: garbage collection (at every start, then hourly)
   * frees them as blocks of a deleted file (collectGarbage: deadFiles). close() waits for these.
   */
  async freeInBackground(inodeId: number, noBlocksSince?: number): Promise<void> {
    if (noBlocksSince === this.putEvents && !this.files.has(inodeId)) return;
    while (this.freeing.size >= MAX_BACKGROUND_FREES) await Promise.race(this.freeing);
    // free() marks the inode freed before its first await: no upload of it starts after this.
    const p: Promise<void> = this.free(inodeId, noBlocksSince)
      .catch((err: unknown) =>
        this.opts.log?.warn({ err, inode: inodeId }, 'could not free the blocks of a deleted file; garbage collection will'),
      )
      .finally(() => this.freeing.delete(p));
    this.freeing.add(p);
  }

  private async deleteObjects(refs: BlockRef[]): Promise<void> {
    for (const r of refs) {
      this.forgetCached(r.key);
      try {
        await this.store.delete(r.key);
      } catch (err) {
        // An orphaned object wastes space but loses nothing; it is logged for the operator.
        this.opts.log?.warn({ err, key: r.key }, 'could not delete an old block object');
      }
    }
  }

  private forgetCached(key: string): void {
    this.opts.cache.delete(key);
    const disk = this.opts.diskCache;
    disk?.cache.delete(disk.namespace, key);
  }

  capacity(): Promise<BlockStoreCapacity> {
    return this.store.capacity();
  }

  /**
   * Deletes this share's objects that nothing refers to: versions a crash left behind between
   * their upload and the switch of their `blocks` row (or between the switch and the deletion of
   * the version it replaced), and blocks of files deleted before their blocks were freed. Objects
   * younger than `graceMs` and uploads in progress are left alone. One run at a time.
   */
  collectGarbage(graceMs = 10 * 60_000): Promise<GcResult> {
    this.gcRunning ??= this.gcOnce(graceMs).finally(() => (this.gcRunning = null));
    return this.gcRunning;
  }

  private async gcOnce(graceMs: number): Promise<GcResult> {
    const prefix = `${this.opts.keyPrefix}/`;
    const started = Date.now();
    const alive = new Map<number, boolean>();
    const r: GcResult = { scanned: 0, deleted: 0, deadFiles: 0 };
    const gone = new Set<string>();
    try {
      for await (const o of this.store.list(prefix)) {
        if (this.closed) break;
        r.scanned++;
        // What this run learnt stays bounded on a store of millions of objects: past the cap it is
        // forgotten, and asked again (a dead file's object met again is deleted again, harmlessly,
        // and may be counted twice).
        if (alive.size >= GC_MEMO_MAX) alive.clear();
        if (gone.size >= GC_MEMO_MAX) gone.clear();
        // Checked before the row is read: an upload that is not in this set any more has either
        // committed its row or failed.
        if (this.uploading.has(o.key)) continue;
        if (o.modifiedMs !== undefined && started - o.modifiedMs < graceMs) continue;
        const m = KEY_RE.exec(o.key.slice(prefix.length));
        if (!m) continue; // not a block object of ours: never touched
        const inodeId = Number(m[1]);
        const index = Number(m[2]);
        if (this.freed.has(inodeId)) continue;
        let live = alive.get(inodeId);
        if (live === undefined) {
          live = this.files.has(inodeId) || (await this.meta.getInode(inodeId)) !== null;
          alive.set(inodeId, live);
          if (!live) {
            r.deadFiles++;
            const refs = await this.meta.dropBlocks(inodeId, 0);
            await this.deleteObjects(refs);
            for (const x of refs) gone.add(x.key);
            r.deleted += refs.length;
          }
        }
        if (gone.has(o.key)) continue;
        if (live) {
          const [ref] = await this.meta.getBlocks(inodeId, index, index + 1);
          if (ref?.key === o.key) continue;
        }
        this.forgetCached(o.key);
        await this.store.delete(o.key);
        r.deleted++;
      }
    } catch (err) {
      this.opts.log?.warn({ err, ...r }, 'block garbage collection stopped early; it runs again later');
      return r;
    }
    if (r.deleted > 0) this.opts.log?.info({ ...r, ms: Date.now() - started }, 'unreferenced block objects deleted');
    return r;
  }

  /**
   * Stops the idle flusher, uploads dirty data and waits for uploads in flight. With a persistent
   * WAL the uploads get `closeFlushMs`: what is stored lets its segments go, so that a clean stop
   * leaves nothing to replay; what is not stays in the WAL and is replayed at the next start.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    if (this.gcTimer) clearInterval(this.gcTimer);
    await this.gcRunning;
    while (this.freeing.size > 0) await Promise.all(this.freeing);
    this.releaseTimesFrom(Infinity);
    // Records of removals, truncates and COMMITs whose metadata is being synced: let go if it lands soon
    // (a database that does not answer must not hold up the stop; they are replayed harmlessly).
    if (this.draining) {
      await settledWithin(this.draining, this.opts.closeFlushMs ?? CLOSE_FLUSH_MS);
      if (this.toRelease.size > 0 || this.releasing !== null)
        this.opts.log?.warn(
          { share: this.opts.keyPrefix },
          'the metadata store did not sync in time at shutdown: the WAL keeps records for it, replayed at the next start',
        );
    }
    if (!this.wal.persistent) {
      await this.flushAll();
      return;
    }
    if (this.files.size > 0) {
      await settledWithin(this.flushAll(), this.opts.closeFlushMs ?? CLOSE_FLUSH_MS);
      const left = this.pendingBytes();
      if (left > 0) {
        this.opts.log?.warn(
          { share: this.opts.keyPrefix, bytes: left },
          'data not uploaded at shutdown: it stays in the WAL and is replayed at the next start',
        );
      }
    }
    const chains: Promise<void>[] = [];
    for (const m of this.files.values()) for (const s of m.values()) chains.push(s.chain);
    await Promise.all(chains);
  }
}
