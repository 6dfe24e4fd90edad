// ShareRuntime: converging the served shares to a desired set, as the control plane changes it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it, mock } from 'node:test';
import { pino } from 'pino';
import pLimit from 'p-limit';
import { BlockCache } from './blocks/cache.js';
import { FileWal, MemoryWal, RECORD_SHARE_STORED, RECORD_TRUNCATE, type Wal } from './blocks/wal.js';
import { until } from '../../test/helpers/hostile.js';
import type { BlockStoreConfig, ShareConfig } from './config/types.js';
import { ShareRuntime, type DesiredShares } from './shares.js';
import { onOneVolume } from './stores.js';
import { FileService, CreateMode } from './vfs/service.js';
import { BufferPools } from './wire/buffer-pool.js';

const log = pino({ level: 'silent' });
const root = { uid: 0, gid: 0, gids: [] };

function share(name: string, blocks = 'b', extra: Partial<ShareConfig> = {}): ShareConfig {
  return {
    name,
    metadata: 'm',
    blocks,
    read_only: false,
    root_squash: false,
    anonymous_uid: 65534,
    anonymous_gid: 65534,
    root_mode: 0o777,
    root_uid: 0,
    root_gid: 0,
    ...extra,
  };
}

/** A share runtime serving into a new file service, over `wal`, its stores under `dataDir`. */
function runtime(dataDir: string, wal: Wal): { fs: FileService; rt: ShareRuntime } {
  const fs = new FileService(log);
  const rt = new ShareRuntime({
    fileService: fs,
    wal,
    cache: new BlockCache(1024 * 1024),
    uploads: pLimit(4),
    buffers: new BufferPools(8 * 1024 * 1024),
    dataDir,
    log,
    metrics: null,
    observe: false,
  });
  return { fs, rt };
}

describe('ShareRuntime', () => {
  let dir: string;
  let fs: FileService;
  let rt: ShareRuntime;
  const fsStore = (sub: string): BlockStoreConfig => ({ type: 'filesystem', block_size: 64 * 1024, path: path.join(dir, sub) });

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-shares-'));
    ({ fs, rt } = runtime(dir, new MemoryWal(64 * 1024 * 1024)));
  });

  after(async () => {
    await rt.close();
    await rm(dir, { recursive: true, force: true });
  });

  const desired = (shares: ShareConfig[], blocks: Record<string, BlockStoreConfig>): DesiredShares => ({
    metadataStores: { m: { type: 'memory' } },
    blockStores: blocks,
    shares,
  });

  it('adds, updates in place, and removes shares', async () => {
    const a = await rt.apply(desired([share('/a'), share('/b')], { b: fsStore('one') }));
    assert.deepEqual(a, { added: ['/a', '/b'], removed: [], updated: [] });
    assert.deepEqual(
      fs
        .shares()
        .map((s) => s.name)
        .sort(),
      ['/a', '/b'],
    );
    const b = await rt.apply(desired([share('/a', 'b', { read_only: true }), share('/b')], { b: fsStore('one') }));
    assert.deepEqual(b, { added: [], removed: [], updated: ['/a'] });
    assert.equal(fs.share('/a')?.readOnly, true, 'changed in place: the next request sees it');
    const c = await rt.apply(desired([share('/b')], { b: fsStore('one') }));
    assert.deepEqual(c, { added: [], removed: ['/a'], updated: [] });
    assert.equal(fs.share('/a'), undefined);
    const same = await rt.apply(desired([share('/b')], { b: fsStore('one') }));
    assert.deepEqual(same, { added: [], removed: [], updated: [] }, 'applying the same set changes nothing');
  });

  it('a share whose store settings change is served again over the reopened store, its data stored first', async () => {
    const s = fs.share('/b')!;
    const rootFh = fs.handleOf(s, await fs.root(s));
    const f = await fs.create(rootFh, Buffer.from('f'), root, CreateMode.UNCHECKED, {}, null);
    await fs.write(fs.handleOf(s, f.inode), root, 0, Buffer.alloc(100_000, 7), false);
    const r = await rt.apply(desired([share('/b')], { b: fsStore('two') }));
    assert.deepEqual(r, { added: [], removed: [], updated: ['/b'] });
    // The old store got the written data (uploaded before it closed); the new one is in use.
    // Objects are inside share directories (the marker and .tmp are not objects).
    const objects = (await readdir(path.join(dir, 'one'), { recursive: true })).filter((p) => !p.startsWith('.') && p.includes(path.sep));
    assert.ok(objects.length > 0, 'written data reached the old store before it closed');
    assert.notEqual(fs.share('/b'), s, 'a new share object over the new store');
  });

  it('a share removed while a truncate cannot reach its metadata store is not marked stored: the next start finishes the truncate', async () => {
    const walDir = path.join(dir, 'wal-c');
    const { wal } = await FileWal.open(walDir, { maxBytes: 64 << 20, segmentBytes: 4 << 20 });
    wal.tidy();
    const c = runtime(dir, wal);
    try {
      await c.rt.apply(desired([share('/c')], { b: fsStore('three') }));
      const s = c.fs.share('/c')!;
      const rootFh = c.fs.handleOf(s, await c.fs.root(s));
      const f = c.fs.handleOf(s, (await c.fs.create(rootFh, Buffer.from('f'), root, CreateMode.UNCHECKED, {}, null)).inode);
      await c.fs.write(f, root, 0, Buffer.alloc(100, 7), true);
      let drops = 0;
      mock.method(s.meta, 'dropBlocks', () => {
        drops++;
        return Promise.reject(new Error('database unreachable'));
      });
      const truncate = c.fs.setattr(f, root, { size: 0 }).then(
        () => 'applied',
        (e: Error) => e.message,
      );
      await until(() => drops > 0, 30_000, 'the truncate reached the block map');
      await c.rt.apply(desired([], { b: fsStore('three') }));
      assert.match(await truncate, /next start finishes it/);
      await c.rt.close();
      // The next start: the truncate's record is replayed (the share was not logged as stored).
      const { records } = await FileWal.open(walDir, { maxBytes: 64 << 20, segmentBytes: 4 << 20 });
      // (A share-stored marker after it would make the start skip it: server.ts replayWal.)
      const at = records.findIndex((r) => r.type === RECORD_TRUNCATE && r.share === s.id);
      assert.ok(at >= 0, "the truncate's record is in the WAL");
      assert.ok(
        !records.some((r, i) => i > at && r.type === RECORD_SHARE_STORED && r.share === s.id),
        'the share is not logged as stored after it: the next start replays the truncate',
      );
    } finally {
      await c.rt.close();
    }
  });

  it('a share naming a missing store is left out (strict: refused)', async () => {
    const r = await rt.apply(desired([share('/b', 'two-missing')], { b: fsStore('two') }));
    assert.deepEqual(r.added, []);
    assert.equal(fs.share('/b'), undefined);
    await assert.rejects(rt.apply(desired([share('/c', 'nope')], { b: fsStore('two') }), { strict: true }), /no block store named "nope"/);
  });
});

describe('ShareRuntime: uploads of a filesystem store on the WAL volume give way to bursts of writes', () => {
  const stores = (extra: Record<string, BlockStoreConfig> = {}): Record<string, BlockStoreConfig> => ({
    local: { type: 'filesystem', block_size: 64 * 1024 },
    mem: { type: 'memory', block_size: 64 * 1024 },
    ...extra,
  });

  it('a filesystem store beside a WAL on disk defers; a memory store, a memory WAL or another volume does not', async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-shares-defer-'));
    const { wal } = await FileWal.open(path.join(dir, 'wal'), { maxBytes: 64 * 1024 * 1024 });
    wal.tidy();
    const onDisk = runtime(dir, wal);
    const inMemory = runtime(path.join(dir, 'mem'), new MemoryWal(64 * 1024 * 1024));
    // Another volume: a tmpfs mounted for the test (the tests run as root; else that case is left out).
    let elsewhere: string | null = path.join(dir, 'far');
    await mkdir(elsewhere);
    if (process.getuid?.() !== 0 || spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', elsewhere]).status !== 0) elsewhere = null;
    try {
      await onDisk.rt.apply({
        metadataStores: { m: { type: 'memory' } },
        blockStores: stores(
          elsewhere === null ? {} : { far: { type: 'filesystem', block_size: 64 * 1024, path: path.join(elsewhere, 'b') } },
        ),
        shares: [share('/local', 'local'), share('/mem', 'mem'), ...(elsewhere === null ? [] : [share('/far', 'far')])],
      });
      assert.equal(onDisk.fs.share('/local')?.data.defersWhileBusy, true);
      assert.equal(onDisk.fs.share('/mem')?.data.defersWhileBusy, false);
      if (elsewhere === null) t.diagnostic('not root, or mount failed: the other-volume case is not tried');
      else assert.equal(onDisk.fs.share('/far')?.data.defersWhileBusy, false);
      await inMemory.rt.apply({ metadataStores: { m: { type: 'memory' } }, blockStores: stores(), shares: [share('/local', 'local')] });
      assert.equal(inMemory.fs.share('/local')?.data.defersWhileBusy, false);
    } finally {
      await onDisk.rt.close();
      await inMemory.rt.close();
      await wal.close();
      if (elsewhere !== null) spawnSync('umount', ['-l', elsewhere]);
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('onOneVolume: the same volume, another one (/proc), or a path that is not there', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-volume-'));
    try {
      await mkdir(path.join(dir, 'a'));
      assert.equal(onOneVolume(dir, path.join(dir, 'a')), true);
      assert.equal(onOneVolume(dir, '/proc'), false);
      assert.equal(onOneVolume(dir, path.join(dir, 'missing')), false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
