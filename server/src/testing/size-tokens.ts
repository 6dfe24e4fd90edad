// What migration 6 (inodes.size_token) gives a file of an older store, in either SQL dialect: a
// store that predates it takes its file token from the block rows alone, then from the size token
// a write stores, and refuses a truncate under an older lease than that.
import assert from 'node:assert/strict';
import type { MetadataStore } from '../meta/store.js';

/** `fileId` had one block row stored under lease token 4 before the migration, and no size token. */
export async function assertSizeTokensAfterMigration(
  s: MetadataStore & { fileToken(id: number): Promise<number> },
  fileId: number,
): Promise<void> {
  assert.equal(await s.fileToken(fileId), 4, 'no size token yet: the block row the newest');
  await s.setAttr(fileId, { growTo: 9, sizeToken: 6 });
  assert.equal(await s.fileToken(fileId), 6);
  await assert.rejects(s.setAttr(fileId, { size: 0, leaseToken: 5 }), /newer write lease/);
  assert.equal((await s.setAttr(fileId, { size: 0, leaseToken: 6 })).size, 0);
}
