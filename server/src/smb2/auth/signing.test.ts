import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { smb2Signature, verifySmb2Signature } from './signing.js';

// MS-SMB2 has no 2.x signing example, and Microsoft's signing blog gives vectors for 3.x only, so
// this one was computed independently with OpenSSL over the message with its Signature zeroed:
//   openssl dgst -sha256 -mac HMAC -macopt hexkey:000102030405060708090a0b0c0d0e0f msg-zeroed.bin
// The message: an SMB2 TREE_CONNECT response header (flags SERVER_TO_REDIR|SIGNED, MessageId 5,
// TreeId 1, SessionId 0xe400000011) with 0xee in its Signature field, and its 16-byte body.
const KEY = Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex');
const MESSAGE = Buffer.from(
  'fe534d42400000000000000003000000090000000000000005000000000000000000000001000000' +
    '1100000000e40000eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee1000010000000000ff011f00',
  'hex',
);
const EXPECTED = '340cd07f57f115312644afb308e23e7b';

describe('MS-SMB2 3.1.4.1 signing (2.0.2 / 2.1)', () => {
  it('is HMAC-SHA256 over the message with the Signature field zeroed, cut to 16 bytes', () => {
    assert.equal(smb2Signature(KEY, MESSAGE).toString('hex'), EXPECTED);
  });

  it("leaves the caller's buffer as it was", () => {
    const copy = Buffer.from(MESSAGE);
    smb2Signature(KEY, MESSAGE);
    verifySmb2Signature(KEY, MESSAGE);
    assert.deepEqual(MESSAGE, copy);
  });

  it('accepts a correctly signed message and refuses any change to it', () => {
    const signed = Buffer.from(MESSAGE);
    smb2Signature(KEY, signed).copy(signed, 48);
    assert.equal(verifySmb2Signature(KEY, signed), true);
    for (const at of [0, 20, 47, 48, 63, 64, signed.length - 1]) {
      const bad = Buffer.from(signed);
      bad[at]! ^= 0x01;
      assert.equal(verifySmb2Signature(KEY, bad), false, `byte ${at} flipped`);
    }
    const otherKey = Buffer.from(KEY);
    otherKey[0] = 0xff;
    assert.equal(verifySmb2Signature(otherKey, signed), false);
  });

  it('signs a message inside a larger buffer (a compound element) by its own bytes only', () => {
    const signed = Buffer.from(MESSAGE);
    smb2Signature(KEY, signed).copy(signed, 48);
    const frame = Buffer.concat([Buffer.alloc(4), signed, Buffer.alloc(8, 0xaa)]);
    assert.equal(verifySmb2Signature(KEY, frame.subarray(4, 4 + signed.length)), true);
  });

  it('refuses a message shorter than an SMB2 header', () => {
    assert.equal(verifySmb2Signature(KEY, Buffer.alloc(63)), false);
    assert.throws(() => smb2Signature(KEY, Buffer.alloc(63)), RangeError);
  });
});
