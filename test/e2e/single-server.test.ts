// One server per store until replicas coordinate (issue 14): two real server processes on one
// PostgreSQL metadata store (or one PostgreSQL control database) and a real NFS client (nfs-cp).
// The second refuses to start, saying why and what to configure, without the URL's password; the
// first keeps serving throughout; the second starts once the first has stopped.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { postgresForTests, type PostgresInstance } from '../helpers/postgres.js';
import { DITTOFS_CLI, REPO_ROOT, TEST_ADMIN_PASSWORD, freePort, startDittofs, type DittofsProcess } from '../helpers/server.js';
import { READY_TIMEOUT_MS } from '../helpers/limits.js';

const PASSWORD = 'not-in-any-message-7431';
/** A first start creates its embedded databases: minutes on a loaded machine. */
const START_TIMEOUT_MS = READY_TIMEOUT_MS;

function nfsCp(from: string, to: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('nfs-cp', [from, to], { timeout: 120_000, killSignal: 'SIGKILL' }, (err, _out, stderr) =>
      err ? reject(new Error(`nfs-cp ${from} ${to}: ${err.message} ${stderr}`)) : resolve(),
    );
  });
}

/** Runs `dittofs start` expecting it to fail: its exit code and everything it printed. */
function startExpectingFailure(configFile: string, dataDir: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    void Promise.all([freePort(), freePort(), freePort()]).then(([nfs, api, metrics]) => {
      const child = spawn(process.execPath, [DITTOFS_CLI, 'start', '--config', configFile], {
        cwd: REPO_ROOT,
        env: {
          ...process.env,
          DITTOFS_DATA_DIR: dataDir,
          DITTOFS_BIND_ADDRESS: '127.0.0.1',
          DITTOFS_NFS_PORT: String(nfs),
          DITTOFS_API_PORT: String(api),
          DITTOFS_METRICS_PORT: String(metrics),
          DITTOFS_SMB_ENABLED: 'false',
          DITTOFS_LOG_LEVEL: 'warn',
          DITTOFS_ADMIN_INITIAL_PASSWORD: TEST_ADMIN_PASSWORD,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      child.stdout.on('data', (d: Buffer) => (output += d.toString()));
      child.stderr.on('data', (d: Buffer) => (output += d.toString()));
      const t = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`the second server was still running after ${START_TIMEOUT_MS} ms (it should have refused to start)\n${output}`));
      }, START_TIMEOUT_MS);
      child.once('exit', (code) => {
        clearTimeout(t);
        resolve({ code, output });
      });
    }, reject);
  });
}

describe('one server per PostgreSQL store', { timeout: 1_200_000 }, () => {
  let pg: PostgresInstance | undefined;
  let work = '';
  let src = '';
  let url = '';

  before(async () => {
    pg = await postgresForTests();
    // The private cluster trusts local connections: a password in the URL is accepted and unused,
    // which is enough to see that no message prints it.
    const u = new URL(pg.url);
    u.password = PASSWORD;
    url = u.toString();
    work = await mkdtemp(path.join(os.tmpdir(), 'dittofs-single-'));
    src = path.join(work, 'src.bin');
    const data = Buffer.allocUnsafe(3 * 1024 * 1024 + 17);
    randomFillSync(data);
    await writeFile(src, data);
  });
  after(async () => {
    await pg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  let n = 0;
  /** Writes `src` through the server and reads it back, byte for byte. */
  async function roundTrip(server: DittofsProcess): Promise<void> {
    const nfsUrl = `nfs://127.0.0.1/export/f${++n}.bin?nfsport=${server.nfsPort}&mountport=${server.nfsPort}`;
    const back = path.join(work, `back${n}.bin`);
    await nfsCp(src, nfsUrl);
    await nfsCp(nfsUrl, back);
    assert.ok((await readFile(back)).equals(await readFile(src)), 'read back what was written');
    await rm(back);
  }

  async function twoServers(name: string, yaml: string, expected: RegExp, diagnostic: (msg: string) => void): Promise<void> {
    const dir = path.join(work, name);
    await mkdir(dir, { recursive: true });
    const configFile = path.join(dir, 'dittofs.yaml');
    await writeFile(configFile, yaml);
    const first = await startDittofs({ configFile, dataDir: path.join(dir, 'a'), keepDataDir: true, startTimeoutMs: START_TIMEOUT_MS });
    let second: DittofsProcess | undefined;
    try {
      await roundTrip(first);
      const refused = await startExpectingFailure(configFile, path.join(dir, 'b'));
      assert.equal(refused.code, 1, refused.output);
      diagnostic(refused.output.split('\n').find((l) => l.includes('failed to start')) ?? refused.output);
      assert.match(refused.output, expected);
      assert.match(refused.output, /is already served by another DittoFS process \(advisory lock -?\d+ held by \S+/);
      assert.match(refused.output, /coordination\.redis/);
      assert.ok(!refused.output.includes(PASSWORD), `the password is not printed:\n${refused.output}`);
      // The first one never stopped serving.
      await roundTrip(first);
      await first.stop();
      second = await startDittofs({ configFile, dataDir: path.join(dir, 'b'), keepDataDir: true, startTimeoutMs: START_TIMEOUT_MS });
      await roundTrip(second);
    } finally {
      await first.stop();
      await second?.stop();
    }
  }

  it('a second server on the same metadata store refuses to start; it starts once the first stopped', async (t) => {
    await twoServers(
      'metadata',
      `metadata:
  stores:
    meta:
      type: postgres
      url: ${JSON.stringify(url)}
      schema: single_meta
blocks:
  stores:
    disk:
      type: filesystem
      path: ${JSON.stringify(path.join(work, 'metadata', 'blocks'))}
shares:
  - name: /export
    metadata: meta
    blocks: disk
`,
      /failed to start: metadata store meta \(postgres postgres@127\.0\.0\.1:\d+\/\w+, schema single_meta\)/,
      (m) => t.diagnostic(m),
    );
  });

  it('a second server on the same control database refuses to start', async (t) => {
    await twoServers(
      'control',
      `database:
  type: postgres
  url: ${JSON.stringify(url)}
  schema: single_control
metadata:
  stores:
    meta:
      type: embedded
blocks:
  stores:
    disk:
      type: filesystem
shares:
  - name: /export
    metadata: meta
    blocks: disk
`,
      /failed to start: the control database \(postgres postgres@127\.0\.0\.1:\d+\/\w+, schema single_control\)/,
      (m) => t.diagnostic(m),
    );
  });
});
