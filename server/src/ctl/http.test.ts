// dittofsctl and `dittofs status` reach an API on any port the server accepts, also on the ports
// Node's fetch refuses (the Fetch standard's "bad ports": 2049, 6000, 6665-6669, 10080, ...),
// against a real HTTP server on loopback.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { probeReadiness } from '../cli/probe.js';
import { defaultConfig } from '../config/defaults.js';
import { ApiClient } from './client.js';
import { CtlError } from './errors.js';
import { BodyTooLargeError, httpFetch, MAX_BODY_BYTES } from './http.js';

/** Ports above 1023 on the Fetch standard's list of ports fetch() will not connect to. */
const FETCH_BLOCKED_PORTS = [10080, 6666, 6667, 6668, 6669, 6665, 6679, 6697, 6566, 6000, 5060, 5061, 4190, 4045, 3659, 1719, 1720, 1723];

async function listenOnBlockedPort(server: http.Server): Promise<number | undefined> {
  for (const port of FETCH_BLOCKED_PORTS) {
    const ok = await new Promise<boolean>((resolve) => {
      const onError = (): void => resolve(false);
      server.once('error', onError);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', onError);
        resolve(true);
      });
    });
    if (ok) return port;
  }
  return undefined;
}

describe('the HTTP client of dittofsctl and dittofs status', () => {
  const server = http.createServer((req, res) => {
    if (req.url === '/api/v1/users' && req.headers.authorization === 'Bearer tok') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify([{ username: 'alice' }]));
    } else if (req.url === '/api/v1/groups') {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => res.writeHead(201, { 'content-type': 'application/json' }).end(body));
    } else if (req.url === '/health/ready') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ready: true, checks: { wal: { ok: true } } }));
    } else if (req.url === '/api/v1/moved') {
      res.writeHead(302, { location: 'http://203.0.113.1/steal' }).end();
    } else if (req.url === '/api/v1/empty') {
      res.writeHead(204).end();
    } else {
      res.writeHead(404, { 'content-type': 'application/problem+json' }).end(JSON.stringify({ status: 404, detail: 'no such resource' }));
    }
  });
  let port: number | undefined;
  before(async () => {
    port = await listenOnBlockedPort(server);
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('dittofsctl reaches an API on a port the global fetch refuses ("bad port"), and sends bodies', async (t) => {
    if (port === undefined) return t.skip(`every one of ${FETCH_BLOCKED_PORTS.join(', ')} is in use here`);
    const client = new ApiClient({ server: `http://127.0.0.1:${port}`, accessToken: 'tok' });
    assert.deepEqual(await client.get('/users'), [{ username: 'alice' }]);
    assert.deepEqual(await client.post('/groups', { name: 'editors' }), { name: 'editors' });
    assert.equal(await client.get('/empty'), undefined);
    await assert.rejects(client.get('/nothing'), (e: unknown) => (e as { status?: number }).status === 404);
  });

  it('dittofs status finds the server ready on such a port', async (t) => {
    if (port === undefined) return t.skip(`every one of ${FETCH_BLOCKED_PORTS.join(', ')} is in use here`);
    const config = defaultConfig();
    config.server.api.bind = '127.0.0.1';
    config.server.api.port = port;
    const r = await probeReadiness(config);
    assert.equal(r.ready, true, r.detail);
    assert.deepEqual(r.checks, { wal: { ok: true } });
  });

  it('does not follow a redirect, and says so', async (t) => {
    if (port === undefined) return t.skip(`every one of ${FETCH_BLOCKED_PORTS.join(', ')} is in use here`);
    const client = new ApiClient({ server: `http://127.0.0.1:${port}`, accessToken: 'tok' });
    await assert.rejects(client.get('/moved'), (e: unknown) => {
      assert.ok(e instanceof CtlError);
      assert.match(
        e.message,
        /answered GET \/api\/v1\/moved with a redirect \(HTTP 302 to http:\/\/203\.0\.113\.1\/steal\), which is not followed/,
      );
      return true;
    });
  });

  it('says why a server cannot be reached: refused, or no answer in time', async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const free = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    await assert.rejects(new ApiClient({ server: `http://127.0.0.1:${free}` }).get('/users'), (e: unknown) => {
      assert.ok(e instanceof CtlError);
      assert.equal(e.message, `cannot reach http://127.0.0.1:${free}: connect ECONNREFUSED 127.0.0.1:${free}`);
      return true;
    });
    const silent = net.createServer(() => undefined);
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const at = (silent.address() as net.AddressInfo).port;
      await assert.rejects(new ApiClient({ server: `http://127.0.0.1:${at}`, timeoutMs: 300 }).get('/users'), /: no answer in time$/);
      await assert.rejects(httpFetch('ftp://127.0.0.1/'), /fetch failed/);
    } finally {
      silent.close();
    }
  });
});

describe('the HTTP client reads no body longer than MAX_BODY_BYTES', () => {
  /** For each endless answer: how many bytes it had written when its client went away. */
  const cutAt: Promise<number>[] = [];
  const server = http.createServer((req, res) => {
    if (req.url === '/api/v1/endless') {
      // No length: a body that goes on until the client hangs up.
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(256 * 1024, 0x20);
      let sent = 0;
      const pump = (): void => {
        while (!res.destroyed) {
          sent += chunk.length;
          if (!res.write(chunk)) return;
        }
      };
      res.on('drain', pump);
      cutAt.push(new Promise((resolve) => res.on('close', () => resolve(sent))));
      pump();
    } else if (req.url === '/api/v1/declared') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(4 * 1024 * 1024 * 1024) });
      res.write('[');
    } else if (req.url === '/api/v1/big') {
      // Long, but within the cap: a list of 20,000 users.
      const users = Array.from({ length: 20_000 }, (_, i) => ({
        username: `user${i}`,
        uid: 10_000 + i,
        gid: 10_000 + i,
        groups: ['staff'],
      }));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(users));
    } else {
      res.writeHead(404).end();
    }
  });
  let base = '';
  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('an endless body or a declared length past the cap fails the request with its own error; a long list is read', async () => {
    const client = new ApiClient({ server: base, timeoutMs: 60_000 });
    const refused = (e: unknown): boolean => {
      assert.ok(e instanceof CtlError, String(e));
      assert.match(
        e.message,
        new RegExp(`^${base} answered GET /api/v1/(endless|declared) with a body longer than 32 MiB, the most dittofsctl reads$`),
      );
      return true;
    };
    const started = Date.now();
    await assert.rejects(client.get('/endless'), refused);
    await assert.rejects(client.get('/declared'), refused);
    assert.ok(Date.now() - started < 30_000, 'refused as the bytes came, not at the timeout');
    // The client hung up once past the cap: the server wrote a little more than it (its socket's
    // buffers), not without end.
    const written = await cutAt[0]!;
    assert.ok(written > MAX_BODY_BYTES && written < 2 * MAX_BODY_BYTES, `${written} bytes written before the client hung up`);
    await assert.rejects(httpFetch(`${base}/api/v1/endless`), (e: unknown) => {
      assert.ok((e as { cause?: unknown }).cause instanceof BodyTooLargeError);
      return true;
    });
    assert.equal((await client.get<unknown[]>('/big')).length, 20_000);
  });
});
