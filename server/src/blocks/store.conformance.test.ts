// One BlockStore contract, every engine: memory, filesystem (a temp dir) and s3 (a private s3rver,
// or DITTOFS_TEST_S3_ENDPOINT). Engine-specific behaviour (S3 errors, outages) is in <engine>.test.ts.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { startS3, type S3TestServer } from '../../../test/helpers/s3.js';
import { FilesystemBlockStore, MARKER, SYSTEM_DIRS } from './filesystem.js';
import { MemoryBlockStore } from './memory.js';
import { S3BlockStore } from './s3.js';
import type { BlockStore } from './store.js';
import { volumeTakesDirect } from '../testing/direct-io.js';
import { BufferPool } from '../wire/buffer-pool.js';

const MiB = 1024 * 1024;

/** Byte equality without assert.deepEqual's element-by-element diff of megabytes on failure. */
function sameBytes(actual: Buffer | null, expected: Buffer, what = 'bytes'): void {
  assert.ok(actual !== null, `${what}: got null, expected ${expected.length} bytes`);
  assert.equal(actual.length, expected.length, `${what}: length`);
  if (actual.equals(expected)) return;
  const at = actual.findIndex((b, i) => b !== expected[i]);
  assert.equal(at, -1, `${what}: first difference at byte ${at}`);
}

interface Engine {
  kind: string;
  /** Whether a new instance over the same backing sees what an earlier one wrote. */
  persistent: boolean;
  setup(): Promise<void>;
  /** A new, unopened instance over the engine's backing (a directory, a bucket). */
  create(): BlockStore;
  teardown(): Promise<void>;
}

function memoryEngine(): Engine {
  return { kind: 'memory', persistent: false, setup: async () => {}, create: () => new MemoryBlockStore(), teardown: async () => {} };
}

/** The marker of a store made before the flat layout (format 1: a directory per file). */
const NESTED_MARKER = `${JSON.stringify({ kind: 'dittofs filesystem block store', format: 1, created: '2026-01-01T00:00:00.000Z' })}\n`;

/** A store directory as a DittoFS from before the flat layout left it: its marker, no object yet. */
async function nestedStoreDir(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, MARKER), NESTED_MARKER);
  return dir;
}

/** A fresh directory for each test of the enclosing suite, removed after it (call in a describe). */
function dirPerTest(prefix: string): () => string {
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  return () => dir;
}

/** A new store (flat), or one made before the flat layout (nested). */
function filesystemEngine(layout: 'flat' | 'nested'): Engine {
  let dir = '';
  return {
    kind: `filesystem (${layout})`,
    persistent: true,
    async setup() {
      dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-blocks-'));
      if (layout === 'nested') await nestedStoreDir(dir);
    },
    create: () => new FilesystemBlockStore(dir),
    async teardown() {
      if (dir !== '') await rm(dir, { recursive: true, force: true });
    },
  };
}

function s3Engine(): Engine {
  let s3: S3TestServer | undefined;
  return {
    kind: 's3',
    persistent: true,
    async setup() {
      s3 = await startS3();
    },
    create() {
      if (s3 === undefined) throw new Error('no S3 server (see the before hook)');
      return new S3BlockStore(s3.storeOptions({ prefix: 'conformance' }));
    },
    async teardown() {
      await s3?.close();
    },
  };
}

for (const engine of [memoryEngine(), filesystemEngine('flat'), filesystemEngine('nested'), s3Engine()]) {
  describe(`BlockStore conformance: ${engine.kind}`, () => {
    let store: BlockStore;
    // Keys like the block service's (`share/inode/index-version-random`), fresh in every test, so
    // that tests sharing one directory or bucket never see each other's objects.
    let tests = 0;
    let base = '';
    const key = (name: string): string => `${base}/${name}`;
    const opened: BlockStore[] = [];
    const open = async (): Promise<BlockStore> => {
      const s = engine.create();
      await s.open();
      opened.push(s);
      return s;
    };

    before(() => engine.setup());
    after(() => engine.teardown());
    beforeEach(async () => {
      base = `0000beef/${++tests}`;
      store = await open();
    });
    afterEach(async () => {
      for (const s of opened.splice(0)) await s.close();
    });

    it('reads back exactly the bytes written', async () => {
      const data = randomBytes(100_000);
      await store.put(key('1-0-a'), data);
      sameBytes(await store.get(key('1-0-a')), data);
      if (engine.persistent) {
        await store.close();
        const again = await open();
        sameBytes(await again.get(key('1-0-a')), data, 'a new instance over the same backing sees the object');
      }
    });

    it('returns null for a missing key, with or without a range', async () => {
      assert.equal(await store.get(key('missing')), null);
      assert.equal(await store.get(key('missing'), 10), null);
      assert.equal(await store.get(key('missing'), 0, 100), null);
      assert.equal(await store.get(key('missing'), 0, 0), null);
    });

    it('reads ranges: inside, to the end, past the end, and empty', async () => {
      const data = randomBytes(10_000);
      await store.put(key('r'), data);
      sameBytes(await store.get(key('r'), 1000, 500), data.subarray(1000, 1500));
      sameBytes(await store.get(key('r'), 0, 1), data.subarray(0, 1));
      sameBytes(await store.get(key('r'), 9999, 1), data.subarray(9999));
      sameBytes(await store.get(key('r'), 4000), data.subarray(4000), 'offset without length reads to the end');
      sameBytes(await store.get(key('r'), 9000, 5000), data.subarray(9000), 'a range past the end gives fewer bytes');
      sameBytes(await store.get(key('r'), 10_000, 10), Buffer.alloc(0), 'a range starting at the end is empty');
      sameBytes(await store.get(key('r'), 20_000, 10), Buffer.alloc(0), 'a range starting past the end is empty');
      sameBytes(await store.get(key('r'), 500, 0), Buffer.alloc(0), 'length 0 of an object that exists is empty, not null');
    });

    it('readInto (local engines): ranges straight into a caller buffer, fewer bytes at the end, null if absent', async (t) => {
      if (!store.readInto) return t.skip(`${engine.kind} is not a local engine`);
      const data = randomBytes(10_000);
      await store.put(key('ri'), data);
      const target = Buffer.alloc(3000, 0xee);
      assert.equal(await store.readInto(key('ri'), 1000, target, 100, 2000), 2000);
      sameBytes(target.subarray(100, 2100), data.subarray(1000, 3000));
      assert.equal(target[99], 0xee, 'nothing before targetStart is touched');
      assert.equal(target[2100], 0xee, 'nothing after the range is touched');
      assert.equal(await store.readInto(key('ri'), 9000, target, 0, 2000), 1000, 'fewer bytes at the end of the object');
      sameBytes(target.subarray(0, 1000), data.subarray(9000));
      assert.equal(await store.readInto(key('missing'), 0, target, 0, 10), null);
    });

    it('overwriting a key replaces the whole object, a longer one by a shorter one too', async () => {
      await store.put(key('o'), Buffer.alloc(5000, 1));
      await store.put(key('o'), Buffer.alloc(100, 2));
      sameBytes(await store.get(key('o')), Buffer.alloc(100, 2));
      await store.put(key('o'), Buffer.alloc(300, 3));
      sameBytes(await store.get(key('o'), 250, 100), Buffer.alloc(50, 3));
    });

    it('deletes objects; deleting a missing key, or twice, is not an error', async () => {
      await store.put(key('d'), Buffer.from('gone soon'));
      await store.put(key('keep'), Buffer.from('stays'));
      await store.delete(key('d'));
      assert.equal(await store.get(key('d')), null);
      await store.delete(key('d'));
      await store.delete(key('never-written'));
      sameBytes(await store.get(key('keep')), Buffer.from('stays'), 'a delete touches only its own key');
    });

    it('keeps keys in nested "directories" apart', async () => {
      const names = ['7/0-1-aa', '7/0-2-bb', '7/1-1-cc', '8/0-1-dd'];
      await Promise.all(names.map((n) => store.put(key(n), Buffer.from(n))));
      for (const n of names) sameBytes(await store.get(key(n)), Buffer.from(n));
    });

    it('lists exactly the objects under a prefix, with plausible write times', async () => {
      const names = ['7/0-1-aa', '7/0-2-bb', '7/1-1-cc', '8/0-1-dd', '70/0-1-ee'];
      const t0 = Date.now();
      await Promise.all(names.map((n) => store.put(key(n), Buffer.from(n))));
      await store.delete(key('7/0-1-aa'));
      const listed = async (prefix: string) => {
        const out: string[] = [];
        for await (const o of store.list(prefix)) {
          out.push(o.key);
          if (o.modifiedMs !== undefined) assert.ok(Math.abs(o.modifiedMs - t0) < 120_000, `modifiedMs of ${o.key}`);
        }
        return out.sort();
      };
      assert.deepEqual(await listed(key('7/')), [key('7/0-2-bb'), key('7/1-1-cc')]);
      assert.deepEqual(await listed(`${base}/`), [key('70/0-1-ee'), key('7/0-2-bb'), key('7/1-1-cc'), key('8/0-1-dd')].sort());
      assert.deepEqual(await listed(key('9/')), []);
    });

    it('lists many objects each once while the caller deletes what it was given (garbage collection), and stops when asked', async () => {
      // More than a directory read (256 entries) or an S3 page holds at once... for the local engines.
      const n = engine.kind === 's3' ? 300 : 1200;
      const names = Array.from({ length: n }, (_, i) => key(`${i % 7}${i}/0-1-x`));
      for (let i = 0; i < n; i += 100) await Promise.all(names.slice(i, i + 100).map((k) => store.put(k, Buffer.from('x'))));
      const seen: string[] = [];
      for await (const o of store.list(`${base}/`)) {
        seen.push(o.key);
        if (seen.length % 2 === 0) await store.delete(o.key);
      }
      assert.equal(seen.length, n, 'every object once');
      assert.deepEqual([...new Set(seen)].sort(), [...names].sort());
      // A caller that stops early (a server shutting down during a collection) leaves nothing open.
      const fds = (): number => readdirSync('/proc/self/fd').length;
      const before = fds();
      for (let round = 0; round < 20; round++) {
        let taken = 0;
        for await (const o of store.list(`${base}/`)) {
          assert.ok(o.key.startsWith(`${base}/`));
          if (++taken === 3) break;
        }
      }
      if (engine.kind.startsWith('filesystem')) assert.ok(fds() <= before + 2, `descriptors: ${before} before, ${fds()} after`);
      let left = 0;
      for await (const _ of store.list(`${base}/`)) left++;
      assert.equal(left, n / 2, 'half of them deleted, the rest listed');
    });

    it('stores an empty object (present, zero bytes, not null)', async () => {
      await store.put(key('empty'), Buffer.alloc(0));
      sameBytes(await store.get(key('empty')), Buffer.alloc(0));
      // Not a ranged read here: s3rver answers a ranged GET of an empty object with a body shorter
      // than its Content-Length (a bug of s3rver 3.7.1; AWS answers 416 or 200, both handled).
    });

    it('keeps what was written even when the caller reuses its buffer afterwards', async () => {
      const data = Buffer.alloc(4096, 7);
      await store.put(key('reuse'), data);
      data.fill(9);
      sameBytes(await store.get(key('reuse')), Buffer.alloc(4096, 7));
    });

    it('round-trips a large (8 MiB) object, whole and in ranges', async () => {
      const data = randomBytes(8 * MiB);
      await store.put(key('big'), data);
      sameBytes(await store.get(key('big')), data);
      sameBytes(await store.get(key('big'), 4 * MiB - 10, MiB), data.subarray(4 * MiB - 10, 5 * MiB - 10));
    });

    it('takes many parallel puts and reads each one back', async () => {
      const objects = Array.from({ length: 64 }, (_, i) => ({ k: key(`p/${i}-1-x`), data: randomBytes(64 * 1024 + i) }));
      await Promise.all(objects.map((o) => store.put(o.k, o.data)));
      const back = await Promise.all(objects.map((o) => store.get(o.k)));
      objects.forEach((o, i) => sameBytes(back[i] ?? null, o.data, `object ${i}`));
    });

    it('reports a sane capacity', async () => {
      const c = await store.capacity();
      assert.ok(Number.isSafeInteger(c.totalBytes) && c.totalBytes > 0, `total ${c.totalBytes}`);
      assert.ok(Number.isSafeInteger(c.freeBytes) && c.freeBytes >= 0 && c.freeBytes <= c.totalBytes, `free ${c.freeBytes}`);
    });
  });
}

describe('FilesystemBlockStore: directories that cannot hold files', () => {
  it('refuses a directory under /proc, /sys or /dev at open, naming it, instead of hanging', async () => {
    for (const dir of ['/proc/dittofs-blocks', '/sys/kernel/dittofs', '/dev/dittofs']) {
      await assert.rejects(new FilesystemBlockStore(dir).open(), (e: Error) => {
        assert.match(e.message, new RegExp(`^block store directory ${dir} is under /(proc|sys|dev), which cannot hold files`));
        return true;
      });
    }
  });
});

describe('FilesystemBlockStore: a directory of its own', () => {
  let tmp = '';
  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'dittofs-fs-own-'));
  });
  after(async () => {
    if (tmp !== '') await rm(tmp, { recursive: true, force: true });
  });
  let n = 0;
  const fresh = async (): Promise<string> => {
    const d = path.join(tmp, `d${n++}`);
    await mkdir(d, { recursive: true });
    return d;
  };
  /** Every file under `dir`, relative, sorted. */
  const files = async (dir: string): Promise<string[]> =>
    (await readdir(dir, { recursive: true, withFileTypes: true }))
      .filter((e) => e.isFile())
      .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
      .sort();
  const marker = (dir: string) => JSON.parse(readFileSync(path.join(dir, MARKER), 'utf8')) as { kind: string; format: number };

  it('refuses system directories, the data directory and its parents, also through a symlink', async () => {
    for (const dir of SYSTEM_DIRS) {
      await assert.rejects(new FilesystemBlockStore(dir).open(), (e: Error) => {
        assert.match(e.message, new RegExp(`^block store directory ${dir} is a system directory`));
        return true;
      });
    }
    const data = path.join(tmp, 'srv', 'dittofs', 'data');
    for (const dir of [data, path.dirname(data), path.join(tmp, 'srv')]) {
      await assert.rejects(new FilesystemBlockStore(dir, { dataDir: data }).open(), /(is|holds) the data directory/);
    }
    const link = path.join(tmp, 'looks-harmless');
    await symlink('/etc', link);
    await assert.rejects(new FilesystemBlockStore(link).open(), /looks-harmless resolves to \/etc is a system directory/);
    assert.equal(existsSync(path.join('/etc', MARKER)), false, 'nothing written to /etc');
    // Below the data directory is where the default stores live.
    const below = new FilesystemBlockStore(path.join(data, 'blocks', 'default'), { dataDir: data });
    await below.open();
    await below.close();
  });

  it('claims an empty directory with its marker, and opens it again', async () => {
    const dir = await fresh();
    await mkdir(path.join(dir, 'lost+found'));
    const s = new FilesystemBlockStore(dir);
    await s.open();
    // Flat, under a marker that a DittoFS from before the flat layout refuses (it knows only
    // 'dittofs filesystem block store', the nested layout's).
    assert.deepEqual(
      { kind: marker(dir).kind, format: marker(dir).format },
      { kind: 'dittofs filesystem block store, flat layout', format: 2 },
    );
    await s.put('0000abcd/7/0-1-00000000', Buffer.from('data'));
    assert.deepEqual(await files(dir), [MARKER, '0000abcd/7@0-1-00000000'].sort(), 'the object in its share directory');
    await s.close();
    const again = new FilesystemBlockStore(dir);
    await again.open();
    assert.deepEqual(await again.get('0000abcd/7/0-1-00000000'), Buffer.from('data'));
    const keys: string[] = [];
    for await (const o of again.list('')) keys.push(o.key);
    assert.deepEqual(keys, ['0000abcd/7/0-1-00000000'], 'the marker, .tmp and lost+found are not objects');
    for (const key of [MARKER, '.tmp/0123456789abcdef', 'lost+found/x'])
      await assert.rejects(again.put(key, Buffer.from('x')), /invalid block key/, key);
  });

  it('refuses a directory that holds other files, and deletes nothing in it', async () => {
    const dir = await fresh();
    await writeFile(path.join(dir, 'passwd'), 'root:x:0:0\n');
    await mkdir(path.join(dir, '.tmp'));
    await writeFile(path.join(dir, '.tmp', '0123456789abcdef'), 'not ours');
    await writeFile(path.join(dir, '.tmp', 'notes.txt'), 'keep');
    const before = await files(dir);
    await assert.rejects(
      new FilesystemBlockStore(dir).open(),
      new RegExp(`^Error: block store directory ${dir} is not empty \\("passwd"\\) and has no ${MARKER} file`),
    );
    assert.deepEqual(await files(dir), before, 'nothing deleted or added');
    // A marker that is not ours does not make it ours.
    await writeFile(path.join(dir, MARKER), 'hello');
    await assert.rejects(new FilesystemBlockStore(dir).open(), /is not a DittoFS block store marker/);
    assert.equal(readFileSync(path.join(dir, '.tmp', '0123456789abcdef'), 'utf8'), 'not ours');
  });

  it('refuses a store of a layout a newer DittoFS made, and says to run that version, not to pick another directory', async () => {
    const dir = await fresh();
    const kind = 'dittofs filesystem block store, some later layout';
    await writeFile(path.join(dir, MARKER), `${JSON.stringify({ kind, format: 9, created: '2027-01-01T00:00:00.000Z' })}\n`);
    await writeFile(path.join(dir, 'object'), 'kept');
    await assert.rejects(new FilesystemBlockStore(dir).open(), (e: Error) => {
      assert.match(e.message, /was made by a newer DittoFS .*some later layout.*run that version or a later one/);
      assert.doesNotMatch(e.message, /choose an empty directory/);
      return true;
    });
    assert.deepEqual(await files(dir), [MARKER, 'object'].sort(), 'nothing deleted or added');
  });

  it('adopts a store made before the marker when it holds only that layout; removes only its own temporary files', async () => {
    const dir = await fresh();
    await mkdir(path.join(dir, '.tmp'));
    await mkdir(path.join(dir, '89abcdef', '12'), { recursive: true });
    await writeFile(path.join(dir, '89abcdef', '12', '0-3-deadbeef'), 'block');
    await writeFile(path.join(dir, '.tmp', 'fedcba9876543210'), 'a write cut short');
    await writeFile(path.join(dir, '.tmp', 'README'), 'someone else put this here');
    await mkdir(path.join(dir, '.tmp', '0123456789abcdef'));
    const s = new FilesystemBlockStore(dir);
    await s.open();
    assert.equal(marker(dir).format, 1, 'adopted as it is laid out: nested');
    assert.deepEqual(await s.get('89abcdef/12/0-3-deadbeef'), Buffer.from('block'));
    assert.deepEqual(await files(dir), [MARKER, '.tmp/README', '89abcdef/12/0-3-deadbeef'].sort());
    assert.ok(existsSync(path.join(dir, '.tmp', '0123456789abcdef')), 'a directory with a temporary name is not ours to delete');
    await s.close();

    // The same layout with one stranger in it is not adopted.
    const other = await fresh();
    await mkdir(path.join(other, '.tmp'));
    await mkdir(path.join(other, '89abcdef'));
    await writeFile(path.join(other, 'id_rsa'), 'secret');
    await assert.rejects(new FilesystemBlockStore(other).open(), /not empty \("id_rsa"\)/);
    assert.equal(existsSync(path.join(other, MARKER)), false);
  });

  it('never follows a .tmp symlink out of the store', async () => {
    const dir = await fresh();
    const outside = await fresh();
    await writeFile(path.join(outside, '0123456789abcdef'), 'outside');
    const s = new FilesystemBlockStore(dir);
    await s.open();
    await s.close();
    await rm(path.join(dir, '.tmp'), { recursive: true });
    await symlink(outside, path.join(dir, '.tmp'));
    await assert.rejects(new FilesystemBlockStore(dir).open(), /\.tmp is not a directory/);
    assert.equal(readFileSync(path.join(outside, '0123456789abcdef'), 'utf8'), 'outside');
  });
});

describe('FilesystemBlockStore: whole blocks bypass the page cache', () => {
  const tmp = dirPerTest('dittofs-fs-direct-');

  /** Whether the volume under `dir` takes O_DIRECT opens (tmpfs does not). */
  it('writes pool blocks with O_DIRECT and anything else through the page cache; every object reads back', async (t) => {
    const store = new FilesystemBlockStore(path.join(tmp(), 'blocks'));
    await store.open();
    const pool = new BufferPool(64 * 1024, 2, true);
    const whole = pool.take(64 * 1024);
    randomBytes(whole.length).copy(whole);
    // Same length, but 1 byte into its memory: O_DIRECT refuses the address.
    const unaligned = Buffer.alloc(64 * 1024 + 1).subarray(1);
    randomBytes(unaligned.length).copy(unaligned);
    // A file's last, partial block: a length O_DIRECT refuses.
    const partial = pool.take(1000);
    randomBytes(partial.length).copy(partial);
    await store.put('00000001/7/0-1-aa', whole);
    await store.put('00000001/7/1-1-bb', unaligned);
    await store.put('00000001/7/2-1-cc', partial);
    assert.deepEqual(await store.get('00000001/7/0-1-aa'), whole);
    assert.deepEqual(await store.get('00000001/7/1-1-bb'), unaligned);
    assert.deepEqual(await store.get('00000001/7/2-1-cc'), partial);
    assert.deepEqual(await readdir(path.join(tmp(), 'blocks', '.tmp')), [], 'no temporary file left behind');
    if (!(await volumeTakesDirect(tmp()))) {
      t.skip(`${os.tmpdir()} does not take O_DIRECT: only the buffered path ran`);
      return;
    }
    assert.equal(store.directPuts, 1, 'the pool block went straight to the device');
    assert.equal(store.bufferedPuts, 2);
    // Turned off: every object through the page cache.
    const off = new FilesystemBlockStore(path.join(tmp(), 'blocks'), { directIo: false });
    await off.open();
    await off.put('00000001/7/3-1-dd', whole);
    assert.equal(off.directPuts, 0);
    assert.deepEqual(await off.get('00000001/7/3-1-dd'), whole);
  });

  it('reads objects written with O_DIRECT back through the page cache: ranges, ends, deletes', async (t) => {
    const store = new FilesystemBlockStore(path.join(tmp(), 'blocks'));
    await store.open();
    if (!(await volumeTakesDirect(tmp()))) return t.skip(`${os.tmpdir()} does not take O_DIRECT`);
    const pool = new BufferPool(256 * 1024, 4, true);
    const blocks: Buffer[] = [];
    for (let i = 0; i < 3; i++) {
      const b = pool.take(256 * 1024);
      randomBytes(b.length).copy(b);
      blocks.push(Buffer.from(b));
      await store.put(`00000001/9/${i}-1-aa`, b);
    }
    // The last block of a file: its length is not a multiple of the device's blocks.
    const tail = pool.take(5000);
    randomBytes(tail.length).copy(tail);
    await store.put('00000001/9/3-1-aa', tail);
    assert.equal(store.directPuts, 3);
    const target = Buffer.alloc(300 * 1024);
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 3; i++) {
        assert.equal(await store.readInto(`00000001/9/${i}-1-aa`, 0, target, 0, 256 * 1024), 256 * 1024);
        assert.deepEqual(target.subarray(0, 256 * 1024), blocks[i], `object ${i}, round ${round}`);
      }
    }
    assert.equal(await store.readInto('00000001/9/0-1-aa', 4096, target, 10, 4096), 4096);
    assert.deepEqual(target.subarray(10, 4106), blocks[0]!.subarray(4096, 8192));
    assert.equal(await store.readInto('00000001/9/0-1-aa', 200_000, target, 0, 100_000), 256 * 1024 - 200_000, 'fewer at the end');
    assert.deepEqual(target.subarray(0, 256 * 1024 - 200_000), blocks[0]!.subarray(200_000));
    assert.equal(await store.readInto('00000001/9/3-1-aa', 4990, target, 0, 100), 10, 'fewer at the end of the tail');
    assert.deepEqual(target.subarray(0, 10), tail.subarray(4990));
    await store.delete('00000001/9/2-1-aa');
    assert.equal(await store.readInto('00000001/9/2-1-aa', 0, target, 0, 10), null, 'deleted');
    assert.equal(await store.readInto('00000001/9/99-1-aa', 0, target, 0, 10), null, 'never written');
  });
});

describe('FilesystemBlockStore: the flat layout of a new store', () => {
  const tmp = dirPerTest('dittofs-fs-flat-');

  it("puts every object of a share in the share's directory: no directory per file, at most one directory sync per put", async () => {
    const root = path.join(tmp(), 'blocks');
    const store = new FilesystemBlockStore(root);
    await store.open();
    await store.put('0000000a/1/0-1-aa', Buffer.from('first'));
    // 40 new files at once: in a store made before, each made its directory and synced it and the
    // share directory (41 to 80 syncs, see the suite above); here only the share directory is
    // synced, once per put at most (puts that overlap share a sync).
    const n = 40;
    const objs = Array.from({ length: n }, (_, i) => [`0000000a/${100 + i}/0-1-${i}`, randomBytes(512 + i)] as const);
    const before = store.dirFsyncs;
    await Promise.all(objs.map(([k, b]) => store.put(k, b)));
    const used = store.dirFsyncs - before;
    assert.ok(used >= 1 && used <= n, `${n} objects of new files: ${used} directory syncs`);
    for (const [k, b] of objs) sameBytes(await store.get(k), b, k);
    const entries = await readdir(path.join(root, '0000000a'), { withFileTypes: true });
    assert.deepEqual(
      entries.filter((e) => !e.isFile()).map((e) => e.name),
      [],
      'nothing but object files in the share directory',
    );
    assert.equal(entries.length, n + 1);
    assert.ok(existsSync(path.join(root, '0000000a', '100@0-1-0')));
    // Deleting a file's last object leaves the share directory, and the next put needs no mkdir.
    await store.delete('0000000a/1/0-1-aa');
    assert.ok(existsSync(path.join(root, '0000000a')));
    await store.put('0000000a/1/1-1-bb', Buffer.from('again'));
    sameBytes(await store.get('0000000a/1/1-1-bb'), Buffer.from('again'));
    assert.equal(await store.get('0000000a/1/0-1-aa'), null);
  });

  it("lists a file's objects apart from those of a file whose number starts the same, and ignores what is not an object", async () => {
    const root = path.join(tmp(), 'blocks');
    const store = new FilesystemBlockStore(root);
    await store.open();
    for (const k of ['0000000b/5/0-1-a', '0000000b/5/1-1-b', '0000000b/50/0-1-c', '0000000c/5/0-1-d']) await store.put(k, Buffer.from(k));
    // A directory inside a share directory is nobody's object (a flat store makes none).
    await mkdir(path.join(root, '0000000b', 'stray'));
    await writeFile(path.join(root, '0000000b', 'stray', 'x'), 'x');
    const listed = async (prefix: string) => {
      const out: string[] = [];
      for await (const o of store.list(prefix)) out.push(o.key);
      return out.sort();
    };
    assert.deepEqual(await listed('0000000b/5/'), ['0000000b/5/0-1-a', '0000000b/5/1-1-b']);
    assert.deepEqual(await listed('0000000b/'), ['0000000b/5/0-1-a', '0000000b/5/1-1-b', '0000000b/50/0-1-c']);
    assert.deepEqual(await listed(''), ['0000000b/5/0-1-a', '0000000b/5/1-1-b', '0000000b/50/0-1-c', '0000000c/5/0-1-d']);
  });

  it('opens a store made before the flat layout as it is: new objects go to a directory per file there', async () => {
    const root = await nestedStoreDir(path.join(tmp(), 'old'));
    await mkdir(path.join(root, '0000000d', '3'), { recursive: true });
    await writeFile(path.join(root, '0000000d', '3', '0-1-old'), 'old');
    const store = new FilesystemBlockStore(root);
    await store.open();
    sameBytes(await store.get('0000000d/3/0-1-old'), Buffer.from('old'));
    await store.put('0000000d/4/0-1-new', Buffer.from('new'));
    assert.ok(existsSync(path.join(root, '0000000d', '4', '0-1-new')), 'nested, as the store was made');
    const keys: string[] = [];
    for await (const o of store.list('0000000d/')) keys.push(o.key);
    assert.deepEqual(keys.sort(), ['0000000d/3/0-1-old', '0000000d/4/0-1-new']);
    assert.equal(
      (JSON.parse(readFileSync(path.join(root, MARKER), 'utf8')) as { format: number }).format,
      1,
      'the marker is left as it was',
    );
  });
});

describe('FilesystemBlockStore: the directories of files (a store made before the flat layout)', () => {
  const tmp = dirPerTest('dittofs-fs-dirsync-');

  it('syncs only the directories that gained an entry, sharing syncs of a common parent: every object reads back', async () => {
    const store = new FilesystemBlockStore(await nestedStoreDir(path.join(tmp(), 'blocks')));
    await store.open();
    // The share's directory is new: the root gains it, the share directory gains the file's, and
    // the file's directory gains the object.
    await store.put('0000000a/1/0-1-aa', Buffer.from('first'));
    const first = store.dirFsyncs;
    assert.ok(first >= 3 && first <= 4, `first object (share directory new): ${first} directory syncs (the open's marker sync included)`);
    // 40 files at once, each in a directory of its own under the existing share directory: at most
    // two syncs each (the share directory's, shared when they overlap, and the file's own), where
    // syncing every directory up to the root took three.
    const n = 40;
    const objs = Array.from({ length: n }, (_, i) => [`0000000a/${100 + i}/0-1-${i}`, randomBytes(512 + i)] as const);
    const before = store.dirFsyncs;
    await Promise.all(objs.map(([k, b]) => store.put(k, b)));
    const used = store.dirFsyncs - before;
    assert.ok(used >= n + 1 && used <= 2 * n, `${n} objects in new directories: ${used} directory syncs`);
    for (const [k, b] of objs) sameBytes(await store.get(k), b, k);
    // More objects of a file whose directory exists: one sync each at most, none of the parents'.
    const again = store.dirFsyncs;
    await Promise.all([1, 2, 3].map((v) => store.put(`0000000a/100/${v}-1-b`, Buffer.from(`v${v}`))));
    assert.ok(store.dirFsyncs - again <= 3, `3 objects in a known directory: ${store.dirFsyncs - again} syncs`);
    sameBytes(await store.get('0000000a/100/2-1-b'), Buffer.from('v2'));
    // Deleting one of a file's objects leaves its directory known: the next put syncs only it.
    await store.delete('0000000a/100/1-1-b');
    const afterDelete = store.dirFsyncs;
    await store.put('0000000a/100/4-1-b', Buffer.from('v4'));
    assert.equal(store.dirFsyncs - afterDelete, 1, "a put after the delete of another of its file's objects");
  });

  it("removes a file's directory with its last object, and makes it again for the next put", async () => {
    const root = await nestedStoreDir(path.join(tmp(), 'blocks'));
    const store = new FilesystemBlockStore(root);
    await store.open();
    await store.put('0000000c/5/0-1-a', Buffer.from('a'));
    await store.put('0000000c/5/1-1-b', Buffer.from('b'));
    await store.delete('0000000c/5/0-1-a');
    assert.ok(existsSync(path.join(root, '0000000c', '5')), 'the directory stays while it holds an object');
    await store.delete('0000000c/5/1-1-b');
    assert.ok(!existsSync(path.join(root, '0000000c', '5')), 'the directory goes with its last object');
    assert.ok(existsSync(path.join(root, '0000000c')), 'the share directory stays');
    // The directory is gone: the next put makes it again.
    await store.put('0000000c/5/2-1-c', Buffer.from('c'));
    sameBytes(await store.get('0000000c/5/2-1-c'), Buffer.from('c'));
    // A put racing the delete of its directory's last object, many times: every put lands.
    for (let i = 0; i < 20; i++) {
      const next = `0000000c/5/${3 + i}-1-r`;
      const last = i === 0 ? '0000000c/5/2-1-c' : `0000000c/5/${2 + i}-1-r`;
      await Promise.all([store.delete(last), store.put(next, Buffer.from(next))]);
      sameBytes(await store.get(next), Buffer.from(next), next);
      assert.equal(await store.get(last), null);
    }
    assert.deepEqual(await readdir(path.join(root, '.tmp')), [], 'no temporary file left behind');
  });

  it('never fails a put that races the removal of its directory by the delete of its last object (2,000 races)', async () => {
    // Without fsyncs, so the races are many and quick. Each put goes through a store of its own
    // (the same directory), which does not know the file's directory: it makes it while the other
    // store's delete removes it. With mkdir -p, 1 to 6 of 2,000 puts failed.
    const root = await nestedStoreDir(path.join(tmp(), 'blocks'));
    const store = new FilesystemBlockStore(root, { fsync: false });
    await store.open();
    let last = '0000000e/5/0-1-r';
    await store.put(last, Buffer.from(last));
    const failed: string[] = [];
    for (let i = 1; i <= 2000; i++) {
      const next = `0000000e/5/${i}-1-r`;
      const putter = new FilesystemBlockStore(root, { fsync: false });
      await putter.open();
      const [, put] = await Promise.allSettled([store.delete(last), putter.put(next, Buffer.from(next))]);
      if (put.status === 'rejected') failed.push(`${next}: ${String(put.reason)}`);
      else last = next;
    }
    assert.deepEqual(failed.slice(0, 3), [], `${failed.length} of 2,000 puts failed`);
    sameBytes(await store.get(last), Buffer.from(last));
    assert.deepEqual(await readdir(path.join(root, '0000000e', '5')), [path.basename(last)]);
  });

  it('prunes empty file directories it lists (left by an older version or a crash), and nothing else', async () => {
    const root = await nestedStoreDir(path.join(tmp(), 'blocks'));
    const store = new FilesystemBlockStore(root);
    await store.open();
    await store.put('0000000d/1/0-1-x', Buffer.from('x'));
    for (const d of ['7', '8', '9']) await mkdir(path.join(root, '0000000d', d));
    const keys: string[] = [];
    for await (const o of store.list('0000000d/')) keys.push(o.key);
    assert.deepEqual(keys, ['0000000d/1/0-1-x']);
    assert.deepEqual((await readdir(path.join(root, '0000000d'))).sort(), ['1']);
    sameBytes(await store.get('0000000d/1/0-1-x'), Buffer.from('x'));
  });

  it('fails every put waiting on a directory that cannot be made, and makes it on a later put', async () => {
    const root = await nestedStoreDir(path.join(tmp(), 'blocks'));
    const store = new FilesystemBlockStore(root);
    await store.open();
    await store.put('0000000b/1/0-1-x', Buffer.from('x'));
    // A regular file where the next file's directory would go.
    await writeFile(path.join(root, '0000000b', '7'), 'in the way');
    const results = await Promise.allSettled([1, 2, 3, 4].map((i) => store.put(`0000000b/7/${i}-1-y`, Buffer.from(`y${i}`))));
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      if (r.status === 'rejected') assert.match(String((r.reason as NodeJS.ErrnoException).code), /^(EEXIST|ENOTDIR)$/);
    }
    await rm(path.join(root, '0000000b', '7'));
    await store.put('0000000b/7/5-1-y', Buffer.from('y5'));
    sameBytes(await store.get('0000000b/7/5-1-y'), Buffer.from('y5'));
    assert.equal(await store.get('0000000b/7/1-1-y'), null);
  });
});
