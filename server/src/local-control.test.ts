// The local control socket: private from the moment it exists, answers a backup, leaves nothing behind.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { openTestControlStore } from './control/testing.js';
import type { ControlStore } from './control/store.js';
import { localControlSocket, requestBackup, serveLocalControl } from './local-control.js';

describe('local control socket', () => {
  let store: ControlStore;
  let dir: string;
  before(async () => {
    store = await openTestControlStore();
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-localctl-'));
  });
  after(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('is 0600 at its final path, answers a backup, and leaves no staging directory or socket behind', async () => {
    // A permissive umask: the socket must still never be reachable by others.
    const old = process.umask(0);
    let local;
    try {
      local = await serveLocalControl(dir, store, 'test', pino({ level: 'silent' }));
    } finally {
      process.umask(old);
    }
    assert.ok(local);
    assert.equal(local.path, localControlSocket(dir));
    const st = await stat(local.path);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
    assert.deepEqual(await readdir(dir), ['dittofs.sock']);
    const backup = JSON.parse(await requestBackup(local.path)) as { generation: number };
    assert.equal(typeof backup.generation, 'number');
    await local.close();
    assert.deepEqual(await readdir(dir), []);
  });

  it('replaces a socket file left behind by a crash', async () => {
    const first = await serveLocalControl(dir, store, 'test', pino({ level: 'silent' }));
    assert.ok(first);
    // Simulate a crash: the listener goes away but its file stays.
    const second = await serveLocalControl(dir, store, 'test', pino({ level: 'silent' }));
    assert.ok(second);
    await requestBackup(second.path);
    await second.close();
    await first.close();
    assert.deepEqual(await readdir(dir), []);
  });
});
