// Shares and their permissions. Every logged-in user can list and read shares; changing them, and
// reading or changing grants, needs admin or operator. In URLs a share is named with or without its
// leading slash: /api/v1/shares/export and /api/v1/shares/%2Fexport are both /export (a nested
// share is data%2Fprojects). Deleting a share removes its grants, not its data.
import { shareNameProblem } from '../../config/schema.js';
import type { SharePatch } from '../../control/store.js';
import { SHARE_SETTINGS_DEFAULTS, type PermissionLevel, type Principal, type Share } from '../../control/types.js';
import { type ApiContext, type App } from '../context.js';
import { ApiProblem } from '../problem.js';
import { bodies, listOf, params, replies, responses } from '../schemas.js';

type CreateShareBody = Partial<Share> & Pick<Share, 'name' | 'metadata_store' | 'block_store'>;

const security = [{ bearerAuth: [] }];

/** `export`, `/export`, `data/projects` -> the share name; a malformed one is a 400. */
export function shareFromParam(raw: string): string {
  const name = raw.startsWith('/') ? raw : `/${raw}`;
  const problem = shareNameProblem(name);
  if (problem !== undefined) throw new ApiProblem('validation', `share name ${problem}`);
  return name;
}

export function shareRoutes(app: App, ctx: ApiContext): void {
  const { store } = ctx;
  const operator = { access: 'operator' as const };
  const tags = ['shares'];

  app.get(
    '/api/v1/shares',
    { config: { access: 'user' }, schema: { tags, summary: 'All shares', security, response: responses({ 200: listOf(replies.share) }) } },
    async () => store.listShares(),
  );

  app.post<{ Body: CreateShareBody }>(
    '/api/v1/shares',
    {
      config: operator,
      schema: { tags, summary: 'Create a share', security, body: bodies.createShare, response: responses({ 201: replies.share }) },
    },
    async (req, reply) => {
      const b = req.body;
      const problem = shareNameProblem(b.name);
      if (problem !== undefined) throw new ApiProblem('validation', `body.name ${problem}`);
      const share = await store.createShare({ ...SHARE_SETTINGS_DEFAULTS, ...b });
      req.log.info({ share: share.name }, 'share created');
      return reply.status(201).send(share);
    },
  );

  app.get<{ Params: { name: string } }>(
    '/api/v1/shares/:name',
    {
      config: { access: 'user' },
      schema: { tags, summary: 'One share', security, params: params.share, response: responses({ 200: replies.share }) },
    },
    async (req) => store.read((q) => q.requireShare(shareFromParam(req.params.name))),
  );

  app.patch<{ Params: { name: string }; Body: SharePatch }>(
    '/api/v1/shares/:name',
    {
      config: operator,
      schema: {
        tags,
        summary: 'Change a share',
        security,
        params: params.share,
        body: bodies.patchShare,
        response: responses({ 200: replies.share }),
      },
    },
    async (req) => {
      const name = shareFromParam(req.params.name);
      const share = await store.updateShare(name, req.body);
      req.log.info({ share: name, fields: Object.keys(req.body) }, 'share changed');
      return share;
    },
  );

  app.delete<{ Params: { name: string } }>(
    '/api/v1/shares/:name',
    {
      config: operator,
      schema: {
        tags,
        summary: 'Delete a share (and its grants)',
        security,
        params: params.share,
        response: responses({ 204: replies.noContent }),
      },
    },
    async (req, reply) => {
      const name = shareFromParam(req.params.name);
      await store.deleteShare(name);
      req.log.info({ share: name }, 'share deleted');
      return reply.status(204).send();
    },
  );

  // ---- permissions

  app.get<{ Params: { name: string } }>(
    '/api/v1/shares/:name/permissions',
    {
      config: operator,
      schema: { tags, summary: "A share's grants", security, params: params.share, response: responses({ 200: listOf(replies.grant) }) },
    },
    async (req) => store.listPermissions(shareFromParam(req.params.name)),
  );

  const grantRoutes = (kind: 'users' | 'groups'): void => {
    const key = kind === 'users' ? 'username' : 'group';
    const principal = (p: Record<string, string>): Principal => (kind === 'users' ? { user: p[key]! } : { group: p[key]! });
    const path = `/api/v1/shares/:name/permissions/${kind}/:${key}`;
    const paramsSchema = kind === 'users' ? params.shareUser : params.shareGroup;

    app.put<{ Params: Record<string, string> & { name: string }; Body: { level: PermissionLevel } }>(
      path,
      {
        config: operator,
        schema: {
          tags,
          summary: `Grant a ${kind === 'users' ? 'user' : 'group'} a level on a share`,
          security,
          params: paramsSchema,
          body: bodies.permission,
          response: responses({ 200: replies.grant }),
        },
      },
      async (req) => {
        const grant = await store.setPermission(shareFromParam(req.params.name), principal(req.params), req.body.level);
        req.log.info({ share: req.params.name, ...grant }, 'share permission set');
        return grant;
      },
    );

    app.delete<{ Params: Record<string, string> & { name: string } }>(
      path,
      {
        config: operator,
        schema: {
          tags,
          summary: `Remove a ${kind === 'users' ? 'user' : 'group'}'s grant on a share`,
          security,
          params: paramsSchema,
          response: responses({ 204: replies.noContent }),
        },
      },
      async (req, reply) => {
        await store.removePermission(shareFromParam(req.params.name), principal(req.params));
        return reply.status(204).send();
      },
    );
  };
  grantRoutes('users');
  grantRoutes('groups');
}
