// Open read-only handles of a local store's object files, kept for the next read of the same
// object: a READ of a stored block is then one read on the thread pool instead of an open, a read
// and a close. Objects are immutable under their keys, so a handle never goes stale; one whose file
// is replaced (a put of the same key) or deleted is forgotten, and closed once its reads are done
// (until then a deleted file's space stays in use). At most `max` handles are kept, the least
// recently used closed first, and none longer than `idleMs` unused: another store on the same
// directory may delete what one holds, and only closing frees its space. A handle whose read
// failed is not kept (the next read opens the file again), nor is any after close().
import { open, type FileHandle } from 'node:fs/promises';

interface Entry {
  handle: Promise<FileHandle | null>;
  users: number;
  /** When its last read ended (ms). */
  lastUse: number;
  /** Out of the map (forgotten or pushed out): closed when its last user is done. */
  dropped: boolean;
  /** Its close was asked for (once). */
  closing: boolean;
}

export class ReadHandles {
  /** Least recently used first. */
  private readonly entries = new Map<string, Entry>();
  private expiry: NodeJS.Timeout | null = null;
  private closed = false;
  /** Files opened so far (tests, metrics). */
  opens = 0;

  constructor(
    private readonly max: number,
    private readonly idleMs = 10_000,
  ) {}

  /**
   * Runs `fn` on `file` opened for reading; null (and `fn` not run) when there is no such file.
   * `check`, when given, runs once on a newly opened handle: false means the file is not the one
   * wanted (replaced meanwhile), which counts as no such file. A kept handle is not checked again:
   * whoever replaces the file calls forget().
   */
  async use<T>(file: string, fn: (fh: FileHandle) => Promise<T>, check?: (fh: FileHandle) => Promise<boolean>): Promise<T | null> {
    let e = this.entries.get(file);
    if (e !== undefined) {
      this.entries.delete(file);
      this.entries.set(file, e);
    } else {
      this.opens++;
      e = { handle: openForReading(file, check), users: 0, lastUse: Date.now(), dropped: this.closed, closing: false };
      if (!this.closed) this.entries.set(file, e);
    }
    const entry = e;
    entry.users++;
    this.trim();
    // Kept only after a read that worked: a failed open or read, or no such file (a put may make
    // it next), is not remembered.
    let keep = false;
    try {
      const fh = await entry.handle;
      if (fh === null) return null;
      const r = await fn(fh);
      keep = true;
      return r;
    } finally {
      entry.users--;
      entry.lastUse = Date.now();
      // Not kept, or dropped while in use: out of the map, closed now if nobody else reads it.
      if (!keep || entry.dropped) this.drop(file, entry);
      this.scheduleExpiry();
    }
  }

  /** `file` was replaced or deleted: later reads open it anew. */
  forget(file: string): void {
    const e = this.entries.get(file);
    if (e !== undefined) this.drop(file, e);
  }

  /** Closes every handle (those in use once their reads are done); later reads keep none. */
  close(): void {
    this.closed = true;
    for (const [file, e] of [...this.entries]) this.drop(file, e);
    this.scheduleExpiry();
  }

  get size(): number {
    return this.entries.size;
  }

  private trim(): void {
    for (const [file, e] of this.entries) {
      if (this.entries.size <= this.max) return;
      this.drop(file, e);
    }
  }

  /** Drops handles unused for idleMs; runs while any is kept. */
  private scheduleExpiry(): void {
    if (this.entries.size === 0 || this.closed) {
      if (this.expiry) clearInterval(this.expiry);
      this.expiry = null;
      return;
    }
    if (this.expiry) return;
    this.expiry = setInterval(() => this.expire(), Math.max(1, Math.floor(this.idleMs / 2)));
    this.expiry.unref();
  }

  private expire(): void {
    const cutoff = Date.now() - this.idleMs;
    for (const [file, e] of [...this.entries]) if (e.users === 0 && e.lastUse <= cutoff) this.drop(file, e);
    this.scheduleExpiry();
  }

  private drop(file: string, e: Entry): void {
    if (this.entries.get(file) === e) this.entries.delete(file);
    e.dropped = true;
    if (e.users === 0) closeEntry(e);
  }
}

async function openForReading(file: string, check?: (fh: FileHandle) => Promise<boolean>): Promise<FileHandle | null> {
  let fh: FileHandle;
  try {
    fh = await open(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  if (check === undefined) return fh;
  let ok = false;
  try {
    ok = await check(fh);
  } finally {
    if (!ok) await fh.close().catch(() => undefined);
  }
  return ok ? fh : null;
}

/** Closes the entry's file, once however many times it is asked. */
function closeEntry(e: Entry): void {
  if (e.closing) return;
  e.closing = true;
  e.handle.then((fh) => fh?.close()).catch(() => undefined);
}
