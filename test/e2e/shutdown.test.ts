// Graceful shutdown under load, in process (the test must know when close() begins): a raw NFSv3
// client streams UNSTABLE WRITEs over one connection, 16 in flight, and keeps sending after the
// server's close() is called. Every call the server had received when close() began must get its
// reply; the server then closes the connection itself; and every acknowledged write reads back
// after a restart on the same data directory (the WAL was synced and closed, then replayed).
// Server: embedded metadata + filesystem blocks, as `make run`.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { defaultConfig } from '../../server/src/config/defaults.js';
import type { DittoConfig } from '../../server/src/config/types.js';
import type { RpcCall } from '../../server/src/rpc/message.js';
import { createLogger } from '../../server/src/obs/logger.js';
import { startServer, type RunningServer } from '../../server/src/server.js';
import { SUITE_TIMEOUT_MS } from '../helpers/limits.js';
import { args, authSys, NFS_PROGRAM, NFS_V3, NfsClient, NfsProc, NfsStat, parseReply, StableHow } from '../helpers/rpc-client.js';

const KiB = 1024;
const CHUNK = 64 * KiB;
const WINDOW = 16;
/** close() is called once this many WRITEs are answered. */
const REPLIES_BEFORE_CLOSE = 96;

function configFor(dir: string): DittoConfig {
  const c = defaultConfig();
  c.data_dir = dir;
  c.adapters.nfs.port = 0;
  c.adapters.nfs.bind = '127.0.0.1';
  c.adapters.smb.enabled = false;
  c.server.api.enabled = false;
  c.metrics.port = 0;
  c.metrics.bind = '127.0.0.1';
  c.metadata.stores = { default: { type: 'embedded', path: path.join(dir, 'metadata', 'default') } };
  c.blocks.stores = { default: { type: 'filesystem', block_size: 1024 * KiB, path: path.join(dir, 'blocks', 'default') } };
  return c;
}

const quietLog = () => createLogger('warn', new Writable({ write: (_c, _e, done) => done() }));

/** The content of the WRITE at `offset`: its offset in every 8-byte word, so that misplaced data shows. */
function chunkAt(offset: number): Buffer {
  const b = Buffer.allocUnsafe(CHUNK);
  for (let i = 0; i < CHUNK; i += 8) b.writeBigUInt64BE(BigInt(offset + i), i);
  return b;
}

describe('graceful shutdown', { timeout: SUITE_TIMEOUT_MS }, () => {
  const dirs: string[] = [];
  const servers: RunningServer[] = [];
  after(async () => {
    for (const s of servers) await s.close().catch(() => undefined);
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  test('answers every call received before close(), then the acknowledged data survives a restart', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-shutdown-'));
    dirs.push(dir);
    const config = configFor(dir);
    const srv = await startServer(config, quietLog());
    servers.push(srv);
    assert.ok(srv.nfsPort !== null && srv.metricsPort !== null);

    // Which calls reached the NFS program: a call is "received" once the dispatcher hands it over.
    const received = new Set<number>();
    const nfs = srv.nfs;
    const handle = nfs.handle.bind(nfs);
    nfs.handle = (call: RpcCall, w) => {
      received.add(call.xid);
      return handle(call, w);
    };

    const client = await NfsClient.connect(srv.nfsPort, authSys(0, 0));
    const root = await client.mount('/export');
    const created = await client.create(root, 'stream.bin');
    assert.equal(created.status, NfsStat.OK);
    const fh = created.fh!;
    const conn = client.conn;

    // The stream: sequential UNSTABLE WRITEs, WINDOW in flight, until the server closes the connection.
    const offsetOf = new Map<number, number>();
    const replies = new Map<number, number>(); // xid -> nfsstat3
    let next = 0;
    let inFlight = 0;
    let closeCalled: Promise<void> | null = null;
    let receivedAtClose: number[] = [];
    const send = (): void => {
      while (inFlight < WINDOW && !conn.isClosed) {
        const offset = next;
        next += CHUNK;
        const xid = conn.sendCall(NFS_PROGRAM, NFS_V3, NfsProc.WRITE, args.write(fh, offset, chunkAt(offset), StableHow.UNSTABLE), {
          cred: authSys(0, 0),
        });
        offsetOf.set(xid, offset);
        inFlight++;
      }
    };
    send();
    for (;;) {
      let raw: Buffer;
      try {
        raw = await conn.nextRecord();
      } catch {
        break; // the server closed the connection
      }
      const rep = parseReply(raw);
      assert.equal(rep.kind, 'accepted');
      replies.set(rep.xid, rep.kind === 'accepted' ? rep.body.u32() : -1);
      inFlight--;
      if (closeCalled === null && replies.size === REPLIES_BEFORE_CLOSE) {
        closeCalled = srv.close();
        receivedAtClose = [...received].filter((xid) => offsetOf.has(xid));
      }
      send();
    }
    assert.ok(closeCalled !== null, 'close() was called');
    await closeCalled;
    assert.ok(await conn.waitClosedByPeer(), 'the server closed the connection');

    // Calls were still in flight (and more were sent) when close() began: each of those the
    // server had received was answered.
    const sent = offsetOf.size;
    assert.ok(receivedAtClose.length > REPLIES_BEFORE_CLOSE, `some calls were in flight at close (${receivedAtClose.length} received)`);
    const unanswered = receivedAtClose.filter((xid) => !replies.has(xid));
    assert.deepEqual(unanswered, [], `calls received before close() without a reply (of ${receivedAtClose.length} received, ${sent} sent)`);
    for (const [xid, status] of replies) assert.equal(status, NfsStat.OK, `WRITE xid ${xid}`);
    // Nothing listens any more: neither NFS nor metrics.
    for (const port of [srv.nfsPort, srv.metricsPort]) {
      await assert.rejects(
        new Promise<void>((resolve, reject) => {
          const s = net.connect({ port, host: '127.0.0.1' }, () => {
            s.destroy();
            resolve();
          });
          s.once('error', reject);
        }),
        /ECONNREFUSED/,
      );
    }

    // Restart on the same directory: every acknowledged (UNSTABLE) write is there.
    const again = await startServer(configFor(dir), quietLog());
    servers.push(again);
    const c2 = await NfsClient.connect(again.nfsPort!, authSys(0, 0));
    try {
      const root2 = await c2.mount('/export');
      const found = await c2.lookup(root2, 'stream.bin');
      assert.equal(found.status, NfsStat.OK);
      const acked = [...replies.keys()].map((xid) => offsetOf.get(xid)!);
      const end = Math.max(...acked) + CHUNK;
      assert.ok(found.attrs!.size >= end, `size ${found.attrs!.size} covers the acknowledged writes (${end})`);
      for (const offset of acked.sort((a, b) => a - b)) {
        const r = await c2.read(found.fh!, offset, CHUNK);
        assert.equal(r.status, NfsStat.OK);
        assert.ok(r.data.equals(chunkAt(offset)), `acknowledged WRITE at ${offset} reads back`);
      }
    } finally {
      c2.close();
      await again.close();
    }
  });
});
