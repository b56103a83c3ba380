#!/usr/bin/env bash
# `make plugin-archive`: packs the kubectl plugin (kubectl-slack_oauth) the way krew installs
# plugins: a .tar.gz with the binary at its root, plus a krew plugin manifest beside it, for
# `kubectl krew install --manifest=... --archive=...` or a custom krew index. Prints the archive's
# path, then the manifest's, one a line, on stdout.
#
# The archive is for this machine's os/arch only (krew's names, from Go: linux or darwin, amd64 or
# arm64), and so is the manifest's one entry under platforms; a release built on several machines
# lists each build's entry in one manifest.
#
# Settings (environment or `make plugin-archive VAR=...`):
#   PLUGIN_BINARY    an already-built kubectl-slack_oauth to pack (default: build it with
#                    `cargo build --locked --release`, into $CARGO_TARGET_DIR if set)
#   PLUGIN_OUT_DIR   where the archive and the manifest go (default <target dir>/plugin)
#   PLUGIN_BASE_URL  where the archive will be downloaded from: the manifest's uri is
#                    $PLUGIN_BASE_URL/<archive> (default the project's GitHub release of this
#                    version, a placeholder until releases are published; a local install with
#                    --archive never downloads it)
#   PLUGIN_GZIP_LEVEL  gzip's level, 1 to 9 (default 6, gzip's own: -9 saves under 1% of a
#                    release archive; the test packs a debug binary ten times that size with 1)
#   SOURCE_DATE_EPOCH  the archive's file times (default the last commit's time), so that the same
#                    binary gives the same archive and sha256 (with GNU tar)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"

name=slack-oauth
bin=kubectl-slack_oauth
homepage=https://github.com/slack-oauth-operator/slack-oauth-operator

log() { echo "plugin-archive: $*" >&2; }
fail() { echo "plugin-archive: $*" >&2; exit 2; }

version="$(cargo metadata --no-deps --format-version 1 --locked | python3 -c '
import json, sys
(package,) = [p for p in json.load(sys.stdin)["packages"] if p["name"] == "slack-oauth-operator"]
print(package["version"])')"
target="${CARGO_TARGET_DIR:-$repo/target}"
out="${PLUGIN_OUT_DIR:-$target/plugin}"
base_url="${PLUGIN_BASE_URL:-$homepage/releases/download/v$version}"

case "$(uname -s)" in
  Linux) os=linux ;;
  Darwin) os=darwin ;;
  *) fail "no krew os name for $(uname -s)" ;;
esac
case "$(uname -m)" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) fail "no krew arch name for $(uname -m)" ;;
esac

binary="${PLUGIN_BINARY:-}"
if [[ -z "$binary" ]]; then
  log "building $bin $version (release)"
  cargo build --locked --release --bin "$bin" >&2
  binary="$target/release/$bin"
fi
[[ -x "$binary" ]] || fail "$binary is not an executable file"

archive_name="$bin-$version-$os-$arch.tar.gz"
archive="$out/$archive_name"
manifest="$out/$name.yaml"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
install -m 0755 "$binary" "$stage/$bin"
files=("$bin" README.md)
# The repository has no LICENSE yet; krew's index asks for one, and it is packed once there is.
if [[ -f LICENSE ]]; then
  install -m 0644 LICENSE "$stage/LICENSE"
  files+=(LICENSE)
fi
cat >"$stage/README.md" <<EOF
# kubectl slack-oauth $version

The kubectl plugin of slack-oauth-operator: approve SlackOAuthGrants (authorization link and QR
code), see how they stand, re-authorize, revoke, and print the Slack app manifest they need.

Put \`$bin\` on your PATH and run \`kubectl slack-oauth --help\`, or install this archive with
krew. Every subcommand, its output and its exit codes: $homepage/blob/v$version/docs/kubectl-plugin.md
EOF

# Fixed owners, order and times (and no name or time in the gzip header) where GNU tar allows it,
# so that the same binary packs to the same bytes.
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
tar_flags=()
if tar --version 2>/dev/null | grep -q 'GNU tar'; then
  tar_flags=(--sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch")
fi
mkdir -p "$out"
# (The odd expansion keeps an empty array legal under set -u in the bash 3.2 of macOS.)
tar -C "$stage" ${tar_flags[@]+"${tar_flags[@]}"} -cf - "${files[@]}" | gzip "-${PLUGIN_GZIP_LEVEL:-6}" -n >"$archive.tmp"
mv "$archive.tmp" "$archive"

if command -v sha256sum >/dev/null; then
  sha256="$(sha256sum "$archive" | cut -d' ' -f1)"
else
  sha256="$(shasum -a 256 "$archive" | cut -d' ' -f1)"
fi

# The format: krew's "Writing Krew plugin manifests",
# https://krew.sigs.k8s.io/docs/developer-guide/plugin-manifest/ (kubernetes-sigs/krew,
# site/content/docs/developer-guide/plugin-manifest.md). krew links kubectl-slack_oauth to `bin`
# after it copies `files` out of the archive.
{
  cat <<EOF
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: $name
spec:
  version: v$version
  homepage: $homepage
  shortDescription: Approve and manage Slack OAuth grants
  description: |
    Works with the SlackOAuthGrants of slack-oauth-operator: prints a grant's
    authorization link (with a QR code) and waits until a Slack owner approves it,
    shows who approved, the scopes and the token's expiry without reading the
    token Secret, asks for a re-authorization, revokes a grant's token at Slack,
    and prints the Slack app manifest a grant needs.
  platforms:
    - selector:
        matchLabels:
          os: $os
          arch: $arch
      uri: "$base_url/$archive_name"
      sha256: "$sha256"
      bin: $bin
      files:
EOF
  for file in "${files[@]}"; do
    printf '        - from: %s\n          to: .\n' "$file"
  done
} >"$manifest.tmp"
mv "$manifest.tmp" "$manifest"

log "packed $bin $version for $os/$arch: $archive ($(du -h "$archive" | cut -f1)), manifest $manifest"
echo "$archive"
echo "$manifest"
