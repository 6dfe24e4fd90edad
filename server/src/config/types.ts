// The shape of the DittoFS YAML configuration file, after defaults are applied.
// Keys are snake_case in YAML, exactly as written here.

export const LOG_LEVELS = Object.freeze(['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const);
export type LogLevel = (typeof LOG_LEVELS)[number];

export const METADATA_STORE_TYPES = Object.freeze(['memory', 'embedded', 'postgres'] as const);
export type MetadataStoreType = (typeof METADATA_STORE_TYPES)[number];

export const EMBEDDED_ENGINES = Object.freeze(['pglite', 'sqlite'] as const);
export type EmbeddedEngine = (typeof EMBEDDED_ENGINES)[number];
/** SQLite: microseconds per metadata change, fsync'd by a group commit; a PGlite store moves to it at open. */
export const DEFAULT_EMBEDDED_ENGINE: EmbeddedEngine = 'sqlite';
/** When an embedded SQLite store's or a postgres store's changes reach the disk (meta/sql/sqlite.ts, pg.ts). */
export const METADATA_SYNC_MODES = Object.freeze(['commit', 'change'] as const);
export type MetadataSync = (typeof METADATA_SYNC_MODES)[number];

export const BLOCK_STORE_TYPES = Object.freeze(['memory', 'filesystem', 's3'] as const);
export type BlockStoreType = (typeof BLOCK_STORE_TYPES)[number];

export interface MetadataStoreConfig {
  type: MetadataStoreType;
  /** `embedded`: the store's directory (default `<data_dir>/metadata/<name>`). */
  path?: string;
  /**
   * `embedded`: the engine, `sqlite` (default) or `pglite`. A PGlite store opened as `sqlite` is moved to
   * SQLite once (its PGlite files kept as a backup); a SQLite store does not open as `pglite`.
   */
  engine?: EmbeddedEngine;
  /**
   * `embedded` on `sqlite`, and `postgres`: `commit`: changes are on disk by the reply to the next
   * NFS COMMIT / stable WRITE / SMB FLUSH and within 100 ms anyway (postgres: within 3 x its
   * wal_writer_delay, synchronous_commit off); `change`: each before its reply. Default: `commit`
   * on sqlite, `change` on postgres.
   */
  sync?: MetadataSync;
  /** `postgres` (required): a connection URL, e.g. `postgres://user:pass@host:5432/dittofs`. */
  url?: string;
  /** `postgres`: pooled connections (default 10). */
  pool_size?: number;
  /** `postgres`: schema holding the tables, so several stores can share a database. */
  schema?: string;
  /** `postgres`: connect timeout in ms (default 5000). */
  connect_timeout?: number;
  /** `postgres`: statement timeout in ms (default 30000). */
  statement_timeout?: number;
}

export interface BlockStoreConfig {
  type: BlockStoreType;
  /** Block size in bytes (default 4 MiB); a power of two between 64 KiB and 64 MiB. */
  block_size: number;
  /** For `filesystem`: the directory holding block objects (default `<data_dir>/blocks/<name>`). */
  path?: string;
  /** `s3`: `http(s)://host[:port]` of an S3-compatible server; absent: AWS S3 for `region`. */
  endpoint?: string;
  /** `s3`: the region requests are signed for (default us-east-1). */
  region?: string;
  /** `s3` (required): the bucket holding block objects; it must exist. */
  bucket?: string;
  /** `s3`: key prefix, so several stores can share a bucket; objects are `PREFIX/KEY`. */
  prefix?: string;
  /** `s3`: path-style URLs (`endpoint/bucket/key`), as MinIO and most self-hosted servers need (default false). */
  force_path_style?: boolean;
  /** `s3`: with `secret_access_key`; both absent means the standard AWS credential chain. */
  access_key_id?: string;
  /** `s3`: never shown: masked in `config show` and in errors. */
  secret_access_key?: string;
  /** `s3`: longest one HTTP attempt may take, in ms (default 30000). */
  request_timeout?: number;
  /** `s3`: attempts per request, retries with backoff included (default 3). */
  max_attempts?: number;
}

export interface ShareConfig {
  /** Export path clients mount, e.g. `/export`. Starts with `/`, no trailing slash, no `..`. */
  name: string;
  /** Name of a metadata store under `metadata.stores`. */
  metadata: string;
  /** Name of a block store under `blocks.stores`. */
  blocks: string;
  read_only: boolean;
  /** Map uid 0 to `anonymous_uid`/`anonymous_gid`. */
  root_squash: boolean;
  anonymous_uid: number;
  anonymous_gid: number;
  /** Mode bits of the share's root directory when it is first created (octal in YAML as a string or number). */
  root_mode: number;
  root_uid: number;
  root_gid: number;
}

export interface DittoConfig {
  /** Directory for all local state; env DITTOFS_DATA_DIR. Default `./data`. */
  data_dir: string;
  logging: {
    level: LogLevel;
    /** `json` (default) or `pretty` is not offered: logs are always JSON lines. */
    format: 'json';
    /**
     * Also append the log lines to this file (env DITTOFS_LOG_FILE). Unset: stdout only, except
     * `dittofs start --background`, which logs to `<data_dir>/dittofs.log`.
     */
    file?: string;
  };
  adapters: {
    nfs: {
      enabled: boolean;
      /** env DITTOFS_NFS_PORT, default 12049. NFS and MOUNT share this port. */
      port: number;
      /** Listen address, env DITTOFS_BIND_ADDRESS (shared by all listeners). Default 0.0.0.0. */
      bind: string;
      /** Largest accepted RPC record in bytes (default 1 MiB + 64 KiB); larger records close the connection. */
      max_record_size: number;
      /** Entries kept in the duplicate request cache (default 1024). */
      drc_size: number;
      /**
       * TCP connections served at once (default 1024); past it, a connection not past its handshake
       * (a mount granted, or an NFS call on a file handle the server gave out; not NULL) yet, older than
       * 1 s, of the address or IPv6 /64 holding the most, and more than the newcomer's, is closed
       * to make room, or the new one when there is none.
       */
      max_connections: number;
      /**
       * TCP connections from one client address at once (default 256; 0: no cap); past it, that
       * address's oldest connection not past its handshake is closed to make room, or the new one.
       */
      max_connections_per_address: number;
      /** A connection not past its handshake (as above) this long (ms) after it was accepted is closed; 0: never (default 30 s). */
      handshake_timeout: number;
      /** A connection with no traffic for this long (ms) while none of its calls is running is closed; 0: never (default 6 minutes). */
      idle_timeout: number;
      /**
       * Bytes of RPC records buffered across all connections, being read or being served (default
       * 256 MiB, at least max_record_size); past it, connections wait before reading more.
       */
      max_buffered_request_bytes: number;
      portmapper: {
        enabled: boolean;
        /** default 10111 */
        port: number;
      };
    };
    smb: {
      enabled: boolean;
      /** env DITTOFS_SMB_PORT, default 12445. */
      port: number;
      bind: string;
      /**
       * Every SMB session must sign its messages (HMAC-SHA256, SMB 2.x); default false: sessions
       * sign when the client asks. Env DITTOFS_SMB_SIGNING_REQUIRED.
       */
      signing_required: boolean;
      /**
       * Every SMB session must encrypt its messages (SMB 3.x: AES-GCM or AES-CCM); SMB 2.x clients,
       * guests and anonymous are refused. Default false: sessions encrypt when the client asks.
       * Env DITTOFS_SMB_ENCRYPTION_REQUIRED.
       */
      encryption_required: boolean;
      /**
       * How long an open, write or rename waits for a client to acknowledge an oplock or lease
       * break, in ms (MS-SMB2: 35 s, the default). Env DITTOFS_SMB_OPLOCK_BREAK_TIMEOUT.
       */
      oplock_break_timeout: number;
      /**
       * How long a durable SMB open (a handle that survives a dropped connection) waits for its
       * client to reconnect, in ms (default 16 minutes, as Windows). Env DITTOFS_SMB_DURABLE_HANDLE_TIMEOUT.
       */
      durable_handle_timeout: number;
      /**
       * TCP connections served at once (default 1024); past it, a connection with no session
       * established yet (older than 1 s, of the address or IPv6 /64 holding the most, and more than
       * the newcomer's) is closed to make room, or the new one when there is none.
       */
      max_connections: number;
      /**
       * TCP connections from one client address at once (default 256; 0: no cap); past it, that
       * address's oldest connection with no session yet is closed to make room, or the new one.
       */
      max_connections_per_address: number;
      /**
       * A connection with no session established is closed this long (ms) after its last request,
       * and at ten times this after it was accepted in any case; 0: never (default 60 s).
       */
      handshake_timeout: number;
      /**
       * Files open through SMB at once by one user, all connections and sessions together (default
       * 16,384 of the server's 65,536); past it, that user's CREATE fails with INSUFFICIENT_RESOURCES.
       */
      max_opens_per_user: number;
      /** A connection with no traffic for this long (ms) while none of its requests is running is closed; 0: never (default 15 minutes). */
      idle_timeout: number;
      /**
       * Bytes of SMB2 frames buffered across all connections, being read or being served (default
       * 256 MiB, at least 1088 KiB: the largest frame); past it, connections wait before reading more.
       */
      max_buffered_request_bytes: number;
    };
  };
  server: {
    api: {
      /**
       * The REST control plane (and its database). Default true. When false, the server serves the
       * stores and shares of this file only, with no users or permissions.
       */
      enabled: boolean;
      /** env DITTOFS_API_PORT, default 8080. */
      port: number;
      bind: string;
      /**
       * HS256 key for access and refresh tokens, at least 32 characters; env DITTOFS_JWT_SECRET.
       * Absent: one is generated at first start and kept in the control database.
       */
      jwt_secret?: string;
      /** bcrypt cost of stored passwords, 10 to 15 (default 10). */
      bcrypt_cost: number;
      /** API connections at once (default 1024). */
      max_connections: number;
      /** API connections from one peer address at once, trusted proxies apart (default 256; 0: no cap). */
      max_connections_per_address: number;
      /**
       * Peers whose X-Forwarded-For names the client (the address the rate limits count): false
       * (default: none), true (any peer), or addresses, CIDR ranges and the presets loopback,
       * linklocal, uniquelocal. Their connections are not capped per address.
       */
      trust_proxy: boolean | string[];
      rate_limit: {
        /** Requests per minute per client on the API (default 600). */
        max: number;
        /** Login attempts per minute per client address and username (default 10). */
        login_max: number;
        /** Login attempts per minute per client address, whatever the username (default 60). */
        login_address_max: number;
      };
    };
  };
  /**
   * The control-plane database: users, groups, stores, shares, permissions, adapters, settings.
   * The file's stores and shares are added to it at every start when their names are missing.
   */
  database: {
    /** `embedded` (default: SQLite under data_dir), `postgres`, or `memory` (gone at exit). */
    type: 'embedded' | 'postgres' | 'memory';
    /** `embedded`: the database directory (default `<data_dir>/control`). */
    path?: string;
    /** `postgres` (required): a connection URL; env DITTOFS_DATABASE_URL. */
    url?: string;
    /** `postgres`: schema of the control tables (default: the connection's search_path). */
    schema?: string;
    /** `postgres`: pooled connections (default 4). */
    pool_size?: number;
  };
  /**
   * Several servers (replicas) serving the same PostgreSQL metadata stores and block stores. Unset
   * (no `redis.url`): one server per store, enforced by a PostgreSQL advisory lock (the store
   * fence), and nothing of Redis is loaded.
   */
  coordination: {
    redis: {
      /**
       * `redis://host:6379/0` or `rediss://` (TLS); env DITTOFS_COORDINATION__REDIS__URL. Setting it
       * turns coordination on: per-file write leases with fencing tokens, so that several servers
       * may serve one store.
       */
      url?: string;
      /** Prefix of every key and channel, so that several DittoFS may share one Redis (default `dittofs:`). */
      key_prefix: string;
      /** TLS to Redis even with a redis:// URL (rediss:// always uses it). Default false. */
      tls: boolean;
      /** A file holding the password (a mounted Secret); its trailing newline is ignored. */
      password_file?: string;
      /** The name of an environment variable holding the password. */
      password_env?: string;
      /** How long a write lease lasts unless renewed (default 10 s); a crashed holder's files wait this long. */
      lease_ttl: number;
    };
  };
  metrics: {
    enabled: boolean;
    /** env DITTOFS_METRICS_PORT, default 9090. */
    port: number;
    bind: string;
  };
  /** OpenTelemetry tracing: spans exported over OTLP/HTTP (JSON). */
  tracing: {
    /** Default false: no SDK is loaded. */
    enabled: boolean;
    /** OTLP/HTTP traces URL (default http://127.0.0.1:4318/v1/traces: a collector beside the server). */
    endpoint: string;
    /** `service.name` of the spans (default dittofs). */
    service_name: string;
    /** Fraction of traces recorded, 0 to 1 (default 1: all). */
    sample_ratio: number;
  };
  cache: {
    /**
     * The write-ahead log directory (default `<data_dir>/wal`); on a persistent volume in Kubernetes.
     * Every write lands here first; COMMIT and FILE_SYNC fsync it.
     */
    wal_dir?: string;
    /** Size limit of the WAL: data not yet in the block store; past it, writers wait (default 1 GiB). */
    wal_max_bytes: number;
    /**
     * Only when every share's block store is `memory` (nothing to recover, so no WAL): bytes of
     * written-but-unflushed data held in memory before writers wait (default 256 MiB).
     */
    max_dirty_bytes: number;
    /** Bytes of clean blocks kept in memory for reads (default 64 MiB). */
    read_cache_bytes: number;
    /**
     * The read cache on disk, for s3 block stores (default `<data_dir>/cache`): blocks uploaded or
     * fetched are kept there, so reading recent data does not go back to S3.
     */
    disk_cache_dir?: string;
    /** Size limit of the disk read cache, least recently used out first; 0 turns it off (default 1 GiB). */
    disk_cache_bytes: number;
  };
  metadata: {
    stores: Record<string, MetadataStoreConfig>;
  };
  blocks: {
    stores: Record<string, BlockStoreConfig>;
  };
  shares: ShareConfig[];
}
