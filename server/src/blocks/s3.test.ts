// What only the s3 engine does: say precisely why open() fails, survive and report outages, send
// range GETs, retry through the SDK. The BlockStore contract itself is in store.conformance.test.ts.
// Runs against a private s3rver, or against DITTOFS_TEST_S3_ENDPOINT (MinIO, AWS) when set.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { TEST_TIMEOUT_MS } from '../../../test/helpers/limits.js';
import { externalS3Endpoint, startS3, type S3TestServer } from '../../../test/helpers/s3.js';
import { createHash } from 'node:crypto';
import { crc32c } from '@node-rs/crc32';
import { payloadSigned, S3_ERROR_CODES, S3_REPORTED_CAPACITY_BYTES, S3BlockStore, S3BlockStoreError, type S3ErrorCode } from './s3.js';
import { offloadedDigests } from './offload-hash.js';
import { findVersitygw, startVersitygw } from '../../../test/bench/versitygw.js';

const EXTERNAL = externalS3Endpoint() !== undefined;
const NEEDS_S3RVER = EXTERNAL ? 'needs the private s3rver (it stops, restarts or proxies the server)' : false;

/** Checks the error's class, code and message, and that the message does not carry the secret. */
function assertS3Error(err: unknown, code: S3ErrorCode, message: RegExp, secret?: string): true {
  assert.ok(err instanceof S3BlockStoreError, `expected an S3BlockStoreError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  assert.match(err.message, message);
  if (secret !== undefined) assert.ok(!err.message.includes(secret), `the secret leaked into: ${err.message}`);
  return true;
}

/** What `p` rejects with; undefined if it resolves (an assertS3Error on that fails). */
const rejection = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => undefined,
    (e: unknown) => e,
  );

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

interface Recorded {
  method: string;
  path: string;
  range: string | undefined;
  status: number;
  bytes: number;
  headers: http.IncomingHttpHeaders;
}

/**
 * An HTTP proxy in front of the S3 server that records each request and the size of each response
 * body, and can answer some requests itself (to inject server errors).
 */
async function startProxy(
  upstream: string,
  intercept?: (req: http.IncomingMessage) => { status: number; body: string } | undefined,
): Promise<{ endpoint: string; log: Recorded[]; close(): Promise<void> }> {
  const target = new URL(upstream);
  const log: Recorded[] = [];
  const server = http.createServer((req, res) => {
    const entry: Recorded = {
      method: req.method ?? '',
      path: req.url ?? '',
      range: req.headers.range,
      status: 0,
      bytes: 0,
      headers: req.headers,
    };
    log.push(entry);
    const canned = intercept?.(req);
    if (canned !== undefined) {
      req.resume();
      entry.status = canned.status;
      res.writeHead(canned.status, { 'content-type': 'application/xml' }).end(canned.body);
      return;
    }
    const up = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers, agent: false },
      (ures) => {
        entry.status = ures.statusCode ?? 0;
        ures.on('data', (c: Buffer) => (entry.bytes += c.length));
        res.writeHead(ures.statusCode ?? 502, ures.headers);
        ures.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    log,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('s3 block store', () => {
  let s3: S3TestServer;
  const stores: S3BlockStore[] = [];
  /** A store on the test server (closed in after()), with option overrides. */
  const makeStore = (extra: Parameters<S3TestServer['storeOptions']>[0] = {}): S3BlockStore => {
    const s = new S3BlockStore(s3.storeOptions(extra));
    stores.push(s);
    return s;
  };

  before(async () => {
    s3 = await startS3();
  });
  after(async () => {
    for (const s of stores) await s.close();
    await s3?.close();
  });

  it('stores objects under its prefix, one object per key', async () => {
    const store = makeStore({ prefix: 'tenant-a' });
    await store.open();
    await store.put('0000beef/7/0-1-aa', Buffer.from('x'));
    await store.put('0000beef/7/1-1-bb', Buffer.from('y'));
    assert.deepEqual(await s3.listKeys('tenant-a/'), ['tenant-a/0000beef/7/0-1-aa', 'tenant-a/0000beef/7/1-1-bb']);
    await store.delete('0000beef/7/0-1-aa');
    assert.deepEqual(await s3.listKeys('tenant-a/'), ['tenant-a/0000beef/7/1-1-bb']);
  });

  it('signs a block in shared memory with a hash computed on the worker thread, and stores it intact', async () => {
    const store = makeStore({ prefix: 'offload', signPayload: true });
    await store.open();
    const block = Buffer.from(new SharedArrayBuffer(1 << 20));
    for (let i = 0; i < block.length; i++) block[i] = (i * 11) & 0xff;
    const before = offloadedDigests();
    await store.put('0000beef/9/0-1-cc', block);
    assert.ok(offloadedDigests() > before, 'the payload hash came from the worker');
    assert.deepEqual(await store.get('0000beef/9/0-1-cc'), Buffer.from(block));
  });

  it('signs the SHA-256 of each body only over plain HTTP to another host (TLS and loopback protect it in flight)', () => {
    assert.equal(payloadSigned(undefined), false, 'AWS: https');
    assert.equal(payloadSigned('https://minio.example:9000'), false);
    for (const local of ['http://127.0.0.1:9000', 'http://127.3.2.1', 'http://[::1]:9000', 'http://[::ffff:127.0.0.1]:80'])
      assert.equal(payloadSigned(local), false, local);
    for (const remote of ['http://minio.example:9000', 'http://10.0.0.5:9000', 'http://[fd00::5]:9000', 'http://128.0.0.1', 'not a url'])
      assert.equal(payloadSigned(remote), true, remote);
    // By name: `localhost` when requests go to it (path style); `<bucket>.localhost` and other
    // `*.localhost` names are looked up in DNS by the usual resolver, so they may be anywhere.
    assert.equal(payloadSigned('http://localhost:9000', {}, true), false, 'localhost, path style');
    assert.equal(payloadSigned('http://localhost:9000', {}, false), true, 'requests go to <bucket>.localhost');
    assert.equal(payloadSigned('http://minio.localhost:9000', {}, true), true, 'a *.localhost name');
    // TLS without a check of the certificate stops nobody on the path: the hash is signed again.
    const unchecked = { NODE_TLS_REJECT_UNAUTHORIZED: '0' };
    assert.equal(payloadSigned(undefined, unchecked), true, 'AWS, certificates not checked');
    assert.equal(payloadSigned('https://minio.example:9000', unchecked), true);
    assert.equal(payloadSigned('https://minio.example:9000', { NODE_TLS_REJECT_UNAUTHORIZED: '1' }), false);
    assert.equal(payloadSigned('https://127.0.0.1:9000', unchecked), false, 'loopback still');
  });

  it(
    'uploads over loopback as UNSIGNED-PAYLOAD with the CRC32C of the body, which the server checks, and no SHA-256 of it',
    { skip: NEEDS_S3RVER },
    async () => {
      const proxy = await startProxy(s3.endpoint);
      try {
        const unsigned = makeStore({ endpoint: proxy.endpoint });
        const signed = makeStore({ endpoint: proxy.endpoint, signPayload: true });
        assert.equal(unsigned.signsPayload, false);
        const block = Buffer.from(new SharedArrayBuffer(1 << 20));
        for (let i = 0; i < block.length; i++) block[i] = (i * 13) & 0xff;
        const crc = Buffer.alloc(4);
        crc.writeUInt32BE(crc32c(block) >>> 0);
        const before = offloadedDigests();
        await unsigned.put('plain', block);
        assert.equal(offloadedDigests(), before, 'no SHA-256 of the body was computed');
        await signed.put('signed', block);
        const [plain, sig] = proxy.log.filter((r) => r.method === 'PUT');
        assert.equal(plain?.headers['x-amz-content-sha256'], 'UNSIGNED-PAYLOAD');
        assert.equal(plain?.headers['x-amz-checksum-crc32c'], crc.toString('base64'));
        // The checksum header is covered by the signature: changing it in flight fails the request.
        assert.match(String(plain?.headers.authorization), /SignedHeaders=[^,]*x-amz-checksum-crc32c/);
        assert.equal(sig?.headers['x-amz-content-sha256'], createHash('sha256').update(block).digest('hex'));
        assert.equal(sig?.headers['x-amz-checksum-crc32c'], undefined, 'the signed hash already covers the body');
        assert.deepEqual(await unsigned.get('plain'), Buffer.from(block));
        assert.deepEqual(await unsigned.get('signed'), Buffer.from(block));
      } finally {
        await proxy.close();
      }
    },
  );

  it('reports a fixed capacity (S3 has none to report)', async () => {
    assert.deepEqual(await makeStore().capacity(), { totalBytes: S3_REPORTED_CAPACITY_BYTES, freeBytes: S3_REPORTED_CAPACITY_BYTES });
    assert.equal(S3_REPORTED_CAPACITY_BYTES, 1024 ** 5);
  });

  it('refuses an access key id without a secret (and the reverse)', () => {
    assert.throws(() => new S3BlockStore({ bucket: 'b', accessKeyId: 'AK' }), /both an access key id and a secret access key, or neither/);
    assert.throws(
      () => new S3BlockStore({ bucket: 'b', secretAccessKey: 'sk' }),
      /both an access key id and a secret access key, or neither/,
    );
  });

  describe('open()', () => {
    it('names a missing bucket and the endpoint', async () => {
      const bucket = `dittofs-missing-${randomBytes(4).toString('hex')}`;
      const err = await rejection(makeStore({ bucket }).open());
      assertS3Error(
        err,
        S3_ERROR_CODES.BUCKET_NOT_FOUND,
        new RegExp(`^S3 bucket ${escape(bucket)} does not exist at ${escape(s3.endpoint)}\\b`),
        s3.secretAccessKey,
      );
    });

    it('says the credentials were rejected for an access key id the server does not know', async () => {
      const secret = `not-the-secret-${randomBytes(8).toString('hex')}`;
      const err = await rejection(makeStore({ accessKeyId: 'AKIADITTOFSNOSUCHKEY', secretAccessKey: secret }).open());
      assertS3Error(
        err,
        S3_ERROR_CODES.CREDENTIALS_REJECTED,
        new RegExp(`^S3 rejected the credentials for bucket ${escape(s3.bucket)} \\(InvalidAccessKeyId\\) at ${escape(s3.endpoint)}`),
        secret,
      );
    });

    it(
      'says the credentials were rejected for a wrong secret key (s3rver does not check signatures; runs against DITTOFS_TEST_S3_ENDPOINT)',
      { skip: EXTERNAL ? false : 's3rver accepts any secret; set DITTOFS_TEST_S3_ENDPOINT to run this against MinIO or AWS' },
      async () => {
        const secret = `wrong-${randomBytes(12).toString('hex')}`;
        const err = await rejection(makeStore({ secretAccessKey: secret }).open());
        assertS3Error(
          err,
          S3_ERROR_CODES.CREDENTIALS_REJECTED,
          /^S3 rejected the credentials for bucket \S+ \((SignatureDoesNotMatch|AccessDenied)\)/,
          secret,
        );
      },
    );

    it(
      'says the credentials were rejected, not that the bucket is missing, when a server answers the bucket HEAD with 404 for an unknown key',
      { skip: NEEDS_S3RVER },
      async () => {
        // Some servers and gateways answer HEAD with a bodiless 404 for reasons other than a
        // missing bucket; s3rver stands behind this proxy for everything else.
        const headIs404 = (req: http.IncomingMessage) =>
          req.method === 'HEAD' && new URL(req.url ?? '/', 'http://x').pathname.replace(/\/$/, '') === `/${s3.bucket}`
            ? { status: 404, body: '' }
            : undefined;
        const proxy = await startProxy(s3.endpoint, headIs404);
        try {
          const secret = `not-the-secret-${randomBytes(8).toString('hex')}`;
          const err = await rejection(
            makeStore({ endpoint: proxy.endpoint, accessKeyId: 'AKIADITTOFSNOSUCHKEY', secretAccessKey: secret }).open(),
          );
          assertS3Error(
            err,
            S3_ERROR_CODES.CREDENTIALS_REJECTED,
            new RegExp(
              `^S3 rejected the credentials for bucket ${escape(s3.bucket)} \\(InvalidAccessKeyId\\) at ${escape(proxy.endpoint)}: the access key id is not known`,
            ),
            secret,
          );
          assert.deepEqual(
            proxy.log.filter((r) => r.method === 'HEAD').map((r) => r.status),
            [404],
            'the proxy answered the bucket HEAD with 404',
          );

          // The bucket is there and the key is good: the listing shows it, so the store opens and works.
          const good = makeStore({ endpoint: proxy.endpoint, prefix: 'head404' });
          await good.open();
          await good.put('k', Buffer.from('v'));
          assert.deepEqual(await s3.listKeys('head404/'), ['head404/k']);

          const missing = `dittofs-missing-${randomBytes(4).toString('hex')}`;
          assertS3Error(
            await rejection(makeStore({ endpoint: proxy.endpoint, bucket: missing }).open()),
            S3_ERROR_CODES.BUCKET_NOT_FOUND,
            new RegExp(`^S3 bucket ${escape(missing)} does not exist at ${escape(proxy.endpoint)}\\b`),
          );
        } finally {
          await proxy.close();
        }

        // A gateway whose listing names a code of its own: neither a missing bucket nor bad
        // credentials are claimed; its code and message are shown.
        const gatewayError =
          '<?xml version="1.0" encoding="UTF-8"?><Error><Code>GatewayTenantDisabled</Code><Message>Tenant is disabled.</Message></Error>';
        const odd = await startProxy(s3.endpoint, (req) =>
          req.method === 'GET' && new URL(req.url ?? '/', 'http://x').searchParams.get('list-type') === '2'
            ? { status: 404, body: gatewayError }
            : headIs404(req),
        );
        try {
          assertS3Error(
            await rejection(makeStore({ endpoint: odd.endpoint }).open()),
            S3_ERROR_CODES.REQUEST_FAILED,
            new RegExp(
              `^cannot check S3 bucket ${escape(s3.bucket)} at ${escape(odd.endpoint)}: HEAD of the bucket answered 404, and a listing of it failed with GatewayTenantDisabled \\(HTTP 404\\): Tenant is disabled\\.`,
            ),
          );
        } finally {
          await odd.close();
        }
      },
    );

    it('names an endpoint where nothing listens, after the SDK gives up retrying', { timeout: TEST_TIMEOUT_MS }, async () => {
      const endpoint = `http://127.0.0.1:${await closedPort()}`;
      const err = await rejection(makeStore({ endpoint, requestTimeoutMs: 2000, maxAttempts: 2 }).open());
      assertS3Error(
        err,
        S3_ERROR_CODES.UNREACHABLE,
        new RegExp(`^cannot reach the S3 endpoint ${escape(endpoint)}: ECONNREFUSED.*\\(2 attempts\\)$`),
      );
    });

    it(
      'names an endpoint that accepts connections but never answers, after request_timeout per attempt',
      { timeout: TEST_TIMEOUT_MS },
      async () => {
        const held = new Set<net.Socket>();
        const silent = net.createServer((sock) => {
          held.add(sock);
          sock.on('close', () => held.delete(sock));
        });
        await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
        try {
          const endpoint = `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
          const err = await rejection(makeStore({ endpoint, requestTimeoutMs: 300, maxAttempts: 2 }).open());
          assertS3Error(
            err,
            S3_ERROR_CODES.UNREACHABLE,
            new RegExp(`^cannot reach the S3 endpoint ${escape(endpoint)}: TimeoutError: .*300 ms.*\\(2 attempts\\)$`),
          );
        } finally {
          for (const s of held) s.destroy();
          await new Promise<void>((resolve) => silent.close(() => resolve()));
        }
      },
    );
  });

  it('reads a range with a Range header, transferring only the bytes asked for', { skip: NEEDS_S3RVER }, async () => {
    const proxy = await startProxy(s3.endpoint);
    try {
      const store = makeStore({ endpoint: proxy.endpoint });
      const data = randomBytes(1024 * 1024);
      await store.put('ranged', data);
      const part = await store.get('ranged', 300_000, 1000);
      assert.ok(part?.equals(data.subarray(300_000, 301_000)));
      const gets = proxy.log.filter((r) => r.method === 'GET');
      assert.equal(gets.length, 1);
      assert.equal(gets[0]?.range, 'bytes=300000-300999');
      assert.equal(gets[0]?.status, 206);
      assert.equal(gets[0]?.bytes, 1000);
    } finally {
      await proxy.close();
    }
  });

  it(
    'signs its uploads from then on when the S3 server refuses an unsigned one with its CRC32C header',
    { skip: NEEDS_S3RVER },
    async () => {
      const notImplemented =
        '<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code><Message>A header you provided implies functionality that is not implemented</Message></Error>';
      // A server of an older kind: no checksum headers, no unsigned payloads.
      const proxy = await startProxy(s3.endpoint, (req) =>
        req.method === 'PUT' &&
        (req.headers['x-amz-checksum-crc32c'] !== undefined || req.headers['x-amz-content-sha256'] === 'UNSIGNED-PAYLOAD')
          ? { status: 501, body: notImplemented }
          : undefined,
      );
      try {
        const store = makeStore({ endpoint: proxy.endpoint, maxAttempts: 1 });
        assert.equal(store.signsPayload, false);
        const first = randomBytes(70_000);
        const second = randomBytes(30_000);
        await store.put('first', first);
        assert.equal(store.signsPayload, true, 'signs from now on');
        await store.put('second', second);
        assert.deepEqual(
          proxy.log.filter((r) => r.method === 'PUT').map((r) => r.status),
          [501, 200, 200],
          'one refused unsigned PUT, then signed ones only',
        );
        assert.ok((await store.get('first'))?.equals(first));
        assert.ok((await store.get('second'))?.equals(second));
        // Any other refusal is the caller's to see, not a reason to sign.
        const denied = await startProxy(s3.endpoint, (req) =>
          req.method === 'PUT' ? { status: 403, body: '<Error><Code>AccessDenied</Code><Message>no</Message></Error>' } : undefined,
        );
        try {
          const other = makeStore({ endpoint: denied.endpoint, maxAttempts: 1 });
          await assert.rejects(other.put('x', first), /AccessDenied/);
          assert.equal(other.signsPayload, false);
          assert.equal(denied.log.filter((r) => r.method === 'PUT').length, 1);
        } finally {
          await denied.close();
        }
      } finally {
        await proxy.close();
      }
    },
  );

  it('retries a request the server fails with 503, through the SDK retry strategy', { skip: NEEDS_S3RVER }, async () => {
    let failures = 2;
    const slowDown =
      '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>';
    const proxy = await startProxy(s3.endpoint, (req) =>
      req.method === 'PUT' && failures-- > 0 ? { status: 503, body: slowDown } : undefined,
    );
    try {
      const data = randomBytes(50_000);
      await makeStore({ endpoint: proxy.endpoint, maxAttempts: 3 }).put('retried', data);
      assert.deepEqual(
        proxy.log.filter((r) => r.method === 'PUT').map((r) => r.status),
        [503, 503, 200],
      );
      assert.ok((await makeStore().get('retried'))?.equals(data), 'the object is there after the retries');

      failures = 1;
      const err = await rejection(makeStore({ endpoint: proxy.endpoint, maxAttempts: 1 }).put('not-retried', data));
      assertS3Error(err, S3_ERROR_CODES.REQUEST_FAILED, /^S3 PUT s3:\/\/\S+\/not-retried at \S+ failed: SlowDown \(HTTP 503\)/);
    } finally {
      await proxy.close();
    }
  });

  it(
    'fails requests during an outage (an error, never a missing block), and works again after it',
    { skip: NEEDS_S3RVER, timeout: TEST_TIMEOUT_MS },
    async () => {
      const store = makeStore({ prefix: 'outage', requestTimeoutMs: 2000, maxAttempts: 3 });
      await store.open();
      const before = randomBytes(200_000);
      await store.put('before', before);

      await s3.stop();
      const during = randomBytes(200_000);
      const putErr = await rejection(store.put('during', during));
      assertS3Error(
        putErr,
        S3_ERROR_CODES.UNREACHABLE,
        new RegExp(`^S3 PUT s3://${escape(s3.bucket)}/outage/during at ${escape(s3.endpoint)} failed`),
      );
      const getErr = await rejection(store.get('before'));
      assertS3Error(getErr, S3_ERROR_CODES.UNREACHABLE, /^S3 GET /);

      await s3.start();
      // The same store works again: its first requests go to a freshly started s3rver, which a
      // loaded machine may keep slow for longer than the short timeouts the outage needed, so a
      // put that finds it unreachable gets a few more tries; any other error fails at once.
      let again: unknown;
      for (let attempt = 1; attempt <= 5; attempt++) {
        again = await store.put('during', during).then(
          () => null,
          (e: unknown) => e,
        );
        if (!(again instanceof S3BlockStoreError && again.code === S3_ERROR_CODES.UNREACHABLE)) break;
      }
      assert.equal(again, null, `a put after the outage succeeds (last error: ${String(again)})`);
      assert.ok((await store.get('during'))?.equals(during), 'the put retried after the outage is readable');
      assert.ok((await store.get('before'))?.equals(before), 'what was written before the outage survived it');
      assert.deepEqual(await s3.listKeys('outage/'), ['outage/before', 'outage/during']);
    },
  );
});

// A real server that answers the bucket HEAD with 404 for an access key it does not know:
// versitygw without an IAM store (no --iam-dir), as a user may well run it. Built only by
// `hack/install-deps.sh bench`, so skipped (saying so) where it is not.
const VERSITYGW = findVersitygw();
describe(
  'open() against versitygw in single-account mode (404 for an unknown access key)',
  { skip: VERSITYGW === undefined ? 'versitygw not built (hack/install-deps.sh bench builds it)' : false },
  () => {
    let gw: S3TestServer;
    const stores: S3BlockStore[] = [];
    const makeStore = (extra: Parameters<S3TestServer['storeOptions']>[0] = {}): S3BlockStore => {
      const s = new S3BlockStore(gw.storeOptions(extra));
      stores.push(s);
      return s;
    };
    before(async () => {
      gw = await startVersitygw(VERSITYGW ?? '', { bucket: 'dittofs-test', singleAccount: true });
    });
    after(async () => {
      for (const s of stores) await s.close();
      await gw?.close();
    });

    it('says the access key id is unknown, not that the bucket is missing', async () => {
      const secret = `not-the-secret-${randomBytes(8).toString('hex')}`;
      const err = await rejection(makeStore({ accessKeyId: 'AKIADITTOFSNOSUCHKEY', secretAccessKey: secret }).open());
      assertS3Error(
        err,
        S3_ERROR_CODES.CREDENTIALS_REJECTED,
        new RegExp(
          `^S3 rejected the credentials for bucket ${escape(gw.bucket)} \\(XAdminUserNotFound\\) at ${escape(gw.endpoint)}: the access key id is not known`,
        ),
        secret,
      );
    });

    it('still names a missing bucket as missing, and opens an existing one', async () => {
      const bucket = `dittofs-missing-${randomBytes(4).toString('hex')}`;
      assertS3Error(await rejection(makeStore({ bucket }).open()), S3_ERROR_CODES.BUCKET_NOT_FOUND, /^S3 bucket \S+ does not exist at /);
      await makeStore().open();
    });

    it('says the secret does not match for a wrong secret key', async () => {
      const secret = `wrong-${randomBytes(12).toString('hex')}`;
      const err = await rejection(makeStore({ secretAccessKey: secret }).open());
      assertS3Error(err, S3_ERROR_CODES.CREDENTIALS_REJECTED, /\(SignatureDoesNotMatch\)/, secret);
    });
  },
);
