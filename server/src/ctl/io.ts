// What a dittofsctl run talks to: output streams, stdin, the environment and HTTP. The binary
// passes the process's own; unit tests pass fakes, so a whole command line runs in-process.
import os from 'node:os';
import type { Readable } from 'node:stream';
import { httpFetch, type FetchLike } from './http.js';

export interface CtlIo {
  /** Writes to stdout (results: tables, JSON, YAML). */
  out(text: string): void;
  /** Writes to stderr (progress notes, errors, prompts). */
  err(text: string): void;
  stdin: Readable & { isTTY?: boolean };
  /** True when prompts can be shown (stdin and stderr are terminals). */
  interactive: boolean;
  /** Where interactive prompts draw (stderr, so stdout stays clean for results). */
  promptOutput: NodeJS.WritableStream;
  env: Readonly<Record<string, string | undefined>>;
  /** HTTP requests: httpFetch (node:http, reaching any port; see http.ts). */
  fetch: FetchLike;
  /** Home directory, for ~/.config/dittofsctl. */
  homedir: string;
}

export function processIo(): CtlIo {
  return {
    out: (t) => void process.stdout.write(t),
    err: (t) => void process.stderr.write(t),
    stdin: process.stdin,
    interactive: process.stdin.isTTY === true && process.stderr.isTTY === true,
    promptOutput: process.stderr,
    env: process.env,
    fetch: httpFetch,
    homedir: os.homedir(),
  };
}
