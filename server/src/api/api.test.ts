// The REST API through app.inject() against a real control store (SQLite): authentication and the
// password-change gate, tokens that must be refused, roles, every resource, bad input that must be
// a 400 problem and change nothing, problem+json everywhere, no secret in any response or log line,
// rate limits, the OpenAPI document, and one pass over real HTTP.
import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, describe, it, mock } from 'node:test';
import bcrypt from 'bcryptjs';
import jwt from 'jsonwebtoken';
import type { LightMyRequestResponse } from 'fastify';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import type { LogLevel } from '../config/types.js';
import { buildAccessIndex, resolveShareAccess } from '../control/access.js';
import { TokenService, ntHash, passwordCredentials, type PasswordCredentials } from '../control/auth.js';
import type { ControlStore } from '../control/store.js';
import { openTestControlStore, resetControlStore } from '../control/testing.js';
import { SHARE_SETTINGS_DEFAULTS, type Role, type StoreKind } from '../control/types.js';
import { notServedReason, protocolImplemented } from '../protocols.js';
import { until } from '../../../test/helpers/hostile.js';
import { checkStore } from '../controlplane.js';
import { buildApi, PUBLIC_BODY_LIMIT, type ApiOptions } from './app.js';
import type { App } from './context.js';
import type { ApiRuntime, Readiness } from './runtime.js';

const SECRET = 'api-test-secret-0123456789-abcdefghijkl';
const ADMIN_PW = 'admin-password-1';
const USER_PW = 'user-password-1';
const S3_SECRET = 'very-secret-s3-key';
const PG_PASSWORD = 'hunter22pg';
/** Strings that must never appear in a response or a log line. */
const SECRETS = [ADMIN_PW, USER_PW, S3_SECRET, PG_PASSWORD, 'new-password-2', 'op-password-1', 'state-password-1', SECRET];

// ---------------------------------------------------------------------------------------------
// Fixture: one store and app for the file, emptied before each test.

interface TestRuntime extends ApiRuntime {
  readiness: Readiness;
  /** What failure() answers. */
  failed: string | null;
  levels: LogLevel[];
  checks: string[];
}

function testRuntime(): TestRuntime {
  const rt: TestRuntime = {
    readiness: { ready: true, checks: { 'metadata:default': { ok: true } } },
    failed: null,
    failure: () => rt.failed,
    levels: [],
    checks: [],
    ready: () => rt.readiness,
    async checkStore(kind: StoreKind, type: string, config: Record<string, unknown>) {
      rt.checks.push(`${kind}:${type}`);
      if (config.bucket === 'missing-bucket') throw new Error('bucket missing-bucket does not exist');
      if (typeof config.url === 'string' && config.url.includes('unreachable'))
        throw new Error(`cannot connect to ${config.url}: ECONNREFUSED`);
    },
    setLogLevel(level) {
      rt.levels.push(level);
    },
  };
  return rt;
}

const logs: string[] = [];
const responses: string[] = [];
let store: ControlStore;
let runtime: TestRuntime;
let app: App;
let adminCreds: PasswordCredentials;
let userCreds: PasswordCredentials;
const tokens = new TokenService({ secret: SECRET });

function makeApp(over: Partial<ApiOptions> = {}): App {
  return buildApi({
    store,
    runtime,
    auth: { jwtSecret: SECRET },
    logger: pino({ level: 'trace' }, { write: (line: string) => void logs.push(line) }),
    rateLimit: { max: 100_000, loginMax: 100_000, loginAddressMax: 100_000 },
    ...over,
  });
}

before(async () => {
  store = await openTestControlStore();
  runtime = testRuntime();
  [adminCreds, userCreds] = await Promise.all([passwordCredentials(ADMIN_PW), passwordCredentials(USER_PW)]);
  app = makeApp();
  await app.ready();
});
after(async () => {
  await app.close();
  await store.close();
});
beforeEach(async () => {
  await resetControlStore(store);
  await store.createUser({ username: 'admin', role: 'admin', ...adminCreds });
  runtime.readiness = { ready: true, checks: { 'metadata:default': { ok: true } } };
  runtime.levels.length = 0;
  runtime.checks.length = 0;
});
afterEach(() => {
  // No secret, hash or NT hash in anything the API answered or logged during the test.
  const all = [...responses, ...logs].join('\n');
  for (const s of SECRETS) assert.ok(!all.includes(s), `a secret leaked: ${s.slice(0, 3)}...`);
  assert.ok(!/\$2[aby]\$\d\d\$/.test(all), 'a bcrypt hash leaked');
  assert.ok(!all.includes(adminCreds.nt_hash) && !all.includes(userCreds.nt_hash), 'an NT hash leaked');
  responses.length = 0;
  logs.length = 0;
});

// ---------------------------------------------------------------------------------------------
// Helpers

interface CallOptions {
  token?: string;
  body?: unknown;
  /** A raw payload string (with content-type application/json unless headers say otherwise). */
  raw?: string;
  headers?: Record<string, string>;
  on?: App;
  /** The client address (default 127.0.0.1). */
  from?: string;
}

async function call(method: string, url: string, o: CallOptions = {}): Promise<LightMyRequestResponse> {
  const headers: Record<string, string> = { ...(o.headers ?? {}) };
  if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
  let payload: string | undefined;
  if (o.raw !== undefined) {
    payload = o.raw;
    headers['content-type'] ??= 'application/json';
  } else if (o.body !== undefined) {
    payload = JSON.stringify(o.body);
    headers['content-type'] ??= 'application/json';
  }
  const res = await (o.on ?? app).inject({
    method: method as 'GET',
    url,
    headers,
    ...(payload === undefined ? {} : { payload }),
    ...(o.from === undefined ? {} : { remoteAddress: o.from }),
  });
  responses.push(res.body, JSON.stringify(res.headers));
  return res;
}

async function tokenFor(username: string): Promise<string> {
  const c = await store.getCredentials(username);
  assert.ok(c, `no user ${username}`);
  return tokens.issue(c).access_token;
}

async function addUser(username: string, role: Role = 'user', extra: { must_change_password?: boolean } = {}): Promise<string> {
  await store.createUser({ username, role, ...userCreds, ...extra });
  return tokenFor(username);
}

const admin = (): Promise<string> => tokenFor('admin');

interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance?: string;
  item?: string;
}

function problem(res: LightMyRequestResponse, status: number, detail?: RegExp, type?: string): Problem {
  assert.equal(res.statusCode, status, `expected ${status}, got ${res.statusCode}: ${res.body}`);
  assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
  const p = res.json<Problem>();
  assert.equal(p.status, status);
  assert.match(p.type, /^urn:dittofs:problem:[a-z-]+$/);
  assert.equal(typeof p.title, 'string');
  assert.equal(typeof p.detail, 'string');
  assert.deepEqual(
    Object.keys(p).filter((k) => !['type', 'title', 'status', 'detail', 'instance', 'item'].includes(k)),
    [],
    'nothing but problem members (no stack)',
  );
  assert.ok(
    !/\b(SELECT|INSERT|UPDATE|DELETE FROM|violates|constraint|at \w+ \(|node:internal)\b/.test(p.detail),
    `leaky detail: ${p.detail}`,
  );
  if (detail) assert.match(p.detail, detail);
  if (type) assert.equal(p.type, `urn:dittofs:problem:${type}`);
  return p;
}

function ok<T = unknown>(res: LightMyRequestResponse, status = 200): T {
  assert.equal(res.statusCode, status, `expected ${status}, got ${res.statusCode}: ${res.body}`);
  if (status === 204) return undefined as T;
  assert.match(String(res.headers['content-type']), /^application\/json/);
  return res.json<T>();
}

async function withStores(): Promise<void> {
  await store.createStore('metadata', { name: 'meta', type: 'memory', config: {} });
  await store.createStore('block', { name: 'blocks', type: 'memory', config: { block_size: 65536 } });
}

/** The whole control state, credentials included: equal before and after means nothing changed. */
async function everything(): Promise<unknown> {
  const snap = await store.snapshot();
  const creds = await Promise.all(snap.users.map((u) => store.getCredentials(u.username)));
  return { snap, creds };
}

// ---------------------------------------------------------------------------------------------

describe('health', () => {
  it('liveness 200 while no store failed; readiness 200 or 503 with the checks; no token needed', async () => {
    assert.deepEqual(ok(await call('GET', '/health')), { status: 'ok' });
    assert.deepEqual(ok(await call('GET', '/health/ready')), { ready: true, checks: { 'metadata:default': { ok: true } } });
    runtime.readiness = { ready: false, checks: { 'blocks:s3': { ok: false, detail: 'bucket unreachable' } } };
    const r = await call('GET', '/health/ready');
    assert.equal(r.statusCode, 503);
    assert.deepEqual(r.json(), { ready: false, checks: { 'blocks:s3': { ok: false, detail: 'bucket unreachable' } } });
  });

  it('liveness is 503 with why once a store failed for good (a restart recovers it), its secrets masked', async () => {
    runtime.failed = 'metadata:pg: changes lost in a crash of PostgreSQL at postgres://dittofs:hunter2@db:5432/dittofs';
    try {
      const r = await call('GET', '/health');
      assert.equal(r.statusCode, 503);
      const body = r.json<{ status: string; detail: string }>();
      assert.equal(body.status, 'failed');
      assert.match(body.detail, /^metadata:pg: changes lost in a crash of PostgreSQL/);
      assert.doesNotMatch(body.detail, /hunter2/);
    } finally {
      runtime.failed = null;
    }
    assert.deepEqual(ok(await call('GET', '/health')), { status: 'ok' });
  });

  it('readiness masks secrets in a failing check, as every other answer does', async () => {
    const detail = `connect ECONNREFUSED: postgres://dittofs:${PG_PASSWORD}@db:5432/meta?sslpassword=${PG_PASSWORD}`;
    runtime.readiness = { ready: false, checks: { 'metadata:pg': { ok: false, detail }, nfs: { ok: true } } };
    const r = await call('GET', '/health/ready');
    assert.equal(r.statusCode, 503);
    assert.deepEqual(r.json(), {
      ready: false,
      checks: {
        'metadata:pg': { ok: false, detail: 'connect ECONNREFUSED: postgres://dittofs:****@db:5432/meta?sslpassword=****' },
        nfs: { ok: true },
      },
    });
  });

  it('a failure inside a handler is a 500 problem that leaks nothing', async () => {
    runtime.ready = () => {
      throw new Error('SELECT password_hash FROM users failed at pg.ts:42');
    };
    try {
      const p = problem(await call('GET', '/health/ready'), 500, /see its log/, 'internal');
      assert.ok(!p.detail.includes('password_hash'));
    } finally {
      runtime.ready = () => runtime.readiness;
    }
  });
});

describe('authentication', () => {
  it('login -> tokens; wrong password and unknown user get the same 401', async () => {
    const r = ok<Record<string, unknown>>(await call('POST', '/api/v1/auth/login', { body: { username: 'admin', password: ADMIN_PW } }));
    assert.deepEqual(Object.keys(r).sort(), ['access_token', 'expires_in', 'must_change_password', 'refresh_token', 'token_type']);
    assert.equal(r.token_type, 'Bearer');
    assert.equal(r.expires_in, 900);
    assert.equal(r.must_change_password, false);
    const me = ok<{ username: string }>(await call('GET', '/api/v1/auth/me', { token: r.access_token as string }));
    assert.equal(me.username, 'admin');

    const wrong = problem(await call('POST', '/api/v1/auth/login', { body: { username: 'admin', password: 'wrong-password' } }), 401);
    const unknown = problem(await call('POST', '/api/v1/auth/login', { body: { username: 'ghost', password: 'wrong-password' } }), 401);
    assert.equal(wrong.detail, unknown.detail);
    await store.createUser({ username: 'nopw' });
    problem(
      await call('POST', '/api/v1/auth/login', { body: { username: 'nopw', password: 'anything1' } }),
      401,
      /invalid username or password/,
    );
  });

  it('every failed login costs one bcrypt check at the configured cost: unknown, without password, or too long a password', async () => {
    const costly = makeApp({ auth: { jwtSecret: SECRET, bcryptCost: 11 } });
    const compare = mock.method(bcrypt, 'compare');
    try {
      await store.createUser({ username: 'nopw' });
      const tooLong = 'é'.repeat(72); // 144 bytes: never anyone's password
      for (const [username, password] of [
        ['ghost', 'wrong-password'],
        ['nopw', 'anything1'],
        ['admin', tooLong],
        ['ghost', tooLong],
      ] as const) {
        compare.mock.resetCalls();
        problem(await call('POST', '/api/v1/auth/login', { on: costly, body: { username, password } }), 401);
        assert.equal(compare.mock.callCount(), 1, `${username}: one bcrypt check`);
        assert.ok(/^\$2[aby]\$11\$/.test(String(compare.mock.calls[0]?.arguments[1])), `${username}: at the configured cost`);
      }
      compare.mock.resetCalls();
      problem(await call('POST', '/api/v1/auth/login', { on: costly, body: { username: 'admin', password: 'wrong-password' } }), 401);
      assert.equal(compare.mock.callCount(), 1, 'a wrong password: one bcrypt check, against the stored hash');
    } finally {
      compare.mock.restore();
      await costly.close();
    }
  });

  it('refresh gives a new pair; an access token is not a refresh token', async () => {
    const pair = tokens.issue((await store.getCredentials('admin'))!);
    const r = ok<{ access_token: string }>(await call('POST', '/api/v1/auth/refresh', { body: { refresh_token: pair.refresh_token } }));
    ok(await call('GET', '/api/v1/users', { token: r.access_token }));
    problem(await call('POST', '/api/v1/auth/refresh', { body: { refresh_token: pair.access_token } }), 401, /refresh token/);
  });

  it('refuses missing, malformed, expired, forged, alg=none and refresh tokens with 401 + WWW-Authenticate', async () => {
    const creds = (await store.getCredentials('admin'))!;
    const claims = { role: 'admin', typ: 'access', tv: creds.token_version };
    const bad: [string, Record<string, string>][] = [
      ['missing', {}],
      ['basic auth', { authorization: `Basic ${Buffer.from(`admin:${ADMIN_PW}`).toString('base64')}` }],
      ['garbage', { authorization: 'Bearer not.a.token' }],
      ['expired', { authorization: `Bearer ${tokens.sign(creds, 'access', -5)}` }],
      ['other secret', { authorization: `Bearer ${new TokenService({ secret: 'zYx-0987654321-'.repeat(3) }).issue(creds).access_token}` }],
      [
        'alg none',
        { authorization: `Bearer ${jwt.sign(claims, '', { algorithm: 'none', subject: 'admin', issuer: 'dittofs', expiresIn: 60 })}` },
      ],
      ['refresh as access', { authorization: `Bearer ${tokens.issue(creds).refresh_token}` }],
    ];
    for (const [what, headers] of bad) {
      const res = await call('GET', '/api/v1/users', { headers });
      problem(res, 401, undefined, 'unauthorized');
      assert.equal(res.headers['www-authenticate'], 'Bearer', what);
    }
  });

  it('tokens die with a password change and with the user (even if recreated)', async () => {
    const t = await addUser('alice');
    const refresh = tokens.issue((await store.getCredentials('alice'))!).refresh_token;
    ok(await call('GET', '/api/v1/shares', { token: t }));
    await store.updateUser('alice', { credentials: userCreds });
    problem(await call('GET', '/api/v1/shares', { token: t }), 401, /revoked/);
    problem(await call('POST', '/api/v1/auth/refresh', { body: { refresh_token: refresh } }), 401, /revoked/);
    const t2 = await tokenFor('alice');
    await store.deleteUser('alice');
    problem(await call('GET', '/api/v1/shares', { token: t2 }), 401);
    await store.createUser({ username: 'alice', ...userCreds });
    problem(await call('GET', '/api/v1/shares', { token: t2 }), 401, /revoked/);
  });

  it('must change password: everything else is 403 until POST /users/me/password, which revokes tokens', async () => {
    const created = ok<{ must_change_password: boolean }>(
      await call('POST', '/api/v1/users', { token: await admin(), body: { username: 'alice', password: USER_PW, role: 'operator' } }),
      201,
    );
    assert.equal(created.must_change_password, true);
    const login = ok<{ access_token: string; refresh_token: string; must_change_password: boolean }>(
      await call('POST', '/api/v1/auth/login', { body: { username: 'alice', password: USER_PW } }),
    );
    assert.equal(login.must_change_password, true);
    const t = login.access_token;
    for (const [m, u] of [
      ['GET', '/api/v1/users'],
      ['GET', '/api/v1/shares'],
      ['GET', '/api/v1/state'],
      ['GET', '/api/v1/settings'],
    ]) {
      problem(await call(m!, u!, { token: t }), 403, /password must be changed/, 'password-change-required');
    }
    assert.equal(ok<{ must_change_password: boolean }>(await call('GET', '/api/v1/auth/me', { token: t })).must_change_password, true);
    ok(await call('POST', '/api/v1/auth/refresh', { body: { refresh_token: login.refresh_token } }));

    problem(
      await call('POST', '/api/v1/users/me/password', {
        token: t,
        body: { current_password: 'not-it-123', new_password: 'new-password-2' },
      }),
      403,
      /current password is wrong/,
    );
    problem(
      await call('POST', '/api/v1/users/me/password', { token: t, body: { current_password: USER_PW, new_password: USER_PW } }),
      400,
      /differ/,
    );
    problem(await call('POST', '/api/v1/users/me/password', { token: t, body: { current_password: USER_PW, new_password: 'short' } }), 400);
    ok(
      await call('POST', '/api/v1/users/me/password', { token: t, body: { current_password: USER_PW, new_password: 'new-password-2' } }),
      204,
    );

    problem(await call('GET', '/api/v1/auth/me', { token: t }), 401, /revoked/);
    problem(await call('POST', '/api/v1/auth/login', { body: { username: 'alice', password: USER_PW } }), 401);
    const again = ok<{ access_token: string; must_change_password: boolean }>(
      await call('POST', '/api/v1/auth/login', { body: { username: 'alice', password: 'new-password-2' } }),
    );
    assert.equal(again.must_change_password, false);
    ok(await call('GET', '/api/v1/users', { token: again.access_token }));
    const nt = (await store.getCredentials('alice'))!.nt_hash;
    assert.equal(nt, await ntHash('new-password-2'));
  });
});

describe('roles', () => {
  it('user: own account and the share list only', async () => {
    await withStores();
    const t = await addUser('alice');
    ok(await call('GET', '/api/v1/shares', { token: t }));
    ok(await call('GET', '/api/v1/auth/me', { token: t }));
    for (const [m, u, b] of [
      ['GET', '/api/v1/users'],
      ['GET', '/api/v1/users/alice'],
      ['POST', '/api/v1/shares', { name: '/x', metadata_store: 'meta', block_store: 'blocks' }],
      ['GET', '/api/v1/stores/metadata'],
      ['GET', '/api/v1/groups'],
      ['GET', '/api/v1/state'],
      ['PUT', '/api/v1/settings/logging.level', { value: 'debug' }],
      ['PATCH', '/api/v1/adapters/nfs', { enabled: false }],
    ] as const) {
      problem(await call(m, u, { token: t, ...(b ? { body: b } : {}) }), 403, /needs role/, 'forbidden');
    }
  });

  it('operator: stores, shares, groups, state and users with role user; not roles or admins', async () => {
    const t = await addUser('op', 'operator');
    ok(await call('POST', '/api/v1/stores/metadata', { token: t, body: { name: 'meta', type: 'memory' } }), 201);
    ok(await call('POST', '/api/v1/stores/block', { token: t, body: { name: 'blocks', type: 'memory' } }), 201);
    ok(await call('POST', '/api/v1/shares', { token: t, body: { name: '/x', metadata_store: 'meta', block_store: 'blocks' } }), 201);
    ok(await call('POST', '/api/v1/groups', { token: t, body: { name: 'devs' } }), 201);
    ok(await call('POST', '/api/v1/users', { token: t, body: { username: 'carol' } }), 201);
    ok(await call('PATCH', '/api/v1/users/carol', { token: t, body: { email: 'c@example.com' } }));
    problem(await call('POST', '/api/v1/users', { token: t, body: { username: 'boss', role: 'admin' } }), 403, /only an admin/);
    problem(await call('PATCH', '/api/v1/users/carol', { token: t, body: { role: 'operator' } }), 403, /only an admin can change roles/);
    problem(await call('PATCH', '/api/v1/users/admin', { token: t, body: { email: 'x@example.com' } }), 403, /role admin/);
    problem(await call('DELETE', '/api/v1/users/admin', { token: t }), 403);
    ok(await call('DELETE', '/api/v1/users/carol', { token: t }), 204);
    ok(await call('GET', '/api/v1/state', { token: t }));
  });

  it("operator: cannot give a user or a group root's ids (uid 0, gid 0), by the API or the state; an admin can", async () => {
    const t = await addUser('op', 'operator');
    const a = await admin();
    const root = /only an admin can give a (user|group) (uid|gid) 0/;
    problem(await call('POST', '/api/v1/users', { token: t, body: { username: 'r00t', uid: 0 } }), 403, root);
    problem(await call('POST', '/api/v1/users', { token: t, body: { username: 'r00t', gid: 0 } }), 403, root);
    ok(await call('POST', '/api/v1/users', { token: t, body: { username: 'carol' } }), 201);
    problem(await call('PATCH', '/api/v1/users/carol', { token: t, body: { uid: 0 } }), 403, root);
    problem(await call('PATCH', '/api/v1/users/carol', { token: t, body: { gid: 0 } }), 403, root);
    problem(await call('POST', '/api/v1/groups', { token: t, body: { name: 'wheel', gid: 0 } }), 403, root);
    const st = (users: unknown[], groups: unknown[] = []) => ({ users, groups });
    let p = problem(await call('PUT', '/api/v1/state', { token: t, body: st([{ username: 'carol', uid: 0 }]) }), 403, root);
    assert.equal(p.item, 'users["carol"]');
    p = problem(
      await call('PUT', '/api/v1/state', { token: t, body: st([{ username: 'carol' }], [{ name: 'wheel', gid: 0 }]) }),
      403,
      root,
    );
    assert.equal(p.item, 'groups["wheel"]');
    assert.notEqual((await store.read((q) => q.requireUser('carol'))).uid, 0, 'nothing changed');
    // An admin may. Such an account is then an admin's to manage, as an admin is (else the
    // operator would set its password and log on as root), and so are root's group's members.
    ok(await call('PATCH', '/api/v1/users/carol', { token: a, body: { uid: 0 } }));
    ok(await call('POST', '/api/v1/groups', { token: a, body: { name: 'wheel', gid: 0 } }), 201);
    const account = /only an admin can manage a user with uid 0 or gid 0/;
    problem(await call('PATCH', '/api/v1/users/carol', { token: t, body: { password: 'An0ther-Passw0rd!' } }), 403, account);
    problem(await call('PATCH', '/api/v1/users/carol', { token: t, body: { email: 'c@example.com' } }), 403, account);
    problem(await call('DELETE', '/api/v1/users/carol', { token: t }), 403, account);
    ok(await call('POST', '/api/v1/users', { token: t, body: { username: 'mallory' } }), 201);
    problem(await call('PUT', '/api/v1/groups/wheel/members/mallory', { token: t }), 403, /group with gid 0/);
    ok(await call('PUT', '/api/v1/groups/wheel/members/mallory', { token: a }));
    problem(await call('DELETE', '/api/v1/groups/wheel/members/mallory', { token: t }), 403, /group with gid 0/);
    problem(await call('DELETE', '/api/v1/groups/wheel', { token: t }), 403, /group with gid 0/);
    problem(await call('PUT', '/api/v1/state', { token: t, body: st([{ username: 'carol' }], [{ name: 'wheel', gid: 0 }]) }), 403, account);
    // A member of root's group holds gid 0 over SMB: an admin's to manage too.
    problem(await call('PATCH', '/api/v1/users/mallory', { token: t, body: { password: 'An0ther-Passw0rd!' } }), 403, account);
    problem(await call('DELETE', '/api/v1/users/mallory', { token: t }), 403, account);
    problem(
      await call('PUT', '/api/v1/state', { token: t, body: st([{ username: 'mallory' }], [{ name: 'wheel', gid: 0 }]) }),
      403,
      account,
    );
    ok(await call('POST', '/api/v1/users', { token: t, body: { username: 'eve' } }), 201);
    problem(await call('POST', '/api/v1/users', { token: t, body: { username: 'eve2', groups: ['wheel'] } }), 403, /group with gid 0/);
    problem(await call('PATCH', '/api/v1/users/eve', { token: t, body: { groups: ['wheel'] } }), 403, /group with gid 0/);
    problem(
      await call('PUT', '/api/v1/state', {
        token: t,
        body: st([{ username: 'eve' }], [{ name: 'wheel', gid: 0, members: ['mallory', 'eve'] }]),
      }),
      403,
      /group with gid 0/,
    );
    problem(await call('PUT', '/api/v1/state', { token: t, body: st([{ username: 'eve' }], []) }), 403, /group with gid 0/);
    // Left out of an operator's state, both stay; listed unchanged, the group is fine.
    ok(
      await call('PUT', '/api/v1/state', { token: t, body: st([{ username: 'eve' }], [{ name: 'wheel', gid: 0, members: ['mallory'] }]) }),
    );
    assert.equal((await store.read((q) => q.requireUser('carol'))).uid, 0);
    assert.deepEqual((await store.read((q) => q.requireGroup('wheel'))).members, ['mallory']);
  });

  it("operator: group memberships of users with role user only, not admins' or operators' (API and state)", async () => {
    const t = await addUser('op', 'operator');
    await addUser('op2', 'operator');
    await addUser('carol');
    const members = async (g: string): Promise<string[]> => (await store.read((q) => q.requireGroup(g))).members;
    ok(await call('POST', '/api/v1/groups', { token: t, body: { name: 'devs' } }), 201);
    ok(await call('PUT', '/api/v1/groups/devs/members/carol', { token: t }));
    for (const who of ['admin', 'op2']) {
      problem(await call('PUT', `/api/v1/groups/devs/members/${who}`, { token: t }), 403, /only an admin can add to groups/);
      await store.addMember('devs', who);
      problem(await call('DELETE', `/api/v1/groups/devs/members/${who}`, { token: t }), 403, /only an admin can remove from groups/);
      problem(await call('DELETE', '/api/v1/groups/devs', { token: t }), 403, /only an admin/);
      await store.removeMember('devs', who);
    }
    assert.deepEqual(await members('devs'), ['carol']);

    const state = (groups: unknown[]) => ({ groups });
    for (const body of [
      state([{ name: 'devs', members: ['carol', 'admin'] }]),
      state([
        { name: 'devs', members: ['carol'] },
        { name: 'new', members: ['op2'] },
      ]),
    ]) {
      const p = problem(
        await call('PUT', '/api/v1/state', { token: t, body }),
        403,
        /cannot add or remove users with role admin or operator/,
      );
      assert.match(p.item ?? '', /^groups\["(devs|new)"\]$/);
    }
    await store.addMember('devs', 'admin');
    problem(await call('PUT', '/api/v1/state', { token: t, body: state([{ name: 'devs', members: ['carol'] }]) }), 403);
    problem(await call('PUT', '/api/v1/state', { token: t, body: state([]) }), 403, /"admin"/);
    assert.deepEqual((await members('devs')).sort(), ['admin', 'carol']);
    // Its own users' memberships, with the admin's left as they are, are fine.
    ok(await call('PUT', '/api/v1/state', { token: t, body: state([{ name: 'devs', members: ['admin'] }]) }));
    assert.deepEqual(await members('devs'), ['admin']);
    // An admin may do all of it.
    const a = await admin();
    ok(await call('DELETE', '/api/v1/groups/devs/members/admin', { token: a }));
    ok(await call('PUT', '/api/v1/groups/devs/members/op2', { token: a }));
    ok(await call('DELETE', '/api/v1/groups/devs', { token: a }), 204);
  });

  it('admin: cannot delete itself, nor demote or delete the last admin', async () => {
    const t = await admin();
    problem(await call('DELETE', '/api/v1/users/admin', { token: t }), 409, /yourself/);
    problem(await call('PATCH', '/api/v1/users/admin', { token: t, body: { role: 'user' } }), 409, /last admin/);
    const t2 = await addUser('root2', 'admin');
    ok(await call('PATCH', '/api/v1/users/admin', { token: t2, body: { role: 'operator' } }));
    problem(await call('PATCH', '/api/v1/users/root2', { token: t2, body: { role: 'user' } }), 409, /last admin/);
    ok(await call('PATCH', '/api/v1/users/admin', { token: t2, body: { role: 'admin' } }));
    ok(await call('DELETE', '/api/v1/users/admin', { token: t2 }), 204);
  });
});

describe('resources', () => {
  it('users: create (auto uid), read, patch, delete; never a hash in the JSON', async () => {
    const t = await admin();
    const u = ok<Record<string, unknown>>(
      await call('POST', '/api/v1/users', { token: t, body: { username: 'alice', password: USER_PW, email: 'alice@example.com' } }),
      201,
    );
    assert.deepEqual(Object.keys(u).sort(), [
      'created_at',
      'email',
      'gid',
      'groups',
      'must_change_password',
      'role',
      'uid',
      'updated_at',
      'username',
    ]);
    assert.deepEqual([u.uid, u.gid, u.role, u.email], [10001, 10001, 'user', 'alice@example.com']);
    problem(await call('POST', '/api/v1/users', { token: t, body: { username: 'alice' } }), 409, /already exists/, 'already-exists');
    problem(await call('POST', '/api/v1/users', { token: t, body: { username: 'bob', uid: 10001 } }), 409, /uid 10001/);
    problem(await call('POST', '/api/v1/users', { token: t, body: { username: 'bob', groups: ['nogroup'] } }), 422, /group "nogroup"/);
    ok(await call('POST', '/api/v1/groups', { token: t, body: { name: 'devs', gid: 5000 } }), 201);
    const p = ok<Record<string, unknown>>(
      await call('PATCH', '/api/v1/users/alice', { token: t, body: { uid: 4000, gid: 5000, groups: ['devs'], email: null } }),
    );
    assert.deepEqual([p.uid, p.gid, p.groups, p.email], [4000, 5000, ['devs'], null]);
    assert.equal(ok<unknown[]>(await call('GET', '/api/v1/users', { token: t })).length, 2);
    assert.equal(ok<{ username: string }>(await call('GET', '/api/v1/users/alice', { token: t })).username, 'alice');
    problem(await call('GET', '/api/v1/users/ghost', { token: t }), 404, /user "ghost" does not exist/, 'not-found');
    // An admin setting someone's password makes them change it; PATCH can say otherwise.
    const reset = ok<{ must_change_password: boolean }>(
      await call('PATCH', '/api/v1/users/alice', { token: t, body: { password: 'new-password-2' } }),
    );
    assert.equal(reset.must_change_password, true);
    ok(await call('DELETE', '/api/v1/users/alice', { token: t }), 204);
    problem(await call('DELETE', '/api/v1/users/alice', { token: t }), 404);
  });

  it('groups and members', async () => {
    const t = await admin();
    await addUser('alice');
    // Automatic ids: above the admin's (10000) and alice's (10001) uid and gid.
    ok(await call('POST', '/api/v1/groups', { token: t, body: { name: 'devs' } }), 201);
    assert.deepEqual(ok(await call('PUT', '/api/v1/groups/devs/members/alice', { token: t })), {
      name: 'devs',
      gid: 10002,
      members: ['alice'],
    });
    assert.deepEqual(ok(await call('GET', '/api/v1/groups/devs', { token: t })), { name: 'devs', gid: 10002, members: ['alice'] });
    assert.deepEqual(ok(await call('GET', '/api/v1/groups', { token: t })), [{ name: 'devs', gid: 10002, members: ['alice'] }]);
    problem(await call('PUT', '/api/v1/groups/devs/members/ghost', { token: t }), 404, /user "ghost"/);
    assert.deepEqual(ok(await call('DELETE', '/api/v1/groups/devs/members/alice', { token: t })), {
      name: 'devs',
      gid: 10002,
      members: [],
    });
    problem(await call('POST', '/api/v1/groups', { token: t, body: { name: 'devs' } }), 409);
    ok(await call('DELETE', '/api/v1/groups/devs', { token: t }), 204);
    problem(await call('GET', '/api/v1/groups/devs', { token: t }), 404);
  });

  it('stores: secrets masked everywhere, settings checked (422, nothing stored), used stores refuse deletion (409)', async () => {
    const t = await admin();
    const pg = ok<{ config: { url: string; sync?: string } }>(
      await call('POST', '/api/v1/stores/metadata', {
        token: t,
        body: { name: 'pg', type: 'postgres', config: { url: `postgres://dfs:${PG_PASSWORD}@db:5432/x`, pool_size: 4, sync: 'commit' } },
      }),
      201,
    );
    assert.equal(pg.config.url, 'postgres://dfs:****@db:5432/x');
    // A postgres store has a sync policy, as in the config file (it was refused as an unknown key).
    assert.equal(pg.config.sync, 'commit');
    assert.equal((await store.getStore('metadata', 'pg'))?.config.sync, 'commit', 'stored, for the share runtime');
    const s3 = ok<{ config: Record<string, unknown> }>(
      await call('POST', '/api/v1/stores/block', {
        token: t,
        body: {
          name: 's3',
          type: 's3',
          config: { bucket: 'blocks-bucket', access_key_id: 'AKIA1', secret_access_key: S3_SECRET, block_size: 1048576 },
        },
      }),
      201,
    );
    assert.deepEqual(s3.config, { bucket: 'blocks-bucket', access_key_id: 'AKIA1', secret_access_key: '****', block_size: 1048576 });
    assert.deepEqual(runtime.checks, ['metadata:postgres', 'block:s3']);
    assert.equal(
      ok<{ config: { url: string } }[]>(await call('GET', '/api/v1/stores/metadata', { token: t }))[0]?.config.url,
      'postgres://dfs:****@db:5432/x',
    );
    assert.equal(
      ok<{ config: Record<string, unknown> }>(await call('GET', '/api/v1/stores/block/s3', { token: t })).config.secret_access_key,
      '****',
    );
    assert.equal((await store.getStore('block', 's3'))?.config.secret_access_key, S3_SECRET, 'the real secret is stored');

    const before = await everything();
    const p = problem(
      await call('POST', '/api/v1/stores/metadata', {
        token: t,
        body: { name: 'pg2', type: 'postgres', config: { url: `postgres://dfs:${PG_PASSWORD}@unreachable:5432/x` } },
      }),
      422,
      /cannot work: cannot connect to postgres:\/\/dfs:\*\*\*\*@unreachable/,
      'unprocessable',
    );
    assert.ok(!p.detail.includes(PG_PASSWORD));
    problem(
      await call('POST', '/api/v1/stores/block', { token: t, body: { name: 's3b', type: 's3', config: { bucket: 'missing-bucket' } } }),
      422,
    );
    problem(
      await call('POST', '/api/v1/stores/block', {
        token: t,
        body: { name: 's3c', type: 's3', config: { bucket: 'b-b', secret_access_key: '****', access_key_id: 'A' } },
      }),
      400,
      /mask/,
    );
    problem(
      await call('POST', '/api/v1/stores/block', {
        token: t,
        body: { name: 's3c', type: 's3', config: { bucket: 'b-b', secret_access_key: 'x' } },
      }),
      400,
      /both/,
    );
    problem(
      await call('POST', '/api/v1/stores/metadata', {
        token: t,
        body: { name: 'pg-sync', type: 'postgres', config: { url: 'postgres://u@db/x', sync: 'always' } },
      }),
      400,
      /body\.config\.sync: must be one of "commit", "change"/,
    );
    // PGlite has no sync policy: refused with the reason, as the config file refuses it.
    problem(
      await call('POST', '/api/v1/stores/metadata', {
        token: t,
        body: { name: 'emb-sync', type: 'embedded', config: { engine: 'pglite', sync: 'change' } },
      }),
      400,
      /config\.sync: only the sqlite engine has a sync policy \(this store's engine is pglite\)/,
    );
    problem(
      await call('POST', '/api/v1/stores/metadata', {
        token: t,
        body: { name: 'pg3', type: 'postgres', config: { url: 'mysql://x@y/z' } },
      }),
      400,
      /postgres:\/\//,
    );
    problem(await call('POST', '/api/v1/stores/metadata', { token: t, body: { name: 'pg', type: 'memory' } }), 409);
    assert.deepEqual(await everything(), before);

    await store.createStore('metadata', { name: 'meta', type: 'memory', config: {} });
    await store.createShare({ ...SHARE_SETTINGS_DEFAULTS, name: '/a', metadata_store: 'meta', block_store: 's3' });
    problem(await call('DELETE', '/api/v1/stores/block/s3', { token: t }), 409, /used by share "\/a"/, 'in-use');
    ok(await call('DELETE', '/api/v1/stores/metadata/pg', { token: t }), 204);
    problem(await call('GET', '/api/v1/stores/metadata/pg', { token: t }), 404);
  });

  it('shares: named with or without the slash, nested names, patch, delete; missing stores 422', async () => {
    const t = await admin();
    await withStores();
    const s = ok<Record<string, unknown>>(
      await call('POST', '/api/v1/shares', {
        token: t,
        body: { name: '/export', metadata_store: 'meta', block_store: 'blocks', root_mode: 0o755 },
      }),
      201,
    );
    assert.deepEqual([s.name, s.root_mode, s.default_permission, s.anonymous_uid], ['/export', 0o755, 'read-write', 65534]);
    ok(
      await call('POST', '/api/v1/shares', { token: t, body: { name: '/data/projects', metadata_store: 'meta', block_store: 'blocks' } }),
      201,
    );
    for (const u of ['/api/v1/shares/export', '/api/v1/shares/%2Fexport'])
      assert.equal(ok<{ name: string }>(await call('GET', u, { token: t })).name, '/export');
    assert.equal(ok<{ name: string }>(await call('GET', '/api/v1/shares/data%2Fprojects', { token: t })).name, '/data/projects');
    assert.equal(
      ok<{ read_only: boolean }>(await call('PATCH', '/api/v1/shares/export', { token: t, body: { read_only: true } })).read_only,
      true,
    );
    problem(await call('PATCH', '/api/v1/shares/export', { token: t, body: { block_store: 'nope' } }), 422, /block store "nope"/);
    problem(await call('POST', '/api/v1/shares', { token: t, body: { name: '/x', metadata_store: 'nope', block_store: 'blocks' } }), 422);
    problem(
      await call('POST', '/api/v1/shares', { token: t, body: { name: '/export', metadata_store: 'meta', block_store: 'blocks' } }),
      409,
    );
    problem(
      await call('POST', '/api/v1/shares', { token: t, body: { name: '/a/../b', metadata_store: 'meta', block_store: 'blocks' } }),
      400,
      /\.\./,
    );
    problem(await call('GET', '/api/v1/shares/nope', { token: t }), 404);
    assert.equal(ok<unknown[]>(await call('GET', '/api/v1/shares', { token: t })).length, 2);
    ok(await call('DELETE', '/api/v1/shares/%2Fexport', { token: t }), 204);
    problem(await call('DELETE', '/api/v1/shares/export', { token: t }), 404);
  });

  it('permissions: set, list, remove; the access index resolves them', async () => {
    const t = await admin();
    await withStores();
    await store.createUser({ username: 'alice', uid: 1000 });
    await store.createUser({ username: 'bob', uid: 1001 });
    await store.createUser({ username: 'carol', uid: 1002 });
    await store.createGroup({ name: 'devs', gid: 2000, members: ['alice', 'bob'] });
    ok(
      await call('POST', '/api/v1/shares', {
        token: t,
        body: { name: '/export', metadata_store: 'meta', block_store: 'blocks', default_permission: 'read' },
      }),
      201,
    );
    assert.deepEqual(ok(await call('PUT', '/api/v1/shares/export/permissions/groups/devs', { token: t, body: { level: 'read-write' } })), {
      group: 'devs',
      level: 'read-write',
    });
    assert.deepEqual(ok(await call('PUT', '/api/v1/shares/export/permissions/users/bob', { token: t, body: { level: 'none' } })), {
      user: 'bob',
      level: 'none',
    });
    assert.deepEqual(ok(await call('GET', '/api/v1/shares/export/permissions', { token: t })), [
      { user: 'bob', level: 'none' },
      { group: 'devs', level: 'read-write' },
    ]);
    problem(await call('PUT', '/api/v1/shares/export/permissions/users/ghost', { token: t, body: { level: 'read' } }), 404, /user "ghost"/);
    problem(
      await call('PUT', '/api/v1/shares/export/permissions/users/bob', { token: t, body: { level: 'write' } }),
      400,
      /must be one of/,
    );

    const index = buildAccessIndex(await store.snapshot());
    assert.equal(resolveShareAccess(index, '/export', { uid: 1000 }), 'read-write');
    assert.equal(resolveShareAccess(index, '/export', { uid: 1001 }), 'none');
    assert.equal(resolveShareAccess(index, '/export', { uid: 1002 }), 'read');
    assert.equal(resolveShareAccess(index, '/export', { uid: 7777 }), 'read');

    ok(await call('DELETE', '/api/v1/shares/export/permissions/users/bob', { token: t }), 204);
    problem(await call('DELETE', '/api/v1/shares/export/permissions/users/bob', { token: t }), 404);
    ok(await call('DELETE', '/api/v1/shares/export/permissions/groups/devs', { token: t }), 204);
    assert.deepEqual(ok(await call('GET', '/api/v1/shares/export/permissions', { token: t })), []);
  });

  it('adapters and settings', async () => {
    const t = await admin();
    // `served` says what this version serves (protocols.ts): an enabled adapter without an engine is not.
    const smbServed = protocolImplemented('smb');
    assert.deepEqual(ok(await call('GET', '/api/v1/adapters', { token: t })), [
      { type: 'nfs', enabled: true, port: 12049, served: true },
      { type: 'smb', enabled: true, port: 12445, served: smbServed, ...(smbServed ? {} : { note: notServedReason('smb', true) }) },
    ]);
    assert.deepEqual(ok(await call('PATCH', '/api/v1/adapters/smb', { token: t, body: { enabled: false, port: 1445 } })), {
      type: 'smb',
      enabled: false,
      port: 1445,
      served: false,
    });
    assert.deepEqual(ok(await call('GET', '/api/v1/adapters/smb', { token: t })), {
      type: 'smb',
      enabled: false,
      port: 1445,
      served: false,
    });
    problem(await call('PATCH', '/api/v1/adapters/nfs', { token: t, body: { port: 1445 } }), 409, /used by the smb adapter/);
    problem(await call('GET', '/api/v1/adapters/ftp', { token: t }), 400);

    assert.deepEqual(ok(await call('GET', '/api/v1/settings', { token: t })), { 'logging.level': null });
    assert.deepEqual(ok(await call('PUT', '/api/v1/settings/logging.level', { token: t, body: { value: 'debug' } })), {
      key: 'logging.level',
      value: 'debug',
    });
    assert.deepEqual(runtime.levels, ['debug']);
    assert.deepEqual(ok(await call('GET', '/api/v1/settings/logging.level', { token: t })), { key: 'logging.level', value: 'debug' });
    problem(await call('PUT', '/api/v1/settings/logging.level', { token: t, body: { value: 'loud' } }), 400, /expected one of trace/);
    problem(await call('PUT', '/api/v1/settings/logging.level', { token: t, body: { value: 3 } }), 400);
    problem(await call('PUT', '/api/v1/settings/no.such', { token: t, body: { value: 'x' } }), 400, /unknown setting/);
    problem(await call('GET', '/api/v1/settings/no.such', { token: t }), 404);
    assert.deepEqual(runtime.levels, ['debug']);
  });

  it('state: PUT converges idempotently, GET returns it without secrets, a failing item is a problem naming it', async () => {
    const t = await admin();
    const desired = {
      metadata_stores: [{ name: 'meta', type: 'memory' }],
      block_stores: [{ name: 's3', type: 's3', config: { bucket: 'blocks-bucket', access_key_id: 'AKIA1', secret_access_key: S3_SECRET } }],
      users: [{ username: 'alice', password: 'state-password-1' }],
      groups: [{ name: 'devs', members: ['alice'] }],
      shares: [{ name: '/export', metadata_store: 'meta', block_store: 's3', permissions: [{ group: 'devs', level: 'read-write' }] }],
    };
    const r1 = ok<{ generation: number; created: unknown[] }>(await call('PUT', '/api/v1/state', { token: t, body: desired }));
    assert.equal(r1.created.length, 5);
    const r2 = ok(await call('PUT', '/api/v1/state', { token: t, body: desired }));
    assert.deepEqual(r2, { generation: r1.generation, created: [], updated: [], removed: [], unchanged: 5 });
    const state = ok<{ block_stores: { config: Record<string, unknown> }[]; users: Record<string, unknown>[] }>(
      await call('GET', '/api/v1/state', { token: t }),
    );
    assert.equal(state.block_stores[0]?.config.secret_access_key, '****');
    assert.ok(state.users.every((u) => !('password' in u)));
    const r3 = ok<{ generation: number }>(await call('PUT', '/api/v1/state', { token: t, body: state }));
    assert.equal(r3.generation, r1.generation, 'GET then PUT changes nothing');

    // The mask keeps the secret only where it was given: not for another endpoint, bucket, region
    // or key id (an operator could otherwise send an admin's secret to a server of its own).
    const op = await addUser('op', 'operator');
    const masked = state.block_stores[0]?.config;
    for (const moved of [
      { endpoint: 'https://attacker.example' },
      { bucket: 'other-bucket' },
      { region: 'eu-west-9' },
      { access_key_id: 'AKIA2' },
    ]) {
      const stored = await everything();
      const body = { block_stores: [{ name: 's3', type: 's3', config: { ...masked, ...moved } }] };
      const refused = problem(await call('PUT', '/api/v1/state', { token: op, body }), 400, /give the secret again/);
      assert.equal(refused.item, 'block_stores["s3"]');
      assert.deepEqual(await everything(), stored, `${Object.keys(moved)[0]}: nothing changed`);
    }
    const elsewhere = { block_stores: [{ name: 's3', type: 's3', config: { ...masked, prefix: 'p/' } }] };
    ok(await call('PUT', '/api/v1/state', { token: op, body: elsewhere }));
    assert.equal((await store.getStore('block', 's3'))?.config.secret_access_key, S3_SECRET, 'a new prefix keeps the secret');
    ok(await call('POST', '/api/v1/auth/login', { body: { username: 'alice', password: 'state-password-1' } }));

    const before = await everything();
    const p = problem(
      await call('PUT', '/api/v1/state', {
        token: t,
        body: { ...desired, shares: [{ name: '/export', metadata_store: 'fast', block_store: 's3' }] },
      }),
      422,
      /metadata store "fast" does not exist/,
    );
    assert.equal(p.item, 'shares["/export"]');
    problem(
      await call('PUT', '/api/v1/state', {
        token: t,
        body: { ...desired, groups: [{ name: 'devs', members: ['alice'] }, { name: 'devs' }] },
      }),
      400,
      /more than once/,
    );
    assert.deepEqual(await everything(), before);
  });
});

describe('postgres URLs', () => {
  it('a password parameter named in percent-encoding is masked everywhere, and its mask keeps the secret', async () => {
    const t = await admin();
    const url = `postgres://dfs@db:5432/x?pass%77ord=${PG_PASSWORD}&application_name=a`;
    const shown = 'postgres://dfs@db:5432/x?pass%77ord=****&application_name=a';
    const created = ok<{ config: { url: string } }>(
      await call('POST', '/api/v1/stores/metadata', { token: t, body: { name: 'pg', type: 'postgres', config: { url } } }),
      201,
    );
    assert.equal(created.config.url, shown);
    assert.equal(ok<{ config: { url: string } }>(await call('GET', '/api/v1/stores/metadata/pg', { token: t })).config.url, shown);
    const state = ok<{ metadata_stores: { name: string; config: { url: string } }[] }>(await call('GET', '/api/v1/state', { token: t }));
    assert.equal(state.metadata_stores.find((s) => s.name === 'pg')?.config.url, shown);
    problem(
      await call('POST', '/api/v1/stores/metadata', {
        token: t,
        body: { name: 'pg2', type: 'postgres', config: { url: url.replace('@db', '@unreachable') } },
      }),
      422,
      /pass%77ord=\*\*\*\*/,
    );

    // The mask sent back keeps the stored secret, as long as the rest of the URL is the same.
    const op = await addUser('op', 'operator');
    const same = { metadata_stores: [{ name: 'pg', type: 'postgres', config: { url: shown, pool_size: 3 } }] };
    ok(await call('PUT', '/api/v1/state', { token: op, body: same }));
    assert.deepEqual((await store.getStore('metadata', 'pg'))?.config, { url, pool_size: 3 });
    const moved = { metadata_stores: [{ name: 'pg', type: 'postgres', config: { url: shown.replace('@db', '@attacker') } }] };
    problem(await call('PUT', '/api/v1/state', { token: op, body: moved }), 400, /no stored secret it stands for/);
    assert.equal((await store.getStore('metadata', 'pg'))?.config.url, url);
  });

  it("only an admin may give a URL naming the server's files (sslcert, sslkey, sslrootcert) or a unix socket", async () => {
    const t = await admin();
    const op = await addUser('op', 'operator');
    const before = await everything();
    for (const [query, why] of [
      ['?sslrootcert=/dev/zero', /^body\.config\.url: the URL parameter sslrootcert names a file on the server's own file system/],
      ['?ssl%72ootcert=/etc/hostname', /the URL parameter sslrootcert names a file/],
      ['?sslkey=&sslcert=/srv/client.pem', /the URL parameters sslcert, sslkey name files .*only an admin can give/],
      ['?host=/var/run/postgresql', /the URL's host "\/var\/run\/postgresql" is a unix socket directory on the server itself/],
    ] as const) {
      const config = { url: `postgres://dfs@db:5432/x${query}` };
      problem(
        await call('POST', '/api/v1/stores/metadata', { token: op, body: { name: 'pg', type: 'postgres', config } }),
        403,
        why,
        'forbidden',
      );
      const body = { metadata_stores: [{ name: 'pg', type: 'postgres', config }] };
      const p = problem(await call('PUT', '/api/v1/state', { token: op, body }), 403, new RegExp(why.source.replace(/^\^body\\./, '')));
      assert.equal(p.item, 'metadata_stores["pg"]');
    }
    const socket = { url: 'postgres://dfs@%2Fvar%2Frun%2Fpostgresql/x' };
    problem(
      await call('POST', '/api/v1/stores/metadata', { token: op, body: { name: 'pg', type: 'postgres', config: socket } }),
      403,
      /unix socket/,
    );
    assert.deepEqual(runtime.checks, [], 'not opened: opening reads the files');
    assert.deepEqual(await everything(), before);

    // An admin may; an operator may then change the store's other settings, not the files.
    const url = 'postgres://dfs@db:5432/x?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem';
    ok(await call('POST', '/api/v1/stores/metadata', { token: t, body: { name: 'pg', type: 'postgres', config: { url } } }), 201);
    const keep = { metadata_stores: [{ name: 'pg', type: 'postgres', config: { url, pool_size: 3 } }] };
    ok(await call('PUT', '/api/v1/state', { token: op, body: keep }));
    assert.deepEqual((await store.getStore('metadata', 'pg'))?.config, { url, pool_size: 3 });
    const moved = { metadata_stores: [{ name: 'pg', type: 'postgres', config: { url: url.replace('db-ca.pem', 'other.pem') } }] };
    problem(await call('PUT', '/api/v1/state', { token: op, body: moved }), 403, /sslrootcert/);
    assert.equal((await store.getStore('metadata', 'pg'))?.config.url, url);
  });

  it("with the server's own check: a file a URL names must be a regular file, checked before the driver reads it", async () => {
    const tmp = await mkdtemp(path.join(os.tmpdir(), 'dittofs-api-pg-'));
    const real = makeApp({
      runtime: { ...runtime, checkStore: (kind, type, cfg) => checkStore(kind, type, cfg, tmp, pino({ level: 'silent' })) },
    });
    try {
      await real.ready();
      const t = await admin();
      for (const [file, why] of [
        ['/dev/null', /"\/dev\/null" is a character device, not a regular file/],
        [tmp, /" is a directory, not a regular file/],
      ] as const) {
        const config = { url: `postgres://dfs@127.0.0.1:1/x?sslrootcert=${encodeURIComponent(file)}` };
        const body = { name: 'pg', type: 'postgres', config };
        const re = new RegExp(`^metadata store "pg" cannot work: postgres URL parameter sslrootcert: .*${why.source}`);
        problem(await call('POST', '/api/v1/stores/metadata', { token: t, body, on: real }), 422, re, 'unprocessable');
      }
      assert.equal(await store.getStore('metadata', 'pg'), undefined);
    } finally {
      await real.close();
      await rm(tmp, { recursive: true, force: true });
    }
  });
});

describe('bad input', () => {
  const SQLISH = ["x'; DROP TABLE users; --", 'a"b', "O'Brien", '1 OR 1=1', 'admin\u0000', '../../etc/passwd', '${jndi:ldap://x}'];

  interface Endpoint {
    method: string;
    url: string;
    body: Record<string, unknown>;
    /** String fields to try overlong and SQL-looking values in. */
    strings: string[];
  }

  const endpoints = (): Endpoint[] => [
    { method: 'POST', url: '/api/v1/auth/login', body: { username: 'admin', password: ADMIN_PW }, strings: ['username', 'password'] },
    { method: 'POST', url: '/api/v1/auth/refresh', body: { refresh_token: 'x.y.z' }, strings: ['refresh_token'] },
    {
      method: 'POST',
      url: '/api/v1/users/me/password',
      body: { current_password: ADMIN_PW, new_password: 'new-password-2' },
      strings: ['new_password'],
    },
    {
      method: 'POST',
      url: '/api/v1/users',
      body: { username: 'newbie', email: 'n@example.com', uid: 5000 },
      strings: ['username', 'email'],
    },
    { method: 'PATCH', url: '/api/v1/users/admin', body: { email: 'a@example.com' }, strings: ['email'] },
    { method: 'POST', url: '/api/v1/groups', body: { name: 'newgroup', gid: 6000 }, strings: ['name'] },
    { method: 'POST', url: '/api/v1/stores/metadata', body: { name: 'm2', type: 'memory', config: {} }, strings: ['name', 'type'] },
    {
      method: 'POST',
      url: '/api/v1/stores/block',
      body: { name: 'b2', type: 'filesystem', config: { path: '/tmp/b2' } },
      strings: ['name', 'type'],
    },
    {
      method: 'POST',
      url: '/api/v1/shares',
      body: { name: '/new', metadata_store: 'meta', block_store: 'blocks' },
      strings: ['name', 'metadata_store', 'block_store'],
    },
    { method: 'PATCH', url: '/api/v1/shares/export', body: { read_only: true }, strings: ['default_permission'] },
    { method: 'PUT', url: '/api/v1/shares/export/permissions/users/admin', body: { level: 'read' }, strings: ['level'] },
    { method: 'PATCH', url: '/api/v1/adapters/nfs', body: { port: 3049 }, strings: [] },
    { method: 'PUT', url: '/api/v1/settings/logging.level', body: { value: 'warn' }, strings: ['value'] },
    { method: 'PUT', url: '/api/v1/state', body: { groups: [{ name: 'g1' }] }, strings: [] },
  ];

  const prepare = async (): Promise<string> => {
    await withStores();
    await store.createShare({ ...SHARE_SETTINGS_DEFAULTS, name: '/export', metadata_store: 'meta', block_store: 'blocks' });
    return admin();
  };

  it('each endpoint accepts its valid body (the baseline the variants break)', async () => {
    const t = await prepare();
    for (const e of endpoints()) {
      if (e.url === '/api/v1/auth/refresh' || e.url === '/api/v1/users/me/password') continue; // need real tokens; covered above
      const res = await call(e.method, e.url, { token: t, body: e.body });
      assert.ok(res.statusCode < 300, `${e.method} ${e.url}: ${res.statusCode} ${res.body}`);
    }
  });

  it('bad JSON, wrong content type, unknown fields, wrong types, overlong and SQL-looking strings: 400 problems that change nothing', async () => {
    const t = await prepare();
    const before = await everything();
    let tried = 0;
    for (const e of endpoints()) {
      const variants: [string, CallOptions, number][] = [
        ['bad JSON', { raw: '{"a": ' }, 400],
        ['empty body', { raw: '' }, 400],
        ['JSON array', { body: [e.body] }, 400],
        ['JSON string', { raw: '"x"' }, 400],
        ['null', { raw: 'null' }, 400],
        ['unknown field', { body: { ...e.body, extra_field: 1 } }, 400],
        ['__proto__', { raw: JSON.stringify(e.body).replace(/^\{/, '{"__proto__": {"role": "admin"},') }, 400],
        ['text/plain', { raw: JSON.stringify(e.body), headers: { 'content-type': 'text/plain' } }, 415],
        ['form', { raw: 'a=b', headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 415],
      ];
      for (const [k, v] of Object.entries(e.body)) {
        variants.push([`${k} as object`, { body: { ...e.body, [k]: { nested: true } } }, 400]);
        if (typeof v !== 'boolean') variants.push([`${k} as boolean`, { body: { ...e.body, [k]: true } }, 400]);
        if (typeof v === 'number') {
          variants.push([`${k} negative`, { body: { ...e.body, [k]: -1 } }, 400]);
          variants.push([`${k} huge`, { body: { ...e.body, [k]: 2 ** 40 } }, 400]);
          variants.push([`${k} fractional`, { body: { ...e.body, [k]: 1.5 } }, 400]);
          variants.push([`${k} as string`, { body: { ...e.body, [k]: '5000' } }, 400]);
        }
      }
      for (const k of e.strings) {
        variants.push([`${k} overlong`, { body: { ...e.body, [k]: 'a'.repeat(5000) } }, 400]);
        variants.push([`${k} as number`, { body: { ...e.body, [k]: 12 } }, 400]);
        if (k !== 'password' && k !== 'new_password' && k !== 'refresh_token') {
          for (const s of SQLISH) variants.push([`${k} = ${s}`, { body: { ...e.body, [k]: s } }, 400]);
        }
      }
      for (const [what, o, status] of variants) {
        const res = await call(e.method, e.url, { token: t, ...o });
        const p = problem(res, status);
        assert.ok(p.detail.length > 0, `${e.method} ${e.url} ${what}`);
        tried++;
      }
    }
    assert.ok(tried > 300, `tried ${tried} variants`);
    assert.deepEqual(await everything(), before, 'nothing changed');
    // The tables are all still there and answer.
    assert.ok((await store.listUsers()).length === 1);
  });

  it('SQL-looking and odd names in URLs are 400 or 404 and change nothing', async () => {
    const t = await prepare();
    const before = await everything();
    for (const s of SQLISH) {
      const e = encodeURIComponent(s);
      for (const [m, u] of [
        ['GET', `/api/v1/users/${e}`],
        ['DELETE', `/api/v1/users/${e}`],
        ['GET', `/api/v1/groups/${e}`],
        ['DELETE', `/api/v1/stores/metadata/${e}`],
        ['GET', `/api/v1/shares/${e}`],
        ['DELETE', `/api/v1/shares/${e}`],
        ['GET', `/api/v1/shares/export/permissions/../../users`],
        ['PUT', `/api/v1/groups/${e}/members/${e}`],
        ['GET', `/api/v1/settings/${e}`],
      ] as const) {
        const res = await call(m, u, { token: t });
        assert.ok([400, 404].includes(res.statusCode), `${m} ${u}: ${res.statusCode}`);
        problem(res, res.statusCode);
      }
    }
    problem(await call('GET', `/api/v1/users/${'a'.repeat(2000)}`, { token: t }), 414);
    problem(await call('GET', `/api/v1/users/${'a'.repeat(100)}`, { token: t }), 400);
    problem(await call('GET', '/api/v1/users/%E0%A4%A', { token: t }), 400);
    assert.deepEqual(await everything(), before);
  });

  it('unknown routes and methods are 404 problems; a too-large body is 413', async () => {
    const t = await admin();
    problem(await call('GET', '/api/v1/nope', { token: t }), 404, /no such resource/);
    problem(await call('GET', '/nope'), 404);
    problem(await call('GET', '/api/v1/users?limit=5', { token: t }), 400, /unknown property "limit"/);
    problem(await call('DELETE', '/api/v1/users', { token: t }), 404);
    problem(await call('POST', '/api/v1/groups', { token: t, raw: JSON.stringify({ name: 'x'.repeat(2 * 1024 * 1024) }) }), 413);
  });
});

describe('filesystem block stores', () => {
  const fsBody = (p: string, name = 'local') => ({ name, type: 'filesystem', config: { path: p } });

  it('only an admin creates one: an operator gets 403 before the store is even opened', async () => {
    const op = await addUser('op', 'operator');
    const before = await everything();
    problem(
      await call('POST', '/api/v1/stores/block', { token: op, body: fsBody('/srv/blocks') }),
      403,
      /only an admin can create a filesystem block store/,
      'forbidden',
    );
    problem(
      await call('PUT', '/api/v1/state', { token: op, body: { block_stores: [fsBody('/srv/blocks')] } }),
      403,
      /only an admin can create or change a filesystem block store/,
    );
    assert.deepEqual(runtime.checks, [], 'not opened: opening creates the directory');
    assert.deepEqual(await everything(), before);
    // Other block stores stay open to operators, and an unchanged filesystem store in a desired
    // state (one an admin made) is no change.
    ok(await call('POST', '/api/v1/stores/block', { token: op, body: { name: 'mem', type: 'memory', config: {} } }), 201);
    ok(await call('POST', '/api/v1/stores/block', { token: await admin(), body: fsBody('/srv/blocks') }), 201);
    const state = ok<{ block_stores: unknown[] }>(await call('GET', '/api/v1/state', { token: await admin() }));
    ok(await call('PUT', '/api/v1/state', { token: op, body: { block_stores: state.block_stores } }));
    problem(
      await call('PUT', '/api/v1/state', { token: op, body: { block_stores: [fsBody('/srv/other')] } }),
      403,
      /filesystem block store/,
    );
  });

  it('system directories and pseudo file systems are a 422 problem, for an admin too, and change nothing', async () => {
    const t = await admin();
    const before = await everything();
    for (const dir of ['/', '/etc', '/usr', '/var', '/boot', '/root', '/home', '/etc/../etc/', '/proc/blocks', '/dev/shm/x']) {
      const p = problem(
        await call('POST', '/api/v1/stores/block', { token: t, body: fsBody(dir) }),
        422,
        /^body\.config\.path: \/\S* (is a system directory|is under \/(proc|dev))/,
        'unprocessable',
      );
      assert.ok(p.detail.length < 200, p.detail);
    }
    const st = problem(
      await call('PUT', '/api/v1/state', { token: t, body: { block_stores: [fsBody('/home', 'h')] } }),
      422,
      /\/home is a system directory/,
    );
    assert.equal(st.item, 'block_stores["h"]');
    assert.deepEqual(runtime.checks, []);
    assert.deepEqual(await everything(), before);
  });

  it('an embedded metadata store with a path is the same: admins only, never a system directory', async () => {
    const op = await addUser('op2', 'operator');
    const t = await admin();
    const before = await everything();
    const emb = (p: string) => ({ name: 'emb', type: 'embedded', config: { path: p } });
    problem(
      await call('POST', '/api/v1/stores/metadata', { token: op, body: emb('/srv/meta') }),
      403,
      /only an admin can create an embedded metadata store with a path/,
    );
    problem(
      await call('PUT', '/api/v1/state', { token: op, body: { metadata_stores: [emb('/srv/meta')] } }),
      403,
      /only an admin can create or change an embedded metadata store with a path/,
    );
    for (const dir of ['/', '/etc', '/root', '/proc/x'])
      problem(
        await call('POST', '/api/v1/stores/metadata', { token: t, body: emb(dir) }),
        422,
        /^body\.config\.path: \/\S* (is a system directory|is under \/proc)/,
      );
    assert.deepEqual(runtime.checks, [], 'not opened: opening creates the directory and makes it 0700');
    assert.deepEqual(await everything(), before);
    // Without a path it lives under the data directory: operators may create it.
    ok(await call('POST', '/api/v1/stores/metadata', { token: op, body: { name: 'emb2', type: 'embedded', config: {} } }), 201);
  });

  it("with the server's own check: the data directory's parents and foreign directories are refused, an empty one is claimed", async () => {
    const tmp = await mkdtemp(path.join(os.tmpdir(), 'dittofs-api-fs-'));
    const dataDir = path.join(tmp, 'srv', 'data');
    const real = makeApp({
      runtime: { ...runtime, checkStore: (kind, type, cfg) => checkStore(kind, type, cfg, dataDir, pino({ level: 'silent' })) },
    });
    try {
      await real.ready();
      const t = await admin();
      await mkdir(path.join(tmp, 'foreign'));
      await writeFile(path.join(tmp, 'foreign', 'notes.txt'), 'mine');
      for (const [dir, why] of [
        [path.join(tmp, 'srv'), /holds the data directory/],
        [dataDir, /is the data directory/],
        [path.join(tmp, 'foreign'), /is not empty \("notes\.txt"\) and has no \.dittofs-block-store file/],
      ] as const) {
        problem(await call('POST', '/api/v1/stores/block', { token: t, body: fsBody(dir), on: real }), 422, why, 'unprocessable');
      }
      assert.deepEqual(await readdir(path.join(tmp, 'foreign')), ['notes.txt'], 'nothing written to a refused directory');
      assert.equal(await store.getStore('block', 'local'), undefined);
      const mine = path.join(tmp, 'blocks');
      ok(await call('POST', '/api/v1/stores/block', { token: t, body: fsBody(mine), on: real }), 201);
      assert.ok((await readdir(mine)).includes('.dittofs-block-store'), 'the marker is written');
      // Without a path the store will live under the data directory by its name: the check probes a
      // scratch directory there and removes it (it used to leave <data>/blocks/check claimed).
      ok(await call('POST', '/api/v1/stores/block', { token: t, body: { name: 'dflt', type: 'filesystem', config: {} }, on: real }), 201);
      assert.deepEqual(await readdir(dataDir), [], 'the probe leaves nothing behind');
    } finally {
      await real.close();
      await rm(tmp, { recursive: true, force: true });
    }
  });
});

describe('logs', () => {
  it('per-request lines are debug, and passwords, tokens and secrets are redacted', async () => {
    const t = await admin();
    ok(await call('GET', '/api/v1/users', { token: t }));
    const lines = logs.map((l) => JSON.parse(l) as { level: number; msg: string; url?: string });
    const req = lines.find((l) => l.msg === 'API request' && l.url === '/api/v1/users');
    assert.equal(req?.level, 20, 'debug');
    assert.ok(!lines.some((l) => l.level >= 30 && /request/.test(l.msg) && l.url !== undefined), 'no per-request line at info');
    app.log.info(
      { password: ADMIN_PW, body: { new_password: ADMIN_PW, secret_access_key: S3_SECRET }, headers: { authorization: `Bearer ${t}` } },
      'probe',
    );
    const probe = logs.find((l) => l.includes('"probe"'))!;
    assert.ok(probe.includes('[redacted]'));
    assert.ok(!probe.includes(ADMIN_PW) && !probe.includes(S3_SECRET) && !probe.includes(t));
  });
});

describe('rate limits', () => {
  it('login: 429 problem past the limit per address and username; other usernames unaffected', async () => {
    const limited = makeApp({ rateLimit: { loginMax: 3, loginTimeWindowMs: 60_000, max: 1000 } });
    try {
      for (let i = 0; i < 3; i++)
        problem(await call('POST', '/api/v1/auth/login', { on: limited, body: { username: 'admin', password: `wrong-${i}-pw` } }), 401);
      const p = problem(
        await call('POST', '/api/v1/auth/login', { on: limited, body: { username: 'admin', password: ADMIN_PW } }),
        429,
        /too many requests/,
      );
      assert.equal(p.type, 'urn:dittofs:problem:rate-limited');
      problem(await call('POST', '/api/v1/auth/login', { on: limited, body: { username: 'other', password: 'whatever-1' } }), 401);
    } finally {
      await limited.close();
    }
  });

  it('login and password change: 429 past the limit per address, whatever the usernames; other addresses unaffected', async () => {
    const limited = makeApp({ rateLimit: { loginMax: 3, loginAddressMax: 5, max: 1000 } });
    try {
      // Cycling usernames stays under the per-username limit but not under the per-address one.
      for (let i = 0; i < 5; i++)
        problem(await call('POST', '/api/v1/auth/login', { on: limited, body: { username: `ghost-${i}`, password: 'wrong-pw-1' } }), 401);
      const r = await call('POST', '/api/v1/auth/login', { on: limited, body: { username: 'admin', password: ADMIN_PW } });
      problem(r, 429, /too many requests/, 'rate-limited');
      assert.ok(Number(r.headers['retry-after']) > 0, 'retry-after says when');
      const t = await admin();
      const body = { current_password: ADMIN_PW, new_password: 'new-password-2' };
      problem(await call('POST', '/api/v1/users/me/password', { on: limited, token: t, body }), 429);
      ok(await call('POST', '/api/v1/auth/login', { on: limited, from: '10.0.0.2', body: { username: 'admin', password: ADMIN_PW } }));
    } finally {
      await limited.close();
    }
  });

  it("behind a trusted proxy: the login limit per address counts the X-Forwarded-For client; an untrusted peer's header is ignored", async () => {
    const limited = makeApp({ trustProxy: ['10.9.0.0/16'], rateLimit: { loginMax: 100, loginAddressMax: 2, max: 1000 } });
    try {
      const login = (from: string, xff?: string) =>
        call('POST', '/api/v1/auth/login', {
          on: limited,
          from,
          ...(xff === undefined ? {} : { headers: { 'x-forwarded-for': xff } }),
          body: { username: 'ghost', password: 'wrong-pw-1' },
        });
      // Two clients behind one proxy (10.9.0.5): each has its own allowance.
      for (let i = 0; i < 2; i++) problem(await login('10.9.0.5', '198.51.100.1'), 401);
      problem(await login('10.9.0.5', '198.51.100.1'), 429);
      problem(await login('10.9.0.5', '198.51.100.2'), 401, undefined, 'unauthorized');
      // A chain of two listed proxies: the client is the rightmost address not listed.
      problem(await login('10.9.0.5', '198.51.100.1, 10.9.0.7'), 429);
      // Forged hops in front of the real client count as the real client's.
      problem(await login('10.9.0.5', '203.0.113.9, 198.51.100.2'), 401);
      problem(await login('10.9.0.5', '203.0.113.9, 198.51.100.2'), 429);
      // A peer that is not a listed proxy is counted as itself, whatever header it sends.
      for (let i = 0; i < 2; i++) problem(await login('192.0.2.50', `203.0.113.${i + 20}`), 401);
      problem(await login('192.0.2.50', '203.0.113.99'), 429);
    } finally {
      await limited.close();
    }
  });

  it('general: 429 problem past the limit per user', async () => {
    const limited = makeApp({ rateLimit: { max: 5, timeWindowMs: 60_000 } });
    try {
      const t = await admin();
      for (let i = 0; i < 5; i++) ok(await call('GET', '/api/v1/groups', { on: limited, token: t }));
      problem(await call('GET', '/api/v1/groups', { on: limited, token: t }), 429);
      ok(await call('GET', '/health', { on: limited }), 200);
    } finally {
      await limited.close();
    }
  });

  it('general: a revoked token cannot use up the allowance of its user', async () => {
    const limited = makeApp({ rateLimit: { max: 5, timeWindowMs: 60_000 } });
    try {
      const stale = await admin();
      await store.updateUser('admin', { revoke_tokens: true });
      // Whoever holds the revoked token (signed and unexpired) spends its own allowance, not admin's.
      for (let i = 0; i < 10; i++) {
        const r = await call('GET', '/api/v1/groups', { on: limited, token: stale, from: `10.0.1.${i}` });
        assert.ok(r.statusCode === 401 || r.statusCode === 429, `expected 401 or 429, got ${r.statusCode}`);
      }
      const t = await admin();
      for (let i = 0; i < 5; i++) ok(await call('GET', '/api/v1/groups', { on: limited, token: t }));
      problem(await call('GET', '/api/v1/groups', { on: limited, token: t }), 429);
    } finally {
      await limited.close();
    }
  });
});

describe('OpenAPI', () => {
  it('is valid JSON with every route, each with request and response schemas', async () => {
    const doc = ok<{
      openapi: string;
      paths: Record<string, Record<string, { responses?: object; requestBody?: object; parameters?: unknown[] }>>;
    }>(await call('GET', '/api/v1/openapi.json'));
    assert.equal(doc.openapi, '3.1.0');
    const expected: [string, string, boolean][] = [
      ['get', '/health', false],
      ['get', '/health/ready', false],
      ['post', '/api/v1/auth/login', true],
      ['post', '/api/v1/auth/refresh', true],
      ['get', '/api/v1/auth/me', false],
      ['post', '/api/v1/users/me/password', true],
      ['get', '/api/v1/users', false],
      ['post', '/api/v1/users', true],
      ['get', '/api/v1/users/{username}', false],
      ['patch', '/api/v1/users/{username}', true],
      ['delete', '/api/v1/users/{username}', false],
      ['get', '/api/v1/groups', false],
      ['post', '/api/v1/groups', true],
      ['get', '/api/v1/groups/{name}', false],
      ['delete', '/api/v1/groups/{name}', false],
      ['put', '/api/v1/groups/{name}/members/{username}', false],
      ['delete', '/api/v1/groups/{name}/members/{username}', false],
      ['get', '/api/v1/stores/metadata', false],
      ['post', '/api/v1/stores/metadata', true],
      ['get', '/api/v1/stores/metadata/{name}', false],
      ['delete', '/api/v1/stores/metadata/{name}', false],
      ['get', '/api/v1/stores/block', false],
      ['post', '/api/v1/stores/block', true],
      ['get', '/api/v1/stores/block/{name}', false],
      ['delete', '/api/v1/stores/block/{name}', false],
      ['get', '/api/v1/shares', false],
      ['post', '/api/v1/shares', true],
      ['get', '/api/v1/shares/{name}', false],
      ['patch', '/api/v1/shares/{name}', true],
      ['delete', '/api/v1/shares/{name}', false],
      ['get', '/api/v1/shares/{name}/permissions', false],
      ['put', '/api/v1/shares/{name}/permissions/users/{username}', true],
      ['delete', '/api/v1/shares/{name}/permissions/users/{username}', false],
      ['put', '/api/v1/shares/{name}/permissions/groups/{group}', true],
      ['delete', '/api/v1/shares/{name}/permissions/groups/{group}', false],
      ['get', '/api/v1/adapters', false],
      ['get', '/api/v1/adapters/{type}', false],
      ['patch', '/api/v1/adapters/{type}', true],
      ['get', '/api/v1/settings', false],
      ['get', '/api/v1/settings/{key}', false],
      ['put', '/api/v1/settings/{key}', true],
      ['get', '/api/v1/state', false],
      ['put', '/api/v1/state', true],
      ['get', '/api/v1/openapi.json', false],
    ];
    for (const [method, path, hasBody] of expected) {
      const op = doc.paths[path]?.[method];
      assert.ok(op, `${method.toUpperCase()} ${path} is documented`);
      assert.ok(op.responses && Object.keys(op.responses).length >= 2, `${method} ${path} has responses`);
      if (hasBody) assert.ok(op.requestBody, `${method} ${path} has a request body schema`);
      if (path.includes('{')) assert.ok((op.parameters ?? []).length > 0, `${method} ${path} documents its parameters`);
    }
    const count = Object.values(doc.paths).reduce((n, ops) => n + Object.keys(ops).length, 0);
    assert.equal(count, expected.length, 'no undocumented extras, none missing');
  });
});

/**
 * Sends `head` (request line and headers) and `body` on a raw connection to `port`, and resolves
 * with what the server sent once it closed the connection or `until` matched (the body is not
 * completed: a client that stalls).
 */
function rawRequest(port: number, head: string, body: string, until: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let got = '';
    const done = (): void => {
      sock.destroy();
      resolve(got);
    };
    sock.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (until.test(got)) done();
    });
    sock.on('close', done);
    sock.on('error', reject);
    sock.write(head + body);
  });
}

describe('over real HTTP: a client without a token makes the server hold (almost) nothing', () => {
  it('no such route: 404 before the body is read; a public route: 413 past its small body limit; a stalled request is closed', async () => {
    const live = makeApp({ requestTimeoutMs: 500 });
    try {
      await live.listen({ host: '127.0.0.1', port: 0 });
      const { port } = live.server.address() as net.AddressInfo;
      const head = (path: string, length: number): string =>
        `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`;
      // 1 MiB announced, 10 bytes sent: answered at once, without waiting for (and keeping) the rest.
      const missing = await rawRequest(port, head('/api/v1/no-such-route', 1_047_553), '{"aaaaaaa"', /\r\n\r\n\{.*\}/s);
      assert.match(missing, /^HTTP\/1\.1 404 /);
      assert.match(missing, /no such resource: POST \/api\/v1\/no-such-route/);
      const login = await rawRequest(port, head('/api/v1/auth/login', PUBLIC_BODY_LIMIT + 1), '{"username"', /\r\n\r\n\{.*\}/s);
      assert.match(login, /^HTTP\/1\.1 413 /);
      // Within the limit but never finished: closed once the request deadline passed.
      const stalled = await rawRequest(port, head('/api/v1/auth/login', 1000), '{"username"', /$^/);
      assert.match(stalled, /^(HTTP\/1\.1 408 |$)/, `a stalled request is closed: ${JSON.stringify(stalled.slice(0, 80))}`);
    } finally {
      await live.close();
    }
  });
});

/** A raw connection from `from` (a loopback address), open once connected; `closed` settles when the server closes it. */
async function connectFrom(
  port: number,
  from: string,
): Promise<{ sock: net.Socket; closed: Promise<void>; ask: (req: string) => Promise<string> }> {
  const sock = net.connect({ port, host: '127.0.0.1', localAddress: from });
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
  sock.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  let got = '';
  let waiter: (() => void) | null = null;
  sock.on('data', (d: Buffer) => {
    got += d.toString('latin1');
    waiter?.();
  });
  // One request on the kept-alive connection: its whole answer (a JSON body), or what came before the close.
  const ask = (req: string): Promise<string> =>
    new Promise((resolve) => {
      got = '';
      const check = (): void => {
        const m = /content-length: (\d+)\r\n/i.exec(got);
        const at = got.indexOf('\r\n\r\n');
        if (m && at >= 0 && got.length >= at + 4 + Number(m[1])) resolve(got);
      };
      waiter = check;
      void closed.then(() => resolve(got));
      sock.write(req);
    });
  return { sock, closed, ask };
}

/** Starts `live` on 127.0.0.1, counting the connections it accepts; with an admin's token. */
async function listenCounting(live: ReturnType<typeof makeApp>): Promise<{ port: number; accepted: () => number; token: string }> {
  await live.listen({ host: '127.0.0.1', port: 0 });
  const { port } = live.server.address() as net.AddressInfo;
  let accepted = 0;
  live.server.on('connection', () => accepted++);
  const token = (await call('POST', '/api/v1/auth/login', { body: { username: 'admin', password: ADMIN_PW } })).json<{
    access_token: string;
  }>().access_token;
  return { port, accepted: () => accepted, token };
}

describe('over real HTTP: connections', () => {
  it('one address cannot take every connection, and connections that never authenticate make room for one that does', async () => {
    const live = makeApp({ maxConnectionsPerAddress: 3, maxConnections: 5 });
    try {
      const { port, accepted, token } = await listenCounting(live);
      const authed = `GET /api/v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`;
      // 127.0.0.2 holds three idle connections (its cap), older than the second's grace.
      const idle = [];
      for (let i = 0; i < 3; i++) idle.push(await connectFrom(port, '127.0.0.2'));
      await until(() => accepted() === 3, 30_000, 'the server has the three connections');
      await new Promise((r) => setTimeout(r, 1_100));
      // A fourth from there, authenticated: the oldest idle one goes, this one is served.
      const a = await connectFrom(port, '127.0.0.2');
      assert.match(await a.ask(authed), /^HTTP\/1\.1 200 /);
      await idle[0]!.closed;
      // Now the address holds two idle and one authenticated connection; two more authenticate.
      assert.match(await idle[1]!.ask(authed), /^HTTP\/1\.1 200 /);
      assert.match(await idle[2]!.ask(authed), /^HTTP\/1\.1 200 /);
      // At its cap with every connection proven: a newcomer from there is closed at once, unserved.
      const refused = await connectFrom(port, '127.0.0.2').catch(() => null);
      if (refused) assert.equal(await refused.ask(authed), '', 'closed without an answer');
      for (const c of [a, idle[1]!, idle[2]!]) assert.equal(c.sock.destroyed, false, 'the authenticated connections stay');
      // Another address is served meanwhile (the listener has room for 5).
      const other = await connectFrom(port, '127.0.0.3');
      assert.match(await other.ask(authed), /^HTTP\/1\.1 200 /);
      for (const c of [a, idle[1]!, idle[2]!, other]) c.sock.destroy();
    } finally {
      await live.close();
    }
  });
});

describe('trust_proxy: true', () => {
  it('is warned about at start, naming the setting and what to do; a list of proxies is not', async () => {
    const warning = (): string[] => logs.filter((l) => l.includes('trust_proxy is true'));
    logs.length = 0;
    const listed = makeApp({ trustProxy: ['10.0.0.0/8'], settings: 'server.api' });
    await listed.close();
    assert.deepEqual(warning(), []);
    const everyone = makeApp({ trustProxy: true, settings: 'server.api' });
    await everyone.close();
    assert.equal(warning().length, 1);
    const line = JSON.parse(warning()[0]!) as { level: number; setting: string; msg: string };
    assert.equal(line.level, 40, 'a warning');
    assert.equal(line.setting, 'server.api.trust_proxy');
    assert.match(line.msg, /no peer is capped per address/);
    assert.match(line.msg, /list the proxies' addresses or CIDR ranges instead$/);
  });
});

describe('over real HTTP: connections through a trusted proxy', () => {
  it('are not capped per address (one proxy carries many clients); other addresses still are', async () => {
    const live = makeApp({ trustProxy: ['127.0.0.2'], maxConnectionsPerAddress: 2, maxConnections: 50 });
    const socks: net.Socket[] = [];
    try {
      const { port, accepted, token } = await listenCounting(live);
      const authed = `GET /api/v1/users HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.1\r\nAuthorization: Bearer ${token}\r\n\r\n`;
      // The proxy (127.0.0.2) holds five connections that have carried nothing yet, past the cap
      // of 2, and a sixth is served: none is closed to make room.
      const proxy = [];
      for (let i = 0; i < 5; i++) proxy.push(await connectFrom(port, '127.0.0.2'));
      socks.push(...proxy.map((c) => c.sock));
      await until(() => accepted() === 5, 30_000, 'the server has the five connections');
      const sixth = await connectFrom(port, '127.0.0.2');
      socks.push(sixth.sock);
      assert.match(await sixth.ask(authed), /^HTTP\/1\.1 200 /);
      for (const c of proxy) assert.match(await c.ask(authed), /^HTTP\/1\.1 200 /, 'every connection of the proxy is served');
      // Another address is capped at 2: a third connection, while the two are in their grace
      // second, is closed unserved.
      const direct = [await connectFrom(port, '127.0.0.3'), await connectFrom(port, '127.0.0.3')];
      socks.push(...direct.map((c) => c.sock));
      const refused = await connectFrom(port, '127.0.0.3').catch(() => null);
      if (refused) {
        socks.push(refused.sock);
        assert.equal(await refused.ask(authed), '', 'closed without an answer');
      }
      for (const c of direct) assert.match(await c.ask(authed), /^HTTP\/1\.1 200 /);
    } finally {
      for (const s of socks) s.destroy();
      await live.close();
    }
  });
});

describe('over real HTTP: a connection carrying an authenticated request', () => {
  it('is not closed to make room while its answer is on the way', async () => {
    const live = makeApp({ maxConnectionsPerAddress: 2 });
    // The answer of GET /api/v1/users waits until `open` (server.ts's onSend waits for a change to
    // be applied everywhere, and PUT /api/v1/state for a convergence, as long).
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    let waiting = 0;
    live.addHook('onSend', async (req, _reply, payload) => {
      if (req.url === '/api/v1/users') {
        waiting++;
        await gate;
      }
      return payload;
    });
    try {
      await live.listen({ host: '127.0.0.1', port: 0 });
      const { port } = live.server.address() as net.AddressInfo;
      const token = (await call('POST', '/api/v1/auth/login', { body: { username: 'admin', password: ADMIN_PW } })).json<{
        access_token: string;
      }>().access_token;
      const a = await connectFrom(port, '127.0.0.2');
      const answer = a.ask(`GET /api/v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`);
      await until(() => waiting === 1, 30_000, 'the authenticated request is being answered');
      await new Promise((r) => setTimeout(r, 1_100));
      // The address at its cap (2) and a third connection from there: `a` is not the one to go.
      const b = await connectFrom(port, '127.0.0.2');
      const c = await connectFrom(port, '127.0.0.2').catch(() => null);
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(a.sock.destroyed, false, 'the connection carrying an authenticated request stays');
      open();
      assert.match(await answer, /^HTTP\/1\.1 200 /);
      for (const x of [a, b, c]) x?.sock.destroy();
    } finally {
      open();
      await live.close();
    }
  });
});

describe('over real HTTP', () => {
  it('listens on 127.0.0.1, logs in, calls with the token, answers problems', async () => {
    const live = makeApp();
    try {
      await live.listen({ host: '127.0.0.1', port: 0 });
      const addr = live.server.address();
      assert.ok(addr !== null && typeof addr === 'object');
      const base = `http://127.0.0.1:${addr.port}`;
      const login = await fetch(`${base}/api/v1/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username: 'admin', password: ADMIN_PW }),
      });
      assert.equal(login.status, 200);
      const { access_token } = (await login.json()) as { access_token: string };
      const users = await fetch(`${base}/api/v1/users`, { headers: { authorization: `Bearer ${access_token}` } });
      assert.equal(users.status, 200);
      const list = (await users.json()) as { username: string }[];
      responses.push(JSON.stringify(list));
      assert.deepEqual(
        list.map((u) => u.username),
        ['admin'],
      );
      const bad = await fetch(`${base}/api/v1/groups`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${access_token}` },
        body: '{"name": ',
      });
      assert.equal(bad.status, 400);
      assert.match(bad.headers.get('content-type') ?? '', /^application\/problem\+json/);
      const p = (await bad.json()) as { detail: string };
      assert.equal(p.detail, 'the request body is not valid JSON');
      const anon = await fetch(`${base}/api/v1/users`);
      assert.equal(anon.status, 401);
      assert.equal(anon.headers.get('www-authenticate'), 'Bearer');
    } finally {
      await live.close();
    }
  });
});
