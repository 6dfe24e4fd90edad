// Tests of several servers at the block service's level: block services ("servers") coordinated
// through a real Redis (test/helpers/redis.ts), on one memory metadata store and one memory block
// store, as several DittoFS processes share one database and one bucket.
import type { Logger } from 'pino';
import { BlockCache } from '../blocks/cache.js';
import { MemoryBlockStore } from '../blocks/memory.js';
import { BlockService } from '../blocks/service.js';
import { MemoryWal } from '../blocks/wal.js';
import { Coordinator, type FileLeases, type LeaseStore } from '../coord/leases.js';
import { MemoryMetadataStore } from '../meta/memory.js';

export interface LeasedServer {
  leases: FileLeases;
  data: BlockService;
  coord: Coordinator;
}

/**
 * One metadata store, one block store and lease tokens counted from 1; `server()` adds a block
 * service of share 1 (blocks of `blockSize`, no idle uploads) over its own WAL (a 1 MiB memory WAL
 * unless given), with leases of share `s` through Redis at `url` under `keyPrefix`. Its
 * Coordinator goes into `open`, for the test to close.
 */
export function leasedServers(o: {
  url: string;
  keyPrefix: string;
  leaseTtlMs: number;
  blockSize: number;
  log: Logger;
  open: Coordinator[];
}) {
  const meta = new MemoryMetadataStore();
  const store = new MemoryBlockStore();
  let next = 0;
  const tokens: LeaseStore = { nextLeaseToken: () => Promise.resolve(++next) };
  const server = async (wal: MemoryWal = new MemoryWal(1 << 20)): Promise<LeasedServer> => {
    const coord = await Coordinator.open({ url: o.url, keyPrefix: o.keyPrefix, tls: false, leaseTtlMs: o.leaseTtlMs, log: o.log });
    o.open.push(coord);
    const leases = coord.leasesFor('s', tokens);
    const data = new BlockService(store, meta, {
      shareId: 1,
      keyPrefix: 't',
      blockSize: o.blockSize,
      wal,
      cache: new BlockCache(1 << 20),
      idleFlushMs: 3_600_000,
      leases,
    });
    leases.join(data);
    return { leases, data, coord };
  };
  return { meta, store, server };
}
