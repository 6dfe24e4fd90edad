// Apple's AAPL create context: the server query macOS puts in its first CREATE on a share (the
// layout Apple's SMB client and Samba's vfs_fruit use; all little-endian). Request data:
// CommandCode u32 (1 = server query), Reserved u32, RequestBitmap u64, ClientCapabilities u64.
// Reply data: CommandCode u32, Reserved u32, ReplyBitmap u64, then in bitmap order ServerCaps u64,
// VolumeCaps u64, and the model info (Reserved u32, ModelStringLength u32, UTF-16LE model).
//
// What is claimed is what the server does (smb-client-notes.md, macOS): UNIX_BASED (POSIX
// semantics underneath: a gap past the end of a file reads as zeros), CASE_SENSITIVE (names are
// compared byte for byte) and FULL_SYNC (FLUSH is an fsync of data and metadata, so F_FULLFSYNC
// and Time Machine can rely on it). READ_DIR_ATTR (Finder data overloaded in directory listings),
// OSX_COPYFILE (whole-file COPYCHUNK) and RESOLVE_ID are not claimed: macOS then asks for that
// information the standard way (AFP_AfpInfo streams, QUERY_INFO, client-side copy).
import type { CreateContext, CreateRequest } from './messages.js';
import { NtStatus, SmbStatusError } from './status.js';

export const AAPL_SERVER_QUERY = 1;
/** RequestBitmap / ReplyBitmap bits. */
export const AaplBitmap = Object.freeze({ SERVER_CAPS: 0x1, VOLUME_CAPS: 0x2, MODEL_INFO: 0x4 } as const);
/** ServerCapabilities bits. */
export const AaplServerCaps = Object.freeze({ READ_DIR_ATTR: 0x1, OSX_COPYFILE: 0x2, UNIX_BASED: 0x4, NFS_ACE: 0x8 } as const);
/** VolumeCapabilities bits. */
export const AaplVolumeCaps = Object.freeze({ RESOLVE_ID: 0x1, CASE_SENSITIVE: 0x2, FULL_SYNC: 0x4 } as const);

const SERVER_CAPS = AaplServerCaps.UNIX_BASED;
const VOLUME_CAPS = AaplVolumeCaps.CASE_SENSITIVE | AaplVolumeCaps.FULL_SYNC;
/** What Finder shows as the server's model (its icon falls back to a generic server). */
export const AAPL_MODEL = 'DittoFS';
const MODEL = Buffer.from(AAPL_MODEL, 'utf16le');

/**
 * The AAPL reply for a CREATE that carries an AAPL server query, or null when it carries none. A
 * query of the wrong size or with another command fails the CREATE with INVALID_PARAMETER (as
 * smbd does), before anything is opened.
 */
export function aaplReply(req: CreateRequest): CreateContext | null {
  const ctx = req.contexts.find((c) => c.name === 'AAPL');
  if (!ctx) return null;
  const d = ctx.data;
  if (d.length !== 24) throw new SmbStatusError(NtStatus.INVALID_PARAMETER, `AAPL context of ${d.length} bytes`);
  if (d.readUInt32LE(0) !== AAPL_SERVER_QUERY) throw new SmbStatusError(NtStatus.INVALID_PARAMETER, 'AAPL command is not a server query');
  // Only the bits known here are answered (the reply carries exactly what its bitmap says).
  const bitmap = Number(d.readBigUInt64LE(8) & BigInt(AaplBitmap.SERVER_CAPS | AaplBitmap.VOLUME_CAPS | AaplBitmap.MODEL_INFO));
  const size =
    16 +
    (bitmap & AaplBitmap.SERVER_CAPS ? 8 : 0) +
    (bitmap & AaplBitmap.VOLUME_CAPS ? 8 : 0) +
    (bitmap & AaplBitmap.MODEL_INFO ? 8 + MODEL.length : 0);
  const out = Buffer.alloc(size);
  out.writeUInt32LE(AAPL_SERVER_QUERY, 0);
  out.writeBigUInt64LE(BigInt(bitmap), 8);
  let at = 16;
  if (bitmap & AaplBitmap.SERVER_CAPS) at = out.writeBigUInt64LE(BigInt(SERVER_CAPS), at);
  if (bitmap & AaplBitmap.VOLUME_CAPS) at = out.writeBigUInt64LE(BigInt(VOLUME_CAPS), at);
  if (bitmap & AaplBitmap.MODEL_INFO) {
    out.writeUInt32LE(MODEL.length, at + 4);
    MODEL.copy(out, at + 8);
  }
  return { name: 'AAPL', data: out };
}
