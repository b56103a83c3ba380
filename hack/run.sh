#!/usr/bin/env bash
# `make run`: runs the operator in the foreground against the current kube context when one
# answers, otherwise against the project's local control plane (started if needed). Installs or
# updates the CRD first.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

tools_bin="$(hack/tools.sh)"
kubectl="$(command -v kubectl || echo "$tools_bin/kubectl")"

if "$kubectl" config current-context >/dev/null 2>&1 \
  && "$kubectl" get --raw /readyz --request-timeout=5s >/dev/null 2>&1; then
  echo "run: using kube context $("$kubectl" config current-context)" >&2
else
  echo "run: no reachable kube context; using the local control plane" >&2
  hack/cluster.sh up
  eval "$(hack/cluster.sh env)"
fi

echo "run: installing the CRD" >&2
"$kubectl" apply --server-side --force-conflicts --field-manager=slack-oauth-operator-make-run \
  -f crds/slackoauthgrants.slack-oauth-operator.io.yaml
"$kubectl" wait --for=condition=Established --timeout=60s crd/slackoauthgrants.slack-oauth-operator.io

# Locally the callback is reachable at http://127.0.0.1:8080 unless PUBLIC_URL (or --public-url)
# says otherwise; Slack needs that URL among the app's Redirect URLs.
args=()
[[ -n "${PUBLIC_URL:-}" || " $* " == *" --public-url "* ]] || args+=(--public-url http://127.0.0.1:8080)
exec cargo run --locked --bin slack-oauth-operator -- "${args[@]}" "$@"
