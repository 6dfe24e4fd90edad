// Test support for the SMB2 command unit tests (files, streams, oplock, ioctl): a FileContext over
// a memory server's share, CREATE requests with test defaults, and status capture. Only *.test.ts
// files import this; server code does not.
import type { MemoryServer } from '../testing/memory-server.js';
import { SmbWriter, utf16 } from './codec.js';
import { Access, CreateDisposition } from './constants.js';
import * as files from './files.js';
import { type CreateContext, type CreateRequest, decodeCreateContexts } from './messages.js';
import type { CachingContext } from './oplock.js';
import type { Open, Session, Tree } from './state.js';
import { NtStatus, ntStatusOf, SmbStatusError } from './status.js';

/** The identity the unit tests act as. */
export const alice = { uid: 1000, gid: 1000, gids: [] };

/** A FileContext on the memory server's first share: one session with one tree connected to it. */
export function fileContext(
  srv: MemoryServer,
  o: { sessionId?: number; readOnly?: boolean; caching?: CachingContext } = {},
): files.FileContext {
  const share = srv.fs.shares()[0]!;
  const readOnly = o.readOnly ?? false;
  const session = { id: o.sessionId ?? 1, trees: new Map() } as unknown as Session;
  const tree: Tree = { id: 1, session, kind: 'disk', share, name: share.name, readOnly, maximalAccess: readOnly ? 0x001200a9 : 0x001f01ff };
  const c: files.FileContext = { fs: srv.fs, session, tree, share, id: alice, maxRead: 1 << 20, maxWrite: 1 << 20, maxTransact: 1 << 20 };
  if (o.caching) c.caching = o.caching;
  return c;
}

/** A CREATE request for `name`: read/write access, share all, OPEN_IF, no options or contexts, unless given. */
export function createRequest(name: string, o: Partial<CreateRequest> = {}): CreateRequest {
  return {
    requestedOplockLevel: 0,
    impersonationLevel: 2,
    desiredAccess: Access.GENERIC_READ | Access.GENERIC_WRITE,
    fileAttributes: 0,
    shareAccess: 7,
    createDisposition: CreateDisposition.OPEN_IF,
    createOptions: 0,
    name: utf16(name),
    contexts: [],
    ...o,
  };
}

/** Runs CREATE: the open it made and the response body it wrote. */
export async function create(c: files.FileContext, req: CreateRequest): Promise<{ open: Open; body: Buffer }> {
  let got: Open | null = null;
  const w = new SmbWriter();
  await files.create(c, req, w, (o) => (got = o));
  return { open: got!, body: w.finish() };
}

/** The create contexts of a CREATE response body (CreateContextsOffset counts from the SMB2 header). */
export function responseContexts(body: Buffer): CreateContext[] {
  const off = body.readUInt32LE(80);
  return off === 0 ? [] : decodeCreateContexts(body.subarray(off - 64, off - 64 + body.readUInt32LE(84)));
}

/** Runs CLOSE without flags. */
export const close = (c: files.FileContext, o: Open) => files.close(c, o, 0, new SmbWriter());

/** CREATE of `name` with read, write and delete access and the given disposition: the open. */
export async function openRwd(c: files.FileContext, name: string, disposition: number, options = 0): Promise<Open> {
  const req = createRequest(name, {
    desiredAccess: Access.GENERIC_READ | Access.GENERIC_WRITE | Access.DELETE,
    createDisposition: disposition,
    createOptions: options,
  });
  return (await create(c, req)).open;
}

/**
 * The NT status a command's promise settles with: SUCCESS, or the status of its SmbStatusError or
 * VfsError (mapped as the dispatcher maps it).
 */
export async function status(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return NtStatus.SUCCESS;
  } catch (e) {
    if (e instanceof SmbStatusError) return e.status;
    const mapped = ntStatusOf(e);
    if (mapped !== null) return mapped;
    throw e;
  }
}
