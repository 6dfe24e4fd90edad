// The SQLite driver: an embedded engine in this process through better-sqlite3 (synchronous calls
// into SQLite's C library). Directory layout: DIR/metadata.sqlite (+ its -wal and -shm files) and
// DIR/LOCK (lockfile.ts). One connection: every query and transaction runs alone, in arrival order.
//
// The engine's statements are PostgreSQL's; where SQLite's SQL differs, sqlite-dialect.ts gives
// the same statement (by name) in SQLite's SQL or as a short program of SQLite statements, run
// atomically. Unnamed statements (migrations) are run as written, with `$n` read as `?n`.
//
// Durability (DESIGN.md: COMMIT, FILE_SYNC and SMB FLUSH return only after an fsync covering the
// data and its metadata; nothing acknowledged as stable is lost, power loss included). The WAL is
// written at every COMMIT but synced by this driver, not by SQLite: SQLite runs with
// synchronous=NORMAL (it syncs the WAL before each checkpoint and the database after it, so a
// checkpoint never loses a frame, and a power loss never corrupts the database), and the driver
// fdatasyncs the WAL. An fsync covers every frame written before it, so one fsync makes every
// change made while the previous one was in flight durable (group commit). Two policies (`sync`):
// - `change`: no call settles until an fsync issued after its statements ran has completed, reads
//   included (no answer reveals a change that a power loss could still take back). Every NFS
//   CREATE or REMOVE waits for the disk: one client stream runs at the disk's fsync rate.
// - `commit` (the default): a change is answered once it is in the WAL; sync() (called by COMMIT,
//   stable writes and SMB FLUSH through MetadataStore.flushAttrs) waits for an fsync covering every
//   change answered so far, and the WAL is synced at most SYNC_DELAY_MS after any change anyway.
//   A power loss can take back namespace changes of that last moment that no COMMIT covered, as
//   with a local file system; never one that a COMMIT, FILE_SYNC or FLUSH acknowledged.
//   Changes that arrive together share a transaction (a batch): the first write that finds none
//   open begins one, every query until the end of that turn of the event loop runs in it (each
//   statement and program still atomic on its own: a savepoint), and one COMMIT ends it
//   (setImmediate), or earlier when something needs it closed (a transaction of the store's, an
//   fsync, close). Every call in a batch settles only after that COMMIT, reads included (they may
//   have seen the batch's changes), so nothing is answered before it is in the WAL. The changes
//   of a batch share the pages they touch (the inodes table's last page, its indexes) and one
//   COMMIT's locks: with 8 NFS clients creating, looking up and removing files, a batch held 3.9
//   calls, the server wrote half as many WAL pages (160,474 pwrites against 325,789), and did 5%
//   more operations per second on 5% less CPU (13,075 against 12,396; medians of 12 runs, both
//   builds taking turns). One client alone pays for it: its create has a batch to itself (a BEGIN,
//   a savepoint and a COMMIT of its own, answered in the check phase), about 10 us more of 270.
// If an fsync fails, the store refuses all further work (what was written may or may not be on disk).
// Checkpoints (the WAL copied back into the database file, with their own two fsyncs) run on a
// worker thread's connection, off the request path (sqlite-checkpoint.ts).
import { fdatasync, fsyncSync, openSync, closeSync, constants as fsConstants } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { MetadataSync } from '../../config/types.js';
import { SerialQueue } from './pglite.js';
import { releaseLock, takeStoreDir } from './lockfile.js';
import {
  CHECKPOINT_EVERY_COMMITS,
  DEFAULT_AUTOCHECKPOINT_PAGES,
  MAIN_AUTOCHECKPOINT_PAGES,
  WAL_SIZE_LIMIT_BYTES,
  SqliteCheckpointer,
} from './sqlite-checkpoint.js';
import {
  DEFAULT_RETRY_POLICY,
  RetryTransaction,
  errorMessage,
  SQLSTATE,
  sqlState,
  silentLogger,
  withRetry,
  type DriverLogger,
  type QueryResult,
  type RetryPolicy,
  type SqlDriver,
  type SqlExecutor,
  type SqlRow,
  type Statement,
} from './driver.js';

/** Runs SQLite statements for a program (see SqliteForm); parameters are `?n` positional. */
export interface SqliteRunner {
  all(text: string, params?: readonly unknown[]): SqlRow[];
  get(text: string, params?: readonly unknown[]): SqlRow | undefined;
  /** The number of rows changed. */
  run(text: string, params?: readonly unknown[]): number;
}

/**
 * A statement in SQLite's dialect: SQL with `?n` parameters (arrays are passed as JSON text, read
 * with json_each), or a program of several statements that the driver runs atomically (a
 * savepoint), given the statement's parameters as they are.
 */
export type SqliteForm = string | ((db: SqliteRunner, params: readonly unknown[]) => SqlRow[]);

/** When changes reach the disk (see the head of this file): the config's `sync`. */
export type SqliteSync = MetadataSync;

/** `commit`: the longest a change stays in the WAL unsynced. */
export const SYNC_DELAY_MS = 100;

export interface SqliteDriverOptions {
  /** The store's directory; created if missing. */
  dir: string;
  /** Default `commit`. */
  sync?: SqliteSync;
  /** The SQLite forms of named statements, by name (sqlite-dialect.ts). */
  statements: Readonly<Record<string, SqliteForm>>;
  retry?: RetryPolicy;
  logger?: DriverLogger;
  /** Checkpoints on a worker thread (sqlite-checkpoint.ts; default true). */
  checkpointWorker?: boolean;
  /** The database file's name in `dir` (default SQLITE_FILE). */
  file?: string;
}

/** Makes the entries of a directory (files created or renamed in it) survive a power loss. */
export function fsyncDir(dir: string): void {
  const fd = openSync(dir, fsConstants.O_RDONLY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

const noop = (): void => {};

/** `commit`: calls that share one SQLite transaction, all settled once it has committed (or failed). */
interface Batch {
  /** Changes its calls made, counted (`written`) once it has committed. */
  changes: number;
  /** Statements run in it so far: the first runs without a savepoint of its own (see runBare). */
  statements: number;
  readonly done: Promise<void>;
  readonly resolve: () => void;
  readonly reject: (e: unknown) => void;
}

/** The database file in the store's directory. */
export const SQLITE_FILE = 'metadata.sqlite';

/** Prepared statements kept; the engine's own fixed set is far smaller, so this never evicts in use. */
const MAX_PREPARED = 512;

/** SQLite's extended result codes -> the SQLSTATEs the engine reacts to. */
const SQLSTATE_OF: Readonly<Record<string, string>> = Object.freeze({
  SQLITE_CONSTRAINT_PRIMARYKEY: SQLSTATE.UNIQUE_VIOLATION,
  SQLITE_CONSTRAINT_UNIQUE: SQLSTATE.UNIQUE_VIOLATION,
  SQLITE_CONSTRAINT_FOREIGNKEY: SQLSTATE.FOREIGN_KEY_VIOLATION,
  SQLITE_FULL: SQLSTATE.DISK_FULL,
});

/** An error from SQLite, carrying the SQLSTATE the engine checks (`code`) and SQLite's own (`sqliteCode`). */
export class SqliteError extends Error {
  override readonly name = 'SqliteError';
  readonly code: string;
  constructor(
    readonly sqliteCode: string,
    message: string,
  ) {
    super(message);
    // An I/O error of SQLite's (SQLITE_IOERR_WRITE: EIO, or EDQUOT, which SQLite does not tell
    // apart) is a storage error to the clients (NFS3ERR_IO), not a fault of the server's.
    this.code = SQLSTATE_OF[sqliteCode] ?? (sqliteCode.startsWith('SQLITE_IOERR') ? 'EIO' : sqliteCode);
  }
}

function translate(e: unknown): unknown {
  if (e instanceof Database.SqliteError) return new SqliteError(e.code, e.message);
  return e;
}

/** PostgreSQL's `$n` parameters as SQLite's `?n` (statements the engine writes for both). */
const positional = (text: string): string => text.replace(/\$(\d+)/g, '?$1');

/**
 * The parameters as better-sqlite3 binds `?n`: by name, `n` (it reads `?1` as a named parameter).
 */
function bindings(params: readonly unknown[]): [Record<number, unknown>] | [] {
  if (params.length === 0) return [];
  const o: Record<number, unknown> = {};
  for (let i = 0; i < params.length; i++) o[i + 1] = bindable(params[i]);
  return [o];
}

/** A quoted string or identifier or a comment (passed over), or a `?n` parameter; and any other `?`. */
const PARAM_OR_QUOTED = /'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|\/\*[\s\S]*?\*\/|\?(\d+)|(\?)/g;

/**
 * The statement with each `?n` made a plain `?`, and which parameter each `?` takes, in order
 * (one used twice is passed twice); null when it has a `?` of another kind, or none. better-sqlite3
 * binds plain `?`s from its arguments in order; `?n`s it binds by name, looking each up in an
 * object (a string made per parameter and call): about 0.15 us a parameter, 31 in a CREATE.
 */
function anonymous(text: string): { text: string; order: number[] } | null {
  const order: number[] = [];
  let other = false;
  const out = text.replace(PARAM_OR_QUOTED, (m, n: string | undefined, q: string | undefined) => {
    if (q !== undefined) other = true;
    if (n === undefined) return m;
    order.push(Number(n) - 1);
    return '?';
  });
  return other || order.length === 0 ? null : { text: out, order };
}

/** A parameter as SQLite binds it. */
function bindable(v: unknown): unknown {
  if (v === undefined || v === null) return null;
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (Array.isArray(v)) return JSON.stringify(v);
  if (v instanceof Uint8Array && !Buffer.isBuffer(v)) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  return v;
}

/** A statement prepared once, with how its rows become objects (readers only). */
interface Prepared {
  stmt: Database.Statement;
  /** Which parameter each plain `?` takes (see anonymous()); null: bound by name (bindings()). */
  order: number[] | null;
  /** Readers: the row as an object, from the array SQLite's raw mode gives. */
  row: ((values: unknown[]) => SqlRow) | null;
}

/**
 * A function that makes a row object from the array of its values, one property per column in
 * SELECT order (a later column of the same name wins, as in better-sqlite3's own objects).
 * better-sqlite3 builds each row object by setting every column by name from C++ (a string made
 * and interned per column and row): 3 us of a REMOVE's two 25-column rows, one object literal
 * here. The names are the statement's own columns (the engine's SQL, not a client's), quoted as
 * JSON string literals, which are JavaScript string literals (sqlite.test.ts tries odd ones).
 */
function rowMaker(columns: readonly string[]): (values: unknown[]) => SqlRow {
  // `"__proto__": x` in a literal sets the prototype; computed, it is a property like the others.
  const props = columns.map((name, i) => (name === '__proto__' ? `["__proto__"]: v[${i}]` : `${JSON.stringify(name)}: v[${i}]`)).join(', ');
  // eslint-disable-next-line @typescript-eslint/no-implied-eval -- generated from column names, see above
  return new Function('v', `return { ${props} };`) as (values: unknown[]) => SqlRow;
}

/** The arguments a prepared statement is run with. */
function args(p: Prepared, params: readonly unknown[]): unknown[] {
  const order = p.order;
  if (order === null) return bindings(params);
  const out = new Array<unknown>(order.length);
  for (let i = 0; i < order.length; i++) {
    const k = order[i]!;
    if (k >= params.length) throw new RangeError(`statement parameter ?${k + 1} not given (${params.length} given)`);
    out[i] = bindable(params[k]);
  }
  return out;
}

/** Opens the database file; a native module that does not load says what to do about it. */
function openDatabase(file: string): Database.Database {
  try {
    return new Database(file);
  } catch (e) {
    // better-sqlite3 loads its compiled module at the first open.
    const failed = (e as NodeJS.ErrnoException).code === 'ERR_DLOPEN_FAILED' || /Could not locate the bindings file/.test(errorMessage(e));
    if (!failed) throw e;
    throw new Error(
      `the SQLite engine's native module (better-sqlite3) did not load: ${errorMessage(e)}. Build it for this Node.js ` +
        `(npm rebuild better-sqlite3, with python3, make and g++: hack/install-deps.sh build), or open a store not yet moved to SQLite with engine: pglite`,
    );
  }
}

export class SqliteDriver implements SqlDriver {
  readonly kind = 'embedded' as const;
  readonly dialect = 'sqlite' as const;
  private readonly queue = new SerialQueue();
  /** Calls in `queue`, running or waiting: while none is, a query runs at once (see query()). */
  private queued = 0;
  private readonly prepared = new Map<string, Prepared>();
  private readonly runner: SqliteRunner;
  /**
   * The named statements: SQL, or a program wrapped in its transaction once here (db.transaction()
   * builds four wrapper functions each time it is called: too much for every CREATE and REMOVE).
   */
  private readonly forms = new Map<string, string | ((params: readonly unknown[]) => SqlRow[])>();
  /** The programs as written, without that wrapper: a batch's first statement (runBare). */
  private readonly programs = new Map<string, (db: SqliteRunner, params: readonly unknown[]) => SqlRow[]>();
  private closed = false;
  /** Set when an fsync failed: nothing more is served. */
  private broken: Error | null = null;
  // Group commit: `written` counts committed changes, `synced` the ones an fsync has covered.
  private written = 0;
  private synced = 0;
  private syncing = false;
  private waiters: { seq: number; resolve: () => void; reject: (e: Error) => void }[] = [];
  private walFd: number | null = null;
  private fsyncs = 0;
  /** Changes made by the transaction open now (counted at its COMMIT). */
  private dirtyTx = false;
  /** `commit`: the timer that syncs what is still unsynced. */
  private syncTimer: NodeJS.Timeout | null = null;
  /** Runs the WAL's checkpoints off the main thread; null: SQLite's own, in COMMIT. */
  private checkpointer: SqliteCheckpointer | null = null;
  /** `written` when a checkpoint was last asked for. */
  private checkpointAskedAt = 0;
  /** `commit`: the batch open now (see the head of this file), or null. */
  private batch: Batch | null = null;
  /** Batches committed, and the calls that ran in them (tests, diagnostics). */
  private batches = 0;
  private batchedCalls = 0;
  /** A batch's BEGIN and COMMIT, prepared once (exec() would parse them for every batch). */
  private readonly beginBatch: Database.Statement;
  private readonly endBatch: Database.Statement;

  private constructor(
    private readonly db: Database.Database,
    private readonly file: string,
    private readonly lockFile: string,
    statements: Readonly<Record<string, SqliteForm>>,
    private readonly retry: RetryPolicy,
    private readonly log: DriverLogger,
    private readonly syncEveryChange: boolean,
  ) {
    this.runner = {
      all: (text, params = []) => this.exec(text, params),
      get: (text, params = []) => this.exec(text, params)[0],
      run: (text, params = []) => {
        const p = this.prepare(text);
        const changes = p.stmt.run(...args(p, params)).changes;
        if (changes > 0) this.dirtyTx = true;
        return changes;
      },
    };
    this.beginBatch = db.prepare('BEGIN IMMEDIATE');
    this.endBatch = db.prepare('COMMIT');
    for (const [name, form] of Object.entries(statements)) {
      this.forms.set(name, typeof form === 'string' ? form : db.transaction((params: readonly unknown[]) => form(this.runner, params)));
      if (typeof form !== 'string') this.programs.set(name, form);
    }
  }

  /** Opens (creating if needed) the SQLite database in `opts.dir`. */
  static open(opts: SqliteDriverOptions): SqliteDriver {
    const { dir, lockFile } = takeStoreDir(opts.dir, opts.logger);
    try {
      const file = path.join(dir, opts.file ?? SQLITE_FILE);
      const db = openDatabase(file);
      try {
        db.pragma('journal_mode = WAL');
        db.pragma('synchronous = NORMAL');
        db.pragma('foreign_keys = ON');
        // 16 MiB of page cache: the metadata working set of a large tree; the page cache of the
        // operating system holds the rest.
        db.pragma('cache_size = -16384');
        db.pragma(`journal_size_limit = ${WAL_SIZE_LIMIT_BYTES}`);
        // The new database file and its WAL must be found again after a power loss.
        fsyncDir(dir);
      } catch (e) {
        db.close();
        throw e;
      }
      const driver = new SqliteDriver(
        db,
        file,
        lockFile,
        opts.statements,
        opts.retry ?? DEFAULT_RETRY_POLICY,
        opts.logger ?? silentLogger,
        opts.sync === 'change',
      );
      if (opts.checkpointWorker !== false) driver.startCheckpointer();
      return driver;
    } catch (e) {
      releaseLock(lockFile);
      throw translate(e);
    }
  }

  private startCheckpointer(): void {
    const lost = (): void => {
      this.checkpointer = null;
      if (!this.closed) this.db.pragma(`wal_autocheckpoint = ${DEFAULT_AUTOCHECKPOINT_PAGES}`);
    };
    this.checkpointer = SqliteCheckpointer.start(this.file, this.log, lost);
    if (this.checkpointer) this.db.pragma(`wal_autocheckpoint = ${MAIN_AUTOCHECKPOINT_PAGES}`);
  }

  /** A PASSIVE checkpoint on this connection now (tests and diagnostics): SQLite's answer. */
  checkpointNow(): { busy: number; log: number; checkpointed: number } {
    this.live();
    this.commitBatch();
    const rows = this.db.pragma('wal_checkpoint(PASSIVE)') as { busy: number; log: number; checkpointed: number }[];
    return rows[0] ?? { busy: 1, log: -1, checkpointed: -1 };
  }

  /** Checkpoints the worker thread completed (for tests and diagnostics). */
  get workerCheckpoints(): number {
    return this.checkpointer?.stats.done ?? 0;
  }

  /** Reads the worker thread answered (readAside; for tests and diagnostics). */
  get workerReads(): number {
    return this.checkpointer?.stats.reads ?? 0;
  }

  private live(): void {
    if (this.broken) throw this.broken;
    if (this.closed) throw new Error('embedded metadata store is closed');
  }

  private prepare(text: string): Prepared {
    let p = this.prepared.get(text);
    if (p === undefined) {
      if (this.prepared.size >= MAX_PREPARED) this.prepared.clear();
      const anon = anonymous(text);
      const stmt = this.db.prepare(anon?.text ?? text);
      p = { stmt, order: anon?.order ?? null, row: stmt.reader ? rowMaker(stmt.columns().map((c) => c.name)) : null };
      if (stmt.reader) stmt.raw(true);
      this.prepared.set(text, p);
    }
    return p;
  }

  /**
   * A write that changed no row (an UPDATE or DELETE that matched nothing, an INSERT that met its
   * conflict) is no change: no commit counted, no fsync for it. RETURNING gives a row per row changed.
   */
  private exec(text: string, params: readonly unknown[]): SqlRow[] {
    const p = this.prepare(text);
    const { stmt, row } = p;
    if (row !== null) {
      const values = stmt.all(...args(p, params)) as unknown[][];
      if (!stmt.readonly && values.length > 0) this.dirtyTx = true;
      const rows: SqlRow[] = new Array<SqlRow>(values.length);
      for (let i = 0; i < values.length; i++) rows[i] = row(values[i]!);
      return rows;
    }
    if (stmt.run(...args(p, params)).changes > 0) this.dirtyTx = true;
    return [];
  }

  /**
   * One statement, inside the current transaction or as its own. `bare`: the first of a batch, whose
   * transaction holds nothing yet (see runBare).
   */
  private run(sql: Statement | string, params: readonly unknown[], bare = false): SqlRow[] {
    try {
      if (typeof sql === 'string' || sql.name === undefined) {
        const text = positional(typeof sql === 'string' ? sql : sql.text);
        // DDL and other statements SQLite cannot prepare once (migrations) run through exec().
        if (params.length === 0 && !/^\s*(select|insert|update|delete|with)\b/i.test(text)) {
          this.db.exec(text);
          this.dirtyTx = true;
          return [];
        }
        return this.exec(text, params);
      }
      const form = this.forms.get(sql.name);
      if (form === undefined) throw new Error(`statement ${sql.name} has no SQLite form (meta/sql/sqlite-dialect.ts)`);
      if (typeof form === 'string') return this.exec(form, params);
      if (bare) return this.runBare(sql.name, params);
      // A savepoint inside a transaction, a transaction of its own outside one.
      return form(params);
    } catch (e) {
      throw translate(e);
    }
  }

  /**
   * A program run as the first statement of a batch, in the batch's transaction without a savepoint
   * of its own: that transaction holds nothing else yet, so undoing it whole undoes just this
   * program. A savepoint costs its SAVEPOINT and RELEASE, and makes SQLite copy each page the
   * program changes into its sub-journal first (four or five 4 KiB pages for a CREATE or a
   * REMOVE), which one client stream, whose every change is a batch of its own, paid on each call.
   * On a failure the transaction is rolled back and begun again (empty, as the batch began); the
   * error is the program's own, as with the savepoint. If it cannot begin again, the batch fails
   * (runInBatch).
   */
  private runBare(name: string, params: readonly unknown[]): SqlRow[] {
    const program = this.programs.get(name)!;
    try {
      return program(this.runner, params);
    } catch (e) {
      this.dirtyTx = false;
      this.rollback();
      try {
        this.beginBatch.run();
      } catch (be) {
        this.log.warn({ err: be }, 'embedded metadata store: a batch could not begin again after a failed statement');
      }
      throw e;
    }
  }

  /**
   * Settles once every change committed so far is on disk. Never once an fsync failed: the kernel
   * forgets pages whose writeback failed, so the next fsync succeeds without them, and a change
   * made before the failure (a transaction open across it, say) would be answered as on disk.
   */
  private durable(): Promise<void> {
    if (this.broken) return Promise.reject(this.broken);
    // The fsync covers only what is committed.
    this.commitBatch();
    const seq = this.written;
    if (seq <= this.synced) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.waiters.push({ seq, resolve, reject });
      this.startSync();
    });
  }

  private startSync(): void {
    if (this.syncing) return;
    this.syncing = true;
    const target = this.written;
    const done = (err: Error | null) => {
      this.syncing = false;
      if (err) {
        this.broken = new Error(
          `embedded metadata store ${path.dirname(this.file)}: fsync of the WAL failed (${err.message}); it serves nothing more until ` +
            'the server is restarted, which recovers the changes that reached the disk (check the disk and its free space first)',
        );
        this.log.warn({ err }, 'embedded metadata store: fsync failed');
        const w = this.waiters;
        this.waiters = [];
        for (const x of w) x.reject(this.broken);
        return;
      }
      this.fsyncs++;
      this.synced = target;
      const waiting = this.waiters.filter((w) => w.seq > target);
      const ready = this.waiters.filter((w) => w.seq <= target);
      this.waiters = waiting;
      for (const w of ready) w.resolve();
      if (waiting.length > 0) this.startSync();
    };
    try {
      // The WAL exists from the first write on, and SQLite keeps it until the database closes
      // (journal_size_limit only truncates it, the file stays): one descriptor serves every fsync.
      if (this.walFd === null) {
        this.walFd = openSync(`${this.file}-wal`, fsConstants.O_RDONLY);
        // A new database's WAL is created by its first write, after open() synced the directory:
        // SQLite would sync its entry at its first sync of the WAL, which this driver does instead.
        fsyncDir(path.dirname(this.file));
      }
    } catch (e) {
      done(e as Error);
      return;
    }
    fdatasync(this.walFd, done);
  }

  /**
   * Committed changes, how many of them are on disk, and the fsyncs that put them there (fewer:
   * group commit); batches committed and the calls that ran in them.
   */
  get stats(): { commits: number; synced: number; fsyncs: number; batches: number; batchedCalls: number } {
    return { commits: this.written, synced: this.synced, fsyncs: this.fsyncs, batches: this.batches, batchedCalls: this.batchedCalls };
  }

  /**
   * The batch a query that runs now joins: the open one, or a new one for a write (a read alone
   * runs alone, as do statements without a name: migrations); null when it runs alone.
   */
  private joinBatch(sql: Statement | string): Batch | null {
    if (this.batch !== null) return this.batch;
    if (this.syncEveryChange || this.namedWrite(sql) !== true) return null;
    try {
      this.beginBatch.run();
    } catch (e) {
      throw translate(e);
    }
    let resolve!: () => void;
    let reject!: (e: unknown) => void;
    const done = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    // Every call awaits it, but a failure may come before the first await (failBatch in query()).
    done.catch(noop);
    const batch: Batch = { changes: 0, statements: 0, done, resolve, reject };
    this.batch = batch;
    // After the calls that this turn of the event loop has ready (their requests were read in its
    // poll phase): they share the COMMIT.
    setImmediate(() => {
      if (this.batch === batch) this.commitBatch();
    });
    return batch;
  }

  /** Whether a named statement may change rows; null for one without a name (migrations, tests). */
  private namedWrite(sql: Statement | string): boolean | null {
    return typeof sql === 'string' || sql.name === undefined ? null : this.writes(sql.name);
  }

  /** Whether the named statement may change rows (a program always may). */
  private writes(name: string): boolean {
    const form = this.forms.get(name);
    return typeof form !== 'string' || !this.prepare(form).stmt.readonly;
  }

  /** Commits the open batch, if any, and settles its calls: all answered, or all failed. */
  private commitBatch(): void {
    const batch = this.batch;
    if (batch === null) return;
    this.batch = null;
    try {
      this.endBatch.run();
    } catch (e) {
      this.failBatch(batch, translate(e));
      return;
    }
    this.batches++;
    if (batch.changes > 0) this.count(batch.changes);
    batch.resolve();
  }

  /** Ends the open transaction, if SQLite has not already, undoing its changes. */
  private rollback(): void {
    try {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
    } catch (re) {
      this.log.warn({ err: re }, 'embedded metadata store: ROLLBACK failed');
    }
  }

  /** The batch's transaction is lost (or ends here): every call in it fails, none is answered as done. */
  private failBatch(batch: Batch, err: unknown): void {
    if (this.batch === batch) this.batch = null;
    this.rollback();
    this.log.warn({ err }, 'embedded metadata store: a batch of changes did not commit');
    batch.reject(err);
  }

  /** Counts a committed change for the group commit. */
  private committed(): void {
    if (!this.dirtyTx) return;
    this.dirtyTx = false;
    // A batch's changes count once its COMMIT is done: an fsync started before that (one a
    // finished fsync starts for the callers still waiting) does not cover them.
    if (this.batch !== null) this.batch.changes++;
    else this.count(1);
  }

  /** `n` changes are committed: the next fsync covers them. */
  private count(n: number): void {
    this.written += n;
    if (this.checkpointer !== null && this.written - this.checkpointAskedAt >= CHECKPOINT_EVERY_COMMITS) {
      this.checkpointAskedAt = this.written;
      this.checkpointer.request();
    }
    if (!this.syncEveryChange && this.syncTimer === null) {
      this.syncTimer = setTimeout(() => {
        this.syncTimer = null;
        // A failure marks the store broken (sync); nobody is waiting on this one.
        this.durable().catch(() => undefined);
      }, SYNC_DELAY_MS);
      this.syncTimer.unref();
    }
  }

  /** `change`: what every call waits for before it settles; `commit`: nothing. */
  private settled(): Promise<void> {
    return this.syncEveryChange ? this.durable() : Promise.resolve();
  }

  failure(): Error | null {
    return this.broken;
  }

  /** Settles once every change answered so far is on disk (COMMIT, stable writes, SMB FLUSH). */
  sync(): Promise<void> {
    return this.durable();
  }

  /** Runs `fn` after every call queued before it (a transaction awaits its caller's work between statements). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    this.queued++;
    return this.queue.run(fn).finally(() => this.queued--);
  }

  /** SqlDriver.readAside: on the checkpoint worker's connection while it runs, else as query(). */
  async readAside<T extends SqlRow = SqlRow>(sql: Statement, params: readonly (number | string)[]): Promise<QueryResult<T>> {
    this.live();
    const form = sql.name === undefined ? positional(sql.text) : this.forms.get(sql.name);
    // Plain `?`s bound in order (the worker binds nothing by name), numbers and strings only.
    const anon = typeof form === 'string' ? anonymous(form) : null;
    if (anon !== null && this.checkpointer !== null) {
      const ordered = anon.order.map((k) => params[k]);
      if (ordered.every((v) => typeof v === 'number' || typeof v === 'string')) {
        const rows = await this.checkpointer.read(anon.text, ordered);
        if (rows !== null) return { rows: rows as T[] };
      }
    }
    return this.query<T>(sql, params);
  }

  async query<T extends SqlRow = SqlRow>(sql: Statement | string, params: readonly unknown[] = []): Promise<QueryResult<T>> {
    this.live();
    let rows: SqlRow[];
    if (this.queued === 0) {
      // Nothing queued (no transaction open, none waiting): the statement runs now, as it would
      // first in the queue, without its promises (most calls: a REMOVE, a LOOKUP, a GETATTR), in
      // the batch open now or one it begins.
      const batch = this.joinBatch(sql);
      rows = batch === null ? this.runCommitted(sql, params) : await this.runInBatch(batch, sql, params);
    } else {
      rows = await this.runQueued(sql, params);
    }
    if (this.syncEveryChange) await this.durable();
    return { rows: rows as T[] };
  }

  /**
   * One statement in `batch`, settled once the batch has committed: also when the statement
   * failed, since it may have failed on a change of the batch's (a row another call deleted),
   * which stands only once committed.
   */
  private async runInBatch(batch: Batch, sql: Statement | string, params: readonly unknown[]): Promise<SqlRow[]> {
    let rows: SqlRow[] = [];
    let failed: { error: unknown } | null = null;
    try {
      rows = this.runCommitted(sql, params, batch.statements++ === 0);
      this.batchedCalls++;
    } catch (error) {
      failed = { error };
    }
    // A statement fails alone (SQLite undoes just its own changes), unless the error ended the
    // transaction: then the batch's earlier changes are gone too.
    if (this.batch === batch && !this.db.inTransaction) {
      const why = failed === null ? '' : `: ${errorMessage(failed.error)}`;
      const err = new Error(`embedded metadata store: the transaction of a batch of changes ended before its COMMIT${why}`, {
        cause: failed?.error,
      });
      // The cause's SQLSTATE classifies the failure (a full volume is NOSPC to clients, not a fault).
      const code = sqlState(failed?.error);
      if (code !== undefined) Object.assign(err, { code });
      this.failBatch(batch, err);
    }
    try {
      await batch.done;
    } catch (e) {
      // A read that shared the batch saw its changes, which are gone: it runs again on what is
      // committed (a LOOKUP or GETATTR is not refused because another call's change was).
      if (failed === null && this.namedWrite(sql) === false) return this.rerunAlone(sql, params);
      throw e;
    }
    if (failed !== null) throw failed.error;
    return rows;
  }

  /**
   * A read of a lost batch, run again on what is committed, in no batch: the one open now (if any)
   * commits first, as before a transaction of the store's. So a read runs again once at most,
   * however many later batches are lost (a volume that stays full fails every COMMIT), instead of
   * joining each in turn.
   */
  private async rerunAlone(sql: Statement | string, params: readonly unknown[]): Promise<SqlRow[]> {
    this.live();
    // A transaction queued ahead commits the open batch before it begins; the read runs after it.
    if (this.queued > 0) return this.runQueued(sql, params);
    this.commitBatch();
    return this.runCommitted(sql, params);
  }

  /** One statement after every call queued before it (a transaction first: see query()). */
  private runQueued(sql: Statement | string, params: readonly unknown[]): Promise<SqlRow[]> {
    return this.serial(() => {
      this.live();
      return Promise.resolve(this.runCommitted(sql, params));
    });
  }

  /** One statement as its own transaction (or in the one open), counted for the group commit. */
  private runCommitted(sql: Statement | string, params: readonly unknown[], bare = false): SqlRow[] {
    try {
      return this.run(sql, params, bare);
    } finally {
      this.committed();
    }
  }

  async transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> {
    this.live();
    // One connection: only RetryTransaction (the engine's own) can ask for another run.
    const result = await withRetry(
      this.retry,
      (e) => e instanceof RetryTransaction,
      () =>
        this.serial(async () => {
          this.live();
          let open = true;
          const tx: SqlExecutor = {
            query: <R extends SqlRow = SqlRow>(sql: Statement | string, params: readonly unknown[] = []) => {
              if (!open) return Promise.reject(new Error('transaction already finished'));
              try {
                return Promise.resolve({ rows: this.run(sql, params) as R[] });
              } catch (e) {
                return Promise.reject(e instanceof Error ? e : new Error(String(e)));
              }
            },
          };
          // Its own transaction, not the batch's: the batch commits first (its calls are answered).
          this.commitBatch();
          this.dirtyTx = false;
          this.db.exec('BEGIN IMMEDIATE');
          try {
            const r = await fn(tx);
            open = false;
            this.db.exec('COMMIT');
            this.committed();
            return r;
          } catch (e) {
            open = false;
            this.dirtyTx = false;
            this.rollback();
            throw translate(e);
          }
        }),
      (ev) => this.log.debug({ attempt: ev.attempt, err: ev.error }, 'embedded metadata store: retrying transaction'),
    );
    await this.settled();
    return result;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.commitBatch();
    if (this.syncTimer) clearTimeout(this.syncTimer);
    this.syncTimer = null;
    try {
      await this.serial(async () => {
        if (!this.broken) await this.durable().catch(() => undefined);
      });
      if (this.walFd !== null) closeSync(this.walFd);
      this.walFd = null;
      // The worker's connection goes first: the last one to close checkpoints and removes the WAL.
      await this.checkpointer?.close();
      this.checkpointer = null;
      this.prepared.clear();
      // Checkpoints the WAL into the database file (synced) and removes it.
      this.db.close();
    } finally {
      releaseLock(this.lockFile);
    }
  }
}
