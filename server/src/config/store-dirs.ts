// Where a store may keep its files. A filesystem block store and an embedded metadata store write
// (and the embedded one makes private) the directory they are given, as the server's user: never a
// system directory, a kernel pseudo file system, or the server's data directory or one of its parents.
import path from 'node:path';

/** Directories that hold the system's own files: never a store, whatever their content. */
export const SYSTEM_DIRS: readonly string[] = Object.freeze(['/', '/etc', '/usr', '/var', '/boot', '/root', '/home']);
const PSEUDO_FS = ['/proc', '/sys', '/dev'];

export const isUnder = (dir: string, parent: string): boolean => dir === parent || dir.startsWith(parent === '/' ? '/' : `${parent}/`);

export interface StoreDirKind {
  /** "block store", "metadata store": how errors name it. */
  what: string;
  /** The directory under the data directory a store of this kind gets by default ("blocks"). */
  defaultSubdir: string;
}

/**
 * Why `dir` can never hold a store of `kind`, or undefined. `dataDir` (the server's data
 * directory): neither it nor any of its parents may hold one either.
 */
export function storeDirProblem(dir: string, kind: StoreDirKind, dataDir?: string): string | undefined {
  const abs = path.resolve(dir);
  const pseudo = PSEUDO_FS.find((p) => isUnder(abs, p));
  if (pseudo) return `${abs} is under ${pseudo}, which cannot hold files; choose another path`;
  if (SYSTEM_DIRS.includes(abs))
    return `${abs} is a system directory; give the ${kind.what} a directory of its own, such as /var/lib/dittofs/${kind.defaultSubdir}`;
  if (dataDir !== undefined) {
    const data = path.resolve(dataDir);
    if (isUnder(data, abs))
      return `${abs} ${abs === data ? 'is' : 'holds'} the data directory ${data}; give the ${kind.what} a directory of its own, such as ${path.join(data, kind.defaultSubdir)}`;
  }
  return undefined;
}

export const BLOCK_STORE_DIR: StoreDirKind = { what: 'block store', defaultSubdir: 'blocks' };
export const METADATA_STORE_DIR: StoreDirKind = { what: 'metadata store', defaultSubdir: 'metadata' };

/**
 * The stores that write where their config's `path` tells them, as the server's user (only an admin
 * may create those): every filesystem block store (its default path is under the data directory
 * too, but its own checks run at open), and an embedded metadata store given a `path`.
 */
export function storeDirKindOf(
  kind: 'metadata' | 'block',
  type: string,
  config: { path?: unknown },
): { dir: StoreDirKind; noun: string } | undefined {
  if (kind === 'block' && type === 'filesystem') return { dir: BLOCK_STORE_DIR, noun: 'a filesystem block store' };
  if (kind === 'metadata' && type === 'embedded' && config.path !== undefined)
    return { dir: METADATA_STORE_DIR, noun: 'an embedded metadata store with a path' };
  return undefined;
}
