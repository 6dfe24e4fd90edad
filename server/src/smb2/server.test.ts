// The SMB2 listener over real sockets: hostile or idle clients are disconnected, the others served.
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { memoryServer } from '../testing/memory-server.js';
import { SmbWriter, writeHeader } from './codec.js';
import { Command } from './constants.js';
import { directTcpHeader } from './framing.js';
import { SmbServer } from './server.js';

async function listening(opts: { maxConnections?: number; idleTimeoutMs?: number; handshakeTimeoutMs?: number } = {}) {
  const mem = await memoryServer();
  const srv = new SmbServer({
    fs: mem.fs,
    directory: { lookup: () => Promise.resolve(null) },
    serverGuid: Buffer.alloc(16, 1),
    signingRequired: false,
    serverName: 'TEST',
    domain: 'WORKGROUP',
    ...opts,
  });
  const port = await srv.listen(0, '127.0.0.1');
  return {
    port,
    srv,
    close: async (): Promise<void> => {
      await srv.close();
      await mem.close();
    },
  };
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1' }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Resolves when the server closes the socket (with the bytes it sent before). */
function closed(s: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    if (s.destroyed || s.readableEnded) return resolve();
    s.once('close', () => resolve());
    s.resume();
  });
}

/** An SMB2 NEGOTIATE request (2.1) with its Direct TCP header. */
function negotiateFrame(): Buffer {
  const w = new SmbWriter();
  writeHeader(w, {
    creditCharge: 0,
    status: 0,
    command: Command.NEGOTIATE,
    creditRequest: 1,
    flags: 0,
    nextCommand: 0,
    messageId: 0,
    treeId: 0,
    sessionId: 0,
  });
  w.u16(36).u16(1).u16(1).u16(0).u32(0).zeros(24).u16(0x0210);
  const msg = w.finish();
  return Buffer.concat([directTcpHeader(msg.length), msg]);
}

/** Resolves with the first response frame a socket receives. */
function reply(s: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      got = Buffer.concat([got, d]);
      if (got.length >= 4 && got.length >= 4 + got.readUIntBE(1, 3)) {
        s.off('data', onData);
        resolve(got.subarray(4, 4 + got.readUIntBE(1, 3)));
      }
    };
    s.on('data', onData);
    s.once('close', () => reject(new Error('closed before a reply')));
  });
}

/** Sends an SMB2 NEGOTIATE and resolves with the first response frame's length. */
async function negotiate(s: net.Socket): Promise<number> {
  const r = reply(s);
  s.write(negotiateFrame());
  return (await r).length;
}

describe('SMB2 listener', () => {
  it('closes a connection announcing a frame over the cap, and keeps serving the others', async () => {
    const { port, close } = await listening();
    const good = await connect(port);
    const bad = await connect(port);
    bad.write(Buffer.from([0, 0xff, 0xff, 0xff]));
    await closed(bad);
    assert.ok((await negotiate(good)) > 64);
    good.destroy();
    await close();
  });

  it('frames each connection whole when their bytes arrive interleaved, a few at a time', async () => {
    // Every connection reads into one shared buffer: nothing of a read may be kept by reference.
    const { port, close } = await listening();
    const socks = await Promise.all([connect(port), connect(port), connect(port)]);
    for (const s of socks) s.setNoDelay(true);
    const frame = negotiateFrame();
    const replies = socks.map((s) => reply(s));
    for (let at = 0; at < frame.length; at += 7) {
      for (const s of socks) s.write(frame.subarray(at, at + 7));
      await new Promise((r) => setTimeout(r, 2));
    }
    for (const r of await Promise.all(replies)) {
      assert.equal(r.readUInt32LE(0), 0x424d53fe, 'an SMB2 header');
      assert.equal(r.readUInt32LE(8), 0, 'STATUS_SUCCESS');
      assert.equal(r.readUInt16LE(64 + 4), 0x0210, 'the dialect asked for');
    }
    for (const s of socks) s.destroy();
    await close();
  });

  it('past the cap closes the oldest connection without a session, and closes idle ones', async () => {
    // 3 s idle: the new connection negotiates well within it on a loaded machine.
    const { port, srv, close } = await listening({ maxConnections: 2, idleTimeoutMs: 3_000 });
    const a = await connect(port);
    const b = await connect(port);
    // Silent sockets must not keep a client out: the oldest of them makes room once it is past the
    // grace period (1 s) that keeps a client in the middle of its handshake from being closed.
    await new Promise((r) => setTimeout(r, 1_200));
    const c = await connect(port);
    await closed(a);
    assert.ok((await negotiate(c)) > 64, 'the newest connection is served');
    await Promise.all([closed(b), closed(c)]);
    // The server's side of the sockets closes a moment later.
    for (let i = 0; i < 600 && srv.connections > 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(srv.connections, 0);
    await close();
  });

  it('close() stops accepting and closes open connections', async () => {
    const { port, close } = await listening();
    const a = await connect(port);
    assert.ok((await negotiate(a)) > 64);
    await close();
    await closed(a);
    await assert.rejects(connect(port));
  });
});
