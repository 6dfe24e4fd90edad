// Benchmark: several DittoFS replicas on one store (issue 14). One PostgreSQL metadata store, one
// S3 bucket (versitygw, or s3rver where it is not built: backends.ts), Redis for coordination;
// 1, 2 and 3 server processes, several clients spread over them, and one server with
// coordination off (the fenced single server) as the reference.
//
//   npx tsx test/bench/replicas.ts [--replicas 1,2,3] [--clients N] [--size-mib N] [--files N]
//
// Rows, each on a fresh schema, S3 prefix and Redis key prefix:
//   1 replica, coordination off   the single fenced server (no coordination.redis)
//   R replicas, coordination on   R servers with coordination.redis, for each R of --replicas
// Per row, --clients clients (client i talks to replica i mod R), started together:
//   write   each client nfs-cp's its own --size-mib file to the export; aggregate MiB/s over the
//           wall time until the last one is done;
//   read    each client reads back the file the NEXT client wrote (through another replica when
//           R > 1) and checks its sha256; aggregate MiB/s;
//   create  each client CREATEs --files empty files in a directory of its own (one request
//           outstanding per client); aggregate creates/s.
// Besides wall-clock figures (which move with the machine's load) it prints the servers' CPU
// seconds (utime + stime of every replica, from /proc) per GiB and per 1,000 creates: the honest
// figure on a shared machine. Nothing is asserted: the targets of issue 14 are read off the table.
// Needs libnfs-utils, PostgreSQL and redis-server (hack/install-deps.sh test) and a built server.
import { execFile } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { startRedis } from '../helpers/redis.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';
import { EXPORT_PATH, cleanRound, newRunId, startBackends, writeDittoConfig } from './backends.js';
import { Nfs3Client } from './nfsclient.js';
import { cpuSeconds } from './proc.js';

const MiB = 1024 * 1024;
/** Bound on one nfs-cp (a stuck server must not hang the benchmark). */
const CP_TIMEOUT_MS = 10 * 60_000;

interface Args {
  replicas: number[];
  clients: number;
  sizeMib: number;
  files: number;
}

function parse(): Args {
  const { values } = parseArgs({
    options: {
      replicas: { type: 'string', default: '1,2,3' },
      clients: { type: 'string', default: '3' },
      'size-mib': { type: 'string', default: '128' },
      files: { type: 'string', default: '1000' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log('usage: npx tsx test/bench/replicas.ts [--replicas 1,2,3] [--clients 3] [--size-mib 128] [--files 1000]');
    process.exit(0);
  }
  const int = (name: string, s: string, min: number, max: number): number => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer from ${min} to ${max}, got ${s}`);
    return n;
  };
  const replicas = values.replicas.split(',').map((r) => int('replicas', r.trim(), 1, 8));
  return {
    replicas: [...new Set(replicas)].sort((a, b) => a - b),
    clients: int('clients', values.clients, 1, 16),
    sizeMib: int('size-mib', values['size-mib'], 1, 4096),
    files: int('files', values.files, 10, 100_000),
  };
}

const serversCpu = (servers: DittofsProcess[]): number => servers.map((s) => cpuSeconds(s.child.pid) ?? 0).reduce((a, b) => a + b, 0);

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

interface Row {
  label: string;
  writeMiBs: number;
  readMiBs: number;
  createsPerSec: number;
  cpuPerGiBWrite: number;
  cpuPerGiBRead: number;
  cpuPerKCreate: number;
}

const url = (s: DittofsProcess, file: string): string =>
  `nfs://127.0.0.1${EXPORT_PATH}/${file}?nfsport=${s.nfsPort}&mountport=${s.nfsPort}`;

/**
 * Aborted when the benchmark ends: an nfs-cp still running then (its server gone, after another
 * failed) would otherwise outlive us, reconnecting for ever.
 */
const children = new AbortController();

/** Runs nfs-cp (bounded); resolves with its exit code and stderr. */
function nfsCpRun(from: string, to: string, timeoutMs = CP_TIMEOUT_MS): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile('nfs-cp', [from, to], { timeout: timeoutMs, killSignal: 'SIGKILL', signal: children.signal }, (err, _out, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? Number((err as NodeJS.ErrnoException).code) : -1) : 0;
      resolve({ code, stderr: String(stderr) });
    });
  });
}

async function nfsCp(from: string, to: string): Promise<void> {
  const r = await nfsCpRun(from, to);
  if (r.code !== 0) throw new Error(`nfs-cp ${from} ${to}: exit ${r.code}: ${r.stderr.trim()}`);
}

/**
 * Waits until `s` accepts a write (readiness, and a check that a lease can be taken: a server that
 * cannot prove it may write answers JUKEBOX, which nfs-cp (libnfs) does not retry).
 */
async function waitWritable(s: DittofsProcess, work: string, i: number): Promise<void> {
  const probe = path.join(work, `probe${i}`);
  await writeFile(probe, 'x');
  const deadline = Date.now() + 60_000;
  for (let attempt = 0; ; attempt++) {
    // A new name each time: an attempt whose WRITE was refused has made its file, and nfs-cp's
    // exclusive create of that name would fail with EXIST from then on.
    const r = await nfsCpRun(probe, url(s, `probe${i}-${attempt}`), 30_000);
    if (r.code === 0) return;
    if (Date.now() > deadline)
      throw new Error(`replica ${i} did not accept a write within 60 s: ${r.stderr.trim()}\n${s.output().slice(-2000)}`);
    await new Promise((res) => setTimeout(res, 500));
  }
}

/** Runs the three phases against `servers`; client i uses servers[i % R]. */
async function workload(
  args: Args,
  servers: DittofsProcess[],
  work: string,
  srcFiles: string[],
  sums: string[],
  label: string,
): Promise<Row> {
  const R = servers.length;
  const via = (i: number): DittofsProcess => servers[i % R]!;
  const bytes = args.clients * args.sizeMib * MiB;

  let cpu0 = serversCpu(servers);
  let t0 = performance.now();
  await Promise.all(srcFiles.map((src, i) => nfsCp(src, url(via(i), `w${i}`))));
  const writeS = (performance.now() - t0) / 1000;
  const writeCpu = serversCpu(servers) - cpu0;

  cpu0 = serversCpu(servers);
  t0 = performance.now();
  await Promise.all(
    srcFiles.map(async (_src, i) => {
      const from = (i + 1) % args.clients;
      const back = path.join(work, `r${i}`);
      await nfsCp(url(via(i), `w${from}`), back);
      const got = await sha256File(back);
      await rm(back, { force: true });
      if (got !== sums[from]) throw new Error(`${label}: w${from} read through replica ${i % R} has sha256 ${got}, written ${sums[from]}`);
    }),
  );
  const readS = (performance.now() - t0) / 1000;
  const readCpu = serversCpu(servers) - cpu0;

  const clients = await Promise.all(
    srcFiles.map((_s, i) => Nfs3Client.connect({ nfsPort: via(i).nfsPort, exportPath: EXPORT_PATH, callTimeoutMs: 60_000 })),
  );
  let createS: number;
  let createCpu: number;
  try {
    const dirs = await Promise.all(clients.map(async (c, i) => (await c.mkdir(c.rootFh, `sf${i}`)).fh!));
    cpu0 = serversCpu(servers);
    t0 = performance.now();
    await Promise.all(
      clients.map(async (c, i) => {
        for (let n = 0; n < args.files; n++) await c.create(dirs[i]!, `f${n}`);
      }),
    );
    createS = (performance.now() - t0) / 1000;
    createCpu = serversCpu(servers) - cpu0;
  } finally {
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
  }
  const creates = args.clients * args.files;
  return {
    label,
    writeMiBs: bytes / MiB / writeS,
    readMiBs: bytes / MiB / readS,
    createsPerSec: creates / createS,
    cpuPerGiBWrite: writeCpu / (bytes / 1024 / MiB),
    cpuPerGiBRead: readCpu / (bytes / 1024 / MiB),
    cpuPerKCreate: createCpu / (creates / 1000),
  };
}

async function main(): Promise<void> {
  const args = parse();
  const work = await mkdtemp(path.join(os.tmpdir(), 'dittofs-bench-replicas-'));
  const cleanups: (() => Promise<unknown>)[] = [() => rm(work, { recursive: true, force: true })];
  const runId = newRunId();
  const log = (m: string) => console.error(`replicas bench: ${m}`);
  const rows: Row[] = [];
  let s3Name = '?';
  try {
    const b = await startBackends(runId, (_what, stop) => cleanups.push(stop), log);
    s3Name = b.s3Name;
    const redis = await startRedis();
    cleanups.push(() => redis.stop());

    const srcFiles: string[] = [];
    const sums: string[] = [];
    for (let i = 0; i < args.clients; i++) {
      const buf = randomFillSync(Buffer.allocUnsafe(args.sizeMib * MiB));
      const f = path.join(work, `src${i}`);
      await writeFile(f, buf);
      srcFiles.push(f);
      sums.push(createHash('sha256').update(buf).digest('hex'));
    }

    const plans: { replicas: number; coordination: boolean }[] = [{ replicas: 1, coordination: false }];
    for (const r of args.replicas) plans.push({ replicas: r, coordination: true });
    let round = 0;
    for (const plan of plans) {
      round++;
      const place = { schema: `bench_rep_${runId}_r${round}`, prefix: `bench-rep-${runId}-r${round}` };
      const label = plan.coordination
        ? `${plan.replicas} replica${plan.replicas > 1 ? 's' : ''}, coordination on`
        : '1 replica, coordination off';
      // data_dir is each server's own (startDittofs sets DITTOFS_DATA_DIR, which overrides the file).
      const configFile = await writeDittoConfig(work, `r${round}`, 'postgres-s3', work, place, b, {
        server: { api: { enabled: false } },
        ...(plan.coordination ? { coordination: { redis: { url: redis.url, key_prefix: `bench-${runId}-r${round}:` } } } : {}),
      });
      const servers: DittofsProcess[] = [];
      try {
        // One at a time: the first creates the schema (migrations), the others find it.
        for (let i = 0; i < plan.replicas; i++) servers.push(await startDittofs({ configFile, api: false }));
        await Promise.all(servers.map((s, i) => waitWritable(s, work, i)));
        log(`${label}: ${servers.length} server(s) up and writable`);
        const row = await workload(args, servers, work, srcFiles, sums, label);
        rows.push(row);
        log(
          `${label}: write ${row.writeMiBs.toFixed(1)} MiB/s, read ${row.readMiBs.toFixed(1)} MiB/s, ${row.createsPerSec.toFixed(0)} creates/s`,
        );
      } finally {
        await Promise.all(servers.map((s) => s.stop().catch(() => undefined)));
        const problems = await cleanRound(b, place);
        for (const p of problems) log(`cleanup: ${p}`);
      }
    }
  } finally {
    children.abort();
    for (const c of cleanups.reverse()) await c().catch((e: unknown) => log(`cleanup: ${(e as Error).message}`));
  }

  const base = rows[0]!;
  console.log(
    `\nSeveral replicas on one store (postgres + ${s3Name} + redis): ${args.clients} clients, ${args.sizeMib} MiB each, ${args.files} creates each; ratios to "1 replica, coordination off".`,
  );
  console.log('| configuration | write MiB/s | read MiB/s | creates/s | server CPU s/GiB write | s/GiB read | s/1k creates |');
  console.log('|---|---|---|---|---|---|---|');
  const ratio = (v: number, ref: number): string => `${v.toFixed(1)} (${(v / ref).toFixed(2)}x)`;
  for (const r of rows) {
    console.log(
      `| ${r.label} | ${ratio(r.writeMiBs, base.writeMiBs)} | ${ratio(r.readMiBs, base.readMiBs)} | ${ratio(r.createsPerSec, base.createsPerSec)} | ${r.cpuPerGiBWrite.toFixed(2)} | ${r.cpuPerGiBRead.toFixed(2)} | ${r.cpuPerKCreate.toFixed(2)} |`,
    );
  }
}

main().catch((e: unknown) => {
  console.error(`replicas bench failed: ${(e as Error).stack ?? String(e)}`);
  process.exit(1);
});
