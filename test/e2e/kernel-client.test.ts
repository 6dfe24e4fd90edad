// End-to-end test with a real NFS client: the Linux kernel's NFSv3 client, in a QEMU VM (software
// emulation is enough), mounts a DittoFS export and runs test/e2e/posix-kernel.sh in it.
//
// Run: node --import tsx --test test/e2e/kernel-client.test.ts
// Needs: server built (npm run build), qemu-system-x86, linux-image-amd64, busybox-static, cpio
// (hack/install-deps.sh vm) and nfs-cat (libnfs-utils).
// Environment:
//   E2E_VERBOSE=1           stream the VM console to stderr while it runs
//   E2E_EXPORT=/export      export path to mount (default /export)
//   E2E_EXTERNAL_NFS_PORT=P use an NFS server already listening on 127.0.0.1:P instead of
//                                   starting DittoFS (E2E_EXTERNAL_MOUNT_PORT=M if MOUNT is
//                                   on another port), to check the harness against another server.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT, startDittofs, type DittofsProcess } from '../helpers/server.js';
import { checkVmPrerequisites } from '../helpers/vm.js';

const RUN_VM = path.join(REPO_ROOT, 'hack', 'vm', 'run-nfs-test.sh');
const SCRIPT = path.join(REPO_ROOT, 'test', 'e2e', 'posix-kernel.sh');
const EXPORT = process.env.E2E_EXPORT ?? '/export';
const MARKER_NAME = 'kernel-client-marker';
const MARKER_CONTENT = 'written by the Linux kernel NFS client in the DittoFS test VM\n';
const TEST_TIMEOUT_MS = 20 * 60_000;
/** The VM is killed a bit before the test times out, so its console still gets reported. */
const VM_TIMEOUT_S = 18 * 60;

/** Every check posix-kernel.sh must report as PASS; a check that silently did not run fails the test. */
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
  '3 MiB file sha256 after cache drop',
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
  // symlinks
  'symlink (ln -s)',
  'symlink is a symlink',
  'readlink of symlink',
  'read through symlink',
  'dangling symlink readlink',
  'symlink with a 401-byte target',
  'symlink to a directory',
  'removing symlinks',
  // permissions and ownership
  'chmod 0640',
  'chmod 0755',
  'chmod 0000',
  'chmod 1777 on a directory',
  'chown as root',
  'chgrp as root',
  'uid 1000 can read a root-owned 0644 file',
  'uid 1000 cannot write a root-owned 0644 file',
  'root-owned file unchanged after denied write',
  'uid 1000 creates its own file',
  'new file owned by uid/gid 1000',
  'uid 1000 writes its own file',
  'uid 1000 file content',
  'uid 1000 chmods its own file',
  'mode after uid 1000 chmod',
  'uid 1000 cannot chown its file to root',
  'owner unchanged after denied chown',
  'uid 1000 cannot chmod a root-owned file',
  'mode unchanged after denied chmod',
  'uid 1000 cannot create in a root-owned 0755 directory',
  'no file created by the denied create',
  'uid 1000 cannot read a root-owned 0600 file',
  'root reads a uid 1000 0600 file',
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
  'create 10000 files in one directory',
  'ls of the 10000-entry directory succeeds',
  'ls | wc -l of the 10000-entry directory',
  '10000 listed names match exactly',
  'find sees 10000 files',
  'rm -rf of the 10000-entry directory',
  // cp -a / diff -r / rm -rf
  'cp -a of a tree',
  'diff -r of the copy',
  'cp -a keeps types, modes, owners, sizes, mtimes',
  'cp -a keeps an old mtime',
  'copied symlink target',
  'rm -rf of the trees leaves nothing',
  // df, marker, cleanup
  'df on the mount succeeds',
  'df shows a size',
  'df available <= size',
  'marker file written',
  'work dir removed',
];

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
}

function runCommand(cmd: string, args: string[], stream: boolean): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const onData = (d: Buffer) => {
      const s = d.toString();
      output += s;
      if (stream) process.stderr.write(s);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, output }));
  });
}

function tail(text: string, lines = 80): string {
  return text.split('\n').slice(-lines).join('\n');
}

void test(
  'Linux kernel NFSv3 client in a QEMU VM passes the POSIX checks of test/e2e/posix-kernel.sh',
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const externalPort = process.env.E2E_EXTERNAL_NFS_PORT;
    checkVmPrerequisites('kernel-client e2e test', { nfsCat: true, server: externalPort === undefined });

    let server: DittofsProcess | undefined;
    let nfsPort: number;
    let mountPort: number;
    if (externalPort !== undefined) {
      nfsPort = Number(externalPort);
      mountPort = Number(process.env.E2E_EXTERNAL_MOUNT_PORT ?? externalPort);
    } else {
      server = await startDittofs();
      nfsPort = server.nfsPort;
      mountPort = server.nfsPort;
    }
    const serverOutput = () => (server ? `\n--- DittoFS output (tail) ---\n${tail(server.output(), 40)}` : '');

    try {
      const started = Date.now();
      const vm = await runCommand(
        'bash',
        [
          RUN_VM,
          '--port',
          String(nfsPort),
          '--mount-port',
          String(mountPort),
          '--export',
          EXPORT,
          '--script',
          SCRIPT,
          '--timeout',
          String(VM_TIMEOUT_S),
        ],
        process.env.E2E_VERBOSE === '1',
      );
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      const lines = vm.output.split('\n').map((l) => l.replace(/\r$/, ''));
      const context = `\n--- VM console (tail) ---\n${tail(vm.output)}${serverOutput()}`;

      const failures = lines.filter((l) => l.startsWith('FAIL:'));
      assert.deepEqual(failures, [], `checks failed in the VM (after ${seconds}s):\n${failures.join('\n')}${context}`);
      assert.equal(vm.code, 0, `hack/vm/run-nfs-test.sh exited with ${vm.code ?? vm.signal} after ${seconds}s${context}`);

      const passed = new Set(lines.filter((l) => l.startsWith('PASS: ')).map((l) => l.slice('PASS: '.length)));
      const missing = EXPECTED_PASSES.filter((p) => !passed.has(p));
      assert.deepEqual(missing, [], `checks that did not report PASS:\n${missing.join('\n')}${context}`);
      const unexpected = [...passed].filter((p) => !EXPECTED_PASSES.includes(p));
      assert.deepEqual(unexpected, [], `PASS lines not listed in EXPECTED_PASSES (update the test):\n${unexpected.join('\n')}`);

      // What the VM's kernel client wrote must be visible to another client of the server.
      const url = `nfs://127.0.0.1${EXPORT}/${MARKER_NAME}?nfsport=${nfsPort}&mountport=${mountPort}&version=3`;
      const cat = await runCommand('nfs-cat', [url], false);
      assert.equal(cat.code, 0, `nfs-cat ${url} failed:\n${cat.output}${serverOutput()}`);
      assert.equal(cat.output, MARKER_CONTENT, `marker file read from the host differs`);
    } finally {
      await server?.stop();
    }
  },
);
