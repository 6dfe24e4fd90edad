// uid 0 is root to the file system: no mode bit binds it (unless a share squashes root), so an
// account given uid 0 reads and changes every file of every share it may reach, whoever owns it.
// gid 0 is root's group. Only an admin may give either to a user or a group: an operator manages
// users, groups and shares, not the server's superuser. What already has such an id may keep it
// (an operator's declarative state lists it unchanged).
import type { Role } from './types.js';

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
