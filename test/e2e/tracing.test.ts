// OpenTelemetry tracing of a real server process: spans go over OTLP/HTTP (JSON) to a small
// receiver in this test (an HTTP server keeping what is POSTed to /v1/traces), the traffic is an
// nfs-cp of a file big enough to fill a block, and the server is stopped with SIGTERM, which must
// export the last spans. Every NFS call is a span; database calls are children of the call that
// made them, in the same trace; the block upload is a span too.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { COMMAND_TIMEOUT_MS, SUITE_TIMEOUT_MS } from '../helpers/limits.js';
import { addShareUser, takeOverAdmin } from '../helpers/api.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';

const MiB = 1024 * 1024;

/** OTLP/JSON (opentelemetry-proto, JSON mapping) as far as this test reads it. */
interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  boolValue?: boolean;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes?: { key: string; value: OtlpValue }[];
  status?: { code?: number };
}
interface OtlpExport {
  resourceSpans?: {
    resource?: { attributes?: { key: string; value: OtlpValue }[] };
    scopeSpans?: { scope?: { name?: string }; spans?: OtlpSpan[] }[];
  }[];
}

interface Span {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  status: number;
  attrs: Record<string, string | number | boolean>;
  service: string;
}

function flatten(exports: OtlpExport[]): Span[] {
  const out: Span[] = [];
  const attrsOf = (list: { key: string; value: OtlpValue }[] = []): Record<string, string | number | boolean> =>
    Object.fromEntries(
      list.map((a) => [
        a.key,
        a.value.stringValue ?? (a.value.intValue !== undefined ? Number(a.value.intValue) : (a.value.boolValue ?? '')),
      ]),
    );
  for (const e of exports) {
    for (const rs of e.resourceSpans ?? []) {
      const service = String(attrsOf(rs.resource?.attributes)['service.name'] ?? '');
      for (const ss of rs.scopeSpans ?? []) {
        for (const s of ss.spans ?? []) {
          out.push({
            traceId: s.traceId,
            spanId: s.spanId,
            parentSpanId: s.parentSpanId ?? '',
            name: s.name,
            kind: s.kind,
            status: s.status?.code ?? 0,
            attrs: attrsOf(s.attributes),
            service,
          });
        }
      }
    }
  }
  return out;
}

/** An OTLP/HTTP receiver: keeps every JSON body POSTed to /v1/traces. */
async function otlpReceiver(): Promise<{ url: string; exports: OtlpExport[]; contentTypes: string[]; close(): Promise<void> }> {
  const exports: OtlpExport[] = [];
  const contentTypes: string[] = [];
  const srv = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method === 'POST' && req.url === '/v1/traces') {
        contentTypes.push(req.headers['content-type'] ?? '');
        exports.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as OtlpExport);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
      } else {
        res.writeHead(404);
        res.end();
      }
    });
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}/v1/traces`,
    exports,
    contentTypes,
    close: () => new Promise((resolve) => srv.close(() => resolve())),
  };
}

function run(cmd: string, argv: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, argv, { timeout: COMMAND_TIMEOUT_MS, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
      resolve({ code: err ? -1 : 0, stderr });
    });
  });
}

const SPAN_KIND_SERVER = 2;
const SPAN_KIND_CLIENT = 3;
const SPAN_STATUS_ERROR = 2;

describe('tracing of a real server', { timeout: SUITE_TIMEOUT_MS }, () => {
  let srv: DittofsProcess | undefined;
  let tmp: string | undefined;
  after(async () => {
    await srv?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test('NFS calls are spans, with their database calls as children in the same trace', async () => {
    const receiver = await otlpReceiver();
    after(() => receiver.close());
    tmp = await mkdtemp(path.join(os.tmpdir(), 'dittofs-tracing-'));
    srv = await startDittofs({
      env: {
        DITTOFS_TRACING__ENABLED: 'true',
        DITTOFS_TRACING__ENDPOINT: receiver.url,
        DITTOFS_TRACING__SERVICE_NAME: 'dittofs-e2e',
      },
    });
    const src = path.join(tmp, 'in.bin');
    // Larger than one 4 MiB block: the first block is complete, so it is uploaded at once.
    await writeFile(src, randomBytes(5 * MiB));
    const url = `nfs://127.0.0.1/export/traced.bin?nfsport=${srv.nfsPort}&mountport=${srv.nfsPort}`;
    const put = await run('nfs-cp', [src, url]);
    assert.equal(put.code, 0, put.stderr);
    const missing = await run('nfs-cat', [url.replace('traced.bin', 'no-such-file')]);
    assert.notEqual(missing.code, 0);
    // SIGTERM: close() ends with the SDK's shutdown, which exports what is left.
    await srv.stop();
    const output = srv.output();
    srv = undefined;

    const spans = flatten(receiver.exports);
    assert.ok(spans.length > 0, `no spans received\n${output}`);
    assert.ok(
      receiver.contentTypes.every((t) => t.startsWith('application/json')),
      receiver.contentTypes.join(', '),
    );
    assert.ok(
      spans.every((s) => s.service === 'dittofs-e2e'),
      'service.name from tracing.service_name',
    );
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    const names = new Set(spans.map((s) => s.name));
    for (const n of ['mount.MNT', 'nfs.LOOKUP', 'nfs.CREATE', 'nfs.WRITE', 'nfs.COMMIT'])
      assert.ok(names.has(n), `a ${n} span (got ${[...names].join(', ')})`);

    // A call span: SERVER kind, RPC attributes, its status and share.
    const create = spans.find((s) => s.name === 'nfs.CREATE')!;
    assert.equal(create.kind, SPAN_KIND_SERVER);
    assert.equal(create.parentSpanId, '', 'a call span is a root');
    assert.deepEqual(
      [
        create.attrs['rpc.system'],
        create.attrs['rpc.service'],
        create.attrs['rpc.method'],
        create.attrs['dittofs.status'],
        create.attrs['dittofs.share'],
      ],
      ['onc_rpc', 'nfs', 'CREATE', 'ok', '/export'],
    );
    assert.equal(create.attrs['client.address'], '127.0.0.1');
    // An NFS error status is an answer, not a server failure: the span is not marked ERROR.
    const lookupMiss = spans.find((s) => s.name === 'nfs.LOOKUP' && s.attrs['dittofs.status'] === 'noent');
    assert.ok(lookupMiss, 'the LOOKUP of a missing name: a noent LOOKUP span');
    assert.notEqual(lookupMiss.status, SPAN_STATUS_ERROR);

    // Database spans: CLIENT children of the call that made them, in its trace.
    const dbSpans = spans.filter((s) => s.name.startsWith('db.'));
    assert.ok(dbSpans.length > 0, 'database spans');
    const underCalls = dbSpans.filter((d) => {
      let p = byId.get(d.parentSpanId);
      while (p && p.name.startsWith('db.')) p = byId.get(p.parentSpanId);
      return p !== undefined && /^(nfs|mount)\./.test(p.name) && p.traceId === d.traceId;
    });
    assert.ok(underCalls.length > 0, 'database spans under NFS call spans');
    const createChildren = dbSpans.filter((d) => d.traceId === create.traceId);
    assert.ok(createChildren.length > 0, 'CREATE made database calls in its trace');
    for (const d of createChildren) {
      assert.equal(d.kind, SPAN_KIND_CLIENT);
      assert.equal(d.attrs['db.system.name'], 'sqlite', 'the embedded default engine');
      assert.equal(d.attrs['db.namespace'], 'default');
    }
    // A transaction's statements are its children.
    const tx = dbSpans.find((d) => d.name === 'db.transaction' && dbSpans.some((q) => q.parentSpanId === d.spanId));
    assert.ok(tx, 'a db.transaction span with db.query children');

    // The upload of the complete block: a block store span. A clean stop also uploads the dirty
    // 1 MiB tail (if it finishes in time), so that is the only other put there may be.
    const puts = spans.filter((s) => s.name === 'filesystem.put');
    const sizes = puts.map((p) => p.attrs['dittofs.bytes']);
    assert.ok(sizes.includes(4 * MiB), `a filesystem.put span for the complete block (puts: ${sizes.join(', ')})`);
    assert.ok(sizes.every((n) => n === 4 * MiB || n === 1 * MiB) && puts.length <= 2, `puts: ${sizes.join(', ')}`);
    for (const p of puts) assert.equal(p.attrs['dittofs.block_store'], 'default');
  });

  test('SMB requests are spans too: smb.<COMMAND>, their status, share and database children', async () => {
    const receiver = await otlpReceiver();
    after(() => receiver.close());
    tmp ??= await mkdtemp(path.join(os.tmpdir(), 'dittofs-tracing-'));
    srv = await startDittofs({
      env: {
        DITTOFS_TRACING__ENABLED: 'true',
        DITTOFS_TRACING__ENDPOINT: receiver.url,
        DITTOFS_TRACING__SERVICE_NAME: 'dittofs-e2e',
      },
    });
    const base = `http://127.0.0.1:${srv.apiPort}`;
    await addShareUser(base, await takeOverAdmin(base), { username: 'tracer', password: 'tracer-Passw0rd-1', uid: 1400, gid: 1400 });
    const src = path.join(tmp, 'smb-in.bin');
    await writeFile(src, randomBytes(64 * 1024));
    const smb = (cmd: string): Promise<{ code: number; stderr: string }> =>
      run('smbclient', ['//127.0.0.1/export', '-p', String(srv!.smbPort), '-U', 'tracer%tracer-Passw0rd-1', '-c', cmd]);
    const put = await smb(`put ${src} smb-traced.bin`);
    assert.equal(put.code, 0, put.stderr);
    await smb('allinfo no-such-file');
    await srv.stop();
    srv = undefined;

    const spans = flatten(receiver.exports);
    const names = new Set(spans.map((s) => s.name));
    for (const n of ['smb.NEGOTIATE', 'smb.SESSION_SETUP', 'smb.TREE_CONNECT', 'smb.CREATE', 'smb.WRITE', 'smb.CLOSE'])
      assert.ok(names.has(n), `a ${n} span (got ${[...names].join(', ')})`);
    const write = spans.find((s) => s.name === 'smb.WRITE')!;
    assert.equal(write.kind, SPAN_KIND_SERVER);
    assert.deepEqual(
      [write.attrs['rpc.system'], write.attrs['rpc.method'], write.attrs['dittofs.status'], write.attrs['dittofs.share']],
      ['smb2', 'WRITE', 'ok', '/export'],
    );
    // A missing name is an answer, not a server failure.
    const miss = spans.find((s) => s.name === 'smb.CREATE' && s.attrs['dittofs.status'] === 'object_name_not_found');
    assert.ok(miss, 'the CREATE of a missing name has a span with its status');
    assert.notEqual(miss.status, SPAN_STATUS_ERROR);
    const create = spans.find((s) => s.name === 'smb.CREATE' && s.attrs['dittofs.status'] === 'ok')!;
    assert.ok(
      spans.some((d) => d.name.startsWith('db.') && d.traceId === create.traceId),
      'database spans in the trace of an SMB CREATE',
    );
  });
});
