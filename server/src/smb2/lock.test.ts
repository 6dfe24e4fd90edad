// LOCK over the real file service and byte-range lock manager (memory stores), without sockets.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memoryServer } from '../testing/memory-server.js';
import { SmbWriter } from './codec.js';
import { Access, CreateDisposition } from './constants.js';
import * as files from './files.js';
import { lock, LockFlags } from './lock.js';
import type { Open } from './state.js';
import { NtStatus } from './status.js';
import { create, createRequest, fileContext, status } from './testing.js';

describe('SMB2 LOCK', () => {
  it('needs FILE_READ_DATA or FILE_WRITE_DATA on the open: attributes alone cannot lock out the owner', async () => {
    const srv = await memoryServer();
    const alice = fileContext(srv);
    const bob = { ...fileContext(srv, { sessionId: 2 }), id: { uid: 2000, gid: 2000, gids: [] } };
    const open = async (c: files.FileContext, desiredAccess: number, createDisposition: number = CreateDisposition.OPEN) =>
      (await create(c, createRequest('f', { desiredAccess, createDisposition }))).open;
    const owner = await open(bob, Access.GENERIC_ALL, CreateDisposition.CREATE);
    await files.write(bob, owner, { offset: 0, fileId: owner.fileId, flags: 0, data: Buffer.from('bob') });
    await srv.fs.setattr(owner.handle, bob.id, { mode: 0o600 });
    const client = {};
    const lockAll = (o: Open) =>
      lock(
        { locks: srv.fs.byteRanges, client, goAsync: () => assert.fail('no wait expected'), mayUseShare: () => undefined },
        o,
        {
          lockSequence: 0,
          fileId: o.fileId,
          locks: [{ offset: 0n, length: 2n ** 64n - 1n, flags: LockFlags.EXCLUSIVE | LockFlags.FAIL_IMMEDIATELY }],
        },
        new SmbWriter(),
      );
    // Alice may not read Bob's 0600 file, yet may open it to see its attributes.
    const attrs = await open(alice, Access.FILE_READ_ATTRIBUTES);
    assert.equal(await status(lockAll(attrs)), NtStatus.ACCESS_DENIED);
    const got = await files.read(bob, owner, { flags: 0, length: 3, offset: 0, fileId: owner.fileId, minimumCount: 0 });
    assert.equal(got.toString(), 'bob', 'the owner still reads');
    // An open that may read locks, and then the range is locked for others.
    const reader = await open(bob, Access.FILE_READ_DATA);
    assert.equal(await lockAll(reader), NtStatus.SUCCESS);
    assert.equal(await status(lockAll(owner)), NtStatus.LOCK_NOT_GRANTED);
    await srv.close();
  });

  it('takes no lock for a caller whose share grant became none since the open; an unlock still works', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const { open } = await create(c, createRequest('f', { createDisposition: CreateDisposition.CREATE }));
    let level: 'none' | 'read-write' = 'read-write';
    srv.fs.setAccessPolicy(() => level);
    const ctx = {
      locks: srv.fs.byteRanges,
      client: {},
      goAsync: () => assert.fail('no wait expected'),
      mayUseShare: () => void srv.fs.identity(c.share, c.id),
    };
    const req = (offset: bigint, flags: number) => ({ lockSequence: 0, fileId: open.fileId, locks: [{ offset, length: 10n, flags }] });
    const EXCLUSIVE = LockFlags.EXCLUSIVE | LockFlags.FAIL_IMMEDIATELY;
    assert.equal(await lock(ctx, open, req(0n, EXCLUSIVE), new SmbWriter()), NtStatus.SUCCESS);
    level = 'none';
    assert.equal(await status(lock(ctx, open, req(100n, EXCLUSIVE), new SmbWriter())), NtStatus.ACCESS_DENIED);
    assert.equal(await lock(ctx, open, req(0n, LockFlags.UNLOCK), new SmbWriter()), NtStatus.SUCCESS, 'what it holds it may release');
    level = 'read-write';
    // Nothing was left held by the refused request: another open may take that range.
    const { open: other } = await create(c, createRequest('f'));
    const otherReq = { lockSequence: 0, fileId: other.fileId, locks: [{ offset: 100n, length: 10n, flags: EXCLUSIVE }] };
    assert.equal(await lock(ctx, other, otherReq, new SmbWriter()), NtStatus.SUCCESS);
    await srv.close();
  });
});
