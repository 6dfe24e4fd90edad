// The CPU time of a server process, from /proc (Linux): the figure the benchmarks report beside
// wall-clock time, because unlike wall time it holds on a busy machine.
import { readFileSync } from 'node:fs';

/** Clock ticks per second of /proc/PID/stat (getconf CLK_TCK; 100 on every Linux we run on). */
let clockTicks = 100;

/** Sets the clock ticks per second (run.ts asks getconf CLK_TCK once). */
export function setClockTicks(ticks: number): void {
  if (Number.isInteger(ticks) && ticks > 0) clockTicks = ticks;
}

/**
 * CPU seconds (user + system, every thread) a process has used so far, from /proc/PID/stat, or
 * undefined if unreadable (no pid, or the process is gone). Fields 14 and 15, counted after the
 * command name's closing parenthesis (the name may hold spaces or parentheses).
 */
export function cpuSeconds(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    const utime = Number(f[11]);
    const stime = Number(f[12]);
    return Number.isFinite(utime) && Number.isFinite(stime) ? (utime + stime) / clockTicks : undefined;
  } catch {
    return undefined;
  }
}
