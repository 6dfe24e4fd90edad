// One server seen through both protocols, for the tests where SMB and NFS meet (share modes,
// byte-range locks, oplocks and leases, durable handles): control-plane users with passwords for
// SMB, an NFSv3 mount of /export as the first user's uid, and raw SMB clients logged in on demand.
import { addShareUser, takeOverAdmin } from './api.js';
import { NfsOps } from './nfs-ops.js';
import { authSys } from './rpc-client.js';
import { startDittofs, type DittofsProcess, type StartOptions } from './server.js';
import { RawSmbClient } from './smb-raw.js';

export interface SmbUser {
  username: string;
  password: string;
  uid: number;
}

export interface BothProtocols {
  srv: DittofsProcess;
  /** NFS as the first user's uid and gid, with /export mounted. */
  nfs: NfsOps;
  /** The file handle of /export. */
  root: Buffer;
  /** The control plane: its address and an admin token (share permissions, share settings). */
  api: { base: string; token: string };
  /** A new raw SMB client logged in to \\server\export (the first user unless another is named). */
  smb(user?: SmbUser): Promise<RawSmbClient>;
  /** Drops every SMB client and the NFS connection and stops the server. */
  close(): Promise<void>;
}

export async function startBothProtocols(users: [SmbUser, ...SmbUser[]], start: StartOptions = {}): Promise<BothProtocols> {
  const srv = await startDittofs(start);
  const clients: RawSmbClient[] = [];
  let nfs: NfsOps | undefined;
  try {
    const base = `http://127.0.0.1:${srv.apiPort}`;
    const token = await takeOverAdmin(base);
    for (const u of users) await addShareUser(base, token, { username: u.username, password: u.password, uid: u.uid, gid: u.uid });
    nfs = await NfsOps.open(srv.nfsPort, authSys(users[0].uid, users[0].uid));
    const root = await nfs.mount('/export');
    const opened = nfs;
    return {
      srv,
      nfs,
      root,
      api: { base, token },
      async smb(user = users[0]) {
        const c = await RawSmbClient.connect(srv.smbPort);
        clients.push(c);
        await c.login(user.username, user.password, 'export');
        return c;
      },
      async close() {
        for (const c of clients) c.destroy();
        opened.close();
        await srv.stop();
      },
    };
  } catch (e) {
    nfs?.close();
    await srv.stop();
    throw e;
  }
}
