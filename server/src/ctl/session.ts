// What every command gets: the IO, the prompter, the contexts file, and a connection to the server
// chosen by the global flags, the environment and the current context.
//
// Which server and credentials a command uses:
//   server:      --server, else $DITTOFSCTL_SERVER, else the context's server
//   context:     --context, else the contexts file's current context
//   credentials: $DITTOFSCTL_TOKEN (a bearer token, used as it is, never refreshed or saved), else
//                the context's tokens. With a --server other than the context's, the tokens of a
//                context for that server, if there is one: tokens never go to a server they were
//                not issued by.
import type { Command } from 'commander';
import { ApiClient } from './client.js';
import { contextsPath, knownContextsHint, loadContexts, saveContexts, selectContext, type Context, type ContextsFile } from './contexts.js';
import { CTL_ERROR, CtlError } from './errors.js';
import type { CtlIo } from './io.js';
import { render, type Column, type OutputFormat } from './output.js';
import { Prompter } from './prompt.js';
import { parseServerUrl } from './validate.js';

export interface GlobalFlags {
  server?: string;
  context?: string;
}

export interface Connection {
  client: ApiClient;
  server: string;
  /** The context whose tokens are used; undefined with $DITTOFSCTL_TOKEN or without credentials. */
  contextName?: string;
  context?: Context;
  /** The credentials come from $DITTOFSCTL_TOKEN. */
  envToken: boolean;
}

export class Session {
  readonly prompter: Prompter;
  readonly configPath: string;

  constructor(readonly io: CtlIo) {
    this.prompter = new Prompter(io);
    this.configPath = contextsPath(io.env, io.homedir);
  }

  globals(cmd: Command): GlobalFlags {
    return cmd.optsWithGlobals<GlobalFlags>();
  }

  /** The server named by --server or $DITTOFSCTL_SERVER, parsed; undefined when neither is set. */
  serverOverride(cmd: Command): string | undefined {
    const { server } = this.globals(cmd);
    if (server !== undefined) return parseServerUrl(server, '--server');
    const env = this.io.env.DITTOFSCTL_SERVER;
    return env !== undefined && env !== '' ? parseServerUrl(env, 'DITTOFSCTL_SERVER') : undefined;
  }

  loadContexts(): Promise<ContextsFile> {
    return loadContexts(this.configPath);
  }

  saveContexts(data: ContextsFile): Promise<void> {
    return saveContexts(this.configPath, data);
  }

  /** Re-reads the file, applies `change` to it and writes it back (another run may have written it meanwhile). */
  async updateContexts(change: (data: ContextsFile) => void): Promise<ContextsFile> {
    const data = await this.loadContexts();
    change(data);
    await this.saveContexts(data);
    return data;
  }

  /** Connects with credentials; fails before any request when there are none. */
  async connect(cmd: Command): Promise<Connection> {
    const conn = await this.resolve(cmd);
    if (!conn.envToken && !conn.client.hasCredentials) {
      throw new CtlError(
        CTL_ERROR.NOT_LOGGED_IN,
        `not logged in to ${conn.server}`,
        `log in with: dittofsctl login --server ${conn.server} --username NAME (or set DITTOFSCTL_TOKEN)`,
      );
    }
    return conn;
  }

  /** The server and whatever credentials there are for it (maybe none). */
  async resolve(cmd: Command): Promise<Connection> {
    const override = this.serverOverride(cmd);
    const data = await this.loadContexts();
    let selected = selectContext(data, this.globals(cmd).context);
    if (override !== undefined && selected !== undefined && selected.context.server !== override) {
      const other = Object.entries(data.contexts).find(([, c]) => c.server === override);
      selected = other === undefined ? undefined : { name: other[0], context: other[1] };
    }
    const server = override ?? selected?.context.server;
    if (server === undefined) {
      throw new CtlError(
        CTL_ERROR.NOT_LOGGED_IN,
        'no server to talk to',
        Object.keys(data.contexts).length === 0
          ? knownContextsHint(data)
          : `choose one: dittofsctl context use NAME (${knownContextsHint(data)})`,
      );
    }
    const envToken = this.io.env.DITTOFSCTL_TOKEN;
    if (envToken !== undefined && envToken !== '') {
      return { client: new ApiClient({ server, accessToken: envToken, fetch: this.io.fetch }), server, envToken: true };
    }
    if (selected === undefined) return { client: new ApiClient({ server, fetch: this.io.fetch }), server, envToken: false };
    const { name, context } = selected;
    const client = new ApiClient({
      server,
      ...(context.access_token === undefined ? {} : { accessToken: context.access_token }),
      ...(context.refresh_token === undefined ? {} : { refreshToken: context.refresh_token }),
      fetch: this.io.fetch,
      onTokens: async (pair) => {
        await this.updateContexts((d) => {
          const c = d.contexts[name];
          if (c === undefined) return;
          c.access_token = pair.access_token;
          c.refresh_token = pair.refresh_token;
        });
      },
    });
    return { client, server, contextName: name, context, envToken: false };
  }

  /** Prints a list or one object in the chosen format; an empty table says so on stderr. */
  print<T>(format: OutputFormat, data: T | readonly T[], columns: readonly Column<T>[], plural?: string): void {
    if (format === 'table' && Array.isArray(data) && data.length === 0) {
      this.io.err(`No ${plural ?? 'items'} found.\n`);
      return;
    }
    this.io.out(render(format, data, columns));
  }

  /** A one-line result of a change (`user "alice" created`), on stdout as kubectl does. */
  done(message: string): void {
    this.io.out(`${message}\n`);
  }

  /** A note on stderr (`warning: ...`). */
  note(message: string): void {
    this.io.err(`${message}\n`);
  }
}
