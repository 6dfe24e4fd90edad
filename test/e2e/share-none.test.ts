// A `none` share permission refuses everything over a real socket: every NFSv3 procedure but NULL
// answers NFS3ERR_ACCES with no attributes in the reply, and MNT answers MNT3ERR_ACCES, for a user
// whose grant is none, an unknown uid and AUTH_NONE on a share whose default is none. A user with
// a read-write grant runs the same calls, with the handles these callers were given, successfully.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { XdrWriter } from '../../server/src/rpc/xdr.js';
import {
  AcceptStat,
  args,
  AUTH_NONE,
  authSys,
  CreateHow,
  MOUNT_PROGRAM,
  MOUNT_V3,
  MountProc,
  NFS_PROGRAM,
  NFS_V3,
  NfsClient,
  NfsStat,
  RpcConnection,
  StableHow,
  type Cred,
} from '../helpers/rpc-client.js';
import { adminLogin, apiRequest, type ApiReply } from '../helpers/api.js';
import { startDittofs, TEST_ADMIN_PASSWORD, type DittofsProcess } from '../helpers/server.js';
import { REPLY_TIMEOUT_MS, SUITE_TIMEOUT_MS } from '../helpers/limits.js';

const ALICE = authSys(1000, 1000);
const CONTENT = Buffer.from('only for alice\n');
const ZERO_VERF = Buffer.alloc(8);

/** Big-endian u32 words as bytes. */
function words(...ws: number[]): Buffer {
  const b = Buffer.alloc(4 * ws.length);
  ws.forEach((w, i) => b.writeUInt32BE(w >>> 0, 4 * i));
  return b;
}

interface Fixture {
  root: Buffer;
  file: Buffer;
  link: Buffer;
}

interface Call {
  proc: number;
  name: string;
  args: Buffer;
  /** Words of a refusal after the status: every post_op_attr and pre_op_attr "not present". */
  emptyWords: number;
}

/** Every NFSv3 procedure but NULL, with arguments that succeed for alice, in an order that does. */
function everyProcedure(f: Fixture): Call[] {
  const { root, file, link } = f;
  const none = new XdrWriter(64).u32(0).u32(0).u32(0).u32(0).u32(0).u32(0).finish(); // sattr3: nothing set
  return [
    { proc: 1, name: 'GETATTR', args: args.fh(file), emptyWords: 0 },
    { proc: 2, name: 'SETATTR', args: args.setattr(file, { mode: 0o640 }), emptyWords: 2 },
    { proc: 3, name: 'LOOKUP', args: args.dirop(root, 'file'), emptyWords: 1 },
    { proc: 4, name: 'ACCESS', args: new XdrWriter(96).opaque(file).u32(0x3f).finish(), emptyWords: 1 },
    { proc: 5, name: 'READLINK', args: args.fh(link), emptyWords: 1 },
    { proc: 6, name: 'READ', args: args.read(file, 0, 100), emptyWords: 1 },
    { proc: 7, name: 'WRITE', args: args.write(file, CONTENT.length, Buffer.from('+'), StableHow.UNSTABLE), emptyWords: 2 },
    { proc: 8, name: 'CREATE', args: args.create(root, 'new-file', CreateHow.GUARDED, { mode: 0o644 }), emptyWords: 2 },
    { proc: 9, name: 'MKDIR', args: args.mkdir(root, 'new-dir', { mode: 0o755 }), emptyWords: 2 },
    {
      proc: 10,
      name: 'SYMLINK',
      args: Buffer.concat([new XdrWriter(96).opaque(root).string('new-link').finish(), none, new XdrWriter(16).string('file').finish()]),
      emptyWords: 2,
    },
    {
      proc: 11,
      name: 'MKNOD',
      args: Buffer.concat([new XdrWriter(96).opaque(root).string('new-fifo').u32(7).finish(), none]),
      emptyWords: 2,
    },
    { proc: 12, name: 'REMOVE', args: args.dirop(root, 'new-file'), emptyWords: 2 },
    { proc: 13, name: 'RMDIR', args: args.dirop(root, 'new-dir'), emptyWords: 2 },
    {
      proc: 14,
      name: 'RENAME',
      args: new XdrWriter(160).opaque(root).string('new-link').opaque(root).string('new-link-2').finish(),
      emptyWords: 4,
    },
    { proc: 15, name: 'LINK', args: new XdrWriter(160).opaque(file).opaque(root).string('file-link').finish(), emptyWords: 3 },
    { proc: 16, name: 'READDIR', args: new XdrWriter(96).opaque(root).u64(0).fixed(ZERO_VERF).u32(4096).finish(), emptyWords: 1 },
    {
      proc: 17,
      name: 'READDIRPLUS',
      args: new XdrWriter(96).opaque(root).u64(0).fixed(ZERO_VERF).u32(4096).u32(16384).finish(),
      emptyWords: 1,
    },
    { proc: 18, name: 'FSSTAT', args: args.fh(root), emptyWords: 1 },
    { proc: 19, name: 'FSINFO', args: args.fh(root), emptyWords: 1 },
    { proc: 20, name: 'PATHCONF', args: args.fh(root), emptyWords: 1 },
    { proc: 21, name: 'COMMIT', args: new XdrWriter(96).opaque(file).u64(0).u32(0).finish(), emptyWords: 2 },
  ];
}

describe('a `none` share permission refuses every procedure', { timeout: SUITE_TIMEOUT_MS }, () => {
  let srv: DittofsProcess;
  let api: string;
  let conn: RpcConnection;

  async function login(password: string): Promise<string> {
    const r = await adminLogin(api, password);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.ok(r.token, JSON.stringify(r.body));
    return r.token;
  }
  const request = (method: string, url: string, body?: unknown, token?: string): Promise<ApiReply<unknown>> =>
    apiRequest(api, method, url, body, token);

  async function mnt(cred: Cred): Promise<number> {
    const rep = await conn.call(MOUNT_PROGRAM, MOUNT_V3, MountProc.MNT, new XdrWriter(32).string('/export').finish(), { cred });
    assert.ok(rep.kind === 'accepted' && rep.acceptStat === AcceptStat.SUCCESS);
    return rep.body.u32();
  }

  /** The NFS result of one call: its status and the raw result bytes. */
  async function call(cred: Cred, c: Call): Promise<{ status: number; result: Buffer }> {
    const rep = await conn.call(NFS_PROGRAM, NFS_V3, c.proc, c.args, { cred, timeoutMs: REPLY_TIMEOUT_MS });
    assert.ok(rep.kind === 'accepted' && rep.acceptStat === AcceptStat.SUCCESS, `${c.name}: RPC not successful`);
    const result = rep.body.buf.subarray(rep.body.pos);
    return { status: result.readUInt32BE(0), result };
  }

  before(async () => {
    // The control plane and the metadata in memory: a fast start; permissions work the same.
    srv = await startDittofs({ env: { DITTOFS_DATABASE__TYPE: 'memory', DITTOFS_METADATA__STORES__DEFAULT__TYPE: 'memory' } });
    api = `http://127.0.0.1:${srv.apiPort}`;
    const first = await login(TEST_ADMIN_PASSWORD);
    const changed = await request(
      'POST',
      '/api/v1/users/me/password',
      { current_password: TEST_ADMIN_PASSWORD, new_password: 'share-none-admin-2' },
      first,
    );
    assert.equal(changed.status, 204, JSON.stringify(changed.body));
    const t = await login('share-none-admin-2');
    for (const [username, uid] of [
      ['alice', 1000],
      ['bob', 1001],
    ] as const) {
      const r = await request('POST', '/api/v1/users', { username, uid, gid: uid, password: `${username}-password-1` }, t);
      assert.equal(r.status, 201, JSON.stringify(r.body));
    }
    const patched = await request('PATCH', '/api/v1/shares/export', { default_permission: 'none' }, t);
    assert.equal(patched.status, 200, JSON.stringify(patched.body));
    for (const [user, level] of [
      ['alice', 'read-write'],
      ['bob', 'none'],
    ] as const) {
      const r = await request('PUT', `/api/v1/shares/export/permissions/users/${user}`, { level }, t);
      assert.equal(r.status, 200, JSON.stringify(r.body));
    }
    conn = await RpcConnection.connect(srv.nfsPort);
    // Changes apply from the next request; wait (bounded) until they show.
    for (let i = 0; (await mnt(authSys(1001, 1001))) !== 13; i++) {
      assert.ok(i < 100, 'the none grant never took effect');
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  after(async () => {
    conn?.close();
    await srv?.stop();
  });

  test('NFS3ERR_ACCES for every procedure, MNT3ERR_ACCES, nothing leaked or changed; alice is served', async () => {
    assert.equal(await mnt(ALICE), 0, 'alice mounts');
    const alice = new NfsClient(conn, ALICE);
    const root = await alice.mount('/export');
    const file = await alice.writeFile(root, 'file', CONTENT);
    const sym = Buffer.concat([
      new XdrWriter(96).opaque(root).string('link').finish(),
      words(0, 0, 0, 0, 0, 0),
      new XdrWriter(16).string('file').finish(),
    ]);
    const made = await call(ALICE, { proc: 10, name: 'SYMLINK', args: sym, emptyWords: 2 });
    assert.equal(made.status, NfsStat.OK);
    const link = (await alice.lookup(root, 'link')).fh!;
    const calls = everyProcedure({ root, file, link });
    assert.equal(calls.length, 21);
    const before = await alice.getattr(file);

    const refused: [string, Cred][] = [
      ['bob (grant none)', authSys(1001, 1001)],
      ['uid 4242 (unknown: the share default, none)', authSys(4242, 4242)],
      ['root (unknown uid 0)', authSys(0, 0)],
      ['AUTH_NONE', AUTH_NONE],
    ];
    for (const [who, cred] of refused) {
      assert.equal(await mnt(cred), 13, `${who}: MNT`);
      for (const c of calls) {
        const { result } = await call(cred, c);
        // The status and, where the result has attributes, "none": the reply tells nothing.
        assert.deepEqual(result, words(NfsStat.ACCES, ...Array<number>(c.emptyWords).fill(0)), `${who}: ${c.name}`);
      }
    }
    // Nothing the refused calls asked for happened.
    assert.deepEqual(await alice.getattr(file), before, 'the file is as it was');
    assert.deepEqual((await alice.read(file, 0, 100)).data, CONTENT);
    for (const name of ['new-file', 'new-dir', 'new-link', 'new-fifo', 'new-link-2', 'file-link'])
      assert.equal((await alice.lookup(root, name)).status, NfsStat.NOENT, name);

    // Alice, granted read-write, runs every one of them.
    for (const c of calls) assert.equal((await call(ALICE, c)).status, NfsStat.OK, `alice: ${c.name}`);
    assert.deepEqual((await alice.read(file, 0, 100)).data, Buffer.concat([CONTENT, Buffer.from('+')]));
    assert.equal((await alice.lookup(root, 'new-link-2')).status, NfsStat.OK);
  });
});
