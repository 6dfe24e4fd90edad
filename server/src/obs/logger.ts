// The process logger: JSON lines on standard output, one object per event (pino).
import { pino, type DestinationStream, type Logger } from 'pino';
import type { LogLevel } from '../config/types.js';

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
