// Environment overrides, applied over the config file before validation.
//
// Two forms:
//  - named variables for the settings people change most (DITTOFS_NFS_PORT, ...), listed below;
//  - a generic form for every scalar setting: DITTOFS_ followed by the key path, segments joined by
//    `__`, upper-cased: DITTOFS_ADAPTERS__NFS__DRC_SIZE=4096. Named stores are addressed by name
//    (upper-cased, characters other than letters and digits as `_`): DITTOFS_BLOCKS__STORES__DEFAULT__PATH;
//    shares by index: DITTOFS_SHARES__0__READ_ONLY=true.
// Named variables are applied first, then the generic ones, so the more specific generic form wins
// (DITTOFS_ADAPTERS__SMB__BIND beats DITTOFS_BIND_ADDRESS for SMB). Variables set to the empty
// string are ignored, as if unset.
//
// Any other DITTOFS_* variable is an error naming it, so that a typo does not silently do nothing,
// except the documented non-override variables and Kubernetes service links (see below).
import { formatPath, isPlainObject, SCHEMA, suggest, type Issue, type LeafNode, type SchemaNode, type Segment } from './schema.js';

export const ENV_PREFIX = 'DITTOFS_';

/** Named override variables and the key paths each one sets. */
export const NAMED_ENV_OVERRIDES: Readonly<Record<string, readonly (readonly string[])[]>> = Object.freeze({
  DITTOFS_DATA_DIR: [['data_dir']],
  DITTOFS_LOG_LEVEL: [['logging', 'level']],
  DITTOFS_LOG_FILE: [['logging', 'file']],
  DITTOFS_BIND_ADDRESS: [
    ['adapters', 'nfs', 'bind'],
    ['adapters', 'smb', 'bind'],
    ['server', 'api', 'bind'],
    ['metrics', 'bind'],
  ],
  DITTOFS_NFS_ENABLED: [['adapters', 'nfs', 'enabled']],
  DITTOFS_NFS_PORT: [['adapters', 'nfs', 'port']],
  DITTOFS_PORTMAPPER_ENABLED: [['adapters', 'nfs', 'portmapper', 'enabled']],
  DITTOFS_PORTMAPPER_PORT: [['adapters', 'nfs', 'portmapper', 'port']],
  DITTOFS_SMB_ENABLED: [['adapters', 'smb', 'enabled']],
  DITTOFS_SMB_PORT: [['adapters', 'smb', 'port']],
  DITTOFS_SMB_SIGNING_REQUIRED: [['adapters', 'smb', 'signing_required']],
  DITTOFS_SMB_ENCRYPTION_REQUIRED: [['adapters', 'smb', 'encryption_required']],
  DITTOFS_SMB_OPLOCK_BREAK_TIMEOUT: [['adapters', 'smb', 'oplock_break_timeout']],
  DITTOFS_SMB_DURABLE_HANDLE_TIMEOUT: [['adapters', 'smb', 'durable_handle_timeout']],
  DITTOFS_API_ENABLED: [['server', 'api', 'enabled']],
  DITTOFS_API_PORT: [['server', 'api', 'port']],
  DITTOFS_METRICS_ENABLED: [['metrics', 'enabled']],
  DITTOFS_METRICS_PORT: [['metrics', 'port']],
  DITTOFS_WAL_DIR: [['cache', 'wal_dir']],
  DITTOFS_WAL_MAX_BYTES: [['cache', 'wal_max_bytes']],
  DITTOFS_MAX_DIRTY_BYTES: [['cache', 'max_dirty_bytes']],
  DITTOFS_READ_CACHE_BYTES: [['cache', 'read_cache_bytes']],
  DITTOFS_DISK_CACHE_DIR: [['cache', 'disk_cache_dir']],
  DITTOFS_DISK_CACHE_BYTES: [['cache', 'disk_cache_bytes']],
  DITTOFS_JWT_SECRET: [['server', 'api', 'jwt_secret']],
  DITTOFS_DATABASE_URL: [['database', 'url']],
});

/**
 * DITTOFS_* variables that are not config overrides and are read elsewhere. Add to this list when a
 * component reads a new one, or config loading will reject it as an unknown override.
 */
export const NON_OVERRIDE_ENV_VARS: readonly string[] = Object.freeze([
  /** Path of the config file (the CLI's --config wins over it). */
  'DITTOFS_CONFIG',
  /** Password given to the `admin` user when the control plane creates it on first start. */
  'DITTOFS_ADMIN_INITIAL_PASSWORD',
]);

/** Prefixes of variables reserved for test, fuzz and benchmark harnesses, and for hack/k8s/build.sh. */
export const NON_OVERRIDE_ENV_PREFIXES: readonly string[] = Object.freeze([
  'DITTOFS_TEST_',
  'DITTOFS_FUZZ_',
  'DITTOFS_BENCH_',
  'DITTOFS_K8S_',
]);

/**
 * Kubernetes injects "service link" variables for every Service in the namespace (unless the pod sets
 * enableServiceLinks: false): a Service named `dittofs` gives DITTOFS_SERVICE_HOST, DITTOFS_PORT,
 * DITTOFS_PORT_12049_TCP_ADDR, ...; one named `dittofs-nfs` even gives DITTOFS_NFS_PORT=tcp://10.0.0.7:12049.
 * They are not meant for us: skip them rather than fail.
 */
export function isKubernetesServiceLink(name: string, value: string): boolean {
  if (/_SERVICE_HOST$/.test(name) || /_SERVICE_PORT(?:_[A-Z0-9_]+)?$/.test(name)) return true;
  if (/_PORT_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?$/.test(name)) return true;
  return /_PORT$/.test(name) && /^(?:tcp|udp|sctp):\/\//.test(value);
}

/** The environment-variable form of a store name: `fast-ssd` -> `FAST_SSD`. */
export function envNameOf(key: string): string {
  return key.toUpperCase().replace(/[^A-Z0-9]/g, '_');
}

/** Every generic override variable for the fixed (non store, non share) settings, for suggestions. */
function fixedGenericVars(node: SchemaNode = SCHEMA, prefix: string[] = []): string[] {
  if (node.kind === 'leaf') return [ENV_PREFIX + prefix.map(envNameOf).join('__')];
  if (node.kind !== 'object') return [];
  return Object.entries<SchemaNode>(node.fields).flatMap(([k, child]) => fixedGenericVars(child, [...prefix, k]));
}

let knownVarsCache: string[] | undefined;
function knownVars(): string[] {
  knownVarsCache ??= [...Object.keys(NAMED_ENV_OVERRIDES), ...fixedGenericVars(), ...NON_OVERRIDE_ENV_VARS];
  return knownVarsCache;
}

type Resolved = { ok: true; segments: Segment[]; leaf: LeafNode } | { ok: false; message: string };

/** Finds the setting a generic variable names, looking at `raw` for store names and share indexes. */
function resolveGeneric(name: string, raw: Record<string, unknown>): Resolved {
  const parts = name.slice(ENV_PREFIX.length).split('__');
  const segments: Segment[] = [];
  let node: SchemaNode = SCHEMA;
  let here: unknown = raw;
  const unknownVar = (part?: string): Resolved => {
    // Inside a section, suggest among its keys; at the top, among all known variable names.
    let s: string | undefined;
    if (part !== undefined && segments.length > 0 && node.kind === 'object') {
      const key = suggest(part, Object.keys(node.fields).map(envNameOf));
      if (key !== undefined) s = [...name.split('__').slice(0, segments.length), key].join('__');
    } else {
      s = suggest(name, knownVars());
    }
    return {
      ok: false,
      message: `unknown environment override (no such setting${segments.length > 0 ? ` under ${formatPath(segments)}` : ''})${
        s === undefined ? '' : `; did you mean ${s}?`
      }`,
    };
  };
  for (const part of parts) {
    if (part === '') return unknownVar();
    switch (node.kind) {
      case 'leaf':
        return unknownVar();
      case 'object': {
        const key: string | undefined = Object.keys(node.fields).find((k) => envNameOf(k) === part);
        if (key === undefined) return unknownVar(part);
        node = (node.fields as Record<string, SchemaNode>)[key] as SchemaNode;
        segments.push(key);
        here = isPlainObject(here) ? here[key] : undefined;
        break;
      }
      case 'record': {
        const names = isPlainObject(here) ? Object.keys(here) : [];
        const matches = names.filter((n) => envNameOf(n) === part);
        if (matches.length !== 1) {
          return {
            ok: false,
            message:
              matches.length === 0
                ? `there is no ${node.what} named like ${JSON.stringify(part)} under ${formatPath(segments)} (defined: ${
                    names.join(', ') || 'none'
                  }); environment variables set keys of stores defined in the config file, they cannot add a store`
                : `${JSON.stringify(part)} matches several ${node.what}s (${matches.join(', ')}); set this in the config file instead`,
          };
        }
        const match = matches[0] as string;
        segments.push(match);
        here = (here as Record<string, unknown>)[match];
        node = node.entry;
        break;
      }
      case 'array': {
        const list = Array.isArray(here) ? here : [];
        if (!/^\d+$/.test(part) || Number(part) >= list.length) {
          return {
            ok: false,
            message: `${formatPath(segments)} entries are addressed by index from 0 to ${list.length - 1}, got ${JSON.stringify(part)}`,
          };
        }
        const i = Number(part);
        segments.push(i);
        here = list[i];
        node = node.element;
        break;
      }
    }
  }
  if (node.kind !== 'leaf') {
    const example = node.kind === 'object' ? Object.keys(node.fields)[0] : undefined;
    return {
      ok: false,
      message: `${formatPath(segments)} is a section, not a single setting${
        example === undefined ? '' : `; set one of its keys, such as ${name}__${envNameOf(example)}`
      }`,
    };
  }
  return { ok: true, segments, leaf: node };
}

/** Sets raw[segments] = value, creating missing mappings; gives up if something in the way is not a mapping. */
function setIn(raw: Record<string, unknown>, segments: readonly Segment[], value: unknown): void {
  let here: unknown = raw;
  for (let i = 0; i < segments.length - 1; i++) {
    const seg = segments[i] as Segment;
    if (Array.isArray(here) && typeof seg === 'number') {
      here = here[seg];
      continue;
    }
    if (!isPlainObject(here)) return;
    const next = here[seg];
    if (next === undefined || next === null) here[seg] = {};
    here = here[seg];
  }
  const last = segments[segments.length - 1] as Segment;
  if (Array.isArray(here) && typeof last === 'number') here[last] = value;
  else if (isPlainObject(here)) here[last] = value;
  // Otherwise the file has a non-mapping where a section belongs; validation reports that.
}

function leafAt(segments: readonly string[]): LeafNode {
  let node: SchemaNode = SCHEMA;
  for (const s of segments) {
    if (node.kind !== 'object') throw new Error(`bad override path ${segments.join('.')}`);
    node = (node.fields as Record<string, SchemaNode>)[s] as SchemaNode;
  }
  if (node?.kind !== 'leaf') throw new Error(`bad override path ${segments.join('.')}`);
  return node;
}

/**
 * Applies DITTOFS_* overrides from `env` onto the raw (parsed, not yet validated) config, in place.
 * Problems are pushed to `issues` with the variable name as path. Returns the names of the variables
 * applied, sorted.
 */
export function applyEnvOverrides(raw: Record<string, unknown>, env: NodeJS.ProcessEnv, issues: Issue[]): string[] {
  const applied: string[] = [];
  const vars = Object.keys(env)
    .filter((k) => k.startsWith(ENV_PREFIX))
    .sort();
  const apply = (name: string, text: string, targets: readonly (readonly Segment[])[], leaf: LeafNode): void => {
    const r = leaf.fromEnv(text);
    if (!r.ok) {
      issues.push({ path: name, message: `${r.message} (sets ${targets.map(formatPath).join(', ')})` });
      return;
    }
    for (const t of targets) setIn(raw, t, r.value);
    applied.push(name);
  };

  for (const name of vars) {
    const targets = NAMED_ENV_OVERRIDES[name];
    const text = env[name];
    if (targets === undefined || text === undefined || text === '' || isKubernetesServiceLink(name, text)) continue;
    const first = targets[0] as readonly string[];
    apply(name, text, targets, leafAt(first));
  }
  for (const name of vars) {
    const text = env[name];
    if (text === undefined || text === '' || Object.hasOwn(NAMED_ENV_OVERRIDES, name)) continue;
    if (NON_OVERRIDE_ENV_VARS.includes(name) || NON_OVERRIDE_ENV_PREFIXES.some((p) => name.startsWith(p))) continue;
    if (isKubernetesServiceLink(name, text)) continue;
    const r = resolveGeneric(name, raw);
    if (!r.ok) {
      issues.push({ path: name, message: r.message });
      continue;
    }
    apply(name, text, [r.segments], r.leaf);
  }
  return applied.sort();
}
