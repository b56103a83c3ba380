#!/usr/bin/env bash
# `make image`: builds the operator image from the project's Dockerfile with podman (installed
# from Debian's packages when missing) and writes it as an OCI archive. Prints the archive's path
# on the last line of stdout.
#
# Settings (environment or `make image VAR=...`):
#   IMAGE_PROFILE  the cargo profile (default release; the tests use image-test, the same code
#                  unoptimised, which builds in half the time)
#   IMAGE_BASES    upstream (default): the Dockerfile's own base images, pulled from their
#                  registries; stand-in: local stand-ins made from Debian packages
#                  (hack/image-bases.sh), for machines that reach no image registry, such as
#                  this project's and its CI
#   IMAGE          the image's name (default localhost/slack-oauth-operator)
#   IMAGE_TAG      its tag (default: the crate's version, which is also the chart's appVersion)
#   IMAGE_ARCHIVE  where the OCI archive goes (default target/image/slack-oauth-operator-<tag>.oci.tar)
#   IMAGE_BUILD_CA_FILE  the CA bundle the build stage trusts for crates.io (default: this
#                  machine's, $SSL_CERT_FILE or /etc/ssl/certs/ca-certificates.crt)
#
# The image also stays in the project's podman store (hack/podman.sh), so a later build reuses
# its layers: the dependency layer survives every change under src/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"

bases="${IMAGE_BASES:-upstream}"
image="${IMAGE:-localhost/slack-oauth-operator}"
version="$(awk -F'"' '/^version = /{print $2; exit}' Cargo.toml)"
tag="${IMAGE_TAG:-$version}"
target="${CARGO_TARGET_DIR:-$repo/target}"
archive="${IMAGE_ARCHIVE:-$target/image/slack-oauth-operator-$tag.oci.tar}"

log() { echo "image: $*" >&2; }

build_args=(--build-arg "CARGO_PROFILE=${IMAGE_PROFILE:-release}")
case "$bases" in
  upstream) ;;
  stand-in)
    while IFS= read -r line; do build_args+=(--build-arg "$line"); done < <("$here/image-bases.sh")
    # Never try a registry for the stand-ins' names (or anything else).
    build_args+=(--pull=never)
    ;;
  *) echo "image: IMAGE_BASES must be upstream or stand-in, not '$bases'" >&2; exit 2 ;;
esac

# The build stage downloads crates over https with the machine's own trust store, which may hold a
# CA that the base image lacks (a proxy that inspects TLS, as on our machines): it is mounted for
# the build's RUN steps only, never stored in a layer.
ca_file="${IMAGE_BUILD_CA_FILE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
[[ ! -f "$ca_file" ]] || build_args+=(--volume "$(realpath "$ca_file"):/etc/ssl/certs/ca-certificates.crt:ro")

started="$(date +%s%3N)"
log "building $image:$tag ($bases base images)"
# --network host: the build stage downloads crates from crates.io, as `cargo build` does on the
# host. Explicit, low ulimits: podman's defaults ask for more than root may set on this machine
# kind (no CAP_SYS_RESOURCE), and lowering a limit is always allowed.
"$here/podman.sh" build \
  --file Dockerfile \
  --tag "$image:$tag" \
  --network host \
  --ulimit nofile=1024:1024 \
  --ulimit nproc=1024:1024 \
  --layers \
  "${build_args[@]}" \
  . >&2

mkdir -p "$(dirname "$archive")"
rm -f "$archive.tmp"
"$here/podman.sh" save --quiet --format oci-archive --output "$archive.tmp" "$image:$tag"
mv "$archive.tmp" "$archive"

size="$("$here/podman.sh" image inspect --format '{{.Size}}' "$image:$tag")"
log "built $image:$tag in $(awk -v ms="$(($(date +%s%3N) - started))" 'BEGIN { printf "%.1f", ms / 1000 }') s: $(awk -v b="$size" 'BEGIN { printf "%.1f MB", b / 1e6 }') unpacked, archive $(du -h "$archive" | cut -f1)"
echo "$archive"
