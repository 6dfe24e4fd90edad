// Stored NT ACLs: the DACL a client sets (SET_INFO security, the SecD create context) or a new file
// inherits from its directory (MS-DTYP 2.5.3.4, simplified), kept per inode in the metadata store
// (InodeMetaKind.SECURITY: one self-relative descriptor holding the control bits and the DACL), and
// evaluated in SMB access checks (MS-DTYP 2.5.3.2).
//
// How NFS and SMB stay in agreement:
// - Without a stored DACL, security.ts maps the POSIX owner, group and mode both ways (as before).
// - A stored DACL only takes away: an SMB open needs what the POSIX check grants AND what the DACL
//   grants, so a user can never do over SMB what NFS refuses him. NFS follows the mode bits alone.
// - The owner and group are never stored: they are always the inode's (chown by either protocol
//   shows at once). A change of the permission bits (chmod over NFS, SMB's READONLY attribute,
//   SET_INFO of a DACL, which maps it to mode bits first) drops the stored DACL (vfs/service.ts
//   setattr): from then on the mode is the whole truth again, until a client sets a DACL anew.
import type { MetadataStore } from '../meta/store.js';
import { InodeMetaKind } from '../meta/store.js';
import type { Identity, Inode } from '../vfs/types.js';
import { FileType } from '../vfs/types.js';
import { mapGenericRights } from './files.js';
import {
  type Ace,
  AceType,
  AUTHENTICATED_USERS,
  BUILTIN_ADMINISTRATORS,
  BUILTIN_USERS,
  CREATOR_GROUP,
  CREATOR_OWNER,
  decodeSecurityDescriptor,
  describePosix,
  encodeSecurityDescriptor,
  EVERYONE,
  type SecurityDescriptor,
  SecurityInformation,
  sidEqual,
  type Sid,
  unixGroupSid,
  unixUserSid,
} from './security.js';
import { NtStatus, SmbStatusError } from './status.js';

/** Largest descriptor kept for one file, and most ACEs in its DACL. */
export const SD_BYTES_MAX = 65536;
export const SD_ACES_MAX = 1024;
const SD_LIMITS = Object.freeze({ count: 1, bytes: SD_BYTES_MAX });
const NAME = Buffer.alloc(0);

/** MS-DTYP 2.4.4.1 ACE flags. */
export const AceFlags = Object.freeze({
  OBJECT_INHERIT: 0x01,
  CONTAINER_INHERIT: 0x02,
  NO_PROPAGATE_INHERIT: 0x04,
  INHERIT_ONLY: 0x08,
  INHERITED: 0x10,
} as const);

const DELETE = 0x00010000;
const FILE_DELETE_CHILD = 0x00000040;
const READ_CONTROL = 0x00020000;
const WRITE_DAC = 0x00040000;
/** Access bits the DACL does not decide (MAXIMUM_ALLOWED is a request, ACCESS_SYSTEM_SECURITY a privilege). */
const NOT_BY_DACL = 0x02000000 | 0x01000000;

/** SE_DACL_PRESENT: with no DACL, a NULL DACL (nobody refused), which a client may set and read back. */
const SE_DACL_PRESENT = 0x0004;

/**
 * The DACL stored for an inode (null: none, the POSIX mapping applies). A stored NULL DACL comes
 * back with `dacl` null and SE_DACL_PRESENT in `control`.
 */
export async function storedDacl(meta: MetadataStore, inodeId: number): Promise<SecurityDescriptor | null> {
  const r = (await meta.getMeta(inodeId, InodeMetaKind.SECURITY))[0];
  return r ? decodeSecurityDescriptor(r.value) : null;
}

/** encodeSecurityDescriptor, with SE_DACL_PRESENT kept for a NULL DACL. */
function encodeWithNullDacl(sd: SecurityDescriptor): Buffer {
  const b = encodeSecurityDescriptor(sd);
  if (sd.dacl === null && (sd.control & SE_DACL_PRESENT) !== 0) b.writeUInt16LE(b.readUInt16LE(2) | SE_DACL_PRESENT, 2);
  return b;
}

/** The stored form of a DACL: INVALID_SECURITY_DESCR past the caps (checked before anything changes). */
export function storedForm(sd: { control: number; dacl: Ace[] | null }): Buffer {
  if (sd.dacl !== null && sd.dacl.length > SD_ACES_MAX) throw new SmbStatusError(NtStatus.INVALID_SECURITY_DESCR, 'more than 1024 ACEs');
  const control = sd.dacl === null ? sd.control | SE_DACL_PRESENT : sd.control;
  const value = encodeWithNullDacl({ control, owner: null, group: null, dacl: sd.dacl });
  if (value.length > SD_BYTES_MAX) throw new SmbStatusError(NtStatus.INVALID_SECURITY_DESCR, 'descriptor past 64 KiB');
  return value;
}

/** Keeps `dacl` (with the descriptor's control bits; a null `dacl` is a NULL DACL) as the inode's; null drops the stored one. */
export async function storeDacl(meta: MetadataStore, inodeId: number, sd: { control: number; dacl: Ace[] | null } | null): Promise<void> {
  await meta.putMeta(inodeId, InodeMetaKind.SECURITY, [{ name: NAME, value: sd === null ? null : storedForm(sd) }], SD_LIMITS);
}

/**
 * QUERY_INFO's descriptor: the POSIX mapping (security.ts), with the stored DACL in place of the
 * mapped one when there is one. Owner and group are always the inode's.
 */
export function describe(inode: Inode, stored: SecurityDescriptor | null, info: number): Buffer {
  if (stored === null || (info & SecurityInformation.DACL) === 0) return describePosix(inode, info);
  return encodeWithNullDacl({
    control: stored.control,
    owner: info & SecurityInformation.OWNER ? unixUserSid(inode.uid) : null,
    group: info & SecurityInformation.GROUP ? unixGroupSid(inode.gid) : null,
    dacl: stored.dacl,
  });
}

/**
 * How a session logged on: a user who proved who he is, the guest account (SMB2_SESSION_FLAG_IS_GUEST)
 * or an anonymous (NULL) logon. Only a `user` is an authenticated user.
 */
export type Logon = 'user' | 'guest' | 'anonymous';

export const logonOf = (s: { anonymous?: boolean; guest?: boolean }): Logon =>
  s.anonymous === true ? 'anonymous' : s.guest === true ? 'guest' : 'user';

/**
 * The SIDs of a session's token: its unix user and groups and Everyone; for a user who logged on
 * with his own credentials also Authenticated Users and BUILTIN\Users, which Windows and Samba put
 * in every such token (and neither in a guest's or an anonymous one: MS-DTYP 2.4.2.4 Authenticated
 * Users is the users "authenticated when they logged on"); for uid 0, root, BUILTIN\Administrators,
 * as Samba gives root. `id` is the caller after the share's root squash: a squashed root is not root.
 * A control-plane admin is no Administrator here: that role manages the server, not files, and no
 * file permission follows from it over NFS either.
 */
export function tokenSids(id: Identity, logon: Logon): Sid[] {
  const out = [unixUserSid(id.uid), unixGroupSid(id.gid)];
  for (const g of id.gids) if (g !== id.gid) out.push(unixGroupSid(g));
  out.push(EVERYONE);
  if (logon !== 'user') return out;
  out.push(AUTHENTICATED_USERS, BUILTIN_USERS);
  if (id.uid === 0) out.push(BUILTIN_ADMINISTRATORS);
  return out;
}

/**
 * MS-DTYP 2.5.3.2, without privileges and object ACEs: what `dacl` grants the token. ACEs are
 * taken in order; an allowed ACE grants the bits no earlier ACE denied, a denied ACE refuses the
 * bits no earlier ACE granted; inherit-only ACEs do not apply to the object itself. The owner
 * always has READ_CONTROL and WRITE_DAC (no OWNER RIGHTS ACE is honoured here).
 */
export function daclGrants(dacl: readonly Ace[], token: readonly Sid[], isOwner: boolean): number {
  let granted = isOwner ? READ_CONTROL | WRITE_DAC : 0;
  let denied = 0;
  for (const a of dacl) {
    if ((a.flags & AceFlags.INHERIT_ONLY) !== 0) continue;
    if (!token.some((s) => sidEqual(s, a.sid))) continue;
    const mask = mapGenericRights(a.mask);
    if (a.type === AceType.ACCESS_ALLOWED) granted |= mask & ~denied;
    else if (a.type === AceType.ACCESS_DENIED) denied |= mask & ~granted;
  }
  return granted >>> 0;
}

/** The token `id`, logged on as `logon`, is judged with by the DACL of `inode`. */
function tokenFor(inode: Inode, id: Identity, logon: Logon): Sid[] {
  const token = tokenSids(id, logon);
  // CREATOR OWNER / CREATOR GROUP on the object itself stand for its owner and group, as in the
  // POSIX mapping of a DACL (security.ts posixChangeOf), so that both read a DACL alike.
  if (id.uid === inode.uid) token.push(CREATOR_OWNER);
  if (id.gid === inode.gid || id.gids.includes(inode.gid)) token.push(CREATOR_GROUP);
  return token;
}

/** What `dacl`, stored for `inode`, lets `id` have (with the bits a DACL does not decide). */
export function grantsOf(dacl: readonly Ace[], inode: Inode, id: Identity, logon: Logon): number {
  return (daclGrants(dacl, tokenFor(inode, id, logon), id.uid === inode.uid) | NOT_BY_DACL) >>> 0;
}

/**
 * What the stored DACLs let `id` have of `inode` (all bits when it has none). DELETE also comes
 * from FILE_DELETE_CHILD on the directory (MS-FSA 2.1.5.1.2.1), whose DACL, or without one the
 * POSIX write permission `parentWritable`, decides.
 */
export async function daclMask(
  meta: MetadataStore,
  inode: Inode,
  id: Identity,
  logon: Logon,
  parent: (() => Promise<Inode>) | null,
  mayWriteDir: (dir: Inode) => boolean,
): Promise<number> {
  const sd = await storedDacl(meta, inode.id);
  if (sd === null || sd.dacl === null) return 0xffffffff;
  const token = tokenFor(inode, id, logon);
  let mask = daclGrants(sd.dacl, token, id.uid === inode.uid) | NOT_BY_DACL;
  if ((mask & DELETE) === 0 && parent !== null) {
    const dir = await parent();
    const dirSd = await storedDacl(meta, dir.id);
    const childDelete =
      dirSd === null || dirSd.dacl === null ? mayWriteDir(dir) : (daclGrants(dirSd.dacl, token, false) & FILE_DELETE_CHILD) !== 0;
    if (childDelete) mask |= DELETE;
  }
  return mask >>> 0;
}

/**
 * MS-DTYP 2.5.3.4.1, simplified: the DACL a new file or directory inherits from its directory's
 * stored one (null: nothing inheritable, the POSIX mapping applies). A file takes the ACEs marked
 * OBJECT_INHERIT; a directory those marked CONTAINER_INHERIT (keeping their inheritance unless
 * NO_PROPAGATE_INHERIT), and the OBJECT_INHERIT-only ones as inherit-only for its files. Every
 * inherited ACE is marked INHERITED; CREATOR OWNER / CREATOR GROUP become the new owner and group.
 */
export function inheritDacl(parent: SecurityDescriptor | null, isDir: boolean, owner: Sid, group: Sid): Ace[] | null {
  if (parent === null || parent.dacl === null) return null;
  const out: Ace[] = [];
  const { OBJECT_INHERIT: OI, CONTAINER_INHERIT: CI, NO_PROPAGATE_INHERIT: NP, INHERIT_ONLY: IO, INHERITED } = AceFlags;
  for (const a of parent.dacl) {
    const s = sidEqual(a.sid, CREATOR_OWNER) ? owner : sidEqual(a.sid, CREATOR_GROUP) ? group : a.sid;
    if (!isDir) {
      if (a.flags & OI) out.push({ type: a.type, flags: INHERITED, mask: a.mask, sid: s });
    } else if (a.flags & CI) {
      const keep = a.flags & NP ? 0 : a.flags & (OI | CI);
      if (keep && s !== a.sid) {
        // A CREATOR ACE: effective for the new owner here, inherited on as it was.
        out.push({ type: a.type, flags: INHERITED, mask: a.mask, sid: s });
        out.push({ type: a.type, flags: INHERITED | IO | keep, mask: a.mask, sid: a.sid });
      } else out.push({ type: a.type, flags: INHERITED | keep, mask: a.mask, sid: s });
    } else if (a.flags & OI && !(a.flags & NP)) {
      out.push({ type: a.type, flags: INHERITED | IO | OI, mask: a.mask, sid: a.sid });
    }
  }
  return out.length === 0 ? null : out;
}

/**
 * A new inode's DACL: the one a CREATE gave (SecD), else its directory's inheritable ACEs (from
 * `parentSd`, the directory's stored descriptor when the caller read it already).
 */
export async function newInodeDacl(
  meta: MetadataStore,
  parentId: number,
  inode: Inode,
  given: SecurityDescriptor | null,
  parentSd?: SecurityDescriptor | null,
): Promise<void> {
  if (given !== null && given.dacl !== null) {
    await storeDacl(meta, inode.id, { control: given.control, dacl: given.dacl });
    return;
  }
  const inherited = inheritDacl(
    parentSd === undefined ? await storedDacl(meta, parentId) : parentSd,
    inode.type === FileType.DIR,
    unixUserSid(inode.uid),
    unixGroupSid(inode.gid),
  );
  if (inherited) await storeDacl(meta, inode.id, { control: 0, dacl: inherited });
}
