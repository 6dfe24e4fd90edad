// The read cache on local disk: clean block objects of remote block stores (s3), kept on the
// server's volume so that reading recently written or recently read data does not go back to S3.
// Block keys are immutable, so an entry never goes stale; entries only age out, least recently
// used first, once the cache holds more than its size limit.
//
// One file per object: a header (magic, u32 data length, u32 CRC32C of the data, zeros) and the
// data. The header is 16 bytes (magic "DFRC"), or 4,096 (magic "DFRD") for an entry written with
// O_DIRECT (a whole block from the block buffer pool: header and data then stay aligned; see
// direct-io.ts for why). Files are written under a temporary name and renamed, without fsync:
// a cache may lose entries in a crash, but a torn or corrupt file fails its length or CRC check and
// is dropped, never served. The index is rebuilt from the directory at start (oldest first).
import { crc32c } from '@node-rs/crc32';
import { mkdir, open, readdir, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { randomHex } from '../random-hex.js';
import { BufferPool } from '../wire/buffer-pool.js';
import { directBuffers, O_DIRECT, writeDirect } from './direct-io.js';
import { ReadHandles } from './read-handles.js';

const MAGIC = 0x43524644; // "DFRC" little-endian
const HEADER = 16;
const MAGIC_DIRECT = 0x44524644; // "DFRD" little-endian
const DIRECT_HEADER = 4096;

/** The header's length of an entry starting with `magic`, or 0 when it is no entry's. */
const headerOf = (magic: number): number => (magic === MAGIC ? HEADER : magic === MAGIC_DIRECT ? DIRECT_HEADER : 0);
const TMP_DIR = '.tmp';
/** Open read handles kept (readInto), least recently used closed first. */
const HANDLES_KEPT = 64;
/** warm: entries waiting at most, entries remembered as done, and bytes read per call. */
const WARM_QUEUED = 8;
const WARMED_KEPT = 32;
const WARM_CHUNK = 4 * 1024 * 1024;

export class DiskBlockCache {
  /** File name -> size on disk, least recently used first. */
  private readonly entries = new Map<string, number>();
  /**
   * Entries whose CRC has been checked (or that this process wrote), with their header's length:
   * ranges of these are read in place; any other is read whole and checked first.
   */
  private readonly verified = new Map<string, number>();
  /**
   * Entries being written: a second put of the same object meanwhile (an upload's copy and a read's
   * fetch) is skipped, as the two may differ in header (one with O_DIRECT, one without).
   */
  private readonly putting = new Set<string>();
  /** Open handles of entries read in ranges (readInto), kept for their next read. */
  private readonly handles = new ReadHandles(HANDLES_KEPT);
  /** Entries waiting to be read ahead (warm), the first being read. */
  private readonly warmQueue: { name: string; size: number }[] = [];
  /** The last entries read ahead, oldest first. */
  private readonly warmed = new Set<string>();
  /** warm's buffer, whose contents nobody reads. */
  private scratch: Buffer | null = null;
  /** After close(): nothing more is read ahead, and no handle is kept. */
  private closed = false;
  /** The read-ahead loop while entries are queued (warmNext), else null. */
  private warming: Promise<void> | null = null;
  /** Page-aligned headers of entries written with O_DIRECT. */
  private readonly headers = new BufferPool(64 * 1024, 4, true);
  /** False once the volume refused O_DIRECT (tmpfs). */
  private direct = O_DIRECT !== 0;
  /** Entries written with O_DIRECT / through the page cache (tests). */
  directPuts = 0;
  bufferedPuts = 0;
  /** Entries read ahead by warm (tests). */
  warms = 0;
  private bytes = 0;
  hits = 0;
  misses = 0;

  private constructor(
    readonly dir: string,
    private readonly maxBytes: number,
    private readonly log?: Logger,
  ) {}

  /** Opens (creating) the cache in `dir`, indexing the entries a previous run left. */
  static async open(dir: string, maxBytes: number, log?: Logger): Promise<DiskBlockCache> {
    const c = new DiskBlockCache(dir, maxBytes, log);
    await rm(path.join(dir, TMP_DIR), { recursive: true, force: true });
    await mkdir(path.join(dir, TMP_DIR), { recursive: true });
    const found: { name: string; size: number; mtime: number }[] = [];
    for (const name of await readdir(dir)) {
      if (name === TMP_DIR) continue;
      try {
        const st = await stat(path.join(dir, name));
        if (st.isFile()) found.push({ name, size: st.size, mtime: st.mtimeMs });
      } catch {
        // Gone meanwhile.
      }
    }
    found.sort((a, b) => a.mtime - b.mtime);
    for (const f of found) {
      c.entries.set(f.name, f.size);
      c.bytes += f.size;
    }
    await c.evict();
    return c;
  }

  /** Bytes on disk. */
  get size(): number {
    return this.bytes;
  }

  private fileOf(name: string): string {
    return path.join(this.dir, name);
  }

  /** The object stored as `key` in the store named `namespace`, or null when not cached (or unreadable). */
  async get(namespace: string, key: string): Promise<Buffer | null> {
    const name = entryName(namespace, key);
    const size = this.entries.get(name);
    if (size === undefined) {
      this.misses++;
      return null;
    }
    this.entries.delete(name);
    this.entries.set(name, size);
    let data: Buffer | null = null;
    let corrupt = false;
    try {
      const fh = await open(this.fileOf(name), 'r');
      try {
        const buf = Buffer.allocUnsafe(size);
        const { bytesRead } = await fh.read(buf, 0, size, 0);
        const hdr = size >= HEADER ? headerOf(buf.readUInt32LE(0)) : 0;
        if (bytesRead === size && hdr > 0 && size >= hdr) {
          const len = buf.readUInt32LE(4);
          const body = buf.subarray(hdr);
          if (len === body.length && crc32c(body) === buf.readUInt32LE(8)) data = body;
          // Only for the file the index describes (an entry dropped and written again meanwhile
          // may have the other header).
          if (data !== null && this.entries.get(name) === size) this.verified.set(name, hdr);
        }
        corrupt = data === null;
      } finally {
        await fh.close();
      }
    } catch {
      // Evicted meanwhile, or unreadable: a miss.
    }
    if (data === null) {
      this.misses++;
      if (corrupt) this.log?.warn({ key, namespace }, 'read cache entry is torn or corrupt: dropped');
      this.drop(name);
      return null;
    }
    this.hits++;
    return data;
  }

  /**
   * Reads up to `length` bytes at `offset` of a cached object into `target` at `targetStart`
   * (no new buffer, for an entry already checked); the count read, or null when not cached.
   */
  async readInto(
    namespace: string,
    key: string,
    offset: number,
    target: Buffer,
    targetStart: number,
    length: number,
  ): Promise<number | null> {
    const name = entryName(namespace, key);
    const size = this.entries.get(name);
    if (size === undefined) {
      this.misses++;
      return null;
    }
    const hdr = this.verified.get(name);
    if (hdr === undefined) {
      const data = await this.get(namespace, key);
      if (data === null) return null;
      const n = Math.max(0, Math.min(length, data.length - offset));
      data.copy(target, targetStart, offset, offset + n);
      return n;
    }
    this.entries.delete(name);
    this.entries.set(name, size);
    const want = Math.max(0, Math.min(length, size - hdr - offset));
    try {
      // A kept handle: one read on the thread pool, and the kernel's read-ahead carries on from the
      // last read of the entry (a fresh open starts it again: a sequential read of an entry in
      // 1 MiB READs then waited on the device for each).
      const read = await this.handles.use(
        this.fileOf(name),
        async (fh) => {
          let got = 0;
          while (got < want) {
            const { bytesRead } = await fh.read(target, targetStart + got, want - got, hdr + offset + got);
            if (bytesRead === 0) break;
            got += bytesRead;
          }
          return got;
        },
        sizeIs(size),
      );
      if (read === null || read < want) throw new Error('gone, replaced or short');
    } catch {
      // Evicted meanwhile, or cut short: a miss. The entry is dropped only if it is still the one
      // this read looked up (one put again meanwhile, with the other header, is fine).
      this.misses++;
      if (this.entries.get(name) === size && this.verified.get(name) === hdr) this.drop(name);
      return null;
    }
    this.hits++;
    return want;
  }

  /**
   * Reads an entry's data ahead of a sequential read of it, into one scratch buffer, and drops it:
   * the reads in ranges that follow then find it in the kernel's page cache instead of waiting on
   * the device (the kernel's own read-ahead stops at the end of the previous entry's file). One
   * entry at a time, at most WARM_QUEUED waiting, each once while it is among the last WARMED_KEPT
   * warmed; an entry not written or checked by this process is left alone (its first read checks it).
   */
  warm(namespace: string, key: string): void {
    if (this.closed) return;
    const name = entryName(namespace, key);
    const size = this.entries.get(name);
    const hdr = this.verified.get(name);
    if (size === undefined || hdr === undefined || this.warmed.has(name) || this.warmQueue.length >= WARM_QUEUED) return;
    this.warmed.add(name);
    if (this.warmed.size > WARMED_KEPT) this.warmed.delete(this.warmed.values().next().value!);
    this.warmQueue.push({ name, size });
    this.warming ??= this.warmNext();
  }

  private async warmNext(): Promise<void> {
    while (this.warmQueue.length > 0) {
      const { name, size } = this.warmQueue[0]!;
      try {
        if (this.entries.get(name) === size) {
          await this.handles.use(
            this.fileOf(name),
            async (fh) => {
              this.scratch ??= Buffer.allocUnsafe(WARM_CHUNK);
              for (let pos = 0; pos < size; pos += WARM_CHUNK) {
                const { bytesRead } = await fh.read(this.scratch, 0, Math.min(WARM_CHUNK, size - pos), pos);
                if (bytesRead === 0) break;
              }
              this.warms++;
            },
            sizeIs(size),
          );
        }
      } catch {
        // Only a hint: the reads themselves find out what is wrong.
      }
      this.warmQueue.shift();
    }
    this.warming = null;
  }

  /** Resolves once nothing is queued for read-ahead (tests). */
  async readAheadDone(): Promise<void> {
    await this.warming;
  }

  /** Files opened for reads in ranges and read-ahead so far (tests: a kept handle is not opened again). */
  get handleOpens(): number {
    return this.handles.opens;
  }

  /** Closes the kept read handles (those in use once their reads are done). */
  close(): void {
    this.closed = true;
    this.handles.close();
    // What is queued is skipped; the entry being read ahead finishes (its read is on the thread pool).
    this.warmQueue.splice(1);
  }

  has(namespace: string, key: string): boolean {
    return this.entries.has(entryName(namespace, key));
  }

  /**
   * Keeps a copy of an object. Resolves once `data` has been written (the caller may then reuse
   * its buffer); failures are logged and leave the cache without the entry. With `evict` false
   * (an object fetched for a read) the copy is kept only if it fits without evicting anything: a
   * long sequential read through a full cache would otherwise evict each block just before it is
   * read, and the cache would serve nothing. `crc` is the CRC32C of `data` where the caller has it
   * (an upload computed it for the block store): the entry's header carries it as it is.
   */
  async put(namespace: string, key: string, data: Buffer, evict = true, crc?: number): Promise<void> {
    const size = (this.mayWriteDirect(data) ? DIRECT_HEADER : HEADER) + data.length;
    if (size > this.maxBytes || (!evict && this.bytes + size > this.maxBytes)) return;
    const name = entryName(namespace, key);
    if (this.entries.has(name) || this.putting.has(name)) return;
    this.putting.add(name);
    try {
      await this.write(name, data, crc);
    } finally {
      this.putting.delete(name);
    }
    await this.evict();
  }

  /**
   * Whether `data` is tried with O_DIRECT: a whole block in a block buffer of the pool (shared
   * memory, page-aligned). An object fetched from the store lives in an ordinary buffer, which
   * O_DIRECT would refuse only after the header went to the device.
   */
  private mayWriteDirect(data: Buffer): boolean {
    return this.direct && directBuffers([data]);
  }

  /** Writes the entry `name` and indexes it; failures are logged and leave no entry. */
  private async write(name: string, data: Buffer, crc = crc32c(data)): Promise<void> {
    const tmp = path.join(this.dir, TMP_DIR, randomHex(8));
    let hdr = 0;
    try {
      if (this.mayWriteDirect(data)) {
        const header = this.headers.take(DIRECT_HEADER).fill(0);
        writeHeader(header, MAGIC_DIRECT, data.length, crc);
        try {
          const how = await writeDirect(tmp, [header, data], false);
          if (how === 'refused') this.direct = false;
          if (how === 'written') hdr = DIRECT_HEADER;
        } finally {
          this.headers.give(header);
        }
      }
      if (hdr === 0) {
        const header = writeHeader(Buffer.alloc(HEADER), MAGIC, data.length, crc);
        const fh = await open(tmp, 'w', 0o600);
        try {
          await fh.writev([header, data]);
        } finally {
          await fh.close();
        }
        hdr = HEADER;
        this.bufferedPuts++;
      } else {
        this.directPuts++;
      }
      await rename(tmp, this.fileOf(name));
    } catch (err) {
      this.log?.warn({ err, entry: name }, 'could not write a read cache entry');
      await rm(tmp, { force: true });
      return;
    }
    const size = hdr + data.length;
    const prev = this.entries.get(name);
    if (prev !== undefined) this.bytes -= prev;
    this.entries.set(name, size);
    this.verified.set(name, hdr);
    this.bytes += size;
  }

  /** Forgets an object (deleted from its store). */
  delete(namespace: string, key: string): void {
    this.drop(entryName(namespace, key));
  }

  private drop(name: string): void {
    if (this.unindex(name)) unlink(this.fileOf(name)).catch(() => undefined);
  }

  /**
   * Forgets an entry (its file is the caller's to delete): the index, its kept handle and its
   * read-ahead mark, so that a later entry of the name starts afresh. False when there was none.
   */
  private unindex(name: string): boolean {
    const size = this.entries.get(name);
    if (size === undefined) return false;
    this.entries.delete(name);
    this.verified.delete(name);
    this.bytes -= size;
    this.handles.forget(this.fileOf(name));
    this.warmed.delete(name);
    return true;
  }

  private async evict(): Promise<void> {
    while (this.bytes > this.maxBytes) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      const name = oldest.value;
      this.unindex(name);
      await unlink(this.fileOf(name)).catch(() => undefined);
    }
  }
}

/**
 * ReadHandles' check of a newly opened entry file: the file opened may be a later entry for the key
 * (this one dropped, the object put again meanwhile) with the other header, the same bytes at
 * another offset. Its size tells.
 */
const sizeIs =
  (size: number) =>
  async (fh: FileHandle): Promise<boolean> =>
    (await fh.stat()).size === size;

function writeHeader(h: Buffer, magic: number, length: number, crc: number): Buffer {
  h.writeUInt32LE(magic, 0);
  h.writeUInt32LE(length, 4);
  h.writeUInt32LE(crc, 8);
  return h;
}

/** A file name for `key` of store `namespace`: reversible, no separators. */
function entryName(namespace: string, key: string): string {
  return `${encodeURIComponent(namespace)}~${encodeURIComponent(key)}`;
}
