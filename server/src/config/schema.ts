// The shape of the config file as data: which keys exist, what each accepts, and how to read it from
// an environment variable. One description drives validation, unknown-key detection with
// suggestions, and the generic DITTOFS_<PATH> environment overrides.
import net from 'node:net';
import { DEFAULT_BLOCK_SIZE, GiB, KiB, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, SHARE_DEFAULTS } from './defaults.js';
import type { ConfigIssue } from './errors.js';
import { weakJwtSecret } from './jwt-secret.js';
import { formatByteSize, parseByteSize } from './sizes.js';
import { trustProxyProblem } from './trust-proxy.js';
import {
  BLOCK_STORE_TYPES,
  EMBEDDED_ENGINES,
  METADATA_SYNC_MODES,
  LOG_LEVELS,
  METADATA_STORE_TYPES,
  type BlockStoreConfig,
  type DittoConfig,
  type MetadataStoreConfig,
  type ShareConfig,
} from './types.js';

export type Segment = string | number;

/** An issue plus the key path it came from, so the loader can point at the line in the file. */
export interface Issue extends ConfigIssue {
  segments?: readonly Segment[];
}

export type LeafResult = { ok: true; value: unknown } | { ok: false; message: string };

export interface LeafNode {
  kind: 'leaf';
  /** The key may be left out and has no default (e.g. a block store's `path`). */
  optional?: boolean;
  check(value: unknown): LeafResult;
  /** Reads the value from an environment variable's text, then checks it. */
  fromEnv(text: string): LeafResult;
}

// Keyed by the TypeScript config type, so a key added to types.ts without a schema entry (or a schema
// entry with no type) does not compile.
export interface ObjectNode<T = unknown> {
  kind: 'object';
  fields: { readonly [K in keyof T]-?: SchemaNode };
}

/** A mapping from user-chosen names to entries of one shape (named stores). */
export interface RecordNode {
  kind: 'record';
  /** Singular, for messages: `metadata store`. */
  what: string;
  entry: ObjectNode;
  entryDefaults: Readonly<Record<string, unknown>>;
}

export interface ArrayNode {
  kind: 'array';
  element: ObjectNode;
  elementDefaults: Readonly<Record<string, unknown>>;
}

export type SchemaNode = LeafNode | ObjectNode | RecordNode | ArrayNode;

// ---------------------------------------------------------------------------------------------
// Describing values in messages

export function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  // A long string (a file that is not YAML at all, read as one scalar) is cut: the start says enough.
  if (typeof v === 'string')
    return `the string ${v.length > 80 ? `${JSON.stringify(v.slice(0, 60))}... (${v.length} characters)` : JSON.stringify(v)}`;
  if (typeof v === 'number') return `the number ${v}`;
  if (typeof v === 'boolean') return String(v);
  if (typeof v === 'object') return v instanceof Uint8Array ? 'binary data' : 'a mapping';
  return typeof v;
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array) && !(v instanceof Date);
}

const PLAIN_KEY_RE = /^[A-Za-z0-9_-]+$/;

/** `adapters.nfs.port`, `shares[0].name`, `blocks.stores["my store"].path`. */
export function formatPath(segments: readonly Segment[]): string {
  if (segments.length === 0) return '(top level)';
  let out = '';
  for (const s of segments) {
    if (typeof s === 'number') out += `[${s}]`;
    else if (PLAIN_KEY_RE.test(s)) out += out === '' ? s : `.${s}`;
    else out += `[${JSON.stringify(s)}]`;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// "Did you mean": optimal string alignment distance (Levenshtein plus adjacent transpositions).

export function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[] = new Array<number>(rows * cols).fill(0);
  const at = (i: number, j: number): number => d[i * cols + j] ?? 0;
  for (let i = 0; i < rows; i++) d[i * cols] = i;
  for (let j = 0; j < cols; j++) d[j] = j;
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, at(i - 2, j - 2) + 1);
      d[i * cols + j] = v;
    }
  }
  return at(a.length, b.length);
}

/** The candidate closest to `input`, if it is close enough to be a likely typo. */
export function suggest(input: string, candidates: Iterable<string>): string | undefined {
  const lower = input.toLowerCase();
  let best: string | undefined;
  let bestScore = Infinity;
  for (const c of candidates) {
    const cl = c.toLowerCase();
    let score = editDistance(lower, cl);
    const limit = Math.max(1, Math.floor(Math.max(lower.length, cl.length) / 3));
    // `warning` for `warn`, `drc` for `drc_size`: a prefix of reasonable length is a fair guess.
    if (score > limit && Math.min(lower.length, cl.length) >= 3 && (cl.startsWith(lower) || lower.startsWith(cl))) {
      score = limit;
    }
    if (score <= limit && score < bestScore) {
      best = c;
      bestScore = score;
    }
  }
  return best;
}

function didYouMean(input: string, candidates: readonly string[]): string {
  const s = suggest(input, candidates);
  return s === undefined ? '' : ` (did you mean ${JSON.stringify(s)}?)`;
}

// ---------------------------------------------------------------------------------------------
// Leaves

const ok = (value: unknown): LeafResult => ({ ok: true, value });
const fail = (message: string): LeafResult => ({ ok: false, message });

const BOOL_WORDS: Readonly<Record<string, boolean>> = Object.freeze({
  true: true,
  false: false,
  '1': true,
  '0': false,
  yes: true,
  no: false,
  on: true,
  off: false,
});

export function boolLeaf(): LeafNode {
  return {
    kind: 'leaf',
    check: (v) => (typeof v === 'boolean' ? ok(v) : fail(`expected true or false, got ${describeValue(v)}`)),
    fromEnv: (text) => {
      const b = BOOL_WORDS[text.trim().toLowerCase()];
      return b === undefined ? fail(`expected true or false (or 1/0, yes/no, on/off), got ${JSON.stringify(text)}`) : ok(b);
    },
  };
}

function intLeaf(min: number, max: number, expected: string): LeafNode {
  const check = (v: unknown): LeafResult => {
    if (typeof v !== 'number' || !Number.isInteger(v)) return fail(`expected ${expected}, got ${describeValue(v)}`);
    if (v < min || v > max) return fail(`expected ${expected}, got ${v}`);
    return ok(v);
  };
  return {
    kind: 'leaf',
    check,
    fromEnv: (text) => {
      const t = text.trim();
      return /^[+-]?\d+$/.test(t) ? check(Number(t)) : fail(`expected ${expected}, got ${JSON.stringify(text)}`);
    },
  };
}

export const portLeaf = (): LeafNode => intLeaf(1, 65535, 'a port number from 1 to 65535');
/** uid/gid: 32-bit, excluding 2^32-1, which means "no id" to many system calls. */
export const idLeaf = (): LeafNode => intLeaf(0, 2 ** 32 - 2, 'a numeric id from 0 to 4294967294');
export const countLeaf = (min: number, max: number): LeafNode => intLeaf(min, max, `an integer from ${min} to ${max}`);

/** The same leaf, but the key may be left out (and has no default). */
export const optionalLeaf = (leaf: LeafNode): LeafNode => ({ ...leaf, optional: true });

const DURATION_UNITS_MS: Readonly<Record<string, number>> = Object.freeze({ '': 1, ms: 1, s: 1000, m: 60_000, h: 3_600_000 });

/**
 * A duration, kept as whole milliseconds: a number (of milliseconds) or a string, either digits
 * (milliseconds) or with a unit: `500ms`, `5s`, `1.5s`, `2m`, `1h`.
 */
export function durationMsLeaf(min: number, max: number): LeafNode {
  const expected = `expected a duration in milliseconds from ${min} to ${max} (a number, or with a unit: 500ms, 5s, 2m, 1h)`;
  const check = (v: unknown): LeafResult => {
    let ms: number;
    if (typeof v === 'number') {
      ms = v;
    } else if (typeof v === 'string') {
      const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(v.trim());
      const factor = m === null ? undefined : DURATION_UNITS_MS[(m[2] ?? '').toLowerCase()];
      if (m === null || factor === undefined) return fail(`${expected}, got ${JSON.stringify(v)}`);
      ms = Number(m[1]) * factor;
    } else {
      return fail(`${expected}, got ${describeValue(v)}`);
    }
    const got = typeof v === 'string' ? JSON.stringify(v) : describeValue(v);
    if (!(ms >= min && ms <= max)) return fail(`${expected}, got ${typeof v === 'number' ? String(v) : got}`);
    if (!Number.isInteger(ms)) return fail(`must be a whole number of milliseconds, got ${got}`);
    return ok(ms);
  };
  return { kind: 'leaf', check, fromEnv: check };
}

export function sizeLeaf(opts: { min: number; max?: number; powerOfTwo?: boolean }): LeafNode {
  const max = opts.max ?? Number.MAX_SAFE_INTEGER;
  const check = (v: unknown): LeafResult => {
    if (typeof v !== 'number' && typeof v !== 'string') {
      return fail(`expected a size such as 4MiB, 256MiB, 1GiB or a number of bytes, got ${describeValue(v)}`);
    }
    let n: number;
    try {
      n = parseByteSize(v);
    } catch (err) {
      return fail((err as Error).message);
    }
    if (n < opts.min) return fail(`must be at least ${formatByteSize(opts.min)}, got ${formatByteSize(n)}`);
    if (n > max) return fail(`must be at most ${formatByteSize(max)}, got ${formatByteSize(n)}`);
    if (opts.powerOfTwo === true && (n & (n - 1)) !== 0) {
      return fail(`must be a power of two (such as 1MiB or 4MiB), got ${n}`);
    }
    return ok(n);
  };
  return { kind: 'leaf', check, fromEnv: (text) => check(text.trim()) };
}

export function enumLeaf(values: readonly string[]): LeafNode {
  const check = (v: unknown): LeafResult => {
    if (typeof v === 'string' && values.includes(v)) return ok(v);
    const got = typeof v === 'string' ? `${JSON.stringify(v)}${didYouMean(v, values)}` : describeValue(v);
    return fail(`expected ${values.length === 1 ? JSON.stringify(values[0]) : `one of ${values.join(', ')}`}, got ${got}`);
  };
  return { kind: 'leaf', check, fromEnv: (text) => check(text.trim().toLowerCase()) };
}

function stringLeaf(validate: (s: string) => string | undefined, optional = false): LeafNode {
  const check = (v: unknown): LeafResult => {
    if (typeof v !== 'string') return fail(`expected a string, got ${describeValue(v)}`);
    const problem = validate(v);
    return problem === undefined ? ok(v) : fail(problem);
  };
  return { kind: 'leaf', optional, check, fromEnv: check };
}

export const pathLeaf = (optional = false): LeafNode =>
  stringLeaf((s) => {
    if (s === '') return 'must not be empty';
    if (s.includes('\0')) return 'must not contain a NUL character';
    return undefined;
  }, optional);

// No password in the example: messages mask anything that looks like one.
export const POSTGRES_URL_EXAMPLE = 'postgres://user@host:5432/dittofs';

/**
 * A PostgreSQL connection URL. Messages never quote the value, which may hold a password; see also
 * `maskUrlPassword` for printing it.
 */
export function postgresUrlProblem(s: string): string | undefined {
  const expected = `expected a postgres:// or postgresql:// URL such as ${POSTGRES_URL_EXAMPLE}`;
  if (s.trim() === '') return `must not be empty (${expected})`;
  if (s !== s.trim()) return `must not start or end with white space (${expected})`;
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(s)?.[1];
  if (scheme !== undefined && !/^postgres(?:ql)?$/i.test(scheme)) {
    return `${expected}, got a URL starting with ${JSON.stringify(`${scheme}://`)}`;
  }
  if (!/^postgres(?:ql)?:\/\//i.test(s)) return `${expected}, got a string that does not start with postgres:// or postgresql://`;
  try {
    new URL(s);
  } catch {
    return (
      `${expected}, got a string that does not parse as a URL (value not shown, as it may hold a password; ` +
      'percent-encode special characters in the user name and password, such as "/" as %2F and "@" as %40)'
    );
  }
  return undefined;
}

export const postgresUrlLeaf = (): LeafNode => stringLeaf(postgresUrlProblem, true);

export const REDIS_URL_EXAMPLE = 'redis://redis.example.com:6379/0';

/** A Redis URL: redis:// or rediss://, a host, no password (password_file or password_env hold it). */
export function redisUrlProblem(s: string): string | undefined {
  const expected = `expected a redis:// or rediss:// URL such as ${REDIS_URL_EXAMPLE}`;
  if (s.trim() === '') return `must not be empty (${expected})`;
  if (s !== s.trim()) return `must not start or end with white space (${expected})`;
  // Checked before parsing: the message must not quote a password.
  if (/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*:[^/?#]*@/i.test(s))
    return 'must not hold a password (value not shown); give it as password_file or password_env';
  if (!/^rediss?:\/\//i.test(s)) return `${expected}, got ${JSON.stringify(s)}`;
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    return `${expected}, got a string that does not parse as a URL: ${JSON.stringify(s)}`;
  }
  if (u.hostname === '') return `${expected}: the URL names no host`;
  const db = u.pathname.replace(/^\//, '');
  if (db !== '' && !/^\d{1,5}$/.test(db)) return `the path of the URL is a database number such as /0, got ${JSON.stringify(u.pathname)}`;
  if (u.search !== '' || u.hash !== '')
    return `must not have a query or fragment (TLS and the password are keys of their own), got ${JSON.stringify(s)}`;
  return undefined;
}

/** A prefix of Redis keys and channels: printable, no spaces, at most 128 characters. */
export const redisKeyPrefixLeaf = (): LeafNode =>
  stringLeaf((s) =>
    /^[\x21-\x7e]{1,128}$/.test(s) ? undefined : `expected 1 to 128 printable characters without spaces, got ${JSON.stringify(s)}`,
  );

/** The name of an environment variable. */
export const envNameLeaf = (): LeafNode =>
  stringLeaf(
    (s) =>
      /^[A-Za-z_][A-Za-z0-9_]{0,254}$/.test(s)
        ? undefined
        : `expected an environment variable name such as REDIS_PASSWORD, got ${JSON.stringify(s)}`,
    true,
  );

/** A PostgreSQL schema name, unquoted: lower-case, at most 63 bytes (NAMEDATALEN - 1). */
export const SQL_SCHEMA_RE = /^[a-z_][a-z0-9_]{0,62}$/;

export const sqlSchemaLeaf = (): LeafNode =>
  stringLeaf((s) => {
    if (!SQL_SCHEMA_RE.test(s)) {
      return `expected a schema name of 1 to 63 lower-case letters, digits or "_", not starting with a digit, got ${JSON.stringify(s)}`;
    }
    if (s.startsWith('pg_')) return `must not start with "pg_" (reserved by PostgreSQL for system schemas), got ${JSON.stringify(s)}`;
    return undefined;
  }, true);

/** The API's token key: a secret of at least 32 characters (never quoted in messages). */
export const jwtSecretLeaf = (): LeafNode => {
  const base = secretLeaf();
  const check = (v: unknown): LeafResult => {
    const r = base.check(v);
    if (!r.ok) return r;
    if ((v as string).length < 32) return fail(`must be at least 32 characters long, got ${(v as string).length} (value not shown)`);
    const weak = weakJwtSecret(v as string);
    if (weak !== undefined) return fail(`must be a random key, and ${weak} (value not shown); generate one with: openssl rand -base64 48`);
    return r;
  };
  return { ...base, check, fromEnv: check };
};

/**
 * A secret (an S3 secret access key). Messages never quote it, whatever is wrong with it; `config
 * show` prints it as ****.
 */
export const secretLeaf = (): LeafNode => {
  const check = (v: unknown): LeafResult => {
    if (typeof v !== 'string')
      return fail(`expected a string, got ${v === null ? 'null' : Array.isArray(v) ? 'a list' : `a ${typeof v}`} (value not shown)`);
    if (v === '') return fail('must not be empty');
    if (v !== v.trim()) return fail('must not start or end with white space (value not shown)');
    return ok(v);
  };
  return { kind: 'leaf', optional: true, check, fromEnv: check };
};

/** An S3 endpoint: an http:// or https:// URL with a host and no credentials in it. */
export function s3EndpointProblem(s: string): string | undefined {
  const expected = 'expected an http:// or https:// URL such as http://minio.example.com:9000 (leave it out for AWS S3)';
  if (s.trim() === '') return `must not be empty (${expected})`;
  // Checked before parsing: a secret holding "/" breaks the URL, and the message must not quote it.
  const credentials = 'must not hold a user name or password (value not shown); give them as access_key_id and secret_access_key';
  if (/^[a-z][a-z0-9+.-]*:\/\/[^?#]*@/i.test(s)) return credentials;
  if (!/^https?:\/\//i.test(s)) {
    const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(s)?.[1];
    return `${expected}, got ${scheme === undefined ? JSON.stringify(s) : `a URL starting with ${JSON.stringify(`${scheme}://`)}`}`;
  }
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    return `${expected}, got ${JSON.stringify(s)}`;
  }
  if (url.username !== '' || url.password !== '') return credentials;
  if (url.search !== '' || url.hash !== '') return `must not have a query or fragment, got ${JSON.stringify(s)}`;
  return undefined;
}

export const s3EndpointLeaf = (): LeafNode => stringLeaf(s3EndpointProblem, true);

/** An OTLP/HTTP endpoint: the full http:// or https:// URL spans are POSTed to. */
export function otlpEndpointProblem(s: string): string | undefined {
  const expected = 'expected the http:// or https:// URL of an OTLP/HTTP traces endpoint, such as http://127.0.0.1:4318/v1/traces';
  if (!/^https?:\/\//i.test(s)) return `${expected}, got ${JSON.stringify(s)}`;
  try {
    new URL(s);
  } catch {
    return `${expected}, got ${JSON.stringify(s)}`;
  }
  return undefined;
}

export const otlpEndpointLeaf = (): LeafNode => stringLeaf(otlpEndpointProblem);

/** A fraction from 0 to 1 (a sampling ratio). */
export function ratioLeaf(): LeafNode {
  const expected = 'expected a number from 0 to 1 (such as 0.1 for one in ten)';
  const check = (v: unknown): LeafResult =>
    typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= 1 ? ok(v) : fail(`${expected}, got ${describeValue(v)}`);
  return {
    kind: 'leaf',
    check,
    fromEnv: (text) => {
      const t = text.trim();
      return /^(?:\d+(?:\.\d*)?|\.\d+)$/.test(t) ? check(Number(t)) : fail(`${expected}, got ${JSON.stringify(text)}`);
    },
  };
}

/** An OpenTelemetry service name: printable, no spaces. */
export const serviceNameLeaf = (): LeafNode =>
  stringLeaf((s) =>
    /^[\x21-\x7e]{1,255}$/.test(s)
      ? undefined
      : `expected a name of 1 to 255 printable characters without spaces, got ${JSON.stringify(s)}`,
  );

/** S3 bucket naming rules (lower-case DNS-style names; legacy upper-case buckets are not supported). */
export const S3_BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

export const s3BucketLeaf = (): LeafNode =>
  stringLeaf((s) => {
    if (/^s3:\/\//i.test(s)) return `expected the bucket name alone, without "s3://", got ${JSON.stringify(s)}`;
    if (!S3_BUCKET_RE.test(s) || s.includes('..') || net.isIP(s) !== 0) {
      return (
        'expected a bucket name of 3 to 63 lower-case letters, digits, "." or "-", starting and ending with a ' +
        `letter or digit, got ${JSON.stringify(s)}`
      );
    }
    return undefined;
  }, true);

/** Object keys are at most 1024 bytes in S3; block keys need about 64 after the prefix. */
export const MAX_S3_PREFIX_BYTES = 900;

export const s3PrefixLeaf = (): LeafNode =>
  stringLeaf((s) => {
    // eslint-disable-next-line no-control-regex
    if (/[\u0000-\u001f\u007f]/.test(s)) return 'must not contain control characters';
    const bytes = Buffer.byteLength(s, 'utf8');
    if (bytes > MAX_S3_PREFIX_BYTES) return `must be at most ${MAX_S3_PREFIX_BYTES} bytes long, got ${bytes}`;
    return undefined;
  }, true);

/** A region name: `us-east-1`, `eu-central-1`, or whatever an S3-compatible server calls its own. */
export const s3RegionLeaf = (): LeafNode =>
  stringLeaf(
    (s) => (/^[A-Za-z0-9_-]{1,64}$/.test(s) ? undefined : `expected a region such as us-east-1 or eu-central-1, got ${JSON.stringify(s)}`),
    true,
  );

export const s3AccessKeyIdLeaf = (): LeafNode =>
  stringLeaf(
    (s) => (/^[\x21-\x7e]{1,256}$/.test(s) ? undefined : 'expected an access key id of 1 to 256 printable characters without spaces'),
    true,
  );

const HOSTNAME_RE = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export const hostLeaf = (): LeafNode =>
  stringLeaf((s) =>
    net.isIP(s) !== 0 || HOSTNAME_RE.test(s)
      ? undefined
      : `expected an IP address (such as 0.0.0.0, 127.0.0.1 or ::) or a host name, got ${JSON.stringify(s)}`,
  );

/**
 * `server.api.trust_proxy`: true, false, or the proxies' addresses, CIDRs and presets as a list or
 * one comma-separated string (the environment's form). An empty list is false.
 */
export function trustProxyLeaf(): LeafNode {
  const expected = `expected true, false, or a list of proxy addresses and CIDR ranges (such as [10.0.0.0/8, "fd00::/64"] or loopback)`;
  const list = (entries: readonly unknown[]): LeafResult => {
    const out: string[] = [];
    for (const [i, e] of entries.entries()) {
      if (typeof e !== 'string') return fail(`${expected}; entry ${i} is ${describeValue(e)}`);
      const t = e.trim();
      if (t === '') return fail(`${expected}; entry ${i} is empty`);
      out.push(t);
    }
    const problem = trustProxyProblem(out);
    return problem === undefined ? ok(out.length === 0 ? false : out) : fail(problem);
  };
  const check = (v: unknown): LeafResult => {
    if (typeof v === 'boolean') return ok(v);
    if (Array.isArray(v)) return list(v);
    if (typeof v === 'string') return v.trim() === '' ? fail(`${expected}, got an empty string`) : list(v.split(','));
    return fail(`${expected}, got ${describeValue(v)}`);
  };
  return {
    kind: 'leaf',
    check,
    fromEnv: (text) => {
      const b = BOOL_WORDS[text.trim().toLowerCase()];
      return b === undefined ? check(text) : ok(b);
    },
  };
}

export const storeRefLeaf = (): LeafNode => stringLeaf((s) => (s === '' ? 'must name a store' : undefined));

/** The longest share name, in UTF-8 bytes (the NFS MNTPATHLEN is 1024; 255 keeps SMB paths sane). */
export const MAX_SHARE_NAME_BYTES = 255;

export function shareNameProblem(s: string): string | undefined {
  if (!s.startsWith('/')) return `must start with "/" (such as "/export"), got ${JSON.stringify(s)}`;
  if (s === '/') return 'must name a directory below "/", such as "/export"';
  if (s.endsWith('/')) return `must not end with "/", got ${JSON.stringify(s)}`;
  const segs = s.slice(1).split('/');
  if (segs.includes('..')) return `must not contain "..", got ${JSON.stringify(s)}`;
  if (segs.includes('.')) return `must not contain "." components, got ${JSON.stringify(s)}`;
  if (segs.includes('')) return `must not contain "//", got ${JSON.stringify(s)}`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f\\]/.test(s)) return 'must not contain control characters or "\\"';
  const bytes = Buffer.byteLength(s, 'utf8');
  if (bytes > MAX_SHARE_NAME_BYTES) return `must be at most ${MAX_SHARE_NAME_BYTES} bytes long, got ${bytes}`;
  return undefined;
}

export const shareNameLeaf = (): LeafNode => stringLeaf(shareNameProblem);

const MAX_MODE = 0o7777;

/**
 * File mode bits. A string is always octal: "0755", "755", "0o755". A number is taken as is
 * (0o755 in JavaScript is 493); the YAML loader turns numbers written in the file into their
 * source text first, so `root_mode: 0755` and `root_mode: 755` in a file are octal too.
 */
export function modeLeaf(): LeafNode {
  const check = (v: unknown): LeafResult => {
    const expected = 'expected a mode in octal such as "0755" or "0777" (at most 07777)';
    if (typeof v === 'number') {
      return Number.isInteger(v) && v >= 0 && v <= MAX_MODE ? ok(v) : fail(`${expected}, got ${v}`);
    }
    if (typeof v === 'string') {
      const m = /^(?:0o)?([0-7]+)$/i.exec(v.trim());
      const n = m?.[1] === undefined ? NaN : parseInt(m[1], 8);
      return Number.isInteger(n) && n <= MAX_MODE ? ok(n) : fail(`${expected}, got ${JSON.stringify(v)}`);
    }
    return fail(`${expected}, got ${describeValue(v)}`);
  };
  return { kind: 'leaf', check, fromEnv: check };
}

// ---------------------------------------------------------------------------------------------
// The schema

function obj<T>(fields: { readonly [K in keyof T]-?: SchemaNode }): ObjectNode<T> {
  return { kind: 'object', fields };
}

/** Postgres metadata store limits. */
export const MAX_POOL_SIZE = 1000;
export const MAX_TIMEOUT_MS = 3_600_000;
/** S3 block store limit: attempts per request, the first one included. */
export const MAX_S3_ATTEMPTS = 20;

/** The largest RPC record accepted: the size of the biggest READ/WRITE plus headers must fit. */
export const MIN_RECORD_SIZE = 8 * KiB;
export const MAX_RECORD_SIZE = 1 * GiB;

const listener = () => obj<{ enabled: boolean; port: number; bind: string }>({ enabled: boolLeaf(), port: portLeaf(), bind: hostLeaf() });

export const SHARE_SCHEMA = obj<ShareConfig>({
  name: shareNameLeaf(),
  metadata: storeRefLeaf(),
  blocks: storeRefLeaf(),
  read_only: boolLeaf(),
  root_squash: boolLeaf(),
  anonymous_uid: idLeaf(),
  anonymous_gid: idLeaf(),
  root_mode: modeLeaf(),
  root_uid: idLeaf(),
  root_gid: idLeaf(),
});

export const SCHEMA: ObjectNode<DittoConfig> = obj<DittoConfig>({
  data_dir: pathLeaf(),
  logging: obj<DittoConfig['logging']>({ level: enumLeaf(LOG_LEVELS), format: enumLeaf(['json']), file: pathLeaf(true) }),
  adapters: obj<DittoConfig['adapters']>({
    nfs: obj<DittoConfig['adapters']['nfs']>({
      enabled: boolLeaf(),
      port: portLeaf(),
      bind: hostLeaf(),
      max_record_size: sizeLeaf({ min: MIN_RECORD_SIZE, max: MAX_RECORD_SIZE }),
      drc_size: countLeaf(1, 1_000_000),
      max_connections: countLeaf(1, 1_000_000),
      max_connections_per_address: countLeaf(0, 1_000_000),
      handshake_timeout: durationMsLeaf(0, MAX_TIMEOUT_MS),
      idle_timeout: durationMsLeaf(0, 24 * MAX_TIMEOUT_MS),
      max_buffered_request_bytes: sizeLeaf({ min: MIN_RECORD_SIZE }),
      portmapper: obj<DittoConfig['adapters']['nfs']['portmapper']>({ enabled: boolLeaf(), port: portLeaf() }),
    }),
    smb: obj<DittoConfig['adapters']['smb']>({
      enabled: boolLeaf(),
      port: portLeaf(),
      bind: hostLeaf(),
      signing_required: boolLeaf(),
      encryption_required: boolLeaf(),
      oplock_break_timeout: durationMsLeaf(100, 35_000),
      durable_handle_timeout: durationMsLeaf(100, 24 * MAX_TIMEOUT_MS),
      max_connections: countLeaf(1, 1_000_000),
      max_connections_per_address: countLeaf(0, 1_000_000),
      handshake_timeout: durationMsLeaf(0, MAX_TIMEOUT_MS),
      max_opens_per_user: countLeaf(1, 65536),
      idle_timeout: durationMsLeaf(0, 24 * MAX_TIMEOUT_MS),
      max_buffered_request_bytes: sizeLeaf({ min: 1088 * 1024 }),
    }),
  }),
  server: obj<DittoConfig['server']>({
    api: obj<DittoConfig['server']['api']>({
      enabled: boolLeaf(),
      port: portLeaf(),
      bind: hostLeaf(),
      jwt_secret: jwtSecretLeaf(),
      bcrypt_cost: countLeaf(10, 15),
      max_connections: countLeaf(1, 1_000_000),
      max_connections_per_address: countLeaf(0, 1_000_000),
      trust_proxy: trustProxyLeaf(),
      rate_limit: obj<DittoConfig['server']['api']['rate_limit']>({
        max: countLeaf(1, 1_000_000),
        login_max: countLeaf(1, 10_000),
        login_address_max: countLeaf(1, 100_000),
      }),
    }),
  }),
  database: obj<DittoConfig['database']>({
    type: enumLeaf(['embedded', 'postgres', 'memory'] as const),
    path: pathLeaf(true),
    url: postgresUrlLeaf(),
    schema: sqlSchemaLeaf(),
    pool_size: optionalLeaf(countLeaf(1, MAX_POOL_SIZE)),
  }),
  coordination: obj<DittoConfig['coordination']>({
    redis: obj<DittoConfig['coordination']['redis']>({
      url: stringLeaf(redisUrlProblem, true),
      key_prefix: redisKeyPrefixLeaf(),
      tls: boolLeaf(),
      password_file: pathLeaf(true),
      password_env: envNameLeaf(),
      lease_ttl: durationMsLeaf(1_000, 10 * 60_000),
    }),
  }),
  metrics: listener(),
  tracing: obj<DittoConfig['tracing']>({
    enabled: boolLeaf(),
    endpoint: otlpEndpointLeaf(),
    service_name: serviceNameLeaf(),
    sample_ratio: ratioLeaf(),
  }),
  cache: obj<DittoConfig['cache']>({
    wal_dir: pathLeaf(true),
    wal_max_bytes: sizeLeaf({ min: 4 * 1024 * 1024 }),
    max_dirty_bytes: sizeLeaf({ min: 1 }),
    read_cache_bytes: sizeLeaf({ min: 1 }),
    disk_cache_dir: pathLeaf(true),
    disk_cache_bytes: sizeLeaf({ min: 0 }),
  }),
  metadata: obj<DittoConfig['metadata']>({
    stores: {
      kind: 'record',
      what: 'metadata store',
      entry: obj<MetadataStoreConfig>({
        type: enumLeaf(METADATA_STORE_TYPES),
        path: pathLeaf(true),
        engine: optionalLeaf(enumLeaf(EMBEDDED_ENGINES)),
        sync: optionalLeaf(enumLeaf(METADATA_SYNC_MODES)),
        url: postgresUrlLeaf(),
        pool_size: optionalLeaf(countLeaf(1, MAX_POOL_SIZE)),
        schema: sqlSchemaLeaf(),
        connect_timeout: optionalLeaf(durationMsLeaf(1, MAX_TIMEOUT_MS)),
        statement_timeout: optionalLeaf(durationMsLeaf(1, MAX_TIMEOUT_MS)),
      }),
      entryDefaults: {},
    },
  }),
  blocks: obj<DittoConfig['blocks']>({
    stores: {
      kind: 'record',
      what: 'block store',
      entry: obj<BlockStoreConfig>({
        type: enumLeaf(BLOCK_STORE_TYPES),
        block_size: sizeLeaf({ min: MIN_BLOCK_SIZE, max: MAX_BLOCK_SIZE, powerOfTwo: true }),
        path: pathLeaf(true),
        endpoint: s3EndpointLeaf(),
        region: s3RegionLeaf(),
        bucket: s3BucketLeaf(),
        prefix: s3PrefixLeaf(),
        force_path_style: optionalLeaf(boolLeaf()),
        access_key_id: s3AccessKeyIdLeaf(),
        secret_access_key: secretLeaf(),
        request_timeout: optionalLeaf(durationMsLeaf(1, MAX_TIMEOUT_MS)),
        max_attempts: optionalLeaf(countLeaf(1, MAX_S3_ATTEMPTS)),
      }),
      entryDefaults: { block_size: DEFAULT_BLOCK_SIZE },
    },
  }),
  shares: { kind: 'array', element: SHARE_SCHEMA, elementDefaults: SHARE_DEFAULTS },
});

/** Store names become directory names and appear in URLs: keep them plain. */
export const STORE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

// ---------------------------------------------------------------------------------------------
// Walking raw input against the schema, filling defaults

export function walk(node: SchemaNode, raw: unknown, def: unknown, segments: readonly Segment[], issues: Issue[]): unknown {
  const issue = (message: string, at: readonly Segment[] = segments): void => {
    issues.push({ path: formatPath(at), message, segments: at });
  };
  switch (node.kind) {
    case 'leaf': {
      if (raw === undefined || raw === null) {
        if (raw === undefined && def !== undefined) return def;
        if (node.optional === true) return undefined;
        if (raw === null) {
          issue(def === undefined ? 'has no value' : `has no value (remove the key to use the default, ${JSON.stringify(def)})`);
        } else {
          issue('required key is missing');
        }
        return def;
      }
      const r = node.check(raw);
      if (!r.ok) {
        issue(r.message);
        return def;
      }
      return r.value;
    }
    case 'object': {
      const input = raw ?? {};
      if (!isPlainObject(input)) {
        issue(`expected a mapping of keys, got ${describeValue(input)}`);
        return def;
      }
      const defaults = isPlainObject(def) ? def : {};
      const known = Object.keys(node.fields);
      for (const key of Object.keys(input)) {
        if (!Object.hasOwn(node.fields, key)) {
          const s = suggest(key, known);
          issue(
            s === undefined ? `unknown key (expected one of: ${known.join(', ')})` : `unknown key (did you mean ${JSON.stringify(s)}?)`,
            [...segments, key],
          );
        }
      }
      const out: Record<string, unknown> = {};
      for (const [key, child] of Object.entries<SchemaNode>(node.fields)) {
        const v = walk(child, input[key], defaults[key], [...segments, key], issues);
        if (v !== undefined) out[key] = v;
      }
      return out;
    }
    case 'record': {
      const input = raw ?? {};
      if (!isPlainObject(input)) {
        issue(`expected a mapping of ${node.what} names to settings, got ${describeValue(input)}`);
        return {};
      }
      const out: Record<string, unknown> = {};
      for (const [name, value] of Object.entries(input)) {
        if (!STORE_NAME_RE.test(name)) {
          issue(`invalid ${node.what} name: use 1 to 63 letters, digits, "-", "_" or ".", starting with a letter or digit`, [
            ...segments,
            name,
          ]);
          continue;
        }
        out[name] = walk(node.entry, value, node.entryDefaults, [...segments, name], issues);
      }
      return out;
    }
    case 'array': {
      const input = raw ?? [];
      if (!Array.isArray(input)) {
        issue(`expected a list, got ${describeValue(input)}`);
        return [];
      }
      return input.map((el, i) => walk(node.element, el, node.elementDefaults, [...segments, i], issues));
    }
  }
}
