// A Store resource -> the store item of the server's desired state: its name inside DittoFS, its
// type, and its settings with the Secret references filled in. Pure: Secrets are looked up through
// the resolver the caller built from Secrets it read.
import type { Store, StoreKind } from '../../api/types.js';
import { STORE_CONFIG_KEYS, STORE_NAME_RE, STORE_STRING_BOUNDS, type DesiredStore } from '../../dittofs-api/types.js';
import type { Resolution, SecretResolver } from '../member.js';

/** Settings that may come from a Secret: the string-valued ones. */
const SECRET_CAPABLE = new Set(['url', 'path', 'schema', 'endpoint', 'region', 'bucket', 'prefix', 'access_key_id', 'secret_access_key']);

/** The store's name inside DittoFS: spec.storeName, else the resource's name. */
export function storeNameOf(store: Store): string {
  return store.spec.storeName ?? store.metadata.name;
}

export interface ResolvedStore {
  kind: StoreKind;
  item: DesiredStore;
}

export function resolveStore(store: Store, secret: SecretResolver): Resolution<ResolvedStore> {
  const { kind, type } = store.spec;
  const name = storeNameOf(store);
  const invalid = (message: string): Resolution<ResolvedStore> => ({ ok: false, reason: 'InvalidSpec', message });
  if (!STORE_NAME_RE.test(name)) {
    return invalid(
      `store name ${JSON.stringify(name)} is not valid in DittoFS (1 to 63 letters, digits, "-", "_" or ".", starting with a letter or digit): set spec.storeName`,
    );
  }
  const allowed = STORE_CONFIG_KEYS[kind]?.[type];
  if (allowed === undefined) return invalid(`type ${type} is not a ${kind} store type`);
  const config: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(store.spec.config ?? {})) {
    if (v === undefined || v === null) continue;
    if (!allowed.includes(k))
      return invalid(
        `config.${k} is not a setting of a ${type} ${kind} store${allowed.length > 0 ? ` (settings: ${allowed.join(', ')})` : ''}`,
      );
    config[k] = v;
  }
  for (const [k, ref] of Object.entries(store.spec.secretRefs ?? {})) {
    if (!allowed.includes(k)) return invalid(`secretRefs.${k} is not a setting of a ${type} ${kind} store`);
    if (!SECRET_CAPABLE.has(k)) return invalid(`secretRefs.${k}: only string settings can come from a Secret`);
    const r = secret(ref, `secretRefs.${k}`);
    if (!r.ok) return { ok: false, reason: r.reason, message: r.message };
    config[k] = r.value.trim();
  }
  // What the server's JSON schema would refuse without naming the store: refuse it here, by name.
  for (const [k, v] of Object.entries(config)) {
    const b = STORE_STRING_BOUNDS[k];
    if (b === undefined || typeof v !== 'string') continue;
    const where = store.spec.secretRefs?.[k] !== undefined ? `the Secret value for ${k}` : `config.${k}`;
    if (v.length < b.min) return invalid(`${where} must not be empty`);
    if (v.length > b.max) return invalid(`${where} is longer than ${b.max} characters`);
  }
  if (type === 's3') {
    if (config.bucket === undefined) return invalid('an s3 store needs config.bucket');
    if ((config.access_key_id === undefined) !== (config.secret_access_key === undefined)) {
      return invalid(
        'give both access_key_id and secret_access_key (config or secretRefs), or neither for the standard AWS credential chain',
      );
    }
  }
  if (type === 'postgres' && config.url === undefined) return invalid('a postgres store needs config.url or secretRefs.url');
  return { ok: true, value: { kind, item: { name, type, config } } };
}
