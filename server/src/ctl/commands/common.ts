// Pieces shared by the command modules.
import { Option, type Command } from 'commander';
import { OUTPUT_FORMATS, type OutputFormat } from '../output.js';

export interface OutputOpts {
  output: OutputFormat;
}

export function outputOption(): Option {
  return new Option('-o, --output <format>', 'output format: table, json (the API objects) or yaml')
    .choices(OUTPUT_FORMATS)
    .default('table');
}

/** -o on create and update: print the resulting object instead of a one-line message. */
export function resultOutputOption(): Option {
  return new Option('-o, --output <format>', 'print the result as table, json or yaml instead of a message').choices(OUTPUT_FORMATS);
}

/** `--help` text after the options: examples, one command per line. */
export function withExamples(cmd: Command, ...lines: string[]): Command {
  return cmd.addHelpText('after', `\nExamples:\n${lines.map((l) => `  ${l}`).join('\n')}`);
}

/** `--enabled`/`--disabled`-like pairs: undefined when neither is given. */
export function flagPair(on: boolean | undefined, off: boolean | undefined): boolean | undefined {
  if (on === true) return true;
  if (off === true) return false;
  return undefined;
}

/** Drops undefined fields, so a PATCH sends only what was asked for. */
export function defined<T extends Record<string, unknown>>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
