// One SMB2 connection: splits each frame into its compound elements (MS-SMB2 3.3.5.2.7), checks
// credits and signatures, dispatches the commands, and sends the responses back as one compound
// frame, each element signed on its own (3.3.4.1.3). NEGOTIATE, SESSION_SETUP, LOGOFF,
// TREE_CONNECT, TREE_DISCONNECT, ECHO, CANCEL and IOCTL are answered here; the file commands in
// files.ts.
import { createHash, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { DataObserver, RequestObserver } from '../obs/metrics.js';
import { endSpan, runInSpan, SpanKind, startSpan, tracingEnabled } from '../obs/tracing.js';
import type { FileService } from '../vfs/service.js';
import { DecodeError } from '../wire/errors.js';
import type { Identity } from '../vfs/types.js';
import { nowTimespec } from '../vfs/types.js';
import {
  negotiateSecurityBlob,
  signatureOf,
  smb30SigningKey,
  smb311SigningKey,
  SmbAuthExchange,
  type SmbUser,
  type SmbUserDirectory,
  verifySignature,
} from './auth/index.js';
import { decodeHeader, fromUtf16, HEADER_SIZE, SMB1_MAGIC, SmbReader, SmbWriter, writeHeader, type Smb2Header } from './codec.js';
import {
  Capabilities,
  Command,
  commandName,
  CREDIT_UNIT,
  Dialect,
  FileAttributes,
  FILE_ALL_ACCESS,
  FILE_ID_ANY,
  FILE_READ_ACCESS,
  Fsctl,
  HeaderFlags,
  isSmb3,
  NegotiateContextType,
  PREAUTH_SHA512,
  SecurityMode,
  SERVED_DIALECTS,
  SigningAlgorithmId,
  SessionFlags,
  ShareType,
} from './constants.js';
import { AsyncTable, type FinalResponse, type PendingOp } from './async.js';
import { CreditWindow } from './credits.js';
import * as files from './files.js';
import { decodeLock, lock, LockFlags, releaseLocks } from './lock.js';
import { announceDeletePending, decodeChangeNotify, NotifyHub, publishModified, setInfoFilter, WRITE_FILTER } from './notify.js';
import * as oplock from './oplock.js';
import {
  decodeClose,
  decodeCreate,
  decodeEmpty,
  decodeFlush,
  decodeIoctl,
  decodeNegotiate,
  decodeQueryDirectory,
  decodeQueryInfo,
  decodeRead,
  decodeSessionSetup,
  decodeSetInfo,
  decodeTreeConnect,
  decodeValidateNegotiate,
  decodeWrite,
  encodeValidateNegotiateResponse,
  writeEmptyBody,
  writeErrorBody,
  writeIoctlResponse,
  writeNegotiateResponse,
  writeOutputResponse,
  writeReadResponse,
  writeSessionSetupResponse,
  writeSetInfoResponse,
  writeTreeConnectResponse,
  writeWriteResponse,
  writeCloseResponse,
  writeCreateResponse,
  type CreateRequest,
  type NegotiateContext,
} from './messages.js';
import { fileIdOf, newSession, Open, openIdOf, type Session, type Tree } from './state.js';
import { SrvsvcPipe } from './srvsvc.js';
import { ioctl as smbIoctl } from './ioctl.js';
import { defaultSessionTable, SessionTable, type SessionOwner } from './sessions.js';
import { LogonLimiter } from './auth/logon-limiter.js';
import {
  type Cipher,
  CipherId,
  cipherName,
  DecryptError,
  decodeTransformHeader,
  decryptMessage,
  encryptMessage,
  SERVED_CIPHERS,
  sessionCipher,
} from './auth/encryption.js';
import { type DurableTable, durableTableOf } from './durable.js';
import { isBodyStatus, NtStatus, ntStatusOf, SmbStatusError, statusLabel } from './status.js';
import { smbShareKey, smbShareName } from './share-name.js';

/**
 * How a connection's handshake goes, for the connection limits (wire/limits.ts): `progressed` at a
 * NEGOTIATE answered and at each SESSION_SETUP leg that asks for the next (a logon may wait for its
 * user to type a password meanwhile); `established` at a session set up. Requests that bring no
 * session nearer (ECHO, a failed SESSION_SETUP) tell nothing.
 */
export interface SmbHandshake {
  progressed(): void;
  established(): void;
}

const NO_HANDSHAKE: SmbHandshake = { progressed: () => undefined, established: () => undefined };

export interface SmbEngineOptions {
  fs: FileService;
  directory: SmbUserDirectory;
  /** 16 bytes, stable for the data directory (MS-SMB2 3.3.1.5 ServerGuid). */
  serverGuid: Buffer;
  /** The server requires every session to sign (adapters.smb.signing_required). */
  signingRequired: boolean;
  /**
   * Every session must encrypt (adapters.smb.encryption_required): SESSION_SETUP says so
   * (ENCRYPT_DATA), refuses a client that cannot (2.x, no common cipher, guest or anonymous), and
   * an unencrypted request of such a session is refused (ACCESS_DENIED).
   */
  encryptionRequired?: boolean;
  /** Opens one connection may hold (default 16,384). */
  maxOpensPerConnection?: number;
  /** How long a break waits for the client's acknowledgment (default 35 s, MS-SMB2 3.3.2.1). */
  oplockBreakTimeoutMs?: number;
  /** NetBIOS-style name and domain the NTLM challenge names. */
  serverName: string;
  domain: string;
  log?: Logger;
  observer?: RequestObserver;
  data?: DataObserver;
  /** Sessions of every connection (PreviousSessionId); default: one table for the process. */
  sessions?: SessionTable;
  /** Durable opens kept without a connection (SmbServer makes one); default: one per file service. */
  durable?: DurableTable;
  /** Failed logons per client address and user (SmbServer makes one); default: one for the process. */
  logons?: LogonLimiter;
}

const defaultLogonLimiter = new LogonLimiter();
/** Why a logon past the failed-logon limits is refused (logged once per limit window). */
const LOGONS_LIMITED = 'too many failed logons for this user from this address';
/** Requests refused for their signature are logged at the first and every this many on a connection. */
export const BAD_SIGNATURE_LOG_EVERY = 1000;

/** Statuses that are the server's failure (an ERROR span), as opposed to an answer such as OBJECT_NAME_NOT_FOUND. */
const SERVER_FAILURES: ReadonlySet<number> = new Set([NtStatus.INTERNAL_ERROR, NtStatus.UNEXPECTED_IO_ERROR]);

/** MS-SMB2 3.3.5.4: sizes offered per dialect (2.0.2 has no multi-credit requests). */
const LIMITS_202 = 65536;
const LIMITS_21 = 1024 * 1024;
/** FILETIME 0 (a pipe has no times). */
const ZERO_TIME = Object.freeze({ sec: -11644473600, nsec: 0 });
/** MS-SMB2 2.2.32.6 VALIDATE_NEGOTIATE_INFO Response: Capabilities, Guid, SecurityMode, Dialect. */
const VALIDATE_NEGOTIATE_RESPONSE_SIZE = 24;
/** Zeros that pad a compound's last response when its data goes out as a buffer of its own. */
const PADDING = Buffer.alloc(8);
/** Elements in one compound frame at most. */
const MAX_COMPOUND = 128;
/** Sessions per connection, trees per session, opens per connection at most. */
const MAX_SESSIONS = 64;
/** endSession's reason for a logon or re-authentication that failed: its durable opens and encryption keys go too. */
const AUTHENTICATION_FAILED = 'authentication failed';
/**
 * Sessions of a connection still authenticating at most (SessionId 0 makes one, unauthenticated):
 * a client logs on once, Windows twice at a time (Explorer and an elevated prompt). Each keeps an
 * exchange until it ends, a bounded one (spnego.ts, ntlm.ts limits): this bounds how many.
 */
const MAX_LOGONS_IN_PROGRESS = 8;
const MAX_TREES = 256;
const MAX_OPENS = 16384;

/** A response element: its header fields and body, then any data buffers after the body. */
interface Reply {
  header: Omit<Smb2Header, 'signature' | 'asyncId'>;
  body: Buffer;
  data: Buffer | null;
  /** The session whose key signs it (null: unsigned). */
  signWith: Session | null;
  /** Set when the request goes async (3.3.4.2): this reply becomes its interim response. */
  pending?: PendingOp;
  /** Nonzero: an async header with this AsyncId. */
  asyncId?: number;
  /** Given the message exactly as it goes out (3.1.1: NEGOTIATE and SESSION_SETUP feed the preauth hash). */
  onSent?: (msg: Buffer) => void;
}

/** What related elements inherit from the previous one (3.3.5.2.7.2). */
interface ChainState {
  sessionId: number;
  treeId: number;
  fileId: Buffer | null;
  /** A failed CREATE's status, answered to the related elements that follow it. */
  failed: number | null;
  /** The element is the last of its frame (only the last may go async: 3.3.4.2). */
  last: boolean;
  /** The session whose key the frame came encrypted under (its replies go out encrypted so); null: in the clear. */
  encryptedBy: Session | null;
  /** The frame holds more than one element. */
  compound: boolean;
}

/** The user of a session that may connect a disk share; ACCESS_DENIED for an anonymous or guest one. */
function namedUser(session: Session, shareName: string): SmbUser {
  if (session.anonymous || session.guest || session.user === null)
    throw new SmbStatusError(NtStatus.ACCESS_DENIED, `an anonymous session cannot connect share ${shareName}`);
  return session.user;
}

export class SmbConnection implements SessionOwner {
  private dialect: number | null = null;
  /** 3.1.1: Connection.PreauthIntegrityHashValue, SHA-512 over NEGOTIATE request and response. */
  private preauthHash: Buffer | null = null;
  private clientGuid: Buffer = Buffer.alloc(16);
  private clientSecurityMode = 0;
  private clientCapabilities = 0;
  /** The Capabilities the NEGOTIATE response gave (VALIDATE_NEGOTIATE_INFO answers the same). */
  private capabilities = 0;
  /** 3.1.1: NEGOTIATE chose AES-128-GMAC for signing (SIGNING_CAPABILITIES); else CMAC at 3.x. */
  private gmac = false;
  /** 3.x: the cipher sessions encrypt with (3.0 / 3.0.2: AES-128-CCM when the client can; 3.1.1: negotiated); null: none. */
  private cipher: Cipher | null = null;
  private readonly credits = new CreditWindow();
  private readonly sessions = new Map<number, Session>();
  /**
   * Sessions that encrypted and ended (a LOGOFF, a reconnect elsewhere), newest last (at most
   * MAX_SESSIONS): a client may still send an encrypted request for one (smbtorture: a second
   * LOGOFF in connect, a request on the old connection in session.reconnect1 and
   * durable-open.reopen1a), which is decrypted with its key and answered, encrypted,
   * USER_SESSION_DELETED, as it would be in the clear (smbd 4.17 drops the connection instead).
   */
  private readonly ended = new Map<number, Session>();
  private readonly opens = new Map<number, Open>();
  /** Named pipe opens on IPC$ (srvsvc only), by open id. */
  private readonly pipes = new Map<number, { id: number; fileId: Buffer; tree: Tree; pipe: SrvsvcPipe }>();
  private nextPipeId = 2 ** 40;
  private warnedMalformed = false;
  /** Requests answered STATUS_PENDING and not yet finally (Connection.AsyncCommandList). */
  private readonly async = new AsyncTable((op, final) => this.sendFinal(op, final));
  /** CHANGE_NOTIFY watches of this connection's opens (made on first use). */
  private notifyHub: NotifyHub | null = null;
  closed = false;
  private readonly table: SessionTable;
  private readonly logons: LogonLimiter;
  /** CREATEs started and not settled (they count against MAX_OPENS). */
  private creating = 0;
  /** Requests refused for a bad signature on this connection (logged at the first, then every BAD_SIGNATURE_LOG_EVERY). */
  private badSignatures = 0;

  constructor(
    private readonly opts: SmbEngineOptions,
    /** Sends one whole response frame's parts (without the Direct TCP header). */
    private readonly send: (parts: Buffer[]) => void,
    /** Closes the connection (a framing or sequence error). */
    private readonly abortConnection: (why: string) => void,
    private readonly log?: Logger,
    /** The client's IP address: failed logons are counted per address (and user). */
    private readonly clientAddress = '',
    /** Told how the connection's handshake goes (wire/limits.ts). */
    private readonly handshake: SmbHandshake = NO_HANDSHAKE,
  ) {
    this.caching = {
      clientGuid: this.clientGuid,
      leasing: false,
      leaseV2: false,
      breakTimeoutMs: this.opts.oplockBreakTimeoutMs ?? oplock.DEFAULT_BREAK_TIMEOUT_MS,
      notify: (command, body, session) => {
        if (this.closed) return false;
        this.send(this.notification(command, body, session ?? null));
        return true;
      },
    };
    this.table = opts.sessions ?? defaultSessionTable;
    this.logons = opts.logons ?? defaultLogonLimiter;
    this.durable = opts.durable ?? durableTableOf(opts.fs);
  }

  private readonly durable: DurableTable;

  /**
   * Set by abort(): nothing more of the connection runs, not the rest of a compound, not a frame
   * already read. `closed` comes only with the socket's 'close', after the next await.
   */
  private aborted = false;

  /** Ends the connection for a protocol error (MS-SMB2 says disconnect). */
  private abort(why: string): void {
    this.aborted = true;
    this.abortConnection(why);
  }

  /** How oplock and lease breaks reach this connection's client (unsolicited, MessageId all ones). */
  private readonly caching: oplock.CachingContext;
  /** Forgets this connection as a channel of its client for v2 lease breaks (3.x). */
  private dropLeaseChannel: (() => void) | null = null;

  private get largeMtu(): boolean {
    return this.dialect !== null && (serverCapabilities(this.dialect) & Capabilities.LARGE_MTU) !== 0;
  }

  /** MS-SMB2 2.2.4 the SecurityMode NEGOTIATE (and VALIDATE_NEGOTIATE_INFO) answers. */
  private get securityMode(): number {
    return SecurityMode.SIGNING_ENABLED | (this.opts.signingRequired ? SecurityMode.SIGNING_REQUIRED : 0);
  }

  private get maxIo(): number {
    return this.largeMtu ? LIMITS_21 : LIMITS_202;
  }

  /**
   * MS-SMB2 3.3.5.2.1.1: the message an encrypted frame (TRANSFORM_HEADER) holds, decrypted and
   * authenticated under the key of the session it names, and that session; null when it does not
   * open (no such session here, no key, a bad header or tag): the connection is then dropped.
   */
  unseal(frame: Buffer): { message: Buffer; session: Session } | null {
    if (this.aborted) return null;
    const t = decodeTransformHeader(frame);
    if (t === null) {
      this.abort('malformed SMB2 TRANSFORM_HEADER');
      return null;
    }
    // A session of this connection that is valid or ended (see `ended`); one with a cipher is valid.
    const s = this.sessions.get(t.sessionId) ?? this.ended.get(t.sessionId);
    if (s?.cipher == null) {
      this.abort(
        s === undefined
          ? `an encrypted message for session ${t.sessionId}, which has no encryption key here (no such session on this connection)`
          : `an encrypted message for session ${t.sessionId}, which has no encryption key here (it negotiated no cipher)`,
      );
      return null;
    }
    try {
      return { message: decryptMessage(s.cipher, frame, t), session: s };
    } catch (e) {
      this.abort(
        `encrypted message refused: ${e instanceof DecryptError ? e.message : String(e)} (session ${t.sessionId}, ${cipherName(s.cipher.cipher)})`,
      );
      return null;
    }
  }

  /**
   * Handles one Direct TCP frame: resolves once its responses are handed to `send`. A frame that
   * came encrypted was opened first (unseal, by the listener as it read it): `encryptedBy` is the
   * session whose key it came under.
   */
  async handleFrame(frame: Buffer, encryptedBy: Session | null = null): Promise<void> {
    if (this.aborted) return;
    if (encryptedBy === null && frame.length >= 4 && frame.readUInt32LE(0) === SMB1_MAGIC) return this.smb1Negotiate(frame);
    const elements: { header: Smb2Header; msg: Buffer }[] = [];
    let at = 0;
    try {
      for (;;) {
        const header = decodeHeader(frame, at);
        const end = header.nextCommand === 0 ? frame.length : at + header.nextCommand;
        if (header.nextCommand !== 0 && (header.nextCommand % 8 !== 0 || header.nextCommand < HEADER_SIZE || end > frame.length))
          throw new DecodeError('DITTOFS_DECODE_INVALID', `bad NextCommand ${header.nextCommand}`);
        elements.push({ header, msg: frame.subarray(at, end) });
        if (header.nextCommand === 0) break;
        if (elements.length >= MAX_COMPOUND) throw new DecodeError('DITTOFS_DECODE_TOO_LARGE', 'too many compound elements');
        at = end;
      }
    } catch (e) {
      this.abort(`malformed SMB2 frame: ${(e as Error).message}`);
      return;
    }
    const replies: Reply[] = [];
    const chain: ChainState = {
      sessionId: 0,
      treeId: 0,
      fileId: null,
      failed: null,
      last: false,
      compound: elements.length > 1,
      encryptedBy,
    };
    for (let i = 0; i < elements.length; i++) {
      const el = elements[i]!;
      chain.last = i === elements.length - 1;
      const reply = await this.element(el.header, el.msg, chain, i === 0);
      if (this.closed || this.aborted) {
        reply?.pending?.abort('disconnected');
        return;
      }
      if (reply) replies.push(reply);
    }
    if (replies.length > 0) this.send(this.assemble(replies, elements.length > 1, encryptedBy ?? this.mustEncrypt(replies[0]!.header)));
    // A final response that came while the interim was being built goes out after it.
    for (const r of replies) r.pending?.interimDone();
  }

  /**
   * Registers the request being handled as pending (MS-SMB2 3.3.4.2); the handler arranges for
   * op.complete() and returns STATUS_PENDING. Only the last element of a compound may go async
   * (an earlier one is failed with INTERNAL_ERROR, as Samba does); past the per-connection cap the
   * request fails with INSUFFICIENT_RESOURCES.
   */
  private goAsync(h: Smb2Header, reply: Reply, chain: ChainState, session: Session, tree: Tree | null, open: Open | null): PendingOp {
    if (!chain.last) throw new SmbStatusError(NtStatus.INTERNAL_ERROR, 'only the last request of a compound may go async');
    const op = this.async.begin({
      command: h.command,
      messageId: h.messageId,
      creditCharge: h.creditCharge,
      session,
      tree,
      open,
      sign: reply.signWith !== null,
      encrypt: chain.encryptedBy !== null,
    });
    if (!op) throw new SmbStatusError(NtStatus.INSUFFICIENT_RESOURCES, 'too many pending requests on the connection');
    reply.pending = op;
    return op;
  }

  /** MS-SMB2 3.3.4.3/3.3.4.4 the final response of an async request: async header, no credits, signed like the request. */
  private sendFinal(op: PendingOp, final: FinalResponse): void {
    const req = op.request;
    const seconds = Number(process.hrtime.bigint() - op.started) / 1e9;
    this.opts.observer?.requestDone('smb', commandName(req.command), statusLabel(final.status), seconds);
    if (this.closed) return;
    let body = final.body;
    let data = final.data;
    if (body === null) {
      const e = new SmbWriter(9);
      writeErrorBody(e);
      body = e.finish();
      data = null;
    }
    const reply: Reply = {
      header: {
        creditCharge: req.creditCharge,
        status: final.status,
        command: req.command,
        creditRequest: 0,
        flags: HeaderFlags.SERVER_TO_REDIR | HeaderFlags.ASYNC_COMMAND,
        nextCommand: 0,
        messageId: req.messageId,
        treeId: 0,
        sessionId: req.session.id,
      },
      body,
      data,
      signWith: req.sign && !req.encrypt ? req.session : null,
      asyncId: op.asyncId,
    };
    this.send(this.assemble([reply], false, req.encrypt ? req.session : this.mustEncrypt(reply.header)));
  }

  /**
   * MS-SMB2 3.3.4.1.4: a response to a request that came in the clear still goes out encrypted
   * when its session must encrypt (Session.EncryptData), but for NEGOTIATE and SESSION_SETUP: the
   * refusal of an unencrypted request too.
   */
  private mustEncrypt(h: Reply['header']): Session | null {
    if (h.command === Command.NEGOTIATE || h.command === Command.SESSION_SETUP || h.sessionId === 0) return null;
    const s = this.sessions.get(h.sessionId);
    return s?.encryptData && s.cipher ? s : null;
  }

  /**
   * An unsolicited notification's frame, always in the clear. An oplock break names its open's
   * session (MS-SMB2 3.3.4.6); a lease break names none (3.3.4.7). Neither is encrypted, not even
   * for a session that must encrypt: what smbd does since 4.4 (Samba bug 11570), because Windows
   * clients were seen to drop encrypted oplock breaks, which would leave the conflicting open
   * waiting out the acknowledgment timer. The break carries a FileId and an oplock level, no data;
   * the client's acknowledgment must still come encrypted.
   */
  private notification(command: number, body: Buffer, session: Session | null): Buffer[] {
    return [oplock.notificationFrame(command, body, session?.id ?? 0)];
  }

  /**
   * Pads, links, signs and lays out the replies of one frame. The replies to a compound request
   * are each padded to 8 bytes, the last one too (what Windows and smbd send, and what clients
   * such as smbtorture's compound-padding check); a lone response is not padded. With
   * `encryptFor`, the frame goes out encrypted for that session instead of signed (3.3.4.1.4).
   */
  private assemble(replies: Reply[], compound = false, encryptFor: Session | null = null): Buffer[] {
    const parts: Buffer[] = [];
    replies.forEach((r, i) => {
      const last = i === replies.length - 1;
      const len = HEADER_SIZE + r.body.length + (r.data?.length ?? 0);
      const padded = compound || !last ? Math.ceil(len / 8) * 8 : len;
      const h = { ...r.header, nextCommand: last ? 0 : padded };
      const key = encryptFor === null ? (r.signWith?.signingKey ?? null) : null;
      if (key) h.flags |= HeaderFlags.SIGNED;
      const whole = key !== null || !last || r.onSent !== undefined;
      const w = new SmbWriter(HEADER_SIZE + r.body.length + (whole ? (r.data?.length ?? 0) + 8 : 0));
      writeHeader(w, h, r.asyncId ?? 0);
      w.bytes(r.body);
      if (whole) {
        // Signed, followed by another element, or hashed: one contiguous message.
        if (r.data) w.bytes(r.data);
        w.zeros(padded - len);
        const msg = w.finish();
        if (key) signatureOf(r.signWith!.signingAlgorithm, key, msg).copy(msg, 48);
        r.onSent?.(msg);
        parts.push(msg);
      } else {
        parts.push(w.finish());
        if (r.data) parts.push(r.data);
        if (padded > len) parts.push(PADDING.subarray(0, padded - len));
      }
    });
    return encryptFor?.cipher ? encryptMessage(encryptFor.cipher, encryptFor.id, parts) : parts;
  }

  /** MS-SMB2 3.3.5.3 an SMB1 NEGOTIATE naming SMB2 dialects gets an SMB2 NEGOTIATE response. */
  private smb1Negotiate(frame: Buffer): void {
    if (this.dialect !== null || frame.length < 35 || frame[4] !== 0x72) {
      this.abort('SMB1 request other than the initial multi-protocol NEGOTIATE');
      return;
    }
    const names = frame
      .subarray(35)
      .toString('latin1')
      .split('\x02')
      .map((s) => s.replace(/\0.*$/s, ''));
    let dialect: number;
    if (names.includes('SMB 2.???')) dialect = Dialect.WILDCARD;
    else if (names.includes('SMB 2.002')) dialect = Dialect.SMB202;
    else {
      this.abort('SMB1 NEGOTIATE without an SMB2 dialect (SMB1 is not served)');
      return;
    }
    if (dialect === Dialect.SMB202) this.dialect = Dialect.SMB202;
    // MessageId 0 is used by this request (3.3.5.3.1); one credit more is granted.
    this.credits.consume(0, 1);
    const granted = this.credits.grant(1);
    const w = new SmbWriter(256);
    this.negotiateBody(w, dialect);
    this.send(
      this.assemble([
        {
          header: {
            creditCharge: 0,
            status: 0,
            command: Command.NEGOTIATE,
            creditRequest: granted,
            flags: HeaderFlags.SERVER_TO_REDIR,
            nextCommand: 0,
            messageId: 0,
            treeId: 0,
            sessionId: 0,
          },
          body: w.finish(),
          data: null,
          signWith: null,
        },
      ]),
    );
  }

  private negotiateBody(w: SmbWriter, dialect: number, contexts?: NegotiateContext[], capabilities = serverCapabilities(dialect)): void {
    const max = (capabilities & Capabilities.LARGE_MTU) !== 0 ? LIMITS_21 : LIMITS_202;
    writeNegotiateResponse(w, {
      securityMode: this.securityMode,
      dialect,
      serverGuid: this.opts.serverGuid,
      capabilities,
      maxTransactSize: max,
      maxReadSize: max,
      maxWriteSize: max,
      systemTime: nowTimespec(),
      securityBuffer: negotiateSecurityBlob(),
      ...(contexts ? { contexts } : {}),
    });
  }

  /** One compound element: its reply, or null (CANCEL has none). */
  private async element(h: Smb2Header, msg: Buffer, chain: ChainState, first: boolean): Promise<Reply | null> {
    const started = process.hrtime.bigint();
    const related = (h.flags & HeaderFlags.RELATED_OPERATIONS) !== 0;
    if (h.command === Command.CANCEL) {
      // 3.3.5.16: no response, no credit charged; the cancelled request answers for it. Its
      // signature is checked like any request's (3.3.5.2.4) on a session that signs: a forged or
      // unsigned CANCEL there cancels nothing. Encrypted, it is authenticated by its cipher and acts
      // for that session only; in the clear on a session that must encrypt, it cancels nothing.
      const s = this.sessions.get(h.sessionId);
      // One of no session (SessionId 0, or one that is not) has no request to cancel: none of
      // another session's, even one that has not arrived yet (an injected CANCEL would end it).
      if (s === undefined) return null;
      if (chain.encryptedBy !== null) {
        if (h.sessionId !== chain.encryptedBy.id) return null;
      } else if (s?.encryptData) {
        this.badSignature({ sessionId: h.sessionId, signed: false }, 'SMB2 CANCEL in the clear on a session that must encrypt ignored');
        return null;
      } else if (s?.signingKey) {
        const signed = (h.flags & HeaderFlags.SIGNED) !== 0;
        if (signed ? !verifySignature(s.signingAlgorithm, s.signingKey, msg) : s.signingRequired) {
          this.badSignature({ sessionId: h.sessionId, signed }, 'SMB2 CANCEL with a bad or missing signature ignored');
          return null;
        }
      }
      this.async.cancel((h.flags & HeaderFlags.ASYNC_COMMAND) !== 0, h.asyncId, h.messageId, h.sessionId);
      return null;
    }
    // 3.3.5.2.3 sequence window: a charge of 0 counts as 1; an id outside the window ends the connection.
    const charge = Math.max(1, h.creditCharge);
    if (!this.credits.consume(h.messageId, charge)) {
      this.abort(`MessageId ${h.messageId} (charge ${charge}) outside the credit window`);
      return null;
    }
    // 3.3.5.2.7.2: a related element acts for the previous one's session and tree. The first
    // element has none before it: its own ids name the session that signs its (failed) response.
    const inherits = related && !first;
    const sessionId = inherits ? chain.sessionId : h.sessionId;
    const treeId = inherits ? chain.treeId : h.treeId;
    const reply: Reply = {
      header: {
        creditCharge: h.creditCharge,
        status: 0,
        command: h.command,
        creditRequest: 0,
        flags: HeaderFlags.SERVER_TO_REDIR | (related ? HeaderFlags.RELATED_OPERATIONS : 0),
        nextCommand: 0,
        messageId: h.messageId,
        treeId,
        sessionId,
      },
      body: Buffer.alloc(0),
      data: null,
      signWith: null,
    };
    if (!related) {
      chain.failed = null;
      chain.fileId = null;
    }
    const w = new SmbWriter(128);
    // One SERVER span per element (`smb.CREATE`), like the NFS calls (`nfs.CREATE`).
    const span = tracingEnabled()
      ? startSpan(`smb.${commandName(h.command)}`, SpanKind.SERVER, {
          'rpc.system': 'smb2',
          'rpc.method': commandName(h.command),
          'dittofs.session_id': sessionId,
        })
      : null;
    let status: number;
    let data: Buffer | null = null;
    const session = sessionId !== 0 ? this.sessions.get(sessionId) : undefined;
    const signed = (h.flags & HeaderFlags.SIGNED) !== 0;
    const encrypted = chain.encryptedBy !== null;
    try {
      // 3.3.5.2.1.1: what came encrypted under a session's key acts for that session only.
      if (encrypted && sessionId !== chain.encryptedBy!.id)
        throw new SmbStatusError(
          NtStatus.ACCESS_DENIED,
          `an encrypted message of session ${chain.encryptedBy!.id} acting for session ${sessionId}`,
        );
      // 3.3.5.7: at 3.1.1 a TREE_CONNECT of a session with a key comes signed or encrypted,
      // whether or not signing is required; else the connection is dropped.
      if (h.command === Command.TREE_CONNECT && this.dialect === Dialect.SMB311 && session?.signingKey && !signed && !encrypted) {
        this.abort('an unsigned TREE_CONNECT on a 3.1.1 connection');
        throw new SmbStatusError(NtStatus.ACCESS_DENIED);
      }
      // 3.3.5.2.9: a session that must encrypt takes nothing in the clear once it is set up, a
      // re-authentication neither (as smbd): unsigned, one could come from anyone on the path and
      // end the session or make it anonymous.
      if (session?.encryptData && !encrypted && h.command !== Command.NEGOTIATE)
        throw new SmbStatusError(NtStatus.ACCESS_DENIED, 'an unencrypted request on a session that must encrypt');
      // 3.3.5.2.4 verifying the signature: a bad one is refused unanswered-with-data, never
      // processed. It comes first: every answer after it, a failure passed down a compound
      // chain too, is signed (clients that require signing drop an unsigned one). An encrypted
      // message is authenticated by its cipher instead.
      if (session?.signingKey && h.command !== Command.NEGOTIATE && !encrypted) {
        if (signed) {
          if (!verifySignature(session.signingAlgorithm, session.signingKey, msg)) {
            this.badSignature({ command: commandName(h.command), sessionId }, 'SMB2 request with a bad signature refused');
            throw new SmbStatusError(NtStatus.ACCESS_DENIED, 'bad signature');
          }
        } else if (session.signingRequired) {
          // SESSION_SETUP too: only a session with a key gets here, so this is a re-authentication,
          // which a client signs like any request (3.2.4.1.1). Unsigned, it could come from anyone
          // on the path, and would end the session (a bad token) or switch its user (anonymous).
          throw new SmbStatusError(NtStatus.ACCESS_DENIED, 'unsigned request on a session that requires signing');
        }
      }
      if (!encrypted && session?.signingKey && (signed || session.signingRequired)) reply.signWith = session;
      if (related && chain.failed !== null) throw new SmbStatusError(chain.failed as NtStatus);
      // 3.3.5.2.7.2: the first element has nothing to be related to; its followers fail with it.
      if (related && first) {
        chain.failed = NtStatus.INVALID_PARAMETER;
        throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'the first element of a compound is marked related');
      }
      const r = new SmbReader(msg, HEADER_SIZE);
      const out =
        span === null
          ? await this.dispatch(h, r, w, reply, session, treeId, chain, charge)
          : await runInSpan(span, () => this.dispatch(h, r, w, reply, session, treeId, chain, charge));
      status = out.status;
      data = out.data;
    } catch (e) {
      status = this.statusOf(e, h);
    }
    let earlyBody: Buffer | null = null;
    if (reply.pending) {
      const op = reply.pending;
      if (status !== NtStatus.PENDING) op.abort('cancel');
      else if (this.async.cancelledEarly(h.messageId, h.sessionId)) op.abort('cancel');
      // Completed (or cancelled) before the interim went out: answered synchronously instead.
      const early = op.takeEarlyResult();
      if (early) {
        reply.pending = undefined;
        if (status === NtStatus.PENDING) {
          status = early.status;
          data = early.data;
          earlyBody = early.body;
        }
      }
    }
    if (h.command === Command.CREATE && status !== NtStatus.SUCCESS) chain.failed = status;
    chain.sessionId = reply.header.sessionId;
    chain.treeId = reply.header.treeId;
    reply.header.status = status;
    reply.header.creditRequest = this.credits.grant(h.creditRequest);
    if (reply.pending) {
      // 3.3.4.2 the interim response: async header with the AsyncId, credits granted now (not
      // again in the final response), an SMB2 ERROR body, never signed.
      reply.header.flags |= HeaderFlags.ASYNC_COMMAND;
      reply.asyncId = reply.pending.asyncId;
      reply.signWith = null;
      const e = new SmbWriter(9);
      writeErrorBody(e);
      reply.body = e.finish();
    } else if (earlyBody !== null) {
      reply.body = earlyBody;
      reply.data = data;
    } else if (isBodyStatus(status) || w.pos > 0) {
      reply.body = w.finish();
      reply.data = data;
    } else {
      const e = new SmbWriter(9);
      writeErrorBody(e);
      reply.body = e.finish();
    }
    // An unknown or deleted session signs nothing (a refused signature never set signWith); the
    // SIGNED flag of a signed request is kept, with a zero signature, which clients that require
    // signing accept for this status only (smbd does the same).
    if (status === NtStatus.USER_SESSION_DELETED) {
      reply.signWith = null;
      if (signed) reply.header.flags |= HeaderFlags.SIGNED;
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    this.opts.observer?.requestDone('smb', commandName(h.command), statusLabel(status), seconds);
    if (span !== null) {
      const label = statusLabel(status);
      span.setAttribute('dittofs.status', label);
      const share = session?.trees.get(reply.header.treeId)?.share?.name;
      if (share !== undefined) span.setAttribute('dittofs.share', share);
      // An error status is an answer (NOT_FOUND, ACCESS_DENIED); only the server's own failures are ERROR spans.
      endSpan(span, SERVER_FAILURES.has(status) ? label : undefined);
    }
    return reply;
  }

  private statusOf(e: unknown, h: Smb2Header): number {
    if (e instanceof SmbStatusError) return e.status;
    if (e instanceof DecodeError) {
      if (!this.warnedMalformed) {
        this.warnedMalformed = true;
        this.log?.warn(
          { command: commandName(h.command), err: e.message },
          'malformed SMB2 request answered INVALID_PARAMETER (logged once per connection)',
        );
      }
      return NtStatus.INVALID_PARAMETER;
    }
    const s = ntStatusOf(e);
    if (s !== null) {
      if (s === NtStatus.UNEXPECTED_IO_ERROR)
        this.log?.error({ err: e, command: commandName(h.command) }, 'storage error during an SMB operation');
      return s;
    }
    this.log?.error({ err: e, command: commandName(h.command) }, 'SMB operation failed unexpectedly');
    return NtStatus.INTERNAL_ERROR;
  }

  private requireSession(session: Session | undefined): Session {
    if (!session || session.state !== 'valid') throw new SmbStatusError(NtStatus.USER_SESSION_DELETED);
    return session;
  }

  private requireTree(session: Session, treeId: number): Tree {
    const t = session.trees.get(treeId);
    if (!t) throw new SmbStatusError(NtStatus.NETWORK_NAME_DELETED);
    return t;
  }

  /** The open a FileId names (all ones in a related element: the previous element's open). */
  private findOpen(fileId: Buffer, chain: ChainState, tree: Tree): Open {
    const fid = fileId.equals(FILE_ID_ANY) && chain.fileId ? chain.fileId : fileId;
    const open = this.opens.get(openIdOf(fid));
    if (!open || open.tree !== tree) throw new SmbStatusError(NtStatus.FILE_CLOSED);
    chain.fileId = open.fileId;
    return open;
  }

  /** 3.3.5.2.5 a multi-credit request must be charged for its size. */
  private checkCharge(charge: number, bytes: number): void {
    if (!this.largeMtu) return;
    const need = Math.max(1, Math.ceil(bytes / CREDIT_UNIT));
    if (charge < need) throw new SmbStatusError(NtStatus.INVALID_PARAMETER, `CreditCharge ${charge} below the ${need} the size needs`);
  }

  private fileContext(session: Session, tree: Tree): files.FileContext {
    if (tree.kind !== 'disk' || !tree.share) throw new SmbStatusError(NtStatus.INVALID_DEVICE_REQUEST);
    return {
      fs: this.opts.fs,
      session,
      tree,
      share: tree.share,
      // What SMB itself decides (granted access, owner rights) is decided for the caller the vfs
      // sees: on a root_squash share, a user mapped to uid 0 is the anonymous user.
      id: this.opts.fs.squash(tree.share, session.identity),
      maxRead: this.maxIo,
      maxWrite: this.maxIo,
      maxTransact: this.maxIo,
      log: this.log,
      ...(this.opts.data ? { data: this.opts.data } : {}),
      caching: this.caching,
      durable: this.durable,
      smb3: isSmb3(this.dialect),
    };
  }

  private async dispatch(
    h: Smb2Header,
    r: SmbReader,
    w: SmbWriter,
    reply: Reply,
    sessionOrNone: Session | undefined,
    treeId: number,
    chain: ChainState,
    charge: number,
  ): Promise<{ status: number; data: Buffer | null }> {
    const ok = { status: NtStatus.SUCCESS as number, data: null };
    if (h.command !== Command.NEGOTIATE && this.dialect === null) throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'no NEGOTIATE yet');
    switch (h.command) {
      case Command.NEGOTIATE:
        this.negotiate(r, w, reply, chain.compound);
        this.handshake.progressed();
        return ok;
      case Command.SESSION_SETUP:
        return { status: await this.sessionSetup(h, r, w, reply, chain.compound), data: null };
      case Command.ECHO:
        decodeEmpty(r, 'ECHO');
        writeEmptyBody(w);
        return ok;
      default:
        break;
    }
    const session = this.requireSession(sessionOrNone);
    switch (h.command) {
      case Command.LOGOFF:
        decodeEmpty(r, 'LOGOFF');
        await this.logoff(session);
        writeEmptyBody(w);
        return ok;
      case Command.TREE_CONNECT:
        reply.header.treeId = await this.treeConnect(session, r, w);
        return ok;
      default:
        break;
    }
    const tree = this.requireTree(session, treeId);
    if (tree.kind === 'ipc' && h.command !== Command.TREE_DISCONNECT) return this.pipeCommand(h, r, w, tree, chain);
    switch (h.command) {
      case Command.TREE_DISCONNECT:
        decodeEmpty(r, 'TREE_DISCONNECT');
        this.async.abortWhere((op) => op.request.tree === tree, 'closed');
        await this.closeOpens((o) => o.tree === tree);
        for (const p of this.pipes.values()) if (p.tree === tree) this.pipes.delete(p.id);
        session.trees.delete(tree.id);
        writeEmptyBody(w);
        return ok;
      case Command.CREATE: {
        const req = decodeCreate(r);
        // CREATEs under way count too: 64 pipelined ones must not all pass the check and overshoot.
        if (this.opens.size + this.creating >= (this.opts.maxOpensPerConnection ?? MAX_OPENS))
          throw new SmbStatusError(NtStatus.INSUFFICIENT_RESOURCES, 'too many opens');
        // MS-SMB2 3.3.4.2 / 3.3.5.9: a CREATE waiting for a break acknowledgment goes async (the
        // client gets an interim STATUS_PENDING and may CANCEL); only the last element of a compound.
        let op: PendingOp | null = null;
        let wentAsync: () => void = () => undefined;
        const asyncNow = new Promise<null>((resolve) => (wentAsync = () => resolve(null)));
        const ctx: files.FileContext = { ...this.fileContext(session, tree) };
        if (chain.last)
          ctx.onBreakWait = () => {
            if (op !== null) return;
            op = this.goAsync(h, reply, chain, session, tree, null);
            wentAsync();
          };
        this.creating++;
        const done = this.createOpen(ctx, req, w, session, tree);
        const settled = (): void => void this.creating--;
        done.then(settled, settled);
        const open = await Promise.race([done, asyncNow]);
        if (open !== null) {
          chain.fileId = open.fileId;
          return ok;
        }
        const pending: PendingOp = op!;
        void done.then(
          async (o) => {
            // Cancelled, or its tree or session ended, meanwhile: the client never learns of the open.
            if (pending.finished) await this.dropOpen(o, session);
            else pending.complete(NtStatus.SUCCESS, w.finish());
          },
          (e: unknown) => pending.complete(this.statusOf(e, h)),
        );
        return { status: NtStatus.PENDING, data: null };
      }
      case Command.CLOSE: {
        const req = decodeClose(r);
        const open = this.findOpen(req.fileId, chain, tree);
        this.async.abortWhere((op) => op.request.open === open, 'closed');
        this.opens.delete(open.id);
        releaseLocks(this.opts.fs.byteRanges, open);
        this.notifyHub?.closeOpen(open);
        await open.drained();
        await files.close(this.fileContext(session, tree), open, req.flags, w);
        announceDeletePending(this.opts.fs, open);
        return ok;
      }
      case Command.FLUSH: {
        const req = decodeFlush(r);
        const open = this.findOpen(req.fileId, chain, tree);
        await open.use(() => files.flush(this.fileContext(session, tree), open));
        writeEmptyBody(w);
        return ok;
      }
      case Command.READ: {
        const req = decodeRead(r);
        this.checkCharge(charge, req.length);
        const open = this.findOpen(req.fileId, chain, tree);
        const data = await open.use(() => files.read(this.fileContext(session, tree), open, req));
        writeReadResponse(w, data.length);
        return { status: NtStatus.SUCCESS, data };
      }
      case Command.WRITE: {
        const req = decodeWrite(r);
        this.checkCharge(charge, req.data.length);
        const open = this.findOpen(req.fileId, chain, tree);
        const n = await open.use(() => files.write(this.fileContext(session, tree), open, req));
        publishModified(this.opts.fs, open, WRITE_FILTER);
        writeWriteResponse(w, n);
        return ok;
      }
      case Command.QUERY_DIRECTORY: {
        const req = decodeQueryDirectory(r);
        this.checkCharge(charge, req.outputBufferLength);
        const open = this.findOpen(req.fileId, chain, tree);
        const out = await open.use(() => files.queryDirectory(this.fileContext(session, tree), open, req));
        writeOutputResponse(w, out);
        return ok;
      }
      case Command.QUERY_INFO: {
        const req = decodeQueryInfo(r);
        this.checkCharge(charge, Math.max(req.outputBufferLength, req.input.length));
        const open = this.findOpen(req.fileId, chain, tree);
        const res = await open.use(() => files.queryInfo(this.fileContext(session, tree), open, req));
        writeOutputResponse(w, res.output);
        return { status: res.status, data: null };
      }
      case Command.SET_INFO: {
        const req = decodeSetInfo(r);
        this.checkCharge(charge, req.buffer.length);
        const open = this.findOpen(req.fileId, chain, tree);
        await open.use(() => files.setInfo(this.fileContext(session, tree), open, req));
        publishModified(this.opts.fs, open, setInfoFilter(req));
        announceDeletePending(this.opts.fs, open);
        writeSetInfoResponse(w);
        return ok;
      }
      case Command.IOCTL:
        return this.ioctl(r, w, tree, chain, charge);
      case Command.LOCK: {
        const req = decodeLock(r);
        const open = this.findOpen(req.fileId, chain, tree);
        const status = await lock(
          {
            locks: this.opts.fs.byteRanges,
            client: this,
            goAsync: () => this.goAsync(h, reply, chain, session, tree, open),
            mayUseShare: () => void this.opts.fs.identity(open.share, session.identity),
          },
          open,
          req,
          w,
        );
        // MS-FSA 2.1.5.7: a byte-range lock taken breaks the read caching of the file's other holders.
        if (status === NtStatus.SUCCESS && req.locks.every((l) => (l.flags & LockFlags.UNLOCK) === 0))
          oplock.breakForLock(this.opts.fs, open);
        return { status, data: null };
      }
      case Command.CHANGE_NOTIFY: {
        const req = decodeChangeNotify(r);
        this.checkCharge(charge, req.outputBufferLength);
        const open = this.findOpen(req.fileId, chain, tree);
        this.notifyHub ??= new NotifyHub(this.opts.fs);
        const status = this.notifyHub.request(open, req, this.maxIo, w, () => this.goAsync(h, reply, chain, session, tree, open));
        return { status, data: null };
      }
      case Command.OPLOCK_BREAK:
        oplock.acknowledge(this.opts.fs, this.clientGuid, session, r, w, (fileId) => this.findOpen(fileId, chain, tree));
        return ok;
      default:
        throw new SmbStatusError(NtStatus.INVALID_PARAMETER, `unknown command ${h.command}`);
    }
  }

  /** Commands on IPC$: the srvsvc pipe (CREATE, WRITE, READ, FSCTL_PIPE_TRANSCEIVE, CLOSE) and DFS referrals. */
  private pipeCommand(h: Smb2Header, r: SmbReader, w: SmbWriter, tree: Tree, chain: ChainState): { status: number; data: Buffer | null } {
    const ok = { status: NtStatus.SUCCESS as number, data: null };
    const find = (fileId: Buffer): SrvsvcPipe => {
      const fid = fileId.equals(FILE_ID_ANY) && chain.fileId ? chain.fileId : fileId;
      const p = this.pipes.get(openIdOf(fid));
      if (!p || p.tree !== tree) throw new SmbStatusError(NtStatus.FILE_CLOSED);
      chain.fileId = p.fileId;
      return p.pipe;
    };
    switch (h.command) {
      case Command.CREATE: {
        const req = decodeCreate(r);
        const name = fromUtf16(req.name, 'CREATE name').replace(/^\\+/, '').toLowerCase();
        if (name !== 'srvsvc') throw new SmbStatusError(NtStatus.OBJECT_NAME_NOT_FOUND, `no pipe "${name}"`);
        if (this.pipes.size >= 64) throw new SmbStatusError(NtStatus.INSUFFICIENT_RESOURCES, 'too many pipe opens');
        const id = this.nextPipeId++;
        const fileId = fileIdOf(id);
        this.pipes.set(id, { id, fileId, tree, pipe: new SrvsvcPipe(() => this.shareList()) });
        chain.fileId = fileId;
        const info = {
          creationTime: ZERO_TIME,
          lastAccessTime: ZERO_TIME,
          lastWriteTime: ZERO_TIME,
          changeTime: ZERO_TIME,
          allocationSize: 0,
          endOfFile: 0,
          fileAttributes: FileAttributes.NORMAL,
        };
        writeCreateResponse(w, { oplockLevel: 0, createAction: 1, info, fileId, contexts: Buffer.alloc(0) });
        return ok;
      }
      case Command.WRITE: {
        const req = decodeWrite(r);
        find(req.fileId).write(req.data);
        writeWriteResponse(w, req.data.length);
        return ok;
      }
      case Command.READ: {
        const req = decodeRead(r);
        const pipe = find(req.fileId);
        if (pipe.pending === 0) throw new SmbStatusError(NtStatus.PIPE_EMPTY);
        const more = pipe.pending > req.length;
        const data = pipe.read(req.length);
        writeReadResponse(w, data.length);
        return { status: more ? NtStatus.BUFFER_OVERFLOW : NtStatus.SUCCESS, data };
      }
      case Command.IOCTL: {
        const req = decodeIoctl(r);
        if (req.ctlCode === Fsctl.DFS_GET_REFERRALS || req.ctlCode === Fsctl.DFS_GET_REFERRALS_EX)
          throw new SmbStatusError(NtStatus.NOT_FOUND);
        if (req.ctlCode === Fsctl.VALIDATE_NEGOTIATE_INFO) {
          writeIoctlResponse(w, req.ctlCode, req.fileId, this.validateNegotiate(req.input, req.maxOutputResponse));
          return ok;
        }
        if (req.ctlCode !== Fsctl.PIPE_TRANSCEIVE) throw new SmbStatusError(NtStatus.NOT_SUPPORTED);
        const pipe = find(req.fileId);
        pipe.write(req.input);
        const more = pipe.pending > req.maxOutputResponse;
        writeIoctlResponse(w, req.ctlCode, req.fileId, pipe.read(req.maxOutputResponse));
        return { status: more ? NtStatus.BUFFER_OVERFLOW : NtStatus.SUCCESS, data: null };
      }
      case Command.CLOSE: {
        const req = decodeClose(r);
        find(req.fileId);
        this.pipes.delete(openIdOf(chain.fileId ?? req.fileId));
        writeCloseResponse(w, 0, null);
        return ok;
      }
      default:
        throw new SmbStatusError(NtStatus.NOT_SUPPORTED, `${commandName(h.command)} on IPC$`);
    }
  }

  /** The shares srvsvc lists: every served share (type DISKTREE) and IPC$. */
  private shareList(): { name: string; type: number; comment: string }[] {
    return [
      ...this.opts.fs.shares().map((s) => ({ name: smbShareName(s.name), type: 0, comment: '' })),
      { name: 'IPC$', type: 0x80000003, comment: 'IPC Service' },
    ];
  }

  // MS-SMB2 3.3.5.4 NEGOTIATE
  private negotiate(r: SmbReader, w: SmbWriter, reply: Reply, compound: boolean): void {
    if (this.dialect !== null) {
      this.abort('a second NEGOTIATE on the connection');
      throw new SmbStatusError(NtStatus.INVALID_PARAMETER);
    }
    const req = decodeNegotiate(r);
    const dialect = commonDialect(req.dialects);
    if (dialect === null)
      throw new SmbStatusError(NtStatus.NOT_SUPPORTED, 'no common dialect (2.0.2, 2.1, 3.0, 3.0.2 and 3.1.1 are served)');
    let contexts: NegotiateContext[] | undefined;
    if (dialect === Dialect.SMB311) {
      // The preauth hash takes a message as the client sent it: a compound element carries padding
      // that the client may or may not count, so at 3.1.1 neither NEGOTIATE nor SESSION_SETUP may
      // be compounded (no client does).
      if (compound) throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'a 3.1.1 NEGOTIATE in a compound');
      const negotiated = negotiateContexts(req.contexts);
      contexts = negotiated.contexts;
      this.cipher = negotiated.cipher;
      this.gmac = negotiated.gmac;
      // 3.3.5.4: the hash starts over 64 zero bytes, then takes the request and the response as sent.
      const afterRequest = sha512(Buffer.alloc(64), r.buf);
      this.preauthHash = afterRequest;
      reply.onSent = (msg) => (this.preauthHash = sha512(afterRequest, msg));
    }
    this.dialect = dialect;
    this.clientGuid = req.clientGuid;
    this.clientSecurityMode = req.securityMode;
    this.clientCapabilities = req.capabilities;
    this.capabilities = serverCapabilities(dialect);
    // 3.3.5.4: at 3.0 and 3.0.2 encryption (AES-128-CCM) is offered to a client that offers it;
    // at 3.1.1 a cipher is negotiated in a context instead, and the capability is not set.
    if ((dialect === Dialect.SMB300 || dialect === Dialect.SMB302) && (req.capabilities & Capabilities.ENCRYPTION) !== 0) {
      this.capabilities |= Capabilities.ENCRYPTION;
      this.cipher = CipherId.AES_128_CCM;
    }
    this.caching.clientGuid = req.clientGuid;
    this.caching.leasing = (this.capabilities & Capabilities.LEASING) !== 0;
    this.caching.leaseV2 = isSmb3(dialect);
    if (this.caching.leaseV2 && this.dropLeaseChannel === null)
      this.dropLeaseChannel = oplock.addLeaseChannel(this.opts.fs, req.clientGuid, {
        notify: this.caching.notify,
        serves: (user) => {
          for (const s of this.sessions.values())
            if (s.state === 'valid' && !s.anonymous && s.owner?.name.toLowerCase() === user) return true;
          return false;
        },
      });
    this.negotiateBody(w, dialect, contexts, this.capabilities);
  }

  // MS-SMB2 3.3.5.5 SESSION_SETUP: a new session (SessionId 0), the next leg of one in progress, or
  // the re-authentication of a valid one (3.3.5.5.2: its session key, hence signing, is kept).
  private async sessionSetup(h: Smb2Header, r: SmbReader, w: SmbWriter, reply: Reply, compound: boolean): Promise<number> {
    const req = decodeSessionSetup(r);
    let session: Session | undefined;
    if (h.sessionId === 0) {
      if (this.sessions.size >= MAX_SESSIONS) throw new SmbStatusError(NtStatus.INSUFFICIENT_RESOURCES, 'too many sessions');
      let inProgress = 0;
      for (const s of this.sessions.values()) if (s.state === 'in-progress') inProgress++;
      if (inProgress >= MAX_LOGONS_IN_PROGRESS)
        throw new SmbStatusError(NtStatus.INSUFFICIENT_RESOURCES, 'too many logons in progress on the connection');
      if (this.logons.blocked(this.clientAddress)) {
        // One line per blocking window: a client retrying past the limit cannot fill the log.
        if (this.logons.firstRefusal(this.clientAddress))
          this.log?.info(
            { address: this.clientAddress },
            'SMB logon refused: too many failed logons from this address (further refusals until the limit window ends are not logged)',
          );
        throw new SmbStatusError(NtStatus.LOGON_FAILURE, 'too many failed logons from this address');
      }
      session = newSession(SessionTable.allocateId());
      this.sessions.set(session.id, session);
    } else {
      session = this.sessions.get(h.sessionId);
      if (!session) throw new SmbStatusError(NtStatus.USER_SESSION_DELETED);
    }
    reply.header.sessionId = session.id;
    const reauth = session.state === 'valid';
    // 3.3.5.5.1 / 3.3.5.5.2 (3.1.1): a new session's hash starts from the connection's and takes
    // every SESSION_SETUP request, and every response but the final one. Not on a re-authentication
    // (its keys stay).
    const hashing = this.dialect === Dialect.SMB311 && !reauth;
    if (hashing) {
      const from = session.preauthHash ?? this.preauthHash;
      if (from === null) throw new SmbStatusError(NtStatus.INTERNAL_ERROR, 'no preauth hash on a 3.1.1 connection');
      if (compound) {
        await this.endSession(session, AUTHENTICATION_FAILED);
        throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'a 3.1.1 SESSION_SETUP in a compound');
      }
      session.preauthHash = sha512(from, r.buf);
    }
    // Anonymous is accepted only to re-authenticate a session, which then keeps its opens and opens
    // nothing new (files.ts refuseAnonymous): what smbd does, and smbtorture's reauth2-4 expect. A
    // new anonymous session needs guest access.
    const exchange = (session.exchange ??= new SmbAuthExchange(this.opts.directory, {
      serverName: this.opts.serverName,
      domain: this.opts.domain,
      allowGuest: reauth,
      // Past the failed-logon limits, refused before the password is checked (README: SMB logons).
      refuseAccount: (account) => (this.logons.begin(this.clientAddress, account) ? null : LOGONS_LIMITED),
    }));
    const step = await exchange.step(req.securityBuffer);
    if (step.kind === 'continue') {
      this.handshake.progressed();
      writeSessionSetupResponse(w, 0, step.token);
      if (hashing) reply.onSent = (msg) => (session.preauthHash = sha512(session.preauthHash!, msg));
      return NtStatus.MORE_PROCESSING_REQUIRED;
    }
    session.exchange = null;
    // A logon that reached its password check was counted as failed (LogonLimiter.begin).
    if (exchange.account && step.kind === 'done') this.logons.succeeded(this.clientAddress, exchange.account);
    if (step.kind === 'failed') {
      // 3.3.5.5.3: an authentication error ends the session, a valid one (re-authentication) too:
      // its opens are closed and its trees dropped.
      // Refusals of new logons past the failed-logon limits: one line per blocking window (see
      // above). A refused re-authentication ends a valid session: always logged.
      if (reauth || step.message !== LOGONS_LIMITED || this.logons.firstRefusal(this.clientAddress, exchange.account ?? undefined))
        this.log?.info(
          { reason: step.reason, message: step.message, sessionId: session.id, reauth },
          reauth ? 'SMB re-authentication refused: session ended' : 'SMB logon refused',
        );
      await this.endSession(session, AUTHENTICATION_FAILED);
      return step.reason === 'logon-failure' ? NtStatus.LOGON_FAILURE : NtStatus.INVALID_PARAMETER;
    }
    const flags = step.anonymous ? SessionFlags.IS_NULL : step.guest ? SessionFlags.IS_GUEST : 0;
    if (reauth) {
      // The same user (rights refreshed from the control plane) or anonymous (rights dropped); a
      // different user cannot take over the session and its opens: refused, the session unchanged.
      const owner = session.owner;
      if (!step.anonymous && (owner === null || owner.name.toLowerCase() !== step.user.name.toLowerCase())) {
        this.log?.info(
          { user: step.user.name, owner: owner?.name, sessionId: session.id },
          'SMB re-authentication as another user refused',
        );
        return NtStatus.ACCESS_DENIED;
      }
      this.setUser(session, step.user, step.guest, step.anonymous);
      reply.signWith = session.signingKey ? session : null;
      writeSessionSetupResponse(w, flags | (session.encryptData ? SessionFlags.ENCRYPT_DATA : 0), step.token);
      this.log?.info({ user: step.user.name, sessionId: session.id, anonymous: step.anonymous }, 'SMB session re-authenticated');
      return NtStatus.SUCCESS;
    }
    const keyed = !step.guest && !step.anonymous && step.sessionKey.length >= 16;
    if (this.opts.encryptionRequired && (!keyed || this.cipher === null)) {
      // 3.3.5.5.3 (Server.RejectUnencryptedAccess): a session that could not encrypt is refused.
      const why = !keyed
        ? `a ${step.anonymous ? 'anonymous' : step.guest ? 'guest' : 'keyless'} session cannot encrypt`
        : `no cipher in common at ${dialectName(this.dialect)}`;
      this.log?.info(
        { user: step.user.name, sessionId: session.id, dialect: dialectName(this.dialect), why },
        'SMB logon refused: encryption is required',
      );
      await this.endSession(session, 'encryption required');
      return NtStatus.ACCESS_DENIED;
    }
    session.state = 'valid';
    session.owner = step.anonymous || step.guest ? null : step.user;
    this.setUser(session, step.user, step.guest, step.anonymous);
    session.signingAlgorithm = !isSmb3(this.dialect) ? 'hmac-sha256' : this.gmac ? 'aes-128-gmac' : 'aes-128-cmac';
    session.signingKey = keyed ? this.signingKey(step.sessionKey, session.preauthHash) : null;
    session.cipher =
      keyed && this.cipher !== null
        ? sessionCipher(this.cipher, step.sessionKey, this.dialect === Dialect.SMB311 ? session.preauthHash : null)
        : null;
    session.encryptData = this.opts.encryptionRequired === true && session.cipher !== null;
    session.preauthHash = null;
    session.signingRequired =
      keyed &&
      (this.opts.signingRequired ||
        (req.securityMode & SecurityMode.SIGNING_REQUIRED) !== 0 ||
        (this.clientSecurityMode & SecurityMode.SIGNING_REQUIRED) !== 0);
    this.table.add(session, this);
    // 3.3.5.5.3 a reconnecting client names its lost session: that session (same user) ends.
    if (session.owner !== null && (await this.table.endPrevious(req.previousSessionId, session, session.owner.name)))
      this.log?.info({ user: step.user.name, sessionId: session.id, previous: req.previousSessionId }, 'SMB previous session ended');
    // 3.3.5.5.3: the final response is signed whenever the session has a key.
    reply.signWith = keyed ? session : null;
    writeSessionSetupResponse(w, flags | (session.encryptData ? SessionFlags.ENCRYPT_DATA : 0), step.token);
    this.log?.info(
      {
        user: step.user.name,
        sessionId: session.id,
        dialect: dialectName(this.dialect),
        signing: session.signingRequired,
        signingAlgorithm: session.signingKey ? session.signingAlgorithm : null,
        cipher: session.cipher ? cipherName(session.cipher.cipher) : null,
        encryptionRequired: session.encryptData,
      },
      'SMB session established',
    );
    this.handshake.established();
    return NtStatus.SUCCESS;
  }

  /**
   * MS-SMB2 3.3.5.5.3 Session.SigningKey: the session key itself at 2.x; at 3.x derived from it
   * (KDF), at 3.1.1 with the session's preauth hash as the context.
   */
  private signingKey(sessionKey: Buffer, preauthHash: Buffer | null): Buffer {
    if (this.dialect === Dialect.SMB311) {
      if (preauthHash === null) throw new SmbStatusError(NtStatus.INTERNAL_ERROR, 'a 3.1.1 session without a preauth hash');
      return smb311SigningKey(sessionKey, preauthHash);
    }
    return isSmb3(this.dialect) ? smb30SigningKey(sessionKey) : Buffer.from(sessionKey.subarray(0, 16));
  }

  private setUser(session: Session, user: SmbUser, guest: boolean, anonymous: boolean): void {
    session.user = user;
    session.identity = { uid: user.uid, gid: user.gid, gids: [...user.gids] } satisfies Identity;
    session.guest = guest;
    session.anonymous = anonymous;
  }

  /** Ends a session of this connection: LOGOFF, a failed authentication, a reconnect elsewhere. */
  async endSession(session: Session, why: string): Promise<void> {
    if (this.sessions.get(session.id) !== session) return;
    this.sessions.delete(session.id);
    const refused = why === AUTHENTICATION_FAILED;
    // But after a failed re-authentication: that session is forgotten with its keys (the client's
    // next encrypted request ends the connection, as with smbd: smbtorture reauth6).
    if (session.cipher && !refused) {
      this.ended.set(session.id, session);
      if (this.ended.size > MAX_SESSIONS) this.ended.delete(this.ended.keys().next().value!);
    }
    this.table.remove(session);
    session.state = 'in-progress';
    session.exchange = null;
    this.async.abortWhere((op) => op.request.session === session, 'closed');
    // Durable opens outlive a LOGOFF or a reconnect (MS-SMB2 3.3.5.6), not a refused logon.
    await this.closeOpens((o) => o.tree.session === session, !refused);
    for (const p of this.pipes.values()) if (p.tree.session === session) this.pipes.delete(p.id);
    session.trees.clear();
    if (why !== 'logoff') this.log?.debug({ sessionId: session.id, why }, 'SMB session ended');
  }

  // MS-SMB2 3.3.5.6 LOGOFF
  private async logoff(session: Session): Promise<void> {
    await this.endSession(session, 'logoff');
  }

  // MS-SMB2 3.3.5.7 TREE_CONNECT
  private async treeConnect(session: Session, r: SmbReader, w: SmbWriter): Promise<number> {
    const req = decodeTreeConnect(r);
    const path = fromUtf16(req.path, 'TREE_CONNECT path');
    const name = path.slice(path.lastIndexOf('\\') + 1);
    if (session.trees.size >= MAX_TREES) throw new SmbStatusError(NtStatus.INSUFFICIENT_RESOURCES, 'too many tree connects');
    if (name.toUpperCase() === 'IPC$') {
      const id = session.nextTreeId++;
      session.trees.set(id, { id, session, kind: 'ipc', share: null, name: 'IPC$', readOnly: true, maximalAccess: FILE_READ_ACCESS });
      writeTreeConnectResponse(w, ShareType.PIPE, 0, FILE_READ_ACCESS);
      return id;
    }
    const lower = name.toLowerCase();
    const share = this.opts.fs.shares().find((s) => smbShareKey(s.name) === lower);
    if (!share || lower === '') throw new SmbStatusError(NtStatus.BAD_NETWORK_NAME, `no share "${name}"`);
    await this.checkUserStillValid(session, share.name);
    // Again: other TREE_CONNECTs of the session may have been answered during the lookup.
    if (session.trees.size >= MAX_TREES) throw new SmbStatusError(NtStatus.INSUFFICIENT_RESOURCES, 'too many tree connects');
    const id = session.nextTreeId++;
    let level;
    try {
      const id2 = this.opts.fs.identity(share, session.identity);
      level = this.opts.fs.level(share, id2);
    } catch {
      level = 'none' as const;
    }
    if (level === 'none') throw new SmbStatusError(NtStatus.ACCESS_DENIED, `no permission on share ${share.name}`);
    const readOnly = share.readOnly || level === 'read';
    const maximalAccess = readOnly ? FILE_READ_ACCESS : FILE_ALL_ACCESS;
    session.trees.set(id, { id, session, kind: 'disk', share, name: share.name, readOnly, maximalAccess });
    writeTreeConnectResponse(w, ShareType.DISK, 0, maximalAccess);
    return id;
  }

  /**
   * A disk share is connected only by a session of a user who still exists, with the rights the
   * control plane gives that user now: the share's permission is decided by uid, and a session
   * re-authenticated as anonymous (nobody's uid) or of a deleted user (a uid no user has) would
   * otherwise get the share's default, which may be more than the user's own grant. Guest access
   * is off, so neither kind of session reaches a disk share.
   */
  private async checkUserStillValid(session: Session, shareName: string): Promise<void> {
    const user = namedUser(session, shareName);
    let now: Awaited<ReturnType<SmbUserDirectory['lookup']>>;
    try {
      now = await this.opts.directory.lookup(user.name);
    } catch (err) {
      // The control database failing is not the user's fault: not ACCESS_DENIED (which clients take
      // for bad credentials), a resource that is missing for now.
      throw new SmbStatusError(NtStatus.INSUFFICIENT_RESOURCES, `share ${shareName}: user directory: ${(err as Error).message}`);
    }
    if (this.sessions.get(session.id) !== session) throw new SmbStatusError(NtStatus.USER_SESSION_DELETED, 'the session ended');
    if (now === null) {
      this.log?.info(
        { user: user.name, sessionId: session.id, share: shareName },
        'SMB tree connect refused: the user was deleted or disabled',
      );
      throw new SmbStatusError(NtStatus.ACCESS_DENIED, `user ${user.name} no longer exists or may not log on`);
    }
    // Re-authenticated meanwhile: as anonymous, refused as above; as the same user, already fresh.
    if (namedUser(session, shareName) === user) this.setUser(session, now.user, false, false);
  }

  // MS-SMB2 3.3.5.15 IOCTL (ioctl.ts); the negotiation check stays here, with the state it reads.
  private ioctl(
    r: SmbReader,
    w: SmbWriter,
    tree: Tree,
    chain: ChainState,
    charge: number,
  ): Promise<{ status: number; data: Buffer | null }> {
    const req = decodeIoctl(r);
    this.checkCharge(charge, Math.max(req.input.length, req.maxOutputResponse));
    return smbIoctl(
      {
        validateNegotiate: (input, maxOutput) => this.validateNegotiate(input, maxOutput),
        findOpen: (fileId) => this.findOpen(fileId, chain, tree),
        openById: (id) => this.opens.get(id),
        fileContext: () => (tree.kind === 'disk' ? this.fileContext(tree.session, tree) : null),
      },
      req,
      w,
    );
  }

  /**
   * MS-SMB2 3.3.5.15.12 FSCTL_VALIDATE_NEGOTIATE_INFO, on any tree (IPC$ too: a client that only
   * lists shares validates there): the values the connection negotiated, or the connection is
   * dropped. The dialects too: the one the client's list would have given must be the one it got
   * (a NEGOTIATE rewritten on the way down to an older dialect is caught here). A request that is
   * truncated or leaves no room for the answer is dropped the same way.
   */
  private validateNegotiate(input: Buffer, maxOutput: number): Buffer {
    // 3.1.1 protects the negotiation with the preauth hash instead: the request must not come.
    if (this.dialect === Dialect.SMB311) {
      this.abort('VALIDATE_NEGOTIATE_INFO on a 3.1.1 connection');
      throw new SmbStatusError(NtStatus.ACCESS_DENIED);
    }
    let v: ReturnType<typeof decodeValidateNegotiate> | null = null;
    try {
      v = decodeValidateNegotiate(input);
    } catch {
      // Truncated: dropped below.
    }
    if (
      v === null ||
      maxOutput < VALIDATE_NEGOTIATE_RESPONSE_SIZE ||
      !v.guid.equals(this.clientGuid) ||
      v.securityMode !== this.clientSecurityMode ||
      v.capabilities !== this.clientCapabilities ||
      commonDialect(v.dialects) !== this.dialect
    ) {
      this.abort('VALIDATE_NEGOTIATE_INFO does not match the negotiation');
      throw new SmbStatusError(NtStatus.ACCESS_DENIED);
    }
    const dialect = this.dialect ?? 0;
    return encodeValidateNegotiateResponse(this.capabilities, this.opts.serverGuid, this.securityMode, dialect);
  }

  private async createOpen(ctx: files.FileContext, req: CreateRequest, w: SmbWriter, session: Session, tree: Tree): Promise<Open> {
    // Registered after the connection went: a CREATE it refuses meanwhile waits until it is dropped.
    let dropped: (() => void) | undefined;
    const open = await files
      .create(ctx, req, w, (o) => {
        this.opens.set(o.id, o);
        if (this.closed) o.closing = new Promise<void>((r) => (dropped = r));
      })
      .catch((e: unknown) => {
        dropped?.();
        throw e;
      });
    if (this.closed || this.sessions.get(session.id) !== session || session.trees.get(tree.id) !== tree) {
      // Gone while the CREATE waited for an oplock break: the open must not outlive them.
      await this.dropOpen(open, session).finally(dropped);
      throw new SmbStatusError(NtStatus.NETWORK_NAME_DELETED);
    }
    return open;
  }

  /** Closes an open that its client never heard of (its CREATE was cancelled or its session ended). */
  private async dropOpen(open: Open, session: Session): Promise<void> {
    this.opens.delete(open.id);
    await (open.closing = oplock.releaseOpen(this.opts.fs, open, session.identity).catch(() => undefined));
  }

  /** Closes opens of this connection; with `preserve`, durable ones are kept without it (durable.ts). */
  private async closeOpens(which: (o: Open) => boolean, preserve = false): Promise<void> {
    const victims = [...this.opens.values()].filter(which);
    const gone = new Set(victims);
    this.async.abortWhere((op) => op.request.open !== null && gone.has(op.request.open), this.closed ? 'disconnected' : 'closed');
    // Each open is released in turn (after its requests in flight): a CREATE that one of them
    // refuses meanwhile waits for its `closing` (oplock.registerOpen) instead of failing.
    let prev: Promise<void> = Promise.resolve();
    for (const o of victims) {
      this.opens.delete(o.id);
      // A durable open keeps its byte-range locks while it is preserved.
      if (!(preserve && o.durable)) releaseLocks(this.opts.fs.byteRanges, o);
      this.notifyHub?.closeOpen(o);
      prev = o.closing = prev.then(() => this.finishOpen(o, preserve));
    }
    await prev;
  }

  /** The second half of closeOpens for one open: preserved when durable, else released. */
  private async finishOpen(o: Open, preserve: boolean): Promise<void> {
    await o.drained();
    if (preserve && o.durable) {
      if (this.durable.preserve(o)) {
        // Preserved, not closing: it may be reconnected (a break closes it, oplock.breakForOpen).
        o.closing = null;
        return;
      }
      releaseLocks(this.opts.fs.byteRanges, o);
    }
    await oplock.releaseOpen(this.opts.fs, o, o.tree.session.identity).catch(() => undefined);
  }

  /**
   * Logs a request refused for its signature: the first and every BAD_SIGNATURE_LOG_EVERY-th on
   * the connection, with the count (teardown logs the total), so that a client sending them in a
   * loop cannot fill the log.
   */
  private badSignature(fields: Record<string, unknown>, message: string): void {
    const n = ++this.badSignatures;
    if (n === 1 || n % BAD_SIGNATURE_LOG_EVERY === 0)
      this.log?.warn(
        { ...fields, refusedOnConnection: n },
        `${message} (logged at the first and every ${BAD_SIGNATURE_LOG_EVERY}th on a connection)`,
      );
  }

  /** The connection is gone: its opens are closed (delete-on-close honoured). */
  async teardown(): Promise<void> {
    if (this.badSignatures > 1)
      this.log?.warn({ refusedOnConnection: this.badSignatures }, 'SMB2 connection closed: requests refused for their signature on it');
    this.closed = true;
    this.dropLeaseChannel?.();
    this.async.abortWhere(() => true, 'disconnected');
    this.notifyHub?.closeAll();
    for (const s of this.sessions.values()) this.table.remove(s);
    this.sessions.clear();
    await this.closeOpens(() => true, true);
  }

  get openCount(): number {
    return this.opens.size;
  }

  /** Requests waiting for their final response. */
  get pendingCount(): number {
    return this.async.size;
  }
}

function sha512(a: Buffer, b: Buffer): Buffer {
  return createHash('sha512').update(a).update(b).digest();
}

/**
 * MS-SMB2 3.3.5.4 (3.1.1): the client's negotiate contexts checked (exactly one preauth integrity
 * context naming SHA-512; no context type twice), and the response's: preauth integrity (SHA-512,
 * a fresh salt); when asked, signing (AES-GMAC when the client offers it, else AES-CMAC) and
 * encryption (the cipher, or 0 when none is in common). No compression context: it is not served,
 * and leaving it out says so.
 */
function negotiateContexts(list: readonly NegotiateContext[]): { contexts: NegotiateContext[]; cipher: Cipher | null; gmac: boolean } {
  const bad = (why: string): SmbStatusError => new SmbStatusError(NtStatus.INVALID_PARAMETER, `3.1.1 NEGOTIATE: ${why}`);
  const T = NegotiateContextType;
  for (const t of [T.PREAUTH_INTEGRITY_CAPABILITIES, T.ENCRYPTION_CAPABILITIES, T.COMPRESSION_CAPABILITIES, T.SIGNING_CAPABILITIES])
    if (list.filter((c) => c.type === t).length > 1) throw bad(`context type ${t} given twice`);
  const preauth = list.find((c) => c.type === T.PREAUTH_INTEGRITY_CAPABILITIES);
  if (!preauth) throw bad('no preauthentication integrity context');
  const p = preauth.data;
  const count = p.length >= 4 ? p.readUInt16LE(0) : 0;
  if (count === 0 || p.length < 4 + count * 2 + p.readUInt16LE(2)) throw bad('malformed preauthentication integrity context');
  const hashes = Array.from({ length: count }, (_, i) => p.readUInt16LE(4 + i * 2));
  if (!hashes.includes(PREAUTH_SHA512))
    throw new SmbStatusError(NtStatus.SMB_NO_PREAUTH_INTEGRITY_HASH_OVERLAP, 'the client offers no SHA-512 preauth integrity');
  const salt = randomBytes(32);
  const out: NegotiateContext[] = [
    { type: T.PREAUTH_INTEGRITY_CAPABILITIES, data: new SmbWriter(38).u16(1).u16(salt.length).u16(PREAUTH_SHA512).bytes(salt).finish() },
  ];
  /** A context's list of ids (2.2.3.1.7 SigningAlgorithms, 2.2.3.1.2 Ciphers): a count, then u16s. */
  const offeredIds = (c: NegotiateContext, what: string): number[] => {
    const n = c.data.length >= 2 ? c.data.readUInt16LE(0) : 0;
    if (n === 0 || c.data.length < 2 + n * 2) throw bad(`malformed ${what} capabilities context`);
    return Array.from({ length: n }, (_, i) => c.data.readUInt16LE(2 + i * 2));
  };
  const signing = list.find((c) => c.type === T.SIGNING_CAPABILITIES);
  let gmac = false;
  if (signing) {
    // AES-GMAC when offered (one GCM pass with AES-NI, where CMAC chains every block), else CMAC.
    gmac = offeredIds(signing, 'signing').includes(SigningAlgorithmId.AES_GMAC);
    out.push({
      type: T.SIGNING_CAPABILITIES,
      data: new SmbWriter(4)
        .u16(1)
        .u16(gmac ? SigningAlgorithmId.AES_GMAC : SigningAlgorithmId.AES_CMAC)
        .finish(),
    });
  }
  let cipher: Cipher | null = null;
  const encryption = list.find((c) => c.type === T.ENCRYPTION_CAPABILITIES);
  if (encryption) {
    const offered = offeredIds(encryption, 'encryption');
    cipher = SERVED_CIPHERS.find((c) => offered.includes(c)) ?? null;
    out.push({
      type: T.ENCRYPTION_CAPABILITIES,
      data: new SmbWriter(4)
        .u16(1)
        .u16(cipher ?? 0)
        .finish(),
    });
  }
  return { contexts: out, cipher, gmac };
}

/** The dialect NEGOTIATE picks from a client's list: the first served one it offers, or null. */
export function commonDialect(offered: readonly number[]): number | null {
  return SERVED_DIALECTS.find((d) => offered.includes(d)) ?? null;
}

/** A dialect as people write it ("3.0.2"), for the log. */
export function dialectName(dialect: number | null): string {
  if (dialect === null) return 'none';
  const major = dialect >> 8;
  const minor = (dialect >> 4) & 0xf;
  const patch = dialect & 0xf;
  return patch === 0 ? `${major}.${minor}` : `${major}.${minor}.${patch}`;
}

/**
 * MS-SMB2 3.3.5.4 the Capabilities the NEGOTIATE response (and VALIDATE_NEGOTIATE_INFO) gives,
 * and what the connection then does: LARGE_MTU (multi-credit requests, 1 MiB reads and writes)
 * and leasing at all dialects but 2.0.2 (version 1 leases at 2.1; at 3.x version 2 too: epochs
 * and parent keys, lease.ts). ENCRYPTION is added at 3.0 and 3.0.2 for a client that offers it
 * (SmbConnection.negotiate). No multichannel, persistent handles or directory leasing.
 */
function serverCapabilities(dialect: number): number {
  return dialect === Dialect.SMB202 ? 0 : Capabilities.LARGE_MTU | Capabilities.LEASING;
}
