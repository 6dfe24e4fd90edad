// Versioned migrations of the control-plane tables, recorded in `control_schema_migrations` so the
// control tables can share a database and schema with a metadata store (whose own migrations are
// in `schema_migrations`; no table names overlap). Append new migrations with the next version;
// never edit one that has shipped. A database newer than this DittoFS is refused.
//
// Every migration has its statements in PostgreSQL's SQL and in SQLite's (the embedded engine):
// the same tables, columns and checks; see dialect.ts for what differs and how it is bridged.
import type { SqlDriver } from '../meta/sql/driver.js';
import { SQLITE_NOW } from './dialect.js';

export interface ControlMigration {
  version: number;
  name: string;
  /** PostgreSQL. */
  statements: readonly string[];
  /** The same change in SQLite's SQL. */
  sqlite: readonly string[];
}

/** Serializes migration runs of several processes on one database (differs from the metadata key). */
const CONTROL_MIGRATION_LOCK_KEY = 0x0d1770c7;

const ROLE_CHECK = `CHECK (role IN ('admin', 'operator', 'user'))`;
const LEVEL_CHECK = (col: string): string => `CHECK (${col} IN ('none', 'read', 'read-write', 'admin'))`;
const ID_CHECK = (col: string): string => `CHECK (${col} BETWEEN 0 AND 4294967294)`;

export const CONTROL_MIGRATIONS: readonly ControlMigration[] = Object.freeze([
  {
    version: 1,
    name: 'users, groups, stores, shares, permissions, adapters, settings',
    statements: [
      // One row; every committed change bumps the generation. Mutations lock this row first, so
      // they run one at a time (the control plane is small and rarely written).
      `CREATE TABLE control_state (
        id         smallint PRIMARY KEY CHECK (id = 1),
        generation bigint NOT NULL
      )`,
      `INSERT INTO control_state (id, generation) VALUES (1, 0)`,
      // Token versions come from one sequence, so a user deleted and created again under the same
      // name never accepts a token issued to the old one.
      `CREATE SEQUENCE token_versions`,
      // uid and gid uniqueness is checked at COMMIT, so one change can swap two users' ids.
      `CREATE TABLE users (
        username             text PRIMARY KEY,
        password_hash        text,
        nt_hash              text,
        uid                  bigint NOT NULL ${ID_CHECK('uid')},
        gid                  bigint NOT NULL ${ID_CHECK('gid')},
        email                text,
        role                 text NOT NULL ${ROLE_CHECK},
        must_change_password boolean NOT NULL DEFAULT false,
        token_version        bigint NOT NULL DEFAULT nextval('token_versions'),
        created_at           timestamptz NOT NULL DEFAULT now(),
        updated_at           timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT users_uid_key UNIQUE (uid) DEFERRABLE INITIALLY DEFERRED
      )`,
      `CREATE TABLE groups (
        name       text PRIMARY KEY,
        gid        bigint NOT NULL ${ID_CHECK('gid')},
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT groups_gid_key UNIQUE (gid) DEFERRABLE INITIALLY DEFERRED
      )`,
      `CREATE TABLE group_members (
        group_name text NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
        username   text NOT NULL REFERENCES users (username) ON DELETE CASCADE,
        PRIMARY KEY (group_name, username)
      )`,
      `CREATE INDEX group_members_username ON group_members (username)`,
      `CREATE TABLE metadata_stores (
        name       text PRIMARY KEY,
        type       text NOT NULL CHECK (type IN ('memory', 'embedded', 'postgres')),
        config     jsonb NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
      )`,
      `CREATE TABLE block_stores (
        name       text PRIMARY KEY,
        type       text NOT NULL CHECK (type IN ('memory', 'filesystem', 's3')),
        config     jsonb NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
      )`,
      // RESTRICT: a store a share uses cannot be deleted.
      `CREATE TABLE shares (
        name               text PRIMARY KEY,
        metadata_store     text NOT NULL REFERENCES metadata_stores (name) ON DELETE RESTRICT,
        block_store        text NOT NULL REFERENCES block_stores (name) ON DELETE RESTRICT,
        read_only          boolean NOT NULL,
        default_permission text NOT NULL ${LEVEL_CHECK('default_permission')},
        root_squash        boolean NOT NULL,
        anonymous_uid      bigint NOT NULL ${ID_CHECK('anonymous_uid')},
        anonymous_gid      bigint NOT NULL ${ID_CHECK('anonymous_gid')},
        root_mode          integer NOT NULL CHECK (root_mode BETWEEN 0 AND 4095),
        root_uid           bigint NOT NULL ${ID_CHECK('root_uid')},
        root_gid           bigint NOT NULL ${ID_CHECK('root_gid')},
        created_at         timestamptz NOT NULL DEFAULT now(),
        updated_at         timestamptz NOT NULL DEFAULT now()
      )`,
      `CREATE INDEX shares_metadata_store ON shares (metadata_store)`,
      `CREATE INDEX shares_block_store ON shares (block_store)`,
      `CREATE TABLE share_permissions (
        share      text NOT NULL REFERENCES shares (name) ON DELETE CASCADE,
        username   text REFERENCES users (username) ON DELETE CASCADE,
        group_name text REFERENCES groups (name) ON DELETE CASCADE,
        level      text NOT NULL ${LEVEL_CHECK('level')},
        CHECK ((username IS NULL) <> (group_name IS NULL))
      )`,
      `CREATE UNIQUE INDEX share_permissions_user ON share_permissions (share, username) WHERE username IS NOT NULL`,
      `CREATE UNIQUE INDEX share_permissions_group ON share_permissions (share, group_name) WHERE group_name IS NOT NULL`,
      `CREATE INDEX share_permissions_username ON share_permissions (username)`,
      `CREATE INDEX share_permissions_group_name ON share_permissions (group_name)`,
      `CREATE TABLE adapters (
        type       text PRIMARY KEY CHECK (type IN ('nfs', 'smb')),
        enabled    boolean NOT NULL,
        port       integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
        updated_at timestamptz NOT NULL DEFAULT now()
      )`,
      // Secrets the server generates for itself (the JWT key when the config gives none); never
      // shown by the API.
      `CREATE TABLE control_secrets (
        name       text PRIMARY KEY,
        value      text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
      )`,
      `CREATE TABLE settings (
        key        text PRIMARY KEY,
        value      jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
      )`,
    ],
    sqlite: [
      `CREATE TABLE control_state (
        id         integer PRIMARY KEY CHECK (id = 1),
        generation integer NOT NULL
      )`,
      `INSERT INTO control_state (id, generation) VALUES (1, 0)`,
      // The sequence: the last token version handed out; the next is one above.
      `CREATE TABLE token_versions (
        id         integer PRIMARY KEY CHECK (id = 1),
        last_value integer NOT NULL
      )`,
      `INSERT INTO token_versions (id, last_value) VALUES (1, 0)`,
      // No UNIQUE on uid: SQLite cannot defer it to COMMIT; the store checks at the end of every
      // change (store.ts checkUniqueIds). A new user without a token version takes the next one.
      `CREATE TABLE users (
        username             text PRIMARY KEY,
        password_hash        text,
        nt_hash              text,
        uid                  integer NOT NULL ${ID_CHECK('uid')},
        gid                  integer NOT NULL ${ID_CHECK('gid')},
        email                text,
        role                 text NOT NULL ${ROLE_CHECK},
        must_change_password integer NOT NULL DEFAULT 0 CHECK (must_change_password IN (0, 1)),
        token_version        integer,
        created_at           text NOT NULL DEFAULT (${SQLITE_NOW}),
        updated_at           text NOT NULL DEFAULT (${SQLITE_NOW})
      )`,
      `CREATE INDEX users_uid ON users (uid)`,
      `CREATE TRIGGER users_token_version AFTER INSERT ON users FOR EACH ROW WHEN NEW.token_version IS NULL
       BEGIN
         UPDATE token_versions SET last_value = last_value + 1;
         UPDATE users SET token_version = (SELECT last_value FROM token_versions) WHERE username = NEW.username;
       END`,
      `CREATE TABLE groups (
        name       text PRIMARY KEY,
        gid        integer NOT NULL ${ID_CHECK('gid')},
        created_at text NOT NULL DEFAULT (${SQLITE_NOW}),
        updated_at text NOT NULL DEFAULT (${SQLITE_NOW})
      )`,
      `CREATE INDEX groups_gid ON groups (gid)`,
      `CREATE TABLE group_members (
        group_name text NOT NULL REFERENCES groups (name) ON DELETE CASCADE,
        username   text NOT NULL REFERENCES users (username) ON DELETE CASCADE,
        PRIMARY KEY (group_name, username)
      )`,
      `CREATE INDEX group_members_username ON group_members (username)`,
      `CREATE TABLE metadata_stores (
        name       text PRIMARY KEY,
        type       text NOT NULL CHECK (type IN ('memory', 'embedded', 'postgres')),
        config     text NOT NULL DEFAULT '{}' CHECK (json_valid(config)),
        created_at text NOT NULL DEFAULT (${SQLITE_NOW}),
        updated_at text NOT NULL DEFAULT (${SQLITE_NOW})
      )`,
      `CREATE TABLE block_stores (
        name       text PRIMARY KEY,
        type       text NOT NULL CHECK (type IN ('memory', 'filesystem', 's3')),
        config     text NOT NULL DEFAULT '{}' CHECK (json_valid(config)),
        created_at text NOT NULL DEFAULT (${SQLITE_NOW}),
        updated_at text NOT NULL DEFAULT (${SQLITE_NOW})
      )`,
      `CREATE TABLE shares (
        name               text PRIMARY KEY,
        metadata_store     text NOT NULL REFERENCES metadata_stores (name) ON DELETE RESTRICT,
        block_store        text NOT NULL REFERENCES block_stores (name) ON DELETE RESTRICT,
        read_only          integer NOT NULL CHECK (read_only IN (0, 1)),
        default_permission text NOT NULL ${LEVEL_CHECK('default_permission')},
        root_squash        integer NOT NULL CHECK (root_squash IN (0, 1)),
        anonymous_uid      integer NOT NULL ${ID_CHECK('anonymous_uid')},
        anonymous_gid      integer NOT NULL ${ID_CHECK('anonymous_gid')},
        root_mode          integer NOT NULL CHECK (root_mode BETWEEN 0 AND 4095),
        root_uid           integer NOT NULL ${ID_CHECK('root_uid')},
        root_gid           integer NOT NULL ${ID_CHECK('root_gid')},
        created_at         text NOT NULL DEFAULT (${SQLITE_NOW}),
        updated_at         text NOT NULL DEFAULT (${SQLITE_NOW})
      )`,
      `CREATE INDEX shares_metadata_store ON shares (metadata_store)`,
      `CREATE INDEX shares_block_store ON shares (block_store)`,
      `CREATE TABLE share_permissions (
        share      text NOT NULL REFERENCES shares (name) ON DELETE CASCADE,
        username   text REFERENCES users (username) ON DELETE CASCADE,
        group_name text REFERENCES groups (name) ON DELETE CASCADE,
        level      text NOT NULL ${LEVEL_CHECK('level')},
        CHECK ((username IS NULL) <> (group_name IS NULL))
      )`,
      `CREATE UNIQUE INDEX share_permissions_user ON share_permissions (share, username) WHERE username IS NOT NULL`,
      `CREATE UNIQUE INDEX share_permissions_group ON share_permissions (share, group_name) WHERE group_name IS NOT NULL`,
      `CREATE INDEX share_permissions_username ON share_permissions (username)`,
      `CREATE INDEX share_permissions_group_name ON share_permissions (group_name)`,
      `CREATE TABLE adapters (
        type       text PRIMARY KEY CHECK (type IN ('nfs', 'smb')),
        enabled    integer NOT NULL CHECK (enabled IN (0, 1)),
        port       integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
        updated_at text NOT NULL DEFAULT (${SQLITE_NOW})
      )`,
      `CREATE TABLE control_secrets (
        name       text PRIMARY KEY,
        value      text NOT NULL,
        created_at text NOT NULL DEFAULT (${SQLITE_NOW})
      )`,
      `CREATE TABLE settings (
        key        text PRIMARY KEY,
        value      text NOT NULL CHECK (json_valid(value)),
        updated_at text NOT NULL DEFAULT (${SQLITE_NOW})
      )`,
    ],
  },
]);

export interface ControlMigrationReport {
  applied: number[];
  version: number;
}

/** Brings the control tables to the newest version, atomically. */
export async function migrateControl(
  driver: SqlDriver,
  migrations: readonly ControlMigration[] = CONTROL_MIGRATIONS,
): Promise<ControlMigrationReport> {
  for (let i = 0; i < migrations.length; i++) {
    if (migrations[i]!.version !== i + 1)
      throw new Error(`control migration versions must be 1, 2, 3, ...; found ${migrations[i]!.version} at position ${i + 1}`);
  }
  const sqlite = driver.dialect === 'sqlite';
  return driver.transaction(async (tx) => {
    // SQLite: the transaction (BEGIN IMMEDIATE) holds the only write lock there is.
    if (!sqlite) await tx.query('SELECT pg_advisory_xact_lock($1)', [CONTROL_MIGRATION_LOCK_KEY]);
    await tx.query(`CREATE TABLE IF NOT EXISTS control_schema_migrations (
      version    integer PRIMARY KEY,
      name       text NOT NULL,
      applied_at ${sqlite ? `text NOT NULL DEFAULT (${SQLITE_NOW})` : 'timestamptz NOT NULL DEFAULT now()'}
    )`);
    const { rows } = await tx.query<{ v: unknown }>('SELECT coalesce(max(version), 0) AS v FROM control_schema_migrations');
    const current = Number(rows[0]?.v ?? 0);
    const newest = migrations.length;
    if (current > newest) {
      throw new Error(
        `the control database schema is at version ${current}, newer than this DittoFS supports (${newest}): upgrade DittoFS`,
      );
    }
    const applied: number[] = [];
    for (const m of migrations.slice(current)) {
      for (const s of sqlite ? m.sqlite : m.statements) await tx.query(s);
      await tx.query('INSERT INTO control_schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
      applied.push(m.version);
    }
    return { applied, version: Math.max(current, newest) };
  });
}
