#!/usr/bin/env bash
# `make run`: runs the operator in the foreground against the current kube context when one
# answers, otherwise against the project's local control plane (started if needed). Installs or
# updates the CRD first. `hack/run.sh --print-command [flags]` prints the command line and stops.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# --print-command: only print the operator's command line that `make run` would run, and change
# nothing (for checking what the flags resolve to).
print_only=""
if [[ "${1:-}" == --print-command ]]; then
  print_only=1
  shift
fi

# Locally the callback is reachable on loopback at the port the operator listens on (CALLBACK_ADDR,
# or --callback-addr, default 0.0.0.0:8080), unless PUBLIC_URL (or --public-url) says otherwise;
# Slack needs that URL among the app's Redirect URLs.
callback_addr="${CALLBACK_ADDR:-0.0.0.0:8080}"
for ((i = 1; i <= $#; i++)); do
  case "${!i}" in
    --callback-addr=*) callback_addr="${!i#--callback-addr=}" ;;
    --callback-addr) next=$((i + 1)); callback_addr="${!next:-}" ;;
  esac
done
args=()
if [[ -z "${PUBLIC_URL:-}" && " $* " != *" --public-url "* && " $* " != *" --public-url="* ]]; then
  # A wildcard address is reached on 127.0.0.1; a specific one (127.0.0.2, [::1]) as it is.
  host="${callback_addr%:*}"
  [[ "$host" != 0.0.0.0 && "$host" != "[::]" ]] || host=127.0.0.1
  public_url="http://$host:${callback_addr##*:}"
  echo "run: public URL $public_url (register $public_url/oauth/callback in the Slack app)" >&2
  args+=(--public-url "$public_url")
fi
if [[ -n "$print_only" ]]; then
  echo "slack-oauth-operator ${args[*]} $*"
  exit 0
fi


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

exec cargo run --locked --bin slack-oauth-operator -- "${args[@]}" "$@"
