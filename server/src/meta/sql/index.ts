// The SQL metadata engines: `embedded` (PGlite in this process, data in a local directory) and
// `postgres` (a pg pool). Both are SqlMetadataStore over a different SqlDriver.
import type { DriverLogger, RetryPolicy } from './driver.js';
import { PgDriver, type PgDriverOptions } from './pg.js';
import { PgliteDriver } from './pglite.js';
import { SqlMetadataStore } from './store.js';

export { SqlMetadataStore } from './store.js';
export { PgDriver, type PgDriverOptions } from './pg.js';
export { PgliteDriver } from './pglite.js';
export { MIGRATIONS, migrate, type Migration, type MigrationReport } from './migrations.js';
export * from './driver.js';

export interface EmbeddedMetadataStoreOptions {
  /** The store's directory (created if missing); one process at a time. */
  path: string;
  retry?: RetryPolicy;
  logger?: DriverLogger;
}

export function createEmbeddedMetadataStore(opts: EmbeddedMetadataStoreOptions): SqlMetadataStore {
  return new SqlMetadataStore({
    kind: 'embedded',
    connect: () =>
      PgliteDriver.open({ dir: opts.path, ...(opts.retry ? { retry: opts.retry } : {}), ...(opts.logger ? { logger: opts.logger } : {}) }),
  });
}

export type PostgresMetadataStoreOptions = PgDriverOptions;

export function createPostgresMetadataStore(opts: PostgresMetadataStoreOptions): SqlMetadataStore {
  return new SqlMetadataStore({ kind: 'postgres', connect: () => PgDriver.open(opts) });
}
