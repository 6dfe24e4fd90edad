import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { settledWithin, withTimeout } from './timeouts.js';

/** Blocks the event loop (what a long GC pause or a loaded machine does to it). */
function busy(ms: number): void {
  const end = Date.now() + ms;
  while (Date.now() < end);
}

/** Set to 1 by the peer once its answer is handed to the kernel. */
const answered = new Int32Array(new SharedArrayBuffer(4));

describe('withTimeout', () => {
  // The peer runs on a thread of its own: it answers while this thread is busy.
  let peer: Worker;
  let port = 0;
  before(async () => {
    peer = new Worker(
      `const net = require('node:net');
       const { parentPort, workerData } = require('node:worker_threads');
       const flag = workerData;
       const sent = () => { Atomics.store(flag, 0, 1); Atomics.notify(flag, 0); };
       const server = net.createServer((s) => { s.on('data', () => s.write('pong', sent)); s.on('error', () => {}); });
       server.listen(0, '127.0.0.1', () => parentPort.postMessage(server.address().port));`,
      { eval: true, workerData: answered },
    );
    port = await new Promise<number>((r, j) => peer.once('message', r).once('error', j));
  });
  after(() => peer.terminate());

  /** A connected socket, and the next answer on it as a promise. */
  async function connect(): Promise<{ s: net.Socket; answer: () => Promise<string> }> {
    const s = net.connect(port, '127.0.0.1');
    await new Promise<void>((r, j) => s.once('connect', r).once('error', j));
    return { s, answer: () => new Promise((r) => s.once('data', (d) => r(d.toString()))) };
  }

  it('takes an answer that came in while this process was too busy to read it', async () => {
    for (let round = 0; round < 5; round++) {
      const { s, answer } = await connect();
      try {
        Atomics.store(answered, 0, 0);
        const got = withTimeout(answer(), 50);
        const started = Date.now();
        s.write('ping');
        // Busy until the answer is in this socket's buffer and the 50 ms timer is due: the loop
        // finds both at once.
        assert.notEqual(Atomics.wait(answered, 0, 0, 30_000), 'timed-out', 'the peer answered');
        busy(Math.max(0, 80 - (Date.now() - started)));
        assert.equal(await got, 'pong', `round ${round}`);
      } finally {
        s.destroy();
      }
    }
  });

  it('rejects when no answer comes, and leaves no timer behind', async () => {
    const { s, answer } = await connect();
    try {
      const started = Date.now();
      await assert.rejects(withTimeout(answer(), 100), /no answer within 100 ms/);
      assert.ok(Date.now() - started >= 95, 'not before its time');
      // Settled either way: no timer or immediate left behind for the event loop to wait on.
      const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout' || r === 'Immediate').length;
      const before = timers();
      await withTimeout(Promise.resolve(1), 60_000);
      await settledWithin(new Promise(() => undefined), 20);
      await assert.rejects(withTimeout(Promise.reject(new Error('its own')), 60_000), /its own/);
      assert.equal(timers(), before, process.getActiveResourcesInfo().join(', '));
    } finally {
      s.destroy();
    }
  });
});
