// Metadata and block stores (admin or operator; filesystem block stores, embedded metadata stores
// with a path, and postgres URLs naming the server's files or a local socket admin only; never in a
// system directory: see blocks/filesystem.ts). A new store's settings are checked by the running
// server (runtime.checkStore) before anything is stored: settings that cannot work are a 422 and
// nothing changes. Secrets are shown as ****. A store a share uses cannot be deleted (409, naming
// the shares).
import { redactSecrets } from '../../config/errors.js';
import {
  adminOnlyStoreUrl,
  maskStoreConfig,
  normalizeStoreConfig,
  storeConfigProblem,
  unmaskStoreConfig,
} from '../../control/store-config.js';
import type { StoreType } from '../../control/store.js';
import type { StoreKind, StoreRecord } from '../../control/types.js';
import { storeDirKindOf, storeDirProblem } from '../../config/store-dirs.js';
import { principalOf, type ApiContext, type App } from '../context.js';
import { ApiProblem } from '../problem.js';
import { bodies, listOf, params, replies, responses } from '../schemas.js';
import { errorMessage } from '../../error-message.js';

interface StoreBody {
  name: string;
  type: string;
  config?: Record<string, unknown>;
}

const security = [{ bearerAuth: [] }];
const WHAT: Readonly<Record<StoreKind, string>> = { metadata: 'metadata store', block: 'block store' };

export function storeRoutes(app: App, ctx: ApiContext): void {
  const { store, runtime } = ctx;
  const config = { access: 'operator' as const };
  const shown = (kind: StoreKind, s: StoreRecord) => ({ name: s.name, type: s.type, config: maskStoreConfig(kind, s.config) });

  for (const kind of ['metadata', 'block'] as const) {
    const base = `/api/v1/stores/${kind}`;
    const tags = ['stores'];

    app.get(
      base,
      { config, schema: { tags, summary: `All ${WHAT[kind]}s`, security, response: responses({ 200: listOf(replies.store) }) } },
      async () => (await store.listStores(kind)).map((s) => shown(kind, s)),
    );

    app.post<{ Body: StoreBody }>(
      base,
      {
        config,
        schema: {
          tags,
          summary: `Create a ${WHAT[kind]} (its settings are checked first)`,
          security,
          body: kind === 'metadata' ? bodies.metadataStore : bodies.blockStore,
          response: responses({ 201: replies.store }),
        },
      },
      async (req, reply) => {
        const { name, type } = req.body;
        const raw = req.body.config ?? {};
        const problem = storeConfigProblem(kind, type, raw);
        if (problem !== undefined) throw new ApiProblem('validation', `body.${problem}`);
        unmaskStoreConfig(kind, raw, undefined, 'body'); // a mask with nothing behind it is an error
        if ((await store.getStore(kind, name)) !== undefined)
          throw new ApiProblem('already-exists', `${WHAT[kind]} ${JSON.stringify(name)} already exists`);
        const cfg = normalizeStoreConfig(kind, raw);
        const dirKind = storeDirKindOf(kind, type, cfg);
        if (dirKind !== undefined) {
          // It writes where it is told, as the server's user: an admin's decision. Checked before
          // checkStore, which opens the store (and so creates its directory).
          if (principalOf(req).role !== 'admin')
            throw new ApiProblem('forbidden', `only an admin can create ${dirKind.noun}: it writes to the server's own file system`);
          const dirProblem = typeof cfg.path === 'string' ? storeDirProblem(cfg.path, dirKind.dir) : undefined;
          if (dirProblem !== undefined) throw new ApiProblem('unprocessable', `body.config.path: ${dirProblem}`);
        }
        // Files the server would read, or a local socket: checked before checkStore, which opens them.
        const adminOnly = adminOnlyStoreUrl(kind, type, cfg);
        if (adminOnly !== undefined && principalOf(req).role !== 'admin') throw new ApiProblem('forbidden', `body.${adminOnly}`);
        try {
          await runtime.checkStore(kind, type, cfg);
        } catch (e) {
          throw new ApiProblem('unprocessable', `${WHAT[kind]} ${JSON.stringify(name)} cannot work: ${redactSecrets(errorMessage(e))}`);
        }
        const created = await store.createStore(kind, { name, type: type as StoreType<typeof kind>, config: cfg });
        req.log.info({ kind, name, type }, 'store created');
        return reply.status(201).send(shown(kind, created));
      },
    );

    app.get<{ Params: { name: string } }>(
      `${base}/:name`,
      {
        config,
        schema: { tags, summary: `One ${WHAT[kind]}`, security, params: params.store, response: responses({ 200: replies.store }) },
      },
      async (req) => shown(kind, await store.read((q) => q.requireStore(kind, req.params.name))),
    );

    app.delete<{ Params: { name: string } }>(
      `${base}/:name`,
      {
        config,
        schema: {
          tags,
          summary: `Delete a ${WHAT[kind]} no share uses`,
          security,
          params: params.store,
          response: responses({ 204: replies.noContent }),
        },
      },
      async (req, reply) => {
        await store.deleteStore(kind, req.params.name);
        req.log.info({ kind, name: req.params.name }, 'store deleted');
        return reply.status(204).send();
      },
    );
  }
}
