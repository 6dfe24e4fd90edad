// Whose is an object that has the name of a DittoFS child? The reconciler force-applies its
// children with the DittoFS as controlling owner, so the garbage collector deletes them with it:
// applied over an object that belongs to someone else (a Helm release's Service `web`, another
// DittoFS's headless Service, a Secret `db-admin`), it would overwrite that object and later delete
// it. So a child is applied only when it is absent, already this DittoFS's, or one this operator
// made for a DittoFS of this name that lost its owner reference (a DittoFS deleted with
// --cascade=orphan and made again, a Secret restored from a backup): the labels say so.
import { LABELS, MANAGED_BY, type DittoFS, type KubeObject } from '../../api/types.js';

export type ChildClaim =
  /** No such object: create it. */
  | 'absent'
  /** Controlled by this DittoFS (owner reference with controller: true and its uid). */
  | 'ours'
  /** No controller, and labelled as this operator's, for a DittoFS of this name: take it back. */
  | 'adoptable'
  /** Anything else: not touched. */
  | 'foreign';

export function childClaim(obj: KubeObject | undefined, dfs: DittoFS): ChildClaim {
  if (obj === undefined) return 'absent';
  const controller = obj.metadata.ownerReferences?.find((o) => o.controller === true);
  if (controller !== undefined) return controller.uid === dfs.metadata.uid ? 'ours' : 'foreign';
  const labels = obj.metadata.labels ?? {};
  return labels[LABELS.managedBy] === MANAGED_BY && labels[LABELS.instance] === dfs.metadata.name ? 'adoptable' : 'foreign';
}

/**
 * The claim on NAME-admin and NAME-jwt, which a user may make to provide the credential (README):
 * a Secret with no controller and without the operator's labels is the user's, used as it is
 * ('provided'), as every version of the operator has; only one another object controls is foreign.
 */
export function onceSecretClaim(obj: KubeObject | undefined, dfs: DittoFS): ChildClaim | 'provided' {
  const claim = childClaim(obj, dfs);
  if (claim !== 'foreign' || obj === undefined) return claim;
  return obj.metadata.ownerReferences?.some((o) => o.controller === true) === true ? 'foreign' : 'provided';
}

/** What a NameConflict condition says about one object in the way. */
export function conflictMessage(kind: string, obj: KubeObject): string {
  const controller = obj.metadata.ownerReferences?.find((o) => o.controller === true);
  const whose =
    controller !== undefined
      ? `controlled by ${controller.kind} ${controller.name}`
      : `not made by ${MANAGED_BY} for this DittoFS (no owner; labels ${LABELS.managedBy}=${MANAGED_BY} and ${LABELS.instance}=<DittoFS name> would let it be adopted)`;
  return `${kind} ${obj.metadata.name} already exists, ${whose}`;
}
