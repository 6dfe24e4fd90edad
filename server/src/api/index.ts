// The control-plane REST API.
export { API_PREFIX, REDACTED_LOG_PATHS, buildApi, type ApiAuthOptions, type ApiOptions, type ApiRateLimitOptions } from './app.js';
export type { Access, Principal } from './context.js';
export { ApiProblem, PROBLEMS, PROBLEM_CONTENT_TYPE, problemType, type ProblemBody, type ProblemKind } from './problem.js';
export type { ApiRuntime, Readiness, ReadinessCheck } from './runtime.js';
