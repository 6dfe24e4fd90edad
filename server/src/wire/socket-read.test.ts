import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { REPLY_TIMEOUT_MS } from '../../../test/helpers/limits.js';
import { readIntoBuffer } from './socket-read.js';

/** A server whose accepted sockets read into `buffer`; resolves with the server and its first socket's reads. */
async function withServer(
  buffer: Buffer,
  fn: (
    client: net.Socket,
    accepted: Promise<{ socket: net.Socket; supported: boolean; reads: Buffer[]; sameBuffer: boolean[] }>,
  ) => Promise<void>,
): Promise<void> {
  let resolveAccepted!: (v: { socket: net.Socket; supported: boolean; reads: Buffer[]; sameBuffer: boolean[] }) => void;
  const accepted = new Promise<{ socket: net.Socket; supported: boolean; reads: Buffer[]; sameBuffer: boolean[] }>(
    (r) => (resolveAccepted = r),
  );
  const server = net.createServer({ pauseOnConnect: true }, (socket) => {
    const reads: Buffer[] = [];
    const sameBuffer: boolean[] = [];
    const supported = readIntoBuffer(socket, buffer, (n, buf) => {
      sameBuffer.push(buf === buffer);
      reads.push(Buffer.from(buf.subarray(0, n)));
    });
    socket.resume();
    resolveAccepted({ socket, supported, reads, sameBuffer });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const client = net.connect(port, '127.0.0.1');
  await new Promise<void>((r) => client.once('connect', r));
  try {
    await fn(client, accepted);
  } finally {
    client.destroy();
    (await accepted).socket.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  }
}

const until = async (cond: () => boolean, ms = REPLY_TIMEOUT_MS): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('readIntoBuffer', () => {
  it('delivers everything an accepted socket receives through one reused buffer (this Node supports it)', async () => {
    const buffer = Buffer.alloc(1000);
    await withServer(buffer, async (client, accepted) => {
      const sent = Buffer.alloc(200_000);
      for (let i = 0; i < sent.length; i++) sent[i] = (i * 7) & 0xff;
      client.write(sent);
      const a = await accepted;
      assert.equal(a.supported, true, 'the accepted socket reads into the caller buffer');
      await until(() => a.reads.reduce((n, b) => n + b.length, 0) >= sent.length);
      assert.deepEqual(Buffer.concat(a.reads), sent);
      assert.ok(a.reads.length >= sent.length / buffer.length, 'no read exceeds the buffer');
      assert.ok(a.sameBuffer.every(Boolean));
    });
  });

  it('stops delivering while paused and resumes after, and the end of the stream still closes the socket', async () => {
    await withServer(Buffer.alloc(4096), async (client, accepted) => {
      const a = await accepted;
      client.write('first');
      await until(() => a.reads.length > 0);
      a.socket.pause();
      const before = a.reads.length;
      client.write('second');
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(a.reads.length, before, 'nothing read while paused');
      a.socket.resume();
      await until(() => Buffer.concat(a.reads).toString() === 'firstsecond');
      const closed = new Promise<void>((r) => a.socket.once('close', () => r()));
      client.end();
      await closed;
    });
  });

  it('changes nothing on a socket that already reads into a buffer of its own', () => {
    const own = Buffer.alloc(16);
    // `onread` is a documented constructor option that this @types/node does not list.
    const s = new net.Socket({ onread: { buffer: own, callback: () => undefined } } as net.SocketConstructorOpts);
    assert.equal(
      readIntoBuffer(s, Buffer.alloc(16), () => undefined),
      false,
    );
    s.destroy();
  });
});
