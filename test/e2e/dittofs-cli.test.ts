// The `dittofs` lifecycle commands as an operator runs them, each a separate process of the built
// CLI: start --background, status, logs, a refused second start, a backup while it runs, stop; a
// control-plane backup after the stop, restored into a fresh data directory, served by a new server that has the same users
// (the admin's changed password included), groups and shares; stop --force.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { adminLogin, apiRequest, type AdminLogin, type ApiReply } from '../helpers/api.js';
import { cliServerEnv, envWithoutDittofs, runCli } from '../helpers/cli.js';
import { READY_TIMEOUT_MS, STOP_TIMEOUT_MS, SUITE_TIMEOUT_MS } from '../helpers/limits.js';
import type { Run } from '../helpers/run.js';
import { TEST_ADMIN_PASSWORD, freePort } from '../helpers/server.js';

const NEW_ADMIN_PASSWORD = 'admin-password-after-change';

// A slow machine makes the first start (a new embedded database) and a graceful stop slow: wait
// minutes, not the CLI's defaults (60 s, 30 s); the commands still return the moment they are done.
const READY = ['--timeout', String(READY_TIMEOUT_MS / 1000)];
const STOP = ['--timeout', String(STOP_TIMEOUT_MS / 1000)];

describe('dittofs start --background, status, logs, stop, backup and restore', { timeout: SUITE_TIMEOUT_MS }, () => {
  let dir: string;
  let env: Record<string, string>;
  let api: string;
  /** GET /api/v1/state of the first server, before the backup. */
  let stateBefore: unknown;

  /** Runs `dittofs ARGS` (the built CLI) with the test's environment, DITTOFS_* from outside removed. */
  function dittofs(args: string[], extra: Record<string, string> = {}): Promise<Run> {
    // Longer than the CLI's own --timeout, so that the CLI reports a slow start, not this bound.
    return runCli('dittofs', args, { env: { ...envWithoutDittofs(), ...env, ...extra }, timeoutMs: 2 * READY_TIMEOUT_MS });
  }

  const request = <T>(method: string, url: string, body?: unknown, token?: string): Promise<ApiReply<T>> =>
    apiRequest<T>(api, method, url, body, token);
  const login = (password: string): Promise<AdminLogin> => adminLogin(api, password);

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-cli-e2e-'));
    const apiPort = await freePort();
    api = `http://127.0.0.1:${apiPort}`;
    env = { ...(await cliServerEnv(path.join(dir, 'data'), apiPort)), DITTOFS_ADMIN_INITIAL_PASSWORD: TEST_ADMIN_PASSWORD };
  });
  after(async () => {
    // Whatever a failed step left running.
    for (const data of ['data', 'data2']) await dittofs(['stop', '--force'], { DITTOFS_DATA_DIR: path.join(dir, data) });
    await rm(dir, { recursive: true, force: true });
  });

  let pid: number;

  it('start --background returns once the server is ready, with where it runs and logs', async () => {
    const r = await dittofs(['start', '--background', ...READY]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    const m = /^dittofs started in the background \(pid (\d+)\), ready\n/.exec(r.stdout);
    assert.ok(m, r.stdout);
    pid = Number(m[1]);
    assert.match(r.stdout, new RegExp(`log file {2}${path.join(dir, 'data', 'dittofs.log')}`));
    assert.equal(await readFile(path.join(dir, 'data', 'dittofs.pid'), 'utf8'), `${pid}\n`);
    // Ready means ready: the API answers at once.
    assert.equal((await request('GET', '/health/ready')).status, 200);
  });

  it('status: running and ready, exit 0, with the readiness checks', async () => {
    const r = await dittofs(['status']);
    assert.equal(r.code, 0, r.stderr);
    // The uptime is minutes on a slow machine (start-up alone can take one): "up 42s", "up 1m 10s".
    assert.match(r.stdout, new RegExp(`^dittofs is running \\(pid ${pid}, up (\\d+m )?\\d+s\\), ready\\n`));
    assert.match(r.stdout, /checks {4}wal ok, nfs ok, /);
    const j = await dittofs(['status', '-o', 'json']);
    assert.equal(j.code, 0);
    const s = JSON.parse(j.stdout) as { running: boolean; pid: number; ready: boolean; checks: Record<string, { ok: boolean }> };
    assert.deepEqual([s.running, s.pid, s.ready, s.checks.wal?.ok, s.checks.nfs?.ok], [true, pid, true, true, true]);
  });

  it('logs -n 5: the last five lines of the log file, JSON from the server', async () => {
    const r = await dittofs(['logs', '-n', '5']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 5, r.stdout);
    for (const l of lines) {
      const o = JSON.parse(l) as { level: string; time: string; pid: number; msg: string };
      assert.equal(o.pid, pid);
      assert.ok(typeof o.msg === 'string' && !Number.isNaN(Date.parse(o.time)), l);
    }
  });

  it('a second start on the same pid file is refused while it runs; a backup of its embedded database works', async () => {
    const again = await dittofs(['start', '--background']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, new RegExp(`^dittofs: already running \\(pid ${pid}; pid file `));
    // The running server holds the embedded database: it is asked for the backup (local socket).
    const file = path.join(dir, 'while-running.json');
    const backup = await dittofs(['backup', 'controlplane', '--output', file]);
    assert.equal(backup.code, 0, backup.stderr);
    assert.match(backup.stdout, /^backed up the control plane \(1 user, .*1 share, /);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const doc = JSON.parse(await readFile(file, 'utf8')) as { format: string; users: { username: string }[] };
    assert.equal(doc.format, 'dittofs-controlplane-backup');
    assert.deepEqual(
      doc.users.map((u) => u.username),
      ['admin'],
    );
    const logs = await dittofs(['logs', '-n', '50']);
    assert.match(logs.stdout, /"msg":"control plane backed up through the local socket"/);
  });

  it('the state to back up: the admin password changed, a user and a group added', async () => {
    const first = await login(TEST_ADMIN_PASSWORD);
    assert.equal(first.status, 200);
    assert.equal(first.mustChange, true);
    const changed = await request(
      'POST',
      '/api/v1/users/me/password',
      { current_password: TEST_ADMIN_PASSWORD, new_password: NEW_ADMIN_PASSWORD },
      first.token,
    );
    assert.equal(changed.status, 204, JSON.stringify(changed.body));
    const { token } = await login(NEW_ADMIN_PASSWORD);
    assert.equal((await request('POST', '/api/v1/groups', { name: 'editors', gid: 3000 }, token)).status, 201);
    const alice = await request(
      'POST',
      '/api/v1/users',
      { username: 'alice', uid: 1500, password: 'alice-password-1', groups: ['editors'] },
      token,
    );
    assert.equal(alice.status, 201, JSON.stringify(alice.body));
    const state = await request<{ users: { username: string }[] }>('GET', '/api/v1/state', undefined, token);
    assert.equal(state.status, 200);
    assert.deepEqual(
      state.body.users.map((u) => u.username),
      ['admin', 'alice'],
    );
    stateBefore = state.body;
  });

  it('stop: graceful, the pid file gone; status then says not running, exit 3', async () => {
    const r = await dittofs(['stop', ...STOP]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^dittofs stopped \\(pid ${pid}, `));
    await assert.rejects(stat(path.join(dir, 'data', 'dittofs.pid')), { code: 'ENOENT' });
    const s = await dittofs(['status']);
    assert.equal(s.code, 3);
    assert.match(s.stdout, /^dittofs is not running \(no pid file at /);
  });

  it('backup after the stop; restore into a fresh data directory; the new server has the same state', async () => {
    const file = path.join(dir, 'control.json');
    const b = await dittofs(['backup', 'controlplane', '--output', file]);
    assert.equal(b.code, 0, b.stderr);
    assert.match(b.stdout, /^backed up the control plane \(2 users, 1 group, 1 metadata store, 1 block store, 1 share, /);
    assert.equal((await stat(file)).mode & 0o777, 0o600);

    const fresh = { DITTOFS_DATA_DIR: path.join(dir, 'data2') };
    const restore = await dittofs(['restore', 'controlplane', '--input', file], fresh);
    assert.equal(restore.code, 0, restore.stderr);
    assert.match(restore.stdout, /^restored the control plane from .*control\.json \(2 users, 1 group, /);
    const twice = await dittofs(['restore', 'controlplane', '--input', file], fresh);
    assert.equal(twice.code, 1);
    assert.match(twice.stderr, /the control database is not empty \(2 users, .*use --force/);

    const started = await dittofs(['start', '-d', ...READY], fresh);
    assert.equal(started.code, 0, `${started.stdout}\n${started.stderr}`);
    pid = Number(/\(pid (\d+)\)/.exec(started.stdout)?.[1]);
    // The old password is refused, the changed one works and needs no change: the hashes came back.
    assert.equal((await login(TEST_ADMIN_PASSWORD)).status, 401);
    const admin = await login(NEW_ADMIN_PASSWORD);
    assert.equal(admin.status, 200);
    assert.equal(admin.mustChange, false);
    const state = await request('GET', '/api/v1/state', undefined, admin.token);
    assert.deepEqual(state.body, stateBefore);
    const alice = await request<{ groups: string[]; uid: number }>('GET', '/api/v1/users/alice', undefined, admin.token);
    assert.deepEqual([alice.body.uid, alice.body.groups], [1500, ['editors']]);
  });

  it('stop --force: SIGKILL at once, the stale pid file removed', async () => {
    const fresh = { DITTOFS_DATA_DIR: path.join(dir, 'data2') };
    const r = await dittofs(['stop', '--force'], fresh);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^dittofs killed \\(pid ${pid}, SIGKILL\\)`));
    await assert.rejects(stat(path.join(dir, 'data2', 'dittofs.pid')), { code: 'ENOENT' });
    const s = await dittofs(['status'], fresh);
    assert.equal(s.code, 3, s.stdout);
  });
});
