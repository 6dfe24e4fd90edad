// The file commands over the real file service (memory stores): what a client sees through CREATE,
// QUERY_DIRECTORY, SET_INFO and CLOSE, without sockets.
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { describe, it } from 'node:test';
import { memoryServer, TEST_SHARE } from '../testing/memory-server.js';
import { SmbWriter, utf16 } from './codec.js';
import {
  Access,
  CreateDisposition,
  CreateOptions,
  FileAttributes,
  FILE_ALL_ACCESS,
  FileInfoClass,
  QueryDirectoryFlags,
  WRITE_RIGHTS,
} from './constants.js';
import { InodeMetaKind } from '../meta/store.js';
import { nowTimespec } from '../vfs/types.js';
import { CreateMode as VfsCreateMode, type ShareLevel } from '../vfs/service.js';
import * as files from './files.js';
import type { Open } from './state.js';
import { NtStatus } from './status.js';
import { alice, create, createRequest, fileContext, status } from './testing.js';
import {
  AceType,
  BUILTIN_USERS,
  CREATOR_OWNER,
  decodeSecurityDescriptor,
  encodeSecurityDescriptor,
  EVERYONE,
  SecurityInformation,
  unixUserSid,
} from './security.js';
import { decodeFullEaList, encodeFullEaList } from './ea.js';
import { AceFlags } from './acl.js';

/** QUERY_INFO of the security information `info` through open `o` (SMB2_0_INFO_SECURITY). */
const querySecurity = (c: files.FileContext, o: Open, info: number) =>
  files.queryInfo(c, o, {
    infoType: 3,
    infoClass: 0,
    outputBufferLength: 4096,
    additionalInformation: info,
    flags: 0,
    fileId: o.fileId,
    input: Buffer.alloc(0),
  });

async function setup(readOnly = false) {
  const srv = await memoryServer();
  const c = fileContext(srv, { readOnly });
  const open = async (
    name: string,
    disposition: number,
    options = 0,
    access = Access.GENERIC_READ | Access.GENERIC_WRITE | Access.DELETE,
  ): Promise<Open> =>
    (await create(c, createRequest(name, { desiredAccess: access, createDisposition: disposition, createOptions: options }))).open;
  return { srv, c, open };
}

/** The first share's root as root sees it through the file service, and the names in it, sorted. */
async function shareRoot(srv: Awaited<ReturnType<typeof memoryServer>>) {
  const share = srv.fs.shares()[0]!;
  const rootFh = srv.fs.handleOf(share, await srv.fs.root(share));
  const root = { uid: 0, gid: 0, gids: [] };
  const names = async () => (await srv.fs.readdir(rootFh, root, 0, 100)).entries.map((e) => e.name.toString()).sort();
  return { rootFh, root, names };
}

/** Names in a QUERY_DIRECTORY output buffer (FileNamesInformation), following NextEntryOffset. */
function names(buf: Buffer): string[] {
  const out: string[] = [];
  for (let at = 0; ;) {
    const next = buf.readUInt32LE(at);
    const len = buf.readUInt32LE(at + 8);
    out.push(buf.subarray(at + 12, at + 12 + len).toString('utf16le'));
    if (next === 0) return out;
    assert.equal(next % 8, 0, 'entries are 8-byte aligned');
    at += next;
  }
}

/** QUERY_DIRECTORY of `o` from the start, one name (FileNamesInformation). */
const firstName = (ctx: files.FileContext, o: Open) =>
  files.queryDirectory(ctx, o, {
    infoClass: FileInfoClass.FileNamesInformation,
    flags: QueryDirectoryFlags.RESTART_SCANS | QueryDirectoryFlags.RETURN_SINGLE_ENTRY,
    fileIndex: 0,
    fileId: o.fileId,
    pattern: utf16('*'),
    outputBufferLength: 4096,
  });

/** A second user's context on `srv`: Bob, uid 2000, on session 2. */
const bobOn = (srv: Parameters<typeof fileContext>[0]): files.FileContext => ({
  ...fileContext(srv, { sessionId: 2 }),
  id: { uid: 2000, gid: 2000, gids: [] },
});

/** FILE_RENAME_INFORMATION_TYPE_2 naming `target` (FileLinkInformation has the same layout). */
function renameInfo(target: string, replace = false): Buffer {
  const n = utf16(target);
  const b = Buffer.alloc(20 + n.length);
  b[0] = replace ? 1 : 0;
  b.writeUInt32LE(n.length, 16);
  n.copy(b, 20);
  return b;
}

/** SET_INFO of a rename or link (`infoClass`) of `o` to `target`. */
const setName = (ctx: files.FileContext, o: Open, infoClass: number, target: string, replace = false) =>
  files.setInfo(ctx, o, { infoType: 1, infoClass, buffer: renameInfo(target, replace), additionalInformation: 0, fileId: o.fileId });

/** CREATE of `name` as `ctx` asking `access`, with the given disposition and options. */
const as = (ctx: files.FileContext, name: string, access: number, disposition: number = CreateDisposition.OPEN, options = 0) =>
  create(ctx, createRequest(name, { desiredAccess: access, createDisposition: disposition, createOptions: options }));
describe('SMB2 file commands over the file service', () => {
  it('lists a large directory exactly once across many small QUERY_DIRECTORY calls, and again after RESTART_SCANS', async () => {
    const { srv, c, open } = await setup();
    const want = new Set<string>(['.', '..']);
    for (let i = 0; i < 700; i++) {
      const name = `file-${String(i).padStart(4, '0')}.txt`;
      want.add(name);
      await files.close(c, await open(name, CreateDisposition.CREATE), 0, new SmbWriter());
    }
    const dir = await open('', CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE, Access.GENERIC_READ);
    const query = (flags: number, len: number, pattern = '*') =>
      files.queryDirectory(c, dir, {
        infoClass: FileInfoClass.FileNamesInformation,
        flags,
        fileIndex: 0,
        fileId: dir.fileId,
        pattern: utf16(pattern),
        outputBufferLength: len,
      });
    for (const flags of [0, QueryDirectoryFlags.RESTART_SCANS]) {
      const seen: string[] = [];
      let calls = 0;
      for (let first = true; calls < 1000; first = false, calls++) {
        const st = await status(query(first ? flags : 0, 1024).then((b) => seen.push(...names(b))));
        if (st === NtStatus.NO_MORE_FILES) break;
        assert.equal(st, NtStatus.SUCCESS);
      }
      assert.ok(calls > 10, `${calls} calls`);
      assert.equal(seen.length, want.size, 'no entry twice');
      assert.deepEqual(new Set(seen), want);
    }
    await srv.close();
  });

  it('RETURN_SINGLE_ENTRY, patterns, and NO_SUCH_FILE for a pattern nothing matches', async () => {
    const { srv, c, open } = await setup();
    for (const n of ['a.txt', 'b.TXT', 'c.md']) await files.close(c, await open(n, CreateDisposition.CREATE), 0, new SmbWriter());
    const dir = await open('', CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE, Access.GENERIC_READ);
    const q = (flags: number, pattern: string) =>
      files.queryDirectory(c, dir, {
        infoClass: FileInfoClass.FileNamesInformation,
        flags,
        fileIndex: 0,
        fileId: dir.fileId,
        pattern: utf16(pattern),
        outputBufferLength: 65536,
      });
    assert.deepEqual(names(await q(QueryDirectoryFlags.RESTART_SCANS, '*.txt')).sort(), ['a.txt', 'b.TXT']);
    assert.deepEqual(names(await q(QueryDirectoryFlags.RESTART_SCANS | QueryDirectoryFlags.RETURN_SINGLE_ENTRY, 'c.*')), ['c.md']);
    assert.equal(await status(q(QueryDirectoryFlags.RESTART_SCANS, 'zzz*')), NtStatus.NO_SUCH_FILE);
    // A pattern is a file name with wildcards (MS-FSA 2.1.5.6.3): 255 characters at most.
    assert.equal(await status(q(QueryDirectoryFlags.RESTART_SCANS, '*'.repeat(254) + 'd')), NtStatus.SUCCESS);
    assert.equal(await status(q(QueryDirectoryFlags.RESTART_SCANS, '*'.repeat(255) + 'd')), NtStatus.OBJECT_NAME_INVALID);
    await srv.close();
  });

  it('CREATE dispositions: CREATE collides, OPEN of a missing name fails, OVERWRITE_IF truncates', async () => {
    const { srv, c, open } = await setup();
    const f = await open('x.bin', CreateDisposition.CREATE);
    await files.write(c, f, { offset: 0, fileId: f.fileId, flags: 0, data: Buffer.from('0123456789') });
    assert.equal(await status(open('x.bin', CreateDisposition.CREATE)), NtStatus.OBJECT_NAME_COLLISION);
    assert.equal(await status(open('nope', CreateDisposition.OPEN)), NtStatus.OBJECT_NAME_NOT_FOUND);
    assert.equal(await status(open('nope\\x', CreateDisposition.OPEN_IF)), NtStatus.OBJECT_PATH_NOT_FOUND);
    assert.equal(await status(open('x.bin', CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE)), NtStatus.NOT_A_DIRECTORY);
    const o = await open('x.bin', CreateDisposition.OVERWRITE_IF);
    assert.equal((await srv.fs.resolve(o.handle)).inode.size, 0);
    await srv.close();
  });

  it('FLUSH needs an open granted write access (MS-SMB2 3.3.5.11), whatever the mode says now', async () => {
    const { srv, c } = await setup();
    const { open: mine } = await create(c, createRequest('f.bin'));
    await srv.fs.setattr(mine.handle, c.id, { mode: 0o666 });
    const bob = bobOn(srv);
    const { open: w } = await as(bob, 'f.bin', Access.GENERIC_READ | Access.GENERIC_WRITE);
    await files.write(bob, w, { offset: 0, fileId: w.fileId, flags: 0, data: Buffer.from('data') });
    const { open: r } = await as(bob, 'f.bin', Access.GENERIC_READ);
    assert.equal(await status(files.flush(bob, r)), NtStatus.ACCESS_DENIED);
    // Bob's open for writing keeps its right to flush after the owner made the file read-only.
    await srv.fs.setattr(mine.handle, c.id, { mode: 0o444 });
    assert.equal(await status(files.flush(bob, w)), NtStatus.SUCCESS);
    await srv.close();
  });

  it("CREATE takes '/' as a path separator, like '\\', and still refuses the characters no name may hold", async () => {
    const { srv, open } = await setup();
    await open('d', CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE);
    const f = await open('d/f.txt', CreateDisposition.CREATE);
    assert.equal(f.path, 'd\\f.txt');
    assert.equal((await open('d\\f.txt', CreateDisposition.OPEN)).inodeId, f.inodeId, 'the same file by either separator');
    assert.equal(await status(open('nope/x', CreateDisposition.OPEN_IF)), NtStatus.OBJECT_PATH_NOT_FOUND);
    assert.equal(await status(open('d/a|b', CreateDisposition.CREATE)), NtStatus.OBJECT_NAME_INVALID);
    assert.equal(await status(open('d//x', CreateDisposition.CREATE)), NtStatus.OBJECT_NAME_INVALID, 'an empty component');
    await srv.close();
  });

  it('SET_INFO of a DACL becomes the mode: a read-only DACL refuses a later open for writing', async () => {
    const { srv, c, open } = await setup();
    const f = await open('sd.txt', CreateDisposition.CREATE, 0, Access.READ_CONTROL | Access.WRITE_DAC | Access.GENERIC_READ);
    const sd = encodeSecurityDescriptor({
      control: 0,
      owner: null,
      group: null,
      dacl: [{ type: AceType.ACCESS_ALLOWED, flags: 0, mask: 0x001f0089, sid: CREATOR_OWNER }],
    });
    const set = (o: Open, info: number, buffer: Buffer) =>
      files.setInfo(c, o, { infoType: 3, infoClass: 0, additionalInformation: info, fileId: o.fileId, buffer });
    await set(f, SecurityInformation.DACL, sd);
    assert.equal((await srv.fs.resolve(f.handle)).inode.mode & 0o777, 0o400);
    assert.equal(await status(open('sd.txt', CreateDisposition.OPEN, 0, Access.FILE_WRITE_DATA)), NtStatus.ACCESS_DENIED);
    const q = await querySecurity(c, f, SecurityInformation.DACL);
    assert.deepEqual(
      decodeSecurityDescriptor(q.output).dacl!.map((a) => a.mask & 0x7),
      [0x1],
      'the owner reads, nothing else',
    );
    const attrsOnly = await open('sd.txt', CreateDisposition.OPEN, 0, Access.FILE_READ_ATTRIBUTES);
    const query = (o: Open, info: number) => querySecurity(c, o, info);
    assert.equal(await status(query(attrsOnly, SecurityInformation.OWNER)), NtStatus.ACCESS_DENIED, 'no READ_CONTROL');
    assert.equal((await query(attrsOnly, 0)).output.length, 20, 'nothing asked: an empty descriptor');
    const reader = await open('sd.txt', CreateDisposition.OPEN, 0, Access.GENERIC_READ);
    assert.equal(await status(set(reader, SecurityInformation.DACL, sd)), NtStatus.ACCESS_DENIED, 'no WRITE_DAC on that open');
    assert.equal(await status(set(f, SecurityInformation.DACL, Buffer.alloc(10))), NtStatus.INVALID_SECURITY_DESCR);
    assert.equal((await srv.fs.resolve(f.handle)).inode.mode & 0o777, 0o400, 'a refused SET_INFO changed nothing');
    await srv.close();
  });

  it('a CREATE whose DACL cannot be stored (a full volume) fails as DISK_FULL and leaves no file behind', async () => {
    const { c } = await setup();
    const sd = encodeSecurityDescriptor({
      control: 0,
      owner: null,
      group: null,
      dacl: [{ type: AceType.ACCESS_ALLOWED, flags: 0, mask: 0x001f01ff, sid: EVERYONE }],
    });
    const meta = c.share.meta;
    const putMeta = meta.putMeta.bind(meta);
    meta.putMeta = async (...args: Parameters<typeof meta.putMeta>) => {
      if (args[1] === InodeMetaKind.SECURITY) throw Object.assign(new Error('database or disk is full'), { code: '53100' });
      return putMeta(...args);
    };
    for (const options of [0, CreateOptions.DIRECTORY_FILE]) {
      const req = createRequest('half', {
        createDisposition: CreateDisposition.CREATE,
        createOptions: options,
        contexts: [{ name: 'SecD', data: sd }],
      });
      assert.equal(await status(create(c, req)), NtStatus.DISK_FULL, `CREATE (options ${options})`);
      assert.equal(await meta.lookup(c.share.rootId, Buffer.from('half')), null, 'no file is left behind');
    }
  });

  it('a CREATE whose undo fails too still answers the first failure, and logs the file it leaves', async () => {
    const { c } = await setup();
    const logged: { obj: Record<string, unknown>; msg: string }[] = [];
    c.log = pino(
      { level: 'error' },
      {
        write: (line: string) => {
          const obj = JSON.parse(line) as Record<string, unknown>;
          logged.push({ obj, msg: String(obj.msg) });
        },
      },
    );
    const meta = c.share.meta;
    const putMeta = meta.putMeta.bind(meta);
    meta.putMeta = async (...args: Parameters<typeof meta.putMeta>) => {
      if (args[1] === InodeMetaKind.SECURITY) throw Object.assign(new Error('database or disk is full'), { code: '53100' });
      return putMeta(...args);
    };
    meta.remove = async () => {
      throw new Error('the disk went away');
    };
    const sd = encodeSecurityDescriptor({
      control: 0,
      owner: null,
      group: null,
      dacl: [{ type: AceType.ACCESS_ALLOWED, flags: 0, mask: 0x001f01ff, sid: EVERYONE }],
    });
    const req = createRequest('stuck', { createDisposition: CreateDisposition.CREATE, contexts: [{ name: 'SecD', data: sd }] });
    assert.equal(await status(create(c, req)), NtStatus.DISK_FULL, 'the client hears why the CREATE failed, not why its undo did');
    assert.ok(await meta.lookup(c.share.rootId, Buffer.from('stuck')), 'the file the undo could not remove is there');
    assert.equal(logged.length, 1, JSON.stringify(logged));
    assert.match(logged[0]!.msg, /SMB CREATE: could not remove the file it made/);
    assert.equal(logged[0]!.obj.name, 'stuck');
    assert.match(String(logged[0]!.obj.cause), /disk is full/);
  });

  it('an overwriting CREATE that fails after its open was registered leaves no open behind', async () => {
    const { srv, c, open } = await setup();
    await files.close(c, await open('f', CreateDisposition.CREATE), 0, new SmbWriter());
    const meta = c.share.meta;
    const putMeta = meta.putMeta.bind(meta);
    meta.putMeta = async (...args: Parameters<typeof meta.putMeta>) => {
      if (args[1] === InodeMetaKind.EA) throw Object.assign(new Error('database or disk is full'), { code: '53100' });
      return putMeta(...args);
    };
    const eas = encodeFullEaList([{ flags: 0, name: Buffer.from('Color'), value: Buffer.from('red') }]);
    // No sharing at all: a registered open left behind would refuse every later open of the file.
    const req = createRequest('f', {
      createDisposition: CreateDisposition.OVERWRITE_IF,
      shareAccess: 0,
      contexts: [{ name: 'ExtA', data: eas }],
    });
    assert.equal(await status(create(c, req)), NtStatus.DISK_FULL);
    assert.equal(srv.fs.opens.size, 0, 'nothing registered stays');
    meta.putMeta = putMeta;
    assert.equal(
      await status(create(c, createRequest('f', { createDisposition: CreateDisposition.OPEN, shareAccess: 0 }))),
      NtStatus.SUCCESS,
    );
    await srv.close();
  });

  it('ExtA and SecD contexts, inherited DACLs, EaSize in directory entries, the allocation size kept', async () => {
    const { srv, c, open } = await setup();
    const eas = encodeFullEaList([{ flags: 0, name: Buffer.from('Color'), value: Buffer.from('red') }]);
    // The directory passes writing on to files (OBJECT_INHERIT) but neither DELETE nor FILE_DELETE_CHILD.
    const dirSd = encodeSecurityDescriptor({
      control: 0,
      owner: null,
      group: null,
      dacl: [{ type: AceType.ACCESS_ALLOWED, flags: AceFlags.OBJECT_INHERIT, mask: 0x001f01ff & ~0x10040, sid: EVERYONE }],
    });
    await create(
      c,
      createRequest('d', {
        createDisposition: CreateDisposition.CREATE,
        createOptions: CreateOptions.DIRECTORY_FILE,
        contexts: [{ name: 'SecD', data: dirSd }],
      }),
    );
    const f = (
      await create(c, createRequest('d\\f', { createDisposition: CreateDisposition.CREATE, contexts: [{ name: 'ExtA', data: eas }] }))
    ).open;
    const q = (cls: number, o: Open, info = 0) =>
      files.queryInfo(c, o, {
        infoType: cls === -1 ? 3 : 1,
        infoClass: cls === -1 ? 0 : cls,
        outputBufferLength: 4096,
        additionalInformation: info,
        flags: 1,
        fileId: o.fileId,
        input: Buffer.alloc(0),
      });
    assert.deepEqual(
      decodeFullEaList((await q(FileInfoClass.FileFullEaInformation, f)).output).map((e) => [e.name.toString(), e.value.toString()]),
      [['COLOR', 'red']],
    );
    const inherited = decodeSecurityDescriptor((await q(-1, f, SecurityInformation.DACL)).output).dacl!;
    assert.deepEqual(
      inherited.map((a) => [a.flags, a.mask]),
      [[AceFlags.INHERITED, 0x001f01ff & ~0x10040]],
    );
    await files.close(c, f, 0, new SmbWriter());
    // Opening it for DELETE: neither the file's DACL nor the directory's (FILE_DELETE_CHILD) allows it.
    assert.equal(await status(open('d\\f', CreateDisposition.OPEN, 0, Access.DELETE)), NtStatus.ACCESS_DENIED);
    assert.equal(await status(open('d\\f', CreateDisposition.OPEN, 0, Access.GENERIC_READ)), NtStatus.SUCCESS);
    // EaSize in a directory listing (FileFullDirectoryInformation: EaSize at 64).
    const d = await open('d', CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE, Access.GENERIC_READ);
    const list = await files.queryDirectory(c, d, {
      infoClass: FileInfoClass.FileFullDirectoryInformation,
      flags: QueryDirectoryFlags.RESTART_SCANS,
      fileIndex: 0,
      fileId: d.fileId,
      pattern: utf16('f'),
      outputBufferLength: 4096,
    });
    assert.equal(list.readUInt32LE(64), 20, 'one EA: 8 + 5 + 1 + 3 bytes, padded to 4');
    // Allocation: kept when larger than the data, reported by FileStandardInformation.
    const g = await open('g', CreateDisposition.CREATE);
    const alloc = Buffer.alloc(8);
    alloc.writeUInt32LE(8192, 0);
    await files.setInfo(c, g, {
      infoType: 1,
      infoClass: FileInfoClass.FileAllocationInformation,
      additionalInformation: 0,
      fileId: g.fileId,
      buffer: alloc,
    });
    assert.equal((await q(FileInfoClass.FileStandardInformation, g)).output.readUInt32LE(0), 8192);
    // AlSi: the allocation size of a new file, in the CREATE response (AllocationSize at 40) and after.
    const alSi = Buffer.alloc(8);
    alSi.writeUInt32LE(0x100000, 0);
    const h = await create(
      c,
      createRequest('h', { createDisposition: CreateDisposition.CREATE, contexts: [{ name: 'AlSi', data: alSi }] }),
    );
    assert.equal(h.body.readUInt32LE(40), 0x100000);
    assert.equal((await q(FileInfoClass.FileStandardInformation, h.open)).output.readUInt32LE(0), 0x100000);
    assert.equal(
      await status(
        create(c, createRequest('i', { createDisposition: CreateDisposition.CREATE, contexts: [{ name: 'AlSi', data: Buffer.alloc(4) }] })),
      ),
      NtStatus.INVALID_PARAMETER,
    );
    await srv.close();
  });

  it('a new file, directory or stream takes the mode of the DACL it carries; without one, 0644 and 0755', async () => {
    const { srv, c } = await setup();
    const bob = bobOn(srv);
    const { rootFh, root } = await shareRoot(srv);
    const modeOf = async (path: string) => {
      let fh = rootFh;
      let mode = 0;
      for (const part of path.split('/')) {
        const { share, inode } = await srv.fs.lookup(fh, Buffer.from(part), root);
        [fh, mode] = [srv.fs.handleOf(share, inode), inode.mode & 0o7777];
      }
      return mode;
    };
    const sd = (...dacl: { type: number; flags: number; mask: number; sid: ReturnType<typeof unixUserSid> }[]) =>
      encodeSecurityDescriptor({ control: 0, owner: null, group: null, dacl });
    const OICI = AceFlags.OBJECT_INHERIT | AceFlags.CONTAINER_INHERIT;
    const mkdir = (name: string, secD: Buffer | null) =>
      create(
        c,
        createRequest(name, {
          createDisposition: CreateDisposition.CREATE,
          createOptions: CreateOptions.DIRECTORY_FILE,
          contexts: secD ? [{ name: 'SecD', data: secD }] : [],
        }),
      ).then((r) => files.close(c, r.open, 0, new SmbWriter()));
    const make = (name: string, disposition: number, options = 0, contexts: { name: string; data: Buffer }[] = []) =>
      create(c, createRequest(name.replaceAll('/', '\\'), { createDisposition: disposition, createOptions: options, contexts })).then((r) =>
        files.close(c, r.open, 0, new SmbWriter()),
      );
    // As Explorer and icacls write it: the owner Full, BUILTIN\Users Modify, both (OI)(CI).
    const shared = [
      { type: AceType.ACCESS_ALLOWED, flags: OICI, mask: 0x001f01ff, sid: unixUserSid(alice.uid) },
      { type: AceType.ACCESS_ALLOWED, flags: OICI, mask: 0x001301bf, sid: BUILTIN_USERS },
    ];
    await mkdir('shared', sd(...shared));
    await make('shared/f', CreateDisposition.CREATE); // made at once (create-first.ts)
    await make('shared/g', CreateDisposition.OPEN_IF); // looked up, then made
    await make('shared/sub', CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE);
    await make('shared/s:stm', CreateDisposition.CREATE); // the file made with its stream
    // Modify gives every user read, write and execute; the owner's Full the same.
    for (const f of ['shared/f', 'shared/g', 'shared/sub', 'shared/s']) assert.equal(await modeOf(f), 0o777, f);
    // Bob (BUILTIN\Users) writes what alice made, as on Windows, and its stream.
    for (const name of ['shared\\f', 'shared\\s:stm']) {
      const o = (await as(bob, name, Access.GENERIC_WRITE)).open;
      await files.write(bob, o, { offset: 0, data: Buffer.from('bob'), fileId: o.fileId, flags: 0 });
      await files.close(bob, o, 0, new SmbWriter());
    }
    // The DACL stored is the inherited one, unchanged.
    const f = (await as(c, 'shared\\f', Access.READ_CONTROL)).open;
    const q = await querySecurity(c, f, SecurityInformation.DACL);
    assert.deepEqual(
      decodeSecurityDescriptor(q.output).dacl!.map((a) => [a.flags, a.mask]),
      [
        [AceFlags.INHERITED, 0x001f01ff],
        [AceFlags.INHERITED, 0x001301bf],
      ],
    );
    // A SecD gives its own DACL's mode: the owner's Full, Everyone's read (a directory: and search).
    await make('shared/secd', CreateDisposition.CREATE, 0, [
      { name: 'SecD', data: sd(shared[0]!, { type: AceType.ACCESS_ALLOWED, flags: 0, mask: 0x00120089, sid: EVERYONE }) },
    ]);
    assert.equal(await modeOf('shared/secd'), 0o744);
    // CREATOR OWNER stands for the new file's owner: alice's Full, every user's read.
    await mkdir(
      'creator',
      sd(
        { type: AceType.ACCESS_ALLOWED, flags: 0, mask: 0x001f01ff, sid: unixUserSid(alice.uid) },
        { type: AceType.ACCESS_ALLOWED, flags: OICI | AceFlags.INHERIT_ONLY, mask: 0x001f01ff, sid: CREATOR_OWNER },
        { type: AceType.ACCESS_ALLOWED, flags: OICI, mask: 0x001200a9, sid: BUILTIN_USERS },
      ),
    );
    await make('creator/f', CreateDisposition.CREATE);
    await make('creator/sub', CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE);
    assert.equal(await modeOf('creator/f'), 0o755);
    assert.equal(await modeOf('creator/sub'), 0o755);
    assert.equal(await modeOf('creator'), 0o755);
    // No DACL, or one with nothing inheritable: what NFS users of the share expect, 0644 and 0755.
    await mkdir('plain', null);
    await mkdir('noinh', sd({ type: AceType.ACCESS_ALLOWED, flags: 0, mask: 0x001f01ff, sid: EVERYONE }));
    for (const d of ['plain', 'noinh']) {
      await make(`${d}/f`, CreateDisposition.CREATE);
      await make(`${d}/g`, CreateDisposition.OPEN_IF);
      await make(`${d}/sub`, CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE);
      await make(`${d}/s:stm`, CreateDisposition.CREATE);
      for (const [n, m] of [
        ['f', 0o644],
        ['g', 0o644],
        ['sub', 0o755],
        ['s', 0o644],
      ] as const)
        assert.equal(await modeOf(`${d}/${n}`), m, `${d}/${n}`);
    }
    await srv.close();
  });

  it("a new file's creator writes it through its handle, also where the DACL it inherits gives its owner no write", async () => {
    const { srv, c } = await setup();
    const bob = bobOn(srv);
    const OICI = AceFlags.OBJECT_INHERIT | AceFlags.CONTAINER_INHERIT;
    // Every user may add files to the folder (this folder and subfolders only); what files inherit
    // is Everyone's read and execute: their mode is 0555, their owner's included.
    const secD = encodeSecurityDescriptor({
      control: 0,
      owner: null,
      group: null,
      dacl: [
        { type: AceType.ACCESS_ALLOWED, flags: OICI, mask: 0x001200a9, sid: EVERYONE },
        { type: AceType.ACCESS_ALLOWED, flags: AceFlags.CONTAINER_INHERIT, mask: 0x001f01ff, sid: EVERYONE },
      ],
    });
    const dir = await create(
      c,
      createRequest('drop', {
        createDisposition: CreateDisposition.CREATE,
        createOptions: CreateOptions.DIRECTORY_FILE,
        contexts: [{ name: 'SecD', data: secD }],
      }),
    );
    await files.close(c, dir.open, 0, new SmbWriter());
    const rw = Access.GENERIC_READ | Access.GENERIC_WRITE;
    // Windows grants the creator of a new object the access it asks, whatever the object's DACL:
    // its data, allocation and EAs through that open, and a stream made with the file.
    const f = (await as(c, 'drop\\f', rw, CreateDisposition.CREATE)).open;
    await files.write(c, f, { offset: 0, data: Buffer.from('data'), fileId: f.fileId, flags: 0 });
    const alloc = Buffer.alloc(8);
    alloc.writeUInt32LE(8192, 0);
    await files.setInfo(c, f, {
      infoType: 1,
      infoClass: FileInfoClass.FileAllocationInformation,
      buffer: alloc,
      additionalInformation: 0,
      fileId: f.fileId,
    });
    await files.setInfo(c, f, {
      infoType: 1,
      infoClass: FileInfoClass.FileFullEaInformation,
      buffer: encodeFullEaList([{ name: Buffer.from('USER.NOTE'), value: Buffer.from('v'), flags: 0 }]),
      additionalInformation: 0,
      fileId: f.fileId,
    });
    await files.close(c, f, 0, new SmbWriter());
    const s = (await as(c, 'drop\\g:stm', rw, CreateDisposition.CREATE)).open;
    await files.write(c, s, { offset: 0, data: Buffer.from('stream'), fileId: s.fileId, flags: 0 });
    await files.close(c, s, 0, new SmbWriter());
    // The mode still says what the DACL grants: nobody's write, once the creator's open is closed.
    const { rootFh, root } = await shareRoot(srv);
    const d = await srv.fs.lookup(rootFh, Buffer.from('drop'), root);
    for (const name of ['f', 'g']) {
      const { inode } = await srv.fs.lookup(srv.fs.handleOf(d.share, d.inode), Buffer.from(name), root);
      assert.equal(inode.mode & 0o777, 0o555, name);
    }
    assert.equal(await status(as(bob, 'drop\\f', Access.FILE_WRITE_DATA)), NtStatus.ACCESS_DENIED);
    assert.equal(await status(as(bob, 'drop\\g:stm', Access.FILE_WRITE_DATA)), NtStatus.ACCESS_DENIED);
    await srv.close();
  });

  it('rename refuses an existing target unless ReplaceIfExists, and moves across directories', async () => {
    const { srv, c, open } = await setup();
    await open('d', CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE);
    const a = await open('a', CreateDisposition.CREATE);
    // An open file cannot be replaced (ACCESS_DENIED): the target is closed first.
    const b = await open('d\\b', CreateDisposition.CREATE);
    await files.close(c, b, 0, new SmbWriter());
    const info = (replace: boolean, target: string): Buffer => renameInfo(target, replace);
    const rename = (replace: boolean, target: string) =>
      status(
        files.setInfo(c, a, {
          infoType: 1,
          infoClass: FileInfoClass.FileRenameInformation,
          buffer: info(replace, target),
          additionalInformation: 0,
          fileId: a.fileId,
        }),
      );
    assert.equal(await rename(false, 'd\\b'), NtStatus.OBJECT_NAME_COLLISION);
    assert.equal(await rename(true, 'd\\b'), NtStatus.SUCCESS);
    assert.equal(a.path, 'd\\b');
    assert.equal(await status(open('a', CreateDisposition.OPEN)), NtStatus.OBJECT_NAME_NOT_FOUND);
    assert.equal((await open('d\\b', CreateDisposition.OPEN)).inodeId, a.inodeId);
    await srv.close();
  });

  it('a link with ReplaceIfExists does not replace a file that is open, as a rename does not', async () => {
    const { srv, c, open } = await setup();
    const src = await open('src', CreateDisposition.CREATE);
    const x = await open('x', CreateDisposition.CREATE);
    await files.write(c, x, { offset: 0, fileId: x.fileId, flags: 0, data: Buffer.from('kept') });
    await files.close(c, x, 0, new SmbWriter());
    // An open of x that shares nothing (another client's, say).
    const victim = (
      await create(c, createRequest('x', { desiredAccess: Access.GENERIC_READ, createDisposition: CreateDisposition.OPEN, shareAccess: 0 }))
    ).open;
    const b = renameInfo('x', true);
    const link = () =>
      files.setInfo(c, src, {
        infoType: 1,
        infoClass: FileInfoClass.FileLinkInformation,
        buffer: b,
        additionalInformation: 0,
        fileId: src.fileId,
      });
    assert.equal(await status(link()), NtStatus.ACCESS_DENIED);
    assert.equal(
      (await files.read(c, victim, { flags: 0, length: 4, offset: 0, fileId: victim.fileId, minimumCount: 0 })).toString(),
      'kept',
    );
    assert.equal((await srv.fs.lookup(src.parent!, Buffer.from('x'), c.id)).inode.id, victim.inodeId, 'x is still the file open');
    await files.close(c, victim, 0, new SmbWriter());
    assert.equal(await status(link()), NtStatus.SUCCESS, 'closed, it may be replaced');
    assert.equal((await srv.fs.lookup(src.parent!, Buffer.from('x'), c.id)).inode.id, src.inodeId);
    // A named stream is no file to link (MS-FSA): INVALID_PARAMETER, and no name made.
    const stream = await open('src:s', CreateDisposition.CREATE);
    const linkStream = setName(c, stream, FileInfoClass.FileLinkInformation, 'y');
    assert.equal(await status(linkStream), NtStatus.INVALID_PARAMETER);
    assert.equal(await status(open('y', CreateDisposition.OPEN)), NtStatus.OBJECT_NAME_NOT_FOUND);
    // Nor is it renamed to a file name: that would rename src itself (past the share modes of its
    // opens), nor to another stream name (not done here).
    for (const [target, want] of [
      ['y', NtStatus.INVALID_PARAMETER],
      [':t', NtStatus.NOT_SUPPORTED],
    ] as const) {
      const renameStream = setName(c, stream, FileInfoClass.FileRenameInformation, target);
      assert.equal(await status(renameStream), want, target);
    }
    assert.equal(await status(open('y', CreateDisposition.OPEN)), NtStatus.OBJECT_NAME_NOT_FOUND);
    assert.equal((await srv.fs.lookup(src.parent!, Buffer.from('x'), c.id)).inode.id, src.inodeId, 'src is still x');
    // Nor is a directory, and the file a replacing link would have removed for it stays.
    const dir = await open('dir', CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE);
    const linkDir = files.setInfo(c, dir, {
      infoType: 1,
      infoClass: FileInfoClass.FileLinkInformation,
      buffer: b,
      additionalInformation: 0,
      fileId: dir.fileId,
    });
    assert.equal(await status(linkDir), NtStatus.FILE_IS_A_DIRECTORY);
    assert.equal((await srv.fs.lookup(src.parent!, Buffer.from('x'), c.id)).inode.id, src.inodeId, 'x is still there');
    await srv.close();
  });

  it("an NFS rename of an open file is followed: the open's delete on close, rename and path act on the new name", async () => {
    const { srv, c, open } = await setup();
    const { rootFh, root, names } = await shareRoot(srv);
    const f = await open('a', CreateDisposition.CREATE, CreateOptions.DELETE_ON_CLOSE);
    const stream = await open('a:s', CreateDisposition.CREATE);
    // An NFS client renames the file and makes a new one under its old name.
    await srv.fs.rename(rootFh, Buffer.from('a'), rootFh, Buffer.from('moved'), root, null, true);
    assert.deepEqual([f.path, stream.path], ['moved', 'moved:s']);
    const other = await srv.fs.create(rootFh, Buffer.from('a'), root, VfsCreateMode.GUARDED, {}, null);
    // A rename through the open moves the open's file, not the new one.
    assert.equal(await status(setName(c, f, FileInfoClass.FileRenameInformation, 'renamed')), NtStatus.SUCCESS);
    assert.deepEqual(await names(), ['a', 'renamed']);
    assert.equal(stream.path, 'renamed:s');
    // Its delete on close deletes it where it is now, and leaves the new file.
    await files.close(c, stream, 0, new SmbWriter());
    await files.close(c, f, 0, new SmbWriter());
    assert.deepEqual(await names(), ['a']);
    assert.equal((await srv.fs.lookup(rootFh, Buffer.from('a'), root)).inode.id, other.inode.id);
    await srv.close();
  });

  it('opens follow an NFS rename into another directory, and a rename of a directory they are beneath', async () => {
    const { srv, c, open } = await setup();
    const { rootFh, root, names } = await shareRoot(srv);
    const d1 = (await srv.fs.mkdir(rootFh, Buffer.from('d1'), root, { mode: 0o777 })).inode;
    const d2 = (await srv.fs.mkdir(rootFh, Buffer.from('d2'), root, { mode: 0o777 })).inode;
    const share = srv.fs.shares()[0]!;
    const sub = (await srv.fs.mkdir(srv.fs.handleOf(share, d2), Buffer.from('sub'), root, { mode: 0o777 })).inode;
    for (let i = 0; i < 300; i++) await srv.fs.mkdir(srv.fs.handleOf(share, d2), Buffer.from(`pad${i}`), root, {});
    const x = await open('d1\\x', CreateDisposition.CREATE, CreateOptions.DELETE_ON_CLOSE);
    // No open knows d2\sub's path: it is found from the store (sub's name past a page of d2's entries).
    await srv.fs.rename(srv.fs.handleOf(share, d1), Buffer.from('x'), srv.fs.handleOf(share, sub), Buffer.from('y'), root, null, true);
    assert.equal(x.path, 'd2\\sub\\y');
    const subOpen = await open('d2\\sub', CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE, Access.GENERIC_READ);
    // The directory two levels up is renamed: the opens beneath name their files under its new name.
    await srv.fs.rename(rootFh, Buffer.from('d2'), rootFh, Buffer.from('e'), root, null, true);
    assert.deepEqual([x.path, subOpen.path], ['e\\sub\\y', 'e\\sub']);
    // The delete on close removes y where it is.
    await files.close(c, x, 0, new SmbWriter());
    await files.close(c, subOpen, 0, new SmbWriter());
    const inSub = await srv.fs.readdir(srv.fs.handleOf(share, sub), root, 0, 10);
    assert.deepEqual(
      inSub.entries.map((e) => e.name.toString()),
      [],
    );
    assert.deepEqual(await names(), ['d1', 'e']);
    await srv.close();
  });

  it('a second rename made while the opens are still following the first is followed too', async () => {
    const { srv, c, open } = await setup();
    const { rootFh, root } = await shareRoot(srv);
    const share = srv.fs.shares()[0]!;
    const d1 = srv.fs.handleOf(share, (await srv.fs.mkdir(rootFh, Buffer.from('d1'), root, { mode: 0o777 })).inode);
    const d2Inode = (await srv.fs.mkdir(rootFh, Buffer.from('d2'), root, { mode: 0o777 })).inode;
    const d2 = srv.fs.handleOf(share, d2Inode);
    const x = await open('d1\\x', CreateDisposition.CREATE, CreateOptions.DELETE_ON_CLOSE);
    // The first rename's follower looks d2's path up in the store (no open knows it): its first
    // directory read waits until the second rename is made (a store answering over the network).
    const readdir = share.meta.readdir.bind(share.meta);
    let entered!: () => void;
    const walking = new Promise<void>((r) => (entered = r));
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let first = true;
    share.meta.readdir = async (...args: Parameters<typeof readdir>) => {
      if (first) {
        first = false;
        entered();
        await released;
      }
      return readdir(...args);
    };
    const storeRename = share.meta.rename.bind(share.meta);
    let stored!: () => void;
    const secondStored = new Promise<void>((r) => (stored = r));
    const one = srv.fs.rename(d1, Buffer.from('x'), d2, Buffer.from('x'), root, null, true);
    await walking;
    share.meta.rename = async (...args: Parameters<typeof storeRename>) => {
      const r = await storeRename(...args);
      stored();
      return r;
    };
    const two = srv.fs.rename(d2, Buffer.from('x'), d2, Buffer.from('y'), root, null, true);
    await secondStored;
    release();
    await Promise.all([one, two]);
    assert.deepEqual([x.name?.toString(), x.path], ['y', 'd2\\y']);
    // Its delete on close removes the file where it is.
    await files.close(c, x, 0, new SmbWriter());
    assert.deepEqual(
      (await srv.fs.readdir(d2, root, 0, 10)).entries.map((e) => e.name.toString()),
      [],
    );
    await srv.close();
  });

  it("a rename whose target directory's path cannot be read still moves its opens' name (their delete on close and rename)", async () => {
    const { srv, c, open } = await setup();
    const { rootFh, root } = await shareRoot(srv);
    const share = srv.fs.shares()[0]!;
    const d2 = srv.fs.handleOf(share, (await srv.fs.mkdir(rootFh, Buffer.from('d2'), root, { mode: 0o777 })).inode);
    await srv.fs.mkdir(rootFh, Buffer.from('d1'), root, { mode: 0o777 });
    const x = await open('d1\\x', CreateDisposition.CREATE, CreateOptions.DELETE_ON_CLOSE);
    // The store fails the directory reads that would find d2's path (no open knows it).
    const readdir = share.meta.readdir.bind(share.meta);
    share.meta.readdir = () => Promise.reject(new Error('the store is unreachable'));
    // A rename through the open (SMB's own), into d2: made, and answered as made.
    assert.equal(await status(setName(c, x, FileInfoClass.FileRenameInformation, 'd2\\y')), NtStatus.SUCCESS);
    share.meta.readdir = readdir;
    assert.equal(x.name?.toString(), 'y');
    // Its delete on close removes the file where it is.
    await files.close(c, x, 0, new SmbWriter());
    assert.deepEqual(
      (await srv.fs.readdir(d2, root, 0, 10)).entries.map((e) => e.name.toString()),
      [],
    );
    await srv.close();
  });

  it("a directory's rename is followed in its own share only: another share of the store reads nothing and stops nothing", async () => {
    const { srv, c, open } = await setup();
    const { rootFh, root } = await shareRoot(srv);
    const share = srv.fs.shares()[0]!;
    // A second share of the same store, with an SMB open of its own, made first.
    const other = await srv.fs.addShare({ ...TEST_SHARE, name: 'other' }, share.meta, share.data);
    const tree = { ...c.tree, share: other, name: other.name };
    const inOther = (await create({ ...c, share: other, tree }, createRequest('o', { createDisposition: CreateDisposition.CREATE }))).open;
    assert.equal(inOther.share, other);
    await srv.fs.mkdir(rootFh, Buffer.from('d'), root, { mode: 0o777 });
    const x = await open('d\\x', CreateDisposition.CREATE);
    const readdir = share.meta.readdir.bind(share.meta);
    let reads = 0;
    share.meta.readdir = (...args: Parameters<typeof readdir>) => (reads++, readdir(...args));
    await srv.fs.rename(rootFh, Buffer.from('d'), rootFh, Buffer.from('e'), root, null, true);
    assert.equal(x.path, 'e\\x');
    assert.equal(inOther.path, 'o');
    // The renamed directory's path is known (the share root): nothing is read, in either share.
    assert.equal(reads, 0);
    await srv.close();
  });

  it("an SMB rename into another directory reads no directory for its opens' paths: the client named the target", async () => {
    const { srv, c, open } = await setup();
    const { rootFh, root } = await shareRoot(srv);
    const share = srv.fs.shares()[0]!;
    const d2 = (await srv.fs.mkdir(rootFh, Buffer.from('d2'), root, { mode: 0o777 })).inode;
    await srv.fs.mkdir(srv.fs.handleOf(share, d2), Buffer.from('sub'), root, { mode: 0o777 });
    const a = await open('a', CreateDisposition.CREATE);
    const again = await open('a', CreateDisposition.OPEN);
    const readdir = share.meta.readdir.bind(share.meta);
    let reads = 0;
    share.meta.readdir = (...args: Parameters<typeof readdir>) => (reads++, readdir(...args));
    assert.equal(await status(setName(c, a, FileInfoClass.FileRenameInformation, 'd2\\sub\\y')), NtStatus.SUCCESS);
    assert.deepEqual([a.path, again.path], ['d2\\sub\\y', 'd2\\sub\\y']);
    assert.equal(reads, 0);
    await srv.close();
  });

  it('an NFS rename of a name onto another link of the same file changes nothing, and the opens keep their name', async () => {
    const { srv, c, open } = await setup();
    const { rootFh, root, names } = await shareRoot(srv);
    const a = await open('a', CreateDisposition.CREATE, CreateOptions.DELETE_ON_CLOSE);
    await srv.fs.link(a.handle, rootFh, Buffer.from('b'), root);
    // POSIX: a rename between two links of one file does nothing; both names stay.
    await srv.fs.rename(rootFh, Buffer.from('a'), rootFh, Buffer.from('b'), root, null, true);
    assert.deepEqual(await names(), ['a', 'b']);
    assert.deepEqual([a.name?.toString(), a.path], ['a', 'a']);
    // The delete on close removes the name the client opened, not the other link.
    await files.close(c, a, 0, new SmbWriter());
    assert.deepEqual(await names(), ['b']);
    await srv.close();
  });

  it('an NFS rename of a directory moves the paths of the opens beneath it, not of those beneath a name differing only in case', async () => {
    const { srv, open } = await setup();
    const { rootFh, root } = await shareRoot(srv);
    // Two directories NFS made, whose names differ only in case (the store is case-sensitive).
    await srv.fs.mkdir(rootFh, Buffer.from('docs'), root, { mode: 0o777 });
    await srv.fs.mkdir(rootFh, Buffer.from('Docs'), root, { mode: 0o777 });
    const a = await open('docs\\a', CreateDisposition.CREATE);
    const b = await open('Docs\\b', CreateDisposition.CREATE);
    await srv.fs.rename(rootFh, Buffer.from('docs'), rootFh, Buffer.from('z'), root, null, true);
    assert.deepEqual([a.path, b.path], ['z\\a', 'Docs\\b']);
    await srv.close();
  });

  it("delete on close and a rename act on the open's file, never on another that took its name since (a rename no open here follows)", async () => {
    const { srv, c, open } = await setup();
    const { rootFh, root, names } = await shareRoot(srv);
    const share = srv.fs.shares()[0]!;
    const f = await open('a', CreateDisposition.CREATE, CreateOptions.DELETE_ON_CLOSE);
    // Another server sharing the store renames the file away (straight in the store: this server's
    // opens are not told) and makes a new one under its name.
    await share.meta.rename(share.rootId, Buffer.from('a'), share.rootId, Buffer.from('moved'), nowTimespec());
    const other = await srv.fs.create(rootFh, Buffer.from('a'), root, VfsCreateMode.GUARDED, {}, null);
    // A rename through the open does not move the new file.
    const rename = setName(c, f, FileInfoClass.FileRenameInformation, 'renamed');
    assert.equal(await status(rename), NtStatus.OBJECT_NAME_NOT_FOUND);
    // Nor does the delete on close delete it.
    await files.close(c, f, 0, new SmbWriter());
    assert.deepEqual(await names(), ['a', 'moved']);
    assert.equal((await srv.fs.lookup(rootFh, Buffer.from('a'), root)).inode.id, other.inode.id);
    await srv.close();
  });

  it("a file's other opens through the same name follow a rename made through one of them: their rename and delete on close act on the new name", async () => {
    const { srv, c, open } = await setup();
    const { names } = await shareRoot(srv);
    const a = await open('a', CreateDisposition.CREATE);
    const b = await open('a', CreateDisposition.OPEN, CreateOptions.DELETE_ON_CLOSE);
    const stream = await open('a:s', CreateDisposition.CREATE);
    assert.equal(await status(setName(c, a, FileInfoClass.FileRenameInformation, 'b')), NtStatus.SUCCESS);
    // Through the other open: the file, under its new name, moves again.
    assert.equal(await status(setName(c, b, FileInfoClass.FileRenameInformation, 'c')), NtStatus.SUCCESS);
    assert.deepEqual(await names(), ['c']);
    assert.equal(a.path, 'c');
    assert.equal(stream.path, 'c:s', "the stream's open names its file where it is");
    await files.close(c, stream, 0, new SmbWriter());
    await files.close(c, a, 0, new SmbWriter());
    // The last close of the open made with delete on close deletes the file where it is now.
    await files.close(c, b, 0, new SmbWriter());
    assert.deepEqual(await names(), []);
    // An open made through another hard link keeps its link: `src`, linked as `link`, renamed to
    // `to`; the delete on close of the open made through `link` then removes `link`, not `to`.
    const otherLinkStays = async (src: string, link: string, to: string): Promise<void> => {
      const s = await open(src, CreateDisposition.CREATE);
      assert.equal(await status(setName(c, s, FileInfoClass.FileLinkInformation, link)), NtStatus.SUCCESS);
      const through = await open(link, CreateDisposition.OPEN, CreateOptions.DELETE_ON_CLOSE);
      assert.equal(await status(setName(c, s, FileInfoClass.FileRenameInformation, to)), NtStatus.SUCCESS);
      assert.equal(through.path, link);
      await files.close(c, s, 0, new SmbWriter());
      await files.close(c, through, 0, new SmbWriter());
    };
    await otherLinkStays('d', 'x', 'e');
    assert.deepEqual(await names(), ['e'], 'the delete on close of the open through x removes x');
    // Links whose names differ only in case are two names (stored names are exact).
    await otherLinkStays('f', 'F', 'g');
    assert.deepEqual(await names(), ['e', 'g']);
    await srv.close();
  });

  it('a rename onto another hard link of the open file is refused and changes nothing (it does not answer success and move the opens)', async () => {
    const { srv, c, open } = await setup();
    const { names } = await shareRoot(srv);
    const a = await open('a', CreateDisposition.CREATE);
    assert.equal(await status(setName(c, a, FileInfoClass.FileLinkInformation, 'x')), NtStatus.SUCCESS);
    const again = await open('a', CreateDisposition.OPEN, CreateOptions.DELETE_ON_CLOSE);
    assert.equal(await status(setName(c, a, FileInfoClass.FileRenameInformation, 'x')), NtStatus.OBJECT_NAME_COLLISION);
    // Replacing it would replace a name of an open file (this one).
    assert.equal(await status(setName(c, a, FileInfoClass.FileRenameInformation, 'x', true)), NtStatus.ACCESS_DENIED);
    assert.deepEqual([a.path, again.path], ['a', 'a']);
    // A rename onto its own name is no change, and succeeds.
    assert.equal(await status(setName(c, a, FileInfoClass.FileRenameInformation, 'a')), NtStatus.SUCCESS);
    await files.close(c, a, 0, new SmbWriter());
    await files.close(c, again, 0, new SmbWriter());
    assert.deepEqual(await names(), ['x'], 'the delete on close of the open through a removes a');
    await srv.close();
  });

  it('delete on close removes the file; a non-empty directory refuses the delete disposition', async () => {
    const { srv, c, open } = await setup();
    const f = await open('gone', CreateDisposition.CREATE, CreateOptions.DELETE_ON_CLOSE);
    await files.close(c, f, 0, new SmbWriter());
    assert.equal(await status(open('gone', CreateDisposition.OPEN)), NtStatus.OBJECT_NAME_NOT_FOUND);
    const d = await open('full', CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE);
    await open('full\\x', CreateDisposition.CREATE);
    const disp = Buffer.from([1]);
    assert.equal(
      await status(
        files.setInfo(c, d, {
          infoType: 1,
          infoClass: FileInfoClass.FileDispositionInformation,
          buffer: disp,
          additionalInformation: 0,
          fileId: d.fileId,
        }),
      ),
      NtStatus.DIRECTORY_NOT_EMPTY,
    );
    // A new file asked READONLY and delete-on-close at once is refused, and not created.
    const roDoc = createRequest('ro', {
      desiredAccess: Access.GENERIC_ALL,
      createDisposition: CreateDisposition.CREATE,
      createOptions: CreateOptions.DELETE_ON_CLOSE | CreateOptions.NON_DIRECTORY_FILE,
      fileAttributes: 0x1,
    });
    assert.equal(await status(create(c, roDoc)), NtStatus.CANNOT_DELETE);
    assert.equal(await status(open('ro', CreateDisposition.OPEN)), NtStatus.OBJECT_NAME_NOT_FOUND);
    await srv.close();
  });

  it('the READONLY attribute in FileBasicInformation clears and restores write bits (Linux chmod a-w / u+w)', async () => {
    const { srv, c, open } = await setup();
    const f = await open('ro', CreateDisposition.CREATE);
    const basic = (o: Open, attributes: number) => {
      const b = Buffer.alloc(40); // times 0: unchanged
      b.writeUInt32LE(attributes, 32);
      return files.setInfo(c, o, {
        infoType: 1,
        infoClass: FileInfoClass.FileBasicInformation,
        buffer: b,
        additionalInformation: 0,
        fileId: o.fileId,
      });
    };
    const mode = async (o: Open) => (await srv.fs.resolve(o.handle)).inode.mode & 0o7777;
    assert.equal(await mode(f), 0o644);
    await basic(f, 0x21); // READONLY | ARCHIVE
    assert.equal(await mode(f), 0o444);
    assert.equal(await status(open('ro', CreateDisposition.OPEN, 0, Access.GENERIC_WRITE)), NtStatus.ACCESS_DENIED);
    await basic(f, 0); // 0: attributes unchanged
    assert.equal(await mode(f), 0o444);
    await basic(f, 0x20); // ARCHIVE alone: no longer read-only, the owner may write
    assert.equal(await mode(f), 0o644);
    assert.equal(await status(open('ro', CreateDisposition.OPEN, 0, Access.GENERIC_WRITE)), NtStatus.SUCCESS);
    const d = await open('dir', CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE);
    await basic(d, 0x11); // READONLY | DIRECTORY: a directory keeps its mode
    assert.equal(await mode(d), 0o755);
    await srv.close();
  });

  it('QUERY_INFO of attributes and times needs FILE_READ_ATTRIBUTES; the size does not', async () => {
    const { srv, c, open } = await setup();
    await files.close(c, await open('f', CreateDisposition.CREATE), 0, new SmbWriter());
    const o = await open('f', CreateDisposition.OPEN, 0, Access.FILE_READ_DATA);
    const query = (infoClass: number, on = o) =>
      files.queryInfo(c, on, {
        infoType: 1,
        infoClass,
        outputBufferLength: 4096,
        input: Buffer.alloc(0),
        additionalInformation: 0,
        flags: 0,
        fileId: on.fileId,
      });
    for (const cls of [
      FileInfoClass.FileBasicInformation,
      FileInfoClass.FileAllInformation,
      FileInfoClass.FileNetworkOpenInformation,
      FileInfoClass.FileAttributeTagInformation,
    ])
      assert.equal(await status(query(cls)), NtStatus.ACCESS_DENIED, `class ${cls}`);
    assert.equal(await status(query(FileInfoClass.FileStandardInformation)), 0);
    const withAttrs = await open('f', CreateDisposition.OPEN, 0, Access.FILE_READ_DATA | Access.FILE_READ_ATTRIBUTES);
    assert.equal(await status(query(FileInfoClass.FileBasicInformation, withAttrs)), 0);
    await srv.close();
  });

  it("CREATE refuses rights the caller may not have: DELETE of another's file needs the directory's write permission", async () => {
    const { srv, c } = await setup();
    const bob = bobOn(srv);
    // Bob's directory (0755) and his files in it: 0644, and one anybody may write (0666).
    await as(bob, 'd', Access.GENERIC_ALL, CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE);
    const f = (await as(bob, 'd\\f', Access.GENERIC_ALL, CreateDisposition.CREATE)).open;
    const w = (await as(bob, 'd\\w', Access.GENERIC_ALL, CreateDisposition.CREATE)).open;
    await srv.fs.setattr(w.handle, bob.id, { mode: 0o666 });
    for (const name of ['d\\f', 'd\\w']) {
      assert.equal(await status(as(c, name, Access.DELETE)), NtStatus.ACCESS_DENIED, `${name}: DELETE`);
      assert.equal(await status(as(c, name, Access.GENERIC_ALL)), NtStatus.ACCESS_DENIED, `${name}: GENERIC_ALL`);
      assert.equal(
        await status(as(c, name, Access.MAXIMUM_ALLOWED, CreateDisposition.OPEN, CreateOptions.DELETE_ON_CLOSE)),
        NtStatus.ACCESS_DENIED,
        `${name}: delete on close`,
      );
      const maximal = (await as(c, name, Access.MAXIMUM_ALLOWED)).open;
      assert.equal(maximal.grantedAccess & Access.DELETE, 0, `${name}: MAXIMUM_ALLOWED grants no DELETE`);
      await files.close(c, maximal, 0, new SmbWriter());
    }
    assert.equal(await status(as(c, 'd\\f', Access.FILE_WRITE_ATTRIBUTES)), NtStatus.ACCESS_DENIED, 'not the owner, may not write');
    assert.equal(await status(as(c, 'd\\f', Access.WRITE_DAC)), NtStatus.ACCESS_DENIED);
    await files.close(bob, (await as(bob, 'd\\f:s', Access.GENERIC_ALL, CreateDisposition.CREATE)).open, 0, new SmbWriter());
    assert.equal(await status(as(c, 'd\\f:s', Access.DELETE)), NtStatus.ACCESS_DENIED, 'a stream of it');
    // What clients ask to read or stat a file they may read is granted as asked.
    const read = Access.FILE_READ_DATA | Access.FILE_READ_ATTRIBUTES | Access.READ_CONTROL | Access.SYNCHRONIZE;
    const r = (await as(c, 'd\\f', read)).open;
    assert.equal(r.grantedAccess, read);
    await files.close(c, r, 0, new SmbWriter());
    // Bob's open of his file stays, and the file with it.
    await files.close(bob, f, 0, new SmbWriter());
    assert.equal(await status(as(bob, 'd\\f', Access.GENERIC_READ)), NtStatus.SUCCESS);
    // In a directory Alice may write (the share root, 0777), she may delete Bob's file, as over NFS.
    const g = (await as(bob, 'g', Access.GENERIC_ALL, CreateDisposition.CREATE)).open;
    await files.close(bob, g, 0, new SmbWriter());
    const del = (await as(c, 'g', Access.DELETE, CreateDisposition.OPEN, CreateOptions.DELETE_ON_CLOSE)).open;
    await files.close(c, del, 0, new SmbWriter());
    assert.equal(await status(as(bob, 'g', Access.GENERIC_READ)), NtStatus.OBJECT_NAME_NOT_FOUND);
    await srv.close();
  });

  it("DELETE is the owner's too (not a writer's), and MxAc reports what CREATE would grant", async () => {
    const { srv, c } = await setup();
    const bob = bobOn(srv);
    // Bob's files in his directory, which he then makes read-only (0555) for everybody, himself too.
    const q = (await as(bob, 'q', Access.GENERIC_ALL, CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE)).open;
    await files.close(bob, (await as(bob, 'q\\own', Access.GENERIC_ALL, CreateDisposition.CREATE)).open, 0, new SmbWriter());
    const w = (await as(bob, 'q\\w', Access.GENERIC_ALL, CreateDisposition.CREATE)).open;
    await srv.fs.setattr(w.handle, bob.id, { mode: 0o666 });
    await files.close(bob, w, 0, new SmbWriter());
    await srv.fs.setattr(q.handle, bob.id, { mode: 0o555 });
    // The owner's full-access open (backup and sync tools, .NET) is granted, DELETE with it.
    const own = (await as(bob, 'q\\own', FILE_ALL_ACCESS)).open;
    assert.equal(own.grantedAccess & Access.DELETE, Access.DELETE);
    await files.close(bob, own, 0, new SmbWriter());
    // Alice may write q\w but not remove it from q: MxAc says so, as CREATE answers.
    const { body } = await create(
      c,
      createRequest('q\\w', {
        desiredAccess: Access.FILE_READ_ATTRIBUTES,
        createDisposition: CreateDisposition.OPEN,
        contexts: [{ name: 'MxAc', data: Buffer.alloc(0) }],
      }),
    );
    const at = body.indexOf(Buffer.from('MxAc'));
    assert.ok(at > 0, 'an MxAc context in the response');
    const ctx = at - 16; // the name follows the 16-byte context header
    const data = ctx + body.readUInt16LE(ctx + 10);
    assert.equal(body.readUInt32LE(data), 0, 'MxAc status');
    const maximal = body.readUInt32LE(data + 4);
    assert.equal(maximal & Access.FILE_WRITE_DATA, Access.FILE_WRITE_DATA);
    assert.equal(maximal & Access.DELETE, 0, 'no DELETE in MxAc');
    assert.equal(await status(as(c, 'q\\w', Access.DELETE)), NtStatus.ACCESS_DENIED);
    await srv.close();
  });

  it('a directory the caller may not read: no FILE_LIST_DIRECTORY at CREATE, no QUERY_DIRECTORY without it', async () => {
    const { srv, c } = await setup();
    const bob = bobOn(srv);
    // Bob's directory others may pass through (0711) but not list, with a file in it they may read.
    const p = (await as(bob, 'p', Access.GENERIC_ALL, CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE)).open;
    await files.close(bob, (await as(bob, 'p\\secret-name', Access.GENERIC_ALL, CreateDisposition.CREATE)).open, 0, new SmbWriter());
    await srv.fs.setattr(p.handle, bob.id, { mode: 0o711 });
    const list = Access.FILE_READ_DATA | Access.SYNCHRONIZE; // FILE_LIST_DIRECTORY, as Windows and macOS open to list or watch
    assert.equal(await status(as(c, 'p', list, CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE)), NtStatus.ACCESS_DENIED);
    assert.equal(
      await status(as(c, 'p', Access.GENERIC_READ, CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE)),
      NtStatus.ACCESS_DENIED,
    );
    // Stat and traverse stay open to Alice, and so does the file she may read.
    const attrs = (
      await as(c, 'p', Access.FILE_READ_ATTRIBUTES | Access.FILE_EXECUTE, CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE)
    ).open;
    assert.equal(await status(as(c, 'p\\secret-name', Access.GENERIC_READ)), NtStatus.SUCCESS);
    assert.equal(await status(firstName(c, attrs)), NtStatus.ACCESS_DENIED, 'an open without FILE_LIST_DIRECTORY lists nothing');
    // Bob lists his own directory.
    const own = (await as(bob, 'p', list, CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE)).open;
    assert.deepEqual(names(await firstName(bob, own)), ['.']);
    await srv.close();
  });

  it('QUERY_DIRECTORY gives names only to a caller who may list a directory but not search it, as NFS READDIRPLUS', async () => {
    const { srv, c } = await setup();
    const bob = bobOn(srv);
    // Alice's directory, which others may list (r) but not search (no x): 0744. In it a file with
    // data and an EA, and a directory.
    const d = (await as(c, 'listable-only', Access.GENERIC_ALL, CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE)).open;
    const eas = encodeFullEaList([{ flags: 0, name: Buffer.from('Color'), value: Buffer.from('red') }]);
    const f = (
      await create(
        c,
        createRequest('listable-only\\secret', { createDisposition: CreateDisposition.CREATE, contexts: [{ name: 'ExtA', data: eas }] }),
      )
    ).open;
    await files.write(c, f, { offset: 0, fileId: f.fileId, flags: 0, data: Buffer.from('0123456789') });
    await files.close(c, f, 0, new SmbWriter());
    const sub = (await as(c, 'listable-only\\sub', Access.GENERIC_ALL, CreateDisposition.CREATE, CreateOptions.DIRECTORY_FILE)).open;
    await files.close(c, sub, 0, new SmbWriter());
    await srv.fs.setattr(d.handle, alice, { mode: 0o744 });
    await files.close(c, d, 0, new SmbWriter());
    /** The directory's entries as `ctx` lists them (FileIdBothDirectoryInformation), by name. */
    const list = async (ctx: files.FileContext, infoClass: number = FileInfoClass.FileIdBothDirectoryInformation) => {
      const o = (await as(ctx, 'listable-only', Access.GENERIC_READ, CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE)).open;
      const buf = await files.queryDirectory(ctx, o, {
        infoClass,
        flags: QueryDirectoryFlags.RESTART_SCANS,
        fileIndex: 0,
        fileId: o.fileId,
        pattern: utf16('*'),
        outputBufferLength: 65536,
      });
      await files.close(ctx, o, 0, new SmbWriter());
      return buf;
    };
    const entries = async (ctx: files.FileContext) => {
      const buf = await list(ctx);
      const out = new Map<string, { writeTime: bigint; endOfFile: bigint; attributes: number; eaSize: number; fileId: bigint }>();
      for (let at = 0; ;) {
        const length = buf.readUInt32LE(at + 60);
        out.set(buf.subarray(at + 104, at + 104 + length).toString('utf16le'), {
          writeTime: buf.readBigUInt64LE(at + 24),
          endOfFile: buf.readBigUInt64LE(at + 40),
          attributes: buf.readUInt32LE(at + 56),
          eaSize: buf.readUInt32LE(at + 64),
          fileId: buf.readBigUInt64LE(at + 96),
        });
        const next = buf.readUInt32LE(at);
        if (next === 0) return out;
        at += next;
      }
    };
    // Alice, the owner (rwx), sees everything.
    const asAlice = await entries(c);
    const secret = asAlice.get('secret');
    assert.equal(secret?.endOfFile, 10n);
    assert.ok(secret.writeTime > 0n);
    assert.equal(secret.attributes & FileAttributes.DIRECTORY, 0);
    assert.ok(secret.eaSize > 0, 'EaSize of the file with an EA');
    assert.equal((asAlice.get('sub')?.attributes ?? 0) & FileAttributes.DIRECTORY, FileAttributes.DIRECTORY);
    // Bob lists the same names, with their file ids (as NFS READDIR gives fileids), but no size,
    // time, type or EaSize: what a lookup, which he may not make, would give.
    assert.equal(await status(as(bob, 'listable-only\\secret', Access.FILE_READ_ATTRIBUTES)), NtStatus.ACCESS_DENIED, 'no lookup');
    const asBob = await entries(bob);
    assert.deepEqual([...asBob.keys()].sort(), [...asAlice.keys()].sort());
    assert.deepEqual([...asBob.keys()].sort(), ['.', '..', 'secret', 'sub']);
    for (const name of ['secret', 'sub'])
      assert.deepEqual(
        asBob.get(name),
        { writeTime: 0n, endOfFile: 0n, attributes: FileAttributes.NORMAL, eaSize: 0, fileId: asAlice.get(name)?.fileId },
        name,
      );
    // "." and "..": he reached the directory through its parent, so he could look both up.
    for (const name of ['.', '..']) assert.deepEqual(asBob.get(name), asAlice.get(name), name);
    assert.deepEqual(names(await list(bob, FileInfoClass.FileNamesInformation)).sort(), ['.', '..', 'secret', 'sub']);
    // Root may search any directory.
    const root: files.FileContext = { ...fileContext(srv, { sessionId: 3 }), id: { uid: 0, gid: 0, gids: [] } };
    assert.deepEqual((await entries(root)).get('secret'), secret);
    await srv.close();
  });

  it("EAs follow the file's read and write permission: another user's 0600 file gives no FILE_READ_EA", async () => {
    const { srv, c } = await setup();
    const bob = bobOn(srv);
    const eas = encodeFullEaList([{ flags: 0, name: Buffer.from('Secret'), value: Buffer.from('hunter2') }]);
    const f = (
      await create(c, createRequest('secret.txt', { createDisposition: CreateDisposition.CREATE, contexts: [{ name: 'ExtA', data: eas }] }))
    ).open;
    await files.close(c, (await as(c, 'secret.txt:s', Access.GENERIC_ALL, CreateDisposition.CREATE)).open, 0, new SmbWriter());
    await srv.fs.setattr(f.handle, alice, { mode: 0o600 });
    const eaQuery = (ctx: files.FileContext, o: Open) =>
      files.queryInfo(ctx, o, {
        infoType: 1,
        infoClass: FileInfoClass.FileFullEaInformation,
        outputBufferLength: 4096,
        additionalInformation: 0,
        flags: 0,
        fileId: o.fileId,
        input: Buffer.alloc(0),
      });
    // Bob may read neither the data nor the EAs, of the file or through a stream of it.
    assert.equal(await status(as(bob, 'secret.txt', Access.FILE_READ_DATA)), NtStatus.ACCESS_DENIED);
    assert.equal(await status(as(bob, 'secret.txt', Access.FILE_READ_EA)), NtStatus.ACCESS_DENIED, 'FILE_READ_EA');
    assert.equal(await status(as(bob, 'secret.txt:s', Access.FILE_READ_EA)), NtStatus.ACCESS_DENIED, 'FILE_READ_EA of a stream');
    const max = (await as(bob, 'secret.txt', Access.MAXIMUM_ALLOWED)).open;
    assert.equal(max.grantedAccess & Access.FILE_READ_EA, 0, 'MAXIMUM_ALLOWED grants no FILE_READ_EA');
    assert.equal(await status(eaQuery(bob, max)), NtStatus.ACCESS_DENIED);
    // A stat open still works, as it does for any file Bob can see.
    const stat = (await as(bob, 'secret.txt', Access.FILE_READ_ATTRIBUTES | Access.READ_CONTROL | Access.SYNCHRONIZE)).open;
    const all = await files.queryInfo(bob, stat, {
      infoType: 1,
      infoClass: FileInfoClass.FileAllInformation,
      outputBufferLength: 4096,
      additionalInformation: 0,
      flags: 0,
      fileId: stat.fileId,
      input: Buffer.alloc(0),
    });
    assert.equal(all.status, NtStatus.SUCCESS);
    assert.equal(await status(eaQuery(bob, stat)), NtStatus.ACCESS_DENIED);
    // Alice, the owner, reads them; once the file is 0644 Bob does too, but may not write them.
    assert.equal(decodeFullEaList((await eaQuery(c, f)).output)[0]?.value.toString(), 'hunter2');
    await srv.fs.setattr(f.handle, alice, { mode: 0o644 });
    const r = (await as(bob, 'secret.txt', Access.FILE_READ_EA)).open;
    assert.equal(decodeFullEaList((await eaQuery(bob, r)).output)[0]?.value.toString(), 'hunter2');
    assert.equal(await status(as(bob, 'secret.txt', Access.FILE_WRITE_EA)), NtStatus.ACCESS_DENIED, 'FILE_WRITE_EA without write');
    await srv.close();
  });

  it('a grant lowered or a share made read-only since the open refuses EA, allocation and DACL changes; `none` every query', async () => {
    const { srv, c } = await setup();
    const level = new Map<number, ShareLevel>();
    srv.fs.setAccessPolicy((_share, id) => level.get(id.uid) ?? 'read-write');
    const share = srv.fs.shares()[0]!;
    const f = (await as(c, 'f', Access.GENERIC_ALL, CreateDisposition.CREATE)).open;
    const root = (await as(c, '', Access.GENERIC_READ, CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE)).open;
    const eas = (value: string) => encodeFullEaList([{ flags: 0, name: Buffer.from('Color'), value: Buffer.from(value) }]);
    const set = (infoType: number, infoClass: number, buffer: Buffer, additionalInformation = 0) =>
      status(files.setInfo(c, f, { infoType, infoClass, additionalInformation, fileId: f.fileId, buffer }));
    const eightK = Buffer.alloc(8);
    eightK.writeUInt32LE(8192, 0);
    const dacl = encodeSecurityDescriptor({
      control: 0,
      owner: null,
      group: null,
      dacl: [{ type: AceType.ACCESS_ALLOWED, flags: 0, mask: 0x001f01ff, sid: EVERYONE }],
    });
    const query = (o: Open, infoType: number, infoClass: number, additionalInformation = 0) =>
      status(
        files.queryInfo(c, o, {
          infoType,
          infoClass,
          outputBufferLength: 4096,
          additionalInformation,
          flags: 0,
          fileId: o.fileId,
          input: Buffer.alloc(0),
        }),
      );
    const listRoot = () => status(firstName(c, root));
    assert.equal(await set(1, FileInfoClass.FileFullEaInformation, eas('red')), NtStatus.SUCCESS, 'read-write: EAs');
    assert.equal(await set(1, FileInfoClass.FileAllocationInformation, eightK), NtStatus.SUCCESS, 'read-write: allocation');

    // Lowered to `read`: what WRITE refuses, SET_INFO refuses too, through the open made before.
    level.set(alice.uid, 'read');
    const write = status(files.write(c, f, { offset: 0, data: Buffer.from('x'), flags: 0, fileId: f.fileId }));
    assert.equal(await write, NtStatus.ACCESS_DENIED, 'read: WRITE');
    assert.equal(await set(1, FileInfoClass.FileFullEaInformation, eas('blue')), NtStatus.ACCESS_DENIED, 'read: EAs');
    assert.equal(await set(1, FileInfoClass.FileAllocationInformation, Buffer.alloc(8, 0x10)), NtStatus.ACCESS_DENIED, 'read: allocation');
    assert.equal(await set(3, 0, dacl, SecurityInformation.DACL), NtStatus.ACCESS_DENIED, 'read: the same DACL');
    assert.equal(await set(1, FileInfoClass.FileDispositionInformation, Buffer.from([1])), NtStatus.ACCESS_DENIED, 'read: delete');
    assert.equal(await set(1, FileInfoClass.FilePositionInformation, Buffer.alloc(8)), NtStatus.SUCCESS, "read: the open's position");
    assert.equal(await query(f, 1, FileInfoClass.FileFullEaInformation), NtStatus.SUCCESS, 'read: EAs may be read');
    // A new open of her own file is judged by the grant as it is now, not as at TREE_CONNECT.
    assert.equal(await status(as(c, 'f', Access.WRITE_DAC)), NtStatus.ACCESS_DENIED, 'read: WRITE_DAC at CREATE');
    assert.equal(await status(as(c, 'f', Access.FILE_WRITE_ATTRIBUTES)), NtStatus.ACCESS_DENIED, 'read: FILE_WRITE_ATTRIBUTES at CREATE');
    const maximal = (await as(c, 'f', Access.MAXIMUM_ALLOWED)).open;
    assert.equal(maximal.grantedAccess & WRITE_RIGHTS, 0, 'read: MAXIMUM_ALLOWED grants no change');

    // `none`: the open answers nothing more about the file or the share.
    level.set(alice.uid, 'none');
    assert.equal(await query(f, 1, FileInfoClass.FileFullEaInformation), NtStatus.ACCESS_DENIED, 'none: EAs');
    assert.equal(await query(f, 1, FileInfoClass.FileAllInformation), NtStatus.ACCESS_DENIED, 'none: FileAllInformation');
    assert.equal(await query(f, 3, 0, SecurityInformation.DACL), NtStatus.ACCESS_DENIED, 'none: the descriptor');
    assert.equal(await listRoot(), NtStatus.ACCESS_DENIED, 'none: QUERY_DIRECTORY');
    assert.equal(
      await status(as(c, '', Access.FILE_READ_ATTRIBUTES, CreateDisposition.OPEN, CreateOptions.DIRECTORY_FILE)),
      NtStatus.ACCESS_DENIED,
    );
    assert.equal(await set(1, FileInfoClass.FilePositionInformation, Buffer.alloc(8)), NtStatus.ACCESS_DENIED, 'none: position');

    // Read-write again, but the share made read-only: refused as the vfs refuses a WRITE to it.
    level.delete(alice.uid);
    srv.fs.updateShare(share.name, { ...share, readOnly: true });
    assert.equal(await set(1, FileInfoClass.FileFullEaInformation, eas('green')), NtStatus.MEDIA_WRITE_PROTECTED, 'read-only share: EAs');
    assert.equal(
      await set(1, FileInfoClass.FileAllocationInformation, Buffer.alloc(8, 0x10)),
      NtStatus.MEDIA_WRITE_PROTECTED,
      'read-only share: allocation',
    );
    assert.equal(await set(3, 0, dacl, SecurityInformation.DACL), NtStatus.MEDIA_WRITE_PROTECTED, 'read-only share: DACL');
    assert.equal(await listRoot(), NtStatus.SUCCESS, 'read-only share: listing');
    srv.fs.updateShare(share.name, { ...share, readOnly: false });
    // Nothing changed meanwhile: the EA and the allocation set while the grant allowed them.
    const ea = await files.queryInfo(c, f, {
      infoType: 1,
      infoClass: FileInfoClass.FileFullEaInformation,
      outputBufferLength: 4096,
      additionalInformation: 0,
      flags: 1,
      fileId: f.fileId,
      input: Buffer.alloc(0),
    });
    assert.equal(decodeFullEaList(ea.output)[0]?.value.toString(), 'red');
    assert.equal(await srv.meta.getMeta(f.inodeId, InodeMetaKind.SECURITY).then((r) => r.length), 0, 'no DACL stored');
    await srv.close();
  });

  it('a read-only tree refuses changes at CREATE', async () => {
    const { srv, open } = await setup(true);
    assert.equal(await status(open('new', CreateDisposition.CREATE)), NtStatus.ACCESS_DENIED);
    assert.equal(await status(open('', CreateDisposition.OPEN, 0, Access.GENERIC_WRITE)), NtStatus.ACCESS_DENIED);
    await srv.close();
  });
});
