// Per-file write leases of several servers on one store (DESIGN.md "Several replicas"). A server
// appends a file's writes and truncates to its WAL only while it holds the file's lease in Redis:
//
//   <prefix>lease:<store>:<inode> = <server id>   (SET NX PX ttl, renewed every ttl/3)
//
// Each take of a lease gets a fencing token from the metadata store's sequence (PostgreSQL, so it
// keeps increasing whatever happens to Redis); WAL records and block switches carry it, and a block
// switch under an older token than what is stored is refused (meta/sql/store.ts casBlock).
//
// A server that needs a lease another one holds publishes `<store> <inode>` on
// <prefix>handover; the holder uploads the file's dirty blocks, writes its size and times, and
// lets the lease go; the asker takes it and forgets what it had cached of the file.
//
// A reader elsewhere asks the holder to store what it acknowledged (`flush <store> <inode>`) only
// when the holder marked the file dirty: before it acknowledges the first write or truncate after
// a store, the holder sets
//
//   <prefix>dirty:<store>:<inode> = <server id>:<n>
//
// and storing deletes it if it is still that mark. A read of a file held elsewhere but not written
// since it was stored costs one MGET, not a flush round trip.
//
// Losing Redis: writes wait briefly, then answer JUKEBOX; a lease not renewed within its ttl is not
// used. When Redis comes back empty (restarted without persistence: its boot marker changed), no
// server takes a lease for one ttl and 7 s (a grace period: see RECONNECT_LAG_MS), so the holders'
// dirty data (under their old tokens) is stored, and their opens and locks registered again,
// before anyone writes under a newer one or opens past them.
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Redis as RedisClient, RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import { persistedRandomId } from '../persisted-id.js';
import { VfsError } from '../vfs/errors.js';
import type { DittoConfig } from '../config/types.js';
import { StoreCoherence, SubscriberSync, type CoherentCache } from './coherence.js';

/** What a lease holder must do before it hands a file over. */
export interface LeaseParticipant {
  /** Uploads the file's dirty data (throws if it cannot: the lease is kept). */
  flush(inodeId: number): Promise<void>;
  /** True while the file has data not stored yet. */
  hasDirty(inodeId: number): boolean;
}

/** The metadata store calls the leases need. */
export interface LeaseStore {
  nextLeaseToken?(): Promise<number>;
  /** False while no lease of the store was ever taken (nothing can be dirty under an old one). */
  leaseTokensIssued?(): Promise<boolean>;
  flushAttrs?(id?: number): Promise<void>;
  invalidateInode?(inodeId: number): void;
}

interface Held {
  token: number;
  /** Date.now() of the last successful take or renewal. */
  renewedAt: number;
  lastUse: number;
  /** Being handed over: writes take the slow path (and wait for it). */
  releasing: boolean;
  /** The dirty mark is set in Redis (`mark`): writes are acknowledged without asking Redis. */
  marked: boolean;
  /** The dirty mark set last (`<server id>:<n>`), '' for none. */
  mark: string;
  seq: number;
}

/** Leases this server keeps at most per store (clean ones beyond it are let go at the next renewal). */
const MAX_HELD = 10_000;
/** How long a write waits for a lease before JUKEBOX (ms). */
const ACQUIRE_WAIT_MS = 8_000;
/** Leases taken at once after a WAL replay. */
const ADOPT_PARALLEL = 16;
/** Asking the holder again while waiting (ms). */
const ASK_AGAIN_MS = 1_000;

const RENEW_LUA = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end`;
/** Deletes KEYS[1] if it is still ARGV[1]: a lease still ours, a dirty mark still the one we saw. */
const DEL_IF_LUA = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;
/**
 * The file's data changed in the store (KEYS[2], the generation, goes up), then the lease (KEYS[1])
 * goes if ARGV[1] is still its holder and ARGV[3] is 1. Readers elsewhere compare generations.
 */
const STORED_LUA = `redis.call('incr', KEYS[2]); redis.call('pexpire', KEYS[2], ARGV[2])
if ARGV[4] ~= '' and redis.call('get', KEYS[3]) == ARGV[4] then redis.call('del', KEYS[3]) end
if ARGV[3] == '1' and redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0`;
/**
 * Takes a free lease (1), unless the file's dirty mark is another server's while nobody holds the
 * lease (-1: that server acknowledged data it never stored and is gone; its WAL alone has it). 0:
 * held. KEYS: lease, dirty mark; ARGV: server id, ttl, this WAL's mark prefix.
 */
const TAKE_LUA = `local d = redis.call('get', KEYS[2])
if d and string.sub(d, 1, string.len(ARGV[3])) ~= ARGV[3] and redis.call('exists', KEYS[1]) == 0 then return -1 end
if redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 1 end
return 0`;
/** SCAN calls at most while looking for a former process's dirty marks (1,000 keys each). */
const MAX_SCAN_CALLS = 100_000;
/** A file's generation key outlives its last change by this long; a reader that finds none drops its cache. */
const GENERATION_TTL_MS = 3_600_000;
/** Generations remembered per store (past it, the map starts again: a few more cache drops). */
const MAX_SEEN = 100_000;

export interface CoordinationOptions {
  url: string;
  keyPrefix: string;
  tls: boolean;
  password?: string;
  leaseTtlMs: number;
  log: Logger;
  /** Nothing is cached this long after (re)subscribing (default coherence.ts RECOVERY_GRACE_MS; tests shorten it). */
  recoveryGraceMs?: number;
  /**
   * The identity of this server's WAL (walIdentity()), kept across restarts: the dirty marks it
   * sets name it, so that a server coming back on the same WAL knows the marks of its former self.
   */
  walId?: string;
}

/** The file under the WAL directory that names the WAL (walIdentity). */
export const WAL_ID_FILE = 'server-id';

/**
 * The identity of the WAL in `dir` (16 hex digits in `dir`/server-id, made at its first use and
 * kept, synced): a server started again on the same WAL is the one whose dirty marks it finds.
 */
export async function walIdentity(dir: string): Promise<string> {
  return (await persistedRandomId(path.join(dir, WAL_ID_FILE), 8)).toString('hex');
}

/** The password of coordination.redis, from its file or its environment variable. */
export async function redisPassword(cfg: DittoConfig['coordination']['redis'], env = process.env): Promise<string | undefined> {
  if (cfg.password_file !== undefined) {
    try {
      return (await readFile(cfg.password_file, 'utf8')).replace(/\r?\n$/, '');
    } catch (e) {
      throw new Error(`coordination.redis.password_file: cannot read ${cfg.password_file}: ${(e as Error).message}`);
    }
  }
  if (cfg.password_env !== undefined) {
    const v = env[cfg.password_env];
    if (v === undefined || v === '')
      throw new Error(`coordination.redis.password_env: the environment variable ${cfg.password_env} is not set`);
    return v;
  }
  return undefined;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * When a subscriber connection is back, ioredis subscribes it to its channels again with a
 * SUBSCRIBE whose promise nobody holds (its ready handler): if the connection drops before Redis
 * answers (Redis going away again, or this server closing it), that promise fails unhandled, and
 * the server exits on an unhandled rejection (cli/start.ts). Every SUBSCRIBE of `sub` gets a
 * handler here; the caller's promise still fails as before.
 */
function handleResubscribes(sub: RedisClient): void {
  const subscribe = sub.subscribe.bind(sub) as (...args: unknown[]) => Promise<unknown>;
  (sub as unknown as { subscribe: typeof subscribe }).subscribe = (...args) => {
    const p = subscribe(...args);
    p.catch(() => undefined);
    return p;
  };
}

/** The longest a command on the command connection waits for Redis's answer. */
const COMMAND_TIMEOUT_MS = 5_000;
/** The longest a connection attempt to Redis waits before it is given up (and tried again). */
const CONNECT_TIMEOUT_MS = 5_000;
/** The longest wait between two attempts to connect to Redis again (the backoff grows to it). */
export const RECONNECT_MAX_MS = 2_000;
/**
 * How much later than another a server may find Redis back after an outage: an attempt begun just
 * before Redis came back may wait out its connect timeout, then the backoff. The grace after Redis
 * lost its keys includes it (see checkBoot).
 */
export const RECONNECT_LAG_MS = CONNECT_TIMEOUT_MS + RECONNECT_MAX_MS;

/** The key whose value changes when Redis lost its keys (see checkBoot). */
export const bootKey = (keyPrefix: string): string => `${keyPrefix}boot`;

/** One connection to Redis (and one for pub/sub) for every store of this server. */
export class Coordinator {
  /** `<wal id>@<host>:<pid>:<random>` (without a WAL identity: `<host>:<pid>:<random>`). */
  readonly serverId: string;
  /**
   * How every dirty mark this server's WAL ever set starts (this process's and its former selves'
   * on the same WAL): a mark that does not is another server's.
   */
  readonly markPrefix: string;
  private readonly stores = new Map<string, FileLeases>();
  private readonly controlListeners = new Set<() => void>();
  /** Invalidation channel -> the cache of the store it is about (coord/coherence.ts). */
  private readonly coherence = new Map<string, Set<StoreCoherence>>();
  private cacheCount = 0;
  /** Other channels this server listens to (coord/locks.ts), by name. */
  private readonly listeners = new Map<string, (msg: string) => void>();
  private subSync!: SubscriberSync;
  private timer: NodeJS.Timeout | null = null;
  /** The boot marker of the Redis seen last: a new one means Redis lost its keys. */
  private boot: string | null = null;
  /** No lease is taken before this (Date.now()): the grace period after Redis lost its keys. */
  graceUntil = 0;
  private closed = false;

  private constructor(
    readonly redis: RedisClient,
    private readonly sub: RedisClient,
    readonly opts: CoordinationOptions,
  ) {
    const self = `${os.hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
    this.serverId = opts.walId === undefined ? self : `${opts.walId}@${self}`;
    this.markPrefix = opts.walId === undefined ? `${this.serverId}:` : `${opts.walId}@`;
  }

  static async open(opts: CoordinationOptions): Promise<Coordinator> {
    const { Redis } = await import('ioredis');
    const url = new URL(opts.url);
    const ro: RedisOptions = {
      lazyConnect: true,
      // A command while disconnected fails at once (JUKEBOX), never queues.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      // A command whose connection died is kept to be sent again after a reconnection: it fails
      // (JUKEBOX) after this instead of holding the call that waits on it until Redis is back.
      commandTimeout: COMMAND_TIMEOUT_MS,
      connectTimeout: CONNECT_TIMEOUT_MS,
      retryStrategy: (times) => Math.min(100 * times, RECONNECT_MAX_MS),
      ...(opts.password !== undefined ? { password: opts.password } : {}),
      ...(opts.tls || url.protocol === 'rediss:' ? { tls: { servername: url.hostname } } : {}),
    };
    const redis = new Redis(opts.url, ro);
    // The subscriber connection's PINGs have their own bound (coherence.ts SubscriberSync).
    const sub = new Redis(opts.url, { ...ro, enableOfflineQueue: true, maxRetriesPerRequest: null, commandTimeout: undefined });
    handleResubscribes(sub);
    // The reason a connection failed (a refused password) comes as an 'error' event before the
    // connect() rejection, which only says the connection closed.
    let why = '';
    redis.on('error', (e: Error) => (why = e.message));
    sub.on('error', () => undefined);
    try {
      await redis.connect();
      await sub.connect();
    } catch (e) {
      redis.disconnect();
      sub.disconnect();
      const detail = why !== '' && why !== (e as Error).message ? `${why} (${(e as Error).message})` : (e as Error).message;
      throw new Error(`coordination.redis: cannot reach ${url.protocol}//${url.host}: ${detail}`);
    }
    const c = new Coordinator(redis, sub, opts);
    c.subSync = new SubscriberSync(sub, opts.log, opts.recoveryGraceMs);
    await c.checkBoot();
    redis.on('ready', () => void c.checkBoot().catch(() => undefined));
    redis.on('close', () => c.disconnected());
    await sub.subscribe(c.channel, c.controlChannel);
    sub.on('message', (ch: string, msg: string) => {
      if (ch === c.controlChannel) c.onControl(msg);
      else if (ch === c.channel) c.onHandover(msg);
      else if (c.listeners.has(ch)) c.listeners.get(ch)!(msg);
      else for (const s of c.coherence.get(ch) ?? []) s.onMessage(msg);
    });
    await c.subSync.recover();
    // Back after a disconnection: changes published meanwhile were not heard; read the database again.
    sub.on('ready', () => {
      for (const l of [...c.controlListeners]) l();
    });
    c.timer = setInterval(() => void c.renewAll(), Math.max(200, Math.floor(opts.leaseTtlMs / 3)));
    c.timer.unref();
    return c;
  }

  get channel(): string {
    return `${this.opts.keyPrefix}handover`;
  }

  /** Control-plane changes: `<server id> <generation>`, published by the server that made one. */
  get controlChannel(): string {
    return `${this.opts.keyPrefix}control`;
  }

  /** Tells the other servers that the control database changed (they read it again and apply it). */
  publishControl(generation: number): void {
    this.redis.publish(this.controlChannel, `${this.serverId} ${generation}`).catch((e: unknown) => {
      this.opts.log.warn({ err: (e as Error).message }, 'could not tell the other servers about a control-plane change');
    });
  }

  /** Called when another server changed the control database. */
  onControlChange(listener: () => void): () => void {
    this.controlListeners.add(listener);
    return () => this.controlListeners.delete(listener);
  }

  private onControl(msg: string): void {
    if (msg.startsWith(`${this.serverId} `)) return;
    for (const l of [...this.controlListeners]) l();
  }

  get ready(): boolean {
    return this.redis.status === 'ready';
  }

  /** Whether nothing is cached for now, after a (re)subscription (coherence.ts SubscriberSync). */
  get cachesSettling(): boolean {
    return this.subSync.settling;
  }

  /** Whether every message published so far may be assumed heard (coherence.ts SubscriberSync). */
  get subscriberCoherent(): boolean {
    return this.subSync.isCoherent;
  }

  /**
   * Every cache of every store forgets everything: a server that may have changed the store without
   * being heard (it lost Redis between its change and the publication) is gone from Redis.
   */
  dropAllCaches(): void {
    for (const set of this.coherence.values()) for (const s of set) s.cache.invalidateRemote(null, true);
  }

  /** Messages of `channel` go to `fn` from now on (ioredis subscribes again after a reconnection). */
  async listen(channel: string, fn: (msg: string) => void): Promise<void> {
    this.listeners.set(channel, fn);
    await this.sub.subscribe(channel);
  }

  /** Redis lost its keys (a restart without persistence) since we last looked: a grace period starts. */
  private async checkBoot(): Promise<void> {
    const key = bootKey(this.opts.keyPrefix);
    const mine = randomBytes(8).toString('hex');
    await this.redis.set(key, mine, 'NX');
    const boot = await this.redis.get(key);
    const reset = this.boot !== null ? boot !== this.boot : boot === mine;
    this.boot = boot;
    if (reset) {
      // One ttl for the leases the others believed held to lapse; their opens and locks are
      // registered again as soon as they reconnect (coord/locks.ts), which can be up to
      // RECONNECT_LAG_MS after this server did.
      const graceMs = this.opts.leaseTtlMs + RECONNECT_LAG_MS;
      this.graceUntil = Date.now() + graceMs;
      for (const s of this.stores.values()) s.dropAll();
      this.opts.log.warn({ graceMs }, 'coordination: Redis has no leases (new or restarted); taking none during a grace period');
    }
  }

  private disconnected(): void {
    // Nothing renewed from now on: leases are used again only once renewed on the new connection.
    for (const s of this.stores.values()) s.unconfirmAll();
  }

  /**
   * After the WAL's replay (every share's): the dirty marks this WAL's former process left on files
   * with nothing replayed go (FileLeases.clearFormerMarks). A store Redis cannot answer for is
   * logged: its marks expire by themselves.
   */
  async clearFormerMarks(): Promise<void> {
    if (this.opts.walId === undefined) return;
    for (const s of this.stores.values()) {
      try {
        const n = await s.clearFormerMarks();
        if (n > 0)
          this.opts.log.info(
            { store: s.storeKey, marks: n },
            "dirty marks of this WAL's former process cleared: nothing of those files is unstored",
          );
      } catch (err) {
        this.opts.log.warn({ store: s.storeKey, err }, "could not clear the dirty marks of this WAL's former process");
      }
    }
  }

  /** The leases of one metadata store (`storeKey`: the same on every server that serves it). */
  leasesFor(storeKey: string, meta: LeaseStore): FileLeases {
    let s = this.stores.get(storeKey);
    if (!s) {
      s = new FileLeases(this, storeKey, meta);
      this.stores.set(storeKey, s);
    }
    return s;
  }

  /**
   * Cache invalidation for one metadata store among the servers that serve it; `cache` hears the
   * others' changes from now on (after the subscription is confirmed).
   */
  coherenceFor(storeKey: string, cache: CoherentCache): StoreCoherence {
    const channel = `${this.opts.keyPrefix}inval:${storeKey}`;
    let set = this.coherence.get(channel);
    const first = !set;
    if (!set) this.coherence.set(channel, (set = new Set()));
    // One sender id per cache: two caches of this server on one store hear each other.
    const s = new StoreCoherence(
      this.redis,
      this.subSync,
      channel,
      `${this.serverId}/${++this.cacheCount}`,
      () => this.ready,
      this.opts.log,
      cache,
    );
    set.add(s);
    this.subSync.add(cache);
    // Not awaited (Redis may be away: ioredis sends it when back). Until it is confirmed, the PING of
    // a sync comes after it on the same connection; what was cached before it is dropped then.
    if (first)
      this.sub.subscribe(channel).then(
        () => cache.invalidateRemote(null, true),
        (e: unknown) => this.opts.log.warn({ err: (e as Error).message, channel }, 'could not subscribe to cache invalidations'),
      );
    else cache.invalidateRemote(null, true);
    return s;
  }

  /** The cache of a store closed here: it hears nothing more. */
  dropCoherence(s: StoreCoherence): void {
    const set = this.coherence.get(s.channel);
    if (!set?.delete(s)) return;
    this.subSync.remove(s.cache);
    if (set.size === 0) {
      this.coherence.delete(s.channel);
      void this.sub.unsubscribe(s.channel).catch(() => undefined);
    }
  }

  /** `<store> <inode>`: hand the lease over; `flush <store> <inode>`: store the file's data, keep the lease. */
  private onHandover(msg: string): void {
    const flush = msg.startsWith('flush ');
    const body = flush ? msg.slice(6) : msg;
    const at = body.lastIndexOf(' ');
    const store = body.slice(0, at);
    const inode = Number(body.slice(at + 1));
    if (!Number.isSafeInteger(inode)) return;
    this.stores.get(store)?.handOver(inode, flush);
  }

  private async renewAll(): Promise<void> {
    if (this.closed) return;
    for (const s of this.stores.values()) await s.renew().catch(() => undefined);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.subSync.close();
    for (const s of this.stores.values()) await s.releaseAll().catch(() => undefined);
    this.sub.disconnect();
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}

export class FileLeases {
  private readonly held = new Map<number, Held>();
  private readonly taking = new Map<number, Promise<number>>();
  private readonly participants = new Set<LeaseParticipant>();
  private readonly handing = new Set<number>();
  /** inode -> the generation of its stored data when this server last read it. */
  private readonly seen = new Map<number, string | null>();
  /** Files whose replayed data this server stores (adopt): their marks are its own to replace. */
  private readonly adopted = new Set<number>();

  constructor(
    private readonly c: Coordinator,
    readonly storeKey: string,
    private readonly meta: LeaseStore,
  ) {}

  private key(inodeId: number): string {
    return `${this.c.opts.keyPrefix}lease:${this.storeKey}:${inodeId}`;
  }

  join(p: LeaseParticipant): void {
    this.participants.add(p);
  }

  leave(p: LeaseParticipant): void {
    this.participants.delete(p);
  }

  /** The grace period (graceUntil) this store was last checked for, and whether it may skip it. */
  private graceChecked = { until: 0, skip: false };

  /**
   * The grace period after Redis lost its keys lets old holders store what they acknowledged. A store
   * whose sequence never handed out a token never had a lease, so nothing of it can be dirty under
   * one: a new deployment takes its first leases at once. Asked once per grace period.
   */
  private async graceNotNeeded(): Promise<boolean> {
    const until = this.c.graceUntil;
    if (this.graceChecked.until !== until) {
      let skip = false;
      try {
        skip = this.meta.leaseTokensIssued !== undefined && !(await this.meta.leaseTokensIssued());
      } catch {
        skip = false; // cannot tell: wait the grace period out
      }
      this.graceChecked = { until, skip };
    }
    return this.graceChecked.skip;
  }

  private usable(h: Held, now: number): boolean {
    // A margin of a third of the ttl: a lease about to expire is renewed first, never used.
    return !h.releasing && now - h.renewedAt < (this.c.opts.leaseTtlMs * 2) / 3;
  }

  /** The fencing token to log a write or truncate of `inodeId` under (see WriteLeases). */
  token(inodeId: number): number | Promise<number> {
    const h = this.held.get(inodeId);
    const now = Date.now();
    if (h && this.usable(h, now) && h.marked) {
      h.lastUse = now;
      return h.token;
    }
    let p = this.taking.get(inodeId);
    if (!p) {
      p = (h && this.usable(h, now) ? this.markDirty(inodeId, h) : this.take(inodeId)).finally(() => this.taking.delete(inodeId));
      this.taking.set(inodeId, p);
    }
    return p;
  }

  private dirtyKey(inodeId: number): string {
    return `${this.c.opts.keyPrefix}dirty:${this.storeKey}:${inodeId}`;
  }

  /** Before the first write acknowledged since the file was stored: readers elsewhere will ask for a flush. */
  private async markDirty(inodeId: number, h: Held): Promise<number> {
    const mark = `${this.c.serverId}:${++h.seq}`;
    try {
      await this.c.redis.set(this.dirtyKey(inodeId), mark, 'PX', GENERATION_TTL_MS);
    } catch (e) {
      throw this.jukebox(`Redis: ${(e as Error).message}`);
    }
    // Handed over (or let go) while the mark was being set: storing deleted only the mark it saw,
    // and this one, for nothing acknowledged (writes see `releasing`), would outlive the lease: the
    // others would take it for data this server never stored (TAKE_LUA's -1) until it expires.
    if (h.releasing || this.held.get(inodeId) !== h) {
      await this.c.redis.eval(DEL_IF_LUA, 1, this.dirtyKey(inodeId), mark).catch(() => undefined);
      throw this.jukebox(`file ${inodeId} was handed over while this server marked it`);
    }
    h.mark = mark;
    h.marked = true;
    h.lastUse = Date.now();
    return h.token;
  }

  /** Why a file whose dirty mark outlived its holder's lease waits. */
  private orphaned(inodeId: number): string {
    return (
      `file ${inodeId} has data another server acknowledged and did not store before it went away (crashed, or lost Redis); ` +
      `it is served again once that server is back on its WAL and has stored it (or its mark expires, ${GENERATION_TTL_MS / 60_000} min after its last write)`
    );
  }

  /**
   * JUKEBOX when nobody holds the file's lease but another server's dirty mark is set: what that
   * server acknowledged is in its WAL alone, and what the store has is older (TAKE_LUA's -1).
   */
  private refuseOrphaned(inodeId: number, holder: string | null | undefined, mark: string | null | undefined): void {
    if ((holder === null || holder === undefined) && mark !== null && mark !== undefined && !mark.startsWith(this.c.markPrefix))
      throw this.jukebox(this.orphaned(inodeId));
  }

  private jukebox(why: string): VfsError {
    return new VfsError('JUKEBOX', `write lease: ${why}`);
  }

  private async take(inodeId: number): Promise<number> {
    const deadline = Date.now() + ACQUIRE_WAIT_MS;
    const { redis, serverId, opts } = this.c;
    const key = this.key(inodeId);
    let asked = 0;
    for (let attempt = 0; ; attempt++) {
      const now = Date.now();
      if (now >= deadline) {
        if (now < this.c.graceUntil)
          throw this.jukebox(
            `Redis lost its keys: no lease is taken for ${this.c.graceUntil - now} ms more (the others store their data first)`,
          );
        throw this.jukebox(`file ${inodeId} is held by another server that did not hand it over in time`);
      }
      if (!this.c.ready) {
        // Not a long wait: a client retries JUKEBOX anyway.
        if (attempt > 20) throw this.jukebox('Redis is not reachable; cannot prove this server may write');
        await sleep(100);
        continue;
      }
      if (now < this.c.graceUntil && !(await this.graceNotNeeded())) {
        await sleep(Math.min(200, this.c.graceUntil - now));
        continue;
      }
      try {
        const h = this.held.get(inodeId);
        if (h && !h.releasing) {
          // Ours but not confirmed lately: renewed only if nobody else took it meanwhile.
          if ((await redis.eval(RENEW_LUA, 1, key, serverId, opts.leaseTtlMs)) === 1) {
            h.renewedAt = h.lastUse = Date.now();
            return h.marked ? h.token : await this.markDirty(inodeId, h);
          }
          this.held.delete(inodeId);
        }
        if (h?.releasing) {
          await sleep(20);
          continue;
        }
        const took = await redis.eval(TAKE_LUA, 2, key, this.dirtyKey(inodeId), serverId, opts.leaseTtlMs, this.c.markPrefix);
        if (took === -1) throw this.jukebox(this.orphaned(inodeId));
        if (took === 1) {
          const taken = Date.now();
          let token: number;
          try {
            if (!this.meta.nextLeaseToken) throw new Error('the metadata store hands out no fencing tokens');
            token = await this.meta.nextLeaseToken();
          } catch (e) {
            await redis.eval(DEL_IF_LUA, 1, key, serverId).catch(() => undefined);
            throw e instanceof VfsError ? e : this.jukebox(`no fencing token: ${(e as Error).message}`);
          }
          // Whatever we knew of the file may have been changed by the previous holder.
          this.meta.invalidateInode?.(inodeId);
          const held: Held = { token, renewedAt: taken, lastUse: taken, releasing: false, marked: false, mark: '', seq: 0 };
          this.held.set(inodeId, held);
          return await this.markDirty(inodeId, held);
        }
        if (Date.now() - asked >= ASK_AGAIN_MS) {
          asked = Date.now();
          await redis.publish(this.c.channel, `${this.storeKey} ${inodeId}`);
        }
      } catch (e) {
        if (e instanceof VfsError) throw e;
        if (Date.now() >= deadline) throw this.jukebox(`Redis: ${(e as Error).message}`);
      }
      await sleep(Math.min(100, 5 * 2 ** Math.min(attempt, 5)));
    }
  }

  private genKey(inodeId: number): string {
    return `${this.c.opts.keyPrefix}gen:${this.storeKey}:${inodeId}`;
  }

  /**
   * Before a read of a file this server does not hold: undefined when nothing is to be done (we
   * hold it), else resolves true when what this server had cached of it may be old (then dropped),
   * after the holder, if another server, stored what it acknowledged. JUKEBOX when it cannot tell.
   */
  fresh(inodeId: number): Promise<boolean> | undefined {
    const h = this.held.get(inodeId);
    if (h && this.usable(h, Date.now())) return undefined;
    // Redis lost between the readiness check and a command (ioredis: "Connection is closed") is
    // the same as Redis away: JUKEBOX, never a server fault.
    return this.freshen(inodeId).catch((e: unknown) => {
      throw e instanceof VfsError ? e : this.jukebox(`Redis: ${(e as Error).message}`);
    });
  }

  /**
   * Before a directory listing answers sizes and times: of `inodeIds`, those another server holds
   * and wrote since they were stored (one MGET for all), each made fresh as for a read; resolves
   * the ids whose cached inode may be old (read them again). What cannot be learned (Redis away, a
   * holder that does not answer) is listed as stored: a listing is not refused for it.
   */
  async freshMany(inodeIds: readonly number[]): Promise<number[]> {
    const now = Date.now();
    const ids = inodeIds.filter((id) => {
      const h = this.held.get(id);
      return !(h && this.usable(h, now));
    });
    if (ids.length === 0 || !this.c.ready) return [];
    let vals: (string | null)[];
    try {
      vals = await this.c.redis.mget(ids.flatMap((id) => [this.key(id), this.dirtyKey(id)]));
    } catch {
      return [];
    }
    const { serverId } = this.c;
    const written = ids.filter((_, i) => {
      const holder = vals[2 * i];
      const dirty = vals[2 * i + 1];
      return holder !== null && holder !== undefined && holder !== serverId && dirty?.startsWith(`${holder}:`) === true;
    });
    const stale = await Promise.all(written.map((id) => this.freshen(id).catch(() => false)));
    return written.filter((_, i) => stale[i]);
  }

  private async freshen(inodeId: number): Promise<boolean> {
    const { redis, serverId } = this.c;
    if (!this.c.ready) throw this.jukebox('Redis is not reachable; cannot prove what this server has of the file is current');
    const deadline = Date.now() + ACQUIRE_WAIT_MS;
    const key = this.key(inodeId);
    const genKey = this.genKey(inodeId);
    const [holder0, gen0, dirty] = await redis.mget(key, genKey, this.dirtyKey(inodeId));
    let [holder, gen] = [holder0, gen0];
    // Nothing is served from the store while a server that went away has newer data.
    this.refuseOrphaned(inodeId, holder, dirty);
    // Held elsewhere and written since it was stored (else what is stored is what it acknowledged).
    if (holder !== null && holder !== undefined && holder !== serverId && dirty?.startsWith(`${holder}:`) === true) {
      // Another server may have acknowledged data it has not stored: it stores it first.
      const before = gen;
      let asked = 0;
      for (;;) {
        if (Date.now() - asked >= ASK_AGAIN_MS) {
          asked = Date.now();
          await redis.publish(this.c.channel, `flush ${this.storeKey} ${inodeId}`);
        }
        await sleep(20);
        let mark: string | null | undefined;
        [holder, gen, mark] = await redis.mget(key, genKey, this.dirtyKey(inodeId));
        // Gone without storing it (its lease expired): as above.
        if (gen === before) this.refuseOrphaned(inodeId, holder, mark);
        if (gen !== before || holder === null || holder === undefined || holder === serverId) break;
        if (Date.now() >= deadline) throw this.jukebox(`file ${inodeId} is written through another server that did not store it in time`);
      }
    }
    const g = gen ?? null;
    if (this.seen.has(inodeId) && this.seen.get(inodeId) === g) return false;
    if (this.seen.size >= MAX_SEEN) this.seen.clear();
    this.seen.set(inodeId, g);
    this.meta.invalidateInode?.(inodeId);
    return true;
  }

  /**
   * After a WAL replay, before any client is served: the leases of the files whose replayed data is
   * not stored yet. Readers on the other servers then ask this one to store it first (and the
   * file's generation goes up when it is stored), instead of reading what the store had before the
   * crash. A file another server holds is handed over first (its newer data stored, so the replayed
   * versions written under older tokens are refused block by block). One that cannot be taken
   * (Redis away, a holder that does not answer) is logged: its data is still uploaded.
   */
  async adopt(inodeIds: readonly number[]): Promise<void> {
    for (const id of inodeIds) this.adopted.add(id);
    const queue = [...inodeIds];
    let failed = 0;
    const worker = async (): Promise<void> => {
      for (let id = queue.pop(); id !== undefined; id = queue.pop()) {
        try {
          await this.token(id);
        } catch (e) {
          failed++;
          if (failed <= 10)
            this.c.opts.log.warn({ inode: id, err: (e as Error).message }, 'replayed data uploaded without the write lease of its file');
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(ADOPT_PARALLEL, queue.length) }, worker));
  }

  /**
   * After every share's replay: the dirty marks a former process on this WAL set and left (it
   * crashed after storing, or its data was stored by the replay's uploads) on files with no replayed
   * data go, since nothing of them is unstored; else readers elsewhere would wait for them until
   * they expire. Returns how many went.
   */
  async clearFormerMarks(): Promise<number> {
    const { redis, serverId, markPrefix, opts } = this.c;
    const head = `${opts.keyPrefix}dirty:${this.storeKey}:`;
    const pattern = `${head.replace(/[*?[\]\\]/g, '\\$&')}*`;
    let cleared = 0;
    let cursor = '0';
    for (let i = 0; i < MAX_SCAN_CALLS; i++) {
      const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      for (const key of keys) {
        const inode = Number(key.slice(head.length));
        if (!Number.isSafeInteger(inode) || this.adopted.has(inode) || this.held.has(inode)) continue;
        const mark = await redis.get(key);
        if (mark === null || !mark.startsWith(markPrefix) || mark.startsWith(`${serverId}:`)) continue;
        cleared += Number(await redis.eval(DEL_IF_LUA, 1, key, mark));
      }
      cursor = next;
      if (cursor === '0') break;
    }
    return cleared;
  }

  /**
   * True while the lease is held under `token`, not being handed over, and the file is marked
   * dirty: a write logged now is one that readers elsewhere ask this server to store. A write that
   * took its token before another server's read had the file stored (flushAndRelease clears
   * `marked` and deletes the mark), and is logged after it (it waited for a truncate, for WAL
   * room), would otherwise be acknowledged unmarked: the next read elsewhere took the store's
   * older bytes for current. And while the lease is usable (renewed lately), as token() asks: a
   * write or truncate that waited (up to maxWriteWaitMs for WAL room) while this server lost Redis
   * may come after the lease lapsed and another server took it (Redis lost its keys, the mark
   * too); heldUnder() then has token() renew it (the same token) or take it again (JUKEBOX).
   */
  holds(inodeId: number, token: number): boolean {
    const h = this.held.get(inodeId);
    return h !== undefined && h.token === token && h.marked && this.usable(h, Date.now());
  }

  /** True while the lease is held under `token` and not being handed over, marked or not. */
  heldUnder(inodeId: number, token: number): boolean {
    const h = this.held.get(inodeId);
    return h !== undefined && h.token === token && !h.releasing;
  }

  /** Another server asks for a file we hold: store its data, then (unless only `flush`) let the lease go. */
  handOver(inodeId: number, flushOnly = false): void {
    const h = this.held.get(inodeId);
    if (!h || this.handing.has(inodeId)) return;
    this.handing.add(inodeId);
    if (!flushOnly) h.releasing = true;
    void this.flushAndRelease(inodeId, h, !flushOnly).finally(() => this.handing.delete(inodeId));
  }

  private async flushAndRelease(inodeId: number, h: Held, release: boolean): Promise<void> {
    // A write acknowledged from now on marks the file again (and that mark is not the one deleted).
    const mark = h.mark;
    // Kept (below): as it was. A mark a read elsewhere had deleted (h.mark stays the last one set)
    // is not in Redis: taken for set, the next write would be acknowledged with nobody told.
    const marked = h.marked;
    h.marked = false;
    try {
      for (const p of this.participants) await p.flush(inodeId);
      await this.meta.flushAttrs?.(inodeId);
      await this.stored(inodeId, mark, release);
      if (release && this.held.get(inodeId) === h) this.held.delete(inodeId);
    } catch (e) {
      // Kept (the data could not be stored): the asker waits, then answers JUKEBOX.
      if (h.mark === mark) h.marked = marked;
      h.releasing = false;
      this.c.opts.log.warn({ inode: inodeId, err: (e as Error).message }, 'could not hand a write lease over; keeping it');
    }
  }

  /** The file's data is stored: its generation goes up, `mark` (if still the mark) goes, and with `release` the lease. */
  private async stored(inodeId: number, mark: string, release: boolean): Promise<void> {
    await this.c.redis.eval(
      STORED_LUA,
      3,
      this.key(inodeId),
      this.genKey(inodeId),
      this.dirtyKey(inodeId),
      this.c.serverId,
      GENERATION_TTL_MS,
      release ? '1' : '0',
      mark,
    );
  }

  private dirty(inodeId: number): boolean {
    for (const p of this.participants) if (p.hasDirty(inodeId)) return true;
    return false;
  }

  /** Renews the leases in use (or with data to store) and lets the idle clean ones go. */
  async renew(): Promise<void> {
    if (!this.c.ready) return;
    const { redis, serverId, opts } = this.c;
    const now = Date.now();
    const idleMs = opts.leaseTtlMs / 3;
    let over = this.held.size - MAX_HELD;
    for (const [inodeId, h] of [...this.held]) {
      if (h.releasing) continue;
      const key = this.key(inodeId);
      if ((over > 0 || now - h.lastUse > idleMs) && !this.dirty(inodeId)) {
        this.held.delete(inodeId);
        over--;
        await this.meta.flushAttrs?.(inodeId);
        await this.stored(inodeId, h.mark, true);
        continue;
      }
      if ((await redis.eval(RENEW_LUA, 1, key, serverId, opts.leaseTtlMs)) === 1) {
        h.renewedAt = Date.now();
        // The mark outlives nothing it stands for: renewed with the lease while set.
        if (h.marked) await redis.pexpire(this.dirtyKey(inodeId), GENERATION_TTL_MS);
      } else if (this.held.get(inodeId) === h) {
        this.held.delete(inodeId);
        opts.log.warn({ inode: inodeId, token: h.token }, 'write lease lost (expired, or Redis lost it); the next write takes a new one');
      }
    }
  }

  unconfirmAll(): void {
    for (const h of this.held.values()) h.renewedAt = 0;
  }

  dropAll(): void {
    this.held.clear();
  }

  async releaseAll(): Promise<void> {
    const { redis, serverId } = this.c;
    for (const [inodeId, h] of [...this.held]) {
      this.held.delete(inodeId);
      // The shares closed first: what they stored takes its dirty mark with the lease (else the
      // others would wait for this server to come back); what they could not store keeps it.
      if (!this.dirty(inodeId)) await this.stored(inodeId, h.mark, true);
      else await redis.eval(DEL_IF_LUA, 1, this.key(inodeId), serverId);
    }
  }
}
