// A control store on PostgreSQL for the control store's test suites: a private cluster (or
// DITTOFS_TEST_PG_URL) and a schema of the test file's own, dropped again when an external server
// was used.
import { openControlStore, type ControlStore } from '../../server/src/control/store.js';
import { PgDriver } from '../../server/src/meta/sql/pg.js';
import { postgresForTests } from './postgres.js';

export async function postgresControlStore(schema: string): Promise<{ store: ControlStore; teardown: () => Promise<void> }> {
  const pg = await postgresForTests();
  const store = await openControlStore({ type: 'postgres', url: pg.url, schema });
  return {
    store,
    async teardown() {
      await store.close();
      if (pg.external) {
        const d = await PgDriver.open({ url: pg.url });
        await d.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await d.close();
      }
      await pg.stop();
    },
  };
}
