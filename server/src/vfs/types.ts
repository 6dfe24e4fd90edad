// Protocol-neutral file model. FileType values equal NFSv3's ftype3 so the NFS edge needs no table.

export const FileType = Object.freeze({
  REG: 1,
  DIR: 2,
  BLK: 3,
  CHR: 4,
  LNK: 5,
  SOCK: 6,
  FIFO: 7,
} as const);
export type FileType = (typeof FileType)[keyof typeof FileType];

export interface Timespec {
  sec: number;
  nsec: number;
}

/** A persistent inode as stored by a MetadataStore. */
export interface Inode {
  /** Persistent inode id; also the NFS fileid. Never reused within a store. */
  id: number;
  shareId: number;
  type: FileType;
  /** Permission bits including setuid/setgid/sticky (07777). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  rdevMajor: number;
  rdevMinor: number;
  atime: Timespec;
  mtime: Timespec;
  ctime: Timespec;
  /** Birth (creation) time: set when the inode is made; only an explicit change (SMB SET_INFO) moves it. */
  btime: Timespec;
  /** Stored DOS attributes (DosAttributes bits, MS-FSCC 2.6); DIRECTORY is never stored (the type says it). */
  dosAttrs: number;
  /** Random (53 bits, crypto), set at creation and never changed; part of the file handle, so handles cannot be guessed. */
  generation: number;
  /** For directories: the parent directory's id (the root's parent is itself). 0 for others. */
  parent: number;
  /** Symlink target bytes, else null. */
  target: Buffer | null;
  /** EXCLUSIVE CREATE verifier (8 bytes), cleared by the first SETATTR; else null. */
  createVerifier: Buffer | null;
}

/** A deep copy holding exactly the Inode fields (engines hand out copies, never their own rows). */
export function copyInode(i: Inode): Inode {
  return {
    id: i.id,
    shareId: i.shareId,
    type: i.type,
    mode: i.mode,
    uid: i.uid,
    gid: i.gid,
    size: i.size,
    nlink: i.nlink,
    rdevMajor: i.rdevMajor,
    rdevMinor: i.rdevMinor,
    atime: { sec: i.atime.sec, nsec: i.atime.nsec },
    mtime: { sec: i.mtime.sec, nsec: i.mtime.nsec },
    ctime: { sec: i.ctime.sec, nsec: i.ctime.nsec },
    btime: { sec: i.btime.sec, nsec: i.btime.nsec },
    dosAttrs: i.dosAttrs,
    generation: i.generation,
    parent: i.parent,
    target: i.target === null ? null : Buffer.from(i.target),
    createVerifier: i.createVerifier === null ? null : Buffer.from(i.createVerifier),
  };
}

export interface NewInode {
  type: FileType;
  mode: number;
  uid: number;
  gid: number;
  rdevMajor: number;
  rdevMinor: number;
  target: Buffer | null;
  createVerifier: Buffer | null;
  size: number;
  atime?: Timespec;
  mtime?: Timespec;
  /** Default: the creation time (`now`). */
  btime?: Timespec;
  /** Default: 0. */
  dosAttrs?: number;
}

export interface DirEntry {
  name: Buffer;
  /** Stable, never reused within the directory; > 2 (1 and 2 are "." and ".."). */
  cookie: number;
  inode: Inode;
}

/** A changed attribute set; absent fields are left alone. */
export interface AttrChanges {
  mode?: number;
  /**
   * Mode bits cleared from the mode the inode has when the change applies (after `mode`, if
   * given): a WRITE or chown that drops setuid/setgid must not put back an older mode that a
   * concurrent chmod replaced.
   */
  clearMode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  /** size = max(size, growTo), applied atomically (concurrent WRITEs extending a file). */
  growTo?: number;
  atime?: Timespec;
  mtime?: Timespec;
  ctime?: Timespec;
  btime?: Timespec;
  /** Replaces the stored DOS attributes (masked with DOS_ATTRS_STORED). */
  dosAttrs?: number;
  clearCreateVerifier?: boolean;
  /**
   * Several servers: the fencing token of the write lease this change is made under (a truncate's
   * size). Refused (BlockConflictError, stale; nothing changed) when the file's data was stored or
   * cut, or its size stored (sizeToken), under a newer one since: the lease expired and another
   * server wrote the file. Recorded as the file's size token otherwise.
   */
  leaseToken?: number;
  /**
   * Several servers: the fencing token of the write lease a WRITE's size (growTo) is stored under.
   * Never refused; recorded with the file (the newest wins), so that a truncate's size or cut under
   * an older lease (leaseToken, dropBlocks) is refused even before any block of the newer lease is
   * stored (its data still in that server's WAL).
   */
  sizeToken?: number;
}

/**
 * MS-FSCC 2.6 file attributes that both protocols' files carry in the metadata store. Values are
 * the Windows ones, so SMB needs no table; NFS does not show them (READONLY is not mapped to mode
 * bits: the SMB edge reports READONLY also for a file nobody may write, see smb2/fscc.ts).
 */
export const DosAttributes = Object.freeze({
  READONLY: 0x00000001,
  HIDDEN: 0x00000002,
  SYSTEM: 0x00000004,
  DIRECTORY: 0x00000010,
  ARCHIVE: 0x00000020,
  NORMAL: 0x00000080,
  TEMPORARY: 0x00000100,
  SPARSE_FILE: 0x00000200,
  OFFLINE: 0x00001000,
  NOT_CONTENT_INDEXED: 0x00002000,
} as const);

/**
 * The attributes stored: what MS-FSCC 2.6 lets a client set through FileBasicInformation (READONLY,
 * HIDDEN, SYSTEM, ARCHIVE, TEMPORARY, OFFLINE, NOT_CONTENT_INDEXED) plus SPARSE_FILE, which
 * FSCTL_SET_SPARSE sets. DIRECTORY and NORMAL are derived, never stored.
 */
export const DOS_ATTRS_STORED =
  DosAttributes.READONLY |
  DosAttributes.HIDDEN |
  DosAttributes.SYSTEM |
  DosAttributes.ARCHIVE |
  DosAttributes.TEMPORARY |
  DosAttributes.SPARSE_FILE |
  DosAttributes.OFFLINE |
  DosAttributes.NOT_CONTENT_INDEXED;

/** Who is asking: from AUTH_SYS (after squashing) or an SMB session's user. */
export interface Identity {
  uid: number;
  gid: number;
  gids: readonly number[];
  /**
   * A caller that proved no identity (NFS AUTH_NONE): it acts as the share's anonymous_uid and
   * anonymous_gid, whatever uid and gid it carries (FileService.squash).
   */
  anonymous?: boolean;
}

let lastNs = 0n;
/** The wall-clock time (ns) at `anchorHr` on the monotonic clock: now = anchorWall + (hrtime - anchorHr). */
let anchorWall = 0n;
let anchorHr = 0n;
/** Past this gap from the wall clock (stepped, or drifted) the anchor is taken again. */
const REANCHOR_NS = 5_000_000n;

/**
 * Anchors the monotonic clock to the wall clock at the edge of a wall-clock millisecond (found
 * to a few us by waiting for it, at most ~1 ms, at start and after a clock step): Date.now() has
 * whole milliseconds only, and a clock up to 1 ms behind it made a CLOSE's write time earlier than
 * the client's clock when it sent the CLOSE (smbtorture smb2.timestamps.delayed-2write).
 */
function anchor(): void {
  // Every hr reading kept as `safe` is taken before a Date.now() that still showed `start`, so it
  // lies before the edge of start + 1 ms; the anchor is an edge at or after that one: the clock is
  // never behind the wall clock, even when the process is descheduled anywhere in here (a loaded
  // machine: it then runs ahead for a while, which the re-anchoring corrects).
  let safe = process.hrtime.bigint();
  const start = Date.now();
  // The edge comes within 1 ms; past 2 ms the wall clock is not moving (a mocked Date): give up.
  const giveUp = safe + 2_000_000n;
  let now = start;
  for (;;) {
    const hr = process.hrtime.bigint();
    now = Date.now();
    if (now !== start) break;
    safe = hr;
    if (hr > giveUp) {
      now = start + 1;
      break;
    }
  }
  anchorWall = BigInt(now) * 1_000_000n;
  anchorHr = safe;
}
anchor();

/**
 * Smallest step between two timestamps of this process: SMB shows times in 100 ns units
 * (FILETIME), so two changes 1 ns apart would look the same to an SMB client.
 */
const STEP_NS = 100n;

/** Negative, zero or positive as `a` is before, at or after `b`. */
export function compareTimespec(a: Timespec, b: Timespec): number {
  return a.sec !== b.sec ? a.sec - b.sec : a.nsec - b.nsec;
}

/**
 * The current time with nanoseconds, strictly increasing within the process: clients compare
 * ctime/mtime to detect change, so two changes must never share a timestamp or go backwards.
 * The sub-ms digits come from the monotonic clock's distance to the anchor (not from its own
 * sub-ms digits, which run out of phase with the wall clock's: the time then stood still for up
 * to 1 ms in every ms, and changes 200 us apart shared a 100 ns SMB time).
 */
export function nowTimespec(): Timespec {
  // Date.now() is the start of the current ms, read first: t, read after it, is at or past it while
  // in step, so a t behind it is behind for sure (anchor again at once, never serve a time behind).
  const wall = BigInt(Date.now()) * 1_000_000n;
  let t = anchorWall + (process.hrtime.bigint() - anchorHr);
  if (t - wall > REANCHOR_NS || t < wall) {
    anchor();
    t = anchorWall + (process.hrtime.bigint() - anchorHr);
  }
  lastNs = t >= lastNs + STEP_NS ? t : lastNs + STEP_NS;
  return { sec: Number(lastNs / 1_000_000_000n), nsec: Number(lastNs % 1_000_000_000n) };
}

export const timespecEqual = (a: Timespec, b: Timespec): boolean => a.sec === b.sec && a.nsec === b.nsec;

/** Longest name component, in bytes. */
export const NAME_MAX = 255;
/** Most hard links a file may have (LINK refuses one more with MLINK); NFS PATHCONF reports it as linkmax. */
export const LINK_MAX = 65000;
