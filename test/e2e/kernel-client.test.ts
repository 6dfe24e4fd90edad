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
import path from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT, startDittofs, type DittofsProcess } from '../helpers/server.js';
import { assertPasses, checkVmPrerequisites, POSIX_KERNEL_CHECKS, runCommand, runVm, tail } from '../helpers/vm.js';

const RUN_VM = path.join(REPO_ROOT, 'hack', 'vm', 'run-nfs-test.sh');
const SCRIPT = path.join(REPO_ROOT, 'test', 'e2e', 'posix-kernel.sh');
const EXPORT = process.env.E2E_EXPORT ?? '/export';
const MARKER_NAME = 'kernel-client-marker';
const MARKER_CONTENT = 'written by the Linux kernel NFS client in the DittoFS test VM\n';
const TEST_TIMEOUT_MS = 20 * 60_000;
/** The VM is killed a bit before the test times out, so its console still gets reported. */
const VM_TIMEOUT_S = 18 * 60;

const C = POSIX_KERNEL_CHECKS;
/** Every check posix-kernel.sh must report as PASS; a check that silently did not run fails the test. */
const EXPECTED_PASSES = [
  ...C.directories,
  ...C.regularFiles(3),
  ...C.rename,
  ...C.hardLinks,
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
  ...C.truncate,
  ...C.manyEntries,
  ...C.copyTree,
  'copied symlink target',
  ...C.finish,
];

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
      const { lines, context } = await runVm(
        RUN_VM,
        [
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
        serverOutput,
      );
      assertPasses(lines, EXPECTED_PASSES, context);

      // What the VM's kernel client wrote must be visible to another client of the server.
      const url = `nfs://127.0.0.1${EXPORT}/${MARKER_NAME}?nfsport=${nfsPort}&mountport=${mountPort}&version=3`;
      const cat = await runCommand('nfs-cat', [url]);
      assert.equal(cat.code, 0, `nfs-cat ${url} failed:\n${cat.output}${serverOutput()}`);
      assert.equal(cat.stdout.toString(), MARKER_CONTENT, `marker file read from the host differs`);
    } finally {
      await server?.stop();
    }
  },
);
