// The lease break state machine (lease.ts) on its own: a lease with one open whose connection
// records the notifications it is sent.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { MetadataStore } from '../meta/store.js';
import { Caching, OpenTable } from '../vfs/locks/opens.js';
import { Lease, leaseIdOf, LeaseTable } from './lease.js';
import type { Open, Session } from './state.js';
import { NtStatus, SmbStatusError } from './status.js';

const R = Caching.READ;
const RH = Caching.READ | Caching.HANDLE;
const RWH = Caching.READ | Caching.WRITE | Caching.HANDLE;

interface Note {
  from: number;
  to: number;
  ack: boolean;
}

function lease(state: number, timeoutMs = 5000): { lease: Lease; notes: Note[]; later: (send: () => void) => void; flush: () => void } {
  const notes: Note[] = [];
  const rec = new OpenTable().add({} as MetadataStore, 1, 1, 7, null);
  const l = new Lease(new LeaseTable(), 'k', Buffer.alloc(16, 1), rec.file, state, timeoutMs);
  const open = {
    expire: null,
    notify: (_cmd: number, body: Buffer) => {
      notes.push({ from: body.readUInt32LE(24), to: body.readUInt32LE(28), ack: (body.readUInt32LE(4) & 1) === 1 });
      return true;
    },
  } as unknown as Open;
  l.opens.add(open);
  // What the connection sends after an acknowledgment's response: held until flush().
  const queued: (() => void)[] = [];
  return { lease: l, notes, later: (send) => queued.push(send), flush: () => queued.splice(0).forEach((f) => f()) };
}

/** Has `p` settled by the time the current microtasks ran? */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(() => (done = true));
  await new Promise((r) => setImmediate(r));
  return done;
}

const statusOf = (f: () => void): number => {
  try {
    f();
    return NtStatus.SUCCESS;
  } catch (e) {
    assert.ok(e instanceof SmbStatusError);
    return e.status;
  }
};

describe('lease break state machine', () => {
  it('a break asked during a break sends nothing, then the break goes on in steps after each ack (RWH -> RH -> R -> none)', async () => {
    const { lease: l, notes, later, flush } = lease(RWH);
    const first = l.breakTo(RH);
    assert.deepEqual(notes, [{ from: RWH, to: RH, ack: true }]);
    assert.ok(l.breaking);
    const second = l.breakTo(Caching.NONE);
    assert.equal(notes.length, 1, 'no second notification while one is outstanding');
    assert.equal(l.state, RWH, 'the lease keeps its state until the ack');

    l.acknowledge(RH, later);
    assert.equal(l.state, RH);
    assert.ok(await settled(first), 'the first break is over');
    assert.ok(!(await settled(second)), 'the second one is not');
    assert.equal(notes.length, 1, 'the next step goes out after the response');
    flush();
    assert.deepEqual(notes[1], { from: RH, to: R, ack: true }, 'stepped through read caching');
    assert.ok(l.breaking);

    l.acknowledge(R, later);
    assert.equal(l.state, Caching.NONE);
    assert.ok(!l.breaking);
    assert.ok(await settled(second));
    flush();
    assert.deepEqual(notes[2], { from: R, to: Caching.NONE, ack: false }, 'the last step needs no ack');
  });

  it('an ack keeping more than the break asked is REQUEST_NOT_ACCEPTED and the break goes on; no break: UNSUCCESSFUL', async () => {
    const { lease: l, later } = lease(RWH);
    assert.equal(
      statusOf(() => l.acknowledge(R, later)),
      NtStatus.UNSUCCESSFUL,
    );
    const p = l.breakTo(RH);
    assert.equal(
      statusOf(() => l.acknowledge(RWH, later)),
      NtStatus.REQUEST_NOT_ACCEPTED,
    );
    assert.ok(l.breaking);
    assert.equal(l.state, RWH);
    assert.ok(!(await settled(p)));
    // Less than asked is fine.
    l.acknowledge(R, later);
    assert.equal(l.state, R);
    assert.ok(!l.breaking);
    assert.ok(await settled(p));
    assert.equal(
      statusOf(() => l.acknowledge(R, later)),
      NtStatus.UNSUCCESSFUL,
      'acknowledged twice',
    );
  });

  it('an unacknowledged break times out to none and wakes every waiter', async () => {
    const { lease: l } = lease(RWH, 50);
    const a = l.breakTo(RH);
    const b = l.idle();
    const started = Date.now();
    await Promise.all([a, b]);
    assert.ok(Date.now() - started >= 40);
    assert.equal(l.state, Caching.NONE);
    assert.ok(!l.breaking);
  });

  it('a waiter for write caching alone does not wait for an RH break, one for all of it does', async () => {
    const { lease: l, notes, later } = lease(RH);
    const dataChange = l.breakTo(Caching.NONE, Caching.WRITE);
    assert.deepEqual(notes, [{ from: RH, to: Caching.NONE, ack: true }]);
    assert.ok(await settled(dataChange));
    const rename = l.breakTo(R);
    assert.ok(!(await settled(rename)));
    l.acknowledge(Caching.NONE, later);
    assert.ok(await settled(rename));
  });

  it('read caching alone breaks at once without an ack; the last open gone ends a break', async () => {
    const { lease: l, notes } = lease(R);
    await l.breakTo(Caching.NONE);
    assert.deepEqual(notes, [{ from: R, to: Caching.NONE, ack: false }]);
    assert.equal(l.state, Caching.NONE);
    const other = lease(RWH).lease;
    const p = other.breakTo(R);
    other.finish(Caching.NONE);
    assert.ok(await settled(p));
    assert.ok(!other.breaking);
  });
});

describe('lease ids (leaseIdOf)', () => {
  it("a lease's id names its client, key and owner: one user in any case, each guest or anonymous session on its own", () => {
    const guid = Buffer.alloc(16, 0xc1);
    const key = Buffer.alloc(16, 0x4b);
    const session = (id: number, name: string | null) => ({ id, owner: name === null ? null : { name } }) as unknown as Session;
    const alice = leaseIdOf(guid, key, session(1, 'Alice'));
    assert.equal(leaseIdOf(guid, key, session(2, 'alice')), alice, 'another session of the same user');
    assert.notEqual(leaseIdOf(guid, key, session(1, 'mallory')), alice);
    assert.notEqual(leaseIdOf(guid, key, session(3, null)), leaseIdOf(guid, key, session(4, null)), 'two guests');
    const rec = new OpenTable().add({} as MetadataStore, 1, 1, 7, null);
    const l = new Lease(new LeaseTable(), alice, key, rec.file, R, 5000);
    assert.equal(l.clientGuid, guid.toString('hex'));
    assert.equal(l.user, 'alice');
    assert.equal(new Lease(new LeaseTable(), leaseIdOf(guid, key, session(3, null)), key, rec.file, R, 5000).user, null);
  });
});
