// Directory change events, for SMB CHANGE_NOTIFY (and any other watcher): the file service publishes
// what either protocol changed in a directory (an entry added, removed, renamed; a file modified or
// its attributes changed), by metadata store and directory inode id. With nobody watching a store,
// publishing costs one Map lookup (callers check `watching()` before building an event).
//
// A watcher of a whole tree (WATCH_TREE) hears its own directory's events directly; an event deeper
// down reaches it through an ancestor walk (the directories' parent links, at most MAX_DEPTH
// levels, only while tree watchers exist on that store) and is reported to it as "something changed
// below" (the SMB side answers NOTIFY_ENUM_DIR: the client enumerates again), since a directory
// does not know its own name.
import type { Logger } from 'pino';
import type { Inode } from './types.js';

/** MS-FSCC 2.7.1 FILE_NOTIFY_INFORMATION Action. */
export const ChangeAction = Object.freeze({
  ADDED: 1,
  REMOVED: 2,
  MODIFIED: 3,
  RENAMED_OLD_NAME: 4,
  RENAMED_NEW_NAME: 5,
} as const);
export type ChangeAction = (typeof ChangeAction)[keyof typeof ChangeAction];

/** MS-SMB2 2.2.35 CompletionFilter bits: what kind of change an event is. */
export const ChangeFilter = Object.freeze({
  FILE_NAME: 0x001,
  DIR_NAME: 0x002,
  ATTRIBUTES: 0x004,
  SIZE: 0x008,
  LAST_WRITE: 0x010,
  LAST_ACCESS: 0x020,
  CREATION: 0x040,
  EA: 0x080,
  SECURITY: 0x100,
} as const);

export interface DirChangeEvent {
  /** The metadata store (shares may share one: events are per store, not per share). */
  store: object;
  /** The directory whose entry changed. */
  dirId: number;
  /** The entry's name (bytes, as stored). */
  name: Buffer;
  action: ChangeAction;
  /** ChangeFilter bits describing the change. */
  filter: number;
  /** The inode the entry names. */
  inodeId: number;
  isDir: boolean;
  /** The entry's directory was deleted (not moved): its own watchers learn that it is gone. */
  deleted: boolean;
}

export interface ChangeWatcher {
  /** An event in the watched directory itself. */
  changed(e: DirChangeEvent): void;
  /** Tree watchers: an event somewhere below a subdirectory. */
  changedBelow(e: DirChangeEvent): void;
  /** The watched directory was removed. */
  gone(): void;
}

/** Parent links followed at most when looking for tree watchers above an event. */
const MAX_DEPTH = 64;

interface StoreWatchers {
  /** Directory id -> its watchers. */
  byDir: Map<number, Set<ChangeWatcher>>;
  /** Directory id -> tree watchers on it (a subset of byDir). */
  trees: Map<number, Set<ChangeWatcher>>;
  /** Looks a directory's parent up (for the tree walk). */
  parentOf: (dirId: number) => Promise<number | null>;
}

export class ChangeFeed {
  private readonly stores = new Map<object, StoreWatchers>();

  constructor(private readonly log?: Logger) {}

  /** Is anybody watching a directory of this store? (Check before building an event.) */
  watching(store: object): boolean {
    return this.stores.has(store);
  }

  /**
   * Watches directory `dirId` of `store`; `tree` also hears (coarsely) about changes below it.
   * `getInode` serves the ancestor walk. Returns the function that stops watching.
   */
  watch(store: object, dirId: number, watcher: ChangeWatcher, tree: boolean, getInode: (id: number) => Promise<Inode | null>): () => void {
    let s = this.stores.get(store);
    if (!s) {
      s = {
        byDir: new Map(),
        trees: new Map(),
        parentOf: async (id) => {
          const i = await getInode(id);
          return i && i.parent !== i.id ? i.parent : null;
        },
      };
      this.stores.set(store, s);
    }
    const add = (m: Map<number, Set<ChangeWatcher>>): void => {
      let set = m.get(dirId);
      if (!set) m.set(dirId, (set = new Set()));
      set.add(watcher);
    };
    add(s.byDir);
    if (tree) add(s.trees);
    const st = s;
    return () => {
      for (const m of [st.byDir, st.trees]) {
        const set = m.get(dirId);
        if (set?.delete(watcher) && set.size === 0) m.delete(dirId);
      }
      if (st.byDir.size === 0 && this.stores.get(store) === st) this.stores.delete(store);
    };
  }

  /**
   * Directory `dirId` of `store` is delete-pending (it goes when its last open closes): its own
   * watchers are told it is gone now, as Windows answers their waiting requests DELETE_PENDING.
   */
  deletePending(store: object, dirId: number): void {
    const own = this.stores.get(store)?.byDir.get(dirId);
    if (own) for (const w of [...own]) w.gone();
  }

  /** Tells the watchers of `e.dirId` (and tree watchers above it) about a change. */
  publish(e: DirChangeEvent): void {
    const s = this.stores.get(e.store);
    if (!s) return;
    const direct = s.byDir.get(e.dirId);
    if (direct) for (const w of [...direct]) w.changed(e);
    if (e.deleted) {
      const own = s.byDir.get(e.inodeId);
      if (own) for (const w of [...own]) w.gone();
    }
    if (s.trees.size > 0) void this.walkUp(s, e);
  }

  private async walkUp(s: StoreWatchers, e: DirChangeEvent): Promise<void> {
    try {
      let id: number | null = e.dirId;
      for (let depth = 0; depth < MAX_DEPTH && id !== null && s.trees.size > 0; depth++) {
        id = await s.parentOf(id);
        if (id === null) return;
        const set = s.trees.get(id);
        if (set) for (const w of [...set]) w.changedBelow(e);
      }
    } catch (err) {
      this.log?.debug({ err }, 'change notification: ancestor walk failed');
    }
  }
}
