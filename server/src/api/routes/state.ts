// The declarative state (admin or operator): GET the current state, PUT the desired one. See
// control/state.ts for the rules (idempotent, all or nothing, never locks the caller out).
import { applyState, getState, type DesiredState } from '../../control/state.js';
import { principalOf, type ApiContext, type App } from '../context.js';
import { replies, responses, stateBody } from '../schemas.js';

const security = [{ bearerAuth: [] }];

export function stateRoutes(app: App, ctx: ApiContext): void {
  const { store, runtime } = ctx;
  const config = { access: 'operator' as const };
  const tags = ['state'];

  app.get(
    '/api/v1/state',
    {
      config,
      schema: { tags, summary: 'The current state (no passwords; secrets as ****)', security, response: responses({ 200: replies.state }) },
    },
    async () => getState(store),
  );

  app.put<{ Body: DesiredState }>(
    '/api/v1/state',
    {
      config,
      schema: {
        tags,
        summary: 'Converge to a desired state, in one transaction; reports what changed',
        security,
        body: stateBody,
        response: responses({ 200: replies.applied }),
      },
    },
    async (req) => {
      const me = principalOf(req);
      const result = await applyState(store, req.body, {
        caller: { username: me.username, role: me.role },
        bcryptCost: ctx.bcryptCost,
        checkStore: (kind, type, cfg) => runtime.checkStore(kind, type, cfg),
      });
      const changed = result.created.length + result.updated.length + result.removed.length;
      if (changed > 0)
        req.log.info(
          { generation: result.generation, created: result.created.length, updated: result.updated.length, removed: result.removed.length },
          'state applied',
        );
      return result;
    },
  );
}
