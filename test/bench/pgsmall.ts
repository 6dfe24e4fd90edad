// Small files on postgres-s3 with N NFS clients at once, each in a directory of its own (issue 16):
// what serialises them. Starts PostgreSQL and S3 as run.ts does, then per round one DittoFS server.
//
//   npx tsx test/bench/pgsmall.ts [--clients 8] [--files 1000] [--rounds 1] [--sample-ms 5] [--phases] [--cpu-prof DIR]
//
// Default: run.ts's 8-client small-file row (smallfiles.ts per client) while pg_stat_activity is
// sampled every --sample-ms: the average number of DittoFS's connections per state, wait event and
// statement. --phases: CREATE, then LOOKUP+GETATTR, then REMOVE of --files/--clients files per client
// (all clients in step), each phase's rate and server CPU per call; with PGQ_QCOUNT=FILE set and a
// statement counter that writes per-statement counts to FILE patched into the server's pg driver
// (not part of the tree), also the statements per call.
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { startDittofs } from '../helpers/server.js';
import { EXPORT_PATH, cleanRound, roundPlace, startBackends, writeDittoConfig } from './backends.js';
import { cpuSeconds } from './proc.js';
import { cpuProfEnv, prepareCpuProf } from './cpu-prof.js';
import { runSmallFiles } from './smallfiles.js';
import { Nfs3Client } from './nfsclient.js';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '8' },
    files: { type: 'string', default: '1000' },
    rounds: { type: 'string', default: '1' },
    'sample-ms': { type: 'string', default: '5' },
    phases: { type: 'boolean', default: false },
    'cpu-prof': { type: 'string' },
  },
});
const clients = Number(values.clients);
const files = Number(values.files);
const rounds = Number(values.rounds);
const sampleMs = Number(values['sample-ms']);

async function counts(): Promise<Record<string, number>> {
  if (!process.env.PGQ_QCOUNT) return {};
  await new Promise((r) => setTimeout(r, 700));
  return JSON.parse(await readFile(process.env.PGQ_QCOUNT, 'utf8')) as Record<string, number>;
}
function diff(a: Record<string, number>, b: Record<string, number>, n: number): string {
  return Object.entries(b)
    .map(([k, v]) => [k, v - (a[k] ?? 0)] as const)
    .filter(([, v]) => v > 0)
    .map(([k, v]) => `${k}=${(v / n).toFixed(2)}`)
    .join(' ');
}
async function phases(port: number): Promise<void> {
  const n = files / clients;
  const cs = await Promise.all(Array.from({ length: clients }, () => Nfs3Client.connect({ nfsPort: port, exportPath: EXPORT_PATH })));
  const dirs = await Promise.all(cs.map(async (c, i) => (await c.mkdir(c.rootFh, `ph${i}`)).fh!));
  const names = Array.from({ length: n }, (_, i) => `f${i}`);
  const all = async (f: (c: Nfs3Client, d: Buffer, nm: string) => Promise<unknown>) => {
    const t0 = performance.now();
    const cpu0 = cpuSeconds(pid)!;
    await Promise.all(
      cs.map(async (c, i) => {
        for (const nm of names) await f(c, dirs[i]!, nm);
      }),
    );
    const s = (performance.now() - t0) / 1000;
    return `${((n * clients) / s).toFixed(0)}/s, CPU ${(((cpuSeconds(pid)! - cpu0) / (n * clients)) * 1e6).toFixed(0)} us/op`;
  };
  let prev = await counts();
  let r = await all((c, d, nm) => c.create(d, nm));
  let cur = await counts();
  console.log(`CREATE ${r}; per op: ${diff(prev, cur, n * clients)}`);
  prev = cur;
  r = await all(async (c, d, nm) => c.getattr((await c.lookup(d, nm)).fh));
  cur = await counts();
  console.log(`LOOKUP+GETATTR ${r}; per op: ${diff(prev, cur, n * clients)}`);
  prev = cur;
  r = await all((c, d, nm) => c.remove(d, nm));
  cur = await counts();
  console.log(`REMOVE ${r}; per op: ${diff(prev, cur, n * clients)}`);
  await Promise.all(cs.map((c) => c.close()));
}
let pid = 0;

const stops: (() => Promise<void>)[] = [];
if (values['cpu-prof']) await prepareCpuProf(values['cpu-prof']);
const work = await mkdtemp(path.join(os.tmpdir(), 'pgsmall-'));
try {
  const b = await startBackends(`pgc${process.pid}`, (_w, s) => stops.push(s), console.log);
  for (let round = 0; round < rounds; round++) {
    const place = roundPlace('postgres-s3', b, round);
    const dataDir = path.join(work, `r${round}`);
    await mkdir(dataDir);
    const cfg = await writeDittoConfig(work, `r${round}`, 'postgres-s3', dataDir, place, b);
    const p = await startDittofs({
      configFile: cfg,
      dataDir,
      env: {
        ...(process.env.PGQ_QCOUNT ? { PGQ_QCOUNT: process.env.PGQ_QCOUNT } : {}),
        ...(values['cpu-prof'] ? cpuProfEnv(values['cpu-prof']) : {}),
      },
    });
    try {
      if (values.phases) {
        pid = p.child.pid!;
        await phases(p.nfsPort);
        continue;
      }
      // warm-up: one client
      await runSmallFiles({ nfsPort: p.nfsPort, exportPath: EXPORT_PATH, files: 200, dirName: 'warm' });
      const mon = new pg.Client({ connectionString: b.pg!.url });
      await mon.connect();
      const hist = new Map<string, number>();
      let samples = 0;
      let running = true;
      const sampler = (async () => {
        while (running) {
          const { rows } = await mon.query<{ state: string; w: string; q: string }>(
            `SELECT state, coalesce(wait_event_type,'-') || ':' || coalesce(wait_event,'-') AS w, left(regexp_replace(query, '\\s+', ' ', 'g'), 50) AS q
               FROM pg_stat_activity WHERE application_name LIKE 'dittofs%' AND pid <> pg_backend_pid()`,
          );
          samples++;
          for (const r of rows) {
            const k = `${r.state} | ${r.w} | ${r.state === 'idle' ? '' : r.q}`;
            hist.set(k, (hist.get(k) ?? 0) + 1);
          }
          await new Promise((r) => setTimeout(r, sampleMs));
        }
      })();
      const cpu0 = cpuSeconds(p.child.pid)!;
      const t0 = performance.now();
      const res = await Promise.all(
        Array.from({ length: clients }, (_, i) =>
          runSmallFiles({ nfsPort: p.nfsPort, exportPath: EXPORT_PATH, files: files / clients, dirName: `par-${i}` }),
        ),
      );
      const wall = (performance.now() - t0) / 1000;
      const cpu = cpuSeconds(p.child.pid)! - cpu0;
      running = false;
      await sampler;
      await mon.end();
      const sum = (f: (r: (typeof res)[0]) => number) => res.reduce((s, r) => s + f(r), 0);
      const opsps = sum((r) => (r.create.ops + r.stat.ops + r.remove.ops) / (r.create.seconds + r.stat.seconds + r.remove.seconds));
      console.log(
        `round ${round}: ${clients} clients x ${files / clients}: ${opsps.toFixed(0)} ops/s (sum), create ${sum((r) => r.create.opsPerSec).toFixed(0)}/s ` +
          `stat ${sum((r) => r.stat.opsPerSec).toFixed(0)}/s remove ${sum((r) => r.remove.opsPerSec).toFixed(0)}/s; wall ${wall.toFixed(2)} s; ` +
          `CPU ${cpu.toFixed(2)} s = ${((cpu / (3 * files)) * 1000).toFixed(3)} s per 1000 ops`,
      );
      console.log(`pg_stat_activity: ${samples} samples; average connections per state:`);
      for (const [k, v] of [...hist].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`  ${(v / samples).toFixed(2)}  ${k}`);
    } finally {
      await p.stop();
      await cleanRound(b, place);
    }
  }
} finally {
  for (const s of stops.reverse()) await s().catch(() => {});
  await rm(work, { recursive: true, force: true });
}
