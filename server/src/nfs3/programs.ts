// Binds the NFS and MOUNT procedure tables to the RPC server.
import type { RpcCall } from '../rpc/message.js';
import type { RpcConnectionInfo, RpcProgram } from '../rpc/server.js';
import type { XdrWriter } from '../rpc/xdr.js';
import { MOUNT_PROGRAM, MOUNT_V3, MountProc, NFS_PROC_NAMES, NFS_PROGRAM, NFS_V3, NfsProc, NON_IDEMPOTENT } from './constants.js';
import type { MountProgram } from './mount.js';
import type { Nfs3Program } from './nfs.js';

const MOUNT_PROC_NAMES = Object.keys(MountProc);

export function nfsRpcProgram(nfs: Nfs3Program): RpcProgram {
  return {
    prog: NFS_PROGRAM,
    name: 'nfs',
    lowVersion: NFS_V3,
    highVersion: NFS_V3,
    maxProc: NfsProc.COMMIT,
    handle: (call: RpcCall, w: XdrWriter) => nfs.handle(call, w),
    isNonIdempotent: (proc) => NON_IDEMPOTENT.has(proc),
    procName: (proc) => NFS_PROC_NAMES[proc] ?? `PROC_${proc}`,
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
  };
}
