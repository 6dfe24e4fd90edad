// The DittoFS operator as a library: what main.ts runs, for tests and embedding.
export * from './api/types.js';
export { parseConfig, USAGE, type OperatorConfig } from './config.js';
export { createLogger, type Logger } from './log.js';
export { DittofsOperator } from './operator.js';
export { OPERATOR_VERSION } from './version.js';
export { main } from './main.js';
