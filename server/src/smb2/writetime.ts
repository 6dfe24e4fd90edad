// The delayed LastWriteTime update that Windows (2016 and later) shows SMB clients, and smbd
// imitates: a WRITE does not move the write time at once. The first WRITE through an open moves it
// about two seconds later; later WRITEs through that open move it only when the open is closed; a
// FLUSH or a SET_INFO (FileBasicInformation, FileEndOfFileInformation) moves it at once (smbtorture
// smb2.timestamps.delayed-*). Only what SMB reports is delayed: the stored mtime moves with every
// WRITE as before, so NFS clients (and their cache checks) see each change at once. A file's entry
// holds the write time SMB shows until the update; entries are capped, and past the cap a WRITE
// shows at once (the behaviour without this module).
import type { FileService } from '../vfs/service.js';
import type { Identity, Inode, Timespec } from '../vfs/types.js';
import { nowTimespec } from '../vfs/types.js';
import type { Open } from './state.js';

/** How long after an open's first WRITE the write time moves (Windows and smbd: 2 s). */
export const WRITE_TIME_DELAY_MS = 2000;
/** Files with a delayed write time at most (each entry is small; past this, WRITEs show at once). */
export const MAX_DELAYED_FILES = 65536;

interface Delayed {
  /** The write time SMB reports until the update. */
  shown: Timespec;
  /** The delayed update of an open's first WRITE, if one is due. */
  timer: NodeJS.Timeout | null;
  /**
   * When that update is due (Date.now() ms; Infinity: none). Queries compare it with the clock, so
   * a timer that fires late (a busy event loop, a loaded machine) never shows the old time past it.
   */
  dueAt: number;
  /** Opens that wrote since the last update, and whether the update at their close must set the time (a WRITE after an update). */
  writers: Map<Open, boolean>;
}

const delayed = new Map<string, Delayed>();
/** Opens whose first WRITE's delayed update has happened: their later WRITEs wait for their close. */
const updatedOnce = new WeakSet<Open>();

const keyOf = (shareId: number, inodeId: number): string => `${shareId}:${inodeId}`;

/** The write time SMB reports for the file: a pending delayed one, else the stored mtime. */
export function shownWriteTime(inode: Inode): Timespec {
  if (delayed.size === 0) return inode.mtime;
  const key = keyOf(inode.shareId, inode.id);
  const d = delayed.get(key);
  if (!d) return inode.mtime;
  if (d.dueAt <= Date.now()) {
    end(key, d);
    return inode.mtime;
  }
  return d.shown;
}

/** Files with a delayed write time now (tests, metrics). */
export function delayedCount(): number {
  return delayed.size;
}

function end(key: string, d: Delayed): void {
  if (d.timer) clearTimeout(d.timer);
  d.timer = null;
  for (const o of d.writers.keys()) updatedOnce.add(o);
  delayed.delete(key);
}

/**
 * Called before a WRITE through `open` changes the file: from now on SMB keeps showing the write
 * time the file had, until the update (see the top of this file). `mtime` reads the file's current
 * stored mtime; it runs only when no update is pending for the file.
 */
export async function beforeWrite(open: Open, mtime: () => Promise<Timespec>): Promise<void> {
  if (open.isDir || open.stream) return;
  const key = keyOf(open.share.id, open.inodeId);
  let d = delayed.get(key);
  if (!d) {
    if (delayed.size >= MAX_DELAYED_FILES) return;
    const shown = await mtime();
    d = delayed.get(key); // another WRITE may have made it meanwhile
    if (!d) {
      d = { shown, timer: null, dueAt: Infinity, writers: new Map() };
      delayed.set(key, d);
    }
  }
  const later = updatedOnce.has(open);
  if (!later && d.timer === null) {
    const entry = d;
    d.dueAt = Date.now() + WRITE_TIME_DELAY_MS;
    d.timer = setTimeout(() => {
      if (delayed.get(key) === entry) end(key, entry);
    }, WRITE_TIME_DELAY_MS);
    d.timer.unref();
  }
  if (!d.writers.get(open)) d.writers.set(open, later);
}

/** FLUSH, SET_INFO of the times or the size, an explicit write time: the pending update happens now. */
export function updateNow(shareId: number, inodeId: number): void {
  const key = keyOf(shareId, inodeId);
  const d = delayed.get(key);
  if (d) end(key, d);
}

/**
 * The open is closed. When it wrote after its first update (and holds no write time of its own),
 * the write time becomes the time of the close, as on Windows; the stored mtime is set for that.
 */
export async function closed(open: Open, fs: FileService | null, id: Identity): Promise<void> {
  const key = keyOf(open.share.id, open.inodeId);
  const d = delayed.get(key);
  if (!d || !d.writers.has(open)) return;
  const setAtClose = d.writers.get(open) === true;
  d.writers.delete(open);
  if (d.writers.size === 0) end(key, d);
  if (setAtClose && fs && !open.heldTimes?.mtime) {
    try {
      await fs.setattr(open.handle, id, { mtime: nowTimespec() });
    } catch {
      // Deleted or no longer ours to change: the data was written; the time stays as it is.
    }
  }
}
