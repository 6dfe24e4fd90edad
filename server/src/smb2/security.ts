// MS-DTYP 2.4.6 SECURITY_DESCRIPTOR (self-relative), 2.4.5 ACL, 2.4.4.2/2.4.4.4 ACCESS_ALLOWED_ACE
// and ACCESS_DENIED_ACE, 2.4.2.2 SID; and the mapping between a security descriptor and the POSIX
// owner, group and mode bits a file has here (issue 13: "security descriptors mapped from the POSIX
// owner/group/mode"). No NT ACL is stored: QUERY_INFO describes the mode as a DACL of three ACEs
// (owner, group, Everyone), SET_INFO turns a DACL back into mode bits. ACEs for SIDs with no POSIX
// counterpart (a Windows user, NT AUTHORITY\ANONYMOUS LOGON) have nothing to map to and are left
// out, as are BUILTIN\Administrators ones (root, its one member here, needs no mode bit); BUILTIN\Users
// and Authenticated Users count as Everyone does (everyUser); the owner and group are the unix SIDs
// Samba uses (S-1-22-1-uid, S-1-22-2-gid).
import { inGroup } from '../vfs/permissions.js';
import type { Identity, Inode } from '../vfs/types.js';
import { DosAttributes, FileType } from '../vfs/types.js';
import { SmbWriter } from './codec.js';
import { NtStatus, SmbStatusError } from './status.js';

/** MS-DTYP 2.4.7 SECURITY_INFORMATION bits (QUERY_INFO/SET_INFO AdditionalInformation). */
export const SecurityInformation = Object.freeze({
  OWNER: 0x00000001,
  GROUP: 0x00000002,
  DACL: 0x00000004,
  SACL: 0x00000008,
  LABEL: 0x00000010,
  ATTRIBUTE: 0x00000020,
  SCOPE: 0x00000040,
  BACKUP: 0x00010000,
} as const);

/** MS-DTYP 2.4.6 Control bits used here. */
const SE_DACL_PRESENT = 0x0004;
const SE_DACL_PROTECTED = 0x1000;
const SE_SELF_RELATIVE = 0x8000;

/** MS-DTYP 2.4.4.1 ACE types and flags used here. */
export const AceType = Object.freeze({ ACCESS_ALLOWED: 0x00, ACCESS_DENIED: 0x01 } as const);
const INHERIT_ONLY_ACE = 0x08;

/** ACL_REVISION; an ACL and its ACEs fit 64 KiB, so a hostile AceCount costs at most that many loops. */
const ACL_REVISION = 2;
const MAX_SUB_AUTHORITIES = 15;

export interface Sid {
  /** IdentifierAuthority, a 48-bit number. */
  authority: number;
  subAuthorities: number[];
}

export interface Ace {
  type: number;
  flags: number;
  mask: number;
  sid: Sid;
}

export interface SecurityDescriptor {
  control: number;
  owner: Sid | null;
  group: Sid | null;
  /** null: no DACL given (SE_DACL_PRESENT clear) or a NULL DACL (present, offset 0): nobody is refused. */
  dacl: Ace[] | null;
}

export const sid = (authority: number, ...subAuthorities: number[]): Sid => ({ authority, subAuthorities });
export const EVERYONE = sid(1, 0);
export const CREATOR_OWNER = sid(3, 0);
export const CREATOR_GROUP = sid(3, 1);
/** NT AUTHORITY\Authenticated Users: every session whose user proved who he is (not guest, not anonymous). */
export const AUTHENTICATED_USERS = sid(5, 11);
/** BUILTIN\Users and BUILTIN\Administrators (MS-DTYP 2.4.2.4), the groups Windows tools name in DACLs. */
export const BUILTIN_USERS = sid(5, 32, 545);
export const BUILTIN_ADMINISTRATORS = sid(5, 32, 544);
/** Samba's unix user and group SIDs: how a POSIX uid and gid appear to Windows. */
export const unixUserSid = (uid: number): Sid => sid(22, 1, uid >>> 0);
export const unixGroupSid = (gid: number): Sid => sid(22, 2, gid >>> 0);

export const sidEqual = (a: Sid, b: Sid): boolean =>
  a.authority === b.authority &&
  a.subAuthorities.length === b.subAuthorities.length &&
  a.subAuthorities.every((v, i) => v === b.subAuthorities[i]);

/** "S-1-22-1-1000" */
export function sidString(s: Sid): string {
  return ['S-1', String(s.authority), ...s.subAuthorities.map(String)].join('-');
}

const invalid = (why: string): SmbStatusError => new SmbStatusError(NtStatus.INVALID_SECURITY_DESCR, why);

// ---- codec -----------------------------------------------------------------------------------

function sidLength(s: Sid): number {
  return 8 + 4 * s.subAuthorities.length;
}

function writeSid(w: SmbWriter, s: Sid): void {
  w.u8(1).u8(s.subAuthorities.length);
  // IdentifierAuthority is big-endian, 6 bytes.
  const hi = Math.floor(s.authority / 2 ** 32);
  w.u8((hi >>> 8) & 0xff).u8(hi & 0xff);
  const lo = s.authority % 2 ** 32;
  w.u8((lo >>> 24) & 0xff)
    .u8((lo >>> 16) & 0xff)
    .u8((lo >>> 8) & 0xff)
    .u8(lo & 0xff);
  for (const a of s.subAuthorities) w.u32(a);
}

/** A SID at `at` in `b` (inside [0, end)); an invalid one is INVALID_SECURITY_DESCR. */
export function readSid(b: Buffer, at: number, end = b.length): Sid {
  if (at < 0 || at + 8 > end) throw invalid('SID outside the descriptor');
  const count = b[at + 1]!;
  if (b[at] !== 1 || count > MAX_SUB_AUTHORITIES || at + 8 + 4 * count > end) throw invalid('malformed SID');
  const authority = b.readUInt16BE(at + 2) * 2 ** 32 + b.readUInt32BE(at + 4);
  const subAuthorities: number[] = [];
  for (let i = 0; i < count; i++) subAuthorities.push(b.readUInt32LE(at + 8 + 4 * i));
  return { authority, subAuthorities };
}

/** MS-DTYP 2.4.6: a self-relative descriptor holding what `sd` has (owner, group, DACL in that order). */
export function encodeSecurityDescriptor(sd: SecurityDescriptor): Buffer {
  const w = new SmbWriter(20 + 64 + 16 * (sd.dacl?.length ?? 0) * 2);
  const control = SE_SELF_RELATIVE | (sd.control & SE_DACL_PROTECTED) | (sd.dacl ? SE_DACL_PRESENT : 0);
  w.u8(1).u8(0).u16(control).u32(0).u32(0).u32(0).u32(0);
  if (sd.owner) {
    w.patchU32(4, w.pos);
    writeSid(w, sd.owner);
  }
  if (sd.group) {
    w.patchU32(8, w.pos);
    writeSid(w, sd.group);
  }
  if (sd.dacl) {
    w.patchU32(16, w.pos);
    const size = 8 + sd.dacl.reduce((n, a) => n + 8 + sidLength(a.sid), 0);
    w.u8(ACL_REVISION).u8(0).u16(size).u16(sd.dacl.length).u16(0);
    for (const a of sd.dacl) {
      w.u8(a.type)
        .u8(a.flags)
        .u16(8 + sidLength(a.sid))
        .u32(a.mask);
      writeSid(w, a.sid);
    }
  }
  return w.finish();
}

/**
 * Decodes a self-relative descriptor (SET_INFO's buffer). Every offset and length is checked
 * against the buffer; anything malformed is INVALID_SECURITY_DESCR. ACE types other than
 * allowed/denied are kept with their SID read when they have one of the basic layout.
 */
export function decodeSecurityDescriptor(b: Buffer): SecurityDescriptor {
  if (b.length < 20) throw invalid('descriptor shorter than 20 bytes');
  if (b[0] !== 1) throw invalid('descriptor revision is not 1');
  const control = b.readUInt16LE(2);
  if ((control & SE_SELF_RELATIVE) === 0) throw invalid('descriptor not self-relative');
  const ownerAt = b.readUInt32LE(4);
  const groupAt = b.readUInt32LE(8);
  const daclAt = b.readUInt32LE(16);
  const owner = ownerAt !== 0 ? readSid(b, ownerAt) : null;
  const group = groupAt !== 0 ? readSid(b, groupAt) : null;
  let dacl: Ace[] | null = null;
  if ((control & SE_DACL_PRESENT) !== 0 && daclAt !== 0) {
    if (daclAt + 8 > b.length) throw invalid('DACL outside the descriptor');
    const rev = b[daclAt]!;
    const size = b.readUInt16LE(daclAt + 2);
    const count = b.readUInt16LE(daclAt + 4);
    if ((rev !== 2 && rev !== 4) || size < 8 || daclAt + size > b.length) throw invalid('malformed DACL');
    const end = daclAt + size;
    dacl = [];
    let at = daclAt + 8;
    for (let i = 0; i < count; i++) {
      if (at + 8 > end) throw invalid('ACE outside its ACL');
      const type = b[at]!;
      const flags = b[at + 1]!;
      const aceSize = b.readUInt16LE(at + 2);
      if (aceSize < 8 || aceSize % 4 !== 0 || at + aceSize > end) throw invalid('malformed ACE');
      const mask = b.readUInt32LE(at + 4);
      if (type === AceType.ACCESS_ALLOWED || type === AceType.ACCESS_DENIED) {
        dacl.push({ type, flags, mask, sid: readSid(b, at + 8, at + aceSize) });
      }
      at += aceSize;
    }
  }
  return { control, owner, group, dacl };
}

// ---- POSIX mapping ------------------------------------------------------------------------------

/** MS-DTYP 2.4.3 rights each POSIX bit stands for (the generic file rights, as Samba maps them). */
const READ_RIGHTS = 0x00120089; // FILE_GENERIC_READ
const WRITE_RIGHTS = 0x00120116; // FILE_GENERIC_WRITE
const EXEC_RIGHTS = 0x001200a0; // FILE_GENERIC_EXECUTE
/** What the owner may always do besides its bits: read and change the descriptor and the attributes. */
const OWNER_RIGHTS = 0x000e0180; // READ_CONTROL | WRITE_DAC | WRITE_OWNER | FILE_READ/WRITE_ATTRIBUTES
const DELETE = 0x00010000;
const FILE_READ_DATA = 0x1;
const FILE_WRITE_DATA = 0x2;
const FILE_APPEND_DATA = 0x4;
const FILE_EXECUTE = 0x20;

function rightsOf(bits: number): number {
  let m = 0;
  if (bits & 4) m |= READ_RIGHTS;
  if (bits & 2) m |= WRITE_RIGHTS;
  if (bits & 1) m |= EXEC_RIGHTS;
  return m >>> 0;
}

function bitsOf(mask: number): number {
  // GENERIC_ALL / GENERIC_READ / GENERIC_WRITE / GENERIC_EXECUTE in an ACE count as what they map to.
  let bits = 0;
  if (mask & (FILE_READ_DATA | 0x80000000 | 0x10000000)) bits |= 4;
  if (mask & (FILE_WRITE_DATA | FILE_APPEND_DATA | 0x40000000 | 0x10000000)) bits |= 2;
  if (mask & (FILE_EXECUTE | 0x20000000 | 0x10000000)) bits |= 1;
  return bits;
}

/**
 * The descriptor QUERY_INFO returns for a file: what `info` asks of the owner (S-1-22-1-uid),
 * group (S-1-22-2-gid) and a DACL that says what the mode bits say (owner, group, Everyone).
 * No SACL is kept: asking for one returns none.
 */
export function describePosix(inode: Inode, info: number): Buffer {
  const mode = inode.mode;
  const dacl: Ace[] = [];
  if (info & SecurityInformation.DACL) {
    // The READONLY attribute is kept as cleared write bits (attrs.ts); on Windows it is no part of
    // the ACL, and setting it must not change the ACL a client reads (smbtorture smb2.winattr):
    // the owner's write is described as it was before.
    const owner = rightsOf(((mode >> 6) & 7) | (readOnly(inode) ? 2 : 0)) | OWNER_RIGHTS | DELETE;
    dacl.push({ type: AceType.ACCESS_ALLOWED, flags: 0, mask: owner >>> 0, sid: unixUserSid(inode.uid) });
    const group = rightsOf((mode >> 3) & 7);
    if (group) dacl.push({ type: AceType.ACCESS_ALLOWED, flags: 0, mask: group, sid: unixGroupSid(inode.gid) });
    const other = rightsOf(mode & 7);
    if (other) dacl.push({ type: AceType.ACCESS_ALLOWED, flags: 0, mask: other, sid: EVERYONE });
  }
  return encodeSecurityDescriptor({
    control: 0,
    owner: info & SecurityInformation.OWNER ? unixUserSid(inode.uid) : null,
    group: info & SecurityInformation.GROUP ? unixGroupSid(inode.gid) : null,
    dacl: info & SecurityInformation.DACL ? dacl : null,
  });
}

/** What a SET_INFO of a descriptor changes in POSIX terms. */
export interface PosixChange {
  uid?: number;
  gid?: number;
  mode?: number;
}

/**
 * The POSIX change a SET_INFO of `sd` (with AdditionalInformation `info`) stands for on `inode`.
 * The owner and group must be unix SIDs (INVALID_OWNER / INVALID_PRIMARY_GROUP otherwise). A DACL
 * becomes the rwx bits of owner, group and other: an allowed ACE for the owner (or CREATOR OWNER)
 * gives owner bits, for the group (or CREATOR GROUP) group bits, for Everyone, BUILTIN\Users or
 * Authenticated Users the bits of all three (everyUser); a denied ACE takes bits away from the same classes; inherit-only ACEs do not apply to the
 * file itself; ACEs for other SIDs have no POSIX counterpart and change nothing. A NULL DACL
 * (nobody refused) is mode 0777. setuid/setgid/sticky stay as they are.
 */
export function posixChangeOf(
  sd: SecurityDescriptor,
  info: number,
  inode: Pick<Inode, 'type' | 'uid' | 'gid' | 'mode' | 'dosAttrs'>,
): PosixChange {
  const out: PosixChange = {};
  if (info & SecurityInformation.OWNER) {
    if (!sd.owner) throw new SmbStatusError(NtStatus.INVALID_OWNER, 'no owner in the descriptor');
    const uid = unixId(sd.owner, 1);
    if (uid === null) throw new SmbStatusError(NtStatus.INVALID_OWNER, `owner ${sidString(sd.owner)} is not a unix user`);
    if (uid !== inode.uid) out.uid = uid;
  }
  if (info & SecurityInformation.GROUP) {
    if (!sd.group) throw new SmbStatusError(NtStatus.INVALID_PRIMARY_GROUP, 'no group in the descriptor');
    const gid = unixId(sd.group, 2);
    if (gid === null) throw new SmbStatusError(NtStatus.INVALID_PRIMARY_GROUP, `group ${sidString(sd.group)} is not a unix group`);
    if (gid !== inode.gid) out.gid = gid;
  }
  if (info & SecurityInformation.DACL) {
    const ownerSid = unixUserSid(out.uid ?? inode.uid);
    const groupSid = unixGroupSid(out.gid ?? inode.gid);
    let bits = 0o777;
    if (sd.dacl !== null) {
      const allow = [0, 0, 0];
      const deny = [0, 0, 0];
      for (const a of sd.dacl) {
        if (a.flags & INHERIT_ONLY_ACE) continue;
        const b = bitsOf(a.mask);
        const to = a.type === AceType.ACCESS_ALLOWED ? allow : deny;
        if (sidEqual(a.sid, EVERYONE) || everyUser(a.sid)) {
          to[0]! |= b;
          to[1]! |= b;
          to[2]! |= b;
        } else if (sidEqual(a.sid, ownerSid) || sidEqual(a.sid, CREATOR_OWNER)) to[0]! |= b;
        else if (sidEqual(a.sid, groupSid) || sidEqual(a.sid, CREATOR_GROUP)) to[1]! |= b;
      }
      bits = (((allow[0]! & ~deny[0]!) << 6) | ((allow[1]! & ~deny[1]!) << 3) | (allow[2]! & ~deny[2]!)) & 0o777;
    }
    // READONLY wins over the DACL's write (clearing the attribute gives the owner write back).
    if (readOnly(inode)) bits &= ~0o222;
    // A directory keeps its search bit where it has read: a listable directory that cannot be
    // entered is not what a Windows "read" on a folder means.
    if (inode.type === FileType.DIR) for (const s of [6, 3, 0]) if ((bits >> s) & 4) bits |= 1 << s;
    const mode = (inode.mode & ~0o777) | bits;
    if (mode !== inode.mode) out.mode = mode;
  }
  return out;
}

/**
 * Refuses an owner or group change `id` may not make, with the status Windows gives for an owner
 * (INVALID_OWNER) or primary group (INVALID_PRIMARY_GROUP) the caller may not assign, before the
 * vfs would refuse it as NFS SETATTR does: root gives any owner and group; anyone else keeps the
 * owner (chown(2)) and, owning the file, gives it one of their own groups. `id` is the caller as
 * the vfs sees it (FileService.identity: after the share's root squash).
 */
export function checkOwnerChange(change: PosixChange, id: Identity, fileUid: number): void {
  if (id.uid === 0) return;
  if (change.uid !== undefined && change.uid !== fileUid)
    throw new SmbStatusError(NtStatus.INVALID_OWNER, `only root gives a file to uid ${change.uid}`);
  if (change.gid !== undefined && (id.uid !== fileUid || !inGroup(id, change.gid)))
    throw new SmbStatusError(NtStatus.INVALID_PRIMARY_GROUP, `gid ${change.gid} is not a group of the owner`);
}

/**
 * The owner and group a SecD create context gives a new file (MS-SMB2 2.2.13.2.2): unix SIDs
 * only, and only what checkOwnerChange lets the creator (the default owner) give; else the
 * status, before anything is made.
 */
export function newFileOwner(sd: SecurityDescriptor, id: Identity): PosixChange {
  const out: PosixChange = {};
  if (sd.owner) {
    const uid = unixId(sd.owner, 1);
    if (uid === null) throw new SmbStatusError(NtStatus.INVALID_OWNER, `owner ${sidString(sd.owner)} is not a unix user`);
    out.uid = uid;
  }
  if (sd.group) {
    const gid = unixId(sd.group, 2);
    if (gid === null) throw new SmbStatusError(NtStatus.INVALID_PRIMARY_GROUP, `group ${sidString(sd.group)} is not a unix group`);
    out.gid = gid;
  }
  checkOwnerChange(out, id, id.uid);
  return out;
}

/**
 * BUILTIN\Users and Authenticated Users: every user who logs on with his own credentials, the
 * owner and the group's members among them. POSIX has no class for them but "everybody": like
 * Everyone, such an ACE gives (or takes) the bits of owner, group and other. The rest of "other"
 * (SMB guest and anonymous sessions) are held off by the DACL itself, which is kept and evaluated
 * beside the mode (acl.ts): their tokens hold neither SID. An NFS caller is taken for who AUTH_SYS
 * says he is, as an authenticated user. BUILTIN\Administrators maps to nothing: its only member
 * here is root (acl.ts tokenSids), whom no mode bit binds.
 */
const everyUser = (s: Sid): boolean => sidEqual(s, BUILTIN_USERS) || sidEqual(s, AUTHENTICATED_USERS);

const readOnly = (inode: Pick<Inode, 'type' | 'dosAttrs'>): boolean =>
  inode.type !== FileType.DIR && (inode.dosAttrs & DosAttributes.READONLY) !== 0;

/** The uid (kind 1) or gid (kind 2) a unix SID names, or null. */
function unixId(s: Sid, kind: 1 | 2): number | null {
  if (s.authority !== 22 || s.subAuthorities.length !== 2 || s.subAuthorities[0] !== kind) return null;
  return s.subAuthorities[1]!;
}
