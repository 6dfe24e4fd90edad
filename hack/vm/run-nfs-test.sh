#!/usr/bin/env bash
# The NFS form of hack/vm/run-vm-test.sh (kept for its callers): the same options, --fs nfs.
exec "$(dirname "${BASH_SOURCE[0]}")/run-vm-test.sh" --fs nfs "$@"
