// Paths of the resources the operator reads and writes, and small helpers for core objects.
// Every resource and verb the operator uses goes through here (see operator/README.md, RBAC).
import { GROUP, KINDS, VERSION, type KindName, type KubeObject, type SecretKeyRef } from '../api/types.js';
import { resourcePath } from './client.js';

export const paths = {
  /** dittofs.io kinds; no namespace = all namespaces (for list and watch). */
  custom: (kind: KindName, namespace?: string, name?: string, subresource?: string): string =>
    resourcePath({ group: GROUP, version: VERSION, plural: KINDS[kind].plural, namespace, name, subresource }),
  statefulSets: (namespace?: string, name?: string): string =>
    resourcePath({ group: 'apps', version: 'v1', plural: 'statefulsets', namespace, name }),
  services: (namespace?: string, name?: string): string => resourcePath({ group: '', version: 'v1', plural: 'services', namespace, name }),
  secrets: (namespace?: string, name?: string): string => resourcePath({ group: '', version: 'v1', plural: 'secrets', namespace, name }),
  pods: (namespace?: string, name?: string): string => resourcePath({ group: '', version: 'v1', plural: 'pods', namespace, name }),
  leases: (namespace: string, name?: string): string =>
    resourcePath({ group: 'coordination.k8s.io', version: 'v1', plural: 'leases', namespace, name }),
};

export interface SecretObject extends KubeObject {
  type?: string;
  data?: Record<string, string>;
}

/** The decoded value of one key of a Secret; undefined when the key is absent. */
export function secretValue(secret: SecretObject, key: string): string | undefined {
  const v = secret.data?.[key];
  return v === undefined ? undefined : Buffer.from(v, 'base64').toString('utf8');
}

/** The outcome of resolving a Secret key reference, for conditions. */
export type SecretLookup = { ok: true; value: string } | { ok: false; reason: 'SecretNotFound' | 'SecretKeyNotFound'; message: string };

export function lookupSecret(secret: SecretObject | undefined, ref: SecretKeyRef, what: string): SecretLookup {
  if (secret === undefined)
    return { ok: false, reason: 'SecretNotFound', message: `${what}: Secret ${JSON.stringify(ref.name)} not found` };
  const value = secretValue(secret, ref.key);
  if (value === undefined)
    return {
      ok: false,
      reason: 'SecretKeyNotFound',
      message: `${what}: Secret ${JSON.stringify(ref.name)} has no key ${JSON.stringify(ref.key)}`,
    };
  return { ok: true, value };
}
