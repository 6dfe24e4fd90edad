// Connection slots against a real server process: sockets that connect and say nothing (or only
// ping with NFS NULL calls, which need no credential) must not keep real clients out. A listener at
// a cap closes a connection that has not got past the protocol's first step (NFS: a mount granted
// or a call that succeeded on a file handle; SMB: a logged-on session) to admit a new one: at
// max_connections_per_address, that address's oldest; at max_connections, one of the address
// holding the most. A connection that has not got past the first step within handshake_timeout is
// closed, while mounted and logged-on clients that stay idle are kept. And one SMB user cannot take
// every open. Silent sockets come from other loopback addresses (127.0.0.2 and up: the whole 127/8
// is this host), the real clients (nfs-cp, smbclient) from 127.0.0.1.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { addShareUser, takeOverAdmin } from '../helpers/api.js';
import { until } from '../helpers/hostile.js';
import { SUITE_TIMEOUT_MS, TEST_TIMEOUT_MS } from '../helpers/limits.js';
import { AUTH_NONE, authSys, NFS_PROGRAM, NFS_V3, NfsClient, NfsProc, RpcConnection } from '../helpers/rpc-client.js';
import { runTool, smbclient } from '../helpers/run.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';
import { bodies, smb2Message, SmbCommand, SmbTestClient } from '../helpers/smb-client.js';

const USER = 'slots';
const PASSWORD = 'slots-Passw0rd-1';
const MAX = 24;
const PER_ADDRESS = 8;

interface Silent {
  sock: net.Socket;
  closed: boolean;
}

/**
 * A socket from `from` that sends nothing, or only `hello` (once its first reply is in); `closed`
 * once the server has closed it.
 */
function silent(port: number, from: string, hello?: Buffer): Promise<Silent> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1', localAddress: from });
    const s: Silent = { sock, closed: false };
    sock.on('error', () => undefined);
    sock.on('close', () => (s.closed = true));
    sock.resume();
    sock.once('connect', () => {
      if (hello === undefined) return resolve(s);
      sock.write(hello);
      sock.once('data', () => resolve(s));
    });
    sock.once('close', () => reject(new Error(`the server closed a connection from ${from} before it replied`)));
    sock.once('error', reject);
  });
}

/** An NFS NULL call (no credential, no file handle), record-marked. */
function nfsNull(): Buffer {
  const call = RpcConnection.encodeCall(1, NFS_PROGRAM, NFS_V3, NfsProc.NULL, AUTH_NONE, Buffer.alloc(0));
  const mark = Buffer.alloc(4);
  mark.writeUInt32BE((0x80000000 | call.length) >>> 0, 0);
  return Buffer.concat([mark, call]);
}

const OTHER = 'slots2';

async function userServer(env: Record<string, string>): Promise<DittofsProcess> {
  const srv = await startDittofs({ env: { DITTOFS_LOG_LEVEL: 'info', ...env } });
  const base = `http://127.0.0.1:${srv.apiPort}`;
  const token = await takeOverAdmin(base);
  await addShareUser(base, token, { username: USER, password: PASSWORD, uid: 1400, gid: 1400 });
  await addShareUser(base, token, { username: OTHER, password: PASSWORD, uid: 1401, gid: 1401 });
  return srv;
}

describe('silent sockets cannot keep real clients out', { timeout: SUITE_TIMEOUT_MS }, () => {
  let tmp: string;
  let srv: DittofsProcess | undefined;
  const sockets: net.Socket[] = [];

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'dittofs-slots-'));
  });

  after(async () => {
    for (const s of sockets) s.destroy();
    await srv?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  /**
   * Fills a listener with MAX silent sockets, PER_ADDRESS from each of 127.0.0.2 and up, and waits
   * past the server's grace period (1 s: a connection younger than that is never closed to make room).
   * Those of 127.0.0.2 first send `hello` when given.
   */
  async function fill(port: number, hello?: Buffer): Promise<Silent[]> {
    const crowd: Silent[] = [];
    for (let a = 0; a < MAX / PER_ADDRESS; a++)
      for (let i = 0; i < PER_ADDRESS; i++) {
        const s = await silent(port, `127.0.0.${a + 2}`, a === 0 ? hello : undefined);
        sockets.push(s.sock);
        crowd.push(s);
      }
    await new Promise((r) => setTimeout(r, 1_500));
    assert.equal(crowd.filter((s) => s.closed).length, 0, 'no handshake or idle timeout in this server');
    return crowd;
  }

  /** A client behind the crowded address 127.0.0.2 sends `request` and gets its reply. */
  async function behindCrowd(port: number, request: Buffer): Promise<void> {
    const sock = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.2' });
    sock.on('error', () => undefined);
    sockets.push(sock);
    const replied = new Promise<boolean>((resolve) => {
      sock.once('data', () => resolve(true));
      sock.once('close', () => resolve(false));
    });
    sock.once('connect', () => sock.write(request));
    assert.equal(await replied, true, 'a client at an address whose share silent sockets hold is served');
  }

  /** Sockets were closed to make room (at least `min`), each address's oldest first. */
  async function madeRoom(crowd: Silent[], min: number): Promise<void> {
    const groups = Array.from({ length: crowd.length / PER_ADDRESS }, (_, a) => crowd.slice(a * PER_ADDRESS, (a + 1) * PER_ADDRESS));
    const oldestFirst = (group: Silent[]): boolean => group.slice(0, group.filter((s) => s.closed).length).every((s) => s.closed);
    // The server closed them before it served the clients; their close reaches this process in its
    // own time, in any order across sockets: wait for it (bounded), not for a clock.
    await until(
      () => crowd.filter((s) => s.closed).length >= min && groups.every(oldestFirst),
      60_000,
      `at least ${min} silent sockets closed to make room, each address's oldest first`,
    );
    const closed = crowd.filter((s) => s.closed).length;
    assert.ok(closed <= 6, `${closed} silent sockets closed to make room`);
  }

  test(
    'NFS and SMB: a full listener makes room for real clients, also for one behind an address silent sockets crowd',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      srv = await userServer({
        DITTOFS_ADAPTERS__NFS__MAX_CONNECTIONS: String(MAX),
        DITTOFS_ADAPTERS__NFS__MAX_CONNECTIONS_PER_ADDRESS: String(PER_ADDRESS),
        DITTOFS_ADAPTERS__NFS__HANDSHAKE_TIMEOUT: '0',
        DITTOFS_ADAPTERS__SMB__MAX_CONNECTIONS: String(MAX),
        DITTOFS_ADAPTERS__SMB__MAX_CONNECTIONS_PER_ADDRESS: String(PER_ADDRESS),
        DITTOFS_ADAPTERS__SMB__HANDSHAKE_TIMEOUT: '0',
      });

      // The sockets of 127.0.0.2 each make a NULL call first: answered, it proves nothing.
      const nfsCrowd = await fill(srv.nfsPort, nfsNull());
      await behindCrowd(srv.nfsPort, nfsNull());
      await until(() => nfsCrowd[0]!.closed, 60_000, 'the oldest silent socket of that address to be closed to make room');
      const data = randomBytes(256 * 1024 + 7);
      const src = path.join(tmp, 'in.bin');
      const back = path.join(tmp, 'back.bin');
      await writeFile(src, data);
      const url = `nfs://127.0.0.1/export/slots.bin?nfsport=${srv.nfsPort}&mountport=${srv.nfsPort}`;
      const put = await runTool('nfs-cp', [src, url]);
      assert.equal(put.code, 0, `nfs-cp into a listener full of silent sockets: ${put.stderr}`);
      const get = await runTool('nfs-cp', [url, back]);
      assert.equal(get.code, 0, `nfs-cp out: ${get.stderr}`);
      assert.ok((await readFile(back)).equals(data), 'nfs-cp round trip: bytes differ');
      await madeRoom(nfsCrowd, 2);

      const smbCrowd = await fill(srv.smbPort);
      const negotiate = smb2Message(SmbCommand.NEGOTIATE, bodies.negotiate(), { messageId: 0, sessionId: 0, treeId: 0 });
      const tcp = Buffer.alloc(4);
      tcp.writeUInt32BE(negotiate.length, 0);
      await behindCrowd(srv.smbPort, Buffer.concat([tcp, negotiate]));
      await until(() => smbCrowd[0]!.closed, 60_000, 'the oldest silent socket of that address to be closed to make room');
      const r = await smbclient(srv.smbPort, USER, PASSWORD, `put ${src} slots-smb.bin; get slots-smb.bin ${back}.smb`);
      assert.equal(r.code, 0, `smbclient into a listener full of silent sockets: ${r.stdout}${r.stderr}`);
      assert.ok((await readFile(`${back}.smb`)).equals(data), 'smbclient round trip: bytes differ');
      await madeRoom(smbCrowd, 2);
      for (const s of sockets.splice(0)) s.destroy();
      await srv.stop();
      srv = undefined;
    },
  );

  test(
    'a connection that does not get past the first step in time is closed; idle logged-on ones stay',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      srv = await userServer({ DITTOFS_ADAPTERS__NFS__HANDSHAKE_TIMEOUT: '2s', DITTOFS_ADAPTERS__SMB__HANDSHAKE_TIMEOUT: '2s' });
      // NFS: one connection mounts, one uses the handle it got; the others make only calls anyone
      // can make without a share (NULL, a mount of no export, a made-up handle), or none.
      const cred = authSys(1400, 1400);
      const mounter = await NfsClient.connect(srv.nfsPort, cred);
      const root = await mounter.mount('/export');
      const user = await NfsClient.connect(srv.nfsPort, cred);
      assert.equal((await user.nfs(NfsProc.NULL, Buffer.alloc(0))).kind, 'accepted');
      assert.equal((await user.getattr(root)).status, 0);
      // A client back on a new connection without mounting again, whose calls on its handle fail
      // (LOOKUPs of names that are not there): it holds a handle the server gave out.
      const returning = await NfsClient.connect(srv.nfsPort, cred);
      assert.equal((await returning.lookup(root, 'not-there')).status, 2, 'NOENT');
      const pinger = await NfsClient.connect(srv.nfsPort, AUTH_NONE);
      assert.equal((await pinger.nfs(NfsProc.NULL, Buffer.alloc(0))).kind, 'accepted');
      const stranger = await NfsClient.connect(srv.nfsPort, cred);
      assert.notEqual((await stranger.mnt('/no-such-export')).status, 0);
      const forger = await NfsClient.connect(srv.nfsPort, cred);
      const madeUp = Buffer.from(root);
      madeUp.writeUInt32BE((madeUp.readUInt32BE(madeUp.length - 4) ^ 0x5a5a5a5a) >>> 0, madeUp.length - 4);
      assert.notEqual((await forger.getattr(madeUp)).status, 0);
      const quiet = await RpcConnection.connect(srv.nfsPort);
      // SMB: one logs on, the other negotiates and goes no further.
      const loggedOn = await SmbTestClient.connect(srv.smbPort);
      await loggedOn.logon(USER, PASSWORD, 'export');
      const negotiated = await SmbTestClient.connect(srv.smbPort);
      const neg = await negotiated.request(SmbCommand.NEGOTIATE, bodies.negotiate());
      assert.equal(neg.status, 0);
      const started = Date.now();
      assert.equal(await quiet.waitClosedByPeer(60_000), true, 'the silent NFS connection is closed');
      assert.equal(await pinger.conn.waitClosedByPeer(60_000), true, 'the NFS connection that only made a NULL call is closed');
      assert.equal(await stranger.conn.waitClosedByPeer(60_000), true, 'the NFS connection whose mount was refused is closed');
      assert.equal(await forger.conn.waitClosedByPeer(60_000), true, 'the NFS connection that used a made-up handle is closed');
      // ECHOs bring no session nearer: they do not put the deadline off (it would go at 10 x 2 s).
      let echoes = 0;
      while (!negotiated.closed && echoes < 60) {
        echoes++;
        await negotiated.request(SmbCommand.ECHO, bodies.echo()).catch(() => undefined);
        await new Promise((r) => setTimeout(r, 250));
      }
      assert.equal(negotiated.closed, true, `the SMB connection that never logged on was closed (${echoes} ECHOs sent meanwhile)`);
      // Well past the 2 s, twice over: the ones past the first step are still served.
      await new Promise((r) => setTimeout(r, Math.max(0, 4_000 - (Date.now() - started))));
      assert.equal((await mounter.getattr(root)).status, 0, 'the NFS connection that mounted is kept');
      assert.equal((await user.getattr(root)).status, 0, 'the NFS connection that used a handle is kept');
      assert.equal((await returning.lookup(root, 'not-there')).status, 2, 'the NFS connection whose calls on a handle failed is kept');
      const echo = await loggedOn.request(SmbCommand.ECHO, bodies.echo());
      assert.equal(echo.status, 0, 'the logged-on SMB connection is kept');
      mounter.close();
      user.close();
      returning.close();
      loggedOn.close();
      await srv.stop();
      srv = undefined;
    },
  );

  test('SMB: one user past max_opens_per_user is refused, another user still opens', { timeout: TEST_TIMEOUT_MS }, async () => {
    srv = await userServer({ DITTOFS_ADAPTERS__SMB__MAX_OPENS_PER_USER: '3' });
    const status = async (c: SmbTestClient, name: string): Promise<number> =>
      (await c.request(SmbCommand.CREATE, bodies.create(name))).status;
    // The user's opens count over all their connections.
    const one = await SmbTestClient.connect(srv.smbPort);
    await one.logon(USER, PASSWORD, 'export');
    const two = await SmbTestClient.connect(srv.smbPort);
    await two.logon(USER, PASSWORD, 'export');
    assert.deepEqual([await status(one, 'a'), await status(one, 'b'), await status(two, 'c')], [0, 0, 0]);
    assert.equal(await status(two, 'd'), 0xc000009a, "STATUS_INSUFFICIENT_RESOURCES past the user's share");
    // The server's log says so, and names the setting to raise (a client's status alone does not
    // tell the admin).
    await until(() => /open refused: the user holds as many opens as one user may/.test(srv!.output()), 60_000, 'the refusal in the log');
    const line = srv
      .output()
      .split('\n')
      .find((l) => l.includes('open refused: the user holds'));
    assert.match(line ?? '', /"setting":"adapters\.smb\.max_opens_per_user"/);
    assert.match(line ?? '', new RegExp(`"user":"${USER.toLowerCase()}"`));
    const other = await SmbTestClient.connect(srv.smbPort);
    await other.logon(OTHER, PASSWORD, 'export');
    assert.equal(await status(other, 'e'), 0, 'another user still opens');
    // A connection that goes gives its opens back.
    one.close();
    const deadline = Date.now() + 60_000;
    let again = await status(two, 'd');
    while (again !== 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      again = await status(two, 'd');
    }
    assert.equal(again, 0, 'the opens of the closed connection came back to the user');
    two.close();
    other.close();
    await srv.stop();
    srv = undefined;
  });

  test(
    'REST API: server.api.max_connections_per_address caps an address, not a proxy listed in server.api.trust_proxy',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      srv = await startDittofs({
        env: {
          DITTOFS_LOG_LEVEL: 'info',
          DITTOFS_SERVER__API__MAX_CONNECTIONS_PER_ADDRESS: '2',
          DITTOFS_SERVER__API__TRUST_PROXY: '127.0.0.4',
        },
      });
      const port = srv.apiPort;
      // 127.0.0.3 is capped at 2: a third silent socket, within the others' grace second, is refused.
      const direct: Silent[] = [];
      for (let i = 0; i < 3; i++) {
        const s = await silent(port, '127.0.0.3');
        sockets.push(s.sock);
        direct.push(s);
      }
      await until(() => direct[2]!.closed, 60_000, 'the third connection from 127.0.0.3 to be refused');
      await until(
        () => /REST API connection refused: too many connections from this address/.test(srv!.output()),
        60_000,
        'the refusal in the log',
      );
      const refusal = srv
        .output()
        .split('\n')
        .find((l) => l.includes('REST API connection refused'));
      assert.match(refusal ?? '', /"setting":"server\.api\.max_connections_per_address"/);
      assert.match(refusal ?? '', /"address":"127\.0\.0\.3"/);
      // The proxy at 127.0.0.4 holds five, and a request through a sixth, naming its client, is answered.
      const proxied: Silent[] = [];
      for (let i = 0; i < 5; i++) {
        const s = await silent(port, '127.0.0.4');
        sockets.push(s.sock);
        proxied.push(s);
      }
      const sixth = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.4' });
      sockets.push(sixth);
      sixth.on('error', () => undefined);
      const answer = await new Promise<string>((resolve) => {
        let got = '';
        sixth.on('data', (d: Buffer) => {
          got += d.toString('latin1');
          if (got.includes('\r\n\r\n')) resolve(got);
        });
        sixth.once('close', () => resolve(got));
        sixth.once('connect', () => sixth.write('GET /health HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n'));
      });
      assert.match(answer, /^HTTP\/1\.1 200 /, 'the proxy is served past the per-address cap');
      assert.deepEqual(
        proxied.map((s) => s.closed),
        [false, false, false, false, false],
        "none of the proxy's connections was closed",
      );
      assert.equal(direct.slice(0, 2).filter((s) => s.closed).length, 0, "127.0.0.3's first two stay");
      assert.doesNotMatch(srv.output(), /"address":"127\.0\.0\.4"/, 'no refusal for the proxy');
      for (const s of sockets.splice(0)) s.destroy();
      await srv.stop();
      srv = undefined;
    },
  );
});
