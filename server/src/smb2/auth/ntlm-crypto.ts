// MS-NLMP 3.3.2 (NTLMv2 responses and keys), 3.4.5 (KEY_EXCH, SIGNKEY, SEALKEY) and 3.4.4.2
// (a message signature with extended session security) — what a server needs to check a client's
// NTLMv2 response, recover the exported session key, check the MIC and sign/check a SPNEGO mechListMIC.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { NTLMSSP } from './ntlm.js';
import { Rc4 } from './rc4.js';

export function hmacMd5(key: Uint8Array, ...parts: Uint8Array[]): Buffer {
  const h = createHmac('md5', key);
  for (const p of parts) h.update(p);
  return h.digest();
}

function md5(...parts: Uint8Array[]): Buffer {
  const h = createHash('md5');
  for (const p of parts) h.update(p);
  return h.digest();
}

/** Constant-time equality of two byte strings (false, without timing leaks on content, when lengths differ). */
export function safeEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** MS-NLMP 3.3.2 NTOWFv2 = HMAC_MD5(NTOWFv1, UNICODE(Uppercase(User) + UserDom)), given NTOWFv1 (the NT hash). */
export function ntowfv2(ntHash: Uint8Array, user: string, domain: string): Buffer {
  return hmacMd5(ntHash, Buffer.from(user.toUpperCase() + domain, 'utf16le'));
}

/** The parts of an NTLMv2 NtChallengeResponse (2.2.2.8): NTProofStr and the NTLMv2_CLIENT_CHALLENGE ("temp"). */
export interface NtlmV2Response {
  ntProofStr: Buffer;
  /** NTLMv2_CLIENT_CHALLENGE, the "temp" of 3.3.2. */
  clientBlob: Buffer;
  /** The AV pairs inside the blob (from byte 28 of the blob on). */
  avPairs: Buffer;
}

/** NTProofStr (16) + blob header (28): anything shorter is not NTLMv2 (NTLMv1 is exactly 24). */
export const MIN_NTLMV2_RESPONSE = 16 + 28;

export function splitNtlmV2Response(nt: Buffer): NtlmV2Response | null {
  if (nt.length < MIN_NTLMV2_RESPONSE) return null;
  const clientBlob = nt.subarray(16);
  if (clientBlob[0] !== 1 || clientBlob[1] !== 1) return null; // RespType / HiRespType
  return { ntProofStr: nt.subarray(0, 16), clientBlob, avPairs: clientBlob.subarray(28) };
}

/** 3.3.2 NTProofStr = HMAC_MD5(ResponseKeyNT, ServerChallenge || temp). */
export function ntProofStr(responseKeyNT: Uint8Array, serverChallenge: Uint8Array, clientBlob: Uint8Array): Buffer {
  return hmacMd5(responseKeyNT, serverChallenge, clientBlob);
}

/** 3.3.2 SessionBaseKey = HMAC_MD5(ResponseKeyNT, NTProofStr); with NTLMv2, KeyExchangeKey = SessionBaseKey. */
export function sessionBaseKey(responseKeyNT: Uint8Array, proof: Uint8Array): Buffer {
  return hmacMd5(responseKeyNT, proof);
}

/** 3.1.5.1.2 / 3.2.5.1.2: ExportedSessionKey = RC4K(KeyExchangeKey, EncryptedRandomSessionKey) under KEY_EXCH. */
export function exportedSessionKey(keyExchangeKey: Uint8Array, encryptedRandomSessionKey: Uint8Array | null): Buffer {
  if (encryptedRandomSessionKey === null) return Buffer.from(keyExchangeKey);
  return new Rc4(keyExchangeKey).transform(encryptedRandomSessionKey);
}

/** 3.1.5.1.2: MIC = HMAC_MD5(ExportedSessionKey, NEGOTIATE || CHALLENGE || AUTHENTICATE with its MIC zeroed). */
export function computeMic(exportedKey: Uint8Array, negotiate: Buffer, challenge: Buffer, authenticate: Buffer, micOffset: number): Buffer {
  const zeroed = Buffer.from(authenticate);
  zeroed.fill(0, micOffset, micOffset + 16);
  return hmacMd5(exportedKey, negotiate, challenge, zeroed);
}

const MAGIC = {
  clientSign: 'session key to client-to-server signing key magic constant\0',
  serverSign: 'session key to server-to-client signing key magic constant\0',
  clientSeal: 'session key to client-to-server sealing key magic constant\0',
  serverSeal: 'session key to server-to-client sealing key magic constant\0',
} as const;

/** 3.4.5.2 SIGNKEY (extended session security). */
export function signKey(exportedKey: Uint8Array, direction: 'client-to-server' | 'server-to-client'): Buffer {
  return md5(exportedKey, Buffer.from(direction === 'client-to-server' ? MAGIC.clientSign : MAGIC.serverSign, 'latin1'));
}

/** 3.4.5.3 SEALKEY (extended session security): the key is cut to 7 or 5 bytes without NEGOTIATE_128. */
export function sealKey(exportedKey: Uint8Array, flags: number, direction: 'client-to-server' | 'server-to-client'): Buffer {
  const len = flags & NTLMSSP.NEGOTIATE_128 ? 16 : flags & NTLMSSP.NEGOTIATE_56 ? 7 : 5;
  return md5(exportedKey.subarray(0, len), Buffer.from(direction === 'client-to-server' ? MAGIC.clientSeal : MAGIC.serverSeal, 'latin1'));
}

/**
 * One direction of NTLM session security (3.4.4.2, extended session security): a signing key, a
 * sealing handle (RC4 state that carries on across messages) and a sequence number.
 */
export class NtlmSigner {
  private readonly key: Buffer;
  private readonly seal: Rc4;
  private seq = 0;

  constructor(
    exportedKey: Uint8Array,
    private readonly flags: number,
    direction: 'client-to-server' | 'server-to-client',
  ) {
    this.key = signKey(exportedKey, direction);
    this.seal = new Rc4(sealKey(exportedKey, flags, direction));
  }

  /** The sealing handle, for GSS_WrapEx (tests use it to reproduce MS-NLMP 4.2.4.4). */
  sealingHandle(): Rc4 {
    return this.seal;
  }

  /** NTLMSSP_MESSAGE_SIGNATURE (2.2.2.9.2) over `message`; advances the sequence number. */
  sign(message: Uint8Array): Buffer {
    const seq = Buffer.alloc(4);
    seq.writeUInt32LE(this.seq >>> 0);
    this.seq++;
    let checksum = hmacMd5(this.key, seq, message).subarray(0, 8);
    if (this.flags & NTLMSSP.NEGOTIATE_KEY_EXCH) checksum = this.seal.transform(checksum);
    const out = Buffer.alloc(16);
    out.writeUInt32LE(1, 0);
    checksum.copy(out, 4);
    seq.copy(out, 12);
    return out;
  }

  /** Checks a signature made by the peer over `message` (constant time on the checksum). */
  verify(message: Uint8Array, signature: Uint8Array): boolean {
    return safeEqual(this.sign(message), signature);
  }
}
