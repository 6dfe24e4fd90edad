// The commented sample configuration written by `dittofs config init`. It is also checked in as
// config/dittofs.example.yaml (a test keeps the two identical; regenerate that file with
// `node --import tsx server/src/cli/dittofs.ts config init --force --config config/dittofs.example.yaml`).
// It must configure exactly the built-in defaults (also tested).
import { protocolImplemented } from '../protocols.js';
import { SAMPLE_JWT_SECRET } from './jwt-secret.js';

export const SAMPLE_CONFIG_YAML = `# DittoFS server configuration.
#
# Every key is optional: what is left out takes the default shown here, so this file, as written,
# configures exactly the built-in defaults. Unknown keys are errors (a typo never goes unnoticed).
# Check a file with "dittofs config validate --config FILE"; see the effective result, after defaults
# and environment overrides, with "dittofs config show --config FILE".
#
# Which file is read: --config FILE, else $DITTOFS_CONFIG, else ./dittofs.yaml if it exists, else
# none (built-in defaults).
#
# Environment overrides are applied over this file. Named ones: DITTOFS_DATA_DIR, DITTOFS_LOG_LEVEL,
# DITTOFS_LOG_FILE, DITTOFS_BIND_ADDRESS (all listeners), DITTOFS_NFS_ENABLED, DITTOFS_NFS_PORT,
# DITTOFS_PORTMAPPER_ENABLED, DITTOFS_PORTMAPPER_PORT, DITTOFS_SMB_ENABLED, DITTOFS_SMB_PORT,
# DITTOFS_SMB_SIGNING_REQUIRED, DITTOFS_SMB_ENCRYPTION_REQUIRED, DITTOFS_SMB_OPLOCK_BREAK_TIMEOUT,
# DITTOFS_SMB_DURABLE_HANDLE_TIMEOUT, DITTOFS_API_ENABLED, DITTOFS_API_PORT, DITTOFS_JWT_SECRET,
# DITTOFS_DATABASE_URL, DITTOFS_METRICS_ENABLED, DITTOFS_METRICS_PORT, DITTOFS_WAL_DIR,
# DITTOFS_WAL_MAX_BYTES, DITTOFS_MAX_DIRTY_BYTES, DITTOFS_READ_CACHE_BYTES, DITTOFS_DISK_CACHE_DIR,
# DITTOFS_DISK_CACHE_BYTES. Any single setting can also be set as
# DITTOFS_ plus its key path upper-cased with "__" between keys, e.g.
# DITTOFS_ADAPTERS__NFS__DRC_SIZE=4096, DITTOFS_BLOCKS__STORES__DEFAULT__BLOCK_SIZE=8MiB,
# DITTOFS_SHARES__0__READ_ONLY=true, DITTOFS_METADATA__STORES__PG__URL=postgres://...,
# DITTOFS_BLOCKS__STORES__S3__SECRET_ACCESS_KEY=... (stores by name, shares by position; the
# environment sets keys of existing stores and shares, never adds one).
#
# Sizes are bytes, written as a number or with a unit: 65536, 64KiB, 4MiB, 1.5GiB (KiB/MiB/GiB/TiB
# and Ki/Mi/Gi/Ti are powers of 1024; kB/MB/GB/TB and k/M/G/T are powers of 1000).
# Relative paths are resolved against the working directory of the server process (not against
# this file's directory); "~/" means the home directory.

# Directory for all local state (block files of filesystem stores, embedded metadata databases,
# the WAL, the embedded control database). Env: DITTOFS_DATA_DIR.
data_dir: ./data

# Logging.
logging:
  # trace, debug, info, warn, error or fatal. Env: DITTOFS_LOG_LEVEL.
  level: info
  # Logs are always JSON lines on standard output (read them with jq, e.g. jq -r .msg).
  format: json
  # Every start also appends the log lines to this file (created with mode 0640), where
  # "dittofs logs" reads them. Unset: <data_dir>/dittofs.log. "-": standard output only, no file
  # (as in Kubernetes). Rotate it with logrotate's copytruncate. Env: DITTOFS_LOG_FILE.
  # file: /var/log/dittofs/dittofs.log

# Protocol listeners. Clients mount shares over NFSv3 and SMB2/3. These settings apply at every
# start (the first start also seeds the control plane's adapter rows); "dittofsctl adapter update"
# starts, stops or moves a listener at once, until the next start.
adapters:
  # NFSv3 with MOUNT v3, over TCP.
  nfs:
    # Env: DITTOFS_NFS_ENABLED.
    enabled: true
    # NFS and MOUNT share this port. Env: DITTOFS_NFS_PORT.
    # Linux: mount -t nfs -o vers=3,proto=tcp,port=12049,mountport=12049,mountproto=tcp,nolock HOST:/export /mnt
    port: 12049
    # Listen address: 0.0.0.0 (all IPv4), :: (all IPv6 and IPv4), or one address such as 127.0.0.1.
    # Env: DITTOFS_BIND_ADDRESS (sets every listener's bind).
    bind: 0.0.0.0
    # Largest RPC record accepted, in bytes; a client sending a larger one is disconnected.
    # It bounds READ/WRITE transfer sizes (1MiB of data plus room for headers). 8KiB to 1GiB.
    max_record_size: 1088KiB
    # Replies remembered by the duplicate request cache, so that a retransmitted non-idempotent call
    # (CREATE, REMOVE, RENAME, ...) gets its original reply instead of running twice.
    drc_size: 1024
    # Limits on what clients can make the server hold. Connections served at once; past it, a
    # connection that has not got past its handshake yet (a mount granted, or a call on a file
    # handle the server gave out; a NULL call does not count), older than 1 s, from the address or IPv6 /64
    # with the most such, is closed to make room, else the new one is refused:
    max_connections: 1024
    # Connections from one client address; past it, as above, within that address. Keep it above
    # what one NAT or Kubernetes node in front of many clients opens. 0: no cap.
    max_connections_per_address: 256
    # A connection that has not got past its handshake (as above) this long after it opened is
    # closed (a first call still running is waited for, up to ten times this). 0: never.
    handshake_timeout: 30s
    # A connection with no traffic for this long, while none of its calls is running, is closed
    # (also one whose client stops reading its replies). Clients reconnect by themselves. 0: never.
    idle_timeout: 6m
    # RPC records buffered across all connections, being read or being served. Past it,
    # connections wait before reading more requests. At least max_record_size.
    max_buffered_request_bytes: 256MiB
    # An embedded portmapper (rpcbind) for clients that ask it where NFS and MOUNT are. Not needed
    # when clients are told the ports, as in the mount command above.
    portmapper:
      # Env: DITTOFS_PORTMAPPER_ENABLED.
      enabled: false
      # The standard port is 111, which needs root; env: DITTOFS_PORTMAPPER_PORT.
      port: 10111
  # SMB2 over direct TCP, with NTLM authentication.${
    protocolImplemented('smb') ? '' : '\n  # Not served by this version: the SMB2 engine is not implemented yet, the setting is kept.'
  }
  smb:
    # Env: DITTOFS_SMB_ENABLED.
    enabled: true
    # Env: DITTOFS_SMB_PORT. Example: smbclient //HOST/export -p 12445 -U USER
    port: 12445
    # Listen address, as for NFS. Env: DITTOFS_BIND_ADDRESS.
    bind: 0.0.0.0
    # Require every session to sign its messages (HMAC-SHA256 at SMB 2.x, AES-CMAC or AES-GMAC at
    # 3.x); otherwise sessions sign when the client asks (Windows 11 always does).
    # Env: DITTOFS_SMB_SIGNING_REQUIRED.
    signing_required: false
    # Require every session to encrypt its messages (SMB 3.x, AES-GCM or AES-CCM); otherwise
    # sessions encrypt when the client asks (mount -o seal, smbclient --client-protection=encrypt).
    # Refuses SMB 2.x clients, guests and anonymous. Env: DITTOFS_SMB_ENCRYPTION_REQUIRED.
    encryption_required: false
    # How long an open or write (of either protocol) waits for an SMB client to acknowledge an
    # oplock or lease break before it goes on (MS-SMB2's 35 s at most). Env: DITTOFS_SMB_OPLOCK_BREAK_TIMEOUT.
    oplock_break_timeout: 35s
    # How long an SMB durable open (Windows and Linux clients ask for one on data files) outlives a
    # dropped connection, waiting for its client to reconnect; a conflicting open or NFS change
    # closes it sooner. A v2 open (SMB 3.x) keeps the timeout its client asks, 300 s at most (this
    # one, capped so, when it asks 0). Env: DITTOFS_SMB_DURABLE_HANDLE_TIMEOUT.
    durable_handle_timeout: 16m
    # Limits, as for NFS: connections served at once; past it, a connection with no session yet
    # makes room, else the new one is refused:
    max_connections: 1024
    # Connections from one client address, as for NFS. 0: no cap.
    max_connections_per_address: 256
    # A connection with no session established (logged on) this long after its last request is
    # closed, and at ten times this after it opened in any case. 0: never.
    handshake_timeout: 60s
    # Files one user has open through SMB at once, over all their connections (the server holds
    # 65536 in all); past it, that user's opens fail and the others' still succeed. Pods that share
    # one account share this too.
    max_opens_per_user: 16384
    # A connection with no traffic for this long, while none of its requests is running, is closed
    # (also one whose client stops reading its replies). Clients reconnect by themselves. 0: never.
    idle_timeout: 15m
    # SMB2 frames buffered across all connections, being read or being served. Past it,
    # connections wait before reading more requests. At least 1088KiB (the largest frame).
    max_buffered_request_bytes: 256MiB

# The control plane.
server:
  # The control plane: REST API under /api/v1 (users, groups, stores, shares, permissions,
  # adapters, settings; OpenAPI at /api/v1/openapi.json), /health and /health/ready. Off: the
  # server serves this file's stores and shares only, with no users or permissions.
  api:
    # Env: DITTOFS_API_ENABLED.
    enabled: true
    # Env: DITTOFS_API_PORT.
    port: 8080
    # Listen address, as for NFS. Env: DITTOFS_BIND_ADDRESS.
    bind: 0.0.0.0
    # Key that signs access and refresh tokens (HS256), at least 32 characters. Unset: one is
    # generated at first start and kept in the control database. Env: DITTOFS_JWT_SECRET.
    # jwt_secret: "${SAMPLE_JWT_SECRET}"
    # bcrypt cost of stored passwords (10 to 15).
    bcrypt_cost: 10
    # API connections served at once; past it, one that has not yet carried a request with a valid
    # token (older than 1 s, from the address with the most such) is closed to make room, else the
    # new one is refused:
    max_connections: 1024
    # Connections from one peer address, as above within that address. Counted per TCP peer before
    # any request is read: behind a proxy, the proxy's address (see trust_proxy). 0: no cap.
    max_connections_per_address: 256
    # Behind a reverse proxy, ingress or load balancer: the peers whose X-Forwarded-For header
    # names the client, as a list of addresses and CIDR ranges (or loopback, linklocal,
    # uniquelocal), such as [10.0.0.0/8]. The client is then the header's rightmost address that
    # is not itself listed (list every proxy of the chain); it is what the rate limits without a
    # token and the login limits count. Connections from a listed peer are not capped per address
    # (one proxy carries many clients), only by max_connections. true trusts every peer (so none
    # is capped per address) and takes the header's first address, which clients can write: only
    # where nothing but the proxy reaches the port (the server warns at every start). false: the
    # header is ignored.
    trust_proxy: false
    # Rate limits, per minute (429 past them).
    rate_limit:
      # API requests per minute per client.
      max: 600
      # Login attempts per minute per client address and username.
      login_max: 10
      # Login attempts per minute per client address, whatever the username.
      login_address_max: 60

# The control-plane database. On first start it gets a user "admin" whose password is
# DITTOFS_ADMIN_INITIAL_PASSWORD or, unset, a generated one printed once on stderr (by
# "dittofs start -d" in the background: never in the log file); it must be changed at first login. This file's stores and shares are added to it at every start when
# their names are missing; after that the database (the API, dittofsctl) is the source of truth.
database:
  # embedded (SQLite under data_dir), postgres, or memory (forgotten at exit).
  type: embedded
  # Embedded only: the database directory (default <data_dir>/control).
  # path: ./data/control
  # Postgres only: the connection URL. Env: DITTOFS_DATABASE_URL.
  # url: postgres://dittofs:secret@db.example.com:5432/dittofs
  # Postgres only: schema of the control tables, so they can share a database with metadata stores.
  # schema: dittofs_control
  # Postgres only: pooled connections, 1 to 1000 (default 4).
  # pool_size: 4

# Several servers (replicas) serving the same stores: a PostgreSQL metadata store and one block
# store, with per-file write leases and fencing tokens in a Redis. Without a url each PostgreSQL
# store is served by one server at a time (a second one refuses to start on it), and nothing of
# Redis is used.
coordination:
  # The Redis all replicas share.
  redis:
    # redis://host:6379/0, or rediss:// for TLS. No password in it. Env: DITTOFS_COORDINATION__REDIS__URL.
    # url: redis://redis.example.com:6379/0
    # Prefix of every key and channel, so that several DittoFS can share one Redis.
    key_prefix: "dittofs:"
    # TLS even with a redis:// URL.
    tls: false
    # The password: from a file (a mounted Secret) or from an environment variable, not both.
    # password_file: /etc/dittofs/redis-password
    # password_env: REDIS_PASSWORD
    # A write lease lasts this long unless renewed: a crashed server's files are taken over after it.
    lease_ttl: 10s

# Prometheus metrics at /metrics on their own port.
metrics:
  # Env: DITTOFS_METRICS_ENABLED.
  enabled: true
  # Env: DITTOFS_METRICS_PORT.
  port: 9090
  # Listen address, as for NFS. Env: DITTOFS_BIND_ADDRESS.
  bind: 0.0.0.0

# OpenTelemetry tracing: a span per NFS and MOUNT call, with child spans for the metadata database
# and block store calls it makes, exported over OTLP/HTTP (JSON) to a collector (the OpenTelemetry
# Collector, Jaeger, Tempo, ...).
tracing:
  # Off by default; when off nothing of the tracing SDK is loaded. Env: DITTOFS_TRACING__ENABLED.
  enabled: false
  # The collector's OTLP/HTTP traces URL. Env: DITTOFS_TRACING__ENDPOINT.
  endpoint: http://127.0.0.1:4318/v1/traces
  # The service.name of the spans.
  service_name: dittofs
  # Fraction of traces recorded, 0 to 1 (0.1: one call in ten, with all its child spans).
  sample_ratio: 1

# The write-ahead log (WAL) and caches for file data.
cache:
  # Every write is appended here before it is acknowledged; COMMIT / FILE_SYNC fsync it, and the
  # data reaches the block store in the background. Put it on fast persistent storage (the PVC in
  # Kubernetes). Default: <data_dir>/wal. Env: DITTOFS_WAL_DIR.
  # wal_dir: /var/lib/dittofs/wal
  # Data not yet in the block store; past this, writers wait (they do not fail). Env: DITTOFS_WAL_MAX_BYTES.
  wal_max_bytes: 1GiB
  # Only when every share uses a "memory" block store and server.api is off (no WAL then):
  # unflushed data held in memory.
  # Env: DITTOFS_MAX_DIRTY_BYTES.
  max_dirty_bytes: 256MiB
  # Clean blocks kept in memory for reads. Env: DITTOFS_READ_CACHE_BYTES.
  read_cache_bytes: 64MiB
  # For s3 block stores: blocks uploaded or fetched are also kept on local disk (the same volume as
  # the WAL in Kubernetes), so reading recent data does not go back to S3. Least recently used
  # blocks go first; 0 turns it off. Default dir: <data_dir>/cache. Env: DITTOFS_DISK_CACHE_DIR,
  # DITTOFS_DISK_CACHE_BYTES.
  # disk_cache_dir: /var/lib/dittofs/cache
  disk_cache_bytes: 1GiB

# Named stores, reusable by several shares. Store names: 1 to 63 letters, digits, "-", "_" or ".",
# starting with a letter or digit. When the file defines no stores at all, the two "default" stores
# below are supplied, and, if there is no "shares" key either, the "/export" share too. Every store
# you write needs its "type" (there is no default type).
# Metadata stores hold the directory tree and file attributes: memory, embedded or postgres.
metadata:
  # Store name -> settings.
  stores:
    # A store named "default".
    default:
      # type (required): memory, embedded or postgres.
      # memory: kept in RAM, lost on restart (for tests and throwaway shares).
      # embedded: a database inside the server process (SQLite; PGlite with engine: pglite), in a
      #   local directory; survives restarts. One server process per directory.
      # postgres: an external PostgreSQL server, for durability and sharing; needs "url".
      type: embedded
      # Embedded stores only: the database directory.
      # Default: <data_dir>/metadata/<store name>, here ./data/metadata/default.
      # path: /var/lib/dittofs/metadata/default
      # Embedded stores only: sqlite (default) or pglite. A PGlite store opened as sqlite is moved
      # to SQLite at start-up; its PGlite files are kept in <path>/pgdata.pglite-backup.
      # engine: sqlite
      # Embedded SQLite stores only: commit (default): changes are on disk by the reply to the next
      # COMMIT / stable WRITE / SMB FLUSH and within 100 ms anyway; change: each before its reply.
      # sync: commit
    # A store in memory, lost on restart (uncomment to use; point a share's "metadata" at it):
    # scratch:
    #   type: memory
    # A store in a PostgreSQL server (uncomment to use):
    # pg:
    #   type: postgres
    #   # Required: a postgres:// or postgresql:// URL, libpq style (?sslmode=require works);
    #   # percent-encode special characters in the user name and password ("@" as %40).
    #   # Better kept out of this file: leave "url" out and set DITTOFS_METADATA__STORES__PG__URL
    #   # (the store's name upper-cased, other characters as "_"). The environment can only set keys
    #   # of a store defined here. Passwords are shown as **** by "config show" and in errors.
    #   url: postgres://dittofs:PASSWORD@db.example.com:5432/dittofs
    #   # Pooled connections, 1 to 1000 (default 10).
    #   pool_size: 10
    #   # Schema holding the tables (created if missing), so several stores can share one
    #   # database. Default: the connection's search_path, normally "public".
    #   schema: dittofs
    #   # Timeouts in milliseconds, 1 to 3600000; units work too: 500ms, 5s, 2m, 1h.
    #   # Opening one connection (default 5000).
    #   connect_timeout: 5000
    #   # Longest a statement may run on the server (default 30000).
    #   statement_timeout: 30000
    #   # change (default): every change waits for PostgreSQL's WAL flush before its reply.
    #   # commit: changes are committed with synchronous_commit off, on disk by the reply to the
    #   # next COMMIT / stable WRITE / SMB FLUSH (block maps and lease tokens always before their
    #   # reply) and within 3 x the server's wal_writer_delay anyway; after a PostgreSQL crash in
    #   # between, that COMMIT fails with an I/O error.
    #   sync: change

# Block stores hold file data, cut into blocks: memory, filesystem or s3.
blocks:
  # Store name -> settings.
  stores:
    # A store named "default".
    default:
      # type (required): memory, filesystem or s3.
      # memory: kept in RAM, lost on restart (for tests and throwaway shares).
      # filesystem: one file per block in a local directory.
      # s3: one object per block in an S3 bucket, on AWS or any S3-compatible server; needs "bucket".
      type: filesystem
      # File data is cut into blocks of this size; one block is one object in the store.
      # A power of two from 64KiB to 64MiB.
      block_size: 4MiB
      # Filesystem stores only: the directory for the block files.
      # Default: <data_dir>/blocks/<store name>, here ./data/blocks/default.
      # path: /var/lib/dittofs/blocks
    # A store in an S3 bucket (uncomment to use; point a share's "blocks" at it). At start-up
    # DittoFS checks that the bucket exists and that the credentials are accepted.
    # s3:
    #   type: s3
    #   # Required: the bucket, which must exist already.
    #   bucket: dittofs-blocks
    #   # Objects are stored as PREFIX/KEY, so several stores or clusters can share one bucket.
    #   # Default: no prefix (the top of the bucket).
    #   prefix: cluster-1
    #   # URL of an S3-compatible server (MinIO, Ceph RGW, ...). Leave it out for AWS S3.
    #   endpoint: http://minio.example.com:9000
    #   # The region requests are signed for (default us-east-1; most other servers accept any).
    #   region: us-east-1
    #   # Address objects as ENDPOINT/BUCKET/KEY instead of BUCKET.ENDPOINT/KEY; MinIO and most
    #   # self-hosted servers need true (default false).
    #   force_path_style: true
    #   # Credentials, both or neither. Leave both out to use the standard AWS chain
    #   # (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ~/.aws, web identity, the instance role).
    #   # Better kept out of this file: set DITTOFS_BLOCKS__STORES__S3__SECRET_ACCESS_KEY (the store's
    #   # name upper-cased, other characters as "_"). The secret is shown as **** by "config show"
    #   # and never appears in errors or logs.
    #   access_key_id: AKIAIOSFODNN7EXAMPLE
    #   secret_access_key: SECRET
    #   # Longest one HTTP request may take, in milliseconds, 1 to 3600000; units work too: 30s, 2m
    #   # (default 30000). Connecting alone gives up after at most 10s.
    #   request_timeout: 30000
    #   # Tries per request, 1 to 20, with exponential backoff between them (default 3). S3 has no
    #   # capacity to report: the store says 1 PiB total and free.
    #   max_attempts: 3

# Exports that clients mount. Several shares may use the same stores.
shares:
  # The path clients mount: starts with "/", no trailing "/", no "..", at most 255 bytes, unique.
  - name: /export
    # A store under metadata.stores (default: "default").
    metadata: default
    # A store under blocks.stores (default: "default").
    blocks: default
    # Refuse every change to the share.
    read_only: false
    # Treat requests from uid 0 (root), over NFS and SMB, as anonymous_uid/anonymous_gid.
    root_squash: false
    # The user id for squashed root and for anonymous access (65534 is "nobody").
    anonymous_uid: 65534
    # The group id for squashed root and for anonymous access.
    anonymous_gid: 65534
    # Mode of the share's root directory when it is first created. Modes are always read as
    # octal, quoted or not ("0755", 0755, 755 and 0o755 are the same). The default 0777 lets every
    # client user create files in a fresh share (the root directory is owned by root); use e.g.
    # "0755" with root_uid/root_gid set to the owning user to restrict it.
    root_mode: "0777"
    # Owner of the share's root directory when it is first created.
    root_uid: 0
    # Group of the share's root directory when it is first created.
    root_gid: 0
`;
