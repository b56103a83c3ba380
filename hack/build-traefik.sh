#!/usr/bin/env bash
# Builds Traefik, the Ingress controller in front of the chart in the node tests, from its Go
# module at the version pinned in hack/versions.env, into a cache outside the repository, and
# prints the binary's path on the last line of stdout. A second run finds it and returns at once.
# With --oci-archive, also puts it in an image (on the runtime stand-in of hack/image-bases.sh)
# and prints that image's OCI archive instead, for `hack/node.sh load-image`; the image is
# localhost/slack-oauth-operator-node/traefik:<version>.
#
# Why this version line: from v3.7 Traefik's go.mod replaces a module of its own with a local
# directory (github.com/traefik/traefik/dynamic/ext => ./pkg/config/dynamic/ext) that is not in
# the published module and not on the module proxy, so v3.7 cannot be built from the proxy alone.
# v3.6 has only replacements by published modules, which the wrapper module below repeats (a
# dependency's replace directives do not apply to the module that requires it). Its web UI is not
# in the module either (webui/static is built by npm); the tests do not use the dashboard.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${SLACK_OAUTH_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slack-oauth-operator}"
out="$cache_root/traefik-$TRAEFIK_VERSION"
binary="$out/bin/traefik"

archive="$out/traefik.oci.tar"
image="localhost/slack-oauth-operator-node/traefik:$TRAEFIK_VERSION"

# Prints what was asked for once the binary exists.
finish() {
  if [[ "${1:-}" != --oci-archive ]]; then
    echo "$binary"
    return 0
  fi
  if [[ ! -f "$archive" ]]; then
    local runtime context
    runtime="$("$here/image-bases.sh" | sed -n 's/^RUNTIME_IMAGE=//p')"
    context="$(mktemp -d)"
    cp "$binary" "$context/traefik"
    printf 'FROM %s\nCOPY traefik /usr/local/bin/traefik\nUSER 65532:65532\nENTRYPOINT ["/usr/local/bin/traefik"]\n' "$runtime" >"$context/Containerfile"
    "$here/podman.sh" build --quiet --pull=never --file "$context/Containerfile" --tag "$image" "$context" >/dev/null
    "$here/podman.sh" save --quiet --format oci-archive --output "$archive.tmp" "$image"
    mv "$archive.tmp" "$archive"
    rm -rf "$context"
  fi
  echo "$archive"
}

if [[ -x "$binary" ]]; then
  finish "$@"
  exit 0
fi
mkdir -p "$out/bin" "$out/src"
exec 9>"$out/.build.lock"
flock 9
if [[ -x "$binary" ]]; then
  finish "$@"
  exit 0
fi

command -v go >/dev/null || { echo "error: Go is required to build Traefik (see README prerequisites)" >&2; exit 1; }
export GOPROXY="${GOPROXY:-https://proxy.golang.org}"
export GOSUMDB=off
export GOFLAGS="-mod=mod -buildvcs=false"
export GOTOOLCHAIN=local
export CGO_ENABLED=0

started=$SECONDS
cd "$out/src"
echo ">> fetching github.com/traefik/traefik/v3 $TRAEFIK_VERSION go.mod" >&2
traefik_mod="$(go mod download -json "github.com/traefik/traefik/v3@$TRAEFIK_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
if grep -qE '=> \./' "$traefik_mod"; then
  echo "error: Traefik $TRAEFIK_VERSION replaces a module with a local directory, which the module proxy does not carry; see the header of $0" >&2
  exit 1
fi
{
  echo "module local/traefik"
  echo
  echo "go $(awk '/^go /{print $2; exit}' "$traefik_mod")"
  echo
  echo "require github.com/traefik/traefik/v3 $TRAEFIK_VERSION"
  echo
  # Traefik's own replace and exclude directives, which apply only in its own module.
  awk '
    /^replace \($/ { block = "replace"; print; next }
    /^exclude \($/ { block = "exclude"; print; next }
    block != "" { print; if ($0 == ")") block = ""; next }
    /^(replace|exclude) / { print }
  ' "$traefik_mod"
} >go.mod
cat >tools.go <<'GO'
//go:build tools

package tools

import _ "github.com/traefik/traefik/v3/cmd/traefik"
GO
echo ">> resolving modules (traefik $TRAEFIK_VERSION)" >&2
go mod tidy >&2
echo ">> building traefik $TRAEFIK_VERSION" >&2
go build -trimpath -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION" \
  -o "$binary.tmp" github.com/traefik/traefik/v3/cmd/traefik >&2
mv "$binary.tmp" "$binary"
echo ">> traefik built in $((SECONDS - started)) s" >&2
finish "$@"
