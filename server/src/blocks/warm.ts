// Reading local files ahead of a sequential read, so that the reads in ranges that follow find them
// in the kernel's page cache instead of waiting on the device. The kernel reads ahead within one
// file and stops at its end: a file stored as a run of block files (a filesystem block store, the
// disk read cache) would wait for the device at the start of every block. Blocks written with
// O_DIRECT are not in the page cache at all, so a read right after the write meets the device for
// each of them. One file at a time, on the thread pool, into one scratch buffer nobody reads.
import type { FileHandle } from 'node:fs/promises';
import type { ReadHandles } from './read-handles.js';

/** Files waiting at most, files remembered as read ahead, and bytes read per call. */
const QUEUED = 8;
const KEPT = 32;
const CHUNK = 4 * 1024 * 1024;

export interface WarmRequest {
  /** Bytes to read (the file's size when known); else up to the end of the file. */
  size?: number;
  /** Asked again when the file's turn comes: false skips it (dropped meanwhile). */
  stillWanted?: () => boolean;
  /** ReadHandles' check of a newly opened handle (see ReadHandles.use). */
  check?: (fh: FileHandle) => Promise<boolean>;
}

interface Job extends WarmRequest {
  file: string;
}

export class PageCacheWarmer {
  /** Files waiting, the first being read. */
  private readonly queue: Job[] = [];
  /** The last files read ahead (or queued), oldest first: each is read ahead once while here. */
  private readonly warmed = new Set<string>();
  private scratch: Buffer | null = null;
  private closed = false;
  /** The loop while files are queued, else null. */
  private running: Promise<void> | null = null;
  /** Files read ahead (tests, metrics). */
  warms = 0;

  /** `handles`: the caller's kept read handles, so that the reads that follow find the file open. */
  constructor(private readonly handles: ReadHandles) {}

  /** Queues `file` to be read ahead, unless it was lately, or the queue is full, or after close(). */
  warm(file: string, req: WarmRequest = {}): void {
    if (this.closed || this.warmed.has(file) || this.queue.length >= QUEUED) return;
    this.warmed.add(file);
    if (this.warmed.size > KEPT) this.warmed.delete(this.warmed.values().next().value!);
    this.queue.push({ file, ...req });
    this.kick();
  }

  /** Starts the loop unless it runs. It may finish at once (nothing wanted): cleared only after. */
  private kick(): void {
    if (this.running !== null || this.queue.length === 0) return;
    this.running = this.next().finally(() => {
      this.running = null;
      this.kick();
    });
  }

  /** Forgets that `file` was read ahead: a file written again under the name is read ahead again. */
  forget(file: string): void {
    this.warmed.delete(file);
  }

  private async next(): Promise<void> {
    while (this.queue.length > 0) {
      const job = this.queue[0]!;
      try {
        if (job.stillWanted?.() ?? true) {
          const read = await this.handles.use(job.file, (fh) => this.readThrough(fh, job.size), job.check);
          if (read !== null) this.warms++;
        }
      } catch {
        // Only a hint: the reads themselves find out what is wrong.
      }
      this.queue.shift();
    }
  }

  private async readThrough(fh: FileHandle, size: number | undefined): Promise<void> {
    this.scratch ??= Buffer.allocUnsafe(CHUNK);
    for (let pos = 0; size === undefined || pos < size; pos += CHUNK) {
      const want = size === undefined ? CHUNK : Math.min(CHUNK, size - pos);
      const { bytesRead } = await fh.read(this.scratch, 0, want, pos);
      if (bytesRead < want || this.closed) break;
    }
  }

  /** Resolves once nothing is queued (tests). */
  async done(): Promise<void> {
    await this.running;
  }

  /** Nothing more is read ahead: what is queued is skipped, the file being read stops at its next chunk. */
  close(): void {
    this.closed = true;
    this.queue.splice(1);
  }
}
