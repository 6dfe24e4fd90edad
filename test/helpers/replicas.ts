// Several DittoFS servers on one store (issue 14) in tests: their config (one PostgreSQL metadata
// store, one S3 bucket, one Redis), NFS writes committed through one of them, reads that wait for
// the bytes to settle, a proxy that holds a server's uploads, and a consistency check of the
// PostgreSQL tables after a test.
import assert from 'node:assert/strict';
import net from 'node:net';
import pg from 'pg';
import { retryJukebox, statusName, type NfsOps } from './nfs-ops.js';
import type { PostgresInstance } from './postgres.js';
import type { RedisInstance } from './redis.js';
import { NfsStat, StableHow } from './rpc-client.js';
import type { S3TestServer } from './s3.js';

const MiB = 1024 * 1024;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** How long the bytes may take to reach the block store and show through both servers. */
const SETTLE_MS = 60_000;

/**
 * The servers' config. `controlDatabase`: the API on, its database a schema of the same PostgreSQL
 * (the servers share it: users added through one apply on all); otherwise the API off.
 */
export function replicaConfig(pg: PostgresInstance, s3: S3TestServer, redis: RedisInstance, { controlDatabase = false } = {}): string {
  const head = controlDatabase
    ? `database:
  type: postgres
  url: ${pg.url}
  schema: control
`
    : `server:
  api:
    enabled: false
`;
  return `${head}coordination:
  redis:
    url: ${redis.url}
    key_prefix: "replicas-test:"
    lease_ttl: 3s
metadata:
  stores:
    meta:
      type: postgres
      url: ${pg.url}
blocks:
  stores:
    s3:
      type: s3
      block_size: 4MiB
      endpoint: ${s3.endpoint}
      bucket: ${s3.bucket}
      prefix: ${s3.prefix}replicas
      region: ${s3.region}
      force_path_style: true
      access_key_id: ${s3.accessKeyId}
shares:
  - name: /export
    metadata: meta
    blocks: s3
`;
}

/** UNSTABLE WRITEs of `data` at `offset` in 256 KiB pieces, then a COMMIT (JUKEBOX retried). */
export async function writeCommit(c: NfsOps, fh: Buffer, offset: number, data: Buffer): Promise<void> {
  const chunk = 256 * 1024;
  for (let off = 0; off < data.length; off += chunk) {
    const w = await retryJukebox(() => c.writeV(fh, offset + off, data.subarray(off, off + chunk), StableHow.UNSTABLE), {
      maxWaitMs: 60_000,
    });
    assert.equal(w.status, NfsStat.OK, `WRITE at ${offset + off}: ${statusName(w.status)}`);
  }
  const r = await retryJukebox(() => c.commit(fh), { maxWaitMs: 60_000 });
  assert.equal(r.status, NfsStat.OK, `COMMIT: ${statusName(r.status)}`);
}

/**
 * A TCP proxy to the block store that holds every HTTP PUT (and whatever its connection sends after)
 * until release(): uploads wait, everything else goes through.
 */
export async function holdingProxy(target: string): Promise<{ endpoint: string; held: number; release(): void; close(): Promise<void> }> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<net.Socket>();
  const waiting: (() => void)[] = [];
  let holding = true;
  const state = {
    endpoint: '',
    held: 0,
    release() {
      holding = false;
      for (const w of waiting.splice(0)) w();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    sockets.add(client).add(upstream);
    let held: Buffer[] | null = null;
    client.on('data', (chunk: Buffer) => {
      if (held === null && holding && chunk.subarray(0, 4).toString('latin1') === 'PUT ') {
        held = [];
        state.held++;
        waiting.push(() => {
          for (const c of held ?? []) upstream.write(c);
          held = null;
        });
      }
      if (held !== null) held.push(chunk);
      else upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.endpoint = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return state;
}

/** The first differing MiB of `got` against `want`, for messages. */
export function firstDiff(got: Buffer, want: Buffer): string {
  if (got.length !== want.length) return `length ${got.length}, expected ${want.length}`;
  for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) return `first difference at byte ${i} (MiB ${Math.floor(i / MiB)})`;
  return 'equal';
}

/** Reads the file through `c` until it equals `want` (bounded); the last difference otherwise. */
export async function settlesTo(c: NfsOps, fh: Buffer, want: Buffer): Promise<string> {
  const deadline = Date.now() + SETTLE_MS;
  let last = '';
  while (Date.now() < deadline) {
    const attrs = await c.getattr(fh);
    if (attrs.status === NfsStat.OK && attrs.attrs?.size === want.length) {
      const got = await c.readAll(fh, want.length);
      if (got.equals(want)) return 'equal';
      last = firstDiff(got, want);
    } else {
      last = `size ${attrs.attrs?.size ?? statusName(attrs.status)}, expected ${want.length}`;
    }
    await sleep(500);
  }
  return last;
}

/**
 * Problems in the metadata tables of a store (empty: none): an inode no share root reaches (or a
 * directory cycle), a file whose nlink is not its number of names, a directory whose parent is not
 * the one that names it, a block row of a missing inode.
 */
export async function storeInconsistencies(url: string, schema = 'public'): Promise<string[]> {
  const client = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
  await client.connect();
  try {
    const problems: string[] = [];
    const q = async (what: string, sql: string): Promise<void> => {
      const { rows } = await client.query<{ id: string; detail: string | null }>(sql);
      for (const r of rows.slice(0, 20)) problems.push(`${what}: inode ${r.id}${r.detail ? ` (${r.detail})` : ''}`);
      if (rows.length > 20) problems.push(`${what}: ${rows.length - 20} more`);
    };
    // Down from every share root through the directory entries (UNION: a cycle ends the walk).
    await q(
      'not reachable from a share root',
      `WITH RECURSIVE reach(id) AS (SELECT root FROM share_roots UNION SELECT d.child FROM dirents d JOIN reach r ON d.parent = r.id)
       SELECT i.id::text AS id, 'nlink ' || i.nlink AS detail FROM inodes i
       WHERE i.id NOT IN (SELECT id FROM reach) AND i.id NOT IN (SELECT inode FROM streams) AND i.nlink > 0`,
    );
    await q(
      'nlink differs from its names',
      `SELECT i.id::text AS id, 'nlink ' || i.nlink || ', names ' || count(d.child) AS detail FROM inodes i
       LEFT JOIN dirents d ON d.child = i.id
       WHERE i.type <> 2 AND i.id NOT IN (SELECT inode FROM streams)
       GROUP BY i.id, i.nlink HAVING count(d.child) <> i.nlink`,
    );
    await q(
      'a directory named in another than its parent',
      `SELECT i.id::text AS id, 'parent ' || i.parent || ', named in ' || d.parent AS detail FROM inodes i JOIN dirents d ON d.child = i.id
       WHERE i.type = 2 AND d.parent <> i.parent`,
    );
    await q(
      'a block row of a missing inode',
      `SELECT DISTINCT b.inode::text AS id, NULL AS detail FROM blocks b LEFT JOIN inodes i ON i.id = b.inode WHERE i.id IS NULL`,
    );
    return problems;
  } finally {
    await client.end();
  }
}
