// Login, token refresh, the caller's own account and password.
//
// Changing your password (POST /api/v1/users/me/password) answers 204 and revokes every token you
// hold, this one included: log in again with the new password. That also ends sessions a thief may
// have opened with the old one.
import { MAX_PASSWORD_BYTES, burnPasswordCheck, passwordCredentials, passwordProblem, verifyPassword } from '../../control/auth.js';
import type { UserCredentials } from '../../control/types.js';
import { principalOf, type ApiContext, type App } from '../context.js';
import { credentialsAddressLimit, credentialsRateLimit } from '../limits.js';
import { ApiProblem } from '../problem.js';
import { bodies, replies, responses } from '../schemas.js';

interface LoginBody {
  username: string;
  password: string;
}
interface RefreshBody {
  refresh_token: string;
}
interface ChangePasswordBody {
  current_password: string;
  new_password: string;
}

const BAD_LOGIN = 'invalid username or password';
const security = [{ bearerAuth: [] }];

export function authRoutes(app: App, ctx: ApiContext): void {
  const { store, tokens } = ctx;
  const tokenReply = (c: UserCredentials) => ({ ...tokens.issue(c), must_change_password: c.must_change_password });
  // One budget per address for both routes, counted before the body is even parsed.
  const perAddress = credentialsAddressLimit(app, ctx.credentialsAddressLimit);

  app.post<{ Body: LoginBody }>(
    '/api/v1/auth/login',
    {
      config: { access: 'public', rateLimit: credentialsRateLimit(ctx.credentialsLimit, (req) => (req.body as LoginBody).username) },
      onRequest: perAddress,
      schema: {
        tags: ['auth'],
        summary: 'Log in: an access token (15 min) and a refresh token (7 days)',
        body: bodies.login,
        response: responses({ 200: replies.tokens }),
      },
    },
    async (req) => {
      const { username, password } = req.body;
      const creds = await store.getCredentials(username);
      // Every attempt costs one bcrypt check at the configured cost, whether the user exists, has
      // a password, or sent one too long to be theirs: timing must not tell usernames apart.
      const hash = Buffer.byteLength(password, 'utf8') <= MAX_PASSWORD_BYTES ? creds?.password_hash : undefined;
      let ok = false;
      if (hash == null) await burnPasswordCheck(password, ctx.bcryptCost);
      else ok = await verifyPassword(password, hash);
      if (!ok || creds === undefined) {
        // The client's address (the forwarded one behind a trusted proxy): what an operator
        // watching for password guessing needs; request lines are logged at debug only.
        req.log.info({ username, client: req.ip }, 'login failed');
        throw new ApiProblem('unauthorized', BAD_LOGIN);
      }
      req.log.info({ username, client: req.ip }, 'login');
      return tokenReply(creds);
    },
  );

  app.post<{ Body: RefreshBody }>(
    '/api/v1/auth/refresh',
    {
      config: { access: 'public' },
      schema: {
        tags: ['auth'],
        summary: 'A new token pair for a refresh token',
        body: bodies.refresh,
        response: responses({ 200: replies.tokens }),
      },
    },
    async (req) => {
      const claims = tokens.verify(req.body.refresh_token, 'refresh');
      const creds = await store.getCredentials(claims.sub);
      if (creds === undefined || creds.token_version !== claims.tv)
        throw new ApiProblem('unauthorized', 'the token was revoked; log in again');
      return tokenReply(creds);
    },
  );

  app.get(
    '/api/v1/auth/me',
    {
      config: { access: 'user', duringPasswordChange: true },
      schema: { tags: ['auth'], summary: 'The caller', security, response: responses({ 200: replies.user }) },
    },
    async (req) => {
      const me = await store.getUser(principalOf(req).username);
      if (me === undefined) throw new ApiProblem('unauthorized', 'the token was revoked; log in again');
      return me;
    },
  );

  app.post<{ Body: ChangePasswordBody }>(
    '/api/v1/users/me/password',
    {
      config: {
        access: 'user',
        duringPasswordChange: true,
        rateLimit: credentialsRateLimit(ctx.credentialsLimit, (req) => req.principal?.username ?? ''),
      },
      onRequest: perAddress,
      schema: {
        tags: ['auth'],
        summary: 'Change your password; revokes your tokens (log in again)',
        security,
        body: bodies.changePassword,
        response: responses({ 204: replies.noContent }),
      },
    },
    async (req, reply) => {
      const { username } = principalOf(req);
      const { current_password, new_password } = req.body;
      const problem = passwordProblem(new_password);
      if (problem !== undefined) throw new ApiProblem('validation', `body.new_password ${problem}`);
      if (new_password === current_password) throw new ApiProblem('validation', 'body.new_password must differ from the current password');
      const creds = await store.getCredentials(username);
      if (creds?.password_hash == null || !(await verifyPassword(current_password, creds.password_hash))) {
        throw new ApiProblem('forbidden', 'the current password is wrong');
      }
      const next = await passwordCredentials(new_password, ctx.bcryptCost);
      await store.mutate(async (q) => {
        // The hash checked above must still be the stored one (no change in between).
        const now = await q.getCredentials(username);
        if (now?.password_hash !== creds.password_hash)
          throw new ApiProblem('conflict', 'the password was changed meanwhile; log in again');
        await q.updateUser(username, { credentials: next, must_change_password: false });
      });
      req.log.info({ username }, 'password changed');
      return reply.status(204).send();
    },
  );
}
