// The control store's SQL where PostgreSQL (pg) and SQLite (the embedded engine) differ. The store
// (store.ts), its migrations and the backup are one implementation for both; only these fragments
// differ. What they bridge:
// - Timestamps: PostgreSQL's timestamptz and now(); SQLite stores ISO-8601 text in UTC.
// - JSON: jsonb (parsed by the driver) versus JSON text (parsed here).
// - Arrays: `= ANY($n::text[])` and array_agg versus json_each and json_group_array.
// - Row locks: SQLite's one connection runs every transaction alone (BEGIN IMMEDIATE), stronger
//   than SELECT ... FOR UPDATE on the state row, which it does not have.
// - Token versions: a sequence versus a one-row table (migrations.ts).
// - uid/gid uniqueness: PostgreSQL checks deferred UNIQUE constraints at COMMIT; SQLite has no
//   deferred UNIQUE, so the store checks at the end of every change (duplicateIds below).
import type { SqlDialect } from '../meta/sql/driver.js';

export interface ControlDialect {
  readonly name: SqlDialect;
  /** The current time, as stored in created_at / updated_at. */
  readonly now: string;
  /** `column` is one of the strings of the text-array parameter `$n`. */
  inList(column: string, n: number): string;
  /** Parameter `$n` as a JSON value (bound as JSON text). */
  json(n: number): string;
  /** A JSON column's value as JS. */
  fromJson(v: unknown): unknown;
  /** The names `column` from `from` (a FROM ... WHERE clause), sorted, as an array. */
  agg(column: string, from: string): string;
  /** Locks the state row (the first statement of every change). */
  readonly lockState: string;
  /** A new token version (never handed out before): one row, column `v`. */
  readonly nextTokenVersion: string;
  /** Token versions handed out from now on are above `$1` and above every one handed out before. */
  readonly raiseTokenVersions: string;
  /** The larger of two values. */
  greatest(a: string, b: string): string;
  /**
   * A query for ids held twice (column `what`: 'uid' or 'gid', `id`), or null when the database
   * enforces uniqueness itself at COMMIT.
   */
  readonly duplicateIds: string | null;
}

const POSTGRES: ControlDialect = {
  name: 'postgres',
  now: 'now()',
  inList: (column, n) => `${column} = ANY($${n}::text[])`,
  json: (n) => `$${n}::jsonb`,
  fromJson: (v) => v,
  agg: (column, from) => `coalesce((SELECT array_agg(${column} ORDER BY ${column}) ${from}), '{}')`,
  lockState: 'SELECT generation FROM control_state WHERE id = 1 FOR UPDATE',
  nextTokenVersion: `SELECT nextval('token_versions') AS v`,
  raiseTokenVersions: `SELECT setval('token_versions', greatest($1::bigint, (SELECT last_value FROM token_versions), 1))`,
  greatest: (a, b) => `greatest(${a}, ${b})`,
  duplicateIds: null,
};

/** ISO-8601 in UTC with milliseconds, as Date.prototype.toISOString() writes it. */
export const SQLITE_NOW = `strftime('%Y-%m-%dT%H:%M:%fZ', 'now')`;

const SQLITE: ControlDialect = {
  name: 'sqlite',
  now: SQLITE_NOW,
  inList: (column, n) => `${column} IN (SELECT value FROM json_each($${n}))`,
  json: (n) => `$${n}`,
  fromJson: (v) => (typeof v === 'string' ? (JSON.parse(v) as unknown) : v),
  agg: (column, from) => `(SELECT json_group_array(v) FROM (SELECT ${column} AS v ${from} ORDER BY v))`,
  lockState: 'SELECT generation FROM control_state WHERE id = 1',
  nextTokenVersion: 'UPDATE token_versions SET last_value = last_value + 1 RETURNING last_value AS v',
  raiseTokenVersions: 'UPDATE token_versions SET last_value = max($1, last_value, 1)',
  greatest: (a, b) => `max(${a}, ${b})`,
  duplicateIds: `SELECT 'uid' AS what, uid AS id FROM users GROUP BY uid HAVING count(*) > 1
    UNION ALL SELECT 'gid', gid FROM groups GROUP BY gid HAVING count(*) > 1 LIMIT 1`,
};

export function controlDialect(d: SqlDialect): ControlDialect {
  return d === 'sqlite' ? SQLITE : POSTGRES;
}
