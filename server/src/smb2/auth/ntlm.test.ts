import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ntHash } from '../../control/auth.js';
import {
  MAX_NTLM_MESSAGE,
  MAX_NTLM_NEGOTIATE,
  MSV_AV,
  NTLMSSP,
  decodeAuthenticate,
  decodeAvPairs,
  decodeChallenge,
  decodeNegotiate,
  encodeAvPairs,
  encodeChallenge,
} from './ntlm.js';
import { NtlmSigner, exportedSessionKey, ntProofStr, ntowfv2, sealKey, sessionBaseKey, signKey } from './ntlm-crypto.js';
import { NtlmServer, challengeFlags } from './ntlm-server.js';
import { Rc4 } from './rc4.js';
import { AuthTokenError, type SmbUserDirectory } from './types.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

// MS-NLMP 4.2.1 common values and 4.2.4 NTLMv2 authentication.
const USER = 'User';
const DOMAIN = 'Domain';
const PASSWORD = 'Password';
const SERVER_CHALLENGE = hex('0123456789abcdef');
const RANDOM_SESSION_KEY = Buffer.alloc(16, 0x55);
const FLAGS_4_2_4 = 0xe28a8233;
const TEMP = hex(`01010000000000000000000000000000 aaaaaaaaaaaaaaaa 00000000
  02000c0044006f006d00610069006e00 01000c0053006500720076006500720000000000 00000000`);
// 4.2.4.3: the CHALLENGE_MESSAGE and AUTHENTICATE_MESSAGE of the example.
const CHALLENGE_4_2_4_3 = hex(`4e544c4d53535000020000000c000c003800000033828ae20123456789abcdef
  00000000000000002400240044000000060070170000000f53006500720076006500720002000c0044006f006d00
  610069006e0001000c0053006500720076006500720000000000`);
const AUTHENTICATE_4_2_4_3 = hex(`4e544c4d5353500003000000180018006c00000054005400840000000c000c00
  480000000800080054000000100010005c00000010001000d8000000358288e2050128 0a0000000f44006f006d00
  610069006e00550073006500720043004f004d0050005500540045005200 86c35097ac9cec102554764a57cccc19
  aaaaaaaaaaaaaaaa 68cd0ab851e51c96aabc927bebef6a1c 0101000000000000 0000000000000000 aaaaaaaaaaaaaaaa
  00000000 02000c0044006f006d00610069006e0001000c005300650072007600650072000000000000000000
  c5dad2544fc9799094ce1ce90bc9d03e`);

describe('MS-NLMP 4.2.4 NTLMv2 test vectors', () => {
  it('4.2.4.1.1 NTOWFv2 from the NT hash that the control plane stores', async () => {
    const nt = hex(await ntHash(PASSWORD));
    assert.equal(ntowfv2(nt, USER, DOMAIN).toString('hex'), '0c868a403bfd7a93a3001ef22ef02e3f');
  });

  it('4.2.4.2.2 NTProofStr, 4.2.4.1.2 SessionBaseKey, 4.2.4.2.3 EncryptedSessionKey and KEY_EXCH', async () => {
    const key = ntowfv2(hex(await ntHash(PASSWORD)), USER, DOMAIN);
    const proof = ntProofStr(key, SERVER_CHALLENGE, TEMP);
    assert.equal(proof.toString('hex'), '68cd0ab851e51c96aabc927bebef6a1c');
    const base = sessionBaseKey(key, proof);
    assert.equal(base.toString('hex'), '8de40ccadbc14a82f15cb0ad0de95ca3');
    // The client encrypts its random session key with the KeyExchangeKey; the server recovers it.
    assert.equal(new Rc4(base).transform(RANDOM_SESSION_KEY).toString('hex'), 'c5dad2544fc9799094ce1ce90bc9d03e');
    assert.deepEqual(exportedSessionKey(base, hex('c5dad2544fc9799094ce1ce90bc9d03e')), RANDOM_SESSION_KEY);
    assert.deepEqual(exportedSessionKey(base, null), base);
  });

  it('4.2.4.4 signing and sealing keys, and the signature GSS_WrapEx makes', () => {
    assert.equal(signKey(RANDOM_SESSION_KEY, 'client-to-server').toString('hex'), '4788dc861b4782f35d43fd98fe1a2d39');
    assert.equal(sealKey(RANDOM_SESSION_KEY, FLAGS_4_2_4, 'client-to-server').toString('hex'), '59f600973cc4960a25480a7c196e4c58');
    // GSS_WrapEx of "Plaintext": the sealing handle encrypts the message, then (KEY_EXCH) the checksum.
    const signer = new NtlmSigner(RANDOM_SESSION_KEY, FLAGS_4_2_4, 'client-to-server');
    const plaintext = Buffer.from('Plaintext', 'utf16le');
    const sealed = signer.sealingHandle().transform(plaintext);
    assert.equal(sealed.toString('hex'), '54e50165bf1936dc996020c1811b0f06fb5f');
    assert.equal(signer.sign(plaintext).toString('hex'), '010000007fb38ec5c55d497600000000');
  });

  it('4.2.4.3 CHALLENGE_MESSAGE decodes to the example values', () => {
    const c = decodeChallenge(CHALLENGE_4_2_4_3);
    assert.equal(c.flags >>> 0, FLAGS_4_2_4);
    assert.deepEqual(c.serverChallenge, SERVER_CHALLENGE);
    assert.equal(c.targetName, 'Server');
    assert.deepEqual(
      decodeAvPairs(c.targetInfo).map((p) => [p.id, p.value.toString('utf16le')]),
      [
        [MSV_AV.NB_DOMAIN_NAME, 'Domain'],
        [MSV_AV.NB_COMPUTER_NAME, 'Server'],
      ],
    );
  });

  it('4.2.4.3 AUTHENTICATE_MESSAGE decodes to the example values', () => {
    const a = decodeAuthenticate(AUTHENTICATE_4_2_4_3);
    assert.equal(a.flags >>> 0, 0xe2888235);
    assert.equal(a.domain, DOMAIN);
    assert.equal(a.user, USER);
    assert.equal(a.workstation, 'COMPUTER');
    assert.equal(a.lmResponse.toString('hex'), '86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa');
    assert.deepEqual(a.ntResponse, Buffer.concat([hex('68cd0ab851e51c96aabc927bebef6a1c'), TEMP]));
    assert.equal(a.encryptedRandomSessionKey.toString('hex'), 'c5dad2544fc9799094ce1ce90bc9d03e');
    assert.equal(a.micOffset, -1, 'the payload starts right after the Version: no MIC field');
  });

  it('the server accepts the 4.2.4.3 AUTHENTICATE and exports the random session key', async () => {
    const nt = hex(await ntHash(PASSWORD));
    const dir: SmbUserDirectory = {
      lookup: async (name) =>
        name.toLowerCase() === 'user' ? { user: { name: 'user', uid: 1000, gid: 1000, gids: [5] }, ntHash: nt } : null,
    };
    const server = new NtlmServer(
      dir,
      { serverName: 'Server', domain: 'Domain', allowGuest: false },
      { serverChallenge: SERVER_CHALLENGE },
    );
    const negotiate = Buffer.alloc(32);
    Buffer.from('NTLMSSP\0', 'latin1').copy(negotiate);
    negotiate.writeUInt32LE(1, 8);
    negotiate.writeUInt32LE(FLAGS_4_2_4, 12);
    server.challengeFor(decodeNegotiate(negotiate));
    const outcome = await server.authenticate(AUTHENTICATE_4_2_4_3);
    assert.equal(outcome.ok, true, outcome.ok ? '' : outcome.message);
    assert.ok(outcome.ok);
    assert.deepEqual(outcome.sessionKey, RANDOM_SESSION_KEY);
    assert.deepEqual(outcome.user, { name: 'user', uid: 1000, gid: 1000, gids: [5] });

    const wrong = hex(await ntHash('password'));
    const server2 = new NtlmServer(
      { lookup: async () => ({ user: { name: 'user', uid: 1, gid: 1, gids: [] }, ntHash: wrong }) },
      { serverName: 'Server', domain: 'Domain', allowGuest: false },
      { serverChallenge: SERVER_CHALLENGE },
    );
    server2.challengeFor(decodeNegotiate(negotiate));
    const refused = await server2.authenticate(AUTHENTICATE_4_2_4_3);
    assert.deepEqual(refused.ok ? null : [refused.reason, refused.message], [
      'logon-failure',
      'logon of "Domain\\\\User" refused: wrong password',
    ]);
  });
});

describe('NTLMSSP CHALLENGE', () => {
  it('echoes the security flags the client asked for and always offers NTLM, TargetInfo and Version', () => {
    const linux = 0xe2088235; // Linux cifs NEGOTIATE (smb-client-notes)
    const f = challengeFlags(linux);
    for (const flag of [
      NTLMSSP.NEGOTIATE_56,
      NTLMSSP.NEGOTIATE_128,
      NTLMSSP.NEGOTIATE_KEY_EXCH,
      NTLMSSP.NEGOTIATE_SIGN,
      NTLMSSP.NEGOTIATE_SEAL,
      NTLMSSP.NEGOTIATE_ALWAYS_SIGN,
      NTLMSSP.NEGOTIATE_EXTENDED_SESSIONSECURITY,
      NTLMSSP.NEGOTIATE_UNICODE,
      NTLMSSP.REQUEST_TARGET,
      NTLMSSP.NEGOTIATE_TARGET_INFO,
      NTLMSSP.NEGOTIATE_VERSION,
      NTLMSSP.NEGOTIATE_NTLM,
    ])
      assert.ok(f & flag, `flag 0x${flag.toString(16)}`);
    assert.equal(f >>> 0, 0xe28a8235, 'the flags smbd answers Linux with');
    const bare = challengeFlags(NTLMSSP.NEGOTIATE_UNICODE);
    assert.equal(
      bare & (NTLMSSP.NEGOTIATE_KEY_EXCH | NTLMSSP.NEGOTIATE_SIGN | NTLMSSP.NEGOTIATE_128),
      0,
      'nothing the client did not ask for',
    );
  });

  it('round-trips through the decoder with the server name, AV pairs and a fresh random challenge', () => {
    const dir: SmbUserDirectory = { lookup: async () => null };
    const server = new NtlmServer(dir, { serverName: 'dittofs', domain: 'workgroup', allowGuest: false });
    const negotiate = decodeNegotiate(hex('4e544c4d5353500001000000358208e2000000000000000000000000000000000a0063450000000f'));
    const c1 = decodeChallenge(server.challengeFor(negotiate));
    const c2 = decodeChallenge(
      new NtlmServer(dir, { serverName: 'dittofs', domain: 'workgroup', allowGuest: false }).challengeFor(negotiate),
    );
    assert.notDeepEqual(c1.serverChallenge, c2.serverChallenge);
    assert.equal(c1.targetName, 'DITTOFS');
    const av = new Map(decodeAvPairs(c1.targetInfo).map((p) => [p.id, p.value]));
    assert.equal(av.get(MSV_AV.NB_DOMAIN_NAME)?.toString('utf16le'), 'WORKGROUP');
    assert.equal(av.get(MSV_AV.NB_COMPUTER_NAME)?.toString('utf16le'), 'DITTOFS');
    assert.equal(av.get(MSV_AV.DNS_DOMAIN_NAME)?.toString('utf16le'), 'workgroup');
    assert.equal(av.get(MSV_AV.DNS_COMPUTER_NAME)?.toString('utf16le'), 'dittofs');
    const ts = av.get(MSV_AV.TIMESTAMP);
    assert.ok(ts);
    const ms = Number(ts.readBigUInt64LE() / 10_000n - 11_644_473_600_000n);
    assert.ok(Math.abs(ms - Date.now()) < 60_000, 'timestamp is now');
  });

  it('encodes AV pairs that decode back, EOL-terminated', () => {
    const pairs = [
      { id: MSV_AV.NB_COMPUTER_NAME, value: Buffer.from('A', 'utf16le') },
      { id: MSV_AV.FLAGS, value: hex('02000000') },
    ];
    const enc = encodeAvPairs(pairs);
    assert.deepEqual(enc.subarray(-4), Buffer.alloc(4));
    assert.deepEqual(decodeAvPairs(enc), pairs);
    assert.deepEqual(decodeAvPairs(Buffer.concat([enc, hex('ffff')])), pairs, 'bytes after EOL are ignored');
  });

  it('encodeChallenge writes what decodeChallenge reads', () => {
    const c = { flags: 0xe28a8235, serverChallenge: hex('1122334455667788'), targetName: 'SRV', targetInfo: encodeAvPairs([]) };
    assert.deepEqual(decodeChallenge(encodeChallenge(c)), c);
  });
});

describe('NTLMSSP decoders on malformed input', () => {
  const valid = [
    AUTHENTICATE_4_2_4_3,
    CHALLENGE_4_2_4_3,
    hex('4e544c4d5353500001000000358208e2000000000000000000000000000000000a0063450000000f'),
  ];
  const decoders = [decodeNegotiate, decodeAuthenticate, decodeChallenge, decodeAvPairs];

  function onlyTokenErrors(fn: (b: Buffer) => unknown, b: Buffer): void {
    try {
      fn(b);
    } catch (err) {
      if (!(err instanceof AuthTokenError)) throw err;
    }
  }

  it('arbitrary bytes decode or raise AuthTokenError, nothing else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.boolean(), (bytes, withSignature) => {
        const b = Buffer.from(bytes);
        if (withSignature && b.length >= 12) Buffer.from('NTLMSSP\0', 'latin1').copy(b);
        for (const d of decoders) onlyTokenErrors(d, b);
      }),
      { numRuns: 3000 },
    );
  });

  it('valid messages cut short or with bytes changed decode or raise AuthTokenError', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...valid),
        fc.nat(),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
        (msg, cut, edits) => {
          const b = Buffer.from(msg.subarray(0, (cut % (msg.length + 1)) + 0));
          for (const [at, v] of edits) if (b.length > 0) b[at % b.length] = v;
          for (const d of decoders) onlyTokenErrors(d, b);
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('refuses fields that point outside the message, with a clear message', () => {
    const bad = Buffer.from(AUTHENTICATE_4_2_4_3);
    bad.writeUInt32LE(0xfffffff0, 24); // NtChallengeResponse offset
    assert.throws(() => decodeAuthenticate(bad), { name: 'AuthTokenError', message: /NtChallengeResponse .* outside/ });
    assert.throws(() => decodeAuthenticate(AUTHENTICATE_4_2_4_3.subarray(0, 63)), AuthTokenError);
    assert.throws(() => decodeAuthenticate(CHALLENGE_4_2_4_3), { message: /expected an NTLMSSP AUTHENTICATE/ });
    assert.throws(() => decodeAvPairs(hex('0100ff00')), { message: /runs past the end/ });
    assert.throws(() => decodeAvPairs(hex('01000000')), { message: /without MsvAvEOL/ });
  });

  it('refuses oversized messages before reading them: a NEGOTIATE (kept for the MIC) past 1 KiB, any past MAX_NTLM_MESSAGE', () => {
    const negotiate = Buffer.alloc(MAX_NTLM_NEGOTIATE + 1);
    hex('4e544c4d5353500001000000358208e2000000000000000000000000000000000a0063450000000f').copy(negotiate);
    assert.throws(() => decodeNegotiate(negotiate), { name: 'AuthTokenError', message: /NEGOTIATE message of 1025 bytes/ });
    assert.equal(decodeNegotiate(negotiate.subarray(0, MAX_NTLM_NEGOTIATE)).raw.length, MAX_NTLM_NEGOTIATE);
    const authenticate = Buffer.alloc(MAX_NTLM_MESSAGE + 1);
    AUTHENTICATE_4_2_4_3.copy(authenticate);
    assert.throws(() => decodeAuthenticate(authenticate), { name: 'AuthTokenError', message: /larger than/ });
  });
});
