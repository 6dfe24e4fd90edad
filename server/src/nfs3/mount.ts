// RFC 1813 Appendix I: the MOUNT v3 protocol, served on the NFS port so clients need no portmapper.
import type { Logger } from 'pino';
import type { RpcCall } from '../rpc/message.js';
import type { XdrWriter } from '../rpc/xdr.js';
import { isVfsError, type Errno } from '../vfs/errors.js';
import type { FileService } from '../vfs/service.js';
import { FileType, NAME_MAX } from '../vfs/types.js';
import { AuthFlavor } from '../rpc/message.js';
import { MNT_PATH_LEN, MountProc, MountStatus } from './constants.js';
import { identityOf } from './nfs.js';

/** DUMP's table is informational; it is capped so that clients cannot grow it without bound. */
const MAX_MOUNT_ENTRIES = 4096;

interface MountEntry {
  host: string;
  dir: string;
}

export class MountProgram {
  private readonly mounts = new Map<string, MountEntry>();

  constructor(
    private readonly fs: FileService,
    private readonly log?: Logger,
  ) {}

  async handle(call: RpcCall, w: XdrWriter, clientHost: string): Promise<undefined> {
    const r = call.args;
    switch (call.proc) {
      case MountProc.NULL:
        return undefined;
      case MountProc.MNT: {
        const path = r.opaque(MNT_PATH_LEN);
        await this.mnt(path, call, w, clientHost);
        return undefined;
      }
      case MountProc.DUMP: {
        for (const m of this.mounts.values()) w.u32(1).string(m.host).string(m.dir);
        w.u32(0);
        return undefined;
      }
      case MountProc.UMNT: {
        const path = r.string(MNT_PATH_LEN).replace(/\/+$/, '') || '/';
        for (const [k, m] of this.mounts) if (m.host === clientHost && m.dir === path) this.mounts.delete(k);
        return undefined;
      }
      case MountProc.UMNTALL: {
        for (const [k, m] of this.mounts) if (m.host === clientHost) this.mounts.delete(k);
        return undefined;
      }
      case MountProc.EXPORT: {
        for (const s of this.fs.shares()) w.u32(1).string(s.name).u32(0);
        w.u32(0);
        return undefined;
      }
      default:
        throw new RangeError('unknown procedure');
    }
  }

  // MOUNTPROC3_MNT: the share itself or a directory below it.
  private async mnt(raw: Buffer, call: RpcCall, w: XdrWriter, clientHost: string): Promise<void> {
    // A path no file can have is refused before anything is looked up: NUL is never part of a
    // name, and no component is longer than NAME_MAX bytes.
    const bad = raw.includes(0) ? MountStatus.INVAL : componentTooLong(raw) ? MountStatus.NAMETOOLONG : MountStatus.OK;
    if (bad !== MountStatus.OK) {
      this.log?.info({ client: clientHost, status: bad }, 'mount refused: invalid path');
      w.u32(bad);
      return;
    }
    const path = raw.toString('utf8');
    const normalized = path.length > 1 ? path.replace(/\/+$/, '') : path;
    let best: ReturnType<FileService['share']>;
    for (const s of this.fs.shares()) {
      if ((normalized === s.name || normalized.startsWith(s.name + '/')) && (!best || s.name.length > best.name.length)) best = s;
    }
    if (!best) {
      this.log?.info({ client: clientHost, path }, 'mount refused: no such export');
      w.u32(MountStatus.NOENT);
      return;
    }
    try {
      // A caller with no permission on the share is refused here already (MNT3ERR_ACCES).
      this.fs.identity(best, identityOf(call));
      let inode = await this.fs.root(best);
      let fh = this.fs.handleOf(best, inode);
      const rest = normalized
        .slice(best.name.length)
        .split('/')
        .filter((c) => c.length > 0);
      for (const comp of rest) {
        const found = await this.fs.lookup(fh, Buffer.from(comp, 'utf8'), identityOf(call));
        inode = found.inode;
        fh = this.fs.handleOf(best, inode);
      }
      if (inode.type !== FileType.DIR) {
        w.u32(MountStatus.NOTDIR);
        return;
      }
      const key = `${clientHost}\0${best.name}\0${inode.id}`;
      if (!this.mounts.has(key) && this.mounts.size >= MAX_MOUNT_ENTRIES) {
        const oldest = this.mounts.keys().next();
        if (!oldest.done) this.mounts.delete(oldest.value);
      }
      this.mounts.set(key, { host: clientHost, dir: normalized });
      this.log?.info({ client: clientHost, path: normalized }, 'client mounted');
      w.u32(MountStatus.OK).opaque(fh).u32(1).u32(AuthFlavor.AUTH_SYS);
    } catch (e) {
      if (!isVfsError(e)) throw e;
      // A refused mount is something an admin looks for ("why can't this client mount?").
      const { uid, gid } = identityOf(call);
      this.log?.info(
        { client: clientHost, path: normalized, error: e.errno, uid, gid },
        e.errno === 'ACCES' ? 'mount refused: no permission on the share' : 'mount refused',
      );
      w.u32(MOUNT_STATUS_OF[e.errno] ?? MountStatus.SERVERFAULT);
    }
  }
}

/** The file-service errors MNT can meet, as mountstat3 (RFC 1813 §5.1); anything else is SERVERFAULT. */
const MOUNT_STATUS_OF: Partial<Record<Errno, MountStatus>> = Object.freeze({
  PERM: MountStatus.PERM,
  NOENT: MountStatus.NOENT,
  IO: MountStatus.IO,
  ACCES: MountStatus.ACCES,
  NOTDIR: MountStatus.NOTDIR,
  INVAL: MountStatus.INVAL,
  NAMETOOLONG: MountStatus.NAMETOOLONG,
  STALE: MountStatus.NOENT,
});

/** True when a component of the path (bytes between "/") is longer than NAME_MAX. */
function componentTooLong(path: Buffer): boolean {
  let start = 0;
  for (;;) {
    const slash = path.indexOf(0x2f, start);
    const end = slash < 0 ? path.length : slash;
    if (end - start > NAME_MAX) return true;
    if (slash < 0) return false;
    start = slash + 1;
  }
}
