// Cache invalidation between several servers on one metadata store (DESIGN.md "Several replicas":
// caches are invalidated, not trusted for a while).
//
// A server about to change inodes or block maps in the store announces it first, and tells when it
// is done:
//   <prefix>inval:<store>   "<sender> U<n> i|b|* <inode> <inode> ..."   before the change (awaited)
//   <prefix>inval:<store>   "<sender> D<n> i|b|* <inode> <inode> ..."   after it (not awaited)
// (i: inodes, b: inodes and their block maps, *: everything). A server that hears U<n> drops those
// inodes and caches none of them until it hears D<n> (which drops them once more, with any inode
// the change turned out to touch besides), so from the moment the announcement was heard it reads
// them from the store, which is current. The change is made only once the announcement is
// published: when the D is lost (the sender loses Redis right after its commit) the others keep
// reading the store; a change is never acknowledged while another server may answer from a cache
// that predates it. An announcement whose D never comes (its sender died) stops counting after
// PENDING_MAX_AGE_MS.
//
// Redis writes a PUBLISH into every subscriber's connection before it answers the publisher, and
// answers a PING on a subscriber connection after everything written to it before. So a server
// about to answer from its cache first sends a PING on its subscriber connection (one for every
// call that arrives meanwhile) and waits for the PONG: every announcement published before the
// call arrived has been applied by then.
//
// Without that proof (Redis unreachable, the PING unanswered within PING_TIMEOUT_MS) the caches are
// emptied and nothing is cached (every call reads the store, which is current) until the
// subscriber connection is back and has answered a PING; then everything is dropped once more
// (invalidations published meanwhile were lost). A server that cannot announce refuses to change
// the store (JUKEBOX): the others could not learn of the change.
import type { Redis as RedisClient } from 'ioredis';
import type { Logger } from 'pino';
import { VfsError } from '../vfs/errors.js';
import { withTimeout } from '../timeouts.js';

/** What a cache does with the invalidations of the other servers. */
export interface CoherentCache {
  /** Another server changed these inodes (and with `blocks`, their block maps); null: anything. */
  invalidateRemote(ids: readonly number[] | null, blocks: boolean): void;
  /**
   * Another server is about to change these inodes (null: any): none of them is cached until the
   * same call with `on` false (calls nest).
   */
  uncertainRemote(ids: readonly number[] | null, on: boolean): void;
}

/** A PING unanswered this long means the subscriber connection cannot prove anything (for now). */
const PING_TIMEOUT_MS = 1_000;
/** No PONG for this long on a connection ioredis calls ready: it hangs, and is made anew. */
const HUNG_MS = 5_000;
/** While incoherent: how often the subscriber connection is tried again. */
const RETRY_MS = 500;
/**
 * After (re)subscribing: nothing is cached this long. A change announced while this server was not
 * listening may still be committing; it is assumed done (or given up) by then.
 */
export const RECOVERY_GRACE_MS = 5_000;
/** Inodes per message (a larger change is published as "everything"). */
const MAX_IDS = 256;
/** Invalidations kept to publish again when Redis is back (beyond: "everything" once). */
const MAX_UNSENT = 1_024;
/** An announcement not awaited longer than this (the change is surely made or abandoned by then). */
const ANNOUNCE_TIMEOUT_MS = 2_000;
/** Announced changes of the other servers kept (beyond: nothing is cached until they are done). */
const MAX_PENDING = 4_096;
/** An announced change whose end was never heard (its server died or lost Redis) stops counting after this. */
export const PENDING_MAX_AGE_MS = 60_000;

/** An announced change of another server, not yet done. */
interface PendingChange {
  ids: readonly number[] | null;
  at: number;
}

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
  /** Set while nothing is cached after a (re)subscription (RECOVERY_GRACE_MS). */
  private grace: NodeJS.Timeout | null = null;

  constructor(
    private readonly sub: RedisClient,
    private readonly log: Logger,
    private readonly graceMs = RECOVERY_GRACE_MS,
  ) {
    sub.on('close', () => this.lost('the subscriber connection to Redis closed'));
    sub.on('ready', () => void this.recover());
  }

  add(cache: CoherentCache): void {
    if (this.caches.has(cache)) return;
    this.caches.add(cache);
    // A new cache starts as after a resubscription: it missed whatever was announced before.
    if (this.grace) cache.uncertainRemote(null, true);
  }

  /** Whether the grace after a (re)subscription is running (nothing is cached meanwhile). */
  get settling(): boolean {
    return this.grace !== null;
  }

  /** Announcements made before this server listened were not heard: cache nothing for a while. */
  private startGrace(): void {
    if (this.closed) return;
    // Running already (a second outage): it lasts from now on.
    if (this.grace) clearTimeout(this.grace);
    else for (const c of this.caches) c.uncertainRemote(null, true);
    this.grace = setTimeout(() => {
      this.grace = null;
      for (const c of this.caches) {
        c.uncertainRemote(null, false);
        c.invalidateRemote(null, true);
      }
    }, this.graceMs);
    this.grace.unref();
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
      await withTimeout(this.sub.ping(), PING_TIMEOUT_MS);
      this.lastPong = Date.now();
    } catch {
      this.reconnectIfHung();
      return this.scheduleRetry();
    }
    if (this.coherent || this.closed) return;
    // Whatever was published while we were away is lost: start from nothing, and cache nothing
    // until the changes announced meanwhile are surely done.
    this.dropAll();
    this.startGrace();
    this.coherent = true;
    this.log.info('cache coherence (Redis) established');
  }

  private async ping(): Promise<boolean> {
    try {
      await withTimeout(this.sub.ping(), PING_TIMEOUT_MS);
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
    if (this.grace) clearTimeout(this.grace);
    this.grace = null;
  }
}

/** The invalidations of one metadata store (all servers that serve it share its channel). */
export class StoreCoherence {
  private unsent: string[] = [];
  private flushing = false;
  private seq = 0;
  /** The other servers' announced changes not yet done, by "<sender> <n>". */
  private readonly pending = new Map<string, PendingChange>();
  /** Announcements beyond MAX_PENDING, by sender: while any, nothing is cached. */
  private readonly overflow = new Map<string, number>();
  private sweptAt = Date.now();

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

  /**
   * Tells the other servers that these inodes are about to change (null: anything); resolves once
   * every one of them will have heard it before its next answer from a cache, with the ticket for
   * `done`. Throws VfsError JUKEBOX (nothing may be changed) when that cannot be made sure.
   */
  async announce(ids: readonly number[] | null, blocks: boolean): Promise<number> {
    this.checkCanPublish();
    const n = ++this.seq;
    try {
      await withTimeout(this.redis.publish(this.channel, `${this.serverId} U${n} ${body(ids, blocks)}`), ANNOUNCE_TIMEOUT_MS);
    } catch (e) {
      throw new VfsError('JUKEBOX', `a change here could not be made known to the other servers: ${(e as Error).message}`);
    }
    return n;
  }

  /**
   * The change announced as `ticket` is made (or failed); `ids`: every inode it touched. Not
   * awaited by the change: sent again until Redis takes it (the others read the store meanwhile).
   */
  done(ticket: number, ids: readonly number[] | null, blocks: boolean): void {
    const msg = `${this.serverId} D${ticket} ${body(ids, blocks)}`;
    if (this.unsent.length > 0) return this.queue(msg);
    this.redis.publish(this.channel, msg).catch((e: unknown) => {
      this.log.warn({ err: (e as Error).message }, 'could not publish the end of a metadata change; retrying');
      this.queue(msg);
    });
  }

  private queue(msg: string): void {
    // Changed in the store already: published as soon as Redis answers again.
    if (this.unsent.length >= MAX_UNSENT) this.unsent = [`${this.serverId} *`];
    else this.unsent.push(msg);
    this.retryUnsent();
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
    if (sp < 0) return;
    const sender = msg.slice(0, sp);
    if (sender === this.serverId) return;
    let rest = msg.slice(sp + 1);
    let phase: 'U' | 'D' | null = null;
    let key = '';
    const c0 = rest.charCodeAt(0);
    if (c0 === 0x55 /* U */ || c0 === 0x44 /* D */) {
      const sp2 = rest.indexOf(' ');
      if (sp2 < 0) return this.cache.invalidateRemote(null, true);
      phase = c0 === 0x55 ? 'U' : 'D';
      key = `${sender} ${rest.slice(1, sp2)}`;
      rest = rest.slice(sp2 + 1);
    }
    const ids = parseIds(rest);
    const blocks = rest.charCodeAt(0) !== 0x69; /* i */
    this.cache.invalidateRemote(ids, blocks);
    if (phase === 'U') this.begin(sender, key, ids);
    else if (phase === 'D') this.end(sender, key);
    if (this.pending.size > 0 && Date.now() - this.sweptAt > 5_000) this.sweep();
  }

  private begin(sender: string, key: string, ids: readonly number[] | null): void {
    if (this.pending.size >= MAX_PENDING) {
      const was = this.overflow.size;
      this.overflow.set(sender, (this.overflow.get(sender) ?? 0) + 1);
      if (was === 0) this.cache.uncertainRemote(null, true);
      return;
    }
    this.pending.set(key, { ids, at: Date.now() });
    this.cache.uncertainRemote(ids, true);
  }

  private end(sender: string, key: string): void {
    const p = this.pending.get(key);
    if (p) {
      this.pending.delete(key);
      this.cache.uncertainRemote(p.ids, false);
      return;
    }
    // Not kept (beyond MAX_PENDING), or announced before this server listened.
    const n = this.overflow.get(sender);
    if (n === undefined) return;
    if (n > 1) this.overflow.set(sender, n - 1);
    else {
      this.overflow.delete(sender);
      if (this.overflow.size === 0) this.cache.uncertainRemote(null, false);
    }
  }

  /** Announced changes never done (their server died or lost Redis for good) stop counting. */
  sweep(now = Date.now()): void {
    this.sweptAt = now;
    let any = false;
    for (const [key, p] of this.pending) {
      if (now - p.at < PENDING_MAX_AGE_MS) continue;
      this.pending.delete(key);
      this.cache.uncertainRemote(p.ids, false);
      any = true;
    }
    if (this.overflow.size > 0 && this.pending.size === 0) {
      this.overflow.clear();
      this.cache.uncertainRemote(null, false);
      any = true;
    }
    if (any) this.cache.invalidateRemote(null, true);
  }

  /** The other servers' announced changes not yet done (for tests and metrics). */
  get pendingRemote(): number {
    return this.pending.size;
  }
}

function body(ids: readonly number[] | null, blocks: boolean): string {
  return ids === null || ids.length > MAX_IDS ? '*' : `${blocks ? 'b' : 'i'} ${ids.join(' ')}`;
}

/** "i|b <id> ..." -> the ids; "*" or anything malformed: null (everything). */
function parseIds(rest: string): number[] | null {
  if (rest === '*') return null;
  const parts = rest.split(' ');
  if (parts[0] !== 'i' && parts[0] !== 'b') return null;
  const ids: number[] = [];
  for (let i = 1; i < parts.length; i++) {
    const n = Number(parts[i]);
    if (!Number.isSafeInteger(n)) return null;
    ids.push(n);
  }
  return ids;
}
