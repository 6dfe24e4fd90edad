// A private PostgreSQL cluster for tests: hack/postgres/start.sh in a temp dir, stopped and removed
// by stop(). A cluster still running when the process exits is stopped from an exit hook.
import { execFile, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { READY_TIMEOUT_MS, STOP_TIMEOUT_MS } from './limits.js';
import { onProcessExit } from './exit.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const START = path.join(REPO_ROOT, 'hack', 'postgres', 'start.sh');
const STOP = path.join(REPO_ROOT, 'hack', 'postgres', 'stop.sh');

/** Environment variable naming an external database to use instead of a private cluster. */
export const EXTERNAL_PG_ENV = 'DITTOFS_TEST_PG_URL';

export interface PostgresInstance {
  /** `postgres://postgres@127.0.0.1:PORT/dittofs` */
  url: string;
  /** True for a database named by DITTOFS_TEST_PG_URL: it cannot be restarted or stopped. */
  external: boolean;
  /**
   * The cluster's postmaster while it runs (its backends are its children: benchmarks count their
   * CPU); undefined when stopped, or external.
   */
  pid(): number | undefined;
  /** Stops the cluster and removes its directory (idempotent). */
  stop(): Promise<void>;
  /** Stops and starts the cluster on the same port and data. */
  restart(): Promise<void>;
  /** Stops the server, keeping its data and port (resume() starts it again). */
  pause(): Promise<void>;
  /** Stops the server as a crash would (pg_ctl stop -m immediate: unflushed WAL is lost); resume() starts it. */
  crash(): Promise<void>;
  resume(): Promise<void>;
}

export interface StartPostgresOptions {
  /** Bound for start.sh, which may have to apt-get install postgresql first (default 10 min). */
  startTimeoutMs?: number;
}

function run(script: string, dir: string, timeoutMs: number, extra: string[] = []): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(script, [dir, ...extra], { timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) {
        const why = err.killed ? `timed out after ${timeoutMs} ms` : `failed (${err.message.split('\n')[0]})`;
        reject(new Error(`${path.relative(REPO_ROOT, script)} ${dir} ${why}\n${stderr.trim()}`));
      } else {
        resolve(stdout);
      }
    });
  });
}

const live = new Set<string>();
let exitHook = false;

function installExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  onProcessExit(() => {
    for (const dir of live) {
      try {
        execFileSync(STOP, [dir], { timeout: STOP_TIMEOUT_MS, stdio: 'ignore' });
      } catch {
        // Best effort: the process is exiting.
      }
    }
  });
}

/** Starts a private cluster in a fresh temp dir. Rejects with start.sh's message if it cannot. */
export async function startPostgres(opts: StartPostgresOptions = {}): Promise<PostgresInstance> {
  const startTimeout = opts.startTimeoutMs ?? 2 * READY_TIMEOUT_MS;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-pg-'));
  installExitHook();
  live.add(dir);
  let out: string;
  try {
    out = await run(START, dir, startTimeout);
  } catch (e) {
    await run(STOP, dir, STOP_TIMEOUT_MS).catch(() => undefined);
    live.delete(dir);
    await rm(dir, { recursive: true, force: true });
    throw new Error(`cannot start a private PostgreSQL cluster: ${(e as Error).message}`);
  }
  const url = out.trim().split('\n').pop() ?? '';
  if (!url.startsWith('postgres://')) throw new Error(`hack/postgres/start.sh printed no URL: ${JSON.stringify(out)}`);
  let stopped = false;
  return {
    url,
    external: false,
    pid: () => postmasterPid(dir),
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        await run(STOP, dir, STOP_TIMEOUT_MS);
      } finally {
        live.delete(dir);
        await rm(dir, { recursive: true, force: true });
      }
    },
    async restart() {
      if (stopped) throw new Error('cluster was stopped');
      await run(STOP, dir, STOP_TIMEOUT_MS);
      await run(START, dir, READY_TIMEOUT_MS);
    },
    async pause() {
      if (stopped) throw new Error('cluster was stopped');
      await run(STOP, dir, STOP_TIMEOUT_MS);
    },
    async crash() {
      if (stopped) throw new Error('cluster was stopped');
      await run(STOP, dir, STOP_TIMEOUT_MS, ['immediate']);
    },
    async resume() {
      if (stopped) throw new Error('cluster was stopped');
      await run(START, dir, READY_TIMEOUT_MS);
    },
  };
}

/** The pid in DIR/data/postmaster.pid (its first line) while the cluster runs, else undefined. */
function postmasterPid(dir: string): number | undefined {
  try {
    const pid = Number(readFileSync(path.join(dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** The database tests use: DITTOFS_TEST_PG_URL when set, else a private cluster. */
export async function postgresForTests(opts: StartPostgresOptions = {}): Promise<PostgresInstance> {
  const external = process.env[EXTERNAL_PG_ENV];
  if (external !== undefined && external !== '') {
    return {
      url: external,
      external: true,
      pid: () => undefined,
      async stop() {},
      async restart() {
        throw new Error(`cannot restart the external database named by ${EXTERNAL_PG_ENV}`);
      },
      async pause() {
        throw new Error(`cannot stop the external database named by ${EXTERNAL_PG_ENV}`);
      },
      async crash() {
        throw new Error(`cannot stop the external database named by ${EXTERNAL_PG_ENV}`);
      },
      async resume() {
        throw new Error(`cannot start the external database named by ${EXTERNAL_PG_ENV}`);
      },
    };
  }
  return startPostgres(opts);
}
