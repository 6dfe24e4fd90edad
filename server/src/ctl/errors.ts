// dittofsctl's failures. Every one ends the run with one line on stderr (`dittofsctl: ...`), maybe
// a hint line, and an exit code: 2 for bad input caught before any request (the shell convention
// for usage errors), 1 for everything else (the server refused, it cannot be reached).

export const EXIT = Object.freeze({ OK: 0, FAILURE: 1, USAGE: 2, INTERRUPTED: 130 } as const);

export const CTL_ERROR = Object.freeze({
  /** Bad flags or arguments, caught before any request. */
  USAGE: 'DITTOFSCTL_USAGE',
  /** The server answered with an error status. */
  API: 'DITTOFSCTL_API',
  /** The server could not be reached, or answered something that is not the API. */
  CONNECTION: 'DITTOFSCTL_CONNECTION',
  /** No server or no credentials to use. */
  NOT_LOGGED_IN: 'DITTOFSCTL_NOT_LOGGED_IN',
  /** The contexts file cannot be read or written. */
  CONFIG: 'DITTOFSCTL_CONFIG',
  /** A prompt was interrupted (Ctrl-C). */
  INTERRUPTED: 'DITTOFSCTL_INTERRUPTED',
} as const);

export type CtlErrorCode = (typeof CTL_ERROR)[keyof typeof CTL_ERROR];

export class CtlError extends Error {
  override readonly name: string = 'CtlError';
  constructor(
    readonly code: CtlErrorCode,
    message: string,
    /** A second line telling what to do about it. */
    readonly hint?: string,
  ) {
    super(message);
  }

  get exitCode(): number {
    if (this.code === CTL_ERROR.USAGE) return EXIT.USAGE;
    if (this.code === CTL_ERROR.INTERRUPTED) return EXIT.INTERRUPTED;
    return EXIT.FAILURE;
  }
}

export class UsageError extends CtlError {
  override readonly name = 'UsageError';
  constructor(message: string, hint?: string) {
    super(CTL_ERROR.USAGE, message, hint);
  }
}

/** RFC 7807 problem details, as the API sends them. */
export interface Problem {
  type?: string;
  title?: string;
  status: number;
  detail?: string;
  instance?: string;
  item?: string;
}

export const PASSWORD_CHANGE_REQUIRED_TYPE = 'urn:dittofs:problem:password-change-required';

export class ApiError extends CtlError {
  override readonly name = 'ApiError';
  constructor(
    readonly status: number,
    readonly problem: Problem,
    hint?: string,
  ) {
    super(CTL_ERROR.API, `${describeProblem(problem)} (HTTP ${status})`, hint ?? hintFor(problem));
  }

  get passwordChangeRequired(): boolean {
    return isPasswordChangeRequired(this.problem);
  }
}

function describeProblem(p: Problem): string {
  const detail = p.detail?.trim();
  if (detail !== undefined && detail !== '') return detail;
  const title = p.title?.trim();
  return title !== undefined && title !== '' ? title : 'request failed';
}

export function isPasswordChangeRequired(p: Problem): boolean {
  return (
    p.status === 403 && (p.type === PASSWORD_CHANGE_REQUIRED_TYPE || /password must be changed/i.test(`${p.title ?? ''} ${p.detail ?? ''}`))
  );
}

function hintFor(p: Problem): string | undefined {
  if (p.status === 401) return 'log in with: dittofsctl login';
  if (isPasswordChangeRequired(p)) return 'change your password with: dittofsctl password';
  return undefined;
}
