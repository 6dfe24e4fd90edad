// The declarative state (admin or operator): GET the current state, PUT the desired one. See
// control/state.ts for the rules (idempotent, all or nothing, never locks the caller out).
import { applyState, getState, type DesiredState } from '../../control/state.js';
import { APPLIED_GENERATION_HEADER, convergeReply, GENERATION_HEADER } from '../convergence.js';
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
    async (_req, reply) => {
      // Which generation this server runs next to the database's (several servers: the operator's
      // Synced condition holds when every pod runs the database's).
      const [state, generation] = await Promise.all([getState(store), store.generation()]);
      reply.header(GENERATION_HEADER, String(generation));
      if (runtime.control) reply.header(APPLIED_GENERATION_HEADER, String(runtime.control.appliedGeneration()));
      return state;
    },
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
    async (req, reply) => {
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
      // Nothing changed in the database is not yet "nothing to do": this server (and the others)
      // may not have applied a change made through another one. Converged before the answer.
      const converged = await convergeReply(runtime, reply);
      return converged === null
        ? result
        : { ...result, generation: Math.max(result.generation, converged.generation), pending_replicas: converged.pending };
    },
  );
}
