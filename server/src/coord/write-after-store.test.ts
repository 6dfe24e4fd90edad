// Several servers: a write that took its token, then waited for a truncate of the file, while a
// read through another server had the file stored (the dirty mark deleted, `marked` cleared). This
// server still holds the lease under the same token: the write must be logged (marking the file
// again), not refused with JUKEBOX (an NFS client waits 5 s and sends it again; an SMB client hears
// NETWORK_BUSY). 04892ea made FileLeases.holds() require `marked`; every write that waited for a
// cut or for WAL room while another server read the file is refused since.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { markRedisSeen, startRedis, TEST_LEASE_TTL_MS, type RedisInstance } from '../../../test/helpers/redis.js';
import { BlockCache } from '../blocks/cache.js';
import { MemoryBlockStore } from '../blocks/memory.js';
import { BlockService } from '../blocks/service.js';
import { MemoryWal } from '../blocks/wal.js';
import { MemoryMetadataStore } from '../meta/memory.js';
import { Coordinator, type LeaseStore } from './leases.js';

const log = pino({ level: 'silent' });

describe('a write that waited for a truncate while another server read the file', () => {
  let redis: RedisInstance;
  const open: Coordinator[] = [];
  before(async () => {
    redis = await startRedis();
    await markRedisSeen(redis.url, 'was:');
  });
  after(async () => {
    for (const c of open) await c.close();
    await redis?.stop();
  });
  const connect = async (): Promise<Coordinator> => {
    const c = await Coordinator.open({ url: redis.url, keyPrefix: 'was:', tls: false, leaseTtlMs: TEST_LEASE_TTL_MS, log });
    open.push(c);
    return c;
  };

  it('is logged under the lease this server still holds, not refused', async () => {
    let next = 0;
    const store: LeaseStore = { nextLeaseToken: () => Promise.resolve(++next) };
    const a = (await connect()).leasesFor('s', store);
    const b = (await connect()).leasesFor('s', store);
    const meta = new MemoryMetadataStore();
    const data = new BlockService(new MemoryBlockStore(), meta, {
      shareId: 1,
      keyPrefix: 't',
      blockSize: 4096,
      wal: new MemoryWal(1 << 20),
      cache: new BlockCache(1 << 20),
      leases: a,
    });
    a.join(data);
    b.join({ flush: () => Promise.resolve(), hasDirty: () => false });
    const id = 7;
    await data.write(id, 0, Buffer.alloc(100, 0x61));
    const t = a.token(id);
    assert.equal(typeof t, 'number', 'held and marked');
    // A truncate whose size store is slow; a write comes meanwhile and waits for it.
    let storeSize!: () => void;
    const sizeStored = new Promise<void>((r) => (storeSize = r));
    const truncated = data.truncate(id, 50, () => sizeStored);
    const written = data.write(id, 50, Buffer.alloc(10, 0x62)).then(
      () => 'logged',
      (e: Error) => e.message,
    );
    // A read through B has what A acknowledged stored: A's mark goes at once, and the file is
    // stored once the truncate (logged before the read asked) is over.
    const read = b.fresh(id);
    for (let i = 0; i < 1000 && a.holds(id, t as number); i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(a.holds(id, t as number), false, 'the mark went for the read through B');
    storeSize();
    await read;
    await truncated;
    assert.equal(await written, 'logged');
    const now = a.token(id);
    assert.equal(now, t, 'the same lease, and marked again by the write (answered at once)');
    await data.close();
  });
});
