import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { MemoryMetadataStore } from '../meta/memory.js';
import { BlockCache } from './cache.js';
import { MemoryBlockStore } from './memory.js';
import { BlockService, DirtyBudget } from './service.js';

const BS = 1024;

function setup(maxDirty = 64 * BS) {
  const meta = new MemoryMetadataStore();
  const store = new MemoryBlockStore();
  const svc = new BlockService(store, meta, {
    keyPrefix: 't',
    blockSize: BS,
    budget: new DirtyBudget(maxDirty),
    cache: new BlockCache(8 * BS),
  });
  return { meta, store, svc };
}

type Op =
  | { kind: 'write'; offset: number; data: Uint8Array }
  | { kind: 'truncate'; size: number }
  | { kind: 'flush' }
  | { kind: 'read'; offset: number; count: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('write' as const),
      offset: fc.nat(6 * BS),
      data: fc.uint8Array({ minLength: 1, maxLength: 2 * BS }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), size: fc.nat(7 * BS) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('flush' as const) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('read' as const), offset: fc.nat(8 * BS), count: fc.nat(3 * BS) }) },
);

describe('block service data path', () => {
  it('property: reads always equal a byte-array model under writes, truncates and flushes', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40 }), fc.boolean(), async (ops, tightBudget) => {
        const { meta, store, svc } = setup(tightBudget ? 2 * BS : 64 * BS);
        const ino = 42;
        let model = Buffer.alloc(0);
        const pending: Promise<unknown>[] = [];
        for (const op of ops) {
          if (op.kind === 'write') {
            const end = op.offset + op.data.length;
            if (end > model.length) model = Buffer.concat([model, Buffer.alloc(end - model.length)]);
            model.set(op.data, op.offset);
            await svc.write(ino, op.offset, Buffer.from(op.data));
          } else if (op.kind === 'truncate') {
            await svc.truncate(ino, op.size);
            model = op.size <= model.length ? model.subarray(0, op.size) : Buffer.concat([model, Buffer.alloc(op.size - model.length)]);
          } else if (op.kind === 'flush') {
            pending.push(svc.flush(ino));
          } else {
            const got = await svc.read(ino, op.offset, op.count, model.length);
            const want = model.subarray(Math.min(op.offset, model.length), Math.min(op.offset + op.count, model.length));
            assert.deepEqual(got, Buffer.from(want));
          }
        }
        await Promise.all(pending);
        await svc.flush(ino);
        assert.equal(svc.hasDirty(ino), false);
        // Everything reads back from the store alone, and no object is left behind.
        assert.deepEqual(await svc.read(ino, 0, model.length + BS, model.length), Buffer.from(model));
        const refs = await meta.getBlocks(ino, 0, 1000);
        assert.equal(store.size, refs.length, 'every stored object is referenced by exactly one block row');
        await svc.free(ino);
        assert.equal(store.size, 0);
        await svc.close();
      }),
      { numRuns: 300 },
    );
  });

  it('uploads a block as soon as it is completely written', async () => {
    const { meta, store, svc } = setup();
    await svc.write(1, 0, Buffer.alloc(BS, 7));
    await svc.flush(1);
    const refs = await meta.getBlocks(1, 0, 10);
    assert.equal(refs.length, 1);
    assert.equal(refs[0]!.length, BS);
    assert.equal(store.size, 1);
    await svc.close();
  });

  it('replaces a block with a new immutable version and deletes the old object', async () => {
    const { meta, store, svc } = setup();
    await svc.write(1, 0, Buffer.alloc(BS, 1));
    await svc.flush(1);
    const [v1] = await meta.getBlocks(1, 0, 1);
    await svc.write(1, 10, Buffer.from('new'));
    await svc.flush(1);
    const [v2] = await meta.getBlocks(1, 0, 1);
    assert.notEqual(v1!.key, v2!.key);
    assert.equal(v2!.version, v1!.version + 1);
    assert.equal(store.size, 1);
    assert.equal(await store.get(v1!.key), null);
    const got = await svc.read(1, 0, BS, BS);
    assert.equal(got.subarray(10, 13).toString(), 'new');
    assert.equal(got[0], 1);
    await svc.close();
  });

  it('makes writers wait instead of failing when the dirty budget is exhausted', async () => {
    const { svc } = setup(2 * BS);
    const data = Buffer.alloc(BS / 2, 3);
    for (let i = 0; i < 64; i++) await svc.write(9, i * BS, data); // half blocks never fill up
    await svc.flush(9);
    const got = await svc.read(9, 63 * BS, BS / 2, 64 * BS);
    assert.deepEqual(got, data);
    await svc.close();
  });
});
