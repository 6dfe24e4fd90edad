import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DecodeError } from '../wire/errors.js';
import { SrvsvcPipe } from './srvsvc.js';

const SRVSVC = Buffer.from('c84f324b7016d30112785a47bf6ee18803000000', 'hex');
const NDR = Buffer.from('045d888aeb1cc9119fe808002b10486002000000', 'hex');
const NDR64 = Buffer.from('33057171babe37498319b5dbef9ccc3601000000', 'hex');

function pdu(ptype: number, callId: number, body: Buffer): Buffer {
  const b = Buffer.alloc(16 + body.length);
  b[0] = 5;
  b[2] = ptype;
  b[3] = 3;
  b[4] = 0x10;
  b.writeUInt16LE(b.length, 8);
  b.writeUInt32LE(callId, 12);
  body.copy(b, 16);
  return b;
}

/** C706 bind with two presentation contexts: srvsvc over NDR64 (refused) and over NDR. */
function bind(): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt16LE(4280, 0);
  head.writeUInt16LE(4280, 2);
  head[8] = 2;
  const ctx = (id: number, ts: Buffer): Buffer => {
    const c = Buffer.alloc(4);
    c.writeUInt16LE(id, 0);
    c[2] = 1;
    return Buffer.concat([c, SRVSVC, ts]);
  };
  return pdu(11, 1, Buffer.concat([head, ctx(0, NDR64), ctx(1, NDR)]));
}

/** NetrShareEnum (opnum 15) at `level`, with a server name. */
function shareEnum(level: number): Buffer {
  const name = Buffer.from('\\\\127.0.0.1\0', 'utf16le');
  const chars = name.length / 2;
  const stub = Buffer.alloc(16 + name.length + 2 + 24);
  let at = 0;
  stub.writeUInt32LE(0x20000, at);
  stub.writeUInt32LE(chars, (at += 4));
  stub.writeUInt32LE(0, (at += 4));
  stub.writeUInt32LE(chars, (at += 4));
  name.copy(stub, (at += 4));
  at = Math.ceil((at + name.length) / 4) * 4;
  stub.writeUInt32LE(level, at);
  const req = Buffer.alloc(8);
  req.writeUInt32LE(stub.length, 0);
  req.writeUInt16LE(1, 4);
  req.writeUInt16LE(15, 6);
  return pdu(0, 2, Buffer.concat([req, stub]));
}

describe('srvsvc pipe (MS-SRVS over DCE/RPC)', () => {
  const shares = [
    { name: 'export', type: 0, comment: '' },
    { name: 'IPC$', type: 0x80000003, comment: 'IPC Service' },
  ];

  it('binds NDR (refusing NDR64) and lists the shares with NetrShareEnum level 1', () => {
    const pipe = new SrvsvcPipe(() => shares);
    pipe.write(bind());
    const ack = pipe.read(4096);
    assert.equal(ack[2], 12, 'bind_ack');
    assert.equal(ack.readUInt16LE(8), ack.length);
    const port = ack.readUInt16LE(24);
    const results = Math.ceil((26 + port) / 4) * 4;
    assert.equal(ack[results], 2, 'two results');
    assert.equal(ack.readUInt16LE(results + 4), 2, 'NDR64 context refused');
    assert.equal(ack.readUInt16LE(results + 4 + 24), 0, 'NDR context accepted');

    pipe.write(shareEnum(1));
    const res = pipe.read(4096);
    assert.equal(res[2], 2, 'response');
    const stub = res.subarray(24);
    assert.equal(stub.readUInt32LE(0), 1, 'level');
    assert.equal(stub.readUInt32LE(12), 2, 'entries read');
    const text = stub.toString('utf16le');
    assert.ok(text.includes('export') && text.includes('IPC$') && text.includes('IPC Service'));
    assert.equal(stub.readUInt32LE(stub.length - 4), 0, 'WERR_OK');
  });

  it('answers an unknown opnum with a fault, and a level it does not serve with WERR_UNKNOWN_LEVEL', () => {
    const pipe = new SrvsvcPipe(() => shares);
    pipe.write(bind());
    pipe.read(4096);
    const other = Buffer.from(shareEnum(1));
    other.writeUInt16LE(16, 22);
    pipe.write(other);
    assert.equal(pipe.read(4096)[2], 3, 'fault');
    pipe.write(shareEnum(502));
    const res = pipe.read(4096);
    assert.equal(res.readUInt32LE(res.length - 4), 0x7c);
  });

  it('arbitrary PDUs are answered or refused with DecodeError, nothing else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.boolean(), (bytes, valid) => {
        const pipe = new SrvsvcPipe(() => shares);
        const b = Buffer.from(bytes);
        if (valid && b.length >= 16) {
          b[0] = 5;
          b[1] = 0;
          b[4] = 0x10;
          b.writeUInt16LE(b.length, 8);
          b.writeUInt16LE(0, 10);
        }
        try {
          pipe.write(b);
        } catch (e) {
          assert.ok(e instanceof DecodeError, String(e));
        }
      }),
      { numRuns: 1000 },
    );
  });
});
