// Fault: the control database's fsync fails (a failing disk under the data directory's control/).
// The embedded (SQLite) control database then refuses all further work: no user, share or
// permission change and no SMB logon until a restart, which replays its WAL. Liveness must say so,
// so that Kubernetes restarts the pod; readiness names it; and a restart recovers everything that
// was answered before the failure. A real server process; the EIO is injected into its fdatasync
// by a preload (fail-fsync-on-signal.ts), armed with SIGUSR2 once the server is up.
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { adminLogin, apiRequest, takeOverAdmin, CHANGED_ADMIN_PASSWORD } from '../helpers/api.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';

const PRELOAD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fail-fsync-on-signal.ts');
/** Bound of each wait below (a busy machine is slow; each loop stops by itself). */
const WAIT_MS = 60_000;

async function health(base: string, url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await apiRequest<Record<string, unknown>>(base, 'GET', url);
  return { status: r.status, body: r.body };
}

describe('fault: the control database fsync fails', () => {
  const servers: DittofsProcess[] = [];
  after(async () => {
    for (const s of servers) await s.stop().catch(() => undefined);
    // Kept across the restart, so removed here.
    if (servers[0]) await rm(servers[0].dataDir, { recursive: true, force: true });
  });

  it('liveness answers 503 naming the control database, readiness fails it, and a restart recovers', async (t) => {
    let srv = await startDittofs({
      keepDataDir: true,
      env: { NODE_OPTIONS: `--import tsx --import "${PRELOAD}"`, DITTOFS_TEST_FAIL_FSYNC: `${path.sep}control${path.sep}` },
    });
    servers.push(srv);
    let base = `http://127.0.0.1:${srv.apiPort}`;
    const token = await takeOverAdmin(base);
    assert.equal((await health(base, '/health')).status, 200);

    // The disk fails under the control database: the next change's fsync reports EIO.
    srv.child.kill('SIGUSR2');
    const made = await apiRequest(
      base,
      'POST',
      '/api/v1/users',
      { username: 'during', password: 'during-Passw0rd', uid: 5000, gid: 5000 },
      token,
    );
    // Not answered as done, and not "see the log": 503 with why and what to do.
    assert.equal(made.status, 503, `a change whose fsync failed: ${JSON.stringify(made.body)}`);
    assert.match((made.body as { detail: string }).detail, /must be restarted .*control: .*fsync/);

    const live = await health(base, '/health');
    assert.equal(live.status, 503, JSON.stringify(live.body));
    assert.equal(live.body.status, 'failed');
    assert.match(String(live.body.detail), /^control: /);
    const ready = await health(base, '/health/ready');
    assert.equal(ready.status, 503);
    const checks = ready.body.checks as Record<string, { ok: boolean; detail?: string }>;
    assert.equal(checks.control?.ok, false, JSON.stringify(checks));
    // Only the control database failed: the shares' stores are fine.
    for (const [k, c] of Object.entries(checks)) if (k !== 'control') assert.equal(c.ok, true, `${k}: ${c.detail}`);
    t.diagnostic(`liveness: ${String(live.body.detail)}`);

    // What Kubernetes does on a failing liveness probe: a restart, on the same data.
    const dataDir = srv.dataDir;
    await srv.stop();
    srv = await startDittofs({ dataDir, keepDataDir: true });
    servers.push(srv);
    base = `http://127.0.0.1:${srv.apiPort}`;
    const deadline = Date.now() + WAIT_MS;
    while ((await health(base, '/health/ready')).status !== 200 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.equal((await health(base, '/health/ready')).status, 200, 'ready again after the restart');
    assert.equal((await health(base, '/health')).status, 200);
    // Answered before the failure: the admin's changed password.
    const login = await adminLogin(base, CHANGED_ADMIN_PASSWORD);
    assert.ok(login.token, `admin login after the restart: ${login.status} ${JSON.stringify(login.body)}`);
    // And the control plane takes changes again.
    const again = await apiRequest(
      base,
      'POST',
      '/api/v1/users',
      { username: 'after', password: 'after-Passw0rd1', uid: 5001, gid: 5001 },
      login.token,
    );
    assert.equal(again.status, 201, JSON.stringify(again.body));
  });
});
