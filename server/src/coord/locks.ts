// The lock manager's state across servers (issue 14; DESIGN.md "Several replicas"): share modes,
// delete-pending and byte-range locks of the opens of every server that serves a store, in Redis,
// behind the seam of vfs/locks/cluster.ts. Each server keeps its own state in memory as before and
// registers it here; Lua scripts check and change a file's entries atomically:
//
//   <prefix>opens:<store>:<inode>  hash  <incarnation>|<n> = "<access> <share>",  dp = 1 (delete-pending)
//   <prefix>brl:<store>:<inode>    hash  <incarnation>|<n> = "<first> <last> <x|s>"  (16 hex digits each)
//   <prefix>live:<incarnation>     a liveness key (PX lease_ttl), renewed every lease_ttl / 3
//
// An entry counts only while its incarnation's liveness key exists: the entries of a server that
// died (SIGKILL, a lost node) stop counting within lease_ttl, and any script that meets them deletes
// them (the rest: a sweep, see watchServers). An incarnation is `<server id>#<epoch>`: when this server finds its liveness key gone (Redis
// restarted empty, or it was away longer than the ttl), or could not delete an entry, it starts a
// new epoch and registers everything it holds again, so nothing it let go of can count again.
//
// A server grants nothing here unless its liveness key was renewed less than two thirds of the ttl
// ago and Redis answers: otherwise VfsError JUKEBOX (NFS3ERR_JUKEBOX, STATUS_NETWORK_BUSY).
//
// Byte-range locks are checked by I/O too, a hot path: a script that grants a lock publishes
// `l <incarnation> <store> <inode>` (before it answers, so before the LOCK is answered) on
// <prefix>locks, and a READ or WRITE asks Redis only for files another server announced (a Map
// lookup otherwise). While the subscriber connection cannot prove it heard everything, every I/O of
// a shared store asks Redis; when it is back, the announcements are rebuilt from the keys (SCAN).
// Unlocks publish `u <store> <inode>`: blocking locks waiting here try again.
//
// Oplocks and leases: a server whose client was granted caching on a file registers itself in
//   <prefix>cache:<store>:<inode>  hash  <incarnation> = 1
// and announces it (`c <incarnation> <store> <inode>`) before the CREATE is answered. A server
// about to open, write, truncate, remove or rename a file announced by another asks each live
// server of that hash (`b <target> <request id> <store> <inode> <keep>`) to break its clients'
// caching down to `keep`, and waits for `a <request id>` (or the break timeout, after which the
// holder has lost its caching anyway); the holder leaves the hash when nothing caches the file there.
//
// Every renewal also reads the set of servers and their expiries: when another server's passes (it died, stopped, or lost
// Redis for longer than the ttl, maybe right after a change it could not publish), the metadata
// caches here forget everything, which bounds that stale window to the ttl and one renewal period.
//
// The scripts read liveness keys they are not given as KEYS: a single Redis (or a primary with
// replicas), not Redis Cluster.
import type { Redis as RedisClient } from 'ioredis';
import type { Logger } from 'pino';
import { VfsError } from '../vfs/errors.js';
import type { ClusterLocks, RangeLock, RemoteOpenOutcome } from '../vfs/locks/cluster.js';
import type { MetadataStore } from '../meta/store.js';
import type { Coordinator } from './leases.js';

/** Files announced as locked by another server, remembered at most (past it: every I/O asks Redis). */
const MAX_ANNOUNCED = 100_000;
/** Servers looked at on a renewal (past it: those beyond are not watched). */
const MAX_SERVERS = 10_000;
/** A server that did not renew for this many ttls leaves the watched set. */
const FORGET_SERVERS_AFTER = 10;
/** Keys looked at when the announcements are rebuilt (past it: every I/O asks Redis until the next). */
const MAX_REBUILD_KEYS = 100_000;

/** Shared by the scripts: is the entry `f` alive (its incarnation's liveness key exists)? */
const LUA_ALIVE = `
local alive_cache = {}
local function alive(f)
  local inc = string.match(f, '^([^|]+)|')
  if inc == nil then return false end
  if inc == ARGV[2] then return true end
  local v = alive_cache[inc]
  if v == nil then
    v = redis.call('exists', ARGV[1] .. inc) == 1
    alive_cache[inc] = v
  end
  return v
end
local function mine(f) return string.sub(f, 1, #ARGV[2] + 1) == ARGV[2] .. '|' end
`;

/** MS-FSA 2.1.5.1.2.1 (vfs/locks/opens.ts sharingConflict) in Lua. */
const LUA_SHARING = `
local function sharing(a, s, ea, es)
  if bit.band(a, 0x10027) == 0 or bit.band(ea, 0x10027) == 0 then return false end
  if bit.band(a, 0x21) ~= 0 and bit.band(es, 1) == 0 then return true end
  if bit.band(a, 0x6) ~= 0 and bit.band(es, 2) == 0 then return true end
  if bit.band(a, 0x10000) ~= 0 and bit.band(es, 4) == 0 then return true end
  if bit.band(ea, 0x21) ~= 0 and bit.band(s, 1) == 0 then return true end
  if bit.band(ea, 0x6) ~= 0 and bit.band(s, 2) == 0 then return true end
  if bit.band(ea, 0x10000) ~= 0 and bit.band(s, 4) == 0 then return true end
  return false
end
local function sharing_of(v, a, s)
  local sp = string.find(v, ' ', 1, true)
  return sharing(a, s, tonumber(string.sub(v, 1, sp - 1)), tonumber(string.sub(v, sp + 1)))
end
`;

/** Scans the other servers' live open entries: dp (delete-pending with a live open), and a conflict with ARGV[3]/ARGV[4]. */
const LUA_SCAN_OPENS = `
local h = redis.call('hgetall', KEYS[1])
local a, s = tonumber(ARGV[3]), tonumber(ARGV[4])
local dp, any, conflict = false, false, false
for i = 1, #h, 2 do
  local f, v = h[i], h[i + 1]
  if f == 'dp' then dp = true
  elseif not alive(f) then redis.call('hdel', KEYS[1], f)
  else
    any = true
    if not mine(f) and sharing_of(v, a, s) then conflict = true end
  end
end
if dp and not any then redis.call('hdel', KEYS[1], 'dp'); dp = false end
`;

/** ARGV: live prefix, incarnation, access, share, field. */
const OPEN_ADD = `${LUA_ALIVE}${LUA_SHARING}${LUA_SCAN_OPENS}
if dp then return 'dp' end
if conflict then return 'sv' end
redis.call('hset', KEYS[1], ARGV[5], ARGV[3] .. ' ' .. ARGV[4])
return 'ok'`;

/** ARGV: live prefix, incarnation, access, share. 1 when another server's open conflicts. */
const OPEN_CONFLICT = `${LUA_ALIVE}${LUA_SHARING}${LUA_SCAN_OPENS}
if conflict then return 1 end
return 0`;

/**
 * ARGV: live prefix, incarnation, 0, 0 (an access that conflicts with nothing). 1 when the file is
 * delete-pending: the flag counts only while a live open of any server is left, as in the scripts
 * above (a dead server's entries are deleted, and then a flag no live open is left to act on).
 */
const OPEN_DELETE_PENDING = `${LUA_ALIVE}${LUA_SHARING}${LUA_SCAN_OPENS}
if dp then return 1 end
return 0`;

/** ARGV: live prefix, incarnation. 1 when another server has a live open of the file (dead ones are deleted). */
const OPEN_ELSEWHERE = `${LUA_ALIVE}
for _, f in ipairs(redis.call('hkeys', KEYS[1])) do
  if f ~= 'dp' and not mine(f) then
    if alive(f) then return 1 end
    redis.call('hdel', KEYS[1], f)
  end
end
return 0`;

/** ARGV: live prefix, incarnation, field, 1 when the file is delete-pending. 1: the last open, delete it. */
const OPEN_RELEASE = `${LUA_ALIVE}
redis.call('hdel', KEYS[1], ARGV[3])
if ARGV[4] == '1' then redis.call('hset', KEYS[1], 'dp', '1') end
local h = redis.call('hgetall', KEYS[1])
local dp, any = false, false
for i = 1, #h, 2 do
  local f = h[i]
  if f == 'dp' then dp = true
  elseif alive(f) then any = true
  else redis.call('hdel', KEYS[1], f) end
end
if any then return 0 end
redis.call('del', KEYS[1])
if dp then return 1 end
return 0`;

/** A byte-range entry's value against a request: do they conflict (MS-FSA 2.1.4.10, different owners)? */
const LUA_RANGES = `
local function overlaps(v, first, last, x)
  local lf, ll, lx = string.match(v, '^(%x+) (%x+) (%a)$')
  if lf == nil then return false end
  if first > ll or last < lf then return false end
  return lx == 'x' or x == 'x'
end
`;

/**
 * ARGV: live prefix, incarnation, channel, announcement, then field first last x|s for each lock.
 * 1: all registered (announced); 0: another server's live lock conflicts, nothing registered.
 */
const RANGE_ADD = `${LUA_ALIVE}${LUA_RANGES}
local h = redis.call('hgetall', KEYS[1])
for i = 1, #h, 2 do
  local f, v = h[i], h[i + 1]
  if not mine(f) then
    if not alive(f) then redis.call('hdel', KEYS[1], f)
    else
      for j = 5, #ARGV, 4 do
        if overlaps(v, ARGV[j + 1], ARGV[j + 2], ARGV[j + 3]) then return 0 end
      end
    end
  end
end
for j = 5, #ARGV, 4 do redis.call('hset', KEYS[1], ARGV[j], ARGV[j + 1] .. ' ' .. ARGV[j + 2] .. ' ' .. ARGV[j + 3]) end
redis.call('publish', ARGV[3], ARGV[4])
return 1`;

/** ARGV: live prefix, incarnation, first, last, x|s. 1: conflict; 0: none; 2: no other server holds a lock on the file. */
const RANGE_CHECK = `${LUA_ALIVE}${LUA_RANGES}
local h = redis.call('hgetall', KEYS[1])
local others = false
for i = 1, #h, 2 do
  local f, v = h[i], h[i + 1]
  if not mine(f) then
    if not alive(f) then redis.call('hdel', KEYS[1], f)
    else
      others = true
      if overlaps(v, ARGV[3], ARGV[4], ARGV[5]) then return 1 end
    end
  end
end
if others then return 0 end
return 2`;

/** ARGV: live prefix, incarnation, channel, announcement. Registers this server as caching the file, announces it. */
const CACHE_ADD = `redis.call('hset', KEYS[1], ARGV[2], '1')
redis.call('publish', ARGV[3], ARGV[4])
return 1`;

/** ARGV: live prefix, incarnation. The other live servers caching the file (dead ones are deleted). */
const CACHE_OTHERS = `${LUA_ALIVE}
local out = {}
for _, f in ipairs(redis.call('hkeys', KEYS[1])) do
  if f ~= ARGV[2] then
    if redis.call('exists', ARGV[1] .. f) == 1 then out[#out + 1] = f else redis.call('hdel', KEYS[1], f) end
  end
end
return out`;

/** ARGV: channel, message, fields. */
const RANGE_DROP = `redis.call('hdel', KEYS[1], unpack(ARGV, 3))
if redis.call('hlen', KEYS[1]) == 0 then redis.call('del', KEYS[1]) end
redis.call('publish', ARGV[1], ARGV[2])
return 1`;

/**
 * ARGV: live prefix. Deletes the entries of dead incarnations from one hash (opens, brl: `<inc>|<n>`;
 * cache: `<inc>`), and a delete-pending no live open is left to act on, as the scripts above do
 * when they meet them. The hash is gone once nothing is left.
 */
const SWEEP = `
local alive_cache = {}
local any, dp = false, false
for _, f in ipairs(redis.call('hkeys', KEYS[1])) do
  if f == 'dp' then dp = true
  else
    local inc = string.match(f, '^([^|]+)|') or f
    local v = alive_cache[inc]
    if v == nil then
      v = redis.call('exists', ARGV[1] .. inc) == 1
      alive_cache[inc] = v
    end
    if v then any = true else redis.call('hdel', KEYS[1], f) end
  end
end
if dp and not any then redis.call('hdel', KEYS[1], 'dp') end
return 0`;

interface LockScripts {
  dittoOpenAdd(key: string, ...argv: string[]): Promise<string>;
  dittoOpenConflict(key: string, ...argv: string[]): Promise<number>;
  dittoOpenRelease(key: string, ...argv: string[]): Promise<number>;
  dittoOpenDeletePending(key: string, ...argv: string[]): Promise<number>;
  dittoOpenElsewhere(key: string, ...argv: string[]): Promise<number>;
  dittoRangeAdd(key: string, ...argv: string[]): Promise<number>;
  dittoRangeCheck(key: string, ...argv: string[]): Promise<number>;
  dittoRangeDrop(key: string, ...argv: string[]): Promise<number>;
  dittoCacheAdd(key: string, ...argv: string[]): Promise<number>;
  dittoCacheOthers(key: string, ...argv: string[]): Promise<string[]>;
  dittoSweep(key: string, livePrefix: string): Promise<number>;
}

/** One entry this server registered: its hash, its number (the field is `<incarnation>|<n>`), its value. */
interface Entry {
  key: string;
  n: number;
  value: string;
}

const hex64 = (v: bigint): string => v.toString(16).padStart(16, '0');

/** The first and last byte of a range as the scripts compare them; null for {0, 0} (conflicts with nothing). */
function bounds(offset: bigint, length: bigint): [string, string] | null {
  if (offset === 0n && length === 0n) return null;
  // A zero-length range at X is the point between X - 1 and X: first X, last X - 1.
  return [hex64(offset), hex64(offset + length - 1n)];
}

/** `<store key>:<inode>` (a key's tail) as announcements name a file: `<store key> <inode>`. */
function spaced(f: string): string {
  const at = f.lastIndexOf(':');
  return `${f.slice(0, at)} ${f.slice(at + 1)}`;
}

const unreachable = (e: unknown): VfsError =>
  e instanceof VfsError ? e : new VfsError('JUKEBOX', `the cluster lock state (Redis) is not reachable: ${(e as Error).message}`);

export class RedisClusterLocks implements ClusterLocks {
  private readonly redis: RedisClient & LockScripts;
  private readonly prefix: string;
  private readonly ttl: number;
  private epoch = 0;
  private inc: string;
  /** Date.now() of the last renewal of the liveness key (0: not proven alive). */
  private renewedAt = 0;
  private needResync = false;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private nextN = 1;
  /** Metadata store object -> its name in keys (the same on every server); weak: a closed store (its share removed) goes. */
  private readonly stores = new WeakMap<object, string>();
  private readonly storesByKey = new Map<string, object>();
  /** Everything this server registered, by the object it stands for (an open record or a lock). */
  private readonly entries = new Map<object, Entry>();
  /** `<store> <inode>` -> announcements heard: another server may hold byte-range locks on it. */
  private readonly announced = new Map<string, number>();
  /** False until the announcements are known complete (after a subscriber outage: rebuilt). */
  private announcedComplete = true;
  /** Settles once this turn of the event loop's ready I/O callbacks have run (afterThisTurn), else null. */
  private nextTurn: Promise<void> | null = null;
  private rebuilding = false;
  /** No rebuild starts before this Date.now() (one per renewal period: see rebuild()). */
  private rebuildAfter = 0;
  private readonly releasedListeners: ((store: object, inodeId: number) => void)[] = [];
  /** `<store> <inode>` -> announcements heard: another server's clients may cache the file. */
  private readonly cachedElsewhere = new Map<string, number>();
  /** `<store key>:<inode>` of the files this server registered as caching (registered again by a resync). */
  private readonly caching = new Set<string>();
  private breakHandler: ((store: object, inodeId: number, keep: number) => Promise<boolean>) | null = null;
  /** Break requests of this server waiting for acknowledgments, by request id. */
  private readonly breaking = new Map<string, () => void>();
  private nextRequest = 1;
  /** The incarnations whose liveness keys the last renewal saw. */
  private servers = new Set<string>();
  private renewing = false;
  /** Resyncs so far: a refusal that overlapped one must delete what the resync registered. */
  private resyncs = 0;

  private constructor(
    private readonly c: Coordinator,
    private readonly log: Logger,
    /** The servers' oplock break timeout (adapters.smb.oplock_break_timeout): a remote break waits this long and a little. */
    private readonly breakTimeoutMs: number,
  ) {
    this.redis = c.redis as RedisClient & LockScripts;
    this.prefix = c.opts.keyPrefix;
    this.ttl = c.opts.leaseTtlMs;
    this.inc = `${c.serverId}#0`;
  }

  static async open(c: Coordinator, log: Logger, breakTimeoutMs: number): Promise<RedisClusterLocks> {
    const l = new RedisClusterLocks(c, log, breakTimeoutMs);
    const r = c.redis;
    r.defineCommand('dittoOpenAdd', { numberOfKeys: 1, lua: OPEN_ADD });
    r.defineCommand('dittoOpenConflict', { numberOfKeys: 1, lua: OPEN_CONFLICT });
    r.defineCommand('dittoOpenRelease', { numberOfKeys: 1, lua: OPEN_RELEASE });
    r.defineCommand('dittoOpenDeletePending', { numberOfKeys: 1, lua: OPEN_DELETE_PENDING });
    r.defineCommand('dittoOpenElsewhere', { numberOfKeys: 1, lua: OPEN_ELSEWHERE });
    r.defineCommand('dittoRangeAdd', { numberOfKeys: 1, lua: RANGE_ADD });
    r.defineCommand('dittoRangeCheck', { numberOfKeys: 1, lua: RANGE_CHECK });
    r.defineCommand('dittoRangeDrop', { numberOfKeys: 1, lua: RANGE_DROP });
    r.defineCommand('dittoCacheAdd', { numberOfKeys: 1, lua: CACHE_ADD });
    r.defineCommand('dittoCacheOthers', { numberOfKeys: 1, lua: CACHE_OTHERS });
    r.defineCommand('dittoSweep', { numberOfKeys: 1, lua: SWEEP });
    await c.listen(l.channel, (msg) => l.onMessage(msg));
    await l.renew();
    l.timer = setInterval(() => void l.renew(), Math.max(100, Math.floor(l.ttl / 3)));
    l.timer.unref();
    r.on('ready', l.onReady);
    return l;
  }

  /**
   * Connected again: renewed at once rather than at the next tick (up to a third of the ttl later).
   * After Redis lost its keys, that registers this server's opens and locks again as soon as it can,
   * well within the others' grace (see RECONNECT_LAG_MS in coord/leases.ts).
   */
  private readonly onReady = (): void => void this.renew();

  private get channel(): string {
    return `${this.prefix}locks`;
  }

  private get livePrefix(): string {
    return `${this.prefix}live:`;
  }

  /** Makes a store's lock state shared under `storeKey` (coord/leases.ts: the same on every server). */
  bindStore(store: object, storeKey: string): void {
    this.stores.set(store, storeKey);
    this.storesByKey.set(storeKey, store);
  }

  shares(store: object): boolean {
    return this.stores.has(store);
  }

  private storeKey(store: object): string {
    const k = this.stores.get(store);
    if (k === undefined) throw new Error('a store whose lock state is not shared');
    return k;
  }

  private field(e: Entry): string {
    return `${this.inc}|${e.n}`;
  }

  /**
   * Throws JUKEBOX unless this server is surely still counted alive by the others, and no state the
   * others may still have to register again (after Redis lost its keys) can be missing for `store`.
   */
  private async mustBeAlive(store: object | undefined): Promise<void> {
    const now = Date.now();
    if (this.closed || !this.c.ready || now - this.renewedAt > (this.ttl * 2) / 3)
      throw new VfsError('JUKEBOX', 'the cluster lock state (Redis) is not reachable');
    // After Redis lost its keys, the others register their state again within the grace: nothing is granted before.
    if (now < this.c.graceUntil && !(store !== undefined && (await this.graceNotNeeded(store))))
      throw new VfsError('JUKEBOX', 'the cluster lock state (Redis) is being rebuilt after Redis lost its keys');
  }

  /** Per store: the grace period (graceUntil) it was last checked for, and whether it may skip it. */
  private readonly graceChecked = new WeakMap<object, { until: number; skip: boolean }>();
  /** Per store: this process's mark that it keeps lock state of the store (once per process). */
  private readonly marked = new WeakMap<object, Promise<void>>();

  /**
   * A store whose fencing-token sequence never handed out a token never had lock state in Redis (a
   * server marks a store, by taking a token, before it registers its first entry), so nothing of it
   * can be missing: a new deployment grants its first opens at once instead of after the grace.
   */
  private async graceNotNeeded(store: object): Promise<boolean> {
    const until = this.c.graceUntil;
    const seen = this.graceChecked.get(store);
    if (seen?.until === until) return seen.skip;
    let skip = false;
    try {
      const meta = store as Partial<Pick<MetadataStore, 'leaseTokensIssued'>>;
      skip = meta.leaseTokensIssued !== undefined && !(await meta.leaseTokensIssued());
    } catch {
      skip = false; // cannot tell: wait the grace period out
    }
    this.graceChecked.set(store, { until, skip });
    return skip;
  }

  /** Marks `store` as having lock state (see graceNotNeeded) before this process registers any. */
  private mark(store: object): Promise<void> {
    let p = this.marked.get(store);
    if (p === undefined) {
      const meta = store as Partial<Pick<MetadataStore, 'nextLeaseToken'>>;
      p = meta.nextLeaseToken ? meta.nextLeaseToken().then(() => undefined) : Promise.resolve();
      this.marked.set(store, p);
      p.catch(() => {
        if (this.marked.get(store) === p) this.marked.delete(store); // tried again by the next registration
      });
    }
    return p;
  }

  // ---- liveness ---------------------------------------------------------------------------------

  /** Renews the liveness key; a new epoch (everything registered again) when it was gone or an entry could not be deleted. */
  private async renew(): Promise<void> {
    if (this.closed || !this.c.ready || this.renewing) return;
    this.renewing = true;
    try {
      if (!this.needResync && this.renewedAt !== 0) {
        // The liveness key, and this server's expiry in the set the others watch (one round trip).
        const now = Date.now();
        const res = await this.redis
          .multi()
          .set(this.livePrefix + this.inc, '1', 'PX', this.ttl, 'XX')
          .zadd(this.serversKey, now + this.ttl, this.inc)
          .zremrangebyscore(this.serversKey, '-inf', now - FORGET_SERVERS_AFTER * this.ttl)
          .zrange(this.serversKey, 0, MAX_SERVERS, 'WITHSCORES')
          .exec();
        if (res?.[0]?.[1] === 'OK') {
          this.renewedAt = now;
          this.watchServers(now, res[3]?.[1] as string[] | undefined);
          return;
        }
        this.log.warn(
          'cluster locks: this server was counted as gone (Redis restarted or unreachable for longer than lease_ttl); registering its locks again',
        );
      }
      await this.resync();
    } catch (e) {
      this.log.debug({ err: (e as Error).message }, 'cluster locks: could not renew the liveness key');
    } finally {
      this.renewing = false;
    }
  }

  private get serversKey(): string {
    return `${this.prefix}servers`;
  }

  /**
   * The other servers with their expiries (`<prefix>servers`, a sorted set each renews its entry
   * in), looked at on every renewal: one that did not renew in time (it died, stopped, or lost
   * Redis for longer than the ttl) may have committed a change it could not publish
   * (coord/coherence.ts), so the metadata caches here forget everything. That bounds the stale
   * window of a server that lost Redis right after a change to the ttl and one renewal period.
   */
  private watchServers(now: number, flat: string[] | undefined): void {
    if (!Array.isArray(flat)) return;
    const live = new Set<string>();
    for (let i = 0; i + 1 < flat.length; i += 2) if (Number(flat[i + 1]) >= now) live.add(flat[i]!);
    let gone = false;
    for (const inc of this.servers) if (!live.has(inc) && !inc.startsWith(`${this.c.serverId}#`)) gone = true;
    this.servers = live;
    if (gone) {
      this.log.info('cluster locks: another server is gone from Redis; the metadata caches are read again');
      this.c.dropAllCaches();
      // Its entries count no more, but stay in the hashes of files nobody opens or locks again
      // (the scripts delete them only when they meet them): one server, the first of the live
      // ones, sweeps them once the gone server's liveness key surely expired.
      let first = this.inc;
      for (const inc of live) if (inc < first) first = inc;
      if (first === this.inc) setTimeout(() => void this.sweep(), this.ttl).unref();
    }
  }

  private sweeping = false;

  /** Deletes dead incarnations' entries from every lock hash (up to MAX_REBUILD_KEYS of each kind). */
  private async sweep(): Promise<void> {
    if (this.sweeping || this.closed) return;
    this.sweeping = true;
    try {
      for (const kind of ['opens', 'brl', 'cache']) {
        let cursor = '0';
        let seen = 0;
        do {
          const [next, keys] = await this.redis.scan(cursor, 'MATCH', `${this.prefix}${kind}:*`, 'COUNT', 1000);
          cursor = next;
          await Promise.all(keys.map((k) => this.redis.dittoSweep(k, this.livePrefix)));
          seen += keys.length;
        } while (cursor !== '0' && seen < MAX_REBUILD_KEYS && !this.closed);
      }
    } catch (e) {
      this.log.debug({ err: (e as Error).message }, 'cluster locks: could not sweep the entries of gone servers');
    } finally {
      this.sweeping = false;
    }
  }

  private async resync(): Promise<void> {
    const old = this.inc;
    this.renewedAt = 0;
    this.inc = `${this.c.serverId}#${++this.epoch}`;
    this.needResync = false;
    this.resyncs++;
    try {
      // The key may expire a ttl after it was sent, not after the answer came (as renew() counts).
      const sent = Date.now();
      const p = this.redis.pipeline();
      p.set(this.livePrefix + this.inc, '1', 'PX', this.ttl);
      p.zadd(this.serversKey, sent + this.ttl, this.inc);
      p.zrem(this.serversKey, old);
      const ranges = `${this.prefix}brl:`;
      const lockedFiles = new Set<string>();
      for (const e of this.entries.values()) {
        p.hset(e.key, this.field(e), e.value);
        if (e.key.startsWith(ranges)) lockedFiles.add(e.key.slice(ranges.length));
      }
      for (const f of this.caching) p.hset(`${this.prefix}cache:${f}`, this.inc, '1');
      // The old incarnation's entries (one that could not be deleted among them) stop counting now.
      p.del(this.livePrefix + old);
      // Announced again: while this server counted as gone, the others forgot its files (a check
      // found no live lock or caching there), and would not ask Redis about them any more.
      for (const f of lockedFiles) p.publish(this.channel, `l ${this.inc} ${spaced(f)}`);
      for (const f of this.caching) p.publish(this.channel, `c ${this.inc} ${spaced(f)}`);
      const res = await p.exec();
      for (const [err] of res ?? []) if (err) throw err;
      this.renewedAt = sent;
    } catch (e) {
      this.needResync = true;
      throw e;
    }
  }

  // ---- opens ------------------------------------------------------------------------------------

  private openKey(store: object, inodeId: number): string {
    return `${this.prefix}opens:${this.storeKey(store)}:${inodeId}`;
  }

  async addOpen(store: object, inodeId: number, rec: object, access: number, shareAccess: number): Promise<RemoteOpenOutcome> {
    await this.mustBeAlive(store);
    await this.mark(store);
    const e: Entry = { key: this.openKey(store, inodeId), n: this.nextN++, value: `${access >>> 0} ${shareAccess >>> 0}` };
    // Registered before the script runs: a resync meanwhile writes it too (deleted below if refused).
    this.entries.set(rec, e);
    const resyncs = this.resyncs;
    let r: string;
    try {
      r = await this.redis.dittoOpenAdd(e.key, this.livePrefix, this.inc, String(access >>> 0), String(shareAccess >>> 0), this.field(e));
    } catch (err) {
      this.entries.delete(rec);
      this.needResync = true;
      throw unreachable(err);
    }
    if (r === 'ok') return 'ok';
    this.entries.delete(rec);
    await this.unregister(resyncs, [e]);
    return r === 'dp' ? 'delete-pending' : 'sharing-violation';
  }

  async releaseOpen(store: object, inodeId: number, rec: object, deletePending: boolean): Promise<boolean> {
    const e = this.entries.get(rec);
    if (!e) return false;
    this.entries.delete(rec);
    try {
      const r = await this.redis.dittoOpenRelease(e.key, this.livePrefix, this.inc, this.field(e), deletePending ? '1' : '0');
      return r === 1;
    } catch (err) {
      // Its entry must not keep counting: a new epoch at the next renewal. A delete-on-close file is
      // left in place (the other servers' opens cannot be known now).
      this.needResync = true;
      this.log.warn({ err: (err as Error).message, inodeId }, 'cluster locks: could not release an open in Redis');
      return false;
    }
  }

  async setDeletePending(store: object, inodeId: number, pending: boolean): Promise<void> {
    await this.mustBeAlive(store);
    const key = this.openKey(store, inodeId);
    try {
      if (pending) await this.redis.hset(key, 'dp', '1');
      else await this.redis.hdel(key, 'dp');
    } catch (err) {
      throw unreachable(err);
    }
  }

  async isDeletePending(store: object, inodeId: number): Promise<boolean> {
    await this.mustBeAlive(store);
    try {
      return (await this.redis.dittoOpenDeletePending(this.openKey(store, inodeId), this.livePrefix, this.inc, '0', '0')) === 1;
    } catch (err) {
      throw unreachable(err);
    }
  }

  async anyOpenElsewhere(store: object, inodeId: number): Promise<boolean> {
    await this.mustBeAlive(store);
    try {
      return (await this.redis.dittoOpenElsewhere(this.openKey(store, inodeId), this.livePrefix, this.inc)) === 1;
    } catch (err) {
      throw unreachable(err);
    }
  }

  async remoteConflict(store: object, inodeId: number, access: number, shareAccess: number): Promise<boolean> {
    await this.mustBeAlive(store);
    try {
      return (
        (await this.redis.dittoOpenConflict(
          this.openKey(store, inodeId),
          this.livePrefix,
          this.inc,
          String(access >>> 0),
          String(shareAccess >>> 0),
        )) === 1
      );
    } catch (err) {
      throw unreachable(err);
    }
  }

  // ---- byte ranges ------------------------------------------------------------------------------

  private rangeKey(store: object, inodeId: number): string {
    return `${this.prefix}brl:${this.storeKey(store)}:${inodeId}`;
  }

  async addRanges(store: object, inodeId: number, locks: readonly RangeLock[]): Promise<boolean> {
    await this.mustBeAlive(store);
    await this.mark(store);
    const key = this.rangeKey(store, inodeId);
    const argv = [this.livePrefix, this.inc, this.channel, `l ${this.inc} ${this.storeKey(store)} ${inodeId}`];
    const added: object[] = [];
    for (const l of locks) {
      const b = bounds(l.offset, l.length);
      if (b === null) continue;
      const e: Entry = { key, n: this.nextN++, value: `${b[0]} ${b[1]} ${l.exclusive ? 'x' : 's'}` };
      this.entries.set(l, e);
      added.push(l);
      argv.push(this.field(e), b[0], b[1], l.exclusive ? 'x' : 's');
    }
    if (added.length === 0) return true;
    const resyncs = this.resyncs;
    let r: number;
    try {
      r = await this.redis.dittoRangeAdd(key, ...argv);
    } catch (err) {
      for (const l of added) this.entries.delete(l);
      this.needResync = true;
      throw unreachable(err);
    }
    if (r === 1) return true;
    const refused: Entry[] = [];
    for (const l of added) {
      refused.push(this.entries.get(l)!);
      this.entries.delete(l);
    }
    await this.unregister(resyncs, refused);
    return false;
  }

  /**
   * Entries refused by a script that a resync overlapped: the resync wrote them under the new
   * incarnation unchecked, where they would count until the next epoch. Not deleted: a new epoch.
   */
  private async unregister(resyncs: number, refused: readonly Entry[]): Promise<void> {
    if (this.resyncs === resyncs || refused.length === 0) return;
    try {
      await this.redis.hdel(refused[0]!.key, ...refused.map((e) => this.field(e)));
    } catch {
      this.needResync = true;
    }
  }

  async dropRanges(store: object, inodeId: number, locks: readonly RangeLock[]): Promise<void> {
    const fields: string[] = [];
    let key = '';
    for (const l of locks) {
      const e = this.entries.get(l);
      if (!e) continue;
      this.entries.delete(l);
      fields.push(this.field(e));
      key = e.key;
    }
    if (fields.length === 0) return;
    try {
      await this.redis.dittoRangeDrop(key, this.channel, `u ${this.storeKey(store)} ${inodeId}`, ...fields);
    } catch (err) {
      this.needResync = true;
      this.log.warn({ err: (err as Error).message, inodeId }, 'cluster locks: could not release byte-range locks in Redis');
    }
  }

  ioConflict(store: object, inodeId: number, offset: number, length: number, write: boolean): Promise<boolean> | null {
    if (length === 0) return null;
    const storeKey = this.stores.get(store);
    if (storeKey === undefined) return null;
    const coherent = this.c.subscriberCoherent;
    if (!coherent) this.announcedComplete = false;
    else if (!this.announcedComplete) void this.rebuild();
    const name = `${storeKey} ${inodeId}`;
    const heard = this.announced.get(name);
    if (heard === undefined && this.announcedComplete) return this.lookAgain(store, name, inodeId, offset, length, write);
    return this.checkIo(store, name, heard, this.rangeKey(store, inodeId), offset, length, write);
  }

  /**
   * Nothing announced for the file so far: looks again once every I/O callback ready in this turn
   * of the event loop has run (setImmediate), then asks Redis only if an announcement came. A lock
   * answered through another server just before this I/O's request was sent here is announced
   * before it is answered, so its message is in this server's socket already; but the request may
   * be read first in the same turn, and its handler reach this check before the subscriber's
   * callback runs (a WRITE through A went through right after B's LOCK was granted).
   */
  private async lookAgain(store: object, name: string, inodeId: number, offset: number, length: number, write: boolean): Promise<boolean> {
    await this.afterThisTurn();
    const heard = this.announced.get(name);
    if (heard === undefined && this.announcedComplete) return false;
    return this.checkIo(store, name, heard, this.rangeKey(store, inodeId), offset, length, write);
  }

  /** Settles after the ready I/O callbacks of this turn of the event loop: one setImmediate per turn, for every I/O. */
  private afterThisTurn(): Promise<void> {
    return (this.nextTurn ??= new Promise((resolve) =>
      setImmediate(() => {
        this.nextTurn = null;
        resolve();
      }),
    ));
  }

  private async checkIo(
    store: object,
    name: string,
    heard: number | undefined,
    key: string,
    offset: number,
    length: number,
    write: boolean,
  ): Promise<boolean> {
    await this.mustBeAlive(store);
    const b = bounds(BigInt(offset), BigInt(length))!;
    let r: number;
    try {
      r = await this.redis.dittoRangeCheck(key, this.livePrefix, this.inc, b[0], b[1], write ? 'x' : 's');
    } catch (err) {
      throw unreachable(err);
    }
    // No other server holds a lock: forget the announcement, unless a newer one came meanwhile.
    if (r === 2 && heard !== undefined && this.announced.get(name) === heard) this.announced.delete(name);
    return r === 1;
  }

  onRangesReleased(fn: (store: object, inodeId: number) => void): void {
    this.releasedListeners.push(fn);
  }

  private announce(map: Map<string, number>, name: string): void {
    if (map.size >= MAX_ANNOUNCED && !map.has(name)) {
      // Too many to remember: every I/O asks Redis until the next rebuild finds fewer.
      map.clear();
      this.announcedComplete = false;
      return;
    }
    map.set(name, (map.get(name) ?? 0) + 1);
  }

  private onMessage(msg: string): void {
    const parts = msg.split(' ');
    if (parts[0] === 'l' && parts.length === 4) {
      if (parts[1] === this.inc) return;
      this.announce(this.announced, `${parts[2]} ${parts[3]}`);
    } else if (parts[0] === 'c' && parts.length === 4) {
      if (parts[1] === this.inc) return;
      this.announce(this.cachedElsewhere, `${parts[2]} ${parts[3]}`);
    } else if (parts[0] === 'b' && parts.length === 6) {
      if (parts[1] === this.inc) void this.breakHere(parts[2]!, parts[3]!, parts[4]!, Number(parts[5]));
    } else if (parts[0] === 'a' && parts.length === 2) {
      this.breaking.get(parts[1]!)?.();
    } else if (parts[0] === 'u' && parts.length === 3) {
      const store = this.storesByKey.get(parts[1]!);
      const inodeId = Number(parts[2]);
      if (store === undefined || !Number.isSafeInteger(inodeId)) return;
      for (const fn of this.releasedListeners) fn(store, inodeId);
    }
  }

  /** After the subscriber connection was away: which files have locks, from the keys themselves. */
  private async rebuild(): Promise<void> {
    if (this.rebuilding || Date.now() < this.rebuildAfter) return;
    this.rebuilding = true;
    // Started by I/O: one that cannot finish (more than MAX_REBUILD_KEYS keys, SCAN failing) is not
    // started again by the next I/O at once, which would SCAN the keyspace without pause.
    this.rebuildAfter = Date.now() + this.ttl / 3;
    try {
      const scan = async (kind: string): Promise<Map<string, number> | null> => {
        const found = new Map<string, number>();
        let cursor = '0';
        let seen = 0;
        do {
          const [next, keys] = await this.redis.scan(cursor, 'MATCH', `${this.prefix}${kind}:*`, 'COUNT', 1000);
          cursor = next;
          for (const k of keys) {
            const rest = k.slice(this.prefix.length + kind.length + 1);
            const at = rest.lastIndexOf(':');
            found.set(`${rest.slice(0, at)} ${rest.slice(at + 1)}`, 0);
          }
          seen += keys.length;
        } while (cursor !== '0' && seen < MAX_REBUILD_KEYS);
        return cursor === '0' ? found : null;
      };
      const ranges = await scan('brl');
      const cached = await scan('cache');
      if (ranges === null || cached === null || !this.c.subscriberCoherent) return;
      // Announcements heard during the scan stay (they only make calls ask Redis).
      for (const [name, n] of ranges) if (!this.announced.has(name)) this.announced.set(name, n);
      for (const [name, n] of cached) if (!this.cachedElsewhere.has(name)) this.cachedElsewhere.set(name, n);
      this.announcedComplete = true;
    } catch {
      // Tried again by the next I/O.
    } finally {
      this.rebuilding = false;
    }
  }

  // ---- oplocks and leases -----------------------------------------------------------------------

  async announceCaching(store: object, inodeId: number): Promise<void> {
    await this.mustBeAlive(store);
    await this.mark(store);
    const storeKey = this.storeKey(store);
    const f = `${storeKey}:${inodeId}`;
    this.caching.add(f);
    try {
      await this.redis.dittoCacheAdd(
        `${this.prefix}cache:${f}`,
        this.livePrefix,
        this.inc,
        this.channel,
        `c ${this.inc} ${storeKey} ${inodeId}`,
      );
    } catch (err) {
      this.caching.delete(f);
      throw unreachable(err);
    }
  }

  cachingGone(store: object, inodeId: number): void {
    const f = `${this.storeKey(store)}:${inodeId}`;
    if (!this.caching.delete(f)) return;
    // Not waited for: a field left behind only costs another server an acknowledged break request.
    this.redis.hdel(`${this.prefix}cache:${f}`, this.inc).catch(() => undefined);
  }

  breakRemote(store: object, inodeId: number, keep: number, onWait?: () => void): Promise<void> | null {
    const storeKey = this.stores.get(store);
    if (storeKey === undefined) return null;
    if (!this.c.subscriberCoherent) this.announcedComplete = false;
    else if (!this.announcedComplete) void this.rebuild();
    const name = `${storeKey} ${inodeId}`;
    const heard = this.cachedElsewhere.get(name);
    if (heard === undefined && this.announcedComplete) return null;
    return this.breakOthers(name, heard, storeKey, inodeId, keep, onWait);
  }

  private async breakOthers(
    name: string,
    heard: number | undefined,
    storeKey: string,
    inodeId: number,
    keep: number,
    onWait?: () => void,
  ): Promise<void> {
    await this.mustBeAlive(this.storesByKey.get(storeKey));
    const key = `${this.prefix}cache:${storeKey}:${inodeId}`;
    let targets: string[];
    try {
      targets = await this.redis.dittoCacheOthers(key, this.livePrefix, this.inc);
    } catch (err) {
      throw unreachable(err);
    }
    if (targets.length === 0) {
      if (heard !== undefined && this.cachedElsewhere.get(name) === heard) this.cachedElsewhere.delete(name);
      return;
    }
    onWait?.();
    await Promise.all(
      targets.map(async (target) => {
        const id = `${this.inc}/${this.nextRequest++}`;
        let timer: NodeJS.Timeout | undefined;
        const acked = new Promise<void>((resolve) => {
          this.breaking.set(id, resolve);
          // The holder's own timer ends the break by then; a lost holder's entry stops counting within the ttl.
          timer = setTimeout(resolve, this.breakTimeoutMs + 2 * this.ttl);
        });
        try {
          await this.redis.publish(this.channel, `b ${target} ${id} ${storeKey} ${inodeId} ${keep}`);
          await acked;
        } catch (err) {
          throw unreachable(err);
        } finally {
          clearTimeout(timer);
          this.breaking.delete(id);
        }
      }),
    );
  }

  onBreakRequest(fn: (store: object, inodeId: number, keep: number) => Promise<boolean>): void {
    this.breakHandler = fn;
  }

  /** Another server asked for a break of this server's caching of a file: break, leave the hash if nothing caches it now, acknowledge. */
  private async breakHere(id: string, storeKey: string, inode: string, keep: number): Promise<void> {
    const store = this.storesByKey.get(storeKey);
    const inodeId = Number(inode);
    let still = false;
    if (store !== undefined && Number.isSafeInteger(inodeId) && Number.isSafeInteger(keep) && this.breakHandler) {
      try {
        still = await this.breakHandler(store, inodeId, keep);
      } catch (err) {
        this.log.warn({ err: (err as Error).message, inodeId }, 'cluster locks: a break asked by another server failed');
      }
    }
    const f = `${storeKey}:${inode}`;
    try {
      if (!still) {
        this.caching.delete(f);
        await this.redis.hdel(`${this.prefix}cache:${f}`, this.inc);
      }
      await this.redis.publish(this.channel, `a ${id}`);
    } catch {
      // The asker's wait ends with its timer.
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.redis.off('ready', this.onReady);
    // This server's entries stop counting at once.
    await this.redis
      .multi()
      .del(this.livePrefix + this.inc)
      .zrem(this.serversKey, this.inc)
      .exec()
      .catch(() => undefined);
  }
}
