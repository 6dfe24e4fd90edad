// MS-SMB2 3.1.4.1 Signing an outgoing message (dialects 2.0.2 and 2.1): HMAC-SHA256 keyed with the
// session key over the whole message (one compound element, padding included) with its Signature
// field zeroed, cut to 16 bytes. 3.1.5.1 checks an incoming one the same way.
import { createHmac, timingSafeEqual } from 'node:crypto';

/** The Signature field of the SMB2 header (2.2.1): bytes 48..64. */
export const SIGNATURE_OFFSET = 48;
export const SIGNATURE_LENGTH = 16;
const HEADER_SIZE = 64;

export function smb2Signature(sessionKey: Buffer, message: Buffer): Buffer {
  if (message.length < HEADER_SIZE) throw new RangeError(`an SMB2 message of ${message.length} bytes has no signature field`);
  const h = createHmac('sha256', sessionKey.subarray(0, 16));
  h.update(message.subarray(0, SIGNATURE_OFFSET));
  h.update(Buffer.alloc(SIGNATURE_LENGTH));
  h.update(message.subarray(SIGNATURE_OFFSET + SIGNATURE_LENGTH));
  return h.digest().subarray(0, SIGNATURE_LENGTH);
}

/** Constant-time check of the Signature field of `message`; false for a message too short to carry one. */
export function verifySmb2Signature(sessionKey: Buffer, message: Buffer): boolean {
  if (message.length < HEADER_SIZE) return false;
  return timingSafeEqual(smb2Signature(sessionKey, message), message.subarray(SIGNATURE_OFFSET, SIGNATURE_OFFSET + SIGNATURE_LENGTH));
}
