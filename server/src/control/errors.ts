// Errors of the control plane: one class, a stable `code` per kind of failure. The API maps each
// code to an HTTP status and an RFC 7807 problem type (api/problem.ts). Messages name the item and
// never quote secrets; they are shown to API clients as they are.

export const CONTROL_ERROR = Object.freeze({
  /** A named item does not exist (404 when the URL names it). */
  NOT_FOUND: 'DITTOFS_CONTROL_NOT_FOUND',
  /** An item with that name (or uid, gid, port) exists already (409). */
  ALREADY_EXISTS: 'DITTOFS_CONTROL_ALREADY_EXISTS',
  /** The item is still used by another (a store by a share) (409). */
  IN_USE: 'DITTOFS_CONTROL_IN_USE',
  /** The change would break a rule (the last admin, deleting yourself) (409). */
  CONFLICT: 'DITTOFS_CONTROL_CONFLICT',
  /** The input is malformed (400). */
  INVALID: 'DITTOFS_CONTROL_INVALID',
  /** The input is well formed but names something missing or cannot work (422). */
  UNPROCESSABLE: 'DITTOFS_CONTROL_UNPROCESSABLE',
  /** The caller's role does not allow it (403). */
  FORBIDDEN: 'DITTOFS_CONTROL_FORBIDDEN',
} as const);

export type ControlErrorCode = (typeof CONTROL_ERROR)[keyof typeof CONTROL_ERROR];

export class ControlError extends Error {
  override readonly name = 'ControlError';
  constructor(
    readonly code: ControlErrorCode,
    message: string,
    /** The item the error is about, e.g. `shares["/export"]` in a desired state. */
    readonly item?: string,
  ) {
    super(item === undefined ? message : `${item}: ${message}`);
  }
}

export function isControlError(e: unknown): e is ControlError {
  return e instanceof ControlError;
}

export const notFound = (what: string): ControlError => new ControlError(CONTROL_ERROR.NOT_FOUND, `${what} does not exist`);
export const alreadyExists = (what: string): ControlError => new ControlError(CONTROL_ERROR.ALREADY_EXISTS, `${what} already exists`);
