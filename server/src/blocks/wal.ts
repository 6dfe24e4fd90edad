// The write-ahead log (WAL) cache. Every WRITE appends a record (share, inode, offset, data, CRC32C)
// to the active segment file; TRUNCATEs are logged too, so that replay reproduces the order of
// events. Nothing is read back from the log except by replay and by the block service, which keeps
// an in-memory index of dirty extents pointing into segments and reads them to serve reads and to
// build blocks for upload.
//
// Durability: an append returns once the record is handed to the kernel (`done`); `sync()` is a
// group commit (one fdatasync per touched segment covers every append issued before it was called).
// A failed fdatasync breaks the log for good: the kernel reports a failed writeback once and then
// forgets the pages it could not write (they are no longer dirty), so a second fdatasync succeeds
// without them, and a COMMIT covering a write made before the failure would be answered although
// the write may not be on disk. Every later sync() and append fails instead (I/O errors to the
// clients), reads still work, and a restart replays what reached the disk.
// A segment is deleted only when it is not the active one, no dirty block version still holds data
// in it, and every older segment is gone: the log on disk is always a suffix of history, which is
// what makes replay in log order correct. A clean close deletes the active segment too when nothing
// holds data in the log, so that the next start has nothing to replay.
//
// Disk space: the next segment (the "spare", `wal-<id>.spare`) is prepared in the background while
// the active one fills, and renamed into place when the active one is full. A spare is a segment
// that was retired (its records all stored) and kept for reuse: only its header is rewritten and
// synced, so a byte written to the log is written to the disk once. A new active segment waits
// for an older one to retire until it is half full; only then (at start, or while uploads lag) is a
// new file written full of zeros and synced. Either way the log holds its segments, one spare and, while uploads lag,
// up to four retired segments kept for reuse (see keepForReuse). An append therefore only
// ever overwrites space that is already allocated: on a full volume it is refused before anything
// is written (WAL_NO_ROOM, `writable` false), never half-appended, and no empty segment file is left
// behind. Once uploads let segments go, the spare is prepared again and writes resume by themselves.
// A new segment is written only while a 64th of the volume stays free after it (checkHeadroom): the
// volume is often shared with the metadata database, which must not find it full for a moment.
//
// A reused segment still holds its earlier records past the new ones. They are never taken for new
// ones: from format 3 on, a record header's CRC is seeded with the id of the segment it was written
// to, and a reused segment has a new id. Replay stops where the records of this id stop.
//
// Segment file: 24-byte header (magic "DITTOWAL", u32 format version, u32 flags, u64 segment id),
// then records. Flags (format 3 on): 1 = reused, the space past its records holds older bytes, not
// zeros. Record: 48-byte header then `length` data bytes:
//   0 u32 magic  4 u32 crc32c(header bytes 8..48, seeded with the segment id's low 32 bits from
//   format 3 on; unseeded before)  8 u8 type  9..12 reserved  12 u32 share
//   16 u64 inode  24 u64 offset (write), new size (truncate) or where the zeros begin (cut)
//   32 u32 length  36 u32 crc32c(data)
//   40 u64 fencing token: the write lease the record was written under (0 without coordination;
//      replay never lets a record replace what a newer lease stored, see blocks/service.ts)
// Format version 1 (before fencing tokens) had the same records without the token (40-byte
// headers); its segments are still read, with token 0. Version 2 had unseeded header CRCs and no
// reuse. Record type 4 (cut) came later within version 3: a DittoFS from before reads one as bytes
// with no valid record. Version 4 is version 3 with record type 5 (times), which a DittoFS that
// reads only up to version 3 must not meet: it would skip it, and stop reading a reused segment
// there. New segments are always version 4; those of versions 1 to 3 are still read.
import { crc32c } from '@node-rs/crc32';
import fsc from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import { isNoSpace } from '../vfs/errors.js';
import type { Timespec } from '../vfs/types.js';

export const RECORD_WRITE = 1;
export const RECORD_TRUNCATE = 2;
/**
 * Every earlier record of this share is in the block store: written when a share stops being
 * served after its data was uploaded, so that replay skips them (the share may be gone for good).
 */
export const RECORD_SHARE_STORED = 3;
/**
 * The file's data from `offset` on reads as zeros, its size unchanged (SMB FSCTL_SET_ZERO_DATA up
 * to the end of a file). One record, so that a crash never keeps half of it (as it could a
 * truncate to `offset` logged with a truncate back to the size: the file would come back shorter).
 */
export const RECORD_CUT = 4;
/**
 * What a COMMIT (or FILE_SYNC, SMB FLUSH) made durable of the file's attributes while they wait to
 * be written to the metadata store: `offset` is where its writes end (the size they make, as a
 * write record's end), the data (24 bytes) its mtime and ctime (i64 seconds, u32 nanoseconds,
 * each). A COMMIT then needs no metadata change of its own. Replay grows the file to that end, as
 * it does for a write, and restores the times unless the file's stored ctime is as new (a later
 * change reached the metadata store). Format 4 on.
 */
export const RECORD_TIMES = 5;
export type RecordType =
  typeof RECORD_WRITE | typeof RECORD_TRUNCATE | typeof RECORD_SHARE_STORED | typeof RECORD_CUT | typeof RECORD_TIMES;
/** Bytes of a RECORD_TIMES record's data. */
const TIMES_BYTES = 24;
const RECORD_TYPES: ReadonlySet<number> = new Set([RECORD_WRITE, RECORD_TRUNCATE, RECORD_SHARE_STORED, RECORD_CUT, RECORD_TIMES]);
const isRecordType = (t: number): t is RecordType => RECORD_TYPES.has(t);

const SEG_MAGIC = Buffer.from('DITTOWAL', 'latin1');
const SEG_VERSION = 4;
/** Segments with seeded CRCs and reuse, before record type 5 (times). */
const SEG_VERSION_NO_TIMES = 3;
/** Segments whose record header CRCs are not seeded with the segment id (and never reused). */
const SEG_VERSION_UNSEEDED = 2;
/** Segments written before records carried a fencing token: 40-byte record headers, token 0. */
const SEG_VERSION_NO_TOKEN = 1;
/** Segment header flag: a reused segment, older bytes (not zeros) past its records. */
const SEG_FLAG_REUSED = 1;
/** Retired segments kept to become the next spares, at most (and only while they fit the size limit). */
const MAX_REUSABLE = 4;
/** The longest wait before a failed retire (a segment's file that could not be deleted) is tried again. */
const RETIRE_RETRY_MAX_MS = 30_000;
export const SEG_HEADER = 24;
const REC_MAGIC = 0x44574c52; // "DWLR"
export const REC_HEADER = 48;
const REC_HEADER_NO_TOKEN = 40;
/** Largest data payload of one record (NFS writes are at most 1 MiB; SMB at most 8 MiB). */
export const MAX_RECORD_DATA = 64 * 1024 * 1024;

/** Something that holds data in a segment until it is stored (a dirty block version). */
export interface WalHolder {
  /** Asks the holder to store its data soon (the WAL is short of room). */
  kick(): void;
}

export class WalSegment {
  /** Bytes reserved in the segment (header included). */
  size = SEG_HEADER;
  readonly holders = new Set<WalHolder>();
  /** Bytes appended since the last fdatasync. */
  unsynced = false;
  /** A write to this segment failed: nothing more goes into it. */
  broken = false;
  /** Reads in progress: the descriptor stays open until they finish (descriptor numbers get reused). */
  readers = 0;
  /** Made by this process at its full size: once retired, it may become a spare again. */
  reusable = false;
  constructor(
    readonly id: number,
    readonly file: string | null,
    /** The open file descriptor; null once retired (or for the memory WAL). */
    public fd: number | null,
  ) {}
}

const writev = promisify(fsc.writev);
const pread = promisify(fsc.read);
const fdatasync = promisify(fsc.fdatasync);
const fclose = promisify(fsc.close);
const fopen = promisify(fsc.open);
const ftruncate = promisify(fsc.ftruncate);

/** Zeros that preallocate segments (shared, never written into). */
let zeroChunk: Buffer | null = null;
const ZERO_CHUNK = 1 << 20;
/**
 * A new segment is written only while at least this share of the volume (at most HEADROOM_MAX)
 * would stay free after it. The WAL often shares its volume (the data directory holds the embedded
 * metadata database and the control database too): a spare written until the volume is full, even
 * for the moment before a failed one is removed, made a metadata change in flight fail.
 */
const HEADROOM_SHARE = 64;
const HEADROOM_MAX = 64 << 20;
/**
 * Batches of at most this many bytes are written synchronously (a small file's record, metadata
 * records): a write into the page cache of a few KiB costs less than handing it to the thread pool.
 */
const INLINE_WRITE_MAX = 16 << 10;
/** Chunks per writev while preallocating (16 MiB per call). */
const ZERO_IOVECS = 16;

export interface WalAppend {
  seg: WalSegment;
  /** Position of the record's data inside the segment. */
  pos: number;
  /** Resolves once the record is written to the segment file (not yet fsynced). */
  done: Promise<void>;
  /** The CRC32C of the record's data, as its header holds it (absent where none is computed). */
  crc?: number;
}

/** A record found by replay, its data left in the segment. */
export interface ReplayRecord {
  type: RecordType;
  /** RECORD_TIMES: the times it holds. */
  times?: { mtime: Timespec; ctime: Timespec };
  share: number;
  inode: number;
  /** Write: the file offset; truncate: the new size; cut: where the zeros begin. */
  offset: number;
  length: number;
  seg: WalSegment;
  pos: number;
  /** The fencing token of the write lease the record was written under (0: none). */
  token: number;
  /** The CRC32C of its data, as its header holds it (checked here): reads of the data check it again. */
  crc?: number;
}

export interface ReplayReport {
  segments: number;
  records: number;
  dataBytes: number;
  /** Records whose data failed its CRC: never applied. */
  corruptRecords: { segment: number; pos: number; share: number; inode: number; offset: number; length: number }[];
  /** Byte ranges in which no valid record header could be found. */
  corruptRanges: { segment: number; from: number; to: number }[];
  /** Bytes cut from the end of segments (a write the crash interrupted). */
  tornBytes: number;
}

/** Thrown by `read` when a segment was retired meanwhile: the data is in the block store now. */
export const WAL_GONE = 'DITTOFS_WAL_GONE';

/**
 * Thrown (synchronously, nothing appended) by an append that needs a new segment when none is
 * ready: the volume is full (`writable` is false then) or the next segment is still being prepared.
 */
export const WAL_NO_ROOM = 'DITTOFS_WAL_NO_ROOM';

export interface Wal {
  /** False for the memory WAL: its data lives only in the extents' buffers. */
  readonly persistent: boolean;
  /** `token`: the fencing token of the file's write lease (0 without coordination). */
  appendWrite(share: number, inode: number, offset: number, data: Buffer, token?: number): WalAppend;
  appendTruncate(share: number, inode: number, size: number, token?: number): WalAppend;
  /** See RECORD_CUT. */
  appendCut(share: number, inode: number, from: number, token?: number): WalAppend;
  /** See RECORD_TIMES. */
  appendTimes(share: number, inode: number, end: number, mtime: Timespec, ctime: Timespec, token?: number): WalAppend;
  /** Marks every record of `share` appended so far as stored (see RECORD_SHARE_STORED). */
  appendShareStored(share: number): WalAppend;
  /** Reads `length` bytes at `pos` of a segment into `target` at `targetStart`. */
  read(seg: WalSegment, pos: number, length: number, target: Buffer, targetStart: number): Promise<void>;
  hold(seg: WalSegment, h: WalHolder): void;
  release(seg: WalSegment, h: WalHolder): void;
  /** Group commit: resolves once every append issued before the call is on stable storage. */
  sync(): Promise<void>;
  /** True while the log is at its size limit: writers wait. */
  readonly full: boolean;
  /**
   * False while the log cannot take a record beyond its active segment because its volume is full
   * (or a new segment cannot be created): readiness and metrics report it.
   */
  readonly writable: boolean;
  /** Times the log's volume was found full (ENOSPC / EDQUOT), for metrics. */
  readonly enospc: number;
  /**
   * Set for good once an fdatasync failed: the log takes and syncs nothing more, until a restart
   * replays what reached the disk. Liveness reports it (GET /health), so that Kubernetes restarts.
   */
  readonly failure: Error | null;
  /** Resolves when there is room again (or a new segment is ready), or after `ms`. */
  waitRoom(ms: number): Promise<void>;
  /**
   * Tries at once to get room for a new segment (after space was freed elsewhere); resolves true
   * when the log can take records again.
   */
  makeRoom(): Promise<boolean>;
  /** Holders of the oldest data: storing them is what frees room. */
  oldestHolders(): WalHolder[];
  /** Bytes the log holds (for metrics and tests). */
  readonly usedBytes: number;
  /** The log's size limit: `full` past it. */
  readonly maxBytes: number;
  close(): Promise<void>;
}

/** Wakes waiters when room appears. */
class RoomWaiters {
  private waiters: (() => void)[] = [];
  wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
  wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.waiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}

/**
 * The WAL of memory-only setups (tests, throwaway shares): nothing survives a restart, so records
 * are not written anywhere; it only accounts the dirty bytes, which the extents keep in memory.
 */
export class MemoryWal implements Wal {
  readonly persistent = false;
  readonly writable = true;
  readonly enospc = 0;
  readonly failure = null;
  usedBytes = 0;
  private nextId = 1;
  private readonly room = new RoomWaiters();
  private static readonly resolved = Promise.resolve();

  constructor(readonly maxBytes: number) {}

  get full(): boolean {
    return this.usedBytes > this.maxBytes;
  }

  private segment(bytes: number): WalAppend {
    const seg = new WalSegment(this.nextId++, null, null);
    seg.size = bytes;
    this.usedBytes += bytes;
    return { seg, pos: 0, done: MemoryWal.resolved };
  }

  appendWrite(_share: number, _inode: number, _offset: number, data: Buffer): WalAppend {
    return this.segment(data.length);
  }

  appendTruncate(): WalAppend {
    return this.segment(0);
  }

  appendCut(): WalAppend {
    return this.segment(0);
  }

  appendTimes(): WalAppend {
    return this.segment(0);
  }

  appendShareStored(): WalAppend {
    return this.segment(0);
  }

  read(): Promise<void> {
    return Promise.reject(Object.assign(new Error('the memory WAL keeps no data'), { code: WAL_GONE }));
  }

  hold(seg: WalSegment, h: WalHolder): void {
    seg.holders.add(h);
  }

  release(seg: WalSegment, h: WalHolder): void {
    if (!seg.holders.delete(h) || seg.holders.size > 0) return;
    this.usedBytes -= seg.size;
    seg.size = 0;
    if (!this.full) this.room.wake();
  }

  sync(): Promise<void> {
    return MemoryWal.resolved;
  }

  waitRoom(ms: number): Promise<void> {
    return this.full ? this.room.wait(ms) : Promise.resolve();
  }

  makeRoom(): Promise<boolean> {
    return Promise.resolve(true);
  }

  oldestHolders(): WalHolder[] {
    return [];
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

interface PendingWrite {
  seg: WalSegment;
  pos: number;
  bufs: Buffer[];
  bytes: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

export interface FileWalOptions {
  /** Size limit of the log: writers wait beyond it. */
  maxBytes: number;
  /**
   * Segment size (default: 16 MiB, or an eighth of maxBytes or of the volume if smaller, at least
   * 1 MiB). Each segment is preallocated in full, so this is also what one preallocation writes.
   */
  segmentBytes?: number;
  /**
   * How long uploads must have stayed caught up (nothing in the log behind the active segment)
   * before retired segments kept for reuse are deleted (ms; default 5000): parallel uploads catch
   * up for a moment after every burst, and a stream's lag grows again right after.
   */
  keptIdleMs?: number;
  log?: Logger;
}

const KEPT_IDLE_MS = 5000;

const segName = (id: number): string => `wal-${String(id).padStart(16, '0')}.log`;
const SEG_RE = /^wal-(\d{16})\.log$/;
/** The preallocated next segment, renamed to its `.log` name when it becomes the active one. */
const spareName = (id: number): string => `wal-${String(id).padStart(16, '0')}.spare`;
const SPARE_RE = /^wal-\d{16}\.spare$/;
/** While the volume is full, allocating the next segment is tried again this often (ms). */
const NO_SPACE_RETRY_MS = 1000;

/** Index just past the last non-zero byte of `buf` at or after `from` (`from` when all are zero). */
export function nonZeroEnd(buf: Buffer, from: number): number {
  const zeros = (zeroChunk ??= Buffer.alloc(ZERO_CHUNK));
  let end = buf.length;
  // Whole chunks first (a compare in native code): a preallocated segment is mostly zeros.
  while (end - from >= 4096) {
    const n = Math.min(ZERO_CHUNK, end - from);
    if (!buf.subarray(end - n, end).equals(zeros.subarray(0, n))) break;
    end -= n;
  }
  while (end > from && buf[end - 1] === 0) end--;
  return end;
}

function segHeader(id: number, flags: number): Buffer {
  const b = Buffer.alloc(SEG_HEADER);
  SEG_MAGIC.copy(b, 0);
  b.writeUInt32LE(SEG_VERSION, 8);
  b.writeUInt32LE(flags, 12);
  b.writeBigUInt64LE(BigInt(id), 16);
  return b;
}

/** RECORD_TIMES data (see there). */
function timesData(mtime: Timespec, ctime: Timespec): Buffer {
  const b = Buffer.alloc(TIMES_BYTES);
  b.writeBigInt64LE(BigInt(mtime.sec), 0);
  b.writeUInt32LE(mtime.nsec, 8);
  b.writeBigInt64LE(BigInt(ctime.sec), 12);
  b.writeUInt32LE(ctime.nsec, 20);
  return b;
}

/** The times of a RECORD_TIMES record's data, or undefined if it is not such data (size or values). */
function readTimes(buf: Buffer, at: number, length: number): { mtime: Timespec; ctime: Timespec } | undefined {
  if (length !== TIMES_BYTES) return undefined;
  const sec = (o: number): number | undefined => {
    const v = buf.readBigInt64LE(at + o);
    return v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER) ? undefined : Number(v);
  };
  const msec = sec(0);
  const csec = sec(12);
  const mnsec = buf.readUInt32LE(at + 8);
  const cnsec = buf.readUInt32LE(at + 20);
  if (msec === undefined || csec === undefined || mnsec >= 1e9 || cnsec >= 1e9) return undefined;
  return { mtime: { sec: msec, nsec: mnsec }, ctime: { sec: csec, nsec: cnsec } };
}

/** The seed of the record header CRCs of a segment of format 3 on (its id's low 32 bits). */
const crcSeed = (id: number): number => id % 2 ** 32;

function recordHeader(
  type: RecordType,
  share: number,
  inode: number,
  offset: number,
  data: Buffer | null,
  dataCrc: number,
  token: number,
  seed: number,
): Buffer {
  const h = Buffer.alloc(REC_HEADER);
  h.writeBigUInt64LE(BigInt(token), 40);
  h.writeUInt32LE(REC_MAGIC, 0);
  h.writeUInt8(type, 8);
  h.writeUInt32LE(share >>> 0, 12);
  h.writeBigUInt64LE(BigInt(inode), 16);
  h.writeBigUInt64LE(BigInt(offset), 24);
  h.writeUInt32LE(data ? data.length : 0, 32);
  h.writeUInt32LE(dataCrc, 36);
  h.writeUInt32LE(crc32c(h.subarray(8), seed), 4);
  return h;
}

interface ParsedHeader {
  type: RecordType;
  share: number;
  inode: number;
  offset: number;
  length: number;
  dataCrc: number;
  token: number;
}

/** A record header of `hdr` bytes at `at`, or null unless its magic and CRC (from `seed`) check out. */
function parseHeader(buf: Buffer, at: number, hdr: number, seed: number): ParsedHeader | null {
  if (at + hdr > buf.length || buf.readUInt32LE(at) !== REC_MAGIC) return null;
  if (crc32c(buf.subarray(at + 8, at + hdr), seed) !== buf.readUInt32LE(at + 4)) return null;
  const token = hdr === REC_HEADER ? buf.readBigUInt64LE(at + 40) : 0n;
  if (token > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  const type = buf.readUInt8(at + 8);
  const inode = buf.readBigUInt64LE(at + 16);
  const offset = buf.readBigUInt64LE(at + 24);
  const length = buf.readUInt32LE(at + 32);
  if (!isRecordType(type)) return null;
  if (inode > BigInt(Number.MAX_SAFE_INTEGER) || offset > BigInt(Number.MAX_SAFE_INTEGER) || length > MAX_RECORD_DATA) return null;
  return {
    type,
    share: buf.readUInt32LE(at + 12),
    inode: Number(inode),
    offset: Number(offset),
    length,
    dataCrc: buf.readUInt32LE(at + 36),
    token: Number(token),
  };
}

/** The next offset after `from` where a valid record header starts, or -1. */
function resync(buf: Buffer, from: number, hdr: number, seed: number): number {
  const magic = Buffer.alloc(4);
  magic.writeUInt32LE(REC_MAGIC, 0);
  let at = from;
  for (;;) {
    at = buf.indexOf(magic, at);
    if (at < 0) return -1;
    if (parseHeader(buf, at, hdr, seed)) return at;
    at += 1;
  }
}

export class FileWal implements Wal {
  readonly persistent = true;
  private readonly segments: WalSegment[] = [];
  /** Where appends go; null while no segment could be allocated (a full volume). */
  private active: WalSegment | null = null;
  /** The next segment, preallocated and synced; null until it is ready. */
  private spare: WalSegment | null = null;
  private preparing: Promise<void> | null = null;
  /** Retired segments kept to become spares (open, full size, named as spares of their old id). */
  private readonly reusable: { fd: number; file: string }[] = [];
  /** Spares made by reusing a retired segment / by writing zeros (metrics, tests). */
  sparesReused = 0;
  sparesWritten = 0;
  /** Why the last attempt to allocate a segment failed; null once one succeeds. */
  private noRoomError: Error | null = null;
  /** An append was refused for want of a segment since then: the log is not writable. */
  private refusing = false;
  private noRoomTimer: NodeJS.Timeout | null = null;
  /** Deletes the kept segments if uploads stay caught up (see dropKeptIfCaughtUp). */
  private keptTimer: NodeJS.Timeout | null = null;
  /** Set by keptTimer: the next retireOnce deletes the kept segments if uploads are still caught up. */
  private dropKept = false;
  /** Times the volume was found full (metrics). */
  enospc = 0;
  private nextId = 1;
  private segmentBytes: number;
  private readonly queue: PendingWrite[] = [];
  private writing = false;
  /** The directory fsync running now, and the one queued after it (see syncDir). */
  private dirSyncRunning: Promise<void> | null = null;
  private dirSyncNext: Promise<void> | null = null;
  /** Woken after every batch written: sync() waits on it for its appends. */
  private readonly progress = new RoomWaiters();
  private readonly room = new RoomWaiters();
  /** Appends issued / appends written, for group commit. */
  private issued = 0;
  private written = 0;
  private syncing: Promise<void> | null = null;
  private syncedUpTo = 0;
  /** fsync rounds so far (one round covers every append issued before it). */
  syncs = 0;
  private dirDirty = false;
  private retiring: Promise<void> | null = null;
  private retireAgain = false;
  /**
   * Failed retire runs in a row, and the timer that tries again after the last one's backoff:
   * while it is set, no other caller starts a run (close excepted).
   */
  private retireFailures = 0;
  private retireTimer: NodeJS.Timeout | null = null;
  /** When the last retire run failed (performance.now()). */
  private retireFailedAt = -Infinity;
  /**
   * False until the caller has replayed the records `open` returned and said so (`tidy`): until
   * then no segment may go, since nothing holds the data of records not yet replayed.
   */
  private replayed = false;
  private closed = false;
  /** close() has run to its end: this instance changes nothing in the directory any more. */
  private finished = false;
  private writeError: Error | null = null;
  /** Set when an fdatasync of a segment failed: no append or sync succeeds any more (see the head of this file). */
  private broken: Error | null = null;

  private constructor(
    readonly dir: string,
    private readonly opts: FileWalOptions,
  ) {
    this.segmentBytes = opts.segmentBytes ?? Math.max(1 << 20, Math.min(16 << 20, Math.floor(opts.maxBytes / 8)));
  }

  /**
   * Opens the log in `dir`, scanning every segment: torn tails are cut, records with a bad CRC are
   * reported and skipped. Returns the valid records in log order; the caller replays them and
   * holds their segments until their data is stored.
   */
  static async open(dir: string, opts: FileWalOptions): Promise<{ wal: FileWal; records: ReplayRecord[]; report: ReplayReport }> {
    const wal = new FileWal(dir, opts);
    await fs.mkdir(dir, { recursive: true });
    await wal.fitVolume();
    const names = await fs.readdir(dir);
    // A spare segment never took a record: one a crash left behind is just space.
    for (const n of names) if (SPARE_RE.test(n)) await fs.rm(path.join(dir, n), { force: true });
    const ids = names
      .map((n) => SEG_RE.exec(n))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    const records: ReplayRecord[] = [];
    const report: ReplayReport = { segments: 0, records: 0, dataBytes: 0, corruptRecords: [], corruptRanges: [], tornBytes: 0 };
    for (const id of ids) {
      const file = path.join(dir, segName(id));
      const buf = await fs.readFile(file);
      wal.nextId = Math.max(wal.nextId, id + 1);
      if (buf.length < SEG_HEADER || !buf.subarray(0, 8).equals(SEG_MAGIC) || buf.readBigUInt64LE(16) !== BigInt(id)) {
        if (buf.length < SEG_HEADER && buf.subarray(0, Math.min(8, buf.length)).equals(SEG_MAGIC.subarray(0, Math.min(8, buf.length)))) {
          // A segment whose creation the crash interrupted: it holds nothing.
          report.tornBytes += buf.length;
          await fs.rm(file, { force: true });
          continue;
        }
        report.corruptRanges.push({ segment: id, from: 0, to: buf.length });
        opts.log?.error(
          { segment: file },
          'WAL segment header is corrupt: the segment is set aside as .corrupt and its data is not served',
        );
        await fs.rename(file, `${file}.corrupt`);
        continue;
      }
      const format = buf.readUInt32LE(8);
      if (format !== SEG_VERSION && format !== SEG_VERSION_NO_TIMES && format !== SEG_VERSION_UNSEEDED && format !== SEG_VERSION_NO_TOKEN) {
        throw new Error(`WAL segment ${file} has format version ${format}; this DittoFS reads versions 1 to ${SEG_VERSION}`);
      }
      const hdr = format === SEG_VERSION_NO_TOKEN ? REC_HEADER_NO_TOKEN : REC_HEADER;
      const seeded = format >= SEG_VERSION_NO_TIMES;
      const seed = seeded ? crcSeed(id) : 0;
      // Past the records of a reused segment lie those of its earlier life, not zeros: where this
      // id's records stop, the segment ends (they fail the seeded CRC, like any torn write).
      const reused = seeded && (buf.readUInt32LE(12) & SEG_FLAG_REUSED) !== 0;
      /** Bytes of a record cut as torn, when the rest of a reused segment cannot tell. */
      let cutRecord = 0;
      const fd = fsc.openSync(file, fsc.constants.O_RDWR);
      const seg = new WalSegment(id, file, fd);
      let at = SEG_HEADER;
      let validEnd = SEG_HEADER;
      while (at < buf.length) {
        const h = parseHeader(buf, at, hdr, seed);
        if (!h || at + hdr + h.length > buf.length) {
          // Preallocated space past the last record: zeros, nothing was ever written there.
          if (nonZeroEnd(buf, at) === at) break;
          // A reused segment: past this id's records lie its earlier life's bytes, client data
          // among them, which must never be searched for records (a client could write bytes that
          // pass for a record of a later id).
          if (reused) break;
          const next = resync(buf, at + 1, hdr, seed);
          if (next < 0) break; // the rest is a torn tail
          report.corruptRanges.push({ segment: id, from: at, to: next });
          opts.log?.error({ segment: file, from: at, to: next }, 'WAL bytes with no valid record: skipped, never served');
          at = next;
          continue;
        }
        const dataAt = at + hdr;
        const end = dataAt + h.length;
        const intact = h.length === 0 || crc32c(buf.subarray(dataAt, end)) === h.dataCrc;
        // The last record of a preallocated segment, with only zeros after it: an append the crash
        // interrupted (part of its data never reached the disk), cut like any torn tail.
        // In a reused segment: always (what follows is not searched, see above).
        if (!intact && end < buf.length && (reused || nonZeroEnd(buf, end) === end)) {
          cutRecord = end - at;
          break;
        }
        at = end;
        validEnd = end;
        if (!intact) {
          const bad = { segment: id, pos: dataAt, share: h.share, inode: h.inode, offset: h.offset, length: h.length };
          report.corruptRecords.push(bad);
          opts.log?.error({ ...bad, file }, 'WAL record failed its CRC: its bytes are not served; the file keeps its older content there');
          continue;
        }
        const times = h.type === RECORD_TIMES ? readTimes(buf, dataAt, h.length) : undefined;
        if (h.type === RECORD_TIMES && times === undefined) {
          const bad = { segment: id, pos: dataAt, share: h.share, inode: h.inode, offset: h.offset, length: h.length };
          report.corruptRecords.push(bad);
          opts.log?.error(
            { ...bad, file },
            'WAL times record is not valid (its size, or a time out of range): not applied; the file keeps the times stored',
          );
          continue;
        }
        records.push({
          type: h.type,
          share: h.share,
          inode: h.inode,
          offset: h.offset,
          length: h.length,
          seg,
          pos: dataAt,
          token: h.token,
          crc: h.dataCrc,
          ...(times ? { times } : {}),
        });
        report.records++;
        report.dataBytes += h.length;
      }
      // A reused segment's tail is older bytes: only a record known to be cut counts.
      const torn = reused ? cutRecord : nonZeroEnd(buf, validEnd) - validEnd;
      if (torn > 0) {
        report.tornBytes += torn;
        opts.log?.warn({ segment: file, bytes: torn }, 'WAL segment ends in an interrupted write: cut');
      }
      if (validEnd < buf.length) {
        // The torn tail and the unused preallocated space: this segment takes no more records.
        await ftruncate(fd, validEnd);
        await fdatasync(fd);
      }
      seg.size = validEnd;
      wal.segments.push(seg);
      report.segments++;
    }
    await wal.prepareSpare();
    // A full volume is not fatal (writers wait until uploads free space); anything else is.
    if (wal.noRoomError && !isNoSpace(wal.noRoomError)) {
      await wal.close();
      throw wal.noRoomError;
    }
    wal.roll();
    await wal.syncDir();
    return { wal, records, report };
  }

  /** Sizes segments for the volume: at most an eighth of it each, so that several always fit. */
  private async fitVolume(): Promise<void> {
    let volume: number;
    try {
      const st = await fs.statfs(this.dir);
      volume = st.blocks * st.bsize;
    } catch {
      return;
    }
    if (!(volume > 0)) return;
    if (this.opts.segmentBytes === undefined) {
      const fit = Math.max(1 << 20, Math.floor(volume / 8 / (1 << 20)) * (1 << 20));
      this.segmentBytes = Math.min(this.segmentBytes, fit);
    }
    if (this.opts.maxBytes > volume) {
      this.opts.log?.warn(
        { walMaxBytes: this.opts.maxBytes, volumeBytes: volume },
        'cache.wal_max_bytes is larger than the WAL volume: when the volume fills, writers wait for uploads to free space',
      );
    }
  }

  get maxBytes(): number {
    return this.opts.maxBytes;
  }

  get usedBytes(): number {
    let n = 0;
    for (const s of this.segments) n += s.size;
    return n;
  }

  /** Segment files, the active one included (for metrics). */
  get segmentCount(): number {
    return this.segments.length;
  }

  /** Bytes of each segment file (preallocated). */
  get segmentSize(): number {
    return this.segmentBytes;
  }

  get full(): boolean {
    return this.usedBytes >= this.opts.maxBytes;
  }

  /** False once an append found no room (not merely while the next segment is missing: the active one may have room). */
  get writable(): boolean {
    return this.noRoomError === null || (this.active !== null && !this.refusing);
  }

  get failure(): Error | null {
    return this.broken;
  }

  waitRoom(ms: number): Promise<void> {
    return this.full || this.spare === null ? this.room.wait(ms) : Promise.resolve();
  }

  async makeRoom(): Promise<boolean> {
    if (this.closed) return false;
    // Out of room: worth a try during a failed retire's backoff, once a second at most (the
    // no-room timer and every refused writer call this).
    if (performance.now() - this.retireFailedAt >= NO_SPACE_RETRY_MS) this.retireLater(null);
    await this.retire();
    await this.prepareSpare();
    // A spare is ready: a failed append's ENOSPC (the spare was allocated before it) is over too.
    if (this.spare !== null) this.roomAgain();
    return this.spare !== null;
  }

  oldestHolders(): WalHolder[] {
    for (const s of this.segments) if (s.holders.size > 0) return [...s.holders];
    return [];
  }

  /**
   * Makes the spare the active segment. Synchronous (a rename) so that every append knows its
   * position at once, which keeps the dirty-extent index in log order. Null when no spare is
   * ready (its preparation is started) or it cannot be renamed into place.
   */
  private roll(): WalSegment | null {
    const spare = this.spare;
    if (spare === null || spare.file === null) {
      void this.prepareSpare();
      return null;
    }
    const file = path.join(this.dir, segName(spare.id));
    try {
      fsc.renameSync(spare.file, file);
    } catch (err) {
      // It stays the spare; writers wait as for a spare not ready, and the retry timer (the log
      // may be full, its writers only polling) tries again.
      this.opts.log?.warn({ err }, 'could not rename the WAL spare into place');
      this.retireLater(NO_SPACE_RETRY_MS);
      return null;
    }
    this.spare = null;
    const seg = new WalSegment(spare.id, file, spare.fd);
    seg.reusable = true;
    this.active = seg;
    this.segments.push(seg);
    // The header is synced with the spare; the rename is made durable by the next sync.
    this.dirDirty = true;
    // With older segments in the log, one of them is likely to be stored and retired before this
    // one is half full: it becomes the next spare then, instead of zeros written now (see reserve).
    if (this.segments.length === 1 || this.reusable.length > 0) void this.prepareSpare();
    return seg;
  }

  /** Starts preallocating the next segment unless one is ready or under way; never rejects. */
  private prepareSpare(): Promise<void> {
    if (this.spare !== null || this.closed) return Promise.resolve();
    this.preparing ??= this.allocate().finally(() => (this.preparing = null));
    return this.preparing;
  }

  /**
   * Prepares the next segment: a retired one with a new header (its space is the log's already), or
   * else a new file, its header, then zeros to its full size; synced either way.
   */
  private async allocate(): Promise<void> {
    const id = this.nextId++;
    const old = this.reusable.pop();
    if (old !== undefined) {
      try {
        // Its rename away from the .log name must be on disk before its header says another id:
        // else a crash could leave a .log whose header names another segment (set aside as corrupt).
        await this.dirSynced();
        const header = segHeader(id, SEG_FLAG_REUSED);
        const { bytesWritten } = await writev(old.fd, [header], 0);
        if (bytesWritten !== SEG_HEADER) throw new Error('short write of a WAL segment header');
        await fdatasync(old.fd);
        if (this.closed) throw new Error('WAL is closed');
        this.spare = new WalSegment(id, old.file, old.fd);
        this.sparesReused++;
        this.roomAgain();
        this.dropKeptIfCaughtUp();
        return;
      } catch {
        // Not fit for reuse after all: its space goes back to the volume, and a new one is written.
        await fclose(old.fd).catch(() => undefined);
        await fs.rm(old.file, { force: true }).catch(() => undefined);
        if (this.closed) return;
      }
    }
    const file = path.join(this.dir, spareName(id));
    let fd: number | null = null;
    try {
      await this.checkHeadroom();
      const size = Math.max(this.segmentBytes, SEG_HEADER);
      fd = await fopen(file, fsc.constants.O_RDWR | fsc.constants.O_CREAT | fsc.constants.O_TRUNC, 0o600);
      const zeros = (zeroChunk ??= Buffer.alloc(ZERO_CHUNK));
      const header = segHeader(id, 0);
      for (let pos = 0; pos < size;) {
        const bufs: Buffer[] = pos < SEG_HEADER ? [header.subarray(pos)] : [];
        let n = pos < SEG_HEADER ? SEG_HEADER - pos : 0;
        while (bufs.length < ZERO_IOVECS && pos + n < size) {
          const k = Math.min(ZERO_CHUNK, size - pos - n);
          bufs.push(zeros.subarray(0, k));
          n += k;
        }
        const { bytesWritten } = await writev(fd, bufs, pos);
        if (bytesWritten <= 0) throw new Error('WAL segment preallocation made no progress');
        pos += bytesWritten;
      }
      await fdatasync(fd);
      if (this.closed) throw new Error('WAL is closed');
      this.spare = new WalSegment(id, file, fd);
      this.sparesWritten++;
      fd = null;
      this.roomAgain();
      this.dropKeptIfCaughtUp();
    } catch (err) {
      if (fd !== null) await fclose(fd).catch(() => undefined);
      // Never leave a partial segment behind: its space goes back to the volume at once.
      await fs.rm(file, { force: true }).catch(() => undefined);
      if (!this.closed) this.noRoom(err as Error);
    }
  }

  /**
   * Why a new segment does not fit with the headroom (HEADROOM_SHARE of the volume) left free, once
   * `freed` more bytes are free; null when it fits. Only a guard: a volume statfs cannot read fits.
   */
  private async noRoomForSegment(freed = 0): Promise<string | null> {
    const st = await fs.statfs(this.dir).catch(() => null);
    if (st === null || !(st.blocks > 0)) return null;
    const free = st.bavail * st.bsize + freed;
    const headroom = Math.min(HEADROOM_MAX, Math.floor((st.blocks * st.bsize) / HEADROOM_SHARE));
    const size = Math.max(this.segmentBytes, SEG_HEADER);
    if (free >= size + headroom) return null;
    return `no room for a new WAL segment of ${size} bytes: ${free} bytes free, and ${headroom} are left for what shares the volume`;
  }

  /** Refuses (ENOSPC) to write a new segment that would not leave the headroom free. */
  private async checkHeadroom(): Promise<void> {
    const why = await this.noRoomForSegment();
    if (why === null) return;
    const err: NodeJS.ErrnoException = new Error(why);
    err.code = 'ENOSPC';
    throw err;
  }

  /** Whether a new segment and the headroom fit once the idle segment `seg` is deleted. */
  private async replaceable(seg: WalSegment): Promise<boolean> {
    const own = seg.file === null ? 0 : ((await fs.stat(seg.file).catch(() => null))?.size ?? 0);
    return (await this.noRoomForSegment(own)) === null;
  }

  /**
   * Whether a retired segment is kept to become a later spare: MAX_REUSABLE at most, besides the
   * spare, while they fit under the size limit with the log and the volume has room. When uploads
   * lag behind writes, the spare is ready long before the oldest segment retires; a retired segment
   * deleted then means the spare after the next one is written full of zeros again (a second write
   * of every logged byte: 69 of 70 spares were, in a 1 GiB stream). Kept, it is that spare. Parallel
   * block uploads finish in bursts that retire several segments at once, and the lag grows again
   * after each: one kept segment left 15 of 36 spares in a 512 MiB stream written full of zeros,
   * four left 5 (and zeros go into fresh page-cache pages, the dearest write on a VM). So the log
   * holds its segments, one spare and at most MAX_REUSABLE retired segments, those only while
   * uploads lag (see retireOnce); on a full volume nothing is kept (an upload may need the space).
   */
  private keepForReuse(): boolean {
    return (
      !this.closed &&
      this.noRoomError === null &&
      this.reusable.length < MAX_REUSABLE &&
      this.usedBytes + (this.reusable.length + 1) * this.segmentBytes <= this.opts.maxBytes
    );
  }

  /**
   * Uploads caught up: segments kept for reuse are deleted (by retireOnce) if they still are after
   * keptIdleMs. One timer at a time; it does nothing if the lag is back by then.
   */
  private dropKeptIfCaughtUp(): void {
    if (this.keptTimer !== null || this.closed || this.reusable.length === 0 || this.segments.length > 1) return;
    this.keptTimer = setTimeout(() => {
      this.keptTimer = null;
      if (this.closed || this.segments.length > 1) return;
      this.dropKept = true;
      void this.retire();
    }, this.opts.keptIdleMs ?? KEPT_IDLE_MS);
    this.keptTimer.unref();
  }

  /** No new segment can be had: writers past the active segment wait; retried every second. */
  private noRoom(err: Error): void {
    const first = this.noRoomError === null;
    this.noRoomError = err;
    if (first) {
      if (isNoSpace(err)) {
        this.enospc++;
        this.opts.log?.warn(
          { err: err.message, walBytes: this.usedBytes },
          'the WAL volume is full: writes wait until uploads free space (the WAL is not writable)',
        );
      } else {
        this.opts.log?.error({ err }, 'could not create the next WAL segment: writes wait; retrying');
      }
    }
    this.noRoomTimer ??= setInterval(() => void this.makeRoom(), NO_SPACE_RETRY_MS);
    this.noRoomTimer.unref();
    // Waiters look again: with nothing left to upload they are refused now.
    this.room.wake();
  }

  private roomAgain(): void {
    if (this.noRoomTimer) clearInterval(this.noRoomTimer);
    this.noRoomTimer = null;
    this.refusing = false;
    if (this.noRoomError !== null) {
      this.noRoomError = null;
      this.opts.log?.info({ walBytes: this.usedBytes }, 'the WAL has room again: writes resume');
    }
    this.room.wake();
  }

  /** Retires the oldest segment once nothing holds, reads, writes or syncs it (and it is not the active one). */
  private retireIfIdle(): void {
    const head = this.segments[0];
    if (head && head !== this.active && head.holders.size === 0 && head.readers === 0) void this.retire();
  }

  /**
   * Resolves once every change to the log's directory made so far is on disk: a segment's rename is
   * durable once a directory sync that began after it is over, and the one running now (allocate's,
   * begun after a roll) may be that sync, though it cleared `dirDirty` when it began.
   */
  private async dirSynced(): Promise<void> {
    if (this.dirDirty) await this.syncDir();
    else await this.dirSyncRunning;
  }

  /**
   * fsyncs the log's directory. A caller that comes while one runs (which may have begun before the
   * caller's change) waits for the next, shared by all that came meanwhile; a failed sync leaves
   * `dirDirty` set, so that the next COMMIT syncs again.
   */
  private syncDir(): Promise<void> {
    if (this.dirSyncRunning !== null)
      return (this.dirSyncNext ??= this.dirSyncRunning
        .catch(() => undefined)
        .then(() => {
          this.dirSyncNext = null;
          return this.startDirSync();
        }));
    return this.startDirSync();
  }

  private startDirSync(): Promise<void> {
    this.dirDirty = false;
    const run = (async (): Promise<void> => {
      const d = await fs.open(this.dir, fsc.constants.O_RDONLY);
      try {
        await d.sync();
      } finally {
        await d.close();
      }
    })();
    this.dirSyncRunning = run;
    const done = (): void => {
      if (this.dirSyncRunning === run) this.dirSyncRunning = null;
    };
    run.then(done, () => {
      this.dirDirty = true;
      done();
    });
    return run;
  }

  /**
   * Reserves room in the active segment, moving on to the spare when it is full. Throws
   * WAL_NO_ROOM, having changed nothing, when no spare is ready.
   */
  private reserve(bytes: number): { seg: WalSegment; at: number } {
    let a = this.active;
    if (a === null || a.broken || (a.size + bytes > this.segmentBytes && a.size > SEG_HEADER)) {
      a = this.roll();
      if (a === null) {
        if (this.noRoomError !== null) this.refusing = true;
        const why = this.noRoomError
          ? `no room for a new WAL segment: ${this.noRoomError.message}`
          : 'the next WAL segment is not ready yet';
        throw Object.assign(new Error(why), { code: WAL_NO_ROOM });
      }
    }
    const at = a.size;
    a.size += bytes;
    // No retired segment came to be reused by half-way: the next one is written now, in time.
    if (this.spare === null && this.preparing === null && a.size * 2 > this.segmentBytes) void this.prepareSpare();
    return { seg: a, at };
  }

  private append(type: RecordType, share: number, inode: number, offset: number, data: Buffer | null, token = 0): WalAppend {
    if (this.closed) throw new Error('WAL is closed');
    if (this.broken) throw this.broken;
    if (data && data.length > MAX_RECORD_DATA) throw new Error(`WAL record of ${data.length} bytes exceeds ${MAX_RECORD_DATA}`);
    const bytes = REC_HEADER + (data?.length ?? 0);
    const { seg, at } = this.reserve(bytes);
    const crc = data && data.length > 0 ? crc32c(data) : 0;
    const header = recordHeader(type, share, inode, offset, data, crc, token, crcSeed(seg.id));
    const bufs = data && data.length > 0 ? [header, data] : [header];
    this.issued++;
    const done = this.enqueue(seg, at, bufs, bytes);
    return { seg, pos: at + REC_HEADER, done, crc };
  }

  appendWrite(share: number, inode: number, offset: number, data: Buffer, token = 0): WalAppend {
    return this.append(RECORD_WRITE, share, inode, offset, data, token);
  }

  appendTruncate(share: number, inode: number, size: number, token = 0): WalAppend {
    return this.append(RECORD_TRUNCATE, share, inode, size, null, token);
  }

  appendCut(share: number, inode: number, from: number, token = 0): WalAppend {
    return this.append(RECORD_CUT, share, inode, from, null, token);
  }

  appendTimes(share: number, inode: number, end: number, mtime: Timespec, ctime: Timespec, token = 0): WalAppend {
    return this.append(RECORD_TIMES, share, inode, end, timesData(mtime, ctime), token);
  }

  appendShareStored(share: number): WalAppend {
    return this.append(RECORD_SHARE_STORED, share, 0, 0, null);
  }

  private enqueue(seg: WalSegment, pos: number, bufs: Buffer[], bytes: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ seg, pos, bufs, bytes, resolve, reject });
      if (!this.writing) void this.drain();
    });
  }

  /** The single writer: batches contiguous records of one segment into one writev. */
  private async drain(): Promise<void> {
    this.writing = true;
    try {
      while (this.queue.length > 0) {
        const first = this.queue[0]!;
        const batch: PendingWrite[] = [first];
        let end = first.pos + first.bytes;
        let bufCount = first.bufs.length;
        for (let i = 1; i < this.queue.length && bufCount < 512 && end - first.pos < 16 << 20; i++) {
          const p = this.queue[i]!;
          if (p.seg !== first.seg || p.pos !== end) break;
          batch.push(p);
          end += p.bytes;
          bufCount += p.bufs.length;
        }
        this.queue.splice(0, batch.length);
        const seg = first.seg;
        // Out of the queue but not written yet: retire must not close the segment under it (its
        // records may have no holder left, an upload having stored them from memory meanwhile).
        seg.readers++;
        // A small batch is copied into the page cache here, on the calling thread: ~10 us, where
        // the thread pool's round trip (two thread wake-ups) took ~100 us per call.
        const inline = end - first.pos <= INLINE_WRITE_MAX;
        try {
          if (seg.broken || seg.fd === null) throw this.writeError ?? new Error('WAL segment is unavailable');
          const bufs = batch.flatMap((p) => p.bufs);
          let written = 0;
          while (written < end - first.pos) {
            const rest = written === 0 ? bufs : [Buffer.concat(bufs).subarray(written)];
            const n = inline
              ? fsc.writevSync(seg.fd, rest, first.pos + written)
              : (await writev(seg.fd, rest, first.pos + written)).bytesWritten;
            if (n <= 0) throw new Error('WAL write made no progress');
            written += n;
          }
          seg.unsynced = true;
          this.written += batch.length;
          for (const p of batch) p.resolve();
          // A COMMIT waits for the appends issued before it, not for the queue to run dry.
          this.progress.wake();
        } catch (err) {
          // The segment now has a gap: nothing more goes into it, and replay cuts it there.
          seg.broken = true;
          this.writeError = err as Error;
          this.written += batch.length;
          this.opts.log?.error({ err, segment: seg.file }, 'WAL write failed');
          // Past the preallocated space (a record larger than a segment, a copy-on-write volume).
          if (isNoSpace(err)) this.noRoom(err as Error);
          for (const p of batch) p.reject(err as Error);
          this.progress.wake();
        } finally {
          // Written inline, the records are settled before append() has returned, and their
          // writers hold the segment only in the microtasks after that: until then it counts as
          // read, or another write's roll could retire it under them (their data gone).
          if (inline)
            setImmediate(() => {
              seg.readers--;
              this.retireIfIdle();
            });
          else seg.readers--;
        }
      }
    } finally {
      this.writing = false;
      this.retireIfIdle();
    }
  }

  private async allWritten(target: number): Promise<void> {
    while (this.written < target) await this.progress.wait(1000);
  }

  async sync(): Promise<void> {
    const target = this.issued;
    for (;;) {
      if (this.broken) throw this.broken;
      if (this.syncedUpTo >= target) return;
      if (this.syncing) {
        await this.syncing;
        continue;
      }
      this.syncing = this.syncOnce(target).finally(() => (this.syncing = null));
      await this.syncing;
    }
  }

  private async syncOnce(target: number): Promise<void> {
    await this.allWritten(target);
    const segs = this.segments.filter((s) => s.unsynced && s.fd !== null && !s.broken);
    for (const s of segs) {
      s.unsynced = false;
      s.readers++; // retire must not close it while its fdatasync is queued
    }
    this.syncs++;
    try {
      // Every fdatasync settles before their segments may be closed (finally, below).
      const synced = await Promise.allSettled(segs.map((s) => fdatasync(s.fd!)));
      for (const [i, r] of synced.entries()) if (r.status === 'rejected') throw this.breakOn(segs[i]!, r.reason);
      await this.dirSynced();
    } catch (err) {
      // A failed directory sync is tried again by the next sync() (a failed fdatasync broke the log).
      for (const s of segs) s.unsynced = true;
      throw err;
    } finally {
      for (const s of segs) s.readers--;
      this.retireIfIdle();
    }
    if (this.segments.some((s) => s.broken && s.holders.size > 0)) {
      throw new Error(`the WAL could not write data: ${this.writeError?.message ?? 'unknown error'}`);
    }
    this.syncedUpTo = Math.max(this.syncedUpTo, target);
  }

  /** Breaks the log after `seg`'s fdatasync failed with `cause` (see the head of this file); said once. */
  private breakOn(seg: WalSegment, cause: unknown): Error {
    if (this.broken) return this.broken;
    this.broken = new Error(
      `the WAL in ${this.dir} could not sync segment ${seg.id} to disk (${(cause as Error).message}): writes made before may not ` +
        'be on disk, and no write or COMMIT succeeds any more until the server is restarted, which replays what reached the disk ' +
        '(check the disk and its free space first)',
      { cause },
    );
    this.opts.log?.error({ err: cause, segment: seg.file }, 'WAL fsync failed: the WAL takes no more writes until the server is restarted');
    return this.broken;
  }

  async read(seg: WalSegment, pos: number, length: number, target: Buffer, targetStart: number): Promise<void> {
    const fd = seg.fd;
    if (fd === null) throw Object.assign(new Error(`WAL segment ${seg.id} is retired`), { code: WAL_GONE });
    seg.readers++;
    try {
      let done = 0;
      while (done < length) {
        const { bytesRead } = await pread(fd, target, targetStart + done, length - done, pos + done);
        if (bytesRead <= 0) throw new Error(`WAL segment ${seg.id} is shorter than its index says (at ${pos + done})`);
        done += bytesRead;
      }
    } finally {
      seg.readers--;
      if (seg.readers === 0 && seg.holders.size === 0) void this.retire();
    }
  }

  hold(seg: WalSegment, h: WalHolder): void {
    seg.holders.add(h);
  }

  release(seg: WalSegment, h: WalHolder): void {
    if (seg.holders.delete(h) && seg.holders.size === 0) void this.retire();
  }

  /** Called once every record `open` returned is replayed (held by its block version): segments may go now. */
  tidy(): void {
    this.replayed = true;
    void this.retire();
  }

  /** Deletes segments from the oldest while they hold nothing; one run at a time, never rejects. */
  private retire(): Promise<void> {
    // After close() nothing of this instance touches the directory: records released later (uploads
    // that finish after the close) are another instance's to retire, which may have opened it by then.
    if (!this.replayed || this.finished) return Promise.resolve();
    // After a failure (a segment's file that could not be deleted): tried again after a backoff,
    // not at every append; close tries once more in any case.
    if (!this.closed && this.retireTimer !== null) return Promise.resolve();
    if (this.retiring) {
      this.retireAgain = true;
      return this.retiring;
    }
    const run = async (): Promise<void> => {
      try {
        do {
          this.retireAgain = false;
          await this.retireOnce();
        } while (this.retireAgain);
        this.retireFailures = 0;
      } catch (err) {
        this.retireFailures++;
        this.retireFailedAt = performance.now();
        const retryMs = Math.min(RETIRE_RETRY_MAX_MS, 1000 * 2 ** Math.min(this.retireFailures - 1, 16));
        this.retireLater(retryMs);
        // The 1st, 2nd, 4th, 8th... failure in a row at error level; the others at debug.
        const n = this.retireFailures;
        this.opts.log?.[(n & (n - 1)) === 0 ? 'error' : 'debug'](
          { err, retryMs, failures: n },
          'could not retire a WAL segment: the log keeps it and every later segment until it goes',
        );
      } finally {
        this.retiring = null;
      }
    };
    this.retiring = run();
    return this.retiring;
  }

  /**
   * Tries retire again in `ms` even if nothing else asks (writers waiting for room only poll
   * `full`); null: none (the backoff is over). Never once the log is closed.
   */
  private retireLater(ms: number | null): void {
    if (this.retireTimer) clearTimeout(this.retireTimer);
    this.retireTimer = null;
    if (ms === null || this.closed) return;
    this.retireTimer = setTimeout(() => {
      this.retireTimer = null;
      void this.retire();
    }, ms);
    this.retireTimer.unref();
  }

  /**
   * Deletes segments from the oldest while they hold nothing and are fully written. The active one
   * goes too when the log closes, or when it holds nothing and the volume has no room for another
   * (its space is what the next segment needs).
   */
  private async retireOnce(): Promise<void> {
    let stuck: Error | null = null;
    for (let pass = 0; pass < 2 && stuck === null; pass++) {
      let freed = false;
      /** The active segment replaceable() found may go; the checks before it run again after its wait. */
      let fits: WalSegment | null = null;
      for (;;) {
        const s = this.segments[0];
        if (!s || s.holders.size > 0 || s.readers > 0 || this.queue.some((p) => p.seg === s)) break;
        if (s === this.active) {
          if (!this.closed) {
            if (!(this.spare === null && this.noRoomError !== null)) break;
            // One that holds no record yet would only be replaced by its like: a segment's worth
            // of zeros written again every second, and a moment with none to write to.
            if (s.size <= SEG_HEADER) break;
            // Only if a new segment fits in its place with the headroom: else it would be given
            // up for nothing, and the writes it could still take refused.
            if (fits !== s) {
              if (!(await this.replaceable(s))) break;
              fits = s;
              continue; // anything may have changed meanwhile: look again
            }
          }
          this.active = null;
        }
        this.segments.shift();
        const fd = s.fd;
        s.fd = null;
        if (fd !== null && s.file && s.reusable && this.keepForReuse()) {
          // Kept as a spare-to-be: renamed first, so that after a crash it is not replayed (open
          // deletes spares); its records are stored, so losing the rename to a crash is harmless too.
          const kept = path.join(this.dir, spareName(s.id));
          try {
            await fs.rename(s.file, kept);
            this.dirDirty = true; // once renamed: a directory sync begun before would not cover it
            this.reusable.push({ fd, file: kept });
            if (this.spare === null) void this.prepareSpare();
            this.room.wake();
            continue;
          } catch {
            // Deleted instead, below.
          }
        }
        // Its records are all stored: a failed close (a late write-back error) loses nothing, and
        // the descriptor is released all the same.
        if (fd !== null) await fclose(fd).catch(() => undefined);
        // unlink, not rm: a refused delete (EPERM, EIO) would be reported as rm's directory fallback.
        const refused =
          s.file === null
            ? null
            : await fs.unlink(s.file).then(
                () => null,
                (e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? null : e),
              );
        if (refused !== null) {
          // Left on disk, its records would be replayed at the next start over what later
          // segments stored: it stays the head of the log, and they stay behind it, until a later
          // run deletes it (the log on disk stays a suffix of history).
          this.segments.unshift(s);
          stuck = refused;
          break;
        }
        this.dirDirty = true;
        freed = true;
        this.room.wake();
      }
      // Space was freed: a segment can be allocated again if none could.
      if (freed && this.spare === null && !this.closed) void this.prepareSpare();
      // Uploads caught up (nothing behind the active segment) and a spare is ready: retired
      // segments kept for a lag that is gone are only disk space, once it stays gone a while.
      if (!this.closed && this.spare !== null && this.segments.length <= 1 && this.reusable.length > 0 && this.dropKept) {
        for (const r of this.reusable.splice(0)) {
          await fclose(r.fd).catch(() => undefined);
          await fs.rm(r.file, { force: true }).catch(() => undefined); // a spare: open deletes it
          this.dirDirty = true;
        }
      }
      this.dropKept = false;
      this.dropKeptIfCaughtUp();
      // The log is full and the active segment holds nothing live: move on so that it can go.
      const a = this.active;
      if (a === null || this.closed || !this.full || this.segments[0] !== a) break;
      const idle = a.holders.size === 0 && a.size > SEG_HEADER && !this.queue.some((p) => p.seg === a);
      // A spare that cannot be renamed into place stays the spare, tried again by a later run.
      if (!idle || this.roll() === null) break;
    }
    if (stuck !== null) throw stuck;
  }

  /**
   * Syncs and closes the log. Segments that hold nothing are deleted, the active one included, so
   * that after a clean stop with every block stored the next start has nothing to replay.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    // A broken log said so when it broke.
    if (this.broken === null) await this.sync().catch((err: unknown) => this.opts.log?.error({ err }, 'WAL sync at close failed'));
    this.closed = true;
    if (this.keptTimer) clearTimeout(this.keptTimer);
    this.keptTimer = null;
    if (this.noRoomTimer) clearInterval(this.noRoomTimer);
    this.noRoomTimer = null;
    this.retireLater(null);
    await this.preparing;
    await this.retire();
    const a = this.active;
    if (a && !this.replayed && a.size === SEG_HEADER && a.holders.size === 0 && this.segments.at(-1) === a) {
      // Records not replayed are kept, but this start's own segment holds none (left behind if
      // it cannot be deleted: it replays nothing). Nothing here may stop the close before
      // `finished` is set.
      this.segments.pop();
      this.active = null;
      if (a.fd !== null) await fclose(a.fd).catch(() => undefined);
      a.fd = null;
      if (a.file) await fs.rm(a.file, { force: true }).catch(() => undefined);
      this.dirDirty = true;
    }
    const spare = this.spare;
    this.spare = null;
    if (spare?.fd != null) await fclose(spare.fd).catch(() => undefined);
    if (spare?.file) await fs.rm(spare.file, { force: true }).catch(() => undefined); // the next open deletes it
    for (const r of this.reusable.splice(0)) {
      await fclose(r.fd).catch(() => undefined);
      await fs.rm(r.file, { force: true }).catch(() => undefined); // a spare: the next open deletes it
      this.dirDirty = true;
    }
    for (const s of this.segments) {
      const fd = s.fd;
      s.fd = null;
      if (fd !== null) await fclose(fd).catch(() => undefined);
    }
    // A record released during the awaits above started another run: it ends before the close
    // does, and none starts after (finished is set with no await between).
    while (this.retiring !== null) await this.retiring;
    this.finished = true;
    // The deletions too must survive a power loss, or a clean stop would be replayed after all.
    if (this.dirDirty) await this.syncDir().catch((err: unknown) => this.opts.log?.warn({ err }, 'WAL directory sync at close failed'));
    if (this.segments.length > 0) {
      this.opts.log?.info(
        { segments: this.segments.length, bytes: this.usedBytes },
        'WAL closed: it holds data not yet in the block store, replayed at the next start',
      );
    }
  }
}
