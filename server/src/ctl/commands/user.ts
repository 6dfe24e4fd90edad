// user create|list|get|update|delete.
import { Option, type Command } from 'commander';
import { ROLES, type Role } from '../../control/types.js';
import { apiPath } from '../client.js';
import { UsageError } from '../errors.js';
import type { Column } from '../output.js';
import { passwordProblem } from '../../control/password-rules.js';
import type { Session } from '../session.js';
import { checkAccountName, parseId, parseList } from '../validate.js';
import { defined, outputOption, resultOutputOption, withExamples, type OutputOpts } from './common.js';

/** GET /api/v1/users/:username. */
export interface ApiUser {
  username: string;
  uid: number;
  gid: number;
  groups: string[];
  email: string | null;
  role: string;
  must_change_password: boolean;
  created_at: string;
  updated_at: string;
}

export const USER_COLUMNS: readonly Column<ApiUser>[] = [
  { header: 'username', value: (u) => u.username },
  { header: 'uid', value: (u) => u.uid },
  { header: 'gid', value: (u) => u.gid },
  { header: 'role', value: (u) => u.role },
  { header: 'groups', value: (u) => u.groups },
  { header: 'email', value: (u) => u.email },
  { header: 'must-change-password', value: (u) => u.must_change_password },
];

interface UserFieldOpts {
  uid?: string;
  gid?: string;
  email?: string;
  groups?: string;
  role?: Role;
  mustChangePassword?: boolean;
}

interface CreateOpts extends UserFieldOpts, Partial<OutputOpts> {
  username?: string;
  /** A string: given; false: --no-password; undefined: prompt. */
  password?: string | false;
}

interface UpdateOpts extends UserFieldOpts, Partial<OutputOpts> {
  /** A string: given; true: --password without a value (prompt). */
  password?: string | true;
}

function fieldOptions(cmd: Command): Command {
  return cmd
    .option('--uid <uid>', 'numeric user id for NFS (default: the next one from 10000 that no user or group uses)')
    .option('--gid <gid>', 'primary group id (default: the uid)')
    .option('--email <email>', 'email address ("" to clear)')
    .option('--groups <names>', 'comma-separated groups to be a member of; they must exist ("" for none)')
    .addOption(
      new Option(
        '--role <role>',
        'admin (everything), operator (stores, shares, groups, adapters, settings, users with role user) or user (default user)',
      ).choices(ROLES),
    )
    .option('--must-change-password', 'the user must change the password at the next login')
    .option('--no-must-change-password', 'the user need not change the password (default for a user created without a password)');
}

function fields(o: UserFieldOpts): Record<string, unknown> {
  return defined({
    uid: o.uid === undefined ? undefined : parseId(o.uid, '--uid'),
    gid: o.gid === undefined ? undefined : parseId(o.gid, '--gid'),
    email: o.email === undefined ? undefined : o.email.trim() === '' ? null : o.email.trim(),
    groups: o.groups === undefined ? undefined : parseList(o.groups).map((g) => checkAccountName(g, '--groups')),
    role: o.role,
    must_change_password: o.mustChangePassword,
  });
}

export function registerUserCommands(program: Command, s: Session): void {
  const user = program
    .command('user')
    .description('manage users (accounts for the API and SMB, identities for NFS)')
    .addHelpText('after', `\nNames are lower case: letters, digits, "_", "." and "-". Passwords are 8 characters to 72 bytes.`);

  const create = user
    .command('create')
    .description('create a user; the password is prompted without echo unless given')
    .argument('[username]', 'same as --username')
    .option('--username <name>', 'user name')
    .option('--password <password>', 'password (default: prompted; one line of standard input when it is not a terminal)')
    .option('--no-password', 'create the user without a password: an identity for NFS that cannot log in');
  fieldOptions(create)
    .addOption(resultOutputOption())
    .addHelpText('after', `\nA user created with a password must change it at the first login unless --no-must-change-password is given.`)
    .action(async (positional: string | undefined, opts: CreateOpts, cmd: Command) => {
      if (positional !== undefined && opts.username !== undefined && positional !== opts.username) {
        throw new UsageError(`two user names given: ${JSON.stringify(positional)} and --username ${JSON.stringify(opts.username)}`);
      }
      const username = positional ?? opts.username;
      if (username === undefined) throw new UsageError("required option '--username <name>' not specified");
      checkAccountName(username, 'user name');
      const body: Record<string, unknown> = { username, ...fields(opts) };
      const conn = await s.connect(cmd);
      if (typeof opts.password === 'string') body.password = opts.password;
      else if (opts.password === undefined)
        body.password = await s.prompter.newSecret(
          `Password for ${username}:`,
          'password',
          '--password (or --no-password)',
          passwordProblem,
        );
      const created = await conn.client.post<ApiUser>('/users', body);
      if (opts.output !== undefined) s.print(opts.output, created, USER_COLUMNS);
      else s.done(`user "${created.username}" created (uid ${created.uid}, gid ${created.gid})`);
    });
  withExamples(
    create,
    'dittofsctl user create --username alice',
    'dittofsctl user create --username bob --email bob@example.com --groups editors,viewers',
    'dittofsctl user create --username carol --uid 1001 --gid 1001 --role operator',
    'dittofsctl user create --username nfsuser --uid 2000 --no-password',
    'echo "$PASSWORD" | dittofsctl user create --username alice',
  );

  withExamples(
    user
      .command('list')
      .alias('ls')
      .description('list users')
      .addOption(outputOption())
      .action(async (opts: OutputOpts, cmd: Command) => {
        const conn = await s.connect(cmd);
        s.print(opts.output, await conn.client.get<ApiUser[]>('/users'), USER_COLUMNS, 'users');
      }),
    'dittofsctl user list',
    'dittofsctl user list -o json',
    'dittofsctl user list -o yaml',
  );

  withExamples(
    user
      .command('get')
      .description('show one user')
      .argument('<username>', 'user name')
      .addOption(outputOption())
      .action(async (username: string, opts: OutputOpts, cmd: Command) => {
        const conn = await s.connect(cmd);
        s.print(opts.output, await conn.client.get<ApiUser>(apiPath`/users/${username}`), USER_COLUMNS);
      }),
    'dittofsctl user get alice',
    'dittofsctl user get alice -o yaml',
  );

  const update = user
    .command('update')
    .description('change a user: only the fields given change')
    .argument('<username>', 'user name')
    .option('--password [password]', "set a new password (prompted when no value is given); revokes the user's tokens");
  fieldOptions(update)
    .addOption(resultOutputOption())
    .addHelpText(
      'after',
      `\nA password set for another user must be changed at their next login unless --no-must-change-password is given.`,
    )
    .action(async (username: string, opts: UpdateOpts, cmd: Command) => {
      const body: Record<string, unknown> = fields(opts);
      if (Object.keys(body).length === 0 && opts.password === undefined) {
        throw new UsageError(
          'nothing to change: give at least one of --password, --uid, --gid, --email, --groups, --role, --[no-]must-change-password',
        );
      }
      const conn = await s.connect(cmd);
      if (typeof opts.password === 'string') body.password = opts.password;
      else if (opts.password === true)
        body.password = await s.prompter.newSecret(`New password for ${username}:`, 'password', '--password VALUE', passwordProblem);
      const updated = await conn.client.patch<ApiUser>(apiPath`/users/${username}`, body);
      if (opts.output !== undefined) s.print(opts.output, updated, USER_COLUMNS);
      else s.done(`user "${updated.username}" updated`);
    });
  withExamples(
    update,
    'dittofsctl user update alice --email alice@example.com',
    'dittofsctl user update alice --groups editors        # replaces the memberships',
    'dittofsctl user update alice --password              # prompts for the new password',
    'dittofsctl user update bob --role operator',
  );

  withExamples(
    user
      .command('delete')
      .alias('rm')
      .description('delete a user (their group memberships and share grants go too)')
      .argument('<username>', 'user name')
      .action(async (username: string, _opts: unknown, cmd: Command) => {
        const conn = await s.connect(cmd);
        await conn.client.delete(apiPath`/users/${username}`);
        s.done(`user "${username}" deleted`);
      }),
    'dittofsctl user delete alice',
  );
}
