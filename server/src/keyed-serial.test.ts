import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KeyedSerial } from './keyed-serial.js';

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('KeyedSerial', () => {
  it('runs the calls of one key one at a time, in order, failed or not; other keys are not held; idle keys are forgotten', async () => {
    const s = new KeyedSerial<number>();
    const log: string[] = [];
    let release!: () => void;
    const first = s.run(1, async () => {
      log.push('a start');
      await new Promise<void>((r) => (release = r));
      log.push('a end');
      throw new Error('a failed');
    });
    const second = s.run(1, async () => {
      log.push('b');
      return 2;
    });
    const other = s.run(2, async () => {
      log.push('other');
      return 3;
    });
    assert.equal(await other, 3);
    await turn();
    assert.deepEqual(log, ['a start', 'other'], 'the second call of key 1 waits; key 2 does not');
    release();
    await assert.rejects(first, /a failed/);
    assert.equal(await second, 2);
    assert.deepEqual(log, ['a start', 'other', 'a end', 'b']);
    await turn();
    assert.equal(s.size, 0);
  });

  it('acquire holds the key until released, in line with run', async () => {
    const s = new KeyedSerial<number>();
    const log: string[] = [];
    const release = await s.acquire(1);
    const after = s.run(1, async () => {
      log.push('run');
    });
    const next = s.acquire(1).then((r) => {
      log.push('acquired');
      return r;
    });
    await turn();
    assert.deepEqual(log, [], 'nothing runs while the key is held');
    release();
    release(); // a second call does nothing
    await after;
    const r2 = await next;
    assert.deepEqual(log, ['run', 'acquired']);
    r2();
    await turn();
    assert.equal(s.size, 0, 'the key is forgotten once released');
  });
  it('acquireNow: the release at once when the key is free, else in line with run and acquire', async () => {
    const s = new KeyedSerial<number>();
    const log: string[] = [];
    const first = s.acquireNow(1);
    assert.equal(typeof first, 'function', 'a free key is taken with no promise');
    const after = s.run(1, async () => {
      log.push('run');
    });
    const second = s.acquireNow(1);
    assert.ok(second instanceof Promise, 'a held key is waited for');
    const next = second.then((r) => {
      log.push('acquired');
      return r;
    });
    await turn();
    assert.deepEqual(log, [], 'nothing runs while the key is held');
    (first as () => void)();
    (first as () => void)(); // a second call does nothing
    await after;
    const r2 = await next;
    assert.deepEqual(log, ['run', 'acquired']);
    r2();
    await turn();
    assert.equal(s.size, 0, 'the key is forgotten once released');
    const again = s.acquireNow(1);
    assert.equal(typeof again, 'function');
    (again as () => void)();
    assert.equal(s.size, 0, 'released at once: forgotten at once');
  });
});
