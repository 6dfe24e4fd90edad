// Liveness, readiness and the OpenAPI document: no authentication, no rate limit (probes poll them).
import { redactSecrets } from '../../config/errors.js';
import type { ApiContext, App } from '../context.js';
import { replies, responses } from '../schemas.js';

export function healthRoutes(app: App, ctx: ApiContext): void {
  app.get(
    '/health',
    {
      config: { access: 'public', rateLimit: false },
      schema: {
        tags: ['health'],
        summary: 'Liveness: the process answers, and no store failed for good (503 with why: a restart recovers)',
        response: responses({ 200: replies.ok, 503: replies.failed }),
      },
    },
    async (_req, reply) => {
      // A store that failed for good (an fsync failed: the WAL or SQLite refuse all writes; changes
      // answered were lost in a crash of PostgreSQL) recovers by a restart, which replays the WAL:
      // failing liveness makes Kubernetes do it.
      const failure = ctx.runtime.failure?.() ?? null;
      if (failure === null) return { status: 'ok' };
      return reply.status(503).send({ status: 'failed', detail: redactSecrets(failure) });
    },
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
      // A check's detail is a store's own error message, which may quote its URL with the password;
      // anyone can read this route. The detail itself stays: it is how an operator learns why.
      const checks = Object.fromEntries(
        Object.entries(r.checks).map(([k, c]) => [k, c.detail === undefined ? c : { ...c, detail: redactSecrets(c.detail) }]),
      );
      return reply.status(r.ready ? 200 : 503).send({ ...r, checks });
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
