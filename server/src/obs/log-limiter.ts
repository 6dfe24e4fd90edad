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
 * flood does not hide another's lines. At most `maxKeys` keys are tracked: a new key takes the
 * place of the one that logged least recently if that one has been quiet for an interval (its
 * summary line written then; back later, it starts a new window), else it shares one more limiter
 * with every other key not tracked. Memory stays bounded however many keys come, and so do the
 * lines: (maxKeys + 1) * burst an interval at most, plus summaries. (Dropping a key still in its
 * window would start it afresh when it came back: more keys than maxKeys, in turn, each logged
 * every line.)
 */
export class KeyedLogLimiter {
  /** In order of last use, oldest first (a Map keeps insertion order; a use re-inserts). */
  private readonly byKey = new Map<string, { limiter: LogLimiter; lastUse: number }>();
  /** The keys not tracked while every tracked one is in use. */
  private readonly others: LogLimiter;

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
    this.others = new LogLimiter(logger, level, burst, intervalMs, { [keyField]: null, otherKeys: true });
  }

  /** Keys tracked now (at most maxKeys). */
  get size(): number {
    return this.byKey.size;
  }

  log(key: string, obj: object, msg: string): void {
    if (this.logger === undefined) return;
    const now = Date.now();
    let entry = this.byKey.get(key);
    if (entry !== undefined) {
      this.byKey.delete(key);
    } else {
      if (this.byKey.size >= this.maxKeys) {
        const [oldestKey, oldest] = this.byKey.entries().next().value as [string, { limiter: LogLimiter; lastUse: number }];
        if (now - oldest.lastUse < this.intervalMs) {
          this.others.log(obj, msg);
          return;
        }
        this.byKey.delete(oldestKey);
        oldest.limiter.flush();
      }
      entry = { limiter: new LogLimiter(this.logger, this.level, this.burst, this.intervalMs, { [this.keyField]: key }), lastUse: now };
    }
    entry.lastUse = now;
    this.byKey.set(key, entry);
    entry.limiter.log(obj, msg);
  }

  /** Writes every key's summary line now, if any line was left out. */
  flush(): void {
    for (const { limiter } of this.byKey.values()) limiter.flush();
    this.others.flush();
  }
}
