import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { AcceptStat, AuthFlavor, encodeAuthSys, encodeCall } from '../rpc/message.js';
import { XdrReader, XdrWriter } from '../rpc/xdr.js';
import type { MemoryServer } from '../testing/memory-server.js';
import { memoryServer } from '../testing/memory-server.js';
import type { SetAttrs } from '../vfs/service.js';
import { LINK_MAX } from '../vfs/types.js';
import { MOUNT_PROGRAM, Nfs3Status, NFS_PROGRAM, NfsProc } from './constants.js';
import { decodeFattr, readFileOffset, readSattr, writeFattr, writeSattr } from './xdr.js';

const capture = JSON.parse(readFileSync(new URL('./fixtures/libnfs-capture.json', import.meta.url), 'utf8')) as { records: string[] };
const conn = { host: '127.0.0.1', transport: 'tcp' as const };

let xid = 1;
function cred(uid: number, gid: number, gids: number[] = []) {
  return { flavor: AuthFlavor.AUTH_SYS, body: encodeAuthSys({ stamp: 0, machineName: 'test', uid, gid, gids }) };
}

/** Sends one call through the real dispatcher; returns a reader at the result and the accept status. */
async function call(
  srv: MemoryServer,
  prog: number,
  proc: number,
  args: (w: XdrWriter) => void,
  who: { flavor: number; body: Buffer } = cred(0, 0),
) {
  const w = new XdrWriter();
  args(w);
  const rec = encodeCall(xid++, prog, 3, proc, who, w.finish());
  const reply = await srv.rpc.answer(rec, conn);
  assert.ok(reply, 'expected a reply');
  const buf = Buffer.concat(reply);
  const r = new XdrReader(buf);
  r.u32(); // xid
  assert.equal(r.u32(), 1); // REPLY
  assert.equal(r.u32(), 0); // MSG_ACCEPTED
  r.u32();
  r.opaque(400);
  const stat = r.u32();
  return { stat, r, buf };
}

async function rootFh(srv: MemoryServer): Promise<Buffer> {
  const { r } = await call(srv, MOUNT_PROGRAM, 1, (w) => w.string('/export'));
  assert.equal(r.u32(), 0);
  return Buffer.from(r.opaque(64));
}

const skipPostOp = (r: XdrReader): void => {
  if (r.bool()) decodeFattr(r);
};
const skipWcc = (r: XdrReader): void => {
  if (r.bool()) r.fixed(24);
  skipPostOp(r);
};

/** MKDIR `name` (mode 0755) in the export's root, as root: its handle. */
async function mkdirInRoot(srv: MemoryServer, name: string): Promise<Buffer> {
  const root = await rootFh(srv);
  const mk = await call(srv, NFS_PROGRAM, NfsProc.MKDIR, (w) => {
    w.opaque(root).string(name);
    writeSattr(w, { mode: 0o755 });
  });
  assert.equal(mk.r.u32(), 0);
  mk.r.u32();
  return Buffer.from(mk.r.opaque(64));
}

async function create(srv: MemoryServer, dir: Buffer, name: string, mode = 0o644, who = cred(0, 0)) {
  const { r } = await call(
    srv,
    NFS_PROGRAM,
    NfsProc.CREATE,
    (w) => {
      w.opaque(dir).string(name).u32(1);
      writeSattr(w, { mode });
    },
    who,
  );
  const status = r.u32();
  if (status !== 0) return { status, fh: null };
  assert.equal(r.u32(), 1);
  return { status, fh: Buffer.from(r.opaque(64)) };
}

describe('NFSv3 procedures through the RPC dispatcher', () => {
  let srv: MemoryServer;
  before(async () => {
    srv = await memoryServer();
  });
  after(async () => srv.close());

  it('answers every call captured from libnfs without GARBAGE_ARGS', async () => {
    for (const hex of capture.records) {
      const reply = await srv.rpc.answer(Buffer.from(hex, 'hex'), conn);
      assert.ok(reply);
      const buf = Buffer.concat(reply);
      assert.equal(buf.readUInt32BE(20), AcceptStat.SUCCESS, `record ${hex.slice(0, 48)}`);
    }
  });

  it('creates, writes, reads back and commits with a stable verifier', async () => {
    const root = await rootFh(srv);
    const { status, fh } = await create(srv, root, 'data.bin');
    assert.equal(status, 0);
    const payload = Buffer.from('hello, nfs world');
    const wr = await call(srv, NFS_PROGRAM, NfsProc.WRITE, (w) => w.opaque(fh!).u64(3).u32(payload.length).u32(0).opaque(payload));
    assert.equal(wr.r.u32(), Nfs3Status.OK);
    skipWcc(wr.r);
    assert.equal(wr.r.u32(), payload.length);
    assert.equal(wr.r.u32(), 0); // UNSTABLE
    const verf = Buffer.from(wr.r.fixed(8));
    const rd = await call(srv, NFS_PROGRAM, NfsProc.READ, (w) => w.opaque(fh!).u64(0).u32(100));
    assert.equal(rd.r.u32(), Nfs3Status.OK);
    skipPostOp(rd.r);
    assert.equal(rd.r.u32(), 3 + payload.length);
    assert.equal(rd.r.bool(), true);
    assert.deepEqual(rd.r.opaque(1000), Buffer.concat([Buffer.alloc(3), payload]));
    const cm = await call(srv, NFS_PROGRAM, NfsProc.COMMIT, (w) => w.opaque(fh!).u64(0).u32(0));
    assert.equal(cm.r.u32(), Nfs3Status.OK);
    skipWcc(cm.r);
    assert.deepEqual(Buffer.from(cm.r.fixed(8)), verf);
  });

  it('lists a large directory completely across READDIRPLUS pages with stable cookies', async () => {
    const dir = await mkdirInRoot(srv, 'big');
    const names = new Set<string>();
    for (let i = 0; i < 500; i++) {
      names.add(`file-${i}`);
      assert.equal((await create(srv, dir, `file-${i}`)).status, 0);
    }
    const seen: string[] = [];
    let cookie = 0;
    let verf = Buffer.alloc(8);
    for (let page = 0; page < 1000; page++) {
      const { r } = await call(srv, NFS_PROGRAM, NfsProc.READDIRPLUS, (w) => w.opaque(dir).u64(cookie).fixed(verf).u32(1024).u32(4096));
      assert.equal(r.u32(), 0);
      skipPostOp(r);
      verf = Buffer.from(r.fixed(8));
      while (r.bool()) {
        r.u64();
        const name = r.string(255);
        cookie = r.u64();
        skipPostOp(r);
        if (r.bool()) r.opaque(64);
        if (name !== '.' && name !== '..') seen.push(name);
      }
      if (r.bool()) break;
    }
    assert.equal(seen.length, 500);
    assert.deepEqual(new Set(seen), names);
  });

  it('a WRITE of 0 bytes past the end answers OK (FILE_SYNC too) and changes neither size nor times', async () => {
    const root = await rootFh(srv);
    const { fh } = await create(srv, root, 'zero-write');
    const five = Buffer.from('hello');
    assert.equal((await call(srv, NFS_PROGRAM, NfsProc.WRITE, (w) => w.opaque(fh!).u64(0).u32(5).u32(2).opaque(five))).r.u32(), 0);
    const attrs = async () => {
      const { r } = await call(srv, NFS_PROGRAM, NfsProc.GETATTR, (w) => w.opaque(fh!));
      assert.equal(r.u32(), Nfs3Status.OK);
      return decodeFattr(r);
    };
    const before = await attrs();
    await new Promise((r) => setTimeout(r, 5));
    for (const stable of [0, 2]) {
      const { r } = await call(srv, NFS_PROGRAM, NfsProc.WRITE, (w) =>
        w.opaque(fh!).u64(1_000_000).u32(0).u32(stable).opaque(Buffer.alloc(0)),
      );
      assert.equal(r.u32(), Nfs3Status.OK);
      skipWcc(r);
      assert.equal(r.u32(), 0, 'count');
      assert.equal(r.u32(), stable, 'committed');
    }
    assert.deepEqual(await attrs(), before);
  });

  it('keeps every READDIR and READDIRPLUS reply within the count/maxcount the client gave (RFC 1813 3.3.16, 3.3.17)', async () => {
    const dir = await mkdirInRoot(srv, 'sized');
    for (let i = 0; i < 120; i++) assert.equal((await create(srv, dir, `f-${String(i).padStart(3, '0')}`)).status, 0);
    for (const plus of [false, true]) {
      for (const maxcount of [plus ? 400 : 200, 601, 1000, 1024, 2048, 4096, 8192, 65536]) {
        const seen: string[] = [];
        let cookie = 0;
        let verf = Buffer.alloc(8);
        for (let pages = 0; ; pages++) {
          assert.ok(pages < 200, 'no end');
          const { r, buf } = await call(srv, NFS_PROGRAM, plus ? NfsProc.READDIRPLUS : NfsProc.READDIR, (w) => {
            w.opaque(dir).u64(cookie).fixed(verf);
            if (plus) w.u32(maxcount);
            w.u32(maxcount);
          });
          assert.equal(r.u32(), Nfs3Status.OK, `maxcount ${maxcount}`);
          const resok = buf.length - r.pos; // READDIR3resok / READDIRPLUS3resok: all after the status
          skipPostOp(r);
          verf = Buffer.from(r.fixed(8));
          while (r.bool()) {
            r.u64();
            const name = r.string(255);
            cookie = r.u64();
            if (plus) {
              skipPostOp(r);
              if (r.bool()) assert.equal(r.opaque(64).length, 24);
            }
            seen.push(name);
          }
          const eof = r.bool();
          assert.equal(r.remaining, 0);
          assert.ok(resok <= maxcount, `${plus ? 'READDIRPLUS' : 'READDIR'} maxcount ${maxcount}: ${resok} bytes`);
          if (eof) break;
        }
        assert.equal(seen.length, 122, `maxcount ${maxcount}`);
        assert.equal(new Set(seen).size, 122, `maxcount ${maxcount}: an entry twice`);
      }
    }
  });

  it('answers READDIR with TOOSMALL when not even one entry fits', async () => {
    const root = await rootFh(srv);
    const { r } = await call(srv, NFS_PROGRAM, NfsProc.READDIR, (w) => w.opaque(root).u64(0).fixed(Buffer.alloc(8)).u32(50));
    assert.equal(r.u32(), Nfs3Status.TOOSMALL);
  });

  it('refuses a non-owner write to a 0644 file and allows the owner', async () => {
    const root = await rootFh(srv);
    const alice = cred(1000, 1000);
    const bob = cred(2000, 2000);
    const { fh } = await create(srv, root, 'alice.txt', 0o644, alice);
    const data = Buffer.from('x');
    const byBob = await call(srv, NFS_PROGRAM, NfsProc.WRITE, (w) => w.opaque(fh!).u64(0).u32(1).u32(2).opaque(data), bob);
    assert.equal(byBob.r.u32(), Nfs3Status.ACCES);
    const byAlice = await call(srv, NFS_PROGRAM, NfsProc.WRITE, (w) => w.opaque(fh!).u64(0).u32(1).u32(2).opaque(data), alice);
    assert.equal(byAlice.r.u32(), Nfs3Status.OK);
  });

  it('READDIRPLUS gives handles and attributes of entries only to a caller who may search the directory', async () => {
    const root = await rootFh(srv);
    const alice = cred(1000, 1000);
    const bob = cred(2000, 2000);
    const mk = await call(
      srv,
      NFS_PROGRAM,
      NfsProc.MKDIR,
      (w) => {
        w.opaque(root).string('listable-only');
        writeSattr(w, { mode: 0o744 }); // others: r, no x
      },
      alice,
    );
    assert.equal(mk.r.u32(), 0);
    mk.r.u32();
    const dir = Buffer.from(mk.r.opaque(64));
    assert.equal((await create(srv, dir, 'secret', 0o644, alice)).status, 0);
    /** READDIRPLUS of `dir` as `who`: each entry's name, and whether it came with attributes and a handle. */
    const list = async (who: ReturnType<typeof cred>) => {
      const { r } = await call(
        srv,
        NFS_PROGRAM,
        NfsProc.READDIRPLUS,
        (w) => w.opaque(dir).u64(0).fixed(Buffer.alloc(8)).u32(4096).u32(8192),
        who,
      );
      assert.equal(r.u32(), 0);
      skipPostOp(r);
      r.fixed(8);
      const out = new Map<string, { attrs: boolean; fh: Buffer | null }>();
      while (r.bool()) {
        r.u64();
        const name = r.string(255);
        r.u64();
        const attrs = r.bool();
        if (attrs) decodeFattr(r);
        out.set(name, { attrs, fh: r.bool() ? Buffer.from(r.opaque(64)) : null });
      }
      return out;
    };
    const asBob = await list(bob);
    assert.deepEqual(asBob.get('secret'), { attrs: false, fh: null }, 'names only without x');
    const lookup = await call(srv, NFS_PROGRAM, NfsProc.LOOKUP, (w) => w.opaque(dir).string('secret'), bob);
    assert.equal(lookup.r.u32(), Nfs3Status.ACCES, 'as LOOKUP refuses it');
    const asAlice = await list(alice);
    assert.equal(asAlice.get('secret')?.attrs, true);
    const fh = asAlice.get('secret')?.fh;
    assert.ok(fh);
    const read = await call(srv, NFS_PROGRAM, NfsProc.READ, (w) => w.opaque(fh).u64(0).u32(10), alice);
    assert.equal(read.r.u32(), Nfs3Status.OK);
  });

  it("maps an AUTH_NONE caller to the share's anonymous_uid/anonymous_gid, root squash or not", async () => {
    const none = { flavor: AuthFlavor.AUTH_NONE, body: Buffer.alloc(0) };
    for (const rootSquash of [false, true]) {
      const anon = await memoryServer({ anonymousUid: 1500, anonymousGid: 1600, rootSquash });
      try {
        const mnt = await call(anon, MOUNT_PROGRAM, 1, (w) => w.string('/export'), none);
        assert.equal(mnt.r.u32(), 0);
        const root = Buffer.from(mnt.r.opaque(64));
        const { r } = await call(
          anon,
          NFS_PROGRAM,
          NfsProc.CREATE,
          (w) => {
            w.opaque(root).string('by-nobody').u32(1);
            writeSattr(w, { mode: 0o644 });
          },
          none,
        );
        assert.equal(r.u32(), Nfs3Status.OK);
        assert.equal(r.u32(), 1);
        r.opaque(64);
        assert.equal(r.u32(), 1);
        const a = decodeFattr(r);
        assert.deepEqual([a.uid, a.gid], [1500, 1600], `root_squash ${rootSquash}`);
        // AUTH_SYS callers keep their ids.
        const { fh } = await create(anon, root, 'by-alice', 0o644, cred(1000, 1000));
        const ga = await call(anon, NFS_PROGRAM, NfsProc.GETATTR, (w) => w.opaque(fh!));
        assert.equal(ga.r.u32(), Nfs3Status.OK);
        const b = decodeFattr(ga.r);
        assert.deepEqual([b.uid, b.gid], [1000, 1000]);
      } finally {
        await anon.close();
      }
    }
  });

  it('answers LINK with MLINK at the linkmax PATHCONF reports', async () => {
    const root = await rootFh(srv);
    const { fh } = await create(srv, root, 'many-links');
    const pc = await call(srv, NFS_PROGRAM, NfsProc.PATHCONF, (w) => w.opaque(fh!));
    assert.equal(pc.r.u32(), Nfs3Status.OK);
    skipPostOp(pc.r);
    const linkmax = pc.r.u32();
    assert.equal(linkmax, LINK_MAX);
    const id = (await srv.fs.resolve(fh!)).inode.id;
    const getInode = srv.meta.getInode.bind(srv.meta);
    srv.meta.getInode = async (i) => {
      const inode = await getInode(i);
      return inode && i === id ? { ...inode, nlink: linkmax } : inode;
    };
    try {
      const { r } = await call(srv, NFS_PROGRAM, NfsProc.LINK, (w) => w.opaque(fh!).opaque(root).string('one-too-many'));
      assert.equal(r.u32(), Nfs3Status.MLINK);
    } finally {
      srv.meta.getInode = getInode;
    }
  });

  it('property: arbitrary argument bytes give a reply or GARBAGE_ARGS, never SYSTEM_ERR', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 21 }), fc.uint8Array({ maxLength: 200 }), async (proc, bytes) => {
        const padded = Buffer.alloc((bytes.length + 3) & ~3);
        padded.set(bytes);
        const rec = encodeCall(xid++, NFS_PROGRAM, 3, proc, cred(0, 0), padded);
        const reply = await srv.rpc.answer(rec, conn);
        assert.ok(reply);
        const stat = Buffer.concat(reply).readUInt32BE(20);
        assert.ok(stat === AcceptStat.SUCCESS || stat === AcceptStat.GARBAGE_ARGS, `proc ${proc}: accept_stat ${stat}`);
      }),
      { numRuns: 1500 },
    );
  });
});

describe('RFC 1813 §2.6 attribute codecs', () => {
  it('round-trips sattr3', () => {
    const time = fc.record({ sec: fc.nat(), nsec: fc.integer({ min: 0, max: 999_999_999 }) });
    fc.assert(
      fc.property(
        fc.record(
          {
            mode: fc.integer({ min: 0, max: 0o7777 }),
            uid: fc.nat(),
            gid: fc.nat(),
            size: fc.maxSafeNat(),
            atime: fc.oneof(fc.constant('server' as const), time),
            mtime: fc.oneof(fc.constant('server' as const), time),
          },
          { requiredKeys: [] },
        ),
        (a: SetAttrs) => {
          const w = new XdrWriter();
          writeSattr(w, a);
          assert.deepEqual(readSattr(new XdrReader(w.finish())), JSON.parse(JSON.stringify(a)));
        },
      ),
    );
  });

  it('reads offset3/size3 exactly below 2^53 and as Infinity (FBIG) from 2^53 up to 2^64-1', () => {
    const at = (hi: number, lo: number): number => {
      const b = Buffer.alloc(8);
      b.writeUInt32BE(hi, 0);
      b.writeUInt32BE(lo, 4);
      return readFileOffset(new XdrReader(b));
    };
    assert.equal(at(0, 0), 0);
    assert.equal(at(1, 5), 2 ** 32 + 5);
    assert.equal(at(0x1fffff, 0xffffffff), Number.MAX_SAFE_INTEGER);
    fc.assert(
      fc.property(fc.maxSafeNat(), (v) => {
        assert.equal(at(Math.floor(v / 2 ** 32), v >>> 0), v);
      }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 0x200000, max: 0xffffffff }), fc.nat({ max: 0xffffffff }), (hi, lo) => {
        assert.equal(at(hi, lo), Infinity);
      }),
    );
    assert.throws(() => readFileOffset(new XdrReader(Buffer.alloc(7))), { name: 'DecodeError' });
  });

  it('encodes fattr3 in 84 bytes and decodes it back', async () => {
    const srv = await memoryServer();
    const root = await srv.fs.root(srv.fs.shares()[0]!);
    const w = new XdrWriter();
    writeFattr(w, 77, root);
    const out = w.finish();
    assert.equal(out.length, 84);
    const back = decodeFattr(new XdrReader(out));
    assert.equal(back.fsid, 77);
    assert.equal(back.id, root.id);
    assert.equal(back.mode, root.mode);
    assert.deepEqual(back.mtime, root.mtime);
    await srv.close();
  });
});
