// Users. Admins manage everyone; operators manage users with role `user` only and cannot give or
// change roles. Nobody can delete themselves, and the last admin can be neither deleted nor demoted.
// A user created without `uid` gets the next id from 10000 up that no user's uid or gid and no
// group's gid uses; `gid` defaults to the uid.
// Setting a password (POST, or PATCH by someone else) sets must_change_password unless the body
// says otherwise; a new password revokes the user's tokens.
import { passwordCredentials, passwordProblem } from '../../control/auth.js';
import { holdsRootIds, ROOT_ACCOUNT, ROOT_GROUP, rootGroupsOf, rootIdRefusal } from '../../control/root-ids.js';
import type { ControlQueries, UserPatch } from '../../control/store.js';
import type { Role } from '../../control/types.js';
import { mayManage, principalOf, type ApiContext, type App } from '../context.js';
import { ApiProblem } from '../problem.js';
import { bodies, listOf, params, replies, responses } from '../schemas.js';

interface CreateUserBody {
  username: string;
  password?: string;
  uid?: number;
  gid?: number;
  groups?: string[];
  email?: string | null;
  role?: Role;
  must_change_password?: boolean;
}
type PatchUserBody = Omit<CreateUserBody, 'username'>;
interface UserParams {
  username: string;
}

const security = [{ bearerAuth: [] }];

function checkPassword(password: string | undefined): void {
  if (password === undefined) return;
  const problem = passwordProblem(password);
  if (problem !== undefined) throw new ApiProblem('validation', `body.password ${problem}`);
}

async function keepAnAdmin(q: ControlQueries, username: string, what: string): Promise<void> {
  const u = await q.getUser(username);
  if (u?.role === 'admin' && (await q.countAdmins()) <= 1) throw new ApiProblem('conflict', `cannot ${what} the last admin`);
}

export function userRoutes(app: App, ctx: ApiContext): void {
  const { store } = ctx;

  app.get(
    '/api/v1/users',
    {
      config: { access: 'operator' },
      schema: { tags: ['users'], summary: 'All users', security, response: responses({ 200: listOf(replies.user) }) },
    },
    async () => store.listUsers(),
  );

  app.post<{ Body: CreateUserBody }>(
    '/api/v1/users',
    {
      config: { access: 'operator' },
      schema: { tags: ['users'], summary: 'Create a user', security, body: bodies.createUser, response: responses({ 201: replies.user }) },
    },
    async (req, reply) => {
      const me = principalOf(req);
      const b = req.body;
      const role = b.role ?? 'user';
      if (!mayManage(me, role)) throw new ApiProblem('forbidden', `only an admin can create users with role ${role}`);
      const rootIds = rootIdRefusal(me.role, 'a user', b);
      if (rootIds !== null) throw new ApiProblem('forbidden', rootIds);
      if (me.role !== 'admin' && b.groups !== undefined && b.groups.length > 0) {
        const roots = rootGroupsOf(await store.listGroups());
        if (b.groups.some((g) => roots.has(g))) throw new ApiProblem('forbidden', ROOT_GROUP);
      }
      checkPassword(b.password);
      const creds = b.password === undefined ? undefined : await passwordCredentials(b.password, ctx.bcryptCost);
      const user = await store.createUser({
        username: b.username,
        role,
        ...(b.uid === undefined ? {} : { uid: b.uid }),
        ...(b.gid === undefined ? {} : { gid: b.gid }),
        ...(b.email === undefined ? {} : { email: b.email }),
        ...(b.groups === undefined ? {} : { groups: b.groups }),
        ...(creds ?? {}),
        must_change_password: b.must_change_password ?? creds !== undefined,
      });
      req.log.info({ username: user.username, role, by: me.username }, 'user created');
      return reply.status(201).send(user);
    },
  );

  app.get<{ Params: UserParams }>(
    '/api/v1/users/:username',
    {
      config: { access: 'operator' },
      schema: { tags: ['users'], summary: 'One user', security, params: params.username, response: responses({ 200: replies.user }) },
    },
    async (req) => store.read((q) => q.requireUser(req.params.username)),
  );

  app.patch<{ Params: UserParams; Body: PatchUserBody }>(
    '/api/v1/users/:username',
    {
      config: { access: 'operator' },
      schema: {
        tags: ['users'],
        summary: 'Change a user (password, email, ids, groups, role)',
        security,
        params: params.username,
        body: bodies.patchUser,
        response: responses({ 200: replies.user }),
      },
    },
    async (req) => {
      const me = principalOf(req);
      const { username } = req.params;
      const b = req.body;
      if (b.role !== undefined && me.role !== 'admin') throw new ApiProblem('forbidden', 'only an admin can change roles');
      checkPassword(b.password);
      const creds = b.password === undefined ? undefined : await passwordCredentials(b.password, ctx.bcryptCost);
      const user = await store.mutate(async (q) => {
        const target = await q.requireUser(username);
        if (!mayManage(me, target.role)) throw new ApiProblem('forbidden', `only an admin can change users with role ${target.role}`);
        const roots = rootGroupsOf(await q.listGroups());
        if (me.role !== 'admin' && holdsRootIds(target, roots)) throw new ApiProblem('forbidden', ROOT_ACCOUNT);
        if (me.role !== 'admin' && b.groups?.some((g) => roots.has(g))) throw new ApiProblem('forbidden', ROOT_GROUP);
        const rootIds = rootIdRefusal(me.role, 'a user', b, target);
        if (rootIds !== null) throw new ApiProblem('forbidden', rootIds);
        if (b.role !== undefined && b.role !== 'admin') await keepAnAdmin(q, username, 'demote');
        const patch: UserPatch = {};
        if (b.uid !== undefined) patch.uid = b.uid;
        if (b.gid !== undefined) patch.gid = b.gid;
        if (b.email !== undefined) patch.email = b.email;
        if (b.role !== undefined) patch.role = b.role;
        if (b.groups !== undefined) patch.groups = b.groups;
        if (creds !== undefined) {
          patch.credentials = creds;
          patch.must_change_password = username !== me.username;
        }
        if (b.must_change_password !== undefined) patch.must_change_password = b.must_change_password;
        return q.updateUser(username, patch);
      });
      req.log.info({ username, by: me.username, fields: Object.keys(b) }, 'user changed');
      return user;
    },
  );

  app.delete<{ Params: UserParams }>(
    '/api/v1/users/:username',
    {
      config: { access: 'operator' },
      schema: {
        tags: ['users'],
        summary: 'Delete a user (its memberships and grants go with it)',
        security,
        params: params.username,
        response: responses({ 204: replies.noContent }),
      },
    },
    async (req, reply) => {
      const me = principalOf(req);
      const { username } = req.params;
      if (username === me.username) throw new ApiProblem('conflict', 'you cannot delete yourself');
      await store.mutate(async (q) => {
        const target = await q.requireUser(username);
        if (!mayManage(me, target.role)) throw new ApiProblem('forbidden', `only an admin can delete users with role ${target.role}`);
        if (me.role !== 'admin' && holdsRootIds(target, rootGroupsOf(await q.listGroups())))
          throw new ApiProblem('forbidden', ROOT_ACCOUNT);
        await keepAnAdmin(q, username, 'delete');
        await q.deleteUser(username);
      });
      req.log.info({ username, by: me.username }, 'user deleted');
      return reply.status(204).send();
    },
  );
}
