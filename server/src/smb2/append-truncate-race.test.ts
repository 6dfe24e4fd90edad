// An SMB append (WRITE at 0xFFFFFFFFFFFFFFFF) and a truncate of the same file (SET_INFO
// EndOfFile, NFS SETATTR) at the same time: the append lands at the end of the file before the
// truncate or after it, never at the end the file had before a truncate that it then waits for
// (the file grown back to its old size, a hole of zeros, then the appended bytes).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memoryServer } from '../testing/memory-server.js';
import { CreateDisposition } from './constants.js';
import * as files from './files.js';
import { close, fileContext, openRwd } from './testing.js';

const ticks = async (n: number): Promise<void> => {
  for (let i = 0; i < n; i++) await Promise.resolve();
};

describe('SMB append racing a truncate of the file', () => {
  for (const first of ['append', 'truncate'] as const)
    it(`lands before or after the truncate (${first} first, the other 0 to 11 ticks later)`, async () => {
      for (let delay = 0; delay < 12; delay++) {
        const srv = await memoryServer();
        const c = fileContext(srv);
        const w = await openRwd(c, 'f', CreateDisposition.CREATE);
        await files.write(c, w, { offset: 0, fileId: w.fileId, flags: 0, data: Buffer.alloc(100, 0x61) });
        const a = await openRwd(c, 'f', CreateDisposition.OPEN);
        const append = () => files.write(c, a, { offset: -1, fileId: a.fileId, flags: 0, data: Buffer.from('XXXXXXXXXX') });
        const truncate = () => c.fs.setattr(w.handle, c.id, { size: 0 });
        await Promise.all(first === 'append' ? [append(), ticks(delay).then(truncate)] : [truncate(), ticks(delay).then(append)]);
        const text = (await srv.fs.read(a.handle, c.id, 0, 1000)).data.toString('latin1').replace(/\0/g, '0');
        assert.ok(['', 'XXXXXXXXXX'].includes(text), `${first} first, ${delay} ticks: the file holds ${text.length} bytes: ${text}`);
        await close(c, a);
        await close(c, w);
        await srv.close();
      }
    });

  it('a truncate made whole while the append checks its range waits for the append, or the append reads the end again', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const w = await openRwd(c, 'f', CreateDisposition.CREATE);
    await files.write(c, w, { offset: 0, fileId: w.fileId, flags: 0, data: Buffer.alloc(100, 0x61) });
    let truncated = null as Promise<unknown> | null;
    // The truncate starts and is given every tick it needs inside the append's byte-range check.
    await c.fs.append(w.handle, c.id, Buffer.from('XXXXXXXXXX'), false, null, async () => {
      truncated ??= c.fs.setattr(w.handle, c.id, { size: 0 });
      await Promise.race([truncated, ticks(50)]);
    });
    await truncated;
    const text = (await srv.fs.read(w.handle, c.id, 0, 1000)).data.toString('latin1').replace(/\0/g, '0');
    assert.ok(['', 'XXXXXXXXXX'].includes(text), `the file holds ${text.length} bytes: ${text}`);
    await close(c, w);
    await srv.close();
  });
});
