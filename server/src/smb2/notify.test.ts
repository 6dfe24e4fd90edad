// CHANGE_NOTIFY over the real file service (memory stores): what the file service publishes, how a
// watch collects changes between requests, answers at once or later, overflows to
// NOTIFY_ENUM_DIR, reports a deleted directory, and ends with NOTIFY_CLEANUP.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memoryServer } from '../testing/memory-server.js';
import { CreateMode } from '../vfs/service.js';
import { ChangeAction } from '../vfs/changes.js';
import { AsyncTable, type FinalResponse } from './async.js';
import { SmbWriter } from './codec.js';
import { Access } from './constants.js';
import { announceDeletePending, encodeNotifyEntries, NotifyHub, WATCH_TREE, type ChangeNotifyRequest } from './notify.js';
import { Open } from './state.js';
import type { Session, Tree } from './state.js';
import { NtStatus, ntStatusOf, SmbStatusError } from './status.js';

const root = { uid: 0, gid: 0, gids: [] };

/** Decodes FILE_NOTIFY_INFORMATION entries into [action, name] pairs. */
function entries(buf: Buffer): [number, string][] {
  const out: [number, string][] = [];
  let at = 0;
  for (;;) {
    const next = buf.readUInt32LE(at);
    const len = buf.readUInt32LE(at + 8);
    out.push([buf.readUInt32LE(at + 4), buf.subarray(at + 12, at + 12 + len).toString('utf16le')]);
    if (next === 0) return out;
    at += next;
  }
}

/** The output buffer of a CHANGE_NOTIFY response body (StructureSize 9, offset, length). */
const output = (body: Buffer): Buffer => body.subarray(8, 8 + body.readUInt32LE(4));

async function setup() {
  const srv = await memoryServer();
  const share = srv.fs.shares()[0]!;
  const rootInode = await srv.fs.root(share);
  const rootHandle = srv.fs.handleOf(share, rootInode);
  const dir = await srv.fs.mkdir(rootHandle, Buffer.from('watched'), root, { mode: 0o777 });
  const dirHandle = srv.fs.handleOf(share, dir.inode);
  const session = { id: 1, identity: root } as unknown as Session;
  const tree = { session } as Tree;
  const open = (access: number = Access.FILE_READ_DATA, isDir = true): Open =>
    new Open(1, Buffer.alloc(16), tree, share, dirHandle, dir.inode.id, isDir, rootHandle, Buffer.from('watched'), 'watched', access);
  const finals: FinalResponse[] = [];
  const table = new AsyncTable((_op, f) => finals.push(f));
  const hub = new NotifyHub(srv.fs);
  const ask = (o: Open, size: number, flags = 0) => {
    const w = new SmbWriter();
    const req: ChangeNotifyRequest = { flags, outputBufferLength: size, fileId: Buffer.alloc(16), completionFilter: 0x17f };
    let op = null as ReturnType<AsyncTable['begin']>;
    const status = hub.request(o, req, 65536, w, () => {
      op = table.begin({ command: 0x0f, messageId: 1, creditCharge: 1, session, tree, open: o, sign: false, encrypt: false })!;
      return op;
    });
    op?.interimDone();
    return { status, body: w.finish(), op };
  };
  const settle = () => new Promise((r) => setImmediate(r));
  return { srv, dirHandle, open, ask, finals, table, hub, settle, rootHandle };
}

describe('CHANGE_NOTIFY', () => {
  it('a pending request is answered with the changes of the next operation', async () => {
    const t = await setup();
    const o = t.open();
    const r = t.ask(o, 4096);
    assert.equal(r.status, NtStatus.PENDING);
    await t.srv.fs.create(t.dirHandle, Buffer.from('a.txt'), root, CreateMode.GUARDED, {}, null);
    await t.settle();
    assert.equal(t.finals.length, 1);
    assert.equal(t.finals[0]!.status, NtStatus.SUCCESS);
    assert.deepEqual(entries(output(t.finals[0]!.body!)), [[ChangeAction.ADDED, 'a.txt']]);
  });

  it('collects changes between requests and answers the next request at once', async () => {
    const t = await setup();
    const o = t.open();
    assert.equal(t.ask(o, 4096).status, NtStatus.PENDING);
    await t.srv.fs.create(t.dirHandle, Buffer.from('x'), root, CreateMode.GUARDED, {}, null);
    await t.settle();
    await t.srv.fs.rename(t.dirHandle, Buffer.from('x'), t.dirHandle, Buffer.from('y'), root);
    await t.srv.fs.remove(t.dirHandle, Buffer.from('y'), root, false);
    const r = t.ask(o, 4096);
    assert.equal(r.status, NtStatus.SUCCESS);
    assert.deepEqual(entries(output(r.body)), [
      [ChangeAction.RENAMED_OLD_NAME, 'x'],
      [ChangeAction.RENAMED_NEW_NAME, 'y'],
      [ChangeAction.REMOVED, 'y'],
    ]);
    // What does not fit the request is NOTIFY_ENUM_DIR, and the buffer starts afresh.
    await t.srv.fs.mkdir(t.dirHandle, Buffer.from('sub'), root, {});
    assert.equal(t.ask(o, 4).status, NtStatus.NOTIFY_ENUM_DIR);
    assert.equal(t.ask(o, 4096).status, NtStatus.PENDING);
  });

  it('a watch whose first request was small overflows to NOTIFY_ENUM_DIR; memory is returned', async () => {
    const t = await setup();
    const o = t.open();
    assert.equal(t.ask(o, 1).status, NtStatus.PENDING);
    for (const n of ['a', 'b', 'c']) {
      await t.srv.fs.create(t.dirHandle, Buffer.from(n), root, CreateMode.GUARDED, {}, null);
      await t.settle();
    }
    assert.equal(t.finals[0]!.status, NtStatus.NOTIFY_ENUM_DIR);
    assert.equal(t.ask(o, 65536).status, NtStatus.NOTIFY_ENUM_DIR);
    assert.equal(t.hub.bufferedBytes, 0);
  });

  it('WATCH_TREE: a change deeper down is reported as NOTIFY_ENUM_DIR, a non-tree watch hears nothing of it', async () => {
    const t = await setup();
    const sub = await t.srv.fs.mkdir(t.dirHandle, Buffer.from('sub'), root, {});
    const subHandle = t.srv.fs.handleOf(t.srv.fs.shares()[0]!, sub.inode);
    const flat = t.open();
    const tree = t.open();
    assert.equal(t.ask(flat, 4096).status, NtStatus.PENDING);
    assert.equal(t.ask(tree, 4096, WATCH_TREE).status, NtStatus.PENDING);
    await t.srv.fs.create(subHandle, Buffer.from('deep'), root, CreateMode.GUARDED, {}, null);
    for (let i = 0; i < 5 && t.finals.length === 0; i++) await t.settle();
    assert.deepEqual(
      t.finals.map((f) => f.status),
      [NtStatus.NOTIFY_ENUM_DIR],
    );
  });

  it('refuses a file, a handle without FILE_LIST_DIRECTORY and a buffer above MaxTransactSize', async () => {
    const t = await setup();
    const status = (f: () => unknown): number => {
      try {
        f();
      } catch (e) {
        return (e as SmbStatusError).status;
      }
      return -1;
    };
    assert.equal(
      status(() => t.ask(t.open(Access.FILE_READ_DATA, false), 10)),
      NtStatus.INVALID_PARAMETER,
    );
    assert.equal(
      status(() => t.ask(t.open(Access.FILE_READ_ATTRIBUTES), 10)),
      NtStatus.ACCESS_DENIED,
    );
    assert.equal(
      status(() => t.ask(t.open(), 65537)),
      NtStatus.INVALID_PARAMETER,
    );
    // A caller whose share permission became `none` since the open: nothing is watched for him.
    t.srv.fs.setAccessPolicy(() => 'none');
    assert.equal(
      status(() => {
        try {
          t.ask(t.open(), 10);
        } catch (e) {
          throw new SmbStatusError(ntStatusOf(e) ?? NtStatus.INTERNAL_ERROR);
        }
      }),
      NtStatus.ACCESS_DENIED,
    );
    assert.equal(t.table.size, 0);
  });

  it('deleting the watched directory answers DELETE_PENDING; close answers NOTIFY_CLEANUP and stops the watch', async () => {
    const t = await setup();
    const gone = t.open();
    assert.equal(t.ask(gone, 100).status, NtStatus.PENDING);
    const closing = t.open();
    const r = t.ask(closing, 100, WATCH_TREE);
    t.table.abortWhere((op) => op === r.op, 'closed');
    t.hub.closeOpen(closing);
    assert.equal(t.finals[0]!.status, NtStatus.NOTIFY_CLEANUP);
    assert.equal(output(t.finals[0]!.body!).length, 0);
    assert.equal(t.srv.fs.changes.watching(t.srv.meta), true, 'the first open still watches');
    await t.srv.fs.remove(t.rootHandle, Buffer.from('watched'), root, true);
    assert.equal(t.finals[1]!.status, NtStatus.DELETE_PENDING);
    t.hub.closeOpen(gone);
    assert.equal(t.srv.fs.changes.watching(t.srv.meta), false, 'nobody watches: publishing is free');
  });

  it('a directory left delete-pending while still open answers its waiting requests DELETE_PENDING', async () => {
    const t = await setup();
    const o = t.open();
    assert.equal(t.ask(o, 100).status, NtStatus.PENDING);
    // No open of it is delete-pending: nothing is answered.
    announceDeletePending(t.srv.fs, o);
    assert.equal(t.finals.length, 0);
    t.srv.fs.changes.deletePending(t.srv.meta, o.inodeId);
    assert.equal(t.finals[0]!.status, NtStatus.DELETE_PENDING);
    assert.throws(
      () => t.ask(o, 100),
      (e: unknown) => e instanceof SmbStatusError && e.status === NtStatus.DELETE_PENDING,
      'and later requests at once',
    );
    t.hub.closeOpen(o);
  });

  it('FILE_NOTIFY_INFORMATION entries are 4-byte aligned with NextEntryOffset chaining', () => {
    const b = encodeNotifyEntries([
      { action: 1, name: Buffer.from('ab', 'utf16le') },
      { action: 2, name: Buffer.from('c', 'utf16le') },
    ]);
    assert.equal(b.readUInt32LE(0), 16);
    assert.deepEqual(entries(b), [
      [1, 'ab'],
      [2, 'c'],
    ]);
    assert.equal(b.length, 16 + 14);
  });
});
