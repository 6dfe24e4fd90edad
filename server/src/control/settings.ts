// Settings the control plane can change at run time. Each known key has a check (the config
// file's, so messages match) and the JSON schema the API documents; unknown keys are refused.
import { enumLeaf, type LeafNode } from '../config/schema.js';
import { LOG_LEVELS } from '../config/types.js';

export interface SettingSpec {
  description: string;
  /** JSON schema of the value, for the OpenAPI document. */
  schema: Record<string, unknown>;
  leaf: LeafNode;
}

export const SETTINGS: Readonly<Record<string, SettingSpec>> = Object.freeze({
  'logging.level': {
    description: 'log level of the server, applied at once (overrides logging.level of the config file)',
    schema: { type: 'string', enum: [...LOG_LEVELS] },
    leaf: enumLeaf(LOG_LEVELS),
  },
});

export const SETTING_KEYS: readonly string[] = Object.freeze(Object.keys(SETTINGS));

export function isKnownSetting(key: string): boolean {
  return Object.hasOwn(SETTINGS, key);
}

/** Why `value` is not acceptable for `key`, or undefined. */
export function settingProblem(key: string, value: unknown): string | undefined {
  const spec = isKnownSetting(key) ? SETTINGS[key] : undefined;
  if (spec === undefined) return `unknown setting ${JSON.stringify(key)} (known: ${SETTING_KEYS.join(', ')})`;
  const r = spec.leaf.check(value);
  return r.ok ? undefined : `${key}: ${r.message}`;
}
