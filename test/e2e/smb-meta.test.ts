// Extended attributes and stored NT ACLs across protocols: what an SMB client sets on a file stays
// with it when NFS renames it; a stored DACL that refuses writing refuses the SMB open while NFS,
// which follows the mode bits alone, writes; an NFS chmod drops the stored DACL (the mode is the
// truth again). Real clients: a raw SMB 2.1 client over TCP and the NFSv3 test client.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { decodeFullEaList, encodeFullEaList } from '../../server/src/smb2/ea.js';
import {
  AceType,
  decodeSecurityDescriptor,
  encodeSecurityDescriptor,
  EVERYONE,
  sid,
  sidString,
  unixGroupSid,
  unixUserSid,
} from '../../server/src/smb2/security.js';
import { apiRequest } from '../helpers/api.js';
import { NfsOps } from '../helpers/nfs-ops.js';
import { bodies, SmbCommand } from '../helpers/smb-client.js';
import { StableHow } from '../helpers/rpc-client.js';
import { startBothProtocols, type BothProtocols } from '../helpers/smb-nfs.js';

const USER = 'metauser';
const PASSWORD = 'meta-user-Passw0rd';
const UID = 1000;
const OTHER = 'metaother';
const DAVE = 'metadave';
const INFO_FILE = 1;
const INFO_SECURITY = 3;
const FILE_EA_INFORMATION = 7;
const FILE_FULL_EA_INFORMATION = 15;
const FILE_ALL_INFORMATION = 18;
const FILE_ALLOCATION_INFORMATION = 19;
const DACL = 4;
const ACCESS_DENIED = 0xc0000022;
const MEDIA_WRITE_PROTECTED = 0xc00000a2;
const FILE_READ_DATA = 0x1;
const FILE_READ_EA = 0x8;
const FILE_READ_ATTRIBUTES = 0x80;
const SYNCHRONIZE = 0x00100000;
const READ = 0x00120089;
const WRITE_DATA = 0x2;
const APPEND_DATA = 0x4;

describe('SMB EAs and stored DACLs against NFS', { timeout: 300_000 }, () => {
  let both: BothProtocols;
  let nfs: NfsOps;
  let root: Buffer;

  before(async () => {
    both = await startBothProtocols([
      { username: USER, password: PASSWORD, uid: UID },
      { username: OTHER, password: PASSWORD, uid: UID + 1 },
      { username: DAVE, password: PASSWORD, uid: UID + 2 },
    ]);
    ({ nfs, root } = both);
  });

  after(async () => {
    await both?.close();
  });

  it('EAs set over SMB survive an NFS rename', async () => {
    const c = await both.smb();
    const { fileId } = await c.create('ea.txt');
    const eas = encodeFullEaList([
      { flags: 0, name: Buffer.from('user.color'), value: Buffer.from('blue') },
      { flags: 0, name: Buffer.from('Second'), value: Buffer.from([0, 1, 2]) },
    ]);
    assert.equal(await c.setInfo(fileId, INFO_FILE, FILE_FULL_EA_INFORMATION, eas), 0);
    await c.close(fileId);
    assert.equal((await nfs.rename(root, 'ea.txt', root, 'ea-moved.txt')).status, 0);
    const moved = await c.create('ea-moved.txt');
    const q = await c.queryInfo(moved.fileId, INFO_FILE, FILE_FULL_EA_INFORMATION, { flags: 1 });
    assert.equal(q.status, 0);
    assert.deepEqual(
      decodeFullEaList(q.output).map((e) => [e.name.toString(), e.value.toString('hex')]),
      [
        ['SECOND', '000102'],
        ['USER.COLOR', Buffer.from('blue').toString('hex')],
      ],
    );
    const size = await c.queryInfo(moved.fileId, INFO_FILE, FILE_EA_INFORMATION);
    assert.ok(size.output.readUInt32LE(0) > 0, 'EaSize counts them');
    // A zero-length value removes one.
    const drop = encodeFullEaList([{ flags: 0, name: Buffer.from('second'), value: Buffer.alloc(0) }]);
    assert.equal(await c.setInfo(moved.fileId, INFO_FILE, FILE_FULL_EA_INFORMATION, drop), 0);
    const after1 = await c.queryInfo(moved.fileId, INFO_FILE, FILE_FULL_EA_INFORMATION, { flags: 1 });
    assert.deepEqual(
      decodeFullEaList(after1.output).map((e) => e.name.toString()),
      ['USER.COLOR'],
    );
    // A bad name changes nothing and says why.
    const bad = encodeFullEaList([{ flags: 0, name: Buffer.from('a*b'), value: Buffer.from('x') }]);
    assert.equal(await c.setInfo(moved.fileId, INFO_FILE, FILE_FULL_EA_INFORMATION, bad), 0x80000013);
    await c.close(moved.fileId);
    // Another user, who may only read the file (0644), cannot write its EAs nor replace its DACL:
    // an open asking for those rights is refused (as on Windows), and one that did not ask is
    // refused the change.
    const o = await both.smb({ username: OTHER, password: PASSWORD, uid: UID + 1 });
    assert.equal(await o.createStatus('ea-moved.txt', { access: READ | 0x10 | 0x00040000 }), ACCESS_DENIED, 'FILE_WRITE_EA, WRITE_DAC');
    const theirs = await o.create('ea-moved.txt', { access: READ });
    assert.equal(await o.setInfo(theirs.fileId, INFO_FILE, FILE_FULL_EA_INFORMATION, eas), ACCESS_DENIED, 'EAs');
    const deny = encodeSecurityDescriptor({ control: 0, owner: null, group: null, dacl: [] });
    assert.equal(await o.setInfo(theirs.fileId, INFO_SECURITY, 0, deny, DACL), ACCESS_DENIED, 'DACL');
    assert.equal(await c.createStatus('ea-moved.txt', { access: READ }), 0, 'the owner still opens it');
  });

  it('a DACL refusing writes refuses the SMB open, NFS follows the mode; it survives a rename; chmod drops it', async () => {
    const c = await both.smb();
    const { fileId } = await c.create('acl.txt');
    // Everything for the owner but execute, read for the group and everyone (mode 0644 as it is)
    // and writing denied to Authenticated Users: every user who logs on, the owner too, so the
    // write bits of every class go (0444), for NFS as for SMB.
    const sd = encodeSecurityDescriptor({
      control: 0,
      owner: null,
      group: null,
      dacl: [
        { type: AceType.ACCESS_DENIED, flags: 0, mask: WRITE_DATA | APPEND_DATA, sid: sid(5, 11) },
        { type: AceType.ACCESS_ALLOWED, flags: 0, mask: 0x001f019f, sid: unixUserSid(UID) },
        { type: AceType.ACCESS_ALLOWED, flags: 0, mask: READ, sid: unixGroupSid(UID) },
        { type: AceType.ACCESS_ALLOWED, flags: 0, mask: READ, sid: EVERYONE },
      ],
    });
    assert.equal(await c.setInfo(fileId, INFO_SECURITY, 0, sd, DACL), 0);
    await c.close(fileId);
    const fh = (await nfs.lookup(root, 'acl.txt')).fh!;
    assert.equal(((await nfs.getattr(fh)).attrs?.mode ?? 0) & 0o777, 0o444, 'no class writes');

    assert.equal(await c.createStatus('acl.txt', { access: WRITE_DATA }), ACCESS_DENIED, 'the stored DACL refuses SMB writers');
    assert.equal(await c.createStatus('acl.txt', { access: READ }), 0, 'readers are let in');
    // NFS follows the mode bits, where the owner writes whatever they say (as Linux's nfsd lets an owner).
    assert.equal((await nfs.write(fh, 0, Buffer.from('nfs'), StableHow.FILE_SYNC)).status, 0, "NFS: the owner's override");

    assert.equal((await nfs.rename(root, 'acl.txt', root, 'acl-moved.txt')).status, 0);
    assert.equal(await c.createStatus('acl-moved.txt', { access: WRITE_DATA }), ACCESS_DENIED, 'the DACL moved with the file');
    const r = await c.create('acl-moved.txt', { access: READ | 0x00020000 });
    const q = await c.queryInfo(r.fileId, INFO_SECURITY, 0, { additional: DACL });
    assert.equal(q.status, 0);
    assert.deepEqual(
      decodeSecurityDescriptor(q.output).dacl?.map((a) => sidString(a.sid)),
      ['S-1-5-11', `S-1-22-1-${UID}`, `S-1-22-2-${UID}`, 'S-1-1-0'],
    );
    await c.close(r.fileId);

    // A chmod over NFS: the mode is the whole truth again.
    assert.equal((await nfs.setattr(fh, { mode: 0o600 })).status, 0);
    assert.equal(await c.createStatus('acl-moved.txt', { access: WRITE_DATA }), 0, 'chmod dropped the stored DACL');
  });

  it("another user's 0600 file: no FILE_READ_EA open and no EAs read, while a stat open still works", async () => {
    const c = await both.smb();
    const { fileId } = await c.create('secret.txt');
    const eas = encodeFullEaList([{ flags: 0, name: Buffer.from('user.secret'), value: Buffer.from('hunter2') }]);
    assert.equal(await c.setInfo(fileId, INFO_FILE, FILE_FULL_EA_INFORMATION, eas), 0);
    await c.close(fileId);
    const fh = (await nfs.lookup(root, 'secret.txt')).fh!;
    assert.equal((await nfs.setattr(fh, { mode: 0o600 })).status, 0);
    const o = await both.smb({ username: OTHER, password: PASSWORD, uid: UID + 1 });
    assert.equal(await o.createStatus('secret.txt', { access: FILE_READ_DATA }), ACCESS_DENIED, 'FILE_READ_DATA');
    assert.equal(await o.createStatus('secret.txt', { access: FILE_READ_EA }), ACCESS_DENIED, 'FILE_READ_EA');
    const stat = await o.create('secret.txt', { access: FILE_READ_ATTRIBUTES | SYNCHRONIZE });
    assert.equal((await o.queryInfo(stat.fileId, INFO_FILE, FILE_ALL_INFORMATION)).status, 0, 'a stat open answers');
    const q = await o.queryInfo(stat.fileId, INFO_FILE, FILE_FULL_EA_INFORMATION, { flags: 1 });
    assert.equal(q.status, ACCESS_DENIED, 'no EAs through it');
    assert.ok(!q.output.includes(Buffer.from('hunter2')));
    await o.close(stat.fileId);
    // The owner still reads them.
    const mine = await c.create('secret.txt', { access: FILE_READ_EA });
    const own = await c.queryInfo(mine.fileId, INFO_FILE, FILE_FULL_EA_INFORMATION, { flags: 1 });
    assert.equal(decodeFullEaList(own.output)[0]?.value.toString(), 'hunter2');
  });

  it('access revoked through the API: open handles lose EA and allocation writes, and under `none` every query', async () => {
    const { base, token } = both.api;
    const grant = async (level: string) =>
      assert.equal((await apiRequest(base, 'PUT', `/api/v1/shares/export/permissions/users/${DAVE}`, { level }, token)).status, 200);
    const readOnly = async (on: boolean) =>
      assert.equal((await apiRequest(base, 'PATCH', '/api/v1/shares/export', { read_only: on }, token)).status, 200);
    const d = await both.smb({ username: DAVE, password: PASSWORD, uid: UID + 2 });
    const { fileId } = await d.create('dave.txt');
    const ea = (v: string) => encodeFullEaList([{ flags: 0, name: Buffer.from('user.v'), value: Buffer.from(v) }]);
    const alloc = (n: number) => {
      const b = Buffer.alloc(8);
      b.writeUInt32LE(n, 0);
      return b;
    };
    const write = async () => (await d.request(SmbCommand.WRITE, bodies.write(fileId, 0, Buffer.from('dave')))).status;
    assert.equal(await d.setInfo(fileId, INFO_FILE, FILE_FULL_EA_INFORMATION, ea('1')), 0);
    assert.equal(await d.setInfo(fileId, INFO_FILE, FILE_ALLOCATION_INFORMATION, alloc(8192)), 0);
    try {
      await grant('read');
      assert.equal(await write(), ACCESS_DENIED, 'read: WRITE');
      assert.equal(await d.setInfo(fileId, INFO_FILE, FILE_FULL_EA_INFORMATION, ea('2')), ACCESS_DENIED, 'read: EAs');
      assert.equal(await d.setInfo(fileId, INFO_FILE, FILE_ALLOCATION_INFORMATION, alloc(16384)), ACCESS_DENIED, 'read: allocation');
      assert.equal((await d.queryInfo(fileId, INFO_FILE, FILE_FULL_EA_INFORMATION, { flags: 1 })).status, 0, 'read: EAs may be read');

      await grant('none');
      assert.equal(await d.setInfo(fileId, INFO_FILE, FILE_FULL_EA_INFORMATION, ea('3')), ACCESS_DENIED, 'none: EAs');
      assert.equal(await d.setInfo(fileId, INFO_FILE, FILE_ALLOCATION_INFORMATION, alloc(16384)), ACCESS_DENIED, 'none: allocation');
      assert.equal((await d.queryInfo(fileId, INFO_FILE, FILE_FULL_EA_INFORMATION, { flags: 1 })).status, ACCESS_DENIED, 'none: EAs');
      assert.equal((await d.queryInfo(fileId, INFO_FILE, FILE_ALL_INFORMATION)).status, ACCESS_DENIED, 'none: FileAllInformation');

      await grant('read-write');
      await readOnly(true);
      assert.equal(await write(), MEDIA_WRITE_PROTECTED, 'read-only share: WRITE');
      assert.equal(await d.setInfo(fileId, INFO_FILE, FILE_FULL_EA_INFORMATION, ea('4')), MEDIA_WRITE_PROTECTED, 'read-only: EAs');
      assert.equal(
        await d.setInfo(fileId, INFO_FILE, FILE_ALLOCATION_INFORMATION, alloc(16384)),
        MEDIA_WRITE_PROTECTED,
        'read-only: allocation',
      );
    } finally {
      await readOnly(false);
      await grant('read-write');
    }
    // What was set before the revocation is all that is there.
    const q = await d.queryInfo(fileId, INFO_FILE, FILE_FULL_EA_INFORMATION, { flags: 1 });
    assert.equal(decodeFullEaList(q.output)[0]?.value.toString(), '1');
    const all = await d.queryInfo(fileId, INFO_FILE, FILE_ALL_INFORMATION);
    assert.equal(all.output.readUInt32LE(40), 8192, 'AllocationSize (FileStandardInformation at 40)');
    await d.close(fileId);
  });
});
