// dittofsctl command lines run in-process against a fake fetch: argument checks (exit 2, no
// request), contexts, output and error reporting. test/e2e/dittofsctl.test.ts runs the real thing.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import YAML from 'yaml';
import { loadContexts, saveContexts } from './contexts.js';
import { runCtl } from './program.js';
import { fakeIo, jsonResponse, problem, type FakeIo, type FakeResponder } from './testing.js';

let dir: string;
let n = 0;

async function run(args: string[], opts: { stdin?: string; respond?: FakeResponder; env?: Record<string, string>; config?: string } = {}) {
  const config = opts.config ?? path.join(dir, `config-${n++}.json`);
  const io = fakeIo({
    env: { DITTOFSCTL_CONFIG: config, ...opts.env },
    ...(opts.stdin === undefined ? {} : { stdin: opts.stdin }),
    ...(opts.respond === undefined ? {} : { respond: opts.respond }),
  });
  const code = await runCtl(args, io);
  return { code, io, config };
}

/** A contexts file logged in to http://h:8080 as admin. */
async function loggedIn(): Promise<string> {
  const config = path.join(dir, `config-${n++}.json`);
  await saveContexts(config, {
    current_context: 'h:8080',
    contexts: { 'h:8080': { server: 'http://h:8080', username: 'admin', access_token: 'ACCESS', refresh_token: 'REFRESH' } },
  });
  return config;
}

function noRequests(io: FakeIo): void {
  assert.deepEqual(io.requests, [], 'no request may be sent for bad input');
}

describe('dittofsctl (in-process)', () => {
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofsctl-program-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  describe('bad input: exit 2, a message naming the flag, no request', () => {
    const cases: [string[], RegExp][] = [
      [
        ['share', 'permission', 'grant', '/export', '--user', 'alice', '--level', 'write'],
        /^dittofsctl: option '--level <level>' argument 'write' is invalid\. Allowed choices are none, read, read-write, admin\.$/m,
      ],
      [['share', 'update', '/x', '--default-permission', 'full'], /option '--default-permission <level>' argument 'full' is invalid/],
      [['share', 'permission', 'grant', '/export', '--user', 'alice'], /^dittofsctl: required option '--level <level>' not specified$/m],
      [
        ['share', 'permission', 'grant', '/export', '--user', 'a', '--group', 'b', '--level', 'read'],
        /give either --user or --group, not both/,
      ],
      [['share', 'permission', 'revoke', '/export'], /give --user NAME or --group NAME/],
      [['share', 'create', '--name', '/x', '--metadata', 'm'], /required option '--blocks <store>' not specified/],
      [['share', 'create', '--metadata', 'm', '--blocks', 'b'], /required option '--name <name>' not specified/],
      [['share', 'create', '--name', '/a/../b', '--metadata', 'm', '--blocks', 'b'], /--name: the share name must not contain "\.\."/],
      [
        ['share', 'create', '--name', '/x', '--metadata', 'm', '--blocks', 'b', '--payload', 'c'],
        /--blocks and --payload name the same thing/,
      ],
      [['share', 'update', '/x'], /nothing to change/],
      [['share', 'update', '/x', '--root-mode', '999'], /--root-mode: expected octal mode bits/],
      [['adapter', 'update', 'nfs', '--port', '70000'], /^dittofsctl: --port: expected a port number from 1 to 65535, got "70000"$/m],
      [['adapter', 'update', 'nfs', '--port', 'abc'], /--port: expected a port number/],
      [['adapter', 'update', 'nfs', '--enabled', '--disabled'], /--enabled and --disabled exclude each other/],
      [['adapter', 'update', 'nfs'], /nothing to change/],
      [
        ['adapter', 'update', 'ftp', '--port', '21'],
        /^dittofsctl: command-argument value 'ftp' is invalid for argument 'type'\. Allowed choices are nfs, smb\.$/m,
      ],
      [['adapter', 'update', 'nfs', '--config', '{"port":0}'], /--config: "port": expected a port number/],
      [
        ['store', 'metadata', 'add', '--name', 'm', '--type', 'badger'],
        /option '--type <type>' argument 'badger' is invalid\. Allowed choices are memory, embedded, postgres/,
      ],
      [['store', 'block', 'add', '--name', 'b'], /required option '--type <type>' not specified/],
      [
        ['store', 'payload', 'add', '--name', 'b', '--type', 's3', '--config', '{"bucket":"x",}'],
        /^dittofsctl: --config: invalid JSON at column 15 \(position 14\): trailing comma before '}'$/m,
      ],
      [['store', 'block', 'add', '--name', 'b', '--type', 's3', '--config', '["x"]'], /--config: expected a JSON object, got an array/],
      [['user', 'create'], /required option '--username <name>' not specified/],
      [['user', 'create', 'Alice'], /user name: "Alice" is not a valid name/],
      [['user', 'create', 'alice', '--username', 'bob'], /two user names given/],
      [['user', 'create', '--username', 'alice', '--uid', '-1'], /--uid: expected a number from 0 to/],
      [
        ['user', 'create', '--username', 'alice', '--role', 'root'],
        /argument 'root' is invalid\. Allowed choices are admin, operator, user/,
      ],
      [['user', 'create', '--username', 'alice', '--groups', 'ok,Bad'], /--groups: "Bad" is not a valid name/],
      [['user', 'update', 'alice'], /nothing to change/],
      [['group', 'create'], /required option '--name <name>' not specified/],
      [['group', 'create', '--name', 'editors', '--gid', 'x'], /--gid: expected a number/],
      [['user', 'list', '-o', 'xml'], /argument 'xml' is invalid\. Allowed choices are table, json, yaml/],
      [['user', 'get'], /missing required argument 'username'/],
      [['user', 'get', 'a', 'b'], /too many arguments/],
      [['frobnicate'], /unknown command 'frobnicate'/],
      [['user', 'lst'], /^dittofsctl: unknown command 'lst'\n\(Did you mean one of list, ls\?\)$/m],
      [['--server', 'ftp://x', 'user', 'list'], /--server: the URL must start with http:\/\/ or https:\/\//],
      [['completion', 'fish'], /value 'fish' is invalid for argument 'shell'\. Allowed choices are bash, zsh/],
    ];
    for (const [args, re] of cases) {
      it(args.join(' '), async () => {
        const { code, io } = await run(args, { config: await loggedIn() });
        assert.equal(code, 2, io.stderr);
        assert.match(io.stderr, re);
        assert.equal(io.stdout, '');
        noRequests(io);
      });
    }

    it('never echoes a --config value, which may hold a secret', async () => {
      const { code, io } = await run(
        ['store', 'block', 'add', '--name', 'b', '--type', 's3', '--config', '{"secret_access_key": "TOPSECRET" x}'],
        {
          config: await loggedIn(),
        },
      );
      assert.equal(code, 2);
      assert.doesNotMatch(io.stderr, /TOPSECRET/);
    });

    it('a command group without a subcommand shows its help and exits 2', async () => {
      const { code, io } = await run(['user']);
      assert.equal(code, 2);
      assert.match(io.stderr, /Usage: dittofsctl user \[options\] \[command\]/);
    });
  });

  describe('help and version', () => {
    it('--version', async () => {
      const { code, io } = await run(['--version']);
      assert.equal(code, 0);
      assert.match(io.stdout, /^\d+\.\d+\.\d+\n$/);
    });
    it('every command has a description and its --help exits 0; leaf commands show examples', async () => {
      const paths = [
        ['login'],
        ['logout'],
        ['password'],
        ['whoami'],
        ['context', 'list'],
        ['context', 'use'],
        ['context', 'current'],
        ['context', 'delete'],
        ['user', 'create'],
        ['user', 'list'],
        ['user', 'get'],
        ['user', 'update'],
        ['user', 'delete'],
        ['group', 'create'],
        ['group', 'list'],
        ['group', 'get'],
        ['group', 'delete'],
        ['group', 'add-user'],
        ['group', 'remove-user'],
        ['share', 'list'],
        ['share', 'get'],
        ['share', 'create'],
        ['share', 'update'],
        ['share', 'delete'],
        ['share', 'permission', 'list'],
        ['share', 'permission', 'grant'],
        ['share', 'permission', 'revoke'],
        ['store', 'metadata', 'add'],
        ['store', 'metadata', 'list'],
        ['store', 'metadata', 'get'],
        ['store', 'metadata', 'remove'],
        ['store', 'block', 'add'],
        ['store', 'payload', 'list'],
        ['store', 'block', 'get'],
        ['store', 'block', 'remove'],
        ['adapter', 'list'],
        ['adapter', 'get'],
        ['adapter', 'update'],
        ['adapter', 'add'],
        ['adapter', 'remove'],
        ['settings', 'list'],
        ['settings', 'get'],
        ['settings', 'set'],
        ['completion'],
      ];
      for (const p of paths) {
        const { code, io } = await run([...p, '--help']);
        assert.equal(code, 0, p.join(' '));
        assert.match(
          io.stdout,
          new RegExp(`^Usage: dittofsctl ${p[0] === 'store' && p[1] === 'payload' ? 'store block' : p.join(' ')}`),
          p.join(' '),
        );
        assert.match(io.stdout, /\nExamples:\n {2}dittofsctl /, `${p.join(' ')} has examples`);
        for (const line of io.stdout.split('\n').filter((l) => l.startsWith('  dittofsctl '))) {
          // Each example's first words name this command (or a documented alias).
          assert.ok(line.includes(` ${p.at(-1)!}`) || /add|enable|payload/.test(line), `${p.join(' ')}: example "${line}"`);
        }
      }
    });
    it('list and get commands offer -o table|json|yaml', async () => {
      for (const p of [
        ['user', 'list'],
        ['user', 'get'],
        ['share', 'permission', 'list'],
        ['store', 'block', 'get'],
        ['settings', 'list'],
        ['context', 'list'],
      ]) {
        const { io } = await run([...p, '--help']);
        assert.match(
          io.stdout,
          /-o, --output <format>\s+output format: table, json .*\(choices: "table", "json", "yaml", default: "table"\)/s,
          p.join(' '),
        );
      }
    });
    it('completion scripts cover the command tree', async () => {
      const { code, io } = await run(['completion', 'bash']);
      assert.equal(code, 0);
      assert.match(io.stdout, /complete -F _dittofsctl_complete dittofsctl/);
      assert.match(io.stdout, /"share permission"\) cands="list grant revoke /);
      assert.match(io.stdout, /"store block"\) cands="add list get remove /);
      assert.match(io.stdout, /--level\) COMPREPLY=\( \$\(compgen -W "none read read-write admin" /);
      const zsh = await run(['completion', 'zsh']);
      assert.match(zsh.io.stdout, /^#compdef dittofsctl\n/);
    });
  });

  describe('connection and credentials', () => {
    it('with no context and no --server: exit 1, says to log in', async () => {
      const { code, io } = await run(['user', 'list']);
      assert.equal(code, 1);
      assert.equal(io.stderr, 'dittofsctl: no server to talk to\nlog in first: dittofsctl login --server URL --username NAME\n');
      noRequests(io);
    });

    it('with --server but no tokens for it: exit 1 before any request', async () => {
      const { code, io } = await run(['--server', 'http://other:8080', 'user', 'list'], { config: await loggedIn() });
      assert.equal(code, 1);
      assert.match(io.stderr, /^dittofsctl: not logged in to http:\/\/other:8080\n/);
      noRequests(io);
    });

    it('DITTOFSCTL_TOKEN is sent as it is, to --server, and never saved', async () => {
      const { code, io, config } = await run(['--server', 'http://ci:8080', 'user', 'list', '-o', 'json'], {
        env: { DITTOFSCTL_TOKEN: 'ENVTOKEN' },
        respond: () => jsonResponse(200, []),
      });
      assert.equal(code, 0, io.stderr);
      assert.equal(io.stdout, '[]\n');
      assert.equal(io.requests[0]?.headers.authorization, 'Bearer ENVTOKEN');
      assert.equal(io.requests[0]?.url, 'http://ci:8080/api/v1/users');
      await assert.rejects(stat(config), /ENOENT/);
    });

    it('a refreshed token pair is saved in the context', async () => {
      const config = await loggedIn();
      const { code, io } = await run(['group', 'list'], {
        config,
        respond: (req) => {
          if (req.url.endsWith('/auth/refresh'))
            return jsonResponse(200, {
              access_token: 'NEW-A',
              refresh_token: 'NEW-R',
              token_type: 'Bearer',
              expires_in: 900,
              must_change_password: false,
            });
          return req.headers.authorization === 'Bearer NEW-A'
            ? jsonResponse(200, [{ name: 'editors', gid: 3000, members: ['alice'] }])
            : problem(401, 'token expired');
        },
      });
      assert.equal(code, 0, io.stderr);
      assert.equal(io.stdout, 'NAME      GID    MEMBERS\neditors   3000   alice\n');
      const saved = await loadContexts(config);
      assert.equal(saved.contexts['h:8080']?.access_token, 'NEW-A');
      assert.equal(saved.contexts['h:8080']?.refresh_token, 'NEW-R');
      assert.equal((await stat(config)).mode & 0o777, 0o600);
    });

    it('server errors: "dittofsctl: <detail> (HTTP <status>)", exit 1', async () => {
      const { code, io } = await run(['store', 'metadata', 'remove', 'meta'], {
        config: await loggedIn(),
        respond: () => problem(409, 'metadata store "meta" is used by shares: /export'),
      });
      assert.equal(code, 1);
      assert.equal(io.stderr, 'dittofsctl: metadata store "meta" is used by shares: /export (HTTP 409)\n');
    });

    it('403 password-change-required points at "dittofsctl password"', async () => {
      const { code, io } = await run(['user', 'list'], {
        config: await loggedIn(),
        respond: () =>
          problem(403, 'password must be changed: POST /api/v1/users/me/password first', 'urn:dittofs:problem:password-change-required'),
      });
      assert.equal(code, 1);
      assert.match(io.stderr, /\(HTTP 403\)\nchange your password with: dittofsctl password\n$/);
    });
  });

  describe('login and contexts', () => {
    const tokens = { access_token: 'A1', refresh_token: 'R1', token_type: 'Bearer', expires_in: 900, must_change_password: true };

    it('login reads the password from stdin, saves a 0600 context named host:port, prints no secret', async () => {
      const { code, io, config } = await run(['login', '--server', 'http://localhost:8080/', '--username', 'admin'], {
        stdin: 'hunter2hunter2\n',
        respond: (req) => {
          assert.equal(req.url, 'http://localhost:8080/api/v1/auth/login');
          assert.deepEqual(req.body, { username: 'admin', password: 'hunter2hunter2' });
          return jsonResponse(200, tokens);
        },
      });
      assert.equal(code, 0, io.stderr);
      assert.equal(io.stdout, 'logged in to http://localhost:8080 as admin (context "localhost:8080")\n');
      assert.match(io.stderr, /must be changed before anything else; run: dittofsctl password/);
      for (const secret of ['hunter2', 'A1', 'R1']) assert.ok(!io.stdout.includes(secret) && !io.stderr.includes(secret));
      assert.deepEqual(await loadContexts(config), {
        current_context: 'localhost:8080',
        contexts: { 'localhost:8080': { server: 'http://localhost:8080', username: 'admin', access_token: 'A1', refresh_token: 'R1' } },
      });
      assert.equal((await stat(config)).mode & 0o777, 0o600);
    });

    it('login without a password on stdin: exit 2 before any request', async () => {
      const { code, io } = await run(['login', '--server', 'http://h', '--username', 'admin'], { stdin: '' });
      assert.equal(code, 2);
      assert.match(io.stderr, /no password given: standard input is not a terminal/);
      noRequests(io);
    });

    it('a refused login has no "log in" hint and saves nothing', async () => {
      const { code, io, config } = await run(['login', '--server', 'http://h', '--username', 'admin', '--password', 'wrong'], {
        respond: () => problem(401, 'invalid username or password'),
      });
      assert.equal(code, 1);
      assert.equal(io.stderr, 'dittofsctl: invalid username or password (HTTP 401)\n');
      await assert.rejects(readFile(config), /ENOENT/);
    });

    it('several contexts: login --context, list (no tokens shown), use, current, logout, delete', async () => {
      const config = await loggedIn();
      const respond = () => jsonResponse(200, { ...tokens, must_change_password: false });
      let r = await run(['login', '--server', 'https://prod.example.com', '--username', 'ops', '--password', 'pw', '--context', 'prod'], {
        config,
        respond,
      });
      assert.equal(r.code, 0, r.io.stderr);
      r = await run(['context', 'current'], { config });
      assert.equal(r.io.stdout, 'prod\n');

      r = await run(['context', 'list'], { config });
      assert.equal(
        r.io.stdout,
        [
          'CURRENT   NAME     SERVER                     USER    LOGGED-IN',
          '          h:8080   http://h:8080              admin   yes',
          '*         prod     https://prod.example.com   ops     yes',
          '',
        ].join('\n'),
      );
      r = await run(['context', 'list', '-o', 'yaml'], { config });
      assert.deepEqual(YAML.parse(r.io.stdout), [
        { name: 'h:8080', current: false, server: 'http://h:8080', username: 'admin', logged_in: true },
        { name: 'prod', current: true, server: 'https://prod.example.com', username: 'ops', logged_in: true },
      ]);
      assert.doesNotMatch(r.io.stdout, /ACCESS|REFRESH|A1|R1/);

      r = await run(['context', 'use', 'h:8080'], { config });
      assert.equal(r.io.stdout, 'switched to context "h:8080" (http://h:8080)\n');
      r = await run(['context', 'use', 'staging'], { config });
      assert.equal(r.code, 1);
      assert.match(r.io.stderr, /no context named "staging"\nknown contexts: h:8080, prod\n/);

      // --context picks the server and tokens of another context for one command.
      r = await run(['--context', 'prod', 'adapter', 'list'], {
        config,
        respond: () => jsonResponse(200, [{ type: 'nfs', enabled: true, port: 2049 }]),
      });
      assert.equal(r.io.requests[0]?.url, 'https://prod.example.com/api/v1/adapters');
      assert.equal(r.io.requests[0]?.headers.authorization, 'Bearer A1');

      r = await run(['logout'], { config });
      assert.equal(r.io.stdout, 'logged out of http://h:8080 (context "h:8080")\n');
      const after = await loadContexts(config);
      assert.deepEqual(after.contexts['h:8080'], { server: 'http://h:8080', username: 'admin' });
      assert.equal(after.contexts.prod?.access_token, 'A1');
      r = await run(['user', 'list'], { config });
      assert.equal(r.code, 1);
      assert.match(r.io.stderr, /not logged in to http:\/\/h:8080/);

      r = await run(['context', 'delete', 'h:8080'], { config });
      assert.equal(r.code, 0);
      assert.deepEqual(Object.keys((await loadContexts(config)).contexts), ['prod']);
      r = await run(['context', 'current'], { config });
      assert.equal(r.code, 1);
      assert.match(r.io.stderr, /no current context/);
    });

    it('a corrupt contexts file is reported, not overwritten', async () => {
      const config = path.join(dir, 'corrupt.json');
      await writeFile(config, '{oops');
      const r = await run(['context', 'list'], { config });
      assert.equal(r.code, 1);
      assert.match(r.io.stderr, /corrupt\.json: not valid JSON/);
      assert.equal(await readFile(config, 'utf8'), '{oops');
    });
  });

  describe('requests', () => {
    it('share names are encoded as one path segment; "export" means "/export"', async () => {
      const { code, io } = await run(['share', 'permission', 'grant', 'export', '--group', 'editors', '--level', 'read'], {
        config: await loggedIn(),
        respond: () => jsonResponse(200, { group: 'editors', level: 'read' }),
      });
      assert.equal(code, 0, io.stderr);
      assert.equal(io.requests[0]?.method, 'PUT');
      assert.equal(io.requests[0]?.url, 'http://h:8080/api/v1/shares/%2Fexport/permissions/groups/editors');
      assert.deepEqual(io.requests[0]?.body, { level: 'read' });
      assert.equal(io.stdout, 'granted read on "/export" to group "editors"\n');
    });

    it('share create sends only the fields given; --payload is --blocks', async () => {
      const share = {
        name: '/archive',
        metadata_store: 'm',
        block_store: 'b',
        read_only: true,
        default_permission: 'read',
        root_squash: true,
        anonymous_uid: 65534,
        anonymous_gid: 65534,
        root_mode: 0o750,
        root_uid: 0,
        root_gid: 0,
      };
      const { code, io } = await run(
        [
          'share',
          'create',
          '--name',
          '/archive',
          '--metadata',
          'm',
          '--payload',
          'b',
          '--read-only',
          '--default-permission',
          'read',
          '--root-mode',
          '0750',
          '-o',
          'table',
        ],
        { config: await loggedIn(), respond: () => jsonResponse(201, share) },
      );
      assert.equal(code, 0, io.stderr);
      assert.deepEqual(io.requests[0]?.body, {
        name: '/archive',
        metadata_store: 'm',
        block_store: 'b',
        read_only: true,
        default_permission: 'read',
        root_mode: 0o750,
      });
      assert.equal(
        io.stdout,
        'NAME       METADATA   BLOCKS   READ-ONLY   DEFAULT-PERMISSION   ROOT-SQUASH   ROOT\n/archive   m          b        true        read                 true          0750 0:0\n',
      );
    });

    it('share get -o json and -o yaml show root_mode in octal, as the table does', async () => {
      const share = {
        name: '/archive',
        metadata_store: 'm',
        block_store: 'b',
        read_only: false,
        default_permission: 'read-write',
        root_squash: false,
        anonymous_uid: 65534,
        anonymous_gid: 65534,
        root_mode: 0o777,
        root_uid: 0,
        root_gid: 0,
      };
      const config = await loggedIn();
      const asJson = await run(['share', 'get', '/archive', '-o', 'json'], { config, respond: () => jsonResponse(200, share) });
      assert.equal(asJson.code, 0, asJson.io.stderr);
      assert.equal((JSON.parse(asJson.io.stdout) as { root_mode: unknown }).root_mode, '0777');
      const asYaml = await run(['share', 'list', '-o', 'yaml'], { config, respond: () => jsonResponse(200, [share]) });
      assert.equal(asYaml.code, 0, asYaml.io.stderr);
      assert.match(asYaml.io.stdout, /^ {2}root_mode: "0777"$/m);
    });

    it('user create --no-password sends no password and prompts for none', async () => {
      const user = {
        username: 'nfs',
        uid: 2000,
        gid: 2000,
        groups: [],
        email: null,
        role: 'user',
        must_change_password: false,
        created_at: 't',
        updated_at: 't',
      };
      const { code, io } = await run(['user', 'create', '--username', 'nfs', '--uid', '2000', '--no-password', '--email', ''], {
        config: await loggedIn(),
        respond: () => jsonResponse(201, user),
      });
      assert.equal(code, 0, io.stderr);
      assert.deepEqual(io.requests[0]?.body, { username: 'nfs', uid: 2000, email: null });
      assert.equal(io.stdout, 'user "nfs" created (uid 2000, gid 2000)\n');
    });

    it('settings set: logging.level is lower-cased; numbers and booleans are JSON', async () => {
      const respond: FakeResponder = (req) =>
        jsonResponse(200, { key: req.url.split('/').at(-1), value: (req.body as { value: unknown }).value });
      let r = await run(['settings', 'set', 'logging.level', 'DEBUG'], { config: await loggedIn(), respond });
      assert.equal(r.code, 0, r.io.stderr);
      assert.deepEqual(r.io.requests[0]?.body, { value: 'debug' });
      assert.equal(r.io.stdout, 'logging.level set to "debug"\n');
      r = await run(['settings', 'set', 'some.limit', '10'], { config: await loggedIn(), respond });
      assert.deepEqual(r.io.requests[0]?.body, { value: 10 });
    });

    it('an empty list prints nothing on stdout and says so on stderr', async () => {
      const { code, io } = await run(['share', 'list'], { config: await loggedIn(), respond: () => jsonResponse(200, []) });
      assert.equal(code, 0);
      assert.equal(io.stdout, '');
      assert.equal(io.stderr, 'No shares found.\n');
    });
  });
});
