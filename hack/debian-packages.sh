#!/usr/bin/env bash
# Installs the Debian packages named on the command line when any of them is missing, and prints
# the installed version of each. The image build (podman, mmdebstrap) and the node (runc, CNI
# plugins, iptables) take these from Debian because Debian's apt is one of the few places our
# machines can download from.
#
# Versions: Debian stable (bookworm) changes its packages only for security fixes, so a package
# name is pinned here, not an exact version: an exact pin would break every machine the day a fix
# lands. The versions a run used are printed, and `hack/versions.env` records the ones checked.
set -euo pipefail

(($# > 0)) || { echo "usage: $0 package..." >&2; exit 2; }

installed() { dpkg-query -W -f '${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed; }

missing=()
for package in "$@"; do
  installed "$package" || missing+=("$package")
done

if ((${#missing[@]} > 0)); then
  command -v apt-get >/dev/null || { echo "debian-packages: apt-get not found; install ${missing[*]} by hand" >&2; exit 1; }
  sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo"
  # Parallel callers (the image test and the node start, say) would otherwise fight over dpkg's
  # lock; the second waits here, then finds the packages installed.
  lock="${XDG_RUNTIME_DIR:-/tmp}/slack-oauth-operator-apt.lock"
  exec 9>"$lock"
  flock -w 600 9 || { echo "debian-packages: timed out waiting for $lock" >&2; exit 1; }
  missing=()
  for package in "$@"; do
    installed "$package" || missing+=("$package")
  done
  if ((${#missing[@]} > 0)); then
    echo "debian-packages: installing ${missing[*]}" >&2
    # The lists may be stale or absent on a fresh machine; a failed install retries after an
    # update rather than updating on every call.
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
      $sudo apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    fi
  fi
  exec 9>&-
fi

for package in "$@"; do
  echo "$package $(dpkg-query -W -f '${Version}' "$package")"
done
