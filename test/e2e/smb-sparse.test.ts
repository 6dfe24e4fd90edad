// Sparse files through both protocols: an SMB client marks a file sparse and zeroes ranges of it
// (FSCTL_SET_ZERO_DATA); NFS reads the zeros at once, the size stays, and
// FSCTL_QUERY_ALLOCATED_RANGES reports the range freed up to the end of the file as a hole.
// Real clients: the raw SMB 2.1 client over TCP and the NFSv3 test client.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { StableHow } from '../helpers/rpc-client.js';
import { startBothProtocols, type BothProtocols } from '../helpers/smb-nfs.js';

const USER = 'sparseuser';
const PASSWORD = 'sparse-user-Passw0rd';
const UID = 1000;
const SET_SPARSE = 0x000900c4;
const QUERY_ALLOCATED_RANGES = 0x000940cf;
const SET_ZERO_DATA = 0x000980c8;
const MiB = 1024 * 1024;

const pair = (a: number, b: number): Buffer => {
  const buf = Buffer.alloc(16);
  buf.writeBigInt64LE(BigInt(a), 0);
  buf.writeBigInt64LE(BigInt(b), 8);
  return buf;
};

describe('SMB sparse files against NFS', { timeout: 300_000 }, () => {
  let both: BothProtocols;

  before(async () => {
    both = await startBothProtocols([{ username: USER, password: PASSWORD, uid: UID }]);
  });

  after(async () => {
    if (process.env.SHOW_LOG) console.log(both?.srv.output());
    await both?.close();
  });

  it('a range zeroed over SMB reads as zeros over NFS, the size stays, and the freed tail is a hole', async () => {
    const { nfs, root } = both;
    const c = await both.smb();
    const data = randomBytes(3 * MiB);
    const { fileId } = await c.create('sparse.bin');
    for (let at = 0; at < data.length; at += 64 * 1024) await c.write(fileId, at, data.subarray(at, at + 64 * 1024));
    assert.equal((await c.fsctl(fileId, SET_SPARSE, Buffer.alloc(0))).status, 0);
    assert.equal((await c.fsctl(fileId, SET_ZERO_DATA, pair(100, 5000))).status, 0, 'inside the file');
    assert.equal((await c.fsctl(fileId, SET_ZERO_DATA, pair(MiB, 16 * MiB))).status, 0, 'up to the end and past it');

    const want = Buffer.from(data);
    want.fill(0, 100, 5000);
    want.fill(0, MiB);
    const fh = (await nfs.lookup(root, 'sparse.bin')).fh!;
    assert.equal((await nfs.getattr(fh)).attrs?.size, 3 * MiB, 'the size did not change');
    assert.ok((await nfs.readAll(fh, 3 * MiB)).equals(want), 'NFS reads the zeros');
    assert.ok((await c.read(fileId, MiB - 10, 20)).equals(want.subarray(MiB - 10, MiB + 10)), 'SMB too');

    const q = await c.fsctl(fileId, QUERY_ALLOCATED_RANGES, pair(0, 3 * MiB));
    assert.equal(q.status, 0);
    assert.deepEqual([q.output.length, Number(q.output.readBigInt64LE(0)), Number(q.output.readBigInt64LE(8))], [16, 0, MiB]);

    // NFS writes into the hole: the data reads back and shows in the ranges.
    assert.equal((await nfs.write(fh, 2 * MiB, Buffer.from('nfs'), StableHow.FILE_SYNC)).status, 0);
    assert.ok((await c.read(fileId, 2 * MiB, 3)).equals(Buffer.from('nfs')));
    const q2 = await c.fsctl(fileId, QUERY_ALLOCATED_RANGES, pair(0, 3 * MiB));
    assert.equal(Number(q2.output.readBigInt64LE(16)), 2 * MiB, 'a second range where NFS wrote');
    await c.close(fileId);
  });
});
