// MS-SMB2 3.1.4.1 Signing an outgoing message: over the whole message (one compound element,
// padding included) with its Signature field zeroed. Dialects 2.0.2 and 2.1: HMAC-SHA256 keyed
// with the session key, cut to 16 bytes. Dialects 3.0, 3.0.2 and 3.1.1: AES-128-CMAC keyed with
// the session's SigningKey, which the SMB 3.x KDF derives from the session key (3.3.5.5.3; at 3.1.1
// with the preauthentication integrity hash as its context); at 3.1.1, when NEGOTIATE chose it
// (SIGNING_CAPABILITIES), AES-128-GMAC under the same key: the GCM tag of the message as
// authenticated data, no plaintext, the 12-byte nonce being the MessageId, then a word whose bit 0
// says the message is a response and bit 1 that it is a CANCEL. 3.1.5.1 checks an incoming one
// the same way.
import { createCipheriv, createHmac, timingSafeEqual } from 'node:crypto';
import { aesCmac } from './cmac.js';
import { Command, HeaderFlags } from '../constants.js';

/** The Signature field of the SMB2 header (2.2.1): bytes 48..64. */
export const SIGNATURE_OFFSET = 48;
export const SIGNATURE_LENGTH = 16;
const HEADER_SIZE = 64;

/** How a session signs: HMAC-SHA256 (2.0.2, 2.1), AES-128-CMAC (3.x) or AES-128-GMAC (3.1.1, negotiated). */
export type SigningAlgorithm = 'hmac-sha256' | 'aes-128-cmac' | 'aes-128-gmac';

/** SMB2 header fields the GMAC nonce is made of (2.2.1). */
const HDR_COMMAND = 12;
const HDR_FLAGS = 16;
const HDR_MESSAGE_ID = 24;

const ZERO_SIGNATURE = Buffer.alloc(SIGNATURE_LENGTH);

/** The signature of `message` under a session's key and algorithm. */
export function signatureOf(algorithm: SigningAlgorithm, key: Buffer, message: Buffer): Buffer {
  if (message.length < HEADER_SIZE) throw new RangeError(`an SMB2 message of ${message.length} bytes has no signature field`);
  // The message as signed: its Signature field as zeros, without a copy of the message.
  const parts = [message.subarray(0, SIGNATURE_OFFSET), ZERO_SIGNATURE, message.subarray(SIGNATURE_OFFSET + SIGNATURE_LENGTH)];
  if (algorithm === 'aes-128-cmac') return aesCmac(key, parts);
  if (algorithm === 'aes-128-gmac') {
    const nonce = Buffer.alloc(12);
    message.copy(nonce, 0, HDR_MESSAGE_ID, HDR_MESSAGE_ID + 8);
    nonce[8] =
      (message.readUInt32LE(HDR_FLAGS) & HeaderFlags.SERVER_TO_REDIR) | (message.readUInt16LE(HDR_COMMAND) === Command.CANCEL ? 0x2 : 0);
    const g = createCipheriv('aes-128-gcm', key, nonce, { authTagLength: SIGNATURE_LENGTH });
    for (const p of parts) g.setAAD(p);
    g.final();
    return g.getAuthTag();
  }
  const h = createHmac('sha256', key.subarray(0, 16));
  for (const p of parts) h.update(p);
  return h.digest().subarray(0, SIGNATURE_LENGTH);
}

/** signatureOf for 2.0.2 / 2.1: HMAC-SHA256 keyed with the session key. */
export const smb2Signature = (sessionKey: Buffer, message: Buffer): Buffer => signatureOf('hmac-sha256', sessionKey, message);

/** signatureOf for 3.x: AES-128-CMAC under the session's SigningKey. */
export const smb3Signature = (signingKey: Buffer, message: Buffer): Buffer => signatureOf('aes-128-cmac', signingKey, message);

/** Constant-time check of the Signature field of `message`; false for a message too short to carry one. */
export function verifySignature(algorithm: SigningAlgorithm, key: Buffer, message: Buffer): boolean {
  if (message.length < HEADER_SIZE) return false;
  return timingSafeEqual(signatureOf(algorithm, key, message), message.subarray(SIGNATURE_OFFSET, SIGNATURE_OFFSET + SIGNATURE_LENGTH));
}

/** verifySignature for 2.0.2 / 2.1 (HMAC-SHA256). */
export function verifySmb2Signature(sessionKey: Buffer, message: Buffer): boolean {
  return verifySignature('hmac-sha256', sessionKey, message);
}

/**
 * MS-SMB2 3.1.4.2 the SMB 3.x key derivation: SP800-108 in counter mode with HMAC-SHA256 as the
 * PRF, r = 32, L = 128 (or 256 for the keys of a 256-bit cipher), so one PRF round:
 * HMAC(Ki, i=1 || Label || 0x00 || Context || L), cut to L bits. Label and context are given with
 * their own terminating zero, as MS-SMB2 spells them.
 */
export function smb3Kdf(ki: Buffer, label: string, context: string | Buffer, bits: 128 | 256 = 128): Buffer {
  const h = createHmac('sha256', ki);
  h.update(Buffer.from([0, 0, 0, 1]));
  h.update(Buffer.from(label, 'latin1'));
  h.update(Buffer.from([0]));
  h.update(typeof context === 'string' ? Buffer.from(context, 'latin1') : context);
  const l = Buffer.alloc(4);
  l.writeUInt32BE(bits);
  h.update(l);
  return h.digest().subarray(0, bits / 8);
}

/** MS-SMB2 3.3.5.5.3: Session.SigningKey of a 3.0 / 3.0.2 session, from its 16-byte session key. */
export function smb30SigningKey(sessionKey: Buffer): Buffer {
  return smb3Kdf(sessionKey.subarray(0, 16), 'SMB2AESCMAC\0', 'SmbSign\0');
}

/**
 * MS-SMB2 3.3.5.5.3: Session.SigningKey of a 3.1.1 session: the context is the session's
 * preauthentication integrity hash (SHA-512 over the NEGOTIATE and SESSION_SETUP exchange).
 */
export function smb311SigningKey(sessionKey: Buffer, preauthHash: Buffer): Buffer {
  return smb3Kdf(sessionKey.subarray(0, 16), 'SMBSigningKey\0', preauthHash);
}
