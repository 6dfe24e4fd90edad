// The control plane as a user meets it: a real server process, dittofsctl as a subprocess, and a
// real NFS client (libnfs nfs-cp / nfs-ls with AUTH_SYS uids). A user and a share made with
// dittofsctl are usable by nfs-cp at once; a permission change holds from the next request; a
// removed share stops being served; PUT /api/v1/state converges and is idempotent; all of it
// survives a restart (the control database, not the config file, holds it).
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli } from '../helpers/cli.js';
import { until } from '../helpers/hostile.js';
import { REPLY_TIMEOUT_MS, SUITE_TIMEOUT_MS } from '../helpers/limits.js';
import { runProcess, type Run } from '../helpers/run.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';

const NEW_ADMIN_PASSWORD = 'admin-pass-after-change';

/** Runs a client tool (nfs-cp, nfs-ls) to its end; a hang is killed after COMMAND_TIMEOUT_MS and fails. */
const tool = (cmd: string, args: string[]): Promise<Run> => runProcess(cmd, args);

describe('control plane end to end: dittofsctl, REST, NFS', { timeout: SUITE_TIMEOUT_MS }, () => {
  let dir: string;
  let dataDir: string;
  let srv: DittofsProcess;
  let api: string;
  let ctlConfig: string;

  function ctl(args: string[], stdin = ''): Promise<Run> {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DITTOFSCTL_')));
    return runCli('dittofsctl', args, { env: { ...env, DITTOFSCTL_CONFIG: ctlConfig }, input: stdin });
  }

  async function ok(args: string[], stdin = ''): Promise<string> {
    const r = await ctl(args, stdin);
    assert.equal(r.code, 0, `dittofsctl ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  }

  const url = (share: string, file: string, uid: number): string =>
    `nfs://127.0.0.1${share}/${file}?nfsport=${srv.nfsPort}&mountport=${srv.nfsPort}&uid=${uid}&gid=${uid}`;

  async function put(share: string, file: string, uid: number, content: string): Promise<Run> {
    const src = path.join(dir, `src-${Math.random().toString(36).slice(2)}`);
    await writeFile(src, content);
    return tool('nfs-cp', [src, url(share, file, uid)]);
  }

  async function get(share: string, file: string, uid: number): Promise<{ run: Run; content: string | null }> {
    const out = path.join(dir, `out-${Math.random().toString(36).slice(2)}`);
    const run = await tool('nfs-cp', [url(share, file, uid), out]);
    return { run, content: run.code === 0 ? await readFile(out, 'utf8') : null };
  }

  async function token(): Promise<string> {
    const r = await fetch(`${api}/api/v1/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'admin', password: NEW_ADMIN_PASSWORD }),
    });
    assert.equal(r.status, 200);
    return ((await r.json()) as { access_token: string }).access_token;
  }

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-cp-'));
    dataDir = path.join(dir, 'data');
    ctlConfig = path.join(dir, 'ctl.json');
    // No DITTOFS_ADMIN_INITIAL_PASSWORD: the first start prints a generated one, once.
    // At info: refused mounts are logged there (checked below).
    srv = await startDittofs({ dataDir, env: { DITTOFS_ADMIN_INITIAL_PASSWORD: '', DITTOFS_LOG_LEVEL: 'info' } });
    api = `http://127.0.0.1:${srv.apiPort}`;
  });

  after(async () => {
    await srv?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('first start: a generated admin password, printed once, that must be changed', async () => {
    const m = /created user "admin" with password (\S+)/.exec(srv.output());
    assert.ok(m, `no generated password in the output:\n${srv.output()}`);
    const generated = m[1]!;
    assert.equal(srv.output().split(generated).length - 1, 1, 'the password appears exactly once (not in any log line)');
    await ok(['login', '--server', api, '--username', 'admin'], `${generated}\n`);
    const gated = await ctl(['user', 'list']);
    assert.equal(gated.code, 1);
    assert.match(gated.stderr, /password must be changed/);
    await ok(['password'], `${generated}\n${NEW_ADMIN_PASSWORD}\n`);
    assert.match(await ok(['user', 'list']), /admin/);
  });

  it('a user and a share made with dittofsctl are used by nfs-cp at once; others are refused', async () => {
    await ok(['user', 'create', '--username', 'alice', '--password', 'alice-password', '--uid', '1000', '--gid', '1000']);
    await ok(['share', 'create', '--name', '/team', '--metadata', 'default', '--blocks', 'default', '--default-permission', 'none']);
    await ok(['share', 'permission', 'grant', '/team', '--user', 'alice', '--level', 'read-write']);
    const w = await put('/team', 'plan.txt', 1000, 'the plan\n');
    assert.equal(w.code, 0, w.stderr);
    const r = await get('/team', 'plan.txt', 1000);
    assert.equal(r.content, 'the plan\n');
    // An unknown uid gets the share default, none: refused at mount.
    const stranger = await put('/team', 'x.txt', 2000, 'nope');
    assert.notEqual(stranger.code, 0);
    assert.match(stranger.stderr, /MNT3ERR_ACCES|Permission denied/);
    // The admin can find out why in the log, at the default level. The server's log reaches its
    // stdout a moment after the reply (a busy machine once read it before it came): wait for it.
    const refusedLines = () =>
      srv
        .output()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { level: string; msg: string; path?: string; uid?: number })
        .filter((l) => l.msg === 'mount refused: no permission on the share');
    await until(() => refusedLines().length > 0, REPLY_TIMEOUT_MS, 'the "mount refused" log line');
    const refused = refusedLines();
    assert.deepEqual(
      refused.map((l) => [l.level, l.path, l.uid]),
      [['info', '/team', 2000]],
    );
  });

  it('a permission change holds from the next request', async () => {
    await ok(['share', 'permission', 'grant', '/team', '--user', 'alice', '--level', 'read']);
    const w = await put('/team', 'more.txt', 1000, 'more');
    assert.notEqual(w.code, 0, 'read permission: writes refused');
    assert.match(w.stderr, /ACCES|denied/i);
    assert.equal((await get('/team', 'plan.txt', 1000)).content, 'the plan\n', 'read permission: reads work');
    await ok(['share', 'permission', 'revoke', '/team', '--user', 'alice']);
    const g = await get('/team', 'plan.txt', 1000);
    assert.notEqual(g.run.code, 0, 'back to the default (none): refused');
    // A group grant: alice joins "staff", which gets read-write.
    await ok(['group', 'create', '--name', 'staff', '--gid', '3000']);
    await ok(['group', 'add-user', 'staff', 'alice']);
    await ok(['share', 'permission', 'grant', '/team', '--group', 'staff', '--level', 'read-write']);
    assert.equal((await put('/team', 'by-group.txt', 1000, 'group')).code, 0);
  });

  it('a removed share stops being served; a store in use cannot be removed', async () => {
    await ok(['store', 'block', 'add', '--name', 'scratch', '--type', 'memory']);
    await ok(['store', 'metadata', 'add', '--name', 'scratch-meta', '--type', 'memory']);
    await ok(['share', 'create', '--name', '/tmpshare', '--metadata', 'scratch-meta', '--blocks', 'scratch']);
    assert.equal((await put('/tmpshare', 'f', 0, 'x')).code, 0);
    const refused = await ctl(['store', 'block', 'remove', 'scratch']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /tmpshare/);
    await ok(['share', 'delete', '/tmpshare']);
    const gone = await put('/tmpshare', 'g', 0, 'y');
    assert.notEqual(gone.code, 0);
    assert.match(gone.stderr, /MNT3ERR_NOENT|No such file/);
    await ok(['store', 'block', 'remove', 'scratch']);
  });

  it('PUT /api/v1/state converges, a second identical PUT changes nothing, and the share serves', async () => {
    const t = await token();
    const headers = { authorization: `Bearer ${t}`, 'content-type': 'application/json' };
    const desired = {
      metadata_stores: [{ name: 'default', type: 'embedded', config: {} }],
      block_stores: [{ name: 'default', type: 'filesystem', config: {} }],
      users: [{ username: 'bob', password: 'bob-password-1', uid: 1500, gid: 1500 }],
      groups: [],
      shares: [
        { name: '/export', metadata_store: 'default', block_store: 'default' },
        {
          name: '/ops',
          metadata_store: 'default',
          block_store: 'default',
          default_permission: 'none',
          permissions: [{ user: 'bob', level: 'read-write' }],
        },
      ],
    };
    const first = await fetch(`${api}/api/v1/state`, { method: 'PUT', headers, body: JSON.stringify(desired) });
    const a = (await first.json()) as { generation: number; created: unknown[]; updated: unknown[]; removed: unknown[] };
    assert.equal(first.status, 200, JSON.stringify(a));
    assert.ok(a.created.length > 0);
    assert.ok(a.removed.length > 0, 'alice, staff and /team are not in the desired set: removed');
    assert.equal((await put('/ops', 'o.txt', 1500, 'ops')).code, 0, 'the new share serves bob at once');
    assert.notEqual((await put('/team', 'x', 1000, 'x')).code, 0, 'the removed share is gone');
    const second = await fetch(`${api}/api/v1/state`, { method: 'PUT', headers, body: JSON.stringify(desired) });
    const b = (await second.json()) as typeof a;
    assert.equal(second.status, 200);
    assert.deepEqual([b.created, b.updated, b.removed], [[], [], []]);
    assert.equal(b.generation, a.generation, 'nothing changed: same generation');
  });

  it('everything survives a restart: shares, users and permissions come from the control database', async () => {
    await srv.stop();
    srv = await startDittofs({ dataDir });
    api = `http://127.0.0.1:${srv.apiPort}`;
    assert.equal((await get('/ops', 'o.txt', 1500)).content, 'ops');
    assert.notEqual((await get('/ops', 'o.txt', 2000)).run.code, 0, 'default none still holds');
    const ready = await fetch(`${api}/health/ready`);
    assert.equal(ready.status, 200);
    const body = (await ready.json()) as { ready: boolean; checks: Record<string, { ok: boolean }> };
    assert.equal(body.ready, true);
    assert.ok(body.checks['metadata:default']?.ok && body.checks['blocks:default']?.ok, JSON.stringify(body));
    assert.doesNotMatch(srv.output(), /created user "admin"/, 'no second admin bootstrap');
  });
});
