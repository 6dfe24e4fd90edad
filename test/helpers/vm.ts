// Prerequisites of the tests that boot the Linux kernel NFS client in QEMU (hack/vm/).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { DITTOFS_CLI } from './server.js';

/**
 * Throws, naming every missing piece and how to install it, unless the VM harness can run (a VM
 * test never skips silently). `nfsCat`: the test also reads through libnfs; `server`: it starts
 * the built server itself.
 */
export function checkVmPrerequisites(test: string, needs: { nfsCat: boolean; server: boolean }): void {
  const problems: string[] = [];
  const onPath = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
  if (!onPath('qemu-system-x86_64')) problems.push('qemu-system-x86_64 not found (Debian package qemu-system-x86)');
  let kernels: string[] = [];
  try {
    kernels = readdirSync('/boot').filter((f) => f.startsWith('vmlinuz-'));
  } catch {
    // reported below
  }
  if (kernels.length === 0) problems.push('no kernel /boot/vmlinuz-* (Debian package linux-image-amd64)');
  if (!existsSync('/bin/busybox')) problems.push('/bin/busybox not found (Debian package busybox-static)');
  if (!onPath('cpio')) problems.push('cpio not found');
  if (needs.nfsCat && !onPath('nfs-cat')) problems.push('nfs-cat not found (Debian package libnfs-utils)');
  if (needs.server && !existsSync(DITTOFS_CLI)) problems.push(`${DITTOFS_CLI} not found (build the server: npm run build)`);
  if (problems.length > 0) {
    throw new Error(`${test} cannot run:\n  - ${problems.join('\n  - ')}\nInstall with: hack/install-deps.sh vm`);
  }
}
