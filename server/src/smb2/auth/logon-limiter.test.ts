import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LogonLimiter } from './logon-limiter.js';

function limiter(o: { perUser?: number; perAddress?: number; maxKeys?: number } = {}) {
  let t = 1_000_000;
  const l = new LogonLimiter(
    { perUser: o.perUser ?? 3, perAddress: o.perAddress ?? 5, windowMs: 60_000, maxKeys: o.maxKeys ?? 100 },
    () => t,
  );
  return { l, advance: (ms: number) => (t += ms) };
}

describe('failed SMB logon limits', () => {
  it('blocks a user from an address after N failures in the window, other users and addresses not', () => {
    const { l } = limiter();
    for (let i = 0; i < 3; i++) {
      assert.equal(l.blocked('10.0.0.1', 'alice'), false);
      l.failed('10.0.0.1', 'Alice');
    }
    assert.equal(l.blocked('10.0.0.1', 'ALICE'), true, 'names are case-insensitive');
    assert.equal(l.blocked('10.0.0.1', 'bob'), false);
    assert.equal(l.blocked('10.0.0.2', 'alice'), false);
    assert.equal(l.blocked('10.0.0.1'), false, 'the address is under its own limit');
  });

  it('blocks an address after N failures whatever the user names (spraying)', () => {
    const { l } = limiter();
    for (let i = 0; i < 5; i++) l.failed('10.0.0.1', `user${i}`);
    assert.equal(l.blocked('10.0.0.1'), true);
    assert.equal(l.blocked('10.0.0.1', 'carol'), true);
    assert.equal(l.blocked('10.0.0.9', 'carol'), false);
  });

  it('a window ends: the key is free again; a success forgets the user failures', () => {
    const { l, advance } = limiter();
    for (let i = 0; i < 3; i++) l.failed('10.0.0.1', 'alice');
    advance(59_999);
    assert.equal(l.blocked('10.0.0.1', 'alice'), true);
    advance(1);
    assert.equal(l.blocked('10.0.0.1', 'alice'), false);
    l.failed('10.0.0.1', 'bob');
    l.failed('10.0.0.1', 'bob');
    l.succeeded('10.0.0.1', 'BOB');
    l.failed('10.0.0.1', 'bob');
    assert.equal(l.blocked('10.0.0.1', 'bob'), false, 'counting starts over after a success');
  });

  it('counts a logon as failed from the start of its password check: logons checked at once cannot all pass', () => {
    const { l } = limiter({ perUser: 3, perAddress: 100 });
    // Twelve logons for alice begun before any has answered (several connections at once).
    const begun = Array.from({ length: 12 }, () => l.begin('10.0.0.1', 'alice'));
    assert.deepEqual(
      begun.map((b, i) => (b ? i : -1)).filter((i) => i >= 0),
      [0, 1, 2],
    );
    // One of the three succeeds: alice's count is forgotten, the address is not charged for it.
    l.succeeded('10.0.0.1', 'alice');
    assert.equal(l.begin('10.0.0.1', 'alice'), true);
    const { l: l2 } = limiter({ perUser: 100, perAddress: 2 });
    assert.equal(l2.begin('10.0.0.1', 'a'), true);
    l2.succeeded('10.0.0.1', 'a');
    assert.equal(l2.begin('10.0.0.1', 'b'), true);
    assert.equal(l2.begin('10.0.0.1', 'c'), true, 'the success is not charged to the address');
    assert.equal(l2.begin('10.0.0.1', 'd'), false);
  });

  it('holds at most maxKeys counters: ended windows go first, then the oldest', () => {
    const { l, advance } = limiter({ maxKeys: 10, perAddress: 1000 });
    for (let i = 0; i < 4; i++) l.failed('10.0.0.1', `old${i}`); // 5 keys: the address and 4 users
    advance(60_000);
    for (let i = 0; i < 100; i++) l.failed(`10.0.1.${i}`, 'x');
    assert.equal(l.size, 10);
    l.failed('10.0.0.7', 'eve');
    assert.equal(l.size, 10);
    assert.equal(l.blocked('10.0.0.7', 'eve'), false);
  });

  it('reports the first refusal of each blocking window only: a client retrying past the limit gets one log line', () => {
    const { l, advance } = limiter();
    for (let i = 0; i < 3; i++) l.failed('10.0.0.1', 'alice');
    assert.equal(l.firstRefusal('10.0.0.1', 'alice'), true);
    assert.equal(l.firstRefusal('10.0.0.1', 'ALICE'), false);
    assert.equal(l.firstRefusal('10.0.0.1', 'alice'), false);
    for (let i = 0; i < 2; i++) l.failed('10.0.0.1', `u${i}`);
    assert.equal(l.firstRefusal('10.0.0.1'), true, 'the address limit is a window of its own');
    assert.equal(l.firstRefusal('10.0.0.1', 'alice'), false, 'the address window blocks first, and was reported');
    advance(60_000);
    for (let i = 0; i < 3; i++) l.failed('10.0.0.1', 'alice');
    assert.equal(l.firstRefusal('10.0.0.1', 'alice'), true, 'a new window is reported again');
  });
});
