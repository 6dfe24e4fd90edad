// Built-in defaults: what DittoFS runs with when no config file is given.
import path from 'node:path';
import type { BlockStoreConfig, DittoConfig, MetadataStoreConfig, ShareConfig } from './types.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

export const DEFAULT_DATA_DIR = './data';
export const DEFAULT_STORE_NAME = 'default';
export const DEFAULT_SHARE_NAME = '/export';
export const DEFAULT_BLOCK_SIZE = 4 * MiB;
export const MIN_BLOCK_SIZE = 64 * KiB;
export const MAX_BLOCK_SIZE = 64 * MiB;
/** Where spans go when tracing is on and no endpoint is set: an OpenTelemetry collector on the same host. */
export const DEFAULT_TRACING_ENDPOINT = 'http://127.0.0.1:4318/v1/traces';
/** uid/gid of `nobody` on Linux, used for squashed and anonymous access. */
export const NOBODY_ID = 65534;

/**
 * Defaults for the fields of a share that the file leaves out.
 *
 * `root_mode` is 0o777 so that a fresh share is writable by every client user, not only by root:
 * the root directory is created owned by root_uid/root_gid (0/0), and with 0o755 an NFS client
 * mounting as an ordinary user could not create anything in it. Tighten it per share when
 * ownership is managed (e.g. `root_mode: "0755"` with `root_uid`/`root_gid` set to the owner).
 */
export const SHARE_DEFAULTS: Readonly<Omit<ShareConfig, 'name'>> = Object.freeze({
  metadata: DEFAULT_STORE_NAME,
  blocks: DEFAULT_STORE_NAME,
  read_only: false,
  root_squash: false,
  anonymous_uid: NOBODY_ID,
  anonymous_gid: NOBODY_ID,
  root_mode: 0o777,
  root_uid: 0,
  root_gid: 0,
});

/** Where a filesystem block store keeps its objects when the file gives no `path`. */
export function defaultBlockStorePath(dataDir: string, storeName: string): string {
  return path.join(dataDir, 'blocks', storeName);
}

/** Where an embedded metadata store keeps its database when the file gives no `path`. */
export function defaultMetadataStorePath(dataDir: string, storeName: string): string {
  return path.join(dataDir, 'metadata', storeName);
}

/** The stores supplied when the file defines no stores at all. */
export function defaultMetadataStores(dataDir: string): Record<string, MetadataStoreConfig> {
  return { [DEFAULT_STORE_NAME]: { type: 'embedded', path: defaultMetadataStorePath(dataDir, DEFAULT_STORE_NAME) } };
}

export function defaultBlockStores(dataDir: string): Record<string, BlockStoreConfig> {
  return {
    [DEFAULT_STORE_NAME]: {
      type: 'filesystem',
      block_size: DEFAULT_BLOCK_SIZE,
      path: defaultBlockStorePath(dataDir, DEFAULT_STORE_NAME),
    },
  };
}

/** The share supplied when the file defines no stores and no `shares` key. */
export function defaultShares(): ShareConfig[] {
  return [{ name: DEFAULT_SHARE_NAME, ...SHARE_DEFAULTS }];
}

/**
 * The complete configuration used when there is no file and no environment override.
 * Paths are as written here (relative); the loader resolves them against the working directory.
 * Returns a fresh object each call, safe to mutate.
 */
export function defaultConfig(): DittoConfig {
  return {
    data_dir: DEFAULT_DATA_DIR,
    logging: { level: 'info', format: 'json' },
    adapters: {
      nfs: {
        enabled: true,
        port: 12049,
        bind: '0.0.0.0',
        max_record_size: 1 * MiB + 64 * KiB,
        drc_size: 1024,
        max_connections: 1024,
        max_connections_per_address: 256,
        handshake_timeout: 30_000,
        idle_timeout: 6 * 60_000,
        max_buffered_request_bytes: 256 * MiB,
        portmapper: { enabled: false, port: 10111 },
      },
      smb: {
        enabled: true,
        port: 12445,
        bind: '0.0.0.0',
        signing_required: false,
        encryption_required: false,
        oplock_break_timeout: 35000,
        durable_handle_timeout: 16 * 60_000,
        max_connections: 1024,
        max_connections_per_address: 256,
        handshake_timeout: 60_000,
        max_opens_per_user: 16384,
        idle_timeout: 15 * 60_000,
        max_buffered_request_bytes: 256 * MiB,
      },
    },
    server: {
      api: {
        enabled: true,
        port: 8080,
        bind: '0.0.0.0',
        bcrypt_cost: 10,
        max_connections: 1024,
        max_connections_per_address: 256,
        trust_proxy: false,
        rate_limit: { max: 600, login_max: 10, login_address_max: 60 },
      },
    },
    database: { type: 'embedded' },
    coordination: { redis: { key_prefix: 'dittofs:', tls: false, lease_ttl: 10_000 } },
    metrics: { enabled: true, port: 9090, bind: '0.0.0.0' },
    tracing: { enabled: false, endpoint: DEFAULT_TRACING_ENDPOINT, service_name: 'dittofs', sample_ratio: 1 },
    cache: { wal_max_bytes: 1024 * MiB, max_dirty_bytes: 256 * MiB, read_cache_bytes: 64 * MiB, disk_cache_bytes: 1024 * MiB },
    metadata: { stores: defaultMetadataStores(DEFAULT_DATA_DIR) },
    blocks: { stores: defaultBlockStores(DEFAULT_DATA_DIR) },
    shares: defaultShares(),
  };
}
