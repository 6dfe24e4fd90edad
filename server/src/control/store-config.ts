// Store settings as the control plane takes them: per type, the keys of the config file's
// `metadata.stores.NAME` and `blocks.stores.NAME` (config/types.ts), as JSON schemas for the API
// and its OpenAPI document, plus the value checks the config file applies (config/schema.ts), so
// a store is valid through the API exactly when it would be valid in the file. In JSON, sizes are
// bytes and durations milliseconds (no "4MiB" or "5s" strings). Secrets (an S3 secret key, the
// password in a postgres URL) are shown as **** in every response; **** sent back for a store
// that exists means "keep the stored secret", as long as what the secret is for (the rest of the
// URL; an S3 store's endpoint, bucket, region and access key id) is unchanged.
import { DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE } from '../config/defaults.js';
import { MASK, maskUrlPassword } from '../config/errors.js';
import { postgresUrlAdminOnly } from '../config/postgres-url.js';
import {
  MAX_POOL_SIZE,
  MAX_S3_ATTEMPTS,
  MAX_TIMEOUT_MS,
  pathLeaf,
  postgresUrlLeaf,
  s3AccessKeyIdLeaf,
  s3BucketLeaf,
  s3EndpointLeaf,
  s3PrefixLeaf,
  s3RegionLeaf,
  secretLeaf,
  sqlSchemaLeaf,
  type LeafNode,
} from '../config/schema.js';
import {
  BLOCK_STORE_TYPES,
  DEFAULT_EMBEDDED_ENGINE,
  EMBEDDED_ENGINES,
  METADATA_SYNC_MODES,
  METADATA_STORE_TYPES,
  type BlockStoreType,
  type MetadataStoreType,
} from '../config/types.js';
import { CONTROL_ERROR, ControlError } from './errors.js';
import type { StoreKind } from './types.js';

/** Store names become directory names and appear in URLs (config/schema.ts STORE_NAME_RE). */
export const STORE_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$';
export const STORE_NAME_RE = new RegExp(STORE_NAME_PATTERN);

type JsonSchema = Record<string, unknown>;

const BLOCK_SIZES: number[] = [];
for (let s = MIN_BLOCK_SIZE; s <= MAX_BLOCK_SIZE; s *= 2) BLOCK_SIZES.push(s);

const str = (maxLength: number, extra: JsonSchema = {}): JsonSchema => ({ type: 'string', minLength: 1, maxLength, ...extra });
const int = (minimum: number, maximum: number): JsonSchema => ({ type: 'integer', minimum, maximum });
const objectOf = (properties: Record<string, JsonSchema>, required: string[] = []): JsonSchema => ({
  type: 'object',
  additionalProperties: false,
  properties,
  ...(required.length > 0 ? { required } : {}),
});

const pathProp = str(4096, { description: 'directory (default: under data_dir)' });
const timeoutProp = { ...int(1, MAX_TIMEOUT_MS), description: 'milliseconds' };
const blockSizeProp = { type: 'integer', enum: BLOCK_SIZES, description: `bytes, a power of two (default ${DEFAULT_BLOCK_SIZE})` };

export const METADATA_CONFIG_SCHEMAS: Readonly<Record<MetadataStoreType, JsonSchema>> = Object.freeze({
  memory: objectOf({}),
  embedded: objectOf({
    path: pathProp,
    engine: { type: 'string', enum: [...EMBEDDED_ENGINES], description: `default ${DEFAULT_EMBEDDED_ENGINE}` },
    sync: { type: 'string', enum: [...METADATA_SYNC_MODES], description: 'sqlite: commit (default) or change' },
  }),
  postgres: objectOf(
    {
      url: str(2048, { description: 'postgres://user:password@host:5432/db (the password is shown as ****)' }),
      pool_size: int(1, MAX_POOL_SIZE),
      schema: str(63, { pattern: '^[a-z_][a-z0-9_]{0,62}$' }),
      connect_timeout: timeoutProp,
      statement_timeout: timeoutProp,
      // The config file's key too: without it here, a file's `sync: commit` was dropped when the
      // control database was seeded from it (its keys are this schema's), and ignored unsaid.
      sync: {
        type: 'string',
        enum: [...METADATA_SYNC_MODES],
        description: 'change (default): each change waits for the WAL flush; commit: flushed by the next COMMIT, stable WRITE or SMB FLUSH',
      },
    },
    ['url'],
  ),
});

export const BLOCK_CONFIG_SCHEMAS: Readonly<Record<BlockStoreType, JsonSchema>> = Object.freeze({
  memory: objectOf({ block_size: blockSizeProp }),
  filesystem: objectOf({ block_size: blockSizeProp, path: pathProp }),
  s3: objectOf(
    {
      block_size: blockSizeProp,
      endpoint: str(2048),
      region: str(64),
      bucket: str(63),
      prefix: { type: 'string', maxLength: 900 },
      force_path_style: { type: 'boolean' },
      access_key_id: str(256),
      secret_access_key: str(1024, { description: 'shown as ****' }),
      request_timeout: timeoutProp,
      max_attempts: int(1, MAX_S3_ATTEMPTS),
    },
    ['bucket'],
  ),
});

/**
 * A JSON schema for `{name, type, config}` whose `config` is checked against the schema of the
 * given `type` (if/then, so unknown keys of that type are rejected).
 */
export function storeBodySchema(kind: StoreKind, opts: { nameRequired?: boolean } = {}): JsonSchema {
  const types = kind === 'metadata' ? METADATA_STORE_TYPES : BLOCK_STORE_TYPES;
  const schemas: Record<string, JsonSchema> = kind === 'metadata' ? METADATA_CONFIG_SCHEMAS : BLOCK_CONFIG_SCHEMAS;
  return {
    type: 'object',
    additionalProperties: false,
    required: opts.nameRequired === false ? ['type'] : ['name', 'type'],
    properties: {
      name: str(63, { pattern: STORE_NAME_PATTERN }),
      type: { type: 'string', enum: [...types] },
      config: { type: 'object' },
    },
    allOf: types.map((t) => ({
      if: { type: 'object', properties: { type: { const: t } }, required: ['type'] },
      then: { type: 'object', properties: { config: schemas[t] } },
    })),
  };
}

const METADATA_LEAVES: Readonly<Record<string, LeafNode>> = {
  path: pathLeaf(true),
  url: postgresUrlLeaf(),
  schema: sqlSchemaLeaf(),
};

const BLOCK_LEAVES: Readonly<Record<string, LeafNode>> = {
  path: pathLeaf(true),
  endpoint: s3EndpointLeaf(),
  region: s3RegionLeaf(),
  bucket: s3BucketLeaf(),
  prefix: s3PrefixLeaf(),
  access_key_id: s3AccessKeyIdLeaf(),
  secret_access_key: secretLeaf(),
};

const SECRET_KEYS: Readonly<Record<StoreKind, readonly string[]>> = { metadata: ['url'], block: ['secret_access_key'] };

/**
 * What a masked S3 secret is tied to, as a postgres URL's masked password is tied to the rest of
 * the URL: otherwise whoever may edit stores (an operator) could send an admin's secret elsewhere.
 */
const S3_SECRET_SCOPE = ['endpoint', 'bucket', 'region', 'access_key_id'] as const;

/**
 * The value checks the config file applies, beyond the JSON schema: URL syntax, bucket names,
 * credentials given in pairs. Returns `config.KEY: message`, never quoting a secret.
 */
export function storeConfigProblem(kind: StoreKind, type: string, config: Record<string, unknown>): string | undefined {
  const leaves = kind === 'metadata' ? METADATA_LEAVES : BLOCK_LEAVES;
  for (const [key, value] of Object.entries(config)) {
    const leaf = leaves[key];
    if (leaf === undefined) continue;
    const r = leaf.check(value);
    if (!r.ok) return `config.${key}: ${r.message}`;
  }
  // The same rule as the config file (config/load.ts): only SQLite has a sync policy; PGlite would ignore it.
  if (kind === 'metadata' && type === 'embedded' && config.sync !== undefined && (config.engine ?? DEFAULT_EMBEDDED_ENGINE) !== 'sqlite') {
    return `config.sync: only the sqlite engine has a sync policy (this store's engine is ${String(config.engine)}); remove sync or use engine sqlite`;
  }
  if (kind === 'block' && type === 's3' && (config.access_key_id === undefined) !== (config.secret_access_key === undefined)) {
    return 'config: give both access_key_id and secret_access_key, or neither (then the standard AWS credential chain is used)';
  }
  return undefined;
}

/**
 * Why only an admin may give this store's URL (`config.url: ...`), or undefined: a postgres URL
 * whose parameters name files the server reads (sslcert, sslkey, sslrootcert) or whose host is a
 * unix socket directory on the server (config/postgres-url.ts). As for stores that write where
 * their path says (config/store-dirs.ts storeDirKindOf), these reach the server's own file system.
 */
export function adminOnlyStoreUrl(kind: StoreKind, type: string, config: Record<string, unknown>): string | undefined {
  if (kind !== 'metadata' || type !== 'postgres' || typeof config.url !== 'string') return undefined;
  const why = postgresUrlAdminOnly(config.url);
  return why === undefined ? undefined : `config.url: ${why}`;
}

/** The config as stored: block stores get their default block size. */
export function normalizeStoreConfig(kind: StoreKind, config: Record<string, unknown> | undefined): Record<string, unknown> {
  const out = { ...(config ?? {}) };
  if (kind === 'block' && out.block_size === undefined) out.block_size = DEFAULT_BLOCK_SIZE;
  return out;
}

/** A copy with its secrets shown as ****. */
export function maskStoreConfig(kind: StoreKind, config: Record<string, unknown>): Record<string, unknown> {
  const out = { ...config };
  if (kind === 'metadata' && typeof out.url === 'string') out.url = maskUrlPassword(out.url);
  if (kind === 'block' && out.secret_access_key !== undefined) out.secret_access_key = MASK;
  return out;
}

/**
 * Puts the stored secrets back where the client sent the mask (a config read from the API and
 * sent back unchanged). A mask with no stored secret to stand for is an error.
 */
export function unmaskStoreConfig(
  kind: StoreKind,
  incoming: Record<string, unknown>,
  existing: Record<string, unknown> | undefined,
  item: string,
): Record<string, unknown> {
  const out = { ...incoming };
  for (const key of SECRET_KEYS[kind]) {
    const v = out[key];
    if (typeof v !== 'string' || !v.includes(MASK)) continue;
    const old = existing?.[key];
    if (typeof old === 'string' && (key === 'url' ? maskUrlPassword(old) === v : v === MASK)) {
      const moved = key === 'secret_access_key' ? S3_SECRET_SCOPE.filter((k) => incoming[k] !== existing?.[k]) : [];
      if (moved.length > 0) {
        throw new ControlError(
          CONTROL_ERROR.INVALID,
          `config.${key} holds the mask ${JSON.stringify(MASK)} but ${moved.map((k) => `config.${k}`).join(', ')} changed: give the secret again`,
          item,
        );
      }
      out[key] = old;
    } else {
      throw new ControlError(
        CONTROL_ERROR.INVALID,
        `config.${key} holds the mask ${JSON.stringify(MASK)} but there is no stored secret it stands for: give the real value`,
        item,
      );
    }
  }
  return out;
}

/** JSON with sorted keys: two configs are the same setting exactly when these are equal. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (typeof v === 'object' && v !== null) {
    const entries = Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`).join(',')}}`;
  }
  return JSON.stringify(v);
}
