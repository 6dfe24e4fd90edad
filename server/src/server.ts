// The composition root: config -> stores -> block services -> file service -> listeners. It owns
// graceful shutdown: stop accepting, drain requests, flush dirty data, close stores.
import http from 'node:http';
import path from 'node:path';
import type { Logger } from 'pino';
import { BlockCache } from './blocks/cache.js';
import { FilesystemBlockStore } from './blocks/filesystem.js';
import { MemoryBlockStore } from './blocks/memory.js';
import { observeBlockStore } from './blocks/observed.js';
import { S3BlockStore } from './blocks/s3.js';
import pLimit from 'p-limit';
import { BlockService, DEFAULT_PARALLEL_UPLOADS } from './blocks/service.js';
import type { BlockStore } from './blocks/store.js';
import { FileWal, MemoryWal, type ReplayRecord, type Wal } from './blocks/wal.js';
import type { BlockStoreConfig, DittoConfig, MetadataStoreConfig } from './config/types.js';
import { CachedMetadataStore } from './meta/cached.js';
import { MemoryMetadataStore } from './meta/memory.js';
import { createEmbeddedMetadataStore, createPostgresMetadataStore, type SqlDriverObserver } from './meta/sql/index.js';
import type { MetadataStore } from './meta/store.js';
import { MOUNT_PROGRAM, MOUNT_V3, NFS_PROGRAM, NFS_V3 } from './nfs3/constants.js';
import { MountProgram } from './nfs3/mount.js';
import { Nfs3Program } from './nfs3/nfs.js';
import { mountRpcProgram, nfsRpcProgram } from './nfs3/programs.js';
import { setLogLevel } from './obs/logger.js';
import { serveMetrics, ServerMetrics } from './obs/metrics.js';
import { startTracing } from './obs/tracing.js';
import { IPPROTO_TCP, portmapProgram, type PortMapping } from './rpc/portmap.js';
import { RpcServer } from './rpc/server.js';
import { shareIdOf } from './vfs/handle.js';
import { FileService } from './vfs/service.js';

export interface RunningServer {
  readonly nfsPort: number | null;
  readonly apiPort: number | null;
  readonly metricsPort: number | null;
  readonly fileService: FileService;
  readonly nfs: Nfs3Program;
  /** The server's Prometheus metrics; null when `metrics.enabled` is false. */
  readonly metrics: ServerMetrics | null;
  /** The current log level. */
  readonly logLevel: string;
  /** Changes the log level live (every component's logger); a RangeError for an unknown level. */
  setLogLevel(level: string): void;
  /**
   * Graceful shutdown: stops accepting connections and reading calls, lets the calls already read
   * finish (at most 10 s), fsyncs and closes the WAL, closes stores and listeners, and exports the
   * last spans.
   */
  close(): Promise<void>;
}

/** SQL engines answer inode and block-map lookups from memory and write sizes and times behind. */
function cachedFor(log: Logger): (store: MetadataStore) => MetadataStore {
  return (store) =>
    new CachedMetadataStore(store, {
      onFlushError: (err, inodeId) =>
        log.warn({ err, inode: inodeId }, 'could not write file size and times to the metadata store; retrying'),
    });
}

function createMetadataStore(
  name: string,
  cfg: MetadataStoreConfig,
  dataDir: string,
  log: Logger,
  observer?: SqlDriverObserver,
): MetadataStore {
  const logger = log.child({ store: name });
  const cached = cachedFor(logger);
  switch (cfg.type) {
    case 'memory':
      return new MemoryMetadataStore();
    case 'embedded':
      return cached(
        createEmbeddedMetadataStore({ path: path.resolve(cfg.path ?? path.join(dataDir, 'metadata', name)), logger, observer }),
      );
    case 'postgres':
      if (!cfg.url) throw new Error(`metadata store ${name}: a postgres store needs a url`);
      return cached(
        createPostgresMetadataStore({
          url: cfg.url,
          ...(cfg.pool_size !== undefined ? { poolSize: cfg.pool_size } : {}),
          ...(cfg.schema !== undefined ? { schema: cfg.schema } : {}),
          ...(cfg.connect_timeout !== undefined ? { connectTimeoutMs: cfg.connect_timeout } : {}),
          ...(cfg.statement_timeout !== undefined ? { statementTimeoutMs: cfg.statement_timeout } : {}),
          logger,
          applicationName: `dittofs/${name}`,
          observer,
        }),
      );
    default:
      throw new Error(`metadata store ${name}: unsupported type ${String((cfg as { type: unknown }).type)}`);
  }
}

function createBlockStore(name: string, cfg: BlockStoreConfig, dataDir: string): BlockStore {
  switch (cfg.type) {
    case 'memory':
      return new MemoryBlockStore();
    case 'filesystem':
      return new FilesystemBlockStore(path.resolve(cfg.path ?? path.join(dataDir, 'blocks', name)));
    case 's3':
      if (!cfg.bucket) throw new Error(`block store ${name}: an s3 store needs a bucket`);
      return new S3BlockStore({
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

/** Says which listener could not start and which setting moves it, instead of a bare EADDRINUSE. */
async function listening<T>(what: string, setting: string, host: string, port: number, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'EADDRINUSE'
        ? 'the address is already in use (another DittoFS or another server?)'
        : code === 'EACCES'
          ? 'permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)'
          : code === 'EADDRNOTAVAIL'
            ? 'no network interface has that address'
            : (err as Error).message;
    throw new Error(`${what} cannot listen on ${host}:${port}: ${why}; change ${setting}`, { cause: err });
  }
}

/** Closes an HTTP listener: idle keep-alive connections at once, busy ones after 2 s. */
function closeHttp(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(() => server.closeAllConnections(), 2_000);
    server.close(() => {
      clearTimeout(t);
      resolve();
    });
    server.closeIdleConnections();
  });
}

function listenHttp(server: http.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const a = server.address();
      resolve(typeof a === 'object' && a ? a.port : port);
    });
  });
}

/**
 * The WAL: segment files under `cache.wal_dir` (default `<data_dir>/wal`) unless every block store
 * is `memory`, in which case nothing could be recovered anyway and dirty data stays in memory.
 */
async function openWal(config: DittoConfig, log: Logger): Promise<{ wal: Wal; records: ReplayRecord[] }> {
  const used = new Set(config.shares.map((s) => s.blocks));
  const persistent = [...used].some((name) => config.blocks.stores[name]?.type !== 'memory');
  if (!persistent) return { wal: new MemoryWal(config.cache.max_dirty_bytes), records: [] };
  const dir = path.resolve(config.cache.wal_dir ?? path.join(config.data_dir, 'wal'));
  const started = Date.now();
  const { wal, records, report } = await FileWal.open(dir, { maxBytes: config.cache.wal_max_bytes, log: log.child({ wal: dir }) });
  const summary = {
    dir,
    segments: report.segments,
    records: report.records,
    bytes: report.dataBytes,
    tornBytes: report.tornBytes,
    corruptRecords: report.corruptRecords.length,
    corruptRanges: report.corruptRanges.length,
    ms: Date.now() - started,
  };
  if (report.corruptRecords.length > 0 || report.corruptRanges.length > 0) {
    log.error(summary, 'WAL has corrupt records: their bytes are not served (details logged above)');
  } else {
    log.info(summary, 'WAL opened');
  }
  return { wal, records };
}

/** Hands every share its WAL records; records of a share that is not configured stop the start. */
async function replayWal(records: ReplayRecord[], services: Map<number, { name: string; data: BlockService }>, log: Logger): Promise<void> {
  const byShare = new Map<number, ReplayRecord[]>();
  for (const r of records) {
    let list = byShare.get(r.share);
    if (!list) byShare.set(r.share, (list = []));
    list.push(r);
  }
  const hex = (id: number): string => id.toString(16).padStart(8, '0');
  for (const [share, list] of byShare) {
    if (!services.has(share)) {
      const known = [...services].map(([id, s]) => `${s.name} (${hex(id)})`).join(', ') || 'none';
      throw new Error(
        `the WAL holds ${list.length} unflushed records of a share with id ${hex(share)} that is not in the config ` +
          `(configured: ${known}; a share's id is derived from its name, and its block objects are stored under that id); ` +
          'add the share back under its old name so its data can be stored, or move the WAL directory away to discard that data',
      );
    }
  }
  for (const [share, list] of byShare) {
    const svc = services.get(share)!;
    const started = Date.now();
    const r = await svc.data.replay(list);
    log.info({ share: svc.name, ...r, ms: Date.now() - started }, 'WAL replayed');
  }
}

export async function startServer(config: DittoConfig, log: Logger): Promise<RunningServer> {
  const cache = new BlockCache(config.cache.read_cache_bytes);
  // One bound on uploads in flight for the whole server, whatever the number of shares.
  const uploads = pLimit(DEFAULT_PARALLEL_UPLOADS);
  const metaStores = new Map<string, MetadataStore>();
  const blockStores = new Map<string, BlockStore>();
  const cleanups: (() => Promise<void>)[] = [];
  const fileService = new FileService(log);
  let ready = false;
  const metrics = config.metrics.enabled ? new ServerMetrics() : null;

  const closeAll = async (): Promise<void> => {
    for (const c of cleanups.reverse()) {
      try {
        await c();
      } catch (err) {
        log.error({ err }, 'error during shutdown');
      }
    }
    cleanups.length = 0;
  };

  try {
    // First, so that it closes last: the spans of the shutdown are exported too.
    const tracing = config.tracing.enabled
      ? await startTracing({
          endpoint: config.tracing.endpoint,
          serviceName: config.tracing.service_name,
          sampleRatio: config.tracing.sample_ratio,
          log,
        })
      : null;
    if (tracing) {
      cleanups.push(() => tracing.shutdown());
      log.info({ endpoint: config.tracing.endpoint, sampleRatio: config.tracing.sample_ratio }, 'tracing on (OTLP/HTTP)');
    }
    // Database and block store calls are traced and their failures counted when either is on.
    const observe = metrics !== null || tracing !== null;
    for (const [name, cfg] of Object.entries(config.metadata.stores)) {
      const observer: SqlDriverObserver | undefined = observe
        ? { store: name, ...(metrics ? { onError: (reason: string) => metrics.dbError(name, reason) } : {}) }
        : undefined;
      const s = createMetadataStore(name, cfg, config.data_dir, log, observer);
      await s.open();
      metaStores.set(name, s);
      cleanups.push(() => s.close());
    }
    for (const [name, cfg] of Object.entries(config.blocks.stores)) {
      const store = createBlockStore(name, cfg, config.data_dir);
      const s = observe
        ? observeBlockStore(store, { name, ...(metrics ? { onError: (op: string) => metrics.blockStoreError(name, store.kind, op) } : {}) })
        : store;
      await s.open();
      blockStores.set(name, s);
      cleanups.push(() => s.close());
    }
    const wal = await openWal(config, log);
    cleanups.push(() => wal.wal.close());
    if (metrics) {
      metrics.watchWal(wal.wal, wal.wal.persistent ? config.cache.wal_max_bytes : config.cache.max_dirty_bytes);
      metrics.watchReadCache(cache);
      metrics.watchUploads(uploads);
    }
    cleanups.push(() => fileService.close());
    const services = new Map<number, { name: string; data: BlockService }>();
    for (const sh of config.shares) {
      const meta = metaStores.get(sh.metadata);
      const blocks = blockStores.get(sh.blocks);
      const bcfg = config.blocks.stores[sh.blocks];
      if (!meta || !blocks || !bcfg) throw new Error(`share ${sh.name}: unknown store`);
      const shareId = shareIdOf(sh.name);
      const data = new BlockService(blocks, meta, {
        shareId,
        keyPrefix: shareId.toString(16).padStart(8, '0'),
        blockSize: bcfg.block_size,
        wal: wal.wal,
        cache,
        uploads,
        log,
        ...(metrics ? { onUploadFailed: () => metrics.uploadFailed(sh.name) } : {}),
      });
      metrics?.watchShare(shareId, sh.name, () => data.pendingBytes());
      services.set(shareId, { name: sh.name, data });
      await fileService.addShare(
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
      log.info({ share: sh.name, metadata: `${sh.metadata} (${meta.kind})`, blocks: `${sh.blocks} (${blocks.kind})` }, 'share ready');
    }

    await replayWal(wal.records, services, log);
    if (wal.wal instanceof FileWal) wal.wal.tidy();
    // In the background: objects a crash left unreferenced (older than 10 minutes); hourly after.
    for (const { name, data } of services.values()) {
      data.collectGarbage().catch((err: unknown) => log.warn({ err, share: name }, 'block garbage collection failed'));
    }

    let metricsPort: number | null = null;
    if (metrics) {
      const srv = http.createServer((req, res) => serveMetrics(metrics, req, res));
      const { port, bind } = config.metrics;
      metricsPort = await listening('the metrics endpoint', 'metrics.port / DITTOFS_METRICS_PORT', bind, port, () =>
        listenHttp(srv, port, bind),
      );
      cleanups.push(() => closeHttp(srv));
      log.info({ port: metricsPort, bind }, 'metrics listening (GET /metrics)');
    }

    const nfs = new Nfs3Program(fileService, log, config.adapters.nfs.max_record_size, metrics ?? undefined);
    const mount = new MountProgram(fileService, log);
    let nfsPort: number | null = null;
    const nfsCfg = config.adapters.nfs;
    if (nfsCfg.enabled) {
      const rpc = new RpcServer([nfsRpcProgram(nfs), mountRpcProgram(mount)], {
        maxRecordSize: nfsCfg.max_record_size,
        drcSize: nfsCfg.drc_size,
        log,
        ...(metrics ? { observer: metrics } : {}),
      });
      metrics?.watchConnections('nfs', () => rpc.connections);
      nfsPort = await listening('NFS', 'adapters.nfs.port / DITTOFS_NFS_PORT (or the bind address)', nfsCfg.bind, nfsCfg.port, () =>
        rpc.listenTcp(nfsCfg.port, nfsCfg.bind),
      );
      cleanups.push(() => rpc.close());
      log.info({ port: nfsPort, bind: nfsCfg.bind }, 'NFSv3 and MOUNT v3 listening (TCP)');
      if (nfsCfg.portmapper.enabled) {
        const port = nfsPort;
        const mappings = (): PortMapping[] => [
          { prog: NFS_PROGRAM, vers: NFS_V3, prot: IPPROTO_TCP, port },
          { prog: MOUNT_PROGRAM, vers: MOUNT_V3, prot: IPPROTO_TCP, port },
          { prog: 100000, vers: 2, prot: IPPROTO_TCP, port: nfsCfg.portmapper.port },
        ];
        const pm = new RpcServer([portmapProgram(mappings)], { maxRecordSize: 64 * 1024, drcSize: 1, log });
        cleanups.push(() => pm.close());
        const pmSetting = 'adapters.nfs.portmapper.port / DITTOFS_PORTMAPPER_PORT';
        await listening('the portmapper (TCP)', pmSetting, nfsCfg.bind, nfsCfg.portmapper.port, () =>
          pm.listenTcp(nfsCfg.portmapper.port, nfsCfg.bind),
        );
        await listening('the portmapper (UDP)', pmSetting, nfsCfg.bind, nfsCfg.portmapper.port, () =>
          pm.listenUdp(nfsCfg.portmapper.port, nfsCfg.bind),
        );
        log.info({ port: nfsCfg.portmapper.port }, 'portmapper listening (TCP and UDP)');
      }
    }
    if (config.adapters.smb.enabled) {
      log.warn({ port: config.adapters.smb.port }, 'the SMB adapter is not implemented yet; SMB stays off');
    }

    let apiPort: number | null = null;
    if (config.server.api.enabled) {
      // Health endpoints only, until the REST control plane lands.
      const api = http.createServer((req, res) => {
        const url = req.url ?? '/';
        if (req.method === 'GET' && (url === '/health' || url === '/health/ready')) {
          const ok = url === '/health' || ready;
          res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ status: ok ? 'ok' : 'starting' }));
          return;
        }
        res.writeHead(404, { 'content-type': 'application/problem+json' });
        res.end(
          JSON.stringify({ type: 'about:blank', title: 'Not Found', status: 404, detail: `no route for ${req.method ?? ''} ${url}` }),
        );
      });
      const { port, bind } = config.server.api;
      apiPort = await listening('the API', 'server.api.port / DITTOFS_API_PORT', bind, port, () => listenHttp(api, port, bind));
      cleanups.push(() => new Promise<void>((resolve) => api.close(() => resolve())));
      log.info({ port: apiPort }, 'API listening (health endpoints)');
    }
    ready = true;
    let closing: Promise<void> | null = null;
    return {
      nfsPort,
      apiPort,
      metricsPort,
      fileService,
      nfs,
      metrics,
      get logLevel() {
        return log.level;
      },
      setLogLevel(level: string) {
        const from = log.level;
        setLogLevel(log, level);
        if (from !== level) log.info({ from, to: level }, 'log level changed');
      },
      close() {
        closing ??= (async () => {
          log.info('shutting down');
          await closeAll();
          log.info('shutdown complete');
        })();
        return closing;
      },
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}
