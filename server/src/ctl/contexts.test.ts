import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { contextNameFor, contextsPath, emptyContexts, loadContexts, saveContexts, selectContext, type ContextsFile } from './contexts.js';
import { CtlError } from './errors.js';

describe('contexts file', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofsctl-contexts-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('location: $DITTOFSCTL_CONFIG, else $XDG_CONFIG_HOME, else ~/.config', () => {
    assert.equal(contextsPath({ DITTOFSCTL_CONFIG: '/etc/ctl.json', XDG_CONFIG_HOME: '/x' }, '/home/u'), '/etc/ctl.json');
    assert.equal(contextsPath({ XDG_CONFIG_HOME: '/x' }, '/home/u'), '/x/dittofsctl/config.json');
    assert.equal(contextsPath({ XDG_CONFIG_HOME: 'relative' }, '/home/u'), '/home/u/.config/dittofsctl/config.json');
    assert.equal(contextsPath({}, '/home/u'), '/home/u/.config/dittofsctl/config.json');
    assert.equal(contextsPath({ DITTOFSCTL_CONFIG: '' }, '/home/u'), '/home/u/.config/dittofsctl/config.json');
  });

  it('a missing file is an empty one', async () => {
    assert.deepEqual(await loadContexts(path.join(dir, 'none', 'config.json')), emptyContexts());
  });

  it('writes with mode 0600 (whatever the umask), creating the directory with 0700, and reads back', async () => {
    const file = path.join(dir, 'new', 'dittofsctl', 'config.json');
    const data: ContextsFile = {
      current_context: 'local',
      contexts: { local: { server: 'http://localhost:8080', username: 'admin', access_token: 'a', refresh_token: 'r' } },
    };
    const old = process.umask(0);
    try {
      await saveContexts(file, data);
    } finally {
      process.umask(old);
    }
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.equal((await stat(path.dirname(file))).mode & 0o777, 0o700);
    assert.deepEqual(await loadContexts(file), data);
  });

  it('tightens the mode of an existing file that was readable by others', async () => {
    const file = path.join(dir, 'loose.json');
    await writeFile(file, '{"contexts":{}}', { mode: 0o644 });
    await saveContexts(file, { contexts: { a: { server: 'http://a' } } });
    assert.equal((await stat(file)).mode & 0o777, 0o600);
  });

  it('is atomic: a rename of a complete temp file, which never stays behind', async () => {
    const sub = path.join(dir, 'atomic');
    const file = path.join(sub, 'config.json');
    await saveContexts(file, { contexts: { a: { server: 'http://a' } } });
    // Many concurrent writers: each result is one complete file, never a mix or a torn write.
    const writes = Array.from({ length: 20 }, (_, i) =>
      saveContexts(file, {
        current_context: `c${i}`,
        contexts: { [`c${i}`]: { server: `http://h${i}`, access_token: 't'.repeat(10_000) } },
      }),
    );
    await Promise.all(writes);
    const final = await loadContexts(file);
    const name = final.current_context!;
    assert.deepEqual(Object.keys(final.contexts), [name]);
    assert.equal(final.contexts[name]!.server, `http://h${name.slice(1)}`);
    assert.deepEqual(await readdir(sub), ['config.json']);
  });

  it('replaces a symlink with a real file, not writing through it', async () => {
    const target = path.join(dir, 'target.json');
    const link = path.join(dir, 'link.json');
    await writeFile(target, '{"contexts":{}}');
    await symlink(target, link);
    await saveContexts(link, { contexts: { x: { server: 'http://x' } } });
    assert.equal(await readFile(target, 'utf8'), '{"contexts":{}}');
    assert.equal((await loadContexts(link)).contexts.x?.server, 'http://x');
  });

  it('a write error names the file and leaves no temp file', async () => {
    const blocker = path.join(dir, 'blocker');
    await writeFile(blocker, 'a file, not a directory');
    await assert.rejects(saveContexts(path.join(blocker, 'config.json'), emptyContexts()), (e: unknown) => {
      assert.ok(e instanceof CtlError);
      assert.match(e.message, /^cannot write .*blocker\/config\.json: /);
      return true;
    });
  });

  it('a corrupt file is an error that says what to do', async () => {
    const file = path.join(dir, 'corrupt.json');
    await writeFile(file, '{"contexts": ');
    await assert.rejects(loadContexts(file), (e: unknown) => {
      assert.ok(e instanceof CtlError);
      assert.match(e.message, /corrupt\.json: not valid JSON/);
      assert.match(e.hint ?? '', /log in again/);
      return true;
    });
    await writeFile(file, '{"contexts": {"a": {"username": "x"}}}');
    await assert.rejects(loadContexts(file), /context "a" has no "server"/);
  });

  it('drops unknown fields and values of the wrong type', async () => {
    const file = path.join(dir, 'extra.json');
    await writeFile(
      file,
      JSON.stringify({ current_context: 1, extra: true, contexts: { a: { server: 'http://a', username: 5, token: 'x' } } }),
    );
    assert.deepEqual(await loadContexts(file), { contexts: { a: { server: 'http://a' } } });
  });

  it('switching: --context wins over the current context; an unknown --context is an error', () => {
    const data: ContextsFile = {
      current_context: 'dev',
      contexts: { dev: { server: 'http://dev:8080' }, prod: { server: 'https://prod' } },
    };
    assert.equal(selectContext(data, undefined)?.name, 'dev');
    assert.equal(selectContext(data, 'prod')?.context.server, 'https://prod');
    assert.throws(() => selectContext(data, 'staging'), /no context named "staging"/);
    assert.equal(selectContext({ contexts: {} }, undefined), undefined);
    assert.equal(selectContext({ current_context: 'gone', contexts: {} }, undefined), undefined);
  });

  it('default context names are host:port', () => {
    assert.equal(contextNameFor('http://localhost:8080'), 'localhost:8080');
    assert.equal(contextNameFor('https://dittofs.example.com'), 'dittofs.example.com');
    assert.equal(contextNameFor('http://[::1]:8080'), '[::1]:8080');
  });
});
