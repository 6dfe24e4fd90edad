// The `memory` metadata engine: everything in process memory, lost on exit. For tests and
// throwaway shares. It mirrors the SQL engines' tables: inodes, dirents (ordered by cookie), blocks.
import { VfsError } from '../vfs/errors.js';
import { randomGeneration } from '../vfs/handle.js';
import type { AttrChanges, DirEntry, Inode, NewInode, Timespec } from '../vfs/types.js';
import { copyInode, DOS_ATTRS_STORED, FileType, timespecEqual } from '../vfs/types.js';
import { unlinkCounts } from './links.js';
import {
  BlockConflictError,
  type BlockRef,
  type BlockSwitch,
  type InodeMetaChange,
  type InodeMetaKind,
  type InodeMetaLimits,
  type InodeMetaRecord,
  type MetadataStore,
  metaRecordSize,
  type ReaddirPage,
  type RemoveResult,
  NamesChangedError,
  type RenameExpect,
  type RenameResult,
  type ShareUsage,
  type StreamEntry,
  MAX_STREAMS_PER_FILE,
} from './store.js';

interface Dirent {
  name: Buffer;
  cookie: number;
  child: number;
  live: boolean;
}

interface DirState {
  byName: Map<string, Dirent>;
  /** Sorted by cookie; removed entries stay (live=false) until compaction. */
  order: Dirent[];
  dead: number;
  nextCookie: number;
}

/** First cookie handed to a real entry; 1 and 2 belong to "." and "..". */
export const FIRST_COOKIE = 3;

const key = (name: Buffer): string => name.toString('latin1');
const copyTs = (t: Timespec): Timespec => ({ sec: t.sec, nsec: t.nsec });

/** A change (a truncate's cut or size) under lease `token` of a file stored or cut under a newer one since (nothing changed). */
function staleLease(inodeId: number, token: number): BlockConflictError {
  return new BlockConflictError(`inode ${inodeId} was stored or cut under a newer write lease than ${token}`, true);
}

export class MemoryMetadataStore implements MetadataStore {
  readonly kind = 'memory';
  private inodes = new Map<number, Inode>();
  private dirs = new Map<number, DirState>();
  private roots = new Map<number, number>();
  private blocks = new Map<number, Map<number, BlockRef>>();
  /** file id -> stream name (latin1 key) -> stream */
  private streams = new Map<number, Map<string, { name: Buffer; inode: number }>>();
  /** `inode/index` -> the fencing token its row was switched under (block switches with a condition only). */
  private readonly blockTokens = new Map<string, number>();
  /** inode -> the newest token it was truncated under. */
  private readonly fileFences = new Map<number, number>();
  /** The newest token a size of the file was stored under (AttrChanges.sizeToken, leaseToken). */
  private readonly sizeTokens = new Map<number, number>();
  private nextId = 1;
  /** inode -> `kind/name (latin1)` -> record (migration 5's inode_meta). */
  private readonly meta = new Map<number, Map<string, InodeMetaRecord & { kind: number }>>();

  async open(): Promise<void> {}
  async close(): Promise<void> {}

  private mustInode(id: number): Inode {
    const i = this.inodes.get(id);
    if (!i) throw new VfsError('STALE', `inode ${id} does not exist`);
    return i;
  }

  private mustDir(id: number): DirState {
    const inode = this.mustInode(id);
    const d = this.dirs.get(id);
    if (inode.type !== FileType.DIR || !d) throw new VfsError('NOTDIR', `inode ${id} is not a directory`);
    return d;
  }

  private newInode(shareId: number, init: NewInode, now: Timespec, parent: number): Inode {
    const id = this.nextId++;
    const inode: Inode = {
      id,
      shareId,
      type: init.type,
      mode: init.mode & 0o7777,
      uid: init.uid,
      gid: init.gid,
      size: init.size,
      nlink: init.type === FileType.DIR ? 2 : 1,
      rdevMajor: init.rdevMajor,
      rdevMinor: init.rdevMinor,
      atime: copyTs(init.atime ?? now),
      mtime: copyTs(init.mtime ?? now),
      ctime: copyTs(now),
      btime: copyTs(init.btime ?? now),
      dosAttrs: (init.dosAttrs ?? 0) & DOS_ATTRS_STORED,
      generation: randomGeneration(),
      parent: init.type === FileType.DIR ? (parent === 0 ? id : parent) : 0,
      target: init.target ? Buffer.from(init.target) : null,
      createVerifier: init.createVerifier ? Buffer.from(init.createVerifier) : null,
    };
    this.inodes.set(id, inode);
    if (init.type === FileType.DIR) this.dirs.set(id, { byName: new Map(), order: [], dead: 0, nextCookie: FIRST_COOKIE });
    return inode;
  }

  async ensureRoot(shareId: number, init: NewInode): Promise<Inode> {
    const existing = this.roots.get(shareId);
    if (existing !== undefined) return copyInode(this.mustInode(existing));
    const root = this.newInode(shareId, { ...init, type: FileType.DIR }, init.mtime ?? { sec: Math.floor(Date.now() / 1000), nsec: 0 }, 0);
    this.roots.set(shareId, root.id);
    return copyInode(root);
  }

  async getInode(id: number): Promise<Inode | null> {
    const i = this.inodes.get(id);
    return i ? copyInode(i) : null;
  }

  async lookup(dirId: number, name: Buffer): Promise<Inode | null> {
    const d = this.mustDir(dirId);
    const e = d.byName.get(key(name));
    return e ? copyInode(this.mustInode(e.child)) : null;
  }

  async readdir(dirId: number, afterCookie: number, limit: number): Promise<ReaddirPage> {
    const d = this.mustDir(dirId);
    // First entry with cookie > afterCookie.
    let lo = 0;
    let hi = d.order.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (d.order[mid]!.cookie <= afterCookie) lo = mid + 1;
      else hi = mid;
    }
    const entries: DirEntry[] = [];
    let i = lo;
    for (; i < d.order.length && entries.length < limit; i++) {
      const e = d.order[i]!;
      if (!e.live) continue;
      entries.push({ name: e.name, cookie: e.cookie, inode: copyInode(this.mustInode(e.child)) });
    }
    while (i < d.order.length && !d.order[i]!.live) i++;
    return { entries, eof: i >= d.order.length };
  }

  private addEntry(dirId: number, d: DirState, name: Buffer, child: number): void {
    const e: Dirent = { name: Buffer.from(name), cookie: d.nextCookie++, child, live: true };
    d.byName.set(key(name), e);
    d.order.push(e);
    void dirId;
  }

  private dropEntry(d: DirState, name: Buffer): void {
    const e = d.byName.get(key(name));
    if (!e) return;
    d.byName.delete(key(name));
    e.live = false;
    d.dead++;
    if (d.dead > 64 && d.dead * 2 > d.order.length) {
      d.order = d.order.filter((x) => x.live);
      d.dead = 0;
    }
  }

  private touchDir(dir: Inode, now: Timespec): void {
    dir.mtime = copyTs(now);
    dir.ctime = copyTs(now);
  }

  async create(dirId: number, name: Buffer, init: NewInode, now: Timespec): Promise<Inode> {
    const d = this.mustDir(dirId);
    const dir = this.mustInode(dirId);
    if (d.byName.has(key(name))) throw new VfsError('EXIST', 'name exists');
    const inode = this.newInode(dir.shareId, init, now, dirId);
    this.addEntry(dirId, d, name, inode.id);
    if (inode.type === FileType.DIR) dir.nlink++;
    this.touchDir(dir, now);
    return copyInode(inode);
  }

  async link(id: number, dirId: number, name: Buffer, now: Timespec): Promise<Inode> {
    const d = this.mustDir(dirId);
    const dir = this.mustInode(dirId);
    const inode = this.mustInode(id);
    if (inode.type === FileType.DIR) throw new VfsError('ISDIR', 'cannot hard-link a directory');
    // A named stream is reached through its file only; an entry would outlive the file's removal.
    for (const m of this.streams.values())
      for (const st of m.values()) if (st.inode === id) throw new VfsError('INVAL', 'cannot link a named stream');
    if (d.byName.has(key(name))) throw new VfsError('EXIST', 'name exists');
    this.addEntry(dirId, d, name, id);
    inode.nlink++;
    inode.ctime = copyTs(now);
    this.touchDir(dir, now);
    return copyInode(inode);
  }

  /** Unlinks `child` (already looked up) from `dir`, maintaining link counts. */
  private unlinkChild(dir: Inode, d: DirState, name: Buffer, child: Inode, now: Timespec): RemoveResult {
    this.dropEntry(d, name);
    const freed = unlinkCounts(dir, child);
    child.ctime = copyTs(now);
    this.touchDir(dir, now);
    const result: RemoveResult = { inode: copyInode(child), freed, streams: [] };
    if (freed) {
      this.inodes.delete(child.id);
      this.dirs.delete(child.id);
      this.meta.delete(child.id);
      // Block refs stay until the caller has freed the objects and called dropBlocks.
      const streams = this.streams.get(child.id);
      if (streams) {
        for (const st of streams.values()) {
          this.inodes.delete(st.inode);
          result.streams.push(st.inode);
        }
        result.streams.sort((a, b) => a - b);
        this.streams.delete(child.id);
      }
    }
    return result;
  }

  async remove(dirId: number, name: Buffer, dir: boolean, now: Timespec, expect?: number): Promise<RemoveResult> {
    const d = this.mustDir(dirId);
    const parent = this.mustInode(dirId);
    const e = d.byName.get(key(name));
    if (!e) throw new VfsError('NOENT', 'no such entry');
    if (expect !== undefined && e.child !== expect) throw new NamesChangedError();
    const child = this.mustInode(e.child);
    if (dir) {
      if (child.type !== FileType.DIR) throw new VfsError('NOTDIR', 'not a directory');
      if (this.dirs.get(child.id)!.byName.size > 0) throw new VfsError('NOTEMPTY', 'directory not empty');
    } else if (child.type === FileType.DIR) {
      throw new VfsError('ISDIR', 'is a directory');
    }
    return this.unlinkChild(parent, d, name, child, now);
  }

  /**
   * INVAL when `movingId` is `target` or one of its ancestors: moving it there would cut the
   * subtree off the share and close a cycle. Walks the parent links up to the root, however deep.
   */
  private refuseCycle(movingId: number, target: Inode): void {
    const seen = new Set<number>();
    for (let cur: Inode | undefined = target; cur !== undefined; cur = this.inodes.get(cur.parent)) {
      if (cur.id === movingId) throw new VfsError('INVAL', 'cannot move a directory into its own subtree');
      if (cur.parent === cur.id || seen.has(cur.id)) return;
      seen.add(cur.id);
    }
  }

  async rename(
    fromDir: number,
    fromName: Buffer,
    toDir: number,
    toName: Buffer,
    now: Timespec,
    expect?: RenameExpect,
  ): Promise<RenameResult> {
    const fd = this.mustDir(fromDir);
    const td = this.mustDir(toDir);
    const from = this.mustInode(fromDir);
    const to = this.mustInode(toDir);
    const src = fd.byName.get(key(fromName));
    if (!src) throw new VfsError('NOENT', 'source does not exist');
    const dst = td.byName.get(key(toName));
    if (expect && (src.child !== expect.moving || (dst?.child ?? null) !== expect.victim)) throw new NamesChangedError();
    const moving = this.mustInode(src.child);
    if (moving.type === FileType.DIR && fromDir !== toDir) this.refuseCycle(moving.id, to);
    let replaced: RemoveResult | null = null;
    if (dst) {
      if (dst.child === src.child) return { replaced: null, moved: src.child }; // two links to one inode: POSIX says do nothing
      const victim = this.mustInode(dst.child);
      if (moving.type === FileType.DIR && victim.type !== FileType.DIR)
        throw new VfsError('NOTDIR', 'cannot replace a non-directory with a directory');
      if (moving.type !== FileType.DIR && victim.type === FileType.DIR)
        throw new VfsError('ISDIR', 'cannot replace a directory with a non-directory');
      if (victim.type === FileType.DIR && this.dirs.get(victim.id)!.byName.size > 0)
        throw new VfsError('NOTEMPTY', 'destination directory not empty');
      replaced = this.unlinkChild(to, td, toName, victim, now);
    }
    this.dropEntry(fd, fromName);
    this.addEntry(toDir, td, toName, moving.id);
    if (moving.type === FileType.DIR && fromDir !== toDir) {
      from.nlink--;
      to.nlink++;
      moving.parent = toDir;
    }
    moving.ctime = copyTs(now);
    this.touchDir(from, now);
    this.touchDir(to, now);
    return { replaced, moved: src.child };
  }

  async reserveInodeIds(id: number): Promise<void> {
    this.nextId = Math.max(this.nextId, id + 1);
  }

  async setAttr(id: number, c: AttrChanges, guardCtime?: Timespec): Promise<Inode> {
    const i = this.mustInode(id);
    if (guardCtime && !timespecEqual(guardCtime, i.ctime)) throw new VfsError('NOT_SYNC', 'ctime guard mismatch');
    if (c.leaseToken !== undefined && this.newestToken(id) > c.leaseToken) throw staleLease(id, c.leaseToken);
    const sizeToken = Math.max(c.leaseToken ?? 0, c.sizeToken ?? 0);
    if (sizeToken > (this.sizeTokens.get(id) ?? 0)) this.sizeTokens.set(id, sizeToken);
    if (c.mode !== undefined) i.mode = c.mode & 0o7777;
    if (c.clearMode !== undefined) i.mode &= ~(c.clearMode & 0o7777);
    if (c.uid !== undefined) i.uid = c.uid;
    if (c.gid !== undefined) i.gid = c.gid;
    if (c.size !== undefined) i.size = c.size;
    if (c.growTo !== undefined && c.growTo > i.size) i.size = c.growTo;
    if (c.atime) i.atime = copyTs(c.atime);
    if (c.mtime) i.mtime = copyTs(c.mtime);
    if (c.ctime) i.ctime = copyTs(c.ctime);
    if (c.btime) i.btime = copyTs(c.btime);
    if (c.dosAttrs !== undefined) i.dosAttrs = c.dosAttrs & DOS_ATTRS_STORED;
    if (c.clearCreateVerifier) i.createVerifier = null;
    return copyInode(i);
  }
  async setAttrMany(changes: readonly { id: number; changes: AttrChanges }[]): Promise<(Inode | null)[]> {
    // Nothing awaits in between: atomic, as the SQL engines' transaction.
    const out: (Inode | null)[] = [];
    for (const x of changes) out.push(this.inodes.has(x.id) ? await this.setAttr(x.id, x.changes) : null);
    return out;
  }

  async listStreams(fileId: number): Promise<StreamEntry[]> {
    this.mustInode(fileId);
    const m = this.streams.get(fileId);
    if (!m) return [];
    return [...m.values()]
      .sort((a, b) => Buffer.compare(a.name, b.name))
      .map((st) => ({ name: Buffer.from(st.name), inode: copyInode(this.mustInode(st.inode)) }));
  }

  async lookupStream(fileId: number, name: Buffer): Promise<Inode | null> {
    this.mustInode(fileId);
    const st = this.streams.get(fileId)?.get(key(name));
    return st ? copyInode(this.mustInode(st.inode)) : null;
  }

  async createStream(fileId: number, name: Buffer, init: NewInode, now: Timespec): Promise<Inode> {
    const file = this.mustInode(fileId);
    let m = this.streams.get(fileId);
    if (m?.has(key(name))) throw new VfsError('EXIST', 'stream exists');
    if ((m?.size ?? 0) >= MAX_STREAMS_PER_FILE) throw new VfsError('NOSPC', 'too many streams on one file');
    const inode = this.newInode(file.shareId, { ...init, type: FileType.REG }, now, 0);
    if (!m) this.streams.set(fileId, (m = new Map<string, { name: Buffer; inode: number }>()));
    m.set(key(name), { name: Buffer.from(name), inode: inode.id });
    file.ctime = copyTs(now);
    return copyInode(inode);
  }

  async removeStream(fileId: number, name: Buffer, now: Timespec): Promise<Inode> {
    const file = this.mustInode(fileId);
    const m = this.streams.get(fileId);
    const st = m?.get(key(name));
    if (!m || !st) throw new VfsError('NOENT', 'no such stream');
    m.delete(key(name));
    if (m.size === 0) this.streams.delete(fileId);
    const inode = this.mustInode(st.inode);
    this.inodes.delete(st.inode);
    file.ctime = copyTs(now);
    return copyInode(inode);
  }

  private metaOf(inodeId: number, kind: InodeMetaKind): InodeMetaRecord[] {
    const out: InodeMetaRecord[] = [];
    for (const r of this.meta.get(inodeId)?.values() ?? [])
      if (r.kind === kind) out.push({ name: Buffer.from(r.name), value: Buffer.from(r.value) });
    return out.sort((a, b) => Buffer.compare(a.name, b.name));
  }

  async getMeta(inodeId: number, kind: InodeMetaKind): Promise<InodeMetaRecord[]> {
    this.mustInode(inodeId);
    return this.metaOf(inodeId, kind);
  }

  async putMeta(
    inodeId: number,
    kind: InodeMetaKind,
    changes: readonly InodeMetaChange[],
    limits: InodeMetaLimits,
    now?: Timespec,
  ): Promise<InodeMetaRecord[]> {
    const inode = this.mustInode(inodeId);
    const next = new Map(this.meta.get(inodeId));
    for (const c of changes) {
      const k = `${kind}/${key(c.name)}`;
      if (c.value === null) next.delete(k);
      else next.set(k, { kind, name: Buffer.from(c.name), value: Buffer.from(c.value) });
    }
    let count = 0;
    let bytes = 0;
    for (const r of next.values()) {
      if (r.kind !== kind) continue;
      count++;
      bytes += r.name.length + r.value.length;
    }
    if (count > limits.count || bytes > limits.bytes) throw new VfsError('NOSPC', 'too much metadata on one file');
    if (next.size === 0) this.meta.delete(inodeId);
    else this.meta.set(inodeId, next);
    if (now) inode.ctime = copyTs(now);
    return this.metaOf(inodeId, kind);
  }

  async metaSizes(inodeIds: readonly number[], kind: InodeMetaKind): Promise<Map<number, number>> {
    const out = new Map<number, number>();
    for (const id of inodeIds) {
      let size = 0;
      for (const r of this.meta.get(id)?.values() ?? []) if (r.kind === kind) size += metaRecordSize(r.name.length, r.value.length);
      if (size > 0) out.set(id, size);
    }
    return out;
  }

  async getBlocks(inodeId: number, from: number, to: number): Promise<BlockRef[]> {
    const m = this.blocks.get(inodeId);
    if (!m) return [];
    const out: BlockRef[] = [];
    if (to - from <= m.size) {
      for (let idx = from; idx < to; idx++) {
        const r = m.get(idx);
        if (r) out.push({ ...r });
      }
    } else {
      for (const r of m.values()) if (r.index >= from && r.index < to) out.push({ ...r });
      out.sort((a, b) => a.index - b.index);
    }
    return out;
  }

  async putBlock(inodeId: number, ref: BlockRef, cas?: BlockSwitch): Promise<BlockRef | null> {
    let m = this.blocks.get(inodeId);
    if (!m) this.blocks.set(inodeId, (m = new Map<number, BlockRef>()));
    const prev = m.get(ref.index) ?? null;
    if (cas) {
      const key = `${inodeId}/${ref.index}`;
      const rowToken = this.blockTokens.get(key) ?? 0;
      const stale = rowToken > cas.token || (this.fileFences.get(inodeId) ?? 0) > cas.token;
      if (stale || (prev?.version ?? 0) !== cas.prevVersion)
        throw new BlockConflictError(`block ${ref.index} of inode ${inodeId} changed (version ${prev?.version ?? 0})`, stale);
      this.blockTokens.set(key, cas.token);
    }
    m.set(ref.index, { ...ref });
    return prev;
  }

  async dropBlocks(inodeId: number, from: number, token = 0): Promise<BlockRef[]> {
    if (token > 0) {
      if (this.newestToken(inodeId) > token) throw staleLease(inodeId, token);
      if (token > (this.fileFences.get(inodeId) ?? 0)) this.fileFences.set(inodeId, token);
    }
    const m = this.blocks.get(inodeId);
    if (!m) return [];
    const out: BlockRef[] = [];
    for (const [idx, r] of m) {
      if (idx >= from) {
        out.push(r);
        m.delete(idx);
        this.blockTokens.delete(`${inodeId}/${idx}`);
      }
    }
    if (m.size === 0) this.blocks.delete(inodeId);
    return out;
  }

  /** The newest token the file's data was stored (any block) or cut under, or its size stored under (0: none). */
  private newestToken(inodeId: number): number {
    let t = Math.max(this.fileFences.get(inodeId) ?? 0, this.sizeTokens.get(inodeId) ?? 0);
    for (const idx of this.blocks.get(inodeId)?.keys() ?? []) t = Math.max(t, this.blockTokens.get(`${inodeId}/${idx}`) ?? 0);
    return t;
  }

  async usage(shareId: number): Promise<ShareUsage> {
    let files = 0;
    let bytes = 0;
    for (const i of this.inodes.values()) {
      if (i.shareId !== shareId) continue;
      files++;
      bytes += i.size;
    }
    return { files, bytes };
  }
}
