// SMB share modes and byte-range locks seen by NFS clients, as on a Windows server with NFS: an
// NFS REMOVE or RENAME of a file an SMB client holds open without sharing delete is refused
// (NFS3ERR_ACCES) and the file stays; an NFS WRITE into a range an SMB client has locked is
// refused and the data stays. Once the SMB client lets go, NFS succeeds. Real clients: a raw SMB
// 2.1 client over TCP (test/helpers/smb-raw.ts) and the NFSv3 test client over TCP.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { NfsOps } from '../helpers/nfs-ops.js';
import { StableHow } from '../helpers/rpc-client.js';
import { RawSmbClient } from '../helpers/smb-raw.js';
import { startBothProtocols, type BothProtocols } from '../helpers/smb-nfs.js';

const USER = 'shareuser';
const PASSWORD = 'share-user-Passw0rd';
const UID = 1000;
const NFS3ERR_ACCES = 13;
/** FILE_SHARE_READ | FILE_SHARE_WRITE: everything but delete. */
const SHARE_RW = 3;
const STATUS_OBJECT_PATH_NOT_FOUND = 0xc000003a;

describe('SMB share modes and locks against NFS', { timeout: 300_000 }, () => {
  let both: BothProtocols;
  let nfs: NfsOps;
  let root: Buffer;
  const smb = (): Promise<RawSmbClient> => both.smb();

  before(async () => {
    both = await startBothProtocols([{ username: USER, password: PASSWORD, uid: UID }]);
    ({ nfs, root } = both);
  });

  after(async () => {
    await both?.close();
  });

  it('an SMB open that does not share delete refuses NFS REMOVE and RENAME until it closes', async () => {
    const c = await smb();
    const { fileId } = await c.create('held.txt', { share: SHARE_RW });
    assert.equal((await nfs.remove(root, 'held.txt')).status, NFS3ERR_ACCES);
    assert.equal((await nfs.rename(root, 'held.txt', root, 'moved.txt')).status, NFS3ERR_ACCES);
    assert.equal((await nfs.lookup(root, 'held.txt')).status, 0, 'still there');
    await c.close(fileId);
    assert.equal((await nfs.rename(root, 'held.txt', root, 'moved.txt')).status, 0);
    assert.equal((await nfs.remove(root, 'moved.txt')).status, 0);
  });

  it('an SMB open sharing delete does not refuse NFS REMOVE', async () => {
    const c = await smb();
    await c.create('shared.txt', { share: 7 });
    assert.equal((await nfs.remove(root, 'shared.txt')).status, 0);
  });

  // The server caches the names an SMB path walk resolves (meta/cached.ts): an NFS rename or
  // remove of a directory must show in the very next SMB CREATE under it.
  it('a directory renamed or removed by NFS is seen at once by the next SMB CREATE below it', async () => {
    const c = await smb();
    assert.equal((await nfs.mkdir(root, 'walk')).status, 0);
    await c.close((await c.create('walk\\a.txt')).fileId);
    await c.close((await c.create('walk\\a2.txt')).fileId);
    assert.equal((await nfs.rename(root, 'walk', root, 'walked')).status, 0);
    // The directory itself is looked at again (its attributes cached anew) before the CREATE.
    const walked = (await nfs.lookup(root, 'walked')).fh!;
    assert.equal((await nfs.getattr(walked)).status, 0);
    assert.equal(await c.createStatus('walk\\b.txt'), STATUS_OBJECT_PATH_NOT_FOUND, 'the old name is gone');
    await c.close((await c.create('walked\\b.txt')).fileId);
    assert.equal((await nfs.lookup(walked, 'b.txt')).status, 0, 'made in the renamed directory');
    for (const name of ['a.txt', 'a2.txt', 'b.txt']) assert.equal((await nfs.remove(walked, name)).status, 0);
    assert.equal((await nfs.rmdir(root, 'walked')).status, 0);
    assert.equal(await c.createStatus('walked\\c.txt'), STATUS_OBJECT_PATH_NOT_FOUND, 'the removed directory is gone');
    // A new directory of the same name: the next CREATE lands in it.
    const again = (await nfs.mkdir(root, 'walked')).fh!;
    await c.close((await c.create('walked\\c.txt')).fileId);
    assert.equal((await nfs.lookup(again, 'c.txt')).status, 0, 'made in the new directory');
  });

  it('an SMB byte-range lock refuses an NFS WRITE into its range, not beside it', async () => {
    const c = await smb();
    const { fileId } = await c.create('locked.txt');
    await c.write(fileId, 0, Buffer.from('0123456789'));
    await c.lock(fileId, 0, 4);
    const fh = (await nfs.lookup(root, 'locked.txt')).fh!;
    assert.equal((await nfs.write(fh, 2, Buffer.from('XX'), StableHow.FILE_SYNC)).status, NFS3ERR_ACCES);
    assert.equal((await nfs.write(fh, 6, Buffer.from('YY'), StableHow.FILE_SYNC)).status, 0, 'outside the locked range');
    assert.equal((await c.read(fileId, 0, 10)).toString(), '012345YY89');
    await c.close(fileId);
    assert.equal((await nfs.write(fh, 2, Buffer.from('XX'), StableHow.FILE_SYNC)).status, 0, 'the lock went with the open');
  });
});
