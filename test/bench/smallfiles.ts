// Small-file load generator: create / stat / remove N empty files in one fresh directory
// through the NFSv3 client in ./nfsclient.ts, one request outstanding at a time.
// The workload is identical for every server: same directory name, file names, order and calls.
//
//   create: CREATE (UNCHECKED, mode 0644)                       1 RPC per file
//   stat:   LOOKUP by name, then GETATTR on the returned handle  2 RPCs per file (like libnfs's stat)
//   remove: REMOVE by name                                      1 RPC per file
// Untimed: a 200-file warm-up of the same calls first; afterwards 5000 NULL calls are timed
// as a reference (the round-trip ceiling of this client against that server).
//
// Standalone: npx tsx test/bench/smallfiles.ts --port N [--mount-port M] [--export /export] [--files N]
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { FileType, NfsError, Nfs3Client } from './nfsclient.js';
import { cpuSeconds } from './proc.js';

export interface SmallFilesOptions {
  host?: string;
  nfsPort: number;
  /** Defaults to nfsPort. */
  mountPort?: number;
  exportPath: string;
  files: number;
  /** Directory created under the export root for the run; must not exist. */
  dirName?: string;
  /** Bound on the whole workload (default 10 min). */
  timeoutMs?: number;
  /** Bound on each RPC (default 30 s). */
  callTimeoutMs?: number;
  log?: (msg: string) => void;
  /** Called just before and just after each timed phase (e.g. to read the server's CPU time). */
  onPhase?: (phase: 'create' | 'stat' | 'remove', edge: 'start' | 'end') => void;
}

export interface PhaseResult {
  ops: number;
  rpcs: number;
  seconds: number;
  opsPerSec: number;
}

export interface SmallFilesResult {
  create: PhaseResult;
  stat: PhaseResult;
  remove: PhaseResult;
  /** NULL calls per second: the round-trip ceiling of this client + transport + server dispatch. */
  nullPerSec: number;
}

const NULL_CALLS = 5000;

export const DEFAULT_DIR_NAME = 'bench-smallfiles';

export function fileName(i: number, files: number): string {
  return `f${String(i).padStart(Math.max(6, String(files - 1).length), '0')}`;
}

export async function runSmallFiles(opts: SmallFilesOptions): Promise<SmallFilesResult> {
  const files = opts.files;
  if (!Number.isInteger(files) || files < 1) throw new Error(`files must be a positive integer, got ${files}`);
  const log = opts.log ?? (() => {});
  const dirName = opts.dirName ?? DEFAULT_DIR_NAME;
  const deadline = performance.now() + (opts.timeoutMs ?? 600_000);
  const checkDeadline = (phase: string, i: number) => {
    if (performance.now() > deadline) {
      throw new Error(`small-file workload exceeded ${opts.timeoutMs ?? 600_000} ms (in ${phase}, after ${i} files)`);
    }
  };
  const names = Array.from({ length: files }, (_, i) => fileName(i, files));

  const client = await Nfs3Client.connect({
    host: opts.host,
    nfsPort: opts.nfsPort,
    mountPort: opts.mountPort,
    exportPath: opts.exportPath,
    callTimeoutMs: opts.callTimeoutMs ?? 30_000,
  });
  try {
    for (let i = 0; i < 20; i++) await client.null(); // warm the connection up
    const dir = await client.mkdirFresh(dirName, '; remove it or pass another dirName');

    // Untimed warm-up of the same calls (JIT of this client, server-side caches and threads),
    // identical for every server.
    const warm = Array.from({ length: Math.min(200, files) }, (_, i) => `warmup${String(i).padStart(3, '0')}`);
    for (const name of warm) await client.create(dir, name, 0o644, 'UNCHECKED');
    for (const name of warm) await client.getattr((await client.lookup(dir, name)).fh);
    for (const name of warm) await client.remove(dir, name);

    const timePhase = async (
      phase: 'create' | 'stat' | 'remove',
      rpcsPerOp: number,
      op: (name: string) => Promise<void>,
    ): Promise<PhaseResult> => {
      opts.onPhase?.(phase, 'start');
      const t0 = performance.now();
      for (let i = 0; i < files; i++) {
        if ((i & 63) === 0) checkDeadline(phase, i);
        await op(names[i]!);
      }
      const seconds = (performance.now() - t0) / 1000;
      opts.onPhase?.(phase, 'end');
      const r = { ops: files, rpcs: files * rpcsPerOp, seconds, opsPerSec: files / seconds };
      log(`${phase}: ${files} files in ${seconds.toFixed(3)} s = ${r.opsPerSec.toFixed(0)} ops/s`);
      return r;
    };

    const create = await timePhase('create', 1, async (name) => {
      await client.create(dir, name, 0o644, 'UNCHECKED');
    });

    const stat = await timePhase('stat', 2, async (name) => {
      const found = await client.lookup(dir, name);
      const attr = await client.getattr(found.fh);
      if (attr.type !== FileType.REG || attr.size !== 0n) {
        throw new Error(`stat ${name}: expected an empty regular file, got type ${attr.type} size ${attr.size}`);
      }
      if (found.attr && found.attr.fileid !== attr.fileid) {
        throw new Error(`stat ${name}: LOOKUP fileid ${found.attr.fileid} differs from GETATTR fileid ${attr.fileid}`);
      }
    });

    const remove = await timePhase('remove', 1, async (name) => {
      await client.remove(dir, name);
    });

    // Verify (untimed): the files are gone and the directory is empty.
    try {
      await client.lookup(dir, names[0]!);
      throw new Error(`${names[0]} still exists after REMOVE`);
    } catch (e) {
      if (!(e instanceof NfsError && e.status === 2)) throw e;
    }
    await client.rmdir(client.rootFh, dirName);

    // The round-trip ceiling, measured last so that both ends are warm.
    const n0 = performance.now();
    for (let i = 0; i < NULL_CALLS; i++) await client.null();
    const nullPerSec = NULL_CALLS / ((performance.now() - n0) / 1000);
    log(`null: ${NULL_CALLS} NULL calls = ${nullPerSec.toFixed(0)} calls/s (round-trip ceiling)`);
    return { create, stat, remove, nullPerSec };
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
      files: { type: 'string', default: '10000' },
      dir: { type: 'string', default: DEFAULT_DIR_NAME },
      pid: { type: 'string' },
    },
    strict: true,
  });
  if (!values.port) {
    console.error(
      'usage: npx tsx test/bench/smallfiles.ts --port N [--mount-port M] [--export /export] [--files N] [--dir NAME] [--pid SERVER_PID]',
    );
    process.exit(2);
  }
  // With --pid: the server's CPU seconds per 1,000 operations of each phase (holds on a busy machine).
  const pid = values.pid === undefined ? undefined : Number(values.pid);
  const cpuAt = new Map<string, number>();
  const cpu: Record<string, number> = {};
  const r = await runSmallFiles({
    ...(pid === undefined
      ? {}
      : {
          onPhase: (phase: string, edge: 'start' | 'end') => {
            const now = cpuSeconds(pid) ?? NaN;
            if (edge === 'start') cpuAt.set(phase, now);
            else cpu[phase] = ((now - (cpuAt.get(phase) ?? now)) * 1000) / Number(values.files);
          },
        }),
    host: values.host,
    nfsPort: Number(values.port),
    mountPort: values['mount-port'] ? Number(values['mount-port']) : undefined,
    exportPath: values.export,
    files: Number(values.files),
    dirName: values.dir,
    log: (m) => console.log(m),
  });
  if (pid !== undefined) {
    for (const [phase, s] of Object.entries(cpu)) console.log(`${phase}: server CPU ${s.toFixed(3)} s per 1,000 ops`);
  }
  console.log(JSON.stringify(pid === undefined ? r : { ...r, cpuSecondsPer1000: cpu }));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}
