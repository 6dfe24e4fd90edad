// MS-FSA 2.1.5.14.3 / MS-SMB2 2.2.13.2.6: the allocation size a client sets (SET_INFO
// FileAllocationInformation, the AlSi create context) is kept per inode in the metadata store
// (InodeMetaKind.ALLOCATION, 8 bytes little-endian) and reported while the data takes less
// (fscc.ts fileInfoOf). No space is reserved ahead: the block store allocates on write.
import { InodeMetaKind, type MetadataStore } from '../meta/store.js';

const NAME = Buffer.alloc(0);
const LIMITS = Object.freeze({ count: 1, bytes: 8 });

/** The allocation size a client set on `inodeId` (0: none). */
export async function allocationOf(meta: MetadataStore, inodeId: number): Promise<number> {
  const r = (await meta.getMeta(inodeId, InodeMetaKind.ALLOCATION))[0];
  return r && r.value.length === 8 ? r.value.readUInt32LE(0) + r.value.readUInt32LE(4) * 2 ** 32 : 0;
}

/** Keeps (or with 0 drops) the allocation size a client set. */
export async function setAllocation(meta: MetadataStore, inodeId: number, size: number): Promise<void> {
  let value: Buffer | null = null;
  if (size > 0) {
    value = Buffer.alloc(8);
    value.writeUInt32LE(size % 2 ** 32, 0);
    value.writeUInt32LE(Math.floor(size / 2 ** 32), 4);
  }
  await meta.putMeta(inodeId, InodeMetaKind.ALLOCATION, [{ name: NAME, value }], LIMITS);
}

/**
 * What an overwrite leaves (MS-FSA 2.1.5.1.2.1: the allocation the CREATE asked for, or none):
 * the store is written only when that changes what it holds, so an overwrite of a file without a
 * kept allocation costs one read.
 */
export async function resetAllocation(meta: MetadataStore, inodeId: number, size: number): Promise<void> {
  if (size > 0 || (await allocationOf(meta, inodeId)) > 0) await setAllocation(meta, inodeId, size);
}
