// The SQL metadata engines: `embedded` (PGlite or SQLite in this process, data in a local directory)
// and `postgres` (a pg pool). All are SqlMetadataStore over a different SqlDriver.
import path from 'node:path';
import { DEFAULT_EMBEDDED_ENGINE, type EmbeddedEngine } from '../../config/types.js';
import type { DriverLogger, RetryPolicy, SqlDriver } from './driver.js';
import { observeSqlDriver, type SqlDriverObserver } from './observed.js';
import { PgDriver, type PgDriverOptions } from './pg.js';
import { PgliteDriver } from './pglite.js';
import { SQLITE_FILE, SqliteDriver, type SqliteSync } from './sqlite.js';
import { PGLITE_BACKUP_DIR, embeddedLayout, finishMove, migratePgliteToSqlite } from './embedded.js';
import { sqliteStatementsByName } from './sqlite-dialect.js';
import { S, SqlMetadataStore } from './store.js';

export { SqlMetadataStore } from './store.js';
export { PgDriver, type PgDriverOptions, type PgSync } from './pg.js';
export { PgliteDriver } from './pglite.js';
export { SqliteDriver, SqliteError, SQLITE_FILE, type SqliteSync } from './sqlite.js';
export { FenceHeldError, FenceLostError, PgFence, describePgUrl, fenceKey, type FencePurpose } from './fence.js';
export { observeSqlDriver, sqlErrorReason, type SqlDriverObserver, type SqlErrorReason } from './observed.js';
export { MIGRATIONS, migrate, type Migration, type MigrationReport } from './migrations.js';
export * from './driver.js';

export interface EmbeddedMetadataStoreOptions {
  /** The store's directory (created if missing); one process at a time. */
  path: string;
  /** Default DEFAULT_EMBEDDED_ENGINE. */
  engine?: EmbeddedEngine;
  /** SQLite: when changes reach the disk (sqlite.ts; default `commit`). */
  sync?: SqliteSync;
  retry?: RetryPolicy;
  logger?: DriverLogger;
  /** Traces the driver's calls and counts its failures (the server's metrics and tracing). */
  observer?: SqlDriverObserver;
}

const observed = (driver: SqlDriver, observer: SqlDriverObserver | undefined): SqlDriver =>
  observer === undefined ? driver : observeSqlDriver(driver, observer);

export function createEmbeddedMetadataStore(opts: EmbeddedMetadataStoreOptions): SqlMetadataStore {
  if ((opts.engine ?? DEFAULT_EMBEDDED_ENGINE) === 'sqlite') {
    return new SqlMetadataStore({
      kind: 'embedded',
      connect: async () => {
        const statements = sqliteStatementsByName(S);
        const dir = path.resolve(opts.path);
        if (embeddedLayout(dir) === 'pglite') await migratePgliteToSqlite(dir, statements, opts.logger);
        const driver = SqliteDriver.open({
          dir,
          statements,
          ...(opts.sync ? { sync: opts.sync } : {}),
          ...(opts.retry ? { retry: opts.retry } : {}),
          ...(opts.logger ? { logger: opts.logger } : {}),
        });
        // With DIR/LOCK held (the driver's): a move's PGlite files become the backup.
        try {
          finishMove(dir);
        } catch (e) {
          await driver.close();
          throw e;
        }
        return observed(driver, opts.observer);
      },
    });
  }
  return new SqlMetadataStore({
    kind: 'embedded',
    connect: async () => {
      if (embeddedLayout(path.resolve(opts.path)) === 'sqlite')
        throw new Error(
          `embedded metadata store ${opts.path} holds a SQLite database (${SQLITE_FILE}): set its engine to sqlite; a PGlite store it was moved from is in ${PGLITE_BACKUP_DIR}`,
        );
      return observed(
        await PgliteDriver.open({
          dir: opts.path,
          ...(opts.retry ? { retry: opts.retry } : {}),
          ...(opts.logger ? { logger: opts.logger } : {}),
        }),
        opts.observer,
      );
    },
  });
}

export interface PostgresMetadataStoreOptions extends PgDriverOptions {
  /** Traces the driver's calls and counts its failures (the server's metrics and tracing). */
  observer?: SqlDriverObserver;
}

/** How long a call waits for a fence being taken again (a PostgreSQL restart) before JUKEBOX. */
const FENCE_WAIT_MS = 5_000;

/** A postgres store; with `fence`, served by this process alone (see fence.ts). */
export function createPostgresMetadataStore(opts: PostgresMetadataStoreOptions): SqlMetadataStore {
  const { observer, ...pg } = opts;
  let driver: PgDriver | null = null;
  return new SqlMetadataStore({
    kind: 'postgres',
    connect: async () => {
      driver = await PgDriver.open(pg);
      return observed(driver, observer);
    },
    serving: () => driver?.fence?.whenHeld(FENCE_WAIT_MS),
  });
}
