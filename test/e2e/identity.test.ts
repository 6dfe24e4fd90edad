// Identity holes a hostile client used, against a real server process over real sockets:
// - Guessed file handles: the share id is public (from the share name), inode ids are sequential;
//   an AUTH_NONE sweep of (share id, inode 1..N, generation 1) once read owners, modes and symlink
//   targets. Every guess must answer STALE; only handles the server gave out work.
// - Overlapping automatic ids: the bootstrap admin is uid/gid 10000 and the first group once got
//   gid 10000 too, so a credential with the admin's ids got that group's grants and mounted a share
//   whose default is `none`.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { XdrWriter } from '../../server/src/rpc/xdr.js';
import { args, AUTH_NONE, authSys, NfsClient, NfsStat, writeSattr, type RpcReply } from '../helpers/rpc-client.js';
import { startDittofs, TEST_ADMIN_PASSWORD, type DittofsProcess } from '../helpers/server.js';

const MNT3ERR_ACCES = 13;
const NEW_ADMIN_PASSWORD = 'identity-test-admin-2';
/** Inode ids swept: far past every inode the test creates. */
const SWEEP = 2000;

/** A handle as an attacker builds one: version 1 (20 bytes) or 2 (24 bytes), any generation. */
function forged(version: 1 | 2, shareId: number, inodeId: number, generation: number): Buffer {
  const b = Buffer.alloc(version === 1 ? 20 : 24);
  b[0] = version;
  b[1] = 1;
  b.writeUInt32BE(shareId, 4);
  b.writeUInt32BE(Math.floor(inodeId / 2 ** 32), 8);
  b.writeUInt32BE(inodeId >>> 0, 12);
  if (version === 1) b.writeUInt32BE(generation, 16);
  else {
    b.writeUInt32BE(Math.floor(generation / 2 ** 32), 16);
    b.writeUInt32BE(generation >>> 0, 20);
  }
  return b;
}

// RFC 1813 §3.3.5 READLINK and §3.3.10 SYMLINK (not in the shared client): the status only.
const READLINK = 5;
const SYMLINK = 10;
function statusOf(rep: RpcReply): number {
  if (rep.kind !== 'accepted' || rep.acceptStat !== 0) throw new Error(`RPC not successful: ${JSON.stringify(rep.kind)}`);
  return rep.body.u32();
}
async function readlink(c: NfsClient, fh: Buffer): Promise<number> {
  return statusOf(await c.nfs(READLINK, args.fh(fh)));
}
async function symlink(c: NfsClient, dir: Buffer, name: string, target: string): Promise<number> {
  const w = writeSattr(new XdrWriter(256).opaque(dir).opaque(Buffer.from(name)), { mode: 0o777 }).opaque(Buffer.from(target));
  return statusOf(await c.nfs(SYMLINK, w.finish()));
}

describe('identity: guessed handles and overlapping ids', { timeout: 300_000 }, () => {
  let srv: DittofsProcess;
  let api: string;
  let token = '';

  async function call<T = unknown>(method: string, url: string, body?: unknown): Promise<{ status: number; body: T }> {
    const r = await fetch(`${api}${url}`, {
      method,
      headers: {
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await r.text();
    return { status: r.status, body: (text ? JSON.parse(text) : undefined) as T };
  }

  before(async () => {
    srv = await startDittofs();
    api = `http://127.0.0.1:${srv.apiPort}`;
  });

  after(async () => {
    await srv?.stop();
  });

  it('an AUTH_NONE sweep of guessed handles gets only STALE; the handles the server gave out work', async () => {
    const owner = await NfsClient.connect(srv.nfsPort, authSys(0, 0));
    const anon = owner.as(AUTH_NONE);
    try {
      const root = await owner.mount('/export');
      const d = await owner.mkdir(root, 'private', { mode: 0o700 });
      assert.equal(d.status, NfsStat.OK);
      const real: Buffer[] = [root, d.fh!];
      for (let i = 0; i < 20; i++) real.push(await owner.writeFile(d.fh!, `f${i}`, Buffer.from(`secret ${i}\n`), { mode: 0o600 }));
      assert.equal(await symlink(owner, d.fh!, 'link', '/the/symlink/target'), NfsStat.OK);
      const ln = await owner.lookup(d.fh!, 'link');
      assert.equal(ln.status, NfsStat.OK);
      real.push(ln.fh!);

      const shareId = root.readUInt32BE(4);
      const ids = real.map((h) => h.readUInt32BE(12));
      assert.ok(
        ids.every((id) => id >= 1 && id <= SWEEP),
        `the sweep covers every real inode id (${ids.join(',')})`,
      );
      // The share answers AUTH_NONE at all: a handle the server gave out works for it.
      for (const h of real) assert.equal((await anon.getattr(h)).status, NfsStat.OK);
      assert.equal(await readlink(anon, ln.fh!), NfsStat.OK);

      // The sweep: both layouts, the old fixed generation 1 and a few other small guesses.
      const statuses = new Map<number, number>();
      const guesses: Buffer[] = [];
      for (let inode = 1; inode <= SWEEP; inode++) {
        guesses.push(forged(1, shareId, inode, 1), forged(2, shareId, inode, 1));
        if (inode <= 200) for (const g of [0, 2, 3, 0xffffffff]) guesses.push(forged(2, shareId, inode, g));
      }
      const started = Date.now();
      for (let i = 0; i < guesses.length; i += 256) {
        const batch = guesses.slice(i, i + 256);
        const replies = await Promise.all(batch.map((h) => anon.getattr(h)));
        for (const r of replies) statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      }
      assert.deepEqual([...statuses], [[NfsStat.STALE, guesses.length]], 'every guessed handle is STALE');
      // READLINK of the symlink's inode with guessed generations: no target comes back.
      const linkId = ln.fh!.readUInt32BE(12);
      for (const h of [forged(1, shareId, linkId, 1), forged(2, shareId, linkId, 1)]) {
        assert.equal(await readlink(anon, h), NfsStat.STALE);
      }
      process.stdout.write(`# ${guesses.length} guessed handles, all STALE, in ${Date.now() - started} ms\n`);
    } finally {
      owner.close();
    }
  });

  it("a credential with the admin's ids does not get a new group's grant", async () => {
    let r = await call<{ access_token: string }>('POST', '/api/v1/auth/login', { username: 'admin', password: TEST_ADMIN_PASSWORD });
    assert.equal(r.status, 200);
    token = r.body.access_token;
    r = await call('POST', '/api/v1/users/me/password', { current_password: TEST_ADMIN_PASSWORD, new_password: NEW_ADMIN_PASSWORD });
    assert.equal(r.status, 204);
    token = '';
    r = await call<{ access_token: string }>('POST', '/api/v1/auth/login', { username: 'admin', password: NEW_ADMIN_PASSWORD });
    token = r.body.access_token;

    const admin = (await call<{ uid: number; gid: number }>('GET', '/api/v1/users/admin')).body;
    const group = await call<{ gid: number }>('POST', '/api/v1/groups', { name: 'secret-team' });
    assert.equal(group.status, 201);
    const { gid } = group.body;
    assert.ok(
      gid !== admin.gid && gid !== admin.uid,
      `the new group's gid ${gid} is not one of the admin's ids (${admin.uid}/${admin.gid})`,
    );
    const bob = await call<{ uid: number; gid: number }>('POST', '/api/v1/users', {
      username: 'bob',
      password: 'bob-password-1',
      groups: ['secret-team'],
    });
    assert.equal(bob.status, 201);
    const ids = [admin.uid, admin.gid, gid, bob.body.uid, bob.body.gid];
    assert.equal(new Set(ids).size, 3, `automatic ids overlap: ${ids.join(', ')}`);
    assert.equal(bob.body.uid, bob.body.gid);

    assert.equal(
      (
        await call('POST', '/api/v1/shares', {
          name: '/secret',
          metadata_store: 'default',
          block_store: 'default',
          default_permission: 'none',
        })
      ).status,
      201,
    );
    assert.equal((await call('PUT', '/api/v1/shares/secret/permissions/groups/secret-team', { level: 'read-write' })).status, 200);

    const nfs = await NfsClient.connect(srv.nfsPort, authSys(admin.uid, admin.gid, [admin.gid]));
    try {
      assert.equal((await nfs.mnt('/secret')).status, MNT3ERR_ACCES, "the admin's own ids get the share default, none");
      // The member gets the group's grant (the grant works), and so does its gid (AUTH_SYS trusts
      // the client's gids: the group's gid names the group).
      const member = await nfs.as(authSys(bob.body.uid, bob.body.gid)).mnt('/secret');
      assert.equal(member.status, 0);
      assert.equal((await nfs.as(authSys(admin.uid, gid)).mnt('/secret')).status, 0);
    } finally {
      nfs.close();
    }

    // Explicit ids that would bring the overlap back are refused, and change nothing.
    const taken = await call<{ status: number; detail: string }>('POST', '/api/v1/groups', { name: 'clash', gid: admin.gid });
    assert.equal(taken.status, 409);
    assert.match(taken.body.detail, new RegExp(`gid ${admin.gid} is the primary gid of user "admin"`));
    assert.equal((await call('GET', '/api/v1/groups/clash')).status, 404);
    const eve = await call<{ detail: string }>('POST', '/api/v1/users', { username: 'eve', password: 'eve-password-1', gid });
    assert.equal(eve.status, 409);
    assert.match(eve.body.detail, /is the gid of group "secret-team"/);
  });
});
