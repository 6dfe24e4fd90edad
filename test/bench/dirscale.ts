// Does REMOVE (and CREATE) slow down as one directory grows? One directory is filled to each size
// in turn (default 1,000, then 10,000, then 50,000 entries) through test/bench/nfsclient.ts, one
// request outstanding; at each size a sample of files spread over the whole directory is removed
// and timed. The directory still holds about that many entries while the sample goes (the sample
// is 10% of it at most), and later sizes refill it, so nothing is removed twice. The creates of each
// step are timed too (creates/s while the directory grows to that size).
//
// The workload is identical for every server (same names, same order). What it leaves is removed
// with the server's data at the end of the round (the directory is not emptied: 50,000 untimed
// removes would double the time of the row).
//
// Standalone: npx tsx test/bench/dirscale.ts --port N [--mount-port M] [--export /export] [--sizes 1000,10000,50000] [--pid SERVER_PID]
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Nfs3Client } from './nfsclient.js';
import { cpuSeconds } from './proc.js';

export const DEFAULT_DIR_SIZES = [1_000, 10_000, 50_000] as const;
/** Files removed (and timed) at each size: at most 10% of the directory. */
const MAX_SAMPLE = 500;
export const DIRSCALE_DIR = 'bench-dirscale';

export interface DirScaleOptions {
  host?: string;
  nfsPort: number;
  mountPort?: number;
  exportPath: string;
  /** Ascending directory sizes (entries). */
  sizes: readonly number[];
  /** The server's pid: its CPU seconds per operation are reported too. */
  pid?: number;
  /** Bound on the whole workload (default: 60 s + 40 ms per file). */
  timeoutMs?: number;
  log?: (msg: string) => void;
}

export interface DirScaleStep {
  /** Entries in the directory when the sample was removed. */
  size: number;
  /** Files created to reach `size`, and their rate. */
  created: number;
  createPerSec: number;
  createCpuMsPerOp: number | undefined;
  /** Files removed at that size, the mean wall time and server CPU time of one REMOVE. */
  removed: number;
  removeMsPerOp: number;
  removeCpuMsPerOp: number | undefined;
}

export function dirScaleName(i: number): string {
  return `e${String(i).padStart(7, '0')}`;
}

/** Checks a --dir-sizes list: ascending positive integers, at most 1,000,000. */
export function parseDirSizes(list: string): number[] | string {
  const sizes = list.split(',').map((s) => Number(s.trim()));
  if (sizes.length === 0 || sizes.some((n) => !Number.isInteger(n) || n < 10 || n > 1_000_000))
    return 'sizes must be integers in 10..1000000, comma-separated';
  for (let i = 1; i < sizes.length; i++) if (sizes[i]! <= sizes[i - 1]!) return 'sizes must be ascending';
  return sizes;
}

export async function runDirScale(opts: DirScaleOptions): Promise<DirScaleStep[]> {
  const log = opts.log ?? (() => {});
  const largest = opts.sizes[opts.sizes.length - 1] ?? 0;
  const deadline = performance.now() + (opts.timeoutMs ?? 60_000 + largest * 40);
  const client = await Nfs3Client.connect({
    host: opts.host,
    nfsPort: opts.nfsPort,
    mountPort: opts.mountPort,
    exportPath: opts.exportPath,
    callTimeoutMs: 30_000,
  });
  const cpu = (): number | undefined => (opts.pid === undefined ? undefined : cpuSeconds(opts.pid));
  const cpuMsPerOp = (from: number | undefined, ops: number): number | undefined => {
    const now = cpu();
    return now === undefined || from === undefined || ops === 0 ? undefined : ((now - from) * 1000) / ops;
  };
  try {
    const dir = await client.mkdirFresh(DIRSCALE_DIR);
    const present = new Uint8Array(largest);
    let entries = 0;
    let next = 0; // names below `next` were created (some removed since)
    const steps: DirScaleStep[] = [];
    for (const [k, size] of opts.sizes.entries()) {
      // Grow to `size` entries: new names first, then (never needed with ascending sizes) none.
      const c0 = cpu();
      const t0 = performance.now();
      let created = 0;
      while (entries < size) {
        if ((created & 255) === 0 && performance.now() > deadline) throw new Error(`dirscale: over its time limit at ${entries} entries`);
        await client.create(dir, dirScaleName(next), 0o644, 'UNCHECKED');
        present[next++] = 1;
        entries++;
        created++;
      }
      const createSeconds = (performance.now() - t0) / 1000;
      const createCpuMsPerOp = cpuMsPerOp(c0, created);
      // The sample: spread over every name made so far, offset by the step so no name is picked twice.
      const sample = Math.min(MAX_SAMPLE, Math.floor(size / 10));
      const stride = Math.max(1, Math.floor(next / sample));
      const victims: number[] = [];
      for (let i = k % stride; i < next && victims.length < sample; i += stride) if (present[i]) victims.push(i);
      const r0 = cpu();
      const t1 = performance.now();
      for (const i of victims) {
        await client.remove(dir, dirScaleName(i));
        present[i] = 0;
      }
      const removeSeconds = (performance.now() - t1) / 1000;
      entries -= victims.length;
      const step: DirScaleStep = {
        size,
        created,
        createPerSec: created / createSeconds,
        createCpuMsPerOp,
        removed: victims.length,
        removeMsPerOp: (removeSeconds * 1000) / victims.length,
        removeCpuMsPerOp: cpuMsPerOp(r0, victims.length),
      };
      steps.push(step);
      const cpuNote = (v: number | undefined) => (v === undefined ? '' : `, server CPU ${v.toFixed(3)} ms/op`);
      log(
        `dirscale ${size} entries: ${created} creates at ${step.createPerSec.toFixed(0)}/s${cpuNote(createCpuMsPerOp)}; ` +
          `${step.removed} removes at ${step.removeMsPerOp.toFixed(3)} ms/op${cpuNote(step.removeCpuMsPerOp)}`,
      );
    }
    return steps;
  } finally {
    await client.close();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string' },
      'mount-port': { type: 'string' },
      export: { type: 'string', default: '/export' },
      sizes: { type: 'string', default: DEFAULT_DIR_SIZES.join(',') },
      pid: { type: 'string' },
    },
    strict: true,
  });
  const sizes = parseDirSizes(values.sizes);
  if (!values.port || typeof sizes === 'string') {
    if (typeof sizes === 'string') console.error(`dirscale: ${sizes}`);
    console.error(
      'usage: npx tsx test/bench/dirscale.ts --port N [--mount-port M] [--export /export] [--sizes 1000,10000,50000] [--pid PID]',
    );
    process.exit(2);
  }
  const steps = await runDirScale({
    host: values.host,
    nfsPort: Number(values.port),
    ...(values['mount-port'] ? { mountPort: Number(values['mount-port']) } : {}),
    exportPath: values.export,
    sizes,
    ...(values.pid ? { pid: Number(values.pid) } : {}),
    log: (m) => console.log(m),
  });
  console.log(JSON.stringify(steps));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}
