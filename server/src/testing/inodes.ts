// Attribute sets for new inodes in tests: a regular file owned by 1000:1000, mode 0644, unless
// overridden.
import type { NewInode } from '../vfs/types.js';
import { FileType } from '../vfs/types.js';

export function fileInit(over: Partial<NewInode> = {}): NewInode {
  return {
    type: FileType.REG,
    mode: 0o644,
    uid: 1000,
    gid: 1000,
    rdevMajor: 0,
    rdevMinor: 0,
    target: null,
    createVerifier: null,
    size: 0,
    ...over,
  };
}

export const dirInit = (over: Partial<NewInode> = {}): NewInode => fileInit({ type: FileType.DIR, mode: 0o755, size: 4096, ...over });
