// A test-side NTLMv2 client written from MS-NLMP 3.1.5 / 3.3.2 (NEGOTIATE, then AUTHENTICATE for
// the server's CHALLENGE), for the SESSION_SETUP tests and for test clients that log on over SMB2.
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { NtlmSigner } from '../../server/src/smb2/auth/ntlm-crypto.js';
import { Rc4 } from '../../server/src/smb2/auth/rc4.js';

const hmac = (key: Uint8Array, ...parts: Uint8Array[]): Buffer => {
  const h = createHmac('md5', key);
  for (const p of parts) h.update(p);
  return h.digest();
};
const u16 = (s: string): Buffer => Buffer.from(s, 'utf16le');

export interface ClientOptions {
  user: string;
  password: string;
  /** The domain the client sends. */
  domain?: string;
  /** The domain it keys its response with (a client that sends one domain and used another). */
  keyDomain?: string;
  keyExch?: boolean;
  mic?: boolean;
  /** Send an NTLMv1-sized (24-byte) NT response instead of NTLMv2. */
  ntlmV1?: boolean;
  anonymous?: boolean;
}

/** NTLM flags of a Windows 10 client (KEY_EXCH, 56/128, VERSION, TARGET_INFO, ESS, ALWAYS_SIGN, NTLM, SEAL, SIGN, REQUEST_TARGET, UNICODE). */
const CLIENT_FLAGS = 0xe2088235;
const KEY_EXCH = 0x40000000;

export class TestNtlmClient {
  negotiateMessage = Buffer.alloc(0);
  exportedKey: Buffer = Buffer.alloc(0);
  flags = 0;

  constructor(private readonly o: ClientOptions) {}

  async ntHash(): Promise<Buffer> {
    const { md4 } = await import('hash-wasm');
    return Buffer.from(await md4(u16(this.o.password)), 'hex');
  }

  negotiate(): Buffer {
    const flags = this.o.keyExch === false ? CLIENT_FLAGS & ~KEY_EXCH : CLIENT_FLAGS;
    const m = Buffer.alloc(40);
    m.write('NTLMSSP\0', 0, 'latin1');
    m.writeUInt32LE(1, 8);
    m.writeUInt32LE(flags >>> 0, 12);
    // Domain and Workstation fields empty (offset 40); Version 10.0.19041, NTLM revision 15.
    m.writeUInt32LE(40, 20);
    m.writeUInt32LE(40, 28);
    Buffer.from([10, 0, 0x61, 0x4a, 0, 0, 0, 15]).copy(m, 32);
    this.negotiateMessage = m;
    return m;
  }

  /** MS-NLMP 3.1.5.1.2: the AUTHENTICATE_MESSAGE for the server's CHALLENGE_MESSAGE. */
  async authenticate(challenge: Buffer): Promise<Buffer> {
    assert.equal(challenge.subarray(0, 8).toString('latin1'), 'NTLMSSP\0');
    assert.equal(challenge.readUInt32LE(8), 2);
    const serverFlags = challenge.readUInt32LE(20);
    const serverChallenge = challenge.subarray(24, 32);
    const tiLen = challenge.readUInt16LE(40);
    const tiOff = challenge.readUInt32LE(44);
    const targetInfo = challenge.subarray(tiOff, tiOff + tiLen);
    this.flags = (serverFlags & (this.negotiateMessage.readUInt32LE(12) | 0x00800000 | 0x00020000)) >>> 0;

    const domain = this.o.domain ?? 'WORKGROUP';
    let lm: Buffer;
    let nt: Buffer;
    let baseKey: Buffer;
    if (this.o.anonymous) {
      lm = Buffer.alloc(1);
      nt = Buffer.alloc(0);
      baseKey = Buffer.alloc(16);
    } else {
      const responseKey = hmac(await this.ntHash(), u16(this.o.user.toUpperCase() + (this.o.keyDomain ?? domain)));
      // The server's AV pairs, plus MsvAvFlags = MIC present when sending a MIC, then EOL.
      let avPairs = targetInfo.subarray(0, targetInfo.length - 4);
      if (this.o.mic) avPairs = Buffer.concat([avPairs, Buffer.from([6, 0, 4, 0, 2, 0, 0, 0])]);
      avPairs = Buffer.concat([avPairs, Buffer.alloc(4)]);
      const time = Buffer.alloc(8);
      time.writeBigUInt64LE(BigInt(Date.now()) * 10_000n + 116_444_736_000_000_000n);
      const temp = Buffer.concat([Buffer.from([1, 1, 0, 0, 0, 0, 0, 0]), time, randomBytes(8), Buffer.alloc(4), avPairs, Buffer.alloc(4)]);
      const proof = hmac(responseKey, serverChallenge, temp);
      nt = this.o.ntlmV1 ? Buffer.concat([proof, proof]).subarray(0, 24) : Buffer.concat([proof, temp]);
      lm = Buffer.alloc(24);
      baseKey = hmac(responseKey, proof);
    }
    let encryptedKey: Buffer = Buffer.alloc(0);
    if (this.flags & KEY_EXCH) {
      this.exportedKey = randomBytes(16);
      encryptedKey = new Rc4(baseKey).transform(this.exportedKey);
    } else {
      this.exportedKey = baseKey;
    }

    const user = this.o.anonymous ? Buffer.alloc(0) : u16(this.o.user);
    const dom = this.o.anonymous ? Buffer.alloc(0) : u16(domain);
    const ws = u16('TESTCLIENT');
    const fixed = 64 + 8 + 16; // header, Version, MIC
    const payload = [dom, user, ws, lm, nt, encryptedKey];
    const m = Buffer.alloc(fixed + payload.reduce((n, p) => n + p.length, 0));
    m.write('NTLMSSP\0', 0, 'latin1');
    m.writeUInt32LE(3, 8);
    let off = fixed;
    const put = (at: number, p: Buffer): void => {
      m.writeUInt16LE(p.length, at);
      m.writeUInt16LE(p.length, at + 2);
      m.writeUInt32LE(off, at + 4);
      p.copy(m, off);
      off += p.length;
    };
    put(28, dom);
    put(36, user);
    put(44, ws);
    put(12, lm);
    put(20, nt);
    put(52, encryptedKey);
    m.writeUInt32LE(this.flags, 60);
    Buffer.from([10, 0, 0x61, 0x4a, 0, 0, 0, 15]).copy(m, 64);
    if (this.o.mic) hmac(this.exportedKey, this.negotiateMessage, challenge, m).copy(m, 72);
    return m;
  }

  /** GSS_GetMIC over the mechTypes (the mechListMIC a Windows client sends). */
  mechListMic(mechTypesDer: Buffer): Buffer {
    return new NtlmSigner(this.exportedKey, this.flags, 'client-to-server').sign(mechTypesDer);
  }

  /** Checks the server's mechListMIC, as the client does before it trusts the session. */
  checkServerMic(mechTypesDer: Buffer, mic: Buffer): boolean {
    return new NtlmSigner(this.exportedKey, this.flags, 'server-to-client').verify(mechTypesDer, mic);
  }
}
