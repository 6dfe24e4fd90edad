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
    this.logger[this.level]({ suppressed: n, intervalMs: this.intervalMs }, `${this.lastMsg} (${n} more like this not logged)`);
  }
}
