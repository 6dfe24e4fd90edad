// Binds the NFS and MOUNT procedure tables to the RPC server.
import type { RpcCall } from '../rpc/message.js';
import type { RpcConnectionInfo, RpcProgram } from '../rpc/server.js';
import type { XdrWriter } from '../rpc/xdr.js';
import {
  MOUNT_PROGRAM,
  MOUNT_V3,
  MountProc,
  MountStatus,
  NFS_PROC_NAMES,
  NFS_PROGRAM,
  NFS_V3,
  Nfs3Status,
  NfsProc,
  NON_IDEMPOTENT,
} from './constants.js';
import type { MountProgram } from './mount.js';
import type { Nfs3Program } from './nfs.js';

const MOUNT_PROC_NAMES = Object.keys(MountProc);

/** Status labels for metrics and spans: `ok`, `noent`, `jukebox`, ... (nfsstat3 / mountstat3 names, lower case). */
const statusLabels = (codes: Readonly<Record<string, number>>): ReadonlyMap<number, string> =>
  new Map(Object.entries(codes).map(([name, code]) => [code, name.toLowerCase()]));
const NFS_STATUS_LABELS = statusLabels(Nfs3Status);
const MOUNT_STATUS_LABELS = statusLabels(MountStatus);

/** The status word a result starts with, as a label. */
function leadingStatus(labels: ReadonlyMap<number, string>, reply: Buffer, at: number, end: number): string {
  return end < at + 4 ? 'ok' : (labels.get(reply.readUInt32BE(at)) ?? 'unknown');
}

/** NFS statuses that do not show the caller holds a handle the server gave out (see proves below). */
const UNPROVEN: ReadonlySet<number> = new Set([
  Nfs3Status.BADHANDLE,
  Nfs3Status.STALE,
  Nfs3Status.JUKEBOX,
  Nfs3Status.SERVERFAULT,
  Nfs3Status.IO,
]);

/** Whether a result starts with status 0 (NFS3_OK, MNT3_OK). */
function leadingOk(reply: Buffer, at: number, end: number): boolean {
  return end >= at + 4 && reply.readUInt32BE(at) === 0;
}

export function nfsRpcProgram(nfs: Nfs3Program): RpcProgram {
  return {
    prog: NFS_PROGRAM,
    name: 'nfs',
    lowVersion: NFS_V3,
    highVersion: NFS_V3,
    maxProc: NfsProc.COMMIT,
    handle: (call: RpcCall, w: XdrWriter) => nfs.handle(call, w),
    isNonIdempotent: (proc) => NON_IDEMPOTENT.has(proc),
    // WRITE hands its data to the block service, which keeps none of it once the write settles
    // (BlockService.write); its record is the only large one, and worth reusing.
    releasesRecord: (proc) => proc === NfsProc.WRITE,
    procName: (proc) => NFS_PROC_NAMES[proc] ?? `PROC_${proc}`,
    // Every NFSv3 result but NULL's starts with its nfsstat3.
    resultStatus: (proc, reply, at, end) => (proc === NfsProc.NULL ? 'ok' : leadingStatus(NFS_STATUS_LABELS, reply, at, end)),
    // A call on a handle the server gave out: every procedure but NULL resolves its handle first
    // (vfs resolve: the share, the inode and its random generation), so any answer but the ones a
    // made-up handle gets (BADHANDLE, STALE), or one where the store could not tell (JUKEBOX,
    // SERVERFAULT, IO: an outage), shows the client holds one. NOENT, ACCES and the like count: a
    // client that reconnects without mounting again may get nothing else for a while.
    proves: (proc, reply, at, end) => proc !== NfsProc.NULL && end >= at + 4 && !UNPROVEN.has(reply.readUInt32BE(at)),
  };
}

export function mountRpcProgram(mount: MountProgram): RpcProgram {
  return {
    prog: MOUNT_PROGRAM,
    name: 'mount',
    lowVersion: MOUNT_V3,
    highVersion: MOUNT_V3,
    maxProc: MountProc.EXPORT,
    handle: (call: RpcCall, w: XdrWriter, conn: RpcConnectionInfo) => mount.handle(call, w, conn.host),
    isNonIdempotent: () => false,
    procName: (proc) => MOUNT_PROC_NAMES[proc] ?? `PROC_${proc}`,
    // Only MNT answers with a mountstat3.
    resultStatus: (proc, reply, at, end) => (proc === MountProc.MNT ? leadingStatus(MOUNT_STATUS_LABELS, reply, at, end) : 'ok'),
    // A mount granted (the export exists and the caller passed its access check); NULL, EXPORT,
    // DUMP and UMNT ask nothing of the caller.
    proves: (proc, reply, at, end) => proc === MountProc.MNT && leadingOk(reply, at, end),
  };
}
