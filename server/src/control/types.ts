// The control plane's data model: what the control database holds, what the server reads from it
// (ControlSnapshot) and what the REST API shows. Keys are snake_case, as in the API and the config
// file.
import { NOBODY_ID, SHARE_DEFAULTS } from '../config/defaults.js';
import type { BlockStoreType, MetadataStoreType } from '../config/types.js';

export const ROLES = Object.freeze(['admin', 'operator', 'user'] as const);
export type Role = (typeof ROLES)[number];

/** Ordered from least to most: `best` of two levels is the one later in this list. */
export const PERMISSION_LEVELS = Object.freeze(['none', 'read', 'read-write', 'admin'] as const);
export type PermissionLevel = (typeof PERMISSION_LEVELS)[number];

export const ADAPTER_TYPES = Object.freeze(['nfs', 'smb'] as const);
export type AdapterType = (typeof ADAPTER_TYPES)[number];

export const STORE_KINDS = Object.freeze(['metadata', 'block'] as const);
export type StoreKind = (typeof STORE_KINDS)[number];

/** The user created on first start; never removed by the declarative state endpoint. */
export const BOOTSTRAP_ADMIN = 'admin';

/** uids and gids given out automatically start here (clear of system and typical desktop ids). */
export const FIRST_AUTO_ID = 10_000;
/** 2^32 - 1 means "no id" to many system calls. */
export const MAX_ID = 2 ** 32 - 2;

/** User and group names: POSIX-like, lower case (SMB compares names case-insensitively). */
export const ACCOUNT_NAME_RE = /^[a-z_][a-z0-9_.-]{0,63}$/;
export const ACCOUNT_NAME_PATTERN = '^[a-z_][a-z0-9_.-]{0,63}$';
export const MAX_EMAIL_LENGTH = 254;

export interface User {
  username: string;
  uid: number;
  /** Primary gid; defaults to the uid (a user private group, as useradd does). */
  gid: number;
  /** Names of the groups the user is a member of, sorted. */
  groups: string[];
  email: string | null;
  role: Role;
  must_change_password: boolean;
  created_at: string;
  updated_at: string;
}

/** What authentication needs; never leaves the server. */
export interface UserCredentials {
  username: string;
  role: Role;
  /** bcrypt; null: the user cannot log in (an identity for NFS only). */
  password_hash: string | null;
  /** MD4 of the UTF-16LE password, hex (SMB NTLM). */
  nt_hash: string | null;
  /** Part of every token; bumping it revokes the user's tokens. */
  token_version: number;
  must_change_password: boolean;
}

export interface Group {
  name: string;
  gid: number;
  /** Usernames, sorted. */
  members: string[];
}

export interface StoreRecord<T extends string = string> {
  name: string;
  type: T;
  /** The store's settings as in the config file's `metadata.stores.NAME` / `blocks.stores.NAME`, minus `type`. */
  config: Record<string, unknown>;
}
export type MetadataStoreRecord = StoreRecord<MetadataStoreType>;
export type BlockStoreRecord = StoreRecord<BlockStoreType>;

export interface Share {
  /** Export path, e.g. `/export`. */
  name: string;
  metadata_store: string;
  block_store: string;
  read_only: boolean;
  /** Access of users with no grant of their own or through a group, and of unknown uids. */
  default_permission: PermissionLevel;
  root_squash: boolean;
  anonymous_uid: number;
  anonymous_gid: number;
  root_mode: number;
  root_uid: number;
  root_gid: number;
}

export type ShareSettings = Omit<Share, 'name' | 'metadata_store' | 'block_store'>;

/**
 * Share fields left out of a request. `default_permission` is read-write so that a share behaves
 * as before access control existed: the POSIX mode bits decide.
 */
export const SHARE_SETTINGS_DEFAULTS: Readonly<ShareSettings> = Object.freeze({
  read_only: SHARE_DEFAULTS.read_only,
  default_permission: 'read-write',
  root_squash: SHARE_DEFAULTS.root_squash,
  anonymous_uid: NOBODY_ID,
  anonymous_gid: NOBODY_ID,
  root_mode: SHARE_DEFAULTS.root_mode,
  root_uid: SHARE_DEFAULTS.root_uid,
  root_gid: SHARE_DEFAULTS.root_gid,
});

/** A grant names exactly one of `user` or `group`. */
export type PermissionGrant =
  { user: string; group?: undefined; level: PermissionLevel } | { group: string; user?: undefined; level: PermissionLevel };

export type Principal = { user: string; group?: undefined } | { group: string; user?: undefined };

export interface ShareWithPermissions extends Share {
  permissions: PermissionGrant[];
}

export interface Adapter {
  type: AdapterType;
  enabled: boolean;
  port: number;
}

/** A user as the server needs it at run time: identity only, no secrets. */
export interface SnapshotUser {
  username: string;
  uid: number;
  gid: number;
  groups: string[];
  role: Role;
}

/** Everything the running server needs from the control plane, read in one transaction. */
export interface ControlSnapshot {
  /** Bumped by every committed change. */
  generation: number;
  /** With their secrets: the server needs them to connect. */
  metadata_stores: MetadataStoreRecord[];
  block_stores: BlockStoreRecord[];
  shares: ShareWithPermissions[];
  users: SnapshotUser[];
  groups: Group[];
  /** Both adapter types; a type never configured shows its default. */
  adapters: Adapter[];
  /** Only the keys that were set (through the API); unset keys keep the config file's value. */
  settings: Record<string, unknown>;
}

export interface ControlChange {
  generation: number;
}

/** The better of two permission levels. */
export function bestLevel(a: PermissionLevel, b: PermissionLevel): PermissionLevel {
  return PERMISSION_LEVELS.indexOf(a) >= PERMISSION_LEVELS.indexOf(b) ? a : b;
}

/** `{user: "alice"}` -> `user "alice"`, for messages. */
export function describePrincipal(p: Principal): string {
  return p.user !== undefined ? `user ${JSON.stringify(p.user)}` : `group ${JSON.stringify(p.group)}`;
}
