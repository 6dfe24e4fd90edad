// Hunt: acknowledged data through several servers (SMB, SMB+NFS) — ranges and sizes another server
// changed. Two DittoFS processes on one PostgreSQL store, one S3 bucket and one Redis.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { SUITE_TIMEOUT_MS } from '../helpers/limits.js';
import { addShareUser, takeOverAdmin } from '../helpers/api.js';
import { postgresForTests, type PostgresInstance } from '../helpers/postgres.js';
import { startRedis, type RedisInstance } from '../helpers/redis.js';
import { startS3, type S3TestServer } from '../helpers/s3.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';
import { LEASE_H, LEASE_R, LEASE_W, RawSmbClient } from '../helpers/smb-raw.js';
import { NfsOps } from '../helpers/nfs-ops.js';
import { authSys, NfsStat } from '../helpers/rpc-client.js';
import { writeConfig } from '../fault/support.js';
import { replicaConfig, storeInconsistencies } from '../helpers/replicas.js';

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
  let pgi: PostgresInstance;
  let s3: S3TestServer;
  let redis: RedisInstance;
  let work: string;
  let configFile: string;
  const servers: DittofsProcess[] = [];
  const clients: RawSmbClient[] = [];
  const nfsClients: NfsOps[] = [];
  let a: DittofsProcess;
  let b: DittofsProcess;

  const start = async (name: string, config = configFile): Promise<DittofsProcess> => {
    const s = await startDittofs({
      configFile: config,
      dataDir: path.join(work, name),
      env: { DITTOFS_BLOCKS__STORES__S3__SECRET_ACCESS_KEY: s3.secretAccessKey, DITTOFS_LOG_LEVEL: 'info' },
    });
    servers.push(s);
    return s;
  };
  const smb = async (s: DittofsProcess): Promise<RawSmbClient> => {
    const c = await RawSmbClient.connect(s.smbPort);
    clients.push(c);
    await c.login(USER.username, USER.password, 'export');
    return c;
  };

  const nfs = async (s: DittofsProcess): Promise<{ c: NfsOps; root: Buffer }> => {
    const c = await NfsOps.open(s.nfsPort, authSys(USER.uid, USER.gid));
    nfsClients.push(c);
    return { c, root: await c.mount('/export') };
  };

  before(async () => {
    [pgi, s3, redis] = await Promise.all([postgresForTests(), startS3(), startRedis()]);
    work = await mkdtemp(path.join(os.tmpdir(), 'dittofs-replicas-hunt-'));
    configFile = await writeConfig(work, replicaConfig(pgi, s3, redis, { controlDatabase: true }));
    a = await start('a');
    b = await start('b');
    const token = await takeOverAdmin(`http://127.0.0.1:${a.apiPort}`, 'replicas-hunt-admin');
    await addShareUser(`http://127.0.0.1:${a.apiPort}`, token, USER);
    const viaB = await smb(b);
    const viaA = await smb(a);
    assert.equal(hex(await viaA.createStatus('grace.txt')), hex(0));
    await until('the grace period', async () => (await viaB.createStatus('grace.txt')) === 0, 15_000);
  });

  afterEach(async () => {
    assert.deepEqual(await storeInconsistencies(pgi.url), []);
  });

  after(async () => {
    for (const c of clients) c.destroy();
    for (const c of nfsClients) c.close();
    for (const s of servers) await s.stop().catch(() => undefined);
    await Promise.all([redis?.stop(), s3?.close(), pgi?.stop()]);
    if (work) await rm(work, { recursive: true, force: true });
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
    await ca.write(fa, 0, Buffer.alloc(8192, 0x79));
    assert.equal(hex(await cb.setInfo(fb, INFO_FILE, FILE_ALLOCATION_INFORMATION, u64(4096))), hex(0));
    assert.equal((await standard(cb, fb)).eof, 4096, 'the size through B');
    assert.equal((await standard(ca, fa)).eof, 4096, 'the size through A');
    await ca.close(fa);
    await cb.close(fb);
  });

  it('QUERY_INFO through B reports the size A acknowledged', async () => {
    const ca = await smb(a);
    const cb = await smb(b);
    const fa = (await ca.create('qsize.bin')).fileId;
    const fb = (await cb.create('qsize.bin')).fileId;
    await ca.write(fa, 0, Buffer.alloc(8192, 0x79));
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
    assert.equal(r.data!.length, 4096, 'the bytes written back on the break, through B');
    assert.ok(r.data!.equals(cached), `first byte not written back at ${r.data!.findIndex((x, k) => x !== cached[k])}`);
    await ca.close(fileId);
  });
});
