// An SMB client holding write caching (a batch oplock, or an RWH lease) may hold written data the
// server has not seen yet. An NFS READ of the file breaks that caching first: the client writes
// its data back, then the read sees it (as an NFS WRITE breaks it, and as Linux's nfsd breaks a
// write lease before a read); so does a GETATTR, whose size the client reads up to. Read and
// handle caching stay.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { XdrReader } from '../../server/src/rpc/xdr.js';
import { args, NfsProc, StableHow } from '../helpers/rpc-client.js';
import { startBothProtocols, type BothProtocols } from '../helpers/smb-nfs.js';
import { LEASE_H, LEASE_R, LEASE_W, type RawSmbClient } from '../helpers/smb-raw.js';

const USER = 'breakuser';
const PASSWORD = 'break-user-Passw0rd';
const BATCH = 9;
const LEVEL_II = 1;

describe('NFS READ and SMB write caching', { timeout: 120_000 }, () => {
  let both: BothProtocols;
  before(async () => {
    both = await startBothProtocols([{ username: USER, password: PASSWORD, uid: 1000 }]);
  });
  after(async () => {
    await both?.close();
  });

  it('control: an NFS WRITE breaks a batch oplock', async () => {
    const c = await both.smb();
    const { fileId, oplock } = await c.create('w.dat', { oplock: BATCH });
    assert.equal(oplock, BATCH);
    c.onBreak = () => void c.ackOplock(fileId, 0);
    const fh = (await both.nfs.lookup(both.root, 'w.dat')).fh!;
    await both.nfs.writeV(fh, 0, Buffer.from('x'), StableHow.UNSTABLE);
    assert.ok(c.breaks.length >= 1, 'break sent before the NFS write');
  });

  it('an NFS READ breaks a batch oplock to level II and reads what the client wrote back on the break', async () => {
    const c = await both.smb();
    const { fileId, oplock } = await c.create('r.dat', { oplock: BATCH });
    assert.equal(oplock, BATCH);
    await c.write(fileId, 0, Buffer.from('seen by the server'));
    // The client's cached write goes out on the break, before its acknowledgement.
    c.onBreak = () =>
      void (async () => {
        await c.write(fileId, 0, Buffer.from('held by the client'));
        await c.ackOplock(fileId, LEVEL_II);
      })();
    const fh = (await both.nfs.lookup(both.root, 'r.dat')).fh!;
    const r = await both.nfs.read(fh, 0, 100);
    assert.equal(c.breaks.length, 1, 'one break before the NFS READ');
    assert.equal(r.data.toString(), 'held by the client');
    // Level II is read caching: more NFS reads break nothing.
    await both.nfs.read(fh, 0, 100);
    assert.equal(c.breaks.length, 1, 'read caching is not broken by a read');
  });

  it('an NFS GETATTR breaks write caching too, and shows the size of what the client wrote back (a client reads no further than it)', async () => {
    const c = await both.smb();
    const { fileId, oplock } = await c.create('g.dat', { oplock: BATCH });
    assert.equal(oplock, BATCH);
    c.onBreak = () =>
      void (async () => {
        await c.write(fileId, 0, Buffer.from('held by the client'));
        await c.ackOplock(fileId, LEVEL_II);
      })();
    const fh = (await both.nfs.lookup(both.root, 'g.dat')).fh!;
    const attrs = (await both.nfs.getattr(fh)).attrs!;
    assert.equal(c.breaks.length, 1, 'one break before the GETATTR');
    assert.equal(attrs.size, 'held by the client'.length);
    await both.nfs.getattr(fh);
    assert.equal(c.breaks.length, 1, 'read caching is not broken');
  });

  /** The client wrote back on the break (then gave up caching), over the 4 bytes the server saw. */
  const held = Buffer.from('held by the client, 32 bytes....');

  /** `name`, 4 bytes seen by the server, batch-oplocked by a client that writes `held` on its break; the file's handle. */
  const cachedByClient = async (name: string): Promise<{ c: RawSmbClient; fh: Buffer }> => {
    const c = await both.smb();
    const { fileId, oplock } = await c.create(name, { oplock: BATCH });
    assert.equal(oplock, BATCH);
    await c.write(fileId, 0, Buffer.from('seen'));
    c.onBreak = () =>
      void (async () => {
        await c.write(fileId, 0, held);
        await c.ackOplock(fileId, 0);
      })();
    return { c, fh: (await both.nfs.lookup(both.root, name)).fh! };
  };

  it("an NFS WRITE's pre-op size is the file's after the data the client wrote back on the break", async () => {
    const { fh } = await cachedByClient('wcc.dat');
    const rep = await both.nfs.nfs(NfsProc.WRITE, args.write(fh, 1000, Buffer.from('z'), StableHow.FILE_SYNC));
    assert.equal(rep.kind, 'accepted');
    const r = (rep as { body: XdrReader }).body;
    assert.equal(r.u32(), 0, 'NFS3_OK');
    assert.equal(r.u32(), 1, 'pre-op attributes present');
    // A client that cached 4 bytes must see that the file changed before its WRITE.
    assert.equal(Number(r.u64()), held.length);
  });

  // SETATTR of a size breaks the caching too; its pre-op attributes, as a WRITE's, are the file's
  // after what the client wrote back. A size equal to the one the server saw before the break
  // still cuts the written-back data (the client's writes came first).
  for (const size of [10, 4]) {
    it(`an NFS SETATTR to size ${size}: pre-op size is the file's after the client's write-back`, async () => {
      const { c, fh } = await cachedByClient(`trunc${size}.dat`);
      const rep = await both.nfs.nfs(NfsProc.SETATTR, args.setattr(fh, { size }));
      assert.equal(rep.kind, 'accepted');
      const r = (rep as { body: XdrReader }).body;
      assert.equal(r.u32(), 0, 'NFS3_OK');
      assert.equal(r.u32(), 1, 'pre-op attributes present');
      assert.equal(Number(r.u64()), held.length, 'pre-op size');
      assert.ok(c.breaks.length >= 1, 'the oplock was broken');
      const got = await both.nfs.read(fh, 0, 100);
      assert.deepEqual(got.data, held.subarray(0, size), 'the file is the written-back data, cut');
    });
  }

  it('an NFS READ breaks an RWH lease to RH', async () => {
    const c = await both.smb();
    const key = randomBytes(16);
    const { leaseState } = await c.create('l.dat', { lease: { key, state: LEASE_R | LEASE_W | LEASE_H } });
    assert.equal(leaseState, LEASE_R | LEASE_W | LEASE_H);
    const nexts: number[] = [];
    c.onBreak = (b) => {
      if (b.kind !== 'lease') return;
      nexts.push(b.next);
      if (b.ackRequired) void c.ackLease(key, b.next);
    };
    const fh = (await both.nfs.lookup(both.root, 'l.dat')).fh!;
    await both.nfs.read(fh, 0, 100);
    assert.deepEqual(nexts, [LEASE_R | LEASE_H], 'write caching given up, read and handle kept');
  });
});
