// The server side of one NTLM exchange (MS-NLMP 3.2.5 connection-oriented, NTLMv2 only): CHALLENGE
// for a NEGOTIATE, then the AUTHENTICATE checked against the user's NT hash from the directory.
import { randomBytes } from 'node:crypto';
import { NOBODY_ID } from '../../config/defaults.js';
import {
  MSV_AV,
  MSV_AV_FLAG_MIC_PRESENT,
  NTLMSSP,
  decodeAuthenticate,
  decodeAvPairs,
  encodeAvPairs,
  encodeChallenge,
  fileTime,
  type NtlmAuthenticate,
  type NtlmNegotiate,
} from './ntlm.js';
import { computeMic, exportedSessionKey, ntProofStr, ntowfv2, safeEqual, sessionBaseKey, splitNtlmV2Response } from './ntlm-crypto.js';
import type { SmbAuthOptions, SmbUser, SmbUserDirectory } from './types.js';

/** The flags of a client's NEGOTIATE that the CHALLENGE echoes when the client asked for them. */
const ECHOED =
  NTLMSSP.NEGOTIATE_SIGN |
  NTLMSSP.NEGOTIATE_SEAL |
  NTLMSSP.NEGOTIATE_ALWAYS_SIGN |
  NTLMSSP.NEGOTIATE_EXTENDED_SESSIONSECURITY |
  NTLMSSP.NEGOTIATE_128 |
  NTLMSSP.NEGOTIATE_56 |
  NTLMSSP.NEGOTIATE_KEY_EXCH |
  NTLMSSP.REQUEST_TARGET;

/** The anonymous identity (squashed like NFS anonymous access; smb-core may map it per share). */
export const ANONYMOUS_USER: Readonly<SmbUser> = Object.freeze({ name: '', uid: NOBODY_ID, gid: NOBODY_ID, gids: [] });

export type NtlmOutcome =
  | {
      ok: true;
      user: SmbUser;
      /** The ExportedSessionKey (16 bytes). */
      sessionKey: Buffer;
      anonymous: boolean;
      /** The flags both sides agreed on (CHALLENGE & AUTHENTICATE). */
      flags: number;
      /** The AUTHENTICATE carried a MIC (MsvAvFlags), which was checked: a client of this age also does mechListMIC. */
      hadMic: boolean;
    }
  | { ok: false; reason: 'logon-failure' | 'invalid-token'; message: string };

/**
 * The control-plane account an AUTHENTICATE names: its UserName, or the part before '@' of a user
 * principal name ("alice@dittofs" with an empty DomainName, as Windows sends what the user typed).
 * The NTLMv2 response is still checked against the UserName as sent, which is what the client keyed.
 */
export function accountName(auth: { user: string; domain: string }): string {
  const at = auth.user.indexOf('@');
  return auth.domain === '' && at > 0 ? auth.user.slice(0, at) : auth.user;
}

/** MS-NLMP 3.2.5.1.1: the CHALLENGE flags for a client's NEGOTIATE flags. */
export function challengeFlags(clientFlags: number): number {
  let flags =
    NTLMSSP.NEGOTIATE_NTLM |
    NTLMSSP.NEGOTIATE_TARGET_INFO |
    NTLMSSP.TARGET_TYPE_SERVER |
    NTLMSSP.NEGOTIATE_VERSION |
    (clientFlags & ECHOED);
  flags |= clientFlags & NTLMSSP.NEGOTIATE_UNICODE ? NTLMSSP.NEGOTIATE_UNICODE : NTLMSSP.NEGOTIATE_OEM;
  return flags >>> 0;
}

export class NtlmServer {
  private negotiate: NtlmNegotiate | null = null;
  private challenge: Buffer | null = null;
  private serverChallenge: Buffer | null = null;
  private flags = 0;

  constructor(
    private readonly dir: SmbUserDirectory,
    private readonly opts: SmbAuthOptions,
    /** Tests pin the challenge and the clock; the server never does. */
    private readonly testing: { serverChallenge?: Buffer; now?: () => number } = {},
  ) {}

  /** The CHALLENGE_MESSAGE answering `negotiate` (a random 8-byte server challenge, TargetInfo with a timestamp). */
  challengeFor(negotiate: NtlmNegotiate): Buffer {
    const serverName = this.opts.serverName.toUpperCase();
    const domain = this.opts.domain.toUpperCase();
    // Copied: the MIC is checked against it a request later, and its SESSION_SETUP frame may be a
    // pooled buffer that another request has overwritten by then.
    this.negotiate = { flags: negotiate.flags, raw: Buffer.from(negotiate.raw) };
    this.flags = challengeFlags(negotiate.flags);
    this.serverChallenge = this.testing.serverChallenge ?? randomBytes(8);
    const u16 = (s: string): Buffer => Buffer.from(s, 'utf16le');
    const targetInfo = encodeAvPairs([
      { id: MSV_AV.NB_DOMAIN_NAME, value: u16(domain) },
      { id: MSV_AV.NB_COMPUTER_NAME, value: u16(serverName) },
      { id: MSV_AV.DNS_DOMAIN_NAME, value: u16(domain.toLowerCase()) },
      { id: MSV_AV.DNS_COMPUTER_NAME, value: u16(serverName.toLowerCase()) },
      { id: MSV_AV.TIMESTAMP, value: fileTime((this.testing.now ?? Date.now)()) },
    ]);
    this.challenge = encodeChallenge({ flags: this.flags, serverChallenge: this.serverChallenge, targetName: serverName, targetInfo });
    return this.challenge;
  }

  /** MS-NLMP 3.2.5.1.2 / 3.3.2: checks an AUTHENTICATE_MESSAGE. Never throws. */
  async authenticate(raw: Buffer): Promise<NtlmOutcome> {
    if (this.negotiate === null || this.challenge === null || this.serverChallenge === null)
      return { ok: false, reason: 'invalid-token', message: 'NTLMSSP AUTHENTICATE before NEGOTIATE' };
    let auth: NtlmAuthenticate;
    try {
      auth = decodeAuthenticate(raw);
    } catch (err) {
      return { ok: false, reason: 'invalid-token', message: (err as Error).message };
    }
    const flags = (this.flags & auth.flags) >>> 0;
    const who = JSON.stringify(auth.domain === '' ? auth.user : `${auth.domain}\\${auth.user}`);

    const lmEmpty = auth.lmResponse.length === 0 || (auth.lmResponse.length === 1 && auth.lmResponse[0] === 0);
    if (auth.user === '' && auth.ntResponse.length === 0 && lmEmpty) {
      if (!this.opts.allowGuest) return { ok: false, reason: 'logon-failure', message: 'anonymous logon refused: guest access is off' };
      const key = this.keyExchange(flags, Buffer.alloc(16), auth);
      if (typeof key === 'string') return { ok: false, reason: 'invalid-token', message: key };
      return { ok: true, user: { ...ANONYMOUS_USER, gids: [] }, sessionKey: key, anonymous: true, flags, hadMic: false };
    }
    if (auth.ntResponse.length === 0)
      return {
        ok: false,
        reason: 'logon-failure',
        message: `LM-only response from ${who} (no NT response) refused: only NTLMv2 is accepted`,
      };
    if (auth.ntResponse.length === 24)
      return { ok: false, reason: 'logon-failure', message: `NTLMv1 response from ${who} refused: only NTLMv2 is accepted` };
    const v2 = splitNtlmV2Response(auth.ntResponse);
    if (v2 === null) return { ok: false, reason: 'invalid-token', message: `malformed NTLMv2 response from ${who}` };
    // The client's AV_PAIR list is checked before anything else (Samba bug 14932: a list that does
    // not end with MsvAvEOL is INVALID_PARAMETER, whoever the user and whatever the password).
    let avFlags = 0;
    try {
      for (const p of decodeAvPairs(v2.avPairs)) if (p.id === MSV_AV.FLAGS && p.value.length >= 4) avFlags = p.value.readUInt32LE(0);
    } catch (err) {
      return { ok: false, reason: 'invalid-token', message: `NTLMv2 response of ${who}: ${(err as Error).message}` };
    }

    let entry: Awaited<ReturnType<SmbUserDirectory['lookup']>>;
    try {
      entry = await this.dir.lookup(accountName(auth));
      if (entry === null) {
        const why = this.dir.describeMissing ? await this.dir.describeMissing(accountName(auth)) : 'no such user, or no SMB password';
        return { ok: false, reason: 'logon-failure', message: `logon of ${who} refused: ${why}` };
      }
    } catch (err) {
      return { ok: false, reason: 'logon-failure', message: `logon of ${who} failed: user directory: ${(err as Error).message}` };
    }

    // The client keyed its response with the domain it typed (or none); Windows and Samba accept
    // the ones it may have meant: as sent, upper-cased, empty, and this server's name.
    const domains = [...new Set([auth.domain, auth.domain.toUpperCase(), '', this.opts.serverName, this.opts.serverName.toUpperCase()])];
    let responseKey: Buffer | null = null;
    for (const d of domains) {
      const k = ntowfv2(entry.ntHash, auth.user, d);
      if (safeEqual(ntProofStr(k, this.serverChallenge, v2.clientBlob), v2.ntProofStr)) {
        responseKey = k;
        break;
      }
    }
    if (responseKey === null) return { ok: false, reason: 'logon-failure', message: `logon of ${who} refused: wrong password` };

    const key = this.keyExchange(flags, sessionBaseKey(responseKey, v2.ntProofStr), auth);
    if (typeof key === 'string') return { ok: false, reason: 'invalid-token', message: `${key} (${who})` };

    const hadMic = (avFlags & MSV_AV_FLAG_MIC_PRESENT) !== 0;
    if (hadMic) {
      if (auth.micOffset < 0)
        return { ok: false, reason: 'invalid-token', message: `AUTHENTICATE of ${who} announces a MIC but has no room for one` };
      const mic = computeMic(key, this.negotiate.raw, this.challenge, auth.raw, auth.micOffset);
      if (!safeEqual(mic, auth.raw.subarray(auth.micOffset, auth.micOffset + 16)))
        return { ok: false, reason: 'logon-failure', message: `logon of ${who} refused: the NTLM MIC does not match (messages altered?)` };
    }
    return { ok: true, user: { ...entry.user, gids: [...entry.user.gids] }, sessionKey: key, anonymous: false, flags, hadMic };
  }

  /** KEY_EXCH (3.2.5.1.2): the exported session key, or why the EncryptedRandomSessionKey is unusable. */
  private keyExchange(flags: number, keyExchangeKey: Buffer, auth: NtlmAuthenticate): Buffer | string {
    const enc = auth.encryptedRandomSessionKey;
    if (!(flags & NTLMSSP.NEGOTIATE_KEY_EXCH) || enc.length === 0) return exportedSessionKey(keyExchangeKey, null);
    if (enc.length !== 16) return `EncryptedRandomSessionKey of ${enc.length} bytes (16 expected)`;
    return exportedSessionKey(keyExchangeKey, enc);
  }
}
