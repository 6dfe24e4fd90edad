// A bounded mutation fuzzer against a real server process (issue 11, "a fuzz harness in the
// repo"). The corpus is the RPC records libnfs sent (server/src/nfs3/fixtures/libnfs-capture.json,
// made with hack/capture-frames.mts) plus a well-formed call of every NFSv3 and MOUNT v3 procedure
// with real handles. Each frame is a corpus record mutated by bit flips, truncation, huge lengths,
// random opaque lengths, overwritten or inserted bytes (one to three of them), sent as one to four
// fragments. Asserted: the server never exits, every frame is answered (or, if its RPC header no
// longer decodes, followed by an answered probe) or its connection is closed within FRAME_BOUND_MS,
// and the server's RSS stays under RSS_LIMIT.
//
// Fixed size: DITTOFS_FUZZ_FRAMES (default 40,000). The frames come from one seed, printed at the
// start and in every failure; DITTOFS_FUZZ_SEED=N replays it.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { decodeCall } from '../../server/src/rpc/message.js';
import { XdrWriter } from '../../server/src/rpc/xdr.js';
import { Prng, seedFrom } from '../helpers/prng.js';
import { authSys, MOUNT_PROGRAM, MOUNT_V3, NFS_PROGRAM, NFS_V3, NfsClient, RpcConnection } from '../helpers/rpc-client.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';
import { REPLY_TIMEOUT_MS, SUITE_TIMEOUT_MS, TEST_TIMEOUT_MS } from '../helpers/limits.js';

const MiB = 1024 * 1024;
const RSS_LIMIT = 600 * MiB;
const FRAMES = Number(process.env.DITTOFS_FUZZ_FRAMES ?? 40_000);
/** Longest a frame may go unanswered (with its connection open) before it counts as a hang. */
const FRAME_BOUND_MS = REPLY_TIMEOUT_MS;
/** Connections sending at once, and frames each sends before a probe. */
const WORKERS = 6;
const BATCH = 10;
/** The server's default adapters.nfs.max_record_size. */
const MAX_RECORD = MiB + 64 * 1024;

const seed = seedFrom('DITTOFS_FUZZ_SEED');
const tag = `seed ${seed} (replay with DITTOFS_FUZZ_SEED=${seed})`;

function rssOf(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? 0 : Number(m[1]) * 1024;
}

const capture = JSON.parse(readFileSync(new URL('../../server/src/nfs3/fixtures/libnfs-capture.json', import.meta.url), 'utf8')) as {
  records: string[];
};

/** sattr3 setting only the mode. */
const sattr = (w: XdrWriter, mode = 0o644): XdrWriter => w.u32(1).u32(mode).u32(0).u32(0).u32(0).u32(0).u32(0);

/** One well-formed call record (no record mark) of every NFSv3 and MOUNT v3 procedure. */
function procedureCorpus(h: { root: Buffer; file: Buffer; dir: Buffer; link: Buffer }): Buffer[] {
  const cred = authSys(0, 0);
  const nfs = (proc: number, w: XdrWriter): Buffer => RpcConnection.encodeCall(1, NFS_PROGRAM, NFS_V3, proc, cred, w.finish());
  const mnt = (proc: number, w: XdrWriter): Buffer => RpcConnection.encodeCall(1, MOUNT_PROGRAM, MOUNT_V3, proc, cred, w.finish());
  const fh = (f: Buffer): XdrWriter => new XdrWriter(128).opaque(f);
  const dirop = (d: Buffer, name: string): XdrWriter => new XdrWriter(256).opaque(d).string(name);
  const verf = Buffer.alloc(8);
  return [
    nfs(0, new XdrWriter()),
    nfs(1, fh(h.file)),
    nfs(2, sattr(fh(h.file), 0o600).u32(0)),
    nfs(3, dirop(h.root, 'file')),
    nfs(4, fh(h.file).u32(0x3f)),
    nfs(5, fh(h.link)),
    nfs(6, fh(h.file).u64(0).u32(4096)),
    nfs(7, fh(h.file).u64(100).u32(16).u32(2).opaque(Buffer.alloc(16, 0x41))),
    nfs(8, sattr(dirop(h.dir, 'new-file').u32(0))),
    nfs(9, sattr(dirop(h.dir, 'new-dir'))),
    nfs(10, sattr(dirop(h.dir, 'new-link')).string('target/path')),
    nfs(11, sattr(dirop(h.dir, 'new-fifo').u32(7))),
    nfs(12, dirop(h.dir, 'new-file')),
    nfs(13, dirop(h.dir, 'new-dir')),
    nfs(14, dirop(h.dir, 'new-link').opaque(h.dir).string('renamed')),
    nfs(15, fh(h.file).opaque(h.dir).string('hard-link')),
    nfs(16, fh(h.root).u64(0).fixed(verf).u32(4096)),
    nfs(17, fh(h.root).u64(0).fixed(verf).u32(4096).u32(32768)),
    nfs(18, fh(h.root)),
    nfs(19, fh(h.root)),
    nfs(20, fh(h.root)),
    nfs(21, fh(h.file).u64(0).u32(0)),
    mnt(0, new XdrWriter()),
    mnt(1, new XdrWriter().string('/export')),
    mnt(2, new XdrWriter()),
    mnt(3, new XdrWriter().string('/export')),
    mnt(4, new XdrWriter()),
    mnt(5, new XdrWriter()),
  ];
}

const HUGE = [0xffffffff, 0xfffffffc, 0x80000000, 0x7fffffff, 0x40000000, 0x00100001, 0x01000000];
const OPAQUE_LENGTHS = [0, 1, 2, 3, 4, 5, 7, 8, 63, 64, 65, 255, 256, 400, 401, 1024, 1025, 4096, 4097, 65536];

/** One mutation of `rec` (a fresh buffer). */
function mutate(p: Prng, rec: Buffer): Buffer {
  const word = (): number => 4 * p.int(0, Math.max(0, (rec.length >> 2) - 1));
  switch (p.int(0, 6)) {
    case 0: {
      // Bit flips.
      const b = Buffer.from(rec);
      for (let i = p.int(1, 8); i > 0 && b.length > 0; i--) b[p.int(0, b.length - 1)]! ^= 1 << p.int(0, 7);
      return b;
    }
    case 1:
      // Truncation.
      return Buffer.from(rec.subarray(0, p.int(0, rec.length)));
    case 2: {
      // A huge length (or count, or offset word).
      const b = Buffer.from(rec);
      if (b.length >= 4) b.writeUInt32BE(p.pick(HUGE), word());
      return b;
    }
    case 3: {
      // A random opaque length past the call header's fixed fields.
      const b = Buffer.from(rec);
      if (b.length >= 28) b.writeUInt32BE(p.chance(0.3) ? p.u32() : p.pick(OPAQUE_LENGTHS), 4 * p.int(6, (b.length >> 2) - 1));
      return b;
    }
    case 4: {
      // Random bytes over a span.
      const b = Buffer.from(rec);
      if (b.length === 0) return b;
      const at = p.int(0, b.length - 1);
      p.bytes(p.int(1, 16)).copy(b, at);
      return b;
    }
    case 5: {
      // Bytes inserted (lengths no longer line up).
      const at = p.int(0, rec.length);
      return Buffer.concat([rec.subarray(0, at), p.bytes(p.int(1, 12)), rec.subarray(at)]);
    }
    default: {
      // Bytes cut out of the middle.
      const at = p.int(0, rec.length);
      return Buffer.concat([rec.subarray(0, at), rec.subarray(Math.min(rec.length, at + p.int(1, 12)))]);
    }
  }
}

/** `rec` as 1..4 record-marked fragments. */
function fragmented(p: Prng, rec: Buffer): Buffer {
  const n = rec.length < 2 ? 1 : p.int(1, Math.min(4, rec.length));
  const cuts = [...new Set(Array.from({ length: n - 1 }, () => p.int(1, rec.length - 1)))].sort((a, b) => a - b);
  const bounds = [0, ...cuts, rec.length];
  const parts: Buffer[] = [];
  for (let i = 0; i + 1 < bounds.length; i++) {
    const piece = rec.subarray(bounds[i], bounds[i + 1]);
    const mark = Buffer.alloc(4);
    mark.writeUInt32BE(((i + 2 === bounds.length ? 0x80000000 : 0) | piece.length) >>> 0);
    parts.push(mark, piece);
  }
  return Buffer.concat(parts);
}

interface Frame {
  index: number;
  /** The wire bytes (record marks included). */
  wire: Buffer;
  /** The xid a reply would carry, or null when the record is not a decodable call (no reply). */
  xid: number | null;
  /** A record mark past the cap: the server must close the connection. */
  oversized: boolean;
}

function makeFrames(corpus: Buffer[]): Frame[] {
  const p = new Prng(seed);
  const frames: Frame[] = [];
  for (let index = 0; index < FRAMES; index++) {
    if (p.chance(0.005)) {
      const mark = Buffer.alloc(8);
      mark.writeUInt32BE((0x80000000 | p.int(MAX_RECORD + 1, 0x7fffffff)) >>> 0, 0);
      frames.push({ index, wire: mark, xid: null, oversized: true });
      continue;
    }
    let rec: Buffer = Buffer.from(p.pick(corpus));
    for (let m = p.int(1, 3); m > 0; m--) rec = mutate(p, rec);
    // A fresh xid, so a reply names its frame (and no two frames meet in the duplicate request cache).
    const xid = (0x40000000 + index) >>> 0;
    if (rec.length >= 4) rec.writeUInt32BE(xid, 0);
    let decodes = true;
    try {
      decodeCall(rec);
    } catch {
      decodes = false;
    }
    frames.push({ index, wire: fragmented(p, rec), xid: decodes && rec.length >= 4 ? xid : null, oversized: false });
  }
  return frames;
}

describe('fuzzing the RPC layer with mutated frames', { timeout: SUITE_TIMEOUT_MS }, () => {
  let srv: DittofsProcess;
  let corpus: Buffer[];

  before(async () => {
    console.log(`# fuzz: ${FRAMES} frames, ${tag}`);
    srv = await startDittofs({
      api: false,
      env: { DITTOFS_API_ENABLED: 'false', DITTOFS_METRICS_ENABLED: 'false', DITTOFS_METADATA__STORES__DEFAULT__TYPE: 'memory' },
    });
    const c = await NfsClient.connect(srv.nfsPort);
    try {
      const root = await c.mount('/export');
      const file = await c.writeFile(root, 'file', Buffer.alloc(8192, 0x61));
      const d = await c.mkdir(root, 'dir');
      assert.ok(d.fh);
      const sl = await c.conn.call(
        NFS_PROGRAM,
        NFS_V3,
        10,
        sattr(new XdrWriter(256).opaque(root).string('link'), 0o777).string('file').finish(),
        { cred: authSys(0, 0) },
      );
      assert.equal(sl.kind === 'accepted' && sl.body.u32(), 0, 'SYMLINK for the corpus');
      const link = (await c.lookup(root, 'link')).fh;
      assert.ok(link);
      corpus = [...capture.records.map((h) => Buffer.from(h, 'hex')), ...procedureCorpus({ root, file, dir: d.fh, link })];
    } finally {
      c.close();
    }
  });

  after(async () => {
    await srv?.stop();
  });

  test(`${FRAMES} mutated frames: no crash, no hang, bounded memory`, { timeout: TEST_TIMEOUT_MS }, async () => {
    const frames = makeFrames(corpus);
    const pid = srv.child.pid!;
    let peak = rssOf(pid);
    const sampler = setInterval(() => (peak = Math.max(peak, rssOf(pid))), 100);
    let next = 0;
    let answered = 0;
    let closes = 0;
    let probeXid = 0x20000000;
    const started = Date.now();

    const worker = async (): Promise<void> => {
      let conn: RpcConnection | null = null;
      try {
        while (next < frames.length) {
          assert.equal(srv.child.exitCode, null, `the server exited at frame ~${next}; ${tag}\n${srv.output().slice(-3000)}`);
          conn ??= await RpcConnection.connect(srv.nfsPort);
          const batch = frames.slice(next, next + BATCH);
          next += batch.length;
          for (const f of batch) conn.sendRaw(f.wire);
          // A NULL call behind the batch: its answer means every frame before it was read.
          const probe = ++probeXid >>> 0;
          conn.sendRaw(
            fragmented(new Prng(probe), RpcConnection.encodeCall(probe, NFS_PROGRAM, NFS_V3, 0, authSys(0, 0), Buffer.alloc(0))),
          );
          const waits = [...batch.filter((f) => f.xid !== null).map((f) => f.xid!), probe];
          try {
            for (const xid of waits) {
              await conn.recordFor(xid, FRAME_BOUND_MS);
              if (xid !== probe) answered++;
            }
          } catch (err) {
            const msg = (err as Error).message;
            // Closed by the server (garbage, or a bad record mark): the frames left are not owed a reply.
            if (/connection closed/.test(msg) || conn.isClosed) {
              closes++;
              conn.close();
              conn = null;
              continue;
            }
            const first = batch[0]!.index;
            throw new Error(
              `no answer and no close within ${FRAME_BOUND_MS} ms for frames ${first}..${first + batch.length - 1} (${msg}); ${tag}`,
            );
          }
          if (batch.some((f) => f.oversized)) {
            assert.fail(`a record mark past the cap did not close the connection (frames ${batch[0]!.index}..); ${tag}`);
          }
        }
      } finally {
        conn?.close();
      }
    };
    try {
      await Promise.all(Array.from({ length: WORKERS }, () => worker()));
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, rssOf(pid));
    console.log(
      `# fuzz: ${frames.length} frames in ${((Date.now() - started) / 1000).toFixed(1)} s, ${answered} answered, ` +
        `${closes} connections closed by the server, peak RSS ${(peak / MiB).toFixed(0)} MiB; ${tag}`,
    );
    assert.equal(srv.child.exitCode, null, `the server exited; ${tag}`);
    assert.ok(peak < RSS_LIMIT, `server RSS peaked at ${(peak / MiB).toFixed(0)} MiB; ${tag}`);
    assert.ok(answered > frames.length / 4, `only ${answered} of ${frames.length} frames answered; ${tag}`);
    // Still serving a normal client.
    const c = await NfsClient.connect(srv.nfsPort);
    try {
      assert.ok((await c.mount('/export')).length > 0);
    } finally {
      c.close();
    }
    assert.doesNotMatch(srv.output(), /uncaught|unhandled|"level":60/i, `the server logged a fatal error; ${tag}`);
  });
});
