// The CPU time of a server process, from /proc (Linux): the figure the benchmarks report beside
// wall-clock time, because unlike wall time it holds on a busy machine.
import { readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

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
export function cpuSeconds(pid: number | undefined, statFile = `/proc/${pid}/stat`): number | undefined {
  if (!pid) return undefined;
  try {
    const st = readFileSync(statFile, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    const utime = Number(f[11]);
    const stime = Number(f[12]);
    return Number.isFinite(utime) && Number.isFinite(stime) ? (utime + stime) / clockTicks : undefined;
  } catch {
    return undefined;
  }
}

/**
 * CPU seconds of a process's main thread (/proc/PID/task/PID/stat), or undefined: beside
 * cpuSeconds, what the event loop itself spent, the rest being the thread pool, workers and V8's
 * own threads (concurrent GC marking, compilers).
 */
export function mainThreadCpuSeconds(pid: number | undefined): number | undefined {
  return pid ? cpuSeconds(pid, `/proc/${pid}/task/${pid}/stat`) : undefined;
}

/**
 * CPU seconds (user + system) of a process's threads: its main thread as "main", the others summed
 * by thread name (`comm`; Node's thread pool, V8's helpers and worker threads are all "node"
 * unless named), or an empty map if unreadable. A thread that exited meanwhile is not counted.
 */
export function cpuSecondsByThread(pid: number | undefined): Map<string, number> {
  const out = new Map<string, number>();
  if (!pid) return out;
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const name = tid === String(pid) ? 'main' : `other ${readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim()}`;
      const s = cpuSeconds(pid, `/proc/${pid}/task/${tid}/stat`);
      if (s !== undefined) out.set(name, (out.get(name) ?? 0) + s);
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** VmHWM (peak resident set) of a process, in KiB, or undefined if unreadable. */
export async function vmHwmKiB(pid: number | undefined): Promise<number | undefined> {
  if (!pid) return undefined;
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB$/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Bytes a process has passed to write calls so far (`wchar` of /proc/PID/io: files and sockets),
 * or undefined. Per byte a client wrote, it is the server's write amplification: it does not swing
 * with the machine's load the way CPU seconds do.
 */
export function writtenBytes(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  try {
    const m = /^wchar: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** utime + stime of a process in clock ticks (fields 14 and 15), or undefined. */
function ownTicks(pid: number): number | undefined {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    const t = Number(f[11]) + Number(f[12]);
    return Number.isFinite(t) ? t : undefined;
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
    // gone meanwhile
  }
  return out;
}

/** Processes a TreeCpuWatch follows at most. */
const MAX_WATCHED = 10_000;

/**
 * CPU seconds a process and its descendants use during a workload: for a server that forks a
 * process per client (smbd), whose child may exit (and be reaped, its time lost to us when the
 * parent does not wait for it) right after the client does. The tree is read every `everyMs`, and
 * each process counts with the last figure seen, so a child's last few milliseconds may be missed.
 */
export class TreeCpuWatch {
  private readonly first = new Map<number, number>();
  private readonly last = new Map<number, number>();
  private readonly firstWritten = new Map<number, number>();
  private readonly lastWritten = new Map<number, number>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly pid: number,
    everyMs = 50,
  ) {
    this.poll(true);
    this.timer = setInterval(() => this.poll(), everyMs);
  }

  /** `initial`: the figures at the start; else a process not seen before counts from zero. */
  private poll(initial = false): void {
    const todo = [this.pid];
    for (let visited = 0; todo.length > 0 && visited < MAX_WATCHED; visited++) {
      const p = todo.pop()!;
      const t = ownTicks(p);
      if (t === undefined) continue;
      const w = writtenBytes(p) ?? 0;
      if (initial) {
        this.first.set(p, t);
        this.firstWritten.set(p, w);
      } else if (!this.first.has(p)) {
        // A process first seen now started during the workload: all its time counts.
        this.first.set(p, 0);
        this.firstWritten.set(p, 0);
      }
      this.last.set(p, t);
      this.lastWritten.set(p, w);
      todo.push(...childPids(p));
    }
  }

  /**
   * Stops watching: the CPU seconds used and the bytes passed to write calls since the start
   * (undefined if the process was unreadable).
   */
  stop(): { cpuSeconds: number; written: number } | undefined {
    clearInterval(this.timer);
    this.poll();
    if (!this.last.has(this.pid)) return undefined;
    let ticks = 0;
    for (const [p, t] of this.last) ticks += t - (this.first.get(p) ?? 0);
    let written = 0;
    for (const [p, w] of this.lastWritten) written += w - (this.firstWritten.get(p) ?? 0);
    return { cpuSeconds: ticks / clockTicks, written };
  }
}
