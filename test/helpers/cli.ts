// The built command-line programs, as users run them: `node server/dist/cli/<name>.js`. `make test`
// builds them first. Starting the compiled JavaScript takes a fraction of what `tsx` needs to
// compile the sources at every start, and the subprocesses queue for SUBPROCESS_SLOTS.
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runNode, type Run, type RunOptions } from './run.js';
import { freePort } from './server.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The newest modification time of the files under `dir` whose names pass `keep` (0 if none). */
function newestMtime(dir: string, keep: (name: string) => boolean): { ms: number; file: string } {
  let best = { ms: 0, file: '' };
  // Bounded: a tree of a few thousand files at most.
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile() || !keep(e.name)) continue;
    const file = path.join(e.parentPath, e.name);
    const ms = statSync(file).mtimeMs;
    if (ms > best.ms) best = { ms, file };
  }
  return best;
}

const checked = new Map<string, string>();

/**
 * The path of a built program of a workspace (`builtProgram('server', 'cli/dittofs.js')`). Throws,
 * naming the command to run, if it is not built or if a source file changed after the last build
 * (a test of a stale build would test old code).
 */
export function builtProgram(workspace: 'server' | 'operator', rel: string): string {
  const key = `${workspace}/${rel}`;
  const known = checked.get(key);
  if (known !== undefined) return known;
  const dist = path.join(REPO_ROOT, workspace, 'dist');
  const file = path.join(dist, rel);
  const build = `run \`npm run build\` (or \`make build\`) first`;
  try {
    statSync(file);
  } catch {
    throw new Error(`${path.relative(REPO_ROOT, file)} is not built: ${build}`);
  }
  const src = newestMtime(path.join(REPO_ROOT, workspace, 'src'), (n) => n.endsWith('.ts') && !n.endsWith('.test.ts'));
  const out = newestMtime(dist, (n) => n.endsWith('.js'));
  if (src.ms > out.ms) {
    throw new Error(`${path.relative(REPO_ROOT, src.file)} changed after the last build of ${workspace}/dist: ${build}`);
  }
  checked.set(key, file);
  return file;
}

/** Runs `node server/dist/cli/<name>.js ARGS` (bounded in time and in how many run at once). */
export function runCli(name: 'dittofs' | 'dittofsctl', args: string[], opts: RunOptions = {}): Promise<Run> {
  return runNode(builtProgram('server', `cli/${name}.js`), args, { cwd: REPO_ROOT, ...opts });
}

/** This process's environment without the DITTOFS_* variables of whoever runs the tests. */
export function envWithoutDittofs(): Record<string, string> {
  return Object.fromEntries(
    Object.entries(process.env).filter((e): e is [string, string] => !e[0].startsWith('DITTOFS_') && e[1] !== undefined),
  );
}

/**
 * The DITTOFS_* settings of a server that a test starts with the CLI (`dittofs start`): `dataDir`,
 * 127.0.0.1, the API on `apiPort` and free ports for the rest, SMB off, logs at info.
 */
export async function cliServerEnv(dataDir: string, apiPort: number): Promise<Record<string, string>> {
  return {
    DITTOFS_DATA_DIR: dataDir,
    DITTOFS_BIND_ADDRESS: '127.0.0.1',
    DITTOFS_NFS_PORT: String(await freePort()),
    DITTOFS_API_PORT: String(apiPort),
    DITTOFS_METRICS_PORT: String(await freePort()),
    DITTOFS_SMB_ENABLED: 'false',
    DITTOFS_LOG_LEVEL: 'info',
  };
}
