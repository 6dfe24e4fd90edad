// What a postgres URL makes the pg driver read or connect to besides a network address, read as the
// driver reads it, and the check of those files (never opened here: a FIFO or a device is refused
// from its stat alone).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import parsePg from 'pg-connection-string';
import { checkPostgresUrlFiles, postgresUrlAdminOnly, postgresUrlFiles, postgresUrlSocketDir } from './postgres-url.js';

describe('postgres URL parameters', () => {
  it('finds the files the driver reads, names decoded, the last of a name winning, empty ones skipped', () => {
    assert.deepEqual(postgresUrlFiles('postgres://u@h/db?sslmode=verify-full'), []);
    assert.deepEqual(postgresUrlFiles('postgres://u@h/db?ssl%72ootcert=/a&sslkey=&sslcert=/b&sslcert=/c'), [
      { param: 'sslcert', path: '/c' },
      { param: 'sslrootcert', path: '/a' },
    ]);
    // With a space the driver percent-encodes the URL first: the same files.
    assert.deepEqual(postgresUrlFiles('postgres://u@h/db?application_name=a b&sslkey=/k'), [{ param: 'sslkey', path: '/k' }]);
    assert.deepEqual(postgresUrlFiles('postgres://u@/db?sslkey=/k'), [{ param: 'sslkey', path: '/k' }], 'no host');
    assert.deepEqual(postgresUrlFiles('postgres://u@h/db?SSLKEY=/k'), [], 'the driver reads lower-case names only');
  });

  it('agrees with the driver on the host', () => {
    for (const url of [
      'postgres://u@%2Fvar%2Frun%2Fpostgresql/db',
      'postgres://u@h/db?host=/tmp',
      'postgres://u@/db?host=%2Ftmp',
      'postgres://u@h:5432/db',
      'postgres://u@[::1]:5432/db',
    ]) {
      const host = parsePg.parse(url).host ?? '';
      assert.equal(postgresUrlSocketDir(url), host.startsWith('/') ? host : undefined, url);
    }
  });

  it('says why only an admin may give a URL naming files or a local socket', () => {
    assert.equal(postgresUrlAdminOnly('postgres://u:pw@db.example.com:5432/x?sslmode=verify-full'), undefined);
    assert.match(
      postgresUrlAdminOnly('postgres://u@h/db?sslrootcert=/dev/zero') ?? '',
      /^the URL parameter sslrootcert names a file on the server's own file system, .*only an admin/,
    );
    assert.match(postgresUrlAdminOnly('postgres://u@h/db?ssl%6Bey=&sslcert=/c') ?? '', /^the URL parameters sslcert, sslkey name files/);
    assert.match(postgresUrlAdminOnly('postgres://u@h/db?host=/var/run/postgresql') ?? '', /"\/var\/run\/postgresql" is a unix socket/);
    assert.match(postgresUrlAdminOnly('postgres://u@%2Ftmp/db') ?? '', /"\/tmp" is a unix socket/);
  });
});

describe('files a postgres URL names', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-pg-url-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const url = (param: string, file: string) => `postgres://u@h/db?${param}=${encodeURIComponent(file)}`;

  it('a regular file of at most 1 MiB passes', async () => {
    const ca = path.join(dir, 'ca.pem');
    await writeFile(ca, '-----BEGIN CERTIFICATE-----\n');
    await checkPostgresUrlFiles(url('sslrootcert', ca));
    await checkPostgresUrlFiles('postgres://u@h/db');
  });

  it('anything else is refused from its stat, naming the parameter, without opening it', async () => {
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const big = path.join(dir, 'big.pem');
    const f = await open(big, 'w');
    await f.truncate(2 * 1024 * 1024 + 1); // sparse
    await f.close();
    for (const [param, file, why] of [
      ['sslrootcert', fifo, /^postgres URL parameter sslrootcert: ".*fifo" is a FIFO, not a regular file/],
      ['sslcert', '/dev/null', /^postgres URL parameter sslcert: "\/dev\/null" is a character device, not a regular file/],
      ['sslkey', dir, /^postgres URL parameter sslkey: ".*" is a directory, not a regular file/],
      ['ssl%72ootcert', big, /^postgres URL parameter sslrootcert: ".*big\.pem" is 2097153 bytes, more than the 1MiB a certificate/],
      ['sslrootcert', path.join(dir, 'none'), /^postgres URL parameter sslrootcert: ".*none" does not exist$/],
    ] as const) {
      await assert.rejects(checkPostgresUrlFiles(url(param, file)), { message: why });
    }
  });
});
