# DittoFS front door. `make run` and `make test` work on a fresh Debian machine: they install what
# they need (npm packages, Debian packages through hack/) and need no other step.
SHELL := /bin/bash
.DEFAULT_GOAL := help
# Test files run this many at a time (most of a test's time is waiting on servers, clients, VMs).
TEST_JOBS ?= 3
NODE_TEST := node --import tsx --test --test-concurrency=$(TEST_JOBS) --test-reporter=spec
UNIT_TESTS = $(shell find server/src operator/src -name '*.test.ts' 2>/dev/null | sort)
E2E_TESTS = $(shell find test/e2e -name '*.test.ts' 2>/dev/null | sort)
FAULT_TESTS = $(shell find test/fault -name '*.test.ts' 2>/dev/null | sort)
K8S_TESTS = $(shell find test/k8s -name '*.test.ts' 2>/dev/null | sort)

.PHONY: help deps deps-test build run test test-unit test-e2e test-fault test-k8s k8s lint format bench clean typecheck

help: ## Show the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

node_modules/.package-lock.json: package.json server/package.json operator/package.json package-lock.json
	hack/install-node-deps.sh

deps: node_modules/.package-lock.json ## Install npm packages (from the lockfile)

deps-test: deps ## Install npm and Debian packages the tests need
	hack/install-deps.sh test

# Incremental: a package is compiled only when one of its sources (or a directory: a file added or
# removed) is newer than its stamp, and tsc itself reuses dist/.tsbuildinfo for what did not change.
SERVER_SRC = $(shell find server/src -type d -o -name '*.ts' ! -name '*.test.ts' 2>/dev/null) server/package.json server/tsconfig.json server/tsconfig.build.json tsconfig.base.json
OPERATOR_SRC = $(shell find operator/src -type d -o -name '*.ts' ! -name '*.test.ts' 2>/dev/null) operator/package.json operator/tsconfig.json operator/tsconfig.build.json tsconfig.base.json

server/dist/.build-stamp: node_modules/.package-lock.json $(SERVER_SRC)
	@echo "make: compiling the server (server/src -> server/dist)..."
	@t=$$(date +%s); npm run build --silent -w server && touch $@ && echo "make: server compiled in $$(( $$(date +%s) - t )) s"

operator/dist/.build-stamp: node_modules/.package-lock.json $(OPERATOR_SRC)
	@echo "make: compiling the operator (operator/src -> operator/dist)..."
	@t=$$(date +%s); npm run build --silent -w operator && touch $@ && echo "make: operator compiled in $$(( $$(date +%s) - t )) s"

build: deps server/dist/.build-stamp operator/dist/.build-stamp ## Compile the server and operator packages (only what changed)

typecheck: deps ## Type-check everything, tests included
	npx tsc -p tsconfig.json

run: build ## Build and start the server on the embedded default (NFS 12049, SMB 12445, API 8080, metrics 9090)
	@hack/install-deps.sh run
	@echo "make: starting dittofs (Ctrl-C stops it; \"start-up:\" lines show each phase, the first start takes a minute or more)"
	node server/dist/cli/dittofs.js start $(if $(CONFIG),--config $(CONFIG),)

test: deps-test build typecheck ## Run every test: unit, end-to-end with real clients, fault injection, Kubernetes
	DITTOFS_TEST_JOBS=$(TEST_JOBS) LOCAL_TESTS='$(UNIT_TESTS) $(E2E_TESTS) $(FAULT_TESTS)' K8S_TESTS='$(K8S_TESTS)' hack/test.sh

test-unit: deps build ## Unit tests only
	$(NODE_TEST) $(UNIT_TESTS)

test-e2e: deps-test build ## End-to-end tests with real NFS clients (libnfs, Linux kernel in QEMU)
	$(NODE_TEST) $(E2E_TESTS)

test-fault: deps-test build ## Fault injection: SIGKILL of the server under writes, PostgreSQL restarts
	$(NODE_TEST) $(FAULT_TESTS)

k8s: ## Build kube-apiserver, controller-manager, kubectl, etcd, helm from pinned Go modules (cached in ~/.cache/dittofs/k8s)
	hack/k8s/build.sh

test-k8s: deps-test build k8s ## Tests against a real kube-apiserver + etcd + controller-manager, with kubectl and helm
	$(NODE_TEST) $(K8S_TESTS)

lint: deps ## ESLint (type-checked rules) and Prettier
	npx eslint .
	npx prettier --check .

format: deps ## Rewrite files with Prettier
	npx prettier --write .

bench: deps build ## Benchmarks against nfs-ganesha in the same run (not a test)
	hack/install-deps.sh test
	hack/install-deps.sh bench
	npx tsx test/bench/run.ts $(BENCH_ARGS)
	npx tsx test/bench/replicas.ts $(BENCH_REPLICAS_ARGS)
	npx tsx test/bench/untar-replay.ts $(BENCH_UNTAR_ARGS)

clean: ## Remove build output
	rm -rf server/dist operator/dist
