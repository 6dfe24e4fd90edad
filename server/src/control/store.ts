// The control-plane database: users, groups, stores, shares, permissions, adapters and settings,
// on the SQL driver seam of the metadata engine (SQLite embedded, `pg` for PostgreSQL; the SQL that
// differs between them is in dialect.ts).
//
// Every change runs in one transaction that first locks the single `control_state` row, so changes
// are applied one at a time (checks such as "is this uid free?" stay true until COMMIT), and bumps
// its generation; listeners registered with onChange() hear about it after COMMIT. Reads run in a
// REPEATABLE READ transaction, so a snapshot is consistent. On SQLite every transaction runs alone
// on the one connection (BEGIN IMMEDIATE), which gives both.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { defaultConfig } from '../config/defaults.js';
import type { BlockStoreType, MetadataStoreType } from '../config/types.js';
import { SQLSTATE, silentLogger, sqlState, type DriverLogger, type SqlDriver, type SqlExecutor } from '../meta/sql/driver.js';
import { PgDriver } from '../meta/sql/pg.js';
import { toBool, toNumber } from '../meta/sql/rows.js';
import { controlDialect, type ControlDialect } from './dialect.js';
import { openControlSqlite, openEmbeddedControl } from './embedded.js';
import { CONTROL_ERROR, ControlError, alreadyExists, notFound } from './errors.js';
import { migrateControl, type ControlMigrationReport } from './migrations.js';
import {
  ADAPTER_TYPES,
  FIRST_AUTO_ID,
  MAX_ID,
  describePrincipal,
  type Adapter,
  type AdapterType,
  type ControlChange,
  type ControlSnapshot,
  type Group,
  type PermissionGrant,
  type PermissionLevel,
  type Principal,
  type Role,
  type Share,
  type ShareWithPermissions,
  type StoreKind,
  type StoreRecord,
  type User,
  type UserCredentials,
} from './types.js';
import { errorMessage } from '../error-message.js';
import { smbShareKey } from '../smb2/share-name.js';

export interface NewUser {
  username: string;
  /** Default: the next free id from FIRST_AUTO_ID up. */
  uid?: number;
  /** Default: the uid. */
  gid?: number;
  email?: string | null;
  role?: Role;
  must_change_password?: boolean;
  /** Both null (or absent): the user cannot log in. */
  password_hash?: string | null;
  nt_hash?: string | null;
  /** Groups to join; they must exist. */
  groups?: string[];
}

export interface UserPatch {
  uid?: number;
  gid?: number;
  email?: string | null;
  role?: Role;
  must_change_password?: boolean;
  /** New password hashes; also revokes the user's tokens. */
  credentials?: { password_hash: string | null; nt_hash: string | null };
  /** Replaces the user's group memberships; the groups must exist. */
  groups?: string[];
  /** Revokes the user's tokens without changing anything else. */
  revoke_tokens?: boolean;
}

export type SharePatch = Partial<Omit<Share, 'name'>>;

export interface IdCheckOptions {
  /** The caller has checked the ids against the whole final state (the declarative endpoint, a restore). */
  idsChecked?: boolean;
}

interface GidOverlap {
  user: string;
  group: string;
  gid: number;
}

/** The error for a user whose primary gid is the gid of a group it is not a member of. */
export function gidOverlapError(o: GidOverlap, changed: 'user' | 'group', item?: string): ControlError {
  const why =
    `a client that sends user ${JSON.stringify(o.user)}'s own ids would get group ${JSON.stringify(o.group)}'s share grants; ` +
    `choose another gid, or make the user a member of the group`;
  return new ControlError(
    CONTROL_ERROR.ALREADY_EXISTS,
    changed === 'user'
      ? `gid ${o.gid} is the gid of group ${JSON.stringify(o.group)}, which user ${JSON.stringify(o.user)} is not a member of: ${why}`
      : `gid ${o.gid} is the primary gid of user ${JSON.stringify(o.user)}, who is not a member of group ${JSON.stringify(o.group)}: ${why}`,
    item,
  );
}

// ---------------------------------------------------------------------------------------------
// Rows -> values

type Row = Record<string, unknown>;

function text(v: unknown, column = 'value'): string {
  if (typeof v !== 'string') throw new TypeError(`${column}: expected text from the database, got ${typeof v}`);
  return v;
}

function textOrNull(v: unknown, column = 'value'): string | null {
  return v === null || v === undefined ? null : text(v, column);
}

function iso(v: unknown): string {
  const d = v instanceof Date ? v : new Date(text(v));
  return d.toISOString();
}

/** A PostgreSQL array, or SQLite's JSON array text. */
function strings(v: unknown): string[] {
  const a = typeof v === 'string' ? (JSON.parse(v) as unknown) : v;
  return Array.isArray(a) ? a.map(String) : [];
}

/** PostgreSQL's drivers return jsonb parsed; SQLite returns JSON text. */
function json(v: unknown): Record<string, unknown> {
  const o = typeof v === 'string' ? (JSON.parse(v) as unknown) : v;
  return typeof o === 'object' && o !== null && !Array.isArray(o) ? (o as Record<string, unknown>) : {};
}

const userColumns = (d: ControlDialect): string =>
  `u.username, u.uid, u.gid, u.email, u.role, u.must_change_password, u.created_at, u.updated_at,
  ${d.agg('m.group_name', 'FROM group_members m WHERE m.username = u.username')} AS groups`;

function userRow(r: Row): User {
  return {
    username: text(r.username, 'username'),
    uid: toNumber(r.uid, 'uid'),
    gid: toNumber(r.gid, 'gid'),
    groups: strings(r.groups),
    email: textOrNull(r.email, 'email'),
    role: text(r.role, 'role') as Role,
    must_change_password: toBool(r.must_change_password, 'must_change_password'),
    created_at: iso(r.created_at),
    updated_at: iso(r.updated_at),
  };
}

const groupColumns = (d: ControlDialect): string =>
  `g.name, g.gid, ${d.agg('m.username', 'FROM group_members m WHERE m.group_name = g.name')} AS members`;

function groupRow(r: Row): Group {
  return { name: text(r.name, 'name'), gid: toNumber(r.gid, 'gid'), members: strings(r.members) };
}

export const SHARE_COLUMNS = `name, metadata_store, block_store, read_only, default_permission, root_squash,
  anonymous_uid, anonymous_gid, root_mode, root_uid, root_gid`;

/** A share's values in SHARE_COLUMNS order, for INSERT. */
export function shareValues(s: Share): unknown[] {
  return [
    s.name,
    s.metadata_store,
    s.block_store,
    s.read_only,
    s.default_permission,
    s.root_squash,
    s.anonymous_uid,
    s.anonymous_gid,
    s.root_mode,
    s.root_uid,
    s.root_gid,
  ];
}

export function shareRow(r: Row): Share {
  return {
    name: text(r.name, 'name'),
    metadata_store: text(r.metadata_store, 'metadata_store'),
    block_store: text(r.block_store, 'block_store'),
    read_only: toBool(r.read_only, 'read_only'),
    default_permission: text(r.default_permission, 'default_permission') as PermissionLevel,
    root_squash: toBool(r.root_squash, 'root_squash'),
    anonymous_uid: toNumber(r.anonymous_uid, 'anonymous_uid'),
    anonymous_gid: toNumber(r.anonymous_gid, 'anonymous_gid'),
    root_mode: toNumber(r.root_mode, 'root_mode'),
    root_uid: toNumber(r.root_uid, 'root_uid'),
    root_gid: toNumber(r.root_gid, 'root_gid'),
  };
}

function grantRow(r: Row): PermissionGrant {
  const level = text(r.level, 'level') as PermissionLevel;
  return r.username !== null && r.username !== undefined
    ? { user: text(r.username, 'username'), level }
    : { group: text(r.group_name, 'group_name'), level };
}

const STORE_TABLE: Readonly<Record<StoreKind, string>> = { metadata: 'metadata_stores', block: 'block_stores' };
const SHARE_STORE_COLUMN: Readonly<Record<StoreKind, string>> = { metadata: 'metadata_store', block: 'block_store' };
const STORE_WHAT: Readonly<Record<StoreKind, string>> = { metadata: 'metadata store', block: 'block store' };

export type StoreType<K extends StoreKind> = K extends 'metadata' ? MetadataStoreType : BlockStoreType;

const quoteList = (names: readonly string[]): string => names.map((n) => JSON.stringify(n)).join(', ');

/** Built-in adapter settings, the config file's defaults. */
export function defaultAdapters(): Adapter[] {
  const d = defaultConfig().adapters;
  return [
    { type: 'nfs', enabled: d.nfs.enabled, port: d.nfs.port },
    { type: 'smb', enabled: d.smb.enabled, port: d.smb.port },
  ];
}

// ---------------------------------------------------------------------------------------------
// Queries inside one transaction

/** The control tables, through one transaction. Obtained from ControlStore.read() / mutate(). */
export class ControlQueries {
  constructor(
    private readonly tx: SqlExecutor,
    /** The SQL of the engine underneath (dialect.ts). */
    private readonly d: ControlDialect,
  ) {}

  async generation(): Promise<number> {
    const { rows } = await this.tx.query('SELECT generation FROM control_state WHERE id = 1');
    return toNumber(rows[0]?.generation, 'generation');
  }

  // ---- users

  async listUsers(): Promise<User[]> {
    const { rows } = await this.tx.query(`SELECT ${userColumns(this.d)} FROM users u ORDER BY u.username`);
    return rows.map(userRow);
  }

  async getUser(username: string): Promise<User | undefined> {
    const { rows } = await this.tx.query(`SELECT ${userColumns(this.d)} FROM users u WHERE u.username = $1`, [username]);
    return rows[0] === undefined ? undefined : userRow(rows[0]);
  }

  async requireUser(username: string): Promise<User> {
    const u = await this.getUser(username);
    if (u === undefined) throw notFound(`user ${JSON.stringify(username)}`);
    return u;
  }

  async getCredentials(username: string): Promise<UserCredentials | undefined> {
    const { rows } = await this.tx.query(
      'SELECT username, role, password_hash, nt_hash, token_version, must_change_password FROM users WHERE username = $1',
      [username],
    );
    const r = rows[0];
    if (r === undefined) return undefined;
    return {
      username: text(r.username, 'username'),
      role: text(r.role, 'role') as Role,
      password_hash: textOrNull(r.password_hash, 'password_hash'),
      nt_hash: textOrNull(r.nt_hash, 'nt_hash'),
      token_version: toNumber(r.token_version, 'token_version'),
      must_change_password: toBool(r.must_change_password, 'must_change_password'),
    };
  }

  /** Every user's password hash, by username (null: no password). */
  async passwordHashes(): Promise<Map<string, string | null>> {
    const { rows } = await this.tx.query('SELECT username, password_hash FROM users');
    return new Map(rows.map((r) => [text(r.username, 'username'), textOrNull(r.password_hash, 'password_hash')]));
  }

  async countUsers(): Promise<number> {
    const { rows } = await this.tx.query('SELECT count(*) AS n FROM users');
    return toNumber(rows[0]?.n);
  }

  async countAdmins(): Promise<number> {
    const { rows } = await this.tx.query(`SELECT count(*) AS n FROM users WHERE role = 'admin'`);
    return toNumber(rows[0]?.n);
  }

  /**
   * The next automatic id: from FIRST_AUTO_ID up, above every id in use as a user's uid, a user's
   * primary gid or a group's gid. One counter for both kinds, because AUTH_SYS credentials carry
   * uids and gids side by side and a client's gid names a group (access.ts): a new user's own gid
   * (= its uid) must never be some group's gid, or that user gets the group's grants. Ids are never
   * reused (a deleted user's files keep its uid).
   */
  async nextId(what: 'uid' | 'gid'): Promise<number> {
    const { rows } = await this.tx.query(
      `SELECT coalesce(max(id), 0) AS m FROM (
         SELECT uid AS id FROM users UNION ALL SELECT gid FROM users UNION ALL SELECT gid FROM groups
       ) ids WHERE id >= $1`,
      [FIRST_AUTO_ID],
    );
    const m = toNumber(rows[0]?.m);
    const next = Math.max(FIRST_AUTO_ID, m + 1);
    if (next > MAX_ID) throw new ControlError(CONTROL_ERROR.CONFLICT, `no free ${what} left above ${FIRST_AUTO_ID}: give one explicitly`);
    return next;
  }

  /**
   * Pairs (user, group) where the user's primary gid is the group's gid but the user is not a
   * member: a client sending that user's own ids would get the group's grants. Scoped to one user
   * or one group.
   */
  private async gidOverlaps(scope: { user: string } | { group: string }): Promise<GidOverlap[]> {
    const { rows } = await this.tx.query(
      `SELECT u.username, g.name AS group_name, g.gid FROM users u JOIN groups g ON g.gid = u.gid
       WHERE ${'user' in scope ? 'u.username' : 'g.name'} = $1
         AND NOT EXISTS (SELECT 1 FROM group_members m WHERE m.group_name = g.name AND m.username = u.username)
       ORDER BY u.username, g.name`,
      ['user' in scope ? scope.user : scope.group],
    );
    return rows.map((r) => ({ user: text(r.username, 'username'), group: text(r.group_name, 'name'), gid: toNumber(r.gid, 'gid') }));
  }

  /**
   * Runs `change`, then refuses it (the transaction rolls back) if it made a user's primary gid the
   * gid of a group the user is not a member of. Overlaps that were there before (a database from an
   * older DittoFS) do not block unrelated changes.
   */
  private async withoutNewGidOverlap<T>(scope: { user: string } | { group: string }, change: () => Promise<T>): Promise<T> {
    const key = (o: GidOverlap): string => `${o.user}\0${o.group}`;
    const before = new Set((await this.gidOverlaps(scope)).map(key));
    const result = await change();
    const added = (await this.gidOverlaps(scope)).find((o) => !before.has(key(o)));
    if (added !== undefined) throw gidOverlapError(added, 'user' in scope ? 'user' : 'group');
    return result;
  }

  private async checkUidFree(uid: number, except?: string): Promise<void> {
    const { rows } = await this.tx.query('SELECT username FROM users WHERE uid = $1 AND username IS DISTINCT FROM $2', [
      uid,
      except ?? null,
    ]);
    if (rows[0] !== undefined) {
      throw new ControlError(
        CONTROL_ERROR.ALREADY_EXISTS,
        `uid ${uid} is already used by user ${JSON.stringify(text(rows[0].username, 'username'))}`,
      );
    }
  }

  private async requireGroups(names: readonly string[]): Promise<void> {
    if (names.length === 0) return;
    const { rows } = await this.tx.query(`SELECT name FROM groups WHERE ${this.d.inList('name', 1)}`, [names]);
    const found = new Set(rows.map((r) => text(r.name, 'name')));
    const missing = [...new Set(names)].filter((n) => !found.has(n));
    if (missing.length > 0) {
      throw new ControlError(
        CONTROL_ERROR.UNPROCESSABLE,
        `group${missing.length === 1 ? '' : 's'} ${quoteList(missing)} do${missing.length === 1 ? 'es' : ''} not exist`,
      );
    }
  }

  /**
   * `idsChecked`: the caller has checked that uids are unique in the state at COMMIT (the unique
   * constraint is deferred), so one change can swap ids or reuse one it frees.
   */
  async createUser(u: NewUser, opts: IdCheckOptions = {}): Promise<User> {
    if ((await this.getCredentials(u.username)) !== undefined) throw alreadyExists(`user ${JSON.stringify(u.username)}`);
    const uid = u.uid ?? (await this.nextId('uid'));
    if (opts.idsChecked !== true) await this.checkUidFree(uid);
    const groups = [...new Set(u.groups ?? [])];
    await this.requireGroups(groups);
    const insert = async (): Promise<void> => {
      await this.insertUser(u, uid, groups);
    };
    if (opts.idsChecked === true) await insert();
    else await this.withoutNewGidOverlap({ user: u.username }, insert);
    return this.requireUser(u.username);
  }

  private async insertUser(u: NewUser, uid: number, groups: readonly string[]): Promise<void> {
    await this.tx.query(
      `INSERT INTO users (username, uid, gid, email, role, must_change_password, password_hash, nt_hash)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
      [
        u.username,
        uid,
        u.gid ?? uid,
        u.email ?? null,
        u.role ?? 'user',
        u.must_change_password ?? false,
        u.password_hash ?? null,
        u.nt_hash ?? null,
      ],
    );
    for (const g of groups) await this.tx.query('INSERT INTO group_members (group_name, username) VALUES ($1, $2)', [g, u.username]);
  }

  async updateUser(username: string, p: UserPatch, opts: IdCheckOptions = {}): Promise<User> {
    await this.requireUser(username);
    if (p.uid !== undefined && opts.idsChecked !== true) await this.checkUidFree(p.uid, username);
    if (p.groups !== undefined) await this.requireGroups(p.groups);
    const apply = (): Promise<void> => this.applyUserPatch(username, p);
    if (opts.idsChecked === true || (p.gid === undefined && p.groups === undefined)) await apply();
    else await this.withoutNewGidOverlap({ user: username }, apply);
    return this.requireUser(username);
  }

  private async applyUserPatch(username: string, p: UserPatch): Promise<void> {
    const sets: string[] = [];
    const params: unknown[] = [username];
    const set = (col: string, v: unknown): void => {
      params.push(v);
      sets.push(`${col} = $${params.length}`);
    };
    if (p.uid !== undefined) set('uid', p.uid);
    if (p.gid !== undefined) set('gid', p.gid);
    if (p.email !== undefined) set('email', p.email);
    if (p.role !== undefined) set('role', p.role);
    if (p.must_change_password !== undefined) set('must_change_password', p.must_change_password);
    if (p.credentials !== undefined) {
      set('password_hash', p.credentials.password_hash);
      set('nt_hash', p.credentials.nt_hash);
    }
    if (p.credentials !== undefined || p.revoke_tokens === true) set('token_version', await this.nextTokenVersion());
    if (sets.length > 0 || p.groups !== undefined) sets.push(`updated_at = ${this.d.now}`);
    if (sets.length > 0) await this.tx.query(`UPDATE users SET ${sets.join(', ')} WHERE username = $1`, params);
    if (p.groups !== undefined) {
      await this.tx.query('DELETE FROM group_members WHERE username = $1', [username]);
      for (const g of new Set(p.groups))
        await this.tx.query('INSERT INTO group_members (group_name, username) VALUES ($1, $2)', [g, username]);
    }
  }

  /** A token version never handed out before (user deleted and created again included). */
  private async nextTokenVersion(): Promise<number> {
    const { rows } = await this.tx.query(this.d.nextTokenVersion);
    return toNumber(rows[0]?.v, 'token_version');
  }

  /** Deletes the user with its group memberships and share grants. */
  async deleteUser(username: string): Promise<void> {
    const { rows } = await this.tx.query('DELETE FROM users WHERE username = $1 RETURNING username', [username]);
    if (rows.length === 0) throw notFound(`user ${JSON.stringify(username)}`);
  }

  // ---- groups

  async listGroups(): Promise<Group[]> {
    const { rows } = await this.tx.query(`SELECT ${groupColumns(this.d)} FROM groups g ORDER BY g.name`);
    return rows.map(groupRow);
  }

  async getGroup(name: string): Promise<Group | undefined> {
    const { rows } = await this.tx.query(`SELECT ${groupColumns(this.d)} FROM groups g WHERE g.name = $1`, [name]);
    return rows[0] === undefined ? undefined : groupRow(rows[0]);
  }

  async requireGroup(name: string): Promise<Group> {
    const g = await this.getGroup(name);
    if (g === undefined) throw notFound(`group ${JSON.stringify(name)}`);
    return g;
  }

  private async checkGidFree(gid: number, except?: string): Promise<void> {
    const { rows } = await this.tx.query('SELECT name FROM groups WHERE gid = $1 AND name IS DISTINCT FROM $2', [gid, except ?? null]);
    if (rows[0] !== undefined) {
      throw new ControlError(
        CONTROL_ERROR.ALREADY_EXISTS,
        `gid ${gid} is already used by group ${JSON.stringify(text(rows[0].name, 'name'))}`,
      );
    }
  }

  async createGroup(g: { name: string; gid?: number; members?: string[] }, opts: IdCheckOptions = {}): Promise<Group> {
    if ((await this.getGroup(g.name)) !== undefined) throw alreadyExists(`group ${JSON.stringify(g.name)}`);
    const gid = g.gid ?? (await this.nextId('gid'));
    if (opts.idsChecked !== true) await this.checkGidFree(gid);
    const insert = async (): Promise<void> => {
      await this.tx.query('INSERT INTO groups (name, gid) VALUES ($1, $2)', [g.name, gid]);
      if (g.members !== undefined) await this.replaceMembers(g.name, g.members);
    };
    if (opts.idsChecked === true) await insert();
    else await this.withoutNewGidOverlap({ group: g.name }, insert);
    return this.requireGroup(g.name);
  }

  async updateGroup(name: string, p: { gid?: number; members?: string[] }, opts: IdCheckOptions = {}): Promise<Group> {
    await this.requireGroup(name);
    if (p.gid !== undefined && opts.idsChecked !== true) await this.checkGidFree(p.gid, name);
    const apply = async (): Promise<void> => {
      if (p.gid !== undefined) await this.tx.query(`UPDATE groups SET gid = $2, updated_at = ${this.d.now} WHERE name = $1`, [name, p.gid]);
      if (p.members !== undefined) await this.replaceMembers(name, p.members);
    };
    if (opts.idsChecked === true) await apply();
    else await this.withoutNewGidOverlap({ group: name }, apply);
    return this.requireGroup(name);
  }

  /** Replaces the members of a group; the users must exist. */
  async setMembers(name: string, members: readonly string[]): Promise<void> {
    await this.withoutNewGidOverlap({ group: name }, () => this.replaceMembers(name, members));
  }

  private async replaceMembers(name: string, members: readonly string[]): Promise<void> {
    const wanted = [...new Set(members)];
    if (wanted.length > 0) {
      const { rows } = await this.tx.query(`SELECT username FROM users WHERE ${this.d.inList('username', 1)}`, [wanted]);
      const found = new Set(rows.map((r) => text(r.username, 'username')));
      const missing = wanted.filter((u) => !found.has(u));
      if (missing.length > 0)
        throw new ControlError(
          CONTROL_ERROR.UNPROCESSABLE,
          `user${missing.length === 1 ? '' : 's'} ${quoteList(missing)} do${missing.length === 1 ? 'es' : ''} not exist`,
        );
    }
    await this.tx.query(`DELETE FROM group_members WHERE group_name = $1 AND NOT (${this.d.inList('username', 2)})`, [name, wanted]);
    for (const u of wanted) {
      await this.tx.query('INSERT INTO group_members (group_name, username) VALUES ($1, $2) ON CONFLICT DO NOTHING', [name, u]);
    }
  }

  async addMember(group: string, username: string): Promise<Group> {
    await this.requireGroup(group);
    await this.requireUser(username);
    await this.tx.query('INSERT INTO group_members (group_name, username) VALUES ($1, $2) ON CONFLICT DO NOTHING', [group, username]);
    return this.requireGroup(group);
  }

  async removeMember(group: string, username: string): Promise<Group> {
    await this.requireGroup(group);
    await this.requireUser(username);
    await this.withoutNewGidOverlap({ group }, async () => {
      await this.tx.query('DELETE FROM group_members WHERE group_name = $1 AND username = $2', [group, username]);
    });
    return this.requireGroup(group);
  }

  /** Deletes the group with its memberships and share grants. */
  async deleteGroup(name: string): Promise<void> {
    const { rows } = await this.tx.query('DELETE FROM groups WHERE name = $1 RETURNING name', [name]);
    if (rows.length === 0) throw notFound(`group ${JSON.stringify(name)}`);
  }

  // ---- stores

  async listStores<K extends StoreKind>(kind: K): Promise<StoreRecord<StoreType<K>>[]> {
    const { rows } = await this.tx.query(`SELECT name, type, config FROM ${STORE_TABLE[kind]} ORDER BY name`);
    return rows.map((r) => ({ name: text(r.name, 'name'), type: text(r.type, 'type') as StoreType<K>, config: json(r.config) }));
  }

  async getStore<K extends StoreKind>(kind: K, name: string): Promise<StoreRecord<StoreType<K>> | undefined> {
    const { rows } = await this.tx.query(`SELECT name, type, config FROM ${STORE_TABLE[kind]} WHERE name = $1`, [name]);
    const r = rows[0];
    return r === undefined ? undefined : { name: text(r.name, 'name'), type: text(r.type, 'type') as StoreType<K>, config: json(r.config) };
  }

  async requireStore<K extends StoreKind>(kind: K, name: string): Promise<StoreRecord<StoreType<K>>> {
    const s = await this.getStore(kind, name);
    if (s === undefined) throw notFound(`${STORE_WHAT[kind]} ${JSON.stringify(name)}`);
    return s;
  }

  async createStore<K extends StoreKind>(kind: K, s: StoreRecord<StoreType<K>>): Promise<StoreRecord<StoreType<K>>> {
    if ((await this.getStore(kind, s.name)) !== undefined) throw alreadyExists(`${STORE_WHAT[kind]} ${JSON.stringify(s.name)}`);
    await this.tx.query(`INSERT INTO ${STORE_TABLE[kind]} (name, type, config) VALUES ($1, $2, ${this.d.json(3)})`, [
      s.name,
      s.type,
      JSON.stringify(s.config),
    ]);
    return this.requireStore(kind, s.name);
  }

  async updateStore<K extends StoreKind>(kind: K, s: StoreRecord<StoreType<K>>): Promise<StoreRecord<StoreType<K>>> {
    const { rows } = await this.tx.query(
      `UPDATE ${STORE_TABLE[kind]} SET type = $2, config = ${this.d.json(3)}, updated_at = ${this.d.now} WHERE name = $1 RETURNING name`,
      [s.name, s.type, JSON.stringify(s.config)],
    );
    if (rows.length === 0) throw notFound(`${STORE_WHAT[kind]} ${JSON.stringify(s.name)}`);
    return this.requireStore(kind, s.name);
  }

  /** Names of the shares that use a store. */
  async sharesUsing(kind: StoreKind, name: string): Promise<string[]> {
    const { rows } = await this.tx.query(`SELECT name FROM shares WHERE ${SHARE_STORE_COLUMN[kind]} = $1 ORDER BY name`, [name]);
    return rows.map((r) => text(r.name, 'name'));
  }

  /** Deletes a store no share uses; IN_USE names the shares that do. */
  async deleteStore(kind: StoreKind, name: string): Promise<void> {
    await this.requireStore(kind, name);
    const users = await this.sharesUsing(kind, name);
    if (users.length > 0) {
      throw new ControlError(
        CONTROL_ERROR.IN_USE,
        `${STORE_WHAT[kind]} ${JSON.stringify(name)} is used by share${users.length === 1 ? '' : 's'} ${quoteList(users)}`,
      );
    }
    await this.tx.query(`DELETE FROM ${STORE_TABLE[kind]} WHERE name = $1`, [name]);
  }

  // ---- shares

  async listShares(): Promise<Share[]> {
    const { rows } = await this.tx.query(`SELECT ${SHARE_COLUMNS} FROM shares ORDER BY name`);
    return rows.map(shareRow);
  }

  async getShare(name: string): Promise<Share | undefined> {
    const { rows } = await this.tx.query(`SELECT ${SHARE_COLUMNS} FROM shares WHERE name = $1`, [name]);
    return rows[0] === undefined ? undefined : shareRow(rows[0]);
  }

  async requireShare(name: string): Promise<Share> {
    const s = await this.getShare(name);
    if (s === undefined) throw notFound(`share ${JSON.stringify(name)}`);
    return s;
  }

  private async requireStoresOf(s: { metadata_store?: string; block_store?: string }): Promise<void> {
    for (const kind of ['metadata', 'block'] as const) {
      const name = kind === 'metadata' ? s.metadata_store : s.block_store;
      if (name !== undefined && (await this.getStore(kind, name)) === undefined) {
        throw new ControlError(CONTROL_ERROR.UNPROCESSABLE, `${STORE_WHAT[kind]} ${JSON.stringify(name)} does not exist`);
      }
    }
  }

  async createShare(s: Share): Promise<Share> {
    if ((await this.getShare(s.name)) !== undefined) throw alreadyExists(`share ${JSON.stringify(s.name)}`);
    // SMB clients name a share without its leading "/" and without case: two shares of one such
    // name would be one share to them (the other unreachable, its clients given the first).
    const smb = smbShareKey(s.name);
    const clash = (await this.listShares()).find((x) => smbShareKey(x.name) === smb);
    if (clash !== undefined)
      throw alreadyExists(
        `share ${JSON.stringify(s.name)}: SMB clients would take it for share ${JSON.stringify(clash.name)} (their share names ignore case)`,
      );
    await this.requireStoresOf(s);
    await this.tx.query(`INSERT INTO shares (${SHARE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`, shareValues(s));
    return this.requireShare(s.name);
  }

  async updateShare(name: string, p: SharePatch): Promise<Share> {
    const cur = await this.requireShare(name);
    await this.requireStoresOf(p);
    const s: Share = { ...cur, ...p, name };
    await this.tx.query(
      `UPDATE shares SET metadata_store = $2, block_store = $3, read_only = $4, default_permission = $5, root_squash = $6,
         anonymous_uid = $7, anonymous_gid = $8, root_mode = $9, root_uid = $10, root_gid = $11, updated_at = ${this.d.now}
       WHERE name = $1`,
      [
        name,
        s.metadata_store,
        s.block_store,
        s.read_only,
        s.default_permission,
        s.root_squash,
        s.anonymous_uid,
        s.anonymous_gid,
        s.root_mode,
        s.root_uid,
        s.root_gid,
      ],
    );
    return this.requireShare(name);
  }

  /** Deletes the share and its grants. */
  async deleteShare(name: string): Promise<void> {
    const { rows } = await this.tx.query('DELETE FROM shares WHERE name = $1 RETURNING name', [name]);
    if (rows.length === 0) throw notFound(`share ${JSON.stringify(name)}`);
  }

  // ---- permissions

  /** A share's grants: users first, then groups, each sorted by name. */
  async listPermissions(share: string): Promise<PermissionGrant[]> {
    await this.requireShare(share);
    const { rows } = await this.tx.query(
      `SELECT username, group_name, level FROM share_permissions WHERE share = $1
       ORDER BY username IS NULL, username, group_name`,
      [share],
    );
    return rows.map(grantRow);
  }

  /** Every share's grants, by share name. */
  async allPermissions(): Promise<Map<string, PermissionGrant[]>> {
    const { rows } = await this.tx.query(
      'SELECT share, username, group_name, level FROM share_permissions ORDER BY share, username IS NULL, username, group_name',
    );
    const out = new Map<string, PermissionGrant[]>();
    for (const r of rows) {
      const share = text(r.share, 'share');
      let list = out.get(share);
      if (list === undefined) out.set(share, (list = []));
      list.push(grantRow(r));
    }
    return out;
  }

  private async requirePrincipal(p: Principal): Promise<void> {
    if (p.user !== undefined) await this.requireUser(p.user);
    else await this.requireGroup(p.group);
  }

  async setPermission(share: string, p: Principal, level: PermissionLevel): Promise<PermissionGrant> {
    await this.requireShare(share);
    await this.requirePrincipal(p);
    if (p.user !== undefined) {
      await this.tx.query(
        `INSERT INTO share_permissions (share, username, level) VALUES ($1, $2, $3)
         ON CONFLICT (share, username) WHERE username IS NOT NULL DO UPDATE SET level = EXCLUDED.level`,
        [share, p.user, level],
      );
      return { user: p.user, level };
    }
    await this.tx.query(
      `INSERT INTO share_permissions (share, group_name, level) VALUES ($1, $2, $3)
       ON CONFLICT (share, group_name) WHERE group_name IS NOT NULL DO UPDATE SET level = EXCLUDED.level`,
      [share, p.group, level],
    );
    return { group: p.group, level };
  }

  async removePermission(share: string, p: Principal): Promise<void> {
    await this.requireShare(share);
    await this.requirePrincipal(p);
    const { rows } =
      p.user !== undefined
        ? await this.tx.query('DELETE FROM share_permissions WHERE share = $1 AND username = $2 RETURNING share', [share, p.user])
        : await this.tx.query('DELETE FROM share_permissions WHERE share = $1 AND group_name = $2 RETURNING share', [share, p.group]);
    if (rows.length === 0) throw notFound(`a grant to ${describePrincipal(p)} on share ${JSON.stringify(share)}`);
  }

  /** Replaces all of a share's grants. */
  async replacePermissions(share: string, grants: readonly PermissionGrant[]): Promise<void> {
    await this.tx.query('DELETE FROM share_permissions WHERE share = $1', [share]);
    for (const g of grants) {
      await this.tx.query('INSERT INTO share_permissions (share, username, group_name, level) VALUES ($1, $2, $3, $4)', [
        share,
        g.user ?? null,
        g.group ?? null,
        g.level,
      ]);
    }
  }

  // ---- adapters

  /** Both adapter types; one never configured shows its default. */
  async listAdapters(): Promise<Adapter[]> {
    const { rows } = await this.tx.query('SELECT type, enabled, port FROM adapters');
    const stored = new Map(
      rows.map((r) => [
        text(r.type, 'type'),
        { type: text(r.type, 'type') as AdapterType, enabled: toBool(r.enabled, 'enabled'), port: toNumber(r.port) },
      ]),
    );
    return defaultAdapters().map((d) => stored.get(d.type) ?? d);
  }

  async getAdapter(type: AdapterType): Promise<Adapter> {
    const a = (await this.listAdapters()).find((x) => x.type === type);
    if (a === undefined) throw notFound(`adapter ${JSON.stringify(type)}`);
    return a;
  }

  async updateAdapter(type: AdapterType, p: { enabled?: boolean; port?: number }): Promise<Adapter> {
    const all = await this.listAdapters();
    const cur = all.find((x) => x.type === type);
    if (cur === undefined) throw notFound(`adapter ${JSON.stringify(type)}`);
    const next: Adapter = { type, enabled: p.enabled ?? cur.enabled, port: p.port ?? cur.port };
    const clash = all.find((x) => x.type !== type && x.port === next.port);
    if (clash !== undefined) throw new ControlError(CONTROL_ERROR.ALREADY_EXISTS, `port ${next.port} is used by the ${clash.type} adapter`);
    await this.tx.query(
      `INSERT INTO adapters (type, enabled, port) VALUES ($1, $2, $3)
       ON CONFLICT (type) DO UPDATE SET enabled = EXCLUDED.enabled, port = EXCLUDED.port, updated_at = ${this.d.now}`,
      [type, next.enabled, next.port],
    );
    return next;
  }

  /** Stores the given adapter settings for types that have none yet; returns how many it stored. */
  async ensureAdapters(adapters: readonly Adapter[]): Promise<number> {
    let n = 0;
    for (const a of adapters) {
      if (!ADAPTER_TYPES.includes(a.type)) continue;
      const { rows } = await this.tx.query(
        'INSERT INTO adapters (type, enabled, port) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING type',
        [a.type, a.enabled, a.port],
      );
      n += rows.length;
    }
    return n;
  }

  // ---- settings

  async listSettings(): Promise<Record<string, unknown>> {
    const { rows } = await this.tx.query('SELECT key, value FROM settings ORDER BY key');
    const out: Record<string, unknown> = {};
    for (const r of rows) out[text(r.key, 'key')] = this.d.fromJson(r.value);
    return out;
  }

  async getSetting(key: string): Promise<{ value: unknown } | undefined> {
    const { rows } = await this.tx.query('SELECT value FROM settings WHERE key = $1', [key]);
    return rows[0] === undefined ? undefined : { value: this.d.fromJson(rows[0].value) };
  }

  async putSetting(key: string, value: unknown): Promise<void> {
    await this.tx.query(
      `INSERT INTO settings (key, value) VALUES ($1, ${this.d.json(2)})
       ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = ${this.d.now}`,
      [key, JSON.stringify(value)],
    );
  }

  async deleteSetting(key: string): Promise<boolean> {
    const { rows } = await this.tx.query('DELETE FROM settings WHERE key = $1 RETURNING key', [key]);
    return rows.length > 0;
  }

  // ---- generated secrets

  /** The secret stored under `name`, storing `value` first if there is none. */
  async secret(name: string, value: string): Promise<{ value: string; created: boolean }> {
    const ins = await this.tx.query('INSERT INTO control_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING value', [
      name,
      value,
    ]);
    if (ins.rows[0] !== undefined) return { value, created: true };
    const { rows } = await this.tx.query('SELECT value FROM control_secrets WHERE name = $1', [name]);
    return { value: text(rows[0]?.value, 'value'), created: false };
  }

  // ---- everything

  async snapshot(): Promise<ControlSnapshot> {
    const generation = await this.generation();
    const users = await this.listUsers();
    const permissions = await this.allPermissions();
    const shares: ShareWithPermissions[] = (await this.listShares()).map((s) => ({ ...s, permissions: permissions.get(s.name) ?? [] }));
    return {
      generation,
      metadata_stores: await this.listStores('metadata'),
      block_stores: await this.listStores('block'),
      shares,
      users: users.map((u) => ({ username: u.username, uid: u.uid, gid: u.gid, groups: u.groups, role: u.role })),
      groups: await this.listGroups(),
      adapters: await this.listAdapters(),
      settings: await this.listSettings(),
    };
  }
}

// ---------------------------------------------------------------------------------------------
// The store

export type ControlListener = (change: ControlChange) => void;

export interface MutateOptions<T> {
  /** Whether the result is a change (bumps the generation, notifies listeners). Default: always. */
  changed?: (result: T) => boolean;
}

/** Unique and foreign-key violations that slipped past the checks (they should not): 409, no SQL text. */
function translateSqlError(e: unknown): unknown {
  const code = sqlState(e);
  if (code === SQLSTATE.UNIQUE_VIOLATION)
    return new ControlError(CONTROL_ERROR.ALREADY_EXISTS, 'the change conflicts with an existing item (a name, uid or gid in use)');
  if (code === SQLSTATE.FOREIGN_KEY_VIOLATION)
    return new ControlError(CONTROL_ERROR.IN_USE, 'the change would leave an item referring to one that does not exist');
  return e;
}

/**
 * SQLite: uid and gid uniqueness at the end of a change (PostgreSQL checks its deferred UNIQUE
 * constraints at COMMIT), so one change can still swap two ids; the same error either way.
 */
export async function checkUniqueIds(tx: SqlExecutor, d: ControlDialect): Promise<void> {
  if (d.duplicateIds === null) return;
  const { rows } = await tx.query(d.duplicateIds);
  if (rows[0] !== undefined)
    throw Object.assign(new Error(`${text(rows[0].what, 'what')} ${toNumber(rows[0].id, 'id')} is held twice`), {
      code: SQLSTATE.UNIQUE_VIOLATION,
    });
}

export class ControlStore {
  private readonly listeners = new Set<ControlListener>();
  private closed = false;
  /** The SQL of the engine underneath. */
  readonly dialect: ControlDialect;

  constructor(
    /** The connection, for tests and diagnostics; go through read() and mutate() otherwise. */
    readonly driver: SqlDriver,
    /** What open() did to the schema. */
    readonly migration: ControlMigrationReport,
    private readonly log: DriverLogger = silentLogger,
    private readonly onClose: () => Promise<void> = async () => {},
  ) {
    this.dialect = controlDialect(driver.dialect);
  }

  /** Migrates the control tables on `driver` and returns a store over it (closing it closes the driver). */
  static async open(driver: SqlDriver, opts: { logger?: DriverLogger; onClose?: () => Promise<void> } = {}): Promise<ControlStore> {
    const migration = await migrateControl(driver);
    return new ControlStore(driver, migration, opts.logger, opts.onClose);
  }

  /** `embedded` or `postgres`: the engine underneath (`memory` is embedded in a temp directory). */
  get kind(): 'embedded' | 'postgres' {
    return this.driver.kind;
  }

  /** Runs `fn` in one consistent (REPEATABLE READ) read transaction. */
  read<T>(fn: (q: ControlQueries) => Promise<T>): Promise<T> {
    return this.driver.transaction((tx) => fn(new ControlQueries(tx, this.dialect)), { isolation: 'repeatable read' });
  }

  /**
   * Runs `fn` as one change: one transaction, serialized with every other change. When it commits
   * and changed something, the generation is one higher and listeners are told.
   */
  async mutate<T>(fn: (q: ControlQueries) => Promise<T>, opts: MutateOptions<T> = {}): Promise<T> {
    return (await this.change(fn, opts)).result;
  }

  /** mutate(), also telling the generation after the change (unchanged: the current one). */
  async change<T>(
    fn: (q: ControlQueries) => Promise<T>,
    opts: MutateOptions<T> = {},
  ): Promise<{ result: T; generation: number; changed: boolean }> {
    let outcome: { result: T; generation: number; changed: boolean };
    try {
      outcome = await this.driver.transaction(async (tx) => {
        const locked = await tx.query(this.dialect.lockState);
        const result = await fn(new ControlQueries(tx, this.dialect));
        await checkUniqueIds(tx, this.dialect);
        if (opts.changed !== undefined && !opts.changed(result)) {
          return { result, generation: toNumber(locked.rows[0]?.generation, 'generation'), changed: false };
        }
        const { rows } = await tx.query('UPDATE control_state SET generation = generation + 1 WHERE id = 1 RETURNING generation');
        return { result, generation: toNumber(rows[0]?.generation, 'generation'), changed: true };
      });
    } catch (e) {
      throw translateSqlError(e);
    }
    if (outcome.changed) this.notify({ generation: outcome.generation });
    return outcome;
  }

  /** Calls `listener` after every committed change; returns a function that unsubscribes. */
  onChange(listener: ControlListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private notify(change: ControlChange): void {
    for (const l of [...this.listeners]) {
      try {
        l(change);
      } catch (err) {
        this.log.warn({ err: errorMessage(err) }, 'control store: change listener failed');
      }
    }
  }

  generation(): Promise<number> {
    return this.read((q) => q.generation());
  }

  snapshot(): Promise<ControlSnapshot> {
    return this.read((q) => q.snapshot());
  }

  // ---- users
  listUsers(): Promise<User[]> {
    return this.read((q) => q.listUsers());
  }
  getUser(username: string): Promise<User | undefined> {
    return this.read((q) => q.getUser(username));
  }
  getCredentials(username: string): Promise<UserCredentials | undefined> {
    return this.read((q) => q.getCredentials(username));
  }
  /** The NT hash SMB NTLM authentication needs (hex), or undefined. */
  async getNtHash(username: string): Promise<string | undefined> {
    return (await this.getCredentials(username))?.nt_hash ?? undefined;
  }
  createUser(u: NewUser): Promise<User> {
    return this.mutate((q) => q.createUser(u));
  }
  updateUser(username: string, p: UserPatch): Promise<User> {
    return this.mutate((q) => q.updateUser(username, p));
  }
  deleteUser(username: string): Promise<void> {
    return this.mutate((q) => q.deleteUser(username));
  }

  // ---- groups
  listGroups(): Promise<Group[]> {
    return this.read((q) => q.listGroups());
  }
  getGroup(name: string): Promise<Group | undefined> {
    return this.read((q) => q.getGroup(name));
  }
  createGroup(g: { name: string; gid?: number; members?: string[] }): Promise<Group> {
    return this.mutate((q) => q.createGroup(g));
  }
  deleteGroup(name: string): Promise<void> {
    return this.mutate((q) => q.deleteGroup(name));
  }
  addMember(group: string, username: string): Promise<Group> {
    return this.mutate((q) => q.addMember(group, username));
  }
  removeMember(group: string, username: string): Promise<Group> {
    return this.mutate((q) => q.removeMember(group, username));
  }

  // ---- stores
  listStores<K extends StoreKind>(kind: K): Promise<StoreRecord<StoreType<K>>[]> {
    return this.read((q) => q.listStores(kind));
  }
  getStore<K extends StoreKind>(kind: K, name: string): Promise<StoreRecord<StoreType<K>> | undefined> {
    return this.read((q) => q.getStore(kind, name));
  }
  createStore<K extends StoreKind>(kind: K, s: StoreRecord<StoreType<K>>): Promise<StoreRecord<StoreType<K>>> {
    return this.mutate((q) => q.createStore(kind, s));
  }
  updateStore<K extends StoreKind>(kind: K, s: StoreRecord<StoreType<K>>): Promise<StoreRecord<StoreType<K>>> {
    return this.mutate((q) => q.updateStore(kind, s));
  }
  deleteStore(kind: StoreKind, name: string): Promise<void> {
    return this.mutate((q) => q.deleteStore(kind, name));
  }

  // ---- shares
  listShares(): Promise<Share[]> {
    return this.read((q) => q.listShares());
  }
  getShare(name: string): Promise<Share | undefined> {
    return this.read((q) => q.getShare(name));
  }
  createShare(s: Share): Promise<Share> {
    return this.mutate((q) => q.createShare(s));
  }
  updateShare(name: string, p: SharePatch): Promise<Share> {
    return this.mutate((q) => q.updateShare(name, p));
  }
  deleteShare(name: string): Promise<void> {
    return this.mutate((q) => q.deleteShare(name));
  }

  // ---- permissions
  listPermissions(share: string): Promise<PermissionGrant[]> {
    return this.read((q) => q.listPermissions(share));
  }
  setPermission(share: string, p: Principal, level: PermissionLevel): Promise<PermissionGrant> {
    return this.mutate((q) => q.setPermission(share, p, level));
  }
  removePermission(share: string, p: Principal): Promise<void> {
    return this.mutate((q) => q.removePermission(share, p));
  }

  // ---- adapters
  listAdapters(): Promise<Adapter[]> {
    return this.read((q) => q.listAdapters());
  }
  getAdapter(type: AdapterType): Promise<Adapter> {
    return this.read((q) => q.getAdapter(type));
  }
  updateAdapter(type: AdapterType, p: { enabled?: boolean; port?: number }): Promise<Adapter> {
    return this.mutate((q) => q.updateAdapter(type, p));
  }
  /** Seeds adapter settings (e.g. from the config file) for types the database has none for. */
  ensureAdapters(adapters: readonly Adapter[]): Promise<number> {
    return this.mutate((q) => q.ensureAdapters(adapters), { changed: (n) => n > 0 });
  }

  // ---- settings
  listSettings(): Promise<Record<string, unknown>> {
    return this.read((q) => q.listSettings());
  }
  getSetting(key: string): Promise<{ value: unknown } | undefined> {
    return this.read((q) => q.getSetting(key));
  }
  putSetting(key: string, value: unknown): Promise<void> {
    return this.mutate((q) => q.putSetting(key, value));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.listeners.clear();
    try {
      await this.driver.close();
    } finally {
      await this.onClose();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Opening

export const CONTROL_STORE_TYPES = Object.freeze(['embedded', 'postgres', 'memory'] as const);
export type ControlStoreType = (typeof CONTROL_STORE_TYPES)[number];

export interface OpenControlStoreOptions {
  /**
   * `embedded`: SQLite in `path` (one process at a time; a PGlite database found there is moved
   * to SQLite first, see embedded.ts); `postgres`: a pool on `url`;
   * `memory`: SQLite in a fresh temporary directory, deleted by close() (tests, throwaway servers).
   */
  type: ControlStoreType;
  /** `embedded` (required): the database directory, e.g. `<data_dir>/control`. */
  path?: string;
  /** `postgres` (required). */
  url?: string;
  /** `postgres`: a schema for the control tables (created if missing). */
  schema?: string;
  /** `postgres`: pooled connections (default 4: the control plane is lightly used). */
  poolSize?: number;
  logger?: DriverLogger;
  /**
   * `postgres`: take the database's single-server fence (meta/sql/fence.ts): a server does, so a
   * second one refuses the database; tools that only read or copy it (backup) do not.
   */
  fence?: boolean;
}

/** Opens (creating and migrating if needed) the control database. */
export async function openControlStore(opts: OpenControlStoreOptions): Promise<ControlStore> {
  const logger = opts.logger ?? silentLogger;
  switch (opts.type) {
    case 'embedded': {
      if (opts.path === undefined || opts.path === '') throw new Error('control store: type embedded needs a path');
      return openOn(await openEmbeddedControl(opts.path, logger), logger);
    }
    case 'postgres': {
      if (opts.url === undefined || opts.url === '') throw new Error('control store: type postgres needs a url');
      const driver = await PgDriver.open({
        url: opts.url,
        poolSize: opts.poolSize ?? 4,
        logger,
        applicationName: 'dittofs-control',
        ...(opts.schema === undefined ? {} : { schema: opts.schema }),
        ...(opts.fence === true ? { fence: { purpose: 'control' as const, label: 'the control database' } } : {}),
      });
      return openOn(driver, logger);
    }
    case 'memory': {
      // SQLite in a temporary directory (the driver keeps its lock and WAL beside the database);
      // nothing of it is synced to disk on purpose: it is gone when the server stops.
      const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-control-'));
      const cleanup = (): Promise<void> => rm(dir, { recursive: true, force: true });
      try {
        return await openOn(openControlSqlite(dir, logger, 'commit'), logger, cleanup);
      } catch (e) {
        await cleanup();
        throw e;
      }
    }
  }
}

async function openOn(driver: SqlDriver, logger: DriverLogger, onClose?: () => Promise<void>): Promise<ControlStore> {
  try {
    return await ControlStore.open(driver, { logger, ...(onClose === undefined ? {} : { onClose }) });
  } catch (e) {
    await driver.close().catch(() => undefined);
    throw e;
  }
}
