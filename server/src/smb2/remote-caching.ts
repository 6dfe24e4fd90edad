// Several servers on one store (issue 14): the caching a CREATE may be granted when another server
// has the file open. grantCaching (oplock.ts) sees this server's opens only; an open elsewhere
// counts like a local one (MS-FSA 2.1.5.17: an oplock beside another open is Level II at most; a
// lease beside another open caches no writes). Before, B granted a batch oplock while A's client
// still held the file open with Level II caching, and A's client read what B's client had cached.
import type { FileService } from '../vfs/service.js';
import { Caching, type OpenRecord } from '../vfs/locks/opens.js';
import type { CreateRequest } from './messages.js';
import { OplockLevel } from './oplock.js';

/**
 * The request as grantCaching should weigh it: unchanged unless the store is shared and another
 * server has the file open (then at most Level II, or the lease asked for without write caching).
 * When Redis cannot tell, the open elsewhere is assumed.
 */
export async function cachingBesideRemoteOpens(fs: FileService, rec: OpenRecord, req: CreateRequest): Promise<CreateRequest> {
  const level = req.requestedOplockLevel;
  if (level !== OplockLevel.BATCH && level !== OplockLevel.EXCLUSIVE && level !== OplockLevel.LEASE) return req;
  const elsewhere = await fs.opens.cachingSharedElsewhere(rec).catch(() => true);
  if (!elsewhere) return req;
  if (level !== OplockLevel.LEASE) return { ...req, requestedOplockLevel: OplockLevel.II };
  return {
    ...req,
    contexts: req.contexts.map((x) => {
      // RqLs v1 and v2: LeaseState at offset 16 (MS-SMB2 2.2.13.2.8, 2.2.13.2.10).
      if (x.name !== 'RqLs' || x.data.length < 32) return x;
      const data = Buffer.from(x.data);
      data.writeUInt32LE(data.readUInt32LE(16) & ~Caching.WRITE, 16);
      return { ...x, data };
    }),
  };
}
