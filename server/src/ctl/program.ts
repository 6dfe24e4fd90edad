// The `dittofsctl` command line: a kubectl-like client of the control API.
//
// Exit codes: 0 success, 1 the server refused or could not be reached, 2 bad flags or arguments
// (caught before any request), 130 a prompt was interrupted.
import { Command, CommanderError } from 'commander';
import { completionScript, COMPLETION_SHELLS, type CompletionShell } from '../cli/completion.js';
import { registerAdapterCommands } from './commands/adapter.js';
import { registerAuthCommands } from './commands/auth.js';
import { withExamples } from './commands/common.js';
import { registerContextCommands } from './commands/context.js';
import { registerGroupCommands } from './commands/group.js';
import { registerSettingsCommands } from './commands/settings.js';
import { registerShareCommands } from './commands/share.js';
import { registerStoreCommands } from './commands/store.js';
import { registerUserCommands } from './commands/user.js';
import { CtlError, EXIT } from './errors.js';
import type { CtlIo } from './io.js';
import { Session } from './session.js';
import { CTL_VERSION } from './version.js';

const PROGRAM_HELP = `
Connection:
  --server URL, else $DITTOFSCTL_SERVER, else the current context's server (set by "login").
  $DITTOFSCTL_TOKEN gives a bearer token to use as it is (for scripts); otherwise the tokens
  saved by "login" are used, and the access token is refreshed when it expires.
  Contexts: $DITTOFSCTL_CONFIG, else $XDG_CONFIG_HOME/dittofsctl/config.json, else
  ~/.config/dittofsctl/config.json.

Output: list and get commands take -o table (default), -o json or -o yaml.
Exit codes: 0 ok, 1 the server refused or cannot be reached, 2 bad usage.

Examples:
  dittofsctl login --server http://localhost:8080 --username admin
  dittofsctl user create --username alice
  dittofsctl share permission grant /export --user alice --level read-write
  dittofsctl share list -o yaml`;

export function buildCtlProgram(s: Session): Command {
  const { io } = s;
  const program = new Command('dittofsctl')
    .description('Manage a DittoFS server through its control API: users, groups, shares, stores, adapters, settings.')
    .version(CTL_VERSION, '-V, --version', 'print the version and exit')
    .helpOption('-h, --help', 'show help')
    .option('-s, --server <url>', "API address, such as http://localhost:8080 (default: the context's)")
    .option('--context <name>', 'context to use instead of the current one')
    .configureHelp({ showGlobalOptions: true, sortSubcommands: false })
    .configureOutput({
      writeOut: (str) => io.out(str),
      writeErr: (str) => io.err(str),
      outputError: (str, write) => write(str.replace(/^error: /, 'dittofsctl: ')),
    })
    .showHelpAfterError('(add --help for usage)')
    .exitOverride()
    .addHelpText('after', PROGRAM_HELP);

  registerAuthCommands(program, s);
  registerContextCommands(program, s);
  registerUserCommands(program, s);
  registerGroupCommands(program, s);
  registerShareCommands(program, s);
  registerStoreCommands(program, s);
  registerAdapterCommands(program, s);
  registerSettingsCommands(program, s);

  withExamples(
    program
      .command('completion')
      .description('print a shell completion script')
      .addArgument(program.createArgument('<shell>', 'bash or zsh').choices(COMPLETION_SHELLS))
      .action((shell: CompletionShell) => {
        io.out(completionScript(program, shell));
      }),
    'dittofsctl completion bash > /etc/bash_completion.d/dittofsctl',
    'dittofsctl completion zsh > ~/.zsh/completions/_dittofsctl',
    "echo 'source <(dittofsctl completion zsh)' >> ~/.zshrc",
  );

  return program;
}

/** Reports a failure on stderr and returns the exit code. Never prints a stack for known errors. */
export function reportError(e: unknown, io: CtlIo): number {
  if (e instanceof CommanderError) {
    // Commander has printed its message (or the help) already.
    return e.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
  }
  if (e instanceof CtlError) {
    io.err(`dittofsctl: ${e.message}\n`);
    if (e.hint !== undefined && e.hint !== '') io.err(`${e.hint}\n`);
    return e.exitCode;
  }
  const err = e as Error;
  io.err(`dittofsctl: internal error: ${err.stack ?? String(e)}\n`);
  return EXIT.FAILURE;
}

/** Runs one command line (the arguments after the program name); resolves to the exit code. */
export async function runCtl(args: readonly string[], io: CtlIo): Promise<number> {
  const session = new Session(io);
  const program = buildCtlProgram(session);
  try {
    await program.parseAsync([...args], { from: 'user' });
    return EXIT.OK;
  } catch (e) {
    return reportError(e, io);
  } finally {
    session.prompter.close();
  }
}
