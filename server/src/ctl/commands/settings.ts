// settings list|get|set: run-time settings of the server (logging.level, ...).
import type { Command } from 'commander';
import { apiPath } from '../client.js';
import type { Column } from '../output.js';
import type { Session } from '../session.js';
import { parseSettingValue } from '../validate.js';
import { outputOption, withExamples, type OutputOpts } from './common.js';

/** GET /api/v1/settings/:key; value null: not set through the API (the config file applies). */
export interface ApiSetting {
  key: string;
  value: unknown;
}

const UNSET = '<from config file>';

export const SETTING_COLUMNS: readonly Column<ApiSetting>[] = [
  { header: 'key', value: (x) => x.key },
  { header: 'value', value: (x) => (x.value === null ? UNSET : x.value) },
];

export function registerSettingsCommands(program: Command, s: Session): void {
  const settings = program
    .command('settings')
    .alias('setting')
    .description('show and change run-time settings of the server')
    .addHelpText(
      'after',
      `\nA setting set here overrides the server's config file and applies at once; a key shown as\n${UNSET} has not been set here.`,
    );

  withExamples(
    settings
      .command('list')
      .alias('ls')
      .description('list every known setting and its value')
      .addOption(outputOption())
      .action(async (opts: OutputOpts, cmd: Command) => {
        const conn = await s.connect(cmd);
        const all = await conn.client.get<Record<string, unknown>>('/settings');
        if (opts.output === 'table') {
          const rows = Object.entries(all).map(([key, value]) => ({ key, value }));
          s.print(opts.output, rows, SETTING_COLUMNS, 'settings');
        } else s.print(opts.output, all, []);
      }),
    'dittofsctl settings list',
    'dittofsctl settings list -o json',
  );

  withExamples(
    settings
      .command('get')
      .description('show one setting')
      .argument('<key>', 'setting key, such as logging.level')
      .addOption(outputOption())
      .action(async (key: string, opts: OutputOpts, cmd: Command) => {
        const conn = await s.connect(cmd);
        s.print(opts.output, await conn.client.get<ApiSetting>(apiPath`/settings/${key}`), SETTING_COLUMNS);
      }),
    'dittofsctl settings get logging.level',
  );

  withExamples(
    settings
      .command('set')
      .description('set a setting; the server applies it at once')
      .argument('<key>', 'setting key, such as logging.level')
      .argument(
        '<value>',
        'new value; true, false and numbers are sent as JSON, anything else as text (quote it as \'"5"\' to send the text 5)',
      )
      .action(async (key: string, raw: string, _opts: unknown, cmd: Command) => {
        let value = parseSettingValue(raw);
        // The original DittoFS took upper-case levels (DEBUG); the server's are lower case.
        if (key === 'logging.level' && typeof value === 'string') value = value.toLowerCase();
        const conn = await s.connect(cmd);
        const set = await conn.client.put<ApiSetting>(apiPath`/settings/${key}`, { value });
        s.done(`${set.key} set to ${JSON.stringify(set.value)}`);
      }),
    'dittofsctl settings set logging.level debug',
    'dittofsctl settings set logging.level DEBUG     # levels are case-insensitive here',
  );
}
