// Hostile and malformed input over raw sockets against a real server process: framing errors,
// truncated arguments, RPC-level rejections, forged handles, bad names and retransmissions. After
// every group a normal client (libnfs nfs-cat / nfs-ls) must still work against the same process.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { XdrWriter } from '../../server/src/rpc/xdr.js';
import {
  AcceptStat,
  args,
  AUTH_NONE,
  authSys,
  AuthStat,
  CreateHow,
  MOUNT_PROGRAM,
  MOUNT_V3,
  NFS_PROGRAM,
  NFS_V3,
  NfsClient,
  NfsProc,
  NfsStat,
  parseReply,
  RejectStat,
  RpcConnection,
  StableHow,
  type Cred,
} from '../helpers/rpc-client.js';
import { SUITE_TIMEOUT_MS, TEST_TIMEOUT_MS } from '../helpers/limits.js';
import { runTool } from '../helpers/run.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';

/** The server's default adapters.nfs.max_record_size. */
const MAX_RECORD = 1024 * 1024 + 64 * 1024;
const HELLO = 'hello from dittofs\n';

/** Big-endian u32 words as bytes: the exact reply records the server must send. */
function words(...ws: number[]): Buffer {
  const b = Buffer.alloc(4 * ws.length);
  ws.forEach((w, i) => b.writeUInt32BE(w >>> 0, 4 * i));
  return b;
}
/** xid, REPLY, MSG_ACCEPTED, verifier AUTH_NONE with empty body, accept_stat. */
const acceptedError = (xid: number, stat: number): Buffer => words(xid, 1, 0, 0, 0, stat);
const progMismatch = (xid: number, low: number, high: number): Buffer => words(xid, 1, 0, 0, 0, AcceptStat.PROG_MISMATCH, low, high);
/** xid, REPLY, MSG_DENIED, RPC_MISMATCH, low, high. */
const rpcMismatch = (xid: number, low: number, high: number): Buffer => words(xid, 1, 1, RejectStat.RPC_MISMATCH, low, high);
/** xid, REPLY, MSG_DENIED, AUTH_ERROR, auth_stat. */
const authError = (xid: number, stat: number): Buffer => words(xid, 1, 1, RejectStat.AUTH_ERROR, stat);
/** A successful NULL reply: header with accept_stat SUCCESS and no result. */
const nullOk = (xid: number): Buffer => words(xid, 1, 0, 0, 0, AcceptStat.SUCCESS);

const ROOT = authSys(0, 0);

describe('bad input over raw sockets', { timeout: SUITE_TIMEOUT_MS }, () => {
  let srv: DittofsProcess;
  let nfs: NfsClient;
  let root: Buffer;
  let tmp: string;

  const url = (p: string, extra = ''): string => `nfs://127.0.0.1/export/${p}?nfsport=${srv.nfsPort}&mountport=${srv.nfsPort}${extra}`;

  /** A fresh connection to the server under test. */
  const connect = (): Promise<RpcConnection> => RpcConnection.connect(srv.nfsPort);

  /** Sends one raw call record and returns the raw reply record for its xid. */
  async function rawCall(
    conn: RpcConnection,
    prog: number,
    vers: number,
    proc: number,
    argBytes: Buffer,
    cred: Cred = ROOT,
    rpcVersion = 2,
  ): Promise<{ xid: number; reply: Buffer }> {
    const xid = conn.allocXid();
    // The arguments go in exactly as given: no XDR padding, so truncation is byte-precise.
    const rec = Buffer.concat([RpcConnection.encodeCall(xid, prog, vers, proc, cred, Buffer.alloc(0)), argBytes]);
    rec.writeUInt32BE(rpcVersion, 8);
    conn.sendRecord(rec);
    return { xid, reply: await conn.recordFor(xid) };
  }

  /** nfs-cat and nfs-ls through libnfs still work, and the server process is alive. */
  async function assertNormalClientWorks(): Promise<void> {
    assert.equal(srv.child.exitCode, null, `server exited:\n${srv.output()}`);
    assert.equal(srv.child.signalCode, null);
    const cat = await runTool('nfs-cat', [url('hello.txt')]);
    assert.equal(cat.signal, null, 'nfs-cat timed out');
    assert.equal(cat.code, 0, cat.stderr);
    assert.equal(cat.stdout, HELLO);
    const ls = await runTool('nfs-ls', [url('')]);
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /^-rw-r--r-- +1 +0 +0 +19 hello\.txt$/m);
    // And a fresh raw connection is served.
    const c = await connect();
    try {
      const { xid, reply } = await rawCall(c, NFS_PROGRAM, NFS_V3, NfsProc.NULL, Buffer.alloc(0));
      assert.deepEqual(reply, nullOk(xid));
    } finally {
      c.close();
    }
  }

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'dittofs-bad-input-'));
    srv = await startDittofs();
    nfs = await NfsClient.connect(srv.nfsPort, ROOT);
    root = await nfs.mount('/export');
    await nfs.writeFile(root, 'hello.txt', Buffer.from(HELLO), { mode: 0o644 });
    await assertNormalClientWorks();
  });

  after(async () => {
    nfs?.close();
    await srv?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  test('framing: garbage bytes and oversized records close only the offending connection', { timeout: TEST_TIMEOUT_MS }, async () => {
    const bystander = await connect();
    try {
      // Not RPC at all: "GET " read as a record mark is a 1.2 GB non-final fragment.
      const http = await connect();
      http.sendRaw(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
      assert.equal(await http.waitClosedByPeer(), true, 'HTTP garbage: connection not closed');
      assert.equal(http.pendingReplies, 0);

      // Random bytes with the top bit clear and a huge length.
      const rnd = await connect();
      const junk = randomBytes(64);
      junk.writeUInt32BE(0x7ffffff0, 0);
      rnd.sendRaw(junk);
      assert.equal(await rnd.waitClosedByPeer(), true, 'random junk: connection not closed');

      // A zero-length fragment that is not the last one.
      const empty = await connect();
      empty.sendRaw(words(0, 0x80000000 | 40));
      assert.equal(await empty.waitClosedByPeer(), true, 'empty non-final fragment: connection not closed');

      // A record of exactly the cap is served (a NULL call whose ignored arguments fill the record)...
      const atCap = await connect();
      const xidCap = atCap.allocXid();
      const head = RpcConnection.encodeCall(xidCap, NFS_PROGRAM, NFS_V3, NfsProc.NULL, AUTH_NONE, Buffer.alloc(0));
      atCap.sendRecord(Buffer.concat([head, Buffer.alloc(MAX_RECORD - head.length)]));
      assert.deepEqual(await atCap.recordFor(xidCap), nullOk(xidCap));
      // ...and one byte more closes the connection as soon as the record mark arrives.
      atCap.sendRaw(Buffer.concat([words(0x80000000 | (MAX_RECORD + 1)), head]));
      assert.equal(await atCap.waitClosedByPeer(), true, 'record of cap+1 bytes: connection not closed');
      assert.equal(atCap.pendingReplies, 0);

      // Fragments that are fine alone but add up past the cap.
      const frags = await connect();
      const part = 700 * 1024;
      frags.sendRaw(Buffer.concat([words(part), head, Buffer.alloc(part - head.length)]));
      frags.sendRaw(Buffer.concat([words(part), Buffer.alloc(16)]));
      assert.equal(await frags.waitClosedByPeer(), true, 'multi-fragment record over the cap: connection not closed');

      // A small record split in three fragments is reassembled and answered.
      const multi = await connect();
      const xidMulti = multi.allocXid();
      const call = RpcConnection.encodeCall(xidMulti, NFS_PROGRAM, NFS_V3, NfsProc.NULL, AUTH_NONE, Buffer.alloc(0));
      multi.sendRaw(
        Buffer.concat([
          words(5),
          call.subarray(0, 5),
          words(11),
          call.subarray(5, 16),
          words(0x80000000 | (call.length - 16)),
          call.subarray(16),
        ]),
      );
      assert.deepEqual(await multi.recordFor(xidMulti), nullOk(xidMulti));
      multi.close();

      // One record that is not an RPC call (message type 7) gets no reply; the connection stays usable.
      const odd = await connect();
      odd.sendRecord(words(0xabcdef01, 7, 0, 0));
      const { xid: xidOdd, reply: oddReply } = await rawCall(odd, NFS_PROGRAM, NFS_V3, NfsProc.NULL, Buffer.alloc(0));
      assert.deepEqual(oddReply, nullOk(xidOdd));
      assert.equal(odd.pendingReplies, 0, 'the undecodable record must not be answered');
      // A flood of them gets the connection closed.
      const flood: Buffer[] = [];
      for (let i = 0; i < 1000; i++) flood.push(words(0x80000000 | 8, i, 7));
      odd.sendRaw(Buffer.concat(flood));
      assert.equal(await odd.waitClosedByPeer(), true, 'a flood of undecodable records: connection not closed');
      assert.equal(odd.pendingReplies, 0);

      // The connection opened before all this still works.
      const { xid, reply } = await rawCall(bystander, NFS_PROGRAM, NFS_V3, NfsProc.NULL, Buffer.alloc(0));
      assert.deepEqual(reply, nullOk(xid));
    } finally {
      bystander.close();
    }
    await assertNormalClientWorks();
  });

  test('truncated or invalid arguments: GARBAGE_ARGS with the same xid', { timeout: TEST_TIMEOUT_MS }, async () => {
    const c = await connect();
    try {
      const cases: [string, number, Buffer][] = [
        // GETATTR: the handle says 20 bytes, 10 are present.
        ['GETATTR with a cut-off handle', NfsProc.GETATTR, Buffer.concat([words(20), root.subarray(0, 10)])],
        ['GETATTR with no arguments', NfsProc.GETATTR, Buffer.alloc(0)],
        ['GETATTR with a 3-byte length word', NfsProc.GETATTR, Buffer.from([0, 0, 0])],
        ['GETATTR with an unpadded 19-byte handle', NfsProc.GETATTR, Buffer.concat([words(19), root.subarray(0, 19)])],
        // LOOKUP: the name is missing entirely.
        ['LOOKUP without a name', NfsProc.LOOKUP, args.fh(root)],
        ['LOOKUP with a name longer than the decoder cap', NfsProc.LOOKUP, args.dirop(root, 'n'.repeat(1025))],
        // WRITE: the data opaque claims 4096 bytes, 100 are present.
        [
          'WRITE with a data length beyond the bytes present',
          NfsProc.WRITE,
          Buffer.concat([new XdrWriter().opaque(root).u64(0).u32(4096).u32(StableHow.FILE_SYNC).u32(4096).finish(), Buffer.alloc(100)]),
        ],
        ['WRITE with a bad stable_how', NfsProc.WRITE, new XdrWriter().opaque(root).u64(0).u32(4).u32(9).opaque(Buffer.alloc(4)).finish()],
        ['READ without a count', NfsProc.READ, new XdrWriter().opaque(root).u64(0).finish()],
        ['CREATE with a bad createmode3', NfsProc.CREATE, new XdrWriter().opaque(root).string('never-created').u32(7).finish()],
        [
          'CREATE with a cut-off sattr3',
          NfsProc.CREATE,
          new XdrWriter().opaque(root).string('never-created').u32(CreateHow.GUARDED).u32(1).finish(),
        ],
        [
          'SETATTR with a bad time_how',
          NfsProc.SETATTR,
          new XdrWriter().opaque(root).u32(0).u32(0).u32(0).u32(0).u32(3).u32(0).u32(0).finish(),
        ],
        [
          'SETATTR with nseconds >= 10^9',
          NfsProc.SETATTR,
          new XdrWriter().opaque(root).u32(0).u32(0).u32(0).u32(0).u32(2).u32(1).u32(1_000_000_000).u32(0).u32(0).finish(),
        ],
        ['SETATTR with a boolean of 2', NfsProc.SETATTR, new XdrWriter().opaque(root).u32(2).finish()],
      ];
      for (const [what, proc, argBytes] of cases) {
        const { xid, reply } = await rawCall(c, NFS_PROGRAM, NFS_V3, proc, argBytes);
        assert.deepEqual(reply, acceptedError(xid, AcceptStat.GARBAGE_ARGS), what);
      }
      // MOUNT MNT with a path length beyond the bytes present.
      const mnt = await rawCall(c, MOUNT_PROGRAM, MOUNT_V3, 1, Buffer.concat([words(40), Buffer.from('/export')]));
      assert.deepEqual(mnt.reply, acceptedError(mnt.xid, AcceptStat.GARBAGE_ARGS));
      // Nothing was created by the rejected CREATEs, and the connection still serves requests.
      assert.equal((await nfs.lookup(root, 'never-created')).status, NfsStat.NOENT);
      assert.equal(c.pendingReplies, 0);
      const ok = await rawCall(c, NFS_PROGRAM, NFS_V3, NfsProc.NULL, Buffer.alloc(0));
      assert.deepEqual(ok.reply, nullOk(ok.xid));
    } finally {
      c.close();
    }
    await assertNormalClientWorks();
  });

  test('RPC-level rejections: program, version, procedure, RPC version, credentials', { timeout: TEST_TIMEOUT_MS }, async () => {
    const c = await connect();
    try {
      const none = Buffer.alloc(0);
      let r = await rawCall(c, 100099, 1, 0, none);
      assert.deepEqual(r.reply, acceptedError(r.xid, AcceptStat.PROG_UNAVAIL), 'unknown program');
      r = await rawCall(c, 100000, 2, 0, none); // no portmapper on the NFS port
      assert.deepEqual(r.reply, acceptedError(r.xid, AcceptStat.PROG_UNAVAIL), 'portmapper on the NFS port');
      for (const vers of [2, 4, 0, 0xffffffff]) {
        r = await rawCall(c, NFS_PROGRAM, vers, NfsProc.NULL, none);
        assert.deepEqual(r.reply, progMismatch(r.xid, 3, 3), `NFS version ${vers}`);
        const parsed = parseReply(r.reply);
        assert.equal(parsed.kind, 'accepted');
        assert.deepEqual(parsed.kind === 'accepted' ? parsed.mismatch : null, { low: 3, high: 3 });
      }
      r = await rawCall(c, MOUNT_PROGRAM, 1, 0, none);
      assert.deepEqual(r.reply, progMismatch(r.xid, 3, 3), 'MOUNT version 1');
      for (const proc of [22, 999, 0xffffffff]) {
        r = await rawCall(c, NFS_PROGRAM, NFS_V3, proc, args.fh(root));
        assert.deepEqual(r.reply, acceptedError(r.xid, AcceptStat.PROC_UNAVAIL), `NFS procedure ${proc}`);
      }
      r = await rawCall(c, MOUNT_PROGRAM, MOUNT_V3, 6, none);
      assert.deepEqual(r.reply, acceptedError(r.xid, AcceptStat.PROC_UNAVAIL), 'MOUNT procedure 6');
      for (const rpcv of [3, 1, 0]) {
        r = await rawCall(c, NFS_PROGRAM, NFS_V3, NfsProc.NULL, none, ROOT, rpcv);
        assert.deepEqual(r.reply, rpcMismatch(r.xid, 2, 2), `RPC version ${rpcv}`);
      }

      // Malformed AUTH_SYS bodies: AUTH_ERROR / AUTH_BADCRED, whatever the procedure.
      const badCreds: [string, Buffer][] = [
        ['truncated after the stamp', words(1)],
        ['machine name longer than 255 bytes', new XdrWriter().u32(1).string('m'.repeat(300)).u32(0).u32(0).u32(0).finish()],
        ['17 supplementary gids', new XdrWriter().u32(1).string('m').u32(0).u32(0).u32(17).finish()],
        ['gid count beyond the bytes present', new XdrWriter().u32(1).string('m').u32(0).u32(0).u32(3).u32(5).finish()],
        ['empty body', Buffer.alloc(0)],
      ];
      for (const [what, body] of badCreds) {
        for (const proc of [NfsProc.NULL, NfsProc.GETATTR]) {
          r = await rawCall(c, NFS_PROGRAM, NFS_V3, proc, args.fh(root), { flavor: 1, body });
          assert.deepEqual(r.reply, authError(r.xid, AuthStat.AUTH_BADCRED), `AUTH_SYS ${what}, proc ${proc}`);
        }
      }
      // A credential body over 400 bytes breaks the call header itself: no reply, connection stays.
      const xidBig = c.allocXid();
      c.sendRecord(RpcConnection.encodeCall(xidBig, NFS_PROGRAM, NFS_V3, NfsProc.NULL, { flavor: 1, body: Buffer.alloc(404) }, none));
      // An unknown flavor (RPCSEC_GSS) is too weak for real work but fine for NULL.
      r = await rawCall(c, NFS_PROGRAM, NFS_V3, NfsProc.GETATTR, args.fh(root), { flavor: 6, body: Buffer.alloc(8) });
      assert.deepEqual(r.reply, authError(r.xid, AuthStat.AUTH_TOOWEAK), 'RPCSEC_GSS GETATTR');
      r = await rawCall(c, NFS_PROGRAM, NFS_V3, NfsProc.NULL, none, { flavor: 6, body: Buffer.alloc(8) });
      assert.deepEqual(r.reply, nullOk(r.xid), 'RPCSEC_GSS NULL');
      assert.equal(c.pendingReplies, 0, 'the call with a 404-byte credential must not be answered');
      // A well-formed AUTH_SYS with 16 gids is accepted.
      const g = await new NfsClient(
        c,
        authSys(
          1000,
          1000,
          Array.from({ length: 16 }, (_, i) => 2000 + i),
        ),
      ).getattr(root);
      assert.equal(g.status, NfsStat.OK);
    } finally {
      c.close();
    }
    await assertNormalClientWorks();
  });

  test('stale and forged file handles', { timeout: TEST_TIMEOUT_MS }, async () => {
    const c = await NfsClient.connect(srv.nfsPort, ROOT);
    try {
      assert.equal(root.length, 24);
      // Random handles never resolve.
      for (let i = 0; i < 50; i++) {
        const { status } = await c.getattr(randomBytes(i % 2 ? 24 : 20));
        assert.ok(status === NfsStat.BADHANDLE || status === NfsStat.STALE, `random handle gave ${status}`);
      }
      // Well-formed handles naming things that do not exist: STALE.
      const unknownShare = Buffer.from(root);
      unknownShare.writeUInt32BE((root.readUInt32BE(4) ^ 0x5a5a5a5a) >>> 0, 4);
      assert.equal((await c.getattr(unknownShare)).status, NfsStat.STALE, 'unknown share id');
      const unknownInode = Buffer.from(root);
      unknownInode.writeUInt32BE(0x00abcdef, 12);
      assert.equal((await c.getattr(unknownInode)).status, NfsStat.STALE, 'unknown inode id');
      const wrongGeneration = Buffer.from(root);
      wrongGeneration.writeUInt32BE((root.readUInt32BE(20) + 1) >>> 0, 20);
      assert.equal((await c.getattr(wrongGeneration)).status, NfsStat.STALE, 'wrong generation');
      // A version 1 handle (before random generations) is stale, not malformed.
      const v1 = Buffer.concat([Buffer.from([1, 1, 0, 0]), root.subarray(4, 16), words(1)]);
      assert.equal((await c.getattr(v1)).status, NfsStat.STALE, 'version 1 handle');

      // Malformed handles: BADHANDLE.
      const badVersion = Buffer.from(root);
      badVersion[0] = 3;
      assert.equal((await c.getattr(badVersion)).status, NfsStat.BADHANDLE, 'wrong version byte');
      const badKind = Buffer.from(root);
      badKind[1] = 9;
      assert.equal((await c.getattr(badKind)).status, NfsStat.BADHANDLE, 'wrong kind byte');
      assert.equal((await c.getattr(Buffer.alloc(0))).status, NfsStat.BADHANDLE, 'empty handle');
      assert.equal((await c.getattr(Buffer.concat([root, Buffer.alloc(40)]))).status, NfsStat.BADHANDLE, '64-byte handle');
      assert.equal((await c.lookup(badVersion, 'hello.txt')).status, NfsStat.BADHANDLE, 'LOOKUP in a bad handle');
      assert.equal((await c.create(badVersion, 'x')).status, NfsStat.BADHANDLE, 'CREATE in a bad handle');

      // 65 bytes is over NFS3_FHSIZE: not even decodable.
      const { xid, reply } = await rawCall(c.conn, NFS_PROGRAM, NFS_V3, NfsProc.GETATTR, args.fh(Buffer.alloc(65, 1)));
      assert.deepEqual(reply, acceptedError(xid, AcceptStat.GARBAGE_ARGS), '65-byte handle');

      // A deleted file's handle is STALE everywhere.
      const fh = await c.writeFile(root, 'doomed.txt', Buffer.from('bye'));
      assert.equal((await c.getattr(fh)).status, NfsStat.OK);
      assert.equal((await c.remove(root, 'doomed.txt')).status, NfsStat.OK);
      assert.equal((await c.getattr(fh)).status, NfsStat.STALE, 'GETATTR of a deleted file');
      assert.equal((await c.read(fh, 0, 10)).status, NfsStat.STALE, 'READ of a deleted file');
      assert.equal((await c.write(fh, 0, Buffer.from('x'))).status, NfsStat.STALE, 'WRITE to a deleted file');
      assert.equal((await c.setattr(fh, { mode: 0o600 })).status, NfsStat.STALE, 'SETATTR of a deleted file');
      // A deleted directory's handle too, including as the directory of LOOKUP/CREATE.
      const d = await c.mkdir(root, 'doomed-dir');
      assert.equal(d.status, NfsStat.OK);
      assert.equal((await c.rmdir(root, 'doomed-dir')).status, NfsStat.OK);
      assert.ok(d.fh);
      assert.equal((await c.lookup(d.fh, 'x')).status, NfsStat.STALE, 'LOOKUP in a deleted directory');
      assert.equal((await c.create(d.fh, 'x')).status, NfsStat.STALE, 'CREATE in a deleted directory');
    } finally {
      c.close();
    }
    await assertNormalClientWorks();
  });

  test('bad names: "/", NUL, too long, ".", ".." and no escape from the share root', { timeout: TEST_TIMEOUT_MS }, async () => {
    const c = await NfsClient.connect(srv.nfsPort, ROOT);
    try {
      for (const name of ['a/b', '/', 'hello.txt/', Buffer.from('a\0b'), Buffer.from([0])]) {
        const label = JSON.stringify(name.toString());
        assert.equal((await c.create(root, name)).status, NfsStat.INVAL, `CREATE ${label}`);
        assert.equal((await c.lookup(root, name)).status, NfsStat.INVAL, `LOOKUP ${label}`);
        assert.equal((await c.mkdir(root, name)).status, NfsStat.INVAL, `MKDIR ${label}`);
        assert.equal((await c.remove(root, name)).status, NfsStat.INVAL, `REMOVE ${label}`);
      }
      assert.equal((await c.lookup(root, '../..')).status, NfsStat.INVAL);
      assert.equal((await c.lookup(root, 'a')).status, NfsStat.NOENT, 'CREATE "a/b" must not have created "a"');
      assert.equal((await c.create(root, '')).status, NfsStat.INVAL, 'CREATE of an empty name');

      // NAME_MAX is 255 bytes.
      const long = 'n'.repeat(256);
      assert.equal((await c.create(root, long)).status, NfsStat.NAMETOOLONG, 'CREATE of 256 bytes');
      assert.equal((await c.lookup(root, long)).status, NfsStat.NAMETOOLONG, 'LOOKUP of 256 bytes');
      assert.equal((await c.mkdir(root, long)).status, NfsStat.NAMETOOLONG, 'MKDIR of 256 bytes');
      const max = 'm'.repeat(255);
      const made = await c.create(root, max);
      assert.equal(made.status, NfsStat.OK, 'CREATE of 255 bytes');
      assert.equal((await c.lookup(root, max)).status, NfsStat.OK);
      assert.equal((await c.remove(root, max)).status, NfsStat.OK);

      for (const name of ['.', '..']) {
        assert.equal((await c.create(root, name)).status, NfsStat.EXIST, `CREATE "${name}"`);
        assert.equal(
          (await c.create(root, name, { mode: 0o644 }, CreateHow.UNCHECKED)).status,
          NfsStat.EXIST,
          `CREATE UNCHECKED "${name}"`,
        );
        assert.equal((await c.mkdir(root, name)).status, NfsStat.EXIST, `MKDIR "${name}"`);
        assert.equal((await c.remove(root, name)).status, NfsStat.INVAL, `REMOVE "${name}"`);
        assert.equal((await c.rmdir(root, name)).status, NfsStat.INVAL, `RMDIR "${name}"`);
      }

      // ".." at the share root is the root itself, for any user.
      const rootAttrs = (await c.getattr(root)).attrs;
      assert.ok(rootAttrs);
      for (const who of [c, c.as(authSys(1000, 1000))]) {
        const up = await who.lookup(root, '..');
        assert.equal(up.status, NfsStat.OK);
        assert.deepEqual(up.fh, root);
        assert.equal(up.attrs?.fileid, rootAttrs.fileid);
        const dot = await who.lookup(root, '.');
        assert.deepEqual(dot.fh, root);
      }
      // From a subdirectory, ".." goes to the root and no further.
      const sub = await c.mkdir(root, 'sub');
      assert.equal(sub.status, NfsStat.OK);
      assert.ok(sub.fh);
      const up1 = await c.lookup(sub.fh, '..');
      assert.deepEqual(up1.fh, root);
      // MOUNT paths cannot climb out either.
      assert.deepEqual((await c.mnt('/export/..')).fh, root);
      assert.deepEqual((await c.mnt('/export/sub/../..')).fh, root);
      assert.deepEqual((await c.mnt('/export/sub')).fh, sub.fh);
      assert.equal((await c.mnt('/export/../../etc')).status, 2, 'MNT /export/../../etc: MNT3ERR_NOENT');
      assert.equal((await c.mnt('/etc')).status, 2);
      assert.equal((await c.mnt('/exportx')).status, 2);
      assert.equal((await c.mnt('/export/hello.txt')).status, 20, 'MNT of a file: MNT3ERR_NOTDIR');
      assert.equal((await c.rmdir(root, 'sub')).status, NfsStat.OK);
    } finally {
      c.close();
    }
    await assertNormalClientWorks();
  });

  test(
    'values the protocol allows but no file can have: FBIG, NAMETOOLONG, MNT INVAL and NAMETOOLONG',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      const c = await NfsClient.connect(srv.nfsPort, ROOT);
      try {
        const fh = await c.writeFile(root, 'big.txt', Buffer.from('small'));
        /** The nfsstat3 a raw NFS call answers with (SUCCESS at the RPC level is required). */
        const status = async (proc: number, argBytes: Buffer): Promise<number> => {
          const { xid, reply } = await rawCall(c.conn, NFS_PROGRAM, NFS_V3, proc, argBytes);
          const p = parseReply(reply);
          assert.equal(p.xid, xid);
          assert.ok(p.kind === 'accepted' && p.acceptStat === AcceptStat.SUCCESS, `RPC not successful: ${reply.toString('hex')}`);
          return p.body.u32();
        };
        const FBIG = 27;
        // uint64 offsets and sizes at or past 2^53 (hi word 2^21), up to 2^64-1: FBIG, not GARBAGE_ARGS.
        const huge: [string, number, number][] = [
          ['2^53', 0x200000, 0],
          ['2^53+1', 0x200000, 1],
          ['2^63', 0x80000000, 0],
          ['2^64-1', 0xffffffff, 0xffffffff],
        ];
        for (const [what, hi, lo] of huge) {
          const write = Buffer.concat([new XdrWriter().opaque(fh).finish(), words(hi, lo, 4, StableHow.FILE_SYNC, 4), Buffer.from('abcd')]);
          assert.equal(await status(NfsProc.WRITE, write), FBIG, `WRITE at offset ${what}`);
          // sattr3 with only the size set: mode, uid, gid not set, size set, atime and mtime untouched; no guard.
          const setattr = Buffer.concat([new XdrWriter().opaque(fh).finish(), words(0, 0, 0, 1, hi, lo, 0, 0, 0)]);
          assert.equal(await status(NfsProc.SETATTR, setattr), FBIG, `SETATTR size ${what}`);
        }
        // Just below: a write that would end past 2^53-1 is FBIG too; nothing above changed the file.
        assert.equal(await status(NfsProc.WRITE, args.write(fh, Number.MAX_SAFE_INTEGER, Buffer.from('x'))), FBIG);
        const attrs = await c.getattr(fh);
        assert.equal(attrs.attrs?.size, 5);
        assert.deepEqual((await c.read(fh, 0, 100)).data, Buffer.from('small'));

        // SYMLINK targets: 4,096 bytes are fine; longer ones are NAMETOOLONG, and create nothing.
        const symlink = (name: string, target: Buffer): Buffer =>
          Buffer.concat([
            new XdrWriter().opaque(root).string(name).finish(),
            words(0, 0, 0, 0, 0, 0),
            new XdrWriter().opaque(target).finish(),
          ]);
        assert.equal(await status(10, symlink('link-4096', Buffer.alloc(4096, 0x61))), NfsStat.OK);
        for (const len of [4097, 65536, 512 * 1024]) {
          assert.equal(await status(10, symlink(`link-${len}`, Buffer.alloc(len, 0x61))), NfsStat.NAMETOOLONG, `a ${len}-byte target`);
          assert.equal((await c.lookup(root, `link-${len}`)).status, NfsStat.NOENT);
        }
        assert.equal((await c.remove(root, 'link-4096')).status, NfsStat.OK);
        // A target whose declared length is beyond the bytes sent is still malformed.
        const cut = Buffer.concat([new XdrWriter().opaque(root).string('cut').finish(), words(0, 0, 0, 0, 0, 0, 8192), Buffer.alloc(100)]);
        const garbage = await rawCall(c.conn, NFS_PROGRAM, NFS_V3, 10, cut);
        assert.deepEqual(garbage.reply, acceptedError(garbage.xid, AcceptStat.GARBAGE_ARGS));

        // MNT paths that no directory can have: NUL anywhere is MNT3ERR_INVAL, a component over
        // 255 bytes MNT3ERR_NAMETOOLONG (not SERVERFAULT); 255 bytes is a name that just is not there.
        const mnt = async (p: Buffer): Promise<number> => {
          const { reply } = await rawCall(c.conn, MOUNT_PROGRAM, MOUNT_V3, 1, new XdrWriter().opaque(p).finish());
          const r = parseReply(reply);
          assert.ok(r.kind === 'accepted' && r.acceptStat === AcceptStat.SUCCESS);
          return r.body.u32();
        };
        for (const p of ['/export/a\0b', '/exp\0ort', '/export\0', '\0'])
          assert.equal(await mnt(Buffer.from(p)), 22, `MNT ${JSON.stringify(p)}`);
        assert.equal(await mnt(Buffer.from(`/export/${'x'.repeat(256)}`)), 63, 'MNT with a 256-byte component');
        assert.equal(await mnt(Buffer.from(`/${'x'.repeat(300)}`)), 63, 'MNT with a 300-byte share component');
        assert.equal(await mnt(Buffer.from(`/export/${'x'.repeat(255)}`)), 2, 'MNT with a 255-byte component: NOENT');
        assert.equal(await mnt(Buffer.from('/export')), 0);
        assert.equal((await c.remove(root, 'big.txt')).status, NfsStat.OK);
      } finally {
        c.close();
      }
      await assertNormalClientWorks();
    },
  );

  test('duplicate request cache: retransmitted CREATE and REMOVE get the original reply', { timeout: TEST_TIMEOUT_MS }, async () => {
    const c = await NfsClient.connect(srv.nfsPort, ROOT);
    try {
      const conn = c.conn;
      const createArgs = args.create(root, 'drc-file', CreateHow.GUARDED, { mode: 0o644 });
      const xid = conn.allocXid();
      const first = await conn.call(NFS_PROGRAM, NFS_V3, NfsProc.CREATE, createArgs, { cred: ROOT, xid });
      assert.equal(first.xid, xid);
      assert.equal(first.kind, 'accepted');
      assert.equal(first.kind === 'accepted' && first.acceptStat, AcceptStat.SUCCESS);
      assert.equal(first.kind === 'accepted' && first.body.u32(), NfsStat.OK);
      const again = await conn.call(NFS_PROGRAM, NFS_V3, NfsProc.CREATE, createArgs, { cred: ROOT, xid });
      assert.deepEqual(again.raw, first.raw, 'the retransmitted CREATE must get byte-identical reply');
      // Clients reconnect before retransmitting: the cache is keyed by host, not by connection.
      const other = await RpcConnection.connect(srv.nfsPort);
      try {
        const fromOther = await other.call(NFS_PROGRAM, NFS_V3, NfsProc.CREATE, createArgs, { cred: ROOT, xid });
        assert.deepEqual(fromOther.raw, first.raw, 'retransmission on a new connection');
      } finally {
        other.close();
      }
      // The same request with a new xid is a new request: EXIST.
      const fresh = await c.create(root, 'drc-file');
      assert.equal(fresh.status, NfsStat.EXIST);
      // A reused xid with different arguments is not a retransmission (same length, other name).
      const reused = await conn.call(
        NFS_PROGRAM,
        NFS_V3,
        NfsProc.CREATE,
        args.create(root, 'drc-filf', CreateHow.GUARDED, { mode: 0o644 }),
        { cred: ROOT, xid },
      );
      assert.notDeepEqual(reused.raw, first.raw);
      assert.equal(reused.kind === 'accepted' && reused.body.u32(), NfsStat.OK);
      assert.equal((await c.lookup(root, 'drc-filf')).status, NfsStat.OK);

      // REMOVE retransmitted: OK twice (identical bytes), not NOENT.
      const rmArgs = args.dirop(root, 'drc-file');
      const rmXid = conn.allocXid();
      const rm1 = await conn.call(NFS_PROGRAM, NFS_V3, NfsProc.REMOVE, rmArgs, { cred: ROOT, xid: rmXid });
      assert.equal(rm1.kind === 'accepted' && rm1.body.u32(), NfsStat.OK);
      const rm2 = await conn.call(NFS_PROGRAM, NFS_V3, NfsProc.REMOVE, rmArgs, { cred: ROOT, xid: rmXid });
      assert.deepEqual(rm2.raw, rm1.raw);
      assert.equal(rm2.kind === 'accepted' && rm2.body.u32(), NfsStat.OK);
      // A genuinely new REMOVE sees the file gone.
      assert.equal((await c.remove(root, 'drc-file')).status, NfsStat.NOENT);
      assert.equal((await c.lookup(root, 'drc-file')).status, NfsStat.NOENT);
      assert.equal((await c.remove(root, 'drc-filf')).status, NfsStat.OK);

      // A rejected (GARBAGE_ARGS) CREATE creates nothing; the corrected call under the same xid is executed.
      const gxid = conn.allocXid();
      const garbage = await conn.call(NFS_PROGRAM, NFS_V3, NfsProc.CREATE, new XdrWriter().opaque(root).string('drc-g').u32(9).finish(), {
        cred: ROOT,
        xid: gxid,
      });
      assert.deepEqual(garbage.raw, acceptedError(gxid, AcceptStat.GARBAGE_ARGS));
      const fixed = await conn.call(NFS_PROGRAM, NFS_V3, NfsProc.CREATE, args.create(root, 'drc-g', CreateHow.GUARDED), {
        cred: ROOT,
        xid: gxid,
      });
      assert.equal(fixed.kind === 'accepted' && fixed.body.u32(), NfsStat.OK);
      assert.equal((await c.remove(root, 'drc-g')).status, NfsStat.OK);
    } finally {
      c.close();
    }
    await assertNormalClientWorks();
  });

  test('afterwards: an nfs-cp round trip works and the server is still alive', { timeout: TEST_TIMEOUT_MS }, async () => {
    const src = path.join(tmp, 'roundtrip.bin');
    const back = path.join(tmp, 'roundtrip.back');
    const data = randomBytes(300_000);
    await writeFile(src, data);
    const put = await runTool('nfs-cp', [src, url('roundtrip.bin')]);
    assert.equal(put.code, 0, put.stderr);
    const get = await runTool('nfs-cp', [url('roundtrip.bin'), back]);
    assert.equal(get.code, 0, get.stderr);
    assert.deepEqual(await readFile(back), data);
    await assertNormalClientWorks();
    assert.doesNotMatch(srv.output(), /uncaught|unhandled|"level":"(error|fatal)"/i, 'the server logged errors');
  });
});
