// One SMB2 connection without sockets: frames in, response frames out. What is checked before any
// session exists: negotiation, compounds, the credit window, framing errors.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Logger } from 'pino';
import { memoryServer } from '../testing/memory-server.js';
import { decodeHeader, HEADER_SIZE, SmbWriter, utf16, writeHeader } from './codec.js';
import { Command, CreateDisposition, CreateOptions, HeaderFlags } from './constants.js';
import { BAD_SIGNATURE_LOG_EVERY, SmbConnection, type SmbEngineOptions } from './connection.js';
import {
  CipherId,
  clientSideOf,
  decodeTransformHeader,
  decryptMessage,
  encryptMessage,
  isTransformFrame,
  sessionCipher,
  type SessionCipher,
} from './auth/encryption.js';
import { encodeCreateContexts, type CreateContext } from './messages.js';
import { OplockLevel } from './oplock.js';
import { NtStatus, SmbStatusError } from './status.js';
import { OpenTable } from '../vfs/locks/opens.js';
import { newSession, type Open, type Session } from './state.js';
import { smb2Signature, smb30SigningKey, verifySignature, verifySmb2Signature, type SmbUser, type SmbUserDirectory } from './auth/index.js';
import { smb3Kdf, smb3Signature } from './auth/signing.js';
import { createCipheriv, createHash } from 'node:crypto';
import { listStreams } from '../vfs/streams.js';
import { CreateMode } from '../vfs/service.js';
import { alice, create, createRequest, fileContext } from './testing.js';
import { TestNtlmClient } from '../../../test/helpers/ntlm-client.js';
import { LogonLimiter } from './auth/logon-limiter.js';

/** A logger that keeps the messages of its info and warn lines. */
/** Serves one frame as the listener does (server.ts): an encrypted one is opened first (unseal), then handled as its session's. */
async function serve(conn: SmbConnection, frame: Buffer): Promise<void> {
  if (!isTransformFrame(frame)) return conn.handleFrame(frame);
  const opened = conn.unseal(frame);
  if (opened !== null) await conn.handleFrame(opened.message, opened.session);
}

function recordingLog(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const keep = (_obj: unknown, msg: string): void => void lines.push(msg);
  const log = { info: keep, warn: keep, error: () => undefined, debug: () => undefined } as unknown as Logger;
  return { log, lines };
}

/**
 * A memory server whose users are `directory`'s; its connections send their frames to `sent` and
 * their reasons for dropping themselves to `aborted`.
 */
async function testServer(directory: SmbUserDirectory = { lookup: () => Promise.resolve(null) }, extra: Partial<SmbEngineOptions> = {}) {
  const srv = await memoryServer();
  const sent: Buffer[] = [];
  const aborted: string[] = [];
  /** A connection; `more` adds to the server's options for it alone, `out` records its frames apart. */
  const connect = (log?: Logger, more: Partial<SmbEngineOptions> = {}, out: Buffer[] = sent): SmbConnection =>
    new SmbConnection(
      {
        fs: srv.fs,
        directory,
        serverGuid: Buffer.alloc(16, 9),
        signingRequired: false,
        serverName: 'TEST',
        domain: 'WORKGROUP',
        ...extra,
        ...more,
      },
      (parts) => out.push(Buffer.concat(parts)),
      (why) => aborted.push(why),
      log,
    );
  return { srv, sent, aborted, connect };
}

async function connection(log?: Logger) {
  const { srv, sent, aborted, connect } = await testServer();
  return { srv, conn: connect(log), sent, aborted };
}

/** The user most tests log on as. */
const ALICE = { name: 'alice', uid: 1000, gid: 1000, gids: [] };

/** A server where alice (password "right") logs on for real (NTLM). */
async function aliceServer(extra: Partial<SmbEngineOptions> = {}) {
  const ntHash = await new TestNtlmClient({ user: 'alice', password: 'right' }).ntHash();
  return testServer({ lookup: (name) => Promise.resolve(name === 'alice' ? { user: ALICE, ntHash } : null) }, extra);
}

/**
 * Puts session `id` on `conn`, logged on as `user` as SESSION_SETUP leaves it (the NTLM exchange is
 * smb-auth's, tested there); with a signing key, signing is required.
 */
function validSession(conn: SmbConnection, id: number, user: SmbUser, signingKey: Buffer | null = null): Session {
  const session: Session = {
    ...newSession(id),
    state: 'valid',
    user,
    owner: user,
    identity: { uid: user.uid, gid: user.gid, gids: [...user.gids] },
    signingKey,
    signingRequired: signingKey !== null,
  };
  (conn as unknown as { sessions: Map<number, Session> }).sessions.set(id, session);
  // The user exists in the connection's directory too, as a logged-on user does (a TREE_CONNECT
  // asks for it); its NT hash is never checked (no NTLM exchange for this session).
  const opts = (conn as unknown as { opts: { directory: SmbUserDirectory } }).opts;
  const inner = opts.directory;
  opts.directory = {
    lookup: (name) =>
      name.toLowerCase() === user.name.toLowerCase() ? Promise.resolve({ user, ntHash: Buffer.alloc(16) }) : inner.lookup(name),
  };
  return session;
}

/** NEGOTIATE (2.1), session 5 logged on as `user` and a TREE_CONNECT to the share, as messages 0 and 1: the tree id. */
async function loggedOn(conn: SmbConnection, sent: Buffer[], user: SmbUser): Promise<number> {
  await conn.handleFrame(request(Command.NEGOTIATE, 0, negotiate([0x0210]), { credits: 100 }));
  validSession(conn, 5, user);
  const path = utf16('\\\\127.0.0.1\\EXPORT');
  const tc = Buffer.concat([Buffer.from([9, 0, 0, 0, HEADER_SIZE + 8, 0, path.length, 0]), path]);
  await conn.handleFrame(request(Command.TREE_CONNECT, 1, tc, { sessionId: 5 }));
  assert.equal(decodeHeader(sent[1]!).status, 0);
  return decodeHeader(sent[1]!).treeId;
}

function request(
  command: number,
  messageId: number,
  body: Buffer,
  opts: { sessionId?: number; treeId?: number; flags?: number; charge?: number; credits?: number } = {},
): Buffer {
  const w = new SmbWriter();
  writeHeader(w, {
    creditCharge: opts.charge ?? 1,
    status: 0,
    command,
    creditRequest: opts.credits ?? 10,
    flags: opts.flags ?? 0,
    nextCommand: 0,
    messageId,
    treeId: opts.treeId ?? 0,
    sessionId: opts.sessionId ?? 0,
  });
  return Buffer.concat([w.finish(), body]);
}

/** Chains messages into one compound frame (each padded to 8 bytes, NextCommand set). */
function compound(msgs: Buffer[]): Buffer {
  const parts = msgs.map((m, i) => {
    if (i === msgs.length - 1) return m;
    const padded = Buffer.alloc(Math.ceil(m.length / 8) * 8);
    m.copy(padded);
    padded.writeUInt32LE(padded.length, 20);
    return padded;
  });
  return Buffer.concat(parts);
}

function negotiate(dialects: number[]): Buffer {
  const w = new SmbWriter();
  w.u16(36).u16(dialects.length).u16(1).u16(0).u32(0).zeros(16).zeros(8);
  for (const d of dialects) w.u16(d);
  return w.finish();
}

const echo = Buffer.from([4, 0, 0, 0]);

/** MS-SMB2 2.2.13 CREATE: GENERIC_READ|GENERIC_WRITE unless told, the name at offset 120. */
function createBody(name: string, disposition: number, access = 0xc0000000, options = 0): Buffer {
  const n = utf16(name);
  const w = new SmbWriter();
  w.u16(57)
    .u8(0)
    .u8(0)
    .u32(2)
    .zeros(16)
    .u32(access)
    .u32(0)
    .u32(7)
    .u32(disposition)
    .u32(options)
    .u16(HEADER_SIZE + 56)
    .u16(n.length)
    .u32(0)
    .u32(0)
    .bytes(n);
  return w.finish();
}

/** CREATE (OPEN_IF) asking for `oplock` (RequestedOplockLevel), with `contexts` 8-byte aligned after the name. */
function createWith(name: string, oplock: number, contexts: CreateContext[] = []): Buffer {
  const body = createBody(name, CreateDisposition.OPEN_IF);
  body[3] = oplock;
  if (contexts.length === 0) return body;
  const at = Math.ceil((HEADER_SIZE + body.length) / 8) * 8;
  const data = encodeCreateContexts(contexts);
  body.writeUInt32LE(at, 48);
  body.writeUInt32LE(data.length, 52);
  return Buffer.concat([body, Buffer.alloc(at - HEADER_SIZE - body.length), data]);
}

/** MS-SMB2 2.2.5 SESSION_SETUP carrying `token` (the buffer at offset 88). */
function sessionSetupBody(token: Buffer, securityMode = 1): Buffer {
  const w = new SmbWriter();
  w.u16(25)
    .u8(0)
    .u8(securityMode)
    .u32(0)
    .u32(0)
    .u16(HEADER_SIZE + 24)
    .u16(token.length)
    .u64(0)
    .bytes(token);
  return w.finish();
}

/** MS-SMB2 2.2.21 WRITE at offset 0 on FileId all-ones (the previous element's open). */
function writeBody(data: Buffer): Buffer {
  const w = new SmbWriter();
  w.u16(49)
    .u16(HEADER_SIZE + 48)
    .u32(data.length)
    .u64(0)
    .bytes(Buffer.alloc(16, 0xff))
    .u32(0)
    .u32(0)
    .u16(0)
    .u16(0)
    .u32(0)
    .bytes(data);
  return w.finish();
}

function closeBody(): Buffer {
  const w = new SmbWriter();
  w.u16(24).u16(0).u32(0).bytes(Buffer.alloc(16, 0xff));
  return w.finish();
}

/** The elements of a response frame: header and body. */
function elements(frame: Buffer): { status: number; command: number; credits: number; body: Buffer; flags: number }[] {
  const out = [];
  for (let at = 0; ;) {
    const h = decodeHeader(frame, at);
    const end = h.nextCommand ? at + h.nextCommand : frame.length;
    out.push({
      status: h.status,
      command: h.command,
      credits: h.creditRequest,
      body: frame.subarray(at + HEADER_SIZE, end),
      flags: h.flags,
    });
    if (!h.nextCommand) return out;
    assert.equal(h.nextCommand % 8, 0);
    at = end;
  }
}

/** The messages of a frame, each with its padding (what its signature covers). */
function messages(frame: Buffer): Buffer[] {
  const out = [];
  for (let at = 0; ;) {
    const next = decodeHeader(frame, at).nextCommand;
    out.push(frame.subarray(at, next ? at + next : frame.length));
    if (!next) return out;
    at += next;
  }
}

/** A valid session with a signing key, as SESSION_SETUP leaves it, and a tree on the export share. */
async function signingSession(conn: SmbConnection, sent: Buffer[], key: Buffer): Promise<{ sessionId: number; treeId: number }> {
  validSession(conn, 8, ALICE, key);
  const path = utf16('\\\\127.0.0.1\\export');
  const tc = Buffer.concat([Buffer.from([9, 0, 0, 0, HEADER_SIZE + 8, 0, path.length, 0]), path]);
  await conn.handleFrame(signCompound(key, [request(Command.TREE_CONNECT, 1, tc, { sessionId: 8 })]));
  const reply = decodeHeader(sent[sent.length - 1]!);
  assert.equal(reply.status, 0);
  return { sessionId: 8, treeId: reply.treeId };
}

/** A compound (or a lone message) signed as a client signs it: each element padded, linked, then signed. */
function signCompound(key: Buffer, msgs: Buffer[], sign: (key: Buffer, msg: Buffer) => Buffer = smb2Signature): Buffer {
  return Buffer.concat(
    msgs.map((m, i) => {
      const last = i === msgs.length - 1;
      const padded = Buffer.alloc(last ? m.length : Math.ceil(m.length / 8) * 8);
      m.copy(padded);
      if (!last) padded.writeUInt32LE(padded.length, 20);
      padded.writeUInt32LE(padded.readUInt32LE(16) | HeaderFlags.SIGNED, 16);
      sign(key, padded).copy(padded, 48);
      return padded;
    }),
  );
}

/** A 3.1.1 negotiate context. */
const ctx = (type: number, data: Buffer): Buffer => Buffer.concat([new SmbWriter().u16(type).u16(data.length).u32(0).finish(), data]);
/** A preauth integrity context offering these hash algorithms. */
function preauth(...hashes: number[]): Buffer {
  const w = new SmbWriter().u16(hashes.length).u16(32);
  for (const h of hashes) w.u16(h);
  return ctx(1, Buffer.concat([w.finish(), Buffer.alloc(32, 7)]));
}
const signingCaps = ctx(8, new SmbWriter().u16(1).u16(1).finish()); // CMAC
const gmacCaps = ctx(8, new SmbWriter().u16(2).u16(2).u16(1).finish()); // GMAC, then CMAC: GMAC is chosen
const encryptionCaps = ctx(2, new SmbWriter().u16(2).u16(1).u16(2).finish()); // CCM, GCM: GCM is preferred
/** A 3.1.1 NEGOTIATE body with these negotiate contexts (8-byte aligned from the header). */
function negotiate311(contexts: Buffer[]): Buffer {
  const dialects = [0x0202, 0x0210, 0x0300, 0x0302, 0x0311];
  const start = Math.ceil((HEADER_SIZE + 36 + dialects.length * 2) / 8) * 8;
  const w = new SmbWriter();
  w.u16(36).u16(dialects.length).u16(1).u16(0).u32(0).zeros(16).u32(start).u16(contexts.length).u16(0);
  for (const d of dialects) w.u16(d);
  for (const c of contexts) w.align(8).bytes(c);
  return w.finish();
}
const sha = (a: Buffer, b: Buffer) => createHash('sha512').update(a).update(b).digest();

/**
 * A raw NTLMSSP logon as alice (MessageIds `id`, `id` + 1) after the 3.1.1 NEGOTIATE `neg`
 * (request and response): the session, its signing key as the preauth hash gives it, the
 * session key and that hash. `status` is what the final SESSION_SETUP must answer.
 */
async function logOn311(
  sent: Buffer[],
  conn: SmbConnection,
  neg: Buffer[],
  id: number,
  securityMode = 1,
  status: number = NtStatus.SUCCESS,
  algorithm: 'aes-128-cmac' | 'aes-128-gmac' = 'aes-128-cmac',
): Promise<{ sessionId: number; key: Buffer; sessionKey: Buffer; hash: Buffer; flags: number }> {
  const client = new TestNtlmClient({ user: 'alice', password: 'right' });
  const ss1 = request(Command.SESSION_SETUP, id, sessionSetupBody(client.negotiate(), securityMode));
  await conn.handleFrame(ss1);
  const ss1Resp = sent[sent.length - 1]!;
  assert.equal(decodeHeader(ss1Resp).status, NtStatus.MORE_PROCESSING_REQUIRED);
  const sessionId = decodeHeader(ss1Resp).sessionId;
  const off = ss1Resp.readUInt16LE(HEADER_SIZE + 4);
  const auth = await client.authenticate(ss1Resp.subarray(off, off + ss1Resp.readUInt16LE(HEADER_SIZE + 6)));
  const ss2 = request(Command.SESSION_SETUP, id + 1, sessionSetupBody(auth, securityMode), { sessionId });
  await conn.handleFrame(ss2);
  const final = sent[sent.length - 1]!;
  assert.equal(decodeHeader(final).status, status);
  // SHA-512 over 64 zero bytes, NEGOTIATE request and response, then this session's messages
  // but for the final response; the key is KDF(SessionKey, "SMBSigningKey", that hash).
  let h = Buffer.alloc(64);
  for (const m of [...neg, ss1, ss1Resp, ss2]) h = sha(h, m);
  const key = smb3Kdf(client.exportedKey.subarray(0, 16), 'SMBSigningKey\0', h);
  if (status === NtStatus.SUCCESS) {
    assert.notEqual(decodeHeader(final).flags & HeaderFlags.SIGNED, 0, 'the final SESSION_SETUP response is signed');
    assert.ok(verifySignature(algorithm, key, final), `${algorithm} under the key the preauth hash gives`);
    assert.ok(!verifySignature(algorithm, smb30SigningKey(client.exportedKey), final), 'not the 3.0 key');
  }
  return { sessionId, key, sessionKey: client.exportedKey, hash: h, flags: final.readUInt16LE(HEADER_SIZE + 2) };
}

describe('SMB2 connection', () => {
  it('answers the SMB1 multi-protocol NEGOTIATE with an SMB2 NEGOTIATE response naming 2.??? ', async () => {
    const { conn, sent, srv } = await connection();
    const dialects = Buffer.from('\x02NT LM 0.12\0\x02SMB 2.002\0\x02SMB 2.???\0', 'latin1');
    const smb1 = Buffer.alloc(35);
    smb1.writeUInt32LE(0x424d53ff, 0);
    smb1[4] = 0x72;
    smb1.writeUInt16LE(dialects.length, 33);
    await conn.handleFrame(Buffer.concat([smb1, dialects]));
    const [r] = elements(sent[0]!);
    assert.equal(r!.status, 0);
    assert.equal(r!.body.readUInt16LE(4), 0x02ff);
    assert.ok(r!.credits >= 1);
    // Then the SMB2 NEGOTIATE, MessageId 1.
    await conn.handleFrame(request(Command.NEGOTIATE, 1, negotiate([0x0202, 0x0210])));
    assert.equal(elements(sent[1]!)[0]!.body.readUInt16LE(4), 0x0210);
    await srv.close();
  });

  it('picks the highest of 3.0.2, 3.0, 2.1 (LARGE_MTU and leasing, 1 MiB) and 2.0.2 (64 KiB); 3.1.1 needs its contexts', async () => {
    for (const [dialects, dialect, max, caps] of [
      [[0x0202, 0x0210, 0x0300, 0x0302], 0x0302, 1 << 20, 6],
      [[0x0202, 0x0210, 0x0300], 0x0300, 1 << 20, 6],
      [[0x0202, 0x0210], 0x0210, 1 << 20, 6],
      [[0x0202], 0x0202, 65536, 0],
    ] as const) {
      const { conn, sent, srv } = await connection();
      await conn.handleFrame(request(Command.NEGOTIATE, 0, negotiate([...dialects])));
      const body = elements(sent[0]!)[0]!.body;
      assert.equal(body.readUInt16LE(0), 65);
      assert.equal(body.readUInt16LE(2) & 1, 1, 'signing enabled');
      assert.equal(body.readUInt16LE(4), dialect);
      assert.deepEqual(body.subarray(8, 24), Buffer.alloc(16, 9), 'server GUID');
      assert.equal(body.readUInt32LE(24), caps);
      assert.deepEqual([body.readUInt32LE(28), body.readUInt32LE(32), body.readUInt32LE(36)], [max, max, max]);
      await srv.close();
    }
    for (const [dialects, status] of [
      [[0x0311], NtStatus.INVALID_PARAMETER], // 3.1.1 without a preauth integrity context
      [[0x0400], NtStatus.NOT_SUPPORTED],
    ] as const) {
      const { conn, sent, srv } = await connection();
      await conn.handleFrame(request(Command.NEGOTIATE, 0, negotiate([...dialects])));
      assert.equal(elements(sent[0]!)[0]!.status, status);
      await srv.close();
    }
  });

  it('at 3.1.1 the signing key comes from the preauth hash of the NEGOTIATE and SESSION_SETUP messages', async () => {
    const { srv, sent, aborted, connect } = await aliceServer();

    // Contexts refused: a hash other than SHA-512 only, a preauth context twice.
    for (const [contexts, status] of [
      [[preauth(2)], NtStatus.SMB_NO_PREAUTH_INTEGRITY_HASH_OVERLAP],
      [[preauth(1), preauth(1)], NtStatus.INVALID_PARAMETER],
    ] as const) {
      const c = connect();
      await c.handleFrame(request(Command.NEGOTIATE, 0, negotiate311([...contexts])));
      assert.equal(decodeHeader(sent[sent.length - 1]!).status, status);
    }

    /** NEGOTIATE at 3.1.1, checking the response's contexts: the request and response, as sent. */
    const negotiateOn = async (conn: SmbConnection): Promise<Buffer[]> => {
      const negReq = request(Command.NEGOTIATE, 0, negotiate311([preauth(1), encryptionCaps, signingCaps]), { credits: 100 });
      await conn.handleFrame(negReq);
      const negResp = sent[sent.length - 1]!;
      const body = negResp.subarray(HEADER_SIZE);
      assert.equal(body.readUInt16LE(4), 0x0311);
      assert.equal(body.readUInt32LE(24), 6, 'LARGE_MTU and LEASING only: at 3.1.1 encryption is a context, not a capability');
      // The response's contexts: preauth integrity (SHA-512, a 32-byte salt), signing (AES-CMAC) and the cipher (AES-128-GCM).
      const contexts: { type: number; data: Buffer }[] = [];
      for (let i = 0, at = body.readUInt32LE(60); i < body.readUInt16LE(6); i++) {
        assert.equal(at % 8, 0, 'contexts are 8-byte aligned');
        const len = negResp.readUInt16LE(at + 2);
        contexts.push({ type: negResp.readUInt16LE(at), data: negResp.subarray(at + 8, at + 8 + len) });
        at = Math.ceil((at + 8 + len) / 8) * 8;
      }
      assert.deepEqual(
        contexts.map((c) => c.type),
        [1, 8, 2],
      );
      const [p, sg, e] = [contexts[0]!.data, contexts[1]!.data, contexts[2]!.data];
      assert.deepEqual([p.readUInt16LE(0), p.readUInt16LE(2), p.readUInt16LE(4), p.length], [1, 32, 1, 38]);
      assert.deepEqual([sg.readUInt16LE(0), sg.readUInt16LE(2)], [1, 1]);
      assert.deepEqual([e.readUInt16LE(0), e.readUInt16LE(2), e.length], [1, CipherId.AES_128_GCM, 4]);
      return [negReq, negResp];
    };
    const path = utf16('\\\\127.0.0.1\\export');
    const tc = Buffer.concat([Buffer.from([9, 0, 0, 0, HEADER_SIZE + 8, 0, path.length, 0]), path]);
    /** A signed TREE_CONNECT: its tree id. */
    const treeConnect = async (conn: SmbConnection, id: number, sessionId: number, key: Buffer): Promise<number> => {
      await conn.handleFrame(signCompound(key, [request(Command.TREE_CONNECT, id, tc, { sessionId })], smb3Signature));
      const tree = sent[sent.length - 1]!;
      assert.equal(decodeHeader(tree).status, 0);
      assert.ok(verifySignature('aes-128-cmac', key, tree));
      return decodeHeader(tree).treeId;
    };
    const unsignedTc = 'an unsigned TREE_CONNECT on a 3.1.1 connection';

    // Two sessions on one connection: each hash starts from the connection's.
    const conn = connect();
    const neg = await negotiateOn(conn);
    const a = await logOn311(sent, conn, neg, 1);
    const a2 = await logOn311(sent, conn, neg, 3);
    assert.notDeepEqual(a.key, a2.key);
    await treeConnect(conn, 5, a2.sessionId, a2.key);
    await treeConnect(conn, 6, a.sessionId, a.key);
    assert.deepEqual(aborted, []);
    // Signing not required, yet a 3.1.1 TREE_CONNECT must come signed: an unsigned one ends the connection.
    await conn.handleFrame(request(Command.TREE_CONNECT, 7, tc, { sessionId: a.sessionId }));
    assert.deepEqual(aborted, [unsignedTc]);

    // The same when the session requires signing (checked before the refusal of unsigned requests).
    const strict = connect();
    const s = await logOn311(sent, strict, await negotiateOn(strict), 1, 2);
    await strict.handleFrame(request(Command.TREE_CONNECT, 3, tc, { sessionId: s.sessionId }));
    assert.deepEqual(aborted, [unsignedTc, unsignedTc]);

    // VALIDATE_NEGOTIATE_INFO belongs to 3.0 and 3.0.2: at 3.1.1 it ends the connection.
    const other = connect();
    const b = await logOn311(sent, other, await negotiateOn(other), 1);
    const treeId = await treeConnect(other, 3, b.sessionId, b.key);
    const input = new SmbWriter().u32(0).zeros(16).u16(1).u16(1).u16(0x0311).finish();
    const ioctl = new SmbWriter().u16(57).u16(0).u32(0x00140204).bytes(Buffer.alloc(16, 0xff));
    ioctl
      .u32(HEADER_SIZE + 56)
      .u32(input.length)
      .u32(0)
      .u32(0)
      .u32(0)
      .u32(24)
      .u32(1)
      .u32(0)
      .bytes(input);
    await other.handleFrame(
      signCompound(b.key, [request(Command.IOCTL, 4, ioctl.finish(), { sessionId: b.sessionId, treeId })], smb3Signature),
    );
    assert.deepEqual(aborted, [unsignedTc, unsignedTc, 'VALIDATE_NEGOTIATE_INFO on a 3.1.1 connection']);

    // A SESSION_SETUP in a compound: its padding makes the hash ambiguous, so it is refused.
    const comp = connect();
    await negotiateOn(comp);
    const token = new TestNtlmClient({ user: 'alice', password: 'right' }).negotiate();
    await comp.handleFrame(compound([request(Command.SESSION_SETUP, 1, sessionSetupBody(token)), request(Command.ECHO, 2, echo)]));
    assert.equal(elements(sent[sent.length - 1]!)[0]!.status, NtStatus.INVALID_PARAMETER);
    await srv.close();
  });

  it('at 3.1.1 a client offering AES-GMAC signs with it: nonce of MessageId, response and CANCEL bits; CMAC is refused', async () => {
    const { srv, sent, aborted, connect } = await aliceServer();
    const conn = connect();
    const negReq = request(Command.NEGOTIATE, 0, negotiate311([preauth(1), gmacCaps]), { credits: 100 });
    await conn.handleFrame(negReq);
    const negResp = sent[sent.length - 1]!;
    const body = negResp.subarray(HEADER_SIZE);
    const at = body.readUInt32LE(60);
    const sigAt = Math.ceil((at + 8 + negResp.readUInt16LE(at + 2)) / 8) * 8;
    assert.deepEqual(
      [negResp.readUInt16LE(sigAt), negResp.readUInt16LE(sigAt + 8), negResp.readUInt16LE(sigAt + 10)],
      [8, 1, 2],
      'SIGNING_CAPABILITIES: AES-GMAC',
    );
    const l = await logOn311(sent, conn, [negReq, negResp], 1, 2, NtStatus.SUCCESS, 'aes-128-gmac');
    // GMAC as MS-SMB2 3.1.4.1 spells it, computed here on its own: the tag of AES-128-GCM over the
    // message (signature zeroed) as authenticated data, no plaintext.
    const gmac = (msg: Buffer, bits?: number): Buffer => {
      const m = Buffer.from(msg);
      m.fill(0, 48, 64);
      const nonce = Buffer.alloc(12);
      m.copy(nonce, 0, 24, 32);
      nonce[8] = bits ?? (m.readUInt32LE(16) & 1) | (m.readUInt16LE(12) === Command.CANCEL ? 2 : 0);
      const g = createCipheriv('aes-128-gcm', l.key, nonce);
      g.setAAD(m);
      g.final();
      return g.getAuthTag();
    };
    const signGmac = (msg: Buffer): Buffer => {
      const m = Buffer.from(msg);
      m.writeUInt32LE(m.readUInt32LE(16) | HeaderFlags.SIGNED, 16);
      gmac(m).copy(m, 48);
      return m;
    };
    const path = utf16('\\\\127.0.0.1\\export');
    const tc = Buffer.concat([Buffer.from([9, 0, 0, 0, HEADER_SIZE + 8, 0, path.length, 0]), path]);
    // Signed with CMAC under the right key: refused.
    await conn.handleFrame(signCompound(l.key, [request(Command.TREE_CONNECT, 3, tc, { sessionId: l.sessionId })], smb3Signature));
    assert.equal(decodeHeader(sent[sent.length - 1]!).status, NtStatus.ACCESS_DENIED);
    await conn.handleFrame(signGmac(request(Command.TREE_CONNECT, 4, tc, { sessionId: l.sessionId })));
    const tree = sent[sent.length - 1]!;
    assert.equal(decodeHeader(tree).status, 0);
    assert.deepEqual(tree.subarray(48, 64), gmac(tree), 'the response is GMAC-signed, its nonce with the response bit');
    const treeId = decodeHeader(tree).treeId;
    // A CANCEL's nonce has its own bit: signed so, it cancels the CHANGE_NOTIFY; signed as any request, nothing.
    await conn.handleFrame(signGmac(request(Command.CREATE, 5, createBody('', 1), { sessionId: l.sessionId, treeId })));
    const fileId = sent[sent.length - 1]!.subarray(HEADER_SIZE + 64, HEADER_SIZE + 80);
    const notify = new SmbWriter().u16(32).u16(0).u32(4096).bytes(fileId).u32(0x1).u32(0).finish();
    await conn.handleFrame(signGmac(request(Command.CHANGE_NOTIFY, 6, notify, { sessionId: l.sessionId, treeId })));
    assert.equal(decodeHeader(sent[sent.length - 1]!).status, NtStatus.PENDING);
    const cancel = request(Command.CANCEL, 6, Buffer.from([4, 0, 0, 0]), { sessionId: l.sessionId, charge: 0 });
    const wrongNonce = Buffer.from(cancel);
    wrongNonce.writeUInt32LE(wrongNonce.readUInt32LE(16) | HeaderFlags.SIGNED, 16);
    gmac(wrongNonce, 0).copy(wrongNonce, 48); // the same bytes, their nonce without the CANCEL bit
    await conn.handleFrame(wrongNonce);
    assert.equal(conn.pendingCount, 1, 'still waiting');
    await conn.handleFrame(signGmac(cancel));
    assert.equal(conn.pendingCount, 0);
    const final = sent[sent.length - 1]!;
    assert.equal(decodeHeader(final).status, NtStatus.CANCELLED);
    assert.deepEqual(final.subarray(48, 64), gmac(final));
    assert.deepEqual(aborted, []);
    await srv.close();
  });

  it('encryption: 3.1.1 negotiates a cipher, encrypted requests are answered encrypted, a forged one ends the connection', async () => {
    const { srv, sent, aborted, connect } = await aliceServer();
    const path = utf16('\\\\127.0.0.1\\export');
    const tc = Buffer.concat([Buffer.from([9, 0, 0, 0, HEADER_SIZE + 8, 0, path.length, 0]), path]);
    /** The client's side of a session's cipher. */
    const clientOf = (l: { sessionKey: Buffer; hash: Buffer }): SessionCipher =>
      clientSideOf(sessionCipher(CipherId.AES_128_GCM, l.sessionKey, l.hash));
    /** NEGOTIATE at 3.1.1 offering `contexts`, then alice's logon: the session and the client's two ciphers. */
    const start = async (conn: SmbConnection, contexts: Buffer[], status: number = NtStatus.SUCCESS) => {
      const negReq = request(Command.NEGOTIATE, 0, negotiate311(contexts), { credits: 100 });
      await conn.handleFrame(negReq);
      const neg = [negReq, sent[sent.length - 1]!];
      const l = await logOn311(sent, conn, neg, 1, 1, status);
      return { ...l, client: clientOf(l), neg };
    };
    const sealed = (c: SessionCipher, sessionId: number, msg: Buffer): Buffer => Buffer.concat(encryptMessage(c, sessionId, [msg]));
    /** The last frame sent, decrypted as the client does; fails unless it came encrypted. */
    const opened = (c: SessionCipher): Buffer => {
      const f = sent[sent.length - 1]!;
      const t = decodeTransformHeader(f);
      assert.ok(t !== null, 'the response came as a TRANSFORM_HEADER');
      return decryptMessage(c, f, t);
    };

    const conn = connect();
    const e = await start(conn, [preauth(1), encryptionCaps]);
    assert.equal(e.flags, 0, 'encryption not required: no ENCRYPT_DATA');
    // An unsigned TREE_CONNECT is refused at 3.1.1 (above); encrypted, it is taken, and answered encrypted, unsigned.
    await serve(conn, sealed(e.client, e.sessionId, request(Command.TREE_CONNECT, 3, tc, { sessionId: e.sessionId })));
    const tree = opened(e.client);
    assert.equal(decodeHeader(tree).status, 0);
    assert.equal(decodeHeader(tree).flags & HeaderFlags.SIGNED, 0, 'encrypted, not signed');
    assert.deepEqual(aborted, []);
    // A compound of two elements: one frame in, one encrypted frame out.
    await serve(
      conn,
      sealed(
        e.client,
        e.sessionId,
        compound([request(Command.ECHO, 4, echo, { sessionId: e.sessionId }), request(Command.ECHO, 5, echo, { sessionId: e.sessionId })]),
      ),
    );
    assert.deepEqual(
      elements(opened(e.client)).map((x) => [x.command, x.status]),
      [
        [Command.ECHO, 0],
        [Command.ECHO, 0],
      ],
    );
    // In the clear the session is still served (signing as before): encryption was not required.
    await conn.handleFrame(signCompound(e.key, [request(Command.ECHO, 6, echo, { sessionId: e.sessionId })], smb3Signature));
    assert.equal(decodeHeader(sent[sent.length - 1]!).status, 0);
    // An encrypted message acts for its own session only.
    await serve(conn, sealed(e.client, e.sessionId, request(Command.ECHO, 7, echo, { sessionId: e.sessionId + 1 })));
    assert.equal(decodeHeader(opened(e.client)).status, NtStatus.ACCESS_DENIED);
    assert.deepEqual(aborted, []);
    // After LOGOFF the session's key still opens what the client sends for it, and answers it,
    // encrypted: USER_SESSION_DELETED (smbtorture connect sends a second LOGOFF).
    const other = await logOn311(sent, conn, e.neg, 8);
    await serve(conn, sealed(e.client, e.sessionId, request(Command.LOGOFF, 10, echo, { sessionId: e.sessionId })));
    assert.equal(decodeHeader(opened(e.client)).status, 0);
    await serve(conn, sealed(e.client, e.sessionId, request(Command.LOGOFF, 11, echo, { sessionId: e.sessionId })));
    assert.equal(decodeHeader(opened(e.client)).status, NtStatus.USER_SESSION_DELETED);
    await serve(conn, sealed(e.client, e.sessionId, request(Command.TREE_CONNECT, 12, tc, { sessionId: e.sessionId })));
    assert.equal(decodeHeader(opened(e.client)).status, NtStatus.USER_SESSION_DELETED);
    assert.deepEqual(aborted, []);
    // A changed byte of the ciphertext: not processed, and the connection ends.
    const forged = sealed(clientOf(other), other.sessionId, request(Command.ECHO, 13, echo, { sessionId: other.sessionId }));
    forged[forged.length - 3]! ^= 0x40;
    const before = sent.length;
    await serve(conn, forged);
    assert.equal(sent.length, before, 'nothing answered');
    assert.match(aborted[0] ?? '', /encrypted message refused: the message does not decrypt/);

    // A transform naming a session without a key (or none) ends the connection too.
    const c2 = connect();
    const e2 = await start(c2, [preauth(1), encryptionCaps]);
    await serve(c2, sealed(e2.client, e2.sessionId + 99, request(Command.ECHO, 3, echo, { sessionId: e2.sessionId + 99 })));
    assert.match(aborted[1] ?? '', /has no encryption key here/);

    // No cipher offered: none negotiated, and a transform ends the connection.
    const c3 = connect();
    const e3 = await start(c3, [preauth(1)]);
    await serve(c3, sealed(e3.client, e3.sessionId, request(Command.ECHO, 3, echo, { sessionId: e3.sessionId })));
    assert.match(aborted[2] ?? '', /has no encryption key here/);
    await srv.close();
  });

  it('encryption_required: ENCRYPT_DATA at logon, requests in the clear refused (encrypted), clients that cannot encrypt refused', async () => {
    const { srv, sent, aborted, connect } = await aliceServer({ encryptionRequired: true });
    const conn = connect();
    const negReq = request(Command.NEGOTIATE, 0, negotiate311([preauth(1), encryptionCaps]), { credits: 100 });
    await conn.handleFrame(negReq);
    const l = await logOn311(sent, conn, [negReq, sent[sent.length - 1]!], 1);
    assert.equal(l.flags, 0x0004, 'SMB2_SESSION_FLAG_ENCRYPT_DATA');
    const sealer = clientSideOf(sessionCipher(CipherId.AES_128_GCM, l.sessionKey, l.hash));
    // Signed but not encrypted: refused, and the refusal goes out encrypted.
    await conn.handleFrame(signCompound(l.key, [request(Command.ECHO, 3, echo, { sessionId: l.sessionId })], smb3Signature));
    const f = sent[sent.length - 1]!;
    const t = decodeTransformHeader(f);
    assert.ok(t !== null, 'encrypted');
    assert.equal(decodeHeader(decryptMessage(sealer, f, t)).status, NtStatus.ACCESS_DENIED);
    const seal = (msg: Buffer): Buffer => Buffer.concat(encryptMessage(sealer, l.sessionId, [msg]));
    const last = (): Buffer => {
      const g = sent[sent.length - 1]!;
      const gt = decodeTransformHeader(g);
      assert.ok(gt !== null, 'encrypted');
      return decryptMessage(sealer, g, gt);
    };
    await serve(conn, seal(request(Command.ECHO, 4, echo, { sessionId: l.sessionId })));
    assert.equal(decodeHeader(last()).status, 0);
    // A re-authentication in the clear (unsigned: anyone on the path could send it) is refused,
    // and the session goes on.
    const reauth = new TestNtlmClient({ user: 'alice', password: 'right' });
    await conn.handleFrame(request(Command.SESSION_SETUP, 5, sessionSetupBody(reauth.negotiate()), { sessionId: l.sessionId }));
    assert.equal(decodeHeader(sent[sent.length - 1]!).status, NtStatus.ACCESS_DENIED);
    // An async request answered encrypted, interim and final; a CANCEL in the clear cancels
    // nothing, an encrypted one does.
    const path = utf16('\\\\127.0.0.1\\export');
    const tc = Buffer.concat([Buffer.from([9, 0, 0, 0, HEADER_SIZE + 8, 0, path.length, 0]), path]);
    await serve(conn, seal(request(Command.TREE_CONNECT, 6, tc, { sessionId: l.sessionId })));
    const treeId = decodeHeader(last()).treeId;
    await serve(conn, seal(request(Command.CREATE, 7, createBody('', 1), { sessionId: l.sessionId, treeId })));
    const created = last();
    assert.equal(decodeHeader(created).status, 0);
    const fileId = created.subarray(HEADER_SIZE + 64, HEADER_SIZE + 80);
    const notify = new SmbWriter().u16(32).u16(0).u32(4096).bytes(fileId).u32(0x1).u32(0).finish();
    await serve(conn, seal(request(Command.CHANGE_NOTIFY, 8, notify, { sessionId: l.sessionId, treeId })));
    assert.equal(decodeHeader(last()).status, NtStatus.PENDING);
    const cancel = () => request(Command.CANCEL, 8, Buffer.from([4, 0, 0, 0]), { sessionId: l.sessionId, charge: 0 });
    await conn.handleFrame(cancel());
    await conn.handleFrame(signCompound(l.key, [cancel()], smb3Signature));
    assert.equal(conn.pendingCount, 1, 'a CANCEL in the clear, signed or not, cancels nothing');
    await serve(conn, seal(cancel()));
    assert.equal(conn.pendingCount, 0);
    assert.equal(decodeHeader(last()).status, NtStatus.CANCELLED, 'the final response, encrypted');
    // Nor does a CANCEL in the clear of no session (SessionId 0) that comes before its request:
    // the request goes pending when it arrives, encrypted.
    await conn.handleFrame(request(Command.CANCEL, 9, Buffer.from([4, 0, 0, 0]), { sessionId: 0, charge: 0 }));
    await serve(conn, seal(request(Command.CHANGE_NOTIFY, 9, notify, { sessionId: l.sessionId, treeId })));
    assert.equal(conn.pendingCount, 1, 'an injected early CANCEL of no session cancels nothing');

    // 3.1.1 without a cipher in common, and 2.1: the logon is refused.
    const noCipher = connect();
    const n = request(Command.NEGOTIATE, 0, negotiate311([preauth(1), ctx(2, new SmbWriter().u16(1).u16(0x7777).finish())]), {
      credits: 100,
    });
    await noCipher.handleFrame(n);
    const nResp = sent[sent.length - 1]!;
    await logOn311(sent, noCipher, [n, nResp], 1, 1, NtStatus.ACCESS_DENIED);
    const old = connect();
    await old.handleFrame(request(Command.NEGOTIATE, 0, negotiate([0x0210]), { credits: 100 }));
    const client = new TestNtlmClient({ user: 'alice', password: 'right' });
    await old.handleFrame(request(Command.SESSION_SETUP, 1, sessionSetupBody(client.negotiate())));
    const ch = sent[sent.length - 1]!;
    const off = ch.readUInt16LE(HEADER_SIZE + 4);
    const auth = await client.authenticate(ch.subarray(off, off + ch.readUInt16LE(HEADER_SIZE + 6)));
    await old.handleFrame(request(Command.SESSION_SETUP, 2, sessionSetupBody(auth), { sessionId: decodeHeader(ch).sessionId }));
    assert.equal(decodeHeader(sent[sent.length - 1]!).status, NtStatus.ACCESS_DENIED);
    // And the session is gone: a request on it finds nothing.
    await old.handleFrame(request(Command.TREE_CONNECT, 3, tc, { sessionId: decodeHeader(ch).sessionId }));
    assert.equal(decodeHeader(sent[sent.length - 1]!).status, NtStatus.USER_SESSION_DELETED);

    // 3.0 offers AES-128-CCM (the ENCRYPTION capability) to a client that offers it, not to one that does not.
    for (const [caps, want] of [
      [0x40, 0x46],
      [0, 6],
    ] as const) {
      const c = connect();
      const w = new SmbWriter();
      w.u16(36).u16(1).u16(1).u16(0).u32(caps).zeros(16).zeros(8).u16(0x0300);
      await c.handleFrame(request(Command.NEGOTIATE, 0, w.finish(), { credits: 100 }));
      assert.equal(sent[sent.length - 1]!.readUInt32LE(HEADER_SIZE + 24), want);
    }
    assert.deepEqual(aborted, []);
    await srv.close();
  });

  it("an oplock break names its holder's session and goes in the clear, also to a session that must encrypt (as smbd); a lease break names none", async () => {
    // One store, two kinds of connection: alice's sessions on `sealed` connections must encrypt
    // (encryption_required), on the others they need not.
    const { srv, aborted, connect } = await aliceServer({ oplockBreakTimeoutMs: 5000 });
    const path = utf16('\\\\127.0.0.1\\export');
    const tc = Buffer.concat([Buffer.from([9, 0, 0, 0, HEADER_SIZE + 8, 0, path.length, 0]), path]);
    /** A 3.1.1 connection (AES-128-GCM) recording its own frames, alice logged on, a tree on the export share. */
    const client = async (encryptionRequired: boolean) => {
      const sent: Buffer[] = [];
      const conn = connect(undefined, { encryptionRequired }, sent);
      const negReq = request(Command.NEGOTIATE, 0, negotiate311([preauth(1), encryptionCaps]), { credits: 100 });
      await conn.handleFrame(negReq);
      const l = await logOn311(sent, conn, [negReq, sent[sent.length - 1]!], 1);
      assert.equal(l.flags, encryptionRequired ? 0x0004 : 0, 'ENCRYPT_DATA as configured');
      const cipher = clientSideOf(sessionCipher(CipherId.AES_128_GCM, l.sessionKey, l.hash));
      /** A frame as the client reads it: a TRANSFORM_HEADER opened with the session's key. */
      const read = (f: Buffer): Buffer => (isTransformFrame(f) ? decryptMessage(cipher, f, decodeTransformHeader(f)!) : f);
      let mid = 3;
      let treeId = 0;
      /** Sends a request as the client must (encrypted, or signed): the request is not awaited past an interim response. */
      const send = (command: number, body: Buffer): Promise<void> => {
        const msg = request(command, mid++, body, { sessionId: l.sessionId, treeId });
        return encryptionRequired
          ? serve(conn, Buffer.concat(encryptMessage(cipher, l.sessionId, [msg])))
          : conn.handleFrame(signCompound(l.key, [msg], smb3Signature));
      };
      await send(Command.TREE_CONNECT, tc);
      treeId = decodeHeader(read(sent[sent.length - 1]!)).treeId;
      return { sent, sessionId: l.sessionId, read, send };
    };
    type Client = Awaited<ReturnType<typeof client>>;
    /** The `n`th frame (0-based) sent to `c`, once it has come. */
    const frame = async (c: Client, n: number): Promise<Buffer> => {
      for (let i = 0; i < 500 && c.sent.length <= n; i++) await new Promise((r) => setTimeout(r, 5));
      assert.ok(c.sent.length > n, 'the frame came');
      return c.sent[n]!;
    };
    /** The body of a message read as the client reads it, and its header. */
    const parts = (m: Buffer) => ({ h: decodeHeader(m), body: m.subarray(HEADER_SIZE) });
    /** Opens `name` asking for `oplock` (and `contexts`): the response's status, oplock level and FileId once it is final. */
    const open = async (c: Client, name: string, oplock: number, contexts: CreateContext[] = []) => {
      const at = c.sent.length;
      await c.send(Command.CREATE, createWith(name, oplock, contexts));
      let m = parts(c.read(await frame(c, at)));
      if (m.h.status === NtStatus.PENDING) m = parts(c.read(await frame(c, at + 1)));
      return { status: m.h.status, level: m.body[2], fileId: Buffer.from(m.body.subarray(64, 80)) };
    };
    /** The break notification `c` was sent at `at`, as the wire carries it and as the client reads it. */
    const breakAt = async (c: Client, at: number) => {
      const wire = await frame(c, at);
      const { h, body } = parts(c.read(wire));
      assert.equal(h.command, Command.OPLOCK_BREAK);
      return { wire, h, body };
    };
    const ack = (fileId: Buffer, level: number): Buffer => new SmbWriter().u16(24).u8(level).u8(0).u32(0).bytes(fileId).finish();
    const sealed = await client(true);
    const plain = await client(false);

    // A session that must encrypt holds a batch oplock; another client's open breaks it to Level II.
    const held = await open(sealed, 'f', OplockLevel.BATCH);
    assert.deepEqual([held.status, held.level], [0, OplockLevel.BATCH]);
    let at = sealed.sent.length;
    const second = open(plain, 'f', OplockLevel.BATCH);
    const b1 = await breakAt(sealed, at);
    // smbd (since 4.4, Samba bug 11570) sends it unencrypted: Windows clients drop encrypted ones.
    assert.ok(!isTransformFrame(b1.wire), 'the break is not in a TRANSFORM_HEADER');
    const inner = sealed.read(b1.wire);
    assert.deepEqual(inner.subarray(24, 32), Buffer.alloc(8, 0xff), 'MessageId all ones');
    assert.equal(b1.h.sessionId, sealed.sessionId, "the holder's SessionId (MS-SMB2 3.3.4.6)");
    assert.equal(b1.h.treeId, 0);
    assert.equal(b1.h.flags & HeaderFlags.SIGNED, 0, 'not signed');
    assert.deepEqual([b1.body.readUInt16LE(0), b1.body[2]], [24, OplockLevel.II], 'an oplock break to Level II');
    assert.deepEqual(b1.body.subarray(8, 24), held.fileId);
    // The holder acknowledges (encrypted); the second open completes at Level II.
    at = sealed.sent.length;
    await sealed.send(Command.OPLOCK_BREAK, ack(held.fileId, OplockLevel.II));
    assert.equal(parts(sealed.read(await frame(sealed, at))).h.status, 0);
    const got = await second;
    assert.deepEqual([got.status, got.level], [0, OplockLevel.II]);

    // A session that need not encrypt: the same.
    const plainHeld = await open(plain, 'g', OplockLevel.BATCH);
    assert.equal(plainHeld.level, OplockLevel.BATCH);
    at = plain.sent.length;
    const third = open(sealed, 'g', OplockLevel.BATCH);
    const b2 = await breakAt(plain, at);
    assert.ok(!isTransformFrame(b2.wire), 'in the clear');
    assert.deepEqual(b2.wire.subarray(24, 32), Buffer.alloc(8, 0xff));
    assert.equal(b2.h.sessionId, plain.sessionId);
    assert.deepEqual(b2.body.subarray(8, 24), plainHeld.fileId);
    await plain.send(Command.OPLOCK_BREAK, ack(plainHeld.fileId, OplockLevel.II));
    assert.equal((await third).level, OplockLevel.II);

    // A lease break names no session and goes in the clear, even to a session that must encrypt (MS-SMB2 3.3.4.7).
    const key = Buffer.alloc(16, 0x4c);
    const rqls = Buffer.alloc(32);
    key.copy(rqls);
    rqls.writeUInt32LE(7, 16); // RWH
    const leased = await open(sealed, 'h', OplockLevel.LEASE, [{ name: 'RqLs', data: rqls }]);
    assert.equal(leased.level, OplockLevel.LEASE);
    at = sealed.sent.length;
    const fourth = open(plain, 'h', OplockLevel.NONE);
    const b3 = await breakAt(sealed, at);
    assert.ok(!isTransformFrame(b3.wire), 'a lease break in the clear');
    assert.equal(b3.h.sessionId, 0, 'no session');
    assert.equal(b3.body.readUInt16LE(0), 44, 'a lease break notification');
    assert.deepEqual(b3.body.subarray(8, 24), key);
    const leaseAck = new SmbWriter().u16(36).u16(0).u32(0).bytes(key).u32(b3.body.readUInt32LE(28)).u64(0).finish();
    await sealed.send(Command.OPLOCK_BREAK, leaseAck);
    assert.equal((await fourth).status, 0);
    assert.deepEqual(aborted, []);
    await srv.close();
  });

  it('at 3.0.2 the logon derives the signing key, signs with AES-CMAC, and VALIDATE_NEGOTIATE_INFO catches a downgrade', async () => {
    const { srv, sent, aborted, connect } = await aliceServer();
    const all = [0x0202, 0x0210, 0x0300, 0x0302];
    /** NEGOTIATE (offering `offered`), a raw NTLMSSP logon asking for signing: the session id and the client's session key. */
    const logOn = async (conn: SmbConnection, offered: number[]): Promise<{ sessionId: number; sessionKey: Buffer }> => {
      await conn.handleFrame(request(Command.NEGOTIATE, 0, negotiate(offered), { credits: 100 }));
      const client = new TestNtlmClient({ user: 'alice', password: 'right' });
      await conn.handleFrame(request(Command.SESSION_SETUP, 1, sessionSetupBody(client.negotiate(), 2)));
      const first = sent[sent.length - 1]!;
      const off = first.readUInt16LE(HEADER_SIZE + 4);
      const challenge = first.subarray(off, off + first.readUInt16LE(HEADER_SIZE + 6));
      const sessionId = decodeHeader(first).sessionId;
      const auth = await client.authenticate(challenge);
      await conn.handleFrame(request(Command.SESSION_SETUP, 2, sessionSetupBody(auth, 2), { sessionId }));
      const final = sent[sent.length - 1]!;
      assert.equal(decodeHeader(final).status, 0);
      assert.notEqual(decodeHeader(final).flags & HeaderFlags.SIGNED, 0, 'the final SESSION_SETUP response is signed');
      const sessionKey = client.exportedKey.subarray(0, 16);
      if (offered.includes(0x0300)) {
        // MS-SMB2 3.3.5.5.3: signed with CMAC under KDF(SessionKey, "SMB2AESCMAC", "SmbSign"), not with the session key.
        assert.ok(verifySignature('aes-128-cmac', smb30SigningKey(sessionKey), final), 'CMAC under the derived key');
        assert.ok(!verifySignature('aes-128-cmac', sessionKey, final), 'not under the session key itself');
        assert.ok(!verifySmb2Signature(sessionKey, final), 'not HMAC-SHA256 (2.x)');
      }
      return { sessionId, sessionKey };
    };
    const path = utf16('\\\\127.0.0.1\\export');
    const tc = Buffer.concat([Buffer.from([9, 0, 0, 0, HEADER_SIZE + 8, 0, path.length, 0]), path]);
    /** FSCTL_VALIDATE_NEGOTIATE_INFO as the client that sent negotiate(all) sends it. */
    const validate = (maxOutput = 24): Buffer => {
      const input = new SmbWriter().u32(0).zeros(16).u16(1).u16(all.length);
      for (const d of all) input.u16(d);
      const data = input.finish();
      const w = new SmbWriter();
      w.u16(57).u16(0).u32(0x00140204).bytes(Buffer.alloc(16, 0xff));
      w.u32(HEADER_SIZE + 56)
        .u32(data.length)
        .u32(0)
        .u32(0)
        .u32(0)
        .u32(maxOutput)
        .u32(1)
        .u32(0);
      return Buffer.concat([w.finish(), data]);
    };

    const conn = connect();
    const { sessionId, sessionKey } = await logOn(conn, all);
    const key = smb30SigningKey(sessionKey);
    // A request signed the 2.x way (HMAC-SHA256) is refused; signed with CMAC it is answered, signed.
    await conn.handleFrame(signCompound(key, [request(Command.TREE_CONNECT, 3, tc, { sessionId })]));
    assert.equal(decodeHeader(sent[sent.length - 1]!).status, NtStatus.ACCESS_DENIED, 'HMAC-SHA256 at 3.0.2');
    await conn.handleFrame(signCompound(key, [request(Command.TREE_CONNECT, 4, tc, { sessionId })], smb3Signature));
    const treeReply = sent[sent.length - 1]!;
    assert.equal(decodeHeader(treeReply).status, 0);
    assert.ok(verifySignature('aes-128-cmac', key, treeReply), 'the TREE_CONNECT reply is CMAC-signed');
    const treeId = decodeHeader(treeReply).treeId;
    await conn.handleFrame(signCompound(key, [request(Command.IOCTL, 5, validate(), { sessionId, treeId })], smb3Signature));
    const v = sent[sent.length - 1]!;
    assert.equal(decodeHeader(v).status, 0);
    assert.ok(verifySignature('aes-128-cmac', key, v), 'VALIDATE_NEGOTIATE_INFO is answered signed');
    const out = v.subarray(v.readUInt32LE(HEADER_SIZE + 32), v.readUInt32LE(HEADER_SIZE + 32) + v.readUInt32LE(HEADER_SIZE + 36));
    assert.deepEqual(
      [out.readUInt32LE(0), out.subarray(4, 20), out.readUInt16LE(22)],
      [6, Buffer.alloc(16, 9), 0x0302],
      'capabilities, server GUID and dialect as NEGOTIATE gave them',
    );
    assert.deepEqual(aborted, []);
    const dropped = 'VALIDATE_NEGOTIATE_INFO does not match the negotiation';
    // No room for the answer (MaxOutputResponse below 24): dropped too.
    await conn.handleFrame(signCompound(key, [request(Command.IOCTL, 6, validate(16), { sessionId, treeId })], smb3Signature));
    assert.deepEqual(aborted, [dropped]);

    // 3.0.2 stripped from the NEGOTIATE on the way: the client gets 3.0, and validates on IPC$ (a
    // client that only lists shares connects nothing else).
    const ipc = connect();
    const i = await logOn(ipc, [0x0202, 0x0210, 0x0300]);
    const ikey = smb30SigningKey(i.sessionKey);
    const ipcPath = utf16('\\\\127.0.0.1\\IPC$');
    const ipcTc = Buffer.concat([Buffer.from([9, 0, 0, 0, HEADER_SIZE + 8, 0, ipcPath.length, 0]), ipcPath]);
    await ipc.handleFrame(signCompound(ikey, [request(Command.TREE_CONNECT, 3, ipcTc, { sessionId: i.sessionId })], smb3Signature));
    const ipcTree = decodeHeader(sent[sent.length - 1]!);
    assert.equal(ipcTree.status, 0);
    await ipc.handleFrame(
      signCompound(ikey, [request(Command.IOCTL, 4, validate(), { sessionId: i.sessionId, treeId: ipcTree.treeId })], smb3Signature),
    );
    assert.deepEqual(aborted, [dropped, dropped], '3.0.2 -> 3.0 on IPC$');

    // A NEGOTIATE rewritten on the way to offer 2.x only: the client's VALIDATE lists what it sent.
    const down = connect();
    const d = await logOn(down, [0x0202, 0x0210]);
    const dkey = d.sessionKey;
    await down.handleFrame(signCompound(dkey, [request(Command.TREE_CONNECT, 3, tc, { sessionId: d.sessionId })]));
    const dTree = decodeHeader(sent[sent.length - 1]!).treeId;
    await down.handleFrame(signCompound(dkey, [request(Command.IOCTL, 4, validate(), { sessionId: d.sessionId, treeId: dTree })]));
    assert.deepEqual(aborted, [dropped, dropped, dropped], '3.0.2 -> 2.1');
    await srv.close();
  });

  it('answers a compound in one frame, element by element, and an unknown session with USER_SESSION_DELETED', async () => {
    const { conn, sent, srv } = await connection();
    await conn.handleFrame(request(Command.NEGOTIATE, 0, negotiate([0x0210])));
    await conn.handleFrame(
      compound([
        request(Command.ECHO, 1, echo),
        request(Command.ECHO, 2, echo),
        request(Command.TREE_DISCONNECT, 3, echo, { sessionId: 77 }),
      ]),
    );
    const rs = elements(sent[1]!);
    assert.deepEqual(
      rs.map((r) => [r.command, r.status]),
      [
        [Command.ECHO, 0],
        [Command.ECHO, 0],
        [Command.TREE_DISCONNECT, NtStatus.USER_SESSION_DELETED],
      ],
    );
    assert.ok(rs.every((r) => (r.flags & HeaderFlags.SERVER_TO_REDIR) !== 0));
    await srv.close();
  });

  it("on a root_squash share, a user mapped to uid 0 opens files with the anonymous user's rights", async () => {
    const { conn, sent, srv } = await connection();
    const share = srv.fs.shares()[0]!;
    const squash = (rootSquash: boolean) =>
      srv.fs.updateShare(share.name, { readOnly: false, rootSquash, anonymousUid: 65534, anonymousGid: 65534 });
    const root = srv.fs.handleOf(share, await srv.fs.root(share));
    const owner = { uid: 1000, gid: 1000, gids: [] };
    // The share root belongs to root: make it a /tmp (1777), where uid 1000 makes its file and
    // only a file's owner (and root) may remove it.
    await srv.fs.setattr(root, { uid: 0, gid: 0, gids: [] }, { mode: 0o1777 });
    const made = await srv.fs.create(root, Buffer.from('theirs'), owner, CreateMode.UNCHECKED, { mode: 0o644 }, null);
    await srv.fs.write(srv.fs.handleOf(share, made.inode), owner, 0, Buffer.from('not yours'), true);
    squash(true);
    const treeId = await loggedOn(conn, sent, { name: 'admin', uid: 0, gid: 0, gids: [] });
    const FILE_WRITE_DATA = 0x2;
    const DELETE = 0x10000;
    const WRITE_DAC = 0x40000;
    const READ = 0x80000000;
    let messageId = 2;
    const open = async (access: number): Promise<number> => {
      await conn.handleFrame(
        request(Command.CREATE, messageId++, createBody('theirs', CreateDisposition.OPEN, access), { sessionId: 5, treeId }),
      );
      return elements(sent[sent.length - 1]!)[0]!.status;
    };
    // Root's rights (write, delete and permissions of anyone's file) are not the anonymous user's.
    assert.equal(await open(FILE_WRITE_DATA), NtStatus.ACCESS_DENIED, 'write');
    assert.equal(await open(DELETE), NtStatus.ACCESS_DENIED, 'delete');
    assert.equal(await open(WRITE_DAC), NtStatus.ACCESS_DENIED, 'change permissions');
    // What the anonymous user may do (read a 0644 file), root may.
    assert.equal(await open(READ), NtStatus.SUCCESS, 'read');
    // Without root squash, the same session is root.
    squash(false);
    assert.equal(await open(FILE_WRITE_DATA | DELETE | WRITE_DAC), NtStatus.SUCCESS, 'root without squash');
    await srv.close();
  });

  it('related elements use the previous open, and inherit the failure of a CREATE before them', async () => {
    const { conn, sent, srv } = await connection();
    const treeId = await loggedOn(conn, sent, ALICE);
    const related = { flags: HeaderFlags.RELATED_OPERATIONS, sessionId: 0xffffffff };
    const data = Buffer.from('written in a compound');
    // CREATE (OPEN_IF) + WRITE + CLOSE, the last two on FileId all-ones.
    await conn.handleFrame(
      compound([
        request(Command.CREATE, 2, createBody('c.txt', 3), { sessionId: 5, treeId }),
        request(Command.WRITE, 3, writeBody(data), related),
        request(Command.CLOSE, 4, closeBody(), related),
      ]),
    );
    assert.deepEqual(
      elements(sent[2]!).map((r) => r.status),
      [0, 0, 0],
    );
    const share = srv.fs.shares()[0]!;
    const file = await srv.fs.lookup(srv.fs.handleOf(share, await srv.fs.root(share)), Buffer.from('c.txt'), { uid: 0, gid: 0, gids: [] });
    assert.equal(
      (await srv.fs.read(srv.fs.handleOf(share, file.inode), { uid: 0, gid: 0, gids: [] }, 0, 100)).data.toString(),
      data.toString(),
    );
    // A CREATE (OPEN) of a missing name: the related WRITE and CLOSE get its status, not FILE_CLOSED.
    await conn.handleFrame(
      compound([
        request(Command.CREATE, 5, createBody('missing', 1), { sessionId: 5, treeId }),
        request(Command.WRITE, 6, writeBody(data), related),
        request(Command.CLOSE, 7, closeBody(), related),
      ]),
    );
    assert.deepEqual(
      elements(sent[3]!).map((r) => r.status),
      [NtStatus.OBJECT_NAME_NOT_FOUND, NtStatus.OBJECT_NAME_NOT_FOUND, NtStatus.OBJECT_NAME_NOT_FOUND],
    );
    await srv.close();
  });

  it('signing: unsigned and badly signed requests are refused on a signing session, good ones answered signed', async () => {
    const { log, lines } = recordingLog();
    const { conn, sent, srv } = await connection(log);
    await conn.handleFrame(request(Command.NEGOTIATE, 0, negotiate([0x0210]), { credits: 100 }));
    const key = Buffer.alloc(16, 0x5a);
    validSession(conn, 8, ALICE, key);
    const signed = (msg: Buffer): Buffer => {
      msg.writeUInt32LE(msg.readUInt32LE(16) | HeaderFlags.SIGNED, 16);
      smb2Signature(key, msg).copy(msg, 48);
      return msg;
    };
    const path = utf16('\\\\127.0.0.1\\export');
    const tc = Buffer.concat([Buffer.from([9, 0, 0, 0, HEADER_SIZE + 8, 0, path.length, 0]), path]);
    await conn.handleFrame(request(Command.TREE_CONNECT, 1, tc, { sessionId: 8 }));
    assert.equal(decodeHeader(sent[1]!).status, NtStatus.ACCESS_DENIED, 'unsigned');
    const forged = signed(request(Command.TREE_CONNECT, 2, tc, { sessionId: 8 }));
    forged[50] = forged[50]! ^ 1;
    await serve(conn, forged);
    assert.equal(decodeHeader(sent[2]!).status, NtStatus.ACCESS_DENIED, 'bad signature');
    assert.equal(decodeHeader(sent[2]!).flags & HeaderFlags.SIGNED, 0, 'a refused signature is not answered signed');
    await conn.handleFrame(signed(request(Command.TREE_CONNECT, 3, tc, { sessionId: 8 })));
    const reply = sent[3]!;
    assert.equal(decodeHeader(reply).status, 0);
    assert.notEqual(decodeHeader(reply).flags & HeaderFlags.SIGNED, 0);
    assert.ok(verifySmb2Signature(key, reply), 'the reply carries a valid signature');
    // Refused in a loop, they are not logged one line each: the first, every 1000th, the total at the end.
    const badLines = () => lines.filter((l) => l.includes('signature'));
    for (let id = 4; id < 24; id++) {
      const bad = signed(request(Command.TREE_CONNECT, id, tc, { sessionId: 8 }));
      bad[50] = bad[50]! ^ 1;
      await conn.handleFrame(bad);
      assert.equal(decodeHeader(sent[sent.length - 1]!).status, NtStatus.ACCESS_DENIED);
    }
    assert.equal(badLines().length, 1, '21 refused, one line');
    // Forged CANCELs (no reply) count the same.
    for (let i = 0; i < BAD_SIGNATURE_LOG_EVERY; i++) {
      // A CANCEL names the request it cancels (an earlier MessageId); it takes no sequence number.
      const bad = signed(request(Command.CANCEL, 5, Buffer.from([4, 0, 0, 0]), { sessionId: 8, charge: 0 }));
      bad[50] = bad[50]! ^ 1;
      await conn.handleFrame(bad);
    }
    assert.equal(badLines().length, 2, `the ${BAD_SIGNATURE_LOG_EVERY}th refusal is logged`);
    await conn.teardown();
    assert.equal(badLines().length, 3, 'the total at the end');
    assert.match(badLines()[2]!, /refused for their signature/);
    await srv.close();
  });

  it('pads every response of a compound to 8 bytes, the last one too, and a lone response not at all', async () => {
    const { conn, sent, srv } = await connection();
    await conn.handleFrame(request(Command.NEGOTIATE, 0, negotiate([0x0210])));
    await conn.handleFrame(compound([request(Command.ECHO, 1, echo), request(Command.ECHO, 2, echo)]));
    // An ECHO response is 68 bytes (header and a 4-byte body): 72 with its padding.
    const frame = sent[1]!;
    assert.deepEqual(
      messages(frame).map((m) => m.length),
      [72, 72],
    );
    assert.deepEqual(frame.subarray(72 + 68), Buffer.alloc(4), 'the padding is zeros');
    await conn.handleFrame(request(Command.ECHO, 3, echo));
    assert.equal(sent[2]!.length, 68);
    await srv.close();
  });

  it('signs the failures passed down a signed compound: a first element marked related, a failed CREATE', async () => {
    const { conn, sent, srv } = await connection();
    await conn.handleFrame(request(Command.NEGOTIATE, 0, negotiate([0x0210]), { credits: 100 }));
    const key = Buffer.alloc(16, 0x3c);
    const { sessionId, treeId } = await signingSession(conn, sent, key);
    const related = { flags: HeaderFlags.RELATED_OPERATIONS, sessionId: 0xffffffff };
    const check = (frame: Buffer, want: number[]) => {
      const ms = messages(frame);
      assert.deepEqual(
        ms.map((m) => decodeHeader(m).status),
        want,
      );
      for (const m of ms) {
        assert.notEqual(decodeHeader(m).flags & HeaderFlags.SIGNED, 0, 'flagged signed');
        assert.ok(verifySmb2Signature(key, m), 'a valid signature');
      }
    };
    // The first element marked related (smbtorture's compound.invalid1): it and its related follower
    // fail with INVALID_PARAMETER, an unrelated one after them is answered on its own.
    await conn.handleFrame(
      signCompound(key, [
        request(Command.CREATE, 2, createBody('x', 3), { flags: HeaderFlags.RELATED_OPERATIONS, sessionId, treeId }),
        request(Command.CLOSE, 3, closeBody(), related),
        request(Command.CLOSE, 4, closeBody(), { sessionId, treeId }),
      ]),
    );
    check(sent[sent.length - 1]!, [NtStatus.INVALID_PARAMETER, NtStatus.INVALID_PARAMETER, NtStatus.FILE_CLOSED]);
    // A CREATE of a missing name (compound.related8): its status goes to the related elements, signed.
    await conn.handleFrame(
      signCompound(key, [
        request(Command.CREATE, 5, createBody('missing', 1), { sessionId, treeId }),
        request(Command.WRITE, 6, writeBody(Buffer.from('x')), related),
        request(Command.CLOSE, 7, closeBody(), related),
      ]),
    );
    check(sent[sent.length - 1]!, [NtStatus.OBJECT_NAME_NOT_FOUND, NtStatus.OBJECT_NAME_NOT_FOUND, NtStatus.OBJECT_NAME_NOT_FOUND]);
    await srv.close();
  });

  it('a stream open left delete-on-close loses its stream, not its file, when the connection drops', async () => {
    const { conn, sent, srv } = await connection();
    await conn.handleFrame(request(Command.NEGOTIATE, 0, negotiate([0x0210]), { credits: 100 }));
    const key = Buffer.alloc(16, 0x2d);
    const { sessionId, treeId } = await signingSession(conn, sent, key);
    const related = { flags: HeaderFlags.RELATED_OPERATIONS, sessionId: 0xffffffff };
    await conn.handleFrame(
      signCompound(key, [
        request(Command.CREATE, 2, createBody('f:s', CreateDisposition.CREATE), { sessionId, treeId }),
        request(Command.WRITE, 3, writeBody(Buffer.from('stream data')), related),
        request(Command.CLOSE, 4, closeBody(), related),
      ]),
    );
    assert.deepEqual(
      elements(sent[sent.length - 1]!).map((r) => r.status),
      [0, 0, 0],
    );
    // GENERIC_READ|GENERIC_WRITE|DELETE, FILE_DELETE_ON_CLOSE; never closed.
    const doc = createBody('f:s', CreateDisposition.OPEN, 0xc0010000, CreateOptions.DELETE_ON_CLOSE);
    await conn.handleFrame(signCompound(key, [request(Command.CREATE, 5, doc, { sessionId, treeId })]));
    assert.equal(decodeHeader(sent[sent.length - 1]!).status, 0);
    const c = fileContext(srv);
    const file = (await create(c, createRequest('f', { createDisposition: CreateDisposition.OPEN }))).open;
    const streamNames = async () => (await listStreams(srv.fs, file.handle, alice)).streams.map((e) => e.name.toString());
    assert.deepEqual(await streamNames(), ['s']);
    await conn.teardown();
    assert.deepEqual(await streamNames(), [], 'the stream went at disconnect, as at CLOSE');
    assert.equal(
      file.inodeId,
      (await create(c, createRequest('f', { createDisposition: CreateDisposition.OPEN }))).open.inodeId,
      'the file stays',
    );
    await srv.close();
  });

  it('one user cannot take the whole open table: past their share CREATE fails, other users still open', async () => {
    const { srv, connect } = await testServer();
    (srv.fs as unknown as { opens: OpenTable }).opens = new OpenTable({ maxOpens: 8, maxOpensPerUser: 2 });
    const BOB = { name: 'bob', uid: 1001, gid: 1001, gids: [] };
    const outA: Buffer[] = [];
    const outB: Buffer[] = [];
    const a = connect(undefined, {}, outA);
    const b = connect(undefined, {}, outB);
    const treeA = await loggedOn(a, outA, ALICE);
    const treeB = await loggedOn(b, outB, BOB);
    let id = 10;
    const open = async (conn: SmbConnection, out: Buffer[], treeId: number, name: string): Promise<{ status: number; fileId: Buffer }> => {
      await conn.handleFrame(request(Command.CREATE, id++, createBody(name, CreateDisposition.OPEN_IF), { sessionId: 5, treeId }));
      const last = out[out.length - 1]!;
      return { status: decodeHeader(last).status, fileId: Buffer.from(last.subarray(HEADER_SIZE + 64, HEADER_SIZE + 80)) };
    };
    const first = await open(a, outA, treeA, 'a1');
    assert.equal(first.status, 0);
    // A named stream's open counts once, as the handle it is (not also as its file's).
    assert.equal((await open(a, outA, treeA, 'a1:s')).status, 0, 'a stream open is one open');
    assert.equal((await open(a, outA, treeA, 'a3')).status, NtStatus.INSUFFICIENT_RESOURCES, "past alice's share");
    assert.equal((await open(b, outB, treeB, 'b1')).status, 0, 'bob still opens');
    // Closing one gives alice her slot back.
    const close = new SmbWriter().u16(24).u16(0).u32(0).bytes(first.fileId).finish();
    await a.handleFrame(request(Command.CLOSE, id++, close, { sessionId: 5, treeId: treeA }));
    assert.equal(decodeHeader(outA[outA.length - 1]!).status, 0);
    assert.equal((await open(a, outA, treeA, 'a3')).status, 0);
    await srv.close();
  });

  it('pipelined CREATEs cannot take a connection past its open cap', async () => {
    const { srv, sent, connect } = await testServer({ lookup: () => Promise.resolve(null) }, { maxOpensPerConnection: 4 });
    const conn = connect();
    const treeId = await loggedOn(conn, sent, ALICE);
    const before = sent.length;
    // Ten at once, as a client with credits sends them: none waits for another's reply.
    await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        conn.handleFrame(request(Command.CREATE, 10 + i, createBody(`p${i}`, CreateDisposition.OPEN_IF), { sessionId: 5, treeId })),
      ),
    );
    const statuses = sent.slice(before).map((f) => decodeHeader(f).status);
    assert.equal(statuses.length, 10);
    assert.equal(statuses.filter((st) => st === 0).length, 4, 'four opens, the cap');
    assert.equal(statuses.filter((st) => st === NtStatus.INSUFFICIENT_RESOURCES).length, 6);
    assert.equal(srv.fs.opens.size, 4);
    await srv.close();
  });

  it('an open of a dropped connection still closing makes a new CREATE wait, not fail with SHARING_VIOLATION', async () => {
    const { conn, sent, srv } = await connection();
    await conn.handleFrame(request(Command.NEGOTIATE, 0, negotiate([0x0210]), { credits: 100 }));
    const key = Buffer.alloc(16, 0x3d);
    const { sessionId, treeId } = await signingSession(conn, sent, key);
    // Read and write access, sharing read and write but not delete (as a fuzzed CREATE left it).
    const body = createBody('f', CreateDisposition.OPEN_IF);
    body.writeUInt32LE(3, 32);
    await conn.handleFrame(signCompound(key, [request(Command.CREATE, 2, body, { sessionId, treeId })]));
    assert.equal(decodeHeader(sent[sent.length - 1]!).status, 0);
    // A request still in flight on the open (a READ waiting on storage) when the connection drops.
    const [open] = [...(conn as unknown as { opens: Map<number, Open> }).opens.values()];
    let finish!: () => void;
    const inFlight = open!.use(() => new Promise<void>((r) => (finish = r)));
    const down = conn.teardown();
    // A fresh session opens the file asking for DELETE too: refused only while the old open lives.
    let outcome: string | null = null;
    const again = create(fileContext(srv, { sessionId: 99 }), createRequest('f', { desiredAccess: 0xc0010000 })).then(
      () => (outcome = 'opened'),
      (e: unknown) => (outcome = e instanceof SmbStatusError ? `status 0x${e.status.toString(16)}` : String(e)),
    );
    for (let i = 0; i < 20 && outcome === null; i++) await new Promise((r) => setImmediate(r));
    assert.equal(outcome, null, 'the CREATE waits for the closing open');
    finish();
    await inFlight;
    await down;
    await again;
    assert.equal(outcome, 'opened');
    await srv.close();
  });

  it('a CANCEL on a signing session is checked like any request: a forged one cancels nothing', async () => {
    const { conn, sent, srv } = await connection();
    await conn.handleFrame(request(Command.NEGOTIATE, 0, negotiate([0x0210]), { credits: 100 }));
    const key = Buffer.alloc(16, 0x4d);
    const { sessionId, treeId } = await signingSession(conn, sent, key);
    // Open the share root and wait on it with CHANGE_NOTIFY (answered STATUS_PENDING).
    await conn.handleFrame(signCompound(key, [request(Command.CREATE, 2, createBody('', 1), { sessionId, treeId })]));
    const created = messages(sent[sent.length - 1]!)[0]!;
    assert.equal(decodeHeader(created).status, 0);
    const fileId = created.subarray(HEADER_SIZE + 64, HEADER_SIZE + 80);
    const notify = new SmbWriter().u16(32).u16(0).u32(4096).bytes(fileId).u32(0x1).u32(0).finish();
    await conn.handleFrame(signCompound(key, [request(Command.CHANGE_NOTIFY, 3, notify, { sessionId, treeId })]));
    assert.equal(decodeHeader(sent[sent.length - 1]!).status, NtStatus.PENDING);
    assert.equal(conn.pendingCount, 1);
    const cancel = () => request(Command.CANCEL, 3, Buffer.from([4, 0, 0, 0]), { sessionId, charge: 0 });
    const forged = signCompound(key, [cancel()]);
    forged[60] = forged[60]! ^ 1;
    await serve(conn, forged);
    await conn.handleFrame(cancel()); // unsigned, on a session that requires signing
    assert.equal(conn.pendingCount, 1, 'still waiting');
    await conn.handleFrame(signCompound(key, [cancel()]));
    assert.equal(conn.pendingCount, 0);
    const final = sent[sent.length - 1]!;
    assert.equal(decodeHeader(final).status, NtStatus.CANCELLED);
    assert.ok(verifySmb2Signature(key, final), 'the final response is signed');
    await srv.close();
  });

  it("TREE_CONNECT asks the directory for the session's user: gone is ACCESS_DENIED, a failing directory a resource missing for now", async () => {
    const { conn, sent } = await connection();
    await conn.handleFrame(request(Command.NEGOTIATE, 0, negotiate([0x0210]), { credits: 100 }));
    validSession(conn, 5, ALICE);
    const opts = (conn as unknown as { opts: { directory: SmbUserDirectory } }).opts;
    const path = utf16('\\\\127.0.0.1\\EXPORT');
    const tc = Buffer.concat([Buffer.from([9, 0, 0, 0, HEADER_SIZE + 8, 0, path.length, 0]), path]);
    const treeConnect = async (messageId: number): Promise<number> => {
      await conn.handleFrame(request(Command.TREE_CONNECT, messageId, tc, { sessionId: 5 }));
      return decodeHeader(sent[sent.length - 1]!).status;
    };
    assert.equal(await treeConnect(1), NtStatus.SUCCESS);
    opts.directory = { lookup: () => Promise.reject(new Error('control database unreachable')) };
    assert.equal(await treeConnect(2), NtStatus.INSUFFICIENT_RESOURCES);
    opts.directory = { lookup: () => Promise.resolve(null) };
    assert.equal(await treeConnect(3), NtStatus.ACCESS_DENIED);
  });

  it('a re-authentication on a signing session must be signed: an unsigned one neither ends nor changes it', async () => {
    const { conn, sent, srv } = await connection();
    await conn.handleFrame(request(Command.NEGOTIATE, 0, negotiate([0x0210]), { credits: 100 }));
    const key = Buffer.alloc(16, 0x3c);
    const { sessionId, treeId } = await signingSession(conn, sent, key);
    const sessions = (conn as unknown as { sessions: Map<number, { user: { name: string } | null }> }).sessions;
    // What an on-path attacker can inject without the key: a junk token (which would end the
    // session) and the NTLM NEGOTIATE that starts an anonymous logon (which would switch its user).
    const ntlmNegotiate = new TestNtlmClient({ user: '', password: '', anonymous: true }).negotiate();
    let id = 2;
    for (const token of [Buffer.from('junk'), ntlmNegotiate]) {
      await conn.handleFrame(request(Command.SESSION_SETUP, id++, sessionSetupBody(token), { sessionId }));
      assert.equal(decodeHeader(sent[sent.length - 1]!).status, NtStatus.ACCESS_DENIED);
    }
    assert.equal(sessions.get(sessionId)?.user?.name, 'alice', 'the session keeps its user');
    await conn.handleFrame(signCompound(key, [request(Command.CREATE, id++, createBody('', 1), { sessionId, treeId })]));
    assert.equal(decodeHeader(sent[sent.length - 1]!).status, 0, 'and still works');
    // Signed by the key holder, a bad token is processed, and ends the session (3.3.5.5.3).
    await conn.handleFrame(signCompound(key, [request(Command.SESSION_SETUP, id++, sessionSetupBody(Buffer.from('junk')), { sessionId })]));
    assert.equal(decodeHeader(sent[sent.length - 1]!).status, NtStatus.INVALID_PARAMETER);
    assert.equal(sessions.has(sessionId), false);
    await srv.close();
  });

  it('at most 8 logons in progress on a connection: unauthenticated sessions are bounded', async () => {
    const { conn, sent, srv } = await connection();
    await conn.handleFrame(request(Command.NEGOTIATE, 0, negotiate([0x0210]), { credits: 100 }));
    let id = 1;
    const started: number[] = [];
    for (let i = 0; i < 8; i++) {
      // An empty first buffer: the server answers its mechanism list and keeps the session.
      await conn.handleFrame(request(Command.SESSION_SETUP, id++, sessionSetupBody(Buffer.alloc(0))));
      const h = decodeHeader(sent[sent.length - 1]!);
      assert.equal(h.status, NtStatus.MORE_PROCESSING_REQUIRED);
      started.push(h.sessionId);
    }
    await conn.handleFrame(request(Command.SESSION_SETUP, id++, sessionSetupBody(Buffer.alloc(0))));
    assert.equal(decodeHeader(sent[sent.length - 1]!).status, NtStatus.INSUFFICIENT_RESOURCES);
    const sessions = (conn as unknown as { sessions: Map<number, unknown> }).sessions;
    assert.equal(sessions.size, 8);
    // One that fails ends, and makes room for another.
    await conn.handleFrame(request(Command.SESSION_SETUP, id++, sessionSetupBody(Buffer.from('junk')), { sessionId: started[0]! }));
    assert.equal(decodeHeader(sent[sent.length - 1]!).status, NtStatus.INVALID_PARAMETER);
    await conn.handleFrame(request(Command.SESSION_SETUP, id++, sessionSetupBody(Buffer.alloc(0))));
    assert.equal(decodeHeader(sent[sent.length - 1]!).status, NtStatus.MORE_PROCESSING_REQUIRED);
    assert.equal(sessions.size, 8);
    await srv.close();
  });

  it('failed logons are limited per address and user: past it the right password fails too', async () => {
    const srv = await memoryServer();
    const sent: Buffer[] = [];
    const ntHash = await new TestNtlmClient({ user: 'alice', password: 'right' }).ntHash();
    const users = new Map([
      ['alice', 1000],
      ['bob', 1001],
    ]);
    let lookups = 0;
    const logons = new LogonLimiter({ perUser: 3, perAddress: 50, windowMs: 60_000, maxKeys: 100 });
    const { log, lines } = recordingLog();
    const connect = (address: string) =>
      new SmbConnection(
        {
          fs: srv.fs,
          directory: {
            lookup: (name) => {
              lookups++;
              const uid = users.get(name.toLowerCase());
              return Promise.resolve(uid === undefined ? null : { user: { name, uid, gid: uid, gids: [] }, ntHash });
            },
          },
          serverGuid: Buffer.alloc(16, 9),
          signingRequired: false,
          serverName: 'TEST',
          domain: 'WORKGROUP',
          logons,
        },
        (parts) => sent.push(Buffer.concat(parts)),
        () => undefined,
        log,
        address,
      );
    /** A raw NTLMSSP logon (Linux cifs): its final status. */
    const logon = async (conn: SmbConnection, user: string, password: string, id: { next: number }, sessionId = 0): Promise<number> => {
      const client = new TestNtlmClient({ user, password });
      await conn.handleFrame(request(Command.SESSION_SETUP, id.next++, sessionSetupBody(client.negotiate()), { sessionId }));
      const first = sent[sent.length - 1]!;
      const h = decodeHeader(first);
      if (h.status !== NtStatus.MORE_PROCESSING_REQUIRED) return h.status;
      const challenge = first.subarray(
        first.readUInt16LE(HEADER_SIZE + 4),
        first.readUInt16LE(HEADER_SIZE + 4) + first.readUInt16LE(HEADER_SIZE + 6),
      );
      const auth = await client.authenticate(challenge);
      await conn.handleFrame(request(Command.SESSION_SETUP, id.next++, sessionSetupBody(auth), { sessionId: h.sessionId }));
      return decodeHeader(sent[sent.length - 1]!).status;
    };
    const a = connect('192.0.2.1');
    const ida = { next: 1 };
    await a.handleFrame(request(Command.NEGOTIATE, 0, negotiate([0x0210]), { credits: 100 }));
    assert.equal(await logon(a, 'alice', 'right', ida), NtStatus.SUCCESS);
    const aliceSession = decodeHeader(sent[sent.length - 1]!).sessionId;
    for (let i = 0; i < 3; i++) assert.equal(await logon(a, 'alice', `guess${i}`, ida), NtStatus.LOGON_FAILURE);
    const before = lookups;
    assert.equal(await logon(a, 'alice', 'right', ida), NtStatus.LOGON_FAILURE, 'blocked: the right password is refused too');
    assert.equal(lookups, before, 'refused before the directory and the password check');
    assert.equal(await logon(a, 'ALICE', 'right', ida), NtStatus.LOGON_FAILURE);
    for (let i = 0; i < 20; i++) assert.equal(await logon(a, 'alice', 'right', ida), NtStatus.LOGON_FAILURE);
    assert.equal(
      lines.filter((l) => l.includes('refused')).length,
      4,
      'three wrong passwords, then one line for all 22 refusals past the limit',
    );
    // Re-authenticating alice's valid session is refused too, and ends it: that is always logged.
    assert.equal(await logon(a, 'alice', 'right', ida, aliceSession), NtStatus.LOGON_FAILURE);
    assert.equal(lines.filter((l) => l === 'SMB re-authentication refused: session ended').length, 1, 'the ended session is logged');
    const sessions = (a as unknown as { sessions: Map<number, unknown> }).sessions;
    assert.equal(sessions.has(aliceSession), false, 'the session is gone');
    assert.equal(await logon(a, 'bob', 'right', ida), NtStatus.SUCCESS, 'another user from the same address');
    // Another address (a new connection) is not affected.
    const b = connect('192.0.2.2');
    await b.handleFrame(request(Command.NEGOTIATE, 0, negotiate([0x0210]), { credits: 100 }));
    assert.equal(await logon(b, 'alice', 'right', { next: 1 }), NtStatus.SUCCESS);
    await srv.close();
  });

  it('grants credits within the window and closes the connection for a MessageId never granted or reused', async () => {
    const { conn, sent, aborted, srv } = await connection();
    await conn.handleFrame(request(Command.NEGOTIATE, 0, negotiate([0x0210]), { credits: 5 }));
    assert.equal(elements(sent[0]!)[0]!.credits, 5);
    await conn.handleFrame(request(Command.ECHO, 3, echo));
    assert.deepEqual(aborted, []);
    await conn.handleFrame(request(Command.ECHO, 3, echo));
    assert.equal(aborted.length, 1, 'a reused MessageId');
    const other = await connection();
    await other.conn.handleFrame(request(Command.NEGOTIATE, 0, negotiate([0x0210]), { credits: 5 }));
    await other.conn.handleFrame(request(Command.ECHO, 1000, echo));
    assert.equal(other.aborted.length, 1, 'an id never granted');
    await other.srv.close();
    await srv.close();
  });

  it('runs nothing after an abort: not the rest of the compound, not a later frame', async () => {
    const { conn, sent, aborted, srv } = await connection();
    await conn.handleFrame(request(Command.NEGOTIATE, 0, negotiate([0x0210]), { credits: 5 }));
    // The first element's MessageId is outside the window: the connection is dropped there.
    await conn.handleFrame(compound([request(Command.ECHO, 1000, echo), request(Command.ECHO, 1, echo)]));
    assert.equal(aborted.length, 1);
    assert.equal(sent.length, 1, 'no response after the abort');
    await conn.handleFrame(request(Command.ECHO, 2, echo));
    assert.equal(sent.length, 1, 'a frame read before the socket closed is not run');
    await srv.close();
  });

  it('closes the connection for a malformed frame and answers INVALID_PARAMETER for a malformed body', async () => {
    const { conn, sent, aborted, srv } = await connection();
    await conn.handleFrame(request(Command.NEGOTIATE, 0, negotiate([0x0210])));
    const bad = request(Command.ECHO, 1, echo);
    bad.writeUInt32LE(12, 20); // NextCommand not a multiple of 8 / inside the header
    await conn.handleFrame(bad);
    assert.equal(aborted.length, 1);
    assert.equal(sent.length, 1);
    const other = await connection();
    await other.conn.handleFrame(request(Command.NEGOTIATE, 0, negotiate([0x0210])));
    await other.conn.handleFrame(request(Command.ECHO, 1, Buffer.from([9, 0, 0, 0])));
    assert.equal(elements(other.sent[1]!)[0]!.status, NtStatus.INVALID_PARAMETER);
    assert.deepEqual(other.aborted, []);
    await other.srv.close();
    await srv.close();
  });
});
