import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { FrameError } from '../wire/errors.js';
import { RequestBudget } from '../wire/limits.js';
import { markedRecord, MAX_FRAGMENTS, RecordReader, recordMark } from './record.js';

function frame(payload: Buffer, fragments = 1): Buffer {
  const parts: Buffer[] = [];
  const size = Math.ceil(payload.length / fragments) || 0;
  for (let i = 0; i < fragments; i++) {
    const piece = payload.subarray(i * size, i === fragments - 1 ? payload.length : (i + 1) * size);
    const h = Buffer.alloc(4);
    h.writeUInt32BE(((i === fragments - 1 ? 0x80000000 : 0) | piece.length) >>> 0);
    parts.push(h, piece);
  }
  return Buffer.concat(parts);
}

describe('RFC 5531 §11 record marking', () => {
  it('reassembles a record split at every offset', () => {
    const payload = Buffer.from('0123456789abcdefghijklmnopqrstuv');
    const wire = frame(payload, 3);
    for (let cut = 0; cut <= wire.length; cut++) {
      const r = new RecordReader(1024);
      const got = [...r.push(wire.subarray(0, cut)), ...r.push(wire.subarray(cut))];
      assert.equal(got.length, 1, `cut at ${cut}`);
      assert.deepEqual(got[0], payload);
      assert.equal(r.pending, 0);
    }
  });

  it('a reply marked in one buffer is the same bytes as its mark and body, and reads back', () => {
    for (const len of [0, 1, 3, 4, 150, 4096]) {
      const body = Buffer.from(Array.from({ length: len }, (_, i) => (i * 7) & 0xff));
      const one = markedRecord(body);
      assert.deepEqual(one, Buffer.concat([recordMark(len), body]));
      assert.deepEqual(one, frame(body));
      const got = new RecordReader(8192).push(one);
      assert.equal(got.length, 1);
      assert.deepEqual(got[0], body);
    }
  });

  it('returns several records from one chunk, in order', () => {
    const a = Buffer.from('first record');
    const b = Buffer.from('second');
    const got = new RecordReader(1024).push(Buffer.concat([frame(a), frame(b, 2)]));
    assert.deepEqual(got, [a, b]);
  });

  it('rejects a record over the cap from its header alone, before buffering the body', () => {
    const r = new RecordReader(1000);
    const h = Buffer.alloc(4);
    h.writeUInt32BE((0x80000000 | 1001) >>> 0);
    assert.throws(() => r.push(h), FrameError);
  });

  it('counts every fragment of a record against the cap', () => {
    const r = new RecordReader(100);
    assert.throws(() => r.push(frame(Buffer.alloc(150), 3)), FrameError);
  });

  it('rejects an empty non-final fragment', () => {
    assert.throws(() => new RecordReader(100).push(Buffer.from([0, 0, 0, 0])), FrameError);
  });

  it('keeps nothing of a chunk: the caller may overwrite it at once (a reused socket buffer)', () => {
    const a = Buffer.from('a record that arrives in pieces');
    const b = Buffer.from('and another');
    const wire = Buffer.concat([frame(a, 2), frame(b)]);
    const r = new RecordReader(1024);
    const chunk = Buffer.alloc(7);
    const got: Buffer[] = [];
    for (let pos = 0; pos < wire.length; pos += chunk.length) {
      const n = wire.copy(chunk, 0, pos, Math.min(wire.length, pos + chunk.length));
      got.push(...r.push(chunk.subarray(0, n)));
      chunk.fill(0xee);
    }
    assert.deepEqual(got, [a, b]);
  });

  it('sets aside no more than 64 KiB for a large record whose header arrived without its bytes', () => {
    const sizes: number[] = [];
    const r = new RecordReader(4 << 20, (size) => {
      sizes.push(size);
      return Buffer.alloc(size);
    });
    const payload = Buffer.alloc(1 << 20);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 0xff;
    const wire = frame(payload);
    // A header and a trickle of data: only the staging buffer exists.
    assert.deepEqual(r.push(wire.subarray(0, 4 + 1000)), []);
    assert.deepEqual(r.push(wire.subarray(4 + 1000, 4 + 30_000)), []);
    assert.deepEqual(sizes, []);
    assert.ok(r.reserved <= 64 * 1024, `${r.reserved} bytes set aside`);
    // Once 64 KiB have come, the record's own buffer is made, with what came before in it.
    assert.deepEqual(r.push(wire.subarray(4 + 30_000, 4 + 70_000)), []);
    assert.deepEqual(sizes, [payload.length]);
    assert.deepEqual(r.push(wire.subarray(4 + 70_000)), [payload]);
    assert.equal(r.pending, 0);
  });

  it('puts a single-fragment record into a buffer of its exact size from the allocator', () => {
    const sizes: number[] = [];
    const r = new RecordReader(1024, (size) => {
      sizes.push(size);
      return Buffer.alloc(size, 0xaa);
    });
    const one = Buffer.from('single fragment');
    const two = Buffer.from('two fragments here');
    assert.deepEqual(r.push(Buffer.concat([frame(one), frame(two, 2)])), [one, two]);
    // The multi-fragment record is assembled from its parts, not from the allocator.
    assert.deepEqual(sizes, [one.length]);
  });

  it('property: any chunking of a stream of records yields the same records', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.uint8Array({ maxLength: 300 }), fc.integer({ min: 1, max: 4 })), { minLength: 1, maxLength: 6 }),
        fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 20 }),
        (records, cuts) => {
          const payloads = records.map(([p]) => Buffer.from(p));
          const wire = Buffer.concat(records.map(([p, f]) => frame(Buffer.from(p), Math.max(1, Math.min(f, p.length)))));
          const budget = new RequestBudget(1 << 20);
          const r = new RecordReader(4096, undefined, { budget });
          const got: Buffer[] = [];
          let pos = 0;
          let i = 0;
          while (pos < wire.length) {
            const n = cuts[i++ % cuts.length]!;
            got.push(...r.push(wire.subarray(pos, pos + n)));
            pos += n;
          }
          assert.deepEqual(got, payloads);
          // Each record holds exactly its length of the budget.
          for (const g of got) budget.release(g.length);
          assert.equal(budget.used, 0);
        },
      ),
    );
  });

  it('fragment bomb: counts fragment headers against the cap and caps fragments per record', () => {
    // 10 one-byte fragments: 10 bytes + 9 further headers = 46 bytes; an 11th makes 51 > 50.
    const r = new RecordReader(50);
    const ten = frame(Buffer.alloc(10, 1), 10);
    assert.deepEqual(r.push(ten), [Buffer.alloc(10, 1)]);
    assert.throws(() => r.push(frame(Buffer.alloc(11, 1), 11)), /fragment headers/);
    // Under a large cap the number of fragments is what stops it.
    const big = new RecordReader(1 << 20);
    const oneByte = Buffer.from([0, 0, 0, 1, 0x42]);
    const bomb = Buffer.concat(Array.from({ length: MAX_FRAGMENTS + 1 }, () => oneByte));
    assert.throws(() => big.push(bomb), /more than 1024 fragments/);
  });

  it('assembles a multi-fragment record into one buffer, whatever the fragment sizes', () => {
    const payload = Buffer.alloc(300_000);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 13) & 0xff;
    const r = new RecordReader(1 << 20);
    const [rec] = r.push(frame(payload, 1000));
    assert.deepEqual(rec, payload);
    // One allocation holds the whole record (not a Buffer per fragment).
    assert.ok(rec.buffer.byteLength < 2 * payload.length + 8192, `${rec.buffer.byteLength}`);
  });

  it('reserves each record from the budget until released, and waits when it is exhausted', () => {
    const budget = new RequestBudget(100_000);
    const a = new RecordReader(100_000, undefined, { budget });
    const b = new RecordReader(100_000, undefined, { budget });
    const big = Buffer.alloc(80_000, 7);
    const [ra] = a.push(frame(big));
    assert.equal(ra!.length, 80_000);
    assert.equal(budget.used, 80_000);
    // b's record does not fit: b keeps what arrived and waits.
    let ready = 0;
    b.onReady = () => ready++;
    assert.deepEqual(b.push(frame(big)), []);
    assert.equal(b.blocked, true);
    assert.equal(budget.pressure, true);
    assert.ok(budget.used <= 80_000 + 80_004, `${budget.used}`);
    // More bytes while blocked are kept, not parsed.
    assert.deepEqual(b.push(frame(Buffer.from('tail'))), []);
    budget.release(80_000);
    assert.equal(ready, 1);
    assert.deepEqual(b.push(Buffer.alloc(0)), [big, Buffer.from('tail')]);
    assert.equal(budget.used, 80_004);
    budget.release(80_004);
    assert.equal(budget.used, 0);
  });

  it('dispose gives back a partial record, a staging buffer and a waiting request', () => {
    const budget = new RequestBudget(200_000);
    const a = new RecordReader(200_000, undefined, { budget });
    const b = new RecordReader(200_000, undefined, { budget });
    const c = new RecordReader(200_000, undefined, { budget });
    a.push(frame(Buffer.alloc(150_000)).subarray(0, 100_000)); // partial, its buffer made
    assert.equal(a.midRecord, true);
    b.push(frame(Buffer.alloc(150_000)).subarray(0, 70_000)); // waits: 150 000 + 150 000 > 200 000
    assert.equal(b.blocked, true);
    c.push(frame(Buffer.alloc(150_000)).subarray(0, 1000)); // staging only
    assert.ok(budget.used > 150_000);
    for (const r of [b, a, c]) r.dispose();
    assert.equal(budget.used, 0);
    assert.equal(budget.waiting, 0);
  });
});
