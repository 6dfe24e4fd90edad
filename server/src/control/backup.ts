// A whole control database as one JSON document, and back: `dittofs backup controlplane` and
// `dittofs restore controlplane`. The document holds secrets (password and NT hashes, store
// credentials, the generated token key): whoever reads it can log in as anyone and reach the stores.
//
// Dump: one REPEATABLE READ transaction, so the document is consistent. Load: the document is
// checked first (format, version, shape, every reference), then one transaction locks the state
// row as every change does, empties the tables, inserts the document's rows and bumps the
// generation; on any failure nothing changes. Every user's token version is renewed, so tokens
// issued before the restore (by this database or by the one backed up) are no longer accepted.
import { shareNameProblem } from '../config/schema.js';
import { BLOCK_STORE_TYPES, METADATA_STORE_TYPES } from '../config/types.js';
import type { SqlExecutor } from '../meta/sql/driver.js';
import { toBool, toNumber } from '../meta/sql/rows.js';
import { SHARE_COLUMNS, checkUniqueIds, shareRow, shareValues, type ControlStore } from './store.js';
import { STORE_NAME_RE } from './store-config.js';
import {
  ACCOUNT_NAME_RE,
  ADAPTER_TYPES,
  MAX_ID,
  PERMISSION_LEVELS,
  ROLES,
  type AdapterType,
  type PermissionGrant,
  type PermissionLevel,
  type Role,
  type Share,
} from './types.js';

/** The `format` of every backup document. */
export const BACKUP_FORMAT = 'dittofs-controlplane-backup';
/** The document layout this DittoFS writes and reads. */
export const BACKUP_VERSION = 1;

export interface BackupUser {
  username: string;
  uid: number;
  gid: number;
  email: string | null;
  role: Role;
  must_change_password: boolean;
  /** bcrypt; null: the user cannot log in. */
  password_hash: string | null;
  /** MD4 of the UTF-16LE password, hex (SMB NTLM). */
  nt_hash: string | null;
  created_at?: string;
  updated_at?: string;
}

export interface BackupGroup {
  name: string;
  gid: number;
  members: string[];
  created_at?: string;
  updated_at?: string;
}

export interface BackupStore {
  name: string;
  type: string;
  /** As stored: secrets in clear. */
  config: Record<string, unknown>;
  created_at?: string;
  updated_at?: string;
}

/** A share as the control store keeps it, with its grants and row times. */
export interface BackupShare extends Share {
  permissions: PermissionGrant[];
  created_at?: string;
  updated_at?: string;
}

export interface BackupAdapter {
  type: AdapterType;
  enabled: boolean;
  port: number;
}

/** A secret the server generated for itself (the token key when the config gives none). */
export interface BackupSecret {
  name: string;
  value: string;
  created_at?: string;
}

export interface ControlBackup {
  format: typeof BACKUP_FORMAT;
  version: number;
  /** When the backup was taken (RFC 3339). */
  created_at: string;
  /** The DittoFS that wrote it. */
  dittofs_version: string;
  /** The control database's schema version (migrations applied) when it was written. */
  schema_version: number;
  /** The generation of the state backed up. */
  generation: number;
  /** The highest token version given out so far; restored versions start above it. */
  token_version: number;
  users: BackupUser[];
  groups: BackupGroup[];
  metadata_stores: BackupStore[];
  block_stores: BackupStore[];
  shares: BackupShare[];
  adapters: BackupAdapter[];
  /** Settings changed through the API, by key. */
  settings: Record<string, unknown>;
  secrets: BackupSecret[];
}

/** How many items of each kind a backup holds, for messages. */
export interface BackupCounts {
  users: number;
  groups: number;
  metadata_stores: number;
  block_stores: number;
  shares: number;
  permissions: number;
  adapters: number;
  settings: number;
  secrets: number;
}

export const BACKUP_ERROR = Object.freeze({
  /** The document is not a backup this DittoFS can read; nothing was changed. */
  INVALID: 'DITTOFS_BACKUP_INVALID',
  /** The database already holds a control state and --force was not given; nothing was changed. */
  NOT_EMPTY: 'DITTOFS_BACKUP_NOT_EMPTY',
} as const);
export type BackupErrorCode = (typeof BACKUP_ERROR)[keyof typeof BACKUP_ERROR];

export class BackupError extends Error {
  override readonly name = 'BackupError';
  constructor(
    readonly code: BackupErrorCode,
    message: string,
    /** Every problem found (INVALID), one per line in messages. */
    readonly problems: readonly string[] = [],
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------
// Dump

type Row = Record<string, unknown>;

function text(v: unknown, column: string): string {
  if (typeof v !== 'string') throw new TypeError(`${column}: expected text from the database, got ${typeof v}`);
  return v;
}

function textOrNull(v: unknown, column: string): string | null {
  return v === null || v === undefined ? null : text(v, column);
}

function iso(v: unknown, column: string): string {
  return (v instanceof Date ? v : new Date(text(v, column))).toISOString();
}

function jsonObject(v: unknown): Record<string, unknown> {
  if (typeof v === 'string') v = JSON.parse(v) as unknown; // SQLite: JSON text
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

async function rows(tx: SqlExecutor, sql: string): Promise<Row[]> {
  return (await tx.query(sql)).rows;
}

/** The whole control database, read in one consistent transaction. */
export async function dumpControl(store: ControlStore, opts: { dittofsVersion: string; now?: Date }): Promise<ControlBackup> {
  const d = store.dialect;
  return store.driver.transaction(
    async (tx) => {
      const [state] = await rows(
        tx,
        'SELECT generation, (SELECT last_value FROM token_versions) AS token_version FROM control_state WHERE id = 1',
      );
      const members = new Map<string, string[]>();
      for (const r of await rows(tx, 'SELECT group_name, username FROM group_members ORDER BY group_name, username')) {
        const list = members.get(text(r.group_name, 'group_name')) ?? [];
        list.push(text(r.username, 'username'));
        members.set(text(r.group_name, 'group_name'), list);
      }
      const grants = new Map<string, PermissionGrant[]>();
      const grantRows = await rows(
        tx,
        'SELECT share, username, group_name, level FROM share_permissions ORDER BY share, username NULLS LAST, group_name',
      );
      for (const r of grantRows) {
        const level = text(r.level, 'level') as PermissionLevel;
        const g: PermissionGrant =
          r.username !== null ? { user: text(r.username, 'username'), level } : { group: text(r.group_name, 'group_name'), level };
        const list = grants.get(text(r.share, 'share')) ?? [];
        list.push(g);
        grants.set(text(r.share, 'share'), list);
      }
      const stores = async (table: string): Promise<BackupStore[]> =>
        (await rows(tx, `SELECT name, type, config, created_at, updated_at FROM ${table} ORDER BY name`)).map((r) => ({
          name: text(r.name, 'name'),
          type: text(r.type, 'type'),
          config: jsonObject(r.config),
          created_at: iso(r.created_at, 'created_at'),
          updated_at: iso(r.updated_at, 'updated_at'),
        }));
      const settings: Record<string, unknown> = {};
      for (const r of await rows(tx, 'SELECT key, value FROM settings ORDER BY key')) settings[text(r.key, 'key')] = d.fromJson(r.value);
      return {
        format: BACKUP_FORMAT,
        version: BACKUP_VERSION,
        created_at: (opts.now ?? new Date()).toISOString(),
        dittofs_version: opts.dittofsVersion,
        schema_version: store.migration.version,
        generation: toNumber(state?.generation, 'generation'),
        token_version: toNumber(state?.token_version, 'token_version'),
        users: (
          await rows(
            tx,
            `SELECT username, uid, gid, email, role, must_change_password, password_hash, nt_hash, created_at, updated_at
             FROM users ORDER BY username`,
          )
        ).map((r) => ({
          username: text(r.username, 'username'),
          uid: toNumber(r.uid, 'uid'),
          gid: toNumber(r.gid, 'gid'),
          email: textOrNull(r.email, 'email'),
          role: text(r.role, 'role') as Role,
          must_change_password: toBool(r.must_change_password, 'must_change_password'),
          password_hash: textOrNull(r.password_hash, 'password_hash'),
          nt_hash: textOrNull(r.nt_hash, 'nt_hash'),
          created_at: iso(r.created_at, 'created_at'),
          updated_at: iso(r.updated_at, 'updated_at'),
        })),
        groups: (await rows(tx, 'SELECT name, gid, created_at, updated_at FROM groups ORDER BY name')).map((r) => ({
          name: text(r.name, 'name'),
          gid: toNumber(r.gid, 'gid'),
          members: members.get(text(r.name, 'name')) ?? [],
          created_at: iso(r.created_at, 'created_at'),
          updated_at: iso(r.updated_at, 'updated_at'),
        })),
        metadata_stores: await stores('metadata_stores'),
        block_stores: await stores('block_stores'),
        shares: (await rows(tx, `SELECT ${SHARE_COLUMNS}, created_at, updated_at FROM shares ORDER BY name`)).map((r) => ({
          ...shareRow(r),
          permissions: grants.get(text(r.name, 'name')) ?? [],
          created_at: iso(r.created_at, 'created_at'),
          updated_at: iso(r.updated_at, 'updated_at'),
        })),
        adapters: (await rows(tx, 'SELECT type, enabled, port FROM adapters ORDER BY type')).map((r) => ({
          type: text(r.type, 'type') as AdapterType,
          enabled: toBool(r.enabled, 'enabled'),
          port: toNumber(r.port, 'port'),
        })),
        settings,
        secrets: (await rows(tx, 'SELECT name, value, created_at FROM control_secrets ORDER BY name')).map((r) => ({
          name: text(r.name, 'name'),
          value: text(r.value, 'value'),
          created_at: iso(r.created_at, 'created_at'),
        })),
      };
    },
    { isolation: 'repeatable read' },
  );
}

export function countBackup(b: ControlBackup): BackupCounts {
  return {
    users: b.users.length,
    groups: b.groups.length,
    metadata_stores: b.metadata_stores.length,
    block_stores: b.block_stores.length,
    shares: b.shares.length,
    permissions: b.shares.reduce((n, s) => n + s.permissions.length, 0),
    adapters: b.adapters.length,
    settings: Object.keys(b.settings).length,
    secrets: b.secrets.length,
  };
}

/** `3 users, 1 group, 2 shares` (kinds with none left out; `nothing` when empty). */
export function describeCounts(c: Partial<BackupCounts>): string {
  const names: Record<keyof BackupCounts, [string, string]> = {
    users: ['user', 'users'],
    groups: ['group', 'groups'],
    metadata_stores: ['metadata store', 'metadata stores'],
    block_stores: ['block store', 'block stores'],
    shares: ['share', 'shares'],
    permissions: ['share permission', 'share permissions'],
    adapters: ['adapter', 'adapters'],
    settings: ['setting', 'settings'],
    secrets: ['generated secret', 'generated secrets'],
  };
  const parts = (Object.keys(names) as (keyof BackupCounts)[])
    .filter((k) => (c[k] ?? 0) > 0)
    .map((k) => `${c[k]} ${names[k][c[k] === 1 ? 0 : 1]}`);
  return parts.length === 0 ? 'nothing' : parts.join(', ');
}

// ---------------------------------------------------------------------------------------------
// Validation

const TOP_KEYS = [
  'format',
  'version',
  'created_at',
  'dittofs_version',
  'schema_version',
  'generation',
  'token_version',
  'users',
  'groups',
  'metadata_stores',
  'block_stores',
  'shares',
  'adapters',
  'settings',
  'secrets',
] as const satisfies readonly (keyof ControlBackup)[];

const USER_KEYS = [
  'username',
  'uid',
  'gid',
  'email',
  'role',
  'must_change_password',
  'password_hash',
  'nt_hash',
  'created_at',
  'updated_at',
] as const satisfies readonly (keyof BackupUser)[];
const GROUP_KEYS = ['name', 'gid', 'members', 'created_at', 'updated_at'] as const satisfies readonly (keyof BackupGroup)[];
const STORE_KEYS = ['name', 'type', 'config', 'created_at', 'updated_at'] as const satisfies readonly (keyof BackupStore)[];
const SHARE_KEYS = [
  'name',
  'metadata_store',
  'block_store',
  'read_only',
  'default_permission',
  'root_squash',
  'anonymous_uid',
  'anonymous_gid',
  'root_mode',
  'root_uid',
  'root_gid',
  'permissions',
  'created_at',
  'updated_at',
] as const satisfies readonly (keyof BackupShare)[];
const ADAPTER_KEYS = ['type', 'enabled', 'port'] as const satisfies readonly (keyof BackupAdapter)[];
const SECRET_KEYS = ['name', 'value', 'created_at'] as const satisfies readonly (keyof BackupSecret)[];

const MAX_PROBLEMS = 50;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v)}`;
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'number' || typeof v === 'boolean') return `${typeof v} ${v}`;
  return v === undefined ? 'nothing' : typeof v;
}

/**
 * Checks a parsed document: the format and version, every field's type and range, unique names and
 * ids, and that every reference (a member, a grant, a share's stores) names an item of the
 * document. Throws a BackupError (INVALID) listing the problems, each with its path
 * (`users[2].uid: ...`); never quotes a password hash, a secret or a store's config.
 */
export function validateBackup(doc: unknown): ControlBackup {
  const problems: string[] = [];
  const bad = (path: string, message: string): void => {
    if (problems.length < MAX_PROBLEMS) problems.push(`${path}: ${message}`);
  };
  const fail = (message: string): never => {
    throw new BackupError(BACKUP_ERROR.INVALID, message, problems);
  };
  if (!isObject(doc)) fail(`not a DittoFS control-plane backup: expected a JSON object, got ${describeValue(doc)}`);
  const d = doc as Record<string, unknown>;
  if (d.format !== BACKUP_FORMAT) {
    fail(
      `not a DittoFS control-plane backup: "format" is ${d.format === undefined ? 'missing' : describeValue(d.format)}, expected "${BACKUP_FORMAT}"`,
    );
  }
  if (typeof d.version !== 'number' || !Number.isInteger(d.version) || d.version < 1) {
    fail(`"version" must be a positive integer, got ${describeValue(d.version)}`);
  }
  if ((d.version as number) > BACKUP_VERSION) {
    fail(
      `the backup has format version ${d.version as number}, written by a newer DittoFS; this one reads version ${BACKUP_VERSION}: upgrade DittoFS`,
    );
  }

  const keys = (v: Record<string, unknown>, allowed: readonly string[], path: string): void => {
    for (const k of Object.keys(v)) if (!allowed.includes(k)) bad(path === '' ? k : `${path}.${k}`, 'unknown key');
  };
  const str = (v: unknown, path: string, opts: { nullable?: boolean; secret?: boolean } = {}): boolean => {
    if (v === null && opts.nullable === true) return true;
    if (typeof v === 'string') return true;
    bad(
      path,
      `expected a string${opts.nullable === true ? ' or null' : ''}, got ${opts.secret === true && v !== undefined ? typeof v : describeValue(v)}`,
    );
    return false;
  };
  const int = (v: unknown, path: string, min: number, max: number): boolean => {
    if (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max) return true;
    bad(path, `expected an integer from ${min} to ${max}, got ${describeValue(v)}`);
    return false;
  };
  const bool = (v: unknown, path: string): void => {
    if (typeof v !== 'boolean') bad(path, `expected true or false, got ${describeValue(v)}`);
  };
  const oneOf = (v: unknown, values: readonly string[], path: string): void => {
    if (typeof v !== 'string' || !values.includes(v)) bad(path, `expected one of ${values.join(', ')}, got ${describeValue(v)}`);
  };
  const time = (v: unknown, path: string, optional = true): void => {
    if (v === undefined && optional) return;
    if (typeof v !== 'string' || Number.isNaN(Date.parse(v)))
      bad(path, `expected a time such as 2025-01-15T10:00:00.000Z, got ${describeValue(v)}`);
  };
  const list = (key: string): Record<string, unknown>[] => {
    const v = d[key];
    if (!Array.isArray(v)) {
      bad(key, `expected a list, got ${v === undefined ? 'nothing (the key is missing)' : describeValue(v)}`);
      return [];
    }
    return v.flatMap((item: unknown, i) => {
      if (isObject(item)) return [item];
      bad(`${key}[${i}]`, `expected an object, got ${describeValue(item)}`);
      return [];
    });
  };
  /** Reports duplicates of `field` among `items`. */
  const unique = (items: Record<string, unknown>[], key: string, field: string, what: string): void => {
    const seen = new Map<unknown, number>();
    items.forEach((item, i) => {
      const v = item[field];
      if (v === undefined) return;
      const prev = seen.get(v);
      if (prev !== undefined) bad(`${key}[${i}].${field}`, `duplicate ${what} ${JSON.stringify(v)} (also ${key}[${prev}])`);
      else seen.set(v, i);
    });
  };

  keys(d, TOP_KEYS, '');
  time(d.created_at, 'created_at', false);
  str(d.dittofs_version, 'dittofs_version');
  int(d.schema_version, 'schema_version', 1, 1_000_000);
  int(d.generation, 'generation', 0, Number.MAX_SAFE_INTEGER);
  int(d.token_version, 'token_version', 0, Number.MAX_SAFE_INTEGER);

  const users = list('users');
  users.forEach((u, i) => {
    const p = `users[${i}]`;
    keys(u, USER_KEYS, p);
    if (str(u.username, `${p}.username`) && !ACCOUNT_NAME_RE.test(u.username as string)) {
      bad(`${p}.username`, `invalid user name ${JSON.stringify(u.username)}`);
    }
    int(u.uid, `${p}.uid`, 0, MAX_ID);
    int(u.gid, `${p}.gid`, 0, MAX_ID);
    str(u.email, `${p}.email`, { nullable: true });
    oneOf(u.role, ROLES, `${p}.role`);
    bool(u.must_change_password, `${p}.must_change_password`);
    str(u.password_hash, `${p}.password_hash`, { nullable: true, secret: true });
    if (
      str(u.nt_hash, `${p}.nt_hash`, { nullable: true, secret: true }) &&
      typeof u.nt_hash === 'string' &&
      !/^[0-9a-f]{32}$/i.test(u.nt_hash)
    ) {
      bad(`${p}.nt_hash`, 'expected 32 hexadecimal digits (value not shown)');
    }
    time(u.created_at, `${p}.created_at`);
    time(u.updated_at, `${p}.updated_at`);
  });
  unique(users, 'users', 'username', 'user');
  unique(users, 'users', 'uid', 'uid');
  const usernames = new Set(users.map((u) => u.username));

  const groups = list('groups');
  groups.forEach((g, i) => {
    const p = `groups[${i}]`;
    keys(g, GROUP_KEYS, p);
    if (str(g.name, `${p}.name`) && !ACCOUNT_NAME_RE.test(g.name as string))
      bad(`${p}.name`, `invalid group name ${JSON.stringify(g.name)}`);
    int(g.gid, `${p}.gid`, 0, MAX_ID);
    if (!Array.isArray(g.members)) bad(`${p}.members`, `expected a list of user names, got ${describeValue(g.members)}`);
    else {
      const seen = new Set<unknown>();
      g.members.forEach((m: unknown, j) => {
        if (!usernames.has(m)) bad(`${p}.members[${j}]`, `no user ${JSON.stringify(m)} in the backup`);
        if (seen.has(m)) bad(`${p}.members[${j}]`, `${JSON.stringify(m)} is listed twice`);
        seen.add(m);
      });
    }
    time(g.created_at, `${p}.created_at`);
    time(g.updated_at, `${p}.updated_at`);
  });
  unique(groups, 'groups', 'name', 'group');
  unique(groups, 'groups', 'gid', 'gid');
  const groupNames = new Set(groups.map((g) => g.name));

  const storeList = (key: 'metadata_stores' | 'block_stores', types: readonly string[]): Set<unknown> => {
    const stores = list(key);
    stores.forEach((s, i) => {
      const p = `${key}[${i}]`;
      keys(s, STORE_KEYS, p);
      if (str(s.name, `${p}.name`) && !STORE_NAME_RE.test(s.name as string))
        bad(`${p}.name`, `invalid store name ${JSON.stringify(s.name)}`);
      oneOf(s.type, types, `${p}.type`);
      // The config may hold secrets: its shape is described, never its values.
      if (!isObject(s.config))
        bad(`${p}.config`, `expected an object of settings, got ${Array.isArray(s.config) ? 'a list' : typeof s.config}`);
      time(s.created_at, `${p}.created_at`);
      time(s.updated_at, `${p}.updated_at`);
    });
    unique(stores, key, 'name', 'store');
    return new Set(stores.map((s) => s.name));
  };
  const metadataStores = storeList('metadata_stores', METADATA_STORE_TYPES);
  const blockStores = storeList('block_stores', BLOCK_STORE_TYPES);

  const shares = list('shares');
  shares.forEach((s, i) => {
    const p = `shares[${i}]`;
    keys(s, SHARE_KEYS, p);
    if (str(s.name, `${p}.name`)) {
      const problem = shareNameProblem(s.name as string);
      if (problem !== undefined) bad(`${p}.name`, problem);
    }
    if (str(s.metadata_store, `${p}.metadata_store`) && !metadataStores.has(s.metadata_store)) {
      bad(`${p}.metadata_store`, `no metadata store ${JSON.stringify(s.metadata_store)} in the backup`);
    }
    if (str(s.block_store, `${p}.block_store`) && !blockStores.has(s.block_store)) {
      bad(`${p}.block_store`, `no block store ${JSON.stringify(s.block_store)} in the backup`);
    }
    bool(s.read_only, `${p}.read_only`);
    oneOf(s.default_permission, PERMISSION_LEVELS, `${p}.default_permission`);
    bool(s.root_squash, `${p}.root_squash`);
    for (const f of ['anonymous_uid', 'anonymous_gid', 'root_uid', 'root_gid'] as const) int(s[f], `${p}.${f}`, 0, MAX_ID);
    int(s.root_mode, `${p}.root_mode`, 0, 0o7777);
    time(s.created_at, `${p}.created_at`);
    time(s.updated_at, `${p}.updated_at`);
    if (!Array.isArray(s.permissions)) {
      bad(`${p}.permissions`, `expected a list of grants, got ${describeValue(s.permissions)}`);
      return;
    }
    const seen = new Set<string>();
    s.permissions.forEach((g: unknown, j) => {
      const gp = `${p}.permissions[${j}]`;
      if (!isObject(g)) return bad(gp, `expected an object, got ${describeValue(g)}`);
      keys(g, ['user', 'group', 'level'], gp);
      oneOf(g.level, PERMISSION_LEVELS, `${gp}.level`);
      if ((g.user === undefined) === (g.group === undefined)) return bad(gp, 'expected exactly one of "user" or "group"');
      const principal = g.user !== undefined ? `user ${JSON.stringify(g.user)}` : `group ${JSON.stringify(g.group)}`;
      if (g.user !== undefined && !usernames.has(g.user)) bad(`${gp}.user`, `no user ${JSON.stringify(g.user)} in the backup`);
      if (g.group !== undefined && !groupNames.has(g.group)) bad(`${gp}.group`, `no group ${JSON.stringify(g.group)} in the backup`);
      if (seen.has(principal)) bad(gp, `a second grant for ${principal}`);
      seen.add(principal);
    });
  });
  unique(shares, 'shares', 'name', 'share');

  const adapters = list('adapters');
  adapters.forEach((a, i) => {
    const p = `adapters[${i}]`;
    keys(a, ADAPTER_KEYS, p);
    oneOf(a.type, ADAPTER_TYPES, `${p}.type`);
    bool(a.enabled, `${p}.enabled`);
    int(a.port, `${p}.port`, 1, 65535);
  });
  unique(adapters, 'adapters', 'type', 'adapter');

  if (!isObject(d.settings))
    bad(
      'settings',
      `expected an object of settings by key, got ${d.settings === undefined ? 'nothing (the key is missing)' : describeValue(d.settings)}`,
    );
  else for (const [k, v] of Object.entries(d.settings)) if (v === undefined || v === null) bad(`settings.${k}`, 'has no value');

  const secrets = list('secrets');
  secrets.forEach((s, i) => {
    const p = `secrets[${i}]`;
    keys(s, SECRET_KEYS, p);
    if (str(s.name, `${p}.name`) && s.name === '') bad(`${p}.name`, 'must not be empty');
    str(s.value, `${p}.value`, { secret: true });
    time(s.created_at, `${p}.created_at`);
  });
  unique(secrets, 'secrets', 'name', 'secret');

  if (problems.length > 0) {
    fail(
      `the backup is not valid (${problems.length >= MAX_PROBLEMS ? `at least ${MAX_PROBLEMS}` : problems.length} problem${problems.length === 1 ? '' : 's'}); nothing was changed`,
    );
  }
  return doc as ControlBackup;
}

// ---------------------------------------------------------------------------------------------
// Load

const TABLES_IN_DELETE_ORDER = [
  'share_permissions',
  'shares',
  'group_members',
  'groups',
  'users',
  'metadata_stores',
  'block_stores',
  'adapters',
  'settings',
  'control_secrets',
] as const;

/** Rows in each control table (a fresh database has none). */
export async function countControlRows(tx: SqlExecutor): Promise<Record<(typeof TABLES_IN_DELETE_ORDER)[number], number>> {
  const sql = `SELECT ${TABLES_IN_DELETE_ORDER.map((t) => `(SELECT count(*) FROM ${t}) AS ${t}`).join(', ')}`;
  const r = (await tx.query(sql)).rows[0] ?? {};
  return Object.fromEntries(TABLES_IN_DELETE_ORDER.map((t) => [t, toNumber(r[t], t)])) as Record<
    (typeof TABLES_IN_DELETE_ORDER)[number],
    number
  >;
}

export interface LoadResult {
  /** The generation after the restore: above both the database's and the backup's. */
  generation: number;
  counts: BackupCounts;
  /** What the database held before (all zero for a fresh one). */
  replaced: Partial<BackupCounts>;
}

/**
 * Replaces the whole control state with the backup's, in one transaction. Refuses (NOT_EMPTY) a
 * database that holds anything unless `force`. The caller makes sure no server runs on it: a
 * running server would keep serving what it read before.
 */
export async function loadControl(store: ControlStore, doc: unknown, opts: { force?: boolean } = {}): Promise<LoadResult> {
  const b = validateBackup(doc);
  if (b.schema_version > store.migration.version) {
    throw new BackupError(
      BACKUP_ERROR.INVALID,
      `the backup comes from a control database at schema version ${b.schema_version}, newer than this DittoFS supports (${store.migration.version}): upgrade DittoFS`,
    );
  }
  const at = (v: string | undefined): string => v ?? new Date().toISOString();
  const d = store.dialect;
  return store.driver.transaction(async (tx) => {
    // As every change does: lock the state row first, so changes of other processes (PostgreSQL)
    // wait for this one.
    await tx.query(d.lockState);
    const before = await countControlRows(tx);
    const replaced: Partial<BackupCounts> = {
      users: before.users,
      groups: before.groups,
      metadata_stores: before.metadata_stores,
      block_stores: before.block_stores,
      shares: before.shares,
      permissions: before.share_permissions,
      adapters: before.adapters,
      settings: before.settings,
      secrets: before.control_secrets,
    };
    if (opts.force !== true && Object.values(before).some((n) => n > 0)) {
      throw new BackupError(
        BACKUP_ERROR.NOT_EMPTY,
        `the control database is not empty (${describeCounts(replaced)}); restoring replaces all of it: use --force to do so`,
      );
    }
    for (const t of TABLES_IN_DELETE_ORDER) await tx.query(`DELETE FROM ${t}`);

    for (const [table, list] of [
      ['metadata_stores', b.metadata_stores],
      ['block_stores', b.block_stores],
    ] as const) {
      for (const s of list) {
        await tx.query(`INSERT INTO ${table} (name, type, config, created_at, updated_at) VALUES ($1, $2, ${d.json(3)}, $4, $5)`, [
          s.name,
          s.type,
          JSON.stringify(s.config),
          at(s.created_at),
          at(s.updated_at ?? s.created_at),
        ]);
      }
    }
    // Token versions restart above every version either database gave out: no token issued before
    // the restore matches a user afterwards.
    await tx.query(d.raiseTokenVersions, [b.token_version]);
    for (const u of b.users) {
      await tx.query(
        `INSERT INTO users (username, uid, gid, email, role, must_change_password, password_hash, nt_hash, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
        [
          u.username,
          u.uid,
          u.gid,
          u.email,
          u.role,
          u.must_change_password,
          u.password_hash,
          u.nt_hash,
          at(u.created_at),
          at(u.updated_at ?? u.created_at),
        ],
      );
    }
    for (const g of b.groups) {
      await tx.query('INSERT INTO groups (name, gid, created_at, updated_at) VALUES ($1, $2, $3, $4)', [
        g.name,
        g.gid,
        at(g.created_at),
        at(g.updated_at ?? g.created_at),
      ]);
      for (const m of g.members) await tx.query('INSERT INTO group_members (group_name, username) VALUES ($1, $2)', [g.name, m]);
    }
    for (const s of b.shares) {
      await tx.query(
        `INSERT INTO shares (${SHARE_COLUMNS}, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
        [...shareValues(s), at(s.created_at), at(s.updated_at ?? s.created_at)],
      );
      for (const g of s.permissions) {
        await tx.query('INSERT INTO share_permissions (share, username, group_name, level) VALUES ($1, $2, $3, $4)', [
          s.name,
          g.user ?? null,
          g.group ?? null,
          g.level,
        ]);
      }
    }
    for (const a of b.adapters)
      await tx.query('INSERT INTO adapters (type, enabled, port) VALUES ($1, $2, $3)', [a.type, a.enabled, a.port]);
    for (const [key, value] of Object.entries(b.settings)) {
      await tx.query(`INSERT INTO settings (key, value) VALUES ($1, ${d.json(2)})`, [key, JSON.stringify(value)]);
    }
    for (const s of b.secrets) {
      await tx.query('INSERT INTO control_secrets (name, value, created_at) VALUES ($1, $2, $3)', [s.name, s.value, at(s.created_at)]);
    }
    await checkUniqueIds(tx, d);
    const { rows: gen } = await tx.query(
      `UPDATE control_state SET generation = ${d.greatest('generation', '$1')} + 1 WHERE id = 1 RETURNING generation`,
      [b.generation],
    );
    return { generation: toNumber(gen[0]?.generation, 'generation'), counts: countBackup(b), replaced };
  });
}
