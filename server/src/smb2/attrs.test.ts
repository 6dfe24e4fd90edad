// FileBasicInformation as SET_INFO input (MS-FSCC 2.4.7) and the DOS attribute rules of CREATE.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DosAttributes, FileType, type Inode } from '../vfs/types.js';
import {
  basicInfoChanges,
  checkNewAttributes,
  checkOpenExisting,
  decodeBasicInfoSet,
  encodeBasicInfoSet,
  newFileAttributes,
  reportedAttributes,
  type BasicInfoSet,
  type TimeField,
} from './attrs.js';
import { Access, CreateDisposition, FileInfoClass, InfoType } from './constants.js';
import { memoryServer } from '../testing/memory-server.js';
import { SmbWriter } from './codec.js';
import * as files from './files.js';
import type { Open, Session, Tree } from './state.js';
import { encodeFileInfo, encodeFsInfo, FS_CLASS_MIN, shortNameOf } from './fscc.js';
import { NtStatus, SmbStatusError } from './status.js';

const T = (sec: number, nsec = 0) => ({ sec, nsec });

function inode(over: Partial<Inode> = {}): Inode {
  return {
    id: 5,
    shareId: 1,
    type: FileType.REG,
    mode: 0o644,
    uid: 1000,
    gid: 1000,
    size: 0,
    nlink: 1,
    rdevMajor: 0,
    rdevMinor: 0,
    atime: T(100),
    mtime: T(200),
    ctime: T(300),
    btime: T(50),
    dosAttrs: DosAttributes.ARCHIVE,
    generation: 1,
    parent: 0,
    target: null,
    createVerifier: null,
    ...over,
  };
}

const status = (s: number) => (e: unknown) => e instanceof SmbStatusError && e.status === s;

const timeArb: fc.Arbitrary<TimeField> = fc.oneof(
  fc.constant<TimeField>({ op: 'keep' }),
  fc.constant<TimeField>({ op: 'freeze' }),
  fc.constant<TimeField>({ op: 'thaw' }),
  // FILETIME 1 .. 2^63 - 3 in 100 ns units: seconds from 1601 onwards, nanoseconds in steps of 100.
  fc
    .record({ sec: fc.integer({ min: -11644473600, max: 900_000_000_000 }), hundreds: fc.integer({ min: 0, max: 9_999_999 }) })
    .filter((t) => t.sec > -11644473600 || t.hundreds > 0)
    .map((t): TimeField => ({ op: 'set', time: { sec: t.sec, nsec: t.hundreds * 100 } })),
);

describe('FileBasicInformation (SET_INFO input)', () => {
  it('round-trips every field, including the 0 / -1 / -2 meanings', () => {
    fc.assert(
      fc.property(timeArb, timeArb, timeArb, timeArb, fc.integer({ min: 0, max: 0xffffffff }), (c, a, w, ch, attributes) => {
        const x: BasicInfoSet = { creation: c, access: a, write: w, change: ch, attributes };
        assert.deepEqual(decodeBasicInfoSet(encodeBasicInfoSet(x)), x);
      }),
    );
  });

  it('decodes bytes as a client sends them', () => {
    // CreationTime 2021-01-01T00:00:00Z, LastAccess 0, LastWrite -1, Change -2, attributes HIDDEN|ARCHIVE.
    const b = Buffer.from(
      '0080350cd1dfd601' + '0000000000000000' + 'ffffffffffffffff' + 'feffffffffffffff' + '22000000' + '00000000',
      'hex',
    );
    assert.deepEqual(decodeBasicInfoSet(b), {
      creation: { op: 'set', time: T(1609459200) },
      access: { op: 'keep' },
      write: { op: 'freeze' },
      change: { op: 'thaw' },
      attributes: 0x22,
    });
  });

  it('arbitrary bytes decode or fail with INFO_LENGTH_MISMATCH / INVALID_PARAMETER, nothing else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        try {
          decodeBasicInfoSet(Buffer.from(bytes));
        } catch (e) {
          assert.ok(e instanceof SmbStatusError, String(e));
          assert.ok(e.status === NtStatus.INFO_LENGTH_MISMATCH || e.status === NtStatus.INVALID_PARAMETER);
        }
      }),
    );
  });

  it('a time below -2 is INVALID_PARAMETER', () => {
    const b = Buffer.alloc(40);
    b.writeBigInt64LE(-3n, 16);
    assert.throws(() => decodeBasicInfoSet(b), status(NtStatus.INVALID_PARAMETER));
  });

  it('sets times and attributes; -1 holds a time against this open, -2 lets it go', () => {
    const keep: TimeField = { op: 'keep' };
    const f = inode();
    let r = basicInfoChanges({ creation: { op: 'set', time: T(7) }, access: keep, write: keep, change: keep, attributes: 0x80 }, f, null);
    assert.deepEqual(r.attrs, { btime: T(7), dosAttrs: 0 });
    assert.equal(r.held, null);
    r = basicInfoChanges({ creation: keep, access: keep, write: { op: 'freeze' }, change: keep, attributes: 0 }, f, null);
    assert.deepEqual([r.attrs, r.held, r.changes], [{}, { mtime: T(200) }, false]);
    r = basicInfoChanges({ creation: keep, access: keep, write: { op: 'set', time: T(9) }, change: keep, attributes: 0 }, f, r.held);
    assert.deepEqual([r.attrs, r.held], [{ mtime: T(9) }, { mtime: T(9) }]);
    r = basicInfoChanges({ creation: keep, access: keep, write: { op: 'thaw' }, change: keep, attributes: 0 }, f, r.held);
    assert.equal(r.held, null);
    // DIRECTORY on a file and TEMPORARY on a directory are refused; SPARSE_FILE is kept as it was.
    assert.throws(
      () => basicInfoChanges({ creation: keep, access: keep, write: keep, change: keep, attributes: 0x10 }, f, null),
      status(NtStatus.INVALID_PARAMETER),
    );
    assert.throws(
      () =>
        basicInfoChanges(
          { creation: keep, access: keep, write: keep, change: keep, attributes: 0x100 },
          inode({ type: FileType.DIR }),
          null,
        ),
      status(NtStatus.INVALID_PARAMETER),
    );
    r = basicInfoChanges({ creation: keep, access: keep, write: keep, change: keep, attributes: 0x201 }, inode({ dosAttrs: 0 }), null);
    assert.deepEqual(r.attrs, { dosAttrs: 0x1 });
    r = basicInfoChanges({ creation: keep, access: keep, write: keep, change: keep, attributes: 0x2 }, inode({ dosAttrs: 0x200 }), null);
    assert.deepEqual(r.attrs, { dosAttrs: 0x202 });
  });
});

describe('DOS attributes reported and checked', () => {
  it('reports stored bits, DIRECTORY by type, NORMAL for none, READONLY for unwritable files', () => {
    assert.equal(reportedAttributes(inode()), DosAttributes.ARCHIVE);
    assert.equal(reportedAttributes(inode({ dosAttrs: 0 })), DosAttributes.NORMAL);
    assert.equal(reportedAttributes(inode({ type: FileType.DIR, dosAttrs: 0 })), DosAttributes.DIRECTORY);
    assert.equal(reportedAttributes(inode({ type: FileType.DIR, dosAttrs: 0x2 })), 0x12);
    assert.equal(reportedAttributes(inode({ mode: 0o444 })), 0x21);
    assert.equal(reportedAttributes(inode(), '.hidden'), 0x22);
  });

  it('new files get ARCHIVE, directories never TEMPORARY', () => {
    assert.equal(newFileAttributes(0, false), 0x20);
    assert.equal(newFileAttributes(0x80, false), 0x20);
    assert.equal(newFileAttributes(0x7 | 0x100 | 0x200, false), 0x127, 'sparse only through FSCTL_SET_SPARSE');
    assert.equal(newFileAttributes(0x2 | 0x10, true), 0x2);
    assert.throws(() => checkNewAttributes(0x100, true), status(NtStatus.INVALID_PARAMETER));
    checkNewAttributes(0x100, false);
  });

  it('read-only files refuse writers and delete-on-close; overwrites keep HIDDEN and SYSTEM', () => {
    const ro = inode({ dosAttrs: 0x21 });
    assert.throws(() => checkOpenExisting(ro, Access.FILE_WRITE_DATA, CreateDisposition.OPEN, 0, false), status(NtStatus.ACCESS_DENIED));
    assert.throws(() => checkOpenExisting(ro, Access.DELETE, CreateDisposition.OPEN, 0, true), status(NtStatus.CANNOT_DELETE));
    assert.equal(checkOpenExisting(ro, Access.FILE_READ_DATA, CreateDisposition.OPEN, 0, false), null);
    const hidden = inode({ dosAttrs: 0x22 });
    assert.throws(
      () => checkOpenExisting(hidden, Access.FILE_WRITE_DATA, CreateDisposition.OVERWRITE_IF, 0, false),
      status(NtStatus.ACCESS_DENIED),
    );
    assert.equal(checkOpenExisting(hidden, Access.FILE_WRITE_DATA, CreateDisposition.OVERWRITE_IF, 0x2, false), 0x22);
    assert.equal(checkOpenExisting(inode({ dosAttrs: 0x4 }), 0, CreateDisposition.SUPERSEDE, 0x4 | 0x1, false), 0x25);
  });
});

describe('info classes added with the attributes', () => {
  it('8.3 short names: valid 8.3, stable, the name itself when it is 8.3 already', () => {
    assert.equal(shortNameOf('bufsize.txt'), 'BUFSIZE.TXT');
    assert.equal(shortNameOf('torture_search.txt'), shortNameOf('torture_search.txt'));
    assert.match(shortNameOf('Hello World.docx'), /^HELLO~[0-9A-Z]{2}\.DOC$/);
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 80 }), (name) => {
        const s = shortNameOf(name);
        assert.match(s, /^[A-Z0-9!#$%&'()\-@^_`{}~]{1,8}(\.[A-Z0-9!#$%&'()\-@^_`{}~]{1,3})?$/, `${name} -> ${s}`);
      }),
    );
  });

  it('FileAlternateNameInformation, FileFsControlInformation and FileFsObjectIdInformation', () => {
    const view = { inode: inode(), path: '\\dir\\Long File Name.text', grantedAccess: 0, position: 0, deletePending: false };
    const alt = encodeFileInfo(FileInfoClass.FileAlternateNameInformation, view)!;
    assert.equal(alt.readUInt32LE(0), alt.length - 4);
    assert.equal(alt.subarray(4).toString('utf16le'), shortNameOf('Long File Name.text'));
    const fs = { totalBytes: 1 << 30, freeBytes: 1 << 29, serial: 7, label: 'export', created: T(1) };
    const ctl = encodeFsInfo(6, fs)!;
    assert.equal(ctl.length, FS_CLASS_MIN[6]);
    assert.deepEqual(ctl.subarray(24, 40), Buffer.alloc(16, 0xff), 'no quota threshold or limit');
    const oid = encodeFsInfo(8, fs)!;
    assert.deepEqual([oid.length, oid.readUInt32LE(0)], [64, 7]);
  });

  it('FileFsAttributeInformation announces what works: ACLs, sparse files, named streams, hard links, EAs', () => {
    const a = encodeFsInfo(5, { totalBytes: 0, freeBytes: 0, serial: 1, label: 'x', created: T(1) })!;
    const flags = a.readUInt32LE(0);
    // macOS keeps resource forks and Finder info in named streams only when NAMED_STREAMS is set
    // (else ._ AppleDouble files); Explorer shows the Security tab for PERSISTENT_ACLS.
    const expected: Record<string, number> = {
      PERSISTENT_ACLS: 0x8,
      SUPPORTS_SPARSE_FILES: 0x40,
      NAMED_STREAMS: 0x40000,
      SUPPORTS_HARD_LINKS: 0x400000,
      SUPPORTS_EXTENDED_ATTRIBUTES: 0x800000,
    };
    for (const [name, bit] of Object.entries(expected)) assert.equal(flags & bit, bit, name);
    assert.equal(flags & 0x8000, 0, 'no FILE_SUPPORTS_ENCRYPTION: nothing here encrypts files');
    assert.equal(a.readUInt32LE(4), 255, 'longest component name');
    assert.equal(a.subarray(12, 12 + a.readUInt32LE(8)).toString('utf16le'), 'NTFS');
  });
});

describe('FileBasicInformation through SET_INFO over the file service', () => {
  it('stores times and attributes; a time set or frozen on an open stays through its writes until -2', async () => {
    const srv = await memoryServer();
    const share = srv.fs.shares()[0]!;
    const session = { id: 1, trees: new Map() } as unknown as Session;
    const tree: Tree = { id: 1, session, kind: 'disk', share, name: share.name, readOnly: false, maximalAccess: 0x001f01ff };
    const c: files.FileContext = {
      fs: srv.fs,
      session,
      tree,
      share,
      id: { uid: 1000, gid: 1000, gids: [] },
      maxRead: 1 << 20,
      maxWrite: 1 << 20,
      maxTransact: 1 << 20,
    };
    let o: Open | null = null;
    await files.create(
      c,
      {
        requestedOplockLevel: 0,
        impersonationLevel: 2,
        desiredAccess: 0x001f01ff,
        fileAttributes: 0x2,
        shareAccess: 7,
        createDisposition: CreateDisposition.CREATE,
        createOptions: 0,
        name: Buffer.from('f', 'utf16le'),
        contexts: [],
      },
      new SmbWriter(),
      (x) => (o = x),
    );
    const open = o!;
    const stored = async () => (await srv.fs.resolve(open.handle)).inode;
    assert.equal((await stored()).dosAttrs, 0x22, 'CREATE stored HIDDEN, plus ARCHIVE');
    const keep: TimeField = { op: 'keep' };
    const set = (x: Partial<BasicInfoSet>) =>
      files.setInfo(c, open, {
        infoType: InfoType.FILE,
        infoClass: FileInfoClass.FileBasicInformation,
        additionalInformation: 0,
        fileId: open.fileId,
        buffer: encodeBasicInfoSet({ creation: keep, access: keep, write: keep, change: keep, attributes: 0, ...x }),
      });
    const write = () => files.write(c, open, { offset: 0, fileId: open.fileId, flags: 0, data: Buffer.from('data') });
    await set({
      creation: { op: 'set', time: T(1_000_000_000, 500) },
      write: { op: 'set', time: T(1_100_000_000) },
      attributes: 0x1 | 0x4,
    });
    let i = await stored();
    assert.deepEqual([i.btime, i.mtime, i.dosAttrs], [T(1_000_000_000, 500), T(1_100_000_000), 0x5]);
    await write();
    assert.deepEqual((await stored()).mtime, T(1_100_000_000), 'the explicit write time holds through this open');
    await set({ write: { op: 'thaw' } });
    await write();
    i = await stored();
    assert.ok(i.mtime.sec > 1_100_000_000, 'after -2 writes move it again');
    await set({ write: { op: 'freeze' } });
    const frozen = (await stored()).mtime;
    await write();
    assert.deepEqual((await stored()).mtime, frozen, '-1 freezes it at its current value');
    assert.deepEqual((await stored()).btime, T(1_000_000_000, 500), 'writes never move the creation time');
    await srv.close();
  });
});
