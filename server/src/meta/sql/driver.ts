// The thin seam between the SQL metadata engine and a PostgreSQL connection: PGlite in process
// (embedded) or a `pg` pool (postgres). The engine speaks one SQL dialect through it; drivers own
// connections, transactions, and retries of transient failures.
import pRetry from 'p-retry';
import { errorMessage } from '../../error-message.js';

/** A column value as a driver returns it; `rows.ts` turns them into JS values in one place. */
export type SqlRow = Record<string, unknown>;

/**
 * A statement. `name` makes it a named prepared statement where the driver supports that (pg):
 * give every hot statement a unique, stable name; the same name must never carry another text.
 */
export interface Statement {
  readonly name?: string;
  readonly text: string;
}

export interface QueryResult<T> {
  rows: T[];
}

export interface SqlExecutor {
  query<T extends SqlRow = SqlRow>(sql: Statement | string, params?: readonly unknown[]): Promise<QueryResult<T>>;
}

export interface QueryOptions {
  /**
   * May the statement run again when the connection broke while it was in flight and its outcome is
   * unknown? True (the default) for reads and idempotent writes. Pass false for a write whose second
   * run would differ from the first; failures before anything was sent are always retried.
   */
  retryable?: boolean;
}

export interface TransactionOptions {
  /** Default: READ COMMITTED (the engine takes row locks where it needs them). */
  isolation?: 'read committed' | 'repeatable read' | 'serializable';
}

/** The SQL a driver speaks: PostgreSQL's (pg, PGlite) or SQLite's (see sqlite-dialect.ts). */
export type SqlDialect = 'postgres' | 'sqlite';

export interface SqlDriver {
  /** `embedded` (PGlite or SQLite in this process) or `postgres` (pg). */
  readonly kind: 'embedded' | 'postgres';
  readonly dialect: SqlDialect;
  /** One statement in its own implicit transaction. */
  query<T extends SqlRow = SqlRow>(sql: Statement | string, params?: readonly unknown[], opts?: QueryOptions): Promise<QueryResult<T>>;
  /**
   * Runs `fn` in one transaction: COMMIT when it resolves, ROLLBACK when it throws (the error is
   * rethrown). On a serialization failure or deadlock (40001, 40P01), or a connection lost before
   * COMMIT was sent, the whole transaction is run again, with bounded backoff: `fn` must have no
   * effects outside the database. A connection lost during COMMIT is not retried
   * (CommitUncertainError). `tx` is valid only until `fn` settles.
   */
  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>, opts?: TransactionOptions): Promise<T>;
  /**
   * A long read-only statement (a share's usage) that needs only committed data, run where it holds
   * up no other call when the driver has such a place (SQLite: its checkpoint worker's connection,
   * off the event loop). Absent: query().
   */
  readAside?<T extends SqlRow = SqlRow>(sql: Statement, params: readonly (number | string)[]): Promise<QueryResult<T>>;
  /**
   * Drivers that answer a change before it is on disk (SQLite with sync `commit`): settles once
   * every change answered so far is. Absent: every change is durable when its call settles.
   */
  sync?(): Promise<void>;
  /**
   * Set for good once the driver can no longer vouch for what it answered (SQLite: an fsync
   * failed; PostgreSQL under sync `commit`: answered changes were lost in a crash). Until a restart
   * it refuses (part of) its work; liveness reports it, so that Kubernetes restarts DittoFS.
   */
  failure?(): Error | null;
  close(): Promise<void>;
}

/** Thrown when the connection broke while COMMIT was in flight: the transaction may or may not have applied. */
export class CommitUncertainError extends Error {
  override readonly name = 'CommitUncertainError';
  readonly code = 'DITTOFS_SQL_COMMIT_UNCERTAIN';
  constructor(override readonly cause: unknown) {
    super(`connection lost during COMMIT; the transaction may have been applied: ${errorMessage(cause)}`);
  }
}

/**
 * sync() cannot vouch for changes answered earlier: the database restarted (crash, failover) while
 * some were answered but perhaps not yet on its disk, so they may be gone.
 */
export class SyncLostError extends Error {
  override readonly name = 'SyncLostError';
  readonly code = 'DITTOFS_SQL_SYNC_LOST';
}

/**
 * Thrown by transaction code to have the whole transaction run again, like a serialization failure
 * (e.g. rows it had to lock changed between reading and locking them).
 */
export class RetryTransaction extends Error {
  override readonly name = 'RetryTransaction';
  readonly code = '40001';
  constructor(message = 'transaction must be retried') {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------
// Error classification

export const SQLSTATE = Object.freeze({
  UNIQUE_VIOLATION: '23505',
  FOREIGN_KEY_VIOLATION: '23503',
  SERIALIZATION_FAILURE: '40001',
  DEADLOCK_DETECTED: '40P01',
  /** The database's volume is full (PostgreSQL's disk_full; the SQLite driver gives it for SQLITE_FULL). */
  DISK_FULL: '53100',
} as const);

export function sqlState(e: unknown): string | undefined {
  if (typeof e !== 'object' || e === null) return undefined;
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

export { errorMessage };

/** A transaction that lost a race and can simply run again. */
export function isTransientConflict(e: unknown): boolean {
  const c = sqlState(e);
  return c === SQLSTATE.SERIALIZATION_FAILURE || c === SQLSTATE.DEADLOCK_DETECTED;
}

const CONNECTION_SQLSTATES = new Set([
  '08000', // connection_exception
  '08001', // sqlclient_unable_to_establish_sqlconnection
  '08003', // connection_does_not_exist
  '08004', // sqlserver_rejected_establishment_of_sqlconnection
  '08006', // connection_failure
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up, shutting down, recovering)
  '53300', // too_many_connections
]);

const CONNECTION_ERRNOS = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

const CONNECTION_MESSAGES = [
  'Connection terminated',
  'connection terminated',
  'Client has encountered a connection error',
  'Client was closed and is not queryable',
  'timeout exceeded when trying to connect',
  'Connection ended unexpectedly',
];

/** The connection (or the server behind it) went away: the same work may succeed on a new one. */
export function isConnectionError(e: unknown): boolean {
  const c = sqlState(e);
  if (c !== undefined && (CONNECTION_SQLSTATES.has(c) || CONNECTION_ERRNOS.has(c))) return true;
  const msg = errorMessage(e);
  return CONNECTION_MESSAGES.some((m) => msg.includes(m));
}

// ---------------------------------------------------------------------------------------------
// Bounded retry

export interface RetryPolicy {
  /** Attempts in all, the first included. */
  maxAttempts: number;
  /** No attempt starts later than this much time after the first. */
  maxElapsedMs: number;
  /** First backoff; doubles each retry, jittered to half..all of it, then capped at maxDelayMs. */
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY_POLICY: Readonly<RetryPolicy> = Object.freeze({
  maxAttempts: 12,
  maxElapsedMs: 20_000,
  baseDelayMs: 10,
  maxDelayMs: 1_000,
});

export interface RetryEvent {
  /** The attempt that failed (1 = the first). */
  attempt: number;
  error: unknown;
}

/**
 * Runs `fn` until it succeeds, `shouldRetry` says no, or the policy's count or time runs out; then
 * the last error is thrown. The loop is p-retry's: backoff doubling from baseDelayMs, jittered to
 * half..all of it, capped at maxDelayMs; the last wait is cut short at maxElapsedMs. `shouldRetry`
 * sees every failure, the last one too (the drivers count them); `onRetry` is told of each one
 * that will be tried again. (p-retry never retries a TypeError: none of the failures the drivers
 * retry is one.)
 */
export function withRetry<T>(
  policy: RetryPolicy,
  shouldRetry: (e: unknown) => boolean,
  fn: (attempt: number) => Promise<T>,
  onRetry?: (ev: RetryEvent) => void,
): Promise<T> {
  // p-retry asks its shouldRetry only while attempts and time are left: the verdict is taken at
  // every failure (onFailedAttempt), as the drivers' counters expect.
  let retryable = false;
  return pRetry(fn, {
    retries: Math.max(0, policy.maxAttempts - 1),
    factor: 2,
    minTimeout: policy.baseDelayMs / 2,
    maxTimeout: policy.maxDelayMs,
    randomize: true,
    maxRetryTime: policy.maxElapsedMs,
    onFailedAttempt: ({ error }) => {
      retryable = shouldRetry(error);
    },
    shouldRetry: ({ error, attemptNumber }) => {
      if (!retryable) return false;
      onRetry?.({ attempt: attemptNumber, error });
      return true;
    },
  });
}

/** The minimal logger the drivers write to (pino's Logger fits). */
export interface DriverLogger {
  warn(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

export const silentLogger: DriverLogger = { warn() {}, debug() {} };
