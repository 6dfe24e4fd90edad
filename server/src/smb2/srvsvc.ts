// The srvsvc named pipe on IPC$, just enough for share browsing (`smbclient -L`, Explorer):
// DCE/RPC connection-oriented PDUs (C706 chapter 12, MS-RPCE 2.2.2) carrying bind/bind_ack and
// NetrShareEnum (MS-SRVS 3.1.4.8, opnum 15) at info levels 0 and 1, NDR-encoded (C706 chapter 14).
// Anything else gets a DCE/RPC fault; a malformed PDU a DecodeError.
import { DecodeError, DecodeErrorCode } from '../wire/errors.js';
import { SmbWriter, utf16 } from './codec.js';

const PTYPE = Object.freeze({ REQUEST: 0, RESPONSE: 2, FAULT: 3, BIND: 11, BIND_ACK: 12, BIND_NAK: 13 } as const);
const PFC_FIRST_FRAG = 0x01;
const PFC_LAST_FRAG = 0x02;
const PFC_OBJECT_UUID = 0x80;
/** nca_s_op_rng_error: the operation number is not served. */
const NCA_S_OP_RNG_ERROR = 0x1c010002;
const NCA_S_PROTO_ERROR = 0x1c01000b;
const WERR_UNKNOWN_LEVEL = 0x0000007c;

/** NDR 2.0 transfer syntax 8a885d04-1ceb-11c9-9fe8-08002b104860 v2, in wire order. */
const NDR_SYNTAX = Buffer.from('045d888aeb1cc9119fe808002b10486002000000', 'hex');
/** Bind time feature negotiation syntaxes start with 6cb71c2c-9812-4540 (MS-RPCE 3.3.1.5.3). */
const BTFN_PREFIX = Buffer.from('2c1cb76c12984045', 'hex');

const invalid = (what: string): DecodeError => new DecodeError(DecodeErrorCode.Invalid, `srvsvc: ${what}`);

export interface ShareEntry {
  name: string;
  /** STYPE_DISKTREE 0, STYPE_IPC | STYPE_SPECIAL 0x80000003. */
  type: number;
  comment: string;
}

/** One open of the pipe: requests written are answered into `output`, which READs drain. */
export class SrvsvcPipe {
  private output: Buffer = Buffer.alloc(0);
  private bound = false;

  constructor(private readonly shares: () => ShareEntry[]) {}

  /** Bytes waiting to be read. */
  get pending(): number {
    return this.output.length;
  }

  /** Takes up to `max` bytes of the pending output. */
  read(max: number): Buffer {
    const n = Math.min(max, this.output.length);
    const out = this.output.subarray(0, n);
    this.output = this.output.subarray(n);
    return out;
  }

  /** Feeds one written PDU (a WRITE or the input of FSCTL_PIPE_TRANSCEIVE). */
  write(pdu: Buffer): void {
    if (this.output.length > 1024 * 1024) throw invalid('replies not read');
    this.output = Buffer.concat([this.output, this.handle(pdu)]);
  }

  private handle(pdu: Buffer): Buffer {
    if (pdu.length < 16) throw invalid('PDU shorter than its header');
    if (pdu[0] !== 5 || pdu[1] !== 0) throw invalid(`RPC version ${pdu[0]}.${pdu[1]}`);
    if (pdu[4] !== 0x10) throw invalid('only little-endian NDR is served');
    const ptype = pdu[2]!;
    const flags = pdu[3]!;
    const fragLength = pdu.readUInt16LE(8);
    const authLength = pdu.readUInt16LE(10);
    const callId = pdu.readUInt32LE(12);
    if (fragLength !== pdu.length || authLength !== 0) throw invalid('fragment length or authentication not supported');
    if ((flags & (PFC_FIRST_FRAG | PFC_LAST_FRAG)) !== (PFC_FIRST_FRAG | PFC_LAST_FRAG) && ptype === PTYPE.REQUEST)
      return fault(callId, NCA_S_PROTO_ERROR);
    switch (ptype) {
      case PTYPE.BIND:
        return this.bind(pdu, callId);
      case PTYPE.REQUEST:
        if (!this.bound) return fault(callId, NCA_S_PROTO_ERROR);
        return this.request(pdu, flags, callId);
      default:
        return fault(callId, NCA_S_PROTO_ERROR);
    }
  }

  // C706 12.6.4.3 bind / 12.6.4.4 bind_ack
  private bind(pdu: Buffer, callId: number): Buffer {
    if (pdu.length < 28) throw invalid('bind too short');
    const maxXmit = pdu.readUInt16LE(16);
    const maxRecv = pdu.readUInt16LE(18);
    const count = pdu[24]!;
    let at = 28;
    const results: Buffer[] = [];
    for (let i = 0; i < count; i++) {
      if (at + 24 > pdu.length) throw invalid('bind context truncated');
      const nSyntaxes = pdu[at + 2]!;
      const abstract = pdu.subarray(at + 4, at + 24);
      at += 24;
      let accepted: Buffer | null = null;
      let btfn = false;
      for (let j = 0; j < nSyntaxes; j++) {
        if (at + 20 > pdu.length) throw invalid('transfer syntax truncated');
        const ts = pdu.subarray(at, at + 20);
        if (ts.equals(NDR_SYNTAX) && isSrvsvc(abstract)) accepted = ts;
        if (ts.subarray(0, 8).equals(BTFN_PREFIX)) btfn = true;
        at += 20;
      }
      const r = Buffer.alloc(24);
      if (accepted) {
        accepted.copy(r, 4);
      } else if (btfn) {
        r.writeUInt16LE(3, 0); // negotiate_ack, no features
      } else {
        r.writeUInt16LE(2, 0); // provider_rejection
        r.writeUInt16LE(2, 2); // proposed transfer syntaxes not supported
      }
      results.push(r);
    }
    this.bound = results.some((r) => r.readUInt16LE(0) === 0);
    const w = new SmbWriter(128);
    w.u16(Math.min(maxXmit, 4280)).u16(Math.min(maxRecv, 4280)).u32(0x12345);
    const port = Buffer.from('\\PIPE\\srvsvc\0', 'latin1');
    w.u16(port.length).bytes(port);
    // The result list starts 4-byte aligned relative to the PDU (whose header is 16 bytes).
    w.align(4);
    w.u8(results.length).u8(0).u16(0);
    for (const r of results) w.bytes(r);
    return pduOf(PTYPE.BIND_ACK, callId, w.finish());
  }

  // C706 12.6.4.9 request
  private request(pdu: Buffer, flags: number, callId: number): Buffer {
    if (pdu.length < 24) throw invalid('request too short');
    const contextId = pdu.readUInt16LE(20);
    const opnum = pdu.readUInt16LE(22);
    const stub = pdu.subarray((flags & PFC_OBJECT_UUID) !== 0 ? 40 : 24);
    if (opnum !== 15) return fault(callId, NCA_S_OP_RNG_ERROR, contextId);
    return response(callId, contextId, this.netrShareEnum(stub));
  }

  /** MS-SRVS 3.1.4.8 NetrShareEnum: [in] ServerName, InfoStruct (level), PreferedMaximumLength, ResumeHandle. */
  private netrShareEnum(stub: Buffer): Buffer {
    const r = new NdrReader(stub);
    if (r.u32() !== 0) {
      // [string, unique] wchar_t* ServerName: conformant varying string.
      r.u32();
      r.u32();
      const actual = r.u32();
      r.skip(actual * 2);
      r.align(4);
    }
    const level = r.u32();
    const w = new SmbWriter(512);
    if (level !== 0 && level !== 1) {
      // InfoStruct echoed with a null container, no entries, null resume handle, the error.
      w.u32(level).u32(level).u32(0).u32(0).u32(0).u32(WERR_UNKNOWN_LEVEL);
      return w.finish();
    }
    const shares = this.shares();
    let ref = 0x20000;
    w.u32(level).u32(level).u32(ref++); // InfoStruct: level, union switch, container pointer
    w.u32(shares.length).u32(shares.length === 0 ? 0 : ref++); // EntriesRead, Buffer pointer
    if (shares.length > 0) {
      w.u32(shares.length); // conformant array max count
      for (const s of shares) {
        w.u32(ref++);
        if (level === 1) w.u32(s.type).u32(ref++);
      }
      for (const s of shares) {
        ndrString(w, s.name);
        if (level === 1) ndrString(w, s.comment);
      }
    }
    w.u32(shares.length); // TotalEntries
    w.u32(ref++).u32(0); // ResumeHandle
    w.u32(0); // WERR_OK
    return w.finish();
  }
}

function isSrvsvc(abstract: Buffer): boolean {
  // 4b324fc8-1670-01d3-1278-5a47bf6ee188 version 3.0
  return abstract.equals(Buffer.from('c84f324b7016d30112785a47bf6ee18803000000', 'hex'));
}

/** An NDR conformant varying UTF-16 string with its NUL, padded to 4 bytes. */
function ndrString(w: SmbWriter, s: string): void {
  const chars = s.length + 1;
  w.align(4);
  w.u32(chars).u32(0).u32(chars).bytes(utf16(s)).u16(0);
  w.align(4);
}

function pduOf(ptype: number, callId: number, body: Buffer): Buffer {
  const b = Buffer.alloc(16 + body.length);
  b[0] = 5;
  b[1] = 0;
  b[2] = ptype;
  b[3] = PFC_FIRST_FRAG | PFC_LAST_FRAG;
  b[4] = 0x10;
  b.writeUInt16LE(b.length, 8);
  b.writeUInt16LE(0, 10);
  b.writeUInt32LE(callId, 12);
  body.copy(b, 16);
  return b;
}

function response(callId: number, contextId: number, stub: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32LE(stub.length, 0);
  head.writeUInt16LE(contextId, 4);
  return pduOf(PTYPE.RESPONSE, callId, Buffer.concat([head, stub]));
}

function fault(callId: number, status: number, contextId = 0): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(16, 0);
  b.writeUInt16LE(contextId, 4);
  b.writeUInt32LE(status, 8);
  return pduOf(PTYPE.FAULT, callId, b);
}

/** A little-endian NDR cursor; offsets align relative to the stub start. */
class NdrReader {
  private pos = 0;
  constructor(private readonly buf: Buffer) {}
  u32(): number {
    if (this.pos + 4 > this.buf.length) throw invalid('NDR stub truncated');
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  skip(n: number): void {
    if (this.pos + n > this.buf.length) throw invalid('NDR stub truncated');
    this.pos += n;
  }
  align(n: number): void {
    this.pos = Math.ceil(this.pos / n) * n;
  }
}
