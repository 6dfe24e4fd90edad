// The postgres driver: a `pg` connection pool. Hot statements are named prepared statements (each
// connection prepares a name once, then only binds). Transient failures are retried with bounded
// exponential backoff: serialization failures and deadlocks (the transaction is run again), and lost
// connections (the server restarted, a socket died) when running again is safe: before anything
// was sent, for a retryable statement outside a transaction, or for a transaction before COMMIT.
// A restart of PostgreSQL therefore costs a few slow calls, not the process.
//
// Durability (DESIGN.md: COMMIT, FILE_SYNC and SMB FLUSH return only after an fsync covering that
// data and its metadata), two policies (`sync`), as for SQLite (sqlite.ts):
// - `change` (the default, of metadata stores and of the control plane): every commit waits for PostgreSQL's
//   WAL flush (synchronous_commit on): one client stream runs at the database's fsync rate.
// - `commit` (opt-in, `sync: commit` in the config): the pool's connections run with synchronous_commit
//   off, so a change is answered once its commit record is in PostgreSQL's WAL buffers (the WAL
//   writer flushes it within 3 x wal_writer_delay anyway). sync() commits a transaction of its own
//   with synchronous_commit on: PostgreSQL returns only after flushing its WAL up to that commit
//   record, and every change answered before sync() was called has its commit record earlier in
//   the same WAL, so one flush covers them all. The store calls sync() for COMMIT, stable writes,
//   SMB FLUSH, and after every block-map change and lease token (SqlMetadataStore.durable), so
//   those are never answered before they are on disk. The fence (fence.ts) has its own connection
//   and stays synchronous. A change answered on a connection to one run of the server (told apart
//   by its start time) is durable only once a flush in that same run covered it: a crash loses what
//   the run had not flushed, and the flush of the next run covers nothing of it. So every change is
//   counted under the start time of its connection, and a sync() that finds changes it must cover
//   in a run that crashed since fails (SyncLostError), as does every sync() after it: each covers
//   every change answered before it, those lost ones included, and which client made them is not
//   known: until DittoFS is restarted, no COMMIT can vouch for anything. A clean restart (its
//   shutdown checkpoint predates the start) lost nothing and passes.
import pg from 'pg';
import type { MetadataSync } from '../../config/types.js';
import { checkPostgresUrlFiles } from '../../config/postgres-url.js';
import {
  CommitUncertainError,
  DEFAULT_RETRY_POLICY,
  RetryTransaction,
  SQLSTATE,
  SyncLostError,
  errorMessage,
  isConnectionError,
  isTransientConflict,
  silentLogger,
  sqlState,
  withRetry,
  type DriverLogger,
  type QueryOptions,
  type QueryResult,
  type RetryEvent,
  type RetryPolicy,
  type SqlDriver,
  type SqlExecutor,
  type SqlRow,
  type Statement,
  type TransactionOptions,
} from './driver.js';
import { PgFence, type PgFenceOptions } from './fence.js';

export interface PgDriverOptions {
  /** `postgres://user:password@host:port/database?...` (libpq-style URL; sslmode and friends work). */
  url: string;
  /** Connections in the pool (default 10). */
  poolSize?: number;
  /**
   * A schema to keep the tables in (created if missing), so that several stores can share one
   * database. Default: the connection's search_path (normally `public`).
   */
  schema?: string;
  /** Bound on opening one connection (default 5 s). */
  connectTimeoutMs?: number;
  /** Server-side statement_timeout (default 30 s; 0 disables). */
  statementTimeoutMs?: number;
  /** Idle connections are closed after this long (default 30 s). */
  idleTimeoutMs?: number;
  retry?: RetryPolicy;
  logger?: DriverLogger;
  applicationName?: string;
  /**
   * Fence the database for this process (see fence.ts): open() fails with FenceHeldError when
   * another process holds it, and every statement fails with FenceLostError while it is not held.
   */
  fence?: Pick<PgFenceOptions, 'purpose' | 'label' | 'onTaken' | 'onHeldAgain' | 'heartbeatMs' | 'retakeDelayMs'>;
  /** When changes reach the disk (see the head of this file); default `change`. */
  sync?: PgSync;
}

/** `commit`: changes are answered before their WAL flush, sync() waits for it; `change`: each waits. */
export type PgSync = MetadataSync;

/**
 * One round trip. PostgreSQL flushes the WAL at a synchronous commit only when the transaction
 * wrote WAL (an xid alone does not): a transactional logical message writes one record (and takes
 * an xid) without touching a table, so its commit flushes the WAL up to its commit record, which
 * lies after every commit record answered before this was sent. The server's start time tells a
 * restart apart.
 */
const FLUSH_SQL =
  "BEGIN; SET LOCAL synchronous_commit = on; SELECT pg_logical_emit_message(true, 'dittofs', '') AS lsn, pg_postmaster_start_time()::text AS started; COMMIT";

/** The run of the server a connection reaches (a restart changes it). */
const STARTED_SQL = 'SELECT pg_postmaster_start_time()::text AS started';

/** A schema name we are willing to splice into SQL. */
export const SCHEMA_NAME_RE = /^[a-z_][a-z0-9_]{0,62}$/;

const noRetry = new WeakSet<object>();

function markNoRetry(e: unknown): unknown {
  if (typeof e === 'object' && e !== null) noRetry.add(e);
  return e;
}

function config(sql: Statement | string, params: readonly unknown[]): pg.QueryConfig {
  if (typeof sql === 'string') return { text: sql, values: params as unknown[] };
  return sql.name === undefined
    ? { text: sql.text, values: params as unknown[] }
    : { name: sql.name, text: sql.text, values: params as unknown[] };
}

/** How long a statement waits for a fence being taken again before it fails (FenceLostError). */
const FENCE_WAIT_MS = 5_000;

export class PgDriver implements SqlDriver {
  readonly kind = 'postgres' as const;
  readonly dialect = 'postgres' as const;
  private readonly pool: pg.Pool;
  private readonly retry: RetryPolicy;
  private readonly log: DriverLogger;
  private closed = false;
  /** This process's hold on the database, when asked for (null: not fenced). */
  fence: PgFence | null = null;
  /** Statistics, for tests and metrics. */
  readonly stats = { retries: 0, connectionErrors: 0, conflicts: 0, poolErrors: 0, flushes: 0 };
  /** `commit`: changes are answered before PostgreSQL flushes them (see the head of this file). */
  private readonly lazy: boolean;
  /**
   * `commit`: by the server start time of the connections they ran on (null: not known), the calls
   * answered so far and how many of them a flush under the same start time covered.
   */
  private readonly runs = new Map<string | null, { answered: number; flushed: number }>();
  /** `commit`: the start time of the server each pooled connection reached, asked when it opened. */
  private readonly startedOf = new WeakMap<pg.ClientBase, Promise<string | null>>();
  /** `commit`: set once changes answered were lost in a crash; every sync() fails with it since. */
  private lost: SyncLostError | null = null;

  private constructor(opts: PgDriverOptions) {
    this.retry = opts.retry ?? DEFAULT_RETRY_POLICY;
    this.log = opts.logger ?? silentLogger;
    this.lazy = opts.sync === 'commit';
    const statementTimeout = opts.statementTimeoutMs ?? 30_000;
    const settings = [
      ...(opts.schema === undefined ? [] : [`-c search_path=${opts.schema}`]),
      ...(this.lazy ? ['-c synchronous_commit=off'] : []),
    ];
    const pgOptions = settings.length === 0 ? undefined : settings.join(' ');
    this.pool = new pg.Pool({
      connectionString: opts.url,
      max: opts.poolSize ?? 10,
      connectionTimeoutMillis: opts.connectTimeoutMs ?? 5_000,
      idleTimeoutMillis: opts.idleTimeoutMs ?? 30_000,
      keepAlive: true,
      application_name: opts.applicationName ?? 'dittofs',
      ...(statementTimeout > 0 ? { statement_timeout: statementTimeout } : {}),
      ...(pgOptions === undefined ? {} : { options: pgOptions }),
    });
    // An idle connection that dies (server restart, network) must not crash the process: the pool
    // drops it and opens a new one on demand.
    this.pool.on('error', (err) => {
      this.stats.poolErrors++;
      this.log.warn({ err: errorMessage(err) }, 'postgres metadata store: idle connection failed');
    });
    // Queued ahead of the first statement on the connection, so answered before it: a call knows
    // which run of the server it changed without a round trip of its own. A failure here that
    // leaves the connection alive is asked again after the caller's statement (startedOn).
    if (this.lazy)
      this.pool.on('connect', (client) => {
        this.startedOf.set(
          client,
          client.query<{ started: string }>(STARTED_SQL).then(
            (r) => r.rows[0]?.started ?? null,
            () => null,
          ),
        );
      });
  }

  /** Creates the pool and checks that the database answers (creating `schema` if given). */
  static async open(opts: PgDriverOptions): Promise<PgDriver> {
    // The driver reads the files a URL names synchronously: a FIFO or a device would freeze the process.
    await checkPostgresUrlFiles(opts.url);
    if (opts.schema !== undefined && !SCHEMA_NAME_RE.test(opts.schema)) {
      throw new Error(`invalid schema name ${JSON.stringify(opts.schema)} (expected ${String(SCHEMA_NAME_RE)})`);
    }
    const d = new PgDriver(opts);
    try {
      if (opts.schema !== undefined) {
        try {
          await d.query(`CREATE SCHEMA IF NOT EXISTS ${opts.schema}`);
        } catch (e) {
          // Two processes creating it at once: one of them sees the other's row. That is fine.
          if (sqlState(e) !== SQLSTATE.UNIQUE_VIOLATION && sqlState(e) !== '42P06') throw e;
        }
      } else {
        await d.query('SELECT 1');
      }
      if (opts.fence !== undefined) {
        d.fence = await PgFence.take({
          url: opts.url,
          ...(opts.schema === undefined ? {} : { schema: opts.schema }),
          ...(opts.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: opts.connectTimeoutMs }),
          ...(opts.logger === undefined ? {} : { logger: opts.logger }),
          ...opts.fence,
        });
      }
    } catch (e) {
      await d.pool.end().catch(() => undefined);
      throw e;
    }
    return d;
  }

  private live(): void {
    if (this.closed) throw new Error('postgres metadata store is closed');
  }

  /**
   * Nothing reaches the database unless this process holds its fence (when it has one). A fence
   * being taken again after a lost connection is waited for, briefly, like a lost connection is.
   */
  private async fenced(): Promise<void> {
    const wait = this.fence?.whenHeld(FENCE_WAIT_MS);
    if (wait !== undefined) await wait;
  }

  private shouldRetry = (e: unknown): boolean => {
    if (typeof e === 'object' && e !== null && noRetry.has(e)) return false;
    if (isConnectionError(e)) {
      this.stats.connectionErrors++;
      return true;
    }
    if (e instanceof RetryTransaction || isTransientConflict(e)) {
      this.stats.conflicts++;
      return true;
    }
    return false;
  };

  private onRetry = (ev: RetryEvent): void => {
    this.stats.retries++;
    const level = isConnectionError(ev.error) ? 'warn' : 'debug';
    this.log[level]({ attempt: ev.attempt, err: errorMessage(ev.error) }, 'postgres metadata store: retrying');
  };

  /** A pooled client with an error listener for as long as we hold it; `done` releases it. */
  private async acquire(): Promise<{ client: pg.PoolClient; done: (broken?: unknown) => void }> {
    const client = await this.pool.connect();
    const onError = (err: Error): void => this.log.debug({ err: err.message }, 'postgres metadata store: connection error while in use');
    client.on('error', onError);
    let released = false;
    return {
      client,
      done: (broken?: unknown) => {
        if (released) return;
        released = true;
        client.removeListener('error', onError);
        // A connection that failed is destroyed rather than returned to the pool.
        client.release(broken === undefined ? undefined : broken instanceof Error ? broken : new Error(errorMessage(broken)));
      },
    };
  }

  /**
   * Why this store can do nothing more until the process restarts: changes answered by a crashed
   * run were lost (SyncLostError), or another process took its fence (it will not be taken back).
   */
  failure(): Error | null {
    return this.lost ?? this.fence?.lostForGood() ?? null;
  }

  /**
   * `commit`: settles once every change answered before the call is flushed to PostgreSQL's disk
   * (COMMIT, stable writes, SMB FLUSH, block-map changes). Fails with SyncLostError when some of
   * them were answered by a run of the server that crashed before flushing them, and from then on
   * (see the head of this file). `change`: nothing to wait for.
   */
  async sync(): Promise<void> {
    if (!this.lazy) return;
    this.live();
    if (this.lost) throw this.lost;
    const due = [...this.runs]
      .filter(([, run]) => run.answered > run.flushed)
      .map(([started, run]) => ({ started, run, upTo: run.answered }));
    if (due.length === 0) return;
    this.stats.flushes++;
    const started = await withRetry(
      this.retry,
      this.shouldRetry,
      async () => {
        const { client, done } = await this.acquire();
        let broken: unknown;
        try {
          // A simple query (no parameters): four statements, four results, one round trip.
          const results = (await client.query(FLUSH_SQL)) as unknown as pg.QueryResult<{ started?: unknown }>[];
          const row = (Array.isArray(results) ? results : [results]).map((r) => r.rows?.[0]).find((r) => r?.started !== undefined);
          return typeof row?.started === 'string' ? row.started : null;
        } catch (e) {
          // Any failure may leave the connection inside the aborted transaction: never reuse it.
          broken = e;
          throw e;
        } finally {
          done(broken);
        }
      },
      this.onRetry,
    );
    // The flush covers what its own run answered before it; what another run answered and no flush
    // of that run covered (another sync may have, meanwhile) survived only if that run stopped cleanly.
    const stale = due.filter((d) => d.run.flushed < d.upTo && (started === null || d.started !== started));
    for (const d of due) if (!stale.includes(d)) d.run.flushed = Math.max(d.run.flushed, d.upTo);
    if (stale.length === 0) return;
    if (await this.restartedCleanly()) {
      // Everything those runs answered is on disk, whenever its answer arrived.
      for (const d of stale) d.run.flushed = Infinity;
      return;
    }
    this.lost ??= this.lose(stale[0]!.started, started);
    throw this.lost;
  }

  /** The error of every sync() from the first loss found on, logged once. */
  private lose(before: string | null, now: string | null): SyncLostError {
    const e = new SyncLostError(
      `PostgreSQL restarted after a crash (started ${before ?? 'at an unknown time'}, now ${now ?? 'unknown'}) while metadata ` +
        'changes answered before it were not yet flushed: they may be lost, and no COMMIT, stable write or SMB FLUSH succeeds ' +
        'any more until DittoFS is restarted',
    );
    this.log.warn({ err: e.message }, 'postgres metadata store: answered changes were lost in a crash of PostgreSQL');
    return e;
  }

  /**
   * After a restart: did the server stop cleanly? A clean stop (fast or smart) flushes the WAL and
   * ends with a shutdown checkpoint taken before the server started again; crash recovery ends
   * with a checkpoint taken after the start (checkpoint_time has whole seconds, hence the second).
   * A checkpoint since (checkpoint_timeout) or a failed look reads as a crash: the caller then
   * reports changes as possibly lost, never the other way round. Not seen: a crash followed by a
   * clean restart before this process looked.
   */
  private async restartedCleanly(): Promise<boolean> {
    try {
      const { rows } = await this.query<{ clean: unknown }>(
        `SELECT pg_postmaster_start_time() >= checkpoint_time + interval '1 second' AS clean FROM pg_control_checkpoint()`,
      );
      return rows[0]?.clean === true;
    } catch (e) {
      this.log.warn({ err: errorMessage(e) }, 'postgres metadata store: cannot tell how PostgreSQL stopped; assuming a crash');
      return false;
    }
  }

  /**
   * `commit`: the start time of the server `client` reached (null: not known), once the caller's
   * statements on it are answered (the question went first, so it is answered already). When that
   * question failed on a connection that lived on (a cancel, a statement timeout), it is asked
   * again here, on the same connection, which never spans two runs of the server: counted under
   * no known run, the calls would read as lost at the next sync() once PostgreSQL has taken a
   * checkpoint since it started (a false alarm that liveness answers with a restart).
   */
  private async startedOn(client: pg.ClientBase): Promise<string | null> {
    const known = (await this.startedOf.get(client)) ?? null;
    if (known !== null) return known;
    try {
      const r = await client.query<{ started: string }>(STARTED_SQL);
      const started = r.rows[0]?.started ?? null;
      if (started !== null) this.startedOf.set(client, Promise.resolve(started));
      return started;
    } catch {
      // The connection broke too, or the question fails again: its calls stay under no known run.
      return null;
    }
  }

  /**
   * `commit`: counts an answered call under the run of the server that answered it, for sync().
   * A call that failed is not counted: it promised nothing, and what it may have changed all the
   * same (a COMMIT whose answer was lost) is seen only by later calls, which are counted.
   */
  private answered(started: string | null): void {
    let run = this.runs.get(started);
    if (run === undefined) this.runs.set(started, (run = { answered: 0, flushed: 0 }));
    run.answered++;
  }

  async query<T extends SqlRow = SqlRow>(
    sql: Statement | string,
    params: readonly unknown[] = [],
    opts: QueryOptions = {},
  ): Promise<QueryResult<T>> {
    this.live();
    const retryable = opts.retryable ?? true;
    return withRetry(
      this.retry,
      this.shouldRetry,
      async () => {
        await this.fenced();
        const { client, done } = await this.acquire();
        let broken: unknown;
        try {
          this.fence?.check();
          const r = await client.query(config(sql, params));
          if (this.lazy) this.answered(await this.startedOn(client));
          return { rows: r.rows as T[] };
        } catch (e) {
          if (isConnectionError(e)) {
            broken = e;
            // The statement was sent; only a retryable one may run again.
            if (!retryable) throw markNoRetry(e);
          }
          throw e;
        } finally {
          done(broken);
        }
      },
      this.onRetry,
    );
  }

  async transaction<T>(fn: (tx: SqlExecutor) => Promise<T>, opts: TransactionOptions = {}): Promise<T> {
    this.live();
    const begin = opts.isolation ? `BEGIN ISOLATION LEVEL ${opts.isolation.toUpperCase()}` : 'BEGIN';
    return withRetry(
      this.retry,
      this.shouldRetry,
      async () => {
        await this.fenced();
        const { client, done } = await this.acquire();
        let broken: unknown;
        let open = true;
        const tx: SqlExecutor = {
          query: async <R extends SqlRow = SqlRow>(sql: Statement | string, params: readonly unknown[] = []) => {
            if (!open) throw new Error('transaction already finished');
            const r = await client.query(config(sql, params));
            return { rows: r.rows as R[] };
          },
        };
        try {
          await client.query(begin);
          let result: T;
          try {
            result = await fn(tx);
          } finally {
            open = false;
          }
          try {
            // The fence lost while the transaction ran: roll back rather than commit unfenced.
            this.fence?.check();
            await client.query('COMMIT');
          } catch (e) {
            if (isConnectionError(e)) {
              broken = e;
              throw markNoRetry(new CommitUncertainError(e));
            }
            // A serialization failure at COMMIT is a definite rollback: safe to run again.
            throw e;
          }
          if (this.lazy) this.answered(await this.startedOn(client));
          return result;
        } catch (e) {
          if (broken === undefined && isConnectionError(e)) broken = e;
          if (broken === undefined) {
            try {
              await client.query('ROLLBACK');
            } catch (re) {
              broken = re;
            }
          }
          throw e;
        } finally {
          done(broken);
        }
      },
      this.onRetry,
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.pool.end();
    } finally {
      // Last: released only once no statement of this process can reach the database any more.
      await this.fence?.close();
    }
  }
}
