// SMB users are control-plane users: the NT hash stored beside the bcrypt hash (control/auth.ts
// ntHash) checks their NTLMv2 responses; uid, gid and the gids of their groups are the identity the
// session acts as. Nothing is cached: a user created, re-passworded, removed from a group or
// deleted with dittofsctl is seen by the next logon.
import type { ControlStore } from '../../control/store.js';
import type { SmbUser, SmbUserDirectory } from './types.js';

const NT_HASH_HEX = /^[0-9a-f]{32}$/i;

export function controlPlaneDirectory(store: ControlStore): SmbUserDirectory {
  return {
    async lookup(username: string): Promise<{ user: SmbUser; ntHash: Buffer } | null> {
      // Account names are stored lower case; SMB compares them case-insensitively.
      const name = username.toLowerCase();
      return store.read(async (q) => {
        const creds = await q.getCredentials(name);
        if (creds?.nt_hash == null || !NT_HASH_HEX.test(creds.nt_hash)) return null;
        const u = await q.getUser(name);
        if (u === undefined) return null;
        const gids: number[] = [];
        for (const g of u.groups) {
          const group = await q.getGroup(g);
          if (group !== undefined && !gids.includes(group.gid)) gids.push(group.gid);
        }
        return { user: { name: u.username, uid: u.uid, gid: u.gid, gids }, ntHash: Buffer.from(creds.nt_hash, 'hex') };
      });
    },
    async describeMissing(username: string): Promise<string> {
      const creds = await store.getCredentials(username.toLowerCase());
      if (creds === undefined) return 'no such user';
      if (creds.nt_hash === null) return 'the user has no SMB password (disabled, or created without a password)';
      return 'the stored NT hash is malformed';
    },
  };
}
