// NFSv3 (RFC 1813) procedures the fault tests need beyond test/helpers/rpc-client.ts: WRITE with
// its `committed` and write verifier, COMMIT, RENAME, LINK, READDIRPLUS, and JUKEBOX handling the
// way a real client does it (wait, then send the call again under a new xid). Replies are parsed
// here, independently of the server's encoders.
import assert from 'node:assert/strict';
import { XdrReader, XdrWriter } from '../../server/src/rpc/xdr.js';
import { REPLY_TIMEOUT_MS } from './limits.js';
import {
  AcceptStat,
  args,
  authSys,
  NFS_PROGRAM,
  NFS_V3,
  NfsClient,
  NfsProc,
  NfsStat,
  readFattr,
  RpcConnection,
  StableHow,
  type Cred,
  type Fattr,
  type RpcReply,
} from './rpc-client.js';

/** Procedures not listed in rpc-client.ts's NfsProc. */
export const NfsProcMore = Object.freeze({
  SYMLINK: 10,
  RENAME: 14,
  LINK: 15,
  READDIR: 16,
  READDIRPLUS: 17,
  FSSTAT: 18,
  COMMIT: 21,
} as const);

/** nfsstat3 values the fault tests look at, beyond rpc-client.ts's NfsStat. */
export const NfsStatMore = Object.freeze({
  IO: 5,
  NOTDIR: 20,
  ISDIR: 21,
  NOTEMPTY: 66,
  SERVERFAULT: 10006,
  JUKEBOX: 10008,
} as const);

/** nfsstat3 names for messages. */
const STATUS_NAMES: Record<number, string> = {
  0: 'OK',
  1: 'PERM',
  2: 'NOENT',
  5: 'IO',
  13: 'ACCES',
  17: 'EXIST',
  20: 'NOTDIR',
  21: 'ISDIR',
  22: 'INVAL',
  27: 'FBIG',
  28: 'NOSPC',
  63: 'NAMETOOLONG',
  66: 'NOTEMPTY',
  70: 'STALE',
  10001: 'BADHANDLE',
  10006: 'SERVERFAULT',
  10008: 'JUKEBOX',
};

export function statusName(status: number): string {
  return `NFS3ERR_${STATUS_NAMES[status] ?? String(status)}`;
}

/** An RPC that was not accepted with SUCCESS: never expected from a healthy server. */
export class RpcNotSuccessError extends Error {
  readonly code = 'TEST_RPC_NOT_SUCCESS';
  constructor(what: string, rep: RpcReply) {
    super(`${what}: RPC not successful (${rep.kind} ${rep.kind === 'accepted' ? rep.acceptStat : rep.rejectStat})`);
  }
}

function body(rep: RpcReply, what: string): XdrReader {
  if (rep.kind !== 'accepted' || rep.acceptStat !== AcceptStat.SUCCESS) throw new RpcNotSuccessError(what, rep);
  return rep.body;
}

function postOpAttr(r: XdrReader): Fattr | null {
  return r.u32() === 1 ? readFattr(r) : null;
}

/** wcc_data: skips pre_op_attr, returns the post_op_attr. */
function wcc(r: XdrReader): Fattr | null {
  if (r.u32() === 1) r.fixed(24);
  return postOpAttr(r);
}

export interface WriteResult {
  status: number;
  count: number;
  /** stable_how the server committed the data with (WRITE3resok.committed). */
  committed: number;
  /** The write verifier (8 bytes), null unless OK. */
  verf: Buffer | null;
  attrs: Fattr | null;
}

export interface CommitResult {
  status: number;
  verf: Buffer | null;
  attrs: Fattr | null;
}

export interface DirEntryPlus {
  fileid: number;
  name: string;
  /** Raw 8-byte cookie, passed back as is. */
  cookie: Buffer;
  attrs: Fattr | null;
  fh: Buffer | null;
}

export interface ReaddirPlusPage {
  status: number;
  dirAttrs: Fattr | null;
  cookieverf: Buffer;
  entries: DirEntryPlus[];
  eof: boolean;
}

const ZERO8 = Buffer.alloc(8);

/** NfsClient plus the procedures above. Every method takes an optional per-call timeout. */
export class NfsOps extends NfsClient {
  /** Per-call reply timeout (ms); a database outage can make single calls slow. */
  timeoutMs = REPLY_TIMEOUT_MS;

  static async open(port: number, cred: Cred = authSys(0, 0), timeoutMs = REPLY_TIMEOUT_MS): Promise<NfsOps> {
    return new NfsOps(await RpcConnection.connect(port, '127.0.0.1', timeoutMs), cred);
  }

  override nfs(proc: number, argBytes: Buffer, xid?: number): Promise<RpcReply> {
    const opts = xid === undefined ? { cred: this.cred, timeoutMs: this.timeoutMs } : { cred: this.cred, xid, timeoutMs: this.timeoutMs };
    return this.conn.call(NFS_PROGRAM, NFS_V3, proc, argBytes, opts);
  }

  async writeV(fh: Buffer, offset: number, data: Buffer, stable: number): Promise<WriteResult> {
    const r = body(await this.nfs(NfsProc.WRITE, args.write(fh, offset, data, stable)), 'WRITE');
    const status = r.u32();
    const attrs = wcc(r);
    if (status !== 0) return { status, count: 0, committed: 0, verf: null, attrs };
    const count = r.u32();
    const committed = r.u32();
    const verf = Buffer.from(r.fixed(8));
    return { status, count, committed, verf, attrs };
  }

  async commit(fh: Buffer, offset = 0, count = 0): Promise<CommitResult> {
    const a = new XdrWriter(96).opaque(fh).u64(offset).u32(count).finish();
    const r = body(await this.nfs(NfsProcMore.COMMIT, a), 'COMMIT');
    const status = r.u32();
    const attrs = wcc(r);
    return { status, verf: status === 0 ? Buffer.from(r.fixed(8)) : null, attrs };
  }

  async rename(fromDir: Buffer, fromName: string, toDir: Buffer, toName: string): Promise<{ status: number }> {
    const a = new XdrWriter(256).opaque(fromDir).string(fromName).opaque(toDir).string(toName).finish();
    const r = body(await this.nfs(NfsProcMore.RENAME, a), 'RENAME');
    const status = r.u32();
    wcc(r);
    wcc(r);
    return { status };
  }

  async link(file: Buffer, dir: Buffer, name: string): Promise<{ status: number; attrs: Fattr | null }> {
    const a = new XdrWriter(192).opaque(file).opaque(dir).string(name).finish();
    const r = body(await this.nfs(NfsProcMore.LINK, a), 'LINK');
    const status = r.u32();
    const attrs = postOpAttr(r);
    wcc(r);
    return { status, attrs };
  }

  async readdirplusPage(dir: Buffer, cookie: Buffer, cookieverf: Buffer, dircount = 8192, maxcount = 32768): Promise<ReaddirPlusPage> {
    const a = new XdrWriter(128).opaque(dir).fixed(cookie).fixed(cookieverf).u32(dircount).u32(maxcount).finish();
    const r = body(await this.nfs(NfsProcMore.READDIRPLUS, a), 'READDIRPLUS');
    const status = r.u32();
    const dirAttrs = postOpAttr(r);
    if (status !== 0) return { status, dirAttrs, cookieverf: ZERO8, entries: [], eof: false };
    const verf = Buffer.from(r.fixed(8));
    const entries: DirEntryPlus[] = [];
    while (r.bool()) {
      const fileid = r.u64();
      const name = r.string(255);
      const ck = Buffer.from(r.fixed(8));
      const attrs = postOpAttr(r);
      const fh = r.u32() === 1 ? Buffer.from(r.opaque(64)) : null;
      entries.push({ fileid, name, cookie: ck, attrs, fh });
    }
    return { status, dirAttrs, cookieverf: verf, entries, eof: r.bool() };
  }

  /**
   * Every entry of a directory except "." and "..", following cookies until eof. `call` wraps each
   * page request (e.g. a JUKEBOX retry); a non-OK page status throws.
   */
  async readdirplusAll(
    dir: Buffer,
    call: <T extends { status: number }>(f: () => Promise<T>) => Promise<T> = (f) => f(),
  ): Promise<DirEntryPlus[]> {
    const out: DirEntryPlus[] = [];
    let cookie: Buffer = ZERO8;
    let verf: Buffer = ZERO8;
    for (let pages = 0; pages < 10_000; pages++) {
      const page = await call(() => this.readdirplusPage(dir, cookie, verf));
      if (page.status !== 0) throw new Error(`READDIRPLUS failed: ${statusName(page.status)}`);
      for (const e of page.entries) if (e.name !== '.' && e.name !== '..') out.push(e);
      if (page.eof) return out;
      const last = page.entries[page.entries.length - 1];
      if (!last) throw new Error('READDIRPLUS returned an empty page without eof');
      cookie = last.cookie;
      verf = page.cookieverf;
    }
    throw new Error('READDIRPLUS did not reach eof within 10000 pages');
  }

  /** READs [0, size) in chunks of at most `chunk` bytes; throws on a status other than OK. */
  async readAll(fh: Buffer, size: number, chunk = 1024 * 1024): Promise<Buffer> {
    const out = Buffer.alloc(size);
    let pos = 0;
    while (pos < size) {
      const { status, data, eof } = await this.read(fh, pos, Math.min(chunk, size - pos));
      if (status !== 0) throw new Error(`READ at ${pos} failed: ${statusName(status)}`);
      data.copy(out, pos);
      pos += data.length;
      if (data.length === 0 || eof) break;
    }
    return pos === size ? out : out.subarray(0, pos);
  }
}

export interface JukeboxRetryOptions {
  /** Give up (throw) after this long in total (ms). */
  maxWaitMs?: number;
  /** Wait between attempts (ms). Linux waits NFS_JUKEBOX_RETRY_TIME, 5 s; tests wait less. */
  delayMs?: number;
  /** Called for each JUKEBOX answer. */
  onJukebox?: () => void;
}

/**
 * Sends a call again (a new xid each time, as a real client does) while it answers JUKEBOX.
 * Returns the first other answer; throws if JUKEBOX lasts past maxWaitMs.
 */
export async function retryJukebox<T extends { status: number }>(f: () => Promise<T>, opts: JukeboxRetryOptions = {}): Promise<T> {
  const deadline = Date.now() + (opts.maxWaitMs ?? 120_000);
  for (;;) {
    const res = await f();
    if (res.status !== NfsStatMore.JUKEBOX) return res;
    opts.onJukebox?.();
    if (Date.now() >= deadline) throw new Error(`still NFS3ERR_JUKEBOX after ${opts.maxWaitMs ?? 120_000} ms`);
    await new Promise((r) => setTimeout(r, opts.delayMs ?? 250));
  }
}

export interface FileTransferOptions {
  /** Bytes per WRITE (default 256 KiB). */
  chunk?: number;
  /** Per-call reply timeout (ms). */
  timeoutMs?: number;
}

/**
 * Creates `name` in the share `/export` as root and writes `data` as UNSTABLE WRITEs of `chunk`
 * bytes, then a COMMIT; returns once the COMMIT acknowledged all of it (asserts every status).
 */
export async function writeCommitted(port: number, name: string, data: Buffer, opts: FileTransferOptions = {}): Promise<void> {
  const chunk = opts.chunk ?? 256 * 1024;
  const c = await NfsOps.open(port, undefined, opts.timeoutMs);
  try {
    const made = await c.create(await c.mount('/export'), name);
    assert.ok(made.status === NfsStat.OK && made.fh, `CREATE ${name}: ${statusName(made.status)}`);
    const fh = made.fh;
    for (let off = 0; off < data.length; off += chunk) {
      const w = await c.writeV(fh, off, data.subarray(off, off + chunk), StableHow.UNSTABLE);
      assert.equal(w.status, NfsStat.OK, `WRITE ${name} at ${off}`);
    }
    assert.equal((await c.commit(fh)).status, NfsStat.OK, `COMMIT ${name}`);
  } finally {
    c.close();
  }
}

/** Reads `name` of the share `/export` back as root, after checking that it exists with `size` bytes. */
export async function readBack(port: number, name: string, size: number, opts: FileTransferOptions = {}): Promise<Buffer> {
  const c = await NfsOps.open(port, undefined, opts.timeoutMs);
  try {
    const found = await c.lookup(await c.mount('/export'), name);
    assert.equal(found.status, NfsStat.OK, name);
    assert.equal(found.attrs?.size, size, `${name}: size`);
    return await c.readAll(found.fh!, size);
  } finally {
    c.close();
  }
}
