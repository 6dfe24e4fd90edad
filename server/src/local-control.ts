// The running server's local control socket, `<data_dir>/dittofs.sock` (mode 0600): what the
// `dittofs` CLI on the same machine asks a running server for, instead of opening the control
// database itself (an embedded one can be open in one process only). Who may connect is decided by
// the file system, as for the data directory, whose database files the same user could read anyway;
// nothing listens on the network. It answers one request:
//
//   GET /v1/backup/controlplane -> the control-plane backup document (JSON), read in one transaction.
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rename, rm, unlink } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import type { Logger } from 'pino';
import { dumpControl } from './control/backup.js';
import type { ControlStore } from './control/store.js';

/** Longest unix socket path Linux takes (sun_path is 108 bytes, with its NUL). */
const MAX_SOCKET_PATH = 107;

export const BACKUP_PATH = '/v1/backup/controlplane';

export function localControlSocket(dataDir: string): string {
  return path.join(path.resolve(dataDir), 'dittofs.sock');
}

export interface LocalControl {
  readonly path: string;
  close(): Promise<void>;
}

/**
 * Listens on the socket; null (with a warning) when its path is too long for a unix socket. The
 * caller holds the data directory's pid file, so a socket file left by a crash is removed first.
 */
export async function serveLocalControl(dataDir: string, store: ControlStore, version: string, log: Logger): Promise<LocalControl | null> {
  const file = localControlSocket(dataDir);
  if (Buffer.byteLength(file) > MAX_SOCKET_PATH) {
    log.warn(
      { socket: file },
      'the data directory path is too long for the local control socket: "dittofs backup" needs the server stopped',
    );
    return null;
  }
  if (existsSync(file)) await unlink(file);
  const srv = http.createServer((req, res) => {
    if (req.method !== 'GET' || req.url !== BACKUP_PATH) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`no such request: ${req.method} ${req.url}\n`);
      return;
    }
    dumpControl(store, { dittofsVersion: version }).then(
      (b) => {
        log.info({ generation: b.generation }, 'control plane backed up through the local socket');
        res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(b, null, 2)}\n`);
      },
      (err: unknown) => {
        log.error({ err }, 'control plane backup failed');
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`${(err as Error).message}\n`);
      },
    );
  });
  // The socket is bound inside a fresh 0700 directory, made 0600, and only then renamed into place:
  // bound at its final path it would be open to whoever the umask lets in until the chmod.
  const privateDir = await mkdtemp(path.join(path.dirname(file), '.ctl'));
  try {
    const staging = path.join(privateDir, 's');
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(staging, () => {
        srv.off('error', reject);
        resolve();
      });
    });
    await chmod(staging, 0o600);
    await rename(staging, file);
  } catch (e) {
    srv.close();
    throw e;
  } finally {
    await rm(privateDir, { recursive: true, force: true });
  }
  return {
    path: file,
    close: () =>
      new Promise<void>((resolve) => {
        srv.close(() => resolve());
        srv.closeAllConnections();
      }).then(() => unlink(file).catch(() => undefined)),
  };
}

/** Asks the server listening on `socket` for a backup; the JSON text, or an Error saying why not. */
export function requestBackup(socket: string, timeoutMs = 120_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath: socket, path: BACKUP_PATH, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode === 200) resolve(text);
        else reject(new Error(`the server answered ${res.statusCode}: ${text.trim()}`));
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${Math.round(timeoutMs / 1000)} s`)));
    req.on('error', reject);
  });
}
