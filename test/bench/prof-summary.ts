// Sums a V8 CPU profile (.cpuprofile, as --cpu-prof of perop.ts or untar-replay.ts writes it) into
// three tables: self time per function, inclusive time per function (each function counted once
// per sample, however deep it recurs), and self time per caller chain (the sampled function and
// the --depth - 1 functions that called it).
//
//   npx tsx test/bench/prof-summary.ts FILE [--depth N] [--top N] [--filter TEXT] [--window TEXT]
//
// --window: only the samples from the first to the last one whose stack holds a function whose
// row contains TEXT (`--window 'write server/dist/nfs3/nfs.js'`: the NFS WRITEs of run.ts's
// sequential write, without the server's start-up and the read after it).
// --filter: only rows that contain TEXT (server/ for DittoFS's own code, say). V8's sampler takes
// its samples by the wall clock: on a busy machine a thread preempted inside a system call counts
// that time as the call's (a socket write() that wakes the client, most of all), and (idle) is the
// event loop waiting. perf record -g (perop.ts --attach) counts CPU only.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** A function as a row: its name, and its file (from server/ or node_modules/ on) and line. */
function label(f: CallFrame): string {
  const file = f.url.replace(/^.*\/(server|node_modules)\//, '$1/');
  return `${f.functionName || '(anonymous)'} ${file}:${f.lineNumber + 1}`;
}

/** The first and last sample (indices) whose stack holds a function whose row contains `text`. */
function sampleWindow(
  profile: CpuProfile,
  byId: ReadonlyMap<number, ProfileNode>,
  parent: ReadonlyMap<number, number>,
  text: string,
): [number, number] {
  const holds = new Map<number, boolean>();
  const stackHolds = (id: number): boolean => {
    const known = holds.get(id);
    if (known !== undefined) return known;
    const node = byId.get(id);
    const up = parent.get(id);
    const r = node !== undefined && (label(node.callFrame).includes(text) || (up !== undefined && stackHolds(up)));
    holds.set(id, r);
    return r;
  };
  let first = -1;
  let last = -1;
  profile.samples.forEach((id, i) => {
    if (!stackHolds(id)) return;
    if (first < 0) first = i;
    last = i;
  });
  if (first < 0) throw new Error(`--window: no sample's stack holds a function matching ${JSON.stringify(text)}`);
  return [first, last];
}

function main(): void {
  const { values, positionals } = parseArgs({
    options: {
      depth: { type: 'string', default: '4' },
      top: { type: 'string', default: '30' },
      filter: { type: 'string' },
      window: { type: 'string' },
    },
    allowPositionals: true,
    strict: true,
  });
  const depth = Number(values.depth);
  const top = Number(values.top);
  if (positionals.length !== 1) throw new Error('usage: prof-summary.ts FILE [--depth N] [--top N] [--filter TEXT] [--window TEXT]');
  if (!Number.isInteger(depth) || depth < 1 || depth > 50) throw new Error('--depth must be an integer in 1..50');
  if (!Number.isInteger(top) || top < 1) throw new Error('--top must be a positive integer');
  const profile = JSON.parse(readFileSync(positionals[0]!, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const [from, to] = values.window === undefined ? [0, profile.samples.length - 1] : sampleWindow(profile, byId, parent, values.window);
  // Microseconds per sampled node: a sample's time is the delta to the next sample.
  const selfOf = new Map<number, number>();
  for (let i = from; i <= to; i++) {
    const id = profile.samples[i]!;
    selfOf.set(id, (selfOf.get(id) ?? 0) + (profile.timeDeltas[i + 1] ?? 0));
  }
  const total = [...selfOf.values()].reduce((a, b) => a + b, 0);
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const chains = new Map<string, number>();
  const add = (m: Map<string, number>, k: string, us: number) => m.set(k, (m.get(k) ?? 0) + us);
  for (const [id, us] of selfOf) {
    const node = byId.get(id)!;
    add(self, label(node.callFrame), us);
    const chain: string[] = [];
    const seen = new Set<string>();
    for (let n: ProfileNode | undefined = node; n !== undefined; n = byId.get(parent.get(n.id) ?? -1)) {
      const l = label(n.callFrame);
      if (!seen.has(l)) {
        seen.add(l);
        add(inclusive, l, us);
      }
      if (chain.length < depth) chain.push(l);
    }
    add(chains, chain.join('  <-  '), us);
  }
  const print = (title: string, m: Map<string, number>) => {
    console.log(`\n== ${title} (${(total / 1e6).toFixed(2)} s sampled)`);
    const rows = [...m].filter(([k]) => values.filter === undefined || k.includes(values.filter));
    rows.sort((a, b) => b[1] - a[1]);
    for (const [k, us] of rows.slice(0, top))
      console.log(`${((100 * us) / total).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(7)} ms  ${k}`);
  };
  print('self time per function', self);
  print('inclusive time per function', inclusive);
  print(`self time per caller chain (depth ${depth})`, chains);
}

main();
