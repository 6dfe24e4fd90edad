// MS-SMB2 2.2 protocol constants: commands, header flags, dialects, negotiate and share fields, and
// MS-FSCC / MS-DTYP values the commands carry. Frozen objects with derived unions (no enums).

/** MS-SMB2 2.2.1.2 Command. */
export const Command = Object.freeze({
  NEGOTIATE: 0x00,
  SESSION_SETUP: 0x01,
  LOGOFF: 0x02,
  TREE_CONNECT: 0x03,
  TREE_DISCONNECT: 0x04,
  CREATE: 0x05,
  CLOSE: 0x06,
  FLUSH: 0x07,
  READ: 0x08,
  WRITE: 0x09,
  LOCK: 0x0a,
  IOCTL: 0x0b,
  CANCEL: 0x0c,
  ECHO: 0x0d,
  QUERY_DIRECTORY: 0x0e,
  CHANGE_NOTIFY: 0x0f,
  QUERY_INFO: 0x10,
  SET_INFO: 0x11,
  OPLOCK_BREAK: 0x12,
} as const);
export type Command = (typeof Command)[keyof typeof Command];

/** Metric and log names of the commands, by command code. */
export const COMMAND_NAMES: readonly string[] = Object.freeze([
  'NEGOTIATE',
  'SESSION_SETUP',
  'LOGOFF',
  'TREE_CONNECT',
  'TREE_DISCONNECT',
  'CREATE',
  'CLOSE',
  'FLUSH',
  'READ',
  'WRITE',
  'LOCK',
  'IOCTL',
  'CANCEL',
  'ECHO',
  'QUERY_DIRECTORY',
  'CHANGE_NOTIFY',
  'QUERY_INFO',
  'SET_INFO',
  'OPLOCK_BREAK',
]);
export const commandName = (c: number): string => COMMAND_NAMES[c] ?? 'UNKNOWN';

/** MS-SMB2 2.2.1.2 Flags. */
export const HeaderFlags = Object.freeze({
  SERVER_TO_REDIR: 0x00000001,
  ASYNC_COMMAND: 0x00000002,
  RELATED_OPERATIONS: 0x00000004,
  SIGNED: 0x00000008,
  PRIORITY_MASK: 0x00000070,
  DFS_OPERATIONS: 0x10000000,
  REPLAY_OPERATION: 0x20000000,
} as const);

/** MS-SMB2 2.2.3 dialect revisions this server speaks, and the SMB1-negotiate wildcard. */
export const Dialect = Object.freeze({
  SMB202: 0x0202,
  SMB210: 0x0210,
  SMB300: 0x0300,
  SMB302: 0x0302,
  SMB311: 0x0311,
  WILDCARD: 0x02ff,
} as const);
export type Dialect = (typeof Dialect)[keyof typeof Dialect];

/** The dialects served, most preferred first: NEGOTIATE picks the first the client offers. */
export const SERVED_DIALECTS: readonly number[] = Object.freeze([
  Dialect.SMB311,
  Dialect.SMB302,
  Dialect.SMB300,
  Dialect.SMB210,
  Dialect.SMB202,
]);

/** Dialects of the SMB 3.x family. */
export const isSmb3 = (dialect: number | null): boolean =>
  dialect === Dialect.SMB300 || dialect === Dialect.SMB302 || dialect === Dialect.SMB311;

/** MS-SMB2 2.2.3.1 negotiate context types (3.1.1) this server reads or answers. */
export const NegotiateContextType = Object.freeze({
  PREAUTH_INTEGRITY_CAPABILITIES: 0x0001,
  ENCRYPTION_CAPABILITIES: 0x0002,
  COMPRESSION_CAPABILITIES: 0x0003,
  SIGNING_CAPABILITIES: 0x0008,
} as const);

/** MS-SMB2 2.2.3.1.1 HashAlgorithms: SHA-512, the only one defined. */
export const PREAUTH_SHA512 = 0x0001;
/** MS-SMB2 2.2.3.1.7 SigningAlgorithms. */
export const SigningAlgorithmId = Object.freeze({ HMAC_SHA256: 0x0000, AES_CMAC: 0x0001, AES_GMAC: 0x0002 } as const);

/** MS-SMB2 2.2.3 SecurityMode. */
export const SecurityMode = Object.freeze({ SIGNING_ENABLED: 0x0001, SIGNING_REQUIRED: 0x0002 } as const);

/** MS-SMB2 2.2.4 Capabilities. */
export const Capabilities = Object.freeze({ DFS: 0x1, LEASING: 0x2, LARGE_MTU: 0x4, ENCRYPTION: 0x40 } as const);

/** MS-SMB2 2.2.6 SessionFlags. */
export const SessionFlags = Object.freeze({ IS_GUEST: 0x0001, IS_NULL: 0x0002, ENCRYPT_DATA: 0x0004 } as const);

/** MS-SMB2 2.2.10 ShareType. */
export const ShareType = Object.freeze({ DISK: 0x01, PIPE: 0x02 } as const);

/** MS-SMB2 2.2.13 CreateDisposition. */
export const CreateDisposition = Object.freeze({
  SUPERSEDE: 0,
  OPEN: 1,
  CREATE: 2,
  OPEN_IF: 3,
  OVERWRITE: 4,
  OVERWRITE_IF: 5,
} as const);

/** MS-SMB2 2.2.13 CreateOptions (the ones this server acts on). */
export const CreateOptions = Object.freeze({
  DIRECTORY_FILE: 0x00000001,
  WRITE_THROUGH: 0x00000002,
  SEQUENTIAL_ONLY: 0x00000004,
  NO_INTERMEDIATE_BUFFERING: 0x00000008,
  NON_DIRECTORY_FILE: 0x00000040,
  DELETE_ON_CLOSE: 0x00001000,
} as const);

/** MS-SMB2 2.2.14 CreateAction. */
export const CreateAction = Object.freeze({ SUPERSEDED: 0, OPENED: 1, CREATED: 2, OVERWRITTEN: 3 } as const);

/** MS-SMB2 2.2.13.1 access mask bits (file and directory), MS-DTYP 2.4.3 generic rights. */
export const Access = Object.freeze({
  FILE_READ_DATA: 0x00000001,
  FILE_WRITE_DATA: 0x00000002,
  FILE_APPEND_DATA: 0x00000004,
  FILE_READ_EA: 0x00000008,
  FILE_WRITE_EA: 0x00000010,
  FILE_EXECUTE: 0x00000020,
  FILE_DELETE_CHILD: 0x00000040,
  FILE_READ_ATTRIBUTES: 0x00000080,
  FILE_WRITE_ATTRIBUTES: 0x00000100,
  DELETE: 0x00010000,
  READ_CONTROL: 0x00020000,
  WRITE_DAC: 0x00040000,
  WRITE_OWNER: 0x00080000,
  SYNCHRONIZE: 0x00100000,
  ACCESS_SYSTEM_SECURITY: 0x01000000,
  MAXIMUM_ALLOWED: 0x02000000,
  GENERIC_ALL: 0x10000000,
  GENERIC_EXECUTE: 0x20000000,
  GENERIC_WRITE: 0x40000000,
  GENERIC_READ: 0x80000000,
} as const);

/** Rights that change a file or its name: refused on a read-only tree. */
export const WRITE_RIGHTS =
  Access.FILE_WRITE_DATA |
  Access.FILE_APPEND_DATA |
  Access.FILE_WRITE_EA |
  Access.FILE_WRITE_ATTRIBUTES |
  Access.DELETE |
  Access.FILE_DELETE_CHILD |
  Access.WRITE_DAC |
  Access.WRITE_OWNER;
/** MS-SMB2 3.3.5.9: FILE_ALL_ACCESS, what a read-write tree grants at most. */
export const FILE_ALL_ACCESS = 0x001f01ff;
/** Read, execute, attributes, EAs, READ_CONTROL and SYNCHRONIZE: a read-only tree's maximum. */
export const FILE_READ_ACCESS = 0x001200a9;

/** MS-FSCC 2.6 file attributes. */
export const FileAttributes = Object.freeze({
  READONLY: 0x00000001,
  HIDDEN: 0x00000002,
  DIRECTORY: 0x00000010,
  ARCHIVE: 0x00000020,
  NORMAL: 0x00000080,
} as const);

/** MS-SMB2 2.2.37 InfoType. */
export const InfoType = Object.freeze({ FILE: 1, FILESYSTEM: 2, SECURITY: 3, QUOTA: 4 } as const);

/** MS-FSCC 2.4 file information classes used by QUERY_DIRECTORY, QUERY_INFO and SET_INFO. */
export const FileInfoClass = Object.freeze({
  FileDirectoryInformation: 1,
  FileFullDirectoryInformation: 2,
  FileBothDirectoryInformation: 3,
  FileBasicInformation: 4,
  FileStandardInformation: 5,
  FileInternalInformation: 6,
  FileEaInformation: 7,
  FileAccessInformation: 8,
  FileNameInformation: 9,
  FileRenameInformation: 10,
  FileLinkInformation: 11,
  FileNamesInformation: 12,
  FileDispositionInformation: 13,
  FilePositionInformation: 14,
  FileFullEaInformation: 15,
  FileModeInformation: 16,
  FileAlignmentInformation: 17,
  FileAllInformation: 18,
  FileAllocationInformation: 19,
  FileEndOfFileInformation: 20,
  FileAlternateNameInformation: 21,
  FileStreamInformation: 22,
  FileCompressionInformation: 28,
  FileNetworkOpenInformation: 34,
  FileAttributeTagInformation: 35,
  FileIdBothDirectoryInformation: 37,
  FileIdFullDirectoryInformation: 38,
} as const);

/** MS-FSCC 2.5 file system information classes. */
export const FsInfoClass = Object.freeze({
  FileFsVolumeInformation: 1,
  FileFsSizeInformation: 3,
  FileFsDeviceInformation: 4,
  FileFsAttributeInformation: 5,
  FileFsFullSizeInformation: 7,
  FileFsSectorSizeInformation: 11,
} as const);

/** MS-SMB2 2.2.33 QUERY_DIRECTORY Flags. */
export const QueryDirectoryFlags = Object.freeze({
  RESTART_SCANS: 0x01,
  RETURN_SINGLE_ENTRY: 0x02,
  INDEX_SPECIFIED: 0x04,
  REOPEN: 0x10,
} as const);

/** MS-FSCC 2.3 FSCTL codes this server knows by name. */
export const Fsctl = Object.freeze({
  DFS_GET_REFERRALS: 0x00060194,
  DFS_GET_REFERRALS_EX: 0x000601b0,
  PIPE_TRANSCEIVE: 0x0011c017,
  VALIDATE_NEGOTIATE_INFO: 0x00140204,
  QUERY_NETWORK_INTERFACE_INFO: 0x001401fc,
} as const);

/** MS-SMB2 2.2.31 IOCTL Flags: SMB2_0_IOCTL_IS_FSCTL. */
export const IOCTL_IS_FSCTL = 0x00000001;

/** MS-SMB2 2.2.15 CLOSE Flags. */
export const CLOSE_FLAG_POSTQUERY_ATTRIB = 0x0001;

/** MS-SMB2 2.2.21 WRITE Flags. */
export const WRITEFLAG_WRITE_THROUGH = 0x00000001;

/** The 64 KiB unit of credit charge (MS-SMB2 3.1.5.2). */
export const CREDIT_UNIT = 65536;

/** The all-ones FileId a related compound element uses to mean "the previous element's open". */
export const FILE_ID_ANY = Buffer.alloc(16, 0xff);
