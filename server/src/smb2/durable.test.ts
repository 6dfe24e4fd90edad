// Durable handles v1 over the real file service (memory stores): what is preserved, for how long,
// how many, who may reconnect, and what closes a preserved open. The cross-process test with a
// dropped TCP connection is test/e2e/smb-durable.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memoryServer, type MemoryServer } from '../testing/memory-server.js';
import { VfsError } from '../vfs/errors.js';
import { SmbWriter } from './codec.js';
import { Access, CreateOptions } from './constants.js';
import { DurableTable } from './durable.js';
import * as files from './files.js';
import { OplockLevel, type CachingContext } from './oplock.js';
import type { Open } from './state.js';
import { NtStatus } from './status.js';
import { alice, create, createRequest, fileContext, status } from './testing.js';

const DHNQ = { name: 'DHnQ', data: Buffer.alloc(16) };
const dhnc = (open: Open) => ({ name: 'DHnC', data: Buffer.from(open.fileId) });

function client(srv: MemoryServer, table: DurableTable, user: string, guidByte: number): files.FileContext {
  const caching: CachingContext = {
    clientGuid: Buffer.alloc(16, guidByte),
    leasing: true,
    breakTimeoutMs: 500,
    notify: () => true,
  };
  const c = fileContext(srv, { sessionId: guidByte, caching });
  Object.assign(c.session, { owner: { name: user }, identity: alice });
  c.durable = table;
  return c;
}

/** A durable open with a batch oplock (the connection that made it is gone: notify is null). */
async function durableOpen(c: files.FileContext, name: string, createOptions = 0): Promise<Open> {
  const req = createRequest(name, { requestedOplockLevel: OplockLevel.BATCH, contexts: [DHNQ], createOptions });
  req.desiredAccess |= Access.DELETE;
  const { open, body } = await create(c, req);
  assert.equal(body[2], OplockLevel.BATCH);
  assert.ok(open.durable, 'granted durable');
  return open;
}

const exists = async (srv: MemoryServer, c: files.FileContext, name: string): Promise<boolean> => {
  try {
    await srv.fs.lookup(c.fs.handleOf(c.share, await c.fs.root(c.share)), Buffer.from(name), alice);
    return true;
  } catch (e) {
    if (e instanceof VfsError && e.errno === 'NOENT') return false;
    throw e;
  }
};

describe('durable handles v1', () => {
  it('are granted only with a batch oplock or a handle lease', async () => {
    const srv = await memoryServer();
    const c = client(srv, new DurableTable(srv.fs), 'alice', 1);
    const { open } = await create(c, createRequest('lvl2', { requestedOplockLevel: OplockLevel.II, contexts: [DHNQ] }));
    assert.equal(open.durable, false);
    const batch = await durableOpen(c, 'batch');
    assert.equal(batch.durable, true);
  });

  it('a reconnect by the same user gets the same open back; another user is refused', async () => {
    const srv = await memoryServer();
    const table = new DurableTable(srv.fs);
    const a = client(srv, table, 'alice', 1);
    const open = await durableOpen(a, 'f');
    open.position = 4096;
    assert.equal(
      await status(table.reconnect(a, createRequest('f', { contexts: [dhnc(open)] }), new SmbWriter(), () => undefined)),
      NtStatus.OBJECT_NAME_NOT_FOUND,
      'not while it is connected',
    );
    assert.ok(table.preserve(open));
    const mallory = client(srv, table, 'mallory', 1);
    const w = new SmbWriter();
    assert.equal(
      await status(files.create(mallory, createRequest('f', { contexts: [dhnc(open)] }), w, () => undefined)),
      NtStatus.ACCESS_DENIED,
    );
    const b = client(srv, table, 'Alice', 2);
    let got: Open | null = null;
    await files.create(b, createRequest('ignored', { contexts: [dhnc(open)] }), new SmbWriter(), (o) => (got = o));
    assert.equal(got, open, 'the same Open');
    assert.equal(open.position, 4096);
    assert.equal(open.tree, b.tree);
    assert.equal(table.size, 0);
  });

  it('preserved opens are bounded in all and per user', async () => {
    const srv = await memoryServer();
    const table = new DurableTable(srv.fs, { maxPreserved: 3, maxPerUser: 2 });
    const a = client(srv, table, 'alice', 1);
    const b = client(srv, table, 'bob', 2);
    const opens = [await durableOpen(a, 'a1'), await durableOpen(a, 'a2'), await durableOpen(a, 'a3')];
    assert.deepEqual(
      opens.map((o) => table.preserve(o)),
      [true, true, false],
    );
    assert.equal(table.preserve(await durableOpen(b, 'b1')), true);
    assert.equal(table.preserve(await durableOpen(b, 'b2')), false, 'the table is full');
    assert.equal(table.size, 3);
    await table.closeAll();
    assert.equal(table.size, 0);
    assert.equal(srv.fs.opens.size, 2, 'only the opens never preserved stay (their connection would close them)');
  });

  it('expiry closes a preserved open like CLOSE: delete-on-close runs, share modes go', async () => {
    const srv = await memoryServer();
    const table = new DurableTable(srv.fs, { timeoutMs: 50 });
    const a = client(srv, table, 'alice', 1);
    const open = await durableOpen(a, 'doomed', CreateOptions.DELETE_ON_CLOSE);
    assert.ok(table.preserve(open));
    assert.ok(await exists(srv, a, 'doomed'));
    for (let i = 0; i < 1500 && table.size > 0; i++) await new Promise((r) => setTimeout(r, 20));
    for (let i = 0; i < 1500 && (await exists(srv, a, 'doomed')); i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(table.size, 0);
    assert.equal(await exists(srv, a, 'doomed'), false, 'delete-on-close ran');
    assert.equal(srv.fs.opens.size, 0);
  });

  it('a conflicting open closes a preserved open instead of failing', async () => {
    const srv = await memoryServer();
    const table = new DurableTable(srv.fs);
    const a = client(srv, table, 'alice', 1);
    const { open } = await create(a, createRequest('f', { requestedOplockLevel: OplockLevel.BATCH, contexts: [DHNQ], shareAccess: 0 }));
    open.notify = null;
    assert.ok(table.preserve(open));
    const b = client(srv, table, 'bob', 2);
    const { body } = await create(b, createRequest('f', { requestedOplockLevel: OplockLevel.BATCH }));
    assert.equal(body[2], OplockLevel.BATCH, 'the preserved open is gone: the new one is alone');
    assert.equal(table.size, 0);
    assert.equal(
      await status(table.reconnect(a, createRequest('f', { contexts: [dhnc(open)] }), new SmbWriter(), () => undefined)),
      NtStatus.OBJECT_NAME_NOT_FOUND,
    );
  });
});
