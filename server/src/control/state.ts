// The declarative endpoint behind `PUT /api/v1/state`: the caller (the Kubernetes operator) sends
// the whole desired set of stores, shares (with their grants), users and groups (with their
// members), and the control plane converges to it in one transaction.
//
// Rules:
// - Each top-level key is optional. A key that is present is the complete desired set of its kind:
//   items not listed are removed. A key left out leaves that kind as it is.
// - Idempotent: sending the same state again changes nothing, reports nothing created, updated or
//   removed, and leaves the generation as it was (it goes up only when something changed).
// - All or nothing: the first item that cannot be applied (a share naming a missing store, a
//   duplicate uid, a store whose settings cannot work) fails the whole request with an error that
//   names the item, and nothing is applied.
// - Never locks anyone out: the bootstrap `admin` user and the caller are never removed (though
//   they may be updated if listed), the caller's own role cannot be changed here, and at least one
//   admin always remains. A caller with role operator cannot list users with role admin or
//   operator, or change existing ones (their group memberships included: it cannot add them to or
//   remove them from a group, nor remove a group they are in); users with those roles are left
//   alone by its removals. Nor can it create or change a filesystem block store (it writes to the
//   server's file system).
// - Users: `password` is the plain password (from a Kubernetes Secret). It is hashed again only when
//   it differs from the stored one (checked with bcrypt, remembered per process so a reconcile loop
//   does not pay bcrypt each time); a change revokes the user's tokens. Left out, the password is
//   left as it is (a new user without one cannot log in). `uid` and `gid` left out keep the current
//   ids (new users: the next free uid from 10000, gid = uid); `email` and `role` left out mean none
//   and `user`.
// - Stores: `config` as in the API (secrets sent as **** keep the stored value); a store that is new
//   or whose settings change is checked by `checkStore` before anything is written. Only an admin
//   may give settings that reach the server's own file system: a filesystem block store, an
//   embedded metadata store with a path, a postgres URL naming files or a unix socket (an operator
//   may keep such a URL an admin stored, and change the store's other settings).
// - Shares: settings left out take their defaults; `permissions` left out means no grants.
// - Groups: `gid` left out keeps the current gid (new groups: the next free gid from 10000);
//   `members` left out means no members.
// - Automatic uids and gids come from one counter (above every user's uid and gid and every
//   group's gid), and a user's primary gid may be a group's gid only if the user is a member.
import { createHmac, randomBytes } from 'node:crypto';
import { storeDirKindOf, storeDirProblem } from '../config/store-dirs.js';
import { redactSecrets } from '../config/errors.js';
import { shareNameProblem } from '../config/schema.js';
import { BLOCK_STORE_TYPES, METADATA_STORE_TYPES } from '../config/types.js';
import { DEFAULT_BCRYPT_COST, passwordCredentials, passwordProblem, verifyPassword, type PasswordCredentials } from './auth.js';
import { CONTROL_ERROR, ControlError } from './errors.js';
import { holdsRootIds, ROOT_ACCOUNT, ROOT_GROUP, rootGroupsOf, rootIdRefusal } from './root-ids.js';
import { gidOverlapError, type ControlQueries, type ControlStore, type UserPatch } from './store.js';
import {
  adminOnlyStoreUrl,
  canonicalJson,
  maskStoreConfig,
  normalizeStoreConfig,
  STORE_NAME_RE,
  storeConfigProblem,
  unmaskStoreConfig,
} from './store-config.js';
import {
  ACCOUNT_NAME_RE,
  BOOTSTRAP_ADMIN,
  FIRST_AUTO_ID,
  MAX_ID,
  PERMISSION_LEVELS,
  ROLES,
  SHARE_SETTINGS_DEFAULTS,
  describePrincipal,
  type Group,
  type PermissionGrant,
  type Role,
  type Share,
  type ShareSettings,
  type StoreKind,
  type StoreRecord,
  type User,
} from './types.js';
import { errorMessage } from '../error-message.js';

export interface DesiredStore {
  name: string;
  type: string;
  config?: Record<string, unknown>;
}

export interface DesiredShare extends Partial<ShareSettings> {
  name: string;
  metadata_store: string;
  block_store: string;
  permissions?: PermissionGrant[];
}

export interface DesiredUser {
  username: string;
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

export interface DesiredState {
  metadata_stores?: DesiredStore[];
  block_stores?: DesiredStore[];
  shares?: DesiredShare[];
  users?: DesiredUser[];
  groups?: DesiredGroup[];
}

/** What getState() returns: every key present, no passwords, store secrets as ****. */
export type CurrentState = Required<DesiredState>;

export const STATE_KINDS = Object.freeze(['metadata_store', 'block_store', 'user', 'group', 'share'] as const);
export type StateKind = (typeof STATE_KINDS)[number];

export interface StateItem {
  kind: StateKind;
  name: string;
}

export interface ApplyStateResult {
  /** The generation after the request: unchanged when nothing changed. */
  generation: number;
  created: StateItem[];
  updated: StateItem[];
  removed: StateItem[];
  /** Listed items that were already as desired. */
  unchanged: number;
}

export interface ApplyStateOptions {
  /** Who is asking (for the lock-out and role rules); absent: a trusted internal caller. */
  caller?: { username: string; role: Role };
  bcryptCost?: number;
  /** Throws if a store's settings cannot work (the error's message is shown, secrets masked). */
  checkStore?: (kind: StoreKind, type: string, config: Record<string, unknown>) => Promise<void>;
}

const LIST_KEY: Readonly<Record<StoreKind, 'metadata_stores' | 'block_stores'>> = { metadata: 'metadata_stores', block: 'block_stores' };
const STORE_STATE_KIND: Readonly<Record<StoreKind, StateKind>> = { metadata: 'metadata_store', block: 'block_store' };

/** Ids were checked against the final state: unique at COMMIT (the constraints are deferred). */
const ID_CHECKED = { idsChecked: true } as const;

const itemName = (list: string, name: string): string => `${list}[${JSON.stringify(name)}]`;
const invalid = (item: string, message: string): ControlError => new ControlError(CONTROL_ERROR.INVALID, message, item);
const unprocessable = (item: string, message: string): ControlError => new ControlError(CONTROL_ERROR.UNPROCESSABLE, message, item);
const operatorMembership = (username: string, item: string): ControlError =>
  new ControlError(
    CONTROL_ERROR.FORBIDDEN,
    `a caller with role operator cannot add or remove users with role admin or operator, or with uid 0 or gid 0 (${JSON.stringify(username)}) in groups`,
    item,
  );

// ---------------------------------------------------------------------------------------------
// Passwords already known to match their stored hash, so a repeated PUT costs no bcrypt. Keyed by
// username; holds the stored hash and an HMAC of the password under a key that lives only in this
// process (never the password).

const memoKey = randomBytes(32);
const verified = new Map<string, { hash: string; mac: string }>();
const macOf = (password: string): string => createHmac('sha256', memoKey).update(password, 'utf8').digest('hex');

type PasswordVerdict = { seenHash: string | null; same: true } | { seenHash: string | null; same: false; creds: PasswordCredentials };

async function passwordVerdict(username: string, password: string, current: string | null, cost: number): Promise<PasswordVerdict> {
  if (current !== null) {
    const memo = verified.get(username);
    if (memo !== undefined && memo.hash === current && memo.mac === macOf(password)) return { seenHash: current, same: true };
    if (await verifyPassword(password, current)) {
      verified.set(username, { hash: current, mac: macOf(password) });
      return { seenHash: current, same: true };
    }
  }
  return { seenHash: current, same: false, creds: await passwordCredentials(password, cost) };
}

// ---------------------------------------------------------------------------------------------
// Checks that need no database

function checkUnique<T>(list: readonly T[] | undefined, listName: string, key: (t: T) => string): void {
  const seen = new Set<string>();
  for (const t of list ?? []) {
    const k = key(t);
    if (seen.has(k)) throw invalid(itemName(listName, k), 'listed more than once');
    seen.add(k);
  }
}

function validateDesired(d: DesiredState): void {
  for (const kind of ['metadata', 'block'] as const) {
    const listName = LIST_KEY[kind];
    const list = d[listName];
    checkUnique(list, listName, (s) => s.name);
    const types: readonly string[] = kind === 'metadata' ? METADATA_STORE_TYPES : BLOCK_STORE_TYPES;
    for (const s of list ?? []) {
      const item = itemName(listName, s.name);
      if (!STORE_NAME_RE.test(s.name))
        throw invalid(item, 'invalid store name: use 1 to 63 letters, digits, "-", "_" or ".", starting with a letter or digit');
      if (!types.includes(s.type)) throw invalid(item, `type must be one of ${types.join(', ')}`);
      const problem = storeConfigProblem(kind, s.type, s.config ?? {});
      if (problem !== undefined) throw invalid(item, problem);
    }
  }
  checkUnique(d.shares, 'shares', (s) => s.name);
  for (const s of d.shares ?? []) {
    const item = itemName('shares', s.name);
    const problem = shareNameProblem(s.name);
    if (problem !== undefined) throw invalid(item, `name ${problem}`);
    if (s.default_permission !== undefined && !PERMISSION_LEVELS.includes(s.default_permission))
      throw invalid(item, 'invalid default_permission');
    const principals = new Set<string>();
    for (const g of s.permissions ?? []) {
      if ((g.user === undefined) === (g.group === undefined))
        throw invalid(`${item}.permissions`, 'each grant names exactly one of user or group');
      const key = describePrincipal(g);
      if (principals.has(key)) throw invalid(`${item}.permissions`, `${key} is listed more than once`);
      principals.add(key);
    }
  }
  checkUnique(d.users, 'users', (u) => u.username);
  for (const u of d.users ?? []) {
    const item = itemName('users', u.username);
    if (!ACCOUNT_NAME_RE.test(u.username)) throw invalid(item, 'invalid username');
    if (u.role !== undefined && !ROLES.includes(u.role)) throw invalid(item, `role must be one of ${ROLES.join(', ')}`);
    if (u.password !== undefined) {
      const problem = passwordProblem(u.password);
      if (problem !== undefined) throw invalid(item, `password ${problem}`);
    }
  }
  checkUnique(d.groups, 'groups', (g) => g.name);
  for (const g of d.groups ?? []) if (!ACCOUNT_NAME_RE.test(g.name)) throw invalid(itemName('groups', g.name), 'invalid group name');
}

// ---------------------------------------------------------------------------------------------
// Reading what is there

interface Current {
  stores: Record<StoreKind, Map<string, StoreRecord>>;
  shares: Map<string, Share>;
  permissions: Map<string, PermissionGrant[]>;
  users: Map<string, User>;
  hashes: Map<string, string | null>;
  groups: Map<string, Group>;
}

async function loadCurrent(q: ControlQueries): Promise<Current> {
  const byName = <T extends { name: string }>(list: T[]): Map<string, T> => new Map(list.map((x) => [x.name, x]));
  return {
    stores: { metadata: byName(await q.listStores('metadata')), block: byName(await q.listStores('block')) },
    shares: byName(await q.listShares()),
    permissions: await q.allPermissions(),
    users: new Map((await q.listUsers()).map((u) => [u.username, u])),
    hashes: await q.passwordHashes(),
    groups: byName(await q.listGroups()),
  };
}

const grantKey = (g: PermissionGrant): string => (g.user !== undefined ? `u:${g.user}=${g.level}` : `g:${g.group}=${g.level}`);
const sameGrants = (a: readonly PermissionGrant[], b: readonly PermissionGrant[]): boolean =>
  canonicalJson(a.map(grantKey).sort()) === canonicalJson(b.map(grantKey).sort());
const sameSet = (a: readonly string[], b: readonly string[]): boolean =>
  canonicalJson([...new Set(a)].sort()) === canonicalJson([...new Set(b)].sort());

function shareOf(d: DesiredShare): Share {
  return {
    name: d.name,
    metadata_store: d.metadata_store,
    block_store: d.block_store,
    read_only: d.read_only ?? SHARE_SETTINGS_DEFAULTS.read_only,
    default_permission: d.default_permission ?? SHARE_SETTINGS_DEFAULTS.default_permission,
    root_squash: d.root_squash ?? SHARE_SETTINGS_DEFAULTS.root_squash,
    anonymous_uid: d.anonymous_uid ?? SHARE_SETTINGS_DEFAULTS.anonymous_uid,
    anonymous_gid: d.anonymous_gid ?? SHARE_SETTINGS_DEFAULTS.anonymous_gid,
    root_mode: d.root_mode ?? SHARE_SETTINGS_DEFAULTS.root_mode,
    root_uid: d.root_uid ?? SHARE_SETTINGS_DEFAULTS.root_uid,
    root_gid: d.root_gid ?? SHARE_SETTINGS_DEFAULTS.root_gid,
  };
}

/** Ids for new items that give none: above every id in use or asked for, from FIRST_AUTO_ID up. */
function idAllocator(inUse: Iterable<number>): (what: 'uid' | 'gid') => number {
  let next = FIRST_AUTO_ID;
  for (const id of inUse) if (id >= next) next = id + 1;
  return (what) => {
    if (next > MAX_ID) throw new ControlError(CONTROL_ERROR.CONFLICT, `no free ${what} left above ${FIRST_AUTO_ID}: give one explicitly`);
    return next++;
  };
}

// ---------------------------------------------------------------------------------------------

/** Converges the control plane to `desired`; see the rules at the top of this file. */
export async function applyState(store: ControlStore, desired: DesiredState, opts: ApplyStateOptions = {}): Promise<ApplyStateResult> {
  validateDesired(desired);
  const cost = opts.bcryptCost ?? DEFAULT_BCRYPT_COST;
  const caller = opts.caller;
  const callerIsAdmin = caller === undefined || caller.role === 'admin';
  const manageable = (role: Role): boolean => callerIsAdmin || role === 'user';

  // Outside the transaction: what is there now, the slow checks and the bcrypt work.
  const before = await store.read(loadCurrent);
  const storeConfigs = new Map<string, Record<string, unknown>>();
  for (const kind of ['metadata', 'block'] as const) {
    for (const s of desired[LIST_KEY[kind]] ?? []) {
      const item = itemName(LIST_KEY[kind], s.name);
      const cur = before.stores[kind].get(s.name);
      const config = normalizeStoreConfig(kind, unmaskStoreConfig(kind, s.config ?? {}, cur?.config, item));
      storeConfigs.set(`${kind}:${s.name}`, config);
      if (cur !== undefined && cur.type === s.type && canonicalJson(cur.config) === canonicalJson(config)) continue;
      const dirKind = storeDirKindOf(kind, s.type, config);
      if (dirKind !== undefined) {
        // Before checkStore, which opens the store (and so creates its directory).
        if (!callerIsAdmin)
          throw new ControlError(
            CONTROL_ERROR.FORBIDDEN,
            `only an admin can create or change ${dirKind.noun}: it writes to the server's own file system`,
            item,
          );
        const dirProblem = typeof config.path === 'string' ? storeDirProblem(config.path, dirKind.dir) : undefined;
        if (dirProblem !== undefined) throw unprocessable(item, `config.path: ${dirProblem}`);
      }
      // A URL naming the server's files or a local socket, unless it is the one an admin stored.
      const adminOnly = adminOnlyStoreUrl(kind, s.type, config);
      if (adminOnly !== undefined && !callerIsAdmin && !(cur?.type === s.type && cur.config.url === config.url))
        throw new ControlError(CONTROL_ERROR.FORBIDDEN, adminOnly, item);
      if (opts.checkStore !== undefined) {
        try {
          await opts.checkStore(kind, s.type, config);
        } catch (e) {
          throw unprocessable(item, redactSecrets(errorMessage(e)));
        }
      }
    }
  }
  const verdicts = new Map<string, PasswordVerdict>();
  for (const u of desired.users ?? []) {
    if (u.password === undefined) continue;
    const cur = before.users.get(u.username);
    if (!manageable(u.role ?? 'user') || (cur !== undefined && !manageable(cur.role))) continue; // refused below
    verdicts.set(u.username, await passwordVerdict(u.username, u.password, before.hashes.get(u.username) ?? null, cost));
  }

  const outcome = await store.change(
    async (q) => {
      const cur = await loadCurrent(q);
      const created: StateItem[] = [];
      const updated: StateItem[] = [];
      const removed: StateItem[] = [];
      let unchanged = 0;

      // ---- plan: the final sets, checked before anything is written

      // Members of a gid-0 group hold root's gid over SMB: an admin's to manage (root-ids.ts).
      const rootGroups = rootGroupsOf(cur.groups.values());
      const removeUsers: string[] = [];
      if (desired.users !== undefined) {
        const listed = new Set(desired.users.map((u) => u.username));
        for (const u of desired.users) {
          const item = itemName('users', u.username);
          const existing = cur.users.get(u.username);
          const role = u.role ?? 'user';
          if (!manageable(role) || (existing !== undefined && !manageable(existing.role))) {
            throw new ControlError(
              CONTROL_ERROR.FORBIDDEN,
              'a caller with role operator cannot manage users with role admin or operator',
              item,
            );
          }
          if (!callerIsAdmin && existing !== undefined && holdsRootIds(existing, rootGroups))
            throw new ControlError(CONTROL_ERROR.FORBIDDEN, ROOT_ACCOUNT, item);
          if (caller !== undefined && existing !== undefined && u.username === caller.username && role !== existing.role) {
            throw new ControlError(CONTROL_ERROR.CONFLICT, 'you cannot change your own role', item);
          }
        }
        for (const [name, u] of cur.users) {
          if (listed.has(name) || name === BOOTSTRAP_ADMIN || name === caller?.username || !manageable(u.role)) continue;
          if (!callerIsAdmin && holdsRootIds(u, rootGroups)) continue; // an admin's to remove, as an admin is
          removeUsers.push(name);
        }
      }
      const removedUsers = new Set(removeUsers);
      const desiredUsers = new Map((desired.users ?? []).map((u) => [u.username, u]));
      const finalUsers = new Set([...cur.users.keys()].filter((n) => !removedUsers.has(n)));
      for (const n of desiredUsers.keys()) finalUsers.add(n);

      // Automatic ids come from one counter above every uid and gid in use or asked for (users'
      // uids and primary gids, groups' gids), so a new user's own gid is never a group's gid.
      const desiredGroups = new Map((desired.groups ?? []).map((g) => [g.name, g]));
      const nextId = idAllocator([
        ...[...cur.users.values()].flatMap((u) => [u.uid, u.gid]),
        ...[...cur.groups.values()].map((g) => g.gid),
        ...[...desiredUsers.values()].flatMap((u) => [u.uid, u.gid].filter((id): id is number => id !== undefined)),
        ...[...desiredGroups.values()].flatMap((g) => (g.gid === undefined ? [] : [g.gid])),
      ]);
      const nextUid = (): number => nextId('uid');

      // uids: explicit, kept, or allocated; unique over the final set.
      const finalUid = new Map<string, number>();
      for (const name of finalUsers) {
        const du = desiredUsers.get(name);
        const existing = cur.users.get(name);
        finalUid.set(name, du?.uid ?? existing?.uid ?? nextUid());
      }
      for (const [name, du] of desiredUsers) {
        const why = rootIdRefusal(caller?.role, 'a user', { uid: finalUid.get(name), gid: du.gid }, cur.users.get(name));
        if (why !== null) throw new ControlError(CONTROL_ERROR.FORBIDDEN, why, itemName('users', name));
      }
      const uidOwner = new Map<number, string>();
      for (const [name, uid] of finalUid) {
        const other = uidOwner.get(uid);
        if (other !== undefined) {
          const [a, b] = desiredUsers.has(name) ? [name, other] : [other, name];
          throw new ControlError(
            CONTROL_ERROR.ALREADY_EXISTS,
            `uid ${uid} is also the uid of user ${JSON.stringify(b)}`,
            itemName('users', a),
          );
        }
        uidOwner.set(uid, name);
      }
      const finalRole = (name: string): Role =>
        desiredUsers.get(name)?.role ?? (desiredUsers.has(name) ? 'user' : (cur.users.get(name)?.role ?? 'user'));
      const adminsBefore = [...cur.users.values()].filter((u) => u.role === 'admin').length;
      if (adminsBefore > 0 && ![...finalUsers].some((n) => finalRole(n) === 'admin')) {
        throw new ControlError(CONTROL_ERROR.CONFLICT, 'at least one user must keep role admin', 'users');
      }

      const removeGroups = desired.groups === undefined ? [] : [...cur.groups.keys()].filter((n) => !desiredGroups.has(n));
      const finalGroups = new Set([...cur.groups.keys()].filter((n) => !removeGroups.includes(n)));
      for (const n of desiredGroups.keys()) finalGroups.add(n);
      const finalGid = new Map<string, number>();
      for (const name of finalGroups) finalGid.set(name, desiredGroups.get(name)?.gid ?? cur.groups.get(name)?.gid ?? nextId('gid'));
      for (const g of desiredGroups.values()) {
        const why = rootIdRefusal(caller?.role, 'a group', { gid: g.gid }, cur.groups.get(g.name));
        if (why !== null) throw new ControlError(CONTROL_ERROR.FORBIDDEN, why, itemName('groups', g.name));
      }
      const gidOwner = new Map<number, string>();
      for (const [name, gid] of finalGid) {
        const other = gidOwner.get(gid);
        if (other !== undefined) {
          const [a, b] = desiredGroups.has(name) ? [name, other] : [other, name];
          throw new ControlError(
            CONTROL_ERROR.ALREADY_EXISTS,
            `gid ${gid} is also the gid of group ${JSON.stringify(b)}`,
            itemName('groups', a),
          );
        }
        gidOwner.set(gid, name);
      }
      for (const g of desiredGroups.values()) {
        for (const m of g.members ?? []) {
          if (!finalUsers.has(m))
            throw unprocessable(
              itemName('groups', g.name),
              `member ${JSON.stringify(m)} is not a user${removedUsers.has(m) ? ' (it is being removed)' : ''}`,
            );
        }
      }
      // Group memberships are part of a user's rights: an operator may change them only for users
      // it manages, in a group it changes or removes.
      if (!callerIsAdmin) {
        const unmanaged = (names: Iterable<string>): string | undefined =>
          [...names].find((n) => {
            const u = cur.users.get(n);
            return u !== undefined && (!manageable(u.role) || holdsRootIds(u, rootGroups));
          });
        for (const g of desiredGroups.values()) {
          const was = new Set(cur.groups.get(g.name)?.members ?? []);
          const now = new Set(g.members ?? []);
          const changed = [...[...now].filter((m) => !was.has(m)), ...[...was].filter((m) => !now.has(m))];
          if (changed.length > 0 && cur.groups.get(g.name)?.gid === 0)
            throw new ControlError(CONTROL_ERROR.FORBIDDEN, ROOT_GROUP, itemName('groups', g.name));
          const who = unmanaged(changed);
          if (who !== undefined) throw operatorMembership(who, itemName('groups', g.name));
        }
        for (const name of removeGroups) {
          if (cur.groups.get(name)?.gid === 0) throw new ControlError(CONTROL_ERROR.FORBIDDEN, ROOT_GROUP, itemName('groups', name));
          const who = unmanaged(cur.groups.get(name)?.members ?? []);
          if (who !== undefined) throw operatorMembership(who, itemName('groups', name));
        }
      }

      // No user's primary gid may be the gid of a group it is not a member of (a client sending
      // that user's own ids would get the group's grants), unless it was so before this request.
      const finalMembers = new Map<string, Set<string>>();
      for (const name of finalGroups) {
        const d = desiredGroups.get(name);
        finalMembers.set(
          name,
          new Set(d !== undefined ? (d.members ?? []) : (cur.groups.get(name)?.members ?? []).filter((m) => finalUsers.has(m))),
        );
      }
      for (const name of finalUsers) {
        const existing = cur.users.get(name);
        const gid = desiredUsers.get(name)?.gid ?? existing?.gid ?? finalUid.get(name)!;
        const group = gidOwner.get(gid);
        if (group === undefined || finalMembers.get(group)!.has(name)) continue;
        const before = cur.groups.get(group);
        if (existing?.gid === gid && before?.gid === gid && !before.members.includes(name)) continue;
        const changed = desiredUsers.has(name) && existing?.gid !== gid ? 'user' : 'group';
        throw gidOverlapError(
          { user: name, group, gid },
          changed,
          changed === 'user' ? itemName('users', name) : itemName('groups', group),
        );
      }

      const finalStores: Record<StoreKind, Set<string>> = { metadata: new Set(), block: new Set() };
      const removeStores: Record<StoreKind, string[]> = { metadata: [], block: [] };
      for (const kind of ['metadata', 'block'] as const) {
        const list = desired[LIST_KEY[kind]];
        const names = new Set((list ?? []).map((s) => s.name));
        for (const n of cur.stores[kind].keys()) {
          if (list === undefined || names.has(n)) finalStores[kind].add(n);
          else removeStores[kind].push(n);
        }
        for (const n of names) finalStores[kind].add(n);
      }

      const desiredShares = new Map((desired.shares ?? []).map((s) => [s.name, s]));
      const removeShares = desired.shares === undefined ? [] : [...cur.shares.keys()].filter((n) => !desiredShares.has(n));
      for (const s of desiredShares.values()) {
        const item = itemName('shares', s.name);
        if (!finalStores.metadata.has(s.metadata_store))
          throw unprocessable(item, `metadata store ${JSON.stringify(s.metadata_store)} does not exist`);
        if (!finalStores.block.has(s.block_store)) throw unprocessable(item, `block store ${JSON.stringify(s.block_store)} does not exist`);
        for (const g of s.permissions ?? []) {
          if (g.user !== undefined && !finalUsers.has(g.user))
            throw unprocessable(`${item}.permissions`, `user ${JSON.stringify(g.user)} does not exist`);
          if (g.group !== undefined && !finalGroups.has(g.group))
            throw unprocessable(`${item}.permissions`, `group ${JSON.stringify(g.group)} does not exist`);
        }
      }
      for (const kind of ['metadata', 'block'] as const) {
        for (const name of removeStores[kind]) {
          const users = [...cur.shares.values()].filter(
            (s) =>
              !removeShares.includes(s.name) &&
              !desiredShares.has(s.name) &&
              (kind === 'metadata' ? s.metadata_store : s.block_store) === name,
          );
          if (users.length > 0) {
            throw new ControlError(
              CONTROL_ERROR.IN_USE,
              `cannot be removed: share ${JSON.stringify(users[0]!.name)} uses it and the desired state keeps that share`,
              itemName(LIST_KEY[kind], name),
            );
          }
        }
      }

      // ---- apply

      for (const kind of ['metadata', 'block'] as const) {
        for (const s of desired[LIST_KEY[kind]] ?? []) {
          const config = storeConfigs.get(`${kind}:${s.name}`) ?? normalizeStoreConfig(kind, s.config);
          const existing = cur.stores[kind].get(s.name);
          const rec = { name: s.name, type: s.type, config } as StoreRecord<never>;
          const it = { kind: STORE_STATE_KIND[kind], name: s.name };
          if (existing === undefined) {
            await q.createStore(kind, rec);
            created.push(it);
          } else if (existing.type !== s.type || canonicalJson(existing.config) !== canonicalJson(config)) {
            await q.updateStore(kind, rec);
            updated.push(it);
          } else {
            unchanged++;
          }
        }
      }

      for (const u of desiredUsers.values()) {
        const existing = cur.users.get(u.username);
        const it = { kind: 'user' as const, name: u.username };
        let verdict = verdicts.get(u.username);
        if (u.password !== undefined) {
          const hash = cur.hashes.get(u.username) ?? null;
          // Changed since it was checked (another request): check again, here.
          if (verdict === undefined || verdict.seenHash !== hash) verdict = await passwordVerdict(u.username, u.password, hash, cost);
        }
        const creds = verdict !== undefined && !verdict.same ? verdict.creds : undefined;
        if (existing === undefined) {
          await q.createUser(
            {
              username: u.username,
              uid: finalUid.get(u.username)!,
              gid: u.gid ?? finalUid.get(u.username)!,
              email: u.email ?? null,
              role: u.role ?? 'user',
              must_change_password: false,
              ...(creds ?? {}),
            },
            ID_CHECKED,
          );
          created.push(it);
          continue;
        }
        const patch: UserPatch = {};
        if (u.uid !== undefined && u.uid !== existing.uid) patch.uid = u.uid;
        if (u.gid !== undefined && u.gid !== existing.gid) patch.gid = u.gid;
        if ((u.email ?? null) !== existing.email) patch.email = u.email ?? null;
        if ((u.role ?? 'user') !== existing.role) patch.role = u.role ?? 'user';
        if (creds !== undefined) {
          patch.credentials = creds;
          patch.must_change_password = false;
        }
        if (Object.keys(patch).length > 0) {
          await q.updateUser(u.username, patch, ID_CHECKED);
          updated.push(it);
        } else {
          unchanged++;
        }
      }

      for (const g of desiredGroups.values()) {
        const existing = cur.groups.get(g.name);
        const it = { kind: 'group' as const, name: g.name };
        const members = g.members ?? [];
        if (existing === undefined) {
          await q.createGroup({ name: g.name, gid: finalGid.get(g.name)!, members }, ID_CHECKED);
          created.push(it);
        } else if ((g.gid !== undefined && g.gid !== existing.gid) || !sameSet(members, existing.members)) {
          await q.updateGroup(g.name, { ...(g.gid !== undefined && g.gid !== existing.gid ? { gid: g.gid } : {}), members }, ID_CHECKED);
          updated.push(it);
        } else {
          unchanged++;
        }
      }

      for (const name of removeShares) {
        await q.deleteShare(name);
        removed.push({ kind: 'share', name });
      }
      for (const d of desiredShares.values()) {
        const want = shareOf(d);
        const grants = d.permissions ?? [];
        const existing = cur.shares.get(d.name);
        const it = { kind: 'share' as const, name: d.name };
        if (existing === undefined) {
          await q.createShare(want);
          await q.replacePermissions(d.name, grants);
          created.push(it);
          continue;
        }
        const settingsChanged = canonicalJson(existing) !== canonicalJson(want);
        const grantsChanged = !sameGrants(cur.permissions.get(d.name) ?? [], grants);
        if (settingsChanged) await q.updateShare(d.name, want);
        if (grantsChanged) await q.replacePermissions(d.name, grants);
        if (settingsChanged || grantsChanged) updated.push(it);
        else unchanged++;
      }

      for (const name of removeGroups) {
        await q.deleteGroup(name);
        removed.push({ kind: 'group', name });
      }
      for (const name of removeUsers) {
        await q.deleteUser(name);
        removed.push({ kind: 'user', name });
      }
      for (const kind of ['metadata', 'block'] as const) {
        for (const name of removeStores[kind]) {
          await q.deleteStore(kind, name);
          removed.push({ kind: STORE_STATE_KIND[kind], name });
        }
      }
      return { created, updated, removed, unchanged };
    },
    { changed: (r) => r.created.length + r.updated.length + r.removed.length > 0 },
  );

  // Remember the passwords just stored, so the next identical PUT costs no bcrypt.
  for (const [username, v] of verdicts) {
    const u = desired.users?.find((x) => x.username === username);
    if (!v.same && u?.password !== undefined) verified.set(username, { hash: v.creds.password_hash, mac: macOf(u.password) });
  }
  return { generation: outcome.generation, ...outcome.result };
}

/** The current state in the shape applyState takes: no passwords, store secrets as ****. */
export async function getState(store: ControlStore): Promise<CurrentState> {
  return store.read(async (q) => {
    const permissions = await q.allPermissions();
    const stores = async (kind: StoreKind): Promise<DesiredStore[]> =>
      (await q.listStores(kind)).map((s) => ({ name: s.name, type: s.type, config: maskStoreConfig(kind, s.config) }));
    return {
      metadata_stores: await stores('metadata'),
      block_stores: await stores('block'),
      shares: (await q.listShares()).map((s) => ({ ...s, permissions: permissions.get(s.name) ?? [] })),
      users: (await q.listUsers()).map((u) => ({
        username: u.username,
        uid: u.uid,
        gid: u.gid,
        role: u.role,
        ...(u.email === null ? {} : { email: u.email }),
      })),
      groups: (await q.listGroups()).map((g) => ({ name: g.name, gid: g.gid, members: g.members })),
    };
  });
}
