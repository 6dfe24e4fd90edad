// `dittofs start`: run the server in the foreground and shut it down cleanly on SIGTERM/SIGINT.
// Every start claims a pid file (default `<data_dir>/dittofs.pid`) before anything starts (refused
// if it names a running server) and removes it at exit, and appends its log to a file (default
// `<data_dir>/dittofs.log`) as well as stdout, so that `dittofs status`, `stop` and `logs` find a
// server however it was started. `dittofs start --background` (daemon.ts) runs this in a detached
// child.
import type { LoadedConfig } from '../config/load.js';
import { createProcessLogger, type Logger } from '../obs/logger.js';
import { AlreadyRunningError, claimPidFile, releasePidFileSync } from './pidfile.js';

export interface StartOptions {
  /** Absolute path of the pid file to write; none when undefined. */
  pidFile?: string;
  /** The log file to append to besides stdout (`logFileOf`); none when undefined. */
  logFile?: string;
}

interface Closable {
  close(): Promise<void>;
}

/** The error's message on one line; `code` added when the message does not already say it. */
function oneLine(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as NodeJS.ErrnoException).code;
  const msg = err.message.replace(/\s*\n\s*/g, '; ');
  return typeof code === 'string' && !msg.includes(code) ? `${msg} (${code})` : msg;
}

function installCrashHandlers(log: Logger): void {
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'uncaught exception');
    process.exit(1);
  });
  process.on('unhandledRejection', (reason) => {
    log.fatal({ err: reason }, 'unhandled promise rejection');
    process.exit(1);
  });
}

export async function runStart(loaded: LoadedConfig, version: string, opts: StartOptions = {}): Promise<void> {
  const { config, source, overrides } = loaded;
  const { logFile } = opts;
  let log: Logger;
  try {
    log = createProcessLogger(config.logging.level, logFile);
  } catch (err) {
    process.stderr.write(`dittofs: cannot open the log file ${logFile}: ${oneLine(err)}; change logging.file / DITTOFS_LOG_FILE\n`);
    process.exit(1);
  }
  const verbose = log.isLevelEnabled('debug');
  installCrashHandlers(log);

  const { pidFile } = opts;
  if (pidFile !== undefined) {
    try {
      const replaced = await claimPidFile(pidFile);
      if (replaced !== undefined && replaced.state !== 'missing') {
        const was =
          replaced.state === 'invalid' ? 'no pid' : `pid ${replaced.pid} (${replaced.state === 'foreign' ? 'not DittoFS' : 'gone'})`;
        log.warn({ pidFile, was }, 'replaced a stale pid file');
      }
    } catch (err) {
      const message = err instanceof AlreadyRunningError ? err.message : `cannot write the pid file ${pidFile}: ${oneLine(err)}`;
      process.stderr.write(`dittofs: ${message}\n`);
      process.exit(1);
    }
    // Every way out (process.exit included) runs 'exit' handlers; SIGKILL leaves a stale file,
    // which the next start replaces.
    process.on('exit', () => releasePidFileSync(pidFile));
  }

  let server: Closable | undefined;
  let stopping = false;

  const shutdown = async (): Promise<void> => {
    try {
      await server?.close();
      await new Promise<void>((resolve) => log.flush(() => resolve()));
      process.exit(0);
    } catch (err) {
      log.error({ err }, 'shutdown failed');
      process.exit(1);
    }
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting without finishing shutdown');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'shutting down');
    // Before startServer resolves there is nothing to close yet: shut down as soon as it does.
    if (server !== undefined) void shutdown();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  log.info(
    {
      version,
      config: source,
      overrides,
      node: process.version,
      ...(pidFile === undefined ? {} : { pidFile }),
      ...(logFile === undefined ? {} : { logFile }),
    },
    'starting dittofs',
  );
  try {
    const { startServer } = await import('../server.js');
    server = await startServer(config, log);
  } catch (err) {
    await new Promise<void>((resolve) => log.flush(() => resolve()));
    process.stderr.write(`dittofs: failed to start: ${oneLine(err)}\n`);
    if (verbose) log.debug({ err }, 'startup failure');
    process.exit(1);
  }
  if (stopping) await shutdown();
}
