// How long tests wait, and how many subprocesses a test file runs at once.
//
// A test waits for readiness (a port that accepts, /health/ready, a ready line) and fails at once,
// with the process's output, when the process it waits for exits. The bounds below only stop a
// hang: they are minutes, so that a shared machine at load 20 makes the tests slower, never red.
// None of them is an assertion about speed.
import os from 'node:os';

/** A server or helper process becoming ready (listening, answering /health/ready, its ready line). */
export const READY_TIMEOUT_MS = 5 * 60_000;
/** One short command (a CLI call, a client tool, kubectl) running to its end. */
export const COMMAND_TIMEOUT_MS = 5 * 60_000;
/** A reply to one RPC call, a TCP connect, a connection being closed by the server. */
export const REPLY_TIMEOUT_MS = 2 * 60_000;
/** A process given SIGTERM finishing its graceful shutdown before it gets SIGKILL. */
export const STOP_TIMEOUT_MS = 2 * 60_000;
/** node:test `timeout` of a whole describe(): the safety net against a hang, far above any wait inside. */
export const SUITE_TIMEOUT_MS = 30 * 60_000;
/** node:test `timeout` of one it()/test() that starts processes or clients. */
export const TEST_TIMEOUT_MS = 15 * 60_000;

/** A counting semaphore: at most `size` holders at once, the others queue in order. */
export class Semaphore {
  private held = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(readonly size: number) {
    if (!Number.isInteger(size) || size < 1) throw new Error(`semaphore size must be a positive integer, got ${size}`);
  }

  /** Runs `fn` once a slot is free and frees the slot when it settles. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.held >= this.size) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.held++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      // The slot passes straight to the next waiter (held stays the same), or is freed.
      if (next) next();
      else this.held--;
    }
  }
}

/**
 * Subprocesses one test file runs at once (CLI calls, client tools): about the number of cores, so
 * that twenty concurrent tests queue instead of starting twenty Node processes that each take a
 * core for a second to load. DITTOFS_TEST_SUBPROCESSES overrides it.
 */
export const SUBPROCESS_SLOTS = new Semaphore(
  Number(process.env.DITTOFS_TEST_SUBPROCESSES) > 0
    ? Math.floor(Number(process.env.DITTOFS_TEST_SUBPROCESSES))
    : Math.max(2, os.availableParallelism()),
);
