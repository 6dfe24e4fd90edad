// A bounded mutation fuzzer against the SMB2 engine of a real server process, in the manner of
// fuzz.test.ts for RPC. Each worker logs on as a control-plane user (NEGOTIATE, NTLM
// SESSION_SETUP, TREE_CONNECT, CREATE of its own file), then sends mutated copies of a valid
// request corpus made with its session, tree and FileId: CREATE, WRITE, READ, QUERY_INFO, ECHO,
// CLOSE and a related CREATE+WRITE+CLOSE compound. Mutations (of the body in 95% of frames, of the
// whole message otherwise): bit flips, truncation, huge little-endian words, random bytes over a
// span, bytes inserted or cut. The MessageId is kept
// valid in most frames (so that the mutation reaches the command, not the credit check).
// Asserted: the server never exits, every frame (but CANCEL, which has no reply) is answered or
// its connection closed within FRAME_BOUND_MS, the server's RSS stays under RSS_LIMIT, and a fresh
// logon works at the end.
//
// Fixed size: DITTOFS_FUZZ_SMB_FRAMES (default 6,000). One seed, printed at the start and in every
// failure; DITTOFS_FUZZ_SEED=N replays it.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { adminLogin, apiRequest } from '../helpers/api.js';
import { MiB, RSS_LIMIT, rssOf } from '../helpers/hostile.js';
import { REPLY_TIMEOUT_MS, SUITE_TIMEOUT_MS } from '../helpers/limits.js';
import { Prng, seedFrom } from '../helpers/prng.js';
import { startDittofs, TEST_ADMIN_PASSWORD, type DittofsProcess } from '../helpers/server.js';
import { bodies, SmbCommand, SmbTestClient, smb2Message } from '../helpers/smb-client.js';

const FRAMES = Number(process.env.DITTOFS_FUZZ_SMB_FRAMES ?? 6_000);
const FRAME_BOUND_MS = REPLY_TIMEOUT_MS;
const WORKERS = 4;
const BATCH = 8;
const USER = 'fuzzer';
const PASSWORD = 'fuzzer-Passw0rd-1';
const HUGE = [0xffffffff, 0x7fffffff, 0x80000000, 0x00ffffff, 0x10000, 0xfffe];

const seed = seedFrom('DITTOFS_FUZZ_SEED');
const tag = `seed ${seed} (replay with DITTOFS_FUZZ_SEED=${seed})`;

/** The valid requests of a logged-on client, as messages without MessageIds of their own yet. */
function corpus(c: SmbTestClient, fileId: Buffer, worker: number): Buffer[] {
  const ids = { messageId: 0, sessionId: c.sessionId, treeId: c.treeId };
  const m = (cmd: number, body: Buffer): Buffer => smb2Message(cmd, body, ids);
  const related = (msgs: Buffer[]): Buffer => {
    const parts = msgs.map((x, i) => {
      const padded = Buffer.concat([x, Buffer.alloc(i === msgs.length - 1 ? 0 : (8 - (x.length % 8)) % 8)]);
      if (i > 0) padded.writeUInt32LE(padded.readUInt32LE(16) | 4, 16); // RELATED_OPERATIONS
      if (i < msgs.length - 1) padded.writeUInt32LE(padded.length, 20); // NextCommand
      return padded;
    });
    return Buffer.concat(parts);
  };
  const any = Buffer.alloc(16, 0xff);
  return [
    m(SmbCommand.CREATE, bodies.create(`fuzz-${worker}.bin`)),
    m(SmbCommand.WRITE, bodies.write(fileId, 0, Buffer.alloc(200, 0x61))),
    m(SmbCommand.READ, bodies.read(fileId, 0, 4096)),
    m(SmbCommand.QUERY_INFO, bodies.queryInfo(fileId)),
    m(SmbCommand.ECHO, bodies.echo()),
    m(SmbCommand.TREE_CONNECT, bodies.treeConnect('\\\\127.0.0.1\\export')),
    related([
      m(SmbCommand.CREATE, bodies.create(`fuzz-${worker}-c.bin`)),
      m(SmbCommand.WRITE, bodies.write(any, 0, Buffer.alloc(64, 0x62))),
      m(SmbCommand.CLOSE, bodies.close(any)),
    ]),
  ];
}

function mutate(p: Prng, msg: Buffer): Buffer {
  switch (p.int(0, 5)) {
    case 0: {
      const b = Buffer.from(msg);
      for (let i = p.int(1, 8); i > 0; i--) b[p.int(0, b.length - 1)]! ^= 1 << p.int(0, 7);
      return b;
    }
    case 1:
      return Buffer.from(msg.subarray(0, p.int(0, msg.length)));
    case 2: {
      // A huge word (an offset, a length, a count).
      const b = Buffer.from(msg);
      const at = p.int(0, Math.max(0, b.length - 4));
      if (at + 4 <= b.length) b.writeUInt32LE(p.chance(0.3) ? p.u32() : p.pick(HUGE), at);
      return b;
    }
    case 3: {
      const b = Buffer.from(msg);
      p.bytes(p.int(1, 16)).copy(b, p.int(0, b.length - 1));
      return b;
    }
    case 4: {
      const at = p.int(0, msg.length);
      return Buffer.concat([msg.subarray(0, at), p.bytes(p.int(1, 12)), msg.subarray(at)]);
    }
    default: {
      const at = p.int(0, msg.length);
      return Buffer.concat([msg.subarray(0, at), msg.subarray(Math.min(msg.length, at + p.int(1, 12)))]);
    }
  }
}

describe(`SMB2 fuzzer (${tag})`, { timeout: SUITE_TIMEOUT_MS }, () => {
  let srv: DittofsProcess;
  let peak = 0;
  let sampler: NodeJS.Timeout | undefined;

  before(async () => {
    console.log(`# SMB fuzz: ${FRAMES} frames, ${tag}`);
    srv = await startDittofs();
    const base = `http://127.0.0.1:${srv.apiPort}`;
    const first = await adminLogin(base, TEST_ADMIN_PASSWORD);
    await apiRequest(
      base,
      'POST',
      '/api/v1/users/me/password',
      { current_password: TEST_ADMIN_PASSWORD, new_password: 'admin-Passw0rd-changed' },
      first.token,
    );
    const token = (await adminLogin(base, 'admin-Passw0rd-changed')).token;
    const user = { username: USER, password: PASSWORD, uid: 1500, gid: 1500, must_change_password: false };
    assert.equal((await apiRequest(base, 'POST', '/api/v1/users', user, token)).status, 201);
    assert.equal(
      (await apiRequest(base, 'PUT', `/api/v1/shares/export/permissions/users/${USER}`, { level: 'read-write' }, token)).status,
      200,
    );
    sampler = setInterval(() => (peak = Math.max(peak, rssOf(srv.child.pid!))), 100);
  });

  after(async () => {
    if (sampler) clearInterval(sampler);
    await srv?.stop();
  });

  test('mutated frames: no crash, no hang, bounded memory', { timeout: SUITE_TIMEOUT_MS }, async () => {
    const rng = new Prng(seed);
    let sent = 0;
    let closedConnections = 0;
    let answered = 0;

    async function worker(w: number): Promise<void> {
      const p = new Prng(rng.u32());
      while (sent < FRAMES) {
        const c = await SmbTestClient.connect(srv.smbPort);
        try {
          await c.logon(USER, PASSWORD, 'export');
          const fileId = await c.open(`fuzz-${w}.bin`);
          const base = corpus(c, fileId, w);
          while (sent < FRAMES && !c.closed) {
            const expected = new Set<number>();
            const got = new Set<number>();
            c.onReply = (r) => got.add(r.messageId);
            for (let i = 0; i < BATCH && sent < FRAMES; i++, sent++) {
              // Mostly the body (what the commands decode); a broken header closes the connection.
              const src = p.pick(base);
              const msg = p.chance(0.95) ? Buffer.concat([src.subarray(0, 64), mutate(p, src.subarray(64))]) : mutate(p, src);
              const id = c.nextMessageId;
              // Every element keeps a valid MessageId of its own, unless the mutation is left alone (2%).
              let at = 0;
              let n = 0;
              for (let k = 0; k < 128 && at + 64 <= msg.length && p.chance(0.98); k++, n++) {
                msg.writeUInt32LE(id + n, at + 24);
                msg.writeUInt32LE(0, at + 28);
                msg.writeUInt16LE(1, at + 6); // CreditCharge 1: the ids stay consecutive
                if (msg.readUInt16LE(at + 12) !== SmbCommand.CANCEL) expected.add(id + n);
                const next = msg.readUInt32LE(at + 20);
                if (next === 0 || next < 64) break;
                at += next;
              }
              c.nextMessageId = id + Math.max(1, n);
              if (msg.length > 0) c.sendFrame(msg);
            }
            const deadline = Date.now() + FRAME_BOUND_MS;
            while (!c.closed && [...expected].some((id) => !got.has(id))) {
              assert.ok(Date.now() < deadline, `frames unanswered for ${FRAME_BOUND_MS} ms on an open connection (${tag})`);
              await new Promise((r) => setTimeout(r, 5));
            }
            answered += got.size;
            assert.equal(srv.child.exitCode, null, `server exited (${tag}):\n${srv.output().slice(-3000)}`);
          }
          if (c.closed) closedConnections++;
        } catch (err) {
          // A logon on a fresh connection must work: the server is not allowed to be broken.
          if (!c.closed) throw err;
          closedConnections++;
        } finally {
          c.close();
        }
      }
    }

    await Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));
    console.log(
      `# SMB fuzz: ${sent} frames, ${answered} replies, ${closedConnections} connections closed by the server, peak RSS ${(peak / MiB).toFixed(0)} MiB (${tag})`,
    );
    console.log(
      srv
        .output()
        .split('\n')
        .filter((l) => l.includes('protocol error'))
        .slice(0, 12)
        .join('\n'),
    );
    assert.equal(srv.child.exitCode, null, `server exited (${tag})`);
    assert.ok(peak < RSS_LIMIT, `peak RSS ${(peak / MiB).toFixed(0)} MiB (${tag})`);
    const last = await SmbTestClient.connect(srv.smbPort);
    await last.logon(USER, PASSWORD, 'export');
    const echo = await last.request(SmbCommand.ECHO, bodies.echo());
    assert.equal(echo.status, 0);
    last.close();
  });
});
