// `dittofs admin reset-password [USER]`: a new password for a user (the admin by default) written
// straight into the control database, with the server stopped. It is the way back in when the first
// admin's one-time password was lost, or every admin forgot theirs: whoever can run the server on
// this data directory may reset it, as root may on any Unix system.
import type { DittoConfig } from '../config/types.js';
import { passwordCredentials } from '../control/auth.js';
import { passwordProblem } from '../control/password-rules.js';
import { Prompter } from '../ctl/prompt.js';
import { CtlError } from '../ctl/errors.js';
import type { CtlIo } from '../ctl/io.js';
import { openForTool } from './backup.js';
import { CliFailure } from './daemon.js';

export interface ResetPasswordOptions {
  config: DittoConfig;
  pidFile: string;
  username: string;
  /** Read the password from one line of standard input instead of prompting. */
  passwordStdin: boolean;
  /** The user must change it at the next login (the default for a password typed by someone else). */
  mustChange: boolean;
  io: Pick<CtlIo, 'stdin' | 'interactive' | 'promptOutput'> & Partial<CtlIo>;
  out: (text: string) => void;
}

export async function resetPassword(o: ResetPasswordOptions): Promise<void> {
  if (!o.passwordStdin && !o.io.interactive) {
    throw new CliFailure(
      'standard input is not a terminal: pass the new password on it with --password-stdin (echo "$PASSWORD" | dittofs admin reset-password --password-stdin)',
    );
  }
  // The database first: a user who does not exist, or a running server, is said before the prompt.
  const store = await openForTool(o.config, o.pidFile, 'reset-password');
  try {
    const user = await store.getUser(o.username);
    if (user === undefined) {
      const users = (await store.listUsers()).map((u) => `${u.username} (${u.role})`);
      throw new CliFailure(`no user "${o.username}" in the control database (users: ${users.length === 0 ? 'none' : users.join(', ')})`);
    }
    const prompter = new Prompter({ out: () => undefined, err: () => undefined, env: {}, fetch: globalThis.fetch, homedir: '', ...o.io });
    let password: string;
    try {
      password = await prompter.newSecret(`New password for ${o.username}:`, 'password', '--password-stdin', passwordProblem);
    } catch (err) {
      if (err instanceof CtlError) throw new CliFailure(err.hint === undefined ? err.message : `${err.message}; ${err.hint}`, err.exitCode);
      throw err;
    } finally {
      prompter.close();
    }
    const creds = await passwordCredentials(password, o.config.server.api.bcrypt_cost);
    // New credentials also revoke every token the user holds.
    await store.mutate(async (q) => {
      await q.updateUser(o.username, { credentials: creds, must_change_password: o.mustChange });
    });
    o.out(
      `password of "${o.username}" (${user.role}) reset; its tokens are revoked` +
        `${o.mustChange ? '; it must be changed at the next login' : ''}\n` +
        'start the server and log in: dittofsctl login --username ' +
        `${o.username}\n`,
    );
  } finally {
    await store.close();
  }
}
