// The operator's Kubernetes REST client: JSON in, JSON out, over node:https with the cluster
// address and credentials of a @kubernetes/client-node KubeConfig (kubeconfig file, in-cluster
// service account, exec and OIDC plugins: all applied by KubeConfig.applyToHTTPSOptions).
//
// Why not the generated API classes of client-node 0.20: they ride on the deprecated `request`
// library, deserialize into classes with Date fields that do not round-trip (a Lease's MicroTime),
// and their watch hides the connection. Here every call says its content type (server-side apply,
// merge patch), every failure is a KubeApiError with the HTTP status and the apiserver's reason,
// and a watch is a stream whose connection the caller owns (informer.ts).
import http from 'node:http';
import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { FIELD_MANAGER } from '../api/types.js';

export const KUBE_ERROR = Object.freeze({
  API: 'KUBE_API_ERROR',
  NETWORK: 'KUBE_NETWORK_ERROR',
  TIMEOUT: 'KUBE_TIMEOUT',
} as const);

/** The apiserver answered with an error status (a metav1.Status body when it is the apiserver). */
export class KubeApiError extends Error {
  override readonly name = 'KubeApiError';
  readonly code = KUBE_ERROR.API;
  constructor(
    readonly status: number,
    /** metav1.Status reason: NotFound, AlreadyExists, Conflict, Invalid, Forbidden, Gone, ... */
    readonly reason: string,
    message: string,
    readonly method: string,
    readonly path: string,
  ) {
    super(`${method} ${path}: ${status} ${reason}: ${message}`);
  }
}

/** The request never got an answer (connection refused or reset, DNS, TLS) or took too long. */
export class KubeNetworkError extends Error {
  override readonly name = 'KubeNetworkError';
  constructor(
    readonly code: typeof KUBE_ERROR.NETWORK | typeof KUBE_ERROR.TIMEOUT,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export const isNotFound = (e: unknown): boolean => e instanceof KubeApiError && e.status === 404;
export const isConflict = (e: unknown): boolean => e instanceof KubeApiError && e.status === 409;
export const isAlreadyExists = (e: unknown): boolean => e instanceof KubeApiError && e.status === 409 && e.reason === 'AlreadyExists';

export interface ResourceRef {
  /** '' for the core group (/api/v1). */
  group: string;
  version: string;
  plural: string;
  namespace?: string;
  name?: string;
  subresource?: string;
}

/** `/api/v1/namespaces/ns/secrets/name`, `/apis/apps/v1/statefulsets`, ... */
export function resourcePath(r: ResourceRef): string {
  const parts = [r.group === '' ? `/api/${r.version}` : `/apis/${r.group}/${r.version}`];
  if (r.namespace !== undefined && r.namespace !== '') parts.push('namespaces', encodeURIComponent(r.namespace));
  parts.push(r.plural);
  if (r.name !== undefined) parts.push(encodeURIComponent(r.name));
  if (r.subresource !== undefined) parts.push(r.subresource);
  return parts.join('/');
}

export type Query = Record<string, string | number | boolean | undefined>;

function withQuery(path: string, query: Query | undefined): string {
  if (query === undefined) return path;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined) q.set(k, String(v));
  const s = q.toString();
  return s === '' ? path : `${path}?${s}`;
}

export interface RequestOptions {
  query?: Query;
  body?: unknown;
  contentType?: string;
  /** Whole-request bound (default 30 s). */
  timeoutMs?: number;
}

export interface ListResult<T> {
  items: T[];
  resourceVersion: string;
}

export interface StreamHandle {
  /** Destroys the connection (the stream then ends with an error). */
  abort(reason?: Error): void;
  /** Resolves when the stream ended: undefined for a clean end, or the error. */
  done: Promise<Error | undefined>;
}

const APPLY_PATCH = 'application/apply-patch+yaml';
const MERGE_PATCH = 'application/merge-patch+json';

export class KubeClient {
  private readonly agent: { http: http.Agent; https: https.Agent };

  constructor(readonly kubeConfig: KubeConfig) {
    this.agent = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };
  }

  /** The apiserver URL of the current context. */
  get server(): string {
    const c = this.kubeConfig.getCurrentCluster();
    if (c === null) throw new KubeNetworkError(KUBE_ERROR.NETWORK, 'the kubeconfig has no current cluster');
    return c.server.replace(/\/+$/, '');
  }

  /** Connection options for one request: TLS material and the Authorization header. */
  private async connectOptions(method: string, url: URL, extraHeaders: Record<string, string>): Promise<https.RequestOptions> {
    const opts: https.RequestOptions = { method, headers: { accept: 'application/json', ...extraHeaders } };
    await this.kubeConfig.applyToHTTPSOptions(opts);
    opts.protocol = url.protocol;
    opts.hostname = url.hostname.replace(/^\[|\]$/g, '');
    opts.port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
    opts.path = `${url.pathname}${url.search}`;
    return opts;
  }

  async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const url = new URL(`${this.server}${withQuery(path, opts.query)}`);
    const payload = opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body));
    const headers: Record<string, string> = {};
    if (payload !== undefined) {
      headers['content-type'] = opts.contentType ?? 'application/json';
      headers['content-length'] = String(payload.length);
    }
    const ro = await this.connectOptions(method, url, headers);
    const isHttps = url.protocol === 'https:';
    ro.agent = isHttps ? this.agent.https : this.agent.http;
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = (isHttps ? https : http).request(ro, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', (e) => reject(new KubeNetworkError(KUBE_ERROR.NETWORK, `${method} ${path}: ${e.message}`, { cause: e })));
      });
      req.setTimeout(timeoutMs, () =>
        req.destroy(new KubeNetworkError(KUBE_ERROR.TIMEOUT, `${method} ${path}: no answer within ${timeoutMs} ms`)),
      );
      req.on('error', (e) =>
        reject(
          e instanceof KubeNetworkError ? e : new KubeNetworkError(KUBE_ERROR.NETWORK, `${method} ${path}: ${e.message}`, { cause: e }),
        ),
      );
      req.end(payload);
    });
    if (status >= 200 && status < 300) return (text === '' ? undefined : JSON.parse(text)) as T;
    let reason = http.STATUS_CODES[status] ?? 'Error';
    let message = text.slice(0, 2000);
    try {
      const s = JSON.parse(text) as { kind?: string; reason?: string; message?: string };
      if (s.kind === 'Status') {
        reason = s.reason ?? reason;
        message = s.message ?? message;
      }
    } catch {
      // not JSON: keep the text
    }
    throw new KubeApiError(status, reason, message, method, path);
  }

  /** GET; undefined when the object does not exist. */
  async get<T>(path: string): Promise<T | undefined> {
    try {
      return await this.request<T>('GET', path);
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /** Every page of a list (limit/continue). */
  async list<T>(path: string, query: Query = {}): Promise<ListResult<T>> {
    const items: T[] = [];
    let cont: string | undefined;
    for (;;) {
      const page = await this.request<{ items?: T[]; metadata?: { resourceVersion?: string; continue?: string } }>('GET', path, {
        query: { ...query, limit: 500, continue: cont },
      });
      items.push(...(page.items ?? []));
      cont = page.metadata?.continue;
      if (cont === undefined || cont === '') return { items, resourceVersion: page.metadata?.resourceVersion ?? '' };
    }
  }

  create<T>(path: string, obj: unknown): Promise<T> {
    return this.request<T>('POST', path, { body: obj, query: { fieldManager: FIELD_MANAGER } });
  }

  /** Server-side apply of a whole object this operator owns (force: it is the owner of these fields). */
  apply<T>(path: string, obj: object): Promise<T> {
    return this.request<T>('PATCH', path, { body: obj, contentType: APPLY_PATCH, query: { fieldManager: FIELD_MANAGER, force: true } });
  }

  /** JSON merge patch (RFC 7386); put metadata.resourceVersion in it for optimistic concurrency. */
  mergePatch<T>(path: string, patch: unknown): Promise<T> {
    return this.request<T>('PATCH', path, { body: patch, contentType: MERGE_PATCH, query: { fieldManager: FIELD_MANAGER } });
  }

  replace<T>(path: string, obj: unknown): Promise<T> {
    return this.request<T>('PUT', path, { body: obj, query: { fieldManager: FIELD_MANAGER } });
  }

  /**
   * A watch stream: `onLine` gets each newline-delimited JSON event. A non-200 answer ends it with
   * a KubeApiError; `idleTimeoutMs` without a byte (the apiserver sends bookmarks) ends it with a
   * timeout, so a half-open connection cannot stall an informer.
   */
  async stream(path: string, query: Query, onLine: (line: string) => void, idleTimeoutMs: number): Promise<StreamHandle> {
    const url = new URL(`${this.server}${withQuery(path, query)}`);
    const ro = await this.connectOptions('GET', url, {});
    const isHttps = url.protocol === 'https:';
    let req: http.ClientRequest | undefined;
    let finish!: (e: Error | undefined) => void;
    const done = new Promise<Error | undefined>((resolve) => {
      let settled = false;
      finish = (e) => {
        if (settled) return;
        settled = true;
        resolve(e);
      };
    });
    req = (isHttps ? https : http).request(ro, (res) => {
      if (res.statusCode !== 200) {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let reason = http.STATUS_CODES[res.statusCode ?? 0] ?? 'Error';
          let message = text.slice(0, 1000);
          try {
            const s = JSON.parse(text) as { reason?: string; message?: string };
            reason = s.reason ?? reason;
            message = s.message ?? message;
          } catch {
            // keep the text
          }
          finish(new KubeApiError(res.statusCode ?? 0, reason, message, 'GET', path));
        });
        res.on('error', (e) => finish(e));
        return;
      }
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line !== '') onLine(line);
        }
      });
      res.on('end', () => finish(undefined));
      res.on('error', (e) => finish(e));
      res.on('close', () =>
        finish(res.complete ? undefined : new KubeNetworkError(KUBE_ERROR.NETWORK, `watch ${path}: connection closed`)),
      );
    });
    req.setTimeout(idleTimeoutMs, () =>
      req?.destroy(new KubeNetworkError(KUBE_ERROR.TIMEOUT, `watch ${path}: nothing received for ${idleTimeoutMs} ms`)),
    );
    req.on('error', (e) => finish(e));
    req.on('close', () => finish(new KubeNetworkError(KUBE_ERROR.NETWORK, `watch ${path}: connection closed`)));
    req.end();
    return {
      abort: (reason) => {
        req?.destroy(reason ?? new KubeNetworkError(KUBE_ERROR.NETWORK, `watch ${path}: aborted`));
        req = undefined;
      },
      done,
    };
  }

  close(): void {
    this.agent.http.destroy();
    this.agent.https.destroy();
  }
}
