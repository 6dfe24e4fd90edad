import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { ApiClient, apiPath, type TokenPair } from './client.js';
import { ApiError, CtlError } from './errors.js';
import { fakeIo, jsonResponse, problem } from './testing.js';

const pair = (n: number): TokenPair => ({
  access_token: `access-${n}`,
  refresh_token: `refresh-${n}`,
  token_type: 'Bearer',
  expires_in: 900,
  must_change_password: false,
});

describe('ApiClient', () => {
  it('encodes each path argument as one segment', () => {
    assert.equal(apiPath`/shares/${'/export'}/permissions/users/${'alice'}`, '/shares/%2Fexport/permissions/users/alice');
    assert.equal(apiPath`/settings/${'logging.level'}`, '/settings/logging.level');
  });

  it('sends JSON with the bearer token under /api/v1', async () => {
    const io = fakeIo({ respond: () => jsonResponse(201, { name: 'g', gid: 1, members: [] }) });
    const c = new ApiClient({ server: 'http://h:1/', accessToken: 'tok', fetch: io.fetch });
    assert.deepEqual(await c.post('/groups', { name: 'g' }), { name: 'g', gid: 1, members: [] });
    const [req] = io.requests;
    assert.equal(req?.url, 'http://h:1/api/v1/groups');
    assert.equal(req?.headers.authorization, 'Bearer tok');
    assert.equal(req?.headers['content-type'], 'application/json');
    assert.deepEqual(req?.body, { name: 'g' });
  });

  it('on 401, refreshes once, saves the new pair and repeats the call with the new token', async () => {
    const io = fakeIo({
      respond: (req) => {
        if (req.url.endsWith('/auth/refresh')) {
          assert.deepEqual(req.body, { refresh_token: 'refresh-1' });
          assert.equal(req.headers.authorization, undefined);
          return jsonResponse(200, pair(2));
        }
        return req.headers.authorization === 'Bearer access-2' ? jsonResponse(200, [{ username: 'admin' }]) : problem(401, 'token expired');
      },
    });
    const saved: TokenPair[] = [];
    const c = new ApiClient({
      server: 'http://h',
      accessToken: 'access-1',
      refreshToken: 'refresh-1',
      fetch: io.fetch,
      onTokens: async (p) => {
        saved.push(p);
      },
    });
    assert.deepEqual(await c.get('/users'), [{ username: 'admin' }]);
    assert.deepEqual(
      io.requests.map((r) => `${r.method} ${r.url.replace('http://h/api/v1', '')}`),
      ['GET /users', 'POST /auth/refresh', 'GET /users'],
    );
    assert.deepEqual(saved, [pair(2)]);
  });

  it('when the refresh is refused too, the first 401 is the error, with a hint to log in', async () => {
    const io = fakeIo({
      respond: (req) =>
        req.url.endsWith('/auth/refresh') ? problem(401, 'token expired') : problem(401, 'the token was revoked; log in again'),
    });
    const c = new ApiClient({
      server: 'http://h',
      accessToken: 'a',
      refreshToken: 'r',
      fetch: io.fetch,
      onTokens: () => assert.fail('nothing to save'),
    });
    await assert.rejects(c.get('/users'), (e: unknown) => {
      assert.ok(e instanceof ApiError);
      assert.equal(e.message, 'the token was revoked; log in again (HTTP 401)');
      assert.equal(e.hint, 'log in with: dittofsctl login');
      assert.equal(e.exitCode, 1);
      return true;
    });
    assert.equal(io.requests.length, 2);
  });

  it('without a refresh token, a 401 is final; a second 401 after a refresh is not refreshed again', async () => {
    let io = fakeIo({ respond: () => problem(401, 'token expired') });
    await assert.rejects(
      new ApiClient({ server: 'http://h', accessToken: 'a', fetch: io.fetch }).get('/users'),
      /token expired \(HTTP 401\)/,
    );
    assert.equal(io.requests.length, 1);
    io = fakeIo({ respond: (req) => (req.url.endsWith('/auth/refresh') ? jsonResponse(200, pair(3)) : problem(401, 'still no')) });
    await assert.rejects(
      new ApiClient({ server: 'http://h', accessToken: 'a', refreshToken: 'r', fetch: io.fetch }).get('/users'),
      /still no/,
    );
    assert.equal(io.requests.length, 3);
  });

  it('problem+json: detail and status; 403 password-change-required hints at "dittofsctl password"', async () => {
    const io = fakeIo({
      respond: (req) =>
        req.url.endsWith('/users')
          ? problem(403, 'password must be changed: POST /api/v1/users/me/password first', 'urn:dittofs:problem:password-change-required')
          : problem(409, 'metadata store "m" is used by shares: /export', 'urn:dittofs:problem:in-use'),
    });
    const c = new ApiClient({ server: 'http://h', accessToken: 'a', fetch: io.fetch });
    await assert.rejects(c.get('/users'), (e: unknown) => {
      assert.ok(e instanceof ApiError);
      assert.ok(e.passwordChangeRequired);
      assert.equal(e.hint, 'change your password with: dittofsctl password');
      return true;
    });
    await assert.rejects(c.delete('/stores/metadata/m'), (e: unknown) => {
      assert.ok(e instanceof ApiError);
      assert.equal(e.message, 'metadata store "m" is used by shares: /export (HTTP 409)');
      assert.equal(e.hint, undefined);
      return true;
    });
  });

  it('an error that is not problem+json still says the status', async () => {
    const io = fakeIo({ respond: () => new Response('<html>bad gateway</html>', { status: 502, statusText: 'Bad Gateway' }) });
    await assert.rejects(new ApiClient({ server: 'http://h', fetch: io.fetch }).get('/users'), /: Bad Gateway \(HTTP 502\)$/);
  });

  it('a 2xx answer that is not JSON means this is not the API', async () => {
    const io = fakeIo({ respond: () => new Response('<html>hello</html>', { status: 200 }) });
    await assert.rejects(new ApiClient({ server: 'http://h', fetch: io.fetch }).get('/users'), (e: unknown) => {
      assert.ok(e instanceof CtlError);
      assert.match(e.message, /answered GET \/api\/v1\/users with something that is not JSON/);
      return true;
    });
  });

  it('a server that cannot be reached is a connection error naming it', async () => {
    const port = await new Promise<number>((resolve) => {
      const srv = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as net.AddressInfo).port;
        srv.close(() => resolve(p));
      });
    });
    await assert.rejects(new ApiClient({ server: `http://127.0.0.1:${port}` }).get('/users'), (e: unknown) => {
      assert.ok(e instanceof CtlError);
      assert.match(e.message, new RegExp(`^cannot reach http://127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`));
      assert.equal(e.exitCode, 1);
      return true;
    });
  });
});
