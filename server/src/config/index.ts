// The configuration module: types, defaults, loading and validation.
export * from './types.js';
export { defaultConfig, SHARE_DEFAULTS, DEFAULT_BLOCK_SIZE, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE } from './defaults.js';
export { ConfigError, CONFIG_INVALID, formatIssue, type ConfigIssue } from './errors.js';
export {
  loadConfig,
  parseConfig,
  validateConfig,
  resolveConfigFile,
  DEFAULT_CONFIG_FILE,
  BUILT_IN_SOURCE,
  type LoadOptions,
  type LoadedConfig,
  type ValidateOptions,
} from './load.js';
export { NAMED_ENV_OVERRIDES, NON_OVERRIDE_ENV_VARS, NON_OVERRIDE_ENV_PREFIXES } from './env.js';
export { parseByteSize, formatByteSize } from './sizes.js';
export { formatConfig, formatMode, OUTPUT_FORMATS, type OutputFormat } from './render.js';
export { SAMPLE_CONFIG_YAML } from './sample.js';
