// FSCTLs over the real file service (memory stores): server-side copy with resume keys and the
// limits of MS-SMB2 3.3.5.15.6, SET_SPARSE, QUERY_ALLOCATED_RANGES; and the SRV_COPYCHUNK codecs.
import assert from 'node:assert/strict';
import { describe, it, mock } from 'node:test';
import fc from 'fast-check';
import { memoryServer } from '../testing/memory-server.js';
import { DosAttributes } from '../vfs/types.js';
import { SmbWriter } from './codec.js';
import { Access, FileInfoClass, Fsctl, InfoType, IOCTL_IS_FSCTL } from './constants.js';
import { encodeBasicInfoSet, type TimeField } from './attrs.js';
import { WRITE_TIME_DELAY_MS } from './writetime.js';
import * as files from './files.js';
import {
  COPYCHUNK_LIMITS,
  decodeCopyChunkCopy,
  encodeCopyChunkCopy,
  FsctlCode,
  ioctl,
  type CopyChunkCopy,
  type IoctlHost,
} from './ioctl.js';
import type { IoctlRequest } from './messages.js';
import { encodeFsInfo, fileInfoOf } from './fscc.js';
import type { Open } from './state.js';
import { NtStatus, SmbStatusError } from './status.js';
import { create, createRequest, fileContext } from './testing.js';
import { type CachingContext, OplockLevel } from './oplock.js';
import { storeDacl } from './acl.js';
import { AceType, unixUserSid } from './security.js';

async function setup() {
  const srv = await memoryServer();
  const c = fileContext(srv);
  const opens = new Map<number, Open>();
  const open = async (name: string, access = Access.GENERIC_READ | Access.GENERIC_WRITE): Promise<Open> => {
    const { open: o } = await create(c, createRequest(name, { desiredAccess: access }));
    opens.set(o.id, o);
    return o;
  };
  const host = (target: Open): IoctlHost => ({
    validateNegotiate: () => Buffer.alloc(0),
    findOpen: () => target,
    openById: (id) => opens.get(id),
    fileContext: () => c,
  });
  /** Runs one FSCTL: its status and output buffer (the IOCTL response body's tail). */
  const fsctl = async (
    target: Open,
    ctlCode: number,
    input: Buffer,
    maxOutputResponse = 65536,
  ): Promise<{ status: number; out: Buffer }> => {
    const req: IoctlRequest = { ctlCode, fileId: target.fileId, input, maxOutputResponse, flags: IOCTL_IS_FSCTL };
    const w = new SmbWriter();
    try {
      const r = await ioctl(host(target), req, w);
      const body = w.finish();
      return { status: r.status, out: body.subarray(48, 48 + body.readUInt32LE(36)) };
    } catch (e) {
      if (e instanceof SmbStatusError) return { status: e.status, out: Buffer.alloc(0) };
      throw e;
    }
  };
  const write = (o: Open, data: Buffer, offset = 0) => files.write(c, o, { offset, fileId: o.fileId, flags: 0, data });
  const read = (o: Open, offset: number, length: number) =>
    files.read(c, o, { flags: 0, length, offset, fileId: o.fileId, minimumCount: 0 });
  return { srv, c, open, fsctl, write, read };
}

const pattern = (n: number, seed = 0): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff));

describe('FSCTL server-side copy (SRV_REQUEST_RESUME_KEY + SRV_COPYCHUNK)', () => {
  it('a copy into a file whose batch oplock the target open holds breaks no oplock of its own (its WRITE would not)', async () => {
    const srv = await memoryServer();
    const sent: Buffer[] = [];
    const caching: CachingContext = {
      clientGuid: Buffer.alloc(16, 1),
      leasing: true,
      breakTimeoutMs: 300,
      notify: (_cmd, body) => {
        sent.push(body);
        return true;
      },
    };
    const c = fileContext(srv, { caching });
    const src = (await create(c, createRequest('src'))).open;
    await files.write(c, src, { offset: 0, fileId: src.fileId, flags: 0, data: pattern(100) });
    const { open: dst, body } = await create(c, createRequest('dst', { requestedOplockLevel: OplockLevel.BATCH }));
    assert.equal(body[2], OplockLevel.BATCH);
    const opens = new Map([src, dst].map((o) => [o.id, o]));
    const host: IoctlHost = {
      validateNegotiate: () => Buffer.alloc(0),
      findOpen: () => dst,
      openById: (id) => opens.get(id),
      fileContext: () => c,
    };
    const run = (ctlCode: number, input: Buffer, maxOutputResponse: number) =>
      ioctl(
        { ...host, findOpen: () => (ctlCode === FsctlCode.SRV_REQUEST_RESUME_KEY ? src : dst) },
        { ctlCode, fileId: dst.fileId, input, maxOutputResponse, flags: IOCTL_IS_FSCTL },
        new SmbWriter(),
      );
    const kw = new SmbWriter();
    await ioctl(
      { ...host, findOpen: () => src },
      {
        ctlCode: FsctlCode.SRV_REQUEST_RESUME_KEY,
        fileId: src.fileId,
        input: Buffer.alloc(0),
        maxOutputResponse: 32,
        flags: IOCTL_IS_FSCTL,
      },
      kw,
    );
    const k = kw.finish();
    const sourceKey = Buffer.from(k.subarray(48, 48 + 24));
    const r = await run(
      FsctlCode.SRV_COPYCHUNK,
      encodeCopyChunkCopy({ sourceKey, chunkCount: 1, chunks: [{ sourceOffset: 0, targetOffset: 0, length: 100 }] }),
      12,
    );
    assert.equal(r.status, NtStatus.SUCCESS);
    assert.equal(sent.length, 0, 'no break sent to the open that copies');
    assert.deepEqual(await files.read(c, dst, { flags: 0, length: 100, offset: 0, fileId: dst.fileId, minimumCount: 0 }), pattern(100));
    await srv.close();
  });

  it('a target open the DACL lets write and not append copies within the file only (as its WRITEs)', async () => {
    const { srv, c, open, fsctl, write, read } = await setup();
    const src = await open('src');
    await write(src, pattern(100));
    const f = await open('dst');
    await write(f, Buffer.from('0123456789'));
    await files.close(c, f, 0, new SmbWriter());
    const mine = unixUserSid(c.id.uid);
    await storeDacl(c.share.meta, f.inodeId, {
      control: 0,
      dacl: [{ type: AceType.ACCESS_ALLOWED, flags: 0, mask: 0x00120089 | 0x2 | 0x100, sid: mine }],
    });
    const dst = await open('dst', Access.FILE_READ_DATA | Access.FILE_WRITE_DATA);
    const sourceKey = (await fsctl(src, FsctlCode.SRV_REQUEST_RESUME_KEY, Buffer.alloc(0))).out.subarray(0, 24);
    const copy = (targetOffset: number, length: number) =>
      fsctl(
        dst,
        FsctlCode.SRV_COPYCHUNK,
        encodeCopyChunkCopy({ sourceKey, chunkCount: 1, chunks: [{ sourceOffset: 0, targetOffset, length }] }),
        12,
      );
    assert.equal((await copy(2, 8)).status, NtStatus.SUCCESS, 'within the file');
    assert.equal((await copy(5, 8)).status, NtStatus.ACCESS_DENIED, 'across its end');
    assert.equal((await copy(10, 1)).status, NtStatus.ACCESS_DENIED, 'at its end');
    assert.equal((await srv.fs.getattr(dst.handle, c.id)).inode.size, 10);
    assert.deepEqual(await read(dst, 0, 64), Buffer.concat([Buffer.from('01'), pattern(8)]));
    await srv.close();
  });

  // MS-SMB2 3.3.5.15.6 writes the chunks through the target open: what its WRITE would do to the
  // write time, a copy does (Explorer and robocopy copy with SRV_COPYCHUNK).
  it('a copy keeps the write time its target open set, and delays the one it shows as a WRITE does', async () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    try {
      const { srv, c, open, fsctl, write } = await setup();
      const src = await open('src');
      await write(src, pattern(100));
      const sourceKey = (await fsctl(src, FsctlCode.SRV_REQUEST_RESUME_KEY, Buffer.alloc(0))).out.subarray(0, 24);
      const one = encodeCopyChunkCopy({ sourceKey, chunkCount: 1, chunks: [{ sourceOffset: 0, targetOffset: 0, length: 100 }] });
      const keep: TimeField = { op: 'keep' };
      const held = { sec: 1_100_000_000, nsec: 0 };
      const dst = await open('dst');
      await files.setInfo(c, dst, {
        infoType: InfoType.FILE,
        infoClass: FileInfoClass.FileBasicInformation,
        additionalInformation: 0,
        fileId: dst.fileId,
        buffer: encodeBasicInfoSet({ creation: keep, access: keep, change: keep, write: { op: 'set', time: held }, attributes: 0 }),
      });
      assert.equal((await fsctl(dst, FsctlCode.SRV_COPYCHUNK, one, 12)).status, NtStatus.SUCCESS);
      assert.deepEqual((await srv.fs.resolve(dst.handle)).inode.mtime, held, 'the time the open set holds through its copy');
      // Another target, no time set: the copy moves the stored mtime (NFS sees it) and SMB shows
      // the old write time until the delayed update.
      const other = await open('other');
      const old = { sec: 1_000_000, nsec: 0 };
      await srv.fs.setattr(other.handle, c.id, { mtime: old });
      assert.equal((await fsctl(other, FsctlCode.SRV_COPYCHUNK, one, 12)).status, NtStatus.SUCCESS);
      const i = (await srv.fs.resolve(other.handle)).inode;
      assert.notDeepEqual(i.mtime, old, 'stored at once');
      assert.deepEqual(fileInfoOf(i).lastWriteTime, old, 'shown over SMB after the delay');
      mock.timers.tick(WRITE_TIME_DELAY_MS);
      const j = (await srv.fs.resolve(other.handle)).inode;
      assert.deepEqual(fileInfoOf(j).lastWriteTime, j.mtime);
      await srv.close();
    } finally {
      mock.timers.reset();
    }
  });

  it('copies chunks between files and within one, and answers the limits when asked too much', async () => {
    const { srv, open, fsctl, write, read } = await setup();
    const src = await open('src');
    const data = pattern(10000);
    await write(src, data);
    const key = await fsctl(src, FsctlCode.SRV_REQUEST_RESUME_KEY, Buffer.alloc(0), 32);
    assert.equal(key.status, NtStatus.SUCCESS);
    assert.equal(key.out.length, 32);
    const sourceKey = key.out.subarray(0, 24);
    const dst = await open('dst');
    const copy = (
      x: Omit<CopyChunkCopy, 'sourceKey' | 'chunkCount'>,
      target = dst,
      code: number = FsctlCode.SRV_COPYCHUNK,
      k = sourceKey,
    ) => fsctl(target, code, encodeCopyChunkCopy({ sourceKey: k, chunkCount: x.chunks.length, chunks: x.chunks }), 12);
    let r = await copy({
      chunks: [
        { sourceOffset: 0, targetOffset: 0, length: 4096 },
        { sourceOffset: 4096, targetOffset: 4096, length: 5904 },
        { sourceOffset: 0, targetOffset: 20000, length: 100 },
      ],
    });
    assert.equal(r.status, NtStatus.SUCCESS);
    assert.deepEqual([r.out.readUInt32LE(0), r.out.readUInt32LE(4), r.out.readUInt32LE(8)], [3, 0, 10100]);
    assert.deepEqual(await read(dst, 0, 10000), data);
    assert.deepEqual(await read(dst, 10000, 10000), Buffer.alloc(10000), 'the gap reads as zeros');
    assert.deepEqual(await read(dst, 20000, 100), data.subarray(0, 100));
    // Within one file, overlapping: the chunk is read whole before it is written.
    r = await copy({ chunks: [{ sourceOffset: 0, targetOffset: 2040, length: 2048 }] }, src);
    assert.equal(r.status, NtStatus.SUCCESS);
    assert.deepEqual(await read(src, 2040, 2048), data.subarray(0, 2048));
    // Past the source's end: INVALID_VIEW_SIZE, with what was done before.
    r = await copy({
      chunks: [
        { sourceOffset: 0, targetOffset: 0, length: 10 },
        { sourceOffset: 9000, targetOffset: 0, length: 4096 },
      ],
    });
    assert.equal(r.status, NtStatus.INVALID_VIEW_SIZE);
    assert.deepEqual([r.out.readUInt32LE(0), r.out.readUInt32LE(8)], [1, 10]);
    // Past the limits (chunk count, chunk size, total, a zero-length chunk): INVALID_PARAMETER with the limits.
    const limits = [COPYCHUNK_LIMITS.maxChunks, COPYCHUNK_LIMITS.maxChunkSize, COPYCHUNK_LIMITS.maxTotal];
    for (const chunks of [
      [{ sourceOffset: 0, targetOffset: 0, length: 0xffffffff }],
      [{ sourceOffset: 0, targetOffset: 0, length: 0 }],
      Array.from({ length: 17 }, () => ({ sourceOffset: 0, targetOffset: 0, length: COPYCHUNK_LIMITS.maxChunkSize })),
      Array.from({ length: COPYCHUNK_LIMITS.maxChunks + 1 }, () => ({ sourceOffset: 0, targetOffset: 0, length: 1 })),
    ]) {
      r = await copy({ chunks });
      assert.equal(r.status, NtStatus.INVALID_PARAMETER);
      assert.deepEqual([r.out.readUInt32LE(0), r.out.readUInt32LE(4), r.out.readUInt32LE(8)], limits);
    }
    // An input shorter than its ChunkCount says: the limits too.
    const short = encodeCopyChunkCopy({ sourceKey, chunkCount: 2, chunks: [{ sourceOffset: 0, targetOffset: 0, length: 10 }] });
    r = await fsctl(dst, FsctlCode.SRV_COPYCHUNK, short, 12);
    assert.deepEqual([r.status, r.out.readUInt32LE(0)], [NtStatus.INVALID_PARAMETER, COPYCHUNK_LIMITS.maxChunks]);
    const before = await read(dst, 0, 100);
    // A wrong key, a too small output buffer, a target without read access (COPYCHUNK, not _WRITE).
    const bad = Buffer.from(sourceKey);
    bad[20]! ^= 1;
    assert.equal(
      (await copy({ chunks: [{ sourceOffset: 0, targetOffset: 0, length: 10 }] }, dst, FsctlCode.SRV_COPYCHUNK, bad)).status,
      NtStatus.OBJECT_NAME_NOT_FOUND,
    );
    const one = encodeCopyChunkCopy({ sourceKey, chunkCount: 1, chunks: [{ sourceOffset: 0, targetOffset: 0, length: 10 }] });
    assert.equal((await fsctl(dst, FsctlCode.SRV_COPYCHUNK, one, 11)).status, NtStatus.INVALID_PARAMETER);
    const writeOnly = await open('dst', Access.FILE_WRITE_DATA);
    assert.equal((await fsctl(writeOnly, FsctlCode.SRV_COPYCHUNK, one, 12)).status, NtStatus.ACCESS_DENIED);
    assert.equal((await fsctl(writeOnly, FsctlCode.SRV_COPYCHUNK_WRITE, one, 12)).status, NtStatus.SUCCESS);
    const readOnlySrc = await open('src', Access.FILE_WRITE_DATA);
    const k2 = (await fsctl(readOnlySrc, FsctlCode.SRV_REQUEST_RESUME_KEY, Buffer.alloc(0), 32)).out.subarray(0, 24);
    assert.equal(
      (
        await fsctl(
          dst,
          FsctlCode.SRV_COPYCHUNK,
          encodeCopyChunkCopy({ sourceKey: k2, chunkCount: 1, chunks: [{ sourceOffset: 0, targetOffset: 0, length: 10 }] }),
          12,
        )
      ).status,
      NtStatus.ACCESS_DENIED,
    );
    assert.deepEqual(await read(dst, 0, 100), before, 'refused copies changed nothing');
    await srv.close();
  });

  it("another open's byte-range lock on a source or target range refuses the chunk (FILE_LOCK_CONFLICT); an execute-only source copies", async () => {
    const { srv, c, open, fsctl, write, read } = await setup();
    const src = await open('src');
    await write(src, pattern(4096));
    const dst = await open('dst');
    const one = async (from: Open): Promise<{ status: number; out: Buffer }> => {
      const key = (await fsctl(from, FsctlCode.SRV_REQUEST_RESUME_KEY, Buffer.alloc(0), 32)).out.subarray(0, 24);
      const input = encodeCopyChunkCopy({ sourceKey: key, chunkCount: 1, chunks: [{ sourceOffset: 0, targetOffset: 0, length: 4096 }] });
      return fsctl(dst, FsctlCode.SRV_COPYCHUNK, input, 12);
    };
    const locker = await open('src');
    const locks = c.fs.byteRanges;
    assert.equal(locks.tryLock(c.share.meta, src.inodeId, locker, {}, 0n, 4096n, true).kind, 'granted');
    let r = await one(src);
    assert.equal(r.status, NtStatus.FILE_LOCK_CONFLICT);
    assert.deepEqual([r.out.readUInt32LE(0), r.out.readUInt32LE(4), r.out.readUInt32LE(8)], [0, 0, 0]);
    locks.unlock(c.share.meta, src.inodeId, locker, 0n, 4096n);
    const dstLocker = await open('dst');
    assert.equal(locks.tryLock(c.share.meta, dst.inodeId, dstLocker, {}, 100n, 1n, false).kind, 'granted');
    assert.equal((await one(src)).status, NtStatus.FILE_LOCK_CONFLICT, 'a shared lock on the target refuses the write');
    locks.unlock(c.share.meta, dst.inodeId, dstLocker, 100n, 1n);
    r = await one(await open('src', Access.FILE_EXECUTE | Access.FILE_READ_ATTRIBUTES));
    assert.equal(r.status, NtStatus.SUCCESS);
    assert.deepEqual(await read(dst, 0, 4096), pattern(4096));
    await srv.close();
  });

  it('decodes what it encodes; arbitrary bytes decode or fail with INVALID_PARAMETER', () => {
    const chunk = fc.record({
      sourceOffset: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
      targetOffset: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
      length: fc.integer({ min: 0, max: 0xffffffff }),
    });
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 24, maxLength: 24 }), fc.array(chunk, { maxLength: 20 }), (key, chunks) => {
        const x: CopyChunkCopy = { sourceKey: Buffer.from(key), chunkCount: chunks.length, chunks: chunks.map((c) => ({ ...c })) };
        assert.deepEqual(decodeCopyChunkCopy(encodeCopyChunkCopy(x)), x);
      }),
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        try {
          decodeCopyChunkCopy(Buffer.from(bytes));
        } catch (e) {
          assert.ok(e instanceof SmbStatusError && e.status === NtStatus.INVALID_PARAMETER, String(e));
        }
      }),
    );
  });
});

describe('FSCTL SET_SPARSE, QUERY_ALLOCATED_RANGES, snapshots, reparse points', () => {
  it('sets and clears the sparse attribute; reports the written range; no snapshots; no reparse points', async () => {
    const { srv, c, open, fsctl, write } = await setup();
    const f = await open('f');
    await write(f, pattern(5000));
    assert.equal((await fsctl(f, FsctlCode.SET_SPARSE, Buffer.alloc(0))).status, NtStatus.SUCCESS);
    assert.equal((await c.fs.resolve(f.handle)).inode.dosAttrs & DosAttributes.SPARSE_FILE, DosAttributes.SPARSE_FILE);
    assert.equal((await fsctl(f, FsctlCode.SET_SPARSE, Buffer.from([0]))).status, NtStatus.SUCCESS);
    assert.equal((await c.fs.resolve(f.handle)).inode.dosAttrs & DosAttributes.SPARSE_FILE, 0);
    const range = (offset: number, length: number) => {
      const b = Buffer.alloc(16);
      b.writeBigInt64LE(BigInt(offset), 0);
      b.writeBigInt64LE(BigInt(length), 8);
      return b;
    };
    let r = await fsctl(f, FsctlCode.QUERY_ALLOCATED_RANGES, range(1000, 1 << 20));
    assert.equal(r.status, NtStatus.SUCCESS);
    assert.deepEqual([Number(r.out.readBigInt64LE(0)), Number(r.out.readBigInt64LE(8))], [1000, 4000]);
    r = await fsctl(f, FsctlCode.QUERY_ALLOCATED_RANGES, range(6000, 10));
    assert.deepEqual([r.status, r.out.length], [NtStatus.SUCCESS, 0], 'nothing past the end');
    assert.equal((await fsctl(f, FsctlCode.QUERY_ALLOCATED_RANGES, range(-1, 10))).status, NtStatus.INVALID_PARAMETER);
    assert.equal((await fsctl(f, FsctlCode.QUERY_ALLOCATED_RANGES, Buffer.alloc(8))).status, NtStatus.INVALID_PARAMETER);
    r = await fsctl(f, FsctlCode.SRV_ENUMERATE_SNAPSHOTS, Buffer.alloc(0), 16);
    assert.deepEqual([r.status, r.out], [NtStatus.SUCCESS, Buffer.alloc(16)]);
    assert.equal((await fsctl(f, FsctlCode.SRV_ENUMERATE_SNAPSHOTS, Buffer.alloc(0), 15)).status, NtStatus.INVALID_PARAMETER);
    assert.equal((await fsctl(f, FsctlCode.GET_REPARSE_POINT, Buffer.alloc(0))).status, NtStatus.NOT_A_REPARSE_POINT);
    assert.equal((await fsctl(f, 0x00090000, Buffer.alloc(0))).status, NtStatus.NOT_SUPPORTED);
    await srv.close();
  });
});

describe('connection-level FSCTLs', () => {
  it('QUERY_NETWORK_INTERFACE_INFO (FileId all ones, no open) is NOT_SUPPORTED: no multichannel; an unknown FSCTL there is FILE_CLOSED', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const host: IoctlHost = {
      validateNegotiate: () => Buffer.alloc(0),
      findOpen: () => {
        throw new SmbStatusError(NtStatus.FILE_CLOSED);
      },
      openById: () => undefined,
      fileContext: () => c,
    };
    const status = async (ctlCode: number): Promise<number> => {
      const req: IoctlRequest = {
        ctlCode,
        fileId: Buffer.alloc(16, 0xff),
        input: Buffer.alloc(0),
        maxOutputResponse: 65536,
        flags: IOCTL_IS_FSCTL,
      };
      try {
        return (await ioctl(host, req, new SmbWriter())).status;
      } catch (e) {
        if (e instanceof SmbStatusError) return e.status;
        throw e;
      }
    };
    assert.equal(await status(Fsctl.QUERY_NETWORK_INTERFACE_INFO), NtStatus.NOT_SUPPORTED);
    assert.equal(await status(0x00090000), NtStatus.FILE_CLOSED);
    await srv.close();
  });
});

describe('sparse files: QUERY_ALLOCATED_RANGES and SET_ZERO_DATA (MS-FSCC 2.3.51, 2.3.67)', () => {
  /** FILE_ALLOCATED_RANGE_BUFFER, or FILE_ZERO_DATA_INFORMATION (FileOffset, BeyondFinalZero). */
  const range = (offset: number | bigint, length: number | bigint): Buffer => {
    const b = Buffer.alloc(16);
    b.writeBigInt64LE(BigInt(offset), 0);
    b.writeBigInt64LE(BigInt(length), 8);
    return b;
  };
  const ranges = (out: Buffer): number[][] => {
    const r: number[][] = [];
    for (let at = 0; at + 16 <= out.length; at += 16) r.push([Number(out.readBigInt64LE(at)), Number(out.readBigInt64LE(at + 8))]);
    return r;
  };

  it('the volume says it supports sparse files; a sparse file reports its holes, a plain one none', async () => {
    const { srv, open, fsctl, write } = await setup();
    assert.equal(
      encodeFsInfo(5, { totalBytes: 0, freeBytes: 0, serial: 1, label: 'x', created: { sec: 0, nsec: 0 } })!.readUInt32LE(0) & 0x40,
      0x40,
    );
    const f = await open('f');
    await write(f, pattern(1024));
    await write(f, pattern(1024, 3), 16384); // blocks are 4 KiB here: blocks 1-3 are a hole
    let r = await fsctl(f, FsctlCode.QUERY_ALLOCATED_RANGES, range(0, 1 << 20));
    assert.deepEqual([r.status, ranges(r.out)], [NtStatus.SUCCESS, [[0, 17408]]], 'not sparse: allocated throughout');
    assert.equal((await fsctl(f, FsctlCode.SET_SPARSE, Buffer.alloc(0))).status, NtStatus.SUCCESS);
    r = await fsctl(f, FsctlCode.QUERY_ALLOCATED_RANGES, range(0, 1 << 20));
    assert.deepEqual(ranges(r.out), [
      [0, 1024],
      [16384, 1024],
    ]);
    r = await fsctl(f, FsctlCode.QUERY_ALLOCATED_RANGES, range(512, 16384));
    assert.deepEqual(
      ranges(r.out),
      [
        [512, 512],
        [16384, 512],
      ],
      'cut to the range asked',
    );
    r = await fsctl(f, FsctlCode.QUERY_ALLOCATED_RANGES, range(0, 1 << 20), 31);
    assert.deepEqual([r.status, ranges(r.out)], [NtStatus.BUFFER_OVERFLOW, [[0, 1024]]], 'room for one range');
    assert.equal((await fsctl(f, FsctlCode.QUERY_ALLOCATED_RANGES, range(0, 1 << 20), 0)).status, NtStatus.BUFFER_TOO_SMALL);
    r = await fsctl(f, FsctlCode.QUERY_ALLOCATED_RANGES, range(2048, 4096), 0);
    assert.deepEqual([r.status, r.out.length], [NtStatus.SUCCESS, 0], 'a hole needs no room');
    await srv.close();
  });

  it('SET_ZERO_DATA zeroes a range for every reader, frees it up to the end of a sparse file, keeps the size', async () => {
    const { srv, c, open, fsctl, write, read } = await setup();
    const f = await open('f');
    const data = pattern(20000, 5);
    await write(f, data);
    const zero = (from: number, beyond: number) => fsctl(f, FsctlCode.SET_ZERO_DATA, range(from, beyond));
    // Inside the file: zeros there, the rest as it was.
    assert.equal((await zero(100, 5000)).status, NtStatus.SUCCESS);
    const want = Buffer.from(data);
    want.fill(0, 100, 5000);
    assert.deepEqual(await read(f, 0, 20000), want);
    // NFS reads through the same file service: zeros too.
    assert.deepEqual((await c.fs.read(f.handle, { uid: 0, gid: 0, gids: [] }, 0, 20000)).data, want);
    // Past the end, and empty ranges: nothing changes, the size neither.
    assert.equal((await zero(20000, 30000)).status, NtStatus.SUCCESS);
    assert.equal((await zero(300, 300)).status, NtStatus.SUCCESS);
    assert.equal((await c.fs.resolve(f.handle)).inode.size, 20000);
    // Up to the end of a sparse file: the range becomes a hole (before and after the upload).
    assert.equal((await fsctl(f, FsctlCode.SET_SPARSE, Buffer.alloc(0))).status, NtStatus.SUCCESS);
    assert.equal((await zero(9000, 1 << 30)).status, NtStatus.SUCCESS);
    want.fill(0, 9000);
    assert.deepEqual(await read(f, 0, 20000), want);
    assert.equal((await c.fs.resolve(f.handle)).inode.size, 20000, 'the size stays');
    const qar = async () => ranges((await fsctl(f, FsctlCode.QUERY_ALLOCATED_RANGES, range(0, 1 << 20))).out);
    assert.deepEqual(await qar(), [[0, 9000]]);
    await c.share.data.flush(f.inodeId);
    assert.deepEqual(await qar(), [[0, 9000]], 'after the upload');
    assert.deepEqual(await read(f, 0, 20000), want);
    assert.equal((await zero(0, 20000)).status, NtStatus.SUCCESS);
    assert.deepEqual(await qar(), [], 'the whole file is a hole');
    assert.deepEqual(await read(f, 0, 20000), Buffer.alloc(20000));
    await srv.close();
  });

  it('SET_ZERO_DATA refuses bad input, opens without FILE_WRITE_DATA and locked ranges, changing nothing', async () => {
    const { srv, c, open, fsctl, write, read } = await setup();
    const f = await open('f');
    await write(f, pattern(8192));
    const zero = (o: Open, from: number, beyond: number) => fsctl(o, FsctlCode.SET_ZERO_DATA, range(from, beyond));
    assert.equal((await fsctl(f, FsctlCode.SET_ZERO_DATA, Buffer.alloc(8))).status, NtStatus.INVALID_PARAMETER);
    assert.equal((await zero(f, 4096, 4095)).status, NtStatus.INVALID_PARAMETER, 'FileOffset past BeyondFinalZero');
    assert.equal((await zero(f, -1, 10)).status, NtStatus.INVALID_PARAMETER);
    for (const access of [Access.FILE_WRITE_ATTRIBUTES, Access.FILE_APPEND_DATA, Access.GENERIC_READ]) {
      const o = await open('f', access | Access.FILE_READ_ATTRIBUTES);
      assert.equal((await zero(o, 0, 8192)).status, NtStatus.ACCESS_DENIED);
    }
    const locker = await open('f');
    assert.equal(c.fs.byteRanges.tryLock(c.share.meta, f.inodeId, locker, {}, 100n, 10n, false).kind, 'granted');
    assert.equal((await zero(f, 0, 4096)).status, NtStatus.FILE_LOCK_CONFLICT);
    assert.equal((await zero(f, 4096, 8192)).status, NtStatus.SUCCESS, 'outside the lock');
    assert.deepEqual(await read(f, 0, 4096), pattern(8192).subarray(0, 4096), 'nothing zeroed by the refused ones');
    await srv.close();
  });

  it('ranges at the 2^63 - 1 limit: answered at once, the size never changes, nothing past the file is zeroed', async () => {
    const { srv, c, open, fsctl, write, read } = await setup();
    const f = await open('f');
    await write(f, pattern(8192));
    const MAX = 2n ** 63n - 1n;
    const qar = async (offset: bigint, length: bigint) => {
      const r = await fsctl(f, FsctlCode.QUERY_ALLOCATED_RANGES, range(offset, length));
      return [r.status, ranges(r.out)];
    };
    const size = async () => (await c.fs.resolve(f.handle)).inode.size;
    assert.deepEqual(await qar(MAX, MAX), [NtStatus.SUCCESS, []], 'offset + length past 2^64');
    assert.deepEqual(await qar(0n, MAX), [NtStatus.SUCCESS, [[0, 8192]]]);
    assert.deepEqual(await qar(4096n, MAX), [NtStatus.SUCCESS, [[4096, 4096]]]);
    for (const [a, b] of [
      [MAX, MAX],
      [MAX - 1n, MAX],
      [2n ** 53n + 1n, MAX],
      [8192n, MAX],
    ])
      assert.equal((await fsctl(f, FsctlCode.SET_ZERO_DATA, range(a!, b!))).status, NtStatus.SUCCESS);
    assert.equal(await size(), 8192);
    assert.deepEqual(await read(f, 0, 8192), pattern(8192), 'past the end: nothing to zero');
    assert.equal((await fsctl(f, FsctlCode.SET_ZERO_DATA, range(6000n, MAX))).status, NtStatus.SUCCESS);
    assert.equal(await size(), 8192, 'the size stays');
    assert.deepEqual(await read(f, 0, 8192), Buffer.concat([pattern(8192).subarray(0, 6000), Buffer.alloc(2192)]));
    // A sparse file a terabyte long (2^28 blocks of 4 KiB here): its holes cost few block-map reads.
    assert.equal((await fsctl(f, FsctlCode.SET_SPARSE, Buffer.alloc(0))).status, NtStatus.SUCCESS);
    await write(f, Buffer.from('end'), 2 ** 40);
    assert.deepEqual(await qar(0n, MAX), [
      NtStatus.SUCCESS,
      [
        [0, 6000],
        [2 ** 40, 3],
      ],
    ]);
    assert.equal((await fsctl(f, FsctlCode.SET_ZERO_DATA, range(0n, MAX))).status, NtStatus.SUCCESS);
    assert.deepEqual(await qar(0n, MAX), [NtStatus.SUCCESS, []], 'all of it a hole');
    assert.equal(await size(), 2 ** 40 + 3);
    await srv.close();
  });
});

describe('FSCTL CREATE_OR_GET_OBJECT_ID', () => {
  it('gives each file one stable object id, the same on every open, and refuses a buffer below 64 bytes', async () => {
    const { srv, open, fsctl } = await setup();
    const a = await open('a');
    const a2 = await open('a', Access.FILE_READ_ATTRIBUTES);
    const b = await open('b');
    const first = await fsctl(a, FsctlCode.CREATE_OR_GET_OBJECT_ID, Buffer.alloc(0), 64);
    assert.equal(first.status, NtStatus.SUCCESS);
    assert.equal(first.out.length, 64);
    assert.deepEqual(first.out.subarray(32, 48), first.out.subarray(0, 16), 'BirthObjectId is the ObjectId');
    assert.deepEqual(first.out.subarray(48), Buffer.alloc(16), 'no DomainId');
    const again = await fsctl(a2, FsctlCode.CREATE_OR_GET_OBJECT_ID, Buffer.alloc(0), 64);
    assert.deepEqual(again, first, 'another open of the same file, with no data access, gets the same id');
    const other = await fsctl(b, FsctlCode.CREATE_OR_GET_OBJECT_ID, Buffer.alloc(0), 64);
    assert.notDeepEqual(other.out.subarray(0, 16), first.out.subarray(0, 16));
    assert.deepEqual(other.out.subarray(16, 32), first.out.subarray(16, 32), 'one BirthVolumeId per share');
    assert.equal((await fsctl(a, FsctlCode.CREATE_OR_GET_OBJECT_ID, Buffer.alloc(0), 63)).status, NtStatus.INVALID_PARAMETER);
    await srv.close();
  });
});
