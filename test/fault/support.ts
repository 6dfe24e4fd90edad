// Shared pieces of the fault-injection tests (test/fault/*.test.ts): server start with readiness
// and log checks, byte-range sets, and small utilities. Not a test file itself.
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { copyFile, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { COMMAND_TIMEOUT_MS, READY_TIMEOUT_MS } from '../helpers/limits.js';
import { runTool } from '../helpers/run.js';
import { startDittofs, type DittofsProcess, type StartOptions } from '../helpers/server.js';

export const KiB = 1024;
export const MiB = 1024 * 1024;

export const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** An integer from the environment (for longer or shorter runs), else `dflt`. */
export function intFromEnv(name: string, dflt: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name}=${v}: expected a non-negative integer`);
  return n;
}

/** Writes a YAML config into `dir` and returns its path. */
export async function writeConfig(dir: string, yaml: string, name = 'dittofs.yaml'): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, yaml);
  return file;
}

/**
 * The crash tests' configuration: embedded metadata and a filesystem block store of 256 KiB blocks
 * (a file spans several blocks without megabytes of data) in `dataDir`, one share `/export`.
 */
export function crashTestConfig(dataDir: string, sync?: 'change' | 'commit'): string {
  return [
    `data_dir: ${dataDir}`,
    'metadata:',
    '  stores:',
    '    default:',
    '      type: embedded',
    `      path: ${path.join(dataDir, 'meta')}`,
    ...(sync ? [`      sync: ${sync}`] : []),
    'blocks:',
    '  stores:',
    '    default:',
    '      type: filesystem',
    '      block_size: 256KiB',
    `      path: ${path.join(dataDir, 'blocks')}`,
    'shares:',
    '  - name: /export',
    '    metadata: default',
    '    blocks: default',
    '',
  ].join('\n');
}

/**
 * The environment that starts the server with its WAL volatile (volatile-wal.ts: segment writes
 * held in the process until their fdatasync, so a SIGKILL loses what no fdatasync covered, as a
 * power cut would), added to `env`; FAULT_VOLATILE_WAL=0 leaves the WAL as it is. The metadata
 * store's SQLite files are made volatile too (volatileMetaEnv); a test that uses this calls
 * restoreVolatileMeta before each start.
 */
export function volatileWalEnv(env: Record<string, string> = {}): Record<string, string> {
  env = volatileMetaEnv(env);
  if (process.env.FAULT_VOLATILE_WAL === '0') return env;
  const preload = path.join(HERE, 'volatile-wal.ts');
  return { ...env, NODE_OPTIONS: `--import tsx --import "${preload}"`, DITTOFS_TEST_VOLATILE_WAL: `${path.sep}wal${path.sep}` };
}

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** The files of the embedded metadata store (sqlite.ts: SQLITE_FILE and its -wal, -shm, -journal). */
const META_PREFIX = 'metadata.sqlite';
const SNAP = '.vm-snap';
const ENTRY = '.vm-entry';
let shim: string | undefined;

/**
 * The LD_PRELOAD shim volatile-meta.c, compiled with gcc on first use into .cache/fault/ (named by
 * a hash of its source, so an edit rebuilds it; written to a temporary name and renamed, as test
 * files running at once may build it together).
 */
export function volatileMetaShim(): string {
  if (shim !== undefined) return shim;
  const src = path.join(HERE, 'volatile-meta.c');
  const hash = createHash('sha256').update(readFileSync(src)).digest('hex').slice(0, 16);
  const dir = path.join(HERE, '..', '..', '.cache', 'fault');
  const out = path.join(dir, `volatile-meta-${hash}.so`);
  if (!existsSync(out)) {
    mkdirSync(dir, { recursive: true });
    const tmp = `${out}.${process.pid}.tmp`;
    const r = spawnSync('gcc', ['-O2', '-Wall', '-Wextra', '-Werror', '-shared', '-fPIC', '-o', tmp, src, '-ldl', '-lpthread'], {
      encoding: 'utf8',
      timeout: COMMAND_TIMEOUT_MS,
    });
    if (r.status !== 0) throw new Error(`gcc ${src} (hack/install-deps.sh test installs gcc): ${r.error?.message ?? r.stderr}`);
    renameSync(tmp, out);
  }
  return (shim = out);
}

/**
 * The environment that makes the metadata store's SQLite files volatile (volatile-meta.c,
 * LD_PRELOAD): each fsync or fdatasync of them records what it made durable, and after a SIGKILL
 * restoreVolatileMeta puts back only that, as a power cut would leave them. FAULT_VOLATILE_META=0
 * leaves them as they are.
 */
export function volatileMetaEnv(env: Record<string, string> = {}): Record<string, string> {
  if (process.env.FAULT_VOLATILE_META === '0') return env;
  return { ...env, LD_PRELOAD: volatileMetaShim(), DITTOFS_TEST_VOLATILE_META: META_PREFIX };
}

/**
 * After a SIGKILL of a server started with volatileMetaEnv (and before its next start): the
 * metadata store's files in `metaDir` become what a power cut would have left of them. A file whose
 * directory entry no sync made durable is removed; one with a durable entry gets the content it had
 * when its last completed fsync began (volatile-meta.c), or none if it was never synced; a removed
 * file whose removal no directory sync made durable comes back; the -shm (no durable state) goes.
 * Does nothing when FAULT_VOLATILE_META=0 or before the first start.
 */
export async function restoreVolatileMeta(metaDir: string): Promise<void> {
  if (process.env.FAULT_VOLATILE_META === '0' || !existsSync(metaDir)) return;
  const names = await readdir(metaDir);
  const files = new Set<string>();
  for (const n of names) {
    if (!n.startsWith(META_PREFIX)) continue;
    if (n.includes(`${SNAP}.`))
      await rm(path.join(metaDir, n), { force: true }); // a snapshot never promoted
    else if (n.endsWith(SNAP)) files.add(n.slice(0, -SNAP.length));
    else if (n.endsWith(ENTRY)) files.add(n.slice(0, -ENTRY.length));
    else files.add(n);
  }
  for (const n of files) {
    const file = path.join(metaDir, n);
    const entry = names.includes(n + ENTRY);
    const snap = names.includes(n + SNAP);
    if (!entry || n.endsWith('-shm')) {
      await rm(file, { force: true });
      await rm(file + SNAP, { force: true });
      await rm(file + ENTRY, { force: true });
    } else if (snap) {
      await copyFile(file + SNAP, file);
    } else {
      await writeFile(file, '');
    }
  }
}

/** Mounts a tmpfs of `size` (`48m`) on `dir`, made if missing (the fault tests run as root). */
export async function mountTmpfs(dir: string, size: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const r = await runTool('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`mount -t tmpfs ${dir}: ${r.stderr}`);
}

export interface LogLine {
  level: number;
  msg: string;
  raw: string;
}

const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };

/** Server log lines (pino JSON) at `minLevel` or above (50 = error, 60 = fatal); non-JSON lines too. */
export function logLinesAtLeast(output: string, minLevel = 50): LogLine[] {
  const out: LogLine[] = [];
  for (const raw of output.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      // Anything not JSON on the server's stdout/stderr (a crash trace, a start-up failure) counts.
      out.push({ level: 60, msg: line, raw: line });
      continue;
    }
    const rec = parsed as { level?: unknown; msg?: unknown };
    // pino levels: numbers, or labels when the logger formats them (DittoFS does).
    const level = typeof rec.level === 'number' ? rec.level : (LEVELS[String(rec.level)] ?? 0);
    if (level >= minLevel) out.push({ level, msg: typeof rec.msg === 'string' ? rec.msg : '', raw: line });
  }
  return out;
}

/** Polls GET /health/ready until it answers 200; fails at once if the child exits, else after timeoutMs (minutes). */
export async function waitReady(server: DittofsProcess, timeoutMs = READY_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (server.child.exitCode !== null || server.child.signalCode !== null) {
      throw new Error(`server exited (${server.child.exitCode ?? server.child.signalCode}) before it was ready\n${server.output()}`);
    }
    try {
      const res = await fetch(`http://127.0.0.1:${server.apiPort}/health/ready`, { signal: AbortSignal.timeout(2_000) });
      if (res.status === 200) return;
      last = `HTTP ${res.status}`;
    } catch (e) {
      last = (e as Error).message;
    }
    await sleep(50);
  }
  throw new Error(`server not ready within ${timeoutMs} ms (${last})\n${server.output()}`);
}

/**
 * Starts the server and waits until /health/ready says so. Throws if it does not come up, or if it
 * logged anything at error level or above while starting.
 */
export async function startReady(opts: StartOptions): Promise<DittofsProcess> {
  const server = await startDittofs(opts);
  try {
    await waitReady(server);
    const bad = logLinesAtLeast(server.output());
    if (bad.length > 0) throw new Error(`server logged errors while starting:\n${bad.map((l) => l.raw).join('\n')}`);
  } catch (e) {
    await server.kill();
    throw e;
  }
  return server;
}

/** The last `lines` lines of a text. */
export function tail(text: string, lines = 40): string {
  return text.split('\n').slice(-lines).join('\n');
}

/** A set of disjoint half-open byte ranges [start, end), kept sorted and merged. */
export class RangeSet {
  ranges: [number, number][] = [];

  add(start: number, end: number): void {
    if (end <= start) return;
    const out: [number, number][] = [];
    let s = start;
    let e = end;
    let placed = false;
    for (const r of this.ranges) {
      if (r[1] < s) out.push(r);
      else if (r[0] > e) {
        if (!placed) {
          out.push([s, e]);
          placed = true;
        }
        out.push(r);
      } else {
        s = Math.min(s, r[0]);
        e = Math.max(e, r[1]);
      }
    }
    if (!placed) out.push([s, e]);
    this.ranges = out;
  }

  /** The end of the last range (0 when empty). */
  get end(): number {
    return this.ranges.length === 0 ? 0 : this.ranges[this.ranges.length - 1]![1];
  }

  get bytes(): number {
    return this.ranges.reduce((n, r) => n + r[1] - r[0], 0);
  }
}

/** Pieces of [s, e) left after removing [cutS, cutE). */
export function subtractRange(s: number, e: number, cutS: number, cutE: number): [number, number][] {
  if (cutE <= s || cutS >= e) return [[s, e]];
  const out: [number, number][] = [];
  if (cutS > s) out.push([s, cutS]);
  if (cutE < e) out.push([cutE, e]);
  return out;
}

export interface Segment {
  off: number;
  data: Buffer;
}

/** A WRITE not acknowledged as durable: sent (maybe answered) but not covered by a COMMIT or FLUSH. */
export interface PendingWrite {
  seq: number;
  /** What is left of it after newer durable writes (and truncates) cut out their ranges. */
  segs: Segment[];
  /** NFS: the verifier of its UNSTABLE reply; null while unanswered (or if the reply never came). */
  verf?: Buffer | null;
}

/**
 * What a crash test sent to one file and which of it was acknowledged durable: after a crash every
 * `known` byte must read as `durable` unless a pending (newer, not durable) write explains it.
 */
export class WriteModel {
  /** The file as every request sent so far makes it. */
  readonly model: Buffer;
  /** The size every request sent so far makes. */
  size = 0;
  readonly durable: Buffer;
  known = new RangeSet();
  /** The size can be no smaller than this after a crash (acknowledged durable). */
  sizeLo = 0;
  pending: PendingWrite[] = [];
  seq = 0;

  constructor(readonly maxSize: number) {
    this.model = Buffer.alloc(maxSize);
    this.durable = Buffer.alloc(maxSize);
  }

  /** Records a WRITE about to be sent. */
  issue(off: number, data: Buffer): PendingWrite {
    data.copy(this.model, off);
    this.size = Math.max(this.size, off + data.length);
    const p: PendingWrite = { seq: ++this.seq, segs: [{ off, data }] };
    this.pending.push(p);
    return p;
  }

  /** `p` is acknowledged durable: its bytes are known, and older pending writes lose those bytes. */
  markDurable(p: PendingWrite): void {
    const at = this.pending.indexOf(p);
    if (at < 0) return;
    this.pending.splice(at, 1);
    for (const seg of p.segs) {
      seg.data.copy(this.durable, seg.off);
      this.known.add(seg.off, seg.off + seg.data.length);
      this.sizeLo = Math.max(this.sizeLo, seg.off + seg.data.length);
      this.cutPending(seg.off, seg.off + seg.data.length, p.seq);
    }
  }

  /** Pending writes up to `olderThan` (by seq) lose [cutS, cutE); those left with nothing go. */
  protected cutPending(cutS: number, cutE: number, olderThan: number): void {
    for (const q of this.pending) {
      if (q.seq > olderThan) continue;
      const next: Segment[] = [];
      for (const s of q.segs) {
        for (const [a, b] of subtractRange(s.off, s.off + s.data.length, cutS, cutE)) {
          next.push({ off: a, data: s.data.subarray(a - s.off, b - s.off) });
        }
      }
      q.segs = next;
    }
    this.pending = this.pending.filter((q) => q.segs.length > 0);
  }
}
