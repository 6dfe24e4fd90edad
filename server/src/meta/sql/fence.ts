// The single-server fence of a PostgreSQL database (a metadata store's tables, or the control
// plane's): until replicas coordinate (issue 14: Redis leases and fencing tokens), two servers on
// one store lose acknowledged data, so a server takes a session-level advisory lock on the store
// and a second one refuses it.
//
// The lock lives in a DEDICATED connection held for the life of the server (a pooled connection is
// recycled, and its session's locks with it). Its key is derived from the store's identity:
//
//   key = the first 8 bytes, as a signed big-endian int64, of
//         sha256("dittofs:<purpose>:<current_database()>.<current_schema()>")
//
// with <purpose> `metadata` or `control`, so a metadata store and the control plane may share a
// schema. Advisory locks are per database in PostgreSQL, and the schema is the one the tables are
// in. `SELECT * FROM pg_locks WHERE locktype = 'advisory'` shows it (classid = high 32 bits, objid
// = low 32 bits of the key); the holder's application_name is `dittofs-fence <host>:<pid>`.
//
// Losing the connection (PostgreSQL restarted, the network cut) loses the lock: `held` is false at
// once, no statement of the store runs (each waits up to a few seconds, then FenceLostError:
// JUKEBOX to NFS clients), and the fence is taken again in the background. Each take bumps an epoch in the store's `dittofs_fence`
// table; if another process took the lock meanwhile (it holds it now, or the epoch moved while we
// were away), the fence is lost for good: this process stops serving the store until it restarts,
// rather than serve from state another writer has changed.
import { createHash, randomBytes } from 'node:crypto';
import os from 'node:os';
import pg from 'pg';
import { checkPostgresUrlFiles } from '../../config/postgres-url.js';
import { errorMessage, silentLogger, type DriverLogger } from './driver.js';

export type FencePurpose = 'metadata' | 'control';

export interface PgFenceOptions {
  url: string;
  /** The schema the tables are in (default: the connection's current_schema()). */
  schema?: string;
  purpose: FencePurpose;
  /** For messages: `metadata store NAME` or `the control database`. */
  label: string;
  connectTimeoutMs?: number;
  /** A heartbeat on the connection this often (default 5 s), so a dead socket is noticed. */
  heartbeatMs?: number;
  /** First pause before taking the fence again after the connection was lost (default 250 ms, doubling up to 5 s). */
  retakeDelayMs?: number;
  logger?: DriverLogger;
  /** Told when the fence is lost for good (another process took the store). */
  onTaken?: (err: FenceLostError) => void;
  /**
   * Told when the fence is taken again after its connection was lost, before any statement runs:
   * nobody else served the store meanwhile, but PostgreSQL may have restarted (with `sync: commit`,
   * losing changes it had answered), so what a cache holds may no longer be in the database.
   */
  onHeldAgain?: () => void;
}

/** Per process: tells this process's own sessions from another server's in pg_stat_activity. */
const INSTANCE = `${os.hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`.slice(0, 48);
const APPLICATION_NAME = `dittofs-fence ${INSTANCE}`;

/** The advisory lock key of a store (see the header). */
export function fenceKey(purpose: FencePurpose, database: string, schema: string): bigint {
  return createHash('sha256').update(`dittofs:${purpose}:${database}.${schema}`).digest().readBigInt64BE(0);
}

/** `postgres://user@host:port/db` without the password or the query (messages and logs). */
export function describePgUrl(url: string): string {
  try {
    const u = new URL(url);
    const user = u.username ? `${decodeURIComponent(u.username)}@` : '';
    return `postgres ${user}${u.host}${u.pathname}`;
  } catch {
    return 'postgres (unparsable url)';
  }
}

/** Another DittoFS process serves the store: this one must not start on it. */
export class FenceHeldError extends Error {
  override readonly name = 'FenceHeldError';
  readonly code = 'DITTOFS_STORE_ALREADY_SERVED';
}

/** The fence is not held (lost with its connection, or taken by another process): nothing may be written. */
export class FenceLostError extends Error {
  override readonly name = 'FenceLostError';
  readonly code = 'DITTOFS_FENCE_LOST';
}

const SERVER_KEEPALIVES = '-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3';

const REPLICAS_HINT =
  'several servers on one store need coordination.redis (write leases in Redis) set on every one of them; otherwise run one server per store';

type FenceState = 'held' | 'reconnecting' | 'taken' | 'closed';

interface Identity {
  database: string;
  schema: string;
  key: bigint;
}

export class PgFence {
  private client: pg.Client | null = null;
  private state: FenceState = 'held';
  private epoch = 0n;
  private heartbeat: NodeJS.Timeout | null = null;
  private retake: NodeJS.Timeout | null = null;
  private lostReason = '';
  /** Callers waiting for the fence to be taken again (or lost for good). */
  private readonly waiters = new Set<() => void>();
  private readonly log: DriverLogger;

  private constructor(
    private readonly opts: PgFenceOptions,
    private readonly id: Identity,
  ) {
    this.log = opts.logger ?? silentLogger;
  }

  /** The lock key (for tests and diagnostics). */
  get key(): bigint {
    return this.id.key;
  }

  get held(): boolean {
    return this.state === 'held';
  }

  /** `held`, `reconnecting` (connection lost, taking it again), `taken` (another process has it), `closed`. */
  get status(): FenceState {
    return this.state;
  }

  private where(): string {
    return `${this.opts.label} (${describePgUrl(this.opts.url)}, schema ${this.id.schema})`;
  }

  /** Throws FenceLostError unless the fence is held. */
  check(): void {
    if (this.state === 'held') return;
    throw new FenceLostError(
      this.state === 'taken'
        ? `${this.where()} is served by another DittoFS process now (${this.lostReason}); this process stopped serving it: restart it once the other one has stopped`
        : this.state === 'closed'
          ? `${this.where()}: closed`
          : `${this.where()}: the connection holding its lock was lost (${this.lostReason}); taking it again`,
    );
  }

  /**
   * Undefined while the fence is held (the fast path). While it is being taken again: a promise
   * that resolves once it is, or rejects with FenceLostError once it is lost for good or after
   * `maxWaitMs` (a short restart of PostgreSQL costs a slow call, not an error). Otherwise rejects.
   */
  whenHeld(maxWaitMs: number): Promise<void> | undefined {
    if (this.state === 'held') return undefined;
    if (this.state !== 'reconnecting') return Promise.reject(this.lostError() ?? new FenceLostError('fence not held'));
    return new Promise((resolve, reject) => {
      const settle = (): void => {
        clearTimeout(timer);
        this.waiters.delete(settle);
        const e = this.state === 'held' ? undefined : this.lostError();
        if (e) reject(e);
        else resolve();
      };
      const timer = setTimeout(settle, maxWaitMs);
      this.waiters.add(settle);
    });
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  /** The error once another process has taken the fence (never taken back by this one); else null. */
  lostForGood(): FenceLostError | null {
    return this.state === 'taken' ? (this.lostError() ?? null) : null;
  }

  private lostError(): FenceLostError | undefined {
    try {
      this.check();
      return undefined;
    } catch (e) {
      return e as FenceLostError;
    }
  }

  private static async connect(opts: PgFenceOptions): Promise<pg.Client> {
    const client = new pg.Client({
      connectionString: opts.url,
      connectionTimeoutMillis: opts.connectTimeoutMs ?? 5_000,
      keepAlive: true,
      application_name: APPLICATION_NAME,
      // The heartbeat must not hang on a dead socket.
      query_timeout: 10_000,
      // PostgreSQL notices a holder that vanished (its node died) within about 25 s and frees the
      // lock, instead of after the kernel's default of two hours.
      options: [SERVER_KEEPALIVES, ...(opts.schema === undefined ? [] : [`-c search_path=${opts.schema}`])].join(' '),
    });
    // Until the owner attaches its own listener, a failure must not crash the process.
    client.on('error', () => undefined);
    try {
      await client.connect();
    } catch (e) {
      await client.end().catch(() => undefined);
      throw e;
    }
    return client;
  }

  /**
   * Takes the fence of a store, or throws FenceHeldError naming the process that holds it. `schema`
   * must exist already (the driver creates it first).
   */
  static async take(opts: PgFenceOptions): Promise<PgFence> {
    await checkPostgresUrlFiles(opts.url); // as PgDriver.open: the driver reads them synchronously
    const client = await PgFence.connect(opts);
    try {
      const r = await client.query<{ db: string; schema: string | null }>('SELECT current_database() AS db, current_schema() AS schema');
      const database = r.rows[0]?.db ?? '';
      const schema = r.rows[0]?.schema ?? opts.schema ?? 'public';
      const id: Identity = { database, schema, key: fenceKey(opts.purpose, database, schema) };
      const fence = new PgFence(opts, id);
      if (!(await fence.tryLock(client))) {
        const holder = await fence.holder(client);
        throw new FenceHeldError(
          `${fence.where()} is already served by another DittoFS process ` +
            `(advisory lock ${id.key} held${holder ? ` by ${holder}` : ''}); ${REPLICAS_HINT}`,
        );
      }
      fence.epoch = await fence.bumpEpoch(client);
      fence.attach(client);
      return fence;
    } catch (e) {
      await client.end().catch(() => undefined);
      throw e;
    }
  }

  private async tryLock(client: pg.Client): Promise<boolean> {
    const r = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [this.id.key.toString()]);
    return r.rows[0]?.ok === true;
  }

  /** Who holds the lock: the session's application name, address and start, as far as visible. */
  private async holder(client: pg.Client): Promise<string> {
    try {
      const k = BigInt.asUintN(64, this.id.key);
      const r = await client.query<{ pid: number; app: string | null; addr: string | null; since: Date | null }>(
        `SELECT l.pid, a.application_name AS app, host(a.client_addr) AS addr, a.backend_start AS since
         FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid AND l.objsubid = 1`,
        [(k >> 32n).toString(), (k & 0xffffffffn).toString()],
      );
      const h = r.rows[0];
      if (!h) return '';
      const who = h.app?.startsWith('dittofs-fence ') ? h.app.slice('dittofs-fence '.length) : (h.app ?? '?');
      const self = h.app === APPLICATION_NAME ? ', this very process: two stores of its config name the same database and schema' : '';
      return `${who} (backend pid ${h.pid}${h.addr ? `, from ${h.addr}` : ''}${h.since ? `, since ${h.since.toISOString()}` : ''}${self})`;
    } catch (e) {
      return `(holder unknown: ${errorMessage(e)})`;
    }
  }

  /** Records one more take of the lock; returns the new epoch. Runs only while holding the lock. */
  private async bumpEpoch(client: pg.Client): Promise<bigint> {
    try {
      await client.query(
        `CREATE TABLE IF NOT EXISTS dittofs_fence (key bigint PRIMARY KEY, epoch bigint NOT NULL, holder text NOT NULL, taken_at timestamptz NOT NULL)`,
      );
    } catch (e) {
      // Two servers on two stores of one schema creating it at once: the other one made it.
      const code = (e as { code?: unknown }).code;
      if (code !== '23505' && code !== '42P07') throw e;
    }
    const r = await client.query<{ epoch: string }>(
      `INSERT INTO dittofs_fence (key, epoch, holder, taken_at) VALUES ($1::bigint, 1, $2, now())
       ON CONFLICT (key) DO UPDATE SET epoch = dittofs_fence.epoch + 1, holder = EXCLUDED.holder, taken_at = now()
       RETURNING epoch`,
      [this.id.key.toString(), INSTANCE],
    );
    return BigInt(r.rows[0]?.epoch ?? '0');
  }

  private attach(client: pg.Client): void {
    this.client = client;
    this.state = 'held';
    this.wake();
    const onGone = (why: string) => (): void => this.lost(client, why);
    client.on('error', (e) => this.lost(client, errorMessage(e)));
    client.on('end', onGone('connection closed'));
    const every = this.opts.heartbeatMs ?? 5_000;
    this.heartbeat = setInterval(() => {
      client.query('SELECT 1').catch((e: unknown) => this.lost(client, `heartbeat failed: ${errorMessage(e)}`));
    }, every);
    this.heartbeat.unref();
  }

  private lost(client: pg.Client, why: string): void {
    if (this.client !== client || this.state !== 'held') return;
    this.client = null;
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
    this.state = 'reconnecting';
    this.lostReason = why;
    this.log.warn(
      { store: this.opts.label, key: this.id.key.toString(), err: why },
      'lost the connection holding the store fence; not serving it until the fence is taken again',
    );
    void client.end().catch(() => undefined);
    this.scheduleRetake(0);
  }

  private scheduleRetake(attempt: number): void {
    if (this.state !== 'reconnecting') return;
    const base = this.opts.retakeDelayMs ?? 250;
    const delay = Math.min(Math.max(5_000, base), base * 2 ** Math.min(attempt, 10));
    this.retake = setTimeout(() => void this.tryRetake(attempt), delay);
    this.retake.unref();
  }

  private async tryRetake(attempt: number): Promise<void> {
    this.retake = null;
    if (this.state !== 'reconnecting') return;
    let client: pg.Client;
    try {
      client = await PgFence.connect(this.opts);
    } catch (e) {
      this.lostReason = `reconnecting: ${errorMessage(e)}`;
      this.scheduleRetake(attempt + 1);
      return;
    }
    try {
      if (this.state !== 'reconnecting') throw new Error('closed');
      if (!(await this.tryLock(client))) {
        const holder = await this.holder(client);
        this.lose(`another process took its lock: ${holder || 'holder unknown'}`);
        await client.end().catch(() => undefined);
        return;
      }
      const epoch = await this.bumpEpoch(client);
      if (this.state !== 'reconnecting') throw new Error('closed');
      if (epoch !== this.epoch + 1n) {
        await client.query('SELECT pg_advisory_unlock($1::bigint)', [this.id.key.toString()]).catch(() => undefined);
        await client.end().catch(() => undefined);
        this.lose(`another process served it while the connection was lost (fence epoch ${this.epoch} -> ${epoch - 1n})`);
        return;
      }
      this.epoch = epoch;
      this.opts.onHeldAgain?.();
      this.attach(client);
      this.log.warn({ store: this.opts.label, key: this.id.key.toString() }, 'store fence taken again; serving the store');
    } catch (e) {
      await client.end().catch(() => undefined);
      if (this.state !== 'reconnecting') return;
      this.lostReason = `reconnecting: ${errorMessage(e)}`;
      this.scheduleRetake(attempt + 1);
    }
  }

  private lose(why: string): void {
    this.state = 'taken';
    this.lostReason = why;
    this.wake();
    const err = new FenceLostError(
      `${this.where()} is served by another DittoFS process now (${why}); this process stopped serving it: restart it once the other one has stopped`,
    );
    this.log.warn({ store: this.opts.label, key: this.id.key.toString(), err: err.message }, 'store fence lost to another process');
    this.opts.onTaken?.(err);
  }

  /** Releases the lock and closes its connection (at shutdown, after the store's last write). */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.wake();
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.retake) clearTimeout(this.retake);
    this.heartbeat = this.retake = null;
    const client = this.client;
    this.client = null;
    if (!client) return;
    try {
      await client.query('SELECT pg_advisory_unlock($1::bigint)', [this.id.key.toString()]);
    } catch {
      // The session ends below, and its locks with it.
    }
    await client.end().catch(() => undefined);
  }
}
