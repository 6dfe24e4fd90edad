// The `filesystem` block engine: one file per object under a root directory. Writes go to a
// temporary name, are fsynced, then renamed into place, so a crash never leaves a torn object.
//
// Layouts (the marker says which; see MARKER_KIND_FLAT). A store made by this version is flat: an
// object's key `SHARE/INODE/BLOCK` is the file SHARE/INODE@BLOCK (a key's later segments joined
// by `@`, which no key holds), so every object of a share lands in one directory that exists for
// good. A put then costs its object's fsync and a share of one directory fsync among the puts
// running beside it. Stores made before (format 1) keep their nested layout, a directory per file
// (SHARE/INODE/BLOCK), where each new file's object cost a mkdir, a sync of the share directory and
// a sync of its own: 4,000 small objects of new files, 16 at a time as uploads go, took 313-365 µs
// of CPU and 1.26 directory syncs per put nested, 203-255 µs and 0.19 flat (same run).
//
// The directory is the store's own. open() claims it only when it is empty (a fresh volume's
// lost+found aside) or already holds the store's marker file (MARKER), and writes the marker when
// it claims it; a directory made by a DittoFS from before the marker, holding nothing but that
// layout (`.tmp` and one directory per share, named by 8 hex digits), is adopted. System
// directories, the data directory and its parents, and kernel pseudo file systems are refused.
// Nothing is ever deleted outside the layout: at open, only the store's own temporary files
// (16 hex digits, regular files) in `.tmp`; later, only object files under their keys.
import { constants as fsc, type Dir } from 'node:fs';
import {
  lstat,
  mkdir,
  open,
  opendir,
  readdir,
  readFile,
  realpath,
  rename,
  rmdir,
  stat,
  statfs,
  unlink,
  type FileHandle,
} from 'node:fs/promises';
import path from 'node:path';
import { BLOCK_STORE_DIR, storeDirProblem, SYSTEM_DIRS } from '../config/store-dirs.js';
import { syncDir } from '../persisted-id.js';
import { randomHex } from '../random-hex.js';
import { directBuffers, O_DIRECT, writeDirect } from './direct-io.js';
import { ReadHandles } from './read-handles.js';
import type { BlockStore, BlockStoreCapacity, StoredObject } from './store.js';

/** The marker file that says a directory is a DittoFS filesystem block store. */
export const MARKER = '.dittofs-block-store';
const MARKER_KIND = 'dittofs filesystem block store';
/**
 * The marker of a flat store (format 2). A DittoFS from before knows only MARKER_KIND and refuses
 * to open it, rather than serve it without finding its objects.
 */
const MARKER_KIND_FLAT = 'dittofs filesystem block store, flat layout';
/** Flat layout: joins the segments of a key after the first into one file name (no key holds it). */
const FLAT_JOIN = '@';
const TMP_DIR = '.tmp';
/** The names put() gives temporary files. */
const TMP_NAME = /^[0-9a-f]{16}$/;
/** Top-level directories of the layout: one per share, its key prefix (8 hex digits). */
const SHARE_DIR = /^[0-9a-f]{8}$/;
/** On the root of a fresh ext2/3/4 volume (a Kubernetes PVC): an empty volume still has it. */
const LOST_FOUND = 'lost+found';
/** Top-level names that are not objects: no key may start with them. */
const RESERVED = new Set([MARKER, TMP_DIR, LOST_FOUND]);

export { SYSTEM_DIRS };

/** Why `dir` can never be a filesystem block store (see config/store-dirs.ts), or undefined. */
export function blockDirProblem(dir: string, dataDir?: string): string | undefined {
  return storeDirProblem(dir, BLOCK_STORE_DIR, dataDir);
}

export interface FilesystemBlockStoreOptions {
  /** fsync objects and directories (default true). */
  fsync?: boolean;
  /**
   * Write whole-block objects with O_DIRECT when the volume and the buffer allow it (default true):
   * see `put`.
   */
  directIo?: boolean;
  /** The server's data directory: it and its parents are refused. */
  dataDir?: string;
}

/** A store's layout from its marker file: true for flat; throws if it is not a block store's marker. */
async function readLayout(abs: string): Promise<boolean> {
  const marker = path.join(abs, MARKER);
  const st = await lstat(marker);
  let kind: unknown;
  if (st.isFile() && st.size < 4096) {
    try {
      kind = (JSON.parse(await readFile(marker, 'utf8')) as { kind?: unknown }).kind;
    } catch {
      kind = undefined;
    }
  }
  if (kind === MARKER_KIND_FLAT) return true;
  if (kind === MARKER_KIND) return false;
  // A layout this version does not know was made by a newer one: pointing at another directory
  // would be the wrong advice there.
  if (typeof kind === 'string' && kind.startsWith(MARKER_KIND))
    throw new Error(
      `block store directory ${abs} was made by a newer DittoFS (its ${MARKER} says ${JSON.stringify(kind)}): run that version or a later one`,
    );
  throw new Error(`block store directory ${abs}: ${MARKER} is not a DittoFS block store marker; choose an empty directory`);
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

/** Renames of a put into its file's directory, each after making the directory again if it was gone. */
const RENAME_ATTEMPTS = 3;
/** Object files kept open for reading (read-handles.ts): the objects of a few files read at once. */
const READ_HANDLES_KEPT = 64;
/** Directories put() remembers as made (see knownDirs). */
const KNOWN_DIRS_MAX = 4096;
/** Directory entries list() reads at a time. */
const LIST_BATCH = 256;

const noop = (): void => {};

const SAFE_KEY = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

const errno = (e: unknown): string | undefined => (e as NodeJS.ErrnoException).code;

export class FilesystemBlockStore implements BlockStore {
  readonly kind = 'filesystem';
  /**
   * Directories known to exist with their entries on disk, most recent last (at most
   * KNOWN_DIRS_MAX: one per file written, so never all of them; a directory forgotten costs one
   * mkdir that finds it there, and a sync of its parent).
   */
  private readonly knownDirs = new Set<string>();
  /** Directories being made and synced into their parents now: every put into one waits for it. */
  private readonly making = new Map<string, Promise<void>>();
  /** Directory fsyncs running now, and the one queued after each (see syncDir). */
  private readonly dirSyncs = new Map<string, { running: Promise<void>; next: Promise<void> | null }>();
  /** fsyncs of directories issued (metrics, tests). */
  dirFsyncs = 0;
  /** Object files kept open for reading (read-handles.ts). */
  private readonly readHandles = new ReadHandles(READ_HANDLES_KEPT);

  private readonly fsync: boolean;
  /** The store's layout, from its marker (see the head of this file); null until open(). */
  private layout: boolean | null = null;
  /** The root as path.join writes it (the prefix of every object's path). */
  private readonly rootDir: string;
  private readonly dataDir: string | undefined;
  /** False once the volume refused O_DIRECT (tmpfs), or when configured off. */
  private direct: boolean;
  /** Objects written with O_DIRECT / through the page cache (metrics, tests). */
  directPuts = 0;
  bufferedPuts = 0;

  constructor(
    readonly root: string,
    opts: FilesystemBlockStoreOptions = {},
  ) {
    this.fsync = opts.fsync ?? true;
    this.rootDir = path.join(root);
    this.dataDir = opts.dataDir;
    this.direct = (opts.directIo ?? true) && O_DIRECT !== 0;
  }

  async open(): Promise<void> {
    // Kernel pseudo file systems hold no files (and Node's recursive mkdir below /proc never
    // returns); system directories and the data directory are not ours to fill. Checked on the
    // path as given and, when it exists, as symlinks resolve it.
    const abs = path.resolve(this.root);
    const problem = blockDirProblem(abs, this.dataDir) ?? (await this.resolvedProblem(abs));
    if (problem) throw new Error(`block store directory ${problem}`);
    await mkdir(abs, { recursive: true });
    await this.claim(abs);
    await this.cleanTmp(abs);
  }

  private async resolvedProblem(abs: string): Promise<string | undefined> {
    const real = await realpath(abs).catch(() => abs);
    const data = this.dataDir === undefined ? undefined : await realpath(this.dataDir).catch(() => this.dataDir);
    if (real === abs && data === this.dataDir) return undefined;
    const p = blockDirProblem(real, data);
    return p === undefined ? undefined : `${abs} resolves to ${p}`;
  }

  /**
   * Makes sure the directory is this store's: its marker, or empty, or an unmarked old layout;
   * and learns its layout.
   */
  private async claim(abs: string): Promise<void> {
    const entries = await readdir(abs, { withFileTypes: true });
    if (entries.some((e) => e.name === MARKER)) {
      this.layout = await readLayout(abs);
      return;
    }
    const foreign = entries.filter((e) => !(e.isDirectory() && (e.name === TMP_DIR || e.name === LOST_FOUND || SHARE_DIR.test(e.name))));
    if (foreign.length > 0) {
      const names = foreign
        .slice(0, 3)
        .map((e) => JSON.stringify(e.name))
        .join(', ');
      throw new Error(
        `block store directory ${abs} is not empty (${names}${foreign.length > 3 ? ', ...' : ''}) and has no ${MARKER} file: ` +
          `it is not a DittoFS block store; choose an empty directory`,
      );
    }
    // Empty: a new store, flat. The layout of a store from before the marker (share directories):
    // claimed as it is, nested.
    const flat = !entries.some((e) => SHARE_DIR.test(e.name));
    const body = flat
      ? { kind: MARKER_KIND_FLAT, format: 2, created: new Date().toISOString() }
      : { kind: MARKER_KIND, format: 1, created: new Date().toISOString() };
    try {
      // Its content synced before its entry (below): a power loss must not leave an empty marker,
      // which would make the store refuse to open.
      const marker = path.join(abs, MARKER);
      const fh = await open(marker, 'wx', 0o644);
      try {
        await fh.writeFile(`${JSON.stringify(body)}\n`);
        if (this.fsync) await fh.sync();
      } catch (e) {
        await fh.close().catch(noop);
        await unlink(marker).catch(noop); // a partial marker would make the store refuse to open
        throw e;
      }
      await fh.close();
      this.layout = flat;
    } catch (e) {
      if (errno(e) !== 'EEXIST') throw e;
      this.layout = await readLayout(abs); // another open claimed it at the same time
    }
    if (this.fsync) await syncDir(abs);
  }

  /** Removes temporary files of writes a crash cut short: only the ones put() names. */
  private async cleanTmp(abs: string): Promise<void> {
    const tmp = path.join(abs, TMP_DIR);
    await mkdir(tmp, { recursive: true });
    const st = await lstat(tmp);
    if (!st.isDirectory()) throw new Error(`block store directory ${abs}: ${TMP_DIR} is not a directory`);
    for (const name of await readdir(tmp)) {
      if (!TMP_NAME.test(name)) continue;
      const p = path.join(tmp, name);
      const f = await lstat(p).catch(() => null);
      if (!f?.isFile()) continue;
      try {
        await unlink(p);
      } catch (e) {
        if (errno(e) !== 'ENOENT') throw e;
      }
    }
  }

  async close(): Promise<void> {
    this.readHandles.close();
  }

  /** Whether the store is flat (see the head of this file): known once open() read its marker. */
  private get flat(): boolean {
    if (this.layout === null) throw new Error('filesystem block store used before open()');
    return this.layout;
  }

  private pathOf(key: string): string {
    const parts = key.split('/');
    if (!SAFE_KEY.test(key) || parts.some((s) => s === '.' || s === '..') || RESERVED.has(parts[0]!))
      throw new Error(`invalid block key ${JSON.stringify(key)}`);
    if (this.flat && parts.length > 1) return path.join(this.root, parts[0]!, parts.slice(1).join(FLAT_JOIN));
    return path.join(this.root, key);
  }

  async put(key: string, data: Buffer): Promise<void> {
    const dest = this.pathOf(key);
    const dir = path.dirname(dest);
    if (!this.knownDirs.has(dir)) await this.ensureDir(dir);
    const tmp = path.join(this.root, TMP_DIR, randomHex(8));
    if (!(this.direct && directBuffers([data]) && (await this.putDirect(tmp, data)))) {
      await this.writeBuffered(tmp, data);
      this.bufferedPuts++;
    }
    // The directory can go with its file's last object (a delete, or a listing's prune) after it
    // was looked up: made again, a few times at most (a making still in flight may have found it
    // before it went). A later failure is the upload's, retried as any other.
    try {
      for (let attempt = 1; ; attempt++) {
        try {
          await rename(tmp, dest);
          break;
        } catch (e) {
          if (errno(e) !== 'ENOENT' || attempt === RENAME_ATTEMPTS) throw e;
        }
        this.knownDirs.delete(dir);
        await this.ensureDir(dir);
      }
    } catch (e) {
      await unlink(tmp).catch(noop);
      throw e;
    }
    // A handle kept of an object this put replaced would read the old file.
    this.readHandles.forget(dest);
    // Another put may be making the directory again now (after a delete removed it): its entry
    // in the parent is on disk only once that making is done.
    const making = this.making.get(dir);
    if (making) await making;
    // The rename (and a new directory) is durable only once the directory holding it is synced.
    if (this.fsync) await this.syncDir(dir);
  }

  /**
   * Makes `dir` (and its missing parents): the entry of each in its parent is on disk when this
   * settles (dir's even if it was there). Puts into a directory being made wait for the same
   * promise: none may count on a directory whose entry is not synced yet.
   */
  private ensureDir(dir: string): Promise<void> {
    const making = this.making.get(dir);
    if (making !== undefined) return making;
    const made = this.makeDir(dir);
    this.making.set(dir, made);
    const clear = (): void => {
      if (this.making.get(dir) === made) this.making.delete(dir);
    };
    made.then(clear, clear);
    return made;
  }

  private async makeDir(dir: string): Promise<void> {
    await this.mkdirs(dir);
    // A parent another put is making now may not have its own entry on disk yet: wait for it.
    const parent = this.making.get(path.dirname(dir));
    if (parent) await parent;
    // The entry of dir in its parent (dir itself is synced after the object's rename). Also when
    // dir was there: a process may have made it and stopped before syncing its parent (synced
    // once per directory this process remembers).
    if (this.fsync) await this.syncDir(path.dirname(dir));
    this.remember(dir);
  }

  private remember(dir: string): void {
    if (this.knownDirs.size >= KNOWN_DIRS_MAX) this.knownDirs.delete(this.knownDirs.values().next().value as string);
    this.knownDirs.add(dir);
  }

  /**
   * Makes `dir` unless it is there. A missing parent is made first through ensureDir, so that
   * puts under it share its making and the sync of its entry. Not `mkdir -p` on dir: finding dir
   * there, that checks it is a directory with a second call, and fails with ENOENT when the delete
   * of the file's last object removes dir in between (1 to 6 puts in 2,000 such races failed so).
   * A dir removed after this found it is made again by put's rename retry.
   */
  private async mkdirs(dir: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await mkdir(dir);
        return;
      } catch (e) {
        if (errno(e) === 'EEXIST') return;
        if (errno(e) !== 'ENOENT' || attempt > 0 || path.dirname(dir).length <= this.rootDir.length) throw e;
      }
      await this.ensureDir(path.dirname(dir));
    }
  }

  /**
   * fsyncs a directory, sharing fsyncs between callers: a caller that comes while one runs (which
   * may have started before the caller's change) waits for the next, which all callers that
   * came meanwhile share. Many objects stored at once (the idle flush of many small files) cost
   * a few syncs of their common parent, not one each.
   */
  private syncDir(dir: string): Promise<void> {
    const s = this.dirSyncs.get(dir);
    if (s !== undefined) return (s.next ??= s.running.then(noop, noop).then(() => this.startDirSync(dir)));
    return this.startDirSync(dir);
  }

  private startDirSync(dir: string): Promise<void> {
    this.dirFsyncs++;
    const entry: { running: Promise<void>; next: Promise<void> | null } = { running: syncDir(dir), next: null };
    this.dirSyncs.set(dir, entry);
    const done = (): void => {
      if (this.dirSyncs.get(dir) === entry && entry.next === null) this.dirSyncs.delete(dir);
    };
    entry.running.then(done, done);
    return entry.running;
  }

  /**
   * Writes a whole-block object with O_DIRECT (direct-io.ts): copying into fresh page-cache pages
   * was 42% of the server's CPU during an SMB put (and as much of an NFS write), and the block is
   * not read back soon: the WAL and the read cache serve what was just written. Measured again when
   * reads moved to the page cache (512 MiB over NFS, same run): through the page cache a write cost
   * 13 s of server CPU per GiB against 1.7, at 78-93 against 400-553 MiB/s. False, having left
   * nothing to clean up but `tmp`, when the volume (tmpfs) or the buffer's alignment refuses it.
   */
  private async putDirect(tmp: string, data: Buffer): Promise<boolean> {
    const how = await writeDirect(tmp, [data], this.fsync);
    if (how === 'refused') this.direct = false; // the volume cannot: never asked again
    if (how !== 'written') return false;
    this.directPuts++;
    return true;
  }

  private async writeBuffered(tmp: string, data: Buffer): Promise<void> {
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
  }

  /** Runs `fn` on the object's file, opened for reading; null if there is no such object. */
  private withFile<T>(key: string, fn: (fh: FileHandle) => Promise<T>): Promise<T | null> {
    return this.readHandles.use(this.pathOf(key), fn);
  }

  /**
   * Reads go through the page cache, also for objects written with O_DIRECT (see `put`): a first
   * read comes from the device with the kernel's read-ahead, and a re-read from memory. Reading
   * whole objects with O_DIRECT instead (a 4-block read-ahead into pooled buffers) saved about 15%
   * of the CPU per GiB read but was slower on first reads (236 against 292 MiB/s) and half as fast on
   * re-reads (321-486 against 611-866 MiB/s over NFS, 512 MiB, same run), since every re-read went
   * to the device again.
   */
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
    const p = this.pathOf(key);
    try {
      await unlink(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    } finally {
      // Once unlinked (a read may have opened the file meanwhile): a handle kept of a deleted
      // file would hold its space, and a later open finds nothing to keep.
      this.readHandles.forget(p);
    }
    if (!this.flat) await this.pruneFileDir(path.dirname(p));
  }

  /**
   * Removes a file's directory (SHARE/INODE) once it holds no object: else every file ever deleted
   * leaves an empty directory behind, and uses one of the volume's inodes for good. A put that
   * meets the directory gone makes it again (see put). Nothing to sync: an rmdir lost in a crash
   * leaves an empty directory, which the next listing prunes.
   */
  private async pruneFileDir(dir: string): Promise<void> {
    if (path.dirname(path.dirname(dir)) !== this.rootDir) return;
    const known = this.knownDirs.delete(dir);
    try {
      await rmdir(dir);
    } catch (e) {
      // ENOTEMPTY: the file has other objects, and the directory stays as known as it was (else
      // the file's next put would make and sync it again), unless a put is making it again after
      // another delete removed it: that put remembers it once its entry is synced, and puts until
      // then must wait for it. Should another delete remove it later, a put makes it again.
      if (known && errno(e) === 'ENOTEMPTY' && !this.making.has(dir)) this.remember(dir);
    }
  }

  /**
   * Walks the directories under the prefix (the `.tmp` area of unfinished writes excluded). Each
   * directory is read as it is walked, a few hundred entries at a time, never whole: a flat share
   * directory may hold millions of objects (as an array of names, gigabytes), and a garbage
   * collection that deletes objects while it walks sees each of the others once.
   */
  async *list(prefix: string): AsyncIterable<StoredObject> {
    const flat = this.flat;
    // Flat: the objects under a prefix are in the directory of its first segment.
    const slash = flat ? prefix.indexOf('/') : prefix.lastIndexOf('/');
    const base = slash < 0 ? '' : prefix.slice(0, slash);
    const stack: string[] = [base];
    while (stack.length > 0) {
      const rel = stack.pop()!;
      let dir: Dir;
      try {
        dir = await opendir(path.join(this.root, rel), { bufferSize: LIST_BATCH });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      let seen = 0;
      // The directory is closed when the loop ends, or when the caller stops early.
      for await (const e of dir) {
        seen++;
        if (rel === '' && (e.name === TMP_DIR || e.name === MARKER || e.name === LOST_FOUND)) continue;
        // Flat: below the top level, a file's name is the rest of its key.
        const name = flat && rel !== '' ? e.name.replaceAll(FLAT_JOIN, '/') : e.name;
        const key = rel === '' ? name : `${rel}/${name}`;
        if (e.isDirectory()) {
          // Flat: the objects are one level down; nothing deeper is the store's.
          if ((rel === '' || !flat) && (key.startsWith(prefix) || prefix.startsWith(`${key}/`))) stack.push(key);
        } else if (e.isFile() && key.startsWith(prefix)) {
          const st = await stat(path.join(this.root, rel, e.name)).catch(() => null);
          if (st) yield { key, modifiedMs: st.mtimeMs };
        }
      }
      // An empty file directory (left by a DittoFS from before pruneFileDir, or by a crash) goes.
      if (!flat && seen === 0 && rel.split('/').length === 2) await this.pruneFileDir(path.join(this.root, rel));
    }
  }

  async capacity(): Promise<BlockStoreCapacity> {
    const s = await statfs(this.root);
    return { totalBytes: s.blocks * s.bsize, freeBytes: s.bavail * s.bsize };
  }
}
