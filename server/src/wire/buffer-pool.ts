// Buffers of one size, reused. Streaming 1 MiB WRITEs through fresh buffers makes V8 count a
// gigabyte of external memory per gigabyte written, and it answers with a full garbage collection
// every few dozen milliseconds; a pool keeps that memory allocated once.
//
// A buffer goes back with `give` only when nothing refers to it any more: the next `take` hands it
// out again and overwrites it. A buffer that is never given back is simply collected.

/** WebAssembly pages: 64 KiB each, and a memory made of them starts on a page boundary. */
const WASM_PAGE = 64 * 1024;

/** The part of the WebAssembly global used here (the server's TypeScript lib has no DOM types). */
type SharedWasmMemory = new (d: { initial: number; maximum: number; shared: true }) => { buffer: ArrayBufferLike };
const WasmMemory = (globalThis as unknown as { WebAssembly?: { Memory?: SharedWasmMemory } }).WebAssembly?.Memory;

/** Memory sharedMemory() made page-aligned (a plain SharedArrayBuffer is not). */
const pageAlignedMemory = new WeakSet<ArrayBufferLike>();

/** True when `b` starts on a page boundary: a view at a multiple of 4 KiB into page-aligned pool memory. */
export function isPageAligned(b: Buffer): boolean {
  return pageAlignedMemory.has(b.buffer) && b.byteOffset % 4096 === 0;
}

/**
 * Shared memory of `size` bytes. A multiple of 64 KiB (a block) is a shared WebAssembly memory's
 * buffer: a SharedArrayBuffer like any other, but page-aligned, which is what lets the filesystem
 * block store write it with O_DIRECT (a plain SharedArrayBuffer starts 16 bytes into a page).
 */
function sharedMemory(size: number): SharedArrayBuffer {
  if (WasmMemory !== undefined && size > 0 && size % WASM_PAGE === 0) {
    const pages = size / WASM_PAGE;
    try {
      const b = new WasmMemory({ initial: pages, maximum: pages, shared: true }).buffer;
      if (b instanceof SharedArrayBuffer) {
        pageAlignedMemory.add(b);
        return b;
      }
    } catch {
      // No shared WebAssembly memory here: unaligned, still shared.
    }
  }
  return new SharedArrayBuffer(size);
}

export class BufferPool {
  private readonly free: Buffer[] = [];
  /** Buffers handed out and not given back: anything else given is ignored (and never reused twice). */
  private readonly out = new WeakSet<ArrayBufferLike>();
  /** Buffers made since the start (for tests and metrics). */
  created = 0;

  /** Date.now() of the last take (trimIfIdle). */
  private lastTake = 0;

  constructor(
    /** Size of the pooled buffers; larger requests get a buffer of their own. */
    readonly bufferSize: number,
    /** Free buffers kept at most; more given back are dropped. */
    private readonly maxFree: number,
    /** Back the pooled buffers with SharedArrayBuffers (worker threads can read them in place). */
    private readonly shared = false,
    /** Free buffers kept once the pool has been idle (trimIfIdle). */
    private readonly idleFree = maxFree,
  ) {}

  /** A buffer of exactly `size` bytes, with undefined contents. */
  take(size: number): Buffer {
    if (size > this.bufferSize) return Buffer.allocUnsafeSlow(size);
    this.lastTake = Date.now();
    let b = this.free.pop();
    if (b === undefined) {
      b = this.shared ? Buffer.from(sharedMemory(this.bufferSize)) : Buffer.allocUnsafeSlow(this.bufferSize);
      this.created++;
    }
    this.out.add(b.buffer);
    return size === b.length ? b : b.subarray(0, size);
  }

  /** Takes back a buffer from `take` that nothing refers to any more. Anything else is ignored. */
  give(b: Buffer): void {
    const ab = b.buffer;
    if (!this.out.delete(ab)) return;
    if (this.free.length < this.maxFree) this.free.push(Buffer.from(ab, 0, this.bufferSize));
  }

  /**
   * Drops the free buffers beyond `idleFree` when nothing was taken for `idleMs`: what a burst
   * needed is not held for good. Returns how many were dropped.
   */
  trimIfIdle(idleMs: number, now = Date.now()): number {
    if (now - this.lastTake < idleMs || this.free.length <= this.idleFree) return 0;
    const n = this.free.length - this.idleFree;
    this.free.length = this.idleFree;
    return n;
  }

  /** Free buffers held (for tests). */
  get idle(): number {
    return this.free.length;
  }
}

/**
 * One pool per buffer size (block sizes differ between stores), each keeping about `keepBytes` free,
 * and while busy up to `busyBuffers` (as many as can be in use at once: the uploads in flight).
 * A pool that keeps fewer than its users hold at once drops buffers and makes new ones all along,
 * and what it drops stays in memory until a garbage collection (a shared WebAssembly memory is not
 * counted as heap): writing 1 GiB to S3 held 51 block buffers (204 MiB) where 16 were in use.
 */
export class BufferPools {
  private readonly pools = new Map<number, BufferPool>();
  constructor(
    private readonly keepBytes: number,
    private readonly shared = false,
    private readonly busyBuffers = 0,
  ) {}

  forSize(size: number): BufferPool {
    let p = this.pools.get(size);
    if (p === undefined) {
      const idle = Math.max(1, Math.floor(this.keepBytes / size));
      this.pools.set(size, (p = new BufferPool(size, Math.max(idle, this.busyBuffers), this.shared, idle)));
    }
    return p;
  }

  /** Each pool nothing was taken from for `idleMs` keeps only about `keepBytes` (BufferPool.trimIfIdle). */
  trimIdle(idleMs: number, now = Date.now()): number {
    let n = 0;
    for (const p of this.pools.values()) n += p.trimIfIdle(idleMs, now);
    return n;
  }
}
