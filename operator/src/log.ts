// JSON-lines logging (one object per line, as the server logs), with levels and bound fields.
// Secrets are never passed to a logger: callers log names of Secrets, never their data, and the
// operator's logger replaces any Secret value a message quotes (kube/redact.ts, redactingLogger).

export const LOG_LEVEL_NAMES = Object.freeze(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const);
export type LogLevelName = (typeof LOG_LEVEL_NAMES)[number];

const LEVEL_VALUE: Readonly<Record<LogLevelName, number>> = {
  trace: 10,
  debug: 20,
  info: 30,
  warn: 40,
  error: 50,
  fatal: 60,
  silent: Infinity,
};

export type LogFields = Record<string, unknown>;

export interface Logger {
  trace(msg: string, fields?: LogFields): void;
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
  readonly level: LogLevelName;
}

export interface LoggerOptions {
  level?: LogLevelName;
  /** Where lines go (default process.stdout). */
  write?: (line: string) => void;
  fields?: LogFields;
}

/** An Error as loggable fields (message and code; the stack only at debug level and below). */
export function errorFields(err: unknown, withStack = false): LogFields {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return {
      err: err.message,
      ...(code === undefined ? {} : { code }),
      ...(withStack && err.stack !== undefined ? { stack: err.stack } : {}),
    };
  }
  return { err: String(err) };
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const level = opts.level ?? 'info';
  const threshold = LEVEL_VALUE[level];
  const write = opts.write ?? ((line: string) => process.stdout.write(line));
  const bound = opts.fields ?? {};
  const emit = (lvl: Exclude<LogLevelName, 'silent'>, msg: string, fields?: LogFields): void => {
    if (LEVEL_VALUE[lvl] < threshold) return;
    const rec = { level: lvl, time: new Date().toISOString(), ...bound, ...fields, msg };
    let line: string;
    try {
      line = JSON.stringify(rec);
    } catch {
      line = JSON.stringify({ level: lvl, time: rec.time, msg, note: 'fields not serializable' });
    }
    write(`${line}\n`);
  };
  return {
    level,
    trace: (m, f) => emit('trace', m, f),
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createLogger({ level, write, fields: { ...bound, ...fields } }),
  };
}
