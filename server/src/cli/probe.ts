// Is the server up? GET /health/ready on the API port when the API is on; otherwise, whether the
// NFS port accepts connections. Used by `dittofs status` and `dittofs start --background`.
import net from 'node:net';
import type { DittoConfig } from '../config/types.js';
import { BodyTooLargeError, httpFetch } from '../ctl/http.js';

/** One check of GET /health/ready. */
export interface ReadinessCheck {
  ok: boolean;
  detail?: string;
}

export interface Readiness {
  /** The server says it is ready (or, API off, NFS accepts connections). */
  ready: boolean;
  /** Something answered at all. */
  reachable: boolean;
  /** How it was asked. */
  via: 'api' | 'nfs' | 'none';
  /** `http://127.0.0.1:8080` (API on) or `127.0.0.1:12049` (NFS). */
  target?: string;
  checks: Record<string, ReadinessCheck>;
  /** Why it is not ready or not reachable, in words. */
  detail?: string;
}

/** Where to connect to reach a listener bound to `bind`: loopback for the wildcard addresses. */
export function probeHost(bind: string): string {
  if (bind === '' || bind === '0.0.0.0') return '127.0.0.1';
  if (bind === '::') return '::1';
  return bind;
}

function hostForUrl(host: string): string {
  return net.isIPv6(host) ? `[${host}]` : host;
}

/** The API's base URL as this host reaches it, or undefined when the API is off. */
export function apiBaseUrl(config: DittoConfig): string | undefined {
  const api = config.server.api;
  return api.enabled ? `http://${hostForUrl(probeHost(api.bind))}:${api.port}` : undefined;
}

/** Resolves true if host:port accepts a TCP connection within `timeoutMs`. */
export function tcpAccepts(host: string, port: number, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

function isCheck(v: unknown): v is ReadinessCheck {
  return typeof v === 'object' && v !== null && typeof (v as { ok?: unknown }).ok === 'boolean';
}

/** Asks the server described by `config` whether it is ready. Never throws. */
export async function probeReadiness(config: DittoConfig, timeoutMs = 3000): Promise<Readiness> {
  const base = apiBaseUrl(config);
  if (base !== undefined) {
    const url = `${base}/health/ready`;
    try {
      // Not the global fetch, which refuses the Fetch standard's "bad ports" (ctl/http.ts).
      const res = await httpFetch(url, { signal: AbortSignal.timeout(timeoutMs) });
      const body = (await res.json().catch(() => undefined)) as { ready?: unknown; checks?: unknown } | undefined;
      const checks: Record<string, ReadinessCheck> = {};
      if (typeof body?.checks === 'object' && body.checks !== null) {
        for (const [k, v] of Object.entries(body.checks))
          if (isCheck(v)) checks[k] = v.detail === undefined ? { ok: v.ok } : { ok: v.ok, detail: String(v.detail) };
      }
      const ready = res.status === 200 && body?.ready === true;
      const failing = Object.entries(checks)
        .filter(([, c]) => !c.ok)
        .map(([k, c]) => `${k}: ${c.detail ?? 'failing'}`);
      return {
        ready,
        reachable: true,
        via: 'api',
        target: base,
        checks,
        ...(ready ? {} : { detail: failing.length > 0 ? failing.join('; ') : `GET /health/ready answered ${res.status}` }),
      };
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } };
      if (e.cause instanceof BodyTooLargeError) {
        return {
          ready: false,
          reachable: true,
          via: 'api',
          target: base,
          checks: {},
          detail: `GET /health/ready answered: ${e.cause.message}`,
        };
      }
      const why = e.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : (e.cause?.code ?? e.message);
      return { ready: false, reachable: false, via: 'api', target: base, checks: {}, detail: `cannot reach ${url}: ${why}` };
    }
  }
  const nfs = config.adapters.nfs;
  if (nfs.enabled) {
    const host = probeHost(nfs.bind);
    const target = `${hostForUrl(host)}:${nfs.port}`;
    const ok = await tcpAccepts(host, nfs.port, timeoutMs);
    return {
      ready: ok,
      reachable: ok,
      via: 'nfs',
      target,
      checks: { nfs: ok ? { ok } : { ok, detail: 'not accepting connections' } },
      ...(ok ? {} : { detail: `NFS does not accept connections on ${target}` }),
    };
  }
  return { ready: true, reachable: false, via: 'none', checks: {}, detail: 'the API and NFS are both off: nothing to ask' };
}
