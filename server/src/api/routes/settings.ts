// Run-time settings (admin or operator). Only known keys (control/settings.ts); a value set here
// overrides the config file and is applied at once. GET shows null for a key not set here.
import type { LogLevel } from '../../config/types.js';
import { SETTING_KEYS, isKnownSetting, settingProblem } from '../../control/settings.js';
import { type ApiContext, type App } from '../context.js';
import { ApiProblem } from '../problem.js';
import { bodies, params, replies, responses } from '../schemas.js';

const security = [{ bearerAuth: [] }];

export function settingRoutes(app: App, ctx: ApiContext): void {
  const { store, runtime } = ctx;
  const config = { access: 'operator' as const };
  const tags = ['settings'];

  app.get(
    '/api/v1/settings',
    { config, schema: { tags, summary: 'Every known setting', security, response: responses({ 200: replies.settings }) } },
    async () => {
      const stored = await store.listSettings();
      return Object.fromEntries(SETTING_KEYS.map((k) => [k, stored[k] ?? null]));
    },
  );

  app.get<{ Params: { key: string } }>(
    '/api/v1/settings/:key',
    { config, schema: { tags, summary: 'One setting', security, params: params.setting, response: responses({ 200: replies.setting }) } },
    async (req) => {
      const { key } = req.params;
      if (!isKnownSetting(key))
        throw new ApiProblem('not-found', `unknown setting ${JSON.stringify(key)} (known: ${SETTING_KEYS.join(', ')})`);
      return { key, value: (await store.getSetting(key))?.value ?? null };
    },
  );

  app.put<{ Params: { key: string }; Body: { value: unknown } }>(
    '/api/v1/settings/:key',
    {
      config,
      schema: {
        tags,
        summary: 'Set and apply a setting',
        security,
        params: params.setting,
        body: bodies.setting,
        response: responses({ 200: replies.setting }),
      },
    },
    async (req) => {
      const { key } = req.params;
      const { value } = req.body;
      const problem = settingProblem(key, value);
      if (problem !== undefined) throw new ApiProblem('validation', problem);
      await store.putSetting(key, value);
      if (key === 'logging.level') runtime.setLogLevel(value as LogLevel);
      req.log.info({ key, value }, 'setting changed');
      return { key, value };
    },
  );
}
