// Tests: fdatasync failing with EIO, as on a failing disk, once and for a chosen file. Linux
// reports a failed writeback once per open file and no longer holds the pages it could not write
// as dirty: the next fdatasync succeeds though their data never reached the disk, and so it does
// here. Import this module before the code under test: a module that binds fs.fdatasync when it
// loads (blocks/wal.ts promisifies it) keeps what it found then.
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';

const real = fs.fdatasync;
/** Which file's next fdatasync fails; null: none. */
let failing: ((file: string) => boolean) | null = null;

const fdatasync = (fd: number, callback: fs.NoParamCallback): void => {
  if (failing !== null) {
    let file = '';
    try {
      file = fs.readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      // Not a descriptor of this process: the real call says so.
    }
    if (failing(file)) {
      failing = null;
      const err = Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5, syscall: 'fdatasync' });
      process.nextTick(callback, err);
      return;
    }
  }
  real(fd, callback);
};
Object.assign(fs, { fdatasync });
// Named imports (`import { fdatasync } from 'node:fs'`, as in meta/sql/sqlite.ts) see it too.
syncBuiltinESMExports();

/** The next fdatasync of a file whose path `match` accepts fails with EIO; later ones are real. */
export function failNextFdatasync(match: (file: string) => boolean): void {
  failing = match;
}
