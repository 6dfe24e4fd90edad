// The block service: the data path between the file service and a block store. Writes land in
// in-memory dirty blocks (acknowledged as UNSTABLE; the NFS write verifier changes on every start,
// so clients resend anything uncommitted after a crash). A block is uploaded as a new immutable
// object as soon as it is completely written, when its file is committed, when it has been idle, or
// when the dirty budget is exhausted; the `blocks` row is switched afterwards and the previous
// object deleted. Reads merge, newest last: stored object (or zeros), in-flight versions oldest
// first, then the dirty version.
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { BlockRef, MetadataStore } from '../meta/store.js';
import { VfsError } from '../vfs/errors.js';
import { BlockCache } from './cache.js';
import type { BlockStore, BlockStoreCapacity } from './store.js';

/** A half-open byte range [start, end) inside a block. */
type Range = [number, number];

/** One version of a block's written bytes. Immutable once it is handed to an upload. */
interface BlockVersion {
  buf: Buffer;
  /** Written ranges, sorted and merged. */
  ranges: Range[];
  /** When it first became dirty (ms). */
  since: number;
  /** Once handed to an upload: its outcome (the error, or null once stored). */
  result?: Promise<Error | null>;
}

/** Everything in memory about one block of one file. */
interface BlockState {
  dirty: BlockVersion | null;
  /** Versions handed to uploads, oldest first; the head is the one uploading. */
  inflight: BlockVersion[];
  /** Tail of the upload chain: uploads of one block run one after another. */
  chain: Promise<void>;
}

/** Dirty bytes shared by every block service of a server; writers wait while it is exhausted. */
export class DirtyBudget {
  used = 0;
  private waiters: (() => void)[] = [];
  constructor(readonly max: number) {}
  get exhausted(): boolean {
    return this.used > this.max;
  }
  add(n: number): void {
    this.used += n;
  }
  release(n: number): void {
    this.used -= n;
    if (!this.exhausted) {
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    }
  }
  /** Resolves once under budget, or after `ms`. */
  wait(ms: number): Promise<void> {
    if (!this.exhausted) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.waiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}

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

/** Copies the bytes `v` wrote in [from, to) of the block into `target` at `targetStart`. */
function overlay(target: Buffer, targetStart: number, v: BlockVersion, from: number, to: number): void {
  for (const [s, e] of v.ranges) {
    const a = Math.max(s, from);
    const b = Math.min(e, to);
    if (a < b) v.buf.copy(target, targetStart + (a - from), a, b);
  }
}

/** Puts `older` underneath `newer`: `newer` keeps its bytes and gains the older ones it lacks. */
function mergeUnder(newer: BlockVersion, older: BlockVersion, blockSize: number): void {
  overlay(older.buf, 0, newer, 0, blockSize);
  newer.buf = older.buf;
  for (const r of older.ranges) newer.ranges = addRange(newer.ranges, r[0], r[1]);
  newer.since = Math.min(newer.since, older.since);
}

/** Drops everything at or past `limit` bytes from a version. */
function clip(v: BlockVersion, limit: number): void {
  v.ranges = v.ranges.filter((r) => r[0] < limit).map((r): Range => [r[0], Math.min(r[1], limit)]);
}

const covers = (ranges: Range[], start: number, end: number): boolean => ranges.some((r) => r[0] <= start && r[1] >= end);

const rangesEnd = (ranges: Range[]): number => (ranges.length === 0 ? 0 : ranges[ranges.length - 1]![1]);

export interface BlockServiceOptions {
  /** Distinguishes this share's objects inside a block store other shares may use too. */
  keyPrefix: string;
  blockSize: number;
  budget: DirtyBudget;
  cache: BlockCache;
  /** Upload blocks that have been dirty this long (ms). */
  idleFlushMs?: number;
  /** How long a writer waits for budget before the write is refused with JUKEBOX (ms). */
  maxWriteWaitMs?: number;
  log?: Logger;
}

const MISSING = 'DITTOFS_BLOCK_MISSING';

export class BlockService {
  readonly blockSize: number;
  /** inode -> block index -> state. */
  private readonly files = new Map<number, Map<number, BlockState>>();
  /** Inodes being freed or already freed: their data must never be stored again. */
  private readonly freed = new Set<number>();
  /** inode -> byte size below which data may live (set by truncate while uploads finish). */
  private readonly limits = new Map<number, number>();
  private readonly timer: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly store: BlockStore,
    private readonly meta: MetadataStore,
    private readonly opts: BlockServiceOptions,
  ) {
    this.blockSize = opts.blockSize;
    const idle = opts.idleFlushMs ?? 5000;
    this.timer = setInterval(() => this.flushIdle(idle), Math.max(250, Math.floor(idle / 2)));
    this.timer.unref();
  }

  private state(inodeId: number, index: number): BlockState {
    let m = this.files.get(inodeId);
    if (!m) this.files.set(inodeId, (m = new Map<number, BlockState>()));
    let s = m.get(index);
    if (!s) m.set(index, (s = { dirty: null, inflight: [], chain: Promise.resolve() }));
    return s;
  }

  private dropStateIfIdle(inodeId: number, index: number, s: BlockState): void {
    if (s.dirty || s.inflight.length > 0) return;
    const m = this.files.get(inodeId);
    if (m?.get(index) !== s) return;
    m.delete(index);
    if (m.size === 0) this.files.delete(inodeId);
  }

  // ---- writes ----------------------------------------------------------------------------------

  async write(inodeId: number, offset: number, data: Buffer): Promise<void> {
    if (this.opts.budget.exhausted) await this.relievePressure();
    const bs = this.blockSize;
    let pos = 0;
    while (pos < data.length) {
      const abs = offset + pos;
      const index = Math.floor(abs / bs);
      const inBlock = abs - index * bs;
      const n = Math.min(bs - inBlock, data.length - pos);
      const s = this.state(inodeId, index);
      const v = this.dirtyVersion(s);
      data.copy(v.buf, inBlock, pos, pos + n);
      v.ranges = addRange(v.ranges, inBlock, inBlock + n);
      if (covers(v.ranges, 0, bs)) void this.startUpload(inodeId, index);
      pos += n;
    }
  }

  private dirtyVersion(s: BlockState): BlockVersion {
    if (!s.dirty) {
      s.dirty = { buf: Buffer.allocUnsafe(this.blockSize), ranges: [], since: Date.now() };
      this.opts.budget.add(this.blockSize);
    }
    return s.dirty;
  }

  /** Writers wait for uploads while the dirty budget is exhausted (backpressure), then JUKEBOX. */
  private async relievePressure(): Promise<void> {
    const deadline = Date.now() + (this.opts.maxWriteWaitMs ?? 60_000);
    while (this.opts.budget.exhausted) {
      if (Date.now() >= deadline) throw new VfsError('JUKEBOX', 'write cache full and the block store is not keeping up');
      const oldest = this.oldestDirty();
      if (oldest) void this.startUpload(oldest[0], oldest[1]);
      await this.opts.budget.wait(50);
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
    const cutoff = Date.now() - idleMs;
    for (const [ino, m] of this.files) {
      for (const [index, s] of m) if (s.dirty && s.dirty.since <= cutoff) void this.startUpload(ino, index);
    }
  }

  /**
   * Hands the dirty version of a block to the upload chain. Resolves with the upload's error, or
   * null once that version (and every earlier one) is stored. Never rejects.
   */
  private startUpload(inodeId: number, index: number): Promise<Error | null> {
    const s = this.files.get(inodeId)?.get(index);
    if (!s) return Promise.resolve(null);
    const v = s.dirty;
    if (!v) return this.waitInflight(s);
    s.dirty = null;
    s.inflight.push(v);
    const result = s.chain.then(() => this.upload(inodeId, index, s, v));
    v.result = result;
    s.chain = result.then(() => undefined);
    return result;
  }

  /** Resolves when the versions of a block in flight now are settled: their first error, or null. */
  private async waitInflight(s: BlockState): Promise<Error | null> {
    const results = await Promise.all(s.inflight.map((v) => v.result ?? Promise.resolve(null)));
    return results.find((e) => e !== null) ?? null;
  }

  private async upload(inodeId: number, index: number, s: BlockState, v: BlockVersion): Promise<Error | null> {
    let replaced: BlockRef | null = null;
    let error: Error | null = null;
    try {
      const limit = this.limits.get(inodeId);
      if (limit !== undefined) clip(v, Math.max(0, limit - index * this.blockSize));
      if (this.freed.has(inodeId) || v.ranges.length === 0 || !(await this.meta.getInode(inodeId))) return null;
      const [prev] = await this.meta.getBlocks(inodeId, index, index + 1);
      let length = rangesEnd(v.ranges);
      if (prev && prev.length > length) length = prev.length;
      let content: Buffer;
      if (covers(v.ranges, 0, length)) {
        content = v.buf.subarray(0, length);
      } else {
        content = Buffer.alloc(length);
        if (prev) {
          const base = await this.readObject(prev);
          base.copy(content, 0, 0, Math.min(base.length, length));
        }
        overlay(content, 0, v, 0, length);
      }
      const version = (prev?.version ?? 0) + 1;
      const key = `${this.opts.keyPrefix}/${inodeId}/${index}-${version}-${randomBytes(4).toString('hex')}`;
      await this.store.put(key, content);
      if (this.freed.has(inodeId)) {
        await this.store.delete(key);
        return null;
      }
      replaced = await this.meta.putBlock(inodeId, { index, key, length, version });
      if (replaced?.key === key) replaced = null;
      return null;
    } catch (err) {
      error = err as Error;
      this.opts.log?.error({ err, inode: inodeId, block: index }, 'block upload failed; data kept for retry');
      return error;
    } finally {
      const at = s.inflight.indexOf(v);
      if (at >= 0) s.inflight.splice(at, 1);
      const limit = this.limits.get(inodeId);
      if (error && limit !== undefined) clip(v, Math.max(0, limit - index * this.blockSize));
      if (error && !this.freed.has(inodeId) && v.ranges.length > 0) {
        // Keep the data: under the next queued version if there is one, else under (or as) the
        // dirty version, so that newer bytes always win and a later flush retries.
        const next = (at >= 0 ? s.inflight[at] : undefined) ?? s.dirty;
        if (next) {
          mergeUnder(next, v, this.blockSize);
          this.opts.budget.release(this.blockSize);
        } else {
          v.since = Date.now();
          s.dirty = v;
        }
      } else {
        this.opts.budget.release(this.blockSize);
      }
      this.dropStateIfIdle(inodeId, index, s);
      if (replaced) await this.deleteObjects([replaced]);
    }
  }

  /** Uploads every dirty block of a file and waits until all its blocks are stored. */
  async flush(inodeId: number): Promise<void> {
    const m = this.files.get(inodeId);
    if (!m) return;
    const results = await Promise.all([...m.keys()].map((index) => this.startUpload(inodeId, index)));
    const err = results.find((e) => e !== null);
    if (err) throw new VfsError('IO', `could not store file data: ${err.message}`);
  }

  async flushAll(): Promise<void> {
    await Promise.all([...this.files.keys()].map((i) => this.flush(i).catch(() => undefined)));
  }

  hasDirty(inodeId: number): boolean {
    return this.files.has(inodeId);
  }

  // ---- reads -----------------------------------------------------------------------------------

  private async readObject(ref: BlockRef): Promise<Buffer> {
    const hit = this.opts.cache.get(ref.key);
    if (hit) return hit;
    const data = await this.store.get(ref.key);
    if (data === null) throw Object.assign(new Error(`block object ${ref.key} is missing`), { code: MISSING });
    this.opts.cache.set(ref.key, data);
    return data;
  }

  /** Reads up to `count` bytes at `offset` of a file whose size is `fileSize`. */
  async read(inodeId: number, offset: number, count: number, fileSize: number): Promise<Buffer> {
    const end = Math.min(fileSize, offset + count);
    if (end <= offset) return Buffer.alloc(0);
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.readOnce(inodeId, offset, end);
      } catch (err) {
        // A block switched to a new version between looking up its ref and reading it: retry.
        if ((err as { code?: string }).code !== MISSING || attempt >= 3) throw err;
      }
    }
  }

  private async readOnce(inodeId: number, offset: number, end: number): Promise<Buffer> {
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
    const refs = await this.meta.getBlocks(inodeId, first, last + 2);
    const refAt = new Map<number, BlockRef>();
    for (const r of refs) refAt.set(r.index, r);
    const out = Buffer.allocUnsafe(end - offset);
    for (let index = first; index <= last; index++) {
      const blockStart = index * bs;
      const from = Math.max(offset, blockStart) - blockStart;
      const to = Math.min(end, blockStart + bs) - blockStart;
      const at = blockStart + from - offset;
      const vs = layers.get(index);
      const top = vs?.[vs.length - 1];
      if (top && covers(top.ranges, from, to)) {
        top.buf.copy(out, at, from, to);
        continue;
      }
      const ref = refAt.get(index);
      if (ref) {
        const obj = await this.readObject(ref);
        const n = Math.max(0, Math.min(to, obj.length) - from);
        if (n > 0) obj.copy(out, at, from, from + n);
        if (n < to - from) out.fill(0, at + Math.max(0, n), at + (to - from));
        if (from === 0 || to === bs) this.prefetch(refAt.get(index + 1));
      } else {
        out.fill(0, at, at + (to - from));
      }
      if (vs) for (const v of vs) overlay(out, at, v, from, to);
    }
    return out;
  }

  private prefetch(ref: BlockRef | undefined): void {
    if (!ref || this.opts.cache.has(ref.key)) return;
    this.readObject(ref).catch(() => undefined);
  }

  // ---- size changes and deletion -----------------------------------------------------------------

  /** Cuts a file's data to `newSize` bytes; bytes past it read as zeros if the file grows again. */
  async truncate(inodeId: number, newSize: number): Promise<void> {
    const bs = this.blockSize;
    const keepBlocks = Math.ceil(newSize / bs);
    this.limits.set(inodeId, Math.min(this.limits.get(inodeId) ?? Infinity, newSize));
    try {
      const m = this.files.get(inodeId);
      const waits: Promise<unknown>[] = [];
      if (m) {
        for (const [index, s] of m) {
          if (index < keepBlocks) continue;
          if (s.dirty) {
            s.dirty = null;
            this.opts.budget.release(bs);
          }
          waits.push(s.chain);
          this.dropStateIfIdle(inodeId, index, s);
        }
      }
      // Uploads in flight past the cut finish (clipped by the limit) before their rows go.
      await Promise.all(waits);
      await this.deleteObjects(await this.meta.dropBlocks(inodeId, keepBlocks));
      const tail = newSize % bs;
      if (tail !== 0) {
        const index = keepBlocks - 1;
        const [ref] = await this.meta.getBlocks(inodeId, index, index + 1);
        const s = this.files.get(inodeId)?.get(index);
        let len = ref?.length ?? 0;
        if (s) for (const v of [...s.inflight, ...(s.dirty ? [s.dirty] : [])]) len = Math.max(len, rangesEnd(v.ranges));
        if (s?.dirty) clip(s.dirty, tail);
        if (len > tail) {
          const v = this.dirtyVersion(this.state(inodeId, index));
          v.buf.fill(0, tail, len);
          v.ranges = addRange(v.ranges, tail, len);
        }
      }
    } finally {
      // The zeroed tail (a dirty version) now carries the cut; later writes may grow the file again.
      this.limits.delete(inodeId);
    }
  }

  /** Frees every block of a deleted file. */
  async free(inodeId: number): Promise<void> {
    this.freed.add(inodeId);
    try {
      const m = this.files.get(inodeId);
      if (m) {
        for (const s of m.values()) {
          if (s.dirty) {
            s.dirty = null;
            this.opts.budget.release(this.blockSize);
          }
        }
        await Promise.all([...m.values()].map((s) => s.chain));
        this.files.delete(inodeId);
      }
      await this.deleteObjects(await this.meta.dropBlocks(inodeId, 0));
    } finally {
      this.freed.delete(inodeId);
    }
  }

  private async deleteObjects(refs: BlockRef[]): Promise<void> {
    for (const r of refs) {
      this.opts.cache.delete(r.key);
      try {
        await this.store.delete(r.key);
      } catch (err) {
        // An orphaned object wastes space but loses nothing; it is logged for the operator.
        this.opts.log?.warn({ err, key: r.key }, 'could not delete an old block object');
      }
    }
  }

  capacity(): Promise<BlockStoreCapacity> {
    return this.store.capacity();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    await this.flushAll();
  }
}
