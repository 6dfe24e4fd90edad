// Failed SMB logons counted per client address and per (address, user name), in fixed windows: past
// a limit, logons for that key are refused with STATUS_LOGON_FAILURE until its window ends, those
// with the right password too, so that guessing on learns nothing. What the REST API's login rate
// limit does for HTTP (api/limits.ts), for NTLM, whose checks are cheap enough to guess fast.

export interface LogonLimits {
  /** Failed logons per window for one user name from one address. */
  perUser: number;
  /** Failed logons per window from one address, whatever the user names. */
  perAddress: number;
  windowMs: number;
  /** Counters kept at most; the oldest windows go first past it. */
  maxKeys: number;
}

export const LOGON_LIMITS: Readonly<LogonLimits> = Object.freeze({ perUser: 10, perAddress: 50, windowMs: 60_000, maxKeys: 10_000 });

interface Window {
  start: number;
  failures: number;
  /** A refusal for this window was reported (firstRefusal). */
  refusalReported?: true;
}

export class LogonLimiter {
  /** In order of window start: a window is never restarted in place, only deleted and added anew. */
  private readonly windows = new Map<string, Window>();

  constructor(
    private readonly limits: Readonly<LogonLimits> = LOGON_LIMITS,
    private readonly now: () => number = Date.now,
  ) {}

  /** Counters held (for tests and metrics). */
  get size(): number {
    return this.windows.size;
  }

  /** Whether a logon from `address`, as `user` when known, is refused for too many failures. */
  blocked(address: string, user?: string): boolean {
    return this.blocking(address, user) !== undefined;
  }

  /**
   * Whether a refusal of a logon from `address` (as `user`) is the first one since its limit was
   * reached: true once per blocking window, so that a client retrying past the limit cannot have
   * a log line written per attempt. True also when nothing blocks (an unexpected call is reported).
   */
  firstRefusal(address: string, user?: string): boolean {
    const w = this.blocking(address, user);
    if (w === undefined) return true;
    if (w.refusalReported) return false;
    w.refusalReported = true;
    return true;
  }

  /** The window that refuses a logon from `address` (as `user`), if one does. */
  private blocking(address: string, user?: string): Window | undefined {
    return (
      this.over(addressKey(address), this.limits.perAddress) ??
      (user === undefined ? undefined : this.over(userKey(address, user), this.limits.perUser))
    );
  }

  /** A logon from `address` as `user` failed for its credentials. */
  failed(address: string, user: string): void {
    this.count(addressKey(address));
    this.count(userKey(address, user));
  }

  /**
   * A logon from `address` as `user` is about to check its password: false if it is refused,
   * else it is counted as failed until succeeded() says otherwise. Counted before the check, so
   * that logons checked at once (8 per connection, on many connections) cannot all pass the
   * limit before the first of them fails.
   */
  begin(address: string, user: string): boolean {
    if (this.blocked(address, user)) return false;
    this.failed(address, user);
    return true;
  }

  /**
   * A logon succeeded: that user's failures from there are forgotten, and the address is not
   * charged for this one (its other failures stay).
   */
  succeeded(address: string, user: string): void {
    this.windows.delete(userKey(address, user));
    const w = this.windows.get(addressKey(address));
    if (w !== undefined && w.failures > 0) w.failures--;
  }

  /** The window of `key` if it is live and at `max` failures or past. */
  private over(key: string, max: number): Window | undefined {
    const w = this.windows.get(key);
    if (w === undefined) return undefined;
    if (this.now() - w.start >= this.limits.windowMs) {
      this.windows.delete(key);
      return undefined;
    }
    return w.failures >= max ? w : undefined;
  }

  private count(key: string): void {
    const t = this.now();
    let w = this.windows.get(key);
    if (w !== undefined && t - w.start >= this.limits.windowMs) {
      this.windows.delete(key);
      w = undefined;
    }
    if (w === undefined) {
      this.makeRoom(t);
      w = { start: t, failures: 0 };
      this.windows.set(key, w);
    }
    w.failures++;
  }

  /** Drops ended windows from the oldest on, then the oldest live ones while the map is full. */
  private makeRoom(t: number): void {
    for (const [key, w] of this.windows) {
      if (t - w.start < this.limits.windowMs && this.windows.size < this.limits.maxKeys) return;
      this.windows.delete(key);
    }
  }
}

const addressKey = (address: string): string => `a\0${address}`;
/** SMB user names are case-insensitive: ALICE and alice are one key. */
const userKey = (address: string, user: string): string => `u\0${address}\0${user.toLowerCase()}`;
