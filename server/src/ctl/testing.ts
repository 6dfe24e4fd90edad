// Test support: a CtlIo that records output and serves canned standard input, so command lines run
// in-process.
import { Readable, Writable } from 'node:stream';
import type { CtlIo } from './io.js';

export interface FakeIo extends CtlIo {
  stdout: string;
  stderr: string;
  requests: { method: string; url: string; headers: Record<string, string>; body?: unknown }[];
}

export type FakeResponder = (req: {
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: unknown;
}) => Response | Promise<Response>;

const refuse: FakeResponder = (req) => {
  throw new Error(`unexpected request ${req.method} ${req.url}`);
};

export function fakeIo(opts: { env?: Record<string, string>; stdin?: string; respond?: FakeResponder; homedir?: string } = {}): FakeIo {
  const respond = opts.respond ?? refuse;
  const io: FakeIo = {
    stdout: '',
    stderr: '',
    requests: [],
    out: (t) => {
      io.stdout += t;
    },
    err: (t) => {
      io.stderr += t;
    },
    stdin: Readable.from(opts.stdin === undefined ? [] : [opts.stdin]),
    interactive: false,
    promptOutput: new Writable({ write: (_c, _e, cb) => cb() }),
    env: opts.env ?? {},
    homedir: opts.homedir ?? '/nonexistent-home',
    fetch: async (input: string | URL | Request, init?: RequestInit) => {
      const headers = Object.fromEntries(Object.entries((init?.headers ?? {}) as Record<string, string>));
      const req = {
        method: init?.method ?? 'GET',
        url: typeof input === 'string' ? input : input instanceof URL ? input.href : input.url,
        headers,
        ...(typeof init?.body === 'string' ? { body: JSON.parse(init.body) as unknown } : {}),
      };
      io.requests.push(req);
      return respond(req);
    },
  };
  return io;
}

export function jsonResponse(status: number, body: unknown, type = 'application/json'): Response {
  return new Response(status === 204 ? null : JSON.stringify(body), { status, headers: { 'content-type': type } });
}

export function problem(status: number, detail: string, type = 'urn:dittofs:problem:x'): Response {
  return jsonResponse(status, { type, title: 'T', status, detail }, 'application/problem+json');
}
