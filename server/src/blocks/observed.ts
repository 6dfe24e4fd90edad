// A block store as the server runs it: every call is a CLIENT span when tracing is on (`s3.put`,
// `filesystem.get`, ...; a child of the NFS call or background work that made it), and every
// failure is counted by operation. The store itself stays unaware of either.
import type { Attributes } from '@opentelemetry/api';
import { failSpan, SpanKind, startSpan, traced, tracingEnabled } from '../obs/tracing.js';
import type { BlockStore, BlockStoreCapacity, PutHints, StoredObject } from './store.js';

export type BlockStoreOperation = 'get' | 'put' | 'delete' | 'list';

export interface BlockStoreObserver {
  /** The store's name in the config (span attribute). */
  name: string;
  /** Called once per failed call (after the store's own retries). */
  onError?: (operation: BlockStoreOperation, err: unknown) => void;
}

class ObservedBlockStore implements BlockStore {
  private readonly spanNames: Readonly<Record<BlockStoreOperation, string>>;
  /** Present exactly when the inner store has it (a local engine). */
  readonly readInto?: BlockStore['readInto'];

  constructor(
    private readonly inner: BlockStore,
    private readonly obs: BlockStoreObserver,
  ) {
    const k = inner.kind;
    this.spanNames = { get: `${k}.get`, put: `${k}.put`, delete: `${k}.delete`, list: `${k}.list` };
    const readInto = inner.readInto?.bind(inner);
    if (readInto) {
      this.readInto = (key, offset, target, targetStart, length) =>
        this.run('get', key, length, () => readInto(key, offset, target, targetStart, length));
    }
  }

  get kind(): string {
    return this.inner.kind;
  }

  open(): Promise<void> {
    return this.inner.open();
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  capacity(): Promise<BlockStoreCapacity> {
    return this.inner.capacity();
  }

  private attributes(key: string, bytes?: number): Attributes {
    const a: Attributes = { 'dittofs.block_store': this.obs.name, 'dittofs.block_store.type': this.inner.kind, 'dittofs.block_key': key };
    if (bytes !== undefined) a['dittofs.bytes'] = bytes;
    return a;
  }

  private run<T>(op: BlockStoreOperation, key: string, bytes: number | undefined, fn: () => Promise<T>): Promise<T> {
    const p = tracingEnabled() ? traced(this.spanNames[op], SpanKind.CLIENT, this.attributes(key, bytes), fn) : fn();
    const onError = this.obs.onError;
    return onError === undefined
      ? p
      : p.catch((err: unknown) => {
          onError(op, err);
          throw err;
        });
  }

  put(key: string, data: Buffer, hints?: PutHints): Promise<void> {
    return this.run('put', key, data.length, () => this.inner.put(key, data, hints));
  }

  get(key: string, offset?: number, length?: number): Promise<Buffer | null> {
    return this.run('get', key, length, () => this.inner.get(key, offset, length));
  }

  delete(key: string): Promise<void> {
    return this.run('delete', key, undefined, () => this.inner.delete(key));
  }

  async *list(prefix: string): AsyncIterable<StoredObject> {
    const span = startSpan(this.spanNames.list, SpanKind.CLIENT, this.attributes(prefix));
    let objects = 0;
    try {
      for await (const o of this.inner.list(prefix)) {
        objects++;
        yield o;
      }
    } catch (err) {
      if (span) failSpan(span, err);
      this.obs.onError?.('list', err);
      throw err;
    } finally {
      if (span) {
        span.setAttribute('dittofs.objects', objects);
        span.end();
      }
    }
  }
}

/** Wraps a block store so that its calls are traced and its failures counted. */
export function observeBlockStore(store: BlockStore, obs: BlockStoreObserver): BlockStore {
  return new ObservedBlockStore(store, obs);
}
