// Named streams of a file (SMB's file:name:$DATA; macOS keeps AFP_AfpInfo and resource forks in
// them). Each is an inode of its own in the metadata store, reached from its file only (no
// directory entry: NFS never sees it), whose data goes through the same block store and WAL as any
// file's, under its own inode id. It is freed with its file. Streams take their file's owner, group
// and mode when made, and again whenever the file's change (streamsFollow): the vfs checks each READ,
// WRITE and truncate of a stream against the stream's inode, which must say what the file says now.
// The file's permissions decide who may list, make and remove them.
import { KeyedSerial } from '../keyed-serial.js';
import type { MetadataStore, StreamEntry } from '../meta/store.js';
import { VfsError } from './errors.js';
import type { FileService, Share } from './service.js';
import type { Identity, Inode } from './types.js';
import { FileType, nowTimespec } from './types.js';

/** Longest stream name, in bytes (as a file name). */
export const STREAM_NAME_MAX = 255;

function checkStreamName(name: Buffer): void {
  if (name.length === 0) throw new VfsError('INVAL', 'empty stream name');
  if (name.length > STREAM_NAME_MAX) throw new VfsError('NAMETOOLONG', 'stream name longer than 255 bytes');
}

export interface StreamOpen {
  share: Share;
  file: Inode;
  /** The stream's inode and vfs handle (READ, WRITE and setattr size work on it as on a file). */
  stream: Inode;
  handle: Buffer;
  created: boolean;
}

/** The named streams of the file behind `fileHandle`. */
export async function listStreams(fs: FileService, fileHandle: Buffer, cred: Identity): Promise<{ file: Inode; streams: StreamEntry[] }> {
  const { share, inode } = await fs.resolve(fileHandle);
  fs.identity(share, cred);
  return { file: inode, streams: await share.meta.listStreams(inode.id) };
}

/**
 * Opens stream `name` of a file, making it (empty) when `create` and it does not exist. Making
 * one needs write permission on the file, unless `madeNow`: the caller made the file in the same
 * request (SMB CREATE of "file:stream"), and its creator may write it whatever its mode (a new
 * file's mode follows the DACL it inherits, which need not give its owner write); the share must
 * still take changes.
 */
export async function openStream(
  fs: FileService,
  fileHandle: Buffer,
  name: Buffer,
  cred: Identity,
  create: boolean,
  madeNow = false,
): Promise<StreamOpen | null> {
  checkStreamName(name);
  const { share, inode: file } = await fs.resolve(fileHandle);
  const id = fs.identity(share, cred);
  const existing = await share.meta.lookupStream(file.id, name);
  if (existing) return { share, file, stream: existing, handle: fs.handleOf(share, existing), created: false };
  if (!create) return null;
  if (madeNow) fs.writer(share, cred);
  else if (!fs.accessBits(share, file, id).write) throw new VfsError('ACCES', 'no write permission on the file');
  const init = {
    type: FileType.REG,
    mode: file.mode & 0o7777,
    uid: file.uid,
    gid: file.gid,
    rdevMajor: 0,
    rdevMinor: 0,
    target: null,
    createVerifier: null,
    size: 0,
  };
  const stream = await share.meta.createStream(file.id, name, init, nowTimespec());
  return { share, file, stream, handle: fs.handleOf(share, stream), created: true };
}

/**
 * After a chown, chgrp or chmod of `file` (vfs setattr): its streams take its owner, group and
 * permission bits, so that a stream is read and written by whom the file is now, not by whom it was
 * when the stream was made (a file given to another user, or opened to others by a chmod, refused
 * them its streams' data; one closed to others by a chmod still let an open of its stream write).
 * One read of the stream list; nothing more for a file without streams.
 */
export function streamsFollow(share: Share, file: Inode): Promise<void> {
  let serial = following.get(share.meta);
  if (serial === undefined) following.set(share.meta, (serial = new KeyedSerial<number>()));
  // One at a time per file, each with the file as it is when it runs: two chmods at once leave the
  // streams as the file ends, whichever of the two stored its streams' change last.
  return serial.run(file.id, async () => {
    const streams = await share.meta.listStreams(file.id);
    if (streams.length === 0) return;
    const now = (await share.meta.getInode(file.id)) ?? file;
    const mode = now.mode & 0o7777;
    for (const s of streams) {
      if (s.inode.uid === now.uid && s.inode.gid === now.gid && (s.inode.mode & 0o7777) === mode) continue;
      await share.meta.setAttr(s.inode.id, { uid: now.uid, gid: now.gid, mode });
    }
  });
}

/** streamsFollow's runs, one at a time per file of a metadata store. */
const following = new WeakMap<MetadataStore, KeyedSerial<number>>();

/** Removes stream `name` of a file and frees its data. */
export async function removeStream(fs: FileService, fileHandle: Buffer, name: Buffer, cred: Identity): Promise<void> {
  const { share, inode: file } = await fs.resolve(fileHandle);
  const id = fs.identity(share, cred);
  if (!fs.accessBits(share, file, id).write) throw new VfsError('ACCES', 'no write permission on the file');
  const gone = await share.meta.removeStream(file.id, name, nowTimespec());
  await share.data.free(gone.id);
}
