// The server's own time per NFS call, from its metrics (the dittofs_request_duration_seconds
// histogram): the mean per procedure, overall or between two readings.

/** Per procedure: calls answered and seconds spent in the server on them. */
export type CallTimes = Map<string, { count: number; sum: number }>;

/** The server's /metrics, as text. */
export async function scrapeMetrics(metricsPort: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
}

/** One histogram's `_sum` and `_count` per value of one label, from the server's /metrics. */
async function readHistogram(metricsPort: number, name: string, label: string, only?: RegExp): Promise<CallTimes> {
  const text = await scrapeMetrics(metricsPort);
  const line = new RegExp(`^${name}_(sum|count)\\{([^}]*)\\} (\\S+)$`);
  const key = new RegExp(`${label}="([^"]+)"`);
  const out: CallTimes = new Map();
  for (const l of text.split('\n')) {
    const m = line.exec(l);
    if (!m || (only && !only.test(m[2]!))) continue;
    const k = key.exec(m[2]!)?.[1];
    if (!k) continue;
    const t = out.get(k) ?? { count: 0, sum: 0 };
    if (m[1] === 'sum') t.sum = Number(m[3]);
    else t.count = Number(m[3]);
    out.set(k, t);
  }
  return out;
}

/** The NFS procedures' call counts and summed times so far. */
export function readCallTimes(metricsPort: number): Promise<CallTimes> {
  return readHistogram(metricsPort, 'dittofs_request_duration_seconds', 'procedure', /protocol="nfs"/);
}

/** The server's garbage collections so far, per kind (major, minor, incremental, weakcb): count and seconds paused. */
export function readGcTimes(metricsPort: number): Promise<CallTimes> {
  return readHistogram(metricsPort, 'nodejs_gc_duration_seconds', 'kind');
}

/**
 * Where reads were served from so far: hits and misses of the read cache in memory and of the one on
 * disk (s3 block stores; a miss there is a GET from the store).
 */
export async function readCacheCounts(metricsPort: number): Promise<Record<string, number>> {
  const text = await scrapeMetrics(metricsPort);
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^dittofs_(read|disk)_cache_(hits|misses)_total (\S+)$/gm)) out[`${m[1]} ${m[2]}`] = Number(m[3]);
  return out;
}

/** "memory cache 3 hits / 5 misses, disk cache 2 hits / 1 misses": the counts between two readings. */
export function formatCacheCounts(after: Record<string, number>, before: Record<string, number>): string {
  const d = (k: string) => (after[k] ?? 0) - (before[k] ?? 0);
  return `memory cache ${d('read hits')} hits / ${d('read misses')} misses, disk cache ${d('disk hits')} hits / ${d('disk misses')} misses`;
}

/** "major 3 in 41 ms, minor 120 in 95 ms": the collections between two readings, most time first. */
export function formatGcTimes(after: CallTimes, before: CallTimes = new Map()): string {
  return deltas(after, before)
    .sort((a, b) => b[2] - a[2])
    .map(([kind, n, sum]) => `${kind} ${n} in ${(sum * 1000).toFixed(0)} ms`)
    .join(', ');
}

/** [key, count, seconds] between two readings, of the keys with calls in between. */
function deltas(after: CallTimes, before: CallTimes): [string, number, number][] {
  return [...after]
    .map(([k, t]): [string, number, number] => {
      const b = before.get(k) ?? { count: 0, sum: 0 };
      return [k, t.count - b.count, t.sum - b.sum];
    })
    .filter(([, n]) => n > 0);
}

/**
 * "PROC=µs ..." (mean server time per call), most called first, of the calls between `before`
 * (an earlier reading; none: since start-up) and `after`.
 */
export function formatCallTimes(after: CallTimes, before: CallTimes = new Map()): string {
  return deltas(after, before)
    .sort((a, b) => b[1] - a[1])
    .map(([proc, n, sum]) => `${proc}=${((sum / n) * 1e6).toFixed(0)}`)
    .join(' ');
}
