// Link-count bookkeeping shared by every metadata engine, so they agree on when an inode dies.
import type { FileType } from '../vfs/types.js';

const DIR: FileType = 2;

/**
 * Removes one name of `child` from `dir`: a subdirectory takes its ".." link from the parent and
 * dies with its only name; any other file dies with its last link. Mutates both; true when freed.
 */
export function unlinkCounts(dir: { nlink: number }, child: { type: FileType; nlink: number }): boolean {
  if (child.type === DIR) {
    dir.nlink--;
    child.nlink = 0;
    return true;
  }
  child.nlink--;
  return child.nlink <= 0;
}
