// A SqlDriver as the server runs it: statements and transactions are CLIENT spans when tracing is on
// (`db.query`, `db.transaction` with its statements as children), and failures that are the
// database's (not the engine's own answers such as EXIST) are counted by reason. The drivers
// themselves stay unaware of either.
import type { Attributes } from '@opentelemetry/api';
import { SpanKind, traced, tracingEnabled } from '../../obs/tracing.js';
import { isVfsError } from '../../vfs/errors.js';
import {
  CommitUncertainError,
  isConnectionError,
  isTransientConflict,
  RetryTransaction,
  sqlState,
  SQLSTATE,
  type QueryOptions,
  type QueryResult,
  type SqlDialect,
  type SqlDriver,
  type SqlExecutor,
  type SqlRow,
  type Statement,
  type TransactionOptions,
} from './driver.js';

/** Why a database call failed, as a metrics label. */
export type SqlErrorReason = 'connection' | 'conflict' | 'timeout' | 'commit_uncertain' | 'disk_full' | 'other';

/**
 * The reason a failure is the database's, or null for an outcome the engine expects and turns
 * into an answer (a VfsError thrown inside a transaction, a unique violation that means EXIST).
 */
export function sqlErrorReason(err: unknown): SqlErrorReason | null {
  if (isVfsError(err)) return null;
  if (err instanceof CommitUncertainError) return 'commit_uncertain';
  if (isConnectionError(err)) return 'connection';
  if (err instanceof RetryTransaction || isTransientConflict(err)) return 'conflict';
  const state = sqlState(err);
  if (state === SQLSTATE.UNIQUE_VIOLATION) return null;
  // query_canceled: statement_timeout (or a cancel request).
  if (state === '57014') return 'timeout';
  // disk_full: the database's volume (SQLite's file, PostgreSQL's data directory) has no room.
  if (state === SQLSTATE.DISK_FULL) return 'disk_full';
  return 'other';
}

export interface SqlDriverObserver {
  /** The metadata store's name in the config (span attribute). */
  store: string;
  /** Called once per failed query or transaction (after the driver's retries). */
  onError?: (reason: SqlErrorReason, err: unknown) => void;
}

function statementName(sql: Statement | string): string {
  if (typeof sql !== 'string' && sql.name !== undefined) return sql.name;
  const text = typeof sql === 'string' ? sql : sql.text;
  return /^\s*(\w+)/.exec(text)?.[1]?.toUpperCase() ?? 'SQL';
}

/** OpenTelemetry's name of the database system (PGlite is PostgreSQL compiled to WebAssembly). */
const dbSystem = (d: SqlDialect): string => (d === 'sqlite' ? 'sqlite' : 'postgresql');

class ObservedSqlDriver implements SqlDriver {
  constructor(
    private readonly inner: SqlDriver,
    private readonly obs: SqlDriverObserver,
  ) {}

  get kind(): 'embedded' | 'postgres' {
    return this.inner.kind;
  }

  get dialect(): SqlDialect {
    return this.inner.dialect;
  }

  sync(): Promise<void> {
    return this.inner.sync?.() ?? Promise.resolve();
  }

  failure(): Error | null {
    return this.inner.failure?.() ?? null;
  }

  private attributes(sql: Statement | string): Attributes {
    return {
      'db.system.name': dbSystem(this.inner.dialect),
      'db.namespace': this.obs.store,
      'db.query.summary': statementName(sql),
      'db.query.text': typeof sql === 'string' ? sql : sql.text,
      'dittofs.metadata_store.type': this.inner.kind,
    };
  }

  private counted<T>(p: Promise<T>): Promise<T> {
    const onError = this.obs.onError;
    if (onError === undefined) return p;
    return p.catch((err: unknown) => {
      const reason = sqlErrorReason(err);
      if (reason !== null) onError(reason, err);
      throw err;
    });
  }

  query<T extends SqlRow = SqlRow>(sql: Statement | string, params?: readonly unknown[], opts?: QueryOptions): Promise<QueryResult<T>> {
    if (!tracingEnabled()) return this.counted(this.inner.query<T>(sql, params, opts));
    return this.counted(traced('db.query', SpanKind.CLIENT, this.attributes(sql), () => this.inner.query<T>(sql, params, opts)));
  }

  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>, opts?: TransactionOptions): Promise<T> {
    if (!tracingEnabled()) return this.counted(this.inner.transaction(fn, opts));
    const attributes: Attributes = { 'db.system.name': dbSystem(this.inner.dialect), 'db.namespace': this.obs.store };
    return this.counted(
      traced('db.transaction', SpanKind.CLIENT, attributes, () =>
        this.inner.transaction(
          // Each statement of the transaction is a child span of it.
          (tx) =>
            fn({
              query: <R extends SqlRow = SqlRow>(sql: Statement | string, params?: readonly unknown[]) =>
                traced('db.query', SpanKind.CLIENT, this.attributes(sql), () => tx.query<R>(sql, params)),
            }),
          opts,
        ),
      ),
    );
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/** Wraps a driver so that its calls are traced and its failures counted. */
export function observeSqlDriver(driver: SqlDriver, obs: SqlDriverObserver): SqlDriver {
  return new ObservedSqlDriver(driver, obs);
}
