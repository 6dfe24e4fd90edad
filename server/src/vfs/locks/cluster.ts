// The seam that makes the lock manager's state cluster-wide (DESIGN.md "Several replicas"): the
// open table and the byte-range locks keep this server's state in memory, as always, and, for a
// store that several servers serve, also register it with a ClusterLocks (coord/locks.ts: Redis),
// which checks it against the other servers' state. The protocol engines see neither: they call
// the tables' *Shared methods, which cost nothing more when no store is shared.
//
// Every method that can grant throws VfsError('JUKEBOX') when the cluster state cannot be reached
// or this server cannot prove it is still counted as alive: nothing is granted then.

/** An open checked against the other servers: refused by one of their opens' share modes, or by the file's delete-pending. */
export type RemoteOpenOutcome = 'ok' | 'sharing-violation' | 'delete-pending';

export interface ClusterLocks {
  /** Is this store's lock state shared with other servers? (false: the tables are local alone) */
  shares(store: object): boolean;

  /** Registers an open (checked against the other servers' opens and delete-pending). */
  addOpen(store: object, inodeId: number, rec: object, access: number, shareAccess: number): Promise<RemoteOpenOutcome>;
  /**
   * Removes an open; `deletePending`: the file is (or becomes, by this close) delete-pending.
   * Resolves true when it was the last open of the file on any server and the file is delete-pending.
   */
  releaseOpen(store: object, inodeId: number, rec: object, deletePending: boolean): Promise<boolean>;
  /** Sets or clears the file's delete-pending (MS-FSA File.PendingDelete) for every server. */
  setDeletePending(store: object, inodeId: number, pending: boolean): Promise<void>;
  /** Is the file delete-pending (set through any server)? */
  isDeletePending(store: object, inodeId: number): Promise<boolean>;
  /** Has another (live) server the file open? Then an oplock here is Level II at most, a lease caches no writes. */
  anyOpenElsewhere(store: object, inodeId: number): Promise<boolean>;
  /** Does an open on another server refuse `access` / `shareAccess`? */
  remoteConflict(store: object, inodeId: number, access: number, shareAccess: number): Promise<boolean>;

  /** Registers byte-range locks granted here; false (nothing registered) when another server's lock conflicts. */
  addRanges(store: object, inodeId: number, locks: readonly RangeLock[]): Promise<boolean>;
  /** Removes byte-range locks (settled before an unlock is answered; the other servers' waiters wake). */
  dropRanges(store: object, inodeId: number, locks: readonly RangeLock[]): Promise<void>;
  /**
   * Would an I/O of [offset, offset + length) conflict with another server's lock? null (no
   * allocation) when the store is not shared. No round trip to Redis unless another server is known
   * to hold a lock on the file (after one turn of the event loop, for announcements already here).
   */
  ioConflict(store: object, inodeId: number, offset: number, length: number, write: boolean): Promise<boolean> | null;
  /** Called when another server released byte-range locks of a file (waiters here try again). */
  onRangesReleased(fn: (store: object, inodeId: number) => void): void;

  /** Makes it known (before the CREATE that granted it is answered) that this server's clients cache the file. */
  announceCaching(store: object, inodeId: number): Promise<void>;
  /** The file's last open here closed: this server caches nothing of it any more. */
  cachingGone(store: object, inodeId: number): void;
  /**
   * Asks the other servers whose clients cache the file to break their caching down to `keep`
   * (Caching bits) and waits for them (bounded by their break timeout); null (no cost) when no
   * other server is known to cache it. `onWait` is told when a break is on its way.
   */
  breakRemote(store: object, inodeId: number, keep: number, onWait?: () => void): Promise<void> | null;
  /**
   * Another server asks for a break here: `fn` breaks this server's holders of the file to `keep`
   * and resolves true while some still cache it.
   */
  onBreakRequest(fn: (store: object, inodeId: number, keep: number) => Promise<boolean>): void;
}

/** A byte-range lock as the cluster state holds it (the lock object itself is its identity). */
export interface RangeLock {
  readonly offset: bigint;
  readonly length: bigint;
  readonly exclusive: boolean;
}
