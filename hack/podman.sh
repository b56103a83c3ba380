#!/usr/bin/env bash
# podman with the project's settings: its own image store in the cache (so the project never
# touches the machine's default store, and layers survive between runs), runc (crun fails on this
# machine kind: "cgroups in hybrid mode not supported"), cgroupfs and file events (no systemd).
# Installs podman and runc from Debian's packages when missing.
#
# Usage: hack/podman.sh <podman arguments>
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${SLACK_OAUTH_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slack-oauth-operator}"
store="$cache_root/containers"

if ! command -v podman >/dev/null || [[ ! -x /usr/sbin/runc ]]; then
  "$here/debian-packages.sh" podman runc >/dev/null
fi

mkdir -p "$store/storage" "$store/run" "$store/tmp"
exec podman \
  --root "$store/storage" \
  --runroot "$store/run" \
  --tmpdir "$store/tmp" \
  --storage-driver overlay \
  --runtime /usr/sbin/runc \
  --cgroup-manager cgroupfs \
  --events-backend file \
  "$@"
