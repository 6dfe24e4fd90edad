import assert from 'node:assert/strict';
import { mkdtemp, rename, rm, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fdsAfterClose, openFds } from '../testing/fds.js';
import { ReadHandles } from './read-handles.js';

/** The whole file, by a positional read (as the store reads: a shared handle has no position of its own). */
async function readWhole(fh: FileHandle): Promise<string> {
  const { size } = await fh.stat();
  const b = Buffer.alloc(size);
  await fh.read(b, 0, size, 0);
  return b.toString();
}

const readAll = (h: ReadHandles, file: string): Promise<string | null> => h.use(file, readWhole);

/** Runs `fn` with a new temporary directory, removed afterwards. */
async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'rh-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('ReadHandles', () => {
  it('opens a file once for many reads, and answers null for a missing one without remembering it', async () => {
    await inTempDir(async (dir) => {
      const h = new ReadHandles(4);
      const f = path.join(dir, 'a');
      await writeFile(f, 'one');
      for (let i = 0; i < 5; i++) assert.equal(await readAll(h, f), 'one');
      assert.equal(h.opens, 1);
      assert.equal(await readAll(h, path.join(dir, 'missing')), null);
      await writeFile(path.join(dir, 'missing'), 'now here');
      assert.equal(await readAll(h, path.join(dir, 'missing')), 'now here', 'absence is not remembered');
      h.close();
    });
  });

  it('a forgotten file (replaced, or deleted) is read anew and its old handle closed', async () => {
    await inTempDir(async (dir) => {
      const h = new ReadHandles(4);
      const f = path.join(dir, 'obj');
      await writeFile(f, 'old');
      assert.equal(await readAll(h, f), 'old');
      await writeFile(path.join(dir, 'tmp'), 'new');
      await rename(path.join(dir, 'tmp'), f);
      assert.equal(await readAll(h, f), 'old', 'kept: objects are immutable, so nobody replaces one without forget()');
      h.forget(f);
      assert.equal(await readAll(h, f), 'new');
      await unlink(f);
      h.forget(f);
      // The handle is closed once its reads are done: nothing keeps the deleted file's space.
      assert.equal(await fdsAfterClose(f), 0);
      assert.equal(await readAll(h, f), null);
    });
  });

  it('keeps at most max handles, closing the least recently used; one in use is closed when its read is done', async () => {
    await inTempDir(async (dir) => {
      const h = new ReadHandles(2);
      const files = ['a', 'b', 'c'].map((n) => path.join(dir, n));
      for (const f of files) await writeFile(f, path.basename(f));
      let release!: () => void;
      let running!: () => void;
      const started = new Promise<void>((r) => (running = r));
      const held = h.use(files[0]!, async (fh) => {
        const gate = new Promise<void>((r) => (release = r));
        running();
        await gate;
        return readWhole(fh);
      });
      // The read starts once the file is open (the thread pool, however busy): waited for, not counted.
      await Promise.race([started, held.then(() => assert.fail('the first read ended before it was released'))]);
      assert.equal(await readAll(h, files[1]!), 'b');
      assert.equal(await readAll(h, files[2]!), 'c');
      assert.equal(h.size, 2, 'a was pushed out');
      assert.equal(await openFds(files[0]!), 1, 'still open while its read runs');
      release();
      assert.equal(await held, 'a', 'the read in flight finishes on its handle');
      assert.equal(await fdsAfterClose(files[0]!), 0, 'closed once done');
      h.close();
      assert.equal(await fdsAfterClose(files[1]!, files[2]!), 0, 'close() closes the rest');
    });
  });

  it('keeps no handle whose read failed, none unused past idleMs, and none after close()', async () => {
    const h = new ReadHandles(8, 50);
    await inTempDir(async (dir) => {
      try {
        const f = path.join(dir, 'x');
        await writeFile(f, 'x');
        await assert.rejects(
          h.use(f, () => Promise.reject(new Error('EIO, say'))),
          /EIO/,
        );
        assert.equal(h.size, 0, 'a failed read drops its handle');
        assert.equal(await readAll(h, f), 'x');
        assert.equal(h.opens, 2, 'the next read opened the file again');
        // The expiry runs every idleMs / 2: waited for, up to 10 s on a slow machine.
        for (let i = 0; i < 1000 && h.size > 0; i++) await new Promise((r) => setTimeout(r, 10));
        assert.equal(h.size, 0, 'unused for idleMs: closed');
        assert.equal(await fdsAfterClose(f), 0);
        h.close();
        assert.equal(await readAll(h, f), 'x', 'reads still work after close()');
        assert.equal(h.size, 0, 'but keep nothing');
        assert.equal(await fdsAfterClose(f), 0);
      } finally {
        h.close();
      }
    });
  });

  it('a check refusing a newly opened file counts as no such file, closes it and keeps nothing; a kept handle is not checked again', async () => {
    await inTempDir(async (dir) => {
      const h = new ReadHandles(4);
      try {
        const f = path.join(dir, 'entry');
        await writeFile(f, 'v1');
        let checks = 0;
        const wanting = (size: number) => async (fh: FileHandle) => (checks++, (await fh.stat()).size === size);
        let ran = false;
        const none = await h.use(f, async () => ((ran = true), 'read'), wanting(99));
        assert.equal(none, null);
        assert.equal(ran, false, 'the read did not run on a refused file');
        assert.equal(h.size, 0);
        assert.equal(await fdsAfterClose(f), 0, 'the refused handle was closed');
        for (let i = 0; i < 3; i++) assert.equal(await h.use(f, readWhole, wanting(2)), 'v1');
        assert.equal(checks, 2, 'checked once more, when opened again, not on each read');
        assert.equal(h.opens, 2);
        assert.equal(await openFds(f), 1);
      } finally {
        h.close();
      }
    });
  });
});
