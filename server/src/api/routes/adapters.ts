// Protocol adapters (nfs, smb): enabled and port (admin or operator). The server picks changes up
// through the control store's change notification.
import type { AdapterType } from '../../control/types.js';
import { type ApiContext, type App } from '../context.js';
import { bodies, listOf, params, replies, responses } from '../schemas.js';

const security = [{ bearerAuth: [] }];

export function adapterRoutes(app: App, ctx: ApiContext): void {
  const { store } = ctx;
  const config = { access: 'operator' as const };
  const tags = ['adapters'];

  app.get(
    '/api/v1/adapters',
    { config, schema: { tags, summary: 'Both adapters', security, response: responses({ 200: listOf(replies.adapter) }) } },
    async () => store.listAdapters(),
  );

  app.get<{ Params: { type: AdapterType } }>(
    '/api/v1/adapters/:type',
    { config, schema: { tags, summary: 'One adapter', security, params: params.adapter, response: responses({ 200: replies.adapter }) } },
    async (req) => store.getAdapter(req.params.type),
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
      return a;
    },
  );
}
