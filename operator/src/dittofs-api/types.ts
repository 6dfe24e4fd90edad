// The DittoFS control-plane API as the operator uses it: the declarative state (PUT and GET
// /api/v1/state), login and password change, RFC 7807 problems. These mirror the server's
// server/src/control/state.ts and server/src/api/schemas.ts (the OpenAPI document at
// GET /api/v1/openapi.json); the operator is a separate package and does not import the server.

export type PermissionLevel = 'none' | 'read' | 'read-write' | 'admin';
export type Role = 'admin' | 'operator' | 'user';

export interface DesiredStore {
  name: string;
  type: string;
  /** Secrets the server shows as **** may be sent back as **** to keep the stored value. */
  config?: Record<string, unknown>;
}

export type PermissionGrant =
  { user: string; group?: undefined; level: PermissionLevel } | { group: string; user?: undefined; level: PermissionLevel };

export interface DesiredShare {
  name: string;
  metadata_store: string;
  block_store: string;
  read_only?: boolean;
  default_permission?: PermissionLevel;
  root_squash?: boolean;
  anonymous_uid?: number;
  anonymous_gid?: number;
  root_mode?: number;
  root_uid?: number;
  root_gid?: number;
  permissions?: PermissionGrant[];
}

export interface DesiredUser {
  username: string;
  /** Plain; left out, the stored password is kept. 8 characters to 72 bytes. */
  password?: string;
  uid?: number;
  gid?: number;
  email?: string | null;
  role?: Role;
}

export interface DesiredGroup {
  name: string;
  gid?: number;
  members?: string[];
}

/** Each key present is the complete desired set of its kind; a key left out is left as it is. */
export interface DesiredState {
  metadata_stores?: DesiredStore[];
  block_stores?: DesiredStore[];
  shares?: DesiredShare[];
  users?: DesiredUser[];
  groups?: DesiredGroup[];
}

export type CurrentState = Required<DesiredState>;

export type StateKind = 'metadata_store' | 'block_store' | 'user' | 'group' | 'share';

export interface ApplyStateResult {
  generation: number;
  created: { kind: StateKind; name: string }[];
  updated: { kind: StateKind; name: string }[];
  removed: { kind: StateKind; name: string }[];
  unchanged: number;
}

export interface TokenReply {
  access_token: string;
  refresh_token: string;
  token_type: 'Bearer';
  expires_in: number;
  must_change_password: boolean;
}

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance?: string;
  /** The item of a desired state that failed, e.g. `shares["/export"]` or `users["alice"]`. */
  item?: string;
}

/** Password bounds of the server (server/src/control/auth.ts). */
export const MIN_PASSWORD_LENGTH = 8;
export const MAX_PASSWORD_BYTES = 72;

/** Store and account names the server accepts (server/src/control/store-config.ts, types.ts). */
export const STORE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
export const ACCOUNT_NAME_RE = /^[a-z_][a-z0-9_.-]{0,63}$/;

/** The server validates `email` with ajv-formats' (full) email format: the same expression. */
export const EMAIL_RE =
  /^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/i;

/** Grants per share the server takes (server/src/api/schemas.ts). */
export const MAX_GRANTS_PER_SHARE = 1000;

/** Length bounds of string store settings in the server's JSON schema (server/src/control/store-config.ts). */
export const STORE_STRING_BOUNDS: Readonly<Record<string, { min: number; max: number }>> = Object.freeze({
  path: { min: 1, max: 4096 },
  url: { min: 1, max: 2048 },
  schema: { min: 1, max: 63 },
  endpoint: { min: 1, max: 2048 },
  region: { min: 1, max: 64 },
  bucket: { min: 1, max: 63 },
  prefix: { min: 0, max: 900 },
  access_key_id: { min: 1, max: 256 },
  secret_access_key: { min: 1, max: 1024 },
});

/** Store config keys the server accepts per type (server/src/control/store-config.ts). */
export const STORE_CONFIG_KEYS: Readonly<Record<'metadata' | 'block', Readonly<Record<string, readonly string[]>>>> = Object.freeze({
  metadata: {
    memory: [],
    embedded: ['path'],
    postgres: ['url', 'pool_size', 'schema', 'connect_timeout', 'statement_timeout'],
  },
  block: {
    memory: ['block_size'],
    filesystem: ['block_size', 'path'],
    s3: [
      'block_size',
      'endpoint',
      'region',
      'bucket',
      'prefix',
      'force_path_style',
      'access_key_id',
      'secret_access_key',
      'request_timeout',
      'max_attempts',
    ],
  },
});
