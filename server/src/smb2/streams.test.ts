// Named streams through the SMB file commands over the real file service (memory stores), and the
// FILE_STREAM_INFORMATION codec.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { memoryServer } from '../testing/memory-server.js';
import { Access, CreateDisposition, FileInfoClass, InfoType } from './constants.js';
import * as files from './files.js';
import type { Open } from './state.js';
import { NtStatus, SmbStatusError } from './status.js';
import { decodeStreamInformation, encodeStreamInformation, splitStreamPath } from './streams.js';
import { close as closeOpen, create, createRequest, fileContext, openRwd, status } from './testing.js';

async function setup() {
  const srv = await memoryServer();
  const c = fileContext(srv);
  const open = (name: string, disposition: number, options = 0) => openRwd(c, name, disposition, options);
  const write = (o: Open, data: string, offset = 0) => files.write(c, o, { offset, fileId: o.fileId, flags: 0, data: Buffer.from(data) });
  const read = async (o: Open, length = 100) =>
    (await files.read(c, o, { flags: 0, length, offset: 0, fileId: o.fileId, minimumCount: 0 }).catch(() => Buffer.alloc(0))).toString();
  const streams = async (o: Open) =>
    decodeStreamInformation(
      (
        await files.queryInfo(c, o, {
          infoType: InfoType.FILE,
          infoClass: FileInfoClass.FileStreamInformation,
          outputBufferLength: 65536,
          input: Buffer.alloc(0),
          additionalInformation: 0,
          flags: 0,
          fileId: o.fileId,
        })
      ).output,
    ).map((e) => `${e.name}=${e.size}`);
  const close = (o: Open) => closeOpen(c, o);
  return { srv, c, open, write, read, streams, close };
}

describe('named streams over SMB', () => {
  it('streams hold their own data, are listed, deleted on close and go with their file', async () => {
    const { srv, open, write, read, streams, close, c } = await setup();
    const f = await open('f.txt', CreateDisposition.CREATE);
    await write(f, 'main data');
    const s1 = await open('f.txt:AFP_AfpInfo:$DATA', CreateDisposition.OPEN_IF);
    await write(s1, 'afp-info');
    const s2 = await open('f.txt:com.apple.ResourceFork', CreateDisposition.CREATE);
    await write(s2, 'fork!');
    assert.equal(await read(f), 'main data', 'the file keeps its own data');
    assert.equal(await read(s1), 'afp-info');
    const s1b = await open('f.txt:afp_afpinfo', CreateDisposition.OPEN);
    assert.equal(await read(s1b), 'afp-info', 'names compare without case');
    assert.deepEqual(await streams(f), ['::$DATA=9', ':AFP_AfpInfo:$DATA=8', ':com.apple.ResourceFork:$DATA=5']);
    assert.deepEqual(await streams(s2), await streams(f), 'listed from a stream open too');
    assert.equal(await status(open('f.txt:missing', CreateDisposition.OPEN)), NtStatus.OBJECT_NAME_NOT_FOUND);
    assert.equal(await status(open('f.txt:AFP_AfpInfo', CreateDisposition.CREATE)), NtStatus.OBJECT_NAME_COLLISION);
    assert.equal(await status(open('f.txt:x:$BAD', CreateDisposition.OPEN_IF)), NtStatus.OBJECT_NAME_INVALID);
    // Overwrite empties the stream only.
    await close(await open('f.txt:com.apple.ResourceFork', CreateDisposition.OVERWRITE_IF));
    assert.deepEqual(await streams(f), ['::$DATA=9', ':AFP_AfpInfo:$DATA=8', ':com.apple.ResourceFork:$DATA=0']);
    // Delete on close removes the stream, not the file, once its last open is closed.
    await close(s2);
    const del = await open('f.txt:com.apple.ResourceFork', CreateDisposition.OPEN);
    await files.setInfo(c, del, {
      infoType: InfoType.FILE,
      infoClass: FileInfoClass.FileDispositionInformation,
      buffer: Buffer.from([1]),
      additionalInformation: 0,
      fileId: del.fileId,
    });
    await close(del);
    assert.deepEqual(await streams(f), ['::$DATA=9', ':AFP_AfpInfo:$DATA=8']);
    assert.equal(await read(f), 'main data');
    // A stream on a file that does not exist yet makes the file.
    const g = await open('g:s', CreateDisposition.CREATE);
    await write(g, 'x');
    assert.deepEqual(await streams(await open('g', CreateDisposition.OPEN)), ['::$DATA=0', ':s:$DATA=1']);
    // Deleting the file frees its streams: their inodes are gone from the store.
    const streamInode = s1.inodeId;
    assert.ok(await srv.meta.getInode(streamInode));
    // The file goes when its last open closes (the lock manager's delete-pending rule).
    await close(f);
    const fd = await open('f.txt', CreateDisposition.OPEN);
    fd.deleteOnClose = true;
    await close(fd);
    // Its streams' opens hold the delete (MS-FSA): delete-pending until the last one closes.
    assert.ok(await srv.meta.getInode(streamInode), 'kept while a stream is open');
    assert.equal(await status(open('f.txt', CreateDisposition.OPEN)), NtStatus.DELETE_PENDING);
    await close(s1);
    assert.ok(await srv.meta.getInode(streamInode));
    await close(s1b);
    assert.equal(await srv.meta.getInode(streamInode), null, 'the stream went with its file');
    assert.equal(await status(open('f.txt:AFP_AfpInfo', CreateDisposition.OPEN)), NtStatus.OBJECT_NAME_NOT_FOUND);
    await srv.close();
  });
});

describe("a stream's data goes by its file's owner and mode as they are now", () => {
  it('after a chown and a chmod of the file (NFS SETATTR), its streams are read and written as the file is', async () => {
    const { srv, c, open, write, close } = await setup();
    const bob = { uid: 1001, gid: 1001, gids: [] };
    const carol = { uid: 1002, gid: 1002, gids: [] };
    const root = { uid: 0, gid: 0, gids: [] };
    const as = (id: typeof bob) => ({ ...c, id });
    const rw = { desiredAccess: Access.GENERIC_READ | Access.GENERIC_WRITE };
    const readAs = async (ctx: files.FileContext, o: Open) =>
      (await files.read(ctx, o, { flags: 0, length: 64, offset: 0, fileId: o.fileId, minimumCount: 0 })).toString();
    // Alice's file (0644) and its stream, made while she owned it.
    const f = await open('f', CreateDisposition.CREATE);
    const s = await open('f:s', CreateDisposition.CREATE);
    await write(s, 'alice');
    await close(s);
    await close(f);
    // Carol opens the file and its stream while the mode lets her read them.
    const carolFile = (await create(as(carol), createRequest('f', { desiredAccess: Access.GENERIC_READ }))).open;
    const carolStream = (await create(as(carol), createRequest('f:s', { desiredAccess: Access.GENERIC_READ }))).open;
    assert.equal(await readAs(as(carol), carolStream), 'alice');
    // Root gives the file to bob (NFS chown): bob writes its stream as he writes the file.
    await srv.fs.setattr(f.handle, root, { uid: bob.uid, gid: bob.gid });
    const bobStream = (await create(as(bob), createRequest('f:s', rw))).open;
    await files.write(as(bob), bobStream, { offset: 0, fileId: bobStream.fileId, flags: 0, data: Buffer.from('bob--') });
    assert.equal(await readAs(as(bob), bobStream), 'bob--');
    // Bob closes the file to others (chmod 0600): carol's opens read neither the file nor its stream.
    await srv.fs.setattr(f.handle, bob, { mode: 0o600 });
    assert.equal(await status(readAs(as(carol), carolFile)), NtStatus.ACCESS_DENIED, 'the file itself');
    assert.equal(await status(readAs(as(carol), carolStream)), NtStatus.ACCESS_DENIED, 'its stream, as the file');
    // Then opens it to everyone (chmod 0666): carol writes the stream as she may write the file.
    await srv.fs.setattr(f.handle, bob, { mode: 0o666 });
    const carolRw = (await create(as(carol), createRequest('f:s', rw))).open;
    await files.write(as(carol), carolRw, { offset: 0, fileId: carolRw.fileId, flags: 0, data: Buffer.from('carol') });
    assert.equal(await readAs(as(carol), carolRw), 'carol');
    for (const [ctx, o] of [
      [as(carol), carolFile],
      [as(carol), carolStream],
      [as(bob), bobStream],
      [as(carol), carolRw],
    ] as const)
      await closeOpen(ctx, o);
    await srv.close();
  });
});

describe('share modes of streams', () => {
  it('a stream has share modes of its own: a second open of it conflicts, its file does not', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const req = (name: string, shareAccess: number) =>
      createRequest(name, {
        desiredAccess: Access.GENERIC_READ | Access.GENERIC_WRITE,
        createDisposition: CreateDisposition.OPEN_IF,
        shareAccess,
      });
    const s = (await create(c, req('f:s', 0))).open;
    assert.equal(await status(create(c, req('f:s', 7))), NtStatus.SHARING_VIOLATION);
    const f = (await create(c, req('f', 7))).open;
    assert.equal(await status(create(c, req('f:t', 7))), 0, 'another stream of the file');
    await closeOpen(c, s);
    await closeOpen(c, (await create(c, req('f:s', 7))).open);
    await closeOpen(c, f);
    // A directory has no data stream to open.
    await closeOpen(c, (await create(c, createRequest('d', { createDisposition: CreateDisposition.CREATE, createOptions: 1 }))).open);
    assert.equal(
      await status(create(c, createRequest('d::$DATA', { createDisposition: CreateDisposition.OPEN }))),
      NtStatus.FILE_IS_A_DIRECTORY,
    );
    assert.equal(
      await status(create(c, createRequest('d::$DATA', { createDisposition: CreateDisposition.OPEN, createOptions: 1 }))),
      NtStatus.NOT_A_DIRECTORY,
    );
    await srv.close();
  });
});

describe('deleting a file whose stream is open', () => {
  it('a stream not sharing delete refuses DELETE on its file; one sharing it holds the delete until it closes', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const req = (name: string, o: { access?: number; share?: number; disposition?: number; options?: number } = {}) =>
      createRequest(name, {
        desiredAccess: o.access ?? Access.GENERIC_READ | Access.GENERIC_WRITE,
        createDisposition: o.disposition ?? CreateDisposition.OPEN_IF,
        shareAccess: o.share ?? 7,
        createOptions: o.options ?? 0,
      });
    const DELETE_ON_CLOSE = 0x1000;
    const s1 = (await create(c, req('f:s', { share: 0 }))).open;
    await files.write(c, s1, { offset: 0, fileId: s1.fileId, flags: 0, data: Buffer.from('test data') });
    assert.equal(
      await status(create(c, req('f', { access: Access.DELETE, disposition: CreateDisposition.OPEN }))),
      NtStatus.SHARING_VIOLATION,
    );
    await closeOpen(c, s1);
    // Shared for delete: the file's delete-on-close open passes, and its close leaves the file delete-pending.
    const s2 = (await create(c, req('f:s', { share: 7 }))).open;
    await closeOpen(
      c,
      (await create(c, req('f', { access: Access.DELETE, disposition: CreateDisposition.OPEN, options: DELETE_ON_CLOSE }))).open,
    );
    const data = await files.read(c, s2, { flags: 0, length: 9, offset: 0, fileId: s2.fileId, minimumCount: 0 });
    assert.equal(data.toString(), 'test data', 'the open stream still reads');
    assert.equal(await status(create(c, req('f'))), NtStatus.DELETE_PENDING);
    assert.equal(await status(create(c, req('f:s'))), NtStatus.DELETE_PENDING);
    await closeOpen(c, s2);
    assert.equal(
      await status(create(c, req('f', { disposition: CreateDisposition.OPEN }))),
      NtStatus.OBJECT_NAME_NOT_FOUND,
      'gone with the last stream open',
    );
    assert.equal(c.fs.opens.size, 0, 'nothing left in the open table');
    await srv.close();
  });
});

describe('stream names and FILE_STREAM_INFORMATION', () => {
  it('splits CREATE names', () => {
    assert.deepEqual(splitStreamPath('a\\f'), { path: 'a\\f', stream: null, dataStream: false });
    assert.deepEqual(splitStreamPath('a\\f::$DATA'), { path: 'a\\f', stream: null, dataStream: true });
    assert.deepEqual(splitStreamPath('a\\f:s'), { path: 'a\\f', stream: 's', dataStream: false });
    assert.deepEqual(splitStreamPath('a\\f:s:$data'), { path: 'a\\f', stream: 's', dataStream: false });
    for (const bad of ['f:', 'f:s:$INDEX_ALLOCATION', 'f:a:b:c', 'f:a\\b'])
      assert.throws(
        () => splitStreamPath(bad),
        (e: unknown) => e instanceof SmbStatusError && e.status === NtStatus.OBJECT_NAME_INVALID,
        bad,
      );
  });

  it('round-trips and decodes arbitrary bytes or fails with RangeError', () => {
    const entry = fc
      .record({
        name: fc.string({ maxLength: 40 }).map((s) => `:${s.replace(/[\ud800-\udfff]/g, 'x')}:$DATA`),
        size: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
        allocationSize: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
      })
      .map((e) => ({ ...e }));
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 10 }), (l) => assert.deepEqual(decodeStreamInformation(encodeStreamInformation(l)), l)),
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        try {
          decodeStreamInformation(Buffer.from(bytes));
        } catch (e) {
          assert.ok(e instanceof RangeError || (e as { code?: string }).code !== undefined, String(e));
        }
      }),
    );
  });
});
