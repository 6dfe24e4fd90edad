// The `dittofs` command line: server lifecycle and configuration commands.
import { mkdir, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Command, Option } from 'commander';
import { ConfigError } from '../config/errors.js';
import { DEFAULT_CONFIG_FILE, loadConfig, type LoadedConfig } from '../config/load.js';
import { formatConfig, OUTPUT_FORMATS, type OutputFormat } from '../config/render.js';
import { SAMPLE_CONFIG_YAML } from '../config/sample.js';
import { completionScript, COMPLETION_SHELLS, type CompletionShell } from './completion.js';
import { runStart } from './start.js';

// Same relative path from src/cli/ (tsx) and dist/cli/ (built).
const pkg = createRequire(import.meta.url)('../../package.json') as { version: string };
export const VERSION = pkg.version;

const CONFIG_HELP = `
Configuration file:
  --config FILE, else $DITTOFS_CONFIG, else ./dittofs.yaml if it exists, else the built-in
  defaults (an in-memory metadata store, block files under ./data, one share "/export").
  DITTOFS_* environment variables override the file: DITTOFS_DATA_DIR, DITTOFS_LOG_LEVEL,
  DITTOFS_BIND_ADDRESS, DITTOFS_{NFS,SMB,API,METRICS,PORTMAPPER}_PORT,
  DITTOFS_{NFS,SMB,API,METRICS,PORTMAPPER}_ENABLED, DITTOFS_MAX_DIRTY_BYTES,
  DITTOFS_READ_CACHE_BYTES, and any single setting as DITTOFS_<KEY__PATH>, e.g.
  DITTOFS_ADAPTERS__NFS__DRC_SIZE=4096. Relative paths are resolved against the working
  directory. "dittofs config init" writes a commented sample with every key.`;

interface GlobalOptions {
  config?: string;
}

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

export function buildProgram(): Command {
  const program = new Command('dittofs')
    .description('DittoFS server: NFSv3 and SMB2 file shares over pluggable metadata and block stores.')
    .version(VERSION, '-V, --version', 'print the version and exit')
    .helpOption('-h, --help', 'show help')
    .option('-c, --config <file>', 'config file (YAML); default $DITTOFS_CONFIG, else ./dittofs.yaml if present, else built-in defaults')
    .configureHelp({ showGlobalOptions: true, sortSubcommands: false })
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText('after', CONFIG_HELP);

  program
    .command('start')
    .description('run the server in the foreground until SIGTERM or SIGINT')
    .addHelpText(
      'after',
      `
Logs are JSON lines on stdout. The first SIGTERM/SIGINT shuts down gracefully (stop accepting,
drain requests, flush data) and exits 0; a second one exits 1 at once. A startup failure prints
one line to stderr (with the stack at log level debug) and exits 1.`,
    )
    .action(async (_opts: unknown, cmd: Command) => {
      const loaded = await loadOrFail(cmd);
      await runStart(loaded, VERSION);
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
        text = `# effective configuration from ${source}${env}\n${text}`;
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
