// MS-SMB2 3.3.1.5 ServerGuid: one per server, kept in the data directory so clients see the same
// server across restarts.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

export async function loadServerGuid(dataDir: string): Promise<Buffer> {
  const file = path.join(dataDir, 'smb-server-guid');
  try {
    const hex = (await readFile(file, 'utf8')).trim();
    if (/^[0-9a-f]{32}$/i.test(hex)) return Buffer.from(hex, 'hex');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const guid = randomBytes(16);
  await mkdir(dataDir, { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, guid.toString('hex') + '\n', { mode: 0o600 });
  await rename(tmp, file);
  return guid;
}
