// Human-readable byte sizes for the config file and environment: `256MiB`, `4 MiB`, `1.5GiB`, `65536`.
//
// Binary units (KiB/MiB/GiB/TiB, or the Kubernetes spellings Ki/Mi/Gi/Ti) are powers of 1024;
// decimal units (kB/MB/GB/TB, or k/M/G/T) are powers of 1000, as in Kubernetes quantities.
// Units are case-insensitive. The result must be a whole number of bytes.

const UNITS: Readonly<Record<string, number>> = Object.freeze({
  '': 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  m: 1e6,
  mb: 1e6,
  g: 1e9,
  gb: 1e9,
  t: 1e12,
  tb: 1e12,
  ki: 2 ** 10,
  kib: 2 ** 10,
  mi: 2 ** 20,
  mib: 2 ** 20,
  gi: 2 ** 30,
  gib: 2 ** 30,
  ti: 2 ** 40,
  tib: 2 ** 40,
});

const SIZE_RE = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i;

/**
 * Parses a byte size: a non-negative integer, or a string such as `"4MiB"`, `"1.5 GiB"`, `"512"`.
 * Throws a RangeError whose message says what is wrong (it is shown to users as is).
 */
export function parseByteSize(value: number | string): number {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new RangeError(`expected a whole number of bytes, got ${value}`);
    }
    return value;
  }
  const m = SIZE_RE.exec(value.trim());
  if (m === null) {
    throw new RangeError(`expected a size such as 4MiB, 256MiB, 1GiB or a number of bytes, got ${JSON.stringify(value)}`);
  }
  const [, num = '', unit = ''] = m;
  const mult = UNITS[unit.toLowerCase()];
  if (mult === undefined) {
    throw new RangeError(
      `unknown size unit ${JSON.stringify(unit)} in ${JSON.stringify(value)} (use B, KiB, MiB, GiB, TiB, or kB, MB, GB, TB)`,
    );
  }
  // Scale fractions exactly: "1.5GiB" is 15 * GiB / 10, never 1.5 * 1073741824 rounded by luck.
  const [whole = '', frac = ''] = num.split('.');
  const scale = 10 ** frac.length;
  const numerator = (BigInt(whole) * BigInt(scale) + BigInt(frac === '' ? 0 : frac)) * BigInt(mult);
  if (numerator % BigInt(scale) !== 0n) {
    throw new RangeError(`${JSON.stringify(value)} is not a whole number of bytes`);
  }
  const bytes = numerator / BigInt(scale);
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new RangeError(`${JSON.stringify(value)} is too large`);
  }
  return Number(bytes);
}

/** Formats bytes with the largest binary unit that divides them exactly: 4194304 -> `4MiB`, 1000 -> `1000B`. */
export function formatByteSize(bytes: number): string {
  for (const [unit, mult] of [
    ['TiB', 2 ** 40],
    ['GiB', 2 ** 30],
    ['MiB', 2 ** 20],
    ['KiB', 2 ** 10],
  ] as const) {
    if (bytes >= mult && bytes % mult === 0) return `${bytes / mult}${unit}`;
  }
  return `${bytes}B`;
}
