// Request decoders and response encoders of the SMB2 commands (MS-SMB2 2.2.3 - 2.2.40). A reader
// arrives positioned at the body (offset 64 of its message); buffer offsets count from the header.
// Responses are written after their header into one SmbWriter.
import { DecodeError, DecodeErrorCode } from '../wire/errors.js';
import type { Timespec } from '../vfs/types.js';
import { HEADER_SIZE, type SmbReader, type SmbWriter } from './codec.js';
import { Dialect } from './constants.js';

const invalid = (what: string): DecodeError => new DecodeError(DecodeErrorCode.Invalid, what);

function structureSize(r: SmbReader, expected: number, what: string): void {
  // The fixed part is StructureSize rounded down to even (the odd bit says "a buffer follows").
  r.need(expected & ~1, what);
  const size = r.u16();
  if (size !== expected) throw invalid(`${what}: StructureSize ${size}, expected ${expected}`);
}

// ---- 2.2.2 SMB2 ERROR Response ------------------------------------------------------------------

export function writeErrorBody(w: SmbWriter): void {
  // StructureSize 9, ErrorContextCount 0, Reserved, ByteCount 0, and the one ErrorData byte.
  w.u16(9).u8(0).u8(0).u32(0).u8(0);
}

// ---- 2.2.3 NEGOTIATE Request / 2.2.4 Response -----------------------------------------------------

/** MS-SMB2 2.2.3.1 a negotiate context (3.1.1): its type and data. */
export interface NegotiateContext {
  type: number;
  data: Buffer;
}

/** Negotiate contexts a request may carry at most (Windows sends 6 or 7). */
const MAX_NEGOTIATE_CONTEXTS = 32;

export interface NegotiateRequest {
  securityMode: number;
  capabilities: number;
  clientGuid: Buffer;
  dialects: number[];
  /** Only when 3.1.1 is among the dialects (otherwise those bytes are ClientStartTime). */
  contexts: NegotiateContext[];
}

export function decodeNegotiate(r: SmbReader): NegotiateRequest {
  structureSize(r, 36, 'NEGOTIATE');
  const count = r.u16();
  const securityMode = r.u16();
  r.skip(2);
  const capabilities = r.u32();
  const clientGuid = Buffer.from(r.bytes(16));
  const contextOffset = r.u32();
  const contextCount = r.u16();
  r.skip(2);
  if (count === 0) throw invalid('NEGOTIATE: no dialects');
  r.need(count * 2, 'NEGOTIATE dialects');
  const dialects: number[] = [];
  for (let i = 0; i < count; i++) dialects.push(r.u16());
  const contexts: NegotiateContext[] = [];
  if (dialects.includes(Dialect.SMB311) && contextCount > 0) {
    if (contextCount > MAX_NEGOTIATE_CONTEXTS) throw invalid(`NEGOTIATE: ${contextCount} negotiate contexts`);
    // Each context starts 8-byte aligned (from the header); offsets count from the header.
    let at = contextOffset;
    for (let i = 0; i < contextCount; i++) {
      at = Math.ceil(at / 8) * 8;
      const head = r.field(at, 8, 'NEGOTIATE context');
      const length = head.readUInt16LE(2);
      contexts.push({ type: head.readUInt16LE(0), data: r.field(at + 8, length, 'NEGOTIATE context data') });
      at += 8 + length;
    }
  }
  return { securityMode, capabilities, clientGuid, dialects, contexts };
}

export interface NegotiateResponse {
  securityMode: number;
  dialect: number;
  serverGuid: Buffer;
  capabilities: number;
  maxTransactSize: number;
  maxReadSize: number;
  maxWriteSize: number;
  systemTime: Timespec;
  securityBuffer: Buffer;
  /** 3.1.1 only: the negotiate contexts of the response. */
  contexts?: readonly NegotiateContext[];
}

export function writeNegotiateResponse(w: SmbWriter, m: NegotiateResponse): void {
  const contexts = m.contexts ?? [];
  w.u16(65).u16(m.securityMode).u16(m.dialect).u16(contexts.length).bytes(m.serverGuid).u32(m.capabilities);
  w.u32(m.maxTransactSize).u32(m.maxReadSize).u32(m.maxWriteSize).filetime(m.systemTime).filetime(null);
  w.u16(HEADER_SIZE + 64).u16(m.securityBuffer.length);
  const contextOffsetAt = w.pos;
  w.u32(0);
  w.bytes(m.securityBuffer);
  if (contexts.length === 0) return;
  // The body starts at header offset 64: aligning it to 8 aligns the offset from the header too.
  w.align(8);
  w.patchU32(contextOffsetAt, HEADER_SIZE + w.pos);
  contexts.forEach((c, i) => {
    w.u16(c.type).u16(c.data.length).u32(0).bytes(c.data);
    if (i < contexts.length - 1) w.align(8);
  });
}

// ---- 2.2.5 SESSION_SETUP Request / 2.2.6 Response ---------------------------------------------------

export interface SessionSetupRequest {
  flags: number;
  securityMode: number;
  capabilities: number;
  securityBuffer: Buffer;
  previousSessionId: number;
}

export function decodeSessionSetup(r: SmbReader): SessionSetupRequest {
  structureSize(r, 25, 'SESSION_SETUP');
  const flags = r.u8();
  const securityMode = r.u8();
  const capabilities = r.u32();
  r.skip(4);
  const off = r.u16();
  const len = r.u16();
  const prev = r.u64Parts();
  const securityBuffer = r.field(off, len, 'SESSION_SETUP security buffer');
  return { flags, securityMode, capabilities, securityBuffer, previousSessionId: prev.hi > 0x1fffff ? 0 : prev.hi * 2 ** 32 + prev.lo };
}

export function writeSessionSetupResponse(w: SmbWriter, sessionFlags: number, token: Buffer): void {
  w.u16(9)
    .u16(sessionFlags)
    .u16(HEADER_SIZE + 8)
    .u16(token.length)
    .bytes(token);
}

// ---- 2.2.7/2.2.8 LOGOFF, 2.2.11/2.2.12 TREE_DISCONNECT, 2.2.28/2.2.29 ECHO, 2.2.30 CANCEL ------------

/** The 4-byte bodies (StructureSize 4, Reserved). */
export function decodeEmpty(r: SmbReader, what: string): void {
  structureSize(r, 4, what);
}

export function writeEmptyBody(w: SmbWriter): void {
  w.u16(4).u16(0);
}

// ---- 2.2.9 TREE_CONNECT Request / 2.2.10 Response ---------------------------------------------------

export function decodeTreeConnect(r: SmbReader): { path: Buffer } {
  structureSize(r, 9, 'TREE_CONNECT');
  r.skip(2);
  const off = r.u16();
  const len = r.u16();
  return { path: r.field(off, len, 'TREE_CONNECT path') };
}

export function writeTreeConnectResponse(w: SmbWriter, shareType: number, shareFlags: number, maximalAccess: number): void {
  w.u16(16).u8(shareType).u8(0).u32(shareFlags).u32(0).u32(maximalAccess);
}

// ---- 2.2.13 CREATE Request / 2.2.14 Response -----------------------------------------------------------

export interface CreateContext {
  /** The 4-byte tag (`QFid`, `MxAc`, ...) as ASCII; longer names (GUIDs) as hex. */
  name: string;
  data: Buffer;
}

export interface CreateRequest {
  requestedOplockLevel: number;
  impersonationLevel: number;
  desiredAccess: number;
  fileAttributes: number;
  shareAccess: number;
  createDisposition: number;
  createOptions: number;
  name: Buffer;
  contexts: CreateContext[];
}

export function decodeCreate(r: SmbReader): CreateRequest {
  structureSize(r, 57, 'CREATE');
  r.skip(1);
  const requestedOplockLevel = r.u8();
  const impersonationLevel = r.u32();
  r.skip(16);
  const desiredAccess = r.u32();
  const fileAttributes = r.u32();
  const shareAccess = r.u32();
  const createDisposition = r.u32();
  const createOptions = r.u32();
  const nameOff = r.u16();
  const nameLen = r.u16();
  const ctxOff = r.u32();
  const ctxLen = r.u32();
  // Copied out of the frame: a CREATE that goes async on a break wait reads its name and contexts
  // (the lease key, SecD, ExtA, durable GUIDs) after handleFrame resolved and its frame, when large,
  // went back to the pool for another connection's WRITE; leases and durable handles keep them longer.
  const name = Buffer.from(r.field(nameOff, nameLen, 'CREATE name'));
  const contexts = ctxLen === 0 ? [] : decodeCreateContexts(Buffer.from(r.field(ctxOff, ctxLen, 'CREATE contexts')));
  // A durable reconnect ignores the other fields (MS-SMB2 3.3.5.9.7).
  if (createDisposition > 5 && !contexts.some((c) => c.name === 'DHnC' || c.name === 'DH2C'))
    throw invalid('CREATE: CreateDisposition out of range');
  return {
    requestedOplockLevel,
    impersonationLevel,
    desiredAccess,
    fileAttributes,
    shareAccess,
    createDisposition,
    createOptions,
    name,
    contexts,
  };
}

/** 2.2.13.2 SMB2_CREATE_CONTEXT chain (offsets relative to each context). At most 64 contexts. */
export function decodeCreateContexts(b: Buffer): CreateContext[] {
  const out: CreateContext[] = [];
  let at = 0;
  for (let n = 0; n < 64; n++) {
    if (b.length - at < 16) throw invalid('create context: truncated');
    const next = b.readUInt32LE(at);
    const nameOff = b.readUInt16LE(at + 4);
    const nameLen = b.readUInt16LE(at + 6);
    const dataOff = b.readUInt16LE(at + 10);
    const dataLen = b.readUInt32LE(at + 12);
    const end = next === 0 ? b.length : at + next;
    if (next !== 0 && (next < 16 || end > b.length)) throw invalid('create context: bad Next');
    if (nameLen === 0 || at + nameOff + nameLen > end) throw invalid('create context: name outside the context');
    if (dataLen > 0 && at + dataOff + dataLen > end) throw invalid('create context: data outside the context');
    const nameBytes = b.subarray(at + nameOff, at + nameOff + nameLen);
    const name = nameLen === 4 ? nameBytes.toString('latin1') : nameBytes.toString('hex');
    out.push({ name, data: dataLen > 0 ? b.subarray(at + dataOff, at + dataOff + dataLen) : Buffer.alloc(0) });
    if (next === 0) return out;
    at = end;
  }
  throw invalid('create context: too many contexts');
}

/** Encodes response create contexts (2.2.13.2), each 8-byte aligned; names are 4 ASCII bytes. */
export function encodeCreateContexts(list: CreateContext[]): Buffer {
  const parts: Buffer[] = [];
  list.forEach((c, i) => {
    // Header 16, name 4 padded to 8, then data, padded to 8 unless last.
    const dataOff = 24;
    const len = dataOff + c.data.length;
    const padded = i === list.length - 1 ? len : Math.ceil(len / 8) * 8;
    const b = Buffer.alloc(padded);
    b.writeUInt32LE(i === list.length - 1 ? 0 : padded, 0);
    b.writeUInt16LE(16, 4);
    b.writeUInt16LE(4, 6);
    b.writeUInt16LE(dataOff, 10);
    b.writeUInt32LE(c.data.length, 12);
    b.write(c.name, 16, 4, 'latin1');
    c.data.copy(b, dataOff);
    parts.push(b);
  });
  return Buffer.concat(parts);
}

/** What CREATE, CLOSE (POSTQUERY) and the network-open class report about a file. */
export interface FileTimesAndSizes {
  creationTime: Timespec;
  lastAccessTime: Timespec;
  lastWriteTime: Timespec;
  changeTime: Timespec;
  allocationSize: number;
  endOfFile: number;
  fileAttributes: number;
}

export function writeCreateResponse(
  w: SmbWriter,
  m: { oplockLevel: number; createAction: number; info: FileTimesAndSizes; fileId: Buffer; contexts: Buffer },
): void {
  const i = m.info;
  w.u16(89).u8(m.oplockLevel).u8(0).u32(m.createAction);
  w.filetime(i.creationTime).filetime(i.lastAccessTime).filetime(i.lastWriteTime).filetime(i.changeTime);
  w.u64(i.allocationSize).u64(i.endOfFile).u32(i.fileAttributes).u32(0).bytes(m.fileId);
  if (m.contexts.length === 0) {
    w.u32(0).u32(0);
  } else {
    w.u32(HEADER_SIZE + 88)
      .u32(m.contexts.length)
      .bytes(m.contexts);
  }
}

// ---- 2.2.15 CLOSE Request / 2.2.16 Response -----------------------------------------------------------

export function decodeClose(r: SmbReader): { flags: number; fileId: Buffer } {
  structureSize(r, 24, 'CLOSE');
  const flags = r.u16();
  r.skip(4);
  return { flags, fileId: r.bytes(16) };
}

export function writeCloseResponse(w: SmbWriter, flags: number, info: FileTimesAndSizes | null): void {
  w.u16(60).u16(flags).u32(0);
  if (info === null) {
    w.zeros(52);
    return;
  }
  w.filetime(info.creationTime).filetime(info.lastAccessTime).filetime(info.lastWriteTime).filetime(info.changeTime);
  w.u64(info.allocationSize).u64(info.endOfFile).u32(info.fileAttributes);
}

// ---- 2.2.17 FLUSH Request / 2.2.18 Response -------------------------------------------------------------

export function decodeFlush(r: SmbReader): { fileId: Buffer } {
  structureSize(r, 24, 'FLUSH');
  r.skip(6);
  return { fileId: r.bytes(16) };
}

// ---- 2.2.19 READ Request / 2.2.20 Response ----------------------------------------------------------------

export interface ReadRequest {
  flags: number;
  length: number;
  offset: number;
  fileId: Buffer;
  minimumCount: number;
}

export function decodeRead(r: SmbReader): ReadRequest {
  structureSize(r, 49, 'READ');
  r.skip(1);
  const flags = r.u8();
  const length = r.u32();
  const offset = r.u64();
  const fileId = r.bytes(16);
  const minimumCount = r.u32();
  return { flags, length, offset, fileId, minimumCount };
}

/** The READ response body without its data (which follows at offset 80 of the message). */
export const READ_RESPONSE_SIZE = 16;
export function writeReadResponse(w: SmbWriter, dataLength: number): void {
  w.u16(17)
    .u8(HEADER_SIZE + READ_RESPONSE_SIZE)
    .u8(0)
    .u32(dataLength)
    .u32(0)
    .u32(0);
}

// ---- 2.2.21 WRITE Request / 2.2.22 Response ------------------------------------------------------------------

export interface WriteRequest {
  /** -1 for the all-ones offset (append at end of file). */
  offset: number;
  fileId: Buffer;
  flags: number;
  data: Buffer;
}

export function decodeWrite(r: SmbReader): WriteRequest {
  structureSize(r, 49, 'WRITE');
  const dataOff = r.u16();
  const length = r.u32();
  const off = r.u64Parts();
  const fileId = r.bytes(16);
  r.skip(4 + 4 + 2 + 2);
  const flags = r.u32();
  let offset: number;
  if (off.lo === 0xffffffff && off.hi === 0xffffffff) offset = -1;
  else if (off.hi > 0x1fffff) throw new DecodeError(DecodeErrorCode.TooLarge, 'WRITE offset above 2^53');
  else offset = off.hi * 2 ** 32 + off.lo;
  return { offset, fileId, flags, data: r.field(dataOff, length, 'WRITE data') };
}

export function writeWriteResponse(w: SmbWriter, count: number): void {
  w.u16(17).u16(0).u32(count).u32(0).u16(0).u16(0);
}

// ---- 2.2.31 IOCTL Request / 2.2.32 Response ------------------------------------------------------------------

export interface IoctlRequest {
  ctlCode: number;
  fileId: Buffer;
  input: Buffer;
  maxOutputResponse: number;
  flags: number;
}

export function decodeIoctl(r: SmbReader): IoctlRequest {
  structureSize(r, 57, 'IOCTL');
  r.skip(2);
  const ctlCode = r.u32();
  const fileId = r.bytes(16);
  const inOff = r.u32();
  const inLen = r.u32();
  r.skip(4 + 4 + 4);
  const maxOutputResponse = r.u32();
  const flags = r.u32();
  return { ctlCode, fileId, input: r.field(inOff, inLen, 'IOCTL input'), maxOutputResponse, flags };
}

export function writeIoctlResponse(w: SmbWriter, ctlCode: number, fileId: Buffer, output: Buffer): void {
  const at = HEADER_SIZE + 48;
  w.u16(49).u16(0).u32(ctlCode).bytes(fileId).u32(at).u32(0).u32(at).u32(output.length).u32(0).u32(0).bytes(output);
}

// ---- 2.2.33 QUERY_DIRECTORY Request / 2.2.34 Response -----------------------------------------------------------

export interface QueryDirectoryRequest {
  infoClass: number;
  flags: number;
  fileIndex: number;
  fileId: Buffer;
  pattern: Buffer;
  outputBufferLength: number;
}

export function decodeQueryDirectory(r: SmbReader): QueryDirectoryRequest {
  structureSize(r, 33, 'QUERY_DIRECTORY');
  const infoClass = r.u8();
  const flags = r.u8();
  const fileIndex = r.u32();
  const fileId = r.bytes(16);
  const nameOff = r.u16();
  const nameLen = r.u16();
  const outputBufferLength = r.u32();
  return { infoClass, flags, fileIndex, fileId, pattern: r.field(nameOff, nameLen, 'QUERY_DIRECTORY pattern'), outputBufferLength };
}

/** QUERY_DIRECTORY and QUERY_INFO responses: StructureSize 9, the output at offset 72. */
export function writeOutputResponse(w: SmbWriter, output: Buffer): void {
  w.u16(9)
    .u16(output.length === 0 ? 0 : HEADER_SIZE + 8)
    .u32(output.length)
    .bytes(output);
}

// ---- 2.2.37 QUERY_INFO Request ------------------------------------------------------------------------------------

export interface QueryInfoRequest {
  infoType: number;
  infoClass: number;
  outputBufferLength: number;
  input: Buffer;
  additionalInformation: number;
  flags: number;
  fileId: Buffer;
}

export function decodeQueryInfo(r: SmbReader): QueryInfoRequest {
  structureSize(r, 41, 'QUERY_INFO');
  const infoType = r.u8();
  const infoClass = r.u8();
  const outputBufferLength = r.u32();
  const inOff = r.u16();
  r.skip(2);
  const inLen = r.u32();
  const additionalInformation = r.u32();
  const flags = r.u32();
  const fileId = r.bytes(16);
  return {
    infoType,
    infoClass,
    outputBufferLength,
    input: r.field(inOff, inLen, 'QUERY_INFO input'),
    additionalInformation,
    flags,
    fileId,
  };
}

// ---- 2.2.39 SET_INFO Request / 2.2.40 Response --------------------------------------------------------------------

export interface SetInfoRequest {
  infoType: number;
  infoClass: number;
  buffer: Buffer;
  additionalInformation: number;
  fileId: Buffer;
}

export function decodeSetInfo(r: SmbReader): SetInfoRequest {
  structureSize(r, 33, 'SET_INFO');
  const infoType = r.u8();
  const infoClass = r.u8();
  const len = r.u32();
  const off = r.u16();
  r.skip(2);
  const additionalInformation = r.u32();
  const fileId = r.bytes(16);
  return { infoType, infoClass, buffer: r.field(off, len, 'SET_INFO buffer'), additionalInformation, fileId };
}

export function writeSetInfoResponse(w: SmbWriter): void {
  w.u16(2);
}

// ---- 2.2.14.2.9 QFid and 2.2.14.2.5 MxAc create context responses ------------------------------------------------

export function qfidResponse(inodeId: number, volumeId: number): Buffer {
  const b = Buffer.alloc(32);
  b.writeUInt32LE((inodeId % 2 ** 32) >>> 0, 0);
  b.writeUInt32LE(Math.floor(inodeId / 2 ** 32), 4);
  b.writeUInt32LE(volumeId >>> 0, 8);
  return b;
}

export function mxacResponse(maximalAccess: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(0, 0);
  b.writeUInt32LE(maximalAccess >>> 0, 4);
  return b;
}

// ---- 2.2.31.4 VALIDATE_NEGOTIATE_INFO Request / 2.2.32.6 Response ----------------------------------------------------

export function decodeValidateNegotiate(b: Buffer): { capabilities: number; guid: Buffer; securityMode: number; dialects: number[] } {
  if (b.length < 24) throw invalid('VALIDATE_NEGOTIATE_INFO: truncated');
  const count = b.readUInt16LE(22);
  if (b.length < 24 + count * 2) throw invalid('VALIDATE_NEGOTIATE_INFO: truncated dialects');
  const dialects: number[] = [];
  for (let i = 0; i < count; i++) dialects.push(b.readUInt16LE(24 + i * 2));
  return { capabilities: b.readUInt32LE(0), guid: b.subarray(4, 20), securityMode: b.readUInt16LE(20), dialects };
}

export function encodeValidateNegotiateResponse(capabilities: number, guid: Buffer, securityMode: number, dialect: number): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(capabilities >>> 0, 0);
  guid.copy(b, 4);
  b.writeUInt16LE(securityMode, 20);
  b.writeUInt16LE(dialect, 22);
  return b;
}
