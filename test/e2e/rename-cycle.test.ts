// RENAME of a directory into its own subtree over real NFS, against a server process with its
// default (embedded, persistent) metadata store. The subtree is deeper than the 4,096 levels the
// server's walk used to give up at (leaving a cycle that no client could reach or remove): the move
// must fail with NFS3ERR_INVAL and change nothing.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { NfsOps } from '../helpers/nfs-ops.js';
import { authSys, NfsStat } from '../helpers/rpc-client.js';
import { startDittofs, type DittofsProcess } from '../helpers/server.js';

const DEPTH = 4100;

describe('RENAME never builds a directory cycle', { timeout: 15 * 60_000 }, () => {
  let srv: DittofsProcess;
  let nfs: NfsOps;

  before(async () => {
    // The control plane plays no part here: keep it in memory (a faster start).
    srv = await startDittofs({ env: { DITTOFS_DATABASE__TYPE: 'memory' } });
    nfs = await NfsOps.open(srv.nfsPort, authSys(0, 0));
  });

  after(async () => {
    nfs?.close();
    await srv?.stop();
  });

  test(`moving the top of ${DEPTH} nested directories into the bottom is NFS3ERR_INVAL`, { timeout: 14 * 60_000 }, async (t) => {
    const root = await nfs.mount('/export');
    const top = await nfs.mkdir(root, 'top');
    assert.equal(top.status, NfsStat.OK);
    const started = Date.now();
    let aboveBottom = root;
    let bottom = top.fh!;
    for (let i = 0; i < DEPTH; i++) {
      const d = await nfs.mkdir(bottom, `d${i}`);
      assert.equal(d.status, NfsStat.OK, `MKDIR at depth ${i + 1}`);
      aboveBottom = bottom;
      bottom = d.fh!;
    }
    t.diagnostic(`${DEPTH} MKDIRs in ${Date.now() - started} ms`);

    assert.equal((await nfs.rename(root, 'top', bottom, 'top')).status, NfsStat.INVAL, 'top into the bottom');
    assert.equal((await nfs.rename(root, 'top', top.fh!, 'top')).status, NfsStat.INVAL, 'top into itself');
    assert.equal((await nfs.rename(top.fh!, 'd0', bottom, 'd0')).status, NfsStat.INVAL, 'a middle directory into the bottom');
    // Nothing moved: the top is still in the root, the bottom is still empty.
    assert.deepEqual((await nfs.lookup(root, 'top')).fh, top.fh);
    assert.equal((await nfs.lookup(bottom, 'top')).status, NfsStat.NOENT);

    // The chain is intact: the bottom can be taken out of it and removed like any directory.
    assert.equal((await nfs.rename(aboveBottom, `d${DEPTH - 1}`, root, 'bottom')).status, NfsStat.OK, 'the bottom up to the root');
    assert.equal((await nfs.rmdir(root, 'bottom')).status, NfsStat.OK);
    assert.equal((await nfs.rename(root, 'top', top.fh!, 'x')).status, NfsStat.INVAL, 'still refused after the chain changed');
  });
});
