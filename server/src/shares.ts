// The shares a server serves and the stores under them, converged to a desired set: at start from
// the config file or the control database, and again after every control-plane change. A new share
// is mountable when apply() returns; a removed one stops being served at once (its data already
// written is uploaded in the background, then its block service closes); a store is opened when a
// share first needs it and closed when none does. A store whose settings changed is reopened, with
// its shares re-added over it.
import type { Logger } from 'pino';
import type { BlockCache } from './blocks/cache.js';
import { BlockService, LOCAL_BUSY_DEFER } from './blocks/service.js';
import type { BlockStore } from './blocks/store.js';
import { FileWal, type Wal } from './blocks/wal.js';
import type { BlockStoreConfig, MetadataStoreConfig, ShareConfig } from './config/types.js';
import type { MetadataStore } from './meta/store.js';
import type { ServerMetrics } from './obs/metrics.js';
import { blockStoreFor, filesystemStoreDir, metadataStoreFor, onOneVolume, type StoreObservation } from './stores.js';
import { shareIdOf } from './vfs/handle.js';
import type { FileService } from './vfs/service.js';
import type pLimit from 'p-limit';
import { BufferPools } from './wire/buffer-pool.js';
import { createHash } from 'node:crypto';
import type { Coordinator, FileLeases, LeaseParticipant } from './coord/leases.js';
import type { RedisClusterLocks } from './coord/locks.js';
import { CachedMetadataStore } from './meta/cached.js';

/**
 * The name of a postgres metadata store in Redis keys: the same on every server that serves it,
 * whatever address each reaches it by (a Service name, an IP, a pooler): the identity kept in the
 * store itself, read when it was opened.
 */
function storeKeyOf(meta: MetadataStore, name: string): string {
  const id = meta.storeId;
  if (!id) throw new Error(`metadata store ${name}: no identity read at open; servers cannot coordinate on it`);
  return createHash('sha256').update(`store:${id}`).digest('hex').slice(0, 16);
}
import type { DiskBlockCache } from './blocks/disk-cache.js';

export interface DesiredShares {
  metadataStores: Readonly<Record<string, MetadataStoreConfig>>;
  blockStores: Readonly<Record<string, BlockStoreConfig>>;
  shares: readonly ShareConfig[];
}

export interface ShareRuntimeDeps {
  fileService: FileService;
  /** Several servers on the postgres stores (coordination.redis); null: this server alone, fenced. */
  coordination?: Coordinator | null;
  /** The lock state of the postgres stores across servers (with coordination). */
  clusterLocks?: RedisClusterLocks | null;
  wal: Wal;
  cache: BlockCache;
  uploads: ReturnType<typeof pLimit>;
  /** Block buffers for uploads, shared by every share. */
  buffers: BufferPools;
  /** The read cache on disk, for shares whose block store is s3 (null: off). */
  diskCache?: DiskBlockCache | null;
  dataDir: string;
  log: Logger;
  metrics: ServerMetrics | null;
  observe: boolean;
}

export interface ApplyResult {
  added: string[];
  removed: string[];
  updated: string[];
}

/** An open store and how many served (or draining) shares use it; closed when none does. */
interface Opened<T> {
  name: string;
  /** `metadata:NAME` or `blocks:NAME`: the key of `closing`. */
  id: string;
  key: string;
  store: T;
  refs: number;
  /** Resolves once the last user released it and it is closed. */
  closed: Promise<void>;
  onClosed: () => void;
}

interface Served {
  cfg: ShareConfig;
  shareId: number;
  data: BlockService;
  meta: Opened<MetadataStore>;
  blocks: Opened<BlockStore>;
  /** Coordinated: the store's write leases and this share's part in handing files over. */
  leases?: { leases: FileLeases; participant: LeaseParticipant };
}

const keyOf = (cfg: object): string => JSON.stringify(cfg, Object.keys(cfg).sort());

/** Attempts to upload a removed share's data before giving up (with a pause between them). */
const DRAIN_ATTEMPTS = 60;

export class ShareRuntime {
  private readonly meta = new Map<string, Opened<MetadataStore>>();
  private readonly blocks = new Map<string, Opened<BlockStore>>();
  private readonly served = new Map<string, Served>();
  private readonly draining = new Set<Promise<void>>();
  /** A share served again must wait for its previous service's drain (and share-stored mark). */
  private readonly drainingByName = new Map<string, Promise<void>>();
  /** Stores being closed, by `metadata:NAME` / `blocks:NAME`. */
  private readonly closing = new Map<string, Promise<void>>();
  private closed = false;

  constructor(private readonly deps: ShareRuntimeDeps) {}

  private get observation(): StoreObservation {
    return { metrics: this.deps.metrics, observe: this.deps.observe };
  }

  /** The block service of every served share, by share id (WAL replay, garbage collection). */
  services(): Map<number, { name: string; data: BlockService }> {
    return new Map([...this.served.values()].map((s) => [s.shareId, { name: s.cfg.name, data: s.data }]));
  }

  /** Names of the metadata and block stores open now, for readiness checks. */
  openStores(): { metadata: [string, MetadataStore][]; blocks: [string, BlockStore][] } {
    return {
      metadata: [...this.meta].map(([n, o]) => [n, o.store]),
      blocks: [...this.blocks].map(([n, o]) => [n, o.store]),
    };
  }

  /**
   * Converges to `desired`. Shares that cannot be served (a store that does not open) are logged
   * and left out; the others are served. Throws only when `strict` (at start: a config that does
   * not work must stop the server).
   */
  async apply(desired: DesiredShares, opts: { strict?: boolean } = {}): Promise<ApplyResult> {
    const result: ApplyResult = { added: [], removed: [], updated: [] };
    const want = new Map(desired.shares.map((s) => [s.name, s]));
    const metaKeyOf = (name: string): string | undefined => {
      const c = desired.metadataStores[name];
      return c ? keyOf(c) : undefined;
    };
    const blocksKeyOf = (name: string): string | undefined => {
      const c = desired.blockStores[name];
      return c ? keyOf(c) : undefined;
    };

    const moved = new Set<string>();
    // 1. Stop serving what is gone, or what moved to other stores or to changed store settings.
    for (const [name, s] of [...this.served]) {
      const w = want.get(name);
      const same =
        w !== undefined &&
        w.metadata === s.cfg.metadata &&
        w.blocks === s.cfg.blocks &&
        metaKeyOf(w.metadata) === s.meta.key &&
        blocksKeyOf(w.blocks) === s.blocks.key;
      if (same) continue;
      this.unserve(name);
      if (w === undefined) result.removed.push(name);
      else moved.add(name);
    }

    // 2. Serve what is new, opening its stores (a store closes when its last share goes).
    for (const w of desired.shares) {
      const cur = this.served.get(w.name);
      if (cur) {
        if (
          cur.cfg.read_only !== w.read_only ||
          cur.cfg.root_squash !== w.root_squash ||
          cur.cfg.anonymous_uid !== w.anonymous_uid ||
          cur.cfg.anonymous_gid !== w.anonymous_gid
        ) {
          this.deps.fileService.updateShare(w.name, {
            readOnly: w.read_only,
            rootSquash: w.root_squash,
            anonymousUid: w.anonymous_uid,
            anonymousGid: w.anonymous_gid,
          });
          cur.cfg = w;
          result.updated.push(w.name);
        }
        continue;
      }
      try {
        await this.serve(w, desired);
        (moved.has(w.name) ? result.updated : result.added).push(w.name);
      } catch (err) {
        if (opts.strict) throw err;
        this.deps.log.error({ err, share: w.name }, 'share cannot be served; fix its stores and apply again');
      }
    }
    return result;
  }

  private async acquire<T extends MetadataStore | BlockStore>(
    map: Map<string, Opened<T>>,
    kind: 'metadata' | 'blocks',
    name: string,
    cfg: object,
    create: () => T,
  ): Promise<Opened<T>> {
    const key = keyOf(cfg);
    for (;;) {
      // Two handles on one store (an embedded database above all) must never be open at once.
      const closing = this.closing.get(`${kind}:${name}`);
      if (closing) {
        await closing;
        continue;
      }
      const cur = map.get(name);
      if (!cur) break;
      if (cur.key === key) {
        cur.refs++;
        return cur;
      }
      // New settings for an open store: its shares were unserved; wait until their last writes
      // are stored and it is closed.
      await cur.closed;
    }
    const store = create();
    await store.open();
    let onClosed!: () => void;
    const closed = new Promise<void>((r) => (onClosed = r));
    const o: Opened<T> = { name, id: `${kind}:${name}`, key, store, refs: 1, closed, onClosed };
    map.set(name, o);
    return o;
  }

  private async release<T extends MetadataStore | BlockStore>(map: Map<string, Opened<T>>, o: Opened<T>): Promise<void> {
    if (--o.refs > 0) return;
    if (map.get(o.name) === o) map.delete(o.name);
    const id = o.id;
    const p = o.store
      .close()
      .catch((err: unknown) => this.deps.log.warn({ err, store: o.name }, 'closing a store failed'))
      .finally(() => {
        if (this.closing.get(id) === p) this.closing.delete(id);
        o.onClosed();
      });
    this.closing.set(id, p);
    await p;
  }

  private async serve(sh: ShareConfig, desired: DesiredShares): Promise<void> {
    await this.drainingByName.get(sh.name);
    const mcfg = desired.metadataStores[sh.metadata];
    const bcfg = desired.blockStores[sh.blocks];
    if (!mcfg) throw new Error(`share ${sh.name}: no metadata store named ${JSON.stringify(sh.metadata)}`);
    if (!bcfg) throw new Error(`share ${sh.name}: no block store named ${JSON.stringify(sh.blocks)}`);
    // A postgres store is fenced for this server alone, unless servers coordinate (then leases).
    const coordination = mcfg.type === 'postgres' ? (this.deps.coordination ?? null) : null;
    const metaRef = await this.acquire(this.meta, 'metadata', sh.metadata, mcfg, () =>
      metadataStoreFor(sh.metadata, mcfg, this.deps.dataDir, this.deps.log, this.observation, coordination === null),
    );
    let blocksRef: Opened<BlockStore>;
    try {
      blocksRef = await this.acquire(this.blocks, 'blocks', sh.blocks, bcfg, () =>
        blockStoreFor(sh.blocks, bcfg, this.deps.dataDir, this.observation),
      );
    } catch (err) {
      await this.release(this.meta, metaRef);
      throw err;
    }
    const meta = metaRef.store;
    const blocks = blocksRef.store;
    const shareId = shareIdOf(sh.name);
    const { metrics, log } = this.deps;
    let storeKey = '';
    try {
      if (coordination) storeKey = storeKeyOf(meta, sh.metadata);
    } catch (err) {
      await this.release(this.blocks, blocksRef);
      await this.release(this.meta, metaRef);
      throw err;
    }
    const leases = coordination?.leasesFor(storeKey, meta);
    if (coordination) this.deps.clusterLocks?.bindStore(meta, storeKey);
    // Several servers: its caches hear the others' changes (coord/coherence.ts), once per opened store.
    if (coordination && meta instanceof CachedMetadataStore && !meta.hasCoherence) {
      const link = coordination.coherenceFor(storeKey, meta);
      meta.attachCoherence(link, () => coordination.dropCoherence(link));
    }
    // A filesystem block store on the WAL's volume: an upload adds no durability, only a copy, and
    // uploads of blocks not completely written give way to bursts of writes (BusyDefer). Not with
    // several servers: the others read what this one has stored.
    const wal = this.deps.wal;
    const localCopy =
      !leases &&
      bcfg.type === 'filesystem' &&
      wal instanceof FileWal &&
      onOneVolume(wal.dir, filesystemStoreDir(sh.blocks, bcfg, this.deps.dataDir));
    const data = new BlockService(blocks, meta, {
      ...(leases ? { leases } : {}),
      ...(localCopy ? { busyDefer: LOCAL_BUSY_DEFER } : {}),
      shareId,
      keyPrefix: shareId.toString(16).padStart(8, '0'),
      blockSize: bcfg.block_size,
      wal,
      cache: this.deps.cache,
      uploads: this.deps.uploads,
      buffers: this.deps.buffers,
      ...(bcfg.type === 's3' && this.deps.diskCache ? { diskCache: { cache: this.deps.diskCache, namespace: sh.blocks } } : {}),
      log: log.child({ share: sh.name }),
      ...(metrics
        ? {
            onUploadFailed: () => metrics.uploadFailed(sh.name),
            onDataCorrupt: (op: 'read' | 'upload') => metrics.walDataError(sh.name, op),
          }
        : {}),
    });
    try {
      await this.deps.fileService.addShare(
        {
          name: sh.name,
          readOnly: sh.read_only,
          rootSquash: sh.root_squash,
          anonymousUid: sh.anonymous_uid,
          anonymousGid: sh.anonymous_gid,
          rootMode: sh.root_mode,
          rootUid: sh.root_uid,
          rootGid: sh.root_gid,
        },
        meta,
        data,
      );
    } catch (err) {
      await data.close();
      await this.release(this.blocks, blocksRef);
      await this.release(this.meta, metaRef);
      throw err;
    }
    metrics?.watchShare(shareId, sh.name, () => data.pendingBytes());
    const participant: LeaseParticipant = { flush: (i) => data.flush(i), hasDirty: (i) => data.hasDirty(i) };
    leases?.join(participant);
    this.served.set(sh.name, {
      cfg: sh,
      shareId,
      data,
      meta: metaRef,
      blocks: blocksRef,
      ...(leases ? { leases: { leases, participant } } : {}),
    });
    log.info({ share: sh.name, metadata: `${sh.metadata} (${meta.kind})`, blocks: `${sh.blocks} (${blocks.kind})` }, 'share ready');
  }

  /** Stops serving a share now; its written data is uploaded in the background before its service closes. */
  private unserve(name: string): void {
    const s = this.served.get(name);
    if (!s) return;
    this.served.delete(name);
    this.deps.fileService.removeShare(name);
    this.deps.metrics?.unwatchShare(s.shareId, name);
    this.deps.log.info({ share: name }, 'share no longer served');
    const p = this.drain(s).finally(() => {
      this.draining.delete(p);
      if (this.drainingByName.get(name) === p) this.drainingByName.delete(name);
    });
    this.draining.add(p);
    this.drainingByName.set(name, p);
  }

  private async drain(s: Served): Promise<void> {
    const { log } = this.deps;
    for (let attempt = 0; attempt < DRAIN_ATTEMPTS && !this.closed; attempt++) {
      await s.data.flushAll();
      if (s.data.pendingBytes() === 0) break;
      if (attempt === 0) log.warn({ share: s.cfg.name, bytes: s.data.pendingBytes() }, 'removed share: uploading its last writes');
      await new Promise((r) => setTimeout(r, 1000).unref());
    }
    const left = s.data.pendingBytes();
    await s.data.close();
    const unfinished = await s.data.cutsSettled();
    s.leases?.leases.leave(s.leases.participant);
    if (left > 0) {
      log.error(
        { share: s.cfg.name, bytes: left },
        'removed share: written data could not be uploaded; it stays in the WAL, and the next start asks for the share back',
      );
    } else if (unfinished > 0) {
      log.error(
        { share: s.cfg.name, truncates: unfinished },
        'removed share: truncates could not be applied (its metadata store failing); they stay in the WAL, and the next start asks for the share back',
      );
    } else if (this.deps.wal.persistent) {
      // Everything is stored: replay need not (and, the share gone, could not) bring it back.
      try {
        await this.deps.wal.appendShareStored(s.shareId).done;
        await this.deps.wal.sync();
        // Records still held for its metadata (a close that could not sync it in time) are skipped
        // by replay now: let go, or they hold the log the other shares write to until a restart.
        s.data.releaseForgotten();
      } catch (err) {
        log.warn({ err, share: s.cfg.name }, 'removed share: could not log that its data is stored');
      }
    }
    await this.release(this.blocks, s.blocks);
    await this.release(this.meta, s.meta);
  }

  /** Closes every share's block service and every store (after the file service stopped). */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.draining]);
    for (const s of [...this.served.values()]) {
      await s.data.close();
      s.leases?.leases.leave(s.leases.participant);
      await this.release(this.blocks, s.blocks);
      await this.release(this.meta, s.meta);
    }
    this.served.clear();
  }
}
