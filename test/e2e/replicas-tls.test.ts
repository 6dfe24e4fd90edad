// coordination.redis over TLS (issue 14: "URL, key prefix, TLS, password"): Debian's redis-server
// with a TLS port only and a self-signed certificate made by openssl for 127.0.0.1. Two DittoFS
// servers on one PostgreSQL store and one S3 bucket reach it through rediss:// and trust the
// certificate through NODE_EXTRA_CA_CERTS (how a private CA is given to Node); one that does not
// trust it refuses to start and says it cannot reach Redis.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, afterEach, before, describe, it } from 'node:test';
import { SUITE_TIMEOUT_MS } from '../helpers/limits.js';
import { NfsOps } from '../helpers/nfs-ops.js';
import { postgresForTests, type PostgresInstance } from '../helpers/postgres.js';
import { Prng, seedFrom } from '../helpers/prng.js';
import { startRedis, type RedisInstance } from '../helpers/redis.js';
import { NfsStat } from '../helpers/rpc-client.js';
import { startS3, type S3TestServer } from '../helpers/s3.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';
import { writeConfig } from '../fault/support.js';
import { replicaConfig, settlesTo, storeInconsistencies, writeCommit } from '../helpers/replicas.js';

const run = promisify(execFile);
const SEED = seedFrom('REPLICA_SEED');

describe('several replicas coordinated through Redis over TLS', { timeout: SUITE_TIMEOUT_MS }, () => {
  let pg: PostgresInstance;
  let s3: S3TestServer;
  let redis: RedisInstance;
  let work: string;
  let configFile: string;
  let certFile: string;
  const servers: DittofsProcess[] = [];
  const clients: NfsOps[] = [];

  const start = async (name: string, env: Record<string, string>): Promise<DittofsProcess> => {
    const s = await startDittofs({
      configFile,
      dataDir: path.join(work, name),
      api: false,
      env: { DITTOFS_BLOCKS__STORES__S3__SECRET_ACCESS_KEY: s3.secretAccessKey, DITTOFS_SMB_ENABLED: 'false', ...env },
    });
    servers.push(s);
    return s;
  };

  before(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'dittofs-replicas-tls-'));
    certFile = path.join(work, 'redis.crt');
    const keyFile = path.join(work, 'redis.key');
    await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      keyFile,
      '-out',
      certFile,
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ]);
    [pg, s3, redis] = await Promise.all([postgresForTests(), startS3(), startRedis({ tls: { certFile, keyFile } })]);
    assert.match(redis.url, /^rediss:\/\//);
    configFile = await writeConfig(work, replicaConfig(pg, s3, redis));
  });

  afterEach(async () => {
    assert.deepEqual(await storeInconsistencies(pg.url), []);
  });

  after(async () => {
    for (const c of clients) c.close();
    for (const s of servers) await s.stop().catch(() => undefined);
    await Promise.all([redis?.stop(), s3?.close(), pg?.stop()]);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('two servers that trust it coordinate over TLS: data committed through A reads back through B at once', async () => {
    const env = { NODE_EXTRA_CA_CERTS: certFile };
    const [a, b] = [await start('a', env), await start('b', env)];
    const ca = await NfsOps.open(a.nfsPort);
    const cb = await NfsOps.open(b.nfsPort);
    clients.push(ca, cb);
    const made = await ca.create(await ca.mount('/export'), 'over-tls.bin');
    assert.equal(made.status, NfsStat.OK);
    await cb.mount('/export');
    const data = new Prng(SEED).bytes(1024 * 1024);
    await writeCommit(ca, made.fh!, 0, data);
    assert.equal(await settlesTo(cb, made.fh!, data), 'equal', 'through B');
  });

  it('a server that does not trust the certificate refuses to start, naming Redis', async () => {
    await assert.rejects(start('untrusting', {}), (e: Error) => {
      assert.match(e.message, /coordination\.redis: cannot reach rediss:\/\/127\.0\.0\.1:\d+/);
      assert.match(e.message, /certificate/i);
      return true;
    });
  });
});
