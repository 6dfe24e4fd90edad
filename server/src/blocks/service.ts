// The block service: the data path between the file service and a block store. Writes land in
// in-memory dirty blocks (acknowledged as UNSTABLE; the NFS write verifier changes on every start,
// so clients resend anything uncommitted after a crash). A block is uploaded as a new immutable
// object as soon as it is completely written, when its file is committed, when it has been idle, or
// when the dirty budget is exhausted; the `blocks` row is switched afterwards and the previous
// object deleted. Reads merge, newest first: dirty layer, in-flight layer, stored object, zeros.
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { BlockRef, MetadataStore } from '../meta/store.js';
import { BlockCache } from './cache.js';
import type { BlockStore, BlockStoreCapacity } from './store.js';

/** A half-open byte range [start, end) inside a block. */
type Range = [number, number];

interface DirtyBlock {
  index: number;
  buf: Buffer;
  /** Written ranges, sorted and merged. */
  ranges: Range[];
  /** When it first became dirty (ms). */
  since: number;
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
  /** Resolves once under budget, or after `ms` (the caller then forces a flush itself). */
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

function overlay(target: Buffer, targetStart: number, layer: DirtyBlock, from: number, to: number): void {
  for (const [s, e] of layer.ranges) {
    const a = Math.max(s, from);
    const b = Math.min(e, to);
    if (a < b) layer.buf.copy(target, targetStart + (a - from), a, b);
  }
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
  log?: Logger;
}

export class BlockService {
  readonly blockSize: number;
  private readonly dirty = new Map<number, Map<number, DirtyBlock>>();
  private readonly inflight = new Map<number, Map<number, DirtyBlock>>();
  /** Per inode:index, the tail of the chain of uploads (serializes versions of one block). */
  private readonly chains = new Map<string, Promise<void>>();
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

  // ---- writes ----------------------------------------------------------------------------------

  async write(inodeId: number, offset: number, data: Buffer): Promise<void> {
    const bs = this.blockSize;
    let pos = 0;
    while (pos < data.length) {
      const abs = offset + pos;
      const index = Math.floor(abs / bs);
      const inBlock = abs - index * bs;
      const n = Math.min(bs - inBlock, data.length - pos);
      const blk = this.dirtyBlock(inodeId, index);
      data.copy(blk.buf, inBlock, pos, pos + n);
      blk.ranges = addRange(blk.ranges, inBlock, inBlock + n);
      if (covers(blk.ranges, 0, bs)) void this.startFlush(inodeId, index);
      pos += n;
    }
    if (this.opts.budget.exhausted) await this.relievePressure();
  }

  private dirtyBlock(inodeId: number, index: number): DirtyBlock {
    let m = this.dirty.get(inodeId);
    if (!m) this.dirty.set(inodeId, (m = new Map<number, DirtyBlock>()));
    let blk = m.get(index);
    if (!blk) {
      blk = { index, buf: Buffer.allocUnsafe(this.blockSize), ranges: [], since: Date.now() };
      m.set(index, blk);
      this.opts.budget.add(this.blockSize);
    }
    return blk;
  }

  /** Writers wait for uploads while the dirty budget is exhausted (backpressure, never failure). */
  private async relievePressure(): Promise<void> {
    for (let round = 0; round < 1000 && this.opts.budget.exhausted; round++) {
      const oldest = this.oldestDirty();
      if (oldest) void this.startFlush(oldest[0], oldest[1]);
      await this.opts.budget.wait(50);
    }
  }

  private oldestDirty(): [number, number] | null {
    let best: [number, number] | null = null;
    let since = Infinity;
    for (const [ino, m] of this.dirty) {
      for (const b of m.values()) {
        if (b.since < since) {
          since = b.since;
          best = [ino, b.index];
        }
      }
    }
    return best;
  }

  private flushIdle(idleMs: number): void {
    const cutoff = Date.now() - idleMs;
    for (const [ino, m] of this.dirty) {
      for (const b of m.values()) if (b.since <= cutoff) void this.startFlush(ino, b.index);
    }
  }

  /** Moves a dirty block to the upload chain. Returns the chain's promise (never rejects). */
  private startFlush(inodeId: number, index: number): Promise<void> {
    const m = this.dirty.get(inodeId);
    const blk = m?.get(index);
    const chainKey = `${inodeId}:${index}`;
    const tail = this.chains.get(chainKey) ?? Promise.resolve();
    if (!blk) return tail;
    m!.delete(index);
    if (m!.size === 0) this.dirty.delete(inodeId);
    let f = this.inflight.get(inodeId);
    if (!f) this.inflight.set(inodeId, (f = new Map<number, DirtyBlock>()));
    f.set(index, blk);
    const next = tail.then(() => this.upload(inodeId, blk));
    this.chains.set(chainKey, next);
    void next.then(() => {
      if (this.chains.get(chainKey) === next) this.chains.delete(chainKey);
    });
    return next;
  }

  private uploadErrors = new Map<number, Error>();

  private async upload(inodeId: number, blk: DirtyBlock): Promise<void> {
    const bs = this.blockSize;
    try {
      const [prev] = await this.meta.getBlocks(inodeId, blk.index, blk.index + 1);
      let length = rangesEnd(blk.ranges);
      let content: Buffer;
      if (prev && prev.length > length) length = prev.length;
      if (covers(blk.ranges, 0, length)) {
        content = blk.buf.subarray(0, length);
      } else {
        content = Buffer.alloc(length);
        if (prev) {
          const base = await this.readObject(prev);
          base.copy(content, 0, 0, Math.min(base.length, length));
        }
        overlay(content, 0, blk, 0, length);
      }
      void bs;
      const version = (prev?.version ?? 0) + 1;
      const key = `${this.opts.keyPrefix}/${inodeId}/${blk.index}-${version}-${randomBytes(4).toString('hex')}`;
      await this.store.put(key, content);
      if (this.freed.has(inodeId)) {
        await this.store.delete(key);
        return;
      }
      const replaced = await this.meta.putBlock(inodeId, { index: blk.index, key, length, version });
      if (replaced && replaced.key !== key) {
        this.opts.cache.delete(replaced.key);
        await this.store.delete(replaced.key);
      }
    } catch (err) {
      // Keep the data: put it back under any newer dirty layer and let the next flush retry.
      const m = this.dirty.get(inodeId);
      const newer = m?.get(blk.index);
      if (newer) {
        overlay(blk.buf, 0, newer, 0, this.blockSize);
        for (const r of newer.ranges) blk.ranges = addRange(blk.ranges, r[0], r[1]);
        this.opts.budget.release(this.blockSize);
      }
      let mm = this.dirty.get(inodeId);
      if (!mm) this.dirty.set(inodeId, (mm = new Map<number, DirtyBlock>()));
      blk.since = Date.now();
      mm.set(blk.index, blk);
      this.uploadErrors.set(inodeId, err as Error);
      this.opts.log?.error({ err, inode: inodeId, block: blk.index }, 'block upload failed; data kept for retry');
      const f = this.inflight.get(inodeId);
      if (f?.get(blk.index) === blk) f.delete(blk.index);
      return;
    }
    const f = this.inflight.get(inodeId);
    if (f?.get(blk.index) === blk) {
      f.delete(blk.index);
      if (f.size === 0) this.inflight.delete(inodeId);
    }
    this.opts.budget.release(this.blockSize);
  }

  /** Uploads every dirty block of a file and waits until all its blocks are stored. */
  async flush(inodeId: number): Promise<void> {
    this.uploadErrors.delete(inodeId);
    const waits: Promise<void>[] = [];
    const m = this.dirty.get(inodeId);
    if (m) for (const index of [...m.keys()]) waits.push(this.startFlush(inodeId, index));
    const f = this.inflight.get(inodeId);
    if (f) for (const index of f.keys()) waits.push(this.chains.get(`${inodeId}:${index}`) ?? Promise.resolve());
    await Promise.all(waits);
    const err = this.uploadErrors.get(inodeId);
    if (err) {
      this.uploadErrors.delete(inodeId);
      throw err;
    }
  }

  async flushAll(): Promise<void> {
    const inodes = new Set([...this.dirty.keys(), ...this.inflight.keys()]);
    await Promise.all([...inodes].map((i) => this.flush(i).catch(() => undefined)));
  }

  hasDirty(inodeId: number): boolean {
    return this.dirty.has(inodeId) || this.inflight.has(inodeId);
  }

  // ---- reads -----------------------------------------------------------------------------------

  private async readObject(ref: BlockRef): Promise<Buffer> {
    const hit = this.opts.cache.get(ref.key);
    if (hit) return hit;
    const data = await this.store.get(ref.key);
    if (data === null) throw Object.assign(new Error(`block object ${ref.key} is missing`), { code: 'DITTOFS_BLOCK_MISSING' });
    this.opts.cache.set(ref.key, data);
    return data;
  }

  /** Reads up to `count` bytes at `offset` of a file whose size is `fileSize`. */
  async read(inodeId: number, offset: number, count: number, fileSize: number): Promise<Buffer> {
    const end = Math.min(fileSize, offset + count);
    if (end <= offset) return Buffer.alloc(0);
    const bs = this.blockSize;
    const first = Math.floor(offset / bs);
    const last = Math.floor((end - 1) / bs);
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.readOnce(inodeId, offset, end, first, last);
      } catch (err) {
        // A block switched to a new version between looking up its ref and reading it: retry.
        if ((err as { code?: string }).code !== 'DITTOFS_BLOCK_MISSING' || attempt >= 3) throw err;
      }
    }
    void bs;
  }

  private async readOnce(inodeId: number, offset: number, end: number, first: number, last: number): Promise<Buffer> {
    const bs = this.blockSize;
    const refs = await this.meta.getBlocks(inodeId, first, last + 2);
    const refAt = new Map<number, BlockRef>();
    for (const r of refs) refAt.set(r.index, r);
    const out = Buffer.allocUnsafe(end - offset);
    const dirty = this.dirty.get(inodeId);
    const inflight = this.inflight.get(inodeId);
    for (let index = first; index <= last; index++) {
      const blockStart = index * bs;
      const from = Math.max(offset, blockStart) - blockStart;
      const to = Math.min(end, blockStart + bs) - blockStart;
      const at = blockStart + from - offset;
      const ref = refAt.get(index);
      const d = dirty?.get(index);
      const fl = inflight?.get(index);
      if (d && covers(d.ranges, from, to)) {
        d.buf.copy(out, at, from, to);
        continue;
      }
      if (ref) {
        const obj = await this.readObject(ref);
        const n = Math.max(0, Math.min(to, obj.length) - from);
        if (n > 0) obj.copy(out, at, from, from + n);
        if (n < to - from) out.fill(0, at + n, at + (to - from));
        if (to === bs || from === 0) this.prefetch(refAt.get(index + 1));
      } else {
        out.fill(0, at, at + (to - from));
      }
      if (fl) overlay(out, at, fl, from, to);
      if (d) overlay(out, at, d, from, to);
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
    const m = this.dirty.get(inodeId);
    if (m) {
      for (const [index] of m) {
        if (index >= keepBlocks) {
          m.delete(index);
          this.opts.budget.release(bs);
        }
      }
      if (m.size === 0) this.dirty.delete(inodeId);
    }
    // Let uploads in flight finish so their rows can be dropped too.
    await this.flushChainsFrom(inodeId, keepBlocks);
    const dropped = await this.meta.dropBlocks(inodeId, keepBlocks);
    await this.deleteObjects(dropped);
    const tail = newSize % bs;
    if (tail !== 0) {
      const index = keepBlocks - 1;
      const [ref] = await this.meta.getBlocks(inodeId, index, index + 1);
      const d = this.dirty.get(inodeId)?.get(index);
      const fl = this.inflight.get(inodeId)?.get(index);
      const len = Math.max(ref?.length ?? 0, d ? rangesEnd(d.ranges) : 0, fl ? rangesEnd(fl.ranges) : 0);
      if (len > tail) {
        const blk = this.dirtyBlock(inodeId, index);
        blk.buf.fill(0, tail, len);
        blk.ranges = addRange(blk.ranges, tail, len);
      }
    }
  }

  private async flushChainsFrom(inodeId: number, fromIndex: number): Promise<void> {
    const f = this.inflight.get(inodeId);
    if (!f) return;
    const waits: Promise<void>[] = [];
    for (const index of f.keys()) if (index >= fromIndex) waits.push(this.chains.get(`${inodeId}:${index}`) ?? Promise.resolve());
    await Promise.all(waits);
  }

  private readonly freed = new Set<number>();

  /** Frees every block of a deleted file. */
  async free(inodeId: number): Promise<void> {
    this.freed.add(inodeId);
    try {
      const m = this.dirty.get(inodeId);
      if (m) {
        this.opts.budget.release(m.size * this.blockSize);
        this.dirty.delete(inodeId);
      }
      await this.flushChainsFrom(inodeId, 0);
      const dropped = await this.meta.dropBlocks(inodeId, 0);
      await this.deleteObjects(dropped);
    } finally {
      this.freed.delete(inodeId);
    }
  }

  private async deleteObjects(refs: BlockRef[]): Promise<void> {
    for (const r of refs) {
      this.opts.cache.delete(r.key);
      await this.store.delete(r.key);
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
