// Stored DACLs (acl.ts): the MS-DTYP 2.5.3.2 evaluation, 2.5.3.4 inheritance as simplified here,
// the store round trip with its caps, and the rule that a stored DACL only takes away.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { MemoryMetadataStore } from '../meta/memory.js';
import { dirInit, fileInit } from '../testing/inodes.js';
import type { Identity } from '../vfs/types.js';
import {
  AceFlags,
  daclGrants,
  daclMask,
  describe as describeSd,
  inheritDacl,
  SD_ACES_MAX,
  storedDacl,
  storeDacl,
  tokenSids,
} from './acl.js';
import {
  type Ace,
  AceType,
  AUTHENTICATED_USERS,
  BUILTIN_ADMINISTRATORS,
  BUILTIN_USERS,
  CREATOR_OWNER,
  decodeSecurityDescriptor,
  encodeSecurityDescriptor,
  EVERYONE,
  SecurityInformation as SI,
  sid,
  unixGroupSid,
  unixUserSid,
} from './security.js';
import { NtStatus, SmbStatusError } from './status.js';
import { memoryServer } from '../testing/memory-server.js';
import { Access, CreateDisposition, FileInfoClass } from './constants.js';
import * as files from './files.js';
import { alice, close, create, createRequest, fileContext, status } from './testing.js';
import { decodeStreamInformation } from './streams.js';
import { EA_KIND, encodeFullEaList } from './ea.js';

const ALLOW = AceType.ACCESS_ALLOWED;
const DENY = AceType.ACCESS_DENIED;
const me: Identity = { uid: 1000, gid: 100, gids: [100, 200] };
const token = tokenSids(me, 'user');
const ace = (type: number, mask: number, s = unixUserSid(1000), flags = 0): Ace => ({ type, flags, mask, sid: s });
const DELETE = 0x10000;
const READ_DATA = 0x1;
const WRITE_DATA = 0x2;
const DELETE_CHILD = 0x40;

describe('DACL evaluation (MS-DTYP 2.5.3.2)', () => {
  it('ACEs in order: an earlier deny wins over a later allow and the reverse; other SIDs and inherit-only ACEs do not count', () => {
    assert.equal(daclGrants([ace(DENY, WRITE_DATA), ace(ALLOW, READ_DATA | WRITE_DATA)], token, false), READ_DATA);
    assert.equal(daclGrants([ace(ALLOW, READ_DATA | WRITE_DATA), ace(DENY, WRITE_DATA)], token, false), READ_DATA | WRITE_DATA);
    assert.equal(daclGrants([ace(ALLOW, READ_DATA, unixUserSid(5))], token, false), 0);
    assert.equal(daclGrants([ace(ALLOW, READ_DATA, unixUserSid(1000), AceFlags.INHERIT_ONLY)], token, false), 0);
    // Groups of the token, Everyone; generic rights mapped.
    assert.equal(daclGrants([ace(ALLOW, READ_DATA, unixGroupSid(200))], token, false), READ_DATA);
    assert.equal(daclGrants([ace(ALLOW, 0x80000000, EVERYONE)], token, false), 0x00120089);
    // The owner keeps READ_CONTROL and WRITE_DAC.
    assert.equal(daclGrants([], token, true), 0x00020000 | 0x00040000);
  });

  it('a stored DACL only takes away; DELETE also comes from the directory', async () => {
    const m = new MemoryMetadataStore();
    const root = await m.ensureRoot(1, dirInit());
    const dir = await m.create(root.id, Buffer.from('d'), dirInit({ uid: 1000, gid: 100 }), { sec: 1, nsec: 0 });
    const f = await m.create(dir.id, Buffer.from('f'), fileInit({ uid: 1000, gid: 100 }), { sec: 1, nsec: 0 });
    const parent = async () => dir;
    assert.equal(await daclMask(m, f, me, 'user', parent, () => true), 0xffffffff, 'no stored DACL: nothing taken');
    await storeDacl(m, f.id, { control: 0, dacl: [ace(ALLOW, READ_DATA | WRITE_DATA)] });
    // The directory has no DACL: its POSIX write permission decides FILE_DELETE_CHILD.
    assert.equal((await daclMask(m, f, me, 'user', parent, () => true)) & DELETE, DELETE);
    assert.equal((await daclMask(m, f, me, 'user', parent, () => false)) & DELETE, 0);
    await storeDacl(m, dir.id, { control: 0, dacl: [ace(ALLOW, READ_DATA)] });
    const mask = await daclMask(m, f, me, 'user', parent, () => true);
    assert.equal(mask & DELETE, 0, 'the directory DACL does not grant FILE_DELETE_CHILD');
    assert.equal(mask & (READ_DATA | WRITE_DATA), READ_DATA | WRITE_DATA);
    await storeDacl(m, dir.id, { control: 0, dacl: [ace(ALLOW, DELETE_CHILD)] });
    assert.equal((await daclMask(m, f, me, 'user', parent, () => false)) & DELETE, DELETE);
  });
});

describe('inheritance (MS-DTYP 2.5.3.4, simplified)', () => {
  const owner = unixUserSid(7);
  const group = unixGroupSid(8);
  const parent = (dacl: Ace[]) => ({ control: 0, owner: null, group: null, dacl });
  const { OBJECT_INHERIT: OI, CONTAINER_INHERIT: CI, NO_PROPAGATE_INHERIT: NP, INHERIT_ONLY: IO, INHERITED } = AceFlags;

  it('files take OBJECT_INHERIT ACEs, directories CONTAINER_INHERIT ones (and OI-only as inherit-only)', () => {
    const p = parent([
      ace(ALLOW, 1, EVERYONE, OI),
      ace(ALLOW, 2, EVERYONE, CI),
      ace(DENY, 4, EVERYONE, 0),
      ace(ALLOW, 8, EVERYONE, OI | CI | NP),
    ]);
    assert.deepEqual(
      inheritDacl(p, false, owner, group)?.map((a) => [a.mask, a.flags]),
      [
        [1, INHERITED],
        [8, INHERITED],
      ],
    );
    assert.deepEqual(
      inheritDacl(p, true, owner, group)?.map((a) => [a.mask, a.flags]),
      [
        [1, INHERITED | IO | OI],
        [2, INHERITED | CI],
        [8, INHERITED],
      ],
    );
    assert.equal(inheritDacl(parent([ace(ALLOW, 1, EVERYONE, 0)]), false, owner, group), null, 'nothing inheritable');
    assert.equal(inheritDacl(null, false, owner, group), null);
  });

  it('CREATOR OWNER becomes the new owner (and stays inheritable on directories)', () => {
    const p = parent([ace(ALLOW, 1, CREATOR_OWNER, OI | CI)]);
    assert.deepEqual(inheritDacl(p, false, owner, group), [{ type: ALLOW, flags: INHERITED, mask: 1, sid: owner }]);
    assert.deepEqual(inheritDacl(p, true, owner, group), [
      { type: ALLOW, flags: INHERITED, mask: 1, sid: owner },
      { type: ALLOW, flags: INHERITED | IO | OI | CI, mask: 1, sid: CREATOR_OWNER },
    ]);
  });
});

describe('stored descriptors', () => {
  it('round-trip through the store; QUERY_INFO shows the stored DACL with the inode owner and group; caps', async () => {
    const m = new MemoryMetadataStore();
    const root = await m.ensureRoot(1, dirInit());
    const f = await m.create(root.id, Buffer.from('f'), fileInit({ uid: 1000, gid: 100, mode: 0o644 }), { sec: 1, nsec: 0 });
    assert.equal(await storedDacl(m, f.id), null);
    const dacl = [ace(ALLOW, 0x1f01ff, sid(5, 32, 1234, 5432)), ace(DENY, WRITE_DATA, EVERYONE, AceFlags.INHERITED)];
    await storeDacl(m, f.id, { control: 0x1000, dacl });
    const got = decodeSecurityDescriptor(describeSd(f, await storedDacl(m, f.id), SI.OWNER | SI.GROUP | SI.DACL));
    assert.deepEqual(got.dacl, dacl);
    assert.deepEqual([got.owner, got.group], [unixUserSid(1000), unixGroupSid(100)]);
    assert.equal(got.control & 0x1000, 0x1000, 'DACL_PROTECTED kept');
    // Without DACL in AdditionalInformation: none returned.
    assert.equal(decodeSecurityDescriptor(describeSd(f, await storedDacl(m, f.id), SI.OWNER)).dacl, null);
    await storeDacl(m, f.id, null);
    assert.equal(await storedDacl(m, f.id), null);
    const many = Array.from({ length: SD_ACES_MAX + 1 }, () => ace(ALLOW, 1));
    await assert.rejects(
      storeDacl(m, f.id, { control: 0, dacl: many }),
      (e) => e instanceof SmbStatusError && e.status === NtStatus.INVALID_SECURITY_DESCR,
    );
    assert.equal(await storedDacl(m, f.id), null, 'nothing kept');
  });

  it('the descriptor codec round-trips any DACL of allowed/denied ACEs', () => {
    const aceArb = fc.record({
      type: fc.constantFrom(ALLOW, DENY),
      flags: fc.integer({ min: 0, max: 0x1f }),
      mask: fc.integer({ min: 0, max: 0xffffffff }),
      sid: fc.record({
        authority: fc.integer({ min: 0, max: 2 ** 48 - 1 }),
        subAuthorities: fc.array(fc.integer({ min: 0, max: 0xffffffff }), { maxLength: 15 }),
      }),
    });
    fc.assert(
      fc.property(fc.array(aceArb, { maxLength: 20 }), (dacl) => {
        const plain = dacl.map((a) => ({ ...a, sid: { ...a.sid } }));
        const sd = decodeSecurityDescriptor(encodeSecurityDescriptor({ control: 0, owner: null, group: null, dacl: plain }));
        assert.deepEqual(sd.dacl, plain);
      }),
    );
  });
});

describe('stored DACLs over CREATE', () => {
  it('an open of file:stream is refused where an open of the file with the same access is', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const f = (await create(c, createRequest('f', { createDisposition: CreateDisposition.CREATE }))).open;
    const st = (await create(c, createRequest('f:s', { createDisposition: CreateDisposition.CREATE }))).open;
    await close(c, st);
    await close(c, f);
    // The owner (alice) may read, not write: the mode would let her write.
    await storeDacl(srv.fs.shares()[0]!.meta, f.inodeId, { control: 0, dacl: [ace(ALLOW, 0x00120089, unixUserSid(alice.uid))] });
    const openAs = (name: string, desiredAccess: number, createDisposition: number = CreateDisposition.OPEN) =>
      create(c, createRequest(name, { desiredAccess, createDisposition }));
    for (const name of ['f', 'f:s', 'f:s:$DATA']) {
      assert.equal(await status(openAs(name, Access.GENERIC_WRITE)), NtStatus.ACCESS_DENIED, `${name} for writing`);
      assert.equal(await status(openAs(name, Access.GENERIC_WRITE, CreateDisposition.OPEN_IF)), NtStatus.ACCESS_DENIED, `${name} OPEN_IF`);
      const r = await openAs(name, Access.GENERIC_READ);
      await close(c, r.open);
      const max = await openAs(name, Access.MAXIMUM_ALLOWED);
      assert.equal(max.open.grantedAccess & WRITE_DATA, 0, `${name}: MAXIMUM_ALLOWED grants no write`);
      assert.equal(max.open.grantedAccess & READ_DATA, READ_DATA);
      await close(c, max.open);
    }
    // A new stream of that file is refused too (making one writes the file).
    assert.equal(await status(openAs('f:new', Access.GENERIC_WRITE, CreateDisposition.CREATE)), NtStatus.ACCESS_DENIED);
    await srv.close();
  });
});

describe('a DACL granting append and not write (MS-SMB2 3.3.5.13, 3.3.5.21.1; MS-FSA 2.1.5.1.2.1)', () => {
  it('appends land at the end; a WRITE into existing bytes, EndOfFile, allocation and an overwrite are refused and change nothing', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const meta = srv.fs.shares()[0]!.meta;
    const f = (await create(c, createRequest('log', { createDisposition: CreateDisposition.CREATE }))).open;
    await files.write(c, f, { offset: 0, fileId: f.fileId, flags: 0, data: Buffer.from('first\n') });
    const st = (await create(c, createRequest('log:s', { createDisposition: CreateDisposition.CREATE }))).open;
    await files.write(c, st, { offset: 0, fileId: st.fileId, flags: 0, data: Buffer.from('stream') });
    await close(c, st);
    await close(c, f);
    // The owner may read and append (FILE_APPEND_DATA 0x4, and attributes), not write (FILE_WRITE_DATA 0x2):
    // the mode would let her write.
    await storeDacl(meta, f.inodeId, { control: 0, dacl: [ace(ALLOW, 0x00120089 | 0x4 | 0x100, unixUserSid(alice.uid))] });
    const open = async (desiredAccess: number, createDisposition: number = CreateDisposition.OPEN) =>
      (await create(c, createRequest('log', { desiredAccess, createDisposition }))).open;
    assert.equal(await status(open(Access.GENERIC_WRITE)), NtStatus.ACCESS_DENIED, 'write access is not granted');
    const a = await open(Access.FILE_APPEND_DATA | Access.FILE_READ_DATA);
    const w = (offset: number, text: string) => files.write(c, a, { offset, fileId: a.fileId, flags: 0, data: Buffer.from(text) });
    await w(-1, 'second\n');
    assert.equal(await status(w(0, 'XXXXX')), NtStatus.ACCESS_DENIED, 'a WRITE over existing bytes');
    assert.equal(await status(w(10, 'XXXXXXXXXX')), NtStatus.ACCESS_DENIED, 'a WRITE that starts inside and goes past the end');
    await w(13, 'third\n');
    const size = (n: number) => {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(BigInt(n));
      return b;
    };
    const setSize = (infoClass: number, n: number) =>
      files.setInfo(c, a, { infoType: 1, infoClass, additionalInformation: 0, fileId: a.fileId, buffer: size(n) });
    assert.equal(await status(setSize(FileInfoClass.FileEndOfFileInformation, 0)), NtStatus.ACCESS_DENIED, 'EndOfFile');
    assert.equal(await status(setSize(FileInfoClass.FileAllocationInformation, 0)), NtStatus.ACCESS_DENIED, 'allocation');
    for (const disp of [CreateDisposition.OVERWRITE, CreateDisposition.OVERWRITE_IF, CreateDisposition.SUPERSEDE]) {
      assert.equal(await status(open(Access.FILE_READ_DATA, disp)), NtStatus.ACCESS_DENIED, `disposition ${disp} with read access`);
      const s = create(c, createRequest('log:s', { desiredAccess: Access.FILE_READ_DATA, createDisposition: disp }));
      assert.equal(await status(s), NtStatus.ACCESS_DENIED, `disposition ${disp} of the stream with read access`);
    }
    const s = (await create(c, createRequest('log:s', { desiredAccess: Access.FILE_READ_DATA }))).open;
    assert.equal((await srv.fs.read(s.handle, c.id, 0, 64)).data.toString(), 'stream');
    await close(c, s);
    assert.equal((await srv.fs.read(a.handle, c.id, 0, 64)).data.toString(), 'first\nsecond\nthird\n');
    await close(c, a);
    await srv.close();
  });
});

describe('a DACL granting write and not append (MS-SMB2 3.3.5.13, 3.3.5.21.1)', () => {
  it('WRITEs within the file land; one extending it (past the end, across it, an append) is refused; EndOfFile still extends', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const meta = srv.fs.shares()[0]!.meta;
    const f = (await create(c, createRequest('fixed', { createDisposition: CreateDisposition.CREATE }))).open;
    await files.write(c, f, { offset: 0, fileId: f.fileId, flags: 0, data: Buffer.from('0123456789') });
    await close(c, f);
    // Without a stored DACL, an open asking FILE_WRITE_DATA alone extends the file (as on Windows:
    // smbtorture smb2.deny and smb2.tcon write so).
    const plain = (await create(c, createRequest('fixed', { desiredAccess: Access.FILE_WRITE_DATA }))).open;
    await files.write(c, plain, { offset: 10, fileId: plain.fileId, flags: 0, data: Buffer.from('++') });
    await close(c, plain);
    // The owner may read and write the bytes there (FILE_WRITE_DATA 0x2, and attributes), not add any (FILE_APPEND_DATA 0x4).
    await storeDacl(meta, f.inodeId, { control: 0, dacl: [ace(ALLOW, 0x00120089 | 0x2 | 0x100, unixUserSid(alice.uid))] });
    const o = (await create(c, createRequest('fixed', { desiredAccess: Access.FILE_WRITE_DATA | Access.FILE_READ_DATA }))).open;
    const w = (offset: number, text: string) => files.write(c, o, { offset, fileId: o.fileId, flags: 0, data: Buffer.from(text) });
    await w(2, 'ab');
    await w(6, 'WXYZ');
    assert.equal(await status(w(10, 'XXXX')), NtStatus.ACCESS_DENIED, 'a WRITE that starts inside and goes past the end');
    assert.equal(await status(w(12, 'X')), NtStatus.ACCESS_DENIED, 'a WRITE at the end');
    assert.equal(await status(w(20, 'X')), NtStatus.ACCESS_DENIED, 'a WRITE past the end');
    assert.equal(await status(w(-1, 'X')), NtStatus.ACCESS_DENIED, 'an append');
    await w(12, ''); // no bytes: extends nothing
    assert.equal((await srv.fs.read(o.handle, c.id, 0, 64)).data.toString(), '01ab45WXYZ++');
    // EndOfFile needs FILE_WRITE_DATA alone (MS-SMB2 3.3.5.21.1), growing the file or not.
    const b = Buffer.alloc(8);
    b.writeUInt32LE(14, 0);
    await files.setInfo(c, o, {
      infoType: 1,
      infoClass: FileInfoClass.FileEndOfFileInformation,
      additionalInformation: 0,
      fileId: o.fileId,
      buffer: b,
    });
    assert.equal((await srv.fs.read(o.handle, c.id, 0, 64)).data.toString(), '01ab45WXYZ++\0\0');
    await close(c, o);
    await srv.close();
  });
});

describe('a DACL granting write and not append, through a named stream of the file', () => {
  it("the stream's WRITEs within its size land; one extending it is refused, as the file's are", async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const meta = srv.fs.shares()[0]!.meta;
    const f = (await create(c, createRequest('f', { createDisposition: CreateDisposition.CREATE }))).open;
    const s0 = (await create(c, createRequest('f:s', { createDisposition: CreateDisposition.CREATE }))).open;
    await files.write(c, s0, { offset: 0, fileId: s0.fileId, flags: 0, data: Buffer.from('0123') });
    await close(c, s0);
    await storeDacl(meta, f.inodeId, { control: 0, dacl: [ace(ALLOW, 0x00120089 | 0x2 | 0x100, unixUserSid(alice.uid))] });
    const s = (await create(c, createRequest('f:s', { desiredAccess: Access.FILE_WRITE_DATA | Access.FILE_READ_DATA }))).open;
    const w = (offset: number, text: string) => files.write(c, s, { offset, fileId: s.fileId, flags: 0, data: Buffer.from(text) });
    await w(1, 'ab');
    assert.equal(await status(w(3, 'XX')), NtStatus.ACCESS_DENIED, 'a WRITE across the end of the stream');
    assert.equal(await status(w(-1, 'X')), NtStatus.ACCESS_DENIED, 'an append to the stream');
    assert.equal((await srv.fs.read(s.handle, c.id, 0, 64)).data.toString(), '0ab3');
    await close(c, s);
    await close(c, f);
    await srv.close();
  });
});

describe('WRITEs of append-only opens and appends of one file, side by side (MS-SMB2 3.3.5.13)', () => {
  it('each WRITE answered SUCCESS keeps its bytes: an append-only WRITE at an end another one moved meanwhile is refused', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const meta = srv.fs.shares()[0]!.meta;
    const f = (await create(c, createRequest('log', { createDisposition: CreateDisposition.CREATE }))).open;
    await files.write(c, f, { offset: 0, fileId: f.fileId, flags: 0, data: Buffer.from('start\n') });
    await close(c, f);
    await storeDacl(meta, f.inodeId, {
      control: 0,
      dacl: [ace(ALLOW, 0x00120089 | 0x4 | 0x100, unixUserSid(alice.uid))],
    });
    const open = async () =>
      (await create(c, createRequest('log', { desiredAccess: Access.FILE_APPEND_DATA | Access.FILE_READ_DATA }))).open;
    // Two clients appending by offset (the end each last saw) and one appending at the end
    // (0xFFFFFFFFFFFFFFFF), all at once, a few times over.
    const a = await open();
    const b = await open();
    const tail = await open();
    let end = 6;
    const landed: { offset: number; text: string }[] = [];
    for (let round = 0; round < 5; round++) {
      const tries = [
        { open: a, offset: end, text: `a${round}a\n` },
        { open: b, offset: end, text: `b${round}bb\n` },
        { open: tail, offset: -1, text: `t${round}\n` },
      ];
      const results = await Promise.allSettled(
        tries.map((t) => files.write(c, t.open, { offset: t.offset, fileId: t.open.fileId, flags: 0, data: Buffer.from(t.text) })),
      );
      results.forEach((r, i) => {
        const t = tries[i]!;
        if (r.status === 'rejected') {
          assert.ok(r.reason instanceof SmbStatusError && r.reason.status === NtStatus.ACCESS_DENIED, String(r.reason));
          return;
        }
        landed.push({ offset: t.offset < 0 ? t.open.position - t.text.length : t.offset, text: t.text });
      });
      end = (await srv.fs.getattr(a.handle, c.id)).inode.size;
    }
    const data = (await srv.fs.read(a.handle, c.id, 0, 4096)).data.toString();
    for (const l of landed)
      assert.equal(
        data.slice(l.offset, l.offset + l.text.length),
        l.text,
        `"${l.text.trim()}" answered SUCCESS at ${l.offset}; the file: ${JSON.stringify(data)}`,
      );
    assert.equal(data.length, 6 + landed.reduce((n, l) => n + l.text.length, 0), 'nothing written over');
    for (const o of [a, b, tail]) await close(c, o);
    await srv.close();
  });
});

describe('owner and group from a SecD context or a SET_INFO descriptor', () => {
  const sd = (owner: ReturnType<typeof sid> | null, group: ReturnType<typeof sid> | null): Buffer =>
    encodeSecurityDescriptor({ control: 0, owner, group, dacl: null });

  it('CREATE gives the file the SecD owner and group the creator may give, else INVALID_OWNER / INVALID_PRIMARY_GROUP and no file', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    c.id = { uid: 1000, gid: 1000, gids: [1000, 2000] };
    const make = (name: string, data: Buffer, options = 0) =>
      create(
        c,
        createRequest(name, {
          desiredAccess: Access.GENERIC_ALL,
          createDisposition: CreateDisposition.CREATE,
          createOptions: options,
          contexts: [{ name: 'SecD', data }],
        }),
      );
    const f = (await make('f', sd(unixUserSid(1000), unixGroupSid(2000)))).open;
    assert.deepEqual([(await srv.fs.resolve(f.handle)).inode.uid, (await srv.fs.resolve(f.handle)).inode.gid], [1000, 2000]);
    const d = (await make('d', sd(null, unixGroupSid(2000)), 1)).open;
    assert.equal((await srv.fs.resolve(d.handle)).inode.gid, 2000, 'a directory too');
    const refused: Array<[string, Buffer, number]> = [
      ['another user', sd(unixUserSid(5), null), NtStatus.INVALID_OWNER],
      ['a Windows SID', sd(sid(5, 21, 1, 2, 3, 500), null), NtStatus.INVALID_OWNER],
      ['a group not his', sd(null, unixGroupSid(3000)), NtStatus.INVALID_PRIMARY_GROUP],
      ['a SID that is no unix group', sd(null, EVERYONE), NtStatus.INVALID_PRIMARY_GROUP],
    ];
    for (const [what, data, want] of refused) {
      assert.equal(await status(make('g', data)), want, what);
      assert.equal(
        await status(create(c, createRequest('g', { createDisposition: CreateDisposition.OPEN }))),
        NtStatus.OBJECT_NAME_NOT_FOUND,
        `${what}: no file made`,
      );
    }
    // root gives any owner.
    c.id = { uid: 0, gid: 0, gids: [] };
    const r = (await make('r', sd(unixUserSid(5), unixGroupSid(3000)))).open;
    assert.deepEqual([(await srv.fs.resolve(r.handle)).inode.uid, (await srv.fs.resolve(r.handle)).inode.gid], [5, 3000]);
    await srv.close();
  });

  it('a root the share squashes gives what the anonymous user may give: INVALID_OWNER, no file made', async () => {
    const srv = await memoryServer({ rootSquash: true });
    const c = fileContext(srv);
    c.id = { uid: 0, gid: 0, gids: [] };
    const make = (name: string, data: Buffer) =>
      create(
        c,
        createRequest(name, {
          desiredAccess: Access.GENERIC_ALL,
          createDisposition: CreateDisposition.CREATE,
          contexts: [{ name: 'SecD', data }],
        }),
      );
    assert.equal(await status(make('g', sd(unixUserSid(5), null))), NtStatus.INVALID_OWNER);
    assert.equal(
      await status(create(c, createRequest('g', { createDisposition: CreateDisposition.OPEN }))),
      NtStatus.OBJECT_NAME_NOT_FOUND,
      'no file made',
    );
    // What the anonymous user may give, it gives.
    const f = (await make('f', sd(unixUserSid(65534), unixGroupSid(65534)))).open;
    const { inode } = await srv.fs.resolve(f.handle);
    assert.deepEqual([inode.uid, inode.gid], [65534, 65534]);
    const set = (info: number, data: Buffer) =>
      files.setInfo(c, f, { infoType: 3, infoClass: 0, additionalInformation: info, fileId: f.fileId, buffer: data });
    assert.equal(await status(set(SI.OWNER, sd(unixUserSid(5), null))), NtStatus.INVALID_OWNER);
    assert.equal((await srv.fs.resolve(f.handle)).inode.uid, 65534, 'nothing changed');
    await srv.close();
  });

  it('SET_INFO chowns as NFS SETATTR would: INVALID_OWNER / INVALID_PRIMARY_GROUP for what the caller may not give', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const me = { uid: 1000, gid: 1000, gids: [1000, 2000] };
    c.id = me;
    const f = (await create(c, createRequest('f', { desiredAccess: Access.GENERIC_ALL, createDisposition: CreateDisposition.CREATE })))
      .open;
    const set = (info: number, data: Buffer) =>
      files.setInfo(c, f, { infoType: 3, infoClass: 0, additionalInformation: info, fileId: f.fileId, buffer: data });
    const owner = async () => {
      const { inode } = await srv.fs.getattr(f.handle, me);
      return [inode.uid, inode.gid];
    };
    assert.equal(await status(set(SI.OWNER, sd(unixUserSid(5), null))), NtStatus.INVALID_OWNER);
    assert.equal(await status(set(SI.GROUP, sd(null, unixGroupSid(3000)))), NtStatus.INVALID_PRIMARY_GROUP);
    assert.equal(await status(set(SI.OWNER, sd(sid(5, 21, 1, 2, 3, 500), null))), NtStatus.INVALID_OWNER);
    assert.deepEqual(await owner(), [1000, 1000], 'nothing changed');
    assert.equal(await status(set(SI.OWNER | SI.GROUP, sd(unixUserSid(1000), unixGroupSid(2000)))), NtStatus.SUCCESS);
    assert.deepEqual(await owner(), [1000, 2000], 'his own group; NFS sees it');
    c.id = { uid: 0, gid: 0, gids: [] };
    assert.equal(await status(set(SI.OWNER | SI.GROUP, sd(unixUserSid(5), unixGroupSid(3000)))), NtStatus.SUCCESS);
    assert.deepEqual(await owner(), [5, 3000], 'root gives it away');
    await srv.close();
  });
});

/** FILE_RENAME_INFORMATION_TYPE_2 naming `target` (FileLinkInformation has the same layout). */
function renameInfo(target: string, replace = false): Buffer {
  const n = Buffer.from(target, 'utf16le');
  const b = Buffer.alloc(20 + n.length);
  b[0] = replace ? 1 : 0;
  b.writeUInt32LE(n.length, 16);
  n.copy(b, 20);
  return b;
}

describe('the right to set a DACL is decided at CREATE, as Windows grants WRITE_DAC at open (MS-DTYP 2.5.3.2, MS-SMB2 3.3.5.21.3)', () => {
  it('an open made before a chown keeps what its opener was granted; the POSIX rule still guards the mode', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const bob = { uid: 1001, gid: 1001, gids: [] };
    const cb = { ...c, id: bob };
    const sdOf = (dacl: Ace[]) => encodeSecurityDescriptor({ control: 0x0004, owner: null, group: null, dacl });
    const setDacl = (ctx: files.FileContext, o: Awaited<ReturnType<typeof create>>['open'], dacl: Ace[]) =>
      files.setInfo(ctx, o, { infoType: 3, infoClass: 0, additionalInformation: SI.DACL, fileId: o.fileId, buffer: sdOf(dacl) });
    const READ = 0x00120089;
    const READ_WRITE = 0x0012019f;
    // Alice makes f (0644), as its owner granted WRITE_DAC; bob opens it to read its descriptor.
    const aliceOld = (
      await create(c, createRequest('f', { desiredAccess: Access.GENERIC_ALL, createDisposition: CreateDisposition.CREATE }))
    ).open;
    const bobOld = (await create(cb, createRequest('f', { desiredAccess: Access.READ_CONTROL }))).open;
    assert.equal(await status(create(cb, createRequest('f', { desiredAccess: Access.WRITE_DAC }))), NtStatus.ACCESS_DENIED, 'not his');
    // Root gives f to bob (NFS chown).
    await srv.fs.setattr(aliceOld.handle, { uid: 0, gid: 0, gids: [] }, { uid: bob.uid, gid: bob.gid });
    // Alice's open still holds the WRITE_DAC it was granted (Windows checks Open.GrantedAccess, not
    // the owner now): a DACL saying what the mode says (0644 of bob's) is set.
    const same = [ace(ALLOW, READ_WRITE, unixUserSid(bob.uid)), ace(ALLOW, READ, unixGroupSid(bob.gid)), ace(ALLOW, READ, EVERYONE)];
    assert.equal(await status(setDacl(c, aliceOld, same)), NtStatus.SUCCESS);
    // One that would change the mode is refused: only the owner now changes it (the vfs chmod rule).
    assert.equal(await status(setDacl(c, aliceOld, [ace(ALLOW, READ_WRITE, unixUserSid(bob.uid))])), NtStatus.ACCESS_DENIED);
    assert.equal((await srv.fs.resolve(aliceOld.handle)).inode.mode & 0o777, 0o644, 'the mode stays');
    // Bob's open from before holds no WRITE_DAC; a new open of his, the owner's now, does.
    assert.equal(await status(setDacl(cb, bobOld, same)), NtStatus.ACCESS_DENIED);
    const bobNew = (await create(cb, createRequest('f', { desiredAccess: Access.WRITE_DAC | Access.READ_CONTROL }))).open;
    assert.equal(await status(setDacl(cb, bobNew, [ace(ALLOW, READ_WRITE, unixUserSid(bob.uid))])), NtStatus.SUCCESS);
    assert.equal((await srv.fs.resolve(aliceOld.handle)).inode.mode & 0o777, 0o600);
    for (const [ctx, o] of [
      [c, aliceOld],
      [cb, bobOld],
      [cb, bobNew],
    ] as const)
      await close(ctx, o);
    await srv.close();
  });
});

describe('a directory DACL decides what is added to it and what is replaced in it (MS-FSA 2.1.5.1.1, 2.1.5.14.11)', () => {
  const GENERIC_READ_EXECUTE = 0x001200a9;
  const FILE_ADD_FILE = 0x2;
  const FILE_ADD_SUBDIRECTORY = 0x4;
  const setName = (c: files.FileContext, o: Awaited<ReturnType<typeof create>>['open'], link: boolean, target: string, replace = false) =>
    files.setInfo(c, o, {
      infoType: 1,
      infoClass: link ? FileInfoClass.FileLinkInformation : FileInfoClass.FileRenameInformation,
      buffer: renameInfo(target, replace),
      additionalInformation: 0,
      fileId: o.fileId,
    });

  it('a file, a directory, a stream or a name moved or linked in is refused where the DACL grants no FILE_ADD_FILE / FILE_ADD_SUBDIRECTORY', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const meta = srv.fs.shares()[0]!.meta;
    const d = (await create(c, createRequest('d', { createDisposition: CreateDisposition.CREATE, createOptions: 1 }))).open;
    await close(c, (await create(c, createRequest('d\\old', { createDisposition: CreateDisposition.CREATE }))).open);
    const other = (await create(c, createRequest('other', { createDisposition: CreateDisposition.CREATE, desiredAccess: 0x001f01ff })))
      .open;
    // Alice owns d (0755: POSIX lets her add to it); its DACL lets her list and traverse it, not add to it.
    await storeDacl(meta, d.inodeId, { control: 0, dacl: [ace(ALLOW, GENERIC_READ_EXECUTE | DELETE_CHILD, unixUserSid(alice.uid))] });
    const make = (name: string, createDisposition: number, createOptions = 0) =>
      status(create(c, createRequest(name, { createDisposition, createOptions })));
    for (const disp of [CreateDisposition.CREATE, CreateDisposition.OPEN_IF, CreateDisposition.OVERWRITE_IF, CreateDisposition.SUPERSEDE]) {
      assert.equal(await make('d\\new', disp), NtStatus.ACCESS_DENIED, `a new file, disposition ${disp}`);
      assert.equal(await make('d\\new:s', disp), NtStatus.ACCESS_DENIED, `a new file with a stream, disposition ${disp}`);
    }
    assert.equal(await make('d\\sub', CreateDisposition.CREATE, 1), NtStatus.ACCESS_DENIED, 'a new directory');
    assert.equal(await status(setName(c, other, false, 'd\\moved')), NtStatus.ACCESS_DENIED, 'a rename into it');
    assert.equal(await status(setName(c, other, true, 'd\\linked')), NtStatus.ACCESS_DENIED, 'a link into it');
    const names = async () => (await srv.fs.readdir(d.handle, alice, 0, 100)).entries.map((e) => e.name.toString()).sort();
    assert.deepEqual(await names(), ['old'], 'nothing was added');
    // What is there still opens (and a rename within it of what is there needs FILE_ADD_FILE too).
    await close(c, (await create(c, createRequest('d\\old', { desiredAccess: Access.FILE_READ_DATA }))).open);
    // FILE_ADD_FILE alone: files and links come in, directories do not.
    await storeDacl(meta, d.inodeId, {
      control: 0,
      dacl: [ace(ALLOW, GENERIC_READ_EXECUTE | DELETE_CHILD | FILE_ADD_FILE, unixUserSid(alice.uid))],
    });
    await close(c, (await create(c, createRequest('d\\new', { createDisposition: CreateDisposition.CREATE }))).open);
    assert.equal(await make('d\\sub', CreateDisposition.CREATE, 1), NtStatus.ACCESS_DENIED, 'a new directory with FILE_ADD_FILE alone');
    await setName(c, other, true, 'd\\linked');
    await setName(c, other, false, 'd\\moved');
    // FILE_ADD_SUBDIRECTORY alone: a directory comes in, a file does not.
    await storeDacl(meta, d.inodeId, {
      control: 0,
      dacl: [ace(ALLOW, GENERIC_READ_EXECUTE | DELETE_CHILD | FILE_ADD_SUBDIRECTORY, unixUserSid(alice.uid))],
    });
    await close(c, (await create(c, createRequest('d\\sub', { createDisposition: CreateDisposition.CREATE, createOptions: 1 }))).open);
    assert.equal(await make('d\\new2', CreateDisposition.CREATE), NtStatus.ACCESS_DENIED, 'a new file with FILE_ADD_SUBDIRECTORY alone');
    assert.deepEqual(await names(), ['linked', 'moved', 'new', 'old', 'sub']);
    await close(c, other);
    await close(c, d);
    await srv.close();
  });

  it('a link asks no right of the open it links (MS-SMB2 3.3.5.21.1, MS-FSA 2.1.5.15.6): the target directory decides', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const bob = { uid: 1001, gid: 1001, gids: [] };
    const cb = { ...c, id: bob };
    // Alice's file and directory (0644, 0755); bob's own directory.
    await close(c, (await create(c, createRequest('f', { createDisposition: CreateDisposition.CREATE }))).open);
    await close(c, (await create(c, createRequest('d', { createDisposition: CreateDisposition.CREATE, createOptions: 1 }))).open);
    await close(cb, (await create(cb, createRequest('bd', { createDisposition: CreateDisposition.CREATE, createOptions: 1 }))).open);
    // Bob's open of f is granted FILE_READ_ATTRIBUTES alone: no DELETE, no write of any kind.
    const o = (await create(cb, createRequest('f', { desiredAccess: Access.FILE_READ_ATTRIBUTES }))).open;
    assert.equal(o.grantedAccess, Access.FILE_READ_ATTRIBUTES);
    assert.equal(await status(setName(cb, o, false, 'bd\\moved')), NtStatus.ACCESS_DENIED, 'a rename needs DELETE');
    assert.equal(await status(setName(cb, o, true, 'd\\linked')), NtStatus.ACCESS_DENIED, "alice's directory refuses him FILE_ADD_FILE");
    assert.equal(await status(setName(cb, o, true, 'bd\\linked')), NtStatus.SUCCESS, 'his own directory lets him add the name');
    const linked = (await create(cb, createRequest('bd\\linked', { desiredAccess: Access.FILE_READ_ATTRIBUTES }))).open;
    assert.equal(linked.inodeId, o.inodeId);
    // The link gives bob nothing the file did not: it is alice's, 0644, through either name.
    assert.equal(await status(create(cb, createRequest('bd\\linked', { desiredAccess: Access.FILE_WRITE_DATA }))), NtStatus.ACCESS_DENIED);
    await close(cb, linked);
    await close(cb, o);
    await srv.close();
  });

  it('a rename or link over a file whose DELETE the DACLs refuse is refused, and the file stays', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const meta = srv.fs.shares()[0]!.meta;
    const d = (await create(c, createRequest('d', { createDisposition: CreateDisposition.CREATE, createOptions: 1 }))).open;
    const keep = (await create(c, createRequest('d\\keep', { createDisposition: CreateDisposition.CREATE }))).open;
    await files.write(c, keep, { offset: 0, fileId: keep.fileId, flags: 0, data: Buffer.from('kept') });
    await close(c, keep);
    const src = (await create(c, createRequest('src', { createDisposition: CreateDisposition.CREATE, desiredAccess: 0x001f01ff }))).open;
    // d lets alice add and list, not delete children; keep lets her read and write it, not delete it.
    await storeDacl(meta, d.inodeId, { control: 0, dacl: [ace(ALLOW, 0x001f01ff & ~DELETE_CHILD, unixUserSid(alice.uid))] });
    await storeDacl(meta, keep.inodeId, { control: 0, dacl: [ace(ALLOW, 0x0012019f, unixUserSid(alice.uid))] });
    assert.equal(
      await status(create(c, createRequest('d\\keep', { desiredAccess: DELETE }))),
      NtStatus.ACCESS_DENIED,
      'an open for DELETE',
    );
    assert.equal(await status(setName(c, src, false, 'd\\keep', true)), NtStatus.ACCESS_DENIED, 'a rename replacing it');
    assert.equal(await status(setName(c, src, true, 'd\\keep', true)), NtStatus.ACCESS_DENIED, 'a link replacing it');
    const k = (await create(c, createRequest('d\\keep', { desiredAccess: Access.FILE_READ_DATA }))).open;
    assert.equal(k.inodeId, keep.inodeId);
    assert.equal((await srv.fs.read(k.handle, alice, 0, 64)).data.toString(), 'kept');
    await close(c, k);
    // With FILE_DELETE_CHILD on the directory, the replace goes ahead.
    await storeDacl(meta, d.inodeId, { control: 0, dacl: [ace(ALLOW, 0x001f01ff, unixUserSid(alice.uid))] });
    await setName(c, src, false, 'd\\keep', true);
    await close(c, src);
    await close(c, d);
    await srv.close();
  });

  it('a new stream of a file whose DACL grants no FILE_WRITE_DATA is refused, whatever access the open asks', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const meta = srv.fs.shares()[0]!.meta;
    const f = (await create(c, createRequest('f', { createDisposition: CreateDisposition.CREATE }))).open;
    await close(c, f);
    // Alice may read f, not write it; the mode would let her write.
    await storeDacl(meta, f.inodeId, { control: 0, dacl: [ace(ALLOW, 0x00120089, unixUserSid(alice.uid))] });
    for (const disp of [CreateDisposition.CREATE, CreateDisposition.OPEN_IF, CreateDisposition.OVERWRITE_IF, CreateDisposition.SUPERSEDE]) {
      const s = create(c, createRequest('f:new', { desiredAccess: Access.FILE_READ_DATA, createDisposition: disp }));
      assert.equal(await status(s), NtStatus.ACCESS_DENIED, `disposition ${disp}`);
    }
    const r = (await create(c, createRequest('f', { desiredAccess: Access.FILE_READ_DATA }))).open;
    const info = await files.queryInfo(c, r, {
      infoType: 1,
      infoClass: FileInfoClass.FileStreamInformation,
      outputBufferLength: 4096,
      additionalInformation: 0,
      flags: 0,
      input: Buffer.alloc(0),
      fileId: r.fileId,
    });
    assert.deepEqual(
      decodeStreamInformation(info.output).map((e) => e.name),
      ['::$DATA'],
      'no stream was made',
    );
    await close(c, r);
    await srv.close();
  });
});

describe('an overwrite needs the rights to what it replaces (MS-FSA 2.1.5.1.2.1; Windows adds FILE_WRITE_EA and FILE_WRITE_ATTRIBUTES)', () => {
  it('a DACL granting writing the data and not the attributes or EAs refuses an overwrite: the attributes and EAs stay', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const meta = srv.fs.shares()[0]!.meta;
    const f = (await create(c, createRequest('f', { createDisposition: CreateDisposition.CREATE }))).open;
    await files.write(c, f, { offset: 0, fileId: f.fileId, flags: 0, data: Buffer.from('data') });
    const ea = encodeFullEaList([{ flags: 0, name: Buffer.from('KEEP'), value: Buffer.from('me') }]);
    await files.setInfo(c, f, {
      infoType: 1,
      infoClass: FileInfoClass.FileFullEaInformation,
      additionalInformation: 0,
      fileId: f.fileId,
      buffer: ea,
    });
    await close(c, f);
    const FILE_WRITE_EA = 0x10;
    const FILE_WRITE_ATTRIBUTES = 0x100;
    const HIDDEN = 0x2;
    const extA = encodeFullEaList([{ flags: 0, name: Buffer.from('NEW'), value: Buffer.from('x') }]);
    const overwrite = (createDisposition: number) =>
      create(
        c,
        createRequest('f', {
          desiredAccess: Access.FILE_READ_DATA | WRITE_DATA,
          createDisposition,
          fileAttributes: HIDDEN,
          contexts: [{ name: 'ExtA', data: extA }],
        }),
      );
    for (const [granted, what] of [
      [0x00120089 | WRITE_DATA | FILE_WRITE_EA, 'without FILE_WRITE_ATTRIBUTES'],
      [0x00120089 | WRITE_DATA | FILE_WRITE_ATTRIBUTES, 'without FILE_WRITE_EA'],
    ] as const) {
      await storeDacl(meta, f.inodeId, { control: 0, dacl: [ace(ALLOW, granted, unixUserSid(alice.uid))] });
      for (const disp of [CreateDisposition.OVERWRITE, CreateDisposition.OVERWRITE_IF, CreateDisposition.SUPERSEDE])
        assert.equal(await status(overwrite(disp)), NtStatus.ACCESS_DENIED, `disposition ${disp} ${what}`);
    }
    const { inode } = await srv.fs.resolve(f.handle);
    assert.equal(inode.size, 4, 'the data stays');
    assert.equal(inode.dosAttrs & HIDDEN, 0, 'the attributes stay');
    assert.deepEqual(
      (await meta.getMeta(f.inodeId, EA_KIND)).map((r) => r.name.toString()),
      ['KEEP'],
      'the EAs stay',
    );
    // With both, the overwrite goes ahead (and replaces the EAs).
    await storeDacl(meta, f.inodeId, {
      control: 0,
      dacl: [ace(ALLOW, 0x00120089 | WRITE_DATA | FILE_WRITE_EA | FILE_WRITE_ATTRIBUTES, unixUserSid(alice.uid))],
    });
    await close(c, (await overwrite(CreateDisposition.OVERWRITE)).open);
    assert.deepEqual(
      (await meta.getMeta(f.inodeId, EA_KIND)).map((r) => r.name.toString()),
      ['NEW'],
    );
    await srv.close();
  });
});

describe('a stream open asking FILE_EXECUTE (MS-SMB2 3.3.5.12: READ takes it for FILE_READ_DATA)', () => {
  it('is not granted it past what the file allows: its READ is refused where reading the file is', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const bob = { uid: 1001, gid: 1001, gids: [] };
    const cb = { ...c, id: bob };
    const meta = srv.fs.shares()[0]!.meta;
    const f = (await create(c, createRequest('f', { createDisposition: CreateDisposition.CREATE }))).open;
    const st = (await create(c, createRequest('f:s', { createDisposition: CreateDisposition.CREATE }))).open;
    await files.write(c, st, { offset: 0, fileId: st.fileId, flags: 0, data: Buffer.from('secret') });
    await close(c, st);
    await close(c, f);
    const readStream = async (ctx: files.FileContext) => {
      const o = (await create(ctx, createRequest('f:s', { desiredAccess: Access.FILE_EXECUTE | Access.FILE_READ_ATTRIBUTES }))).open;
      try {
        return (await files.read(ctx, o, { offset: 0, length: 64, minimumCount: 0, fileId: o.fileId, flags: 0 })).toString();
      } finally {
        await close(ctx, o);
      }
    };
    // The owner's DACL grants her the attributes alone (the vfs lets an owner read whatever the mode).
    await storeDacl(meta, f.inodeId, { control: 0, dacl: [ace(ALLOW, 0x00120080 | 0x100, unixUserSid(alice.uid))] });
    assert.equal(await status(create(c, createRequest('f', { desiredAccess: Access.FILE_READ_DATA }))), NtStatus.ACCESS_DENIED);
    assert.equal(await status(readStream(c)), NtStatus.ACCESS_DENIED, 'the DACL grants no reading');
    await storeDacl(meta, f.inodeId, null);
    // The file was 0644 when its stream was made: a chmod to 0600 keeps others from its streams too.
    assert.equal(await readStream(cb), 'secret', 'bob reads while the mode lets him');
    await srv.fs.setattr(f.handle, alice, { mode: 0o600 });
    assert.equal(await status(create(cb, createRequest('f', { desiredAccess: Access.FILE_READ_DATA }))), NtStatus.ACCESS_DENIED);
    assert.equal(await status(readStream(cb)), NtStatus.ACCESS_DENIED, 'the mode lets bob read no more');
    await srv.close();
  });

  it("of a directory's stream is not granted it by traverse permission: reading the stream needs reading the directory", async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const bob = { uid: 1001, gid: 1001, gids: [] };
    const cb = { ...c, id: bob };
    // A folder's named stream (macOS keeps a folder's extended attributes so), made while d was 0755.
    const d = (await create(c, createRequest('d', { createDisposition: CreateDisposition.CREATE, createOptions: 1 }))).open;
    const st = (await create(c, createRequest('d:s', { createDisposition: CreateDisposition.CREATE }))).open;
    await files.write(c, st, { offset: 0, fileId: st.fileId, flags: 0, data: Buffer.from('secret') });
    await close(c, st);
    const readStream = async (desiredAccess: number) => {
      const o = (await create(cb, createRequest('d:s', { desiredAccess }))).open;
      try {
        return (await files.read(cb, o, { offset: 0, length: 64, minimumCount: 0, fileId: o.fileId, flags: 0 })).toString();
      } finally {
        await close(cb, o);
      }
    };
    assert.equal(await readStream(Access.FILE_EXECUTE), 'secret', 'bob reads while the mode lets him read d');
    // 0711: others may pass through d, not read it; FILE_EXECUTE of a directory is that traverse.
    await srv.fs.setattr(d.handle, alice, { mode: 0o711 });
    assert.equal(await status(readStream(Access.FILE_READ_DATA)), NtStatus.ACCESS_DENIED);
    assert.equal(await status(readStream(Access.FILE_EXECUTE)), NtStatus.ACCESS_DENIED, 'traverse reads no stream');
    await close(c, d);
    await srv.close();
  });
});

describe('well-known groups in a session token (MS-DTYP 2.4.2.4)', () => {
  const root: Identity = { uid: 0, gid: 0, gids: [] };
  it('BUILTIN\\Users and Authenticated Users match a user who logged on with his credentials, not a guest or anonymous session', () => {
    for (const who of [BUILTIN_USERS, AUTHENTICATED_USERS]) {
      const dacl = [ace(ALLOW, READ_DATA | WRITE_DATA, who)];
      assert.equal(daclGrants(dacl, tokenSids(me, 'user'), false), READ_DATA | WRITE_DATA);
      assert.equal(daclGrants(dacl, tokenSids(me, 'guest'), false), 0, 'guest');
      assert.equal(daclGrants(dacl, tokenSids(me, 'anonymous'), false), 0, 'anonymous');
      assert.equal(daclGrants(dacl, tokenSids(root, 'anonymous'), false), 0, 'anonymous with uid 0');
    }
    // Everyone still matches them all.
    assert.equal(daclGrants([ace(ALLOW, READ_DATA, EVERYONE)], tokenSids(me, 'guest'), false), READ_DATA);
  });

  it('BUILTIN\\Administrators matches root only (as the share sees him: a squashed root is not root)', () => {
    const dacl = [ace(ALLOW, WRITE_DATA, BUILTIN_ADMINISTRATORS)];
    assert.equal(daclGrants(dacl, tokenSids(root, 'user'), false), WRITE_DATA);
    assert.equal(daclGrants(dacl, tokenSids(me, 'user'), false), 0, 'uid 1000');
    assert.equal(daclGrants(dacl, tokenSids({ uid: 1000, gid: 0, gids: [0] }, 'user'), false), 0, "root's group is not root");
    assert.equal(daclGrants(dacl, tokenSids(root, 'guest'), false), 0, 'a guest session');
    // The unix SIDs reported as owner and group stay S-1-22-*: the token names the user by them too.
    assert.deepEqual(tokenSids(root, 'user').slice(0, 2), [unixUserSid(0), unixGroupSid(0)]);
  });

  it('a DACL an Explorer sets (owner Full control, Users Modify) lets another user write; a guest session of his is refused', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const bob: Identity = { uid: 1001, gid: 1001, gids: [] };
    const cb = { ...c, id: bob };
    const f = (
      await create(c, createRequest('shared.txt', { desiredAccess: Access.GENERIC_ALL, createDisposition: CreateDisposition.CREATE }))
    ).open;
    await files.write(c, f, { offset: 0, fileId: f.fileId, flags: 0, data: Buffer.from('alice\n') });
    const FULL = 0x001f01ff;
    const MODIFY = 0x001301bf;
    const dacl = [ace(ALLOW, FULL, unixUserSid(alice.uid)), ace(ALLOW, MODIFY, BUILTIN_USERS)];
    const sd = encodeSecurityDescriptor({ control: 0x0004, owner: null, group: null, dacl });
    await files.setInfo(c, f, { infoType: 3, infoClass: 0, additionalInformation: SI.DACL, fileId: f.fileId, buffer: sd });
    await close(c, f);
    // Users are every user here: as Everyone, their ACE gives its bits to owner, group and other.
    assert.equal((await srv.fs.resolve(f.handle)).inode.mode & 0o777, 0o777);
    const b = (await create(cb, createRequest('shared.txt', { desiredAccess: Access.GENERIC_READ | Access.GENERIC_WRITE }))).open;
    await files.write(cb, b, { offset: 6, fileId: b.fileId, flags: 0, data: Buffer.from('bob\n') });
    assert.equal((await srv.fs.read(b.handle, bob, 0, 64)).data.toString(), 'alice\nbob\n');
    await close(cb, b);
    // A guest session (no Users, no Authenticated Users in its token) is held off by the DACL,
    // though the mode would let "other" in.
    const guest = { ...cb, session: { ...c.session, guest: true } as typeof c.session };
    assert.equal(
      await status(create(guest, createRequest('shared.txt', { desiredAccess: Access.FILE_READ_DATA }))),
      NtStatus.ACCESS_DENIED,
    );
    await srv.close();
  });
});
