// Oplocks and leases across protocols: an SMB client (a small raw client on the engine's codec,
// test/helpers/smb-raw.ts: smbclient cannot hold a lease) holds a batch oplock or an RWH lease on
// a file; an NFS client (the test RPC client, real NFSv3 over TCP) writes, truncates or removes
// it. The holder sees the break notification, the NFS call completes (after the acknowledgment,
// after the break timeout when the holder stays silent, at once when the holder is gone), and the
// data is what NFS wrote.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { NfsOps } from '../helpers/nfs-ops.js';
import { StableHow } from '../helpers/rpc-client.js';
import { LEASE_H, LEASE_R, LEASE_W, RawSmbClient } from '../helpers/smb-raw.js';
import { startBothProtocols, type BothProtocols } from '../helpers/smb-nfs.js';

const USER = 'oplockuser';
const PASSWORD = 'oplock-user-Passw0rd';
const UID = 1000;
/**
 * The server's break timeout in this test (adapters.smb.oplock_break_timeout): long enough for a
 * second client to log in and work while a silent holder keeps an NFS WRITE waiting, on a loaded machine.
 */
const BREAK_TIMEOUT_MS = 10_000;

describe('SMB oplocks and leases broken by NFS', { timeout: 300_000 }, () => {
  let both: BothProtocols;
  let nfs: NfsOps;
  let root: Buffer;
  const smb = (): Promise<RawSmbClient> => both.smb();

  /** An NFS file handle for `name`, created through NFS when missing. */
  const nfsFile = async (name: string): Promise<Buffer> => {
    const found = await nfs.lookup(root, name);
    if (found.status === 0 && found.fh) return found.fh;
    const made = await nfs.create(root, name);
    assert.equal(made.status, 0, `NFS CREATE ${name}`);
    return made.fh!;
  };

  before(async () => {
    both = await startBothProtocols([{ username: USER, password: PASSWORD, uid: UID }], {
      env: { DITTOFS_SMB_OPLOCK_BREAK_TIMEOUT: String(BREAK_TIMEOUT_MS) },
    });
    ({ nfs, root } = both);
  });

  after(async () => {
    await both?.close();
  });

  it('an NFS WRITE breaks a batch oplock, waits for the acknowledgment, and its data is what SMB reads', async () => {
    const c = await smb();
    const { fileId, oplock } = await c.create('batch.dat', { oplock: 9 });
    assert.equal(oplock, 9, 'batch oplock granted');
    await c.write(fileId, 0, Buffer.from('smb-data'));
    let ackedAt = 0;
    c.onBreak = (b) => {
      if (b.kind !== 'oplock') return;
      // A client flushes its cached writes before it acknowledges; here a short delay stands for it.
      setTimeout(() => {
        ackedAt = Date.now();
        void c.ackOplock(b.fileId, 0);
      }, 300);
    };
    const fh = await nfsFile('batch.dat');
    const w = await nfs.write(fh, 0, Buffer.from('NFS'), StableHow.FILE_SYNC);
    const doneAt = Date.now();
    assert.equal(w.status, 0);
    assert.equal(c.breaks.length, 1);
    const b = c.breaks[0]!;
    assert.equal(b.kind, 'oplock');
    assert.ok(b.kind === 'oplock' && b.fileId.equals(fileId) && b.level === 0, 'broken to none');
    assert.ok(ackedAt > 0 && doneAt >= ackedAt, 'the NFS WRITE completed after the acknowledgment');
    assert.equal((await c.read(fileId, 0, 64)).toString(), 'NFS-data');
    // No oplock left: a second NFS write sends nothing.
    assert.equal((await nfs.write(fh, 8, Buffer.from('!'), StableHow.FILE_SYNC)).status, 0);
    assert.equal(c.breaks.length, 1);
    await c.close(fileId);
  });

  it('an NFS WRITE breaks an RWH lease to none; an NFS SETATTR size of a re-granted lease breaks it again', async () => {
    const c = await smb();
    const key = Buffer.alloc(16, 0x5a);
    const { fileId, oplock, leaseState } = await c.create('lease.dat', { lease: { key, state: LEASE_R | LEASE_W | LEASE_H } });
    assert.equal(oplock, 0xff);
    assert.equal(leaseState, LEASE_R | LEASE_W | LEASE_H);
    c.onBreak = (b) => {
      if (b.kind === 'lease' && b.ackRequired) void c.ackLease(b.key, b.next);
    };
    const fh = await nfsFile('lease.dat');
    assert.equal((await nfs.write(fh, 0, Buffer.from('hello'), StableHow.UNSTABLE)).status, 0);
    await c.waitForBreaks(1, 5000);
    const b = c.breaks[0]!;
    assert.ok(b.kind === 'lease', 'a lease break');
    assert.ok(b.key.equals(key));
    assert.equal(b.current, LEASE_R | LEASE_W | LEASE_H);
    assert.equal(b.next, 0);
    assert.equal(b.ackRequired, true);
    // The same key asks again and gets the lease back; an NFS truncate breaks it once more.
    const again = await c.create('lease.dat', { lease: { key, state: LEASE_R | LEASE_H } });
    assert.equal(again.leaseState, LEASE_R | LEASE_H);
    const r = await nfs.setattr(fh, { size: 2 });
    assert.equal(r.status, 0);
    await c.waitForBreaks(2, 5000);
    assert.equal(c.breaks[1]!.kind === 'lease' && c.breaks[1]!.current, LEASE_R | LEASE_H);
    assert.equal((await c.read(fileId, 0, 64)).toString(), 'he');
    await c.close(again.fileId);
    await c.close(fileId);
  });

  it('a holder that never acknowledges holds an NFS WRITE for the break timeout, not longer', async () => {
    const c = await smb();
    const { fileId, oplock } = await c.create('silent.dat', { oplock: 9 });
    assert.equal(oplock, 9);
    const fh = await nfsFile('silent.dat');
    const started = Date.now();
    const writing = nfs.write(fh, 0, Buffer.from('late'), StableHow.FILE_SYNC).then((w) => ({ ...w, at: Date.now() }));
    // While the NFS WRITE waits, another SMB client logs in, opens, writes and closes: the wait blocks nobody else.
    await c.waitForBreaks(1, 5000);
    const other = await smb();
    const o = await other.create('other.dat');
    await other.write(o.fileId, 0, Buffer.from('x'));
    await other.close(o.fileId);
    const otherDone = Date.now();
    const w = await writing;
    assert.equal(w.status, 0);
    assert.equal(c.breaks.length, 1);
    assert.ok(w.at - started >= BREAK_TIMEOUT_MS - 200, `waited ${w.at - started} ms for the timeout`);
    assert.ok(otherDone < w.at, 'the other client was served during the wait');
    await c.close(fileId);
  });

  it('a holder that disconnects releases its oplock: an NFS REMOVE goes through at once', async () => {
    const c = await smb();
    const { oplock } = await c.create('gone.dat', { oplock: 9 });
    assert.equal(oplock, 9);
    c.destroy();
    const fh = await nfsFile('gone.dat');
    assert.ok(fh);
    // The server notices the closed socket; the remove then finds no holder and no wait.
    const deadline = Date.now() + 10_000;
    let status = -1;
    let took = 0;
    while (Date.now() < deadline) {
      const started = Date.now();
      status = (await nfs.remove(root, 'gone.dat')).status;
      took = Date.now() - started;
      if (status === 0) break;
    }
    assert.equal(status, 0);
    assert.ok(took < BREAK_TIMEOUT_MS, `REMOVE took ${took} ms`);
  });

  it('share modes of an SMB open refuse a conflicting second SMB open from another connection', async () => {
    const a = await smb();
    const b = await smb();
    const first = await a.create('shared.dat');
    // The raw client asks for share all; a second open with share none is refused.
    const r = await b.request(5, createNoShare('shared.dat'));
    assert.equal(r.status, 0xc0000043, 'STATUS_SHARING_VIOLATION');
    await a.close(first.fileId);
    const r2 = await b.request(5, createNoShare('shared.dat'));
    assert.equal(r2.status, 0);
  });
});

/** A CREATE (OPEN_IF, all access) that shares nothing. */
function createNoShare(name: string): Buffer {
  const n = Buffer.from(name, 'utf16le');
  const b = Buffer.alloc(56 + n.length);
  b.writeUInt16LE(57, 0);
  b.writeUInt32LE(2, 4);
  b.writeUInt32LE(0x001f01ff, 24);
  b.writeUInt32LE(0x80, 28);
  b.writeUInt32LE(0, 32);
  b.writeUInt32LE(3, 36);
  b.writeUInt32LE(0x40, 40);
  b.writeUInt16LE(64 + 56, 44);
  b.writeUInt16LE(n.length, 46);
  n.copy(b, 56);
  return b;
}
