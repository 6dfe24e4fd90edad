// What a postgres:// URL makes the server do besides connecting to a database over the network,
// read as the pg driver reads it (pg-connection-string's parse): the parameters sslcert, sslkey and
// sslrootcert name files it reads whole, synchronously, on the main thread, each time it opens a
// connection; and a host starting with "/" is a directory holding a unix socket.
//
// So the server checks the files before the driver sees the URL: a FIFO or a device (/dev/zero)
// would otherwise freeze the process, or grow it until it is killed. And a caller that may not
// touch the server's file system (an operator) may not give these: they name the server's own
// files, and a 422 saying how opening one failed tells whether it exists.
import type { Stats } from 'node:fs';
import { stat } from 'node:fs/promises';
import { formatByteSize } from './sizes.js';

/** The parameters the pg driver reads a file for: a client certificate, its key, the CAs. */
export const POSTGRES_FILE_PARAMS = Object.freeze(['sslcert', 'sslkey', 'sslrootcert'] as const);
export type PostgresFileParam = (typeof POSTGRES_FILE_PARAMS)[number];

/** A certificate or key file is a few KiB; a CA bundle some hundreds. */
export const MAX_POSTGRES_URL_FILE_BYTES = 1024 * 1024;

interface ParsedPostgresUrl {
  /** Names and values decoded (`ssl%6Bey` is `sslkey`), in order, repeats included (the driver keeps the last). */
  params: URLSearchParams;
  /** The host as written in the URL ("" for none), still percent-encoded. */
  hostname: string;
}

/**
 * The URL as the pg driver parses it. Undefined when the driver could not parse it either (then it
 * reads nothing and connects nowhere).
 */
function parsePostgresUrl(url: string): ParsedPostgresUrl | undefined {
  // pg-connection-string's own steps: percent-encode a URL holding spaces or stray "%"s, then
  // parse; a URL without a host ("user@/db") is parsed again with a placeholder host.
  const str = / |%[^a-f0-9]|%[a-f0-9][^a-f0-9]/i.test(url) ? encodeURI(url).replace(/%25(\d\d)/g, '%$1') : url;
  try {
    const u = new URL(str, 'postgres://base');
    return { params: u.searchParams, hostname: u.hostname };
  } catch {
    try {
      return { params: new URL(str.replace('@/', '@___DUMMY___/'), 'postgres://base').searchParams, hostname: '' };
    } catch {
      return undefined;
    }
  }
}

/** The files the pg driver would read for this URL (a parameter given empty reads nothing). */
export function postgresUrlFiles(url: string): { param: PostgresFileParam; path: string }[] {
  const params = parsePostgresUrl(url)?.params;
  if (params === undefined) return [];
  const out: { param: PostgresFileParam; path: string }[] = [];
  for (const param of POSTGRES_FILE_PARAMS) {
    const all = params.getAll(param);
    const path = all[all.length - 1];
    if (path !== undefined && path !== '') out.push({ param, path });
  }
  return out;
}

/** The unix socket directory the URL connects through, if its host (or `host=`) is a path. */
export function postgresUrlSocketDir(url: string): string | undefined {
  const u = parsePostgresUrl(url);
  if (u === undefined) return undefined;
  const hosts = u.params.getAll('host');
  let host = hosts[hosts.length - 1] ?? '';
  if (host === '') {
    try {
      host = decodeURIComponent(u.hostname.replace(/^\[(.+)\]$/, '$1'));
    } catch {
      return undefined; // the driver fails to parse it too
    }
  }
  return host.startsWith('/') ? host : undefined;
}

/**
 * Why a caller that may not touch the server's file system (not an admin) may not give this URL,
 * naming what in it is refused; undefined if nothing is. Any of the file parameters, even empty,
 * and a unix socket: a local socket reaches databases not open to the network, as the server's
 * own system user (PostgreSQL's default `peer` authentication trusts it), and whether the socket
 * is there tells about the server's file system.
 */
export function postgresUrlAdminOnly(url: string): string | undefined {
  const params = parsePostgresUrl(url)?.params;
  if (params === undefined) return undefined;
  const given = POSTGRES_FILE_PARAMS.filter((p) => params.has(p));
  if (given.length > 0) {
    const names = given.join(', ');
    const one = given.length === 1;
    return (
      `the URL parameter${one ? '' : 's'} ${names} name${one ? 's a file' : ' files'} on the server's own file system, which the ` +
      `server reads: only an admin can give sslcert, sslkey or sslrootcert`
    );
  }
  const socket = postgresUrlSocketDir(url);
  if (socket !== undefined)
    return (
      `the URL's host ${JSON.stringify(socket)} is a unix socket directory on the server itself, which reaches databases as the ` +
      "server's own system user: only an admin can connect a store through a local socket; give a host name or address"
    );
  return undefined;
}

/**
 * Checks, before the pg driver reads them, that the files the URL names are regular files of at
 * most MAX_POSTGRES_URL_FILE_BYTES. Throws an error naming the parameter and the path otherwise.
 * (The driver reads them again at each new connection: a file swapped for a FIFO afterwards is up
 * to whoever may write where the admin pointed.)
 */
export async function checkPostgresUrlFiles(url: string): Promise<void> {
  for (const { param, path } of postgresUrlFiles(url)) {
    const problem = await fileProblem(path);
    if (problem !== undefined) throw new Error(`postgres URL parameter ${param}: ${JSON.stringify(path)} ${problem}`);
  }
}

async function fileProblem(path: string): Promise<string | undefined> {
  let st: Stats;
  try {
    st = await stat(path); // follows symbolic links, as reading it does
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'does not exist';
    if (code === 'EACCES') return 'cannot be reached by the server (permission denied)';
    return `cannot be checked (${code ?? String(e)})`;
  }
  if (!st.isFile()) return `is ${kindOf(st)}, not a regular file: give a PEM certificate or key file`;
  if (st.size > MAX_POSTGRES_URL_FILE_BYTES)
    return `is ${st.size} bytes, more than the ${formatByteSize(MAX_POSTGRES_URL_FILE_BYTES)} a certificate or key file may be`;
  return undefined;
}

function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  return 'not a file';
}
