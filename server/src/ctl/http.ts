// The HTTP requests of dittofsctl and of `dittofs status` / `start -d`, on node:http(s) rather than
// the global fetch. Node's fetch follows the Fetch standard written for browsers, which refuses to
// connect to a list of "bad ports" (1, 7, 9, ..., 2049, 6000, 6665-6669, 10080, ...) with nothing
// more than "bad port": a server whose API listens on one of them (the server accepts any port)
// could not be reached, named or checked by its own tools. These requests go to the address the
// user gave, not to what a web page asked for, so that guard does not apply.
//
// The answer is a standard Response, and failures are what fetch throws (a TypeError "fetch failed"
// whose cause is the socket error; the signal's reason when it aborts), so callers handle both alike.
// Redirects are never followed: the 3xx answer is returned as it is. A body longer than
// MAX_BODY_BYTES is not read: the request fails (BodyTooLargeError), as soon as the header or the
// bytes received say so.
import http from 'node:http';
import https from 'node:https';

export interface HttpRequestInit {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
  /** Ignored: redirects are never followed (accepted so that fetch and this share a type). */
  redirect?: 'follow' | 'error' | 'manual';
}

/** What the API client and the readiness probe call: httpFetch, or a fake in tests (fetch fits too). */
export type FetchLike = (url: string, init: HttpRequestInit) => Promise<Response>;

/**
 * The longest body read (32 MiB). The API's largest answers are lists (users, shares, grants), a
 * few hundred bytes an entry: this is room for some hundred thousand. More is a server that is not
 * the API, or a broken one, and must not fill this process's memory.
 */
export const MAX_BODY_BYTES = 32 * 1024 * 1024;

/** The cause of the failure of a request whose answer's body is longer than MAX_BODY_BYTES. */
export class BodyTooLargeError extends Error {
  override readonly name = 'BodyTooLargeError';
  readonly code = 'DITTOFS_BODY_TOO_LARGE';
  constructor(readonly limit: number) {
    super(`the answer's body is longer than ${limit / (1024 * 1024)} MiB, the most read`);
  }
}

/** Statuses whose Response must have no body. */
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

export function httpFetch(url: string, init: HttpRequestInit = {}): Promise<Response> {
  return new Promise<Response>((resolve, reject) => {
    let target: URL;
    try {
      target = new URL(url);
    } catch (err) {
      reject(new TypeError(`invalid URL ${JSON.stringify(url)}`, { cause: err }));
      return;
    }
    if (target.protocol !== 'http:' && target.protocol !== 'https:') {
      reject(new TypeError('fetch failed', { cause: new Error(`unsupported protocol ${target.protocol} (http: or https:)`) }));
      return;
    }
    const signal = init.signal;
    // What fetch rejects with when its signal aborts: the signal's reason (a TimeoutError).
    const aborted = (): Error =>
      signal?.reason instanceof Error ? signal.reason : new DOMException('This operation was aborted', 'AbortError');
    if (signal?.aborted === true) {
      reject(aborted());
      return;
    }
    const body = init.body === undefined ? undefined : Buffer.from(init.body, 'utf8');
    const headers: Record<string, string> = { ...(init.headers ?? {}) };
    if (body !== undefined) headers['content-length'] = String(body.length);
    const send = target.protocol === 'https:' ? https.request : http.request;
    let settled = false;
    const fail = (err: Error): void => {
      if (settled) return;
      settled = true;
      reject(err);
    };
    const tooLarge = (): void => {
      signal?.removeEventListener('abort', onAbort);
      fail(new TypeError('fetch failed', { cause: new BodyTooLargeError(MAX_BODY_BYTES) }));
      req.destroy();
    };
    const req = send(target, { method: init.method ?? 'GET', headers }, (res) => {
      const declared = Number(res.headers['content-length'] ?? 0);
      if (declared > MAX_BODY_BYTES) return tooLarge();
      const chunks: Buffer[] = [];
      let received = 0;
      res.on('data', (c: Buffer) => {
        if (settled) return;
        received += c.length;
        if (received > MAX_BODY_BYTES) return tooLarge();
        chunks.push(c);
      });
      res.on('error', (err) => fail(new TypeError('fetch failed', { cause: err })));
      res.on('end', () => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        const status = res.statusCode ?? 502;
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) {
          if (v === undefined) continue;
          for (const one of Array.isArray(v) ? v : [v]) h.append(k, one);
        }
        const payload = NULL_BODY.has(status) ? null : Buffer.concat(chunks);
        try {
          // Response takes 200-599 only: anything else is no HTTP answer a client can use.
          resolve(new Response(payload, { status, statusText: res.statusMessage ?? '', headers: h }));
        } catch (err) {
          reject(new TypeError('fetch failed', { cause: err }));
        }
      });
    });
    const onAbort = (): void => {
      fail(aborted());
      req.destroy();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', (err) => {
      signal?.removeEventListener('abort', onAbort);
      fail(new TypeError('fetch failed', { cause: err }));
    });
    req.end(body);
  });
}
