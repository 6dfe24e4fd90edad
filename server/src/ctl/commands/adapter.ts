// adapter list|get|update (and add/remove, the original DittoFS words for enable/disable: both
// adapters always exist, they are only switched on or off).
import type { Command } from 'commander';
import { ADAPTER_TYPES, type AdapterType } from '../../control/types.js';
import { apiPath } from '../client.js';
import { UsageError } from '../errors.js';
import type { Column } from '../output.js';
import type { Session } from '../session.js';
import { parseJsonObject, parsePort } from '../validate.js';
import { flagPair, outputOption, resultOutputOption, withExamples, type OutputOpts } from './common.js';

/** GET /api/v1/adapters/:type. */
export interface ApiAdapter {
  type: string;
  enabled: boolean;
  port: number;
  /** The server listens for it now (older servers do not say). */
  served?: boolean;
  /** The port the server listens on for it (absent: not served). */
  listening_port?: number;
  /** Why what is served differs from enabled/port (a port that could not be bound, ...). */
  note?: string;
}

export const ADAPTER_COLUMNS: readonly Column<ApiAdapter>[] = [
  { header: 'type', value: (a) => a.type },
  { header: 'enabled', value: (a) => a.enabled },
  { header: 'port', value: (a) => a.port },
  {
    header: 'served',
    value: (a) =>
      a.served === undefined ? '' : !a.served ? 'no' : a.listening_port === undefined ? 'yes' : `yes, port ${a.listening_port}`,
  },
  { header: 'note', value: (a) => a.note ?? '' },
];

interface UpdateOpts extends Partial<OutputOpts> {
  enabled?: boolean;
  disabled?: boolean;
  port?: string;
  config?: string;
}

/** The PATCH body from --enabled/--disabled, --port and --config '{"enabled":..,"port":..}'. */
function patchBody(o: UpdateOpts): { enabled?: boolean; port?: number } {
  if (o.enabled === true && o.disabled === true) throw new UsageError('--enabled and --disabled exclude each other');
  const body: { enabled?: boolean; port?: number } = {};
  if (o.config !== undefined) {
    const cfg = parseJsonObject(o.config, '--config');
    for (const [k, v] of Object.entries(cfg)) {
      if (k === 'enabled') {
        if (typeof v !== 'boolean') throw new UsageError('--config: "enabled" must be true or false');
        body.enabled = v;
      } else if (k === 'port') {
        if (typeof v !== 'number') throw new UsageError('--config: "port" must be a number');
        body.port = parsePort(String(v), '--config: "port"');
      } else throw new UsageError(`--config: unknown key ${JSON.stringify(k)} (an adapter has "enabled" and "port")`);
    }
  }
  const enabled = flagPair(o.enabled, o.disabled);
  if (enabled !== undefined) body.enabled = enabled;
  if (o.port !== undefined) body.port = parsePort(o.port);
  return body;
}

function typeArgument(cmd: Command): Command {
  return cmd.addArgument(cmd.createArgument('<type>', `adapter: ${ADAPTER_TYPES.join(' or ')}`).choices(ADAPTER_TYPES));
}

export function registerAdapterCommands(program: Command, s: Session): void {
  const adapter = program
    .command('adapter')
    .description('show and change the protocol adapters (nfs, smb): on or off, and their port')
    .addHelpText(
      'after',
      '\nEvery server on the control database applies a change at once: it starts, stops or moves the\n' +
        'listener (a move starts the new port first; a port that cannot be bound leaves the old one\n' +
        'serving, and "served" and "note" say so). A change lasts until the server restarts: a start\n' +
        'listens where its config file says; put a change there to keep it.',
    );

  withExamples(
    adapter
      .command('list')
      .alias('ls')
      .description('list the adapters')
      .addOption(outputOption())
      .action(async (opts: OutputOpts, cmd: Command) => {
        const conn = await s.connect(cmd);
        s.print(opts.output, await conn.client.get<ApiAdapter[]>('/adapters'), ADAPTER_COLUMNS, 'adapters');
      }),
    'dittofsctl adapter list',
  );

  withExamples(
    typeArgument(adapter.command('get').description('show one adapter'))
      .addOption(outputOption())
      .action(async (type: AdapterType, opts: OutputOpts, cmd: Command) => {
        const conn = await s.connect(cmd);
        s.print(opts.output, await conn.client.get<ApiAdapter>(apiPath`/adapters/${type}`), ADAPTER_COLUMNS);
      }),
    'dittofsctl adapter get nfs -o json',
  );

  const update = async (
    type: AdapterType,
    body: { enabled?: boolean; port?: number },
    output: UpdateOpts['output'],
    cmd: Command,
  ): Promise<void> => {
    const conn = await s.connect(cmd);
    const a = await conn.client.patch<ApiAdapter>(apiPath`/adapters/${type}`, body);
    if (output !== undefined) s.print(output, a, ADAPTER_COLUMNS);
    else s.done(`adapter ${a.type} ${a.enabled ? 'enabled' : 'disabled'}, port ${a.port}${a.note === undefined ? '' : ` (${a.note})`}`);
  };

  withExamples(
    typeArgument(adapter.command('update').description('turn an adapter on or off, or move it to another port'))
      .option('--enabled', 'turn the adapter on')
      .option('--disabled', 'turn the adapter off')
      .option('--port <port>', 'TCP port to listen on (1-65535)')
      .option('--config <json>', 'the same as a JSON object: {"enabled": true, "port": 2049}')
      .addOption(resultOutputOption())
      .action(async (type: AdapterType, opts: UpdateOpts, cmd: Command) => {
        const body = patchBody(opts);
        if (Object.keys(body).length === 0) throw new UsageError('nothing to change: give --enabled, --disabled, --port or --config');
        await update(type, body, opts.output, cmd);
      }),
    'dittofsctl adapter update nfs --port 12049',
    'dittofsctl adapter update smb --disabled',
    `dittofsctl adapter update nfs --config '{"port":2049}'`,
  );

  withExamples(
    adapter
      .command('add')
      .alias('enable')
      .description('turn an adapter on (optionally on another port); same as "update TYPE --enabled"')
      .argument('[type]', `adapter: ${ADAPTER_TYPES.join(' or ')}`)
      .option('--type <type>', 'same as the argument')
      .option('--port <port>', 'TCP port to listen on (1-65535)')
      .addOption(resultOutputOption())
      .action(async (positional: string | undefined, opts: { type?: string; port?: string } & Partial<OutputOpts>, cmd: Command) => {
        const type = positional ?? opts.type;
        if (type === undefined) throw new UsageError('give the adapter type: nfs or smb');
        if (!(ADAPTER_TYPES as readonly string[]).includes(type))
          throw new UsageError(`expected adapter type ${ADAPTER_TYPES.join(' or ')}, got ${JSON.stringify(type)}`);
        const body: { enabled: boolean; port?: number } = { enabled: true };
        if (opts.port !== undefined) body.port = parsePort(opts.port);
        await update(type as AdapterType, body, opts.output, cmd);
      }),
    'dittofsctl adapter add --type nfs --port 12049',
    'dittofsctl adapter enable smb',
  );

  withExamples(
    typeArgument(adapter.command('remove').alias('disable').description('turn an adapter off; same as "update TYPE --disabled"'))
      .addOption(resultOutputOption())
      .action(async (type: AdapterType, opts: Partial<OutputOpts>, cmd: Command) => {
        await update(type, { enabled: false }, opts.output, cmd);
      }),
    'dittofsctl adapter remove smb',
  );
}
