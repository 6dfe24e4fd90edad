import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DecodeError } from '../wire/errors.js';
import { padded4, XdrReader, XdrWriter, xdrOpaqueSize } from './xdr.js';

describe('XDR fixed-length opaque padding', () => {
  it('pads to four bytes, also for lengths of 2^31 and more (no int32 wrap-around)', () => {
    assert.deepEqual([0, 1, 2, 3, 4, 5].map(padded4), [0, 4, 4, 4, 4, 8]);
    assert.equal(padded4(2 ** 31), 2 ** 31);
    assert.equal(padded4(2 ** 31 + 1), 2 ** 31 + 4);
    assert.equal(padded4(2 ** 32 - 1), 2 ** 32);
    assert.equal(xdrOpaqueSize(2 ** 31 + 1), 2 ** 31 + 8);
  });

  it('a length of 2^31 and more in a short buffer is a decode error, and the cursor does not move', () => {
    for (const n of [2 ** 31, 2 ** 31 + 1, 2 ** 32 - 1]) {
      const r = new XdrReader(Buffer.alloc(64));
      assert.throws(() => r.fixed(n), DecodeError);
      assert.equal(r.pos, 0);
    }
  });

  it('round trips with zeroed padding', () => {
    const w = new XdrWriter(16);
    w.fixed(Buffer.from([1, 2, 3, 4, 5]));
    const out = w.finish();
    assert.deepEqual([...out], [1, 2, 3, 4, 5, 0, 0, 0]);
    assert.deepEqual([...new XdrReader(out).fixed(5)], [1, 2, 3, 4, 5]);
  });
});
