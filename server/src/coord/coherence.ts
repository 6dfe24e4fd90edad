// Cache invalidation between several servers on one metadata store (DESIGN.md "Several replicas":
// caches are invalidated, not trusted for a while).
//
// A server that changed inodes or block maps in the store publishes, before it answers the call,
//   <prefix>inval:<store>   "<server id> i|b|* <inode> <inode> ..."
// (i: inodes, b: inodes and their block maps, *: everything). Redis writes a PUBLISH into every
// subscriber's connection before it answers the publisher, and answers a PING on a subscriber
// connection after everything written to it before. So a server about to answer from its cache
// first sends a PING on its subscriber connection (one for every call that arrives meanwhile) and
// waits for the PONG: every invalidation published before the call arrived has been applied by then.
//
// Without that proof (Redis unreachable, the PING unanswered within PING_TIMEOUT_MS) the caches are
// emptied and nothing is cached (every call reads the store, which is current) until the
// subscriber connection is back and has answered a PING; then everything is dropped once more
// (invalidations published meanwhile were lost). A server that cannot publish refuses to change the
// store (JUKEBOX): the others could not learn of the change.
import type { Redis as RedisClient } from 'ioredis';
import type { Logger } from 'pino';
import { VfsError } from '../vfs/errors.js';

/** What a cache does with the invalidations of the other servers. */
export interface CoherentCache {
  /** Another server changed these inodes (and with `blocks`, their block maps); null: anything. */
  invalidateRemote(ids: readonly number[] | null, blocks: boolean): void;
}

/** A PING unanswered this long means the subscriber connection cannot prove anything (for now). */
const PING_TIMEOUT_MS = 1_000;
/** No PONG for this long on a connection ioredis calls ready: it hangs, and is made anew. */
const HUNG_MS = 5_000;
/** While incoherent: how often the subscriber connection is tried again. */
const RETRY_MS = 500;
/** Inodes per message (a larger change is published as "everything"). */
const MAX_IDS = 256;
/** Invalidations kept to publish again when Redis is back (beyond: "everything" once). */
const MAX_UNSENT = 1_024;

const timeout = <T>(p: Promise<T>, ms: number): Promise<T> => {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      t = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
};

/**
 * The subscriber connection's sync point: `sync()` resolves true once every message published before
 * the call was delivered, false when that cannot be proven (then the caches were emptied).
 */
export class SubscriberSync {
  private coherent = false;
  /** Date.now() of the last PONG. */
  private lastPong = Date.now();
  private current: Promise<boolean> | null = null;
  private next: Promise<boolean> | null = null;
  private retry: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly caches = new Set<CoherentCache>();

  constructor(
    private readonly sub: RedisClient,
    private readonly log: Logger,
  ) {
    sub.on('close', () => this.lost('the subscriber connection to Redis closed'));
    sub.on('ready', () => void this.recover());
  }

  add(cache: CoherentCache): void {
    this.caches.add(cache);
  }

  remove(cache: CoherentCache): void {
    this.caches.delete(cache);
  }

  get isCoherent(): boolean {
    return this.coherent;
  }

  private dropAll(): void {
    for (const c of this.caches) c.invalidateRemote(null, true);
  }

  private lost(why: string): void {
    if (this.closed) return;
    if (this.coherent) this.log.warn({ why }, 'cache coherence lost: every call reads the metadata store until Redis is back');
    this.coherent = false;
    this.dropAll();
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.retry || this.closed) return;
    this.retry = setTimeout(() => {
      this.retry = null;
      void this.recover();
    }, RETRY_MS);
    this.retry.unref();
  }

  /** Subscribed again (ioredis resubscribes before 'ready'): coherent from the first answered PING. */
  async recover(): Promise<void> {
    if (this.closed || this.coherent) return;
    if (this.sub.status !== 'ready') return this.scheduleRetry();
    try {
      await timeout(this.sub.ping(), PING_TIMEOUT_MS);
      this.lastPong = Date.now();
    } catch {
      this.reconnectIfHung();
      return this.scheduleRetry();
    }
    if (this.coherent || this.closed) return;
    // Whatever was published while we were away is lost: start from nothing.
    this.dropAll();
    this.coherent = true;
    this.log.info('cache coherence (Redis) established');
  }

  private async ping(): Promise<boolean> {
    try {
      await timeout(this.sub.ping(), PING_TIMEOUT_MS);
      this.lastPong = Date.now();
      return this.coherent;
    } catch (e) {
      // A slow answer (a busy machine) costs reads from the store until the next PONG, nothing more.
      this.lost(`a PING on the subscriber connection: ${(e as Error).message}`);
      this.reconnectIfHung();
      return false;
    }
  }

  /** A connection that hangs is not noticed by ioredis: after HUNG_MS without a PONG, a new one. */
  private reconnectIfHung(): void {
    if (this.sub.status === 'ready' && Date.now() - this.lastPong > HUNG_MS) {
      this.log.warn({ ms: Date.now() - this.lastPong }, 'the subscriber connection to Redis answers nothing: connecting again');
      this.lastPong = Date.now();
      this.sub.disconnect(true);
    }
  }

  /** True once every invalidation published before this call is applied; false: read the store. */
  sync(): Promise<boolean> {
    if (!this.coherent) return Promise.resolve(false);
    if (this.next) return this.next;
    if (!this.current) {
      const p = this.ping().finally(() => {
        if (this.current === p) this.current = null;
      });
      this.current = p;
      return p;
    }
    // A PING already on its way may have been sent before this call's invalidations: the next one.
    const after = this.current;
    const n = after.then(() => {
      if (this.next === n) this.next = null;
      return this.sync();
    });
    this.next = n;
    return n;
  }

  close(): void {
    this.closed = true;
    this.coherent = false;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
  }
}

/** The invalidations of one metadata store (all servers that serve it share its channel). */
export class StoreCoherence {
  private unsent: string[] = [];
  private flushing = false;

  constructor(
    private readonly redis: RedisClient,
    private readonly subSync: SubscriberSync,
    readonly channel: string,
    private readonly serverId: string,
    private readonly isReady: () => boolean,
    private readonly log: Logger,
    readonly cache: CoherentCache,
  ) {}

  /** Whether the cache may answer, once every invalidation published before this call is applied. */
  sync(): Promise<boolean> {
    return this.subSync.sync();
  }

  /** Refuses a change the other servers could not hear of (JUKEBOX: the client tries again). */
  checkCanPublish(): void {
    if (!this.isReady() || !this.subSync.isCoherent)
      throw new VfsError('JUKEBOX', 'Redis is not reachable: a change here could not be made known to the other servers');
  }

  /** Tells the other servers (awaited: the change is answered only after). null: everything. */
  async publish(ids: readonly number[] | null, blocks: boolean): Promise<void> {
    const body = ids === null || ids.length > MAX_IDS ? '*' : `${blocks ? 'b' : 'i'} ${ids.join(' ')}`;
    const msg = `${this.serverId} ${body}`;
    try {
      await this.redis.publish(this.channel, msg);
    } catch (e) {
      // Changed in the store already: published as soon as Redis answers again.
      if (this.unsent.length >= MAX_UNSENT) this.unsent = [`${this.serverId} *`];
      else this.unsent.push(msg);
      this.log.warn({ err: (e as Error).message }, 'could not publish a metadata change; retrying');
      this.retryUnsent();
    }
  }

  private retryUnsent(): void {
    if (this.flushing) return;
    this.flushing = true;
    const t = setTimeout(() => {
      void (async () => {
        try {
          while (this.unsent.length > 0) {
            await this.redis.publish(this.channel, this.unsent[0]!);
            this.unsent.shift();
          }
          this.flushing = false;
        } catch {
          this.flushing = false;
          this.retryUnsent();
        }
      })();
    }, RETRY_MS);
    t.unref();
  }

  /** A message on the channel (ours are skipped: this server's cache is exact already). */
  onMessage(msg: string): void {
    const sp = msg.indexOf(' ');
    if (sp < 0 || msg.slice(0, sp) === this.serverId) return;
    const rest = msg.slice(sp + 1);
    if (rest === '*') return this.cache.invalidateRemote(null, true);
    const parts = rest.split(' ');
    const ids: number[] = [];
    for (let i = 1; i < parts.length; i++) {
      const n = Number(parts[i]);
      if (Number.isSafeInteger(n)) ids.push(n);
      else return this.cache.invalidateRemote(null, true);
    }
    this.cache.invalidateRemote(ids, parts[0] === 'b');
  }
}
