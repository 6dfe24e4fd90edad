// A small SMB 2.1 client for tests that need what smbclient cannot do: hold an oplock or a lease
// and watch its break notifications. Built on the engine's own header codec; logs in with raw
// NTLMSSP (NTLMv2, unsigned requests), one request in flight at a time, plus unsolicited
// OPLOCK_BREAK notifications (MessageId all ones) delivered to `breaks`.
import { createHmac, randomBytes } from 'node:crypto';
import net from 'node:net';
import { decodeHeader, HEADER_SIZE, SmbWriter, writeHeader, type Smb2Header } from '../../server/src/smb2/codec.js';
import { Command } from '../../server/src/smb2/constants.js';

const hmac = (key: Uint8Array, ...parts: Uint8Array[]): Buffer => {
  const h = createHmac('md5', key);
  for (const p of parts) h.update(p);
  return h.digest();
};
const u16 = (s: string): Buffer => Buffer.from(s, 'utf16le');

export interface SmbReply {
  header: Smb2Header;
  body: Buffer;
}

/** An OPLOCK_BREAK notification: an oplock break (level, fileId) or a lease break (key, states). */
export type BreakNotice =
  | { kind: 'oplock'; level: number; fileId: Buffer; at: number }
  | { kind: 'lease'; key: Buffer; current: number; next: number; ackRequired: boolean; at: number };

export const LEASE_R = 1;
export const LEASE_H = 2;
export const LEASE_W = 4;

export class RawSmbClient {
  private buf = Buffer.alloc(0);
  private nextId = 0;
  private pending = new Map<number, (r: SmbReply) => void>();
  private sessionId = 0;
  private treeId = 0;
  readonly breaks: BreakNotice[] = [];
  private breakWaiters: (() => void)[] = [];
  /** Called for each break notice (to acknowledge it, close the file, or ignore it). */
  onBreak: ((b: BreakNotice) => void) | null = null;
  readonly clientGuid = randomBytes(16);

  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => this.onData(d));
    sock.on('error', () => undefined);
  }

  static async connect(port: number): Promise<RawSmbClient> {
    const sock = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
    return new RawSmbClient(sock);
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0) & 0xffffff;
      if (this.buf.length < 4 + len) return;
      const frame = this.buf.subarray(4, 4 + len);
      this.buf = this.buf.subarray(4 + len);
      const header = decodeHeader(frame, 0);
      const body = Buffer.from(frame.subarray(HEADER_SIZE));
      if (frame.readUInt32LE(24) === 0xffffffff && frame.readUInt32LE(28) === 0xffffffff) {
        this.notice(body);
        continue;
      }
      // Interim STATUS_PENDING replies are not the answer.
      if (header.status === 0x103) continue;
      const w = this.pending.get(header.messageId);
      this.pending.delete(header.messageId);
      w?.({ header, body });
    }
  }

  private notice(body: Buffer): void {
    const size = body.readUInt16LE(0);
    const n: BreakNotice =
      size === 24
        ? { kind: 'oplock', level: body[2]!, fileId: Buffer.from(body.subarray(8, 24)), at: Date.now() }
        : {
            kind: 'lease',
            ackRequired: (body.readUInt32LE(4) & 1) !== 0,
            key: Buffer.from(body.subarray(8, 24)),
            current: body.readUInt32LE(24),
            next: body.readUInt32LE(28),
            at: Date.now(),
          };
    this.breaks.push(n);
    for (const w of this.breakWaiters.splice(0)) w();
    this.onBreak?.(n);
  }

  /** Resolves once `count` break notices arrived, or rejects after `timeoutMs`. */
  async waitForBreaks(count: number, timeoutMs: number): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (this.breaks.length < count) {
      const left = end - Date.now();
      if (left <= 0) throw new Error(`${this.breaks.length} break(s) seen, ${count} expected`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.breakWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  request(command: number, body: Buffer): Promise<SmbReply> {
    const messageId = this.nextId++;
    const w = new SmbWriter(HEADER_SIZE + body.length);
    writeHeader(w, {
      creditCharge: 1,
      status: 0,
      command,
      creditRequest: 32,
      flags: 0,
      nextCommand: 0,
      messageId,
      treeId: this.treeId,
      sessionId: this.sessionId,
    });
    w.bytes(body);
    const msg = w.finish();
    const len = Buffer.alloc(4);
    len.writeUInt32BE(msg.length, 0);
    const reply = new Promise<SmbReply>((resolve) => this.pending.set(messageId, resolve));
    this.sock.write(Buffer.concat([len, msg]));
    return reply;
  }

  private async ok(command: number, body: Buffer, what: string): Promise<SmbReply> {
    const r = await this.request(command, body);
    if (r.header.status !== 0) throw new Error(`${what}: NTSTATUS 0x${r.header.status.toString(16)}`);
    return r;
  }

  /** NEGOTIATE (2.1), SESSION_SETUP (raw NTLMSSP, NTLMv2), TREE_CONNECT to \\127.0.0.1\share. */
  async login(user: string, password: string, share: string): Promise<void> {
    const neg = new SmbWriter(40);
    neg.u16(36).u16(1).u16(1).u16(0).u32(0).bytes(this.clientGuid).u64(0).u16(0x0210).u16(0);
    await this.ok(Command.NEGOTIATE, neg.finish().subarray(0, 38), 'NEGOTIATE');

    const ntlmNeg = Buffer.alloc(32);
    ntlmNeg.write('NTLMSSP\0', 0, 'latin1');
    ntlmNeg.writeUInt32LE(1, 8);
    ntlmNeg.writeUInt32LE(0xa2088205, 12); // 56/128, TARGET_INFO, ESS, ALWAYS_SIGN, NTLM, REQUEST_TARGET, UNICODE
    const first = await this.request(Command.SESSION_SETUP, sessionSetupBody(ntlmNeg));
    if (first.header.status !== 0xc0000016) throw new Error(`SESSION_SETUP 1: 0x${first.header.status.toString(16)}`);
    this.sessionId = first.header.sessionId;
    const challenge = first.body.subarray(
      first.body.readUInt16LE(4) - HEADER_SIZE,
      first.body.readUInt16LE(4) - HEADER_SIZE + first.body.readUInt16LE(6),
    );
    const { md4 } = await import('hash-wasm');
    const ntHash = Buffer.from(await md4(u16(password)), 'hex');
    await this.ok(Command.SESSION_SETUP, sessionSetupBody(authenticate(challenge, ntHash, user, 'WORKGROUP')), 'SESSION_SETUP');

    const path = u16(`\\\\127.0.0.1\\${share}`);
    const tc = new SmbWriter(8 + path.length);
    tc.u16(9)
      .u16(0)
      .u16(HEADER_SIZE + 8)
      .u16(path.length)
      .bytes(path);
    const r = await this.ok(Command.TREE_CONNECT, tc.finish(), 'TREE_CONNECT');
    this.treeId = r.header.treeId;
  }

  /**
   * CREATE (OPEN_IF, a non-directory, all access, share all) asking for `oplock` (0, 1, 8, 9) or,
   * with `lease`, a v1 lease (OplockLevel 0xFF and an RqLs context). Returns the FileId and what
   * was granted.
   */
  async create(
    name: string,
    opts: { oplock?: number; lease?: { key: Buffer; state: number } } = {},
  ): Promise<{ fileId: Buffer; oplock: number; leaseState: number | null }> {
    const n = u16(name);
    const ctx = opts.lease ? rqLs(opts.lease.key, opts.lease.state) : Buffer.alloc(0);
    const nameEnd = 56 + n.length;
    const ctxAt = ctx.length ? Math.ceil(nameEnd / 8) * 8 : 0;
    const w = new SmbWriter(Math.max(ctxAt + ctx.length, nameEnd));
    w.u16(57)
      .u8(0)
      .u8(opts.lease ? 0xff : (opts.oplock ?? 0))
      .u32(2)
      .u64(0)
      .u64(0);
    w.u32(0x001f01ff).u32(0x80).u32(7).u32(3).u32(0x40);
    w.u16(HEADER_SIZE + 56)
      .u16(n.length)
      .u32(ctx.length ? HEADER_SIZE + ctxAt : 0)
      .u32(ctx.length);
    w.bytes(n);
    if (ctx.length) w.zeros(ctxAt - nameEnd).bytes(ctx);
    const r = await this.ok(Command.CREATE, w.finish(), `CREATE ${name}`);
    const fileId = Buffer.from(r.body.subarray(64, 80));
    let leaseState: number | null = null;
    const ctxOff = r.body.readUInt32LE(80);
    if (ctxOff) {
      const c = r.body.subarray(ctxOff - HEADER_SIZE);
      leaseState = c.readUInt32LE(c.readUInt16LE(10) + 16);
    }
    return { fileId, oplock: r.body[2]!, leaseState };
  }

  async write(fileId: Buffer, offset: number, data: Buffer): Promise<void> {
    const w = new SmbWriter(48 + data.length);
    w.u16(49)
      .u16(HEADER_SIZE + 48)
      .u32(data.length)
      .u64(offset)
      .bytes(fileId)
      .u32(0)
      .u32(0)
      .u16(0)
      .u16(0)
      .u32(0)
      .bytes(data);
    await this.ok(Command.WRITE, w.finish(), 'WRITE');
  }

  async read(fileId: Buffer, offset: number, length: number): Promise<Buffer> {
    const w = new SmbWriter(49);
    w.u16(49).u8(0x50).u8(0).u32(length).u64(offset).bytes(fileId).u32(0).u32(0).u32(0).u16(0).u16(0).u8(0);
    const r = await this.ok(Command.READ, w.finish(), 'READ');
    return r.body.subarray(r.body[2]! - HEADER_SIZE, r.body[2]! - HEADER_SIZE + r.body.readUInt32LE(4));
  }

  async close(fileId: Buffer): Promise<void> {
    const w = new SmbWriter(24);
    w.u16(24).u16(0).u32(0).bytes(fileId);
    await this.ok(Command.CLOSE, w.finish(), 'CLOSE');
  }

  /** OPLOCK_BREAK acknowledgment of an oplock break (MS-SMB2 2.2.24.1); the granted level. */
  async ackOplock(fileId: Buffer, level: number): Promise<SmbReply> {
    const w = new SmbWriter(24);
    w.u16(24).u8(level).u8(0).u32(0).bytes(fileId);
    return this.request(Command.OPLOCK_BREAK, w.finish());
  }

  /** Lease break acknowledgment (MS-SMB2 2.2.24.2). */
  async ackLease(key: Buffer, state: number): Promise<SmbReply> {
    const w = new SmbWriter(36);
    w.u16(36).u16(0).u32(0).bytes(key).u32(state).u64(0);
    return this.request(Command.OPLOCK_BREAK, w.finish());
  }

  destroy(): void {
    this.sock.destroy();
  }
}

function sessionSetupBody(token: Buffer): Buffer {
  const w = new SmbWriter(24 + token.length);
  w.u16(25)
    .u8(0)
    .u8(1)
    .u32(0)
    .u32(0)
    .u16(HEADER_SIZE + 24)
    .u16(token.length)
    .u64(0)
    .bytes(token);
  return w.finish();
}

/** MS-SMB2 2.2.13.2.8 SMB2_CREATE_REQUEST_LEASE in its create context. */
function rqLs(key: Buffer, state: number): Buffer {
  const c = Buffer.alloc(24 + 32);
  c.writeUInt16LE(16, 4);
  c.writeUInt16LE(4, 6);
  c.writeUInt16LE(24, 10);
  c.writeUInt32LE(32, 12);
  c.write('RqLs', 16, 'latin1');
  key.copy(c, 24);
  c.writeUInt32LE(state, 40);
  return c;
}

/** MS-NLMP 3.1.5.1.2 an AUTHENTICATE_MESSAGE with an NTLMv2 response (no KEY_EXCH, no MIC). */
function authenticate(challenge: Buffer, ntHash: Buffer, user: string, domain: string): Buffer {
  const serverChallenge = challenge.subarray(24, 32);
  const targetInfo = challenge.subarray(challenge.readUInt32LE(44), challenge.readUInt32LE(44) + challenge.readUInt16LE(40));
  const responseKey = hmac(ntHash, u16(user.toUpperCase() + domain));
  const time = Buffer.alloc(8);
  time.writeBigUInt64LE(BigInt(Date.now()) * 10_000n + 116_444_736_000_000_000n);
  const temp = Buffer.concat([Buffer.from([1, 1, 0, 0, 0, 0, 0, 0]), time, randomBytes(8), Buffer.alloc(4), targetInfo, Buffer.alloc(4)]);
  const proof = hmac(responseKey, serverChallenge, temp);
  const nt = Buffer.concat([proof, temp]);
  const payload = [u16(domain), u16(user), u16('RAWCLIENT'), Buffer.alloc(24), nt];
  const fixed = 64;
  const m = Buffer.alloc(fixed + payload.reduce((s, p) => s + p.length, 0));
  m.write('NTLMSSP\0', 0, 'latin1');
  m.writeUInt32LE(3, 8);
  let off = fixed;
  for (const [at, p] of [
    [28, payload[0]!],
    [36, payload[1]!],
    [44, payload[2]!],
    [12, payload[3]!],
    [20, payload[4]!],
  ] as const) {
    m.writeUInt16LE(p.length, at);
    m.writeUInt16LE(p.length, at + 2);
    m.writeUInt32LE(off, at + 4);
    p.copy(m, off);
    off += p.length;
  }
  m.writeUInt32LE(off, 56); // an empty EncryptedRandomSessionKey, at the end
  m.writeUInt32LE((0xa2088205 & challenge.readUInt32LE(20)) >>> 0, 60);
  return m;
}
