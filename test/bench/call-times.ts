// The server's own time per NFS call, from its metrics (the dittofs_request_duration_seconds
// histogram): the mean per procedure, overall or between two readings.

/** Per procedure: calls answered and seconds spent in the server on them. */
export type CallTimes = Map<string, { count: number; sum: number }>;

const LINE = /^dittofs_request_duration_seconds_(sum|count)\{([^}]*)\} (\S+)$/;

/** The NFS procedures' call counts and summed times so far. */
export async function readCallTimes(metricsPort: number): Promise<CallTimes> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const out: CallTimes = new Map();
  for (const l of text.split('\n')) {
    const m = LINE.exec(l);
    if (!m || !/protocol="nfs"/.test(m[2]!)) continue;
    const proc = /procedure="([^"]+)"/.exec(m[2]!)?.[1];
    if (!proc) continue;
    const t = out.get(proc) ?? { count: 0, sum: 0 };
    if (m[1] === 'sum') t.sum = Number(m[3]);
    else t.count = Number(m[3]);
    out.set(proc, t);
  }
  return out;
}

/**
 * "PROC=µs ..." (mean server time per call), most called first, of the calls between `before`
 * (an earlier reading; none: since start-up) and `after`.
 */
export function formatCallTimes(after: CallTimes, before: CallTimes = new Map()): string {
  return [...after]
    .map(([proc, t]) => {
      const b = before.get(proc) ?? { count: 0, sum: 0 };
      return [proc, t.count - b.count, t.sum - b.sum] as const;
    })
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1])
    .map(([proc, n, sum]) => `${proc}=${((sum / n) * 1e6).toFixed(0)}`)
    .join(' ');
}
