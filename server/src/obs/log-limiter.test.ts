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

  it('tracks at most maxKeys keys: one quiet for an interval makes room, with its summary; past that the others share lines', (t) => {
    t.mock.timers.enable({ apis: ['Date', 'setTimeout'] });
    const { lines, sink } = capture();
    const limiter = new KeyedLogLimiter(pino({}, sink), 'warn', 1, 60_000, 3, 'user');
    limiter.log('a', {}, 'refused');
    limiter.log('a', {}, 'refused'); // suppressed: a's summary is owed
    t.mock.timers.tick(60_000);
    limiter.log('b', {}, 'refused');
    limiter.log('c', {}, 'refused');
    assert.equal(limiter.size, 3);
    // a has been quiet for an interval: d takes its place, and a's summary is written.
    limiter.log('d', {}, 'refused');
    assert.equal(limiter.size, 3);
    assert.deepEqual(
      lines.filter((l) => l.suppressed !== undefined).map((l) => [l.user, l.suppressed]),
      [['a', 1]],
    );
    // b, c and d logged within the interval: a stream of new keys shares one limiter.
    const before = lines.length;
    for (let i = 0; i < 10_000; i++) limiter.log(`u${i}`, {}, 'refused');
    assert.equal(limiter.size, 3, 'bounded whatever stream of keys comes');
    assert.equal(lines.length - before, 1, "the others' one line of the interval");
    limiter.flush();
    assert.equal(lines.at(-1)?.suppressed, 9_999, 'and their summary');
  });

  it('more keys than maxKeys, in turn, log no more than (maxKeys + 1) * burst lines an interval, and summaries', () => {
    const { lines, sink } = capture();
    const limiter = new KeyedLogLimiter(pino({}, sink), 'warn', 5, 60_000, 256, 'user');
    for (let round = 0; round < 20; round++) for (let u = 0; u < 257; u++) limiter.log(`u${u}`, {}, 'refused');
    limiter.flush();
    const plain = lines.filter((l) => l.suppressed === undefined).length;
    assert.ok(plain <= 257 * 5, `${plain} lines for ${20 * 257} refusals`);
    assert.equal(lines.filter((l) => l.suppressed !== undefined).reduce((n, l) => n + l.suppressed!, 0) + plain, 20 * 257, 'each counted');
  });

  it('refuses a cap that is not a positive integer', () => {
    assert.throws(() => new KeyedLogLimiter(undefined, 'warn', 1, 1000, 0, 'user'), RangeError);
  });
});
