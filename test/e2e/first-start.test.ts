// A new user's first start, with the built CLI as separate processes: a port in use stops the start
// before anything is created (so the admin's one-time password is not spent on a start that
// fails); the generated password is printed once the server listens, and works; `dittofs status`
// and `dittofs logs` see a server started in the foreground; `dittofs backup` works while it runs; `dittofs admin reset-password`
// refuses while it runs, checks the password's rules, and after a stop gives the admin a password
// that works at the next start (the old one no longer does); the README's control-plane example
// then runs as written against that server. In the background (`dittofs start -d`), where the
// server's standard error is the log file, the password reaches the caller and no file; a server
// whose caller is gone before it can tell it the password says so in the log, without it.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { adminLogin } from '../helpers/api.js';
import { cliServerEnv, envWithoutDittofs, runCli } from '../helpers/cli.js';
import { STOP_TIMEOUT_MS } from '../helpers/limits.js';
import type { Run } from '../helpers/run.js';
import { DITTOFS_CLI, REPO_ROOT, freePort, waitForPort } from '../helpers/server.js';

/** Generous: a first start creates two embedded databases, which takes minutes on a busy machine. */
const START_MS = 300_000;

describe('first start: port check, one-time password, status and logs, admin reset-password', { timeout: 1_200_000 }, () => {
  let dir: string;
  let env: Record<string, string>;
  let apiPort: number;
  let server: ChildProcess | undefined;

  /** Runs `dittofs ARGS` (the built CLI) to completion, with `input` on its standard input. */
  function dittofs(args: string[], input?: string, extra: Record<string, string> = {}): Promise<Run> {
    return runCli('dittofs', args, { env: { ...envWithoutDittofs(), ...env, ...extra }, input, timeoutMs: START_MS });
  }

  /** Runs the built `dittofsctl ARGS` with `input` on its standard input. */
  function ctl(args: string[], input: string, extra: Record<string, string>): Promise<Run> {
    return runCli('dittofsctl', args, { env: { ...envWithoutDittofs(), ...extra }, input, timeoutMs: START_MS });
  }

  /** Starts `dittofs start` in the foreground; resolves once the API accepts connections. */
  async function startForeground(): Promise<{ child: ChildProcess; stderr: () => string }> {
    const child = spawn(process.execPath, [DITTOFS_CLI, 'start'], {
      cwd: REPO_ROOT,
      env: { ...envWithoutDittofs(), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    server = child;
    let err = '';
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    try {
      await waitForPort(apiPort, START_MS, child);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n--- stderr ---\n${err}\n--- stdout (tail) ---\n${out.slice(-4000)}`);
    }
    return { child, stderr: () => err };
  }

  async function login(password: string): Promise<{ status: number; mustChange?: boolean }> {
    const r = await adminLogin(`http://127.0.0.1:${apiPort}`, password);
    return { status: r.status, ...(r.status >= 200 && r.status < 300 ? { mustChange: r.mustChange } : {}) };
  }

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-first-start-'));
    apiPort = await freePort();
    // No DITTOFS_ADMIN_INITIAL_PASSWORD: the first start generates one and prints it.
    env = await cliServerEnv(path.join(dir, 'data'), apiPort);
  });
  after(async () => {
    if (server && server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('a port in use, or two listeners on one port, stop the start before anything is created', async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(apiPort, '127.0.0.1', resolve));
    try {
      const r = await dittofs(['start']);
      assert.equal(r.code, 1, r.stderr);
      assert.match(
        r.stderr,
        new RegExp(
          `^dittofs: failed to start: the API cannot listen on 127\\.0\\.0\\.1:${apiPort}: the address is already in use .*change server\\.api\\.port`,
          'm',
        ),
      );
      assert.doesNotMatch(r.stderr, /created user/);
    } finally {
      await new Promise<void>((resolve) => holder.close(() => resolve()));
    }
    const same = await dittofs(['start'], undefined, { DITTOFS_METRICS_PORT: String(apiPort) });
    assert.equal(same.code, 1, same.stderr);
    assert.match(same.stderr, new RegExp(`metrics\\.port: port ${apiPort} is also used by server\\.api\\.port`));
    // Nothing was created: no control database (so no admin), no pid file left behind.
    assert.equal(existsSync(path.join(dir, 'data', 'control')), false);
    assert.equal(existsSync(path.join(dir, 'data', 'dittofs.pid')), false);
  });

  let generated = '';

  it('the first start prints the generated password once it listens; status and logs see the foreground server', async () => {
    const { stderr } = await startForeground();
    const deadline = Date.now() + START_MS;
    while (!/created user "admin" with password/.test(stderr()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const m = /created user "admin" with password (\S+)/.exec(stderr());
    assert.ok(m, `no password printed; stderr:\n${stderr()}`);
    generated = m[1]!;
    assert.deepEqual(await login(generated), { status: 200, mustChange: true });

    const status = await dittofs(['status', '-o', 'json']);
    assert.equal(status.code, 0, status.stdout + status.stderr);
    const s = JSON.parse(status.stdout) as { running: boolean; pid: number; ready: boolean; log_file: string };
    assert.deepEqual([s.running, s.pid, s.ready], [true, server!.pid, true]);
    assert.equal(s.log_file, path.join(dir, 'data', 'dittofs.log'));

    const logs = await dittofs(['logs', '-n', '500']);
    assert.equal(logs.code, 0, logs.stderr);
    assert.match(logs.stdout, /"msg":"start-up: listeners up, dittofs ready in \d+\.\d s"/);
    assert.match(logs.stdout, /"msg":"start-up: control plane opened in \d+\.\d s"/);
    // The password is printed, never logged.
    assert.equal(logs.stdout.includes(generated), false);
  });

  it('backup controlplane works while the server runs (asked of it through its local socket)', async () => {
    const file = path.join(dir, 'while-running.json');
    const b = await dittofs(['backup', 'controlplane', '--output', file]);
    assert.equal(b.code, 0, b.stderr);
    assert.match(b.stdout, /^backed up the control plane \(1 user, .*1 share, .*; generation \d+\) to /);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const doc = JSON.parse(await readFile(file, 'utf8')) as { users: { username: string; password_hash: string }[] };
    assert.deepEqual(
      doc.users.map((u) => u.username),
      ['admin'],
    );
    assert.match(doc.users[0]!.password_hash, /^\$2[aby]\$/);
    assert.equal((await stat(path.join(dir, 'data', 'dittofs.sock'))).mode & 0o777, 0o600);
  });

  it('admin reset-password refuses while the server runs', async () => {
    const r = await dittofs(['admin', 'reset-password', '--password-stdin'], 'a-new-admin-password\n');
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`^dittofs: a server is running on this data directory \\(pid ${server!.pid}; .*stop it first`, 'm'));
  });

  it('after a stop, reset-password checks the rules, sets the password, and the next start accepts it', async () => {
    const stop = await dittofs(['stop']);
    assert.equal(stop.code, 0, stop.stderr);
    assert.equal(existsSync(path.join(dir, 'data', 'dittofs.pid')), false);

    const short = await dittofs(['admin', 'reset-password', '--password-stdin'], 'short\n');
    assert.notEqual(short.code, 0);
    assert.match(short.stderr, /^dittofs: the password must be at least 8 characters long/m);
    const nobody = await dittofs(['admin', 'reset-password', 'nobody', '--password-stdin'], 'a-new-admin-password\n');
    assert.equal(nobody.code, 1);
    assert.match(nobody.stderr, /^dittofs: no user "nobody" in the control database \(users: admin \(admin\)\)/m);

    const r = await dittofs(['admin', 'reset-password', '--password-stdin'], 'a-new-admin-password\n');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^password of "admin" \(admin\) reset; its tokens are revoked$/m);

    const { stderr } = await startForeground();
    assert.deepEqual(await login('a-new-admin-password'), { status: 200, mustChange: false });
    assert.equal((await login(generated)).status, 401);
    assert.doesNotMatch(stderr(), /created user/, 'the admin exists: no second bootstrap');
  });

  it("the README's control-plane example runs as written, every command succeeding", async () => {
    const readme = await readFile(path.join(REPO_ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('\n## Control plane\n'));
    const block = /```bash\n([\s\S]*?)```/.exec(section)?.[1];
    assert.ok(block, 'the Control plane section has a bash block');
    const commands = block
      .split('\n')
      .map((l) => l.replace(/\s+#.*$/, '').trim())
      .filter((l) => l !== '');
    assert.ok(commands.length >= 10, block);
    const home = path.join(dir, 'ctl-home');
    // The one thing the reader changes: the server's address. Passwords come on standard input.
    const stdinFor: Record<string, string> = {
      login: 'a-new-admin-password\n',
      password: 'a-new-admin-password\nreadme-admin-password\n',
      'user create': 'alice-password-1\n',
    };
    for (const line of commands) {
      assert.match(line, /^npx dittofsctl /, line);
      const args = line
        .replace(/^npx dittofsctl /, '')
        .replace('http://localhost:8080', `http://127.0.0.1:${apiPort}`)
        .split(/\s+/);
      const key = args[0] === 'user' ? `${args[0]} ${args[1]}` : args[0]!;
      const r = await ctl(args, stdinFor[key] ?? '', { XDG_CONFIG_HOME: home });
      assert.equal(r.code, 0, `${line}\n${r.stdout}${r.stderr}`);
      if (args[0] === 'adapter') assert.match(r.stdout, /\nnfs\s+true\s+(\d+)\s+yes, port \1\s+<none>\n/);
    }
    assert.deepEqual(await login('readme-admin-password'), { status: 200, mustChange: false });
    const stopped = await dittofs(['stop']);
    assert.equal(stopped.code, 0, stopped.stderr);
  });

  it('the log file of both servers: one shutdown line per stop, no duplicated keys, failed logins at info', async () => {
    const lines = (await readFile(path.join(dir, 'data', 'dittofs.log'), 'utf8')).split('\n').filter((l) => l.startsWith('{'));
    const msgs = lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
    // Two servers, each stopped once with SIGTERM (dittofs stop).
    assert.equal(msgs.filter((m) => m === 'shutting down').length, 2, msgs.join('\n'));
    assert.equal(msgs.filter((m) => m === 'shutdown complete').length, 2);
    assert.equal(msgs.filter((m) => m.startsWith('start-up: listeners up, dittofs ready in ')).length, 2);
    // JSON.parse keeps the last of a duplicated key: look at the text.
    assert.equal(lines.filter((l) => /"component":"api".*"component":"api"/.test(l)).length, 0);
    assert.ok(lines.some((l) => l.includes('"component":"api"')));
    assert.ok(msgs.includes('login failed'), 'the refused old password is logged at info');
    // With the client's address, for whoever watches for password guessing.
    for (const l of lines.filter((x) => /"msg":"login( failed)?"/.test(x)))
      assert.equal((JSON.parse(l) as { client?: string }).client, '127.0.0.1', l);
    assert.ok(msgs.some((m) => m.startsWith('SMB: ')) === false, 'SMB disabled here: no warning');
  });
});

/** Every regular file under `dir` holding `secret` (as bytes: database pages and WAL segments too). */
async function filesHolding(dir: string, secret: string): Promise<string[]> {
  const needle = Buffer.from(secret);
  const found: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    const file = path.join(e.parentPath, e.name);
    if ((await readFile(file)).includes(needle)) found.push(path.relative(dir, file));
  }
  return found;
}

describe('first start in the background: the password reaches the caller, never a file', { timeout: 1_200_000 }, () => {
  let dir: string;
  let env: Record<string, string>;
  let apiPort: number;

  function dittofs(args: string[]): Promise<Run> {
    return runCli('dittofs', args, { env: { ...envWithoutDittofs(), ...env }, timeoutMs: 2 * START_MS });
  }

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-first-start-bg-'));
    apiPort = await freePort();
    env = await cliServerEnv(path.join(dir, 'data'), apiPort);
  });
  after(async () => {
    await dittofs(['stop', '--force']);
    await rm(dir, { recursive: true, force: true });
  });

  it('start -d prints the generated password, which works; the log file, dittofs logs and the data directory lack it', async () => {
    const r = await dittofs(['start', '-d', '--timeout', String(START_MS / 1000)]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /^dittofs started in the background \(pid \d+\), ready\n/);
    const m = /^dittofs: created user "admin" with password (\S+)$/m.exec(r.stdout);
    assert.ok(m, `no password shown:\n${r.stdout}\n${r.stderr}`);
    const password = m[1]!;
    assert.match(r.stdout, /^dittofs: log in \(dittofsctl login\) and change it; it is not shown again/m);
    assert.equal((await adminLogin(`http://127.0.0.1:${apiPort}`, password)).status, 200);

    const log = await readFile(path.join(dir, 'data', 'dittofs.log'), 'utf8');
    assert.match(log, /"msg":"first start: admin user created"/, 'the log file of this server');
    assert.equal(log.includes(password), false, 'the password is in the log file');
    assert.doesNotMatch(log, /created user/);
    const logs = await dittofs(['logs', '-n', '100000']);
    assert.equal(logs.code, 0, logs.stderr);
    assert.match(logs.stdout, /"msg":"start-up: listeners up, dittofs ready in /);
    assert.equal(logs.stdout.includes(password), false, 'dittofs logs shows the password');
    assert.deepEqual(await filesHolding(dir, password), []);

    const stop = await dittofs(['stop', '--timeout', String(STOP_TIMEOUT_MS / 1000)]);
    assert.equal(stop.code, 0, stop.stderr);
    assert.deepEqual(await filesHolding(dir, password), [], 'after the stop (databases closed, WAL flushed)');
  });
});

describe('a background server whose caller is gone before it can show the password', { timeout: 1_200_000 }, () => {
  let dir: string;
  let env: Record<string, string>;
  let apiPort: number;
  let child: ChildProcess | undefined;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-first-start-gone-'));
    apiPort = await freePort();
    env = await cliServerEnv(path.join(dir, 'data'), apiPort);
  });
  after(async () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps running, logs that nobody saw the password and how to set one, and writes it nowhere', async () => {
    // What `start -d` runs, its pipe closed at once (as when it times out or is interrupted).
    child = spawn(process.execPath, [DITTOFS_CLI, 'start', '--foreground', '--admin-password-fd', '3'], {
      cwd: REPO_ROOT,
      env: { ...envWithoutDittofs(), ...env },
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (out += d));
    (child.stdio[3] as NodeJS.ReadableStream & { destroy(): void }).destroy();
    await waitForPort(apiPort, START_MS, child);
    const deadline = Date.now() + START_MS;
    while (!/could not be shown/.test(out) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.match(out, /"msg":"the generated admin password could not be shown: .*dittofs admin reset-password/);
    assert.doesNotMatch(out, /with password/);
    const log = await readFile(path.join(dir, 'data', 'dittofs.log'), 'utf8');
    assert.match(log, /could not be shown/);
    assert.doesNotMatch(log, /with password/);
    child.kill('SIGTERM');
    await new Promise((resolve) => child!.once('exit', resolve));
  });

  it('refuses a password descriptor that is not a pipe, before opening any database', async () => {
    const file = path.join(dir, 'not-a-pipe');
    const fd = openSync(file, 'w');
    const other = { ...env, DITTOFS_DATA_DIR: path.join(dir, 'data2') };
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const c = spawn(process.execPath, [DITTOFS_CLI, 'start', '--admin-password-fd', '3'], {
        cwd: REPO_ROOT,
        env: { ...envWithoutDittofs(), ...other },
        stdio: ['ignore', 'ignore', 'pipe', fd],
      });
      let stderr = '';
      c.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      c.once('close', (code) => resolve({ code, stderr }));
    });
    closeSync(fd);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^dittofs: --admin-password-fd 3: file descriptor 3 is not a pipe/m);
    assert.equal(existsSync(path.join(dir, 'data2', 'control')), false);
    assert.equal(await readFile(file, 'utf8'), '');
  });
});
