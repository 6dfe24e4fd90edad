// Runs a program to completion for a test: its exit code and everything it printed, with stdin fed
// from a string and a time limit (the program is killed and the promise rejects, naming it and
// showing what it printed). At most SUBPROCESS_SLOTS programs run at once per test file; the time
// limit counts from the start of the program, not from the call (waiting for a slot is free).
import { execFile, spawn } from 'node:child_process';
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
  /** Run as this user and group (no supplementary groups); needs root. */
  user?: { uid: number; gid: number };
}

const tailOf = (s: string, n = 4000): string => (s.length > n ? `...${s.slice(-n)}` : s);

export function runProcess(file: string, args: string[], opts: RunOptions = {}): Promise<Run> {
  const timeoutMs = opts.timeoutMs ?? COMMAND_TIMEOUT_MS;
  return SUBPROCESS_SLOTS.run(
    () =>
      new Promise<Run>((resolve, reject) => {
        const child = spawn(file, args, {
          env: opts.env ?? process.env,
          cwd: opts.cwd,
          stdio: ['pipe', 'pipe', 'pipe'],
          ...(opts.user === undefined ? {} : { uid: opts.user.uid, gid: opts.user.gid }),
        });
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

export interface ToolResult<Out extends string | Buffer = string> {
  /** The exit code; -1 when the tool could not be started. */
  code: number | null;
  /** Set when the tool was killed (the time limit). */
  signal: NodeJS.Signals | null;
  stdout: Out;
  stderr: string;
}

export interface ToolOptions {
  /** Default COMMAND_TIMEOUT_MS; then the tool is killed (SIGKILL) and `signal` says so. */
  timeoutMs?: number;
  /** stdout as bytes (a tool that prints file content), not as text. */
  binary?: boolean;
}

/**
 * Runs a client tool (nfs-cp, nfs-cat, mount, ...) with a hard time limit. Never throws for a
 * non-zero exit or a kill: the result says, for the test to assert on.
 */
export function runTool(cmd: string, argv: string[], opts: ToolOptions & { binary: true }): Promise<ToolResult<Buffer>>;
export function runTool(cmd: string, argv: string[], opts?: ToolOptions & { binary?: false }): Promise<ToolResult>;
export function runTool(cmd: string, argv: string[], opts: ToolOptions = {}): Promise<ToolResult<string | Buffer>> {
  const timeout = opts.timeoutMs ?? COMMAND_TIMEOUT_MS;
  return new Promise((resolve) => {
    execFile(cmd, argv, { timeout, killSignal: 'SIGKILL', encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string; signal?: NodeJS.Signals }) | null;
      resolve({
        code: e ? (typeof e.code === 'number' ? e.code : -1) : 0,
        signal: e?.signal ?? null,
        stdout: opts.binary === true ? stdout : stdout.toString(),
        stderr: stderr.toString(),
      });
    });
  });
}

/**
 * smbclient on //127.0.0.1/`share` at `port`, logged on as `user`, running `commands` (its -c);
 * `extra` options go before -c (`-m SMB2_10`). As runTool: the result says how it went.
 */
export function smbclient(
  port: number,
  user: string,
  password: string,
  commands: string,
  extra: string[] = [],
  share = 'export',
): Promise<ToolResult> {
  return runTool('smbclient', [`//127.0.0.1/${share}`, '-p', String(port), '-U', `${user}%${password}`, ...extra, '-c', commands]);
}
