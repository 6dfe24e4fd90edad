// A minimal NFSv3-over-TCP client for benchmarks: ONC RPC (RFC 5531) with record marking,
// AUTH_SYS credentials, XDR (RFC 4506); MOUNT v3 (RFC 1813 appendix I) to get the root file
// handle, and the handful of NFSv3 procedures the small-file load generator needs.
// One outstanding request per connection; deliberately independent of the server's code.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import os from 'node:os';

// ---------------------------------------------------------------------------------------------
// XDR

export class XdrWriter {
  private buf: Buffer;
  private len = 0;

  constructor(initialSize = 256) {
    this.buf = Buffer.allocUnsafe(initialSize);
  }

  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }

  u32(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`not a uint32: ${v}`);
    this.ensure(4);
    this.buf.writeUInt32BE(v, this.len);
    this.len += 4;
    return this;
  }

  bool(v: boolean): this {
    return this.u32(v ? 1 : 0);
  }

  u64(v: bigint | number): this {
    const b = BigInt(v);
    if (b < 0n || b > 0xffffffffffffffffn) throw new RangeError(`not a uint64: ${v}`);
    this.ensure(8);
    this.buf.writeBigUInt64BE(b, this.len);
    this.len += 8;
    return this;
  }

  /** Fixed-length opaque: the bytes, zero-padded to a multiple of 4. */
  fixedOpaque(data: Uint8Array): this {
    const pad = (4 - (data.length % 4)) % 4;
    this.ensure(data.length + pad);
    this.buf.set(data, this.len);
    this.len += data.length;
    this.buf.fill(0, this.len, this.len + pad);
    this.len += pad;
    return this;
  }

  /** Variable-length opaque: length, bytes, padding. */
  opaque(data: Uint8Array): this {
    this.u32(data.length);
    return this.fixedOpaque(data);
  }

  string(s: string): this {
    return this.opaque(Buffer.from(s, 'utf8'));
  }

  /** A copy of the bytes written so far. */
  toBuffer(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.len));
  }

  get length(): number {
    return this.len;
  }
}

export class XdrError extends Error {}

export class XdrReader {
  constructor(
    private readonly buf: Buffer,
    private off = 0,
  ) {}

  private need(n: number): void {
    if (this.off + n > this.buf.length) {
      throw new XdrError(`XDR: need ${n} bytes at offset ${this.off}, have ${this.buf.length - this.off}`);
    }
  }

  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }

  bool(): boolean {
    const v = this.u32();
    if (v > 1) throw new XdrError(`XDR: bad bool ${v}`);
    return v === 1;
  }

  u64(): bigint {
    this.need(8);
    const v = this.buf.readBigUInt64BE(this.off);
    this.off += 8;
    return v;
  }

  fixedOpaque(n: number): Buffer {
    const padded = n + ((4 - (n % 4)) % 4);
    this.need(padded);
    const v = this.buf.subarray(this.off, this.off + n);
    this.off += padded;
    return v;
  }

  opaque(max = 0xffffffff): Buffer {
    const n = this.u32();
    if (n > max) throw new XdrError(`XDR: opaque of ${n} bytes exceeds limit ${max}`);
    return this.fixedOpaque(n);
  }

  string(max = 0xffffffff): string {
    return this.opaque(max).toString('utf8');
  }

  skip(n: number): void {
    this.need(n);
    this.off += n;
  }

  get remaining(): number {
    return this.buf.length - this.off;
  }
}

// ---------------------------------------------------------------------------------------------
// ONC RPC

const RPC_VERSION = 2;
const MSG_CALL = 0;
const MSG_REPLY = 1;
const MSG_ACCEPTED = 0;
const MSG_DENIED = 1;
const AUTH_NONE = 0;
const AUTH_SYS = 1;
const LAST_FRAGMENT = 0x80000000;

const ACCEPT_STAT = ['SUCCESS', 'PROG_UNAVAIL', 'PROG_MISMATCH', 'PROC_UNAVAIL', 'GARBAGE_ARGS', 'SYSTEM_ERR'];
const AUTH_STAT = [
  'AUTH_OK',
  'AUTH_BADCRED',
  'AUTH_REJECTEDCRED',
  'AUTH_BADVERF',
  'AUTH_REJECTEDVERF',
  'AUTH_TOOWEAK',
  'AUTH_INVALIDRESP',
  'AUTH_FAILED',
];

export class RpcError extends Error {}

export interface AuthSysCred {
  machineName: string;
  uid: number;
  gid: number;
  gids: number[];
}

/** Largest reply record we accept (replies here are small; READDIR/READ are not used). */
const MAX_REPLY_RECORD = 4 * 1024 * 1024;

interface PendingCall {
  xid: number;
  resolve: (r: XdrReader) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  what: string;
}

/** One TCP connection carrying ONC RPC calls, one at a time. */
export class RpcConnection {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private fragments: Buffer[] = [];
  private fragmentsLen = 0;
  private pending: PendingCall | null = null;
  private nextXid = (Math.random() * 0x7fffffff) >>> 0;
  private closedError: Error | null = null;
  private readonly credBody: Buffer;

  private constructor(
    private readonly socket: net.Socket,
    readonly label: string,
    cred: AuthSysCred,
    private readonly callTimeoutMs: number,
  ) {
    const w = new XdrWriter(64)
      .u32(Math.floor(Date.now() / 1000) >>> 0)
      .string(cred.machineName.slice(0, 255))
      .u32(cred.uid)
      .u32(cred.gid)
      .u32(Math.min(cred.gids.length, 16));
    for (const g of cred.gids.slice(0, 16)) w.u32(g);
    this.credBody = w.toBuffer();
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', (e) => this.fail(new RpcError(`${label}: ${e.message}`)));
    socket.on('close', () => this.fail(new RpcError(`${label}: connection closed by server`)));
  }

  static connect(
    host: string,
    port: number,
    cred: AuthSysCred,
    opts: { connectTimeoutMs?: number; callTimeoutMs?: number; label?: string } = {},
  ): Promise<RpcConnection> {
    const label = opts.label ?? `rpc ${host}:${port}`;
    const connectTimeoutMs = opts.connectTimeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new RpcError(`${label}: connect timed out after ${connectTimeoutMs} ms`));
      }, connectTimeoutMs);
      socket.once('error', (e) => {
        clearTimeout(timer);
        reject(new RpcError(`${label}: connect failed: ${e.message}`));
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new RpcConnection(socket, label, cred, opts.callTimeoutMs ?? 30_000));
      });
    });
  }

  /** Sends one call and resolves with a reader positioned at the procedure's results. */
  call(prog: number, vers: number, proc: number, args: Buffer | null, what = `${prog}/${vers}/${proc}`): Promise<XdrReader> {
    if (this.closedError) return Promise.reject(this.closedError);
    if (this.pending) return Promise.reject(new RpcError(`${this.label}: ${what} issued while ${this.pending.what} is outstanding`));
    const xid = (this.nextXid = (this.nextXid + 1) >>> 0);
    const header = new XdrWriter(128)
      .u32(0) // record mark, patched below
      .u32(xid)
      .u32(MSG_CALL)
      .u32(RPC_VERSION)
      .u32(prog)
      .u32(vers)
      .u32(proc)
      .u32(AUTH_SYS)
      .opaque(this.credBody)
      .u32(AUTH_NONE)
      .u32(0)
      .toBuffer();
    const argLen = args?.length ?? 0;
    header.writeUInt32BE((LAST_FRAGMENT | (header.length - 4 + argLen)) >>> 0, 0);
    return new Promise<XdrReader>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending = null;
        const err = new RpcError(`${this.label}: ${what} got no reply within ${this.callTimeoutMs} ms`);
        reject(err);
        this.fail(err);
        this.socket.destroy();
      }, this.callTimeoutMs);
      this.pending = { xid, resolve, reject, timer, what };
      if (args && argLen > 0) {
        this.socket.cork();
        this.socket.write(header);
        this.socket.write(args);
        this.socket.uncork();
      } else {
        this.socket.write(header);
      }
    });
  }

  close(): void {
    if (!this.closedError) this.closedError = new RpcError(`${this.label}: connection closed`);
    this.socket.destroy();
  }

  private fail(err: Error): void {
    if (!this.closedError) this.closedError = err;
    const p = this.pending;
    if (p) {
      this.pending = null;
      clearTimeout(p.timer);
      p.reject(err);
    }
  }

  private onData(d: Buffer): void {
    this.chunks.push(d);
    this.buffered += d.length;
    try {
      for (;;) {
        if (this.buffered < 4) return;
        const head = this.peek(4);
        const mark = head.readUInt32BE(0);
        const fragLen = mark & 0x7fffffff;
        if (this.fragmentsLen + fragLen > MAX_REPLY_RECORD) {
          throw new RpcError(`${this.label}: reply record larger than ${MAX_REPLY_RECORD} bytes`);
        }
        if (this.buffered < 4 + fragLen) return;
        this.take(4);
        this.fragments.push(this.take(fragLen));
        this.fragmentsLen += fragLen;
        if ((mark & LAST_FRAGMENT) !== 0) {
          const record = this.fragments.length === 1 ? this.fragments[0]! : Buffer.concat(this.fragments);
          this.fragments = [];
          this.fragmentsLen = 0;
          this.onRecord(record);
        }
      }
    } catch (e) {
      this.fail(e instanceof Error ? e : new RpcError(String(e)));
      this.socket.destroy();
    }
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!.subarray(0, n);
    const all = Buffer.concat(this.chunks);
    this.chunks = [all];
    return all.subarray(0, n);
  }

  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return out;
    }
    const all = Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    this.chunks = all.length > n ? [all.subarray(n)] : [];
    this.buffered -= n;
    return out;
  }

  private onRecord(record: Buffer): void {
    const r = new XdrReader(record);
    const xid = r.u32();
    const p = this.pending;
    if (!p || p.xid !== xid) return; // a stale or duplicate reply: ignore it
    this.pending = null;
    clearTimeout(p.timer);
    try {
      if (r.u32() !== MSG_REPLY) throw new RpcError(`${this.label}: ${p.what}: message is not a reply`);
      const replyStat = r.u32();
      if (replyStat === MSG_DENIED) {
        const rejectStat = r.u32();
        if (rejectStat === 0) {
          const lo = r.u32();
          const hi = r.u32();
          throw new RpcError(`${this.label}: ${p.what}: RPC_MISMATCH (server supports ${lo}..${hi})`);
        }
        const a = r.u32();
        throw new RpcError(`${this.label}: ${p.what}: call denied, ${AUTH_STAT[a] ?? `auth_stat ${a}`}`);
      }
      if (replyStat !== MSG_ACCEPTED) throw new RpcError(`${this.label}: ${p.what}: bad reply_stat ${replyStat}`);
      r.u32(); // verifier flavor
      r.opaque(400); // verifier body
      const acceptStat = r.u32();
      if (acceptStat !== 0) {
        let extra = '';
        if (acceptStat === 2) extra = ` (server supports versions ${r.u32()}..${r.u32()})`;
        throw new RpcError(`${this.label}: ${p.what}: ${ACCEPT_STAT[acceptStat] ?? `accept_stat ${acceptStat}`}${extra}`);
      }
      p.resolve(r);
    } catch (e) {
      p.reject(e instanceof Error ? e : new RpcError(String(e)));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// NFSv3 types (RFC 1813)

export const MOUNT_PROGRAM = 100005;
export const MOUNT_V3 = 3;
export const NFS_PROGRAM = 100003;
export const NFS_V3 = 3;

const MOUNTPROC3_MNT = 1;
const MOUNTPROC3_UMNT = 3;

const NFSPROC3_NULL = 0;
const NFSPROC3_GETATTR = 1;
const NFSPROC3_LOOKUP = 3;
const NFSPROC3_CREATE = 8;
const NFSPROC3_MKDIR = 9;
const NFSPROC3_REMOVE = 12;
const NFSPROC3_RMDIR = 13;

const NFS3_FHSIZE = 64;

export const NFS3_STATUS: Readonly<Record<number, string>> = Object.freeze({
  0: 'NFS3_OK',
  1: 'NFS3ERR_PERM',
  2: 'NFS3ERR_NOENT',
  5: 'NFS3ERR_IO',
  6: 'NFS3ERR_NXIO',
  13: 'NFS3ERR_ACCES',
  17: 'NFS3ERR_EXIST',
  18: 'NFS3ERR_XDEV',
  19: 'NFS3ERR_NODEV',
  20: 'NFS3ERR_NOTDIR',
  21: 'NFS3ERR_ISDIR',
  22: 'NFS3ERR_INVAL',
  27: 'NFS3ERR_FBIG',
  28: 'NFS3ERR_NOSPC',
  30: 'NFS3ERR_ROFS',
  31: 'NFS3ERR_MLINK',
  63: 'NFS3ERR_NAMETOOLONG',
  66: 'NFS3ERR_NOTEMPTY',
  69: 'NFS3ERR_DQUOT',
  70: 'NFS3ERR_STALE',
  71: 'NFS3ERR_REMOTE',
  10001: 'NFS3ERR_BADHANDLE',
  10002: 'NFS3ERR_NOT_SYNC',
  10003: 'NFS3ERR_BAD_COOKIE',
  10004: 'NFS3ERR_NOTSUPP',
  10005: 'NFS3ERR_TOOSMALL',
  10006: 'NFS3ERR_SERVERFAULT',
  10007: 'NFS3ERR_BADTYPE',
  10008: 'NFS3ERR_JUKEBOX',
});

const MOUNT_STATUS: Readonly<Record<number, string>> = Object.freeze({
  0: 'MNT3_OK',
  1: 'MNT3ERR_PERM',
  2: 'MNT3ERR_NOENT',
  5: 'MNT3ERR_IO',
  13: 'MNT3ERR_ACCES',
  20: 'MNT3ERR_NOTDIR',
  22: 'MNT3ERR_INVAL',
  63: 'MNT3ERR_NAMETOOLONG',
  10004: 'MNT3ERR_NOTSUPP',
  10006: 'MNT3ERR_SERVERFAULT',
});

export class NfsError extends Error {
  constructor(
    readonly op: string,
    readonly status: number,
  ) {
    super(`${op}: ${NFS3_STATUS[status] ?? `nfsstat3 ${status}`}`);
  }
}

/** ftype3 values. */
export const FileType = Object.freeze({ REG: 1, DIR: 2, BLK: 3, CHR: 4, LNK: 5, SOCK: 6, FIFO: 7 } as const);

export interface NfsTime {
  seconds: number;
  nseconds: number;
}

export interface Fattr3 {
  type: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size: bigint;
  used: bigint;
  rdev: [number, number];
  fsid: bigint;
  fileid: bigint;
  atime: NfsTime;
  mtime: NfsTime;
  ctime: NfsTime;
}

function readTime(r: XdrReader): NfsTime {
  return { seconds: r.u32(), nseconds: r.u32() };
}

function readFattr3(r: XdrReader): Fattr3 {
  return {
    type: r.u32(),
    mode: r.u32(),
    nlink: r.u32(),
    uid: r.u32(),
    gid: r.u32(),
    size: r.u64(),
    used: r.u64(),
    rdev: [r.u32(), r.u32()],
    fsid: r.u64(),
    fileid: r.u64(),
    atime: readTime(r),
    mtime: readTime(r),
    ctime: readTime(r),
  };
}

function readPostOpAttr(r: XdrReader): Fattr3 | undefined {
  return r.bool() ? readFattr3(r) : undefined;
}

function skipWccData(r: XdrReader): void {
  if (r.bool()) r.skip(24); // pre_op_attr: size, mtime, ctime
  readPostOpAttr(r);
}

function readFh(r: XdrReader): Buffer {
  return Buffer.from(r.opaque(NFS3_FHSIZE));
}

/** sattr3 setting only the mode (everything else left to the server). */
function writeSattrMode(w: XdrWriter, mode: number | undefined): void {
  if (mode === undefined) w.bool(false);
  else w.bool(true).u32(mode);
  w.bool(false); // uid
  w.bool(false); // gid
  w.bool(false); // size
  w.u32(0); // atime: DONT_CHANGE
  w.u32(0); // mtime: DONT_CHANGE
}

function diropargs(dir: Buffer, name: string): XdrWriter {
  return new XdrWriter(128).opaque(dir).string(name);
}

export interface LookupResult {
  fh: Buffer;
  attr: Fattr3 | undefined;
}

export interface CreateResult {
  /** The new object's handle, if the server returned one (post_op_fh3 is optional). */
  fh: Buffer | undefined;
  attr: Fattr3 | undefined;
}

export interface Nfs3ClientOptions {
  host?: string;
  nfsPort: number;
  /** MOUNT port; defaults to nfsPort (DittoFS serves both on one port). */
  mountPort?: number;
  /** Export path to MNT, e.g. "/export". */
  exportPath: string;
  uid?: number;
  gid?: number;
  gids?: number[];
  callTimeoutMs?: number;
  connectTimeoutMs?: number;
}

/** An NFSv3 client over one TCP connection (plus one to MOUNT if it is on another port). */
export class Nfs3Client {
  private constructor(
    private readonly nfs: RpcConnection,
    private readonly mnt: RpcConnection | null,
    private readonly exportPath: string,
    readonly rootFh: Buffer,
  ) {}

  static async connect(opts: Nfs3ClientOptions): Promise<Nfs3Client> {
    const host = opts.host ?? '127.0.0.1';
    const mountPort = opts.mountPort ?? opts.nfsPort;
    const cred: AuthSysCred = {
      machineName: os.hostname(),
      uid: opts.uid ?? process.getuid?.() ?? 0,
      gid: opts.gid ?? process.getgid?.() ?? 0,
      gids: opts.gids ?? [],
    };
    const connOpts = { callTimeoutMs: opts.callTimeoutMs, connectTimeoutMs: opts.connectTimeoutMs };
    const mnt = await RpcConnection.connect(host, mountPort, cred, {
      ...connOpts,
      label: `mount ${host}:${mountPort}`,
    });
    let nfs: RpcConnection | null = null;
    try {
      const r = await mnt.call(MOUNT_PROGRAM, MOUNT_V3, MOUNTPROC3_MNT, new XdrWriter().string(opts.exportPath).toBuffer(), 'MNT');
      const status = r.u32();
      if (status !== 0) throw new RpcError(`MNT ${opts.exportPath}: ${MOUNT_STATUS[status] ?? `mountstat3 ${status}`}`);
      const rootFh = readFh(r);
      if (mountPort === opts.nfsPort) return new Nfs3Client(mnt, null, opts.exportPath, rootFh);
      nfs = await RpcConnection.connect(host, opts.nfsPort, cred, {
        ...connOpts,
        label: `nfs ${host}:${opts.nfsPort}`,
      });
      return new Nfs3Client(nfs, mnt, opts.exportPath, rootFh);
    } catch (e) {
      mnt.close();
      nfs?.close();
      throw e;
    }
  }

  /** A raw NFSv3 call (a procedure this client has no method for); the reply from its status on. */
  call(proc: number, args: Buffer | null, what: string): Promise<XdrReader> {
    return this.nfs.call(NFS_PROGRAM, NFS_V3, proc, args, what);
  }

  async null(): Promise<void> {
    await this.call(NFSPROC3_NULL, null, 'NULL');
  }

  async getattr(fh: Buffer): Promise<Fattr3> {
    const r = await this.call(NFSPROC3_GETATTR, new XdrWriter(80).opaque(fh).toBuffer(), 'GETATTR');
    const status = r.u32();
    if (status !== 0) throw new NfsError('GETATTR', status);
    return readFattr3(r);
  }

  async lookup(dir: Buffer, name: string): Promise<LookupResult> {
    const r = await this.call(NFSPROC3_LOOKUP, diropargs(dir, name).toBuffer(), 'LOOKUP');
    const status = r.u32();
    if (status !== 0) throw new NfsError(`LOOKUP ${name}`, status);
    const fh = readFh(r);
    const attr = readPostOpAttr(r);
    readPostOpAttr(r); // dir_attributes
    return { fh, attr };
  }

  /**
   * CREATE with createmode3 UNCHECKED (0) or GUARDED (1), setting only the mode; or EXCLUSIVE (2),
   * which carries an 8-byte verifier instead of attributes (Linux then sets the mode with a SETATTR).
   */
  async create(dir: Buffer, name: string, mode = 0o644, how: 'UNCHECKED' | 'GUARDED' | 'EXCLUSIVE' = 'UNCHECKED'): Promise<CreateResult> {
    const w = diropargs(dir, name).u32(how === 'UNCHECKED' ? 0 : how === 'GUARDED' ? 1 : 2);
    if (how === 'EXCLUSIVE') w.fixedOpaque(randomBytes(8));
    else writeSattrMode(w, mode);
    return this.createLike(NFSPROC3_CREATE, w.toBuffer(), `CREATE ${name}`);
  }

  async mkdir(dir: Buffer, name: string, mode = 0o755): Promise<CreateResult> {
    const w = diropargs(dir, name);
    writeSattrMode(w, mode);
    return this.createLike(NFSPROC3_MKDIR, w.toBuffer(), `MKDIR ${name}`);
  }

  /**
   * MKDIR in the export's root of the directory a workload owns; the handle. One already there (a
   * previous run's) is an error that says so, rather than a workload mixed with old files.
   */
  async mkdirFresh(name: string, hint = ''): Promise<Buffer> {
    try {
      const made = await this.mkdir(this.rootFh, name, 0o755);
      return made.fh ?? (await this.lookup(this.rootFh, name)).fh;
    } catch (e) {
      if (e instanceof NfsError && e.status === 17) throw new Error(`${this.exportPath}/${name} already exists on the server${hint}`);
      throw e;
    }
  }

  private async createLike(proc: number, args: Buffer, what: string): Promise<CreateResult> {
    const r = await this.call(proc, args, what);
    const status = r.u32();
    if (status !== 0) throw new NfsError(what, status);
    const fh = r.bool() ? readFh(r) : undefined;
    const attr = readPostOpAttr(r);
    skipWccData(r);
    return { fh, attr };
  }

  async remove(dir: Buffer, name: string): Promise<void> {
    const r = await this.call(NFSPROC3_REMOVE, diropargs(dir, name).toBuffer(), `REMOVE ${name}`);
    const status = r.u32();
    if (status !== 0) throw new NfsError(`REMOVE ${name}`, status);
    skipWccData(r);
  }

  async rmdir(dir: Buffer, name: string): Promise<void> {
    const r = await this.call(NFSPROC3_RMDIR, diropargs(dir, name).toBuffer(), `RMDIR ${name}`);
    const status = r.u32();
    if (status !== 0) throw new NfsError(`RMDIR ${name}`, status);
    skipWccData(r);
  }

  /** UMNT (best effort) and close the connections. */
  async close(): Promise<void> {
    const mnt = this.mnt ?? this.nfs;
    try {
      await mnt.call(MOUNT_PROGRAM, MOUNT_V3, MOUNTPROC3_UMNT, new XdrWriter().string(this.exportPath).toBuffer(), 'UMNT');
    } catch {
      // The server may have dropped an idle MOUNT connection; unmounting is only courtesy.
    }
    this.nfs.close();
    this.mnt?.close();
  }
}
