// Test support: one control store per test file, emptied between tests. Not used by the server.
import { openControlStore, type ControlStore } from './store.js';

const TABLES = [
  'share_permissions',
  'shares',
  'group_members',
  'groups',
  'users',
  'metadata_stores',
  'block_stores',
  'adapters',
  'settings',
];

export async function openTestControlStore(): Promise<ControlStore> {
  return openControlStore({ type: 'memory' });
}

/** Deletes every row (the generation keeps counting). */
export async function resetControlStore(store: ControlStore): Promise<void> {
  if (store.dialect.name === 'sqlite') {
    // SQLite has no TRUNCATE; deleting children first keeps the foreign keys satisfied.
    await store.driver.transaction(async (tx) => {
      for (const t of TABLES) await tx.query(`DELETE FROM ${t}`);
    });
    return;
  }
  await store.driver.query(`TRUNCATE ${TABLES.join(', ')}`);
}
