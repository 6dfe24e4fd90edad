// SMB WRITE semantics against the real binary.
// - Appends (offset 0xFFFFFFFFFFFFFFFF, MS-SMB2 3.3.5.13) that arrive together: each is
//   acknowledged, so each lands past the others, none over another (the file grows by the sum of
//   them). Pipelined on one connection, and from four connections.
// - An open made with FILE_WRITE_THROUGH (CreateOptions 0x2), or switched to it with
//   FileModeInformation, makes each WRITE durable before its reply (MS-FSA 2.1.5.3), as a WRITE
//   with the SMB2_WRITEFLAG_WRITE_THROUGH flag does. Measured with dittofs_wal_syncs_total.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { addShareUser, takeOverAdmin } from '../helpers/api.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';
import { RawSmbClient } from '../helpers/smb-raw.js';
import { bodies, SmbCommand } from '../helpers/smb-client.js';

const USER = 'writer';
const PASSWORD = 'writer-Passw0rd-1';

function appendBody(fileId: Buffer, data: Buffer): Buffer {
  const b = bodies.write(fileId, 0, data);
  b.writeUInt32LE(0xffffffff, 8);
  b.writeUInt32LE(0xffffffff, 12);
  return b;
}

describe('SMB writes: appends and write-through', { timeout: 180_000 }, () => {
  let srv: DittofsProcess;
  const clients: RawSmbClient[] = [];
  before(async () => {
    srv = await startDittofs({ dataDir: await mkdtemp(path.join(os.tmpdir(), 'dittofs-smb-write-')), keepDataDir: true });
    const base = `http://127.0.0.1:${srv.apiPort}`;
    const token = await takeOverAdmin(base);
    await addShareUser(base, token, { username: USER, password: PASSWORD, uid: 1000, gid: 1000 });
  });
  after(async () => {
    for (const c of clients) c.destroy();
    await srv?.kill();
    if (srv) await rm(srv.dataDir, { recursive: true, force: true });
  });

  const syncs = async (): Promise<number> => {
    const text = await (await fetch(`http://127.0.0.1:${srv.metricsPort}/metrics`)).text();
    const m = /^dittofs_wal_syncs_total(?:\{[^}]*\})? (\d+)/m.exec(text);
    assert.ok(m, 'dittofs_wal_syncs_total is exported');
    return Number(m[1]);
  };

  /** How many of `n` writes were followed by a WAL fsync before their reply. */
  const syncedWrites = async (c: RawSmbClient, fileId: Buffer, flags: number, n: number): Promise<number> => {
    let synced = 0;
    for (let i = 0; i < n; i++) {
      const before = await syncs();
      const r = await c.request(SmbCommand.WRITE, bodies.write(fileId, i * 100, Buffer.alloc(100, 65 + i), flags));
      assert.equal(r.status, 0, `WRITE ${i}`);
      if ((await syncs()) > before) synced++;
    }
    return synced;
  };

  it('WRITEFLAG_WRITE_THROUGH syncs (control)', async () => {
    const c = await RawSmbClient.connect(srv.smbPort);
    clients.push(c);
    await c.login(USER, PASSWORD, 'export');
    const { fileId } = await c.create('flag.dat');
    assert.equal(await syncedWrites(c, fileId, 1, 5), 5);
  });

  it("a plain open's writes are not synced one by one (control: the count tells them apart)", async () => {
    const c = await RawSmbClient.connect(srv.smbPort);
    clients.push(c);
    await c.login(USER, PASSWORD, 'export');
    const { fileId } = await c.create('plain.dat');
    assert.ok((await syncedWrites(c, fileId, 0, 5)) < 5);
  });

  it('a write on an open created with FILE_WRITE_THROUGH syncs', async () => {
    const c = await RawSmbClient.connect(srv.smbPort);
    clients.push(c);
    await c.login(USER, PASSWORD, 'export');
    const { fileId } = await c.create('opt.dat', { options: 0x40 | 0x2 });
    assert.equal(await syncedWrites(c, fileId, 0, 5), 5, 'every write on a FILE_WRITE_THROUGH open is fsynced before its reply');
  });

  it('a write on an open created with FILE_NO_INTERMEDIATE_BUFFERING syncs (MS-SMB2 2.2.13: it implies write-through)', async () => {
    const c = await RawSmbClient.connect(srv.smbPort);
    clients.push(c);
    await c.login(USER, PASSWORD, 'export');
    const { fileId } = await c.create('nobuf.dat', { options: 0x40 | 0x8 });
    assert.equal(await syncedWrites(c, fileId, 0, 5), 5);
  });

  it('FileModeInformation: NO_INTERMEDIATE_BUFFERING stays as CREATE gave it (and keeps writing through), and cannot be set (MS-FSA 2.1.5.15.7)', async () => {
    const c = await RawSmbClient.connect(srv.smbPort);
    clients.push(c);
    await c.login(USER, PASSWORD, 'export');
    const queryMode = async (fileId: Buffer): Promise<number> => {
      const q = bodies.queryInfo(fileId);
      q.writeUInt8(16, 3); // FileModeInformation
      const r = await c.request(SmbCommand.QUERY_INFO, q);
      assert.equal(r.status, 0);
      return r.body.readUInt32LE(r.body.readUInt16LE(2) - 64);
    };
    const mode = (m: number): Buffer => {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(m, 0);
      return b;
    };
    const { fileId } = await c.create('nobuf2.dat', { options: 0x40 | 0x8 });
    assert.equal(await queryMode(fileId), 0x8);
    assert.equal(await c.setInfo(fileId, 1, 16, mode(0x4)), 0, 'SEQUENTIAL_ONLY may be set');
    assert.equal(await queryMode(fileId), 0x8 | 0x4);
    assert.equal(await syncedWrites(c, fileId, 0, 3), 3, 'still written through');
    const plain = (await c.create('plain2.dat')).fileId;
    assert.equal(await c.setInfo(plain, 1, 16, mode(0x8)), 0xc000000d, 'NO_INTERMEDIATE_BUFFERING cannot be set');
    assert.equal(await c.setInfo(plain, 1, 16, mode(0x2)), 0);
    assert.equal(await queryMode(plain), 0x2);
  });

  it('a write on an open switched to FILE_WRITE_THROUGH with FileModeInformation syncs', async () => {
    const c = await RawSmbClient.connect(srv.smbPort);
    clients.push(c);
    await c.login(USER, PASSWORD, 'export');
    const { fileId } = await c.create('mode.dat');
    const mode = Buffer.alloc(4);
    mode.writeUInt32LE(0x2, 0);
    assert.equal(await c.setInfo(fileId, 1, 16, mode), 0, 'FileModeInformation FILE_WRITE_THROUGH accepted');
    assert.equal(await syncedWrites(c, fileId, 0, 5), 5, 'every write after FILE_WRITE_THROUGH is set is fsynced before its reply');
  });

  it('pipelined appends all land', async () => {
    const c = await RawSmbClient.connect(srv.smbPort);
    clients.push(c);
    await c.login(USER, PASSWORD, 'export');
    const { fileId } = await c.create('log.txt');
    const N = 20;
    const replies = await Promise.all(
      Array.from({ length: N }, (_, i) =>
        c.request(SmbCommand.WRITE, appendBody(fileId, Buffer.from(`line ${String(i).padStart(3, '0')}\n`))),
      ),
    );
    for (const r of replies) assert.equal(r.status, 0);
    const q = await c.request(SmbCommand.QUERY_INFO, bodies.queryInfo(fileId));
    assert.equal(q.status, 0);
    // FileAllInformation: Basic (40) then Standard: AllocationSize (8), EndOfFile (8).
    const out = q.body.subarray(q.body.readUInt16LE(2) - 64);
    const eof = Number(out.readBigUInt64LE(48));
    const rd = await c.request(SmbCommand.READ, bodies.read(fileId, 0, 4096));
    const text = rd.body.subarray(rd.body[2]! - 64, rd.body[2]! - 64 + rd.body.readUInt32LE(4)).toString();
    assert.equal(eof, N * 9, `every acknowledged append is in the file; it holds:\n${text}`);
    const want = Array.from({ length: N }, (_, i) => `line ${String(i).padStart(3, '0')}`);
    assert.deepEqual(text.split('\n').filter(Boolean).sort(), want, 'each append once, whole');
  });

  it('appends of four clients, each waiting for its replies, all land', async () => {
    const cs = await Promise.all(
      [0, 1, 2, 3].map(async () => {
        const c = await RawSmbClient.connect(srv.smbPort);
        clients.push(c);
        await c.login(USER, PASSWORD, 'export');
        return c;
      }),
    );
    const ids: Buffer[] = [];
    for (const c of cs) ids.push((await c.create('shared.log')).fileId);
    const N = 30;
    await Promise.all(
      cs.map(async (c, k) => {
        for (let i = 0; i < N; i++) {
          const r = await c.request(SmbCommand.WRITE, appendBody(ids[k]!, Buffer.from(`c${k} ${String(i).padStart(3, '0')}\n`)));
          assert.equal(r.status, 0);
        }
      }),
    );
    const q = await cs[0]!.request(SmbCommand.QUERY_INFO, bodies.queryInfo(ids[0]!));
    const out = q.body.subarray(q.body.readUInt16LE(2) - 64);
    const eof = Number(out.readBigUInt64LE(48));
    assert.equal(eof, cs.length * N * 7, 'every acknowledged append of the four clients is in the file');
  });
});
