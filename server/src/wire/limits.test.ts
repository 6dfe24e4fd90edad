import assert from 'node:assert/strict';
import net from 'node:net';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import pino from 'pino';
import { addressGroup, addressKey, ConnectionLimits, type ConnectionLimitsOptions, ReplyBudget, RequestBudget } from './limits.js';
import { LogLimiter } from '../obs/log-limiter.js';

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('RequestBudget', () => {
  it('grants in FIFO order as bytes come back, and a later small request does not overtake', () => {
    const b = new RequestBudget(100);
    const order: string[] = [];
    assert.equal(
      b.reserve(60, () => order.push('never')),
      true,
    );
    assert.equal(
      b.reserve(50, () => order.push('fifty')),
      false,
    );
    assert.equal(
      b.reserve(10, () => order.push('ten')),
      false,
      'a small request waits behind the first waiter',
    );
    assert.equal(b.pressure, true);
    b.release(60);
    assert.deepEqual(order, ['fifty', 'ten']);
    assert.equal(b.used, 60);
    assert.equal(b.pressure, false);
  });

  it('held bytes count as used but never block a reservation', () => {
    const b = new RequestBudget(100);
    b.hold(500);
    assert.equal(
      b.reserve(100, () => undefined),
      true,
    );
    assert.equal(b.used, 600);
    b.unhold(500);
    b.release(100);
    assert.equal(b.used, 0);
  });

  it('tells listeners when pressure begins, and resumes queued connections one per turn once it ends', async () => {
    const b = new RequestBudget(10);
    let onsets = 0;
    const stop = b.onPressure(() => onsets++);
    b.reserve(10, () => undefined);
    const granted: number[] = [];
    b.reserve(5, () => granted.push(5));
    b.reserve(5, () => granted.push(6));
    assert.equal(onsets, 1, 'once per onset, not per waiter');
    const resumed: number[] = [];
    for (let i = 0; i < 3; i++) b.queueResume(() => resumed.push(i));
    await turn();
    assert.deepEqual(resumed, [], 'nothing resumes under pressure');
    b.release(10);
    assert.deepEqual(granted, [5, 6]);
    await turn();
    assert.deepEqual(resumed, [0]);
    await turn();
    await turn();
    assert.deepEqual(resumed, [0, 1, 2]);
    stop();
  });

  it('cancel withdraws a waiter and lets the ones behind it through', () => {
    const b = new RequestBudget(10);
    b.reserve(8, () => undefined);
    const big = (): void => assert.fail('cancelled');
    let small = 0;
    b.reserve(9, big);
    b.reserve(2, () => small++);
    b.cancel(big);
    assert.equal(small, 1);
    assert.equal(b.waiting, 0);
  });
});

describe('LogLimiter', () => {
  it('writes the first lines, then one summary with the count of those left out', () => {
    const lines: { msg: string; suppressed?: number }[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(JSON.parse(chunk.toString()) as { msg: string; suppressed?: number });
        cb();
      },
    });
    const limiter = new LogLimiter(pino({}, sink), 'warn', 3, 60_000);
    for (let i = 0; i < 1000; i++) limiter.log({ i }, 'dropping garbage');
    limiter.flush();
    assert.equal(lines.length, 4);
    assert.equal(lines[3]!.suppressed, 997);
    assert.match(lines[3]!.msg, /997 more/);
  });
});

describe('ConnectionLimits', () => {
  it('refuses connections past the cap and closes idle ones', async () => {
    // 3 s idle: the connections set up and the first one starts talking well within it on a loaded
    // machine, and a talker's bytes (every 100 ms) keep it alive through a stall of seconds.
    const limits = new ConnectionLimits({ maxConnections: 2, idleTimeoutMs: 3_000, maxBufferedRequestBytes: 1 << 20, name: 'test' });
    const server = net.createServer((s) => {
      s.on('error', () => undefined);
      // Proven at once: a full listener of proven connections refuses the new one.
      const g = limits.admit(s);
      g?.prove();
      if (g) s.resume();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const clients: net.Socket[] = [];
    const closed: boolean[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const c = net.connect(port, '127.0.0.1');
        c.on('error', () => undefined);
        clients.push(c);
        closed.push(false);
        c.on('close', () => (closed[i] = true));
        await new Promise<void>((r) => {
          c.once('connect', r);
          c.once('close', () => r());
        });
        const deadline = Date.now() + 5000;
        while (limits.connections < Math.min(i + 1, 2) && Date.now() < deadline) await turn();
      }
      const until = async (cond: () => boolean): Promise<void> => {
        const deadline = Date.now() + 30_000;
        while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      };
      await until(() => closed[2] === true);
      assert.deepEqual(closed, [false, false, true], 'the third connection is refused');
      assert.equal(limits.connectionsFrom('127.0.0.1'), 2);
      // One keeps talking (the server sees bytes), the other is silent: only the silent one is closed.
      const talk = setInterval(() => clients[0]!.write('x'), 100);
      await until(() => closed[1] === true);
      clearInterval(talk);
      assert.equal(closed[1], true, 'the idle connection is closed');
      assert.equal(closed[0], false, 'the busy one stays');
    } finally {
      for (const c of clients) c.destroy();
      limits.close();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

/** A listener guarded by `limits`; `onAdmit` sees each admitted connection's guard. */
async function guarded(
  opts: Partial<ConnectionLimitsOptions>,
  onAdmit: (g: ReturnType<ConnectionLimits['admit']> & object) => void = () => undefined,
) {
  const limits = new ConnectionLimits({ maxConnections: 1000, idleTimeoutMs: 0, maxBufferedRequestBytes: 1 << 20, name: 'test', ...opts });
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    const g = limits.admit(s);
    if (g) {
      onAdmit(g);
      s.resume();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const clients: net.Socket[] = [];
  /** A connection from `from` (any 127.0.0.0/8 address is this host): resolves once the server has decided on it. */
  const connect = async (from = '127.0.0.1'): Promise<{ sock: net.Socket; closed: Promise<void>; isClosed: () => boolean }> => {
    const before = limits.decided;
    const sock = net.connect({ port, host: '127.0.0.1', localAddress: from });
    sock.on('error', () => undefined);
    clients.push(sock);
    let done = false;
    const closed = new Promise<void>((r) => sock.once('close', () => ((done = true), r())));
    await new Promise<void>((r) => {
      sock.once('connect', r);
      sock.once('close', () => r());
    });
    const deadline = Date.now() + 10_000;
    while (limits.decided === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    return { sock, closed, isClosed: () => done };
  };
  return {
    limits,
    connect,
    close: async (): Promise<void> => {
      for (const c of clients) c.destroy();
      limits.close();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe('ConnectionLimits against a crowd of silent sockets', () => {
  it('a full listener takes room from the address with the most unproven connections, never from a proven one', async () => {
    const guards: { prove(): void }[] = [];
    const t = await guarded({ maxConnections: 4, evictGraceMs: 0 }, (g) => guards.push(g));
    try {
      const proven = await t.connect();
      guards[0]!.prove();
      // A client in the middle of its handshake, and a crowd of two silent sockets from another address.
      const midway = await t.connect();
      const silent1 = await t.connect('127.0.0.2');
      const silent2 = await t.connect('127.0.0.2');
      const next = await t.connect('127.0.0.3');
      await silent1.closed;
      assert.deepEqual([proven.isClosed(), midway.isClosed(), silent2.isClosed(), next.isClosed()], [false, false, false, false]);
      assert.equal(t.limits.connections, 4);
      // Once every connection has proven itself, a new one is refused and nobody is closed.
      for (const g of guards.slice(1)) g.prove();
      const refused = await t.connect('127.0.0.4');
      await refused.closed;
      assert.deepEqual([proven.isClosed(), midway.isClosed(), silent2.isClosed(), next.isClosed()], [false, false, false, false]);
    } finally {
      await t.close();
    }
  });

  it('a crowd that keeps connecting closes its own sockets, never a lone client in the middle of its handshake', async () => {
    const t = await guarded({ maxConnections: 4, evictGraceMs: 100 });
    try {
      const midway = await t.connect();
      const crowd = [await t.connect('127.0.0.2'), await t.connect('127.0.0.2'), await t.connect('127.0.0.2')];
      await new Promise((r) => setTimeout(r, 200));
      // A burst: the crowd's older sockets make room for its new ones; then, its new ones being
      // young, the burst is refused rather than closing the lone client.
      const burst = [];
      for (let i = 0; i < 6; i++) burst.push(await t.connect('127.0.0.2'));
      await Promise.all(crowd.map((c) => c.closed));
      const deadline = Date.now() + 10_000;
      while (burst.filter((b) => b.isClosed()).length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      assert.equal(midway.isClosed(), false, 'the lone client in the middle of its handshake stays');
      assert.deepEqual(
        burst.map((b) => b.isClosed()),
        [false, false, false, true, true, true],
        'the first three of the burst got the room of the three old ones, the rest were refused',
      );
      assert.equal(t.limits.connections, 4);
    } finally {
      await t.close();
    }
  });

  it('an unproven connection younger than the grace period is not closed for a new one: the new one is refused', async () => {
    const t = await guarded({ maxConnections: 2, evictGraceMs: 60_000 });
    try {
      const a = await t.connect('127.0.0.2');
      const b = await t.connect('127.0.0.2');
      const c = await t.connect('127.0.0.3');
      await c.closed;
      assert.deepEqual([a.isClosed(), b.isClosed()], [false, false]);
    } finally {
      await t.close();
    }
  });

  it('at the per-address cap the oldest unproven connection of that address makes room; each address counts apart', async () => {
    const guards: { prove(): void }[] = [];
    const lines: { msg: string; setting?: string }[] = [];
    const log = pino(
      {},
      new Writable({ write: (c: Buffer, _e, cb) => (lines.push(JSON.parse(c.toString()) as { msg: string; setting?: string }), cb()) }),
    );
    const t = await guarded({ maxConnections: 100, maxConnectionsPerAddress: 2, evictGraceMs: 0, settings: 'adapters.test', log }, (g) =>
      guards.push(g),
    );
    try {
      const other = await t.connect('127.0.0.3');
      const a1 = await t.connect('127.0.0.2');
      const a2 = await t.connect('127.0.0.2');
      // A real client behind the same address as two silent sockets still gets in.
      const a3 = await t.connect('127.0.0.2');
      await a1.closed;
      assert.deepEqual([a2.isClosed(), a3.isClosed(), other.isClosed()], [false, false, false]);
      assert.deepEqual([t.limits.connectionsFrom('127.0.0.2'), t.limits.connectionsFrom('127.0.0.3')], [2, 1]);
      // Both proven: the address's next connection is refused.
      guards[2]!.prove();
      guards[3]!.prove();
      const a4 = await t.connect('127.0.0.2');
      await a4.closed;
      assert.deepEqual([a2.isClosed(), a3.isClosed()], [false, false]);
      // The refusal names the setting to raise.
      const refusal = lines.find((l) => /too many connections from this address/.test(l.msg));
      assert.equal(refusal?.setting, 'adapters.test.max_connections_per_address');
      // A slot freed is a slot again.
      a2.sock.destroy();
      const deadline = Date.now() + 10_000;
      while (t.limits.connectionsFrom('127.0.0.2') > 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      const again = await t.connect('127.0.0.2');
      assert.equal(again.isClosed(), false);
      assert.equal(t.limits.connectionsFrom('127.0.0.2'), 2);
    } finally {
      await t.close();
    }
  });

  it('closes a connection not proven within the handshake timeout; a renewed one lasts until ten times it', async () => {
    const guards: { prove(): void; renewHandshake(): void }[] = [];
    const t = await guarded({ handshakeTimeoutMs: 300 }, (g) => guards.push(g));
    try {
      const silent = await t.connect();
      const renewing = await t.connect();
      const quick = await t.connect();
      guards[2]!.prove();
      // Bytes alone renew nothing; the engine's renewHandshake (a request) does.
      const talk = setInterval(() => {
        silent.sock.write('x');
        guards[1]!.renewHandshake();
      }, 50);
      const started = Date.now();
      await silent.closed;
      await renewing.closed;
      clearInterval(talk);
      const lasted = Date.now() - started;
      assert.ok(lasted >= 2_500, `the renewed connection lasted ${lasted} ms, about ten handshake timeouts`);
      assert.equal(quick.isClosed(), false, 'the proven one stays');
      assert.equal(t.limits.connections, 1);
    } finally {
      await t.close();
    }
  });

  it('keys each address in one spelling: an IPv4-mapped IPv6 address as its IPv4 one', () => {
    assert.equal(addressKey('10.1.2.3'), '10.1.2.3');
    assert.equal(addressKey('::ffff:10.1.2.3'), '10.1.2.3');
    assert.equal(addressKey('2001:0db8:0001:0002:0000:0000:0000:0001'), '2001:db8:1:2::1');
    // Two hosts of one /64 (an office LAN) are two addresses.
    assert.notEqual(addressKey('2001:db8:1:2::1'), addressKey('2001:db8:1:2::2'));
    assert.equal(addressKey(undefined), 'unknown');
    // A full listener ranks IPv6 addresses by their /64 (one host can hold a whole /64).
    assert.equal(addressGroup('2001:db8:1:2::1'), '2001:db8:1:2::/64');
    assert.equal(addressGroup('2001:db8:1:2:aaaa:bbbb:cccc:dddd'), '2001:db8:1:2::/64');
    assert.equal(addressGroup('10.1.2.3'), '10.1.2.3');
  });
});

describe('ReplyBudget', () => {
  it('is over at its limit and tells each waiter once when it drops below', async () => {
    const b = new ReplyBudget(100);
    b.add(60);
    assert.equal(b.over, false);
    b.add(60);
    assert.equal(b.over, true);
    let calls = 0;
    const cancel = b.whenBelow(() => calls++);
    let other = 0;
    b.whenBelow(() => other++);
    cancel();
    b.sent(10); // still over
    await new Promise((r) => setImmediate(r));
    assert.equal(other, 0);
    b.sent(60);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual([calls, other, b.used, b.waiting], [0, 1, 50, 0]);
    // An accounting bug does not throw (it would from a socket callback): it is put right, and warned of.
    const warned = new Promise<Error>((r) => process.once('warning', r));
    b.sent(51);
    assert.equal(b.used, 0);
    assert.match((await warned).message, /more sent than added/);
  });
});
