// Fault injection: the server process is killed with SIGKILL at random moments while a raw NFSv3
// client writes, and every byte the server acknowledged as durable must read back after a restart.
//
// Server: embedded metadata store + filesystem block store (256 KiB blocks) in one temp data dir
// kept across restarts. Its WAL is volatile (volatile-wal.ts, preloaded): segment writes stay in the
// process until their fdatasync, so a SIGKILL loses what no fsync covered, as a power cut would (a
// SIGKILL alone loses nothing the kernel was handed: a COMMIT without its fsync went unseen here).
// The metadata store's SQLite files are volatile too (volatile-meta.c, an LD_PRELOAD shim: after a
// kill they hold what their last fsyncs covered, nothing later). FAULT_VOLATILE_WAL=0 and
// FAULT_VOLATILE_META=0 run the server as it is.
// Client (test/helpers/nfs-ops.ts over one TCP connection): one worker per file, each sending
// WRITEs of 4 KiB .. 1 MiB (aligned and unaligned) that append, extend past a hole, or overwrite
// earlier ranges, as UNSTABLE (then COMMIT now and then), DATA_SYNC or FILE_SYNC.
//
// The model, per file: `model` is the content every WRITE sent so far makes (in send order; one
// WRITE in flight per file, so there is no ambiguity of order); `durable` + `known` are the bytes
// ACKNOWLEDGED DURABLE: a WRITE reply with committed != UNSTABLE, or an UNSTABLE WRITE followed by a
// COMMIT whose verifier equals that WRITE reply's verifier. Writes not acknowledged durable stay
// pending. After a crash and restart, every known byte must read back as its durable value, or as
// the value of a pending (newer, unacknowledged) WRITE covering it; the file size must lie between
// the end of the known bytes and the model's size. Then the client resends every pending WRITE (as
// a real client does when the verifier changed), COMMITs, and carries on with the same files.
// The last round COMMITs everything and compares whole files (sha256) with the model, before and
// after one more SIGKILL.
//
// Reproduce a failure: FAULT_SEED=<seed printed by the test>. The operations of each file in each
// round follow from the seed; where the kill lands depends on timing. FAULT_CRASH_ROUNDS=N changes
// the number of crash rounds (default 12, at least 10); FAULT_KEEP_DATA=1 keeps the data dir of a
// failed run.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { NfsOps, statusName } from '../helpers/nfs-ops.js';
import { SUITE_TIMEOUT_MS } from '../helpers/limits.js';
import { Prng, seedFrom } from '../helpers/prng.js';
import { StableHow } from '../helpers/rpc-client.js';
import { freePort, type DittofsProcess } from '../helpers/server.js';
import {
  crashTestConfig,
  intFromEnv,
  KiB,
  logLinesAtLeast,
  MiB,
  restoreVolatileMeta,
  sha256,
  sleep,
  startReady,
  tail,
  volatileWalEnv,
  writeConfig,
  WriteModel,
  type PendingWrite,
} from './support.js';

const SEED = seedFrom('FAULT_SEED');
const ROUNDS = Math.max(10, intFromEnv('FAULT_CRASH_ROUNDS', 12));
const FILES = 4;
/** Files grow up to this size, then only see overwrites. */
const MAX_FILE = 6 * MiB;
const MIN_IO = 4 * KiB;
const MAX_IO = 1 * MiB;
/** Per-round bound on WRITE/COMMIT calls per file (the kill normally comes first). */
const MAX_OPS_PER_ROUND = 400;
/** The kill comes this long after the workload starts (uniform). */
const KILL_DELAY_MS: [number, number] = [50, 2_500];
/** A bound against a hang: twelve restarts of the server take minutes on a loaded machine. */
const TEST_TIMEOUT_MS = SUITE_TIMEOUT_MS;

/** Appended to every failure message so that it can be reproduced. */
const REPRO = `(seed ${SEED}; rerun with FAULT_SEED=${SEED})`;

/** The NFS side's model: a file handle and name, and counts for the report. */
class FileModel extends WriteModel {
  fh: Buffer = Buffer.alloc(0);
  /** Statistics for the report. */
  writes = 0;
  durableAcks = 0;
  commits = 0;

  constructor(readonly name: string) {
    super(MAX_FILE);
  }

  /** Records a WRITE about to be sent (UNSTABLE until its reply says with which verifier). */
  override issue(off: number, data: Buffer): PendingWrite {
    const p = super.issue(off, data);
    p.verf = null;
    this.writes++;
    return p;
  }

  override markDurable(p: PendingWrite): void {
    if (this.pending.includes(p)) this.durableAcks++;
    super.markDurable(p);
  }

  /** A COMMIT answered with `verf`: every UNSTABLE write answered with the same verifier is durable. */
  committed(verf: Buffer): number {
    const covered = this.pending.filter((p) => p.verf?.equals(verf) === true).sort((a, b) => a.seq - b.seq);
    for (const p of covered) this.markDurable(p);
    this.commits++;
    return covered.length;
  }

  /**
   * Checks what the server holds after a restart against the acknowledged bytes. Returns problems
   * (empty when all is well).
   */
  check(actual: Buffer, serverSize: number): string[] {
    const problems: string[] = [];
    if (serverSize > this.size) problems.push(`${this.name}: size ${serverSize} is larger than any WRITE sent reached (${this.size})`);
    if (serverSize < this.known.end)
      problems.push(`${this.name}: size ${serverSize} cuts off acknowledged bytes (acknowledged up to ${this.known.end})`);
    for (const [s, e] of this.known.ranges) {
      const end = Math.min(e, actual.length);
      if (end <= s) continue;
      if (actual.subarray(s, end).equals(this.durable.subarray(s, end))) continue;
      // Mismatch: a byte may still hold the value of a newer, unacknowledged write.
      let badStart = -1;
      let badCount = 0;
      for (let i = s; i < end; i++) {
        const got = actual[i]!;
        if (got === this.durable[i]) continue;
        const explained = this.pending.some((p) =>
          p.segs.some((g) => i >= g.off && i < g.off + g.data.length && g.data[i - g.off] === got),
        );
        if (explained) continue;
        if (badStart < 0) badStart = i;
        badCount++;
      }
      if (badCount > 0) {
        const lo = badStart;
        problems.push(
          `${this.name}: ${badCount} acknowledged byte(s) in [${s}, ${e}) lost, first at offset ${lo}: ` +
            `expected ${this.durable.subarray(lo, lo + 8).toString('hex')}…, read ${actual.subarray(lo, lo + 8).toString('hex')}…` +
            ` (sha256 of the acknowledged range: expected ${sha256(this.durable.subarray(s, e))}, read ${sha256(actual.subarray(s, end))})`,
        );
      }
    }
    return problems;
  }
}

/** Picks the next WRITE of a file: [offset, length, stable]. */
function nextWrite(rng: Prng, f: FileModel): [number, number, number] {
  let len = rng.chance(0.5) ? rng.int(1, MAX_IO / MIN_IO) * MIN_IO : rng.int(MIN_IO, MAX_IO);
  const kind = f.size === 0 ? 'append' : rng.pick(['append', 'append', 'overwrite', 'overwrite', 'hole'] as const);
  let off: number;
  switch (kind) {
    case 'append':
      off = f.size;
      break;
    case 'overwrite':
      off = rng.chance(0.5) ? rng.int(0, Math.floor((f.size - 1) / MIN_IO)) * MIN_IO : rng.int(0, f.size - 1);
      break;
    case 'hole':
      off = f.size + rng.int(1, 300 * KiB);
      break;
  }
  if (off + len > MAX_FILE) {
    if (off > MAX_FILE - MIN_IO) {
      len = Math.min(len, MAX_FILE);
      off = rng.int(0, MAX_FILE - len);
    } else {
      len = MAX_FILE - off;
    }
  }
  const r = rng.next();
  const stable = r < 0.6 ? StableHow.UNSTABLE : r < 0.7 ? StableHow.DATA_SYNC : StableHow.FILE_SYNC;
  return [off, len, stable];
}

void describe('crash: SIGKILL of the server during writes (raw NFSv3 client)', { timeout: TEST_TIMEOUT_MS }, () => {
  let dir: string | undefined;
  let server: DittofsProcess | undefined;
  let failed = true;

  after(async () => {
    await server?.kill();
    // The data dir (WAL included) can be hundreds of MiB: kept only on request.
    if (dir && failed && process.env.FAULT_KEEP_DATA === '1') console.error(`crash test: data dir kept for inspection: ${dir} ${REPRO}`);
    else if (dir) await rm(dir, { recursive: true, force: true });
  });

  void it(`keeps every acknowledged byte across ${ROUNDS} SIGKILLs (seed ${SEED})`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
    t.diagnostic(`seed ${SEED} (FAULT_SEED=${SEED} reproduces the operation sequence)`);
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-fault-crash-'));
    const dataDir = path.join(dir, 'data');
    const configFile = await writeConfig(dir, crashTestConfig(dataDir));
    const nfsPort = await freePort();
    const rng = new Prng(SEED);
    const files = Array.from({ length: FILES }, (_, i) => new FileModel(`crash-${i}.bin`));
    const verifiers: Buffer[] = [];
    const stats = { kills: 0, killedWithWritesInFlight: 0, resent: 0, roundsMs: [] as number[] };

    const start = async (): Promise<DittofsProcess> => {
      // The WAL and the metadata store are volatile (volatile-wal.ts, volatile-meta.c): a SIGKILL
      // loses what no fdatasync covered, as a power cut.
      await restoreVolatileMeta(path.join(dataDir, 'meta'));
      const s = await startReady({ dataDir, configFile, nfsPort, env: volatileWalEnv() });
      server = s;
      return s;
    };
    function fail(what: string, s?: DittofsProcess): never {
      assert.fail(`${what} ${REPRO}${s ? `\n--- server output (tail) ---\n${tail(s.output())}` : ''}`);
    }
    function noServerErrors(s: DittofsProcess, when: string): void {
      const bad = logLinesAtLeast(s.output());
      if (bad.length > 0) fail(`server logged errors ${when}:\n${bad.map((l) => l.raw).join('\n')}`, s);
    }
    /** The verifier of this server start (from a COMMIT): it must be new. */
    async function newVerifier(s: DittofsProcess, nfs: NfsOps, when: string): Promise<Buffer> {
      const c = await nfs.commit(files[0]!.fh);
      if (c.status !== 0 || !c.verf) fail(`${when}: COMMIT: ${statusName(c.status)}`, s);
      if (verifiers.some((v) => v.equals(c.verf!)))
        fail(`${when}: the write verifier ${c.verf.toString('hex')} did not change across a restart`, s);
      verifiers.push(c.verf);
      return c.verf;
    }

    /** After a restart: handles still valid, acknowledged bytes intact, then resend pending writes and COMMIT. */
    const recover = async (s: DittofsProcess, nfs: NfsOps, root: Buffer, round: number): Promise<void> => {
      for (const f of files) {
        const lk = await nfs.lookup(root, f.name);
        if (lk.status !== 0 || !lk.fh || !lk.attrs) fail(`round ${round}: LOOKUP ${f.name} after restart: ${statusName(lk.status)}`, s);
        if (!lk.fh.equals(f.fh)) fail(`round ${round}: the handle of ${f.name} changed across a restart`, s);
        const size = lk.attrs.size;
        let actual: Buffer;
        try {
          actual = await nfs.readAll(lk.fh, size);
        } catch (e) {
          fail(`round ${round}: reading ${f.name} (${size} bytes) after SIGKILL + restart: ${(e as Error).message}`, s);
        }
        if (actual.length !== size) fail(`round ${round}: ${f.name}: READ returned ${actual.length} of ${size} bytes`, s);
        const problems = f.check(actual, size);
        if (problems.length > 0) fail(`round ${round}: acknowledged data lost after SIGKILL + restart:\n  ${problems.join('\n  ')}`, s);
      }
      // Resend what was never acknowledged durable, oldest first (a new verifier tells a real client to).
      const verf = await newVerifier(s, nfs, `round ${round}`);
      for (const f of files) {
        const redo = [...f.pending].sort((a, b) => a.seq - b.seq);
        for (const p of redo) {
          p.verf = null;
          for (const g of p.segs) {
            const w = await nfs.writeV(f.fh, g.off, g.data, StableHow.UNSTABLE);
            if (w.status !== 0 || w.count !== g.data.length || !w.verf)
              fail(`round ${round}: resend WRITE to ${f.name}: ${statusName(w.status)}`, s);
            if (!w.verf.equals(verf)) fail(`round ${round}: the write verifier changed without a restart`, s);
            p.verf = w.verf;
            stats.resent++;
          }
        }
        const c = await nfs.commit(f.fh);
        if (c.status !== 0 || !c.verf) fail(`round ${round}: COMMIT ${f.name} after restart: ${statusName(c.status)}`, s);
        if (!c.verf.equals(verf)) fail(`round ${round}: the write verifier changed without a restart`, s);
        f.committed(c.verf);
        if (f.pending.length > 0) fail(`round ${round}: ${f.name}: resent writes not covered by the COMMIT`, s);
      }
    };

    /** One file's worker: WRITEs and COMMITs until the connection dies or the op budget runs out. */
    const worker = async (nfs: NfsOps, f: FileModel, frng: Prng, killed: () => boolean): Promise<void> => {
      for (let op = 0; op < MAX_OPS_PER_ROUND && !killed(); op++) {
        const unstable = f.pending.filter((p) => p.verf instanceof Buffer).length;
        if (unstable > 0 && frng.chance(0.25)) {
          const c = await nfs.commit(f.fh);
          if (c.status !== 0 || !c.verf) throw new Error(`COMMIT ${f.name}: ${statusName(c.status)}`);
          f.committed(c.verf);
          continue;
        }
        const [off, len, stable] = nextWrite(frng, f);
        const data = frng.bytes(len);
        const p = f.issue(off, data);
        const w = await nfs.writeV(f.fh, off, data, stable);
        if (w.status !== 0 || !w.verf) throw new Error(`WRITE ${f.name} [${off}, +${len}): ${statusName(w.status)}`);
        if (w.count !== len) throw new Error(`WRITE ${f.name}: short write ${w.count} of ${len}`);
        if (stable !== StableHow.UNSTABLE && w.committed === StableHow.UNSTABLE)
          throw new Error(`WRITE ${f.name}: asked for stable_how ${stable}, answered UNSTABLE`);
        p.verf = w.verf;
        if (w.committed !== StableHow.UNSTABLE) f.markDurable(p);
      }
    };

    try {
      // Round 0 creates the files; rounds 1..ROUNDS start by checking what the previous one left.
      for (let round = 0; round <= ROUNDS; round++) {
        const t0 = Date.now();
        const s = await start();
        const nfs = await NfsOps.open(nfsPort);
        try {
          const root = await nfs.mount('/export');
          if (round === 0) {
            for (const f of files) {
              const c = await nfs.create(root, f.name);
              if (c.status !== 0 || !c.fh) fail(`CREATE ${f.name}: ${statusName(c.status)}`, s);
              f.fh = c.fh;
            }
            await newVerifier(s, nfs, 'first start');
          } else {
            await recover(s, nfs, root, round);
          }
          if (round === ROUNDS) break;

          // The workload, and a SIGKILL at a random moment in it.
          let killed = false;
          const delay = rng.int(KILL_DELAY_MS[0], KILL_DELAY_MS[1]);
          const workers = files.map((f, i) =>
            worker(nfs, f, new Prng((SEED ^ Math.imul(round + 1, 0x9e3779b1) ^ (i * 0x85ebca6b)) >>> 0), () => killed),
          );
          const all = Promise.allSettled(workers);
          const finishedFirst = await Promise.race([all.then(() => true), sleep(delay).then(() => false)]);
          noServerErrors(s, `during round ${round}`);
          if (s.child.exitCode !== null || s.child.signalCode !== null) fail(`round ${round}: the server exited by itself`, s);
          const inFlight = files.some((f) => f.pending.some((p) => p.verf === null));
          killed = true;
          await s.kill();
          stats.kills++;
          if (inFlight) stats.killedWithWritesInFlight++;
          const results = await all;
          for (const r of results) {
            // After the kill, calls fail because the connection closed; before it, nothing may fail.
            if (r.status === 'rejected' && finishedFirst) fail(`round ${round}: workload failed before the kill: ${String(r.reason)}`, s);
            if (r.status === 'rejected' && !/connection closed|ECONNRESET|EPIPE/.test(String(r.reason)))
              fail(`round ${round}: workload failed: ${String(r.reason)}`, s);
          }
        } finally {
          nfs.close();
        }
        stats.roundsMs.push(Date.now() - t0);
      }

      // Final: everything was resent and committed by recover(); whole files must equal the model,
      // and stay equal after one more SIGKILL right after the last COMMIT.
      const compareAll = async (when: string): Promise<void> => {
        const s = server!;
        const nfs = await NfsOps.open(nfsPort);
        try {
          const root = await nfs.mount('/export');
          for (const f of files) {
            const lk = await nfs.lookup(root, f.name);
            if (lk.status !== 0 || !lk.fh || !lk.attrs) fail(`${when}: LOOKUP ${f.name}: ${statusName(lk.status)}`, s);
            if (lk.attrs.size !== f.size) fail(`${when}: ${f.name}: size ${lk.attrs.size}, model ${f.size}`, s);
            const data = await nfs.readAll(lk.fh, f.size);
            const want = sha256(f.model.subarray(0, f.size));
            const got = sha256(data);
            if (got !== want) {
              let first = 0;
              while (first < f.size && data[first] === f.model[first]) first++;
              fail(`${when}: ${f.name}: sha256 ${got} != model ${want} (first difference at offset ${first})`, s);
            }
          }
        } finally {
          nfs.close();
        }
      };
      await compareAll('after the final COMMIT');
      for (const f of files) assert.equal(f.pending.length, 0, `${f.name}: pending writes left ${REPRO}`);
      await server!.kill();
      const s = await start();
      const nfs = await NfsOps.open(nfsPort);
      try {
        await newVerifier(s, nfs, 'last start');
      } finally {
        nfs.close();
      }
      await compareAll('after a SIGKILL following the final COMMIT');
      noServerErrors(server!, 'at the end');
      const last = server!;
      await last.stop();
      assert.equal(
        last.child.exitCode,
        0,
        `graceful stop after the crash rounds: exit ${last.child.exitCode ?? last.child.signalCode} ${REPRO}`,
      );
      server = undefined;

      assert.equal(verifiers.length, ROUNDS + 2, `expected a new write verifier on each of ${ROUNDS + 2} starts ${REPRO}`);
      const sum = (k: 'writes' | 'durableAcks' | 'commits') => files.reduce((n, f) => n + f[k], 0);
      t.diagnostic(
        `${stats.kills} kills (${stats.killedWithWritesInFlight} with writes in flight), ${sum('writes')} writes, ` +
          `${sum('durableAcks')} acknowledged durable, ${sum('commits')} commits, ${stats.resent} resent after restarts, ` +
          `file sizes ${files.map((f) => f.size).join('/')}, rounds ${stats.roundsMs.map((ms) => (ms / 1000).toFixed(1)).join(' ')} s`,
      );
      failed = false;
    } catch (e) {
      if (e instanceof Error && !e.message.includes(`seed ${SEED}`)) e.message += ` ${REPRO}`;
      throw e;
    }
  });
});
