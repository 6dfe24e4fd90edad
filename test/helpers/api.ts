// The REST API of a running server as a client uses it: JSON bodies, a bearer token, the status and
// the parsed reply.

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
