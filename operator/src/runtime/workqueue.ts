// A keyed work queue in the manner of client-go's: a key (namespace/name) is reconciled by at most
// one worker at a time; keys added while waiting collapse into one entry, and a key added while its
// reconcile runs is run once more after it (so the last event is always seen, however many came in
// between). A reconcile that throws is retried after an exponential backoff per key, reset by a
// success; one that asks to be requeued is run again after that delay. Delayed runs for a key
// collapse into the earliest one. Keys run in first-in first-out order, `concurrency` at a time.
import { backoffDelay, type BackoffOptions } from './backoff.js';

export interface ReconcileResult {
  /** Run this key again after this many milliseconds (a resync of one object). */
  requeueAfterMs?: number;
}

export type Reconciler = (key: string) => Promise<ReconcileResult | void>;

export interface WorkQueueOptions {
  name: string;
  reconcile: Reconciler;
  /** Keys reconciled at the same time (default 4). Never two runs of one key. */
  concurrency?: number;
  backoff?: BackoffOptions;
  /** Told about every failure (logging); the retry is scheduled whatever it does. */
  onError?: (key: string, err: unknown, failures: number, retryInMs: number) => void;
  /** Start paused: keys are queued but not run until resume() (for a standby under leader election). */
  paused?: boolean;
}

type KeyState = 'queued' | 'running' | 'running-dirty';

export class WorkQueue {
  readonly name: string;
  private readonly reconcile: Reconciler;
  private readonly concurrency: number;
  private readonly backoff: BackoffOptions;
  private readonly onError: WorkQueueOptions['onError'];
  private readonly fifo: string[] = [];
  private readonly state = new Map<string, KeyState>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly idleWaiters: (() => void)[] = [];
  private running = 0;
  private paused: boolean;
  private stopped = false;

  constructor(opts: WorkQueueOptions) {
    this.name = opts.name;
    this.reconcile = opts.reconcile;
    this.concurrency = Math.max(1, opts.concurrency ?? 4);
    this.backoff = opts.backoff ?? {};
    this.onError = opts.onError;
    this.paused = opts.paused ?? false;
  }

  /** Queues `key` now, or after `delayMs` (collapsing with an earlier pending delay). */
  add(key: string, delayMs = 0): void {
    if (this.stopped) return;
    if (delayMs > 0) {
      const at = Date.now() + delayMs;
      const pending = this.timers.get(key);
      if (pending !== undefined && pending.at <= at) return;
      if (pending !== undefined) clearTimeout(pending.timer);
      const timer = setTimeout(() => {
        this.timers.delete(key);
        this.add(key);
      }, delayMs);
      timer.unref();
      this.timers.set(key, { at, timer });
      return;
    }
    const s = this.state.get(key);
    if (s === 'queued' || s === 'running-dirty') return;
    if (s === 'running') {
      this.state.set(key, 'running-dirty');
      return;
    }
    this.state.set(key, 'queued');
    this.fifo.push(key);
    this.pump();
  }

  /** Keys waiting or running. */
  get size(): number {
    return this.state.size;
  }

  /** Consecutive failures of a key (0 after a success). */
  failuresOf(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** Stops starting reconciles (those running finish); queued keys stay queued. */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (this.stopped) return;
    this.paused = false;
    this.pump();
  }

  /** Resolves when nothing is queued or running (delayed keys do not count). */
  async idle(): Promise<void> {
    if (this.state.size === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /** Drops queued and delayed keys and waits for the running reconciles to finish. */
  async shutdown(): Promise<void> {
    this.stopped = true;
    for (const { timer } of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    for (const k of this.fifo.splice(0)) this.state.delete(k);
    for (const [k, s] of this.state) if (s === 'running-dirty') this.state.set(k, 'running');
    await this.idle();
  }

  private pump(): void {
    while (!this.paused && !this.stopped && this.running < this.concurrency && this.fifo.length > 0) {
      const key = this.fifo.shift()!;
      this.state.set(key, 'running');
      this.running++;
      void this.runOne(key);
    }
  }

  private async runOne(key: string): Promise<void> {
    let result: ReconcileResult | void = undefined;
    let error: { err: unknown } | undefined;
    try {
      result = await this.reconcile(key);
    } catch (err) {
      error = { err };
    }
    this.running--;
    const dirty = this.state.get(key) === 'running-dirty';
    this.state.delete(key);
    if (error !== undefined) {
      const n = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, n);
      const delay = backoffDelay(n, this.backoff);
      try {
        this.onError?.(key, error.err, n, delay);
      } catch {
        // a logging failure must not stop the retry
      }
      if (dirty) this.add(key);
      else this.add(key, Math.max(1, delay));
    } else {
      this.failures.delete(key);
      if (dirty) this.add(key);
      if (result?.requeueAfterMs !== undefined && result.requeueAfterMs > 0) this.add(key, result.requeueAfterMs);
    }
    if (this.state.size === 0) for (const w of this.idleWaiters.splice(0)) w();
    this.pump();
  }
}
