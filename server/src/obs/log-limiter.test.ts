import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import pino from 'pino';
import { KeyedLogLimiter } from './log-limiter.js';

function capture(): { lines: { msg: string; user?: string; suppressed?: number }[]; sink: Writable } {
  const lines: { msg: string; user?: string; suppressed?: number }[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(JSON.parse(chunk.toString()) as (typeof lines)[number]);
      cb();
    },
  });
  return { lines, sink };
}

describe('KeyedLogLimiter', () => {
  it("gives each key its own lines: one key's flood does not hide another's", () => {
    const { lines, sink } = capture();
    const limiter = new KeyedLogLimiter(pino({}, sink), 'warn', 3, 60_000, 10, 'user');
    for (let i = 0; i < 1000; i++) limiter.log('alice', { user: 'alice' }, 'refused');
    limiter.log('bob', { user: 'bob' }, 'refused');
    limiter.flush();
    assert.deepEqual(
      lines.map((l) => [l.user, l.suppressed]),
      [
        ['alice', undefined],
        ['alice', undefined],
        ['alice', undefined],
        ['bob', undefined],
        ['alice', 997],
      ],
    );
  });

  it('tracks at most maxKeys keys, dropping the least recently used with its summary', () => {
    const { lines, sink } = capture();
    const limiter = new KeyedLogLimiter(pino({}, sink), 'warn', 1, 60_000, 3, 'user');
    limiter.log('a', {}, 'refused');
    limiter.log('a', {}, 'refused'); // suppressed: a's summary is owed
    limiter.log('b', {}, 'refused');
    limiter.log('c', {}, 'refused');
    limiter.log('a', {}, 'refused'); // a used last: b is the oldest now
    assert.equal(limiter.size, 3);
    limiter.log('d', {}, 'refused');
    assert.equal(limiter.size, 3);
    for (let i = 0; i < 10_000; i++) limiter.log(`u${i}`, {}, 'refused');
    assert.equal(limiter.size, 3, 'bounded whatever stream of keys comes');
    // a's summary was written when it was dropped (2 left out), not lost.
    const summaries = lines.filter((l) => l.suppressed !== undefined);
    assert.deepEqual(
      summaries.map((l) => [l.user, l.suppressed]),
      [['a', 2]],
    );
    assert.equal(lines.length - summaries.length, 3 + 1 + 10_000, 'a, b, c, d and each new key: one line each');
  });

  it('refuses a cap that is not a positive integer', () => {
    assert.throws(() => new KeyedLogLimiter(undefined, 'warn', 1, 1000, 0, 'user'), RangeError);
  });
});
