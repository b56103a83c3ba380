#!/usr/bin/env bash
# Builds what a node of the local cluster runs, at the versions pinned in hack/versions.env, into
# a cache outside the repository, and prints that bin directory on the last line of stdout. A
# second run finds the binaries and returns at once.
#
#   kubelet, kube-scheduler, kube-proxy   from the Kubernetes Go modules, through a wrapper module
#                                         like hack/build-control-plane.sh's
#   containerd, containerd-shim-runc-v2,  containerd v2 from its Go module (CGO off, so without
#   ctr                                   the btrfs, devmapper and zfs snapshotters)
#   pause                                 the pod sandbox's process: waits for a signal and reaps
#                                         zombies, as Kubernetes' own pause does; no registry can
#                                         serve registry.k8s.io/pause here, so the node makes its
#                                         own image of it (hack/node.sh)
#
# runc, the CNI plugins and iptables come from Debian's packages (hack/node.sh installs them).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${SLACK_OAUTH_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slack-oauth-operator}"
out="$cache_root/node-k8s-$K8S_VERSION-containerd-$CONTAINERD_VERSION"
bin="$out/bin"
binaries=(kubelet kube-scheduler kube-proxy containerd containerd-shim-runc-v2 ctr pause)

# --print-bin-dir: only say where the binaries go, build nothing (for teardown).
if [[ "${1:-}" == --print-bin-dir ]]; then
  echo "$bin"
  exit 0
fi

all_built() {
  local name
  for name in "${binaries[@]}"; do [[ -x "$bin/$name" ]] || return 1; done
}

if all_built; then
  echo "$bin"
  exit 0
fi

mkdir -p "$out"
exec 9>"$out/.build.lock"
flock 9
if all_built; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "error: Go is required to build the local node (see README prerequisites)" >&2; exit 1; }

# As for the control plane: only the module proxy is reachable, so no checksum database and no
# VCS fallback; the versions are pinned instead.
export GOPROXY="${GOPROXY:-https://proxy.golang.org}"
export GOSUMDB=off
export GOFLAGS="-mod=mod -buildvcs=false"
export GOTOOLCHAIN=local
export CGO_ENABLED=0

started=$SECONDS
mkdir -p "$bin"

# Kubernetes: a wrapper module of its own (not the control plane's, whose build may run at the same
# time), with the same staging-module replacements.
k8s_src="$out/src/kubernetes"
mkdir -p "$k8s_src"
(
  cd "$k8s_src"
  minor_patch="${K8S_VERSION#1.}"
  staging_version="v0.$minor_patch"
  echo ">> fetching k8s.io/kubernetes v$K8S_VERSION go.mod" >&2
  k8s_mod="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    echo "module local/node"
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
  } >go.mod
  cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
  echo ">> resolving modules (kubernetes v$K8S_VERSION)" >&2
  go mod tidy >&2
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor_patch%%.*}"
  for cmd in kubelet kube-scheduler kube-proxy; do
    echo ">> building $cmd" >&2
    go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd" >&2
    mv "$bin/$cmd.tmp" "$bin/$cmd"
  done
)

# containerd: its go.mod has no replace directives, so a plain module build at the pinned version.
ctr_src="$out/src/containerd"
mkdir -p "$ctr_src"
(
  cd "$ctr_src"
  cat >go.mod <<EOF
module local/containerd

go 1.26

require github.com/containerd/containerd/v2 $CONTAINERD_VERSION
EOF
  cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
GO
  echo ">> resolving modules (containerd $CONTAINERD_VERSION)" >&2
  go mod tidy >&2
  tags="no_btrfs no_devmapper no_zfs"
  ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
  for cmd in containerd containerd-shim-runc-v2 ctr; do
    echo ">> building $cmd $CONTAINERD_VERSION" >&2
    go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$bin/$cmd.tmp" "github.com/containerd/containerd/v2/cmd/$cmd" >&2
    mv "$bin/$cmd.tmp" "$bin/$cmd"
  done
)

# pause: PID 1 of every pod sandbox. It holds the pod's namespaces, reaps the zombies that end up
# with it, and exits on SIGINT or SIGTERM.
pause_src="$out/src/pause"
mkdir -p "$pause_src"
(
  cd "$pause_src"
  printf 'module local/pause\n\ngo 1.25\n' >go.mod
  cat >main.go <<'GO'
// Command pause is the pod sandbox's process.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
GO
  echo ">> building pause" >&2
  go build -trimpath -ldflags "-s -w" -o "$bin/pause.tmp" . >&2
  mv "$bin/pause.tmp" "$bin/pause"
)

echo ">> node binaries built in $((SECONDS - started)) s" >&2
echo "$bin"
