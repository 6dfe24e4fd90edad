// The metadata engine's statements (store.ts `S`) in SQLite's dialect, under the same keys: the
// seam where the SQL really differs. The store, its logic and its transactions are one and the same
// for both dialects; only these texts differ.
//
// What differs, and how it is bridged:
// - Parameters are `?n` (PostgreSQL's `$n`), without casts; arrays arrive as JSON text, read with
//   json_each. Booleans are 1 or 0 (rows.ts toBool reads both).
// - Row locks (FOR UPDATE, FOR NO KEY UPDATE, FOR SHARE) are dropped: the store's one connection
//   runs every transaction alone (BEGIN IMMEDIATE), which is stronger than any row lock.
// - SQLite has no data-modifying WITH and no LATERAL. The one-statement operations of the
//   PostgreSQL engine (create, remove of a file, block switch, ...) are short programs of SQLite
//   statements here, which the driver runs atomically (a savepoint): calls into SQLite cost
//   microseconds, not round trips, so nothing is lost by splitting them.
// - greatest() is max(), and the lease token sequence is a one-row table (migration 4).
import { DOS_ATTRS_STORED, FileType } from '../../vfs/types.js';
import { inodeColumns, toNumber } from './rows.js';
import type { SqliteForm, SqliteRunner } from './sqlite.js';
import type { S } from './store.js';

const COLS = inodeColumns();
const COLS_C = inodeColumns('c');
const DIR = FileType.DIR;

/** `a IN (the JSON array in parameter n)`. */
const inJson = (n: number): string => `(SELECT value FROM json_each(?${n}))`;

const INSERT_INODE = `INSERT INTO inodes (share_id, type, mode, uid, gid, size, nlink, rdev_major, rdev_minor,
                      atime_sec, atime_nsec, mtime_sec, mtime_nsec, ctime_sec, ctime_nsec,
                      generation, parent, target, create_verifier, btime_sec, btime_nsec, dos_attrs)`;

const ANCESTORS = `WITH RECURSIVE up (id) AS (
    SELECT ?1
    UNION
    SELECT (SELECT d.parent FROM dirents d WHERE d.child = up.id LIMIT 1) FROM up WHERE up.id IS NOT NULL
  )`;

const num = (v: unknown, what: string): number => toNumber(v, what);

/** The newest token inode ?1's data was stored (any block) or cut (its fence) under; 0: none. */
const DATA_TOKEN = `max(coalesce((SELECT max(token) FROM blocks WHERE inode = ?1), 0),
                        coalesce((SELECT token FROM file_fences WHERE inode = ?1), 0))`;
/** The newest token inode ?1's data was stored or cut under, or its size stored under (size_token). */
const NEWEST_TOKEN = `max(${DATA_TOKEN}, coalesce((SELECT size_token FROM inodes WHERE id = ?1), 0))`;

// The programs' statements with substitutions, made once: the driver finds its prepared statement
// by the text, and a template evaluated per call is a new string to hash in full every time.
const CREATE_TAKE_COOKIE = `UPDATE inodes
     SET next_cookie = next_cookie + 1, nlink = nlink + ?3, mtime_sec = ?4, mtime_nsec = ?5, ctime_sec = ?4, ctime_nsec = ?5
     WHERE id = ?1 AND type = ${DIR} AND NOT EXISTS (SELECT 1 FROM dirents WHERE parent = ?1 AND name = ?2)
     RETURNING ${COLS}, next_cookie - 1 AS cookie`;
const CREATE_INSERT_INODE = `${INSERT_INODE} VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)
     RETURNING ${COLS}`;
const REMOVE_FIND = `SELECT ${COLS_C}, (SELECT type FROM inodes WHERE id = ?1) AS parent_type,
            EXISTS (SELECT 1 FROM streams WHERE file = c.id) AS has_streams,
            EXISTS (SELECT 1 FROM blocks WHERE inode = c.id) AS has_blocks
     FROM dirents d JOIN inodes c ON c.id = d.child
     WHERE d.parent = ?1 AND d.name = ?2`;
const REMOVE_TOUCH_DIR = `UPDATE inodes SET mtime_sec = ?2, mtime_nsec = ?3, ctime_sec = ?2, ctime_nsec = ?3 WHERE id = ?1 RETURNING ${COLS}`;
const STREAM_INSERT_INODE = `${INSERT_INODE} VALUES (?1, ${FileType.REG}, ?2, ?3, ?4, 0, 1, 0, 0, ?5, ?6, ?5, ?6, ?5, ?6, ?7, 0, NULL, NULL, ?5, ?6, ?8)
     RETURNING ${COLS}`;
const STREAM_DELETE_INODE = `DELETE FROM inodes WHERE id = ?1 RETURNING ${COLS}`;

function createOne(db: SqliteRunner, p: readonly unknown[]) {
  // The directory takes a cookie only while the name is free; then the inode and its entry.
  const d = db.get(CREATE_TAKE_COOKIE, [p[0], p[1], p[19], p[14], p[15]]);
  if (d === undefined) return [];
  const i = db.get(CREATE_INSERT_INODE, [
    d.share_id,
    p[2],
    p[3],
    p[4],
    p[5],
    p[6],
    p[7],
    p[8],
    p[9],
    p[10],
    p[11],
    p[12],
    p[13],
    p[14],
    p[15],
    p[20],
    p[16],
    p[17],
    p[18],
    p[21],
    p[22],
    p[23],
  ]);
  db.run(`INSERT INTO dirents (parent, name, cookie, child) VALUES (?1, ?2, ?3, ?4)`, [p[0], p[1], d.cookie, i!.id]);
  // As PostgreSQL's form: the inode (`made` 1), then the directory as changed (`made` 0), which
  // saves the caller a read of it.
  i!.made = 1;
  d.made = 0;
  return [i!, d];
}

function removeFile(db: SqliteRunner, p: readonly unknown[]) {
  const [dirId, name, sec, nsec, expect] = p;
  // The entry's file, its directory's type and whether the file has streams or blocks: one
  // statement (each costs a call into SQLite and a row object; a REMOVE made eight of them).
  const c = db.get(REMOVE_FIND, [dirId, name]);
  // Anything but a plain file in a directory (or another file than `expect`): the store's
  // transactional path gives the exact answer.
  if (c === undefined || c.parent_type !== DIR || c.id === dirId || num(c.type, 'type') === DIR) return [];
  if (expect !== null && expect !== undefined && num(c.id, 'id') !== num(expect, 'expect')) return [];
  db.run(`DELETE FROM dirents WHERE parent = ?1 AND name = ?2`, [dirId, name]);
  // The directory as changed: a second row (`removed` 2), which saves the caller a read of it.
  const dir = db.get(REMOVE_TOUCH_DIR, [dirId, sec, nsec]);
  let streams: number[] = [];
  let blocks = 1;
  if (num(c.nlink, 'nlink') > 1) {
    db.run(`UPDATE inodes SET nlink = nlink - 1, ctime_sec = ?2, ctime_nsec = ?3 WHERE id = ?1`, [c.id, sec, nsec]);
  } else {
    blocks = c.has_blocks === 1 ? 1 : 0;
    // The usual file has no streams: its row alone, without a JSON array to parse.
    if (c.has_streams !== 1) db.run(`DELETE FROM inodes WHERE id = ?1`, [c.id]);
    else {
      streams = db.all(`DELETE FROM streams WHERE file = ?1 RETURNING inode`, [c.id]).map((r) => num(r.inode, 'inode'));
      streams.sort((a, b) => a - b);
      db.run(`DELETE FROM inodes WHERE id IN ${inJson(1)}`, [[c.id, ...streams]]);
    }
  }
  // Set on the rows SQLite made for this call (a spread copies every column again).
  c.removed = 1;
  c.streams = streams;
  c.blocks = blocks;
  if (dir === undefined) return [c];
  dir.removed = 2;
  return [c, dir];
}

function writeInodes(db: SqliteRunner, p: readonly unknown[]) {
  const cols = p as readonly (readonly unknown[])[];
  const ids = cols[0]!;
  for (let k = 0; k < ids.length; k++) {
    db.run(
      `UPDATE inodes SET nlink = ?2, parent = ?3, next_cookie = ?4, mtime_sec = ?5, mtime_nsec = ?6, ctime_sec = ?7, ctime_nsec = ?8
       WHERE id = ?1`,
      cols.map((c) => c[k]),
    );
  }
  return [];
}

function createStream(db: SqliteRunner, p: readonly unknown[]) {
  const [fileId, name, mode, uid, gid, sec, nsec, generation, dosAttrs, maxStreams] = p;
  const f = db.get(`SELECT share_id FROM inodes WHERE id = ?1`, [fileId]);
  if (f === undefined) return [];
  const n = db.get(`SELECT count(*) AS n, max(name = ?2) AS taken FROM streams WHERE file = ?1`, [fileId, name]);
  if (num(n?.n ?? 0, 'n') >= num(maxStreams, 'max') || n?.taken === 1) return [];
  const i = db.get(STREAM_INSERT_INODE, [f.share_id, mode, uid, gid, sec, nsec, generation, num(dosAttrs, 'dos_attrs') & DOS_ATTRS_STORED]);
  db.run(`INSERT INTO streams (file, name, inode) VALUES (?1, ?2, ?3)`, [fileId, name, i!.id]);
  db.run(`UPDATE inodes SET ctime_sec = ?2, ctime_nsec = ?3 WHERE id = ?1`, [fileId, sec, nsec]);
  return [i!];
}

function removeStream(db: SqliteRunner, p: readonly unknown[]) {
  const [fileId, name, sec, nsec] = p;
  const s = db.get(`DELETE FROM streams WHERE file = ?1 AND name = ?2 RETURNING inode`, [fileId, name]);
  if (s === undefined) return [];
  const rows = db.all(STREAM_DELETE_INODE, [s.inode]);
  db.run(`UPDATE inodes SET ctime_sec = ?2, ctime_nsec = ?3 WHERE id = ?1`, [fileId, sec, nsec]);
  return rows;
}

function putBlock(db: SqliteRunner, p: readonly unknown[]) {
  const old = db.get(`SELECT key, length, version FROM blocks WHERE inode = ?1 AND idx = ?2`, [p[0], p[1]]);
  db.run(
    `INSERT INTO blocks (inode, idx, key, length, version) VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (inode, idx) DO UPDATE SET key = excluded.key, length = excluded.length, version = excluded.version`,
    p,
  );
  return old === undefined ? [] : [old];
}

/** AUTOINCREMENT's count of inode ids handed out (sqlite_sequence), moved up to ?1, never back. */
function reserveInodeIds(db: SqliteRunner, p: readonly unknown[]) {
  if (db.run(`UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'inodes'`, [p[0]]) === 0)
    db.run(`INSERT INTO sqlite_sequence (name, seq) VALUES ('inodes', ?1)`, [p[0]]);
  return [];
}

function casBlock(db: SqliteRunner, p: readonly unknown[]) {
  const [inode, idx, key, length, version, token, prevVersion] = p;
  const t = num(token, 'token');
  const old = db.get(`SELECT key, length, version, token FROM blocks WHERE inode = ?1 AND idx = ?2`, [inode, idx]);
  const fence = num(db.get(`SELECT token FROM file_fences WHERE inode = ?1`, [inode])?.token ?? 0, 'token');
  const oldToken = num(old?.token ?? 0, 'token');
  let applied = 0;
  if (num(old?.version ?? 0, 'version') === num(prevVersion, 'version') && oldToken <= t && fence <= t) {
    applied = db.run(
      `INSERT INTO blocks (inode, idx, key, length, version, token) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
       ON CONFLICT (inode, idx) DO UPDATE SET key = excluded.key, length = excluded.length, version = excluded.version, token = excluded.token
       WHERE blocks.version = ?7 AND blocks.token <= excluded.token`,
      [inode, idx, key, length, version, token, prevVersion],
    );
  }
  return [
    {
      applied,
      key: old?.key ?? null,
      length: old?.length ?? null,
      version: old?.version ?? null,
      stale: oldToken > t || fence > t,
    },
  ];
}

export const SQLITE_STATEMENTS: Readonly<Record<keyof typeof S, SqliteForm>> = Object.freeze({
  getInode: `SELECT ${COLS} FROM inodes WHERE id = ?1`,
  lookup: `SELECT p.type AS p_type, ${inodeColumns('i')}
           FROM inodes p
           LEFT JOIN dirents d ON d.parent = p.id AND d.name = ?2
           LEFT JOIN inodes i ON i.id = d.child
           WHERE p.id = ?1`,
  readdir: `SELECT p.type AS p_type, e.*
            FROM inodes p
            LEFT JOIN (
              SELECT d.name AS d_name, d.cookie AS d_cookie, ${inodeColumns('i')}
              FROM dirents d JOIN inodes i ON i.id = d.child
              WHERE d.parent = ?1 AND d.cookie > ?2
              ORDER BY d.cookie
              LIMIT ?3
            ) e ON 1
            WHERE p.id = ?1
            ORDER BY e.d_cookie`,
  lockInodes: `SELECT ${COLS} FROM inodes WHERE id IN ${inJson(1)} ORDER BY id`,
  entries2: `SELECT parent, name, child FROM dirents WHERE (parent = ?1 AND name = ?2) OR (parent = ?3 AND name = ?4)`,
  ancestors: `${ANCESTORS} SELECT id FROM up WHERE id IS NOT NULL`,
  lockAncestors: `${ANCESTORS} SELECT id FROM inodes WHERE id IN (SELECT id FROM up) ORDER BY id`,
  hasEntries: `SELECT EXISTS (SELECT 1 FROM dirents WHERE parent = ?1) AS e`,
  insertDirent: `INSERT INTO dirents (parent, name, cookie, child) VALUES (?1, ?2, ?3, ?4)`,
  deleteDirent: `DELETE FROM dirents WHERE parent = ?1 AND name = ?2`,
  deleteInodes: `DELETE FROM inodes WHERE id IN ${inJson(1)}`,
  writeInodes,
  createOne,
  removeFile,
  rootOf: `SELECT root FROM share_roots WHERE share_id = ?1`,
  insertRootInode: `${INSERT_INODE}
           VALUES (?1, ${DIR}, ?2, ?3, ?4, ?5, 2, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?16, 0, ?14, ?15, ?17, ?18, ?19)
           RETURNING id`,
  setRootParent: `UPDATE inodes SET parent = id WHERE id = ?1 RETURNING ${COLS}`,
  insertShareRoot: `INSERT INTO share_roots (share_id, root) VALUES (?1, ?2) ON CONFLICT (share_id) DO NOTHING RETURNING root`,
  setAttr: `UPDATE inodes SET
             mode = coalesce(?2, mode) & ~coalesce(?19, 0),
             uid = coalesce(?3, uid),
             gid = coalesce(?4, gid),
             size = max(coalesce(?5, size), coalesce(?6, 0)),
             atime_sec = coalesce(?7, atime_sec), atime_nsec = coalesce(?8, atime_nsec),
             mtime_sec = coalesce(?9, mtime_sec), mtime_nsec = coalesce(?10, mtime_nsec),
             ctime_sec = coalesce(?11, ctime_sec), ctime_nsec = coalesce(?12, ctime_nsec),
             btime_sec = coalesce(?16, btime_sec), btime_nsec = coalesce(?17, btime_nsec),
             dos_attrs = coalesce(?18, dos_attrs),
             create_verifier = CASE WHEN ?13 THEN NULL ELSE create_verifier END,
             size_token = max(size_token, coalesce(?20, 0), coalesce(?21, 0))
           WHERE id = ?1 AND (?14 IS NULL OR (ctime_sec = ?14 AND ctime_nsec = ?15))
             AND (?20 IS NULL OR max(${DATA_TOKEN}, size_token) <= ?20)
           RETURNING ${COLS}`,
  exists: `SELECT 1 AS x FROM inodes WHERE id = ?1`,
  listStreams: `SELECT f.id AS f_id, s.name AS s_name, ${inodeColumns('i')}
                FROM inodes f LEFT JOIN streams s ON s.file = f.id LEFT JOIN inodes i ON i.id = s.inode
                WHERE f.id = ?1 ORDER BY s.name`,
  lookupStream: `SELECT f.id AS f_id, ${inodeColumns('i')}
                 FROM inodes f LEFT JOIN streams s ON s.file = f.id AND s.name = ?2 LEFT JOIN inodes i ON i.id = s.inode
                 WHERE f.id = ?1`,
  createStream,
  isStream: `SELECT EXISTS (SELECT 1 FROM streams WHERE inode = ?1) AS stream`,
  streamTaken: `SELECT EXISTS (SELECT 1 FROM streams WHERE file = ?1 AND name = ?2) AS taken`,
  removeStream,
  deleteStreamsOf: `DELETE FROM streams WHERE file IN ${inJson(1)} RETURNING file, inode`,
  getMeta: `SELECT f.id AS f_id, m.name AS m_name, m.value AS m_value
            FROM inodes f LEFT JOIN inode_meta m ON m.inode = f.id AND m.kind = ?2
            WHERE f.id = ?1 ORDER BY m.name`,
  lockInode: `SELECT id FROM inodes WHERE id = ?1`,
  putMeta: `INSERT INTO inode_meta (inode, kind, name, value) VALUES (?1, ?2, ?3, ?4)
            ON CONFLICT (inode, kind, name) DO UPDATE SET value = excluded.value`,
  deleteMeta: `DELETE FROM inode_meta WHERE inode = ?1 AND kind = ?2 AND name = ?3`,
  metaTotals: `SELECT count(*) AS n, coalesce(sum(length(name) + length(value)), 0) AS bytes FROM inode_meta WHERE inode = ?1 AND kind = ?2`,
  touchCtime: `UPDATE inodes SET ctime_sec = ?2, ctime_nsec = ?3 WHERE id = ?1`,
  metaSizes: `SELECT inode, sum((9 + length(name) + length(value) + 3) / 4 * 4) AS size
              FROM inode_meta WHERE inode IN ${inJson(1)} AND kind = ?2 GROUP BY inode`,
  getBlocks: `SELECT idx, key, length, version FROM blocks WHERE inode = ?1 AND idx >= ?2 AND idx < ?3 ORDER BY idx`,
  putBlock,
  casBlock,
  fenceFile: `INSERT INTO file_fences (inode, token) VALUES (?1, ?2)
              ON CONFLICT (inode) DO UPDATE SET token = max(file_fences.token, excluded.token)
              RETURNING token`,
  reserveInodeIds,
  // PostgreSQL's nextval(): the first call returns the start value (1), each later one the next.
  nextLeaseToken: `UPDATE lease_tokens SET last_value = last_value + is_called, is_called = 1 RETURNING last_value AS t`,
  leaseTokensIssued: `SELECT is_called AS issued FROM lease_tokens`,
  fileToken: `SELECT ${NEWEST_TOKEN} AS t`,
  dropBlocks: `DELETE FROM blocks WHERE inode = ?1 AND idx >= ?2 RETURNING idx, key, length, version, token`,
  usage: `SELECT count(*) AS files, coalesce(sum(size), 0) AS bytes FROM inodes WHERE share_id = ?1`,
});

/** The SQLite forms by statement name, as the driver looks them up. */
export function sqliteStatementsByName(statements: typeof S): Record<string, SqliteForm> {
  const out: Record<string, SqliteForm> = {};
  for (const [key, st] of Object.entries(statements) as [keyof typeof S, { name: string }][]) out[st.name] = SQLITE_STATEMENTS[key];
  return out;
}
