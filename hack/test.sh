#!/usr/bin/env bash
# `make test`: builds whatever is missing, starts a throwaway control plane of its own (apart from
# the one `make cluster-up` starts, so a developer's cluster survives), runs lint and every test,
# and stops the control plane whatever happens.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

export CLUSTER_DIR="$repo/.cluster/test"
trap 'hack/cluster.sh down' EXIT

started=$(date +%s)
step() { echo "== $* ($(( $(date +%s) - started )) s)" >&2; }

step "lint"
cargo fmt --all --check
cargo clippy --locked --all-targets -- -D warnings

step "build the tests"
cargo test --locked --no-run

step "install kubectl and helm"
tools_bin="$(hack/tools.sh)"
export KUBECTL="$tools_bin/kubectl" HELM="$tools_bin/helm"

step "start the control plane"
hack/cluster.sh down >/dev/null 2>&1 || true
hack/cluster.sh up
# shellcheck disable=SC1091
source "$CLUSTER_DIR/env"

step "run every test"
cargo test --locked -- --include-ignored

step "done"
