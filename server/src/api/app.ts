// The control-plane REST API: a Fastify instance with JSON-schema-validated bodies (unknown fields
// are errors), RFC 7807 errors, JWT authentication, role checks, rate limits and an OpenAPI
// document. buildApi() returns it without listening; the server decides where.
//
// Request lifecycle: onRequest -> rate limit (per verified user and token version, else per client
// address; login and password changes instead have their own stricter limits: per address, and per
// address and username, counted after the body is read) -> preParsing: authentication and authorization (so a request without a valid token
// gets 401 before its body is even parsed) -> body parsing and validation -> handler.
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import type { Socket } from 'node:net';
import Fastify, { LogController, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { DEFAULT_BCRYPT_COST, TokenService, checkBcryptCost } from '../control/auth.js';
import type { ControlStore } from '../control/store.js';
import type { ApiContext, App, Principal, RateLimitRule } from './context.js';
import { ConnectionLimits, type ConnectionGuard } from '../wire/limits.js';
import { bucket } from './limits.js';
import { trustedProxy, type TrustProxySetting } from '../config/trust-proxy.js';
import { ApiProblem, PROBLEM_CONTENT_TYPE, failedForGood, problemBody, toProblem } from './problem.js';
import { adapterRoutes } from './routes/adapters.js';
import { authRoutes } from './routes/auth.js';
import { groupRoutes } from './routes/groups.js';
import { healthRoutes } from './routes/health.js';
import { settingRoutes } from './routes/settings.js';
import { shareRoutes } from './routes/shares.js';
import { stateRoutes } from './routes/state.js';
import { storeRoutes } from './routes/stores.js';
import { userRoutes } from './routes/users.js';
import type { ApiRuntime } from './runtime.js';

export const API_PREFIX = '/api/v1';

export interface ApiAuthOptions {
  /** HS256 key, at least 32 characters; every server behind one API address needs the same. */
  jwtSecret: string;
  /** Default 10 (the minimum). */
  bcryptCost?: number;
  /** Default 900 (15 minutes). */
  accessTtlSeconds?: number;
  /** Default 604800 (7 days). */
  refreshTtlSeconds?: number;
}

export interface ApiRateLimitOptions {
  /** Requests per window per user (or per client address without a valid token). Default 600. */
  max?: number;
  /** Default 60000. */
  timeWindowMs?: number;
  /** Login and password-change attempts per window per client address and username. Default 10. */
  loginMax?: number;
  /** Login and password-change attempts per window per client address, any username. Default 60. */
  loginAddressMax?: number;
  /** Default 60000. */
  loginTimeWindowMs?: number;
}

export interface ApiOptions {
  store: ControlStore;
  auth: ApiAuthOptions;
  runtime: ApiRuntime;
  logger: Logger;
  rateLimit?: ApiRateLimitOptions;
  /** Largest request body in bytes (default 1 MiB: a desired state with thousands of users fits). */
  bodyLimit?: number;
  /**
   * Peers whose X-Forwarded-For names the client (behind an ingress): true (any), or their
   * addresses, CIDR ranges and presets (config/trust-proxy.ts). The client address is what the
   * rate limits count; a trusted peer's connections are not capped per address. Default false.
   */
  trustProxy?: TrustProxySetting;
  /** Version shown in the OpenAPI document. */
  version?: string;
  /** A request whose headers and body have not all arrived by then is answered 408 and closed (ms). */
  requestTimeoutMs?: number;
  /**
   * Connections at once. Past it a new one takes the place of the oldest that never made an
   * authenticated request (of the address holding most such), past a second's grace; else it is
   * closed at once.
   */
  maxConnections?: number;
  /** Connections from one peer address at once, likewise (0: no cap); a trusted proxy's are not capped. */
  maxConnectionsPerAddress?: number;
  /** The config section of these settings (`server.api`), named in refusals; absent: fixed limits. */
  settings?: string;
}

/**
 * Bodies of the routes anyone may call (login, refresh: a user name, a password, a token) are at
 * most this long: a client without a token makes the server hold no more than this per request.
 * The other routes check the token before they read a body (preParsing).
 */
export const PUBLIC_BODY_LIMIT = 16 * 1024;
/** Default of ApiOptions.requestTimeoutMs: a client that stalls mid-request holds nothing longer. */
export const API_REQUEST_TIMEOUT_MS = 30_000;
/** Default of ApiOptions.maxConnections. */
export const API_MAX_CONNECTIONS = 1024;
/** Default of ApiOptions.maxConnectionsPerAddress: as NFS and SMB have it; room for a proxy's keep-alive pool in front of every client. */
export const API_MAX_CONNECTIONS_PER_ADDRESS = 256;

/** The 404 of a request for a route that does not exist (the not-found handler, and preParsing before the body). */
const notFound = (req: FastifyRequest): ApiProblem =>
  new ApiProblem('not-found', `no such resource: ${req.method} ${req.url.split('?')[0]}`);

/** Log paths never written: tokens, passwords, secrets, wherever they appear in a logged object. */
export const REDACTED_LOG_PATHS = [
  'req.headers.authorization',
  'headers.authorization',
  'authorization',
  'password',
  'current_password',
  'new_password',
  'password_hash',
  'nt_hash',
  'access_token',
  'refresh_token',
  'secret_access_key',
  '*.password',
  '*.current_password',
  '*.new_password',
  '*.password_hash',
  '*.nt_hash',
  '*.access_token',
  '*.refresh_token',
  '*.secret_access_key',
  '*.*.secret_access_key',
  '*.authorization',
];

const BEARER_RE = /^Bearer ([A-Za-z0-9_.~+/=-]{1,4096})$/i;

/** One line per request at debug (at info, a client polling the API would flood the log). */
class DebugRequestLog extends LogController {
  override incomingRequest(): void {}

  override routeNotFound(req: FastifyRequest): void {
    req.log.debug({ method: req.method, url: req.url.split('?')[0] }, 'API route not found');
  }

  override requestCompleted(error: Error | null | undefined, req: FastifyRequest, reply: FastifyReply): void {
    const line = { method: req.method, url: req.url.split('?')[0], status: reply.statusCode, ms: Math.round(reply.elapsedTime) };
    if (error) reply.log.error({ ...line, err: error }, 'API request failed while answering');
    else reply.log.debug(line, 'API request');
  }
}

function hasNul(v: unknown, depth = 0): boolean {
  if (typeof v === 'string') return v.includes('\0');
  if (depth > 32 || typeof v !== 'object' || v === null) return false;
  if (Array.isArray(v)) return v.some((x) => hasNul(x, depth + 1));
  return Object.entries(v).some(([k, x]) => k.includes('\0') || hasNul(x, depth + 1));
}

export function bearerToken(req: FastifyRequest): string | undefined {
  const h = req.headers.authorization;
  if (typeof h !== 'string') return undefined;
  return BEARER_RE.exec(h.trim())?.[1];
}

export function buildApi(opts: ApiOptions): App {
  const tokens = new TokenService({
    secret: opts.auth.jwtSecret,
    ...(opts.auth.accessTtlSeconds === undefined ? {} : { accessTtlSeconds: opts.auth.accessTtlSeconds }),
    ...(opts.auth.refreshTtlSeconds === undefined ? {} : { refreshTtlSeconds: opts.auth.refreshTtlSeconds }),
  });
  const bcryptCost = checkBcryptCost(opts.auth.bcryptCost ?? DEFAULT_BCRYPT_COST);
  const general: RateLimitRule = { max: opts.rateLimit?.max ?? 600, timeWindowMs: opts.rateLimit?.timeWindowMs ?? 60_000 };
  const credentialsLimit: RateLimitRule = {
    max: opts.rateLimit?.loginMax ?? 10,
    timeWindowMs: opts.rateLimit?.loginTimeWindowMs ?? 60_000,
  };
  const credentialsAddressLimit: RateLimitRule = {
    max: opts.rateLimit?.loginAddressMax ?? 60,
    timeWindowMs: opts.rateLimit?.loginTimeWindowMs ?? 60_000,
  };
  const ctx: ApiContext = { store: opts.store, tokens, runtime: opts.runtime, bcryptCost, credentialsLimit, credentialsAddressLimit };

  const trustedPeer = trustedProxy(opts.trustProxy ?? false);
  // Fastify calls it for the socket's peer and each X-Forwarded-For hop; false: the header is ignored.
  const trusted = opts.trustProxy === undefined || opts.trustProxy === false ? false : (address: string) => trustedPeer(address);
  const logger = opts.logger.child({ component: 'api' }, { redact: { paths: REDACTED_LOG_PATHS, censor: '[redacted]' } });
  // Documented, and right where nothing but the proxy reaches the port, but easy to leave on where
  // clients reach it too: say what it does at every start.
  if (opts.trustProxy === true) {
    logger.warn(
      { setting: `${opts.settings ?? 'server.api'}.trust_proxy` },
      'trust_proxy is true: every peer is taken for a proxy, so X-Forwarded-For (which any client can write) names the client ' +
        'that the rate and login limits count, and no peer is capped per address; unless nothing but the proxy reaches the API port, ' +
        "list the proxies' addresses or CIDR ranges instead",
    );
  }
  const app = Fastify({
    loggerInstance: logger,
    logController: new DebugRequestLog(),
    bodyLimit: opts.bodyLimit ?? 1024 * 1024,
    // Node's own deadline for a whole request (headers and body), checked every few seconds; an
    // idle connection goes after its keep-alive timeout.
    requestTimeout: opts.requestTimeoutMs ?? API_REQUEST_TIMEOUT_MS,
    connectionTimeout: 2 * (opts.requestTimeoutMs ?? API_REQUEST_TIMEOUT_MS),
    http: { connectionsCheckingInterval: Math.min(5_000, Math.ceil((opts.requestTimeoutMs ?? API_REQUEST_TIMEOUT_MS) / 2)) },
    // One predicate for req.ip and for the connection caps (below), so that both agree on who is a proxy.
    trustProxy: trusted,
    return503OnClosing: true,
    // Errors found while routing (a malformed or overlong URL) get problem+json too.
    frameworkErrors: (err, req, reply) => {
      const p = toProblem(err);
      void (reply as FastifyReply)
        .status(p.statusCode)
        .type(PROBLEM_CONTENT_TYPE)
        .send(problemBody(p, req.url.split('?')[0]));
    },
    routerOptions: { maxParamLength: 1024, caseSensitive: true },
    ajv: {
      // Reject what does not match rather than repair it: no stripping of unknown properties, no
      // type coercion, no defaults filled in by the validator.
      customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: false, allowUnionTypes: true },
    },
  }) as unknown as App;

  // The connection caps, as NFS and SMB have them (wire/limits.ts): one address cannot take every
  // connection, and a crowd of connections that never authenticate cannot keep out those that do
  // (the operator, an admin's CLI). Node's own timeouts (above) close the idle and the slow. They
  // act when a connection is accepted, before any request on it, so they count the TCP peer: a
  // proxy, not the clients behind it, whose X-Forwarded-For comes later and, with a proxy's pool
  // of kept-alive connections, differs from request to request. So a trusted proxy's connections
  // are left out of the per-address cap (one proxy carries many clients) and meet the total one.
  const limits = new ConnectionLimits({
    maxConnections: opts.maxConnections ?? API_MAX_CONNECTIONS,
    maxConnectionsPerAddress: opts.maxConnectionsPerAddress ?? API_MAX_CONNECTIONS_PER_ADDRESS,
    uncappedAddress: trustedPeer,
    ...(opts.settings === undefined ? {} : { settings: opts.settings }),
    idleTimeoutMs: 0,
    maxBufferedRequestBytes: 1, // not used: HTTP requests are bounded by bodyLimit and the request timeout
    name: 'REST API',
    log: logger,
  });
  const guards = new WeakMap<Socket, ConnectionGuard>();
  app.server.on('connection', (socket: Socket) => {
    const g = limits.admit(socket);
    if (g !== null) guards.set(socket, g);
  });
  app.addHook('onClose', async () => limits.close());

  // Only JSON bodies: a text/plain body is 415, not a string handed to the schema.
  app.removeContentTypeParser('text/plain');
  app.decorateRequest('principal', null);

  app.setErrorHandler((err, req, reply) => {
    const p = failedForGood(toProblem(err), ctx.runtime.failure?.() ?? null);
    if (p.statusCode >= 500) req.log.error({ err }, 'API request failed');
    // Refused credentials, permissions and rate limits are what an admin audits: at info (the login
    // route logs its own failures, with the username); everything else (validation, 404) at debug.
    else if (p.statusCode === 429 || ((p.statusCode === 401 || p.statusCode === 403) && req.routeOptions.url !== '/api/v1/auth/login')) {
      req.log.info({ status: p.statusCode, method: req.method, url: req.url.split('?')[0], detail: p.detail }, 'API request refused');
    } else req.log.debug({ status: p.statusCode, detail: p.detail }, 'API request refused');
    if (p.statusCode === 401) void reply.header('www-authenticate', 'Bearer');
    return reply
      .status(p.statusCode)
      .type(PROBLEM_CONTENT_TYPE)
      .send(problemBody(p, req.url.split('?')[0]));
  });
  app.setNotFoundHandler((req, reply) => {
    const p = notFound(req);
    return reply
      .status(404)
      .type(PROBLEM_CONTENT_TYPE)
      .send(problemBody(p, req.url.split('?')[0]));
  });

  // Authentication and authorization, before the body is parsed.
  app.addHook('preParsing', async (req, _reply, payload) => {
    // No such route: answered before its body is read (a client without a token would else make
    // the server hold up to bodyLimit for each such request).
    if (req.is404) throw notFound(req);
    const cfg = req.routeOptions.config;
    const access = cfg.access ?? 'admin';
    if (access === 'public') return payload;
    const token = bearerToken(req);
    if (token === undefined) throw new ApiProblem('unauthorized', 'send a bearer token: Authorization: Bearer <access_token>');
    const claims = tokens.verify(token, 'access');
    const creds = await ctx.store.getCredentials(claims.sub);
    if (creds === undefined || creds.token_version !== claims.tv)
      throw new ApiProblem('unauthorized', 'the token was revoked; log in again');
    const principal: Principal = { username: creds.username, role: creds.role, must_change_password: creds.must_change_password };
    req.principal = principal;
    if (principal.must_change_password && cfg.duringPasswordChange !== true) {
      throw new ApiProblem('password-change-required', 'password must be changed: POST /api/v1/users/me/password first');
    }
    const allowed = access === 'user' || principal.role === 'admin' || (access === 'operator' && principal.role === 'operator');
    if (!allowed) throw new ApiProblem('forbidden', `this needs role ${access === 'operator' ? 'operator or admin' : access}`);
    // The connection is proven (never closed to make room: see `limits`) by a request that a token
    // let through, from then on: while its answer is on the way too (a change waits until every
    // server applied it). Not by the login: a wrong password is answered too.
    guards.get(req.raw.socket)?.prove();
    return payload;
  });

  // PostgreSQL text cannot hold NUL: refuse it up front (400) rather than fail in the database.
  app.addHook('preValidation', async (req) => {
    if (hasNul(req.body) || hasNul(req.params)) throw new ApiProblem('validation', 'strings must not contain NUL characters');
  });

  void app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'DittoFS control API',
        version: opts.version ?? '1',
        description: 'Users, groups, stores, shares, permissions, adapters, settings and the declarative state of a DittoFS server.',
      },
      components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } } },
    },
  });
  void app.register(rateLimit, {
    global: true,
    max: general.max,
    timeWindow: general.timeWindowMs,
    hook: 'onRequest',
    keyGenerator: (req) => {
      const token = bearerToken(req);
      if (token !== undefined) {
        try {
          // By user and token version: a token revoked by a password change or a deletion (still
          // signed, and unexpired for up to its TTL) counts apart from the user's current ones, so
          // whoever holds it cannot use up the real user's allowance. Checking here that the version
          // is current would cost a database query per request before the limit is applied.
          const claims = tokens.verify(token, 'access');
          return `u:${bucket(claims.sub, String(claims.tv))}`;
        } catch {
          // Not a valid token: counted by address.
        }
      }
      return `ip:${req.ip}`;
    },
    errorResponseBuilder: (_req, c) => new ApiProblem('rate-limited', `too many requests; retry in ${c.after}`),
  });
  void app.register(async (api) => {
    // No route takes query parameters: an unknown one is an error like an unknown body field.
    api.addHook('onRoute', (route) => {
      if ((route.config as { access?: string } | undefined)?.access === 'public') route.bodyLimit ??= PUBLIC_BODY_LIMIT;
      route.schema ??= {};
      route.schema.querystring ??= { type: 'object', additionalProperties: false, properties: {} };
    });
    healthRoutes(api, ctx);
    authRoutes(api, ctx);
    userRoutes(api, ctx);
    groupRoutes(api, ctx);
    storeRoutes(api, ctx);
    shareRoutes(api, ctx);
    adapterRoutes(api, ctx);
    settingRoutes(api, ctx);
    stateRoutes(api, ctx);
  });
  return app;
}
