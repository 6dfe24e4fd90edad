// What Store, Share and User have in common: each names its DittoFS, is pushed to that DittoFS's
// pods as part of one desired state (controllers/state/), and carries a finalizer so that
// deleting it removes it from the servers first.
import type { SecretKeyRef, Share, Store, User } from '../api/types.js';
import type { SecretLookup } from '../kube/resources.js';

export type MemberKind = 'Store' | 'Share' | 'User';

export type Member = { kind: 'Store'; obj: Store } | { kind: 'Share'; obj: Share } | { kind: 'User'; obj: User };

/** `Store/name`: a member's key within one DittoFS's namespace. */
export const memberKey = (kind: MemberKind, name: string): string => `${kind}/${name}`;

export const keyOfMember = (m: Member): string => memberKey(m.kind, m.obj.metadata.name);

/** Why a member is not (or not yet) on the servers as specified. */
export interface Refusal {
  reason: string;
  message: string;
}

export type Resolution<T> = { ok: true; value: T } | ({ ok: false } & Refusal);

/** Resolves a Secret key reference (Secrets are read before the pure computation starts). */
export type SecretResolver = (ref: SecretKeyRef, what: string) => SecretLookup;

export const isDeleting = (o: { metadata: { deletionTimestamp?: string } }): boolean => o.metadata.deletionTimestamp !== undefined;

/** Older first, then by name: who keeps a name two objects claim. */
export function byAge<T extends { metadata: { creationTimestamp?: string; name: string } }>(a: T, b: T): number {
  const ta = a.metadata.creationTimestamp ?? '';
  const tb = b.metadata.creationTimestamp ?? '';
  if (ta !== tb) return ta < tb ? -1 : 1;
  return a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0;
}
