// End-to-end test with a real SMB2 client: the Linux kernel's cifs client, in the QEMU VM of
// hack/vm/ (software emulation is enough), logs in as a non-root control-plane user, mounts the
// DittoFS share at vers=2.0 (SMB 2.0.2) and then at vers=2.1 in the same boot, and runs
// test/e2e/posix-kernel.sh at each dialect with what SMB semantics allow (DITTOFS_FS=cifs: no
// symlinks, owners or POSIX modes without unix extensions; chmod is the DOS read-only attribute).
// From the host, the files the VM wrote read back identical through NFS (libnfs nfs-cat) and are
// owned there by the SMB user's uid.
//
// Run: node --import tsx --test test/e2e/kernel-cifs.test.ts
// Needs: server built (npm run build), qemu-system-x86, linux-image-amd64, busybox-static, cpio
// (hack/install-deps.sh vm) and nfs-cat / nfs-ls (libnfs-utils).
// Environment:
//   E2E_VERBOSE=1           stream the VM console to stderr while it runs
//   E2E_CIFS_DIALECTS=2.1   the dialects to run (comma-separated; default 2.0,2.1)
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { adminLogin, apiRequest } from '../helpers/api.js';
import { REPO_ROOT, startDittofs, TEST_ADMIN_PASSWORD, waitForPort, type DittofsProcess } from '../helpers/server.js';
import { checkVmPrerequisites } from '../helpers/vm.js';

const RUN_VM = path.join(REPO_ROOT, 'hack', 'vm', 'run-vm-test.sh');
const SCRIPT = path.join(REPO_ROOT, 'test', 'e2e', 'posix-kernel.sh');
const DIALECTS = (process.env.E2E_CIFS_DIALECTS ?? '2.0,2.1').split(',');
const SHARE = 'export';
/** A control-plane user that is not root: the server checks permissions as this uid. */
const USER = 'cifsuser';
const PASSWORD = 'cifs-user-Passw0rd';
const UID = 1000;
/**
 * The whole test stays under 8 minutes: the VM run took 281 s here (2 cores shared with other
 * work), most of it creating (75 s) and removing (125 s) the 10,000 files. The VM is killed a bit
 * before the test times out, so its console still gets reported.
 */
const TEST_TIMEOUT_MS = 8 * 60_000;
const VM_TIMEOUT_S = 7 * 60;

/**
 * Every check posix-kernel.sh must report as PASS at each dialect (DITTOFS_FS=cifs), but for the
 * two the dialects share: the first run creates the 10,000-entry directory, the last removes it.
 */
const CREATE_MANY = 'create 10000 files in one directory';
const REMOVE_MANY = 'rm -rf of the 10000-entry directory';
const EXPECTED_PASSES = [
  // directories
  'mkdir -p a/b/c/d/e/f',
  'deep directory exists',
  'deep tree visible after cache drop',
  'mkdir of an existing directory fails',
  'rmdir of a non-empty directory fails',
  'rmdir of an empty directory',
  'removed directory is gone',
  // regular files
  'create file and read back',
  'append to file',
  'overwrite file (O_TRUNC) with shorter content',
  'size after overwrite',
  '32 MiB file sha256 after cache drop',
  'unaligned overwrite in the middle of a file',
  'append to a large file',
  'exclusive create (O_EXCL) of a new file',
  'exclusive create (O_EXCL) of an existing file fails',
  'empty file has size 0',
  'unlink removes files',
  // rename
  'rename over an existing file',
  'renamed source name is gone',
  'rename target has the new content',
  'rename a directory',
  'renamed directory keeps its contents',
  'rename across directories',
  'file moved across directories',
  // hard links
  'hard link (ln)',
  'link count 2 after ln',
  'hard links share the inode number',
  'write through one link is seen through the other',
  'link count 1 after removing one link',
  'remaining link keeps the data',
  // chmod as the DOS read-only attribute
  'chmod a-w sets the read-only attribute',
  'read-only file shows no write bits after cache drop',
  'read-only file refuses a write',
  'read-only file unchanged after the refused write',
  'chmod u+w clears the read-only attribute',
  'writable again after cache drop',
  'write after clearing read-only',
  // UTF-16 names
  'non-ASCII names listed exactly',
  'a name with a UTF-16 surrogate pair reads back',
  // truncate
  'truncate -s 10000 (extend)',
  'size after extend',
  'extended file: old data then zeros',
  'extended region reads as zeros',
  'truncate -s 50 (shrink)',
  'size after shrink',
  'shrunk file is the prefix',
  'truncate to 0',
  'truncate -s 5G (sparse, 64-bit size)',
  'size of 5 GiB file',
  'data at a 64-bit offset',
  'hole before a 64-bit offset reads as zeros',
  // 10,000-entry directory
  CREATE_MANY,
  'ls of the 10000-entry directory succeeds',
  'ls | wc -l of the 10000-entry directory',
  '10000 listed names match exactly',
  'find sees 10000 files',
  REMOVE_MANY,
  // cp -a / diff -r / rm -rf
  'cp -a of a tree',
  'diff -r of the copy',
  'cp -a keeps types, modes, owners, sizes, mtimes',
  'cp -a keeps an old mtime',
  'copied file keeps the read-only attribute',
  'rm -rf of the trees leaves nothing',
  // df, files for the host, cleanup
  'df on the mount succeeds',
  'df shows a size',
  'df available <= size',
  'marker file written',
  'data file for the host written',
  'work dir removed',
];

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: Buffer;
}

function runCommand(cmd: string, args: string[], stream: boolean): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => {
      chunks.push(d);
      if (stream) process.stderr.write(d);
    });
    const errs: Buffer[] = [];
    child.stderr.on('data', (d: Buffer) => {
      errs.push(d);
      if (stream) process.stderr.write(d);
    });
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, output: Buffer.concat([...chunks, ...errs]) }));
  });
}

function tail(text: string, lines = 80): string {
  return text.split('\n').slice(-lines).join('\n');
}

/** The console lines of one dialect's run: from its mount to the script's status line. */
function dialectLines(lines: string[], dialect: string): string[] {
  const start = lines.findIndex((l) => l.startsWith(`dittofs-vm: mounted (vers=${dialect})`));
  if (start === -1) return [];
  const end = lines.findIndex((l, i) => i > start && l.startsWith(`dittofs-vm: cifs vers=${dialect} script status`));
  return lines.slice(start, end === -1 ? lines.length : end + 1);
}

async function addSmbUser(server: DittofsProcess): Promise<void> {
  const base = `http://127.0.0.1:${server.apiPort}`;
  const first = await adminLogin(base, TEST_ADMIN_PASSWORD);
  assert.equal(first.status, 200, JSON.stringify(first.body));
  // The initial admin password must be changed before the admin may do anything else.
  const newAdmin = 'admin-Passw0rd-changed';
  const changed = await apiRequest(
    base,
    'POST',
    '/api/v1/users/me/password',
    { current_password: TEST_ADMIN_PASSWORD, new_password: newAdmin },
    first.token,
  );
  assert.equal(changed.status, 204, JSON.stringify(changed.body));
  const admin = await adminLogin(base, newAdmin);
  assert.equal(admin.status, 200, JSON.stringify(admin.body));
  const created = await apiRequest(
    base,
    'POST',
    '/api/v1/users',
    { username: USER, password: PASSWORD, uid: UID, gid: UID, must_change_password: false },
    admin.token,
  );
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const granted = await apiRequest(base, 'PUT', `/api/v1/shares/${SHARE}/permissions/users/${USER}`, { level: 'read-write' }, admin.token);
  assert.equal(granted.status, 200, JSON.stringify(granted.body));
}

void test(
  `Linux kernel cifs client in a QEMU VM passes the POSIX checks of test/e2e/posix-kernel.sh at vers=${DIALECTS.join(' and ')}`,
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    checkVmPrerequisites('kernel-cifs e2e test', { nfsCat: true, server: true });
    const server = await startDittofs();
    const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-cifs-'));
    const serverOutput = () => `\n--- DittoFS output (tail) ---\n${tail(server.output(), 40)}`;
    try {
      await waitForPort(server.smbPort);
      await addSmbUser(server);
      const credentials = path.join(dir, 'credentials');
      await writeFile(credentials, `username=${USER}\npassword=${PASSWORD}\n`, { mode: 0o600 });

      const started = Date.now();
      const vm = await runCommand(
        'bash',
        [
          RUN_VM,
          '--fs',
          'cifs',
          '--port',
          String(server.smbPort),
          '--export',
          `/${SHARE}`,
          '--dialects',
          DIALECTS.join(','),
          '--credentials',
          credentials,
          '--script',
          SCRIPT,
          '--timeout',
          String(VM_TIMEOUT_S),
        ],
        process.env.E2E_VERBOSE === '1',
      );
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      const text = vm.output.toString();
      const lines = text.split('\n').map((l) => l.replace(/\r$/, ''));
      const context = `\n--- VM console (tail) ---\n${tail(text)}${serverOutput()}`;

      const failures = lines.filter((l) => l.startsWith('FAIL:'));
      assert.deepEqual(failures, [], `checks failed in the VM (after ${seconds}s):\n${failures.join('\n')}${context}`);
      assert.equal(vm.code, 0, `hack/vm/run-vm-test.sh exited with ${vm.code ?? vm.signal} after ${seconds}s${context}`);

      const nfsUrl = (name: string) => `nfs://127.0.0.1/${SHARE}/${name}?nfsport=${server.nfsPort}&mountport=${server.nfsPort}&version=3`;
      const listing = await runCommand('nfs-ls', [nfsUrl('')], false);
      assert.equal(listing.code, 0, `nfs-ls failed:\n${listing.output.toString()}${serverOutput()}`);

      for (const [i, dialect] of DIALECTS.entries()) {
        const own = dialectLines(lines, dialect);
        assert.ok(own.length > 0, `no run at vers=${dialect} in the console${context}`);
        const expected = EXPECTED_PASSES.filter((p) => (p !== CREATE_MANY || i === 0) && (p !== REMOVE_MANY || i === DIALECTS.length - 1));
        const passed = new Set(own.filter((l) => l.startsWith('PASS: ')).map((l) => l.slice('PASS: '.length)));
        const missing = expected.filter((p) => !passed.has(p));
        assert.deepEqual(missing, [], `vers=${dialect}: checks that did not report PASS:\n${missing.join('\n')}${context}`);
        const unexpected = [...passed].filter((p) => !expected.includes(p));
        assert.deepEqual(unexpected, [], `vers=${dialect}: PASS lines not in EXPECTED_PASSES (update the test):\n${unexpected.join('\n')}`);

        // What the kernel's SMB client wrote reads back identical through the other protocol.
        const marker = `kernel-cifs-marker-${dialect}`;
        const cat = await runCommand('nfs-cat', [nfsUrl(marker)], false);
        assert.equal(cat.code, 0, `nfs-cat ${marker} failed:\n${cat.output.toString()}${serverOutput()}`);
        assert.equal(cat.output.toString(), `written by the Linux kernel cifs client (vers=${dialect}) in the DittoFS test VM\n`);
        const data = `kernel-cifs-data-${dialect}`;
        const want = own.map((l) => /^DATA-SHA256 (\S+) ([0-9a-f]{64})$/.exec(l)).find((m) => m?.[1] === data)?.[2];
        assert.ok(want, `vers=${dialect}: no DATA-SHA256 line for ${data}${context}`);
        const got = await runCommand('nfs-cat', [nfsUrl(data)], false);
        assert.equal(got.code, 0, `nfs-cat ${data} failed${serverOutput()}`);
        assert.equal(got.output.length, 1048583, `${data} read through NFS has the wrong size`);
        assert.equal(createHash('sha256').update(got.output).digest('hex'), want, `${data} read through NFS differs`);
        // ... and is owned on the server by the SMB session's user, not by the VM's root.
        const entry = listing.output
          .toString()
          .split('\n')
          .find((l) => l.trim().endsWith(` ${data}`));
        assert.ok(entry, `${data} not in the NFS listing:\n${listing.output.toString()}`);
        assert.match(entry, new RegExp(`^\\S+\\s+\\d+\\s+${UID}\\s+${UID}\\s`), `${data} is not owned by uid/gid ${UID}: ${entry}`);
      }
    } finally {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    }
  },
);
