#!/usr/bin/env bash
# Local stand-ins for the Dockerfile's two upstream base images, made from Debian packages with
# mmdebstrap, because no image registry is reachable on our machines. Built once into the
# project's podman store (hack/podman.sh); a second run finds them and returns at once.
#
# Prints two lines, `BUILD_IMAGE=<name>` and `RUNTIME_IMAGE=<name>`, the Dockerfile's build
# arguments.
#
#   build   stands in for rust:<version>-bookworm: Debian bookworm with gcc, libc6-dev and make
#           (the linker, and the C compiler and make that `ring` and jemalloc need; the upstream
#           image has them all, its -slim variant has no make) and ca-certificates (cargo downloads crates
#           over https), plus the host's own Rust toolchain, copied from rustup (cargo, rustc and
#           their libraries; no docs). Debian's rustc (1.63) is far older than kube 5 needs
#           (1.89), and rustup's download site is not reachable, so the toolchain that builds the
#           crate on the host is the one that builds it in the image.
#   runtime stands in for gcr.io/distroless/cc-debian12:nonroot: only the files of base-files,
#           ca-certificates, libc6, libgcc-s1, netbase and tzdata (unpacked, no maintainer
#           scripts, so no dpkg, no shell), the CA bundle, and passwd/group entries for root and
#           nonroot (65532), as distroless has them.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
podman=("$here/podman.sh")

# Bumped whenever a recipe below changes, so that the next run rebuilds that stand-in.
build_recipe=2
runtime_recipe=2
suite="$STAND_IN_DEBIAN_SUITE"
mirrors=(
  "deb http://deb.debian.org/debian $suite main"
  "deb http://deb.debian.org/debian $suite-updates main"
  "deb http://deb.debian.org/debian-security $suite-security main"
)

sysroot="$(cd "$repo" && rustc --print sysroot)"
rust_version="$("$sysroot/bin/rustc" --version | awk '{print $2}')"
build_image="localhost/slack-oauth-operator-stand-in/rust:$rust_version-$suite-r$build_recipe"
runtime_image="localhost/slack-oauth-operator-stand-in/distroless-cc:$suite-nonroot-r$runtime_recipe"

exists() { "${podman[@]}" image exists "$1"; }

if exists "$build_image" && exists "$runtime_image"; then
  echo "BUILD_IMAGE=$build_image"
  echo "RUNTIME_IMAGE=$runtime_image"
  exit 0
fi

command -v mmdebstrap >/dev/null || "$here/debian-packages.sh" mmdebstrap >/dev/null
cache_root="${SLACK_OAUTH_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slack-oauth-operator}"
mkdir -p "$cache_root/containers"
# Two first-time callers (the image test and the node's start, say) build once.
exec 9>"$cache_root/containers/.stand-ins.lock"
flock 9
tmp="$(mktemp -d "$cache_root/containers/.stand-ins.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

log() { echo "image-bases: $*" >&2; }
now_s() { date +%s; }

if ! exists "$runtime_image"; then
  started="$(now_s)"
  log "building $runtime_image (mmdebstrap)"
  # The extract variant runs no hooks, so the tree is finished here, then imported.
  root="$tmp/runtime"
  mmdebstrap --quiet --variant=extract --format=directory \
    --include=base-files,ca-certificates,libc6,libgcc-s1,netbase,tzdata \
    "$suite" "$root" "${mirrors[@]}"
  cat "$root"/usr/share/ca-certificates/mozilla/*.crt >"$root/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
  mkdir -p "$root/home/nonroot" "$root/tmp"
  chown 65532:65532 "$root/home/nonroot"
  chmod 1777 "$root/tmp"
  rm -rf "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/info "$root"/usr/share/lintian \
    "$root"/var/cache/apt "$root"/var/lib/apt "$root"/var/log/*
  [[ -s "$root/etc/ssl/certs/ca-certificates.crt" ]] || { echo "image-bases: no CA bundle in the runtime stand-in" >&2; exit 1; }
  tar --numeric-owner -C "$root" -cf "$tmp/runtime.tar" .
  rm -rf "$root"
  "${podman[@]}" import --quiet \
    --change 'USER 65532:65532' \
    --change 'WORKDIR /home/nonroot' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    "$tmp/runtime.tar" "$runtime_image" >/dev/null
  log "built $runtime_image in $(($(now_s) - started)) s"
fi

if ! exists "$build_image"; then
  started="$(now_s)"
  log "building $build_image (mmdebstrap, and the Rust $rust_version toolchain from $sysroot)"
  mmdebstrap --quiet --variant=apt --format=tar \
    --include=ca-certificates,gcc,libc6-dev,make \
    --customize-hook="mkdir -p \"\$1/usr/local/rust/bin\" && cp -a '$sysroot/bin/cargo' '$sysroot/bin/rustc' \"\$1/usr/local/rust/bin/\" && cp -a '$sysroot/lib' \"\$1/usr/local/rust/\"" \
    --customize-hook='rm -rf "$1"/usr/share/doc "$1"/usr/share/man "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
    "$suite" "$tmp/build.tar" "${mirrors[@]}"
  "${podman[@]}" import --quiet \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV RUST_VERSION=$rust_version" \
    "$tmp/build.tar" "$build_image" >/dev/null
  log "built $build_image in $(($(now_s) - started)) s"
fi

echo "BUILD_IMAGE=$build_image"
echo "RUNTIME_IMAGE=$runtime_image"
