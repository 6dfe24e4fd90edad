// Real smbclient (Debian `smbclient`, hack/install-deps.sh) logs on through this module. The SMB2
// engine is not part of it, so a test-only listener here answers just enough SMB2 (MS-SMB2 2.2.4
// NEGOTIATE, 2.2.6 SESSION_SETUP, an error for TREE_CONNECT) for smbclient to authenticate, and
// records the security buffers it sends. "tree connect failed: NT_STATUS_BAD_NETWORK_NAME" from
// smbclient is the proof that the logon itself succeeded.
//
// Set SMB_AUTH_CAPTURE=1 to rewrite fixtures/smbclient-ntlmssp.json from a live run (pinned server
// challenge and clock, so the replay test below can reproduce every byte of the exchange offline).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { md4 } from 'hash-wasm';
import { MIN_BCRYPT_COST, passwordCredentials } from '../../control/auth.js';
import type { ControlStore } from '../../control/store.js';
import { openTestControlStore } from '../../control/testing.js';
import { controlPlaneDirectory } from './directory.js';
import { SmbAuthExchange, negotiateSecurityBlob } from './exchange.js';
import { decodeAuthenticate } from './ntlm.js';
import { smb2Signature, verifySmb2Signature } from './signing.js';
import { NEG_STATE, OID, decodeInitialToken, decodeNegTokenResp } from './spnego.js';
import type { AuthStep, SmbAuthOptions, SmbUserDirectory } from './types.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIXTURE = path.join(here, 'fixtures', 'smbclient-ntlmssp.json');

const STATUS = {
  SUCCESS: 0,
  MORE_PROCESSING_REQUIRED: 0xc0000016,
  LOGON_FAILURE: 0xc000006d,
  INVALID_PARAMETER: 0xc000000d,
  BAD_NETWORK_NAME: 0xc00000cc,
};
const OPTS: SmbAuthOptions = { serverName: 'DITTOFS', domain: 'WORKGROUP', allowGuest: false };
const PINNED = { serverChallenge: Buffer.from('5ec7e75ec7e75ec7', 'hex'), now: () => Date.UTC(2026, 0, 1) };

interface Session {
  /** Security buffers the client sent, and what the exchange answered. */
  tokens: Buffer[];
  answers: Buffer[];
  outcome: AuthStep | null;
  /** Whether the client's TREE_CONNECT carried a valid signature (null: it was not signed). */
  treeConnectSigned: boolean | null;
  /** Whether the client asked for signing in SESSION_SETUP (SecurityMode bit 0x02). */
  signingRequired: boolean;
}

/** A test-only SMB2 listener: one connection, NEGOTIATE and SESSION_SETUP through SmbAuthExchange. */
async function listen(
  dir: SmbUserDirectory,
  pinned: boolean,
  opts = OPTS,
): Promise<{ port: number; sessions: Session[]; close(): Promise<void> }> {
  const sessions: Session[] = [];
  const server = net.createServer((sock) => {
    const s: Session = { tokens: [], answers: [], outcome: null, treeConnectSigned: null, signingRequired: false };
    sessions.push(s);
    // One exchange per session being set up: a client may start over after a failure (smbclient -N
    // first tries the local user name with an empty password, then anonymous).
    let ex: SmbAuthExchange | null = null;
    let sessionKey: Buffer | null = null;
    let pending = Buffer.alloc(0);
    let busy = Promise.resolve();
    sock.on('error', () => {});
    sock.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 4) {
        const len = pending.readUInt32BE(0) & 0xffffff;
        if (pending.length < 4 + len) break;
        const msg = Buffer.from(pending.subarray(4, 4 + len));
        pending = pending.subarray(4 + len);
        busy = busy
          .then(() => handle(msg))
          .catch(() => {
            sock.destroy();
          });
      }
    });

    function reply(req: Buffer, status: number, body: Buffer, sessionId: bigint, sign: boolean): void {
      const h = Buffer.alloc(64);
      h.writeUInt32BE(0xfe534d42, 0);
      h.writeUInt16LE(64, 4);
      h.writeUInt32LE(status >>> 0, 8);
      h.writeUInt16LE(req.readUInt16LE(12), 12); // Command
      h.writeUInt16LE(Math.max(1, req.readUInt16LE(14)), 14); // credits granted
      h.writeUInt32LE(0x1 | (sign ? 0x8 : 0), 16); // SERVER_TO_REDIR | SIGNED
      req.copy(h, 24, 24, 32); // MessageId
      h.writeBigUInt64LE(sessionId, 40);
      const msg = Buffer.concat([h, body]);
      if (sign && sessionKey) smb2Signature(sessionKey, msg).copy(msg, 48);
      const frame = Buffer.alloc(4);
      frame.writeUInt32BE(msg.length);
      sock.write(Buffer.concat([frame, msg]));
    }

    async function handle(req: Buffer): Promise<void> {
      if (req.readUInt32BE(0) !== 0xfe534d42) return void sock.destroy(); // SMB1: not expected with min protocol SMB2
      const command = req.readUInt16LE(12);
      const body = req.subarray(64);
      if (command === 0) {
        // MS-SMB2 2.2.4 NEGOTIATE response, dialect 2.1 (or 2.0.2), signing enabled.
        const dialects = Array.from({ length: body.readUInt16LE(2) }, (_, i) => body.readUInt16LE(36 + 2 * i));
        const blob = negotiateSecurityBlob();
        const r = Buffer.alloc(64 + blob.length);
        r.writeUInt16LE(65, 0);
        r.writeUInt16LE(0x01, 2);
        r.writeUInt16LE(dialects.includes(0x0210) ? 0x0210 : 0x0202, 4);
        Buffer.from('dittofs-smb-auth').copy(r, 8);
        r.writeUInt32LE(65536, 28);
        r.writeUInt32LE(65536, 32);
        r.writeUInt32LE(65536, 36);
        r.writeBigUInt64LE(BigInt(Date.now()) * 10_000n + 116_444_736_000_000_000n, 40);
        r.writeUInt16LE(128, 56);
        r.writeUInt16LE(blob.length, 58);
        blob.copy(r, 64);
        return reply(req, STATUS.SUCCESS, r, 0n, false);
      }
      if (command === 1) {
        s.signingRequired = (body[3]! & 0x02) !== 0;
        const token = Buffer.from(req.subarray(body.readUInt16LE(12), body.readUInt16LE(12) + body.readUInt16LE(14)));
        s.tokens.push(token);
        ex ??= new SmbAuthExchange(dir, opts, pinned ? PINNED : {});
        const step = await ex.step(token);
        if (step.kind !== 'continue') ex = null;
        const answer = step.kind === 'failed' ? Buffer.alloc(0) : step.token;
        s.answers.push(answer);
        const r = Buffer.alloc(8 + answer.length);
        r.writeUInt16LE(9, 0);
        r.writeUInt16LE(answer.length ? 72 : 0, 4);
        r.writeUInt16LE(answer.length, 6);
        answer.copy(r, 8);
        if (step.kind === 'continue') return reply(req, STATUS.MORE_PROCESSING_REQUIRED, r, 0x4000000011n, false);
        s.outcome = step;
        if (step.kind === 'failed')
          return reply(
            req,
            step.reason === 'logon-failure' ? STATUS.LOGON_FAILURE : STATUS.INVALID_PARAMETER,
            errorBody(),
            0x4000000011n,
            false,
          );
        sessionKey = step.sessionKey;
        // Like smbd, sign the final SESSION_SETUP response whenever there is a session key.
        return reply(req, STATUS.SUCCESS, r, 0x4000000011n, !step.anonymous);
      }
      if (command === 3 && sessionKey) {
        const signed = (req.readUInt32LE(16) & 0x8) !== 0;
        s.treeConnectSigned = signed ? verifySmb2Signature(sessionKey, req) : null;
        // MS-SMB2 3.3.4.1.1: a signed request gets a signed response.
        return reply(req, STATUS.BAD_NETWORK_NAME, errorBody(), 0x4000000011n, signed);
      }
      sock.destroy();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return { port, sessions, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

/** MS-SMB2 2.2.2 SMB2 ERROR Response body. */
function errorBody(): Buffer {
  const b = Buffer.alloc(9);
  b.writeUInt16LE(9, 0);
  return b;
}

async function smbclient(port: number, user: string | null, password: string, extra: string[], conf: string): Promise<string> {
  const args = [
    '-s',
    conf,
    `//127.0.0.1/share`,
    '-p',
    String(port),
    ...(user === null ? ['-N'] : ['-U', `${user}%${password}`]),
    '-m',
    'SMB2_10',
    '--option=client min protocol=SMB2_02',
    ...extra,
    '-c',
    'ls',
  ];
  return new Promise((resolve) => {
    execFile('smbclient', args, { timeout: 120_000 }, (err, stdout, stderr) =>
      resolve(`${stdout}${stderr}${err && 'killed' in err && err.killed ? ' (timed out)' : ''}`),
    );
  });
}

const haveSmbclient = await new Promise<boolean>((resolve) => execFile('smbclient', ['--version'], (err) => resolve(err === null)));

describe(
  'real smbclient logs on (SPNEGO + NTLMv2)',
  { skip: haveSmbclient ? false : 'smbclient is not installed (hack/install-deps.sh test)' },
  () => {
    let store: ControlStore;
    let dir: SmbUserDirectory;
    let tmp: string;
    let conf: string;
    const PASSWORD = 'Sm8-client pass';

    before(async () => {
      store = await openTestControlStore();
      await store.createGroup({ name: 'staff', gid: 5000 });
      await store.createUser({
        username: 'alice',
        uid: 1500,
        gid: 1600,
        groups: ['staff'],
        ...(await passwordCredentials(PASSWORD, MIN_BCRYPT_COST)),
      });
      dir = controlPlaneDirectory(store);
      tmp = await mkdtemp(path.join(os.tmpdir(), 'smb-auth-'));
      conf = path.join(tmp, 'smb.conf');
      // A private client config: nothing from the machine's smb.conf, no kerberos.
      await writeFile(conf, '[global]\n  workgroup = WORKGROUP\n  client use kerberos = off\n');
    });
    after(async () => {
      await store?.close();
      if (tmp) await rm(tmp, { recursive: true, force: true });
    });

    it('the right password logs on as the control-plane user', async () => {
      const srv = await listen(dir, process.env.SMB_AUTH_CAPTURE === '1');
      try {
        const out = await smbclient(srv.port, 'alice', PASSWORD, [], conf);
        assert.match(out, /NT_STATUS_BAD_NETWORK_NAME/, out);
        const s = srv.sessions.at(-1);
        assert.ok(s?.outcome?.kind === 'done', JSON.stringify(s?.outcome));
        assert.deepEqual(s.outcome.user, { name: 'alice', uid: 1500, gid: 1600, gids: [5000] });
        // smbclient wraps NTLMSSP in SPNEGO and offers NTLMSSP.
        assert.ok(decodeInitialToken(s.tokens[0]!).mechTypes.includes(OID.NTLMSSP));
        assert.equal(decodeNegTokenResp(s.answers.at(-1)!).negState, NEG_STATE.ACCEPT_COMPLETED);
        if (process.env.SMB_AUTH_CAPTURE === '1') {
          const version = (await new Promise<string>((r) => execFile('smbclient', ['--version'], (_e, o) => r(o)))).trim();
          const fixture = {
            comment:
              'Security buffers of one smbclient logon, captured by smbclient.test.ts with SMB_AUTH_CAPTURE=1 (pinned challenge and clock).',
            command: `smbclient -s <conf: workgroup = WORKGROUP, client use kerberos = off> //127.0.0.1/share -p PORT -U alice%'${PASSWORD}' -m SMB2_10 --option='client min protocol=SMB2_02' -c ls`,
            client: version,
            user: 'alice',
            password: PASSWORD,
            serverChallenge: PINNED.serverChallenge.toString('hex'),
            now: PINNED.now(),
            tokens: s.tokens.map((t) => t.toString('hex')),
            answers: s.answers.map((t) => t.toString('hex')),
          };
          await writeFile(FIXTURE, `${JSON.stringify(fixture, null, 2)}\n`);
        }
      } finally {
        await srv.close();
      }
    });

    it('with signing required, smbclient accepts our signed SESSION_SETUP response and signs with the same key', async () => {
      const srv = await listen(dir, false);
      try {
        const out = await smbclient(srv.port, 'alice', PASSWORD, ['--client-protection=sign'], conf);
        assert.match(out, /NT_STATUS_BAD_NETWORK_NAME/, out);
        const s = srv.sessions.at(-1);
        assert.ok(s?.signingRequired, 'smbclient asked for signing');
        assert.equal(s.treeConnectSigned, true, "smbclient's TREE_CONNECT carries a signature made with our session key");
      } finally {
        await srv.close();
      }
    });

    it('a wrong password and an unknown user get NT_STATUS_LOGON_FAILURE', async () => {
      const srv = await listen(dir, false);
      try {
        assert.match(await smbclient(srv.port, 'alice', 'not the password', [], conf), /NT_STATUS_LOGON_FAILURE/);
        assert.match(await smbclient(srv.port, 'nobody-here', PASSWORD, [], conf), /NT_STATUS_LOGON_FAILURE/);
        const failures = srv.sessions.map((s) => (s.outcome?.kind === 'failed' ? s.outcome.message : ''));
        assert.ok(failures.some((m) => /wrong password/.test(m)) && failures.some((m) => /no such user/.test(m)), failures.join(' | '));
      } finally {
        await srv.close();
      }
    });
  },
);

describe('real smbclient without credentials (-N)', { skip: haveSmbclient ? false : 'smbclient is not installed' }, () => {
  let tmp: string;
  let conf: string;
  const nobody: SmbUserDirectory = { lookup: async () => null };
  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'smb-auth-'));
    conf = path.join(tmp, 'smb.conf');
    await writeFile(conf, '[global]\n  workgroup = WORKGROUP\n  client use kerberos = off\n');
  });
  after(async () => {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('is refused while guest access is off, and logs on anonymously when it is on', async () => {
    const off = await listen(nobody, false);
    try {
      assert.match(await smbclient(off.port, null, '', [], conf), /NT_STATUS_LOGON_FAILURE/);
      assert.ok(
        off.sessions.some((s) => s.outcome?.kind === 'failed' && /guest access is off/.test(s.outcome.message)),
        JSON.stringify(off.sessions.map((s) => s.outcome)),
      );
    } finally {
      await off.close();
    }
    const on = await listen(nobody, false, { ...OPTS, allowGuest: true });
    try {
      const out = await smbclient(on.port, null, '', [], conf);
      assert.match(out, /NT_STATUS_BAD_NETWORK_NAME/, out);
      const done = on.sessions.at(-1)?.outcome;
      assert.ok(done?.kind === 'done' && done.anonymous, JSON.stringify(done));
    } finally {
      await on.close();
    }
  });
});

describe('captured smbclient exchange replays byte for byte', () => {
  it('the same challenge gives the same answers, and the logon succeeds offline', async () => {
    const f = JSON.parse(await readFile(FIXTURE, 'utf8')) as {
      user: string;
      password: string;
      serverChallenge: string;
      now: number;
      tokens: string[];
      answers: string[];
    };
    const ntHash = Buffer.from(await md4(Buffer.from(f.password, 'utf16le')), 'hex');
    const dir: SmbUserDirectory = {
      lookup: async (name) => (name.toLowerCase() === f.user ? { user: { name: f.user, uid: 1, gid: 1, gids: [] }, ntHash } : null),
    };
    const ex = new SmbAuthExchange(dir, OPTS, { serverChallenge: Buffer.from(f.serverChallenge, 'hex'), now: () => f.now });
    let last: AuthStep | null = null;
    for (const [i, t] of f.tokens.entries()) {
      last = await ex.step(Buffer.from(t, 'hex'));
      assert.notEqual(last.kind, 'failed', last.kind === 'failed' ? last.message : '');
      assert.equal((last.kind === 'failed' ? Buffer.alloc(0) : last.token).toString('hex'), f.answers[i], `answer ${i}`);
    }
    assert.equal(last?.kind, 'done');
    // What smbclient sent: a SPNEGO negTokenInit with NTLMSSP, then an NTLMv2 AUTHENTICATE.
    const init = decodeInitialToken(Buffer.from(f.tokens[0]!, 'hex'));
    assert.ok(init.mechTypes.includes(OID.NTLMSSP));
    const resp = decodeNegTokenResp(Buffer.from(f.tokens.at(-1)!, 'hex'));
    assert.ok(resp.responseToken);
    const auth = decodeAuthenticate(resp.responseToken);
    assert.equal(auth.user, f.user);
    assert.ok(auth.ntResponse.length > 24, 'NTLMv2');

    // A wrong password fails on the same bytes.
    const wrong: SmbUserDirectory = {
      lookup: async () => ({
        user: { name: f.user, uid: 1, gid: 1, gids: [] },
        ntHash: Buffer.from(await md4(Buffer.from('x', 'utf16le')), 'hex'),
      }),
    };
    const ex2 = new SmbAuthExchange(wrong, OPTS, { serverChallenge: Buffer.from(f.serverChallenge, 'hex'), now: () => f.now });
    let step: AuthStep | null = null;
    for (const t of f.tokens) step = await ex2.step(Buffer.from(t, 'hex'));
    assert.equal(step?.kind === 'failed' && step.reason, 'logon-failure');
  });
});
