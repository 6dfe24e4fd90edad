// A DACL as Windows tools write it names BUILTIN\Users (S-1-5-32-545), not the unix users: "Users:
// Modify" lets any other user who logged on with his password write the file with smbclient, as on
// Windows and Samba; the owner the server reports stays the unix SID. The DACL is set with a raw
// SET_INFO: Samba's smbcacls would be the real peer, but it connects to port 445 or 139 only (no -p,
// and `smb ports` does not reach it), which a test server run as a user cannot bind.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  AceType,
  BUILTIN_USERS,
  decodeSecurityDescriptor,
  encodeSecurityDescriptor,
  SecurityInformation,
  sidString,
  unixUserSid,
} from '../../server/src/smb2/security.js';
import { startBothProtocols, type BothProtocols } from '../helpers/smb-nfs.js';

const PASSWORD = 'builtin-Passw0rd-1';
const ALICE = { username: 'alice', password: PASSWORD, uid: 1000 };
const BOB = { username: 'bob', password: PASSWORD, uid: 2000 };
const INFO_SECURITY = 3;
/** ACE flags OBJECT_INHERIT | CONTAINER_INHERIT: "(OI)(CI)" in icacls. */
const OICI = 0x03;

interface Run {
  code: number | null;
  out: string;
}

function tool(cmd: string, args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 60_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string }) | null;
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : -1) : 0, out: stdout + stderr });
    });
  });
}

describe('a DACL naming BUILTIN\\Users, set and used by Samba clients', { timeout: 180_000 }, () => {
  let both: BothProtocols;
  let dir: string;
  const smbclient = (user: string, commands: string) =>
    tool('smbclient', ['//127.0.0.1/export', '-p', String(both.srv.smbPort), '-m', 'SMB3_11', '-U', `${user}%${PASSWORD}`, '-c', commands]);

  before(async () => {
    both = await startBothProtocols([ALICE, BOB]);
    dir = await mkdtemp(join(tmpdir(), 'dittofs-builtin-'));
  });
  after(async () => {
    await both?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("another user writes a file whose DACL gives Users Modify; the owner stays alice's unix SID", async () => {
    await writeFile(join(dir, 'alice.txt'), 'from alice\n');
    await writeFile(join(dir, 'bob.txt'), 'from bob\n');
    let r = await smbclient('alice', `lcd ${dir}; put alice.txt shared.txt`);
    assert.equal(r.code, 0, r.out);
    // Before: the file is alice's 0644 (umask): bob may not write it.
    r = await smbclient('bob', `lcd ${dir}; put bob.txt shared.txt`);
    assert.match(r.out, /NT_STATUS_ACCESS_DENIED/, r.out);
    // Alice gives herself Full control and BUILTIN\Users Modify, as Explorer's Security tab does.
    const a = await both.smb(ALICE);
    const f = (await a.create('shared.txt')).fileId;
    const dacl = [
      { type: AceType.ACCESS_ALLOWED, flags: 0, mask: 0x001f01ff, sid: unixUserSid(ALICE.uid) },
      { type: AceType.ACCESS_ALLOWED, flags: 0, mask: 0x001301bf, sid: BUILTIN_USERS },
    ];
    const sd = encodeSecurityDescriptor({ control: 0x0004, owner: null, group: null, dacl });
    assert.equal(await a.setInfo(f, INFO_SECURITY, 0, sd, SecurityInformation.DACL), 0);
    const q = await a.queryInfo(f, INFO_SECURITY, 0, { additional: SecurityInformation.OWNER | SecurityInformation.DACL });
    assert.equal(q.status, 0);
    const back = decodeSecurityDescriptor(q.output);
    assert.equal(sidString(back.owner!), 'S-1-22-1-1000', 'the owner stays the unix user');
    assert.deepEqual(back.dacl, dacl);
    await a.close(f);
    // Bob, an authenticated user, is one of the Users: he replaces the content.
    r = await smbclient('bob', `lcd ${dir}; put bob.txt shared.txt`);
    assert.equal(r.code, 0, r.out);
    assert.doesNotMatch(r.out, /NT_STATUS_/, r.out);
    r = await smbclient('alice', `lcd ${dir}; get shared.txt back.txt`);
    assert.equal(r.code, 0, r.out);
    assert.equal(await readFile(join(dir, 'back.txt'), 'utf8'), 'from bob\n');
  });

  it('a file alice makes in a folder passing on "Users: Modify" is writable by bob; a folder passing on nothing gives 0644 and 0755', async () => {
    const a = await both.smb(ALICE);
    /** Alice's folder `name`, made with smbclient, given `dacl` by a raw SET_INFO (Explorer's Security tab). */
    const folder = async (
      name: string,
      dacl: { type: number; flags: number; mask: number; sid: ReturnType<typeof unixUserSid> }[] | null,
    ) => {
      const r = await smbclient('alice', `mkdir ${name}`);
      assert.equal(r.code, 0, r.out);
      if (dacl === null) return;
      const d = (await a.create(name, { options: 0x01 /* DIRECTORY_FILE */, disposition: 1 /* OPEN */ })).fileId;
      const sd = encodeSecurityDescriptor({ control: 0x0004, owner: null, group: null, dacl });
      assert.equal(await a.setInfo(d, INFO_SECURITY, 0, sd, SecurityInformation.DACL), 0);
      await a.close(d);
    };
    const ownerFull = (flags: number) => ({ type: AceType.ACCESS_ALLOWED, flags, mask: 0x001f01ff, sid: unixUserSid(ALICE.uid) });
    const usersModify = (flags: number) => ({ type: AceType.ACCESS_ALLOWED, flags, mask: 0x001301bf, sid: BUILTIN_USERS });
    await folder('team', [ownerFull(OICI), usersModify(OICI)]);
    await writeFile(join(dir, 'alice.txt'), 'from alice\n');
    await writeFile(join(dir, 'bob.txt'), 'from bob\n');
    let r = await smbclient('alice', `lcd ${dir}; put alice.txt team\\notes.txt; mkdir team\\sub; put alice.txt team\\sub\\deep.txt`);
    assert.equal(r.code, 0, r.out);
    // Bob is one of the Users: the file and the folder alice made inherited his Modify.
    r = await smbclient('bob', `lcd ${dir}; put bob.txt team\\notes.txt; put bob.txt team\\sub\\deep.txt; put bob.txt team\\sub\\bobs.txt`);
    assert.equal(r.code, 0, r.out);
    assert.doesNotMatch(r.out, /NT_STATUS_/, r.out);
    r = await smbclient('alice', `lcd ${dir}; get team\\notes.txt back.txt`);
    assert.equal(r.code, 0, r.out);
    assert.equal(await readFile(join(dir, 'back.txt'), 'utf8'), 'from bob\n');
    // The DACL stored is the one inherited (what Explorer shows), not one made of the mode.
    const f = (await a.create('team\\notes.txt', { disposition: 1, access: 0x00020000 /* READ_CONTROL */ })).fileId;
    const q = await a.queryInfo(f, INFO_SECURITY, 0, { additional: SecurityInformation.DACL });
    assert.equal(q.status, 0);
    assert.deepEqual(decodeSecurityDescriptor(q.output).dacl, [ownerFull(0x10 /* INHERITED */), usersModify(0x10)]);
    await a.close(f);
    // No DACL, or one passing nothing on: files 0644 and folders 0755 as NFS users know them.
    await folder('plain', null);
    await folder('own', [ownerFull(0), usersModify(0)]);
    for (const name of ['plain', 'own']) {
      r = await smbclient('alice', `lcd ${dir}; put alice.txt ${name}\\a.txt; mkdir ${name}\\sub`);
      assert.equal(r.code, 0, r.out);
      const fh = (await both.nfs.lookup(both.root, name)).fh!;
      for (const [entry, mode] of [
        ['a.txt', 0o644],
        ['sub', 0o755],
      ] as const) {
        const attrs = (await both.nfs.getattr((await both.nfs.lookup(fh, entry)).fh!)).attrs!;
        assert.equal(attrs.mode & 0o7777, mode, `${name}/${entry}`);
        assert.equal(attrs.uid, ALICE.uid, `${name}/${entry} is alice's`);
      }
    }
  });
});
