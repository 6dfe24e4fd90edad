// Every Kubernetes API call the operator makes, as RBAC policy rules: the least privilege it runs
// with. The operator test runs it under exactly these rules (a Role in its namespace, through a
// service-account token), so a call missing here fails there. The Helm chart's ClusterRole (all
// namespaces) or Roles (WATCH_NAMESPACES) must grant the same.
//
// Why each verb:
// - get: the reconciled DittoFS (fresh, not from the cache), Secrets it references or generated,
//   the existing StatefulSet (its volume claim size), the Lease; every child before it is applied
//   (whose it is: an object of that name that is someone else's is not touched).
// - list, watch: the informers (kube/informer.ts).
// - create + patch: server-side apply (PATCH application/apply-patch+yaml) creates a missing object,
//   which the apiserver authorizes as create; the once-generated Secrets are created with POST.
// - patch on stores/shares/users: their finalizers (merge patch with resourceVersion).
// - patch on */status: status through the status subresource (merge patch).
// - update on dittofses/finalizers: children carry blockOwnerDeletion owner references, which
//   clusters with the OwnerReferencesPermissionEnforcement admission plugin check.
// - leases get/create/update: leader election.
// - pods list/watch: ready pods and their addresses (pod address modes dns and ip only).
// - events create: an Event per status change of a DittoFS, Store, Share or User (kube/events.ts).

export interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}

export const OPERATOR_RBAC_RULES: readonly PolicyRule[] = Object.freeze([
  { apiGroups: ['dittofs.io'], resources: ['dittofses'], verbs: ['get', 'list', 'watch'] },
  { apiGroups: ['dittofs.io'], resources: ['stores', 'shares', 'users'], verbs: ['list', 'watch', 'patch'] },
  { apiGroups: ['dittofs.io'], resources: ['dittofses/status', 'stores/status', 'shares/status', 'users/status'], verbs: ['patch'] },
  { apiGroups: ['dittofs.io'], resources: ['dittofses/finalizers'], verbs: ['update'] },
  { apiGroups: ['apps'], resources: ['statefulsets'], verbs: ['get', 'list', 'watch', 'create', 'patch'] },
  { apiGroups: [''], resources: ['services'], verbs: ['get', 'list', 'watch', 'create', 'patch'] },
  { apiGroups: [''], resources: ['secrets'], verbs: ['get', 'list', 'watch', 'create', 'patch'] },
  { apiGroups: [''], resources: ['pods'], verbs: ['list', 'watch'] },
  { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['get', 'create', 'update'] },
  { apiGroups: ['events.k8s.io'], resources: ['events'], verbs: ['create'] },
]);
