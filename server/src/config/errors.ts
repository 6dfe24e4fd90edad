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
const PASSWORD_PARAM_RE = /([?&](?:ssl)?password=)[^&#\s"'`<>]*/gi;

/**
 * Masks the password of a URL: `postgres://user:secret@host/db?sslpassword=x` becomes
 * `postgres://user:****@host/db?sslpassword=****`. Exact for a URL that parses (the user info ends
 * at the last `@` before the first `/`, `?` or `#`).
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
  return scheme + masked.replace(PASSWORD_PARAM_RE, `$1${MASK}`);
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
    return scheme + masked.replace(PASSWORD_PARAM_RE, `$1${MASK}`);
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
