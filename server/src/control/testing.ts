// Test support: one control store per test file (opening PGlite takes seconds), emptied between
// tests. Not used by the server.
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
  await store.driver.query(`TRUNCATE ${TABLES.join(', ')}`);
}
