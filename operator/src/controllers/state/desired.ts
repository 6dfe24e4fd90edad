// The desired state of one DittoFS's servers, computed from all its Stores, Shares and Users:
// the body of PUT /api/v1/state, plus a verdict per resource. Pure.
//
// The endpoint takes complete sets: whatever a list leaves out is removed from the server. So a
// resource that cannot be applied right now (a Secret it needs is missing, a store it names is
// not ready, the server refused it) must not simply be left out, or a typo would delete a share.
// Such a resource is "kept": its item is carried over from the server's current state as it is
// (withCarryOver), and its condition says why it is not synced. Only resources being deleted are
// left out, which is how they are removed from the servers.
import type { Share, Store, StoreKind, User } from '../../api/types.js';
import type { CurrentState, DesiredGroup, DesiredShare, DesiredState, DesiredStore, DesiredUser } from '../../dittofs-api/types.js';
import { byAge, isDeleting, memberKey, type Resolution, type SecretResolver } from '../member.js';
import { grantGroups, resolveShare } from '../share/resolve.js';
import { resolveStore, storeNameOf } from '../store/resolve.js';
import { resolveUser } from '../user/resolve.js';

export type ServerList = 'metadata_stores' | 'block_stores' | 'shares' | 'users';

export type Verdict =
  /** In the desired state as specified. */
  | { state: 'applied' }
  /** Being deleted, but still needed (a Share uses the Store, or the server refused to drop it): kept. */
  | { state: 'in-use'; message: string; usedBy?: string[] }
  /** Being deleted and left out: the push removes it. */
  | { state: 'removed' }
  /** Cannot be applied as specified; the server's current copy, if any, is kept. */
  | { state: 'invalid'; reason: string; message: string };

export interface ServerItem {
  list: ServerList;
  name: string;
}

export interface StatePlan {
  /** Every list present: the complete desired sets. */
  state: Required<DesiredState>;
  /** By memberKey (`Store/name`, `Share/name`, `User/name`). */
  verdicts: Map<string, Verdict>;
  /** Server items to carry over as they are (kept resources). */
  keep: Record<ServerList, Set<string>>;
  /** Store resource name -> names of the (not deleted) Share resources that use it. */
  usedBy: Map<string, string[]>;
  /** The server item each resource stands for. */
  itemOf: Map<string, ServerItem>;
}

export interface StateInputs {
  stores: readonly Store[];
  shares: readonly Share[];
  users: readonly User[];
  secret: SecretResolver;
  /** Resources the servers refused earlier in this sync (memberKey -> the server's message). */
  refused?: ReadonlyMap<string, string>;
}

const storeList = (kind: StoreKind): ServerList => (kind === 'metadata' ? 'metadata_stores' : 'block_stores');

export function computeDesiredState(inp: StateInputs): StatePlan {
  const refused = inp.refused ?? new Map<string, string>();
  const verdicts = new Map<string, Verdict>();
  const keep: Record<ServerList, Set<string>> = {
    metadata_stores: new Set(),
    block_stores: new Set(),
    shares: new Set(),
    users: new Set(),
  };
  const itemOf = new Map<string, ServerItem>();
  const state = {
    metadata_stores: [] as DesiredStore[],
    block_stores: [] as DesiredStore[],
    shares: [] as DesiredShare[],
    users: [] as DesiredUser[],
    groups: [] as DesiredGroup[],
  };
  const live = <T extends { metadata: { deletionTimestamp?: string; creationTimestamp?: string; name: string } }>(xs: readonly T[]) =>
    xs.filter((x) => !isDeleting(x)).sort(byAge);
  const going = <T extends { metadata: { deletionTimestamp?: string; creationTimestamp?: string; name: string } }>(xs: readonly T[]) =>
    xs.filter(isDeleting).sort(byAge);
  const invalid = (key: string, item: ServerItem | undefined, reason: string, message: string): void => {
    verdicts.set(key, { state: 'invalid', reason, message });
    if (item !== undefined) keep[item.list].add(item.name);
  };

  // ---- users
  const userGroups = new Map<string, string[]>();
  const usernames = new Map<string, string>();
  const uids = new Map<number, string>();
  for (const u of live(inp.users)) {
    const key = memberKey('User', u.metadata.name);
    const item: ServerItem = { list: 'users', name: u.spec.username };
    itemOf.set(key, item);
    const owner = usernames.get(u.spec.username);
    if (owner !== undefined) {
      invalid(key, undefined, 'Conflict', `username ${JSON.stringify(u.spec.username)} is already User ${owner}'s`);
      continue;
    }
    usernames.set(u.spec.username, u.metadata.name);
    const why = refused.get(key);
    if (why !== undefined) {
      invalid(key, item, 'Refused', why);
      continue;
    }
    const r = resolveUser(u, inp.secret);
    if (!r.ok) {
      invalid(key, item, r.reason, r.message);
      continue;
    }
    const uid = r.value.item.uid;
    const uidOwner = uid === undefined ? undefined : uids.get(uid);
    if (uid !== undefined && uidOwner !== undefined) {
      invalid(key, item, 'Conflict', `uid ${uid} is already the uid of user ${JSON.stringify(uidOwner)}`);
      continue;
    }
    if (uid !== undefined) uids.set(uid, u.spec.username);
    state.users.push(r.value.item);
    userGroups.set(u.spec.username, r.value.groups);
    verdicts.set(key, { state: 'applied' });
  }
  for (const u of going(inp.users)) {
    const key = memberKey('User', u.metadata.name);
    const item: ServerItem = { list: 'users', name: u.spec.username };
    itemOf.set(key, item);
    const why = refused.get(key);
    if (why !== undefined) {
      verdicts.set(key, { state: 'in-use', message: why });
      keep.users.add(item.name);
    } else {
      verdicts.set(key, { state: 'removed' });
    }
  }
  const includedUsers = new Set(state.users.map((u) => u.username));

  // ---- stores (those being deleted wait until we know which shares use them)
  const claimedStores = new Map<string, string>();
  for (const s of live(inp.stores)) {
    const key = memberKey('Store', s.metadata.name);
    const item: ServerItem = { list: storeList(s.spec.kind), name: storeNameOf(s) };
    itemOf.set(key, item);
    const claim = `${s.spec.kind}:${item.name}`;
    const owner = claimedStores.get(claim);
    if (owner !== undefined) {
      invalid(key, undefined, 'Conflict', `${s.spec.kind} store name ${JSON.stringify(item.name)} is already Store ${owner}'s`);
      continue;
    }
    claimedStores.set(claim, s.metadata.name);
    const why = refused.get(key);
    if (why !== undefined) {
      invalid(key, item, 'Refused', why);
      continue;
    }
    const r = resolveStore(s, inp.secret);
    if (!r.ok) {
      invalid(key, item, r.reason, r.message);
      continue;
    }
    state[item.list === 'metadata_stores' ? 'metadata_stores' : 'block_stores'].push(r.value.item);
    verdicts.set(key, { state: 'applied' });
  }

  /** The Store resource a Share's reference means: by resource name first, else by name inside DittoFS. */
  const findStore = (kind: StoreKind, ref: string): Store | undefined => {
    const ofKind = [...inp.stores].filter((s) => s.spec.kind === kind).sort(byAge);
    return (
      ofKind.find((s) => s.metadata.name === ref && !isDeleting(s)) ??
      ofKind.find((s) => storeNameOf(s) === ref && !isDeleting(s)) ??
      ofKind.find((s) => s.metadata.name === ref) ??
      ofKind.find((s) => storeNameOf(s) === ref)
    );
  };

  /** A Store being deleted that a live Share still uses: it stays in the desired state. */
  const retained = new Set<string>();
  const retain = (s: Store): void => {
    const key = memberKey('Store', s.metadata.name);
    if (retained.has(key)) return;
    retained.add(key);
    const item: ServerItem = { list: storeList(s.spec.kind), name: storeNameOf(s) };
    itemOf.set(key, item);
    const r = resolveStore(s, inp.secret);
    if (r.ok) state[item.list === 'metadata_stores' ? 'metadata_stores' : 'block_stores'].push(r.value.item);
    else keep[item.list].add(item.name);
  };

  // ---- shares
  const usedBy = new Map<string, string[]>();
  const paths = new Map<string, string>();
  for (const sh of live(inp.shares)) {
    const key = memberKey('Share', sh.metadata.name);
    const item: ServerItem = { list: 'shares', name: sh.spec.path };
    itemOf.set(key, item);
    for (const [kind, ref] of [
      ['metadata', sh.spec.metadataStore],
      ['block', sh.spec.blockStore],
    ] as const) {
      const st = findStore(kind, ref);
      if (st === undefined) continue;
      const list = usedBy.get(st.metadata.name) ?? [];
      if (!list.includes(sh.metadata.name)) list.push(sh.metadata.name);
      usedBy.set(st.metadata.name, list);
      if (isDeleting(st)) retain(st);
    }
    const owner = paths.get(sh.spec.path);
    if (owner !== undefined) {
      invalid(key, undefined, 'Conflict', `path ${sh.spec.path} is already Share ${owner}'s`);
      continue;
    }
    paths.set(sh.spec.path, sh.metadata.name);
    const why = refused.get(key);
    if (why !== undefined) {
      invalid(key, item, 'Refused', why);
      continue;
    }
    const r = resolveShare(sh, {
      store: (kind, ref): Resolution<string> => {
        const st = findStore(kind, ref);
        if (st === undefined)
          return { ok: false, reason: 'StoreNotFound', message: `no ${kind} Store ${JSON.stringify(ref)} of this DittoFS` };
        const v = verdicts.get(memberKey('Store', st.metadata.name));
        if (isDeleting(st) || v?.state === 'applied') return { ok: true, value: storeNameOf(st) };
        const why = v?.state === 'invalid' ? `: ${v.message}` : '';
        return { ok: false, reason: 'StoreNotReady', message: `${kind} Store ${st.metadata.name} is not synced${why}` };
      },
      userExists: (username) => includedUsers.has(username),
    });
    if (!r.ok) {
      invalid(key, item, r.reason, r.message);
      continue;
    }
    state.shares.push(r.value);
    verdicts.set(key, { state: 'applied' });
  }
  for (const sh of going(inp.shares)) {
    const key = memberKey('Share', sh.metadata.name);
    const item: ServerItem = { list: 'shares', name: sh.spec.path };
    itemOf.set(key, item);
    const why = refused.get(key);
    if (why !== undefined && !paths.has(sh.spec.path)) {
      verdicts.set(key, { state: 'in-use', message: why });
      keep.shares.add(item.name);
    } else {
      verdicts.set(key, { state: 'removed' });
    }
  }

  // ---- stores being deleted
  for (const s of going(inp.stores)) {
    const key = memberKey('Store', s.metadata.name);
    const item: ServerItem = { list: storeList(s.spec.kind), name: storeNameOf(s) };
    itemOf.set(key, item);
    const users = usedBy.get(s.metadata.name) ?? [];
    const why = refused.get(key);
    if (users.length > 0) {
      verdicts.set(key, {
        state: 'in-use',
        usedBy: users,
        message: `deletion waits: still used by Share${users.length > 1 ? 's' : ''} ${users.join(', ')}`,
      });
    } else if (why !== undefined && !claimedStores.has(`${s.spec.kind}:${item.name}`)) {
      verdicts.set(key, { state: 'in-use', message: `deletion waits: ${why}` });
      keep[item.list].add(item.name);
    } else {
      verdicts.set(key, { state: 'removed' });
    }
  }

  // ---- groups: every group a user is in, and every group a grant names
  const groups = new Map<string, Set<string>>();
  for (const [username, gs] of userGroups) {
    for (const g of gs) {
      const m = groups.get(g) ?? new Set<string>();
      m.add(username);
      groups.set(g, m);
    }
  }
  for (const sh of state.shares) for (const g of grantGroups(sh)) if (!groups.has(g)) groups.set(g, new Set());
  state.groups = [...groups.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, members]) => ({ name, members: [...members].sort() }));

  const byName =
    <T>(key: (t: T) => string) =>
    (a: T, b: T) =>
      key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0;
  state.metadata_stores.sort(byName((s) => s.name));
  state.block_stores.sort(byName((s) => s.name));
  state.shares.sort(byName((s) => s.name));
  state.users.sort(byName((u) => u.username));
  for (const l of Object.keys(keep) as ServerList[])
    for (const n of keep[l]) if (state[l].some((x) => ('name' in x ? x.name : x.username) === n)) keep[l].delete(n);
  return { state, verdicts, keep, usedBy, itemOf };
}

export const needsCurrentState = (plan: StatePlan): boolean => Object.values(plan.keep).some((s) => s.size > 0);

export interface CarriedState {
  state: Required<DesiredState>;
  /** `list:name` of every item carried over from the server. */
  carried: Set<string>;
}

/**
 * The plan's state plus the kept items as the server has them: stores (secrets as ****, which the
 * server reads as "keep the stored value"), shares with the stores they need and their grants
 * limited to principals that remain, users (no password: kept) with their group memberships.
 */
export function withCarryOver(plan: StatePlan, current: CurrentState): CarriedState {
  const state: Required<DesiredState> = structuredClone(plan.state);
  const carried = new Set<string>();
  const has = (list: ServerList, name: string): boolean =>
    list === 'users' ? state.users.some((u) => u.username === name) : state[list].some((x) => x.name === name);
  const carry = (list: ServerList, name: string): boolean => {
    if (has(list, name)) return true;
    if (list === 'users') {
      const u = current.users.find((x) => x.username === name);
      if (u === undefined) return false;
      state.users.push({
        username: u.username,
        ...(u.uid === undefined ? {} : { uid: u.uid }),
        ...(u.gid === undefined ? {} : { gid: u.gid }),
        ...(u.email === undefined || u.email === null ? {} : { email: u.email }),
        ...(u.role === undefined ? {} : { role: u.role }),
      });
    } else if (list === 'shares') {
      const s = current.shares.find((x) => x.name === name);
      if (s === undefined) return false;
      state.shares.push(structuredClone(s));
    } else {
      const s = current[list].find((x) => x.name === name);
      if (s === undefined) return false;
      state[list].push({ name: s.name, type: s.type, ...(s.config === undefined ? {} : { config: s.config }) });
    }
    carried.add(`${list}:${name}`);
    return true;
  };
  for (const name of plan.keep.users) carry('users', name);
  for (const list of ['metadata_stores', 'block_stores'] as const) for (const name of plan.keep[list]) carry(list, name);
  for (const name of plan.keep.shares) {
    if (!carry('shares', name)) continue;
    const s = state.shares.find((x) => x.name === name)!;
    carry('metadata_stores', s.metadata_store);
    carry('block_stores', s.block_store);
  }
  // Group memberships of carried users, as the server has them.
  const groupOf = new Map(state.groups.map((g) => [g.name, g]));
  for (const g of current.groups) {
    const kept = (g.members ?? []).filter((m) => carried.has(`users:${m}`));
    if (kept.length === 0) continue;
    let mine = groupOf.get(g.name);
    if (mine === undefined) {
      mine = { name: g.name, members: [] };
      state.groups.push(mine);
      groupOf.set(g.name, mine);
    }
    mine.members = [...new Set([...(mine.members ?? []), ...kept])].sort();
  }
  // Grants of carried shares: only principals that remain.
  const users = new Set(state.users.map((u) => u.username));
  for (const s of state.shares) {
    if (!carried.has(`shares:${s.name}`)) continue;
    s.permissions = (s.permissions ?? []).filter((g) => (g.user !== undefined ? users.has(g.user) : groupOf.has(g.group)));
  }
  return { state, carried };
}

/** `shares["/export"].permissions` -> { list: 'shares', name: '/export' } (undefined for groups and anything else). */
export function parseServerItem(item: string | undefined): ServerItem | undefined {
  if (item === undefined) return undefined;
  const m = /^(metadata_stores|block_stores|shares|users)\[("(?:[^"\\]|\\.)*")\]/.exec(item);
  if (m === null) return undefined;
  try {
    return { list: m[1] as ServerList, name: JSON.parse(m[2]!) as string };
  } catch {
    return undefined;
  }
}

/** The resource a refused server item stands for. */
export function memberOfItem(plan: StatePlan, item: ServerItem): string | undefined {
  for (const [key, it] of plan.itemOf) {
    if (it.list === item.list && it.name === item.name) {
      const v = plan.verdicts.get(key);
      // Prefer the resource that put the item in the state.
      if (v?.state === 'applied' || v?.state === 'in-use') return key;
    }
  }
  for (const [key, it] of plan.itemOf) if (it.list === item.list && it.name === item.name) return key;
  return undefined;
}
