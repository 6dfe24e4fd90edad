// The SMB2 engine against a real client: Debian's smbclient (Samba) at dialects 2.0.2, 2.1, 3.0,
// 3.0.2 and 3.1.1, with and without signing (HMAC-SHA256 at 2.x, AES-CMAC at 3.0.x, AES-GMAC at 3.1.1) and encryption
// (3.x: AES-128-CCM at 3.0 and 3.0.2, the negotiated cipher at 3.1.1; nothing readable on the
// wire), logged in as a non-admin control-plane user created through the REST API. A server that
// requires encryption refuses 2.x and has 3.x clients encrypt without being asked.
// Big files keep their sha256 across put and get; directory and name operations do what the user
// asked; a wrong password is refused; a file written by NFS (libnfs nfs-cp) reads back identical
// by SMB and the reverse.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDittofs, TEST_ADMIN_PASSWORD, type DittofsProcess } from '../helpers/server.js';

const USER = 'smbuser';
const PASSWORD = 'smb-user-Passw0rd';
const UID = 1000;
/** A user with `read` on /export, and one with `none`. */
const READER = 'smbreader';
const NOBODY = 'smbnobody';
const BIG_MIB = 256;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function tool(cmd: string, args: string[], timeoutMs = 120_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string }) | null;
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : -1) : 0, stdout, stderr });
    });
  });
}

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** A file of `mib` MiB of random bytes; resolves with its sha256. */
async function randomFile(file: string, mib: number): Promise<string> {
  const h = createHash('sha256');
  const out = createWriteStream(file);
  for (let i = 0; i < mib; i++) {
    const chunk = randomBytes(1024 * 1024);
    h.update(chunk);
    if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
  }
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  return h.digest('hex');
}

describe('SMB2 with smbclient', { timeout: 1_200_000 }, () => {
  let dir: string;
  let srv: DittofsProcess;

  /** smbclient against //127.0.0.1/export; `dialect` SMB2_02, SMB2_10, SMB3_00, SMB3_02 or SMB3_11. */
  function smb(
    commands: string,
    opts: {
      dialect?: string;
      sign?: boolean;
      encrypt?: boolean;
      user?: string;
      password?: string;
      cwd?: string;
      timeoutMs?: number;
      port?: number;
    } = {},
  ): Promise<Run> {
    const args = [
      `//127.0.0.1/export`,
      '-p',
      String(opts.port ?? srv.smbPort),
      '-U',
      `${opts.user ?? USER}%${opts.password ?? PASSWORD}`,
      '-m',
      opts.dialect ?? 'SMB2_10',
      '--option=client min protocol=SMB2_02',
      ...(opts.sign ? ['--client-protection=sign'] : []),
      ...(opts.encrypt ? ['--client-protection=encrypt'] : []),
      ...(opts.cwd ? ['-D', opts.cwd] : []),
      '-c',
      commands,
    ];
    return tool('smbclient', args, opts.timeoutMs);
  }

  /** Runs commands that must all succeed: no NT_STATUS_ error in the output. */
  async function smbOk(commands: string, opts: Parameters<typeof smb>[1] = {}): Promise<string> {
    const r = await smb(commands, opts);
    const out = r.stdout + r.stderr;
    assert.equal(r.code, 0, `smbclient -c "${commands}" exited ${r.code}:\n${out}`);
    // allinfo reports that no 8.3 alternate name exists (the server generates none) and goes on.
    const errors = out.split('\n').filter((l) => /NT_STATUS_/.test(l) && !/NT_STATUS_NOT_SUPPORTED getting alt name/.test(l));
    assert.deepEqual(errors, [], `smbclient -c "${commands}":\n${out}`);
    return r.stdout;
  }

  async function api(method: string, url: string, token: string | null, body?: unknown, on: DittofsProcess = srv): Promise<Response> {
    return fetch(`http://127.0.0.1:${on.apiPort}${url}`, {
      method,
      headers: {
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  }

  async function login(password: string, on: DittofsProcess = srv): Promise<string> {
    const r = await api('POST', '/api/v1/auth/login', null, { username: 'admin', password }, on);
    const text = await r.text();
    assert.equal(r.status, 200, text);
    return (JSON.parse(text) as { access_token: string }).access_token;
  }

  const nfsUrl = (file: string): string =>
    `nfs://127.0.0.1/export/${file}?nfsport=${srv.nfsPort}&mountport=${srv.nfsPort}&uid=${UID}&gid=${UID}`;

  /** The admin's first password changed, USER (read-write), READER (read) and NOBODY (none) on /export. */
  async function addUsers(on: DittofsProcess): Promise<void> {
    const first = await login(TEST_ADMIN_PASSWORD, on);
    const changed = await api(
      'POST',
      '/api/v1/users/me/password',
      first,
      { current_password: TEST_ADMIN_PASSWORD, new_password: 'admin-Passw0rd-changed' },
      on,
    );
    assert.equal(changed.status, 204, await changed.text());
    const token = await login('admin-Passw0rd-changed', on);
    for (const [user, uid, level] of [
      [USER, UID, 'read-write'],
      [READER, UID + 1, 'read'],
      [NOBODY, UID + 2, 'none'],
    ] as const) {
      const r = await api(
        'POST',
        '/api/v1/users',
        token,
        { username: user, password: PASSWORD, uid, gid: uid, must_change_password: false },
        on,
      );
      assert.equal(r.status, 201, await r.text());
      const granted = await api('PUT', `/api/v1/shares/export/permissions/users/${user}`, token, { level }, on);
      assert.equal(granted.status, 200, await granted.text());
    }
  }

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-smb-'));
    srv = await startDittofs();
    await addUsers(srv);
  });

  after(async () => {
    await srv?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a wrong password is refused with NT_STATUS_LOGON_FAILURE', async () => {
    const r = await smb('ls', { password: 'not-the-password' });
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /NT_STATUS_LOGON_FAILURE/);
  });

  it('smbclient -L lists the shares through the srvsvc pipe', async () => {
    // Signed at 3.0.2, the client validates the negotiation on IPC$, the only tree it connects; at
    // 3.1.1 the preauth hash protects it instead.
    for (const [dialect, sign] of [
      ['SMB2_02', false],
      ['SMB2_10', false],
      ['SMB3_02', true],
      ['SMB3_11', true],
    ] as const) {
      const r = await tool('smbclient', [
        '-L',
        '//127.0.0.1',
        '-p',
        String(srv.smbPort),
        '-U',
        `${USER}%${PASSWORD}`,
        '-m',
        dialect,
        ...(sign ? ['--client-protection=sign'] : []),
      ]);
      const out = r.stdout + r.stderr;
      assert.match(out, /^\s*export\s+Disk/m, out);
      assert.match(out, /^\s*IPC\$\s+IPC\s+IPC Service/m, out);
    }
  });

  it('share permissions: read refuses changes, none refuses the tree connect', async () => {
    const src = path.join(dir, 'perm-src');
    await writeFile(src, 'shared\n');
    await smbOk(`put ${src} shared.txt`);
    const back = path.join(dir, 'perm-back');
    await smbOk(`get shared.txt ${back}`, { user: READER });
    assert.equal(await readFile(back, 'utf8'), 'shared\n');
    const put = await smb(`put ${src} reader.txt`, { user: READER });
    assert.match(put.stdout + put.stderr, /NT_STATUS_ACCESS_DENIED/);
    const del = await smb('rm shared.txt', { user: READER });
    assert.match(del.stdout + del.stderr, /NT_STATUS_ACCESS_DENIED/);
    const none = await smb('ls', { user: NOBODY });
    assert.notEqual(none.code, 0);
    assert.match(none.stdout + none.stderr, /NT_STATUS_ACCESS_DENIED/);
    assert.match(await smbOk('ls'), /shared\.txt/);
  });

  it('missing names: a failed CREATE fails the rest of its compound with the same status', async () => {
    // smbclient's allinfo sends CREATE + QUERY_INFO + CLOSE as one related compound.
    const r = await smb('allinfo no-such-file');
    assert.match(r.stdout + r.stderr, /NT_STATUS_OBJECT_NAME_NOT_FOUND/);
    const g = await smb(`get no-such-dir\\x ${path.join(dir, 'never')}`);
    assert.match(g.stdout + g.stderr, /NT_STATUS_OBJECT_PATH_NOT_FOUND/);
    const m = await smb('mkdir dup; mkdir dup');
    assert.match(m.stdout + m.stderr, /NT_STATUS_OBJECT_NAME_COLLISION/);
    await smbOk('rmdir dup');
  });

  for (const [dialect, sign] of [
    ['SMB2_02', false],
    ['SMB2_10', false],
    ['SMB3_00', false],
    ['SMB3_02', false],
    ['SMB3_11', false],
    ['SMB2_02', true],
    ['SMB2_10', true],
    ['SMB3_00', true],
    ['SMB3_02', true],
    ['SMB3_11', true],
    ['SMB3_00', 'encrypt'],
    ['SMB3_02', 'encrypt'],
    ['SMB3_11', 'encrypt'],
  ] as const) {
    const protection = sign === 'encrypt' ? ' encrypted' : sign ? ' signed' : '';
    it(`${dialect}${protection}: mkdir, put, ls, rename, allinfo, get, rm, deltree`, async () => {
      const tag = `${dialect}-${sign === 'encrypt' ? 'e' : sign ? 's' : 'u'}`;
      const p = { dialect, sign: sign === true, encrypt: sign === 'encrypt' };
      const src = path.join(dir, `small-${tag}`);
      const content = `hello from ${tag}\n`.repeat(1000);
      await writeFile(src, content);
      const back = path.join(dir, `back-${tag}`);
      await smbOk(`mkdir d-${tag}; mkdir d-${tag}\\sub; put ${src} d-${tag}\\a.txt; rename d-${tag}\\a.txt d-${tag}\\sub\\b.txt`, p);
      const ls = await smbOk(`ls d-${tag}\\sub\\*`, p);
      assert.match(ls, new RegExp(`b\\.txt\\s+A\\s+${content.length}\\b`), ls);
      assert.doesNotMatch(await smbOk(`ls d-${tag}\\*`, p), /a\.txt/);
      const info = await smbOk(`allinfo d-${tag}\\sub\\b.txt`, p);
      assert.match(info, /write_time:/, info);
      assert.match(info, new RegExp(`stream: \\[::\\$DATA\\], ${content.length} bytes`), info);
      await smbOk(`get d-${tag}\\sub\\b.txt ${back}`, p);
      assert.equal(await readFile(back, 'utf8'), content);
      await smbOk(`rm d-${tag}\\sub\\b.txt`, p);
      assert.doesNotMatch(await smbOk(`ls d-${tag}\\sub\\*`, p), /b\.txt/);
      await smbOk(`put ${src} d-${tag}\\sub\\c.txt; deltree d-${tag}`, p);
      const root = await smbOk('ls', p);
      assert.doesNotMatch(root, new RegExp(`d-${tag}`), root);
    });
  }

  it(`a ${BIG_MIB} MiB file: put at 2.1 signed, get at 2.0.2, at 2.1, at 3.1.1 signed and encrypted, identical sha256`, async () => {
    const src = path.join(dir, 'big');
    const sum = await randomFile(src, BIG_MIB);
    const started = Date.now();
    await smbOk(`put ${src} big.bin`, { dialect: 'SMB2_10', sign: true, timeoutMs: 900_000 });
    const putS = (Date.now() - started) / 1000;
    for (const [dialect, sign] of [
      ['SMB2_02', false],
      ['SMB2_10', false],
      ['SMB3_11', true],
      ['SMB3_11', 'encrypt'],
    ] as const) {
      const out = path.join(dir, `big-${dialect}`);
      const t = Date.now();
      await smbOk(`get big.bin ${out}`, { dialect, sign: sign === true, encrypt: sign === 'encrypt', timeoutMs: 900_000 });
      const getS = (Date.now() - t) / 1000;
      assert.equal(await sha256File(out), sum, `${dialect} get`);
      const how = sign === 'encrypt' ? ' encrypted' : sign ? ' signed' : '';
      console.log(
        `# ${BIG_MIB} MiB: put (2.1 signed) ${(BIG_MIB / putS).toFixed(1)} MiB/s, get (${dialect}${how}) ${(BIG_MIB / getS).toFixed(1)} MiB/s`,
      );
      await rm(out);
    }
    await smbOk('rm big.bin');
    // The metrics count SMB as they count NFS: by protocol, command and status, and bytes by share.
    const metrics = await (await fetch(`http://127.0.0.1:${srv.metricsPort}/metrics`)).text();
    assert.match(metrics, /dittofs_requests_total\{protocol="smb",procedure="WRITE",status="ok"\} \d+/);
    assert.match(metrics, /dittofs_requests_total\{protocol="smb",procedure="CREATE",status="object_name_not_found"\} \d+/);
    const written = /dittofs_written_bytes_total\{share="\/export"\} (\d+)/.exec(metrics);
    assert.ok(written && Number(written[1]) >= BIG_MIB * 1024 * 1024, 'bytes written counted');
  });

  it('encrypted at 3.0 and 3.1.1: neither names nor data cross the wire in the clear, and what is read back is what was written', async () => {
    for (const dialect of ['SMB3_00', 'SMB3_11']) {
      const marker = `plain-marker-${dialect}-${randomBytes(6).toString('hex')}`;
      const src = path.join(dir, `wire-${dialect}`);
      await writeFile(src, `${marker}\n`.repeat(500));
      // smbclient talks to the server through a proxy that keeps every byte, both ways.
      const seen: Buffer[] = [];
      const proxy = net.createServer((c) => {
        const up = net.connect(srv.smbPort, '127.0.0.1');
        c.on('data', (b: Buffer) => (seen.push(Buffer.from(b)), up.write(b)));
        up.on('data', (b: Buffer) => (seen.push(Buffer.from(b)), c.write(b)));
        c.on('close', () => up.destroy());
        up.on('close', () => c.destroy());
        c.on('error', () => up.destroy());
        up.on('error', () => c.destroy());
      });
      await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
      try {
        const port = (proxy.address() as net.AddressInfo).port;
        const back = path.join(dir, `wire-back-${dialect}`);
        await smbOk(`put ${src} ${marker}.txt; get ${marker}.txt ${back}; rm ${marker}.txt`, { dialect, encrypt: true, port });
        assert.equal(await readFile(back, 'utf8'), await readFile(src, 'utf8'));
      } finally {
        await new Promise<void>((r) => proxy.close(() => r()));
      }
      const wire = Buffer.concat(seen);
      assert.ok(wire.length > 500 * marker.length, `the file went through the proxy (${wire.length} bytes)`);
      assert.equal(wire.indexOf(marker), -1, 'the file content is not on the wire in the clear');
      assert.equal(wire.indexOf(Buffer.from(marker, 'utf16le')), -1, 'the file name is not on the wire in the clear');
      assert.ok(wire.indexOf(Buffer.from([0xfd, 0x53, 0x4d, 0x42])) >= 0, 'messages went as SMB2 TRANSFORM_HEADERs');
    }
  });

  it('encryption_required: a 2.x client is refused, a 3.x client encrypts without being asked', async () => {
    const strict = await startDittofs({ env: { DITTOFS_SMB_ENCRYPTION_REQUIRED: 'true' } });
    try {
      await addUsers(strict);
      const old = await smb('ls', { dialect: 'SMB2_10', port: strict.smbPort });
      assert.notEqual(old.code, 0, old.stdout + old.stderr);
      assert.match(old.stdout + old.stderr, /NT_STATUS_ACCESS_DENIED/);
      const src = path.join(dir, 'strict');
      await writeFile(src, 'kept secret\n'.repeat(100));
      for (const dialect of ['SMB3_02', 'SMB3_11']) {
        const back = path.join(dir, `strict-back-${dialect}`);
        await smbOk(`put ${src} s-${dialect}.txt; get s-${dialect}.txt ${back}`, { dialect, port: strict.smbPort });
        assert.equal(await readFile(back, 'utf8'), 'kept secret\n'.repeat(100));
      }
    } finally {
      await strict.stop();
    }
  });

  it('a file written by NFS reads back identical by SMB, and the reverse', async () => {
    const viaNfs = path.join(dir, 'via-nfs');
    const sum = await randomFile(viaNfs, 3);
    const put = await tool('nfs-cp', [viaNfs, nfsUrl('from-nfs.bin')]);
    assert.equal(put.code, 0, put.stderr);
    const gotSmb = path.join(dir, 'got-smb');
    await smbOk(`get from-nfs.bin ${gotSmb}`);
    assert.equal(await sha256File(gotSmb), sum);

    const viaSmb = path.join(dir, 'via-smb');
    const sum2 = await randomFile(viaSmb, 3);
    await smbOk(`put ${viaSmb} from-smb.bin`, { dialect: 'SMB2_02' });
    const gotNfs = path.join(dir, 'got-nfs');
    const get = await tool('nfs-cp', [nfsUrl('from-smb.bin'), gotNfs]);
    assert.equal(get.code, 0, get.stderr);
    assert.equal(await sha256File(gotNfs), sum2);
  });
});
