// Starts a real DittoFS server process for cross-process tests and benchmarks.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { READY_TIMEOUT_MS, STOP_TIMEOUT_MS } from './limits.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DITTOFS_CLI = path.join(REPO_ROOT, 'server', 'dist', 'cli', 'dittofs.js');
/** The password test servers give their first admin (it must be changed at first login). */
export const TEST_ADMIN_PASSWORD = 'dittofs-test-admin';

/** Ports freePort() has handed out in this process: the kernel may offer a closed one again. */
const handedOut = new Set<number>();

function bindZero(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') return reject(new Error('no port'));
      const port = addr.port;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A free TCP port on 127.0.0.1 (bind to 0, read it, close), never one this process was given
 * before: a server's NFS and SMB ports picked one after the other once came out equal.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = await bindZero();
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error('freePort: the kernel kept offering ports this process already uses');
}

/**
 * Resolves once something accepts TCP connections on 127.0.0.1:port. With `child`, rejects as soon
 * as that process exits (a real failure, reported at once); the time bound (minutes by default)
 * only stops a hang, so a slow machine makes this slower, not red.
 */
export async function waitForPort(port: number, timeoutMs = READY_TIMEOUT_MS, child?: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const exited = (): boolean => child !== undefined && (child.exitCode !== null || child.signalCode !== null);
  for (let attempt = 0; Date.now() < deadline; attempt++) {
    if (exited())
      throw new Error(`the process exited (${child!.exitCode ?? child!.signalCode}) before 127.0.0.1:${port} accepted connections`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ port, host: '127.0.0.1' });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, Math.min(50 * (attempt + 1), 250)));
  }
  throw new Error(`nothing listened on 127.0.0.1:${port} within ${timeoutMs} ms`);
}

export interface DittofsProcess {
  nfsPort: number;
  /** The SMB2 port (a free one; the server listens there unless DITTOFS_SMB_ENABLED=false). */
  smbPort: number;
  apiPort: number;
  metricsPort: number;
  dataDir: string;
  child: ChildProcess;
  /** Everything the server wrote to stdout and stderr so far. */
  output(): string;
  /** SIGTERM and wait for exit (SIGKILL after STOP_TIMEOUT_MS). */
  stop(): Promise<void>;
  /** SIGKILL and wait for exit (crash simulation). */
  kill(): Promise<void>;
}

export interface StartOptions {
  /** Reuse a data directory (restart tests); a fresh temp dir otherwise, removed on stop unless keepDataDir. */
  dataDir?: string;
  keepDataDir?: boolean;
  /** Path of a YAML config file passed with --config. */
  configFile?: string;
  /** Extra environment (DITTOFS_* overrides). */
  env?: Record<string, string>;
  nfsPort?: number;
  /** False when the config turns the API off: start-up then waits for NFS alone. */
  api?: boolean;
  /** How long to wait for the listeners (default READY_TIMEOUT_MS). */
  startTimeoutMs?: number;
}

export async function startDittofs(opts: StartOptions = {}): Promise<DittofsProcess> {
  const dataDir = opts.dataDir ?? (await mkdtemp(path.join(os.tmpdir(), 'dittofs-test-')));
  const nfsPort = opts.nfsPort ?? (await freePort());
  // A caller that sets DITTOFS_API_PORT (a restart on the same address) gets that port.
  const apiPort = opts.env?.DITTOFS_API_PORT ? Number(opts.env.DITTOFS_API_PORT) : await freePort();
  const metricsPort = await freePort();
  const smbPort = opts.env?.DITTOFS_SMB_PORT ? Number(opts.env.DITTOFS_SMB_PORT) : await freePort();
  const args = [DITTOFS_CLI, 'start'];
  if (opts.configFile) args.push('--config', opts.configFile);
  const child = spawn(process.execPath, args, {
    cwd: REPO_ROOT,
    env: {
      ...process.env,
      DITTOFS_DATA_DIR: dataDir,
      DITTOFS_BIND_ADDRESS: '127.0.0.1',
      DITTOFS_NFS_PORT: String(nfsPort),
      DITTOFS_API_PORT: String(apiPort),
      DITTOFS_METRICS_PORT: String(metricsPort),
      DITTOFS_SMB_PORT: String(smbPort),
      DITTOFS_LOG_LEVEL: process.env.DITTOFS_LOG_LEVEL ?? 'warn',
      // A known first admin password: nothing printed on stderr (set '' to see the generated one).
      DITTOFS_ADMIN_INITIAL_PASSWORD: TEST_ADMIN_PASSWORD,
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    await waitForPort(nfsPort, opts.startTimeoutMs ?? READY_TIMEOUT_MS, child);
    // The API listens after NFS: tests that talk to it need it up too.
    if (opts.api !== false && opts.env?.DITTOFS_API_ENABLED !== 'false')
      await waitForPort(apiPort, opts.startTimeoutMs ?? READY_TIMEOUT_MS, child);
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    throw new Error(`dittofs start: ${(err as Error).message}\n--- server output ---\n${out}`);
  }
  const cleanup = async () => {
    if (!opts.dataDir && !opts.keepDataDir) await rm(dataDir, { recursive: true, force: true });
  };
  return {
    nfsPort,
    smbPort,
    apiPort,
    metricsPort,
    dataDir,
    child,
    output: () => out,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        // A graceful stop flushes the WAL; on a loaded machine that can take a while.
        const t = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
        await exited;
        clearTimeout(t);
      }
      await cleanup();
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}
