// Liveness, readiness and the OpenAPI document: no authentication, no rate limit (probes poll them).
import type { ApiContext, App } from '../context.js';
import { replies, responses } from '../schemas.js';

export function healthRoutes(app: App, ctx: ApiContext): void {
  app.get(
    '/health',
    {
      config: { access: 'public', rateLimit: false },
      schema: { tags: ['health'], summary: 'Liveness: the process answers', response: responses({ 200: replies.ok }) },
    },
    async () => ({ status: 'ok' }),
  );

  app.get(
    '/health/ready',
    {
      config: { access: 'public', rateLimit: false },
      schema: {
        tags: ['health'],
        summary: 'Readiness: the stores and listeners are up (503 with the failing checks otherwise)',
        response: responses({ 200: replies.readiness, 503: replies.readiness }),
      },
    },
    async (_req, reply) => {
      const r = ctx.runtime.ready();
      return reply.status(r.ready ? 200 : 503).send(r);
    },
  );

  app.get(
    '/api/v1/openapi.json',
    {
      config: { access: 'public', rateLimit: false },
      schema: { tags: ['health'], summary: 'This OpenAPI document', response: responses({ 200: replies.openapi }) },
    },
    async () => app.swagger(),
  );
}
