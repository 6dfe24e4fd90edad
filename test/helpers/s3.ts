// An S3-protocol server for tests. By default a private s3rver (hack/s3/s3rver.mts) as a child
// process on 127.0.0.1 with a temp directory: stop() and start() take it down and bring it back on
// the same port and directory (an outage), close() stops it and removes the directory. With
// DITTOFS_TEST_S3_ENDPOINT set, the same tests run against that server (MinIO, AWS, ...) in a fresh
// bucket, or under a fresh prefix of DITTOFS_TEST_S3_BUCKET; close() removes what the test wrote.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  ListObjectsV2Command,
  S3Client,
  type BucketLocationConstraint,
} from '@aws-sdk/client-s3';
import type { S3BlockStoreOptions } from '../../server/src/blocks/s3.js';
import { READY_TIMEOUT_MS } from './limits.js';
import { onProcessExit } from './exit.js';

// The AWS SDK's notice about its future Node.js requirement is noise in test output (the server
// turns it off the same way, in its CLI entry point).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const LAUNCHER = path.join(REPO_ROOT, 'hack', 's3', 's3rver.mts');

export const EXTERNAL_S3_ENV = Object.freeze({
  ENDPOINT: 'DITTOFS_TEST_S3_ENDPOINT',
  ACCESS_KEY_ID: 'DITTOFS_TEST_S3_ACCESS_KEY_ID',
  SECRET_ACCESS_KEY: 'DITTOFS_TEST_S3_SECRET_ACCESS_KEY',
  REGION: 'DITTOFS_TEST_S3_REGION',
  BUCKET: 'DITTOFS_TEST_S3_BUCKET',
} as const);

/** s3rver's one account; it checks the key id but not the signature, so any secret passes. */
export const S3RVER_CREDENTIALS = Object.freeze({ accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' });

/** The external endpoint the tests should use instead of s3rver, if any. */
export function externalS3Endpoint(): string | undefined {
  const e = process.env[EXTERNAL_S3_ENV.ENDPOINT];
  return e === undefined || e === '' ? undefined : e;
}

export interface S3TestServer {
  /** `http://127.0.0.1:PORT` for s3rver. */
  endpoint: string;
  bucket: string;
  /** Key prefix reserved for this test ('' in a bucket of its own). Stores should use it. */
  prefix: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** True for DITTOFS_TEST_S3_ENDPOINT: stop() and start() are not available. */
  external: boolean;
  /** The s3rver process while it runs (benchmarks count its CPU); undefined when stopped, or external. */
  pid(): number | undefined;
  /**
   * Options for an S3BlockStore on this server, bucket and prefix included; `extra` overrides them,
   * except `extra.prefix`, which is placed under this test's prefix.
   */
  storeOptions(extra?: Partial<S3BlockStoreOptions>): S3BlockStoreOptions;
  /** Keys under this test's prefix (and `prefix`), sorted, without this test's prefix. */
  listKeys(prefix?: string): Promise<string[]>;
  /** Kills the server (open connections drop); its port and objects are kept for start(). */
  stop(): Promise<void>;
  /** Starts a stopped server again on the same port and directory. */
  start(): Promise<void>;
  /** Stops the server and removes its directory (or, external, this test's objects). Idempotent. */
  close(): Promise<void>;
}

export interface StartS3Options {
  /** Bucket name for s3rver (default `dittofs-test`); external endpoints get a unique one unless DITTOFS_TEST_S3_BUCKET is set. */
  bucket?: string;
  /** Bound for the server to print its ready line (default 30 s). */
  startTimeoutMs?: number;
}

/** S3BlockStore options for a server (path-style), `extra.prefix` placed under the test's prefix. */
export function storeOptions(
  base: { endpoint: string; region: string; bucket: string; prefix: string; accessKeyId: string; secretAccessKey: string },
  extra: Partial<S3BlockStoreOptions>,
): S3BlockStoreOptions {
  // Path-style: s3rver and MinIO need it, AWS still accepts it.
  return { ...base, forcePathStyle: true, ...extra, prefix: base.prefix + (extra.prefix ?? '') };
}

const live = new Set<ChildProcess>();
let exitHook = false;
function installExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  onProcessExit(() => {
    for (const child of live) child.kill('SIGKILL');
  });
}

/** An SDK client for a test server's own calls (bucket creation, listing, clean-up). */
export function adminClient(endpoint: string, region: string, accessKeyId: string, secretAccessKey: string): S3Client {
  return new S3Client({ endpoint, region, forcePathStyle: true, credentials: { accessKeyId, secretAccessKey }, maxAttempts: 2 });
}

/** Every key of `bucket` under `prefix`, sorted. */
export async function listAll(client: S3Client, bucket: string, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  // Bounded: 1000 pages of 1000 keys is far beyond what any test writes.
  for (let page = 0; page < 1000; page++) {
    const res = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of res.Contents ?? []) if (o.Key !== undefined) keys.push(o.Key);
    if (res.IsTruncated !== true || res.NextContinuationToken === undefined) return keys.sort();
    token = res.NextContinuationToken;
  }
  throw new Error(`listing s3://${bucket}/${prefix} did not end after 1000 pages`);
}

/** Spawns the launcher and resolves with the port it reports ready on. */
function launch(port: number, dir: string, bucket: string, timeoutMs: number): Promise<{ child: ChildProcess; port: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', LAUNCHER, String(port), dir, bucket], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    live.add(child);
    let out = '';
    let err = '';
    const fail = (why: string): void => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`s3rver (hack/s3/s3rver.mts ${port} ${dir}) ${why}${err.trim() === '' ? '' : `:\n${err.trim()}`}`));
    };
    const timer = setTimeout(() => fail(`printed no ready line within ${timeoutMs} ms`), timeoutMs);
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      const m = /s3rver ready http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m?.[1] !== undefined) {
        clearTimeout(timer);
        resolve({ child, port: Number(m[1]) });
      }
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      err = (err + chunk).slice(-4000);
    });
    child.once('exit', (code, signal) => {
      live.delete(child);
      fail(`exited (${signal ?? `code ${code}`})`);
    });
    child.once('error', (e) => fail(`could not be spawned: ${e.message}`));
  });
}

/** SIGTERM, then SIGKILL after `graceMs`; settles once the process exited. */
export async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/**
 * The S3TestServer of a server process of this machine (s3rver, the bench's versitygw) running as
 * `child`, its objects in `dir`: stop() kills it (the directory kept), start() runs `launch` again,
 * close() stops it and removes `dir` and `admin`.
 */
export function localS3Server(o: {
  name: string;
  endpoint: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  dir: string;
  admin: S3Client;
  child: ChildProcess;
  launch: () => Promise<ChildProcess>;
  stop: (child: ChildProcess) => Promise<void>;
}): S3TestServer {
  const { name, endpoint, bucket, accessKeyId, secretAccessKey, region, dir, admin } = o;
  let child: ChildProcess | undefined = o.child;
  let closed = false;
  return {
    endpoint,
    bucket,
    prefix: '',
    accessKeyId,
    secretAccessKey,
    region,
    external: false,
    pid: () => child?.pid,
    storeOptions: (extra = {}) => storeOptions({ endpoint, region, bucket, prefix: '', accessKeyId, secretAccessKey }, extra),
    listKeys: (prefix = '') => listAll(admin, bucket, prefix),
    async stop() {
      if (closed) throw new Error(`${name} was closed`);
      if (child !== undefined) await o.stop(child);
      child = undefined;
    },
    async start() {
      if (closed) throw new Error(`${name} was closed`);
      if (child === undefined) child = await o.launch();
    },
    async close() {
      if (closed) return;
      closed = true;
      admin.destroy();
      try {
        if (child !== undefined) await o.stop(child);
      } finally {
        child = undefined;
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}

async function startS3rver(opts: StartS3Options): Promise<S3TestServer> {
  installExitHook();
  const bucket = opts.bucket ?? 'dittofs-test';
  const timeoutMs = opts.startTimeoutMs ?? READY_TIMEOUT_MS;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-s3-'));
  let child: ChildProcess | undefined;
  let port: number;
  try {
    ({ child, port } = await launch(0, dir, bucket, timeoutMs));
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
  const endpoint = `http://127.0.0.1:${port}`;
  const { accessKeyId, secretAccessKey } = S3RVER_CREDENTIALS;
  const region = 'us-east-1';
  const admin = adminClient(endpoint, region, accessKeyId, secretAccessKey);
  return localS3Server({
    name: 's3rver',
    endpoint,
    bucket,
    accessKeyId,
    secretAccessKey,
    region,
    dir,
    admin,
    child,
    launch: async () => (await launch(port, dir, bucket, timeoutMs)).child,
    stop: (c) => stopChild(c),
  });
}

async function useExternal(endpoint: string): Promise<S3TestServer> {
  const env = process.env;
  const region = env[EXTERNAL_S3_ENV.REGION] || 'us-east-1';
  const accessKeyId = env[EXTERNAL_S3_ENV.ACCESS_KEY_ID] ?? '';
  const secretAccessKey = env[EXTERNAL_S3_ENV.SECRET_ACCESS_KEY] ?? '';
  if (accessKeyId === '' || secretAccessKey === '') {
    throw new Error(
      `${EXTERNAL_S3_ENV.ENDPOINT} is set: set ${EXTERNAL_S3_ENV.ACCESS_KEY_ID} and ${EXTERNAL_S3_ENV.SECRET_ACCESS_KEY} too`,
    );
  }
  const admin = adminClient(endpoint, region, accessKeyId, secretAccessKey);
  const unique = `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
  const given = env[EXTERNAL_S3_ENV.BUCKET];
  const ownBucket = given === undefined || given === '';
  const bucket = ownBucket ? `dittofs-test-${unique}` : given;
  const prefix = ownBucket ? '' : `dittofs-test/${unique}/`;
  if (ownBucket) {
    await admin.send(
      new CreateBucketCommand({
        Bucket: bucket,
        ...(region === 'us-east-1' ? {} : { CreateBucketConfiguration: { LocationConstraint: region as BucketLocationConstraint } }),
      }),
    );
  }
  let closed = false;
  const unavailable = (what: string) => async (): Promise<void> => {
    throw new Error(`cannot ${what} the external S3 endpoint named by ${EXTERNAL_S3_ENV.ENDPOINT}`);
  };
  return {
    endpoint,
    bucket,
    prefix,
    accessKeyId,
    secretAccessKey,
    region,
    external: true,
    pid: () => undefined,
    storeOptions: (extra = {}) => storeOptions({ endpoint, region, bucket, prefix, accessKeyId, secretAccessKey }, extra),
    listKeys: async (sub = '') => (await listAll(admin, bucket, prefix + sub)).map((k) => k.slice(prefix.length)),
    stop: unavailable('stop'),
    start: unavailable('start'),
    async close() {
      if (closed) return;
      closed = true;
      try {
        // Bounded: each round deletes up to 1000 keys; tests write far fewer than 100 rounds' worth.
        for (let round = 0; round < 100; round++) {
          const keys = await listAll(admin, bucket, prefix);
          if (keys.length === 0) break;
          await admin.send(
            new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.slice(0, 1000).map((Key) => ({ Key })), Quiet: true } }),
          );
        }
        if (ownBucket) await admin.send(new DeleteBucketCommand({ Bucket: bucket }));
      } finally {
        admin.destroy();
      }
    },
  };
}

/** The S3 server tests use: DITTOFS_TEST_S3_ENDPOINT when set, else a private s3rver. */
export async function startS3(opts: StartS3Options = {}): Promise<S3TestServer> {
  const external = externalS3Endpoint();
  return external === undefined ? startS3rver(opts) : useExternal(external);
}
