// The operator's version, from its package.json (read at run time: the same from src/ and dist/).
import { readFileSync } from 'node:fs';

export const OPERATOR_VERSION: string = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
).version;
