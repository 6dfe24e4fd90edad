// The untar's calls without the VM: replays, from this process, the NFS calls the Linux kernel
// client sends per file when busybox tar extracts a small-file tree (as counted by the --vm-untar
// row of run.ts: per file a LOOKUP that misses, CREATE, one WRITE FILE_SYNC, four SETATTR, two more
// LOOKUPs; a new directory every 100 files), one call outstanding at a time, against nfs-ganesha
// and DittoFS embedded-fs in turn, and prints the client-side time of each kind of call per file.
// What the calls carry is as the server saw them in that row (logged, 2026-12-05): an EXCLUSIVE
// CREATE and the kernel's SETATTR of the mode and the server's time after it, then tar's owner,
// mode and times, each SETATTR after the WRITE.
// The VM row says how a real client fares but wanders by a third between runs (software
// emulation); this one shows where the per-file gap between the servers is, on a quiet machine.
//
//   npx tsx test/bench/untar-replay.ts [--files N] [--rounds N] [--cpu-prof DIR]
//
// --cpu-prof DIR: each DittoFS server writes a V8 CPU profile of its main thread to DIR.
//
// Needs root and ganesha (hack/install-deps.sh bench) and a built server (make build).
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { freePort, REPO_ROOT, startDittofs } from '../helpers/server.js';
import { cpuProfEnv, prepareCpuProf } from './cpu-prof.js';
import { cpuSeconds, cpuSecondsByThread, vmHwmKiB } from './proc.js';
import { NfsError, Nfs3Client, XdrWriter, type XdrReader } from './nfsclient.js';

const run = promisify(execFile);
const GANESHA = path.join(REPO_ROOT, 'hack', 'ganesha');
const NFSPROC3_SETATTR = 2;
const NFSPROC3_WRITE = 7;
const FILE_SYNC = 2;
interface Sattr {
  uid?: number;
  gid?: number;
  mode?: number;
  /** set_atime and set_mtime: SET_TO_SERVER_TIME or SET_TO_CLIENT_TIME. */
  times?: 'server' | 'client';
}
/** The kernel's, after an EXCLUSIVE CREATE: the mode, the times to the server's clock. */
const AFTER_CREATE: Sattr = { mode: 0o644, times: 'server' };
/** What tar sets after the data: owner, mode, times (the archive's). */
const AFTER_DATA: readonly Sattr[] = [{ uid: 0, gid: 0 }, { mode: 0o644 }, { times: 'client' }];
const KINDS = ['LOOKUP miss', 'CREATE', 'WRITE', 'SETATTR x4', 'LOOKUP x2'] as const;
type Kind = (typeof KINDS)[number];

interface Endpoint {
  name: string;
  /** The server's process, for its CPU time. */
  pid: number | undefined;
  nfsPort: number;
  mountPort: number;
  stop: () => Promise<void>;
}

async function ganesha(): Promise<Endpoint> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-untar-replay-ganesha-'));
  const nfsPort = await freePort();
  let mountPort = await freePort();
  while (mountPort === nfsPort) mountPort = await freePort();
  const stop = async () => {
    await run(path.join(GANESHA, 'stop.sh'), [dir]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await run(path.join(GANESHA, 'start.sh'), [dir, String(nfsPort), String(mountPort)], { timeout: 480_000 }); // up to three tries (hack/ganesha/start.sh)
  } catch (e) {
    await stop();
    throw e;
  }
  const pid = Number(await readFile(path.join(dir, 'ganesha.pid'), 'utf8'));
  return { name: 'ganesha', pid: Number.isInteger(pid) && pid > 0 ? pid : undefined, nfsPort, mountPort, stop };
}

/** --cpu-prof: where the DittoFS servers write their CPU profiles. */
let cpuProfDir: string | undefined;

async function dittofs(): Promise<Endpoint> {
  const srv = await startDittofs({ env: cpuProfDir === undefined ? {} : cpuProfEnv(cpuProfDir) });
  return { name: 'embedded-fs', pid: srv.child.pid, nfsPort: srv.nfsPort, mountPort: srv.nfsPort, stop: () => srv.stop() };
}

function ok(r: XdrReader, what: string): void {
  const status = r.u32();
  if (status !== 0) throw new NfsError(what, status);
}

function sattr3(w: XdrWriter, a: Sattr): XdrWriter {
  for (const v of [a.mode, a.uid, a.gid]) {
    w.u32(v === undefined ? 0 : 1);
    if (v !== undefined) w.u32(v);
  }
  w.u32(0); // size
  for (let i = 0; i < 2; i++) {
    if (a.times === 'client') w.u32(2).u32(1_600_000_000).u32(0);
    else w.u32(a.times === 'server' ? 1 : 0);
  }
  return w;
}

/** Replays `files` files; microseconds per file by kind of call. */
async function replay(
  ep: Endpoint,
  files: number,
): Promise<
  Record<Kind, number> & { total: number; cpu: number | undefined; threads: Map<string, number>; peakRssKiB: number | undefined }
> {
  const c = await Nfs3Client.connect({ nfsPort: ep.nfsPort, mountPort: ep.mountPort, exportPath: '/export', callTimeoutMs: 30_000 });
  try {
    const top = await c.mkdirFresh(`untar-replay-${process.pid}-${Date.now()}`);
    const data = Buffer.alloc(30, 0x61);
    const spent: Record<Kind, number> = { 'LOOKUP miss': 0, CREATE: 0, WRITE: 0, 'SETATTR x4': 0, 'LOOKUP x2': 0 };
    const timed = async (k: Kind, f: () => Promise<unknown>) => {
      const t0 = performance.now();
      await f();
      spent[k] += performance.now() - t0;
    };
    const cpu0 = cpuSeconds(ep.pid);
    const threads0 = cpuSecondsByThread(ep.pid);
    const t0 = performance.now();
    let dir = top;
    for (let i = 0; i < files; i++) {
      if (i % 100 === 0) dir = (await c.mkdir(top, `d${i / 100}`)).fh ?? (await c.lookup(top, `d${i / 100}`)).fh;
      const name = `f${i}`;
      await timed('LOOKUP miss', async () => {
        try {
          await c.lookup(dir, name);
          throw new Error(`${name} exists before its CREATE`);
        } catch (e) {
          if (!(e instanceof NfsError && e.status === 2)) throw e;
        }
      });
      let fh: Buffer | undefined;
      await timed('CREATE', async () => {
        fh = (await c.create(dir, name, 0o644, 'EXCLUSIVE')).fh;
      });
      fh ??= (await c.lookup(dir, name)).fh;
      const handle = fh;
      const setattrs = async (list: readonly Sattr[]) => {
        for (const a of list) {
          const w = sattr3(new XdrWriter(128).opaque(handle), a).u32(0); // no guard
          ok(await c.call(NFSPROC3_SETATTR, w.toBuffer(), 'SETATTR'), 'SETATTR');
        }
      };
      await timed('SETATTR x4', () => setattrs([AFTER_CREATE]));
      await timed('WRITE', async () => {
        const w = new XdrWriter(128).opaque(handle).u32(0).u32(0).u32(data.length).u32(FILE_SYNC).opaque(data);
        ok(await c.call(NFSPROC3_WRITE, w.toBuffer(), 'WRITE'), 'WRITE');
      });
      await timed('SETATTR x4', () => setattrs(AFTER_DATA));
      await timed('LOOKUP x2', async () => {
        for (let k = 0; k < 2; k++) await c.lookup(dir, name);
      });
    }
    const total = performance.now() - t0;
    const cpu1 = cpuSeconds(ep.pid);
    const threads1 = cpuSecondsByThread(ep.pid);
    const perFile = (ms: number) => (ms * 1000) / files;
    const threads = new Map<string, number>();
    for (const [name, s] of threads1) threads.set(name, perFile((s - (threads0.get(name) ?? 0)) * 1000));
    return {
      ...(Object.fromEntries(KINDS.map((k) => [k, perFile(spent[k])])) as Record<Kind, number>),
      total: perFile(total),
      cpu: cpu0 === undefined || cpu1 === undefined ? undefined : perFile((cpu1 - cpu0) * 1000),
      threads,
      peakRssKiB: await vmHwmKiB(ep.pid),
    };
  } finally {
    await c.close();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      files: { type: 'string', default: '3000' },
      rounds: { type: 'string', default: '3' },
      'cpu-prof': { type: 'string' },
    },
    strict: true,
  });
  const files = Number(values.files);
  const rounds = Number(values.rounds);
  if (!Number.isInteger(files) || files < 100 || files > 100_000) throw new Error('--files must be an integer in 100..100000');
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20) throw new Error('--rounds must be an integer in 1..20');
  if (values['cpu-prof'] !== undefined) {
    cpuProfDir = path.resolve(values['cpu-prof']);
    await prepareCpuProf(cpuProfDir);
  }
  console.log(
    `untar replay: ${files} files per run, ${rounds} rounds, servers alternating; client µs per file and the server's CPU µs per file (every thread, from /proc)`,
  );
  console.log(['round', 'server', 'per file', ...KINDS, 'server CPU'].map((s) => s.padStart(12)).join(''));
  const totals = new Map<string, number[]>();
  for (let r = 1; r <= rounds; r++) {
    for (const start of [ganesha, dittofs]) {
      const ep = await start();
      try {
        const res = await replay(ep, files);
        totals.set(ep.name, [...(totals.get(ep.name) ?? []), res.total]);
        const cells = [String(r), ep.name, res.total.toFixed(0), ...KINDS.map((k) => res[k].toFixed(0)), res.cpu?.toFixed(0) ?? '-'];
        console.log(cells.map((s) => s.padStart(12)).join(''));
        const byThread = [...res.threads].filter(([, us]) => us >= 1).sort((a, b) => b[1] - a[1]);
        const rss = res.peakRssKiB === undefined ? '-' : (res.peakRssKiB / 1024).toFixed(1);
        console.log(
          `${''.padStart(24)}server CPU µs per file by thread: ${byThread.map(([n, us]) => `${n} ${us.toFixed(0)}`).join(', ')}; peak RSS ${rss} MiB`,
        );
      } finally {
        await ep.stop();
      }
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const g = median(totals.get('ganesha')!);
  const d = median(totals.get('embedded-fs')!);
  console.log(
    `median per file: ganesha ${g.toFixed(0)} µs, embedded-fs ${d.toFixed(0)} µs: embedded-fs at ${(g / d).toFixed(2)}x ganesha's speed`,
  );
}

main().catch((e: unknown) => {
  console.error(`untar-replay: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
