// The embedded driver: PostgreSQL compiled to WebAssembly (PGlite) in this process, with its data
// directory on local disk. PGlite has one connection, so every query and transaction runs alone,
// in arrival order, through one queue. Directory layout: DIR/pgdata (PGlite's data directory) and
// DIR/LOCK (the pid of the process that has the store open: two processes must never share DIR).
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite, protocol, types } from '@electric-sql/pglite';
import { releaseLock, takeStoreDir } from './lockfile.js';
import { bindExecuteSync, dataRows } from './pgwire.js';
import {
  DEFAULT_RETRY_POLICY,
  RetryTransaction,
  isTransientConflict,
  silentLogger,
  withRetry,
  type DriverLogger,
  type QueryResult,
  type RetryPolicy,
  type SqlDriver,
  type SqlExecutor,
  type SqlRow,
  type Statement,
  type TransactionOptions,
} from './driver.js';

/** A FIFO mutex: `run` calls execute one at a time, in call order. */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn, fn);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

export interface PgliteDriverOptions {
  /** The store's directory; created if missing. */
  dir: string;
  retry?: RetryPolicy;
  logger?: DriverLogger;
}

/**
 * PostgreSQL settings of the embedded engine. Its buffers live in the server's own memory (the
 * WebAssembly heap), and the operating system's page cache holds the files anyway: small buffers
 * keep the server's resident size down (about 120 MiB less than PostgreSQL's defaults) for a
 * metadata working set that is small.
 */
const EMBEDDED_SETTINGS = ['shared_buffers=16MB', 'wal_buffers=1MB', 'work_mem=1MB', 'maintenance_work_mem=8MB'];

/**
 * Creates the database of a new store in a child process (see pglite-init.ts): the server keeps
 * only the memory that opening an existing database takes.
 */
function createInChild(dataDir: string): Promise<void> {
  const here = fileURLToPath(import.meta.url);
  const script = path.join(path.dirname(here), `pglite-init${path.extname(here)}`);
  return new Promise((resolve, reject) => {
    // execArgv carries a TypeScript loader when the server itself runs from source (tests).
    const flags = process.execArgv.filter((a) => !a.startsWith('--inspect') && !a.startsWith('--test') && !a.startsWith('--cpu-prof'));
    execFile(process.execPath, [...flags, script, dataDir], { timeout: 300_000 }, (err, _stdout, stderr) => {
      if (err) reject(new Error(stderr.trim() || `could not create the embedded database in ${dataDir}: ${err.message}`));
      else resolve();
    });
  });
}

function toText(sql: Statement | string): string {
  return typeof sql === 'string' ? sql : sql.text;
}

/** A statement prepared in the embedded database: its parameter types and result columns. */
interface Prepared {
  text: string;
  paramTypes: number[];
  fields: { name: string; dataTypeID: number }[];
}

/** A backend message as PGlite's protocol parser returns it (the fields we read). */
interface Message {
  name: string;
  dataTypeIDs?: number[];
  fields?: unknown[];
}

const SYNC = protocol.serialize.sync();

function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * Runs statements in PGlite. PGlite's own query() parses, plans and describes every statement
 * anew, in six calls into the WebAssembly module; a named statement (the engine's hot ones) is
 * instead prepared once (Parse + Describe) and then run as Bind + Execute + Sync in one call,
 * its messages written and read by pgwire.ts: about 4x less CPU per statement. Parameters and results are converted with PGlite's own
 * serializers and parsers, so values look exactly as query() returns them. Unnamed statements
 * (DDL, migrations, the control plane's) go through query().
 */
class PgliteRunner {
  private readonly prepared = new Map<string, Prepared>();

  constructor(private readonly db: PGlite) {}

  async run<T extends SqlRow>(sql: Statement | string, params: readonly unknown[], inTransaction: boolean): Promise<QueryResult<T>> {
    if (typeof sql === 'string' || sql.name === undefined) {
      const r = await this.db.query<T>(toText(sql), params as unknown[]);
      return { rows: r.rows };
    }
    const p = this.prepared.get(sql.name) ?? (await this.prepare(sql.name, sql.text));
    if (p.text !== sql.text) throw new Error(`statement ${sql.name} was prepared with another text`);
    const values = params.map((v, i) => {
      if (v === null || v === undefined) return null;
      const serialize = this.db.serializers[p.paramTypes[i]!];
      if (serialize) return serialize(v);
      if (typeof v === 'string') return v;
      if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') return String(v);
      throw new TypeError(`${sql.name}: no serializer for parameter ${i + 1} (type ${p.paramTypes[i]})`);
    });
    // The answer comes as raw bytes (copied: PGlite hands out views of its heap) and is read here.
    const chunks: Buffer[] = [];
    await this.db.execProtocolRawStream(bindExecuteSync(sql.name, values), {
      // Inside a transaction the files are synced at COMMIT, as query() does.
      syncToFs: !inTransaction,
      onRawData: (chunk) => chunks.push(Buffer.from(chunk)),
    });
    const raw = dataRows(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
    const rows: T[] = [];
    for (const values of raw) {
      const row: SqlRow = {};
      for (let i = 0; i < p.fields.length; i++) {
        const f = p.fields[i]!;
        const v = values[i] ?? null;
        row[f.name] = v === null ? null : types.parseType(v, f.dataTypeID, this.db.parsers);
      }
      rows.push(row as T);
    }
    return { rows };
  }

  private async prepare(name: string, text: string): Promise<Prepared> {
    const r = await this.db.execProtocol(
      concat([protocol.serialize.parse({ name, text }), protocol.serialize.describe({ type: 'S', name }), SYNC]),
      { syncToFs: false },
    );
    const messages = r.messages as Message[];
    const params = messages.find((m) => m.name === 'parameterDescription');
    const rowDesc = messages.find((m) => m.name === 'rowDescription');
    const p: Prepared = {
      text,
      paramTypes: params?.dataTypeIDs ?? [],
      fields: ((rowDesc?.fields ?? []) as { name: string; dataTypeID: number }[]).map((f) => ({ name: f.name, dataTypeID: f.dataTypeID })),
    };
    // Bounded: names come from the engine's own fixed set of statements.
    this.prepared.set(name, p);
    return p;
  }
}

/** Transaction control as prepared statements: a transaction costs two calls into PGlite, not twelve. */
const TX = {
  begin: { name: 'dfs_tx_begin', text: 'BEGIN' },
  'read committed': { name: 'dfs_tx_begin_rc', text: 'BEGIN ISOLATION LEVEL READ COMMITTED' },
  'repeatable read': { name: 'dfs_tx_begin_rr', text: 'BEGIN ISOLATION LEVEL REPEATABLE READ' },
  serializable: { name: 'dfs_tx_begin_s', text: 'BEGIN ISOLATION LEVEL SERIALIZABLE' },
  commit: { name: 'dfs_tx_commit', text: 'COMMIT' },
  rollback: { name: 'dfs_tx_rollback', text: 'ROLLBACK' },
} as const satisfies Record<string, Statement>;

export class PgliteDriver implements SqlDriver {
  readonly kind = 'embedded' as const;
  readonly dialect = 'postgres' as const;
  private readonly queue = new SerialQueue();
  private readonly runner: PgliteRunner;
  private closed = false;

  private constructor(
    private readonly db: PGlite,
    private readonly lockFile: string,
    private readonly retry: RetryPolicy,
    private readonly log: DriverLogger,
  ) {
    this.runner = new PgliteRunner(db);
  }

  /**
   * Opens (creating if needed) the PGlite database in `opts.dir`. The directory is made private
   * (0700), as PostgreSQL requires of its data directories: the control database in it holds the
   * users' password hashes, and an NT hash is as good as the password to an NTLM client.
   */
  static async open(opts: PgliteDriverOptions): Promise<PgliteDriver> {
    const { dir, lockFile } = takeStoreDir(opts.dir, opts.logger);
    try {
      const dataDir = path.join(dir, 'pgdata');
      if (!existsSync(path.join(dataDir, 'PG_VERSION'))) await createInChild(dataDir);
      const db = await PGlite.create({ dataDir, postgresqlconf: EMBEDDED_SETTINGS });
      return new PgliteDriver(db, lockFile, opts.retry ?? DEFAULT_RETRY_POLICY, opts.logger ?? silentLogger);
    } catch (e) {
      releaseLock(lockFile);
      throw e;
    }
  }

  private live(): void {
    if (this.closed) throw new Error('embedded metadata store is closed');
  }

  async query<T extends SqlRow = SqlRow>(sql: Statement | string, params: readonly unknown[] = []): Promise<QueryResult<T>> {
    this.live();
    return this.queue.run(() => this.runner.run<T>(sql, params, false));
  }

  async transaction<T>(fn: (tx: SqlExecutor) => Promise<T>, opts: TransactionOptions = {}): Promise<T> {
    this.live();
    const begin = opts.isolation ? TX[opts.isolation] : TX.begin;
    // With one connection only RetryTransaction (the engine's own) can ask for another run.
    return withRetry(
      this.retry,
      (e) => e instanceof RetryTransaction || isTransientConflict(e),
      () =>
        this.queue.run(async () => {
          let open = true;
          const tx: SqlExecutor = {
            query: async <R extends SqlRow = SqlRow>(sql: Statement | string, params: readonly unknown[] = []) => {
              if (!open) throw new Error('transaction already finished');
              return this.runner.run<R>(sql, params, true);
            },
          };
          await this.runner.run(begin, [], true);
          try {
            const result = await fn(tx);
            open = false;
            await this.runner.run(TX.commit, [], false);
            return result;
          } catch (e) {
            open = false;
            await this.runner
              .run(TX.rollback, [], false)
              .catch((re: unknown) => this.log.warn({ err: re }, 'embedded metadata store: ROLLBACK failed'));
            throw e;
          }
        }),
      (ev) => this.log.debug({ attempt: ev.attempt, err: ev.error }, 'embedded metadata store: retrying transaction'),
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.queue.run(() => this.db.close());
    } finally {
      releaseLock(this.lockFile);
    }
  }
}
