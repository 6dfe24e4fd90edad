// The `s3` block engine: one object per block in an S3 bucket, on AWS or any S3-compatible server
// (MinIO, Ceph RGW, ...). Retries with backoff are the SDK's own (standard retry strategy); each
// attempt is bounded by `requestTimeoutMs`. Errors name the bucket and the endpoint, never the secret.
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  paginateListObjectsV2,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { crc32c } from '@node-rs/crc32';
import type { BlockStore, BlockStoreCapacity, PutHints, StoredObject } from './store.js';
import { OffloadedSha256 } from './offload-hash.js';

export const DEFAULT_S3_REGION = 'us-east-1';
export const DEFAULT_S3_REQUEST_TIMEOUT_MS = 30_000;
/** The SDK's own default: one try and two retries. */
export const DEFAULT_S3_MAX_ATTEMPTS = 3;
/** Connecting is quick or not happening: an unreachable endpoint fails in seconds even with long requests allowed. */
const MAX_CONNECT_TIMEOUT_MS = 10_000;
/** Parallel connections per store: enough for the transfer manager's parallel uploads and reads. */
const MAX_SOCKETS = 32;

/**
 * S3 has no capacity to report. 1 PiB total and free stands for "unbounded"; the real limit is the
 * account's quota or bill, which the S3 API does not expose.
 */
export const S3_REPORTED_CAPACITY_BYTES = 2 ** 50;

export interface S3BlockStoreOptions {
  /** `http(s)://host[:port]` of an S3-compatible server; absent: AWS S3 for `region`. */
  endpoint?: string;
  /** Default us-east-1 (S3-compatible servers mostly ignore it, but it is part of every signature). */
  region?: string;
  bucket: string;
  /** Objects are stored under `prefix/KEY`; a trailing `/` is added when missing, a leading one dropped. */
  prefix?: string;
  /** Address buckets as `endpoint/bucket/key` instead of `bucket.endpoint/key` (MinIO and most self-hosted servers need it). */
  forcePathStyle?: boolean;
  /** Both or neither; neither: the standard AWS credential chain (AWS_ACCESS_KEY_ID, ~/.aws, web identity, instance role). */
  accessKeyId?: string;
  secretAccessKey?: string;
  /** Longest one HTTP attempt may take, and longest a connection may stay silent (default 30 s). */
  requestTimeoutMs?: number;
  /** Attempts per request, retries with backoff included (default 3). */
  maxAttempts?: number;
  /**
   * Whether a PUT signs the SHA-256 of its body (see payloadSigned()). Default: only where the
   * connection itself does not protect the body, plain HTTP to another host.
   */
  signPayload?: boolean;
}

/** 127.0.0.0/8 and ::1 (an IPv4-mapped IPv6 address matches the IPv4 subnet). */
const LOOPBACK = new net.BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/**
 * Whether uploads to `endpoint` sign the SHA-256 of each body (Signature V4's payload hash), which
 * costs about 0.6 CPU seconds per GiB here and as much again on the S3 server that checks it.
 *
 * Over TLS (AWS, any https endpoint; unless NODE_TLS_REJECT_UNAUTHORIZED=0 turns off the check of
 * its certificate) and over loopback (an S3 server on the same host) nobody can
 * change a body in flight without being detected or without already owning the host, so the body
 * goes as UNSIGNED-PAYLOAD with an x-amz-checksum-crc32c header instead: the server checks every
 * byte it stores against it (accidental corruption is caught as before), for a third of the CPU.
 * Plain HTTP to another host keeps the signed hash, the only thing that stops someone on the path
 * from replacing a block.
 */
export function payloadSigned(endpoint: string | undefined, env: NodeJS.ProcessEnv = process.env, forcePathStyle = false): boolean {
  // TLS protects the body only if the server's certificate is checked: with
  // NODE_TLS_REJECT_UNAUTHORIZED=0 (a self-signed endpoint) anyone on the path can answer in its
  // place and alter a body to any content of the same CRC32C, which is no harder than changing it.
  const tlsVerified = env.NODE_TLS_REJECT_UNAUTHORIZED !== '0';
  let url: URL;
  try {
    url = new URL(endpoint ?? 'https://s3.amazonaws.com');
  } catch {
    return true;
  }
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  // By name, only `localhost` itself (/etc/hosts), and only when requests go to it: without path
  // style the SDK sends them to `<bucket>.localhost`, which glibc's usual `hosts: files dns`
  // asks DNS about, as any other `*.localhost` name.
  if (host === 'localhost' && forcePathStyle) return false;
  const family = net.isIPv4(host) ? 'ipv4' : net.isIPv6(host) ? 'ipv6' : null;
  if (family !== null && LOOPBACK.check(host, family)) return false;
  return !(url.protocol === 'https:' && tlsVerified);
}

/** The x-amz-checksum-crc32c value of `data` (whose CRC32C is `crc` if known): big-endian, in base64. */
export function crc32cHeader(data: Buffer, crc = crc32c(data)): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(crc >>> 0, 0);
  return b.toString('base64');
}

export const S3_ERROR_CODES = Object.freeze({
  BUCKET_NOT_FOUND: 'DITTOFS_S3_BUCKET_NOT_FOUND',
  CREDENTIALS_REJECTED: 'DITTOFS_S3_CREDENTIALS_REJECTED',
  NO_CREDENTIALS: 'DITTOFS_S3_NO_CREDENTIALS',
  UNREACHABLE: 'DITTOFS_S3_UNREACHABLE',
  REQUEST_FAILED: 'DITTOFS_S3_REQUEST_FAILED',
} as const);
export type S3ErrorCode = (typeof S3_ERROR_CODES)[keyof typeof S3_ERROR_CODES];

export class S3BlockStoreError extends Error {
  override readonly name = 'S3BlockStoreError';
  constructor(
    readonly code: S3ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** What the SDK (or node underneath it) throws: a service error, a timeout, or a socket error. */
interface SdkError {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number; attempts?: number };
}

const asSdkError = (e: unknown): SdkError => (typeof e === 'object' && e !== null ? e : { message: String(e) });
const statusOf = (e: SdkError): number | undefined => e.$metadata?.httpStatusCode;

const NETWORK_ERRNOS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/** No HTTP answer at all: refused, reset, timed out, or a host name that does not resolve. */
function isNetworkError(e: SdkError): boolean {
  return (e.code !== undefined && NETWORK_ERRNOS.has(e.code)) || (e.name === 'TimeoutError' && statusOf(e) === undefined);
}

const CREDENTIAL_ERROR_NAMES = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'Forbidden', '403']);

/**
 * Why a request failed, in a few words: `ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:9000 (3 attempts)`,
 * `NoSuchBucket (HTTP 404): ...`, `TimeoutError: a request has exceeded the configured 300 ms requestTimeout.`
 */
function describeSdkError(e: SdkError): string {
  const status = statusOf(e);
  const what = e.name === 'TimeoutError' ? e.name : e.code !== undefined && NETWORK_ERRNOS.has(e.code) ? e.code : (e.name ?? 'Error');
  const message = (e.message ?? '').replace(/^@smithy\/node-http-handler - (?:\[ERROR\] )?/, '');
  const detail = message !== '' && message !== what && message !== 'UnknownError' ? `: ${message}` : '';
  const attempts = e.$metadata?.attempts;
  return `${what}${status !== undefined ? ` (HTTP ${status})` : ''}${detail}${attempts !== undefined && attempts > 1 ? ` (${attempts} attempts)` : ''}`;
}

function normalizePrefix(prefix: string | undefined): string {
  const p = (prefix ?? '').replace(/^\/+/, '');
  return p === '' || p.endsWith('/') ? p : `${p}/`;
}

export class S3BlockStore implements BlockStore {
  readonly kind = 's3';
  readonly bucket: string;
  readonly prefix: string;
  readonly region: string;
  /** The endpoint as shown in messages: the configured URL, or AWS's for the region. */
  readonly endpointDescription: string;
  /**
   * PUTs sign their body's SHA-256; otherwise UNSIGNED-PAYLOAD plus a CRC32C the server checks.
   * Turned on for good by an S3 server that refuses the unsigned form (see put()).
   */
  signsPayload: boolean;
  private readonly client: S3Client;

  constructor(opts: S3BlockStoreOptions) {
    if (opts.bucket === '') throw new Error('an s3 block store needs a bucket');
    if ((opts.accessKeyId === undefined) !== (opts.secretAccessKey === undefined)) {
      throw new Error(`s3 block store for bucket ${opts.bucket}: give both an access key id and a secret access key, or neither`);
    }
    this.region = opts.region ?? DEFAULT_S3_REGION;
    const region = this.region;
    const timeout = opts.requestTimeoutMs ?? DEFAULT_S3_REQUEST_TIMEOUT_MS;
    this.bucket = opts.bucket;
    this.prefix = normalizePrefix(opts.prefix);
    this.signsPayload = opts.signPayload ?? payloadSigned(opts.endpoint, process.env, opts.forcePathStyle ?? false);
    this.endpointDescription = opts.endpoint?.replace(/\/+$/, '') ?? `https://s3.${region}.amazonaws.com (AWS default for ${region})`;
    const agentOptions = { keepAlive: true, maxSockets: MAX_SOCKETS };
    const config: S3ClientConfig = {
      region,
      forcePathStyle: opts.forcePathStyle ?? false,
      maxAttempts: opts.maxAttempts ?? DEFAULT_S3_MAX_ATTEMPTS,
      retryMode: 'standard',
      // A PUT carries either the signed payload hash or our own CRC32C (see payloadSigned()), which
      // let S3 check every byte it receives: no CRC32 of the SDK's on top (its default for uploads,
      // computed in JavaScript on the main thread), unless an operation needs one.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      // Reads stay as they were: no checksum asked for, none computed (in JavaScript) on the way in.
      responseChecksumValidation: 'WHEN_REQUIRED',
      // Where the payload is signed, large bodies in shared memory are hashed on a worker thread.
      sha256: OffloadedSha256,
      requestHandler: new NodeHttpHandler({
        httpAgent: new http.Agent(agentOptions),
        httpsAgent: new https.Agent(agentOptions),
        connectionTimeout: Math.min(timeout, MAX_CONNECT_TIMEOUT_MS),
        requestTimeout: timeout,
        throwOnRequestTimeout: true,
        // A response body that stalls mid-way is caught by the socket idle timeout.
        socketTimeout: timeout,
      }),
    };
    if (opts.endpoint !== undefined) config.endpoint = opts.endpoint;
    if (opts.accessKeyId !== undefined && opts.secretAccessKey !== undefined) {
      config.credentials = { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey };
    }
    this.client = new S3Client(config);
  }

  /** Checks that the bucket is there and the credentials are accepted, with a message saying which is wrong. */
  async open(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      const failure = await this.openError(err);
      if (failure !== undefined) throw failure;
    }
  }

  /** Why open() failed; undefined when a listing shows the bucket usable after all (a HEAD 404 a gateway gave for its own reasons). */
  private async openError(err: unknown): Promise<S3BlockStoreError | undefined> {
    const e = asSdkError(err);
    const status = statusOf(e);
    const where = `at ${this.endpointDescription}`;
    if (e.name === 'NoSuchBucket') return this.bucketNotFound(err);
    if (e.name === 'NotFound' || status === 404) {
      // A HEAD answer has no body, so a 404 says "not found" without saying what: S3 means the
      // bucket, but some servers answer 404 for an access key they do not know (versitygw without
      // an IAM store: XAdminUserNotFound) or a gateway for its own reasons. A listing names it.
      const probe = await this.probe();
      if (probe === 'ok') return undefined;
      if (probe.name === 'NoSuchBucket' || probe.name === 'NotFound' || probe.name === undefined) return this.bucketNotFound(err);
      if (CREDENTIAL_HINTS[probe.name] !== undefined) return this.credentialsRejected(probe.name, err);
      const p = asSdkError(probe.error);
      if (isNetworkError(p)) {
        const message = `cannot reach the S3 endpoint ${this.endpointDescription}: ${describeSdkError(p)}`;
        return new S3BlockStoreError(S3_ERROR_CODES.UNREACHABLE, message, { cause: probe.error });
      }
      return new S3BlockStoreError(
        S3_ERROR_CODES.REQUEST_FAILED,
        `cannot check S3 bucket ${this.bucket} ${where}: HEAD of the bucket answered 404, and a listing of it failed with ${describeSdkError(p)} ` +
          '(not NoSuchBucket: the bucket may well exist; check what the server says)',
        { cause: probe.error },
      );
    }
    if (status === 403 || (e.name !== undefined && CREDENTIAL_ERROR_NAMES.has(e.name))) {
      // A HEAD answer has no body, so no error code: ask once more with a GET to learn which it is.
      const probe = await this.probe();
      const code = probe !== 'ok' && probe.name !== undefined && CREDENTIAL_HINTS[probe.name] !== undefined ? probe.name : 'AccessDenied';
      return this.credentialsRejected(code, err);
    }
    if (status === 301 || e.name === 'PermanentRedirect' || e.name === 'AuthorizationHeaderMalformed') {
      return new S3BlockStoreError(
        S3_ERROR_CODES.REQUEST_FAILED,
        `S3 bucket ${this.bucket} ${where} is not in region ${this.region}: set region to the bucket's region (${describeSdkError(e)})`,
        { cause: err },
      );
    }
    if (e.name === 'CredentialsProviderError') {
      return new S3BlockStoreError(
        S3_ERROR_CODES.NO_CREDENTIALS,
        `no S3 credentials for bucket ${this.bucket} ${where}: set access_key_id and secret_access_key, ` +
          'or provide them the standard AWS way (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, web identity, instance role)',
        { cause: err },
      );
    }
    if (isNetworkError(e)) {
      return new S3BlockStoreError(
        S3_ERROR_CODES.UNREACHABLE,
        `cannot reach the S3 endpoint ${this.endpointDescription}: ${describeSdkError(e)}`,
        {
          cause: err,
        },
      );
    }
    return new S3BlockStoreError(S3_ERROR_CODES.REQUEST_FAILED, `cannot check S3 bucket ${this.bucket} ${where}: ${describeSdkError(e)}`, {
      cause: err,
    });
  }

  private bucketNotFound(cause: unknown): S3BlockStoreError {
    return new S3BlockStoreError(
      S3_ERROR_CODES.BUCKET_NOT_FOUND,
      `S3 bucket ${this.bucket} does not exist at ${this.endpointDescription} (create it, or fix the bucket, endpoint or region)`,
      { cause },
    );
  }

  private credentialsRejected(code: string, cause: unknown): S3BlockStoreError {
    return new S3BlockStoreError(
      S3_ERROR_CODES.CREDENTIALS_REJECTED,
      `S3 rejected the credentials for bucket ${this.bucket} (${code}) at ${this.endpointDescription}: ${CREDENTIAL_HINTS[code] ?? CREDENTIAL_HINTS.AccessDenied}`,
      { cause },
    );
  }

  /**
   * What HeadBucket cannot say (its answer has no body): a one-key listing of the bucket, with the
   * S3 error code it fails with (`name`: undefined when the answer named none), or 'ok'.
   */
  private async probe(): Promise<'ok' | { name: string | undefined; error: unknown }> {
    try {
      await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, MaxKeys: 1, Prefix: this.prefix }));
      return 'ok';
    } catch (err) {
      const name = asSdkError(err).name;
      // The SDK names a bodiless error after its status ("NotFound", "Unknown"): no code at all.
      return { name: name === 'Unknown' || name === 'UnknownError' ? undefined : name, error: err };
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }

  private objectKey(key: string): string {
    if (key === '') throw new Error('invalid block key ""');
    return this.prefix + key;
  }

  private requestError(op: string, objectKey: string, err: unknown): S3BlockStoreError {
    const e = asSdkError(err);
    const code = isNetworkError(e) ? S3_ERROR_CODES.UNREACHABLE : S3_ERROR_CODES.REQUEST_FAILED;
    const at = `s3://${this.bucket}/${objectKey} at ${this.endpointDescription}`;
    return new S3BlockStoreError(code, `S3 ${op} ${at} failed: ${describeSdkError(e)}`, { cause: err });
  }

  async put(key: string, data: Buffer, hints?: PutHints): Promise<void> {
    const Key = this.objectKey(key);
    try {
      const input = { Bucket: this.bucket, Key, Body: data, ContentLength: data.length };
      if (this.signsPayload) {
        await this.client.send(new PutObjectCommand(input));
      } else {
        const put = new PutObjectCommand({ ...input, ChecksumCRC32C: crc32cHeader(data, hints?.crc32c) });
        put.middlewareStack.add(unsignedPayload, { step: 'build', name: 'dittofsUnsignedPayload' });
        try {
          await this.client.send(put);
        } catch (err) {
          // An S3-compatible server that does not take UNSIGNED-PAYLOAD or the x-amz-checksum-crc32c
          // header answers 400 (InvalidArgument, NotImplemented, a SHA-256 mismatch) or 501: the
          // PUT is sent again signed, and this store signs from then on if that works.
          const status = statusOf(asSdkError(err));
          if (status !== 400 && status !== 501) throw err;
          await this.client.send(new PutObjectCommand(input));
          this.signsPayload = true;
        }
      }
    } catch (err) {
      throw this.requestError('PUT', Key, err);
    }
  }

  async get(key: string, offset = 0, length?: number): Promise<Buffer | null> {
    if (length === 0) return (await this.exists(key)) ? Buffer.alloc(0) : null;
    const ranged = offset > 0 || length !== undefined;
    const range = ranged ? `bytes=${offset}-${length === undefined ? '' : offset + length - 1}` : undefined;
    const Key = this.objectKey(key);
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key, Range: range }));
      if (res.Body === undefined) return Buffer.alloc(0);
      const bytes = await res.Body.transformToByteArray();
      const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      if (!ranged) return buf;
      // Some servers answer more than was asked: the whole object (200, Range ignored) or a wider
      // range (s3rver reads `bytes=0-0` as `bytes=0-`). Cut the requested bytes out of what came.
      const start = res.$metadata.httpStatusCode === 206 ? (contentRangeStart(res.ContentRange) ?? offset) : 0;
      const from = Math.min(Math.max(offset - start, 0), buf.length);
      return buf.subarray(from, length === undefined ? buf.length : Math.min(buf.length, from + length));
    } catch (err) {
      const e = asSdkError(err);
      if (isMissingObject(e)) return null;
      // 416: the object exists but is shorter than `offset`, so nothing is there to read.
      if (e.name === 'InvalidRange' || statusOf(e) === 416) return Buffer.alloc(0);
      throw this.requestError('GET', Key, err);
    }
  }

  async *list(prefix: string): AsyncIterable<StoredObject> {
    const Prefix = this.prefix + prefix;
    try {
      for await (const page of paginateListObjectsV2({ client: this.client }, { Bucket: this.bucket, Prefix })) {
        for (const o of page.Contents ?? []) {
          if (o.Key === undefined || !o.Key.startsWith(this.prefix)) continue;
          yield { key: o.Key.slice(this.prefix.length), modifiedMs: o.LastModified?.getTime() };
        }
      }
    } catch (err) {
      throw this.requestError('LIST', Prefix, err);
    }
  }

  private async exists(key: string): Promise<boolean> {
    const Key = this.objectKey(key);
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }));
      return true;
    } catch (err) {
      if (isMissingObject(asSdkError(err))) return false;
      throw this.requestError('HEAD', Key, err);
    }
  }

  async delete(key: string): Promise<void> {
    const Key = this.objectKey(key);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key }));
    } catch (err) {
      // S3 answers 204 for a missing key; some compatible servers say NoSuchKey instead.
      if (isMissingObject(asSdkError(err))) return;
      throw this.requestError('DELETE', Key, err);
    }
  }

  /** See S3_REPORTED_CAPACITY_BYTES: S3 reports no capacity, so this is a fixed figure. */
  async capacity(): Promise<BlockStoreCapacity> {
    return { totalBytes: S3_REPORTED_CAPACITY_BYTES, freeBytes: S3_REPORTED_CAPACITY_BYTES };
  }
}

/** Marks a request's body as not part of its signature (the signer takes the header's value as the payload hash). */
function unsignedPayload<A extends { request: unknown }, R>(next: (args: A) => Promise<R>): (args: A) => Promise<R> {
  return (args) => {
    const { headers } = args.request as { headers?: Record<string, string> };
    if (headers !== undefined) headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
    return next(args);
  };
}

/** START of a `Content-Range: bytes START-END/SIZE` header. */
function contentRangeStart(header: string | undefined): number | undefined {
  const m = header === undefined ? null : /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(header.trim());
  return m?.[1] === undefined ? undefined : Number(m[1]);
}

/** A missing object, but not a missing bucket: that is a configuration problem, not an absent block. */
function isMissingObject(e: SdkError): boolean {
  if (e.name === 'NoSuchBucket') return false;
  return e.name === 'NoSuchKey' || e.name === 'NotFound' || statusOf(e) === 404;
}

const CREDENTIAL_HINTS: Readonly<Record<string, string>> = Object.freeze({
  InvalidAccessKeyId: 'the access key id is not known to this server',
  // versitygw without an IAM store (single account) for any key but its root one, with HTTP 404.
  XAdminUserNotFound: 'the access key id is not known to this server',
  SignatureDoesNotMatch: 'the secret access key does not match the access key id (or the region is wrong)',
  AccessDenied: 'the credentials are not allowed to list this bucket (s3:ListBucket), or are not valid here',
});
