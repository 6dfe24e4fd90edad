// vfs/sparse.ts: which ranges of a file hold data and zeroing a range, checked as READ and WRITE are.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memoryServer } from '../testing/memory-server.js';
import { VfsError } from './errors.js';
import { CreateMode } from './service.js';
import { dataRanges, zeroRange } from './sparse.js';
import type { Identity } from './types.js';

const alice: Identity = { uid: 1000, gid: 1000, gids: [] };
const bob: Identity = { uid: 2000, gid: 2000, gids: [] };

describe('vfs sparse ranges', () => {
  it('asks read permission to list data ranges and write permission to zero, as READ and WRITE do', async () => {
    const srv = await memoryServer();
    const fs = srv.fs;
    const share = fs.shares()[0]!;
    const rootFh = fs.handleOf(share, await fs.root(share));
    await fs.setattr(rootFh, { uid: 0, gid: 0, gids: [] }, { mode: 0o777 });
    const f = await fs.create(rootFh, Buffer.from('f'), alice, CreateMode.GUARDED, { mode: 0o600 }, null);
    const fh = fs.handleOf(share, f.inode);
    await fs.write(fh, alice, 0, Buffer.alloc(100, 1), false);
    assert.deepEqual(await dataRanges(fs, fh, alice, 0, 100, 10), [[0, 100]]);
    const denied = (e: unknown): boolean => e instanceof VfsError && e.errno === 'ACCES';
    await assert.rejects(dataRanges(fs, fh, bob, 0, 100, 10), denied);
    await assert.rejects(zeroRange(fs, fh, bob, 0, 100), denied);
    assert.deepEqual((await fs.read(fh, alice, 0, 100)).data, Buffer.alloc(100, 1), 'nothing zeroed');
    await zeroRange(fs, fh, alice, 10, 100);
    assert.deepEqual((await fs.read(fh, alice, 0, 100)).data, Buffer.concat([Buffer.alloc(10, 1), Buffer.alloc(90)]));
    await srv.close();
  });
});
