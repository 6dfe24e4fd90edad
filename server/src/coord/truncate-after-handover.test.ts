// Several servers: a truncate (or a cut, FSCTL_SET_ZERO_DATA) takes its token, then waits for WAL
// room before its record is appended. Meanwhile the file's lease may move to another server that
// writes it (A's truncate logged after that is under a token that no longer holds: its cut misses
// what B has not stored yet, and the size it stores hides or brings back B's bytes), or a read
// through another server may have the file stored (the dirty mark deleted: the truncate logged
// after that would be acknowledged unmarked, and readers elsewhere would not ask for it). As for
// a write (blocks/service.ts write, write-after-store.test.ts): refused with JUKEBOX in the first
// case (the client sends it again, and takes the lease back), logged under the same lease and
// marked again in the second.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { markRedisSeen, startRedis, TEST_LEASE_TTL_MS, type RedisInstance } from '../../../test/helpers/redis.js';
import { MemoryWal } from '../blocks/wal.js';
import { mkfile } from '../testing/blocks.js';
import { leasedServers } from '../testing/leased-servers.js';
import type { Coordinator } from './leases.js';

const log = pino({ level: 'silent' });
const BS = 4096;

/** A memory WAL the test holds full: an append waits for room until it is let go. */
class HeldWal extends MemoryWal {
  held = false;
  private readonly waiters: Array<() => void> = [];
  private arrived: (() => void) | null = null;
  /** Resolves once something waits for room. */
  waiting(): Promise<void> {
    return new Promise((r) => (this.arrived = r));
  }
  override get full(): boolean {
    return this.held || super.full;
  }
  override waitRoom(ms: number): Promise<void> {
    if (!this.held) return super.waitRoom(ms);
    this.arrived?.();
    this.arrived = null;
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  letGo(): void {
    this.held = false;
    for (const wake of this.waiters.splice(0)) wake();
  }
}

describe('a truncate that waited for WAL room while its lease moved or its file was stored', () => {
  let redis: RedisInstance;
  const open: Coordinator[] = [];
  before(async () => {
    redis = await startRedis();
    await markRedisSeen(redis.url, 'tah:');
  });
  after(async () => {
    for (const c of open) await c.close();
    await redis?.stop();
  });

  /** Two servers (A with a WAL the test holds full) on one metadata store and one block store. */
  const servers = async () => {
    const { meta, server } = leasedServers({ url: redis.url, keyPrefix: 'tah:', leaseTtlMs: TEST_LEASE_TTL_MS, blockSize: BS, log, open });
    const walA = new HeldWal(1 << 20);
    const a = await server(walA);
    const b = await server(new MemoryWal(1 << 20));
    return { meta, walA, a, b };
  };
  const outcome = (p: Promise<unknown>): Promise<string> =>
    p.then(
      () => 'logged',
      (e: { errno?: string; message: string }) => e.errno ?? e.message,
    );
  /** Two servers and a file of `size` bytes A wrote, its size stored. */
  const writtenByA = async (size: number) => {
    const s = await servers();
    const id = await mkfile(s.meta);
    await s.a.data.write(id, 0, Buffer.alloc(size, 0x61));
    await s.meta.setAttr(id, { size });
    return { ...s, id };
  };
  /** A's truncate of `id` to `size` (its token taken), once it waits for WAL room; `truncated`: how it ends. */
  const truncateWaiting = async (s: Awaited<ReturnType<typeof writtenByA>>, size: number) => {
    s.walA.held = true;
    const waiting = s.walA.waiting();
    const truncated = outcome(s.a.data.truncate(s.id, size, () => s.meta.setAttr(s.id, { size })));
    await waiting;
    return { truncated };
  };

  it('the lease moved and the other server wrote: refused (JUKEBOX), and what that server acknowledged stays', async () => {
    const s = await writtenByA(100);
    const { meta, walA, a, b, id } = s;
    // A's truncate to 0 takes its token, then waits for WAL room.
    const { truncated } = await truncateWaiting(s, 0);
    // A write through B takes the lease (A stores what it acknowledged and lets it go) and is acknowledged.
    await b.data.write(id, 0, Buffer.alloc(200, 0x62), () => void meta.setAttr(id, { size: 200 }));
    assert.equal(typeof b.leases.token(id), 'number', 'B holds the lease now');
    walA.letGo();
    const got = await truncated;
    // The file as B serves it once it grew past B's bytes by one more write through B: after a
    // truncate that was acknowledged, what it cut must read as zeros.
    const sizeAfter = (await meta.getInode(id))!.size;
    await b.data.write(id, 300, Buffer.from('x'), () => void meta.setAttr(id, { size: 301 }));
    const bytes = await b.data.read(id, 0, 200, 301);
    const expected = Buffer.alloc(200, sizeAfter >= 200 ? 0x62 : 0);
    assert.ok(
      bytes.equals(expected),
      `truncate ${got}, size ${sizeAfter} after it; B's bytes 0..200 read ${JSON.stringify(bytes.subarray(0, 8).toString('latin1'))}…`,
    );
    assert.equal(got, 'JUKEBOX', 'the truncate is sent again by the client');
    // Sent again: A takes the lease back (B stores its data first), then the truncate cuts it.
    await a.data.truncate(id, 0, () => meta.setAttr(id, { size: 0 }));
    await meta.setAttr(id, { size: 301 });
    assert.ok((await a.data.read(id, 0, 301, 301)).equals(Buffer.alloc(301)), 'all of it cut');
    await a.data.close();
    await b.data.close();
  });

  it('a cut (zeroed range) likewise: refused when the lease moved, and no write through B is kept in part', async () => {
    const { meta, walA, a, b } = await servers();
    const id = await mkfile(meta);
    await a.data.write(id, 0, Buffer.alloc(3 * BS, 0x61));
    await meta.setAttr(id, { size: 3 * BS });
    walA.held = true;
    const waiting = walA.waiting();
    const cut = a.data.cutKeepingSize(id, 10, 3 * BS).then(
      (r) => String(r),
      (e: { errno?: string; message: string }) => e.errno ?? e.message,
    );
    await waiting;
    // One write through B inside the range A zeroes: its complete block is uploaded at once (under
    // B's newer lease), the rest of it waits in B's WAL.
    await b.data.write(id, BS, Buffer.alloc(BS + 100, 0x62));
    for (let i = 0; i < 1000 && (await meta.getBlocks(id, 1, 2)).length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal((await meta.getBlocks(id, 1, 2)).length, 1, "B's complete block is stored");
    walA.letGo();
    const got = await cut;
    const bytes = await b.data.read(id, BS, BS + 100, 3 * BS);
    const whole = bytes.equals(Buffer.alloc(BS + 100, 0x62)) || bytes.equals(Buffer.alloc(BS + 100));
    assert.ok(
      whole,
      `cut ${got}: B's one write reads ${JSON.stringify(bytes.subarray(0, 4).toString('latin1'))}… in its first block, ` +
        `${JSON.stringify(bytes.subarray(BS, BS + 4).toString('latin1'))}… in its second`,
    );
    assert.equal(got, 'JUKEBOX', 'the client sends it again');
    await a.data.close();
    await b.data.close();
  });

  it('the file was stored for a read through another server: logged under the same lease, and marked again', async () => {
    const s = await writtenByA(100);
    const { walA, a, b, id } = s;
    const t = a.leases.token(id);
    assert.equal(typeof t, 'number', 'held and marked');
    const { truncated } = await truncateWaiting(s, 50);
    // A read through B has what A acknowledged stored (A's mark goes).
    await b.leases.fresh(id);
    walA.letGo();
    assert.equal(await truncated, 'logged', 'nothing moved: not refused');
    // A read through B now asks A to store the truncate's zeroed tail first (the file is marked).
    assert.equal(a.data.hasDirty(id), true, 'the zeroed tail is not stored yet');
    await b.leases.fresh(id);
    assert.equal(a.data.hasDirty(id), false, 'a read through B after the truncate has it stored first');
    assert.equal(a.leases.heldUnder(id, t as number), true, 'under the same lease');
    await a.data.close();
    await b.data.close();
  });

  it('the lease lapsed while the truncate waited (no renewal, its keys gone) and another server wrote: refused', async () => {
    const s = await writtenByA(100);
    const { meta, walA, a, b, id } = s;
    const { truncated } = await truncateWaiting(s, 0);
    // A loses Redis (nothing renewed since: as Coordinator.disconnected does), and Redis its keys
    // (restarted without persistence, its grace over): B takes the lease and writes the file.
    a.leases.unconfirmAll();
    await open[open.length - 1]!.redis.del(`tah:lease:s:${id}`, `tah:dirty:s:${id}`);
    await b.data.write(id, 0, Buffer.alloc(200, 0x62), () => void meta.setAttr(id, { size: 200 }));
    walA.letGo();
    // A lease A cannot show is still its own is not one to log under: the truncate would cut (and
    // size) the file under B's newer writes.
    assert.equal(await truncated, 'JUKEBOX', 'the client sends it again');
    const sizeAfter = (await meta.getInode(id))!.size;
    assert.equal(sizeAfter, 200, "the truncate's size did not land over B's write");
    await a.data.close();
    await b.data.close();
  });

  it('a hand-over asked for while the truncate marks the file again: refused, and the mark goes with the lease', async () => {
    const s = await writtenByA(100);
    const { meta, walA, a, b, id } = s;
    const { truncated } = await truncateWaiting(s, 50);
    // A read through B has the file stored (A's mark goes); then, just as A's truncate marks the
    // file again (its Redis SET sent, not answered), B asks for the lease.
    await b.leases.fresh(id);
    const token = a.leases.token.bind(a.leases);
    a.leases.token = (i: number) => {
      const t = token(i);
      if (typeof t !== 'number') a.leases.handOver(i);
      return t;
    };
    walA.letGo();
    assert.equal(await truncated, 'JUKEBOX', 'the lease moved: the client sends it again');
    // The mark set for nothing acknowledged must not outlive the lease: else every other server
    // finds a mark of A with nobody holding the lease, and refuses the file (reads too) for an hour.
    const written = await b.data
      .write(id, 0, Buffer.alloc(10, 0x62), () => void meta.setAttr(id, { size: 100 }))
      .then(
        () => 'logged',
        (e: Error) => e.message,
      );
    assert.equal(written, 'logged', 'B takes the lease A handed over');
    await a.data.close();
    await b.data.close();
  });

  it('a hand-over asked for while a logged truncate stores its size waits for it', async () => {
    const { meta, a, b } = await servers();
    const id = await mkfile(meta);
    await a.data.write(id, 0, Buffer.alloc(100, 0x61));
    await meta.setAttr(id, { size: 100 });
    // A's hand-over stores the file through this, which tells when it began and ended.
    let entered!: () => void;
    const flushEntered = new Promise<void>((r) => (entered = r));
    let flushed = false;
    a.leases.leave(a.data);
    a.leases.join({
      flush: async (i) => {
        entered();
        await a.data.flush(i);
        flushed = true;
      },
      hasDirty: (i) => a.data.hasDirty(i),
    });
    // A's truncate is logged and its data cut; storing its size is slow.
    let storing!: () => void;
    const reached = new Promise<void>((r) => (storing = r));
    let storeSize!: () => void;
    const sizeStored = new Promise<void>((r) => (storeSize = r));
    const truncated = outcome(
      a.data.truncate(id, 0, async () => {
        storing();
        await sizeStored;
        return meta.setAttr(id, { size: 0 });
      }),
    );
    await reached;
    // A write through B asks A for the lease meanwhile.
    const written = outcome(b.data.write(id, 0, Buffer.alloc(200, 0x62), () => void meta.setAttr(id, { size: 200 })));
    await flushEntered;
    // A hand-over that does not wait for the truncate is over once its flush is (nothing is dirty:
    // at once): then B takes the lease and writes before the truncate's size is stored.
    await new Promise((r) => setImmediate(r));
    if (flushed) await written;
    storeSize();
    assert.equal(await truncated, 'logged');
    assert.equal(await written, 'logged');
    // Both acknowledged, the write after the truncate (it waited for the hand-over): B's bytes stay.
    const sizeAfter = (await meta.getInode(id))!.size;
    await b.data.write(id, 300, Buffer.from('x'), () => void meta.setAttr(id, { size: 301 }));
    const bytes = await b.data.read(id, 0, 200, 301);
    assert.ok(
      bytes.equals(Buffer.alloc(200, sizeAfter >= 200 ? 0x62 : 0)),
      `size ${sizeAfter} once both were acknowledged; B's bytes 0..200 read ${JSON.stringify(bytes.subarray(0, 8).toString('latin1'))}…`,
    );
    assert.equal(sizeAfter, 200, "the truncate's size did not land over B's write");
    await a.data.close();
    await b.data.close();
  });
});
