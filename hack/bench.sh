#!/usr/bin/env bash
# `make bench`: the scale benchmark (benches/scale/, docs/benchmarks.md) against the control plane
# in KUBECONFIG, which must answer first: a cold bench build takes minutes, and finding out
# afterwards that nothing listens wastes them. The API request figures come from the control
# plane's audit log in CLUSTER_DIR; when CLUSTER_DIR is unset, the KUBECONFIG's own directory is
# used if it holds one (as `source .cluster/<name>/env` leaves it).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

how="start the local control plane with \`make cluster-up\`, then \`source .cluster/local/env\`"
[[ -n "${KUBECONFIG:-}" ]] || { echo "bench: error: KUBECONFIG is not set: $how" >&2; exit 1; }
kubectl="$(hack/tools.sh)/kubectl"
if ! "$kubectl" get --raw /readyz --request-timeout=10s >/dev/null 2>&1; then
  echo "bench: error: no control plane answers at KUBECONFIG=$KUBECONFIG: $how" >&2
  exit 1
fi
if [[ -z "${CLUSTER_DIR:-}" && -f "$(dirname "$KUBECONFIG")/audit.log" ]]; then
  CLUSTER_DIR="$(dirname "$KUBECONFIG")"
  export CLUSTER_DIR
fi
[[ -n "${CLUSTER_DIR:-}" ]] || echo "bench: warning: CLUSTER_DIR is not set: the API request figures will not be measured" >&2

exec cargo bench --locked --bench scale
