// KeyedSerial: calls of `run` with the same key execute one at a time, in call order; calls with
// other keys are not held. A key is forgotten once nothing runs or waits under it, so the map holds
// only the keys in use.

export class KeyedSerial<K> {
  private readonly tails = new Map<K, Promise<void>>();

  run<T>(key: K, fn: () => Promise<T>): Promise<T> {
    const result = (this.tails.get(key) ?? Promise.resolve()).then(fn);
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return result;
  }

  /**
   * Waits for the calls queued under `key` before it, then holds the key until the function it
   * resolves to is called (once; later calls do nothing): `run` for a section that is not one
   * function.
   */
  async acquire(key: K): Promise<() => void> {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    await new Promise<void>((entered) => {
      void this.run(key, () => {
        entered();
        return held;
      });
    });
    return release;
  }

  /**
   * acquire() that does not wait when nothing runs or waits under `key`: then the release function
   * itself, at once (one promise, no tick: a hot path's lock of a key nobody else wants), else
   * acquire()'s promise of it.
   */
  acquireNow(key: K): (() => void) | Promise<() => void> {
    if (this.tails.has(key)) return this.acquire(key);
    let resolve!: () => void;
    const tail = new Promise<void>((r) => (resolve = r));
    this.tails.set(key, tail);
    return () => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
      resolve();
    };
  }

  /** Keys with a call running or waiting (tests). */
  get size(): number {
    return this.tails.size;
  }
}
