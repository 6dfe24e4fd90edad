// The DittoFS operator. It reconciles DittoFS, Store, Share and User custom resources into
// StatefulSets, Services and Secrets and pushes desired state to the server pods.
// This package is a skeleton until the operator issue is taken up.
export const OPERATOR_GROUP = 'dittofs.io' as const;
export const OPERATOR_VERSION = 'v1alpha1' as const;
