// The `filesystem` block engine: one file per object under a root directory. Writes go to a
// temporary name, are fsynced, then renamed into place, so a crash never leaves a torn object.
import { randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, statfs, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { BlockStore, BlockStoreCapacity, StoredObject } from './store.js';

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Reads up to `length` bytes at `offset` into `target`; fewer only at the end of the file. */
async function readFully(fh: FileHandle, offset: number, target: Buffer, targetStart: number, length: number): Promise<number> {
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(target, targetStart + got, length - got, offset + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}

const SAFE_KEY = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

const PSEUDO_FS = ['/proc', '/sys', '/dev'];

export class FilesystemBlockStore implements BlockStore {
  readonly kind = 'filesystem';
  private readonly knownDirs = new Set<string>();

  constructor(
    readonly root: string,
    private readonly fsync = true,
  ) {}

  async open(): Promise<void> {
    // Kernel pseudo file systems hold no files, and Node's recursive mkdir below /proc never
    // returns (it spins a CPU): refuse them with a message that says what to change.
    const abs = path.resolve(this.root);
    const pseudo = PSEUDO_FS.find((p) => abs === p || abs.startsWith(`${p}/`));
    if (pseudo) throw new Error(`block store directory ${abs} is under ${pseudo}, which cannot hold files; choose another path`);
    await mkdir(this.root, { recursive: true });
    await rm(path.join(this.root, '.tmp'), { recursive: true, force: true });
    await mkdir(path.join(this.root, '.tmp'), { recursive: true });
  }

  async close(): Promise<void> {}

  private pathOf(key: string): string {
    if (!SAFE_KEY.test(key) || key.split('/').some((s) => s === '.' || s === '..'))
      throw new Error(`invalid block key ${JSON.stringify(key)}`);
    return path.join(this.root, key);
  }

  async put(key: string, data: Buffer): Promise<void> {
    const dest = this.pathOf(key);
    const dir = path.dirname(dest);
    if (!this.knownDirs.has(dir)) {
      const created = await mkdir(dir, { recursive: true });
      if (created !== undefined && this.fsync) {
        // Sync every directory from the first one created up to the root.
        for (let d = path.dirname(dir); d.length >= this.root.length; d = path.dirname(d)) {
          await syncDir(d);
          if (d === this.root) break;
        }
      }
      this.knownDirs.add(dir);
    }
    const tmp = path.join(this.root, '.tmp', randomBytes(8).toString('hex'));
    const fh = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC, 0o600);
    try {
      let off = 0;
      while (off < data.length) {
        const { bytesWritten } = await fh.write(data, off, data.length - off, off);
        off += bytesWritten;
      }
      if (this.fsync) await fh.datasync();
    } finally {
      await fh.close();
    }
    await rename(tmp, dest);
    // The rename (and a new directory) is durable only once the directories holding it are synced.
    if (this.fsync) await syncDir(dir);
  }

  /** Runs `fn` on the object's file, opened for reading; null if there is no such object. */
  private async withFile<T>(key: string, fn: (fh: FileHandle) => Promise<T>): Promise<T | null> {
    let fh: FileHandle;
    try {
      fh = await open(this.pathOf(key), 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    try {
      return await fn(fh);
    } finally {
      await fh.close();
    }
  }

  async readInto(key: string, offset: number, target: Buffer, targetStart: number, length: number): Promise<number | null> {
    return this.withFile(key, (fh) => readFully(fh, offset, target, targetStart, length));
  }

  async get(key: string, offset = 0, length?: number): Promise<Buffer | null> {
    return this.withFile(key, async (fh) => {
      const want = length ?? (await fh.stat()).size - offset;
      if (want <= 0) return Buffer.alloc(0);
      const buf = Buffer.allocUnsafe(want);
      const got = await readFully(fh, offset, buf, 0, want);
      return got === want ? buf : buf.subarray(0, got);
    });
  }

  async delete(key: string): Promise<void> {
    try {
      await unlink(this.pathOf(key));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }

  /** Walks the directories under the prefix (the `.tmp` area of unfinished writes excluded). */
  async *list(prefix: string): AsyncIterable<StoredObject> {
    const slash = prefix.lastIndexOf('/');
    const base = slash < 0 ? '' : prefix.slice(0, slash);
    const stack: string[] = [base];
    while (stack.length > 0) {
      const rel = stack.pop()!;
      let entries;
      try {
        entries = await readdir(path.join(this.root, rel), { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      for (const e of entries) {
        const key = rel === '' ? e.name : `${rel}/${e.name}`;
        if (rel === '' && e.name === '.tmp') continue;
        if (e.isDirectory()) {
          if (key.startsWith(prefix) || prefix.startsWith(`${key}/`)) stack.push(key);
        } else if (e.isFile() && key.startsWith(prefix)) {
          const st = await stat(path.join(this.root, key)).catch(() => null);
          if (st) yield { key, modifiedMs: st.mtimeMs };
        }
      }
    }
  }

  async capacity(): Promise<BlockStoreCapacity> {
    const s = await statfs(this.root);
    return { totalBytes: s.blocks * s.bsize, freeBytes: s.bavail * s.bsize };
  }
}
