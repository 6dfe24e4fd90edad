// Data and sizes through several servers (issue 14), SMB and SMB+NFS: two DittoFS processes serve
// /export from one PostgreSQL store, one S3 bucket and one Redis. What one server acknowledged is
// what the other's clients see and change:
// - SET_ZERO_DATA through B zeroes bytes A acknowledged and had not stored (a hole in B's block map);
// - FileAllocationInformation, QUERY_INFO, CREATE's EndOfFile and QUERY_ALLOCATED_RANGES through B
//   use the size A acknowledged, also when A's size is written behind (A's append under its lease):
//   a client that writes at the end of file it queried wrote over an acknowledged append before;
// - an NFS READ through B sees what A's SMB client wrote back when its write-caching lease broke;
// - a write A acknowledged while it truncated and B had it store the file is what B reads next;
// - an EndOfFile through A and a write through B side by side leave one of the two orders (A's
//   truncate stored its size after B took the lease and wrote: B's bytes came back);
// - QUERY_DIRECTORY through B lists the sizes A wrote behind;
// - a seeded sequence of SMB writes, appends, EndOfFile, zeroing, copychunk and NFS writes and
//   truncates alternating between the servers leaves exactly what a model says (HUNT_SEED,
//   HUNT_STEPS to vary it).
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { SUITE_TIMEOUT_MS } from '../helpers/limits.js';
import { addShareUser, takeOverAdmin } from '../helpers/api.js';
import { type DittofsProcess } from '../helpers/server.js';
import { SmbCluster } from '../helpers/smb-cluster.js';
import { LEASE_H, LEASE_R, LEASE_W, RawSmbClient } from '../helpers/smb-raw.js';
import { NfsOps } from '../helpers/nfs-ops.js';
import { NfsStat } from '../helpers/rpc-client.js';
import { bodies, SmbCommand } from '../helpers/smb-client.js';
import { storeInconsistencies } from '../helpers/replicas.js';

const USER = { username: 'clusteruser', password: 'cluster-user-Passw0rd', uid: 1000, gid: 1000 };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const hex = (n: number): string => `0x${n.toString(16)}`;
const FSCTL_SET_ZERO_DATA = 0x000980c8;
const FSCTL_SET_SPARSE = 0x000900c4;
const INFO_FILE = 1;
const FILE_ALLOCATION_INFORMATION = 19;
const FILE_END_OF_FILE_INFORMATION = 20;
const FILE_STANDARD_INFORMATION = 5;

function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}
function zeroData(from: number, beyond: number): Buffer {
  return Buffer.concat([u64(from), u64(beyond)]);
}

async function until(what: string, f: () => Promise<boolean>, ms = 15_000): Promise<number> {
  const start = Date.now();
  while (Date.now() - start < ms) {
    if (await f()) return Date.now() - start;
    await sleep(200);
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

describe('hunt: several servers, SMB', { timeout: SUITE_TIMEOUT_MS }, () => {
  const cl = new SmbCluster('replicas-hunt', USER);
  let a: DittofsProcess;
  let b: DittofsProcess;

  const start = (name: string, config?: string): Promise<DittofsProcess> => cl.start(name, config);
  const smb = (s: DittofsProcess): Promise<RawSmbClient> => cl.smb(s);
  const nfs = (s: DittofsProcess): Promise<{ c: NfsOps; root: Buffer }> => cl.nfs(s);

  before(async () => {
    // The API on (SMB users), its database in the same PostgreSQL: both servers share it.
    await cl.open();
    a = await start('a');
    b = await start('b');
    const token = await takeOverAdmin(`http://127.0.0.1:${a.apiPort}`, 'replicas-hunt-admin');
    await addShareUser(`http://127.0.0.1:${a.apiPort}`, token, USER);
    const viaB = await smb(b);
    const viaA = await smb(a);
    assert.equal(hex(await viaA.createStatus('grace.txt')), hex(0));
    await until('the grace period', async () => (await viaB.createStatus('grace.txt')) === 0, 15_000);
    // Writes too (no lease is taken during the grace period after Redis started empty).
    for (const c of [viaA, viaB]) {
      const g = (await c.create('grace.txt')).fileId;
      await until(
        'writes are taken',
        async () => (await c.request(SmbCommand.WRITE, bodies.write(g, 0, Buffer.from('g')))).status === 0,
        20_000,
      );
      await c.close(g);
    }
  });

  afterEach(async () => {
    assert.deepEqual(await storeInconsistencies(cl.pgi.url), []);
  });

  after(async () => {
    await cl.close();
  });

  const standard = async (c: RawSmbClient, fileId: Buffer): Promise<{ alloc: number; eof: number }> => {
    const q = await c.queryInfo(fileId, INFO_FILE, FILE_STANDARD_INFORMATION);
    assert.equal(hex(q.status), hex(0));
    return { alloc: Number(q.output.readBigUInt64LE(0)), eof: Number(q.output.readBigUInt64LE(8)) };
  };

  it('SET_ZERO_DATA through B over bytes A acknowledged past the size B last saw: they read as zeros', async () => {
    const ca = await smb(a);
    const cb = await smb(b);
    const fa = (await ca.create('zero-grow.bin')).fileId;
    const fb = (await cb.create('zero-grow.bin')).fileId;
    await ca.write(fa, 0, Buffer.alloc(8192, 0x79));
    const z = await cb.fsctl(fb, FSCTL_SET_ZERO_DATA, zeroData(0, 8192));
    assert.equal(hex(z.status), hex(0));
    const got = await cb.read(fb, 0, 8192);
    assert.equal(got.length, 8192);
    assert.ok(got.equals(Buffer.alloc(8192)), `first nonzero byte at ${got.findIndex((x) => x !== 0)}`);
    await ca.close(fa);
    await cb.close(fb);
  });

  it('SET_ZERO_DATA through B inside a sparse file, over bytes A acknowledged in a hole: they read as zeros', async () => {
    const ca = await smb(a);
    const cb = await smb(b);
    const fa = (await ca.create('zero-hole.bin')).fileId;
    assert.equal(hex((await ca.fsctl(fa, FSCTL_SET_SPARSE, Buffer.alloc(0))).status), hex(0));
    assert.equal(hex(await ca.setInfo(fa, INFO_FILE, FILE_END_OF_FILE_INFORMATION, u64(65536))), hex(0));
    const fb = (await cb.create('zero-hole.bin')).fileId;
    // B knows the size (a read of it)
    assert.equal((await standard(cb, fb)).eof, 65536);
    await cb.read(fb, 0, 16);
    await ca.write(fa, 0, Buffer.alloc(4096, 0x79));
    const z = await cb.fsctl(fb, FSCTL_SET_ZERO_DATA, zeroData(0, 4096));
    assert.equal(hex(z.status), hex(0));
    const got = await cb.read(fb, 0, 4096);
    assert.ok(got.equals(Buffer.alloc(4096)), `first nonzero byte at ${got.findIndex((x) => x !== 0)}`);
    const viaA = await ca.read(fa, 0, 4096);
    assert.ok(viaA.equals(Buffer.alloc(4096)), `through A: first nonzero byte at ${viaA.findIndex((x) => x !== 0)}`);
    await ca.close(fa);
    await cb.close(fb);
  });

  it('FileAllocationInformation through B below what A acknowledged cuts the file there', async () => {
    const ca = await smb(a);
    const cb = await smb(b);
    const fa = (await ca.create('alloc.bin')).fileId;
    const fb = (await cb.create('alloc.bin')).fileId;
    await ca.write(fa, 0, Buffer.alloc(4096, 0x78));
    assert.equal((await standard(cb, fb)).eof, 4096, 'B knows the size');
    // An append through A: its size is written behind there (A holds the lease).
    const app = bodies.write(fa, 0, Buffer.alloc(4096, 0x79));
    app.writeBigUInt64LE(0xffffffffffffffffn, 8);
    assert.equal(hex((await ca.request(SmbCommand.WRITE, app)).status), hex(0));
    await ca.write(fa, 8192, Buffer.alloc(4096, 0x7a));
    assert.equal(hex(await cb.setInfo(fb, INFO_FILE, FILE_ALLOCATION_INFORMATION, u64(6000))), hex(0));
    assert.equal((await standard(cb, fb)).eof, 6000, 'the size through B');
    assert.equal((await standard(ca, fa)).eof, 6000, 'the size through A');
    await ca.close(fa);
    await cb.close(fb);
  });

  it('QUERY_INFO through B reports the size A acknowledged', async () => {
    const ca = await smb(a);
    const cb = await smb(b);
    const fa = (await ca.create('qsize.bin')).fileId;
    const fb = (await cb.create('qsize.bin')).fileId;
    await ca.write(fa, 0, Buffer.alloc(4096, 0x79));
    assert.equal((await standard(cb, fb)).eof, 4096, 'the size through B');
    // A holds the lease and the file's entry now: this size is written behind there.
    await ca.write(fa, 4096, Buffer.alloc(4096, 0x7a));
    assert.equal((await standard(cb, fb)).eof, 8192, 'the size through B');
    await ca.close(fa);
    await cb.close(fb);
  });

  it('an NFS READ through B sees what A’s SMB client wrote back when its write-caching lease broke', async () => {
    const ca = await smb(a);
    const key = Buffer.alloc(16, 0x31);
    const { fileId, leaseState } = await ca.create('writeback.bin', { lease: { key, state: LEASE_R | LEASE_W | LEASE_H } });
    assert.equal(leaseState, LEASE_R | LEASE_W | LEASE_H, 'RWH lease through A');
    // The client cached these bytes under its write caching: it writes them back on the break.
    const cached = Buffer.alloc(4096, 0x7a);
    ca.onBreak = (n) => {
      if (n.kind === 'lease' && n.ackRequired)
        void (async () => {
          await ca.write(fileId, 0, cached);
          await ca.ackLease(n.key, n.next);
        })();
    };
    const { c: nb, root } = await nfs(b);
    const fh = (await nb.lookup(root, 'writeback.bin')).fh!;
    const r = await nb.read(fh, 0, 4096);
    assert.equal(r.status, NfsStat.OK);
    assert.equal(ca.breaks.length, 1, 'A’s client saw the lease break');
    assert.equal(r.data.length, 4096, 'the bytes written back on the break, through B');
    assert.ok(r.data.equals(cached), `first byte not written back at ${r.data.findIndex((x, k) => x !== cached[k])}`);
    await ca.close(fileId);
  });

  it('an SMB client through A that writes at the end of file it queried does not overwrite what B acknowledged', async () => {
    const ca = await smb(a);
    const cb = await smb(b);
    const fa = (await ca.create('eof-query.log')).fileId;
    const fb = (await cb.create('eof-query.log')).fileId;
    // A knows the file (its own write, and a query of its size).
    await ca.write(fa, 0, Buffer.from('a0\n'));
    assert.equal((await standard(ca, fa)).eof, 3);
    // B's client appends; acknowledged.
    const app = bodies.write(fb, 0, Buffer.from('b1\n'));
    app.writeBigUInt64LE(0xffffffffffffffffn, 8);
    assert.equal(hex((await cb.request(SmbCommand.WRITE, app)).status), hex(0));
    // A's client appends as Windows applications do: the end of file queried, then a write there.
    const eof = (await standard(ca, fa)).eof;
    await ca.write(fa, eof, Buffer.from('a2\n'));
    assert.equal((await cb.read(fb, 0, 64)).toString(), 'a0\nb1\na2\n');
    // A new open through A reports the size B acknowledged too (CREATE's EndOfFile).
    const app3 = bodies.write(fb, 0, Buffer.from('b3\n'));
    app3.writeBigUInt64LE(0xffffffffffffffffn, 8);
    assert.equal(hex((await cb.request(SmbCommand.WRITE, app3)).status), hex(0));
    const r = await ca.request(SmbCommand.CREATE, bodies.create('eof-query.log'));
    assert.equal(hex(r.status), hex(0));
    assert.equal(Number(r.body.readBigUInt64LE(48)), 12, 'CREATE EndOfFile through A');
    await ca.close(Buffer.from(r.body.subarray(64, 80)));
    await ca.close(fa);
    await cb.close(fb);
  });

  it('QUERY_ALLOCATED_RANGES through B lists the data A appended to a sparse file', async () => {
    const ca = await smb(a);
    const cb = await smb(b);
    const fa = (await ca.create('ranges.bin')).fileId;
    assert.equal(hex((await ca.fsctl(fa, FSCTL_SET_SPARSE, Buffer.alloc(0))).status), hex(0));
    await ca.write(fa, 0, Buffer.alloc(4096, 0x78));
    const fb = (await cb.create('ranges.bin')).fileId;
    assert.equal((await standard(cb, fb)).eof, 4096, 'B knows the size');
    const app = bodies.write(fa, 0, Buffer.alloc(4096, 0x79));
    app.writeBigUInt64LE(0xffffffffffffffffn, 8);
    assert.equal(hex((await ca.request(SmbCommand.WRITE, app)).status), hex(0));
    const q = await cb.fsctl(fb, 0x000940cf, zeroData(0, 1 << 20), 1024);
    assert.equal(hex(q.status), hex(0));
    const ranges: Array<[number, number]> = [];
    for (let k = 0; k + 16 <= q.output.length; k += 16)
      ranges.push([Number(q.output.readBigUInt64LE(k)), Number(q.output.readBigUInt64LE(k + 8))]);
    assert.deepEqual(ranges, [[0, 8192]], 'the allocated ranges through B');
    await ca.close(fa);
    await cb.close(fb);
  });

  it('a write acknowledged through A while A truncates and B asks A to store the file is what B reads next', async () => {
    const ca = await smb(a);
    const cb = await smb(b);
    const { c: nb, root } = await nfs(b);
    const fa = (await ca.create('trunc-race.bin')).fileId;
    const fb = (await cb.create('trunc-race.bin')).fileId;
    const fh = (await nb.lookup(root, 'trunc-race.bin')).fh!;
    const ROUNDS = Number(process.env.HUNT_ROUNDS ?? 30);
    let busy = 0;
    for (let i = 0; i < ROUNDS; i++) {
      const w = Buffer.alloc(4096, 0x30 + (i % 40));
      w[0] = i;
      // A: a size change and a write side by side (the write waits at the truncate's gate); B: reads.
      const [st, wr] = await Promise.all([
        ca.setInfo(fa, INFO_FILE, FILE_END_OF_FILE_INFORMATION, u64(65536 + (i % 2) * 4096)),
        (async () => {
          await sleep(i % 3);
          // NETWORK_BUSY (refused while it waited: the lease moved, or the file was stored) is
          // sent again, as a client does.
          for (let k = 0; ; k++) {
            const got = (await ca.request(SmbCommand.WRITE, bodies.write(fa, 8192, w))).status;
            if (got !== 0xc00000bf || k > 50) return got;
            busy++;
          }
        })(),
        nb.read(fh, 8192, 16),
        cb.read(fb, 0, 16).catch(() => null),
      ]);
      assert.equal(hex(st), hex(0), `round ${i}: EndOfFile`);
      assert.equal(hex(wr), hex(0), `round ${i}: WRITE`);
      const viaNfs = await nb.read(fh, 8192, 4096);
      const viaSmb = await cb.read(fb, 8192, 4096);
      assert.ok(
        viaNfs.data.equals(w),
        `round ${i}: NFS through B read ${viaNfs.data.length} bytes ${viaNfs.data.subarray(0, 4).toString('hex')}.. ${viaNfs.data.subarray(4090).toString('hex')} not round ${i}.s write; SMB through B: ${viaSmb.subarray(0, 4).toString('hex')}; through A: ${(await ca.read(fa, 8192, 4)).toString('hex')}`,
      );
      assert.ok(viaSmb.equals(w), `round ${i}: SMB through B read ${viaSmb[0]}.. not round ${i}'s write`);
    }
    console.log(`# ${busy} write(s) sent again after NETWORK_BUSY`);
    await ca.close(fa);
    await cb.close(fb);
  });

  it('EndOfFile 0 through A side by side with a WRITE through B: the file is one of the two orders, never a mix', async () => {
    // A's truncate took its token and B's write asked for the lease before A's size was stored:
    // A's size landed over B's write, whose bytes (in B's WAL, under B's newer lease) came back once
    // the file grew again.
    const ca = await smb(a);
    const cb = await smb(b);
    const fa = (await ca.create('trunc-vs-write.bin')).fileId;
    const fb = (await cb.create('trunc-vs-write.bin')).fileId;
    const ROUNDS = Number(process.env.HUNT_ROUNDS ?? 30);
    const BUSY = 0xc00000bf;
    /** `send` again after NETWORK_BUSY (refused while it waited: the lease moved), as a client does. */
    const resent = async (send: () => Promise<number>): Promise<number> => {
      for (let k = 0; ; k++) {
        const got = await send();
        if (got !== BUSY || k > 50) return got;
      }
    };
    const orders = { truncateLast: 0, writeLast: 0 };
    for (let i = 0; i < ROUNDS; i++) {
      // A holds the lease with 8 KiB acknowledged and not stored.
      await ca.write(fa, 0, Buffer.alloc(8192, 0x61));
      const w = Buffer.alloc(4096, 0x30 + (i % 40));
      // Either may come first (B's write takes the lease from A: A stores its bytes first).
      const [st, wr] = await Promise.all([
        (async () => {
          await sleep(i % 4 === 3 ? 5 : 0);
          return resent(() => ca.setInfo(fa, INFO_FILE, FILE_END_OF_FILE_INFORMATION, u64(0)));
        })(),
        (async () => {
          await sleep(i % 3);
          return resent(async () => (await cb.request(SmbCommand.WRITE, bodies.write(fb, 0, w))).status);
        })(),
      ]);
      assert.equal(hex(st), hex(0), `round ${i}: EndOfFile`);
      assert.equal(hex(wr), hex(0), `round ${i}: WRITE`);
      const { eof } = await standard(cb, fb);
      if (eof === 0) {
        // The truncate last: B's bytes are cut, also once the file grows again.
        orders.truncateLast++;
        assert.equal(hex(await cb.setInfo(fb, INFO_FILE, FILE_END_OF_FILE_INFORMATION, u64(4096))), hex(0));
        const got = await cb.read(fb, 0, 4096);
        assert.ok(
          got.equals(Buffer.alloc(4096)),
          `round ${i}: size 0 after both, then grown: B's cut write reads ${got.subarray(0, 8).toString('hex')}…`,
        );
      } else {
        orders.writeLast++;
        assert.equal(eof, 4096, `round ${i}: the size is one of the two orders'`);
        const got = await cb.read(fb, 0, 4096);
        assert.ok(got.equals(w), `round ${i}: the write last, it reads ${got.subarray(0, 8).toString('hex')}…`);
      }
    }
    console.log(`# truncate last in ${orders.truncateLast} round(s), the write last in ${orders.writeLast}`);
    await ca.close(fa);
    await cb.close(fb);
  });

  // Known, not fixed: directory entries come from the cache of B, which does not know a size A writes
  // behind under its lease (one Redis round trip per listed file to refresh them).
  it('QUERY_DIRECTORY through B lists the size A acknowledged', async () => {
    const ca = await smb(a);
    const cb = await smb(b);
    const dir = (await cb.create('qd', { options: 1 })).fileId;
    const fa = (await ca.create('qd\\f.bin')).fileId;
    await ca.write(fa, 0, Buffer.alloc(4096, 0x79));
    const list = async (): Promise<number> => {
      const pat = Buffer.from('*', 'utf16le');
      const w = Buffer.alloc(32 + pat.length);
      w.writeUInt16LE(33, 0);
      w[2] = 1;
      w[3] = 1; // RESTART_SCANS
      dir.copy(w, 8);
      w.writeUInt16LE(64 + 32, 24);
      w.writeUInt16LE(pat.length, 26);
      w.writeUInt32LE(65536, 28);
      pat.copy(w, 32);
      const r = await cb.request(14, w);
      assert.equal(hex(r.status), hex(0));
      const out = r.body.subarray(r.body.readUInt16LE(2) - 64, r.body.readUInt16LE(2) - 64 + r.body.readUInt32LE(4));
      for (let at = 0; ;) {
        const name = out.toString('utf16le', at + 64, at + 64 + out.readUInt32LE(at + 60));
        if (name === 'f.bin') return Number(out.readBigUInt64LE(at + 40));
        const next = out.readUInt32LE(at);
        if (next === 0) return -1;
        at += next;
      }
    };
    assert.equal(await list(), 4096);
    await ca.write(fa, 4096, Buffer.alloc(4096, 0x7a));
    assert.equal(await list(), 8192, 'QUERY_DIRECTORY through B');
  });

  it('a sequence of SMB and NFS data changes alternating between the servers leaves exactly what a model says', async () => {
    const MiB = 1024 * 1024;
    // Two windows: the start of the file and around the end of the first 4 MiB block.
    const WINDOWS: Array<[number, number]> = [
      [0, 48 * 1024],
      [4 * MiB - 24 * 1024, 4 * MiB + 24 * 1024],
    ];
    const LIMIT = WINDOWS[1]![1];
    let seed = Number(process.env.HUNT_SEED ?? 12345);
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const where = (len: number): number => {
      const w = WINDOWS[rnd(2)]!;
      return w[0] + rnd(w[1] - w[0] - len);
    };
    const smbs = [await smb(a), await smb(b)];
    const ids = [(await smbs[0]!.create('model.bin')).fileId];
    ids.push((await smbs[1]!.create('model.bin')).fileId);
    const nfss = [await nfs(a), await nfs(b)];
    const fhs = [(await nfss[0]!.c.lookup(nfss[0]!.root, 'model.bin')).fh!, (await nfss[1]!.c.lookup(nfss[1]!.root, 'model.bin')).fh!];
    let model = Buffer.alloc(0);
    const setSize = (n: number): void => {
      if (n <= model.length) model = Buffer.from(model.subarray(0, n));
      else model = Buffer.concat([model, Buffer.alloc(n - model.length)]);
    };
    const put = (off: number, data: Buffer): void => {
      if (off + data.length > model.length) setSize(off + data.length);
      data.copy(model, off);
    };
    const BUSY = 0xc00000bf;
    const smbRetry = async (f: () => Promise<number>, what: string): Promise<void> => {
      for (let k = 0; ; k++) {
        const st = await f();
        if (st === 0) return;
        if (st !== BUSY || k > 50) throw new Error(`${what}: ${hex(st)}`);
        await sleep(100);
      }
    };
    const nfsRetry = async (f: () => Promise<number>, what: string): Promise<void> => {
      for (let k = 0; ; k++) {
        const st = await f();
        if (st === 0) return;
        if (st !== 10008 /* NFS3ERR_JUKEBOX */ || k > 50) throw new Error(`${what}: NFS ${st}`);
        await sleep(100);
      }
    };
    const log: string[] = [];
    const verify = async (step: number): Promise<void> => {
      const s = rnd(2);
      const viaNfs = rnd(2) === 1;
      const size = viaNfs ? (await nfss[s]!.c.getattr(fhs[s]!)).attrs!.size : (await standard(smbs[s]!, ids[s]!)).eof;
      assert.equal(
        Number(size),
        model.length,
        `step ${step}: size through ${'AB'[s]} (${viaNfs ? 'NFS' : 'SMB'}); ${log.slice(-6).join('; ')}`,
      );
      for (const [from, to] of WINDOWS) {
        const end = Math.min(to, model.length);
        if (end <= from) continue;
        let got: Buffer;
        if (viaNfs) {
          const r = await nfss[s]!.c.read(fhs[s]!, from, end - from);
          assert.equal(r.status, 0);
          got = r.data;
        } else got = await smbs[s]!.read(ids[s]!, from, end - from);
        const want = model.subarray(from, end);
        if (!got.equals(want)) {
          const k = [...want].findIndex((x, j) => got[j] !== x);
          assert.fail(
            `step ${step}: through ${'AB'[s]} (${viaNfs ? 'NFS' : 'SMB'}) byte ${from + k} is ${got[k]}, the model has ${want[k]} (got ${got.length} bytes); ${log.slice(-8).join('; ')}`,
          );
        }
      }
    };
    const STEPS = Number(process.env.HUNT_STEPS ?? 120);
    for (let step = 0; step < STEPS; step++) {
      const s = rnd(2);
      const c = smbs[s]!;
      const id = ids[s]!;
      const op = rnd(9);
      const len = 1 + rnd(12 * 1024);
      const data = Buffer.alloc(len, 0x41 + (step % 26));
      data[0] = step & 0xff;
      if (op === 0 || op === 1) {
        const off = where(len);
        log.push(`${'AB'[s]} smb write ${off}+${len}`);
        await smbRetry(async () => (await c.request(SmbCommand.WRITE, bodies.write(id, off, data))).status, 'WRITE');
        put(off, data);
      } else if (op === 2) {
        if (model.length + len > LIMIT) continue;
        log.push(`${'AB'[s]} smb append ${len} at ${model.length}`);
        const w = bodies.write(id, 0, data);
        w.writeBigUInt64LE(0xffffffffffffffffn, 8);
        await smbRetry(async () => (await c.request(SmbCommand.WRITE, w)).status, 'append');
        put(model.length, data);
      } else if (op === 3) {
        const n = rnd(3) === 0 ? rnd(WINDOWS[0]![1]) : where(0);
        log.push(`${'AB'[s]} smb eof ${n}`);
        await smbRetry(() => c.setInfo(id, INFO_FILE, FILE_END_OF_FILE_INFORMATION, u64(n)), 'EOF');
        setSize(n);
      } else if (op === 4) {
        const from = where(len);
        log.push(`${'AB'[s]} zero ${from}..${from + len}`);
        await smbRetry(async () => (await c.fsctl(id, FSCTL_SET_ZERO_DATA, zeroData(from, from + len))).status, 'ZERO');
        if (from < model.length) model.fill(0, from, Math.min(from + len, model.length));
      } else if (op === 5) {
        const off = where(len);
        log.push(`${'AB'[s]} nfs write ${off}+${len}`);
        await nfsRetry(async () => (await nfss[s]!.c.writeV(fhs[s]!, off, data, rnd(2) === 0 ? 0 : 2)).status, 'NFS WRITE');
        put(off, data);
      } else if (op === 6) {
        const n = where(0);
        log.push(`${'AB'[s]} nfs size ${n}`);
        await nfsRetry(async () => (await nfss[s]!.c.setattr(fhs[s]!, { size: n })).status, 'NFS SETATTR');
        setSize(n);
      } else if (op === 7) {
        // Server-side copy within the file (source read whole before it is written).
        if (model.length < len) continue;
        const src = rnd(model.length - len + 1);
        const dst = where(len);
        const k = await c.fsctl(id, 0x00140078, Buffer.alloc(0), 32);
        assert.equal(hex(k.status), hex(0));
        const inb = Buffer.alloc(24 + 8 + 24);
        k.output.copy(inb, 0, 0, 24);
        inb.writeUInt32LE(1, 24);
        inb.writeBigUInt64LE(BigInt(src), 32);
        inb.writeBigUInt64LE(BigInt(dst), 40);
        inb.writeUInt32LE(len, 48);
        log.push(`${'AB'[s]} copy ${src}->${dst}+${len}`);
        await smbRetry(async () => (await c.fsctl(id, 0x001480f2, inb, 64)).status, 'COPYCHUNK');
        put(dst, Buffer.from(model.subarray(src, src + len)));
      } else {
        await verify(step);
        continue;
      }
      if (rnd(3) === 0) await verify(step);
    }
    await verify(STEPS);
  });
});
