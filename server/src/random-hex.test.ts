import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { randomHex } from './random-hex.js';

describe('randomHex', () => {
  it('gives 2n hex digits, never the same value twice across pool refills, and refuses odd sizes', () => {
    const seen = new Set<string>();
    // 3,000 x 8 bytes: the 4 KiB pool is refilled five times (a draw never straddles two pools).
    for (let i = 0; i < 3000; i++) {
      const h = randomHex(i % 3 === 0 ? 4 : 8);
      assert.match(h, i % 3 === 0 ? /^[0-9a-f]{8}$/ : /^[0-9a-f]{16}$/);
      seen.add(h);
    }
    assert.equal(seen.size, 3000);
    // Not stuck on one digit: all 16 appear.
    assert.equal(new Set([...seen].join('')).size, 16);
    for (const bad of [0, -1, 1.5, 4097, Number.NaN]) assert.throws(() => randomHex(bad), RangeError);
  });
});
