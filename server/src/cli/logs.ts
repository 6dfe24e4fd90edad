// `dittofs logs`: the server's log file (JSON lines) from the command line: the last N lines, the
// lines since a time (the JSON `time` field), and following the file as it grows, with bounded
// memory whatever the file's size: the last lines are read backwards from the end, a `--since`
// scan keeps at most N lines, and following reads what was appended, a chunk at a time.
import { createReadStream } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';

// ---------------------------------------------------------------------------------------------
// --since

const DURATION_UNIT_MS: Readonly<Record<string, number>> = Object.freeze({ ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 });
const DURATION_RE = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$/;
const RFC3339_RE = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})?$/;
const SINCE_EXPECTED =
  'expected an RFC 3339 time such as 2024-01-15T10:00:00Z (or with an offset, +02:00) or a duration such as 30s, 10m, 2h or 1h30m';

/**
 * Reads `--since`: an RFC 3339 time (`2024-01-15T10:00:00Z`, `2024-01-15T12:00:00.5+02:00`; the
 * seconds may be left out, the zone may not) or a duration before `now` (`10m`, `2h`, `1h30m`,
 * `1d`, `500ms`). Throws a RangeError saying what is accepted.
 */
export function parseSince(text: string, now: Date = new Date()): Date {
  const t = text.trim();
  if (DURATION_RE.test(t)) {
    let ms = 0;
    for (const m of t.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)) ms += Number(m[1]) * (DURATION_UNIT_MS[m[2] as string] as number);
    return new Date(now.getTime() - Math.round(ms));
  }
  const m = RFC3339_RE.exec(t);
  if (m !== null) {
    const [, y, mo, d, h, mi, s, zone] = m;
    if (zone === undefined) {
      throw new RangeError(`--since ${JSON.stringify(text)}: give the time zone, Z for UTC or an offset such as +02:00 (${t}Z)`);
    }
    const daysInMonth = new Date(Date.UTC(Number(y), Number(mo), 0)).getUTCDate();
    const ok =
      Number(mo) >= 1 &&
      Number(mo) <= 12 &&
      Number(d) >= 1 &&
      Number(d) <= daysInMonth &&
      Number(h) <= 23 &&
      Number(mi) <= 59 &&
      Number(s ?? 0) <= 60;
    const when = Date.parse(t.replace(/^(.{10})[t ]/i, '$1T').replace(/z$/, 'Z'));
    if (ok && !Number.isNaN(when)) return new Date(when);
    throw new RangeError(`--since ${JSON.stringify(text)}: not a valid date and time`);
  }
  if (/^\d+(?:\.\d+)?$/.test(t))
    throw new RangeError(`--since ${JSON.stringify(text)}: a duration needs a unit (ms, s, m, h or d), such as ${t}m`);
  throw new RangeError(`--since ${JSON.stringify(text)}: ${SINCE_EXPECTED}`);
}

/** The time of a JSON log line (its `time` field: RFC 3339 text or epoch milliseconds), in ms. */
export function lineTime(line: string): number | undefined {
  if (!line.startsWith('{')) return undefined;
  let v: unknown;
  try {
    v = (JSON.parse(line) as { time?: unknown }).time;
  } catch {
    return undefined;
  }
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'string') {
    const t = Date.parse(v);
    return Number.isNaN(t) ? undefined : t;
  }
  return undefined;
}

/**
 * A filter for lines at or after `since`. A line without a time (the server's stderr, a stack trace)
 * goes with the timed line before it; before any timed line, it is left out.
 */
export function sinceFilter(since: Date | undefined): (line: string) => boolean {
  if (since === undefined) return () => true;
  const cutoff = since.getTime();
  let keeping = false;
  return (line) => {
    const t = lineTime(line);
    if (t !== undefined) keeping = t >= cutoff;
    return keeping;
  };
}

// ---------------------------------------------------------------------------------------------
// Reading

/** Longest line kept whole; a longer one (no newline for 1 MiB) is cut there. */
const MAX_LINE_BYTES = 1024 * 1024;
const CHUNK = 64 * 1024;

export interface TailResult {
  lines: string[];
  /** Bytes after the last newline (a line being written), not in `lines`. */
  partial: string;
  /** Offset where following continues: just after the last newline. */
  end: number;
}

/** The last `n` complete lines of the file, reading backwards from its end. */
export async function tailLines(file: string, n: number): Promise<TailResult> {
  const fh = await open(file, 'r');
  try {
    return await tailHandle(fh, n);
  } finally {
    await fh.close();
  }
}

async function tailHandle(fh: FileHandle, n: number): Promise<TailResult> {
  const { size } = await fh.stat();
  const chunks: Buffer[] = [];
  let pos = size;
  let newlines = 0;
  let bytes = 0;
  // One newline more than the lines wanted: the line before the first one wanted ends there.
  while (pos > 0 && newlines <= n && bytes < n * MAX_LINE_BYTES + CHUNK) {
    const len = Math.min(CHUNK, pos);
    pos -= len;
    const buf = Buffer.alloc(len);
    const { bytesRead } = await fh.read(buf, 0, len, pos);
    const got = buf.subarray(0, bytesRead);
    chunks.unshift(got);
    bytes += bytesRead;
    for (const b of got) if (b === 0x0a) newlines++;
  }
  const data = Buffer.concat(chunks);
  const lastNl = data.lastIndexOf(0x0a);
  const partialBuf = data.subarray(lastNl + 1);
  let lines = lastNl < 0 ? [] : data.subarray(0, lastNl).toString('utf8').split('\n');
  // Reading stopped mid-file: the first piece may be the end of a longer line.
  if (pos > 0 && lines.length > 0) lines = lines.slice(1);
  return { lines: n === 0 ? [] : lines.slice(-n), partial: partialBuf.toString('utf8'), end: size - partialBuf.length };
}

/** Splits a byte stream into lines (without the newline), keeping the unfinished last one. */
export class LineSplitter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  /** The complete lines in `chunk` (with what came before it). */
  push(chunk: Buffer): string[] {
    const out: string[] = [];
    let start = 0;
    for (let i = chunk.indexOf(0x0a); i >= 0; i = chunk.indexOf(0x0a, start)) {
      const piece = chunk.subarray(start, i);
      out.push(this.pendingBytes > 0 ? Buffer.concat([...this.pending, piece]).toString('utf8') : piece.toString('utf8'));
      this.pending = [];
      this.pendingBytes = 0;
      start = i + 1;
    }
    if (start < chunk.length) {
      const rest = Buffer.from(chunk.subarray(start));
      this.pending.push(rest);
      this.pendingBytes += rest.length;
      if (this.pendingBytes >= MAX_LINE_BYTES) out.push(this.takePartial());
    }
    return out;
  }

  /** Bytes of the unfinished line. */
  get partialBytes(): number {
    return this.pendingBytes;
  }

  /** The unfinished line, emptied. */
  takePartial(): string {
    const s = Buffer.concat(this.pending).toString('utf8');
    this.pending = [];
    this.pendingBytes = 0;
    return s;
  }

  reset(): void {
    this.pending = [];
    this.pendingBytes = 0;
  }
}

/**
 * Scans the file from the start: lines that `keep` accepts are passed to `emit` as they come when
 * `n` is undefined, else the last `n` of them are returned (only those are held in memory).
 */
export async function scanLines(
  file: string,
  keep: (line: string) => boolean,
  n: number | undefined,
  emit: (line: string) => Promise<void>,
): Promise<TailResult> {
  const { size } = await stat(file);
  const split = new LineSplitter();
  const ring: string[] = [];
  if (size > 0) {
    for await (const chunk of createReadStream(file, { start: 0, end: size - 1, highWaterMark: CHUNK })) {
      for (const line of split.push(chunk as Buffer)) {
        if (!keep(line)) continue;
        if (n === undefined) await emit(line);
        else {
          ring.push(line);
          if (ring.length > n) ring.shift();
        }
      }
    }
  }
  const partialBytes = split.partialBytes;
  return { lines: ring, partial: split.takePartial(), end: size - partialBytes };
}

export interface FollowOptions {
  file: string;
  /** Byte offset to continue from. */
  from: number;
  /** Which lines to print. */
  keep: (line: string) => boolean;
  emit: (line: string) => Promise<void>;
  /** Notes for the user (truncation, rotation), on stderr. */
  note: (text: string) => void;
  signal: AbortSignal;
  /** Poll interval in ms (default 250). */
  intervalMs?: number;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * Prints lines appended to the file until `signal` aborts. Polls its size (so it works on every
 * filesystem, network ones included); starts over when the file is truncated (logrotate's
 * copytruncate) and switches to the new file when it is replaced (rotated by renaming).
 */
export async function followFile(o: FollowOptions): Promise<void> {
  const interval = o.intervalMs ?? 250;
  let fh = await open(o.file, 'r');
  let ino = (await fh.stat()).ino;
  let pos = o.from;
  const split = new LineSplitter();
  const buf = Buffer.alloc(CHUNK);
  try {
    while (!o.signal.aborted) {
      const { size } = await fh.stat();
      if (size < pos) {
        o.note(`log file ${o.file} was truncated; reading it from the start`);
        pos = 0;
        split.reset();
      }
      if (size > pos) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK, size - pos), pos);
        pos += bytesRead;
        for (const line of split.push(buf.subarray(0, bytesRead))) if (o.keep(line)) await o.emit(line);
        continue;
      }
      let now: number | undefined;
      try {
        now = (await stat(o.file)).ino;
      } catch {
        now = undefined; // moved away, the new one not there yet
      }
      if (now !== undefined && now !== ino) {
        o.note(`log file ${o.file} was replaced (rotated); following the new file`);
        await fh.close();
        fh = await open(o.file, 'r');
        ino = (await fh.stat()).ino;
        pos = 0;
        split.reset();
        continue;
      }
      await sleep(interval, o.signal);
    }
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------------------------------------
// The command

export interface LogsOptions {
  file: string;
  /** Last lines to show; undefined: all (with --since). */
  lines: number | undefined;
  since: Date | undefined;
  follow: boolean;
  write: (text: string) => Promise<void>;
  note: (text: string) => void;
  signal: AbortSignal;
}

/** Prints the lines asked for, then follows the file if asked to. */
export async function showLogs(o: LogsOptions): Promise<void> {
  const keep = sinceFilter(o.since);
  const emit = (line: string): Promise<void> => o.write(`${line}\n`);
  let r: TailResult;
  if (o.since === undefined && o.lines !== undefined) {
    r = await tailLines(o.file, o.lines);
  } else {
    r = await scanLines(o.file, keep, o.lines, emit);
  }
  for (const line of r.lines) await emit(line);
  if (!o.follow) {
    // A last line without its newline (the server died mid-line, or is writing it now).
    if (r.partial !== '' && keep(r.partial)) await emit(r.partial);
    return;
  }
  await followFile({ file: o.file, from: r.end, keep, emit, note: o.note, signal: o.signal });
}
