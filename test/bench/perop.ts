// Per-procedure server CPU of the metadata calls on one DittoFS server (embedded-fs): NULL,
// GETATTR, LOOKUP and SETATTR (mode, then times: what an untar sends per file after its CREATE),
// one request outstanding, each phase's CPU from /proc/PID/stat (utime + stime, all threads).
// NULL is measured three times: right after start-up, right after the SETATTRs, and after an idle
// pause; GETATTR twice: right after the CREATEs and, last, of files untouched for seconds. The
// untar phase (what the VM's untar sends per file) is followed by its files' uploads into the block
// store, measured apart. The read phase: 4 KiB READs of a 4 MiB file once it is in the block store.
//
//   npx tsx test/bench/perop.ts [--calls N] [--phases A,B] [--cpu-prof DIR] [--trace-gc]
//                               [--attach 'CMD with PID' [--attach-phase setattr|untar|read|remove]]
// Run it alone on the machine (no other benchmark at once). --cpu-prof DIR: the server writes a V8 CPU profile there
// (of the calls after CREATE); --trace-gc: each phase's row also counts the server's garbage
// collections (V8 --trace-gc lines: scavenges, mark-compacts) and their milliseconds. --attach:
// a tool run on the server (PID replaced by its pid: `strace -f -T -p PID -o FILE`, `perf record
// -g -p PID`) from the start of --attach-phase's phase (default remove) to the end, then SIGINT.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { REPO_ROOT, startDittofs } from '../helpers/server.js';
import { EXPORT_PATH, writeDittoConfig } from './backends.js';
import { Nfs3Client, NfsError, XdrWriter } from './nfsclient.js';
import { formatCallTimes, readCallTimes, scrapeMetrics } from './call-times.js';
import { cpuSeconds } from './proc.js';

const NFSPROC3_SETATTR = 2;
const NFSPROC3_READ = 6;
const NFSPROC3_WRITE = 7;
const FILE_SYNC = 2;
/** Files of the untar-like phase: what the kernel client sent per file in the VM's untar. */
const UNTAR_DATA = Buffer.from('thirty bytes of file content.\n');
const IDLE_MS = 5000;
/** The file of the read phase: one block of the bench's block size (4 MiB). */
const READ_FILE_BYTES = 4 * 1024 * 1024;

const GC_PRELOAD = `import v8 from 'node:v8';
v8.setFlagsFromString('--trace-gc');
`;

const PRELOAD = `import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import path from 'node:path';
const dir = process.env.DITTOFS_BENCH_CPU_PROF_DIR;
const session = new Session();
session.connect();
session.post('Profiler.enable');
session.post('Profiler.setSamplingInterval', { interval: 200 });
process.on('SIGUSR2', () => session.post('Profiler.start'));
process.on('exit', () => {
  session.post('Profiler.stop', (err, res) => {
    if (!err) writeFileSync(path.join(dir, 'perop-' + process.pid + '.cpuprofile'), JSON.stringify(res.profile));
  });
});
`;

/** sattr3 with the given fields set (RFC 1813 §2.6). */
function setattrArgs(fh: Buffer, mode: number | undefined, mtimeSec: number | undefined): Buffer {
  const w = new XdrWriter(128).opaque(fh);
  if (mode === undefined) w.u32(0);
  else w.u32(1).u32(mode);
  w.u32(0).u32(0).u32(0); // uid, gid, size
  if (mtimeSec === undefined) w.u32(0).u32(0);
  else w.u32(2).u32(mtimeSec).u32(0).u32(2).u32(mtimeSec).u32(0); // atime, mtime SET_TO_CLIENT_TIME
  w.u32(0); // no guard
  return w.toBuffer();
}

/** Waits until the server holds no data that is not in its block store (dittofs_dirty_bytes 0). */
async function waitClean(metricsPort: number): Promise<void> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const text = await scrapeMetrics(metricsPort);
    const dirty = text
      .split('\n')
      .filter((l) => l.startsWith('dittofs_dirty_bytes'))
      .reduce((a, l) => a + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
    if (dirty === 0) return;
    if (Date.now() > deadline) throw new Error(`still ${dirty} dirty bytes after 120 s`);
    // Each look costs the server a metrics scrape (~2 ms of CPU): a few a second.
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** CPU seconds of each thread of a process, by thread name and id. */
function threadCpu(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const st = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = st.slice(st.indexOf('(') + 1, st.lastIndexOf(')'));
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      out.set(`${name}/${tid}`, (Number(f[11]) + Number(f[12])) / 100);
    } catch {
      // The thread ended.
    }
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      calls: { type: 'string' },
      phases: { type: 'string' },
      'cpu-prof': { type: 'string' },
      'trace-gc': { type: 'boolean' },
      attach: { type: 'string' },
      'attach-phase': { type: 'string' },
    },
  });
  const calls = Number(values.calls ?? 5000);
  const PHASES = ['getattr', 'lookup', 'setattr', 'null', 'untar', 'read', 'cold', 'remove'];
  const phases = new Set((values.phases ?? PHASES.join(',')).split(','));
  for (const p of phases) if (!PHASES.includes(p)) throw new Error(`--phases: unknown phase ${p} (of ${PHASES.join(',')})`);
  const attachAt = values['attach-phase'] ?? 'remove';
  if (!['setattr', 'untar', 'read', 'remove'].includes(attachAt))
    throw new Error(`--attach-phase: setattr, untar, read or remove, not ${attachAt}`);
  if (values.attach !== undefined && !phases.has(attachAt)) throw new Error(`--attach-phase ${attachAt}: that phase is not in --phases`);
  const work = await mkdtemp(path.join(os.tmpdir(), 'dittofs-perop-'));
  const dataDir = path.join(work, 'data');
  const env: Record<string, string> = {};
  const prof = values['cpu-prof'] === undefined ? undefined : path.resolve(values['cpu-prof']);
  if (prof) {
    await writeFile(path.join(work, 'preload.mjs'), PRELOAD);
    env.NODE_OPTIONS = `--import=${path.join(work, 'preload.mjs')}`;
    env.DITTOFS_BENCH_CPU_PROF_DIR = prof;
  }
  if (values['trace-gc']) {
    await writeFile(path.join(work, 'gc.mjs'), GC_PRELOAD);
    env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? ''} --import=${path.join(work, 'gc.mjs')}`.trim();
  }
  // perf's symbol map (/tmp/perf-PID.map). V8 then also writes isolate-*-PID-v8.log files into
  // the server's working directory (the repository), removed at the end (--logfile is not allowed
  // in NODE_OPTIONS).
  if (values.attach !== undefined) env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? ''} --perf-basic-prof`.trim();
  const configFile = await writeDittoConfig(work, 'perop', 'embedded-fs', dataDir, {}, undefined);
  const srv = await startDittofs({ configFile, dataDir, env });
  const pid = srv.child.pid!;
  const c = await Nfs3Client.connect({ nfsPort: srv.nfsPort, exportPath: EXPORT_PATH });
  const rows: string[] = [];
  // --attach: the tool runs through the phase --attach-phase names (and the ones after it).
  let attached: ChildProcess | undefined;
  const attach = async () => {
    if (values.attach === undefined) return;
    // Its own process group: the SIGINT that ends it reaches the tool, not only the shell.
    attached = spawn('sh', ['-c', values.attach.replaceAll('PID', String(pid))], { stdio: 'inherit', detached: true });
    // Time for the tool to attach (perf and strace say nothing when they have).
    await new Promise((r) => setTimeout(r, 1000));
  };
  const detach = async () => {
    const a = attached;
    attached = undefined;
    if (a === undefined || a.exitCode !== null || a.signalCode !== null) return;
    const exited = new Promise((r) => a.once('exit', r));
    try {
      process.kill(-a.pid!, 'SIGINT');
    } catch {
      // The group ended meanwhile: its exit is on its way.
    }
    await exited;
  };
  const phase = async (name: string, n: number, op: (i: number) => Promise<void>) => {
    const threads0 = threadCpu(pid);
    const times0 = await readCallTimes(srv.metricsPort);
    const out0 = srv.output().length;
    const cpu0 = cpuSeconds(pid)!;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await op(i);
    const secs = (performance.now() - t0) / 1000;
    const cpu = cpuSeconds(pid)! - cpu0;
    const times = formatCallTimes(await readCallTimes(srv.metricsPort), times0);
    const busy: string[] = [];
    for (const [t, v] of threadCpu(pid)) {
      const d = v - (threads0.get(t) ?? 0);
      if (d >= 0.01) busy.push(`${t} ${d.toFixed(2)}`);
    }
    let gc = '';
    if (values['trace-gc']) {
      const lines = srv.output().slice(out0).split('\n');
      const count = (kind: string) => lines.filter((l) => l.includes(kind));
      const ms = (ls: string[]) => ls.reduce((a, l) => a + Number(/, ([\d.]+) \/ [\d.]+ ms/.exec(l)?.[1] ?? 0), 0);
      const sc = count('Scavenge');
      const mc = count('Mark-Compact');
      gc = `  gc: ${sc.length} scavenges ${ms(sc).toFixed(1)} ms, ${mc.length} mark-compacts ${ms(mc).toFixed(1)} ms`;
    }
    rows.push(
      `${name.padEnd(22)} ${String(n).padStart(6)}  ${((cpu / n) * 1e6).toFixed(1).padStart(8)} us CPU/op  ${Math.round(n / secs)}/s  [${busy.join(', ')}]${gc}${times === '' ? '' : `\n${''.padEnd(23)}server µs per call: ${times}`}`,
    );
  };
  try {
    await phase('NULL (after start-up)', calls, () => c.null());
    const dir = (await c.mkdir(c.rootFh, 'perop')).fh!;
    const fhs: Buffer[] = [];
    const names = Array.from({ length: calls }, (_, i) => `f${String(i).padStart(6, '0')}`);
    await phase('CREATE', calls, async (i) => void fhs.push((await c.create(dir, names[i]!)).fh!));
    if (prof) srv.child.kill('SIGUSR2');
    if (phases.has('getattr')) await phase('GETATTR', calls, async (i) => void (await c.getattr(fhs[i]!)));
    if (phases.has('lookup')) await phase('LOOKUP', calls, async (i) => void (await c.lookup(dir, names[i]!)));
    const now = Math.floor(Date.now() / 1000) - 3600;
    const setattr = async (args: Buffer) => {
      const r = await c.call(NFSPROC3_SETATTR, args, 'SETATTR');
      const st = r.u32();
      if (st !== 0) throw new NfsError('SETATTR', st);
    };
    if (phases.has('setattr')) {
      if (attachAt === 'setattr') await attach();
      await phase('SETATTR mode', calls, (i) => setattr(setattrArgs(fhs[i]!, 0o600, undefined)));
      await phase('SETATTR times', calls, (i) => setattr(setattrArgs(fhs[i]!, undefined, now)));
      await phase('NULL (after SETATTRs)', calls, () => c.null());
    }
    if (phases.has('null')) {
      await new Promise((r) => setTimeout(r, IDLE_MS));
      await phase(`NULL (after ${IDLE_MS / 1000} s idle)`, calls, () => c.null());
    }
    // Per file, what the kernel client sent in the VM's untar (vmuntar.ts: ~3 LOOKUP, 1 CREATE,
    // 1 stable WRITE, ~4 SETATTR): LOOKUP (not there), CREATE, WRITE FILE_SYNC, SETATTR owner,
    // mode, times, and LOOKUP + GETATTR of the result.
    const untarDir = (await c.mkdir(c.rootFh, 'untar')).fh!;
    const uid = process.getuid?.() ?? 0;
    const gid = process.getgid?.() ?? 0;
    const untarFiles = Math.max(1, Math.floor(calls / 10));
    if (phases.has('untar')) {
      if (attachAt === 'untar') await attach();
      await phase('untar-like (per file)', untarFiles, async (i) => {
        const name = names[i]!;
        await c.lookup(untarDir, name).then(
          () => {
            throw new Error(`${name} exists`);
          },
          (e: unknown) => {
            if (!(e instanceof NfsError)) throw e;
          },
        );
        const fh = (await c.create(untarDir, name, 0o644, 'GUARDED')).fh!;
        const w = new XdrWriter(128).opaque(fh).u64(0).u32(UNTAR_DATA.length).u32(FILE_SYNC).opaque(UNTAR_DATA);
        const r = await c.call(NFSPROC3_WRITE, w.toBuffer(), 'WRITE');
        const st = r.u32();
        if (st !== 0) throw new NfsError('WRITE', st);
        const owner = new XdrWriter(128).opaque(fh).u32(0).u32(1).u32(uid).u32(1).u32(gid).u32(0).u32(0).u32(0).u32(0).toBuffer();
        await setattr(owner);
        await setattr(setattrArgs(fh, 0o600, undefined));
        await setattr(setattrArgs(fh, undefined, now));
        await c.getattr((await c.lookup(untarDir, name)).fh);
      });
      // The same files' uploads into the block store (the idle flush, seconds later), until nothing
      // is dirty: what each small file costs the server after its calls were answered. One wait,
      // its CPU divided by the files (the row's rate is mostly the wait for the idle flush).
      await phase('untar uploads (per file)', untarFiles, async (i) => {
        if (i === 0) await waitClean(srv.metricsPort);
      });
    }
    // READs of 4 KiB of a file stored in the block store (not in the WAL any more), one at a time:
    // the per-READ cost of a stored block, without the bulk copy of a large one.
    if (phases.has('read')) {
      const fh = (await c.create(c.rootFh, 'read-me', 0o644, 'GUARDED')).fh!;
      const chunk = Buffer.alloc(READ_FILE_BYTES / 4, 0x5a);
      for (let off = 0; off < READ_FILE_BYTES; off += chunk.length) {
        const w = new XdrWriter(chunk.length + 128).opaque(fh).u64(off).u32(chunk.length).u32(FILE_SYNC).opaque(chunk);
        const r = await c.call(NFSPROC3_WRITE, w.toBuffer(), 'WRITE');
        const st = r.u32();
        if (st !== 0) throw new NfsError('WRITE', st);
      }
      await waitClean(srv.metricsPort);
      if (attachAt === 'read') await attach();
      await phase('READ 4 KiB (stored block)', calls, async (i) => {
        const off = (i * 4096 * 7) % READ_FILE_BYTES;
        const r = await c.call(NFSPROC3_READ, new XdrWriter(64).opaque(fh).u64(off).u32(4096).toBuffer(), 'READ');
        const st = r.u32();
        if (st !== 0) throw new NfsError('READ', st);
      });
    }
    // Files last read or changed seconds ago: what a client's attribute revalidation asks.
    if (phases.has('cold')) await phase('GETATTR (cold)', calls, async (i) => void (await c.getattr(fhs[i]!)));
    // Files without data, in one directory: what `rm -rf` of a small-file tree sends per file.
    if (attachAt === 'remove') await attach();
    if (phases.has('remove')) await phase('REMOVE', calls, (i) => c.remove(dir, names[i]!));
  } finally {
    await detach();
    await c.close();
    await srv.stop();
    await rm(work, { recursive: true, force: true });
    if (values.attach !== undefined)
      for (const f of readdirSync(REPO_ROOT))
        if (f.startsWith('isolate-') && f.endsWith(`-${pid}-v8.log`)) await rm(path.join(REPO_ROOT, f), { force: true });
  }
  console.log(rows.join('\n'));
}

await main();
