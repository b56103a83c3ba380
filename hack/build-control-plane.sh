#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and etcd from their Go modules, at the versions
# pinned in hack/versions.env, into a cache outside the repository. A second run finds the
# binaries and returns at once.
#
# Why from source: there is no container engine and no download site for release binaries on our
# machines, only the Go module proxy. k8s.io/kubernetes points its staging modules at ./staging
# with replace directives, so a wrapper module replaces each of them with the published
# k8s.io/<module> v0.<minor>.<patch> instead (the same trick envtest users rely on).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${SLACK_OAUTH_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slack-oauth-operator}"
out="$cache_root/k8s-$K8S_VERSION"
bin="$out/bin"

if [[ -x "$bin/kube-apiserver" && -x "$bin/kube-controller-manager" && -x "$bin/etcd" ]]; then
  echo "$bin"
  exit 0
fi

# Two first-time callers (for example parallel `cluster.sh up` in separate state directories) must
# not build into the same directory at once: the second waits, then finds the binaries.
mkdir -p "$out"
exec 9>"$out/.build.lock"
flock 9
if [[ -x "$bin/kube-apiserver" && -x "$bin/kube-controller-manager" && -x "$bin/etcd" ]]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "error: Go is required to build the local control plane (see README prerequisites)" >&2; exit 1; }

src="$out/src"
mkdir -p "$src" "$bin"
cd "$src"

# Only the module proxy is reachable: no checksum database and no VCS fallback. The versions are
# pinned above instead.
export GOPROXY="${GOPROXY:-https://proxy.golang.org}"
export GOSUMDB=off
export GOFLAGS="-mod=mod -buildvcs=false"
export GOTOOLCHAIN=local
export CGO_ENABLED=0

minor_patch="${K8S_VERSION#1.}"
staging_version="v0.$minor_patch"

echo ">> fetching k8s.io/kubernetes v$K8S_VERSION go.mod" >&2
k8s_mod="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"

{
  echo "module local/control-plane"
  echo
  echo "go $(awk '/^go /{print $2; exit}' "$k8s_mod")"
  echo
  echo "require k8s.io/kubernetes v$K8S_VERSION"
  echo
  echo "replace ("
  awk '/=> \.\/staging\/src\//{print $1}' "$k8s_mod" | while read -r m; do
    echo "	$m => $m $staging_version"
  done
  echo ")"
} > go.mod

# etcd: the version Kubernetes itself is tested against, taken from its go.mod.
etcd_version="$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2; exit}' "$k8s_mod")"
cat > tools.go <<GO
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO

echo ">> resolving modules (kubernetes v$K8S_VERSION, etcd $etcd_version)" >&2
go get "go.etcd.io/etcd/server/v3@$etcd_version" >&2
go mod tidy >&2

ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor_patch%%.*}"
for cmd in kube-apiserver kube-controller-manager; do
  echo ">> building $cmd" >&2
  go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd" >&2
  mv "$bin/$cmd.tmp" "$bin/$cmd"
done
echo ">> building etcd $etcd_version" >&2
go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3 >&2
mv "$bin/etcd.tmp" "$bin/etcd"

echo "$bin"
