// An in-process server on memory stores for unit tests: the real file service, NFS and MOUNT
// programs and RPC dispatcher, without sockets.
import { BlockCache } from '../blocks/cache.js';
import { MemoryBlockStore } from '../blocks/memory.js';
import { BlockService } from '../blocks/service.js';
import { MemoryWal } from '../blocks/wal.js';
import { MemoryMetadataStore } from '../meta/memory.js';
import { MountProgram } from '../nfs3/mount.js';
import { Nfs3Program } from '../nfs3/nfs.js';
import { mountRpcProgram, nfsRpcProgram } from '../nfs3/programs.js';
import { RpcServer } from '../rpc/server.js';
import type { ShareOptions } from '../vfs/service.js';
import { FileService, type FileServiceOptions } from '../vfs/service.js';

export interface MemoryServer {
  fs: FileService;
  rpc: RpcServer;
  nfs: Nfs3Program;
  blocks: MemoryBlockStore;
  meta: MemoryMetadataStore;
  close(): Promise<void>;
}

export const TEST_SHARE: ShareOptions = Object.freeze({
  name: '/export',
  readOnly: false,
  rootSquash: false,
  anonymousUid: 65534,
  anonymousGid: 65534,
  rootMode: 0o777,
  rootUid: 0,
  rootGid: 0,
});

export async function memoryServer(
  share: Partial<ShareOptions> = {},
  blockSize = 4096,
  fsOptions: FileServiceOptions = {},
): Promise<MemoryServer> {
  const meta = new MemoryMetadataStore();
  const blocks = new MemoryBlockStore();
  const data = new BlockService(blocks, meta, {
    shareId: 1,
    keyPrefix: 'test',
    blockSize,
    wal: new MemoryWal(64 * 1024 * 1024),
    cache: new BlockCache(1024 * 1024),
  });
  const fs = new FileService(undefined, fsOptions);
  await fs.addShare({ ...TEST_SHARE, ...share }, meta, data);
  const nfs = new Nfs3Program(fs);
  const rpc = new RpcServer([nfsRpcProgram(nfs), mountRpcProgram(new MountProgram(fs))], { maxRecordSize: 2 * 1024 * 1024, drcSize: 64 });
  return {
    fs,
    rpc,
    nfs,
    blocks,
    meta,
    close: () => fs.close(),
  };
}
