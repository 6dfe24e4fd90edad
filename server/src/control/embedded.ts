// The embedded control database: SQLite in DIR/control.sqlite (+ -wal, -shm) with DIR/LOCK held
// while open, and the one-way move of a PGlite control database (DIR/pgdata, DittoFS before the
// SQLite engine) to it, as the metadata store's move does (meta/sql/embedded.ts):
// every row is copied into a new database built in DIR/sqlite-migrating/, the row counts are
// checked on both sides, and only then is the file renamed into place and pgdata renamed to
// DIR/pgdata.pglite-backup (kept for the administrator to delete). Until the first rename nothing
// the server reads has changed: a failed move removes its half-built copy, says why, and the PGlite
// database stays as it was. A crash between the renames is finished at the next open.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { silentLogger, type DriverLogger, type SqlDriver, type SqlRow } from '../meta/sql/driver.js';
import { PGLITE_DIR, finishMove, moveToSqlite } from '../meta/sql/embedded.js';
import { SqliteDriver, type SqliteSync } from '../meta/sql/sqlite.js';
import { migrateControl } from './migrations.js';

/** The control database's file in its directory. */
export const CONTROL_SQLITE_FILE = 'control.sqlite';

export type ControlLayout = 'empty' | 'pglite' | 'sqlite';

export function controlLayout(dir: string): ControlLayout {
  if (existsSync(path.join(dir, CONTROL_SQLITE_FILE))) return 'sqlite';
  if (existsSync(path.join(dir, PGLITE_DIR, 'PG_VERSION'))) return 'pglite';
  return 'empty';
}

/**
 * Opens the SQLite control database in `dir`. `change` (the embedded default): every change is on
 * disk before it is answered, as it was on PGlite; changes are rare. No checkpoint thread: the WAL
 * of so small a database is checkpointed by SQLite itself at COMMIT.
 */
export function openControlSqlite(dir: string, logger: DriverLogger = silentLogger, sync: SqliteSync = 'change'): SqliteDriver {
  return SqliteDriver.open({ dir, file: CONTROL_SQLITE_FILE, statements: {}, sync, checkpointWorker: false, logger });
}

/** Opens the embedded control database in `dir`, moving a PGlite one to SQLite first. */
export async function openEmbeddedControl(dir: string, logger: DriverLogger = silentLogger): Promise<SqlDriver> {
  const abs = path.resolve(dir);
  if (controlLayout(abs) === 'pglite') await movePgliteControl(abs, logger);
  const driver = openControlSqlite(abs, logger);
  // With DIR/LOCK held (the driver's): a move's PGlite files become the backup.
  try {
    finishMove(abs);
  } catch (e) {
    await driver.close();
    throw e;
  }
  return driver;
}

/** A control table: its columns, the JSON ones, and the order to read it in. */
interface TableCopy {
  table: string;
  columns: readonly string[];
  json?: readonly string[];
  order: string;
}

/** Parents before children (foreign keys). */
const TABLES: readonly TableCopy[] = [
  { table: 'metadata_stores', columns: ['name', 'type', 'config', 'created_at', 'updated_at'], json: ['config'], order: 'name' },
  { table: 'block_stores', columns: ['name', 'type', 'config', 'created_at', 'updated_at'], json: ['config'], order: 'name' },
  {
    table: 'users',
    columns: [
      'username',
      'password_hash',
      'nt_hash',
      'uid',
      'gid',
      'email',
      'role',
      'must_change_password',
      'token_version',
      'created_at',
      'updated_at',
    ],
    order: 'username',
  },
  { table: 'groups', columns: ['name', 'gid', 'created_at', 'updated_at'], order: 'name' },
  { table: 'group_members', columns: ['group_name', 'username'], order: 'group_name, username' },
  {
    table: 'shares',
    columns: [
      'name',
      'metadata_store',
      'block_store',
      'read_only',
      'default_permission',
      'root_squash',
      'anonymous_uid',
      'anonymous_gid',
      'root_mode',
      'root_uid',
      'root_gid',
      'created_at',
      'updated_at',
    ],
    order: 'name',
  },
  { table: 'share_permissions', columns: ['share', 'username', 'group_name', 'level'], order: 'share, username, group_name' },
  { table: 'adapters', columns: ['type', 'enabled', 'port', 'updated_at'], order: 'type' },
  { table: 'control_secrets', columns: ['name', 'value', 'created_at'], order: 'name' },
  { table: 'settings', columns: ['key', 'value', 'updated_at'], json: ['value'], order: 'key' },
];

/** A PostgreSQL value as the SQLite tables hold it. */
function sqliteValue(v: unknown, json: boolean): unknown {
  if (json) return JSON.stringify(v);
  if (v instanceof Date) return v.toISOString();
  return v;
}

/**
 * Moves the PGlite control database in `dir` to SQLite (see the file's head; the steps are the
 * metadata store's, meta/sql/embedded.ts moveToSqlite). Throws, with the PGlite database in
 * place, when it cannot. The control plane is small (users, groups, shares): each table is read
 * in one query.
 */
export async function movePgliteControl(dir: string, log: DriverLogger = silentLogger): Promise<void> {
  await moveToSqlite(
    dir,
    {
      what: 'embedded control database',
      noun: 'database',
      file: CONTROL_SQLITE_FILE,
      tables: TABLES.map((t) => t.table),
      migrate: migrateControl,
      open: (work) => openControlSqlite(work, log, 'commit'),
      copy: async (from, tx) => {
        const { rows: state } = await from.query<{ generation: unknown }>('SELECT generation FROM control_state WHERE id = 1');
        const { rows: seq } = await from.query<{ last_value: unknown; is_called: unknown }>(
          'SELECT last_value, is_called FROM token_versions',
        );
        // The last version handed out (none yet: one below the sequence's first value).
        const lastToken = Number(seq[0]?.last_value ?? 1) - (seq[0]?.is_called === true ? 0 : 1);
        const counts: Record<string, number> = {};
        for (const t of TABLES) {
          const { rows } = await from.query<SqlRow>(`SELECT ${t.columns.join(', ')} FROM ${t.table} ORDER BY ${t.order}`);
          const insert = `INSERT INTO ${t.table} (${t.columns.join(', ')}) VALUES (${t.columns.map((_, i) => `$${i + 1}`).join(', ')})`;
          for (const r of rows)
            await tx.query(
              insert,
              t.columns.map((c) => sqliteValue(r[c], t.json?.includes(c) === true)),
            );
          counts[t.table] = rows.length;
        }
        await tx.query('UPDATE control_state SET generation = $1 WHERE id = 1', [Number(state[0]?.generation ?? 0)]);
        await tx.query('UPDATE token_versions SET last_value = max($1, (SELECT coalesce(max(token_version), 0) FROM users))', [lastToken]);
        return counts;
      },
    },
    log,
  );
}
