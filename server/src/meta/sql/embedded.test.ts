// The move of an embedded store from PGlite to SQLite: a store written on PGlite opens on SQLite
// with everything a client can see intact, the PGlite store kept as a backup; a move that cannot
// be done leaves the PGlite store as it was and says why.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { SqlMetadataStore } from './store.js';
import { InodeMetaKind } from '../store.js';
import { FileType, type Inode } from '../../vfs/types.js';
import { dirInit, fileInit } from '../../testing/inodes.js';
import { MIGRATING_DIR, PGLITE_BACKUP_DIR, PGLITE_DIR, embeddedLayout } from './embedded.js';
import { MIGRATIONS } from './migrations.js';
import { PgliteDriver } from './pglite.js';
import { SQLITE_FILE } from './sqlite.js';
import { createEmbeddedMetadataStore } from './index.js';

const b = (s: string): Buffer => Buffer.from(s);
const T = (sec: number, nsec = 0) => ({ sec, nsec });

/** Everything a client can read of share `shareId`, by path, with inode ids as they are. */
async function snapshot(s: SqlMetadataStore, shareId: number, rootId: number): Promise<unknown> {
  const out: Record<string, unknown> = {};
  const walk = async (dir: Inode, at: string): Promise<void> => {
    out[at] = { inode: dir, streams: await s.listStreams(dir.id) };
    let cookie = 0;
    for (;;) {
      const page = await s.readdir(dir.id, cookie, 3);
      for (const e of page.entries) {
        cookie = e.cookie;
        const p = `${at}/${e.name.toString('latin1')}`;
        if (e.inode.type === FileType.DIR) await walk(e.inode, p);
        else
          out[p] = {
            cookie: e.cookie,
            inode: e.inode,
            streams: await s.listStreams(e.inode.id),
            blocks: await s.getBlocks(e.inode.id, 0, 100),
            token: await s.fileToken(e.inode.id),
            meta: await Promise.all(Object.values(InodeMetaKind).map((k) => s.getMeta(e.inode.id, k))),
          };
      }
      if (page.eof) break;
    }
  };
  const root = await s.getInode(rootId);
  assert.ok(root);
  await walk(root, '');
  out.usage = await s.usage(shareId);
  return out;
}

describe('embedded store: the move from PGlite to SQLite', () => {
  let tmp: string;
  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'dittofs-embedded-move-'));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('keeps every inode, entry, link, stream, DOS attribute, EA, security descriptor, allocation size, block ref and token; the PGlite store stays as a backup', async () => {
    const dir = path.join(tmp, 'store');
    const pg = createEmbeddedMetadataStore({ path: dir, engine: 'pglite' });
    await pg.open();
    const root = await pg.ensureRoot(7, dirInit());
    const sub = await pg.create(root.id, b('sub'), dirInit({ uid: 5 }), T(1_700_000_001, 5));
    const f = await pg.create(sub.id, b('f\xff\x00name'), fileInit({ size: 10, dosAttrs: 0x21 }), T(1_700_000_002, 7));
    await pg.link(f.id, root.id, b('hard'), T(1_700_000_003));
    await pg.create(root.id, b('link'), fileInit({ type: FileType.LNK, target: b('sub/f') }), T(1_700_000_004));
    await pg.create(root.id, b('excl'), fileInit({ createVerifier: Buffer.alloc(8, 0xab) }), T(1_700_000_005));
    for (let i = 0; i < 30; i++) await pg.create(sub.id, b(`many-${i}`), fileInit({ size: i }), T(1_700_000_010 + i));
    await pg.remove(sub.id, b('many-3'), false, T(1_700_000_100));
    await pg.createStream(f.id, b('ads'), fileInit(), T(1_700_000_101));
    await pg.setAttr(f.id, { dosAttrs: 0x02, btime: T(1_600_000_000, 9), mode: 0o600 });
    // What SMB keeps of a file: extended attributes, a security descriptor (its DACL), an allocation size.
    const limits = { count: 100, bytes: 65_536 };
    await pg.putMeta(
      f.id,
      InodeMetaKind.EA,
      [
        { name: b('user.a'), value: b('one') },
        { name: b('user.b'), value: b('two') },
      ],
      limits,
    );
    await pg.putMeta(f.id, InodeMetaKind.SECURITY, [{ name: b(''), value: Buffer.from([1, 0, 4, 0x80, 0, 0, 0, 0]) }], limits);
    await pg.putMeta(f.id, InodeMetaKind.ALLOCATION, [{ name: b(''), value: Buffer.alloc(8, 1) }], limits);
    await pg.putBlock(f.id, { index: 0, key: 'k/0', length: 4096, version: 1 });
    const token = await pg.nextLeaseToken();
    await pg.putBlock(f.id, { index: 1, key: 'k/1', length: 10, version: 2 }, { token, prevVersion: 0 });
    await pg.dropBlocks(f.id, 5, token);
    // A size stored under a newer lease than any block or cut (its token is the file's newest, see snapshot()).
    const sizeToken = await pg.nextLeaseToken();
    await pg.setAttr(f.id, { growTo: 20, sizeToken });
    // The newest inode, gone: its id is not handed out again.
    const gone = await pg.create(root.id, b('gone'), fileInit(), T(1_700_000_102));
    await pg.remove(root.id, b('gone'), false, T(1_700_000_103));
    const before = await snapshot(pg, 7, root.id);
    await pg.close();
    assert.equal(embeddedLayout(dir), 'pglite');

    const lite = createEmbeddedMetadataStore({ path: dir, engine: 'sqlite' });
    await lite.open();
    try {
      assert.equal(embeddedLayout(dir), 'sqlite');
      assert.ok(existsSync(path.join(dir, PGLITE_BACKUP_DIR, 'PG_VERSION')), 'the PGlite store is kept');
      assert.ok(!existsSync(path.join(dir, PGLITE_DIR)));
      assert.deepEqual(await snapshot(lite, 7, root.id), before);
      // The same root for the share, tokens go on from where they were, new inodes get new ids.
      assert.equal((await lite.ensureRoot(7, dirInit())).id, root.id);
      assert.equal(await lite.leaseTokensIssued(), true);
      assert.ok((await lite.nextLeaseToken()) > sizeToken);
      const n = await lite.create(root.id, b('new'), fileInit(), T(1_700_000_200));
      assert.ok(n.id > gone.id, `inode id ${n.id} handed out again`);
      await assert.rejects(lite.create(sub.id, b('many-4'), fileInit(), T(1_700_000_201)), /exists/);
    } finally {
      await lite.close();
    }
    // Once moved, the store is SQLite's: PGlite refuses it rather than open the stale backup.
    await assert.rejects(createEmbeddedMetadataStore({ path: dir, engine: 'pglite' }).open(), /holds a SQLite database/);
    const again = createEmbeddedMetadataStore({ path: dir, engine: 'sqlite' });
    await again.open();
    assert.equal((await again.lookup(root.id, b('new')))?.type, FileType.REG);
    await again.close();
  });

  it('a move that cannot be done changes nothing and says why', async () => {
    const dir = path.join(tmp, 'newer');
    const pg = createEmbeddedMetadataStore({ path: dir, engine: 'pglite' });
    await pg.open();
    const root = await pg.ensureRoot(1, dirInit());
    await pg.create(root.id, b('kept'), fileInit(), T(1_700_000_000));
    await pg.close();
    // A store written by a newer DittoFS (a schema version this one does not know).
    const d = await PgliteDriver.open({ dir });
    await d.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [MIGRATIONS.length + 1, 'from the future']);
    await d.close();

    await assert.rejects(createEmbeddedMetadataStore({ path: dir, engine: 'sqlite' }).open(), (e: Error) => {
      assert.match(e.message, /move from PGlite to SQLite failed; the PGlite store is unchanged/);
      assert.match(e.message, /newer than this DittoFS supports/);
      return true;
    });
    assert.equal(embeddedLayout(dir), 'pglite');
    assert.ok(!existsSync(path.join(dir, SQLITE_FILE)));
    assert.ok(!existsSync(path.join(dir, PGLITE_BACKUP_DIR)));
    // The PGlite store is as it was (its rows and the refusal of PGlite itself are unchanged).
    const d2 = await PgliteDriver.open({ dir });
    const { rows } = await d2.query('SELECT count(*)::integer AS n FROM dirents');
    assert.equal(rows[0]?.n, 1);
    await d2.close();
  });

  it('a store another process holds is left alone: neither its move under way nor its PGlite files', async () => {
    const dir = path.join(tmp, 'held');
    const pg = createEmbeddedMetadataStore({ path: dir, engine: 'pglite' });
    await pg.open();
    await pg.ensureRoot(1, dirInit());
    await pg.close();
    // Another live process (this test's parent) has the store, mid-move.
    const lock = path.join(dir, 'LOCK');
    const work = path.join(dir, MIGRATING_DIR);
    writeFileSync(lock, `${process.ppid}\n`);
    mkdirSync(work);
    writeFileSync(path.join(work, 'theirs'), '');
    await assert.rejects(createEmbeddedMetadataStore({ path: dir, engine: 'sqlite' }).open(), /in use by process/);
    assert.ok(existsSync(path.join(work, 'theirs')), "the other process's move is not removed");
    assert.equal(embeddedLayout(dir), 'pglite');
    // Its move done up to the second rename: the PGlite files stay where they are until it lets go.
    unlinkSync(lock);
    const lite = createEmbeddedMetadataStore({ path: dir, engine: 'sqlite' });
    await lite.open();
    await lite.close();
    renameSync(path.join(dir, PGLITE_BACKUP_DIR), path.join(dir, PGLITE_DIR));
    writeFileSync(lock, `${process.ppid}\n`);
    await assert.rejects(createEmbeddedMetadataStore({ path: dir, engine: 'sqlite' }).open(), /in use by process/);
    assert.ok(existsSync(path.join(dir, PGLITE_DIR, 'PG_VERSION')), 'pgdata is not renamed under another process');
    unlinkSync(lock);
    const again = createEmbeddedMetadataStore({ path: dir, engine: 'sqlite' });
    await again.open();
    await again.close();
    assert.ok(!existsSync(path.join(dir, PGLITE_DIR)), 'the move is finished by the next open');
    assert.ok(existsSync(path.join(dir, PGLITE_BACKUP_DIR, 'PG_VERSION')));
  });
});
