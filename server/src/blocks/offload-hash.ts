// SHA-256 for the S3 client's request signing, with large payloads hashed on a worker thread.
//
// Signature V4 signs a hash of the body: for a 4 MiB block that is several milliseconds of the main
// thread per upload, about a fifth of its time while writing to S3. This hash constructor (the S3
// client's `sha256` option) hands a large payload that lives in shared memory (the block buffers are
// SharedArrayBuffer-backed) to a worker, which reads it in place; everything else (HMACs of the
// signing key, small bodies, ordinary buffers) is hashed at once, as before. The caller must leave
// the payload alone until the digest resolves, which the client does: it signs, then sends.
import { createHash, createHmac } from 'node:crypto';
import { Worker } from 'node:worker_threads';

type SourceData = string | ArrayBuffer | ArrayBufferView;

/** Payloads at least this large are worth a round trip to the worker. */
const OFFLOAD_MIN_BYTES = 256 * 1024;

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
parentPort.on('message', ({ id, buffer, offset, length }) => {
  try {
    const digest = createHash('sha256').update(new Uint8Array(buffer, offset, length)).digest();
    parentPort.postMessage({ id, digest });
  } catch (err) {
    parentPort.postMessage({ id, error: String(err && err.message || err) });
  }
});
`;

interface Pending {
  resolve: (d: Uint8Array) => void;
  reject: (e: Error) => void;
}

/** The one hashing worker of the process: started on first use, never keeping the process alive. */
class HashWorker {
  private worker: Worker | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  /** Digests the worker delivered (for tests). */
  delivered = 0;

  private start(): Worker {
    const w = new Worker(WORKER_SOURCE, { eval: true });
    w.on('message', (m: { id: number; digest?: Uint8Array; error?: string }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      // Idle, the worker must not keep the process alive; busy, it must (someone awaits it).
      if (this.pending.size === 0) w.unref();
      if (m.digest) {
        this.delivered++;
        p.resolve(new Uint8Array(m.digest));
      } else p.reject(new Error(`hashing worker: ${m.error ?? 'no digest'}`));
    });
    const fail = (err: Error): void => {
      if (this.worker === w) this.worker = null;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`hashing worker exited with code ${code}`)));
    // After the listeners: adding a 'message' listener refs the worker again.
    w.unref();
    return w;
  }

  sha256(view: Uint8Array): Promise<Uint8Array> {
    this.worker ??= this.start();
    const id = this.nextId++;
    const w = this.worker;
    return new Promise<Uint8Array>((resolve, reject) => {
      if (this.pending.size === 0) w.ref();
      this.pending.set(id, { resolve, reject });
      w.postMessage({ id, buffer: view.buffer, offset: view.byteOffset, length: view.byteLength });
    });
  }
}

const hashWorker = new HashWorker();

/** How many digests the worker thread has computed so far (tests check that offloading happens). */
export function offloadedDigests(): number {
  return hashWorker.delivered;
}

function bytesOf(data: SourceData, encoding?: string): Uint8Array {
  if (typeof data === 'string') return Buffer.from(data, (encoding as BufferEncoding | undefined) ?? 'utf8');
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return new Uint8Array(data);
}

/** A `HashConstructor` for SHA-256 (HMAC-SHA-256 with a secret), as the AWS SDK expects. */
export class OffloadedSha256 {
  private chunks: Uint8Array[] = [];

  constructor(private readonly secret?: SourceData) {}

  update(data: SourceData, encoding?: string): void {
    this.chunks.push(bytesOf(data, encoding));
  }

  async digest(): Promise<Uint8Array> {
    const chunks = this.chunks;
    this.chunks = [];
    const only = chunks.length === 1 ? chunks[0]! : null;
    if (this.secret === undefined && only && only.byteLength >= OFFLOAD_MIN_BYTES && only.buffer instanceof SharedArrayBuffer) {
      try {
        return await hashWorker.sha256(only);
      } catch {
        // The worker is gone: hash here (a new worker starts with the next payload).
      }
    }
    const h = this.secret === undefined ? createHash('sha256') : createHmac('sha256', bytesOf(this.secret));
    for (const c of chunks) h.update(c);
    return new Uint8Array(h.digest());
  }

  reset(): void {
    this.chunks = [];
  }
}
