// One server: SMB CREATE (an existing file), QUERY_INFO and CLOSE with POSTQUERY_ATTRIB pay nothing
// for what several servers need (the size another one acknowledged): no metadata read more and no
// promise more. Reading it through FileService.getattr (an async function resolving the handle
// again) cost CREATE one inode read and 7 promises, QUERY_INFO and CLOSE 2 promises each.
import assert from 'node:assert/strict';
import { createHook } from 'node:async_hooks';
import { describe, it } from 'node:test';
import { memoryServer } from '../testing/memory-server.js';
import { SmbWriter } from './codec.js';
import { CreateDisposition } from './constants.js';
import * as files from './files.js';
import { close, create, createRequest, fileContext, openRwd } from './testing.js';

describe('SMB CREATE, QUERY_INFO and CLOSE on one server', () => {
  it('read the inode once and make no promise for several servers', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const w = await openRwd(c, 'f', CreateDisposition.CREATE);
    await files.write(c, w, { offset: 0, fileId: w.fileId, flags: 0, data: Buffer.alloc(100, 0x61) });
    const meta = srv.fs.shares()[0]!.meta;
    const orig = meta.getInode.bind(meta);
    let reads = 0;
    (meta as { getInode: typeof meta.getInode }).getInode = (id) => {
      reads++;
      return orig(id);
    };
    const count = async (f: () => Promise<unknown>): Promise<{ promises: number; reads: number }> => {
      for (let i = 0; i < 5; i++) await f(); // warm
      let n = 0;
      reads = 0;
      const h = createHook({
        init(_id, type) {
          if (type === 'PROMISE') n++;
        },
      }).enable();
      for (let i = 0; i < 20; i++) await f();
      h.disable();
      return { promises: n / 20, reads: reads / 20 };
    };
    const openClose = async (flags: number): Promise<void> => {
      const { open } = await create(c, createRequest('f', { createDisposition: CreateDisposition.OPEN }));
      await files.close(c, open, flags, new SmbWriter());
    };
    const queryInfo = () =>
      files.queryInfo(c, w, {
        infoType: 1,
        infoClass: 5,
        outputBufferLength: 4096,
        additionalInformation: 0,
        flags: 0,
        input: Buffer.alloc(0),
        fileId: w.fileId,
      });
    const resolve = () => srv.fs.resolve(w.handle);
    const plain = await count(() => openClose(0));
    const postquery = await count(() => openClose(1));
    const query = await count(queryInfo);
    const resolved = await count(resolve);
    // CREATE: the lookup and the open's registration; CLOSE with POSTQUERY_ATTRIB: one read more.
    assert.equal(plain.reads, 2, 'inode reads of CREATE and CLOSE');
    assert.equal(postquery.reads, 3, 'inode reads of CREATE and CLOSE with POSTQUERY_ATTRIB');
    assert.equal(query.reads, 1, 'inode reads of QUERY_INFO');
    // What a POSTQUERY_ATTRIB adds is one resolve of the handle and nothing more.
    assert.equal(postquery.promises - plain.promises, resolved.promises, 'promises POSTQUERY_ATTRIB adds to a CLOSE');
    await close(c, w);
    await srv.close();
  });
});
