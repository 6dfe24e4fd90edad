// End-to-end with a real NFS client (libnfs-utils: nfs-cp, nfs-cat, nfs-ls) against a real server
// process: a 256 MiB round trip, exact small-file content, and POSIX permissions for users chosen
// with the libnfs `uid=` / `gid=` URL parameters (AUTH_SYS). Setup and ownership checks use the raw
// RPC client.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SUITE_TIMEOUT_MS, TEST_TIMEOUT_MS } from '../helpers/limits.js';
import { authSys, NfsClient, NfsStat } from '../helpers/rpc-client.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';
import { sha256File, writeRandomFile } from '../helpers/files.js';
import { runTool as runToolWith, type ToolResult } from '../helpers/run.js';

const MiB = 1024 * 1024;
const BIG_SIZE = 256 * MiB;

/** The libnfs tools print file content: stdout as bytes. */
const runTool = (cmd: string, argv: string[]): Promise<ToolResult<Buffer>> => runToolWith(cmd, argv, { binary: true });

/** Asserts the tool ran to completion (not killed by the timeout) with the expected outcome. */
function assertOk(r: ToolResult<Buffer>, what: string): void {
  assert.equal(r.signal, null, `${what}: killed (timeout?)`);
  assert.equal(r.code, 0, `${what}: exit ${r.code}: ${r.stderr}`);
}

/** Asserts the tool failed (not killed by the timeout) for the reason `reason` matches in stderr. */
function assertFails(r: ToolResult<Buffer>, what: string, reason: RegExp): void {
  assert.equal(r.signal, null, `${what}: killed (timeout?) instead of failing`);
  assert.notEqual(r.code, 0, `${what}: expected failure, got exit 0 (stdout ${JSON.stringify(r.stdout.toString().slice(0, 200))})`);
  assert.match(r.stderr, reason, `${what}: failed for another reason`);
}

/** How libnfs reports a permission failure: a server ACCES, or its own check of an ACCESS reply. */
const DENIED = /NFS3ERR_ACCES|ACCESS denied/;

describe('libnfs client against a real server process', { timeout: SUITE_TIMEOUT_MS }, () => {
  let srv: DittofsProcess;
  let tmp: string;
  let dataDir: string;
  let raw: NfsClient;
  let root: Buffer;

  /** nfs:// URL of PATH under the share, optionally as another user. */
  const url = (p: string, user?: { uid: number; gid: number }): string =>
    `nfs://127.0.0.1/export/${p}?nfsport=${srv.nfsPort}&mountport=${srv.nfsPort}` + (user ? `&uid=${user.uid}&gid=${user.gid}` : '');

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'dittofs-libnfs-'));
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'dittofs-libnfs-data-'));
    srv = await startDittofs({ dataDir });
    raw = await NfsClient.connect(srv.nfsPort, authSys(0, 0));
    root = await raw.mount('/export');
  });

  after(async () => {
    raw?.close();
    await srv?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  test('nfs-cp of a 256 MiB random file in and out keeps every byte', { timeout: TEST_TIMEOUT_MS }, async () => {
    const src = path.join(tmp, 'big.src');
    const out = path.join(tmp, 'big.out');
    const srcHash = await writeRandomFile(src, BIG_SIZE);

    const put = await runTool('nfs-cp', [src, url('big.bin')]);
    assertOk(put, 'nfs-cp in');
    assert.match(put.stdout.toString(), new RegExp(`copied ${BIG_SIZE} bytes`));

    // The server reports the size, both to libnfs and to a raw GETATTR.
    const ls = await runTool('nfs-ls', [url('')]);
    assertOk(ls, 'nfs-ls');
    assert.match(ls.stdout.toString(), new RegExp(`^-\\S+ +1 +0 +0 +${BIG_SIZE} big\\.bin$`, 'm'));
    const found = await raw.lookup(root, 'big.bin');
    assert.equal(found.status, NfsStat.OK);
    assert.equal(found.attrs?.size, BIG_SIZE);
    assert.equal(found.attrs?.type, 1);

    const get = await runTool('nfs-cp', [url('big.bin'), out]);
    assertOk(get, 'nfs-cp out');
    assert.equal((await stat(out)).size, BIG_SIZE);
    assert.equal(await sha256File(out), srcHash);

    // Spot-check a range through the raw client too (READ at an unaligned offset).
    assert.ok(found.fh);
    const off = 200 * MiB + 12345;
    const r = await raw.read(found.fh, off, 4096);
    assert.equal(r.status, NfsStat.OK);
    const expect = Buffer.alloc(4096);
    const fd = await open(src, 'r');
    try {
      await fd.read(expect, 0, 4096, off);
    } finally {
      await fd.close();
    }
    assert.deepEqual(r.data, expect);
    await rm(src);
    await rm(out);
  });

  test('nfs-cat of a small text file returns the exact content', { timeout: TEST_TIMEOUT_MS }, async () => {
    const text = 'line one\nzwei: äöü ✓\n\ttabbed line without a final newline';
    const src = path.join(tmp, 'note.txt');
    await writeFile(src, text);
    assertOk(await runTool('nfs-cp', [src, url('note.txt')]), 'nfs-cp note.txt');
    const cat = await runTool('nfs-cat', [url('note.txt')]);
    assertOk(cat, 'nfs-cat');
    assert.deepEqual(cat.stdout, Buffer.from(text));
    // An empty file reads back empty.
    await writeFile(path.join(tmp, 'empty.txt'), '');
    assertOk(await runTool('nfs-cp', [path.join(tmp, 'empty.txt'), url('empty.txt')]), 'nfs-cp empty');
    const catEmpty = await runTool('nfs-cat', [url('empty.txt')]);
    assertOk(catEmpty, 'nfs-cat empty');
    assert.equal(catEmpty.stdout.length, 0);
    // A missing file is an error, not empty output.
    assertFails(await runTool('nfs-cat', [url('no-such-file.txt')]), 'nfs-cat of a missing file', /NFS3ERR_NOENT/);
  });

  test('permissions for uid/gid chosen in the URL', { timeout: TEST_TIMEOUT_MS }, async () => {
    const u1000 = { uid: 1000, gid: 1000 };
    const u2000 = { uid: 2000, gid: 2000 };
    const payload = path.join(tmp, 'payload.txt');
    await writeFile(payload, 'payload\n');

    // Root makes a 0755 directory owned by root:root.
    const dir = await raw.mkdir(root, 'rootdir', { mode: 0o700 });
    assert.equal(dir.status, NfsStat.OK);
    assert.ok(dir.fh);
    const set = await raw.setattr(dir.fh, { mode: 0o755, uid: 0, gid: 0 });
    assert.equal(set.status, NfsStat.OK);
    const dattr = (await raw.getattr(dir.fh)).attrs;
    assert.deepEqual([dattr?.type, dattr?.mode, dattr?.uid, dattr?.gid], [2, 0o755, 0, 0]);
    const pubText = Buffer.from('readable by everyone\n');
    await raw.writeFile(dir.fh, 'public.txt', pubText, { mode: 0o644 });

    // uid 1000 cannot create in it, and nothing is left behind...
    assertFails(
      await runTool('nfs-cp', [payload, url('rootdir/intruder.txt', u1000)]),
      'nfs-cp into a 0755 root dir as uid 1000',
      /CREATE .*NFS3ERR_ACCES/,
    );
    assert.equal((await raw.lookup(dir.fh, 'intruder.txt')).status, NfsStat.NOENT);
    // ...the same attempt over the raw client is ACCES...
    assert.equal((await raw.as(authSys(1000, 1000)).create(dir.fh, 'intruder.txt')).status, NfsStat.ACCES);
    // ...root can...
    assertOk(await runTool('nfs-cp', [payload, url('rootdir/by-root.txt', { uid: 0, gid: 0 })]), 'nfs-cp into rootdir as root');
    assert.equal((await raw.lookup(dir.fh, 'by-root.txt')).status, NfsStat.OK);
    // ...and uid 1000 can still read a 0644 file in it and list it.
    const catPub = await runTool('nfs-cat', [url('rootdir/public.txt', u1000)]);
    assertOk(catPub, 'nfs-cat public.txt as uid 1000');
    assert.deepEqual(catPub.stdout, pubText);
    const lsDir = await runTool('nfs-ls', [url('rootdir', u1000)]);
    assertOk(lsDir, 'nfs-ls rootdir as uid 1000');
    assert.match(lsDir.stdout.toString(), /^-rw-r--r-- +1 +0 +0 +21 public\.txt$/m);

    // A 0600 file owned by uid 1000: readable by 1000 only.
    const as1000 = raw.as(authSys(1000, 1000));
    const secret = Buffer.from('only for uid 1000\n');
    const privFh = await as1000.writeFile(root, 'private.txt', secret, { mode: 0o600 });
    const pattr = (await raw.getattr(privFh)).attrs;
    assert.deepEqual([pattr?.mode, pattr?.uid, pattr?.gid, pattr?.size], [0o600, 1000, 1000, secret.length]);
    const denied = await runTool('nfs-cat', [url('private.txt', u2000)]);
    assertFails(denied, 'nfs-cat private.txt as uid 2000', DENIED);
    assert.equal(denied.stdout.includes(secret), false, 'the secret leaked to uid 2000');
    assertFails(
      await runTool('nfs-cp', [url('private.txt', u2000), path.join(tmp, 'stolen.txt')]),
      'nfs-cp private.txt out as uid 2000',
      DENIED,
    );
    assert.equal((await raw.as(authSys(2000, 2000)).read(privFh, 0, 100)).status, NfsStat.ACCES);
    const allowed = await runTool('nfs-cat', [url('private.txt', u1000)]);
    assertOk(allowed, 'nfs-cat private.txt as uid 1000');
    assert.deepEqual(allowed.stdout, secret);
    // uid 2000 cannot overwrite it either (nfs-cp creates with O_EXCL, so ask the server directly).
    assert.equal((await raw.as(authSys(2000, 2000)).write(privFh, 0, Buffer.from('x'))).status, NfsStat.ACCES);
    assert.equal((await raw.as(authSys(2000, 2000)).setattr(privFh, { size: 0 })).status, NfsStat.ACCES);
    assert.deepEqual((await raw.read(privFh, 0, 100)).data, secret);

    // Group bits: 0640 owned by 1000:1000 is readable with gid 1000, not with another gid.
    const groupText = Buffer.from('for group 1000\n');
    await as1000.writeFile(root, 'group.txt', groupText, { mode: 0o640 });
    const byGroup = await runTool('nfs-cat', [url('group.txt', { uid: 2000, gid: 1000 })]);
    assertOk(byGroup, 'nfs-cat group.txt as 2000:1000');
    assert.deepEqual(byGroup.stdout, groupText);
    assertFails(await runTool('nfs-cat', [url('group.txt', u2000)]), 'nfs-cat group.txt as 2000:2000', DENIED);

    // The share root is 0777: uid 1000 may create there, and owns what it creates.
    const rattr = (await raw.getattr(root)).attrs;
    assert.deepEqual([rattr?.mode, rattr?.uid, rattr?.gid], [0o777, 0, 0]);
    assertOk(await runTool('nfs-cp', [payload, url('made-by-1000.txt', u1000)]), 'nfs-cp to the share root as uid 1000');
    const made = await raw.lookup(root, 'made-by-1000.txt');
    assert.equal(made.status, NfsStat.OK);
    assert.deepEqual([made.attrs?.uid, made.attrs?.gid, made.attrs?.size], [1000, 1000, 8]);
    const lsRoot = await runTool('nfs-ls', [url('', u1000)]);
    assertOk(lsRoot, 'nfs-ls as uid 1000');
    assert.match(lsRoot.stdout.toString(), /^-\S+ +1 +1000 +1000 +8 made-by-1000\.txt$/m);
    const back = await runTool('nfs-cat', [url('made-by-1000.txt', u1000)]);
    assertOk(back, 'nfs-cat made-by-1000.txt');
    assert.equal(back.stdout.toString(), 'payload\n');
  });

  test('a restart on the same data directory serves again and leaks no old data into new files', { timeout: TEST_TIMEOUT_MS }, async () => {
    // Not a persistence test: the default metadata store is in memory.
    raw.close();
    await srv.stop();
    assert.notEqual(srv.child.exitCode ?? srv.child.signalCode, null);
    srv = await startDittofs({ dataDir });
    raw = await NfsClient.connect(srv.nfsPort, authSys(0, 0));
    root = await raw.mount('/export');

    // A new file extended by SETATTR reads as zeros even though the data directory holds the
    // previous run's 256 MiB of blocks.
    const c = await raw.create(root, 'sparse.bin', { mode: 0o644 });
    assert.equal(c.status, NfsStat.OK);
    assert.ok(c.fh);
    assert.equal((await raw.setattr(c.fh, { size: 8 * MiB })).status, NfsStat.OK);
    for (const off of [0, 4 * MiB - 10, 8 * MiB - 4096]) {
      const r = await raw.read(c.fh, off, 4096);
      assert.equal(r.status, NfsStat.OK);
      assert.equal(r.data.length, 4096);
      assert.ok(r.data.equals(Buffer.alloc(4096)), `non-zero bytes at ${off}`);
    }

    const data = randomBytes(3 * MiB + 17);
    const src = path.join(tmp, 'after-restart.bin');
    await writeFile(src, data);
    assertOk(await runTool('nfs-cp', [src, url('after-restart.bin')]), 'nfs-cp in after restart');
    const out = path.join(tmp, 'after-restart.out');
    assertOk(await runTool('nfs-cp', [url('after-restart.bin'), out]), 'nfs-cp out after restart');
    assert.deepEqual(await readFile(out), data);
    assert.equal(srv.child.exitCode, null);
  });
});
