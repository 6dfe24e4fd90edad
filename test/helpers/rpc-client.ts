// A small raw ONC RPC (RFC 5531) / MOUNT v3 / NFSv3 (RFC 1813) client over one TCP socket, for
// tests. It can send well-formed calls, arbitrary records and arbitrary raw bytes, and hands back
// every reply record so tests can assert on exact bytes. Frames are built with the server's own XDR
// writer and call encoder; replies are parsed here, independently of the server's decoders.
import net from 'node:net';
import { AuthFlavor, encodeAuthSys, encodeCall } from '../../server/src/rpc/message.js';
import { XdrReader, XdrWriter } from '../../server/src/rpc/xdr.js';
import { REPLY_TIMEOUT_MS } from './limits.js';

export const NFS_PROGRAM = 100003;
export const MOUNT_PROGRAM = 100005;
export const NFS_V3 = 3;
export const MOUNT_V3 = 3;

export const NfsProc = Object.freeze({
  NULL: 0,
  GETATTR: 1,
  SETATTR: 2,
  LOOKUP: 3,
  ACCESS: 4,
  READ: 6,
  WRITE: 7,
  CREATE: 8,
  MKDIR: 9,
  REMOVE: 12,
  RMDIR: 13,
} as const);

export const MountProc = Object.freeze({ NULL: 0, MNT: 1 } as const);

/** nfsstat3 values the tests look at. */
export const NfsStat = Object.freeze({
  OK: 0,
  PERM: 1,
  NOENT: 2,
  IO: 5,
  ACCES: 13,
  EXIST: 17,
  INVAL: 22,
  NAMETOOLONG: 63,
  STALE: 70,
  BADHANDLE: 10001,
} as const);

export const AcceptStat = Object.freeze({
  SUCCESS: 0,
  PROG_UNAVAIL: 1,
  PROG_MISMATCH: 2,
  PROC_UNAVAIL: 3,
  GARBAGE_ARGS: 4,
  SYSTEM_ERR: 5,
} as const);

export const RejectStat = Object.freeze({ RPC_MISMATCH: 0, AUTH_ERROR: 1 } as const);
export const AuthStat = Object.freeze({ AUTH_BADCRED: 1, AUTH_TOOWEAK: 5 } as const);
export const CreateHow = Object.freeze({ UNCHECKED: 0, GUARDED: 1, EXCLUSIVE: 2 } as const);
export const StableHow = Object.freeze({ UNSTABLE: 0, DATA_SYNC: 1, FILE_SYNC: 2 } as const);

export interface Cred {
  flavor: number;
  body: Buffer;
}

export const AUTH_NONE: Cred = Object.freeze({ flavor: AuthFlavor.AUTH_NONE, body: Buffer.alloc(0) });

export function authSys(uid: number, gid: number, gids: number[] = [], machineName = 'rpc-client'): Cred {
  return { flavor: AuthFlavor.AUTH_SYS, body: encodeAuthSys({ stamp: 0x1234, machineName, uid, gid, gids }) };
}

// ---- parsed replies -----------------------------------------------------------------------------

export type RpcReply =
  | {
      kind: 'accepted';
      xid: number;
      acceptStat: number;
      /** PROG_MISMATCH only. */
      mismatch?: { low: number; high: number };
      /** Positioned at the procedure result (SUCCESS) or at the end. */
      body: XdrReader;
      raw: Buffer;
    }
  | {
      kind: 'denied';
      xid: number;
      rejectStat: number;
      /** RPC_MISMATCH only. */
      mismatch?: { low: number; high: number };
      /** AUTH_ERROR only. */
      authStat?: number;
      raw: Buffer;
    };

/** Parses one reply record (RFC 5531 §9 reply_body). Throws on anything that is not a reply. */
export function parseReply(raw: Buffer): RpcReply {
  const r = new XdrReader(raw);
  const xid = r.u32();
  const mtype = r.u32();
  if (mtype !== 1) throw new Error(`expected an RPC REPLY, got message type ${mtype}`);
  const stat = r.u32();
  if (stat === 0) {
    r.u32(); // verifier flavor
    r.opaque(400);
    const acceptStat = r.u32();
    if (acceptStat === AcceptStat.PROG_MISMATCH) {
      const low = r.u32();
      const high = r.u32();
      return { kind: 'accepted', xid, acceptStat, mismatch: { low, high }, body: r, raw };
    }
    return { kind: 'accepted', xid, acceptStat, body: r, raw };
  }
  if (stat !== 1) throw new Error(`bad reply_stat ${stat}`);
  const rejectStat = r.u32();
  if (rejectStat === RejectStat.RPC_MISMATCH) return { kind: 'denied', xid, rejectStat, mismatch: { low: r.u32(), high: r.u32() }, raw };
  if (rejectStat === RejectStat.AUTH_ERROR) return { kind: 'denied', xid, rejectStat, authStat: r.u32(), raw };
  throw new Error(`bad reject_stat ${rejectStat}`);
}

export interface Fattr {
  type: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size: number;
  used: number;
  fsid: number;
  fileid: number;
  mtime: { sec: number; nsec: number };
}

export function readFattr(r: XdrReader): Fattr {
  const type = r.u32();
  const mode = r.u32();
  const nlink = r.u32();
  const uid = r.u32();
  const gid = r.u32();
  const size = r.u64();
  const used = r.u64();
  r.u32(); // rdev
  r.u32();
  const fsid = r.u64();
  const fileid = r.u64();
  r.fixed(8); // atime
  const mtime = { sec: r.u32(), nsec: r.u32() };
  r.fixed(8); // ctime
  return { type, mode, nlink, uid, gid, size, used, fsid, fileid, mtime };
}

function readPostOpAttr(r: XdrReader): Fattr | null {
  return r.u32() === 1 ? readFattr(r) : null;
}

function skipWcc(r: XdrReader): Fattr | null {
  if (r.u32() === 1) r.fixed(24); // pre_op_attr: size, mtime, ctime
  return readPostOpAttr(r);
}

// ---- argument encoders --------------------------------------------------------------------------

export interface Sattr {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
}

export function writeSattr(w: XdrWriter, a: Sattr): XdrWriter {
  for (const v of [a.mode, a.uid, a.gid]) {
    if (v === undefined) w.u32(0);
    else w.u32(1).u32(v);
  }
  if (a.size === undefined) w.u32(0);
  else w.u32(1).u64(a.size);
  return w.u32(0).u32(0); // atime, mtime: DONT_CHANGE
}

const nameBytes = (n: string | Buffer): Buffer => (typeof n === 'string' ? Buffer.from(n, 'utf8') : n);

export const args = {
  fh: (fh: Buffer): Buffer => new XdrWriter(72).opaque(fh).finish(),
  dirop: (dir: Buffer, name: string | Buffer): Buffer => new XdrWriter(128).opaque(dir).opaque(nameBytes(name)).finish(),
  create: (dir: Buffer, name: string | Buffer, how: number, attrs: Sattr = {}): Buffer => {
    const w = new XdrWriter(128).opaque(dir).opaque(nameBytes(name)).u32(how);
    if (how === CreateHow.EXCLUSIVE) w.fixed(Buffer.alloc(8, 7));
    else writeSattr(w, attrs);
    return w.finish();
  },
  mkdir: (dir: Buffer, name: string | Buffer, attrs: Sattr = {}): Buffer =>
    writeSattr(new XdrWriter(128).opaque(dir).opaque(nameBytes(name)), attrs).finish(),
  setattr: (fh: Buffer, attrs: Sattr): Buffer => writeSattr(new XdrWriter(128).opaque(fh), attrs).u32(0).finish(),
  write: (fh: Buffer, offset: number, data: Buffer, stable: number = StableHow.FILE_SYNC): Buffer =>
    new XdrWriter(64 + data.length).opaque(fh).u64(offset).u32(data.length).u32(stable).opaque(data).finish(),
  read: (fh: Buffer, offset: number, count: number): Buffer => new XdrWriter(64).opaque(fh).u64(offset).u32(count).finish(),
};

// ---- the connection -----------------------------------------------------------------------------

/** A record-marked RPC connection that keeps every reply record until a test takes it. */
export class RpcConnection {
  /** Received bytes that do not yet form a whole fragment. */
  private pending: Buffer = Buffer.alloc(0);
  /** Fragments of the reply record being assembled. */
  private fragments: Buffer[] = [];
  private readonly replies: Buffer[] = [];
  private waiters: (() => void)[] = [];
  private nextXid = (Math.random() * 0x7fffffff) >>> 0;
  private closedByPeer = false;
  private closed = false;
  private destroyedLocally = false;
  private readonly closedPromise: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', () => {
      /* reported through close */
    });
    this.closedPromise = new Promise((resolve) => {
      socket.once('close', () => {
        this.closed = true;
        this.wake();
        resolve();
      });
    });
    socket.once('end', () => {
      this.closedByPeer = true;
      this.wake();
    });
  }

  static connect(port: number, host = '127.0.0.1', timeoutMs = REPLY_TIMEOUT_MS): Promise<RpcConnection> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host, noDelay: true });
      const t = setTimeout(() => {
        s.destroy();
        reject(new Error(`connect to ${host}:${port} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(t);
        resolve(new RpcConnection(s));
      });
      s.once('error', (err) => {
        clearTimeout(t);
        reject(err);
      });
    });
  }

  allocXid(): number {
    this.nextXid = (this.nextXid + 1) >>> 0;
    return this.nextXid;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private onData(d: Buffer): void {
    let buf = this.pending.length === 0 ? d : Buffer.concat([this.pending, d]);
    for (;;) {
      if (buf.length < 4) break;
      const header = buf.readUInt32BE(0);
      const len = header & 0x7fffffff;
      if (buf.length < 4 + len) break;
      this.fragments.push(buf.subarray(4, 4 + len));
      buf = buf.subarray(4 + len);
      if ((header & 0x80000000) !== 0) {
        this.replies.push(Buffer.concat(this.fragments));
        this.fragments = [];
      }
    }
    this.pending = buf;
    this.wake();
  }

  /** Writes bytes exactly as given (no record mark). */
  sendRaw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Writes one record as a single last fragment. */
  sendRecord(record: Buffer): void {
    const mark = Buffer.alloc(4);
    mark.writeUInt32BE((0x80000000 | record.length) >>> 0, 0);
    this.socket.write(Buffer.concat([mark, record]));
  }

  /** Encodes a call record (without the record mark). */
  static encodeCall(xid: number, prog: number, vers: number, proc: number, cred: Cred, argBytes: Buffer): Buffer {
    return Buffer.from(encodeCall(xid, prog, vers, proc, cred, argBytes));
  }

  /** Sends a call and returns its xid. */
  sendCall(prog: number, vers: number, proc: number, argBytes: Buffer, opts: { cred?: Cred; xid?: number } = {}): number {
    const xid = opts.xid ?? this.allocXid();
    this.sendRecord(RpcConnection.encodeCall(xid, prog, vers, proc, opts.cred ?? AUTH_NONE, argBytes));
    return xid;
  }

  /** Waits for the next reply record (any xid), or rejects after timeoutMs / on close. */
  async nextRecord(timeoutMs = REPLY_TIMEOUT_MS): Promise<Buffer> {
    return this.takeRecord(() => 0, timeoutMs, 'any reply');
  }

  /** Waits for the first reply record whose xid is `xid`. */
  async recordFor(xid: number, timeoutMs = REPLY_TIMEOUT_MS): Promise<Buffer> {
    return this.takeRecord(
      () => this.replies.findIndex((b) => b.length >= 4 && b.readUInt32BE(0) === xid),
      timeoutMs,
      `the reply to xid ${xid}`,
    );
  }

  private async takeRecord(find: () => number, timeoutMs: number, what: string): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.replies.length > 0) {
        const i = find();
        if (i >= 0 && i < this.replies.length) return this.replies.splice(i, 1)[0] as Buffer;
      }
      if (this.closed || this.closedByPeer) throw new Error(`connection closed while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Sends a call and waits for its reply. */
  async call(
    prog: number,
    vers: number,
    proc: number,
    argBytes: Buffer,
    opts: { cred?: Cred; xid?: number; timeoutMs?: number } = {},
  ): Promise<RpcReply> {
    const xid = this.sendCall(prog, vers, proc, argBytes, opts);
    return parseReply(await this.recordFor(xid, opts.timeoutMs));
  }

  /** Replies received but not taken yet. */
  get pendingReplies(): number {
    return this.replies.length;
  }

  /** Resolves true when the peer closes the connection within timeoutMs, false otherwise. */
  async waitClosedByPeer(timeoutMs = REPLY_TIMEOUT_MS): Promise<boolean> {
    let t: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => {
      t = setTimeout(() => resolve(false), timeoutMs);
    });
    const closed = this.closedPromise.then(() => true);
    const r = await Promise.race([closed, timedOut]);
    clearTimeout(t);
    return r && !this.destroyedLocally;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  close(): void {
    this.destroyedLocally = true;
    this.socket.destroy();
  }
}

// ---- NFSv3 over a connection --------------------------------------------------------------------

function expectSuccess(rep: RpcReply, what: string): XdrReader {
  if (rep.kind !== 'accepted' || rep.acceptStat !== AcceptStat.SUCCESS) {
    throw new Error(
      `${what}: RPC not successful: ${JSON.stringify({ kind: rep.kind, stat: rep.kind === 'accepted' ? rep.acceptStat : rep.rejectStat })}`,
    );
  }
  return rep.body;
}

export interface DirOpResult {
  status: number;
  fh: Buffer | null;
  attrs: Fattr | null;
}

/** NFSv3 procedures with one credential, over one RpcConnection. */
export class NfsClient {
  constructor(
    readonly conn: RpcConnection,
    public cred: Cred = authSys(0, 0),
  ) {}

  static async connect(port: number, cred: Cred = authSys(0, 0)): Promise<NfsClient> {
    return new NfsClient(await RpcConnection.connect(port), cred);
  }

  as(cred: Cred): NfsClient {
    return new NfsClient(this.conn, cred);
  }

  close(): void {
    this.conn.close();
  }

  nfs(proc: number, argBytes: Buffer, xid?: number): Promise<RpcReply> {
    return this.conn.call(NFS_PROGRAM, NFS_V3, proc, argBytes, xid === undefined ? { cred: this.cred } : { cred: this.cred, xid });
  }

  /** MOUNT MNT: returns the status and the root handle. */
  async mnt(path: string): Promise<{ status: number; fh: Buffer | null }> {
    const rep = await this.conn.call(MOUNT_PROGRAM, MOUNT_V3, MountProc.MNT, new XdrWriter(64).string(path).finish(), { cred: this.cred });
    const r = expectSuccess(rep, 'MNT');
    const status = r.u32();
    return { status, fh: status === 0 ? Buffer.from(r.opaque(64)) : null };
  }

  async mount(path: string): Promise<Buffer> {
    const { status, fh } = await this.mnt(path);
    if (status !== 0 || !fh) throw new Error(`MNT ${path} failed with status ${status}`);
    return fh;
  }

  async getattr(fh: Buffer): Promise<{ status: number; attrs: Fattr | null }> {
    const r = expectSuccess(await this.nfs(NfsProc.GETATTR, args.fh(fh)), 'GETATTR');
    const status = r.u32();
    return { status, attrs: status === 0 ? readFattr(r) : null };
  }

  async setattr(fh: Buffer, attrs: Sattr): Promise<{ status: number; attrs: Fattr | null }> {
    const r = expectSuccess(await this.nfs(NfsProc.SETATTR, args.setattr(fh, attrs)), 'SETATTR');
    const status = r.u32();
    return { status, attrs: skipWcc(r) };
  }

  async lookup(dir: Buffer, name: string | Buffer): Promise<DirOpResult> {
    const r = expectSuccess(await this.nfs(NfsProc.LOOKUP, args.dirop(dir, name)), 'LOOKUP');
    const status = r.u32();
    if (status !== 0) return { status, fh: null, attrs: null };
    const fh = Buffer.from(r.opaque(64));
    const attrs = readPostOpAttr(r);
    readPostOpAttr(r);
    return { status, fh, attrs };
  }

  private parseDirOp(rep: RpcReply, what: string): DirOpResult {
    const r = expectSuccess(rep, what);
    const status = r.u32();
    if (status !== 0) return { status, fh: null, attrs: null };
    const fh = r.u32() === 1 ? Buffer.from(r.opaque(64)) : null;
    const attrs = readPostOpAttr(r);
    skipWcc(r);
    return { status, fh, attrs };
  }

  async create(dir: Buffer, name: string | Buffer, attrs: Sattr = { mode: 0o644 }, how: number = CreateHow.GUARDED): Promise<DirOpResult> {
    return this.parseDirOp(await this.nfs(NfsProc.CREATE, args.create(dir, name, how, attrs)), 'CREATE');
  }

  async mkdir(dir: Buffer, name: string | Buffer, attrs: Sattr = { mode: 0o755 }): Promise<DirOpResult> {
    return this.parseDirOp(await this.nfs(NfsProc.MKDIR, args.mkdir(dir, name, attrs)), 'MKDIR');
  }

  async write(fh: Buffer, offset: number, data: Buffer, stable: number = StableHow.FILE_SYNC): Promise<{ status: number; count: number }> {
    const r = expectSuccess(await this.nfs(NfsProc.WRITE, args.write(fh, offset, data, stable)), 'WRITE');
    const status = r.u32();
    skipWcc(r);
    return { status, count: status === 0 ? r.u32() : 0 };
  }

  async read(fh: Buffer, offset: number, count: number): Promise<{ status: number; data: Buffer; eof: boolean }> {
    const r = expectSuccess(await this.nfs(NfsProc.READ, args.read(fh, offset, count)), 'READ');
    const status = r.u32();
    readPostOpAttr(r);
    if (status !== 0) return { status, data: Buffer.alloc(0), eof: false };
    r.u32(); // count
    const eof = r.bool();
    return { status, data: Buffer.from(r.opaque(0xffffffff)), eof };
  }

  async remove(dir: Buffer, name: string | Buffer): Promise<{ status: number }> {
    const r = expectSuccess(await this.nfs(NfsProc.REMOVE, args.dirop(dir, name)), 'REMOVE');
    return { status: r.u32() };
  }

  async rmdir(dir: Buffer, name: string | Buffer): Promise<{ status: number }> {
    const r = expectSuccess(await this.nfs(NfsProc.RMDIR, args.dirop(dir, name)), 'RMDIR');
    return { status: r.u32() };
  }

  /** CREATE (GUARDED) + WRITE (FILE_SYNC) of a whole small file; throws unless both succeed. */
  async writeFile(dir: Buffer, name: string, data: Buffer, attrs: Sattr = { mode: 0o644 }): Promise<Buffer> {
    const c = await this.create(dir, name, attrs);
    if (c.status !== 0 || !c.fh) throw new Error(`CREATE ${name} failed with status ${c.status}`);
    if (data.length > 0) {
      const wr = await this.write(c.fh, 0, data);
      if (wr.status !== 0 || wr.count !== data.length) throw new Error(`WRITE ${name} failed with status ${wr.status}`);
    }
    return c.fh;
  }
}
