// JSON schemas of every request and response: Ajv validates requests with them (unknown properties
// are rejected, not stripped), fast-json-stringify serializes responses with them (so nothing but
// the listed fields, never a hash, can leave), and @fastify/swagger turns them into the OpenAPI
// document. Every string has a maxLength and every integer a range.
import { MAX_SHARE_NAME_BYTES } from '../config/schema.js';
import { MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH } from '../control/auth.js';
import { SETTING_KEYS } from '../control/settings.js';
import { STORE_NAME_PATTERN, storeBodySchema } from '../control/store-config.js';
import { STATE_KINDS } from '../control/state.js';
import { ACCOUNT_NAME_PATTERN, ADAPTER_TYPES, MAX_EMAIL_LENGTH, MAX_ID, PERMISSION_LEVELS, ROLES } from '../control/types.js';
import { PROBLEM_SCHEMA } from './problem.js';

export type JsonSchema = Record<string, unknown>;

/** Bounds on list sizes in a desired state. */
export const MAX_STATE_ITEMS = 10_000;
export const MAX_TOKEN_LENGTH = 4096;

// ---------------------------------------------------------------------------------------------
// Pieces

const object = (properties: Record<string, JsonSchema>, required: string[] = [], extra: JsonSchema = {}): JsonSchema => ({
  type: 'object',
  additionalProperties: false,
  properties,
  ...(required.length > 0 ? { required } : {}),
  ...extra,
});

export const accountName: JsonSchema = { type: 'string', minLength: 1, maxLength: 64, pattern: ACCOUNT_NAME_PATTERN };
export const storeName: JsonSchema = { type: 'string', minLength: 1, maxLength: 63, pattern: STORE_NAME_PATTERN };
/** Bytes are checked in code (config/schema.ts shareNameProblem); this bounds characters. */
export const shareName: JsonSchema = { type: 'string', minLength: 2, maxLength: MAX_SHARE_NAME_BYTES, pattern: '^/' };
export const id: JsonSchema = { type: 'integer', minimum: 0, maximum: MAX_ID };
export const port: JsonSchema = { type: 'integer', minimum: 1, maximum: 65535 };
export const role: JsonSchema = { type: 'string', enum: [...ROLES] };
export const level: JsonSchema = { type: 'string', enum: [...PERMISSION_LEVELS] };
export const newPassword: JsonSchema = {
  type: 'string',
  minLength: MIN_PASSWORD_LENGTH,
  maxLength: MAX_PASSWORD_LENGTH,
  description: `${MIN_PASSWORD_LENGTH} characters to 72 bytes in UTF-8`,
};
const anyPassword: JsonSchema = { type: 'string', minLength: 1, maxLength: MAX_PASSWORD_LENGTH };
const email: JsonSchema = { type: ['string', 'null'], format: 'email', maxLength: MAX_EMAIL_LENGTH };
const timestamp: JsonSchema = { type: 'string', format: 'date-time' };
const mode: JsonSchema = { type: 'integer', minimum: 0, maximum: 0o7777, description: 'mode bits as a number (0o777 is 511)' };

const grant: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: { user: accountName, group: accountName, level },
  required: ['level'],
  oneOf: [
    { type: 'object', required: ['user'] },
    { type: 'object', required: ['group'] },
  ],
};

// ---------------------------------------------------------------------------------------------
// Params

/** Checked further by shareFromParam (the same rules as in the config file). */
const shareParam: JsonSchema = { type: 'string', minLength: 1, maxLength: 1024, description: '`export` or `%2Fexport` for /export' };

export const params = {
  username: object({ username: accountName }, ['username']),
  group: object({ name: accountName }, ['name']),
  groupMember: object({ name: accountName, username: accountName }, ['name', 'username']),
  store: object({ name: storeName }, ['name']),
  share: object({ name: shareParam }, ['name']),
  shareUser: object({ name: shareParam, username: accountName }, ['name', 'username']),
  shareGroup: object({ name: shareParam, group: accountName }, ['name', 'group']),
  adapter: object({ type: { type: 'string', enum: [...ADAPTER_TYPES] } }, ['type']),
  setting: object({ key: { type: 'string', minLength: 1, maxLength: 128, pattern: '^[a-z0-9_.-]+$' } }, ['key']),
} as const;

// ---------------------------------------------------------------------------------------------
// Bodies

/** What a share is made of, every property optional (PATCH); POST requires the stores and a name. */
const shareProps: Record<string, JsonSchema> = {
  metadata_store: storeName,
  block_store: storeName,
  read_only: { type: 'boolean' },
  default_permission: level,
  root_squash: { type: 'boolean' },
  anonymous_uid: id,
  anonymous_gid: id,
  root_mode: mode,
  root_uid: id,
  root_gid: id,
};

export const bodies = {
  login: object({ username: accountName, password: anyPassword }, ['username', 'password']),
  refresh: object({ refresh_token: { type: 'string', minLength: 1, maxLength: MAX_TOKEN_LENGTH } }, ['refresh_token']),
  changePassword: object({ current_password: anyPassword, new_password: newPassword }, ['current_password', 'new_password']),
  createUser: object(
    {
      username: accountName,
      password: newPassword,
      uid: id,
      gid: id,
      groups: { type: 'array', maxItems: 1000, items: accountName },
      email,
      role,
      must_change_password: { type: 'boolean', description: 'default: true when a password is given' },
    },
    ['username'],
  ),
  patchUser: object({
    password: newPassword,
    uid: id,
    gid: id,
    groups: { type: 'array', maxItems: 1000, items: accountName },
    email,
    role,
    must_change_password: { type: 'boolean', description: 'default when a password is given: true for another user, false for yourself' },
  }),
  createGroup: object({ name: accountName, gid: id }, ['name']),
  metadataStore: storeBodySchema('metadata'),
  blockStore: storeBodySchema('block'),
  createShare: object({ name: shareName, ...shareProps }, ['name', 'metadata_store', 'block_store']),
  patchShare: object(shareProps),
  permission: object({ level }, ['level']),
  patchAdapter: object({ enabled: { type: 'boolean' }, port }),
  setting: object(
    {
      value: {
        type: ['string', 'number', 'boolean'],
        maxLength: 1024,
        description: `known keys: ${SETTING_KEYS.join(', ')}`,
      },
    },
    ['value'],
  ),
} as const;

// ---------------------------------------------------------------------------------------------
// Desired state

const stateUser: JsonSchema = object({ username: accountName, password: newPassword, uid: id, gid: id, email, role }, ['username']);

const stateShare: JsonSchema = object(
  {
    ...(bodies.createShare.properties as Record<string, JsonSchema>),
    permissions: { type: 'array', maxItems: 1000, items: grant },
  },
  ['name', 'metadata_store', 'block_store'],
);

const stateGroup: JsonSchema = object(
  { name: accountName, gid: id, members: { type: 'array', maxItems: MAX_STATE_ITEMS, items: accountName } },
  ['name'],
);

export const stateBody: JsonSchema = object(
  {
    metadata_stores: { type: 'array', maxItems: 1000, items: storeBodySchema('metadata') },
    block_stores: { type: 'array', maxItems: 1000, items: storeBodySchema('block') },
    shares: { type: 'array', maxItems: MAX_STATE_ITEMS, items: stateShare },
    users: { type: 'array', maxItems: MAX_STATE_ITEMS, items: stateUser },
    groups: { type: 'array', maxItems: MAX_STATE_ITEMS, items: stateGroup },
  },
  [],
  { description: 'each key present is the complete desired set of its kind; a key left out is left as it is' },
);

// ---------------------------------------------------------------------------------------------
// Responses

export const listOf = (item: JsonSchema): JsonSchema => ({ type: 'array', items: item });

const str: JsonSchema = { type: 'string' };
const int: JsonSchema = { type: 'integer' };
const bool: JsonSchema = { type: 'boolean' };
const strings: JsonSchema = { type: 'array', items: str };

const storeReply: JsonSchema = object(
  { name: str, type: str, config: { type: 'object', additionalProperties: true, description: 'secrets shown as ****' } },
  ['name', 'type', 'config'],
);
const grantReply: JsonSchema = object({ user: str, group: str, level: str }, ['level']);
const shareReplyProps: Record<string, JsonSchema> = {
  name: str,
  metadata_store: str,
  block_store: str,
  read_only: bool,
  default_permission: str,
  root_squash: bool,
  anonymous_uid: int,
  anonymous_gid: int,
  root_mode: int,
  root_uid: int,
  root_gid: int,
};

export const replies = {
  ok: object({ status: str }, ['status']),
  failed: object({ status: str, detail: str }, ['status', 'detail']),
  readiness: {
    type: 'object',
    properties: {
      ready: bool,
      checks: { type: 'object', additionalProperties: { type: 'object', properties: { ok: bool, detail: str }, required: ['ok'] } },
      applied_generation: { type: 'integer', description: 'the control-plane generation this server applied' },
    },
    required: ['ready', 'checks'],
  },
  tokens: object(
    {
      access_token: str,
      refresh_token: str,
      token_type: { type: 'string', enum: ['Bearer'] },
      expires_in: int,
      must_change_password: bool,
    },
    ['access_token', 'refresh_token', 'token_type', 'expires_in', 'must_change_password'],
  ),
  user: object(
    {
      username: str,
      uid: int,
      gid: int,
      groups: strings,
      email: { type: ['string', 'null'] },
      role: str,
      must_change_password: bool,
      created_at: timestamp,
      updated_at: timestamp,
    },
    ['username', 'uid', 'gid', 'groups', 'email', 'role', 'must_change_password', 'created_at', 'updated_at'],
  ),
  group: object({ name: str, gid: int, members: strings }, ['name', 'gid', 'members']),
  store: object({ name: str, type: str, config: { type: 'object', additionalProperties: true, description: 'secrets shown as ****' } }, [
    'name',
    'type',
    'config',
  ]),
  share: object(shareReplyProps, Object.keys(shareReplyProps)),
  grant: grantReply,
  adapter: object(
    {
      type: str,
      enabled: bool,
      port: int,
      served: { type: 'boolean', description: 'this server listens for this adapter now' },
      listening_port: { type: 'integer', description: 'the port this server listens on for it (absent: not served)' },
      note: { type: 'string', description: 'why what this server serves differs from enabled/port (a port that could not be bound, ...)' },
    },
    ['type', 'enabled', 'port', 'served'],
  ),
  setting: object({ key: str, value: { description: 'null: not set here (the config file applies)' } }, ['key', 'value']),
  settings: { type: 'object', additionalProperties: true, description: 'key -> value of every known setting (null: not set here)' },
  state: object(
    {
      metadata_stores: listOf(storeReply),
      block_stores: listOf(storeReply),
      shares: listOf(object({ ...shareReplyProps, permissions: listOf(grantReply) })),
      users: listOf(object({ username: str, uid: int, gid: int, email: str, role: str })),
      groups: listOf(object({ name: str, gid: int, members: strings })),
    },
    ['metadata_stores', 'block_stores', 'shares', 'users', 'groups'],
  ),
  applied: object(
    {
      generation: int,
      created: { type: 'array', items: object({ kind: { type: 'string', enum: [...STATE_KINDS] }, name: str }) },
      updated: { type: 'array', items: object({ kind: { type: 'string', enum: [...STATE_KINDS] }, name: str }) },
      removed: { type: 'array', items: object({ kind: { type: 'string', enum: [...STATE_KINDS] }, name: str }) },
      unchanged: int,
      pending_replicas: {
        type: 'array',
        description: 'several servers: those that had not applied the generation when this answered (empty: all had)',
        items: object({ server: str, applied: { type: ['integer', 'null'] } }, ['server', 'applied']),
      },
    },
    ['generation', 'created', 'updated', 'removed', 'unchanged'],
  ),
  openapi: { type: 'object', additionalProperties: true },
  noContent: { type: 'null', description: 'No Content' },
} as const;

/** Response schemas for a route: its successes plus problem+json for every 4xx and 5xx. */
export function responses(ok: Record<number, JsonSchema>): Record<string, JsonSchema> {
  const out: Record<string, JsonSchema> = {};
  for (const [code, schema] of Object.entries(ok)) out[code] = schema;
  const problem = { description: PROBLEM_SCHEMA.description, content: { 'application/problem+json': { schema: PROBLEM_SCHEMA } } };
  out['4xx'] = problem;
  out['5xx'] = problem;
  return out;
}
