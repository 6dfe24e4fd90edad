// Output of list and get commands: `-o table` (the default: aligned columns under upper-case
// headers, no borders, as kubectl prints), `-o json` (the API objects exactly, pretty-printed) or
// `-o yaml` (the same objects as YAML).
import Table from 'cli-table3';
import YAML from 'yaml';

export const OUTPUT_FORMATS = Object.freeze(['table', 'json', 'yaml'] as const);
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/** One table column: its header and how to show a row's value. */
export interface Column<T> {
  header: string;
  value: (row: T) => unknown;
  /** Shown for an empty value instead of <none>. */
  empty?: string;
}

/** Shown for an empty or absent value, as kubectl does. */
export const NONE = '<none>';

/** A cell's text: lists joined with commas, objects as compact JSON, empty as <none>. */
export function cellText(v: unknown, empty = NONE): string {
  if (v === null || v === undefined || v === '') return empty;
  if (Array.isArray(v)) return v.length === 0 ? empty : v.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))).join(',');
  if (typeof v === 'object') return Object.keys(v).length === 0 ? empty : JSON.stringify(v);
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  return JSON.stringify(v) ?? empty;
}

const PLAIN_CHARS = {
  top: '',
  'top-mid': '',
  'top-left': '',
  'top-right': '',
  bottom: '',
  'bottom-mid': '',
  'bottom-left': '',
  'bottom-right': '',
  left: '',
  'left-mid': '',
  mid: '',
  'mid-mid': '',
  right: '',
  'right-mid': '',
  middle: '   ',
} as const;

export function renderTable<T>(columns: readonly Column<T>[], rows: readonly T[]): string {
  const table = new Table({
    head: columns.map((c) => c.header.toUpperCase()),
    chars: PLAIN_CHARS,
    // No colours, no padding: columns are separated by the three spaces of `middle`.
    style: { 'padding-left': 0, 'padding-right': 0, head: [], border: [] },
    wordWrap: false,
  });
  for (const row of rows) table.push(columns.map((c) => cellText(c.value(row), c.empty).replace(/[\r\n\t]+/g, ' ')));
  return `${table
    .toString()
    .split('\n')
    .map((line) => line.trimEnd())
    .join('\n')}\n`;
}

export function renderJson(data: unknown): string {
  return `${JSON.stringify(data, null, 2)}\n`;
}

export function renderYaml(data: unknown): string {
  // Long strings (tokens, URLs) stay on one line; keys keep the API's order.
  return YAML.stringify(data, { lineWidth: 0 });
}

export function render<T>(format: OutputFormat, data: T | readonly T[], columns: readonly Column<T>[]): string {
  switch (format) {
    case 'json':
      return renderJson(data);
    case 'yaml':
      return renderYaml(data);
    case 'table':
      return renderTable(columns, Array.isArray(data) ? (data as readonly T[]) : [data as T]);
  }
}
