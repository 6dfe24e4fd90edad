// The composition root: config -> stores -> block services -> file service -> listeners. It owns
// graceful shutdown: stop accepting, drain requests, flush dirty data, close stores.
import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { BlockCache } from './blocks/cache.js';
import pLimit from 'p-limit';
import { BLOCK_BUFFERS_IDLE_MS, type BlockService, DEFAULT_PARALLEL_UPLOADS, KEPT_BLOCK_BUFFER_BYTES } from './blocks/service.js';
import type { DittoConfig } from './config/types.js';
import { FileWal, MemoryWal, RECORD_SHARE_STORED, type ReplayRecord, type Wal } from './blocks/wal.js';
import { MOUNT_PROGRAM, MOUNT_V3, NFS_PROGRAM, NFS_V3 } from './nfs3/constants.js';
import { MountProgram } from './nfs3/mount.js';
import { Nfs3Program } from './nfs3/nfs.js';
import { mountRpcProgram, nfsRpcProgram } from './nfs3/programs.js';
import { setLogLevel } from './obs/logger.js';
import { serveMetrics, ServerMetrics } from './obs/metrics.js';
import { startTracing } from './obs/tracing.js';
import { IPPROTO_TCP, portmapProgram, type PortMapping } from './rpc/portmap.js';
import { RpcServer } from './rpc/server.js';
import { FileService } from './vfs/service.js';
import { buildApi, type ApiRuntime, type ReadinessCheck } from './api/index.js';
import {
  checkStore,
  controlApplier,
  desiredFromFile,
  desiredFromSnapshot,
  openControlPlane,
  seconds,
  StoreHealth,
} from './controlplane.js';
import { protocolServed } from './protocols.js';
import { AdapterRuntime, LiveAdapter } from './adapters.js';
import { serveLocalControl } from './local-control.js';
import { ShareRuntime } from './shares.js';
import { Coordinator, redisPassword, walIdentity } from './coord/leases.js';
import { RedisClusterLocks } from './coord/locks.js';
import { ControlReplicas, controlScopeOf } from './coord/control.js';
import { convergeReply } from './api/convergence.js';
import { CTL_VERSION as SERVER_VERSION } from './ctl/version.js';
import { BufferPools } from './wire/buffer-pool.js';
import { listenOn } from './wire/listen.js';
import { DiskBlockCache } from './blocks/disk-cache.js';
import { PgDriver } from './meta/sql/pg.js';
import { SmbServer } from './smb2/server.js';
import { loadServerGuid } from './smb2/guid.js';
import { controlPlaneDirectory, type SmbUserDirectory } from './smb2/auth/index.js';

export interface RunningServer {
  /** The NFS port now; null while the NFS adapter is not served (disabled). */
  readonly nfsPort: number | null;
  /** The SMB2 port now; null while the SMB adapter is not served (disabled). */
  readonly smbPort: number | null;
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

/** One address the server is going to listen on, as `checkListenAddresses` checks it. */
export interface PlannedListener {
  what: string;
  setting: string;
  host: string;
  port: number;
  transport: 'tcp' | 'udp';
}

/** Every address the config makes the server listen on (TCP, and UDP for the portmapper). */
export function plannedListeners(config: DittoConfig): PlannedListener[] {
  const out: PlannedListener[] = [];
  const nfs = config.adapters.nfs;
  if (nfs.enabled) {
    out.push({ what: 'NFS', setting: 'adapters.nfs.port / DITTOFS_NFS_PORT', host: nfs.bind, port: nfs.port, transport: 'tcp' });
    if (nfs.portmapper.enabled) {
      const setting = 'adapters.nfs.portmapper.port / DITTOFS_PORTMAPPER_PORT';
      out.push({ what: 'the portmapper (TCP)', setting, host: nfs.bind, port: nfs.portmapper.port, transport: 'tcp' });
      out.push({ what: 'the portmapper (UDP)', setting, host: nfs.bind, port: nfs.portmapper.port, transport: 'udp' });
    }
  }
  const smb = config.adapters.smb;
  if (protocolServed('smb', smb.enabled)) {
    out.push({ what: 'SMB', setting: 'adapters.smb.port / DITTOFS_SMB_PORT', host: smb.bind, port: smb.port, transport: 'tcp' });
  }
  if (config.server.api.enabled) {
    const { bind, port } = config.server.api;
    out.push({ what: 'the API', setting: 'server.api.port / DITTOFS_API_PORT', host: bind, port, transport: 'tcp' });
  }
  if (config.metrics.enabled) {
    const { bind, port } = config.metrics;
    out.push({ what: 'the metrics endpoint', setting: 'metrics.port / DITTOFS_METRICS_PORT', host: bind, port, transport: 'tcp' });
  }
  return out;
}

const WILDCARDS = new Set(['0.0.0.0', '::', '']);
/** Several servers: how long a control-plane change waits for the others to apply it before answering. */
const CONTROL_CONVERGE_MS = 10_000;
/** Several servers: how often the control database's generation is compared with the one applied. */
const CONTROL_CATCH_UP_MS = 5_000;

/**
 * Checks, before anything is created or opened, that every listener of the config can bind: two
 * settings naming the same port, or a port another process holds, stop the start here, with the
 * setting to change, instead of after the control database was created (and the first admin's
 * password printed) or the WAL replayed. Each address is bound and released at once.
 */
export async function checkListenAddresses(config: DittoConfig): Promise<void> {
  const planned = plannedListeners(config);
  for (let i = 0; i < planned.length; i++) {
    for (let j = 0; j < i; j++) {
      const a = planned[j]!;
      const b = planned[i]!;
      const overlap = a.host === b.host || WILDCARDS.has(a.host) || WILDCARDS.has(b.host);
      // Port 0 asks the system for any free port: two of those never collide.
      if (a.port !== 0 && a.port === b.port && a.transport === b.transport && overlap) {
        throw new Error(`${b.what} and ${a.what} are both set to port ${b.port}; change ${b.setting} or ${a.setting}`);
      }
    }
  }
  for (const l of planned) {
    await listening(l.what, l.setting, l.host, l.port, () => (l.transport === 'tcp' ? probeTcp(l.host, l.port) : probeUdp(l.host, l.port)));
  }
}

function probeTcp(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen({ port, host, exclusive: true }, () => srv.close(() => resolve()));
  });
}

function probeUdp(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
    sock.once('error', (err) => {
      sock.close();
      reject(err);
    });
    sock.bind({ port, address: host, exclusive: true }, () => sock.close(() => resolve()));
  });
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

/**
 * The WAL: segment files under `cache.wal_dir` (default `<data_dir>/wal`) unless `persistent` is
 * false (every block store `memory` and no control plane to add others later), in which case
 * nothing could be recovered anyway and dirty data stays in memory.
 */
interface WalOpened {
  wal: Wal;
  records: ReplayRecord[];
  /** What the scan found (persistent WAL only), for the start-up line once replay is done. */
  summary: { dir: string; segments: number; records: number; bytes: number; tornBytes: number; corrupt: number; started: number } | null;
}

async function openWal(config: DittoConfig, persistent: boolean, log: Logger): Promise<WalOpened> {
  if (!persistent) return { wal: new MemoryWal(config.cache.max_dirty_bytes), records: [], summary: null };
  const dir = path.resolve(config.cache.wal_dir ?? path.join(config.data_dir, 'wal'));
  const started = Date.now();
  log.info({ phase: 'wal', dir }, 'start-up: reading the WAL');
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
  const corrupt = report.corruptRecords.length + report.corruptRanges.length;
  if (corrupt > 0) log.error(summary, 'WAL has corrupt records: their bytes are not served (details logged above)');
  else log.info({ phase: 'wal', ...summary }, `start-up: WAL read in ${seconds(summary.ms)} (${report.records} records to replay)`);
  return {
    wal,
    records,
    summary: {
      dir,
      segments: report.segments,
      records: report.records,
      bytes: report.dataBytes,
      tornBytes: report.tornBytes,
      corrupt,
      started,
    },
  };
}

/** The start-up line about the WAL: after a clean stop there is nothing to replay, and it says so. */
function logWalReplayed(s: NonNullable<WalOpened['summary']>, log: Logger): void {
  const ms = Date.now() - s.started;
  if (s.records === 0 && s.tornBytes === 0 && s.corrupt === 0) {
    log.info({ phase: 'wal replay', dir: s.dir, ms }, 'WAL clean, nothing to replay');
  } else {
    log.info(
      {
        phase: 'wal replay',
        dir: s.dir,
        segments: s.segments,
        records: s.records,
        bytes: s.bytes,
        tornBytes: s.tornBytes,
        corrupt: s.corrupt,
        ms,
      },
      `WAL replayed: ${s.records} records (${s.bytes} bytes) in ${ms} ms`,
    );
  }
}

/** Hands every share its WAL records; records of a share that is not configured stop the start. */
async function replayWal(all: ReplayRecord[], services: Map<number, { name: string; data: BlockService }>, log: Logger): Promise<void> {
  // A share-stored marker says every earlier record of its share is in the block store already.
  const storedUpTo = new Map<number, number>();
  all.forEach((r, i) => {
    if (r.type === RECORD_SHARE_STORED) storedUpTo.set(r.share, i);
  });
  const records = all.filter((r, i) => r.type !== RECORD_SHARE_STORED && i > (storedUpTo.get(r.share) ?? -1));
  if (records.length < all.length) log.info({ skipped: all.length - records.length }, 'WAL records of shares already stored skipped');
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

function fenceCheck(fence: { check(): void }): ReadinessCheck {
  try {
    fence.check();
    return { ok: true };
  } catch (err) {
    return { ok: false, detail: (err as Error).message };
  }
}

export interface StartServerOptions {
  /**
   * Where the first admin's generated password goes, once (default: standard error). `dittofs
   * start --background` passes a pipe to the command that started it: there standard error is
   * the log file, which must never hold the password.
   */
  showAdminPassword?: (text: string) => void;
}

export async function startServer(config: DittoConfig, log: Logger, opts: StartServerOptions = {}): Promise<RunningServer> {
  const startedAt = Date.now();
  // First of all: a port conflict must not leave anything behind (a created admin, a new database).
  await checkListenAddresses(config);
  const cache = new BlockCache(config.cache.read_cache_bytes);
  // One bound on uploads in flight for the whole server, whatever the number of shares.
  const uploads = pLimit(DEFAULT_PARALLEL_UPLOADS);
  // Shared memory: the S3 client hashes a block for its signature on a worker thread, in place.
  // Up to one buffer per upload in flight is kept while uploads run, fewer once they have stopped.
  const buffers = new BufferPools(KEPT_BLOCK_BUFFER_BYTES, true, DEFAULT_PARALLEL_UPLOADS);
  const trimBuffers = setInterval(() => buffers.trimIdle(BLOCK_BUFFERS_IDLE_MS), BLOCK_BUFFERS_IDLE_MS);
  trimBuffers.unref();
  const cleanups: (() => Promise<void>)[] = [
    () => {
      clearInterval(trimBuffers);
      return Promise.resolve();
    },
  ];
  const fileService = new FileService(log);
  const metrics = config.metrics.enabled ? new ServerMetrics() : null;
  let replayed = false;
  // The protocol listeners, started below and changed by the control plane while the server runs.
  const adapters = new AdapterRuntime();

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

  let control: Awaited<ReturnType<typeof openControlPlane>> | null = null;

  const changeLogLevel = (level: string): void => {
    const from = log.level;
    setLogLevel(log, level);
    if (from !== level) log.info({ from, to: level }, 'log level changed');
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

    // The control plane (API on): its database says which stores and shares to serve.
    control = config.server.api.enabled ? await openControlPlane(config, log) : null;
    const openedControl = control;
    if (openedControl) cleanups.push(() => openedControl.store.close());
    const initial = control ? desiredFromSnapshot(control.snapshot) : desiredFromFile(config);

    const persistentWal = control !== null || initial.shares.some((s) => initial.blockStores[s.blocks]?.type !== 'memory');
    const wal = await openWal(config, persistentWal, log);
    cleanups.push(() => wal.wal.close());
    if (metrics) {
      metrics.watchWal(wal.wal, wal.wal.persistent ? config.cache.wal_max_bytes : config.cache.max_dirty_bytes);
      metrics.watchReadCache(cache);
      metrics.watchUploads(uploads);
    }
    // The read cache on disk (for s3 block stores), next to the WAL on the server's volume.
    const diskCacheDir = path.resolve(config.cache.disk_cache_dir ?? path.join(config.data_dir, 'cache'));
    const diskCache =
      config.cache.disk_cache_bytes > 0 ? await DiskBlockCache.open(diskCacheDir, config.cache.disk_cache_bytes, log) : null;
    if (diskCache) cleanups.push(async () => diskCache.close());
    if (metrics && diskCache) metrics.watchDiskCache(diskCache);
    // Several servers on one store: write leases in Redis (closed after the shares have stored
    // their data, so the leases are let go last).
    const redisCfg = config.coordination.redis;
    const coordination =
      redisCfg.url === undefined
        ? null
        : await Coordinator.open({
            url: redisCfg.url,
            keyPrefix: redisCfg.key_prefix,
            tls: redisCfg.tls,
            leaseTtlMs: redisCfg.lease_ttl,
            log: log.child({ component: 'coordination' }),
            // The dirty marks it sets name its WAL, which a restart on the same WAL recognizes.
            ...(wal.summary ? { walId: await walIdentity(wal.summary.dir) } : {}),
            ...(await redisPassword(redisCfg).then((password) => (password === undefined ? {} : { password }))),
          });
    if (coordination) {
      cleanups.push(() => coordination.close());
      log.info({ redis: redisCfg.url, server: coordination.serverId }, 'coordination on: several servers may serve the postgres stores');
    }
    // Several servers: share modes, delete-pending and byte-range locks of the shared stores in Redis.
    const clusterLocks = coordination
      ? await RedisClusterLocks.open(coordination, log.child({ component: 'cluster-locks' }), config.adapters.smb.oplock_break_timeout)
      : null;
    if (clusterLocks) {
      fileService.opens.attachCluster(clusterLocks);
      fileService.byteRanges.attachCluster(clusterLocks);
      cleanups.push(() => clusterLocks.close());
    }
    const shares = new ShareRuntime({
      fileService,
      coordination,
      clusterLocks,
      wal: wal.wal,
      cache,
      uploads,
      buffers,
      diskCache,
      dataDir: config.data_dir,
      log,
      metrics,
      observe,
    });
    cleanups.push(() => shares.close());
    cleanups.push(() => fileService.close());
    const phaseStart = Date.now();
    log.info({ phase: 'stores', shares: initial.shares.length }, 'start-up: opening the stores of every share');
    await shares.apply(initial, { strict: true });
    log.info({ phase: 'stores', ms: Date.now() - phaseStart }, `start-up: stores opened in ${seconds(Date.now() - phaseStart)}`);

    await replayWal(wal.records, shares.services(), log);
    await coordination?.clearFormerMarks();
    if (wal.wal instanceof FileWal) wal.wal.tidy();
    if (wal.summary) logWalReplayed(wal.summary, log);
    replayed = true;
    // In the background: objects a crash left unreferenced (older than 10 minutes); hourly after.
    const collect = (name: string, data: BlockService): void => {
      data.collectGarbage().catch((err: unknown) => log.warn({ err, share: name }, 'block garbage collection failed'));
    };
    for (const { name, data } of shares.services().values()) collect(name, data);

    let applier: ReturnType<typeof controlApplier> | null = null;
    // Several servers on one control database: each reports the generation it applied (coord/control.ts).
    const replicas = control && coordination ? new ControlReplicas(coordination, controlScopeOf(config.database)) : null;
    if (replicas) cleanups.push(() => replicas.close());
    if (control) {
      applier = controlApplier(
        control.store,
        fileService,
        async (snap) => {
          const before = shares.services();
          const r = await shares.apply(desiredFromSnapshot(snap));
          for (const [id, { name, data }] of shares.services()) if (!before.has(id)) collect(name, data);
          if (r.added.length + r.removed.length + r.updated.length > 0) log.info({ generation: snap.generation, ...r }, 'shares changed');
          // Adapters: a row changed through the API starts, stops or moves its listener here too.
          await adapters.observe(snap.adapters);
        },
        changeLogLevel,
        log,
        (generation) => void replicas?.record(generation),
      );
      await applier.applySnapshot(control.snapshot);
      const a = applier;
      const unsubscribe = openedControl!.store.onChange(() => a.schedule());
      // Several servers on one control database: each change is published, and applied by the others.
      const unpublish = coordination ? openedControl!.store.onChange((c) => coordination.publishControl(c.generation)) : () => undefined;
      const unhear = coordination ? coordination.onControlChange(() => a.schedule()) : () => undefined;
      // A change published while this server was away from Redis is not heard: the database is asked now and then.
      const catchUp = coordination
        ? setInterval(() => {
            openedControl!.store.generation().then(
              (g) => {
                if (g > a.appliedGeneration) a.schedule();
              },
              () => undefined,
            );
          }, CONTROL_CATCH_UP_MS)
        : null;
      catchUp?.unref();
      cleanups.push(async () => {
        if (catchUp) clearInterval(catchUp);
        unpublish();
        unhear();
        unsubscribe();
        await a.settled();
      });
    }

    let metricsPort: number | null = null;
    if (metrics) {
      const srv = http.createServer((req, res) => serveMetrics(metrics, req, res));
      const { port, bind } = config.metrics;
      metricsPort = await listening('the metrics endpoint', 'metrics.port / DITTOFS_METRICS_PORT', bind, port, () =>
        listenOn(srv, port, bind),
      );
      cleanups.push(() => closeHttp(srv));
      log.info({ port: metricsPort, bind }, 'metrics listening (GET /metrics)');
    }

    const nfs = new Nfs3Program(fileService, log, config.adapters.nfs.max_record_size, metrics ?? undefined);
    const mount = new MountProgram(fileService, log);
    const nfsCfg = config.adapters.nfs;
    // Each start of an adapter (at start-up, and when the control plane enables or moves it) makes
    // a fresh server on the new port, with the config's bind address and limits.
    let nfsRpc: RpcServer | null = null;
    metrics?.watchConnections('nfs', () => nfsRpc?.connections ?? 0);
    // The portmapper runs while NFS is served; its mappings name the port NFS listens on now.
    let portmapper: RpcServer | null = null;
    let nfsMappedPort = 0;
    const startPortmapper = async (): Promise<void> => {
      if (!nfsCfg.portmapper.enabled || portmapper !== null) return;
      const mappings = (): PortMapping[] => [
        { prog: NFS_PROGRAM, vers: NFS_V3, prot: IPPROTO_TCP, port: nfsMappedPort },
        { prog: MOUNT_PROGRAM, vers: MOUNT_V3, prot: IPPROTO_TCP, port: nfsMappedPort },
        { prog: 100000, vers: 2, prot: IPPROTO_TCP, port: nfsCfg.portmapper.port },
      ];
      const pm = new RpcServer([portmapProgram(mappings)], {
        maxRecordSize: 64 * 1024,
        drcSize: 1,
        maxConnections: 64,
        maxConnectionsPerAddress: 16,
        handshakeTimeoutMs: 10_000,
        idleTimeoutMs: 60_000,
        maxBufferedRequestBytes: 4 * 1024 * 1024,
        name: 'portmapper',
        log,
      });
      const pmSetting = 'adapters.nfs.portmapper.port / DITTOFS_PORTMAPPER_PORT';
      try {
        await listening('the portmapper (TCP)', pmSetting, nfsCfg.bind, nfsCfg.portmapper.port, () =>
          pm.listenTcp(nfsCfg.portmapper.port, nfsCfg.bind),
        );
        await listening('the portmapper (UDP)', pmSetting, nfsCfg.bind, nfsCfg.portmapper.port, () =>
          pm.listenUdp(nfsCfg.portmapper.port, nfsCfg.bind),
        );
      } catch (err) {
        await pm.close();
        throw err;
      }
      portmapper = pm;
      log.info({ port: nfsCfg.portmapper.port }, 'portmapper listening (TCP and UDP)');
    };
    const stopPortmapper = async (): Promise<void> => {
      const pm = portmapper;
      portmapper = null;
      await pm?.close();
    };
    const nfsAdapter = new LiveAdapter(
      'nfs',
      async (requested) => {
        const rpc = new RpcServer([nfsRpcProgram(nfs), mountRpcProgram(mount)], {
          maxRecordSize: nfsCfg.max_record_size,
          drcSize: nfsCfg.drc_size,
          maxConnections: nfsCfg.max_connections,
          maxConnectionsPerAddress: nfsCfg.max_connections_per_address,
          handshakeTimeoutMs: nfsCfg.handshake_timeout,
          idleTimeoutMs: nfsCfg.idle_timeout,
          maxBufferedRequestBytes: nfsCfg.max_buffered_request_bytes,
          name: 'NFS',
          settings: 'adapters.nfs',
          log,
          ...(metrics ? { observer: metrics } : {}),
        });
        let port: number;
        try {
          port = await listening('NFS', 'adapters.nfs.port / DITTOFS_NFS_PORT (or the bind address)', nfsCfg.bind, requested, () =>
            rpc.listenTcp(requested, nfsCfg.bind),
          );
          await startPortmapper();
        } catch (err) {
          await rpc.close();
          throw err;
        }
        nfsRpc = rpc;
        nfsMappedPort = port;
        log.info({ port, bind: nfsCfg.bind }, 'NFSv3 and MOUNT v3 listening (TCP)');
        return {
          port,
          requested,
          close: async () => {
            if (nfsRpc === rpc) nfsRpc = null;
            await rpc.close();
          },
        };
      },
      log,
      stopPortmapper,
      nfsCfg,
    );
    cleanups.push(async () => {
      await nfsAdapter.close();
      await stopPortmapper();
    });
    await nfsAdapter.open();
    await adapters.attach(nfsAdapter);
    const smbCfg = config.adapters.smb;
    // Users and their NT hashes come from the control plane; without it nobody can log in.
    const directory: SmbUserDirectory = control ? controlPlaneDirectory(control.store) : { lookup: () => Promise.resolve(null) };
    // Read (or made) at the first start of the SMB listener: a server that never serves SMB keeps none.
    let serverGuid: Buffer | null = null;
    let smbServer: SmbServer | null = null;
    metrics?.watchConnections('smb', () => smbServer?.connections ?? 0);
    const smbAdapter = new LiveAdapter(
      'smb',
      async (requested) => {
        serverGuid ??= await loadServerGuid(config.data_dir);
        fileService.opens.maxOpensPerUser = smbCfg.max_opens_per_user;
        const smb = new SmbServer({
          fs: fileService,
          directory,
          serverGuid,
          signingRequired: smbCfg.signing_required,
          encryptionRequired: smbCfg.encryption_required,
          oplockBreakTimeoutMs: smbCfg.oplock_break_timeout,
          durableHandleTimeoutMs: smbCfg.durable_handle_timeout,
          serverName: os.hostname().split('.')[0]!.toUpperCase().slice(0, 15) || 'DITTOFS',
          domain: 'WORKGROUP',
          maxConnections: smbCfg.max_connections,
          maxConnectionsPerAddress: smbCfg.max_connections_per_address,
          handshakeTimeoutMs: smbCfg.handshake_timeout,
          idleTimeoutMs: smbCfg.idle_timeout,
          maxBufferedRequestBytes: smbCfg.max_buffered_request_bytes,
          log: log.child({ component: 'smb' }),
          ...(metrics ? { observer: metrics, data: metrics } : {}),
        });
        let port: number;
        try {
          port = await listening('SMB', 'adapters.smb.port / DITTOFS_SMB_PORT (or the bind address)', smbCfg.bind, requested, () =>
            smb.listen(requested, smbCfg.bind),
          );
        } catch (err) {
          await smb.close();
          throw err;
        }
        smbServer = smb;
        log.info(
          { port, bind: smbCfg.bind, signingRequired: smbCfg.signing_required, encryptionRequired: smbCfg.encryption_required },
          'SMB2 listening (TCP, dialects 2.0.2, 2.1, 3.0, 3.0.2 and 3.1.1)',
        );
        return {
          port,
          requested,
          close: async () => {
            if (smbServer === smb) smbServer = null;
            await smb.close();
          },
        };
      },
      log,
      undefined,
      smbCfg,
    );
    cleanups.push(() => smbAdapter.close());
    await smbAdapter.open();
    await adapters.attach(smbAdapter);
    const nfsPort = nfsAdapter.serving().port;

    let apiPort: number | null = null;
    if (control && applier) {
      const health = new StoreHealth(shares, log);
      cleanups.push(async () => health.stop());
      const settledApplier = applier;
      // A postgres control database is held by this server alone (meta/sql/fence.ts).
      const controlDriver = control.store.driver;
      const controlFence = controlDriver instanceof PgDriver ? controlDriver.fence : null;
      /**
       * What failed for good, by check name (liveness answers 503 with all of it): the WAL after a
       * failed fsync, share stores (StoreHealth.failures), and the control database (an fsync of
       * the embedded one failed; a postgres one runs with sync: change and never does: no user,
       * share or permission change, and no SMB logon, until a restart).
       */
      const brokenStores = (): Record<string, string> => {
        const out: Record<string, string> = {};
        if (wal.wal.failure) out.wal = wal.wal.failure.message;
        Object.assign(out, health.failures());
        const controlFailure = controlDriver.failure?.();
        if (controlFailure) out.control = controlFailure.message;
        return out;
      };
      const runtime: ApiRuntime = {
        ready: () => {
          const failed = brokenStores();
          const checks: Record<string, ReadinessCheck> = {
            wal: !replayed
              ? { ok: false, detail: 'replaying the WAL' }
              : failed.wal !== undefined
                ? { ok: false, detail: failed.wal }
                : wal.wal.writable
                  ? { ok: true }
                  : { ok: false, detail: 'the WAL volume is full: writes wait until uploads free space' },
            ...(controlFence ? { 'control:fence': fenceCheck(controlFence) } : {}),
            ...(failed.control !== undefined ? { control: { ok: false, detail: failed.control } } : {}),
            // Without Redis this server cannot prove it may write: writes answer JUKEBOX.
            ...(coordination
              ? {
                  coordination: coordination.ready
                    ? { ok: true }
                    : { ok: false, detail: 'Redis is not reachable: writes wait, then answer JUKEBOX' },
                }
              : {}),
            // What the adapters serve against what the control plane asks (adapters.ts).
            ...adapters.readiness(),
            ...health.checks(),
            ...walDataCheck(shares),
          };
          return { ready: Object.values(checks).every((c) => c.ok), checks, applied_generation: settledApplier.appliedGeneration };
        },
        failure: () => {
          const why = Object.entries(brokenStores()).map(([key, detail]) => `${key}: ${detail}`);
          return why.length === 0 ? null : why.join('; ');
        },
        checkStore: (kind, type, cfg) => checkStore(kind, type, cfg, config.data_dir, log),
        adapters: {
          settle: async () => {
            await settledApplier.applyUpTo(await openedControl!.store.generation());
          },
          serving: (type, row) => adapters.serving(type, row),
        },
        setLogLevel: (level) => changeLogLevel(level),
        ...(replicas
          ? {
              control: {
                appliedGeneration: () => settledApplier.appliedGeneration,
                converge: async () => {
                  const generation = await openedControl!.store.generation();
                  await settledApplier.applyUpTo(generation);
                  return replicas.waitApplied(generation, CONTROL_CONVERGE_MS);
                },
              },
            }
          : {}),
      };
      const api = buildApi({
        store: control.store,
        auth: { jwtSecret: control.jwtSecret, bcryptCost: config.server.api.bcrypt_cost },
        runtime,
        logger: log, // buildApi adds component: 'api'
        rateLimit: {
          max: config.server.api.rate_limit.max,
          loginMax: config.server.api.rate_limit.login_max,
          loginAddressMax: config.server.api.rate_limit.login_address_max,
        },
        maxConnections: config.server.api.max_connections,
        maxConnectionsPerAddress: config.server.api.max_connections_per_address,
        trustProxy: config.server.api.trust_proxy,
        settings: 'server.api',
        version: SERVER_VERSION,
      });
      // A change answers only once the server applies it: a share created is mountable, a
      // permission revoked is refused, by the time the client reads the response.
      api.addHook('onSend', async (req, reply, payload) => {
        if (req.method !== 'GET' && req.method !== 'HEAD') {
          await settledApplier.settled();
          // Several servers: and every other one applied it too (or the answer names those that did not).
          await convergeReply(runtime, reply);
        }
        return payload;
      });
      const { port, bind } = config.server.api;
      printCreatedAdmin(control.createdAdmin, opts.showAdminPassword);
      apiPort = await listening('the API', 'server.api.port / DITTOFS_API_PORT', bind, port, async () => {
        await api.listen({ port, host: bind });
        const a = api.server.address();
        return typeof a === 'object' && a ? a.port : port;
      });
      cleanups.push(() => api.close());
      log.info({ port: apiPort, bind }, 'API listening (/api/v1, /health)');
      // For `dittofs backup controlplane` on this machine while the server runs.
      // Not worth failing a start for: without it, a backup needs the server stopped.
      const local = await serveLocalControl(config.data_dir, control.store, SERVER_VERSION, log).catch((err: unknown) => {
        log.warn({ err }, 'the local control socket could not be opened: "dittofs backup" needs the server stopped');
        return null;
      });
      if (local) cleanups.push(() => local.close());
    }
    const ms = Date.now() - startedAt;
    log.info({ phase: 'ready', ms, nfsPort, apiPort, metricsPort }, `start-up: listeners up, dittofs ready in ${seconds(ms)}`);
    let closing: Promise<void> | null = null;
    let closedPorts: { nfs: number | null; smb: number | null } | null = null;
    return {
      // Closed: the ports it listened on until then (callers check that they refuse connections now).
      get nfsPort() {
        return closedPorts?.nfs ?? nfsAdapter.serving().port;
      },
      get smbPort() {
        return closedPorts?.smb ?? smbAdapter.serving().port;
      },
      apiPort,
      metricsPort,
      fileService,
      nfs,
      metrics,
      get logLevel() {
        return log.level;
      },
      setLogLevel: changeLogLevel,
      close() {
        closedPorts ??= { nfs: nfsAdapter.serving().port, smb: smbAdapter.serving().port };
        closing ??= (async () => {
          const t = Date.now();
          await closeAll();
          log.info({ ms: Date.now() - t }, 'shutdown complete');
        })();
        return closing;
      },
    };
  } catch (err) {
    // A start that fails after creating the first admin takes it back: the next start creates it
    // again and prints its password, instead of leaving an admin whose password nobody saw.
    const created = control?.createdAdmin;
    if (control && created) {
      const store = control.store;
      await store.deleteUser(created.username).then(
        () => log.info({ user: created.username }, 'start-up failed: the admin user created by this start was removed again'),
        (e: unknown) => log.warn({ err: e }, 'start-up failed, and the admin user created by this start could not be removed'),
      );
    }
    await closeAll();
    throw err;
  }
}

/** The first admin's generated password, shown once (on stderr unless `show` says where; never logged). */
function printCreatedAdmin(
  admin: { username: string; generatedPassword?: string } | undefined,
  show: (text: string) => void = (text) => void process.stderr.write(text),
): void {
  if (admin?.generatedPassword === undefined) return;
  show(
    `dittofs: created user "${admin.username}" with password ${admin.generatedPassword}\n` +
      'dittofs: log in (dittofsctl login) and change it; it is not shown again (lost: dittofs admin reset-password)\n',
  );
}

/**
 * Blocks whose upload stopped at WAL data that failed its CRC (blocks/service.ts): a check that
 * stays ok, since the server serves every other byte (not ready would take it out of service),
 * with a detail `dittofs status` shows as a warning. Absent while there are none.
 */
function walDataCheck(shares: ShareRuntime): Record<string, ReadinessCheck> {
  const bad: string[] = [];
  let n = 0;
  for (const { name, data } of shares.services().values()) {
    for (const b of data.corruptBlocks()) {
      if (n++ < 5) bad.push(`share ${name} inode ${b.inode} block ${b.block} (segment ${b.segment}, record at ${b.record})`);
    }
  }
  if (n === 0) return {};
  return {
    'wal:data': {
      ok: true,
      detail: `${n} block(s) not uploaded: WAL data failed its CRC32C; their segments are kept: ${bad.join('; ')}${n > bad.length ? '; ...' : ''}`,
    },
  };
}
