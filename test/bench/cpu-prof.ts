// --cpu-prof of the benchmarks: DittoFS servers started with cpuProfEnv(DIR) in their environment
// write a V8 CPU profile of their main thread to DIR when they exit.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * Preloaded into DittoFS servers by --cpu-prof (NODE_OPTIONS may hold --import but not --cpu-prof):
 * profiles the main thread from start-up to exit and writes DIR/dittofs-PID.cpuprofile, as node
 * --cpu-prof would (open it in Chrome DevTools). Main-thread inspector sessions answer
 * synchronously, which is what lets it write the profile inside 'exit'.
 */
const PRELOAD_SOURCE = `import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import path from 'node:path';
const dir = process.env.DITTOFS_BENCH_CPU_PROF_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: 1000 });
  session.post('Profiler.start');
  process.on('exit', () => {
    session.post('Profiler.stop', (err, res) => {
      if (!err) writeFileSync(path.join(dir, 'dittofs-' + process.pid + '.cpuprofile'), JSON.stringify(res.profile));
    });
  });
}
`;
/** The preload's file name in the profile directory. */
const PRELOAD_NAME = 'cpu-prof-preload.mjs';

/** Creates DIR and writes the preload into it; once, before any server starts. */
export async function prepareCpuProf(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, PRELOAD_NAME), PRELOAD_SOURCE);
}

/** The environment that makes a server started with it profile itself into DIR. */
export function cpuProfEnv(dir: string): Record<string, string> {
  return { NODE_OPTIONS: `--import=${path.join(dir, PRELOAD_NAME)}`, DITTOFS_BENCH_CPU_PROF_DIR: dir };
}
