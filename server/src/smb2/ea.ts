// MS-FSCC 2.4.15 FILE_FULL_EA_INFORMATION and 2.4.15.1 FILE_GET_EA_INFORMATION; extended
// attributes as MS-SMB2 3.3.5.20.1 (QUERY_INFO FileFullEaInformation), 3.3.5.21.1 (SET_INFO) and
// 2.2.13.2.1 (the ExtA create context) use them. EAs are kept per inode in the metadata store
// (InodeMetaKind.EA: a record per name, the value as given) with MS-FSCC's limits: a name is 1 to
// 255 ASCII bytes without the characters FsRtlIsEaNameValid refuses, and a file holds at most
// 64 KiB of them. Names are kept upper-cased, as NTFS keeps them, so that lookups ignore case.
import { InodeMetaKind, type InodeMetaChange, type InodeMetaRecord, type MetadataStore, metaRecordSize } from '../meta/store.js';
import type { Timespec } from '../vfs/types.js';
import { NtStatus, SmbStatusError } from './status.js';

/** Longest EA name (EaNameLength is one byte). */
export const EA_NAME_MAX = 255;
/** MS-FSCC 2.4.15: what a file's EAs may take in all (names and values). */
export const EA_BYTES_MAX = 65536;
/** Most EAs one file holds (each takes at least a 1-byte name). */
export const EA_COUNT_MAX = 4096;
export const EA_LIMITS = Object.freeze({ count: EA_COUNT_MAX, bytes: EA_BYTES_MAX });

/** QUERY_INFO Flags for FileFullEaInformation (MS-SMB2 2.2.37). */
export const EaQueryFlags = Object.freeze({ RESTART_SCAN: 0x1, RETURN_SINGLE_ENTRY: 0x2, INDEX_SPECIFIED: 0x4 } as const);

/** One entry of a FILE_FULL_EA_INFORMATION list. */
export interface FullEa {
  flags: number;
  name: Buffer;
  value: Buffer;
}

const inconsistent = (why: string): SmbStatusError => new SmbStatusError(NtStatus.EA_LIST_INCONSISTENT, why);

/** Characters an EA name may not hold (besides controls and bytes past ASCII). */
const INVALID_EA_CHARS = new Set([...'"*+,/:;<=>?[\\]|'].map((c) => c.charCodeAt(0)));

/** Whether `name` is a valid EA name (MS-FSCC 2.4.15: ASCII, 1-255 bytes, no reserved characters). */
export function validEaName(name: Buffer): boolean {
  if (name.length === 0 || name.length > EA_NAME_MAX) return false;
  for (const c of name) if (c < 0x20 || c > 0x7e || INVALID_EA_CHARS.has(c)) return false;
  return true;
}

/** The form a name is stored and compared in (NTFS upper-cases EA names). */
export function eaKey(name: Buffer): Buffer {
  const out = Buffer.allocUnsafe(name.length);
  for (let i = 0; i < name.length; i++) {
    const c = name[i]!;
    out[i] = c >= 0x61 && c <= 0x7a ? c - 0x20 : c;
  }
  return out;
}

/**
 * Decodes a FILE_FULL_EA_INFORMATION list (SET_INFO's buffer, the ExtA context). Every entry must
 * lie inside the buffer, its name end in a NUL, and NextEntryOffset move forward by a multiple of
 * 4: else EA_LIST_INCONSISTENT. Names are not checked here (validateEas does).
 */
export function decodeFullEaList(b: Buffer): FullEa[] {
  const out: FullEa[] = [];
  let at = 0;
  for (;;) {
    if (at + 8 > b.length) throw inconsistent('EA entry outside the buffer');
    const next = b.readUInt32LE(at);
    const flags = b[at + 4]!;
    const nameLen = b[at + 5]!;
    const valueLen = b.readUInt16LE(at + 6);
    const end = at + 8 + nameLen + 1 + valueLen;
    if (end > b.length) throw inconsistent('EA name or value outside the buffer');
    if (b[at + 8 + nameLen] !== 0) throw inconsistent('EA name not NUL-terminated');
    if (next !== 0 && (next % 4 !== 0 || at + next < end)) throw inconsistent('bad NextEntryOffset');
    out.push({
      flags,
      name: Buffer.from(b.subarray(at + 8, at + 8 + nameLen)),
      value: Buffer.from(b.subarray(at + 9 + nameLen, end)),
    });
    if (next === 0) return out;
    at += next;
  }
}

/** MS-FSCC 2.4.15.1 FILE_GET_EA_INFORMATION list (a QUERY_INFO's input): the names asked for. */
export function decodeGetEaList(b: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (;;) {
    if (at + 5 > b.length) throw inconsistent('EA name entry outside the buffer');
    const next = b.readUInt32LE(at);
    const nameLen = b[at + 4]!;
    const end = at + 5 + nameLen + 1;
    if (end > b.length) throw inconsistent('EA name outside the buffer');
    if (b[at + 5 + nameLen] !== 0) throw inconsistent('EA name not NUL-terminated');
    if (next !== 0 && (next % 4 !== 0 || at + next < end)) throw inconsistent('bad NextEntryOffset');
    out.push(Buffer.from(b.subarray(at + 5, at + 5 + nameLen)));
    if (next === 0) return out;
    at += next;
  }
}

/** Encodes a FILE_FULL_EA_INFORMATION list: entries 4-byte aligned, padding zeroed, the last NextEntryOffset 0. */
export function encodeFullEaList(eas: readonly FullEa[]): Buffer {
  let size = 0;
  for (let i = 0; i < eas.length; i++) {
    const e = eas[i]!;
    size += i === eas.length - 1 ? 9 + e.name.length + e.value.length : metaRecordSize(e.name.length, e.value.length);
  }
  const out = Buffer.alloc(size);
  let at = 0;
  for (let i = 0; i < eas.length; i++) {
    const e = eas[i]!;
    const len = metaRecordSize(e.name.length, e.value.length);
    out.writeUInt32LE(i === eas.length - 1 ? 0 : len, at);
    out[at + 4] = e.flags;
    out[at + 5] = e.name.length;
    out.writeUInt16LE(e.value.length, at + 6);
    e.name.copy(out, at + 8);
    e.value.copy(out, at + 9 + e.name.length);
    at += len;
  }
  return out;
}

/** The EaSize clients see for a file's records (FileEaInformation, FileAllInformation, directory entries). */
export function eaSizeOf(records: readonly InodeMetaRecord[]): number {
  let n = 0;
  for (const r of records) n += metaRecordSize(r.name.length, r.value.length);
  return n;
}

/**
 * The store changes a set of EAs stands for (a zero-length value removes the EA), after checking
 * every name (INVALID_EA_NAME) and what the list adds up to (EA_TOO_LARGE past the caps), so
 * that a CREATE's ExtA is refused before the file is made.
 */
export function eaChanges(eas: readonly FullEa[]): EaChange[] {
  let bytes = 0;
  const out: EaChange[] = [];
  for (const e of eas) {
    if (!validEaName(e.name)) throw new SmbStatusError(NtStatus.INVALID_EA_NAME, 'invalid EA name');
    bytes += e.name.length + e.value.length;
    out.push({ name: eaKey(e.name), value: e.value.length === 0 ? null : e.value, flags: e.flags & FILE_NEED_EA });
  }
  if (bytes > EA_BYTES_MAX || out.length > EA_COUNT_MAX) throw new SmbStatusError(NtStatus.EA_TOO_LARGE, 'EAs past 64 KiB or 4,096 names');
  return out;
}

export const EA_KIND = InodeMetaKind.EA;

/**
 * MS-FSCC 2.4.15 Flags: FILE_NEED_EA ("the file cannot be interpreted without understanding its
 * EAs"), the only flag there is; other bits are not kept.
 */
export const FILE_NEED_EA = 0x80;

/** An EA change with the flags the EA is to have. */
export interface EaChange extends InodeMetaChange {
  flags: number;
}

// The flags of EAs that have any are records of their own (InodeMetaKind.EA_FLAGS: the EA's stored
// name, one byte of flags), so that EA records, and the EaSize summed from them, stay as they are.
const FLAG_LIMITS = Object.freeze({ count: EA_COUNT_MAX, bytes: EA_BYTES_MAX + EA_COUNT_MAX });
const NEED_EA_VALUE = Buffer.from([FILE_NEED_EA]);

/**
 * Applies EA changes, then the flags they carry (NOSPC past the caps, nothing changed). The flags
 * follow in a second store change: a crash between the two can leave an EA with its old flags,
 * never a flag on an EA that is gone (flags are read only for EAs that exist).
 */
export async function storeEas(meta: MetadataStore, inodeId: number, changes: readonly EaChange[], now: Timespec): Promise<void> {
  await meta.putMeta(inodeId, EA_KIND, changes, EA_LIMITS, now);
  const have = new Set((await meta.getMeta(inodeId, InodeMetaKind.EA_FLAGS)).map((r) => r.name.toString('latin1')));
  const flagChanges: InodeMetaChange[] = [];
  for (const c of changes) {
    const want = c.value !== null && (c.flags & FILE_NEED_EA) !== 0;
    const has = have.has(c.name.toString('latin1'));
    if (want && !has) flagChanges.push({ name: c.name, value: NEED_EA_VALUE });
    else if (!want && has) flagChanges.push({ name: c.name, value: null });
  }
  if (flagChanges.length > 0) await meta.putMeta(inodeId, InodeMetaKind.EA_FLAGS, flagChanges, FLAG_LIMITS);
}

/** A file's EAs with their flags, in the store's (name) order. */
export async function eaRecords(meta: MetadataStore, inodeId: number): Promise<FullEa[]> {
  const [records, flags] = await Promise.all([meta.getMeta(inodeId, EA_KIND), meta.getMeta(inodeId, InodeMetaKind.EA_FLAGS)]);
  const byName = new Map(flags.map((r) => [r.name.toString('latin1'), r.value[0] ?? 0]));
  return records.map((r) => ({ flags: (byName.get(r.name.toString('latin1')) ?? 0) & FILE_NEED_EA, name: r.name, value: r.value }));
}

/**
 * MS-FSA 2.1.5.1.2: an open with FILE_NO_EA_KNOWLEDGE of a file (or directory) one of whose EAs
 * has FILE_NEED_EA is refused with ACCESS_DENIED. Costs a store read only with that option.
 */
export async function checkEaKnowledge(meta: MetadataStore, inodeId: number, createOptions: number): Promise<void> {
  if ((createOptions & FILE_NO_EA_KNOWLEDGE) === 0) return;
  const needed = (await meta.getMeta(inodeId, InodeMetaKind.EA_FLAGS)).filter((r) => ((r.value[0] ?? 0) & FILE_NEED_EA) !== 0);
  if (needed.length === 0) return;
  // A flag counts only for an EA that exists (storeEas can leave one behind a removed EA).
  const names = new Set((await meta.getMeta(inodeId, EA_KIND)).map((r) => r.name.toString('latin1')));
  if (needed.some((r) => names.has(r.name.toString('latin1'))))
    throw new SmbStatusError(NtStatus.ACCESS_DENIED, 'FILE_NO_EA_KNOWLEDGE, and the file has an EA with FILE_NEED_EA');
}

/** MS-SMB2 2.2.13 CreateOptions FILE_NO_EA_KNOWLEDGE. */
export const FILE_NO_EA_KNOWLEDGE = 0x00000200;

/** What a FileFullEaInformation query answers, and where the open's scan goes on from. */
export interface EaQueryResult {
  status: NtStatus;
  output: Buffer;
  nextIndex: number;
}

/**
 * MS-SMB2 3.3.5.20.1 (FileFullEaInformation): with a FILE_GET_EA_INFORMATION
 * list, those EAs in that order (an EA the file lacks comes back with an empty value); without
 * one, the file's EAs from the open's scan position (from the start with RESTART_SCAN, from the
 * 1-based `index` with INDEX_SPECIFIED), as many whole entries as fit (one with
 * RETURN_SINGLE_ENTRY). None at all: NO_EAS_ON_FILE; none left: NO_MORE_EAS; not even one
 * fitting: BUFFER_TOO_SMALL; some left out: BUFFER_OVERFLOW with those that fit.
 */
export function queryEas(
  records: readonly FullEa[],
  req: { flags: number; input: Buffer; additionalInformation: number; outputBufferLength: number },
  scanIndex: number,
): EaQueryResult {
  const single = (req.flags & EaQueryFlags.RETURN_SINGLE_ENTRY) !== 0;
  let chosen: FullEa[];
  let start = 0;
  let listed = false;
  if (req.input.length > 0) {
    listed = true;
    const byName = new Map(records.map((r) => [r.name.toString('latin1'), r]));
    chosen = decodeGetEaList(req.input).map((name) => {
      if (!validEaName(name)) throw new SmbStatusError(NtStatus.INVALID_EA_NAME, 'invalid EA name');
      const r = byName.get(eaKey(name).toString('latin1'));
      return { flags: r?.flags ?? 0, name, value: r?.value ?? Buffer.alloc(0) };
    });
  } else {
    if (records.length === 0) throw new SmbStatusError(NtStatus.NO_EAS_ON_FILE);
    if ((req.flags & EaQueryFlags.INDEX_SPECIFIED) !== 0) {
      if (req.additionalInformation === 0) throw new SmbStatusError(NtStatus.NONEXISTENT_EA_ENTRY, 'EA index 0');
      start = req.additionalInformation - 1;
    } else if ((req.flags & EaQueryFlags.RESTART_SCAN) === 0) start = scanIndex;
    if (start >= records.length) throw new SmbStatusError(NtStatus.NO_MORE_EAS);
    chosen = records.slice(start);
  }
  // Whole entries while they fit.
  let used = 0;
  let n = 0;
  for (const e of chosen) {
    const last = 9 + e.name.length + e.value.length;
    if (used + last > req.outputBufferLength) break;
    used += metaRecordSize(e.name.length, e.value.length);
    n++;
    if (single) break;
  }
  if (n === 0) throw new SmbStatusError(NtStatus.BUFFER_TOO_SMALL, 'output buffer too small for one EA');
  const output = encodeFullEaList(chosen.slice(0, n));
  const overflow = n < chosen.length && !single;
  return {
    status: overflow ? NtStatus.BUFFER_OVERFLOW : NtStatus.SUCCESS,
    output,
    nextIndex: listed ? scanIndex : start + n,
  };
}
