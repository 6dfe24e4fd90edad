// The byte-range lock manager: MS-FSA range math (zero-length locks, the {0, 0} range, 64-bit
// edges), shared/exclusive conflicts by owner, exact-range unlock, release on close, waiters and caps.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ByteRangeLocks, invalidRange, U64_MAX, type LockWaiter } from './byte-range.js';

const store = {};
const client = {};
const A = { name: 'open A' };
const B = { name: 'open B' };

function granted(locks: ByteRangeLocks, owner: object, offset: bigint, length: bigint, exclusive = true, inode = 1): boolean {
  const r = locks.tryLock(store, inode, owner, client, offset, length, exclusive);
  return r.kind === 'granted';
}

describe('byte-range locks', () => {
  it('a range past 2^64 - 1 is invalid; zero lengths and the last byte are not', () => {
    assert.equal(invalidRange(U64_MAX, U64_MAX), true);
    assert.equal(invalidRange(U64_MAX, 2n), true);
    assert.equal(invalidRange(U64_MAX, 1n), false);
    assert.equal(invalidRange(U64_MAX, 0n), false);
    assert.equal(invalidRange(0xffffffffn, 0xffffffffn), false);
  });

  it('exclusive locks of two owners conflict only where they overlap, up to the last 64-bit byte', () => {
    const locks = new ByteRangeLocks();
    assert.ok(granted(locks, A, 100n, 10n));
    assert.ok(!granted(locks, B, 109n, 1n));
    assert.ok(granted(locks, B, 110n, 1n));
    assert.ok(granted(locks, B, 99n, 1n));
    assert.ok(granted(locks, A, U64_MAX, 1n));
    assert.ok(!granted(locks, B, U64_MAX, 1n));
    const top = (1n << 63n) - 1n;
    assert.ok(granted(locks, A, top, 1n));
    assert.ok(!granted(locks, B, top, 1n));
    assert.ok(granted(locks, B, top + 1n, 1n), '2^63 is a different byte than 2^63 - 1');
    // Neighbours 1 apart near 2^64 stay distinct (no float rounding).
    assert.ok(granted(locks, A, U64_MAX - 2n, 1n));
    assert.ok(granted(locks, B, U64_MAX - 3n, 1n));
  });

  it('a zero-length lock is a point: it conflicts only with ranges that contain it strictly inside', () => {
    const cases: [bigint, bigint, boolean][] = [
      [10n, 0n, true],
      [9n, 1n, true],
      [10n, 1n, true],
      [11n, 1n, true],
      [9n, 2n, false],
      [10n, 2n, true],
      [9n, 3n, false],
    ];
    for (const [offset, length, ok] of cases) {
      const locks = new ByteRangeLocks();
      assert.ok(granted(locks, A, 10n, 0n));
      assert.equal(granted(locks, B, offset, length), ok, `{10,0} then {${offset},${length}}`);
      const rev = new ByteRangeLocks();
      assert.ok(granted(rev, A, offset, length));
      assert.equal(granted(rev, B, 10n, 0n), ok, `{${offset},${length}} then {10,0}`);
    }
    const zero = new ByteRangeLocks();
    assert.ok(granted(zero, A, 0n, 0n));
    assert.ok(granted(zero, B, 0n, 0n), 'the {0,0} range conflicts with nothing');
    assert.ok(granted(zero, B, U64_MAX, 0n));
    assert.ok(granted(zero, A, U64_MAX, 0n));
  });

  it('an owner stacks shared locks under its exclusive lock but never a second exclusive one', () => {
    const locks = new ByteRangeLocks();
    assert.ok(granted(locks, A, 0n, 10n, true));
    assert.ok(granted(locks, A, 0n, 10n, false));
    assert.ok(granted(locks, A, 0n, 10n, false));
    assert.ok(!granted(locks, A, 0n, 10n, true));
    assert.ok(!granted(locks, B, 0n, 10n, false));
    // Unlock takes the exclusive lock first, then the shared ones; a fourth unlock finds nothing.
    assert.ok(locks.unlock(store, 1, A, 0n, 10n));
    assert.ok(granted(locks, B, 0n, 10n, false), 'only shared locks remain');
    assert.ok(locks.unlock(store, 1, A, 0n, 10n));
    assert.ok(locks.unlock(store, 1, A, 0n, 10n));
    assert.ok(!locks.unlock(store, 1, A, 0n, 10n));
    // A shared lock blocks its own owner's exclusive lock.
    assert.ok(granted(locks, A, 20n, 5n, false));
    assert.ok(!granted(locks, A, 20n, 5n, true));
  });

  it('unlock needs the exact range and the owner', () => {
    const locks = new ByteRangeLocks();
    assert.ok(granted(locks, A, 110n, 4n, false));
    assert.ok(granted(locks, A, 112n, 4n, false));
    assert.equal(locks.unlock(store, 1, A, 110n, 6n), false);
    assert.equal(locks.unlock(store, 1, B, 110n, 4n), false);
    assert.equal(locks.unlock(store, 1, A, 110n, 4n), true);
    assert.equal(locks.locksOf(store, 1).length, 1);
  });

  it('reads and writes: an exclusive lock stops other owners; a shared lock stops every writer', () => {
    const locks = new ByteRangeLocks();
    assert.ok(granted(locks, A, 0n, 100n, true));
    assert.equal(locks.ioConflict(store, 1, A, 50, 10, false), false);
    assert.equal(locks.ioConflict(store, 1, A, 50, 10, true), false);
    assert.equal(locks.ioConflict(store, 1, B, 50, 10, false), true);
    assert.equal(locks.ioConflict(store, 1, B, 50, 10, true), true);
    assert.equal(locks.ioConflict(store, 1, B, 100, 10, true), false);
    assert.equal(locks.ioConflict(store, 1, B, 5, 0, false), false, 'a zero-byte read never conflicts');
    assert.equal(locks.ioConflict(store, 2, B, 50, 10, true), false, 'another inode');
    assert.equal(locks.ioConflict({}, 1, B, 50, 10, true), false, 'the same inode id in another store');
    const shared = new ByteRangeLocks();
    assert.ok(granted(shared, A, 0n, 100n, false));
    assert.equal(shared.ioConflict(store, 1, A, 0, 1, true), true);
    assert.equal(shared.ioConflict(store, 1, B, 0, 1, true), true);
    assert.equal(shared.ioConflict(store, 1, B, 0, 1, false), false);
  });

  it('releasing an owner (its open closed) drops its locks and grants waiters in order', () => {
    const locks = new ByteRangeLocks();
    assert.ok(granted(locks, A, 0n, 10n));
    const C = {};
    const events: string[] = [];
    const waiter = (owner: object, name: string, exclusive: boolean): LockWaiter => ({
      owner,
      client,
      offset: 0n,
      length: 10n,
      exclusive,
      done: (outcome) => events.push(`${name}:${outcome}`),
    });
    locks.wait(store, 1, waiter(B, 'B', true));
    const withdrawC = locks.wait(store, 1, waiter(C, 'C', true));
    assert.deepEqual(events, []);
    locks.releaseOwner(store, 1, A);
    assert.deepEqual(events, ['B:granted'], 'C still conflicts with B');
    withdrawC();
    assert.ok(locks.unlock(store, 1, B, 0n, 10n));
    assert.deepEqual(events, ['B:granted'], 'a withdrawn waiter is never granted');
    assert.equal(locks.heldBy(A), 0);
    assert.equal(locks.heldBy(B), 0);
    assert.equal(locks.locksOf(store, 1).length, 0);
  });

  it('caps locks per owner and per client', () => {
    const locks = new ByteRangeLocks(3, 4);
    for (let i = 0n; i < 3n; i++) assert.ok(granted(locks, A, i * 10n, 1n));
    assert.equal(locks.tryLock(store, 1, A, client, 100n, 1n, true).kind, 'limit');
    assert.ok(granted(locks, B, 200n, 1n));
    assert.equal(locks.tryLock(store, 1, B, client, 300n, 1n, true).kind, 'limit');
    assert.equal(locks.heldByClient(client), 4);
    locks.releaseOwner(store, 1, A);
    assert.equal(locks.heldByClient(client), 1);
    assert.ok(granted(locks, B, 300n, 1n));
  });
});
