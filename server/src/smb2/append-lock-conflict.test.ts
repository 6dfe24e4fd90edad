// An append (WRITE at 0xFFFFFFFFFFFFFFFF) refused by another open's byte-range lock changes
// nothing, as a refused WRITE at an offset: not the data, not the delayed write time (writetime.ts).
// Since the lock check of an append moved into the vfs callback (f37d86b), the delayed write time
// was started before it: the open's first real WRITE then counted as a later one and its write time
// stayed hidden until the close.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { memoryServer } from '../testing/memory-server.js';
import { CreateDisposition } from './constants.js';
import * as files from './files.js';
import * as writeTime from './writetime.js';
import { NtStatus } from './status.js';
import { OplockLevel } from './oplock.js';
import { close, create, createRequest, fileContext, openRwd, status } from './testing.js';

async function lockedFile() {
  const srv = await memoryServer();
  const c = fileContext(srv);
  const w = await openRwd(c, 'f', CreateDisposition.CREATE);
  await files.write(c, w, { offset: 0, fileId: w.fileId, flags: 0, data: Buffer.from('0123456789') });
  await close(c, w);
  const locker = await openRwd(c, 'f', CreateDisposition.OPEN);
  const a = await openRwd(c, 'f', CreateDisposition.OPEN);
  assert.equal(c.fs.byteRanges.tryLock(c.share.meta, a.inodeId, locker, {}, 10n, 1000n, true).kind, 'granted');
  return { srv, c, a, locker };
}

describe('SMB append refused by a byte-range lock', () => {
  it('is FILE_LOCK_CONFLICT and leaves the data and the delayed write time alone', async () => {
    const { srv, c, a } = await lockedFile();
    const before = writeTime.delayedCount();
    assert.equal(
      await status(files.write(c, a, { offset: -1, fileId: a.fileId, flags: 0, data: Buffer.from('x') })),
      NtStatus.FILE_LOCK_CONFLICT,
    );
    assert.equal((await srv.fs.resolve(a.handle)).inode.size, 10);
    assert.equal(writeTime.delayedCount(), before, 'no delayed write time for a refused append');
    await srv.close();
  });

  it("the open's first real WRITE afterwards shows its write time 2 s later, not at the close", async () => {
    const { srv, c, a, locker } = await lockedFile();
    await sleep(writeTime.WRITE_TIME_DELAY_MS + 200);
    assert.equal(
      await status(files.write(c, a, { offset: -1, fileId: a.fileId, flags: 0, data: Buffer.from('x') })),
      NtStatus.FILE_LOCK_CONFLICT,
    );
    await sleep(writeTime.WRITE_TIME_DELAY_MS + 200);
    await files.write(c, a, { offset: 0, fileId: a.fileId, flags: 0, data: Buffer.from('y') });
    await sleep(writeTime.WRITE_TIME_DELAY_MS + 200);
    const inode = (await srv.fs.resolve(a.handle)).inode;
    assert.deepEqual(writeTime.shownWriteTime(inode), inode.mtime);
    await close(c, a);
    await close(c, locker);
    await srv.close();
  });

  it("breaks no other client's caching: its Level II oplock stays (MS-FSA 2.1.5.3: the lock check comes first)", async () => {
    const { srv, c, a, locker } = await lockedFile();
    // Another client reads f with a Level II oplock, and records the breaks it is sent.
    const sent: Buffer[] = [];
    const reader = fileContext(srv, {
      sessionId: 9,
      caching: {
        clientGuid: Buffer.alloc(16, 9),
        leasing: true,
        leaseV2: false,
        breakTimeoutMs: 2000,
        notify: (_cmd, body) => {
          sent.push(body);
          return true;
        },
      },
    });
    const { open: r, body } = await create(
      reader,
      createRequest('f', { requestedOplockLevel: OplockLevel.II, createDisposition: CreateDisposition.OPEN }),
    );
    assert.equal(body[2], OplockLevel.II);
    assert.equal(
      await status(files.write(c, a, { offset: -1, fileId: a.fileId, flags: 0, data: Buffer.from('x') })),
      NtStatus.FILE_LOCK_CONFLICT,
    );
    assert.equal(sent.length, 0, 'no break for a refused append');
    // A write that goes ahead breaks it (to none: no acknowledgment awaited).
    await files.write(c, a, { offset: 0, fileId: a.fileId, flags: 0, data: Buffer.from('y') });
    assert.equal(sent.length, 1);
    assert.equal(sent[0]![2], OplockLevel.NONE);
    await close(reader, r);
    await close(c, a);
    await close(c, locker);
    await srv.close();
  });
});
