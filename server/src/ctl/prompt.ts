// Secrets from the user: a prompt that does not echo on a terminal, else one line of standard input
// per value (`echo "$PASSWORD" | dittofsctl login ...`), so scripts never need a password on the
// command line, where other users could see it in the process list.
import { createInterface, type Interface } from 'node:readline';
import { CTL_ERROR, CtlError, UsageError } from './errors.js';
import type { CtlIo } from './io.js';

export class Prompter {
  private rl: Interface | undefined;
  private lines: AsyncIterator<string> | undefined;

  constructor(private readonly io: CtlIo) {}

  get interactive(): boolean {
    return this.io.interactive;
  }

  /** The next line of standard input (without its line ending), or undefined at its end. */
  async readLine(): Promise<string | undefined> {
    if (this.lines === undefined) {
      this.rl = createInterface({ input: this.io.stdin, terminal: false, crlfDelay: Infinity });
      this.lines = this.rl[Symbol.asyncIterator]();
    }
    const next = await this.lines.next();
    return next.done === true ? undefined : next.value;
  }

  /**
   * A secret: prompted without echo on a terminal, else the next line of standard input. `what`
   * names it in errors ("password"); `flag` is the flag that could have given it.
   */
  async secret(message: string, what: string, flag?: string): Promise<string> {
    if (this.io.interactive) {
      // Loaded only for a terminal: scripts never pay for it.
      const { default: password } = await import('@inquirer/password');
      try {
        return await password({ message, mask: false, toggleMask: false }, { input: this.io.stdin, output: this.io.promptOutput });
      } catch (e) {
        if ((e as Error).name === 'ExitPromptError' || (e as Error).name === 'AbortPromptError') {
          throw new CtlError(CTL_ERROR.INTERRUPTED, 'interrupted');
        }
        throw e;
      }
    }
    const line = await this.readLine();
    if (line === undefined) {
      throw new UsageError(
        `no ${what} given: standard input is not a terminal and has no line to read`,
        flag === undefined ? `pipe it in: echo "$SECRET" | dittofsctl ...` : `pipe it in, or pass ${flag}`,
      );
    }
    if (line === '') throw new UsageError(`the ${what} read from standard input is empty`);
    return line;
  }

  /**
   * A new secret, typed twice on a terminal; one line of standard input otherwise. `check` says
   * what is wrong with it ("must be at least 8 characters long"): a bad one is refused at once,
   * before it is asked for a second time.
   */
  async newSecret(message: string, what: string, flag?: string, check?: (value: string) => string | undefined): Promise<string> {
    const first = await this.secret(message, what, flag);
    const problem = check?.(first);
    if (problem !== undefined) throw new UsageError(`the ${what} ${problem}`);
    if (this.io.interactive) {
      const again = await this.secret('Repeat it:', what, flag);
      if (again !== first) throw new UsageError(`the two ${what}s differ`);
    }
    return first;
  }

  close(): void {
    this.rl?.close();
  }
}
