// Tests: fdatasync failing with EIO, as on a failing disk, once and for a chosen file; or held until
// the test releases it (holdFdatasyncs). Linux reports a failed writeback once per open file and no
// longer holds the pages it could not write as dirty: the next fdatasync succeeds though their data
// never reached the disk, and so it does here. Import this module before the code under test: a
// module that binds fs.fdatasync when it loads (blocks/wal.ts promisifies it) keeps what it found
// then.
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';

const real = fs.fdatasync;
/** Which file's next fdatasync fails; null: none. */
let failing: ((file: string) => boolean) | null = null;

/** Which files' fdatasyncs are held (holdFdatasyncs); null: none. */
let holding: ((file: string) => boolean) | null = null;
const held: { fd: number; callback: fs.NoParamCallback }[] = [];

function fileOf(fd: number): string {
  try {
    return fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    // Not a descriptor of this process: the real call says so.
    return '';
  }
}

const fdatasync = (fd: number, callback: fs.NoParamCallback): void => {
  if (holding !== null && holding(fileOf(fd))) {
    held.push({ fd, callback });
    return;
  }
  if (failing !== null) {
    const file = fileOf(fd);
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

/**
 * fdatasyncs of files `match` accepts wait until the test releases them (releaseFdatasync), so that
 * it decides what happens while one is in flight, and when it ends.
 */
export function holdFdatasyncs(match: (file: string) => boolean): void {
  holding = match;
}

/** How many fdatasyncs are held now. */
export function heldFdatasyncs(): number {
  return held.length;
}

/**
 * Runs the oldest held fdatasync now, for real, and its callback (synchronously, as though it had
 * just completed); false when none is held.
 */
export function releaseFdatasync(): boolean {
  const h = held.shift();
  if (h === undefined) return false;
  let err: NodeJS.ErrnoException | null = null;
  try {
    fs.fdatasyncSync(h.fd);
  } catch (e) {
    err = e as NodeJS.ErrnoException;
  }
  h.callback(err);
  return true;
}

/** Holds no more fdatasyncs, and releases those held. */
export function stopHoldingFdatasyncs(): void {
  holding = null;
  while (releaseFdatasync());
}
