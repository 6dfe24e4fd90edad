// The one error the config loader throws.

export interface ConfigIssue {
  /**
   * Where the problem is: a key path such as `adapters.nfs.port` or `shares[1].name`, an environment
   * variable such as `DITTOFS_NFS_PORT`, `file:line:column` for YAML syntax errors, or the file name.
   */
  path: string;
  /** What is wrong, in plain words. */
  message: string;
  /** 1-based line in the config file of the offending key, when known. */
  line?: number;
}

export const CONFIG_INVALID = 'DITTOFS_CONFIG_INVALID' as const;

/** What a password is shown as, in messages and in `config show`. */
export const MASK = '****';

const URL_TOKEN_RE = /([a-z][a-z0-9+.-]*:\/\/)([^\s"'`<>]*)/gi;
/**
 * A query parameter, in a query (from its `?`): its separator, its name as written (up to the first
 * `=`), its value (to the next `&`: a later `?` is a character of the value, as the pg driver reads
 * `password=abc?def`).
 */
const QUERY_PARAM_RE = /([?&])([^&#=\s"'`<>]*)=([^&#\s"'`<>]*)/g;
/** Parameters whose value is a password: the pg driver takes `password` over the user info's. */
const PASSWORD_PARAMS: ReadonlySet<string> = new Set(['password', 'sslpassword']);

/**
 * Whether a query parameter's name, as written, is a password's. Compared decoded, as a URL parser
 * (and so the pg driver) reads it: `pass%77ord` is `password`. Case-insensitive to err on the side
 * of masking (pg itself only reads the lower-case names).
 */
function isPasswordParam(written: string): boolean {
  const name = new URLSearchParams(`${written}=`).keys().next().value ?? '';
  return PASSWORD_PARAMS.has(name.toLowerCase());
}

/** Masks the password parameters of the query of `rest` (a URL after its scheme): from its first `?`. */
function maskPasswordParams(rest: string): string {
  const q = rest.search(/[?#]/);
  if (q === -1 || rest[q] !== '?') return rest;
  const query = rest
    .slice(q)
    .replace(QUERY_PARAM_RE, (all, sep: string, name: string) => (isPasswordParam(name) ? `${sep}${name}=${MASK}` : all));
  return rest.slice(0, q) + query;
}

/**
 * Masks the password of a URL: `postgres://user:secret@host/db?sslpassword=x` becomes
 * `postgres://user:****@host/db?sslpassword=****`, a parameter named in percent-encoding
 * (`pass%77ord=x`) too. Exact for a URL that parses (the user info ends at the last `@` before the
 * first `/`, `?` or `#`).
 */
export function maskUrlPassword(url: string): string {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)(.*)$/is.exec(url);
  if (m === null) return url;
  const [, scheme = '', rest = ''] = m;
  const end = rest.search(/[/?#]/);
  const authority = end === -1 ? rest : rest.slice(0, end);
  const at = authority.lastIndexOf('@');
  const colon = authority.slice(0, Math.max(at, 0)).indexOf(':');
  const masked = at === -1 || colon === -1 ? rest : `${rest.slice(0, colon + 1)}${MASK}${rest.slice(at)}`;
  return scheme + maskPasswordParams(masked);
}

/**
 * Masks anything that looks like a password inside URLs in free text. Errs on the side of masking:
 * the user info runs to the last `@` of the URL, so a password holding an unescaped `/` (which makes
 * the URL invalid) is masked too.
 */
export function redactSecrets(text: string): string {
  return text.replace(URL_TOKEN_RE, (_all, scheme: string, rest: string) => {
    const at = rest.lastIndexOf('@');
    const colon = rest.slice(0, Math.max(at, 0)).indexOf(':');
    const masked = at === -1 || colon === -1 ? rest : `${rest.slice(0, colon + 1)}${MASK}${rest.slice(at)}`;
    return scheme + maskPasswordParams(masked);
  });
}

export function formatIssue(issue: ConfigIssue): string {
  return `${issue.path}: ${issue.message}${issue.line === undefined ? '' : ` (line ${issue.line})`}`;
}

/** Every problem found in a configuration, collected rather than stopping at the first. */
export class ConfigError extends Error {
  readonly code = CONFIG_INVALID;
  readonly issues: readonly ConfigIssue[];
  /** The file name, or `built-in defaults`, the issues were found in. */
  readonly source: string;

  constructor(rawIssues: readonly ConfigIssue[], source = 'configuration') {
    // Messages never show a password, even when they quote a value given in the wrong place.
    const issues = rawIssues.map((i) => ({ ...i, message: redactSecrets(i.message) }));
    const n = issues.length;
    super(`invalid configuration (${source}), ${n} problem${n === 1 ? '' : 's'}:\n` + issues.map((i) => `  ${formatIssue(i)}`).join('\n'));
    this.name = 'ConfigError';
    this.issues = issues;
    this.source = source;
  }
}
