// Fault: the volume of the embedded metadata database runs full. The whole data directory (embedded
// metadata, WAL, control database, block store) is on a real 64 MiB tmpfs (the tests run as root),
// which the test fills to the last byte while a real server serves it to NFS and SMB clients:
//   - new names (NFS CREATE and MKDIR, SMB CREATE) are refused as "no space": NFS3ERR_NOSPC and
//     STATUS_DISK_FULL, which clients report as a full disk, never as a server fault or an I/O error;
//   - a refused name is not half made: it does not exist afterwards, and what existed still does;
//   - a REST change (a new user: the control database is on the same volume) answers 507
//     insufficient-storage, and reads of the control plane still work;
//   - once space is freed, the same calls succeed without a restart;
//   - the server says in its log that the metadata store's volume is full (once, not per refusal),
//     and logs no unexpected failure.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { apiRequest } from '../helpers/api.js';
import { fillVolume } from '../helpers/files.js';
import { NfsStat } from '../helpers/rpc-client.js';
import { statusName } from '../helpers/nfs-ops.js';
import { runTool } from '../helpers/run.js';
import { startBothProtocols, type BothProtocols } from '../helpers/smb-nfs.js';
import { NtStatus } from '../../server/src/smb2/status.js';
import { DISK_FULL_WARN_EVERY_MS } from '../../server/src/stores.js';
import { mountTmpfs } from './support.js';

const USER = { username: 'fuller', password: 'full-disk-pw-1', uid: 4301 };
/** New names tried while the volume is full: SQLite may find room in its log for the first few. */
const TRIES = 200;

const ntName = (s: number): string => `0x${s.toString(16).padStart(8, '0')}`;

describe('fault: the metadata database volume runs full', { timeout: 5 * 60_000 }, () => {
  let work = '';
  let both: BothProtocols | null = null;
  let mounted = '';
  after(async () => {
    await both?.close().catch(() => undefined);
    if (mounted) await runTool('umount', ['-l', mounted], { timeoutMs: 60_000 });
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('NFS3ERR_NOSPC, STATUS_DISK_FULL and HTTP 507, nothing half made, and all work again once there is room', async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'dittofs-meta-full-'));
    const vol = path.join(work, 'volume');
    await mountTmpfs(vol, '64m');
    mounted = vol;
    both = await startBothProtocols([USER], { dataDir: path.join(vol, 'data'), keepDataDir: true });
    const { nfs, root, srv } = both;
    const smb = await both.smb();

    const kept = await nfs.create(root, 'kept.txt');
    assert.equal(kept.status, NfsStat.OK, `CREATE kept.txt: ${statusName(kept.status)}`);

    // Filled again before each check: the server may free a little meanwhile (a spare WAL segment
    // it was writing when the volume filled, SQLite truncating its log).
    const fillers: string[] = [];
    const topUp = async () => {
      fillers.push(await fillVolume(vol, `filler-${fillers.length}`));
    };

    const fullSince = Date.now();
    // NFS CREATE: refused as no space (after the few SQLite may still find room for), never another error.
    let refused = '';
    for (let i = 0; i < TRIES && refused === ''; i++) {
      await topUp();
      const r = await nfs.create(root, `new-${i}.txt`);
      if (r.status === NfsStat.OK) continue;
      assert.equal(statusName(r.status), 'NFS3ERR_NOSPC', `CREATE new-${i}.txt on a full volume`);
      refused = `new-${i}.txt`;
    }
    assert.notEqual(refused, '', `one of ${TRIES} CREATEs on a full volume was refused`);
    await topUp();
    const mk = await nfs.mkdir(root, 'new-dir');
    assert.equal(statusName(mk.status), 'NFS3ERR_NOSPC', 'MKDIR on a full volume');
    await topUp();
    const smbNew = await smb.createStatus('smb-new.txt');
    assert.equal(ntName(smbNew), ntName(NtStatus.DISK_FULL), 'SMB CREATE of a new file on a full volume');

    await topUp();
    const newUser = { username: 'late', password: 'late-user-pw-1', uid: 4302, gid: 4302, must_change_password: false };
    const apiNew = await apiRequest(both.api.base, 'POST', '/api/v1/users', newUser, both.api.token);
    assert.equal(apiNew.status, 507, `POST /api/v1/users on a full volume: ${JSON.stringify(apiNew.body)}`);
    assert.equal((apiNew.body as { type?: string }).type, 'urn:dittofs:problem:insufficient-storage');
    const users = await apiRequest(both.api.base, 'GET', '/api/v1/users', undefined, both.api.token);
    assert.equal(users.status, 200, 'the control plane still reads');
    assert.ok(!JSON.stringify(users.body).includes('"late"'), 'the refused user was not made');

    // Nothing half made; what was there still is.
    assert.equal(statusName((await nfs.lookup(root, refused)).status), 'NFS3ERR_NOENT', `${refused} does not exist`);
    assert.equal(statusName((await nfs.lookup(root, 'new-dir')).status), 'NFS3ERR_NOENT', 'new-dir does not exist');
    assert.equal(statusName((await nfs.lookup(root, 'smb-new.txt')).status), 'NFS3ERR_NOENT', 'smb-new.txt does not exist');
    assert.equal(statusName((await nfs.lookup(root, 'kept.txt')).status), 'NFS3ERR_OK', 'kept.txt is still there');

    // Room again: the same calls work, without a restart.
    for (const f of fillers) await rm(f);
    assert.equal(statusName((await nfs.create(root, refused)).status), 'NFS3ERR_OK', `CREATE ${refused} once there is room`);
    assert.equal(statusName((await nfs.mkdir(root, 'new-dir')).status), 'NFS3ERR_OK', 'MKDIR once there is room');
    const apiAgain = await apiRequest(both.api.base, 'POST', '/api/v1/users', newUser, both.api.token);
    assert.equal(apiAgain.status, 201, `POST /api/v1/users once there is room: ${JSON.stringify(apiAgain.body)}`);
    const opened = await smb.create('smb-new.txt');
    await smb.close(opened.fileId);

    const unexpected = srv
      .output()
      .split('\n')
      .filter((l) => /failed unexpectedly|INTERNAL_ERROR/.test(l));
    assert.deepEqual(unexpected, [], 'no unexpected failure logged');
    // The one who can free space is told, once for the whole episode (a line a minute at most).
    const told = srv
      .output()
      .split('\n')
      .filter((l) => /metadata store \S+: its volume is full/.test(l));
    // At most one more a minute: a slow machine may keep the volume full for longer than that.
    const most = 1 + Math.floor((Date.now() - fullSince) / DISK_FULL_WARN_EVERY_MS);
    assert.ok(
      told.length >= 1 && told.length <= most,
      `1 to ${most} "volume is full" warnings from the metadata store, got ${told.length}:\n${told.join('\n')}`,
    );
    assert.match(told[0]!, /"refused":1\b/, 'the first refusal is told at once');
  });
});
