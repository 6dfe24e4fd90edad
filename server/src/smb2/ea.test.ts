// Extended attributes (ea.ts): the FILE_FULL_EA_INFORMATION / FILE_GET_EA_INFORMATION codecs, the
// name rules, and the query rules of MS-SMB2 3.3.5.20.1 (list, index, restart, single entry).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { metaRecordSize } from '../meta/store.js';
import {
  decodeFullEaList,
  decodeGetEaList,
  EA_BYTES_MAX,
  eaChanges,
  EaQueryFlags,
  eaKey,
  eaSizeOf,
  encodeFullEaList,
  queryEas,
  validEaName,
  type FullEa,
} from './ea.js';
import { NtStatus, SmbStatusError } from './status.js';
import { memoryServer } from '../testing/memory-server.js';
import { FileInfoClass } from './constants.js';
import * as files from './files.js';
import type { CreateRequest } from './messages.js';
import type { Open } from './state.js';
import { close, create, createRequest, fileContext, status } from './testing.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const rec = (name: string, value: string, flags = 0) => ({ flags, name: b(name), value: b(value) });
const statusOf = (fn: () => unknown): number => {
  try {
    fn();
  } catch (e) {
    if (e instanceof SmbStatusError) return e.status;
    throw e;
  }
  return NtStatus.SUCCESS;
};

/** A FILE_GET_EA_INFORMATION list of `names`. */
function getList(names: string[]): Buffer {
  const parts = names.map((n, i) => {
    const len = 5 + n.length + 1;
    const padded = i === names.length - 1 ? len : (len + 3) & ~3;
    const p = Buffer.alloc(padded);
    p.writeUInt32LE(i === names.length - 1 ? 0 : padded, 0);
    p[4] = n.length;
    b(n).copy(p, 5);
    return p;
  });
  return Buffer.concat(parts);
}

const eaArb = fc.record({
  flags: fc.constantFrom(0, 0x80),
  name: fc.uint8Array({ minLength: 1, maxLength: 40 }).map((a) => Buffer.from(a)),
  value: fc.uint8Array({ maxLength: 60 }).map((a) => Buffer.from(a)),
});

describe('FILE_FULL_EA_INFORMATION codec', () => {
  it('round-trips any list; entries 4-byte aligned, padding zero, the last NextEntryOffset 0', () => {
    fc.assert(
      fc.property(fc.array(eaArb, { minLength: 1, maxLength: 8 }), (eas: FullEa[]) => {
        const enc = encodeFullEaList(eas);
        // fc.record makes prototype-less objects: compare plain copies.
        assert.deepEqual(
          decodeFullEaList(enc),
          eas.map((e) => ({ ...e })),
        );
        let at = 0;
        for (let i = 0; i < eas.length; i++) {
          const next = enc.readUInt32LE(at);
          if (i === eas.length - 1) assert.equal(next, 0);
          else {
            assert.equal(next, metaRecordSize(eas[i]!.name.length, eas[i]!.value.length));
            // Padding after the value is zero.
            for (let k = at + 9 + eas[i]!.name.length + eas[i]!.value.length; k < at + next; k++) assert.equal(enc[k], 0);
            at += next;
          }
        }
      }),
    );
  });

  it('decodes arbitrary bytes or refuses them with EA_LIST_INCONSISTENT, never anything else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (a) => {
        for (const decode of [decodeFullEaList, decodeGetEaList]) {
          try {
            decode(Buffer.from(a));
          } catch (e) {
            assert.ok(e instanceof SmbStatusError, String(e));
            assert.equal(e.status, NtStatus.EA_LIST_INCONSISTENT);
          }
        }
      }),
    );
  });

  it('refuses entries past the buffer, names without their NUL, offsets that go back or are unaligned', () => {
    const one = encodeFullEaList([{ flags: 0, name: b('A'), value: b('xy') }]);
    assert.equal(
      statusOf(() => decodeFullEaList(one.subarray(0, one.length - 1))),
      NtStatus.EA_LIST_INCONSISTENT,
    );
    const noNul = Buffer.from(one);
    noNul[9] = 0x41;
    assert.equal(
      statusOf(() => decodeFullEaList(noNul)),
      NtStatus.EA_LIST_INCONSISTENT,
    );
    const two = encodeFullEaList([rec('A', 'x'), rec('B', 'y')]);
    for (const next of [4, 6]) {
      const bad = Buffer.from(two);
      bad.writeUInt32LE(next, 0);
      assert.equal(
        statusOf(() => decodeFullEaList(bad)),
        NtStatus.EA_LIST_INCONSISTENT,
        `NextEntryOffset ${next}`,
      );
    }
  });

  it('decodes a FILE_GET_EA_INFORMATION list', () => {
    assert.deepEqual(decodeGetEaList(getList(['EAONE', 'x'])), [b('EAONE'), b('x')]);
  });
});

describe('EA names and changes', () => {
  it('names: 1-255 ASCII bytes without the reserved characters', () => {
    assert.ok(validEaName(b('EAONE')));
    assert.ok(validEaName(b('a.b-c_d e')));
    assert.ok(validEaName(Buffer.alloc(255, 0x41)));
    for (const bad of ['', 'a*b', 'a?b', 'a:b', 'a\\b', 'a/b', 'a|b', 'a"b', 'a<b', 'a[b', 'a+b', 'a,b', 'a;b', 'a=b', '\x01'])
      assert.equal(validEaName(b(bad)), false, JSON.stringify(bad));
    assert.equal(validEaName(Buffer.from([0xc3, 0xa9])), false, 'not ASCII');
  });

  it('upper-cases names, turns an empty value into a removal, refuses bad names and lists past 64 KiB', () => {
    assert.deepEqual(eaKey(b('SecondEa.x')), b('SECONDEA.X'));
    const ch = eaChanges([
      { flags: 0x80, name: b('one'), value: b('1') },
      { flags: 0, name: b('Two'), value: Buffer.alloc(0) },
    ]);
    assert.deepEqual(ch, [
      { name: b('ONE'), value: b('1'), flags: 0x80 },
      { name: b('TWO'), value: null, flags: 0 },
    ]);
    assert.equal(
      statusOf(() => eaChanges([{ flags: 0, name: b('bad*'), value: b('1') }])),
      NtStatus.INVALID_EA_NAME,
    );
    const big = Array.from({ length: 2 }, (_, i) => ({ flags: 0, name: b(`E${i}`), value: Buffer.alloc(EA_BYTES_MAX / 2) }));
    assert.equal(
      statusOf(() => eaChanges(big)),
      NtStatus.EA_TOO_LARGE,
    );
  });
});

describe('FileFullEaInformation query rules', () => {
  const recs = [rec('A', '1'), rec('BB', '22'), rec('CCC', '333')];
  const q = (flags: number, opts: { input?: Buffer; index?: number; out?: number } = {}) => ({
    flags,
    input: opts.input ?? Buffer.alloc(0),
    additionalInformation: opts.index ?? 0,
    outputBufferLength: opts.out ?? 65536,
  });
  const names = (out: Buffer): string[] => decodeFullEaList(out).map((e) => e.name.toString('latin1'));

  it('restart, then single entries go on from the scan position, then NO_MORE_EAS', () => {
    const all = queryEas(recs, q(EaQueryFlags.RESTART_SCAN), 2);
    assert.deepEqual([all.status, names(all.output), all.nextIndex], [NtStatus.SUCCESS, ['A', 'BB', 'CCC'], 3]);
    assert.equal(eaSizeOf(recs), 12 + 16 + 16, 'EaSize counts every entry padded to 4');
    let at = 0;
    const seen: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = queryEas(
        recs,
        q(i === 0 ? EaQueryFlags.RESTART_SCAN | EaQueryFlags.RETURN_SINGLE_ENTRY : EaQueryFlags.RETURN_SINGLE_ENTRY),
        at,
      );
      seen.push(...names(r.output));
      at = r.nextIndex;
    }
    assert.deepEqual(seen, ['A', 'BB', 'CCC']);
    assert.equal(
      statusOf(() => queryEas(recs, q(0), at)),
      NtStatus.NO_MORE_EAS,
    );
  });

  it('an index (1-based) starts there; index 0 is NONEXISTENT_EA_ENTRY', () => {
    assert.deepEqual(names(queryEas(recs, q(EaQueryFlags.INDEX_SPECIFIED, { index: 2 }), 0).output), ['BB', 'CCC']);
    assert.equal(
      statusOf(() => queryEas(recs, q(EaQueryFlags.INDEX_SPECIFIED, { index: 0 }), 0)),
      NtStatus.NONEXISTENT_EA_ENTRY,
    );
  });

  it('a name list returns those EAs in its order, any case, missing ones empty; the scan position stays', () => {
    const r = queryEas(recs, q(0, { input: getList(['ccc', 'NOPE', 'A']) }), 1);
    assert.deepEqual(
      decodeFullEaList(r.output).map((e) => [e.name.toString(), e.value.toString()]),
      [
        ['ccc', '333'],
        ['NOPE', ''],
        ['A', '1'],
      ],
    );
    assert.equal(r.nextIndex, 1);
    assert.equal(
      statusOf(() => queryEas(recs, q(0, { input: getList(['a*']) }), 0)),
      NtStatus.INVALID_EA_NAME,
    );
  });

  it('no EAs: NO_EAS_ON_FILE; a buffer too small for one entry: BUFFER_TOO_SMALL; for some: BUFFER_OVERFLOW with whole entries', () => {
    assert.equal(
      statusOf(() => queryEas([], q(EaQueryFlags.RESTART_SCAN), 0)),
      NtStatus.NO_EAS_ON_FILE,
    );
    assert.equal(
      statusOf(() => queryEas(recs, q(EaQueryFlags.RESTART_SCAN, { out: 9 }), 0)),
      NtStatus.BUFFER_TOO_SMALL,
    );
    const part = queryEas(recs, q(EaQueryFlags.RESTART_SCAN, { out: 24 }), 0);
    assert.deepEqual([part.status, names(part.output), part.nextIndex], [NtStatus.BUFFER_OVERFLOW, ['A'], 1]);
  });
});

describe('EA flags (FILE_NEED_EA) over CREATE, SET_INFO and QUERY_INFO', () => {
  it('keeps FILE_NEED_EA, returns it in FileFullEaInformation, and refuses FILE_NO_EA_KNOWLEDGE opens while an EA has it', async () => {
    const srv = await memoryServer();
    const c = fileContext(srv);
    const NO_EA_KNOWLEDGE = 0x200;
    const query = async (o: Open, input = Buffer.alloc(0)): Promise<Array<[string, number, string]>> => {
      const r = await files.queryInfo(c, o, {
        infoType: 1,
        infoClass: FileInfoClass.FileFullEaInformation,
        outputBufferLength: 65536,
        additionalInformation: 0,
        flags: EaQueryFlags.RESTART_SCAN,
        fileId: o.fileId,
        input,
      });
      return decodeFullEaList(r.output).map((e) => [e.name.toString('latin1'), e.flags, e.value.toString('latin1')]);
    };
    const setEas = (o: Open, eas: FullEa[]) =>
      files.setInfo(c, o, {
        infoType: 1,
        infoClass: FileInfoClass.FileFullEaInformation,
        additionalInformation: 0,
        fileId: o.fileId,
        buffer: encodeFullEaList(eas),
      });
    const openFile = (name: string, options = 0, contexts: CreateRequest['contexts'] = []) =>
      create(c, createRequest(name, { createOptions: options, contexts }));

    // ExtA at CREATE: the flag is kept.
    const extA = encodeFullEaList([{ flags: 0x80, name: b('Need'), value: b('v') }]);
    const f = (await openFile('f', 0, [{ name: 'ExtA', data: extA }])).open;
    await setEas(f, [{ flags: 0, name: b('Plain'), value: b('p') }]);
    assert.deepEqual(await query(f), [
      ['NEED', 0x80, 'v'],
      ['PLAIN', 0, 'p'],
    ]);
    // By name, too.
    const list = Buffer.alloc(12);
    list[4] = 4;
    b('need').copy(list, 5);
    assert.deepEqual(await query(f, list), [['need', 0x80, 'v']]);
    await close(c, f);

    assert.equal(await status(openFile('f', NO_EA_KNOWLEDGE)), NtStatus.ACCESS_DENIED);
    // A named stream is not the file's data stream (MS-FSA 2.1.5.1.2): it opens.
    await close(c, (await openFile('f:s', NO_EA_KNOWLEDGE)).open);
    const g = (await openFile('f')).open;
    // The same EA set again without the flag clears it.
    await setEas(g, [{ flags: 0, name: b('NEED'), value: b('w') }]);
    assert.deepEqual(await query(g), [
      ['NEED', 0, 'w'],
      ['PLAIN', 0, 'p'],
    ]);
    await close(c, (await openFile('f', NO_EA_KNOWLEDGE)).open);
    // Flagged, then removed: nothing needs EA knowledge any more.
    await setEas(g, [{ flags: 0x80, name: b('Other'), value: b('o') }]);
    assert.equal(await status(openFile('f', NO_EA_KNOWLEDGE)), NtStatus.ACCESS_DENIED);
    await setEas(g, [{ flags: 0x80, name: b('Other'), value: Buffer.alloc(0) }]);
    await close(c, (await openFile('f', NO_EA_KNOWLEDGE)).open);
    // A directory's EAs count too.
    const d = (await create(c, createRequest('d', { createOptions: 1, createDisposition: 2 }))).open;
    await setEas(d, [{ flags: 0x80, name: b('x'), value: b('1') }]);
    assert.equal(
      await status(create(c, createRequest('d', { createOptions: 1 | NO_EA_KNOWLEDGE, createDisposition: 1 }))),
      NtStatus.ACCESS_DENIED,
    );
    await srv.close();
  });
});
