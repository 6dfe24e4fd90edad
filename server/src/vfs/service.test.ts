import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memoryServer } from '../testing/memory-server.js';
import { VfsError } from './errors.js';
import { CreateMode, type SetAttrs } from './service.js';
import type { Identity } from './types.js';
import { FileType, LINK_MAX, nowTimespec } from './types.js';
import { InodeMetaKind } from '../meta/store.js';
import { openStream } from './streams.js';

const root: Identity = { uid: 0, gid: 0, gids: [] };
const alice: Identity = { uid: 1000, gid: 1000, gids: [] };
const bob: Identity = { uid: 2000, gid: 2000, gids: [] };
const n = (s: string) => Buffer.from(s);

async function rejects(p: Promise<unknown>, errno: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof VfsError && e.errno === errno);
}

async function setup(opts = {}) {
  const srv = await memoryServer(opts);
  const share = srv.fs.shares()[0]!;
  const rootFh = srv.fs.handleOf(share, await srv.fs.root(share));
  return { srv, fs: srv.fs, share, rootFh };
}

describe('file service semantics', () => {
  it('an SMB FLUSH of a directory syncs the metadata store (the names made in it), as one of a file does', async () => {
    const { fs, share, rootFh } = await setup();
    const dir = await fs.mkdir(rootFh, n('d'), root, { mode: 0o755 });
    const dirFh = fs.handleOf(share, dir.inode);
    await fs.create(dirFh, n('f'), root, CreateMode.GUARDED, {}, null);
    // The embedded engine answers a create before its fsync (sync: commit): the sync is this call.
    const synced: (number | undefined)[] = [];
    share.meta.flushAttrs = (id) => {
      synced.push(id);
      return Promise.resolve();
    };
    await fs.flush(dirFh, root);
    assert.deepEqual(synced, [dir.inode.id], 'the FLUSH of the directory synced the store');
    // SMB grants FILE_ADD_FILE on a directory open without judging it (the vfs checks each add):
    // alice, who may add nothing to d, answers her FLUSH without making the server fsync.
    await fs.flush(dirFh, alice);
    assert.deepEqual(synced, [dir.inode.id], 'the FLUSH of a caller who may not write the directory synced nothing');
  });

  it('keeps link counts right across hard links, unlink and rename over a link', async () => {
    const { fs, share, rootFh } = await setup();
    const a = await fs.create(rootFh, n('a'), root, CreateMode.GUARDED, {}, null);
    const fh = fs.handleOf(share, a.inode);
    const l = await fs.link(fh, rootFh, n('b'), root);
    assert.equal(l.inode.nlink, 2);
    await fs.remove(rootFh, n('a'), root, false);
    assert.equal((await fs.getattr(fh, root)).inode.nlink, 1);
    // Renaming onto another link of the same inode changes nothing.
    await fs.link(fh, rootFh, n('c'), root);
    await fs.rename(rootFh, n('b'), rootFh, n('c'), root);
    assert.equal((await fs.getattr(fh, root)).inode.nlink, 2);
    assert.ok(await fs.lookup(rootFh, n('b'), root));
  });

  it('refuses a hard link past LINK_MAX links with MLINK (the linkmax PATHCONF reports)', async () => {
    const { fs, share, rootFh } = await setup();
    const a = await fs.create(rootFh, n('a'), root, CreateMode.GUARDED, {}, null);
    const fh = fs.handleOf(share, a.inode);
    // The store reports the file with `links` links (making 65000 real ones takes too long here).
    let links = LINK_MAX;
    const getInode = share.meta.getInode.bind(share.meta);
    share.meta.getInode = async (id) => {
      const i = await getInode(id);
      return i && id === a.inode.id ? { ...i, nlink: links } : i;
    };
    await rejects(fs.link(fh, rootFh, n('b'), root), 'MLINK');
    await rejects(fs.lookup(rootFh, n('b'), root), 'NOENT');
    links = LINK_MAX - 1;
    await fs.link(fh, rootFh, n('b'), root);
    assert.equal((await fs.lookup(rootFh, n('b'), root)).inode.id, a.inode.id);
  });

  it('refuses to hard-link a named stream: it gets no directory entry, whatever the protocol', async () => {
    const { fs, share, rootFh } = await setup();
    const f = await fs.create(rootFh, n('f'), root, CreateMode.GUARDED, {}, null);
    const s = await openStream(fs, fs.handleOf(share, f.inode), n('ads'), root, true);
    assert.ok(s);
    await rejects(fs.link(s.handle, rootFh, n('alias'), root), 'INVAL');
    await rejects(fs.lookup(rootFh, n('alias'), root), 'NOENT');
    // Removing the file still frees the stream with it.
    await fs.remove(rootFh, n('f'), root, false);
    await rejects(fs.getattr(s.handle, root), 'STALE');
  });

  /** A 0644 file with a named stream, and its store's own setAttr (for a test to wrap meta.setAttr). */
  async function fileWithStream() {
    const { fs, share, rootFh } = await setup();
    const f = await fs.create(rootFh, n('f'), root, CreateMode.GUARDED, { mode: 0o644 }, null);
    const fh = fs.handleOf(share, f.inode);
    const s = await openStream(fs, fh, n('ads'), root, true);
    assert.ok(s);
    const meta = share.meta;
    return { fs, fh, s, meta, setAttr: meta.setAttr.bind(meta) };
  }

  it('a chmod tried again after its streams could not follow (the store failed, or the server stopped, between the two) still brings them along', async () => {
    const { fs, fh, s, meta, setAttr } = await fileWithStream();
    let failures = 1;
    meta.setAttr = (id, ...rest) => {
      if (id === s.stream.id && failures > 0) {
        failures--;
        return Promise.reject(new VfsError('IO', 'the store failed'));
      }
      return setAttr(id, ...rest);
    };
    // The file is 0600 now, its stream not: the client is told, and sends the same chmod again.
    await rejects(fs.setattr(fh, root, { mode: 0o600 }), 'IO');
    assert.equal((await fs.getattr(fh, root)).inode.mode & 0o7777, 0o600);
    await fs.setattr(fh, root, { mode: 0o600 });
    assert.equal((await fs.getattr(s.handle, root)).inode.mode & 0o7777, 0o600, 'the stream follows the file');
  });

  it('two chmods of a file at once leave its streams with the mode the file ends with', async () => {
    const { fs, fh, s, meta, setAttr } = await fileWithStream();
    // The first change of the stream is slow to store; the second chmod passes it.
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    let streamChanges = 0;
    meta.setAttr = async (id, ...rest) => {
      if (id === s.stream.id && streamChanges++ === 0) await gate;
      return setAttr(id, ...rest);
    };
    const first = fs.setattr(fh, root, { mode: 0o666 });
    for (let i = 0; i < 1000 && streamChanges === 0; i++) await new Promise((r) => setImmediate(r));
    assert.equal(streamChanges, 1, 'the first chmod is changing the stream');
    const second = fs.setattr(fh, root, { mode: 0o600 });
    for (let i = 0; i < 1000 && ((await fs.getattr(fh, root)).inode.mode & 0o7777) !== 0o600; i++)
      await new Promise((r) => setImmediate(r));
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    open();
    await Promise.all([first, second]);
    assert.equal((await fs.getattr(fh, root)).inode.mode & 0o7777, 0o600);
    assert.equal((await fs.getattr(s.handle, root)).inode.mode & 0o7777, 0o600, 'the stream as its file, not as the slower chmod said');
  });

  it('CREATE of a taken name answers by mode (RFC 1813 3.3.8) and makes no second file', async () => {
    const { fs, share, rootFh } = await setup();
    const verf = Buffer.from('verifier');
    const a = await fs.create(rootFh, n('a'), root, CreateMode.UNCHECKED, { mode: 0o600 }, null);
    await fs.write(fs.handleOf(share, a.inode), root, 0, Buffer.from('data'), true);
    await rejects(fs.create(rootFh, n('a'), root, CreateMode.GUARDED, {}, null), 'EXIST');
    // UNCHECKED: the same file, truncated when a size is given.
    const again = await fs.create(rootFh, n('a'), root, CreateMode.UNCHECKED, { size: 0 }, null);
    assert.equal(again.inode.id, a.inode.id);
    assert.equal(again.inode.size, 0);
    assert.equal(again.inode.mode & 0o777, 0o600);
    const x = await fs.create(rootFh, n('x'), root, CreateMode.EXCLUSIVE, {}, verf);
    // A retransmitted EXCLUSIVE create (same verifier) gets the same file; another verifier does not.
    assert.equal((await fs.create(rootFh, n('x'), root, CreateMode.EXCLUSIVE, {}, Buffer.from(verf))).inode.id, x.inode.id);
    await rejects(fs.create(rootFh, n('x'), root, CreateMode.EXCLUSIVE, {}, Buffer.from('other-vf')), 'EXIST');
    await fs.mkdir(rootFh, n('d'), root, {});
    await rejects(fs.create(rootFh, n('d'), root, CreateMode.UNCHECKED, {}, null), 'ISDIR');
    const names = (await fs.readdir(rootFh, root, 0, 100)).entries.map((e) => e.name.toString()).sort();
    assert.deepEqual(names, ['a', 'd', 'x']);
  });

  it('counts subdirectories in a directory link count and refuses to remove non-empty ones', async () => {
    const { fs, share, rootFh } = await setup();
    const d = await fs.mkdir(rootFh, n('d'), root, {});
    const dfh = fs.handleOf(share, d.inode);
    await fs.mkdir(dfh, n('sub'), root, {});
    assert.equal((await fs.getattr(dfh, root)).inode.nlink, 3);
    await rejects(fs.remove(rootFh, n('d'), root, true), 'NOTEMPTY');
    await rejects(fs.remove(rootFh, n('d'), root, false), 'ISDIR');
    await fs.remove(dfh, n('sub'), root, true);
    await fs.remove(rootFh, n('d'), root, true);
    await rejects(fs.getattr(dfh, root), 'STALE');
  });

  it('a change of the mode bits drops a stored NT DACL; other changes keep it', async () => {
    const { fs, share, rootFh } = await setup();
    const a = await fs.create(rootFh, n('acl'), alice, CreateMode.GUARDED, { mode: 0o644 }, null);
    const fh = fs.handleOf(share, a.inode);
    const sd = [{ name: Buffer.alloc(0), value: n('a stored descriptor') }];
    await share.meta.putMeta(a.inode.id, InodeMetaKind.SECURITY, sd, { count: 1, bytes: 100 });
    await fs.setattr(fh, alice, { mode: 0o644, atime: 'server' });
    assert.equal((await share.meta.getMeta(a.inode.id, InodeMetaKind.SECURITY)).length, 1, 'the same mode: kept');
    await fs.setattr(fh, alice, { mode: 0o600 });
    assert.deepEqual(await share.meta.getMeta(a.inode.id, InodeMetaKind.SECURITY), [], 'a chmod: dropped');
    // Without a stored descriptor a chmod (an untar's SETATTR after each CREATE) writes no records:
    // putMeta is a transaction of its own that waits for an fsync on the embedded engine.
    const puts: number[] = [];
    const putMeta = share.meta.putMeta.bind(share.meta);
    share.meta.putMeta = (id, ...rest) => (puts.push(id), putMeta(id, ...rest));
    const after = await fs.setattr(fh, alice, { mode: 0o640 });
    assert.equal(after.after.mode & 0o7777, 0o640);
    assert.deepEqual(puts, [], 'a chmod of a file without a descriptor: no record change');
  });

  it('refuses to move a directory into its own subtree', async () => {
    const { fs, share, rootFh } = await setup();
    const a = await fs.mkdir(rootFh, n('a'), root, {});
    const afh = fs.handleOf(share, a.inode);
    const b = await fs.mkdir(afh, n('b'), root, {});
    await rejects(fs.rename(rootFh, n('a'), fs.handleOf(share, b.inode), n('x'), root), 'INVAL');
  });

  it('replaces a file on rename and frees its data', async () => {
    const { srv, fs, share, rootFh } = await setup();
    const x = await fs.create(rootFh, n('x'), root, CreateMode.UNCHECKED, {}, null);
    await fs.write(fs.handleOf(share, x.inode), root, 0, Buffer.alloc(10_000, 1), true);
    const y = await fs.create(rootFh, n('y'), root, CreateMode.UNCHECKED, {}, null);
    await fs.write(fs.handleOf(share, y.inode), root, 0, Buffer.from('y'), true);
    const objectsBefore = srv.blocks.size;
    await fs.rename(rootFh, n('y'), rootFh, n('x'), root);
    await rejects(fs.getattr(fs.handleOf(share, x.inode), root), 'STALE');
    assert.ok(srv.blocks.size < objectsBefore);
    const got = await fs.read(fs.handleOf(share, y.inode), root, 0, 10);
    assert.equal(got.data.toString(), 'y');
  });

  it('REMOVE with no file open (no lookup first): NOENT, ISDIR and NOTDIR from the store, nothing else removed', async () => {
    const { fs, share, rootFh } = await setup();
    await fs.create(rootFh, n('a'), root, CreateMode.GUARDED, {}, null);
    await fs.mkdir(rootFh, n('d'), root, {});
    assert.equal(fs.opens.mayHaveOpens(share.meta), false);
    await rejects(fs.remove(rootFh, n('missing'), root, false), 'NOENT');
    await rejects(fs.remove(rootFh, n('d'), root, false), 'ISDIR');
    await rejects(fs.remove(rootFh, n('a'), root, true), 'NOTDIR');
    const names = async () => (await fs.readdir(rootFh, root, 0, 100)).entries.map((e) => e.name.toString()).sort();
    assert.deepEqual(await names(), ['a', 'd']);
    const r = await fs.remove(rootFh, n('a'), root, false);
    assert.ok(r.dirAfter !== null && r.dirAfter.mtime.sec >= r.dirBefore.mtime.sec);
    assert.deepEqual(await names(), ['d']);
    await rejects(fs.remove(rootFh, n('a'), root, false), 'NOENT');
  });

  it("checks a rename's rights again when a concurrent rename puts another user's directory under the name", async () => {
    const { fs, share, rootFh } = await setup();
    const shared = fs.handleOf(share, (await fs.mkdir(rootFh, n('shared'), root, { mode: 0o777 })).inode);
    const adir = await fs.mkdir(shared, n('adir'), alice, { mode: 0o755 });
    await fs.mkdir(shared, n('bdir'), bob, { mode: 0o755 });
    const bhome = fs.handleOf(share, (await fs.mkdir(rootFh, n('bhome'), bob, { mode: 0o755 })).inode);
    // Moving alice's directory to another parent rewrites its "..": bob may not.
    await rejects(fs.rename(shared, n('adir'), bhome, n('stolen'), bob), 'ACCES');
    // Bob moves his own bdir; between the checks and the move, a same-directory rename (which needs no
    // right on adir) puts alice's directory under the name bdir.
    const sharedId = adir.dirAfter!.id;
    const rename = share.meta.rename.bind(share.meta);
    let raced = false;
    share.meta.rename = async (...args) => {
      if (!raced) {
        raced = true;
        await rename(sharedId, n('adir'), sharedId, n('bdir'), nowTimespec());
      }
      return rename(...args);
    };
    await rejects(fs.rename(shared, n('bdir'), bhome, n('stolen'), bob), 'ACCES');
    assert.ok(raced);
    await rejects(fs.lookup(bhome, n('stolen'), bob), 'NOENT');
    assert.equal((await fs.lookup(shared, n('bdir'), bob)).inode.id, adir.inode.id);
    // A name that holds a new file at every look: JUKEBOX after a few checks, nothing moved.
    await fs.create(shared, n('f'), bob, CreateMode.GUARDED, { mode: 0o644 }, null);
    let calls = 0;
    share.meta.rename = async (...args) => {
      calls++;
      await fs.remove(shared, n('f'), bob, false);
      await fs.create(shared, n('f'), bob, CreateMode.GUARDED, { mode: 0o644 }, null);
      return rename(...args);
    };
    await rejects(fs.rename(shared, n('f'), bhome, n('g'), bob), 'JUKEBOX');
    assert.equal(calls, 4);
    share.meta.rename = rename;
    await rejects(fs.lookup(bhome, n('g'), bob), 'NOENT');
    await fs.rename(shared, n('f'), bhome, n('g'), bob);
  });

  it('enforces mode bits, the sticky bit and owner-only chmod', async () => {
    const { fs, share, rootFh } = await setup();
    const tmp = await fs.mkdir(rootFh, n('tmp'), root, { mode: 0o1777 });
    const tfh = fs.handleOf(share, tmp.inode);
    await fs.create(tfh, n('alices'), alice, CreateMode.GUARDED, { mode: 0o644 }, null);
    // Another user's entry in a sticky directory: EPERM, as from Linux's may_delete.
    await rejects(fs.remove(tfh, n('alices'), bob, false), 'PERM');
    await rejects(fs.rename(tfh, n('alices'), tfh, n('stolen'), bob), 'PERM');
    await fs.create(tfh, n('bobs'), bob, CreateMode.GUARDED, { mode: 0o644 }, null);
    await rejects(fs.rename(tfh, n('bobs'), tfh, n('alices'), bob), 'PERM');
    const af = await fs.lookup(tfh, n('alices'), bob);
    const afh = fs.handleOf(share, af.inode);
    await rejects(fs.setattr(afh, bob, { mode: 0o777 }), 'PERM');
    await rejects(fs.setattr(afh, alice, { uid: 2000 }), 'PERM');
    await rejects(fs.write(afh, bob, 0, n('x'), false), 'ACCES');
    await fs.setattr(afh, alice, { mode: 0o600 });
    await rejects(fs.read(afh, bob, 0, 1), 'ACCES');
    await fs.remove(tfh, n('alices'), alice, false);
    // A 0755 root-owned directory refuses creates by others.
    const locked = await fs.mkdir(rootFh, n('locked'), root, { mode: 0o755 });
    await rejects(fs.create(fs.handleOf(share, locked.inode), n('f'), alice, CreateMode.UNCHECKED, {}, null), 'ACCES');
  });

  it('a file made in a setgid directory of a group the caller is not in loses the setgid bit asked for (CVE-2018-13405)', async () => {
    const { fs, share, rootFh } = await setup({ rootMode: 0o777 });
    const d = await fs.mkdir(rootFh, n('shared'), root, { mode: 0o2777, gid: 50 });
    const dfh = fs.handleOf(share, d.inode);
    const member: Identity = { uid: 3000, gid: 3000, gids: [50] };
    const mode = async (who: Identity, name: string, m: number, gid?: number) => {
      const f = await fs.create(dfh, n(name), who, CreateMode.GUARDED, { mode: m, ...(gid === undefined ? {} : { gid }) }, null);
      return [f.inode.gid, f.inode.mode & 0o7777];
    };
    // Not in group 50: the file is group 50 (the directory's), without S_ISGID (Linux's mode_strip_sgid).
    assert.deepEqual(await mode(alice, 'alices', 0o2755), [50, 0o755]);
    const fifo = await fs.mknod(dfh, n('fifo'), alice, FileType.FIFO, { mode: 0o2775 }, { major: 0, minor: 0 });
    assert.deepEqual([fifo.inode.gid, fifo.inode.mode & 0o7777], [50, 0o775]);
    // Without group execute S_ISGID is a locking mark, not a setgid program: kept.
    assert.deepEqual(await mode(alice, 'locking', 0o2644), [50, 0o2644]);
    // A member of the group (a supplementary one here), root, or a group of the caller's own: kept.
    assert.deepEqual(await mode(member, 'members', 0o2755), [50, 0o2755]);
    assert.deepEqual(await mode(root, 'roots', 0o2755), [50, 0o2755]);
    assert.deepEqual(await mode(alice, 'own-group', 0o2755, 1000), [1000, 0o2755]);
    // A directory always inherits the setgid bit and the group.
    const sub = await fs.mkdir(dfh, n('sub'), alice, { mode: 0o755 });
    assert.deepEqual([sub.inode.gid, sub.inode.mode & 0o7777], [50, 0o2755]);
  });

  it('a change of owner or group drops setuid, and setgid of a setgid program, root included (chown(2))', async () => {
    const { fs, share, rootFh } = await setup();
    const make = async (name: string, mode: number) => {
      const f = await fs.create(rootFh, n(name), root, CreateMode.GUARDED, { mode }, null);
      return fs.handleOf(share, f.inode);
    };
    const modeAfter = async (name: string, mode: number, attrs: SetAttrs, who = root) =>
      (await fs.setattr(await make(name, mode), who, attrs)).after.mode & 0o7777;
    assert.equal(await modeAfter('chown', 0o6755, { uid: 1000 }), 0o755);
    assert.equal(await modeAfter('chgrp', 0o6755, { gid: 50 }), 0o755);
    // S_ISGID without group execute is a locking mark: a chown by root keeps it.
    assert.equal(await modeAfter('locking', 0o6745, { uid: 1000 }), 0o2745);
    // A mode given with the new owner loses the same bits (as knfsd's nfsd_sanitize_attrs).
    assert.equal(await modeAfter('with-mode', 0o644, { uid: 1000, mode: 0o6755 }), 0o755);
    assert.equal(await modeAfter('with-mode-locking', 0o644, { gid: 50, mode: 0o6745 }), 0o2745);
    // Unchanged owner and group, or a directory: nothing dropped.
    assert.equal(await modeAfter('same-owner', 0o6755, { uid: 0, gid: 0 }), 0o6755);
    const d = await fs.mkdir(rootFh, n('dir'), root, { mode: 0o2755 });
    assert.equal((await fs.setattr(fs.handleOf(share, d.inode), root, { uid: 1000, gid: 50 })).after.mode & 0o7777, 0o2755);
    // The owner's chgrp to one of their groups: the same.
    const own = await fs.create(rootFh, n('alices'), alice, CreateMode.GUARDED, { mode: 0o6755 }, null);
    const member = { ...alice, gids: [50] };
    assert.equal((await fs.setattr(fs.handleOf(share, own.inode), member, { gid: 50 })).after.mode & 0o7777, 0o755);
  });

  it('a WRITE by anyone but root drops setuid, and setgid only of a setgid program or for a writer outside the group', async () => {
    const { fs, share, rootFh } = await setup();
    const member: Identity = { uid: 3000, gid: 3000, gids: [1000] };
    const modeAfterWrite = async (name: string, mode: number, who: Identity) => {
      const f = await fs.create(rootFh, n(name), alice, CreateMode.GUARDED, { mode }, null);
      return (await fs.write(fs.handleOf(share, f.inode), who, 0, n('x'), false)).after.mode & 0o7777;
    };
    // Group execute set: a setgid program, which any write but root's makes an ordinary file.
    assert.equal(await modeAfterWrite('prog', 0o6777, member), 0o777);
    assert.equal(await modeAfterWrite('prog-owner', 0o6777, alice), 0o777);
    assert.equal(await modeAfterWrite('prog-root', 0o6777, root), 0o6777);
    // No group execute: S_ISGID is a locking mark, kept for the owner and a member of the file's group.
    assert.equal(await modeAfterWrite('locking', 0o6766, member), 0o2766);
    assert.equal(await modeAfterWrite('locking-owner', 0o2766, alice), 0o2766);
    // ... and dropped for a writer outside the group (Linux's setattr_should_drop_sgid, since 6.2).
    assert.equal(await modeAfterWrite('locking-other', 0o2766, bob), 0o766);
  });

  it('a WRITE or chown that drops setuid keeps a chmod made meanwhile: only the dropped bits go', async () => {
    const { fs, share, rootFh } = await setup();
    const setAttr = share.meta.setAttr.bind(share.meta);
    /** The next setAttr that changes the owner or the size: a chmod to `mode` lands just before it. */
    const chmodFirst = (mode: number) => {
      share.meta.setAttr = async (id, changes, guard) => {
        if (changes.growTo !== undefined || changes.uid !== undefined) {
          share.meta.setAttr = setAttr;
          await setAttr(id, { mode, ctime: nowTimespec() });
        }
        return setAttr(id, changes, guard);
      };
    };
    // A setuid file anyone may write; its owner makes it private while bob's WRITE is under way.
    const f = await fs.create(rootFh, n('suid-write'), alice, CreateMode.GUARDED, { mode: 0o4777 }, null);
    const fh = fs.handleOf(share, f.inode);
    chmodFirst(0o4700);
    assert.equal((await fs.write(fh, bob, 0, n('x'), false)).after.mode & 0o7777, 0o700);
    assert.equal((await fs.getattr(fh, root)).inode.mode & 0o7777, 0o700);
    // The same for a chown by root: the chmod's mode stays, less setuid.
    const g = await fs.create(rootFh, n('suid-chown'), alice, CreateMode.GUARDED, { mode: 0o4755 }, null);
    const gh = fs.handleOf(share, g.inode);
    chmodFirst(0o4700);
    const after = (await fs.setattr(gh, root, { uid: 2000 })).after;
    assert.deepEqual([after.uid, after.mode & 0o7777], [2000, 0o700]);
  });

  it('creating a name that exists in a directory the caller may search but not write is EXIST, as from knfsd', async () => {
    const { fs, share, rootFh } = await setup();
    const ro = await fs.mkdir(rootFh, n('ro'), root, { mode: 0o755 });
    const dfh = fs.handleOf(share, ro.inode);
    const f = await fs.create(dfh, n('f'), root, CreateMode.GUARDED, { mode: 0o644 }, null);
    await fs.mkdir(dfh, n('d'), root, {});
    const other = await fs.create(rootFh, n('other'), alice, CreateMode.GUARDED, {}, null);
    const otherFh = fs.handleOf(share, other.inode);
    for (const name of ['f', 'd']) {
      await rejects(fs.create(dfh, n(name), alice, CreateMode.GUARDED, {}, null), 'EXIST');
      await rejects(fs.mkdir(dfh, n(name), alice, {}), 'EXIST');
      await rejects(fs.symlink(dfh, n(name), alice, n('target'), {}), 'EXIST');
      await rejects(fs.mknod(dfh, n(name), alice, FileType.FIFO, {}, { major: 0, minor: 0 }), 'EXIST');
      await rejects(fs.link(otherFh, dfh, n(name), alice), 'EXIST');
    }
    // UNCHECKED and EXCLUSIVE answer from the file that is there, as on a writable directory.
    assert.equal((await fs.create(dfh, n('f'), alice, CreateMode.UNCHECKED, {}, null)).inode.id, f.inode.id);
    await rejects(fs.create(dfh, n('f'), alice, CreateMode.UNCHECKED, { size: 0 }, null), 'ACCES'); // not alice's to truncate
    await rejects(fs.create(dfh, n('d'), alice, CreateMode.UNCHECKED, {}, null), 'ISDIR');
    await rejects(fs.create(dfh, n('f'), alice, CreateMode.EXCLUSIVE, {}, Buffer.from('other-vf')), 'EXIST');
    // A free name is still refused for want of write permission.
    await rejects(fs.create(dfh, n('new'), alice, CreateMode.GUARDED, {}, null), 'ACCES');
    await rejects(fs.create(dfh, n('new'), alice, CreateMode.UNCHECKED, {}, null), 'ACCES');
    await rejects(fs.mkdir(dfh, n('new'), alice, {}), 'ACCES');
    // Without search permission the caller may not learn that the name exists.
    await fs.setattr(dfh, root, { mode: 0o754 });
    await rejects(fs.create(dfh, n('f'), alice, CreateMode.GUARDED, {}, null), 'ACCES');
    await rejects(fs.mkdir(dfh, n('d'), alice, {}), 'ACCES');
    const names = (await fs.readdir(dfh, root, 0, 100)).entries.map((e) => e.name.toString()).sort();
    assert.deepEqual(names, ['d', 'f']);
  });

  it('squashes root to the anonymous identity when root_squash is on', async () => {
    const { fs, share, rootFh } = await setup({ rootSquash: true, rootMode: 0o755 });
    await rejects(fs.create(rootFh, n('f'), root, CreateMode.UNCHECKED, {}, null), 'ACCES');
    assert.deepEqual(fs.identity(share, root), { uid: 65534, gid: 65534, gids: [] });
  });

  it('a SETATTR that sets nothing changes nothing: not the ctime another user guards on', async () => {
    const { fs, share, rootFh } = await setup({ rootMode: 0o777 });
    const f = await fs.create(rootFh, n('alices'), alice, CreateMode.UNCHECKED, { mode: 0o600 }, null);
    const fh = fs.handleOf(share, f.inode);
    const ctime = (await fs.getattr(fh, alice)).inode.ctime;
    await new Promise((r) => setTimeout(r, 5));
    const r = await fs.setattr(fh, bob, {});
    assert.deepEqual(r.after.ctime, ctime);
    assert.deepEqual((await fs.getattr(fh, alice)).inode.ctime, ctime);
    // The owner's guarded change, made against the ctime it read, still goes through.
    await fs.setattr(fh, alice, { mode: 0o640 }, ctime);
    await rejects(fs.setattr(fh, bob, {}, ctime), 'NOT_SYNC');
  });

  it('a chown or chgrp to the value a file has asks for the right to set it: a stranger moves no ctime', async () => {
    const { fs, share, rootFh } = await setup({ rootMode: 0o777 });
    const f = await fs.create(rootFh, n('alices'), alice, CreateMode.EXCLUSIVE, {}, Buffer.from('verifier'));
    const fh = fs.handleOf(share, f.inode);
    const ctime = (await fs.getattr(fh, alice)).inode.ctime;
    await new Promise((r) => setTimeout(r, 5));
    await rejects(fs.setattr(fh, bob, { uid: alice.uid }), 'PERM');
    await rejects(fs.setattr(fh, bob, { gid: alice.gid }), 'PERM');
    assert.deepEqual((await fs.getattr(fh, alice)).inode.ctime, ctime);
    // The owner's retransmitted EXCLUSIVE create still finds its verifier.
    const again = await fs.create(rootFh, n('alices'), alice, CreateMode.EXCLUSIVE, {}, Buffer.from('verifier'));
    assert.equal(again.inode.id, f.inode.id);
    // The owner may set its own owner and group (as tar does after extracting), and root anything.
    await fs.setattr(fh, alice, { uid: alice.uid, gid: alice.gid });
    await fs.setattr(fh, root, { uid: alice.uid });
    await rejects(fs.setattr(fh, alice, { gid: bob.gid }), 'PERM');
  });

  it('COMMIT is allowed where a WRITE is: not to a reader of the file, nor on a read-only share', async () => {
    const { fs, share, rootFh } = await setup({ rootMode: 0o777 });
    const f = await fs.create(rootFh, n('alices'), alice, CreateMode.UNCHECKED, { mode: 0o600 }, null);
    const fh = fs.handleOf(share, f.inode);
    await fs.write(fh, alice, 0, n('data'), false);
    await rejects(fs.commit(fh, bob), 'ACCES');
    await fs.commit(fh, alice);
    await fs.commit(fh, root);
    const ro = await setup({ readOnly: true });
    await rejects(ro.fs.commit(ro.rootFh, root), 'ROFS');
  });

  it('squashes group 0 of any caller too when root_squash is on (a client root can send uid 1000, gid 0)', async () => {
    const { fs, share, rootFh } = await setup({ rootSquash: false, rootMode: 0o775 });
    const squashing = await setup({ rootSquash: true, rootMode: 0o775 });
    const posingAsGroupRoot = { uid: 1000, gid: 0, gids: [0, 1000] };
    // The root directory is root:root 0775: group root may create in it.
    await fs.create(rootFh, n('f'), posingAsGroupRoot, CreateMode.UNCHECKED, {}, null);
    await rejects(squashing.fs.create(squashing.rootFh, n('f'), posingAsGroupRoot, CreateMode.UNCHECKED, {}, null), 'ACCES');
    assert.deepEqual(squashing.fs.identity(squashing.share, posingAsGroupRoot), { uid: 1000, gid: 65534, gids: [65534, 1000] });
    assert.deepEqual(fs.identity(share, posingAsGroupRoot), posingAsGroupRoot);
    assert.deepEqual(squashing.fs.identity(squashing.share, alice), alice, 'others unchanged');
  });

  it('answers ROFS for every change on a read-only share', async () => {
    const { fs, rootFh } = await setup({ readOnly: true });
    await rejects(fs.create(rootFh, n('f'), root, CreateMode.UNCHECKED, {}, null), 'ROFS');
    await rejects(fs.mkdir(rootFh, n('d'), root, {}), 'ROFS');
    await rejects(fs.setattr(rootFh, root, { mode: 0o700 }), 'ROFS');
  });

  it('applies the share permission policy: none refuses everything, read refuses changes', async () => {
    const { fs, share, rootFh } = await setup({ rootMode: 0o777 });
    const f = await fs.create(rootFh, n('f'), alice, CreateMode.UNCHECKED, { mode: 0o666 }, null);
    const ffh = fs.handleOf(share, f.inode);
    await fs.write(ffh, alice, 0, n('hello'), true);
    const levels = new Map<number, 'none' | 'read' | 'read-write'>([
      [alice.uid, 'read-write'],
      [bob.uid, 'read'],
    ]);
    const seen: string[] = [];
    fs.setAccessPolicy((name, id) => {
      seen.push(name);
      return levels.get(id.uid) ?? 'none';
    });
    assert.equal(seen.length, 0);
    // read: reads and lookups work, every change is refused with ACCES, ACCESS says no write.
    assert.equal((await fs.read(ffh, bob, 0, 5)).data.toString(), 'hello');
    await fs.lookup(rootFh, n('f'), bob);
    await rejects(fs.write(ffh, bob, 0, n('x'), false), 'ACCES');
    await rejects(fs.create(rootFh, n('g'), bob, CreateMode.UNCHECKED, {}, null), 'ACCES');
    await rejects(fs.remove(rootFh, n('f'), bob, false), 'ACCES');
    await rejects(fs.setattr(ffh, bob, { mode: 0o600 }), 'ACCES');
    await rejects(fs.commit(ffh, bob), 'ACCES');
    assert.deepEqual(fs.accessBits(share, f.inode, bob), { read: true, write: false, exec: false });
    // none (an unknown uid gets the default, here none): even reads and lookups are refused.
    const carol: Identity = { uid: 3000, gid: 3000, gids: [] };
    await rejects(fs.read(ffh, carol, 0, 5), 'ACCES');
    await rejects(fs.lookup(rootFh, n('f'), carol), 'ACCES');
    await rejects(fs.readdir(rootFh, carol, 0, 10), 'ACCES');
    // read-write: as before.
    await fs.write(ffh, alice, 5, n('!'), true);
    assert.deepEqual(seen.slice(0, 1), [share.name]);
    // A permission change holds from the next request.
    levels.set(bob.uid, 'read-write');
    await fs.write(ffh, bob, 0, n('H'), true);
    assert.equal((await fs.read(ffh, alice, 0, 6)).data.toString(), 'Hello!');
    fs.setAccessPolicy(null);
    await fs.read(ffh, carol, 0, 5);
  });

  it('validates names', async () => {
    const { fs, rootFh } = await setup();
    await rejects(fs.create(rootFh, n('a/b'), root, CreateMode.UNCHECKED, {}, null), 'INVAL');
    await rejects(fs.create(rootFh, Buffer.from([0x61, 0]), root, CreateMode.UNCHECKED, {}, null), 'INVAL');
    await rejects(fs.create(rootFh, Buffer.alloc(256, 0x61), root, CreateMode.UNCHECKED, {}, null), 'NAMETOOLONG');
    await fs.create(rootFh, Buffer.alloc(255, 0x61), root, CreateMode.UNCHECKED, {}, null);
    await rejects(fs.create(rootFh, n('..'), root, CreateMode.UNCHECKED, {}, null), 'EXIST');
    await rejects(fs.remove(rootFh, n('.'), root, true), 'INVAL');
    const up = await fs.lookup(rootFh, n('..'), root);
    assert.equal(up.inode.id, up.dir.id, '".." at the share root stays at the root');
  });

  it('implements EXCLUSIVE create with its verifier and the SETATTR ctime guard', async () => {
    const { fs, share, rootFh } = await setup();
    const v = Buffer.from('12345678');
    const a = await fs.create(rootFh, n('ex'), alice, CreateMode.EXCLUSIVE, {}, v);
    const again = await fs.create(rootFh, n('ex'), alice, CreateMode.EXCLUSIVE, {}, v);
    assert.equal(again.inode.id, a.inode.id);
    await rejects(fs.create(rootFh, n('ex'), alice, CreateMode.EXCLUSIVE, {}, Buffer.from('87654321')), 'EXIST');
    const fh = fs.handleOf(share, a.inode);
    await rejects(fs.setattr(fh, alice, { mode: 0o600 }, { sec: 1, nsec: 2 }), 'NOT_SYNC');
    const r = await fs.setattr(fh, alice, { mode: 0o600 }, a.inode.ctime);
    assert.equal(r.after.mode, 0o600);
    assert.equal(r.after.createVerifier, null);
  });

  it('a WRITE of no bytes changes nothing, even past the end: not the size, times or setuid bits', async () => {
    const { fs, share, rootFh } = await setup({ rootMode: 0o777 });
    const f = await fs.create(rootFh, n('f'), alice, CreateMode.GUARDED, { mode: 0o6777 }, null);
    const fh = fs.handleOf(share, f.inode);
    await fs.write(fh, alice, 0, n('hello'), true);
    await fs.setattr(fh, alice, { mode: 0o6777 });
    const before = (await fs.getattr(fh, alice)).inode;
    await new Promise((r) => setTimeout(r, 5));
    for (const [who, offset, stable] of [
      [alice, 1_000_000, false],
      [bob, 1_000_000, true],
      [bob, 2, true],
      [alice, Infinity, false], // an offset at or past 2^53, as the NFS decoder gives it
    ] as const) {
      const r = await fs.write(fh, who, offset, Buffer.alloc(0), stable);
      assert.deepEqual(r.after, before);
    }
    const after = (await fs.getattr(fh, alice)).inode;
    assert.equal(after.size, 5);
    assert.deepEqual([after.mtime, after.ctime, after.mode], [before.mtime, before.ctime, before.mode]);
    assert.equal((await fs.read(fh, alice, 0, 100)).data.toString(), 'hello');
    // The handle and the permission to write are still checked.
    await fs.setattr(fh, alice, { mode: 0o644 });
    await rejects(fs.write(fh, bob, 0, Buffer.alloc(0), false), 'ACCES');
    await rejects(fs.write(rootFh, alice, 0, Buffer.alloc(0), false), 'ISDIR');
    await rejects(fs.write(Buffer.alloc(5), alice, 0, Buffer.alloc(0), false), 'BADHANDLE');
    await fs.remove(rootFh, n('f'), alice, false);
    await rejects(fs.write(fh, alice, 0, Buffer.alloc(0), false), 'STALE');
  });

  it('truncates and extends with zeros', async () => {
    const { fs, share, rootFh } = await setup();
    const f = await fs.create(rootFh, n('t'), root, CreateMode.UNCHECKED, {}, null);
    const fh = fs.handleOf(share, f.inode);
    await fs.write(fh, root, 0, Buffer.alloc(10_000, 0x41), false);
    await fs.setattr(fh, root, { size: 100 });
    await fs.setattr(fh, root, { size: 5000 });
    const got = await fs.read(fh, root, 0, 10_000);
    assert.equal(got.data.length, 5000);
    assert.deepEqual(got.data.subarray(0, 100), Buffer.alloc(100, 0x41));
    assert.deepEqual(got.data.subarray(100), Buffer.alloc(4900));
    assert.equal(got.eof, true);
  });

  it('creates symlinks and device nodes as metadata', async () => {
    const { fs, share, rootFh } = await setup();
    const s = await fs.symlink(rootFh, n('ln'), root, n('target/path'), {});
    assert.equal((await fs.readlink(fs.handleOf(share, s.inode), root)).target.toString(), 'target/path');
    // A target with a NUL in it is refused, and nothing is made.
    await rejects(fs.symlink(rootFh, n('nul'), root, Buffer.from('safe\0/../../etc/shadow'), {}), 'INVAL');
    await rejects(fs.lookup(rootFh, n('nul'), root), 'NOENT');
    const d = await fs.mknod(rootFh, n('dev'), root, FileType.CHR, { mode: 0o600 }, { major: 1, minor: 3 });
    assert.equal(d.inode.rdevMajor, 1);
    assert.equal(d.inode.rdevMinor, 3);
    await rejects(fs.mknod(rootFh, n('dev2'), alice, FileType.BLK, {}, { major: 8, minor: 0 }), 'PERM');
    const fifo = await fs.mknod(rootFh, n('fifo'), alice, FileType.FIFO, {}, { major: 0, minor: 0 });
    assert.equal(fifo.inode.type, FileType.FIFO);
  });

  it('answers BADHANDLE for malformed handles and STALE for unknown shares', async () => {
    const { fs } = await setup();
    await rejects(fs.getattr(Buffer.alloc(5), root), 'BADHANDLE');
    const forged = Buffer.alloc(24);
    forged[0] = 2;
    forged[1] = 1;
    forged.writeUInt32BE(12345, 4);
    await rejects(fs.getattr(forged, root), 'STALE');
  });

  it('answers STALE for a handle whose generation is wrong, and for every version 1 handle', async () => {
    const { fs, share, rootFh } = await setup();
    const f = await fs.create(rootFh, n('f'), root, CreateMode.UNCHECKED, {}, null);
    const fh = fs.handleOf(share, f.inode);
    assert.equal((await fs.getattr(fh, root)).inode.id, f.inode.id);
    const wrong = Buffer.from(fh);
    wrong.writeUInt32BE((wrong.readUInt32BE(20) ^ 1) >>> 0, 20);
    await rejects(fs.getattr(wrong, root), 'STALE');
    // What DittoFS gave out before generations were random: share, inode, generation 1.
    const v1 = Buffer.alloc(20);
    v1[0] = 1;
    v1[1] = 1;
    v1.writeUInt32BE(share.id, 4);
    v1.writeUInt32BE(f.inode.id, 12);
    v1.writeUInt32BE(1, 16);
    await rejects(fs.getattr(v1, root), 'STALE');
  });

  it('lets only one of two crossing directory moves succeed, so no cycle can form', async () => {
    const { fs, share, rootFh } = await setup();
    const a = await fs.mkdir(rootFh, n('a'), root, {});
    const b = await fs.mkdir(rootFh, n('b'), root, {});
    const afh = fs.handleOf(share, a.inode);
    const bfh = fs.handleOf(share, b.inode);
    const results = await Promise.allSettled([fs.rename(rootFh, n('a'), bfh, n('a'), root), fs.rename(rootFh, n('b'), afh, n('b'), root)]);
    assert.deepEqual(results.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
    // Whatever moved, the root still reaches both directories.
    const top = await fs.readdir(rootFh, root, 0, 10);
    assert.equal(top.entries.length, 1);
  });

  it('lets concurrent UNCHECKED creates of one name all succeed on the same file', async () => {
    const { fs, rootFh } = await setup();
    const rs = await Promise.all(Array.from({ length: 5 }, () => fs.create(rootFh, n('same'), root, CreateMode.UNCHECKED, {}, null)));
    assert.equal(new Set(rs.map((r) => r.inode.id)).size, 1);
  });

  it('leaves data alone when a guarded SETATTR of the size fails its guard', async () => {
    const { fs, share, rootFh } = await setup();
    const f = await fs.create(rootFh, n('g'), root, CreateMode.UNCHECKED, {}, null);
    const fh = fs.handleOf(share, f.inode);
    await fs.write(fh, root, 0, n('hello world'), false);
    await rejects(fs.setattr(fh, root, { size: 0 }, { sec: 1, nsec: 1 }), 'NOT_SYNC');
    assert.equal((await fs.read(fh, root, 0, 100)).data.toString(), 'hello world');
  });

  it('hands out strictly increasing timestamps, distinct in SMB 100 ns units too', () => {
    const filetime = (t: { sec: number; nsec: number }) => BigInt(t.sec) * 10_000_000n + BigInt(Math.floor(t.nsec / 100));
    let prev = nowTimespec();
    for (let i = 0; i < 100_000; i++) {
      const t = nowTimespec();
      assert.ok(t.sec > prev.sec || (t.sec === prev.sec && t.nsec > prev.nsec), 'time went backwards or stood still');
      assert.ok(filetime(t) > filetime(prev), 'two timestamps an SMB client sees as one');
      prev = t;
    }
  });

  it('timestamps are never behind the wall clock read just before them', () => {
    // A CLOSE's write time earlier than the client's clock when it sent the CLOSE fails
    // smbtorture smb2.timestamps.delayed-2write; 200,000 readings cover every phase of the ms.
    for (let i = 0; i < 200_000; i++) {
      const wall = Date.now();
      const t = nowTimespec();
      assert.ok(t.sec * 1000 + Math.floor(t.nsec / 1e6) >= wall, `${t.sec}.${t.nsec} is behind ${wall} ms`);
    }
  });

  it('timestamps move with real time below the millisecond (SMB shows 100 ns units)', () => {
    // 200 pairs 200 us apart cover 40 ms: every phase of the wall clock's millisecond.
    for (let i = 0; i < 200; i++) {
      const a = nowTimespec();
      const h0 = process.hrtime.bigint();
      while (process.hrtime.bigint() - h0 < 200_000n);
      const b = nowTimespec();
      const apart = (b.sec - a.sec) * 1e9 + (b.nsec - a.nsec);
      assert.ok(apart >= 150_000, `two changes 200 us apart are ${apart} ns apart`);
    }
  });
});

describe("a share's file count (FSSTAT)", () => {
  /** A store whose usage() counts its calls and answers when the test says (`next`). */
  async function counted(usageMinAgeMs: number) {
    // Age 0: every count is old as soon as it is made (however long it took).
    const srv = await memoryServer({}, 4096, { usageMinAgeMs, ...(usageMinAgeMs === 0 ? { usageAgePerCost: 0 } : {}) });
    const share = srv.fs.shares()[0]!;
    const rootFh = srv.fs.handleOf(share, await srv.fs.root(share));
    const pending: { resolve: (files: number) => void; reject: (e: Error) => void }[] = [];
    let calls = 0;
    share.meta.usage = () => {
      calls++;
      return new Promise((resolve, reject) => pending.push({ resolve: (files) => resolve({ files, bytes: 0 }), reject }));
    };
    /** The count under way, once one is (bounded: a count starts within the fsstat call that needs it). */
    const next = async () => {
      for (let i = 0; i < 100 && pending.length === 0; i++) await new Promise((r) => setImmediate(r));
      const p = pending.shift();
      assert.ok(p, 'a count is under way');
      return p;
    };
    const files = async () => (await srv.fs.fsstat(rootFh, root)).files;
    return { srv, rootFh, files, next, calls: () => calls };
  }

  it('many clients asking at once share one count, and answers come from it while it is fresh', async () => {
    const { srv, rootFh, files, next, calls } = await counted(3_600_000);
    const asked = Array.from({ length: 50 }, () => files());
    (await next()).resolve(7);
    assert.deepEqual(await Promise.all(asked), Array(50).fill(7));
    // A file made since: answered from the count while it is fresh (df is approximate), not counted again.
    await srv.fs.create(rootFh, n('f'), root, CreateMode.GUARDED, {}, null);
    for (let i = 0; i < 20; i++) assert.equal(await files(), 7);
    assert.equal(calls(), 1);
    // SMB's volume queries ask for no count.
    assert.equal((await srv.fs.fsstat(rootFh, root, false)).files, 0);
    assert.equal(calls(), 1);
    await srv.close();
  });

  it('an old count is answered at once while one new count runs; a failed count keeps the old one and fails nobody', async () => {
    const { srv, files, next, calls } = await counted(0);
    const first = files();
    (await next()).resolve(3);
    assert.equal(await first, 3);
    // Old enough (age 0 here): the next ask answers 3 at once and starts one count behind it;
    // asks meanwhile start no other.
    let counting = false;
    for (let i = 0; i < 1000 && !counting; i++) {
      assert.equal(await files(), 3);
      counting = calls() === 2;
      if (!counting) await new Promise((r) => setImmediate(r));
    }
    assert.ok(counting, 'a second count started');
    for (let i = 0; i < 10; i++) assert.equal(await files(), 3);
    assert.equal(calls(), 2);
    const second = await next();
    second.reject(new Error('the store is unreachable'));
    // The failure is nobody's answer: the old count stands, and a later ask counts again.
    let third = null;
    for (let i = 0; i < 1000 && third === null; i++) {
      assert.equal(await files(), 3);
      if (calls() === 3) third = await next();
      else await new Promise((r) => setImmediate(r));
    }
    assert.ok(third, 'counted again after the failure');
    third.resolve(4);
    let now = 3;
    for (let i = 0; i < 1000 && now !== 4; i++) {
      now = await files();
      if (calls() > 3) (await next()).resolve(4);
    }
    assert.equal(now, 4);
    await srv.close();
  });

  it('a failed recount is not tried again before a fresh count would be (a failing store is not asked at every FSSTAT)', async () => {
    let now = 0;
    const srv = await memoryServer({}, 4096, { usageMinAgeMs: 1000, usageAgePerCost: 0, usageClock: () => now });
    const share = srv.fs.shares()[0]!;
    const rootFh = srv.fs.handleOf(share, await srv.fs.root(share));
    let calls = 0;
    let fail = false;
    share.meta.usage = () => {
      calls++;
      return fail ? Promise.reject(new Error('the store is unreachable')) : Promise.resolve({ files: 3, bytes: 0 });
    };
    const files = async () => (await srv.fs.fsstat(rootFh, root)).files;
    assert.equal(await files(), 3);
    fail = true;
    now = 2000;
    // Old: answered, and one recount starts behind it, which fails.
    assert.equal(await files(), 3);
    assert.equal(calls, 2);
    await new Promise((r) => setImmediate(r));
    // Asks at once after the failure answer the old count and ask the store nothing.
    for (let i = 0; i < 5; i++) assert.equal(await files(), 3);
    assert.equal(calls, 2);
    // A fresh count's age later, it is tried again.
    now = 3001;
    fail = false;
    assert.equal(await files(), 3);
    assert.equal(calls, 3);
    await srv.close();
  });

  it('the first count failing fails the FSSTAT that waits for it', async () => {
    const { srv, files, next } = await counted(0);
    const first = files();
    (await next()).reject(new Error('the store is unreachable'));
    await assert.rejects(first, /unreachable/);
    await srv.close();
  });
});
