// MS-SMB2 3.1.4.3 / 3.3.5.2.1.1 SMB 3.x encryption: a message (a whole compound) travels as a
// TRANSFORM_HEADER (2.2.41) followed by the message encrypted with AES-CCM or AES-GCM under a key
// of the session the header names. The header's Signature is the cipher's 16-byte authentication
// tag; its last 32 bytes (Nonce to SessionId) are the additional authenticated data. The keys come
// from the session key through the SMB 3.x KDF (3.3.5.5.3): at 3.0 and 3.0.2 AES-128-CCM with the
// labels "SMB2AESCCM"; at 3.1.1 the cipher NEGOTIATE chose, with the labels "SMBC2SCipherKey" /
// "SMBS2CCipherKey" and the session's preauthentication hash as the context.
import { createCipheriv, createDecipheriv, randomBytes, type CipherCCMTypes, type CipherGCMTypes } from 'node:crypto';
import { smb3Kdf } from './signing.js';

/** MS-SMB2 2.2.3.1.2 Ciphers. */
export const CipherId = Object.freeze({ AES_128_CCM: 0x0001, AES_128_GCM: 0x0002, AES_256_CCM: 0x0003, AES_256_GCM: 0x0004 } as const);
export type Cipher = (typeof CipherId)[keyof typeof CipherId];

/** The ciphers served, in the order this server prefers them (GCM is the faster mode). */
export const SERVED_CIPHERS: readonly Cipher[] = [CipherId.AES_128_GCM, CipherId.AES_128_CCM, CipherId.AES_256_GCM, CipherId.AES_256_CCM];

/** 0xFD 'S' 'M' 'B', read as a little-endian u32. */
export const TRANSFORM_PROTOCOL_ID = 0x424d53fd;
export const TRANSFORM_HEADER_SIZE = 52;
/** 2.2.41 Flags (3.1.1) / EncryptionAlgorithm (3.0, 3.0.2: SMB2_ENCRYPTION_AES128_CCM): the same value. */
const TRANSFORM_FLAG_ENCRYPTED = 0x0001;
const TAG_LENGTH = 16;
/** Where the authenticated data starts: Nonce, OriginalMessageSize, Reserved, Flags, SessionId. */
const AAD_OFFSET = 20;

const isGcm = (c: Cipher): boolean => c === CipherId.AES_128_GCM || c === CipherId.AES_256_GCM;
const keyBits = (c: Cipher): 128 | 256 => (c === CipherId.AES_256_CCM || c === CipherId.AES_256_GCM ? 256 : 128);
/** 2.2.41: AES-CCM uses the first 11 bytes of Nonce, AES-GCM the first 12; the rest are zero. */
const nonceLength = (c: Cipher): number => (isGcm(c) ? 12 : 11);

function algorithm(c: Cipher): CipherCCMTypes | CipherGCMTypes {
  const bits = keyBits(c);
  return isGcm(c) ? (`aes-${bits}-gcm` as CipherGCMTypes) : (`aes-${bits}-ccm` as CipherCCMTypes);
}

export function cipherName(c: Cipher): string {
  return algorithm(c).toUpperCase();
}

/**
 * MS-SMB2 3.3.5.5.3 a session's two keys: `encryption` for what the server sends, `decryption` for
 * what it receives. `preauthHash` is the session's hash at 3.1.1, null at 3.0 and 3.0.2 (which
 * only know AES-128-CCM). A 256-bit cipher takes the full session key and L = 256.
 */
export function encryptionKeys(cipher: Cipher, sessionKey: Buffer, preauthHash: Buffer | null): { encryption: Buffer; decryption: Buffer } {
  const bits = keyBits(cipher);
  const ki = bits === 256 ? sessionKey : sessionKey.subarray(0, 16);
  if (preauthHash === null) {
    return {
      encryption: smb3Kdf(ki, 'SMB2AESCCM\0', 'ServerOut\0', bits),
      decryption: smb3Kdf(ki, 'SMB2AESCCM\0', 'ServerIn \0', bits),
    };
  }
  return {
    encryption: smb3Kdf(ki, 'SMBS2CCipherKey\0', preauthHash, bits),
    decryption: smb3Kdf(ki, 'SMBC2SCipherKey\0', preauthHash, bits),
  };
}

/** What a session encrypts and decrypts with. */
export interface SessionCipher {
  readonly cipher: Cipher;
  readonly encryptionKey: Buffer;
  readonly decryptionKey: Buffer;
  /**
   * Nonces of this key: a random prefix for the session, then a counter (3.1.4.3: a nonce is never
   * used twice under one key). 2^64 messages per session cannot be reached.
   */
  readonly noncePrefix: Buffer;
  sent: bigint;
}

export function sessionCipher(cipher: Cipher, sessionKey: Buffer, preauthHash: Buffer | null): SessionCipher {
  const keys = encryptionKeys(cipher, sessionKey, preauthHash);
  return {
    cipher,
    encryptionKey: keys.encryption,
    decryptionKey: keys.decryption,
    noncePrefix: randomBytes(nonceLength(cipher) - 8),
    sent: 0n,
  };
}

/**
 * The same session's cipher as its client holds it (test clients): it encrypts with the server's
 * decryption key and decrypts with the server's encryption key.
 */
export function clientSideOf(sc: SessionCipher): SessionCipher {
  return { ...sc, encryptionKey: sc.decryptionKey, decryptionKey: sc.encryptionKey, sent: 0n };
}

/** The fields of a TRANSFORM_HEADER (2.2.41). */
export interface TransformHeader {
  signature: Buffer;
  nonce: Buffer;
  originalSize: number;
  flags: number;
  sessionId: number;
}

/** Whether a frame starts with a TRANSFORM_HEADER's ProtocolId (0xFD 'S' 'M' 'B'). */
export const isTransformFrame = (frame: Buffer): boolean => frame.length >= 4 && frame.readUInt32LE(0) === TRANSFORM_PROTOCOL_ID;

/** Reads a TRANSFORM_HEADER; null when `frame` is too short to hold one or is not one. */
export function decodeTransformHeader(frame: Buffer): TransformHeader | null {
  if (frame.length < TRANSFORM_HEADER_SIZE || frame.readUInt32LE(0) !== TRANSFORM_PROTOCOL_ID) return null;
  const high = frame.readUInt32LE(48);
  return {
    signature: frame.subarray(4, 20),
    nonce: frame.subarray(20, 36),
    originalSize: frame.readUInt32LE(36),
    flags: frame.readUInt16LE(42),
    // Session ids are allocated below 2^53 (sessions.ts); a larger one names no session.
    sessionId: high >= 0x200000 ? -1 : high * 2 ** 32 + frame.readUInt32LE(44),
  };
}

export class DecryptError extends Error {}

/**
 * MS-SMB2 3.3.5.2.1.1: the message a transform frame carries, decrypted and authenticated with the
 * session's decryption key. Throws DecryptError when the header is inconsistent (size, flags) or
 * the tag does not verify: the caller then drops the connection.
 */
export function decryptMessage(sc: SessionCipher, frame: Buffer, h: TransformHeader): Buffer {
  if (h.flags !== TRANSFORM_FLAG_ENCRYPTED) throw new DecryptError(`transform header flags ${h.flags}`);
  if (h.originalSize !== frame.length - TRANSFORM_HEADER_SIZE || h.originalSize === 0)
    throw new DecryptError(`OriginalMessageSize ${h.originalSize} for ${frame.length - TRANSFORM_HEADER_SIZE} bytes`);
  const nonce = h.nonce.subarray(0, nonceLength(sc.cipher));
  const aad = frame.subarray(AAD_OFFSET, TRANSFORM_HEADER_SIZE);
  const body = frame.subarray(TRANSFORM_HEADER_SIZE);
  try {
    // CCM needs the plaintext's length before the data; GCM takes it and does not need it.
    const d = createDecipheriv(algorithm(sc.cipher) as CipherCCMTypes, sc.decryptionKey, nonce, { authTagLength: TAG_LENGTH });
    d.setAuthTag(h.signature);
    d.setAAD(aad, { plaintextLength: body.length });
    const out = d.update(body);
    d.final(); // checks the tag (neither mode has anything left to give here)
    return out;
  } catch {
    throw new DecryptError('the message does not decrypt under the session key (tampered, or another key)');
  }
}

/**
 * MS-SMB2 3.1.4.3 one outgoing message (the parts of one whole response frame) encrypted for the
 * session: the TRANSFORM_HEADER, then the ciphertext (one buffer per part with GCM, one with CCM).
 */
export function encryptMessage(sc: SessionCipher, sessionId: number, parts: readonly Buffer[]): Buffer[] {
  let size = 0;
  for (const p of parts) size += p.length;
  const header = Buffer.alloc(TRANSFORM_HEADER_SIZE);
  header.writeUInt32LE(TRANSFORM_PROTOCOL_ID, 0);
  const n = nonceLength(sc.cipher);
  sc.noncePrefix.copy(header, 20);
  header.writeBigUInt64LE(sc.sent++, 20 + n - 8);
  header.writeUInt32LE(size, 36);
  header.writeUInt16LE(TRANSFORM_FLAG_ENCRYPTED, 42);
  header.writeUInt32LE(sessionId % 2 ** 32, 44);
  header.writeUInt32LE(Math.floor(sessionId / 2 ** 32), 48);
  const nonce = header.subarray(20, 20 + n);
  const aad = header.subarray(AAD_OFFSET);
  if (isGcm(sc.cipher)) {
    // Part by part, and sent so (the listener writes a frame's parts under one cork): no copy.
    const c = createCipheriv(algorithm(sc.cipher) as CipherGCMTypes, sc.encryptionKey, nonce, { authTagLength: TAG_LENGTH });
    c.setAAD(aad);
    const out = parts.map((p) => c.update(p));
    c.final();
    c.getAuthTag().copy(header, 4);
    return [header, ...out];
  }
  // CCM takes the whole plaintext in one update.
  const c = createCipheriv(algorithm(sc.cipher) as CipherCCMTypes, sc.encryptionKey, nonce, { authTagLength: TAG_LENGTH });
  c.setAAD(aad, { plaintextLength: size });
  const body = c.update(parts.length === 1 ? parts[0]! : Buffer.concat(parts, size));
  c.final();
  c.getAuthTag().copy(header, 4);
  return [header, body];
}
