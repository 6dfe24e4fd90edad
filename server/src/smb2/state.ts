// MS-SMB2 3.3.1 server state: Connection -> Session -> TreeConnect -> Open, each with its own ids.
// Opens live in their connection's table (3.3.1.10 Connection.OpenTable semantics for 2.x: an
// open dies with its connection) and point at their tree and session.
import { CreateOptions } from './constants.js';
import type { Identity, Inode } from '../vfs/types.js';
import type { Share } from '../vfs/service.js';
import type { HeldTimes } from './attrs.js';
import type { OpenStreamRef } from './streams.js';
import type { SigningAlgorithm, SmbAuthExchange, SmbUser } from './auth/index.js';
import type { SessionCipher } from './auth/encryption.js';
import type { OpenRecord } from '../vfs/locks/opens.js';
import type { Lease, NotifySender, OplockHolder } from './oplock.js';

export interface Session {
  readonly id: number;
  state: 'in-progress' | 'valid';
  exchange: SmbAuthExchange | null;
  user: SmbUser | null;
  /** The user who established the session: a re-authentication must be this user (or anonymous). */
  owner: SmbUser | null;
  identity: Identity;
  /**
   * 16-byte signing key (MS-SMB2 3.3.5.5.3: the session key at 2.x, derived from it at 3.x); null
   * for guest and anonymous.
   */
  signingKey: Buffer | null;
  /** How signingKey signs: HMAC-SHA256 at 2.0.2 / 2.1, AES-128-CMAC at 3.x. */
  signingAlgorithm: SigningAlgorithm;
  /**
   * 3.1.1, while the session authenticates: Session.PreauthIntegrityHashValue (MS-SMB2 3.3.5.5),
   * the SHA-512 chain over the connection's NEGOTIATE and this session's SESSION_SETUP messages.
   */
  preauthHash: Buffer | null;
  signingRequired: boolean;
  /** 3.x with a cipher negotiated and a session key: what encrypted messages of the session use (auth/encryption.ts). */
  cipher: SessionCipher | null;
  /** MS-SMB2 Session.EncryptData: every request after SESSION_SETUP must come encrypted (adapters.smb.encryption_required). */
  encryptData: boolean;
  guest: boolean;
  anonymous: boolean;
  readonly trees: Map<number, Tree>;
  nextTreeId: number;
}

/** A session as SESSION_SETUP starts it: no user yet (nobody's identity), no key, no trees. */
export function newSession(id: number): Session {
  return {
    id,
    state: 'in-progress',
    exchange: null,
    user: null,
    owner: null,
    identity: { uid: 65534, gid: 65534, gids: [] },
    signingKey: null,
    signingAlgorithm: 'hmac-sha256',
    preauthHash: null,
    signingRequired: false,
    cipher: null,
    encryptData: false,
    guest: false,
    anonymous: false,
    trees: new Map(),
    nextTreeId: 1,
  };
}

export interface Tree {
  readonly id: number;
  readonly session: Session;
  /** `ipc` for IPC$ (no files; DFS and pipe requests get their error answers). */
  readonly kind: 'disk' | 'ipc';
  readonly share: Share | null;
  /** The share name the client asked for (metrics, logs). */
  readonly name: string;
  /** The share is read-only or the user holds `read`: every change is refused. */
  readonly readOnly: boolean;
  readonly maximalAccess: number;
}

/** Where a directory enumeration stands (MS-SMB2 3.3.1.10 Open.EnumerationLocation and pattern). */
export interface Enumeration {
  pattern: string;
  /** 0: "." next, 1: ".." next, 2: entries after `cookie`. */
  phase: number;
  cookie: number;
  /**
   * Entries read ahead from the store and not returned yet (within one QUERY_DIRECTORY call);
   * `inode` null when the caller may not search the directory (name and file id only).
   */
  page: { name: Buffer; cookie: number; fileId: number; inode: Inode | null; eaSize: number }[];
  pageAt: number;
  eof: boolean;
  /** Nothing returned yet since the pattern was set (an empty result is NO_SUCH_FILE, not NO_MORE_FILES). */
  fresh: boolean;
}

const { WRITE_THROUGH, SEQUENTIAL_ONLY, NO_INTERMEDIATE_BUFFERING } = CreateOptions;
/**
 * The CreateOptions an open keeps as its mode (MS-FSA 2.1.5.1, Open.Mode; FileModeInformation has
 * the same bits).
 */
export const OPEN_MODE_BITS = WRITE_THROUGH | SEQUENTIAL_ONLY | NO_INTERMEDIATE_BUFFERING;

export class Open {
  /** Requests using this open now; CLOSE waits for them (a CLOSE must not overtake a READ). */
  private busy = 0;
  private idle: (() => void)[] = [];
  position = 0;
  /** Where a FileFullEaInformation query without RESTART_SCAN goes on (0-based, ea.ts). */
  eaIndex = 0;
  /** MS-FSCC 2.4.26 FileModeInformation: the CreateOptions of OPEN_MODE_BITS, then as setMode() set it. */
  mode = 0;
  /**
   * Every WRITE (and copychunk) into this open is stable before it is answered (MS-FSA 2.1.5.3):
   * WRITE_THROUGH, or NO_INTERMEDIATE_BUFFERING, with which "the server assumes that
   * FILE_WRITE_THROUGH is set" (MS-SMB2 2.2.13).
   */
  get writeThrough(): boolean {
    return (this.mode & (WRITE_THROUGH | NO_INTERMEDIATE_BUFFERING)) !== 0;
  }
  /**
   * SET_INFO FileModeInformation (MS-FSA 2.1.5.15.7): WRITE_THROUGH and SEQUENTIAL_ONLY may be set,
   * nothing else (false: refused, unchanged; the synchronous-I/O bits too, an SMB2 open never has
   * them). NO_INTERMEDIATE_BUFFERING stays as CREATE gave it, and with it, write-through.
   */
  setMode(mode: number): boolean {
    if ((mode & ~(WRITE_THROUGH | SEQUENTIAL_ONLY)) !== 0) return false;
    const noBuffering = this.mode & NO_INTERMEDIATE_BUFFERING;
    const writeThrough = noBuffering !== 0 ? this.mode & WRITE_THROUGH : mode & WRITE_THROUGH;
    this.mode = noBuffering | writeThrough | (mode & SEQUENTIAL_ONLY);
    return true;
  }
  /**
   * What the POSIX rules let the opener do, decided at CREATE as Windows decides access at open (a
   * later re-authentication as someone else does not change it): replace the DACL (owner or root),
   * write the file's EAs (write permission). A stream's open has its file's.
   *
   * Kept as they were when the file changes owner or mode later (NFS SETATTR, a descriptor set
   * through another open), on purpose: Windows grants an owner READ_CONTROL and WRITE_DAC in the
   * access check made at open (MS-DTYP 2.5.3.2), records the result in Open.GrantedAccess, and a
   * DACL set checks that, not who owns the file now (MS-SMB2 3.3.5.21.3; MS-FSA 2.1.5.17 "Server
   * Requests Setting of Security Information"). What the DACL does to the mode is still the vfs's
   * to allow: a mode change is refused to whoever is not the owner now (acl.test.ts, "decided at
   * CREATE").
   */
  openerIsOwner = false;
  openerMayWrite = false;
  /**
   * The rights the opener could have been granted at CREATE lacked FILE_APPEND_DATA (a stored
   * DACL granting FILE_WRITE_DATA alone): its WRITEs do not extend the file (files.ts rangeAllowed).
   */
  cannotExtend = false;
  deleteOnClose = false;
  enumeration: Enumeration | null = null;
  /** Times this open's WRITEs leave as they are (set or frozen by SET_INFO FileBasicInformation). */
  heldTimes: HeldTimes | null = null;
  /** For an open of a named stream: its file and the stream's name (handle and inodeId are the stream's). */
  stream: OpenStreamRef | null = null;
  /** Its entry in the lock manager's table of opens (share modes, delete-pending); null once closed. */
  record: OpenRecord | null = null;
  /** Its oplock, or the lease it shares (oplock.ts), and how to reach its connection. */
  oplock: OplockHolder | null = null;
  lease: Lease | null = null;
  notify: NotifySender | null = null;
  /** MS-SMB2 Open.IsDurable: granted a durable handle, v1 or v2 (durable.ts); it outlives its connection. */
  durable = false;
  /** MS-SMB2 Open.CreateGuid: the CreateGuid of a durable v2 open (3.x), which its DH2C must name; null otherwise. */
  createGuid: Buffer | null = null;
  /** MS-SMB2 Open.DurableOpenTimeout of a durable v2 open, in ms; null: the server's durable_handle_timeout. */
  durableTimeoutMs: number | null = null;
  /** Set while the open is preserved without a connection: closes it (a break cannot reach it). */
  expire: (() => Promise<void>) | null = null;
  /**
   * Set when its connection or session went and the open is being closed (connection.ts): resolves
   * once its share modes are released (or it is preserved). A CREATE refused by it waits for that.
   */
  closing: Promise<void> | null = null;

  constructor(
    /** The FileId: Persistent and Volatile both carry `id`. */
    readonly id: number,
    readonly fileId: Buffer,
    /** Its tree connect; a durable reconnect moves the open to the reconnecting client's tree. */
    public tree: Tree,
    readonly share: Share,
    /** The vfs handle of the open file or directory. */
    readonly handle: Buffer,
    readonly inodeId: number,
    readonly isDir: boolean,
    /** The parent directory's handle and this file's name in it (null for the share root). */
    public parent: Buffer | null,
    public name: Buffer | null,
    /** The path from the share root, backslash-separated, no leading backslash. */
    public path: string,
    readonly grantedAccess: number,
  ) {
    this.clientPath = path;
  }

  /**
   * The path its client named it by last (its CREATE, a rename through it). `path` follows renames
   * the client did not make (NFS, of a directory above it); a durable reconnect may name either.
   */
  clientPath: string;

  async use<T>(fn: () => Promise<T>): Promise<T> {
    this.busy++;
    try {
      return await fn();
    } finally {
      if (--this.busy === 0) for (const w of this.idle.splice(0)) w();
    }
  }

  /** Resolves once no request uses this open. */
  drained(): Promise<void> {
    return this.busy === 0 ? Promise.resolve() : new Promise((r) => this.idle.push(r));
  }
}

/** FileId bytes for an open id (MS-SMB2 2.2.14.1: Persistent then Volatile, 8 bytes each). */
export function fileIdOf(id: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32LE((id % 2 ** 32) >>> 0, 0);
  b.writeUInt32LE(Math.floor(id / 2 ** 32), 4);
  b.copy(b, 8, 0, 8);
  return b;
}

/** The open id a FileId names, or -1 when its two halves disagree (not one of ours). */
export function openIdOf(fileId: Buffer): number {
  if (fileId.length !== 16 || fileId.compare(fileId, 0, 8, 8, 16) !== 0) return -1;
  const hi = fileId.readUInt32LE(4);
  if (hi > 0x1fffff) return -1;
  return hi * 2 ** 32 + fileId.readUInt32LE(0);
}
