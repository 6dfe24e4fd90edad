// CRC32C (Castagnoli) of a concatenation from the CRCs of its parts, without reading the bytes
// again: crc(A || B) = crc(A) * x^(8 * |B|) + crc(B) in GF(2)[x] modulo the CRC's polynomial (the
// initial and final inversions of the two parts cancel out). Polynomials are held bit-reflected,
// as the CRC is: bit 31 is the coefficient of x^0, bit 0 that of x^31.

/** The Castagnoli polynomial, bit-reflected (x^32 implied). */
const POLY = 0x82f63b78;
/** x^0 (the polynomial 1), reflected. */
const ONE = 0x80000000;

/** a * b modulo POLY. */
function mulMod(a: number, b: number): number {
  let product = 0;
  for (let bit = ONE; bit !== 0; bit >>>= 1) {
    if ((a & bit) !== 0) {
      product ^= b;
      if ((a & (bit - 1)) === 0) break;
    }
    // b * x: one step of the reflected shift register.
    b = b & 1 ? (b >>> 1) ^ POLY : b >>> 1;
  }
  return product >>> 0;
}

/** POW2[k] = x^(2^k) modulo POLY. */
const POW2: readonly number[] = (() => {
  const t: number[] = [];
  for (let k = 0, x = ONE >>> 1 /* x^1 */; k < 64; k++, x = mulMod(x, x)) t.push(x);
  return t;
})();

/** x^(8 * bytes) modulo POLY: the factor that shifts a CRC past `bytes` bytes. */
function shiftBytes(bytes: number): number {
  let p = ONE;
  let k = 3; // x^(8n) = x^(n * 2^3)
  for (let n = bytes; n > 0; n = Math.floor(n / 2), k++) if (n % 2 === 1) p = mulMod(POW2[k] ?? 0, p);
  return p;
}

/** The CRC32C of A || B, given crc32c(A), crc32c(B) and B's length in bytes. */
export function crc32cCombine(crcA: number, crcB: number, lengthB: number): number {
  if (lengthB === 0) return crcA >>> 0;
  return (mulMod(shiftBytes(lengthB), crcA >>> 0) ^ crcB) >>> 0;
}
