// Which engine an embedded store's directory holds, and the one-way move of a PGlite store to
// SQLite. A directory holds DIR/pgdata (PGlite) or DIR/metadata.sqlite (SQLite); after a move,
// DIR/pgdata.pglite-backup is the PGlite store as it was, kept for the administrator to delete.
//
// The move copies every row into a new SQLite database built beside the store
// (DIR/sqlite-migrating/), checks the row counts, and only then renames it into place, then renames
// pgdata to the backup. Until the first rename nothing the server reads has changed: a failure
// removes the half-built copy and says why, and the PGlite store opens as before. (Opening it does
// apply PGlite's own schema migrations first, as any upgrade would.) A crash between the two
// renames is finished at the next open. Every step runs with DIR/LOCK held (lockfile.ts).
import { existsSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { errorMessage, silentLogger, type DriverLogger, type SqlDriver, type SqlExecutor, type SqlRow } from './driver.js';
import { migrate } from './migrations.js';
import { PgliteDriver } from './pglite.js';
import { INODE_COLUMNS } from './rows.js';
import { SQLITE_FILE, SqliteDriver, fsyncDir, type SqliteForm } from './sqlite.js';

export const PGLITE_DIR = 'pgdata';
export const PGLITE_BACKUP_DIR = 'pgdata.pglite-backup';
export const MIGRATING_DIR = 'sqlite-migrating';

/** Rows copied per query: bounds the memory a move of a large store holds. */
const PAGE = 2_000;

export type EmbeddedLayout = 'empty' | 'pglite' | 'sqlite';

export function embeddedLayout(dir: string): EmbeddedLayout {
  if (existsSync(path.join(dir, SQLITE_FILE))) return 'sqlite';
  if (existsSync(path.join(dir, PGLITE_DIR, 'PG_VERSION'))) return 'pglite';
  return 'empty';
}

/** A table and how to page through it in key order. */
interface TableCopy {
  table: string;
  columns: readonly string[];
  key: readonly string[];
}

const TABLES: readonly TableCopy[] = [
  // size_token: not an inode column the stores read back (rows.ts), but a file's fencing record (migration 6).
  { table: 'inodes', columns: [...INODE_COLUMNS, 'size_token'], key: ['id'] },
  { table: 'dirents', columns: ['parent', 'name', 'cookie', 'child'], key: ['parent', 'name'] },
  { table: 'streams', columns: ['file', 'name', 'inode'], key: ['file', 'name'] },
  { table: 'share_roots', columns: ['share_id', 'root'], key: ['share_id'] },
  { table: 'blocks', columns: ['inode', 'idx', 'key', 'length', 'version', 'token'], key: ['inode', 'idx'] },
  { table: 'file_fences', columns: ['inode', 'token'], key: ['inode'] },
  // SMB's records of a file: extended attributes, a security descriptor (its DACL), an allocation size (migration 5).
  { table: 'inode_meta', columns: ['inode', 'kind', 'name', 'value'], key: ['inode', 'kind', 'name'] },
];

async function copyTable(from: SqlDriver, to: SqlExecutor, t: TableCopy): Promise<number> {
  const cols = t.columns.join(', ');
  const keys = t.key.join(', ');
  const after = `(${keys}) > (${t.key.map((_, i) => `$${i + 1}`).join(', ')})`;
  const insert = `INSERT INTO ${t.table} (${cols}) VALUES (${t.columns.map((_, i) => `$${i + 1}`).join(', ')})`;
  let last: unknown[] | null = null;
  let n = 0;
  for (;;) {
    const where: string = last === null ? '' : `WHERE ${after}`;
    const { rows }: { rows: SqlRow[] } = await from.query(
      `SELECT ${cols} FROM ${t.table} ${where} ORDER BY ${keys} LIMIT ${PAGE}`,
      last ?? [],
    );
    for (const r of rows)
      await to.query(
        insert,
        t.columns.map((c) => r[c]),
      );
    n += rows.length;
    if (rows.length < PAGE) return n;
    const end: SqlRow = rows[rows.length - 1]!;
    last = t.key.map((k): unknown => end[k]);
  }
}

async function count(q: { query: SqlDriver['query'] | SqlExecutor['query'] }, table: string): Promise<number> {
  const { rows } = await q.query(`SELECT count(*) AS n FROM ${table}`);
  return Number(rows[0]?.n ?? 0);
}

/** What a move of one kind of embedded database (metadata store, control database) supplies. */
export interface SqliteMove {
  /** How errors and the log name it: `embedded metadata store`. */
  what: string;
  /** The PGlite side in the messages: `store`, `database`. */
  noun: string;
  /** The SQLite file in the directory. */
  file: string;
  /** Every table copied (row counts checked on both sides). */
  tables: readonly string[];
  /** Brings a database to the newest schema: the PGlite one, then the new one. */
  migrate(d: SqlDriver): Promise<unknown>;
  /** Opens the new SQLite database in the work directory. */
  open(work: string): SqliteDriver;
  /** Copies every row inside the new database's one transaction; rows copied per table. */
  copy(from: PgliteDriver, to: SqlExecutor): Promise<Record<string, number>>;
}

/**
 * Moves a PGlite database in `dir` to SQLite (see the file's head): copied in one transaction,
 * row counts checked in the new database and again in the old one, then renamed into place.
 * Throws, with the PGlite database in place, when it cannot.
 */
export async function moveToSqlite(dir: string, m: SqliteMove, log: DriverLogger = silentLogger): Promise<void> {
  const work = path.join(dir, MIGRATING_DIR);
  const t0 = Date.now();
  let pg: PgliteDriver | null = null;
  let lite: SqliteDriver | null = null;
  let counts: Record<string, number> = {};
  try {
    // The PGlite driver holds DIR/LOCK until the new database is in place: a second process
    // neither removes this move's work directory nor renames anything under it.
    pg = await PgliteDriver.open({ dir, logger: log });
    // A move that a crash interrupted before its rename: start again.
    rmSync(work, { recursive: true, force: true });
    await m.migrate(pg);
    lite = m.open(work);
    await m.migrate(lite);
    const from = pg;
    await lite.transaction(async (tx) => {
      counts = await m.copy(from, tx);
      for (const t of m.tables) {
        const n = await count(tx, t);
        if (n !== counts[t]) throw new Error(`${t}: ${counts[t]} rows read, ${n} in the new database`);
      }
    });
    for (const t of m.tables) {
      const n = await count(from, t);
      if (n !== counts[t]) throw new Error(`${t} changed during the move (${n} rows, ${counts[t]} copied)`);
    }
    await lite.close();
    lite = null;
    // Closing checkpoints the WAL into the database file and removes it. A checkpoint that failed
    // (a full disk) leaves the WAL behind, and the file alone is then incomplete: never moved in.
    if (existsSync(path.join(work, `${m.file}-wal`)))
      throw new Error(`the new database's WAL could not be written into ${m.file} (is the disk full?)`);
  } catch (e) {
    await lite?.close().catch(() => undefined);
    // Only while this process holds DIR/LOCK: otherwise the work directory may be another's move.
    if (pg !== null) rmSync(work, { recursive: true, force: true });
    await pg?.close().catch(() => undefined);
    throw new Error(`${m.what} ${dir}: the move from PGlite to SQLite failed; the PGlite ${m.noun} is unchanged: ${errorMessage(e)}`);
  }
  try {
    renameSync(path.join(work, m.file), path.join(dir, m.file));
    fsyncDir(dir);
  } finally {
    await pg.close();
  }
  log.warn(
    { dir, rows: counts, ms: Date.now() - t0, backup: path.join(dir, PGLITE_BACKUP_DIR) },
    `${m.what} moved from PGlite to SQLite; the PGlite ${m.noun} is kept as a backup`,
  );
}

/**
 * Moves the PGlite store in `dir` to SQLite (see the file's head). Throws, with the PGlite store in
 * place, when it cannot.
 */
export async function migratePgliteToSqlite(
  dir: string,
  statements: Readonly<Record<string, SqliteForm>>,
  log: DriverLogger = silentLogger,
): Promise<void> {
  await moveToSqlite(
    dir,
    {
      what: 'embedded metadata store',
      noun: 'store',
      file: SQLITE_FILE,
      tables: TABLES.map((t) => t.table),
      migrate,
      open: (work) => SqliteDriver.open({ dir: work, statements, logger: log }),
      copy: async (from, tx) => {
        const { rows: storeId } = await from.query<{ id: unknown }>('SELECT id FROM dittofs_store_id');
        const seq = await from.query<{ last_value: unknown; is_called: unknown }>('SELECT last_value, is_called FROM lease_tokens');
        const s = seq.rows[0];
        // The inode ids handed out, deleted ones included: none is handed out again (AUTOINCREMENT).
        const ids = await from.query<{ v: unknown }>(
          `SELECT pg_sequence_last_value(pg_get_serial_sequence('inodes', 'id')::regclass) AS v`,
        );
        const lastId = Number(ids.rows[0]?.v ?? 0);
        const counts: Record<string, number> = {};
        for (const t of TABLES) counts[t.table] = await copyTable(from, tx, t);
        await tx.query('UPDATE dittofs_store_id SET id = $1', [storeId[0]?.id]);
        if (s) await tx.query('UPDATE lease_tokens SET last_value = $1, is_called = $2', [s.last_value, s.is_called === true]);
        await tx.query(`DELETE FROM sqlite_sequence WHERE name = 'inodes'`);
        await tx.query(`INSERT INTO sqlite_sequence (name, seq) SELECT 'inodes', max($1, coalesce((SELECT max(id) FROM inodes), 0))`, [
          lastId,
        ]);
        return counts;
      },
    },
    log,
  );
}

/**
 * The second half of a move: pgdata becomes the backup; the work directory goes. Call it only with
 * DIR/LOCK held (a SqliteDriver open on `dir`).
 */
export function finishMove(dir: string): void {
  if (existsSync(path.join(dir, PGLITE_DIR))) {
    if (existsSync(path.join(dir, PGLITE_BACKUP_DIR)))
      throw new Error(`embedded metadata store ${dir}: both ${PGLITE_DIR} and ${PGLITE_BACKUP_DIR} exist; move one away`);
    renameSync(path.join(dir, PGLITE_DIR), path.join(dir, PGLITE_BACKUP_DIR));
    fsyncDir(dir);
  }
  rmSync(path.join(dir, MIGRATING_DIR), { recursive: true, force: true });
}
