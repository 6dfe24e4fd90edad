// MS-NLMP 2.2 NTLMSSP messages: NEGOTIATE_MESSAGE and AUTHENTICATE_MESSAGE decoded (every field's
// offset and length checked against the message), CHALLENGE_MESSAGE encoded, AV_PAIR lists both ways.
// Decoders throw AuthTokenError and nothing else; they copy nothing they do not return.
import { AuthTokenError } from './types.js';

export const NTLMSSP_SIGNATURE = Buffer.from('NTLMSSP\0', 'latin1');

export const NTLM_MESSAGE = Object.freeze({ NEGOTIATE: 1, CHALLENGE: 2, AUTHENTICATE: 3 } as const);

/** MS-NLMP 2.2.2.5 NEGOTIATE flags. */
export const NTLMSSP = Object.freeze({
  NEGOTIATE_UNICODE: 0x00000001,
  NEGOTIATE_OEM: 0x00000002,
  REQUEST_TARGET: 0x00000004,
  NEGOTIATE_SIGN: 0x00000010,
  NEGOTIATE_SEAL: 0x00000020,
  NEGOTIATE_DATAGRAM: 0x00000040,
  NEGOTIATE_LM_KEY: 0x00000080,
  NEGOTIATE_NTLM: 0x00000200,
  NEGOTIATE_ANONYMOUS: 0x00000800,
  NEGOTIATE_OEM_DOMAIN_SUPPLIED: 0x00001000,
  NEGOTIATE_OEM_WORKSTATION_SUPPLIED: 0x00002000,
  NEGOTIATE_ALWAYS_SIGN: 0x00008000,
  TARGET_TYPE_DOMAIN: 0x00010000,
  TARGET_TYPE_SERVER: 0x00020000,
  NEGOTIATE_EXTENDED_SESSIONSECURITY: 0x00080000,
  NEGOTIATE_IDENTIFY: 0x00100000,
  REQUEST_NON_NT_SESSION_KEY: 0x00400000,
  NEGOTIATE_TARGET_INFO: 0x00800000,
  NEGOTIATE_VERSION: 0x02000000,
  NEGOTIATE_128: 0x20000000,
  NEGOTIATE_KEY_EXCH: 0x40000000,
  NEGOTIATE_56: 0x80000000,
} as const);

/** MS-NLMP 2.2.2.1 AV_PAIR ids. */
export const MSV_AV = Object.freeze({
  EOL: 0,
  NB_COMPUTER_NAME: 1,
  NB_DOMAIN_NAME: 2,
  DNS_COMPUTER_NAME: 3,
  DNS_DOMAIN_NAME: 4,
  DNS_TREE_NAME: 5,
  FLAGS: 6,
  TIMESTAMP: 7,
  SINGLE_HOST: 8,
  TARGET_NAME: 9,
  CHANNEL_BINDINGS: 10,
} as const);

/** MsvAvFlags bit: the AUTHENTICATE_MESSAGE carries a MIC. */
export const MSV_AV_FLAG_MIC_PRESENT = 0x00000002;

/**
 * Security buffers bigger than this are refused before parsing. Real ones are a few hundred bytes;
 * an AUTHENTICATE with 256-character names and a Windows client's AV pairs stays under 3 KiB.
 */
export const MAX_NTLM_MESSAGE = 8 * 1024;

/**
 * A NEGOTIATE is 40 bytes plus optional OEM domain and workstation names. It is kept for the whole
 * exchange (the MIC covers it), so it gets a tighter limit than the other messages.
 */
export const MAX_NTLM_NEGOTIATE = 1024;

export interface NtlmNegotiate {
  flags: number;
  /** The whole message as received: the MIC covers it. */
  raw: Buffer;
}

export interface NtlmAuthenticate {
  flags: number;
  lmResponse: Buffer;
  ntResponse: Buffer;
  domain: string;
  user: string;
  workstation: string;
  encryptedRandomSessionKey: Buffer;
  /** Byte offset of the 16-byte MIC field when the message is long enough to hold one, else -1. */
  micOffset: number;
  /** The whole message as received. */
  raw: Buffer;
}

export interface AvPair {
  id: number;
  value: Buffer;
}

function fail(message: string): never {
  throw new AuthTokenError(message);
}

/** The message type of an NTLMSSP message, after checking the signature. */
export function ntlmMessageType(buf: Buffer): number {
  if (buf.length > MAX_NTLM_MESSAGE) fail(`NTLMSSP message of ${buf.length} bytes is larger than ${MAX_NTLM_MESSAGE}`);
  if (buf.length < 12 || !buf.subarray(0, 8).equals(NTLMSSP_SIGNATURE)) fail('not an NTLMSSP message (bad signature)');
  return buf.readUInt32LE(8);
}

/** A Len/MaxLen/BufferOffset field at `at`; the payload it names must lie inside the message. */
function field(buf: Buffer, at: number, name: string, minOffset: number): Buffer {
  if (at + 8 > buf.length) fail(`NTLMSSP ${name} field is cut off`);
  const len = buf.readUInt16LE(at);
  if (len === 0) return Buffer.alloc(0);
  const offset = buf.readUInt32LE(at + 4);
  if (offset < minOffset || offset > buf.length || len > buf.length - offset)
    fail(`NTLMSSP ${name} (offset ${offset}, length ${len}) lies outside the ${buf.length}-byte message`);
  return buf.subarray(offset, offset + len);
}

function text(b: Buffer, unicode: boolean, name: string): string {
  if (!unicode) return b.toString('latin1');
  if (b.length % 2 !== 0) fail(`NTLMSSP ${name} has an odd length in UTF-16`);
  return b.toString('utf16le');
}

// MS-NLMP 2.2.1.1 NEGOTIATE_MESSAGE. Only the flags matter to the server; the optional domain and
// workstation fields (and the Version) are not needed, and some clients send 16-byte messages.
export function decodeNegotiate(buf: Buffer): NtlmNegotiate {
  const type = ntlmMessageType(buf);
  if (type !== NTLM_MESSAGE.NEGOTIATE) fail(`expected an NTLMSSP NEGOTIATE message, got type ${type}`);
  if (buf.length > MAX_NTLM_NEGOTIATE) fail(`NTLMSSP NEGOTIATE message of ${buf.length} bytes is larger than ${MAX_NTLM_NEGOTIATE}`);
  if (buf.length < 16) fail('NTLMSSP NEGOTIATE message is cut off before its flags');
  const flags = buf.readUInt32LE(12);
  if (buf.length >= 32) {
    // Validate the fields a client declared, as a malformed one tells us the message is corrupt.
    if (flags & NTLMSSP.NEGOTIATE_OEM_DOMAIN_SUPPLIED) field(buf, 16, 'DomainName', 32);
    if (flags & NTLMSSP.NEGOTIATE_OEM_WORKSTATION_SUPPLIED) field(buf, 24, 'Workstation', 32);
  }
  return { flags, raw: buf };
}

// MS-NLMP 2.2.1.3 AUTHENTICATE_MESSAGE: 64 fixed bytes, then Version (8) and MIC (16) when present.
const AUTH_FIXED = 64;
const AUTH_MIC_OFFSET = 72;

export function decodeAuthenticate(buf: Buffer): NtlmAuthenticate {
  const type = ntlmMessageType(buf);
  if (type !== NTLM_MESSAGE.AUTHENTICATE) fail(`expected an NTLMSSP AUTHENTICATE message, got type ${type}`);
  if (buf.length < AUTH_FIXED) fail(`NTLMSSP AUTHENTICATE message of ${buf.length} bytes is shorter than ${AUTH_FIXED}`);
  const flags = buf.readUInt32LE(60);
  const unicode = (flags & NTLMSSP.NEGOTIATE_UNICODE) !== 0;
  const lmResponse = field(buf, 12, 'LmChallengeResponse', AUTH_FIXED);
  const ntResponse = field(buf, 20, 'NtChallengeResponse', AUTH_FIXED);
  const domain = text(field(buf, 28, 'DomainName', AUTH_FIXED), unicode, 'DomainName');
  const user = text(field(buf, 36, 'UserName', AUTH_FIXED), unicode, 'UserName');
  const workstation = text(field(buf, 44, 'Workstation', AUTH_FIXED), unicode, 'Workstation');
  const encryptedRandomSessionKey = field(buf, 52, 'EncryptedRandomSessionKey', AUTH_FIXED);
  // The payload starts after the MIC when there is one: the lowest payload offset tells.
  let payloadStart = buf.length;
  for (const at of [12, 20, 28, 36, 44, 52]) {
    if (buf.readUInt16LE(at) !== 0) payloadStart = Math.min(payloadStart, buf.readUInt32LE(at + 4));
  }
  const micOffset = payloadStart >= AUTH_MIC_OFFSET + 16 ? AUTH_MIC_OFFSET : -1;
  return {
    flags,
    lmResponse: Buffer.from(lmResponse),
    ntResponse: Buffer.from(ntResponse),
    domain,
    user,
    workstation,
    encryptedRandomSessionKey: Buffer.from(encryptedRandomSessionKey),
    micOffset,
    raw: buf,
  };
}

/** MS-NLMP 2.2.2.1: AV_PAIRs up to MsvAvEOL. Throws on a pair running past the end or a missing EOL. */
export function decodeAvPairs(buf: Buffer): AvPair[] {
  const pairs: AvPair[] = [];
  let pos = 0;
  for (;;) {
    if (pos + 4 > buf.length) fail('AV_PAIR list ends without MsvAvEOL');
    const id = buf.readUInt16LE(pos);
    const len = buf.readUInt16LE(pos + 2);
    pos += 4;
    if (len > buf.length - pos) fail(`AV_PAIR ${id} of ${len} bytes runs past the end of the list`);
    if (id === MSV_AV.EOL) return pairs;
    pairs.push({ id, value: buf.subarray(pos, pos + len) });
    pos += len;
  }
}

export function encodeAvPairs(pairs: readonly AvPair[]): Buffer {
  let size = 4;
  for (const p of pairs) size += 4 + p.value.length;
  const out = Buffer.alloc(size);
  let pos = 0;
  for (const p of pairs) {
    out.writeUInt16LE(p.id, pos);
    out.writeUInt16LE(p.value.length, pos + 2);
    p.value.copy(out, pos + 4);
    pos += 4 + p.value.length;
  }
  return out; // ends with MsvAvEOL (zeros)
}

/** MS-NLMP 2.2.2.10 VERSION: what this server reports (Windows 10 / Server 2016 numbering, NTLM revision 15). */
export const SERVER_VERSION = Buffer.from([10, 0, 0x63, 0x45, 0, 0, 0, 15]);

export interface NtlmChallenge {
  flags: number;
  serverChallenge: Buffer;
  targetName: string;
  targetInfo: Buffer;
}

// MS-NLMP 2.2.1.2 CHALLENGE_MESSAGE, always with the Version field (56 fixed bytes).
export function encodeChallenge(c: NtlmChallenge): Buffer {
  const unicode = (c.flags & NTLMSSP.NEGOTIATE_UNICODE) !== 0;
  const name = Buffer.from(c.targetName, unicode ? 'utf16le' : 'latin1');
  const fixed = 56;
  const out = Buffer.alloc(fixed + name.length + c.targetInfo.length);
  NTLMSSP_SIGNATURE.copy(out, 0);
  out.writeUInt32LE(NTLM_MESSAGE.CHALLENGE, 8);
  out.writeUInt16LE(name.length, 12);
  out.writeUInt16LE(name.length, 14);
  out.writeUInt32LE(fixed, 16);
  out.writeUInt32LE(c.flags >>> 0, 20);
  c.serverChallenge.copy(out, 24, 0, 8);
  // 32..40 Reserved: zero
  out.writeUInt16LE(c.targetInfo.length, 40);
  out.writeUInt16LE(c.targetInfo.length, 42);
  out.writeUInt32LE(fixed + name.length, 44);
  SERVER_VERSION.copy(out, 48);
  name.copy(out, fixed);
  c.targetInfo.copy(out, fixed + name.length);
  return out;
}

/** MS-NLMP 2.2.1.2 decoded (used by tests and by test-side clients). */
export function decodeChallenge(buf: Buffer): NtlmChallenge {
  const type = ntlmMessageType(buf);
  if (type !== NTLM_MESSAGE.CHALLENGE) fail(`expected an NTLMSSP CHALLENGE message, got type ${type}`);
  if (buf.length < 48) fail('NTLMSSP CHALLENGE message is cut off');
  const flags = buf.readUInt32LE(20);
  return {
    flags,
    serverChallenge: Buffer.from(buf.subarray(24, 32)),
    targetName: text(field(buf, 12, 'TargetName', 48), (flags & NTLMSSP.NEGOTIATE_UNICODE) !== 0, 'TargetName'),
    targetInfo: Buffer.from(field(buf, 40, 'TargetInfo', 48)),
  };
}

/** Windows FILETIME (100 ns ticks since 1601-01-01 UTC) for `ms` since the Unix epoch, little-endian. */
export function fileTime(ms: number): Buffer {
  const ticks = BigInt(Math.trunc(ms)) * 10_000n + 116_444_736_000_000_000n;
  const out = Buffer.alloc(8);
  out.writeBigUInt64LE(ticks);
  return out;
}
