import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatStatus, type ServerStatus } from './daemon.js';

const status = (checks: ServerStatus['checks']): ServerStatus => ({
  running: true,
  pid: 42,
  pid_file: 'dittofs.pid',
  started_at: null,
  uptime_seconds: null,
  ready: true,
  checks,
  api: { enabled: true, url: 'http://127.0.0.1:8080' },
  nfs: { enabled: true, port: 12049, bind: '0.0.0.0', address: null },
  log_file: null,
});

describe('dittofs status text', () => {
  it('shows an ok check that carries a detail as a warning, with the detail', () => {
    const text = formatStatus(
      status({
        wal: { ok: true },
        'wal:data': { ok: true, detail: '1 block(s) not uploaded: WAL data failed its CRC32C' },
        s3: { ok: false },
      }),
    );
    assert.match(text, /dittofs is running \(pid 42\), ready/);
    assert.match(
      text,
      /checks {4}wal ok, wal:data WARNING \(1 block\(s\) not uploaded: WAL data failed its CRC32C\), s3 FAILING \(no detail\)/,
    );
  });
});
