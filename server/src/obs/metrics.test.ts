import assert from 'node:assert/strict';
import http from 'node:http';
import { after, describe, it } from 'node:test';
import { BlockCache } from '../blocks/cache.js';
import { MemoryBlockStore } from '../blocks/memory.js';
import { observeBlockStore } from '../blocks/observed.js';
import { BlockService } from '../blocks/service.js';
import { MemoryWal } from '../blocks/wal.js';
import { MemoryMetadataStore } from '../meta/memory.js';
import { sqlErrorReason } from '../meta/sql/observed.js';
import { CommitUncertainError, RetryTransaction } from '../meta/sql/driver.js';
import { MOUNT_PROGRAM, NFS_PROGRAM, NfsProc } from '../nfs3/constants.js';
import { MountProgram } from '../nfs3/mount.js';
import { Nfs3Program } from '../nfs3/nfs.js';
import { mountRpcProgram, nfsRpcProgram } from '../nfs3/programs.js';
import { AuthFlavor, encodeAuthSys, encodeCall } from '../rpc/message.js';
import { RpcServer } from '../rpc/server.js';
import { XdrReader, XdrWriter } from '../rpc/xdr.js';
import { VfsError } from '../vfs/errors.js';
import { shareIdOf } from '../vfs/handle.js';
import { FileService } from '../vfs/service.js';
import { LATENCY_BUCKETS_SECONDS, serveMetrics, ServerMetrics } from './metrics.js';

/** One sample of the text exposition: `name{labels} value`. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `unparsable line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one sample named `name` whose labels include `labels`; undefined if none. */
function valueOf(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const hits = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.ok(hits.length <= 1, `${name} ${JSON.stringify(labels)} matches ${hits.length} samples`);
  return hits[0]?.value;
}

describe('ServerMetrics', () => {
  it('counts requests by protocol, procedure and status, with one latency observation each', async () => {
    const m = new ServerMetrics({ defaultMetrics: false });
    m.requestDone('nfs', 'WRITE', 'ok', 0.0003);
    m.requestDone('nfs', 'WRITE', 'ok', 0.002);
    m.requestDone('nfs', 'WRITE', 'nospc', 0.5);
    m.requestDone('mount', 'MNT', 'ok', 0.00001);
    const s = parseExposition(await m.scrape());
    assert.equal(valueOf(s, 'dittofs_requests_total', { protocol: 'nfs', procedure: 'WRITE', status: 'ok' }), 2);
    assert.equal(valueOf(s, 'dittofs_requests_total', { protocol: 'nfs', procedure: 'WRITE', status: 'nospc' }), 1);
    assert.equal(valueOf(s, 'dittofs_requests_total', { protocol: 'mount', procedure: 'MNT', status: 'ok' }), 1);
    const w = { protocol: 'nfs', procedure: 'WRITE' };
    assert.equal(valueOf(s, 'dittofs_request_duration_seconds_count', w), 3);
    assert.ok(Math.abs(valueOf(s, 'dittofs_request_duration_seconds_sum', w)! - 0.5023) < 1e-9);
    assert.equal(valueOf(s, 'dittofs_request_duration_seconds_bucket', { ...w, le: '0.0005' }), 1);
    assert.equal(valueOf(s, 'dittofs_request_duration_seconds_bucket', { ...w, le: '0.0025' }), 2);
    assert.equal(valueOf(s, 'dittofs_request_duration_seconds_bucket', { ...w, le: '+Inf' }), 3);
    assert.equal(valueOf(s, 'dittofs_request_duration_seconds_bucket', { protocol: 'mount', procedure: 'MNT', le: '0.00005' }), 1);
    // Buckets from 50 µs to 10 s.
    assert.equal(LATENCY_BUCKETS_SECONDS[0], 0.00005);
    assert.equal(LATENCY_BUCKETS_SECONDS.at(-1), 10);
    // A second scrape reports the same totals (counters are published, not added again).
    const again = parseExposition(await m.scrape());
    assert.equal(valueOf(again, 'dittofs_requests_total', { protocol: 'nfs', procedure: 'WRITE', status: 'ok' }), 2);
  });

  it('counts data bytes by share name, and names unknown shares by their hex id', async () => {
    const m = new ServerMetrics({ defaultMetrics: false });
    m.watchShare(7, '/export', () => 123);
    m.bytesWritten(7, 4096);
    m.bytesWritten(7, 100);
    m.bytesRead(7, 50);
    m.bytesRead(0xabc, 1);
    const s = parseExposition(await m.scrape());
    assert.equal(valueOf(s, 'dittofs_written_bytes_total', { share: '/export' }), 4196);
    assert.equal(valueOf(s, 'dittofs_read_bytes_total', { share: '/export' }), 50);
    assert.equal(valueOf(s, 'dittofs_read_bytes_total', { share: '00000abc' }), 1);
    assert.equal(valueOf(s, 'dittofs_dirty_bytes', { share: '/export' }), 123);
  });

  it('reads gauges from their sources at scrape time', async () => {
    const m = new ServerMetrics({ defaultMetrics: false });
    let s = parseExposition(await m.scrape());
    // Before anything is watched: zeros, not errors.
    assert.equal(valueOf(s, 'dittofs_wal_bytes'), 0);
    assert.equal(valueOf(s, 'dittofs_upload_queue_depth', { state: 'waiting' }), 0);
    const wal = { usedBytes: 1000, persistent: true, segmentCount: 3, syncs: 9, writable: true, enospc: 0 };
    const cache = { hits: 5, misses: 2, size: 4096 };
    const uploads = { activeCount: 4, pendingCount: 11 };
    let conns = 2;
    m.watchWal(wal, 1 << 30);
    m.watchReadCache(cache);
    m.watchUploads(uploads);
    m.watchConnections('nfs', () => conns);
    s = parseExposition(await m.scrape());
    assert.equal(valueOf(s, 'dittofs_wal_bytes'), 1000);
    assert.equal(valueOf(s, 'dittofs_wal_max_bytes'), 1 << 30);
    assert.equal(valueOf(s, 'dittofs_wal_segments'), 3);
    assert.equal(valueOf(s, 'dittofs_wal_syncs_total'), 9);
    assert.equal(valueOf(s, 'dittofs_wal_writable'), 1);
    assert.equal(valueOf(s, 'dittofs_wal_enospc_total'), 0);
    assert.equal(valueOf(s, 'dittofs_read_cache_hits_total'), 5);
    assert.equal(valueOf(s, 'dittofs_read_cache_misses_total'), 2);
    assert.equal(valueOf(s, 'dittofs_read_cache_bytes'), 4096);
    assert.equal(valueOf(s, 'dittofs_upload_queue_depth', { state: 'in_flight' }), 4);
    assert.equal(valueOf(s, 'dittofs_upload_queue_depth', { state: 'waiting' }), 11);
    assert.equal(valueOf(s, 'dittofs_open_connections', { adapter: 'nfs' }), 2);
    wal.usedBytes = 0;
    wal.segmentCount = 1;
    wal.writable = false;
    wal.enospc = 2;
    cache.hits = 6;
    conns = 0;
    s = parseExposition(await m.scrape());
    assert.equal(valueOf(s, 'dittofs_wal_bytes'), 0);
    assert.equal(valueOf(s, 'dittofs_wal_writable'), 0);
    assert.equal(valueOf(s, 'dittofs_wal_enospc_total'), 2);
    assert.equal(valueOf(s, 'dittofs_wal_segments'), 1);
    assert.equal(valueOf(s, 'dittofs_read_cache_hits_total'), 6);
    assert.equal(valueOf(s, 'dittofs_open_connections', { adapter: 'nfs' }), 0);
  });

  it('counts upload, block store and database failures', async () => {
    const m = new ServerMetrics({ defaultMetrics: false });
    m.uploadFailed('/export');
    m.uploadFailed('/export');
    m.blockStoreError('s3', 's3', 'put');
    m.dbError('pg', 'connection');
    const s = parseExposition(await m.scrape());
    assert.equal(valueOf(s, 'dittofs_upload_failures_total', { share: '/export' }), 2);
    assert.equal(valueOf(s, 'dittofs_block_store_errors_total', { store: 's3', type: 's3', operation: 'put' }), 1);
    assert.equal(valueOf(s, 'dittofs_db_errors_total', { store: 'pg', reason: 'connection' }), 1);
  });

  it('gives each server its own registry, with the process metrics unless turned off', async () => {
    const a = new ServerMetrics();
    const b = new ServerMetrics();
    a.requestDone('nfs', 'NULL', 'ok', 0.0001);
    const sa = parseExposition(await a.scrape());
    const sb = parseExposition(await b.scrape());
    assert.equal(valueOf(sa, 'dittofs_requests_total', { procedure: 'NULL' }), 1);
    assert.equal(valueOf(sb, 'dittofs_requests_total', { procedure: 'NULL' }), undefined);
    assert.ok(valueOf(sa, 'process_cpu_user_seconds_total')! >= 0);
    assert.ok(valueOf(sb, 'nodejs_heap_size_used_bytes')! > 0);
    const none = parseExposition(await new ServerMetrics({ defaultMetrics: false }).scrape());
    assert.equal(
      none.some((x) => x.name.startsWith('process_') || x.name.startsWith('nodejs_')),
      false,
    );
  });

  it('serves GET /metrics over HTTP; other paths are 404', async () => {
    const m = new ServerMetrics({ defaultMetrics: false });
    m.requestDone('nfs', 'GETATTR', 'ok', 0.001);
    const srv = http.createServer((req, res) => serveMetrics(m, req, res));
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    after(() => srv.close());
    const port = (srv.address() as { port: number }).port;
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    assert.match(text, /^# HELP dittofs_requests_total /m);
    assert.match(text, /^# TYPE dittofs_request_duration_seconds histogram$/m);
    assert.equal(valueOf(parseExposition(text), 'dittofs_requests_total', { procedure: 'GETATTR' }), 1);
    assert.equal((await fetch(`http://127.0.0.1:${port}/`)).status, 404);
    assert.equal((await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST' })).status, 405);
  });
});

describe('the RPC dispatcher and NFS program report to the observer', () => {
  it('labels calls by outcome: ok, an NFS status, an RPC-level error', async () => {
    const m = new ServerMetrics({ defaultMetrics: false });
    const meta = new MemoryMetadataStore();
    const data = new BlockService(new MemoryBlockStore(), meta, {
      shareId: shareIdOf('/export'),
      keyPrefix: 'test',
      blockSize: 65536,
      wal: new MemoryWal(1 << 20),
      cache: new BlockCache(1 << 20),
    });
    const fs = new FileService();
    after(() => fs.close());
    await fs.addShare(
      { name: '/export', readOnly: false, rootSquash: false, anonymousUid: 1, anonymousGid: 1, rootMode: 0o777, rootUid: 0, rootGid: 0 },
      meta,
      data,
    );
    m.watchShare(shareIdOf('/export'), '/export', () => data.pendingBytes());
    const rpc = new RpcServer([nfsRpcProgram(new Nfs3Program(fs, undefined, undefined, m)), mountRpcProgram(new MountProgram(fs))], {
      maxRecordSize: 1 << 21,
      drcSize: 16,
      observer: m,
    });
    const conn = { host: '127.0.0.1', transport: 'tcp' as const };
    const cred = { flavor: AuthFlavor.AUTH_SYS, body: encodeAuthSys({ stamp: 0, machineName: 't', uid: 0, gid: 0, gids: [] }) };
    let xid = 1;
    const call = async (prog: number, proc: number, args: Buffer): Promise<XdrReader> => {
      const reply = await rpc.answer(encodeCall(xid++, prog, 3, proc, cred, args), conn);
      assert.ok(reply);
      const r = new XdrReader(Buffer.concat(reply));
      r.u32();
      r.u32();
      r.u32();
      r.u32();
      r.opaque(400);
      r.u32(); // accept_stat
      return r;
    };
    const mnt = await call(MOUNT_PROGRAM, 1, new XdrWriter().string('/export').finish());
    assert.equal(mnt.u32(), 0);
    const root = Buffer.from(mnt.opaque(64));
    await call(MOUNT_PROGRAM, 1, new XdrWriter().string('/nope').finish());
    await call(NFS_PROGRAM, NfsProc.LOOKUP, new XdrWriter().opaque(root).string('missing').finish());
    const created = await call(
      NFS_PROGRAM,
      NfsProc.CREATE,
      new XdrWriter().opaque(root).string('f').u32(0).u32(0).u32(0).u32(0).u32(0).u32(0).u32(0).finish(),
    );
    assert.equal(created.u32(), 0);
    assert.equal(created.u32(), 1);
    const fh = Buffer.from(created.opaque(64));
    const payload = Buffer.alloc(5000, 7);
    await call(NFS_PROGRAM, NfsProc.WRITE, new XdrWriter().opaque(fh).u64(0).u32(payload.length).u32(0).opaque(payload).finish());
    await call(NFS_PROGRAM, NfsProc.READ, new XdrWriter().opaque(fh).u64(0).u32(3000).finish());
    await call(NFS_PROGRAM, NfsProc.GETATTR, new XdrWriter().opaque(Buffer.alloc(0)).finish()); // an empty handle
    // stable_how 7 does not decode: GARBAGE_ARGS, and no bytes counted.
    await call(NFS_PROGRAM, NfsProc.WRITE, new XdrWriter().opaque(fh).u64(0).u32(1).u32(7).opaque(Buffer.from('z')).finish());

    const s = parseExposition(await m.scrape());
    const req = (protocol: string, procedure: string, status: string): number | undefined =>
      valueOf(s, 'dittofs_requests_total', { protocol, procedure, status });
    assert.equal(req('mount', 'MNT', 'ok'), 1);
    assert.equal(req('mount', 'MNT', 'noent'), 1);
    assert.equal(req('nfs', 'LOOKUP', 'noent'), 1);
    assert.equal(req('nfs', 'CREATE', 'ok'), 1);
    assert.equal(req('nfs', 'WRITE', 'ok'), 1, JSON.stringify(s.filter((x) => x.name === 'dittofs_requests_total')));
    assert.equal(req('nfs', 'READ', 'ok'), 1);
    assert.equal(req('nfs', 'GETATTR', 'badhandle'), 1);
    assert.equal(req('nfs', 'WRITE', 'garbage_args'), 1);
    assert.equal(valueOf(s, 'dittofs_request_duration_seconds_count', { protocol: 'mount', procedure: 'MNT' }), 2);
    assert.equal(valueOf(s, 'dittofs_written_bytes_total', { share: '/export' }), 5000);
    assert.equal(valueOf(s, 'dittofs_read_bytes_total', { share: '/export' }), 3000);
    // 5000 bytes written into a block not yet complete: nothing stored yet.
    assert.equal(valueOf(s, 'dittofs_dirty_bytes', { share: '/export' }), 5000);
  });
});

describe('failure classification', () => {
  it('counts block store failures by operation, not missing objects', async () => {
    const failures: string[] = [];
    const inner = new MemoryBlockStore();
    const store = observeBlockStore(inner, { name: 'm', onError: (op) => failures.push(op) });
    await store.open();
    await store.put('a', Buffer.from('x'));
    assert.deepEqual(await store.get('a'), Buffer.from('x'));
    assert.equal(await store.get('missing'), null);
    inner.put = () => Promise.reject(new Error('disk on fire'));
    await assert.rejects(store.put('b', Buffer.from('y')), /disk on fire/);
    assert.equal(store.kind, 'memory');
    assert.deepEqual(failures, ['put']);
  });

  it("tells the database's failures from the engine's own answers", () => {
    assert.equal(sqlErrorReason(new VfsError('NOENT')), null);
    assert.equal(sqlErrorReason(Object.assign(new Error('dup'), { code: '23505' })), null);
    assert.equal(sqlErrorReason(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' })), 'connection');
    assert.equal(sqlErrorReason(new Error('Connection terminated unexpectedly')), 'connection');
    assert.equal(sqlErrorReason(new CommitUncertainError(new Error('x'))), 'commit_uncertain');
    assert.equal(sqlErrorReason(new RetryTransaction()), 'conflict');
    assert.equal(sqlErrorReason(Object.assign(new Error('deadlock'), { code: '40P01' })), 'conflict');
    assert.equal(sqlErrorReason(Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' })), 'timeout');
    assert.equal(sqlErrorReason(Object.assign(new Error('could not extend file'), { code: '53100' })), 'disk_full');
    assert.equal(sqlErrorReason(Object.assign(new Error('syntax'), { code: '42601' })), 'other');
  });
});
