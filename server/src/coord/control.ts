// Control-plane generations of several servers on one control database (DESIGN.md "Several
// replicas"). Each server says in Redis which generation of the control database it has applied:
//
//   <prefix>control:<scope>:replicas           a set of server ids
//   <prefix>control:<scope>:applied:<server>   = <generation>   (PX REPORT_TTL_MS, renewed every HEARTBEAT_MS)
//
// A server that made a change (an API call) waits, bounded, until every live server reports that
// generation or a newer one, and says which ones did not. A server whose report expired (stopped,
// killed, cut off from Redis) is not waited for, and is dropped from the set by the next reader.
// `scope` names the control database (the same on every server that shares it).
import { createHash } from 'node:crypto';
import type { Coordinator } from './leases.js';

/** A report lives this long without a renewal (a killed server stops being waited for after it). */
const REPORT_TTL_MS = 5_000;
const HEARTBEAT_MS = 1_500;
/** How often a waiting change looks at the reports again. */
const POLL_MS = 20;
/** At most this many servers are read (a cap on a set someone filled with junk). */
const MAX_REPLICAS = 256;

export interface ReplicaGeneration {
  server: string;
  /** The generation it applied; null: its report expired (it is gone). */
  applied: number | null;
}

export interface ControlConvergence {
  /** The generation every live server was asked to reach. */
  generation: number;
  /** Live servers that had not applied it when the wait ended (empty: all did). */
  pending: ReplicaGeneration[];
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class ControlReplicas {
  private applied = -1;
  private readonly timer: NodeJS.Timeout;
  private closed = false;
  private reporting: Promise<void> | null = null;

  constructor(
    private readonly c: Coordinator,
    readonly scope: string,
  ) {
    this.timer = setInterval(() => void this.report(), HEARTBEAT_MS);
    this.timer.unref();
  }

  private get setKey(): string {
    return `${this.c.opts.keyPrefix}control:${this.scope}:replicas`;
  }

  private appliedKey(server: string): string {
    return `${this.c.opts.keyPrefix}control:${this.scope}:applied:${server}`;
  }

  /** The generation this server applied last (-1: none yet). */
  get appliedGeneration(): number {
    return this.applied;
  }

  /** This server applied `generation` (reported at once, and renewed from then on). */
  record(generation: number): Promise<void> {
    if (generation <= this.applied) return this.reporting ?? Promise.resolve();
    this.applied = generation;
    return this.report();
  }

  private report(): Promise<void> {
    if (this.closed || this.applied < 0 || !this.c.ready) return Promise.resolve();
    const p = this.c.redis
      .multi()
      .sadd(this.setKey, this.c.serverId)
      .set(this.appliedKey(this.c.serverId), String(this.applied), 'PX', REPORT_TTL_MS)
      .exec()
      .then(
        () => undefined,
        (e: unknown) => this.c.opts.log.debug({ err: (e as Error).message }, 'could not report the applied control-plane generation'),
      );
    this.reporting = p;
    return p;
  }

  /** Every server that reported, with the generation it applied (gone ones are dropped). */
  async replicas(): Promise<ReplicaGeneration[]> {
    const { redis } = this.c;
    const servers = (await redis.srandmember(this.setKey, MAX_REPLICAS)).sort();
    if (servers.length === 0) return [];
    const values = await redis.mget(...servers.map((s) => this.appliedKey(s)));
    const out: ReplicaGeneration[] = [];
    const gone: string[] = [];
    servers.forEach((server, i) => {
      const v = values[i];
      const n = v === null || v === undefined ? NaN : Number(v);
      if (Number.isSafeInteger(n)) out.push({ server, applied: n });
      else gone.push(server);
    });
    if (gone.length > 0) await redis.srem(this.setKey, ...gone).catch(() => undefined);
    return out;
  }

  /**
   * Waits (at most `timeoutMs`) until every live server applied `generation`; those that did not
   * are in `pending`. Without Redis nobody can be asked: every other server is pending, unknown.
   */
  async waitApplied(generation: number, timeoutMs: number): Promise<ControlConvergence> {
    const deadline = Date.now() + timeoutMs;
    let pending: ReplicaGeneration[] = [];
    for (;;) {
      try {
        pending = (await this.replicas()).filter((r) => r.applied !== null && r.applied < generation);
      } catch {
        pending = [{ server: '(Redis unreachable: the other servers are not known)', applied: null }];
      }
      if (pending.length === 0 || Date.now() >= deadline) return { generation, pending };
      await sleep(POLL_MS);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    await this.reporting;
    if (!this.c.ready) return;
    // Not waited for any longer.
    await this.c.redis
      .multi()
      .srem(this.setKey, this.c.serverId)
      .del(this.appliedKey(this.c.serverId))
      .exec()
      .catch(() => undefined);
  }
}

/** The control database's name in Redis keys: the same on every server that shares it. */
export function controlScopeOf(db: { type: string; url?: string; schema?: string; path?: string }): string {
  let where = db.type === 'postgres' ? (db.url ?? '') : `${db.type}:${db.path ?? ''}:${process.pid}`;
  try {
    const u = new URL(where);
    where = `${u.hostname}:${u.port || '5432'}${u.pathname}`;
  } catch {
    // not a URL: the raw text is as good an identity
  }
  return createHash('sha256')
    .update(`${where}|${db.schema ?? ''}`)
    .digest('hex')
    .slice(0, 16);
}
