// Security descriptors (security.ts): the MS-DTYP codec, and the mapping to and from the POSIX
// owner, group and mode that QUERY_INFO and SET_INFO of InfoType SECURITY use.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DosAttributes, FileType, type Inode } from '../vfs/types.js';
import {
  AceType,
  AUTHENTICATED_USERS,
  BUILTIN_ADMINISTRATORS,
  BUILTIN_USERS,
  CREATOR_OWNER,
  decodeSecurityDescriptor,
  describePosix,
  encodeSecurityDescriptor,
  EVERYONE,
  posixChangeOf,
  sid,
  sidString,
  SecurityInformation as SI,
  unixGroupSid,
  unixUserSid,
  type SecurityDescriptor,
} from './security.js';
import { NtStatus, SmbStatusError } from './status.js';

const T = { sec: 0, nsec: 0 };
const inode = (mode: number, type: FileType = FileType.REG): Inode =>
  ({
    id: 7,
    shareId: 1,
    type,
    mode,
    uid: 1000,
    gid: 100,
    dosAttrs: 0,
    size: 0,
    nlink: 1,
    atime: T,
    mtime: T,
    ctime: T,
    btime: T,
  }) as unknown as Inode;
const ALL = SI.OWNER | SI.GROUP | SI.DACL;
const allow = (s: ReturnType<typeof sid>, mask: number, flags = 0) => ({ type: AceType.ACCESS_ALLOWED, flags, mask, sid: s });
const statusOf = (fn: () => unknown): number => {
  try {
    fn();
    return NtStatus.SUCCESS;
  } catch (e) {
    if (e instanceof SmbStatusError) return e.status;
    throw e;
  }
};

describe('security descriptors', () => {
  it('describes mode 0754 as owner/group/Everyone ACEs with the unix SIDs, only the parts asked for', () => {
    const sd = decodeSecurityDescriptor(describePosix(inode(0o754), ALL));
    assert.equal(sidString(sd.owner!), 'S-1-22-1-1000');
    assert.equal(sidString(sd.group!), 'S-1-22-2-100');
    assert.deepEqual(
      sd.dacl!.map((a) => [sidString(a.sid), a.type]),
      [
        ['S-1-22-1-1000', AceType.ACCESS_ALLOWED],
        ['S-1-22-2-100', AceType.ACCESS_ALLOWED],
        ['S-1-1-0', AceType.ACCESS_ALLOWED],
      ],
    );
    assert.equal(sd.dacl![0]!.mask & 0x7, 0x7, 'owner reads, writes, appends');
    assert.equal(sd.dacl![1]!.mask & 0x22, 0x20, 'group executes, does not write');
    assert.equal(sd.dacl![2]!.mask & 0x23, 0x1, 'others only read');
    const ownerOnly = decodeSecurityDescriptor(describePosix(inode(0o754), SI.OWNER));
    assert.deepEqual([ownerOnly.group, ownerOnly.dacl], [null, null]);
    // A descriptor read back and set again changes nothing (what Explorer's "Apply" does).
    assert.deepEqual(posixChangeOf(decodeSecurityDescriptor(describePosix(inode(0o754), ALL)), ALL, inode(0o754)), {});
  });

  it('maps a DACL back to mode bits: owner, CREATOR OWNER, Everyone, denials; other SIDs change nothing', () => {
    const sd = (dacl: SecurityDescriptor['dacl']): SecurityDescriptor => ({ control: 0, owner: null, group: null, dacl });
    // compound.related4: read-only for CREATOR OWNER: the owner can no longer write.
    assert.deepEqual(posixChangeOf(sd([allow(CREATOR_OWNER, 0x001f0089)]), SI.DACL, inode(0o644)), { mode: 0o400 });
    assert.deepEqual(posixChangeOf(sd([allow(EVERYONE, 0x001f01ff)]), SI.DACL, inode(0o600)), { mode: 0o777 });
    assert.deepEqual(
      posixChangeOf(sd([{ ...allow(EVERYONE, 0x2), type: AceType.ACCESS_DENIED }, allow(EVERYONE, 0x10000000)]), SI.DACL, inode(0o600)),
      { mode: 0o555 },
      'GENERIC_ALL minus a denied write',
    );
    // What Explorer and icacls write: BUILTIN\Users and Authenticated Users are every user who logs
    // on, so their ACEs count as Everyone's; BUILTIN\Administrators (root here) maps to nothing.
    const owner = allow(unixUserSid(1000), 0x001f01ff);
    assert.deepEqual(posixChangeOf(sd([owner, allow(BUILTIN_USERS, 0x001301bf)]), SI.DACL, inode(0o600)), { mode: 0o777 });
    assert.deepEqual(posixChangeOf(sd([owner, allow(AUTHENTICATED_USERS, 0x00120089)]), SI.DACL, inode(0o600)), { mode: 0o744 });
    assert.deepEqual(
      posixChangeOf(
        sd([{ ...allow(BUILTIN_USERS, 0x2), type: AceType.ACCESS_DENIED }, allow(EVERYONE, 0x001f01ff)]),
        SI.DACL,
        inode(0o600),
      ),
      { mode: 0o555 },
      'a denied write for Users',
    );
    assert.deepEqual(posixChangeOf(sd([owner, allow(BUILTIN_ADMINISTRATORS, 0x001f01ff)]), SI.DACL, inode(0o600)), { mode: 0o700 });
    // session.reauth4 adds NT AUTHORITY\ANONYMOUS LOGON: nothing in POSIX to give it.
    const withAnon = decodeSecurityDescriptor(describePosix(inode(0o640), ALL));
    withAnon.dacl!.push(allow(sid(5, 7), 0x001f01ff));
    assert.deepEqual(posixChangeOf(withAnon, SI.DACL, inode(0o640)), {});
    assert.deepEqual(posixChangeOf(sd([allow(unixGroupSid(100), 0x1, 0x08)]), SI.DACL, inode(0o640)), { mode: 0o000 }, 'inherit-only');
    assert.deepEqual(posixChangeOf(sd(null), SI.DACL, inode(0o4600)), { mode: 0o4777 }, 'a NULL DACL; setuid kept');
    assert.deepEqual(posixChangeOf(sd([allow(unixUserSid(1000), 0x1)]), SI.DACL, inode(0o700, FileType.DIR)), { mode: 0o500 });
    // READONLY (kept as cleared write bits) is not in the ACL: the owner's write reads the same,
    // and setting that ACL back leaves the file read-only.
    const ro = { ...inode(0o444), dosAttrs: DosAttributes.READONLY } as Inode;
    const rw = decodeSecurityDescriptor(describePosix(inode(0o644), SI.DACL)).dacl;
    assert.deepEqual(decodeSecurityDescriptor(describePosix(ro, SI.DACL)).dacl, rw);
    assert.deepEqual(posixChangeOf(sd(rw), SI.DACL, ro), {});
  });

  it('owner and group must be unix SIDs; a malformed descriptor is INVALID_SECURITY_DESCR', () => {
    const sd: SecurityDescriptor = { control: 0, owner: unixUserSid(0), group: unixGroupSid(5), dacl: null };
    assert.deepEqual(posixChangeOf(sd, SI.OWNER | SI.GROUP, inode(0o644)), { uid: 0, gid: 5 });
    assert.equal(
      statusOf(() => posixChangeOf({ ...sd, owner: EVERYONE }, SI.OWNER, inode(0o644))),
      NtStatus.INVALID_OWNER,
    );
    assert.equal(
      statusOf(() => posixChangeOf({ ...sd, group: null }, SI.GROUP, inode(0o644))),
      NtStatus.INVALID_PRIMARY_GROUP,
    );
    const good = encodeSecurityDescriptor({ control: 0, owner: unixUserSid(1), group: null, dacl: [allow(EVERYONE, 1)] });
    assert.equal(
      statusOf(() => decodeSecurityDescriptor(good.subarray(0, good.length - 1))),
      NtStatus.INVALID_SECURITY_DESCR,
    );
    const notSelfRelative = Buffer.from(good);
    notSelfRelative.writeUInt16LE(0x0004, 2);
    assert.equal(
      statusOf(() => decodeSecurityDescriptor(notSelfRelative)),
      NtStatus.INVALID_SECURITY_DESCR,
    );
  });

  it('round-trips; arbitrary bytes decode or fail with INVALID_SECURITY_DESCR, nothing else', () => {
    const sidArb = fc.record({
      authority: fc.integer({ min: 0, max: 2 ** 48 - 1 }),
      subAuthorities: fc.array(fc.nat({ max: 2 ** 32 - 1 }), { maxLength: 15 }),
    });
    const aceArb = fc.record({ type: fc.constantFrom(0, 1), flags: fc.nat({ max: 255 }), mask: fc.nat({ max: 2 ** 32 - 1 }), sid: sidArb });
    fc.assert(
      fc.property(fc.option(sidArb), fc.option(sidArb), fc.option(fc.array(aceArb, { maxLength: 8 })), (owner, group, dacl) => {
        const sd: SecurityDescriptor = { control: 0, owner, group, dacl };
        const back = decodeSecurityDescriptor(encodeSecurityDescriptor(sd));
        // (fast-check's records have no prototype: compare plain copies.)
        const plain = (x: unknown): unknown => JSON.parse(JSON.stringify(x));
        assert.deepEqual(plain({ owner: back.owner, group: back.group, dacl: back.dacl }), plain({ owner, group, dacl }));
      }),
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const s = statusOf(() => decodeSecurityDescriptor(Buffer.from(bytes)));
        assert.ok(s === NtStatus.SUCCESS || s === NtStatus.INVALID_SECURITY_DESCR);
      }),
    );
  });
});
