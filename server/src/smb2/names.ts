// MS-FSA 2.1.5.1: names are compared without regard to case. The stores look names up by their
// exact bytes (NFS needs that), so an SMB open of a name that misses exactly looks again through
// the directory, comparing upper-cased names. Only where a miss would fail (OPEN, OVERWRITE, a
// path component): a CREATE of a new name does not pay for a scan of its directory.
import { VfsError } from '../vfs/errors.js';
import type { Inode } from '../vfs/types.js';
import type { FileContext } from './files.js';

/** Entries read per readdir call of a scan. */
const PAGE = 1024;
/** Entries one scan reads at most: past this, a name that misses exactly is not found. */
export const MAX_CASELESS_SCAN = 65536;

/** The entry of `dir` whose name equals `name` ignoring case, or null (none, or the directory too large to scan). */
export async function lookupCaseless(c: FileContext, dir: Buffer, name: Buffer): Promise<{ name: Buffer; inode: Inode } | null> {
  const want = name.toString('utf8').toUpperCase();
  let cookie = 0;
  for (let seen = 0; seen < MAX_CASELESS_SCAN;) {
    let page;
    try {
      page = await c.fs.readdir(dir, c.id, cookie, Math.min(PAGE, MAX_CASELESS_SCAN - seen));
    } catch (e) {
      // A directory the caller may search but not list: only exact names are found in it.
      if (e instanceof VfsError && e.errno === 'ACCES') return null;
      throw e;
    }
    for (const e of page.entries) {
      if (e.name.toString('utf8').toUpperCase() === want) return { name: e.name, inode: e.inode };
      cookie = e.cookie;
    }
    seen += page.entries.length;
    if (page.eof || page.entries.length === 0) return null;
  }
  return null;
}
