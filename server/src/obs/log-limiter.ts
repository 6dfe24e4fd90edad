// LogLimiter: one kind of log line at most `burst` times per interval, then one summary line with
// the count left out. Used where a client can make the server log (refused connections, malformed
// frames, full tables): a flood of bad input must not become a flood of log lines.

import type { Logger } from 'pino';

/**
 * One kind of log line, written at most `burst` times per `intervalMs`; past that they are counted
 * and one summary line (`suppressed: N`) is written when the interval ends.
 */
export class LogLimiter {
  private windowStart = 0;
  private inWindow = 0;
  private suppressed = 0;
  private lastMsg = '';
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly logger: Logger | undefined,
    private readonly level: 'warn' | 'info',
    private readonly burst: number,
    private readonly intervalMs: number,
    /** Fields of the summary line besides the count (a KeyedLogLimiter's key). */
    private readonly summaryFields: object = {},
  ) {}

  log(obj: object, msg: string): void {
    if (this.logger === undefined) return;
    const now = Date.now();
    if (now - this.windowStart >= this.intervalMs) {
      this.windowStart = now;
      this.inWindow = 0;
    }
    if (this.inWindow < this.burst) {
      this.inWindow++;
      this.logger[this.level](obj, msg);
      return;
    }
    this.suppressed++;
    this.lastMsg = msg;
    if (this.timer === null) {
      this.timer = setTimeout(() => this.flush(), this.windowStart + this.intervalMs - now);
      this.timer.unref();
    }
  }

  /** Writes the summary line now, if any line was left out. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.suppressed === 0 || this.logger === undefined) return;
    const n = this.suppressed;
    this.suppressed = 0;
    this.logger[this.level](
      { ...this.summaryFields, suppressed: n, intervalMs: this.intervalMs },
      `${this.lastMsg} (${n} more like this not logged)`,
    );
  }
}

/**
 * A LogLimiter per key (a user): each key gets its own `burst` lines per interval, so one key's
 * flood does not hide another's lines. At most `maxKeys` keys are tracked, the one that logged
 * least recently dropped first (its summary line written then): memory stays bounded however many
 * keys come. A key dropped and back starts a new window.
 */
export class KeyedLogLimiter {
  /** In order of last use, oldest first (a Map keeps insertion order; a use re-inserts). */
  private readonly byKey = new Map<string, LogLimiter>();

  constructor(
    private readonly logger: Logger | undefined,
    private readonly level: 'warn' | 'info',
    private readonly burst: number,
    private readonly intervalMs: number,
    private readonly maxKeys: number,
    /** The field naming the key in a summary line (`user`). */
    private readonly keyField: string,
  ) {
    if (!Number.isSafeInteger(maxKeys) || maxKeys < 1) throw new RangeError(`maxKeys must be a positive integer, got ${maxKeys}`);
  }

  /** Keys tracked now (at most maxKeys). */
  get size(): number {
    return this.byKey.size;
  }

  log(key: string, obj: object, msg: string): void {
    if (this.logger === undefined) return;
    let limiter = this.byKey.get(key);
    if (limiter !== undefined) {
      this.byKey.delete(key);
    } else {
      if (this.byKey.size >= this.maxKeys) {
        const [oldestKey, oldest] = this.byKey.entries().next().value as [string, LogLimiter];
        this.byKey.delete(oldestKey);
        oldest.flush();
      }
      limiter = new LogLimiter(this.logger, this.level, this.burst, this.intervalMs, { [this.keyField]: key });
    }
    this.byKey.set(key, limiter);
    limiter.log(obj, msg);
  }

  /** Writes every key's summary line now, if any line was left out. */
  flush(): void {
    for (const limiter of this.byKey.values()) limiter.flush();
  }
}
