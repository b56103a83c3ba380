# syntax=docker/dockerfile:1
# Build: the same command and profile as `make build` (cargo build --locked --release).
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --locked --release --bin slack-oauth-operator

# Runtime: distroless, no shell, non-root numeric UID.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/slack-oauth-operator /usr/local/bin/slack-oauth-operator
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/slack-oauth-operator"]
