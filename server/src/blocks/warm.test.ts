// Reading block files ahead of a sequential read (warm.ts): each file once, nothing for reads in no
// order, and a local block store's blocks read ahead through the BlockService as the disk cache's are.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { MemoryMetadataStore } from '../meta/memory.js';
import { patterned, readBlocks, tempDirs, uploadedFile } from '../testing/blocks.js';
import { BlockCache } from './cache.js';
import { FilesystemBlockStore } from './filesystem.js';
import { observeBlockStore } from './observed.js';
import { ReadHandles } from './read-handles.js';
import { BlockService } from './service.js';
import { FileWal } from './wal.js';
import { PageCacheWarmer } from './warm.js';

const tmp = tempDirs('dittofs-warm-');

describe('PageCacheWarmer', () => {
  it('reads each file once while remembered, again once forgotten, and never a missing one', async () => {
    const dir = tmp();
    const a = path.join(dir, 'a');
    writeFileSync(a, patterned(10_000, 1));
    const handles = new ReadHandles(4);
    const w = new PageCacheWarmer(handles);
    w.warm(a);
    w.warm(a);
    w.warm(path.join(dir, 'missing'));
    await w.done();
    assert.equal(w.warms, 1, 'a once; the missing file is no error and no read');
    w.warm(a);
    await w.done();
    assert.equal(w.warms, 1, 'still remembered');
    w.forget(a);
    w.warm(a, { stillWanted: () => false });
    await w.done();
    assert.equal(w.warms, 1, 'not wanted any more when its turn came');
    w.forget(a);
    w.warm(a, { size: 4096 });
    await w.done();
    assert.equal(w.warms, 2, 'read again once forgotten');
    w.close();
    w.forget(a);
    w.warm(a);
    await w.done();
    assert.equal(w.warms, 2, 'nothing after close');
    handles.close();
  });
});

describe('a filesystem block store under the BlockService', () => {
  it('reads the next blocks ahead of a sequential read, once each, and nothing for reads in no order', async () => {
    const BS = 4096;
    const meta = new MemoryMetadataStore();
    const fs = new FilesystemBlockStore(tmp());
    await fs.open();
    const { wal } = await FileWal.open(tmp(), { maxBytes: 1 << 20 });
    wal.tidy();
    // As the server builds it: wrapped for metrics and traces, which must pass the hint on.
    const svc = new BlockService(observeBlockStore(fs, { name: 'local' }), meta, {
      shareId: 1,
      keyPrefix: 't',
      blockSize: BS,
      wal,
      cache: new BlockCache(0),
    });
    const { ino, data } = await uploadedFile(svc, meta, 4, BS);
    await readBlocks(svc, ino, data, BS, [3, 0, 2]);
    await fs.readAheadDone();
    assert.equal(fs.warms, 0, 'reads in no order read nothing ahead');
    // One block per call: from the second on, the blocks after it are read ahead, each once.
    await readBlocks(svc, ino, data, BS, [0, 1, 2, 3]);
    await fs.readAheadDone();
    assert.equal(fs.warms, 2, 'blocks 2 and 3 were read ahead, each once');
    // Half blocks: the read that ends a block reads ahead too; what is read ahead is still right.
    assert.deepEqual(await svc.read(ino, 0, data.length, data.length), data);
    await svc.close();
    await wal.close();
    await fs.close();
  });
});
