import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createLogger } from '../log.js';
import { DITTOFS_API_ERROR, DittofsApiClient, DittofsApiError, MAX_ANSWER_BYTES } from './client.js';
import { answerLogin, EMPTY_STATE, sendJson, startFakeServer, type FakeServer } from './fake-server.testing.js';

const PASSWORD = 'the-admin-password-123';
const creds = { username: 'admin', password: PASSWORD };
const api = () => new DittofsApiClient({ log: createLogger({ level: 'silent' }), timeoutMs: 10_000 });

async function apiError(p: Promise<unknown>): Promise<DittofsApiError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof DittofsApiError, String(e));
    return e;
  }
  assert.fail('no error');
}

describe('DittofsApiClient: what a pod answers cannot take the operator elsewhere nor fill its memory or statuses', () => {
  const servers: FakeServer[] = [];
  after(async () => Promise.all(servers.map((s) => s.close())));
  const start = async (...a: Parameters<typeof startFakeServer>) => {
    const s = await startFakeServer(...a);
    servers.push(s);
    return s;
  };

  it('a redirect of the admin login is not followed: the password goes nowhere else, the error names the status', async () => {
    const elsewhere = await start((_req, res) => sendJson(res, 200, {}));
    const pod = await start((_req, res) => {
      res.writeHead(307, { location: `${elsewhere.url}/steal`, 'content-type': 'text/plain' });
      res.end('moved, see elsewhere');
    });
    const e = await apiError(api().getState(pod.url, creds));
    assert.equal(e.code, DITTOFS_API_ERROR.REDIRECT);
    assert.equal(e.status, 307);
    assert.match(e.message, /307 redirect, not followed/);
    assert.doesNotMatch(e.message, /moved|steal/);
    assert.equal(elsewhere.requests.length, 0, 'nothing reached the redirect target');
  });

  it('a success answer larger than the bound is not read to its end', async () => {
    let sent = 0;
    const pod = await start((req, res) => {
      if (req.path === '/api/v1/auth/login') return answerLogin(req, res, PASSWORD);
      // 64 MiB of a valid JSON string, without a content-length: only reading it tells its size.
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = 'x'.repeat(1024 * 1024);
      res.write('"');
      const more = (): void => {
        while (sent < 64) {
          sent++;
          if (!res.write(chunk)) return void res.once('drain', more);
        }
        res.end('"');
      };
      res.on('error', () => undefined);
      more();
    });
    const e = await apiError(api().getState(pod.url, creds));
    assert.equal(e.code, DITTOFS_API_ERROR.TOO_LARGE);
    assert.match(e.message, new RegExp(`larger than ${MAX_ANSWER_BYTES / 1024} KiB`));
    assert.ok(sent < 64, `the pod sent ${sent} MiB`);
  });

  it('an error answer that declares a large length is not read at all', async () => {
    const pod = await start((_req, res) => {
      res.writeHead(500, { 'content-type': 'text/plain', 'content-length': String(400 * 1024 * 1024) });
      res.write('x'.repeat(1024));
      res.on('error', () => undefined);
    });
    const e = await apiError(api().getState(pod.url, creds));
    assert.equal(e.code, DITTOFS_API_ERROR.TOO_LARGE);
    assert.equal(e.status, 500);
  });

  it('an error that is not a problem document: its status and content type, never its body', async () => {
    const pod = await start((_req, res) => {
      res.writeHead(502, { 'content-type': 'text/html' });
      res.end('<html>internal page: db password is hunter2</html>');
    });
    const e = await apiError(api().getState(pod.url, creds));
    assert.equal(e.code, DITTOFS_API_ERROR.API);
    assert.match(e.message, /: 502 \(text\/html, not a problem document\)$/);
    assert.doesNotMatch(e.message, /hunter2|internal page/);
  });

  it('a success answer that is not JSON: no quote of it either', async () => {
    const pod = await start((req, res) => {
      if (req.path === '/api/v1/auth/login') return answerLogin(req, res, PASSWORD);
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('hunter2 is not json');
    });
    const e = await apiError(api().getState(pod.url, creds));
    assert.equal(e.code, DITTOFS_API_ERROR.BAD_ANSWER);
    assert.doesNotMatch(e.message, /hunter2/);
  });

  it('a problem document is still quoted (detail and item), and a good answer read', async () => {
    const pod = await start((req, res) => {
      if (req.path === '/api/v1/auth/login') return answerLogin(req, res, PASSWORD);
      if (req.method === 'GET') return sendJson(res, 200, EMPTY_STATE);
      sendJson(
        res,
        422,
        { type: 'about:blank', title: 'x', status: 422, detail: 'no such store', item: 'shares["/a"]' },
        'application/problem+json',
      );
    });
    assert.deepEqual(await api().getState(pod.url, creds), EMPTY_STATE);
    const e = await apiError(api().putState(pod.url, creds, {}));
    assert.match(e.message, /: 422 no such store \(shares\["\/a"\]\)$/);
    assert.equal(e.item, 'shares["/a"]');
  });
});
