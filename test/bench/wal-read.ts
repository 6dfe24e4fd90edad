// READs served from the WAL: a real server (embedded metadata, filesystem blocks, as `make run`)
// takes 1 MiB UNSTABLE WRITEs of blocks it leaves 64 KiB short (no block is complete, so none is
// uploaded at once), and the file is read back --passes times in READs of --read-kib, while every
// byte read is still only in the WAL: a 4 KiB write to another file every 300 ms keeps the share
// busy, so the incomplete blocks wait (BusyDefer, up to 60 s) past the 5 s idle flush. Prints the
// server's CPU seconds per GiB read (utime + stime, all threads, of the reads only) and MiB/s.
// Each round writes a new file, reads it, then lets the idle flush upload it (outside the measure).
//
//   npx tsx test/bench/wal-read.ts [--rounds N] [--mib N] [--passes N] [--read-kib N] [--cpu-prof DIR]
//
// Needs a built server (make build). The test `run.ts`'s read row reads what its write uploaded
// (it waits for the WAL to drain first): it does not read from the WAL.
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { startDittofs } from '../helpers/server.js';
import { NfsOps } from '../helpers/nfs-ops.js';
import { StableHow } from '../helpers/rpc-client.js';
import { cpuProfEnv, prepareCpuProf } from './cpu-prof.js';
import { cpuSeconds } from './proc.js';

const MiB = 1 << 20;
const BLOCK = 4 * MiB;
const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '4' },
    mib: { type: 'string', default: '128' },
    passes: { type: 'string', default: '3' },
    'read-kib': { type: 'string', default: '1024' },
    'cpu-prof': { type: 'string' },
  },
});
const rounds = Number(values.rounds);
const blocks = Math.max(1, Math.floor(Number(values.mib) / 4));
const readBytes = Number(values['read-kib']) * 1024;
const passes = Number(values.passes);
const perBlock = BLOCK - 64 * 1024;

const profDir = values['cpu-prof'];
if (profDir !== undefined) await prepareCpuProf(profDir);
const srv = await startDittofs(profDir === undefined ? {} : { env: cpuProfEnv(profDir) });
const nfs = await NfsOps.open(srv.nfsPort);
const busy = await NfsOps.open(srv.nfsPort);
try {
  const root = await nfs.mount('/export');
  const data = randomBytes(MiB);
  const cpu: number[] = [];
  const rate: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const fh = (await nfs.create(root, `f${round}`)).fh!;
    const kfh = (await busy.create(root, `k${round}`)).fh!;
    let keep = true;
    const keeper = (async () => {
      while (keep) {
        await busy.writeV(kfh, 0, data.subarray(0, 4096), StableHow.UNSTABLE);
        await new Promise((r) => setTimeout(r, 300));
      }
    })();
    for (let b = 0; b < blocks; b++)
      for (let off = 0; off < perBlock; off += MiB)
        await nfs.writeV(fh, b * BLOCK + off, data.subarray(0, Math.min(MiB, perBlock - off)), StableHow.UNSTABLE);
    const c0 = cpuSeconds(srv.child.pid)!;
    const t0 = performance.now();
    let got = 0;
    for (let pass = 0; pass < passes; pass++)
      for (let b = 0; b < blocks; b++)
        for (let off = 0; off < perBlock; off += readBytes) {
          const r = await nfs.read(fh, b * BLOCK + off, Math.min(readBytes, perBlock - off));
          if (r.status !== 0) throw new Error(`READ: status ${r.status}`);
          got += r.data.length;
        }
    const secs = (performance.now() - t0) / 1000;
    const c1 = cpuSeconds(srv.child.pid)!;
    cpu.push((c1 - c0) / (got / 1024 / MiB));
    rate.push(got / MiB / secs);
    // Every byte read was still dirty (only in the WAL) after the reads.
    const text = await (await fetch(`http://127.0.0.1:${srv.metricsPort}/metrics`)).text();
    const dirty = Number(/^dittofs_dirty_bytes\{share="\/export"\} (\d+)/m.exec(text)?.[1] ?? 0);
    if (dirty < blocks * perBlock) throw new Error(`only ${dirty} bytes dirty after the reads: some were uploaded, not read from the WAL`);
    keep = false;
    await keeper;
    // The idle flush uploads the blocks once the share is quiet: outside the measure.
    await new Promise((r) => setTimeout(r, 5000));
  }
  const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  console.log(
    `WAL read, ${blocks} blocks of ${perBlock / 1024} KiB x ${passes}, READs of ${readBytes / 1024} KiB, ${rounds} rounds: ` +
      `CPU s/GiB median ${med(cpu).toFixed(3)} (${cpu.map((x) => x.toFixed(3)).join(' ')}), ` +
      `MiB/s median ${med(rate).toFixed(0)} (${rate.map((x) => x.toFixed(0)).join(' ')})`,
  );
} finally {
  nfs.close();
  busy.close();
  await srv.stop();
}
