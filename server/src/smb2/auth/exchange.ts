// One SESSION_SETUP authentication (MS-SMB2 3.3.5.5.3): the security buffers of successive
// SESSION_SETUP requests fed to step(), either raw NTLMSSP (Linux cifs) or NTLMSSP inside SPNEGO
// (smbclient, macOS, Windows). step() never throws: a malformed token is 'invalid-token'.
import { NTLM_MESSAGE, NTLMSSP_SIGNATURE, decodeAuthenticate, decodeNegotiate, ntlmMessageType } from './ntlm.js';
import { NtlmSigner } from './ntlm-crypto.js';
import { NtlmServer, accountName, type NtlmOutcome } from './ntlm-server.js';
import { NEG_STATE, OID, decodeInitialToken, decodeNegTokenResp, encodeNegTokenInit2, encodeNegTokenResp } from './spnego.js';
import { AuthTokenError, type AuthStep, type SmbAuthOptions, type SmbUserDirectory } from './types.js';

/** Security buffer for the SMB2 NEGOTIATE response: SPNEGO negTokenInit2 offering NTLMSSP. */
export function negotiateSecurityBlob(): Buffer {
  return encodeNegTokenInit2([OID.NTLMSSP]);
}

/**
 * What the later legs of a SPNEGO exchange need of the client's negTokenInit: the MechTypeList DER
 * (the mechListMIC covers it) and whether NTLMSSP was not its first choice. Nothing more is kept:
 * an exchange lives as long as its session is in progress, and unauthenticated clients make them.
 */
interface SpnegoContext {
  mechTypesDer: Buffer;
  micRequired: boolean;
}

type State =
  | { at: 'start' }
  /** SPNEGO: NTLMSSP chosen, waiting for the client's NTLM NEGOTIATE in a negTokenResp. */
  | { at: 'spnego-negotiate'; spnego: SpnegoContext }
  | { at: 'authenticate'; spnego: SpnegoContext | null }
  | { at: 'finished' };

export class SmbAuthExchange {
  private state: State = { at: 'start' };
  private readonly ntlm: NtlmServer;
  private readonly refuseAccount: SmbAuthOptions['refuseAccount'];
  private emptyStarts = 0;
  /** The account the AUTHENTICATE named, lower case ('' for anonymous), once one arrived: what logon limits count. */
  account: string | null = null;

  constructor(dir: SmbUserDirectory, opts: SmbAuthOptions, testing: ConstructorParameters<typeof NtlmServer>[2] = {}) {
    this.ntlm = new NtlmServer(dir, opts, testing);
    this.refuseAccount = opts.refuseAccount;
  }

  /** Feed one SESSION_SETUP security buffer: SPNEGO (0x60 / 0xa1) or raw NTLMSSP ("NTLMSSP\0"). */
  async step(securityBuffer: Buffer): Promise<AuthStep> {
    let result: AuthStep;
    try {
      result = await this.advance(securityBuffer);
    } catch (err) {
      const message = err instanceof AuthTokenError ? err.message : `unexpected error: ${(err as Error).message}`;
      result = { kind: 'failed', reason: 'invalid-token', message };
    }
    if (result.kind !== 'continue') this.state = { at: 'finished' };
    return result;
  }

  private async advance(buf: Buffer): Promise<AuthStep> {
    const state = this.state;
    const raw = isRawNtlm(buf);
    switch (state.at) {
      case 'finished':
        return invalid('this authentication exchange is already finished');
      case 'start':
        if (buf.length === 0) {
          // MS-SMB2 3.3.5.5.3: a client may start with an empty buffer and wait for the server's
          // mechanism list (the one of the NEGOTIATE response). Once.
          if (this.emptyStarts++ > 0) return invalid('second empty security buffer');
          return { kind: 'continue', token: negotiateSecurityBlob() };
        }
        if (raw) {
          const challenge = this.ntlm.challengeFor(decodeNegotiateOnly(buf));
          this.state = { at: 'authenticate', spnego: null };
          return { kind: 'continue', token: challenge };
        }
        return this.spnegoStart(buf);
      case 'spnego-negotiate': {
        if (raw) return invalid('raw NTLMSSP in the middle of a SPNEGO exchange');
        const resp = decodeNegTokenResp(buf);
        if (resp.responseToken === null) return invalid('negTokenResp without the NTLMSSP NEGOTIATE');
        const challenge = this.ntlm.challengeFor(decodeNegotiateOnly(resp.responseToken));
        this.state = { at: 'authenticate', spnego: state.spnego };
        return { kind: 'continue', token: encodeNegTokenResp({ negState: NEG_STATE.ACCEPT_INCOMPLETE, responseToken: challenge }) };
      }
      case 'authenticate':
        if (state.spnego === null) {
          if (!raw) return invalid('SPNEGO token in the middle of a raw NTLMSSP exchange');
          return this.finish(await this.authenticate(buf), Buffer.alloc(0)); // raw NTLMSSP ends with an empty buffer
        }
        return this.spnegoAuthenticate(buf, state.spnego);
    }
  }

  /** RFC 4178 §5: the client's negTokenInit; NTLMSSP is chosen when the client offers it. */
  private spnegoStart(buf: Buffer): AuthStep {
    const init = decodeInitialToken(buf);
    const index = init.mechTypes.indexOf(OID.NTLMSSP);
    if (index < 0) return invalid(`the client offers no NTLMSSP (mechTypes ${init.mechTypes.join(', ') || 'empty'})`);
    // A mechanism other than the client's first choice must be confirmed by mechListMIC (§5 d).
    const micRequired = index !== 0;
    const spnego: SpnegoContext = { mechTypesDer: init.mechTypesDer, micRequired };
    if (index === 0 && init.mechToken !== null) {
      const challenge = this.ntlm.challengeFor(decodeNegotiateOnly(init.mechToken));
      this.state = { at: 'authenticate', spnego };
      return {
        kind: 'continue',
        token: encodeNegTokenResp({ negState: NEG_STATE.ACCEPT_INCOMPLETE, supportedMech: OID.NTLMSSP, responseToken: challenge }),
      };
    }
    // The optimistic token (if any) is for another mechanism: choose NTLMSSP and ask for its first token.
    this.state = { at: 'spnego-negotiate', spnego };
    return {
      kind: 'continue',
      token: encodeNegTokenResp({
        negState: micRequired ? NEG_STATE.REQUEST_MIC : NEG_STATE.ACCEPT_INCOMPLETE,
        supportedMech: OID.NTLMSSP,
      }),
    };
  }

  private async spnegoAuthenticate(buf: Buffer, s: SpnegoContext): Promise<AuthStep> {
    if (isRawNtlm(buf)) return invalid('raw NTLMSSP in the middle of a SPNEGO exchange');
    const resp = decodeNegTokenResp(buf);
    if (resp.responseToken === null) return invalid('negTokenResp without the NTLMSSP AUTHENTICATE');
    const outcome = await this.authenticate(resp.responseToken);
    if (!outcome.ok || outcome.anonymous) return this.finish(outcome, encodeNegTokenResp({ negState: NEG_STATE.ACCEPT_COMPLETED }));
    // RFC 4178 §5: check the client's mechListMIC over the mechTypes as it sent them and answer with
    // ours; send none when the client sent none (Windows rejects an unsolicited one). After a
    // downgrade from the client's first choice the MIC is mandatory, unless the client is too old to
    // do it (no NTLM MIC either: what Samba calls the "new SPNEGO" feature).
    const clientMic = resp.mechListMIC;
    if (clientMic === null) {
      if (s.micRequired && outcome.hadMic)
        return { kind: 'failed', reason: 'logon-failure', message: 'SPNEGO: mechListMIC missing after a mechanism downgrade' };
      return this.finish(outcome, encodeNegTokenResp({ negState: NEG_STATE.ACCEPT_COMPLETED }));
    }
    const fromClient = new NtlmSigner(outcome.sessionKey, outcome.flags, 'client-to-server');
    if (!fromClient.verify(s.mechTypesDer, clientMic))
      return {
        kind: 'failed',
        reason: 'logon-failure',
        message: `SPNEGO: mechListMIC of ${JSON.stringify(outcome.user.name)} does not match`,
      };
    const ours = new NtlmSigner(outcome.sessionKey, outcome.flags, 'server-to-client').sign(s.mechTypesDer);
    return this.finish(outcome, encodeNegTokenResp({ negState: NEG_STATE.ACCEPT_COMPLETED, mechListMIC: ours }));
  }

  private async authenticate(token: Buffer): Promise<NtlmOutcome> {
    try {
      this.account = accountName(decodeAuthenticate(token)).toLowerCase();
    } catch {
      // Malformed: authenticate() says why, and no account was named.
    }
    // Before the response is checked: a refused account costs no directory look-up or HMAC.
    const refused = this.account ? (this.refuseAccount?.(this.account) ?? null) : null;
    if (refused !== null) return { ok: false, reason: 'logon-failure', message: refused };
    return this.ntlm.authenticate(token);
  }

  private finish(outcome: NtlmOutcome, token: Buffer): AuthStep {
    if (!outcome.ok) return { kind: 'failed', reason: outcome.reason, message: outcome.message };
    return { kind: 'done', token, user: outcome.user, sessionKey: outcome.sessionKey, guest: false, anonymous: outcome.anonymous };
  }
}

function isRawNtlm(buf: Buffer): boolean {
  return buf.length >= 8 && buf.subarray(0, 8).equals(NTLMSSP_SIGNATURE);
}

function decodeNegotiateOnly(buf: Buffer): ReturnType<typeof decodeNegotiate> {
  const type = ntlmMessageType(buf);
  if (type !== NTLM_MESSAGE.NEGOTIATE) throw new AuthTokenError(`expected an NTLMSSP NEGOTIATE message, got type ${type}`);
  return decodeNegotiate(Buffer.from(buf));
}

function invalid(message: string): AuthStep {
  return { kind: 'failed', reason: 'invalid-token', message };
}
