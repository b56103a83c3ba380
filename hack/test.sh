#!/usr/bin/env bash
# `make test`: builds whatever is missing, starts a throwaway control plane of its own (apart from
# the one `make cluster-up` starts, so a developer's cluster survives), runs lint and every test,
# then the pod-level tests on a second throwaway cluster that has a real node, scans every log for
# secrets, and stops both clusters whatever happens.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# TEST_CLUSTER_DIR and TEST_NODE_CLUSTER_DIR move the two clusters elsewhere, for a second run
# beside this one on the same machine.
export CLUSTER_DIR="${TEST_CLUSTER_DIR:-$repo/.cluster/test}"
# The cluster with a node (hack/node.sh), for the tests in tests/node.
node_cluster="${TEST_NODE_CLUSTER_DIR:-$repo/.cluster/test-node}"
node_builds=""
trap '[[ -z "$node_builds" ]] || kill -- -"$node_builds" 2>/dev/null; hack/cluster.sh down; CLUSTER_DIR="$node_cluster" hack/cluster.sh down' EXIT

target="${CARGO_TARGET_DIR:-$repo/target}"
started=$(date +%s)
step() { echo "== $* ($(( $(date +%s) - started )) s)" >&2; }

step "lint"
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings

# The image, built by the Dockerfile from local stand-ins of its base images (no registry is
# reachable), with the image-test profile: the release build's code, unoptimised, in half the
# time (Cargo.toml). tests/image.rs and tests/node then run it.
step "lint the Dockerfile, and build the image"
"$(hack/hadolint.sh)" Dockerfile
IMAGE_BASES=stand-in IMAGE_PROFILE=image-test hack/image.sh >/dev/null

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

# The node's binaries and Traefik's image build in the background, at the lowest CPU priority,
# while the tests below run: those spend much of their time waiting on the API server and the
# operators, and the builds take the idle cycles. A cold run saves minutes; a warm one finds
# everything built at once. The outage tests and the flood wait for them, below.
node_builds_log="$target/node-builds.log"
mkdir -p "$target"
# A process group of its own (setsid), so that the exit trap stops every build in it.
setsid nice -n 19 bash -c 'hack/build-node.sh && hack/build-traefik.sh --oci-archive' >"$node_builds_log" 2>&1 &
node_builds=$!

# Tests record the secrets they see here, and the operators they start log here.
rm -rf "$target/tmp/secrets" "$target/tmp/operator-logs"
output="$target/test-output.log"

# no_crd:: needs a control plane that has never had the CRD, so it goes first.
step "run the test that needs a control plane without the CRD"
cargo test --locked --test cluster -- --include-ignored no_crd:: 2>&1 | tee "$output"

# pods:: and readme_helm:: (tests/node) need the cluster with a node, below.
step "run every test except the API server outage, the flood and the node's"
cargo test --locked --workspace -- --include-ignored --skip no_crd:: --skip outage:: --skip hardening::forged_state_flood --skip pods:: --skip readme_helm:: 2>&1 | tee -a "$output"

step "wait for the node's and Traefik's builds"
if ! wait "$node_builds"; then
  node_builds=""
  tail -n 40 "$node_builds_log" >&2
  echo "error: building the node or Traefik failed (the whole log: $node_builds_log)" >&2
  exit 1
fi
node_builds=""

# The outage tests stop and start the API server, so nothing else may run beside them; the flood
# measures latency, which other tests on the same two cores would distort.
step "run the API server outage tests and the forged-state flood, one at a time"
cargo test --locked --test cluster -- outage:: hardening::forged_state_flood --include-ignored --test-threads=1 2>&1 | tee -a "$output"

# The first cluster goes first: two control planes and a node at once would only compete for
# the CPU. Its logs and audit log stay for the scan.
step "start a cluster with a node"
hack/cluster.sh down
(
  export CLUSTER_DIR="$node_cluster" CLUSTER_NODE=1
  hack/cluster.sh down >/dev/null 2>&1 || true
  hack/cluster.sh up
)

# readme_helm:: runs the README's Helm section as printed: its helm install creates the CRD and
# its removal deletes every grant and the CRD, so it goes first, alone, on the fresh node.
step "run the README's Helm section on the node"
CLUSTER_DIR="$node_cluster" KUBECONFIG="$node_cluster/kubeconfig" \
  cargo test --locked --test node -- --include-ignored readme_helm:: 2>&1 | tee -a "$output"

step "run the pod-level tests on the node"
CLUSTER_DIR="$node_cluster" KUBECONFIG="$node_cluster/kubeconfig" \
  cargo test --locked --test node -- --include-ignored --skip readme_helm:: 2>&1 | tee -a "$output"

step "stop the cluster with its node, and check that nothing of the node is left"
CLUSTER_DIR="$node_cluster" hack/cluster.sh down
CLUSTER_DIR="$node_cluster" hack/node.sh leftovers

step "scan every log for secrets"
python3 hack/scan-logs.py
CLUSTER_DIR="$node_cluster" python3 hack/scan-logs.py

step "done"
