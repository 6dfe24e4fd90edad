// Protocol adapters (nfs, smb): enabled and port (admin or operator). A change applies at once:
// every server on the control database hears it (the control store's change notification, and
// Redis with several servers) and starts, stops or moves its listener (server/src/adapters.ts); it
// lasts until that server restarts, when the config file's setting applies again. The PATCH answers
// once this server applied it, and `served` / `listening_port` say what this server serves.
import type { Adapter, AdapterType } from '../../control/types.js';
import { notServedReason, protocolServed } from '../../protocols.js';
import { type ApiContext, type App } from '../context.js';
import type { ApiRuntime } from '../runtime.js';
import { bodies, listOf, params, replies, responses } from '../schemas.js';

const security = [{ bearerAuth: [] }];

type AdapterReply = Adapter & { served: boolean; listening_port?: number; note?: string };

/**
 * An adapter row with what this server does with it: whether it listens, on which port, and why
 * that differs from the row (a port that could not be bound, the config file's setting since the
 * start). Without a running server (tests' stand-ins): what this version would serve.
 */
function withServed(runtime: ApiRuntime, a: Adapter): AdapterReply {
  const s = runtime.adapters?.serving(a.type, a);
  if (s === undefined) {
    const why = notServedReason(a.type, a.enabled);
    return { ...a, served: protocolServed(a.type, a.enabled), ...(why === undefined ? {} : { note: why }) };
  }
  return {
    ...a,
    served: s.served,
    ...(s.port === null ? {} : { listening_port: s.port }),
    ...(s.note === undefined ? {} : { note: s.note }),
  };
}

export function adapterRoutes(app: App, ctx: ApiContext): void {
  const { store, runtime } = ctx;
  const config = { access: 'operator' as const };
  const tags = ['adapters'];

  app.get(
    '/api/v1/adapters',
    { config, schema: { tags, summary: 'Both adapters', security, response: responses({ 200: listOf(replies.adapter) }) } },
    async () => (await store.listAdapters()).map((a) => withServed(runtime, a)),
  );

  app.get<{ Params: { type: AdapterType } }>(
    '/api/v1/adapters/:type',
    { config, schema: { tags, summary: 'One adapter', security, params: params.adapter, response: responses({ 200: replies.adapter }) } },
    async (req) => withServed(runtime, await store.getAdapter(req.params.type)),
  );

  app.patch<{ Params: { type: AdapterType }; Body: { enabled?: boolean; port?: number } }>(
    '/api/v1/adapters/:type',
    {
      config,
      schema: {
        tags,
        summary: 'Enable, disable or move an adapter',
        security,
        params: params.adapter,
        body: bodies.patchAdapter,
        response: responses({ 200: replies.adapter }),
      },
    },
    async (req) => {
      const a = await store.updateAdapter(req.params.type, req.body);
      req.log.info({ ...a }, 'adapter changed');
      // Answered once this server applied it (or failed to bind: then `served` and `note` say so).
      await runtime.adapters?.settle();
      return withServed(runtime, a);
    },
  );
}
