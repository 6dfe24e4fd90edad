// smbtorture (Debian samba-testsuite 4.17) against the SMB2 engine, as a non-root control-plane
// user, once plain and once with `client signing=required`: every subtest of every suite in GATE
// must pass, at dialect 2.1; and again at 3.1.1, signed, and at 3.1.1 encrypted (`client smb
// encrypt=required`: every message an AES-128-GCM transform) (smb3Entry). GATE is the part of issue 13's list that passes today; hack/smb/suites.sh holds the
// whole list and hack/smb/torture.sh runs it against DittoFS and Samba's smbd side by side.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { addShareUser, apiRequest, takeOverAdmin } from '../helpers/api.js';
import { Semaphore } from '../helpers/limits.js';
import { runTool } from '../helpers/run.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';

/**
 * The gate: smbtorture suites (or single tests) from issue 13's list that pass against DittoFS
 * today, plain and signed. Grow it toward the issue's full list (hack/smb/suites.sh: "required"
 * and "smbd-fails"); an entry is in only when all its subtests pass. `SUITE!GLOB,GLOB` runs a suite
 * minus the subtests whose name matches a glob (the exclusions the issue itself makes).
 * `ENTRY@plain` runs only without signing; `ENTRY@smb3` only at 3.1.1, signed and encrypted (smb3Entry).
 * hack/smb/torture.sh --list gate reads this array (and
 * runs every entry in the modes it is asked for): keep one quoted entry per line.
 */
const GATE = [
  // Longest first (JOBS at once: the last to start sets the tail). Seconds per run are from a
  // gate run here at load ~10.
  // ~150 s per run. The v2_* tests, break_twice and dynamic_share skip below SMB 3.
  'smb2.lease!break_twice,v2_*,dynamic_share',
  // ~110 s per run. batch22b fails against smbd too (smbd fails stream1 here, DittoFS passes it).
  'smb2.oplock!batch22b',
  // `@plain`: run without signing only. These suites make thousands of files (creation is ~15x
  // slower than smbd's), and what they test (the open table's cap, directory enumeration across
  // many QUERY_DIRECTORY calls) does not depend on signing, which every other entry checks on
  // the same commands (CREATE, QUERY_DIRECTORY, CLOSE, compounds) in its signed run. Slowest first.
  'smb2.maxfid@plain', // 16,384 opens until INSUFFICIENT_RESOURCES: ~140 s
  'smb2.compound_find@plain', // compound_find_close creates 5,000 files: ~80 s
  'smb2.dir.large-files@plain', // ~50 s
  'smb2.dir.many@plain', // ~25 s
  'smb2.dir.sorted', // the slowest entry run in both modes (20-60 s): first of them, so it starts early
  'smb2.connect',
  'smb2.read!bug14607', // bug14607 needs an FSCTL only Samba's test build answers: smbd skips it too
  'smb2.credits',
  'smb2.fileid',
  'smb2.tcon',
  'smb2.mkdir',
  'smb2.session-id',
  'smb2.openattr',
  'smb2.winattr',
  'smb2.sharemode',
  'smb2.deny',
  'smb2.compound_async',
  'smb2.rw.rw1',
  'smb2.rw.rw2',
  'smb2.create.brlocked',
  'smb2.create.multi',
  'smb2.create.delete',
  'smb2.create.leading-slash',
  'smb2.create.impersonation',
  'smb2.create.mkdir-dup',
  'smb2.create.dir-alloc-size',
  'smb2.create.dosattr_tmp_dir',
  'smb2.create.open', // smbd fails it here (ChangeTime); DittoFS must pass
  'smb2.dir.find',
  'smb2.dir.fixed',
  'smb2.dir.one', // smbd fails it here (ChangeTime); DittoFS must pass
  'smb2.dir.modify', // smbd fails it here (ChangeTime); needs names compared without case
  'smb2.getinfo.fsinfo',
  'smb2.getinfo.qfile_buffercheck',
  'smb2.getinfo.granted',
  // ~30 s of the test's own sleeps (delayed write time). delayed-write-vs-setbasic once failed one
  // CI run in three: the server's clock stood still for part of every millisecond (nowTimespec),
  // so a WRITE 200 us after the CREATE could share its 100 ns write time.
  'smb2.timestamps',
  'smb2.compound.related3',
  'smb2.compound.related4', // smbd fails it here (run as root); DittoFS must pass
  'smb2.compound.related5',
  'smb2.compound.related6',
  'smb2.compound.related7', // smbd fails it here (run as root); DittoFS must pass
  'smb2.compound.related8',
  'smb2.compound.related9',
  'smb2.compound.unrelated1',
  'smb2.compound.invalid1',
  'smb2.compound.invalid3',
  'smb2.compound.invalid4',
  'smb2.compound.compound-padding',
  'smb2.compound.create-write-close',
  // replay_* is the exclusion; rw-none (a W2K8 quirk) and ctdb-delrec-deadlock (needs a
  // ctdb cluster) skip themselves, against smbd too.
  'smb2.lock!replay_*,rw-none,ctdb-delrec-deadlock',
  'smb2.session.reconnect1',
  'smb2.session.reconnect2',
  'smb2.session.reauth1',
  'smb2.session.reauth2',
  'smb2.session.reauth3',
  'smb2.session.reauth4', // smbd fails it here (run as root); DittoFS must pass
  'smb2.session.reauth6',
  'smb2.session.two_logoff',
  'smb2.session.ntlmssp_bug14932',
  'smb2.rename!simple_nodelete,no_share_delete_no_delete_access',
  // OVERWRITE_IF/CREATE_IF Existing: a directory DACL without DELETE, inherited by the file and
  // enforced (stored NT ACLs, smb2/acl.ts).
  'smb2.delete-on-close-perms',
  'smb2.getinfo.complex', // smbd fails it here; extended attributes (smb2/ea.ts)
  'smb2.setinfo', // smbd fails it here; the allocation size kept, a DACL with an arbitrary SID kept
  // From the reported smb2.notify list: a directory deleted while watched answers DELETE_PENDING.
  'smb2.notify.rmdir1',
  'smb2.notify.rmdir2',
  'smb2.notify.rmdir3',
  'smb2.notify.rmdir4',
  // smbd fails reopen2-lease-v2 here too (a v2 lease at 2.1); alloc-size (smbd fails it: rounding)
  // passes with the allocation size kept (smb2/allocation.ts).
  'smb2.durable-open!reopen2-lease-v2',
  // rename and rename2 (renaming a stream) fail against smbd here too (SHARING_VIOLATION).
  'smb2.streams!rename,rename2',
  // bug14769 fails against smbd too; the others skip on both (compression, duplicate extents and
  // interface info are not offered; bug14607 needs Samba's test build) but compress_notsup_*, left
  // out with them; "copy-chunk streams" passes, but its name has a space (see
  // delete-on-close-perms). The sparse_* tests run (FILE_SUPPORTS_SPARSE_FILES) but
  // sparse_compressed (skips: no compression) and sparse_qar_truncated, which wants two ranges for
  // writes 1 MiB apart: a 4 MiB block holds both, reported apart only until it is stored.
  'smb2.ioctl!bug14*,VALIDATE*,*INTERFACE,*interface*,sparse_compressed,sparse_qar_truncated,trim_*,dup_*,compress_*,copy-chunk*',
  // `@smb3`: durable handles v2 exist at 3.x only; run at 3.1.1 alone. app-instance (an
  // AppInstanceId closing the older open: not served) fails against smbd too.
  'smb2.durable-v2-open!app-instance@smb3',
  'smb2.durable-v2-delay@smb3',
  // Each forces one cipher (AES-128/256, CCM/GCM) with encryption required, and needs AES-GMAC
  // signing: 3.1.1 only.
  'smb2.session.encryption-aes-128-ccm@smb3',
  'smb2.session.encryption-aes-128-gcm@smb3',
  'smb2.session.encryption-aes-256-ccm@smb3',
  'smb2.session.encryption-aes-256-gcm@smb3',
];

/**
 * The gate again at dialect 3.1.1 (client max protocol SMB3_11), signed, then encrypted (the same
 * requests, each sealed under the session's key instead of signed). At 3.1.1 a signature
 * is AES-128-GMAC (smbtorture offers it first) under a key derived from the session key (with the SHA-512 hash of the
 * NEGOTIATE and SESSION_SETUP messages as context), checked on every request of a signed run;
 * without signing, the paths are 2.1's. (3.0 and 3.0.2, with their VALIDATE_NEGOTIATE_INFO, are
 * run by smbclient.test.ts and kernel-cifs.test.ts.) At 3.x smb2.lease runs its version 2 tests
 * too (epochs, parent keys), but for v2_request and v2_request_parent (they skip: directory
 * leasing is not offered) and dynamic_share (a Samba-only share); smb2.durable-open runs whole
 * (reopen2-lease-v2 asks for a v2 lease, which exists at 3.x only). Left out: the `@plain`
 * entries, whose cost is the files they make, not the dialect. `@smb3` entries run only here.
 */
function smb3Entry(entry: string): string | null {
  if (entry.endsWith('@smb3')) return entry.slice(0, -'@smb3'.length);
  if (entry.endsWith('@plain')) return null;
  if (entry.startsWith('smb2.lease!')) return 'smb2.lease!v2_request,v2_request_parent,dynamic_share';
  if (entry.startsWith('smb2.durable-open!')) return 'smb2.durable-open';
  return entry;
}
const SMB3_MAX_PROTOCOL = 'SMB3_11';
/**
 * Entries left out of the encrypted run: they switch the client to a session id that does not
 * exist and go on, which an encrypted request cannot survive (its key is that session's: the
 * server cannot open it and drops the connection, MS-SMB2 3.3.5.2.1.1). smbd fails them the same
 * way (hack/smb/torture.sh --max-protocol SMB3_11 --encrypt).
 */
const NOT_ENCRYPTED: ReadonlySet<string> = new Set(['smb2.tcon', 'smb2.session-id']);

const USER = 'tortureuser';
const PASSWORD = 'Torture-user-Passw0rd';
/** A non-root uid and gid. */
const UID = 1000;
/** smbtorture runs at once (each in a share of its own, so their files never meet). */
const JOBS = 3;
/** One smbtorture run: a hang is killed and fails its test. */
const RUN_TIMEOUT_MS = 240_000;
/** The same for an `@plain` entry (thousands of files: maxfid took 233 s here at load ~25). */
const SLOW_RUN_TIMEOUT_MS = 480_000;
const MODES = ['plain', 'signed'] as const;
type Mode = (typeof MODES)[number] | 'encrypted';

interface Outcome {
  passed: string[];
  /** failure:, error:, uxsuccess: and skip: lines, and tests started but never finished. */
  notPassed: string[];
}

/** Reads smbtorture's subunit-style output: `test: X`, then `success: X` or `failure: X [...]` etc. */
function parseTorture(out: string): Outcome {
  const started = new Set<string>();
  const passed: string[] = [];
  const notPassed: string[] = [];
  for (const line of out.split('\n')) {
    const m = /^(test|success|xfail|failure|error|uxsuccess|skip): (.*?)(?: \[.*)?$/.exec(line);
    if (!m) continue;
    const [, kind, name] = m as unknown as [string, string, string];
    if (kind === 'test') {
      started.add(name);
      continue;
    }
    started.delete(name);
    if (kind === 'success') passed.push(name);
    else notPassed.push(`${name} (${kind})`);
  }
  for (const name of started) notPassed.push(`${name} (unfinished)`);
  return { passed, notPassed };
}

/** The test names of a GATE entry: `SUITE!GLOB,...` expanded with smbtorture --list. */
async function expand(entry: string): Promise<string[]> {
  const bang = entry.indexOf('!');
  if (bang < 0) return [entry];
  const suite = entry.slice(0, bang);
  const globs = entry
    .slice(bang + 1)
    .split(',')
    .map((g) => new RegExp(`^${g.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`));
  const r = await runTool('smbtorture', ['//127.0.0.1/x', '--list', suite]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const names = r.stdout
    .split('\n')
    .filter((l) => l.startsWith(`${suite}.`))
    // --list prints suite.test.test for a simple test (case name = test name).
    .map((l) => l.replace(/\.([^.]+)\.\1$/, '.$1'))
    .filter((n) => !globs.some((g) => g.test(n.slice(n.lastIndexOf('.') + 1))));
  assert.ok(names.length > 0, `${entry} names no test`);
  return names;
}

describe('smbtorture against the SMB2 engine', { timeout: 1_500_000 }, () => {
  let dir: string;
  let srv: DittofsProcess;
  const shares = Array.from({ length: JOBS }, (_, i) => (i === 0 ? 'export' : `torture${i + 1}`));
  const free = [...shares];
  const slots = new Semaphore(JOBS);

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-smbtorture-'));
    // A private client config: nothing under /etc/samba or /var/lib/samba is read or written.
    for (const d of ['private', 'lock', 'state', 'cache']) await mkdir(path.join(dir, d));
    await writeFile(
      path.join(dir, 'client.conf'),
      `[global]\n  workgroup = WORKGROUP\n  private dir = ${dir}/private\n  lock directory = ${dir}/lock\n` +
        `  state directory = ${dir}/state\n  cache directory = ${dir}/cache\n  client min protocol = SMB2_02\n` +
        `  client max protocol = SMB2_10\n  name resolve order = host\n`,
    );
    srv = await startDittofs();
    const base = `http://127.0.0.1:${srv.apiPort}`;
    const token = await takeOverAdmin(base);
    await addShareUser(base, token, { username: USER, password: PASSWORD, uid: UID, gid: UID });
    for (const share of shares.filter((s) => s !== 'export')) {
      const r = await apiRequest(
        base,
        'POST',
        '/api/v1/shares',
        { name: `/${share}`, metadata_store: 'default', block_store: 'default' },
        token,
      );
      assert.equal(r.status, 201, JSON.stringify(r.body));
      const g = await apiRequest(base, 'PUT', `/api/v1/shares/${share}/permissions/users/${USER}`, { level: 'read-write' }, token);
      assert.equal(g.status, 200, JSON.stringify(g.body));
    }
  });

  after(async () => {
    await srv?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Runs one GATE entry in a free share; resolves with smbtorture's exit code and output. */
  async function torture(
    entry: string,
    mode: Mode,
    timeoutMs: number,
    maxProtocol?: string,
  ): Promise<{ code: number | null; out: string }> {
    const tests = await expand(entry);
    return slots.run(async () => {
      const share = free.pop()!;
      try {
        const r = await runTool(
          'smbtorture',
          [
            `//127.0.0.1/${share}`,
            '-p',
            String(srv.smbPort),
            '-U',
            `${USER}%${PASSWORD}`,
            '-s',
            path.join(dir, 'client.conf'),
            '--fullname',
            // smbtorture makes its scratch directory (smbtortureXXXXXX) there, and leaves it
            // behind when a run is killed: never in the caller's working directory.
            `--basedir=${dir}`,
            '--option=torture:sharedelay=100000',
            '--option=torture:writetimeupdatedelay=500000',
            ...(mode === 'signed' ? ['--option=client signing=required'] : []),
            ...(mode === 'encrypted' ? ['--option=client smb encrypt=required'] : []),
            ...(maxProtocol ? [`--option=client max protocol=${maxProtocol}`] : []),
            ...tests,
          ],
          { timeoutMs },
        );
        const killed = r.signal ? `\n(killed by ${r.signal} after ${timeoutMs} ms)` : '';
        return { code: r.code, out: r.stdout + r.stderr + killed };
      } finally {
        free.push(share);
      }
    });
  }

  // Every (entry, mode) is its own test, JOBS of them at once.
  describe('suites', { concurrency: JOBS }, () => {
    // Entry by entry (its modes at 2.1, then 3.1.1, back to back), so the slow entries at the top start first.
    const runs = GATE.flatMap((spec) => {
      const at21 = spec.endsWith('@smb3')
        ? []
        : (spec.endsWith('@plain') ? (['plain'] as const) : MODES).map((mode) => ({ spec, mode, smb3: false }));
      const at3 = smb3Entry(spec);
      if (at3 === null) return at21;
      const modes = NOT_ENCRYPTED.has(at3) ? (['signed'] as const) : (['signed', 'encrypted'] as const);
      return [...at21, ...modes.map((mode) => ({ spec: at3, mode, smb3: true }))];
    });
    for (const { spec, mode, smb3 } of runs) {
      const entry = spec.replace(/@plain$/, '');
      const label = `${entry} ${mode}${smb3 ? ' 3.1.1' : ''}`;
      it(`${entry} (${mode}${smb3 ? ', 3.1.1' : ''})`, async () => {
        const timeout = spec.endsWith('@plain') ? SLOW_RUN_TIMEOUT_MS : RUN_TIMEOUT_MS;
        const { code, out } = await torture(entry, mode, timeout, smb3 ? SMB3_MAX_PROTOCOL : undefined);
        const { passed, notPassed } = parseTorture(out);
        const tail = out.length > 6000 ? `...${out.slice(-6000)}` : out;
        assert.deepEqual(notPassed, [], `${label}: subtests that did not pass\n${tail}`);
        assert.ok(passed.length > 0, `${label}: no subtest ran\n${tail}`);
        assert.equal(code, 0, `${label}: smbtorture exited ${code}\n${tail}`);
      });
    }
  });
});
