// share list|get|create|update|delete and share permission list|grant|revoke.
import { Option, type Command } from 'commander';
import { PERMISSION_LEVELS, SHARE_SETTINGS_DEFAULTS, type PermissionLevel } from '../../control/types.js';
import { apiPath } from '../client.js';
import { UsageError } from '../errors.js';
import type { Column } from '../output.js';
import type { Session } from '../session.js';
import { checkAccountName, checkShareName, normalizeShareName, parseId, parseMode } from '../validate.js';
import { defined, flagPair, outputOption, resultOutputOption, withExamples, type OutputOpts } from './common.js';

/** GET /api/v1/shares/:name. */
export interface ApiShare {
  name: string;
  metadata_store: string;
  block_store: string;
  read_only: boolean;
  default_permission: string;
  root_squash: boolean;
  anonymous_uid: number;
  anonymous_gid: number;
  root_mode: number;
  root_uid: number;
  root_gid: number;
}

/** GET /api/v1/shares/:name/permissions items. */
export interface ApiGrant {
  user?: string;
  group?: string;
  level: string;
}

const octal = (mode: number): string => `0${mode.toString(8).padStart(3, '0')}`;

/** A share as dittofsctl prints it (every format): `root_mode` in octal ("0777"), as in the config file. */
export type ShareView = Omit<ApiShare, 'root_mode'> & { root_mode: string };

export function shareView(x: ApiShare): ShareView {
  return { ...x, root_mode: octal(x.root_mode) };
}

export const SHARE_COLUMNS: readonly Column<ShareView>[] = [
  { header: 'name', value: (x) => x.name },
  { header: 'metadata', value: (x) => x.metadata_store },
  { header: 'blocks', value: (x) => x.block_store },
  { header: 'read-only', value: (x) => x.read_only },
  { header: 'default-permission', value: (x) => x.default_permission },
  { header: 'root-squash', value: (x) => x.root_squash },
  { header: 'root', value: (x) => `${x.root_mode} ${x.root_uid}:${x.root_gid}` },
];

export const GRANT_COLUMNS: readonly Column<ApiGrant>[] = [
  { header: 'kind', value: (g) => (g.user !== undefined ? 'user' : 'group') },
  { header: 'name', value: (g) => g.user ?? g.group },
  { header: 'level', value: (g) => g.level },
];

interface ShareFieldOpts {
  metadata?: string;
  blocks?: string;
  payload?: string;
  readOnly?: boolean;
  readWrite?: boolean;
  defaultPermission?: PermissionLevel;
  rootSquash?: boolean;
  anonymousUid?: string;
  anonymousGid?: string;
  rootMode?: string;
  rootUid?: string;
  rootGid?: string;
}

function fieldOptions(cmd: Command, creating: boolean): Command {
  const verb = creating ? '' : 'new ';
  // Defaults are stated for create only: an update changes only what it is given.
  const dflt = (v: string | number | boolean): string => (creating ? ` (default ${String(v)})` : '');
  const d = SHARE_SETTINGS_DEFAULTS;
  return cmd
    .option('--metadata <store>', `${verb}metadata store (see: dittofsctl store metadata list)`)
    .option('--blocks <store>', `${verb}block store (see: dittofsctl store block list)`)
    .addOption(new Option('--payload <store>', 'same as --blocks').hideHelp())
    .option('--read-only', `clients may only read${creating && d.read_only ? ' (the default)' : ''}`)
    .option('--read-write', `clients may write${creating && !d.read_only ? ' (the default)' : ''}`)
    .addOption(
      new Option(
        '--default-permission <level>',
        `level of users without a grant of their own or through a group${dflt(d.default_permission)}`,
      ).choices(PERMISSION_LEVELS),
    )
    .option('--root-squash', `map root (uid 0, over NFS and SMB) to the anonymous user${creating && d.root_squash ? ' (the default)' : ''}`)
    .option('--no-root-squash', `let root (over NFS and SMB) act as root${creating && !d.root_squash ? ' (the default)' : ''}`)
    .option('--anonymous-uid <uid>', `uid that squashed root and AUTH_NONE callers get${dflt(d.anonymous_uid)}`)
    .option('--anonymous-gid <gid>', `gid that squashed root and AUTH_NONE callers get${dflt(d.anonymous_gid)}`)
    .option('--root-mode <mode>', `mode of the share's root directory, in octal${dflt(octal(d.root_mode))}`)
    .option('--root-uid <uid>', `owner of the share's root directory${dflt(d.root_uid)}`)
    .option('--root-gid <gid>', `group of the share's root directory${dflt(d.root_gid)}`);
}

function fields(o: ShareFieldOpts): Record<string, unknown> {
  if (o.blocks !== undefined && o.payload !== undefined && o.blocks !== o.payload) {
    throw new UsageError('--blocks and --payload name the same thing; give one');
  }
  if (o.readOnly === true && o.readWrite === true) throw new UsageError('--read-only and --read-write exclude each other');
  return defined({
    metadata_store: o.metadata,
    block_store: o.blocks ?? o.payload,
    read_only: flagPair(o.readOnly, o.readWrite),
    default_permission: o.defaultPermission,
    root_squash: o.rootSquash,
    anonymous_uid: o.anonymousUid === undefined ? undefined : parseId(o.anonymousUid, '--anonymous-uid'),
    anonymous_gid: o.anonymousGid === undefined ? undefined : parseId(o.anonymousGid, '--anonymous-gid'),
    root_mode: o.rootMode === undefined ? undefined : parseMode(o.rootMode, '--root-mode'),
    root_uid: o.rootUid === undefined ? undefined : parseId(o.rootUid, '--root-uid'),
    root_gid: o.rootGid === undefined ? undefined : parseId(o.rootGid, '--root-gid'),
  });
}

interface PrincipalOpts {
  user?: string;
  group?: string;
}

/** `users/alice` or `groups/editors`, from exactly one of --user and --group. */
function principalPath(o: PrincipalOpts): { kind: 'user' | 'group'; name: string } {
  if (o.user !== undefined && o.group !== undefined) throw new UsageError('give either --user or --group, not both');
  if (o.user !== undefined) return { kind: 'user', name: checkAccountName(o.user, '--user') };
  if (o.group !== undefined) return { kind: 'group', name: checkAccountName(o.group, '--group') };
  throw new UsageError('give --user NAME or --group NAME');
}

function grantPath(share: string, p: { kind: 'user' | 'group'; name: string }): string {
  return p.kind === 'user' ? apiPath`/shares/${share}/permissions/users/${p.name}` : apiPath`/shares/${share}/permissions/groups/${p.name}`;
}

export function registerShareCommands(program: Command, s: Session): void {
  const share = program
    .command('share')
    .description('manage shares (exports): which stores they use, how clients may use them, and who may')
    .addHelpText('after', `\nShare names are export paths such as /export; "export" is taken as "/export".`);

  withExamples(
    share
      .command('list')
      .alias('ls')
      .description('list shares')
      .addOption(outputOption())
      .action(async (opts: OutputOpts, cmd: Command) => {
        const conn = await s.connect(cmd);
        s.print(opts.output, (await conn.client.get<ApiShare[]>('/shares')).map(shareView), SHARE_COLUMNS, 'shares');
      }),
    'dittofsctl share list',
    'dittofsctl share list -o json',
  );

  withExamples(
    share
      .command('get')
      .description('show one share')
      .argument('<name>', 'share name, such as /export')
      .addOption(outputOption())
      .action(async (name: string, opts: OutputOpts, cmd: Command) => {
        const conn = await s.connect(cmd);
        s.print(opts.output, shareView(await conn.client.get<ApiShare>(apiPath`/shares/${normalizeShareName(name)}`)), SHARE_COLUMNS);
      }),
    'dittofsctl share get /export',
    'dittofsctl share get /export -o yaml',
  );

  const create = share
    .command('create')
    .description('create a share on a metadata store and a block store')
    .requiredOption('--name <name>', 'share name: the export path, such as /archive');
  fieldOptions(create, true)
    .addOption(resultOutputOption())
    .action(async (opts: ShareFieldOpts & { name: string } & Partial<OutputOpts>, cmd: Command) => {
      const name = checkShareName(opts.name, '--name');
      const body: Record<string, unknown> = { name, ...fields(opts) };
      if (body.metadata_store === undefined) throw new UsageError("required option '--metadata <store>' not specified");
      if (body.block_store === undefined) throw new UsageError("required option '--blocks <store>' not specified");
      const conn = await s.connect(cmd);
      const created = await conn.client.post<ApiShare>('/shares', body);
      if (opts.output !== undefined) s.print(opts.output, shareView(created), SHARE_COLUMNS);
      else s.done(`share "${created.name}" created`);
    });
  withExamples(
    create,
    'dittofsctl share create --name /archive --metadata default --blocks s3-content',
    'dittofsctl share create --name /archive --metadata default --payload s3-content   # --payload = --blocks',
    'dittofsctl share create --name /public --metadata default --blocks local --read-only --default-permission read',
  );

  const update = share
    .command('update')
    .description('change a share: only the fields given change')
    .argument('<name>', 'share name, such as /export');
  fieldOptions(update, false)
    .addOption(resultOutputOption())
    .action(async (name: string, opts: ShareFieldOpts & Partial<OutputOpts>, cmd: Command) => {
      const body = fields(opts);
      if (Object.keys(body).length === 0) throw new UsageError('nothing to change: give at least one option (see --help)');
      const conn = await s.connect(cmd);
      const updated = await conn.client.patch<ApiShare>(apiPath`/shares/${normalizeShareName(name)}`, body);
      if (opts.output !== undefined) s.print(opts.output, shareView(updated), SHARE_COLUMNS);
      else s.done(`share "${updated.name}" updated`);
    });
  withExamples(
    update,
    'dittofsctl share update /export --read-only',
    'dittofsctl share update /export --default-permission none --root-squash',
  );

  withExamples(
    share
      .command('delete')
      .alias('rm')
      .description('delete a share and its grants (the data stays in its stores)')
      .argument('<name>', 'share name, such as /archive')
      .action(async (name: string, _opts: unknown, cmd: Command) => {
        const conn = await s.connect(cmd);
        const n = normalizeShareName(name);
        await conn.client.delete(apiPath`/shares/${n}`);
        s.done(`share "${n}" deleted`);
      }),
    'dittofsctl share delete /archive',
  );

  const permission = share
    .command('permission')
    .alias('permissions')
    .description('manage who may use a share: grants to users and groups')
    .addHelpText(
      'after',
      `
Levels: none, read, read-write, admin. A user's access is their own grant, else the best grant of
their groups, else the share's default permission.`,
    );

  withExamples(
    permission
      .command('list')
      .alias('ls')
      .description("list a share's grants")
      .argument('<share>', 'share name, such as /export')
      .addOption(outputOption())
      .action(async (name: string, opts: OutputOpts, cmd: Command) => {
        const conn = await s.connect(cmd);
        s.print(
          opts.output,
          await conn.client.get<ApiGrant[]>(apiPath`/shares/${normalizeShareName(name)}/permissions`),
          GRANT_COLUMNS,
          'grants',
        );
      }),
    'dittofsctl share permission list /export',
    'dittofsctl share permission list /export -o json',
  );

  withExamples(
    permission
      .command('grant')
      .description('give a user or a group a level on a share (replaces their previous grant)')
      .argument('<share>', 'share name, such as /export')
      .option('--user <name>', 'user to grant')
      .option('--group <name>', 'group to grant')
      .addOption(new Option('--level <level>', 'access level').choices(PERMISSION_LEVELS).makeOptionMandatory())
      .action(async (name: string, opts: PrincipalOpts & { level: PermissionLevel }, cmd: Command) => {
        const { level } = opts;
        const p = principalPath(opts);
        const n = normalizeShareName(name);
        const conn = await s.connect(cmd);
        await conn.client.put<ApiGrant>(grantPath(n, p), { level });
        s.done(`granted ${level} on "${n}" to ${p.kind} "${p.name}"`);
      }),
    'dittofsctl share permission grant /export --user alice --level read-write',
    'dittofsctl share permission grant /export --group editors --level read',
  );

  withExamples(
    permission
      .command('revoke')
      .description("remove a user's or a group's grant on a share")
      .argument('<share>', 'share name, such as /export')
      .option('--user <name>', 'user whose grant to remove')
      .option('--group <name>', 'group whose grant to remove')
      .action(async (name: string, opts: PrincipalOpts, cmd: Command) => {
        const p = principalPath(opts);
        const n = normalizeShareName(name);
        const conn = await s.connect(cmd);
        await conn.client.delete(grantPath(n, p));
        s.done(`revoked the grant of ${p.kind} "${p.name}" on "${n}"`);
      }),
    'dittofsctl share permission revoke /export --user alice',
    'dittofsctl share permission revoke /export --group editors',
  );
}
