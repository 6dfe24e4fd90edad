// MS-SMB2 2.2.26 LOCK Request / 2.2.27 LOCK Response and 3.3.5.14 their processing, over the
// byte-range lock manager of vfs/locks. The first element decides whether the request unlocks or
// locks; an unlock request stops at its first failure and keeps what it unlocked; a lock request
// that fails gives back what it took. A single lock without FAIL_IMMEDIATELY waits (async) for its
// range. LockSequence is not checked: 2.0.2 and 2.1 opens here are never resilient or durable.
import type { ByteRangeLocks, HeldLock } from '../vfs/locks/byte-range.js';
import { invalidRange } from '../vfs/locks/byte-range.js';
import type { SmbReader } from './codec.js';
import { SmbWriter } from './codec.js';
import type { PendingOp } from './async.js';
import { Access } from './constants.js';
import type { Open } from './state.js';
import { NtStatus, SmbStatusError } from './status.js';
import { DecodeError, DecodeErrorCode } from '../wire/errors.js';

/** MS-SMB2 2.2.26.1 Flags. */
export const LockFlags = Object.freeze({
  SHARED: 0x01,
  EXCLUSIVE: 0x02,
  UNLOCK: 0x04,
  FAIL_IMMEDIATELY: 0x10,
} as const);

export interface LockElement {
  offset: bigint;
  length: bigint;
  flags: number;
}

export interface LockRequest {
  lockSequence: number;
  fileId: Buffer;
  locks: LockElement[];
}

const ELEMENT_SIZE = 24;

export function decodeLock(r: SmbReader): LockRequest {
  r.need(48, 'LOCK');
  const size = r.u16();
  if (size !== 48) throw new DecodeError(DecodeErrorCode.Invalid, `LOCK: StructureSize ${size}, expected 48`);
  const count = r.u16();
  const lockSequence = r.u32();
  const fileId = r.bytes(16);
  // LockCount 0 is answered INVALID_PARAMETER (3.3.5.14); the message always carries one element.
  if (count === 0) throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'LOCK with no elements');
  const raw = r.bytes(count * ELEMENT_SIZE);
  const locks: LockElement[] = [];
  for (let i = 0; i < count; i++) {
    const at = i * ELEMENT_SIZE;
    locks.push({ offset: raw.readBigUInt64LE(at), length: raw.readBigUInt64LE(at + 8), flags: raw.readUInt32LE(at + 16) });
  }
  return { lockSequence, fileId, locks };
}

/** 2.2.27 LOCK Response: StructureSize 4, Reserved. */
export function writeLockResponse(w: SmbWriter): void {
  w.u16(4).u16(0);
}

function lockResponse(): Buffer {
  const w = new SmbWriter(4);
  writeLockResponse(w);
  return w.finish();
}

const isLockFlags = (f: number): boolean => {
  const base = f & ~LockFlags.FAIL_IMMEDIATELY;
  return base === LockFlags.SHARED || base === LockFlags.EXCLUSIVE;
};

export interface LockContext {
  locks: ByteRangeLocks;
  /** The connection: the per-client lock cap counts in it. */
  client: object;
  /** Registers the request as pending (may throw INSUFFICIENT_RESOURCES or INTERNAL_ERROR). */
  goAsync: () => PendingOp;
  /**
   * Throws unless the caller may still use the share (its grant may have become `none` since the
   * open was made): checked before a lock is taken, not before an unlock.
   */
  mayUseShare: () => void;
}

/**
 * 3.3.5.14: returns the status to answer, STATUS_PENDING when the request went async (its final
 * response then comes through the PendingOp), or throws an SmbStatusError.
 */
export async function lock(c: LockContext, open: Open, req: LockRequest, w: SmbWriter): Promise<number> {
  if (open.isDir) throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'byte-range locks on a directory');
  // MS-FSA 2.1.5.7: an open without read or write data access may not lock: otherwise one that may
  // only see the file's attributes could lock out the file's readers and writers.
  if ((open.grantedAccess & (Access.FILE_READ_DATA | Access.FILE_WRITE_DATA)) === 0)
    throw new SmbStatusError(NtStatus.ACCESS_DENIED, 'LOCK without FILE_READ_DATA or FILE_WRITE_DATA');
  const store = open.share.meta;
  const inode = open.inodeId;
  const first = req.locks[0]!;

  // 3.3.5.14.1 unlocks: each must be a plain UNLOCK of a range the open holds exactly.
  if ((first.flags & LockFlags.UNLOCK) !== 0) {
    for (const el of req.locks) {
      if (el.flags !== LockFlags.UNLOCK) throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'LOCK: lock flags in an unlock request');
      if (invalidRange(el.offset, el.length)) throw new SmbStatusError(NtStatus.INVALID_LOCK_RANGE);
      if (!c.locks.unlock(store, inode, open, el.offset, el.length)) {
        await c.locks.settled();
        throw new SmbStatusError(NtStatus.RANGE_NOT_LOCKED);
      }
    }
    // Several servers: the others see the ranges free before the unlock is answered.
    await c.locks.settled();
    writeLockResponse(w);
    return NtStatus.SUCCESS;
  }

  // 3.3.5.14.2 locks: all or nothing.
  c.mayUseShare();
  const taken: HeldLock[] = [];
  const giveBack = (): void => {
    for (const l of taken) c.locks.remove(store, inode, l);
  };
  const many = req.locks.length > 1;
  for (const el of req.locks) {
    let status: number | null = null;
    if (!isLockFlags(el.flags) || (many && (el.flags & LockFlags.FAIL_IMMEDIATELY) === 0)) status = NtStatus.INVALID_PARAMETER;
    else if (invalidRange(el.offset, el.length)) status = NtStatus.INVALID_LOCK_RANGE;
    if (status !== null) {
      giveBack();
      throw new SmbStatusError(status as NtStatus, 'LOCK: invalid element');
    }
    const exclusive = (el.flags & LockFlags.EXCLUSIVE) !== 0;
    const r = c.locks.tryLock(store, inode, open, c.client, el.offset, el.length, exclusive);
    if (r.kind === 'granted') {
      taken.push(r.lock);
      continue;
    }
    if (r.kind === 'limit') {
      giveBack();
      throw new SmbStatusError(NtStatus.INSUFFICIENT_RESOURCES, 'too many byte-range locks');
    }
    if (many || (el.flags & LockFlags.FAIL_IMMEDIATELY) !== 0) {
      giveBack();
      throw new SmbStatusError(NtStatus.LOCK_NOT_GRANTED);
    }
    return waitFor(c, open, el, exclusive, true);
  }
  // Several servers: granted only when no other server's lock conflicts (taken back otherwise).
  if (!(await c.locks.confirmShared(store, inode, taken))) {
    if (many || (first.flags & LockFlags.FAIL_IMMEDIATELY) !== 0) throw new SmbStatusError(NtStatus.LOCK_NOT_GRANTED);
    return waitFor(c, open, first, (first.flags & LockFlags.EXCLUSIVE) !== 0, false);
  }
  writeLockResponse(w);
  return NtStatus.SUCCESS;
}

/** How often a lock waiting on another server's lock tries again without an unlock event (a server that died). */
const REMOTE_RETRY_MS = 1_000;

/**
 * A blocking lock: pending until granted, cancelled (CANCELLED) or its open closes (RANGE_NOT_LOCKED).
 * `retryNow` false: another server refused it just now, so it waits for an unlock first. On a
 * shared store a grant here is confirmed with the other servers; refused, it waits again.
 */
function waitFor(c: LockContext, open: Open, el: LockElement, exclusive: boolean, retryNow: boolean): number {
  const op = c.goAsync();
  const store = open.share.meta;
  const inode = open.inodeId;
  let finished = false;
  let withdraw = (): void => undefined;
  // Another server's lock may go with its server (no unlock event): tried again periodically.
  const poll = c.locks.isShared(store) ? setInterval(() => c.locks.retry(store, inode), REMOTE_RETRY_MS) : null;
  const finish = (status: NtStatus, body?: Buffer): void => {
    if (finished) return;
    finished = true;
    if (poll) clearInterval(poll);
    op.complete(status, body);
  };
  const waiter = {
    owner: open,
    client: c.client,
    offset: el.offset,
    length: el.length,
    exclusive,
    done: (outcome: 'granted' | 'limit', lock: HeldLock | null) => {
      if (outcome !== 'granted' || lock === null) return finish(NtStatus.INSUFFICIENT_RESOURCES);
      c.locks.confirmShared(store, inode, [lock]).then(
        (ok) => {
          if (finished) c.locks.remove(store, inode, lock);
          else if (ok) finish(NtStatus.SUCCESS, lockResponse());
          else withdraw = c.locks.wait(store, inode, waiter, false);
        },
        (e: unknown) => finish(e instanceof SmbStatusError ? e.status : NtStatus.NETWORK_BUSY),
      );
    },
  };
  withdraw = c.locks.wait(store, inode, waiter, retryNow);
  op.onAbort = (reason) => {
    withdraw();
    finish(reason === 'cancel' ? NtStatus.CANCELLED : NtStatus.RANGE_NOT_LOCKED);
  };
  return NtStatus.PENDING;
}

/** Drops the locks of an open that is closing (its pending LOCKs were answered already). */
export function releaseLocks(locks: ByteRangeLocks, open: Open): void {
  if (open.isDir) return;
  locks.releaseOwner(open.share.meta, open.inodeId, open);
}
