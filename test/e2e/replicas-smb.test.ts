// SMB lock state across several servers (issue 14): two DittoFS processes serve /export from one
// PostgreSQL store, one S3 bucket (s3rver) and one Redis; raw SMB clients (test/helpers/smb-raw.ts)
// and a raw NFSv3 client talk to either. What one server granted binds the other:
// - share modes: an open through A that does not share write makes a write-open through B fail
//   (SHARING_VIOLATION) and an NFS REMOVE through B fail (ACCES); after A's close B opens it;
// - delete-pending: a delete-on-close open closed through A while B holds an open leaves the file
//   delete-pending for new opens through A (DELETE_PENDING); B's last close removes it;
// - a rename through B does not replace a file open through A (ACCESS_DENIED), nor renames a file
//   in a directory open through A with DELETE access (SHARING_VIOLATION);
// - byte-range locks: a lock through A refuses B's LOCK, SMB WRITE and READ (FILE_LOCK_CONFLICT)
//   and an NFS WRITE through B (ACCES); a blocking LOCK through B is granted when A unlocks;
// - a SIGKILLed server's opens and locks stop refusing the other within the liveness ttl (3 s), and a
//   blocking LOCK waiting on its lock is granted;
// - a server that loses Redis right after a change it could not publish: the others stop trusting
//   their caches once its liveness key is gone (within the ttl and one renewal);
// - with Redis stopped a server grants no open of a shared file (NETWORK_BUSY) and grants again
//   once Redis is back;
// - durable handles: an open preserved through A (its client gone) is closed by an open through B;
//   one reconnected through A keeps its batch oplock, which an open through B breaks (B then gets
//   no batch oplock: an open elsewhere counts like a local one, and a lease beside it caches no writes);
// - an open whose caching cannot be announced (Redis lost right then) is granted without an oplock,
//   not refused.
// After every test the PostgreSQL tables are checked: one tree, nlink right, no orphan block rows.
// Each of these passes two servers a conflicting grant on the code before coord/locks.ts.
import assert from 'node:assert/strict';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { SUITE_TIMEOUT_MS } from '../helpers/limits.js';
import { addShareUser, takeOverAdmin } from '../helpers/api.js';
import { NfsOps } from '../helpers/nfs-ops.js';
import pg from 'pg';
import { NfsStat, StableHow } from '../helpers/rpc-client.js';
import { type DittofsProcess } from '../helpers/server.js';
import { SmbCluster } from '../helpers/smb-cluster.js';
import { SmbWriter } from '../../server/src/smb2/codec.js';
import { LEASE_H, LEASE_R, LEASE_W, RawSmbClient } from '../helpers/smb-raw.js';
import { bodies, SmbCommand } from '../helpers/smb-client.js';
import { writeConfig } from '../fault/support.js';
import { storeInconsistencies } from '../helpers/replicas.js';
import { tcpForward } from '../helpers/proxy.js';

const USER = { username: 'clusteruser', password: 'cluster-user-Passw0rd', uid: 1000, gid: 1000 };
const STATUS = {
  SUCCESS: 0,
  SHARING_VIOLATION: 0xc0000043,
  DELETE_PENDING: 0xc0000056,
  LOCK_NOT_GRANTED: 0xc0000055,
  FILE_LOCK_CONFLICT: 0xc0000054,
  NETWORK_BUSY: 0xc00000bf,
};
const SHARE_READ = 1;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** LOCK (MS-SMB2 2.2.26) of one range with raw flags; the final reply's status. */
async function lockStatus(c: RawSmbClient, fileId: Buffer, offset: number, length: number, flags: number): Promise<number> {
  const w = new SmbWriter(48);
  w.u16(48).u16(1).u32(0).bytes(fileId);
  w.u64(offset).u64(length).u32(flags).u32(0);
  return (await c.request(SmbCommand.LOCK, w.finish())).status;
}

async function writeStatus(c: RawSmbClient, fileId: Buffer, offset: number, data: Buffer): Promise<number> {
  return (await c.request(SmbCommand.WRITE, bodies.write(fileId, offset, data))).status;
}

async function readStatus(c: RawSmbClient, fileId: Buffer, offset: number, length: number): Promise<number> {
  return (await c.request(SmbCommand.READ, bodies.read(fileId, offset, length))).status;
}

/** SET_INFO FileRenameInformation (MS-SMB2 2.2.39, MS-FSCC 2.4.42.2) of an open to `to`, replacing; the status. */
async function renameStatus(c: RawSmbClient, fileId: Buffer, to: string): Promise<number> {
  const name = Buffer.from(to, 'utf16le');
  const info = Buffer.alloc(20 + name.length);
  info[0] = 1;
  info.writeUInt32LE(name.length, 16);
  name.copy(info, 20);
  const w = new SmbWriter(32 + info.length);
  w.u16(33)
    .u8(1)
    .u8(10)
    .u32(info.length)
    .u16(64 + 32)
    .u16(0)
    .u32(0)
    .bytes(fileId)
    .bytes(info);
  return (await c.request(17 /* SET_INFO */, w.finish())).status;
}

/** Polls `f` until it returns true (bounded). */
async function until(what: string, f: () => Promise<boolean>, ms = 15_000): Promise<number> {
  const start = Date.now();
  while (Date.now() - start < ms) {
    if (await f()) return Date.now() - start;
    await sleep(200);
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

const hex = (n: number): string => `0x${n.toString(16)}`;
/** The offset of an append (MS-SMB2 3.3.5.13: 0xFFFFFFFFFFFFFFFF, the end of the file). */
const APPEND = 0xffffffffffffffffn;

describe('SMB lock state across several servers (coordination.redis)', { timeout: SUITE_TIMEOUT_MS }, () => {
  const cl = new SmbCluster('replicas-smb', USER);
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
    const token = await takeOverAdmin(`http://127.0.0.1:${a.apiPort}`, 'replicas-smb-admin');
    await addShareUser(`http://127.0.0.1:${a.apiPort}`, token, USER);
    // The user is applied by B before A's API answered; a login through B proves it.
    const viaB = await smb(b);
    const viaA = await smb(a);
    // Redis started empty, but no server ever kept lock state of this store (no fencing token was
    // ever taken): a new deployment's first open is granted at once, not after one lease_ttl.
    assert.equal(hex(await viaA.createStatus('grace.txt')), hex(0), 'the first open of a new deployment');
    // B looks after A marked the store, so it cannot tell A's state from lost state: it waits the
    // grace period out (the others register their state again meanwhile).
    await until('the grace period after Redis started empty', async () => (await viaB.createStatus('grace.txt')) === 0, 15_000);
  });

  // Whatever happened, the tables hold one tree: every entry reaches the root, nlink is right.
  afterEach(async () => {
    assert.deepEqual(await storeInconsistencies(cl.pgi.url), []);
  });

  after(async () => {
    await cl.close();
  });

  it('share modes: an open through A that denies write refuses a write-open and an NFS REMOVE through B', async () => {
    const ca = await smb(a);
    const cb = await smb(b);
    const { fileId } = await ca.create('deny.txt', { share: SHARE_READ });
    assert.equal(hex(await cb.createStatus('deny.txt')), hex(STATUS.SHARING_VIOLATION), 'write-open through B');
    const { c: nb, root } = await nfs(b);
    assert.equal((await nb.remove(root, 'deny.txt')).status, NfsStat.ACCES, 'NFS REMOVE through B');
    await ca.close(fileId);
    const opened = await cb.create('deny.txt');
    await cb.close(opened.fileId);
    assert.equal((await nb.remove(root, 'deny.txt')).status, NfsStat.OK, 'NFS REMOVE through B once A closed');
  });

  it('delete-pending: a delete-on-close closed through A while B has the file open; B’s last close removes it', async () => {
    const ca = await smb(a);
    const cb = await smb(b);
    const held = await cb.create('doc.txt');
    const doc = await ca.create('doc.txt', { options: 0x40 | 0x1000 });
    await ca.close(doc.fileId);
    assert.equal(hex(await ca.createStatus('doc.txt')), hex(STATUS.DELETE_PENDING), 'a new open through A');
    // B's own open reports it (FileAllInformation: FileStandardInformation.DeletePending at 40 + 20).
    const q = await cb.request(SmbCommand.QUERY_INFO, bodies.queryInfo(held.fileId));
    assert.equal(hex(q.status), hex(0));
    const info = q.body.subarray(q.body.readUInt16LE(2) - 64);
    assert.equal(info[60], 1, 'DeletePending through B');
    const { c: na, root } = await nfs(a);
    assert.equal((await na.lookup(root, 'doc.txt')).status, NfsStat.OK, 'still there while B holds it open');
    await cb.close(held.fileId);
    assert.equal((await na.lookup(root, 'doc.txt')).status, NfsStat.NOENT, 'removed by B’s last close');
  });

  it('a rename through B does not replace a file open through A (ACCESS_DENIED, as on one server)', async () => {
    const ca = await smb(a);
    const cb = await smb(b);
    const held = await ca.create('victim.txt');
    const src = await cb.create('mover.txt');
    assert.equal(hex(await renameStatus(cb, src.fileId, 'victim.txt')), hex(0xc0000022), 'replacing an open file');
    await ca.close(held.fileId);
    assert.equal(hex(await renameStatus(cb, src.fileId, 'victim.txt')), hex(STATUS.SUCCESS), 'once A closed it');
    await cb.close(src.fileId);
  });

  it('a rename through B of a file in a directory open through A with DELETE access: SHARING_VIOLATION, as on one server', async () => {
    const ca = await smb(a);
    const cb = await smb(b);
    const dir = await ca.create('rdir', { options: 0x1 });
    const f = await cb.create('rdir\\f.txt');
    assert.equal(hex(await renameStatus(cb, f.fileId, 'rdir\\g.txt')), hex(STATUS.SHARING_VIOLATION), 'the directory is open through A');
    await ca.close(dir.fileId);
    assert.equal(hex(await renameStatus(cb, f.fileId, 'rdir\\g.txt')), hex(0), 'once A closed it');
    await cb.close(f.fileId);
  });

  it('byte-range locks: a lock through A refuses LOCK, WRITE and READ through B and an NFS WRITE through B; a blocking LOCK waits for the unlock', async () => {
    const ca = await smb(a);
    const cb = await smb(b);
    const fa = (await ca.create('brl.bin')).fileId;
    await ca.write(fa, 0, Buffer.alloc(100, 1));
    await ca.lock(fa, 0, 10, true);
    const fb = (await cb.create('brl.bin')).fileId;
    assert.equal(hex(await lockStatus(cb, fb, 5, 10, 0x02 | 0x10)), hex(STATUS.LOCK_NOT_GRANTED), 'LOCK through B');
    assert.equal(hex(await writeStatus(cb, fb, 0, Buffer.from('x'))), hex(STATUS.FILE_LOCK_CONFLICT), 'WRITE through B');
    assert.equal(hex(await readStatus(cb, fb, 0, 4)), hex(STATUS.FILE_LOCK_CONFLICT), 'READ through B');
    assert.equal(hex(await readStatus(cb, fb, 20, 4)), hex(STATUS.SUCCESS), 'READ through B outside the range');
    const { c: nb, root } = await nfs(b);
    const fh = (await nb.lookup(root, 'brl.bin')).fh!;
    const w = await nb.writeV(fh, 2, Buffer.from('nfs'), StableHow.FILE_SYNC);
    assert.equal(w.status, NfsStat.ACCES, 'NFS WRITE through B');
    // A blocking lock through B, granted once A unlocks.
    const blocked = lockStatus(cb, fb, 0, 10, 0x02);
    let settled = false;
    void blocked.then(() => (settled = true));
    await sleep(500);
    assert.equal(settled, false, 'the blocking LOCK waits');
    assert.equal(hex(await lockStatus(ca, fa, 0, 10, 0x04)), hex(STATUS.SUCCESS), 'UNLOCK through A');
    assert.equal(hex(await blocked), hex(STATUS.SUCCESS), 'the blocking LOCK through B is granted');
    assert.equal(hex(await writeStatus(ca, fa, 0, Buffer.from('y'))), hex(STATUS.FILE_LOCK_CONFLICT), 'now WRITE through A is refused');
    await cb.close(fb);
    assert.equal(hex(await writeStatus(ca, fa, 0, Buffer.from('y'))), hex(STATUS.SUCCESS), 'B closed: WRITE through A');
    await ca.close(fa);
  });

  it('oplocks: an open through B breaks a batch oplock held through A and waits for the acknowledgment', async () => {
    const ca = await smb(a);
    const cb = await smb(b);
    const { fileId, oplock } = await ca.create('oplock.bin', { oplock: 9 });
    assert.equal(oplock, 9, 'batch oplock through A');
    let ackedAt = 0;
    ca.onBreak = (n) => {
      if (n.kind !== 'oplock') return;
      setTimeout(() => {
        ackedAt = Date.now();
        void ca.ackOplock(n.fileId, n.level);
      }, 300);
    };
    const opened = await cb.create('oplock.bin');
    const doneAt = Date.now();
    assert.equal(ca.breaks.length, 1, 'A’s client saw one break');
    assert.ok(ca.breaks[0]!.kind === 'oplock' && ca.breaks[0]!.level <= 1, 'broken to Level II or none');
    assert.ok(ackedAt > 0 && doneAt >= ackedAt, 'B’s CREATE answered after the acknowledgment');
    await cb.close(opened.fileId);
    await ca.close(fileId);
  });

  it('durable handles: an open preserved through A is closed by an open through B; one reconnected through A is broken by it', async () => {
    const BATCH = 9;
    const preservedOn = async (c: RawSmbClient, n: number): Promise<void> => {
      c.destroy();
      await until('A preserves the durable open', async () => a.output().split('durable open preserved').length - 1 >= n);
    };
    const already = a.output().split('durable open preserved').length - 1;
    // Preserved, nobody reconnects: B's open closes it (no break can reach it) without waiting for a break timeout.
    const c1 = await smb(a);
    const first = await c1.create('durable1.bin', { oplock: BATCH, durable: true });
    assert.ok(first.oplock === BATCH && first.durable, 'a durable batch open through A');
    await preservedOn(c1, already + 1);
    const cb = await smb(b);
    const t0 = Date.now();
    const opened = await cb.create('durable1.bin', { oplock: BATCH });
    // A break nobody can answer would hold it for oplock_break_timeout (35 s by default).
    assert.ok(Date.now() - t0 < 20_000, `B did not wait for a break timeout (${Date.now() - t0} ms)`);
    await cb.close(opened.fileId);
    const c2 = await smb(a);
    assert.notEqual(
      hex(await c2.createStatus('durable1.bin', { reconnect: first.fileId })),
      hex(STATUS.SUCCESS),
      'the preserved open was closed',
    );
    // Preserved and reconnected: the batch oplock it got back binds B as before the drop.
    const second = await c2.create('durable2.bin', { oplock: BATCH, durable: true });
    assert.ok(second.oplock === BATCH && second.durable);
    await preservedOn(c2, already + 2);
    const c3 = await smb(a);
    const again = await c3.create('durable2.bin', { reconnect: second.fileId });
    assert.equal(again.oplock, BATCH, 'the batch oplock is restored');
    c3.onBreak = (n) => {
      if (n.kind === 'oplock') void c3.ackOplock(n.fileId, n.level);
    };
    const viaB = await cb.create('durable2.bin', { oplock: BATCH });
    assert.equal(c3.breaks.length, 1, 'the reconnected client saw a break');
    assert.ok(viaB.oplock !== BATCH, 'B got no batch oplock over it');
    await cb.close(viaB.fileId);
    await c3.close(again.fileId);
  });

  it('leases: beside an open through A, a lease through B caches no writes (as beside a local open)', async () => {
    const ca = await smb(a);
    const cb = await smb(b);
    ca.onBreak = (n) => {
      if (n.kind === 'lease' && n.ackRequired) void ca.ackLease(n.key, n.next);
    };
    const held = await ca.create('lease-beside.bin', { lease: { key: Buffer.alloc(16, 1), state: LEASE_R | LEASE_H } });
    assert.equal(held.leaseState, LEASE_R | LEASE_H);
    const viaB = await cb.create('lease-beside.bin', { lease: { key: Buffer.alloc(16, 2), state: LEASE_R | LEASE_W | LEASE_H } });
    assert.equal((viaB.leaseState ?? 0) & LEASE_W, 0, `B was granted write caching (${viaB.leaseState}) while A has the file open`);
    await cb.close(viaB.fileId);
    await ca.close(held.fileId);
  });

  it('leases: an NFS WRITE through B breaks an RWH lease held through A; the data is what NFS wrote', async () => {
    const ca = await smb(a);
    const key = Buffer.alloc(16, 7);
    const { fileId, leaseState } = await ca.create('lease.bin', { lease: { key, state: LEASE_R | LEASE_W | LEASE_H } });
    assert.equal(leaseState, LEASE_R | LEASE_W | LEASE_H, 'RWH lease through A');
    ca.onBreak = (n) => {
      if (n.kind === 'lease' && n.ackRequired) void ca.ackLease(n.key, n.next);
    };
    const { c: nb, root } = await nfs(b);
    const fh = (await nb.lookup(root, 'lease.bin')).fh!;
    const w = await nb.writeV(fh, 0, Buffer.from('through-b'), StableHow.FILE_SYNC);
    assert.equal(w.status, NfsStat.OK, 'NFS WRITE through B');
    assert.equal(ca.breaks.length, 1, 'A’s client saw the lease break');
    const br = ca.breaks[0]!;
    assert.ok(br.kind === 'lease' && br.next === 0, 'broken to none');
    assert.equal((await ca.read(fileId, 0, 9)).toString(), 'through-b');
    await ca.close(fileId);
  });

  it('appends through A and through B at the same time all land, none over another', async () => {
    const ca = await smb(a);
    const cb = await smb(b);
    // Both opens share everything (no oplock): the servers hand the file's write lease back and forth.
    const ia = (await ca.create('both.log')).fileId;
    const ib = (await cb.create('both.log')).fileId;
    const N = 12;
    const acked: string[] = [];
    const busy = { n: 0 };
    await Promise.all(
      [
        [ca, ia, 'a'],
        [cb, ib, 'b'],
      ].map(async ([c, id, who]) => {
        for (let i = 0; i < N; i++) {
          const line = `${who as string}${String(i).padStart(3, '0')}\n`;
          // NETWORK_BUSY (the lease moved while the append looked for the end) is retried, as a client does.
          for (let attempt = 0; ; attempt++) {
            const body = bodies.write(id as Buffer, 0, Buffer.from(line));
            body.writeBigUInt64LE(APPEND, 8);
            const st = (await (c as RawSmbClient).request(SmbCommand.WRITE, body)).status;
            if (st === STATUS.SUCCESS) break;
            assert.equal(hex(st), hex(STATUS.NETWORK_BUSY), `append ${line.trim()}`);
            assert.ok(attempt < 50, `append ${line.trim()} kept meeting NETWORK_BUSY`);
            busy.n++;
          }
          acked.push(line.trim());
        }
      }),
    );
    await ca.close(ia);
    await cb.close(ib);
    const c = await smb(a);
    const { fileId } = await c.create('both.log');
    const text = (await c.read(fileId, 0, 65536)).toString();
    await c.close(fileId);
    assert.deepEqual(
      text.split('\n').filter(Boolean).sort(),
      acked.sort(),
      `every acknowledged append once, whole (${busy.n} retried); the file holds:\n${text}`,
    );
    assert.equal(text.length, 2 * N * 5);
  });

  it('a SIGKILLed server’s opens and locks stop refusing the other within the liveness ttl', async () => {
    const c = await start('c');
    const cc = await smb(c);
    // Listening is not yet granting: until its first liveness renewal is fresh, a new server answers
    // NETWORK_BUSY (a CI run at load ~14 saw that on C's first open).
    await until('C grants SMB opens', async () => (await cc.createStatus('c-ready.txt')) === 0, 15_000);
    const cb = await smb(b);
    await cc.create('killed.txt', { share: SHARE_READ });
    const lockFile = (await cc.create('killed.bin')).fileId;
    await cc.lock(lockFile, 0, 10, true);
    assert.equal(hex(await cb.createStatus('killed.txt')), hex(STATUS.SHARING_VIOLATION));
    const fb = (await cb.create('killed.bin')).fileId;
    assert.equal(hex(await lockStatus(cb, fb, 0, 10, 0x12)), hex(STATUS.LOCK_NOT_GRANTED));
    // A blocking LOCK through B waits on the lock of C (no unlock will ever be published).
    const blocked = lockStatus(cb, fb, 0, 10, 0x02);
    const killedAt = Date.now();
    await c.kill();
    // The ttl (3 s) and one renewal (1 s), with room for a loaded machine; without the liveness
    // key's expiry the open would be refused for good.
    const took = await until('B opens the killed server’s file', async () => (await cb.createStatus('killed.txt')) === 0, 30_000);
    assert.ok(took <= 12_000, `the open through B succeeded ${took} ms after the SIGKILL (ttl 3 s)`);
    assert.equal(hex(await blocked), hex(STATUS.SUCCESS), 'the blocking lock through B is granted');
    const lockTook = Date.now() - killedAt;
    assert.ok(lockTook <= 13_000, `the blocking lock through B was granted ${lockTook} ms after the SIGKILL`);
  });

  it('a server that loses Redis right after a change it could not publish: the others read the store again within the ttl', async () => {
    // E reaches Redis through a proxy that the test cuts; the change E "could not publish" is made
    // in PostgreSQL directly (what E committed before its PUBLISH failed).
    const proxy = await tcpForward(cl.redis.port);
    const eDir = path.join(cl.work, 'e-conf');
    await mkdir(eDir, { recursive: true });
    const eConfig = await writeConfig(
      eDir,
      (await readFile(cl.configFile, 'utf8')).replace(cl.redis.url, `redis://127.0.0.1:${proxy.port}`),
    );
    const e = await start('e', eConfig);
    try {
      const { c: nb, root } = await nfs(b);
      const made = await nb.create(root, 'unheard.txt');
      assert.equal(made.status, NfsStat.OK);
      const fh = made.fh!;
      const before = (await nb.getattr(fh)).attrs!.mode & 0o7777;
      const db = new pg.Client({ connectionString: cl.pgi.url });
      await db.connect();
      try {
        await db.query(`UPDATE inodes SET mode = (mode & ~4095) | 448 WHERE id = (SELECT child FROM dirents WHERE name = $1)`, [
          Buffer.from('unheard.txt'),
        ]);
      } finally {
        await db.end();
      }
      assert.equal((await nb.getattr(fh)).attrs!.mode & 0o7777, before, 'B answers from its cache (nothing was published)');
      proxy.cut();
      // E's liveness key expires within the ttl (3 s); B notices at its next renewal (1 s).
      const took = await until('B reads the store again', async () => ((await nb.getattr(fh)).attrs!.mode & 0o7777) === 0o700, 30_000);
      assert.ok(took <= 12_000, `B saw the unheard change ${took} ms after E lost Redis (ttl 3 s, renewal 1 s)`);
    } finally {
      await e.stop();
      await proxy.close();
    }
  });

  it('an open whose caching cannot be announced (Redis lost right then) is granted without an oplock, not refused (NETWORK_BUSY before)', async () => {
    // E reaches Redis through a proxy that cuts E's connections the moment E announces that its
    // client caches a file (after the open itself was registered).
    const proxy = await tcpForward(cl.redis.port);
    const eDir = path.join(cl.work, 'e2-conf');
    await mkdir(eDir, { recursive: true });
    const eConfig = await writeConfig(
      eDir,
      (await readFile(cl.configFile, 'utf8')).replace(cl.redis.url, `redis://127.0.0.1:${proxy.port}`),
    );
    const e = await start('e2', eConfig);
    try {
      const ce = await smb(e);
      // A new server grants opens once it may (its grace period); opens without caching announce nothing.
      await until('E grants opens', async () => (await ce.createStatus('e2-ready.txt')) === 0, 20_000);
      const cut = proxy.cutAt('replicas-test:cache:', 1);
      // Before: STATUS_NETWORK_BUSY (the CREATE failed on the announcement); the open was registered.
      const granted = await ce.create('uncached.bin', { oplock: 9 });
      assert.equal(granted.oplock, 0, 'granted without an oplock');
      await Promise.race([cut, sleep(5_000)]);
      proxy.heal();
      // E, back on Redis, grants a batch oplock again.
      await until(
        'E grants an oplock again',
        async () => (await ce.create(`cached-${Date.now()}.bin`, { oplock: 9 }).catch(() => ({ oplock: -1 }))).oplock === 9,
        20_000,
      );
    } finally {
      await e.stop();
      await proxy.close();
    }
  });

  it('Redis stopped: no open of a shared file is granted (NETWORK_BUSY); granted again once Redis is back', async () => {
    const ca = await smb(a);
    const cb = await smb(b);
    const { fileId } = await ca.create('redis.txt', { share: SHARE_READ });
    await cl.redis.pause();
    try {
      const st = await cb.createStatus('redis.txt');
      assert.ok(st !== 0, 'never granted a conflicting open');
      assert.equal(hex(await cb.createStatus('redis-other.txt')), hex(STATUS.NETWORK_BUSY), 'a new open answers NETWORK_BUSY');
    } finally {
      await cl.redis.resume();
    }
    // Redis came back empty: A registers its open again, so B is still refused, and B opens others.
    await until('B opens another file after Redis is back', async () => (await cb.createStatus('redis-other.txt')) === 0, 60_000);
    assert.equal(hex(await cb.createStatus('redis.txt')), hex(STATUS.SHARING_VIOLATION), 'A’s open registered again');
    await ca.close(fileId);
    assert.equal(await cb.createStatus('redis.txt'), 0);
  });
});
