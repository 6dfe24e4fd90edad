// The control plane: its database, identity and access rules, and the declarative state.
export * from './types.js';
export { CONTROL_ERROR, ControlError, isControlError, type ControlErrorCode } from './errors.js';
export {
  CONTROL_STORE_TYPES,
  ControlQueries,
  ControlStore,
  defaultAdapters,
  openControlStore,
  type ControlListener,
  type ControlStoreType,
  type NewUser,
  type OpenControlStoreOptions,
  type SharePatch,
  type UserPatch,
} from './store.js';
export { CONTROL_MIGRATIONS, migrateControl } from './migrations.js';
export { buildAccessIndex, gidOverlapsOf, resolveShareAccess, type AccessCredential, type AccessIndex } from './access.js';
export {
  AUTH_ERROR,
  AuthError,
  DEFAULT_BCRYPT_COST,
  MIN_JWT_SECRET_LENGTH,
  TokenService,
  ensureAdmin,
  ensureJwtSecret,
  generatePassword,
  hashPassword,
  ntHash,
  passwordProblem,
  verifyPassword,
  type EnsureAdminOptions,
  type EnsureAdminResult,
  type TokenClaims,
  type TokenPair,
} from './auth.js';
export { applyState, getState, type ApplyStateOptions, type ApplyStateResult, type DesiredState, type StateItem } from './state.js';
export { desiredFromConfig } from './seed.js';
export { SETTINGS, SETTING_KEYS, settingProblem } from './settings.js';
export { maskStoreConfig, storeConfigProblem } from './store-config.js';
