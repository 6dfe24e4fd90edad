// A small SMB 2.1 client for tests that need what smbclient cannot do: hold an oplock or a lease
// and watch its break notifications. Built on SmbTestClient (test/helpers/smb-client.ts: framing,
// NEGOTIATE with this client's ClientGuid, raw-NTLMSSP logon, unsigned requests); unsolicited
// OPLOCK_BREAK notifications (MessageId all ones) are delivered to `breaks`.
import { randomBytes } from 'node:crypto';
import { HEADER_SIZE, SmbWriter } from '../../server/src/smb2/codec.js';
import { bodies, SmbCommand, SmbTestClient, type SmbReply } from './smb-client.js';

const u16 = (s: string): Buffer => Buffer.from(s, 'utf16le');

/** An OPLOCK_BREAK notification: an oplock break (level, fileId) or a lease break (key, states). */
export type BreakNotice =
  | { kind: 'oplock'; level: number; fileId: Buffer; at: number }
  | { kind: 'lease'; key: Buffer; current: number; next: number; ackRequired: boolean; at: number };

export const LEASE_R = 1;
export const LEASE_H = 2;
export const LEASE_W = 4;

export class RawSmbClient {
  readonly breaks: BreakNotice[] = [];
  private breakWaiters: (() => void)[] = [];
  /** Called for each break notice (to acknowledge it, close the file, or ignore it). */
  onBreak: ((b: BreakNotice) => void) | null = null;
  readonly clientGuid = randomBytes(16);

  private constructor(private readonly smb: SmbTestClient) {
    smb.onReply = (r) => {
      if (r.command === SmbCommand.OPLOCK_BREAK && r.messageId === 0xffffffff) this.notice(Buffer.from(r.body));
    };
  }

  static async connect(port: number): Promise<RawSmbClient> {
    return new RawSmbClient(await SmbTestClient.connect(port));
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
    return this.smb.request(command, body);
  }

  private async ok(command: number, body: Buffer, what: string): Promise<SmbReply> {
    const r = await this.request(command, body);
    if (r.status !== 0) throw new Error(`${what}: NTSTATUS 0x${r.status.toString(16)}`);
    return r;
  }

  /** NEGOTIATE (2.0.2 or 2.1, with clientGuid), SESSION_SETUP (raw NTLMSSP, NTLMv2), TREE_CONNECT to \\\\127.0.0.1\\share. */
  login(user: string, password: string, share: string): Promise<void> {
    return this.smb.logon(user, password, share, this.clientGuid);
  }

  /**
   * CREATE (OPEN_IF, a non-directory, all access, share all unless `share`) asking for `oplock`
   * (0, 1, 8, 9) or, with `lease`, a v1 lease (OplockLevel 0xFF and an RqLs context); `durable`
   * adds a DHnQ context, `reconnect` a DHnC naming that FileId. Returns the FileId and what was
   * granted; a failure is thrown (see createStatus).
   */
  async create(
    name: string,
    opts: CreateOptions = {},
  ): Promise<{ fileId: Buffer; oplock: number; leaseState: number | null; durable: boolean }> {
    const r = await this.request(SmbCommand.CREATE, createBody(name, opts));
    if (r.status !== 0) throw new Error(`CREATE ${name}: NTSTATUS 0x${r.status.toString(16)}`);
    const fileId = Buffer.from(r.body.subarray(64, 80));
    let leaseState: number | null = null;
    let durable = false;
    let at = r.body.readUInt32LE(80);
    while (at) {
      const c = r.body.subarray(at - HEADER_SIZE);
      const tag = c.toString('latin1', c.readUInt16LE(4), c.readUInt16LE(4) + 4);
      if (tag === 'RqLs') leaseState = c.readUInt32LE(c.readUInt16LE(10) + 16);
      if (tag === 'DHnQ') durable = true;
      const next = c.readUInt32LE(0);
      at = next ? at + next : 0;
    }
    return { fileId, oplock: r.body[2]!, leaseState, durable };
  }

  /** The NTSTATUS a CREATE gets (0 on success). */
  async createStatus(name: string, opts: CreateOptions = {}): Promise<number> {
    return (await this.request(SmbCommand.CREATE, createBody(name, opts))).status;
  }

  async write(fileId: Buffer, offset: number, data: Buffer): Promise<void> {
    await this.ok(SmbCommand.WRITE, bodies.write(fileId, offset, data), 'WRITE');
  }

  async read(fileId: Buffer, offset: number, length: number): Promise<Buffer> {
    const r = await this.ok(SmbCommand.READ, bodies.read(fileId, offset, length), 'READ');
    return r.body.subarray(r.body[2]! - HEADER_SIZE, r.body[2]! - HEADER_SIZE + r.body.readUInt32LE(4));
  }

  async close(fileId: Buffer): Promise<void> {
    await this.ok(SmbCommand.CLOSE, bodies.close(fileId), 'CLOSE');
  }

  /** FLUSH (MS-SMB2 2.2.17): the status. */
  async flush(fileId: Buffer): Promise<number> {
    const b = Buffer.alloc(24);
    b.writeUInt16LE(24, 0);
    fileId.copy(b, 8);
    return (await this.request(SmbCommand.FLUSH, b)).status;
  }

  /** LOCK of one range (MS-SMB2 2.2.26), exclusive or shared, failing at once on a conflict. */
  async lock(fileId: Buffer, offset: number, length: number, exclusive = true): Promise<void> {
    const w = new SmbWriter(48);
    w.u16(48).u16(1).u32(0).bytes(fileId);
    w.u64(offset)
      .u64(length)
      .u32((exclusive ? 0x02 : 0x01) | 0x10)
      .u32(0);
    await this.ok(SmbCommand.LOCK, w.finish(), 'LOCK');
  }

  /** OPLOCK_BREAK acknowledgment of an oplock break (MS-SMB2 2.2.24.1); the granted level. */
  async ackOplock(fileId: Buffer, level: number): Promise<SmbReply> {
    const w = new SmbWriter(24);
    w.u16(24).u8(level).u8(0).u32(0).bytes(fileId);
    return this.request(SmbCommand.OPLOCK_BREAK, w.finish());
  }

  /** Lease break acknowledgment (MS-SMB2 2.2.24.2). */
  async ackLease(key: Buffer, state: number): Promise<SmbReply> {
    const w = new SmbWriter(36);
    w.u16(36).u16(0).u32(0).bytes(key).u32(state).u64(0);
    return this.request(SmbCommand.OPLOCK_BREAK, w.finish());
  }

  /** QUERY_INFO (MS-SMB2 2.2.37): the status and the output buffer. */
  async queryInfo(
    fileId: Buffer,
    infoType: number,
    infoClass: number,
    opts: { additional?: number; flags?: number; outputLength?: number; input?: Buffer } = {},
  ): Promise<{ status: number; output: Buffer }> {
    const input = opts.input ?? Buffer.alloc(0);
    const w = new SmbWriter(40 + input.length);
    w.u16(41)
      .u8(infoType)
      .u8(infoClass)
      .u32(opts.outputLength ?? 65536)
      .u16(input.length ? HEADER_SIZE + 40 : 0)
      .u16(0)
      .u32(input.length)
      .u32(opts.additional ?? 0)
      .u32(opts.flags ?? 0)
      .bytes(fileId)
      .bytes(input);
    const r = await this.request(SmbCommand.QUERY_INFO, input.length ? w.finish() : Buffer.concat([w.finish(), Buffer.alloc(1)]));
    if (r.body.length < 8) return { status: r.status, output: Buffer.alloc(0) };
    const at = r.body.readUInt16LE(2) - HEADER_SIZE;
    return { status: r.status, output: Buffer.from(r.body.subarray(at, at + r.body.readUInt32LE(4))) };
  }

  /** SET_INFO (MS-SMB2 2.2.39): the status. */
  async setInfo(fileId: Buffer, infoType: number, infoClass: number, buffer: Buffer, additional = 0): Promise<number> {
    const w = new SmbWriter(32 + buffer.length);
    w.u16(33)
      .u8(infoType)
      .u8(infoClass)
      .u32(buffer.length)
      .u16(HEADER_SIZE + 32)
      .u16(0)
      .u32(additional)
      .bytes(fileId)
      .bytes(buffer);
    return (await this.request(SmbCommand.SET_INFO, w.finish())).status;
  }

  /** IOCTL of an FSCTL (MS-SMB2 2.2.31, SMB2_0_IOCTL_IS_FSCTL): the status and the output buffer. */
  async fsctl(fileId: Buffer, ctlCode: number, input: Buffer, maxOutput = 65536): Promise<{ status: number; output: Buffer }> {
    const w = new SmbWriter(56 + input.length);
    w.u16(57)
      .u16(0)
      .u32(ctlCode)
      .bytes(fileId)
      .u32(input.length ? HEADER_SIZE + 56 : 0)
      .u32(input.length)
      .u32(0)
      .u32(0)
      .u32(0)
      .u32(maxOutput)
      .u32(1)
      .u32(0)
      .bytes(input);
    const r = await this.request(SmbCommand.IOCTL, input.length ? w.finish() : Buffer.concat([w.finish(), Buffer.alloc(1)]));
    const count = r.body.length >= 48 ? r.body.readUInt32LE(36) : 0;
    if (count === 0) return { status: r.status, output: Buffer.alloc(0) };
    const at = r.body.readUInt32LE(32) - HEADER_SIZE;
    return { status: r.status, output: Buffer.from(r.body.subarray(at, at + count)) };
  }

  destroy(): void {
    this.smb.close();
  }
}

export interface CreateOptions {
  oplock?: number;
  lease?: { key: Buffer; state: number };
  durable?: boolean;
  reconnect?: Buffer;
  share?: number;
  /** CreateOptions (default NON_DIRECTORY_FILE). */
  options?: number;
  /** CreateDisposition (default OPEN_IF, 3). */
  disposition?: number;
  /** DesiredAccess (default 0x001f01ff, all file rights). */
  access?: number;
  /** More create contexts (4-letter tag, data). */
  contexts?: [string, Buffer][];
}

/** MS-SMB2 2.2.13 CREATE request body (see RawSmbClient.create). */
function createBody(name: string, opts: CreateOptions): Buffer {
  const n = u16(name);
  const list: [string, Buffer][] = [];
  if (opts.lease) {
    const d = Buffer.alloc(32);
    opts.lease.key.copy(d, 0);
    d.writeUInt32LE(opts.lease.state, 16);
    list.push(['RqLs', d]);
  }
  if (opts.durable) list.push(['DHnQ', Buffer.alloc(16)]);
  if (opts.reconnect) list.push(['DHnC', opts.reconnect]);
  if (opts.contexts) list.push(...opts.contexts);
  const ctx = createContexts(list);
  const nameEnd = 56 + n.length;
  const ctxAt = ctx.length ? Math.ceil(nameEnd / 8) * 8 : 0;
  const w = new SmbWriter(Math.max(ctxAt + ctx.length, nameEnd));
  w.u16(57)
    .u8(0)
    .u8(opts.lease ? 0xff : (opts.oplock ?? 0))
    .u32(2)
    .u64(0)
    .u64(0);
  w.u32(opts.access ?? 0x001f01ff)
    .u32(0x80)
    .u32(opts.share ?? 7)
    .u32(opts.disposition ?? 3)
    .u32(opts.options ?? 0x40);
  w.u16(HEADER_SIZE + 56)
    .u16(n.length)
    .u32(ctx.length ? HEADER_SIZE + ctxAt : 0)
    .u32(ctx.length);
  w.bytes(n);
  if (ctx.length) w.zeros(ctxAt - nameEnd).bytes(ctx);
  return w.finish();
}

/** MS-SMB2 2.2.13.2 a chain of create contexts with 4-letter names, each 8-byte aligned. */
function createContexts(list: [string, Buffer][]): Buffer {
  const parts = list.map(([tag, data], i) => {
    const size = 24 + data.length;
    const padded = i === list.length - 1 ? size : Math.ceil(size / 8) * 8;
    const c = Buffer.alloc(padded);
    if (i < list.length - 1) c.writeUInt32LE(padded, 0);
    c.writeUInt16LE(16, 4);
    c.writeUInt16LE(4, 6);
    c.writeUInt16LE(24, 10);
    c.writeUInt32LE(data.length, 12);
    c.write(tag, 16, 'latin1');
    data.copy(c, 24);
    return c;
  });
  return Buffer.concat(parts);
}
