// A directory a user may read but not search (r without x: 0744 for others) lists names only, over
// SMB as over NFS: smbclient's `ls` (FileIdBothDirectoryInformation) shows the other user each
// entry's name, with no size, time or type, as `ls` on Linux shows the names and `ls -l` fails.
// The owner, who may search it, sees them all. NFS makes the files and sets the modes.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { smbclient } from '../helpers/run.js';
import { startBothProtocols, type BothProtocols } from '../helpers/smb-nfs.js';

const PASSWORD = 'list-no-search-Passw0rd-1';
const alice = { username: 'alice', password: PASSWORD, uid: 1000 };
const bob = { username: 'bob', password: PASSWORD, uid: 2000 };

/**
 * The entries of smbclient's `ls` output by name: attribute letters and size. A line is
 * `  NAME  ATTRS  SIZE  DATE`, ATTRS empty or letters (D, N, A, H...).
 */
function entries(out: string): Map<string, { attrs: string; size: number }> {
  const m = new Map<string, { attrs: string; size: number }>();
  for (const line of out.split('\n')) {
    const hit = /^ {2}(\S+)\s+([A-Z]*)\s+(\d+)\s+\w{3} \w{3} /.exec(line);
    if (hit) m.set(hit[1]!, { attrs: hit[2]!, size: Number(hit[3]) });
  }
  return m;
}

describe('SMB listing of a directory the caller may read but not search', { timeout: 120_000 }, () => {
  let both: BothProtocols;
  before(async () => {
    both = await startBothProtocols([alice, bob]);
  });
  after(async () => {
    await both?.close();
  });

  it("gives another user the names only; the owner sees each entry's size and type", async () => {
    const { nfs, root } = both;
    const dir = (await nfs.mkdir(root, 'listable-only', { mode: 0o755 })).fh!;
    await nfs.writeFile(dir, 'secret', Buffer.from('0123456789'), { mode: 0o644 });
    assert.equal((await nfs.mkdir(dir, 'sub', { mode: 0o755 })).status, 0);
    assert.equal((await nfs.setattr(dir, { mode: 0o744 })).status, 0);

    const ls = async (who: typeof alice) => {
      const r = await smbclient(both.srv.smbPort, who.username, who.password, 'cd listable-only; ls');
      assert.equal(r.code, 0, `smbclient ls as ${who.username}: ${r.stdout}${r.stderr}`);
      return entries(r.stdout);
    };
    const asAlice = await ls(alice);
    assert.equal(asAlice.get('secret')?.size, 10, `alice: ${JSON.stringify([...asAlice])}`);
    assert.match(asAlice.get('sub')?.attrs ?? '', /D/);

    const asBob = await ls(bob);
    assert.deepEqual([...asBob.keys()].sort(), [...asAlice.keys()].sort(), 'the same names');
    assert.deepEqual(asBob.get('secret'), { attrs: 'N', size: 0 }, `bob: ${JSON.stringify([...asBob])}`);
    assert.deepEqual(asBob.get('sub'), { attrs: 'N', size: 0 }, 'not even the directory bit');
    // What he cannot list with attributes he cannot open either.
    const get = await smbclient(both.srv.smbPort, bob.username, bob.password, 'cd listable-only; get secret /dev/null');
    assert.match(get.stdout + get.stderr, /NT_STATUS_ACCESS_DENIED/);
  });
});
