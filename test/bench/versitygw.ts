// versitygw as the benchmark's S3 server: Versity's S3 gateway (Apache-2.0, one Go process) with
// its posix backend, objects as files in a private directory, on 127.0.0.1, one bucket.
//
// Why not s3rver, as the tests use: s3rver is JavaScript and spent more CPU per GiB written than
// DittoFS itself on the same two cores, so the postgres-s3 row measured s3rver more than DittoFS.
// (SeaweedFS's `weed mini` was tried first and spent more still: 10 s per GiB written, MD5 taken
// three times over a gateway, a volume server and loopback HTTP between them.) versitygw is built
// by hack/s3/build-versitygw.sh (hack/install-deps.sh bench) into a cache outside the repository;
// without it the bench falls back to s3rver (backends.ts).
//
// The root credentials are made up per run, so every request is signed and checked as by a
// production S3.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants as fsConstants, closeSync, openSync, realpathSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateBucketCommand, DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { adminClient, localS3Server, stopChild, type S3TestServer } from '../helpers/s3.js';
import { freePort } from '../helpers/server.js';
import { onProcessExit } from '../helpers/exit.js';
import { READY_TIMEOUT_MS, STOP_TIMEOUT_MS } from '../helpers/limits.js';

/** Where hack/s3/build-versitygw.sh links the binary it built. */
export function versitygwBinaryPath(): string {
  const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(cache, 'dittofs-bench', 'versitygw', 'versitygw');
}

/** The built `versitygw`, or undefined if hack/s3/build-versitygw.sh has not built it. */
export function findVersitygw(): string | undefined {
  const bin = versitygwBinaryPath();
  try {
    accessSync(bin, fsConstants.X_OK);
    return bin;
  } catch {
    return undefined;
  }
}

/**
 * The version of the built binary: the directory hack/s3/build-versitygw.sh put it in ("v1.8.0";
 * `go install` leaves `versitygw --version` without one), or "?".
 */
export function versitygwVersion(bin: string): string {
  try {
    return path.basename(path.dirname(realpathSync(bin)));
  } catch {
    return '?';
  }
}

export interface VersitygwServer extends S3TestServer {
  /** What the bench prints: versitygw, its version and backend. */
  description: string;
}

const live = new Set<ChildProcess>();
let exitHook = false;

async function logTail(file: string): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.split('\n').slice(-30).join('\n').trim();
}

/**
 * Starts versitygw (bin) on a private directory and creates `bucket`; resolves once a signed
 * PutObject into the bucket succeeds.
 */
export async function startVersitygw(
  bin: string,
  opts: {
    bucket: string;
    startTimeoutMs?: number;
    /** Without an IAM store (single-account mode): what a user who omits --iam-dir runs; the tests of how DittoFS reads its errors. */
    singleAccount?: boolean;
  },
): Promise<VersitygwServer> {
  if (!exitHook) {
    exitHook = true;
    onProcessExit(() => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
  const timeoutMs = opts.startTimeoutMs ?? READY_TIMEOUT_MS;
  const bucket = opts.bucket;
  const region = 'us-east-1';
  const accessKeyId = `bench${randomBytes(6).toString('hex')}`;
  const secretAccessKey = randomBytes(24).toString('base64url');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-bench-versitygw-'));
  const data = path.join(dir, 'data');
  const iam = path.join(dir, 'iam');
  const logFile = path.join(dir, 'versitygw.log');
  const port = await freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  const admin = adminClient(endpoint, region, accessKeyId, secretAccessKey);
  const description = `versitygw ${versitygwVersion(bin)} (posix backend)`;
  let child: ChildProcess | undefined;

  const launch = async (): Promise<ChildProcess> => {
    await mkdir(data, { recursive: true });
    await mkdir(iam, { recursive: true });
    const log = openSync(logFile, 'a');
    let c: ChildProcess;
    try {
      // The credentials by environment, not argv (which any user may read in /proc).
      // --iam-dir: with an IAM store, an unknown access key id is 403 InvalidAccessKeyId as on AWS;
      // without one, versitygw answers 404 XAdminUserNotFound (the bucket HEAD a bodiless 404, like a missing bucket).
      const iamArgs = opts.singleAccount === true ? [] : ['--iam-dir', iam];
      // --keep-alive: versitygw closes every connection after its answer by default; AWS S3 and the
      // SDK keep them open, and a new TCP connection per 4 MiB block would count against DittoFS.
      c = spawn(bin, ['--port', `127.0.0.1:${port}`, '--region', region, '--keep-alive', ...iamArgs, 'posix', data], {
        cwd: dir,
        stdio: ['ignore', log, log],
        env: { ...process.env, ROOT_ACCESS_KEY_ID: accessKeyId, ROOT_SECRET_ACCESS_KEY: secretAccessKey },
      });
    } finally {
      closeSync(log);
    }
    live.add(c);
    let exited: string | undefined;
    c.once('exit', (code, signal) => {
      live.delete(c);
      exited = signal ?? `code ${code}`;
    });
    c.once('error', (e) => {
      exited = `could not be spawned: ${e.message}`;
    });
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (let attempt = 0; ; attempt++) {
      if (exited !== undefined) throw new Error(`versitygw exited (${exited}); ${logFile}:\n${await logTail(logFile)}`);
      if (Date.now() > deadline) {
        c.kill('SIGKILL');
        throw new Error(
          `versitygw: no successful PutObject within ${timeoutMs} ms (last: ${last}); ${logFile}:\n${await logTail(logFile)}`,
        );
      }
      try {
        // Each call bounded: a gateway that accepts but never answers is retried, not waited on.
        const call = { abortSignal: AbortSignal.timeout(10_000) };
        // Idempotent: the bucket may exist (a restart on the same directory).
        await admin.send(new CreateBucketCommand({ Bucket: bucket }), call).catch((e: unknown) => {
          const name = (e as { name?: string }).name;
          if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw e;
        });
        const probe = `.dittofs-bench-ready-${attempt}`;
        await admin.send(new PutObjectCommand({ Bucket: bucket, Key: probe, Body: 'ready' }), call);
        await admin.send(new DeleteObjectCommand({ Bucket: bucket, Key: probe }), call);
        return c;
      } catch (e) {
        last = `${(e as Error).name}: ${(e as Error).message}`;
        await sleep(100);
      }
    }
  };

  try {
    child = await launch();
  } catch (e) {
    admin.destroy();
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    description,
    ...localS3Server({
      name: 'versitygw',
      endpoint,
      bucket,
      accessKeyId,
      secretAccessKey,
      region,
      dir,
      admin,
      child,
      launch,
      stop: (c) => stopChild(c, STOP_TIMEOUT_MS),
    }),
  };
}
