// RC4 (ARCFOUR), which MS-NLMP needs for KEY_EXCH (3.4.5.3 RC4K) and for sealing the checksum of
// GSS_GetMIC (3.4.4.2). node:crypto offers it only under the process-wide legacy OpenSSL provider,
// so it is written out here (it is a few lines) and tested against RFC 6229.

/** One RC4 key stream; successive transform() calls continue it (an NTLM "sealing handle"). */
export class Rc4 {
  private readonly s = new Uint8Array(256);
  private i = 0;
  private j = 0;

  constructor(key: Uint8Array) {
    if (key.length === 0 || key.length > 256) throw new RangeError(`RC4 key must be 1..256 bytes, got ${key.length}`);
    const s = this.s;
    for (let n = 0; n < 256; n++) s[n] = n;
    let j = 0;
    for (let n = 0; n < 256; n++) {
      const t = s[n]!;
      j = (j + t + key[n % key.length]!) & 0xff;
      s[n] = s[j]!;
      s[j] = t;
    }
  }

  /** XORs `data` with the next data.length key-stream bytes into a new Buffer. */
  transform(data: Uint8Array): Buffer {
    const out = Buffer.allocUnsafe(data.length);
    const s = this.s;
    let i = this.i;
    let j = this.j;
    for (let n = 0; n < data.length; n++) {
      i = (i + 1) & 0xff;
      const t = s[i]!;
      j = (j + t) & 0xff;
      s[i] = s[j]!;
      s[j] = t;
      out[n] = data[n]! ^ s[(s[i]! + t) & 0xff]!;
    }
    this.i = i;
    this.j = j;
    return out;
  }
}

/** MS-NLMP 6 RC4K(K, D): a fresh key stream over one message. */
export function rc4(key: Uint8Array, data: Uint8Array): Buffer {
  return new Rc4(key).transform(data);
}
