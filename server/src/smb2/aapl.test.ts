// The AAPL server query through CREATE over the real file service (memory stores).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memoryServer } from '../testing/memory-server.js';
import { AaplBitmap, AaplServerCaps, AaplVolumeCaps, AAPL_MODEL } from './aapl.js';
import { NtStatus } from './status.js';
import { create, createRequest, fileContext, responseContexts, status } from './testing.js';

/** A server query as macOS sends it (READ_DIR_ATTR | OSX_COPYFILE | UNIX_BASED | NFS_ACE client caps). */
function query(bitmap: number, size = 24, command = 1): { name: string; data: Buffer } {
  const d = Buffer.alloc(size);
  if (size >= 24) {
    d.writeUInt32LE(command, 0);
    d.writeBigUInt64LE(BigInt(bitmap), 8);
    d.writeBigUInt64LE(0xfn, 16);
  }
  return { name: 'AAPL', data: d };
}

describe('AAPL create context', () => {
  it('answers server caps, volume caps and the model string, in bitmap order', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const all = AaplBitmap.SERVER_CAPS | AaplBitmap.VOLUME_CAPS | AaplBitmap.MODEL_INFO;
    const { body } = await create(c, createRequest('', { contexts: [query(all)] }));
    const aapl = responseContexts(body).find((x) => x.name === 'AAPL');
    assert.ok(aapl, 'an AAPL reply');
    const d = aapl.data;
    assert.equal(d.readUInt32LE(0), 1);
    assert.equal(Number(d.readBigUInt64LE(8)), all);
    assert.equal(Number(d.readBigUInt64LE(16)), AaplServerCaps.UNIX_BASED, 'no READ_DIR_ATTR: directory listings are not overloaded');
    assert.equal(Number(d.readBigUInt64LE(24)), AaplVolumeCaps.CASE_SENSITIVE | AaplVolumeCaps.FULL_SYNC);
    const len = d.readUInt32LE(36);
    assert.equal(d.subarray(40, 40 + len).toString('utf16le'), AAPL_MODEL);
    assert.equal(d.length, 40 + len);
  });

  it('answers only what the bitmap asks', async () => {
    const srv = await memoryServer();
    const { body } = await create(fileContext(srv), createRequest('', { contexts: [query(AaplBitmap.VOLUME_CAPS | 0x100)] }));
    const d = responseContexts(body).find((x) => x.name === 'AAPL')!.data;
    assert.equal(Number(d.readBigUInt64LE(8)), AaplBitmap.VOLUME_CAPS, 'unknown bits are not echoed');
    assert.equal(d.length, 24);
  });

  it('a malformed query fails the CREATE with INVALID_PARAMETER and creates nothing', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    assert.equal(await status(create(c, createRequest('new.txt', { contexts: [query(7, 16)] }))), NtStatus.INVALID_PARAMETER);
    assert.equal(await status(create(c, createRequest('new.txt', { contexts: [query(7, 24, 2)] }))), NtStatus.INVALID_PARAMETER);
    assert.equal(
      await status(create(c, createRequest('new.txt', { createDisposition: 1 }))),
      NtStatus.OBJECT_NAME_NOT_FOUND,
      'not created',
    );
  });
});
