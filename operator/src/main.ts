// The operator's entry point: flags and environment -> OperatorConfig -> DittofsOperator, until
// SIGTERM or SIGINT (then the Lease is released and reconciles in flight finish).
import { ConfigError, parseConfig, USAGE } from './config.js';
import { createLogger, errorFields } from './log.js';
import { DittofsOperator } from './operator.js';
import { OPERATOR_VERSION } from './version.js';
import { redactingLogger, SecretValues } from './kube/redact.js';

export async function main(argv: string[] = process.argv.slice(2)): Promise<number> {
  let parsed;
  try {
    parsed = parseConfig(argv);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`dittofs-operator: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if ('help' in parsed) {
    process.stdout.write(USAGE);
    return 0;
  }
  if ('version' in parsed) {
    process.stdout.write(`${OPERATOR_VERSION}\n`);
    return 0;
  }
  const cfg = parsed.config;
  // Every log line, this process's own included, is kept free of the Secret values the operator reads.
  const secrets = new SecretValues();
  const log = redactingLogger(createLogger({ level: cfg.logLevel, fields: { name: 'dittofs-operator' } }), secrets);
  // A bug must not take the operator down silently, nor a stray rejection take it down at all:
  // every promise of the controllers is handled; this is the net under them.
  process.on('unhandledRejection', (reason) => log.error('unhandled rejection', errorFields(reason, true)));

  const operator = new DittofsOperator(cfg, { log, secrets });
  let stopping: Promise<void> | undefined;
  const done = new Promise<number>((resolve) => {
    const stop = (signal: string): void => {
      if (stopping !== undefined) return;
      log.info('stopping', { signal });
      stopping = operator.shutdown().then(
        () => resolve(0),
        (e: unknown) => {
          log.error('stopping failed', errorFields(e, true));
          resolve(1);
        },
      );
      // A second signal, or a shutdown that hangs, ends it anyway.
      setTimeout(() => resolve(1), 30_000).unref();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  log.info('starting', { version: OPERATOR_VERSION, namespaces: cfg.namespaces, podAddressMode: cfg.podAddressMode });
  try {
    await operator.start();
  } catch (e) {
    log.error('start failed', errorFields(e, true));
    await operator.shutdown().catch(() => undefined);
    return 1;
  }
  return done;
}
