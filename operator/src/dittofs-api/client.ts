// A client of one or more DittoFS control-plane APIs (one per server pod), logged in as the
// bootstrap `admin` with the operator's admin Secret.
//
// The admin credential, and why the operator cannot lock itself out:
// - The DittoFS reconciler creates the Secret `<name>-admin` once, with two random passwords:
//   `initial-password` and `password`. Neither is ever regenerated while the Secret exists.
// - Pods get `initial-password` as DITTOFS_ADMIN_INITIAL_PASSWORD. A server creates `admin` with it
//   on its first start (empty control database), flagged must-change-password.
// - The operator logs in with `password`. Refused (401), it logs in with `initial-password`
//   instead and, accepted, changes the admin password to `password` (POST
//   /api/v1/users/me/password), then logs in with `password`.
// - Both passwords are in the Secret before the first login, so there is no moment at which the
//   server holds a password the Secret does not: an operator or pod restart at any step, even
//   between the change and the next login, finds one of the two accepted. A pod whose database was
//   lost starts over with `initial-password`, and the operator changes it again.
// - Locked out only if someone changes the admin password by hand or edits the Secret's keys:
//   then the Synced condition says AdminLoginFailed (see operator/README.md for the way back).
import type { Logger } from '../log.js';
import type { ApplyStateResult, CurrentState, DesiredState, Problem, TokenReply } from './types.js';
import { errorMessage } from '../error-message.js';

export const DITTOFS_API_ERROR = Object.freeze({
  /** The server answered with an error (see status, problem). */
  API: 'DITTOFS_API_ERROR',
  /** No answer: connection refused, reset, timeout, DNS. */
  UNREACHABLE: 'DITTOFS_UNREACHABLE',
  /** Neither admin password of the Secret is accepted. */
  LOGIN_FAILED: 'DITTOFS_ADMIN_LOGIN_FAILED',
  /** The server answered with a redirect: never followed (it could send the admin password anywhere). */
  REDIRECT: 'DITTOFS_API_REDIRECT',
  /** The answer is larger than the client reads (MAX_ANSWER_BYTES, MAX_ERROR_BYTES). */
  TOO_LARGE: 'DITTOFS_API_ANSWER_TOO_LARGE',
  /** A success answer that is not the JSON the API defines. */
  BAD_ANSWER: 'DITTOFS_API_BAD_ANSWER',
} as const);
export type DittofsApiErrorCode = (typeof DITTOFS_API_ERROR)[keyof typeof DITTOFS_API_ERROR];

export class DittofsApiError extends Error {
  override readonly name = 'DittofsApiError';
  constructor(
    readonly code: DittofsApiErrorCode,
    message: string,
    readonly status?: number,
    readonly problem?: Problem,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** The desired-state item the server refused (`shares["/x"]`), if it named one. */
  get item(): string | undefined {
    return this.problem?.item;
  }
}

export interface AdminCredentials {
  username: string;
  /** What the operator logs in with. */
  password: string;
  /** The pods' DITTOFS_ADMIN_INITIAL_PASSWORD, tried when `password` is refused. */
  initialPassword?: string;
}

export interface DittofsApiClientOptions {
  log: Logger;
  /** Per request (default 30 s: a first PUT of S3 stores checks the buckets). */
  timeoutMs?: number;
}

interface Session {
  token: string;
  expiresAt: number;
  /** The password the token was obtained with: a changed Secret means a new login. */
  password: string;
}

export class DittofsApiClient {
  private readonly sessions = new Map<string, Session>();
  private readonly log: Logger;
  private readonly timeoutMs: number;

  constructor(opts: DittofsApiClientOptions) {
    this.log = opts.log;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
  }

  /** PUT /api/v1/state: converge the server to `state`. */
  putState(baseUrl: string, creds: AdminCredentials, state: DesiredState): Promise<ApplyStateResult> {
    return this.authed<ApplyStateResult>(baseUrl, creds, 'PUT', '/api/v1/state', state);
  }

  /** GET /api/v1/state: what the server has (no passwords; store secrets as ****). */
  getState(baseUrl: string, creds: AdminCredentials): Promise<CurrentState> {
    return this.authed<CurrentState>(baseUrl, creds, 'GET', '/api/v1/state');
  }

  /**
   * The control-plane generation this server applied (GET /api/v1/state, header
   * dittofs-applied-generation); undefined when it does not say (a server without coordination).
   */
  async appliedGeneration(baseUrl: string, creds: AdminCredentials): Promise<number | undefined> {
    const seen: { header?: string | null } = {};
    await this.authed<CurrentState>(baseUrl, creds, 'GET', '/api/v1/state', undefined, (h) => {
      seen.header = h.get(APPLIED_GENERATION_HEADER);
    });
    const n = seen.header === undefined || seen.header === null || seen.header === '' ? NaN : Number(seen.header);
    return Number.isSafeInteger(n) ? n : undefined;
  }

  /** Forgets the sessions of one server (or of all). */
  forget(baseUrl?: string): void {
    if (baseUrl === undefined) this.sessions.clear();
    else this.sessions.delete(trimSlash(baseUrl));
  }

  private async authed<T>(
    baseUrl: string,
    creds: AdminCredentials,
    method: string,
    path: string,
    body?: unknown,
    onHeaders?: (h: Headers) => void,
  ): Promise<T> {
    const base = trimSlash(baseUrl);
    for (let attempt = 0; ; attempt++) {
      const token = await this.session(base, creds);
      try {
        return await this.http<T>(base, method, path, body, token, onHeaders);
      } catch (e) {
        // A revoked or expired token (a password change, a restore): log in again, once.
        if (attempt === 0 && e instanceof DittofsApiError && e.status === 401) {
          this.sessions.delete(base);
          continue;
        }
        throw e;
      }
    }
  }

  private async session(base: string, creds: AdminCredentials): Promise<string> {
    const s = this.sessions.get(base);
    if (s !== undefined && s.password === creds.password && s.expiresAt > Date.now()) return s.token;
    this.sessions.delete(base);
    const t = await this.adminLogin(base, creds);
    // Renew a minute before the access token expires.
    this.sessions.set(base, {
      token: t.access_token,
      expiresAt: Date.now() + Math.max(0, t.expires_in - 60) * 1000,
      password: creds.password,
    });
    return t.access_token;
  }

  /** The login protocol described at the top of this file. */
  private async adminLogin(base: string, creds: AdminCredentials): Promise<TokenReply> {
    const first = await this.login(base, creds.username, creds.password);
    if (first !== undefined) {
      if (first.must_change_password) {
        throw new DittofsApiError(
          DITTOFS_API_ERROR.LOGIN_FAILED,
          `${base}: the server wants the ${creds.username} password changed, but it is already the one in the admin Secret; someone reset it by hand`,
          403,
        );
      }
      return first;
    }
    const initial = creds.initialPassword;
    const refused = `${base}: the server refuses the ${creds.username} password of the admin Secret`;
    if (initial === undefined || initial === '' || initial === creds.password)
      throw new DittofsApiError(DITTOFS_API_ERROR.LOGIN_FAILED, refused, 401);
    const boot = await this.login(base, creds.username, initial);
    if (boot === undefined) {
      throw new DittofsApiError(
        DITTOFS_API_ERROR.LOGIN_FAILED,
        `${refused}, and its initial-password too (was the admin password changed by hand?)`,
        401,
      );
    }
    await this.http<void>(
      base,
      'POST',
      '/api/v1/users/me/password',
      { current_password: initial, new_password: creds.password },
      boot.access_token,
    );
    this.log.info('set the server admin password from the admin Secret (first login)', { server: base });
    const after = await this.login(base, creds.username, creds.password);
    if (after === undefined) throw new DittofsApiError(DITTOFS_API_ERROR.LOGIN_FAILED, `${refused} right after setting it`, 401);
    return after;
  }

  /** POST /api/v1/auth/login; undefined when the password is refused (401). */
  private async login(base: string, username: string, password: string): Promise<TokenReply | undefined> {
    try {
      return await this.http<TokenReply>(base, 'POST', '/api/v1/auth/login', { username, password });
    } catch (e) {
      if (e instanceof DittofsApiError && e.status === 401) return undefined;
      throw e;
    }
  }

  private async http<T>(
    base: string,
    method: string,
    path: string,
    body: unknown,
    token?: string,
    onHeaders?: (h: Headers) => void,
  ): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json, application/problem+json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    const what = `${method} ${base}${path}`;
    let res: Response;
    try {
      res = await fetch(`${base}${path}`, {
        method,
        headers,
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        // A pod runs whatever image its DittoFS names: a redirect could take the admin login (and
        // its password) to any address the operator can reach. Never followed.
        redirect: 'manual',
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (e) {
      throw new DittofsApiError(DITTOFS_API_ERROR.UNREACHABLE, `${what}: ${why(e)}`, undefined, undefined, { cause: e });
    }
    const contentType = (res.headers.get('content-type') ?? 'no content type').slice(0, 100);
    if (res.status >= 300 && res.status < 400) {
      await res.body?.cancel().catch(() => undefined);
      throw new DittofsApiError(DITTOFS_API_ERROR.REDIRECT, `${what}: ${res.status} redirect, not followed`, res.status);
    }
    const limit = res.ok ? MAX_ANSWER_BYTES : MAX_ERROR_BYTES;
    let text: string | undefined;
    try {
      text = await readBounded(res, limit);
    } catch (e) {
      throw new DittofsApiError(
        DITTOFS_API_ERROR.UNREACHABLE,
        `${what}: ${res.status}, then reading the answer: ${why(e)}`,
        res.status,
        undefined,
        {
          cause: e,
        },
      );
    }
    if (text === undefined) {
      throw new DittofsApiError(
        DITTOFS_API_ERROR.TOO_LARGE,
        `${what}: ${res.status} answer (${contentType}) larger than ${limit / 1024} KiB, not read`,
        res.status,
      );
    }
    if (res.ok) {
      let parsed: unknown;
      try {
        parsed = text === '' ? undefined : JSON.parse(text);
      } catch {
        // Not JSON.parse's message: it quotes the text.
        throw new DittofsApiError(DITTOFS_API_ERROR.BAD_ANSWER, `${what}: ${res.status} answer (${contentType}) is not JSON`, res.status);
      }
      onHeaders?.(res.headers);
      return parsed as T;
    }
    let problem: Problem | undefined;
    try {
      const p = JSON.parse(text) as Partial<Problem>;
      if (typeof p.detail === 'string') problem = p as Problem;
    } catch {
      // not a problem document
    }
    // Only a problem document's detail is quoted: any other body (a proxy's page, whatever a pod
    // answers) is the pod's to say, not something to copy into a status for others to read.
    const detail =
      problem === undefined
        ? `(${contentType}, not a problem document)`
        : `${problem.detail}${problem.item === undefined ? '' : ` (${problem.item})`}`;
    throw new DittofsApiError(DITTOFS_API_ERROR.API, `${what}: ${res.status} ${detail}`, res.status, problem);
  }
}

/**
 * The most of a success answer read: the largest is GET /api/v1/state, which holds the users,
 * groups and shares made with dittofsctl too, not only what the operator PUTs (up to 1 MiB): room
 * for some hundred thousand users, and still a bound on what a pod can make the operator hold.
 */
export const MAX_ANSWER_BYTES = 32 * 1024 * 1024;
/** The most of an error answer read: a problem document is a few hundred bytes. */
export const MAX_ERROR_BYTES = 64 * 1024;

/** The body as text, read as it comes; undefined, and the rest not read, when it is larger than `limit`. */
async function readBounded(res: Response, limit: number): Promise<string | undefined> {
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (res.body === null) return '';
  if (declared > limit) {
    await res.body.cancel().catch(() => undefined);
    return undefined;
  }
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => undefined);
      return undefined;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function why(e: unknown): string {
  const cause = (e as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? errorMessage(e);
}

/** The server's header (server/src/api/convergence.ts). */
export const APPLIED_GENERATION_HEADER = 'dittofs-applied-generation';

const trimSlash = (s: string): string => s.replace(/\/+$/, '');
