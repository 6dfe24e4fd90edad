// Loading the configuration: find the file, parse YAML, apply environment overrides, fill defaults,
// validate strictly, and report every problem at once.
//
// Which file:  opts.file (the CLI's --config), else $DITTOFS_CONFIG, else ./dittofs.yaml if it
// exists, else none (built-in defaults). Environment overrides apply in every case.
//
// Relative paths (data_dir, block and embedded metadata store paths) are resolved against the process's working
// directory, not the file's directory; a leading `~/` means the home directory.
import { readFile, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import YAML, { isMap, isScalar, isSeq, LineCounter, type Document, type Node as YamlNode } from 'yaml';
import { DEFAULT_SHARE_NAME, DEFAULT_STORE_NAME, defaultBlockStorePath, defaultConfig, defaultMetadataStorePath } from './defaults.js';
import { applyEnvOverrides, ENV_PREFIX, envNameOf } from './env.js';
import { ConfigError } from './errors.js';
import { formatByteSize } from './sizes.js';
import { describeValue, formatPath, isPlainObject, SCHEMA, walk, type Issue, type Segment } from './schema.js';
import { DEFAULT_EMBEDDED_ENGINE, type BlockStoreConfig, type DittoConfig, type MetadataStoreConfig } from './types.js';

export { ConfigError, CONFIG_INVALID, type ConfigIssue } from './errors.js';

/** The file looked for in the working directory when neither --config nor DITTOFS_CONFIG is given. */
export const DEFAULT_CONFIG_FILE = 'dittofs.yaml';
export const BUILT_IN_SOURCE = 'built-in defaults';

export interface LoadOptions {
  /** Config file path (the CLI's --config). */
  file?: string;
  /** Environment to read DITTOFS_CONFIG and overrides from; default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Directory that relative paths and ./dittofs.yaml are resolved against; default process.cwd(). */
  cwd?: string;
}

export interface LoadedConfig {
  config: DittoConfig;
  /** Absolute path of the file read, or `built-in defaults`. */
  source: string;
  /** Names of the DITTOFS_* environment variables that were applied, sorted. */
  overrides: string[];
}

export interface ValidateOptions {
  /** Directory that relative paths are resolved against; default process.cwd(). */
  cwd?: string;
}

/** Which config file `loadConfig` would read, or undefined for built-in defaults. */
export async function resolveConfigFile(opts: LoadOptions = {}): Promise<string | undefined> {
  const cwd = opts.cwd ?? process.cwd();
  const env = opts.env ?? process.env;
  if (opts.file !== undefined && opts.file !== '') return path.resolve(cwd, opts.file);
  const fromEnv = env.DITTOFS_CONFIG;
  if (fromEnv !== undefined && fromEnv !== '') return path.resolve(cwd, fromEnv);
  const local = path.resolve(cwd, DEFAULT_CONFIG_FILE);
  try {
    if ((await stat(local)).isFile()) return local;
  } catch {
    // no ./dittofs.yaml: built-in defaults
  }
  return undefined;
}

export async function loadConfig(opts: LoadOptions = {}): Promise<LoadedConfig> {
  const env = opts.env ?? process.env;
  const cwd = opts.cwd ?? process.cwd();
  const file = await resolveConfigFile({ ...opts, env, cwd });
  if (file === undefined) {
    const r = parseConfigDetailed('', env, BUILT_IN_SOURCE, { cwd });
    return { config: r.config, source: BUILT_IN_SOURCE, overrides: r.overrides };
  }
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why =
      e.code === 'ENOENT'
        ? 'file not found'
        : e.code === 'EISDIR'
          ? 'is a directory, not a file'
          : e.code === 'EACCES'
            ? 'permission denied'
            : e.message;
    throw new ConfigError([{ path: file, message: `cannot read config file: ${why}` }], file);
  }
  const r = parseConfigDetailed(text, env, file, { cwd });
  return { config: r.config, source: file, overrides: r.overrides };
}

/** Parses YAML text, applies environment overrides from `env`, and validates. Throws ConfigError. */
export function parseConfig(yamlText: string, env: NodeJS.ProcessEnv = {}, sourceName = 'config', opts: ValidateOptions = {}): DittoConfig {
  return parseConfigDetailed(yamlText, env, sourceName, opts).config;
}

export function parseConfigDetailed(
  yamlText: string,
  env: NodeJS.ProcessEnv,
  sourceName: string,
  opts: ValidateOptions = {},
): { config: DittoConfig; overrides: string[] } {
  const lineCounter = new LineCounter();
  const doc = YAML.parseDocument(yamlText, { lineCounter, prettyErrors: true, uniqueKeys: true, merge: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => {
        const pos = e.linePos?.[0];
        const where = pos === undefined ? sourceName : `${sourceName}:${pos.line}:${pos.col}`;
        // The library's message repeats the position and adds a source excerpt: keep the first clause.
        const msg = (e.message.split('\n')[0] ?? e.message).replace(/ at line \d+, column \d+:?$/, '');
        return { path: where, message: `YAML syntax error: ${msg}` };
      }),
      sourceName,
    );
  }
  readModesAsOctal(doc);
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new ConfigError([{ path: sourceName, message: `YAML error: ${(err as Error).message}` }], sourceName);
  }
  const r = validateCollect(raw, env, opts);
  if (r.issues.length > 0) {
    throw new ConfigError(
      r.issues.map((i) => {
        const line = i.segments === undefined ? undefined : lineOf(doc, lineCounter, i.segments);
        return line === undefined ? { path: i.path, message: i.message } : { path: i.path, message: i.message, line };
      }),
      sourceName,
    );
  }
  return { config: r.config, overrides: r.overrides };
}

/**
 * Merges `raw` (a parsed config file, or any object of that shape) over the defaults and validates it
 * strictly. Throws a ConfigError listing every problem. Does not read the environment.
 */
export function validateConfig(raw: unknown, opts: ValidateOptions = {}): DittoConfig {
  const r = validateCollect(raw, {}, opts);
  if (r.issues.length > 0) throw new ConfigError(r.issues.map((i) => ({ path: i.path, message: i.message })));
  return r.config;
}

function validateCollect(
  raw: unknown,
  env: NodeJS.ProcessEnv,
  opts: ValidateOptions,
): { config: DittoConfig; overrides: string[]; issues: Issue[] } {
  const issues: Issue[] = [];
  const input: unknown = raw === undefined || raw === null ? {} : structuredClone(raw);
  if (!isPlainObject(input)) {
    issues.push({ path: '(top level)', message: `expected a mapping of settings, got ${describeValue(input)}` });
    return { config: defaultConfig(), overrides: [], issues };
  }
  supplyDefaultStoresAndShare(input);
  const overrides = applyEnvOverrides(input, env, issues);
  const config = walk(SCHEMA, input, defaultConfig(), [], issues) as DittoConfig;
  // Run the cross-key checks even after key errors: all problems are reported at once. A key that
  // failed holds its default (or is missing), which at worst adds a consequential message.
  checkSemantics(config, issues);
  if (issues.length === 0) resolvePaths(config, opts.cwd ?? process.cwd());
  return { config, overrides, issues };
}

function isEmptyish(v: unknown): boolean {
  return v === undefined || v === null || (isPlainObject(v) && Object.keys(v).length === 0);
}

/**
 * With no stores at all in the file, supply a `default` embedded metadata store and a `default`
 * filesystem block store; with no stores and no `shares` key either, also the `/export` share.
 * (Shares that leave out `metadata`/`blocks` use the stores named `default`.)
 */
function supplyDefaultStoresAndShare(raw: Record<string, unknown>): void {
  const meta = raw.metadata;
  const blocks = raw.blocks;
  if (
    (meta !== undefined && meta !== null && !isPlainObject(meta)) ||
    (blocks !== undefined && blocks !== null && !isPlainObject(blocks))
  ) {
    return; // malformed: validation reports it
  }
  if (!isEmptyish(meta?.stores) || !isEmptyish(blocks?.stores)) return;
  // No paths: they are derived from the final data_dir, which the environment may still change.
  raw.metadata = { ...meta, stores: { [DEFAULT_STORE_NAME]: { type: 'embedded' } } };
  raw.blocks = { ...blocks, stores: { [DEFAULT_STORE_NAME]: { type: 'filesystem' } } };
  if (raw.shares === undefined) raw.shares = [{ name: DEFAULT_SHARE_NAME }];
}

const WILDCARD_BINDS = new Set(['0.0.0.0', '::', '']);

/** Checks that span keys: store references, duplicate shares, store options per type, port clashes. */
function checkSemantics(c: DittoConfig, issues: Issue[]): void {
  const push = (segments: Segment[], message: string): void => {
    issues.push({ path: formatPath(segments), message, segments });
  };
  checkBlockStores(c, issues, push);
  const nfsLimits = c.adapters.nfs;
  if (nfsLimits.max_buffered_request_bytes < nfsLimits.max_record_size) {
    push(
      ['adapters', 'nfs', 'max_buffered_request_bytes'],
      `must be at least adapters.nfs.max_record_size (${formatByteSize(nfsLimits.max_record_size)}), got ${formatByteSize(nfsLimits.max_buffered_request_bytes)}`,
    );
  }
  checkMetadataStores(c, issues, push);
  checkCoordination(c, push);
  const metaNames = Object.keys(c.metadata.stores);
  const blockNames = Object.keys(c.blocks.stores);
  const seen = new Map<string, number>();
  c.shares.forEach((share, i) => {
    if (typeof share.name === 'string') {
      const prev = seen.get(share.name);
      if (prev !== undefined) push(['shares', i, 'name'], `duplicate share ${JSON.stringify(share.name)} (also shares[${prev}])`);
      else seen.set(share.name, i);
    }
    if (!Object.hasOwn(c.metadata.stores, share.metadata)) {
      push(
        ['shares', i, 'metadata'],
        `no metadata store named ${JSON.stringify(share.metadata)} under metadata.stores (defined: ${metaNames.join(', ') || 'none'})`,
      );
    }
    if (!Object.hasOwn(c.blocks.stores, share.blocks)) {
      push(
        ['shares', i, 'blocks'],
        `no block store named ${JSON.stringify(share.blocks)} under blocks.stores (defined: ${blockNames.join(', ') || 'none'})`,
      );
    }
  });

  const nfs = c.adapters.nfs;
  const listeners: { segments: Segment[]; enabled: boolean; bind: string; port: number }[] = [
    { segments: ['adapters', 'nfs', 'port'], enabled: nfs.enabled, bind: nfs.bind, port: nfs.port },
    {
      segments: ['adapters', 'nfs', 'portmapper', 'port'],
      enabled: nfs.enabled && nfs.portmapper.enabled,
      bind: nfs.bind,
      port: nfs.portmapper.port,
    },
    { segments: ['adapters', 'smb', 'port'], ...c.adapters.smb },
    { segments: ['server', 'api', 'port'], ...c.server.api },
    { segments: ['metrics', 'port'], ...c.metrics },
  ];
  const active = listeners.filter((l) => l.enabled);
  for (let i = 0; i < active.length; i++) {
    const b = active[i];
    if (b === undefined) continue;
    const clash = active
      .slice(0, i)
      .find((a) => a.port === b.port && (a.bind === b.bind || WILDCARD_BINDS.has(a.bind) || WILDCARD_BINDS.has(b.bind)));
    if (clash !== undefined) push(b.segments, `port ${b.port} is also used by ${formatPath(clash.segments)}`);
  }
}

/** Keys of a block store that only `s3` stores take. */
const S3_ONLY_KEYS = [
  'endpoint',
  'region',
  'bucket',
  'prefix',
  'force_path_style',
  'access_key_id',
  'secret_access_key',
  'request_timeout',
  'max_attempts',
] as const satisfies readonly (keyof BlockStoreConfig)[];

/** Each block store has the keys of its type only; an s3 store has a bucket, and both keys or neither. */
function checkBlockStores(c: DittoConfig, issues: readonly Issue[], push: (segments: Segment[], message: string) => void): void {
  for (const [name, store] of Object.entries(c.blocks.stores)) {
    // A missing or invalid type was reported already; without it there is nothing to check against.
    if (typeof store.type !== 'string') continue;
    const at = (key: string): Segment[] => ['blocks', 'stores', name, key];
    const typeIs = `this store's type is ${store.type}`;
    const envVar = (key: string): string => `${ENV_PREFIX}BLOCKS__STORES__${envNameOf(name)}__${envNameOf(key)}`;
    // An invalid value (in the file or from the environment) was reported already: no "required" on top.
    const reported = (key: string): boolean => issues.some((i) => i.path === formatPath(at(key)) || i.path === envVar(key));
    if (store.type !== 'filesystem' && store.path !== undefined) {
      push(at('path'), `only filesystem block stores have a path (${typeIs})`);
    }
    if (store.type === 's3') {
      if (store.bucket === undefined && !reported('bucket')) {
        push(at('bucket'), `required for s3 block stores: the name of an existing bucket (in the file or from ${envVar('bucket')})`);
      }
      const hasId = store.access_key_id !== undefined;
      if (hasId !== (store.secret_access_key !== undefined)) {
        const [missing, given] = hasId ? ['secret_access_key', 'access_key_id'] : ['access_key_id', 'secret_access_key'];
        if (!reported(missing)) {
          push(
            at(missing),
            `required with ${given} (in the file or from ${envVar(missing)}); or leave both out to use the standard AWS ` +
              'credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ~/.aws, web identity, instance role)',
          );
        }
      }
    } else {
      for (const key of S3_ONLY_KEYS) {
        if (store[key] !== undefined) push(at(key), `only s3 block stores have ${key} (${typeIs})`);
      }
    }
  }
}

/** Keys of a metadata store that only `postgres` stores take. */
const POSTGRES_ONLY_KEYS = [
  'pool_size',
  'schema',
  'connect_timeout',
  'statement_timeout',
] as const satisfies readonly (keyof MetadataStoreConfig)[];

/** Each metadata store has the keys of its type only; a postgres store has a url. */
function checkMetadataStores(c: DittoConfig, issues: readonly Issue[], push: (segments: Segment[], message: string) => void): void {
  for (const [name, store] of Object.entries(c.metadata.stores)) {
    // A missing or invalid type was reported already; without it there is nothing to check against.
    if (typeof store.type !== 'string') continue;
    const at = (key: string): Segment[] => ['metadata', 'stores', name, key];
    const typeIs = `this store's type is ${store.type}`;
    if (store.type !== 'embedded' && store.path !== undefined) {
      push(at('path'), `only embedded metadata stores have a path (${typeIs})`);
    }
    if (store.type !== 'embedded' && store.engine !== undefined) {
      push(at('engine'), `only embedded metadata stores have an engine (${typeIs})`);
    }
    if (
      store.sync !== undefined &&
      store.type !== 'postgres' &&
      (store.type !== 'embedded' || (store.engine ?? DEFAULT_EMBEDDED_ENGINE) !== 'sqlite')
    ) {
      push(
        at('sync'),
        `only postgres metadata stores and embedded ones on the sqlite engine have sync (${typeIs}${store.engine ? `, engine ${store.engine}` : ''})`,
      );
    }
    if (store.type === 'postgres') {
      const envVar = `${ENV_PREFIX}METADATA__STORES__${envNameOf(name)}__URL`;
      // No "required" on top of an invalid url (in the file or from the environment).
      const reported = issues.some((i) => i.path === envVar || i.path === formatPath(at('url')));
      if (store.url === undefined && !reported) {
        push(at('url'), `required for postgres metadata stores: a postgres:// or postgresql:// URL (in the file or from ${envVar})`);
      }
    } else {
      if (store.url !== undefined) push(at('url'), `only postgres metadata stores have a url (${typeIs})`);
      for (const key of POSTGRES_ONLY_KEYS) {
        if (store[key] !== undefined) push(at(key), `only postgres metadata stores have ${key} (${typeIs})`);
      }
    }
  }
}

/** coordination.redis: one password source, and only with a url. */
function checkCoordination(c: DittoConfig, push: (segments: Segment[], message: string) => void): void {
  const r = c.coordination.redis;
  const at = (key: string): Segment[] => ['coordination', 'redis', key];
  if (r.password_file !== undefined && r.password_env !== undefined)
    push(at('password_env'), 'give the Redis password one way: password_file or password_env, not both');
  if (r.url === undefined) {
    for (const key of ['password_file', 'password_env'] as const) {
      if (r[key] !== undefined)
        push(at(key), `a Redis password needs coordination.redis.url (in the file or from ${ENV_PREFIX}COORDINATION__REDIS__URL)`);
    }
  }
}

function expandPath(p: string, cwd: string): string {
  if (p === '~') return os.homedir();
  if (p.startsWith('~/')) return path.join(os.homedir(), p.slice(2));
  return path.resolve(cwd, p);
}

function resolvePaths(c: DittoConfig, cwd: string): void {
  c.data_dir = expandPath(c.data_dir, cwd);
  // `-`: standard output only (no log file), kept as it is.
  if (c.logging.file !== undefined && c.logging.file !== '-') c.logging.file = expandPath(c.logging.file, cwd);
  if (c.coordination.redis.password_file !== undefined)
    c.coordination.redis.password_file = expandPath(c.coordination.redis.password_file, cwd);
  for (const [name, store] of Object.entries(c.blocks.stores)) {
    if (store.type === 'filesystem') {
      store.path = store.path === undefined ? defaultBlockStorePath(c.data_dir, name) : expandPath(store.path, cwd);
    }
  }
  for (const [name, store] of Object.entries(c.metadata.stores)) {
    if (store.type === 'embedded') {
      store.path = store.path === undefined ? defaultMetadataStorePath(c.data_dir, name) : expandPath(store.path, cwd);
    }
  }
}

/**
 * In YAML 1.2, `0755` is the decimal number 755. A mode is always meant in octal, so numbers written
 * in decimal digits under `root_mode` are replaced by their source text, which the mode check reads
 * as octal. (`0o755` and `0x1ed` are parsed by YAML correctly and left alone.)
 */
function readModesAsOctal(doc: Document): void {
  YAML.visit(doc, {
    Pair(_key, pair) {
      if (isScalar(pair.key) && pair.key.value === 'root_mode' && isScalar(pair.value) && typeof pair.value.value === 'number') {
        const src = pair.value.source;
        if (src !== undefined && /^\d+$/.test(src)) pair.value.value = src;
      }
    },
  });
}

/** 1-based line of the key (or list item) at `segments` in the file, if it is there. */
function lineOf(doc: Document, lc: LineCounter, segments: readonly Segment[]): number | undefined {
  let node: unknown = doc.contents;
  let offset: number | undefined;
  for (const seg of segments) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && p.key.value === seg);
      if (pair === undefined) return undefined;
      offset = (pair.key as YamlNode).range?.[0];
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg] as YamlNode | undefined;
      if (item === undefined) return undefined;
      offset = item.range?.[0];
      node = item;
    } else {
      return undefined;
    }
  }
  return offset === undefined ? undefined : lc.linePos(offset).line;
}
