// Several servers: a truncate logged under A's lease (so a hand-over would wait for it, see
// truncate-after-handover.test.ts) is being applied when A's lease lapses without A knowing (a
// stall longer than the lease's ttl: its key expires in Redis). B takes the lease under a newer
// token and stores what it acknowledged. A's cut (dropBlocks) or size, landing after that, must not
// delete B's blocks nor store A's size over B's: the metadata store refuses them (the file was
// stored under a newer token), and A answers JUKEBOX, so the client sends the truncate again and
// A takes the lease back the ordinary way (B's data stored first).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { markRedisSeen, startRedis, TEST_LEASE_TTL_MS, type RedisInstance } from '../../../test/helpers/redis.js';
import { mkfile } from '../testing/blocks.js';
import { TEST_SHARE } from '../testing/memory-server.js';
import { CreateMode, FileService } from '../vfs/service.js';
import { leasedServers } from '../testing/leased-servers.js';
import type { Coordinator } from './leases.js';

const log = pino({ level: 'silent' });
const BS = 4096;
const PREFIX = 'tae:';
const root = { uid: 0, gid: 0, gids: [] };

/** A promise and what resolves it. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((r) => (open = r));
  return { wait, open };
}

describe('a truncate being applied when its lease lapses and another server writes the file', () => {
  let redis: RedisInstance;
  const open: Coordinator[] = [];
  before(async () => {
    redis = await startRedis();
    await markRedisSeen(redis.url, PREFIX);
  });
  after(async () => {
    for (const c of open) await c.close();
    await redis?.stop();
  });

  /** Two servers on one metadata store and one block store. */
  const servers = async () => {
    const { meta, server } = leasedServers({ url: redis.url, keyPrefix: PREFIX, leaseTtlMs: TEST_LEASE_TTL_MS, blockSize: BS, log, open });
    return { meta, a: await server(), b: await server() };
  };
  /** A's lease lapses unnoticed: its keys gone from Redis, as when their ttl passes while A stalls. */
  const lapse = async (b: { coord: Coordinator }, id: number): Promise<void> => {
    await b.coord.redis.del(`${PREFIX}lease:s:${id}`, `${PREFIX}dirty:s:${id}`);
  };

  /** Two servers, and a file of 100 bytes A wrote. */
  const setUp = async () => {
    const { meta, a, b } = await servers();
    const id = await mkfile(meta);
    await a.data.write(id, 0, Buffer.alloc(100, 0x61));
    await meta.setAttr(id, { size: 100 });
    /** A's lease lapses unnoticed; B writes 200 bytes, stores them (under its newer token) and their size. */
    const lapseAndWriteThroughB = async (): Promise<void> => {
      await lapse(b, id);
      await b.data.write(id, 0, Buffer.alloc(200, 0x62), () => void meta.setAttr(id, { size: 200 }));
      await b.data.flush(id);
      await meta.setAttr(id, { size: 200 });
      assert.equal((await meta.getBlocks(id, 0, 1)).length, 1, "B's block is stored");
    };
    /** What B acknowledged is what the file holds. */
    const bStays = async (): Promise<void> => {
      assert.equal((await meta.getInode(id))!.size, 200, "B's size stays");
      assert.equal((await meta.getBlocks(id, 0, 1)).length, 1, "B's block stays");
      const bytes = await b.data.read(id, 0, 200, 200);
      assert.ok(bytes.equals(Buffer.alloc(200, 0x62)), `B's bytes read ${JSON.stringify(bytes.subarray(0, 8).toString('latin1'))}…`);
    };
    const outcome = (p: Promise<unknown>): Promise<string> =>
      p.then(
        () => 'applied',
        (e: { errno?: string; message: string }) => e.errno ?? e.message,
      );
    /**
     * A's truncate to 0, its size stored under its lease (as the vfs does). With `size`: once the
     * data is cut, `reached` opens, and the size is stored once `go` opens.
     */
    const truncateThroughA = (size?: { reached: () => void; go: Promise<void> }): Promise<string> =>
      outcome(
        a.data.truncate(id, 0, async (token) => {
          size?.reached();
          await size?.go;
          return meta.setAttr(id, { size: 0, leaseToken: token });
        }),
      );
    const close = async (): Promise<void> => {
      await a.data.close();
      await b.data.close();
    };
    return { meta, a, b, id, lapseAndWriteThroughB, bStays, truncateThroughA, close };
  };

  it("the lease lapses before A's cut reaches the store: the cut is refused (JUKEBOX) and B's data stays", async () => {
    const s = await setUp();
    // A's cut waits at the metadata store until B has written.
    const reached = gate();
    const go = gate();
    const drop = s.meta.dropBlocks.bind(s.meta);
    s.meta.dropBlocks = async (inodeId, from, token) => {
      if (inodeId === s.id && (token ?? 0) > 0) {
        reached.open();
        await go.wait;
      }
      return drop(inodeId, from, token);
    };
    const truncated = s.truncateThroughA();
    await reached.wait;
    await s.lapseAndWriteThroughB();
    go.open();
    const got = await truncated;
    await s.bStays();
    assert.equal(got, 'JUKEBOX', 'the client sends the truncate again');
    await s.close();
  });

  it("the lease lapses after A's cut, before its size is stored: the size is refused (JUKEBOX) and B's stays", async () => {
    const s = await setUp();
    const reached = gate();
    const go = gate();
    const truncated = s.truncateThroughA({ reached: reached.open, go: go.wait });
    await reached.wait;
    await s.lapseAndWriteThroughB();
    go.open();
    const got = await truncated;
    await s.bStays();
    assert.equal(got, 'JUKEBOX', 'the client sends the truncate again');
    await s.close();
  });

  /**
   * Through the file service: A's SETATTR to size 0 is cut; before its size is stored, A's lease
   * lapses and B's WRITE of 200 bytes is acknowledged (and COMMITted: stored, with `commit`).
   */
  const setattrThroughA = async (commit: boolean): Promise<void> => {
    const { meta, a, b } = await servers();
    const fsA = new FileService();
    const fsB = new FileService();
    const shareA = await fsA.addShare({ ...TEST_SHARE }, meta, a.data);
    const shareB = await fsB.addShare({ ...TEST_SHARE }, meta, b.data);
    const rootA = fsA.handleOf(shareA, await fsA.root(shareA));
    const f = (await fsA.create(rootA, Buffer.from('f'), root, CreateMode.UNCHECKED, {}, null)).inode;
    const hA = fsA.handleOf(shareA, f);
    const hB = fsB.handleOf(shareB, f);
    await fsA.write(hA, root, 0, Buffer.alloc(100, 0x61), false);
    // A's cut is in the store; storing its size waits until B has written.
    const reached = gate();
    const go = gate();
    const drop = meta.dropBlocks.bind(meta);
    meta.dropBlocks = async (inodeId, from, token) => {
      const dropped = await drop(inodeId, from, token);
      if (inodeId === f.id && (token ?? 0) > 0) {
        reached.open();
        await go.wait;
      }
      return dropped;
    };
    const truncated = fsA.setattr(hA, root, { size: 0 }).then(
      () => 'applied',
      (e: { errno?: string; message: string }) => e.errno ?? e.message,
    );
    await reached.wait;
    await lapse(b, f.id);
    // B's WRITE (its size stored at once: no cache here) and COMMIT (no persistent WAL: its data
    // is stored at once, under B's token).
    await fsB.write(hB, root, 0, Buffer.alloc(200, 0x62), false);
    if (commit) await fsB.commit(hB, root);
    go.open();
    const got = await truncated;
    await b.data.flush(f.id);
    assert.equal((await meta.getInode(f.id))!.size, 200, "B's size stays");
    const read = await fsB.read(hB, root, 0, 200);
    assert.ok(read.data.equals(Buffer.alloc(200, 0x62)), `B's bytes read ${JSON.stringify(read.data.subarray(0, 8).toString('latin1'))}…`);
    assert.equal(got, 'JUKEBOX', 'the client sends the SETATTR again');
    await a.data.close();
    await b.data.close();
  };

  it("through the file service (SETATTR size): the size A stores is refused (JUKEBOX) and B's stays", () => setattrThroughA(true));

  // B's size reaches the store before anything else of B's lease does (its blocks wait in its WAL,
  // or in memory here): the size carries B's token (AttrChanges.sizeToken), which refuses A's.
  it("through the file service, B's data not stored yet when A's size lands: B's size stays", () => setattrThroughA(false));
});
