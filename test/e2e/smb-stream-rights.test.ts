// A named stream's data is its file's: a user who may not write the file (as it is now, not as it
// was when the stream was made) cannot empty one of its streams with an overwriting CREATE, which
// asks for no write access of its own; one who may write it now writes its streams. SMB for the
// streams, NFS to change the file's mode.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startBothProtocols, type BothProtocols } from '../helpers/smb-nfs.js';
import { bodies, SmbCommand, SmbTestClient } from '../helpers/smb-client.js';

const PASSWORD = 'stream-rights-Passw0rd-1';
const ACCESS_DENIED = 0xc0000022;
const OPEN = 1;
const OVERWRITE = 4;
const OVERWRITE_IF = 5;
const SUPERSEDE = 0;
const FILE_READ_DATA = 0x1;
const FILE_WRITE_DATA = 0x2;

function createBody(name: string, disposition: number, access: number): Buffer {
  const b = bodies.create(name, disposition);
  b.writeUInt32LE(access, 24);
  return b;
}

describe('SMB named streams and the rights on their file', { timeout: 120_000 }, () => {
  let both: BothProtocols;
  before(async () => {
    both = await startBothProtocols([
      { username: 'alice', password: PASSWORD, uid: 1000 },
      { username: 'bob', password: PASSWORD, uid: 2000 },
    ]);
  });
  after(async () => {
    await both?.close();
  });

  it('a user who may not write the file cannot overwrite its stream, made while he could', async () => {
    const a = await SmbTestClient.connect(both.srv.smbPort);
    await a.logon('alice', PASSWORD, 'export');
    const b = await SmbTestClient.connect(both.srv.smbPort);
    await b.logon('bob', PASSWORD, 'export');
    try {
      // alice makes f, lets everyone write it for a while, makes f:s, then takes write away.
      await a.request(SmbCommand.CLOSE, bodies.close(await a.open('f')));
      const fh = (await both.nfs.lookup(both.root, 'f')).fh!;
      assert.equal((await both.nfs.setattr(fh, { mode: 0o666 })).status, 0);
      const s = await a.open('f:s');
      assert.equal((await a.request(SmbCommand.WRITE, bodies.write(s, 0, Buffer.from('alice-stream')))).status, 0);
      await a.request(SmbCommand.CLOSE, bodies.close(s));
      assert.equal((await both.nfs.setattr(fh, { mode: 0o644 })).status, 0);

      assert.equal((await b.request(SmbCommand.CREATE, createBody('f:s', OPEN, FILE_WRITE_DATA))).status, ACCESS_DENIED);
      assert.equal((await b.request(SmbCommand.CREATE, createBody('f', OVERWRITE, FILE_READ_DATA))).status, ACCESS_DENIED);
      for (const disp of [OVERWRITE, OVERWRITE_IF, SUPERSEDE])
        assert.equal(
          (await b.request(SmbCommand.CREATE, createBody('f:s', disp, FILE_READ_DATA))).status,
          ACCESS_DENIED,
          `disposition ${disp} of f:s by bob`,
        );
      // Bob may still read it, and it is whole.
      const r = await b.request(SmbCommand.CREATE, createBody('f:s', OPEN, FILE_READ_DATA));
      assert.equal(r.status, 0);
      const s2 = await a.open('f:s');
      const read = await a.request(SmbCommand.READ, bodies.read(s2, 0, 100));
      assert.equal(read.status, 0);
      assert.equal(read.body.readUInt32LE(4), 'alice-stream'.length, 'the stream kept its data');
      // The owner, who may write the file, still overwrites it.
      assert.equal((await a.request(SmbCommand.CREATE, createBody('f:s', OVERWRITE, FILE_READ_DATA))).status, 0);
    } finally {
      a.close();
      b.close();
    }
  });

  it('a user the file lets write since a chmod writes its stream, made while he could not', async () => {
    const a = await SmbTestClient.connect(both.srv.smbPort);
    await a.logon('alice', PASSWORD, 'export');
    const b = await SmbTestClient.connect(both.srv.smbPort);
    await b.logon('bob', PASSWORD, 'export');
    try {
      // alice makes g and g:s while g is 0644, then lets everyone write g (NFS chmod 0666).
      await a.request(SmbCommand.CLOSE, bodies.close(await a.open('g')));
      const s = await a.open('g:s');
      assert.equal((await a.request(SmbCommand.WRITE, bodies.write(s, 0, Buffer.from('alice')))).status, 0);
      const fh = (await both.nfs.lookup(both.root, 'g')).fh!;
      assert.equal((await both.nfs.setattr(fh, { mode: 0o666 })).status, 0);
      // bob opens the stream for writing and writes it, as he may write the file now.
      const r = await b.request(SmbCommand.CREATE, createBody('g:s', OPEN, FILE_READ_DATA | FILE_WRITE_DATA));
      assert.equal(r.status, 0);
      const bs = Buffer.from(r.body.subarray(64, 80));
      assert.equal((await b.request(SmbCommand.WRITE, bodies.write(bs, 0, Buffer.from('bob')))).status, 0, "bob's WRITE of g:s");
      await b.request(SmbCommand.CLOSE, bodies.close(bs));
      const read = await a.request(SmbCommand.READ, bodies.read(s, 0, 100));
      assert.equal(read.status, 0);
      const off = read.body[2]! - 64;
      assert.equal(read.body.subarray(off, off + read.body.readUInt32LE(4)).toString(), 'bobce');
      await a.request(SmbCommand.CLOSE, bodies.close(s));
    } finally {
      a.close();
      b.close();
    }
  });
});
