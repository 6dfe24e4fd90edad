// Oplocks and leases through CREATE, WRITE and CLOSE over the real file service (memory stores),
// two clients seen as two caching contexts that record the notifications they are sent.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memoryServer } from '../testing/memory-server.js';
import { Caching } from '../vfs/locks/opens.js';
import { SmbWriter } from './codec.js';
import { Access, CreateDisposition } from './constants.js';
import * as files from './files.js';
import { acknowledge, addLeaseChannel, OplockLevel, type CachingContext } from './oplock.js';
import { SmbReader } from './codec.js';
import type { Open, Session } from './state.js';
import { NtStatus, SmbStatusError } from './status.js';
import { close as closeOpen, create, createRequest, fileContext, responseContexts, status } from './testing.js';

const RWH = Caching.READ | Caching.WRITE | Caching.HANDLE;

interface Client {
  ctx: files.FileContext;
  caching: CachingContext;
  /** Notification bodies sent to this client. */
  sent: Buffer[];
  /** The session each notification named (an oplock break its open's; a lease break none). */
  sessions: (Session | undefined)[];
  /** What the client does with a notification (acknowledge, close, nothing). */
  onBreak: (body: Buffer) => void;
}

async function setup(timeoutMs = 2000) {
  const srv = await memoryServer();
  /** `leaseV2`: the client negotiated 3.x (version 2 lease contexts are read). */
  const client = (guidByte: number, leaseV2 = false): Client => {
    const cl = { sent: [] as Buffer[], sessions: [], onBreak: (_b: Buffer) => undefined } as unknown as Client;
    cl.caching = {
      clientGuid: Buffer.alloc(16, guidByte),
      leasing: true,
      leaseV2,
      breakTimeoutMs: timeoutMs,
      notify: (_cmd, body, session) => {
        cl.sent.push(body);
        cl.sessions.push(session);
        queueMicrotask(() => cl.onBreak(body));
        return true;
      },
    };
    cl.ctx = fileContext(srv, { sessionId: guidByte, caching: cl.caching });
    return cl;
  };
  const open = async (
    cl: Client,
    name: string,
    o: {
      oplock?: number;
      /** `v2`: a version 2 context (52 bytes) with that epoch and, if given, a parent key byte. */
      lease?: { key: number; state: number; v2?: { epoch: number; parent?: number } };
      share?: number;
      disposition?: number;
      access?: number;
      options?: number;
    } = {},
  ): Promise<{ open: Open; level: number; leaseState: number | null; lease: Buffer | null }> => {
    const contexts = [];
    if (o.lease) {
      const data = Buffer.alloc(o.lease.v2 ? 52 : 32);
      data.fill(o.lease.key, 0, 16);
      data.writeUInt32LE(o.lease.state, 16);
      if (o.lease.v2) {
        if (o.lease.v2.parent !== undefined) {
          data.writeUInt32LE(0x4, 20);
          data.fill(o.lease.v2.parent, 32, 48);
        }
        data.writeUInt16LE(o.lease.v2.epoch, 48);
      }
      contexts.push({ name: 'RqLs', data });
    }
    const req = createRequest(name, {
      requestedOplockLevel: o.lease ? OplockLevel.LEASE : (o.oplock ?? 0),
      desiredAccess: o.access ?? Access.GENERIC_READ | Access.GENERIC_WRITE,
      shareAccess: o.share ?? 7,
      createDisposition: o.disposition ?? CreateDisposition.OPEN_IF,
      createOptions: o.options ?? 0,
      contexts,
    });
    const { open: got, body } = await create(cl.ctx, req);
    const lease = responseContexts(body).find((x) => x.name === 'RqLs')?.data ?? null;
    return { open: got, level: body[2]!, leaseState: lease ? lease.readUInt32LE(16) : null, lease };
  };
  const close = (cl: Client, o: Open) => closeOpen(cl.ctx, o);
  return { srv, client, open, close };
}

const ackOplock = (cl: Client, open: Open, level: number): Buffer => {
  const b = Buffer.alloc(64 + 24);
  b.writeUInt16LE(24, 64);
  b[66] = level;
  open.fileId.copy(b, 72);
  const w = new SmbWriter();
  acknowledge(cl.ctx.fs, cl.caching.clientGuid, cl.ctx.session, new SmbReader(b, 64), w, () => open);
  return w.finish();
};

describe('oplocks', () => {
  it('the CREATE that broke a batch oplock reports the size the holder wrote back before its ack', async () => {
    const { srv, client, open, close } = await setup();
    const a = client(1);
    const b = client(2);
    const first = await open(a, 'f', { oplock: OplockLevel.BATCH });
    assert.equal(first.level, OplockLevel.BATCH);
    // The holder writes back what it cached (50 bytes), then acknowledges.
    a.onBreak = () =>
      void files
        .write(a.ctx, first.open, { offset: 0, fileId: first.open.fileId, flags: 0, data: Buffer.alloc(50, 0x61) })
        .then(() => ackOplock(a, first.open, OplockLevel.II));
    const req = createRequest('f', { requestedOplockLevel: OplockLevel.II, createDisposition: CreateDisposition.OPEN });
    const { open: second, body } = await create(b.ctx, req);
    // SMB2 CREATE response: EndofFile at byte 48 of the body.
    assert.equal(Number(body.readBigUInt64LE(48)), 50, 'EndOfFile in the CREATE response');
    await close(b, second);
    await close(a, first.open);
    await srv.close();
  });

  it('a second open breaks a batch oplock to Level II, waits for the ack, and gets Level II', async () => {
    const { srv, client, open } = await setup();
    const a = client(1);
    const b = client(2);
    const first = await open(a, 'f', { oplock: OplockLevel.BATCH });
    assert.equal(first.level, OplockLevel.BATCH);
    let acked = false;
    a.onBreak = (body) => {
      assert.equal(body[2], OplockLevel.II, 'broken to Level II');
      assert.ok(body.subarray(8, 24).equals(first.open.fileId));
      setTimeout(() => {
        acked = true;
        assert.equal(ackOplock(a, first.open, OplockLevel.II)[2], OplockLevel.II);
      }, 50);
    };
    const second = await open(b, 'f', { oplock: OplockLevel.BATCH });
    assert.ok(acked, 'CREATE returned after the acknowledgment');
    a.onBreak = () => undefined;
    assert.equal(second.level, OplockLevel.II);
    assert.equal(a.sent.length, 1);
    // Both at Level II: a write by either breaks both to none (no acknowledgment needed).
    await files.write(b.ctx, second.open, { offset: 0, data: Buffer.from('x'), flags: 0, fileId: second.open.fileId });
    assert.equal(a.sent.length, 2);
    assert.equal(a.sent[1]![2], OplockLevel.NONE);
    assert.equal(b.sent.length, 1, 'the writer loses its own Level II too');
    assert.throws(
      () => ackOplock(a, first.open, 0),
      (e: unknown) => e instanceof SmbStatusError && e.status === NtStatus.INVALID_OPLOCK_PROTOCOL,
      'a break from Level II takes no acknowledgment',
    );
    await srv.close();
  });

  it('a sharing violation breaks only a batch oplock, and an exclusive one not at all', async () => {
    const { srv, client, open, close } = await setup();
    const a = client(1);
    const b = client(2);
    const x = await open(a, 'x', { oplock: OplockLevel.EXCLUSIVE, share: 0 });
    assert.equal(x.level, OplockLevel.EXCLUSIVE);
    assert.equal(await status(open(b, 'x')), NtStatus.SHARING_VIOLATION);
    assert.equal(a.sent.length, 0, 'no break for an exclusive oplock');
    await close(a, x.open);
    const y = await open(a, 'y', { oplock: OplockLevel.BATCH, share: 0 });
    // The holder closes its cached handle on the break: the second open then succeeds.
    a.onBreak = () => void close(a, y.open);
    const second = await open(b, 'y');
    assert.equal(a.sent.length, 1);
    assert.equal(second.level, OplockLevel.NONE);
    await srv.close();
  });

  it("a break names the holder's session of the moment (a durable reconnect moves the open); a lease break names none", async () => {
    const { srv, client, open } = await setup();
    const a = client(1);
    const b = client(2);
    const held = await open(a, 'f', { oplock: OplockLevel.BATCH });
    // As a durable reconnect leaves it: the open on another session's tree (that session may encrypt, or not).
    const later = { id: 77, trees: new Map() } as unknown as Session;
    held.open.tree = { ...held.open.tree, session: later };
    a.onBreak = () => void ackOplock(a, held.open, OplockLevel.II);
    assert.equal((await open(b, 'f', { oplock: OplockLevel.BATCH })).level, OplockLevel.II);
    assert.equal(a.sessions.length, 1);
    assert.equal(a.sessions[0], later, 'the session the open is on when the break goes out, not the one that opened it');
    const leased = await open(a, 'l', { lease: { key: 1, state: RWH } });
    a.onBreak = (body) => ackLease(a, leased.open, body, Caching.READ | Caching.HANDLE);
    await open(b, 'l', { lease: { key: 2, state: RWH } });
    assert.equal(a.sessions.length, 2);
    assert.equal(a.sessions[1], undefined, "a lease break is the client's: no session");
    await srv.close();
  });

  it('a silent holder delays the second open by the break timeout only', async () => {
    const { srv, client, open } = await setup(300);
    const a = client(1);
    const b = client(2);
    await open(a, 'f', { oplock: OplockLevel.BATCH });
    const started = Date.now();
    const second = await open(b, 'f', { oplock: OplockLevel.II });
    assert.ok(Date.now() - started >= 250);
    assert.equal(second.level, OplockLevel.II);
    await srv.close();
  });
});

describe('leases', () => {
  it('RWH broken to RH by another key; the ack completes the open; upgrades only while alone', async () => {
    const { srv, client, open, close } = await setup();
    const a = client(1);
    const b = client(2);
    const first = await open(a, 'f', { lease: { key: 1, state: RWH } });
    assert.equal(first.level, OplockLevel.LEASE);
    assert.equal(first.leaseState, RWH);
    a.onBreak = (body) => {
      assert.equal(body.readUInt32LE(4) & 1, 1, 'ack required');
      assert.equal(body.readUInt32LE(24), RWH);
      assert.equal(body.readUInt32LE(28), Caching.READ | Caching.HANDLE);
      const ack = Buffer.alloc(64 + 36);
      ack.writeUInt16LE(36, 64);
      body.copy(ack, 72, 8, 24);
      ack.writeUInt32LE(Caching.READ | Caching.HANDLE, 88);
      acknowledge(a.ctx.fs, a.caching.clientGuid, a.ctx.session, new SmbReader(ack, 64), new SmbWriter(), () => first.open);
    };
    const second = await open(b, 'f', { lease: { key: 2, state: RWH } });
    assert.equal(second.leaseState, Caching.READ | Caching.HANDLE);
    // The first key asks for RWH again: no upgrade while the other lease's open is there.
    const again = await open(a, 'f', { lease: { key: 1, state: RWH } });
    assert.equal(again.leaseState, Caching.READ | Caching.HANDLE);
    await close(b, second.open);
    const alone = await open(a, 'f', { lease: { key: 1, state: RWH } });
    assert.equal(alone.leaseState, RWH, 'upgraded once no other open shares the file');
    // The same key on another file is refused.
    assert.equal(await status(open(a, 'g', { lease: { key: 1, state: Caching.READ } })), NtStatus.INVALID_PARAMETER);
    await srv.close();
  });

  it('a lease key on one file: a CREATE of a new file under it fails and makes nothing', async () => {
    const { srv, client, open } = await setup();
    const a = client(1);
    assert.equal((await open(a, 'f', { lease: { key: 7, state: RWH } })).leaseState, RWH);
    assert.equal(await status(open(a, 'g', { lease: { key: 7, state: RWH } })), NtStatus.INVALID_PARAMETER);
    assert.equal(await status(open(a, 'g', { disposition: CreateDisposition.OPEN })), NtStatus.OBJECT_NAME_NOT_FOUND, 'no file made');
    await srv.close();
  });

  it('a stream has oplocks of its own: its file and it both hold batch, a second open of either breaks only that one', async () => {
    const { srv, client, open } = await setup();
    const a = client(1);
    const b = client(2);
    assert.equal((await open(a, 'h', { oplock: OplockLevel.BATCH })).level, OplockLevel.BATCH);
    assert.equal((await open(a, 'h:s', { oplock: OplockLevel.BATCH })).level, OplockLevel.BATCH, 'no contention with the file');
    assert.equal(a.sent.length, 0);
    assert.equal((await open(b, 'h:s', { oplock: OplockLevel.BATCH })).level, OplockLevel.II);
    assert.equal(a.sent.length, 1, 'the stream holder was broken');
    assert.equal(a.sent[0]![2], OplockLevel.II);
    await srv.close();
  });

  it('an acknowledgment that keeps more than the break allows is refused, and no lease is not found', async () => {
    // A break timeout far past the bound below: only the acknowledgment can end the break in time.
    const { srv, client, open } = await setup(30_000);
    const a = client(1);
    const b = client(2);
    const first = await open(a, 'f', { lease: { key: 1, state: RWH } });
    const results: number[] = [];
    a.onBreak = (body) => {
      // First more than the break leaves (refused, the break goes on), then what it asked for.
      for (const state of [RWH, body.readUInt32LE(28)]) {
        const ack = Buffer.alloc(64 + 36);
        ack.writeUInt16LE(36, 64);
        body.copy(ack, 72, 8, 24);
        ack.writeUInt32LE(state, 88);
        try {
          acknowledge(a.ctx.fs, a.caching.clientGuid, a.ctx.session, new SmbReader(ack, 64), new SmbWriter(), () => first.open);
          results.push(NtStatus.SUCCESS);
        } catch (e) {
          results.push((e as SmbStatusError).status);
        }
      }
    };
    const started = Date.now();
    await open(b, 'f', { lease: { key: 2, state: Caching.READ } });
    assert.deepEqual(results, [NtStatus.REQUEST_NOT_ACCEPTED, NtStatus.SUCCESS]);
    assert.ok(Date.now() - started < 20_000, 'the second acknowledgment ended the break, not the timeout');
    const unknown = Buffer.alloc(64 + 36);
    unknown.writeUInt16LE(36, 64);
    unknown.fill(9, 72, 88);
    assert.throws(
      () => acknowledge(a.ctx.fs, a.caching.clientGuid, a.ctx.session, new SmbReader(unknown, 64), new SmbWriter(), () => first.open),
      (e: unknown) => e instanceof SmbStatusError && e.status === NtStatus.OBJECT_NAME_NOT_FOUND,
    );
    await srv.close();
  });

  it('a break asked during a break waits for it; the ack goes on in steps (RH, R, none) and only then do the waiting opens complete', async () => {
    const { srv, client, open } = await setup(30_000);
    const a = client(1);
    const b = client(2);
    const first = await open(a, 'f', { lease: { key: 1, state: RWH } });
    const plain = open(b, 'f');
    await until(() => a.sent.length === 1);
    assert.deepEqual(leaseBreakOf(a.sent[0]!), { from: RWH, to: Caching.READ | Caching.HANDLE, ack: true });
    const overwrite = open(b, 'f', { disposition: CreateDisposition.OVERWRITE });
    let done = 0;
    void plain.then(() => done++);
    void overwrite.then(() => done++);
    // The overwrite has asked for its break (merged into the one outstanding: nothing sent).
    await until(() => first.open.lease?.required === Caching.NONE);
    assert.equal(a.sent.length, 1);
    ackLease(a, first.open, a.sent[0]!, Caching.READ | Caching.HANDLE);
    // The overwrite asked for more meanwhile: a further break, with no new open answered.
    await until(() => a.sent.length === 2);
    assert.deepEqual(leaseBreakOf(a.sent[1]!), { from: Caching.READ | Caching.HANDLE, to: Caching.READ, ack: true });
    assert.equal(done, 0, 'both opens still wait');
    ackLease(a, first.open, a.sent[1]!, Caching.READ);
    const [p, o] = await Promise.all([plain, overwrite]);
    assert.equal(p.level, OplockLevel.NONE);
    assert.equal(o.open.record?.file.opens.size, 3);
    await until(() => a.sent.length === 3);
    assert.deepEqual(leaseBreakOf(a.sent[2]!), { from: Caching.READ, to: Caching.NONE, ack: false });
    await srv.close();
  });

  it(
    'an overwrite does not wait for the ack of a lease without write caching (the lease stays breaking)',
    { timeout: 20_000 },
    async () => {
      const { srv, client, open } = await setup(60_000);
      const a = client(1);
      const b = client(2);
      const first = await open(a, 'f', { lease: { key: 1, state: Caching.READ | Caching.HANDLE } });
      // Never acknowledged: the old code waited here for the 60 s break timeout.
      await open(b, 'f', { disposition: CreateDisposition.OVERWRITE });
      assert.deepEqual(leaseBreakOf(a.sent[0]!), { from: Caching.READ | Caching.HANDLE, to: Caching.NONE, ack: true });
      assert.ok(first.open.lease?.breaking, 'the break is still outstanding');
      await open(b, 'f', { disposition: CreateDisposition.OVERWRITE });
      assert.equal(a.sent.length, 1, 'no second notification while the first is unanswered');
      ackLease(a, first.open, a.sent[0]!, Caching.NONE);
      assert.ok(!first.open.lease?.breaking);
      await srv.close();
    },
  );

  it('an open waiting on a break goes on as soon as the holder closes (not at the timeout)', { timeout: 20_000 }, async () => {
    const { srv, client, open, close } = await setup(60_000);
    const a = client(1);
    const b = client(2);
    const first = await open(a, 'f', { lease: { key: 1, state: RWH } });
    const second = open(b, 'f');
    await until(() => a.sent.length === 1);
    assert.ok(first.open.lease?.breaking);
    // The holder never acknowledges; its open goes (a CLOSE, or its logoff or disconnect).
    await close(a, first.open);
    assert.equal((await second).level, OplockLevel.NONE);
    await srv.close();
  });

  it('a rename sends its handle break before it awaits anything, and waits for the ack', async () => {
    const { srv, client, open } = await setup(30_000);
    const a = client(1);
    const h1 = await open(a, 'src', { lease: { key: 1, state: Caching.READ | Caching.HANDLE }, access: Access.GENERIC_ALL });
    const h2 = await open(a, 'src', { lease: { key: 2, state: Caching.READ | Caching.HANDLE } });
    const name = Buffer.from('dst', 'utf16le');
    const info = Buffer.alloc(20 + name.length);
    info[0] = 1;
    info.writeUInt32LE(name.length, 16);
    name.copy(info, 20);
    let renamed = false;
    const rename = files
      .setInfo(a.ctx, h1.open, { infoType: 1, infoClass: 10, additionalInformation: 0, fileId: h1.open.fileId, buffer: info })
      .then(() => (renamed = true));
    assert.equal(a.sent.length, 1, 'the break went out synchronously');
    assert.deepEqual(leaseBreakOf(a.sent[0]!), { from: Caching.READ | Caching.HANDLE, to: Caching.READ, ack: true });
    assert.equal(await status(open(a, 'dst', { disposition: CreateDisposition.OPEN })), NtStatus.OBJECT_NAME_NOT_FOUND);
    assert.ok(!renamed, 'the rename waits for the ack');
    ackLease(a, h2.open, a.sent[0]!, Caching.READ);
    await rename;
    await open(a, 'dst', { disposition: CreateDisposition.OPEN });
    await srv.close();
  });
});

describe('directory rename with opens beneath', () => {
  const renameInfo = (to: string): Buffer => {
    const name = Buffer.from(to, 'utf16le');
    const info = Buffer.alloc(20 + name.length);
    info.writeUInt32LE(name.length, 16);
    name.copy(info, 20);
    return info;
  };
  const rename = (cl: Client, dir: Open, to: string) =>
    files.setInfo(cl.ctx, dir, { infoType: 1, infoClass: 10, additionalInformation: 0, fileId: dir.fileId, buffer: renameInfo(to) });
  const RH = Caching.READ | Caching.HANDLE;

  it('breaks the handle leases beneath one at a time and goes on once their holders close; an ack that keeps the open fails it', async () => {
    const { srv, client, open, close } = await setup(30_000);
    const a = client(1);
    const b = client(2);
    const dir = (await open(a, 'd', { options: 1, access: Access.GENERIC_ALL, disposition: CreateDisposition.CREATE })).open;
    const f1 = await open(b, 'd\\f1', { lease: { key: 1, state: RH } });
    const f2 = await open(b, 'd\\f2', { lease: { key: 2, state: RH } });
    assert.equal(f1.leaseState, RH);
    // The holder closes what it is told to let go of.
    const byKey = new Map([
      [1, f1.open],
      [2, f2.open],
    ]);
    b.onBreak = (body) => {
      assert.deepEqual(leaseBreakOf(body), { from: RH, to: Caching.READ, ack: true });
      void close(b, byKey.get(body[8]!)!);
    };
    await rename(a, dir, 'e');
    assert.equal(b.sent.length, 2, 'one break per lease');
    await close(b, (await open(b, 'e\\f1', { disposition: CreateDisposition.OPEN })).open);

    // This time the holder acknowledges and keeps its open: the rename is refused.
    const g = await open(b, 'e\\g', { lease: { key: 3, state: RH } });
    b.onBreak = (body) => ackLease(b, g.open, body, Caching.READ);
    assert.equal(await status(rename(a, dir, 'h')), NtStatus.ACCESS_DENIED);
    assert.equal(b.sent.length, 3);
    await srv.close();
  });

  it('an open beneath without a handle lease fails the rename at once, with no break', async () => {
    const { srv, client, open } = await setup(30_000);
    const a = client(1);
    const b = client(2);
    const dir = (await open(a, 'd', { options: 1, access: Access.GENERIC_ALL, disposition: CreateDisposition.CREATE })).open;
    await open(b, 'd\\f1');
    await open(b, 'd\\f2', { lease: { key: 2, state: RH } });
    assert.equal(await status(rename(a, dir, 'e')), NtStatus.ACCESS_DENIED);
    assert.equal(b.sent.length, 0);
    await srv.close();
  });
});

/** Polls (bounded) until `cond` holds. */
async function until(cond: () => boolean, ms = 5000): Promise<void> {
  for (const end = Date.now() + ms; !cond();) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

const leaseBreakOf = (body: Buffer) => ({ from: body.readUInt32LE(24), to: body.readUInt32LE(28), ack: (body.readUInt32LE(4) & 1) === 1 });

/** Acknowledges the lease break `body` with `state`. */
function ackLease(cl: Client, open: Open, body: Buffer, state: number): void {
  const ack = Buffer.alloc(64 + 36);
  ack.writeUInt16LE(36, 64);
  body.copy(ack, 72, 8, 24);
  ack.writeUInt32LE(state, 88);
  acknowledge(cl.ctx.fs, cl.caching.clientGuid, cl.ctx.session, new SmbReader(ack, 64), new SmbWriter(), () => open);
}

describe('leases v2 (SMB 3.x)', () => {
  const RH = Caching.READ | Caching.HANDLE;

  it('a new lease answers the request epoch + 1 in a 52-byte context; an upgrade adds one, the same state none', async () => {
    const { srv, client, open } = await setup();
    const a = client(1, true);
    const first = await open(a, 'f', { lease: { key: 1, state: Caching.READ, v2: { epoch: 0x4711 } } });
    assert.equal(first.lease!.length, 52);
    assert.equal(first.leaseState, Caching.READ);
    assert.equal(first.lease!.readUInt32LE(20), 0, 'no flags: no parent key, no break');
    assert.equal(first.lease!.readUInt16LE(48), 0x4712);
    const same = await open(a, 'f', { lease: { key: 1, state: Caching.READ, v2: { epoch: 0x1 } } });
    assert.equal(same.lease!.readUInt16LE(48), 0x4712, "the request's epoch counts only for a new lease");
    // Asked with a v1 context, a v2 lease still answers v2.
    const up = await open(a, 'f', { lease: { key: 1, state: RWH } });
    assert.equal(up.lease!.length, 52);
    assert.equal(up.leaseState, RWH);
    assert.equal(up.lease!.readUInt16LE(48), 0x4713);
    // The epoch wraps at 16 bits.
    const wrap = await open(a, 'g', { lease: { key: 2, state: Caching.READ, v2: { epoch: 0xffff } } });
    assert.equal(wrap.lease!.readUInt16LE(48), 0);
    await srv.close();
  });

  it('echoes a parent lease key; a v2 context at 2.1, or a v1 lease asked with one, answers v1', async () => {
    const { srv, client, open } = await setup();
    const a = client(1, true);
    const child = await open(a, 'f', { lease: { key: 1, state: RWH, v2: { epoch: 0x11, parent: 9 } } });
    assert.equal(child.lease!.readUInt32LE(20), 0x4, 'SMB2_LEASE_FLAG_PARENT_LEASE_KEY_SET');
    assert.deepEqual(child.lease!.subarray(32, 48), Buffer.alloc(16, 9));
    assert.equal(child.lease!.readUInt16LE(48), 0x12);
    const v1 = await open(a, 'g', { lease: { key: 2, state: Caching.READ } });
    assert.equal(v1.lease!.length, 32);
    const v1asked2 = await open(a, 'g', { lease: { key: 2, state: RWH, v2: { epoch: 0x4711 } } });
    assert.equal(v1asked2.lease!.length, 32, 'the version the lease was made with');
    const old = client(2);
    const at21 = await open(old, 'h', { lease: { key: 3, state: RWH, v2: { epoch: 0x4711 } } });
    assert.equal(at21.lease!.length, 32, 'at 2.1 a v2 context is read as v1');
    await srv.close();
  });

  it('a break carries the next epoch; its further steps and the acknowledgments add none; a v1 lease breaks with epoch 0', async () => {
    const { srv, client, open } = await setup(30_000);
    const a = client(1, true);
    const b = client(2, true);
    const first = await open(a, 'f', { lease: { key: 1, state: RWH, v2: { epoch: 0x11 } } });
    assert.equal(first.lease!.readUInt16LE(48), 0x12);
    const plain = open(b, 'f');
    await until(() => a.sent.length === 1);
    assert.deepEqual(leaseBreakOf(a.sent[0]!), { from: RWH, to: RH, ack: true });
    assert.equal(a.sent[0]!.readUInt16LE(2), 0x13, 'NewEpoch: the lease epoch + 1');
    // A same-key open meanwhile: the old state, BREAK_IN_PROGRESS and the new epoch.
    const during = await open(a, 'f', { lease: { key: 1, state: RWH, v2: { epoch: 0 } } });
    assert.equal(during.leaseState, RWH);
    assert.equal(during.lease!.readUInt32LE(20), 0x2);
    assert.equal(during.lease!.readUInt16LE(48), 0x13);
    // An overwrite asks for none during the break: the ack of RH goes on in steps, same epoch.
    const overwrite = open(b, 'f', { disposition: CreateDisposition.OVERWRITE });
    await until(() => first.open.lease?.required === Caching.NONE);
    ackLease(a, first.open, a.sent[0]!, RH);
    await until(() => a.sent.length === 2);
    assert.deepEqual(leaseBreakOf(a.sent[1]!), { from: RH, to: Caching.READ, ack: true });
    assert.equal(a.sent[1]!.readUInt16LE(2), 0x13, 'a further step of the same break');
    ackLease(a, first.open, a.sent[1]!, Caching.READ);
    await Promise.all([plain, overwrite]);
    await until(() => a.sent.length === 3);
    assert.deepEqual(leaseBreakOf(a.sent[2]!), { from: Caching.READ, to: Caching.NONE, ack: false });
    assert.equal(a.sent[2]!.readUInt16LE(2), 0x13, 'the last step too');
    await srv.close();

    const s2 = await setup();
    const c = s2.client(3, true);
    const d = s2.client(4, true);
    const v1 = await s2.open(c, 'f', { lease: { key: 1, state: RWH } });
    c.onBreak = (body) => ackLease(c, v1.open, body, body.readUInt32LE(28));
    await s2.open(d, 'f', {});
    assert.equal(c.sent.length, 1);
    assert.equal(c.sent[0]!.readUInt16LE(2), 0, 'a v1 lease: NewEpoch 0');
    await s2.srv.close();
  });

  it("a v2 lease's break goes to its client's oldest 3.x connection with a session of the lease's user", async () => {
    const { srv, client, open } = await setup();
    const a = client(1, true);
    Object.assign(a.ctx.session, { owner: { name: 'Alice' } });
    const heard: string[] = [];
    const channel = (name: string, user: string) =>
      addLeaseChannel(a.ctx.fs, a.caching.clientGuid, {
        notify: () => (heard.push(name), true),
        serves: (u) => u === user,
      });
    // Oldest first: a connection naming the same ClientGuid without alice's session hears nothing.
    const stranger = channel('stranger', 'mallory');
    const dropFirst = channel('first', 'alice');
    channel('second', 'alice');
    const other = client(2, true);
    const held = await open(a, 'f', { lease: { key: 1, state: Caching.READ, v2: { epoch: 0 } } });
    assert.ok(held.open);
    // A write through another client's open breaks R to none (no ack).
    await open(other, 'f', { disposition: CreateDisposition.OVERWRITE_IF });
    assert.deepEqual(heard, ['first']);
    assert.equal(a.sent.length, 0, "not on the open's own connection");
    dropFirst();
    const again = await open(a, 'g', { lease: { key: 2, state: Caching.READ, v2: { epoch: 0 } } });
    assert.ok(again.open);
    await open(other, 'g', { disposition: CreateDisposition.OVERWRITE_IF });
    assert.deepEqual(heard, ['first', 'second'], 'the oldest left');
    stranger();
    // A version 1 lease's break goes to its open's connection, whatever the channels.
    const v1 = await open(a, 'h', { lease: { key: 3, state: Caching.READ } });
    assert.ok(v1.open);
    await open(other, 'h', { disposition: CreateDisposition.OVERWRITE_IF });
    assert.equal(a.sent.length, 1);
    assert.deepEqual(heard, ['first', 'second']);
    await srv.close();
  });
});

/**
 * A lease is its user's (lease.ts leaseIdOf): ClientGuid and LeaseKey are the client's to choose and
 * travel in the clear, so another user (mallory, on a connection of her own) can send alice's.
 */
describe("leases under another user's ClientGuid and key", () => {
  const RH = Caching.READ | Caching.HANDLE;
  /** Makes `cl`'s session one that `user` established (null: a guest's), with that session id. */
  const as = (cl: Client, user: string | null, sessionId: number): Client => {
    Object.assign(cl.ctx.session, { id: sessionId, owner: user === null ? null : { name: user } });
    return cl;
  };

  it("another user's open does not join the lease: it keeps its state and epoch, and is broken only as by any other open", async () => {
    const { srv, client, open } = await setup(30_000);
    const alice = as(client(1, true), 'Alice', 11);
    const mallory = as(client(1, true), 'mallory', 12);
    const mine = await open(alice, 'f', { lease: { key: 1, state: RH, v2: { epoch: 0x100 } } });
    const lease = mine.open.lease!;
    assert.equal(mine.lease!.readUInt16LE(48), 0x101);
    // Asked for what alice's lease holds: alice's RH needs no break, and mallory's lease is her own.
    const theirs = await open(mallory, 'f', { lease: { key: 1, state: RH, v2: { epoch: 0x500 } } });
    assert.notEqual(theirs.open.lease, lease, 'a lease of her own');
    assert.equal(theirs.lease!.readUInt16LE(48), 0x501, "her request's epoch + 1, not alice's");
    assert.deepEqual([...lease.opens], [mine.open], "alice's lease has alice's open only");
    assert.equal(lease.state, RH);
    assert.equal(lease.epoch, 0x101);
    assert.equal(alice.sent.length, 0);
    await srv.close();

    // Write caching: alice's lease is broken as by any other open (she may have dirty data), and
    // mallory gets no write caching beside it (before, she joined it: RWH, with no break).
    const s2 = await setup(30_000);
    const a = as(s2.client(1, true), 'alice', 21);
    const m = as(s2.client(1, true), 'mallory', 22);
    const held = await s2.open(a, 'f', { lease: { key: 1, state: RWH, v2: { epoch: 0 } } });
    a.onBreak = (body) => ackLease(a, held.open, body, body.readUInt32LE(28));
    const got = await s2.open(m, 'f', { lease: { key: 1, state: RWH, v2: { epoch: 0 } } });
    assert.equal(got.leaseState, RH);
    assert.notEqual(got.open.lease, held.open.lease);
    assert.deepEqual(a.sent.map(leaseBreakOf), [{ from: RWH, to: RH, ack: true }]);
    assert.equal(held.open.lease!.state, RH);
    assert.equal(held.open.lease!.opens.size, 1);
    await s2.srv.close();
  });

  it("another user's acknowledgment of the break is an unknown lease and changes nothing; the owner's own goes through", async () => {
    const { srv, client, open } = await setup(30_000);
    const alice = as(client(1), 'alice', 11);
    const mallory = as(client(1), 'mallory', 12);
    const bob = as(client(2), 'bob', 13);
    const mine = await open(alice, 'f', { lease: { key: 1, state: RWH } });
    const lease = mine.open.lease!;
    let opened = false;
    const other = open(bob, 'f').then((o) => ((opened = true), o));
    await until(() => alice.sent.length === 1);
    const body = alice.sent[0]!;
    assert.deepEqual(leaseBreakOf(body), { from: RWH, to: RH, ack: true });
    for (const state of [RH, Caching.READ, Caching.NONE])
      assert.throws(
        () => ackLease(mallory, mine.open, body, state),
        (e: unknown) => e instanceof SmbStatusError && e.status === NtStatus.OBJECT_NAME_NOT_FOUND,
        'answered as an unknown key',
      );
    assert.ok(lease.breaking, 'the break still waits for alice');
    assert.equal(lease.state, RWH);
    assert.equal(lease.requested, RH);
    await new Promise((r) => setImmediate(r));
    assert.ok(!opened, "bob's open still waits");
    ackLease(alice, mine.open, body, RH);
    assert.ok(!lease.breaking);
    assert.equal(lease.state, RH);
    assert.equal((await other).level, OplockLevel.NONE);
    assert.ok(opened);
    await srv.close();
  });

  it("another user's lease under the key on another file does not refuse the owner's open; a key is still one file's for each", async () => {
    const { srv, client, open } = await setup();
    const alice = as(client(1), 'alice', 11);
    const mallory = as(client(1), 'mallory', 12);
    const squat = await open(mallory, 'g', { lease: { key: 1, state: RWH } });
    assert.equal(squat.leaseState, RWH);
    // A new file (the key is looked at before it is made) and an existing one.
    const made = await open(alice, 'f', { lease: { key: 1, state: RWH }, disposition: CreateDisposition.CREATE });
    assert.equal(made.leaseState, RWH);
    const again = await open(alice, 'f', { lease: { key: 1, state: RWH } });
    assert.equal(again.open.lease, made.open.lease);
    assert.equal(mallory.sent.length + alice.sent.length, 0);
    assert.equal(squat.open.lease!.state, RWH);
    // Each one's key is still one file's: alice's on mallory's file is refused, and mallory's on
    // alice's (attribute opens: they break nothing first).
    const stat = { lease: { key: 1, state: Caching.READ }, access: 0x80 };
    assert.equal(await status(open(alice, 'g', stat)), NtStatus.INVALID_PARAMETER);
    assert.equal(await status(open(mallory, 'f', stat)), NtStatus.INVALID_PARAMETER);
    await srv.close();
  });

  it("a guest's lease is its session's: another guest session's ack is an unknown lease, its same key another lease", async () => {
    const { srv, client, open } = await setup(30_000);
    const guest = as(client(1), null, 11);
    const other = as(client(1), null, 12);
    const mine = await open(guest, 'f', { lease: { key: 1, state: RH } });
    const lease = mine.open.lease!;
    // A break (an overwrite takes all caching): only the guest's session may acknowledge it.
    const overwrite = open(as(client(2), 'bob', 13), 'f', { disposition: CreateDisposition.OVERWRITE });
    await until(() => guest.sent.length === 1);
    const body = guest.sent[0]!;
    assert.throws(
      () => ackLease(other, mine.open, body, Caching.NONE),
      (e: unknown) => e instanceof SmbStatusError && e.status === NtStatus.OBJECT_NAME_NOT_FOUND,
    );
    assert.ok(lease.breaking);
    ackLease(guest, mine.open, body, Caching.NONE);
    assert.ok(!lease.breaking);
    await overwrite;
    const again = await open(guest, 'f', { lease: { key: 1, state: Caching.READ } });
    assert.equal(again.open.lease, lease, 'the same session finds it');
    for (const cl of [other, as(client(1), 'guest', 14)]) {
      const theirs = await open(cl, 'f', { lease: { key: 1, state: Caching.READ } });
      assert.notEqual(theirs.open.lease, lease);
    }
    assert.equal(lease.opens.size, 2);
    await srv.close();
  });
});
