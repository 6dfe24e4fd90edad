// Dockerfile.server and Dockerfile.operator, checked without a Docker engine (none runs here).
//
// 1. Static: a small Dockerfile parser (FROM, ARG, WORKDIR, ENV, COPY, RUN, USER, EXPOSE, VOLUME,
//    ENTRYPOINT, CMD; line continuations, comments, exec and shell forms) reads both files: every
//    COPY source from the build context exists and is not excluded by .dockerignore (nor is any
//    file the build needs under it), every base image is pinned to an exact version, the runtime
//    stage runs as a non-root numeric user with the CLI as ENTRYPOINT, and copies only what runs.
// 2. Replayed: the runtime stage is rebuilt in a temp directory standing for the image's root
//    filesystem. Its COPY lines are replayed (from the build context through .dockerignore, from
//    other stages), the `npm` RUN lines of the stages it copies from run for real (a fresh
//    `npm ci --omit=dev` from the lockfile, preferring the npm cache), and the build stage is stood
//    for by this checkout's built dist/. Then the ENTRYPOINT, resolved through the image's PATH
//    inside that root, runs with the image's ENV: `dittofs --version`, `dittofs config validate`,
//    the default CMD (`start`) answering /health, and `dittofs-operator --help`.
//    What cannot be replayed without an engine (system RUN lines such as useradd, the base image's
//    own files) is reported as a diagnostic, not pretended.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, statSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readdir, realpath, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { COMMAND_TIMEOUT_MS, READY_TIMEOUT_MS, STOP_TIMEOUT_MS } from '../helpers/limits.js';
import { freePort, REPO_ROOT } from '../helpers/server.js';

// --- a Dockerfile parser ------------------------------------------------------------------------

interface Instruction {
  keyword: string;
  /** The text after the keyword, continuations joined. */
  args: string;
  /** 1-based line of the keyword. */
  line: number;
}

interface Stage {
  index: number;
  name: string | undefined;
  /** The base image with global ARGs substituted. */
  base: string;
  instructions: Instruction[];
}

interface Dockerfile {
  file: string;
  globalArgs: Map<string, string>;
  stages: Stage[];
}

/** Splits into instructions: comments and blank lines dropped (inside continuations too), `\` joins. */
function instructionsOf(text: string): Instruction[] {
  const out: Instruction[] = [];
  const lines = text.split(/\r?\n/);
  let current: { text: string; line: number } | undefined;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i] ?? '';
    const trimmed = raw.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const continued = /\\\s*$/.test(raw);
    const piece = continued ? raw.replace(/\\\s*$/, '') : raw;
    if (current === undefined) current = { text: piece.trimStart(), line: i + 1 };
    else current.text += piece;
    if (!continued) {
      const m = /^([A-Za-z]+)(?:\s+([\s\S]*))?$/.exec(current.text.trim());
      assert.ok(m, `line ${current.line}: not an instruction: ${current.text}`);
      out.push({ keyword: m[1]!.toUpperCase(), args: (m[2] ?? '').trim(), line: current.line });
      current = undefined;
    }
  }
  assert.equal(current, undefined, 'the file ends inside a line continuation');
  return out;
}

/** ${VAR}, ${VAR:-default}, $VAR from `vars`; unknown variables become ''. */
function substitute(s: string, vars: ReadonlyMap<string, string>): string {
  return s.replace(
    /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g,
    (_m, a?: string, def?: string, b?: string) => {
      const v = vars.get((a ?? b)!);
      return v !== undefined && v !== '' ? v : (def ?? '');
    },
  );
}

/** Leading `--flag` / `--flag=value` options, and the rest. */
function splitFlags(args: string): { flags: Map<string, string>; rest: string } {
  const flags = new Map<string, string>();
  let rest = args;
  for (;;) {
    const m = /^--([a-z-]+)(?:=(\S*))?\s+/.exec(rest);
    if (!m) break;
    flags.set(m[1]!, m[2] ?? 'true');
    rest = rest.slice(m[0].length);
  }
  return { flags, rest };
}

/** The exec (JSON array) form, or undefined for the shell form. */
function execForm(args: string): string[] | undefined {
  if (!args.startsWith('[')) return undefined;
  const v = JSON.parse(args) as unknown;
  assert.ok(Array.isArray(v) && v.every((x) => typeof x === 'string'), `not a JSON array of strings: ${args}`);
  return v;
}

/** ENV k=v k2="v 2" ... (or the legacy `ENV k v`). */
function envPairs(args: string): [string, string][] {
  if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(args)) {
    const m = /^(\S+)\s+([\s\S]*)$/.exec(args);
    assert.ok(m, `bad ENV: ${args}`);
    return [[m[1]!, m[2]!]];
  }
  const pairs: [string, string][] = [];
  const re = /([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|'[^']*'|\S*)\s*/gy;
  let consumed = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(args)) !== null) {
    let v = m[2]!;
    if (v.startsWith('"')) v = v.slice(1, -1).replace(/\\(.)/g, '$1');
    else if (v.startsWith("'")) v = v.slice(1, -1);
    pairs.push([m[1]!, v]);
    consumed = re.lastIndex;
  }
  assert.equal(consumed, args.length, `bad ENV (unparsed: ${args.slice(consumed)})`);
  return pairs;
}

function parseDockerfile(file: string): Dockerfile {
  const globalArgs = new Map<string, string>();
  const stages: Stage[] = [];
  for (const ins of instructionsOf(readFileSync(file, 'utf8'))) {
    if (ins.keyword === 'FROM') {
      const { rest } = splitFlags(ins.args);
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest);
      assert.ok(m, `${path.basename(file)}:${ins.line}: bad FROM`);
      stages.push({ index: stages.length, name: m[2]?.toLowerCase(), base: substitute(m[1]!, globalArgs), instructions: [] });
    } else if (stages.length === 0) {
      assert.equal(ins.keyword, 'ARG', `${path.basename(file)}:${ins.line}: only ARG may come before the first FROM`);
      const [k, v] = ins.args.split('=', 2);
      globalArgs.set(k!.trim(), (v ?? '').trim());
    } else {
      stages.at(-1)!.instructions.push(ins);
    }
  }
  assert.ok(stages.length > 0, `${file}: no FROM`);
  return { file, globalArgs, stages };
}

interface Copy {
  from: string | undefined;
  sources: string[];
  dest: string;
  line: number;
}

function copiesOf(stage: Stage): Copy[] {
  return stage.instructions
    .filter((i) => i.keyword === 'COPY' || i.keyword === 'ADD')
    .map((i) => {
      assert.equal(i.keyword, 'COPY', `line ${i.line}: use COPY, not ADD`);
      const { flags, rest } = splitFlags(i.args);
      const words = execForm(rest) ?? rest.split(/\s+/);
      assert.ok(words.length >= 2, `line ${i.line}: COPY needs a source and a destination`);
      return { from: flags.get('from')?.toLowerCase(), sources: words.slice(0, -1), dest: words.at(-1)!, line: i.line };
    });
}

const last = (stage: Stage, keyword: string): Instruction | undefined => stage.instructions.filter((i) => i.keyword === keyword).at(-1);

/** RUN commands of a stage, mount/network flags removed. */
const runsOf = (stage: Stage): { cmd: string; line: number }[] =>
  stage.instructions.filter((i) => i.keyword === 'RUN').map((i) => ({ cmd: splitFlags(i.args).rest, line: i.line }));

function stageByName(df: Dockerfile, name: string): Stage {
  const s = df.stages.find((x) => x.name === name || String(x.index) === name);
  assert.ok(s, `${path.basename(df.file)}: no stage ${name}`);
  return s;
}

// --- .dockerignore (moby/patternmatcher semantics: last match wins, `!` re-includes, a matching
// directory excludes everything under it, `**` spans directories) --------------------------------

interface IgnoreRule {
  re: RegExp;
  negate: boolean;
}

function globToRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*' && pattern[i + 1] === '*') {
      i++;
      if (pattern[i + 1] === '/') {
        i++;
        re += '(?:.*/)?';
      } else {
        re += '.*';
      }
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = pattern.indexOf(']', i);
      re += end === -1 ? '\\[' : pattern.slice(i, end + 1);
      if (end !== -1) i = end;
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

function readDockerignore(): IgnoreRule[] {
  const file = path.join(REPO_ROOT, '.dockerignore');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const p = path.posix
        .normalize((negate ? l.slice(1) : l).trim())
        .replace(/^\/+/, '')
        .replace(/\/+$/, '');
      return { re: globToRegExp(p), negate };
    });
}

/** Whether a context-relative path is left out of the build context. */
function isIgnored(rules: IgnoreRule[], rel: string): boolean {
  const parts = path.posix.normalize(rel).replace(/\/+$/, '').split('/');
  let excluded = false;
  for (const rule of rules) {
    for (let n = 1; n <= parts.length; n++) {
      if (rule.re.test(parts.slice(0, n).join('/'))) {
        excluded = !rule.negate;
        break;
      }
    }
  }
  return excluded;
}

/** Files git knows under a directory (tracked, or new and not ignored): what a build would expect. */
function gitFiles(dir: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    execFile(
      'git',
      ['ls-files', '--cached', '--others', '--exclude-standard', '--', dir],
      { cwd: REPO_ROOT, maxBuffer: 64 << 20 },
      (err, out) =>
        err !== null ? reject(new Error(`git ls-files ${dir}: ${err.message}`)) : resolve(out.split('\n').filter((l) => l !== '')),
    );
  });
}

// --- running things -------------------------------------------------------------------------------

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function run(
  file: string,
  args: string[],
  opts: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number; shell?: boolean },
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true, shell: opts.shell });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* already gone */
      }
      reject(new Error(`${file} ${args.join(' ')} did not finish within ${opts.timeoutMs} ms\n${stderr.slice(-4000)}`));
    }, opts.timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

function httpGet(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: 2000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

// --- replaying a stage in a directory that stands for the image's root ------------------------------

/** PATH of the node:*-bookworm images, which a stage's `ENV PATH=...:$PATH` extends. */
const BASE_IMAGE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** A stage that compiles (`npm run build`) is stood for by this checkout, built by `npm run build`. */
const isBuildStage = (stage: Stage): boolean => runsOf(stage).some((r) => /\bnpm run build\b/.test(r.cmd));

interface Replayed {
  /** The directory standing for `/`. */
  root: string;
  workdir: string;
  /** The image's ENV, container-side values. */
  env: Map<string, string>;
  user: string | undefined;
  entrypoint: string[] | undefined;
  cmd: string[] | undefined;
  volumes: string[];
  exposed: number[];
  /** RUN lines not replayed (system setup), for the report. */
  skipped: string[];
}

const inRoot = (root: string, containerPath: string): string => path.join(root, containerPath);

class Replayer {
  private readonly done = new Map<number, Promise<Replayed>>();
  readonly log: string[] = [];
  constructor(
    private readonly df: Dockerfile,
    private readonly tmp: string,
    private readonly ignore: IgnoreRule[],
  ) {}

  stage(stage: Stage): Promise<Replayed> {
    let p = this.done.get(stage.index);
    if (p === undefined) {
      p = this.replay(stage);
      this.done.set(stage.index, p);
    }
    return p;
  }

  /** Where a container path of another stage is on this machine. */
  private async sourceIn(from: string, containerPath: string): Promise<string> {
    const stage = stageByName(this.df, from);
    if (isBuildStage(stage)) {
      const wd = stage.instructions.filter((i) => i.keyword === 'WORKDIR').reduce((d, i) => path.posix.resolve(d, i.args), '/');
      const rel = path.posix.relative(wd, path.posix.resolve(wd, containerPath));
      assert.ok(!rel.startsWith('..'), `COPY --from=${from} ${containerPath}: outside the build stage's WORKDIR ${wd}`);
      return path.join(REPO_ROOT, rel);
    }
    const r = await this.stage(stage);
    return inRoot(r.root, path.posix.resolve(r.workdir, containerPath));
  }

  private async replay(stage: Stage): Promise<Replayed> {
    const root = await mkdtemp(path.join(this.tmp, `stage-${stage.name ?? stage.index}-`));
    const r: Replayed = {
      root,
      workdir: '/',
      env: new Map([['PATH', BASE_IMAGE_PATH]]),
      user: undefined,
      entrypoint: undefined,
      cmd: undefined,
      volumes: [],
      exposed: [],
      skipped: [],
    };
    const vars = (): Map<string, string> => new Map([...this.df.globalArgs, ...r.env]);
    for (const ins of stage.instructions) {
      switch (ins.keyword) {
        case 'WORKDIR':
          r.workdir = path.posix.resolve(r.workdir, substitute(ins.args, vars()));
          await mkdir(inRoot(root, r.workdir), { recursive: true });
          break;
        case 'ENV':
          for (const [k, v] of envPairs(ins.args)) r.env.set(k, substitute(v, vars()));
          break;
        case 'COPY':
          await this.copy(copiesOf({ ...stage, instructions: [ins] })[0]!, r);
          break;
        case 'RUN': {
          const cmd = splitFlags(ins.args).rest;
          if (/^npm\s/.test(cmd)) await this.npm(cmd, r, ins.line);
          else r.skipped.push(`line ${ins.line}: ${cmd.replace(/\s+/g, ' ')}`);
          break;
        }
        case 'USER':
          r.user = ins.args;
          break;
        case 'ENTRYPOINT':
          r.entrypoint = execForm(ins.args);
          assert.ok(r.entrypoint, `line ${ins.line}: ENTRYPOINT in shell form (signals would go to /bin/sh, not the CLI)`);
          break;
        case 'CMD':
          r.cmd = execForm(ins.args);
          assert.ok(r.cmd, `line ${ins.line}: CMD in shell form`);
          break;
        case 'VOLUME':
          for (const v of execForm(ins.args) ?? ins.args.split(/\s+/)) {
            r.volumes.push(v);
            await mkdir(inRoot(root, v), { recursive: true });
          }
          break;
        case 'EXPOSE':
          r.exposed.push(...ins.args.split(/\s+/).map((p) => Number(p.split('/')[0])));
          break;
        default:
          break; // ARG, LABEL, HEALTHCHECK, SHELL, STOPSIGNAL: nothing to replay
      }
    }
    return r;
  }

  private async copy(c: Copy, r: Replayed): Promise<void> {
    const dest = path.posix.resolve(r.workdir, c.dest);
    const intoDir = c.dest.endsWith('/') || c.sources.length > 1;
    for (const src of c.sources) {
      let from: string;
      let filter: ((s: string) => boolean) | undefined;
      if (c.from === undefined) {
        from = path.join(REPO_ROOT, src);
        filter = (s) => !isIgnored(this.ignore, path.relative(REPO_ROOT, s) || '.');
      } else {
        from = await this.sourceIn(c.from, src);
      }
      assert.ok(existsSync(from), `COPY (line ${c.line}) ${c.from ? `--from=${c.from} ` : ''}${src}: ${from} does not exist`);
      const isDir = statSync(from).isDirectory();
      const to = inRoot(r.root, isDir || !intoDir ? dest : path.posix.join(dest, path.posix.basename(src)));
      await mkdir(isDir ? to : path.dirname(to), { recursive: true });
      // A directory source copies its contents; symlinks (npm's workspace and .bin links) stay links.
      await cp(from, to, { recursive: true, verbatimSymlinks: true, filter });
      this.log.push(`COPY ${c.from ? `--from=${c.from} ` : ''}${src} -> ${dest}`);
    }
  }

  private async npm(cmd: string, r: Replayed, line: number): Promise<void> {
    const started = Date.now();
    const res = await run('sh', ['-c', cmd], {
      cwd: inRoot(r.root, r.workdir),
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        // The registry is reachable, but the cache usually has everything: use it first.
        npm_config_prefer_offline: 'true',
        npm_config_update_notifier: 'false',
        npm_config_loglevel: 'error',
      },
      // npm ci on a loaded machine: minutes.
      timeoutMs: 2 * COMMAND_TIMEOUT_MS,
    });
    assert.equal(res.code, 0, `RUN (line ${line}) ${cmd} failed (exit ${res.code}):\n${res.stderr.slice(-4000)}${res.stdout.slice(-2000)}`);
    this.log.push(`RUN ${cmd} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  }
}

/** The environment the image's processes get: its ENV, container paths mapped into the root. */
function imageEnv(r: Replayed, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { HOME: inRoot(r.root, '/tmp'), LANG: 'C.UTF-8' };
  for (const [k, v] of r.env) {
    if (k === 'PATH') {
      // The image's own directories (those that exist in the root), then this machine's, for `node` and `sh`.
      const own = v
        .split(':')
        .map((d) => inRoot(r.root, d))
        .filter((d) => existsSync(d));
      env.PATH = [...own, process.env.PATH ?? ''].join(':');
    } else {
      env[k] = v.startsWith('/') ? inRoot(r.root, v) : v;
    }
  }
  return { ...env, ...extra };
}

/** argv[0] of the ENTRYPOINT as the image would find it: on the image's PATH, inside the root. */
function resolveInImage(r: Replayed, cmd: string): string {
  if (cmd.startsWith('/')) return inRoot(r.root, cmd);
  for (const dir of (r.env.get('PATH') ?? '').split(':')) {
    const p = inRoot(r.root, path.posix.join(dir, cmd));
    if (existsSync(p)) return p;
  }
  assert.fail(`ENTRYPOINT ${cmd} is not on the image's PATH (${r.env.get('PATH')}) in the replayed root`);
}

// --- what each image must be ----------------------------------------------------------------------

interface ImageSpec {
  dockerfile: string;
  pkg: 'server' | 'operator';
  entrypoint: string[];
  cmd: string[] | undefined;
  ports: number[];
  volumes: string[];
}

const IMAGES: ImageSpec[] = [
  {
    dockerfile: 'Dockerfile.server',
    pkg: 'server',
    entrypoint: ['dittofs'],
    cmd: ['start'],
    ports: [12049, 12445, 8080, 9090],
    volumes: ['/data'],
  },
  { dockerfile: 'Dockerfile.operator', pkg: 'operator', entrypoint: ['dittofs-operator'], cmd: undefined, ports: [8081], volumes: [] },
];
const NON_ROOT_UID = 10001;

const pkgJson = (pkg: string): { name: string; version: string; dependencies?: Record<string, string> } =>
  JSON.parse(readFileSync(path.join(REPO_ROOT, pkg, 'package.json'), 'utf8')) as {
    name: string;
    version: string;
    dependencies?: Record<string, string>;
  };

let tmp: string;
let ignoreRules: IgnoreRule[];

before(async () => {
  tmp = await realpath(await mkdtemp(path.join(os.tmpdir(), 'dittofs-images-')));
  ignoreRules = readDockerignore();
  // The replay copies the built dist/ of this checkout in place of the build stage.
  if (!existsSync(path.join(REPO_ROOT, 'server', 'dist', 'cli', 'dittofs.js'))) {
    const b = await run('npm', ['run', 'build', '--silent'], { cwd: REPO_ROOT, env: process.env, timeoutMs: 2 * COMMAND_TIMEOUT_MS });
    assert.equal(b.code, 0, `npm run build failed:\n${b.stderr}${b.stdout}`);
  }
});

after(async () => {
  if (tmp !== undefined) await rm(tmp, { recursive: true, force: true });
});

describe('.dockerignore (no Docker engine runs here: checked by a parser)', () => {
  it('keeps host build output, installed modules, local data and git out of the build context', () => {
    assert.ok(ignoreRules.length > 0, '.dockerignore is missing or empty');
    for (const p of [
      'node_modules/yaml/package.json',
      'server/node_modules/x',
      'server/dist/cli/dittofs.js',
      'operator/dist/main.js',
      '.git/HEAD',
      'data/metadata/x',
      'dittofs.yaml',
      'coverage/lcov.info',
    ])
      assert.ok(isIgnored(ignoreRules, p), `${p} would be sent to the Docker build`);
    for (const p of [
      'package.json',
      'package-lock.json',
      'tsconfig.base.json',
      'server/src/server.ts',
      'server/bin/dittofs.js',
      'server/package.json',
      'operator/package.json',
    ])
      assert.ok(!isIgnored(ignoreRules, p), `${p} is excluded from the build context`);
  });
});

for (const spec of IMAGES) {
  describe(`${spec.dockerfile} (no Docker engine runs here: parsed, then its runtime stage replayed on the host)`, () => {
    const df = parseDockerfile(path.join(REPO_ROOT, spec.dockerfile));
    const runtime = df.stages.at(-1)!;

    it('every COPY source from the build context exists and is not excluded by .dockerignore', async () => {
      for (const stage of df.stages) {
        for (const c of copiesOf(stage)) {
          if (c.from !== undefined) {
            const from = stageByName(df, c.from);
            assert.ok(from.index < stage.index, `line ${c.line}: COPY --from=${c.from} names a later stage`);
            continue;
          }
          for (const src of c.sources) {
            assert.ok(!/[*?[]/.test(src), `line ${c.line}: glob in COPY source ${src}: list the files`);
            const rel = path.posix.normalize(src).replace(/\/$/, '');
            assert.ok(!rel.startsWith('..'), `line ${c.line}: ${src} is outside the build context`);
            assert.ok(existsSync(path.join(REPO_ROOT, rel)), `line ${c.line}: COPY source ${src} does not exist`);
            assert.ok(!isIgnored(ignoreRules, rel), `line ${c.line}: COPY source ${src} is excluded by .dockerignore`);
            if (lstatSync(path.join(REPO_ROOT, rel)).isDirectory()) {
              // Everything git knows there is what the build expects to find.
              const dropped = (await gitFiles(rel)).filter((f) => isIgnored(ignoreRules, f));
              assert.deepEqual(dropped, [], `line ${c.line}: .dockerignore drops files under ${src} that the build needs`);
            }
          }
        }
      }
    });

    it('package-lock.json lists the package bin, so that npm ci links the ENTRYPOINT', () => {
      // npm ci links node_modules/.bin from the lockfile's record of the workspace, not from its
      // package.json: a bin added without refreshing the lockfile is missing from the image.
      const lock = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package-lock.json'), 'utf8')) as {
        packages: Record<string, { bin?: Record<string, string> }>;
      };
      const declared = (
        JSON.parse(readFileSync(path.join(REPO_ROOT, spec.pkg, 'package.json'), 'utf8')) as { bin?: Record<string, string> }
      ).bin;
      assert.ok(declared?.[spec.entrypoint[0]!], `${spec.pkg}/package.json declares no bin ${spec.entrypoint[0]}`);
      assert.deepEqual(
        lock.packages[spec.pkg]?.bin,
        declared,
        `package-lock.json is stale for ${spec.pkg}: its bin differs from ${spec.pkg}/package.json (npm install --package-lock-only)`,
      );
    });

    it('pins every base image to an exact version (no latest, no floating major)', () => {
      for (const stage of df.stages) {
        if (df.stages.some((s) => s.name !== undefined && s.name === stage.base.toLowerCase())) continue; // FROM <earlier stage>
        const [ref, digest] = stage.base.split('@');
        const tag = /:([^/:]+)$/.exec(ref!)?.[1];
        const pinnedDigest = digest !== undefined && /^sha256:[a-f0-9]{64}$/.test(digest);
        assert.ok(tag !== undefined || pinnedDigest, `FROM ${stage.base}: no tag or digest`);
        assert.notEqual(tag, 'latest', `FROM ${stage.base}`);
        assert.ok(pinnedDigest || /^v?\d+\.\d+\.\d+(?:$|[-_.])/.test(tag!), `FROM ${stage.base}: the tag is not an exact version`);
      }
      // The one Node.js the repository is tested with.
      assert.match(
        runtime.base,
        new RegExp(`^node:${process.versions.node.replace(/\./g, '\\.')}-`),
        `runtime base ${runtime.base} is not node ${process.versions.node}`,
      );
    });

    it(`runs as the non-root uid ${NON_ROOT_UID}, with ${spec.entrypoint.join(' ')} as ENTRYPOINT`, () => {
      const user = last(runtime, 'USER')?.args;
      assert.ok(user, 'the runtime stage has no USER: it would run as root');
      // Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
      assert.match(user, /^\d+(:\d+)?$/, `USER ${user} is not numeric`);
      const [uid, gid] = user.split(':');
      assert.equal(Number(uid), NON_ROOT_UID);
      if (gid !== undefined) assert.notEqual(Number(gid), 0, 'group root');
      assert.deepEqual(execForm(last(runtime, 'ENTRYPOINT')?.args ?? ''), spec.entrypoint);
      const cmd = last(runtime, 'CMD');
      assert.deepEqual(cmd === undefined ? undefined : execForm(cmd.args), spec.cmd);
      const exposed = runtime.instructions
        .filter((i) => i.keyword === 'EXPOSE')
        .flatMap((i) => i.args.split(/\s+/).map((p) => Number(p.split('/')[0])));
      assert.deepEqual(
        exposed.sort((a, b) => a - b),
        [...spec.ports].sort((a, b) => a - b),
      );
      const volumes = runtime.instructions.filter((i) => i.keyword === 'VOLUME').flatMap((i) => execForm(i.args) ?? i.args.split(/\s+/));
      assert.deepEqual(volumes, spec.volumes);
      if (spec.pkg === 'operator') {
        // The chart runs the operator as the image's user.
        const values = parseYaml(readFileSync(path.join(REPO_ROOT, 'charts', 'dittofs-operator', 'values.yaml'), 'utf8')) as {
          podSecurityContext: { runAsUser: number; runAsGroup: number };
          securityContext: { runAsUser: number };
        };
        assert.equal(values.podSecurityContext.runAsUser, NON_ROOT_UID);
        assert.equal(values.securityContext.runAsUser, NON_ROOT_UID);
      }
    });

    it('builds in a stage with the whole workspace and installs production dependencies only', () => {
      const build = df.stages.filter(isBuildStage);
      assert.equal(build.length, 1, 'one build stage (npm run build)');
      const buildRuns = runsOf(build[0]!).map((r) => r.cmd);
      assert.ok(
        buildRuns.some((c) => /^npm ci\b/.test(c) && !/--omit[= ]dev/.test(c)),
        'the build stage installs dev dependencies (npm ci)',
      );
      assert.ok(
        buildRuns.some((c) => new RegExp(`npm run build -w ${spec.pkg}\\b`).test(c)),
        `the build stage builds ${spec.pkg}`,
      );
      // Every other stage the runtime copies from installs with `npm ci --omit=dev -w <pkg>`.
      const depStages = copiesOf(runtime)
        .map((c) => c.from)
        .filter((f): f is string => f !== undefined)
        .map((f) => stageByName(df, f))
        .filter((st) => !isBuildStage(st));
      assert.ok(depStages.length > 0, 'the runtime stage copies its node_modules from a dependency stage');
      for (const st of depStages) {
        const runs = runsOf(st).map((r) => r.cmd);
        assert.ok(
          runs.some((c) => /^npm ci\b/.test(c) && /--omit[= ]dev\b/.test(c) && new RegExp(`(-w|--workspace)[= ]${spec.pkg}\\b`).test(c)),
          `stage ${st.name ?? st.index} runs npm ci --omit=dev -w ${spec.pkg}: ${runs.join('; ')}`,
        );
      }
    });

    it('puts into the runtime stage only what runs: manifests, lockfile, bin/, dist/, node_modules', () => {
      // From the build context: manifests, the lockfile and bin/ only (src/, tests, configs stay out).
      const contextOk = (src: string): boolean =>
        /^(?:package\.json|package-lock\.json|(?:server|operator)\/package\.json|(?:server|operator)\/bin)$/.test(
          path.posix.normalize(src).replace(/\/$/, ''),
        );
      const check = (stage: Stage, seen: Set<number>): void => {
        seen.add(stage.index);
        for (const c of copiesOf(stage)) {
          for (const src of c.sources) {
            const what = `line ${c.line}: COPY ${c.from ? `--from=${c.from} ` : ''}${src}`;
            if (c.from === undefined) {
              assert.ok(contextOk(src), `${what} (stage ${stage.name ?? stage.index}) ends up in the runtime image`);
              continue;
            }
            const from = stageByName(df, c.from);
            if (isBuildStage(from)) assert.match(src, /\/dist\/?$/, `${what}: only dist/ comes from the build stage`);
            else if (!seen.has(from.index)) check(from, seen);
          }
        }
      };
      check(runtime, new Set());
    });

    describe('its runtime stage, replayed from a fresh production install', () => {
      let image: Replayed | undefined;
      let why: string | undefined;

      before(async () => {
        if (spec.pkg === 'operator') {
          const missing = ['operator/bin/dittofs-operator.js', 'operator/dist/main.js'].filter((f) => !existsSync(path.join(REPO_ROOT, f)));
          if (missing.length > 0) {
            why = `${missing.join(' and ')} missing: the operator is not written or not built yet (npm run build)`;
            return;
          }
        }
        const replayer = new Replayer(df, tmp, ignoreRules);
        image = await replayer.stage(runtime);
        for (const l of replayer.log) console.log(`# ${spec.dockerfile}: ${l}`);
        for (const s of image.skipped) console.log(`# ${spec.dockerfile}: not replayed (needs the image's OS): ${s}`);
      });

      it('has production dependencies only, and the workspace package linked', async (t) => {
        if (image === undefined) return t.skip(why);
        const app = inRoot(image.root, image.workdir);
        const lock = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package-lock.json'), 'utf8')) as {
          packages: Record<string, { dev?: boolean; link?: boolean }>;
        };
        // What the lockfile marks dev-only is not installed, wherever npm would put it.
        const devInstalled = Object.entries(lock.packages)
          .filter(([k, v]) => k.includes('node_modules/') && v.dev === true && existsSync(path.join(app, k)))
          .map(([k]) => k);
        assert.deepEqual(devInstalled, [], 'dev dependencies in the image');
        const installed = (dep: string): boolean =>
          existsSync(path.join(app, spec.pkg, 'node_modules', dep)) || existsSync(path.join(app, 'node_modules', dep));
        const own = pkgJson(spec.pkg).dependencies ?? {};
        for (const dep of Object.keys(own)) assert.ok(installed(dep), `dependency ${dep} is missing`);
        // The other workspace's own dependencies are not in this image.
        const other = spec.pkg === 'server' ? 'operator' : 'server';
        for (const dep of Object.keys(pkgJson(other).dependencies ?? {})) {
          if (!(dep in own)) assert.ok(!installed(dep), `${other}'s dependency ${dep} is in the ${spec.pkg} image`);
        }
        const link = path.join(app, 'node_modules', pkgJson(spec.pkg).name);
        assert.ok(lstatSync(link).isSymbolicLink(), `node_modules/${pkgJson(spec.pkg).name} is not the workspace link`);
        assert.equal(await realpath(link), path.join(await realpath(app), spec.pkg));
      });

      if (spec.pkg === 'server') {
        it('dittofs --version and dittofs config validate exit 0; dittofsctl runs', async (t) => {
          if (image === undefined) return t.skip(why);
          const bin = resolveInImage(image, image.entrypoint![0]!);
          const cwd = inRoot(image.root, image.workdir);
          const env = imageEnv(image);
          const v = await run(bin, ['--version'], { cwd, env, timeoutMs: COMMAND_TIMEOUT_MS });
          assert.equal(v.code, 0, v.stderr);
          assert.equal(v.stdout.trim(), pkgJson('server').version);
          const c = await run(bin, ['config', 'validate'], { cwd, env, timeoutMs: COMMAND_TIMEOUT_MS });
          assert.equal(c.code, 0, `${c.stderr}${c.stdout}`);
          // The image's ENV puts the data directory on the volume.
          const show = await run(bin, ['config', 'show'], { cwd, env, timeoutMs: COMMAND_TIMEOUT_MS });
          assert.equal(show.code, 0, show.stderr);
          assert.match(show.stdout, new RegExp(`^data_dir: ${inRoot(image.root, '/data').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
          const ctl = await run(resolveInImage(image, 'dittofsctl'), ['--help'], { cwd, env, timeoutMs: COMMAND_TIMEOUT_MS });
          assert.equal(ctl.code, 0, ctl.stderr);
        });

        it('the default command (start) serves /health and stops cleanly on SIGTERM', async (t) => {
          if (image === undefined) return t.skip(why);
          const [nfs, smb, api, metrics] = [await freePort(), await freePort(), await freePort(), await freePort()];
          const env = imageEnv(image, {
            DITTOFS_BIND_ADDRESS: '127.0.0.1',
            DITTOFS_NFS_PORT: String(nfs),
            DITTOFS_SMB_PORT: String(smb),
            DITTOFS_API_PORT: String(api),
            DITTOFS_METRICS_PORT: String(metrics),
            DITTOFS_LOG_LEVEL: 'warn',
            DITTOFS_ADMIN_INITIAL_PASSWORD: 'dittofs-image-test',
          });
          const child = spawn(resolveInImage(image, image.entrypoint![0]!), [...image.entrypoint!.slice(1), ...(image.cmd ?? [])], {
            cwd: inRoot(image.root, image.workdir),
            env,
            stdio: ['ignore', 'pipe', 'pipe'],
          });
          let out = '';
          child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
          child.stderr.setEncoding('utf8').on('data', (c: string) => (out += c));
          const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
          try {
            let health: { status: number; body: string } | undefined;
            for (const deadline = Date.now() + READY_TIMEOUT_MS; Date.now() < deadline && child.exitCode === null;) {
              health = await httpGet(`http://127.0.0.1:${api}/health`).catch(() => undefined);
              if (health?.status === 200) break;
              await sleep(250);
            }
            assert.equal(health?.status, 200, `GET /health: ${health?.status ?? 'no answer'}\n--- server output ---\n${out}`);
            // Its state is on the volume.
            assert.ok((await readdir(inRoot(image.root, '/data'))).length > 0, 'nothing written to /data');
          } finally {
            child.kill('SIGTERM');
            const t = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
            const code = await exited;
            clearTimeout(t);
            assert.equal(code, 0, `exit code after SIGTERM\n--- server output ---\n${out}`);
          }
        });
      } else {
        it('dittofs-operator --help exits 0', async (t) => {
          if (image === undefined) return t.skip(why);
          const r = await run(resolveInImage(image, image.entrypoint![0]!), ['--help'], {
            cwd: inRoot(image.root, image.workdir),
            env: imageEnv(image),
            timeoutMs: COMMAND_TIMEOUT_MS,
          });
          assert.equal(r.code, 0, `${r.stderr}${r.stdout}`);
          assert.notEqual(`${r.stdout}${r.stderr}`.trim(), '', 'no help text');
        });
      }
    });
  });
}
