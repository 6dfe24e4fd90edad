// The process logger: JSON lines on standard output, one object per event (pino), and optionally
// the same lines appended to a file (`logging.file`).
import { fstatSync, mkdirSync, openSync, statSync, writeSync } from 'node:fs';
import path from 'node:path';
import { pino, type DestinationStream, type Logger } from 'pino';
import { LOG_LEVELS, type LogLevel } from '../config/types.js';

export type { Logger } from 'pino';

/**
 * Creates the root logger. Lines look like
 * `{"level":"info","time":"2025-01-01T12:00:00.000Z","pid":1,"hostname":"h","msg":"..."}`;
 * errors go under `err` with type, message and stack. Writes to stdout through pino's buffered
 * destination, which pino flushes synchronously on process exit (call `logger.flush()` to order
 * log lines before a write to stderr).
 */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  const options = {
    level,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  return destination === undefined ? pino(options) : pino(options, destination);
}

/**
 * Changes the level of a running logger: the root logger and every child made from it (store,
 * WAL, ... loggers), since pino children that did not set a level of their own inherit it live.
 * Throws a RangeError naming the levels for anything else.
 */
export function setLogLevel(log: Logger, level: string): void {
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new RangeError(`unknown log level ${JSON.stringify(level)} (expected one of ${LOG_LEVELS.join(', ')})`);
  }
  log.level = level;
}

/** A stream a tee writes to: pino's SonicBoom destinations, or any writable with `write`. */
export interface TeeTarget {
  write(line: string): unknown;
  flush?(cb: (err?: Error | null) => void): void;
  flushSync?(): void;
}

/**
 * A destination that writes every line to each target, in order. The logger's level is the only
 * filter (a multistream would filter again per stream), so `setLogLevel` changes what every target
 * gets. `flush(cb)` (which pino's `logger.flush` calls) calls back once every target is flushed.
 */
export function teeDestination(
  ...targets: TeeTarget[]
): DestinationStream & { flush(cb: (err?: Error | null) => void): void; flushSync(): void } {
  return {
    write(line: string) {
      for (const t of targets) t.write(line);
    },
    flush(cb) {
      let pending = targets.length;
      let first: Error | null = null;
      const done = (err?: Error | null): void => {
        first ??= err ?? null;
        if (--pending === 0) cb(first);
      };
      if (pending === 0) cb(null);
      for (const t of targets) {
        if (typeof t.flush === 'function') t.flush(done);
        else done();
      }
    },
    flushSync() {
      for (const t of targets) t.flushSync?.();
    },
  };
}

/**
 * Opens `file` for appending log lines (creating it and its directory; mode 0640), synchronously so
 * that a bad path stops the start with a clear error. Returns the file descriptor.
 */
export function openLogFile(file: string): number {
  mkdirSync(path.dirname(file), { recursive: true });
  return openSync(file, 'a', 0o640);
}

/** Whether standard output already is `file` (as in `dittofs start --background`, or `> file`). */
export function stdoutIsFile(file: string): boolean {
  try {
    const out = fstatSync(1);
    const f = statSync(file);
    return out.isFile() && out.dev === f.dev && out.ino === f.ino;
  } catch {
    return false;
  }
}

/**
 * The server's logger: standard output, plus `file` when given (appended, mode 0640), unless
 * standard output is that file already. Throws (with the errno code) when the file cannot be opened.
 */
export function createProcessLogger(level: LogLevel, file?: string): Logger {
  if (file === undefined || stdoutIsFile(file))
    return createLogger(level, survivable(pino.destination({ dest: 1, sync: true }), 'standard output'));
  const fd = openLogFile(file);
  return createLogger(
    level,
    teeDestination(
      survivable(pino.destination({ dest: 1, sync: false }), 'standard output'),
      survivable(pino.destination({ dest: fd, sync: false }), file),
    ),
  );
}

type LogDestination = ReturnType<typeof pino.destination>;

/**
 * A log destination whose write errors never take the server down. pino re-emits them (all but
 * EPIPE) as 'error' events, which without a listener are an uncaught exception: a log file on a
 * full disk killed the server. On the first error the destination stops (what it buffered is
 * dropped, so nothing grows and exit does not wait on it) and stderr says so once.
 */
function survivable(dest: LogDestination, what: string): LogDestination {
  dest.once('error', (err: NodeJS.ErrnoException) => {
    dest.write = () => true;
    dest.flush = (cb?: (err?: Error) => void) => cb?.();
    dest.flushSync = () => undefined;
    dest.end = () => undefined;
    dest.on('error', () => undefined);
    try {
      writeSync(2, `dittofs: writing the log to ${what} failed (${err.code ?? err.message}); it stays off until the server restarts\n`);
    } catch {
      // stderr is gone too.
    }
  });
  return dest;
}
