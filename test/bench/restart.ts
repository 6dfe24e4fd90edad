// The restart row: how long a DittoFS server takes from start to ready on a data dir that already
// holds a round's data (the sequential file, the parallel files, and `files` empty files left in a
// directory of their own by fillDirectory below). run.ts stops the server cleanly (SIGTERM: dirty
// data uploaded, the WAL emptied), starts it again on the same config and data dir and times it
// until it is ready: its NFS and API ports accept connections, the readiness every test waits
// for (test/helpers/server.ts startDittofs). Issue 16's target: under 3 s.
import { performance } from 'node:perf_hooks';
import { Nfs3Client } from './nfsclient.js';

export const RESTART_TARGET_SECONDS = 3;
export const RESTART_DIR = 'bench-restart';

export interface RestartResult {
  /** Empty files on the share (in RESTART_DIR) besides the round's other data. */
  files: number;
  fillSeconds: number;
  /** SIGTERM to exit (a clean stop uploads what is dirty). */
  stopSeconds: number;
  /** Spawn to ready. */
  startSeconds: number;
}

function name(i: number): string {
  return `r${String(i).padStart(7, '0')}`;
}

interface Target {
  nfsPort: number;
  mountPort: number;
  exportPath: string;
}

/** Creates `files` empty files in RESTART_DIR (one request outstanding); returns the seconds it took. */
export async function fillDirectory(t: Target, files: number, timeoutMs: number): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  const client = await Nfs3Client.connect({ nfsPort: t.nfsPort, mountPort: t.mountPort, exportPath: t.exportPath, callTimeoutMs: 30_000 });
  try {
    const t0 = performance.now();
    const dir = await client.mkdirFresh(RESTART_DIR);
    for (let i = 0; i < files; i++) {
      if ((i & 255) === 0 && performance.now() > deadline) throw new Error(`restart row: filling ${RESTART_DIR} took over ${timeoutMs} ms`);
      await client.create(dir, name(i), 0o644, 'UNCHECKED');
    }
    return (performance.now() - t0) / 1000;
  } finally {
    await client.close();
  }
}

/** After the restart: the first and the last file are there again (else the row fails). */
export async function checkFilled(t: Target, files: number): Promise<void> {
  if (files === 0) return;
  const client = await Nfs3Client.connect({ nfsPort: t.nfsPort, mountPort: t.mountPort, exportPath: t.exportPath, callTimeoutMs: 30_000 });
  try {
    const dir = (await client.lookup(client.rootFh, RESTART_DIR)).fh;
    for (const i of new Set([0, files - 1])) await client.lookup(dir, name(i));
  } finally {
    await client.close();
  }
}
