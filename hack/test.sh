#!/usr/bin/env bash
# `make test`: builds whatever is missing, starts a throwaway control plane of its own (apart from
# the one `make cluster-up` starts, so a developer's cluster survives), runs lint and every test,
# scans every log for secrets, and stops the control plane whatever happens.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

export CLUSTER_DIR="$repo/.cluster/test"
trap 'hack/cluster.sh down' EXIT

target="${CARGO_TARGET_DIR:-$repo/target}"
started=$(date +%s)
step() { echo "== $* ($(( $(date +%s) - started )) s)" >&2; }

step "lint"
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings

step "lint the Dockerfile, and build the release binary as it does"
"$(hack/hadolint.sh)" Dockerfile
make --no-print-directory build
"$target/release/slack-oauth-operator" --version

step "build the tests"
cargo test --locked --workspace --no-run

step "install kubectl, helm, Chromium"
tools_bin="$(hack/tools.sh)"
export KUBECTL="$tools_bin/kubectl" HELM="$tools_bin/helm"
CHROMEDRIVER="$(hack/browser.sh)"
export CHROMEDRIVER

step "start the control plane"
hack/cluster.sh down >/dev/null 2>&1 || true
hack/cluster.sh up
# shellcheck disable=SC1091
source "$CLUSTER_DIR/env"

# Tests record the secrets they see here, and the operators they start log here.
rm -rf "$target/tmp/secrets" "$target/tmp/operator-logs"
output="$target/test-output.log"

step "run every test except the API server outage and the flood"
cargo test --locked --workspace -- --include-ignored --skip outage:: --skip hardening::forged_state_flood 2>&1 | tee "$output"

# The outage tests stop and start the API server, so nothing else may run beside them; the flood
# measures latency, which other tests on the same two cores would distort.
step "run the API server outage tests and the forged-state flood, one at a time"
cargo test --locked --test cluster -- outage:: hardening::forged_state_flood --include-ignored --test-threads=1 2>&1 | tee -a "$output"

step "scan every log for secrets"
python3 hack/scan-logs.py

step "done"
