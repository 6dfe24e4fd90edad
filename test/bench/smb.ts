// The SMB rows of `make bench`: Debian's smbclient against DittoFS's SMB2 port and against Samba's
// smbd (the reference: hack/smb/smbd.sh, a private smb.conf on loopback, a non-root user), both in
// the same mode, in the same run: SMB 2.1 unsigned (the default), 3.1.1 signed (--smb-mode;
// AES-GMAC, as smbclient and both servers agree, under the preauth-derived key) or 3.1.1 encrypted (AES-128-GCM), smbd capped at the
// same dialect.
//
//   put:   smbclient put of the run's random file (--size-mib, default 1 GiB), one session;
//   get:   smbclient get of it back, one session; size and sha256 must equal the source's, so every
//          put is checked before the next figure;
//   small: --smb-files (default 2000) 4 KiB files put with `prompt off; mput *` in one session,
//          then counted with `ls` (every file there, every one 4 KiB).
// MiB/s = bytes / 2^20 / seconds and ops/s = files / seconds, seconds being smbclient's wall time
// (its connect and logon included, the same for both servers).
import { randomFillSync } from 'node:crypto';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { adminLogin, apiRequest } from '../helpers/api.js';
import { runTool } from '../helpers/run.js';
import { REPO_ROOT, TEST_ADMIN_PASSWORD } from '../helpers/server.js';
import { TreeCpuWatch } from './proc.js';

const MiB = 1024 * 1024;

/** How both servers are reached: smbclient's max protocol (smbd's too) and whether it signs or encrypts. */
export interface SmbMode {
  protocol: string;
  sign: boolean;
  encrypt?: boolean;
  label: string;
}

/** --smb-mode of run.ts. */
export const SMB_MODES: Readonly<Record<string, SmbMode>> = Object.freeze({
  '2.1': { protocol: 'SMB2_10', sign: false, label: 'SMB 2.1, unsigned' },
  '3.1.1-signed': { protocol: 'SMB3_11', sign: true, label: 'SMB 3.1.1, signed (AES-GMAC)' },
  '3.1.1-encrypted': { protocol: 'SMB3_11', sign: false, encrypt: true, label: 'SMB 3.1.1, encrypted (AES-128-GCM)' },
});
const SMBD = path.join(REPO_ROOT, 'hack', 'smb', 'smbd.sh');
export const SMB_USER = 'dittobench';
const SMB_PASSWORD = 'Bench-smb-Passw0rd';
const SMALL_FILE_BYTES = 4096;
export const SMB_TARGETS = ['smbd', 'dittofs'] as const;
export type SmbTarget = (typeof SMB_TARGETS)[number];

/** The runner of run.ts: a command with a hard timeout, rejecting on a non-zero exit. */
export type Runner = (
  cmd: string,
  args: string[],
  timeoutMs: number,
  giveUpIf?: () => string | undefined,
) => Promise<{ stdout: string; stderr: string; seconds: number }>;

export interface SmbServer {
  target: SmbTarget;
  port: number;
  pid: number | undefined;
  gone: () => string | undefined;
  logTail: () => Promise<string>;
  stop: () => Promise<void>;
}

export interface SmbResult {
  target: SmbTarget;
  round: number;
  bytes: number;
  putSeconds: number;
  getSeconds: number;
  putMiBps: number;
  getMiBps: number;
  files: number;
  smallSeconds: number;
  smallPerSec: number;
  /** Server CPU seconds (its process tree) per GiB put / got, and per 1,000 small-file puts. */
  putCpuPerGiB?: number;
  /** Bytes the server passed to write calls per byte put (its write amplification). */
  putWrittenPerByte?: number;
  getCpuPerGiB?: number;
  smallCpuPer1k?: number;
}

/** smbd from hack/smb/smbd.sh in `dir`; stop() stops it. `defer` registers the cleanup first. */
export async function startSmbd(
  dir: string,
  run: Runner,
  defer: (what: string, fn: () => Promise<void>) => () => Promise<void>,
  mode: SmbMode = SMB_MODES['2.1']!,
): Promise<SmbServer> {
  const stop = defer('stop smbd', async () => {
    await run(SMBD, ['stop', dir], 90_000);
  });
  let port: number;
  try {
    port = Number((await run(SMBD, ['start', dir, SMB_USER, SMB_PASSWORD, mode.protocol, 'export'], 120_000)).stdout.trim());
  } catch (e) {
    await stop().catch(() => {});
    throw e;
  }
  const pid = Number((await readFile(path.join(dir, 'smbd.pid'), 'utf8')).trim()) || undefined;
  const gone = () => {
    if (pid === undefined) return undefined;
    try {
      process.kill(pid, 0);
      return undefined;
    } catch {
      return `smbd (pid ${pid}) exited`;
    }
  };
  const logTail = async () => {
    const r = await run('tail', ['-n', '20', path.join(dir, 'log', 'log.smbd')], 10_000).catch(() => undefined);
    return r?.stdout ?? '';
  };
  return { target: 'smbd', port, pid, gone, logTail, stop };
}

/** Gives a fresh DittoFS (first admin password TEST_ADMIN_PASSWORD) the bench's SMB user on /export. */
export async function addDittoSmbUser(apiPort: number): Promise<void> {
  const base = `http://127.0.0.1:${apiPort}`;
  const first = await adminLogin(base, TEST_ADMIN_PASSWORD);
  if (first.token === undefined) throw new Error(`admin login: ${first.status} ${JSON.stringify(first.body)}`);
  const admin = 'bench-Admin-Passw0rd';
  const steps: [string, string, unknown, number][] = [
    ['POST', '/api/v1/users/me/password', { current_password: TEST_ADMIN_PASSWORD, new_password: admin }, 204],
  ];
  let token = first.token;
  for (const [method, url, body, want] of steps) {
    const r = await apiRequest(base, method, url, body, token);
    if (r.status !== want) throw new Error(`${method} ${url}: ${r.status} ${JSON.stringify(r.body)}`);
  }
  const again = await adminLogin(base, admin);
  if (again.token === undefined) throw new Error(`admin login: ${again.status} ${JSON.stringify(again.body)}`);
  token = again.token;
  const user = await apiRequest(
    base,
    'POST',
    '/api/v1/users',
    { username: SMB_USER, password: SMB_PASSWORD, uid: 1000, gid: 1000, must_change_password: false },
    token,
  );
  if (user.status !== 201) throw new Error(`create ${SMB_USER}: ${user.status} ${JSON.stringify(user.body)}`);
  const grant = await apiRequest(base, 'PUT', `/api/v1/shares/export/permissions/users/${SMB_USER}`, { level: 'read-write' }, token);
  if (grant.status !== 200) throw new Error(`grant /export: ${grant.status} ${JSON.stringify(grant.body)}`);
}

/** A directory of `files` random 4 KiB files (made once per run, shared by every server). */
export async function makeSmallFiles(dir: string, files: number): Promise<void> {
  await mkdir(dir);
  const buf = Buffer.allocUnsafe(SMALL_FILE_BYTES);
  for (let i = 0; i < files; i++) {
    randomFillSync(buf);
    await writeFile(path.join(dir, `s${String(i).padStart(6, '0')}.bin`), buf);
  }
}

export interface SmbBenchOptions {
  server: SmbServer;
  mode: SmbMode;
  round: number;
  workDir: string;
  srcFile: string;
  srcSha: string;
  bytes: number;
  smallDir: string;
  files: number;
  run: Runner;
  sha256File: (file: string) => Promise<string>;
  log: (msg: string) => void;
}

/** put, get (checked), small-file puts against one server. */
export async function benchSmb(o: SmbBenchOptions): Promise<SmbResult> {
  const { server, run, bytes } = o;
  const smbArgs = [
    '//127.0.0.1/export',
    '-p',
    String(server.port),
    '-U',
    `${SMB_USER}%${SMB_PASSWORD}`,
    '-m',
    o.mode.protocol,
    '--option=client min protocol=SMB2_02',
    ...(o.mode.sign ? ['--client-protection=sign'] : []),
    ...(o.mode.encrypt ? ['--client-protection=encrypt'] : []),
  ];
  const smb = (commands: string, timeoutMs: number) =>
    run('smbclient', [...smbArgs, '-c', commands], timeoutMs, server.gone).then((r) => {
      // smbclient -c goes on after a failed command and may still exit 0: an NT_STATUS_ is a failure.
      const bad = (r.stdout + r.stderr).split('\n').find((l) => /NT_STATUS_/.test(l));
      if (bad) throw new Error(`smbclient -c "${commands}": ${bad}\n${r.stderr}${r.stdout}`);
      return r;
    });
  const name = `bench-r${o.round}.bin`;
  const GiB = 1024 * MiB;
  /** Runs a workload, with the server's CPU seconds (its process tree) times `scale`, and the bytes it wrote. */
  const measured = async <T>(scale: number, fn: () => Promise<T>): Promise<[T, number | undefined, number | undefined]> => {
    const watch = server.pid === undefined ? undefined : new TreeCpuWatch(server.pid);
    let r: T;
    try {
      r = await fn();
    } catch (e) {
      watch?.stop();
      throw e;
    }
    const used = watch?.stop();
    return [r, used === undefined ? undefined : used.cpuSeconds * scale, used?.written];
  };

  // At least 2 MiB/s, else something is wrong.
  const cpTimeout = 60_000 + (bytes / MiB) * 500;
  const [put, putCpuPerGiB, putWritten] = await measured(GiB / bytes, () => smb(`put ${o.srcFile} ${name}`, cpTimeout));
  const putMiBps = bytes / MiB / put.seconds;
  o.log(
    `put ${bytes / MiB} MiB in ${put.seconds.toFixed(3)} s = ${putMiBps.toFixed(1)} MiB/s, server CPU ${putCpuPerGiB?.toFixed(2) ?? '?'} s/GiB` +
      `, server wrote ${putWritten === undefined ? '?' : (putWritten / bytes).toFixed(2)} bytes per byte put (write calls: files and sockets)`,
  );

  const back = path.join(o.workDir, `smb-readback-${server.target}.bin`);
  let get;
  let getCpuPerGiB: number | undefined;
  try {
    [get, getCpuPerGiB] = await measured(GiB / bytes, () => smb(`get ${name} ${back}`, cpTimeout));
    const got = (await stat(back)).size;
    if (got !== bytes) throw new Error(`${server.target}: smbclient got ${got} bytes back, put ${bytes}: DATA MISMATCH`);
    const sha = await o.sha256File(back);
    if (sha !== o.srcSha) throw new Error(`${server.target}: SHA-256 MISMATCH after put+get: put ${o.srcSha}, got ${sha}`);
  } finally {
    await rm(back, { force: true });
  }
  const getMiBps = bytes / MiB / get.seconds;
  o.log(
    `get ${bytes / MiB} MiB in ${get.seconds.toFixed(3)} s = ${getMiBps.toFixed(1)} MiB/s (size and sha256 ok), server CPU ${getCpuPerGiB?.toFixed(2) ?? '?'} s/GiB`,
  );
  await smb(`rm ${name}`, 120_000);

  const dir = `small-r${o.round}`;
  const [small, smallCpuPer1k] = await measured(1000 / o.files, () =>
    smb(`prompt off; mkdir ${dir}; cd ${dir}; lcd ${o.smallDir}; mput *`, 60_000 + o.files * 100),
  );
  const smallPerSec = o.files / small.seconds;
  // Outside the runner, whose output cap (64 KiB) is smaller than the listing.
  const ls = await runTool('smbclient', [...smbArgs, '-c', `cd ${dir}; ls`], { timeoutMs: 120_000 });
  if (ls.code !== 0) throw new Error(`${server.target}: smbclient ls exited ${ls.code}: ${ls.stderr}${ls.stdout.slice(-2000)}`);
  const listing = ls.stdout;
  const sized = listing.split('\n').filter((l) => new RegExp(`^\\s+s\\d{6}\\.bin\\s+A\\s+${SMALL_FILE_BYTES}\\s`).test(l)).length;
  if (sized !== o.files)
    throw new Error(`${server.target}: ${sized} of ${o.files} small files listed with ${SMALL_FILE_BYTES} bytes after mput`);
  o.log(
    `${o.files} small-file puts (one session) in ${small.seconds.toFixed(3)} s = ${smallPerSec.toFixed(0)} files/s (all listed), server CPU ${smallCpuPer1k?.toFixed(3) ?? '?'} s per 1,000`,
  );
  await smb(`deltree ${dir}`, 300_000);
  return {
    target: server.target,
    round: o.round,
    bytes,
    putSeconds: put.seconds,
    getSeconds: get.seconds,
    putMiBps,
    getMiBps,
    files: o.files,
    smallSeconds: small.seconds,
    smallPerSec,
    putCpuPerGiB,
    putWrittenPerByte: putWritten === undefined ? undefined : putWritten / bytes,
    getCpuPerGiB,
    smallCpuPer1k,
  };
}

export interface SmbSummary {
  putMiBps?: number;
  getMiBps?: number;
  smallPerSec?: number;
  putCpuPerGiB?: number;
  /** Bytes the server passed to write calls per byte put (its write amplification). */
  putWrittenPerByte?: number;
  getCpuPerGiB?: number;
  smallCpuPer1k?: number;
}

/** First target of issue 13: at least this fraction of smbd on every row. */
export const SMB_MIN_RATIO = 0.8;
