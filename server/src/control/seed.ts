// The config file's stores and shares as a desired state: what a fresh control database is seeded
// with at first start (after that, the control database is the source of truth and the API changes
// it). Keys the file accepts for any store type but that mean nothing for this one (a `url` on an
// embedded store) are left out, as the API would refuse them.
import type { DittoConfig } from '../config/types.js';
import type { DesiredState, DesiredStore } from './state.js';
import { BLOCK_CONFIG_SCHEMAS, METADATA_CONFIG_SCHEMAS } from './store-config.js';

function keysOf(schema: Record<string, unknown>): Set<string> {
  return new Set(Object.keys(schema.properties ?? {}));
}

function storesOf(stores: Record<string, { type: string }>, schemas: Readonly<Record<string, Record<string, unknown>>>): DesiredStore[] {
  return Object.entries(stores).map(([name, s]) => {
    const allowed = keysOf(schemas[s.type] ?? {});
    const config = Object.fromEntries(Object.entries(s).filter(([k, v]) => k !== 'type' && v !== undefined && allowed.has(k)));
    return { name, type: s.type, config };
  });
}

/** Stores and shares of a loaded config (users and groups are left out: the file has none). */
export function desiredFromConfig(config: DittoConfig): Required<Pick<DesiredState, 'metadata_stores' | 'block_stores' | 'shares'>> {
  return {
    metadata_stores: storesOf(config.metadata.stores, METADATA_CONFIG_SCHEMAS),
    block_stores: storesOf(config.blocks.stores, BLOCK_CONFIG_SCHEMAS),
    shares: config.shares.map((s) => ({
      name: s.name,
      metadata_store: s.metadata,
      block_store: s.blocks,
      read_only: s.read_only,
      root_squash: s.root_squash,
      anonymous_uid: s.anonymous_uid,
      anonymous_gid: s.anonymous_gid,
      root_mode: s.root_mode,
      root_uid: s.root_uid,
      root_gid: s.root_gid,
    })),
  };
}
