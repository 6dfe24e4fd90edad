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

export function formatIssue(issue: ConfigIssue): string {
  return `${issue.path}: ${issue.message}${issue.line === undefined ? '' : ` (line ${issue.line})`}`;
}

/** Every problem found in a configuration, collected rather than stopping at the first. */
export class ConfigError extends Error {
  readonly code = CONFIG_INVALID;
  readonly issues: readonly ConfigIssue[];
  /** The file name, or `built-in defaults`, the issues were found in. */
  readonly source: string;

  constructor(issues: readonly ConfigIssue[], source = 'configuration') {
    const n = issues.length;
    super(`invalid configuration (${source}), ${n} problem${n === 1 ? '' : 's'}:\n` + issues.map((i) => `  ${formatIssue(i)}`).join('\n'));
    this.name = 'ConfigError';
    this.issues = issues;
    this.source = source;
  }
}
