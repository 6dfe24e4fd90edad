// Several DittoFS servers on one store for SMB (and NFS) tests: a private PostgreSQL (metadata and
// the control database), an S3 peer, a Redis, and servers started on one configuration; the clients
// made through it are closed with it.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { writeConfig } from '../fault/support.js';
import { NfsOps } from './nfs-ops.js';
import { postgresForTests, type PostgresInstance } from './postgres.js';
import { startRedis, type RedisInstance } from './redis.js';
import { replicaConfig } from './replicas.js';
import { authSys } from './rpc-client.js';
import { startS3, type S3TestServer } from './s3.js';
import { startDittofs, type DittofsProcess } from './server.js';
import { RawSmbClient } from './smb-raw.js';

export interface ClusterUser {
  username: string;
  password: string;
  uid: number;
  gid: number;
}

export class SmbCluster {
  pgi!: PostgresInstance;
  s3!: S3TestServer;
  redis!: RedisInstance;
  work = '';
  configFile = '';
  private readonly servers: DittofsProcess[] = [];
  private readonly clients: RawSmbClient[] = [];
  private readonly nfsClients: NfsOps[] = [];

  /** `name` names the work directory; `user` logs on through smb() and nfs(). */
  constructor(
    private readonly name: string,
    private readonly user: ClusterUser,
  ) {}

  /** Starts PostgreSQL, S3 and Redis and writes the servers' configuration (the API on, its database in PostgreSQL). */
  async open(): Promise<void> {
    [this.pgi, this.s3, this.redis] = await Promise.all([postgresForTests(), startS3(), startRedis()]);
    this.work = await mkdtemp(path.join(os.tmpdir(), `dittofs-${this.name}-`));
    this.configFile = await writeConfig(this.work, replicaConfig(this.pgi, this.s3, this.redis, { controlDatabase: true }));
  }

  /** A server with its data dir `name` under the work directory (info logs: some tests read them). */
  async start(name: string, config = this.configFile): Promise<DittofsProcess> {
    const s = await startDittofs({
      configFile: config,
      dataDir: path.join(this.work, name),
      env: { DITTOFS_BLOCKS__STORES__S3__SECRET_ACCESS_KEY: this.s3.secretAccessKey, DITTOFS_LOG_LEVEL: 'info' },
    });
    this.servers.push(s);
    return s;
  }

  /** An SMB client of `s`, logged on as the user, tree connected to `export`. */
  async smb(s: DittofsProcess): Promise<RawSmbClient> {
    const c = await RawSmbClient.connect(s.smbPort);
    this.clients.push(c);
    await c.login(this.user.username, this.user.password, 'export');
    return c;
  }

  /** An NFS client of `s` as the user's uid and gid, and the handle of /export. */
  async nfs(s: DittofsProcess): Promise<{ c: NfsOps; root: Buffer }> {
    const c = await NfsOps.open(s.nfsPort, authSys(this.user.uid, this.user.gid));
    this.nfsClients.push(c);
    return { c, root: await c.mount('/export') };
  }

  async close(): Promise<void> {
    for (const c of this.clients) c.destroy();
    for (const c of this.nfsClients) c.close();
    for (const s of this.servers) await s.stop().catch(() => undefined);
    await Promise.all([this.redis?.stop(), this.s3?.close(), this.pgi?.stop()]);
    if (this.work) await rm(this.work, { recursive: true, force: true });
  }
}
