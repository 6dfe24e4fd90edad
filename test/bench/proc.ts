// The CPU time of a server process, from /proc (Linux): the figure the benchmarks report beside
// wall-clock time, because unlike wall time it holds on a busy machine.
import { readdirSync, readFileSync } from 'node:fs';

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

/** utime, stime, cutime, cstime of a process in clock ticks (fields 14 to 17), or undefined. */
function statTicks(pid: number): number[] | undefined {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    const t = [Number(f[11]), Number(f[12]), Number(f[13]), Number(f[14])];
    return t.every(Number.isFinite) ? t : undefined;
  } catch {
    return undefined;
  }
}

/** The pids of a process's children (every thread's), from /proc/PID/task/TID/children. */
function childPids(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const list = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (list !== '') for (const c of list.split(' ')) out.push(Number(c));
    }
  } catch {
    // gone meanwhile: counted by its parent's cutime once reaped
  }
  return out;
}

/**
 * CPU seconds of a process and of all its descendants, live or reaped (cutime/cstime), or
 * undefined if the process is unreadable: the figure for a server that forks a process per client
 * (smbd), taken before and after a workload. Bounded: at most 10,000 processes are visited.
 */
export function treeCpuSeconds(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  const own = statTicks(pid);
  if (!own) return undefined;
  let ticks = own[0]! + own[1]! + own[2]! + own[3]!;
  const todo = childPids(pid);
  for (let visited = 0; todo.length > 0 && visited < 10_000; visited++) {
    const c = todo.pop()!;
    const t = statTicks(c);
    if (!t) continue;
    ticks += t[0]! + t[1]! + t[2]! + t[3]!;
    todo.push(...childPids(c));
  }
  return ticks / clockTicks;
}
