// Checkpoints of the SQLite store's WAL on a worker thread, off the request path.
//
// SQLite copies the WAL back into the database file (a checkpoint) from inside a COMMIT once the
// WAL holds wal_autocheckpoint pages (1000 by default). With synchronous=NORMAL a checkpoint
// fsyncs the WAL and then the database file: two fsyncs on the main thread every ~170 creates,
// measured at ~120 us per create and REMOVE on average (strace -T: 1.19 s in fsync for 10,000
// changes), while every other request waits. Here a second connection on a worker thread runs the
// checkpoints (PASSIVE: it never blocks the writer, which keeps appending to the WAL meanwhile);
// the main connection's own autocheckpoint stays as a safety net at a far higher threshold, for a
// worker that lags or died. Durability is SQLite's own: a checkpoint syncs the WAL before it writes
// a page into the database file and the database before the WAL is reused.
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { errorMessage, type DriverLogger } from './driver.js';

/** Committed changes between two checkpoint requests (about 600 WAL pages of creates). */
export const CHECKPOINT_EVERY_COMMITS = 100;
/** The main connection's autocheckpoint while the worker runs (pages: 16 MiB of 4 KiB pages). */
export const MAIN_AUTOCHECKPOINT_PAGES = 4_096;
/**
 * The size the WAL file is cut back to when SQLite starts it over after a complete checkpoint
 * (journal_size_limit): a burst of writes that outran the checkpoints (a slow disk) grows the file,
 * and without a limit SQLite keeps that size until the database closes.
 */
export const WAL_SIZE_LIMIT_BYTES = MAIN_AUTOCHECKPOINT_PAGES * 4_096;
/** SQLite's default, restored when the worker is gone. */
export const DEFAULT_AUTOCHECKPOINT_PAGES = 1_000;
/** The longest close() waits for the worker to close its connection before terminating it. */
const CLOSE_TIMEOUT_MS = 5_000;

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.module);
const db = new Database(workerData.file, { fileMustExist: true });
// The checkpoint's syncs (WAL before, database after) come from this connection's setting.
db.pragma('synchronous = NORMAL');
parentPort.on('message', (m) => {
  if (m === 'close') {
    db.close();
    parentPort.close();
    return;
  }
  if (typeof m === 'object' && m !== null && m.kind === 'read') {
    try {
      const rows = db.prepare(m.text).all(...m.params);
      parentPort.postMessage({ kind: 'read', id: m.id, rows });
    } catch (err) {
      parentPort.postMessage({ kind: 'read', id: m.id, error: String((err && err.message) || err) });
    }
    return;
  }
  try {
    const r = db.pragma('wal_checkpoint(PASSIVE)')[0] || {};
    parentPort.postMessage({ ok: true, log: r.log, checkpointed: r.checkpointed });
  } catch (err) {
    parentPort.postMessage({ ok: false, error: String((err && err.message) || err) });
  }
});
`;

interface ReadReply {
  kind: 'read';
  id: number;
  rows?: Record<string, unknown>[];
  error?: string;
}

interface CheckpointReply {
  kind?: undefined;
  ok: boolean;
  log?: number;
  checkpointed?: number;
  error?: string;
}

export interface CheckpointStats {
  /** Checkpoints the worker completed. */
  done: number;
  /** Frames in the WAL and frames copied back, as of the last one. */
  walFrames: number;
  backfilled: number;
  /** Reads the worker answered (read()). */
  reads: number;
}

export class SqliteCheckpointer {
  private inFlight = false;
  private closing = false;
  private dead = false;
  private readonly exited: Promise<void>;
  readonly stats: CheckpointStats = { done: 0, walFrames: 0, backfilled: 0, reads: 0 };
  /** Reads sent to the worker, by id: settled with its rows, or null when the worker went first. */
  private readonly reads = new Map<number, { resolve: (rows: Record<string, unknown>[] | null) => void; reject: (e: Error) => void }>();
  private nextReadId = 1;

  private constructor(
    private readonly worker: Worker,
    private readonly log: DriverLogger,
    /** Called once if the worker stops while the store is open: the main connection checkpoints again. */
    private readonly onLost: () => void,
  ) {
    worker.on('message', (m: CheckpointReply | ReadReply) => {
      if (m.kind === 'read') {
        const r = this.reads.get(m.id);
        this.reads.delete(m.id);
        if (this.reads.size === 0) worker.unref();
        if (m.rows !== undefined) {
          this.stats.reads++;
          r?.resolve(m.rows);
        } else r?.reject(new Error(`embedded metadata store: a read on the checkpoint worker failed: ${m.error ?? 'no reason given'}`));
        return;
      }
      this.inFlight = false;
      if (m.ok) {
        this.stats.done++;
        this.stats.walFrames = m.log ?? 0;
        this.stats.backfilled = m.checkpointed ?? 0;
      } else {
        // SQLITE_BUSY and the like: the next request tries again.
        this.log.debug({ err: m.error }, 'embedded metadata store: checkpoint failed');
      }
    });
    const lost = (err: Error): void => {
      if (this.dead) return;
      this.dead = true;
      this.inFlight = false;
      // Reads under way are run again on the main connection (read()'s callers fall back on null).
      for (const r of this.reads.values()) r.resolve(null);
      this.reads.clear();
      worker.unref();
      if (this.closing) return;
      this.log.warn({ err }, 'embedded metadata store: the checkpoint worker stopped; checkpoints run on the main thread again');
      this.onLost();
    };
    worker.on('error', lost);
    this.exited = new Promise((resolve) =>
      worker.once('exit', (code) => {
        lost(new Error(`checkpoint worker exited with code ${code}`));
        resolve();
      }),
    );
    // It must never keep the process alive by itself.
    worker.unref();
  }

  /** Starts the worker on the database `file` (which must exist), or returns null and says why. */
  static start(file: string, log: DriverLogger, onLost: () => void): SqliteCheckpointer | null {
    try {
      const module = createRequire(import.meta.url).resolve('better-sqlite3');
      const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { module, file } });
      return new SqliteCheckpointer(worker, log, onLost);
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'embedded metadata store: no checkpoint worker; checkpoints run on the main thread');
      return null;
    }
  }

  /** True while the worker serves requests. */
  get running(): boolean {
    return !this.dead && !this.closing;
  }

  /** Asks for a checkpoint; one at a time (a request while one runs is dropped: it would find little). */
  request(): void {
    if (this.inFlight || !this.running) return;
    this.inFlight = true;
    this.worker.postMessage('checkpoint');
  }

  /**
   * Runs a read-only SQL statement on the worker's connection: it sees what is committed (not the
   * main connection's open batch) and holds up neither the event loop nor the writer (WAL mode).
   * Null when the worker is not there to run it (the caller runs it on the main connection).
   */
  read(text: string, params: readonly (number | string)[]): Promise<Record<string, unknown>[] | null> {
    if (!this.running) return Promise.resolve(null);
    const id = this.nextReadId++;
    return new Promise((resolve, reject) => {
      // A caller waits on it: the process stays up for the answer (the worker alone keeps nothing alive).
      if (this.reads.size === 0) this.worker.ref();
      this.reads.set(id, { resolve, reject });
      this.worker.postMessage({ kind: 'read', id, text, params });
    });
  }

  /** Closes the worker's connection (before the main one closes, so that one removes the WAL). */
  async close(): Promise<void> {
    if (this.closing) return this.exited;
    this.closing = true;
    if (this.dead) return;
    this.worker.postMessage('close');
    const timer = setTimeout(() => void this.worker.terminate(), CLOSE_TIMEOUT_MS);
    try {
      await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}
