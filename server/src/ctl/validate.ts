// Checks of flags and arguments, run before any request: each returns the parsed value or throws a
// UsageError (exit 2) that names the flag. Messages never quote a value that may be a secret (a
// --config JSON may hold an S3 key), only its position.
import { shareNameProblem } from '../config/schema.js';
import { ACCOUNT_NAME_RE, MAX_ID } from '../control/types.js';
import { UsageError } from './errors.js';

/**
 * `http://host:8080`, `https://host/prefix`, or `host:8080` (http assumed). A trailing `/api/v1`
 * is dropped: the client adds it. Returns the base URL without a trailing slash.
 */
export function parseServerUrl(input: string, flag = '--server'): string {
  const text = input.trim();
  if (text === '') throw new UsageError(`${flag}: expected a URL such as http://localhost:8080, got nothing`);
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch {
    throw new UsageError(`${flag}: not a valid URL: ${JSON.stringify(text)} (expected such as http://localhost:8080)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new UsageError(`${flag}: the URL must start with http:// or https://, got ${JSON.stringify(u.protocol)}`);
  }
  if (u.username !== '' || u.password !== '') throw new UsageError(`${flag}: the URL must not hold credentials; use --username`);
  if (u.search !== '' || u.hash !== '') throw new UsageError(`${flag}: the URL must not have a query or fragment`);
  const pathname = u.pathname.replace(/\/+$/, '').replace(/\/api\/v1$/, '');
  return `${u.origin}${pathname}`;
}

export function parsePort(input: string, flag = '--port'): number {
  const n = /^\d{1,5}$/.test(input.trim()) ? Number(input.trim()) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 65535)
    throw new UsageError(`${flag}: expected a port number from 1 to 65535, got ${JSON.stringify(input)}`);
  return n;
}

/** A uid or gid. */
export function parseId(input: string, flag: string): number {
  const n = /^\d{1,10}$/.test(input.trim()) ? Number(input.trim()) : NaN;
  if (!Number.isInteger(n) || n > MAX_ID)
    throw new UsageError(`${flag}: expected a number from 0 to ${MAX_ID}, got ${JSON.stringify(input)}`);
  return n;
}

/** Mode bits in octal, as chmod takes them: `755`, `0755`, `0o755`. */
export function parseMode(input: string, flag = '--root-mode'): number {
  const m = /^(?:0o?)?([0-7]{1,4})$/i.exec(input.trim());
  if (m?.[1] === undefined) throw new UsageError(`${flag}: expected octal mode bits such as 0755, got ${JSON.stringify(input)}`);
  return parseInt(m[1], 8);
}

/** `a,b, c` -> ['a','b','c']; '' -> [] (to clear a list). */
export function parseList(input: string): string[] {
  return input
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

export function checkAccountName(name: string, what: string): string {
  if (!ACCOUNT_NAME_RE.test(name)) {
    throw new UsageError(
      `${what}: ${JSON.stringify(name)} is not a valid name (lower case letters, digits, "_", "." and "-", starting with a letter or "_", at most 64 characters)`,
    );
  }
  return name;
}

/** Share names are export paths; `export` is taken as `/export`. */
export function normalizeShareName(name: string): string {
  return name.startsWith('/') ? name : `/${name}`;
}

export function checkShareName(name: string, what: string): string {
  const n = normalizeShareName(name.trim());
  const problem = shareNameProblem(n);
  if (problem !== undefined) throw new UsageError(`${what}: the share name ${problem}`);
  return n;
}

/** Where a JSON text stops being JSON, and why; undefined when it is valid. */
export interface JsonSyntaxError {
  /** Offset in UTF-16 code units. */
  pos: number;
  line: number;
  column: number;
  message: string;
}

const PUNCTUATION = new Set(['{', '}', '[', ']', ',', ':', '"', "'"]);

/**
 * A small JSON scanner that finds the first syntax error. JSON.parse's own messages sometimes
 * quote the whole input (and with it any secret in it) and sometimes omit the position.
 */
export function findJsonSyntaxError(text: string): JsonSyntaxError | undefined {
  let i = 0;
  const fail = (message: string): never => {
    throw Object.assign(new Error(message), { pos: i });
  };
  const found = (): string => {
    const ch = text[i];
    if (ch === undefined) return 'the end of the input';
    if (PUNCTUATION.has(ch)) return ch === "'" ? `"'"` : `'${ch}'`;
    if (ch < ' ' || ch === '\u007f') return 'a control character';
    return /[A-Za-z_]/.test(ch) ? 'an unquoted word' : 'an unexpected character';
  };
  const ws = (): void => {
    while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++;
  };
  const literal = (word: string): void => {
    if (text.startsWith(word, i)) i += word.length;
    else fail(`expected a value, found ${found()}${text[i] === "'" ? ' (JSON strings take double quotes)' : ''}`);
  };
  const string = (): void => {
    i++; // opening quote
    for (;;) {
      const ch = text[i];
      if (ch === undefined) fail('unterminated string');
      else if (ch === '"') {
        i++;
        return;
      } else if (ch === '\\') {
        const e = text[i + 1];
        if (e !== undefined && '"\\/bfnrt'.includes(e)) i += 2;
        else if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) i += 6;
        else fail('invalid escape in string');
      } else if (ch < ' ') fail('control character in string (write it as an escape such as \\n)');
      else i++;
    }
  };
  const number = (): void => {
    const m = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/.exec(text.slice(i));
    if (m === null || m[0] === '-' || m[0] === '') fail('invalid number');
    i += m![0].length;
  };
  const value = (depth: number): void => {
    if (depth > 512) fail('nested too deeply');
    ws();
    const ch = text[i];
    if (ch === '{') {
      i++;
      ws();
      if (text[i] === '}') {
        i++;
        return;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail(`expected a property name in double quotes, found ${found()}`);
        string();
        ws();
        if (text[i] !== ':') fail(`expected ':' after the property name, found ${found()}`);
        i++;
        value(depth + 1);
        ws();
        if (text[i] === ',') {
          i++;
          ws();
          if (text[i] === '}') fail("trailing comma before '}'");
          continue;
        }
        if (text[i] === '}') {
          i++;
          return;
        }
        fail(`expected ',' or '}' after a property value, found ${found()}`);
      }
    } else if (ch === '[') {
      i++;
      ws();
      if (text[i] === ']') {
        i++;
        return;
      }
      for (;;) {
        value(depth + 1);
        ws();
        if (text[i] === ',') {
          i++;
          ws();
          if (text[i] === ']') fail("trailing comma before ']'");
          continue;
        }
        if (text[i] === ']') {
          i++;
          return;
        }
        fail(`expected ',' or ']' after an array element, found ${found()}`);
      }
    } else if (ch === '"') string();
    else if (ch === 't') literal('true');
    else if (ch === 'f') literal('false');
    else if (ch === 'n') literal('null');
    else if (ch === '-' || (ch !== undefined && ch >= '0' && ch <= '9')) number();
    else fail(`expected a value, found ${found()}${ch === "'" ? ' (JSON strings take double quotes)' : ''}`);
  };
  try {
    value(0);
    ws();
    if (i < text.length) fail(`expected the end of the input after the JSON value, found ${found()}`);
    return undefined;
  } catch (e) {
    const pos = (e as { pos?: number }).pos ?? i;
    const before = text.slice(0, pos);
    const line = before.split('\n').length;
    const column = pos - before.lastIndexOf('\n');
    return { pos, line, column, message: (e as Error).message };
  }
}

/** A --config value: a JSON object. Errors give the line and column, never the text. */
export function parseJsonObject(text: string, flag = '--config'): Record<string, unknown> {
  const err = findJsonSyntaxError(text);
  if (err !== undefined) {
    const where = text.includes('\n') ? `line ${err.line}, column ${err.column}` : `column ${err.column}`;
    throw new UsageError(
      `${flag}: invalid JSON at ${where} (position ${err.pos}): ${err.message}`,
      `expected a JSON object such as ${flag} '{"path":"/data"}'`,
    );
  }
  const value: unknown = JSON.parse(text);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    const got = value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
    throw new UsageError(`${flag}: expected a JSON object, got ${got}`, `such as ${flag} '{"path":"/data"}'`);
  }
  return value as Record<string, unknown>;
}

/**
 * A setting's value on the command line: JSON numbers and booleans become numbers and booleans,
 * a JSON string in quotes ('"5"') stays a string, anything else is the text as given.
 */
export function parseSettingValue(input: string): string | number | boolean {
  const t = input.trim();
  if (t === 'true') return true;
  if (t === 'false') return false;
  if (/^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/.test(t)) return Number(t);
  if (t.length >= 2 && t.startsWith('"') && t.endsWith('"') && findJsonSyntaxError(t) === undefined) return JSON.parse(t) as string;
  return input;
}
