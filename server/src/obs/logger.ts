// The process logger: JSON lines on standard output, one object per event (pino).
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
