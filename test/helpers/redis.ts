// A private Redis for tests: Debian's `redis-server` (hack/install-deps.sh test) on 127.0.0.1, a free
// port and a temp dir, no persistence. stop() ends it and removes the dir; a server still running
// when the test process exits is killed from an exit hook.
import { spawn, type ChildProcess } from 'node:child_process';
import { Redis } from 'ioredis';
import { bootKey } from '../../server/src/coord/leases.js';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { READY_TIMEOUT_MS, STOP_TIMEOUT_MS } from './limits.js';
import { freePort, waitForPort } from './server.js';
import { onProcessExit } from './exit.js';

const REDIS_SERVER = '/usr/bin/redis-server';

export interface RedisInstance {
  /** `redis://127.0.0.1:PORT` */
  url: string;
  port: number;
  /** Stops the server and removes its directory (idempotent). */
  stop(): Promise<void>;
  /** Stops the server (its data is gone: no persistence), keeping the port; start() runs it again. */
  pause(): Promise<void>;
  resume(): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHook = false;

function installExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  onProcessExit(() => {
    for (const c of live) c.kill('SIGKILL');
  });
}

/** A certificate and its key (PEM files): the server then speaks TLS only. */
export interface RedisTls {
  certFile: string;
  keyFile: string;
}

async function launch(port: number, dir: string, password?: string, host?: string, tls?: RedisTls): Promise<ChildProcess> {
  const args = [
    ...(tls === undefined
      ? ['--port', String(port)]
      : [
          '--port',
          '0',
          '--tls-port',
          String(port),
          '--tls-cert-file',
          tls.certFile,
          '--tls-key-file',
          tls.keyFile,
          '--tls-auth-clients',
          'no',
        ]),
    '--bind',
    '127.0.0.1',
    ...(host === undefined ? [] : [host]),
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    'no',
    '--daemonize',
    'no',
  ];
  if (password !== undefined) args.push('--requirepass', password);
  const child = spawn(REDIS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
  child.stderr?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
  live.add(child);
  child.once('exit', () => live.delete(child));
  try {
    await waitForPort(port, READY_TIMEOUT_MS, child);
  } catch (e) {
    child.kill('SIGKILL');
    throw new Error(`redis-server did not start: ${(e as Error).message}\n${out}`);
  }
  return child;
}

async function halt(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(t);
}

/**
 * Starts a private redis-server; with `password`, clients must AUTH with it. With `host`, it also
 * listens on that address (e.g. the host end of a test node's veth, for pods); `url` stays loopback.
 * With `tls`, it speaks TLS only (`url` is rediss://).
 */
export async function startRedis(opts: { password?: string; host?: string; tls?: RedisTls } = {}): Promise<RedisInstance> {
  if (!existsSync(REDIS_SERVER)) throw new Error(`${REDIS_SERVER} is missing: run hack/install-deps.sh test (Debian package redis-server)`);
  installExitHook();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-redis-'));
  const port = await freePort();
  let child: ChildProcess | null = await launch(port, dir, opts.password, opts.host, opts.tls);
  let stopped = false;
  return {
    url: `${opts.tls ? 'rediss' : 'redis'}://127.0.0.1:${port}`,
    port,
    async stop() {
      if (stopped) return;
      stopped = true;
      if (child) await halt(child);
      child = null;
      await rm(dir, { recursive: true, force: true });
    },
    async pause() {
      if (child) await halt(child);
      child = null;
    },
    async resume() {
      if (stopped) throw new Error('redis was stopped');
      child ??= await launch(port, dir, opts.password, opts.host, opts.tls);
    },
  };
}

/**
 * A lease ttl for coordination tests, long against the stalls of a loaded machine: a server refuses
 * grants once two thirds of the ttl passed without a renewal (renewals come every third). Tests
 * using it do not wait for a ttl to run out (they remove liveness keys and renew or sweep
 * themselves) and mark Redis as seen first (markRedisSeen: no grace period at the first open).
 */
export const TEST_LEASE_TTL_MS = 15_000;

/**
 * Sets the boot marker that coordinators under `keyPrefix` read, as a server that ran before
 * would have: a Coordinator opened next does not take this Redis for one that just lost its keys,
 * so it grants at once instead of after a grace period (a lease ttl and 7 s). For tests that want a
 * long ttl (a loaded machine may stall a renewal for a second) without waiting it out.
 */
export async function markRedisSeen(url: string, keyPrefix: string, password?: string): Promise<void> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 3, ...(password ? { password } : {}) });
  try {
    await r.connect();
    await r.set(bootKey(keyPrefix), 'seen-by-a-test', 'NX');
  } finally {
    r.disconnect();
  }
}
