// WRITE is the hot path of both protocols: FileService.write hands back writeData's own promise.
// Declared async, it wrapped it in one more (and resolving an async function's promise with a
// promise costs a thenable job and a derived promise): two promises and more ticks per NFS and SMB
// WRITE than before append() split writeData out of it.
import assert from 'node:assert/strict';
import { createHook } from 'node:async_hooks';
import { describe, it } from 'node:test';
import { memoryServer } from '../testing/memory-server.js';
import { CreateMode, FileService } from './service.js';

describe('FileService.write hot path', () => {
  it('a WRITE makes no more promises than writeData itself', async () => {
    const srv = await memoryServer();
    const share = srv.fs.shares()[0]!;
    const root = { uid: 0, gid: 0, gids: [] };
    const dir = srv.fs.handleOf(share, await srv.fs.root(share));
    const { inode } = await srv.fs.create(dir, Buffer.from('f'), root, CreateMode.UNCHECKED, { mode: 0o644 }, null);
    const handle = srv.fs.handleOf(share, inode);
    const data = Buffer.alloc(4096, 1);
    const count = async (f: () => Promise<unknown>): Promise<number> => {
      for (let i = 0; i < 20; i++) await f(); // warm (blocks allocated, caches filled)
      let n = 0;
      const h = createHook({
        init(_id, type) {
          if (type === 'PROMISE') n++;
        },
      }).enable();
      for (let i = 0; i < 50; i++) await f();
      h.disable();
      return n / 50;
    };
    type Private = { writeData: FileService['write'] };
    const direct = await count(() => (srv.fs as unknown as Private).writeData(handle, root, 0, data, false, null, null));
    const viaWrite = await count(() => srv.fs.write(handle, root, 0, data, false));
    assert.equal(viaWrite, direct, 'promises per write()');
    await srv.close();
  });
});
