// Protocol adapters (nfs, smb): enabled and port (admin or operator). The server picks changes up
// through the control store's change notification.
import type { Adapter, AdapterType } from '../../control/types.js';
import { notServedReason, protocolServed } from '../../protocols.js';
import { type ApiContext, type App } from '../context.js';
import { bodies, listOf, params, replies, responses } from '../schemas.js';

const security = [{ bearerAuth: [] }];

/** An adapter row with what this server does with it: `served` false for an engine not implemented. */
function withServed(a: Adapter): Adapter & { served: boolean; note?: string } {
  const why = notServedReason(a.type, a.enabled);
  return { ...a, served: protocolServed(a.type, a.enabled), ...(why === undefined ? {} : { note: why }) };
}

export function adapterRoutes(app: App, ctx: ApiContext): void {
  const { store } = ctx;
  const config = { access: 'operator' as const };
  const tags = ['adapters'];

  app.get(
    '/api/v1/adapters',
    { config, schema: { tags, summary: 'Both adapters', security, response: responses({ 200: listOf(replies.adapter) }) } },
    async () => (await store.listAdapters()).map(withServed),
  );

  app.get<{ Params: { type: AdapterType } }>(
    '/api/v1/adapters/:type',
    { config, schema: { tags, summary: 'One adapter', security, params: params.adapter, response: responses({ 200: replies.adapter }) } },
    async (req) => withServed(await store.getAdapter(req.params.type)),
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
      return withServed(a);
    },
  );
}
