// SMB WRITEs at offset 0xFFFFFFFFFFFFFFFF (append at the end of the file, MS-SMB2 3.3.5.13) that
// arrive together: each is acknowledged, so each lands past the others, none over another (the file
// grows by the sum of them). Pipelined on one connection, and from four connections.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { addShareUser, takeOverAdmin } from '../helpers/api.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';
import { RawSmbClient } from '../helpers/smb-raw.js';
import { bodies, SmbCommand } from '../helpers/smb-client.js';

const USER = 'appuser';
const PASSWORD = 'app-user-Passw0rd';

function appendBody(fileId: Buffer, data: Buffer): Buffer {
  const b = bodies.write(fileId, 0, data);
  b.writeUInt32LE(0xffffffff, 8);
  b.writeUInt32LE(0xffffffff, 12);
  return b;
}

describe('SMB appends', { timeout: 180_000 }, () => {
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
