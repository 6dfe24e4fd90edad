// The files in config/examples/ run as written (paths and secrets from the environment, as their
// comments say) against real services: a private PostgreSQL cluster and s3rver. A real NFS client
// (nfs-cp) writes a file and reads it back, across a server restart.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { COMMAND_TIMEOUT_MS, SUITE_TIMEOUT_MS } from '../helpers/limits.js';
import { postgresForTests, type PostgresInstance } from '../helpers/postgres.js';
import { startS3, type S3TestServer } from '../helpers/s3.js';
import { REPO_ROOT, startDittofs } from '../helpers/server.js';

const MiB = 1024 * 1024;
const SIZE = 48 * MiB;

function nfsCp(from: string, to: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('nfs-cp', [from, to], { timeout: COMMAND_TIMEOUT_MS, killSignal: 'SIGKILL' }, (err, _out, stderr) =>
      err ? reject(new Error(`nfs-cp ${from} ${to}: ${err.message} ${stderr}`)) : resolve(),
    );
  });
}

const sha = async (file: string): Promise<string> =>
  createHash('sha256')
    .update(await readFile(file))
    .digest('hex');

describe('config/examples against real services', { timeout: SUITE_TIMEOUT_MS }, () => {
  let work = '';
  let src = '';
  let srcSha = '';
  let pg: PostgresInstance | undefined;
  let s3: S3TestServer | undefined;

  before(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'dittofs-examples-'));
    src = path.join(work, 'src.bin');
    const data = Buffer.allocUnsafe(SIZE);
    randomFillSync(data);
    await writeFile(src, data);
    srcSha = await sha(src);
  });

  after(async () => {
    await pg?.stop();
    await s3?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** Starts the example with `env`, copies the file in and out, restarts, reads it again. */
  async function roundTrip(example: string, env: Record<string, string>): Promise<void> {
    const dataDir = path.join(work, example);
    const configFile = path.join(REPO_ROOT, 'config', 'examples', example);
    const opts = { configFile, dataDir, keepDataDir: true, env: { DITTOFS_WAL_DIR: path.join(dataDir, 'wal'), ...env } };
    let server = await startDittofs(opts);
    try {
      const url = (port: number) => `nfs://127.0.0.1/export/file.bin?nfsport=${port}&mountport=${port}`;
      await nfsCp(src, url(server.nfsPort));
      const back = path.join(work, `${example}.back`);
      await nfsCp(url(server.nfsPort), back);
      assert.equal(await sha(back), srcSha, `${example}: read back`);
      await server.stop();
      server = await startDittofs(opts);
      await rm(back, { force: true });
      await nfsCp(url(server.nfsPort), back);
      assert.equal(await sha(back), srcSha, `${example}: read back after a restart`);
      await rm(back, { force: true });
    } finally {
      await server.stop();
    }
  }

  it('embedded-filesystem.yaml', async () => {
    const dir = path.join(work, 'embedded-filesystem.yaml');
    await roundTrip('embedded-filesystem.yaml', {
      DITTOFS_METADATA__STORES__LOCAL__PATH: path.join(dir, 'metadata'),
      DITTOFS_BLOCKS__STORES__LOCAL__PATH: path.join(dir, 'blocks'),
    });
  });

  it('postgres-s3.yaml: the blocks land in the bucket', async () => {
    pg = await postgresForTests();
    s3 = await startS3();
    await roundTrip('postgres-s3.yaml', {
      DITTOFS_METADATA__STORES__PG__URL: pg.url,
      DITTOFS_BLOCKS__STORES__S3__ENDPOINT: s3.endpoint,
      DITTOFS_BLOCKS__STORES__S3__BUCKET: s3.bucket,
      DITTOFS_BLOCKS__STORES__S3__PREFIX: `${s3.prefix}examples`,
      DITTOFS_BLOCKS__STORES__S3__REGION: s3.region,
      DITTOFS_BLOCKS__STORES__S3__ACCESS_KEY_ID: s3.accessKeyId,
      DITTOFS_BLOCKS__STORES__S3__SECRET_ACCESS_KEY: s3.secretAccessKey,
    });
    // 48 MiB in 4 MiB blocks; a clean stop leaves data in the WAL, but the blocks were complete,
    // so each was uploaded as soon as it was written.
    assert.equal((await s3.listKeys('examples/')).length, SIZE / (4 * MiB));
  });
});
