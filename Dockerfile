# syntax=docker/dockerfile:1
# The operator image: `make image` builds it (hack/image.sh) and writes an OCI archive.
#
# The base images are the upstream ones by default. Where no registry is reachable (this
# project's own machines and CI), `make image IMAGE_BASES=stand-in` passes local stand-ins made
# from Debian packages by hack/image-bases.sh instead. The stand-in build stage carries the
# host's rustup toolchain (Debian's rustc, 1.63, is far older than kube 5 needs, 1.89) rather than
# this file taking a binary built on the host: the image is then built from source by this file,
# stage for stage, whichever bases it gets, and the test that builds it checks this file.
# Not the -slim variant: jemalloc (the operator's allocator) is built with make, which it lacks.
ARG BUILD_IMAGE=rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
# The cargo profile: release for every image that is published; the tests pass image-test
# (Cargo.toml: the same code, unoptimised), which builds in about half the time.
ARG CARGO_PROFILE=release

# Build: the same command and profile as `make build` (cargo build --locked --release).
FROM ${BUILD_IMAGE} AS build
ARG CARGO_PROFILE
WORKDIR /src

# Dependencies first, in a layer of their own, built from the manifests alone: a change to the
# operator's sources reuses it. Cargo loads every workspace member to read the workspace, so the
# context holds each member's manifest (crates/*/Cargo.toml, see .dockerignore) but none of their
# sources, which this build never compiles. Empty targets stand in for the operator's own sources.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN mkdir -p src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --locked --profile "$CARGO_PROFILE" --bin slack-oauth-operator \
    && rm -rf src

# The operator itself. COPY keeps the files' modification times, which may be older than the
# placeholder build above: touch them so cargo rebuilds the crate instead of reusing the
# placeholder.
COPY src ./src
RUN find src -type f -exec touch {} + \
    && cargo build --locked --profile "$CARGO_PROFILE" --bin slack-oauth-operator \
    && cp "target/$CARGO_PROFILE/slack-oauth-operator" /slack-oauth-operator

# Runtime: distroless, no shell, non-root numeric UID.
FROM ${RUNTIME_IMAGE}
COPY --from=build /slack-oauth-operator /usr/local/bin/slack-oauth-operator
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/slack-oauth-operator"]
