import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BufferPool, BufferPools, isPageAligned } from './buffer-pool.js';

describe('BufferPool', () => {
  it('hands a given-back buffer out again instead of making a new one', () => {
    const pool = new BufferPool(1024, 4);
    const a = pool.take(1000);
    assert.equal(a.length, 1000);
    pool.give(a);
    const b = pool.take(1024);
    assert.equal(b.buffer, a.buffer);
    assert.equal(pool.created, 1);
  });

  it('says which buffers are page-aligned (what O_DIRECT takes): shared pool buffers of a multiple of 64 KiB', () => {
    const b = new BufferPool(64 * 1024, 1, true).take(64 * 1024);
    assert.equal(isPageAligned(b), true);
    assert.equal(isPageAligned(b.subarray(4096)), true, 'a view at a whole page');
    assert.equal(isPageAligned(b.subarray(512)), false, 'a view inside a page');
    assert.equal(isPageAligned(new BufferPool(32 * 1024, 1, true).take(32 * 1024)), false, 'a plain SharedArrayBuffer');
    assert.equal(isPageAligned(new BufferPool(64 * 1024, 1).take(64 * 1024)), false, 'not shared');
    assert.equal(isPageAligned(Buffer.from(new SharedArrayBuffer(64 * 1024))), false, 'shared, not from a pool');
  });

  it('ignores a buffer given back twice, so two callers never share one', () => {
    const pool = new BufferPool(64, 4);
    const a = pool.take(64);
    pool.give(a);
    pool.give(a);
    assert.equal(pool.idle, 1);
    const x = pool.take(64);
    const y = pool.take(64);
    assert.notEqual(x.buffer, y.buffer);
  });

  it('ignores buffers it did not make, and serves larger sizes with buffers of their own', () => {
    const pool = new BufferPool(64, 4);
    pool.give(Buffer.alloc(64));
    assert.equal(pool.idle, 0);
    const big = pool.take(100);
    assert.equal(big.length, 100);
    pool.give(big);
    assert.equal(pool.idle, 0);
    assert.equal(pool.created, 0);
  });

  it('keeps at most maxFree idle buffers', () => {
    const pool = new BufferPool(16, 2);
    const bufs = [pool.take(16), pool.take(16), pool.take(16)];
    for (const b of bufs) pool.give(b);
    assert.equal(pool.idle, 2);
  });

  it('BufferPools: one pool per size, keeping about keepBytes idle', () => {
    const pools = new BufferPools(4096);
    assert.equal(pools.forSize(1024), pools.forSize(1024));
    const small = pools.forSize(1024);
    const bufs = Array.from({ length: 6 }, () => small.take(1024));
    for (const b of bufs) small.give(b);
    assert.equal(small.idle, 4);
    // A size larger than keepBytes still keeps one.
    const big = pools.forSize(8192);
    big.give(big.take(8192));
    assert.equal(big.idle, 1);
  });

  it('BufferPools: keeps as many as are busy at once while busy, and about keepBytes once idle', () => {
    const pools = new BufferPools(2048, false, 6);
    const pool = pools.forSize(1024);
    // Two bursts of 6 buffers at once: the second is served by the first's buffers.
    for (let round = 0; round < 2; round++) {
      const bufs = Array.from({ length: 6 }, () => pool.take(1024));
      for (const b of bufs) pool.give(b);
    }
    assert.equal(pool.created, 6);
    assert.equal(pool.idle, 6);
    // Not idle long enough: all kept; idle long enough: down to keepBytes (2 of 1 KiB).
    const now = Date.now();
    assert.equal(pools.trimIdle(60_000, now), 0);
    assert.equal(pool.idle, 6);
    assert.equal(pools.trimIdle(60_000, now + 60_000), 4);
    assert.equal(pool.idle, 2);
    // Busy again: the pool grows back to what is in use, and no further.
    const again = Array.from({ length: 6 }, () => pool.take(1024));
    for (const b of again) pool.give(b);
    assert.equal(pool.created, 10);
    assert.equal(pool.idle, 6);
  });
});
