// One error type for every file-service failure. Engines map `errno` to their protocol's code
// (NFS3ERR_*, NTSTATUS) at their edge; nothing below the engines knows a protocol.
import { SQLSTATE } from '../meta/sql/driver.js';

export const Errno = Object.freeze({
  PERM: 'PERM',
  NOENT: 'NOENT',
  IO: 'IO',
  NXIO: 'NXIO',
  ACCES: 'ACCES',
  EXIST: 'EXIST',
  XDEV: 'XDEV',
  NOTDIR: 'NOTDIR',
  ISDIR: 'ISDIR',
  INVAL: 'INVAL',
  FBIG: 'FBIG',
  NOSPC: 'NOSPC',
  ROFS: 'ROFS',
  MLINK: 'MLINK',
  NAMETOOLONG: 'NAMETOOLONG',
  NOTEMPTY: 'NOTEMPTY',
  STALE: 'STALE',
  BADHANDLE: 'BADHANDLE',
  NOT_SYNC: 'NOT_SYNC',
  BAD_COOKIE: 'BAD_COOKIE',
  NOTSUPP: 'NOTSUPP',
  TOOSMALL: 'TOOSMALL',
  SERVERFAULT: 'SERVERFAULT',
  BADTYPE: 'BADTYPE',
  JUKEBOX: 'JUKEBOX',
} as const);
export type Errno = (typeof Errno)[keyof typeof Errno];

export class VfsError extends Error {
  override readonly name = 'VfsError';
  readonly code: `DITTOFS_VFS_${Errno}`;
  constructor(
    readonly errno: Errno,
    message: string = errno,
  ) {
    super(message);
    this.code = `DITTOFS_VFS_${errno}`;
  }
}

/**
 * An append's end of file moved before its data was logged (the write lease went to another
 * server, or a truncate or cut of the file ran meanwhile): nothing was logged. The file service
 * reads the end again and retries; past a few attempts the client gets JUKEBOX.
 */
export class AppendEndMoved extends VfsError {
  constructor(why: string) {
    super('JUKEBOX', why);
  }
}

/**
 * Bytes read back from storage that do not match the checksum they were written with (a WAL
 * record's CRC32C: the disk changed them after they were logged). IO to NFS clients, and
 * STATUS_DATA_CHECKSUM_ERROR to SMB ones; none of the bytes is returned.
 */
export class DataCorrupt extends VfsError {
  constructor(message: string) {
    super('IO', message);
  }
}

export const vfsError = (errno: Errno, message?: string): VfsError => new VfsError(errno, message);

/**
 * A VfsError for an outcome clients meet all the time (a name not found, a name taken), without a
 * stack trace: capturing one costs more than the lookup that failed (7-20 us), and it is never
 * shown, since the engines answer these with a status and log nothing.
 */
export function expectedError(errno: Errno, message?: string): VfsError {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return new VfsError(errno, message);
  } finally {
    Error.stackTraceLimit = limit;
  }
}

export function isVfsError(e: unknown): e is VfsError {
  return e instanceof VfsError;
}

/**
 * True for a storage failure that means the volume is full or over quota: ENOSPC, EDQUOT, or a
 * metadata database whose volume is full.
 */
export function isNoSpace(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT' || code === SQLSTATE.DISK_FULL;
}

/**
 * A storage failure as the file service reports it: NOSPC when the volume is full (clients hear
 * "no space left", NFS3ERR_NOSPC or STATUS_DISK_FULL, and can tell it from a broken disk), IO
 * otherwise. A VfsError passes through unchanged.
 */
export function storageError(what: string, e: unknown): VfsError {
  if (e instanceof VfsError) return e;
  return new VfsError(isNoSpace(e) ? Errno.NOSPC : Errno.IO, `${what}: ${(e as Error).message}`);
}
