// AES-128-CMAC (RFC 4493, NIST SP 800-38B), the signature of SMB 3.x messages (MS-SMB2 3.1.4.1),
// built on OpenSSL's AES through node:crypto: the blocks before the last are one AES-128-CBC pass
// with a zero IV (its last output block is the CBC-MAC so far), the last block is masked with a
// subkey and enciphered once more. No cipher is written here.
//
// Why not a CMAC package: on npm, `aes-cmac` 4 awaits one WebCrypto call per 16-byte block
// (65,536 of them for a 1 MiB READ reply), `node-aes-cmac` makes a cipher per block, and
// `@stablelib/cmac` runs AES in JavaScript. A signed session signs every READ and WRITE of up to
// 1 MiB; here that is one native CBC pass. cmac.test.ts checks RFC 4493's vectors and OpenSSL's
// own CMAC (`openssl mac`) over random messages.
import { createCipheriv, type Cipher } from 'node:crypto';

const BLOCK = 16;
const ZERO_BLOCK = Buffer.alloc(BLOCK);
/** R_128 of SP 800-38B: the constant xored into a doubled subkey whose top bit was set. */
const RB = 0x87;
/** The CBC pass is fed in pieces of this size: its output (thrown away) is never a copy of a whole message. */
const CBC_PIECE = 64 * 1024;

/** What a key needs for every message: its subkeys, and an AES block cipher (ECB, never finalized). */
interface KeyState {
  k1: Buffer;
  k2: Buffer;
  ecb: Cipher;
}

/** Per key buffer (never changed after its first use): a session's signing key signs many messages. */
const keyStates = new WeakMap<Buffer, KeyState>();

/** Doubling in GF(2^128) (RFC 4493 2.3: shift left one bit, xor Rb if the top bit was set). */
function double(b: Buffer): Buffer {
  const out = Buffer.alloc(BLOCK);
  for (let i = 0; i < BLOCK; i++) out[i] = ((b[i]! << 1) | (i + 1 < BLOCK ? b[i + 1]! >>> 7 : 0)) & 0xff;
  if (b[0]! & 0x80) out[BLOCK - 1] = out[BLOCK - 1]! ^ RB;
  return out;
}

function keyState(key: Buffer): KeyState {
  let s = keyStates.get(key);
  if (s === undefined) {
    // ECB without padding enciphers each 16-byte update on its own: the cipher serves every block.
    const c = createCipheriv('aes-128-ecb', key, null);
    c.setAutoPadding(false);
    const k1 = double(c.update(ZERO_BLOCK));
    s = { k1, k2: double(k1), ecb: c };
    keyStates.set(key, s);
  }
  return s;
}

/**
 * The 16-byte AES-128-CMAC of the concatenation of `parts` under a 16-byte key. Parts let a
 * caller leave out a field (an SMB2 header's Signature, given as zeros) without copying the message.
 */
export function aesCmac(key: Buffer, parts: readonly Buffer[]): Buffer {
  if (key.length !== BLOCK) throw new RangeError(`AES-128-CMAC needs a 16-byte key, not ${key.length} bytes`);
  let total = 0;
  for (const p of parts) total += p.length;
  // The last block: whole (masked with K1) when the length is a non-zero multiple of 16, else the
  // tail padded with 10* (masked with K2). Everything before it goes through CBC.
  const complete = total > 0 && total % BLOCK === 0;
  const head = complete ? total - BLOCK : total - (total % BLOCK);
  let x: Buffer = ZERO_BLOCK;
  const last = Buffer.alloc(BLOCK);
  let lastAt = 0;
  if (head > 0) {
    const cbc = createCipheriv('aes-128-cbc', key, ZERO_BLOCK);
    cbc.setAutoPadding(false);
    let fed = 0;
    let out: Buffer = Buffer.alloc(0);
    for (const p of parts) {
      for (let at = 0; at < p.length;) {
        if (fed < head) {
          const n = Math.min(p.length - at, head - fed, CBC_PIECE);
          const o = cbc.update(p.subarray(at, at + n));
          if (o.length > 0) out = o;
          fed += n;
          at += n;
        } else {
          const n = p.length - at;
          p.copy(last, lastAt, at, at + n);
          lastAt += n;
          at += n;
        }
      }
    }
    // head is a multiple of 16: every block came out of update(); the last one is the CBC-MAC.
    x = out.subarray(out.length - BLOCK);
  } else {
    for (const p of parts) {
      p.copy(last, lastAt);
      lastAt += p.length;
    }
  }
  const { k1, k2, ecb } = keyState(key);
  if (!complete) last[lastAt] = 0x80;
  const k = complete ? k1 : k2;
  for (let i = 0; i < BLOCK; i++) last[i] = last[i]! ^ k[i]! ^ x[i]!;
  return ecb.update(last);
}
