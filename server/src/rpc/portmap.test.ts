import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AuthFlavor, encodeCall } from './message.js';
import { IPPROTO_TCP, IPPROTO_UDP, PMAP_PROGRAM, portmapProgram } from './portmap.js';
import { RpcServer } from './server.js';
import { XdrReader, XdrWriter } from './xdr.js';

const conn = { host: '127.0.0.1', transport: 'udp' as const };
const none = { flavor: AuthFlavor.AUTH_NONE, body: Buffer.alloc(0) };

async function ask(rpc: RpcServer, proc: number, args: Buffer): Promise<XdrReader> {
  const reply = await rpc.answer(encodeCall(9, PMAP_PROGRAM, 2, proc, none, args), conn);
  assert.ok(reply);
  const r = new XdrReader(Buffer.concat(reply));
  r.fixed(20);
  assert.equal(r.u32(), 0, 'accept_stat SUCCESS');
  return r;
}

describe('RFC 1833 PMAP v2 (embedded portmapper)', () => {
  const rpc = new RpcServer(
    [
      portmapProgram(() => [
        { prog: 100003, vers: 3, prot: IPPROTO_TCP, port: 12049 },
        { prog: 100005, vers: 3, prot: IPPROTO_TCP, port: 12049 },
      ]),
    ],
    { maxRecordSize: 65536, drcSize: 1 },
  );

  it('answers GETPORT for registered programs and 0 for others', async () => {
    const q = (prog: number, vers: number, prot: number) => new XdrWriter().u32(prog).u32(vers).u32(prot).u32(0).finish();
    assert.equal((await ask(rpc, 3, q(100003, 3, IPPROTO_TCP))).u32(), 12049);
    assert.equal((await ask(rpc, 3, q(100005, 3, IPPROTO_TCP))).u32(), 12049);
    assert.equal((await ask(rpc, 3, q(100003, 3, IPPROTO_UDP))).u32(), 0);
    assert.equal((await ask(rpc, 3, q(100003, 4, IPPROTO_TCP))).u32(), 0);
  });

  it('lists every mapping with DUMP', async () => {
    const r = await ask(rpc, 4, Buffer.alloc(0));
    const got: number[][] = [];
    while (r.bool()) got.push([r.u32(), r.u32(), r.u32(), r.u32()]);
    assert.deepEqual(got, [
      [100003, 3, IPPROTO_TCP, 12049],
      [100005, 3, IPPROTO_TCP, 12049],
    ]);
  });

  it('refuses SET from other processes', async () => {
    const r = await ask(rpc, 1, new XdrWriter().u32(1).u32(1).u32(6).u32(1).finish());
    assert.equal(r.bool(), false);
  });
});
