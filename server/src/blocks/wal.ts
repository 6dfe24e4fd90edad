// The write-ahead log (WAL) cache. Every WRITE appends a record (share, inode, offset, data, CRC32C)
// to the active segment file; TRUNCATEs are logged too, so that replay reproduces the order of
// events. Nothing is read back from the log except by replay and by the block service, which keeps
// an in-memory index of dirty extents pointing into segments and reads them to serve reads and to
// build blocks for upload.
//
// Durability: an append returns once the record is handed to the kernel (`done`); `sync()` is a
// group commit (one fdatasync per touched segment covers every append issued before it was called).
// A segment is deleted only when it is not the active one, no dirty block version still holds data
// in it, and every older segment is gone: the log on disk is always a suffix of history, which is
// what makes replay in log order correct.
//
// Segment file: 24-byte header (magic "DITTOWAL", u32 format version, u32 reserved, u64 segment id),
// then records. Record: 40-byte header then `length` data bytes:
//   0 u32 magic  4 u32 crc32c(header bytes 8..40)  8 u8 type  9..12 reserved  12 u32 share
//   16 u64 inode  24 u64 offset (write) or new size (truncate)  32 u32 length  36 u32 crc32c(data)
import { crc32c } from '@node-rs/crc32';
import fsc from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from 'pino';

export const RECORD_WRITE = 1;
export const RECORD_TRUNCATE = 2;
/**
 * Every earlier record of this share is in the block store: written when a share stops being
 * served after its data was uploaded, so that replay skips them (the share may be gone for good).
 */
export const RECORD_SHARE_STORED = 3;
export type RecordType = typeof RECORD_WRITE | typeof RECORD_TRUNCATE | typeof RECORD_SHARE_STORED;

const SEG_MAGIC = Buffer.from('DITTOWAL', 'latin1');
const SEG_VERSION = 1;
export const SEG_HEADER = 24;
const REC_MAGIC = 0x44574c52; // "DWLR"
export const REC_HEADER = 40;
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
const ftruncate = promisify(fsc.ftruncate);

export interface WalAppend {
  seg: WalSegment;
  /** Position of the record's data inside the segment. */
  pos: number;
  /** Resolves once the record is written to the segment file (not yet fsynced). */
  done: Promise<void>;
}

/** A record found by replay, its data left in the segment. */
export interface ReplayRecord {
  type: RecordType;
  share: number;
  inode: number;
  /** Write: the file offset; truncate: the new size. */
  offset: number;
  length: number;
  seg: WalSegment;
  pos: number;
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

export interface Wal {
  /** False for the memory WAL: its data lives only in the extents' buffers. */
  readonly persistent: boolean;
  appendWrite(share: number, inode: number, offset: number, data: Buffer): WalAppend;
  appendTruncate(share: number, inode: number, size: number): WalAppend;
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
  /** Resolves when there is room again, or after `ms`. */
  waitRoom(ms: number): Promise<void>;
  /** Holders of the oldest data: storing them is what frees room. */
  oldestHolders(): WalHolder[];
  /** Bytes the log holds (for metrics and tests). */
  readonly usedBytes: number;
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
  /** Segment size (default: 64 MiB, or an eighth of maxBytes if smaller, at least 1 MiB). */
  segmentBytes?: number;
  log?: Logger;
}

const segName = (id: number): string => `wal-${String(id).padStart(16, '0')}.log`;
const SEG_RE = /^wal-(\d{16})\.log$/;

function segHeader(id: number): Buffer {
  const b = Buffer.alloc(SEG_HEADER);
  SEG_MAGIC.copy(b, 0);
  b.writeUInt32LE(SEG_VERSION, 8);
  b.writeBigUInt64LE(BigInt(id), 16);
  return b;
}

function recordHeader(type: RecordType, share: number, inode: number, offset: number, data: Buffer | null): Buffer {
  const h = Buffer.alloc(REC_HEADER);
  h.writeUInt32LE(REC_MAGIC, 0);
  h.writeUInt8(type, 8);
  h.writeUInt32LE(share >>> 0, 12);
  h.writeBigUInt64LE(BigInt(inode), 16);
  h.writeBigUInt64LE(BigInt(offset), 24);
  h.writeUInt32LE(data ? data.length : 0, 32);
  h.writeUInt32LE(data && data.length > 0 ? crc32c(data) : 0, 36);
  h.writeUInt32LE(crc32c(h.subarray(8)), 4);
  return h;
}

interface ParsedHeader {
  type: RecordType;
  share: number;
  inode: number;
  offset: number;
  length: number;
  dataCrc: number;
}

/** A record header at `at`, or null unless its magic and CRC check out. */
function parseHeader(buf: Buffer, at: number): ParsedHeader | null {
  if (at + REC_HEADER > buf.length || buf.readUInt32LE(at) !== REC_MAGIC) return null;
  if (crc32c(buf.subarray(at + 8, at + REC_HEADER)) !== buf.readUInt32LE(at + 4)) return null;
  const type = buf.readUInt8(at + 8);
  const inode = buf.readBigUInt64LE(at + 16);
  const offset = buf.readBigUInt64LE(at + 24);
  const length = buf.readUInt32LE(at + 32);
  if (type !== RECORD_WRITE && type !== RECORD_TRUNCATE && type !== RECORD_SHARE_STORED) return null;
  if (inode > BigInt(Number.MAX_SAFE_INTEGER) || offset > BigInt(Number.MAX_SAFE_INTEGER) || length > MAX_RECORD_DATA) return null;
  return {
    type,
    share: buf.readUInt32LE(at + 12),
    inode: Number(inode),
    offset: Number(offset),
    length,
    dataCrc: buf.readUInt32LE(at + 36),
  };
}

/** The next offset after `from` where a valid record header starts, or -1. */
function resync(buf: Buffer, from: number): number {
  const magic = Buffer.alloc(4);
  magic.writeUInt32LE(REC_MAGIC, 0);
  let at = from;
  for (;;) {
    at = buf.indexOf(magic, at);
    if (at < 0) return -1;
    if (parseHeader(buf, at)) return at;
    at += 1;
  }
}

export class FileWal implements Wal {
  readonly persistent = true;
  private readonly segments: WalSegment[] = [];
  private active!: WalSegment;
  private nextId = 1;
  private readonly segmentBytes: number;
  private readonly queue: PendingWrite[] = [];
  private writing = false;
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
  private retiring = false;
  private retireAgain = false;
  /**
   * False until the caller has replayed the records `open` returned and said so (`tidy`): until
   * then no segment may go, since nothing holds the data of records not yet replayed.
   */
  private replayed = false;
  private closed = false;
  private writeError: Error | null = null;

  private constructor(
    readonly dir: string,
    private readonly opts: FileWalOptions,
  ) {
    this.segmentBytes = opts.segmentBytes ?? Math.max(1 << 20, Math.min(64 << 20, Math.floor(opts.maxBytes / 8)));
  }

  /**
   * Opens the log in `dir`, scanning every segment: torn tails are cut, records with a bad CRC are
   * reported and skipped. Returns the valid records in log order; the caller replays them and
   * holds their segments until their data is stored.
   */
  static async open(dir: string, opts: FileWalOptions): Promise<{ wal: FileWal; records: ReplayRecord[]; report: ReplayReport }> {
    const wal = new FileWal(dir, opts);
    await fs.mkdir(dir, { recursive: true });
    const ids = (await fs.readdir(dir))
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
      if (buf.readUInt32LE(8) !== SEG_VERSION) {
        throw new Error(`WAL segment ${file} has format version ${buf.readUInt32LE(8)}; this DittoFS reads version ${SEG_VERSION}`);
      }
      const fd = fsc.openSync(file, fsc.constants.O_RDWR);
      const seg = new WalSegment(id, file, fd);
      let at = SEG_HEADER;
      let validEnd = SEG_HEADER;
      while (at < buf.length) {
        const h = parseHeader(buf, at);
        if (!h || at + REC_HEADER + h.length > buf.length) {
          const next = resync(buf, at + 1);
          if (next < 0) break; // the rest is a torn tail
          report.corruptRanges.push({ segment: id, from: at, to: next });
          opts.log?.error({ segment: file, from: at, to: next }, 'WAL bytes with no valid record: skipped, never served');
          at = next;
          continue;
        }
        const dataAt = at + REC_HEADER;
        at = dataAt + h.length;
        validEnd = at;
        if (h.length > 0 && crc32c(buf.subarray(dataAt, dataAt + h.length)) !== h.dataCrc) {
          const bad = { segment: id, pos: dataAt, share: h.share, inode: h.inode, offset: h.offset, length: h.length };
          report.corruptRecords.push(bad);
          opts.log?.error({ ...bad, file }, 'WAL record failed its CRC: its bytes are not served; the file keeps its older content there');
          continue;
        }
        records.push({ type: h.type, share: h.share, inode: h.inode, offset: h.offset, length: h.length, seg, pos: dataAt });
        report.records++;
        report.dataBytes += h.length;
      }
      if (validEnd < buf.length) {
        report.tornBytes += buf.length - validEnd;
        opts.log?.warn({ segment: file, bytes: buf.length - validEnd }, 'WAL segment ends in an interrupted write: cut');
        await ftruncate(fd, validEnd);
        await fdatasync(fd);
      }
      seg.size = validEnd;
      wal.segments.push(seg);
      report.segments++;
    }
    wal.roll();
    await wal.syncDir();
    return { wal, records, report };
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

  get full(): boolean {
    return this.usedBytes >= this.opts.maxBytes;
  }

  waitRoom(ms: number): Promise<void> {
    return this.full ? this.room.wait(ms) : Promise.resolve();
  }

  oldestHolders(): WalHolder[] {
    for (const s of this.segments) if (s.holders.size > 0) return [...s.holders];
    return [];
  }

  /**
   * Starts a new active segment. Synchronous (one small file creation per segment) so that every
   * append knows its position at once, which keeps the dirty-extent index in log order.
   */
  private roll(): void {
    const id = this.nextId++;
    const file = path.join(this.dir, segName(id));
    const fd = fsc.openSync(file, fsc.constants.O_RDWR | fsc.constants.O_CREAT | fsc.constants.O_TRUNC, 0o600);
    try {
      fsc.writeSync(fd, segHeader(id), 0, SEG_HEADER, 0);
    } catch (err) {
      fsc.closeSync(fd);
      throw err;
    }
    const seg = new WalSegment(id, file, fd);
    seg.unsynced = true;
    this.active = seg;
    this.segments.push(seg);
    this.dirDirty = true;
  }

  private async syncDir(): Promise<void> {
    this.dirDirty = false;
    const d = await fs.open(this.dir, fsc.constants.O_RDONLY);
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  }

  /** Reserves room in the active segment, sealing it and opening the next one when it is full. */
  private reserve(bytes: number): { seg: WalSegment; at: number } {
    let a = this.active;
    if (a.broken || (a.size + bytes > this.segmentBytes && a.size > SEG_HEADER)) {
      this.roll();
      a = this.active;
    }
    const at = a.size;
    a.size += bytes;
    return { seg: a, at };
  }

  private append(type: RecordType, share: number, inode: number, offset: number, data: Buffer | null): WalAppend {
    if (this.closed) throw new Error('WAL is closed');
    if (data && data.length > MAX_RECORD_DATA) throw new Error(`WAL record of ${data.length} bytes exceeds ${MAX_RECORD_DATA}`);
    const header = recordHeader(type, share, inode, offset, data);
    const bytes = REC_HEADER + (data?.length ?? 0);
    const bufs = data && data.length > 0 ? [header, data] : [header];
    const { seg, at } = this.reserve(bytes);
    this.issued++;
    const done = this.enqueue(seg, at, bufs, bytes);
    return { seg, pos: at + REC_HEADER, done };
  }

  appendWrite(share: number, inode: number, offset: number, data: Buffer): WalAppend {
    return this.append(RECORD_WRITE, share, inode, offset, data);
  }

  appendTruncate(share: number, inode: number, size: number): WalAppend {
    return this.append(RECORD_TRUNCATE, share, inode, size, null);
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
        try {
          if (seg.broken || seg.fd === null) throw this.writeError ?? new Error('WAL segment is unavailable');
          const bufs = batch.flatMap((p) => p.bufs);
          let written = 0;
          while (written < end - first.pos) {
            const { bytesWritten: n } = await writev(
              seg.fd,
              written === 0 ? bufs : [Buffer.concat(bufs).subarray(written)],
              first.pos + written,
            );
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
          for (const p of batch) p.reject(err as Error);
          this.progress.wake();
        }
      }
    } finally {
      this.writing = false;
      const head = this.segments[0];
      if (head && head !== this.active && head.holders.size === 0) void this.retire();
    }
  }

  private async allWritten(target: number): Promise<void> {
    while (this.written < target) await this.progress.wait(1000);
  }

  async sync(): Promise<void> {
    const target = this.issued;
    for (;;) {
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
    for (const s of segs) s.unsynced = false;
    this.syncs++;
    try {
      await Promise.all(segs.map((s) => fdatasync(s.fd!)));
      if (this.dirDirty) await this.syncDir();
    } catch (err) {
      for (const s of segs) s.unsynced = true;
      throw err;
    }
    if (this.segments.some((s) => s.broken && s.holders.size > 0)) {
      throw new Error(`the WAL could not write data: ${this.writeError?.message ?? 'unknown error'}`);
    }
    this.syncedUpTo = Math.max(this.syncedUpTo, target);
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

  /** Deletes segments from the oldest while they hold nothing, are not the active one and are fully written. */
  private async retire(): Promise<void> {
    if (!this.replayed) return;
    if (this.retiring) {
      this.retireAgain = true;
      return;
    }
    this.retiring = true;
    try {
      for (let pass = 0; pass < 2; pass++) {
        for (;;) {
          const s = this.segments[0];
          if (!s || s === this.active || s.holders.size > 0 || s.readers > 0 || this.queue.some((p) => p.seg === s)) break;
          this.segments.shift();
          const fd = s.fd;
          s.fd = null;
          if (fd !== null) await fclose(fd);
          if (s.file) await fs.rm(s.file, { force: true });
          this.dirDirty = true;
          this.room.wake();
        }
        // The log is full and the active segment holds nothing live: start a new one so it can go.
        const a = this.active;
        const idle = a.holders.size === 0 && a.size > SEG_HEADER && !this.queue.some((p) => p.seg === a);
        if (!this.full || !idle || this.closed || this.segments[0] !== a) break;
        this.roll();
      }
    } catch (err) {
      this.opts.log?.error({ err }, 'could not retire a WAL segment');
    } finally {
      this.retiring = false;
      if (this.retireAgain) {
        this.retireAgain = false;
        void this.retire();
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.sync().catch((err: unknown) => this.opts.log?.error({ err }, 'WAL sync at close failed'));
    this.closed = true;
    await this.retire();
    for (const s of this.segments) {
      const fd = s.fd;
      s.fd = null;
      if (fd !== null) await fclose(fd);
    }
  }
}
