// AES-128-CMAC and the SMB 3.x key derivation against independent references: RFC 4493's test
// vectors, and OpenSSL's own implementations (`openssl mac ... CMAC`, `openssl kdf ... KBKDF`, the
// openssl CLI that hack/install-deps.sh installs) over random keys and messages of every length
// class (empty, partial block, whole blocks, past the 64 KiB pieces the CBC pass is fed in).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { aesCmac } from './cmac.js';
import { smb30SigningKey, smb3Kdf, smb3Signature, verifySignature } from './signing.js';

function openssl(args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile('openssl', args, { timeout: 60_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`openssl ${args.join(' ')}: ${stderr}`)) : resolve(stdout),
    ),
  );
}
const hex = (s: string): string => s.trim().replace(/:/g, '').toLowerCase();

describe('AES-128-CMAC (RFC 4493)', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-cmac-'));
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("gives RFC 4493's four examples", () => {
    const key = Buffer.from('2b7e151628aed2a6abf7158809cf4f3c', 'hex');
    const m = Buffer.from(
      '6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710',
      'hex',
    );
    for (const [len, mac] of [
      [0, 'bb1d6929e95937287fa37d129b756746'],
      [16, '070a16b46b4d4144f79bdd9dd04a287c'],
      [40, 'dfa66747de9ae63030ca32611497c827'],
      [64, '51f0bebf7e3b9d92fc49741779363cfe'],
    ] as const)
      assert.equal(aesCmac(key, [m.subarray(0, len)]).toString('hex'), mac, `${len} bytes`);
  });

  it("matches OpenSSL's CMAC for random keys and lengths, however the message is split into parts", async () => {
    for (const len of [1, 15, 17, 48, 63, 64, 65, 1000, 65536, 65537, 65536 + 16, 300_001]) {
      const key = randomBytes(16);
      const msg = randomBytes(len);
      const file = path.join(dir, `m${len}`);
      await writeFile(file, msg);
      const want = hex(await openssl(['mac', '-cipher', 'AES-128-CBC', '-macopt', `hexkey:${key.toString('hex')}`, '-in', file, 'CMAC']));
      assert.equal(aesCmac(key, [msg]).toString('hex'), want, `${len} bytes`);
      const a = Math.floor(len / 3);
      const b = Math.floor((2 * len) / 3);
      assert.equal(
        aesCmac(key, [msg.subarray(0, a), Buffer.alloc(0), msg.subarray(a, b), msg.subarray(b)]).toString('hex'),
        want,
        `${len} bytes in parts`,
      );
    }
  });

  it('refuses a key that is not 16 bytes', () => {
    assert.throws(() => aesCmac(Buffer.alloc(32), [Buffer.alloc(1)]), RangeError);
  });
});

describe('SMB 3.x key derivation and signing (MS-SMB2 3.1.4.1, 3.1.4.2)', () => {
  it("derives the 3.0 signing key as OpenSSL's SP800-108 KBKDF (counter mode, HMAC-SHA256) does", async () => {
    for (let i = 0; i < 3; i++) {
      const sessionKey = randomBytes(16);
      const want = hex(
        await openssl([
          'kdf',
          '-keylen',
          '16',
          '-kdfopt',
          'mac:HMAC',
          '-kdfopt',
          'digest:SHA256',
          '-kdfopt',
          `hexkey:${sessionKey.toString('hex')}`,
          '-kdfopt',
          `hexsalt:${Buffer.from('SMB2AESCMAC\0').toString('hex')}`,
          '-kdfopt',
          `hexinfo:${Buffer.from('SmbSign\0').toString('hex')}`,
          'KBKDF',
        ]),
      );
      assert.equal(smb30SigningKey(sessionKey).toString('hex'), want);
      assert.equal(smb3Kdf(sessionKey, 'SMB2AESCMAC\0', 'SmbSign\0').toString('hex'), want);
    }
  });

  it('signs over the message with its Signature field as zeros, and refuses any change', () => {
    const key = randomBytes(16);
    const msg = randomBytes(200);
    msg.fill(0, 48, 64);
    const sig = aesCmac(key, [msg]);
    const signed = Buffer.from(msg);
    sig.copy(signed, 48);
    assert.deepEqual(smb3Signature(key, signed), sig, 'the field it carries is not signed');
    assert.equal(verifySignature('aes-128-cmac', key, signed), true);
    for (const at of [0, 47, 48, 63, 64, 199]) {
      const bad = Buffer.from(signed);
      bad[at]! ^= 1;
      assert.equal(verifySignature('aes-128-cmac', key, bad), false, `byte ${at} flipped`);
    }
    assert.equal(verifySignature('hmac-sha256', key, signed), false, 'not an HMAC-SHA256 signature');
    assert.equal(verifySignature('aes-128-cmac', key, signed.subarray(0, 63)), false, 'shorter than a header');
  });
});
