// The allocation size a client sets (allocation.ts): an overwrite of the file (FILE_OVERWRITE,
// OVERWRITE_IF, SUPERSEDE) leaves the one its AlSi context asks for, or none (MS-FSA 2.1.5.1.2.1).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memoryServer } from '../testing/memory-server.js';
import { CreateDisposition, FileInfoClass } from './constants.js';
import * as files from './files.js';
import type { Open } from './state.js';
import { close, create, createRequest, fileContext } from './testing.js';

const size8 = (n: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(n, 0);
  return b;
};

describe('allocation size and overwrites', () => {
  for (const [label, disposition] of [
    ['OVERWRITE', CreateDisposition.OVERWRITE],
    ['OVERWRITE_IF', CreateDisposition.OVERWRITE_IF],
    ['SUPERSEDE', CreateDisposition.SUPERSEDE],
  ] as const) {
    it(`${label} drops the allocation size set before, or keeps the AlSi one it asks for`, async () => {
      const srv = await memoryServer();
      const c = fileContext(srv);
      const standardAllocation = async (o: Open): Promise<number> =>
        (
          await files.queryInfo(c, o, {
            infoType: 1,
            infoClass: FileInfoClass.FileStandardInformation,
            outputBufferLength: 4096,
            additionalInformation: 0,
            flags: 0,
            fileId: o.fileId,
            input: Buffer.alloc(0),
          })
        ).output.readUInt32LE(0);
      const f = (await create(c, createRequest('f', { createDisposition: CreateDisposition.CREATE }))).open;
      await files.setInfo(c, f, {
        infoType: 1,
        infoClass: FileInfoClass.FileAllocationInformation,
        additionalInformation: 0,
        fileId: f.fileId,
        buffer: size8(1 << 20),
      });
      assert.equal(await standardAllocation(f), 1 << 20);
      await close(c, f);

      const g = await create(c, createRequest('f', { createDisposition: disposition }));
      assert.equal(g.body.readUInt32LE(40), 0, 'CREATE response AllocationSize');
      assert.equal(await standardAllocation(g.open), 0, 'after the overwrite');
      await close(c, g.open);

      const h = await create(c, createRequest('f', { createDisposition: disposition, contexts: [{ name: 'AlSi', data: size8(65536) }] }));
      assert.equal(h.body.readUInt32LE(40), 65536);
      assert.equal(await standardAllocation(h.open), 65536);
      await close(c, h.open);
      await srv.close();
    });
  }
});
