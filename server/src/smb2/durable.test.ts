// Durable handles v1 and v2 over the real file service (memory stores): what is preserved, for how
// long, how many, who may reconnect, and what closes a preserved open. The cross-process test with a
// dropped TCP connection is test/e2e/smb-durable.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memoryServer, type MemoryServer } from '../testing/memory-server.js';
import { VfsError } from '../vfs/errors.js';
import { Caching } from '../vfs/locks/opens.js';
import { SmbWriter } from './codec.js';
import { Access, CreateOptions } from './constants.js';
import { DurableTable, MAX_DURABLE_V2_TIMEOUT_MS } from './durable.js';
import * as files from './files.js';
import { OplockLevel, type CachingContext } from './oplock.js';
import type { Open } from './state.js';
import { NtStatus } from './status.js';
import { alice, create, createRequest, fileContext, responseContexts, status } from './testing.js';

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

  it("a lease open reconnected on the user's new session finds its lease under its key; another user's open does not", async () => {
    const srv = await memoryServer();
    const table = new DurableTable(srv.fs);
    const rqls = { name: 'RqLs', data: Buffer.alloc(32, 5) };
    rqls.data.writeUInt32LE(Caching.READ | Caching.HANDLE, 16);
    const leased = createRequest('f', { requestedOplockLevel: OplockLevel.LEASE, contexts: [rqls] });
    const a = client(srv, table, 'alice', 1);
    const { open } = await create(a, { ...leased, contexts: [rqls, DHNQ] });
    assert.ok(open.durable && open.lease);
    assert.ok(table.preserve(open));
    // The same client (ClientGuid) and user on a new session (the lease's id names the user).
    const b = client(srv, table, 'Alice', 1);
    Object.assign(b.session, { id: 7 });
    let got: Open | null = null;
    await files.create(b, createRequest('f', { contexts: [dhnc(open), rqls] }), new SmbWriter(), (o) => (got = o));
    assert.equal(got, open);
    assert.equal((await create(b, leased)).open.lease, open.lease, 'a further open with the key joins the lease');
    const mallory = client(srv, table, 'mallory', 1);
    Object.assign(mallory.session, { id: 8 });
    assert.notEqual((await create(mallory, leased)).open.lease, open.lease);
    assert.equal(open.lease.opens.size, 2);
  });

  it('a lease open reconnects under the name its client gave after an NFS rename of a directory above it', async () => {
    const srv = await memoryServer();
    const table = new DurableTable(srv.fs);
    const share = srv.fs.shares()[0]!;
    const rootFh = srv.fs.handleOf(share, await srv.fs.root(share));
    const root = { uid: 0, gid: 0, gids: [] };
    await srv.fs.mkdir(rootFh, Buffer.from('d'), root, { mode: 0o777 });
    const rqls = { name: 'RqLs', data: Buffer.alloc(32, 5) };
    rqls.data.writeUInt32LE(Caching.READ | Caching.WRITE | Caching.HANDLE, 16);
    const a = client(srv, table, 'alice', 1);
    const { open } = await create(a, createRequest('d\\f', { requestedOplockLevel: OplockLevel.LEASE, contexts: [rqls, DHNQ] }));
    assert.ok(open.durable && open.lease);
    assert.ok(table.preserve(open));
    // While the client is away, an NFS client renames the directory (no break: the file keeps its caching).
    await srv.fs.rename(rootFh, Buffer.from('d'), rootFh, Buffer.from('e'), root, null, true);
    // The client comes back with the open, its lease and the name it knows (its cached writes with them).
    const b = client(srv, table, 'alice', 1);
    Object.assign(b.session, { id: 7 });
    let got: Open | null = null;
    const w = new SmbWriter();
    assert.equal(
      await status(files.create(b, createRequest('d\\f', { contexts: [dhnc(open), rqls] }), w, (o) => (got = o))),
      NtStatus.SUCCESS,
    );
    assert.equal(got, open);
    assert.equal(open.path, 'e\\f', 'its name queries answer where the file is');
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

/** A DH2Q (MS-SMB2 2.2.13.2.11): Timeout, Flags, Reserved, CreateGuid. */
function dh2q(createGuid: Buffer, timeoutMs = 0, flags = 0): { name: string; data: Buffer } {
  const data = Buffer.alloc(32);
  data.writeUInt32LE(timeoutMs, 0);
  data.writeUInt32LE(flags, 4);
  createGuid.copy(data, 16);
  return { name: 'DH2Q', data };
}

/** A DH2C (MS-SMB2 2.2.13.2.12): FileId, CreateGuid, Flags. */
function dh2c(open: Open, createGuid: Buffer): { name: string; data: Buffer } {
  return { name: 'DH2C', data: Buffer.concat([open.fileId, createGuid, Buffer.alloc(4)]) };
}

/** A 3.x client (durable v2 is SMB 3.x only). */
function client3(srv: MemoryServer, table: DurableTable, user: string, guidByte: number): files.FileContext {
  const c = client(srv, table, user, guidByte);
  c.smb3 = true;
  return c;
}

const reconnect = (table: DurableTable, c: files.FileContext, name: string, contexts: { name: string; data: Buffer }[]) =>
  status(table.reconnect(c, createRequest(name, { contexts }), new SmbWriter(), () => undefined));

describe('durable handles v2 (SMB 3.x)', () => {
  const guid = Buffer.alloc(16, 0xa1);
  const otherGuid = Buffer.alloc(16, 0xb2);

  it('are granted with a batch oplock or a handle lease only, answering the Timeout kept and no persistent flag', async () => {
    const srv = await memoryServer();
    const table = new DurableTable(srv.fs, { timeoutMs: 60_000 });
    const c = client3(srv, table, 'alice', 1);
    for (const [level, durable] of [
      [OplockLevel.NONE, false],
      [OplockLevel.II, false],
      [OplockLevel.EXCLUSIVE, false],
      [OplockLevel.BATCH, true],
    ] as const) {
      const name = `lvl${level}`;
      // SMB2_DHANDLE_FLAG_PERSISTENT asked: no share is continuously available.
      const { open, body } = await create(c, createRequest(name, { requestedOplockLevel: level, contexts: [dh2q(guid, 30_000, 2)] }));
      const answer = responseContexts(body).find((x) => x.name === 'DH2Q');
      assert.equal(open.durable, durable, name);
      assert.equal(answer !== undefined, durable, `${name}: a DH2Q response exactly when durable`);
      if (answer) {
        assert.equal(answer.data.length, 8);
        assert.equal(answer.data.readUInt32LE(0), 30_000, 'the Timeout asked');
        assert.equal(answer.data.readUInt32LE(4), 0, 'not persistent');
        assert.deepEqual(open.createGuid, guid);
      }
    }
    // Leases: read and handle caching make it durable; read caching alone does not.
    for (const [state, durable] of [
      [Caching.READ, false],
      [Caching.READ | Caching.HANDLE, true],
    ] as const) {
      const lease = Buffer.alloc(32);
      lease.fill(state, 0, 16);
      lease.writeUInt32LE(state, 16);
      const name = `lease${state}`;
      const req = createRequest(name, {
        requestedOplockLevel: OplockLevel.LEASE,
        contexts: [{ name: 'RqLs', data: lease }, dh2q(guid, 30_000)],
      });
      const { open, body } = await create(c, req);
      assert.equal(open.lease?.state, state, `${name}: the lease asked`);
      assert.equal(open.durable, durable, name);
      assert.equal(
        responseContexts(body).some((x) => x.name === 'DH2Q'),
        durable,
        `${name}: a DH2Q response exactly when durable`,
      );
    }
    // 0 asks for the server's own timeout; more than 300 s gets 300 s (and says so), whatever
    // durable_handle_timeout says.
    const zero = await create(c, createRequest('zero', { requestedOplockLevel: OplockLevel.BATCH, contexts: [dh2q(guid)] }));
    assert.equal(
      responseContexts(zero.body)
        .find((x) => x.name === 'DH2Q')!
        .data.readUInt32LE(0),
      60_000,
    );
    const long = client3(srv, new DurableTable(srv.fs, { timeoutMs: 3_600_000 }), 'alice', 3);
    const zeroLong = await create(long, createRequest('zero-long', { requestedOplockLevel: OplockLevel.BATCH, contexts: [dh2q(guid)] }));
    assert.equal(
      responseContexts(zeroLong.body)
        .find((x) => x.name === 'DH2Q')!
        .data.readUInt32LE(0),
      MAX_DURABLE_V2_TIMEOUT_MS,
    );
    const max = await create(c, createRequest('max', { requestedOplockLevel: OplockLevel.BATCH, contexts: [dh2q(guid, 0xffffffff)] }));
    assert.equal(
      responseContexts(max.body)
        .find((x) => x.name === 'DH2Q')!
        .data.readUInt32LE(0),
      MAX_DURABLE_V2_TIMEOUT_MS,
    );
    assert.equal(max.open.durableTimeoutMs, MAX_DURABLE_V2_TIMEOUT_MS);
  });

  it('are not granted at 2.x: a DH2Q there is ignored', async () => {
    const srv = await memoryServer();
    const c = client(srv, new DurableTable(srv.fs), 'alice', 1);
    const { open, body } = await create(c, createRequest('f', { requestedOplockLevel: OplockLevel.BATCH, contexts: [dh2q(guid)] }));
    assert.equal(open.durable, false);
    assert.deepEqual(responseContexts(body), []);
  });

  it('refuse malformed and mixed requests before anything is opened', async () => {
    const srv = await memoryServer();
    const table = new DurableTable(srv.fs);
    const c = client3(srv, table, 'alice', 1);
    const batch = { requestedOplockLevel: OplockLevel.BATCH };
    const refused = (name: string, contexts: { name: string; data: Buffer }[]) =>
      status(files.create(c, createRequest(name, { ...batch, contexts }), new SmbWriter(), () => undefined));
    assert.equal(await refused('both', [dh2q(guid), DHNQ]), NtStatus.INVALID_PARAMETER, 'DH2Q with DHnQ');
    assert.equal(await refused('short', [{ name: 'DH2Q', data: Buffer.alloc(31) }]), NtStatus.INVALID_PARAMETER);
    assert.equal(await exists(srv, c, 'both'), false);
    assert.equal(await exists(srv, c, 'short'), false);
    const open = await durableOpen(c, 'v1');
    assert.ok(table.preserve(open));
    // MS-SMB2 3.3.5.9.10 and 3.3.5.9.12: a reconnect beside another durable context.
    assert.equal(await refused('v1', [dh2c(open, guid), DHNQ]), NtStatus.INVALID_PARAMETER);
    assert.equal(await refused('v1', [dh2c(open, guid), dhnc(open)]), NtStatus.INVALID_PARAMETER);
    assert.equal(await refused('v1', [dh2c(open, guid), dh2q(guid)]), NtStatus.INVALID_PARAMETER);
    assert.equal(await refused('v1', [dhnc(open), dh2q(guid)]), NtStatus.INVALID_PARAMETER);
    assert.equal(await refused('v1', [{ name: 'DH2C', data: Buffer.from(open.fileId) }]), NtStatus.INVALID_PARAMETER, 'DH2C of 16 bytes');
    assert.equal(table.size, 1, 'still preserved');
  });

  it('a DH2C reconnects only with the CreateGuid of the DH2Q; a DHnC reconnects a v2 open too', async () => {
    const srv = await memoryServer();
    const table = new DurableTable(srv.fs);
    const a = client3(srv, table, 'alice', 1);
    const { open } = await create(a, createRequest('f', { requestedOplockLevel: OplockLevel.BATCH, contexts: [dh2q(guid, 10_000)] }));
    open.notify = null;
    assert.ok(table.preserve(open));
    const b = client3(srv, table, 'alice', 2);
    assert.equal(await reconnect(table, b, 'f', [dh2c(open, otherGuid)]), NtStatus.OBJECT_NAME_NOT_FOUND, 'another CreateGuid');
    assert.equal(await reconnect(table, b, 'f', [dh2c(open, Buffer.alloc(16))]), NtStatus.OBJECT_NAME_NOT_FOUND, 'a zero CreateGuid');
    assert.equal(table.size, 1);
    let got: Open | null = null;
    const w = new SmbWriter();
    // Name, access and disposition of a reconnect are ignored.
    await files.create(b, createRequest('__not_the_name__', { contexts: [dh2c(open, guid)] }), w, (o) => (got = o));
    assert.equal(got, open, 'the same Open');
    assert.deepEqual(
      responseContexts(w.finish()).map((x) => x.name),
      [],
      'no DH2Q response on a reconnect',
    );
    assert.equal(table.size, 0);
    // Preserved again, then reconnected the version 1 way (smbtorture durable-v2-open.reopen2b).
    open.notify = null;
    assert.ok(table.preserve(open));
    got = null;
    await files.create(b, createRequest('f', { contexts: [dhnc(open)] }), new SmbWriter(), (o) => (got = o));
    assert.equal(got, open);
  });

  it('a DH2C reconnects a v1 open only naming no CreateGuid; a v2 open expires after its own Timeout', async () => {
    const srv = await memoryServer();
    const table = new DurableTable(srv.fs);
    const a = client3(srv, table, 'alice', 1);
    const v1 = await durableOpen(a, 'v1');
    assert.ok(table.preserve(v1));
    assert.equal(await reconnect(table, a, 'v1', [dh2c(v1, guid)]), NtStatus.OBJECT_NAME_NOT_FOUND);
    assert.equal(await reconnect(table, a, 'v1', [dh2c(v1, Buffer.alloc(16))]), NtStatus.SUCCESS);
    v1.notify = null;
    assert.ok(table.preserve(v1));
    const { open } = await create(a, createRequest('v2', { requestedOplockLevel: OplockLevel.BATCH, contexts: [dh2q(guid, 50)] }));
    open.notify = null;
    assert.ok(table.preserve(open));
    for (let i = 0; i < 1500 && table.size > 1; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(table.size, 1, 'the v2 open expired after 50 ms; the v1 open (16 min) is still there');
    assert.equal(await reconnect(table, a, 'v2', [dh2c(open, guid)]), NtStatus.OBJECT_NAME_NOT_FOUND);
    await table.closeAll();
  });
});
