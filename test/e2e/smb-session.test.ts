// SMB logons follow the control plane at once: a user created or re-passworded with dittofsctl logs
// in with smbclient on the next connection (no restart, no cache), and a user without an SMB
// password (created with --no-password: the closest thing to a disabled account) or deleted is
// refused with NT_STATUS_LOGON_FAILURE. Each refused logon is logged at info with its reason.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { takeOverAdmin } from '../helpers/api.js';
import { runCli } from '../helpers/cli.js';
import { until } from '../helpers/hostile.js';
import { smbclient } from '../helpers/run.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';

/** How long a log line may take to arrive after the reply it explains (a pipe, a loaded machine). */
const LOG_WAIT_MS = 10_000;

const ADMIN_PASSWORD = 'admin-Passw0rd-changed';
const CAROL = 'carol';
const CAROL_PASSWORD = 'carol-Passw0rd-1';
const CAROL_NEW_PASSWORD = 'carol-Passw0rd-2';

describe('SMB logons follow dittofsctl user changes', { timeout: 600_000 }, () => {
  let srv: DittofsProcess;
  let dir: string;
  let config: string;

  function ctl(args: string[], stdin = ''): ReturnType<typeof runCli> {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DITTOFSCTL_')));
    return runCli('dittofsctl', args, { env: { ...env, DITTOFSCTL_CONFIG: config }, input: stdin });
  }

  async function ctlOk(args: string[], stdin = ''): Promise<void> {
    const r = await ctl(args, stdin);
    assert.equal(r.code, 0, `dittofsctl ${args.join(' ')}: ${r.stderr}`);
  }

  /** `smbclient -c ls` as `user`; the combined output and exit code. */
  async function smbLs(user: string, password: string): Promise<{ code: number | null; out: string }> {
    const r = await smbclient(srv.smbPort, user, password, 'ls', ['-m', 'SMB2_10']);
    return { code: r.code, out: r.stdout + r.stderr };
  }

  async function assertLogsIn(user: string, password: string): Promise<void> {
    const r = await smbLs(user, password);
    assert.equal(r.code, 0, r.out);
    assert.doesNotMatch(r.out, /NT_STATUS_/, r.out);
  }

  async function assertRefused(user: string, password: string): Promise<void> {
    const r = await smbLs(user, password);
    assert.notEqual(r.code, 0, r.out);
    assert.match(r.out, /NT_STATUS_LOGON_FAILURE/, r.out);
  }

  /** Server log lines (JSON) whose msg is `msg`. */
  function logLines(msg: string): Record<string, unknown>[] {
    return srv
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.msg === msg);
  }

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-smb-session-'));
    config = path.join(dir, 'ctl.json');
    srv = await startDittofs({ env: { DITTOFS_LOG_LEVEL: 'info' } });
    const base = `http://127.0.0.1:${srv.apiPort}`;
    await takeOverAdmin(base, ADMIN_PASSWORD);
    await ctlOk(['login', '--server', base, '--username', 'admin'], `${ADMIN_PASSWORD}\n`);
  });

  after(async () => {
    await srv?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a user created with dittofsctl logs in at once; a wrong password is refused and logged at info', async () => {
    await ctlOk(['user', 'create', '--username', CAROL, '--uid', '1201', '--no-must-change-password'], `${CAROL_PASSWORD}\n`);
    await ctlOk(['share', 'permission', 'grant', '/export', '--user', CAROL, '--level', 'read-write']);
    await assertLogsIn(CAROL, CAROL_PASSWORD);
    await assertRefused(CAROL, 'not-her-password');
    // The server's log line reaches this process on its own pipe, maybe after the SMB reply.
    const logged = (): boolean =>
      logLines('SMB logon refused').some((l) => l.level === 'info' && /carol.*wrong password/.test(String(l.message)));
    await until(logged, LOG_WAIT_MS, 'the refused logon in the server log').catch(() => undefined);
    const refused = logLines('SMB logon refused');
    assert.ok(logged(), JSON.stringify(refused));
  });

  it('a new password works at once and the old one is refused', async () => {
    await ctlOk(['user', 'update', CAROL, '--password', CAROL_NEW_PASSWORD, '--no-must-change-password']);
    await assertLogsIn(CAROL, CAROL_NEW_PASSWORD);
    await assertRefused(CAROL, CAROL_PASSWORD);
  });

  it('a user without an SMB password (--no-password) is refused', async () => {
    await ctlOk(['user', 'create', 'nopass', '--uid', '1202', '--no-password']);
    await ctlOk(['share', 'permission', 'grant', '/export', '--user', 'nopass', '--level', 'read-write']);
    await assertRefused('nopass', '');
    await assertRefused('nopass', 'anything-at-all');
  });

  it('a deleted user is refused at the next logon', async () => {
    await ctlOk(['user', 'delete', CAROL]);
    await assertRefused(CAROL, CAROL_NEW_PASSWORD);
    const logged = (): boolean => logLines('SMB logon refused').some((l) => /no such user/.test(String(l.message)));
    await until(logged, LOG_WAIT_MS, 'the refused logon in the server log').catch(() => undefined);
    assert.ok(logged(), JSON.stringify(logLines('SMB logon refused')));
  });
});
