// Names compare without case at SMB: CREATE of an existing name in other case opens that file.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memoryServer } from '../testing/memory-server.js';
import { VfsError } from '../vfs/errors.js';
import { CreateDisposition, CreateOptions } from './constants.js';
import { NtStatus } from './status.js';
import { close, fileContext, openRwd, status } from './testing.js';

describe('case-insensitive names', () => {
  it('OPEN and OVERWRITE find a name in other case, in the path too; a new name is still created as given', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const open = (name: string, disposition: number, options = 0) => openRwd(c, name, disposition, options);
    await close(c, await open('Dir', CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE));
    const f = await open('Dir\\t017-17.txt', CreateDisposition.CREATE);
    await close(c, f);
    const g = await open('DIR\\T017-17.TXT', CreateDisposition.OPEN);
    assert.equal(g.inodeId, f.inodeId, 'the same file');
    await close(c, g);
    const h = await open('dir\\T017-17.txt', CreateDisposition.OVERWRITE);
    assert.equal(h.inodeId, f.inodeId);
    await close(c, h);
    assert.equal(await status(open('dir\\T018.txt', CreateDisposition.OPEN)), NtStatus.OBJECT_NAME_NOT_FOUND);
    // A new name under a directory named in other case: made in that directory, spelt as given.
    await close(c, await open('DIR\\New.TXT', CreateDisposition.CREATE));
    const d = await open('dir', CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE);
    const names = (await c.fs.readdir(d.handle, c.id, 0, 100)).entries.map((e) => e.name.toString()).sort();
    assert.deepEqual(names, ['New.TXT', 't017-17.txt']);
    await close(c, d);
    assert.equal(await status(open('nodir\\x', CreateDisposition.OPEN)), NtStatus.OBJECT_PATH_NOT_FOUND);
    // Delete on close through the other-case name removes the stored name.
    await close(c, await open('DIR\\T017-17.TXT', CreateDisposition.OPEN, CreateOptions.DELETE_ON_CLOSE));
    assert.equal(await status(open('Dir\\t017-17.txt', CreateDisposition.OPEN)), NtStatus.OBJECT_NAME_NOT_FOUND);
    await srv.close();
  });

  it('a directory removed while its path is walked is OBJECT_PATH_NOT_FOUND, not the name of the file', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    await close(c, await openRwd(c, 'Dir', CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE));
    // The exact lookup of "dir" misses; the directory it scans next is gone by then.
    const fs = Object.create(srv.fs) as typeof srv.fs;
    fs.readdir = () => Promise.reject(new VfsError('NOENT', 'no such file or directory'));
    assert.equal(await status(openRwd({ ...c, fs }, 'dir\\x', CreateDisposition.OPEN)), NtStatus.OBJECT_PATH_NOT_FOUND);
    await srv.close();
  });
});
