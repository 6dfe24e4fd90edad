// Loaded into a DittoFS process under test (NODE_OPTIONS="--import tsx --import <this file>"): the
// writes to files whose path contains DITTOFS_TEST_VOLATILE_WAL (the WAL's segments) stay in this
// process until an fdatasync (or a close) of the file, as a disk's volatile cache keeps them until
// it is flushed. A SIGKILL then loses every WAL write no fdatasync covered, as a power cut would;
// a SIGKILL alone loses nothing the kernel was handed, so a missing fsync would go unseen. Reads of
// the process itself see its writes (overlaid), as they see the page cache.
//
// Only what blocks/wal.ts calls is held: fs.writev and fs.writevSync at a position, and read through
// fs.read, fdatasync, ftruncate and close. Must load before the server's modules (wal.ts binds
// promisified copies of these when it loads).
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { promisify } from 'node:util';

const part = process.env.DITTOFS_TEST_VOLATILE_WAL;
if (part) install(part);

function install(part: string): void {
  const real = {
    writev: fs.writev,
    writevSync: fs.writevSync,
    read: fs.read,
    fdatasync: fs.fdatasync,
    ftruncate: fs.ftruncate,
    close: fs.close,
  };
  /** Writes not yet covered by an fdatasync, per descriptor, oldest first. */
  const held = new Map<number, { pos: number; data: Buffer }[]>();

  const volatile = (fd: number): boolean => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`).includes(part);
    } catch {
      return false;
    }
  };
  /** Writes what is held for `fd` to the file (its fdatasync, close or truncate comes next). */
  const settle = (fd: number): void => {
    const writes = held.get(fd);
    if (writes === undefined) return;
    held.delete(fd);
    for (const w of writes) fs.writeSync(fd, w.data, 0, w.data.length, w.pos);
  };
  const hold = (fd: number, buffers: readonly NodeJS.ArrayBufferView[], pos: number): number => {
    const data = Buffer.concat(buffers.map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)));
    let writes = held.get(fd);
    if (writes === undefined) held.set(fd, (writes = []));
    writes.push({ pos, data });
    return data.length;
  };

  type WritevCb = (err: NodeJS.ErrnoException | null, bytesWritten: number, buffers: NodeJS.ArrayBufferView[]) => void;
  function writev(fd: number, buffers: NodeJS.ArrayBufferView[], ...rest: unknown[]): void {
    const cb = rest[rest.length - 1] as WritevCb;
    const pos = rest.length > 1 ? rest[0] : null;
    if (typeof pos !== 'number' || !volatile(fd)) {
      (real.writev as (...a: unknown[]) => void)(fd, buffers, ...rest);
      return;
    }
    const n = hold(fd, buffers, pos);
    process.nextTick(cb, null, n, buffers);
  }
  Object.assign(writev, {
    [promisify.custom]: (fd: number, buffers: NodeJS.ArrayBufferView[], pos?: number) =>
      new Promise((resolve, reject) =>
        writev(fd, buffers, pos, (err: NodeJS.ErrnoException | null, bytesWritten: number, bufs: NodeJS.ArrayBufferView[]) =>
          err ? reject(err) : resolve({ bytesWritten, buffers: bufs }),
        ),
      ),
  });
  const writevSync = (fd: number, buffers: NodeJS.ArrayBufferView[], pos?: number | null): number =>
    typeof pos === 'number' && volatile(fd) ? hold(fd, buffers, pos) : real.writevSync(fd, buffers, pos ?? undefined);

  type ReadCb = (err: NodeJS.ErrnoException | null, bytesRead: number, buffer: NodeJS.ArrayBufferView) => void;
  function read(fd: number, ...args: unknown[]): void {
    // Only the positional form (fd, buffer, offset, length, position, callback), as wal.ts calls it.
    const [buffer, offset, length, position, cb] = args as [NodeJS.ArrayBufferView, number, number, number, ReadCb];
    if (args.length !== 5 || typeof position !== 'number' || !held.has(fd)) {
      (real.read as (...a: unknown[]) => void)(fd, ...args);
      return;
    }
    // As held now: an fdatasync while the read runs may write them to the file after it read there.
    const writes = [...held.get(fd)!];
    real.read(fd, buffer, offset, length, position, (err, bytesRead, buf) => {
      if (err) return cb(err, bytesRead, buf);
      const target = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
      let end = bytesRead;
      // Oldest first: a later write wins where two overlap.
      for (const w of writes) {
        const s = Math.max(w.pos, position);
        const e = Math.min(w.pos + w.data.length, position + length);
        if (e <= s) continue;
        if (s - position > end) target.fill(0, offset + end, offset + (s - position));
        w.data.copy(target, offset + (s - position), s - w.pos, e - w.pos);
        end = Math.max(end, e - position);
      }
      cb(null, end, buf);
    });
  }
  Object.assign(read, {
    [promisify.custom]: (fd: number, buffer: NodeJS.ArrayBufferView, offset: number, length: number, position: number | null) =>
      new Promise((resolve, reject) =>
        read(fd, buffer, offset, length, position, ((err, bytesRead, buf) =>
          err ? reject(err) : resolve({ bytesRead, buffer: buf })) satisfies ReadCb),
      ),
  });

  const fdatasync = (fd: number, cb: fs.NoParamCallback): void => {
    try {
      settle(fd);
    } catch (e) {
      process.nextTick(cb, e);
      return;
    }
    real.fdatasync(fd, cb);
  };
  const ftruncate = (fd: number, ...rest: unknown[]): void => {
    settle(fd);
    (real.ftruncate as (...a: unknown[]) => void)(fd, ...rest);
  };
  // A close hands what is held to the file: the descriptor's number may name another file next.
  // (Kinder than a power cut, which would lose it: a close never makes the test fail falsely.)
  const close = (fd: number, cb?: fs.NoParamCallback): void => {
    try {
      settle(fd);
    } catch {
      // The close reports the descriptor's trouble.
    }
    real.close(fd, cb);
  };

  Object.assign(fs, { writev, writevSync, read, fdatasync, ftruncate, close });
  // Named imports (`import { fdatasync } from 'node:fs'`) see them too.
  syncBuiltinESMExports();
}
