// Prometheus metrics of one server (prom-client), served at GET /metrics on the metrics port. Each
// server owns its registry (never prom-client's global one), so several servers in one process
// (tests) keep separate figures.
//
// The protocol engines report through small interfaces (RequestObserver, DataObserver) and never
// see prom-client. On their hot paths a report bumps plain numbers in a slot found by map lookups
// of constant strings (about 20 ns; a prom-client histogram observation costs some 400 ns, most
// of it hashing the labels); prom-client sees the figures when scraped. Gauges (WAL, cache,
// uploads, connections) are read from their owners at scrape time.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { collectDefaultMetrics, Counter, Gauge, Registry, type Metric } from 'prom-client';
import { errorMessage } from '../error-message.js';

/** Request latency buckets, in seconds: 50 µs to 10 s. */
export const LATENCY_BUCKETS_SECONDS: readonly number[] = Object.freeze([
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
]);

/** What an RPC server reports for every call it answers. */
export interface RequestObserver {
  /**
   * One call answered. `protocol` is the RPC program (`nfs`, `mount`), `procedure` its name
   * (`WRITE`), `status` the outcome (`ok`, `noent`, `jukebox`, ..., or an RPC-level `garbage_args`,
   * `system_err`, `proc_unavail`). Pass strings from fixed tables: they are map keys.
   */
  requestDone(protocol: string, procedure: string, status: string, seconds: number): void;
}

/** What a protocol engine reports about file data it moves, by share id. */
export interface DataObserver {
  bytesRead(shareId: number, bytes: number): void;
  bytesWritten(shareId: number, bytes: number): void;
}

export const NOOP_REQUEST_OBSERVER: RequestObserver = Object.freeze({ requestDone() {} });
export const NOOP_DATA_OBSERVER: DataObserver = Object.freeze({ bytesRead() {}, bytesWritten() {} });

/** The WAL as the metrics see it (blocks/wal.ts `Wal`, structurally). */
export interface WalSource {
  readonly usedBytes: number;
  readonly persistent: boolean;
  /** Segment files (FileWal only). */
  readonly segmentCount?: number;
  /** fsync rounds so far (FileWal only). */
  readonly syncs?: number;
  /** False while the log cannot take more records: its volume is full. */
  readonly writable: boolean;
  /** Times the log's volume was found full (ENOSPC / EDQUOT). */
  readonly enospc: number;
}

/** The read cache (blocks/cache.ts `BlockCache`, structurally). */
export interface ReadCacheSource {
  readonly hits: number;
  readonly misses: number;
  readonly size: number;
}

/** The upload limiter (a p-limit function, structurally). */
export interface UploadQueueSource {
  readonly activeCount: number;
  readonly pendingCount: number;
}

interface ProcSlot {
  readonly protocol: string;
  readonly procedure: string;
  /** Status -> calls answered so far. */
  readonly statuses: Map<string, number>;
  /** Latency observations per bucket (not cumulative); the last one is +Inf. */
  readonly buckets: Float64Array;
  sum: number;
  count: number;
}

/**
 * The request latency histogram, kept in the procedure slots and handed to the registry as a
 * metric object of its own (the registry reads any object with `get()` returning a metric in
 * prom-client's JSON shape, the one `getMetricsAsJSON` documents).
 */
class LatencyHistogram {
  readonly name = 'dittofs_request_duration_seconds';
  readonly help = 'Time from decoding an RPC call to its reply being ready, by protocol and procedure.';
  readonly type = 'histogram';
  readonly aggregator = 'sum';

  constructor(private readonly slots: () => Iterable<ProcSlot>) {}

  get(): Promise<{
    name: string;
    help: string;
    type: string;
    aggregator: string;
    values: { labels: Record<string, string | number>; value: number; metricName: string }[];
  }> {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    const bucket = `${this.name}_bucket`;
    for (const slot of this.slots()) {
      const { protocol, procedure } = slot;
      let acc = 0;
      for (let i = 0; i < LATENCY_BUCKETS_SECONDS.length; i++) {
        acc += slot.buckets[i]!;
        values.push({ labels: { le: LATENCY_BUCKETS_SECONDS[i]!, protocol, procedure }, value: acc, metricName: bucket });
      }
      values.push({ labels: { le: '+Inf', protocol, procedure }, value: slot.count, metricName: bucket });
      values.push({ labels: { protocol, procedure }, value: slot.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { protocol, procedure }, value: slot.count, metricName: `${this.name}_count` });
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values });
  }

  reset(): void {
    for (const slot of this.slots()) {
      slot.buckets.fill(0);
      slot.sum = 0;
      slot.count = 0;
    }
  }
}

interface ShareSlot {
  name: string;
  read: number;
  written: number;
}

/** A label for a share id nobody registered (it should not happen): its hex fsid. */
const shareIdLabel = (id: number): string => id.toString(16).padStart(8, '0');

export interface ServerMetricsOptions {
  /** prom-client's process and Node.js metrics (process_cpu_seconds_total, nodejs_heap_size_used_bytes, ...). Default true. */
  defaultMetrics?: boolean;
}

export class ServerMetrics implements RequestObserver, DataObserver {
  readonly registry = new Registry();
  private readonly procs = new Map<string, Map<string, ProcSlot>>();
  private readonly shares = new Map<number, ShareSlot>();
  private readonly uploadFailures: Counter<'share'>;
  private readonly walDataErrors: Counter<'share' | 'operation'>;
  private readonly blockStoreErrors: Counter<'store' | 'type' | 'operation'>;
  private readonly dbErrors: Counter<'store' | 'reason'>;
  private wal: { source: WalSource; maxBytes: number } | null = null;
  private cache: ReadCacheSource | null = null;
  private diskCache: ReadCacheSource | null = null;
  private uploads: UploadQueueSource | null = null;
  private readonly dirty = new Map<string, () => number>();
  private readonly connections = new Map<string, () => number>();

  constructor(opts: ServerMetricsOptions = {}) {
    const registers = [this.registry];
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });

    const requests: Counter<'protocol' | 'procedure' | 'status'> = new Counter({
      name: 'dittofs_requests_total',
      help: 'RPC calls answered, by protocol (nfs, mount), procedure and status (ok, an NFS or MOUNT error such as noent, or an RPC error such as garbage_args).',
      labelNames: ['protocol', 'procedure', 'status'] as const,
      registers,
      collect: () => {
        requests.reset();
        for (const [protocol, byProc] of this.procs) {
          for (const [procedure, slot] of byProc) {
            for (const [status, n] of slot.statuses) requests.inc({ protocol, procedure, status }, n);
          }
        }
      },
    });
    const procs = this.procs;
    function* slots(): Iterable<ProcSlot> {
      for (const byProc of procs.values()) yield* byProc.values();
    }
    this.registry.registerMetric(new LatencyHistogram(slots) as unknown as Metric);
    const readBytes: Counter<'share'> = new Counter({
      name: 'dittofs_read_bytes_total',
      help: 'File data bytes returned by READ, by share.',
      labelNames: ['share'] as const,
      registers,
      collect: () => {
        readBytes.reset();
        for (const s of this.shares.values()) readBytes.inc({ share: s.name }, s.read);
      },
    });
    const writtenBytes: Counter<'share'> = new Counter({
      name: 'dittofs_written_bytes_total',
      help: 'File data bytes accepted by WRITE, by share.',
      labelNames: ['share'] as const,
      registers,
      collect: () => {
        writtenBytes.reset();
        for (const s of this.shares.values()) writtenBytes.inc({ share: s.name }, s.written);
      },
    });
    const connections: Gauge<'adapter'> = new Gauge({
      name: 'dittofs_open_connections',
      help: 'Client connections open now, by adapter.',
      labelNames: ['adapter'] as const,
      registers,
      collect: () => {
        connections.reset();
        for (const [adapter, count] of this.connections) connections.set({ adapter }, count());
      },
    });
    const walBytes: Gauge = new Gauge({
      name: 'dittofs_wal_bytes',
      help: 'Bytes in the write-ahead log: data not yet in the block store (and records of segments not yet retired).',
      registers,
      collect: () => {
        walBytes.set(this.wal?.source.usedBytes ?? 0);
      },
    });
    const walMax: Gauge = new Gauge({
      name: 'dittofs_wal_max_bytes',
      help: 'Size limit of the write-ahead log (cache.wal_max_bytes); writers wait past it.',
      registers,
      collect: () => {
        walMax.set(this.wal?.maxBytes ?? 0);
      },
    });
    const walSegments: Gauge = new Gauge({
      name: 'dittofs_wal_segments',
      help: 'Segment files of the write-ahead log (0 when every block store is memory: no WAL on disk).',
      registers,
      collect: () => {
        walSegments.set(this.wal?.source.segmentCount ?? 0);
      },
    });
    const walSyncs: Counter = new Counter({
      name: 'dittofs_wal_syncs_total',
      help: 'fdatasync rounds of the write-ahead log (one round serves every COMMIT waiting at that moment).',
      registers,
      collect: () => {
        walSyncs.reset();
        walSyncs.inc(this.wal?.source.syncs ?? 0);
      },
    });
    const walWritable: Gauge = new Gauge({
      name: 'dittofs_wal_writable',
      help: '1 while the write-ahead log accepts writes; 0 while its volume is full (writers wait for uploads to free space, or get NOSPC).',
      registers,
      collect: () => {
        walWritable.set(this.wal === null || this.wal.source.writable ? 1 : 0);
      },
    });
    const walEnospc: Counter = new Counter({
      name: 'dittofs_wal_enospc_total',
      help: 'Times the write-ahead log found its volume full (ENOSPC or EDQUOT, or too little left for its headroom) while reserving its next segment or writing.',
      registers,
      collect: () => {
        walEnospc.reset();
        walEnospc.inc(this.wal?.source.enospc ?? 0);
      },
    });
    const dirty: Gauge<'share'> = new Gauge({
      name: 'dittofs_dirty_bytes',
      help: 'Bytes written but not yet in the block store (dirty or being uploaded), by share.',
      labelNames: ['share'] as const,
      registers,
      collect: () => {
        dirty.reset();
        for (const [share, bytes] of this.dirty) dirty.set({ share }, bytes());
      },
    });
    const uploadQueue: Gauge<'state'> = new Gauge({
      name: 'dittofs_upload_queue_depth',
      help: 'Block uploads in flight and waiting for a slot.',
      labelNames: ['state'] as const,
      registers,
      collect: () => {
        uploadQueue.set({ state: 'in_flight' }, this.uploads?.activeCount ?? 0);
        uploadQueue.set({ state: 'waiting' }, this.uploads?.pendingCount ?? 0);
      },
    });
    this.uploadFailures = new Counter({
      name: 'dittofs_upload_failures_total',
      help: 'Block uploads that failed (their data stays in the WAL and is retried), by share.',
      labelNames: ['share'] as const,
      registers,
    });
    this.walDataErrors = new Counter({
      name: 'dittofs_wal_data_errors_total',
      help: "WAL data that failed its CRC32C when read back (changed on disk after it was logged), by share and operation: read (a READ refused) or upload (a block's upload stopped).",
      labelNames: ['share', 'operation'] as const,
      registers,
    });
    cacheMetrics(registers, 'dittofs_read_cache', 'the read cache in memory', () => this.cache);
    cacheMetrics(registers, 'dittofs_disk_cache', 'the read cache on disk (s3 block stores)', () => this.diskCache);
    this.blockStoreErrors = new Counter({
      name: 'dittofs_block_store_errors_total',
      help: 'Failed block store calls, by store, store type (s3, filesystem, memory) and operation (get, put, delete, list).',
      labelNames: ['store', 'type', 'operation'] as const,
      registers,
    });
    this.dbErrors = new Counter({
      name: 'dittofs_db_errors_total',
      help: 'Failed metadata database calls (after the driver retries), by store and reason (connection, conflict, timeout, commit_uncertain, disk_full, other).',
      labelNames: ['store', 'reason'] as const,
      registers,
    });
  }

  // ---- hot path ----------------------------------------------------------------------------------

  requestDone(protocol: string, procedure: string, status: string, seconds: number): void {
    let byProc = this.procs.get(protocol);
    if (byProc === undefined) this.procs.set(protocol, (byProc = new Map<string, ProcSlot>()));
    let slot = byProc.get(procedure);
    if (slot === undefined) {
      slot = { protocol, procedure, statuses: new Map(), buckets: new Float64Array(LATENCY_BUCKETS_SECONDS.length + 1), sum: 0, count: 0 };
      byProc.set(procedure, slot);
    }
    slot.statuses.set(status, (slot.statuses.get(status) ?? 0) + 1);
    let i = 0;
    while (i < LATENCY_BUCKETS_SECONDS.length && seconds > LATENCY_BUCKETS_SECONDS[i]!) i++;
    slot.buckets[i]!++;
    slot.sum += seconds;
    slot.count++;
  }

  private share(id: number): ShareSlot {
    let s = this.shares.get(id);
    if (s === undefined) this.shares.set(id, (s = { name: shareIdLabel(id), read: 0, written: 0 }));
    return s;
  }

  bytesRead(shareId: number, bytes: number): void {
    this.share(shareId).read += bytes;
  }

  bytesWritten(shareId: number, bytes: number): void {
    this.share(shareId).written += bytes;
  }

  // ---- rare events -------------------------------------------------------------------------------

  uploadFailed(share: string): void {
    this.uploadFailures.inc({ share });
  }

  walDataError(share: string, operation: 'read' | 'upload'): void {
    this.walDataErrors.inc({ share, operation });
  }

  blockStoreError(store: string, type: string, operation: string): void {
    this.blockStoreErrors.inc({ store, type, operation });
  }

  dbError(store: string, reason: string): void {
    this.dbErrors.inc({ store, reason });
  }

  // ---- sources read at scrape time ---------------------------------------------------------------

  /** Names a share's series (by its id, as the engines report it) and reads its dirty bytes. */
  watchShare(shareId: number, name: string, dirtyBytes: () => number): void {
    this.share(shareId).name = name;
    this.dirty.set(name, dirtyBytes);
  }

  unwatchShare(shareId: number, name: string): void {
    this.shares.delete(shareId);
    this.dirty.delete(name);
  }

  watchWal(source: WalSource, maxBytes: number): void {
    this.wal = { source, maxBytes };
  }

  watchReadCache(cache: ReadCacheSource): void {
    this.cache = cache;
  }

  watchDiskCache(cache: ReadCacheSource): void {
    this.diskCache = cache;
  }

  watchUploads(queue: UploadQueueSource): void {
    this.uploads = queue;
  }

  watchConnections(adapter: string, count: () => number): void {
    this.connections.set(adapter, count);
  }

  /** The text exposition of every metric. */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }
}

/** PREFIX_hits_total, PREFIX_misses_total and PREFIX_bytes of a block cache, read at each scrape. */
function cacheMetrics(registers: Registry[], prefix: string, what: string, source: () => ReadCacheSource | null): void {
  const hits: Counter = new Counter({
    name: `${prefix}_hits_total`,
    help: `Block reads served from ${what}.`,
    registers,
    collect: () => {
      hits.reset();
      hits.inc(source()?.hits ?? 0);
    },
  });
  const misses: Counter = new Counter({
    name: `${prefix}_misses_total`,
    help: `Block reads ${what} could not serve.`,
    registers,
    collect: () => {
      misses.reset();
      misses.inc(source()?.misses ?? 0);
    },
  });
  const bytes: Gauge = new Gauge({
    name: `${prefix}_bytes`,
    help: `Bytes of clean blocks held by ${what}.`,
    registers,
    collect: () => {
      bytes.set(source()?.size ?? 0);
    },
  });
}

/** Answers GET /metrics (and HEAD); 404 elsewhere, 405 for other methods. */
export function serveMetrics(metrics: ServerMetrics, req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '/').split('?')[0];
  if (path !== '/metrics') {
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
    res.end('not found: metrics are at /metrics\n');
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' });
    res.end('method not allowed\n');
    return;
  }
  metrics.scrape().then(
    (text) => {
      res.writeHead(200, { 'content-type': metrics.registry.contentType });
      res.end(req.method === 'HEAD' ? undefined : text);
    },
    (err: unknown) => {
      res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(`could not collect metrics: ${errorMessage(err)}\n`);
    },
  );
}
