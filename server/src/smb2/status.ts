// MS-ERREF 2.3 NTSTATUS values this server answers, and the one place where a vfs error (or a
// storage failure) becomes an NTSTATUS.
import type { Errno } from '../vfs/errors.js';
import { DataCorrupt, isNoSpace, isVfsError } from '../vfs/errors.js';

export const NtStatus = Object.freeze({
  SUCCESS: 0x00000000,
  UNSUCCESSFUL: 0xc0000001,
  PENDING: 0x00000103,
  NOTIFY_CLEANUP: 0x0000010b,
  NOTIFY_ENUM_DIR: 0x0000010c,
  BUFFER_OVERFLOW: 0x80000005,
  NO_MORE_FILES: 0x80000006,
  NO_MORE_EAS: 0x80000012,
  INVALID_EA_NAME: 0x80000013,
  EA_LIST_INCONSISTENT: 0x80000014,
  NOT_IMPLEMENTED: 0xc0000002,
  INVALID_INFO_CLASS: 0xc0000003,
  INFO_LENGTH_MISMATCH: 0xc0000004,
  INVALID_HANDLE: 0xc0000008,
  INVALID_PARAMETER: 0xc000000d,
  NO_SUCH_FILE: 0xc000000f,
  INVALID_DEVICE_REQUEST: 0xc0000010,
  END_OF_FILE: 0xc0000011,
  MORE_PROCESSING_REQUIRED: 0xc0000016,
  INVALID_VIEW_SIZE: 0xc000001f,
  ACCESS_DENIED: 0xc0000022,
  BUFFER_TOO_SMALL: 0xc0000023,
  OBJECT_TYPE_MISMATCH: 0xc0000024,
  OBJECT_NAME_INVALID: 0xc0000033,
  OBJECT_NAME_NOT_FOUND: 0xc0000034,
  OBJECT_NAME_COLLISION: 0xc0000035,
  OBJECT_PATH_NOT_FOUND: 0xc000003a,
  OBJECT_PATH_SYNTAX_BAD: 0xc000003b,
  SHARING_VIOLATION: 0xc0000043,
  EA_TOO_LARGE: 0xc0000050,
  NONEXISTENT_EA_ENTRY: 0xc0000051,
  NO_EAS_ON_FILE: 0xc0000052,
  FILE_LOCK_CONFLICT: 0xc0000054,
  LOCK_NOT_GRANTED: 0xc0000055,
  DELETE_PENDING: 0xc0000056,
  INVALID_OWNER: 0xc000005a,
  INVALID_PRIMARY_GROUP: 0xc000005b,
  PRIVILEGE_NOT_HELD: 0xc0000061,
  LOGON_FAILURE: 0xc000006d,
  INVALID_SECURITY_DESCR: 0xc0000079,
  RANGE_NOT_LOCKED: 0xc000007e,
  DISK_FULL: 0xc000007f,
  INSUFFICIENT_RESOURCES: 0xc000009a,
  MEDIA_WRITE_PROTECTED: 0xc00000a2,
  BAD_IMPERSONATION_LEVEL: 0xc00000a5,
  FILE_IS_A_DIRECTORY: 0xc00000ba,
  NOT_SUPPORTED: 0xc00000bb,
  NETWORK_BUSY: 0xc00000bf,
  NETWORK_NAME_DELETED: 0xc00000c9,
  BAD_NETWORK_NAME: 0xc00000cc,
  REQUEST_NOT_ACCEPTED: 0xc00000d0,
  NOT_SAME_DEVICE: 0xc00000d4,
  PIPE_EMPTY: 0xc00000d9,
  INVALID_OPLOCK_PROTOCOL: 0xc00000e3,
  INTERNAL_ERROR: 0xc00000e5,
  UNEXPECTED_IO_ERROR: 0xc00000e9,
  // MS-ERREF 2.3.1: "A data integrity checksum error occurred. Data in the file stream is corrupt."
  DATA_CHECKSUM_ERROR: 0xc0000470,
  DIRECTORY_NOT_EMPTY: 0xc0000101,
  NOT_A_DIRECTORY: 0xc0000103,
  NAME_TOO_LONG: 0xc0000106,
  CANCELLED: 0xc0000120,
  CANNOT_DELETE: 0xc0000121,
  INVALID_DEVICE_STATE: 0xc0000184,
  FILE_CLOSED: 0xc0000128,
  INVALID_LOCK_RANGE: 0xc00001a1,
  USER_SESSION_DELETED: 0xc0000203,
  NOT_FOUND: 0xc0000225,
  TOO_MANY_LINKS: 0xc0000265,
  NOT_A_REPARSE_POINT: 0xc0000275,
  FILE_TOO_LARGE: 0xc0000904,
  /** MS-ERREF: a 3.1.1 NEGOTIATE naming no preauthentication integrity hash this server knows. */
  SMB_NO_PREAUTH_INTEGRITY_HASH_OVERLAP: 0xc05d0000,
} as const);
export type NtStatus = (typeof NtStatus)[keyof typeof NtStatus];

/** Metric labels (`access_denied`), from the table above; anything else is `error`. */
const LABELS = new Map<number, string>(Object.entries(NtStatus).map(([k, v]) => [v, k === 'SUCCESS' ? 'ok' : k.toLowerCase()]));
export const statusLabel = (s: number): string => LABELS.get(s) ?? 'error';

/** Success, or a warning whose response still carries a body (MS-SMB2 3.3.4.4). */
export const isBodyStatus = (s: number): boolean =>
  s === NtStatus.SUCCESS || s === NtStatus.BUFFER_OVERFLOW || s === NtStatus.MORE_PROCESSING_REQUIRED;

/** Every vfs errno has its NTSTATUS (the Record makes a new errno a compile error here). */
const BY_ERRNO: Readonly<Record<Errno, NtStatus>> = Object.freeze({
  PERM: NtStatus.ACCESS_DENIED,
  NOENT: NtStatus.OBJECT_NAME_NOT_FOUND,
  IO: NtStatus.UNEXPECTED_IO_ERROR,
  NXIO: NtStatus.UNEXPECTED_IO_ERROR,
  ACCES: NtStatus.ACCESS_DENIED,
  EXIST: NtStatus.OBJECT_NAME_COLLISION,
  XDEV: NtStatus.NOT_SAME_DEVICE,
  NOTDIR: NtStatus.NOT_A_DIRECTORY,
  ISDIR: NtStatus.FILE_IS_A_DIRECTORY,
  INVAL: NtStatus.INVALID_PARAMETER,
  FBIG: NtStatus.DISK_FULL,
  NOSPC: NtStatus.DISK_FULL,
  // Samba answers EROFS so too; Windows shows "the media is write protected".
  ROFS: NtStatus.MEDIA_WRITE_PROTECTED,
  MLINK: NtStatus.TOO_MANY_LINKS,
  NAMETOOLONG: NtStatus.OBJECT_NAME_INVALID,
  NOTEMPTY: NtStatus.DIRECTORY_NOT_EMPTY,
  // An open whose file another client (or NFS) deleted.
  STALE: NtStatus.FILE_CLOSED,
  BADHANDLE: NtStatus.INVALID_HANDLE,
  NOT_SYNC: NtStatus.INVALID_PARAMETER,
  BAD_COOKIE: NtStatus.INVALID_PARAMETER,
  NOTSUPP: NtStatus.NOT_SUPPORTED,
  TOOSMALL: NtStatus.BUFFER_TOO_SMALL,
  SERVERFAULT: NtStatus.INTERNAL_ERROR,
  BADTYPE: NtStatus.NOT_SUPPORTED,
  JUKEBOX: NtStatus.NETWORK_BUSY,
});

/**
 * The NTSTATUS of a failure: a VfsError by its errno, a storage error by its system code; null
 * for anything else (a bug: the caller logs it and answers INTERNAL_ERROR).
 */
export function ntStatusOf(err: unknown): NtStatus | null {
  // Data that fails its checksum: the status a Windows server answers for a corrupt integrity stream.
  if (err instanceof DataCorrupt) return NtStatus.DATA_CHECKSUM_ERROR;
  if (isVfsError(err)) return BY_ERRNO[err.errno];
  const code = (err as { code?: unknown } | null)?.code;
  if (isNoSpace(err)) return NtStatus.DISK_FULL;
  if (typeof code === 'string' && (/^E[A-Z]+$/.test(code) || code === 'DITTOFS_BLOCK_MISSING')) return NtStatus.UNEXPECTED_IO_ERROR;
  return null;
}

/** A command's failure carried as an exception from deep inside a handler (the handler's answer). */
export class SmbStatusError extends Error {
  override readonly name = 'SmbStatusError';
  readonly code = 'DITTOFS_SMB_STATUS';
  constructor(
    readonly status: NtStatus,
    message?: string,
  ) {
    super(message ?? `NTSTATUS 0x${status.toString(16)}`);
  }
}
