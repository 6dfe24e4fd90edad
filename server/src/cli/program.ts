// The `dittofs` command line: server lifecycle and configuration commands.
import { mkdir, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { existsSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { ConfigError } from '../config/errors.js';
import { DEFAULT_CONFIG_FILE, loadConfig, type LoadedConfig } from '../config/load.js';
import { formatConfig, OUTPUT_FORMATS, type OutputFormat } from '../config/render.js';
import { SAMPLE_CONFIG_YAML } from '../config/sample.js';
import { resetPassword } from './admin.js';
import { backupControlPlane, restoreControlPlane } from './backup.js';
import { BOOTSTRAP_ADMIN } from '../control/types.js';
import { completionScript, COMPLETION_SHELLS, type CompletionShell } from './completion.js';
import {
  ADMIN_PASSWORD_FD_OPTION,
  CliFailure,
  formatStatus,
  logFileOf,
  pidFileOf,
  serverStatus,
  startBackground,
  statusExitCode,
  stopServer,
} from './daemon.js';
import { parseSince, showLogs } from './logs.js';
import { runStart } from './start.js';
import { ADAPTER_TYPES } from '../control/types.js';
import { implementedProtocolTitles, notServedReason, PROTOCOL_ENGINES, protocolImplemented } from '../protocols.js';

// Same relative path from src/cli/ (tsx) and dist/cli/ (built).
const pkg = createRequire(import.meta.url)('../../package.json') as { version: string };
export const VERSION = pkg.version;

const CONFIG_HELP = `
Configuration file:
  --config FILE, else $DITTOFS_CONFIG, else ./dittofs.yaml if it exists, else the built-in
  defaults (everything under ./data: an embedded metadata store and control database, block
  files; one share "/export").
  DITTOFS_* environment variables override the file: DITTOFS_DATA_DIR, DITTOFS_LOG_LEVEL,
  DITTOFS_LOG_FILE, DITTOFS_BIND_ADDRESS, DITTOFS_{NFS,SMB,API,METRICS,PORTMAPPER}_PORT,
  DITTOFS_{NFS,SMB,API,METRICS,PORTMAPPER}_ENABLED, DITTOFS_MAX_DIRTY_BYTES,
  DITTOFS_READ_CACHE_BYTES, and any single setting as DITTOFS_<KEY__PATH>, e.g.
  DITTOFS_ADAPTERS__NFS__DRC_SIZE=4096. Relative paths are resolved against the working
  directory. "dittofs config init" writes a commented sample with every key.`;

interface GlobalOptions {
  config?: string;
}

/** Runs a command's body; a CliFailure is reported as "dittofs: MESSAGE" with its exit code. */
async function guarded(body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    if (err instanceof CliFailure) fail(err.message, err.exitCode);
    throw err;
  }
}

function parseSeconds(text: string): number {
  const n = Number(text);
  if (!/^\d+(?:\.\d+)?$/.test(text.trim()) || !Number.isFinite(n) || n <= 0 || n > 86_400) {
    throw new InvalidArgumentError('expected a number of seconds from 1 to 86400, such as 30');
  }
  return n;
}

function parseFd(text: string): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) < 3 || Number(text) > 1_000_000) {
    throw new InvalidArgumentError('expected a file descriptor number of 3 or more');
  }
  return Number(text);
}

function parseLineCount(text: string): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) > 10_000_000) throw new InvalidArgumentError('expected a number of lines, such as 100');
  return Number(text);
}

function parseSinceOption(text: string): Date {
  try {
    return parseSince(text);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message.replace(/^--since "[^"]*": /, ''));
  }
}

/** Writes to stdout, waiting when the pipe is full; a closed pipe (`| head`) ends the process quietly. */
function stdoutWriter(): (text: string) => Promise<void> {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
  return (text) =>
    new Promise((resolve) => {
      if (process.stdout.write(text)) resolve();
      else process.stdout.once('drain', resolve);
    });
}

const PID_FILE_OPTION = ['--pid-file <file>', 'pid file of the server (default <data_dir>/dittofs.pid)'] as const;

/** Writes a problem to stderr in one place, so every command reports errors the same way. */
function fail(message: string, code = 1): never {
  process.stderr.write(`dittofs: ${message}\n`);
  process.exit(code);
}

async function loadOrFail(cmd: Command): Promise<LoadedConfig> {
  const { config } = cmd.optsWithGlobals<GlobalOptions>();
  try {
    return await loadConfig(config === undefined ? {} : { file: config });
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
}

async function initConfig(cmd: Command, force: boolean): Promise<void> {
  const { config } = cmd.optsWithGlobals<GlobalOptions>();
  const envFile = process.env.DITTOFS_CONFIG;
  const target = path.resolve(config ?? (envFile !== undefined && envFile !== '' ? envFile : DEFAULT_CONFIG_FILE));
  try {
    await mkdir(path.dirname(target), { recursive: true });
    await writeFile(target, SAMPLE_CONFIG_YAML, { flag: force ? 'w' : 'wx', mode: 0o644 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EEXIST') fail(`${target} already exists (use --force to overwrite it)`);
    fail(`cannot write ${target}: ${e.message}`);
  }
  process.stdout.write(`wrote sample config to ${target}\nedit it, then check it with: dittofs config validate --config ${target}\n`);
}

/** For --help: the adapters the config accepts whose engine this version lacks. */
function notServedNote(): string {
  const missing = ADAPTER_TYPES.filter((t) => !protocolImplemented(t)).map((t) => PROTOCOL_ENGINES[t].title);
  return missing.length === 0 ? '' : ` (${missing.join(', ')}: not served by this version yet; its settings are accepted)`;
}

export function buildProgram(): Command {
  const program = new Command('dittofs')
    .description(
      `DittoFS server: ${implementedProtocolTitles().join(' and ')} file shares over pluggable metadata and block stores.` +
        notServedNote(),
    )
    .version(VERSION, '-V, --version', 'print the version and exit')
    .helpOption('-h, --help', 'show help')
    .option('-c, --config <file>', 'config file (YAML); default $DITTOFS_CONFIG, else ./dittofs.yaml if present, else built-in defaults')
    .configureHelp({ showGlobalOptions: true, sortSubcommands: false })
    .showHelpAfterError('(run with --help for usage)')
    // A usage error (unknown command or option, bad option value, missing argument) exits 2, as
    // dittofsctl's do: 1 is `status`'s "running but not ready". Help and --version exit 0.
    // Set before the subcommands are made, which inherit it.
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2))
    .addHelpText('after', CONFIG_HELP);

  program
    .command('start')
    .description('start the server: in the foreground (the default) or detached in the background')
    .addOption(new Option('--foreground', 'run in this process until SIGTERM or SIGINT (the default)').conflicts('background'))
    .option('-d, --background', 'run detached: wait until the server is ready, print where it runs, return')
    .option(
      '--pid-file <file>',
      'write the pid to this file while running, refuse to start if it names a running server (default <data_dir>/dittofs.pid)',
    )
    .option('--timeout <seconds>', 'with --background: the longest wait for the server to be ready', parseSeconds, 60)
    // How --background hands the child a pipe for the one-time password: internal, so not in --help.
    .addOption(
      new Option(`${ADMIN_PASSWORD_FD_OPTION} <fd>`, "write the first admin's generated password to this pipe instead of stderr")
        .argParser(parseFd)
        .conflicts('background')
        .hideHelp(),
    )
    .addHelpText(
      'after',
      `
Every start writes its pid to <data_dir>/dittofs.pid (or --pid-file), removed at exit, and
appends its log to logging.file, default <data_dir>/dittofs.log (logging.file "-": standard
output only), so that "dittofs status", "stop" and "logs" find it however it was started. Before
any database, store or WAL is created or opened, every listen port is checked: a port in use
stops the start at once (the log file, and the data directory holding it, may already exist).

Foreground: logs are JSON lines on stdout (and in the log file); each start-up phase logs a
"start-up:" line with how long it took. The first SIGTERM/SIGINT shuts down gracefully (stop
accepting, drain requests, flush data) and exits 0; a second one exits 1 at once. A startup
failure prints one line to stderr (with the stack at log level debug) and exits 1.

Background (-d): the server runs in its own session with stdout and stderr appended to the log
file. The command returns 0 once GET /health/ready answers 200 (API off: once NFS accepts
connections), and 1 if the server is already running, exits while starting (its last log lines
are shown), or is not ready within --timeout. On the first start, the admin's generated password
is printed by this command, once: the server hands it over on a pipe of its own, never through
the log file. Should this command be gone by then (--timeout, Ctrl-C), nobody sees it: the log
says so; then "dittofs stop" and "dittofs admin reset-password".

Examples:
  dittofs start                                   # foreground, logs on stdout
  dittofs start --pid-file /run/dittofs.pid       # foreground, the pid file elsewhere
  dittofs start -d                                # background; then: dittofs status, logs -f, stop
  dittofs start -d --config /etc/dittofs/dittofs.yaml --timeout 120`,
    )
    .action(async (opts: { background?: boolean; pidFile?: string; timeout: number; adminPasswordFd?: number }, cmd: Command) => {
      const loaded = await loadOrFail(cmd);
      if (opts.background === true) {
        await guarded(() =>
          startBackground({
            config: loaded.config,
            configFile: cmd.optsWithGlobals<GlobalOptions>().config,
            pidFile: pidFileOf(loaded.config, opts.pidFile),
            timeoutMs: opts.timeout * 1000,
            out: (t) => process.stdout.write(t),
          }),
        );
        return;
      }
      const logFile = logFileOf(loaded.config);
      await runStart(loaded, VERSION, {
        pidFile: pidFileOf(loaded.config, opts.pidFile),
        ...(logFile === undefined ? {} : { logFile }),
        ...(opts.adminPasswordFd === undefined ? {} : { adminPasswordFd: opts.adminPasswordFd }),
      });
    });

  program
    .command('stop')
    .description('stop the server named by the pid file: SIGTERM, then wait until it has exited')
    .option('-f, --force', 'SIGKILL at once; with --timeout, SIGKILL only if SIGTERM did not stop it in time')
    .option(...PID_FILE_OPTION)
    .option('--timeout <seconds>', 'how long to wait for the exit after SIGTERM', parseSeconds, 30)
    .addHelpText(
      'after',
      `
A graceful stop drains requests and flushes written data to the block store, which can take a
while. SIGKILL loses nothing acknowledged as stable (the WAL is replayed at the next start) but
drops requests in flight.

Exit codes: 0 stopped, or not running (no pid file; a stale one, whose process is gone, is
removed); 1 still running after --timeout, or the pid file names a process that is not DittoFS
(left alone).

Examples:
  dittofs stop
  dittofs stop --timeout 120                      # a big upload to finish first
  dittofs stop --force                            # SIGKILL now
  dittofs stop --force --timeout 10               # SIGTERM, SIGKILL after 10 s
  dittofs stop --pid-file /run/dittofs.pid`,
    )
    .action(async (opts: { force?: boolean; pidFile?: string; timeout: number }, cmd: Command) => {
      const { config } = await loadOrFail(cmd);
      const explicitTimeout = cmd.getOptionValueSource('timeout') === 'cli';
      await guarded(async () => {
        const code = await stopServer({
          pidFile: pidFileOf(config, opts.pidFile),
          force: opts.force === true,
          timeoutMs: opts.force === true && !explicitTimeout ? undefined : opts.timeout * 1000,
          out: (t) => process.stdout.write(t),
          err: (t) => process.stderr.write(t),
        });
        process.exitCode = code;
      });
    });

  program
    .command('status')
    .description('is the server running (pid file, process) and ready (GET /health/ready)?')
    .option(...PID_FILE_OPTION)
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .addHelpText(
      'after',
      `
Readiness is GET /health/ready on the API port (at 127.0.0.1 when the API listens on 0.0.0.0),
with its checks (WAL replayed, NFS listening, each store answering); with the API off, whether
the NFS port accepts connections.

Exit codes (as LSB init scripts): 0 running and ready; 1 running but not ready (or not answering);
3 not running (no pid file, or its process is gone or is not DittoFS); 2 a usage error (as for
every command: an unknown option, a bad value).

Examples:
  dittofs status
  dittofs status -o json | jq .checks
  dittofs status --pid-file /run/dittofs.pid || echo "not ready"`,
    )
    .action(async (opts: { pidFile?: string; output: 'text' | 'json' }, cmd: Command) => {
      const { config } = await loadOrFail(cmd);
      const s = await serverStatus(config, pidFileOf(config, opts.pidFile));
      process.stdout.write(opts.output === 'json' ? `${JSON.stringify(s, null, 2)}\n` : formatStatus(s));
      process.exitCode = statusExitCode(s);
    });

  program
    .command('logs')
    .description('show the server log file: the last lines, the lines since a time, or follow it')
    .option('-f, --follow', 'keep printing lines as they are written, until Ctrl-C')
    .option('-n, --lines <n>', 'the last N lines (default 100; with --since, all lines since)', parseLineCount)
    .option(
      '--since <time>',
      'lines at or after a time: RFC 3339 (2024-01-15T10:00:00Z) or a duration ago (30s, 10m, 2h, 1h30m, 1d)',
      parseSinceOption,
    )
    .addHelpText(
      'after',
      `
The file is logging.file (DITTOFS_LOG_FILE), else <data_dir>/dittofs.log, where every start
appends its log. With logging.file "-" the server logs to stdout only (as in Kubernetes:
kubectl logs). Lines are printed as written (JSON; pipe them through jq); --since compares their
"time" field.

Examples:
  dittofs logs                                    # the last 100 lines
  dittofs logs -n 50
  dittofs logs -f                                 # follow
  dittofs logs --since 10m
  dittofs logs --since 2024-01-15T10:00:00Z -n 20
  dittofs logs -n 0 -f | jq -r 'select(.level == "error") | .msg'`,
    )
    .action(async (opts: { follow?: boolean; lines?: number; since?: Date }, cmd: Command) => {
      const { config } = await loadOrFail(cmd);
      const file = logFileOf(config);
      if (file === undefined) {
        fail('logging.file is "-": the server logs to standard output only (no log file to show); set logging.file to keep one');
      }
      if (!existsSync(file)) {
        fail(`no log file at ${file}: no server has started with this config yet (every start appends its log there)`);
      }
      const controller = new AbortController();
      const stop = (): void => controller.abort();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      await showLogs({
        file,
        lines: opts.lines ?? (opts.since === undefined ? 100 : undefined),
        since: opts.since,
        follow: opts.follow === true,
        write: stdoutWriter(),
        note: (t) => process.stderr.write(`dittofs: ${t}\n`),
        signal: controller.signal,
      });
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    });

  const SECRETS_NOTE = `
The backup holds secrets: password and NT hashes of every user, store credentials (S3 keys,
PostgreSQL URLs) and the token signing key when it was generated. It is written with mode 0600;
keep it as you would keep those secrets.`;

  program
    .command('backup')
    .description('back up server state')
    .command('controlplane')
    .description('write the control database (users, groups, stores, shares, permissions, adapters, settings) to a JSON file')
    .requiredOption('--output <file>', 'the backup file, written with mode 0600 into an existing directory ("-": standard output)')
    .option(...PID_FILE_OPTION)
    .addHelpText(
      'after',
      `${SECRETS_NOTE}

The database is the config's "database" settings. While a server runs on this data directory
(its pid file names it), the backup is asked of that server through its local socket
<data_dir>/dittofs.sock (mode 0600; an embedded database can be opened by one process only);
otherwise the database is opened here. The document is read in one transaction: it is consistent.

Examples:
  dittofs backup controlplane --output /var/backups/dittofs-control.json
  dittofs backup controlplane --output - | gpg -e -r ops > control.json.gpg`,
    )
    .action(async (opts: { output: string; pidFile?: string }, cmd: Command) => {
      const { config } = await loadOrFail(cmd);
      await guarded(() =>
        backupControlPlane({
          config,
          pidFile: pidFileOf(config, opts.pidFile),
          output: opts.output,
          version: VERSION,
          note: (t) => process.stderr.write(t),
          stdout: (t) => process.stdout.write(t),
        }),
      );
    });

  program
    .command('restore')
    .description('restore server state from a backup')
    .command('controlplane')
    .description('replace the whole control database with a backup made by "dittofs backup controlplane"')
    .requiredOption('--input <file>', 'the backup file ("-": standard input)')
    .option('-f, --force', 'replace a control database that is not empty')
    .option(...PID_FILE_OPTION)
    .addHelpText(
      'after',
      `${SECRETS_NOTE}

The file is checked first (format, version, every field and reference); then everything is
replaced in one transaction, or nothing is. A database that holds anything (a server has started
on it: it has the admin user) is refused without --force. Stop the servers that use the database
first. Tokens issued before the restore stop working: users log in again (with the passwords of
the backup). The config file's stores and shares missing from the backup are added again at the
next start.

Examples:
  dittofs restore controlplane --input /var/backups/dittofs-control.json
  dittofs restore controlplane --input control.json --force --config /etc/dittofs/dittofs.yaml`,
    )
    .action(async (opts: { input: string; force?: boolean; pidFile?: string }, cmd: Command) => {
      const { config } = await loadOrFail(cmd);
      await guarded(() =>
        restoreControlPlane({
          config,
          pidFile: pidFileOf(config, opts.pidFile),
          input: opts.input,
          force: opts.force === true,
          note: (t) => process.stdout.write(t),
        }),
      );
    });

  program
    .command('admin')
    .description('offline administration of the control database (server stopped)')
    .command('reset-password')
    .description('set a new password for a user (default: admin) in the control database, with the server stopped')
    .argument('[user]', 'the user whose password to reset', BOOTSTRAP_ADMIN)
    .option('--password-stdin', 'read the new password from one line of standard input instead of prompting')
    .option('--must-change', 'the user must change the password at the next login')
    .option(...PID_FILE_OPTION)
    .addHelpText(
      'after',
      `
For a lost admin password (the first start prints a generated one once). The server must be
stopped: with a running server (its pid file names it) the command refuses, as it does when the
embedded control database is open in another process. The password is 8 characters to 72 bytes;
on a terminal it is prompted twice without echo. The user's tokens are revoked.

Examples:
  dittofs stop && dittofs admin reset-password && dittofs start -d
  echo "$NEW_PASSWORD" | dittofs admin reset-password alice --password-stdin --must-change`,
    )
    .action(async (user: string, opts: { passwordStdin?: boolean; mustChange?: boolean; pidFile?: string }, cmd: Command) => {
      const { config } = await loadOrFail(cmd);
      await guarded(() =>
        resetPassword({
          config,
          pidFile: pidFileOf(config, opts.pidFile),
          username: user,
          passwordStdin: opts.passwordStdin === true,
          mustChange: opts.mustChange === true,
          io: {
            stdin: process.stdin,
            interactive: opts.passwordStdin !== true && process.stdin.isTTY === true && process.stderr.isTTY === true,
            promptOutput: process.stderr,
          },
          out: (t) => process.stdout.write(t),
        }),
      );
    });

  const configCmd = program.command('config').description('create, show and check the configuration file');

  const initAction = async (opts: { force?: boolean }, cmd: Command): Promise<void> => {
    await initConfig(cmd, opts.force === true);
  };
  configCmd
    .command('init')
    .description('write a commented sample config (to --config FILE, $DITTOFS_CONFIG or ./dittofs.yaml)')
    .option('-f, --force', 'overwrite the file if it exists')
    .action(initAction);

  configCmd
    .command('show')
    .description('print the effective configuration: the file, over the defaults, with environment overrides')
    .addOption(new Option('-o, --output <format>', 'output format').choices(OUTPUT_FORMATS).default('yaml'))
    .action(async (opts: { output: OutputFormat }, cmd: Command) => {
      const { config, source, overrides } = await loadOrFail(cmd);
      let text = formatConfig(config, opts.output);
      if (opts.output === 'yaml') {
        const env = overrides.length > 0 ? `\n# environment overrides: ${overrides.join(', ')}` : '';
        const notServed = ADAPTER_TYPES.flatMap((t) => {
          const why = notServedReason(t, config.adapters[t].enabled);
          return why === undefined ? [] : [`\n# adapters.${t}: enabled, but ${why}`];
        }).join('');
        text = `# effective configuration from ${source}${env}${notServed}\n${text}`;
      }
      process.stdout.write(text);
    });

  configCmd
    .command('validate')
    .description('check the configuration (file, defaults and environment); exit 1 listing every problem')
    .action(async (_opts: unknown, cmd: Command) => {
      const { source, overrides } = await loadOrFail(cmd);
      process.stdout.write(`config OK: ${source}\n`);
      if (overrides.length > 0) process.stdout.write(`environment overrides: ${overrides.join(', ')}\n`);
    });

  program.command('init').description('same as "config init"').option('-f, --force', 'overwrite the file if it exists').action(initAction);

  program
    .command('completion')
    .description('print a shell completion script')
    .addArgument(program.createArgument('<shell>', 'bash or zsh').choices(COMPLETION_SHELLS))
    .addHelpText(
      'after',
      `
Examples:
  dittofs completion bash > /etc/bash_completion.d/dittofs
  echo 'source <(dittofs completion zsh)' >> ~/.zshrc`,
    )
    .action((shell: CompletionShell) => {
      process.stdout.write(completionScript(program, shell));
    });

  return program;
}
