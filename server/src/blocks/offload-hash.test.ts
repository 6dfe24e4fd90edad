import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import { OffloadedSha256, offloadedDigests } from './offload-hash.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('OffloadedSha256 (the S3 client signature hash)', () => {
  it('hashes a large payload in shared memory (on the worker) exactly as node:crypto does', async () => {
    const shared = Buffer.from(new SharedArrayBuffer(4 * 1024 * 1024));
    for (let i = 0; i < shared.length; i++) shared[i] = (i * 13) & 0xff;
    const view = shared.subarray(1000, shared.length - 77);
    const before = offloadedDigests();
    const h = new OffloadedSha256();
    h.update(view);
    assert.equal(hex(await h.digest()), createHash('sha256').update(view).digest('hex'));
    assert.equal(offloadedDigests(), before + 1, 'the worker computed it');
    // Several at once each get their own digest.
    const parts = [0, 1, 2].map((k) => shared.subarray(k * 1024 * 1024, (k + 1) * 1024 * 1024));
    const digests = await Promise.all(
      parts.map((p) => {
        const x = new OffloadedSha256();
        x.update(p);
        return x.digest();
      }),
    );
    digests.forEach((d, k) => assert.equal(hex(d), createHash('sha256').update(parts[k]!).digest('hex')));
  });

  it('hashes strings, small and ordinary buffers, and several chunks, in place', async () => {
    const h = new OffloadedSha256();
    h.update('AWS4-HMAC-SHA256\n');
    h.update(Buffer.alloc(1 << 20, 7));
    h.update(new Uint8Array([1, 2, 3]));
    const before = offloadedDigests();
    const want = createHash('sha256')
      .update('AWS4-HMAC-SHA256\n')
      .update(Buffer.alloc(1 << 20, 7))
      .update(new Uint8Array([1, 2, 3]))
      .digest('hex');
    assert.equal(hex(await h.digest()), want);
    assert.equal(offloadedDigests(), before, 'several chunks, or ordinary memory: hashed in place');
    h.reset();
    assert.equal(hex(await h.digest()), createHash('sha256').digest('hex'));
  });

  it('is an HMAC when given a secret (the signing key chain)', async () => {
    const h = new OffloadedSha256('AWS4secret');
    h.update('20261121');
    assert.equal(hex(await h.digest()), createHmac('sha256', 'AWS4secret').update('20261121').digest('hex'));
  });
});
