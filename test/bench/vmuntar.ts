// The untar row (--vm-untar N): the Linux kernel NFSv3 client in the QEMU VM of hack/vm mounts the
// export and runs busybox `tar -x` of an N-file tree into it, the same tree and the same VM for
// every server. The tree is made inside the VM first (N small files, 100 to a directory, in its
// tmpfs; untimed) and archived there; only the extraction onto the mount is timed, from inside
// the guest (/proc/uptime, 10 ms resolution), so the VM's boot and the tree's making are left out.
// The VM runs under software emulation (TCG) where the CPU has no virtualization: a guest's
// system call then costs many times what it costs on the host, so the figure is a ratio between
// servers measured in the same VM, not a rate to compare with a run on real hardware.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '../helpers/server.js';

export const RUN_VM = path.join(REPO_ROOT, 'hack', 'vm', 'run-vm-test.sh');

export interface VmUntarResult {
  files: number;
  /** Seconds of `tar -x` onto the mount, measured in the guest. */
  seconds: number;
  /** Files found on the mount afterwards (must equal `files`). */
  found: number;
  /** Seconds the whole VM run took (boot, making the tree, tar, unmount). */
  vmSeconds: number;
  /** The NFS calls the guest's client sent over the whole run (hack/vm/init.sh), e.g. "CREATE=10000 ...". */
  nfsOps: string;
  /** The server's CPU seconds over the whole VM run (the caller fills it in). */
  serverCpuSeconds?: number;
  /** DittoFS only: mean time from decoding a call to its reply being ready, by procedure (the caller fills it in). */
  serverLatency?: string;
}

/** The guest script (busybox sh); its working directory is the mount. */
export function untarScript(files: number): string {
  return `set -e
N=${files}
mnt=$(pwd)
mkdir -p /tmp/src/tree
cd /tmp/src/tree
i=0
while [ $i -lt $N ]; do
  d=d$((i / 100))
  [ $((i % 100)) -eq 0 ] && mkdir $d
  echo "file $i of an untar benchmark" >$d/f$i
  i=$((i + 1))
done
cd /tmp/src
tar -cf /tmp/tree.tar tree
rm -rf /tmp/src
cd "$mnt"
t0=$(cut -d' ' -f1 /proc/uptime)
tar -xf /tmp/tree.tar
t1=$(cut -d' ' -f1 /proc/uptime)
found=$(find tree -type f | wc -l)
echo "UNTAR-RESULT files=$N found=$found seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
`;
}

type Run = (
  cmd: string,
  args: string[],
  timeoutMs: number,
  giveUpIf?: () => string | undefined,
) => Promise<{ stdout: string; seconds: number }>;

/**
 * Boots the VM against 127.0.0.1:nfsPort (MOUNT on mountPort) and times the untar. `run` is the
 * caller's bounded command runner (run.ts run): it kills the VM runner at `timeoutMs`.
 */
export async function runVmUntar(
  opts: { nfsPort: number; mountPort: number; exportPath: string; files: number; gone: () => string | undefined },
  run: Run,
): Promise<VmUntarResult> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-vmuntar-'));
  try {
    const script = path.join(dir, 'untar.sh');
    await writeFile(script, untarScript(opts.files), { mode: 0o755 });
    // Generous under emulation: 3 minutes of boot and set-up, then 100 ms a file.
    const timeoutS = 180 + Math.ceil(opts.files * 0.1);
    const args = [
      RUN_VM,
      '--fs',
      'nfs',
      '--port',
      String(opts.nfsPort),
      '--mount-port',
      String(opts.mountPort),
      '--export',
      opts.exportPath,
      '--script',
      script,
      '--timeout',
      String(timeoutS),
    ];
    let out: { stdout: string; seconds: number };
    try {
      out = await run('bash', args, (timeoutS + 60) * 1000, opts.gone);
    } catch (e) {
      throw new Error(`VM untar failed: ${(e as Error).message.split('\n').slice(-30).join('\n')}`);
    }
    const m = /UNTAR-RESULT files=(\d+) found=(\d+) seconds=([\d.]+)/.exec(out.stdout);
    if (!m) throw new Error(`VM untar: no UNTAR-RESULT line in the VM console:\n${out.stdout.split('\n').slice(-30).join('\n')}`);
    const found = Number(m[2]);
    if (found !== opts.files) throw new Error(`VM untar: ${found} files on the mount after tar -x of ${opts.files}`);
    const ops = /dittofs-vm: NFS ops sent:(.*)/.exec(out.stdout)?.[1]?.trim() ?? '?';
    return { files: opts.files, seconds: Number(m[3]), found, vmSeconds: out.seconds, nfsOps: ops };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
