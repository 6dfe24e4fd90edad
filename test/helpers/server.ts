// Starts a real DittoFS server process for cross-process tests and benchmarks.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { READY_TIMEOUT_MS, STOP_TIMEOUT_MS } from './limits.js';
import { onProcessExit } from './exit.js';
import { NFS_PROGRAM, RpcConnection } from './rpc-client.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DITTOFS_CLI = path.join(REPO_ROOT, 'server', 'dist', 'cli', 'dittofs.js');
/** The password test servers give their first admin (it must be changed at first login). */
export const TEST_ADMIN_PASSWORD = 'dittofs-test-admin';

// Ports for test servers. Binding to port 0 and handing the number on leaves a window until the
// server binds it (a start-up takes 30 s on a loaded machine), and in that window the kernel gives
// the same port to another test process's bind(0) or to any outgoing connection: a CI run once
// failed with "SMB cannot listen on 127.0.0.1:P: the address is already in use". So ports come
// from a range below the kernel's ephemeral range (net.ipv4.ip_local_port_range, which outgoing
// connections and bind(0) use) and below Kubernetes' NodePort range, and each one
// is reserved across processes by a file named after it, holding the reserving pid; a reservation
// whose process is gone is taken over.
/**
 * Up to 10,000 ports below both the kernel's ephemeral range (read, not assumed) and 30000, where
 * Kubernetes' NodePort range starts.
 */
function portRange(): [low: number, high: number] {
  let ephemeralLow = 32_768;
  try {
    ephemeralLow = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
  } catch {
    // Not Linux: the IANA default.
  }
  const high = Math.min(29_999, ephemeralLow - 1);
  if (!Number.isInteger(high) || high < 2_023) {
    throw new Error(
      `freePort: the kernel's ephemeral ports start at ${ephemeralLow} (net.ipv4.ip_local_port_range): ` +
        'no room below them for test servers; raise its lower bound (e.g. sysctl net.ipv4.ip_local_port_range="32768 60999")',
    );
  }
  return [Math.max(1_024, high - 9_999), high];
}
const [PORT_LOW, PORT_HIGH] = portRange();
const RESERVATIONS = path.join(os.tmpdir(), 'dittofs-test-ports');
/** Ports this process reserved (removed again at exit). */
const reserved = new Set<number>();
let exitHook = false;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Reserves `port` for this process: true when it was free of other test processes. */
function reserve(port: number): boolean {
  const file = path.join(RESERVATIONS, String(port));
  if (create(file)) {
    reserved.add(port);
    return true;
  }
  // Taken. A reservation whose process is gone is taken over, by one process at a time: two that
  // both saw it stale and each removed it and created their own would both hold the port (the
  // second removing the first's new file). Only the holder of `<port>.takeover` removes it; a
  // takeover file left by a process killed in that moment costs this one port.
  const lock = `${file}.takeover`;
  if (!create(lock)) return false;
  try {
    let owner = NaN;
    try {
      owner = Number(readFileSync(file, 'utf8'));
    } catch {
      // Removed by its owner meanwhile: create it below.
    }
    if (Number.isInteger(owner) && owner > 0 && alive(owner)) return false;
    try {
      unlinkSync(file);
    } catch {
      // Gone already, or another user's in the sticky directory: create() below finds out.
    }
    if (!create(file)) return false;
    reserved.add(port);
    return true;
  } finally {
    unlinkSync(lock);
  }
}

/** Creates `file` holding this process's pid; false if it exists. */
function create(file: string): boolean {
  try {
    writeFileSync(file, String(process.pid), { flag: 'wx' });
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    if (code === 'EACCES' || code === 'EPERM')
      throw new Error(`freePort: cannot reserve ports in ${RESERVATIONS} (${code}): another user made it; chmod 1777 it (or remove it)`);
    throw e;
  }
}

/** Whether 127.0.0.1:port can be bound now (nothing else on the machine listens there). */
function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/**
 * A free TCP port on 127.0.0.1 for a test server, reserved for this process until it exits: no
 * other test process gets it, and the kernel never hands it out on its own (see above).
 */
export async function freePort(): Promise<number> {
  mkdirSync(RESERVATIONS, { recursive: true });
  if (!exitHook) {
    exitHook = true;
    // Shared by every user's tests (the node tests run as root, the others need not): world-writable
    // and sticky like /tmp, or the first user to make it locks the others out (EACCES).
    try {
      chmodSync(RESERVATIONS, 0o1777);
    } catch {
      // Another user's: create() says what to do if it cannot be written.
    }
    onProcessExit(() => {
      for (const port of reserved) {
        try {
          unlinkSync(path.join(RESERVATIONS, String(port)));
        } catch {
          // Already gone.
        }
      }
    });
  }
  const span = PORT_HIGH - PORT_LOW + 1;
  const first = Math.floor(Math.random() * span);
  for (let i = 0; i < span; i++) {
    const port = PORT_LOW + ((first + i) % span);
    if (reserved.has(port) || !reserve(port)) continue;
    if (await bindable(port)) return port;
    // Something outside the tests listens there: keep it reserved (never offered again here).
  }
  throw new Error(`freePort: no free port left in ${PORT_LOW}-${PORT_HIGH}`);
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

/**
 * Waits until an NFS server answers a NULL call on `port`. A connection alone is not proof: at
 * start-up the server binds each of its ports for a moment to check it is free (server.ts
 * checkListenAddresses), and a connect landing then succeeds long before the server listens.
 */
export async function waitForNfs(port: number, timeoutMs = READY_TIMEOUT_MS, child?: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; ; attempt++) {
    await waitForPort(port, Math.max(1, deadline - Date.now()), child);
    let conn: RpcConnection | undefined;
    try {
      conn = await RpcConnection.connect(port, '127.0.0.1', Math.max(1, deadline - Date.now()));
      await conn.call(NFS_PROGRAM, 3, 0, Buffer.alloc(0), { timeoutMs: Math.max(1, deadline - Date.now()) });
      return;
    } catch (err) {
      if (Date.now() >= deadline) throw new Error(`no NFS NULL reply from 127.0.0.1:${port} within ${timeoutMs} ms`, { cause: err });
    } finally {
      conn?.close();
    }
    await new Promise((r) => setTimeout(r, Math.min(50 * (attempt + 1), 250)));
  }
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

/** Servers started here and not exited yet: killed if the test process ends with them up. */
const liveServers = new Set<ChildProcess>();
let serversExitHook = false;

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
  if (!serversExitHook) {
    serversExitHook = true;
    onProcessExit(() => {
      for (const c of liveServers) c.kill('SIGKILL');
    });
  }
  liveServers.add(child);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      liveServers.delete(child);
      resolve();
    }),
  );
  try {
    await waitForNfs(nfsPort, opts.startTimeoutMs ?? READY_TIMEOUT_MS, child);
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
