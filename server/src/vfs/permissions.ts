// POSIX permission checks from an AUTH_SYS-style identity against mode bits.
import type { Identity, Inode } from './types.js';
import { FileType } from './types.js';

export const Access = Object.freeze({ R: 4, W: 2, X: 1 } as const);

export const S_ISUID = 0o4000;
export const S_ISGID = 0o2000;
export const S_ISVTX = 0o1000;
/** Group execute: with it S_ISGID makes a program setgid; without it, S_ISGID is a mandatory-locking mark. */
export const S_IXGRP = 0o010;

export function inGroup(id: Identity, gid: number): boolean {
  return id.gid === gid || id.gids.includes(gid);
}

/**
 * Linux's setattr_should_drop_sgid: whether a change of a file's owner or data by `id` drops the
 * S_ISGID of `mode` (a file of group `gid`). A group-executable setgid file is a setgid program
 * and loses it; without group execute the bit is a mandatory-locking mark, kept unless the caller
 * is neither root nor in the file's group.
 */
export function dropsSgid(mode: number, gid: number, id: Identity): boolean {
  if ((mode & S_ISGID) === 0) return false;
  if ((mode & S_IXGRP) !== 0) return true;
  return id.uid !== 0 && !inGroup(id, gid);
}

/**
 * Linux's file_remove_privs: the bits of `inode`'s mode that a change of its owner, group or data
 * by `id` drops: setuid, and setgid as dropsSgid says (0: none). They go as AttrChanges.clearMode,
 * cleared from the mode the file has when the change applies: writing back the mode read before
 * would undo a chmod made meanwhile (a WRITE may wait a minute for WAL room).
 */
export function privsDropped(inode: Pick<Inode, 'mode' | 'gid'>, id: Identity): number {
  return inode.mode & (dropsSgid(inode.mode, inode.gid, id) ? S_ISUID | S_ISGID : S_ISUID);
}

/** The rwx triple (0..7) that applies to `id` for `inode`. */
export function permissionBits(inode: Inode, id: Identity): number {
  if (id.uid === inode.uid) return (inode.mode >> 6) & 7;
  if (inGroup(id, inode.gid)) return (inode.mode >> 3) & 7;
  return inode.mode & 7;
}

/**
 * True when `id` may access `inode` for every bit in `want` (Access.R|W|X). Root may do anything
 * except execute a regular file that has no execute bit at all.
 */
export function mayAccess(inode: Inode, id: Identity, want: number): boolean {
  if (id.uid === 0) {
    if ((want & Access.X) !== 0 && inode.type !== FileType.DIR && (inode.mode & 0o111) === 0) return false;
    return true;
  }
  return (permissionBits(inode, id) & want) === want;
}

/**
 * Data access for READ/WRITE: the owner may always read and write their own file (an NFS client
 * checks access at open time, so a file created 0444 must still accept the creator's writes), and
 * execute permission allows reading (clients load executables with READ).
 */
export function mayRead(inode: Inode, id: Identity): boolean {
  return id.uid === inode.uid || mayAccess(inode, id, Access.R) || mayAccess(inode, id, Access.X);
}

export function mayWrite(inode: Inode, id: Identity): boolean {
  return id.uid === inode.uid || mayAccess(inode, id, Access.W);
}

/**
 * The owner and group of an inode `id` makes in `dir`: the caller, with the group of a setgid
 * directory; `asked` (CREATE, MKDIR attributes, an SMB security descriptor) may name the owner
 * (root only) and the group (root, or one of the caller's groups). `id` is the caller after the
 * share's squash. The vfs makes every inode so; the SMB server asks before it creates, to work out
 * the mode of the DACL the new inode will carry, whose ACEs name the owner and group.
 */
export function newOwner(
  dir: Pick<Inode, 'mode' | 'gid'>,
  id: Identity,
  asked?: { uid?: number; gid?: number },
): { uid: number; gid: number } {
  let uid = id.uid;
  let gid = (dir.mode & S_ISGID) !== 0 ? dir.gid : id.gid;
  if (asked?.uid !== undefined && id.uid === 0) uid = asked.uid;
  if (asked?.gid !== undefined && (id.uid === 0 || inGroup(id, asked.gid))) gid = asked.gid;
  return { uid, gid };
}

/** In a sticky directory only the owner of the entry, the owner of the directory or root may remove or rename it. */
export function mayDeleteFromSticky(dir: Inode, child: Inode, id: Identity): boolean {
  if ((dir.mode & S_ISVTX) === 0) return true;
  return id.uid === 0 || id.uid === child.uid || id.uid === dir.uid;
}
