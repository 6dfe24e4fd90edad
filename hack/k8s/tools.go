//go:build tools

// Package tools names the commands build.sh builds, so that `go mod tidy` keeps them and their
// dependencies in go.mod and go.sum. It is never compiled (the tools build tag).
package tools

import (
	// etcd at the version k8s.io/kubernetes v1.36.3 itself requires (and runs in its integration
	// tests): go.etcd.io/etcd/server/v3 v3.6.8.
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
	// The node (hack/k8s/node.sh): kubelet, kube-proxy and the scheduler, from the same release.
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
