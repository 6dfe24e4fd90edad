// login, logout, password, whoami.
import type { Command } from 'commander';
import { ApiClient, type TokenPair } from '../client.js';
import { CONTEXT_NAME_RE, contextNameFor, selectContext } from '../contexts.js';
import { ApiError, UsageError } from '../errors.js';
import { passwordProblem } from '../../control/password-rules.js';
import type { Session } from '../session.js';
import { outputOption, withExamples, type OutputOpts } from './common.js';
import { USER_COLUMNS, type ApiUser } from './user.js';

interface LoginOpts {
  username?: string;
  password?: string;
}

async function login(client: ApiClient, username: string, password: string): Promise<TokenPair> {
  try {
    return await client.post<TokenPair>('/auth/login', { username, password }, { auth: false });
  } catch (e) {
    // A refused login needs no "log in with" hint.
    if (e instanceof ApiError && e.status === 401) throw new ApiError(e.status, e.problem, '');
    throw e;
  }
}

export function registerAuthCommands(program: Command, s: Session): void {
  const loginCmd = program
    .command('login')
    .description('log in to a server and save the tokens in a context (which becomes the current one)')
    .option('-u, --username <name>', "user to log in as (default: the context's user)")
    .option(
      '-p, --password <password>',
      'password (default: prompted without echo, or one line of standard input when it is not a terminal)',
    )
    .addHelpText(
      'after',
      `
The server is --server URL, else the server of --context NAME or of the current context. The tokens
go into the context named by --context, else an existing context for the same server and user,
else a new context named after the server's host and port. The access token is refreshed with the
refresh token when it expires; run login again when the refresh token expires (after 7 days).
Contexts are stored in $DITTOFSCTL_CONFIG, else $XDG_CONFIG_HOME/dittofsctl/config.json, else
~/.config/dittofsctl/config.json (mode 0600).`,
    )
    .action(async (opts: LoginOpts, cmd: Command) => {
      const g = s.globals(cmd);
      if (g.context !== undefined && !CONTEXT_NAME_RE.test(g.context)) {
        throw new UsageError(`--context: ${JSON.stringify(g.context)} is not a valid context name (no spaces or control characters)`);
      }
      const data = await s.loadContexts();
      const existing = g.context !== undefined ? data.contexts[g.context] : selectContext(data, undefined)?.context;
      const server = s.serverOverride(cmd) ?? existing?.server;
      if (server === undefined)
        throw new UsageError(
          '--server is required (no context to take it from)',
          'such as: dittofsctl login --server http://localhost:8080 --username admin',
        );
      const username = opts.username ?? (existing?.server === server ? existing.username : undefined);
      if (username === undefined || username === '') throw new UsageError('--username is required');
      const password = opts.password ?? (await s.prompter.secret(`Password for ${username} at ${server}:`, 'password', '--password'));
      const tokens = await login(new ApiClient({ server, fetch: s.io.fetch }), username, password);

      let name = g.context;
      if (name === undefined) {
        const same = Object.entries(data.contexts).find(([, c]) => c.server === server && c.username === username);
        name = same?.[0] ?? contextNameFor(server);
      }
      const contextName = name;
      await s.updateContexts((d) => {
        d.contexts[contextName] = { server, username, access_token: tokens.access_token, refresh_token: tokens.refresh_token };
        d.current_context = contextName;
      });
      s.done(`logged in to ${server} as ${username} (context "${contextName}")`);
      if (tokens.must_change_password) {
        s.note(`note: the password of ${username} must be changed before anything else; run: dittofsctl password`);
      }
    });
  withExamples(
    loginCmd,
    'dittofsctl login --server http://localhost:8080 --username admin',
    'dittofsctl login --server https://dittofs.example.com --username alice --context prod',
    'echo "$PASSWORD" | dittofsctl login --server http://localhost:8080 --username admin',
    "dittofsctl login          # again, to the current context's server as its user",
  );

  withExamples(
    program
      .command('logout')
      .description('forget the tokens of the current context (or of --context NAME); the context itself stays')
      .action(async (_opts: unknown, cmd: Command) => {
        const { context } = s.globals(cmd);
        const data = await s.loadContexts();
        const selected = selectContext(data, context);
        if (selected === undefined) {
          s.done('not logged in (no current context)');
          return;
        }
        await s.updateContexts((d) => {
          const c = d.contexts[selected.name];
          if (c === undefined) return;
          delete c.access_token;
          delete c.refresh_token;
        });
        s.done(`logged out of ${selected.context.server} (context "${selected.name}")`);
      }),
    'dittofsctl logout',
    'dittofsctl logout --context prod',
  );

  withExamples(
    program
      .command('password')
      .description('change your own password (prompts for the current and the new one)')
      .addHelpText(
        'after',
        `
On a terminal, both are prompted without echo (the new one twice). Otherwise they are read from
standard input, one line each: the current password, then the new one. Changing the password
revokes every token you hold; dittofsctl logs in again with the new password and saves the new
tokens in the context. A new password is 8 characters to 72 bytes long.`,
      )
      .action(async (_opts: unknown, cmd: Command) => {
        const conn = await s.connect(cmd);
        let username = conn.context?.username;
        if (username === undefined) username = (await conn.client.get<ApiUser>('/auth/me')).username;
        const current = await s.prompter.secret('Current password:', 'current password');
        const next = await s.prompter.newSecret('New password:', 'new password', undefined, (p) =>
          p === current ? 'must differ from the current one' : passwordProblem(p),
        );
        await conn.client.post('/users/me/password', { current_password: current, new_password: next });
        if (conn.envToken || conn.contextName === undefined) {
          s.done('password changed');
          if (conn.envToken) s.note('note: the token in DITTOFSCTL_TOKEN no longer works; get a new one');
          return;
        }
        const tokens = await login(new ApiClient({ server: conn.server, fetch: s.io.fetch }), username, next);
        const contextName = conn.contextName;
        await s.updateContexts((d) => {
          d.contexts[contextName] = {
            server: conn.server,
            username,
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
          };
        });
        s.done(`password changed; logged in again as ${username} (context "${contextName}")`);
      }),
    'dittofsctl password',
    'printf "%s\\n%s\\n" "$OLD" "$NEW" | dittofsctl password',
  );

  withExamples(
    program
      .command('whoami')
      .description('show the user you are logged in as')
      .addOption(outputOption())
      .action(async (opts: OutputOpts, cmd: Command) => {
        const conn = await s.connect(cmd);
        s.print(opts.output, await conn.client.get<ApiUser>('/auth/me'), USER_COLUMNS);
      }),
    'dittofsctl whoami',
    'dittofsctl whoami -o json',
  );
}
