// Writing a new file with O_DIRECT: from the caller's buffers straight to the device, with no copy
// into the page cache. On the VMs this runs on, a copy into fresh page-cache pages cost about
// 13 ms per MiB while memory was cold (75 MiB/s, most of a write's CPU); block objects and the
// read cache's entries are not read back soon, and nothing else in the process wants those pages.
import { constants as fsc } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { isPageAligned } from '../wire/buffer-pool.js';

/** O_DIRECT needs the buffers' addresses, their lengths and the offset aligned to the device's blocks. */
export const DIRECT_ALIGN = 4096;
export const O_DIRECT = (fsc as { O_DIRECT?: number }).O_DIRECT ?? 0;

/**
 * How writeDirect went: `written`; `refused` when the volume does not take O_DIRECT at all (tmpfs:
 * do not ask again); `unaligned` when a buffer or length is not aligned. Either of the last two
 * leaves nothing behind but `file` (created or empty), to write again through the page cache.
 */
export type DirectWrite = 'written' | 'refused' | 'unaligned';

/**
 * True when `bufs` may be written with O_DIRECT: lengths in whole pages, memory from a page-aligned
 * pool (BufferPool's shared buffers of a multiple of 64 KiB; isPageAligned). Anything else would
 * be refused by the kernel only once the file is open (writeDirect then says `unaligned`).
 */
export function directBuffers(bufs: readonly Buffer[]): boolean {
  return O_DIRECT !== 0 && bufs.length > 0 && bufs.every((b) => b.length > 0 && b.length % DIRECT_ALIGN === 0 && isPageAligned(b));
}

/** Writes `bufs` one after another as the new file `file` with O_DIRECT; fdatasync when `sync`. */
export async function writeDirect(file: string, bufs: readonly Buffer[], sync: boolean): Promise<DirectWrite> {
  let fh: FileHandle;
  try {
    fh = await open(file, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC | O_DIRECT, 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
    return 'refused';
  }
  try {
    let pos = 0;
    for (const b of bufs) {
      let off = 0;
      while (off < b.length) {
        const { bytesWritten } = await fh.write(b, off, b.length - off, pos + off);
        if (bytesWritten <= 0) throw new Error(`write of ${file} made no progress`);
        off += bytesWritten;
      }
      pos += b.length;
    }
    if (sync) await fh.datasync();
  } catch (e) {
    // An unaligned buffer (not from a page-aligned pool): written through the page cache instead.
    if ((e as NodeJS.ErrnoException).code === 'EINVAL') return 'unaligned';
    throw e;
  } finally {
    await fh.close();
  }
  return 'written';
}
