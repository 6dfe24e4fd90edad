// Secret values never leave the operator in a message. Every value the operator decodes from a
// Secret (a Store's secretRefs, a User's password, the admin passwords, the PostgreSQL URL) is
// remembered here, and everything the operator writes where others can read it goes through
// redact() first: status subresources (controllers/dittofs/reconcile.ts writeStatus), Events
// (events.ts) and log lines (redactingLogger). So a message that quotes a value, such as a server's
// `got "..."` or an apiserver error, says `<value of Secret NAME key KEY>` instead, whichever
// resource the value was put in: a Store naming any Secret of its namespace cannot read it back
// through its own status.
//
// Also replaced: the value trimmed or without its final newline (as the resolvers pass it on), and
// its JSON-string, doubly escaped JSON-string, base64 and URL-encoded forms. A message cut short
// (ending in '…') loses a tail that begins a value. Not caught: a fragment of a value that a
// message quotes on its own (a URL's host name, say), and a value shorter than MIN_VALUE (no
// password the server takes is: a short one is a setting such as a region or a bucket, and hiding
// it would garble every text that holds the word). Only values are redacted, never the keys of an
// object, nor the fields that name a condition or a time (STRUCTURAL_FIELDS): a status stays one
// the apiserver accepts.
import type { LogFields, Logger } from '../log.js';

/** The placeholder for a value of Secret `name`, key `key`. */
export const redactedLabel = (name: string, key: string): string => `<value of Secret ${name} key ${key}>`;

/** A label already in a text stays as it is (redacting twice changes nothing). */
const LABEL_SOURCE = '<value of Secret [a-z0-9.-]{1,253} key [-._A-Za-z0-9]{1,253}>';

/** Shorter tails of a cut-off message are not a value worth hiding. */
const MIN_TAIL = 4;
/** Shorter values are not looked for (the server's shortest password is 8 characters). */
export const MIN_VALUE = 8;
/** Fields of a status whose values are names, enums or times: never redacted. */
const STRUCTURAL_FIELDS: ReadonlySet<string> = new Set(['type', 'status', 'reason', 'lastTransitionTime', 'phase']);
/** Distinct (namespace, Secret, key) remembered at most; the oldest are forgotten first. */
const CAP = 65_536;
const ELLIPSIS = '…';

export interface Redactor {
  redact(text: string): string;
  /** A copy of `value` with every string value in it redacted (not keys, nor STRUCTURAL_FIELDS). */
  redactDeep<T>(value: T): T;
}

interface Entry {
  namespace: string;
  label: string;
  forms: string[];
}

export class SecretValues implements Redactor {
  private readonly entries = new Map<string, Entry>();
  /** By namespace ('' for all): the pattern and the label of each form. */
  private compiled = new Map<string, { re: RegExp | undefined; labelOf: Map<string, string>; forms: string[] }>();

  /** Remembers the value of key `key` of Secret `namespace/name` (and forgets the one it had). */
  remember(namespace: string, name: string, key: string, value: string): void {
    const id = `${namespace}\u0000${name}\u0000${key}`;
    const forms = formsOf(value);
    const old = this.entries.get(id);
    this.entries.delete(id);
    this.entries.set(id, { namespace, label: redactedLabel(name, key), forms });
    while (this.entries.size > CAP) this.entries.delete(this.entries.keys().next().value!);
    if (old === undefined || old.forms.join('\u0000') !== forms.join('\u0000')) this.compiled = new Map();
  }

  /** The text with every remembered value replaced by its label. */
  redact(text: string): string {
    return this.redactIn('', text);
  }

  redactDeep<T>(value: T): T {
    return deep(value, (s) => this.redact(s));
  }

  /** A redactor for what objects of one namespace show: only that namespace's Secrets are looked for. */
  forNamespace(namespace: string): Redactor {
    const redact = (s: string): string => this.redactIn(namespace, s);
    return { redact, redactDeep: (v) => deep(v, redact) };
  }

  private redactIn(namespace: string, text: string): string {
    const c = this.patternFor(namespace);
    if (c.re === undefined || text === '') return text;
    let out = text.replace(c.re, (m) => c.labelOf.get(m) ?? m);
    if (out.endsWith(ELLIPSIS)) out = redactTail(out.slice(0, -ELLIPSIS.length), c.forms, c.labelOf) + ELLIPSIS;
    return out;
  }

  private patternFor(namespace: string) {
    let c = this.compiled.get(namespace);
    if (c !== undefined) return c;
    const labelOf = new Map<string, string>();
    for (const e of this.entries.values()) {
      if (namespace !== '' && e.namespace !== namespace) continue;
      for (const f of e.forms) labelOf.set(f, e.label);
    }
    // Longest first: a value's quoted form before the value, a value before its own prefix.
    const forms = [...labelOf.keys()].sort((a, b) => b.length - a.length);
    const re = forms.length === 0 ? undefined : new RegExp([LABEL_SOURCE, ...forms.map(escapeRegExp)].join('|'), 'g');
    c = { re, labelOf, forms };
    this.compiled.set(namespace, c);
    return c;
  }
}

/** A logger whose messages and fields go through `secrets` before they are written. */
export function redactingLogger(log: Logger, secrets: Redactor): Logger {
  if (REDACTED_BY.get(log) === secrets) return log;
  const fields = (f: LogFields | undefined): LogFields | undefined => (f === undefined ? undefined : secrets.redactDeep(f));
  const out: Logger = {
    get level() {
      return log.level;
    },
    trace: (m, f) => log.trace(secrets.redact(m), fields(f)),
    debug: (m, f) => log.debug(secrets.redact(m), fields(f)),
    info: (m, f) => log.info(secrets.redact(m), fields(f)),
    warn: (m, f) => log.warn(secrets.redact(m), fields(f)),
    error: (m, f) => log.error(secrets.redact(m), fields(f)),
    child: (f) => redactingLogger(log.child(secrets.redactDeep(f)), secrets),
  };
  REDACTED_BY.set(out, secrets);
  return out;
}

const REDACTED_BY = new WeakMap<Logger, Redactor>();

function formsOf(value: string): string[] {
  const bases = new Set([value, value.trim(), value.replace(/\r?\n$/, '')]);
  const forms = new Set<string>();
  for (const v of bases) {
    if (v.length < MIN_VALUE) continue;
    const json = JSON.stringify(v).slice(1, -1);
    forms.add(v);
    forms.add(json);
    forms.add(JSON.stringify(json).slice(1, -1));
    forms.add(Buffer.from(v, 'utf8').toString('base64'));
    forms.add(encodeURIComponent(v));
  }
  return [...forms];
}

function redactTail(text: string, forms: readonly string[], labelOf: ReadonlyMap<string, string>): string {
  let best = 0;
  let label = '';
  for (const f of forms) {
    for (let k = Math.min(f.length - 1, text.length); k >= MIN_TAIL && k > best; k--) {
      if (text.endsWith(f.slice(0, k))) {
        best = k;
        label = labelOf.get(f)!;
        break;
      }
    }
  }
  return best === 0 ? text : text.slice(0, text.length - best) + label;
}

function deep<T>(value: T, redact: (s: string) => string): T {
  if (typeof value === 'string') return redact(value) as T;
  if (Array.isArray(value)) return value.map((v: unknown) => deep(v, redact)) as T;
  if (value instanceof Error) return value;
  if (value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, STRUCTURAL_FIELDS.has(k) && typeof v === 'string' ? v : deep(v, redact)]),
    ) as T;
  }
  return value;
}

const escapeRegExp = (s: string): string => s.replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&');
