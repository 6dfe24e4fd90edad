// An SMB session never connects a share with more rights than its user has now. A share's
// permission is decided by uid, so a session that re-authenticated as anonymous (nobody's uid) or
// whose user was deleted (a uid no user has) would otherwise be given the share's default
// permission, read-write unless set otherwise: more than a user granted `none` or `read`.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SessionFlags } from '../../server/src/smb2/constants.js';
import { NtStatus } from '../../server/src/smb2/status.js';
import { addShareUser, apiRequest, takeOverAdmin } from '../helpers/api.js';
import { SUITE_TIMEOUT_MS } from '../helpers/limits.js';
import { TestNtlmClient } from '../helpers/ntlm-client.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';
import { bodies, SmbCommand, SmbTestClient } from '../helpers/smb-client.js';

const PASSWORD = 'rights-Passw0rd-1';
/** The share's default permission (nothing set): what an unknown uid would get. */
const DEFAULT_MAXIMAL_ACCESS = 0x1f01ff;

/** One NTLM exchange (NEGOTIATE, AUTHENTICATE) on `c`'s session: the final reply. */
async function authenticate(c: SmbTestClient, ntlm: TestNtlmClient) {
  const first = await c.request(SmbCommand.SESSION_SETUP, bodies.sessionSetup(ntlm.negotiate()));
  assert.equal(first.status, NtStatus.MORE_PROCESSING_REQUIRED, `SESSION_SETUP 1: 0x${first.status.toString(16)}`);
  c.sessionId = first.sessionId;
  const off = first.body.readUInt16LE(4) - 64;
  return c.request(
    SmbCommand.SESSION_SETUP,
    bodies.sessionSetup(await ntlm.authenticate(first.body.subarray(off, off + first.body.readUInt16LE(6)))),
  );
}

/** A connection logged on as `user` (no tree yet). */
async function logon(port: number, user: string): Promise<SmbTestClient> {
  const c = await SmbTestClient.connect(port);
  const neg = await c.request(SmbCommand.NEGOTIATE, bodies.negotiate());
  assert.equal(neg.status, NtStatus.SUCCESS);
  const done = await authenticate(c, new TestNtlmClient({ user, password: PASSWORD, keyExch: false }));
  assert.equal(done.status, NtStatus.SUCCESS, `logon of ${user}: 0x${done.status.toString(16)}`);
  return c;
}

/** TREE_CONNECT to the export: its status and MaximalAccess. */
async function treeConnect(c: SmbTestClient): Promise<{ status: number; maximalAccess: number }> {
  const r = await c.request(SmbCommand.TREE_CONNECT, bodies.treeConnect('\\\\127.0.0.1\\export'));
  return { status: r.status, maximalAccess: r.status === NtStatus.SUCCESS ? r.body.readUInt32LE(12) : 0 };
}

describe('an SMB session connects a share with no more rights than its user has now', { timeout: SUITE_TIMEOUT_MS }, () => {
  let srv: DittofsProcess;
  let base: string;
  let token: string;

  before(async () => {
    srv = await startDittofs();
    base = `http://127.0.0.1:${srv.apiPort}`;
    token = await takeOverAdmin(base);
    await addShareUser(base, token, { username: 'mallory', password: PASSWORD, uid: 1005, gid: 1005 }, 'export', 'none');
    await addShareUser(base, token, { username: 'rita', password: PASSWORD, uid: 1006, gid: 1006 }, 'export', 'read');
    await addShareUser(base, token, { username: 'erin', password: PASSWORD, uid: 1007, gid: 1007 }, 'export', 'read');
  });

  after(async () => {
    await srv?.stop();
  });

  it('a session re-authenticated as anonymous keeps its session but connects no share', async () => {
    for (const [user, before] of [
      ['mallory', NtStatus.ACCESS_DENIED],
      ['rita', NtStatus.SUCCESS],
    ] as const) {
      const c = await logon(srv.smbPort, user);
      try {
        assert.equal((await treeConnect(c)).status, before, `${user} as herself`);
        const anon = await authenticate(c, new TestNtlmClient({ user: '', password: '', anonymous: true, keyExch: false }));
        // The re-authentication itself succeeds, as with smbd (smbtorture smb2.session.reauth2).
        assert.equal(anon.status, NtStatus.SUCCESS);
        assert.equal(anon.body.readUInt16LE(2) & SessionFlags.IS_NULL, SessionFlags.IS_NULL);
        const after = await treeConnect(c);
        assert.equal(
          after.status,
          NtStatus.ACCESS_DENIED,
          `${user} after an anonymous re-authentication: maximal access 0x${after.maximalAccess.toString(16)}`,
        );
      } finally {
        c.close();
      }
    }
  });

  it("a deleted user's live session connects no share; a changed grant holds from the next TREE_CONNECT", async () => {
    const c = await logon(srv.smbPort, 'erin');
    try {
      const before = await treeConnect(c);
      assert.equal(before.status, NtStatus.SUCCESS);
      assert.notEqual(before.maximalAccess, DEFAULT_MAXIMAL_ACCESS, 'read only');
      const granted = await apiRequest(base, 'PUT', '/api/v1/shares/export/permissions/users/erin', { level: 'read-write' }, token);
      assert.equal(granted.status, 200);
      assert.equal((await treeConnect(c)).maximalAccess, DEFAULT_MAXIMAL_ACCESS, 'read-write now');
      const lowered = await apiRequest(base, 'PUT', '/api/v1/shares/export/permissions/users/erin', { level: 'read' }, token);
      assert.equal(lowered.status, 200);
      const deleted = await apiRequest(base, 'DELETE', '/api/v1/users/erin', undefined, token);
      assert.equal(deleted.status, 204);
      assert.equal((await treeConnect(c)).status, NtStatus.ACCESS_DENIED);
    } finally {
      c.close();
    }
  });
});
