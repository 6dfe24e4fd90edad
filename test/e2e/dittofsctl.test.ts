// dittofsctl as its users run it: a subprocess (the built CLI)
// against the real control API (Fastify, JWT, bcrypt, a SQLite control store) listening on
// loopback in this process. The contexts file is a temporary one (DITTOFSCTL_CONFIG).
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import YAML from 'yaml';
import { buildApi } from '../../server/src/api/index.js';
import type { ApiRuntime } from '../../server/src/api/runtime.js';
import { ensureAdmin } from '../../server/src/control/auth.js';
import type { ControlStore } from '../../server/src/control/store.js';
import { openTestControlStore } from '../../server/src/control/testing.js';
import { runCli } from '../helpers/cli.js';
import { SUITE_TIMEOUT_MS } from '../helpers/limits.js';
import type { Run } from '../helpers/run.js';
import { freePort } from '../helpers/server.js';

const JWT_SECRET = 'dittofsctl-e2e-secret-0123456789abcdef-0123456789';
const INITIAL_PASSWORD = 'initial-admin-pw';
const ADMIN_PASSWORD = 'changed-admin-pw';
const ALICE_PASSWORD = 'alice-password-1';
/** A short access token lifetime for the second API instance, to see the refresh happen. */
const SHORT_ACCESS_TTL_SECONDS = 1;

type Api = ReturnType<typeof buildApi>;

interface Contexts {
  current_context?: string;
  contexts: Record<string, { server: string; username?: string; access_token?: string; refresh_token?: string }>;
}

describe('dittofsctl against the control API', { timeout: SUITE_TIMEOUT_MS }, () => {
  let dir: string;
  let config: string;
  let store: ControlStore;
  let api: Api;
  let shortApi: Api;
  let server: string;
  let shortServer: string;
  const logLevels: string[] = [];

  /** Runs `dittofsctl ARGS` with `stdin` as its standard input (a pipe, not a terminal). */
  function ctl(args: string[], opts: { stdin?: string; env?: Record<string, string> } = {}): Promise<Run> {
    const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DITTOFSCTL_')));
    return runCli('dittofsctl', args, { env: { ...env, DITTOFSCTL_CONFIG: config, ...opts.env }, input: opts.stdin ?? '' });
  }

  /** Runs a command that must succeed and parses its -o json output. */
  async function json<T>(args: string[]): Promise<T> {
    const r = await ctl([...args, '-o', 'json']);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  }

  async function ok(args: string[], stdin?: string): Promise<Run> {
    const r = await ctl(args, stdin === undefined ? {} : { stdin });
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    return r;
  }

  async function contexts(): Promise<Contexts> {
    return JSON.parse(await readFile(config, 'utf8')) as Contexts;
  }

  function assertNoSecrets(r: Run, ...secrets: string[]): void {
    for (const s of secrets) {
      assert.ok(!r.stdout.includes(s), 'a secret on stdout');
      assert.ok(!r.stderr.includes(s), 'a secret on stderr');
    }
  }

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofsctl-e2e-'));
    config = path.join(dir, 'ctl', 'config.json');
    store = await openTestControlStore();
    const created = await ensureAdmin(store, { initialPassword: INITIAL_PASSWORD });
    assert.ok(created.created);
    const runtime: ApiRuntime = {
      ready: () => ({ ready: true, checks: {} }),
      checkStore: async () => undefined,
      setLogLevel: (level) => void logLevels.push(level),
    };
    const logger = pino({ level: 'silent' });
    const rateLimit = { max: 100_000, loginMax: 1000, loginAddressMax: 100_000 };
    api = buildApi({ store, auth: { jwtSecret: JWT_SECRET }, runtime, logger, rateLimit });
    // The same control store and secret: tokens of one instance are good at the other.
    shortApi = buildApi({ store, auth: { jwtSecret: JWT_SECRET, accessTtlSeconds: SHORT_ACCESS_TTL_SECONDS }, runtime, logger, rateLimit });
    await api.listen({ host: '127.0.0.1', port: 0 });
    await shortApi.listen({ host: '127.0.0.1', port: 0 });
    server = `http://127.0.0.1:${(api.server.address() as AddressInfo).port}`;
    shortServer = `http://127.0.0.1:${(shortApi.server.address() as AddressInfo).port}`;
  });

  after(async () => {
    await api?.close();
    await shortApi?.close();
    await store?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('login with the password on stdin; the must-change-password flow through "dittofsctl password"', async () => {
    let r = await ctl(['login', '--server', server, '--username', 'admin'], { stdin: `${INITIAL_PASSWORD}\n` });
    assert.equal(r.code, 0, r.stderr);
    const name = `127.0.0.1:${new URL(server).port}`;
    assert.equal(r.stdout, `logged in to ${server} as admin (context "${name}")\n`);
    assert.match(r.stderr, /must be changed before anything else; run: dittofsctl password/);
    const saved = await contexts();
    assert.equal(saved.current_context, name);
    assert.equal(saved.contexts[name]?.server, server);
    const { access_token, refresh_token } = saved.contexts[name] ?? {};
    assert.ok(access_token !== undefined && refresh_token !== undefined);
    assertNoSecrets(r, INITIAL_PASSWORD, access_token, refresh_token);
    assert.equal((await stat(config)).mode & 0o777, 0o600);

    // Everything but the password change is refused until then.
    r = await ctl(['user', 'list']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^dittofsctl: password must be changed.* \(HTTP 403\)\nchange your password with: dittofsctl password\n$/);

    // A wrong current password: refused, nothing changes.
    r = await ctl(['password'], { stdin: `not-the-password\n${ADMIN_PASSWORD}\n` });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /the current password is wrong \(HTTP 403\)/);

    r = await ctl(['password'], { stdin: `${INITIAL_PASSWORD}\n${ADMIN_PASSWORD}\n` });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `password changed; logged in again as admin (context "${name}")\n`);
    assertNoSecrets(r, INITIAL_PASSWORD, ADMIN_PASSWORD);

    const me = await json<{ username: string; role: string; must_change_password: boolean }>(['whoami']);
    assert.deepEqual([me.username, me.role, me.must_change_password], ['admin', 'admin', false]);
    const users = await json<{ username: string }[]>(['user', 'list']);
    assert.deepEqual(
      users.map((u) => u.username),
      ['admin'],
    );

    // The old password no longer logs in.
    r = await ctl(['login', '--username', 'admin'], { stdin: `${INITIAL_PASSWORD}\n` });
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'dittofsctl: invalid username or password (HTTP 401)\n');
  });

  it('users: create (password on stdin), list, get, update, yaml, delete', async () => {
    let r = await ok(['user', 'create', '--username', 'alice', '--uid', '1001', '--email', 'alice@example.com'], `${ALICE_PASSWORD}\n`);
    assert.equal(r.stdout, 'user "alice" created (uid 1001, gid 1001)\n');
    assertNoSecrets(r, ALICE_PASSWORD);
    await ok(['user', 'create', 'nfsonly', '--uid', '2000', '--gid', '100', '--no-password']);

    const alice = await json<{
      username: string;
      uid: number;
      gid: number;
      email: string;
      role: string;
      must_change_password: boolean;
      groups: string[];
    }>(['user', 'get', 'alice']);
    assert.deepEqual(
      { ...alice, created_at: undefined, updated_at: undefined },
      {
        username: 'alice',
        uid: 1001,
        gid: 1001,
        groups: [],
        email: 'alice@example.com',
        role: 'user',
        must_change_password: true,
        created_at: undefined,
        updated_at: undefined,
      },
    );

    r = await ok(['user', 'list']);
    const lines = r.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^USERNAME\s+UID\s+GID\s+ROLE\s+GROUPS\s+EMAIL\s+MUST-CHANGE-PASSWORD$/);
    assert.ok(
      lines.some((l) => /^alice\s+1001\s+1001\s+user\s+<none>\s+alice@example\.com\s+true$/.test(l)),
      r.stdout,
    );
    assert.ok(
      lines.some((l) => /^nfsonly\s+2000\s+100\s+user\s+<none>\s+<none>\s+false$/.test(l)),
      r.stdout,
    );

    r = await ok(['user', 'list', '-o', 'yaml']);
    const fromYaml = YAML.parse(r.stdout) as { username: string }[];
    assert.deepEqual(fromYaml, await json(['user', 'list']));
    assert.deepEqual(fromYaml.map((u) => u.username).sort(), ['admin', 'alice', 'nfsonly']);

    await ok(['user', 'update', 'alice', '--email', 'a@example.org', '--no-must-change-password']);
    const updated = await json<{ email: string; must_change_password: boolean }>(['user', 'get', 'alice']);
    assert.deepEqual([updated.email, updated.must_change_password], ['a@example.org', false]);

    // Alice can log in (in her own context) with the password given on stdin.
    r = await ctl(['login', '--server', server, '--username', 'alice', '--context', 'alice'], { stdin: `${ALICE_PASSWORD}\n` });
    assert.equal(r.code, 0, r.stderr);
    // A user (role user) may not list users: 403, and the message says why.
    r = await ctl(['--context', 'alice', 'user', 'list']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^dittofsctl: this needs role operator or admin \(HTTP 403\)\n$/);
    await ok(['context', 'use', `127.0.0.1:${new URL(server).port}`]);

    r = await ctl(['user', 'create', '--username', 'alice', '--no-password']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /already exists.* \(HTTP 409\)/);
    r = await ctl(['user', 'get', 'nobody']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /\(HTTP 404\)\n$/);

    await ok(['user', 'delete', 'nfsonly']);
    assert.deepEqual((await json<{ username: string }[]>(['user', 'list'])).map((u) => u.username).sort(), ['admin', 'alice']);
  });

  it('groups: create, add-user, get, remove-user, delete', async () => {
    let r = await ok(['group', 'create', '--name', 'editors', '--gid', '3000']);
    assert.equal(r.stdout, 'group "editors" created (gid 3000)\n');
    await ok(['group', 'add-user', 'editors', 'alice']);
    assert.deepEqual(await json(['group', 'get', 'editors']), { name: 'editors', gid: 3000, members: ['alice'] });
    assert.deepEqual((await json<{ groups: string[] }>(['user', 'get', 'alice'])).groups, ['editors']);
    r = await ok(['group', 'list']);
    assert.match(r.stdout, /^NAME\s+GID\s+MEMBERS\neditors\s+3000\s+alice\n$/);
    await ok(['group', 'remove-user', 'editors', 'alice']);
    assert.deepEqual((await json<{ members: string[] }>(['group', 'get', 'editors'])).members, []);
    await ok(['group', 'create', 'viewers']);
    await ok(['group', 'delete', 'viewers']);
    assert.deepEqual(
      (await json<{ name: string }[]>(['group', 'list'])).map((g) => g.name),
      ['editors'],
    );
  });

  it('stores and shares: add, list, get, share create/update, permissions, 409 for a store in use, removal', async () => {
    let r = await ok(['store', 'metadata', 'add', '--name', 'meta1', '--type', 'memory']);
    assert.equal(r.stdout, 'metadata store "meta1" added (memory)\n');
    // `store payload` is the original name of block stores.
    await ok(['store', 'payload', 'add', '--name', 'blk1', '--type', 'memory', '--config', '{"block_size": 1048576}']);
    assert.deepEqual(await json(['store', 'block', 'get', 'blk1']), { name: 'blk1', type: 'memory', config: { block_size: 1048576 } });
    assert.deepEqual(
      (await json<{ name: string }[]>(['store', 'metadata', 'list'])).map((s) => s.name),
      ['meta1'],
    );
    r = await ok(['store', 'block', 'get', 'blk1', '-o', 'yaml']);
    assert.deepEqual(YAML.parse(r.stdout), { name: 'blk1', type: 'memory', config: { block_size: 1048576 } });
    r = await ok(['store', 'block', 'list']);
    assert.match(r.stdout, /^NAME\s+TYPE\s+CONFIG\nblk1\s+memory\s+\{"block_size":1048576\}\n$/);

    // The server validates the config of the type: an unknown key is a 400 naming it.
    r = await ctl(['store', 'metadata', 'add', '--name', 'bad', '--type', 'memory', '--config', '{"path": "/x"}']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /config.*"path".*\(HTTP 400\)/);

    r = await ok([
      'share',
      'create',
      '--name',
      '/archive',
      '--metadata',
      'meta1',
      '--payload',
      'blk1',
      '--read-only',
      '--default-permission',
      'read',
    ]);
    assert.equal(r.stdout, 'share "/archive" created\n');
    const share = await json<{ name: string; metadata_store: string; block_store: string; read_only: boolean; default_permission: string }>(
      ['share', 'get', '/archive'],
    );
    assert.deepEqual(
      [share.name, share.metadata_store, share.block_store, share.read_only, share.default_permission],
      ['/archive', 'meta1', 'blk1', true, 'read'],
    );
    await ok(['share', 'update', 'archive', '--read-write', '--root-mode', '0750']);
    // JSON and YAML show the mode in octal, as the table and the config file do.
    const changed = await json<{ read_only: boolean; root_mode: string }>(['share', 'get', 'archive']);
    assert.deepEqual([changed.read_only, changed.root_mode], [false, '0750']);
    assert.match((await ok(['share', 'get', 'archive', '-o', 'yaml'])).stdout, /^root_mode: "0750"$/m);
    r = await ok(['share', 'list']);
    assert.match(r.stdout, /^NAME\s+METADATA\s+BLOCKS\s+READ-ONLY\s+DEFAULT-PERMISSION\s+ROOT-SQUASH\s+ROOT\n/);
    assert.match(r.stdout, /\n\/archive\s+meta1\s+blk1\s+false\s+read\s+\S+\s+0750 0:0\n/);
    assert.deepEqual(YAML.parse((await ok(['share', 'list', '-o', 'yaml'])).stdout), await json(['share', 'list']));

    await ok(['share', 'permission', 'grant', '/archive', '--user', 'alice', '--level', 'read-write']);
    await ok(['share', 'permission', 'grant', '/archive', '--group', 'editors', '--level', 'read']);
    const grants = await json<{ user?: string; group?: string; level: string }[]>(['share', 'permission', 'list', '/archive']);
    assert.deepEqual(grants.map((g) => [g.user ?? `@${g.group}`, g.level]).sort(), [
      ['@editors', 'read'],
      ['alice', 'read-write'],
    ]);
    r = await ok(['share', 'permission', 'list', '/archive']);
    assert.match(r.stdout, /^KIND\s+NAME\s+LEVEL\n/);
    assert.match(r.stdout, /\nuser\s+alice\s+read-write\n/);
    await ok(['share', 'permission', 'revoke', '/archive', '--user', 'alice']);
    assert.deepEqual(await json(['share', 'permission', 'list', '/archive']), [{ group: 'editors', level: 'read' }]);

    // A store a share uses cannot go: 409, naming the share.
    r = await ctl(['store', 'metadata', 'remove', 'meta1']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^dittofsctl: metadata store "meta1" is used by share.*\/archive.* \(HTTP 409\)\n$/);
    r = await ctl(['store', 'payload', 'remove', 'blk1']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /is used by share.*\(HTTP 409\)/);

    await ok(['share', 'delete', '/archive']);
    r = await ctl(['share', 'list']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, 'No shares found.\n');
    await ok(['store', 'metadata', 'remove', 'meta1']);
    await ok(['store', 'block', 'remove', 'blk1']);
    assert.deepEqual(await json(['store', 'metadata', 'list']), []);
  });

  it('adapters and settings', async () => {
    const adapters = await json<{ type: string; enabled: boolean; port: number }[]>(['adapter', 'list']);
    assert.deepEqual(adapters.map((a) => a.type).sort(), ['nfs', 'smb']);
    let r = await ok(['adapter', 'update', 'nfs', '--port', '12049']);
    assert.match(r.stdout, /^adapter nfs (enabled|disabled), port 12049\n$/);
    assert.equal((await json<{ port: number }>(['adapter', 'get', 'nfs'])).port, 12049);
    await ok(['adapter', 'remove', 'smb']);
    assert.equal((await json<{ enabled: boolean }>(['adapter', 'get', 'smb'])).enabled, false);
    await ok(['adapter', 'update', 'smb', '--config', '{"enabled": true}']);
    assert.equal((await json<{ enabled: boolean }>(['adapter', 'get', 'smb'])).enabled, true);

    r = await ok(['settings', 'set', 'logging.level', 'DEBUG']);
    assert.equal(r.stdout, 'logging.level set to "debug"\n');
    assert.deepEqual(logLevels, ['debug']);
    assert.deepEqual(await json(['settings', 'get', 'logging.level']), { key: 'logging.level', value: 'debug' });
    assert.deepEqual(await json(['settings', 'list']), { 'logging.level': 'debug' });
    r = await ok(['settings', 'list']);
    assert.equal(r.stdout, 'KEY             VALUE\nlogging.level   debug\n');
    r = await ctl(['settings', 'set', 'logging.level', 'loud']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /expected one of trace, debug, info, warn, error, fatal.* \(HTTP 400\)/);
  });

  it('refreshes an expired access token with the refresh token, and saves the new pair', async () => {
    let r = await ctl(['login', '--server', shortServer, '--username', 'admin', '--context', 'short'], { stdin: `${ADMIN_PASSWORD}\n` });
    assert.equal(r.code, 0, r.stderr);
    // The saved pair is the short-lived one; the refresh goes to the API with the normal lifetime
    // (same store and secret), so that the retried call does not depend on the machine's speed: a
    // refreshed token of one second could expire again before a call on a loaded machine uses it.
    const saved = await contexts();
    saved.contexts.short!.server = server;
    await writeFile(config, JSON.stringify(saved));
    const before = (await contexts()).contexts.short!;
    // Let the access token expire (JWT times are whole seconds).
    await new Promise((resolve) => setTimeout(resolve, (SHORT_ACCESS_TTL_SECONDS + 1) * 1000 + 100));
    r = await ctl(['--context', 'short', 'user', 'list', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok((JSON.parse(r.stdout) as unknown[]).length >= 2);
    const afterRefresh = (await contexts()).contexts.short!;
    assert.notEqual(afterRefresh.access_token, before.access_token);
    assert.notEqual(afterRefresh.refresh_token, before.refresh_token);
    assert.equal((await stat(config)).mode & 0o777, 0o600);
    // login made "short" the current context; back to the first one.
    await ok(['context', 'use', `127.0.0.1:${new URL(server).port}`]);
  });

  it('refreshes when the saved access token is refused; a refused refresh token says to log in', async () => {
    const name = `127.0.0.1:${new URL(server).port}`;
    const saved = await contexts();
    saved.contexts[name]!.access_token = 'corrupted.access.token';
    await writeFile(config, JSON.stringify(saved));
    let r = await ctl(['group', 'list', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), [{ name: 'editors', gid: 3000, members: [] }]);
    assert.notEqual((await contexts()).contexts[name]!.access_token, 'corrupted.access.token');

    const broken = await contexts();
    broken.contexts[name]!.access_token = 'corrupted.access.token';
    broken.contexts[name]!.refresh_token = 'corrupted.refresh.token';
    await writeFile(config, JSON.stringify(broken));
    r = await ctl(['group', 'list']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^dittofsctl: invalid token \(HTTP 401\)\nlog in with: dittofsctl login\n$/);
    r = await ctl(['login'], { stdin: `${ADMIN_PASSWORD}\n` });
    assert.equal(r.code, 0, r.stderr);
    await ok(['group', 'list']);
  });

  it('DITTOFSCTL_TOKEN and --server, without any contexts file', async () => {
    const { access_token } = (await contexts()).contexts[`127.0.0.1:${new URL(server).port}`]!;
    const r = await ctl(['--server', server, 'adapter', 'list', '-o', 'json'], {
      env: { DITTOFSCTL_TOKEN: access_token!, DITTOFSCTL_CONFIG: path.join(dir, 'none', 'config.json') },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as unknown[]).length, 2);
    await assert.rejects(stat(path.join(dir, 'none')), /ENOENT/);
  });

  it('a server that is not there: exit 1 naming it', async () => {
    const port = await freePort();
    const r = await ctl(['--server', `http://127.0.0.1:${port}`, 'user', 'list'], { env: { DITTOFSCTL_TOKEN: 'x' } });
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`^dittofsctl: cannot reach http://127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`));
  });

  it('contexts and logout', async () => {
    const name = `127.0.0.1:${new URL(server).port}`;
    const list = await json<{ name: string; current: boolean; logged_in: boolean }[]>(['context', 'list']);
    assert.deepEqual(
      list.map((c) => [c.name, c.current, c.logged_in]),
      [
        [name, true, true],
        ['alice', false, true],
        ['short', false, true],
      ],
    );
    const text = (await ok(['context', 'list'])).stdout;
    assert.doesNotMatch(text, /eyJ/); // no JWT
    let r = await ok(['logout']);
    assert.equal(r.stdout, `logged out of ${server} (context "${name}")\n`);
    const saved = (await contexts()).contexts[name]!;
    assert.equal(saved.access_token, undefined);
    assert.equal(saved.refresh_token, undefined);
    r = await ctl(['user', 'list']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`^dittofsctl: not logged in to ${server.replace(/\./g, '\\.')}\n`));
    // Other contexts keep their tokens.
    await ok(['--context', 'short', 'user', 'list']);
    await ok(['context', 'delete', 'alice']);
    assert.deepEqual(Object.keys((await contexts()).contexts).sort(), [name, 'short']);
  });
});
