// The tests that boot a Linux kernel client in QEMU (hack/vm/): their prerequisites, running the
// VM script and a host command, and the checks test/e2e/posix-kernel.sh reports on every file system.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { DITTOFS_CLI, REPO_ROOT } from './server.js';

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

export interface CommandRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** What the command wrote to stdout. */
  stdout: Buffer;
  /** stdout and stderr as text, interleaved as they came. */
  output: string;
}

/** Runs `cmd args` in the repository root to its end; `stream` also copies its output to stderr. */
export function runCommand(cmd: string, args: string[], stream = false): Promise<CommandRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    let output = '';
    const onData = (d: Buffer) => {
      output += d.toString();
      if (stream) process.stderr.write(d);
    };
    child.stdout.on('data', (d: Buffer) => {
      stdout.push(d);
      onData(d);
    });
    child.stderr.on('data', onData);
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(stdout), output }));
  });
}

/** The last `lines` lines of `text`. */
export function tail(text: string, lines = 80): string {
  return text.split('\n').slice(-lines).join('\n');
}

export interface VmRun {
  /** The VM console, a line an entry. */
  lines: string[];
  /** The console's tail and `serverOutput()`, to append to a failure message. */
  context: string;
}

/**
 * Runs `bash script args` (a hack/vm/ runner; E2E_VERBOSE=1 streams its console) and asserts that
 * no check in the VM reported FAIL and that the runner exited 0.
 */
export async function runVm(script: string, args: string[], serverOutput: () => string): Promise<VmRun> {
  const started = Date.now();
  const vm = await runCommand('bash', [script, ...args], process.env.E2E_VERBOSE === '1');
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  const lines = vm.output.split('\n').map((l) => l.replace(/\r$/, ''));
  const context = `\n--- VM console (tail) ---\n${tail(vm.output)}${serverOutput()}`;
  const failures = lines.filter((l) => l.startsWith('FAIL:'));
  assert.deepEqual(failures, [], `checks failed in the VM (after ${seconds}s):\n${failures.join('\n')}${context}`);
  const runner = script.slice(script.lastIndexOf('hack/'));
  assert.equal(vm.code, 0, `${runner} exited with ${vm.code ?? vm.signal} after ${seconds}s${context}`);
  return { lines, context };
}

/** Asserts that the PASS lines among `lines` are exactly `expected` (`label` names the run). */
export function assertPasses(lines: string[], expected: string[], context: string, label = ''): void {
  const passed = new Set(lines.filter((l) => l.startsWith('PASS: ')).map((l) => l.slice('PASS: '.length)));
  const missing = expected.filter((p) => !passed.has(p));
  assert.deepEqual(missing, [], `${label}checks that did not report PASS:\n${missing.join('\n')}${context}`);
  const unexpected = [...passed].filter((p) => !expected.includes(p));
  assert.deepEqual(unexpected, [], `${label}PASS lines not listed in EXPECTED_PASSES (update the test):\n${unexpected.join('\n')}`);
}

/** The checks test/e2e/posix-kernel.sh runs, and must report as PASS, on NFS and on cifs alike. */
export const POSIX_KERNEL_CHECKS = {
  directories: [
    'mkdir -p a/b/c/d/e/f',
    'deep directory exists',
    'deep tree visible after cache drop',
    'mkdir of an existing directory fails',
    'rmdir of a non-empty directory fails',
    'rmdir of an empty directory',
    'removed directory is gone',
  ],
  /** `bigMiB`: the size of the large file the script writes (DITTOFS_FS picks it). */
  regularFiles: (bigMiB: number) => [
    'create file and read back',
    'append to file',
    'overwrite file (O_TRUNC) with shorter content',
    'size after overwrite',
    `${bigMiB} MiB file sha256 after cache drop`,
    'unaligned overwrite in the middle of a file',
    'append to a large file',
    'exclusive create (O_EXCL) of a new file',
    'exclusive create (O_EXCL) of an existing file fails',
    'empty file has size 0',
    'unlink removes files',
  ],
  rename: [
    'rename over an existing file',
    'renamed source name is gone',
    'rename target has the new content',
    'rename a directory',
    'renamed directory keeps its contents',
    'rename across directories',
    'file moved across directories',
  ],
  hardLinks: [
    'hard link (ln)',
    'link count 2 after ln',
    'hard links share the inode number',
    'write through one link is seen through the other',
    'link count 1 after removing one link',
    'remaining link keeps the data',
  ],
  truncate: [
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
  ],
  manyEntries: [
    'create 10000 files in one directory',
    'ls of the 10000-entry directory succeeds',
    'ls | wc -l of the 10000-entry directory',
    '10000 listed names match exactly',
    'find sees 10000 files',
    'rm -rf of the 10000-entry directory',
  ],
  copyTree: [
    'cp -a of a tree',
    'diff -r of the copy',
    'cp -a keeps types, modes, owners, sizes, mtimes',
    'cp -a keeps an old mtime',
    'rm -rf of the trees leaves nothing',
  ],
  /** df, the marker file for the host, cleanup. */
  finish: ['df on the mount succeeds', 'df shows a size', 'df available <= size', 'marker file written', 'work dir removed'],
};
