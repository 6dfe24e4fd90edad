import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Tally } from './tally.js';

describe('Tally', () => {
  it('counts per key and forgets a key whose count is gone, also past zero', () => {
    const t = new Tally<string>();
    t.add('a');
    t.add('a');
    t.add('b', 3);
    assert.deepEqual([t.get('a'), t.get('b'), t.get('c'), t.size], [2, 3, 0, 2]);
    t.add('a', -1);
    t.add('b', -5);
    assert.deepEqual([t.get('a'), t.get('b'), t.size], [1, 0, 1]);
    t.add('a', -1);
    assert.equal(t.size, 0);
  });
});
