// A TCP forwarder for tests: connections to its port are piped to 127.0.0.1:target. `cut()` drops
// every connection and refuses new ones (a network cut between a server and Redis), `cutAt()` does
// it the moment a client sends given bytes (that chunk is not forwarded), `heal()` lets connections
// in again; `close()` ends it.
import net from 'node:net';

export interface TcpForward {
  /** The port it listens on (on `host`). */
  port: number;
  /** Drops every connection and refuses new ones from now on. */
  cut(): void;
  /**
   * Cuts (as `cut()`) when a client's chunk holds `pattern` for the `nth` time from now on; that
   * chunk is dropped. Resolves when it happened.
   */
  cutAt(pattern: string, nth?: number): Promise<void>;
  /**
   * Calls `fn` when a client's chunk holds `pattern` for the `nth` time from now on, before the
   * chunk is forwarded.
   */
  whenSent(pattern: string, nth: number, fn: () => void): void;
  /** New connections are forwarded again. */
  heal(): void;
  close(): Promise<void>;
}

/** Forwards `host`:(a free port) to 127.0.0.1:`target`; `host` defaults to 127.0.0.1. */
export async function tcpForward(target: number, host = '127.0.0.1'): Promise<TcpForward> {
  const sockets = new Set<net.Socket>();
  let refusing = false;
  let trigger: { pattern: Buffer; left: number; fired: () => void; drop: boolean } | null = null;
  const server = net.createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = net.connect(target, '127.0.0.1');
    sockets.add(client).add(upstream);
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
    client.on('data', (chunk: Buffer) => {
      if (trigger && chunk.includes(trigger.pattern) && --trigger.left === 0) {
        const t = trigger;
        trigger = null;
        t.fired();
        if (t.drop) {
          refusing = true;
          dropAll();
          return;
        }
      }
      if (!upstream.write(chunk)) client.pause();
    });
    upstream.on('drain', () => client.resume());
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, host, resolve));
  const dropAll = (): void => {
    for (const s of sockets) s.destroy();
  };
  return {
    port: (server.address() as net.AddressInfo).port,
    cut() {
      refusing = true;
      dropAll();
    },
    cutAt(pattern: string, nth = 1) {
      return new Promise<void>((fired) => {
        trigger = { pattern: Buffer.from(pattern), left: nth, fired, drop: true };
      });
    },
    whenSent(pattern: string, nth: number, fn: () => void) {
      trigger = { pattern: Buffer.from(pattern), left: nth, fired: fn, drop: false };
    },
    heal() {
      refusing = false;
    },
    close: () =>
      new Promise<void>((resolve) => {
        refusing = true;
        dropAll();
        server.close(() => resolve());
      }),
  };
}
