// Tests of O_DIRECT writes: whether the test's volume takes O_DIRECT at all (tmpfs does not).
import { constants as fsConstants } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import path from 'node:path';

export async function volumeTakesDirect(dir: string): Promise<boolean> {
  const O_DIRECT = (fsConstants as { O_DIRECT?: number }).O_DIRECT;
  if (O_DIRECT === undefined) return false;
  const probe = path.join(dir, '.direct-probe');
  try {
    const fh = await open(probe, fsConstants.O_WRONLY | fsConstants.O_CREAT | O_DIRECT, 0o600);
    await fh.close();
    return true;
  } catch {
    return false;
  } finally {
    await rm(probe, { force: true });
  }
}
