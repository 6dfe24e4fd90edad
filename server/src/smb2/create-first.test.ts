// CREATE of a free name makes the file without looking the name up first (create-first.ts); a
// taken name, or a request that needs the ordinary path, answers as before.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memoryServer } from '../testing/memory-server.js';
import { SmbWriter } from './codec.js';
import { Access, CreateAction, CreateDisposition, CreateOptions } from './constants.js';
import * as files from './files.js';
import { AceFlags, storedDacl } from './acl.js';
import { AceType, encodeSecurityDescriptor, EVERYONE } from './security.js';
import { NtStatus } from './status.js';
import { create, createRequest, fileContext, status } from './testing.js';

async function setup() {
  const srv = await memoryServer();
  const c = fileContext(srv);
  // Counts the store's name lookups (the statement create-first saves).
  const meta = c.share.meta;
  const lookup = meta.lookup.bind(meta);
  const lookups: string[] = [];
  meta.lookup = (dirId, name) => {
    lookups.push(name.toString());
    return lookup(dirId, name);
  };
  const open = (name: string, disposition: number, options = 0) =>
    create(
      c,
      createRequest(name, {
        desiredAccess: Access.GENERIC_READ | Access.GENERIC_WRITE | Access.DELETE,
        createDisposition: disposition,
        createOptions: options,
      }),
    );
  /** MS-SMB2 2.2.14 CreateAction, at offset 4 of the CREATE response body. */
  const action = (body: Buffer) => body.readUInt32LE(4);
  return { srv, c, lookups, open, action };
}

describe('SMB2 CREATE of a name that is usually free', () => {
  it('OVERWRITE_IF, CREATE and SUPERSEDE of a new name create the file without a lookup of the name', async () => {
    const { srv, c, lookups, open, action } = await setup();
    for (const [name, disp] of [
      ['put.bin', CreateDisposition.OVERWRITE_IF],
      ['new.bin', CreateDisposition.CREATE],
      ['sup.bin', CreateDisposition.SUPERSEDE],
    ] as const) {
      const r = await open(name, disp);
      assert.equal(action(r.body), CreateAction.CREATED, name);
      assert.equal((await srv.fs.resolve(r.open.handle)).inode.size, 0);
      await files.close(c, r.open, 0, new SmbWriter());
    }
    assert.deepEqual(lookups, [], 'no name looked up before the create');
    // OPEN_IF usually opens an existing file: it looks first, as before.
    assert.equal(action((await open('openif.bin', CreateDisposition.OPEN_IF)).body), CreateAction.CREATED);
    assert.deepEqual(lookups, ['openif.bin']);
    await srv.close();
  });

  it('a file made at once takes what the stored DACL of its directory passes on, as one made on the ordinary path', async () => {
    const { srv, c, lookups, open } = await setup();
    // Everyone may add files to d (FILE_ADD_FILE, not passed on); its files grant reading.
    const dacl = [
      { type: AceType.ACCESS_ALLOWED, flags: 0, mask: 0x2, sid: EVERYONE },
      { type: AceType.ACCESS_ALLOWED, flags: AceFlags.OBJECT_INHERIT, mask: 0x001200a9, sid: EVERYONE },
    ];
    const secD = encodeSecurityDescriptor({ control: 0, owner: null, group: null, dacl });
    const d = await create(
      c,
      createRequest('d', {
        createDisposition: CreateDisposition.CREATE,
        createOptions: CreateOptions.DIRECTORY_FILE,
        contexts: [{ name: 'SecD', data: secD }],
      }),
    );
    await files.close(c, d.open, 0, new SmbWriter());
    lookups.length = 0;
    const f = await open('d\\put.bin', CreateDisposition.OVERWRITE_IF);
    assert.deepEqual(lookups, ['d'], 'made at once (only the directory looked up)');
    const sd = await storedDacl(c.share.meta, f.open.inodeId);
    assert.deepEqual(
      sd?.dacl?.map((a) => [a.flags, a.mask]),
      [[AceFlags.INHERITED, 0x001200a9]],
    );
    await files.close(c, f.open, 0, new SmbWriter());
    // The DACL guards the next open: it grants reading only.
    assert.equal(await status(open('d\\put.bin', CreateDisposition.OPEN)), NtStatus.ACCESS_DENIED);
    await srv.close();
  });

  it('a taken name answers as before: overwritten, superseded, a collision, a directory refused', async () => {
    const { srv, c, open, action } = await setup();
    const first = await open('x.bin', CreateDisposition.CREATE);
    await files.write(c, first.open, { offset: 0, fileId: first.open.fileId, flags: 0, data: Buffer.from('0123456789') });
    await files.close(c, first.open, 0, new SmbWriter());
    const id = first.open.inodeId;

    assert.equal(await status(open('x.bin', CreateDisposition.CREATE)), NtStatus.OBJECT_NAME_COLLISION);
    assert.equal((await srv.fs.resolve(first.open.handle)).inode.size, 10, 'a refused CREATE changes nothing');

    const over = await open('x.bin', CreateDisposition.OVERWRITE_IF);
    assert.equal(action(over.body), CreateAction.OVERWRITTEN);
    assert.equal(over.open.inodeId, id, 'the same file, truncated');
    assert.equal((await srv.fs.resolve(over.open.handle)).inode.size, 0);
    await files.close(c, over.open, 0, new SmbWriter());

    const sup = await open('x.bin', CreateDisposition.SUPERSEDE);
    assert.equal(action(sup.body), CreateAction.SUPERSEDED);
    await files.close(c, sup.open, 0, new SmbWriter());

    const dir = await open('d', CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE);
    await files.close(c, dir.open, 0, new SmbWriter());
    assert.equal(await status(open('d', CreateDisposition.OVERWRITE_IF)), NtStatus.INVALID_PARAMETER, 'a directory is not overwritten');
    assert.equal(await status(open('d', CreateDisposition.CREATE)), NtStatus.OBJECT_NAME_COLLISION);
    // A new read-only file cannot be delete-on-close: refused before anything is made.
    const ro = createRequest('ro.bin', {
      desiredAccess: Access.GENERIC_READ | Access.GENERIC_WRITE | Access.DELETE,
      createDisposition: CreateDisposition.OVERWRITE_IF,
      createOptions: CreateOptions.DELETE_ON_CLOSE,
      fileAttributes: 0x1,
    });
    assert.equal(await status(create(c, ro)), NtStatus.CANNOT_DELETE);
    assert.equal(await status(open('ro.bin', CreateDisposition.OPEN)), NtStatus.OBJECT_NAME_NOT_FOUND);
    await srv.close();
  });
});
