// MS-SMB2 3.3.1.5 ServerGuid: one per server, kept in the data directory so clients see the same
// server across restarts.
import path from 'node:path';
import { persistedRandomId } from '../persisted-id.js';

export function loadServerGuid(dataDir: string): Promise<Buffer> {
  return persistedRandomId(path.join(dataDir, 'smb-server-guid'), 16, 0o600);
}
