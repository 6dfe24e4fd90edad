// RFC 7807 problem details: the one error catalogue of the API. Every failure answers
// `application/problem+json` with {type, title, status, detail, instance?, item?}; `type` is a
// stable URN per kind of problem, `item` names the item of a desired state that failed. Details
// never carry stack traces, SQL text, request values (a password sent in the wrong field) or secrets.
import type { FastifyError } from 'fastify';
import { redactSecrets } from '../config/errors.js';
import { AuthError } from '../control/auth.js';
import { CONTROL_ERROR, ControlError, type ControlErrorCode } from '../control/errors.js';
import { isNoSpace } from '../vfs/errors.js';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json; charset=utf-8';

export const PROBLEMS = Object.freeze({
  'bad-request': { status: 400, title: 'Bad request' },
  validation: { status: 400, title: 'Invalid request' },
  unauthorized: { status: 401, title: 'Unauthorized' },
  forbidden: { status: 403, title: 'Forbidden' },
  'password-change-required': { status: 403, title: 'Password must be changed' },
  'not-found': { status: 404, title: 'Not found' },
  'method-not-allowed': { status: 405, title: 'Method not allowed' },
  conflict: { status: 409, title: 'Conflict' },
  'already-exists': { status: 409, title: 'Already exists' },
  'in-use': { status: 409, title: 'In use' },
  'payload-too-large': { status: 413, title: 'Payload too large' },
  'uri-too-long': { status: 414, title: 'URI too long' },
  'unsupported-media-type': { status: 415, title: 'Unsupported media type' },
  unprocessable: { status: 422, title: 'Unprocessable' },
  'rate-limited': { status: 429, title: 'Too many requests' },
  internal: { status: 500, title: 'Internal server error' },
  unavailable: { status: 503, title: 'Service unavailable' },
  'insufficient-storage': { status: 507, title: 'Insufficient storage' },
} as const);

export type ProblemKind = keyof typeof PROBLEMS;

export const problemType = (kind: ProblemKind): string => `urn:dittofs:problem:${kind}`;

export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance?: string;
  item?: string;
}

/** Thrown by handlers and hooks; the error handler answers it as it is. */
export class ApiProblem extends Error {
  override readonly name = 'ApiProblem';
  /** For Fastify and plugins that look at it. */
  readonly statusCode: number;

  constructor(
    readonly kind: ProblemKind,
    readonly detail: string,
    readonly item?: string,
  ) {
    super(detail);
    this.statusCode = PROBLEMS[kind].status;
  }
}

export const PROBLEM_SCHEMA = Object.freeze({
  type: 'object',
  description: 'RFC 7807 problem details (application/problem+json)',
  properties: {
    type: { type: 'string' },
    title: { type: 'string' },
    status: { type: 'integer' },
    detail: { type: 'string' },
    instance: { type: 'string' },
    item: { type: 'string', description: 'the item of a desired state that failed' },
  },
  required: ['type', 'title', 'status', 'detail'],
});

const CONTROL_KIND: Readonly<Record<ControlErrorCode, ProblemKind>> = {
  [CONTROL_ERROR.NOT_FOUND]: 'not-found',
  [CONTROL_ERROR.ALREADY_EXISTS]: 'already-exists',
  [CONTROL_ERROR.IN_USE]: 'in-use',
  [CONTROL_ERROR.CONFLICT]: 'conflict',
  [CONTROL_ERROR.INVALID]: 'validation',
  [CONTROL_ERROR.UNPROCESSABLE]: 'unprocessable',
  [CONTROL_ERROR.FORBIDDEN]: 'forbidden',
};

/** Safe fixed details for Fastify's own request errors (their messages are not shown). */
const FASTIFY_CODES: Readonly<Record<string, { kind: ProblemKind; detail: string }>> = {
  FST_ERR_CTP_INVALID_JSON_BODY: { kind: 'bad-request', detail: 'the request body is not valid JSON' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { kind: 'bad-request', detail: 'the request body is empty; send a JSON object' },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { kind: 'unsupported-media-type', detail: 'send the body as application/json' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { kind: 'bad-request', detail: 'the Content-Length does not match the body' },
  FST_ERR_CTP_BODY_TOO_LARGE: { kind: 'payload-too-large', detail: 'the request body is too large' },
  FST_ERR_BAD_URL: { kind: 'bad-request', detail: 'the URL is malformed' },
  FST_ERR_MAX_PARAM_LENGTH: { kind: 'uri-too-long', detail: 'a name in the URL is too long' },
  FST_ERR_ASYNC_CONSTRAINT: { kind: 'bad-request', detail: 'the request cannot be routed' },
};

interface AjvError {
  instancePath?: string;
  keyword?: string;
  message?: string;
  params?: Record<string, unknown>;
}

/** `body.config: unknown property "foo"`, from the first schema violation; never quotes input. */
export function describeValidation(context: string | undefined, errors: readonly AjvError[]): string {
  const e = errors.find((x) => x.keyword !== 'if') ?? errors[0];
  if (e === undefined) return 'the request does not match the schema';
  const where = `${context ?? 'request'}${(e.instancePath ?? '').replace(/\//g, '.')}`;
  const p = e.params ?? {};
  switch (e.keyword ?? '') {
    case 'additionalProperties':
      return `${where}: unknown property ${JSON.stringify(p.additionalProperty)}`;
    case 'required':
      return `${where}: missing required property ${JSON.stringify(p.missingProperty)}`;
    case 'enum':
      return `${where}: must be one of ${(Array.isArray(p.allowedValues) ? p.allowedValues : []).map((v) => JSON.stringify(v)).join(', ')}`;
    case 'const':
      return `${where}: must be ${JSON.stringify(p.allowedValue)}`;
    default:
      return `${where}: ${e.message ?? 'is invalid'}`;
  }
}

/**
 * An internal error while this server has a store that failed for good (ApiRuntime.failure: the
 * control database refuses all work after a failed fsync, say) is that failure: 503 with why and
 * what to do, not "see its log". Any other problem stays as it is.
 */
export function failedForGood(p: ApiProblem, failure: string | null): ApiProblem {
  if (p.kind !== 'internal' || failure === null) return p;
  return new ApiProblem('unavailable', `this server must be restarted (GET /health says why): ${redactSecrets(failure)}`);
}

/** Any error -> the problem to answer. Unknown errors are 500 with a fixed detail. */
export function toProblem(err: unknown): ApiProblem {
  if (err instanceof ApiProblem) return err;
  if (err instanceof ControlError) return new ApiProblem(CONTROL_KIND[err.code], redactSecrets(err.message), err.item);
  if (err instanceof AuthError) return new ApiProblem('unauthorized', err.message);
  if (isNoSpace(err))
    return new ApiProblem(
      'insufficient-storage',
      "the volume of the server's control database is full: nothing was changed; free space on it and try again",
    );
  const fe = err as Partial<FastifyError> & { validation?: AjvError[]; validationContext?: string };
  if (Array.isArray(fe.validation)) return new ApiProblem('validation', describeValidation(fe.validationContext, fe.validation));
  if (typeof fe.code === 'string') {
    const known = FASTIFY_CODES[fe.code];
    if (known !== undefined) return new ApiProblem(known.kind, known.detail);
  }
  const status = typeof fe.statusCode === 'number' ? fe.statusCode : 500;
  if (status === 404) return new ApiProblem('not-found', 'no such resource');
  if (status === 413) return new ApiProblem('payload-too-large', 'the request body is too large');
  if (status === 415) return new ApiProblem('unsupported-media-type', 'send the body as application/json');
  if (status >= 400 && status < 500) return new ApiProblem('bad-request', 'the request is malformed');
  return new ApiProblem('internal', 'the server failed to handle the request; see its log');
}

export function problemBody(p: ApiProblem, instance?: string): ProblemBody {
  const def = PROBLEMS[p.kind];
  return {
    type: problemType(p.kind),
    title: def.title,
    status: def.status,
    detail: p.detail,
    ...(instance === undefined ? {} : { instance }),
    ...(p.item === undefined ? {} : { item: p.item }),
  };
}
