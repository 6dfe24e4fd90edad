// The SQL metadata engine: one implementation of MetadataStore over a SqlDriver, shared by the
// `embedded` (PGlite) and `postgres` (pg) engines. Semantics mirror the memory engine exactly.
//
// Concurrency: every multi-row change is one transaction at READ COMMITTED that first locks the
// inode rows it will change (directories and the entries' children) with one
// `SELECT ... ORDER BY id FOR NO KEY UPDATE`, so locks are always taken in ascending id order and
// these operations do not deadlock one another (create locks its one directory through the UPDATE
// that takes a cookie). Entries are read once before locking (to know which children to lock) and
// again after; if they changed in between, the transaction runs again. A directory's entries change
// only under its row lock, so once it is held, what we read stays true until COMMIT: concurrent
// creates of one name give one success and EXIST for the others. NO KEY UPDATE (not UPDATE) lets
// the foreign-key checks of other transactions' entry inserts proceed without waiting.
//
// Moving a directory to another parent also locks the target's path to the root FOR SHARE (taken
// after the rows above, so two such moves can deadlock; PostgreSQL aborts one and it runs again):
// that is what keeps two crossing moves, in any processes, from both passing the cycle check.
import { unlinkCounts } from '../links.js';
import { VfsError, expectedError, isVfsError } from '../../vfs/errors.js';
import { randomGeneration } from '../../vfs/handle.js';
import type { AttrChanges, DirEntry, Inode, NewInode, Timespec } from '../../vfs/types.js';
import { DOS_ATTRS_STORED, FileType } from '../../vfs/types.js';
import {
  BlockConflictError,
  type BlockRef,
  type BlockSwitch,
  type CreateResult,
  type InodeMetaChange,
  type InodeMetaKind,
  type InodeMetaLimits,
  type InodeMetaRecord,
  type MetadataStore,
  type ReaddirPage,
  type RemoveResult,
  NamesChangedError,
  type RenameExpect,
  type RenameResult,
  type ShareUsage,
  type StreamEntry,
  MAX_STREAMS_PER_FILE,
} from '../store.js';
import {
  CommitUncertainError,
  RetryTransaction,
  SQLSTATE,
  SyncLostError,
  errorMessage,
  isConnectionError,
  sqlState,
  type QueryOptions,
  type QueryResult,
  type SqlDriver,
  type SqlExecutor,
  type SqlRow,
  type Statement,
} from './driver.js';
import { FenceLostError } from './fence.js';
import { migrate, type Migration, type MigrationReport } from './migrations.js';
import { inodeColumns, inodeRow, publicInode, toBool, toBuffer, toNumber, type InodeRow } from './rows.js';

const COLS = inodeColumns();
/** The newest token inode $1's data was stored (any block) or cut (its fence) under; 0: none. */
const DATA_TOKEN = `greatest(coalesce((SELECT max(token) FROM blocks WHERE inode = $1), 0),
                             coalesce((SELECT token FROM file_fences WHERE inode = $1), 0))`;
/** The newest token inode $1's data was stored or cut under, or its size stored under (size_token). */
const NEWEST_TOKEN = `greatest(${DATA_TOKEN}, coalesce((SELECT size_token FROM inodes WHERE id = $1), 0))`;
const DIR = FileType.DIR;

const ANCESTORS = `WITH RECURSIVE up (id) AS (
    SELECT $1::bigint
    UNION
    SELECT p.id FROM up CROSS JOIN LATERAL (SELECT d.parent AS id FROM dirents d WHERE d.child = up.id LIMIT 1) p
  )`;

/**
 * Named statements: the pg driver prepares each once per connection. sqlite-dialect.ts has each in
 * SQLite's dialect, under the same key.
 */
export const S = {
  getInode: { name: 'dfs_get_inode', text: `SELECT ${COLS} FROM inodes WHERE id = $1` },
  lookup: {
    name: 'dfs_lookup',
    text: `SELECT p.type AS p_type, ${inodeColumns('i')}
           FROM inodes p
           LEFT JOIN dirents d ON d.parent = p.id AND d.name = $2
           LEFT JOIN inodes i ON i.id = d.child
           WHERE p.id = $1`,
  },
  readdir: {
    name: 'dfs_readdir',
    text: `SELECT p.type AS p_type, e.*
           FROM inodes p
           LEFT JOIN LATERAL (
             SELECT d.name AS d_name, d.cookie AS d_cookie, ${inodeColumns('i')}
             FROM dirents d JOIN inodes i ON i.id = d.child
             WHERE d.parent = p.id AND d.cookie > $2
             ORDER BY d.cookie
             LIMIT $3
           ) e ON true
           WHERE p.id = $1
           ORDER BY e.d_cookie`,
  },
  lockInodes: {
    name: 'dfs_lock_inodes',
    text: `SELECT ${COLS} FROM inodes WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE`,
  },
  entries2: {
    name: 'dfs_entries2',
    text: `SELECT parent, name, child FROM dirents WHERE (parent = $1 AND name = $2) OR (parent = $3 AND name = $4)`,
  },
  // A directory and its ancestors up to the share root, along the entries that name them (one per
  // directory; the root has none). Each step is one probe of the dirents_child index: a LATERAL
  // subquery with LIMIT (never flattened), because a plain join gets planned as a hash join over
  // all of dirents, once per level (seconds for a few thousand levels).
  // UNION (not UNION ALL) ends the walk even on a tree that already holds a cycle.
  ancestors: { name: 'dfs_ancestors', text: `${ANCESTORS} SELECT id FROM up` },
  // The same walk, locking every inode on the path FOR SHARE: a move of any of them needs
  // NO KEY UPDATE on it (rename locks what it moves) and so waits until this transaction ends.
  lockAncestors: {
    name: 'dfs_lock_ancestors',
    text: `${ANCESTORS} SELECT id FROM inodes WHERE id = ANY (ARRAY(SELECT id FROM up)) ORDER BY id FOR SHARE`,
  },
  hasEntries: { name: 'dfs_has_entries', text: `SELECT EXISTS (SELECT 1 FROM dirents WHERE parent = $1) AS e` },
  insertDirent: { name: 'dfs_insert_dirent', text: `INSERT INTO dirents (parent, name, cookie, child) VALUES ($1, $2, $3, $4)` },
  deleteDirent: { name: 'dfs_delete_dirent', text: `DELETE FROM dirents WHERE parent = $1 AND name = $2` },
  deleteInodes: { name: 'dfs_delete_inodes', text: `DELETE FROM inodes WHERE id = ANY($1::bigint[])` },
  writeInodes: {
    name: 'dfs_write_inodes',
    text: `UPDATE inodes AS t
           SET nlink = v.nlink, parent = v.parent, next_cookie = v.next_cookie,
               mtime_sec = v.mtime_sec, mtime_nsec = v.mtime_nsec, ctime_sec = v.ctime_sec, ctime_nsec = v.ctime_nsec
           FROM unnest($1::bigint[], $2::integer[], $3::bigint[], $4::bigint[], $5::bigint[], $6::integer[], $7::bigint[], $8::integer[])
                AS v (id, nlink, parent, next_cookie, mtime_sec, mtime_nsec, ctime_sec, ctime_nsec)
           WHERE t.id = v.id`,
  },
  // create: lock and update the directory in one statement (rolled back if the name exists) ...
  // CREATE in one statement, so in one round trip: the directory row is updated (locked) only
  // when the name is free, then the inode and its entry are inserted. A concurrent create of the
  // same name fails on the (parent, name) key and the whole statement is undone. No row back:
  // the name is taken, or the directory is gone or not a directory (create() tells which).
  // Otherwise the new inode (`made` 1), then the directory as changed (`made` 0), so that the
  // caller need not read it again for the reply (SQLite's form returns the same two rows).
  createOne: {
    name: 'dfs_create_one',
    text: `WITH d AS (
             UPDATE inodes
             SET next_cookie = next_cookie + 1, nlink = nlink + $20::integer,
                 mtime_sec = $15::bigint, mtime_nsec = $16::integer, ctime_sec = $15::bigint, ctime_nsec = $16::integer
             WHERE id = $1::bigint AND type = ${DIR}
               AND NOT EXISTS (SELECT 1 FROM dirents WHERE parent = $1::bigint AND name = $2::bytea)
             RETURNING ${COLS}, next_cookie - 1 AS cookie
           ), i AS (
             INSERT INTO inodes (share_id, type, mode, uid, gid, size, nlink, rdev_major, rdev_minor,
                                 atime_sec, atime_nsec, mtime_sec, mtime_nsec, ctime_sec, ctime_nsec,
                                 generation, parent, target, create_verifier, btime_sec, btime_nsec, dos_attrs)
             SELECT d.share_id, $3::smallint, $4::integer, $5::bigint, $6::bigint, $7::bigint, $8::integer,
                    $9::integer, $10::integer, $11::bigint, $12::integer, $13::bigint, $14::integer,
                    $15::bigint, $16::integer, $21::bigint, $17::bigint, $18::bytea, $19::bytea,
                    $22::bigint, $23::integer, $24::integer
             FROM d
             RETURNING ${COLS}
           ), e AS (
             INSERT INTO dirents (parent, name, cookie, child) SELECT $1::bigint, $2::bytea, d.cookie, i.id FROM d, i
           )
           SELECT i.*, 1 AS made FROM i
           UNION ALL SELECT ${COLS}, 0 FROM d WHERE EXISTS (SELECT 1 FROM i)`,
  },
  // REMOVE of a non-directory in one statement (one round trip): the entry is read, the directory
  // and the child locked in id order (as Work.lock does), then the entry deleted only if it still
  // names that child; the directory's times, the child's link count, and at its last link the
  // child, its streams and their inodes, all depend on that delete. The first row returned is the
  // child as locked, before the change (`blocks`: whether it had any), with `removed` 0 when nothing was done (no such entry, a
  // directory, not the file $5 when given, or the entry changed since the statement's snapshot): remove() then takes the
  // transactional path, which gives the exact answer. Foreign keys are checked at the statement's
  // end, when the entry and stream rows are gone with their inodes. A second row (`removed` 2) is
  // the directory as changed, so that the caller need not read it again. Every row is reached through an
  // index (`= ANY (ARRAY(...))`, not `OR ... IN`, which plans as a scan of all inodes).
  removeFile: {
    name: 'dfs_remove_file',
    text: `WITH e AS (SELECT child FROM dirents WHERE parent = $1::bigint AND name = $2::bytea),
           l AS (SELECT ${COLS} FROM inodes WHERE id = $1::bigint OR id = (SELECT child FROM e) ORDER BY id FOR NO KEY UPDATE),
           ok AS (SELECT c.* FROM l c JOIN l p ON p.id = $1::bigint AND p.type = ${DIR}
                  WHERE c.id = (SELECT child FROM e) AND c.id <> $1::bigint AND c.type <> ${DIR}
                    AND ($5::bigint IS NULL OR c.id = $5::bigint)),
           d AS (DELETE FROM dirents WHERE parent = $1::bigint AND name = $2::bytea AND child = (SELECT id FROM ok) RETURNING child),
           pu AS (UPDATE inodes SET mtime_sec = $3::bigint, mtime_nsec = $4::integer, ctime_sec = $3::bigint, ctime_nsec = $4::integer
                  WHERE id = $1::bigint AND EXISTS (SELECT 1 FROM d) RETURNING ${COLS}),
           cu AS (UPDATE inodes SET nlink = nlink - 1, ctime_sec = $3::bigint, ctime_nsec = $4::integer
                  WHERE id = (SELECT child FROM d) AND (SELECT nlink FROM ok) > 1),
           st AS (DELETE FROM streams WHERE file = (SELECT child FROM d) AND (SELECT nlink FROM ok) <= 1 RETURNING inode),
           ci AS (DELETE FROM inodes WHERE id = ANY (ARRAY(SELECT child FROM d WHERE (SELECT nlink FROM ok) <= 1 UNION ALL SELECT inode FROM st)))
           SELECT ok.*, (SELECT count(*) FROM d) AS removed, ARRAY(SELECT inode FROM st ORDER BY inode) AS streams,
                  EXISTS (SELECT 1 FROM blocks WHERE inode = (SELECT child FROM d)) AS blocks FROM ok
           UNION ALL SELECT pu.*, 2, NULL, NULL FROM pu`,
  },
  rootOf: { name: 'dfs_root_of', text: `SELECT root FROM share_roots WHERE share_id = $1` },
  insertRootInode: {
    name: 'dfs_insert_root_inode',
    text: `INSERT INTO inodes (share_id, type, mode, uid, gid, size, nlink, rdev_major, rdev_minor,
                               atime_sec, atime_nsec, mtime_sec, mtime_nsec, ctime_sec, ctime_nsec,
                               generation, parent, target, create_verifier, btime_sec, btime_nsec, dos_attrs)
           VALUES ($1, ${DIR}, $2, $3, $4, $5, 2, $6, $7, $8, $9, $10, $11, $12, $13, $16, 0, $14, $15, $17, $18, $19)
           RETURNING id`,
  },
  setRootParent: { name: 'dfs_set_root_parent', text: `UPDATE inodes SET parent = id WHERE id = $1 RETURNING ${COLS}` },
  insertShareRoot: {
    name: 'dfs_insert_share_root',
    text: `INSERT INTO share_roots (share_id, root) VALUES ($1, $2) ON CONFLICT (share_id) DO NOTHING RETURNING root`,
  },
  setAttr: {
    name: 'dfs_set_attr',
    text: `UPDATE inodes SET
             mode = coalesce($2::integer, mode) & ~coalesce($19::integer, 0),
             uid = coalesce($3::bigint, uid),
             gid = coalesce($4::bigint, gid),
             size = greatest(coalesce($5::bigint, size), $6::bigint),
             atime_sec = coalesce($7::bigint, atime_sec), atime_nsec = coalesce($8::integer, atime_nsec),
             mtime_sec = coalesce($9::bigint, mtime_sec), mtime_nsec = coalesce($10::integer, mtime_nsec),
             ctime_sec = coalesce($11::bigint, ctime_sec), ctime_nsec = coalesce($12::integer, ctime_nsec),
             btime_sec = coalesce($16::bigint, btime_sec), btime_nsec = coalesce($17::integer, btime_nsec),
             dos_attrs = coalesce($18::integer, dos_attrs),
             create_verifier = CASE WHEN $13::boolean THEN NULL ELSE create_verifier END,
             size_token = greatest(size_token, coalesce($20::bigint, 0), coalesce($21::bigint, 0))
           WHERE id = $1 AND ($14::bigint IS NULL OR (ctime_sec = $14::bigint AND ctime_nsec = $15::integer))
             AND ($20::bigint IS NULL OR greatest(${DATA_TOKEN}, size_token) <= $20::bigint)
           RETURNING ${COLS}`,
  },
  exists: { name: 'dfs_exists', text: `SELECT 1 AS x FROM inodes WHERE id = $1` },
  // Streams: one row with f_id (and NULL stream columns) when the file exists but has none.
  listStreams: {
    name: 'dfs_list_streams',
    text: `SELECT f.id AS f_id, s.name AS s_name, ${inodeColumns('i')}
           FROM inodes f LEFT JOIN streams s ON s.file = f.id LEFT JOIN inodes i ON i.id = s.inode
           WHERE f.id = $1 ORDER BY s.name`,
  },
  lookupStream: {
    name: 'dfs_lookup_stream',
    text: `SELECT f.id AS f_id, ${inodeColumns('i')}
           FROM inodes f LEFT JOIN streams s ON s.file = f.id AND s.name = $2 LEFT JOIN inodes i ON i.id = s.inode
           WHERE f.id = $1`,
  },
  // One statement: the file row locked (a concurrent remove of the file waits, or has committed
  // and there is no row), the count checked, the inode and its stream row inserted, the file's
  // ctime moved. A concurrent create of the same name fails on the (file, name) key.
  createStream: {
    name: 'dfs_create_stream',
    text: `WITH f AS (SELECT id, share_id FROM inodes WHERE id = $1::bigint FOR NO KEY UPDATE),
           i AS (
             INSERT INTO inodes (share_id, type, mode, uid, gid, size, nlink, rdev_major, rdev_minor,
                                 atime_sec, atime_nsec, mtime_sec, mtime_nsec, ctime_sec, ctime_nsec,
                                 generation, parent, target, create_verifier, btime_sec, btime_nsec, dos_attrs)
             SELECT f.share_id, ${FileType.REG}, $3::integer, $4::bigint, $5::bigint, 0, 1, 0, 0,
                    $6::bigint, $7::integer, $6::bigint, $7::integer, $6::bigint, $7::integer,
                    $8::bigint, 0, NULL, NULL, $6::bigint, $7::integer, $9::integer
             FROM f
             WHERE (SELECT count(*) FROM streams WHERE file = $1::bigint) < $10::integer
               AND NOT EXISTS (SELECT 1 FROM streams WHERE file = $1::bigint AND name = $2::bytea)
             RETURNING ${COLS}
           ), s AS (
             INSERT INTO streams (file, name, inode) SELECT $1::bigint, $2::bytea, i.id FROM i
           ), u AS (
             UPDATE inodes SET ctime_sec = $6::bigint, ctime_nsec = $7::integer WHERE id = $1::bigint AND EXISTS (SELECT 1 FROM i)
           )
           SELECT * FROM i`,
  },
  isStream: {
    name: 'dfs_is_stream',
    text: `SELECT EXISTS (SELECT 1 FROM streams WHERE inode = $1) AS stream`,
  },
  streamTaken: {
    name: 'dfs_stream_taken',
    text: `SELECT EXISTS (SELECT 1 FROM streams WHERE file = $1 AND name = $2) AS taken`,
  },
  removeStream: {
    name: 'dfs_remove_stream',
    text: `WITH s AS (DELETE FROM streams WHERE file = $1::bigint AND name = $2::bytea RETURNING inode),
           d AS (DELETE FROM inodes WHERE id IN (SELECT inode FROM s) RETURNING ${COLS}),
           u AS (UPDATE inodes SET ctime_sec = $3::bigint, ctime_nsec = $4::integer WHERE id = $1::bigint AND EXISTS (SELECT 1 FROM s))
           SELECT * FROM d`,
  },
  deleteStreamsOf: {
    name: 'dfs_delete_streams_of',
    text: `DELETE FROM streams WHERE file = ANY($1::bigint[]) RETURNING file, inode`,
  },
  // Per-inode records (migration 5). One row with f_id (and NULL record columns) when the inode exists but has none.
  getMeta: {
    name: 'dfs_get_meta',
    text: `SELECT f.id AS f_id, m.name AS m_name, m.value AS m_value
           FROM inodes f LEFT JOIN inode_meta m ON m.inode = f.id AND m.kind = $2
           WHERE f.id = $1 ORDER BY m.name`,
  },
  lockInode: { name: 'dfs_lock_inode', text: `SELECT id FROM inodes WHERE id = $1 FOR NO KEY UPDATE` },
  putMeta: {
    name: 'dfs_put_meta',
    text: `INSERT INTO inode_meta (inode, kind, name, value) VALUES ($1, $2, $3, $4)
           ON CONFLICT (inode, kind, name) DO UPDATE SET value = excluded.value`,
  },
  deleteMeta: { name: 'dfs_delete_meta', text: `DELETE FROM inode_meta WHERE inode = $1 AND kind = $2 AND name = $3` },
  metaTotals: {
    name: 'dfs_meta_totals',
    text: `SELECT count(*) AS n, coalesce(sum(length(name) + length(value)), 0) AS bytes FROM inode_meta WHERE inode = $1 AND kind = $2`,
  },
  touchCtime: { name: 'dfs_touch_ctime', text: `UPDATE inodes SET ctime_sec = $2, ctime_nsec = $3 WHERE id = $1` },
  // store.ts metaRecordSize, summed per inode.
  metaSizes: {
    name: 'dfs_meta_sizes',
    text: `SELECT inode, sum((9 + length(name) + length(value) + 3) / 4 * 4) AS size
           FROM inode_meta WHERE inode = ANY($1::bigint[]) AND kind = $2 GROUP BY inode`,
  },
  getBlocks: {
    name: 'dfs_get_blocks',
    text: `SELECT idx, key, length, version FROM blocks WHERE inode = $1 AND idx >= $2 AND idx < $3 ORDER BY idx`,
  },
  // One statement (one round trip, atomic on its own): the row as it was, locked, and the new one in
  // its place. Both parts see the row as it was before the statement.
  putBlock: {
    name: 'dfs_put_block',
    text: `WITH old AS (SELECT key, length, version FROM blocks WHERE inode = $1 AND idx = $2 FOR UPDATE),
           put AS (INSERT INTO blocks (inode, idx, key, length, version) VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (inode, idx) DO UPDATE SET key = EXCLUDED.key, length = EXCLUDED.length, version = EXCLUDED.version)
           SELECT key, length, version FROM old`,
  },
  // A block switch as a compare-and-swap (one statement, one round trip): applied only while the
  // row is at version $7 (0: no row) and neither the row nor the file's last truncate carries a
  // token newer than $6. A concurrent insert of the same new row fails the ON CONFLICT condition.
  casBlock: {
    name: 'dfs_cas_block',
    text: `WITH old AS (SELECT key, length, version, token FROM blocks WHERE inode = $1 AND idx = $2 FOR UPDATE),
           fence AS (SELECT coalesce((SELECT token FROM file_fences WHERE inode = $1), 0) AS token),
           ok AS (SELECT coalesce((SELECT version FROM old), 0) = $7::integer
                         AND coalesce((SELECT token FROM old), 0) <= $6::bigint
                         AND (SELECT token FROM fence) <= $6::bigint AS ok),
           put AS (INSERT INTO blocks (inode, idx, key, length, version, token)
                   SELECT $1, $2, $3, $4, $5, $6 FROM ok WHERE ok.ok
                   ON CONFLICT (inode, idx) DO UPDATE SET key = EXCLUDED.key, length = EXCLUDED.length,
                     version = EXCLUDED.version, token = EXCLUDED.token
                   WHERE blocks.version = $7::integer AND blocks.token <= EXCLUDED.token
                   RETURNING 1)
           SELECT (SELECT count(*) FROM put) AS applied, old.key, old.length, old.version,
                  (coalesce(old.token, 0) > $6::bigint OR (SELECT token FROM fence) > $6::bigint) AS stale
           FROM (SELECT 1) one LEFT JOIN old ON true`,
  },
  // The fence raised to $2 (never lowered), the row locked until the transaction ends: returns the
  // fence as it is now, newer than $2 when another truncate cut the file under a newer token.
  fenceFile: {
    name: 'dfs_fence_file',
    text: `INSERT INTO file_fences (inode, token) VALUES ($1, $2)
           ON CONFLICT (inode) DO UPDATE SET token = greatest(file_fences.token, EXCLUDED.token)
           RETURNING token`,
  },
  nextLeaseToken: { name: 'dfs_next_lease_token', text: `SELECT nextval('lease_tokens') AS t` },
  // The identity's sequence taken up to $1 (never back: nextval from other servers meanwhile only
  // moves it further). One nextval per id short of it: a crash loses at most a few seconds of creates.
  reserveInodeIds: {
    name: 'dfs_reserve_inode_ids',
    text: `SELECT count(nextval(pg_get_serial_sequence('inodes', 'id'))) AS n
           FROM generate_series(1, $1::bigint - coalesce(pg_sequence_last_value(pg_get_serial_sequence('inodes', 'id')::regclass), 0))`,
  },
  leaseTokensIssued: { name: 'dfs_lease_tokens_issued', text: `SELECT is_called AS issued FROM lease_tokens` },
  fileToken: {
    name: 'dfs_file_token',
    text: `SELECT ${NEWEST_TOKEN} AS t`,
  },
  dropBlocks: {
    name: 'dfs_drop_blocks',
    text: `DELETE FROM blocks WHERE inode = $1 AND idx >= $2 RETURNING idx, key, length, version, token`,
  },
  usage: {
    name: 'dfs_usage',
    text: `SELECT count(*) AS files, coalesce(sum(size), 0) AS bytes FROM inodes WHERE share_id = $1`,
  },
} as const satisfies Record<string, Statement>;

const copyTs = (t: Timespec): Timespec => ({ sec: t.sec, nsec: t.nsec });

function blockRef(r: Record<string, unknown>): BlockRef {
  return {
    index: toNumber(r.idx, 'idx'),
    key: String(r.key),
    length: toNumber(r.length, 'length'),
    version: toNumber(r.version, 'version'),
  };
}

/** A change (a truncate's cut or size) under lease `token` of a file stored or cut under a newer one since (nothing changed). */
function staleLease(inodeId: number, token: number): BlockConflictError {
  return new BlockConflictError(`inode ${inodeId} was stored or cut under a newer write lease than ${token}`, true);
}

/**
 * A database that cannot be reached (after the driver's bounded retries), or a COMMIT whose outcome
 * is unknown, is JUKEBOX to the file service: "try again later", not a server fault.
 */
function unavailable(e: unknown): unknown {
  if (isVfsError(e)) return e;
  if (e instanceof CommitUncertainError || isConnectionError(e))
    return new VfsError('JUKEBOX', `metadata store unavailable: ${errorMessage(e)}`);
  // Not served by this process now (fence.ts): "try again later" too, never a write.
  if (e instanceof FenceLostError) return new VfsError('JUKEBOX', e.message);
  // Changes answered earlier may be gone: an error, never "try again" (a retried COMMIT would pass).
  if (e instanceof SyncLostError) return new VfsError('IO', e.message);
  return e;
}

/** The records of a getMeta row set (STALE when there is no row: no such inode). */
function metaRecords(rows: readonly SqlRow[], inodeId: number): InodeMetaRecord[] {
  if (rows.length === 0) throw new VfsError('STALE', `inode ${inodeId} does not exist`);
  const out: InodeMetaRecord[] = [];
  for (const r of rows) {
    if (r.m_name === null || r.m_name === undefined) continue;
    out.push({ name: toBuffer(r.m_name, 'name'), value: toBuffer(r.m_value, 'value') });
  }
  return out;
}

/** Runs `fn`, turning a unique violation (a name taken concurrently) into EXIST. */
async function mapUnique<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (sqlState(e) === SQLSTATE.UNIQUE_VIOLATION) throw expectedError('EXIST', 'name exists');
    throw e;
  }
}

/**
 * The locked rows of one transaction and the changes to write back: the SQL twin of the memory
 * engine's in-place updates. Entry inserts and deletes run at once (their order matters to the
 * unique key); inode changes are written by flush() in one statement.
 */
class Work {
  private readonly rows = new Map<number, InodeRow>();
  private readonly dirty = new Set<number>();
  private readonly freed = new Set<number>();
  /** The results handed out for freed inodes: flush() adds the streams removed with them. */
  private readonly results = new Map<number, RemoveResult>();

  constructor(private readonly tx: SqlExecutor) {}

  /** Locks these inodes, in id order; missing ones stay absent (STALE when asked for). */
  async lock(ids: Iterable<number>): Promise<void> {
    const want = [...new Set(ids)].filter((id) => !this.rows.has(id)).sort((a, b) => a - b);
    if (want.length === 0) return;
    const { rows } = await this.tx.query(S.lockInodes, [want]);
    for (const r of rows) {
      const row = inodeRow(r);
      this.rows.set(row.id, row);
    }
  }

  has(id: number): boolean {
    return this.rows.has(id);
  }

  inode(id: number): InodeRow {
    const i = this.rows.get(id);
    if (!i) throw new VfsError('STALE', `inode ${id} does not exist`);
    return i;
  }

  dir(id: number): InodeRow {
    const i = this.inode(id);
    if (i.type !== DIR) throw new VfsError('NOTDIR', `inode ${id} is not a directory`);
    return i;
  }

  /**
   * INVAL when `movingId` is `dirId` or one of its ancestors. The path from `dirId` to the root is
   * locked first and read again afterwards: once the two agree, no directory on it can move until
   * COMMIT, so a concurrent move elsewhere (in this process or another) cannot close a cycle with
   * this one. If the path changed while locking, the transaction runs again.
   */
  async refuseCycle(movingId: number, dirId: number): Promise<void> {
    const locked = await this.tx.query(S.lockAncestors, [dirId]);
    const again = await this.tx.query(S.ancestors, [dirId]);
    const path = new Set(again.rows.map((r) => toNumber(r.id, 'id')));
    if (locked.rows.length !== path.size || !locked.rows.every((r) => path.has(toNumber(r.id, 'id'))))
      throw new RetryTransaction('the path to the root changed while locking it');
    if (path.has(movingId)) throw new VfsError('INVAL', 'cannot move a directory into its own subtree');
  }

  async isEmpty(dirId: number): Promise<boolean> {
    const { rows } = await this.tx.query(S.hasEntries, [dirId]);
    return !toBool(rows[0]?.e, 'e');
  }

  async addEntry(dir: InodeRow, name: Buffer, child: number): Promise<void> {
    const cookie = dir.nextCookie++;
    this.dirty.add(dir.id);
    await mapUnique(() => this.tx.query(S.insertDirent, [dir.id, name, cookie, child]));
  }

  async dropEntry(dir: InodeRow, name: Buffer): Promise<void> {
    await this.tx.query(S.deleteDirent, [dir.id, name]);
  }

  touch(i: InodeRow, now: Timespec, mtime: boolean): void {
    if (mtime) i.mtime = copyTs(now);
    i.ctime = copyTs(now);
    this.dirty.add(i.id);
  }

  changed(i: InodeRow): void {
    this.dirty.add(i.id);
  }

  /** Unlinks `child` (locked, named `name` in `dir`), maintaining link counts; frees it at the last link. */
  async unlinkChild(dir: InodeRow, name: Buffer, child: InodeRow, now: Timespec): Promise<RemoveResult> {
    await this.dropEntry(dir, name);
    const freed = unlinkCounts(dir, child);
    this.touch(child, now, false);
    this.touch(dir, now, true);
    const result: RemoveResult = { inode: publicInode(child), freed, streams: [] };
    if (freed) {
      this.freed.add(child.id);
      this.results.set(child.id, result);
    }
    // Block refs stay until the caller has freed the objects and called dropBlocks.
    return result;
  }

  /** Writes every changed inode back and deletes the freed ones. */
  async flush(): Promise<void> {
    if (this.freed.size > 0) {
      // Streams go with their file (their rows first: they reference both inodes).
      const st = await this.tx.query(S.deleteStreamsOf, [[...this.freed]]);
      const gone = [...this.freed];
      for (const r of st.rows) {
        const streamId = toNumber(r.inode, 'inode');
        gone.push(streamId);
        this.results.get(toNumber(r.file, 'file'))?.streams.push(streamId);
      }
      for (const r of this.results.values()) r.streams.sort((a, b) => a - b);
      await this.tx.query(S.deleteInodes, [gone]);
    }
    const rows = [...this.dirty].filter((id) => !this.freed.has(id)).map((id) => this.inode(id));
    if (rows.length === 0) return;
    await this.tx.query(S.writeInodes, [
      rows.map((r) => r.id),
      rows.map((r) => r.nlink),
      rows.map((r) => r.parent),
      rows.map((r) => r.nextCookie),
      rows.map((r) => r.mtime.sec),
      rows.map((r) => r.mtime.nsec),
      rows.map((r) => r.ctime.sec),
      rows.map((r) => r.ctime.nsec),
    ]);
  }
}

export interface SqlMetadataStoreOptions {
  kind: 'embedded' | 'postgres';
  /** Opens the connection(s); called by open(). */
  connect: () => Promise<SqlDriver>;
  /** For tests: a different migration list. */
  migrations?: readonly Migration[];
  /** Undefined while this process may serve the store (postgres: holds its fence); see MetadataStore.whenServing. */
  serving?: () => Promise<void> | undefined;
}

/** The parameters of S.setAttr. */
function setAttrParams(id: number, c: AttrChanges, guardCtime?: Timespec): unknown[] {
  return [
    id,
    c.mode === undefined ? null : c.mode & 0o7777,
    c.uid ?? null,
    c.gid ?? null,
    c.size ?? null,
    c.growTo ?? null,
    c.atime?.sec ?? null,
    c.atime?.nsec ?? null,
    c.mtime?.sec ?? null,
    c.mtime?.nsec ?? null,
    c.ctime?.sec ?? null,
    c.ctime?.nsec ?? null,
    c.clearCreateVerifier === true,
    guardCtime?.sec ?? null,
    guardCtime?.nsec ?? null,
    c.btime?.sec ?? null,
    c.btime?.nsec ?? null,
    c.dosAttrs === undefined ? null : c.dosAttrs & DOS_ATTRS_STORED,
    c.clearMode === undefined ? null : c.clearMode & 0o7777,
    c.leaseToken ?? null,
    c.sizeToken ?? null,
  ];
}

export class SqlMetadataStore implements MetadataStore {
  readonly kind: 'embedded' | 'postgres';
  private db: SqlDriver | null = null;
  /** What open() did to the schema. */
  migration: MigrationReport | null = null;

  constructor(private readonly opts: SqlMetadataStoreOptions) {
    this.kind = opts.kind;
  }

  get storeId(): string | undefined {
    return this.migration?.storeId;
  }

  async open(): Promise<void> {
    if (this.db) return;
    const db = await this.opts.connect();
    try {
      this.migration = await migrate(db, this.opts.migrations);
    } catch (e) {
      await db.close().catch(() => undefined);
      throw e;
    }
    this.db = db;
  }

  async close(): Promise<void> {
    const db = this.db;
    this.db = null;
    if (db) await db.close();
  }

  /** COMMIT, stable writes and SMB FLUSH: every change answered so far is made durable (see SqlDriver.sync). */
  async flushAttrs(): Promise<void> {
    await this.durable();
  }

  failure(): Error | null {
    return this.db?.failure?.() ?? null;
  }

  /**
   * On drivers that answer before their fsync (SqlDriver.sync), waits for it. Block map changes and
   * lease tokens always do: once putBlock answers, the WAL segment holding the data may be deleted,
   * once dropBlocks answers, the objects it returns are; a token must never be handed out twice.
   */
  private async durable(): Promise<void> {
    const db = this.db;
    if (db?.sync) {
      try {
        await db.sync();
      } catch (e) {
        throw unavailable(e);
      }
    }
  }

  whenServing(): Promise<void> | undefined {
    if (!this.db || !this.opts.serving) return undefined;
    const wait = this.opts.serving();
    return wait?.catch((e: unknown) => {
      throw unavailable(e);
    });
  }

  /** The driver, for tests and diagnostics. */
  get driver(): SqlDriver {
    if (!this.db) throw new Error(`${this.kind} metadata store is not open`);
    return this.db;
  }

  async ensureRoot(shareId: number, init: NewInode): Promise<Inode> {
    return this.tx(async (tx) => {
      const existing = await tx.query(S.rootOf, [shareId]);
      if (existing.rows[0]) return this.mustGet(tx, toNumber(existing.rows[0].root, 'root'));
      const now = init.mtime ?? { sec: Math.floor(Date.now() / 1000), nsec: 0 };
      const atime = init.atime ?? now;
      const mtime = init.mtime ?? now;
      const ins = await tx.query(S.insertRootInode, [
        shareId,
        init.mode & 0o7777,
        init.uid,
        init.gid,
        init.size,
        init.rdevMajor,
        init.rdevMinor,
        atime.sec,
        atime.nsec,
        mtime.sec,
        mtime.nsec,
        now.sec,
        now.nsec,
        init.target,
        init.createVerifier,
        randomGeneration(),
        (init.btime ?? now).sec,
        (init.btime ?? now).nsec,
        (init.dosAttrs ?? 0) & DOS_ATTRS_STORED,
      ]);
      const id = toNumber(ins.rows[0]?.id, 'id');
      const root = await tx.query(S.setRootParent, [id]);
      const claimed = await tx.query(S.insertShareRoot, [shareId, id]);
      if (claimed.rows.length === 0) {
        // Another process created the root first (we waited on its key): use that one.
        await tx.query(S.deleteInodes, [[id]]);
        const winner = await tx.query(S.rootOf, [shareId]);
        return this.mustGet(tx, toNumber(winner.rows[0]?.root, 'root'));
      }
      return publicInode(inodeRow(root.rows[0]!));
    });
  }

  /** A transaction; a database that stays unreachable through the driver's retries is JUKEBOX. */
  private async tx<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> {
    try {
      return await this.driver.transaction(fn);
    } catch (e) {
      throw unavailable(e);
    }
  }

  private async q(sql: Statement, params: readonly unknown[], opts?: QueryOptions): Promise<QueryResult<SqlRow>> {
    try {
      return await this.driver.query(sql, params, opts);
    } catch (e) {
      throw unavailable(e);
    }
  }

  private async mustGet(q: SqlExecutor, id: number): Promise<Inode> {
    const { rows } = await q.query(S.getInode, [id]);
    if (!rows[0]) throw new VfsError('STALE', `inode ${id} does not exist`);
    return publicInode(inodeRow(rows[0]));
  }

  async getInode(id: number): Promise<Inode | null> {
    const { rows } = await this.q(S.getInode, [id]);
    return rows[0] ? publicInode(inodeRow(rows[0])) : null;
  }

  private static checkDir(id: number, row: Record<string, unknown> | undefined): void {
    if (!row) throw new VfsError('STALE', `inode ${id} does not exist`);
    if (toNumber(row.p_type, 'type') !== DIR) throw new VfsError('NOTDIR', `inode ${id} is not a directory`);
  }

  async lookup(dirId: number, name: Buffer): Promise<Inode | null> {
    const { rows } = await this.q(S.lookup, [dirId, name]);
    const r = rows[0];
    SqlMetadataStore.checkDir(dirId, r);
    return r && r.id !== null && r.id !== undefined ? publicInode(inodeRow(r)) : null;
  }

  async readdir(dirId: number, afterCookie: number, limit: number): Promise<ReaddirPage> {
    const max = Math.max(0, Math.floor(limit));
    const { rows } = await this.q(S.readdir, [dirId, afterCookie, max + 1]);
    SqlMetadataStore.checkDir(dirId, rows[0]);
    const entries: DirEntry[] = [];
    let more = false;
    for (const r of rows) {
      if (r.d_cookie === null || r.d_cookie === undefined) continue; // empty page: one row of NULLs
      if (entries.length === max) {
        more = true;
        break;
      }
      entries.push({ name: toBuffer(r.d_name, 'name'), cookie: toNumber(r.d_cookie, 'cookie'), inode: publicInode(inodeRow(r)) });
    }
    return { entries, eof: !more };
  }

  async create(dirId: number, name: Buffer, init: NewInode, now: Timespec): Promise<Inode> {
    return (await this.createIn(dirId, name, init, now)).inode;
  }

  async createIn(dirId: number, name: Buffer, init: NewInode, now: Timespec): Promise<CreateResult> {
    const isDir = init.type === DIR;
    const atime = init.atime ?? now;
    const mtime = init.mtime ?? now;
    const params = [
      dirId,
      name,
      init.type,
      init.mode & 0o7777,
      init.uid,
      init.gid,
      init.size,
      isDir ? 2 : 1,
      init.rdevMajor,
      init.rdevMinor,
      atime.sec,
      atime.nsec,
      mtime.sec,
      mtime.nsec,
      now.sec,
      now.nsec,
      isDir ? dirId : 0,
      init.target,
      init.createVerifier,
      isDir ? 1 : 0,
      randomGeneration(),
      (init.btime ?? now).sec,
      (init.btime ?? now).nsec,
      (init.dosAttrs ?? 0) & DOS_ATTRS_STORED,
    ];
    // Not retried when the connection breaks in flight: a second run would answer EXIST.
    const ins = await mapUnique(() => this.q(S.createOne, params, { retryable: false }));
    // Both forms (PostgreSQL's and SQLite's) mark their rows: `made` 1 the inode, 0 the directory.
    const made = ins.rows.find((r) => toNumber(r.made, 'made') === 1);
    if (made) {
      const d = ins.rows.find((r) => toNumber(r.made, 'made') === 0);
      return { inode: publicInode(inodeRow(made)), ...(d ? { dir: publicInode(inodeRow(d)) } : {}) };
    }
    const dir = await this.getInode(dirId);
    if (!dir) throw new VfsError('STALE', `inode ${dirId} does not exist`);
    if (dir.type !== DIR) throw new VfsError('NOTDIR', `inode ${dirId} is not a directory`);
    throw expectedError('EXIST', 'name exists');
  }

  async link(id: number, dirId: number, name: Buffer, now: Timespec): Promise<Inode> {
    return this.tx(async (tx) => {
      const w = new Work(tx);
      await w.lock([dirId, id]);
      const dir = w.dir(dirId);
      const inode = w.inode(id);
      if (inode.type === DIR) throw new VfsError('ISDIR', 'cannot hard-link a directory');
      // A named stream is reached through its file only; an entry would outlive the file's removal.
      const stream = await tx.query(S.isStream, [id]);
      if (toBool(stream.rows[0]?.stream, 'stream')) throw expectedError('INVAL', 'cannot link a named stream');
      const taken = await tx.query(S.entries2, [dirId, name, dirId, name]);
      if (taken.rows.length > 0) throw expectedError('EXIST', 'name exists');
      await w.addEntry(dir, name, id);
      inode.nlink++;
      w.touch(inode, now, false);
      w.touch(dir, now, true);
      await w.flush();
      return publicInode(inode);
    });
  }

  /** The children named (dirA, nameA) and (dirB, nameB), or null where there is no entry. */
  private static async entries(
    tx: SqlExecutor,
    dirA: number,
    nameA: Buffer,
    dirB: number,
    nameB: Buffer,
  ): Promise<[number | null, number | null]> {
    const { rows } = await tx.query(S.entries2, [dirA, nameA, dirB, nameB]);
    let a: number | null = null;
    let b: number | null = null;
    for (const r of rows) {
      const parent = toNumber(r.parent, 'parent');
      const name = toBuffer(r.name, 'name');
      const child = toNumber(r.child, 'child');
      if (parent === dirA && name.equals(nameA)) a = child;
      if (parent === dirB && name.equals(nameB)) b = child;
    }
    return [a, b];
  }

  async remove(dirId: number, name: Buffer, dir: boolean, now: Timespec, expect?: number): Promise<RemoveResult> {
    if (!dir) {
      // Not run again when the connection breaks in flight: a second run would answer NOENT.
      const { rows } = await this.q(S.removeFile, [dirId, name, now.sec, now.nsec, expect ?? null], { retryable: false });
      const r = rows.find((row) => toNumber(row.removed, 'removed') !== 2);
      if (r && toNumber(r.removed, 'removed') === 1) {
        const child = inodeRow(r);
        const freed = unlinkCounts({ nlink: 0 }, child);
        child.ctime = copyTs(now);
        const streams = Array.isArray(r.streams) ? r.streams.map((v: unknown) => toNumber(v, 'stream')) : [];
        const d = rows.find((row) => toNumber(row.removed, 'removed') === 2);
        return {
          inode: publicInode(child),
          freed,
          streams: freed ? streams : [],
          ...(d ? { dir: publicInode(inodeRow(d)) } : {}),
          ...(freed && r.blocks !== undefined && !toBool(r.blocks, 'blocks') ? { noBlocks: true } : {}),
        };
      }
    }
    return this.tx(async (tx) => {
      const w = new Work(tx);
      const [guess] = await SqlMetadataStore.entries(tx, dirId, name, dirId, name);
      await w.lock(guess === null ? [dirId] : [dirId, guess]);
      const parent = w.dir(dirId);
      const [childId] = await SqlMetadataStore.entries(tx, dirId, name, dirId, name);
      if (childId === null) throw new VfsError('NOENT', 'no such entry');
      if (!w.has(childId)) throw new RetryTransaction('entry changed while locking');
      if (expect !== undefined && childId !== expect) throw new NamesChangedError();
      const child = w.inode(childId);
      if (dir) {
        if (child.type !== DIR) throw new VfsError('NOTDIR', 'not a directory');
        if (!(await w.isEmpty(child.id))) throw new VfsError('NOTEMPTY', 'directory not empty');
      } else if (child.type === DIR) {
        throw new VfsError('ISDIR', 'is a directory');
      }
      const result = await w.unlinkChild(parent, name, child, now);
      await w.flush();
      return result;
    });
  }

  async rename(
    fromDir: number,
    fromName: Buffer,
    toDir: number,
    toName: Buffer,
    now: Timespec,
    expect?: RenameExpect,
  ): Promise<RenameResult> {
    return this.tx(async (tx) => {
      const w = new Work(tx);
      const guess = await SqlMetadataStore.entries(tx, fromDir, fromName, toDir, toName);
      await w.lock([fromDir, toDir, ...guess.filter((c): c is number => c !== null)]);
      const from = w.dir(fromDir);
      const to = w.dir(toDir);
      const [srcId, dstId] = await SqlMetadataStore.entries(tx, fromDir, fromName, toDir, toName);
      if (srcId === null) throw new VfsError('NOENT', 'source does not exist');
      if (!w.has(srcId) || (dstId !== null && !w.has(dstId))) throw new RetryTransaction('entries changed while locking');
      if (expect && (srcId !== expect.moving || dstId !== expect.victim)) throw new NamesChangedError();
      const moving = w.inode(srcId);
      if (moving.type === DIR && fromDir !== toDir) await w.refuseCycle(moving.id, toDir);
      let replaced: RemoveResult | null = null;
      if (dstId !== null) {
        if (dstId === srcId) return { replaced: null, moved: srcId }; // two links to one inode: POSIX says do nothing
        const victim = w.inode(dstId);
        if (moving.type === DIR && victim.type !== DIR) throw new VfsError('NOTDIR', 'cannot replace a non-directory with a directory');
        if (moving.type !== DIR && victim.type === DIR) throw new VfsError('ISDIR', 'cannot replace a directory with a non-directory');
        if (victim.type === DIR && !(await w.isEmpty(victim.id))) throw new VfsError('NOTEMPTY', 'destination directory not empty');
        replaced = await w.unlinkChild(to, toName, victim, now);
      }
      await w.dropEntry(from, fromName);
      await w.addEntry(to, toName, moving.id);
      if (moving.type === DIR && fromDir !== toDir) {
        from.nlink--;
        to.nlink++;
        moving.parent = toDir;
        w.changed(from);
        w.changed(to);
      }
      w.touch(moving, now, false);
      w.touch(from, now, true);
      w.touch(to, now, true);
      await w.flush();
      return { replaced, moved: moving.id };
    });
  }

  async setAttr(id: number, c: AttrChanges, guardCtime?: Timespec): Promise<Inode> {
    const params = setAttrParams(id, c, guardCtime);
    // One statement, so atomic on its own. Without a guard it is idempotent (absolute values,
    // max(size, growTo), bits cleared by clearMode) and may run again after a lost connection; with
    // one, a second run would report NOT_SYNC for the first run's own change.
    const { rows } = await this.q(S.setAttr, params, { retryable: guardCtime === undefined });
    if (rows[0]) return publicInode(inodeRow(rows[0]));
    const exists = await this.q(S.exists, [id]);
    if (exists.rows.length === 0) throw new VfsError('STALE', `inode ${id} does not exist`);
    // Refused by the guard or by the lease token (both, possibly): the token is the one to report,
    // as the guard may only have failed for the newer server's change.
    if (c.leaseToken !== undefined && (await this.fileToken(id)) > c.leaseToken) throw staleLease(id, c.leaseToken);
    throw new VfsError('NOT_SYNC', 'ctime guard mismatch');
  }

  async setAttrMany(changes: readonly { id: number; changes: AttrChanges }[]): Promise<(Inode | null)[]> {
    // One transaction: one commit (and, on the embedded engine, one WAL append) for all of them.
    return this.tx(async (tx) => {
      const out: (Inode | null)[] = [];
      for (const x of changes) {
        const { rows } = await tx.query(S.setAttr, setAttrParams(x.id, x.changes));
        out.push(rows[0] ? publicInode(inodeRow(rows[0])) : null);
      }
      return out;
    });
  }

  async listStreams(fileId: number): Promise<StreamEntry[]> {
    const { rows } = await this.q(S.listStreams, [fileId]);
    if (rows.length === 0) throw new VfsError('STALE', `inode ${fileId} does not exist`);
    const out: StreamEntry[] = [];
    for (const r of rows) {
      if (r.s_name === null || r.s_name === undefined) continue;
      out.push({ name: toBuffer(r.s_name, 'name'), inode: publicInode(inodeRow(r)) });
    }
    return out;
  }

  async lookupStream(fileId: number, name: Buffer): Promise<Inode | null> {
    const { rows } = await this.q(S.lookupStream, [fileId, name]);
    const r = rows[0];
    if (!r) throw new VfsError('STALE', `inode ${fileId} does not exist`);
    return r.id !== null && r.id !== undefined ? publicInode(inodeRow(r)) : null;
  }

  async createStream(fileId: number, name: Buffer, init: NewInode, now: Timespec): Promise<Inode> {
    const params = [
      fileId,
      name,
      init.mode & 0o7777,
      init.uid,
      init.gid,
      now.sec,
      now.nsec,
      randomGeneration(),
      (init.dosAttrs ?? 0) & DOS_ATTRS_STORED,
      MAX_STREAMS_PER_FILE,
    ];
    // Not retried when the connection breaks in flight: a second run would answer EXIST.
    const ins = await mapUnique(() => this.q(S.createStream, params, { retryable: false }));
    if (ins.rows[0]) return publicInode(inodeRow(ins.rows[0]));
    if (!(await this.getInode(fileId))) throw new VfsError('STALE', `inode ${fileId} does not exist`);
    const taken = await this.q(S.streamTaken, [fileId, name]);
    if (toBool(taken.rows[0]?.taken, 'taken')) throw new VfsError('EXIST', 'stream exists');
    throw new VfsError('NOSPC', 'too many streams on one file');
  }

  async removeStream(fileId: number, name: Buffer, now: Timespec): Promise<Inode> {
    const { rows } = await this.tx(async (tx) => tx.query(S.removeStream, [fileId, name, now.sec, now.nsec]));
    if (!rows[0]) throw new VfsError('NOENT', 'no such stream');
    return publicInode(inodeRow(rows[0]));
  }

  async getMeta(inodeId: number, kind: InodeMetaKind): Promise<InodeMetaRecord[]> {
    return metaRecords((await this.q(S.getMeta, [inodeId, kind])).rows, inodeId);
  }

  async putMeta(
    inodeId: number,
    kind: InodeMetaKind,
    changes: readonly InodeMetaChange[],
    limits: InodeMetaLimits,
    now?: Timespec,
  ): Promise<InodeMetaRecord[]> {
    const rows = await this.tx(async (tx) => {
      // The inode locked: a concurrent change of its records waits, a remove has committed (no row).
      if ((await tx.query(S.lockInode, [inodeId])).rows.length === 0) throw new VfsError('STALE', `inode ${inodeId} does not exist`);
      for (const c of changes) {
        if (c.value === null) await tx.query(S.deleteMeta, [inodeId, kind, c.name]);
        else await tx.query(S.putMeta, [inodeId, kind, c.name, c.value]);
      }
      const t = (await tx.query(S.metaTotals, [inodeId, kind])).rows[0];
      // Thrown inside the transaction: it rolls back, nothing changed.
      if (toNumber(t?.n ?? 0, 'n') > limits.count || toNumber(t?.bytes ?? 0, 'bytes') > limits.bytes)
        throw new VfsError('NOSPC', 'too much metadata on one file');
      if (now) await tx.query(S.touchCtime, [inodeId, now.sec, now.nsec]);
      return (await tx.query(S.getMeta, [inodeId, kind])).rows;
    });
    await this.durable();
    return metaRecords(rows, inodeId);
  }

  async metaSizes(inodeIds: readonly number[], kind: InodeMetaKind): Promise<Map<number, number>> {
    const out = new Map<number, number>();
    if (inodeIds.length === 0) return out;
    const { rows } = await this.q(S.metaSizes, [[...inodeIds], kind]);
    for (const r of rows) out.set(toNumber(r.inode, 'inode'), toNumber(r.size, 'size'));
    return out;
  }

  async getBlocks(inodeId: number, from: number, to: number): Promise<BlockRef[]> {
    if (to <= from) return [];
    const { rows } = await this.q(S.getBlocks, [inodeId, from, to]);
    return rows.map(blockRef);
  }

  async putBlock(inodeId: number, ref: BlockRef, cas?: BlockSwitch): Promise<BlockRef | null> {
    if (cas) {
      const { rows } = await this.q(S.casBlock, [inodeId, ref.index, ref.key, ref.length, ref.version, cas.token, cas.prevVersion], {
        retryable: false,
      });
      const r = rows[0];
      if (!r || toNumber(r.applied, 'applied') !== 1) {
        const stale = r !== undefined && toBool(r.stale, 'stale');
        throw new BlockConflictError(
          stale
            ? `block ${ref.index} of inode ${inodeId} was stored or cut under a newer write lease than ${cas.token}`
            : `block ${ref.index} of inode ${inodeId} is not at version ${cas.prevVersion} any more`,
          stale,
        );
      }
      await this.durable();
      return r.key === null || r.key === undefined ? null : blockRef({ ...r, idx: ref.index });
    }
    // Not run again when the connection breaks in flight: had the first run committed, the second
    // would report the new key as the one replaced, and the old object would never be deleted. The
    // caller's upload fails instead and is retried whole.
    const { rows } = await this.q(S.putBlock, [inodeId, ref.index, ref.key, ref.length, ref.version], { retryable: false });
    await this.durable();
    return rows[0] ? blockRef({ ...rows[0], idx: ref.index }) : null;
  }

  async dropBlocks(inodeId: number, from: number, token = 0): Promise<BlockRef[]> {
    // A transaction so that a connection lost before COMMIT runs it again rather than losing refs.
    // The embedded engines have no connection to lose, and one statement is atomic on its own: the
    // usual call (every file removed) saves the BEGIN and COMMIT.
    const rows =
      token === 0 && this.kind === 'embedded'
        ? (await this.q(S.dropBlocks, [inodeId, from], { retryable: false })).rows
        : await this.tx(async (tx) => {
            if (token === 0) return (await tx.query(S.dropBlocks, [inodeId, from])).rows;
            // Refused (thrown: the transaction rolls back) when the file was stored or cut under a
            // newer token: the fence (locked from here on), any row, or a row a switch committed
            // while this ran (the delete sees the committed row, not what the first read saw).
            const fence = (await tx.query(S.fenceFile, [inodeId, token])).rows[0];
            const newest = (await tx.query(S.fileToken, [inodeId])).rows[0];
            if (toNumber(fence?.token ?? 0, 'token') > token || toNumber(newest?.t ?? 0, 'token') > token) throw staleLease(inodeId, token);
            const dropped = (await tx.query(S.dropBlocks, [inodeId, from])).rows;
            if (dropped.some((r) => toNumber(r.token ?? 0, 'token') > token)) throw staleLease(inodeId, token);
            return dropped;
          });
    // The wait protects the objects the caller deletes next (and a fence): with neither, as for
    // every empty file removed, there is nothing a power loss could bring back to point at.
    if (rows.length > 0 || token > 0) await this.durable();
    return rows.map(blockRef).sort((a, b) => a.index - b.index);
  }

  async reserveInodeIds(id: number): Promise<void> {
    if (!Number.isSafeInteger(id) || id < 1) return;
    await this.q(S.reserveInodeIds, [id]);
  }

  async nextLeaseToken(): Promise<number> {
    const { rows } = await this.q(S.nextLeaseToken, []);
    await this.durable();
    return toNumber(rows[0]?.t, 'token');
  }

  async leaseTokensIssued(): Promise<boolean> {
    const { rows } = await this.q(S.leaseTokensIssued, []);
    return toBool(rows[0]?.issued, 'issued');
  }

  async fileToken(inodeId: number): Promise<number> {
    const { rows } = await this.q(S.fileToken, [inodeId]);
    return toNumber(rows[0]?.t ?? 0, 'token');
  }

  async usage(shareId: number): Promise<ShareUsage> {
    // A pass over the share's inodes: off the event loop where the driver can (SQLite's worker).
    let rows;
    try {
      ({ rows } = this.driver.readAside ? await this.driver.readAside(S.usage, [shareId]) : await this.driver.query(S.usage, [shareId]));
    } catch (e) {
      throw unavailable(e);
    }
    return { files: toNumber(rows[0]?.files ?? 0, 'files'), bytes: toNumber(rows[0]?.bytes ?? 0, 'bytes') };
  }
}
