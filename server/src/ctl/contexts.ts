// The contexts file: the servers dittofsctl knows, the credentials for each, and which one is
// current (kubectl's kubeconfig, in JSON). It holds tokens, so it is written with mode 0600, and
// atomically (a temporary file in the same directory, fsync, rename) so that a crash or two runs
// at once never leave a half-written file behind.
//
// Where: $DITTOFSCTL_CONFIG, else $XDG_CONFIG_HOME/dittofsctl/config.json, else
// ~/.config/dittofsctl/config.json.
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { CTL_ERROR, CtlError } from './errors.js';

export interface Context {
  /** Base URL of the server, without /api/v1: `http://localhost:8080`. */
  server: string;
  username?: string;
  access_token?: string;
  refresh_token?: string;
}

export interface ContextsFile {
  current_context?: string;
  contexts: Record<string, Context>;
}

/** Any printable name without spaces; `contextNameFor` makes `host:port` ones. */
// eslint-disable-next-line no-control-regex
export const CONTEXT_NAME_RE = /^[^\s\u0000-\u001f\u007f]{1,128}$/;

export function contextsPath(env: Readonly<Record<string, string | undefined>>, homedir: string): string {
  const explicit = env.DITTOFSCTL_CONFIG;
  if (explicit !== undefined && explicit !== '') return path.resolve(explicit);
  const xdg = env.XDG_CONFIG_HOME;
  // The XDG spec says to ignore a relative XDG_CONFIG_HOME.
  const base = xdg !== undefined && path.isAbsolute(xdg) ? xdg : path.join(homedir, '.config');
  return path.join(base, 'dittofsctl', 'config.json');
}

export function emptyContexts(): ContextsFile {
  return { contexts: {} };
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Checks the parsed file, keeping only known fields of the expected types. */
export function parseContexts(text: string, file: string): ContextsFile {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CtlError(CTL_ERROR.CONFIG, `${file}: not valid JSON (${(e as Error).message})`, 'fix or delete the file, then log in again');
  }
  if (!isObject(raw) || !isObject(raw.contexts)) {
    throw new CtlError(CTL_ERROR.CONFIG, `${file}: expected an object with "contexts"`, 'fix or delete the file, then log in again');
  }
  const out: ContextsFile = { contexts: {} };
  if (typeof raw.current_context === 'string') out.current_context = raw.current_context;
  for (const [name, c] of Object.entries(raw.contexts)) {
    if (!isObject(c) || typeof c.server !== 'string') {
      throw new CtlError(CTL_ERROR.CONFIG, `${file}: context ${JSON.stringify(name)} has no "server"`, 'fix or delete the file');
    }
    const ctx: Context = { server: c.server };
    for (const key of ['username', 'access_token', 'refresh_token'] as const) {
      const v = c[key];
      if (typeof v === 'string') ctx[key] = v;
    }
    out.contexts[name] = ctx;
  }
  return out;
}

export async function loadContexts(file: string): Promise<ContextsFile> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return emptyContexts();
    throw new CtlError(CTL_ERROR.CONFIG, `cannot read ${file}: ${(e as Error).message}`);
  }
  return parseContexts(text, file);
}

/** Writes the whole file atomically with mode 0600; creates its directory (0700) if needed. */
export async function saveContexts(file: string, data: ContextsFile): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const fh = await open(tmp, 'wx', 0o600);
    try {
      // The umask may have cleared bits, never added any; chmod makes 0600 exact either way.
      await fh.chmod(0o600);
      await fh.writeFile(`${JSON.stringify(data, null, 2)}\n`, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    // The new file keeps the temp file's mode; a symlink at `file` is replaced, not written through.
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw new CtlError(CTL_ERROR.CONFIG, `cannot write ${file}: ${(e as Error).message}`);
  }
}

/** The context to use: --context, else the file's current context. */
export function selectContext(data: ContextsFile, name: string | undefined): { name: string; context: Context } | undefined {
  const chosen = name ?? data.current_context;
  if (chosen === undefined) return undefined;
  const context = data.contexts[chosen];
  if (context === undefined) {
    if (name !== undefined) throw noSuchContext(name, data);
    return undefined;
  }
  return { name: chosen, context };
}

export function knownContextsHint(data: ContextsFile): string {
  const names = Object.keys(data.contexts);
  return names.length === 0 ? 'log in first: dittofsctl login --server URL --username NAME' : `known contexts: ${names.join(', ')}`;
}

/** A context name for a server URL: its host and port (`localhost:8080`). */
export function contextNameFor(server: string): string {
  const u = new URL(server);
  return u.port === '' ? u.hostname : `${u.hostname}:${u.port}`;
}

export function noSuchContext(name: string, data: ContextsFile): CtlError {
  return new CtlError(CTL_ERROR.NOT_LOGGED_IN, `no context named ${JSON.stringify(name)}`, knownContextsHint(data));
}
