// An SMB session that re-authenticates as anonymous keeps its opens (their rights were decided at
// CREATE) and can only lose rights: it opens, renames and links nothing more. Acting as the
// anonymous user (nobody, 65534), it would otherwise own what nobody owns, here a file an NFS
// AUTH_NONE client made, which its own user may not write.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { AUTH_NONE, authSys } from '../helpers/rpc-client.js';
import { NfsOps } from '../helpers/nfs-ops.js';
import { startBothProtocols, type BothProtocols } from '../helpers/smb-nfs.js';
import { bodies, SmbCommand, SmbTestClient } from '../helpers/smb-client.js';
import { TestNtlmClient } from '../helpers/ntlm-client.js';

const PASSWORD = 'anon-reauth-Passw0rd-1';
const ACCESS_DENIED = 0xc0000022;
const MORE_PROCESSING_REQUIRED = 0xc0000016;
const OPEN = 1;
const FILE_READ_DATA = 0x1;
const FILE_WRITE_DATA = 0x2;
const DELETE = 0x10000;
const FSCTL_SET_SPARSE = 0x000900c4;
const FSCTL_SET_ZERO_DATA = 0x000980c8;
const FILE_ATTRIBUTE_SPARSE_FILE = 0x200;

async function reauthenticate(c: SmbTestClient, ntlm: TestNtlmClient): Promise<number> {
  const first = await c.request(SmbCommand.SESSION_SETUP, bodies.sessionSetup(ntlm.negotiate()));
  assert.equal(first.status, MORE_PROCESSING_REQUIRED);
  const off = first.body.readUInt16LE(4) - 64;
  const token = first.body.subarray(off, off + first.body.readUInt16LE(6));
  return (await c.request(SmbCommand.SESSION_SETUP, bodies.sessionSetup(await ntlm.authenticate(token)))).status;
}

function createBody(name: string, disposition: number, access: number): Buffer {
  const b = bodies.create(name, disposition);
  b.writeUInt32LE(access, 24);
  return b;
}

function setBasicAttrs(fileId: Buffer, attrs: number): Buffer {
  const b = Buffer.alloc(32 + 40);
  b.writeUInt16LE(33, 0);
  b.writeUInt8(1, 2); // SMB2_0_INFO_FILE
  b.writeUInt8(4, 3); // FileBasicInformation
  b.writeUInt32LE(40, 4);
  b.writeUInt16LE(64 + 32, 8);
  fileId.copy(b, 16);
  b.writeUInt32LE(attrs, 32 + 32);
  return b;
}

/** An IOCTL request body of an FSCTL (MS-SMB2 2.2.31, SMB2_0_IOCTL_IS_FSCTL). */
function fsctlBody(fileId: Buffer, ctlCode: number, input: Buffer): Buffer {
  const b = Buffer.alloc(56);
  b.writeUInt16LE(57, 0);
  b.writeUInt32LE(ctlCode, 4);
  fileId.copy(b, 8);
  b.writeUInt32LE(input.length ? 64 + 56 : 0, 24); // InputOffset
  b.writeUInt32LE(input.length, 28);
  b.writeUInt32LE(0, 44); // MaxOutputResponse
  b.writeUInt32LE(1, 48); // SMB2_0_IOCTL_IS_FSCTL
  return Buffer.concat([b, input.length ? input : Buffer.alloc(1)]);
}

describe('SMB re-authentication as anonymous', { timeout: 120_000 }, () => {
  let both: BothProtocols;
  before(async () => {
    both = await startBothProtocols([{ username: 'alice', password: PASSWORD, uid: 1000 }]);
  });
  after(async () => {
    await both?.close();
  });

  it("keeps the session's opens, opens and renames nothing more, and gives no rights on nobody's files", async () => {
    // nobody.txt, owned by nobody (65534), mode 0644: made by an AUTH_NONE NFS client.
    const anon = await NfsOps.open(both.srv.nfsPort, AUTH_NONE);
    const made = await anon.create(await anon.mount('/export'), 'nobody.txt', { mode: 0o644 });
    assert.equal(made.status, 0);
    assert.equal((await anon.write(made.fh!, 0, Buffer.from('nobody-owned data'))).status, 0);
    assert.equal((await anon.getattr(made.fh!)).attrs!.uid, 65534);
    anon.close();

    const c = await SmbTestClient.connect(both.srv.smbPort);
    try {
      await c.logon('alice', PASSWORD, 'export');
      assert.equal((await c.request(SmbCommand.CREATE, createBody('nobody.txt', OPEN, FILE_WRITE_DATA))).status, ACCESS_DENIED);
      const mine = await c.open('mine.txt');

      assert.equal(await reauthenticate(c, new TestNtlmClient({ user: '', password: '', anonymous: true, keyExch: false })), 0);
      for (const access of [FILE_WRITE_DATA | DELETE, FILE_READ_DATA])
        assert.equal(
          (await c.request(SmbCommand.CREATE, createBody('nobody.txt', OPEN, access))).status,
          ACCESS_DENIED,
          `CREATE of nobody.txt for 0x${access.toString(16)} after the anonymous re-authentication`,
        );
      // The open made before is still served (smbtorture reauth2).
      assert.equal((await c.request(SmbCommand.QUERY_INFO, bodies.queryInfo(mine))).status, 0);

      const nfs = await NfsOps.open(both.srv.nfsPort, authSys(0, 0));
      const fh = (await nfs.lookup(await nfs.mount('/export'), 'nobody.txt')).fh!;
      assert.equal((await nfs.read(fh, 0, 100)).data.toString(), 'nobody-owned data');
      nfs.close();

      // Back as alice: her rights again, no more.
      assert.equal(await reauthenticate(c, new TestNtlmClient({ user: 'alice', password: PASSWORD })), 0);
      assert.equal((await c.request(SmbCommand.CREATE, createBody('nobody.txt', OPEN, FILE_READ_DATA))).status, 0);
      assert.equal((await c.request(SmbCommand.CREATE, createBody('nobody.txt', OPEN, FILE_WRITE_DATA))).status, ACCESS_DENIED);
    } finally {
      c.close();
    }
  });

  /**
   * `name`, made over NFS by AUTH_NONE (owned by nobody, mode 0666: alice may open it, and nobody,
   * its owner, could set its attributes), opened by alice, who then writes `before` (if given) and
   * re-authenticates as anonymous; and a root NFS client to look at the file. The caller closes both.
   */
  const keptByAnonymous = async (name: string, before?: Buffer): Promise<{ c: SmbTestClient; nfs: NfsOps; fid: Buffer }> => {
    const anon = await NfsOps.open(both.srv.nfsPort, AUTH_NONE);
    const made = await anon.create(await anon.mount('/export'), name, { mode: 0o666 });
    assert.equal(made.status, 0);
    anon.close();
    const c = await SmbTestClient.connect(both.srv.smbPort);
    const nfs = await NfsOps.open(both.srv.nfsPort, authSys(0, 0));
    await c.logon('alice', PASSWORD, 'export');
    const fid = await c.open(name);
    if (before) assert.equal((await c.request(SmbCommand.WRITE, bodies.write(fid, 0, before))).status, 0);
    assert.equal(await reauthenticate(c, new TestNtlmClient({ user: '', password: '', anonymous: true, keyExch: false })), 0);
    return { c, nfs, fid };
  };

  it('changes no file information through the opens it kept, as nobody (a file nobody owns keeps its mode)', async () => {
    const { c, nfs, fid } = await keptByAnonymous('nobody2.txt');
    try {
      // READONLY from nobody's owner would clear the mode's write bits (files.ts setInfo).
      assert.equal((await c.request(SmbCommand.SET_INFO, setBasicAttrs(fid, 0x1))).status, ACCESS_DENIED);
      const fh = (await nfs.lookup(await nfs.mount('/export'), 'nobody2.txt')).fh!;
      assert.equal((await nfs.getattr(fh)).attrs!.mode & 0o777, 0o666);
    } finally {
      nfs.close();
      c.close();
    }
  });
  it("marks no kept open's file sparse (an attribute), but still writes its data", async () => {
    const { c, nfs, fid } = await keptByAnonymous('nobody3.txt', Buffer.from('abcdefgh'));
    try {
      assert.equal((await c.request(SmbCommand.IOCTL, fsctlBody(fid, FSCTL_SET_SPARSE, Buffer.alloc(0)))).status, ACCESS_DENIED);
      const q = await c.request(SmbCommand.QUERY_INFO, bodies.queryInfo(fid));
      assert.equal(q.status, 0);
      // FileAllInformation opens with FileBasicInformation: four times, then FileAttributes.
      const attrs = q.body.readUInt32LE(q.body.readUInt16LE(2) - 64 + 32);
      assert.equal(attrs & FILE_ATTRIBUTE_SPARSE_FILE, 0, 'the file is not marked sparse');
      // Data goes on being written through the open, as a WRITE: SET_ZERO_DATA too.
      assert.equal((await c.request(SmbCommand.WRITE, bodies.write(fid, 0, Buffer.from('XY')))).status, 0);
      const zero = Buffer.alloc(16);
      zero.writeBigInt64LE(2n, 0);
      zero.writeBigInt64LE(4n, 8);
      assert.equal((await c.request(SmbCommand.IOCTL, fsctlBody(fid, FSCTL_SET_ZERO_DATA, zero))).status, 0);
      const fh = (await nfs.lookup(await nfs.mount('/export'), 'nobody3.txt')).fh!;
      assert.deepEqual((await nfs.read(fh, 0, 100)).data, Buffer.from('XY\0\0efgh', 'latin1'));
    } finally {
      nfs.close();
      c.close();
    }
  });
});
