// The `dittofs` CLI's configuration commands, run as real subprocesses of the built CLI (server/dist).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { runCli } from '../../../test/helpers/cli.js';
import type { Run } from '../../../test/helpers/run.js';
import { SAMPLE_CONFIG_YAML } from '../config/sample.js';
import { protocolImplemented } from '../protocols.js';
import { openControlStore } from '../control/store.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Runs `dittofs ARGS` (the built CLI) with a clean environment (no inherited DITTOFS_* variables). */
function dittofs(
  args: string[],
  opts: { cwd?: string; env?: Record<string, string>; user?: { uid: number; gid: number } } = {},
): Promise<Run> {
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DITTOFS_')));
  return runCli('dittofs', args, { cwd: opts.cwd ?? REPO_ROOT, env: { ...env, ...opts.env }, ...(opts.user ? { user: opts.user } : {}) });
}

/** The user the permission tests run the CLI as: `nobody` when the tests run as root (whom modes do not stop), else the tests' own. */
const UNPRIVILEGED = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : undefined;

describe('dittofs CLI', { concurrency: true }, () => {
  let dir: string;
  let good: string;
  let bad: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-cli-test-'));
    good = path.join(dir, 'good.yaml');
    bad = path.join(dir, 'bad.yaml');
    await writeFile(good, 'adapters:\n  nfs:\n    port: 2049\nshares:\n  - name: /data\n    root_mode: 0750\n');
    await writeFile(bad, 'adapters:\n  nfs:\n    prot: 2049\nlogging:\n  level: loud\n');
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('config validate: exit 0 and "config OK: <file>" for a good file', async () => {
    const r = await dittofs(['config', 'validate', '--config', good]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `config OK: ${good}\n`);
    assert.equal(r.stderr, '');
  });

  it('config validate: exit 1 listing every problem of a bad file', async () => {
    const r = await dittofs(['config', 'validate', '--config', bad]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.equal(
      r.stderr,
      `dittofs: invalid configuration (${bad}), 2 problems:\n` +
        '  logging.level: expected one of trace, debug, info, warn, error, fatal, got "loud" (line 5)\n' +
        '  adapters.nfs.prot: unknown key (did you mean "port"?) (line 3)\n',
    );
  });

  it('config validate: the global option may come first, and -c is short for --config', async () => {
    const r = await dittofs(['-c', good, 'config', 'validate']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `config OK: ${good}\n`);
  });

  it('config validate: built-in defaults when there is no file', async () => {
    const cwd = path.join(dir, 'nofile');
    await mkdir(cwd);
    const r = await dittofs(['config', 'validate'], { cwd });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'config OK: built-in defaults\n');
  });

  it('config validate: uses DITTOFS_CONFIG, and reports environment overrides', async () => {
    const r = await dittofs(['config', 'validate'], { env: { DITTOFS_CONFIG: good, DITTOFS_NFS_PORT: '3049' } });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `config OK: ${good}\nenvironment overrides: DITTOFS_NFS_PORT\n`);
  });

  it('config validate: a bad environment value names the variable', async () => {
    const r = await dittofs(['config', 'validate', '--config', good], { env: { DITTOFS_SMB_PORT: 'eighty', DITTOFS_NFS_PROT: '1' } });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^ {2}DITTOFS_SMB_PORT: expected a port number from 1 to 65535, got "eighty" \(sets adapters\.smb\.port\)$/m);
    assert.match(r.stderr, /^ {2}DITTOFS_NFS_PROT: unknown environment override .*did you mean DITTOFS_NFS_PORT\?$/m);
  });

  it('config validate: a missing file is an error', async () => {
    const missing = path.join(dir, 'missing.yaml');
    const r = await dittofs(['config', 'validate', '--config', missing]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`${missing.replace(/[.]/g, '\\.')}: cannot read config file: file not found`));
  });

  it('config validate: YAML syntax errors give line and column', async () => {
    const f = path.join(dir, 'syntax.yaml');
    await writeFile(f, 'adapters:\n  nfs: {port: 1\n');
    const r = await dittofs(['config', 'validate', '--config', f]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`^ {2}${f.replace(/[.]/g, '\\.')}:\\d+:\\d+: YAML syntax error: `, 'm'));
  });

  it('config show -o json: the effective config, with the file and the environment', async () => {
    const r = await dittofs(['config', 'show', '-o', 'json', '--config', good], { env: { DITTOFS_SMB_ENABLED: 'false' } });
    assert.equal(r.code, 0, r.stderr);
    const c = JSON.parse(r.stdout) as {
      data_dir: string;
      adapters: { nfs: { port: number }; smb: { enabled: boolean } };
      shares: { name: string; root_mode: string }[];
      cache: { max_dirty_bytes: number };
    };
    assert.equal(c.adapters.nfs.port, 2049);
    assert.equal(c.adapters.smb.enabled, false);
    assert.equal(c.cache.max_dirty_bytes, 256 * 1024 * 1024);
    assert.equal(c.data_dir, path.join(REPO_ROOT, 'data'));
    assert.deepEqual(
      c.shares.map((s) => [s.name, s.root_mode]),
      [['/data', '0750']],
    );
  });

  it('config show: YAML that validates back to the same config', async () => {
    const shown = await dittofs(['config', 'show', '--config', good], { env: { DITTOFS_LOG_LEVEL: 'debug' } });
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(
      shown.stdout,
      new RegExp(`^# effective configuration from ${good.replace(/[.]/g, '\\.')}\n# environment overrides: DITTOFS_LOG_LEVEL\n`),
    );
    const parsed = YAML.parse(shown.stdout) as { logging: { level: string } };
    assert.equal(parsed.logging.level, 'debug');
    const again = path.join(dir, 'shown.yaml');
    await writeFile(again, shown.stdout);
    const reshown = await dittofs(['config', 'show', '--config', again]);
    assert.equal(reshown.code, 0, reshown.stderr);
    const body = (text: string): string => text.replace(/^#.*\n/gm, '');
    assert.equal(body(reshown.stdout), body(shown.stdout));
    assert.match(body(shown.stdout), /^data_dir: /);
  });

  it('config show: rejects an unknown output format', async () => {
    const r = await dittofs(['config', 'show', '-o', 'xml']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /argument 'xml' is invalid\. Allowed choices are yaml, json/);
  });

  it('config init: writes the sample, refuses to overwrite without --force', async () => {
    const target = path.join(dir, 'init', 'nested', 'dittofs.yaml');
    let r = await dittofs(['config', 'init', '--config', target]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^wrote sample config to ${target.replace(/[.]/g, '\\.')}\n`));
    assert.equal(await readFile(target, 'utf8'), SAMPLE_CONFIG_YAML);
    assert.equal((await stat(target)).mode & 0o777, 0o644 & ~process.umask());

    await writeFile(target, 'data_dir: /mine\n');
    r = await dittofs(['config', 'init', '--config', target]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `dittofs: ${target} already exists (use --force to overwrite it)\n`);
    assert.equal(await readFile(target, 'utf8'), 'data_dir: /mine\n');

    r = await dittofs(['config', 'init', '--force', '--config', target]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await readFile(target, 'utf8'), SAMPLE_CONFIG_YAML);
  });

  it('config init then validate in a directory: ./dittofs.yaml is picked up', async () => {
    const cwd = path.join(dir, 'fresh');
    await mkdir(cwd);
    const init = await dittofs(['init'], { cwd });
    assert.equal(init.code, 0, init.stderr);
    assert.equal(await readFile(path.join(cwd, 'dittofs.yaml'), 'utf8'), SAMPLE_CONFIG_YAML);
    const r = await dittofs(['config', 'validate'], { cwd });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `config OK: ${path.join(cwd, 'dittofs.yaml')}\n`);
  });

  it('start: an invalid config exits 1 with the problems, before starting anything', async () => {
    const r = await dittofs(['start', '--config', bad]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^dittofs: invalid configuration .*\n {2}logging\.level: /);
  });

  it('--help explains where the config comes from', async () => {
    const r = await dittofs(['--help']);
    assert.equal(r.code, 0);
    for (const word of ['start', 'config', '--config', 'DITTOFS_CONFIG', './dittofs.yaml', 'built-in', 'DITTOFS_ADAPTERS__NFS__DRC_SIZE']) {
      assert.ok(r.stdout.includes(word), `--help lacks ${word}`);
    }
    const sub = await dittofs(['config', 'init', '--help']);
    assert.match(sub.stdout, /--force/);
    assert.match(sub.stdout, /--config <file>/);
  });

  it('--help and config show say which protocols this version serves', async () => {
    const help = await dittofs(['--help']);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /DittoFS server: NFSv3 \+ MOUNT v3/);
    const show = await dittofs(['config', 'show']);
    assert.equal(show.code, 0, show.stderr);
    if (protocolImplemented('smb')) {
      assert.doesNotMatch(show.stdout, /adapters\.smb: enabled, but/);
    } else {
      assert.match(help.stdout, /SMB2:\s+not\s+served\s+by\s+this\s+version/);
      assert.match(show.stdout, /^# adapters\.smb: enabled, but the SMB2 engine is not implemented in this version: not served$/m);
      const off = await dittofs(['config', 'show'], { env: { DITTOFS_SMB_ENABLED: 'false' } });
      assert.doesNotMatch(off.stdout, /adapters\.smb: enabled, but/);
    }
  });

  it('--version prints the package version', async () => {
    const pkg = JSON.parse(await readFile(path.join(REPO_ROOT, 'server', 'package.json'), 'utf8')) as { version: string };
    const r = await dittofs(['--version']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `${pkg.version}\n`);
  });

  it("a usage error exits 2, not status's 1 (not ready); help exits 0", async () => {
    const r = await dittofs(['frobnicate']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown command 'frobnicate'/);
    const opt = await dittofs(['status', '--bogus']);
    assert.equal(opt.code, 2);
    assert.match(opt.stderr, /unknown option '--bogus'/);
    const value = await dittofs(['stop', '--timeout', 'soon']);
    assert.equal(value.code, 2);
    assert.match(value.stderr, /expected a number of seconds/);
    assert.equal((await dittofs(['status', '--help'])).code, 0);
  });

  it('completion bash prints a script bash accepts', async () => {
    const r = await dittofs(['completion', 'bash']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /complete -F _dittofs_complete dittofs/);
    assert.match(r.stdout, /"config show"\) cands="[^"]*--output/);
    const bash = spawnSync('bash', ['-n'], { input: r.stdout });
    if (bash.error === undefined) assert.equal(bash.status, 0, bash.stderr.toString());
    // And it completes: `dittofs config s<TAB>` offers show.
    const probe = spawnSync('bash', [
      '-c',
      `${r.stdout}\nCOMP_WORDS=(dittofs config s); COMP_CWORD=2; _dittofs_complete; echo "\${COMPREPLY[*]}"`,
    ]);
    if (probe.error === undefined) assert.equal(probe.stdout.toString().trim(), 'show');
  });

  it('completion bash covers the lifecycle commands; a flag completes per command', async () => {
    const r = await dittofs(['completion', 'bash']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /""\) cands="start stop status logs backup restore admin config init completion /);
    assert.match(r.stdout, /"restore controlplane"\) cands="--input -f --force --pid-file /);
    const complete = (words: string[]): string | undefined => {
      const probe = spawnSync('bash', [
        '-c',
        `${r.stdout}\nCOMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _dittofs_complete; echo "\${COMPREPLY[*]}"`,
      ]);
      return probe.error === undefined ? probe.stdout.toString().trim() : undefined;
    };
    const cases: [string[], string][] = [
      [['dittofs', 'status', '-o', ''], 'text json'],
      [['dittofs', 'config', 'show', '-o', ''], 'yaml json'],
      [['dittofs', '-c', 'x.yaml', 'st'], 'start stop status'],
      [['dittofs', 'backup', 'c'], 'controlplane'],
      [['dittofs', 'logs', '--since', ''], ''],
    ];
    for (const [words, want] of cases) {
      const got = complete(words);
      if (got !== undefined) assert.equal(got, want, words.join(' '));
    }
  });

  it('every lifecycle command has help with examples', async () => {
    for (const p of [
      ['start'],
      ['stop'],
      ['status'],
      ['logs'],
      ['backup', 'controlplane'],
      ['restore', 'controlplane'],
      ['admin', 'reset-password'],
    ]) {
      const r = await dittofs([...p, '--help']);
      assert.equal(r.code, 0, p.join(' '));
      assert.match(r.stdout, new RegExp(`^Usage: dittofs ${p.join(' ')}`));
      assert.match(r.stdout, /\nExamples:\n {2}dittofs /, `${p.join(' ')} has examples`);
    }
    const backup = await dittofs(['backup', 'controlplane', '--help']);
    assert.match(backup.stdout, /holds secrets/);
    assert.match(backup.stdout, /mode 0600/);
    const start = await dittofs(['start', '--help']);
    assert.match(start.stdout, /generated password\nis printed by this command, once: .*never through\nthe log file/);
    assert.doesNotMatch(start.stdout, /--admin-password-fd/, 'internal to --background');
    const status = await dittofs(['status', '--help']);
    assert.match(status.stdout, /0 running and ready; 1 running but not ready .*\n3 not running/);
  });
});

describe('dittofs lifecycle commands without a server', { concurrency: true }, () => {
  let dir: string;
  let env: Record<string, string>;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-cli-life-'));
    const free = net.createServer();
    await new Promise<void>((resolve) => free.listen(0, '127.0.0.1', resolve));
    const apiPort = (free.address() as net.AddressInfo).port;
    await new Promise((resolve) => free.close(resolve));
    env = { DITTOFS_DATA_DIR: path.join(dir, 'data'), DITTOFS_BIND_ADDRESS: '127.0.0.1', DITTOFS_API_PORT: String(apiPort) };
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('status: not running is exit 3, in text and JSON', async () => {
    const pidFile = path.join(dir, 'data', 'dittofs.pid');
    const r = await dittofs(['status'], { env });
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stdout, `dittofs is not running (no pid file at ${pidFile})\n`);
    const j = await dittofs(['status', '-o', 'json'], { env });
    assert.equal(j.code, 3);
    const s = JSON.parse(j.stdout) as { running: boolean; pid: null; pid_file: string; ready: boolean; api: { url: string } };
    assert.deepEqual([s.running, s.pid, s.pid_file, s.ready], [false, null, pidFile, false]);
    assert.equal(s.api.url, `http://127.0.0.1:${env.DITTOFS_API_PORT}`);
  });

  it('stop: no pid file is "not running", exit 0; a stale one is removed', async () => {
    const r = await dittofs(['stop'], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^dittofs is not running \(no pid file at .*dittofs\.pid\)\n$/);
    const pidFile = path.join(dir, 'stale.pid');
    await writeFile(pidFile, '999999999\n');
    const stale = await dittofs(['stop', '--pid-file', pidFile], { env });
    assert.equal(stale.code, 0, stale.stderr);
    assert.equal(stale.stdout, `dittofs is not running (process 999999999 is gone; removed the stale pid file ${pidFile})\n`);
    await assert.rejects(stat(pidFile), { code: 'ENOENT' });
  });

  it('logs: no log file says where it would be and why; -n reads the last lines of logging.file', async () => {
    const r = await dittofs(['logs'], { env });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^dittofs: no log file at .*dittofs\.log: no server has started with this config yet/);
    const stdoutOnly = await dittofs(['logs'], { env: { ...env, DITTOFS_LOG_FILE: '-' } });
    assert.equal(stdoutOnly.code, 1);
    assert.match(stdoutOnly.stderr, /^dittofs: logging\.file is "-": the server logs to standard output only/);
    const file = path.join(dir, 'some.log');
    await writeFile(
      file,
      [
        '{"time":"2025-01-01T00:00:00.000Z","msg":"a"}',
        '{"time":"2025-01-02T00:00:00.000Z","msg":"b"}',
        '{"time":"2025-01-03T00:00:00.000Z","msg":"c"}',
        '',
      ].join('\n'),
    );
    const last = await dittofs(['logs', '-n', '2'], { env: { ...env, DITTOFS_LOG_FILE: file } });
    assert.equal(last.code, 0, last.stderr);
    assert.equal(last.stdout, '{"time":"2025-01-02T00:00:00.000Z","msg":"b"}\n{"time":"2025-01-03T00:00:00.000Z","msg":"c"}\n');
    const since = await dittofs(['logs', '--since', '2025-01-01T12:00:00+00:00'], { env: { ...env, DITTOFS_LOG_FILE: file } });
    assert.equal(since.stdout.split('\n').length, 3, since.stderr);
    const bad = await dittofs(['logs', '--since', 'yesterday'], { env: { ...env, DITTOFS_LOG_FILE: file } });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /option '--since <time>' argument 'yesterday' is invalid\. expected an RFC 3339 time/);
  });

  it('start: --foreground and --background together are refused', async () => {
    const r = await dittofs(['start', '--foreground', '--background'], { env });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /option '--foreground' cannot be used with option '-d, --background'/);
  });

  it('backup: an output directory that does not exist is an error (exit 1, no success line, nothing made); an existing one gets the file', async () => {
    const data = path.join(dir, 'backup-data');
    const store = await openControlStore({ type: 'embedded', path: path.join(data, 'control') });
    await store.close();
    const benv = { ...env, DITTOFS_DATA_DIR: data };
    const missing = path.join(dir, 'no-such-dir', 'sub');
    const r = await dittofs(['backup', 'controlplane', '--output', path.join(missing, 'control.json')], { env: benv });
    assert.equal(r.code, 1, r.stdout);
    assert.equal(r.stdout, '', 'no success message');
    assert.equal(
      r.stderr,
      `dittofs: cannot write ${path.join(missing, 'control.json')}: the directory ${missing} does not exist (create it first)\n`,
    );
    await assert.rejects(stat(path.join(dir, 'no-such-dir')), { code: 'ENOENT' }, 'no directory was made');
    const notDir = path.join(dir, 'a-file');
    await writeFile(notDir, 'x');
    const under = await dittofs(['backup', 'controlplane', '--output', path.join(notDir, 'control.json')], { env: benv });
    assert.equal(under.code, 1);
    assert.match(under.stderr, /^dittofs: cannot write .*a-file\/control\.json: .*a-file is not a directory\n$/);
    await mkdir(missing, { recursive: true });
    const ok = await dittofs(['backup', 'controlplane', '--output', path.join(missing, 'control.json')], { env: benv });
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^backed up the control plane \(.*\) to .*control\.json\n/);
    const written = await stat(path.join(missing, 'control.json'));
    assert.equal(written.mode & 0o777, 0o600);
    assert.equal(
      (JSON.parse(await readFile(path.join(missing, 'control.json'), 'utf8')) as { format: string }).format,
      'dittofs-controlplane-backup',
    );
  });

  it('backup: into a directory its user may write in but not read (0300) the backup is made, with a warning that the directory was not synced', async () => {
    // Its own directory, which the unprivileged user owns (the suite's is root's, mode 0700).
    const own = await mkdtemp(path.join(os.tmpdir(), 'dittofs-cli-dropbox-'));
    try {
      const data = path.join(own, 'data');
      const store = await openControlStore({ type: 'embedded', path: path.join(data, 'control') });
      await store.close();
      const dropbox = path.join(own, 'dropbox');
      await mkdir(dropbox);
      if (UNPRIVILEGED !== undefined) {
        const chown = spawnSync('chown', ['-R', `${UNPRIVILEGED.uid}:${UNPRIVILEGED.gid}`, own]);
        assert.equal(chown.status, 0, String(chown.stderr));
      }
      await chmod(dropbox, 0o300);
      const file = path.join(dropbox, 'control.json');
      const r = await dittofs(['backup', 'controlplane', '--output', file], {
        env: { ...env, DITTOFS_DATA_DIR: data },
        ...(UNPRIVILEGED ? { user: UNPRIVILEGED } : {}),
      });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^backed up the control plane \(.*\) to .*control\.json\n/);
      assert.equal(
        r.stderr,
        `dittofs: warning: cannot sync the directory ${dropbox} (no read permission: EACCES): the backup is complete and in place, ` +
          'but a power loss in the next moments could lose its name from the directory (run `sync` to be sure)\n',
      );
      const written = await stat(file);
      assert.equal(written.mode & 0o777, 0o600);
      assert.equal((JSON.parse(await readFile(file, 'utf8')) as { format: string }).format, 'dittofs-controlplane-backup');
    } finally {
      // Readable again, so that its entries can be listed and removed by a user whom modes stop.
      await chmod(path.join(own, 'dropbox'), 0o700).catch(() => undefined);
      await rm(own, { recursive: true, force: true });
    }
  });

  it('backup: no control database is an error; restore checks the file before opening anything', async () => {
    const b = await dittofs(['backup', 'controlplane', '--output', path.join(dir, 'b.json')], { env });
    assert.equal(b.code, 1);
    assert.match(b.stderr, /^dittofs: there is no control database at .*control \(a server creates it at its first start/);
    const bad = path.join(dir, 'bad.json');
    await writeFile(bad, JSON.stringify({ format: 'dittofs-controlplane-backup', version: 1, users: 'none' }));
    const r = await dittofs(['restore', 'controlplane', '--input', bad], { env });
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      new RegExp(`^dittofs: ${bad.replace(/[.]/g, '\\.')}: the backup is not valid \\(\\d+ problems\\); nothing was changed\n`),
    );
    assert.match(r.stderr, /\n {2}users: expected a list, got the string "none"\n/);
    const yaml = path.join(dir, 'config.yaml');
    await writeFile(yaml, 'data_dir: ./x\n');
    const notJson = await dittofs(['restore', 'controlplane', '--input', yaml], { env });
    assert.equal(notJson.code, 1);
    assert.match(notJson.stderr, /is not a DittoFS control-plane backup: not JSON/);
    await assert.rejects(stat(path.join(dir, 'data', 'control')), { code: 'ENOENT' }, 'nothing was created');
  });
});

describe('dittofs start', () => {
  it('names the listener and the setting to change when its port is taken, and exits 1', async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as net.AddressInfo).port;
    const data = await mkdtemp(path.join(os.tmpdir(), 'dittofs-cli-port-'));
    try {
      const r = await dittofs(['start'], {
        env: {
          DITTOFS_DATA_DIR: data,
          DITTOFS_BIND_ADDRESS: '127.0.0.1',
          DITTOFS_NFS_PORT: String(port),
          DITTOFS_API_ENABLED: 'false',
          DITTOFS_METRICS_ENABLED: 'false',
          DITTOFS_SMB_ENABLED: 'false',
        },
      });
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`NFS cannot listen on 127\\.0\\.0\\.1:${port}: the address is already in use`));
      assert.match(r.stderr, /DITTOFS_NFS_PORT/);
    } finally {
      taken.close();
      await rm(data, { recursive: true, force: true });
    }
  });
});
