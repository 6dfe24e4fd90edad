// SMB 3.x encryption against Microsoft's published examples: the keys the KDF derives, and real
// transform messages (a WRITE request, as a client sent it, and the server's response) that must
// decrypt to the messages given; what this module encrypts with the same nonce is byte for byte
// the client's. Sources: the Open Specifications blog posts "Encryption in SMB 3.0: A protocol
// perspective" (AES-128-CCM) and "SMB 3.1.1 Encryption in Windows 10" (Appendix A.1, AES-128-GCM).
// A changed byte anywhere is refused.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  CipherId,
  clientSideOf,
  DecryptError,
  decodeTransformHeader,
  decryptMessage,
  encryptionKeys,
  encryptMessage,
  sessionCipher,
  type Cipher,
  type SessionCipher,
} from './encryption.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** A session cipher as the client holds it, its next nonce being `nonce`. */
function clientSide(sc: SessionCipher, nonce: Buffer): SessionCipher {
  const n = sc.cipher === CipherId.AES_128_GCM || sc.cipher === CipherId.AES_256_GCM ? 12 : 11;
  return { ...clientSideOf(sc), noncePrefix: nonce.subarray(0, n - 8), sent: nonce.readBigUInt64LE(n - 8) };
}

interface Example {
  name: string;
  cipher: Cipher;
  sessionKey: Buffer;
  preauthHash: Buffer | null;
  /** Client to server (the server's decryption key), server to client (its encryption key). */
  c2s: string;
  s2c: string;
  sessionId: number;
  request: { plain: Buffer; transform: Buffer };
  response?: { plain: Buffer; transform: Buffer };
}

const GCM_311: Example = {
  name: '3.1.1 AES-128-GCM',
  cipher: CipherId.AES_128_GCM,
  sessionKey: hex('419FDDF34C1E001909D362AE7FB6AF79'),
  preauthHash: hex(
    'B23F3CBFD69487D9832B79B1594A367CDD950909B774C3A4C412B4FCEA9EDDDBA7DB256BA2EA30E977F11F9B113247578E0E915C6D2A513B8F2FCA5707DC8770',
  ),
  c2s: 'A2F5E80E5D59103034F32E52F698E5EC',
  s2c: '748C50868C90F302962A5C35F5F9A8BF',
  sessionId: 0x100000000025,
  request: {
    plain: hex(`FE534D4240000100000000000900010008000000000000000500000000000000FFFE0000010000002500000000100000
      00000000000000000000000000000000310070001700000000000000000000000600000004000000010000000400000000000000
      00000000700000000000000 0536D623320656E6372797074696F6E2074657374696E67`),
    transform: hex(`FD534D42 BD73D97D2BC9001BCAFAC0FDFF5FEEBC C7D6822D269CAF48904C664C00000000 87000000 0000 0100 2500000000100000
      6ECDD2A7AFC7B47763057A041B8FD4DAFFE990B70C9E09D36C084E02D14EF247F8BDE38ACF6256F8B1D3B56F77FBDEB312FEA5E92CBCC1ED8FB2EBBFAA75E49A
      4A394BB44576545567C24D4C014D47C9FBDFDAFD2C4F9B72F8D256452620A299F48E29E53D6B61D1C13A19E91AF013F00D17E3ABC2FC3D36C8C1B6B93973253852DBD442E46EE8`),
  },
  response: {
    plain: hex(`FE534D4240000100000000000900010001000000000000000500000000000000FFFE0000010000002500000000100000
      000000000000000000000000000000001100000017000000 0000000000000000`),
    transform: hex(`FD534D42ACBE1CB7ED343ADF1725EF144D90D4B0E06831DD2E8EB7B4000000000000000050000000000001002500000000100000
      26BBBF949983A6C1C796559D0F2C510CB651D1F7B6AC8DED32A2A0B8F2D793A815C6F6B848D69767A215841A42D400AE6DDB5F0B44173A014973321FDD7950DA6179159B82E03C9E18A050FF0EA1C967`),
  },
};

const CCM_30: Example = {
  name: '3.0 AES-128-CCM',
  cipher: CipherId.AES_128_CCM,
  sessionKey: hex('B4546771B515F766A86735532DD6C4F0'),
  preauthHash: null,
  c2s: '261B72350558F2E9DCF613070383EDBF',
  s2c: '8FE2B57EC34D2DB5B1A9727F526BBDB5',
  sessionId: 0x8e40014000011,
  request: {
    plain:
      hex(`FE534D4240000100000000000900400008000000000000000400000000000000FFFE0000010000001100001400E4080000000000000000000000000000000000
      3100700017000000000000000000000015010000390000020100000039020000 00000000000000007000000000000000536D623320656E6372797074696F6E2074657374696E67`),
    // The nonce's five reserved bytes are not zero in this example: they are authenticated data.
    transform: hex(`FD534D42 81A286535415445DAE393921E44FA42E 66E69A111892584FB5ED524A744DA3EE 87000000 0000 0100 1100001400E40800
      25C8FEE16605A437832D1CD52DA9F4645333482A175FE5384563F45FCDAFAEF38BC62BA4D5C62897996625A44C29BE5658DE2E6117585779E7B59FFD971278D0
      8580D7FA899E410E910EABF5AA1DB43050B33B49182637759AC15D84BFCDF5B6B238993C0F4CF4D6012023F6C627297075D84B7803912D0A9639634453595EF3E33FFE4E7AC2AB`),
  },
  response: {
    plain:
      hex(`FE534D4240000100000000000900210009000000000000000400000000000000FFFE0000010000001100001400E4080000000000000000000000000000000000
      11000000170000000000000000000000`),
    transform: hex(`FD534D42A6015530A18F6D9AFFE22AFAE8E66484 86000000000000001100001400E40800 50000000 0000 0100 1100001400E40800
      DBF46435C5F14169293CE079E344479BF670227E49873F4586 72C3098DAC467DD5809F369D674091665157871483E01F7BECD02064EAC3E235F913668BBC2F097980D4B378F1993EFF6E60D177309E5B`),
  },
};

describe('SMB 3.x encryption (MS-SMB2 3.1.4.3, 3.3.5.2.1.1)', () => {
  for (const ex of [GCM_311, CCM_30]) {
    it(`${ex.name}: the keys of Microsoft's example`, () => {
      const keys = encryptionKeys(ex.cipher, ex.sessionKey, ex.preauthHash);
      assert.equal(keys.decryption.toString('hex').toUpperCase(), ex.c2s);
      assert.equal(keys.encryption.toString('hex').toUpperCase(), ex.s2c);
    });

    it(`${ex.name}: the client's WRITE decrypts to its message; the same nonce encrypts to the same bytes`, () => {
      const sc = sessionCipher(ex.cipher, ex.sessionKey, ex.preauthHash);
      const t = ex.request.transform;
      const h = decodeTransformHeader(t)!;
      assert.equal(h.sessionId, ex.sessionId);
      assert.deepEqual(decryptMessage(sc, t, h), ex.request.plain);
      // The nonce's reserved bytes are the example's own (zero at 3.1.1).
      const out = Buffer.concat(encryptMessage(clientSide(sc, h.nonce), ex.sessionId, [ex.request.plain]));
      if (ex.cipher === CipherId.AES_128_GCM) assert.deepEqual(out, t);
      else assert.deepEqual(out.subarray(52), t.subarray(52), 'ciphertext');
    });

    it(`${ex.name}: the server's response, encrypted with the server's key, decrypts with the client's`, () => {
      const sc = sessionCipher(ex.cipher, ex.sessionKey, ex.preauthHash);
      const t = ex.response!.transform;
      assert.deepEqual(decryptMessage(clientSideOf(sc), t, decodeTransformHeader(t)!), ex.response!.plain);
    });
  }

  it('256-bit ciphers take 32-byte keys (L = 256); every cipher round-trips a compound of several parts', () => {
    const sessionKey = hex('00112233445566778899AABBCCDDEEFF');
    for (const cipher of [CipherId.AES_128_CCM, CipherId.AES_128_GCM, CipherId.AES_256_CCM, CipherId.AES_256_GCM] as const) {
      const server = sessionCipher(cipher, sessionKey, cipher === CipherId.AES_128_CCM ? null : Buffer.alloc(64, 7));
      assert.equal(server.encryptionKey.length, cipher >= CipherId.AES_256_CCM ? 32 : 16);
      const client = { ...server, decryptionKey: server.encryptionKey };
      const parts = [Buffer.alloc(64, 1), Buffer.from('data'), Buffer.alloc(3)];
      const a = Buffer.concat(encryptMessage(server, 42, parts));
      const b = Buffer.concat(encryptMessage(server, 42, parts));
      assert.notDeepEqual(a.subarray(20, 36), b.subarray(20, 36), 'a new nonce per message');
      assert.deepEqual(decryptMessage(client, a, decodeTransformHeader(a)!), Buffer.concat(parts));
    }
  });

  for (const ex of [GCM_311, CCM_30]) {
    it(`${ex.name}: a changed byte (header, nonce, size, session id, ciphertext or tag) and a wrong key are refused`, () => {
      const sc = sessionCipher(ex.cipher, ex.sessionKey, ex.preauthHash);
      const t = ex.request.transform;
      for (const at of [4, 19, 20, 31, 36, 42, 44, 52, t.length - 1]) {
        const bad = Buffer.from(t);
        bad[at]! ^= 0x01;
        const h = decodeTransformHeader(bad);
        assert.ok(h !== null);
        assert.throws(() => decryptMessage(sc, bad, h), DecryptError, `byte ${at}`);
      }
      const other = sessionCipher(ex.cipher, Buffer.alloc(16, 9), ex.preauthHash);
      assert.throws(() => decryptMessage(other, t, decodeTransformHeader(t)!), DecryptError);
      // Cut short: OriginalMessageSize no longer matches.
      const cut = t.subarray(0, t.length - 1);
      assert.throws(() => decryptMessage(sc, cut, decodeTransformHeader(cut)!), /OriginalMessageSize/);
      assert.equal(decodeTransformHeader(t.subarray(0, 51)), null, 'shorter than a transform header');
      assert.equal(decodeTransformHeader(ex.request.plain), null, 'not a transform header');
    });
  }
});
