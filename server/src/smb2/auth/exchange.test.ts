// Full SESSION_SETUP exchanges, raw NTLMSSP (Linux cifs) and SPNEGO-wrapped (smbclient, macOS,
// Windows), driven by a test-side NTLMv2 client written here from MS-NLMP 3.1.5 / 3.3.2, against
// users of a real control store (embedded engine).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { NOBODY_ID } from '../../config/defaults.js';
import { MIN_BCRYPT_COST, passwordCredentials } from '../../control/auth.js';
import type { ControlStore } from '../../control/store.js';
import { openTestControlStore } from '../../control/testing.js';
import { controlPlaneDirectory } from './directory.js';
import { TestNtlmClient, type ClientOptions } from '../../../../test/helpers/ntlm-client.js';
import { SmbAuthExchange, negotiateSecurityBlob } from './exchange.js';
import { decodeNegotiate } from './ntlm.js';
import { NtlmServer } from './ntlm-server.js';
import {
  NEG_STATE,
  OID,
  decodeInitialToken,
  decodeNegTokenResp,
  encodeInitialToken,
  encodeMechTypes,
  encodeNegTokenResp,
} from './spnego.js';
import type { AuthStep, SmbAuthOptions, SmbUserDirectory } from './types.js';

// ---------------------------------------------------------------- drivers

const OPTS: SmbAuthOptions = { serverName: 'DITTOFS', domain: 'WORKGROUP', allowGuest: false };

function expectContinue(step: AuthStep): Buffer {
  assert.equal(step.kind, 'continue', step.kind === 'failed' ? step.message : '');
  assert.ok(step.kind === 'continue');
  return step.token;
}

async function rawLogon(dir: SmbUserDirectory, o: ClientOptions, opts = OPTS): Promise<{ step: AuthStep; client: TestNtlmClient }> {
  const client = new TestNtlmClient(o);
  const ex = new SmbAuthExchange(dir, opts);
  const challenge = expectContinue(await ex.step(client.negotiate()));
  return { step: await ex.step(await client.authenticate(challenge)), client };
}

interface SpnegoRun {
  step: AuthStep;
  client: TestNtlmClient;
  mechTypesDer: Buffer;
  first: ReturnType<typeof decodeNegTokenResp>;
}

async function spnegoLogon(
  dir: SmbUserDirectory,
  o: ClientOptions,
  s: { mechListMic?: boolean; mechTypes?: string[]; tamperMic?: boolean } = {},
  opts = OPTS,
): Promise<SpnegoRun> {
  const client = new TestNtlmClient(o);
  const ex = new SmbAuthExchange(dir, opts);
  const mechTypes = s.mechTypes ?? [OID.NTLMSSP];
  const optimistic = mechTypes[0] === OID.NTLMSSP;
  const init = encodeInitialToken({ mechTypes, mechToken: optimistic ? client.negotiate() : Buffer.from('not a kerberos AP-REQ') });
  let resp = decodeNegTokenResp(expectContinue(await ex.step(init)));
  const first = resp;
  if (!optimistic) {
    assert.equal(resp.responseToken, null);
    resp = decodeNegTokenResp(expectContinue(await ex.step(encodeNegTokenResp({ responseToken: client.negotiate() }))));
  }
  assert.ok(resp.responseToken, 'the CHALLENGE');
  const auth = await client.authenticate(resp.responseToken);
  const mechTypesDer = encodeMechTypes(mechTypes);
  const mic = s.mechListMic ? client.mechListMic(mechTypesDer) : undefined;
  if (mic && s.tamperMic) mic[5]! ^= 1;
  const step = await ex.step(encodeNegTokenResp({ responseToken: auth, ...(mic ? { mechListMIC: mic } : {}) }));
  return { step, client, mechTypesDer, first };
}

function expectDone(step: AuthStep): Extract<AuthStep, { kind: 'done' }> {
  assert.equal(step.kind, 'done', step.kind === 'failed' ? step.message : '');
  assert.ok(step.kind === 'done');
  return step;
}

function expectFailed(step: AuthStep, reason: 'logon-failure' | 'invalid-token', message: RegExp): void {
  assert.equal(step.kind, 'failed');
  assert.ok(step.kind === 'failed');
  assert.equal(step.reason, reason, step.message);
  assert.match(step.message, message);
}

// ---------------------------------------------------------------- the tests

describe('SMB session setup against control-plane users', () => {
  let store: ControlStore;
  let dir: SmbUserDirectory;
  const PASSWORD = 'Corr3ct horse!';
  const ALICE = { name: 'alice', uid: 1500, gid: 1600, gids: [5000, 5001] };

  before(async () => {
    store = await openTestControlStore();
    await store.createGroup({ name: 'staff', gid: 5000 });
    await store.createGroup({ name: 'video', gid: 5001 });
    await store.createUser({
      username: 'alice',
      uid: 1500,
      gid: 1600,
      ...(await passwordCredentials(PASSWORD, MIN_BCRYPT_COST)),
      groups: ['staff', 'video'],
    });
    await store.createUser({ username: 'nfsonly', uid: 1501 }); // no password: cannot log on
    dir = controlPlaneDirectory(store);
  });
  after(async () => {
    await store.close();
  });

  describe('raw NTLMSSP (Linux cifs)', () => {
    it('checks the MIC against the NEGOTIATE as sent, after its frame buffer was reused', async () => {
      const client = new TestNtlmClient({ user: 'alice', password: PASSWORD, mic: true });
      const server = new NtlmServer(dir, OPTS);
      // The server's own view of the first SESSION_SETUP frame (large frames come from a pool).
      const frame = Buffer.from(client.negotiate());
      const challenge = server.challengeFor(decodeNegotiate(frame));
      frame.fill(0xee);
      const outcome = await server.authenticate(await client.authenticate(challenge));
      assert.ok(outcome.ok, outcome.ok ? '' : outcome.message);
      assert.equal(outcome.hadMic, true);
    });

    for (const keyExch of [true, false])
      for (const mic of [true, false])
        it(`logs on with the right password (KEY_EXCH ${keyExch}, MIC ${mic})`, async () => {
          const { step, client } = await rawLogon(dir, { user: 'alice', password: PASSWORD, keyExch, mic });
          const done = expectDone(step);
          assert.deepEqual(done.user, ALICE);
          assert.deepEqual(done.sessionKey, client.exportedKey, 'the session key is the exported session key');
          assert.equal(done.sessionKey.length, 16);
          assert.equal(done.token.length, 0, 'raw NTLMSSP ends with an empty security buffer');
          assert.equal(done.anonymous, false);
          assert.equal(done.guest, false);
        });

    it('user names are case-insensitive', async () => {
      assert.deepEqual(expectDone((await rawLogon(dir, { user: 'ALICE', password: PASSWORD, mic: true })).step).user, ALICE);
    });

    it('accepts a user principal name (alice@server with no domain)', async () => {
      assert.deepEqual(
        expectDone((await rawLogon(dir, { user: 'alice@dittofs.example', password: PASSWORD, domain: '' })).step).user,
        ALICE,
      );
      expectFailed(
        (await rawLogon(dir, { user: 'alice@dittofs.example', password: 'bad', domain: '' })).step,
        'logon-failure',
        /wrong password/,
      );
    });

    it('accepts a response keyed with no domain or the server name while another domain was sent', async () => {
      for (const keyDomain of ['', 'DITTOFS'])
        expectDone((await rawLogon(dir, { user: 'alice', password: PASSWORD, domain: 'ELSEWHERE', keyDomain })).step);
    });

    it('refuses a wrong password, an unknown user and a user without an SMB password', async () => {
      expectFailed(
        (await rawLogon(dir, { user: 'alice', password: 'wrong' })).step,
        'logon-failure',
        /"WORKGROUP\\\\alice".*wrong password/,
      );
      expectFailed(
        (await rawLogon(dir, { user: 'mallory', password: PASSWORD })).step,
        'logon-failure',
        /"WORKGROUP\\\\mallory".*no such user/,
      );
      expectFailed((await rawLogon(dir, { user: 'nfsonly', password: '' })).step, 'logon-failure', /no SMB password/);
    });

    it('never puts the password or the hash in the message', async () => {
      const { step } = await rawLogon(dir, { user: 'alice', password: 'wrong' });
      assert.ok(step.kind === 'failed');
      const hash = (await store.getNtHash('alice')) ?? 'missing';
      assert.ok(!step.message.includes(PASSWORD) && !step.message.includes('wrong password!') && !step.message.includes(hash));
    });

    it('refuses NTLMv1 responses', async () => {
      expectFailed((await rawLogon(dir, { user: 'alice', password: PASSWORD, ntlmV1: true })).step, 'logon-failure', /NTLMv1.*refused/);
    });

    it('refuses an AUTHENTICATE whose MIC does not match', async () => {
      const client = new TestNtlmClient({ user: 'alice', password: PASSWORD, mic: true });
      const ex = new SmbAuthExchange(dir, OPTS);
      const auth = await client.authenticate(expectContinue(await ex.step(client.negotiate())));
      auth[80]! ^= 0x40;
      expectFailed(await ex.step(auth), 'logon-failure', /MIC does not match/);
    });

    it('anonymous logons only when guest access is on', async () => {
      expectFailed((await rawLogon(dir, { user: '', password: '', anonymous: true })).step, 'logon-failure', /guest access is off/);
      const done = expectDone((await rawLogon(dir, { user: '', password: '', anonymous: true }, { ...OPTS, allowGuest: true })).step);
      assert.equal(done.anonymous, true);
      assert.deepEqual(done.user, { name: '', uid: NOBODY_ID, gid: NOBODY_ID, gids: [] });
    });
  });

  describe('SPNEGO (smbclient, macOS, Windows)', () => {
    it('NEGOTIATE offers exactly NTLMSSP in a negTokenInit2', () => {
      const blob = negotiateSecurityBlob();
      assert.deepEqual(decodeInitialToken(blob).mechTypes, [OID.NTLMSSP]);
      // DER worked out by hand: [APPLICATION 0] { SPNEGO OID, [0] { [0] {NTLMSSP}, [3] { [0] GeneralString hint } } }
      assert.equal(
        blob.toString('hex'),
        '6048' +
          '06062b0601050502' +
          'a03e303c' +
          'a00e300c060a2b06010401823702020a' +
          'a32a3028a0261b24' +
          Buffer.from('not_defined_in_RFC4178@please_ignore').toString('hex'),
      );
    });

    it('Windows-style: MIC and mechListMIC; the server answers with its own mechListMIC', async () => {
      const run = await spnegoLogon(dir, { user: 'alice', password: PASSWORD, mic: true }, { mechListMic: true });
      assert.equal(run.first.negState, NEG_STATE.ACCEPT_INCOMPLETE);
      assert.equal(run.first.supportedMech, OID.NTLMSSP);
      const done = expectDone(run.step);
      assert.deepEqual(done.user, ALICE);
      assert.deepEqual(done.sessionKey, run.client.exportedKey);
      const final = decodeNegTokenResp(done.token);
      assert.equal(final.negState, NEG_STATE.ACCEPT_COMPLETED);
      assert.ok(final.mechListMIC, 'a mechListMIC answers the client');
      assert.ok(run.client.checkServerMic(run.mechTypesDer, final.mechListMIC), 'the client can verify it');
    });

    it('without KEY_EXCH the mechListMIC still checks out', async () => {
      const run = await spnegoLogon(dir, { user: 'alice', password: PASSWORD, mic: true, keyExch: false }, { mechListMic: true });
      const final = decodeNegTokenResp(expectDone(run.step).token);
      assert.ok(final.mechListMIC && run.client.checkServerMic(run.mechTypesDer, final.mechListMIC));
    });

    it('sends no mechListMIC when the client sent none', async () => {
      const run = await spnegoLogon(dir, { user: 'alice', password: PASSWORD });
      const final = decodeNegTokenResp(expectDone(run.step).token);
      assert.deepEqual(final, { negState: NEG_STATE.ACCEPT_COMPLETED, supportedMech: null, responseToken: null, mechListMIC: null });
    });

    it('refuses a mechListMIC that does not match', async () => {
      const run = await spnegoLogon(dir, { user: 'alice', password: PASSWORD, mic: true }, { mechListMic: true, tamperMic: true });
      expectFailed(run.step, 'logon-failure', /mechListMIC .* does not match/);
    });

    it('Kerberos offered first: chooses NTLMSSP, asks for its token, and requires the mechListMIC', async () => {
      const mechTypes = [OID.MS_KERBEROS, OID.KERBEROS, OID.NTLMSSP];
      const run = await spnegoLogon(dir, { user: 'alice', password: PASSWORD, mic: true }, { mechTypes, mechListMic: true });
      assert.equal(run.first.negState, NEG_STATE.REQUEST_MIC);
      assert.equal(run.first.supportedMech, OID.NTLMSSP);
      expectDone(run.step);
      const noMic = await spnegoLogon(dir, { user: 'alice', password: PASSWORD, mic: true }, { mechTypes });
      expectFailed(noMic.step, 'logon-failure', /mechListMIC missing/);
      // A client too old for an NTLM MIC does no mechListMIC either (Samba lets it through too).
      expectDone((await spnegoLogon(dir, { user: 'alice', password: PASSWORD }, { mechTypes })).step);
    });

    it('keeps only the mechTypes DER of a negTokenInit, not its optimistic token or OID strings', async () => {
      // Every in-progress session holds its exchange: what a first leg leaves must be small, what
      // ever the client sent (here a 10 KB Kerberos-sized optimistic token and four mechanisms).
      const mechTypes = [OID.MS_KERBEROS, OID.KERBEROS, OID.NEGOEX, OID.NTLMSSP];
      const ex = new SmbAuthExchange(dir, OPTS);
      expectContinue(await ex.step(encodeInitialToken({ mechTypes, mechToken: Buffer.alloc(10_000, 0x41) })));
      const state = (ex as unknown as { state: unknown }).state;
      assert.deepEqual(state, { at: 'spnego-negotiate', spnego: { mechTypesDer: encodeMechTypes(mechTypes), micRequired: true } });
      // And the logon still completes from there, mechListMIC checked over those bytes.
      const client = new TestNtlmClient({ user: 'alice', password: PASSWORD, mic: true });
      const resp = decodeNegTokenResp(expectContinue(await ex.step(encodeNegTokenResp({ responseToken: client.negotiate() }))));
      const auth = await client.authenticate(resp.responseToken!);
      const mic = client.mechListMic(encodeMechTypes(mechTypes));
      expectDone(await ex.step(encodeNegTokenResp({ responseToken: auth, mechListMIC: mic })));
    });

    it('refuses a client that offers no NTLMSSP', async () => {
      const ex = new SmbAuthExchange(dir, OPTS);
      expectFailed(await ex.step(encodeInitialToken({ mechTypes: [OID.KERBEROS] })), 'invalid-token', /offers no NTLMSSP/);
    });

    it('refuses wrong passwords, unknown and password-less users', async () => {
      expectFailed(
        (await spnegoLogon(dir, { user: 'alice', password: 'nope', mic: true }, { mechListMic: true })).step,
        'logon-failure',
        /wrong password/,
      );
      expectFailed((await spnegoLogon(dir, { user: 'bob', password: PASSWORD })).step, 'logon-failure', /no such user/);
      expectFailed((await spnegoLogon(dir, { user: 'nfsonly', password: '' })).step, 'logon-failure', /no SMB password/);
    });

    it('an empty first buffer is answered with the mechanism list', async () => {
      const ex = new SmbAuthExchange(dir, OPTS);
      assert.deepEqual(expectContinue(await ex.step(Buffer.alloc(0))), negotiateSecurityBlob());
      expectFailed(await ex.step(Buffer.alloc(0)), 'invalid-token', /second empty/);
    });
  });

  describe('control-plane changes are seen by the next logon', () => {
    it('a new user, a new password, a group change, a deleted user', async () => {
      expectFailed((await rawLogon(dir, { user: 'carol', password: 'first-pass' })).step, 'logon-failure', /no such user/);
      await store.createUser({ username: 'carol', uid: 1700, ...(await passwordCredentials('first-pass', MIN_BCRYPT_COST)) });
      assert.deepEqual(expectDone((await rawLogon(dir, { user: 'carol', password: 'first-pass' })).step).user, {
        name: 'carol',
        uid: 1700,
        gid: 1700,
        gids: [],
      });
      await store.updateUser('carol', { credentials: await passwordCredentials('second-pass', MIN_BCRYPT_COST), groups: ['staff'] });
      expectFailed((await rawLogon(dir, { user: 'carol', password: 'first-pass' })).step, 'logon-failure', /wrong password/);
      assert.deepEqual(expectDone((await rawLogon(dir, { user: 'carol', password: 'second-pass' })).step).user.gids, [5000]);
      await store.updateUser('carol', { credentials: { password_hash: null, nt_hash: null } });
      expectFailed((await rawLogon(dir, { user: 'carol', password: 'second-pass' })).step, 'logon-failure', /no SMB password/);
      await store.deleteUser('carol');
      expectFailed((await rawLogon(dir, { user: 'carol', password: 'second-pass' })).step, 'logon-failure', /no such user/);
    });
  });

  describe('protocol misuse and malformed tokens', () => {
    it('refuses an AUTHENTICATE before a NEGOTIATE, steps after the end, and mixed framings', async () => {
      const client = new TestNtlmClient({ user: 'alice', password: PASSWORD });
      const ex1 = new SmbAuthExchange(dir, OPTS);
      const challenge = expectContinue(await new SmbAuthExchange(dir, OPTS).step(client.negotiate()));
      expectFailed(await ex1.step(await client.authenticate(challenge)), 'invalid-token', /expected an NTLMSSP NEGOTIATE/);

      const { step } = await rawLogon(dir, { user: 'alice', password: PASSWORD });
      expectDone(step);
      const ex2 = new SmbAuthExchange(dir, OPTS);
      const c2 = new TestNtlmClient({ user: 'alice', password: PASSWORD });
      const ch2 = expectContinue(await ex2.step(c2.negotiate()));
      expectDone(await ex2.step(await c2.authenticate(ch2)));
      expectFailed(await ex2.step(c2.negotiate()), 'invalid-token', /already finished/);

      const ex3 = new SmbAuthExchange(dir, OPTS);
      const c3 = new TestNtlmClient({ user: 'alice', password: PASSWORD });
      const ch3 = expectContinue(await ex3.step(c3.negotiate()));
      expectFailed(
        await ex3.step(encodeNegTokenResp({ responseToken: await c3.authenticate(ch3) })),
        'invalid-token',
        /SPNEGO token in the middle/,
      );
    });

    it('arbitrary bytes at any step give a step result, never an exception', async () => {
      const client = new TestNtlmClient({ user: 'alice', password: PASSWORD });
      const negotiate = client.negotiate();
      const prefixes = [Buffer.alloc(0), Buffer.from([0x60]), Buffer.from([0xa1]), Buffer.from('NTLMSSP\0', 'latin1')];
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...prefixes), fc.uint8Array({ maxLength: 200 }), fc.nat(2), async (prefix, bytes, at) => {
          const ex = new SmbAuthExchange(dir, OPTS);
          if (at >= 1)
            expectContinue(await ex.step(at === 1 ? negotiate : encodeInitialToken({ mechTypes: [OID.NTLMSSP], mechToken: negotiate })));
          const step = await ex.step(Buffer.concat([prefix, bytes]));
          assert.ok(step.kind === 'failed' || step.kind === 'continue', `unexpected ${step.kind}`);
          if (step.kind === 'failed') assert.ok(step.message.length > 0);
        }),
        { numRuns: 1500 },
      );
    });
  });
});
