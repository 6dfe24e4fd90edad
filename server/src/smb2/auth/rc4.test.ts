import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Rc4, rc4 } from './rc4.js';

// RFC 6229 §2: key streams (the encryption of zeros) at the given offsets.
const VECTORS: { key: string; at: Record<number, string> }[] = [
  { key: '0102030405', at: { 0: 'b2396305f03dc027ccc3524a0a1118a8', 16: '6982944f18fc82d589c403a47a0d0919' } },
  { key: '01020304050607', at: { 0: '293f02d47f37c9b633f2af5285feb46b', 16: 'e620f1390d19bd84e2e0fd752031afc1' } },
  {
    key: '0102030405060708090a0b0c0d0e0f10',
    at: { 0: '9ac7cc9a609d1ef7b2932899cde41b97', 16: '5248c4959014126a6e8a84f11d1a9e1c', 240: '065902e4b620f6cc36c8589f66432f2b' },
  },
];

describe('RC4 (RFC 6229 test vectors)', () => {
  for (const v of VECTORS) {
    it(`key ${v.key}`, () => {
      const stream = rc4(Buffer.from(v.key, 'hex'), Buffer.alloc(256));
      for (const [offset, hex] of Object.entries(v.at)) {
        assert.equal(stream.subarray(Number(offset), Number(offset) + 16).toString('hex'), hex, `offset ${offset}`);
      }
    });
  }

  it('continues its key stream across calls (a sealing handle)', () => {
    const key = Buffer.from('0102030405060708090a0b0c0d0e0f10', 'hex');
    const h = new Rc4(key);
    const parts = [h.transform(Buffer.alloc(7)), h.transform(Buffer.alloc(9)), h.transform(Buffer.alloc(240))];
    assert.deepEqual(Buffer.concat(parts), rc4(key, Buffer.alloc(256)));
  });

  it('decrypts what it encrypted', () => {
    const key = Buffer.from('secret key');
    const text = Buffer.from('the quick brown fox');
    assert.deepEqual(rc4(key, rc4(key, text)), text);
  });

  it('refuses an empty key', () => {
    assert.throws(() => new Rc4(Buffer.alloc(0)), RangeError);
  });
});
