import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { crc32c } from '@node-rs/crc32';
import { crc32cCombine } from './crc-combine.js';

describe('crc32cCombine', () => {
  it('gives the CRC32C of a concatenation, whatever the parts and their lengths', () => {
    const lengths = [0, 1, 3, 4, 7, 64, 1000, 4096, 65_536, 1 << 20, (1 << 20) + 13];
    for (const la of lengths) {
      for (const lb of lengths) {
        const a = randomBytes(la);
        const b = randomBytes(lb);
        assert.equal(crc32cCombine(crc32c(a), crc32c(b), lb), crc32c(Buffer.concat([a, b])), `${la} + ${lb}`);
      }
    }
  });

  it('folds many parts in order into the CRC of the whole block', () => {
    const block = randomBytes(4 << 20);
    const cuts = [0, 1 << 20, (2 << 20) + 5, 3 << 20, 4 << 20];
    let crc = 0;
    for (let i = 1; i < cuts.length; i++) {
      const part = block.subarray(cuts[i - 1], cuts[i]);
      crc = crc32cCombine(crc, crc32c(part), part.length);
    }
    assert.equal(crc, crc32c(block));
  });
});
