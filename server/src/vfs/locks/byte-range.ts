// The byte-range part of the lock manager (DESIGN.md "The SMB engine"): locks are kept per file
// (a metadata store and an inode id, whatever path or open reached it), owned by an opaque owner
// (an SMB open) that belongs to a client (its connection, the unit the caps count in). Conflict
// rules are MS-FSA 2.1.4.10; unlock is MS-FSA 2.1.5.9 (the exact range, an exclusive lock first).
// Offsets and lengths are unsigned 64-bit and held as bigint: LOCK requests cover the whole 2^64
// range, and locking is not a hot path; a READ or WRITE pays for a BigInt conversion only when
// the file has locks at all (one Map lookup otherwise).
//
// Blocking requests wait here: a waiter is retried, in arrival order, whenever a lock of its file
// goes away, and told once when it is granted. Waiters are bounded by whoever queues them (the SMB
// engine's pending-request cap); locks are bounded per owner and per client.

import type { ClusterLocks } from './cluster.js';

export const U64_MAX = (1n << 64n) - 1n;
/** Locks one owner (an open) may hold at most. */
export const MAX_LOCKS_PER_OWNER = 4096;
/** Locks one client (a connection) may hold at most, over all its owners. */
export const MAX_LOCKS_PER_CLIENT = 16384;

export interface HeldLock {
  readonly owner: object;
  readonly client: object;
  readonly offset: bigint;
  readonly length: bigint;
  readonly exclusive: boolean;
}

/** A request that waits for its range: granted (`done('granted')`) or refused past a cap (`done('limit')`). */
export interface LockWaiter {
  readonly owner: object;
  readonly client: object;
  readonly offset: bigint;
  readonly length: bigint;
  readonly exclusive: boolean;
  done(outcome: 'granted' | 'limit', lock: HeldLock | null): void;
}

export type LockOutcome = { kind: 'granted'; lock: HeldLock } | { kind: 'conflict' } | { kind: 'limit' };

interface FileLocks {
  held: HeldLock[];
  waiters: LockWaiter[];
}

/** MS-FSA 2.1.5.8: a range whose last byte lies past 2^64 - 1 (a zero length never does). */
export function invalidRange(offset: bigint, length: bigint): boolean {
  return length !== 0n && offset + length - 1n > U64_MAX;
}

/**
 * MS-FSA 2.1.4.10: does an access to [offset, offset + length) conflict with `lock`? A zero-length
 * range is the point between offset - 1 and offset: it conflicts with locks that contain both, and
 * the {0, 0} range conflicts with nothing.
 */
function conflictsWith(lock: HeldLock, owner: object, offset: bigint, length: bigint, exclusive: boolean, lockIntent: boolean): boolean {
  if (offset === 0n && length === 0n) return false;
  if (lock.offset === 0n && lock.length === 0n) return false;
  const last = offset + length - 1n;
  const lockLast = lock.offset + lock.length - 1n;
  if (offset > lockLast || last < lock.offset) return false;
  if (lock.exclusive) {
    // The owner of an exclusive lock may read, write and stack shared locks under it, but not a
    // second exclusive lock.
    return lock.owner !== owner || (exclusive && lockIntent);
  }
  // A shared lock blocks all access with exclusive intent (writes too), its owner's included.
  return exclusive;
}

export class ByteRangeLocks {
  /** Store -> inode id -> locks; a file without locks or waiters has no entry. */
  private readonly stores = new Map<object, Map<number, FileLocks>>();
  private readonly perOwner = new Map<object, number>();
  private readonly perClient = new Map<object, number>();
  /** The other servers' locks of shared stores (coord/locks.ts), or null: this server alone. */
  private cluster: ClusterLocks | null = null;
  /** Removals on their way to the cluster state (settled() waits for them). */
  private readonly dropping = new Set<Promise<void>>();

  constructor(
    private readonly maxPerOwner = MAX_LOCKS_PER_OWNER,
    private readonly maxPerClient = MAX_LOCKS_PER_CLIENT,
  ) {}

  private file(store: object, inodeId: number, create: true): FileLocks;
  private file(store: object, inodeId: number, create: false): FileLocks | undefined;
  private file(store: object, inodeId: number, create: boolean): FileLocks | undefined {
    let byInode = this.stores.get(store);
    if (!byInode) {
      if (!create) return undefined;
      byInode = new Map();
      this.stores.set(store, byInode);
    }
    let f = byInode.get(inodeId);
    if (!f && create) {
      f = { held: [], waiters: [] };
      byInode.set(inodeId, f);
    }
    return f;
  }

  private dropIfEmpty(store: object, inodeId: number, f: FileLocks): void {
    if (f.held.length > 0 || f.waiters.length > 0) return;
    const byInode = this.stores.get(store);
    byInode?.delete(inodeId);
    if (byInode?.size === 0) this.stores.delete(store);
  }

  private count(map: Map<object, number>, key: object, delta: number): void {
    const n = (map.get(key) ?? 0) + delta;
    if (n <= 0) map.delete(key);
    else map.set(key, n);
  }

  /** Shares the locks of the stores `cluster` shares; its unlock events wake the waiters here. */
  attachCluster(cluster: ClusterLocks): void {
    this.cluster = cluster;
    cluster.onRangesReleased((store, inodeId) => this.retry(store, inodeId));
  }

  /** Is the store's state shared with other servers? */
  isShared(store: object): boolean {
    return this.cluster !== null && this.cluster.shares(store);
  }

  /**
   * Registers locks just granted here with the other servers (shared stores). False when another
   * server's lock conflicts: they are removed here too. Throws (JUKEBOX) with them removed as well.
   */
  async confirmShared(store: object, inodeId: number, locks: readonly HeldLock[]): Promise<boolean> {
    const cluster = this.cluster;
    if (cluster === null || locks.length === 0 || !cluster.shares(store)) return true;
    let ok = false;
    try {
      ok = await cluster.addRanges(store, inodeId, locks);
    } finally {
      if (!ok) for (const l of locks) this.remove(store, inodeId, l);
    }
    return ok;
  }

  /** Resolves once every removal so far reached the cluster state (an unlock is answered after). */
  async settled(): Promise<void> {
    if (this.dropping.size > 0) await Promise.all([...this.dropping]);
  }

  /**
   * ioConflict() against the other servers' locks: null (no cost) unless the store is shared (see
   * ClusterLocks.ioConflict).
   */
  remoteIoConflict(store: object, inodeId: number, offset: number, length: number, write: boolean): Promise<boolean> | null {
    return this.cluster === null ? null : this.cluster.ioConflict(store, inodeId, offset, length, write);
  }

  /** Tries the waiters of a file again (another server let go of a lock, or a periodic retry). */
  retry(store: object, inodeId: number): void {
    const f = this.file(store, inodeId, false);
    if (f && f.waiters.length > 0) this.retryWaiters(store, inodeId, f);
  }

  /** Locks `owner` holds now (all files). */
  heldBy(owner: object): number {
    return this.perOwner.get(owner) ?? 0;
  }

  /** Locks the owners of `client` hold now. */
  heldByClient(client: object): number {
    return this.perClient.get(client) ?? 0;
  }

  /** The locks of a file (a copy, for tests and diagnostics). */
  locksOf(store: object, inodeId: number): HeldLock[] {
    return [...(this.file(store, inodeId, false)?.held ?? [])];
  }

  private attempt(f: FileLocks, owner: object, client: object, offset: bigint, length: bigint, exclusive: boolean): LockOutcome {
    for (const l of f.held) if (conflictsWith(l, owner, offset, length, exclusive, true)) return { kind: 'conflict' };
    if ((this.perOwner.get(owner) ?? 0) >= this.maxPerOwner || (this.perClient.get(client) ?? 0) >= this.maxPerClient)
      return { kind: 'limit' };
    const lock: HeldLock = { owner, client, offset, length, exclusive };
    f.held.push(lock);
    this.count(this.perOwner, owner, 1);
    this.count(this.perClient, client, 1);
    return { kind: 'granted', lock };
  }

  /** MS-FSA 2.1.5.8 without waiting: granted, in conflict with another lock, or over a cap. */
  tryLock(store: object, inodeId: number, owner: object, client: object, offset: bigint, length: bigint, exclusive: boolean): LockOutcome {
    const f = this.file(store, inodeId, true);
    const r = this.attempt(f, owner, client, offset, length, exclusive);
    this.dropIfEmpty(store, inodeId, f);
    return r;
  }

  /**
   * Queues a request that conflicted; it is retried whenever a lock of the file goes away.
   * Returns the function that withdraws it (a cancel, its open closing).
   */
  wait(store: object, inodeId: number, waiter: LockWaiter, retryNow = true): () => void {
    const f = this.file(store, inodeId, true);
    f.waiters.push(waiter);
    // A lock released between the caller's attempt and now must not be missed (false: the caller
    // was just refused by another server, and waits for its unlock).
    if (retryNow) this.retryWaiters(store, inodeId, f);
    return () => {
      const g = this.file(store, inodeId, false);
      if (!g) return;
      const i = g.waiters.indexOf(waiter);
      if (i !== -1) g.waiters.splice(i, 1);
      this.dropIfEmpty(store, inodeId, g);
    };
  }

  /** MS-FSA 2.1.5.9: removes the owner's lock on exactly this range (an exclusive one first); false if none. */
  unlock(store: object, inodeId: number, owner: object, offset: bigint, length: bigint): boolean {
    const f = this.file(store, inodeId, false);
    if (!f) return false;
    let found = -1;
    for (let i = 0; i < f.held.length; i++) {
      const l = f.held[i]!;
      if (l.owner === owner && l.offset === offset && l.length === length) {
        found = i;
        if (l.exclusive) break;
      }
    }
    if (found === -1) return false;
    this.removeAt(store, inodeId, f, found);
    this.retryWaiters(store, inodeId, f);
    return true;
  }

  /** Removes one lock this manager granted (undoing part of a failed multi-lock request). */
  remove(store: object, inodeId: number, lock: HeldLock): void {
    const f = this.file(store, inodeId, false);
    if (!f) return;
    const i = f.held.indexOf(lock);
    if (i === -1) return;
    this.removeAt(store, inodeId, f, i);
    this.retryWaiters(store, inodeId, f);
  }

  /** Drops every lock `owner` holds on the file (its open was closed) and wakes the waiters. */
  releaseOwner(store: object, inodeId: number, owner: object): void {
    const f = this.file(store, inodeId, false);
    if (!f) return;
    const gone: HeldLock[] = [];
    for (let i = f.held.length - 1; i >= 0; i--) if (f.held[i]!.owner === owner) gone.push(this.takeOut(f, i));
    // Shared: one round trip (and one unlock event) for all of them, not one per lock.
    this.dropShared(store, inodeId, gone);
    if (gone.length > 0) this.retryWaiters(store, inodeId, f);
    else this.dropIfEmpty(store, inodeId, f);
  }

  /**
   * MS-FSA 2.1.4.10 for I/O: would a READ (`write` false) or WRITE of [offset, offset + length) by
   * `owner` touch a range another owner holds (or, for a write, any shared lock)? Offsets here are
   * safe integers (the SMB READ/WRITE decoders refuse more); a zero-length access never conflicts.
   */
  ioConflict(store: object, inodeId: number, owner: object, offset: number, length: number, write: boolean): boolean {
    if (length === 0) return false;
    const f = this.stores.get(store)?.get(inodeId);
    if (!f || f.held.length === 0) return false;
    const o = BigInt(offset);
    const n = BigInt(length);
    for (const l of f.held) if (conflictsWith(l, owner, o, n, write, false)) return true;
    return false;
  }

  private removeAt(store: object, inodeId: number, f: FileLocks, i: number): void {
    this.dropShared(store, inodeId, [this.takeOut(f, i)]);
  }

  private takeOut(f: FileLocks, i: number): HeldLock {
    const l = f.held[i]!;
    f.held.splice(i, 1);
    this.count(this.perOwner, l.owner, -1);
    this.count(this.perClient, l.client, -1);
    return l;
  }

  /** Shared stores: the cluster state forgets locks removed here (settled() waits for it). */
  private dropShared(store: object, inodeId: number, locks: HeldLock[]): void {
    if (locks.length === 0 || this.cluster === null || !this.cluster.shares(store)) return;
    const p: Promise<void> = this.cluster.dropRanges(store, inodeId, locks).finally(() => this.dropping.delete(p));
    this.dropping.add(p);
  }

  private retryWaiters(store: object, inodeId: number, f: FileLocks): void {
    for (let i = 0; i < f.waiters.length;) {
      const w = f.waiters[i]!;
      const r = this.attempt(f, w.owner, w.client, w.offset, w.length, w.exclusive);
      if (r.kind === 'conflict') {
        i++;
        continue;
      }
      f.waiters.splice(i, 1);
      w.done(r.kind, r.kind === 'granted' ? r.lock : null);
    }
    this.dropIfEmpty(store, inodeId, f);
  }
}
