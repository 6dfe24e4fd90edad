//go:build tools

// Package tools names the command ../build.sh builds, so that `go mod tidy` keeps it in go.mod
// and go.sum. It is never compiled (the tools build tag).
package tools

import _ "helm.sh/helm/v3/cmd/helm"
