import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { createLogger, setLogLevel } from './logger.js';

describe('setLogLevel', () => {
  it('changes the level of the root logger and of children made before the change', () => {
    const lines: { level: string; msg: string; store?: string }[] = [];
    const out = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l) as (typeof lines)[number]);
        done();
      },
    });
    const root = createLogger('info', out);
    const child = root.child({ store: 'default' });
    child.debug('hidden');
    setLogLevel(root, 'debug');
    child.debug('shown');
    root.trace('hidden too');
    setLogLevel(root, 'error');
    child.warn('hidden again');
    root.error('shown again');
    assert.deepEqual(
      lines.map((l) => [l.level, l.msg, l.store]),
      [
        ['debug', 'shown', 'default'],
        ['error', 'shown again', undefined],
      ],
    );
    assert.equal(child.level, 'error');
  });

  it('rejects an unknown level, naming the known ones', () => {
    const root = createLogger('info', new Writable({ write: (_c, _e, done) => done() }));
    assert.throws(() => setLogLevel(root, 'verbose'), {
      name: 'RangeError',
      message: /unknown log level "verbose" \(expected one of trace, debug/,
    });
    assert.equal(root.level, 'info');
  });
});
