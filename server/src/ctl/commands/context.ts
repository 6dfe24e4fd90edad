// context list|use|current|delete: the servers dittofsctl knows (kubectl config get-contexts,
// use-context, current-context, delete-context). Tokens are never shown.
import type { Command } from 'commander';
import { noSuchContext } from '../contexts.js';
import { CTL_ERROR, CtlError } from '../errors.js';
import type { Column } from '../output.js';
import type { Session } from '../session.js';
import { outputOption, withExamples, type OutputOpts } from './common.js';

/** A context as shown: no tokens, only whether there are some. */
export interface ContextView {
  name: string;
  current: boolean;
  server: string;
  username: string | null;
  logged_in: boolean;
}

const CONTEXT_COLUMNS: readonly Column<ContextView>[] = [
  { header: 'current', value: (c) => (c.current ? '*' : ''), empty: '' },
  { header: 'name', value: (c) => c.name },
  { header: 'server', value: (c) => c.server },
  { header: 'user', value: (c) => c.username },
  { header: 'logged-in', value: (c) => (c.logged_in ? 'yes' : 'no') },
];

export function registerContextCommands(program: Command, s: Session): void {
  const context = program
    .command('context')
    .description('list, switch and delete the servers you have logged in to')
    .addHelpText('after', `\nA context is a server URL, a user and that user's tokens; "dittofsctl login" creates them.`);

  withExamples(
    context
      .command('list')
      .alias('ls')
      .description('list the contexts; * marks the current one')
      .addOption(outputOption())
      .action(async (opts: OutputOpts) => {
        const data = await s.loadContexts();
        const views: ContextView[] = Object.entries(data.contexts)
          .sort(([a], [b]) => a.localeCompare(b))
          .map(([name, c]) => ({
            name,
            current: name === data.current_context,
            server: c.server,
            username: c.username ?? null,
            logged_in: c.access_token !== undefined || c.refresh_token !== undefined,
          }));
        s.print(opts.output, views, CONTEXT_COLUMNS, 'contexts');
      }),
    'dittofsctl context list',
    'dittofsctl context list -o json',
  );

  withExamples(
    context
      .command('use')
      .description('make a context the current one')
      .argument('<name>', 'context name')
      .action(async (name: string) => {
        const data = await s.loadContexts();
        const c = data.contexts[name];
        if (c === undefined) throw noSuchContext(name, data);
        await s.updateContexts((d) => {
          d.current_context = name;
        });
        s.done(`switched to context "${name}" (${c.server})`);
      }),
    'dittofsctl context use prod',
  );

  withExamples(
    context
      .command('current')
      .description('print the name of the current context')
      .action(async () => {
        const data = await s.loadContexts();
        const name = data.current_context;
        if (name === undefined || data.contexts[name] === undefined) {
          throw new CtlError(CTL_ERROR.NOT_LOGGED_IN, 'no current context', 'log in first, or choose one: dittofsctl context use NAME');
        }
        s.done(name);
      }),
    'dittofsctl context current',
  );

  withExamples(
    context
      .command('delete')
      .alias('rm')
      .description('delete a context and its tokens')
      .argument('<name>', 'context name')
      .action(async (name: string) => {
        const data = await s.loadContexts();
        if (data.contexts[name] === undefined) throw noSuchContext(name, data);
        await s.updateContexts((d) => {
          delete d.contexts[name];
          if (d.current_context === name) delete d.current_context;
        });
        s.done(`deleted context "${name}"`);
      }),
    'dittofsctl context delete staging',
  );
}
