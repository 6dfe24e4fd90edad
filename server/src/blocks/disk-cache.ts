// The read cache on local disk: clean block objects of remote block stores (s3), kept on the
// server's volume so that reading recently written or recently read data does not go back to S3.
// Block keys are immutable, so an entry never goes stale; entries only age out, least recently
// used first, once the cache holds more than its size limit.
//
// One file per object: a 16-byte header (magic "DFRC", u32 data length, u32 CRC32C of the data,
// u32 reserved) and the data. Files are written under a temporary name and renamed, without fsync:
// a cache may lose entries in a crash, but a torn or corrupt file fails its length or CRC check and
// is dropped, never served. The index is rebuilt from the directory at start (oldest first).
import { crc32c } from '@node-rs/crc32';
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';

const MAGIC = 0x43524644; // "DFRC" little-endian
const HEADER = 16;
const TMP_DIR = '.tmp';

export class DiskBlockCache {
  /** File name -> size on disk, least recently used first. */
  private readonly entries = new Map<string, number>();
  /**
   * Entries whose CRC has been checked (or that this process wrote): ranges of these are read in
   * place; any other is read whole and checked first.
   */
  private readonly verified = new Set<string>();
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
        if (bytesRead === size && size >= HEADER && buf.readUInt32LE(0) === MAGIC) {
          const len = buf.readUInt32LE(4);
          const body = buf.subarray(HEADER);
          if (len === body.length && crc32c(body) === buf.readUInt32LE(8)) data = body;
          if (data !== null) this.verified.add(name);
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
    if (!this.verified.has(name)) {
      const data = await this.get(namespace, key);
      if (data === null) return null;
      const n = Math.max(0, Math.min(length, data.length - offset));
      data.copy(target, targetStart, offset, offset + n);
      return n;
    }
    this.entries.delete(name);
    this.entries.set(name, size);
    const want = Math.max(0, Math.min(length, size - HEADER - offset));
    try {
      const fh = await open(this.fileOf(name), 'r');
      try {
        let got = 0;
        while (got < want) {
          const { bytesRead } = await fh.read(target, targetStart + got, want - got, HEADER + offset + got);
          if (bytesRead === 0) break;
          got += bytesRead;
        }
        if (got < want) throw new Error('short');
      } finally {
        await fh.close();
      }
    } catch {
      // Evicted meanwhile, or cut short: a miss.
      this.misses++;
      this.drop(name);
      return null;
    }
    this.hits++;
    return want;
  }

  has(namespace: string, key: string): boolean {
    return this.entries.has(entryName(namespace, key));
  }

  /**
   * Keeps a copy of an object. Resolves once `data` has been written (the caller may then reuse
   * its buffer); failures are logged and leave the cache without the entry. With `evict` false
   * (an object fetched for a read) the copy is kept only if it fits without evicting anything: a
   * long sequential read through a full cache would otherwise evict each block just before it is
   * read, and the cache would serve nothing.
   */
  async put(namespace: string, key: string, data: Buffer, evict = true): Promise<void> {
    const size = HEADER + data.length;
    if (size > this.maxBytes || (!evict && this.bytes + size > this.maxBytes)) return;
    const name = entryName(namespace, key);
    if (this.entries.has(name)) return;
    const header = Buffer.alloc(HEADER);
    header.writeUInt32LE(MAGIC, 0);
    header.writeUInt32LE(data.length, 4);
    header.writeUInt32LE(crc32c(data), 8);
    const tmp = path.join(this.dir, TMP_DIR, randomBytes(8).toString('hex'));
    try {
      const fh = await open(tmp, 'w', 0o600);
      try {
        await fh.writev([header, data]);
      } finally {
        await fh.close();
      }
      await rename(tmp, this.fileOf(name));
    } catch (err) {
      this.log?.warn({ err, key, namespace }, 'could not write a read cache entry');
      await rm(tmp, { force: true });
      return;
    }
    const prev = this.entries.get(name);
    if (prev !== undefined) this.bytes -= prev;
    this.entries.set(name, size);
    this.verified.add(name);
    this.bytes += size;
    await this.evict();
  }

  /** Forgets an object (deleted from its store). */
  delete(namespace: string, key: string): void {
    this.drop(entryName(namespace, key));
  }

  private drop(name: string): void {
    const size = this.entries.get(name);
    if (size === undefined) return;
    this.entries.delete(name);
    this.verified.delete(name);
    this.bytes -= size;
    unlink(this.fileOf(name)).catch(() => undefined);
  }

  private async evict(): Promise<void> {
    while (this.bytes > this.maxBytes) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      const name = oldest.value;
      const size = this.entries.get(name)!;
      this.entries.delete(name);
      this.verified.delete(name);
      this.bytes -= size;
      await unlink(this.fileOf(name)).catch(() => undefined);
    }
  }
}

/** A file name for `key` of store `namespace`: reversible, no separators. */
function entryName(namespace: string, key: string): string {
  return `${encodeURIComponent(namespace)}~${encodeURIComponent(key)}`;
}
