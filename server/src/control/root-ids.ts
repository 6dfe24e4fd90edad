// uid 0 is root to the file system: no mode bit binds it (unless a share squashes root), so an
// account given uid 0 reads and changes every file of every share it may reach, whoever owns it.
// gid 0 is root's group. Only an admin may give either to a user or a group: an operator manages
// users, groups and shares, not the server's superuser. An account that holds one (an admin gave
// it) is managed by admins only, as an admin-role account is (its password, ids, deletion, group
// memberships), and so are a gid-0 group's members: else an operator would set such an account's
// password and log on as root, or add its own users to root's group.
import type { Role } from './types.js';

export const ROOT_ACCOUNT = "only an admin can manage a user with uid 0 or gid 0 (root's ids)";
export const ROOT_GROUP = "only an admin can change the members of a group with gid 0 (root's group)";

/** Whether an account holds root's ids (uid 0, gid 0, or a gid-0 group's membership): admins alone manage it. */
export const holdsRootIds = (u: { uid: number; gid: number; groups: readonly string[] }, rootGroups: ReadonlySet<string>): boolean =>
  u.uid === 0 || u.gid === 0 || u.groups.some((g) => rootGroups.has(g));

/** The names of the groups with gid 0 (an SMB logon takes the gid of every group of its user). */
export const rootGroupsOf = (groups: Iterable<{ name: string; gid: number }>): Set<string> =>
  new Set([...groups].filter((g) => g.gid === 0).map((g) => g.name));

/** Why `caller` may not give these ids (null: it may). `was`: the ids the account has now, if any. */
export function rootIdRefusal(
  caller: Role | undefined,
  what: string,
  ids: { uid?: number | undefined; gid?: number | undefined },
  was: { uid?: number | undefined; gid?: number | undefined } = {},
): string | null {
  if (caller === undefined || caller === 'admin') return null;
  const given = ids.uid === 0 && was.uid !== 0 ? 'uid 0' : ids.gid === 0 && was.gid !== 0 ? 'gid 0' : null;
  if (given === null) return null;
  return `only an admin can give ${what} ${given}: ${given === 'uid 0' ? 'root, whom no file permission binds' : "root's group"}`;
}
