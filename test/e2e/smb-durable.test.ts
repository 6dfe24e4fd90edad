// Durable handles v1 across a dropped TCP connection, against the real server process: an SMB
// client (test/helpers/smb-raw.ts over real sockets) opens a file with a batch oplock and DHnQ,
// writes, and its connection is destroyed; a new connection of the same user reconnects the open
// with DHnC and finds the same handle with its data. An NFS client (real NFSv3 over TCP) writing
// the file closes the preserved open instead (no break can reach it), and the timer
// (adapters.smb.durable_handle_timeout) closes one like CLOSE: its delete-on-close runs.
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { addShareUser, takeOverAdmin } from '../helpers/api.js';
import { NfsOps } from '../helpers/nfs-ops.js';
import { authSys, StableHow } from '../helpers/rpc-client.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';
import { RawSmbClient } from '../helpers/smb-raw.js';

const USER = 'durableuser';
const PASSWORD = 'durable-user-Passw0rd';
const OTHER = 'otheruser';
const UID = 1000;
/**
 * adapters.smb.durable_handle_timeout here: a preserved open must outlive the logins and the
 * reconnect a test makes after the drop on a loaded machine, and still expire within the test.
 */
const DURABLE_TIMEOUT_MS = 12_000;
const BATCH = 9;
const NAME_NOT_FOUND = 0xc0000034;
const ENV = { DITTOFS_SMB_DURABLE_HANDLE_TIMEOUT: String(DURABLE_TIMEOUT_MS), DITTOFS_LOG_LEVEL: 'info' };
const ACCESS_DENIED = 0xc0000022;

describe('SMB durable handles', { timeout: 300_000 }, () => {
  let srv: DittofsProcess;
  let nfs: NfsOps;
  let root: Buffer;
  const clients: RawSmbClient[] = [];

  const smb = async (user = USER, password = PASSWORD): Promise<RawSmbClient> => {
    const c = await RawSmbClient.connect(srv.smbPort);
    clients.push(c);
    await c.login(user, password, 'export');
    return c;
  };

  /** Drops a client's TCP connection and waits (bounded) until the server has preserved its open. */
  let preserved = 0;
  const drop = async (c: RawSmbClient): Promise<void> => {
    c.destroy();
    preserved++;
    const deadline = Date.now() + 10_000;
    while (srv.output().split('durable open preserved').length - 1 < preserved) {
      if (Date.now() > deadline) throw new Error('the server did not preserve the durable open');
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  before(async () => {
    srv = await startDittofs({ env: ENV, keepDataDir: true });
    const base = `http://127.0.0.1:${srv.apiPort}`;
    const token = await takeOverAdmin(base);
    await addShareUser(base, token, { username: USER, password: PASSWORD, uid: UID, gid: UID });
    await addShareUser(base, token, { username: OTHER, password: PASSWORD, uid: UID + 1, gid: UID + 1 });
    nfs = await NfsOps.open(srv.nfsPort, authSys(UID, UID));
    root = await nfs.mount('/export');
  });

  after(async () => {
    for (const c of clients) c.destroy();
    nfs?.close();
    await srv?.stop();
    if (srv) await rm(srv.dataDir, { recursive: true, force: true });
  });

  it('a durable open survives a dropped connection: the same user reconnects it and reads its data', async () => {
    const a = await smb();
    const { fileId, oplock, durable } = await a.create('kept.dat', { oplock: BATCH, durable: true });
    assert.equal(oplock, BATCH);
    assert.ok(durable, 'DHnQ granted with the batch oplock');
    await a.write(fileId, 0, Buffer.from('written before the drop'));
    await drop(a);

    const other = await smb(OTHER);
    assert.equal(await reconnectStatus(other, 'kept.dat', fileId), ACCESS_DENIED, 'another user cannot take the open');

    const b = await smb();
    const again = await b.create('kept.dat', { reconnect: fileId });
    assert.ok(again.fileId.equals(fileId), 'the same FileId');
    assert.equal(again.oplock, BATCH, 'the batch oplock is still held');
    assert.equal((await b.read(fileId, 0, 64)).toString(), 'written before the drop');
    await b.write(fileId, 0, Buffer.from('W'));
    await b.close(fileId);
    assert.equal(await reconnectStatus(b, 'kept.dat', fileId), NAME_NOT_FOUND, 'closed: nothing to reconnect');
  });

  it('an NFS WRITE closes a preserved open instead of waiting for a break nobody can answer', async () => {
    const a = await smb();
    const { fileId, durable } = await a.create('nfs.dat', { oplock: BATCH, durable: true });
    assert.ok(durable);
    await drop(a);
    const fh = (await nfs.lookup(root, 'nfs.dat')).fh!;
    const started = Date.now();
    const w = await nfs.write(fh, 0, Buffer.from('nfs'), StableHow.FILE_SYNC);
    assert.equal(w.status, 0);
    // A break nobody answers would hold it for oplock_break_timeout (35 s by default).
    assert.ok(Date.now() - started < 20_000, `the NFS WRITE did not wait for a break timeout (${Date.now() - started} ms)`);
    const b = await smb();
    assert.equal(await reconnectStatus(b, 'nfs.dat', fileId), NAME_NOT_FOUND, 'the preserved open was closed');
  });

  it('an unclaimed durable open expires like a CLOSE: its delete-on-close runs', async () => {
    const a = await smb();
    // NON_DIRECTORY_FILE | DELETE_ON_CLOSE
    const { fileId, durable } = await a.create('temp.dat', { oplock: BATCH, durable: true, options: 0x40 | 0x1000 });
    assert.ok(durable);
    await drop(a);
    assert.equal((await nfs.lookup(root, 'temp.dat')).status, 0, 'kept while preserved');
    const deadline = Date.now() + DURABLE_TIMEOUT_MS + 10_000;
    let status = 0;
    while (Date.now() < deadline && (status = (await nfs.lookup(root, 'temp.dat')).status) === 0)
      await new Promise((r) => setTimeout(r, 200));
    assert.equal(status, 2, 'NFS3ERR_NOENT: removed when the durable open expired');
    const b = await smb();
    assert.equal(await reconnectStatus(b, 'temp.dat', fileId), NAME_NOT_FOUND);
  });

  it('a server shutdown closes preserved opens like CLOSE: their delete-on-close runs', async () => {
    // A timeout far beyond the test, so that only the shutdown can close the open.
    const restart = async (timeoutMs: number): Promise<void> => {
      nfs.close();
      await srv.stop();
      srv = await startDittofs({ env: { ...ENV, DITTOFS_SMB_DURABLE_HANDLE_TIMEOUT: String(timeoutMs) }, dataDir: srv.dataDir });
      preserved = 0;
      nfs = await NfsOps.open(srv.nfsPort, authSys(UID, UID));
      root = await nfs.mount('/export');
    };
    await restart(600_000);
    const a = await smb();
    const { durable } = await a.create('shutdown.dat', { oplock: BATCH, durable: true, options: 0x40 | 0x1000 });
    assert.ok(durable);
    await drop(a);
    assert.equal((await nfs.lookup(root, 'shutdown.dat')).status, 0, 'kept while preserved');
    await restart(DURABLE_TIMEOUT_MS);
    assert.equal((await nfs.lookup(root, 'shutdown.dat')).status, 2, 'NFS3ERR_NOENT: removed at shutdown');
  });
});

const reconnectStatus = (c: RawSmbClient, name: string, fileId: Buffer): Promise<number> => c.createStatus(name, { reconnect: fileId });
