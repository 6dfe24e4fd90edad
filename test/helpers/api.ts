// The REST API of a running server as a client uses it: JSON bodies, a bearer token, the status and
// the parsed reply.
import assert from 'node:assert/strict';
import { TEST_ADMIN_PASSWORD } from './server.js';

export interface ApiReply<T> {
  status: number;
  /** The parsed JSON body; undefined when the reply has none. */
  body: T;
}

/** Sends `method url` to the API at `base` (`http://host:port`), `body` as JSON, `token` as the bearer. */
export async function apiRequest<T = unknown>(
  base: string,
  method: string,
  url: string,
  body?: unknown,
  token?: string,
): Promise<ApiReply<T>> {
  const res = await fetch(`${base}${url}`, {
    method,
    headers: {
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: (text === '' ? undefined : JSON.parse(text)) as T };
}

export interface AdminLogin {
  status: number;
  /** Set when the login succeeded. */
  token: string | undefined;
  /** Set when the login succeeded: the password is the initial one and must be changed. */
  mustChange: boolean | undefined;
  body: unknown;
}

/** POST /api/v1/auth/login as `admin`. */
export async function adminLogin(base: string, password: string): Promise<AdminLogin> {
  const r = await apiRequest<{ access_token?: string; must_change_password?: boolean } | undefined>(base, 'POST', '/api/v1/auth/login', {
    username: 'admin',
    password,
  });
  return { status: r.status, token: r.body?.access_token, mustChange: r.body?.must_change_password, body: r.body };
}

/** The admin password the tests change the initial one to. */
export const CHANGED_ADMIN_PASSWORD = 'admin-Passw0rd-changed';

/**
 * Logs in as the admin of a server started by startDittofs, changes the initial password (the API
 * refuses anything else before that) and logs in again: the admin's token under `newPassword`.
 */
export async function takeOverAdmin(base: string, newPassword = CHANGED_ADMIN_PASSWORD): Promise<string> {
  const first = await adminLogin(base, TEST_ADMIN_PASSWORD);
  assert.ok(first.token, `initial admin login: ${first.status} ${JSON.stringify(first.body)}`);
  const changed = await apiRequest(
    base,
    'POST',
    '/api/v1/users/me/password',
    { current_password: TEST_ADMIN_PASSWORD, new_password: newPassword },
    first.token,
  );
  assert.equal(changed.status, 204, JSON.stringify(changed.body));
  const admin = await adminLogin(base, newPassword);
  assert.ok(admin.token, `admin login with the changed password: ${admin.status} ${JSON.stringify(admin.body)}`);
  return admin.token;
}

/** Creates a control-plane user (no password change required) and grants it `level` on `share`. */
export async function addShareUser(
  base: string,
  token: string,
  user: { username: string; password: string; uid: number; gid: number },
  share = 'export',
  level = 'read-write',
): Promise<void> {
  const created = await apiRequest(base, 'POST', '/api/v1/users', { ...user, must_change_password: false }, token);
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const granted = await apiRequest(base, 'PUT', `/api/v1/shares/${share}/permissions/users/${user.username}`, { level }, token);
  assert.equal(granted.status, 200, JSON.stringify(granted.body));
}
