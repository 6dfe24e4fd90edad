// Reading an accepted TCP connection into one reused buffer instead of a new Buffer per read.
//
// A socket's 'data' events each carry a fresh 64 KiB buffer: V8 counts those as external memory,
// and a stream of 1 MiB WRITEs then costs a full garbage collection every few dozen milliseconds.
// Node can read into a caller's buffer (the `onread` option), but only offers it to sockets that
// `new net.Socket()` or `net.connect()` create. Its constructor implements the option by setting two
// fields and handing the buffer to the handle (`useUserBuffer`); an accepted socket gets the same
// by setting the same fields, which is what this does. Where this Node has no such fields, nothing
// is changed and the caller falls back to 'data' events.
import type net from 'node:net';

/** Called with the bytes read (buf[0, n)), which are overwritten by the next read. */
export type ReadCallback = (n: number, buf: Buffer) => void;

interface UserBufferHandle {
  useUserBuffer(buf: Uint8Array): void;
}

function ownSymbol(o: object, description: string): symbol | undefined {
  return Object.getOwnPropertySymbols(o).find((s) => s.description === description);
}

/**
 * Makes `socket` deliver every read into `buffer` through `onRead`, before it has started reading
 * (a server created with `pauseOnConnect`). Returns false, changing nothing, when this Node does
 * not support it. One buffer may serve every connection: each read is delivered before the next
 * one starts.
 */
export function readIntoBuffer(socket: net.Socket, buffer: Buffer, onRead: ReadCallback): boolean {
  const kBuffer = ownSymbol(socket, 'kBuffer');
  const kBufferCb = ownSymbol(socket, 'kBufferCb');
  const handle = (socket as unknown as { _handle?: Partial<UserBufferHandle> | null })._handle;
  if (kBuffer === undefined || kBufferCb === undefined || typeof handle?.useUserBuffer !== 'function') return false;
  const fields = socket as unknown as Record<symbol, unknown>;
  if (fields[kBuffer] !== null || fields[kBufferCb] !== null) return false;
  fields[kBuffer] = buffer;
  // Node pauses the socket when this returns false; the callers pause explicitly instead.
  fields[kBufferCb] = (n: number, buf: Buffer): undefined => {
    onRead(n, buf);
  };
  handle.useUserBuffer(buffer);
  return true;
}

/** Size of the buffer that every accepted connection of the process reads into (readSocket). */
const SHARED_READ_BYTES = 256 * 1024;
let sharedReadBuffer: Buffer | null = null;

/**
 * Delivers what `socket` reads to `onChunk`: views of one buffer that every connection of the
 * process (NFS and SMB alike) reads into where this Node allows it (readIntoBuffer), else its
 * 'data' events. A view is overwritten by the next read of any connection: what outlives the call
 * must be copied.
 */
export function readSocket(socket: net.Socket, onChunk: (chunk: Buffer) => void): void {
  sharedReadBuffer ??= Buffer.allocUnsafeSlow(SHARED_READ_BYTES);
  if (!readIntoBuffer(socket, sharedReadBuffer, (n, buf) => onChunk(buf.subarray(0, n)))) socket.on('data', onChunk);
}
