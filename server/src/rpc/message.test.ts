import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DecodeError } from '../wire/errors.js';
import { AuthFlavor, decodeAuthSys, decodeCall, encodeAuthSys, encodeCall } from './message.js';
import { XdrReader, XdrWriter } from './xdr.js';

const capture = JSON.parse(readFileSync(new URL('../nfs3/fixtures/libnfs-capture.json', import.meta.url), 'utf8')) as { records: string[] };

describe('RFC 4506 XDR', () => {
  it('round-trips every primitive', () => {
    fc.assert(
      fc.property(
        fc.nat(),
        fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
        fc.boolean(),
        fc.maxSafeNat(),
        fc.uint8Array({ maxLength: 70 }),
        fc.string({ maxLength: 40 }),
        (u, i, b, h, bytes, s) => {
          const w = new XdrWriter(8);
          w.u32(u >>> 0)
            .i32(i)
            .bool(b)
            .u64(h)
            .opaque(bytes)
            .string(s);
          const out = w.finish();
          assert.equal(out.length % 4, 0);
          const r = new XdrReader(out);
          assert.equal(r.u32(), u >>> 0);
          assert.equal(r.i32(), i);
          assert.equal(r.bool(), b);
          assert.equal(r.u64(), h);
          assert.deepEqual(r.opaque(100), Buffer.from(bytes));
          assert.equal(r.string(1000), s);
          assert.equal(r.remaining, 0);
        },
      ),
    );
  });

  it('zeroes padding bytes', () => {
    const w = new XdrWriter(4);
    w.buf.fill(0xff);
    const out = w.opaque(Buffer.from([1])).finish();
    assert.deepEqual(out, Buffer.from([0, 0, 0, 1, 1, 0, 0, 0]));
  });

  it('rejects opaque data over its limit and truncated input with DecodeError', () => {
    const w = new XdrWriter().opaque(Buffer.alloc(65)).finish();
    assert.throws(() => new XdrReader(w).opaque(64), DecodeError);
    assert.throws(() => new XdrReader(w.subarray(0, 10)).opaque(100), DecodeError);
    assert.throws(() => new XdrReader(Buffer.from([0, 0, 0, 2])).bool(), DecodeError);
  });

  it('rejects 64-bit values above 2^53-1', () => {
    assert.throws(() => new XdrReader(Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0])).u64(), DecodeError);
  });
});

describe('RFC 5531 call messages', () => {
  it('round-trips a call with AUTH_SYS', () => {
    const cred = { stamp: 7, machineName: 'client', uid: 1000, gid: 100, gids: [100, 200] };
    const rec = encodeCall(42, 100003, 3, 1, { flavor: AuthFlavor.AUTH_SYS, body: encodeAuthSys(cred) }, Buffer.from([0, 0, 0, 0]));
    const call = decodeCall(rec);
    assert.equal(call.xid, 42);
    assert.equal(call.prog, 100003);
    assert.equal(call.vers, 3);
    assert.equal(call.proc, 1);
    assert.deepEqual(decodeAuthSys(call.credBody), cred);
    assert.equal(call.args.remaining, 4);
  });

  it('rejects AUTH_SYS with more than 16 gids', () => {
    const body = encodeAuthSys({ stamp: 0, machineName: 'x', uid: 1, gid: 1, gids: Array.from({ length: 17 }, (_, i) => i) });
    assert.throws(() => decodeAuthSys(body), DecodeError);
  });

  it('decodes every call captured from libnfs', () => {
    assert.ok(capture.records.length >= 20);
    for (const hex of capture.records) {
      const call = decodeCall(Buffer.from(hex, 'hex'));
      assert.equal(call.rpcVersion, 2);
      assert.ok(call.prog === 100003 || call.prog === 100005, `program ${call.prog}`);
      assert.equal(call.vers, 3);
      assert.equal(call.credFlavor, AuthFlavor.AUTH_SYS);
      const auth = decodeAuthSys(call.credBody);
      assert.equal(auth.uid, 1000);
      assert.equal(auth.gid, 1000);
    }
  });

  it('property: arbitrary bytes decode or raise DecodeError, nothing else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
        try {
          decodeCall(Buffer.from(bytes));
        } catch (e) {
          assert.ok(e instanceof DecodeError, `unexpected ${String(e)}`);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
