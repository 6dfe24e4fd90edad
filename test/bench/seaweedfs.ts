// SeaweedFS as the benchmark's S3 server: `weed mini` (master, volume server, filer and S3 gateway
// in one Go process) on 127.0.0.1, with a private data directory and one bucket.
//
// Why not s3rver, as the tests use: s3rver is JavaScript and spent more CPU per GiB written than
// DittoFS itself on the same two cores, so the postgres-s3 row measured s3rver more than DittoFS.
// `weed` is built by hack/s3/build-seaweedfs.sh (hack/install-deps.sh bench) into a cache outside
// the repository; without it the bench falls back to s3rver (backends.ts).
//
// Credentials are made up per run and given to weed as its one identity (s3.json, admin rights),
// so every request is signed and checked as by a production S3. Every listener gets a port from
// freePort(); the extra gateways of `weed mini` (WebDAV, admin UI, Iceberg, Lance) are off.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants as fsConstants, closeSync, openSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateBucketCommand, DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { adminClient, listAll, storeOptions, type S3TestServer } from '../helpers/s3.js';
import { freePort } from '../helpers/server.js';
import { onProcessExit } from '../helpers/exit.js';
import { READY_TIMEOUT_MS, STOP_TIMEOUT_MS } from '../helpers/limits.js';

/** Where hack/s3/build-seaweedfs.sh links the binary it built. */
export function seaweedfsBinaryPath(): string {
  const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(cache, 'dittofs-bench', 'seaweedfs', 'weed');
}

/** The built `weed`, or undefined if hack/s3/build-seaweedfs.sh has not built it. */
export function findSeaweedfs(): string | undefined {
  const bin = seaweedfsBinaryPath();
  try {
    accessSync(bin, fsConstants.X_OK);
    return bin;
  } catch {
    return undefined;
  }
}

/** The release `weed version` names ("4.53" of "version 30GB 4.53  linux amd64"), or "?". */
export function seaweedfsVersion(bin: string): string {
  try {
    // Its stderr is an advertisement.
    const out = execFileSync(bin, ['version'], { encoding: 'utf8', timeout: 30_000, stdio: ['ignore', 'pipe', 'ignore'] });
    return /\bversion\s+(?:\S+GB\s+)?(\S+)/.exec(out)?.[1] ?? '?';
  } catch {
    return '?';
  }
}

export interface SeaweedfsServer extends S3TestServer {
  /** What the bench prints: SeaweedFS and its version. */
  description: string;
}

const live = new Set<ChildProcess>();
let exitHook = false;

/** Ports of one `weed mini`: kept across stop() and start(), like its directory. */
interface Ports {
  master: number;
  masterGrpc: number;
  volume: number;
  volumeGrpc: number;
  filer: number;
  filerGrpc: number;
  s3: number;
  s3Grpc: number;
}

function miniArgs(dir: string, p: Ports, s3Config: string): string[] {
  return [
    'mini',
    `-dir=${dir}`,
    '-ip=127.0.0.1',
    '-ip.bind=127.0.0.1',
    `-master.port=${p.master}`,
    `-master.port.grpc=${p.masterGrpc}`,
    '-master.telemetry=false',
    `-volume.port=${p.volume}`,
    `-volume.port.grpc=${p.volumeGrpc}`,
    `-filer.port=${p.filer}`,
    `-filer.port.grpc=${p.filerGrpc}`,
    // Unix sockets named after the ports (the default is under /tmp, named by port too).
    `-filer.localSocket=${path.join(dir, 'filer.sock')}`,
    `-s3.port=${p.s3}`,
    `-s3.port.grpc=${p.s3Grpc}`,
    `-s3.localSocket=${path.join(dir, 's3.sock')}`,
    `-s3.config=${s3Config}`,
    '-s3.port.iceberg=0',
    '-s3.port.lance=0',
    '-webdav=false',
    '-admin.ui=false',
  ];
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}

async function logTail(file: string): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.split('\n').slice(-30).join('\n').trim();
}

/**
 * Starts `weed mini` (bin) with a private directory and `bucket`, and resolves once a signed
 * PutObject into the bucket succeeds (the S3 gateway, filer and volume server all up).
 */
export async function startSeaweedfs(bin: string, opts: { bucket: string; startTimeoutMs?: number }): Promise<SeaweedfsServer> {
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
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-bench-seaweedfs-'));
  const data = path.join(dir, 'data');
  const logFile = path.join(dir, 'weed.log');
  const s3Config = path.join(dir, 's3.json');
  await writeFile(
    s3Config,
    JSON.stringify({
      identities: [
        {
          name: 'dittofs-bench',
          credentials: [{ accessKey: accessKeyId, secretKey: secretAccessKey }],
          actions: ['Admin', 'Read', 'List', 'Tagging', 'Write'],
        },
      ],
    }),
    { mode: 0o600 },
  );
  const ports: Ports = {
    master: await freePort(),
    masterGrpc: await freePort(),
    volume: await freePort(),
    volumeGrpc: await freePort(),
    filer: await freePort(),
    filerGrpc: await freePort(),
    s3: await freePort(),
    s3Grpc: await freePort(),
  };
  const endpoint = `http://127.0.0.1:${ports.s3}`;
  const admin = adminClient(endpoint, region, accessKeyId, secretAccessKey);
  const description = `SeaweedFS ${seaweedfsVersion(bin)} (weed mini)`;
  let child: ChildProcess | undefined;

  const launch = async (): Promise<ChildProcess> => {
    await mkdir(data, { recursive: true });
    const log = openSync(logFile, 'a');
    let c: ChildProcess;
    try {
      c = spawn(bin, miniArgs(data, ports, s3Config), { cwd: dir, stdio: ['ignore', log, log] });
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
      if (exited !== undefined) throw new Error(`weed mini exited (${exited}); ${logFile}:\n${await logTail(logFile)}`);
      if (Date.now() > deadline) {
        c.kill('SIGKILL');
        throw new Error(
          `weed mini: no successful PutObject within ${timeoutMs} ms (last: ${last}); ${logFile}:\n${await logTail(logFile)}`,
        );
      }
      try {
        // Idempotent: the bucket may exist (a restart on the same directory).
        // Each call bounded: a gateway that accepts but never answers is retried, not waited on.
        const call = { abortSignal: AbortSignal.timeout(10_000) };
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
        await sleep(200);
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
  let closed = false;
  return {
    description,
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
      if (closed) throw new Error('weed mini was closed');
      if (child !== undefined) await stopChild(child);
      child = undefined;
    },
    async start() {
      if (closed) throw new Error('weed mini was closed');
      if (child === undefined) child = await launch();
    },
    async close() {
      if (closed) return;
      closed = true;
      admin.destroy();
      try {
        if (child !== undefined) await stopChild(child);
      } finally {
        child = undefined;
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}
