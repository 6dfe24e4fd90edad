// A minimal SMB2 client for tests that need frames a real client would not send (fuzzing, hostile
// clients): Direct TCP framing, NEGOTIATE (2.0.2/2.1, or 3.0 with encryption: every message after
// the logon then goes as an AES-128-CCM transform), a raw-NTLMSSP SESSION_SETUP as a control-
// plane user (test/helpers/ntlm-client.ts), TREE_CONNECT, CREATE, WRITE, READ, CLOSE, ECHO. No
// signing, no compounds of its own; every request asks for 64 credits. Written from MS-SMB2 2.2.
import net from 'node:net';
import { DirectTcpFramer } from '../../server/src/smb2/framing.js';
import {
  CipherId,
  clientSideOf,
  decodeTransformHeader,
  decryptMessage,
  encryptMessage,
  isTransformFrame,
  sessionCipher,
  type SessionCipher,
} from '../../server/src/smb2/auth/encryption.js';
import { TestNtlmClient } from './ntlm-client.js';

export const SmbCommand = Object.freeze({
  NEGOTIATE: 0,
  SESSION_SETUP: 1,
  TREE_CONNECT: 3,
  CREATE: 5,
  CLOSE: 6,
  FLUSH: 7,
  READ: 8,
  WRITE: 9,
  LOCK: 10,
  IOCTL: 11,
  CANCEL: 12,
  ECHO: 13,
  QUERY_INFO: 16,
  SET_INFO: 17,
  OPLOCK_BREAK: 18,
} as const);

export interface SmbReply {
  messageId: number;
  command: number;
  status: number;
  sessionId: number;
  treeId: number;
  body: Buffer;
}

const u16 = (s: string): Buffer => Buffer.from(s, 'utf16le');

/** The 64-byte SMB2 header (2.2.1.2) followed by `body`. */
export function smb2Message(command: number, body: Buffer, ids: { messageId: number; sessionId: number; treeId: number }): Buffer {
  const h = Buffer.alloc(64);
  h.writeUInt32LE(0x424d53fe, 0);
  h.writeUInt16LE(64, 4);
  h.writeUInt16LE(1, 6); // CreditCharge
  h.writeUInt16LE(command, 12);
  h.writeUInt16LE(64, 14); // CreditRequest
  h.writeUInt32LE(ids.messageId, 24);
  h.writeUInt32LE(ids.treeId, 36);
  h.writeUInt32LE(ids.sessionId % 2 ** 32, 40);
  h.writeUInt32LE(Math.floor(ids.sessionId / 2 ** 32), 44);
  return Buffer.concat([h, body]);
}

/** Request bodies (2.2.x), laid out for a message whose header is 64 bytes. */
export const bodies = {
  /** 2.0.2 and 2.1; with `encrypt`, 3.0 alone and the ENCRYPTION capability. */
  negotiate(clientGuid?: Buffer, encrypt = false): Buffer {
    if (encrypt) {
      const e = Buffer.alloc(36 + 2);
      e.writeUInt16LE(36, 0);
      e.writeUInt16LE(1, 2); // DialectCount
      e.writeUInt16LE(1, 4); // SIGNING_ENABLED
      e.writeUInt32LE(0x40, 8); // SMB2_GLOBAL_CAP_ENCRYPTION
      clientGuid?.copy(e, 12);
      e.writeUInt16LE(0x0300, 36);
      return e;
    }
    const b = Buffer.alloc(36 + 4);
    b.writeUInt16LE(36, 0);
    b.writeUInt16LE(2, 2); // DialectCount
    b.writeUInt16LE(1, 4); // SIGNING_ENABLED
    clientGuid?.copy(b, 12);
    b.writeUInt16LE(0x0202, 36);
    b.writeUInt16LE(0x0210, 38);
    return b;
  },
  sessionSetup(token: Buffer): Buffer {
    const b = Buffer.alloc(24);
    b.writeUInt16LE(25, 0);
    b.writeUInt8(1, 3); // SecurityMode: signing enabled
    b.writeUInt16LE(64 + 24, 12);
    b.writeUInt16LE(token.length, 14);
    return Buffer.concat([b, token]);
  },
  treeConnect(path: string): Buffer {
    const p = u16(path);
    const b = Buffer.alloc(8);
    b.writeUInt16LE(9, 0);
    b.writeUInt16LE(64 + 8, 4);
    b.writeUInt16LE(p.length, 6);
    return Buffer.concat([b, p]);
  },
  create(name: string, disposition = 3 /* OPEN_IF */): Buffer {
    const n = u16(name);
    const b = Buffer.alloc(56);
    b.writeUInt16LE(57, 0);
    b.writeUInt32LE(2, 4); // Impersonation
    b.writeUInt32LE(0x0012019f, 24); // read, write, attributes
    b.writeUInt32LE(0x80, 28); // NORMAL
    b.writeUInt32LE(7, 32); // share read, write, delete
    b.writeUInt32LE(disposition, 36);
    b.writeUInt32LE(0x40, 40); // NON_DIRECTORY_FILE
    b.writeUInt16LE(64 + 56, 44);
    b.writeUInt16LE(n.length, 46);
    return Buffer.concat([b, n.length > 0 ? n : Buffer.alloc(1)]);
  },
  /** `flags`: SMB2_WRITEFLAG_* (1: write-through). */
  write(fileId: Buffer, offset: number, data: Buffer, flags = 0): Buffer {
    const b = Buffer.alloc(48);
    b.writeUInt16LE(49, 0);
    b.writeUInt16LE(64 + 48, 2);
    b.writeUInt32LE(data.length, 4);
    b.writeUInt32LE(offset, 8);
    fileId.copy(b, 16);
    b.writeUInt32LE(flags, 44);
    return Buffer.concat([b, data]);
  },
  read(fileId: Buffer, offset: number, length: number): Buffer {
    const b = Buffer.alloc(49);
    b.writeUInt16LE(49, 0);
    b.writeUInt32LE(length, 4);
    b.writeUInt32LE(offset, 8);
    fileId.copy(b, 16);
    return b;
  },
  queryInfo(fileId: Buffer): Buffer {
    const b = Buffer.alloc(41);
    b.writeUInt16LE(41, 0);
    b.writeUInt8(1, 2); // FILE
    b.writeUInt8(18, 3); // FileAllInformation
    b.writeUInt32LE(4096, 4);
    fileId.copy(b, 24);
    return b;
  },
  close(fileId: Buffer): Buffer {
    const b = Buffer.alloc(24);
    b.writeUInt16LE(24, 0);
    fileId.copy(b, 8);
    return b;
  },
  echo(): Buffer {
    const b = Buffer.alloc(4);
    b.writeUInt16LE(4, 0);
    return b;
  },
};

/** Every element of a response frame. */
export function decodeReplies(frame: Buffer): SmbReply[] {
  const out: SmbReply[] = [];
  let at = 0;
  for (let i = 0; i < 128 && at + 64 <= frame.length; i++) {
    const next = frame.readUInt32LE(at + 20);
    const end = next === 0 ? frame.length : Math.min(frame.length, at + next);
    out.push({
      messageId: frame.readUInt32LE(at + 24),
      command: frame.readUInt16LE(at + 12),
      status: frame.readUInt32LE(at + 8),
      sessionId: frame.readUInt32LE(at + 40) + frame.readUInt32LE(at + 44) * 2 ** 32,
      treeId: frame.readUInt32LE(at + 36),
      body: frame.subarray(at + 64, end),
    });
    if (next === 0) break;
    at += next;
  }
  return out;
}

export class SmbTestClient {
  nextMessageId = 0;
  sessionId = 0;
  treeId = 0;
  closed = false;
  /** Every reply element received, for callers that send frames of their own. */
  onReply: ((r: SmbReply) => void) | null = null;
  private readonly waiting = new Map<number, { resolve: (r: SmbReply) => void; reject: (e: Error) => void }>();
  /** After an encrypting logon: this client's side of the session's keys (auth/encryption.ts clientSideOf). */
  private cipher: SessionCipher | null = null;

  private constructor(readonly sock: net.Socket) {
    const framer = new DirectTcpFramer(16 * 1024 * 1024, (frame) => {
      if (isTransformFrame(frame)) {
        const t = decodeTransformHeader(frame);
        try {
          if (this.cipher === null || t === null) throw new Error('an encrypted reply on a session without keys');
          frame = decryptMessage(this.cipher, frame, t);
        } catch (e) {
          // Not thrown from a socket callback (an uncaught exception): the requests waiting fail with it.
          this.fail(`an encrypted reply did not open: ${(e as Error).message}`);
          return;
        }
      }
      for (const r of decodeReplies(frame)) {
        this.onReply?.(r);
        const w = this.waiting.get(r.messageId);
        if (w && r.status !== 0x103 /* PENDING */) {
          this.waiting.delete(r.messageId);
          w.resolve(r);
        }
      }
    });
    sock.on('data', (c: Buffer) => framer.push(c));
    sock.on('error', () => undefined);
    sock.on('close', () => this.fail('connection closed'));
  }

  /** Ends the connection: every request still waiting fails, saying why. */
  private fail(why: string): void {
    this.closed = true;
    for (const [id, w] of this.waiting) w.reject(new Error(`${why} before the reply to message ${id}`));
    this.waiting.clear();
    this.sock.destroy();
  }

  static async connect(port: number): Promise<SmbTestClient> {
    const sock = net.connect({ port, host: '127.0.0.1', noDelay: true });
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
    return new SmbTestClient(sock);
  }

  /** A message with this client's next MessageId, session and tree (not sent). */
  message(command: number, body: Buffer): Buffer {
    return smb2Message(command, body, { messageId: this.nextMessageId++, sessionId: this.sessionId, treeId: this.treeId });
  }

  /** Sends one message (or several already framed together) as one Direct TCP frame (encrypted after an encrypting logon). */
  sendFrame(msg: Buffer): void {
    if (this.cipher !== null) msg = Buffer.concat(encryptMessage(this.cipher, this.sessionId, [msg]));
    const h = Buffer.alloc(4);
    h.writeUInt32BE(msg.length & 0xffffff, 0);
    this.sock.write(Buffer.concat([h, msg]));
  }

  async request(command: number, body: Buffer): Promise<SmbReply> {
    const msg = this.message(command, body);
    const id = msg.readUInt32LE(24);
    if (this.closed) throw new Error(`connection closed before the request ${command}`);
    const reply = new Promise<SmbReply>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    this.sendFrame(msg);
    return reply;
  }

  /**
   * NEGOTIATE (with `clientGuid`, default zeros), then a raw-NTLMSSP logon of `user`, then
   * TREE_CONNECT to `share`; with `encrypt`, at 3.0, everything after the SESSION_SETUP encrypted.
   */
  async logon(user: string, password: string, share: string, clientGuid?: Buffer, encrypt = false): Promise<void> {
    const neg = await this.request(SmbCommand.NEGOTIATE, bodies.negotiate(clientGuid, encrypt));
    if (neg.status !== 0) throw new Error(`NEGOTIATE: status 0x${neg.status.toString(16)}`);
    const ntlm = new TestNtlmClient({ user, password, keyExch: false });
    const first = await this.request(SmbCommand.SESSION_SETUP, bodies.sessionSetup(ntlm.negotiate()));
    if (first.status !== 0xc0000016) throw new Error(`SESSION_SETUP 1: status 0x${first.status.toString(16)}`);
    this.sessionId = first.sessionId;
    const tokenOff = first.body.readUInt16LE(4) - 64;
    const token = first.body.subarray(tokenOff, tokenOff + first.body.readUInt16LE(6));
    const done = await this.request(SmbCommand.SESSION_SETUP, bodies.sessionSetup(await ntlm.authenticate(token)));
    if (done.status !== 0) throw new Error(`SESSION_SETUP 2: status 0x${done.status.toString(16)}`);
    if (encrypt) {
      this.cipher = clientSideOf(sessionCipher(CipherId.AES_128_CCM, ntlm.exportedKey, null));
    }
    const tree = await this.request(SmbCommand.TREE_CONNECT, bodies.treeConnect(`\\\\127.0.0.1\\${share}`));
    if (tree.status !== 0) throw new Error(`TREE_CONNECT: status 0x${tree.status.toString(16)}`);
    this.treeId = tree.treeId;
  }

  /** CREATE (open or create) `name`: its FileId. */
  async open(name: string): Promise<Buffer> {
    const r = await this.request(SmbCommand.CREATE, bodies.create(name));
    if (r.status !== 0) throw new Error(`CREATE ${name}: status 0x${r.status.toString(16)}`);
    return Buffer.from(r.body.subarray(64, 80));
  }

  close(): void {
    this.sock.destroy();
  }
}
