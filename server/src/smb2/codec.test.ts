import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DecodeError } from '../wire/errors.js';
import { FrameError } from '../wire/errors.js';
import { decodeHeader, HEADER_SIZE, readFiletime, SmbReader, SmbWriter, utf16, writeFiletime, writeHeader } from './codec.js';
import { Command, HeaderFlags } from './constants.js';
import { CreditWindow } from './credits.js';
import { DirectTcpFramer, directTcpHeader } from './framing.js';
import { matchPattern, MAX_PATTERN_LENGTH } from './fscc.js';
import {
  decodeClose,
  decodeCreate,
  decodeCreateContexts,
  decodeIoctl,
  decodeNegotiate,
  decodeQueryDirectory,
  decodeQueryInfo,
  decodeRead,
  decodeSessionSetup,
  decodeSetInfo,
  decodeTreeConnect,
  decodeWrite,
  encodeCreateContexts,
  writeNegotiateResponse,
} from './messages.js';
import { fileIdOf, openIdOf } from './state.js';

/** A request message: a sync header, then `body` (offsets in it count from the header). */
function message(command: number, body: Buffer): Buffer {
  const w = new SmbWriter(HEADER_SIZE + body.length);
  writeHeader(w, {
    creditCharge: 1,
    status: 0,
    command,
    creditRequest: 1,
    flags: 0,
    nextCommand: 0,
    messageId: 7,
    treeId: 3,
    sessionId: 0x12345678,
  });
  return Buffer.concat([w.finish(), body]);
}
const reader = (msg: Buffer): SmbReader => new SmbReader(msg, HEADER_SIZE);

describe('SMB2 header (MS-SMB2 2.2.1.2)', () => {
  it('round-trips every field, 64-bit ids as Numbers', () => {
    const w = new SmbWriter();
    const h = {
      creditCharge: 16,
      status: 0xc0000022,
      command: Command.READ,
      creditRequest: 256,
      flags: HeaderFlags.SIGNED | HeaderFlags.RELATED_OPERATIONS,
      nextCommand: 128,
      messageId: 2 ** 40 + 5,
      treeId: 0xfffffffe,
      sessionId: 2 ** 50 + 1,
    };
    writeHeader(w, h);
    const b = w.finish();
    assert.equal(b.length, 64);
    const d = decodeHeader(b);
    assert.deepEqual({ ...d, signature: undefined, asyncId: undefined }, { ...h, signature: undefined, asyncId: undefined });
    assert.equal(b.subarray(0, 4).toString('latin1'), '\xfeSMB');
  });

  it('refuses a short buffer, a wrong magic and a wrong StructureSize with DecodeError', () => {
    assert.throws(() => decodeHeader(Buffer.alloc(63)), DecodeError);
    const w = new SmbWriter();
    writeHeader(w, {
      creditCharge: 0,
      status: 0,
      command: 0,
      creditRequest: 0,
      flags: 0,
      nextCommand: 0,
      messageId: 0,
      treeId: 0,
      sessionId: 0,
    });
    const b = Buffer.from(w.finish());
    b[0] = 0xff;
    assert.throws(() => decodeHeader(b), DecodeError);
    b[0] = 0xfe;
    b.writeUInt16LE(65, 4);
    assert.throws(() => decodeHeader(b), DecodeError);
  });

  it('decodes any bytes or throws DecodeError, nothing else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100 }), (bytes) => {
        const b = Buffer.from(bytes);
        if (b.length >= 6) b.writeUInt32LE(0x424d53fe, 0);
        try {
          decodeHeader(b);
        } catch (e) {
          assert.ok(e instanceof DecodeError, String(e));
        }
      }),
    );
  });
});

describe('FILETIME (MS-DTYP 2.3.3)', () => {
  it('round-trips times with 100 ns precision', () => {
    for (const t of [
      { sec: 0, nsec: 0 },
      { sec: 1_700_000_000, nsec: 123_456_700 },
      { sec: 4_000_000_000, nsec: 999_999_900 },
    ]) {
      const b = Buffer.alloc(8);
      writeFiletime(b, 0, t);
      assert.deepEqual(readFiletime(b, 0), t);
    }
  });

  it('1970-01-01 is 116444736000000000 and 0 / all ones mean "no change"', () => {
    const b = Buffer.alloc(8);
    writeFiletime(b, 0, { sec: 0, nsec: 0 });
    assert.equal(b.readBigUInt64LE(0), 116444736000000000n);
    assert.equal(readFiletime(Buffer.alloc(8), 0), null);
    assert.equal(readFiletime(Buffer.alloc(8, 0xff), 0), null);
  });
});

/** Builds the request bodies the decoders read, field by field from the spec. */
const build = {
  negotiate(dialects: number[]): Buffer {
    const w = new SmbWriter();
    w.u16(36).u16(dialects.length).u16(1).u16(0).u32(0x7f).bytes(Buffer.alloc(16, 0xab)).zeros(8);
    for (const d of dialects) w.u16(d);
    return w.finish();
  },
  create(name: string, contexts: Buffer): Buffer {
    const n = utf16(name);
    const w = new SmbWriter();
    const nameOff = HEADER_SIZE + 56;
    const ctxOff = nameOff + Math.ceil(n.length / 8) * 8;
    w.u16(57).u8(0).u8(0).u32(2).zeros(16).u32(0x80000000).u32(0x80).u32(7).u32(3).u32(0x40).u16(nameOff).u16(n.length);
    w.u32(contexts.length ? ctxOff : 0)
      .u32(contexts.length)
      .bytes(n)
      .zeros(ctxOff - nameOff - n.length)
      .bytes(contexts);
    return w.finish();
  },
  write(offset: number, data: Buffer): Buffer {
    const w = new SmbWriter();
    w.u16(49)
      .u16(HEADER_SIZE + 48)
      .u32(data.length)
      .u64(offset)
      .bytes(fileIdOf(9))
      .u32(0)
      .u32(0)
      .u16(0)
      .u16(0)
      .u32(1)
      .bytes(data);
    return w.finish();
  },
  read(length: number, offset: number): Buffer {
    const w = new SmbWriter();
    w.u16(49).u8(0).u8(0).u32(length).u64(offset).bytes(fileIdOf(9)).u32(1).u32(0).u32(0).u16(0).u16(0).u8(0);
    return w.finish();
  },
};

describe('command codecs (MS-SMB2 2.2.3 - 2.2.39)', () => {
  it('NEGOTIATE request: dialects and client fields', () => {
    const r = decodeNegotiate(reader(message(Command.NEGOTIATE, build.negotiate([0x0202, 0x0210, 0x0300]))));
    assert.deepEqual(r.dialects, [0x0202, 0x0210, 0x0300]);
    assert.equal(r.securityMode, 1);
    assert.equal(r.capabilities, 0x7f);
    assert.deepEqual(r.clientGuid, Buffer.alloc(16, 0xab));
    assert.throws(() => decodeNegotiate(reader(message(Command.NEGOTIATE, build.negotiate([])))), DecodeError);
  });

  it('NEGOTIATE response: StructureSize 65 and the security buffer at offset 128', () => {
    const w = new SmbWriter();
    const blob = Buffer.from('spnego-blob');
    writeNegotiateResponse(w, {
      securityMode: 1,
      dialect: 0x0210,
      serverGuid: Buffer.alloc(16, 1),
      capabilities: 4,
      maxTransactSize: 1 << 20,
      maxReadSize: 1 << 20,
      maxWriteSize: 1 << 20,
      systemTime: { sec: 1, nsec: 0 },
      securityBuffer: blob,
    });
    const b = w.finish();
    assert.equal(b.readUInt16LE(0), 65);
    assert.equal(b.readUInt16LE(4), 0x0210);
    assert.equal(b.readUInt32LE(28), 1 << 20);
    assert.equal(b.readUInt16LE(56), 128);
    assert.equal(b.readUInt16LE(58), blob.length);
    assert.deepEqual(b.subarray(64), blob);
  });

  it('CREATE request: name, disposition, options and create contexts', () => {
    const ctx = encodeCreateContexts([
      { name: 'QFid', data: Buffer.alloc(0) },
      { name: 'MxAc', data: Buffer.from([1, 2, 3]) },
    ]);
    const frame = message(Command.CREATE, build.create('dir\\file.txt', ctx));
    const r = decodeCreate(reader(frame));
    // A CREATE waiting on a break outlives its frame, which a pool may hand to another request.
    frame.fill(0xee);
    assert.equal(r.name.toString('utf16le'), 'dir\\file.txt');
    assert.equal(r.createDisposition, 3);
    assert.equal(r.createOptions, 0x40);
    assert.equal(r.desiredAccess, 0x80000000);
    assert.deepEqual(
      r.contexts.map((c) => [c.name, [...c.data]]),
      [
        ['QFid', []],
        ['MxAc', [1, 2, 3]],
      ],
    );
  });

  it('create contexts: encode -> decode round trip, 8-byte aligned chain', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom('QFid', 'MxAc', 'DHnQ', 'RqLs'), fc.uint8Array({ maxLength: 40 })), {
          minLength: 1,
          maxLength: 5,
        }),
        (list) => {
          const enc = encodeCreateContexts(list.map(([name, d]) => ({ name, data: Buffer.from(d) })));
          const dec = decodeCreateContexts(enc);
          assert.deepEqual(
            dec.map((c) => [c.name, [...c.data]]),
            list.map(([n, d]) => [n, [...d]]),
          );
        },
      ),
    );
  });

  it('WRITE request: offset, data view and the all-ones append offset', () => {
    const data = Buffer.from('hello');
    const r = decodeWrite(reader(message(Command.WRITE, build.write(2 ** 40, data))));
    assert.equal(r.offset, 2 ** 40);
    assert.deepEqual(r.data, data);
    assert.equal(openIdOf(r.fileId), 9);
    const all = Buffer.from(build.write(0, data));
    all.fill(0xff, 8, 16);
    assert.equal(decodeWrite(reader(message(Command.WRITE, all))).offset, -1);
  });

  it('WRITE whose data lies outside the message is a DecodeError', () => {
    const b = Buffer.from(build.write(0, Buffer.from('hello')));
    b.writeUInt32LE(1000, 4);
    assert.throws(() => decodeWrite(reader(message(Command.WRITE, b))), DecodeError);
  });

  it('READ request: length, offset, FileId', () => {
    const r = decodeRead(reader(message(Command.READ, build.read(65536, 4096))));
    assert.deepEqual([r.length, r.offset, openIdOf(r.fileId), r.minimumCount], [65536, 4096, 9, 1]);
  });

  it('FileIds name opens: Persistent and Volatile must agree', () => {
    assert.equal(openIdOf(fileIdOf(2 ** 33 + 7)), 2 ** 33 + 7);
    const bad = fileIdOf(5);
    bad[8] = 6;
    assert.equal(openIdOf(bad), -1);
  });

  const decoders: [string, number, (r: SmbReader) => unknown][] = [
    ['NEGOTIATE', Command.NEGOTIATE, decodeNegotiate],
    ['SESSION_SETUP', Command.SESSION_SETUP, decodeSessionSetup],
    ['TREE_CONNECT', Command.TREE_CONNECT, decodeTreeConnect],
    ['CREATE', Command.CREATE, decodeCreate],
    ['CLOSE', Command.CLOSE, decodeClose],
    ['READ', Command.READ, decodeRead],
    ['WRITE', Command.WRITE, decodeWrite],
    ['IOCTL', Command.IOCTL, decodeIoctl],
    ['QUERY_DIRECTORY', Command.QUERY_DIRECTORY, decodeQueryDirectory],
    ['QUERY_INFO', Command.QUERY_INFO, decodeQueryInfo],
    ['SET_INFO', Command.SET_INFO, decodeSetInfo],
  ];
  for (const [name, cmd, decode] of decoders) {
    it(`${name}: arbitrary bodies decode or throw DecodeError, nothing else`, () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 200 }), fc.boolean(), (bytes, sized) => {
          const body = Buffer.from(bytes);
          // Half the cases carry the right StructureSize so the decoder goes past it.
          const expected = { 0: 36, 1: 25, 3: 9, 5: 57, 6: 24, 8: 49, 9: 49, 11: 57, 14: 33, 16: 41, 17: 33 }[cmd] ?? 4;
          if (sized && body.length >= 2) body.writeUInt16LE(expected, 0);
          try {
            decode(reader(message(cmd, body)));
          } catch (e) {
            assert.ok(e instanceof DecodeError, `${name}: ${String(e)}`);
          }
        }),
        { numRuns: 500 },
      );
    });
  }
});

describe('Direct TCP framing (MS-SMB2 2.1)', () => {
  it('reassembles frames split at every offset', () => {
    const a = Buffer.from('first-frame-bytes');
    const b = Buffer.alloc(300, 7);
    const stream = Buffer.concat([directTcpHeader(a.length), a, directTcpHeader(b.length), b]);
    for (let cut = 0; cut <= stream.length; cut++) {
      const got: Buffer[] = [];
      const f = new DirectTcpFramer(1024, (x) => got.push(x));
      f.push(stream.subarray(0, cut));
      f.push(stream.subarray(cut));
      assert.deepEqual(got, [a, b]);
    }
  });

  it('refuses a frame over the cap from its header alone, before buffering', () => {
    const f = new DirectTcpFramer(1024, () => assert.fail('no frame expected'));
    assert.throws(() => f.push(directTcpHeader(1025)), FrameError);
    assert.equal(f.buffered, 0);
  });

  it('refuses NetBIOS session messages other than a plain frame', () => {
    const f = new DirectTcpFramer(1024, () => undefined);
    assert.throws(() => f.push(Buffer.from([0x81, 0, 0, 4])), FrameError);
  });
});

describe('credit window (MS-SMB2 3.3.1.1)', () => {
  it('accepts each granted MessageId once, in any order', () => {
    const c = new CreditWindow(100);
    assert.equal(c.consume(0, 1), true);
    assert.equal(c.grant(10), 10);
    assert.equal(c.consume(5, 1), true);
    assert.equal(c.consume(5, 1), false);
    assert.equal(c.consume(1, 4), true);
    assert.equal(c.consume(6, 5), true);
    assert.equal(c.consume(11, 1), false);
  });

  it('grants within the window and never leaves the client without a credit', () => {
    const c = new CreditWindow(8);
    assert.equal(c.grant(100), 7);
    assert.equal(c.outstanding, 8);
    for (let i = 0; i < 8; i++) assert.equal(c.consume(i, 1), true);
    assert.equal(c.grant(0), 1);
    assert.equal(c.outstanding, 1);
  });

  it('a multi-credit charge consumes a run of ids', () => {
    const c = new CreditWindow(64);
    c.grant(31);
    assert.equal(c.consume(0, 16), true);
    assert.equal(c.consume(10, 1), false);
    assert.equal(c.consume(16, 17), false);
    assert.equal(c.consume(16, 16), true);
  });
});

describe('wildcards (MS-FSA 2.1.4.4)', () => {
  it('* and ? match case-insensitively', () => {
    assert.ok(matchPattern('*', 'anything'));
    assert.ok(matchPattern('*.TXT', 'notes.txt'));
    assert.ok(!matchPattern('*.txt', 'notes.txt.bak'));
    assert.ok(matchPattern('n?tes.*', 'Notes.md'));
    assert.ok(!matchPattern('n?tes', 'ntes'));
    assert.ok(matchPattern('exact', 'EXACT'));
    assert.ok(!matchPattern('exact', 'exact2'));
  });

  it('the DOS wildcards < > " keep their meaning', () => {
    const table: [string, string, boolean][] = [
      ['<.txt', 'a.b.txt', true],
      ['<', 'a.b', false],
      ['<.b', 'a.b', true],
      ['<b', 'a.b', false],
      ['a>>', 'a', true],
      ['a>>', 'abc', true],
      ['a>>', 'abcd', false],
      ['a>.txt', 'ab.txt', true],
      ['a>.txt', 'a.txt', true],
      ['a>', 'a.', false],
      ['a"txt', 'a.txt', true],
      ['a"', 'a', true],
      ['a"', 'ab', false],
      ['*<*<b', 'x.y.b', true],
    ];
    for (const [p, n, want] of table) assert.equal(matchPattern(p, n), want, `${p} vs ${n}`);
  });

  it('matches as the former memoised recursion did (random small patterns and names)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('a', 'B', '.', '*', '?', '<', '>', '"'), { maxLength: 8 }),
        fc.array(fc.constantFrom('a', 'b', '.'), { maxLength: 8 }),
        (p, n) => matchPattern(p.join(''), n.join('')) === referenceMatch(p.join(''), n.join('')),
      ),
      { numRuns: 20_000 },
    );
  });

  it('the worst patterns cost at most |pattern| * |name| steps, runs of * once', () => {
    const name = 'a'.repeat(255);
    for (const p of ['*'.repeat(254) + 'b', '<'.repeat(254) + 'b', '*<'.repeat(127) + 'b']) {
      const meter = { steps: 0 };
      assert.equal(matchPattern(p, name, meter), false);
      // The run collapses to one wildcard: two rows of the name.
      assert.ok(meter.steps > 0 && meter.steps <= 2 * (name.length + 1), `${p.slice(0, 4)}...: ${meter.steps} steps`);
    }
    for (const p of ['?'.repeat(255), '>'.repeat(255), '*a'.repeat(127) + 'b', '"'.repeat(255)]) {
      const meter = { steps: 0 };
      matchPattern(p, name, meter);
      assert.ok(meter.steps > 0 && meter.steps <= MAX_PATTERN_LENGTH * (name.length + 1), `${p.slice(0, 4)}...: ${meter.steps} steps`);
    }
  });
});

/** The matcher as it was before the dynamic program (exponential memo, kept here as the oracle). */
function referenceMatch(pattern: string, name: string): boolean {
  if (pattern === '*' || pattern === '' || pattern === '*.*' || pattern === '<.*') return true;
  const p = pattern.toUpperCase();
  const n = name.toUpperCase();
  const memo = new Map<number, boolean>();
  const go = (i: number, j: number): boolean => {
    const key = i * (n.length + 1) + j;
    const hit = memo.get(key);
    if (hit !== undefined) return hit;
    let r: boolean;
    if (i === p.length) r = j === n.length;
    else {
      const c = p[i]!;
      if (c === '*') r = go(i + 1, j) || (j < n.length && go(i, j + 1));
      else if (c === '<') {
        const rest = n.slice(j);
        r =
          go(i + 1, j) || (j < n.length && (rest.indexOf('.') !== -1 ? n[j] !== '.' || rest.slice(1).includes('.') : true) && go(i, j + 1));
      } else if (c === '?') r = j < n.length && go(i + 1, j + 1);
      else if (c === '>') r = (j < n.length && n[j] !== '.' && go(i + 1, j + 1)) || go(i + 1, j);
      else if (c === '"') r = (j < n.length && n[j] === '.' && go(i + 1, j + 1)) || (j === n.length && go(i + 1, j));
      else r = j < n.length && n[j] === c && go(i + 1, j + 1);
    }
    memo.set(key, r);
    return r;
  };
  return go(0, 0);
}
