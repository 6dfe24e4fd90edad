// The DittoFS configurations the benchmark runs, their YAML, and the shared services behind them.
//
//   embedded-fs  embedded metadata (SQLite in the data dir) + filesystem block store: the default
//   pglite-fs    the same on the former embedded engine, PGlite (engine: pglite), for comparison
//   postgres-s3  postgres metadata (a private PostgreSQL cluster, test/helpers/postgres.ts) +
//                s3 block store (force_path_style) on versitygw on loopback (versitygw.ts), or on
//                s3rver (test/helpers/s3.ts) where it is not built or --s3-server s3rver asks
//
// Both keep the WAL in <data dir>/wal (the default, cache.wal_dir unset). PostgreSQL and S3 are
// started once per run; each round gets a schema and a key prefix of its own (dropped / deleted
// after the round), so no round sees another's data.
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { DeleteObjectCommand, S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import { stringify } from 'yaml';
import { postgresForTests, type PostgresInstance } from '../helpers/postgres.js';
import { externalS3Endpoint, startS3, type S3TestServer } from '../helpers/s3.js';
import { findVersitygw, startVersitygw, versitygwBinaryPath } from './versitygw.js';

export const DITTO_CONFIGS = ['embedded-fs', 'pglite-fs', 'postgres-s3'] as const;
export type DittoConfigName = (typeof DITTO_CONFIGS)[number];

/** The export every configuration serves (and ganesha too). */
export const EXPORT_PATH = '/export';

/** The S3 server of postgres-s3: versitygw where hack/s3/build-versitygw.sh built it, else s3rver. */
export const S3_SERVERS = ['auto', 'versitygw', 's3rver'] as const;
export type S3ServerChoice = (typeof S3_SERVERS)[number];

export interface Backends {
  pg: PostgresInstance | undefined;
  s3: S3TestServer | undefined;
  /** What serves S3: "versitygw <version> (posix backend)", "s3rver" or "external <endpoint>". */
  s3Name: string;
  /** Its short name in the tables' column heads: "versitygw", "s3rver" or "external S3". */
  s3Short: string;
  /** Unique per run, part of every schema name and key prefix. */
  runId: string;
}

/** Where one round of one configuration keeps its data: a fresh schema and key prefix. */
export interface RoundPlace {
  /** PostgreSQL schema (postgres-s3 only). */
  schema?: string;
  /** Prefix of the s3 store as configured (postgres-s3 only), without the helper's own prefix. */
  prefix?: string;
}

export function newRunId(): string {
  return `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
}

export function needsBackends(configs: readonly string[]): boolean {
  return configs.includes('postgres-s3');
}

/**
 * Starts PostgreSQL (a private cluster, or DITTOFS_TEST_PG_URL) and S3: DITTOFS_TEST_S3_ENDPOINT
 * when set, else versitygw (as hack/s3/build-versitygw.sh built it) unless `s3Server` is
 * 's3rver' or (with 'auto') it is not built, else s3rver. `onStarted` receives each stop function
 * as soon as the service is up, so that the caller's cleanup registry can stop it whatever happens
 * next.
 */
export async function startBackends(
  runId: string,
  onStarted: (what: string, stop: () => Promise<void>) => void,
  log: (msg: string) => void,
  s3Server: S3ServerChoice = 'auto',
): Promise<Backends> {
  const t0 = Date.now();
  const pgInst = await postgresForTests();
  onStarted('stop PostgreSQL', () => pgInst.stop());
  log(`PostgreSQL ${pgInst.external ? '(external, DITTOFS_TEST_PG_URL)' : '(private cluster)'} up in ${secs(t0)}`);
  const t1 = Date.now();
  const bucket = 'dittofs-bench';
  const vgw = s3Server === 's3rver' || externalS3Endpoint() !== undefined ? undefined : findVersitygw();
  if (s3Server === 'versitygw' && vgw === undefined) {
    throw new Error(
      externalS3Endpoint() !== undefined
        ? '--s3-server versitygw: DITTOFS_TEST_S3_ENDPOINT is set (the bench uses that endpoint)'
        : `--s3-server versitygw: ${versitygwBinaryPath()} is missing (hack/install-deps.sh bench builds it)`,
    );
  }
  let s3: S3TestServer;
  let s3Name: string;
  let s3Short: string;
  if (vgw !== undefined) {
    const v = await startVersitygw(vgw, { bucket });
    [s3, s3Name, s3Short] = [v, v.description, 'versitygw'];
  } else {
    s3 = await startS3({ bucket });
    [s3Name, s3Short] = s3.external ? [`external ${s3.endpoint}`, 'external S3'] : ['s3rver', 's3rver'];
  }
  onStarted('stop S3', () => s3.close());
  const why = s3.external
    ? ' (DITTOFS_TEST_S3_ENDPOINT)'
    : vgw === undefined && s3Server === 'auto'
      ? ` (${versitygwBinaryPath()} not built)`
      : '';
  log(`S3: ${s3Name}${why} at ${s3.endpoint}, bucket ${s3.bucket}, up in ${secs(t1)}`);
  return { pg: pgInst, s3, s3Name, s3Short, runId };
}

function secs(since: number): string {
  return `${((Date.now() - since) / 1000).toFixed(1)} s`;
}

export function roundPlace(config: DittoConfigName, b: Backends, round: number): RoundPlace {
  if (config === 'embedded-fs' || config === 'pglite-fs') return {};
  return { schema: `bench_${b.runId}_r${round}`, prefix: `bench-${b.runId}-r${round}` };
}

/**
 * The YAML configuration of `config`, written as dir/NAME.yaml; returns the file's path. `extra`
 * adds top-level sections (the replicas benchmark: coordination, the API off).
 */
export async function writeDittoConfig(
  dir: string,
  name: string,
  config: DittoConfigName,
  dataDir: string,
  place: RoundPlace,
  b: Backends | undefined,
  extra: Record<string, unknown> = {},
): Promise<string> {
  let metadata: Record<string, unknown>;
  let blocks: Record<string, unknown>;
  switch (config) {
    case 'embedded-fs':
      // The built-in defaults, spelled out: <data_dir>/metadata/meta and <data_dir>/blocks/data.
      metadata = { meta: { type: 'embedded' } };
      blocks = { data: { type: 'filesystem', block_size: '4MiB' } };
      break;
    case 'pglite-fs':
      metadata = { meta: { type: 'embedded', engine: 'pglite' } };
      blocks = { data: { type: 'filesystem', block_size: '4MiB' } };
      break;
    case 'postgres-s3': {
      if (!b?.pg || !b.s3 || place.schema === undefined || place.prefix === undefined) {
        throw new Error('postgres-s3 needs PostgreSQL and S3 started, and a schema and prefix for the round');
      }
      metadata = { meta: { type: 'postgres', url: b.pg.url, schema: place.schema } };
      blocks = {
        data: {
          type: 's3',
          block_size: '4MiB',
          endpoint: b.s3.endpoint,
          region: b.s3.region,
          bucket: b.s3.bucket,
          prefix: b.s3.prefix + place.prefix,
          force_path_style: true,
          access_key_id: b.s3.accessKeyId,
          secret_access_key: b.s3.secretAccessKey,
        },
      };
      break;
    }
  }
  const doc = {
    data_dir: dataDir,
    // cache.wal_dir is left out: the WAL is <data_dir>/wal.
    cache: { wal_max_bytes: '1GiB' },
    metadata: { stores: metadata },
    blocks: { stores: blocks },
    shares: [{ name: EXPORT_PATH, metadata: 'meta', blocks: 'data' }],
    ...extra,
  };
  const file = path.join(dir, `${name}.yaml`);
  const header = `# DittoFS benchmark configuration "${config}" (test/bench/backends.ts)\n`;
  // 0600: it may hold S3 credentials.
  await writeFile(file, header + stringify(doc), { mode: 0o600 });
  return file;
}

/** Keys the s3 store of a round wrote (relative to the helper's prefix), or undefined without S3. */
export async function roundKeys(b: Backends, place: RoundPlace): Promise<string[] | undefined> {
  if (!b.s3 || place.prefix === undefined) return undefined;
  return b.s3.listKeys(`${place.prefix}/`);
}

/** Drops the round's schema and deletes its objects; best effort, returns what went wrong. */
export async function cleanRound(b: Backends, place: RoundPlace): Promise<string[]> {
  const problems: string[] = [];
  if (b.pg && place.schema !== undefined) {
    const client = new pg.Client({ connectionString: b.pg.url, connectionTimeoutMillis: 10_000 });
    try {
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS ${place.schema} CASCADE`);
    } catch (e) {
      problems.push(`drop schema ${place.schema}: ${(e as Error).message}`);
    } finally {
      await client.end().catch(() => undefined);
    }
  }
  if (b.s3 && place.prefix !== undefined) {
    const s3 = b.s3;
    const client = new S3Client({
      endpoint: s3.endpoint,
      region: s3.region,
      forcePathStyle: true,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
      maxAttempts: 2,
    });
    try {
      const keys = await s3.listKeys(`${place.prefix}/`);
      // One DeleteObject per key, 8 at a time (plain calls every S3-compatible server has).
      let next = 0;
      const worker = async () => {
        while (next < keys.length) {
          const key = keys[next++]!;
          await client.send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: s3.prefix + key }));
        }
      };
      await Promise.all(Array.from({ length: 8 }, worker));
    } catch (e) {
      problems.push(`delete s3://${s3.bucket}/${s3.prefix}${place.prefix}/: ${(e as Error).message}`);
    } finally {
      client.destroy();
    }
  }
  return problems;
}

/** Commits the PostgreSQL probe times (after a warm-up of a tenth as many). */
const COMMIT_PROBE_COMMITS = 2000;

/**
 * The most durable commits per second PostgreSQL gives one client here, one at a time: each
 * commit one statement that updates a row and inserts one (the least a CREATE must do: the
 * directory and its new entry), synchronous_commit on as DittoFS uses it, in a scratch schema
 * dropped after. A CREATE through DittoFS adds an NFS round trip and its own work to this, so
 * the postgres create target cannot be met above it: the row prints it beside the target.
 */
export async function pgCommitCeiling(b: Backends): Promise<number | undefined> {
  if (!b.pg) return undefined;
  const schema = `dfs_bench_probe_${b.runId}`;
  const client = new pg.Client({ connectionString: b.pg.url, connectionTimeoutMillis: 10_000 });
  try {
    await client.connect();
    await client.query(`CREATE SCHEMA ${schema}`);
    await client.query(`CREATE TABLE ${schema}.d (id bigint PRIMARY KEY, n bigint NOT NULL)`);
    await client.query(`CREATE TABLE ${schema}.e (parent bigint NOT NULL, name bytea NOT NULL, PRIMARY KEY (parent, name))`);
    await client.query(`INSERT INTO ${schema}.d VALUES (1, 0)`);
    const text = `WITH u AS (UPDATE ${schema}.d SET n = n + 1 WHERE id = 1 RETURNING n) INSERT INTO ${schema}.e SELECT 1, $1::bytea FROM u`;
    const commit = (name: string) => client.query({ name: 'probe', text, values: [Buffer.from(name)] });
    for (let i = 0; i < COMMIT_PROBE_COMMITS / 10; i++) await commit(`w${i}`);
    const t0 = performance.now();
    for (let i = 0; i < COMMIT_PROBE_COMMITS; i++) await commit(`f${i}`);
    return COMMIT_PROBE_COMMITS / ((performance.now() - t0) / 1000);
  } finally {
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
    await client.end().catch(() => undefined);
  }
}
