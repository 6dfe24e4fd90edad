// The few PostgreSQL wire-protocol messages the embedded driver exchanges with PGlite for a prepared
// statement (Bind + Execute + Sync out; BindComplete, DataRow, CommandComplete, ErrorResponse,
// ReadyForQuery back), written and read directly: PGlite's general protocol writer and parser cost
// more CPU per statement than PostgreSQL takes to run a primary-key lookup. Everything is text
// format, as PGlite's own query() uses. PostgreSQL protocol 3.0, "Message Formats".
import { protocol } from '@electric-sql/pglite';

const EXECUTE_SYNC = Buffer.from([0x45, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0x53, 0, 0, 0, 4]); // Execute "" 0; Sync

/** Bind (unnamed portal, statement `name`, text parameters and results), Execute, Sync. */
export function bindExecuteSync(name: string, values: readonly (string | null)[]): Uint8Array {
  const nameLen = Buffer.byteLength(name);
  let size = 1 + 4 + 1 + nameLen + 1 + 2 + 2 + 2;
  const lens = new Array<number>(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    lens[i] = v === null || v === undefined ? -1 : Buffer.byteLength(v);
    size += 4 + Math.max(0, lens[i]!);
  }
  const out = Buffer.allocUnsafe(size + EXECUTE_SYNC.length);
  let o = 0;
  out[o++] = 0x42; // 'B'
  out.writeInt32BE(size - 1, o);
  o += 4;
  out[o++] = 0; // portal ""
  o += out.write(name, o);
  out[o++] = 0;
  out.writeInt16BE(0, o); // parameter formats: all text
  o += 2;
  out.writeInt16BE(values.length, o);
  o += 2;
  for (let i = 0; i < values.length; i++) {
    out.writeInt32BE(lens[i]!, o);
    o += 4;
    if (lens[i]! > 0) o += out.write(values[i]!, o);
  }
  out.writeInt16BE(0, o); // result formats: all text
  o += 2;
  EXECUTE_SYNC.copy(out, o);
  return out;
}

const ERROR_FIELDS: Record<string, string> = {
  S: 'severity',
  C: 'code',
  D: 'detail',
  H: 'hint',
  P: 'position',
  p: 'internalPosition',
  q: 'internalQuery',
  W: 'where',
  s: 'schema',
  t: 'table',
  c: 'column',
  d: 'dataType',
  n: 'constraint',
  F: 'file',
  L: 'line',
  R: 'routine',
};

/** An ErrorResponse body as the DatabaseError PGlite's query() throws (message, code, detail, ...). */
function databaseError(buf: Buffer, start: number, end: number, length: number): Error {
  const f: Record<string, string> = {};
  let o = start;
  while (o < end && buf[o] !== 0) {
    const type = String.fromCharCode(buf[o]!);
    const z = buf.indexOf(0, o + 1);
    if (z < 0 || z >= end) break;
    f[type] = buf.toString('utf8', o + 1, z);
    o = z + 1;
  }
  const e = new protocol.messages.DatabaseError(f.M ?? 'unknown database error', length, 'error') as unknown as Record<string, unknown>;
  for (const [k, prop] of Object.entries(ERROR_FIELDS)) if (f[k] !== undefined) e[prop] = f[k];
  return e as unknown as Error;
}

/**
 * The text values of every DataRow in `buf` (the backend's answer to bindExecuteSync). Throws the
 * statement's ErrorResponse, if any, after reading to the end (the backend has reached Sync).
 */
export function dataRows(buf: Buffer): (string | null)[][] {
  const rows: (string | null)[][] = [];
  let error: Error | undefined;
  let o = 0;
  while (o + 5 <= buf.length) {
    const type = buf[o]!;
    const len = buf.readInt32BE(o + 1);
    const body = o + 5;
    const end = o + 1 + len;
    if (len < 4 || end > buf.length) throw new Error('embedded database: truncated protocol message');
    if (type === 0x44) {
      // 'D' DataRow: int16 count, then per column int32 length (-1: NULL) and bytes.
      const n = buf.readInt16BE(body);
      const row = new Array<string | null>(n);
      let p = body + 2;
      for (let i = 0; i < n; i++) {
        const l = buf.readInt32BE(p);
        p += 4;
        if (l < 0) row[i] = null;
        else {
          row[i] = buf.toString('utf8', p, p + l);
          p += l;
        }
      }
      rows.push(row);
    } else if (type === 0x45 && error === undefined) {
      error = databaseError(buf, body, end, len); // 'E' ErrorResponse
    }
    // '2' BindComplete, 'C' CommandComplete, 'Z' ReadyForQuery, 'N' NoticeResponse, 'I', 'n': nothing to read.
    o = end;
  }
  if (error) throw error;
  return rows;
}
