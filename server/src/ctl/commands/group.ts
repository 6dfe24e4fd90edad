// group create|list|get|delete|add-user|remove-user.
import type { Command } from 'commander';
import { apiPath } from '../client.js';
import { UsageError } from '../errors.js';
import type { Column } from '../output.js';
import type { Session } from '../session.js';
import { checkAccountName, parseId } from '../validate.js';
import { outputOption, resultOutputOption, withExamples, type OutputOpts } from './common.js';

/** GET /api/v1/groups/:name. */
export interface ApiGroup {
  name: string;
  gid: number;
  members: string[];
}

export const GROUP_COLUMNS: readonly Column<ApiGroup>[] = [
  { header: 'name', value: (g) => g.name },
  { header: 'gid', value: (g) => g.gid },
  { header: 'members', value: (g) => g.members },
];

export function registerGroupCommands(program: Command, s: Session): void {
  const group = program.command('group').description('manage groups (for share permissions, and NFS group ids)');

  withExamples(
    group
      .command('create')
      .description('create a group')
      .argument('[name]', 'same as --name')
      .option('--name <name>', 'group name')
      .option('--gid <gid>', 'numeric group id (default: the next one from 10000 that no user or group uses)')
      .addOption(resultOutputOption())
      .action(async (positional: string | undefined, opts: { name?: string; gid?: string } & Partial<OutputOpts>, cmd: Command) => {
        if (positional !== undefined && opts.name !== undefined && positional !== opts.name) {
          throw new UsageError(`two group names given: ${JSON.stringify(positional)} and --name ${JSON.stringify(opts.name)}`);
        }
        const name = positional ?? opts.name;
        if (name === undefined) throw new UsageError("required option '--name <name>' not specified");
        checkAccountName(name, 'group name');
        const body = { name, ...(opts.gid === undefined ? {} : { gid: parseId(opts.gid, '--gid') }) };
        const conn = await s.connect(cmd);
        const created = await conn.client.post<ApiGroup>('/groups', body);
        if (opts.output !== undefined) s.print(opts.output, created, GROUP_COLUMNS);
        else s.done(`group "${created.name}" created (gid ${created.gid})`);
      }),
    'dittofsctl group create --name editors',
    'dittofsctl group create --name viewers --gid 3000',
  );

  withExamples(
    group
      .command('list')
      .alias('ls')
      .description('list groups')
      .addOption(outputOption())
      .action(async (opts: OutputOpts, cmd: Command) => {
        const conn = await s.connect(cmd);
        s.print(opts.output, await conn.client.get<ApiGroup[]>('/groups'), GROUP_COLUMNS, 'groups');
      }),
    'dittofsctl group list',
    'dittofsctl group list -o yaml',
  );

  withExamples(
    group
      .command('get')
      .description('show one group and its members')
      .argument('<name>', 'group name')
      .addOption(outputOption())
      .action(async (name: string, opts: OutputOpts, cmd: Command) => {
        const conn = await s.connect(cmd);
        s.print(opts.output, await conn.client.get<ApiGroup>(apiPath`/groups/${name}`), GROUP_COLUMNS);
      }),
    'dittofsctl group get editors -o json',
  );

  withExamples(
    group
      .command('delete')
      .alias('rm')
      .description('delete a group (its memberships and share grants go too)')
      .argument('<name>', 'group name')
      .action(async (name: string, _opts: unknown, cmd: Command) => {
        const conn = await s.connect(cmd);
        await conn.client.delete(apiPath`/groups/${name}`);
        s.done(`group "${name}" deleted`);
      }),
    'dittofsctl group delete editors',
  );

  withExamples(
    group
      .command('add-user')
      .description('add a user to a group')
      .argument('<group>', 'group name')
      .argument('<username>', 'user name')
      .action(async (name: string, username: string, _opts: unknown, cmd: Command) => {
        const conn = await s.connect(cmd);
        await conn.client.put<ApiGroup>(apiPath`/groups/${name}/members/${username}`);
        s.done(`user "${username}" added to group "${name}"`);
      }),
    'dittofsctl group add-user editors alice',
  );

  withExamples(
    group
      .command('remove-user')
      .description('remove a user from a group')
      .argument('<group>', 'group name')
      .argument('<username>', 'user name')
      .action(async (name: string, username: string, _opts: unknown, cmd: Command) => {
        const conn = await s.connect(cmd);
        await conn.client.delete(apiPath`/groups/${name}/members/${username}`);
        s.done(`user "${username}" removed from group "${name}"`);
      }),
    'dittofsctl group remove-user editors alice',
  );
}
