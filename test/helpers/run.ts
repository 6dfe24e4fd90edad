// Runs a program to completion for a test: its exit code and everything it printed, with stdin fed
// from a string and a time limit (the program is killed and the promise rejects, naming it and
// showing what it printed). At most SUBPROCESS_SLOTS programs run at once per test file; the time
// limit counts from the start of the program, not from the call (waiting for a slot is free).
import { spawn } from 'node:child_process';
import path from 'node:path';
import { COMMAND_TIMEOUT_MS, SUBPROCESS_SLOTS } from './limits.js';

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Written to stdin, which is then closed. */
  input?: string;
  /** Default COMMAND_TIMEOUT_MS (minutes): a bound against a hang, not a speed check. */
  timeoutMs?: number;
}

const tailOf = (s: string, n = 4000): string => (s.length > n ? `...${s.slice(-n)}` : s);

export function runProcess(file: string, args: string[], opts: RunOptions = {}): Promise<Run> {
  const timeoutMs = opts.timeoutMs ?? COMMAND_TIMEOUT_MS;
  return SUBPROCESS_SLOTS.run(
    () =>
      new Promise<Run>((resolve, reject) => {
        const child = spawn(file, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
        child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
        const timer = setTimeout(() => {
          child.kill('SIGKILL');
          reject(
            new Error(
              `${path.basename(file)} ${args.join(' ')} timed out after ${timeoutMs} ms\n` +
                `--- stdout ---\n${tailOf(stdout)}\n--- stderr ---\n${tailOf(stderr)}`,
            ),
          );
        }, timeoutMs);
        child.once('error', (e) => {
          clearTimeout(timer);
          reject(e);
        });
        child.once('close', (code) => {
          clearTimeout(timer);
          resolve({ code, stdout, stderr });
        });
        // A program that exits without reading its stdin makes the write fail with EPIPE: not an error here.
        child.stdin.on('error', () => undefined);
        child.stdin.end(opts.input ?? '');
      }),
  );
}

/** Runs a built Node program (server/dist/..., operator/dist/...) with this Node, as runProcess. */
export function runNode(script: string, args: string[], opts: RunOptions = {}): Promise<Run> {
  return runProcess(process.execPath, [script, ...args], opts);
}
