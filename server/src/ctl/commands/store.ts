// store metadata add|list|get|remove and store block add|list|get|remove (`store payload` is the
// original DittoFS name of block stores).
import { Option, type Command } from 'commander';
import { BLOCK_STORE_TYPES, METADATA_STORE_TYPES } from '../../config/types.js';
import type { StoreKind } from '../../control/types.js';
import { apiPath } from '../client.js';
import type { Column } from '../output.js';
import type { Session } from '../session.js';
import { parseJsonObject } from '../validate.js';
import { outputOption, resultOutputOption, withExamples, type OutputOpts } from './common.js';

/** GET /api/v1/stores/{metadata,block}/:name; secrets in `config` come back as ****. */
export interface ApiStore {
  name: string;
  type: string;
  config: Record<string, unknown>;
}

export const STORE_COLUMNS: readonly Column<ApiStore>[] = [
  { header: 'name', value: (x) => x.name },
  { header: 'type', value: (x) => x.type },
  { header: 'config', value: (x) => x.config },
];

interface KindInfo {
  what: string;
  types: readonly string[];
  configHelp: string;
  examples: (cmd: string) => string[];
}

const KINDS: Readonly<Record<StoreKind, KindInfo>> = {
  metadata: {
    what: 'metadata store',
    types: METADATA_STORE_TYPES,
    configHelp: `
Settings per type (--config, JSON; sizes in bytes, durations in milliseconds):
  memory    none (lost at restart: for tests)
  embedded  {"path": DIR, "engine": "sqlite"|"pglite", "sync": "commit"|"change"}
            (default: under the server's data_dir, sqlite, commit)
  postgres  {"url": "postgres://user:password@host:5432/db", "pool_size": N, "schema": NAME, ...}
Secrets (the password in a postgres URL) are shown as ****.`,
    examples: (c) => [
      `${c} add --name fast-meta --type memory`,
      `${c} add --name persistent --type embedded --config '{"path":"/data/meta"}'`,
      `${c} add --name pg --type postgres --config '{"url":"postgres://dittofs:secret@db:5432/dittofs"}'`,
    ],
  },
  block: {
    what: 'block store',
    types: BLOCK_STORE_TYPES,
    configHelp: `
Settings per type (--config, JSON; sizes in bytes, durations in milliseconds):
  memory      {"block_size": N} (lost at restart: for tests)
  filesystem  {"path": DIR, "block_size": N}  (default path: under the server's data_dir)
  s3          {"bucket": NAME, "region": R, "endpoint": URL, "prefix": P, "force_path_style": true,
               "access_key_id": ID, "secret_access_key": KEY, ...}
Secrets (the S3 secret key) are shown as ****.`,
    examples: (c) => [
      `${c} add --name local --type filesystem --config '{"path":"/data/blocks"}'`,
      `${c} add --name s3-content --type s3 --config '{"bucket":"my-bucket","region":"us-east-1"}'`,
    ],
  },
};

function registerKind(store: Command, s: Session, kind: StoreKind): void {
  const info = KINDS[kind];
  const base = `/stores/${kind}`;
  const group = store.command(kind).description(`manage ${info.what}s`).addHelpText('after', info.configHelp);
  if (kind === 'block') group.alias('payload');
  const c = `dittofsctl store ${kind}`;

  const add = group
    .command('add')
    .alias('create')
    .description(`add a ${info.what}; the server checks that it works before saving it`)
    .requiredOption('--name <name>', 'store name (letters, digits, "_", "." and "-")')
    .addOption(new Option('--type <type>', 'store type').choices(info.types).makeOptionMandatory())
    .option('--config <json>', 'settings of the store type, as a JSON object (default {})')
    .addOption(resultOutputOption())
    .addHelpText('after', info.configHelp)
    .action(async (opts: { name: string; type: string; config?: string } & Partial<OutputOpts>, cmd: Command) => {
      const config = opts.config === undefined ? {} : parseJsonObject(opts.config, '--config');
      const conn = await s.connect(cmd);
      const created = await conn.client.post<ApiStore>(base, { name: opts.name, type: opts.type, config });
      if (opts.output !== undefined) s.print(opts.output, created, STORE_COLUMNS);
      else s.done(`${info.what} "${created.name}" added (${created.type})`);
    });
  withExamples(add, ...info.examples(c));

  withExamples(
    group
      .command('list')
      .alias('ls')
      .description(`list ${info.what}s`)
      .addOption(outputOption())
      .action(async (opts: OutputOpts, cmd: Command) => {
        const conn = await s.connect(cmd);
        s.print(opts.output, await conn.client.get<ApiStore[]>(base), STORE_COLUMNS, `${info.what}s`);
      }),
    `${c} list`,
    `${c} list -o json`,
  );

  withExamples(
    group
      .command('get')
      .description(`show one ${info.what}`)
      .argument('<name>', 'store name')
      .addOption(outputOption())
      .action(async (name: string, opts: OutputOpts, cmd: Command) => {
        const conn = await s.connect(cmd);
        s.print(opts.output, await conn.client.get<ApiStore>(`${base}${apiPath`/${name}`}`), STORE_COLUMNS);
      }),
    `${c} get ${kind === 'metadata' ? 'default' : 'local'} -o yaml`,
  );

  withExamples(
    group
      .command('remove')
      .alias('delete')
      .alias('rm')
      .description(`remove a ${info.what} that no share uses (the data in it is left alone)`)
      .argument('<name>', 'store name')
      .action(async (name: string, _opts: unknown, cmd: Command) => {
        const conn = await s.connect(cmd);
        await conn.client.delete(`${base}${apiPath`/${name}`}`);
        s.done(`${info.what} "${name}" removed`);
      }),
    `${c} remove ${kind === 'metadata' ? 'fast-meta' : 's3-content'}`,
  );
}

export function registerStoreCommands(program: Command, s: Session): void {
  const store = program
    .command('store')
    .description('manage named stores: metadata stores and block stores, which shares use')
    .addHelpText('after', `\n"store payload" is another name for "store block".`);
  registerKind(store, s, 'metadata');
  registerKind(store, s, 'block');
}
