// Printing a configuration (`dittofs config show`) in a form that loads back to the same thing.
import YAML from 'yaml';
import { MASK, maskUrlPassword } from './errors.js';
import type { DittoConfig } from './types.js';

export const OUTPUT_FORMATS = Object.freeze(['yaml', 'json'] as const);
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/** Mode bits as the octal string people read and write: 511 -> "0777". */
export function formatMode(mode: number): string {
  return `0${mode.toString(8).padStart(3, '0')}`;
}

/**
 * A plain copy of the config with modes as octal strings (no reader mistakes 511 for a mode), and
 * passwords in URLs and S3 secret keys masked as `****`.
 */
export function toDisplayObject(config: DittoConfig): Record<string, unknown> {
  const stores = Object.fromEntries(
    Object.entries(config.metadata.stores).map(([name, s]) => [name, s.url === undefined ? s : { ...s, url: maskUrlPassword(s.url) }]),
  );
  const blockStores = Object.fromEntries(
    Object.entries(config.blocks.stores).map(([name, s]) => [
      name,
      s.secret_access_key === undefined ? s : { ...s, secret_access_key: MASK },
    ]),
  );
  const api = config.server.api.jwt_secret === undefined ? config.server.api : { ...config.server.api, jwt_secret: MASK };
  const database = config.database.url === undefined ? config.database : { ...config.database, url: maskUrlPassword(config.database.url) };
  return {
    ...config,
    server: { ...config.server, api },
    database,
    metadata: { ...config.metadata, stores },
    blocks: { ...config.blocks, stores: blockStores },
    shares: config.shares.map((s) => ({ ...s, root_mode: formatMode(s.root_mode) })),
  };
}

export function formatConfig(config: DittoConfig, format: OutputFormat): string {
  const obj = toDisplayObject(config);
  return format === 'json' ? `${JSON.stringify(obj, null, 2)}\n` : YAML.stringify(obj, { lineWidth: 0 });
}
