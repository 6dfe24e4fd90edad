// Share access for NFS requests: which level an AUTH_SYS credential has on a share. Runs per
// request, so everything is indexed once per control snapshot (buildAccessIndex) and a lookup is a
// few Map reads.
//
// The rule, in order:
//   1. The uid maps to the user with that uid. An unknown uid gets the share's default.
//   2. The user's own grant on the share wins (even when it is lower than a group's).
//   3. Else the best grant among the user's groups: the groups the user is a member of, plus the
//      groups whose gid is the credential's gid or one of its supplementary gids.
//   4. Else the share's default.
// An unknown share gets `none`. Read-only shares are not capped here: the file system layer
// answers ROFS to changes on them anyway.
import { bestLevel, type ControlSnapshot, type PermissionLevel } from './types.js';

export interface AccessCredential {
  uid: number;
  /** The primary gid first or not: order does not matter. */
  gids?: readonly number[];
  gid?: number;
}

interface ShareAccess {
  defaultLevel: PermissionLevel;
  users: Map<string, PermissionLevel>;
  groups: Map<string, PermissionLevel>;
}

interface UserAccess {
  username: string;
  groups: readonly string[];
}

export interface AccessIndex {
  readonly generation: number;
  readonly shares: ReadonlyMap<string, ShareAccess>;
  readonly usersByUid: ReadonlyMap<number, UserAccess>;
  readonly groupByGid: ReadonlyMap<number, string>;
}

export type AccessSource = Pick<ControlSnapshot, 'shares' | 'users' | 'groups'> & { generation?: number };

export function buildAccessIndex(snapshot: AccessSource): AccessIndex {
  const shares = new Map<string, ShareAccess>();
  for (const s of snapshot.shares) {
    const users = new Map<string, PermissionLevel>();
    const groups = new Map<string, PermissionLevel>();
    for (const g of s.permissions) {
      if (g.user !== undefined) users.set(g.user, g.level);
      else groups.set(g.group, g.level);
    }
    shares.set(s.name, { defaultLevel: s.default_permission, users, groups });
  }
  const usersByUid = new Map<number, UserAccess>();
  for (const u of snapshot.users) usersByUid.set(u.uid, { username: u.username, groups: u.groups });
  const groupByGid = new Map<number, string>();
  for (const g of snapshot.groups) groupByGid.set(g.gid, g.name);
  return { generation: snapshot.generation ?? 0, shares, usersByUid, groupByGid };
}

export function resolveShareAccess(index: AccessIndex, share: string, cred: AccessCredential): PermissionLevel {
  const s = index.shares.get(share);
  if (s === undefined) return 'none';
  const user = index.usersByUid.get(cred.uid);
  if (user === undefined) return s.defaultLevel;
  const own = s.users.get(user.username);
  if (own !== undefined) return own;
  if (s.groups.size === 0) return s.defaultLevel;
  let best: PermissionLevel | undefined;
  const consider = (group: string | undefined): void => {
    if (group === undefined) return;
    const level = s.groups.get(group);
    if (level !== undefined) best = best === undefined ? level : bestLevel(best, level);
  };
  for (const g of user.groups) consider(g);
  if (cred.gid !== undefined) consider(index.groupByGid.get(cred.gid));
  if (cred.gids !== undefined) for (const gid of cred.gids) consider(index.groupByGid.get(gid));
  return best ?? s.defaultLevel;
}

/**
 * Users whose primary gid is the gid of a group they are not a member of: a client sending such a
 * user's own ids gets that group's grants (rule 3). The control store refuses to create these;
 * a database from an older DittoFS, whose automatic ids overlapped, may still hold some.
 */
export function gidOverlapsOf(snapshot: Pick<ControlSnapshot, 'users' | 'groups'>): { user: string; group: string; gid: number }[] {
  const out: { user: string; group: string; gid: number }[] = [];
  for (const g of snapshot.groups) {
    for (const u of snapshot.users)
      if (u.gid === g.gid && !g.members.includes(u.username)) out.push({ user: u.username, group: g.name, gid: g.gid });
  }
  return out;
}
