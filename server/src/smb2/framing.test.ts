import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FrameError } from '../wire/errors.js';
import { RequestBudget } from '../wire/limits.js';
import { DirectTcpFramer, directTcpHeader, replyEstimate } from './framing.js';

const framed = (body: Buffer): Buffer => Buffer.concat([directTcpHeader(body.length), body]);

describe('DirectTcpFramer', () => {
  it('splits frames at any chunk boundary', () => {
    const bodies = [Buffer.alloc(70, 1), Buffer.alloc(5, 2), Buffer.alloc(300, 3)];
    const wire = Buffer.concat(bodies.map(framed));
    for (let cut = 1; cut < wire.length; cut += 7) {
      const got: Buffer[] = [];
      const f = new DirectTcpFramer(1024, (b) => got.push(b));
      f.push(wire.subarray(0, cut));
      f.push(wire.subarray(cut));
      assert.deepEqual(got, bodies);
      assert.equal(f.partialFrame, -1);
    }
  });

  it('refuses a length past the cap and garbage before buffering anything', () => {
    const f = new DirectTcpFramer(1024, () => assert.fail('no frame'));
    assert.throws(() => f.push(directTcpHeader(1025)), FrameError);
    assert.throws(() => new DirectTcpFramer(1024, () => undefined).push(Buffer.from([0x85, 0, 0, 4])), FrameError);
  });

  it('reserves each frame from the budget, waits when it is spent, and gives everything back on dispose', () => {
    const budget = new RequestBudget(1000);
    const got: Buffer[] = [];
    const a = new DirectTcpFramer(1024, (b) => got.push(b), { budget });
    a.push(framed(Buffer.alloc(600)));
    assert.equal(got.length, 1);
    assert.equal(budget.used, 600); // kept until the caller releases it
    const b = new DirectTcpFramer(1024, (x) => got.push(x), { budget });
    let ready = 0;
    b.onReady = () => ready++;
    b.push(framed(Buffer.alloc(500, 7)));
    assert.equal(b.blocked, true);
    assert.equal(got.length, 1);
    budget.release(600); // the first frame answered
    assert.equal(ready, 1);
    b.push(Buffer.alloc(0));
    assert.equal(got.length, 2);
    assert.ok(got[1]!.equals(Buffer.alloc(500, 7)));
    budget.release(500);
    // A partial frame's reservation goes back when the connection goes.
    const c = new DirectTcpFramer(1024, () => assert.fail('incomplete'), { budget });
    c.push(framed(Buffer.alloc(800)).subarray(0, 100));
    assert.equal(budget.used, 800);
    assert.ok(c.partialFrame > 0);
    c.dispose();
    assert.equal(budget.used, 0);
  });
});

describe('replyEstimate', () => {
  function element(command: number, body: Buffer, next = 0): Buffer {
    const h = Buffer.alloc(64);
    h.writeUInt32LE(0x424d53fe, 0);
    h.writeUInt16LE(command, 12);
    h.writeUInt32LE(next, 20);
    return Buffer.concat([h, body]);
  }
  it('counts READ lengths across a compound, each at most maxIo', () => {
    const read = (len: number): Buffer => {
      const b = Buffer.alloc(48);
      b.writeUInt32LE(len, 4);
      return b;
    };
    const one = element(8, read(1 << 20));
    assert.equal(replyEstimate(one, 1 << 20), 1024 + (1 << 20));
    const two = Buffer.concat([element(8, read(4 << 20), 112), element(8, read(100))]);
    assert.equal(replyEstimate(two, 1 << 20), 2 * 1024 + (1 << 20) + 100);
    assert.equal(replyEstimate(Buffer.alloc(10), 1 << 20), 0);
  });
});
