// Adapter changes through the API apply to the running server's real listeners: disabling NFS
// refuses NFS calls and enabling brings them back, moving SMB moves the listening socket, a port
// that cannot be bound leaves the old listener serving (readiness and `served` say so), and a
// restart listens where the config (environment) says again.
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { apiRequest, takeOverAdmin } from '../helpers/api.js';
import { NFS_PROGRAM, RpcConnection } from '../helpers/rpc-client.js';
import { freePort, startDittofs, type DittofsProcess } from '../helpers/server.js';

interface AdapterReply {
  type: string;
  enabled: boolean;
  port: number;
  served: boolean;
  listening_port?: number;
  note?: string;
}

/** Whether 127.0.0.1:port accepts a TCP connection now (false: refused). */
function connects(port: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNREFUSED' ? resolve(false) : reject(err)));
  });
}

/** An NFS NULL call on a fresh connection: true when answered, false when the connection is refused. */
async function nfsNull(port: number): Promise<boolean> {
  let conn: RpcConnection;
  try {
    conn = await RpcConnection.connect(port);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ECONNREFUSED') return false;
    throw err;
  }
  try {
    await conn.call(NFS_PROGRAM, 3, 0, Buffer.alloc(0));
    return true;
  } finally {
    conn.close();
  }
}

describe('adapters changed through the API apply to the running server', () => {
  let srv: DittofsProcess;
  let base: string;
  let token: string;
  let smbMoved: number;

  const patch = async (type: string, body: unknown): Promise<AdapterReply> => {
    const r = await apiRequest<AdapterReply>(base, 'PATCH', `/api/v1/adapters/${type}`, body, token);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  };
  const list = async (): Promise<Record<string, AdapterReply>> => {
    const r = await apiRequest<AdapterReply[]>(base, 'GET', '/api/v1/adapters', undefined, token);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return Object.fromEntries(r.body.map((a) => [a.type, a]));
  };
  const ready = async (): Promise<{ status: number; checks: Record<string, { ok: boolean; detail?: string }> }> => {
    const r = await apiRequest<{ checks: Record<string, { ok: boolean; detail?: string }> }>(base, 'GET', '/health/ready');
    return { status: r.status, checks: r.body.checks };
  };

  before(async () => {
    srv = await startDittofs({ keepDataDir: true });
    base = `http://127.0.0.1:${srv.apiPort}`;
    token = await takeOverAdmin(base);
  });
  after(async () => {
    await srv?.stop();
    if (srv) await rm(srv.dataDir, { recursive: true, force: true });
  });

  it('reports what is served at start', async () => {
    const a = await list();
    assert.deepEqual(a.nfs, { type: 'nfs', enabled: true, port: srv.nfsPort, served: true, listening_port: srv.nfsPort });
    assert.deepEqual(a.smb, { type: 'smb', enabled: true, port: srv.smbPort, served: true, listening_port: srv.smbPort });
  });

  it('disabling NFS refuses NFS calls; enabling answers them again', async () => {
    assert.equal(await nfsNull(srv.nfsPort), true);
    // The PATCH answers once this server applied the change: no waiting after it.
    assert.deepEqual(await patch('nfs', { enabled: false }), { type: 'nfs', enabled: false, port: srv.nfsPort, served: false });
    assert.equal(await nfsNull(srv.nfsPort), false, 'NFS NULL answered after the NFS adapter was disabled');
    assert.equal((await list()).nfs?.served, false);
    assert.deepEqual((await ready()).checks.nfs, { ok: true });

    const on = await patch('nfs', { enabled: true });
    assert.deepEqual(on, { type: 'nfs', enabled: true, port: srv.nfsPort, served: true, listening_port: srv.nfsPort });
    assert.equal(await nfsNull(srv.nfsPort), true, 'NFS NULL not answered after the NFS adapter was enabled again');
  });

  it('moving SMB listens on the new port and refuses on the old one', async () => {
    smbMoved = await freePort();
    const moved = await patch('smb', { port: smbMoved });
    assert.deepEqual(moved, { type: 'smb', enabled: true, port: smbMoved, served: true, listening_port: smbMoved });
    assert.equal(await connects(smbMoved), true, 'the new SMB port refuses connections');
    assert.equal(await connects(srv.smbPort), false, 'the old SMB port still accepts connections');
    assert.equal((await list()).smb?.listening_port, smbMoved);
  });

  it('a port that cannot be bound leaves the old listener serving, and says so', async () => {
    const busyPort = await freePort();
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(busyPort, '127.0.0.1', resolve));
    try {
      const r = await patch('smb', { port: busyPort });
      assert.equal(r.port, busyPort);
      assert.equal(r.served, true);
      assert.equal(r.listening_port, smbMoved);
      assert.match(r.note ?? '', new RegExp(`port ${busyPort} could not be bound .*already in use.*still listening on port ${smbMoved}`));
      assert.equal(await connects(smbMoved), true, 'the old SMB listener stopped although the move failed');
      // Still serving where it listened: ready (not taken out of a Service), the reason in the check.
      const health = await ready();
      assert.equal(health.status, 200);
      assert.equal(health.checks.smb?.ok, true);
      assert.match(health.checks.smb?.detail ?? '', new RegExp(`port ${busyPort} could not be bound.*still listening on port ${smbMoved}`));
    } finally {
      await new Promise<void>((resolve) => holder.close(() => resolve()));
    }
    // Any later change tries again: the port is free now.
    const again = await patch('smb', { port: busyPort });
    assert.deepEqual(again, { type: 'smb', enabled: true, port: busyPort, served: true, listening_port: busyPort });
    assert.equal(await connects(busyPort), true);
    assert.equal(await connects(smbMoved), false);
    assert.deepEqual((await ready()).checks.smb, { ok: true });
    smbMoved = busyPort;
  });

  it('a restart listens where the config says; the API row is kept and the difference shown', async () => {
    const dataDir = srv.dataDir;
    await srv.stop();
    srv = await startDittofs({ dataDir });
    base = `http://127.0.0.1:${srv.apiPort}`;
    const login = await apiRequest<{ access_token: string }>(base, 'POST', '/api/v1/auth/login', {
      username: 'admin',
      password: 'admin-Passw0rd-changed',
    });
    token = login.body.access_token;
    assert.equal(await connects(srv.smbPort), true);
    const smb = (await list()).smb;
    assert.equal(smb?.port, smbMoved, 'the row set through the API was overwritten by the start');
    assert.equal(smb?.listening_port, srv.smbPort);
    assert.match(smb?.note ?? '', /config file/);
    assert.deepEqual((await ready()).checks.smb, { ok: true });
  });
});
