import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, writeSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { createLogger, openLogFile, setLogLevel, stdoutIsFile, teeDestination } from './logger.js';

describe('setLogLevel', () => {
  it('changes the level of the root logger and of children made before the change', () => {
    const lines: { level: string; msg: string; store?: string }[] = [];
    const out = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l) as (typeof lines)[number]);
        done();
      },
    });
    const root = createLogger('info', out);
    const child = root.child({ store: 'default' });
    child.debug('hidden');
    setLogLevel(root, 'debug');
    child.debug('shown');
    root.trace('hidden too');
    setLogLevel(root, 'error');
    child.warn('hidden again');
    root.error('shown again');
    assert.deepEqual(
      lines.map((l) => [l.level, l.msg, l.store]),
      [
        ['debug', 'shown', 'default'],
        ['error', 'shown again', undefined],
      ],
    );
    assert.equal(child.level, 'error');
  });

  it('rejects an unknown level, naming the known ones', () => {
    const root = createLogger('info', new Writable({ write: (_c, _e, done) => done() }));
    assert.throws(() => setLogLevel(root, 'verbose'), {
      name: 'RangeError',
      message: /unknown log level "verbose" \(expected one of trace, debug/,
    });
    assert.equal(root.level, 'info');
  });
});

describe('teeDestination and the log file', () => {
  it('writes every line to each target; the level change applies to all of them', async () => {
    const a: string[] = [];
    const b: string[] = [];
    const sink = (into: string[]) =>
      new Writable({
        write(chunk: Buffer, _enc, done) {
          into.push(
            ...chunk
              .toString()
              .split('\n')
              .filter((l) => l !== ''),
          );
          done();
        },
      });
    const root = createLogger('info', teeDestination(sink(a), sink(b)));
    const child = root.child({ component: 'x' });
    child.debug('hidden');
    setLogLevel(root, 'debug');
    child.debug('shown');
    setLogLevel(root, 'warn');
    root.info('hidden again');
    root.warn('warned');
    await new Promise<void>((resolve, reject) => root.flush((err) => (err ? reject(err) : resolve())));
    const msgs = (lines: string[]) => lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
    assert.deepEqual(msgs(a), ['shown', 'warned']);
    assert.deepEqual(msgs(b), ['shown', 'warned']);
  });

  it('openLogFile appends (mode 0640, directory created); stdoutIsFile tells a file from stdout', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-logger-'));
    try {
      const file = path.join(dir, 'sub', 'dittofs.log');
      await mkdir(path.dirname(file));
      await writeFile(file, 'before\n');
      const fd = openLogFile(file);
      writeSync(fd, 'after\n');
      closeSync(fd);
      assert.equal(await readFile(file, 'utf8'), 'before\nafter\n');
      const fresh = path.join(dir, 'new', 'deeper', 'x.log');
      closeSync(openLogFile(fresh));
      assert.equal((await stat(fresh)).mode & 0o777, 0o640 & ~process.umask());
      assert.equal(stdoutIsFile(file), false);
      assert.equal(stdoutIsFile(path.join(dir, 'missing.log')), false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('a log file on a full disk', () => {
  it('stops that log, says so once on stderr, and never takes the process down', () => {
    // /dev/full answers every write with ENOSPC, as a full data-directory volume does. Without the
    // error listener the first failed write is an uncaught exception and the child dies.
    const logger = path.join(path.dirname(fileURLToPath(import.meta.url)), 'logger.ts');
    const script = `
      import { createProcessLogger } from ${JSON.stringify(logger)};
      const log = createProcessLogger('info', '/dev/full');
      for (let i = 0; i < 200; i++) log.info({ i }, 'a line the disk has no room for');
      await new Promise((r) => setTimeout(r, 300));
      for (let i = 0; i < 200; i++) log.info({ i }, 'more lines');
      process.stderr.write('still alive\\n');
    `;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /still alive/);
    const warnings = r.stderr.split('\n').filter((l) => l.includes('writing the log to /dev/full failed'));
    assert.equal(warnings.length, 1, r.stderr);
    assert.match(warnings[0]!, /ENOSPC/);
  });
});
