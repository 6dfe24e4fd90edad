import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SessionTable, type SessionOwner } from './sessions.js';
import { newSession, type Session } from './state.js';

function session(name: string | null, opts: { anonymous?: boolean; state?: Session['state'] } = {}): Session {
  const user = name === null ? null : { name, uid: 1000, gid: 1000, gids: [] };
  return {
    ...newSession(SessionTable.allocateId()),
    state: opts.state ?? 'valid',
    user,
    owner: user,
    identity: { uid: 1000, gid: 1000, gids: [] },
    anonymous: opts.anonymous ?? false,
  };
}

class Owner implements SessionOwner {
  ended: { id: number; why: string }[] = [];
  endSession(s: Session, why: string): Promise<void> {
    this.ended.push({ id: s.id, why });
    return Promise.resolve();
  }
}

describe('SessionTable (PreviousSessionId)', () => {
  it('ends the previous session of the same user, on whichever connection it lives', async () => {
    const t = new SessionTable();
    const a = new Owner();
    const b = new Owner();
    const old = session('alice');
    const fresh = session('alice');
    t.add(old, a);
    t.add(fresh, b);
    assert.equal(await t.endPrevious(old.id, fresh, 'ALICE'), true);
    assert.deepEqual(
      a.ended.map((e) => e.id),
      [old.id],
    );
    assert.equal(t.size, 1);
    // Gone: a second reconnect naming it changes nothing.
    assert.equal(await t.endPrevious(old.id, fresh, 'alice'), false);
  });

  it("leaves another user's session, an anonymous one, the session itself and unknown ids alone", async () => {
    const t = new SessionTable();
    const o = new Owner();
    const bob = session('bob');
    const anon = session(null, { anonymous: true });
    const mine = session('alice');
    for (const s of [bob, anon, mine]) t.add(s, o);
    assert.equal(await t.endPrevious(bob.id, mine, 'alice'), false);
    assert.equal(await t.endPrevious(anon.id, mine, 'alice'), false);
    assert.equal(await t.endPrevious(mine.id, mine, 'alice'), false);
    assert.equal(await t.endPrevious(0, mine, 'alice'), false);
    assert.equal(await t.endPrevious(999_999_999, mine, 'alice'), false);
    assert.deepEqual(o.ended, []);
    assert.equal(t.size, 3);
  });

  it('remove() forgets only the session it was given', () => {
    const t = new SessionTable();
    const s = session('alice');
    t.add(s, new Owner());
    t.remove({ ...s });
    assert.equal(t.size, 1);
    t.remove(s);
    assert.equal(t.size, 0);
  });
});
