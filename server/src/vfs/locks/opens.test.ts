import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it, mock } from 'node:test';
import pino from 'pino';
import type { MetadataStore } from '../../meta/store.js';
import {
  AccessBits,
  type CacheHolder,
  Caching,
  OpenTable,
  OpenTableError,
  ShareAccess,
  sharingConflict,
  USER_FULL_LOG_USERS,
} from './opens.js';

const meta = {} as MetadataStore;
const other = {} as MetadataStore;
const R = AccessBits.READ_DATA;
const W = AccessBits.WRITE_DATA;
const D = AccessBits.DELETE;
/** FILE_READ_ATTRIBUTES | SYNCHRONIZE: a stat open. */
const STAT = 0x00100080;
const { READ: SR, WRITE: SW, DELETE: SD } = ShareAccess;

const refusal = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    if (e instanceof OpenTableError) return e.reason;
    throw e;
  }
  return 'ok';
};

describe('share modes (MS-FSA 2.1.5.1.2.1)', () => {
  it('every access against every sharing of an existing open, both ways', () => {
    // [existing access, existing share, new access, new share, conflict]
    const rows: [number, number, number, number, boolean][] = [
      [R, SR, R, SR, false],
      [R, 0, R, SR | SW | SD, true], // existing does not share read
      [R, SR, W, SR | SW, true], // existing does not share write
      [W, SW, R, SW, true], // the existing writer does not share read
      [W, SW | SR, R, SR | SW, false],
      [R, SR, R, 0, true], // new open refuses read to an existing reader
      [D, SD, D, SD, false],
      [D, SR, D, SD, true],
      [R, SR, D, SR | SD, true], // delete needs the existing open to share delete
      [D, SD | SR, R, SR, true], // an existing deleter needs the new open to share delete
      [AccessBits.EXECUTE, 0, R, SR, true], // execute counts as read
      [AccessBits.APPEND_DATA, 0, W, SW, true], // append counts as write
      [STAT, 0, R | W | D, 0, false], // stat opens take no part
      [R | W | D, 0, STAT, 0, false],
    ];
    for (const [ea, es, na, ns, want] of rows) {
      assert.equal(sharingConflict(na, ns, { access: ea, shareAccess: es }), want, JSON.stringify([ea, es, na, ns]));
    }
  });

  it('refuses a conflicting open across owners and admits it after the first one closes', () => {
    const t = new OpenTable();
    const a = t.add(meta, 7, R | W, SR, 'a');
    assert.equal(
      refusal(() => t.add(meta, 7, W, SR | SW, 'b')),
      'sharing-violation',
    );
    assert.equal(t.size, 1, 'a refused open is not registered');
    // Another inode, and the same inode id in another store, are other files.
    t.add(meta, 8, W, 0, 'c');
    t.add(other, 7, W, 0, 'd');
    assert.equal(t.release(a), false);
    assert.equal(
      refusal(() => t.add(meta, 7, W, SR | SW, 'b')),
      'ok',
    );
    assert.equal(t.size, 3);
  });

  it('delete-pending refuses new opens; the last close says the file must go', () => {
    const t = new OpenTable();
    const a = t.add(meta, 1, R | D, SR | SW | SD, 'a');
    const b = t.add(meta, 1, R, SR | SW | SD, 'b');
    a.deleteOnClose = true;
    assert.equal(t.release(a), false, 'b still has it open');
    assert.equal(t.get(meta, 1)?.deletePending, true);
    assert.equal(
      refusal(() => t.add(meta, 1, STAT, SR | SW | SD, 'c')),
      'delete-pending',
    );
    assert.equal(t.release(b), true, 'last close of a delete-pending file');
    assert.equal(t.get(meta, 1), undefined, 'nothing kept for a file without opens');
    assert.equal(
      refusal(() => t.add(meta, 1, R, SR, 'd')),
      'ok',
      'a new file under the same id starts clean',
    );
  });

  it('caps the number of opens', () => {
    const t = new OpenTable({ maxOpens: 2 });
    t.add(meta, 1, R, SR, 'a');
    t.add(meta, 2, R, SR, 'b');
    assert.equal(
      refusal(() => t.add(meta, 3, R, SR, 'c')),
      'too-many-opens',
    );
  });

  it('caps each user at their share of the table, so one user cannot lock the others out', async () => {
    const lines: { msg: string; user?: string; setting?: string; limit?: number }[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(JSON.parse(chunk.toString()) as (typeof lines)[number]);
        done();
      },
    });
    const t = new OpenTable({ maxOpens: 10, maxOpensPerUser: 3, log: pino({}, sink) });
    const mine = [t.add(meta, 1, R, SR, 'a1', 'alice'), t.add(meta, 2, R, SR, 'a2', 'alice'), t.add(meta, 1, R, SR, 'a3', 'alice')];
    assert.equal(
      refusal(() => t.add(meta, 4, R, SR, 'a4', 'alice')),
      'user-opens-full',
      'told apart from a full table',
    );
    // The admin learns of it, and which setting to raise.
    await new Promise((r) => setImmediate(r));
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.user, 'alice');
    assert.equal(lines[0]!.limit, 3);
    assert.equal(lines[0]!.setting, 'adapters.smb.max_opens_per_user');
    // A user who keeps hitting its share does not use up the lines a full table needs.
    lines.length = 0;
    const small = new OpenTable({ maxOpens: 3, maxOpensPerUser: 1, log: pino({}, sink) });
    small.add(meta, 1, R, SR, 'a', 'alice');
    for (let i = 0; i < 10; i++)
      assert.equal(
        refusal(() => small.add(meta, 2, R, SR, 'again', 'alice')),
        'user-opens-full',
      );
    small.add(meta, 3, R, SR, 'b', 'bob');
    small.add(meta, 4, R, SR, 'c', 'carol');
    assert.equal(
      refusal(() => small.add(meta, 5, R, SR, 'd', 'dave')),
      'too-many-opens',
    );
    await new Promise((r) => setImmediate(r));
    assert.ok(
      lines.some((l) => /open table is full/.test(l.msg)),
      'a full table is logged',
    );
    assert.equal(t.size, 3, 'the refused open left nothing behind');
    // Another user, and opens counted under no user, still get in.
    assert.equal(
      refusal(() => t.add(meta, 4, R, SR, 'b1', 'bob')),
      'ok',
    );
    assert.equal(
      refusal(() => t.add(meta, 5, R, SR, 'n1')),
      'ok',
    );
    // A closed open gives its slot back, once.
    t.release(mine[0]!);
    t.release(mine[0]!);
    assert.equal(t.opensOfUser('alice'), 2);
    assert.equal(
      refusal(() => t.add(meta, 6, R, SR, 'a5', 'alice')),
      'ok',
    );
    assert.equal(
      refusal(() => t.add(meta, 7, R, SR, 'a6', 'alice')),
      'user-opens-full',
    );
    for (const r of mine.slice(1)) t.release(r);
    assert.equal(t.opensOfUser('alice'), 1);
  });
});

describe('refusals of a user at its share, in the log', () => {
  it("are rate-limited per user: one user's refusals do not hide another's, and the users tracked are bounded", async () => {
    mock.timers.enable({ apis: ['Date', 'setTimeout'] });
    const lines: { msg: string; user?: string; suppressed?: number }[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(JSON.parse(chunk.toString()) as (typeof lines)[number]);
        done();
      },
    });
    const t = new OpenTable({ maxOpens: 100, maxOpensPerUser: 1, log: pino({}, sink) });
    t.add(meta, 1, R, SR, 'a', 'alice');
    t.add(meta, 2, R, SR, 'b', 'bob');
    for (let i = 0; i < 20; i++)
      assert.equal(
        refusal(() => t.add(meta, 3, R, SR, 'again', 'alice')),
        'user-opens-full',
      );
    for (let i = 0; i < 2; i++)
      assert.equal(
        refusal(() => t.add(meta, 3, R, SR, 'b2', 'bob')),
        'user-opens-full',
      );
    await new Promise((r) => setImmediate(r));
    const of = (user: string): number => lines.filter((l) => l.user === user && l.suppressed === undefined).length;
    assert.equal(of('alice'), 5, "alice's five lines a minute, the rest counted");
    assert.equal(of('bob'), 2, "bob's refusals are logged, though alice used up her lines");
    // A stream of distinct users, each refused (a share of none): bounded. While the users tracked
    // keep being refused, the others share one limiter (five lines a minute); a user quiet for a
    // minute is forgotten when a new one comes, alice first, and her summary is written as she goes.
    t.maxOpensPerUser = 0;
    const aliceSummary = (): (typeof lines)[number] | undefined => lines.find((l) => l.user === 'alice' && l.suppressed !== undefined);
    const before = lines.length;
    for (let users = 0; users < 2 * USER_FULL_LOG_USERS; users++)
      assert.equal(
        refusal(() => t.add(meta, 4, R, SR, 'x', `user${users}`)),
        'user-opens-full',
      );
    assert.ok(lines.length - before <= USER_FULL_LOG_USERS + 5, `${lines.length - before} lines for ${2 * USER_FULL_LOG_USERS} users`);
    assert.equal(aliceSummary(), undefined, 'alice refused within the minute: still tracked');
    assert.equal(of('user0'), 1);
    mock.timers.tick(60_000);
    assert.equal(
      refusal(() => t.add(meta, 4, R, SR, 'x', 'newcomer')),
      'user-opens-full',
    );
    assert.equal(aliceSummary()!.suppressed, 15);
    assert.match(aliceSummary()!.msg, /15 more like this not logged/);
    // Back, she starts afresh.
    t.maxOpensPerUser = 1;
    assert.equal(
      refusal(() => t.add(meta, 3, R, SR, 'back', 'alice')),
      'user-opens-full',
    );
    await new Promise((r) => setImmediate(r));
    assert.equal(of('alice'), 6);
    mock.timers.reset();
  });
});

describe('caching holders', () => {
  class Holder implements CacheHolder {
    breaks: number[] = [];
    constructor(public caching: number) {}
    breakTo(keep: number): Promise<void> {
      this.breaks.push(keep);
      this.caching = keep;
      return Promise.resolve();
    }
  }

  it('breaks every holder but the caller once, and costs nothing without holders', async () => {
    const t = new OpenTable();
    assert.equal(t.breakHolders(meta, 1, Caching.NONE), null, 'no opens at all');
    const a = t.add(meta, 1, R, SR | SW, 'a');
    assert.equal(t.breakHolders(meta, 1, Caching.NONE), null, 'opens without holders');
    const lease = new Holder(Caching.READ | Caching.HANDLE);
    const mine = new Holder(Caching.READ);
    t.setHolder(a, lease);
    // A second open of the same lease: one break, not two.
    t.setHolder(t.add(meta, 1, R, SR | SW, 'a2'), lease);
    t.setHolder(t.add(meta, 1, R | W, SR | SW, 'b'), mine);
    const p = t.breakHolders(meta, 1, Caching.READ, mine);
    assert.ok(p);
    await p;
    assert.deepEqual(lease.breaks, [Caching.READ]);
    assert.deepEqual(mine.breaks, []);
    assert.equal(t.breakHolders(meta, 1, Caching.READ, mine), null, 'nothing left above read caching');
    t.release(a);
    assert.equal(t.get(meta, 1)?.holders, 2);
  });
});
