// Sparse files: which ranges of a file hold data, and zeroing a range (what SMB's
// FSCTL_QUERY_ALLOCATED_RANGES and FSCTL_SET_ZERO_DATA ask, MS-FSCC 2.3.51 / 2.3.67). A file's data
// is blocks (blocks/service.ts): a block never written is a hole and reads as zeros, over NFS too.
// Zeroing up to the end of the file cuts the data there (stored blocks past the cut are freed, the
// size stays); a range inside the file gets zeros written where blocks hold data (holes are zeros
// already). Either way both protocols read zeros there at once.
import { VfsError } from './errors.js';
import { Caching, type CacheHolder } from './locks/opens.js';
import type { FileService, Share } from './service.js';
import type { Identity, Inode } from './types.js';
import { FileType } from './types.js';

/** Zeros written at a time inside a file (never changed: a shared source for the writes). */
const ZEROS = Buffer.alloc(1 << 20);
/** Data ranges looked up at a time while zeroing inside a file. */
const RANGES_AT_ONCE = 64;

async function regularFile(fs: FileService, handle: Buffer): Promise<{ share: Share; inode: Inode }> {
  const r = await fs.resolve(handle);
  if (r.inode.type === FileType.DIR) throw new VfsError('ISDIR', 'a directory has no data ranges');
  if (r.inode.type !== FileType.REG) throw new VfsError('INVAL', 'not a regular file');
  return r;
}

/**
 * The ranges of [offset, offset + length) cut to the file's size that hold data, ascending and
 * merged: at most `max` + 1 of them (one more than `max` says there are more).
 */
export async function dataRanges(
  fs: FileService,
  handle: Buffer,
  cred: Identity,
  offset: number,
  length: number,
  max: number,
): Promise<Array<[number, number]>> {
  const r = await regularFile(fs, handle);
  const { share } = r;
  // Which bytes are data tells about the content: read permission, as for a READ.
  if (!fs.accessBits(share, r.inode, fs.identity(share, cred)).read) throw new VfsError('ACCES', 'permission denied');
  // Several servers: what another one acknowledged is stored first (as for a READ).
  const fresh = share.data.ensureFresh(r.inode.id);
  const inode = fresh !== undefined && (await fresh) ? ((await share.meta.getInode(r.inode.id)) ?? r.inode) : r.inode;
  return share.data.dataRanges(inode.id, offset, Math.min(inode.size, offset + length), max);
}

/**
 * Makes bytes [offset, end) of a file read as zeros (the part inside the file; the size stays).
 * Needs write permission; other opens' oplocks and leases break first (`except` is the caller's).
 * `stable` (an SMB open made with FILE_WRITE_THROUGH): durable before this resolves, as a stable
 * WRITE is (the zeros written inside a file are WAL records like a WRITE's; a cut is synced anyway).
 */
export async function zeroRange(
  fs: FileService,
  handle: Buffer,
  cred: Identity,
  offset: number,
  end: number,
  except: CacheHolder | null = null,
  stable = false,
): Promise<void> {
  const { share, inode } = await regularFile(fs, handle);
  const id = fs.identity(share, cred);
  if (share.readOnly) throw new VfsError('ROFS', 'share is read-only');
  if (!fs.accessBits(share, inode, id).write) throw new VfsError('ACCES', 'permission denied');
  await fs.opens.breakHolders(share.meta, inode.id, Caching.NONE, except, Caching.WRITE);
  // Several servers: what another one acknowledged is stored first (as for a READ). The ranges
  // zeroed below are those the block map holds: a block another server wrote and had not stored
  // yet looked like a hole here, got no zeros, and its data stayed once that server stored it.
  const fresh = share.data.ensureFresh(inode.id);
  if (fresh !== undefined) await fresh;
  // The size now, not when the handle was resolved: a write that grew the file since keeps its data.
  const size = (await share.meta.getInode(inode.id))?.size ?? inode.size;
  const stop = Math.min(end, size);
  if (stop <= offset) return;
  if (stop < size || !(await share.data.cutKeepingSize(inode.id, offset, size))) {
    for (let pos = offset; pos < stop;) {
      const ranges = await share.data.dataRanges(inode.id, pos, stop, RANGES_AT_ONCE);
      for (const [s, e] of ranges.slice(0, RANGES_AT_ONCE))
        for (let at = s; at < e; at += ZEROS.length)
          await fs.write(handle, cred, at, ZEROS.subarray(0, Math.min(ZEROS.length, e - at)), false, except);
      pos = ranges.length > RANGES_AT_ONCE ? ranges[RANGES_AT_ONCE - 1]![1] : stop;
    }
  }
  // The data changed: so do the times (as a WRITE's).
  await fs.setattr(handle, cred, { mtime: 'server' }, undefined, except);
  // The sync of a stable WRITE (data, size and times), once for all the zeros written. flush (what
  // SMB FLUSH calls), not commit: commit judges the mode again, and a chmod since the zeros went in
  // would answer ACCESS_DENIED for a change already made.
  if (stable) await fs.flush(handle, cred);
}
