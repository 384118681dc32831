# softmaxd container image: a static server binary on an empty (scratch) base.
#
# Full build (needs the rust image from a registry):
#   docker build -t softmaxd .
# Runtime stage only, from a static binary built on the host (no image pulls;
# this is what tests/docker/run.sh does):
#   RUSTFLAGS='-C target-feature=+crt-static' \
#     cargo build --release --locked --target x86_64-unknown-linux-gnu --bin softmaxd
#   mkdir ctx && cp target/x86_64-unknown-linux-gnu/release/softmaxd ctx/
#   docker build --build-arg BINARY_FROM=prebuilt -f Dockerfile -t softmaxd ctx
#
# Needs BuildKit (the default builder since Docker 23; DOCKER_BUILDKIT=1 before),
# which skips the stages the selected BINARY_FROM does not reach. There is no
# `# syntax=` line on purpose: the builtin frontend needs no image pull.

# Which stage supplies /softmaxd to the runtime stage: `builder` or `prebuilt`.
ARG BINARY_FROM=builder

# ---- builder: compile a static glibc binary, dependencies cached in their own layer
FROM rust:1.95-bookworm AS chef
# crt-static gives a self-contained binary that runs on scratch; the same flags
# for the dependency layer and the final build, so the cached layer is reused.
ENV RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never
RUN cargo install cargo-chef --version 0.1.78 --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Only Cargo.toml/Cargo.lock feed recipe.json, so this layer (every dependency
# compiled) survives any change to the sources.
RUN cargo chef cook --release --locked --target x86_64-unknown-linux-gnu --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-gnu --bin softmaxd \
    && cp target/x86_64-unknown-linux-gnu/release/softmaxd /softmaxd

# ---- prebuilt: the build context is a directory holding a host-built `softmaxd`
FROM scratch AS prebuilt
COPY softmaxd /softmaxd

# ---- the selected binary source
FROM ${BINARY_FROM} AS binary

# ---- runtime: the one definition of what ships
FROM scratch AS runtime
LABEL org.opencontainers.image.title="softmaxd" \
      org.opencontainers.image.description="gRPC service for softmax, its backward pass, Jacobian and cross-entropy" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
COPY --from=binary --chmod=0555 /softmaxd /softmaxd
# A numeric uid/gid (no /etc/passwd on scratch), the distroless "nonroot" ids.
USER 65532:65532
# gRPC, Prometheus /metrics
EXPOSE 50051 9090
# No shell or grpc_health_probe in the image: the binary checks
# grpc.health.v1 itself and exits 0 only on SERVING.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/softmaxd", "health-check"]
ENTRYPOINT ["/softmaxd"]
