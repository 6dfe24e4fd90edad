// RFC 1813 constants: program numbers, procedures and status codes for NFSv3 and MOUNT v3.
import type { Errno } from '../vfs/errors.js';

export const NFS_PROGRAM = 100003;
export const NFS_V3 = 3;
export const MOUNT_PROGRAM = 100005;
export const MOUNT_V3 = 3;
export const PMAP_PROGRAM = 100000;
export const PMAP_V2 = 2;

// RFC 1813 §3.2
export const NfsProc = Object.freeze({
  NULL: 0,
  GETATTR: 1,
  SETATTR: 2,
  LOOKUP: 3,
  ACCESS: 4,
  READLINK: 5,
  READ: 6,
  WRITE: 7,
  CREATE: 8,
  MKDIR: 9,
  SYMLINK: 10,
  MKNOD: 11,
  REMOVE: 12,
  RMDIR: 13,
  RENAME: 14,
  LINK: 15,
  READDIR: 16,
  READDIRPLUS: 17,
  FSSTAT: 18,
  FSINFO: 19,
  PATHCONF: 20,
  COMMIT: 21,
} as const);
export type NfsProc = (typeof NfsProc)[keyof typeof NfsProc];
export const NFS_PROC_NAMES: readonly string[] = Object.freeze(Object.keys(NfsProc));

/** Procedures whose retransmission must get the original reply (duplicate request cache). */
export const NON_IDEMPOTENT: ReadonlySet<number> = new Set([
  NfsProc.SETATTR,
  NfsProc.CREATE,
  NfsProc.MKDIR,
  NfsProc.SYMLINK,
  NfsProc.MKNOD,
  NfsProc.REMOVE,
  NfsProc.RMDIR,
  NfsProc.RENAME,
  NfsProc.LINK,
]);

// RFC 1813 §2.6 nfsstat3
export const Nfs3Status = Object.freeze({
  OK: 0,
  PERM: 1,
  NOENT: 2,
  IO: 5,
  NXIO: 6,
  ACCES: 13,
  EXIST: 17,
  XDEV: 18,
  NODEV: 19,
  NOTDIR: 20,
  ISDIR: 21,
  INVAL: 22,
  FBIG: 27,
  NOSPC: 28,
  ROFS: 30,
  MLINK: 31,
  NAMETOOLONG: 63,
  NOTEMPTY: 66,
  DQUOT: 69,
  STALE: 70,
  REMOTE: 71,
  BADHANDLE: 10001,
  NOT_SYNC: 10002,
  BAD_COOKIE: 10003,
  NOTSUPP: 10004,
  TOOSMALL: 10005,
  SERVERFAULT: 10006,
  BADTYPE: 10007,
  JUKEBOX: 10008,
} as const);
export type Nfs3Status = (typeof Nfs3Status)[keyof typeof Nfs3Status];

export function nfsStatusOf(errno: Errno): Nfs3Status {
  return Nfs3Status[errno];
}

// RFC 1813 §5.1 mountstat3
export const MountStatus = Object.freeze({
  OK: 0,
  PERM: 1,
  NOENT: 2,
  IO: 5,
  ACCES: 13,
  NOTDIR: 20,
  INVAL: 22,
  NAMETOOLONG: 63,
  NOTSUPP: 10004,
  SERVERFAULT: 10006,
} as const);
export type MountStatus = (typeof MountStatus)[keyof typeof MountStatus];

export const MountProc = Object.freeze({ NULL: 0, MNT: 1, DUMP: 2, UMNT: 3, UMNTALL: 4, EXPORT: 5 } as const);

export const StableHow = Object.freeze({ UNSTABLE: 0, DATA_SYNC: 1, FILE_SYNC: 2 } as const);

export const Access3 = Object.freeze({
  READ: 0x01,
  LOOKUP: 0x02,
  MODIFY: 0x04,
  EXTEND: 0x08,
  DELETE: 0x10,
  EXECUTE: 0x20,
} as const);

export const TimeHow = Object.freeze({ DONT_CHANGE: 0, SET_TO_SERVER_TIME: 1, SET_TO_CLIENT_TIME: 2 } as const);

/** Largest READ/WRITE transfer advertised in FSINFO. */
export const MAX_IO = 1024 * 1024;
/** RFC 1813: NFS3_FHSIZE. */
export const FHSIZE3 = 64;
/** MNTPATHLEN */
export const MNT_PATH_LEN = 1024;
/** Longest path (symlink target) accepted. */
export const MAX_PATH = 4096;
/**
 * Longest symlink target the decoder reads (a view into the record, never copied): a longer one
 * that is present in the call is NAMETOOLONG from the file service, not GARBAGE_ARGS.
 */
export const MAX_PATH_DECODE = 1024 * 1024;
/** Longest name accepted by the decoder; longer names still decode up to this cap, then NAMETOOLONG. */
export const MAX_NAME_DECODE = 1024;
