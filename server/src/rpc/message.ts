// RFC 5531 §9 RPC message protocol: call bodies, accepted and rejected replies, and the
// authentication flavors DittoFS understands (§10: AUTH_NONE, AUTH_SYS).
import { DecodeError, DecodeErrorCode } from '../wire/errors.js';
import { XdrReader, XdrWriter } from './xdr.js';

export const MsgType = Object.freeze({ CALL: 0, REPLY: 1 } as const);
export const ReplyStat = Object.freeze({ MSG_ACCEPTED: 0, MSG_DENIED: 1 } as const);
export const AcceptStat = Object.freeze({
  SUCCESS: 0,
  PROG_UNAVAIL: 1,
  PROG_MISMATCH: 2,
  PROC_UNAVAIL: 3,
  GARBAGE_ARGS: 4,
  SYSTEM_ERR: 5,
} as const);
export type AcceptStat = (typeof AcceptStat)[keyof typeof AcceptStat];
export const RejectStat = Object.freeze({ RPC_MISMATCH: 0, AUTH_ERROR: 1 } as const);
export const AuthStat = Object.freeze({
  AUTH_OK: 0,
  AUTH_BADCRED: 1,
  AUTH_REJECTEDCRED: 2,
  AUTH_BADVERF: 3,
  AUTH_REJECTEDVERF: 4,
  AUTH_TOOWEAK: 5,
} as const);
export type AuthStat = (typeof AuthStat)[keyof typeof AuthStat];
export const AuthFlavor = Object.freeze({ AUTH_NONE: 0, AUTH_SYS: 1 } as const);

export const RPC_VERSION = 2;
/** RFC 5531 §8.2: opaque_auth bodies are at most 400 bytes. */
export const MAX_AUTH_BYTES = 400;
/** RFC 5531 §9.2: AUTH_SYS carries at most 16 supplementary gids and a 255-byte machine name. */
const MAX_AUTH_SYS_GIDS = 16;
const MAX_MACHINE_NAME = 255;

export interface AuthSys {
  stamp: number;
  machineName: string;
  uid: number;
  gid: number;
  gids: number[];
}

export interface RpcCall {
  xid: number;
  rpcVersion: number;
  prog: number;
  vers: number;
  proc: number;
  credFlavor: number;
  /** Raw credential body (a view into the record). */
  credBody: Buffer;
  verfFlavor: number;
  /** Decoded AUTH_SYS credential, or null for AUTH_NONE / unknown flavors. */
  authSys: AuthSys | null;
  /** Reader positioned at the procedure arguments. */
  args: XdrReader;
  /**
   * Set by a handler that lent the reply a buffer of its own (a pooled READ buffer): called once the
   * reply has been written out, or will not be, so the buffer may be reused. Never for replies the
   * duplicate request cache keeps.
   */
  afterReply?: () => void;
}

/** Decodes the xid only; used to answer garbage with the right xid when possible. */
export function peekXid(record: Buffer): number | null {
  return record.length >= 4 ? record.readUInt32BE(0) : null;
}

/**
 * Decodes a call header. Throws DecodeError for bytes that are not an RPC call at all (the caller
 * drops them); a call with a wrong RPC version or bad credentials decodes and is rejected by the
 * dispatcher with the proper reply.
 */
export function decodeCall(record: Buffer): RpcCall {
  const r = new XdrReader(record);
  const xid = r.u32();
  const mtype = r.u32();
  if (mtype !== MsgType.CALL) throw new DecodeError(DecodeErrorCode.Invalid, `expected an RPC CALL, got message type ${mtype}`);
  const rpcVersion = r.u32();
  const prog = r.u32();
  const vers = r.u32();
  const proc = r.u32();
  const credFlavor = r.u32();
  const credBody = r.opaque(MAX_AUTH_BYTES);
  const verfFlavor = r.u32();
  r.opaque(MAX_AUTH_BYTES);
  // The credential body is decoded by the dispatcher, so a bad one gets AUTH_BADCRED, not silence.
  return { xid, rpcVersion, prog, vers, proc, credFlavor, credBody, verfFlavor, authSys: null, args: r };
}

// RFC 5531 §10.2 authsys_parms
export function decodeAuthSys(body: Buffer): AuthSys {
  const r = new XdrReader(body);
  const stamp = r.u32();
  const machineName = r.string(MAX_MACHINE_NAME);
  const uid = r.u32();
  const gid = r.u32();
  const n = r.u32();
  if (n > MAX_AUTH_SYS_GIDS) throw new DecodeError(DecodeErrorCode.TooLarge, `AUTH_SYS with ${n} gids (max ${MAX_AUTH_SYS_GIDS})`);
  r.need(4 * n);
  const gids = new Array<number>(n);
  for (let i = 0; i < n; i++) gids[i] = r.u32();
  return { stamp, machineName, uid, gid, gids };
}

export function encodeAuthSys(a: AuthSys): Buffer {
  const w = new XdrWriter(64);
  w.u32(a.stamp).string(a.machineName).u32(a.uid).u32(a.gid).u32(a.gids.length);
  for (const g of a.gids) w.u32(g);
  return w.finish();
}

/** Writes the header of an accepted reply (null verifier) and the accept status. */
export function writeAcceptedHeader(w: XdrWriter, xid: number, stat: AcceptStat): XdrWriter {
  return w.u32(xid).u32(MsgType.REPLY).u32(ReplyStat.MSG_ACCEPTED).u32(AuthFlavor.AUTH_NONE).u32(0).u32(stat);
}

export function encodeProgMismatch(xid: number, low: number, high: number): Buffer {
  return writeAcceptedHeader(new XdrWriter(40), xid, AcceptStat.PROG_MISMATCH).u32(low).u32(high).finish();
}

export function encodeAcceptError(xid: number, stat: AcceptStat): Buffer {
  return writeAcceptedHeader(new XdrWriter(32), xid, stat).finish();
}

export function encodeRpcMismatch(xid: number): Buffer {
  return new XdrWriter(32)
    .u32(xid)
    .u32(MsgType.REPLY)
    .u32(ReplyStat.MSG_DENIED)
    .u32(RejectStat.RPC_MISMATCH)
    .u32(RPC_VERSION)
    .u32(RPC_VERSION)
    .finish();
}

export function encodeAuthError(xid: number, stat: AuthStat): Buffer {
  return new XdrWriter(24).u32(xid).u32(MsgType.REPLY).u32(ReplyStat.MSG_DENIED).u32(RejectStat.AUTH_ERROR).u32(stat).finish();
}

/** Encodes a call (for tests, the portmapper client side and benchmarks). */
export function encodeCall(
  xid: number,
  prog: number,
  vers: number,
  proc: number,
  cred: { flavor: number; body: Buffer },
  args: Buffer,
): Buffer {
  const w = new XdrWriter(64 + args.length);
  w.u32(xid).u32(MsgType.CALL).u32(RPC_VERSION).u32(prog).u32(vers).u32(proc);
  w.u32(cred.flavor).opaque(cred.body);
  w.u32(AuthFlavor.AUTH_NONE).u32(0);
  w.fixed(args);
  return w.finish();
}
