// Bytes read back from the WAL (a READ of data not yet uploaded, the upload that copies a block out
// of the log) are checked against the CRC32C their record was logged with: a byte changed on the
// WAL's disk is never served or stored.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { MemoryMetadataStore } from '../meta/memory.js';
import { dirInit, fileInit } from '../testing/inodes.js';
import { DataCorrupt } from '../vfs/errors.js';
import { BlockCache } from './cache.js';
import { MemoryBlockStore } from './memory.js';
import { BlockService } from './service.js';
import { FileWal } from './wal.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const tmp = (): string => {
  const d = mkdtempSync(path.join(os.tmpdir(), 'dittofs-walcrc-'));
  dirs.push(d);
  return d;
};
/** Random bytes: no 64 bytes of them are found twice in a segment. */
const bytes = (n: number): Buffer => randomBytes(n);

const BS = 1 << 20;
const REC = 256 * 1024;

/** A block service over a FileWal whose uploads are counted; one empty file. Uploads only on flush. */
async function setup(putGate?: () => Promise<void>) {
  const meta = new MemoryMetadataStore();
  const store = new MemoryBlockStore();
  let puts = 0;
  const counting = Object.assign(Object.create(store) as MemoryBlockStore, {
    put: async (key: string, data: Buffer) => {
      puts++;
      if (putGate) await putGate();
      return store.put(key, data);
    },
  });
  const walDir = tmp();
  const { wal } = await FileWal.open(walDir, { maxBytes: 64 << 20 });
  wal.tidy();
  const events: string[] = [];
  const logged: { obj: Record<string, unknown>; msg: string }[] = [];
  const log = {
    error: (obj: Record<string, unknown>, msg: string) => logged.push({ obj, msg }),
    warn: () => undefined,
    info: () => undefined,
    debug: () => undefined,
  };
  const svc = new BlockService(counting, meta, {
    shareId: 1,
    keyPrefix: 't',
    blockSize: BS,
    wal,
    cache: new BlockCache(0),
    // A block written whole starts its upload at once: kept from it by a long idle time and
    // blocks never completed in these tests.
    idleFlushMs: 3_600_000,
    onDataCorrupt: (op) => events.push(op),
    log: log as never,
  });
  const root = await meta.ensureRoot(1, dirInit({ mode: 0o777 }));
  const ino = (await meta.create(root.id, Buffer.from('f'), fileInit(), { sec: 1, nsec: 0 })).id;
  return { svc, wal, walDir, ino, events, logged, puts: () => puts };
}

/** Flips one byte of the WAL segment file: the `at`th byte of the first place `data` was logged. */
function corrupt(walDir: string, data: Buffer, at: number): void {
  const [segFile] = readdirSync(walDir).filter((f) => f.endsWith('.log'));
  assert.ok(segFile !== undefined, 'a WAL segment');
  const p = path.join(walDir, segFile);
  const seg = readFileSync(p);
  const where = seg.indexOf(data.subarray(0, 64));
  assert.ok(where > 0, 'the record is in the segment');
  seg[where + at] = seg[where + at]! ^ 0x01;
  writeFileSync(p, seg);
}

describe('WAL data read back is checked against its CRC32C', () => {
  it('a READ touching a record whose bytes changed on disk fails (nothing of it returned); other records read', async () => {
    const { svc, wal, walDir, ino, events, logged } = await setup();
    // Three records of 256 KiB in block 0 (not complete: no upload starts).
    const data = bytes(3 * REC);
    for (let i = 0; i < 3; i++) await svc.write(ino, i * REC, data.subarray(i * REC, (i + 1) * REC));
    const size = data.length;
    assert.deepEqual(await svc.read(ino, 0, size, size), data, 'all three read before the change');
    corrupt(walDir, data.subarray(REC), 100_000); // in the second record's second 64 KiB chunk
    // Reads of the second record, whole, in part (the changed byte in the range or not: a record
    // read whole once, the first time), and across it.
    const target = Buffer.alloc(size, 0xee);
    for (const [off, len] of [
      [REC, REC],
      [REC + 99_000, 4096],
      [0, size],
    ] as const) {
      await assert.rejects(svc.read(ino, off, len, size, target), (e: unknown) => {
        assert.ok(e instanceof DataCorrupt, String(e));
        assert.equal(e.errno, 'IO');
        assert.match(e.message, /does not match its CRC32C/);
        return true;
      });
    }
    // The first and third records read, whole and in part.
    assert.deepEqual(await svc.read(ino, 0, REC, size), data.subarray(0, REC));
    assert.deepEqual(await svc.read(ino, 2 * REC + 70_000, 5000, size), data.subarray(2 * REC + 70_000, 2 * REC + 75_000));
    assert.deepEqual(events, ['read', 'read', 'read']);
    // One log line per record (a minute apart), with the share, file, offset and segment.
    assert.equal(logged.length, 1);
    assert.match(logged[0]!.msg, /READ refused: WAL data failed its CRC/);
    assert.equal(logged[0]!.obj.inode, ino);
    assert.equal(logged[0]!.obj.offset, REC);
    assert.equal(logged[0]!.obj.shareId, 1);
    assert.match(String(logged[0]!.obj.segment), /wal-\d+\.log$/);
    await svc.close().catch(() => undefined);
    await wal.close();
  });

  it('a part of a record read after its chunks are known checks only the chunks it touches', async () => {
    const { svc, wal, walDir, ino } = await setup();
    const data = bytes(REC);
    await svc.write(ino, 0, data);
    // The first partial read reads the record whole and learns its chunks' CRCs.
    assert.deepEqual(await svc.read(ino, 10, 100, REC), data.subarray(10, 110));
    corrupt(walDir, data, 200_000); // the fourth 64 KiB chunk
    // Unaligned, aligned, and across chunks, away from the changed byte: served.
    assert.deepEqual(await svc.read(ino, 1000, 70_000, REC), data.subarray(1000, 71_000));
    assert.deepEqual(await svc.read(ino, 65_536, 65_536, REC), data.subarray(65_536, 131_072));
    // Touching the changed chunk: refused, though the byte itself is not in the range.
    await assert.rejects(svc.read(ino, 196_608, 10, REC), DataCorrupt);
    await assert.rejects(svc.read(ino, 190_000, 10_000, REC), DataCorrupt);
    await assert.rejects(svc.read(ino, 0, REC, REC), DataCorrupt);
    await svc.close().catch(() => undefined);
    await wal.close();
  });

  it('an upload reading a changed record stops, says why once, keeps the segment, and is not retried in the background', async () => {
    const { svc, wal, walDir, ino, events, logged, puts } = await setup();
    const data = bytes(3 * REC);
    for (let i = 0; i < 3; i++) await svc.write(ino, i * REC, data.subarray(i * REC, (i + 1) * REC));
    corrupt(walDir, data.subarray(2 * REC), 5);
    const segs = readdirSync(walDir).filter((f) => f.endsWith('.log'));
    await assert.rejects(svc.flush(ino), (e: unknown) => e instanceof DataCorrupt && /does not match its CRC32C/.test(e.message));
    assert.equal(puts(), 0, 'nothing stored');
    assert.deepEqual(events, ['upload']);
    const line = logged.find((l) => /block upload stopped/.test(l.msg));
    assert.ok(line, 'the upload says why');
    assert.equal(line.obj.inode, ino);
    assert.equal(line.obj.block, 0);
    assert.equal(line.obj.recordOffset, 2 * REC);
    assert.match(String(line.obj.segment), /wal-\d+\.log$/);
    assert.deepEqual(
      svc.corruptBlocks().map((b) => [b.inode, b.block]),
      [[ino, 0]],
    );
    // Background uploads leave it alone; a flush tries again and fails the same way, logged once.
    (svc as unknown as { flushIdle(ms: number): void }).flushIdle(0);
    await assert.rejects(svc.flush(ino), DataCorrupt);
    assert.equal(puts(), 0);
    assert.equal(logged.filter((l) => /block upload stopped/.test(l.msg)).length, 1);
    assert.equal(logged.filter((l) => /block upload failed/.test(l.msg)).length, 0, 'not the retry-forever line');
    assert.deepEqual(
      readdirSync(walDir).filter((f) => f.endsWith('.log')),
      segs,
      'the segment is kept',
    );
    // The client writes the range again: the bad record's bytes are hidden, the block is stored.
    const again = bytes(REC);
    await svc.write(ino, 2 * REC, again);
    await svc.flush(ino);
    assert.equal(puts(), 1);
    assert.deepEqual(svc.corruptBlocks(), []);
    const want = Buffer.concat([data.subarray(0, 2 * REC), again]);
    assert.deepEqual(await svc.read(ino, 0, want.length, want.length), want);
    await svc.close();
    await wal.close();
  });

  it('bytes of a changed record that a later write hides read while the older version is being uploaded', async () => {
    // The upload of the first version is held in the block store (it read the record before the
    // change); the client writes the record's range again; a READ across both versions must serve
    // the new bytes and the untouched record, as it would without the changed byte.
    let putStarted!: () => void;
    const putting = new Promise<void>((r) => (putStarted = r));
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const { svc, wal, walDir, ino } = await setup(() => {
      putStarted();
      return released;
    });
    const data = bytes(2 * REC);
    await svc.write(ino, 0, data.subarray(0, REC));
    await svc.write(ino, REC, data.subarray(REC));
    const uploading = svc.flush(ino);
    await putting;
    corrupt(walDir, data, 1);
    const over = bytes(REC);
    await svc.write(ino, 0, over);
    const want = Buffer.concat([over, data.subarray(REC)]);
    try {
      assert.deepEqual(await svc.read(ino, 0, want.length, want.length), want);
    } finally {
      release();
      await uploading.catch(() => undefined);
      await svc.close();
      await wal.close();
    }
  });

  it('bytes of a changed record that later writes hide read and upload', async () => {
    const { svc, wal, walDir, ino, puts } = await setup();
    const data = bytes(2 * REC);
    await svc.write(ino, 0, data.subarray(0, REC));
    await svc.write(ino, REC, data.subarray(REC));
    corrupt(walDir, data, 1);
    const over = bytes(REC);
    await svc.write(ino, 0, over);
    const want = Buffer.concat([over, data.subarray(REC)]);
    assert.deepEqual(await svc.read(ino, 0, want.length, want.length), want);
    await svc.flush(ino);
    assert.equal(puts(), 1);
    await svc.close();
    await wal.close();
  });
});
