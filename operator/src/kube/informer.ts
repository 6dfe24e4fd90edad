// A list-then-watch cache of one kind of object that never gives up and never loses an event.
//
// - List (paged), remember the list's resourceVersion, then watch from it with bookmarks.
// - Every event moves the remembered resourceVersion on, so a dropped connection (reset, apiserver
//   restart, the watch's own timeout) is re-established from exactly where it stopped: the
//   apiserver replays whatever happened in between.
// - When that version is too old (410 Gone, the apiserver's window has passed), list again and
//   diff the fresh list against the cache: objects that vanished meanwhile are reported DELETED,
//   changed ones MODIFIED, new ones ADDED. No deletion goes unnoticed.
// - Errors (network, 5xx, 403 while RBAC is being fixed) are logged and retried with exponential
//   backoff, forever, until stop(). The process never exits because a watch failed.
//
// @dot-i/k8s-operator's own watchResource() calls process.exit(1) on a watch error and restarts a
// cleanly closed watch without a resourceVersion; the operator replaces it with this (operator.ts).
import { KUBE_ERROR, KubeApiError, KubeNetworkError, type KubeClient, type StreamHandle } from './client.js';
import { backoffDelay, sleep, type BackoffOptions } from '../runtime/backoff.js';
import { errorFields, type Logger } from '../log.js';
import { keyOf, type KubeObject } from '../api/types.js';

/** A watch that lasted this long was healthy: its failure restarts the backoff from the beginning. */
const HEALTHY_WATCH_MS = 10_000;

export type InformerEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export type InformerHandler<T> = (type: InformerEventType, obj: T, old: T | undefined) => void;

export interface InformerOptions<T extends KubeObject> {
  client: KubeClient;
  /** The collection path: /apis/dittofs.io/v1alpha1/namespaces/ns/shares, or cluster-wide without the namespace. */
  path: string;
  /** For logs. */
  name: string;
  log: Logger;
  labelSelector?: string;
  /** Keep a smaller object in the cache (e.g. only the metadata of Secrets). */
  transform?: (obj: T) => T;
  backoff?: BackoffOptions;
  /** Upper bound of a watch request (the apiserver ends it then; default 5 to 10 minutes, randomized). */
  watchTimeoutSeconds?: number;
}

interface WatchEvent<T> {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: T & { code?: number; reason?: string; message?: string };
}

export interface InformerStats {
  lists: number;
  watches: number;
  errors: number;
  gone: number;
}

export class Informer<T extends KubeObject> {
  readonly name: string;
  private readonly opts: InformerOptions<T>;
  private readonly cache = new Map<string, T>();
  private readonly handlers: InformerHandler<T>[] = [];
  private rv = '';
  private current: StreamHandle | undefined;
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;
  private syncedResolve!: () => void;
  private readonly syncedPromise: Promise<void>;
  private hasSyncedOnce = false;
  readonly stats: InformerStats = { lists: 0, watches: 0, errors: 0, gone: 0 };

  constructor(opts: InformerOptions<T>) {
    this.opts = opts;
    this.name = opts.name;
    this.syncedPromise = new Promise((resolve) => (this.syncedResolve = resolve));
  }

  on(handler: InformerHandler<T>): void {
    this.handlers.push(handler);
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Resolves once the first list is in the cache. */
  synced(): Promise<void> {
    return this.syncedPromise;
  }

  get hasSynced(): boolean {
    return this.hasSyncedOnce;
  }

  async stop(): Promise<void> {
    this.abort.abort();
    this.current?.abort();
    await this.loop;
  }

  get(namespace: string, name: string): T | undefined {
    return this.cache.get(`${namespace}/${name}`);
  }

  list(namespace?: string): T[] {
    const all = [...this.cache.values()];
    return namespace === undefined ? all : all.filter((o) => (o.metadata.namespace ?? '') === namespace);
  }

  /** The resourceVersion the next watch starts from ('' = list first). */
  get resourceVersion(): string {
    return this.rv;
  }

  /**
   * Drops the current watch connection, as a network failure would; with `staleResourceVersion`
   * the next watch also starts from that version (a version the apiserver has compacted away
   * answers 410 Gone and forces a relist). For tests of recovery.
   */
  dropConnection(staleResourceVersion?: string): boolean {
    if (staleResourceVersion !== undefined) this.rv = staleResourceVersion;
    const c = this.current;
    if (c === undefined) return false;
    c.abort(new KubeNetworkError(KUBE_ERROR.NETWORK, `watch ${this.opts.path}: connection dropped on purpose`));
    return true;
  }

  private emit(type: InformerEventType, obj: T, old: T | undefined): void {
    for (const h of this.handlers) {
      try {
        h(type, obj, old);
      } catch (e) {
        this.opts.log.error('informer handler failed', { informer: this.name, ...errorFields(e, true) });
      }
    }
  }

  private keep(obj: T): T {
    return this.opts.transform === undefined ? obj : this.opts.transform(obj);
  }

  private async relist(): Promise<void> {
    this.stats.lists++;
    const { items, resourceVersion } = await this.opts.client.list<T>(this.opts.path, { labelSelector: this.opts.labelSelector });
    const fresh = new Map<string, T>();
    for (const raw of items) {
      const obj = this.keep(raw);
      fresh.set(keyOf(obj), obj);
    }
    const events: [InformerEventType, T, T | undefined][] = [];
    for (const [key, old] of this.cache) if (!fresh.has(key)) events.push(['DELETED', old, old]);
    for (const [key, obj] of fresh) {
      const old = this.cache.get(key);
      if (old === undefined) events.push(['ADDED', obj, undefined]);
      else if (old.metadata.resourceVersion !== obj.metadata.resourceVersion) events.push(['MODIFIED', obj, old]);
    }
    this.cache.clear();
    for (const [k, v] of fresh) this.cache.set(k, v);
    this.rv = resourceVersion;
    for (const [type, obj, old] of events) this.emit(type, obj, old);
    if (!this.hasSyncedOnce) {
      this.hasSyncedOnce = true;
      this.syncedResolve();
    }
  }

  /** One watch request; resolves 'gone' when the version is too old, 'ended' otherwise, or throws. */
  private async watchOnce(): Promise<{ outcome: 'gone' | 'ended'; events: number }> {
    this.stats.watches++;
    const timeoutSeconds = this.opts.watchTimeoutSeconds ?? 300 + Math.floor(Math.random() * 300);
    let events = 0;
    let gone = false;
    let failure: Error | undefined;
    const handle = await this.opts.client.stream(
      this.opts.path,
      {
        watch: 1,
        resourceVersion: this.rv,
        allowWatchBookmarks: true,
        timeoutSeconds,
        labelSelector: this.opts.labelSelector,
      },
      (line) => {
        if (gone || failure !== undefined) return; // the stream is ending: nothing after an ERROR counts
        let ev: WatchEvent<T>;
        try {
          ev = JSON.parse(line) as WatchEvent<T>;
        } catch {
          return; // a torn line cannot happen on a healthy stream; the next event resynchronizes
        }
        const obj = ev.object;
        switch (ev.type) {
          case 'ADDED':
          case 'MODIFIED': {
            const kept = this.keep(obj);
            const key = keyOf(kept);
            const old = this.cache.get(key);
            this.cache.set(key, kept);
            events++;
            this.rv = obj.metadata.resourceVersion ?? this.rv;
            this.emit(old === undefined ? 'ADDED' : 'MODIFIED', kept, old);
            break;
          }
          case 'DELETED': {
            const kept = this.keep(obj);
            const key = keyOf(kept);
            const old = this.cache.get(key);
            this.cache.delete(key);
            events++;
            this.rv = obj.metadata.resourceVersion ?? this.rv;
            this.emit('DELETED', kept, old);
            break;
          }
          case 'BOOKMARK':
            this.rv = obj.metadata.resourceVersion ?? this.rv;
            break;
          case 'ERROR':
            if (obj.code === 410) gone = true;
            else failure = new KubeApiError(obj.code ?? 500, obj.reason ?? 'Error', obj.message ?? 'watch error', 'WATCH', this.opts.path);
            this.current?.abort(failure ?? new Error('watch: resource version too old'));
            break;
        }
      },
      (timeoutSeconds + 60) * 1000,
    );
    this.current = handle;
    if (this.abort.signal.aborted) handle.abort();
    const err = await handle.done;
    this.current = undefined;
    if (gone) return { outcome: 'gone', events };
    if (failure !== undefined) throw failure;
    if (err instanceof KubeApiError && err.status === 410) return { outcome: 'gone', events };
    if (err !== undefined) throw err;
    return { outcome: 'ended', events };
  }

  private async run(): Promise<void> {
    const { log } = this.opts;
    let failures = 0;
    const signal = this.abort.signal;
    while (!signal.aborted) {
      const started = Date.now();
      try {
        if (this.rv === '') await this.relist();
        const { outcome, events } = await this.watchOnce();
        if (signal.aborted) break;
        if (outcome === 'gone') {
          this.stats.gone++;
          log.info('watch resource version too old: listing again', { informer: this.name });
          this.rv = '';
          continue;
        }
        // A clean end: the apiserver's timeout. Watch again from where it stopped, at once,
        // unless it ended instantly with nothing (then back off as for an error).
        if (events > 0 || Date.now() - started > 1000) failures = 0;
        else {
          failures++;
          await sleep(backoffDelay(failures, this.opts.backoff), signal);
        }
      } catch (e) {
        if (signal.aborted) break;
        this.stats.errors++;
        // A watch that worked for a while before it broke starts the backoff over.
        if (Date.now() - started > HEALTHY_WATCH_MS) failures = 0;
        failures++;
        const delay = backoffDelay(failures, { baseMs: 200, maxMs: 30_000, ...this.opts.backoff });
        log.warn('watch failed; re-establishing it', { informer: this.name, retryInMs: delay, failures, ...errorFields(e) });
        await sleep(delay, signal);
      }
    }
  }
}
