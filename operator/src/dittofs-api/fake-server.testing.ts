// A stand-in for a DittoFS pod's control-plane API, for unit tests of the client and the state
// reconciler: real HTTP on loopback, answers chosen by the test. (test/k8s/operator.test.ts runs
// the real server.) Not part of the build.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeRequest {
  method: string;
  path: string;
  body: string;
}

export type FakeHandler = (req: FakeRequest, res: http.ServerResponse) => void;

export interface FakeServer {
  url: string;
  requests: FakeRequest[];
  close(): Promise<void>;
}

export async function startFakeServer(handler: FakeHandler): Promise<FakeServer> {
  const requests: FakeRequest[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r = { method: req.method ?? '', path: req.url ?? '', body: Buffer.concat(chunks).toString('utf8') };
      requests.push(r);
      handler(r, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export function sendJson(res: http.ServerResponse, status: number, body: unknown, contentType = 'application/json'): void {
  res.writeHead(status, { 'content-type': contentType });
  res.end(JSON.stringify(body));
}

/** POST /api/v1/auth/login as a server whose admin has `password`: a token, or a 401 problem. */
export function answerLogin(req: FakeRequest, res: http.ServerResponse, password: string): void {
  const { password: given } = JSON.parse(req.body) as { password: string };
  if (given !== password) {
    sendJson(
      res,
      401,
      { type: 'about:blank', title: 'Unauthorized', status: 401, detail: 'wrong user name or password' },
      'application/problem+json',
    );
    return;
  }
  sendJson(res, 200, { access_token: 'token', refresh_token: 'r', token_type: 'Bearer', expires_in: 3600, must_change_password: false });
}

export const EMPTY_STATE = Object.freeze({ metadata_stores: [], block_stores: [], shares: [], users: [], groups: [] });
