// The crash tests' power cut of the metadata store (volatile-meta.c, restoreVolatileMeta in
// support.ts) on SQLite itself: a child process writes a database in WAL mode as the embedded store
// does (synchronous=NORMAL, its directory synced, the -wal fdatasynced by Node), then SIGKILLs
// itself. After the restore, what an fdatasync covered is there and what came after it is not.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { COMMAND_TIMEOUT_MS } from '../helpers/limits.js';
import { restoreVolatileMeta, volatileMetaEnv } from './support.js';

const require = createRequire(import.meta.url);
const SQLITE = require.resolve('better-sqlite3', { paths: [path.join(process.cwd(), 'server')] });

/** The child: rows 1 and 2, an fdatasync of the -wal, rows 3 and 4 (never synced), SIGKILL. */
const CHILD = `
const Database = require(${JSON.stringify(SQLITE)});
const fs = require('node:fs');
const dir = process.argv[1];
const db = new Database(dir + '/metadata.sqlite');
db.pragma('journal_mode = WAL');
db.pragma('synchronous = NORMAL');
const d = fs.openSync(dir, 'r'); fs.fsyncSync(d); fs.closeSync(d);
db.exec('CREATE TABLE t (x INTEGER)');
db.exec('INSERT INTO t VALUES (1)');
db.exec('INSERT INTO t VALUES (2)');
const wal = fs.openSync(dir + '/metadata.sqlite-wal', 'r');
fs.fdatasync(wal, (err) => {
  if (err) throw err;
  db.exec('INSERT INTO t VALUES (3)');
  db.exec('INSERT INTO t VALUES (4)');
  process.kill(process.pid, 'SIGKILL');
});
`;

const rows = (dir: string): number[] => {
  const r = spawnSync(
    process.execPath,
    [
      '-e',
      `const D = require(${JSON.stringify(SQLITE)}); const db = new D(process.argv[1] + '/metadata.sqlite'); console.log(JSON.stringify(db.prepare('SELECT x FROM t ORDER BY x').all().map((r) => r.x)))`,
      dir,
    ],
    { encoding: 'utf8', timeout: COMMAND_TIMEOUT_MS },
  );
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as number[];
};

void describe('volatile metadata store (the crash tests power cut)', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  void it('keeps what an fdatasync covered and loses what came after it', async () => {
    if (process.env.FAULT_VOLATILE_META === '0') return;
    const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-volatile-meta-'));
    dirs.push(dir);
    const r = spawnSync(process.execPath, ['-e', CHILD, dir], {
      env: { ...process.env, ...volatileMetaEnv() },
      encoding: 'utf8',
      timeout: COMMAND_TIMEOUT_MS,
    });
    assert.equal(r.signal, 'SIGKILL', `child: ${r.status} ${r.stderr}`);
    // Without the restore a SIGKILL loses nothing: all four rows.
    const names = await readdir(dir);
    assert.ok(names.includes('metadata.sqlite-wal.vm-snap'), `no snapshot of the -wal: ${names.join(' ')}`);
    await restoreVolatileMeta(dir);
    assert.ok(!existsSync(path.join(dir, 'metadata.sqlite-shm')), 'the -shm is removed');
    assert.deepEqual(rows(dir), [1, 2]);
  });

  void it('removes a file whose directory entry no sync made durable, empties one never synced', async () => {
    if (process.env.FAULT_VOLATILE_META === '0') return;
    const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-volatile-meta-'));
    dirs.push(dir);
    // metadata.sqlite: its entry synced, its content never; metadata.sqlite-journal: its content
    // synced, its entry never; metadata.sqlite-wal: both, then more written.
    const child = `
const fs = require('node:fs');
const dir = process.argv[1];
const put = (name, text, sync) => { const fd = fs.openSync(dir + '/' + name, 'a'); fs.writeSync(fd, text); if (sync) fs.fdatasyncSync(fd); return fd; };
put('metadata.sqlite', 'unsynced', false);
const wal = put('metadata.sqlite-wal', 'synced', false);
const d = fs.openSync(dir, 'r'); fs.fsyncSync(d); fs.closeSync(d);
fs.fdatasyncSync(wal);
fs.writeSync(wal, ' and more');
put('metadata.sqlite-journal', 'synced, entry not', true);
process.kill(process.pid, 'SIGKILL');
`;
    const r = spawnSync(process.execPath, ['-e', child, dir], {
      env: { ...process.env, ...volatileMetaEnv() },
      encoding: 'utf8',
      timeout: COMMAND_TIMEOUT_MS,
    });
    assert.equal(r.signal, 'SIGKILL', `child: ${r.status} ${r.stderr}`);
    await restoreVolatileMeta(dir);
    assert.deepEqual((await readdir(dir)).filter((n) => !n.includes('.vm-')).sort(), ['metadata.sqlite', 'metadata.sqlite-wal']);
    assert.equal(await readFile(path.join(dir, 'metadata.sqlite'), 'utf8'), '');
    assert.equal(await readFile(path.join(dir, 'metadata.sqlite-wal'), 'utf8'), 'synced');
  });
});
