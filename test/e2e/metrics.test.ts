// Prometheus metrics of a real server process after real NFS traffic: nfs-cp (libnfs-utils) writes
// a file and reads it back, then GET /metrics over HTTP is parsed (text exposition format, with a
// small parser here) and must show that traffic. The same run checks the log at `info`: a line per
// connection opened and closed, none per operation.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { COMMAND_TIMEOUT_MS, REPLY_TIMEOUT_MS, SUITE_TIMEOUT_MS } from '../helpers/limits.js';
import { until } from '../helpers/hostile.js';
import { authSys, NfsClient } from '../helpers/rpc-client.js';
import { runTool } from '../helpers/run.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';

const MiB = 1024 * 1024;
const FILE_SIZE = 6 * MiB + 12345;

function run(cmd: string, argv: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, argv, { timeout: COMMAND_TIMEOUT_MS, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
      const exit = (err as { code?: unknown } | null)?.code;
      resolve({ code: err ? (typeof exit === 'number' ? exit : -1) : 0, stderr });
    });
  });
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text exposition format (version 0.0.4): `name{a="b",...} value`. */
function parseExposition(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const t = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (t) types.set(t[1]!, t[2]!);
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    }
    const v = m[3]!;
    samples.push({ name: m[1]!, labels, value: v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v) });
  }
  return { samples, types };
}

const matching = (samples: Sample[], name: string, labels: Record<string, string> = {}): Sample[] =>
  samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));

const sum = (samples: Sample[], name: string, labels: Record<string, string> = {}): number =>
  matching(samples, name, labels).reduce((a, s) => a + s.value, 0);

describe('metrics endpoint of a real server', { timeout: SUITE_TIMEOUT_MS }, () => {
  let srv: DittofsProcess;
  let tmp: string;
  const url = (p: string): string => `nfs://127.0.0.1/export/${p}?nfsport=${srv.nfsPort}&mountport=${srv.nfsPort}`;
  const scrape = async (): Promise<{ samples: Sample[]; types: Map<string, string>; contentType: string }> => {
    const res = await fetch(`http://127.0.0.1:${srv.metricsPort}/metrics`);
    assert.equal(res.status, 200);
    return { ...parseExposition(await res.text()), contentType: res.headers.get('content-type') ?? '' };
  };

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'dittofs-metrics-'));
    srv = await startDittofs({ env: { DITTOFS_LOG_LEVEL: 'info' } });
  });

  after(async () => {
    await srv?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test('NFS traffic from nfs-cp shows in the counters, the histogram and the gauges', async () => {
    const before = await scrape();
    assert.match(before.contentType, /^text\/plain; version=0\.0\.4/);
    assert.equal(sum(before.samples, 'dittofs_requests_total', { protocol: 'nfs', procedure: 'WRITE' }), 0);

    const src = path.join(tmp, 'in.bin');
    const out = path.join(tmp, 'out.bin');
    const content = randomBytes(FILE_SIZE);
    await writeFile(src, content);
    const put = await run('nfs-cp', [src, url('file.bin')]);
    assert.equal(put.code, 0, put.stderr);
    const get = await run('nfs-cp', [url('file.bin'), out]);
    assert.equal(get.code, 0, get.stderr);
    assert.ok((await readFile(out)).equals(content), 'the file reads back as written');

    const { samples, types } = await scrape();
    // Requests: WRITE and READ answered ok, at least one per MiB moved; MOUNT too.
    const writes = sum(samples, 'dittofs_requests_total', { protocol: 'nfs', procedure: 'WRITE', status: 'ok' });
    const reads = sum(samples, 'dittofs_requests_total', { protocol: 'nfs', procedure: 'READ', status: 'ok' });
    assert.ok(writes >= Math.ceil(FILE_SIZE / MiB), `WRITE ok: ${writes}`);
    assert.ok(reads >= Math.ceil(FILE_SIZE / MiB), `READ ok: ${reads}`);
    assert.ok(sum(samples, 'dittofs_requests_total', { protocol: 'mount', procedure: 'MNT', status: 'ok' }) >= 2);
    assert.ok(sum(samples, 'dittofs_requests_total', { protocol: 'nfs', procedure: 'CREATE', status: 'ok' }) >= 1);
    assert.equal(types.get('dittofs_requests_total'), 'counter');

    // Bytes, by share.
    assert.ok(sum(samples, 'dittofs_written_bytes_total', { share: '/export' }) >= FILE_SIZE);
    assert.ok(sum(samples, 'dittofs_read_bytes_total', { share: '/export' }) >= FILE_SIZE);

    // Latency: one observation per answered call, in consistent buckets.
    assert.equal(types.get('dittofs_request_duration_seconds'), 'histogram');
    for (const procedure of ['WRITE', 'READ', 'CREATE', 'GETATTR']) {
      const labels = { protocol: 'nfs', procedure };
      const count = sum(samples, 'dittofs_request_duration_seconds_count', labels);
      assert.equal(count, sum(samples, 'dittofs_requests_total', labels), `${procedure}: histogram count = requests`);
      const buckets = matching(samples, 'dittofs_request_duration_seconds_bucket', labels);
      assert.equal(buckets.find((b) => b.labels.le === '+Inf')?.value, count);
      assert.equal(buckets.find((b) => b.labels.le === '0.00005') !== undefined, true, 'a 50 µs bucket');
      assert.equal(buckets.find((b) => b.labels.le === '10') !== undefined, true, 'a 10 s bucket');
      for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i]!.value >= buckets[i - 1]!.value, 'cumulative buckets');
      assert.ok(sum(samples, 'dittofs_request_duration_seconds_sum', labels) > 0);
    }

    // WAL and cache gauges are there; the WAL holds at least its active segment.
    assert.ok(sum(samples, 'dittofs_wal_segments') >= 1);
    assert.ok(sum(samples, 'dittofs_wal_bytes') >= 24);
    assert.equal(sum(samples, 'dittofs_wal_max_bytes'), 1024 * MiB);
    assert.ok(matching(samples, 'dittofs_wal_syncs_total').length === 1);
    assert.ok(sum(samples, 'dittofs_dirty_bytes', { share: '/export' }) >= 0);
    assert.equal(matching(samples, 'dittofs_upload_queue_depth').length, 2);
    assert.ok(matching(samples, 'dittofs_read_cache_hits_total').length === 1);
    assert.ok(matching(samples, 'dittofs_read_cache_misses_total').length === 1);
    assert.equal(sum(samples, 'dittofs_upload_failures_total'), 0);
    // Process metrics of the server's own registry.
    assert.ok(sum(samples, 'process_cpu_user_seconds_total') > 0);
    assert.ok(sum(samples, 'nodejs_heap_size_used_bytes') > 0);
  });

  test('SMB requests are counted with protocol="smb", the command and the NTSTATUS; a refused logon is logged at info', async () => {
    const r = await runTool('smbclient', ['//127.0.0.1/export', '-p', String(srv.smbPort), '-U', 'nobody-here%wrong-password', '-c', 'ls']);
    assert.match(r.stdout + r.stderr, /NT_STATUS_LOGON_FAILURE/);
    const { samples } = await scrape();
    assert.ok(sum(samples, 'dittofs_requests_total', { protocol: 'smb', procedure: 'NEGOTIATE', status: 'ok' }) >= 1);
    assert.ok(
      sum(samples, 'dittofs_requests_total', { protocol: 'smb', procedure: 'SESSION_SETUP', status: 'more_processing_required' }) >= 1,
    );
    assert.ok(sum(samples, 'dittofs_requests_total', { protocol: 'smb', procedure: 'SESSION_SETUP', status: 'logon_failure' }) >= 1);
    assert.ok(sum(samples, 'dittofs_request_duration_seconds_count', { protocol: 'smb', procedure: 'SESSION_SETUP' }) >= 2);
    // The server's log reaches this process through a pipe, after smbclient has its answer.
    const refusedLines = (): string[] =>
      srv
        .output()
        .split('\n')
        .filter((l) => l.includes('"msg":"SMB logon refused"'));
    await until(() => refusedLines().length >= 1, REPLY_TIMEOUT_MS, 'a log line for the refused logon');
    const refused = refusedLines();
    assert.match(refused[0]!, /"level":"info"/);
    assert.match(refused[0]!, /nobody-here.*no such user/);
  });

  test('the open connections gauge follows a client connecting and leaving', async () => {
    const connections = async (): Promise<number> => sum((await scrape()).samples, 'dittofs_open_connections', { adapter: 'nfs' });
    const waitFor = async (want: (n: number) => boolean): Promise<number> => {
      let n = await connections();
      for (const deadline = Date.now() + REPLY_TIMEOUT_MS; !want(n) && Date.now() < deadline;) {
        await new Promise((r) => setTimeout(r, 50));
        n = await connections();
      }
      return n;
    };
    assert.equal(await waitFor((n) => n === 0), 0, 'no connection left from nfs-cp');
    const a = await NfsClient.connect(srv.nfsPort, authSys(0, 0));
    const b = await NfsClient.connect(srv.nfsPort, authSys(0, 0));
    await a.mount('/export');
    await b.mount('/export');
    assert.equal(await connections(), 2);
    a.close();
    b.close();
    assert.equal(await waitFor((n) => n === 0), 0);
  });

  test('at info, the log has a line per connection event and none per operation', async () => {
    type Line = { level: string; msg: string; peer?: string; requests?: number };
    const parse = (): Line[] =>
      srv
        .output()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Line);
    let lines = parse();
    // The last close may still be on its way to the log (bounded wait).
    for (const deadline = Date.now() + REPLY_TIMEOUT_MS; Date.now() < deadline;) {
      const o = lines.filter((l) => l.msg === 'RPC connection opened').length;
      if (lines.filter((l) => l.msg === 'RPC connection closed').length >= o) break;
      await new Promise((r) => setTimeout(r, 100));
      lines = parse();
    }
    const opened = lines.filter((l) => l.msg === 'RPC connection opened');
    const closed = lines.filter((l) => l.msg === 'RPC connection closed');
    // Two nfs-cp runs and two raw clients.
    assert.ok(opened.length >= 4, `${opened.length} connections opened`);
    assert.equal(closed.length, opened.length);
    for (const l of [...opened, ...closed]) {
      assert.equal(l.level, 'info');
      assert.match(l.peer ?? '', /^127\.0\.0\.1:\d+$/);
    }
    assert.ok(
      closed.some((l) => (l.requests ?? 0) >= Math.ceil(FILE_SIZE / MiB)),
      'the close line counts the requests',
    );
    // Everything else: start-up lines and one "client mounted" per mount, nothing per WRITE/READ.
    const other = lines.filter((l) => !l.msg.startsWith('RPC connection') && l.msg !== 'client mounted');
    assert.ok(other.length < 25, `unexpected log lines: ${other.map((l) => l.msg).join(' | ')}`);
  });
});
