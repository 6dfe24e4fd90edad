// Hostile clients against a real server process (issue 11, "no client can make the server grow
// without bound"): a fragment bomb, clients that never read their replies, a thousand nearly
// complete records, a client that half-closes, and a flood of garbage records. Each attack runs
// while the server's resident memory (VmRSS of its process) is sampled; it must stay under
// RSS_LIMIT, and a normal nfs-cp round trip must work afterwards.
//
// The server runs with the memory metadata store and no control plane: these attacks are on the
// RPC layer, and the embedded databases would only add start-up time (and their own memory).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { XdrWriter } from '../../server/src/rpc/xdr.js';
import { AUTH_NONE, NFS_PROGRAM, NFS_V3, NfsClient, NfsProc, RpcConnection, authSys } from '../helpers/rpc-client.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';
import { connectRaw, MiB, mib, RSS_LIMIT, RssSampler, until, untilRssSettles } from '../helpers/hostile.js';
import { COMMAND_TIMEOUT_MS, REPLY_TIMEOUT_MS, SUITE_TIMEOUT_MS, TEST_TIMEOUT_MS } from '../helpers/limits.js';

const TEST_TIMEOUT = TEST_TIMEOUT_MS;

function runTool(cmd: string, argv: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, argv, { timeout: COMMAND_TIMEOUT_MS, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string }) | null;
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : -1) : 0, stderr: stderr.toString() });
    });
  });
}

function recordMark(len: number, last = true): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(((last ? 0x80000000 : 0) | len) >>> 0, 0);
  return b;
}

function callRecord(xid: number, prog: number, vers: number, proc: number, args: Buffer): Buffer {
  const rec = RpcConnection.encodeCall(xid, prog, vers, proc, authSys(0, 0), args);
  return Buffer.concat([recordMark(rec.length), rec]);
}

describe('hostile clients cannot make the server grow without bound', { timeout: SUITE_TIMEOUT_MS }, () => {
  let srv: DittofsProcess;
  let tmp: string;
  let root: Buffer;
  let bigFh: Buffer;
  const figures: string[] = [];

  const url = (p: string): string => `nfs://127.0.0.1/export/${p}?nfsport=${srv.nfsPort}&mountport=${srv.nfsPort}`;

  /** The server is alive and a normal client copies a file in and out, byte for byte. */
  async function assertNfsCpRoundTrip(label: string): Promise<void> {
    assert.equal(srv.child.exitCode, null, `server exited after ${label}:\n${srv.output().slice(-4000)}`);
    const src = path.join(tmp, `${label}.bin`);
    const back = path.join(tmp, `${label}.back`);
    const data = randomBytes(3 * MiB + 123);
    await writeFile(src, data);
    const put = await runTool('nfs-cp', [src, url(`${label}.bin`)]);
    assert.equal(put.code, 0, `nfs-cp in after ${label}: ${put.stderr}`);
    const get = await runTool('nfs-cp', [url(`${label}.bin`), back]);
    assert.equal(get.code, 0, `nfs-cp out after ${label}: ${get.stderr}`);
    assert.ok((await readFile(back)).equals(data), `nfs-cp round trip after ${label}: bytes differ`);
  }

  function report(label: string, before: number, peak: number): void {
    const line = `${label}: server RSS ${mib(before)} before, peak ${mib(peak)} (limit ${mib(RSS_LIMIT)})`;
    figures.push(line);
    console.log(`# ${line}`);
    assert.ok(peak < RSS_LIMIT, line);
  }

  /** A fresh server for each attack, so that each figure is its own. */
  async function freshServer(): Promise<void> {
    await srv?.stop();
    srv = await startDittofs({
      api: false,
      env: {
        DITTOFS_API_ENABLED: 'false',
        DITTOFS_METRICS_ENABLED: 'false',
        DITTOFS_METADATA__STORES__DEFAULT__TYPE: 'memory',
        // The attacks here come from one address and hold their connections past the handshake
        // deadline; an attacker with many addresses meets neither limit (connection-slots.test.ts
        // covers those): the memory bounds must hold without them.
        DITTOFS_ADAPTERS__NFS__MAX_CONNECTIONS_PER_ADDRESS: '0',
        DITTOFS_ADAPTERS__NFS__HANDSHAKE_TIMEOUT: '0',
      },
    });
    const c = await NfsClient.connect(srv.nfsPort);
    try {
      root = await c.mount('/export');
      // A file to READ 1 MiB at a time from.
      bigFh = await c.writeFile(root, 'read-me.bin', randomBytes(MiB));
      for (let i = 1; i < 8; i++) assert.equal((await c.write(bigFh, i * MiB, randomBytes(MiB))).status, 0);
    } finally {
      c.close();
    }
  }

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'dittofs-hostile-'));
  });

  after(async () => {
    if (figures.length > 0) console.log(`# RSS figures:\n# ${figures.join('\n# ')}`);
    await srv?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test('fragment bomb: 40 connections sending 1-byte non-final fragments are closed', { timeout: TEST_TIMEOUT }, async () => {
    await freshServer();
    const pid = srv.child.pid!;
    const s = new RssSampler(pid);
    const before = s.sample();
    const one = Buffer.from([0, 0, 0, 1, 0x5a]);
    // 256 KiB of 1-byte fragments per write, up to 16 MiB per connection (3.3 million fragments).
    const burst = Buffer.concat(Array.from({ length: (256 * 1024) / one.length }, () => one));
    const perConnection = 16 * MiB;
    const socks = await Promise.all(Array.from({ length: 40 }, () => connectRaw(srv.nfsPort)));
    let closedByServer = 0;
    await Promise.all(
      socks.map(
        (sock) =>
          new Promise<void>((resolve) => {
            let sent = 0;
            let done = false;
            const finish = (): void => {
              if (done) return;
              done = true;
              resolve();
            };
            sock.on('error', () => undefined);
            sock.on('close', () => {
              closedByServer++;
              finish();
            });
            const pump = (): void => {
              while (!done && sent < perConnection && !sock.destroyed) {
                sent += burst.length;
                if (!sock.write(burst)) return void sock.once('drain', pump);
              }
              if (sent >= perConnection) finish();
            };
            pump();
          }),
      ),
    );
    // Every connection is cut off long before its 16 MiB are sent.
    await until(() => closedByServer === socks.length, REPLY_TIMEOUT_MS, 'the server to close every bombing connection');
    for (const sock of socks) sock.destroy();
    report('fragment bomb, 40 connections', before, s.stop());
    await assertNfsCpRoundTrip('after-fragment-bomb');
  });

  test('slow readers: 20 connections queueing 1 MiB READs and never reading the replies', { timeout: TEST_TIMEOUT }, async () => {
    await freshServer();
    const s = new RssSampler(srv.child.pid!);
    const before = s.sample();
    const socks: net.Socket[] = [];
    const readsPerConnection = 100;
    let xid = 1;
    for (let i = 0; i < 20; i++) {
      const sock = await connectRaw(srv.nfsPort);
      sock.on('error', () => undefined);
      // Never read: replies pile up in the kernel, then in the server.
      sock.pause();
      const calls: Buffer[] = [];
      for (let k = 0; k < readsPerConnection; k++) {
        const args = new XdrWriter(64)
          .opaque(bigFh)
          .u64((k % 8) * MiB)
          .u32(MiB)
          .finish();
        calls.push(callRecord(xid++, NFS_PROGRAM, NFS_V3, NfsProc.READ, args));
      }
      sock.write(Buffer.concat(calls));
      socks.push(sock);
    }
    await untilRssSettles(s, 3_000, 30_000);
    const peak = s.stop();
    for (const sock of socks) sock.destroy();
    report('slow readers, 20 connections x 100 READs of 1 MiB', before, peak);
    await assertNfsCpRoundTrip('after-slow-readers');
  });

  test('nearly complete records: 1,000 connections each sending all but 100 bytes of 1 MiB', { timeout: TEST_TIMEOUT }, async () => {
    await freshServer();
    const s = new RssSampler(srv.child.pid!);
    const before = s.sample();
    const size = MiB;
    const head = callRecord(1, NFS_PROGRAM, NFS_V3, NfsProc.NULL, Buffer.alloc(0)).subarray(4);
    const body = Buffer.concat([recordMark(size), head, Buffer.alloc(size - head.length - 100, 0x33)]);
    const socks: net.Socket[] = [];
    for (let i = 0; i < 1000; i++) {
      const sock = await connectRaw(srv.nfsPort);
      sock.on('error', () => undefined);
      sock.write(body);
      socks.push(sock);
    }
    await untilRssSettles(s, 3_000, 30_000);
    const peak = s.stop();
    assert.ok(
      socks.every((x) => !x.destroyed),
      'the server did not drop the clients (it holds them within its budget)',
    );
    for (const sock of socks) sock.destroy();
    report('nearly complete records, 1000 connections x (1 MiB - 100 bytes)', before, peak);
    await assertNfsCpRoundTrip('after-nearly-complete');
  });

  test('half-close: a client that sends 80 calls and shuts down its side gets all 80 replies', { timeout: TEST_TIMEOUT }, async () => {
    await freshServer();
    const sock = await connectRaw(srv.nfsPort);
    // WRITEs with FILE_SYNC: each waits for an fsync, so most replies are due after the client's FIN.
    const c = await NfsClient.connect(srv.nfsPort);
    let fh: Buffer;
    try {
      fh = await c.writeFile(await c.mount('/export'), 'half-close.bin', Buffer.alloc(0));
    } finally {
      c.close();
    }
    const calls: Buffer[] = [];
    for (let i = 0; i < 80; i++) {
      const args = new XdrWriter(8300)
        .opaque(fh)
        .u64(i * 8192)
        .u32(8192)
        .u32(2)
        .opaque(Buffer.alloc(8192, i))
        .finish();
      calls.push(callRecord(1000 + i, NFS_PROGRAM, NFS_V3, NfsProc.WRITE, args));
    }
    const chunks: Buffer[] = [];
    sock.on('data', (d: Buffer) => chunks.push(d));
    const ended = new Promise<void>((resolve) => sock.once('end', () => resolve()));
    sock.end(Buffer.concat(calls));
    await Promise.race([
      ended,
      new Promise((_, reject) => setTimeout(() => reject(new Error('the server never ended its side')), REPLY_TIMEOUT_MS)),
    ]);
    sock.destroy();
    // Count the reply records and their xids.
    const wire = Buffer.concat(chunks);
    const xids = new Set<number>();
    for (let at = 0; at + 4 <= wire.length;) {
      const len = wire.readUInt32BE(at) & 0x7fffffff;
      xids.add(wire.readUInt32BE(at + 4));
      at += 4 + len;
    }
    assert.equal(xids.size, 80, `replies to ${xids.size} of 80 calls`);
  });

  test('garbage records are logged a few times, then counted, not logged once each', { timeout: TEST_TIMEOUT }, async () => {
    await freshServer();
    const before = srv
      .output()
      .split('\n')
      .filter((l) => l.includes('dropping undecodable RPC message')).length;
    // 10 connections x 60 records that are not RPC calls (message type 7): 600 undecodable records.
    for (let c = 0; c < 10; c++) {
      const conn = await RpcConnection.connect(srv.nfsPort);
      const junk: Buffer[] = [];
      for (let i = 0; i < 60; i++) junk.push(recordMark(8), Buffer.from([0, 0, 0, i, 0, 0, 0, 7]));
      conn.sendRaw(Buffer.concat(junk));
      // A NULL call behind them: once it is answered, every record before it was read.
      const r = await conn.call(NFS_PROGRAM, NFS_V3, NfsProc.NULL, Buffer.alloc(0), { cred: AUTH_NONE });
      assert.equal(r.kind, 'accepted');
      conn.close();
    }
    const lines =
      srv
        .output()
        .split('\n')
        .filter((l) => l.includes('dropping undecodable RPC message')).length - before;
    assert.ok(lines <= 10, `${lines} log lines for 600 garbage records`);
    assert.equal(srv.child.exitCode, null);
  });
});
