// Kubernetes resource quantities as the CRD admits them for sizes: an integer or decimal number of
// bytes with an optional binary (Ki, Mi, Gi, Ti, Pi) or decimal (k, M, G, T, P) suffix.

const SUFFIX: Readonly<Record<string, number>> = {
  '': 1,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
};

const QUANTITY_RE = /^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$/;

/** Bytes of a size quantity ("10Gi" -> 10737418240), rounded down; throws on anything else. */
export function parseQuantityBytes(q: string | number): number {
  if (typeof q === 'number') {
    if (!Number.isFinite(q) || q < 0) throw new RangeError(`invalid quantity ${q}`);
    return Math.floor(q);
  }
  const m = QUANTITY_RE.exec(q.trim());
  if (m === null) throw new RangeError(`invalid quantity ${JSON.stringify(q)}: expected a number with an optional unit (Ki, Mi, Gi, ...)`);
  const bytes = Math.floor(Number(m[1]) * SUFFIX[m[2] ?? '']!);
  if (!Number.isSafeInteger(bytes)) throw new RangeError(`quantity ${JSON.stringify(q)} is too large`);
  return bytes;
}
