// Starting a TCP listener: resolve with the port it got (port 0 asks the system for a free one),
// reject with the listen error (EADDRINUSE, EACCES, ...) instead of emitting it.
import type net from 'node:net';

export function listenOn(server: net.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const addr = server.address();
      resolve(typeof addr === 'object' && addr ? addr.port : port);
    });
  });
}
