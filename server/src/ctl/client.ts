// The HTTP client of the control API: JSON in and out, a bearer token, RFC 7807 errors turned into
// ApiError, and one transparent refresh: when a call answers 401 and a refresh token is at hand,
// the client trades it for a new pair (POST /auth/refresh), hands the pair to `onTokens` to be
// saved, and repeats the call once.
import { CTL_ERROR, CtlError, ApiError, type Problem } from './errors.js';
import { CTL_VERSION } from './version.js';
import { BodyTooLargeError, httpFetch, type FetchLike } from './http.js';

export const API_PREFIX = '/api/v1';
export const DEFAULT_TIMEOUT_MS = 30_000;

export interface TokenPair {
  access_token: string;
  refresh_token: string;
  token_type: string;
  expires_in: number;
  must_change_password: boolean;
}

export interface ClientOptions {
  /** Base URL without /api/v1. */
  server: string;
  accessToken?: string;
  refreshToken?: string;
  /** Saves a refreshed token pair; the request waits for it. */
  onTokens?: (tokens: TokenPair) => Promise<void>;
  /** Default httpFetch (node:http: any port, where the global fetch refuses the Fetch standard's "bad ports"). */
  fetch?: FetchLike;
  timeoutMs?: number;
}

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

interface RequestOptions {
  /** Send the bearer token and refresh on 401 (default true). */
  auth?: boolean;
}

/** `/shares/%2Fexport`: each argument encoded as one path segment. */
export function apiPath(strings: TemplateStringsArray, ...values: (string | number)[]): string {
  return strings.reduce((acc, s, i) => acc + s + (i < values.length ? encodeURIComponent(String(values[i])) : ''), '');
}

function connectionCause(e: unknown): string {
  const err = e as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (err.name === 'TimeoutError' || err.name === 'AbortError') return 'no answer in time';
  const cause = err.cause;
  if (cause?.code !== undefined) return cause.message !== undefined && cause.message !== '' ? cause.message : cause.code;
  return cause?.message ?? err.message ?? String(e);
}

export class ApiClient {
  readonly server: string;
  private accessToken: string | undefined;
  private refreshToken: string | undefined;
  private readonly onTokens: ((tokens: TokenPair) => Promise<void>) | undefined;
  private readonly fetchFn: FetchLike;
  private readonly timeoutMs: number;

  constructor(opts: ClientOptions) {
    this.server = opts.server.replace(/\/+$/, '');
    this.accessToken = opts.accessToken;
    this.refreshToken = opts.refreshToken;
    this.onTokens = opts.onTokens;
    this.fetchFn = opts.fetch ?? httpFetch;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  get hasCredentials(): boolean {
    return this.accessToken !== undefined || this.refreshToken !== undefined;
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }
  post<T>(path: string, body?: unknown, opts?: RequestOptions): Promise<T> {
    return this.request<T>('POST', path, body, opts);
  }
  put<T>(path: string, body?: unknown): Promise<T> {
    return this.request<T>('PUT', path, body);
  }
  patch<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>('PATCH', path, body);
  }
  delete(path: string): Promise<void> {
    return this.request<void>('DELETE', path);
  }

  async request<T>(method: HttpMethod, path: string, body?: unknown, opts: RequestOptions = {}): Promise<T> {
    const auth = opts.auth ?? true;
    try {
      return await this.send<T>(method, path, body, auth);
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 401 || !auth || this.refreshToken === undefined) throw e;
      if (!(await this.refresh())) throw e;
      return this.send<T>(method, path, body, auth);
    }
  }

  /** Trades the refresh token for a new pair; false when the server refuses it. */
  private async refresh(): Promise<boolean> {
    let pair: TokenPair;
    try {
      pair = await this.send<TokenPair>('POST', '/auth/refresh', { refresh_token: this.refreshToken }, false);
    } catch (e) {
      if (e instanceof ApiError && (e.status === 401 || e.status === 400)) return false;
      throw e;
    }
    this.accessToken = pair.access_token;
    this.refreshToken = pair.refresh_token;
    if (this.onTokens !== undefined) await this.onTokens(pair);
    return true;
  }

  private async send<T>(method: HttpMethod, path: string, body: unknown, auth: boolean): Promise<T> {
    const headers: Record<string, string> = {
      accept: 'application/json, application/problem+json',
      'user-agent': `dittofsctl/${CTL_VERSION}`,
    };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (auth && this.accessToken !== undefined) headers.authorization = `Bearer ${this.accessToken}`;
    const url = `${this.server}${API_PREFIX}${path}`;
    let res: Response;
    let text: string;
    try {
      res = await this.fetchFn(url, {
        method,
        headers,
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        redirect: 'error',
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      text = await res.text();
    } catch (e) {
      const cause = (e as { cause?: unknown }).cause;
      if (cause instanceof BodyTooLargeError) {
        throw new CtlError(
          CTL_ERROR.CONNECTION,
          `${this.server} answered ${method} ${API_PREFIX}${path} with a body longer than ${cause.limit / (1024 * 1024)} MiB, the most dittofsctl reads`,
          'is this the address of a DittoFS API? (the API port, 8080 by default)',
        );
      }
      throw new CtlError(
        CTL_ERROR.CONNECTION,
        `cannot reach ${this.server}: ${connectionCause(e)}`,
        'check the address (--server) and that the server runs',
      );
    }
    if (res.status >= 300 && res.status < 400) {
      // Never followed: it could take the password or token anywhere.
      const to = res.headers.get('location');
      throw new CtlError(
        CTL_ERROR.CONNECTION,
        `${this.server} answered ${method} ${API_PREFIX}${path} with a redirect (HTTP ${res.status}${to === null ? '' : ` to ${to.slice(0, 200)}`}), which is not followed`,
        'give the address of the API itself as --server',
      );
    }
    const parsed = parseJson(text);
    if (!res.ok) throw new ApiError(res.status, problemOf(res, parsed));
    if (res.status === 204 || text.trim() === '') return undefined as T;
    if (parsed === undefined) {
      throw new CtlError(
        CTL_ERROR.CONNECTION,
        `${this.server} answered ${method} ${API_PREFIX}${path} with something that is not JSON (HTTP ${res.status})`,
        'is this the address of a DittoFS API? (the API port, 8080 by default)',
      );
    }
    return parsed as T;
  }
}

function parseJson(text: string): unknown {
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function problemOf(res: Response, body: unknown): Problem {
  if (typeof body === 'object' && body !== null && !Array.isArray(body)) {
    const b = body as Record<string, unknown>;
    const str = (k: string): string | undefined => (typeof b[k] === 'string' ? b[k] : undefined);
    const detail = str('detail') ?? str('message') ?? str('error');
    const p: Problem = { status: res.status };
    const type = str('type');
    const title = str('title');
    if (type !== undefined) p.type = type;
    if (title !== undefined) p.title = title;
    if (detail !== undefined) p.detail = detail;
    return p;
  }
  return { status: res.status, title: res.statusText !== '' ? res.statusText : `HTTP ${res.status}` };
}
