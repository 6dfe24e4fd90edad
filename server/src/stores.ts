// Opening stores by name and settings: the metadata engines (the SQL ones behind the caching
// layer) and the block stores, with tracing and error counting when either is on.
import { statSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { FilesystemBlockStore } from './blocks/filesystem.js';
import { MemoryBlockStore } from './blocks/memory.js';
import { observeBlockStore } from './blocks/observed.js';
import type { S3BlockStoreOptions } from './blocks/s3.js';
import type { BlockStore, BlockStoreCapacity, PutHints, StoredObject } from './blocks/store.js';
import type { BlockStoreConfig, MetadataStoreConfig } from './config/types.js';
import { METADATA_STORE_DIR, storeDirProblem } from './config/store-dirs.js';
import { errorMessage } from './error-message.js';
import { CachedMetadataStore } from './meta/cached.js';
import { MemoryMetadataStore } from './meta/memory.js';
import { createEmbeddedMetadataStore, createPostgresMetadataStore, type SqlDriverObserver } from './meta/sql/index.js';
import type { MetadataStore } from './meta/store.js';
import type { ServerMetrics } from './obs/metrics.js';

/** SQL engines answer inode and block-map lookups from memory and write sizes and times behind. */
function cachedFor(log: Logger): (store: MetadataStore, ttlMs?: number) => CachedMetadataStore {
  return (store, ttlMs) =>
    new CachedMetadataStore(store, {
      ...(ttlMs !== undefined ? { ttlMs } : {}),
      onFlushError: (err, inodeId) =>
        log.warn({ err, inode: inodeId }, 'could not write file size and times to the metadata store; retrying'),
    });
}

export function createMetadataStore(
  name: string,
  cfg: MetadataStoreConfig,
  dataDir: string,
  log: Logger,
  observer?: SqlDriverObserver,
  /** postgres: take the store's single-server fence (meta/sql/fence.ts); a probe does not. */
  fence = false,
): MetadataStore {
  const logger = log.child({ store: name });
  const cached = cachedFor(logger);
  switch (cfg.type) {
    case 'memory':
      return new MemoryMetadataStore();
    case 'embedded': {
      if (cfg.path !== undefined) {
        const problem = storeDirProblem(cfg.path, METADATA_STORE_DIR, dataDir);
        if (problem !== undefined) throw new Error(`metadata store ${name}: ${problem}`);
      }
      // Written by this process alone (the store directory's lock, meta/sql/lockfile.ts) and only
      // through the cache, which keeps itself exact (as it does for several coordinated servers):
      // an entry is trusted until this process changes it, not re-read every second (GETATTR).
      return cached(
        createEmbeddedMetadataStore({
          path: path.resolve(cfg.path ?? path.join(dataDir, 'metadata', name)),
          ...(cfg.engine !== undefined ? { engine: cfg.engine } : {}),
          ...(cfg.sync !== undefined ? { sync: cfg.sync } : {}),
          logger,
          observer,
        }),
        Number.POSITIVE_INFINITY,
      );
    }
    case 'postgres': {
      if (!cfg.url) throw new Error(`metadata store ${name}: a postgres store needs a url`);
      // Fenced, the store is written by this process alone, through the cache: trusted as the
      // embedded one is. After a lost connection the fence is taken again only if nobody else took
      // it meanwhile, but the database may have restarted: the cache starts again from the store.
      // Not fenced (several coordinated servers), coordination proves the cache current instead
      // (CachedMetadataStore.attachCoherence).
      // (Called only once the store is open and its fence was lost and taken again.)
      const heldAgain = (): void => store.invalidateRemote(null, true);
      const store = cached(
        createPostgresMetadataStore({
          url: cfg.url,
          // The metadata store calls sync() where DESIGN.md needs a flush (SqlMetadataStore.durable).
          // Default change: every change durable at its reply. commit is opt-in: its crash detection
          // (pg_control_checkpoint) can also fail one COMMIT after a clean restart and a checkpoint.
          sync: cfg.sync ?? 'change',
          ...(cfg.pool_size !== undefined ? { poolSize: cfg.pool_size } : {}),
          ...(cfg.schema !== undefined ? { schema: cfg.schema } : {}),
          ...(cfg.connect_timeout !== undefined ? { connectTimeoutMs: cfg.connect_timeout } : {}),
          ...(cfg.statement_timeout !== undefined ? { statementTimeoutMs: cfg.statement_timeout } : {}),
          logger,
          applicationName: `dittofs/${name}`,
          observer,
          ...(fence ? { fence: { purpose: 'metadata' as const, label: `metadata store ${name}`, onHeldAgain: heldAgain } } : {}),
        }),
        fence ? Number.POSITIVE_INFINITY : undefined,
      );
      return store;
    }
    default:
      throw new Error(`metadata store ${name}: unsupported type ${String((cfg as { type: unknown }).type)}`);
  }
}

/** The directory of a `filesystem` block store. */
export function filesystemStoreDir(name: string, cfg: BlockStoreConfig, dataDir: string): string {
  return path.resolve(cfg.path ?? path.join(dataDir, 'blocks', name));
}

/** Whether two existing paths are on one volume (one device); false when either cannot be read. */
export function onOneVolume(a: string, b: string): boolean {
  try {
    return statSync(a).dev === statSync(b).dev;
  } catch {
    return false;
  }
}

export function createBlockStore(name: string, cfg: BlockStoreConfig, dataDir: string): BlockStore {
  switch (cfg.type) {
    case 'memory':
      return new MemoryBlockStore();
    case 'filesystem':
      return new FilesystemBlockStore(filesystemStoreDir(name, cfg, dataDir), { dataDir });
    case 's3':
      if (!cfg.bucket) throw new Error(`block store ${name}: an s3 store needs a bucket`);
      return new LazyS3BlockStore({
        bucket: cfg.bucket,
        endpoint: cfg.endpoint,
        region: cfg.region,
        prefix: cfg.prefix,
        forcePathStyle: cfg.force_path_style,
        accessKeyId: cfg.access_key_id,
        secretAccessKey: cfg.secret_access_key,
        requestTimeoutMs: cfg.request_timeout,
        maxAttempts: cfg.max_attempts,
      });
    default:
      throw new Error(`block store ${name}: unsupported type ${String((cfg as { type: unknown }).type)}`);
  }
}

/**
 * The s3 store, with the AWS SDK loaded when the store opens: a server without an s3 store never
 * loads it (about 22 MiB of resident memory).
 */
class LazyS3BlockStore implements BlockStore {
  readonly kind = 's3';
  private store: BlockStore | null = null;

  constructor(private readonly opts: S3BlockStoreOptions) {}

  private get s3(): BlockStore {
    if (!this.store) throw new Error('s3 block store used before open()');
    return this.store;
  }

  async open(): Promise<void> {
    const { S3BlockStore } = await import('./blocks/s3.js');
    const store = new S3BlockStore(this.opts);
    await store.open();
    this.store = store;
  }

  async close(): Promise<void> {
    await this.store?.close();
  }

  put(key: string, data: Buffer, hints?: PutHints): Promise<void> {
    return this.s3.put(key, data, hints);
  }

  get(key: string, offset?: number, length?: number): Promise<Buffer | null> {
    return this.s3.get(key, offset, length);
  }

  delete(key: string): Promise<void> {
    return this.s3.delete(key);
  }

  capacity(): Promise<BlockStoreCapacity> {
    return this.s3.capacity();
  }

  list(prefix: string): AsyncIterable<StoredObject> {
    return this.s3.list(prefix);
  }
}

export interface StoreObservation {
  metrics: ServerMetrics | null;
  /** Trace and count calls (metrics or tracing on). */
  observe: boolean;
}

/**
 * A metadata store as the server uses it (not yet opened). A postgres store is fenced (one server
 * at a time) unless `fence` is false (a probe of settings, which serves nothing).
 */
export function metadataStoreFor(
  name: string,
  cfg: MetadataStoreConfig,
  dataDir: string,
  log: Logger,
  o: StoreObservation,
  fence = true,
): MetadataStore {
  const metrics = o.metrics;
  const full = diskFullWarning(log, name);
  // Always observed: a full volume is told in the log whether or not metrics are on.
  const observer: SqlDriverObserver = {
    store: name,
    onError: (reason, err) => {
      if (o.observe) metrics?.dbError(name, reason);
      if (reason === 'disk_full') full(err);
    },
  };
  return createMetadataStore(name, cfg, dataDir, log, observer, fence);
}

/** How often, at most, a metadata store whose volume stays full says so again. */
export const DISK_FULL_WARN_EVERY_MS = 60_000;

/**
 * The warning for changes a metadata store refused because its database's volume is full: clients
 * hear NOSPC / DISK_FULL / 507, an expected answer that is otherwise logged nowhere, and the one
 * who can free space reads the log. The first refusal is told at once, then at most one line a
 * minute while they go on, with how many there were since the last line.
 */
function diskFullWarning(log: Logger, name: string): (err: unknown) => void {
  let last = Number.NEGATIVE_INFINITY;
  let refused = 0;
  return (err) => {
    refused++;
    const now = Date.now();
    if (now - last < DISK_FULL_WARN_EVERY_MS) return;
    last = now;
    log.warn(
      { store: name, refused, err: errorMessage(err) },
      `metadata store ${name}: its volume is full: changes are refused (NFS3ERR_NOSPC, STATUS_DISK_FULL, HTTP 507) until space is freed`,
    );
    refused = 0;
  };
}

/** A block store as the server uses it (not yet opened). */
export function blockStoreFor(name: string, cfg: BlockStoreConfig, dataDir: string, o: StoreObservation): BlockStore {
  const store = createBlockStore(name, cfg, dataDir);
  const metrics = o.metrics;
  return o.observe
    ? observeBlockStore(store, { name, ...(metrics ? { onError: (op: string) => metrics.blockStoreError(name, store.kind, op) } : {}) })
    : store;
}
