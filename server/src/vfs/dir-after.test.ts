// The directory after a CREATE or REMOVE (the reply's post-op attributes) while other clients'
// changes run at once: the cache cannot keep the directory then (another change may commit after
// this one), and a read per reply was a query per call on PostgreSQL (issue 16, 8 clients).
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { BlockCache } from '../blocks/cache.js';
import { MemoryBlockStore } from '../blocks/memory.js';
import { BlockService } from '../blocks/service.js';
import { MemoryWal } from '../blocks/wal.js';
import type { MetadataStore } from '../meta/store.js';
import { createMetadataStore } from '../stores.js';
import { TEST_SHARE } from '../testing/memory-server.js';
import { CreateMode, FileService } from './service.js';
import type { Identity } from './types.js';

const root: Identity = { uid: 0, gid: 0, gids: [] };
const n = (s: string) => Buffer.from(s);

describe('post-op directory attributes with other changes in flight', () => {
  let dir: string;
  let meta: MetadataStore;
  let fs: FileService;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-dir-after-'));
    meta = createMetadataStore('meta', { type: 'embedded' }, dir, pino({ level: 'silent' }));
    await meta.open();
    const data = new BlockService(new MemoryBlockStore(), meta, {
      shareId: 1,
      keyPrefix: 'test',
      blockSize: 4096,
      wal: new MemoryWal(1024 * 1024),
      cache: new BlockCache(1024 * 1024),
    });
    fs = new FileService();
    await fs.addShare(TEST_SHARE, meta, data);
  });

  after(async () => {
    await fs.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('CREATE and REMOVE answer the directory as their change left it, without reading it again', async () => {
    const share = fs.shares()[0]!;
    const rootFh = fs.handleOf(share, await fs.root(share));
    const a = await fs.mkdir(rootFh, n('a'), root, { mode: 0o755 });
    const b = await fs.mkdir(rootFh, n('b'), root, { mode: 0o755 });
    const aFh = fs.handleOf(share, a.inode);
    const bFh = fs.handleOf(share, b.inode);
    // The engine under the cache: a create in b is held there while one in a runs.
    const inner = (meta as unknown as { inner: MetadataStore }).inner;
    const createIn = inner.createIn!.bind(inner);
    const remove = inner.remove.bind(inner);
    const getInode = inner.getInode.bind(inner);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inB = new Promise<void>((r) => (entered = r));
    const hold = async () => {
      entered();
      await held;
    };
    inner.createIn = async (d, name, init, now) => {
      if (d === b.inode.id) await hold();
      return createIn(d, name, init, now);
    };
    inner.remove = async (d, name, isDir, now, expect) => {
      if (d === b.inode.id) await hold();
      return remove(d, name, isDir, now, expect);
    };
    const reads: number[] = [];
    inner.getInode = (id) => (reads.push(id), getInode(id));
    try {
      const other = fs.create(bFh, n('x'), root, CreateMode.UNCHECKED, {}, null);
      await inB;
      const made = await fs.create(aFh, n('f'), root, CreateMode.UNCHECKED, {}, null);
      assert.deepEqual(reads, [], 'the reply read nothing from the store');
      assert.deepEqual(made.dirAfter, await getInode(a.inode.id), 'the directory as the create left it');
      assert.deepEqual(made.dirAfter?.mtime, made.inode.ctime);
      release();
      await other;

      const again = new Promise<void>((r) => (entered = r));
      const heldAgain = new Promise<void>((r) => (release = r));
      inner.remove = async (d, name, isDir, now, expect) => {
        if (d === b.inode.id) {
          entered();
          await heldAgain;
        }
        return remove(d, name, isDir, now, expect);
      };
      await fs.getattr(aFh, root); // the cache holds a again (no change in flight)
      const otherRm = fs.remove(bFh, n('x'), root, false);
      await again;
      reads.length = 0;
      const gone = await fs.remove(aFh, n('f'), root, false);
      assert.deepEqual(reads, [], 'the reply read nothing from the store');
      assert.deepEqual(gone.dirAfter, await getInode(a.inode.id), 'the directory as the remove left it');
      release();
      await otherRm;
    } finally {
      release();
      inner.createIn = createIn;
      inner.remove = remove;
      inner.getInode = getInode;
    }
  });
});
