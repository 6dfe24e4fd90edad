// MS-SMB2 3.3.5.9 CREATE of a name that is usually free: a put (OVERWRITE_IF, what smbclient and
// the Linux client send for O_CREAT|O_TRUNC), a new file (CREATE) or a SUPERSEDE. The file is made
// at once, as the vfs does for NFS (vfs/service.ts create), instead of a lookup that answers "no
// such name" before every create: one metadata statement less per new file. When the name is
// taken, or anything else stops the create (permissions, a read-only share, a full disk), nothing
// has changed and the caller takes the ordinary path (lookup, then open or create), which answers
// exactly as before.
import { VfsError } from '../vfs/errors.js';
import { CreateMode } from '../vfs/service.js';
import type { Inode } from '../vfs/types.js';
import type { SecurityDescriptor } from './security.js';
import { checkNewAttributes, newFileAttributes } from './attrs.js';
import { CreateDisposition } from './constants.js';
import { checkAddTo, type FileContext, newInodeMode } from './files.js';
import type { CreateRequest } from './messages.js';
import * as oplock from './oplock.js';
import { SmbStatusError } from './status.js';

/** Dispositions whose client expects to make (or replace) the file: OPEN_IF usually opens one. */
const CREATING: ReadonlySet<number> = new Set([CreateDisposition.CREATE, CreateDisposition.OVERWRITE_IF, CreateDisposition.SUPERSEDE]);

/**
 * Creates `name` in `parent` as a new regular file when that is what the request most likely does,
 * or returns null (not tried, or the create failed: nothing changed). `plain`: the request carries
 * nothing that must be applied or checked before the file exists (no ExtA, SecD or AlSi context).
 * With the file, the directory's stored descriptor (what the file inherits from).
 */
export async function createFirst(
  c: FileContext,
  req: CreateRequest,
  parent: Buffer,
  name: Buffer,
  wantDir: boolean,
  deleteOnClose: boolean,
  plain: boolean,
): Promise<{ inode: Inode; parentSd: SecurityDescriptor | null } | null> {
  if (!plain || wantDir || !CREATING.has(req.createDisposition)) return null;
  // The checks the ordinary path makes before it creates; a refusal is answered there, in its order.
  try {
    checkNewAttributes(req.fileAttributes, false, deleteOnClose);
  } catch {
    return null;
  }
  if (oplock.leaseKeyInUse(c.fs, c.caching, c.session, req)) return null;
  const dosAttrs = newFileAttributes(req.fileAttributes, false);
  try {
    // The directory's DACL may refuse the new name (files.ts checkAddTo).
    const parentSd = await checkAddTo(c, parent, false);
    // The mode of the DACL the file inherits (files.ts newInodeMode).
    const mode = await newInodeMode(c, parent, parentSd, null, false, null);
    return { inode: (await c.fs.create(parent, name, c.id, CreateMode.GUARDED, { mode, dosAttrs }, null)).inode, parentSd };
  } catch (e) {
    if (e instanceof VfsError || e instanceof SmbStatusError) return null;
    throw e;
  }
}
