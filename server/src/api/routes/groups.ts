// Groups and their members (admin or operator). A group created without `gid` gets the next id
// from 10000 up that no user's uid or gid and no group's gid uses. Adding a member twice, or
// removing one that is not a member, is not an error; a gid that is the primary gid of a user who
// is not a member (or removing such a member) is a 409 (see control/store.ts). An operator may add
// or remove only users with role user, as it may edit only those (routes/users.ts), and may delete
// only a group with no admin or operator among its members.
import { holdsRootIds, ROOT_ACCOUNT, ROOT_GROUP, rootGroupsOf, rootIdRefusal } from '../../control/root-ids.js';
import type { ControlQueries } from '../../control/store.js';
import { mayManage, principalOf, type ApiContext, type App, type Principal } from '../context.js';
import { ApiProblem } from '../problem.js';
import { bodies, listOf, params, replies, responses } from '../schemas.js';

interface GroupParams {
  name: string;
}
interface MemberParams {
  name: string;
  username: string;
}

const security = [{ bearerAuth: [] }];

/** Group memberships are part of a user's rights: changing them is managing that user. */
async function checkMembers(q: ControlQueries, me: Principal, group: string, usernames: readonly string[], what: string): Promise<void> {
  if (me.role === 'admin') return;
  const roots = rootGroupsOf(await q.listGroups());
  if (roots.has(group)) throw new ApiProblem('forbidden', ROOT_GROUP);
  for (const username of usernames) {
    const u = await q.getUser(username);
    if (u !== undefined && !mayManage(me, u.role)) throw new ApiProblem('forbidden', `only an admin can ${what} users with role ${u.role}`);
    if (u !== undefined && holdsRootIds(u, roots)) throw new ApiProblem('forbidden', ROOT_ACCOUNT);
  }
}

export function groupRoutes(app: App, ctx: ApiContext): void {
  const { store } = ctx;
  const config = { access: 'operator' as const };

  app.get(
    '/api/v1/groups',
    { config, schema: { tags: ['groups'], summary: 'All groups', security, response: responses({ 200: listOf(replies.group) }) } },
    async () => store.listGroups(),
  );

  app.post<{ Body: { name: string; gid?: number } }>(
    '/api/v1/groups',
    {
      config,
      schema: {
        tags: ['groups'],
        summary: 'Create a group',
        security,
        body: bodies.createGroup,
        response: responses({ 201: replies.group }),
      },
    },
    async (req, reply) => {
      const rootIds = rootIdRefusal(principalOf(req).role, 'a group', { gid: req.body.gid });
      if (rootIds !== null) throw new ApiProblem('forbidden', rootIds);
      return reply.status(201).send(await store.createGroup(req.body));
    },
  );

  app.get<{ Params: GroupParams }>(
    '/api/v1/groups/:name',
    {
      config,
      schema: { tags: ['groups'], summary: 'One group', security, params: params.group, response: responses({ 200: replies.group }) },
    },
    async (req) => store.read((q) => q.requireGroup(req.params.name)),
  );

  app.delete<{ Params: GroupParams }>(
    '/api/v1/groups/:name',
    {
      config,
      schema: {
        tags: ['groups'],
        summary: 'Delete a group (its memberships and grants go with it)',
        security,
        params: params.group,
        response: responses({ 204: replies.noContent }),
      },
    },
    async (req, reply) => {
      await store.mutate(async (q) => {
        const group = await q.requireGroup(req.params.name);
        await checkMembers(q, principalOf(req), group.name, group.members, 'remove from groups');
        await q.deleteGroup(req.params.name);
      });
      return reply.status(204).send();
    },
  );

  app.put<{ Params: MemberParams }>(
    '/api/v1/groups/:name/members/:username',
    {
      config,
      schema: {
        tags: ['groups'],
        summary: 'Add a member',
        security,
        params: params.groupMember,
        response: responses({ 200: replies.group }),
      },
    },
    async (req) =>
      store.mutate(async (q) => {
        await checkMembers(q, principalOf(req), req.params.name, [req.params.username], 'add to groups');
        return q.addMember(req.params.name, req.params.username);
      }),
  );

  app.delete<{ Params: MemberParams }>(
    '/api/v1/groups/:name/members/:username',
    {
      config,
      schema: {
        tags: ['groups'],
        summary: 'Remove a member',
        security,
        params: params.groupMember,
        response: responses({ 200: replies.group }),
      },
    },
    async (req) =>
      store.mutate(async (q) => {
        await checkMembers(q, principalOf(req), req.params.name, [req.params.username], 'remove from groups');
        return q.removeMember(req.params.name, req.params.username);
      }),
  );
}
