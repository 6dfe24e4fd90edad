// `dittofs start`: run the server in the foreground and shut it down cleanly on SIGTERM/SIGINT.
// Every start claims a pid file (default `<data_dir>/dittofs.pid`) before anything starts (refused
// if it names a running server) and removes it at exit, and appends its log to a file (default
// `<data_dir>/dittofs.log`) as well as stdout, so that `dittofs status`, `stop` and `logs` find a
// server however it was started. `dittofs start --background` (daemon.ts) runs this in a detached
// child, whose standard error is the log file: the first admin's generated password then goes to
// that command on a pipe of its own (--admin-password-fd) instead.
import { closeSync, fstatSync, writeSync } from 'node:fs';
import { redactSecrets } from '../config/errors.js';
import type { LoadedConfig } from '../config/load.js';
import { BOOTSTRAP_ADMIN } from '../control/types.js';
import { createProcessLogger, type Logger } from '../obs/logger.js';
import { AlreadyRunningError, claimPidFile, releasePidFileSync } from './pidfile.js';

export interface StartOptions {
  /** Absolute path of the pid file to write; none when undefined. */
  pidFile?: string;
  /** The log file to append to besides stdout (`logFileOf`); none when undefined. */
  logFile?: string;
  /**
   * A file descriptor open on a pipe (or socket) to whoever started this process: the first
   * admin's generated password is written there, once, instead of standard error, and the
   * descriptor is closed at the end of start-up (end of file: nothing more will come).
   */
  adminPasswordFd?: number;
}

/** A pipe a one-time secret is written to once; never a file (a secret in a file stays on disk). */
class OneTimePipe {
  private open = true;

  /** Throws unless `fd` is an open pipe or socket. */
  constructor(readonly fd: number) {
    const st = fstatSync(fd);
    if (!st.isFIFO() && !st.isSocket()) throw new Error(`file descriptor ${fd} is not a pipe (a password is never written to a file)`);
  }

  /** Writes `text` and closes the pipe; false when that failed (the reader is gone). */
  deliver(text: string): boolean {
    if (!this.open) return false;
    try {
      const buf = Buffer.from(text);
      for (let off = 0; off < buf.length;) off += writeSync(this.fd, buf, off);
      return true;
    } catch {
      return false;
    } finally {
      this.close();
    }
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    try {
      closeSync(this.fd);
    } catch {
      // Already gone: nothing to release.
    }
  }
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

  let passwordPipe: OneTimePipe | undefined;
  if (opts.adminPasswordFd !== undefined) {
    try {
      passwordPipe = new OneTimePipe(opts.adminPasswordFd);
    } catch (err) {
      process.stderr.write(`dittofs: --admin-password-fd ${opts.adminPasswordFd}: ${oneLine(err)}\n`);
      process.exit(1);
    }
  }

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
    const pipe = passwordPipe;
    server = await startServer(
      config,
      log,
      pipe === undefined
        ? {}
        : {
            showAdminPassword: (text) => {
              if (pipe.deliver(text)) return;
              // Never to the log instead: whoever reads it could log in as admin first.
              log.warn(
                { user: BOOTSTRAP_ADMIN },
                'the generated admin password could not be shown: the "dittofs start --background" that started this server ' +
                  'is gone (it timed out or was interrupted). Nobody has seen it: set one with "dittofs stop", then ' +
                  '"dittofs admin reset-password"',
              );
            },
          },
    );
    // Start-up is over: end of file for the waiting command, whether a password came or not.
    passwordPipe?.close();
  } catch (err) {
    passwordPipe?.close();
    await new Promise<void>((resolve) => log.flush(() => resolve()));
    // In the background, standard error is the log file: URL passwords masked.
    process.stderr.write(`dittofs: failed to start: ${redactSecrets(oneLine(err))}\n`);
    if (verbose) log.debug({ err }, 'startup failure');
    process.exit(1);
  }
  if (stopping) await shutdown();
}
