// A TCP forwarder for tests: connections to its port are piped to 127.0.0.1:target. `cut()` drops
// every connection and refuses new ones (a network cut between a server and Redis); `close()` ends it.
import net from 'node:net';

export interface TcpForward {
  /** The port it listens on (on `host`). */
  port: number;
  /** Drops every connection and refuses new ones from now on. */
  cut(): void;
  close(): Promise<void>;
}

/** Forwards `host`:(a free port) to 127.0.0.1:`target`; `host` defaults to 127.0.0.1. */
export async function tcpForward(target: number, host = '127.0.0.1'): Promise<TcpForward> {
  const sockets = new Set<net.Socket>();
  let refusing = false;
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
    client.pipe(upstream).pipe(client);
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
    close: () =>
      new Promise<void>((resolve) => {
        refusing = true;
        dropAll();
        server.close(() => resolve());
      }),
  };
}
