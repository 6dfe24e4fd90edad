// The pending-request table: AsyncIds, CANCEL by AsyncId or MessageId (also one that arrives before
// its request went async), the cap, cleanup by open/tree/session, and a final response never
// overtaking its interim one.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AsyncTable, type FinalResponse, type PendingOp, type PendingRequest } from './async.js';
import type { Open, Session, Tree } from './state.js';
import { NtStatus } from './status.js';

const session = (id: number): Session => ({ id }) as unknown as Session;

function request(messageId: number, s: Session, extra: Partial<PendingRequest> = {}): PendingRequest {
  return { command: 0x0a, messageId, creditCharge: 1, session: s, tree: null, open: null, sign: false, encrypt: false, ...extra };
}

function table(cap?: number) {
  const sent: { op: PendingOp; final: FinalResponse }[] = [];
  const t = new AsyncTable((op, final) => sent.push({ op, final }), cap);
  return { t, sent };
}

describe('async table', () => {
  it('gives unique nonzero AsyncIds and refuses past its cap until one completes', () => {
    const { t } = table(3);
    const s = session(1);
    const ops = [1, 2, 3].map((m) => t.begin(request(m, s))!);
    assert.deepEqual(new Set(ops.map((o) => o.asyncId)).size, 3);
    assert.ok(ops.every((o) => o.asyncId > 0));
    assert.equal(t.begin(request(4, s)), null);
    ops[0]!.interimDone();
    ops[0]!.complete(NtStatus.SUCCESS);
    assert.equal(t.size, 2);
    assert.ok(t.begin(request(5, s)));
  });

  it('CANCEL by AsyncId or by MessageId answers CANCELLED once; another session cannot cancel', () => {
    const { t, sent } = table();
    const s = session(1);
    const a = t.begin(request(10, s))!;
    const b = t.begin(request(11, s))!;
    a.interimDone();
    b.interimDone();
    assert.equal(t.cancel(true, a.asyncId, 0, 2), false, 'session 2 does not own it');
    assert.equal(t.cancel(true, a.asyncId, 0, 1), true);
    assert.equal(t.cancel(false, 0, 11, 1), true);
    assert.equal(t.cancel(true, a.asyncId, 0, 1), false, 'already answered');
    assert.deepEqual(
      sent.map((x) => [x.op.request.messageId, x.final.status]),
      [
        [10, NtStatus.CANCELLED],
        [11, NtStatus.CANCELLED],
      ],
    );
    assert.equal(t.size, 0);
  });

  it('an operation answers its own abort with its own status', () => {
    const { t, sent } = table();
    const op = t.begin(request(1, session(1)))!;
    op.interimDone();
    let withdrawn = 0;
    op.onAbort = (reason) => {
      withdrawn++;
      op.complete(reason === 'cancel' ? NtStatus.CANCELLED : NtStatus.RANGE_NOT_LOCKED);
    };
    t.abortWhere(() => true, 'closed');
    t.abortWhere(() => true, 'closed');
    assert.equal(withdrawn, 1);
    assert.deepEqual(
      sent.map((x) => x.final.status),
      [NtStatus.RANGE_NOT_LOCKED],
    );
  });

  it('cleans up by open, tree and session', () => {
    const { t, sent } = table();
    const s1 = session(1);
    const s2 = session(2);
    const tree = {} as Tree;
    const open = {} as Open;
    const byOpen = t.begin(request(1, s1, { open, tree }))!;
    const byTree = t.begin(request(2, s1, { tree }))!;
    const other = t.begin(request(3, s2))!;
    for (const o of [byOpen, byTree, other]) o.interimDone();
    t.abortWhere((op) => op.request.open === open, 'closed');
    assert.equal(t.size, 2);
    t.abortWhere((op) => op.request.tree === tree, 'closed');
    assert.equal(t.size, 1);
    t.abortWhere((op) => op.request.session === s2, 'closed');
    assert.equal(t.size, 0);
    assert.deepEqual(
      sent.map((x) => x.op.request.messageId),
      [1, 2, 3],
    );
  });

  it('a final response that comes before the interim one waits for it', () => {
    const { t, sent } = table();
    const op = t.begin(request(7, session(1)))!;
    op.complete(NtStatus.SUCCESS, Buffer.from([4, 0, 0, 0]));
    assert.equal(sent.length, 0);
    op.interimDone();
    assert.equal(sent.length, 1);
    // Or, before anything was sent, the connection answers it synchronously instead.
    const early = t.begin(request(8, session(1)))!;
    early.complete(NtStatus.CANCELLED);
    assert.equal(early.takeEarlyResult()?.status, NtStatus.CANCELLED);
    early.interimDone();
    assert.equal(sent.length, 1, 'nothing more is sent for it');
  });

  it('remembers a CANCEL that came before its request went async (bounded)', () => {
    const { t } = table();
    assert.equal(t.cancel(false, 0, 42, 1), false);
    assert.equal(t.cancelledEarly(42, 1), true);
    assert.equal(t.cancelledEarly(42, 1), false);
    for (let m = 100; m < 1000; m++) t.cancel(false, 0, m, 1);
    assert.equal(t.cancelledEarly(100, 1), false, 'the oldest early cancels are forgotten');
    assert.equal(t.cancelledEarly(999, 1), true);
    // Another session's early CANCEL (or one of no session) does not end this session's request.
    t.cancel(false, 0, 43, 0);
    t.cancel(false, 0, 44, 2);
    assert.equal(t.cancelledEarly(43, 1), false);
    assert.equal(t.cancelledEarly(44, 1), false);
  });
});
